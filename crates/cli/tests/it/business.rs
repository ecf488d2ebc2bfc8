//! A Fleet whose Machines live in their business clusters: a meta API server holding the
//! Fleet and its Clusters, two business API servers holding their own Machines, each with
//! sim-agent operating what it serves, and `endstate run --live kube` between them.

use std::path::Path;
use std::time::Duration;

use endstate_api::k8s_openapi::api::core::v1::{Namespace, Secret};
use endstate_api::{Fleet, Machine, MachinePackageVersion};
use endstate_sim::Faults;
use endstate_testenv::TestServer;
use kube::Api;
use kube::api::PostParams;
use serde_json::json;

use crate::support::{commit_and_push, kube_namespace_on, remote_and_clone};

const MACHINES: usize = 12;
const TARGET_NS: &str = "fleet-machines";

/// Clusters `a` and `b`, Machines alternating between them on `agent`, three agent versions.
fn write_fleet(work: &Path, agent: &str) {
    let mut out = crate::kill::agent_versions();
    out.push_str("---\napiVersion: fleet.endstate.dev/v1alpha1\nkind: ClusterPackageVersion\nmetadata:\n  name: k8s\nspec:\n  version: \"1\"\n  etcd:\n    image: etcd:1\n  apiserver:\n    image: apiserver:1\n  controllerManager:\n    image: cm:1\n  scheduler:\n    image: sched:1\n");
    for c in ["a", "b"] {
        out.push_str(&format!(
            "---\napiVersion: fleet.endstate.dev/v1alpha1\nkind: Cluster\nmetadata:\n  name: {c}\nspec:\n  packageVersion: k8s\n"
        ));
    }
    for i in 0..MACHINES {
        let machine = Machine::test(&format!("m-{i:03}"))
            .in_cluster(["a", "b"][i % 2])
            .ip(format!("10.0.0.{i}"))
            .hostname(format!("m-{i:03}"))
            .idc(format!("idc-{}", i % 3))
            .package("agent", agent);
        out.push_str(&format!("---\n{}", machine.yaml()));
    }
    std::fs::write(work.join("fleet.yaml"), out).unwrap();
    std::fs::write(
        work.join("policy.yaml"),
        "apiVersion: fleet.endstate.dev/v1alpha1\nkind: RolloutPolicy\nmetadata:\n  name: p\nspec:\n  machines:\n    waves:\n    - size: 1\n    - size: 50%\n    - size: 100%\n    spreadBy: cluster\n    maxUnavailable: 4\n    maxUnavailablePerCluster: 1\n  clusters:\n    waves:\n    - size: 100%\n  gates:\n    timeout: 60s\n  budgets:\n  - class: machine-update\n    limit: 100\n    window: 1h\n",
    )
    .unwrap();
    std::fs::write(
        work.join("kustomization.yaml"),
        "resources:\n- fleet.yaml\n- policy.yaml\n",
    )
    .unwrap();
}

/// A business cluster: its own API server, `deploy/target/`'s CRDs and namespace, sim-agent
/// operating its Machines, and its kubeconfig Secret in the meta-cluster's namespace `ns`.
struct Business {
    server: TestServer,
    client: kube::Client,
    _agent: tokio::task::JoinHandle<Result<(), endstate_agent::Error>>,
}

impl Business {
    fn start(
        runtime: &tokio::runtime::Runtime,
        meta: &kube::Client,
        ns: &str,
        name: &str,
    ) -> Business {
        let server = TestServer::start();
        let client = runtime.block_on(server.client());
        runtime.block_on(async {
            endstate_kube::install_target_crds(&client, Duration::from_secs(60))
                .await
                .unwrap();
            let namespace: Namespace =
                serde_json::from_value(json!({"metadata": {"name": TARGET_NS}})).unwrap();
            Api::<Namespace>::all(client.clone())
                .create(&PostParams::default(), &namespace)
                .await
                .unwrap();
            let secret: Secret = serde_json::from_value(json!({
                "metadata": {"name": format!("{name}-kubeconfig")},
                "stringData": {"value": server.inline_kubeconfig(None).unwrap()},
            }))
            .unwrap();
            Api::<Secret>::namespaced(meta.clone(), ns)
                .create(&PostParams::default(), &secret)
                .await
                .unwrap();
        });
        let agent = runtime.spawn(endstate_agent::run(
            client.clone(),
            endstate_agent::AgentConfig::fixed(
                TARGET_NS,
                Duration::from_millis(200),
                Faults::none(),
            ),
        ));
        Business {
            server,
            client,
            _agent: agent,
        }
    }

