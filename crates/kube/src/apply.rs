//! Server-side apply: what endstate sends, and what it does when another field manager holds
//! a field it sets.
//!
//! The body holds exactly the fields the desired object sets — `apiVersion`, `kind`, name,
//! namespace, labels (plus the fleet's ownership label), annotations and `spec` — never
//! `status` or server metadata, so endstate owns those fields and nothing else.
//!
//! Ownership: Git is the authority for every field a manifest sets. When an apply conflicts,
//! the live object's `managedFields` say who holds each conflicting field:
//!
//! - held through an **update** (`kubectl edit`, `kubectl patch`, a client's PUT): that is
//!   drift on a field endstate declares, and the apply is retried with `force`, which takes
//!   the fields back;
//! - held through another **apply** (another declarative owner): two owners disagree, and
//!   the conflict is reported, naming the fields and the managers, without forcing — unless
//!   that owner is another Fleet and the object is handed over to this one
//!   (`fleet.endstate.dev/transfer-to`).
//!
//! Each Fleet applies under its own field manager (`endstate/<namespace>/<name>`). Objects
//! written under the one manager every Fleet shared before (`endstate`) are moved to the
//! Fleet's own on their next write: the old manager's entry is merged into the Fleet's, so
//! that a field the old writes set and the commit no longer sets is still removed.

use endstate_api::k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;
use endstate_api::labels::{FIELD_MANAGER, OWNER_LABEL, OWNER_NAMESPACE_LABEL};
use endstate_core::{FleetObject, ObjectRef};
use endstate_rollout::LiveError;
use kube::core::Status;
use serde_json::{Map, Value};

/// Where a backend writes: `namespace` of its API server, for `fleet`; with `target`, a
/// business cluster, whose objects the Fleet renders in its own namespace.
#[derive(Clone, Debug)]
pub(crate) struct Scope<'a> {
    pub namespace: &'a str,
    pub fleet: &'a str,
    pub target: Option<&'a crate::Target>,
}

impl Scope<'_> {
    /// Whether `namespace` (of an object or identity) is where this backend writes: its
    /// own, unset (the Fleet's), or the Fleet's namespace when it writes a business cluster.
    fn takes(&self, namespace: &str) -> bool {
        namespace.is_empty()
            || namespace == self.namespace
            || self.target.is_some_and(|t| t.fleet_namespace == namespace)
    }

    fn refusal(&self, id: &ObjectRef, doing: &str) -> LiveError {
        LiveError::Fatal(format!(
            "cannot {doing} {id}: it is in namespace {:?}, and this fleet writes only to {:?}",
            id.namespace, self.namespace
        ))
    }
}

/// The body of the server-side apply of `object` into `scope`.
pub(crate) fn apply_body(object: &FleetObject, scope: &Scope<'_>) -> Result<Value, LiveError> {
    let (namespace, fleet) = (scope.namespace, scope.fleet);
    let id = object.id();
    if id.name.is_empty() {
        return Err(LiveError::Fatal(format!(
            "cannot apply {id}: it has no name"
        )));
    }
    if !scope.takes(&id.namespace) {
        return Err(scope.refusal(&id, "apply"));
    }
    if let Some(target) = scope.target
        && !id.cluster.is_empty()
        && id.cluster != target.cluster
    {
        return Err(LiveError::Fatal(format!(
            "cannot apply {id} to business cluster {}",
            target.cluster
        )));
    }
    let mut value = serde_json::to_value(object)
        .map_err(|err| LiveError::Fatal(format!("cannot serialise {id}: {err}")))?;
    let Value::Object(map) = &mut value else {
        return Err(LiveError::Fatal(format!(
            "cannot apply {id}: it does not serialise to an object"
        )));
    };
    map.remove("status");
    let meta = object.meta();
    let mut labels: Map<String, Value> = meta
        .labels
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    labels.insert(OWNER_LABEL.to_owned(), Value::String(fleet.to_owned()));
    if let Some(target) = scope.target {
        labels.insert(
            OWNER_NAMESPACE_LABEL.to_owned(),
            Value::String(target.fleet_namespace.clone()),
        );
    }
    let mut metadata = Map::new();
    metadata.insert("name".to_owned(), Value::String(id.name.clone()));
    metadata.insert("namespace".to_owned(), Value::String(namespace.to_owned()));
    metadata.insert("labels".to_owned(), Value::Object(labels));
    if let Some(annotations) = meta.annotations.as_ref().filter(|a| !a.is_empty()) {
        metadata.insert(
            "annotations".to_owned(),
            annotations
                .iter()
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect(),
        );
    }
    map.insert("metadata".to_owned(), Value::Object(metadata));
    Ok(value)
}

