//! Desired against live: what must change, and how it reads in a review.
//!
//! Only what endstate sets is compared: the spec, and the labels and annotations the desired
//! object carries. Status and everything the server owns (`resourceVersion`, `uid`,
//! `generation`, timestamps, `managedFields`) never make a difference, and labels other
//! tools add are theirs. A fleet whose live state matches its commit yields an empty change
//! set, so a no-op reconcile writes nothing.

use std::collections::{BTreeMap, HashMap};

use endstate_core::{FleetObject, ObjectRef};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::live::{OWNER_LABEL, PRUNE_ANNOTATION, PRUNE_DISABLED};

/// What happens to one object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Op {
    /// It does not exist yet.
    Create,
    /// Its spec, labels or annotations differ.
    Update,
    /// An update that bumps a Machine's `osGeneration`: the host is reinstalled.
    Reinstall,
    /// It was removed from Git and endstate owns it.
    Delete,
}

impl Op {
    /// The op in plans and logs: `create`, `update`, `reinstall`, `delete`.
    pub fn name(self) -> &'static str {
        match self {
            Op::Create => "create",
            Op::Update => "update",
            Op::Reinstall => "reinstall",
            Op::Delete => "delete",
        }
    }
}

/// One object to change.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Change {
    /// The object.
    pub id: ObjectRef,
    /// What happens to it.
    pub op: Op,
}

impl Change {
    /// The budget class the change spends from, if any (package versions are inert).
    pub fn class(&self) -> Option<&'static str> {
        match (self.id.kind.as_str(), self.op) {
            ("Machine", Op::Create | Op::Update) => Some("machine-update"),
            ("Machine", Op::Reinstall) => Some("machine-reinstall"),
            ("Machine", Op::Delete) => Some("machine-delete"),
            ("Cluster", _) => Some("cluster-update"),
            _ => None,
        }
    }

    /// The budget class that undoing the change spends from: only deletes and reinstalls are
    /// limited on the way back, so a restore is never held by the update budget it undoes.
    pub fn restore_class(&self) -> Option<&'static str> {
        match (self.id.kind.as_str(), self.op) {
            ("Machine", Op::Create) => Some("machine-delete"),
            ("Machine", Op::Reinstall) => Some("machine-reinstall"),
            _ => None,
        }
    }
}

/// The differences between a desired set and the live fleet.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ChangeSet {
    /// Every change, sorted by identity.
    pub changes: Vec<Change>,
    /// Package versions whose spec changes while live machines or clusters use them: refused,
    /// because a package version is immutable once in use.
    pub immutable: Vec<ObjectRef>,
    /// Objects removed from Git that stay because they are annotated `prune: disabled`.
    pub kept: Vec<ObjectRef>,
}

impl ChangeSet {
    /// Whether nothing changes.
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    /// How many changes of each op.
    pub fn count(&self, op: Op) -> usize {
        self.changes.iter().filter(|c| c.op == op).count()
    }
}

/// Compares the desired objects (namespaced, labelled for `fleet`) with the live ones.
///
/// `RolloutPolicy` objects are endstate's own input and never applied, so they are skipped.
pub fn diff(desired: &[FleetObject], live: &[FleetObject], fleet: &str) -> ChangeSet {
    let live_by_key: HashMap<(&str, &str, &str), &FleetObject> =
        live.iter().map(|o| (o.key(), o)).collect();
    let mut set = ChangeSet::default();
    let mut in_use: Option<std::collections::HashSet<&str>> = None;
    for want in desired {
        if matches!(want, FleetObject::RolloutPolicy(_)) {
            continue;
        }
        let Some(have) = live_by_key.get(&want.key()) else {
            set.changes.push(Change {
                id: want.id(),
                op: Op::Create,
            });
            continue;
        };
        if same(want, have) {
            continue;
        }
        let id = want.id();
        let op = match (want, have) {
            (FleetObject::Machine(w), FleetObject::Machine(h))
                if w.spec.os_generation.unwrap_or(0) > h.spec.os_generation.unwrap_or(0) =>
            {
                Op::Reinstall
            }
            _ => Op::Update,
        };
        let is_package = matches!(
            want,
            FleetObject::MachinePackageVersion(_) | FleetObject::ClusterPackageVersion(_)
        );
        if is_package && spec_of(want) != spec_of(have) {
            let used = in_use.get_or_insert_with(|| packages_in_use(live));
            if used.contains(id.name.as_str()) {
                set.immutable.push(id);
                continue;
            }
        }
        set.changes.push(Change { id, op });
    }
    let desired_keys: std::collections::HashSet<(&str, &str, &str)> =
        desired.iter().map(FleetObject::key).collect();
    for have in live {
        if desired_keys.contains(&have.key()) || !owned_by(have, fleet) {
            continue;
        }
        let annotations = have.meta().annotations.as_ref();
        if annotations
            .and_then(|a| a.get(PRUNE_ANNOTATION))
            .map(String::as_str)
            == Some(PRUNE_DISABLED)
        {
            set.kept.push(have.id());
        } else {
            set.changes.push(Change {
                id: have.id(),
                op: Op::Delete,
            });
        }
    }
    set.changes.sort();
    set.immutable.sort();
    set.kept.sort();
    set
}

