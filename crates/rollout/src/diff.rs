//! Desired against live: what must change, and how it reads in a review.
//!
//! Only what endstate owns is compared, as server-side apply sees it: the fields of the spec,
//! labels and annotations the desired object sets, and those the commit endstate applied last
//! set and the desired object no longer does (an apply removes them). A field another manager
//! set and Git does not is theirs: it is no drift, and never makes a write. Status and
//! everything the server owns (`resourceVersion`, `uid`, `generation`, timestamps,
//! `managedFields`) never make a difference. A fleet whose live state matches its commit yields
//! an empty change set, so a no-op reconcile writes nothing.

use std::collections::{BTreeMap, HashSet};

use endstate_core::FleetObject;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use endstate_api::labels::{PRUNE_ANNOTATION, PRUNE_DISABLED};

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

/// What changes for `want` against the live object `have`, if anything; `last` is the object
/// as the commit endstate applied last rendered it, when known.
pub fn op(
    want: &FleetObject,
    have: Option<&FleetObject>,
    last: Option<&FleetObject>,
) -> Option<Op> {
    let Some(have) = have else {
        return Some(Op::Create);
    };
    if owned_same(want, have, last) {
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

/// Whether applying `want` would change nothing endstate owns in `have`: every field `want`
/// sets has its value there, and no field `last` set and `want` no longer does is still there.
/// Fields no applied commit set are another manager's.
pub fn owned_same(want: &FleetObject, have: &FleetObject, last: Option<&FleetObject>) -> bool {
    let spec = want.same_spec(have)
        || match (want, have, last) {
            (FleetObject::Machine(w), FleetObject::Machine(h), last) => {
                let last = match last {
                    Some(FleetObject::Machine(l)) => Some(&l.spec),
                    _ => None,
                };
                owned_machine(&w.spec, &h.spec, last)
            }
            _ => {
                let last = last.map(FleetObject::spec_value);
                owned_value(&want.spec_value(), &have.spec_value(), last.as_ref())
            }
        };
    let keys = |want: Option<&BTreeMap<String, String>>,
                have: Option<&BTreeMap<String, String>>,
                last: Option<&BTreeMap<String, String>>| {
        subset(want, have)
            && last.into_iter().flatten().all(|(k, _)| {
                want.is_some_and(|w| w.contains_key(k)) || !have.is_some_and(|h| h.contains_key(k))
            })
    };
    let (w, h, l) = (want.meta(), have.meta(), last.map(FleetObject::meta));
    spec && keys(
        w.labels.as_ref(),
        h.labels.as_ref(),
        l.and_then(|l| l.labels.as_ref()),
    ) && keys(
        w.annotations.as_ref(),
        h.annotations.as_ref(),
        l.and_then(|l| l.annotations.as_ref()),
    )
}

/// [`owned_same`] on a Machine's spec, field by field without going through JSON (every
/// Machine of a fleet-wide upgrade comes here): the same rules as [`owned_value`].
fn owned_machine(
    want: &endstate_api::MachineSpec,
    have: &endstate_api::MachineSpec,
    last: Option<&endstate_api::MachineSpec>,
) -> bool {
    fn optional<T: PartialEq>(
        want: &Option<T>,
        have: &Option<T>,
        last: Option<&Option<T>>,
    ) -> bool {
        match want {
            Some(_) => want == have,
            None => last.is_none_or(Option::is_none) || have.is_none(),
        }
    }
    // Destructured, so that a new field cannot be forgotten here.
    let endstate_api::MachineSpec {
        cluster,
        ip,
        hostname,
        idc,
        packages,
        readiness_gates,
        unschedulable,
        os_generation,
    } = want;
    *cluster == have.cluster
        && *ip == have.ip
        && *hostname == have.hostname
        && *idc == have.idc
        && packages
            .iter()
            .all(|(k, v)| have.packages.get(k) == Some(v))
        && last
            .into_iter()
            .flat_map(|l| l.packages.keys())
            .all(|k| packages.contains_key(k) || !have.packages.contains_key(k))
        && optional(
            readiness_gates,
            &have.readiness_gates,
            last.map(|l| &l.readiness_gates),
        )
        && optional(
            unschedulable,
            &have.unschedulable,
            last.map(|l| &l.unschedulable),
        )
        && optional(
            os_generation,
            &have.os_generation,
            last.map(|l| &l.os_generation),
        )
}

/// [`owned_same`] on JSON: maps are compared key by key (as server-side apply merges them),
/// anything else whole.
fn owned_value(want: &Value, have: &Value, last: Option<&Value>) -> bool {
    match (want, have) {
        (Value::Object(w), Value::Object(h)) => {
            w.iter().all(|(k, wv)| match h.get(k) {
                Some(hv) => owned_value(wv, hv, last.and_then(|l| l.get(k))),
                None => wv.is_null(),
            }) && last
                .and_then(Value::as_object)
                .into_iter()
                .flatten()
                .filter(|(k, _)| !w.contains_key(*k))
                .all(|(k, _)| h.get(k).is_none_or(Value::is_null))
        }
        (w, h) => w == h,
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use endstate_api::MachineSpec;

    fn spec(packages: &[(&str, &str)], unschedulable: Option<bool>) -> MachineSpec {
        let mut spec: MachineSpec = serde_json::from_value(serde_json::json!({
            "cluster": "c", "ip": "10.0.0.1", "hostname": "h", "idc": "a", "packages": {}
        }))
        .unwrap();
        for (k, v) in packages {
            spec.packages.insert((*k).to_owned(), (*v).to_owned());
        }
        spec.unschedulable = unschedulable;
        spec
    }

    #[test]
    fn the_machine_fast_path_agrees_with_the_json_rules() {
        let specs = [
            spec(&[("kubelet", "1")], None),
            spec(&[("kubelet", "2")], None),
            spec(&[("kubelet", "1"), ("agent", "1")], None),
            spec(&[("kubelet", "1")], Some(true)),
            spec(&[("kubelet", "1")], Some(false)),
            spec(&[], None),
        ];
        let json = |s: &MachineSpec| serde_json::to_value(s).unwrap();
        for want in &specs {
            for have in &specs {
                for last in specs.iter().map(Some).chain([None]) {
                    assert_eq!(
                        owned_machine(want, have, last),
                        owned_value(&json(want), &json(have), last.map(json).as_ref()),
                        "want {want:?} have {have:?} last {last:?}"
                    );
                }
            }
        }
        // Another manager's field is not a difference; one the last commit set is.
        let (plain, cordoned) = (&specs[0], &specs[3]);
        assert!(owned_machine(plain, cordoned, Some(plain)));
        assert!(!owned_machine(plain, cordoned, Some(cordoned)));
    }
}
