//! An in-memory object store with the API server's semantics for the fleet kinds.
//!
//! - `metadata.generation` starts at 1 and bumps only when `spec` changes;
//! - `metadata.resourceVersion` is a global counter that bumps on every change, status included;
//! - `uid` and `creationTimestamp` are set on create;
//! - an apply, update or status write that changes nothing is a no-op: no bump, no event;
//! - an update or status write carrying a stale `resourceVersion` fails with a conflict;
//! - apply is server-side apply by one field manager: it sets the labels, annotations and spec
//!   of the desired object, removes the labels and annotations it set before and no longer
//!   sets, keeps everyone else's, and never touches status (the status subresource).
//!
//! The store holds one namespace; objects are kept per kind, sorted by name, so listings are
//! deterministic (kinds by name, then objects by name).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use endstate_api::k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
use endstate_api::{ClusterStatus, MachineStatus, ObjectMeta};
use endstate_core::{FleetObject, Kind, ObjectRef};
use endstate_rollout::{LiveError, Time};
use serde::Serialize;
use serde_json::Value;

use crate::fields::{changed_leaves, insert, lookup, merge_owned};
use crate::seed;

/// The kinds the store holds, in the order they are listed (by name).
pub const KINDS: [Kind; 5] = Kind::ALL;

/// What the store has done since it was created (or its counters were reset).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Counters {
    /// Applies that created an object.
    pub creates: u64,
    /// Applies that changed something (creates included).
    pub applies: u64,
    /// Applies of an object identical to the live one: nothing written.
    pub noop_applies: u64,
    /// Updates (whole-object replaces) that changed something.
    pub updates: u64,
    /// Deletes of objects that existed.
    pub deletes: u64,
    /// Status writes that changed something.
    pub status_writes: u64,
    /// Status writes identical to the live status: nothing written.
    pub noop_status_writes: u64,
    /// Writes refused for a stale `resourceVersion` or an existing name.
    pub conflicts: u64,
}

impl Counters {
    /// Every write that changed an object: applies, updates, deletes and status writes.
    pub fn writes(&self) -> u64 {
        self.applies + self.updates + self.deletes + self.status_writes
    }
}

/// A change, as a watch reports it.
#[derive(Clone, Debug, PartialEq)]
pub enum WatchEvent {
    /// The object was created or changed; it carries its new `resourceVersion`.
    Applied(FleetObject),
    /// The object was deleted at this resource version.
    Deleted {
        /// The object.
        id: ObjectRef,
        /// The resource version of the deletion.
        resource_version: u64,
    },
}

impl WatchEvent {
    /// The resource version the event happened at.
    pub fn resource_version(&self) -> u64 {
        match self {
            WatchEvent::Applied(object) => resource_version(object),
            WatchEvent::Deleted {
                resource_version, ..
            } => *resource_version,
        }
    }
}

/// What a write did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Written {
    /// `metadata.generation` after the write.
    pub generation: i64,
    /// `metadata.resourceVersion` after the write.
    pub resource_version: u64,
    /// The object did not exist before.
    pub created: bool,
    /// The spec changed (or the object was created): the generation is new.
    pub spec_changed: bool,
    /// Nothing changed; nothing was written.
    pub noop: bool,
}

#[derive(Clone, Debug)]
struct Entry {
    object: FleetObject,
    /// Label and annotation keys the applier set last time (its managed fields).
    owned_labels: BTreeSet<String>,
    owned_annotations: BTreeSet<String>,
    /// Spec fields (paths through maps) other writers set by update and the applier has not
    /// set since: an apply that does not set them leaves them, as server-side apply leaves
    /// another manager's fields. Usually empty.
    foreign: BTreeMap<Vec<String>, Value>,
}

/// The object store. See the module documentation for its semantics.
#[derive(Clone, Debug)]
pub struct Store {
    namespace: String,
    seed: u64,
    kinds: [BTreeMap<String, Entry>; 5],
    resource_version: u64,
    tombstones: Vec<(u64, ObjectRef)>,
    counters: Counters,
    /// Objects changed since [`Store::take_changes`] last took them.
    changes: Vec<ObjectRef>,
}

