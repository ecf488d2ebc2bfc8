//! One example per transition of the state machine.

use std::time::Duration;

use endstate_core::policy::{Amount, BudgetLimit, MetricGate, Policy, WaveSpec, Window};
use endstate_core::{Kind, ObjectRef};
use endstate_rollout::budget::BudgetClass;
use endstate_rollout::engine::{Effect, Interest, Phase, Report, RestoreClass, RestorePlan};
use endstate_rollout::gates::Sample;
use endstate_rollout::health::Health;
use endstate_rollout::plan::Universe;
use endstate_rollout::{Engine, Event, Time};

use crate::world::{NS, T0, World};

fn waves(sizes: &[(Amount, u64, bool)]) -> Vec<WaveSpec> {
    sizes
        .iter()
        .enumerate()
        .map(|(i, &(size, bake, pause))| WaveSpec {
            name: Some(format!("w{i}")),
            size,
            bake: Duration::from_secs(bake),
            pause,
        })
        .collect()
}

fn policy(sizes: &[(Amount, u64, bool)], max_unavailable: u64) -> Policy {
    let mut p = Policy::default();
    p.machines.waves = waves(sizes);
    p.machines.max_unavailable = Amount::Count(max_unavailable);
    p.gate_timeout = Duration::from_secs(600);
    p
}

fn applies(effects: &[Effect]) -> Vec<String> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Apply(ids) => Some(ids.iter().map(|id| id.name.clone())),
            _ => None,
        })
        .flatten()
        .collect()
}

fn id(name: &str) -> ObjectRef {
    ObjectRef::new(Kind::Machine, NS, name)
}

fn phase(engine: &Engine) -> Phase {
    engine.rollout().unwrap().phase().clone()
}

#[test]
fn start_persists_before_the_first_writes_and_stays_running() {
    let mut world = World::new(4, 1, policy(&[(Amount::Percent(100.0), 0, false)], 2), &[]);
    let mut engine = Engine::default();
    let effects = world.start(&mut engine);
    let persist = effects.iter().position(|e| *e == Effect::Persist).unwrap();
    let apply = effects
        .iter()
        .rposition(|e| matches!(e, Effect::Apply(_)))
        .unwrap();
    assert!(persist < apply, "{effects:?}");
    // The persisted state already holds the admitted writes in flight, and their spends.
    let last_persist = effects[..apply]
        .iter()
        .rposition(|e| *e == Effect::Persist)
        .unwrap();
    assert!(last_persist < apply);
    assert_eq!(applies(&effects), ["m-000", "m-001"]);
    assert_eq!(engine.rollout().unwrap().inflight(), 2);
    let json = engine.to_json();
    assert!(!json["rollout"]["inflight"].as_array().unwrap().is_empty());
    assert_eq!(phase(&engine), Phase::Running);
    assert!(matches!(
        engine.interest(&id("m-000")),
        Some(Interest::Gate(None))
    ));
    assert_eq!(engine.interest(&id("m-003")), None);
}

#[test]
fn a_settled_stage_bakes_then_the_next_starts() {
    let mut world = World::new(
        4,
        1,
        policy(
            &[
                (Amount::Count(1), 300, false),
                (Amount::Percent(100.0), 0, false),
            ],
            1,
        ),
        &[],
    );
    let mut engine = Engine::default();
    let effects = world.start(&mut engine);
    world.settle(&mut engine, effects);
    let written = engine.step(
        Event::Observed(vec![(id("m-000"), Health::Healthy)]),
        T0 + Duration::from_secs(60),
    );
    assert!(
        matches!(phase(&engine), Phase::Baking { .. }),
        "{:?}",
        phase(&engine)
    );
    assert!(written.contains(&Effect::WakeAt(T0 + Duration::from_secs(360))));
    // During the bake the wave's objects are watched for failures, not gated.
    assert_eq!(engine.interest(&id("m-000")), Some(Interest::Bake));
    let next = engine.step(Event::Tick, T0 + Duration::from_secs(360));
    assert!(
        next.iter()
            .any(|e| matches!(e, Effect::Report(Report::StageCompleted { index: 0, .. })))
    );
    assert!(
        next.iter()
            .any(|e| matches!(e, Effect::Report(Report::StageStarted { index: 1, .. })))
    );
    assert_eq!(applies(&next), ["m-001"]);
}

