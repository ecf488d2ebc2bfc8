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
