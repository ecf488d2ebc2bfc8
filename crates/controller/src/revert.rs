//! The revert: which commits of the rolled-out range caused the failure, and their reverts
//! pushed to the branch (never forced), in words for the log and the status.

use std::collections::HashSet;

use endstate_core::ObjectRef;
use endstate_git::{Oid, RevertOutcome, attribute};
use endstate_rollout::engine::Evidence;
use endstate_rollout::{Event, Live};

use crate::clock::Clock;
use crate::controller::Controller;
use crate::report::short;

impl<L: Live, C: Clock> Controller<L, C> {
    /// Attributes the failure to commits and reverts them.
    pub(crate) fn revert(
        &mut self,
        commit: &str,
        last_good: Option<&str>,
        failed: &[ObjectRef],
        evidence: &Evidence,
    ) -> Event {
        let now = self.clock.now();
        let (culprits, attributed) = match self.culprits(commit, last_good, failed) {
            Ok(c) => c,
            Err(why) => {
                self.line(
                    now,
                    commit,
                    &format!("cannot tell which commits to revert: {why}"),
                );
                return Event::Reverted {
                    culprits: vec![commit.to_owned()],
                    reverts: Vec::new(),
                    outcome: format!("not reverted: {why}"),
                };
            }
        };
        let names: Vec<&str> = culprits.iter().map(|c| short(c)).collect();
        self.line(
            now,
            commit,
            &format!(
                "{} {}",
                if attributed {
                    "failure attributed to"
                } else {
                    "failure not attributable; reverting the whole range"
                },
                names.join(", ")
            ),
        );
        let Some(writer) = &mut self.writer else {
            return Event::Reverted {
                culprits,
                reverts: Vec::new(),
                outcome: "no revert writer configured; revert by hand".into(),
            };
        };
        let oids: Vec<Oid> = culprits
            .iter()
            .filter_map(|c| Oid::from_str(c).ok())
            .collect();
        let git_evidence = endstate_git::Evidence {
            summary: evidence.threshold.to_string(),
            wave: Some(evidence.stage.clone()),
            failed: failed.to_vec(),
            thresholds: vec![evidence.threshold.to_string()],
        };
        crate::crash::point("revert-push");
        let (reverts, outcome) = match writer.revert(&oids, &git_evidence) {
            Ok(RevertOutcome::Pushed {
                reverts,
                already,
                empty,
                head,
            }) if reverts.is_empty() && already.is_empty() => (
                Vec::new(),
                format!(
                    "nothing to revert: the branch (at {}) already undoes {}",
                    short(&head.to_string()),
                    empty
                        .iter()
                        .map(|c| short_oid(*c))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ),
            Ok(RevertOutcome::Pushed {
                reverts,
                already,
                head,
                ..
            }) => {
                let mut list: Vec<String> = reverts
                    .iter()
                    .chain(&already)
                    .map(|r| r.revert.to_string())
                    .collect();
                list.dedup();
                (
                    list,
                    format!(
                        "revert pushed; branch head is now {}",
                        short(&head.to_string())
                    ),
                )
            }
            Ok(RevertOutcome::AlreadyReverted { reverts }) => (
                reverts.iter().map(|r| r.revert.to_string()).collect(),
                "already reverted on the branch".to_owned(),
            ),
            Ok(RevertOutcome::SideBranch {
                branch,
                conflicted,
                paths,
                ..
            }) => (
                Vec::new(),
                format!(
                    "the revert of {} conflicts ({}); pushed to branch {branch} for a human to merge",
                    short(&conflicted.to_string()),
                    paths.join(", ")
                ),
            ),
            Ok(RevertOutcome::RefusedRevertOfRevert { commit, .. }) => (
                Vec::new(),
                format!(
                    "{} is itself an endstate revert; not reverting it, a human decides",
                    short(&commit.to_string())
                ),
            ),
            Err(err) => (Vec::new(), format!("revert failed: {err}")),
        };
        self.line(now, commit, &outcome);
        self.reporter
            .reverted(now, commit, !reverts.is_empty(), &outcome);
        if let Some(at) = self.tripped_at {
            self.tally.trip_to_revert = Some(at.elapsed());
        }
        Event::Reverted {
            culprits,
            reverts,
            outcome,
        }
    }

    fn culprits(
        &mut self,
        commit: &str,
        last_good: Option<&str>,
        failed: &[ObjectRef],
    ) -> Result<(Vec<String>, bool), Unattributed> {
        let target = Oid::from_str(commit)?;
        let Some(good) = last_good else {
            return Err(Unattributed::FirstRollout);
        };
        let good = Oid::from_str(good)?;
        let failed: HashSet<ObjectRef> = failed.iter().map(|id| self.in_namespace(id)).collect();
        let Some(source) = self.source.git() else {
            return Err(Unattributed::NoHistory);
        };
        let path = source.config().path.clone();
        let options = source.config().render.clone();
        let found = attribute(
            source.repository(),
            &path,
            &options,
            &mut self.cache,
            good,
            target,
            &failed,
        )?;
        // Newest first, as the writer reverts them.
        let commits: Vec<String> = found.commits.iter().map(ToString::to_string).collect();
        Ok((commits, found.attributed))
    }
}

/// Why the commits to revert cannot be told.
#[derive(Debug, thiserror::Error)]
enum Unattributed {
    /// The first rollout has nothing to go back to.
    #[error(
        "there is no last good commit to go back to (this was the fleet's first rollout); the fleet is restored, fix forward"
    )]
    FirstRollout,
    /// A local directory has no commits.
    #[error("a local directory has no commits to revert; the fleet is restored")]
    NoHistory,
    /// A commit id that Git does not read.
    #[error(transparent)]
    Id(#[from] git2::Error),
    /// Walking the history failed.
    #[error(transparent)]
    Git(#[from] endstate_git::Error),
}

fn short_oid(oid: Oid) -> String {
    short(&oid.to_string()).to_owned()
}
