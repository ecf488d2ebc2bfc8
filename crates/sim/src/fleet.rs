//! The simulated fleet: the store, the operators that it drives, and the virtual clock.
//!
//! ```text
//!   apply / update ──▶ Store ──spec changed (generation g)──▶ operator ──▶ transitions
//!                        ▲                                                  │ scheduled at
//!                        └──── status writes ◀── advance_to(t) ◀── queue ◀──┘ t' > now
//! ```
//!
//! Time only moves when [`SimFleet::advance_to`] says so; every write happens at
//! [`SimFleet::now`]. A spec change cancels the pending transitions of the object's older
//! generation, as a real operator abandons work on a spec that moved on.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use endstate_api::{ClusterStatus, FleetStatus, MachineStatus};
use endstate_core::{FleetObject, ObjectRef};
use endstate_rollout::{LiveError, Time};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::faults::Faults;
use crate::operator::{self, Context, OperatorConfig, Transition};
use crate::store::{self, Counters, Store, WatchEvent, Written};

/// How to build a simulated fleet.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SimConfig {
    /// The namespace of every object; rendered objects without one land here.
    pub namespace: String,
    /// The seed of every delay, fault decision and uid.
    pub seed: u64,
    /// The virtual time the fleet starts at.
    pub start: Time,
    /// How long the operators take.
    pub operators: OperatorConfig,
    /// Injected faults.
    pub faults: Faults,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            namespace: "default".into(),
            seed: 0,
            // 2026-01-01T00:00:00Z: timestamps read like real ones.
            start: Time(1_767_225_600_000),
            operators: OperatorConfig::default(),
            faults: Faults::none(),
        }
    }
}

impl SimConfig {
    /// The default configuration with this namespace and seed.
    pub fn new(namespace: impl Into<String>, seed: u64) -> Self {
        SimConfig {
            namespace: namespace.into(),
            seed,
            ..SimConfig::default()
        }
    }

    /// With these faults.
    pub fn with_faults(mut self, faults: Faults) -> Self {
        self.faults = faults;
        self
    }

    /// With these operator delays.
    pub fn with_operators(mut self, operators: OperatorConfig) -> Self {
        self.operators = operators;
        self
    }

    /// Starting at this virtual time.
    pub fn starting_at(mut self, start: Time) -> Self {
        self.start = start;
        self
    }
}

/// A status write an operator scheduled.
#[derive(Clone, Debug)]
enum Pending {
    Machine(String, Transition<MachineStatus>),
    Cluster(String, Transition<ClusterStatus>),
}

/// The key of an object that operators work on: (is a cluster, name).
type Subject = (bool, String);

/// An in-process fleet with API-server semantics, simulated operators and virtual time.
#[derive(Debug)]
pub struct SimFleet {
    config: SimConfig,
    now: Time,
    store: Store,
    /// Scheduled status writes by (time, sequence): equal times run in scheduling order.
    queue: BTreeMap<(Time, u64), Pending>,
    /// The queue keys of each object's pending writes, to cancel them when its spec moves on.
    pending: HashMap<Subject, Vec<(Time, u64)>>,
    sequence: u64,
    fleet_status: Option<FleetStatus>,
    status_file: Option<PathBuf>,
}

impl SimFleet {
    /// An empty fleet at `config.start`.
    pub fn new(config: SimConfig) -> Self {
        SimFleet {
            now: config.start,
            store: Store::new(config.namespace.clone(), config.seed),
            config,
            queue: BTreeMap::new(),
            pending: HashMap::new(),
            sequence: 0,
            fleet_status: None,
            status_file: None,
        }
    }

