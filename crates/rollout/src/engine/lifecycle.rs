//! A rollout's life across its stages: starting it, resuming it after a restart, replanning
//! it whole, and moving from one stage to the next (or to approval, completion, supersession).

use endstate_core::ObjectRef;

use super::failures::{Failures, Notes};
use super::flights::Flights;
use super::protocol::{Effect, Phase, Report, Start};
use super::state::{Engine, Held, Rollout};
use crate::plan::{Plan, Seq};
use crate::positions::Positions;
use crate::time::Time;
use endstate_core::policy::Policy;

impl Engine {
    /// Starts rolling out a commit; the previous rollout must be over.
    pub fn start(&mut self, start: Start, now: Time) -> Vec<Effect> {
        debug_assert!(!self.busy(), "a rollout is already under way");
        let Start {
            commit,
            last_good,
            base,
            plan,
            policy,
        } = start;
        let stages = plan.stages(&policy);
        let cursor = stages.first().map_or(0, |s| s.start);
        self.rollout = Some(Rollout {
            commit,
            last_good,
            base,
            orphans: plan.orphans.clone(),
            failures: Failures {
                per_stage: vec![0; stages.len()],
                ..Failures::default()
            },
            stages,
            stage: 0,
            cursor,
            flights: Flights::default(),
            phase: Phase::Running,
            superseded_by: None,
            started_at: now,
            waiting: None,
            restore: None,
            unrestored: Notes::default(),
            plan: Some(plan),
            policy,
            healthy: Positions::new(),
            revert_asked: false,
            regating: false,
            held: Held::default(),
            settled: 0,
        });
        let mut fx = vec![Effect::Persist];
        self.report_stage_start(&mut fx);
        self.advance(now, &mut fx);
        fx
    }

    /// Hands a loaded rollout its recomputed plan and policy, and says what to do: re-issue
    /// the writes in flight (their outcome was lost; an object already in sync needs no
    /// request), re-check what a bake watches, prepare an interrupted restore, ask again for a
    /// revert whose answer was lost.
    pub fn resume(&mut self, plan: Plan, policy: Policy, now: Time) -> Vec<Effect> {
        let mut fx = Vec::new();
        let Some(r) = self.rollout.as_mut() else {
            return fx;
        };
        r.policy = policy;
        r.plan = Some(plan);
        let plan = r.plan.as_ref().expect("just set");
        let stage = r.stages.get(r.stage).cloned();
        // What settled before the restart: the changes started in the stage (its size less
        // those still ahead of the cursor) less those in flight and those that failed.
        if let Some(stage) = &stage {
            let ahead = (r.cursor.min(stage.end)..stage.end.min(plan.len(stage.seq)))
                .filter(|p| plan.op(stage.seq, *p).is_some())
                .count() as u32;
            r.settled = stage
                .size
                .saturating_sub(ahead)
                .saturating_sub(r.flights.len() as u32)
                .saturating_sub(r.failures.per_stage.get(r.stage).copied().unwrap_or(0));
        }
        // Re-index the flights (the persisted form has positions only).
        if let Some(stage) = &stage {
            let positions: Vec<u32> = r.flights.by_position.keys().copied().collect();
            r.flights.index = positions
                .iter()
                .filter(|p| **p < plan.len(stage.seq))
                .map(|&p| (plan.id(stage.seq, p).clone(), p))
                .collect();
        }
        match (&r.phase, &stage) {
            (Phase::Running, Some(stage)) if !r.flights.is_empty() => {
                let ids: Vec<ObjectRef> = r
                    .flights
                    .by_position
                    .keys()
                    .filter(|p| **p < plan.len(stage.seq))
                    .map(|p| plan.id(stage.seq, *p).clone())
                    .collect();
                fx.push(Effect::write(stage.seq, ids.clone()));
                if stage.seq.gated() {
                    r.regating = true;
                    fx.push(Effect::Observe(ids));
                }
            }
            (Phase::Baking { .. }, Some(stage))
                if stage.seq.gated() && stage.seq != Seq::Deletes =>
            {
                // What the bake watches is held in memory: look at the stage's objects once;
                // those healthy now are watched for a `Failed` status from here on.
                r.healthy = Positions::new();
                let ids: Vec<ObjectRef> = (stage.start..stage.end.min(plan.len(stage.seq)))
                    .map(|p| plan.id(stage.seq, p).clone())
                    .collect();
                fx.push(Effect::Observe(ids));
            }
            (Phase::Tripped { .. }, _) => {
                r.revert_asked = false;
                fx.push(Effect::PrepareRestore);
            }
            _ => {}
        }
        self.advance(now, &mut fx);
        fx
    }

    /// Gives a rollout planned partially (see [`Plan::partial`]) its whole plan, once the live
    /// fleet can be read whole.
    pub fn replan(&mut self, plan: Plan, now: Time) -> Vec<Effect> {
        let mut fx = Vec::new();
        if let Some(r) = self.rollout.as_mut() {
            r.plan = Some(plan);
        }
        self.advance(now, &mut fx);
        fx
    }