impl Store {
    /// An empty store serving `namespace`; `seed` decides the uids.
    pub fn new(namespace: impl Into<String>, seed: u64) -> Self {
        Store {
            namespace: namespace.into(),
            seed,
            kinds: Default::default(),
            resource_version: 0,
            tombstones: Vec::new(),
            counters: Counters::default(),
            changes: Vec::new(),
        }
    }

    /// The namespace every object lives in.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The resource version of the latest change (0 before the first).
    pub fn resource_version(&self) -> u64 {
        self.resource_version
    }

    /// What the store has done.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// Starts counting from zero.
    pub fn reset_counters(&mut self) {
        self.counters = Counters::default();
    }

    /// How many objects the store holds.
    pub fn len(&self) -> usize {
        self.kinds.iter().map(BTreeMap::len).sum()
    }

    /// Whether the store is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The object with this identity; an empty namespace means the store's.
    pub fn get(&self, id: &ObjectRef) -> Option<&FleetObject> {
        self.check_namespace_of(id).ok()?;
        self.kinds[id.kind.index()].get(&id.name).map(|e| &e.object)
    }

    /// The object of this kind and name.
    pub fn get_by_name(&self, kind: Kind, name: &str) -> Option<&FleetObject> {
        self.kinds[kind.index()].get(name).map(|e| &e.object)
    }

    /// The objects changed (created, updated, status written, deleted) since the last call.
    pub fn take_changes(&mut self) -> Vec<ObjectRef> {
        std::mem::take(&mut self.changes)
    }

    /// Whether objects changed since [`Store::take_changes`] last took them.
    pub fn has_changes(&self) -> bool {
        !self.changes.is_empty()
    }

    /// Every object, kind by kind (by name), then by name.
    pub fn iter(&self) -> impl Iterator<Item = &FleetObject> {
        self.kinds
            .iter()
            .flat_map(|k| k.values().map(|e| &e.object))
    }

    /// The objects of one kind, by name.
    pub fn list(&self, kind: Kind) -> impl Iterator<Item = &FleetObject> {
        self.kinds[kind.index()].values().map(|e| &e.object)
    }

    /// The changes after resource version `since`, oldest first.
    ///
    /// Like a watch resumed after compaction, an object changed several times is reported once,
    /// as it is now.
    pub fn events_since(&self, since: u64) -> Vec<WatchEvent> {
        let mut events: Vec<WatchEvent> = self
            .iter()
            .filter(|o| resource_version(o) > since)
            .map(|o| WatchEvent::Applied(o.clone()))
            .collect();
        let first_tombstone = self.tombstones.partition_point(|(rv, _)| *rv <= since);
        events.extend(self.tombstones[first_tombstone..].iter().map(|(rv, id)| {
            WatchEvent::Deleted {
                id: id.clone(),
                resource_version: *rv,
            }
        }));
        events.sort_by_key(WatchEvent::resource_version);
        events
    }

