//! Stage admission: which changes of the current stage start now. A change starts when the
//! stage has room under `maxUnavailable` (and its Cluster under `maxUnavailablePerCluster`),
//! its budget class has room, a maintenance window is
//! open (for gated changes), the span in flight allows, and its Cluster has not failed; gate
//! timeouts fail the changes that never settled. Admitted changes are persisted before their
//! writes go out.

use std::collections::{BTreeMap, HashMap};

use super::failures::Failures;
use super::flights::bucket_up;
use super::protocol::{Effect, Phase, Report};
use super::state::{Engine, Held};
use super::waiting::WaitReason;
use crate::budget::BudgetClass;
use crate::plan::{self, Plan, Seq, Universe};
use crate::time::{Time, human};

/// The widest range of positions in flight at once: admission waits while the oldest change
/// in flight is this far behind the cursor (it times out at its gate deadline at the latest).
/// Bounds the persisted in-flight bitmap (16 KiB) for any fleet size.
pub const MAX_SPAN: u32 = 1 << 17;

impl Engine {
    /// Gates and starts work in the current stage. Returns whether the phase changed (so
    /// `advance` goes round again).
    pub(super) fn run_stage(&mut self, now: Time, fx: &mut Vec<Effect>) -> bool {
        let Some(r) = &mut self.rollout else {
            return false;
        };
        let Some(stage) = r.stages.get(r.stage).cloned() else {
            return false;
        };
        let plan = r.plan.as_ref().expect("resumed");
        // Gate timeouts: whole start buckets at a time.
        let timeout = r.policy.gate_timeout;
        if stage.seq.gated() && !r.regating {
            let expired = r.flights.expired(now, timeout);
            if !expired.is_empty() {
                let failed = expired
                    .into_iter()
                    .map(|p| {
                        let f = &r.flights.by_position[&p];
                        let what = match f.generation {
                            _ if stage.seq == Seq::Deletes => "not gone".to_owned(),
                            Some(g) => format!("not healthy for generation {g}"),
                            None => "not healthy for its write".to_owned(),
                        };
                        let last = f.last.as_deref().unwrap_or("no status");
                        (
                            p,
                            plan.id(stage.seq, p).clone(),
                            format!("{what} within {}: {last}", human(timeout)),
                        )
                    })
                    .collect();
                self.fail(failed, now, fx);
                if !matches!(
                    self.rollout.as_ref().map(|r| &r.phase),
                    Some(Phase::Running)
                ) {
                    return true;
                }
            }
        }
        let r = self.rollout.as_mut().expect("checked");
        let plan = r.plan.as_ref().expect("resumed");
        let end = stage.end.min(plan.len(stage.seq));
        // A partial plan knows the next positions only: nothing past them starts until the
        // whole plan comes.
        let known = plan.known_until(stage.seq).min(end);
        let aborting = r.superseded_by.is_some() && r.policy.abort_on_new_commit;
        // Skip what is in sync, and Machines whose Cluster failed its gate in this rollout: no
        // spend, no write.
        while r.cursor < known
            && (plan.op(stage.seq, r.cursor).is_none()
                || held(plan, &r.failures, stage.seq, r.cursor).is_some())
        {
            if let Some(cluster) = held(plan, &r.failures, stage.seq, r.cursor) {
                hold(&mut r.held, plan, stage.seq, r.cursor, cluster, fx);
            }
            r.cursor += 1;
        }
        if r.cursor >= known && known < end && !aborting {
            return false;
        }
        if r.cursor >= end || aborting {
            if !r.flights.is_empty() {
                return false;
            }
            if aborting {
                self.supersede(fx);
                return true;
            }
            // The stage settled.
            let sample = !r.policy.metrics.is_empty() && stage.seq.gated();
            r.phase = Phase::Baking {
                until: now + stage.bake(),
                next_sample: sample.then_some(now),
                metrics_ok: !sample,
                metrics_missing_since: None,
                asked: None,
                samples: Vec::new(),
            };
            fx.push(Effect::Persist);
            return true;
        }
        // Start what may start: room under maxUnavailable, the budget, the window. Changes are
        // admitted in batches (an eighth of maxUnavailable at least) so that saving the state
        // before the writes costs one status write per batch.
        let max = stage.max_unavailable as usize;
        let room = max.saturating_sub(r.flights.len());
        let batch = (max / 8).max(1);
        if room == 0 || (room < batch && !r.flights.is_empty()) {
            return false;
        }
        let (weekday, minute) = now.weekday_and_minute();
        if stage.seq.gated() && !r.policy.window_open(weekday, minute) {
            r.wait(WaitReason::OutsideWindows, fx);
            return false;
        }
        // Machines not healthy yet per Cluster, when the policy limits them.
        let mut busy: HashMap<u32, usize> = HashMap::new();
        if r.policy.machines.max_unavailable_per_cluster.is_some() {
            for p in r.flights.by_position.keys() {
                if let Some(c) = plan.cluster_of(stage.seq, *p) {
                    *busy.entry(c).or_default() += 1;
                }
            }
        }
        let started = bucket_up(now, timeout);
        let oldest = r.flights.by_position.keys().next().copied();
        let span_end = oldest.map_or(u32::MAX, |o| o.saturating_add(MAX_SPAN));
        let mut ids = Vec::new();
        let mut spends: BTreeMap<BudgetClass, u64> = BTreeMap::new();
        let mut blocked = None;
        while ids.len() < room && r.cursor < known.min(span_end) {
            let p = r.cursor;
            let Some(op) = plan.op(stage.seq, p) else {
                r.cursor += 1;
                continue;
            };
            if let Some(cluster) = held(plan, &r.failures, stage.seq, p) {
                hold(&mut r.held, plan, stage.seq, p, cluster, fx);
                r.cursor += 1;
                continue;
            }
            let cluster = plan.cluster_limit(&r.policy, stage.seq, p);
            // The Cluster has as many changing as it may: wait for one to settle (in order,
            // as for `maxUnavailable`).
            if let Some((c, limit)) = cluster
                && busy.get(&c).copied().unwrap_or(0) >= limit
            {
                break;
            }
            let id = plan.id(stage.seq, p);
            let class = plan::class(id.kind, op);
            let spent = class.map_or(0, |c| spends.get(&c).copied().unwrap_or(0)) as usize;
            if self.budgets.available(&r.policy, class, now) <= spent {
                blocked = class;
                break;
            }
            if let Some(c) = class {
                *spends.entry(c).or_default() += 1;
            }
            if let Some((c, _)) = cluster {
                *busy.entry(c).or_default() += 1;
            }
            r.flights.insert(p, id.clone(), started);
            ids.push(id.clone());
            r.cursor += 1;
        }
        for (class, n) in spends {
            self.budgets.spend(&r.policy, Some(class), n, now);
        }
        match blocked {
            Some(class) => {
                let until = self.budgets.next_room(&r.policy, Some(class), now);
                r.wait(WaitReason::budget(class, until), fx);
            }
            _ => r.waiting = None,
        }
        if !ids.is_empty() {
            fx.push(Effect::Persist);
            fx.push(Effect::write(stage.seq, ids));
        }
        false
    }
}

