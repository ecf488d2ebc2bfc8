//! A modeled fleet that plays the controller's part for the engine: it performs the effects
//! (writes bump generations; each written Machine's operator reports, after its delay, healthy
//! or failed for that generation), tells the engine what changed, and moves virtual time to the
//! next thing that happens. It can kill the "controller" after any effect and resume a new
//! engine from the state last persisted, as a restarted process would.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use endstate_api::{Machine, MachinePhase, MachineStatus};
use endstate_core::policy::Policy;
use endstate_core::{FleetObject, Kind, ObjectRef};
use endstate_rollout::engine::{Effect, Interest, RestoreClass, RestorePlan, Start};
use endstate_rollout::gates::Sample;
use endstate_rollout::health::{self, Health};
use endstate_rollout::plan::{Inputs, Plan, Universe};
use endstate_rollout::{Engine, Event, Time};

pub const NS: &str = "fleet";
pub const FLEET: &str = "f";

/// The Fleet the objects belong to.
pub fn fleet_id() -> endstate_core::ownership::FleetId {
    endstate_core::ownership::FleetId::new(NS, FLEET)
}
pub const T0: Time = Time(1_767_225_600_000);

/// A Machine named `m-NNN` in one of `idcs` idcs, running `kubelet`.
pub fn machine(i: usize, idcs: usize, kubelet: &str) -> FleetObject {
    Machine::test(&format!("m-{i:03}"))
        .in_cluster("c")
        .ip(format!("10.0.{}.{}", i / 250, i % 250))
        .hostname(format!("m-{i}"))
        .idc(format!("idc-{}", i % idcs.max(1)))
        .package("kubelet", kubelet)
        .namespace(NS)
        .label(endstate_api::labels::OWNER_LABEL, FLEET)
        .build()
        .into()
}

/// One write the fleet saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Write {
    pub at: Time,
    pub name: String,
    pub what: &'static str,
}

/// The fleet and its operators.
pub struct World {
    pub now: Time,
    pub policy: Policy,
    pub desired: Vec<FleetObject>,
    /// What a trip restores to.
    pub before: Vec<FleetObject>,
    index: HashMap<String, usize>,
    pub live: BTreeMap<String, FleetObject>,
    /// Per Machine: seconds its operator takes, and whether it fails.
    pub behaviour: HashMap<String, (u64, bool)>,
    /// Status reports due: (time, sequence) → name.
    due: BTreeMap<(Time, u64), String>,
    sequence: u64,
    changed: Vec<ObjectRef>,
    pub writes: Vec<Write>,
    pub reverts: usize,
    reverted: Vec<String>,
    pub persisted: Option<serde_json::Value>,
    pub persists: usize,
    pub effects: usize,
    pub steps: usize,
    /// Kill the controller after this many effects were performed.
    pub crash_after: Option<usize>,
    pub crashed: bool,
    pub approvals: usize,
    /// Moments more changes were in flight than the wave allows.
    pub over: Vec<String>,
    /// The largest persisted state, in bytes of JSON.
    pub largest: usize,
    wake: Option<Time>,
}

impl World {
    /// `machines` at kubelet-1, desired at kubelet-2; `behaviour` per machine.
    pub fn new(machines: usize, idcs: usize, policy: Policy, behaviour: &[(u64, bool)]) -> Self {
        let before: Vec<FleetObject> = (0..machines)
            .map(|i| machine(i, idcs, "kubelet-1"))
            .collect();
        let desired: Vec<FleetObject> = (0..machines)
            .map(|i| machine(i, idcs, "kubelet-2"))
            .collect();
        let live = before
            .iter()
            .map(|o| {
                let mut o = o.clone();
                o.meta_mut().generation = Some(1);
                set_status(&mut o, 1, MachinePhase::Running);
                (o.name().to_owned(), o)
            })
            .collect();
        World {
            now: T0,
            policy,
            behaviour: desired
                .iter()
                .zip(
                    behaviour
                        .iter()
                        .copied()
                        .chain(std::iter::repeat((60, false))),
                )
                .map(|(o, b)| (o.name().to_owned(), b))
                .collect(),
            index: desired
                .iter()
                .enumerate()
                .map(|(i, o)| (o.name().to_owned(), i))
                .collect(),
            desired,
            before,
            live,
            due: BTreeMap::new(),
            sequence: 0,
            changed: Vec::new(),
            writes: Vec::new(),
            reverts: 0,
            reverted: Vec::new(),
            persisted: None,
            persists: 0,
            effects: 0,
            steps: 0,
            crash_after: None,
            crashed: false,
            approvals: 0,
            over: Vec::new(),
            largest: 0,
            wake: None,
        }
    }