    fn machines(&self, runtime: &tokio::runtime::Runtime) -> Vec<Machine> {
        runtime
            .block_on(
                Api::<Machine>::namespaced(self.client.clone(), TARGET_NS)
                    .list(&Default::default()),
            )
            .unwrap()
            .items
    }

    fn packages(&self, runtime: &tokio::runtime::Runtime) -> Vec<String> {
        let mut names: Vec<String> = runtime
            .block_on(
                Api::<MachinePackageVersion>::namespaced(self.client.clone(), TARGET_NS)
                    .list(&Default::default()),
            )
            .unwrap()
            .items
            .into_iter()
            .filter_map(|p| p.metadata.name)
            .collect();
        names.sort();
        names
    }
}

/// A meta-cluster namespace with Fleet `f` placing its Machines in business clusters `a` and
/// `b`, its repository at the fleet on `agent-1.0`, not rolled out yet.
struct Setup {
    runtime: tokio::runtime::Runtime,
    client: kube::Client,
    ns: String,
    businesses: [Business; 2],
    dir: std::path::PathBuf,
    work: std::path::PathBuf,
    first: String,
    _meta_agent: tokio::task::JoinHandle<Result<(), endstate_agent::Error>>,
}

impl Setup {
    fn new(name: &str) -> Setup {
        let meta = TestServer::shared();
        let (runtime, client, ns) = kube_namespace_on(meta, name);
        let businesses = [
            Business::start(&runtime, &client, &ns, "a"),
            Business::start(&runtime, &client, &ns, "b"),
        ];
        let (dir, remote, work) = remote_and_clone(name);
        write_fleet(&work, "agent-1.0");
        let first = commit_and_push(&work, "The fleet, in two business clusters");
        let fleet: Fleet = serde_json::from_value(json!({
            "apiVersion": "fleet.endstate.dev/v1alpha1", "kind": "Fleet",
            "metadata": {"name": "f", "namespace": ns},
            "spec": {
                "source": {"url": format!("file://{}", remote.display()), "branch": "main", "interval": "1s"},
                "revert": {"authorName": "endstate", "authorEmail": "endstate@example.com"},
                "machines": {"placement": "Cluster", "namespace": TARGET_NS},
            },
        }))
        .unwrap();
        // The meta-cluster's operator plays the Clusters.
        let meta_agent = crate::support::fleet_with_agent(
            &runtime,
            &client,
            &fleet,
            Duration::from_millis(200),
            Faults::none(),
        );
        Setup {
            runtime,
            client,
            ns,
            businesses,
            dir,
            work,
            first,
            _meta_agent: meta_agent,
        }
    }

    /// `endstate run --live kube --until-idle`; its exit code and output.
    fn run(&self, name: &str) -> (i32, String) {
        let log = self.dir.join(format!("{name}.log"));
        let meta = TestServer::shared();
        let mut run =
            crate::kill::start(meta.kubeconfig(), &self.ns, &self.dir.join("state"), &log);
        let code = crate::kill::wait(&mut run, Duration::from_secs(240));
        (code, std::fs::read_to_string(&log).unwrap_or_default())
    }

    fn status(&self) -> endstate_api::FleetStatus {
        self.runtime
            .block_on(Api::<Fleet>::namespaced(self.client.clone(), &self.ns).get("f"))
            .unwrap()
            .status
            .unwrap_or_default()
    }

