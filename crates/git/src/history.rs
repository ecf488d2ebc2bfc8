//! Which commits were applied, and whether the branch still descends from them.
//!
//! ```text
//!   last good ── … ── last applied ── … ── new head      fast-forward: accepted
//!   last good ── … ── last applied
//!              └── x ── y ── new head                    rewritten: refused (or adopted)
//! ```

use git2::{Oid, Repository};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result, git};

/// The commits endstate has acted on; persisted by the controller (in the `Fleet` status).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct History {
    /// The newest commit whose changes were written to the fleet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_applied: Option<String>,
    /// The newest commit whose rollout completed healthy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_good: Option<String>,
}

impl History {
    /// The last applied commit as an id.
    pub fn last_applied(&self) -> Result<Option<Oid>> {
        parse(self.last_applied.as_deref())
    }

    /// The last good commit as an id.
    pub fn last_good(&self) -> Result<Option<Oid>> {
        parse(self.last_good.as_deref())
    }
}

fn parse(sha: Option<&str>) -> Result<Option<Oid>> {
    sha.map(|s| Oid::from_str(s).map_err(|_| Error::Config(format!("{s:?} is not a commit id"))))
        .transpose()
}

/// What to do when the branch no longer descends from the last applied commit
/// (`spec.source.onHistoryRewrite`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RewritePolicy {
    /// Refuse the new commit, keep serving the last good one, and say why.
    #[default]
    Refuse,
    /// Follow the new history.
    Adopt,
}

impl std::str::FromStr for RewritePolicy {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "" | "refuse" => Ok(RewritePolicy::Refuse),
            "adopt" => Ok(RewritePolicy::Adopt),
            other => Err(Error::Config(format!(
                "onHistoryRewrite {other:?}: expected `refuse` or `adopt`"
            ))),
        }
    }
}

/// How a new head relates to the last applied commit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ancestry {
    /// Nothing was applied yet.
    First,
    /// The head is the last applied commit.
    Unchanged,
    /// The head descends from the last applied commit.
    FastForward,
    /// The head does not descend from it, and the policy adopted it anyway.
    Rewritten,
}

/// Checks `head` against the last applied commit under `policy`.
pub fn check(
    repo: &Repository,
    branch: &str,
    head: Oid,
    last_applied: Option<Oid>,
    policy: RewritePolicy,
) -> Result<Ancestry> {
    let Some(last_applied) = last_applied else {
        return Ok(Ancestry::First);
    };
    if head == last_applied {
        return Ok(Ancestry::Unchanged);
    }
    // A last applied commit the mirror no longer has cannot be an ancestor of anything in it.
    let known = repo.find_commit(last_applied).is_ok();
    let descends = known
        && repo
            .graph_descendant_of(head, last_applied)
            .map_err(git(format!("comparing {head} with {last_applied}")))?;
    match (descends, policy) {
        (true, _) => Ok(Ancestry::FastForward),
        (false, RewritePolicy::Adopt) => Ok(Ancestry::Rewritten),
        (false, RewritePolicy::Refuse) => Err(Error::HistoryRewritten {
            branch: branch.to_owned(),
            last_applied,
            new: head,
        }),
    }
}