    /// Server-side apply of `desired` at `now` (see the module documentation).
    pub fn apply(&mut self, desired: &FleetObject, now: Time) -> Result<Written, LiveError> {
        let (kind, name) = self.identify(desired)?;
        let desired_labels = desired.meta().labels.clone().unwrap_or_default();
        let desired_annotations = desired.meta().annotations.clone().unwrap_or_default();
        let Some(entry) = self.kinds[kind].get_mut(&name) else {
            let object = self.fresh(desired, kind, &name, now);
            let written = Written {
                generation: 1,
                resource_version: self.resource_version,
                created: true,
                spec_changed: true,
                noop: false,
            };
            self.kinds[kind].insert(
                name,
                Entry {
                    object,
                    owned_labels: desired_labels.into_keys().collect(),
                    owned_annotations: desired_annotations.into_keys().collect(),
                    foreign: BTreeMap::new(),
                },
            );
            self.counters.creates += 1;
            self.counters.applies += 1;
            return Ok(written);
        };
        let mut next = entry.object.clone();
        let meta = next.meta_mut();
        let labels = merge_owned(
            meta.labels.take(),
            &entry.owned_labels,
            desired_labels.clone(),
        );
        meta.labels = labels;
        let annotations = merge_owned(
            meta.annotations.take(),
            &entry.owned_annotations,
            desired_annotations.clone(),
        );
        meta.annotations = annotations;
        let spec_changed = if entry.foreign.is_empty() {
            let changed = !next.same_spec(desired);
            if changed {
                next.copy_spec_from(desired);
            }
            changed
        } else {
            // The applier's fields, plus the foreign ones it does not set; a foreign field it
            // sets is its own again.
            let mut spec = desired.spec_value();
            entry.foreign.retain(|path, value| {
                let theirs = lookup(&spec, path).is_none();
                if theirs {
                    insert(&mut spec, path, value.clone());
                }
                theirs
            });
            let before = next.spec_value();
            next.set_spec_value(spec)
                .map_err(|why| LiveError::Fatal(format!("{}: {why}", desired.id())))?;
            next.spec_value() != before
        };
        entry.owned_labels = desired_labels.into_keys().collect();
        entry.owned_annotations = desired_annotations.into_keys().collect();
        if next == entry.object {
            self.counters.noop_applies += 1;
            return Ok(Written {
                generation: generation(&next),
                resource_version: resource_version(&next),
                created: false,
                spec_changed: false,
                noop: true,
            });
        }
        self.counters.applies += 1;
        let written = self.commit(kind, &name, next, spec_changed);
        Ok(written)
    }

    /// Creates an object; fails with a conflict when the name is taken.
    pub fn create(&mut self, object: &FleetObject, now: Time) -> Result<Written, LiveError> {
        let (kind, name) = self.identify(object)?;
        if self.kinds[kind].contains_key(&name) {
            self.counters.conflicts += 1;
            return Err(LiveError::Conflict {
                object: self.object_ref(kind, &name),
                message: "already exists".into(),
            });
        }
        self.apply(object, now)
    }

    /// Replaces the labels, annotations and spec of an object (a PUT). When `object` carries a
    /// `resourceVersion`, it must be the live one, or the update fails with a conflict.
    pub fn update(&mut self, object: &FleetObject) -> Result<Written, LiveError> {
        let (kind, name) = self.identify(object)?;
        self.check_precondition(kind, &name, object)?;
        let entry = self.live_entry(kind, &name)?;
        let mut next = entry.object.clone();
        let meta = next.meta_mut();
        meta.labels = object.meta().labels.clone().filter(|m| !m.is_empty());
        meta.annotations = object.meta().annotations.clone().filter(|m| !m.is_empty());
        let spec_changed = !next.same_spec(object);
        let changes = if spec_changed {
            let mut changes = Vec::new();
            changed_leaves(
                &next.spec_value(),
                &object.spec_value(),
                &mut Vec::new(),
                &mut changes,
            );
            changes
        } else {
            Vec::new()
        };
        next.copy_spec_from(object);
        if next == entry.object {
            let live = &entry.object;
            return Ok(Written {
                generation: generation(live),
                resource_version: resource_version(live),
                created: false,
                spec_changed: false,
                noop: true,
            });
        }
        self.counters.updates += 1;
        if let Some(entry) = self.kinds[kind].get_mut(&name) {
            for (path, value) in changes {
                match value {
                    Some(value) => entry.foreign.insert(path, value),
                    None => entry.foreign.remove(&path),
                };
            }
        }
        Ok(self.commit(kind, &name, next, spec_changed))
    }

    /// Writes the status of a Machine or a Cluster (the status subresource): nothing but the
    /// status changes. A `resourceVersion` on `object` is a precondition, as in
    /// [`Store::update`].
    pub fn update_status(&mut self, object: &FleetObject) -> Result<Written, LiveError> {
        let (kind, name) = self.identify(object)?;
        self.check_precondition(kind, &name, object)?;
        let status = match object {
            FleetObject::Machine(m) => SomeStatus::Machine(m.status.clone()),
            FleetObject::Cluster(c) => SomeStatus::Cluster(c.status.clone()),
            other => {
                return Err(LiveError::Fatal(format!(
                    "{} has no status subresource",
                    other.kind()
                )));
            }
        };
        self.write_status(kind, &name, status)
    }

