//! `endstate run --live kube` killed with SIGKILL in the middle of waves, and restarted: it
//! resumes at the persisted wave, runs no finished wave again, skips none, and spends each
//! change's budget once.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use endstate_agent::AgentConfig;
use endstate_api::{Fleet, Machine};
use endstate_sim::Faults;
use endstate_testenv::TestServer;
use kube::Api;
use kube::api::PostParams;

use crate::support::{git, kube_namespace, remote_and_clone};

const MACHINES: usize = 24;

pub fn write_fleet(work: &Path, agent: &str) {
    let mut base = String::new();
    for v in ["1.0", "2.0"] {
        base.push_str(&format!(
            "---\napiVersion: fleet.endstate.dev/v1alpha1\nkind: MachinePackageVersion\nmetadata:\n  name: agent-{v}\nspec:\n  packageName: agent\n  version: \"{v}\"\n  install:\n    url: https://pkg.example/agent-{v}.rpm\n    sha256: {}\n",
            "cd".repeat(32)
        ));
    }
    base.push_str("---\napiVersion: fleet.endstate.dev/v1alpha1\nkind: ClusterPackageVersion\nmetadata:\n  name: k8s-1\nspec:\n  version: \"1\"\n  etcd:\n    image: etcd:1\n  apiserver:\n    image: apiserver:1\n  controllerManager:\n    image: cm:1\n  scheduler:\n    image: sched:1\n---\napiVersion: fleet.endstate.dev/v1alpha1\nkind: Cluster\nmetadata:\n  name: c1\nspec:\n  packageVersion: k8s-1\n");
    for i in 0..MACHINES {
        base.push_str(&format!(
            "---\napiVersion: fleet.endstate.dev/v1alpha1\nkind: Machine\nmetadata:\n  name: m-{i:03}\nspec:\n  cluster: c1\n  ip: 10.0.0.{i}\n  hostname: m-{i:03}\n  idc: idc-{}\n  packages:\n    agent: {agent}\n",
            i % 3
        ));
    }
    std::fs::write(work.join("fleet.yaml"), base).unwrap();
    // 48 machine-update operations per hour: the 24 creates and the 24 updates, not one more.
    std::fs::write(
        work.join("policy.yaml"),
        "apiVersion: fleet.endstate.dev/v1alpha1\nkind: RolloutPolicy\nmetadata:\n  name: p\nspec:\n  machines:\n    waves:\n    - size: 1\n    - size: 25%\n    - size: 50%\n    - size: 100%\n    spreadBy: idc\n    maxUnavailable: 2\n  clusters:\n    waves:\n    - size: 100%\n  gates:\n    timeout: 60s\n  budgets:\n  - class: machine-update\n    limit: 48\n    window: 1h\n",
    )
    .unwrap();
    std::fs::write(
        work.join("kustomization.yaml"),
        "resources:\n- fleet.yaml\n- policy.yaml\n",
    )
    .unwrap();
}