#[test]
fn a_failure_during_the_bake_counts_against_the_breaker() {
    let mut world = World::new(
        4,
        1,
        policy(
            &[
                (Amount::Count(1), 600, false),
                (Amount::Percent(100.0), 0, false),
            ],
            1,
        ),
        &[],
    );
    let mut engine = Engine::default();
    let effects = world.start(&mut engine);
    world.settle(&mut engine, effects);
    engine.step(Event::Observed(vec![(id("m-000"), Health::Healthy)]), T0);
    let fx = engine.step(
        Event::Observed(vec![(id("m-000"), Health::Failed("kernel panic".into()))]),
        T0 + Duration::from_secs(60),
    );
    assert!(matches!(phase(&engine), Phase::Tripped { .. }));
    assert!(fx.iter().any(|e| matches!(e, Effect::Report(Report::Tripped(ev)) if ev.failed[0].1.contains("baked: kernel panic"))));
    assert!(fx.contains(&Effect::PrepareRestore));
}

#[test]
fn a_paused_wave_holds_until_approved() {
    let p = policy(
        &[
            (Amount::Count(1), 0, true),
            (Amount::Percent(100.0), 0, false),
        ],
        1,
    );
    let mut world = World::new(3, 1, p, &[(10, false); 3]);
    let mut engine = Engine::default();
    let effects = world.start(&mut engine);
    world.settle(&mut engine, effects);
    let fx = engine.step(Event::Observed(vec![(id("m-000"), Health::Healthy)]), T0);
    assert_eq!(phase(&engine), Phase::AwaitingApproval);
    assert!(
        fx.iter().any(
            |e| matches!(e, Effect::Report(Report::AwaitingApproval(w)) if w == "machines/w0")
        )
    );
    // Time alone does not move it.
    assert!(applies(&engine.step(Event::Tick, T0 + Duration::from_secs(86_400))).is_empty());
    let fx = engine.step(Event::Approve, T0 + Duration::from_secs(86_400));
    assert_eq!(phase(&engine), Phase::Running);
    assert_eq!(applies(&fx), ["m-001"]);
    // The whole rollout, approving as it goes.
    let mut world = World::new(
        3,
        1,
        policy(
            &[
                (Amount::Count(1), 0, true),
                (Amount::Percent(100.0), 0, false),
            ],
            1,
        ),
        &[(10, false); 3],
    );
    let mut engine = Engine::default();
    let effects = world.start(&mut engine);
    let engine = world.run(engine, effects, true);
    assert_eq!(phase(&engine), Phase::Completed);
    assert_eq!(world.approvals, 1);
}

#[test]
fn outside_every_maintenance_window_nothing_starts() {
    let mut p = policy(&[(Amount::Percent(100.0), 0, false)], 5);
    // T0 is Thursday 00:00 UTC; the window is Thursday 02:00–03:00.
    p.windows = vec![Window {
        days: vec![3],
        start: 120,
        end: 180,
    }];
    let mut world = World::new(3, 1, p, &[]);
    let mut engine = Engine::default();
    let effects = world.start(&mut engine);
    assert!(applies(&effects).is_empty(), "{effects:?}");
    assert!(effects.iter().any(
        |e| matches!(e, Effect::Report(Report::Waiting(w)) if w.to_string().contains("maintenance window"))
    ));
    let opens = T0 + Duration::from_secs(7200);
    assert!(effects.contains(&Effect::WakeAt(opens)), "{effects:?}");
    assert_eq!(applies(&engine.step(Event::Tick, opens)).len(), 3);
}

