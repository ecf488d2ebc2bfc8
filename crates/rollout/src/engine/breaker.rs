//! The breaker: counting failures against the thresholds, tripping, restoring what the
//! rollout started (lane by lane, within the budgets), asking for the revert, and quarantining
//! the commits the revert blames.

use endstate_core::ObjectRef;

use super::failures::{Note, REASON_CHARS};
use super::protocol::{Effect, Phase, Report, WriteError};
use super::restore::{Restore, RestoreClass, RestorePlan};
use super::state::Engine;
use super::trip::{
    Evidence, KEPT_QUARANTINE, KEPT_REVERTS, QUARANTINE_REASON_CHARS, Quarantined, Threshold, Trip,
};
use super::waiting::WaitReason;
use crate::positions::Positions;
use crate::text::cut;
use crate::time::Time;

impl Engine {
    /// Records failures of in-flight changes and trips the breaker when a threshold is crossed.
    pub(super) fn fail(
        &mut self,
        failed: Vec<(u32, ObjectRef, String)>,
        now: Time,
        fx: &mut Vec<Effect>,
    ) {
        let Some(r) = &mut self.rollout else { return };
        let failed: Vec<_> = failed
            .into_iter()
            .filter(|(p, id, _)| r.flights.remove(*p, id).is_some())
            .collect();
        self.fail_settled(failed, now, fx);
    }

    /// Records failures of changes no longer in flight.
    pub(super) fn fail_settled(
        &mut self,
        failed: Vec<(u32, ObjectRef, String)>,
        now: Time,
        fx: &mut Vec<Effect>,
    ) {
        let Some(r) = &mut self.rollout else { return };
        if failed.is_empty() {
            return;
        }
        let universe = r.stages[r.stage].seq.universe();
        for (p, id, reason) in failed {
            r.failures
                .count(r.stage, Note::new(id.to_string(), &reason));
            r.failures.keep_position(universe, p);
            fx.push(Effect::Report(Report::Failed(
                id,
                cut(&reason, REASON_CHARS),
            )));
        }
        fx.push(Effect::Persist);
        if let Some(threshold) = r.crossed() {
            self.trip(threshold, now, fx);
        }
    }

    /// Trips the breaker for a metric gate: no object is to blame.
    pub(super) fn metric_trip(&mut self, reason: String, now: Time, fx: &mut Vec<Effect>) {
        let Some(r) = &mut self.rollout else { return };
        r.failures.fleet += 1;
        r.failures
            .count(r.stage, Note::new("fleet".into(), &reason));
        if let Phase::Baking { samples, .. } = &r.phase {
            for kept in samples {
                let answer = format!("{} at {}", kept.answer, kept.at);
                r.failures
                    .keep(Note::new(format!("metric {}", kept.gate), &answer));
            }
        }
        self.trip(Threshold::Metric(reason), now, fx);
    }

    fn trip(&mut self, threshold: Threshold, now: Time, fx: &mut Vec<Effect>) {
        let Some(r) = &mut self.rollout else { return };
        let stage = &r.stages[r.stage];
        let evidence = Evidence {
            stage: stage.name.clone(),
            threshold,
            stage_failures: (r.failures.per_stage[r.stage], stage.size),
            total_failures: (r.failures.total, r.changed()),
            failed: r
                .failures
                .first
                .iter()
                .map(|n| (n.object.clone(), n.reason.clone()))
                .collect(),
        };
        r.restore = Some(Restore::after_trip(r.reached()));
        r.flights.clear();
        r.healthy = Positions::new();
        r.waiting = None;
        let revert = r.policy.breaker.revert;
        r.phase = Phase::Tripped {
            revert_pending: revert,
        };
        fx.push(Effect::Report(Report::Tripped(evidence.clone())));
        self.breaker = Some(Trip {
            at: now,
            commit: r.commit.clone(),
            evidence,
            reverts: Vec::new(),
            revert_outcome: None,
        });
        fx.push(Effect::Persist);
        fx.push(Effect::PrepareRestore);
    }

