//! Properties over random fleets, policies and operator behaviour: wave sizes,
//! `maxUnavailable`, budgets, the breaker, restore and revert — and that killing the
//! controller after any effect and resuming from what it persisted changes nothing.

use std::collections::BTreeSet;
use std::time::Duration;

use endstate_core::policy::{Amount, BudgetLimit, Policy, Thresholds, WaveSpec};
use endstate_rollout::Engine;
use endstate_rollout::budget::BudgetClass;
use endstate_rollout::engine::Phase;
use endstate_rollout::plan::Seq;
use proptest::prelude::*;

use crate::world::{World, Write};

#[derive(Clone, Debug)]
pub struct Case {
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
}

fn case(max_machines: usize) -> impl Strategy<Value = Case> {
    (1usize..max_machines, 1usize..4).prop_flat_map(|(machines, idcs)| {
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
            1u64..12,
            prop::option::of(1u64..4),
            prop::option::of(1u64..6),
            prop::option::of(prop_oneof![Just(10.0), Just(25.0), Just(50.0)]),
            prop::option::of((1u64..15, 60u64..3600)),
            5u64..30,
            prop::collection::vec((10u64..2400, prop::bool::weighted(0.05)), machines),
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
                },
            )
    })
}

fn policy(case: &Case) -> Policy {
    let mut p = Policy::default();
    let mut waves: Vec<WaveSpec> = case
        .waves
        .iter()
        .enumerate()
        .map(|(i, &size)| WaveSpec {
            name: Some(format!("w{i}")),
            size,
            bake: Duration::from_secs(60 * i as u64),
            pause: false,
        })
        .collect();
    waves.push(WaveSpec {
        name: Some("all".into()),
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
            class: BudgetClass::MachineUpdate,
            limit,
            window: Duration::from_secs(window),
        }];
    }
    p
}

/// What a run did, to compare runs.
#[derive(Debug, PartialEq)]
struct Trace {
    writes: Vec<Write>,
    reverts: usize,
    phase: Option<Phase>,
    budgets: serde_json::Value,
    failures: u32,
    breaker: bool,
}

fn run(case: &Case, crash_after: Option<usize>) -> (World, Engine, Trace) {
    let mut world = World::new(case.machines, case.idcs, policy(case), &case.behaviour);
    world.crash_after = crash_after;
    let mut engine = Engine::default();
    let effects = world.start(&mut engine);
    let engine = world.run(engine, effects, false);
    let trace = Trace {
        writes: world.writes.clone(),
        reverts: world.reverts,
        phase: engine.rollout().map(|r| r.phase().clone()),
        budgets: engine.to_json()["budgets"].clone(),
        failures: engine.rollout().map_or(0, |r| r.failures().total),
        breaker: engine.breaker().is_some(),
    };
    (world, engine, trace)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn rollouts_respect_waves_budgets_and_the_breaker(case in case(60)) {
        let (world, engine, trace) = run(&case, None);
        let policy = policy(&case);
        let r = engine.rollout().unwrap();

        // Waves: cumulative sizes follow the policy, the ranges tile the order, no stage is
        // empty.
        let total = case.machines as u32;
        let mut done = 0;
        let stages = r.stages();
        for (i, stage) in stages.iter().enumerate() {
            prop_assert_eq!(stage.seq, Seq::Machines);
            prop_assert!(stage.size > 0);
            if i > 0 {
                prop_assert_eq!(stage.start, stages[i - 1].end);
            }
            done += stage.size;
            let spec = policy.machines.waves.iter().find(|w| w.name.as_ref().is_some_and(|n| stage.name == format!("machines/{n}"))).unwrap();
            if spec.name.as_deref() != Some("all") {
                let want = (spec.size.of(total as usize) as u32).max(done - stage.size + 1).min(total);
                prop_assert_eq!(done, want);
            }
        }
        prop_assert_eq!(done, total);

        // maxUnavailable: never more in flight than the wave allows.
        prop_assert!(world.over.is_empty(), "{:?}", world.over);

        // Budgets: no window ever holds more applies than the limit.
        let applies: Vec<&Write> = trace.writes.iter().filter(|w| w.what == "apply").collect();
        if let Some((limit, window)) = case.budget {
            let window = Duration::from_secs(window);
            for (i, w) in applies.iter().enumerate() {
                let within = applies[..=i].iter().filter(|s| s.at > w.at - window).count();
                prop_assert!(within as u64 <= limit, "{within} applies in a window of {window:?} at {}", w.at);
            }
        }

        // The breaker trips iff a threshold is crossed; then everything written is restored
        // and exactly one revert is asked for.
        let started: BTreeSet<&str> = applies.iter().map(|w| w.name.as_str()).collect();
        if trace.breaker {
            prop_assert_eq!(trace.phase.clone(), Some(Phase::Restored));
            let restored: Vec<&str> = trace.writes.iter().filter(|w| w.what == "restore").map(|w| w.name.as_str()).collect();
            let unique: BTreeSet<&str> = restored.iter().copied().collect();
            prop_assert_eq!(unique.len(), restored.len(), "each object is restored once");
            prop_assert_eq!(&started, &unique);
            prop_assert_eq!(trace.reverts, 1);
            prop_assert!(engine.quarantined("c2"));
            for object in world.live.values() {
                prop_assert!(endstate_rollout::diff::same(
                    world.before.iter().find(|b| b.name() == object.name()).unwrap(),
                    object
                ));
            }
        } else {
            prop_assert_eq!(trace.phase.clone(), Some(Phase::Completed));
            prop_assert_eq!(trace.reverts, 0);
            prop_assert_eq!(applies.len(), case.machines, "every machine is applied once");
            prop_assert_eq!(started.len(), case.machines);
        }
    }

    #[test]
    fn a_kill_after_any_effect_resumes_with_the_same_writes_spends_and_outcome(
        case in case(40),
        at in 1usize..400,
    ) {
        let (_, _, straight) = run(&case, None);
        let (world, _, resumed) = run(&case, Some(at));
        if world.crashed {
            prop_assert_eq!(&straight, &resumed, "killed after effect {}", at);
        }
    }
}
