//! What the gates say, and the bake: the outcomes of writes, the health of the objects in
//! flight (or of a baking stage's objects), the answers of the metric gates, and the bake's
//! deadlines.

use endstate_core::ObjectRef;

use super::failures::REASON_CHARS;
use super::protocol::{Effect, KEPT, Phase, Report, WriteError};
use super::state::{Engine, Rollout};
use super::waiting::WaitReason;
use crate::gates::{self, Sample, Verdict};
use crate::health::Health;
use crate::live::LiveError;
use crate::plan::Seq;
use crate::text::cut;
use crate::time::{Time, human};

impl Engine {
    /// Takes the outcomes of writes: a gated change waits for the generation written, an
    /// ungated one (or a kept delete) settles, a failed write fails.
    pub(super) fn written(
        &mut self,
        results: Vec<(ObjectRef, Result<i64, WriteError>)>,
        now: Time,
        fx: &mut Vec<Effect>,
    ) {
        let Some(r) = &mut self.rollout else { return };
        if r.phase != Phase::Running {
            return;
        }
        let Some(stage) = r.stages.get(r.stage) else {
            return;
        };
        let gated = stage.seq.gated();
        let seq = stage.seq;
        let mut failed = Vec::new();
        for (id, result) in results {
            let Some(&p) = r.flights.index.get(&id) else {
                continue;
            };
            match result {
                // Its business cluster cannot be used: held, as if never started.
                Err(WriteError::Live(LiveError::Unavailable {
                    cluster,
                    reason,
                    message,
                })) => {
                    let Some(flight) = r.flights.remove(p, &id) else {
                        continue;
                    };
                    let class = r
                        .plan
                        .as_ref()
                        .and_then(|plan| plan.op(seq, p))
                        .and_then(|op| crate::plan::class(id.kind, op));
                    self.budgets.refund(class, 1, flight.started);
                    r.held.machines += 1;
                    if r.held.targets.insert(cluster.clone()) {
                        fx.push(Effect::Report(Report::TargetHeld {
                            cluster,
                            reason,
                            message,
                            first: id,
                        }));
                    }
                }
                Ok(KEPT) if stage.seq == Seq::Deletes => {
                    r.flights.remove(p, &id);
                    r.settled += 1;
                }
                Ok(generation) if gated => {
                    if let Some(f) = r.flights.by_position.get_mut(&p) {
                        f.generation = Some(generation);
                    }
                }
                Ok(_) => {
                    r.flights.remove(p, &id);
                    r.settled += 1;
                }
                Err(why) => failed.push((p, id, format!("write failed: {why}"))),
            }
        }
        self.fail(failed, now, fx);
    }

    /// Takes what the gates see: a change in flight settles or fails; a baking stage's object
    /// seen healthy and then `Failed` fails.
    pub(super) fn observed(
        &mut self,
        healths: Vec<(ObjectRef, Health)>,
        now: Time,
        fx: &mut Vec<Effect>,
    ) {
        let Some(r) = &mut self.rollout else { return };
        let Some(stage) = r.stages.get(r.stage) else {
            return;
        };
        match r.phase {
            Phase::Running => {
                let mut failed = Vec::new();
                for (id, health) in healths {
                    let Some(&p) = r.flights.index.get(&id) else {
                        continue;
                    };
                    match health {
                        Health::Healthy => {
                            r.flights.remove(p, &id);
                            r.healthy.insert(p);
                            r.settled += 1;
                        }
                        Health::Progressing(why) => {
                            if let Some(f) = r.flights.by_position.get_mut(&p) {
                                f.last = Some(cut(&why, REASON_CHARS));
                            }
                        }
                        Health::Failed(why) => failed.push((p, id, why)),
                    }
                }
                r.regating = false;
                self.fail(failed, now, fx);
            }
            Phase::Baking { .. } => {
                let Some(plan) = r.plan.as_ref() else { return };
                let order = plan.order(stage.seq.universe());
                let range = stage.start..stage.end;
                let mut failed = Vec::new();
                for (id, health) in healths {
                    let Some(p) = order.position(&id).filter(|p| range.contains(p)) else {
                        continue;
                    };
                    match health {
                        Health::Healthy => {
                            r.healthy.insert(p);
                        }
                        Health::Failed(why) if r.healthy.remove(p) => {
                            failed.push((p, id, format!("failed while its wave baked: {why}")));
                        }
                        _ => {}
                    }
                }
                self.fail_settled(failed, now, fx);
            }
            _ => {}
        }
    }