    /// The agent each Machine of business cluster `i` runs, settled at its generation.
    fn agents(&self, i: usize) -> Vec<String> {
        self.businesses[i]
            .machines(&self.runtime)
            .into_iter()
            .map(|m| {
                let status = m.status.clone().expect("operated");
                assert_eq!(status.observed_generation, m.metadata.generation, "{m:?}");
                m.spec.packages["agent"].clone()
            })
            .collect()
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        if std::env::var_os("ENDSTATE_KEEP_TEST_DIRS").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

#[test]
fn machines_are_written_to_their_business_clusters_and_clusters_stay_in_the_meta_cluster() {
    let setup = Setup::new("business");
    let meta = TestServer::shared();
    let ns = &setup.ns;
    let (code, out) = setup.run("run");
    assert_eq!(code, 0, "{out}");

    // The Clusters and their package version here; no Machine and no Machine package version.
    let here = |kind: &str| {
        let (code, out, err) =
            crate::support::kubectl(meta.kubeconfig(), &["get", kind, "-n", ns, "-o", "name"]);
        assert_eq!(code, 0, "{err}");
        out.lines().map(str::to_owned).collect::<Vec<_>>()
    };
    assert_eq!(
        here("clusters.fleet.endstate.dev"),
        [
            "cluster.fleet.endstate.dev/a",
            "cluster.fleet.endstate.dev/b"
        ]
    );
    assert!(here("machines.fleet.endstate.dev").is_empty());
    assert!(here("machinepackageversions.fleet.endstate.dev").is_empty());
    // Each business cluster has its own Machines, healthy, and the version they use.
    for (i, cluster) in ["a", "b"].into_iter().enumerate() {
        let business = &setup.businesses[i];
        let machines = business.machines(&setup.runtime);
        assert_eq!(machines.len(), MACHINES / 2, "{cluster}");
        for m in &machines {
            assert_eq!(m.spec.cluster, cluster);
            let labels = m.metadata.labels.clone().unwrap_or_default();
            assert_eq!(labels["fleet.endstate.dev/fleet"], "f");
            assert_eq!(labels["fleet.endstate.dev/fleet-namespace"], *ns);
        }
        assert_eq!(setup.agents(i), vec!["agent-1.0"; MACHINES / 2]);
        assert_eq!(
            business.packages(&setup.runtime),
            ["agent-1.0", "agent-2.0", "agent-3.0"],
            "{cluster}"
        );
        let (code, out, err) = crate::support::kubectl(
            business.server.kubeconfig(),
            &["get", "machines", "-n", TARGET_NS, "-o", "name"],
        );
        assert_eq!(code, 0, "{err}");
        assert_eq!(out.lines().count(), MACHINES / 2, "{out}");
    }
    assert_eq!(
        setup.status().last_good_commit.as_deref(),
        Some(setup.first.as_str()),
        "{out}"
    );
}

/// Business cluster `b`'s API server frozen during an upgrade: its Machines are held, not
/// failed (the breaker stays closed, no budget is spent for them), `a`'s are upgraded, and
/// the commit is not good; thawed, the next run rolls `b`'s out and the commit is good.
#[test]
fn a_frozen_business_cluster_holds_its_machines_and_not_the_others() {
    let setup = Setup::new("business-frozen");
    let (code, out) = setup.run("first");
    assert_eq!(code, 0, "{out}");
    let spent = || {
        setup
            .status()
            .budgets
            .unwrap_or_default()
            .into_iter()
            .find(|b| b.class == "machine-update")
            .map_or(0, |b| b.spent)
    };
    assert_eq!(spent(), MACHINES as i64);

    setup.businesses[1].server.signal_apiserver("STOP").unwrap();
    write_fleet(&setup.work, "agent-2.0");
    let second = commit_and_push(&setup.work, "Upgrade the agent");
    let (code, out) = setup.run("frozen");
    setup.businesses[1].server.signal_apiserver("CONT").unwrap();
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("business cluster b cannot be used (TargetUnreachable"),
        "{out}"
    );
    assert!(!out.contains("BREAKER TRIPPED"), "{out}");
    let status = setup.status();
    assert_eq!(status.last_applied_commit.as_deref(), Some(second.as_str()));
    assert_eq!(
        status.last_good_commit.as_deref(),
        Some(setup.first.as_str()),
        "a commit with held Machines is not good"
    );
    assert_eq!(
        status.history.clone().unwrap_or_default()[0].outcome,
        "Held"
    );
    let targets: Vec<(String, bool, Option<String>)> = status
        .targets
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|t| (t.cluster, t.ready, t.reason))
        .collect();
    assert_eq!(
        targets,
        [
            ("a".to_owned(), true, None),
            ("b".to_owned(), false, Some("TargetUnreachable".to_owned()))
        ]
    );
    let ready = status
        .conditions
        .unwrap_or_default()
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "TargetUnreachable"),
        "{}",
        ready.message
    );
    assert!(
        ready.message.contains("b: TargetUnreachable"),
        "{}",
        ready.message
    );
    assert_eq!(setup.agents(0), vec!["agent-2.0"; MACHINES / 2]);
    assert_eq!(setup.agents(1), vec!["agent-1.0"; MACHINES / 2]);
    assert_eq!(
        spent(),
        (MACHINES + MACHINES / 2) as i64,
        "held changes spend nothing"
    );

    // Thawed: the held Machines roll out, and the commit is good.
    let (code, out) = setup.run("thawed");
    assert_eq!(code, 0, "{out}");
    assert_eq!(setup.agents(1), vec!["agent-2.0"; MACHINES / 2]);
    assert_eq!(
        setup.status().last_good_commit.as_deref(),
        Some(second.as_str()),
        "{out}"
    );
    assert_eq!(spent(), 2 * MACHINES as i64, "each change spent once");
}