#[test]
fn a_spent_budget_waits_for_its_window_and_never_overspends() {
    let mut p = policy(&[(Amount::Percent(100.0), 0, false)], 10);
    p.budgets = vec![BudgetLimit {
        class: BudgetClass::MachineUpdate,
        limit: 2,
        window: Duration::from_secs(1600),
    }];
    let mut world = World::new(5, 1, p, &[(10, false); 5]);
    let mut engine = Engine::default();
    let effects = world.start(&mut engine);
    assert_eq!(applies(&effects).len(), 2);
    assert!(effects.iter().any(|e| matches!(e, Effect::Report(Report::Waiting(w)) if w.to_string().starts_with("budget machine-update is spent until"))));
    let engine = world.run(engine, effects, false);
    assert_eq!(phase(&engine), Phase::Completed);
    let times: Vec<Time> = world.writes.iter().map(|w| w.at).collect();
    for (i, t) in times.iter().enumerate() {
        let within = times[..=i]
            .iter()
            .filter(|s| **s > *t - Duration::from_secs(1600))
            .count();
        assert!(within <= 2, "{times:?}");
    }
}

#[test]
fn a_new_commit_lets_the_wave_finish_then_supersedes() {
    let p = policy(
        &[
            (Amount::Count(2), 0, false),
            (Amount::Percent(100.0), 0, false),
        ],
        2,
    );
    let mut world = World::new(4, 1, p, &[]);
    let mut engine = Engine::default();
    let effects = world.start(&mut engine);
    world.settle(&mut engine, effects);
    let fx = engine.step(Event::NewCommit("c3".into()), T0);
    assert!(fx.contains(&Effect::Persist));
    assert_eq!(phase(&engine), Phase::Running);
    engine.step(Event::Observed(vec![(id("m-000"), Health::Healthy)]), T0);
    let fx = engine.step(Event::Observed(vec![(id("m-001"), Health::Healthy)]), T0);
    assert!(
        fx.iter()
            .any(|e| matches!(e, Effect::Report(Report::Superseded(c)) if c == "c3"))
    );
    assert_eq!(phase(&engine), Phase::Superseded);
    assert!(!engine.busy());
}

#[test]
fn a_new_commit_with_abort_starts_nothing_more_in_the_wave() {
    let mut p = policy(&[(Amount::Percent(100.0), 0, false)], 1);
    p.abort_on_new_commit = true;
    let mut world = World::new(4, 1, p, &[]);
    let mut engine = Engine::default();
    let effects = world.start(&mut engine);
    world.settle(&mut engine, effects);
    engine.step(Event::NewCommit("c3".into()), T0);
    let fx = engine.step(Event::Observed(vec![(id("m-000"), Health::Healthy)]), T0);
    assert!(applies(&fx).is_empty(), "nothing more starts: {fx:?}");
    assert_eq!(phase(&engine), Phase::Superseded);
}

#[test]
fn a_gate_timeout_fails_the_object_and_trips() {
    let p = policy(&[(Amount::Percent(100.0), 0, false)], 1);
    let mut world = World::new(2, 1, p, &[]);
    let mut engine = Engine::default();
    let effects = world.start(&mut engine);
    world.settle(&mut engine, effects);
    engine.step(
        Event::Observed(vec![(
            id("m-000"),
            Health::Progressing("phase Installing".into()),
        )]),
        T0,
    );
    // The start was rounded up to a bucket of timeout / 16: the deadline is at most one
    // bucket later than 10 minutes.
    let early = engine.step(Event::Tick, T0 + Duration::from_secs(599));
    assert!(matches!(phase(&engine), Phase::Running), "{early:?}");
    let fx = engine.step(Event::Tick, T0 + Duration::from_secs(600 + 600 / 16));
    assert!(matches!(phase(&engine), Phase::Tripped { .. }));
    assert!(fx.iter().any(|e| matches!(e, Effect::Report(Report::Failed(_, why)) if why.contains("within 10m: phase Installing"))));
}

