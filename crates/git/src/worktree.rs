//! A work tree on disk, read for `endstate plan --local`: where its repository is, which
//! commit it is at, and the merge base of that commit with a branch.

use std::path::{Path, PathBuf};

use git2::{Oid, Repository};

use crate::error::{Error, Result, git};

/// A Git work tree.
pub struct WorkTree {
    repo: Repository,
    root: PathBuf,
}

impl std::fmt::Debug for WorkTree {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkTree")
            .field("root", &self.root)
            .finish()
    }
}

impl WorkTree {
    /// The work tree `dir` is in (`dir` itself or a directory above it).
    pub fn discover(dir: &Path) -> Result<WorkTree> {
        let repo = Repository::discover(dir).map_err(git(format!(
            "{} is not inside a Git work tree",
            dir.display()
        )))?;
        let root = repo
            .workdir()
            .ok_or_else(|| {
                Error::Config(format!(
                    "{} is a bare repository, not a work tree",
                    dir.display()
                ))
            })?
            // Without libgit2's trailing slash.
            .components()
            .collect();
        Ok(WorkTree { repo, root })
    }

    /// The top directory of the work tree.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The commit checked out; `None` before the first commit.
    pub fn head(&self) -> Option<Oid> {
        self.repo
            .head()
            .ok()
            .and_then(|h| h.peel_to_commit().ok())
            .map(|c| c.id())
    }

    /// The merge base of the checked-out commit with `branch`: the local branch, or failing
    /// that its remote-tracking branch at `origin`.
    pub fn merge_base(&self, branch: &str) -> Result<Oid> {
        let head = self
            .head()
            .ok_or_else(|| Error::Config(format!("{} has no commit yet", self.root.display())))?;
        let target = [
            format!("refs/heads/{branch}"),
            format!("refs/remotes/origin/{branch}"),
        ]
        .iter()
        .find_map(|r| self.repo.refname_to_id(r).ok())
        .ok_or_else(|| {
            Error::Config(format!(
                "{} has no branch {branch:?} (nor origin/{branch})",
                self.root.display()
            ))
        })?;
        self.repo
            .merge_base(head, target)
            .map_err(git(format!("finding the merge base of HEAD and {branch}")))
    }
}