    pub fn live_objects(&self) -> Vec<FleetObject> {
        self.live.values().cloned().collect()
    }

    pub fn plan(&self) -> Plan {
        let live = self.live_objects();
        Plan::new(Inputs {
            desired: &self.desired,
            base: None,
            live: &live,
            fleet: &fleet_id(),
            policy: &self.policy,
            orphans: None,
        })
    }

    /// Starts the rollout of `c2` (last good `c1`).
    pub fn start(&mut self, engine: &mut Engine) -> Vec<Effect> {
        let plan = self.plan();
        engine.start(
            Start {
                commit: "c2".into(),
                last_good: Some("c1".into()),
                base: None,
                plan,
                policy: self.policy.clone(),
            },
            self.now,
        )
    }

    fn desired(&self, id: &ObjectRef) -> Option<&FleetObject> {
        self.index.get(&id.name).map(|&i| &self.desired[i])
    }

    fn before(&self, id: &ObjectRef) -> Option<&FleetObject> {
        self.index.get(&id.name).map(|&i| &self.before[i])
    }

    fn write(&mut self, name: &str, spec_from: &FleetObject, what: &'static str) -> i64 {
        let behaviour = self.behaviour.get(name).copied().unwrap_or((60, false));
        let live = self.live.get_mut(name).expect("a machine");
        live.copy_spec_from(spec_from);
        let generation = live.meta().generation.unwrap_or(0) + 1;
        live.meta_mut().generation = Some(generation);
        self.writes.push(Write {
            at: self.now,
            name: name.to_owned(),
            what,
        });
        self.changed.push(ObjectRef::new(Kind::Machine, NS, name));
        if what == "apply" {
            self.sequence += 1;
            self.due.insert(
                (self.now + Duration::from_secs(behaviour.0), self.sequence),
                name.to_owned(),
            );
        } else {
            // A restore converges at once: its operator reports the old spec healthy.
            let live = self.live.get_mut(name).expect("a machine");
            set_status(live, generation, MachinePhase::Running);
        }
        generation
    }

