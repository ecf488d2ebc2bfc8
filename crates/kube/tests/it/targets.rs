//! A business cluster reached through the kubeconfig Secret the meta-cluster holds for it:
//! a second API server, and why one cannot be used, each with its reason.

use std::collections::BTreeMap;
use std::time::Duration;

use endstate_api::k8s_openapi::api::core::v1::Secret;
use endstate_api::k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use endstate_kube::install_crds;
use endstate_kube::target::{self, TargetProblem};
use endstate_testenv::TestServer;
use kube::Api;
use kube::api::PostParams;

use crate::support::namespace;

async fn secret(meta: &kube::Client, ns: &str, name: &str, kubeconfig: &str) {
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        string_data: Some(BTreeMap::from([(
            "value".to_owned(),
            kubeconfig.to_owned(),
        )])),
        ..Default::default()
    };
    Api::<Secret>::namespaced(meta.clone(), ns)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
}

/// Connects to the business cluster `name`'s Secret says, and asks it for the fleet kinds.
async fn reach(meta: &kube::Client, ns: &str, name: &str) -> Result<(), TargetProblem> {
    let (config, _) = target::config(meta, ns, name).await?;
    let server = config.cluster_url.to_string();
    let client = kube::Client::try_from(config).unwrap();
    target::probe(&client, &server).await
}

#[tokio::test]
async fn a_business_cluster_is_reached_through_its_secret_or_says_why_not() {
    let (meta, ns) = namespace("targets").await;
    let business = tokio::task::spawn_blocking(TestServer::start)
        .await
        .unwrap();

    // Inline credentials: reached, but the kinds are not installed there yet.
    secret(
        &meta,
        &ns,
        "a-kubeconfig",
        &business.inline_kubeconfig(None).unwrap(),
    )
    .await;
    let err = reach(&meta, &ns, "a-kubeconfig").await.unwrap_err();
    assert_eq!(err.reason(), "TargetMissingCRDs", "{err}");
    assert!(
        err.message().contains("Machine and MachinePackageVersion"),
        "{err}"
    );
    install_crds(&business.client().await, Duration::from_secs(60))
        .await
        .unwrap();
    reach(&meta, &ns, "a-kubeconfig").await.unwrap();

    // No Secret.
    let err = reach(&meta, &ns, "b-kubeconfig").await.unwrap_err();
    assert_eq!(
        err,
        TargetProblem::SecretInvalid(format!("Secret {ns}/b-kubeconfig does not exist"))
    );

    // A kubeconfig that would run a program: refused, and nothing is run.
    let marker = std::env::temp_dir().join(format!("endstate-exec-{}", std::process::id()));
    let exec = business
        .inline_kubeconfig(None)
        .unwrap()
        .replace(
            "    token: ",
            &format!(
                "    exec:\n      apiVersion: client.authentication.k8s.io/v1\n      command: /usr/bin/touch\n      args: [{}]\n    x-token: ",
                marker.display()
            ),
        );
    secret(&meta, &ns, "c-kubeconfig", &exec).await;
    let err = reach(&meta, &ns, "c-kubeconfig").await.unwrap_err();
    assert_eq!(err.reason(), "TargetSecretInvalid", "{err}");
    assert!(err.message().contains("runs a program (exec)"), "{err}");
    assert!(!marker.exists(), "the Secret's program ran");

    // A token the business cluster does not know.
    secret(
        &meta,
        &ns,
        "d-kubeconfig",
        &business.inline_kubeconfig(Some("not-a-token")).unwrap(),
    )
    .await;
    let err = reach(&meta, &ns, "d-kubeconfig").await.unwrap_err();
    assert_eq!(err.reason(), "TargetUnauthorized", "{err}");

    // A server that does not answer.
    let closed = business
        .inline_kubeconfig(None)
        .unwrap()
        .replace(business.url(), "https://127.0.0.1:9");
    secret(&meta, &ns, "e-kubeconfig", &closed).await;
    let err = reach(&meta, &ns, "e-kubeconfig").await.unwrap_err();
    assert_eq!(err.reason(), "TargetUnreachable", "{err}");
}