    pub(super) fn stage_done(&mut self, fx: &mut Vec<Effect>) {
        let Some(r) = &mut self.rollout else { return };
        r.waiting = None;
        let stage = &r.stages[r.stage];
        fx.push(Effect::Report(Report::StageCompleted {
            index: r.stage,
            name: stage.name.clone(),
            failures: r.failures.per_stage[r.stage],
        }));
        if r.superseded_by.is_some() {
            self.supersede(fx);
            return;
        }
        if stage.pause && r.stage + 1 < r.stages.len() {
            r.phase = Phase::AwaitingApproval;
            fx.push(Effect::Persist);
            fx.push(Effect::Report(Report::AwaitingApproval(stage.name.clone())));
            return;
        }
        r.phase = Phase::Running;
        self.next_stage(fx);
    }

    pub(super) fn next_stage(&mut self, fx: &mut Vec<Effect>) {
        let Some(r) = &mut self.rollout else { return };
        r.flights.clear();
        r.healthy = Positions::new();
        r.settled = 0;
        fx.push(Effect::Persist);
        if r.stage + 1 >= r.stages.len() {
            r.phase = Phase::Completed;
            fx.push(Effect::Report(Report::Completed {
                changed: r.changed().saturating_sub(r.held.machines),
                held: r.held.machines,
            }));
            return;
        }
        r.stage += 1;
        r.cursor = r.stages[r.stage].start;
        self.report_stage_start(fx);
    }

    pub(super) fn report_stage_start(&self, fx: &mut Vec<Effect>) {
        let Some(r) = &self.rollout else { return };
        if let Some(stage) = r.stages.get(r.stage) {
            fx.push(Effect::Report(Report::StageStarted {
                index: r.stage,
                name: stage.name.clone(),
                size: stage.size,
            }));
        }
    }

    pub(super) fn supersede(&mut self, fx: &mut Vec<Effect>) {
        let Some(r) = &mut self.rollout else { return };
        r.phase = Phase::Superseded;
        r.flights.clear();
        fx.push(Effect::Persist);
        fx.push(Effect::Report(Report::Superseded(
            r.superseded_by.clone().unwrap_or_default(),
        )));
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::fixture::{T0, applied, id, policy, started};
    use super::super::protocol::Event;
    use super::*;
    use crate::health::Health;

    fn settle(engine: &mut Engine, ids: &[usize], now: Time) -> Vec<Effect> {
        let healthy = ids.iter().map(|i| (id(*i), Health::Healthy)).collect();
        engine.step(
            Event::Written(ids.iter().map(|i| (id(*i), Ok(2))).collect()),
            now,
        );
        engine.step(Event::Observed(healthy), now)
    }

    #[test]
    fn a_paused_stage_holds_for_approval_then_the_next_starts() {
        let (mut engine, fx) = started(2, policy(&[(50.0, 0, true), (100.0, 0, false)], 1));
        assert!(fx.contains(&Effect::Report(Report::StageStarted {
            index: 0,
            name: "machines/w0".into(),
            size: 1,
        })));
        let fx = settle(&mut engine, &[0], T0);
        assert!(fx.contains(&Effect::Report(Report::AwaitingApproval(
            "machines/w0".into()
        ))));
        assert_eq!(engine.rollout().unwrap().phase(), &Phase::AwaitingApproval);
        let fx = engine.step(Event::Approve, T0);
        assert_eq!(engine.rollout().unwrap().stage_index(), 1);
        assert_eq!(applied(&fx), ["m-001"]);
        let fx = settle(&mut engine, &[1], T0);
        assert!(fx.contains(&Effect::Report(Report::Completed {
            changed: 2,
            held: 0
        })));
        assert!(!engine.busy());
    }

    #[test]
    fn a_new_commit_supersedes_a_rollout_held_for_approval() {
        let (mut engine, _) = started(2, policy(&[(50.0, 0, true), (100.0, 0, false)], 1));
        settle(&mut engine, &[0], T0);
        let fx = engine.step(Event::NewCommit("c3".into()), T0);
        assert!(fx.contains(&Effect::Report(Report::Superseded("c3".into()))));
        assert_eq!(engine.rollout().unwrap().phase(), &Phase::Superseded);
    }

    #[test]
    fn a_resume_reissues_the_writes_in_flight_and_looks_at_them() {
        let p = policy(&[(100.0, 0, false)], 2);
        let (engine, _) = started(3, p.clone());
        let json = engine.to_json();
        let mut loaded = Engine::from_json(json).unwrap();
        assert_eq!(loaded.resumable().unwrap().commit, "c2");
        let fx = loaded.resume(
            super::super::fixture::plan(3, &p),
            p,
            T0 + Duration::from_secs(1),
        );
        assert_eq!(
            fx[..2],
            [
                Effect::Apply(vec![id(0), id(1)]),
                Effect::Observe(vec![id(0), id(1)])
            ]
        );
        // Gates do not time out before the changes were looked at again.
        let fx = loaded.step(Event::Tick, T0 + Duration::from_secs(3600));
        assert!(
            !fx.iter()
                .any(|e| matches!(e, Effect::Report(Report::Failed(..))))
        );
    }
}
