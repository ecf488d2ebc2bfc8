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
use endstate_core::{FleetObject, Kind, ObjectRef};
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
    /// The operator's finalizer is done: the deleted object goes.
    Remove(ObjectRef),
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
    largest_status: usize,
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
            largest_status: 0,
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

    /// Every object, kind by kind (by name), then by name.
    pub fn snapshot(&self) -> Vec<FleetObject> {
        self.store.iter().cloned().collect()
    }

    /// The objects changed since the last call; see [`Store::take_changes`].
    pub fn take_changes(&mut self) -> Vec<ObjectRef> {
        self.store.take_changes()
    }

    /// Whether objects changed since [`SimFleet::take_changes`] last took them.
    pub fn has_changes(&self) -> bool {
        self.store.has_changes()
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

    /// Deletes an object; `Ok(false)` when there was none. A Machine or Cluster is held by
    /// its operator's finalizer: it gets a `deletionTimestamp`, its pending work is dropped,
    /// and it goes once the operator drained (tore down) it, in virtual time.
    pub fn delete(&mut self, id: &ObjectRef) -> Result<bool, LiveError> {
        let held = [Kind::Machine, Kind::Cluster]
            .into_iter()
            .find(|k| id.is(*k));
        let Some(kind) = held else {
            return self.store.delete(id);
        };
        let subject = (kind == Kind::Cluster, id.name.clone());
        let already = self
            .store
            .get_by_name(kind, &id.name)
            .is_some_and(|o| o.meta().deletion_timestamp.is_some());
        if !self
            .store
            .mark_deleting(id, operator::FINALIZER, self.now)?
        {
            return Ok(false);
        }
        if already {
            return Ok(true);
        }
        self.cancel(&subject);
        let cx = Context {
            seed: self.config.seed,
            config: &self.config.operators,
            faults: &self.config.faults,
        };
        // Not among the subject's pending work: a write to an object being deleted does not
        // stop its deletion.
        let at = operator::removal_at(kind, &id.name, self.now, cx);
        self.sequence += 1;
        self.queue
            .insert((at, self.sequence), Pending::Remove(id.clone()));
        Ok(true)
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
                Kind::Machine => {
                    self.cancel(&(false, name.clone()));
                    if let Some(FleetObject::Machine(live)) =
                        self.store.get_by_name(Kind::Machine, &name)
                    {
                        let status = operator::converged_machine_status(live, self.now);
                        self.store.set_machine_status(&name, status)?;
                    }
                }
                Kind::Cluster => {
                    self.cancel(&(true, name.clone()));
                    if let Some(FleetObject::Cluster(live)) =
                        self.store.get_by_name(Kind::Cluster, &name)
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
        let bytes = serde_json::to_vec(status).map_err(|source| Error::Status {
            path: self.status_file.clone().unwrap_or_default(),
            source,
        })?;
        self.largest_status = self.largest_status.max(bytes.len());
        if let Some(path) = &self.status_file {
            write_atomically(path, &bytes)?;
        }
        self.fleet_status = Some(status.clone());
        Ok(())
    }

    /// The largest status saved so far, in bytes of JSON.
    pub fn largest_status(&self) -> usize {
        self.largest_status
    }

    /// Hands the current generation of a Machine or Cluster to its operator, replacing the work
    /// scheduled for an older generation.
    fn reconcile(&mut self, kind: Kind, name: &str) {
        let cx = Context {
            seed: self.config.seed,
            config: &self.config.operators,
            faults: &self.config.faults,
        };
        let store = &self.store;
        let pending: Vec<Pending> = match store.get_by_name(kind, name) {
            Some(FleetObject::Machine(machine)) => {
                operator::machine_transitions(machine, self.now, cx, |p| {
                    store.get_by_name(Kind::MachinePackageVersion, p).is_some()
                })
                .into_iter()
                .map(|t| Pending::Machine(name.to_owned(), t))
                .collect()
            }
            Some(FleetObject::Cluster(cluster)) => {
                operator::cluster_transitions(cluster, self.now, cx, |p| {
                    store.get_by_name(Kind::ClusterPackageVersion, p).is_some()
                })
                .into_iter()
                .map(|t| Pending::Cluster(name.to_owned(), t))
                .collect()
            }
            _ => return,
        };
        let subject = (kind == Kind::Cluster, name.to_owned());
        self.cancel(&subject);
        let keys = self.pending.entry(subject).or_default();
        for p in pending {
            let at = match &p {
                Pending::Machine(_, t) => t.at,
                Pending::Cluster(_, t) => t.at,
                Pending::Remove(_) => unreachable!("operators schedule status writes"),
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
            Pending::Remove(id) => (id.is(Kind::Cluster), id.name.clone()),
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
            Pending::Remove(id) => {
                // The object exists with this kind (it was marked), so this cannot fail.
                let _ = self.store.delete(&id);
            }
            Pending::Machine(name, mut t) => {
                let Some(FleetObject::Machine(live)) = self.store.get_by_name(Kind::Machine, &name)
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
                let Some(FleetObject::Cluster(live)) = self.store.get_by_name(Kind::Cluster, &name)
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use endstate_api::{ClusterPhase, Machine, MachinePhase};

    use super::*;
    use crate::testing::{cluster, cobj, cpv, machine, mpv, obj};

    const SEC: Duration = Duration::from_secs(1);

    fn fleet(seed: u64, faults: &[&str]) -> SimFleet {
        let config = SimConfig::new("fleet", seed).with_faults(Faults::parse(faults).unwrap());
        let mut fleet = SimFleet::new(config);
        for p in ["kubelet-1.28", "kubelet-1.29", "pouch-1.0"] {
            fleet.apply(&mpv(p)).unwrap();
        }
        fleet
    }

    fn get(fleet: &SimFleet, name: &str) -> Machine {
        match fleet.get(&ObjectRef::new(Kind::Machine, "", name)) {
            Some(FleetObject::Machine(m)) => (**m).clone(),
            other => panic!("no machine {name}: {other:?}"),
        }
    }

    fn status(fleet: &SimFleet, name: &str) -> MachineStatus {
        get(fleet, name).status.unwrap_or_default()
    }

    fn condition(status: &MachineStatus, type_: &str) -> String {
        status
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == type_)
            .map(|c| c.status.clone())
            .unwrap_or_default()
    }

    #[test]
    fn a_machine_installs_then_runs_in_virtual_time() {
        let mut f = fleet(1, &[]);
        let t0 = f.now();
        f.apply(&obj(machine("m1", "idc-a", "kubelet-1.28")))
            .unwrap();
        assert_eq!(f.pending_events(), 2);
        let installing = f.next_event_at().unwrap();
        assert!(installing >= t0 + SEC && installing <= t0 + 5 * SEC);
        assert_eq!(f.advance_to(installing - Duration::from_millis(1)), 0);
        assert_eq!(status(&f, "m1"), MachineStatus::default());
        assert_eq!(f.advance_to(installing), 1);
        let s = status(&f, "m1");
        assert_eq!(s.phase, Some(MachinePhase::Installing));
        assert_eq!(s.observed_generation, None);
        assert_eq!(condition(&s, "NetworkReady"), "False");
        let done = f.next_event_at().unwrap();
        assert!(done >= installing + 20 * SEC && done <= installing + 90 * SEC);
        f.advance_to(done + SEC);
        assert_eq!(f.now(), done + SEC);
        let s = status(&f, "m1");
        assert_eq!(s.phase, Some(MachinePhase::Running));
        assert_eq!(s.observed_generation, Some(1));
        assert_eq!(s.versions.as_ref(), Some(&get(&f, "m1").spec.packages));
        assert_eq!((s.os_generation, s.schedulable), (Some(1), Some(true)));
        assert_eq!(condition(&s, "Ready"), "True");
        assert_eq!(condition(&s, "NetworkReady"), "True");
        let ready = s.conditions.iter().flatten().next().unwrap();
        assert_eq!(ready.last_transition_time, crate::store::k8s_time(done));
        assert_eq!(f.next_event_at(), None);
        assert_eq!(f.counters().status_writes, 2);
    }

    #[test]
    fn a_newer_spec_supersedes_pending_work() {
        let mut f = fleet(2, &[]);
        f.apply(&obj(machine("m1", "idc-a", "kubelet-1.28")))
            .unwrap();
        let installing = f.next_event_at().unwrap();
        f.advance_to(installing);
        let w = f
            .apply(&obj(machine("m1", "idc-a", "kubelet-1.29")))
            .unwrap();
        assert_eq!(w.generation, 2);
        // Only generation 2's two writes are left.
        assert_eq!(f.pending_events(), 2);
        let mut seen = Vec::new();
        while let Some(at) = f.next_event_at() {
            f.advance_to(at);
            let s = status(&f, "m1");
            seen.push((s.phase, s.observed_generation));
        }
        assert_eq!(
            seen,
            [
                (Some(MachinePhase::Installing), None),
                (Some(MachinePhase::Running), Some(2))
            ]
        );
        assert_eq!(
            status(&f, "m1").versions.unwrap()["kubelet"],
            "kubelet-1.29"
        );
    }

    #[test]
    fn an_os_generation_bump_reinstalls_and_a_cordon_only_reconfigures() {
        let mut f = fleet(3, &[]);
        let mut m = machine("m1", "idc-a", "kubelet-1.28");
        f.seed_converged([obj(m.clone())]).unwrap();
        m.spec.os_generation = Some(2);
        f.apply(&obj(m.clone())).unwrap();
        f.advance_to(f.next_event_at().unwrap());
        assert_eq!(status(&f, "m1").phase, Some(MachinePhase::Reinstalling));
        let start = f.now();
        f.run_until_idle();
        assert!(f.now() >= start + 120 * SEC);
        assert_eq!(status(&f, "m1").os_generation, Some(2));

        m.spec.unschedulable = Some(true);
        f.apply(&obj(m)).unwrap();
        assert_eq!(f.pending_events(), 1, "nothing to install");
        f.run_until_idle();
        let s = status(&f, "m1");
        assert_eq!(
            (s.schedulable, s.observed_generation),
            (Some(false), Some(3))
        );
    }

    #[test]
    fn a_failing_package_fails_the_machines_that_get_it() {
        let mut f = fleet(4, &["package=kubelet-1.29,rate=1"]);
        f.seed_converged([obj(machine("m1", "idc-a", "kubelet-1.28"))])
            .unwrap();
        f.apply(&obj(machine("m1", "idc-a", "kubelet-1.29")))
            .unwrap();
        f.apply(&obj(machine("m2", "idc-a", "kubelet-1.28")))
            .unwrap();
        f.run_until_idle();
        let s = status(&f, "m1");
        assert_eq!(s.phase, Some(MachinePhase::Failed));
        assert_eq!(s.observed_generation, Some(2));
        assert_eq!(s.versions.as_ref().unwrap()["kubelet"], "kubelet-1.28");
        assert_eq!(condition(&s, "Ready"), "False");
        assert_eq!(condition(&s, "NetworkReady"), "False");
        assert!(s.message.unwrap().contains("kubelet-1.29"));
        assert_eq!(status(&f, "m2").phase, Some(MachinePhase::Running));

        // Restoring the old version succeeds: the machine no longer gets the bad one.
        f.apply(&obj(machine("m1", "idc-a", "kubelet-1.28")))
            .unwrap();
        f.run_until_idle();
        assert_eq!(status(&f, "m1").phase, Some(MachinePhase::Running));
    }

    #[test]
    fn a_failure_rate_hits_that_share_of_machines_whatever_the_order() {
        let names: Vec<String> = (0..400).map(|i| format!("m{i:03}")).collect();
        let failed = |reverse: bool| {
            let mut f = fleet(5, &["package=kubelet-1.29,rate=0.25"]);
            let mut order = names.clone();
            if reverse {
                order.reverse();
            }
            for n in &order {
                f.apply(&obj(machine(n, "idc-a", "kubelet-1.29"))).unwrap();
            }
            f.run_until_idle();
            names
                .iter()
                .filter(|n| status(&f, n).phase == Some(MachinePhase::Failed))
                .cloned()
                .collect::<Vec<_>>()
        };
        let forward = failed(false);
        assert!((60..140).contains(&forward.len()), "{}", forward.len());
        assert_eq!(forward, failed(true));
    }

    #[test]
    fn a_slow_idc_delays_its_machines() {
        let mut f = fleet(6, &["idc=idc-b,delay=10m"]);
        f.apply(&obj(machine("fast", "idc-a", "kubelet-1.28")))
            .unwrap();
        f.apply(&obj(machine("slow", "idc-b", "kubelet-1.28")))
            .unwrap();
        let t0 = f.now();
        f.advance_to(t0 + 100 * SEC);
        assert_eq!(status(&f, "fast").phase, Some(MachinePhase::Running));
        assert_eq!(status(&f, "slow").phase, Some(MachinePhase::Installing));
        f.advance_to(t0 + 600 * SEC);
        assert_eq!(status(&f, "slow").phase, Some(MachinePhase::Installing));
        f.advance_to(t0 + 700 * SEC);
        assert_eq!(status(&f, "slow").phase, Some(MachinePhase::Running));
    }

    #[test]
    fn a_silent_machine_never_reports() {
        let mut f = fleet(7, &["machine=m1,silent"]);
        f.apply(&obj(machine("m1", "idc-a", "kubelet-1.28")))
            .unwrap();
        f.apply(&obj(machine("m2", "idc-a", "kubelet-1.28")))
            .unwrap();
        assert_eq!(f.pending_events(), 2);
        f.advance_by(Duration::from_secs(3600));
        assert_eq!(get(&f, "m1").status, None);
        assert_eq!(status(&f, "m2").phase, Some(MachinePhase::Running));
    }

    #[test]
    fn a_missing_package_version_fails_the_machine() {
        let mut f = fleet(8, &[]);
        f.apply(&obj(machine("m1", "idc-a", "kubelet-9.9")))
            .unwrap();
        f.run_until_idle();
        let s = status(&f, "m1");
        assert_eq!(s.phase, Some(MachinePhase::Failed));
        assert!(s.message.unwrap().contains("\"kubelet-9.9\" not found"));
    }

    #[test]
    fn the_same_seed_gives_the_same_timeline() {
        let run = |seed: u64| {
            let mut f = fleet(
                seed,
                &["package=kubelet-1.29,rate=0.5", "idc=idc-b,delay=1m"],
            );
            for i in 0..20 {
                let idc = if i % 2 == 0 { "idc-a" } else { "idc-b" };
                f.apply(&obj(machine(&format!("m{i}"), idc, "kubelet-1.29")))
                    .unwrap();
            }
            let mut timeline = Vec::new();
            while let Some(at) = f.next_event_at() {
                f.advance_to(at);
                timeline.push(at);
            }
            (timeline, f.snapshot())
        };
        let (a, snapshot_a) = run(11);
        let (b, snapshot_b) = run(11);
        assert_eq!(a, b);
        assert_eq!(snapshot_a, snapshot_b);
        let (c, snapshot_c) = run(12);
        assert_ne!(a, c);
        assert_ne!(snapshot_a, snapshot_c);
    }

    #[test]
    fn seeding_converges_without_scheduling() {
        let mut f = SimFleet::new(SimConfig::new("fleet", 9));
        let mut m = machine("m1", "idc-a", "kubelet-1.28");
        m.metadata.namespace = Some(String::new());
        f.seed_converged([
            mpv("kubelet-1.28"),
            mpv("pouch-1.0"),
            cpv("k8s-1.28"),
            cobj(cluster("c1", "k8s-1.28")),
            obj(m),
        ])
        .unwrap();
        assert_eq!(f.pending_events(), 0);
        let s = status(&f, "m1");
        assert_eq!(s.phase, Some(MachinePhase::Running));
        assert_eq!(s.observed_generation, Some(1));
        assert_eq!(condition(&s, "NetworkReady"), "True");
        let Some(FleetObject::Cluster(c)) = f.get(&ObjectRef::new(Kind::Cluster, "fleet", "c1"))
        else {
            panic!("no cluster");
        };
        let cs = c.status.clone().unwrap();
        assert_eq!(cs.phase, Some(ClusterPhase::Running));
        assert_eq!(cs.version.as_deref(), Some("k8s-1.28"));
        assert_eq!(cs.observed_generation, c.metadata.generation);
    }

    #[test]
    fn clusters_provision_upgrade_and_pause() {
        let mut f = fleet(10, &["package=k8s-1.30,rate=1"]);
        for p in ["k8s-1.28", "k8s-1.29", "k8s-1.30"] {
            f.apply(&cpv(p)).unwrap();
        }
        let cluster_status = |f: &SimFleet| match f.get(&ObjectRef::new(Kind::Cluster, "", "c1")) {
            Some(FleetObject::Cluster(c)) => c.status.clone().unwrap_or_default(),
            _ => panic!("no cluster"),
        };
        f.apply(&cobj(cluster("c1", "k8s-1.28"))).unwrap();
        f.advance_to(f.next_event_at().unwrap());
        assert_eq!(cluster_status(&f).phase, Some(ClusterPhase::Provisioning));
        f.run_until_idle();
        assert_eq!(cluster_status(&f).phase, Some(ClusterPhase::Running));

        f.apply(&cobj(cluster("c1", "k8s-1.29"))).unwrap();
        f.advance_to(f.next_event_at().unwrap());
        assert_eq!(cluster_status(&f).phase, Some(ClusterPhase::Upgrading));
        f.run_until_idle();
        let s = cluster_status(&f);
        assert_eq!(
            (s.phase, s.version.as_deref()),
            (Some(ClusterPhase::Running), Some("k8s-1.29"))
        );
        assert_eq!(s.observed_generation, Some(2));

        f.apply(&cobj(cluster("c1", "k8s-1.30"))).unwrap();
        f.run_until_idle();
        let s = cluster_status(&f);
        assert_eq!(
            (s.phase, s.version.as_deref()),
            (Some(ClusterPhase::Failed), Some("k8s-1.29"))
        );

        let mut paused = cluster("c1", "k8s-1.28");
        paused.spec.paused = Some(true);
        f.apply(&cobj(paused)).unwrap();
        assert_eq!(f.pending_events(), 0);
    }

    #[test]
    fn deleting_drops_pending_work_waits_for_the_finalizer_and_time_never_goes_back() {
        let mut f = fleet(11, &[]);
        f.apply(&obj(machine("m1", "idc-a", "kubelet-1.28")))
            .unwrap();
        let id = ObjectRef::new(Kind::Machine, "", "m1");
        assert!(f.delete(&id).unwrap());
        // The install is dropped; what is left is the drain, after which it goes.
        assert_eq!(f.pending_events(), 1);
        let held = f.get(&id).expect("held by the finalizer");
        assert_eq!(
            held.meta().finalizers.as_deref(),
            Some(&[operator::FINALIZER.to_owned()][..])
        );
        assert!(f.delete(&id).unwrap(), "deleting again changes nothing");
        assert_eq!(f.pending_events(), 1);
        let deleted_at = f.now();
        f.run_until_idle();
        assert!(f.get(&id).is_none());
        assert!(f.now() >= deleted_at + Duration::from_secs(5));
        let now = f.now();
        assert_eq!(f.advance_to(now - SEC), 0);
        assert_eq!(f.now(), now);
    }
}
