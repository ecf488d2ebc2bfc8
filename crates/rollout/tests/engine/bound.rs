//! The persisted state is bounded by the policy, not by the fleet: adversarial states built
//! directly (scattered in flight, the most failures kept, every budget bucket full, the most
//! quarantined commits and orphans), and a real rollout whose persisted state is measured at
//! every save.

use std::time::Duration;

use endstate_rollout::Engine;
use endstate_rollout::plan::MAX_ORPHANS;
use endstate_rollout::policy::{Amount, Policy, WaveSpec};
use endstate_rollout::positions::Positions;
use endstate_rollout::rollout::{
    FLIGHT_BUCKETS, KEPT_FAILED_POSITIONS, KEPT_FAILURES, KEPT_QUARANTINE, KEPT_REVERTS,
    KEPT_UNRESTORED, MAX_SPAN, QUARANTINE_REASON_CHARS,
};
use proptest::prelude::*;
use serde_json::json;

use crate::world::{T0, World};

/// What the engine's state may take of the Fleet object's 256 KiB; the readable projection,
/// metadata and managedFields share the rest (checked in the controller's tests).
pub const STATE_BOUND: usize = 112 * 1024;

fn text(n: usize, c: char) -> String {
    std::iter::repeat_n(c, n).collect()
}

/// A state at the limits: `n` positions in the current stage, `inflight` of them (sorted)
/// in flight over 17 start buckets. Changes start in the order of positions, so a later
/// bucket holds later positions.
fn adversarial(n: u32, inflight: &[u32], failed: &[u32]) -> serde_json::Value {
    let commit = text(40, 'c');
    let per_bucket = inflight.len().div_ceil(FLIGHT_BUCKETS as usize + 1).max(1);
    let buckets: Vec<serde_json::Value> = inflight
        .chunks(per_bucket)
        .enumerate()
        .map(|(b, group)| {
            let group: Positions = group.iter().copied().collect();
            json!([T0.millis() + b as i64 * 60_000, group])
        })
        .collect();
    let note = json!({"object": format!("Machine/{}/{}", text(63, 'n'), text(253, 'm')), "reason": text(256, 'r')});
    let failed_positions: Positions = failed.iter().copied().collect();
    let buckets_full: Vec<serde_json::Value> = (0..34)
        .map(|i| {
            json!([
                T0.millis() + i * 225_000,
                T0.millis() + (i + 1) * 225_000,
                u64::MAX / 64
            ])
        })
        .collect();
    let mut spent = serde_json::Map::new();
    for class in [
        "machine-update",
        "machine-delete",
        "machine-reinstall",
        "cluster-update",
    ] {
        spent.insert(class.into(), buckets_full.clone().into());
    }
    let stages: Vec<serde_json::Value> = (0..12)
        .map(|i| {
            json!({"seq": "Machines", "name": format!("machines/{}", text(60, 'w')), "start": if i == 11 { 0 } else { n }, "end": n, "size": n, "maxUnavailable": n / 10, "bakeMs": 3_600_000, "pause": true})
        })
        .collect();
    json!({
        "version": 2,
        "rollout": {
            "commit": commit,
            "lastGood": commit,
            "base": commit,
            "orphans": (0..MAX_ORPHANS).map(|i| format!("Machine/{i:03}{}", text(250, 'o'))).collect::<Vec<_>>(),
            "stages": stages,
            "stage": 11,
            "cursor": n,
            "inflight": buckets,
            "failures": {
                "perStage": vec![u32::MAX; 12],
                "total": u32::MAX,
                "first": vec![note.clone(); KEPT_FAILURES],
                "positions": {"Machines": failed_positions},
                "fleet": 7
            },
            "phase": "Running",
            "supersededBy": commit,
            "startedAt": T0,
            "waiting": text(200, 'w'),
            "restore": {"lanes": [[1, n], [1, n], [2, n]], "issued": [0, 1, 0, n]},
            "unrestored": {"count": u32::MAX, "first": vec![note.clone(); KEPT_UNRESTORED]}
        },
        "budgets": {"spent": spent},
        "breaker": {
            "at": T0, "commit": commit,
            "evidence": {"stage": text(70, 's'), "threshold": text(200, 't'), "stageFailures": [1, 2], "totalFailures": [3, 4],
                         "failed": vec![(text(320, 'o'), text(256, 'r')); KEPT_FAILURES]},
            "reverts": vec![commit.clone(); KEPT_REVERTS], "revertOutcome": text(1024, 'x')
        },
        "quarantine": vec![json!({"commit": commit, "reason": text(QUARANTINE_REASON_CHARS, 'q'), "revert": commit}); KEPT_QUARANTINE]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(6))]

    #[test]
    fn the_worst_state_up_to_1m_objects_stays_under_the_bound(
        n in prop_oneof![Just(1_000u32), Just(100_000u32), Just(1_000_000u32)],
        seed in any::<u64>(),
    ) {
        // maxUnavailable 10%: that many positions in flight, scattered over the widest span
        // the engine admits (the worst for the encoding); 1000 failed positions, scattered
        // over the whole order.
        let mut x = seed | 1;
        let mut next = || { x ^= x << 13; x ^= x >> 7; x ^= x << 17; x };
        let span = n.min(MAX_SPAN);
        let offset = (next() % u64::from(n - span + 1)) as u32;
        let mut inflight: Vec<u32> = (0..n / 10).map(|_| offset + (next() % u64::from(span)) as u32).collect();
        inflight.sort_unstable();
        inflight.dedup();
        let failed: Vec<u32> = (0..KEPT_FAILED_POSITIONS).map(|_| (next() % u64::from(n)) as u32).collect();
        let state = adversarial(n, &inflight, &failed);
        let engine = match Engine::from_json(state) {
            Ok(engine) => engine,
            Err(err) => panic!("not a state the engine can hold: {err}"),
        };
        let size = engine.to_json().to_string().len();
        prop_assert!(size <= STATE_BOUND, "{size} bytes at {n} objects");
        prop_assert_eq!(engine.rollout().unwrap().inflight(), inflight.len());
    }
}

#[test]
fn a_rollout_of_20k_machines_never_persists_more_than_a_few_kilobytes() {
    let mut policy = Policy::default();
    policy.machines.spread_by = Some("idc".into());
    policy.machines.max_unavailable = Amount::Percent(10.0);
    policy.machines.waves = [
        Amount::Count(1),
        Amount::Percent(5.0),
        Amount::Percent(25.0),
        Amount::Percent(100.0),
    ]
    .into_iter()
    .enumerate()
    .map(|(i, size)| WaveSpec {
        name: format!("w{i}"),
        size,
        bake: Duration::ZERO,
        pause: false,
    })
    .collect();
    // Operators answer in 1 s to 2 h, scattered: settles happen in any order.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let behaviour: Vec<(u64, bool)> = (0..20_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (1 + x % 7200, false)
        })
        .collect();
    policy.gate_timeout = Duration::from_secs(3 * 3600);
    let mut world = World::new(20_000, 3, policy, &behaviour);
    let mut engine = Engine::default();
    let effects = world.start(&mut engine);
    let engine = world.run(engine, effects, false);
    assert_eq!(
        *engine.rollout().unwrap().phase(),
        endstate_rollout::rollout::Phase::Completed
    );
    assert!(world.persists > 10, "{} saves", world.persists);
    // 2000 in flight at once, settling in random order: the bitmap of a few hundred
    // scattered positions per start bucket is what remains.
    assert!(
        world.largest <= 24 * 1024,
        "the largest persisted state was {} bytes",
        world.largest
    );
}