fn metric(interval: u64) -> MetricGate {
    MetricGate {
        name: "errors".into(),
        url: "http://prom".into(),
        query: "rate(errors[5m])".into(),
        min: None,
        max: Some(1.0),
        interval: Duration::from_secs(interval),
        headers: Vec::new(),
        secret: None,
    }
}

#[test]
fn a_metric_out_of_bounds_while_baking_trips() {
    let mut p = policy(
        &[
            (Amount::Count(1), 600, false),
            (Amount::Percent(100.0), 0, false),
        ],
        1,
    );
    p.metrics = vec![metric(60)];
    let mut world = World::new(2, 1, p, &[]);
    let mut engine = Engine::default();
    let effects = world.start(&mut engine);
    world.settle(&mut engine, effects);
    let fx = engine.step(Event::Observed(vec![(id("m-000"), Health::Healthy)]), T0);
    assert!(
        fx.iter()
            .any(|e| matches!(e, Effect::Sample(g) if g[0].name == "errors"))
    );
    engine.step(
        Event::Sampled(vec![("errors".into(), Sample::Values(vec![0.2]))]),
        T0,
    );
    assert!(matches!(
        phase(&engine),
        Phase::Baking {
            metrics_ok: true,
            ..
        }
    ));
    let fx = engine.step(
        Event::Sampled(vec![("errors".into(), Sample::Values(vec![7.0]))]),
        T0 + Duration::from_secs(60),
    );
    assert!(matches!(phase(&engine), Phase::Tripped { .. }));
    assert!(fx.iter().any(
        |e| matches!(e, Effect::Report(Report::Tripped(ev)) if ev.threshold.to_string().contains("errors = 7"))
    ));
}

#[test]
fn a_metric_that_never_answers_holds_the_bake_then_trips_after_the_gate_timeout() {
    let mut p = policy(
        &[
            (Amount::Count(1), 60, false),
            (Amount::Percent(100.0), 0, false),
        ],
        1,
    );
    p.metrics = vec![metric(30)];
    let mut world = World::new(2, 1, p, &[]);
    let mut engine = Engine::default();
    let effects = world.start(&mut engine);
    world.settle(&mut engine, effects);
    engine.step(Event::Observed(vec![(id("m-000"), Health::Healthy)]), T0);
    let missing = || {
        vec![(
            "errors".to_owned(),
            Sample::Failed("connection refused".to_owned()),
        )]
    };
    engine.step(Event::Sampled(missing()), T0);
    // The bake is over, but an unanswered gate holds it.
    let fx = engine.step(Event::Tick, T0 + Duration::from_secs(120));
    assert!(matches!(phase(&engine), Phase::Baking { .. }), "{fx:?}");
    engine.step(Event::Sampled(missing()), T0 + Duration::from_secs(300));
    assert!(matches!(phase(&engine), Phase::Baking { .. }));
    engine.step(Event::Sampled(missing()), T0 + Duration::from_secs(600));
    assert!(matches!(phase(&engine), Phase::Tripped { .. }));
}

/// An engine whose canary (one Machine, 30 s bake) settled and waits for `gate`.
fn canary_settled(gate: MetricGate) -> Engine {
    let mut p = policy(
        &[
            (Amount::Count(1), 30, false),
            (Amount::Percent(100.0), 0, false),
        ],
        1,
    );
    p.metrics = vec![gate];
    let mut world = World::new(2, 1, p, &[]);
    let mut engine = Engine::default();
    let effects = world.start(&mut engine);
    world.settle(&mut engine, effects);
    engine
}

/// The next wake-up asked for, if any.
fn wake(effects: &[Effect]) -> Option<Time> {
    effects.iter().find_map(|e| match e {
        Effect::WakeAt(t) => Some(*t),
        _ => None,
    })
}