pub fn start(kubeconfig: &Path, ns: &str, state: &Path, log: &Path) -> Child {
    let log = std::fs::File::create(log).unwrap();
    Command::new(env!("CARGO_BIN_EXE_endstate"))
        .args([
            "run",
            "--live",
            "kube",
            "--until-idle",
            "--fleet",
            "f",
            "--namespace",
            ns,
            "--interval",
            "1s",
        ])
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .arg("--state-dir")
        .arg(state)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

pub fn wait(child: &mut Child, limit: Duration) -> i32 {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code().unwrap_or(-1);
        }
        assert!(
            Instant::now() < deadline,
            "endstate run did not finish in {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_killed_run_resumes_at_the_persisted_wave() {
    let (runtime, client, ns) = kube_namespace("kill");
    let server = TestServer::shared();
    let (dir, remote, work) = remote_and_clone("kill");
    let state = dir.join("state");
    let commit = |message: &str| {
        git(&work, &["add", "-A"]);
        git(
            &work,
            &[
                "-c",
                "user.name=Dev",
                "-c",
                "user.email=dev@example.com",
                "commit",
                "-q",
                "-m",
                message,
            ],
        );
        git(&work, &["push", "-q", "origin", "main"]);
        git(&work, &["rev-parse", "HEAD"])
    };
    write_fleet(&work, "agent-1.0");
    let first = commit("The fleet");
    let fleet: Fleet = serde_json::from_value(serde_json::json!({
        "apiVersion": "fleet.endstate.dev/v1alpha1", "kind": "Fleet",
        "metadata": {"name": "f", "namespace": ns},
        "spec": {"source": {"url": format!("file://{}", remote.display()), "branch": "main"},
                 "revert": {"authorName": "endstate", "authorEmail": "endstate@example.com"}}
    }))
    .unwrap();
    let fleets = Api::<Fleet>::namespaced(client.clone(), &ns);
    runtime
        .block_on(fleets.create(&PostParams::default(), &fleet))
        .unwrap();

    let agent = runtime.spawn(endstate_agent::run(
        client.clone(),
        AgentConfig::fixed(ns.clone(), Duration::from_millis(400), Faults::none()),
    ));

    // The initial sync, uninterrupted.
    let mut run = start(server.kubeconfig(), &ns, &state, &dir.join("run-0.log"));
    assert_eq!(
        wait(&mut run, Duration::from_secs(120)),
        0,
        "{}",
        std::fs::read_to_string(dir.join("run-0.log")).unwrap()
    );

    // The upgrade, killed twice in the middle of a wave.
    write_fleet(&work, "agent-2.0");
    let second = commit("Upgrade the agent");
    assert_ne!(first, second);
    let mut killed_at = Vec::new();
    for (attempt, wave) in [1, 2].into_iter().enumerate() {
        let log = dir.join(format!("run-{}.log", attempt + 1));
        let mut run = start(server.kubeconfig(), &ns, &state, &log);
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            assert!(
                Instant::now() < deadline,
                "wave {wave} never started: {}",
                std::fs::read_to_string(&log).unwrap()
            );
            assert!(
                run.try_wait().unwrap().is_none(),
                "the run ended early: {}",
                std::fs::read_to_string(&log).unwrap()
            );
            let status = runtime
                .block_on(fleets.get("f"))
                .unwrap()
                .status
                .unwrap_or_default();
            if let Some(r) = status.rollout
                && r.commit == second
                && r.wave == wave
                && r.phase == "Applying"
                && r.state
                    .as_ref()
                    .and_then(|s| s["rollout"]["inflight"].as_array())
                    .is_some_and(|m| !m.is_empty())
            {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        run.kill().unwrap(); // SIGKILL
        run.wait().unwrap();
        killed_at.push(wave);
    }
    let log = dir.join("run-3.log");
    let mut run = start(server.kubeconfig(), &ns, &state, &log);
    let code = wait(&mut run, Duration::from_secs(120));
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("resuming the rollout"), "{text}");
    // The restarted runs never start a wave that had started before the kill.
    let second_run = std::fs::read_to_string(dir.join("run-2.log")).unwrap();
    assert!(second_run.contains("resuming the rollout"), "{second_run}");
    assert!(
        !second_run.contains("wave 1 machines/wave-1: starting"),
        "{second_run}"
    );
    assert!(!text.contains("wave 1 machines/wave-1: starting"), "{text}");
    assert!(!text.contains("wave 2 machines/wave-2: starting"), "{text}");
    assert!(!text.contains("wave 3 machines/wave-3: starting"), "{text}");
    assert!(
        text.contains("wave 4 machines/wave-4: starting"),
        "the last wave ran after the restart: {text}"
    );

    // Every machine runs the new version, and the budget was spent once per change.
    let machines = runtime
        .block_on(Api::<Machine>::namespaced(client.clone(), &ns).list(&Default::default()))
        .unwrap()
        .items;
    assert_eq!(machines.len(), MACHINES);
    for m in &machines {
        assert_eq!(
            m.status.as_ref().unwrap().versions.as_ref().unwrap()["agent"],
            "agent-2.0"
        );
    }
    let status = runtime.block_on(fleets.get("f")).unwrap().status.unwrap();
    assert_eq!(status.last_good_commit.as_deref(), Some(second.as_str()));
    let spent = status
        .budgets
        .unwrap()
        .into_iter()
        .find(|b| b.class == "machine-update")
        .unwrap()
        .spent;
    assert_eq!(
        spent,
        2 * MACHINES as i64,
        "one budget spend per change, kills notwithstanding"
    );
    agent.abort();
    let _ = std::fs::remove_dir_all(&dir);
}