    /// Writes a Machine's status, unconditionally.
    pub fn set_machine_status(
        &mut self,
        name: &str,
        status: MachineStatus,
    ) -> Result<Written, LiveError> {
        self.write_status(
            Kind::Machine.index(),
            name,
            SomeStatus::Machine(Some(status)),
        )
    }

    /// Writes a Cluster's status, unconditionally.
    pub fn set_cluster_status(
        &mut self,
        name: &str,
        status: ClusterStatus,
    ) -> Result<Written, LiveError> {
        self.write_status(
            Kind::Cluster.index(),
            name,
            SomeStatus::Cluster(Some(status)),
        )
    }

    /// Starts deleting an object held by `finalizer`: it gets a `deletionTimestamp` and stays
    /// visible until [`Store::delete`] removes it (its finalizer done). `Ok(false)` when there
    /// was none; deleting one already being deleted changes nothing.
    pub fn mark_deleting(
        &mut self,
        id: &ObjectRef,
        finalizer: &str,
        now: Time,
    ) -> Result<bool, LiveError> {
        self.check_namespace_of(id)?;
        let kind = id.kind.index();
        let Some(entry) = self.kinds[kind].get(&id.name) else {
            return Ok(false);
        };
        if entry.object.meta().deletion_timestamp.is_some() {
            return Ok(true);
        }
        let mut next = entry.object.clone();
        let meta = next.meta_mut();
        meta.deletion_timestamp = Some(k8s_time(now));
        meta.finalizers = Some(vec![finalizer.to_owned()]);
        self.commit(kind, &id.name, next, false);
        Ok(true)
    }

    /// Deletes an object; `Ok(false)` when there was none.
    pub fn delete(&mut self, id: &ObjectRef) -> Result<bool, LiveError> {
        self.check_namespace_of(id)?;
        let kind = id.kind.index();
        if self.kinds[kind].remove(&id.name).is_none() {
            return Ok(false);
        }
        self.resource_version += 1;
        let gone = self.object_ref(kind, &id.name);
        self.changes.push(gone.clone());
        self.tombstones.push((self.resource_version, gone));
        self.counters.deletes += 1;
        Ok(true)
    }

    fn write_status(
        &mut self,
        kind: usize,
        name: &str,
        status: SomeStatus,
    ) -> Result<Written, LiveError> {
        let entry = self.live_entry(kind, name)?;
        let mut next = entry.object.clone();
        match (&mut next, status) {
            (FleetObject::Machine(m), SomeStatus::Machine(s)) => Arc::make_mut(m).status = s,
            (FleetObject::Cluster(c), SomeStatus::Cluster(s)) => Arc::make_mut(c).status = s,
            (other, _) => {
                return Err(LiveError::Fatal(format!(
                    "{} has no status of that kind",
                    other.kind()
                )));
            }
        }
        if next == entry.object {
            self.counters.noop_status_writes += 1;
            return Ok(Written {
                generation: generation(&next),
                resource_version: resource_version(&next),
                created: false,
                spec_changed: false,
                noop: true,
            });
        }
        self.counters.status_writes += 1;
        Ok(self.commit(kind, name, next, false))
    }

    /// Stores a changed object under a new resource version.
    fn commit(
        &mut self,
        kind: usize,
        name: &str,
        mut next: FleetObject,
        spec_changed: bool,
    ) -> Written {
        self.resource_version += 1;
        self.changes.push(self.object_ref(kind, name));
        let meta = next.meta_mut();
        if spec_changed {
            meta.generation = Some(meta.generation.unwrap_or(0) + 1);
        }
        meta.resource_version = Some(self.resource_version.to_string());
        let written = Written {
            generation: meta.generation.unwrap_or(1),
            resource_version: self.resource_version,
            created: false,
            spec_changed,
            noop: false,
        };
        if let Some(entry) = self.kinds[kind].get_mut(name) {
            entry.object = next;
        }
        written
    }