/// A bake that is over and held by a gate without data used to ask to be woken at its end,
/// already past, so the loop turned without letting the clock move (the virtual clock stood
/// still and the CPU spun). It asks for its next sample or its deadline instead.
#[test]
fn a_bake_held_by_a_gate_wakes_for_the_next_sample_not_for_its_past_end() {
    let mut engine = canary_settled(metric(30));
    engine.step(Event::Observed(vec![(id("m-000"), Health::Healthy)]), T0);
    let refused = vec![("errors".to_owned(), Sample::Failed("refused".into()))];
    engine.step(Event::Sampled(refused.clone()), T0);
    let now = T0 + Duration::from_secs(45);
    let fx = engine.step(Event::Tick, now);
    assert!(matches!(phase(&engine), Phase::Baking { .. }), "{fx:?}");
    let at = wake(&fx).expect("a wake-up");
    assert!(at > now, "woken at {at}, now {now}: {fx:?}");
    // That is the sample asked at T0+45 and due again at T0+75; the gate timeout counts from
    // the first answer without data, at T0.
    assert_eq!(at, T0 + Duration::from_secs(75));
    let fx = engine.step(Event::Tick, at);
    assert!(fx.iter().any(|e| matches!(e, Effect::Sample(_))), "{fx:?}");
    engine.step(Event::Sampled(refused), at + Duration::from_secs(1));
    let fx = engine.step(Event::Tick, T0 + Duration::from_secs(599));
    assert!(matches!(phase(&engine), Phase::Baking { .. }), "{fx:?}");
    assert!(wake(&fx).is_some_and(|t| t <= T0 + Duration::from_secs(600)));
}

/// A query asked and never answered counts as no data from when it was asked: the bake trips
/// at the gate timeout on the engine's clock, whatever the query API does.
#[test]
fn a_query_that_never_answers_trips_at_the_gate_timeout() {
    let mut engine = canary_settled(metric(30));
    let fx = engine.step(Event::Observed(vec![(id("m-000"), Health::Healthy)]), T0);
    assert!(fx.iter().any(|e| matches!(e, Effect::Sample(_))));
    // No answer ever comes.
    let fx = engine.step(Event::Tick, T0 + Duration::from_secs(300));
    assert!(matches!(phase(&engine), Phase::Baking { .. }), "{fx:?}");
    assert_eq!(wake(&fx), Some(T0 + Duration::from_secs(330)));
    let fx = engine.step(Event::Tick, T0 + Duration::from_secs(600));
    assert!(matches!(phase(&engine), Phase::Tripped { .. }), "{fx:?}");
    assert!(
        fx.iter().any(|e| matches!(e,
        Effect::Report(Report::Tripped(ev)) if ev.threshold.to_string() == "metric errors: no answer for 10m"))
    );
}

/// A query that selects no series is no data: the bake holds and says so, and trips after the
/// gate timeout; the evidence carries the gate's last answers.
#[test]
fn a_query_without_series_holds_the_bake_says_so_and_trips_after_the_gate_timeout() {
    let mut engine = canary_settled(metric(60));
    engine.step(Event::Observed(vec![(id("m-000"), Health::Healthy)]), T0);
    let none = || vec![("errors".to_owned(), Sample::NoSeries)];
    engine.step(Event::Sampled(none()), T0);
    let two_minutes = T0 + Duration::from_secs(120);
    engine.step(Event::Tick, two_minutes);
    let fx = engine.step(Event::Sampled(none()), two_minutes);
    assert!(
        fx.iter().any(|e| matches!(e,
            Effect::Report(Report::Waiting(why)) if why.to_string() == "metric errors: no series for 2m")),
        "{fx:?}"
    );
    let r = engine.rollout().unwrap();
    assert_eq!(
        r.waiting().map(ToString::to_string).as_deref(),
        Some("metric errors: no series for 2m")
    );
    let Phase::Baking { samples, .. } = r.phase() else {
        panic!()
    };
    assert_eq!(samples.len(), 2);
    assert_eq!(samples[1].answer, "no series");
    let fx = engine.step(Event::Sampled(none()), T0 + Duration::from_secs(600));
    let Some(evidence) = fx.iter().find_map(|e| match e {
        Effect::Report(Report::Tripped(ev)) => Some(ev.clone()),
        _ => None,
    }) else {
        panic!("{fx:?}")
    };
    assert_eq!(
        evidence.threshold.to_string(),
        "metric errors: no series for 10m"
    );
    assert!(
        evidence
            .failed
            .iter()
            .any(|(object, why)| object == "metric errors" && why.starts_with("no series at ")),
        "{evidence:?}"
    );
}