    fn revert_effect(&self, evidence: Evidence) -> Effect {
        let r = self.rollout.as_ref().expect("a tripped rollout");
        let failed = match &r.plan {
            Some(plan) => r
                .failures
                .positions
                .iter()
                .flat_map(|(u, ps)| {
                    let order = plan.order(*u);
                    ps.iter()
                        .filter(move |p| *p < order.len())
                        .map(move |p| order.id(p).clone())
                })
                .collect(),
            None => Vec::new(),
        };
        Effect::Revert {
            commit: r.commit.clone(),
            last_good: r.last_good.clone(),
            failed,
            evidence,
        }
    }

    /// Takes what each started position's restore is (the answer to
    /// [`Effect::PrepareRestore`]) and issues again a batch a restart left unconfirmed.
    pub(super) fn restore_planned(&mut self, classes: RestorePlan, fx: &mut Vec<Effect>) {
        let left = classes
            .classes
            .iter()
            .flatten()
            .filter(|c| **c == RestoreClass::LeaveCreated)
            .count();
        if left > 0 {
            fx.push(Effect::Report(Report::LeftCreated(left)));
        }
        if let Some(restore) = self.rollout.as_mut().and_then(|r| r.restore.as_mut()) {
            restore.classes = Some(classes);
        }
        let Some(r) = &self.rollout else { return };
        let (Some(restore), Some(plan)) = (&r.restore, &r.plan) else {
            return;
        };
        let ids = restore.reissue(plan);
        if !ids.is_empty() {
            fx.push(Effect::Restore(ids));
        }
    }

    /// Notes the restores that failed; the batch is confirmed.
    pub(super) fn restored(&mut self, results: Vec<(ObjectRef, Result<(), WriteError>)>) {
        let Some(r) = &mut self.rollout else { return };
        for (id, result) in results {
            if let Err(why) = result {
                r.unrestored
                    .push(Note::new(id.to_string(), &why.to_string()));
            }
        }
        if let Some(restore) = &mut r.restore {
            restore.issued = None;
        }
    }

    /// Records the revert's outcome and quarantines the commits it blames (the newest
    /// [`KEPT_QUARANTINE`]).
    pub(super) fn reverted(
        &mut self,
        culprits: Vec<String>,
        reverts: Vec<String>,
        outcome: String,
        fx: &mut Vec<Effect>,
    ) {
        if let Some(trip) = &mut self.breaker {
            trip.reverts = reverts.iter().take(KEPT_REVERTS).cloned().collect();
            trip.revert_outcome = Some(cut(&outcome, 1024));
        }
        for (i, culprit) in culprits.into_iter().enumerate() {
            if !self.quarantined(&culprit) {
                self.quarantine.push(Quarantined {
                    commit: culprit,
                    reason: cut(&outcome, QUARANTINE_REASON_CHARS),
                    revert: reverts.get(i).cloned(),
                });
            }
        }
        let excess = self.quarantine.len().saturating_sub(KEPT_QUARANTINE);
        self.quarantine.drain(..excess);
        if let Some(r) = &mut self.rollout
            && let Phase::Tripped { revert_pending } = &mut r.phase
        {
            *revert_pending = false;
        }
        fx.push(Effect::Persist);
    }