    /// A new object from a desired one: its metadata reduced to what a client may set, plus
    /// what the server sets on create; no status.
    fn fresh(&mut self, desired: &FleetObject, kind: usize, name: &str, now: Time) -> FleetObject {
        self.resource_version += 1;
        self.changes.push(self.object_ref(kind, name));
        let mut object = desired.clone();
        object.clear_status();
        let from = desired.meta();
        let uid = uid(self.seed, KINDS[kind].as_str(), name, self.resource_version);
        *object.meta_mut() = ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(self.namespace.clone()),
            labels: from.labels.clone().filter(|m| !m.is_empty()),
            annotations: from.annotations.clone().filter(|m| !m.is_empty()),
            generation: Some(1),
            resource_version: Some(self.resource_version.to_string()),
            uid: Some(uid),
            creation_timestamp: Some(k8s_time(now)),
            ..ObjectMeta::default()
        };
        object
    }

    fn identify(&self, object: &FleetObject) -> Result<(usize, String), LiveError> {
        let meta = object.meta();
        let name = meta.name.as_deref().unwrap_or_default();
        if name.is_empty() {
            return Err(LiveError::Fatal(format!(
                "a {} without metadata.name cannot be stored",
                object.kind()
            )));
        }
        let namespace = meta.namespace.as_deref().unwrap_or_default();
        if !namespace.is_empty() && namespace != self.namespace {
            return Err(LiveError::Fatal(format!(
                "{}: the simulated fleet serves namespace {:?} only",
                object.id(),
                self.namespace
            )));
        }
        Ok((object.kind().index(), name.to_owned()))
    }

    fn check_namespace_of(&self, id: &ObjectRef) -> Result<(), LiveError> {
        if id.namespace.is_empty() || id.namespace == self.namespace {
            Ok(())
        } else {
            Err(LiveError::Fatal(format!(
                "{id}: the simulated fleet serves namespace {:?} only",
                self.namespace
            )))
        }
    }

    fn live_entry(&self, kind: usize, name: &str) -> Result<&Entry, LiveError> {
        self.kinds[kind]
            .get(name)
            .ok_or_else(|| LiveError::NotFound(self.object_ref(kind, name)))
    }

    fn check_precondition(
        &mut self,
        kind: usize,
        name: &str,
        object: &FleetObject,
    ) -> Result<(), LiveError> {
        let live = resource_version(&self.live_entry(kind, name)?.object);
        let Some(expected) = object.meta().resource_version.as_deref() else {
            return Ok(());
        };
        if expected.parse::<u64>().ok() == Some(live) {
            return Ok(());
        }
        self.counters.conflicts += 1;
        Err(LiveError::Conflict {
            object: self.object_ref(kind, name),
            message: format!(
                "the object has been modified: resourceVersion {expected} is stale, the live one is {live}; read it again and retry"
            ),
        })
    }

    fn object_ref(&self, kind: usize, name: &str) -> ObjectRef {
        ObjectRef::new(KINDS[kind], &self.namespace, name)
    }
}

enum SomeStatus {
    Machine(Option<MachineStatus>),
    Cluster(Option<ClusterStatus>),
}

/// The object's `metadata.resourceVersion` as a number (0 when unset).
pub fn resource_version(object: &FleetObject) -> u64 {
    object
        .meta()
        .resource_version
        .as_deref()
        .and_then(|rv| rv.parse().ok())
        .unwrap_or_default()
}

/// The object's `metadata.generation` (0 when unset).
pub fn generation(object: &FleetObject) -> i64 {
    object.meta().generation.unwrap_or_default()
}

/// A Kubernetes timestamp for a point in virtual time.
pub fn k8s_time(t: Time) -> meta::Time {
    use endstate_api::k8s_openapi::jiff::Timestamp;
    meta::Time(Timestamp::from_millisecond(t.millis()).unwrap_or(Timestamp::UNIX_EPOCH))
}