/// A gate whose data comes back before the timeout lets the bake end.
#[test]
fn a_gate_whose_data_returns_lets_the_bake_end() {
    let mut engine = canary_settled(metric(30));
    engine.step(Event::Observed(vec![(id("m-000"), Health::Healthy)]), T0);
    engine.step(
        Event::Sampled(vec![("errors".to_owned(), Sample::NoSeries)]),
        T0,
    );
    engine.step(Event::Tick, T0 + Duration::from_secs(30));
    let fx = engine.step(
        Event::Sampled(vec![("errors".to_owned(), Sample::Values(vec![0.1, 0.2]))]),
        T0 + Duration::from_secs(31),
    );
    assert!(
        fx.iter()
            .any(|e| matches!(e, Effect::Report(Report::StageCompleted { .. }))),
        "{fx:?}"
    );
    assert_eq!(engine.rollout().unwrap().waiting(), None);
}

#[test]
fn a_trip_restores_everything_started_then_reverts_then_is_restored() {
    let p = policy(&[(Amount::Percent(100.0), 0, false)], 2);
    let mut world = World::new(
        4,
        1,
        p,
        &[(10, false), (20, true), (30, false), (40, false)],
    );
    let mut engine = Engine::default();
    let effects = world.start(&mut engine);
    let engine = world.run(engine, effects, false);
    assert_eq!(phase(&engine), Phase::Restored);
    let restored: Vec<&str> = world
        .writes
        .iter()
        .filter(|w| w.what == "restore")
        .map(|w| w.name.as_str())
        .collect();
    // Newest first; both started ones, and nothing that was never written.
    assert_eq!(restored, ["m-002", "m-001", "m-000"]);
    assert_eq!(world.reverts, 1);
    assert!(engine.quarantined("c2"));
    // Latched until a human resets it.
    let mut engine = engine;
    assert!(engine.breaker_open());
    let fx = engine.step(Event::ResetBreaker, world.now);
    assert!(fx.contains(&Effect::Persist));
    assert!(!engine.breaker_open());
    assert!(engine.quarantined("c2"), "quarantine outlives the reset");
}

#[test]
fn a_trip_leaves_what_the_rollout_created_and_reinstalls_wait_for_their_budget() {
    let mut p = policy(&[(Amount::Percent(100.0), 0, false)], 3);
    p.budgets = vec![BudgetLimit {
        class: BudgetClass::MachineReinstall,
        limit: 1,
        window: Duration::from_secs(3200),
    }];
    let mut world = World::new(3, 1, p, &[]);
    let mut engine = Engine::default();
    let effects = world.start(&mut engine);
    world.settle(&mut engine, effects);
    let fx = engine.step(
        Event::Observed(vec![(id("m-002"), Health::Failed("no".into()))]),
        T0,
    );
    assert!(fx.contains(&Effect::PrepareRestore));
    // m-000 was created by the rollout; m-001 and m-002 were reinstalled.
    let mut plan = RestorePlan::default();
    plan.classes[Universe::Machines.index()] = vec![
        RestoreClass::LeaveCreated,
        RestoreClass::UndoReinstall,
        RestoreClass::UndoReinstall,
    ];
    let fx = engine.step(Event::RestorePlan(plan), T0);
    assert!(
        fx.contains(&Effect::Report(Report::LeftCreated(1))),
        "{fx:?}"
    );
    let restores: Vec<&Effect> = fx
        .iter()
        .filter(|e| matches!(e, Effect::Restore(_)))
        .collect();
    assert_eq!(restores, [&Effect::Restore(vec![id("m-002")])], "{fx:?}");
    let fx = engine.step(Event::Restored(vec![(id("m-002"), Ok(()))]), T0);
    // The revert does not wait for the budget; the other reinstall's undo does.
    assert!(
        fx.iter().any(|e| matches!(e, Effect::Revert { .. })),
        "{fx:?}"
    );
    assert!(
        fx.iter().any(
            |e| matches!(e, Effect::Report(Report::Waiting(w)) if w.to_string().contains("restores wait"))
        )
    );
    let room = T0 + Duration::from_secs(200 + 3200);
    assert!(fx.contains(&Effect::WakeAt(room)), "{fx:?}");
    assert!(matches!(phase(&engine), Phase::Tripped { .. }));
    let fx = engine.step(Event::Tick, room);
    assert!(fx.contains(&Effect::Restore(vec![id("m-001")])), "{fx:?}");
    // The created one is never asked for.
    let fx = engine.step(Event::Restored(vec![(id("m-001"), Ok(()))]), room);
    assert!(
        !fx.iter()
            .any(|e| matches!(e, Effect::Restore(ids) if ids.contains(&id("m-000")))),
        "{fx:?}"
    );
}