/// The Clusters-universe position of the failed Cluster that holds back the Machine at `p` of
/// `seq`, if one does: a Machine is never started on a Cluster whose change in the same
/// rollout failed its gate.
fn held(plan: &Plan, failures: &Failures, seq: Seq, p: u32) -> Option<u32> {
    let cluster = plan.cluster_of(seq, p)?;
    failures
        .positions
        .get(&Universe::Clusters)?
        .contains(cluster)
        .then_some(cluster)
}

/// Counts a held-back Machine, and reports its Cluster the first time.
fn hold(held: &mut Held, plan: &Plan, seq: Seq, p: u32, cluster: u32, fx: &mut Vec<Effect>) {
    held.machines += 1;
    if held.clusters.insert(cluster) {
        fx.push(Effect::Report(Report::Held {
            cluster: plan.order(Universe::Clusters).id(cluster).clone(),
            first: plan.id(seq, p).clone(),
        }));
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::fixture::{T0, applied, id, policy, started};
    use super::super::protocol::Event;
    use super::*;
    use endstate_core::policy::{Amount, BudgetLimit, Window};

    #[test]
    fn admits_up_to_max_unavailable_and_persists_before_the_writes() {
        let (engine, fx) = started(5, policy(&[(100.0, 0, false)], 2));
        assert_eq!(applied(&fx), ["m-000", "m-001"]);
        let persist = fx.iter().rposition(|e| *e == Effect::Persist).unwrap();
        let apply = fx
            .iter()
            .position(|e| matches!(e, Effect::Apply(_)))
            .unwrap();
        assert!(persist < apply, "{fx:?}");
        assert_eq!(engine.rollout().unwrap().cursor(), 2);
        assert!(engine.rollout().unwrap().waiting().is_none());
    }

    /// Machines of clusters `a` and `b` (three each), spread by cluster, at most one of a
    /// Cluster changing at once: each Cluster's next Machine starts when its last one settles,
    /// in order, whatever room `maxUnavailable` leaves.
    #[test]
    fn a_cluster_has_at_most_its_share_changing() {
        use endstate_api::{Cluster, Machine};
        use endstate_core::FleetObject;
        use endstate_core::ownership::FleetId;

        use crate::health::Health;
        use crate::plan::Inputs;

        let machines = |kubelet: &str| -> Vec<FleetObject> {
            let mut objects: Vec<FleetObject> = (0..6)
                .map(|i| {
                    Machine::test(&format!("m-{i}"))
                        .in_cluster(["a", "b"][i / 3])
                        .package("kubelet", kubelet)
                        .namespace("ns")
                        .build()
                        .into()
                })
                .collect();
            objects.extend(["a", "b"].map(|c| Cluster::test(c).namespace("ns").build().into()));
            objects
        };
        let mut p = policy(&[(100.0, 0, false)], 10);
        p.machines.spread_by = Some("cluster".into());
        p.machines.max_unavailable_per_cluster = Some(Amount::Count(1));
        let (desired, live) = (machines("k2"), machines("k1"));
        let plan = Plan::new(Inputs {
            desired: &desired,
            base: None,
            live: &live,
            fleet: &FleetId::new("ns", "f"),
            policy: &p,
            orphans: None,
        });
        let mut engine = Engine::default();
        let fx = engine.start(
            super::super::protocol::Start {
                commit: "c2".into(),
                last_good: Some("c1".into()),
                base: None,
                plan,
                policy: p,
            },
            T0,
        );
        assert_eq!(applied(&fx), ["m-0", "m-3"]);
        let m =
            |name: &str| endstate_core::ObjectRef::new(endstate_core::Kind::Machine, "ns", name);
        engine.step(
            Event::Written(vec![(m("m-0"), Ok(2)), (m("m-3"), Ok(2))]),
            T0,
        );
        let fx = engine.step(Event::Observed(vec![(m("m-0"), Health::Healthy)]), T0);
        assert_eq!(applied(&fx), ["m-1"], "a's next; b has one changing");
        let fx = engine.step(Event::Observed(vec![(m("m-3"), Health::Healthy)]), T0);
        assert_eq!(applied(&fx), ["m-4"]);
    }

    #[test]
    fn a_spent_budget_waits_and_says_so_once() {
        let mut p = policy(&[(100.0, 0, false)], 5);
        p.budgets = vec![BudgetLimit {
            class: BudgetClass::MachineUpdate,
            limit: 1,
            window: Duration::from_secs(3600),
        }];
        let (mut engine, fx) = started(3, p.clone());
        assert_eq!(applied(&fx), ["m-000"]);
        let until = engine
            .budgets()
            .next_room(&p, Some(BudgetClass::MachineUpdate), T0)
            .unwrap();
        assert!(until >= T0 + Duration::from_secs(3600));
        let waits: Vec<&WaitReason> = fx
            .iter()
            .filter_map(|e| match e {
                Effect::Report(Report::Waiting(why)) => Some(why),
                _ => None,
            })
            .collect();
        assert_eq!(
            waits,
            [&WaitReason::budget(BudgetClass::MachineUpdate, Some(until))]
        );
        // Waiting still, for the same reason: nothing new to report.
        let fx = engine.step(Event::Tick, T0 + Duration::from_secs(60));
        assert!(applied(&fx).is_empty());
        assert!(!fx.iter().any(|e| matches!(e, Effect::Report(_))), "{fx:?}");
        assert_eq!(
            engine
                .rollout()
                .unwrap()
                .waiting()
                .unwrap()
                .condition_reason(),
            "BudgetExhausted"
        );
    }

    #[test]
    fn outside_every_window_nothing_starts_until_one_opens() {
        let mut p = policy(&[(100.0, 0, false)], 5);
        // T0 is a Thursday at midnight; the window opens at 02:00.
        p.windows = vec![Window {
            days: vec![3],
            start: 120,
            end: 180,
        }];
        let (mut engine, fx) = started(2, p);
        assert!(applied(&fx).is_empty());
        assert_eq!(
            engine.rollout().unwrap().waiting(),
            Some(&WaitReason::OutsideWindows)
        );
        let opens = T0 + Duration::from_secs(7200);
        assert!(fx.contains(&Effect::WakeAt(opens)), "{fx:?}");
        assert_eq!(
            applied(&engine.step(Event::Tick, opens)),
            ["m-000", "m-001"]
        );
        assert_eq!(engine.rollout().unwrap().waiting(), None);
    }

    #[test]
    fn a_change_not_healthy_within_the_gate_timeout_fails() {
        let (mut engine, _) = started(1, policy(&[(100.0, 0, false)], 1));
        let fx = engine.step(Event::Tick, T0 + Duration::from_secs(599));
        assert!(
            !fx.iter()
                .any(|e| matches!(e, Effect::Report(Report::Failed(..))))
        );
        let fx = engine.step(Event::Tick, T0 + Duration::from_secs(600));
        assert!(
            fx.iter()
                .any(|e| matches!(e, Effect::Report(Report::Failed(who, why))
                if *who == id(0) && why == "not healthy for its write within 10m: no status")),
            "{fx:?}"
        );
        assert_eq!(engine.rollout().unwrap().failures().total, 1);
        assert_eq!(engine.rollout().unwrap().inflight(), 0);
    }
}