fn uid(seed: u64, kind: &str, name: &str, rv: u64) -> String {
    let rv = rv.to_string();
    let a = seed::hash(seed, &["uid", kind, name, &rv]);
    let b = seed::hash(seed, &["uid2", kind, name, &rv]);
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        0x8000 | ((b >> 48) & 0x3fff),
        b & 0xffff_ffff_ffff
    )
}

/// `metadata.generation` (0 when unset).
pub(crate) fn generation_of(meta: &ObjectMeta) -> i64 {
    meta.generation.unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{machine, mpv, obj};

    const T0: Time = Time(1_767_225_600_000);

    fn store() -> Store {
        Store::new("fleet", 1)
    }

    fn live_machine(store: &Store, name: &str) -> endstate_api::Machine {
        match store.get_by_name(Kind::Machine, name) {
            Some(FleetObject::Machine(m)) => (**m).clone(),
            other => panic!("no machine {name}: {other:?}"),
        }
    }

    #[test]
    fn generation_bumps_on_spec_changes_only() {
        let mut s = store();
        let mut m = machine("m1", "idc-a", "kubelet-1.28");
        m.status = Some(MachineStatus {
            observed_generation: Some(9),
            ..MachineStatus::default()
        });
        let w = s.apply(&obj(m.clone()), T0).unwrap();
        assert_eq!((w.generation, w.resource_version, w.created), (1, 1, true));
        let live = live_machine(&s, "m1");
        assert_eq!(live.metadata.namespace.as_deref(), Some("fleet"));
        assert_eq!(live.metadata.generation, Some(1));
        assert_eq!(live.metadata.resource_version.as_deref(), Some("1"));
        assert!(live.metadata.uid.as_deref().is_some_and(|u| u.len() == 36));
        assert_eq!(live.metadata.creation_timestamp, Some(k8s_time(T0)));
        assert_eq!(live.status, None, "apply never writes status");

        // A label is metadata: new resource version, same generation.
        m.metadata.labels = Some(BTreeMap::from([("tier".into(), "gold".into())]));
        let w = s.apply(&obj(m.clone()), T0).unwrap();
        assert_eq!(
            (w.generation, w.resource_version, w.spec_changed),
            (1, 2, false)
        );

        m.spec.unschedulable = Some(true);
        let w = s.apply(&obj(m.clone()), T0).unwrap();
        assert_eq!(
            (w.generation, w.resource_version, w.spec_changed),
            (2, 3, true)
        );

        // Status writes bump the resource version, never the generation.
        let w = s
            .set_machine_status(
                "m1",
                MachineStatus {
                    phase: Some(endstate_api::MachinePhase::Running),
                    ..MachineStatus::default()
                },
            )
            .unwrap();
        assert_eq!((w.generation, w.resource_version), (2, 4));
        let live = live_machine(&s, "m1");
        assert_eq!(live.metadata.creation_timestamp, Some(k8s_time(T0)));
        assert!(live.status.is_some());
    }

    #[test]
    fn identical_writes_are_noops() {
        let mut s = store();
        let m = obj(machine("m1", "idc-a", "kubelet-1.28"));
        s.apply(&m, T0).unwrap();
        s.apply(&mpv("kubelet-1.28"), T0).unwrap();
        let rv = s.resource_version();
        for _ in 0..3 {
            let w = s.apply(&m, T0).unwrap();
            assert!(w.noop);
            assert_eq!(w.resource_version, 1);
        }
        let status = MachineStatus {
            observed_generation: Some(1),
            ..MachineStatus::default()
        };
        s.set_machine_status("m1", status.clone()).unwrap();
        assert!(s.set_machine_status("m1", status).unwrap().noop);
        assert_eq!(s.resource_version(), rv + 1);
        let c = s.counters();
        assert_eq!(
            (
                c.creates,
                c.applies,
                c.noop_applies,
                c.status_writes,
                c.noop_status_writes
            ),
            (2, 2, 3, 1, 1)
        );
        assert_eq!(c.writes(), 3);
        assert!(s.events_since(rv + 1).is_empty());
    }

    #[test]
    fn apply_keeps_other_managers_labels_and_drops_its_own_removed_ones() {
        let mut s = store();
        let mut m = machine("m1", "idc-a", "kubelet-1.28");
        m.metadata.labels = Some(BTreeMap::from([
            ("a".into(), "1".into()),
            ("b".into(), "1".into()),
        ]));
        s.apply(&obj(m.clone()), T0).unwrap();
        // Someone else labels the machine.
        let mut other = live_machine(&s, "m1");
        other
            .metadata
            .labels
            .get_or_insert_default()
            .insert("team".into(), "x".into());
        s.update(&obj(other)).unwrap();
        m.metadata.labels = Some(BTreeMap::from([("a".into(), "2".into())]));
        s.apply(&obj(m), T0).unwrap();
        let labels = live_machine(&s, "m1").metadata.labels.unwrap();
        assert_eq!(
            labels,
            BTreeMap::from([("a".into(), "2".into()), ("team".into(), "x".into())])
        );
    }

    #[test]
    fn stale_resource_version_conflicts() {
        let mut s = store();
        s.apply(&obj(machine("m1", "idc-a", "kubelet-1.28")), T0)
            .unwrap();
        let read = live_machine(&s, "m1");
        let mut first = read.clone();
        first.spec.unschedulable = Some(true);
        assert_eq!(s.update(&obj(first)).unwrap().generation, 2);
        let mut second = read.clone();
        second.spec.ip = "10.0.0.2".into();
        let err = s.update(&obj(second)).unwrap_err();
        assert!(matches!(err, LiveError::Conflict { .. }), "{err}");
        assert!(
            err.to_string().contains("resourceVersion 1 is stale"),
            "{err}"
        );
        let mut status = read;
        status.status = Some(MachineStatus::default());
        assert!(matches!(
            s.update_status(&obj(status)),
            Err(LiveError::Conflict { .. })
        ));
        assert_eq!(s.counters().conflicts, 2);
        assert!(matches!(
            s.create(&obj(machine("m1", "idc-a", "x")), T0),
            Err(LiveError::Conflict { .. })
        ));
        assert!(matches!(
            s.update(&obj(machine("nope", "idc-a", "x"))),
            Err(LiveError::NotFound(_))
        ));
    }

    #[test]
    fn watch_reports_changes_and_deletes_in_order() {
        let mut s = store();
        s.apply(&mpv("kubelet-1.28"), T0).unwrap();
        s.apply(&obj(machine("m1", "idc-a", "kubelet-1.28")), T0)
            .unwrap();
        s.apply(&obj(machine("m2", "idc-a", "kubelet-1.28")), T0)
            .unwrap();
        let since = s.resource_version();
        s.set_machine_status("m2", MachineStatus::default())
            .unwrap();
        assert!(s.delete(&ObjectRef::new(Kind::Machine, "", "m1")).unwrap());
        assert!(!s.delete(&ObjectRef::new(Kind::Machine, "", "m1")).unwrap());
        let events = s.events_since(since);
        assert_eq!(events.len(), 2);
        assert!(matches!(&events[0], WatchEvent::Applied(o) if o.key().2 == "m2"));
        assert!(
            matches!(&events[1], WatchEvent::Deleted { id, resource_version: 5 } if id.name == "m1")
        );
        assert_eq!(s.counters().deletes, 1);
        assert_eq!(s.events_since(0).len(), 3);
    }

    #[test]
    fn one_namespace() {
        let mut s = store();
        let mut m = machine("m1", "idc-a", "kubelet-1.28");
        m.metadata.namespace = Some("other".into());
        let err = s.apply(&obj(m.clone()), T0).unwrap_err();
        assert!(
            err.to_string().contains("serves namespace \"fleet\" only"),
            "{err}"
        );
        m.metadata.namespace = Some("fleet".into());
        s.apply(&obj(m), T0).unwrap();
        assert!(s.get(&ObjectRef::new(Kind::Machine, "", "m1")).is_some());
        assert!(
            s.get(&ObjectRef::new(Kind::Machine, "fleet", "m1"))
                .is_some()
        );
        assert!(
            s.get(&ObjectRef::new(Kind::Machine, "other", "m1"))
                .is_none()
        );
    }
}