    /// Keeps the `Fleet` status in `path` as JSON, loading it now when the file exists, so a
    /// restarted `endstate run --live sim` resumes its rollout cursor, budgets and breaker.
    pub fn with_status_file(mut self, path: impl Into<PathBuf>) -> Result<Self> {
        let path = path.into();
        match std::fs::read(&path) {
            Ok(bytes) => {
                let status = serde_json::from_slice(&bytes).map_err(|source| Error::Status {
                    path: path.clone(),
                    source,
                })?;
                self.fleet_status = Some(status);
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(Error::Io { path, source }),
        }
        self.status_file = Some(path);
        Ok(self)
    }

    /// The configuration.
    pub fn config(&self) -> &SimConfig {
        &self.config
    }

    /// The namespace of every object.
    pub fn namespace(&self) -> &str {
        &self.config.namespace
    }

    /// The virtual time now.
    pub fn now(&self) -> Time {
        self.now
    }

    /// Replaces the fault rules; they apply to spec changes from now on.
    pub fn set_faults(&mut self, faults: Faults) {
        self.config.faults = faults;
    }

    /// The object store, to read objects, counters and watch events.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// What the store has done.
    pub fn counters(&self) -> Counters {
        self.store.counters()
    }

    /// Starts counting from zero.
    pub fn reset_counters(&mut self) {
        self.store.reset_counters();
    }

    /// The object with this identity (an empty namespace means the fleet's).
    pub fn get(&self, id: &ObjectRef) -> Option<&FleetObject> {
        self.store.get(id)
    }

    /// Every object, kind by kind in rollout order, then by name.
    pub fn snapshot(&self) -> Vec<FleetObject> {
        self.store.iter().cloned().collect()
    }

    /// The changes after resource version `since`, oldest first; see [`Store::events_since`].
    pub fn events_since(&self, since: u64) -> Vec<WatchEvent> {
        self.store.events_since(since)
    }

    /// Server-side apply at `now`; a new generation of a Machine or Cluster is handed to its
    /// operator.
    pub fn apply(&mut self, object: &FleetObject) -> Result<Written, LiveError> {
        let written = self.store.apply(object, self.now)?;
        if written.spec_changed {
            self.reconcile(object.kind(), name_of(object));
        }
        Ok(written)
    }

    /// Creates an object; a conflict when the name is taken.
    pub fn create(&mut self, object: &FleetObject) -> Result<Written, LiveError> {
        let written = self.store.create(object, self.now)?;
        self.reconcile(object.kind(), name_of(object));
        Ok(written)
    }

    /// Replaces labels, annotations and spec; a conflict when `object` carries a stale
    /// `resourceVersion`.
    pub fn update(&mut self, object: &FleetObject) -> Result<Written, LiveError> {
        let written = self.store.update(object)?;
        if written.spec_changed {
            self.reconcile(object.kind(), name_of(object));
        }
        Ok(written)
    }

    /// Writes the status of a Machine or Cluster from outside the operators (a test playing
    /// an operator); a conflict when `object` carries a stale `resourceVersion`.
    pub fn update_status(&mut self, object: &FleetObject) -> Result<Written, LiveError> {
        self.store.update_status(object)
    }

    /// Deletes an object and drops its operator's pending work; `Ok(false)` when there was none.
    pub fn delete(&mut self, id: &ObjectRef) -> Result<bool, LiveError> {
        let deleted = self.store.delete(id)?;
        if deleted {
            self.cancel(&(id.kind == "Cluster", id.name.clone()));
        }
        Ok(deleted)
    }

    /// Stores `objects` as if they had been rolled out before: created, with Machines and
    /// Clusters reporting `Running` at their generation. Objects that exist are applied over
    /// and converged too. Nothing is left scheduled for them.
    pub fn seed_converged(
        &mut self,
        objects: impl IntoIterator<Item = FleetObject>,
    ) -> Result<(), LiveError> {
        for object in objects {
            self.store.apply(&object, self.now)?;
            let name = name_of(&object).to_owned();
            match object.kind() {
                "Machine" => {
                    self.cancel(&(false, name.clone()));
                    if let Some(FleetObject::Machine(live)) =
                        self.store.get_by_name("Machine", &name)
                    {
                        let status = operator::converged_machine_status(live, self.now);
                        self.store.set_machine_status(&name, status)?;
                    }
                }
                "Cluster" => {
                    self.cancel(&(true, name.clone()));
                    if let Some(FleetObject::Cluster(live)) =
                        self.store.get_by_name("Cluster", &name)
                    {
                        let status = operator::converged_cluster_status(live, self.now);
                        self.store.set_cluster_status(&name, status)?;
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// When the next scheduled operator write happens; `None` when nothing is pending.
    pub fn next_event_at(&self) -> Option<Time> {
        self.queue.keys().next().map(|(at, _)| *at)
    }

    /// How many operator writes are scheduled.
    pub fn pending_events(&self) -> usize {
        self.queue.len()
    }

    /// Moves the clock to `t`, running every scheduled write at or before `t` in time order,
    /// each at its own time. Returns how many ran. The clock never moves back: an earlier `t`
    /// runs nothing.
    pub fn advance_to(&mut self, t: Time) -> usize {
        let mut ran = 0;
        while let Some(entry) = self.queue.first_entry() {
            let (at, sequence) = *entry.key();
            if at > t {
                break;
            }
            let pending = entry.remove();
            self.now = self.now.max(at);
            self.run(pending, (at, sequence));
            ran += 1;
        }
        self.now = self.now.max(t);
        ran
    }

    /// Moves the clock forward by `d`; see [`SimFleet::advance_to`].
    pub fn advance_by(&mut self, d: Duration) -> usize {
        self.advance_to(self.now + d)
    }

    /// Runs every scheduled write, moving the clock to the last one. Returns how many ran.
    pub fn run_until_idle(&mut self) -> usize {
        let mut ran = 0;
        while let Some(at) = self.next_event_at() {
            ran += self.advance_to(at);
        }
        ran
    }

    /// The persisted `Fleet` status.
    pub fn fleet_status(&self) -> Option<&FleetStatus> {
        self.fleet_status.as_ref()
    }

    /// Persists the `Fleet` status (in memory, and in the status file when there is one).
    pub fn save_fleet_status(&mut self, status: &FleetStatus) -> Result<()> {
        if let Some(path) = &self.status_file {
            write_atomically(
                path,
                &serde_json::to_vec_pretty(status).map_err(|source| Error::Status {
                    path: path.clone(),
                    source,
                })?,
            )?;
        }
        self.fleet_status = Some(status.clone());
        Ok(())
    }

    /// Hands the current generation of a Machine or Cluster to its operator, replacing the work
    /// scheduled for an older generation.
    fn reconcile(&mut self, kind: &str, name: &str) {
        let cx = Context {
            seed: self.config.seed,
            config: &self.config.operators,
            faults: &self.config.faults,
        };
        let store = &self.store;
        let pending: Vec<Pending> = match store.get_by_name(kind, name) {
            Some(FleetObject::Machine(machine)) => {
                operator::machine_transitions(machine, self.now, cx, |p| {
                    store.get_by_name("MachinePackageVersion", p).is_some()
                })
                .into_iter()
                .map(|t| Pending::Machine(name.to_owned(), t))
                .collect()
            }
            Some(FleetObject::Cluster(cluster)) => {
                operator::cluster_transitions(cluster, self.now, cx, |p| {
                    store.get_by_name("ClusterPackageVersion", p).is_some()
                })
                .into_iter()
                .map(|t| Pending::Cluster(name.to_owned(), t))
                .collect()
            }
            _ => return,
        };
        let subject = (kind == "Cluster", name.to_owned());
        self.cancel(&subject);
        let keys = self.pending.entry(subject).or_default();
        for p in pending {
            let at = match &p {
                Pending::Machine(_, t) => t.at,
                Pending::Cluster(_, t) => t.at,
            };
            self.sequence += 1;
            keys.push((at, self.sequence));
            self.queue.insert((at, self.sequence), p);
        }
    }

    fn cancel(&mut self, subject: &Subject) {
        for key in self.pending.remove(subject).unwrap_or_default() {
            self.queue.remove(&key);
        }
    }

    fn run(&mut self, pending: Pending, key: (Time, u64)) {
        let subject = match &pending {
            Pending::Machine(name, _) => (false, name.clone()),
            Pending::Cluster(name, _) => (true, name.clone()),
        };
        if let Some(keys) = self.pending.get_mut(&subject) {
            keys.retain(|k| *k != key);
            if keys.is_empty() {
                self.pending.remove(&subject);
            }
        }
        // The generation check is a second line of defence: a spec change already cancelled
        // the older generation's writes.
        match pending {
            Pending::Machine(name, mut t) => {
                let Some(FleetObject::Machine(live)) = self.store.get_by_name("Machine", &name)
                else {
                    return;
                };
                if store::generation_of(&live.metadata) != t.generation {
                    return;
                }
                let previous = live.status.as_ref().and_then(|s| s.conditions.as_deref());
                operator::carry_transition_times(previous, t.status.conditions.as_mut());
                // The machine exists (checked above), so the write cannot fail.
                let _ = self.store.set_machine_status(&name, t.status);
            }
            Pending::Cluster(name, mut t) => {
                let Some(FleetObject::Cluster(live)) = self.store.get_by_name("Cluster", &name)
                else {
                    return;
                };
                if store::generation_of(&live.metadata) != t.generation {
                    return;
                }
                let previous = live.status.as_ref().and_then(|s| s.conditions.as_deref());
                operator::carry_transition_times(previous, t.status.conditions.as_mut());
                let _ = self.store.set_cluster_status(&name, t.status);
            }
        }
    }
}

fn name_of(object: &FleetObject) -> &str {
    object.meta().name.as_deref().unwrap_or_default()
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let io = |source| Error::Io {
        path: path.to_owned(),
        source,
    };
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, bytes).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}