/// Whether `have` already carries everything `want` sets.
pub fn same(want: &FleetObject, have: &FleetObject) -> bool {
    let specs_equal = match (want, have) {
        (FleetObject::Machine(w), FleetObject::Machine(h)) => w.spec == h.spec,
        (FleetObject::Cluster(w), FleetObject::Cluster(h)) => w.spec == h.spec,
        (FleetObject::MachinePackageVersion(w), FleetObject::MachinePackageVersion(h)) => {
            w.spec == h.spec
        }
        (FleetObject::ClusterPackageVersion(w), FleetObject::ClusterPackageVersion(h)) => {
            w.spec == h.spec
        }
        (FleetObject::RolloutPolicy(w), FleetObject::RolloutPolicy(h)) => w.spec == h.spec,
        _ => false,
    };
    specs_equal
        && subset(want.meta().labels.as_ref(), have.meta().labels.as_ref())
        && subset(
            want.meta().annotations.as_ref(),
            have.meta().annotations.as_ref(),
        )
}

fn subset(
    want: Option<&BTreeMap<String, String>>,
    have: Option<&BTreeMap<String, String>>,
) -> bool {
    want.into_iter()
        .flatten()
        .all(|(k, v)| have.and_then(|h| h.get(k)) == Some(v))
}

fn owned_by(object: &FleetObject, fleet: &str) -> bool {
    object
        .meta()
        .labels
        .as_ref()
        .and_then(|l| l.get(OWNER_LABEL))
        .map(String::as_str)
        == Some(fleet)
}

fn packages_in_use(live: &[FleetObject]) -> std::collections::HashSet<&str> {
    let mut used = std::collections::HashSet::new();
    for object in live {
        match object {
            FleetObject::Machine(m) => used.extend(m.spec.packages.values().map(String::as_str)),
            FleetObject::Cluster(c) => {
                used.insert(c.spec.package_version.as_str());
            }
            _ => {}
        }
    }
    used
}

/// The object as endstate would write it: spec, and the labels and annotations set. Also
/// what a review shows.
pub fn intent(object: &FleetObject) -> Value {
    let mut value = serde_json::to_value(object).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut value {
        map.remove("status");
        if let Some(Value::Object(meta)) = map.get_mut("metadata") {
            meta.retain(|k, _| {
                matches!(k.as_str(), "name" | "namespace" | "labels" | "annotations")
            });
        }
    }
    value
}

fn spec_of(object: &FleetObject) -> Value {
    serde_json::to_value(object)
        .map(|mut v| v["spec"].take())
        .unwrap_or(Value::Null)
}

/// The paths of the fields `want` sets differently from `have` (`spec.packages.kubelet`),
/// for reviews and logs; computed on demand, since a large change set rarely shows them all.
pub fn changed_paths(want: &FleetObject, have: &FleetObject) -> Vec<String> {
    let mut paths = Vec::new();
    let (w, h) = (intent(want), intent(have));
    walk(&w["spec"], &h["spec"], "spec", &mut paths);
    for field in ["labels", "annotations"] {
        if let Value::Object(wm) = &w["metadata"][field] {
            for (k, v) in wm {
                if h["metadata"][field].get(k) != Some(v) {
                    paths.push(format!("metadata.{field}.{k}"));
                }
            }
        }
    }
    paths
}

fn walk(want: &Value, have: &Value, at: &str, out: &mut Vec<String>) {
    match (want, have) {
        (Value::Object(w), Value::Object(h)) => {
            let mut keys: Vec<&String> = w.keys().chain(h.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                walk(
                    w.get(k).unwrap_or(&Value::Null),
                    h.get(k).unwrap_or(&Value::Null),
                    &format!("{at}.{k}"),
                    out,
                );
            }
        }
        (w, h) if w != h => out.push(at.to_owned()),
        _ => {}
    }
}

/// A unified diff of an object from `before` to `after` (either may be absent), as YAML.
pub fn unified(before: Option<&FleetObject>, after: Option<&FleetObject>) -> String {
    let text = |o: Option<&FleetObject>| {
        o.map(|o| endstate_core::yaml::to_string(&intent(o)))
            .unwrap_or_default()
    };
    let (old, new) = (text(before), text(after));
    let name = after
        .or(before)
        .map(|o| o.id().to_string())
        .unwrap_or_default();
    similar::TextDiff::from_lines(&old, &new)
        .unified_diff()
        .context_radius(3)
        .header(&format!("live/{name}"), &format!("git/{name}"))
        .to_string()
}
