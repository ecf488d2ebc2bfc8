//! Server-side apply, reads, conflicts and deletes through `KubeLive`.

use std::time::Duration;

use endstate_api::Machine;
use endstate_api::labels::OWNER_LABEL;
use endstate_core::{FleetObject, Kind, ObjectRef};
use endstate_rollout::{Live, LiveError};
use endstate_testenv::TestServer;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;

use crate::support::{eventually, live, machine, namespace, reference_fleet, spec};

#[tokio::test]
async fn every_fleet_kind_round_trips() {
    let (_, ns) = namespace("roundtrip").await;
    let server = TestServer::shared();
    let fleet = reference_fleet();
    let kinds: std::collections::BTreeSet<_> = fleet.iter().map(FleetObject::kind).collect();
    assert_eq!(kinds.len(), 5, "{kinds:?}");

    let backend = live(server, &ns).await;
    for (object, result) in fleet.iter().zip(backend.apply(&fleet).await) {
        let applied = result.unwrap_or_else(|err| panic!("apply {}: {err}", object.id()));
        assert_eq!(applied.generation, 1, "{}", object.id());
    }

    // A backend started afterwards lists what the first one wrote.
    let fresh = live(server, &ns).await;
    let snapshot = fresh.snapshot().await.unwrap();
    assert_eq!(snapshot.len(), fleet.len());
    for desired in &fleet {
        let id = ObjectRef::new(desired.kind(), &ns, &desired.meta().name.clone().unwrap());
        let got = snapshot
            .iter()
            .find(|o| o.id() == id)
            .unwrap_or_else(|| panic!("{id} missing from the snapshot"));
        assert_eq!(spec(got), spec(desired), "{id}");
        let labels = got.meta().labels.clone().unwrap_or_default();
        assert_eq!(
            labels.get(OWNER_LABEL).map(String::as_str),
            Some("prod"),
            "{id}"
        );
        for (key, value) in desired.meta().labels.iter().flatten() {
            assert_eq!(labels.get(key), Some(value), "{id}: label {key}");
        }
        assert_eq!(got.meta().annotations, desired.meta().annotations, "{id}");
        assert!(fresh.is_current(desired), "{id} should need no write");
    }
}

#[tokio::test]
async fn apply_returns_the_generation_it_produced_and_a_no_op_keeps_it() {
    let (_, ns) = namespace("generation").await;
    let backend = live(TestServer::shared(), &ns).await;
    let id = ObjectRef::new(Kind::Machine, &ns, "m-1");

    let first = backend
        .apply(&[machine("m-1", "10.0.0.1", "kubelet-1.27")])
        .await;
    assert_eq!(first[0].as_ref().unwrap().generation, 1);
    let again = backend
        .apply(&[machine("m-1", "10.0.0.1", "kubelet-1.27")])
        .await;
    assert_eq!(
        again[0].as_ref().unwrap().generation,
        1,
        "a no-op apply bumped the generation"
    );

    let upgraded = machine("m-1", "10.0.0.1", "kubelet-1.28");
    let second = backend.apply(std::slice::from_ref(&upgraded)).await;
    assert_eq!(second[0].as_ref().unwrap().generation, 2);
    // Read-your-writes: the very next read sees the new generation and spec.
    let got = backend
        .get(std::slice::from_ref(&id))
        .await
        .unwrap()
        .remove(0)
        .unwrap();
    assert_eq!(got.meta().generation, Some(2));
    assert_eq!(spec(&got), spec(&upgraded));
    assert!(backend.is_current(&upgraded));
    assert!(!backend.is_current(&machine("m-1", "10.0.0.1", "kubelet-1.27")));

    // The cache catches up by itself, and then agrees.
    eventually(
        "the cache sees generation 2",
        Duration::from_secs(10),
        async || {
            backend.cached_len() == 1
                && backend.snapshot().await.unwrap()[0].meta().generation == Some(2)
        },
    )
    .await;
    assert_eq!(backend.stats().applied, 3);
}

