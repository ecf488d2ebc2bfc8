//! The persisted state is bounded by the policy, not by the fleet: adversarial states built
//! directly (scattered in flight, the most failures kept, every budget bucket full, the most
//! quarantined commits and orphans), and a real rollout whose persisted state is measured at
//! every save.

use std::time::Duration;

use endstate_core::policy::{Amount, Policy, WaveSpec};
use endstate_rollout::Engine;
use endstate_rollout::engine::{KEPT_FAILED_POSITIONS, MAX_SPAN};
use endstate_rollout::persist::{STATE_BOUND, worst_state};
use proptest::prelude::*;

use crate::world::World;

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
        let state = worst_state(n, &inflight, &failed);
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
        name: Some(format!("w{i}")),
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
        endstate_rollout::engine::Phase::Completed
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
