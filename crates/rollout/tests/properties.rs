//! Properties of the rollout engine over random fleets, policies and operator behaviour:
//! wave sizes, `maxUnavailable`, budgets, the breaker, restore, revert and resume.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use endstate_api::{Machine, MachineSpec};
use endstate_core::{FleetObject, ObjectRef};
use endstate_rollout::diff::{Change, ChangeSet, Op};
use endstate_rollout::health::Health;
use endstate_rollout::plan::{Plan, plan};
use endstate_rollout::policy::{Amount, BudgetLimit, Policy, Thresholds, WaveSpec};
use endstate_rollout::rollout::{Event, Phase};
use endstate_rollout::{Effect, State, Time};
use proptest::prelude::*;

#[derive(Clone, Debug)]
struct Case {
    machines: usize,
    idcs: usize,
    waves: Vec<Amount>,
    max_unavailable: u64,
    per_wave: Option<u64>,
    total: Option<u64>,
    total_ratio: Option<f64>,
    budget: Option<(u64, u64)>,
    timeout_min: u64,
    /// Per machine: seconds until its operator reports, and whether it fails.
    behaviour: Vec<(u64, bool)>,
    /// Serialise and restore the state before this step.
    resume_at: usize,
}

fn case() -> impl Strategy<Value = Case> {
    (1usize..60, 1usize..4).prop_flat_map(|(machines, idcs)| {
        (
            Just(machines),
            Just(idcs),
            prop::collection::vec(
                prop_oneof![
                    (1u64..5).prop_map(Amount::Count),
                    (1u32..99).prop_map(|p| Amount::Percent(p as f64))
                ],
                0..3,
            ),
            1u64..6,
            prop::option::of(1u64..4),
            prop::option::of(1u64..6),
            prop::option::of(prop_oneof![Just(10.0), Just(25.0), Just(50.0)]),
            prop::option::of((1u64..15, 60u64..3600)),
            5u64..30,
            prop::collection::vec((10u64..2400, prop::bool::weighted(0.08)), machines),
            0usize..200,
        )
            .prop_map(
                |(
                    machines,
                    idcs,
                    waves,
                    max_unavailable,
                    per_wave,
                    total,
                    total_ratio,
                    budget,
                    timeout_min,
                    behaviour,
                    resume_at,
                )| Case {
                    machines,
                    idcs,
                    waves,
                    max_unavailable,
                    per_wave,
                    total,
                    total_ratio,
                    budget,
                    timeout_min,
                    behaviour,
                    resume_at,
                },
            )
    })
}

fn machine(i: usize, idcs: usize) -> FleetObject {
    let mut m = Machine::new(
        &format!("m-{i:03}"),
        MachineSpec {
            cluster: "c".into(),
            ip: format!("10.0.0.{i}"),
            hostname: format!("m-{i}"),
            idc: format!("idc-{}", i % idcs),
            packages: BTreeMap::from([("kubelet".into(), "kubelet-2".into())]),
            readiness_gates: None,
            unschedulable: None,
            os_generation: None,
        },
    );
    m.metadata.namespace = Some("fleet".into());
    FleetObject::Machine(Box::new(m))
}

fn policy(case: &Case) -> Policy {
    let mut p = Policy::default();
    let mut waves: Vec<WaveSpec> = case
        .waves
        .iter()
        .enumerate()
        .map(|(i, &size)| WaveSpec {
            name: format!("w{i}"),
            size,
            bake: Duration::from_secs(60 * i as u64),
            pause: false,
        })
        .collect();
    waves.push(WaveSpec {
        name: "all".into(),
        size: Amount::Percent(100.0),
        bake: Duration::ZERO,
        pause: false,
    });
    p.machines.waves = waves;
    p.machines.spread_by = Some("idc".into());
    p.machines.max_unavailable = Amount::Count(case.max_unavailable);
    p.gate_timeout = Duration::from_secs(60 * case.timeout_min);
    p.breaker = Thresholds {
        per_wave: case.per_wave,
        per_wave_ratio: None,
        total: case.total,
        total_ratio: case.total_ratio,
        revert: true,
    };
    if p.breaker.per_wave.is_none() && p.breaker.total.is_none() && p.breaker.total_ratio.is_none()
    {
        p.breaker.per_wave = Some(1);
    }
    if let Some((limit, window)) = case.budget {
        p.budgets = vec![BudgetLimit {
            class: "machine-update".into(),
            limit,
            window: Duration::from_secs(window),
        }];
    }
    p
}