/// A backend of business cluster `a`: it takes the objects as the Fleet renders them (in
/// its namespace `prod` of the meta-cluster), writes them to `fleet-machines` there saying
/// whose they are, reports them in the Fleet's namespace, counts a package version it finds
/// there (whoever wrote it) as cluster `a`'s copy, and keeps no Fleet status.
#[tokio::test]
async fn a_business_clusters_backend_writes_its_namespace_for_the_fleet() {
    use endstate_api::labels::{CLUSTER_LABEL, OWNER_LABEL, OWNER_NAMESPACE_LABEL};
    use endstate_api::{Machine, MachinePackageVersion};
    use endstate_core::{FleetObject, Kind, ObjectRef};
    use endstate_kube::{KubeLive, Settings, Target, install_target_crds};
    use endstate_rollout::{Live, LiveError};

    let business = tokio::task::spawn_blocking(TestServer::start)
        .await
        .unwrap();
    let admin = business.client().await;
    install_target_crds(&admin, Duration::from_secs(60))
        .await
        .unwrap();
    let ns = crate::support::namespace_on(&admin, "fleet-machines").await;
    let mut settings = Settings::new(&ns, "f");
    settings.target = Some(Target {
        cluster: "a".into(),
        fleet_namespace: "prod".into(),
    });
    let live = KubeLive::connect(business.config().await, settings)
        .await
        .unwrap();

    let machine: FleetObject = Machine::test("m-1")
        .in_cluster("a")
        .package("kubelet", "kubelet-1")
        .namespace("prod")
        .build()
        .into();
    let mut copy: FleetObject = MachinePackageVersion::test("kubelet-1")
        .namespace("prod")
        .build()
        .into();
    copy.meta_mut()
        .labels
        .get_or_insert_default()
        .insert(CLUSTER_LABEL.into(), "a".into());
    for result in live.apply(&[copy.clone(), machine.clone()]).await {
        assert_eq!(result.unwrap().generation, 1);
    }
    let written = Api::<Machine>::namespaced(admin.clone(), &ns)
        .get("m-1")
        .await
        .unwrap();
    let labels = written.metadata.labels.unwrap_or_default();
    assert_eq!(labels[OWNER_LABEL], "f");
    assert_eq!(labels[OWNER_NAMESPACE_LABEL], "prod");

    // A package version someone else put there is this cluster's copy.
    let other = MachinePackageVersion::test("kubelet-2").build();
    Api::<MachinePackageVersion>::namespaced(admin.clone(), &ns)
        .create(&PostParams::default(), &other)
        .await
        .unwrap();
    let theirs = ObjectRef::new(Kind::MachinePackageVersion, "prod", "kubelet-2").in_cluster("a");
    crate::support::eventually("the copy is cached", Duration::from_secs(10), async || {
        live.get(std::slice::from_ref(&theirs)).await.unwrap()[0].is_some()
    })
    .await;
    let ids: std::collections::BTreeSet<String> = live
        .snapshot()
        .await
        .unwrap()
        .iter()
        .map(|o| format!("{}/{}", o.kind(), o.name()) + &format!("@{}", o.cluster()))
        .collect();
    assert_eq!(
        ids.into_iter().collect::<Vec<_>>(),
        [
            "Machine/m-1@",
            "MachinePackageVersion/kubelet-1@a",
            "MachinePackageVersion/kubelet-2@a"
        ]
    );
    let found = live.get(&[machine.id(), copy.id()]).await.unwrap();
    assert!(found.iter().all(Option::is_some), "{found:?}");
    let changed: Vec<String> = live.changes().ids.iter().map(ToString::to_string).collect();
    for id in [
        "Machine/prod/m-1".to_owned(),
        "MachinePackageVersion/prod/kubelet-1@a".to_owned(),
        theirs.to_string(),
    ] {
        assert!(changed.contains(&id), "{id} not in {changed:?}");
    }
    let err = live.load_status().await.unwrap_err();
    assert!(
        matches!(&err, LiveError::Fatal(m) if m.contains("keeps no Fleet status")),
        "{err}"
    );
}
