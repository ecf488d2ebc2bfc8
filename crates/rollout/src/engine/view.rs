//! The read-only [`View`] of a rollout that status and progress read, and the engine's
//! read-only accessors.

use endstate_core::ObjectRef;

use super::failures::{Failures, Notes};
use super::protocol::{Interest, Phase, Resumable};
use super::state::{Engine, Rollout};
use super::trip::{Quarantined, Trip};
use super::waiting::WaitReason;
use crate::budget::Budgets;
use crate::plan::{Plan, Seq, StageSpec};
use crate::time::Time;
use endstate_core::policy::Policy;

/// A read-only view of the rollout, for status and progress.
#[derive(Clone, Copy, Debug)]
pub struct View<'a> {
    r: &'a Rollout,
}

impl<'a> View<'a> {
    /// The commit rolled out.
    pub fn commit(&self) -> &'a str {
        &self.r.commit
    }

    /// The last good commit before it.
    pub fn last_good(&self) -> Option<&'a str> {
        self.r.last_good.as_deref()
    }

    /// Where it is.
    pub fn phase(&self) -> &'a Phase {
        &self.r.phase
    }

    /// The stages.
    pub fn stages(&self) -> &[StageSpec] {
        &self.r.stages
    }

    /// The current stage's index.
    pub fn stage_index(&self) -> usize {
        self.r.stage
    }

    /// The current stage.
    pub fn stage(&self) -> Option<&'a StageSpec> {
        self.r.stages.get(self.r.stage)
    }

    /// The current stage's cursor (a position in its sequence's order).
    pub fn cursor(&self) -> u32 {
        self.r.cursor
    }

    /// Changes in flight.
    pub fn inflight(&self) -> usize {
        self.r.flights.len()
    }

    /// The objects in flight and the generation each waits for, if known.
    pub fn inflight_ids(&self) -> impl Iterator<Item = (&'a ObjectRef, Option<i64>)> + 'a {
        let r = self.r;
        r.flights
            .index
            .iter()
            .map(move |(id, p)| (id, r.flights.by_position.get(p).and_then(|f| f.generation)))
    }

    /// Failures so far.
    pub fn failures(&self) -> &'a Failures {
        &self.r.failures
    }

    /// Why no work starts, if it waits.
    pub fn waiting(&self) -> Option<&'a WaitReason> {
        self.r.waiting.as_ref()
    }

    /// When it started.
    pub fn started_at(&self) -> Time {
        self.r.started_at
    }

    /// Objects changed (the stages' sizes, package versions excluded).
    pub fn changed(&self) -> u32 {
        self.r.changed()
    }

    /// The policy it runs under (the default until resumed).
    pub fn policy(&self) -> &'a Policy {
        &self.r.policy
    }

    /// Restores that failed.
    pub fn unrestored(&self) -> &'a Notes {
        &self.r.unrestored
    }

    /// A newer commit waiting for this rollout to stop.
    pub fn superseded_by(&self) -> Option<&'a str> {
        self.r.superseded_by.as_deref()
    }

    /// The plan, once started or resumed.
    pub fn plan(&self) -> Option<&'a Plan> {
        self.r.plan.as_ref()
    }

    /// Changes of the current stage that settled healthy (counted in memory; after a resume,
    /// those that settled before it are estimated from the stage's size).
    pub fn settled(&self) -> u32 {
        self.r.settled
    }
}

impl Engine {
    /// Whether the breaker is open.
    pub fn breaker_open(&self) -> bool {
        self.breaker.is_some()
    }

    /// The latched breaker, when open.
    pub fn breaker(&self) -> Option<&Trip> {
        self.breaker.as_ref()
    }

    /// Commits that must never be the applied target again, oldest first.
    pub fn quarantine(&self) -> &[Quarantined] {
        &self.quarantine
    }

    /// Whether `commit` is quarantined.
    pub fn quarantined(&self, commit: &str) -> bool {
        self.quarantine.iter().any(|q| q.commit == commit)
    }

    /// The fleet-wide budget spends.
    pub fn budgets(&self) -> &Budgets {
        &self.budgets
    }

    /// The rollout in progress, or the last one.
    pub fn rollout(&self) -> Option<View<'_>> {
        self.rollout.as_ref().map(|r| View { r })
    }

    /// Whether a rollout is under way (anything but completed, superseded or restored).
    pub fn busy(&self) -> bool {
        self.rollout.as_ref().is_some_and(|r| {
            !matches!(
                r.phase,
                Phase::Completed | Phase::Superseded | Phase::Restored
            )
        })
    }

    /// For a loaded rollout that is under way, what to recompute before [`Engine::resume`].
    pub fn resumable(&self) -> Option<Resumable> {
        let r = self.rollout.as_ref().filter(|_| self.busy())?;
        Some(Resumable {
            commit: r.commit.clone(),
            base: r.base.clone(),
            orphans: r.orphans.clone(),
        })
    }

    /// Whether the rollout runs on a partial plan.
    pub fn partial(&self) -> bool {
        self.rollout
            .as_ref()
            .and_then(|r| r.plan.as_ref())
            .is_some_and(Plan::is_partial)
    }

    /// Why the engine wants to hear about `id` now, if it does.
    pub fn interest(&self, id: &ObjectRef) -> Option<Interest> {
        let r = self.rollout.as_ref()?;
        let stage = r.stages.get(r.stage)?;
        if !stage.seq.gated() {
            return None;
        }
        match r.phase {
            Phase::Running => {
                let p = r.flights.index.get(id)?;
                let flight = r.flights.by_position.get(p)?;
                if stage.seq == Seq::Deletes {
                    return Some(Interest::Gone);
                }
                Some(Interest::Gate(flight.generation))
            }
            // A deleted object has nothing left to watch while its wave bakes.
            Phase::Baking { .. } if stage.seq == Seq::Deletes => None,
            Phase::Baking { .. } => {
                let plan = r.plan.as_ref()?;
                let p = plan.order(stage.seq.universe()).position(id)?;
                (stage.start..stage.end)
                    .contains(&p)
                    .then_some(Interest::Bake)
            }
            _ => None,
        }
    }

    /// Per universe, how many of its positions a restore covers (every position up to the
    /// furthest one started).
    pub fn restore_ranges(&self) -> [u32; 4] {
        self.rollout.as_ref().map_or([0; 4], Rollout::reached)
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixture::{T0, id, policy, started};
    use super::super::protocol::Event;
    use super::*;

    #[test]
    fn the_view_reads_the_rollout_under_way() {
        assert!(Engine::default().rollout().is_none());
        assert_eq!(Engine::default().restore_ranges(), [0; 4]);
        let (mut engine, _) = started(4, policy(&[(50.0, 0, false), (100.0, 0, false)], 1));
        engine.step(Event::Written(vec![(id(0), Ok(3))]), T0);
        let r = engine.rollout().unwrap();
        assert_eq!((r.commit(), r.last_good()), ("c2", Some("c1")));
        assert_eq!(r.stages().len(), 2);
        assert_eq!(r.stage().unwrap().name, "machines/w0");
        assert_eq!((r.stage_index(), r.cursor(), r.inflight()), (0, 1, 1));
        assert_eq!(r.inflight_ids().collect::<Vec<_>>(), [(&id(0), Some(3))]);
        assert_eq!((r.changed(), r.settled()), (4, 0));
        assert_eq!(r.started_at(), T0);
        assert!(r.plan().is_some() && !engine.partial());
        assert!(engine.busy() && !engine.breaker_open());
        assert_eq!(engine.restore_ranges(), [0, 0, 1, 0]);
    }
}
