//! `deploy/target/` installed in a business cluster (a second API server) with kubectl: its
//! ServiceAccount may do what endstate does there and nothing more, and the kubeconfig Secret
//! made from its token as docs/operations.md says reaches the cluster.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};

use endstate_api::k8s_openapi::api::core::v1::Secret;
use endstate_testenv::TestServer;
use kube::Api;
use kube::api::PostParams;

use crate::support::{can_i, kube_namespace_on, kubectl, workspace};

/// sim-agent operates what the server it is pointed at serves: a business cluster's
/// Machines (it has no Clusters); against a server with neither, it says so and stops.
#[test]
fn sim_agent_operates_the_machines_of_a_business_cluster() {
    let business = TestServer::start();
    let admin = business.kubeconfig();
    let agent = |namespace: &str| {
        Command::new(env!("CARGO_BIN_EXE_endstate"))
            .args([
                "sim-agent",
                "--speed",
                "50",
                "--namespace",
                namespace,
                "--kubeconfig",
            ])
            .arg(admin)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let out = agent("fleet-machines").wait_with_output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("serves neither Machines nor Clusters"),
        "{err}"
    );

    let (code, out, err) = install_target(admin);
    assert_eq!(code, 0, "{out}{err}");
    let mut running = agent("fleet-machines");
    let manifests = business.dir().join("manifests");
    std::fs::create_dir_all(&manifests).unwrap();
    let package = endstate_api::MachinePackageVersion::test("agent-1.0").build();
    let machine = endstate_api::Machine::test("m-1")
        .package("agent", "agent-1.0")
        .build();
    for (file, object) in [
        ("package.json", serde_json::to_string(&package).unwrap()),
        ("machine.json", serde_json::to_string(&machine).unwrap()),
    ] {
        std::fs::write(manifests.join(file), object).unwrap();
    }
    let (code, out, err) = kubectl(
        admin,
        &[
            "apply",
            "-n",
            "fleet-machines",
            "-f",
            manifests.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let (_, phase, _) = kubectl(
            admin,
            &[
                "get",
                "machine",
                "m-1",
                "-n",
                "fleet-machines",
                "-o",
                "jsonpath={.status.phase}/{.status.observedGeneration}",
            ],
        );
        if phase == "Running/1" {
            break;
        }
        assert!(
            running.try_wait().unwrap().is_none(),
            "sim-agent exited: {:?}",
            running.wait_with_output()
        );
        assert!(
            std::time::Instant::now() < deadline,
            "the Machine is {phase:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let _ = running.kill();
    let _ = running.wait();
}

/// `kubectl apply --server-side -k deploy/target` as `kubeconfig`.
fn install_target(kubeconfig: &std::path::Path) -> (i32, String, String) {
    kubectl(
        kubeconfig,
        &[
            "apply",
            "--server-side",
            "-k",
            workspace().join("deploy/target").to_str().unwrap(),
        ],
    )
}

#[test]
fn the_target_service_account_may_write_machines_in_its_namespace_and_nothing_more() {
    let business = TestServer::start();
    let admin = business.kubeconfig();
    let (code, out, err) = install_target(admin);
    assert_eq!(code, 0, "{out}{err}");
    let token = crate::support::service_account_token(admin, "fleet-machines");
    let token = token.as_str();
    let sa = business.dir().join("kubeconfig-target-sa");
    business.write_kubeconfig(token, &sa).unwrap();
    let can = |args: &[&str]| can_i(&sa, args);
    for kind in ["machines", "machinepackageversions"] {
        let resource = format!("{kind}.fleet.endstate.dev");
        for verb in ["get", "list", "watch", "create", "patch", "delete"] {
            assert!(
                can(&[verb, &resource, "-n", "fleet-machines"]),
                "endstate needs {verb} {resource}"
            );
        }
        for denied in [
            vec!["update", &resource, "-n", "fleet-machines"],
            vec![
                "patch",
                &resource,
                "--subresource=status",
                "-n",
                "fleet-machines",
            ],
            vec!["list", &resource, "-n", "default"],
            vec!["list", &resource, "--all-namespaces"],
        ] {
            assert!(!can(&denied), "must not be allowed {denied:?}");
        }
    }
    for denied in [
        vec!["get", "secrets", "-n", "fleet-machines"],
        vec!["create", "events.events.k8s.io", "-n", "fleet-machines"],
        vec![
            "create",
            "clusters.fleet.endstate.dev",
            "-n",
            "fleet-machines",
        ],
        vec!["create", "pods", "-n", "fleet-machines"],
        vec!["create", "customresourcedefinitions.apiextensions.k8s.io"],
        vec![
            "create",
            "rolebindings.rbac.authorization.k8s.io",
            "-n",
            "fleet-machines",
        ],
    ] {
        assert!(!can(&denied), "must not be allowed {denied:?}");
    }

    // The meta-cluster's Secret for this business cluster, made from the token as
    // docs/operations.md says, reaches it with that account.
    let meta = TestServer::shared();
    let (runtime, client, ns) = kube_namespace_on(meta, "target-sa");
    let secret = Secret {
        metadata: endstate_api::k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            name: Some("a-kubeconfig".into()),
            ..Default::default()
        },
        string_data: Some(BTreeMap::from([(
            "value".to_owned(),
            business.inline_kubeconfig(Some(token)).unwrap(),
        )])),
        ..Default::default()
    };
    runtime
        .block_on(
            Api::<Secret>::namespaced(client.clone(), &ns).create(&PostParams::default(), &secret),
        )
        .unwrap();
    runtime.block_on(async {
        let (config, warnings) = endstate_kube::target::config(&client, &ns, "a-kubeconfig")
            .await
            .unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        let server = config.cluster_url.to_string();
        let target = kube::Client::try_from(config).unwrap();
        endstate_kube::target::probe(&target, &server)
            .await
            .unwrap();
    });
}