    /// A tripped rollout's next move: the next batch of restores, the revert once nothing
    /// unlimited is left to restore, `Restored` once everything is done.
    pub(super) fn restore_step(&mut self, revert_pending: bool, now: Time, fx: &mut Vec<Effect>) {
        let Some(r) = &mut self.rollout else { return };
        let Some(restore) = &r.restore else { return };
        if restore.classes.is_none() || restore.issued.is_some() {
            return;
        }
        let reached = r.reached();
        let (Some(restore), Some(plan)) = (&mut r.restore, &r.plan) else {
            return;
        };
        if let Some(ids) = restore.drain(reached, plan, &mut self.budgets, &r.policy, now) {
            let n = ids.len();
            fx.push(Effect::Persist);
            fx.push(Effect::Restore(ids));
            fx.push(Effect::Report(Report::RestoreIssued(n)));
            return;
        }
        let free_done = restore.free_done();
        let all_done = restore.done();
        if free_done && revert_pending && !r.revert_asked {
            r.revert_asked = true;
            if let Some(trip) = &self.breaker {
                let evidence = trip.evidence.clone();
                fx.push(self.revert_effect(evidence));
            }
        }
        let r = self.rollout.as_mut().expect("checked");
        if !all_done {
            r.wait(WaitReason::RestoreBudget, fx);
        }
        if all_done && !revert_pending {
            r.phase = Phase::Restored;
            r.waiting = None;
            fx.push(Effect::Persist);
            fx.push(Effect::Report(Report::Restored {
                unrestored: r.unrestored.count,
            }));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixture::{T0, id, policy, started};
    use super::super::protocol::Event;
    use super::*;
    use crate::health::Health;

    #[test]
    fn a_crossed_threshold_trips_with_its_evidence_and_asks_how_to_restore() {
        let mut p = policy(&[(100.0, 0, false)], 2);
        p.breaker.per_wave = Some(1);
        p.breaker.revert = false;
        let (mut engine, _) = started(4, p);
        let fx = engine.step(
            Event::Observed(vec![(id(1), Health::Failed("kubelet crashed".into()))]),
            T0,
        );
        let trip = engine.breaker().expect("tripped");
        assert_eq!(trip.commit, "c2");
        assert_eq!(
            trip.evidence.threshold,
            Threshold::PerWave { failed: 1, max: 1 }
        );
        assert_eq!(
            trip.evidence.failed,
            [(id(1).to_string(), "kubelet crashed".to_owned())]
        );
        assert_eq!(trip.evidence.stage_failures, (1, 4));
        assert!(fx.contains(&Effect::Report(Report::Tripped(trip.evidence.clone()))));
        assert!(fx.contains(&Effect::PrepareRestore), "{fx:?}");
        let r = engine.rollout().unwrap();
        assert_eq!(
            r.phase(),
            &Phase::Tripped {
                revert_pending: false
            }
        );
        assert_eq!(r.inflight(), 0);
        // The two started positions are restored, newest first, once their classes are known.
        let fx = engine.step(
            Event::RestorePlan(RestorePlan {
                classes: [vec![], vec![], vec![RestoreClass::Free; 2], vec![]],
            }),
            T0,
        );
        assert!(fx.contains(&Effect::Restore(vec![id(1), id(0)])), "{fx:?}");
        let fx = engine.step(Event::Restored(vec![(id(1), Ok(())), (id(0), Ok(()))]), T0);
        assert!(
            fx.contains(&Effect::Report(Report::Restored { unrestored: 0 })),
            "{fx:?}"
        );
        assert_eq!(engine.rollout().unwrap().phase(), &Phase::Restored);
    }

    #[test]
    fn the_revert_quarantines_its_culprits_newest_kept() {
        let mut engine = Engine::default();
        for i in 0..KEPT_QUARANTINE + 1 {
            engine.step(
                Event::Reverted {
                    culprits: vec![format!("c{i}")],
                    reverts: vec![format!("r{i}")],
                    outcome: "x".repeat(QUARANTINE_REASON_CHARS + 1),
                },
                T0,
            );
        }
        assert_eq!(engine.quarantine().len(), KEPT_QUARANTINE);
        assert!(!engine.quarantined("c0"));
        assert!(engine.quarantined(&format!("c{KEPT_QUARANTINE}")));
        let newest = engine.quarantine().last().unwrap();
        assert_eq!(
            newest.revert.as_deref(),
            Some(format!("r{KEPT_QUARANTINE}").as_str())
        );
        assert_eq!(newest.reason.chars().count(), QUARANTINE_REASON_CHARS);
        // Blamed again: quarantined once.
        engine.step(
            Event::Reverted {
                culprits: vec![format!("c{KEPT_QUARANTINE}")],
                reverts: Vec::new(),
                outcome: "again".into(),
            },
            T0,
        );
        assert_eq!(engine.quarantine().len(), KEPT_QUARANTINE);
        assert_ne!(engine.quarantine().last().unwrap().reason, "again");
    }
}