    /// Takes the metric gates' answers: out of bounds trips, no data waits (and trips once it
    /// lasted the gate timeout).
    pub(super) fn sampled(
        &mut self,
        samples: Vec<(String, Sample)>,
        now: Time,
        fx: &mut Vec<Effect>,
    ) {
        let Some(r) = &mut self.rollout else { return };
        let Phase::Baking {
            metrics_ok,
            metrics_missing_since,
            asked,
            samples: kept,
            ..
        } = &mut r.phase
        else {
            return;
        };
        // No data counts from when the query was asked, not from when it gave up.
        let asked_at = asked.take().unwrap_or(now);
        let mut violation = None;
        let mut missing = None;
        // A gate the answers leave out (its query was lost) has no data.
        if let Some(gate) = r
            .policy
            .metrics
            .iter()
            .find(|g| !samples.iter().any(|(name, _)| *name == g.name))
        {
            missing = Some((gate.name.clone(), "no answer".to_owned()));
        }
        for (name, sample) in samples {
            let Some(gate) = r.policy.metrics.iter().find(|g| g.name == name) else {
                continue;
            };
            gates::keep(kept, &name, now, &sample);
            match gates::judge(gate, &sample) {
                Verdict::InBounds => {}
                Verdict::OutOfBounds(why) => violation = Some(why),
                Verdict::NoData(what) => missing = Some((name, what)),
            }
        }
        *metrics_ok = missing.is_none() && violation.is_none();
        match &missing {
            Some(_) => {
                metrics_missing_since.get_or_insert(asked_at);
            }
            None => *metrics_missing_since = None,
        }
        let since = *metrics_missing_since;
        let timeout = r.policy.gate_timeout;
        if violation.is_none()
            && let (Some((name, what)), Some(since)) = (missing, since)
        {
            if now.since(since) >= timeout {
                violation = Some(format!("metric {name}: {what} for {}", human(timeout)));
            } else {
                r.wait(WaitReason::metric_no_data(name, what, now.since(since)), fx);
            }
        } else if matches!(r.waiting, Some(WaitReason::MetricNoData { .. })) {
            r.waiting = None;
        }
        if let Some(reason) = violation {
            self.metric_trip(reason, now, fx);
        }
    }

    /// When the metric gates of a bake will have had no data for the gate timeout: the
    /// oldest of an answer without data and a query asked and not answered.
    pub(super) fn metrics_deadline(r: &Rollout) -> Option<Time> {
        let Phase::Baking {
            metrics_missing_since,
            asked,
            ..
        } = &r.phase
        else {
            return None;
        };
        let since = match (metrics_missing_since, asked) {
            (Some(a), Some(b)) => (*a).min(*b),
            (Some(a), None) | (None, Some(a)) => *a,
            (None, None) => return None,
        };
        Some(since + r.policy.gate_timeout)
    }