#[tokio::test]
async fn objects_written_by_others_reach_the_cache() {
    let (client, ns) = namespace("watch").await;
    let backend = live(TestServer::shared(), &ns).await;
    let api: Api<Machine> = Api::namespaced(client, &ns);
    let FleetObject::Machine(other) = machine("made-elsewhere", "10.0.0.9", "kubelet-1.27") else {
        unreachable!()
    };
    api.create(&PostParams::default(), &other).await.unwrap();
    let id = ObjectRef::new(Kind::Machine, "", "made-elsewhere");
    eventually(
        "the watch delivers the new Machine",
        Duration::from_secs(10),
        async || backend.get(std::slice::from_ref(&id)).await.unwrap()[0].is_some(),
    )
    .await;
}

#[tokio::test]
async fn another_appliers_field_is_a_reported_conflict() {
    let (client, ns) = namespace("conflict").await;
    let backend = live(TestServer::shared(), &ns).await;
    backend
        .apply(&[machine("m-1", "10.0.0.1", "kubelet-1.27")])
        .await[0]
        .as_ref()
        .unwrap();

    // A second declarative owner claims the IP with another value.
    let api: Api<Machine> = Api::namespaced(client, &ns);
    let claim = json!({
        "apiVersion": "fleet.endstate.dev/v1alpha1",
        "kind": "Machine",
        "metadata": {"name": "m-1"},
        "spec": {"ip": "10.9.9.9"},
    });
    api.patch(
        "m-1",
        &PatchParams::apply("ipam-controller").force(),
        &Patch::Apply(&claim),
    )
    .await
    .unwrap();

    let result = backend
        .apply(&[machine("m-1", "10.0.0.1", "kubelet-1.27")])
        .await
        .remove(0);
    match result {
        Err(LiveError::Conflict { object, message }) => {
            assert_eq!(object, ObjectRef::new(Kind::Machine, &ns, "m-1"));
            assert!(
                message.contains(".spec.ip") && message.contains("ipam-controller"),
                "{message}"
            );
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert_eq!(
        api.get("m-1").await.unwrap().spec.ip,
        "10.9.9.9",
        "the other owner's value was forced over"
    );
    assert_eq!(backend.stats().conflicts, 1);
}

#[tokio::test]
async fn an_edit_of_a_field_endstate_sets_is_taken_back() {
    let (client, ns) = namespace("drift").await;
    let backend = live(TestServer::shared(), &ns).await;
    let desired = machine("m-1", "10.0.0.1", "kubelet-1.27");
    backend.apply(std::slice::from_ref(&desired)).await[0]
        .as_ref()
        .unwrap();

    // `kubectl edit`-style drift: an update, not an apply.
    let api: Api<Machine> = Api::namespaced(client, &ns);
    let edit = PatchParams {
        field_manager: Some("kubectl-edit".into()),
        ..Default::default()
    };
    api.patch(
        "m-1",
        &edit,
        &Patch::Merge(json!({"spec": {"ip": "10.6.6.6"}})),
    )
    .await
    .unwrap();
    eventually(
        "the cache sees the drift",
        Duration::from_secs(10),
        async || !backend.is_current(&desired),
    )
    .await;

    let applied = backend
        .apply(std::slice::from_ref(&desired))
        .await
        .remove(0)
        .unwrap();
    assert_eq!(applied.generation, 3);
    let live = api.get("m-1").await.unwrap();
    assert_eq!(live.spec.ip, "10.0.0.1");
    let owners: Vec<_> = live
        .metadata
        .managed_fields
        .unwrap()
        .into_iter()
        .filter(|m| {
            m.fields_v1
                .as_ref()
                .is_some_and(|f| f.0.pointer("/f:spec/f:ip").is_some())
        })
        .filter_map(|m| m.manager)
        .collect();
    assert_eq!(owners, [format!("endstate/{ns}/prod")]);
    assert_eq!(backend.stats().forced, 1);
}

#[tokio::test]
async fn delete_removes_and_deleting_again_succeeds() {
    let (_, ns) = namespace("delete").await;
    let backend = live(TestServer::shared(), &ns).await;
    let objects = [
        machine("keep", "10.0.0.1", "k"),
        machine("drop", "10.0.0.2", "k"),
    ];
    for result in backend.apply(&objects).await {
        result.unwrap();
    }
    let drop = ObjectRef::new(Kind::Machine, "", "drop");
    for result in backend.delete(&[drop.clone(), drop.clone()]).await {
        result.unwrap();
    }
    // Read-your-writes for deletes, too.
    assert!(backend.get(std::slice::from_ref(&drop)).await.unwrap()[0].is_none());
    let names: Vec<String> = backend
        .snapshot()
        .await
        .unwrap()
        .iter()
        .map(|o| o.meta().name.clone().unwrap())
        .collect();
    assert_eq!(names, ["keep"]);
    let fresh = live(TestServer::shared(), &ns).await;
    assert_eq!(fresh.cached_len(), 1);
}

#[tokio::test]
async fn objects_of_another_namespace_are_refused_naming_them() {
    let (_, ns) = namespace("elsewhere").await;
    let backend = live(TestServer::shared(), &ns).await;
    let mut m = machine("m-1", "10.0.0.1", "k");
    m.meta_mut().namespace = Some("kube-system".into());
    let result = backend.apply(&[m]).await.remove(0);
    let err = result.unwrap_err();
    assert!(matches!(err, LiveError::Fatal(_)));
    assert!(err.to_string().contains("Machine/kube-system/m-1"), "{err}");
    let err = backend
        .get(&[ObjectRef::new(Kind::Machine, "kube-system", "m-1")])
        .await
        .unwrap_err();
    assert!(err.to_string().contains(&ns), "{err}");
}

/// Objects written when every Fleet applied as `endstate` move to the Fleet's own field
/// manager on their next write: the write is not refused as another applier's, and a label
/// the old writes set and the commit no longer sets is removed.
#[tokio::test]
async fn objects_of_the_shared_field_manager_move_to_the_fleets_own() {
    let (client, ns) = namespace("manager").await;
    let api: Api<Machine> = Api::namespaced(client, &ns);
    let old = json!({
        "apiVersion": "fleet.endstate.dev/v1alpha1", "kind": "Machine",
        "metadata": {"name": "m-1", "namespace": ns,
                     "labels": {OWNER_LABEL: "prod", "tier": "gold"}},
        "spec": {"cluster": "batch", "ip": "10.0.0.1", "hostname": "m-1", "idc": "idc-a",
                 "packages": {"kubelet": "kubelet-1.27"}, "readinessGates": ["KubeletReady"]},
    });
    api.patch(
        "m-1",
        &PatchParams::apply(endstate_api::labels::FIELD_MANAGER),
        &Patch::Apply(&old),
    )
    .await
    .unwrap();

    let backend = live(TestServer::shared(), &ns).await;
    let result = backend
        .apply(&[machine("m-1", "10.0.0.1", "kubelet-1.28")])
        .await;
    result[0].as_ref().expect("the write is the Fleet's own");
    let got = api.get("m-1").await.unwrap();
    assert_eq!(got.spec.packages["kubelet"], "kubelet-1.28");
    let managers: Vec<(String, String)> = got
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .map(|e| {
            (
                e.manager.clone().unwrap_or_default(),
                e.operation.clone().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        managers,
        [(format!("endstate/{ns}/prod"), "Apply".to_owned())],
        "{managers:?}"
    );
    let labels = got.metadata.labels.unwrap_or_default();
    assert!(!labels.contains_key("tier"), "{labels:?}");

    // Without a conflicting value (the commit only dropped the label), the write is repeated
    // once moved, so that the label still goes.
    let mut same = old.clone();
    same["metadata"]["name"] = json!("m-2");
    same["spec"]["packages"]["kubelet"] = json!("kubelet-1.28");
    same["spec"]["hostname"] = json!("m-2");
    api.patch(
        "m-2",
        &PatchParams::apply(endstate_api::labels::FIELD_MANAGER),
        &Patch::Apply(&same),
    )
    .await
    .unwrap();
    backend
        .apply(&[machine("m-2", "10.0.0.1", "kubelet-1.28")])
        .await[0]
        .as_ref()
        .expect("the write is the Fleet's own");
    let got = api.get("m-2").await.unwrap();
    let labels = got.metadata.labels.unwrap_or_default();
    assert!(!labels.contains_key("tier"), "{labels:?}");
    assert_eq!(backend.stats().conflicts, 0);
}
