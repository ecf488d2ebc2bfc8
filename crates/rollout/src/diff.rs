//! Desired against live: what must change, and how it reads in a review.
//!
//! Only what endstate sets is compared: the spec, and the labels and annotations the desired
//! object carries. Status and everything the server owns (`resourceVersion`, `uid`,
//! `generation`, timestamps, `managedFields`) never make a difference, and labels other
//! tools add are theirs. A fleet whose live state matches its commit yields an empty change
//! set, so a no-op reconcile writes nothing.

use std::collections::{BTreeMap, HashSet};

use endstate_core::FleetObject;
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

/// What changes for `want` against the live object `have`, if anything.
pub fn op(want: &FleetObject, have: Option<&FleetObject>) -> Option<Op> {
    let Some(have) = have else {
        return Some(Op::Create);
    };
    if same(want, have) {
        return None;
    }
    Some(match (want, have) {
        (FleetObject::Machine(w), FleetObject::Machine(h))
            if w.spec.os_generation.unwrap_or(0) > h.spec.os_generation.unwrap_or(0) =>
        {
            Op::Reinstall
        }
        _ => Op::Update,
    })
}

/// Whether `have` already carries everything `want` sets.
pub fn same(want: &FleetObject, have: &FleetObject) -> bool {
    want.same_spec(have)
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

/// Whether the object carries the fleet's ownership label: only such objects are pruned.
pub fn owned_by(object: &FleetObject, fleet: &str) -> bool {
    object
        .meta()
        .labels
        .as_ref()
        .and_then(|l| l.get(OWNER_LABEL))
        .map(String::as_str)
        == Some(fleet)
}

/// Whether the object is annotated to stay when removed from Git.
pub fn prune_disabled(object: &FleetObject) -> bool {
    object
        .meta()
        .annotations
        .as_ref()
        .and_then(|a| a.get(PRUNE_ANNOTATION))
        .map(String::as_str)
        == Some(PRUNE_DISABLED)
}

/// The package versions live Machines and Clusters point at.
pub fn packages_in_use(live: &[FleetObject]) -> HashSet<&str> {
    let mut used = HashSet::new();
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
