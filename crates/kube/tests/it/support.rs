//! What every test needs: the server, a namespace of its own, a backend, test objects.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use endstate_api::Machine;
use endstate_api::k8s_openapi::api::core::v1::Namespace;
use endstate_core::{DirTree, FleetObject};
use endstate_kube::{KubeLive, Settings, install_crds};
use endstate_testenv::TestServer;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};

/// The shared server with the CRDs installed, and a fresh namespace.
pub async fn namespace(prefix: &str) -> (Client, String) {
    let client = TestServer::shared().client().await;
    install_crds(&client, Duration::from_secs(60))
        .await
        .expect("install the CRDs");
    let name = namespace_on(&client, prefix).await;
    (client, name)
}

/// A fresh namespace on the server of `client`.
pub async fn namespace_on(client: &Client, prefix: &str) -> String {
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let name = format!("{prefix}-{}", SEQ.fetch_add(1, Ordering::Relaxed));
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let namespace = Namespace {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            ..Default::default()
        },
        ..Default::default()
    };
    namespaces
        .create(&PostParams::default(), &namespace)
        .await
        .unwrap_or_else(|err| panic!("create namespace {name}: {err}"));
    name
}

/// A backend for the fleet `prod` in `namespace` of `server`.
pub async fn live(server: &TestServer, namespace: &str) -> KubeLive {
    KubeLive::connect(server.config().await, Settings::new(namespace, "prod"))
        .await
        .expect("start the backend")
}

/// A Machine with one package.
pub fn machine(name: &str, ip: &str, kubelet: &str) -> FleetObject {
    Machine::test(name)
        .in_cluster("batch")
        .ip(ip)
        .hostname(name)
        .idc("idc-a")
        .package("kubelet", kubelet)
        .readiness_gate("KubeletReady")
        .build()
        .into()
}

/// The reference repository's prod overlay, rendered: every fleet kind, with labels and
/// annotations; the namespace is left to the fleet.
pub fn reference_fleet() -> Vec<FleetObject> {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/repo-layout");
    let tree = DirTree::open(root).expect("open examples/repo-layout");
    let rendered = endstate_core::render(&tree, "overlays/prod", Default::default())
        .unwrap_or_else(|diags| panic!("render the reference fleet: {diags:?}"));
    rendered
        .objects
        .into_iter()
        .map(|rendered| {
            let mut object = rendered.object;
            clear_namespace(&mut object);
            object
        })
        .collect()
}

fn clear_namespace(object: &mut FleetObject) {
    object.meta_mut().namespace = None;
}

/// The spec of an object, as JSON.
pub fn spec(object: &FleetObject) -> serde_json::Value {
    serde_json::to_value(object).unwrap()["spec"].clone()
}

/// Polls `check` until it holds, for at most `timeout`.
pub async fn eventually(what: &str, timeout: Duration, mut check: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + timeout;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
