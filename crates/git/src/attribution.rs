//! Attribution: which commits of a rolled-out range caused a failure.
//!
//! Each commit of `last good..target` is rendered with its first parent (through the render
//! cache, so only the files a commit changed are parsed), and a commit is blamed when its
//! rendered change adds, removes or alters one of the failed objects. When no commit can be
//! blamed (a fleet-wide metric failed, say), the whole range is.

use std::collections::HashSet;

use endstate_core::{ObjectRef, Options, RenderCache, Rendered};
use git2::{Oid, Repository, Sort};

use crate::error::{Error, Result, git};
use crate::tree::CommitTree;

/// The commits to revert.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attribution {
    /// Newest first, as [`crate::RevertWriter::revert`] takes them.
    pub commits: Vec<Oid>,
    /// Whether they were picked by their change (`false`: the whole range, for lack of a
    /// culprit).
    pub attributed: bool,
    /// Commits in the range that do not render (or whose parent does not), so their change
    /// could not be compared.
    pub unrenderable: Vec<Oid>,
}

/// Finds the commits of `last_good..target` whose rendered change (of the kustomization in
/// `dir`) touches one of `failed`.
pub fn attribute(
    repo: &Repository,
    dir: &str,
    options: &Options,
    cache: &mut RenderCache,
    last_good: Oid,
    target: Oid,
    failed: &HashSet<ObjectRef>,
) -> Result<Attribution> {
    let mut walk = repo
        .revwalk()
        .map_err(git("walking the rolled-out range"))?;
    walk.set_sorting(Sort::TOPOLOGICAL | Sort::REVERSE)
        .map_err(git("walking the rolled-out range"))?;
    walk.push(target)
        .map_err(git(format!("walking from {target}")))?;
    walk.hide(last_good)
        .map_err(git(format!("walking back to {last_good}")))?;
    let range = walk
        .collect::<Result<Vec<Oid>, _>>()
        .map_err(git("walking the rolled-out range"))?;

    let render = |cache: &mut RenderCache, commit: Oid| -> Result<Option<Rendered>> {
        match CommitTree::new(repo, commit)?.render(dir, options, cache) {
            Ok(rendered) => Ok(Some(rendered)),
            Err(Error::Invalid { .. }) => Ok(None),
            Err(err) => Err(err),
        }
    };
    let mut blamed = Vec::new();
    let mut unrenderable = Vec::new();
    // Oldest first, so that each commit's parent was usually rendered just before it.
    let mut previous: Option<(Oid, Option<Rendered>)> = None;
    for &commit in &range {
        let parent = repo
            .find_commit(commit)
            .map_err(git(format!("reading commit {commit}")))?
            .parent_id(0)
            .ok();
        let before = match (parent, previous.take()) {
            (Some(p), Some((id, rendered))) if id == p => rendered,
            (Some(p), _) => render(cache, p)?,
            (None, _) => Some(Rendered::default()),
        };
        let after = render(cache, commit)?;
        match (&before, &after) {
            (Some(before), Some(after)) => {
                if failed.iter().any(|id| find(before, id) != find(after, id)) {
                    blamed.push(commit);
                }
            }
            _ => unrenderable.push(commit),
        }
        previous = Some((commit, after));
    }
    blamed.reverse();
    let attributed = !blamed.is_empty();
    let commits = if attributed {
        blamed
    } else {
        range.into_iter().rev().collect()
    };
    unrenderable.reverse();
    Ok(Attribution {
        commits,
        attributed,
        unrenderable,
    })
}

/// The rendered object with identity `id` (objects are sorted by identity). An object placed
/// in a business cluster is found by kind and name: the repository renders it once, in the
/// Fleet's namespace.
fn find<'a>(rendered: &'a Rendered, id: &ObjectRef) -> Option<&'a endstate_core::FleetObject> {
    if !id.cluster.is_empty() {
        return rendered
            .objects
            .iter()
            .map(|o| &o.object)
            .find(|o| o.kind() == id.kind && o.name() == id.name);
    }
    let key = (id.kind, id.namespace.as_str(), id.name.as_str(), "");
    rendered
        .objects
        .binary_search_by(|o| o.object.key().cmp(&key))
        .ok()
        .map(|i| &rendered.objects[i].object)
}