#[test]
fn a_restart_reissues_the_writes_in_flight_without_spending_again() {
    let mut p = policy(&[(Amount::Percent(100.0), 0, false)], 2);
    p.budgets = vec![BudgetLimit {
        class: BudgetClass::MachineUpdate,
        limit: 10,
        window: Duration::from_secs(3600),
    }];
    let mut world = World::new(4, 1, p.clone(), &[]);
    let mut engine = Engine::default();
    let effects = world.start(&mut engine);
    // Killed right after the save that admitted the first two, before their writes.
    let persisted = engine.to_json();
    drop(effects);
    let mut resumed = Engine::from_json(persisted).unwrap();
    assert!(resumed.busy());
    let fx = resumed.resume(world.plan(), p.clone(), T0);
    assert_eq!(applies(&fx), ["m-000", "m-001"]);
    let spent = resumed.budgets().usage(&p, T0);
    assert_eq!(
        spent,
        vec![(BudgetClass::MachineUpdate, 2, 10)],
        "spent once"
    );
    // The writes land; the gate waits for the generation they produced.
    let written = resumed.step(
        Event::Written(vec![(id("m-000"), Ok(2)), (id("m-001"), Ok(2))]),
        T0,
    );
    assert!(applies(&written).is_empty());
    assert_eq!(
        resumed.interest(&id("m-000")),
        Some(Interest::Gate(Some(2)))
    );
    let _ = &mut world;
}

#[test]
fn a_restart_during_a_bake_looks_at_the_wave_once() {
    let p = policy(
        &[
            (Amount::Count(2), 600, false),
            (Amount::Percent(100.0), 0, false),
        ],
        2,
    );
    let mut world = World::new(4, 1, p.clone(), &[]);
    let mut engine = Engine::default();
    let effects = world.start(&mut engine);
    world.settle(&mut engine, effects);
    engine.step(
        Event::Observed(vec![
            (id("m-000"), Health::Healthy),
            (id("m-001"), Health::Healthy),
        ]),
        T0,
    );
    assert!(matches!(phase(&engine), Phase::Baking { .. }));
    let mut resumed = Engine::from_json(engine.to_json()).unwrap();
    let fx = resumed.resume(world.plan(), p, T0 + Duration::from_secs(60));
    let observe: Vec<&Effect> = fx
        .iter()
        .filter(|e| matches!(e, Effect::Observe(_)))
        .collect();
    assert_eq!(observe.len(), 1, "{fx:?}");
    resumed.step(
        Event::Observed(vec![
            (id("m-000"), Health::Healthy),
            (id("m-001"), Health::Healthy),
        ]),
        T0 + Duration::from_secs(60),
    );
    resumed.step(
        Event::Observed(vec![(id("m-001"), Health::Failed("disk".into()))]),
        T0 + Duration::from_secs(120),
    );
    assert!(matches!(phase(&resumed), Phase::Tripped { .. }));
}