/// Whether `live` already holds every field of `body`: applying `body` would change nothing.
pub(crate) fn contains(live: &Value, body: &Value) -> bool {
    match (live, body) {
        (Value::Object(live), Value::Object(body)) => {
            body.iter().all(|(key, want)| match live.get(key) {
                Some(have) => contains(have, want),
                None => want.is_null(),
            })
        }
        (live, body) => live == body,
    }
}

/// One field another manager holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Contested {
    /// The other field manager.
    pub manager: String,
    /// The field, as the server names it (`.spec.ip`).
    pub field: String,
}

/// The fields an apply conflicted on, from the server's 409.
pub(crate) fn contested(status: &Status) -> Vec<Contested> {
    let Some(details) = &status.details else {
        return Vec::new();
    };
    details
        .causes
        .iter()
        .filter(|cause| cause.reason == "FieldManagerConflict")
        .filter_map(|cause| {
            // "conflict with \"kubectl-edit\" using fleet.endstate.dev/v1alpha1"
            let manager = cause.message.split('"').nth(1)?;
            Some(Contested {
                manager: manager.to_owned(),
                field: cause.field.clone(),
            })
        })
        .collect()
}

/// The contested fields that another manager holds through an apply of its own: those are
/// real disagreements, never forced.
pub(crate) fn applied_by_others(
    managed: &[ManagedFieldsEntry],
    contested: &[Contested],
) -> Vec<Contested> {
    contested
        .iter()
        .filter(|c| {
            managed.iter().any(|entry| {
                entry.manager.as_deref() == Some(c.manager.as_str())
                    && entry.operation.as_deref() == Some("Apply")
                    && entry
                        .fields_v1
                        .as_ref()
                        .is_none_or(|f| holds(&f.0, &c.field))
            })
        })
        .cloned()
        .collect()
}

/// Whether every contested field is held by the field manager all Fleets shared before each
/// had its own: the object is to be moved to this Fleet's manager, not forced.
pub(crate) fn only_legacy(disagreements: &[Contested]) -> bool {
    !disagreements.is_empty() && disagreements.iter().all(|c| c.manager == FIELD_MANAGER)
}

/// Whether every contested field is held by another Fleet.
pub(crate) fn only_fleets(disagreements: &[Contested]) -> bool {
    !disagreements.is_empty()
        && disagreements
            .iter()
            .all(|c| c.manager.starts_with(&format!("{FIELD_MANAGER}/")))
}

/// The managed fields with the shared manager's applies merged into `ours`, if there are any.
pub(crate) fn absorb_legacy(
    managed: &[ManagedFieldsEntry],
    ours: &str,
) -> Option<Vec<ManagedFieldsEntry>> {
    let is_legacy = |e: &ManagedFieldsEntry| {
        e.manager.as_deref() == Some(FIELD_MANAGER) && e.operation.as_deref() == Some("Apply")
    };
    if !managed.iter().any(is_legacy) {
        return None;
    }
    let mut kept: Vec<ManagedFieldsEntry> =
        managed.iter().filter(|e| !is_legacy(e)).cloned().collect();
    for legacy in managed.iter().filter(|e| is_legacy(e)) {
        let same = |e: &&mut ManagedFieldsEntry| {
            e.manager.as_deref() == Some(ours)
                && e.operation.as_deref() == Some("Apply")
                && e.api_version == legacy.api_version
                && e.subresource == legacy.subresource
        };
        match kept.iter_mut().find(same) {
            Some(entry) => {
                if let (Some(into), Some(from)) = (&mut entry.fields_v1, &legacy.fields_v1) {
                    union(&mut into.0, &from.0);
                }
            }
            None => {
                let mut renamed = legacy.clone();
                renamed.manager = Some(ours.to_owned());
                kept.push(renamed);
            }
        }
    }
    Some(kept)
}

/// Adds every field of the `fieldsV1` set `from` to `into`.
fn union(into: &mut Value, from: &Value) {
    let (Value::Object(into), Value::Object(from)) = (into, from) else {
        return;
    };
    for (key, value) in from {
        match into.get_mut(key) {
            Some(have) => union(have, value),
            None => {
                into.insert(key.clone(), value.clone());
            }
        }
    }
}