/// What a run of the engine did.
#[derive(Default)]
struct Trace {
    applies: Vec<(Time, ObjectRef)>,
    restored: Vec<ObjectRef>,
    reverts: usize,
    max_inflight_over: Vec<String>,
}

fn run(case: &Case) -> (State, Plan, Trace) {
    let objects: Vec<FleetObject> = (0..case.machines).map(|i| machine(i, case.idcs)).collect();
    let by_id: HashMap<ObjectRef, &FleetObject> = objects.iter().map(|o| (o.id(), o)).collect();
    let changes = ChangeSet {
        changes: objects
            .iter()
            .map(|o| Change {
                id: o.id(),
                op: Op::Update,
            })
            .collect(),
        ..ChangeSet::default()
    };
    let policy = policy(case);
    let plan = plan(&changes, &policy, &|id| by_id.get(id).copied());
    let behaviour: HashMap<ObjectRef, (u64, bool)> = objects
        .iter()
        .map(|o| o.id())
        .zip(case.behaviour.iter().copied())
        .collect();

    let mut now = Time(1_000_000);
    let mut state = State::default();
    let mut trace = Trace::default();
    let mut written_at: HashMap<ObjectRef, Time> = HashMap::new();
    let mut pending: Vec<Effect> = state.start(
        "c2".into(),
        Some("c1".into()),
        plan.clone(),
        policy.clone(),
        now,
    );
    let mut steps = 0;
    loop {
        let mut wake: Option<Time> = None;
        let mut events = Vec::new();
        for effect in pending.drain(..) {
            match effect {
                Effect::Apply(ids) => {
                    for id in &ids {
                        trace.applies.push((now, id.clone()));
                        written_at.insert(id.clone(), now);
                    }
                    events.push(Event::Written(
                        ids.into_iter().map(|id| (id, Ok(2))).collect(),
                    ));
                }
                Effect::Delete(ids) => events.push(Event::Written(
                    ids.into_iter().map(|id| (id, Ok(0))).collect(),
                )),
                Effect::Restore(changes) => {
                    trace.restored.extend(changes.iter().map(|c| c.id.clone()));
                    events.push(Event::Restored(
                        changes.into_iter().map(|c| (c.id, Ok(()))).collect(),
                    ));
                }
                Effect::Revert { commit, .. } => {
                    trace.reverts += 1;
                    events.push(Event::Reverted {
                        culprits: vec![commit],
                        reverts: vec!["r".into()],
                        outcome: "pushed".into(),
                    });
                }
                Effect::Sample(_) => {}
                Effect::WakeAt(t) => wake = Some(wake.map_or(t, |w: Time| w.min(t))),
                Effect::Report(_) => {}
            }
        }
        // The operator's view of what was written.
        let watch = state.watch();
        let mut observed = Vec::new();
        for (id, _) in &watch {
            let (delay, fails) = behaviour[id];
            let ready = written_at[id] + Duration::from_secs(delay);
            if now >= ready {
                observed.push((
                    id.clone(),
                    if fails {
                        Health::Failed("broken".into())
                    } else {
                        Health::Healthy
                    },
                ));
            } else {
                wake = Some(wake.map_or(ready, |w| w.min(ready)));
            }
        }
        if !observed.is_empty() {
            events.push(Event::Observed(observed));
        }
        if events.is_empty() {
            match wake {
                Some(t) if t > now => now = t,
                _ => break,
            }
            events.push(Event::Tick);
        }
        for event in events {
            steps += 1;
            if steps == case.resume_at {
                // Persist and reload: the reloaded state must act exactly as the original.
                let json = serde_json::to_string(&state).unwrap();
                let reloaded: State = serde_json::from_str(&json).unwrap();
                assert_eq!(reloaded, state);
                let mut twin = reloaded.clone();
                let a = state.step(event.clone(), now);
                let b = twin.step(event, now);
                assert_eq!(a, b);
                assert_eq!(state, twin);
                pending.extend(a);
            } else {
                pending.extend(state.step(event, now));
            }
            if let Some(r) = &state.rollout
                && r.phase == Phase::Running
                && r.inflight.len() > r.plan.stages[r.stage].max_unavailable
            {
                trace.max_inflight_over.push(format!(
                    "{} in flight in {}",
                    r.inflight.len(),
                    r.plan.stages[r.stage].name
                ));
            }
        }
        assert!(steps < 100_000, "the rollout does not end");
    }
    (state, plan, trace)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn rollouts_respect_waves_budgets_and_the_breaker(case in case()) {
        let (state, plan, trace) = run(&case);
        let policy = policy(&case);
        let rollout = state.rollout.as_ref().unwrap();

        // Waves: cumulative sizes follow the policy, and no stage is empty.
        let total = case.machines;
        let mut done = 0;
        for stage in &plan.stages {
            prop_assert!(!stage.changes.is_empty());
            done += stage.changes.len();
            let spec = policy.machines.waves.iter().find(|w| stage.name == format!("machines/{}", w.name)).unwrap();
            if spec.name != "all" {
                prop_assert_eq!(done, spec.size.of(total).max(done - stage.changes.len() + 1).min(total));
            }
        }
        prop_assert_eq!(done, total);

        // maxUnavailable.
        prop_assert!(trace.max_inflight_over.is_empty(), "{:?}", trace.max_inflight_over);

        // Budgets: no sliding window ever holds more applies than the limit.
        if let Some((limit, window)) = case.budget {
            let window = Duration::from_secs(window);
            for (i, (t, _)) in trace.applies.iter().enumerate() {
                let within = trace.applies[..=i].iter().filter(|(s, _)| *s > *t - window).count();
                prop_assert!(within as u64 <= limit, "{within} applies in a window of {window:?} at {t}");
            }
        }

        // The breaker trips iff a threshold is crossed, and then everything started is restored
        // and exactly one revert is asked for.
        let crossed = first_crossing(&policy, &plan, &rollout.failures.iter().map(|f| f.stage).collect::<Vec<_>>());
        let tripped = state.breaker.is_some();
        prop_assert_eq!(tripped, crossed.is_some(), "phase {:?}", rollout.phase);
        if tripped {
            prop_assert_eq!(&rollout.phase, &Phase::Restored);
            let started: BTreeSet<ObjectRef> = trace.applies.iter().map(|(_, id)| id.clone()).collect();
            let restored: BTreeSet<ObjectRef> = trace.restored.iter().cloned().collect();
            prop_assert_eq!(restored.len(), trace.restored.len(), "each object is restored once");
            prop_assert_eq!(started, restored);
            prop_assert_eq!(trace.reverts, 1);
            prop_assert!(state.quarantined("c2"));
        } else {
            prop_assert_eq!(&rollout.phase, &Phase::Completed);
            prop_assert_eq!(trace.reverts, 0);
            prop_assert!(trace.restored.is_empty());
            let applied: BTreeSet<ObjectRef> = trace.applies.iter().map(|(_, id)| id.clone()).collect();
            prop_assert_eq!(applied.len(), total, "every machine is applied once");
            prop_assert_eq!(trace.applies.len(), total);
        }
    }
}

/// The index of the failure at which a threshold is first crossed, computed independently of
/// the engine from the sequence of failing stages.
fn first_crossing(policy: &Policy, plan: &Plan, failures: &[usize]) -> Option<usize> {
    let t = &policy.breaker;
    let changed = plan.changed() as f64;
    let mut per_stage: HashMap<usize, u64> = HashMap::new();
    for (i, &stage) in failures.iter().enumerate() {
        let n = per_stage.entry(stage).or_default();
        *n += 1;
        let total = (i + 1) as u64;
        let stage_size = plan.stages[stage].changes.len() as f64;
        if t.per_wave.is_some_and(|m| *n >= m)
            || t.per_wave_ratio
                .is_some_and(|r| *n as f64 * 100.0 / stage_size >= r)
            || t.total.is_some_and(|m| total >= m)
            || t.total_ratio
                .is_some_and(|r| total as f64 * 100.0 / changed >= r)
        {
            return Some(i);
        }
    }
    None
}
