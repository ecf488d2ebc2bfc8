//! Quarantine in history: whether a branch head still carries a quarantined commit.
//!
//! The list of quarantined commits lives with the rollout engine's state (in the `Fleet`
//! status); this module answers the question only Git can: does `head` roll a quarantined
//! change out again? It does when it is the commit, or descends from it with no revert of it
//! since — a commit whose message carries endstate's `Endstate-Revert-Of: <sha>` trailer or
//! git's own `This reverts commit <sha>.`.

use git2::{Oid, Repository};

use crate::trailers::REVERT_OF;

/// The first of `quarantined` that `head` is, or descends from without a revert since.
/// Unreadable history counts as carrying it: unsure means not rolling out.
pub fn unreverted(repo: &Repository, head: Oid, quarantined: &[&str]) -> Option<String> {
    for &commit in quarantined {
        let Ok(culprit) = Oid::from_str(commit) else {
            continue;
        };
        if culprit == head {
            return Some(commit.to_owned());
        }
        if !repo.graph_descendant_of(head, culprit).unwrap_or(false) {
            continue;
        }
        let Ok(mut walk) = repo.revwalk() else {
            return Some(commit.to_owned());
        };
        if walk.push(head).is_err() || walk.hide(culprit).is_err() {
            return Some(commit.to_owned());
        }
        let trailer = format!("{REVERT_OF}: {commit}");
        let git_says = format!("This reverts commit {commit}");
        let reverted = walk.filter_map(Result::ok).any(|oid| {
            repo.find_commit(oid)
                .ok()
                .and_then(|c| c.message().map(str::to_owned))
                .is_some_and(|m| m.contains(&trailer) || m.contains(&git_says))
        });
        if !reverted {
            return Some(commit.to_owned());
        }
    }
    None
}