/// Whether a `fieldsV1` set holds the field at a dotted path. A path it cannot follow (list
/// items by key) counts as held: unsure means not forcing.
fn holds(fields: &Value, path: &str) -> bool {
    let mut node = fields;
    for segment in path.trim_start_matches('.').split('.') {
        if segment.contains(['[', '=']) {
            return true;
        }
        match node.get(format!("f:{segment}")) {
            Some(next) => node = next,
            None => return false,
        }
    }
    true
}

/// The message of a conflict endstate does not force.
pub(crate) fn conflict_message(disagreements: &[Contested]) -> String {
    let fields: Vec<String> = disagreements
        .iter()
        .map(|c| format!("{} (applied by field manager {:?})", c.field, c.manager))
        .collect();
    format!(
        "{} also set by another applier with a different value; endstate forces only over \
         edits, not over another owner: remove the field from one of the two sources",
        fields.join(", ")
    )
}

/// The identity in the namespace `scope` writes: empty means the fleet's namespace, another
/// one is refused.
pub(crate) fn in_namespace(id: &ObjectRef, scope: &Scope<'_>) -> Result<ObjectRef, LiveError> {
    if scope.takes(&id.namespace) {
        Ok(ObjectRef::new(id.kind, scope.namespace, &id.name).in_cluster(&id.cluster))
    } else {
        Err(scope.refusal(id, "use"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use endstate_api::k8s_openapi::apimachinery::pkg::apis::meta::v1::FieldsV1;
    use endstate_api::{Machine, MachinePackageVersion, MachineStatus};
    use kube::core::response::{StatusCause, StatusDetails};
    use serde_json::json;

    fn machine() -> FleetObject {
        let mut machine = Machine::test("m-1")
            .in_cluster("c")
            .ip("10.0.0.1")
            .hostname("h")
            .idc("a")
            .package("kubelet", "kubelet-1")
            .label("tier", "gold")
            .build();
        machine.metadata.resource_version = Some("42".into());
        machine.metadata.generation = Some(3);
        machine.status = Some(MachineStatus {
            observed_generation: Some(3),
            ..Default::default()
        });
        FleetObject::from(machine)
    }

    /// Writes to `namespace` of the Fleet's own API server, for Fleet `prod`.
    fn local(namespace: &str) -> Scope<'_> {
        Scope {
            namespace,
            fleet: "prod",
            target: None,
        }
    }

    /// A Machine the Fleet `prod` renders in its namespace `fleet-a` goes to `machines` of its
    /// business cluster, saying whose it is; a package version's copy for another business
    /// cluster is refused.
    #[test]
    fn a_business_clusters_body_names_the_fleets_namespace() {
        let target = crate::Target {
            cluster: "a".into(),
            fleet_namespace: "fleet-a".into(),
        };
        let scope = Scope {
            namespace: "machines",
            fleet: "prod",
            target: Some(&target),
        };
        let mut object = machine();
        object.meta_mut().namespace = Some("fleet-a".into());
        let body = apply_body(&object, &scope).unwrap();
        assert_eq!(body["metadata"]["namespace"], "machines");
        assert_eq!(
            body["metadata"]["labels"],
            json!({"tier": "gold", "fleet.endstate.dev/fleet": "prod",
                   "fleet.endstate.dev/fleet-namespace": "fleet-a"})
        );
        let mut copy: FleetObject = MachinePackageVersion::test("kubelet-1").build().into();
        copy.meta_mut()
            .labels
            .get_or_insert_default()
            .insert(endstate_api::labels::CLUSTER_LABEL.into(), "b".into());
        let err = apply_body(&copy, &scope).unwrap_err().to_string();
        assert!(err.contains("to business cluster a"), "{err}");
        object.meta_mut().namespace = Some("elsewhere".into());
        assert!(apply_body(&object, &scope).is_err());
    }

    #[test]
    fn the_body_holds_only_what_the_object_sets_plus_the_owner_label() {
        let body = apply_body(&machine(), &local("fleet-a")).unwrap();
        assert_eq!(
            body,
            json!({
                "apiVersion": "fleet.endstate.dev/v1alpha1",
                "kind": "Machine",
                "metadata": {
                    "name": "m-1",
                    "namespace": "fleet-a",
                    "labels": {"tier": "gold", "fleet.endstate.dev/fleet": "prod"},
                },
                "spec": {
                    "cluster": "c", "ip": "10.0.0.1", "hostname": "h", "idc": "a",
                    "packages": {"kubelet": "kubelet-1"},
                },
            })
        );
    }

    #[test]
    fn another_namespace_is_refused_with_the_object_named() {
        let mut object = machine();
        object.meta_mut().namespace = Some("elsewhere".into());
        let err = apply_body(&object, &local("fleet-a"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("Machine/elsewhere/m-1") && err.contains("fleet-a"),
            "{err}"
        );
    }

    #[test]
    fn the_shared_managers_applies_move_to_the_fleets_own() {
        let ours = "endstate/ns/f";
        let edit = entry("kubectl-edit", "Update", json!({"f:spec": {"f:ip": {}}}));
        let old = entry(
            FIELD_MANAGER,
            "Apply",
            json!({"f:spec": {"f:packages": {"f:a": {}, "f:b": {}}}}),
        );
        // Never written by the Fleet's own manager: the entry is renamed.
        let moved = absorb_legacy(&[edit.clone(), old.clone()], ours).unwrap();
        assert_eq!(moved[0], edit);
        assert_eq!(moved[1].manager.as_deref(), Some(ours));
        assert_eq!(moved[1].fields_v1, old.fields_v1);
        // Written by both: the fields are merged into the Fleet's entry.
        let own = entry(
            ours,
            "Apply",
            json!({"f:spec": {"f:packages": {"f:a": {}, "f:c": {}}}}),
        );
        let merged = absorb_legacy(&[old, own, edit.clone()], ours).unwrap();
        assert_eq!(merged.len(), 2);
        assert_eq!(
            merged[0].fields_v1.as_ref().unwrap().0,
            json!({"f:spec": {"f:packages": {"f:a": {}, "f:b": {}, "f:c": {}}}})
        );
        assert_eq!(absorb_legacy(&[edit], ours), None);
    }

    #[test]
    fn contains_is_true_exactly_when_every_set_field_matches() {
        let live = json!({"spec": {"ip": "1", "packages": {"a": "x", "b": "y"}}, "status": {}});
        assert!(contains(
            &live,
            &json!({"spec": {"ip": "1", "packages": {"a": "x"}}})
        ));
        assert!(!contains(&live, &json!({"spec": {"ip": "2"}})));
        assert!(!contains(&live, &json!({"spec": {"hostname": "h"}})));
        assert!(!contains(&json!({"l": [1, 2]}), &json!({"l": [1]})));
    }

    fn conflict(manager: &str, field: &str) -> Status {
        Status {
            code: 409,
            reason: "Conflict".into(),
            details: Some(StatusDetails {
                causes: vec![StatusCause {
                    reason: "FieldManagerConflict".into(),
                    message: format!(
                        "conflict with \"{manager}\" using fleet.endstate.dev/v1alpha1"
                    ),
                    field: field.into(),
                }],
                name: String::new(),
                group: String::new(),
                kind: String::new(),
                uid: String::new(),
                retry_after_seconds: 0,
            }),
            ..Default::default()
        }
    }

    fn entry(manager: &str, operation: &str, fields: Value) -> ManagedFieldsEntry {
        ManagedFieldsEntry {
            manager: Some(manager.into()),
            operation: Some(operation.into()),
            fields_v1: Some(FieldsV1(fields)),
            ..Default::default()
        }
    }

    #[test]
    fn edits_are_forced_over_and_other_appliers_are_not() {
        let contested = contested(&conflict("other", ".spec.ip"));
        assert_eq!(
            contested,
            vec![Contested {
                manager: "other".into(),
                field: ".spec.ip".into()
            }]
        );
        let ip = json!({"f:spec": {"f:ip": {}}});
        let edited = [entry("other", "Update", ip.clone())];
        assert!(applied_by_others(&edited, &contested).is_empty());
        let applied = [entry("other", "Apply", ip)];
        assert_eq!(applied_by_others(&applied, &contested), contested);
        // The same manager applying some other field, having edited this one: still an edit.
        let mixed = [
            entry("other", "Apply", json!({"f:spec": {"f:hostname": {}}})),
            entry("other", "Update", json!({"f:spec": {"f:ip": {}}})),
        ];
        assert!(applied_by_others(&mixed, &contested).is_empty());
        let message = conflict_message(&contested);
        assert!(
            message.contains(".spec.ip") && message.contains("\"other\""),
            "{message}"
        );
    }
}