#[test]
fn quarantine_keeps_the_newest_hundred() {
    let mut engine = Engine::default();
    for i in 0..150 {
        engine.step(
            Event::Reverted {
                culprits: vec![format!("c{i}")],
                reverts: vec![],
                outcome: "x".into(),
            },
            T0,
        );
    }
    assert_eq!(engine.quarantine().len(), 100);
    assert!(engine.quarantined("c149") && !engine.quarantined("c49"));
}

#[test]
fn a_resume_on_a_partial_plan_starts_only_what_it_knows_then_the_rest() {
    use endstate_rollout::plan::{Inputs, Plan, Seq};
    let p = policy(&[(Amount::Percent(100.0), 0, false)], 2);
    let mut world = World::new(8, 1, p.clone(), &[]);
    let mut engine = Engine::default();
    let effects = world.start(&mut engine);
    world.settle(&mut engine, effects);
    // Killed with m-000 and m-001 in flight; the caches of the restarted controller have not
    // listed the fleet yet: the next two positions are read from the server, nothing else.
    let mut resumed = Engine::from_json(engine.to_json()).unwrap();
    let cursor = resumed.rollout().unwrap().cursor();
    let order = world.plan();
    let window: Vec<_> = (cursor..cursor + 2)
        .map(|p| world.live[&order.id(Seq::Machines, p).name].clone())
        .collect();
    let partial = Plan::partial(
        Inputs {
            desired: &world.desired,
            base: None,
            live: &window,
            fleet: &crate::world::fleet_id(),
            policy: &p,
            orphans: Some(&[]),
        },
        Seq::Machines,
        cursor + 2,
    );
    assert!(partial.is_partial());
    let fx = resumed.resume(partial, p.clone(), T0);
    // The lost writes are issued again; what the partial plan does not know is not started.
    assert_eq!(applies(&fx), ["m-000", "m-001"]);
    resumed.step(
        Event::Written(vec![(id("m-000"), Ok(2)), (id("m-001"), Ok(2))]),
        T0,
    );
    let fx = resumed.step(
        Event::Observed(vec![
            (id("m-000"), Health::Healthy),
            (id("m-001"), Health::Healthy),
        ]),
        T0,
    );
    assert_eq!(applies(&fx), ["m-002", "m-003"], "the known window");
    resumed.step(
        Event::Written(vec![(id("m-002"), Ok(2)), (id("m-003"), Ok(2))]),
        T0,
    );
    let fx = resumed.step(
        Event::Observed(vec![
            (id("m-002"), Health::Healthy),
            (id("m-003"), Health::Healthy),
        ]),
        T0,
    );
    assert!(applies(&fx).is_empty(), "nothing past the window: {fx:?}");
    assert_eq!(phase(&resumed), Phase::Running, "the stage is not over");
    assert!(resumed.partial());
    let fx = resumed.replan(world.plan(), T0);
    assert!(!resumed.partial());
    assert_eq!(applies(&fx), ["m-004", "m-005"]);
}

/// Answers that leave a gate out (its query was lost) are no data for it, not a pass.
#[test]
fn answers_without_a_gate_hold_the_bake() {
    let mut engine = canary_settled(metric(30));
    engine.step(Event::Observed(vec![(id("m-000"), Health::Healthy)]), T0);
    engine.step(Event::Sampled(Vec::new()), T0);
    let fx = engine.step(Event::Tick, T0 + Duration::from_secs(31));
    assert!(matches!(phase(&engine), Phase::Baking { .. }), "{fx:?}");
    assert_eq!(
        engine
            .rollout()
            .unwrap()
            .waiting()
            .map(ToString::to_string)
            .as_deref(),
        Some("metric errors: no answer for 0ms")
    );
}