    /// Performs one effect; returns the event it answers with.
    fn perform(&mut self, engine: &Engine, effect: Effect) -> Option<Event> {
        self.effects += 1;
        match effect {
            Effect::Persist => {
                let json = engine.to_json();
                self.largest = self.largest.max(json.to_string().len());
                self.persisted = Some(as_stored(json));
                self.persists += 1;
                None
            }
            Effect::Apply(ids) => {
                let mut results = Vec::new();
                for id in ids {
                    let want = self.desired(&id).cloned().expect("desired");
                    let live = &self.live[&id.name];
                    let generation = if endstate_rollout::diff::same(&want, live) {
                        live.meta().generation.unwrap_or(0)
                    } else {
                        self.write(&id.name, &want, "apply")
                    };
                    results.push((id, Ok(generation)));
                }
                Some(Event::Written(results))
            }
            Effect::Delete(ids) => {
                // Gone at once: the next look sees it so.
                self.changed.extend(ids.iter().cloned());
                Some(Event::Written(
                    ids.into_iter().map(|id| (id, Ok(0))).collect(),
                ))
            }
            Effect::Observe(ids) => Some(Event::Observed(
                ids.into_iter()
                    .map(|id| {
                        if engine.interest(&id) == Some(Interest::Gone) {
                            return (id, Health::Healthy);
                        }
                        let live = &self.live[&id.name];
                        let g = live.meta().generation.unwrap_or(0);
                        let h = health::assess(Some(live), g);
                        (id, h)
                    })
                    .collect(),
            )),
            Effect::PrepareRestore => {
                let ranges = engine.restore_ranges();
                let plan = engine.rollout().and_then(|r| r.plan()).expect("a plan");
                let mut out = RestorePlan::default();
                let order = plan.order(Universe::Machines);
                out.classes[Universe::Machines.index()] = (0..ranges[Universe::Machines.index()])
                    .map(|p| {
                        let id = order.id(p);
                        RestoreClass::of(self.desired(id), self.before(id))
                    })
                    .collect();
                Some(Event::RestorePlan(out))
            }
            Effect::Restore(ids) => {
                let mut results = Vec::new();
                for id in ids {
                    let before = self.before(&id).cloned().expect("before");
                    if !endstate_rollout::diff::same(&before, &self.live[&id.name]) {
                        self.write(&id.name, &before, "restore");
                    }
                    results.push((id, Ok(())));
                }
                Some(Event::Restored(results))
            }
            Effect::Revert { commit, .. } => {
                // The revert writer is idempotent: a commit already reverted is not again.
                if !self.reverted.contains(&commit) {
                    self.reverted.push(commit.clone());
                    self.reverts += 1;
                }
                Some(Event::Reverted {
                    culprits: vec![commit],
                    reverts: vec!["r".into()],
                    outcome: "pushed".into(),
                })
            }
            Effect::Sample(gates) => Some(Event::Sampled(
                gates
                    .into_iter()
                    .map(|g| (g.name, Sample::Values(vec![0.0])))
                    .collect(),
            )),
            Effect::WakeAt(t) => {
                self.wake = Some(self.wake.map_or(t, |w| w.min(t)));
                None
            }
            Effect::Report(_) => None,
        }
    }

    /// Performs `effects` and everything they lead to; stops (returning `false`) when the
    /// controller is killed.
    pub fn settle(&mut self, engine: &mut Engine, effects: Vec<Effect>) -> bool {
        let mut queue: std::collections::VecDeque<Effect> = effects.into();
        while let Some(effect) = queue.pop_front() {
            let event = self.perform(engine, effect);
            if self.crash_after.is_some_and(|n| self.effects >= n) && !self.crashed {
                self.crashed = true;
                return false;
            }
            if let Some(event) = event {
                self.steps += 1;
                queue.extend(engine.step(event, self.now));
                self.check(engine);
            }
        }
        true
    }

    fn check(&mut self, engine: &Engine) {
        if let Some(r) = engine.rollout()
            && let Some(stage) = r.stage()
            && r.inflight() > stage.max_unavailable as usize
        {
            self.over
                .push(format!("{} in flight in {}", r.inflight(), stage.name));
        }
    }

    /// A new engine from the state last persisted, resumed on a plan computed now.
    pub fn restart(&mut self) -> (Engine, Vec<Effect>) {
        let mut engine = match &self.persisted {
            Some(json) => Engine::from_json(json.clone()).expect("the persisted state loads"),
            None => Engine::default(),
        };
        if engine.resumable().is_none() {
            return (engine, Vec::new());
        }
        let plan = self.plan();
        let effects = engine.resume(plan, self.policy.clone(), self.now);
        // As the controller's first turn does: look at everything in flight.
        let ids: Vec<ObjectRef> = engine
            .rollout()
            .map(|r| r.inflight_ids().map(|(id, _)| id.clone()).collect())
            .unwrap_or_default();
        self.changed.extend(ids);
        (engine, effects)
    }

