//! The whole loop end to end on a real kube-apiserver: a Git repository served by
//! `git daemon`, the controller on the Kubernetes backend, and `sim-agent` converging the
//! Machines. A good upgrade rolls out in waves, drift is corrected, prune respects
//! `prune: disabled`, a bad upgrade trips the breaker, the live objects are restored, the
//! revert is on the remote, and the next reconcile writes nothing.

mod support;

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use endstate_agent::AgentConfig;
use endstate_api::k8s_openapi::api::core::v1::Namespace;
use endstate_api::{Fleet, Machine};
use endstate_controller::{Config, Controller, Outcome, Recorder, WallClock};
use endstate_git::{History, RevertConfig, RevertWriter, Source, SourceConfig};
use endstate_kube::{KubeLive, Limits, Settings, install_crds};
use endstate_sim::Faults;
use endstate_testenv::{Options, TestServer};
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use support::{Repo, commit_and_push, unique_dir};

/// `git daemon` serving a directory on a loopback port, with push enabled.
struct Daemon {
    child: Child,
    port: u16,
}

impl Daemon {
    fn serve(base: &Path) -> Daemon {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("git")
            .args([
                "daemon",
                "--reuseaddr",
                "--export-all",
                "--enable=receive-pack",
                "--listen=127.0.0.1",
            ])
            .arg(format!("--port={port}"))
            .arg(format!("--base-path={}", base.display()))
            .arg(base)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("git daemon must be installed (Debian's git ships it)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "git daemon did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Daemon { child, port }
    }

    fn url(&self) -> String {
        format!("git://127.0.0.1:{}/remote.git", self.port)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const POLICY: &str = "  machines:\n    waves:\n    - name: canary\n      size: 1\n    - name: half\n      size: 50%\n    - name: all\n      size: 100%\n    spreadBy: idc\n    maxUnavailable: 3\n  clusters:\n    waves:\n    - size: 100%\n  gates:\n    timeout: 60s\n";

async fn machines(client: &Client, ns: &str) -> Vec<Machine> {
    Api::<Machine>::namespaced(client.clone(), ns)
        .list(&Default::default())
        .await
        .unwrap()
        .items
}

/// A namespace on a server with the CRDs, a repository served over git://, the Fleet object,
/// and sim-agent converging the namespace's machines.
struct World {
    client: Client,
    ns: String,
    repo: Repo,
    daemon: Daemon,
    agent: tokio::task::JoinHandle<Result<(), endstate_agent::Error>>,
}

impl World {
    async fn new(
        server: &TestServer,
        name: &str,
        machines: usize,
        policy: &str,
        faults: &[&str],
    ) -> World {
        let client = server.client().await;
        install_crds(&client, Duration::from_secs(60))
            .await
            .expect("install the CRDs");
        let ns = format!("{name}-{}", std::process::id());
        let namespace: Namespace =
            serde_json::from_value(serde_json::json!({"metadata": {"name": ns}})).unwrap();
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &namespace)
            .await
            .unwrap();
        let repo = Repo::new(name, machines, policy);
        let daemon = Daemon::serve(repo.remote.parent().unwrap());
        let fleet: Fleet = serde_json::from_value(serde_json::json!({
            "apiVersion": "fleet.endstate.dev/v1alpha1", "kind": "Fleet",
            "metadata": {"name": "f", "namespace": ns},
            "spec": {"source": {"url": daemon.url(), "branch": "main", "path": "prod"}}
        }))
        .unwrap();
        Api::<Fleet>::namespaced(client.clone(), &ns)
            .create(&PostParams::default(), &fleet)
            .await
            .unwrap();
        // sim-agent with fast operators; it writes status as an admin, outside any throttling.
        let agent = tokio::spawn(endstate_agent::run(
            client.clone(),
            AgentConfig::fixed(
                ns.clone(),
                Duration::from_millis(300),
                Faults::parse(faults).unwrap(),
            ),
        ));
        World {
            client,
            ns,
            repo,
            daemon,
            agent,
        }
    }

    /// The controller on the Kubernetes backend, connecting with `config`.
    async fn controller(
        &self,
        config: kube::Config,
        settings: Settings,
    ) -> Controller<KubeLive, WallClock> {
        let live = KubeLive::connect(config, settings)
            .await
            .expect("the backend starts");
        let state = unique_dir("e2e-state");
        let source_config = SourceConfig::new(self.daemon.url(), state.join("mirror"))
            .branch("main")
            .path("prod");
        let writer = RevertWriter::open(
            &source_config,
            RevertConfig::new("f", "endstate", "endstate@example.com"),
        )
        .unwrap();
        let source = Source::open(source_config, History::default()).unwrap();
        let mut config = Config::new("f", self.ns.clone());
        config.interval = Duration::from_secs(1);
        config.poll = Duration::from_millis(200);
        let mut controller = Controller::new(
            config,
            source,
            Some(writer),
            live,
            WallClock,
            Box::new(Recorder::default()),
        );
        controller.resume().await.unwrap();
        controller
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_loop_rolls_out_trips_restores_and_reverts_on_a_real_api_server() {
    let server = TestServer::shared();
    let world = World::new(server, "e2e", 12, POLICY, &["package=agent-3.0,rate=1"]).await;
    let (client, ns, repo) = (&world.client, &world.ns, &world.repo);
    let mut controller = world
        .controller(server.config().await, Settings::new(ns.clone(), "f"))
        .await;

    // Initial sync: everything is created, wave by wave, and the agent converges it.
    let first = repo.set_agent("agent-1.0", "Pin the agent");
    let outcome = tokio::time::timeout(Duration::from_secs(120), controller.run_until_idle())
        .await
        .expect("initial sync in time")
        .unwrap();
    assert_eq!(
        outcome,
        Outcome::Converged { commit: first },
        "{:#?}",
        controller.engine().breaker()
    );
    let all = machines(client, ns).await;
    assert_eq!(all.len(), 12);
    assert!(
        all.iter()
            .all(|m| m.status.as_ref().and_then(|s| s.observed_generation) == Some(1))
    );

    // A good upgrade.
    let good = repo.set_agent("agent-2.0", "Upgrade the agent");
    let outcome = tokio::time::timeout(Duration::from_secs(120), controller.run_until_idle())
        .await
        .expect("upgrade in time")
        .unwrap();
    assert_eq!(
        outcome,
        Outcome::Converged {
            commit: good.clone()
        }
    );
    for m in machines(client, ns).await {
        let status = m.status.unwrap();
        assert_eq!(status.versions.unwrap()["agent"], "agent-2.0");
        assert_eq!(status.observed_generation, Some(2));
    }

    // Drift: another client changes a Machine's spec; endstate puts it back.
    let api = Api::<Machine>::namespaced(client.clone(), ns);
    api.patch(
        "m-001",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"spec": {"hostname": "drifted"}})),
    )
    .await
    .unwrap();
    let outcome = tokio::time::timeout(Duration::from_secs(120), controller.run_until_idle())
        .await
        .expect("drift in time")
        .unwrap();
    assert_eq!(
        outcome,
        Outcome::Converged {
            commit: good.clone()
        }
    );
    assert_eq!(
        api.get("m-001").await.unwrap().spec.hostname,
        "m-001",
        "drift corrected"
    );

    // Prune: two machines leave Git; the one annotated `prune: disabled` stays.
    api.patch("m-011", &PatchParams::default(), &Patch::Merge(serde_json::json!({"metadata": {"annotations": {"fleet.endstate.dev/prune": "disabled"}}}))).await.unwrap();
    let machines_file = std::fs::read_to_string(repo.work.join("base/machines.yaml")).unwrap();
    let kept: Vec<&str> = machines_file
        .split("---\n")
        .filter(|d| !d.contains("name: m-010") && !d.contains("name: m-011"))
        .collect();
    repo.write("base/machines.yaml", &kept.join("---\n"));
    let pruned = commit_and_push(&repo.work, "Retire m-010 and m-011");
    let outcome = tokio::time::timeout(Duration::from_secs(120), controller.run_until_idle())
        .await
        .expect("prune in time")
        .unwrap();
    assert_eq!(
        outcome,
        Outcome::Converged {
            commit: pruned.clone()
        }
    );
    assert!(
        api.get_opt("m-010").await.unwrap().is_none(),
        "m-010 is pruned"
    );
    assert!(
        api.get_opt("m-011").await.unwrap().is_some(),
        "m-011 survives: prune disabled"
    );

    // A bad upgrade: the breaker trips, the fleet is restored, the revert is on the remote.
    let bad = repo.set_agent("agent-3.0", "Upgrade the agent to 3.0");
    let outcome = tokio::time::timeout(Duration::from_secs(120), controller.run_until_idle())
        .await
        .expect("trip in time")
        .unwrap();
    let Outcome::Tripped { commit, revert } = outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(commit, bad);
    assert!(revert.contains("revert pushed"), "{revert}");
    for m in machines(client, ns).await {
        if m.metadata.name.as_deref() == Some("m-011") {
            continue;
        }
        assert_eq!(
            m.spec.packages["agent"], "agent-2.0",
            "{:?} restored",
            m.metadata.name
        );
    }
    let remote = git2::Repository::open_bare(&repo.remote).unwrap();
    let head = remote
        .find_commit(remote.refname_to_id("refs/heads/main").unwrap())
        .unwrap();
    assert!(
        head.message()
            .unwrap()
            .contains(&format!("Endstate-Revert-Of: {bad}"))
    );
    let pruned_tree = remote
        .find_commit(git2::Oid::from_str(&pruned).unwrap())
        .unwrap()
        .tree_id();
    assert_eq!(
        head.tree_id(),
        pruned_tree,
        "the revert restores the last good tree"
    );

    // The persisted status says so.
    let fleet = Api::<Fleet>::namespaced(client.clone(), ns)
        .get("f")
        .await
        .unwrap();
    let status = fleet.status.unwrap();
    assert_eq!(
        status.breaker.unwrap().state,
        endstate_api::fleet::BreakerState::Open
    );
    assert_eq!(status.quarantine.unwrap()[0].commit, bad);
    assert_eq!(status.last_applied_commit, Some(head.id().to_string()));

    // The next reconcile, at the revert, writes nothing.
    let writes = controller.live().stats();
    let outcome = tokio::time::timeout(Duration::from_secs(60), controller.run_until_idle())
        .await
        .expect("no-op in time")
        .unwrap();
    assert!(matches!(outcome, Outcome::Tripped { .. }), "{outcome:?}");
    let after = controller.live().stats();
    assert_eq!(
        after.applied, writes.applied,
        "a no-op reconcile applied something: {writes:?} → {after:?}"
    );
    assert_eq!(after.deleted, writes.deleted);
    world.agent.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttled_server_slows_the_rollout_without_failing_it() {
    // One mutating request at a time for endstate's user (not an admin): every concurrent
    // write beyond the first is answered 429.
    let server =
        tokio::task::spawn_blocking(|| TestServer::start_with(Options::one_write_at_a_time()))
            .await
            .unwrap();
    let policy = "  machines:\n    waves:\n    - size: 10%\n    - size: 100%\n    maxUnavailable: 30\n  gates:\n    timeout: 120s\n";
    let world = World::new(&server, "throttled", 60, policy, &[]).await;
    let mut settings = Settings::new(world.ns.clone(), "f");
    settings.limits = Limits {
        qps: 1000.0,
        burst: 1000,
    };
    let mut controller = world.controller(server.user_config().await, settings).await;

    let first = world.repo.set_agent("agent-1.0", "Pin the agent");
    let outcome = tokio::time::timeout(Duration::from_secs(300), controller.run_until_idle())
        .await
        .expect("initial sync in time")
        .unwrap();
    assert_eq!(outcome, Outcome::Converged { commit: first });
    let next = world.repo.set_agent("agent-2.0", "Upgrade the agent");
    let outcome = tokio::time::timeout(Duration::from_secs(300), controller.run_until_idle())
        .await
        .expect("upgrade in time")
        .unwrap();
    assert_eq!(outcome, Outcome::Converged { commit: next });

    // Every write landed, and the server's 429s slowed endstate down rather than failing it.
    let all = machines(&world.client, &world.ns).await;
    assert_eq!(all.len(), 60);
    for m in &all {
        assert_eq!(
            m.status.as_ref().unwrap().versions.as_ref().unwrap()["agent"],
            "agent-2.0"
        );
    }
    let limiter = controller.live().limiter().stats();
    assert!(
        limiter.pushbacks > 0,
        "the server never pushed back: {limiter:?}"
    );
    assert!(
        limiter.cuts > 0 && limiter.min_qps_seen < 1000.0,
        "the rate was never cut: {limiter:?}"
    );
    assert!(controller.engine().breaker().is_none());
    world.agent.abort();
}

/// The largest whole `Fleet` object (as the server returns it, managedFields included) seen by a
/// watch while `run` runs.
async fn largest_fleet<F: std::future::Future>(
    client: &Client,
    ns: &str,
    run: F,
) -> (F::Output, usize) {
    use futures::StreamExt as _;
    use kube::runtime::watcher;
    let api = Api::<Fleet>::namespaced(client.clone(), ns);
    let largest = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = largest.clone();
    let watch = tokio::spawn(async move {
        let stream = watcher(api, watcher::Config::default().fields("metadata.name=f"));
        futures::pin_mut!(stream);
        while let Some(event) = stream.next().await {
            if let Ok(watcher::Event::Apply(fleet) | watcher::Event::InitApply(fleet)) = event {
                let size = serde_json::to_vec(&fleet).map(|v| v.len()).unwrap_or(0);
                seen.fetch_max(size, std::sync::atomic::Ordering::Relaxed);
            }
        }
    });
    let output = run.await;
    // The last save's event.
    tokio::time::sleep(Duration::from_millis(500)).await;
    watch.abort();
    (output, largest.load(std::sync::atomic::Ordering::Relaxed))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fleet_object_stays_small_as_the_fleet_grows() {
    let server = TestServer::shared();
    let policy = "  machines:\n    waves:\n    - size: 1\n    - size: 5%\n    - size: 25%\n    - size: 100%\n    spreadBy: idc\n    maxUnavailable: 10%\n  gates:\n    timeout: 120s\n";
    let mut largest = Vec::new();
    for machines in [500, 2000] {
        let world = World::new(server, &format!("size{machines}"), machines, policy, &[]).await;
        let mut settings = Settings::new(world.ns.clone(), "f");
        settings.limits = Limits {
            qps: 2000.0,
            burst: 2000,
        };
        let mut controller = world.controller(server.config().await, settings).await;
        let head = world.repo.set_agent("agent-1.0", "Pin the agent");
        let (outcome, size) = largest_fleet(&world.client, &world.ns, async {
            tokio::time::timeout(Duration::from_secs(240), controller.run_until_idle())
                .await
                .expect("initial sync in time")
                .unwrap()
        })
        .await;
        assert_eq!(outcome, Outcome::Converged { commit: head });
        assert!(
            controller.tally().saves > 4,
            "saved {} times",
            controller.tally().saves
        );
        largest.push(size);
        world.agent.abort();
    }
    let (small, large) = (largest[0], largest[1]);
    eprintln!("largest Fleet object: {small} bytes at 500 Machines, {large} bytes at 2000");
    // Storing the plan again (about 80 bytes per Machine) would fail both.
    assert!(
        large <= 32 * 1024,
        "the Fleet object reached {large} bytes at 2000 Machines"
    );
    assert!(
        large.saturating_sub(small) <= 2 * 1500,
        "the Fleet object grew from {small} bytes (500 Machines) to {large} (2000)"
    );
}

/// Runs the controller until idle, within two minutes.
async fn idle(controller: &mut Controller<KubeLive, WallClock>) -> Outcome {
    tokio::time::timeout(Duration::from_secs(120), controller.run_until_idle())
        .await
        .expect("idle in time")
        .unwrap()
}

/// `kubectl patch machine NAME --type=merge -p PATCH` as a user would run it (manager
/// `kubectl-patch`).
fn kubectl_patch(server: &TestServer, ns: &str, name: &str, patch: &str) {
    let out = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(server.kubeconfig())
        .args([
            "-n",
            ns,
            "patch",
            "machine",
            name,
            "--type=merge",
            "-p",
            patch,
        ])
        .output()
        .expect("kubectl is the client a user would use and must be installed");
    assert!(
        out.status.success(),
        "kubectl patch: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_field_another_manager_owns_is_left_and_one_git_sets_is_taken_back_once() {
    let server = TestServer::shared();
    let world = World::new(server, "owned", 3, POLICY, &[]).await;
    let (client, ns, repo) = (&world.client, &world.ns, &world.repo);
    let mut controller = world
        .controller(server.config().await, Settings::new(ns.clone(), "f"))
        .await;
    let head = repo.set_agent("agent-1.0", "Pin the agent");
    let outcome = idle(&mut controller).await;
    assert_eq!(
        outcome,
        Outcome::Converged {
            commit: head.clone()
        }
    );
    let api = Api::<Machine>::namespaced(client.clone(), ns);

    // A field Git does not set, set by another manager: three reconciles, no write.
    kubectl_patch(server, ns, "m-000", r#"{"spec":{"unschedulable":true}}"#);
    for round in 0..3 {
        let before = controller.tally().writes;
        let applies = controller.live().stats().applied;
        let outcome = idle(&mut controller).await;
        assert_eq!(
            outcome,
            Outcome::Converged {
                commit: head.clone()
            }
        );
        assert_eq!(controller.tally().writes, before, "round {round} wrote");
        assert_eq!(
            controller.live().stats().applied,
            applies,
            "round {round} applied"
        );
    }
    assert_eq!(
        api.get("m-000").await.unwrap().spec.unschedulable,
        Some(true),
        "the other manager's field stays"
    );

    // A field Git sets, changed by another manager: one write takes it back, then none.
    kubectl_patch(server, ns, "m-001", r#"{"spec":{"hostname":"drifted"}}"#);
    let before = controller.tally().writes;
    let outcome = idle(&mut controller).await;
    assert_eq!(
        outcome,
        Outcome::Converged {
            commit: head.clone()
        }
    );
    assert_eq!(controller.tally().writes, before + 1);
    assert_eq!(api.get("m-001").await.unwrap().spec.hostname, "m-001");
    let after = controller.tally().writes;
    let outcome = idle(&mut controller).await;
    assert_eq!(outcome, Outcome::Converged { commit: head });
    assert_eq!(controller.tally().writes, after);
    assert_eq!(
        api.get("m-000").await.unwrap().spec.unschedulable,
        Some(true)
    );
    world.agent.abort();
}
