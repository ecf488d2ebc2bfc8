//! Test objects for the engine's unit tests: a fleet of Machines moving from `kubelet-1` to
//! `kubelet-2` in waves, and an engine started on it.

use std::time::Duration;

use endstate_api::Machine;
use endstate_core::ownership::FleetId;
use endstate_core::{FleetObject, Kind, ObjectRef};

use super::protocol::{Effect, Start};
use super::state::Engine;
use crate::plan::{Inputs, Plan};
use crate::time::Time;
use endstate_core::policy::{Amount, Policy, WaveSpec};

/// Thursday 2026-01-01T00:00:00Z.
pub const T0: Time = Time(1_767_225_600_000);
const NS: &str = "fleet";

/// Machine `m-NNN` running `kubelet`.
pub fn machine(i: usize, kubelet: &str) -> FleetObject {
    Machine::test(&format!("m-{i:03}"))
        .in_cluster("c")
        .ip(format!("10.0.0.{i}"))
        .hostname(format!("m-{i}"))
        .idc("idc-0")
        .package("kubelet", kubelet)
        .namespace(NS)
        .build()
        .into()
}

/// The identity of Machine `m-NNN`.
pub fn id(i: usize) -> ObjectRef {
    ObjectRef::new(Kind::Machine, NS, &format!("m-{i:03}"))
}

/// One wave of Machines per `(size %, bake s, pause)`, `max_unavailable` at once, a gate
/// timeout of 10 minutes, a breaker that trips at 1000 failures in a wave.
pub fn policy(waves: &[(f64, u64, bool)], max_unavailable: u64) -> Policy {
    let mut p = Policy::default();
    p.machines.waves = waves
        .iter()
        .enumerate()
        .map(|(i, &(size, bake, pause))| WaveSpec {
            name: Some(format!("w{i}")),
            size: Amount::Percent(size),
            bake: Duration::from_secs(bake),
            pause,
        })
        .collect();
    p.machines.max_unavailable = Amount::Count(max_unavailable);
    p.gate_timeout = Duration::from_secs(600);
    // A failure trips only the tests that ask for it.
    p.breaker.per_wave = Some(1000);
    p
}

/// The plan of `machines` Machines from `kubelet-1` to `kubelet-2`.
pub fn plan(machines: usize, policy: &Policy) -> Plan {
    let live: Vec<FleetObject> = (0..machines).map(|i| machine(i, "kubelet-1")).collect();
    let desired: Vec<FleetObject> = (0..machines).map(|i| machine(i, "kubelet-2")).collect();
    Plan::new(Inputs {
        desired: &desired,
        base: None,
        live: &live,
        fleet: &FleetId::new(NS, "f"),
        policy,
        orphans: None,
    })
}

/// An engine that started rolling out `c2` (last good `c1`) at [`T0`], and what it asked for.
pub fn started(machines: usize, policy: Policy) -> (Engine, Vec<Effect>) {
    let mut engine = Engine::default();
    let fx = engine.start(
        Start {
            commit: "c2".into(),
            last_good: Some("c1".into()),
            base: None,
            plan: plan(machines, &policy),
            policy,
        },
        T0,
    );
    (engine, fx)
}

/// The objects `fx` applies, by name.
pub fn applied(fx: &[Effect]) -> Vec<String> {
    fx.iter()
        .filter_map(|e| match e {
            Effect::Apply(ids) => Some(ids.iter().map(|id| id.name.clone())),
            _ => None,
        })
        .flatten()
        .collect()
}
