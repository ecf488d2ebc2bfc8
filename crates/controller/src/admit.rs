//! Whether a head may be rolled out: every check that refuses a head, in one place, used by
//! the reconcile loop and by `endstate plan`, so that the two judge a head alike.
//!
//! ```text
//!   head ──▶ commit: history, signature ──▶ quarantine ──▶ render, plan ──▶ changes: immutable
//!              (endstate_git::check_head)    (is or carries     package versions in use,
//!                                             a tripped commit)  deletes over the floor
//! ```
//!
//! The first two judge the commit before anything of it is rendered; `changes` judges what
//! rolling it out would do. The loop stops at the first refusal (it never renders a commit
//! that fails the first two); `plan` reports every one.

use endstate_core::policy::Policy;
use endstate_git::{Judged, Oid, Source};
use endstate_rollout::Engine;
use endstate_rollout::plan::Plan;

use crate::refusal::Refusal;

/// The head's history and signature, judged against its branch as `judged` says (the check
/// [`Source::fetch`] runs for the loop, on the Fleet's own settings).
pub fn commit(source: &Source, judged: &Judged<'_>, head: Oid) -> Result<(), Refusal> {
    endstate_git::check_head(source.repository(), judged, head)
        .map(|_| ())
        .map_err(|e| Refusal::from_git(&e))
}

/// The quarantined commit `head` is, or carries without a revert since (judged on `source`'s
/// history; without one, only `head` itself is checked).
pub fn quarantine(engine: &Engine, source: Option<&Source>, head: &str) -> Option<Refusal> {
    let culprit = carried_quarantine(engine, source, head)?;
    Some(Refusal::Quarantined {
        head: head.to_owned(),
        culprit,
    })
}

fn carried_quarantine(engine: &Engine, source: Option<&Source>, head: &str) -> Option<String> {
    if engine.quarantine().is_empty() {
        return None;
    }
    if engine.quarantined(head) {
        return Some(head.to_owned());
    }
    let head = Oid::from_str(head).ok()?;
    let quarantined: Vec<&str> = engine
        .quarantine()
        .iter()
        .map(|q| q.commit.as_str())
        .collect();
    source?.carries(head, &quarantined)
}

/// What rolling `head` out as `plan` would do that `policy` refuses, each with the number of
/// objects it concerns: package versions in use that change, and deletes over the floor.
/// `head` names the head in the refusals (a commit id, or `the working tree`).
pub fn changes(head: &str, plan: &Plan, policy: &Policy) -> Vec<(Refusal, usize)> {
    let mut refusals = Vec::new();
    if !plan.immutable.is_empty() {
        let refusal = Refusal::ImmutablePackage {
            head: head.to_owned(),
            names: plan.immutable.iter().map(ToString::to_string).collect(),
        };
        refusals.push((refusal, plan.immutable.len()));
    }
    if !plan.mass_deletes.is_empty() {
        let refusal = Refusal::MassDelete {
            head: head.to_owned(),
            scopes: plan.mass_deletes.iter().map(ToString::to_string).collect(),
            ratio: format!("{}%", policy.prune.max_delete_ratio),
        };
        let deletes = plan.mass_deletes.iter().map(|m| m.deletes).max();
        refusals.push((refusal, deletes.unwrap_or(0)));
    }
    refusals
}