    /// Tells the engine about the objects that changed, as a watch would.
    pub fn observe(&mut self, engine: &mut Engine) -> Vec<Effect> {
        let mut ids = std::mem::take(&mut self.changed);
        ids.sort();
        ids.dedup();
        let healths: Vec<(ObjectRef, Health)> = ids
            .into_iter()
            .filter_map(|id| {
                let live = &self.live[&id.name];
                let generation = match engine.interest(&id)? {
                    Interest::Gone => return Some((id, Health::Healthy)),
                    Interest::Gate(g) => g?,
                    Interest::Bake => live.meta().generation.unwrap_or(0),
                };
                Some((id, health::assess(Some(live), generation)))
            })
            .collect();
        if healths.is_empty() {
            return Vec::new();
        }
        self.steps += 1;
        let effects = engine.step(Event::Observed(healths), self.now);
        self.check(engine);
        effects
    }

    /// Runs the rollout to its end; returns the engine that finished it.
    pub fn run(&mut self, mut engine: Engine, effects: Vec<Effect>, approve: bool) -> Engine {
        let mut pending = effects;
        loop {
            assert!(self.steps < 1_000_000, "the rollout does not end");
            if !self.settle(&mut engine, std::mem::take(&mut pending)) {
                // The controller's timers die with it; the resumed engine asks again.
                self.wake = None;
                let (resumed, effects) = self.restart();
                engine = resumed;
                pending = effects;
                continue;
            }
            let observed = self.observe(&mut engine);
            if !observed.is_empty() {
                pending = observed;
                continue;
            }
            if approve
                && engine.rollout().is_some_and(|r| {
                    *r.phase() == endstate_rollout::engine::Phase::AwaitingApproval
                })
            {
                self.approvals += 1;
                self.steps += 1;
                pending = engine.step(Event::Approve, self.now);
                continue;
            }
            // Move to the next thing that happens: a status report or the engine's wake-up.
            let next_report = self.due.keys().next().map(|(t, _)| *t);
            let next = match (next_report, self.wake.filter(|w| *w > self.now)) {
                (Some(a), Some(b)) => a.min(b),
                (Some(a), None) => a,
                (None, Some(b)) => b,
                (None, None) => break,
            };
            self.now = self.now.max(next);
            while let Some(entry) = self.due.first_entry() {
                if entry.key().0 > self.now {
                    break;
                }
                let name = entry.remove();
                let (_, fails) = self.behaviour[&name];
                let live = self.live.get_mut(&name).expect("a machine");
                let generation = live.meta().generation.unwrap_or(0);
                let phase = if fails {
                    MachinePhase::Failed
                } else {
                    MachinePhase::Running
                };
                set_status(live, generation, phase);
                self.changed.push(ObjectRef::new(Kind::Machine, NS, &name));
            }
            if self.wake.is_some_and(|w| w <= self.now) {
                self.wake = None;
            }
            self.steps += 1;
            pending = engine.step(Event::Tick, self.now);
        }
        engine
    }
}

fn set_status(object: &mut FleetObject, generation: i64, phase: MachinePhase) {
    let FleetObject::Machine(m) = object else {
        return;
    };
    let m = Arc::make_mut(m);
    let message = (phase == MachinePhase::Failed).then(|| "install failed".to_owned());
    m.status = Some(MachineStatus {
        observed_generation: Some(generation),
        phase: Some(phase),
        versions: Some(m.spec.packages.clone()),
        message,
        ..MachineStatus::default()
    });
}

/// A state as the API server gives it back from a `Fleet`'s status: it keeps no `null`, not
/// even inside an array (`[null, [1, 7]]` comes back as `[[1, 7]]`).
fn as_stored(value: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::Array(items) => Value::Array(
            items
                .into_iter()
                .filter(|v| !v.is_null())
                .map(as_stored)
                .collect(),
        ),
        Value::Object(map) => Value::Object(
            map.into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k, as_stored(v)))
                .collect(),
        ),
        other => other,
    }
}