    /// A baking stage's next move: trip when its metric gates had no data for the gate
    /// timeout, sample them when due, finish the stage once the bake is over and they are in
    /// bounds. Returns whether the stage finished (so `advance` goes round again).
    pub(super) fn bake_step(&mut self, now: Time, fx: &mut Vec<Effect>) -> bool {
        let Some(r) = &mut self.rollout else {
            return false;
        };
        let Phase::Baking {
            until,
            next_sample,
            metrics_ok,
            ..
        } = r.phase.clone()
        else {
            return false;
        };
        if let Some(deadline) = Self::metrics_deadline(r)
            && deadline <= now
        {
            let timeout = human(r.policy.gate_timeout);
            let last = match &r.phase {
                Phase::Baking { samples, .. } => samples
                    .iter()
                    .filter(|k| k.answer.starts_with("no "))
                    .max_by_key(|k| k.at),
                _ => None,
            };
            let reason = match last {
                Some(k) if k.answer == "no series" => {
                    format!("metric {}: no series for {timeout}", k.gate)
                }
                Some(k) => format!(
                    "metric {}: no answer for {timeout} (last: {})",
                    k.gate, k.answer
                ),
                None => {
                    let names: Vec<&str> =
                        r.policy.metrics.iter().map(|g| g.name.as_str()).collect();
                    format!("metric {}: no answer for {timeout}", names.join(", "))
                }
            };
            self.metric_trip(reason, now, fx);
            return false;
        }
        if let Some(at) = next_sample
            && at <= now
        {
            fx.push(Effect::Sample(r.policy.metrics.clone()));
            let interval = r.policy.metrics.iter().map(|m| m.interval).min();
            if let Phase::Baking {
                next_sample, asked, ..
            } = &mut r.phase
            {
                *next_sample = interval.map(|i| now + i);
                asked.get_or_insert(now);
            }
            return false;
        }
        if now < until || !metrics_ok {
            return false;
        }
        self.stage_done(fx);
        true
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::fixture::{T0, id, policy, started};
    use super::super::protocol::{Event, Interest};
    use super::*;
    use crate::budget::BudgetClass;
    use endstate_core::policy::{BudgetLimit, MetricGate};

    /// A write its business cluster could not take is held: no failure, no breaker, its
    /// budget given back, said once per business cluster; the rollout finishes the others
    /// and ends with it held, so the commit is not good.
    #[test]
    fn a_write_to_a_business_cluster_that_cannot_be_used_is_held_not_failed() {
        let mut p = policy(&[(100.0, 0, false)], 3);
        p.budgets = vec![BudgetLimit {
            class: BudgetClass::MachineUpdate,
            limit: 10,
            window: Duration::from_secs(3600),
        }];
        let (mut engine, _) = started(3, p.clone());
        let spent = |e: &Engine| {
            e.budgets()
                .used(BudgetClass::MachineUpdate, Duration::from_secs(3600), T0)
        };
        assert_eq!(spent(&engine), 3);
        let unavailable = || {
            Err(WriteError::Live(LiveError::Unavailable {
                cluster: "a".into(),
                reason: "TargetUnreachable".into(),
                message: "https://10.0.0.1:6443: connection refused".into(),
            }))
        };
        let fx = engine.step(
            Event::Written(vec![
                (id(0), Ok(2)),
                (id(1), unavailable()),
                (id(2), unavailable()),
            ]),
            T0,
        );
        let held: Vec<&Report> = fx
            .iter()
            .filter_map(|e| match e {
                Effect::Report(r @ Report::TargetHeld { .. }) => Some(r),
                _ => None,
            })
            .collect();
        assert_eq!(
            held,
            [&Report::TargetHeld {
                cluster: "a".into(),
                reason: "TargetUnreachable".into(),
                message: "https://10.0.0.1:6443: connection refused".into(),
                first: id(1),
            }]
        );
        assert!(
            !fx.iter()
                .any(|e| matches!(e, Effect::Report(Report::Failed(..))))
        );
        assert_eq!(spent(&engine), 1, "the held changes' budget is given back");
        let fx = engine.step(Event::Observed(vec![(id(0), Health::Healthy)]), T0);
        assert!(engine.breaker().is_none());
        assert!(
            fx.contains(&Effect::Report(Report::Completed {
                changed: 1,
                held: 2
            })),
            "{fx:?}"
        );
    }

    #[test]
    fn a_write_then_a_healthy_look_settles_the_change_and_the_stage_bakes() {
        let (mut engine, _) = started(1, policy(&[(100.0, 60, false)], 1));
        assert_eq!(engine.interest(&id(0)), Some(Interest::Gate(None)));
        engine.step(Event::Written(vec![(id(0), Ok(7))]), T0);
        assert_eq!(engine.interest(&id(0)), Some(Interest::Gate(Some(7))));
        let fx = engine.step(
            Event::Observed(vec![(id(0), Health::Progressing("rebooting".into()))]),
            T0,
        );
        assert!(!fx.contains(&Effect::Persist), "nothing settled: {fx:?}");
        engine.step(Event::Observed(vec![(id(0), Health::Healthy)]), T0);
        let r = engine.rollout().unwrap();
        assert_eq!((r.inflight(), r.settled()), (0, 1));
        assert!(
            matches!(r.phase(), Phase::Baking { until, .. } if *until == T0 + Duration::from_secs(60))
        );
        assert_eq!(engine.interest(&id(0)), Some(Interest::Bake));
    }

    #[test]
    fn a_failed_write_fails_the_change() {
        let (mut engine, _) = started(2, policy(&[(100.0, 0, false)], 2));
        let fx = engine.step(
            Event::Written(vec![(
                id(1),
                Err(WriteError::Live(LiveError::Fatal("forbidden".into()))),
            )]),
            T0,
        );
        assert!(fx.contains(&Effect::Report(Report::Failed(
            id(1),
            "write failed: forbidden".into()
        ))));
        assert_eq!(engine.rollout().unwrap().inflight(), 1);
    }

    #[test]
    fn a_metric_gate_without_data_holds_the_bake_and_says_for_how_long() {
        let mut p = policy(&[(100.0, 30, false)], 1);
        p.metrics = vec![MetricGate {
            name: "errors".into(),
            url: "http://prometheus".into(),
            query: "sum(errors)".into(),
            min: None,
            max: Some(1.0),
            interval: Duration::from_secs(60),
            headers: Vec::new(),
            secret: None,
        }];
        let (mut engine, _) = started(1, p);
        engine.step(Event::Written(vec![(id(0), Ok(2))]), T0);
        let fx = engine.step(Event::Observed(vec![(id(0), Health::Healthy)]), T0);
        assert!(fx.iter().any(|e| matches!(e, Effect::Sample(_))), "{fx:?}");
        let later = T0 + Duration::from_secs(120);
        let fx = engine.step(
            Event::Sampled(vec![("errors".into(), Sample::NoSeries)]),
            later,
        );
        let why = WaitReason::metric_no_data(
            "errors".into(),
            "no series".into(),
            Duration::from_secs(120),
        );
        assert!(
            fx.contains(&Effect::Report(Report::Waiting(why.clone()))),
            "{fx:?}"
        );
        assert_eq!(engine.rollout().unwrap().waiting(), Some(&why));
        // Data again: the wait is over.
        engine.step(
            Event::Sampled(vec![("errors".into(), Sample::Values(vec![0.0]))]),
            later,
        );
        assert_eq!(engine.rollout().unwrap().waiting(), None);
    }
}
