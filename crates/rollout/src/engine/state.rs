//! What the engine remembers: the [`Engine`] (budgets, breaker, quarantine, the rollout) and
//! one commit's [`Rollout`], with what is computed from a rollout alone. Its behaviour is in
//! the files of each concept, which add `impl Engine` blocks.

use std::collections::BTreeSet;

use endstate_core::ObjectRef;

use super::failures::{Failures, Notes};
use super::flights::Flights;
use super::protocol::{Effect, Phase, Report};
use super::restore::Restore;
use super::trip::{Quarantined, Threshold, Trip};
use super::waiting::WaitReason;
use crate::budget::Budgets;
use crate::plan::{Plan, Seq, StageSpec};
use crate::positions::Positions;
use crate::time::Time;
use endstate_core::policy::Policy;

/// The rollout engine: everything endstate must remember between steps, across rollouts and
/// restarts.
#[derive(Clone, Debug, Default)]
pub struct Engine {
    pub(crate) rollout: Option<Rollout>,
    pub(crate) budgets: Budgets,
    pub(crate) breaker: Option<Trip>,
    pub(crate) quarantine: Vec<Quarantined>,
}

/// One commit's rollout.
#[derive(Clone, Debug)]
pub(crate) struct Rollout {
    pub commit: String,
    pub last_good: Option<String>,
    /// The commit the fleet was at when the rollout was planned: what the commit drops from
    /// it is the delete sequence, and fields it set that the commit no longer sets are removed.
    pub base: Option<String>,
    pub orphans: Vec<ObjectRef>,
    pub stages: Vec<StageSpec>,
    pub stage: usize,
    /// The next position of the current stage's sequence to consider.
    pub cursor: u32,
    pub flights: Flights,
    pub failures: Failures,
    pub phase: Phase,
    pub superseded_by: Option<String>,
    pub started_at: Time,
    pub waiting: Option<WaitReason>,
    pub restore: Option<Restore>,
    pub unrestored: Notes,
    /// Not persisted: recomputed from the commit on resume.
    pub plan: Option<Plan>,
    pub policy: Policy,
    /// Positions of the current stage seen healthy: a bake fails the ones that go `Failed`.
    pub healthy: Positions,
    /// Whether the revert was asked for in this process (not persisted: a restart asks again).
    pub revert_asked: bool,
    /// Resumed with changes in flight not looked at since: no gate times out until they are
    /// (a change that settled just before the restart must not fail for lack of a look).
    pub regating: bool,
    /// Changes of the current stage that settled (for progress; counted again on resume).
    pub settled: u32,
    /// Machines held back by a failed Cluster.
    pub held: Held,
}

/// Machines held back because their Cluster failed or their business cluster cannot be used.
/// The count is persisted; what was reported is not (a restarted rollout reports again).
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Held {
    /// Machines skipped.
    pub machines: u32,
    /// The Clusters reported.
    pub clusters: BTreeSet<u32>,
    /// The business clusters reported.
    pub targets: BTreeSet<String>,
}

impl Rollout {
    /// Objects changed: the stages' sizes, package versions excluded.
    pub fn changed(&self) -> u32 {
        self.stages
            .iter()
            .filter(|s| s.seq != Seq::Packages)
            .map(|s| s.size)
            .sum()
    }

    /// Per universe, the positions up to the furthest one started.
    pub fn reached(&self) -> [u32; 4] {
        let mut reached = [0u32; 4];
        for (i, stage) in self.stages.iter().enumerate().take(self.stage + 1) {
            let to = if i < self.stage {
                stage.end
            } else {
                self.cursor.min(stage.end)
            };
            let u = stage.seq.universe().index();
            reached[u] = reached[u].max(to);
        }
        reached
    }

    /// The threshold the failures so far cross, if any.
    pub fn crossed(&self) -> Option<Threshold> {
        Threshold::crossed(
            &self.policy.breaker,
            self.failures.per_stage[self.stage],
            self.stages[self.stage].size,
            self.failures.total,
            self.changed(),
        )
    }

    /// Records why no work starts; reports it when it is news.
    pub fn wait(&mut self, why: WaitReason, fx: &mut Vec<Effect>) {
        if self.waiting.as_ref() != Some(&why) {
            fx.push(Effect::Report(Report::Waiting(why.clone())));
            self.waiting = Some(why);
        }
    }
}
