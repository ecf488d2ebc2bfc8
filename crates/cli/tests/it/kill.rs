//! `endstate run --live kube` killed with SIGKILL in the middle of waves, and restarted: it
//! resumes at the persisted wave, runs no finished wave again, skips none, and spends each
//! change's budget once.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use endstate_api::{Fleet, Machine};
use endstate_sim::Faults;
use endstate_testenv::TestServer;
use kube::Api;

use crate::support::{git, kube_namespace_on, remote_and_clone};

const MACHINES: usize = 24;

/// The MachinePackageVersions `agent-1.0`, `agent-2.0` and `agent-3.0`, as YAML documents.
pub fn agent_versions() -> String {
    let mut out = String::new();
    for v in ["1.0", "2.0", "3.0"] {
        out.push_str(&format!(
            "---\napiVersion: fleet.endstate.dev/v1alpha1\nkind: MachinePackageVersion\nmetadata:\n  name: agent-{v}\nspec:\n  packageName: agent\n  version: \"{v}\"\n  install:\n    url: https://pkg.example/agent-{v}.rpm\n    sha256: {}\n",
            "cd".repeat(32)
        ));
    }
    out
}

pub fn write_fleet(work: &Path, agent: &str) {
    let mut base = agent_versions();
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
        "apiVersion: fleet.endstate.dev/v1alpha1\nkind: RolloutPolicy\nmetadata:\n  name: p\nspec:\n  machines:\n    waves:\n    - size: 1\n    - size: 25%\n      bake: 3s\n    - size: 50%\n    - size: 100%\n    spreadBy: idc\n    maxUnavailable: 2\n  clusters:\n    waves:\n    - size: 100%\n  gates:\n    timeout: 60s\n  budgets:\n  - class: machine-update\n    limit: 48\n    window: 1h\n",
    )
    .unwrap();
    std::fs::write(
        work.join("kustomization.yaml"),
        "resources:\n- fleet.yaml\n- policy.yaml\n",
    )
    .unwrap();
}

pub fn start(kubeconfig: &Path, ns: &str, state: &Path, log: &Path) -> Child {
    start_with(kubeconfig, ns, state, log, &[])
}

/// [`start`] with extra environment variables (a crash point, say).
pub fn start_with(
    kubeconfig: &Path,
    ns: &str,
    state: &Path,
    log: &Path,
    env: &[(&str, &str)],
) -> Child {
    let log = std::fs::File::create(log).unwrap();
    Command::new(env!("CARGO_BIN_EXE_endstate"))
        .envs(env.iter().copied())
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

/// A namespace whose Fleet follows a fresh repository, converged at its first commit, with
/// sim-agent converging its Machines.
pub(crate) struct Setup {
    /// The server of its own, when the test has one (else the shared one).
    server: Option<TestServer>,
    pub(crate) kubeconfig: std::path::PathBuf,
    pub(crate) runtime: tokio::runtime::Runtime,
    pub(crate) client: kube::Client,
    pub(crate) ns: String,
    pub(crate) dir: std::path::PathBuf,
    pub(crate) work: std::path::PathBuf,
    state: std::path::PathBuf,
    agent: tokio::task::JoinHandle<Result<(), endstate_agent::Error>>,
}

impl Setup {
    pub(crate) fn new(name: &str) -> (Setup, String) {
        Setup::with_faults(name, Faults::none())
    }

    /// [`Setup::new`], with sim-agent failing Machines as `faults` say.
    pub(crate) fn with_faults(name: &str, faults: Faults) -> (Setup, String) {
        Setup::on(None, name, faults)
    }

    /// [`Setup::new`] on `own`, a server of the test's own, or the shared one.
    fn on(own: Option<TestServer>, name: &str, faults: Faults) -> (Setup, String) {
        let server = own.as_ref().unwrap_or_else(|| TestServer::shared());
        let kubeconfig = server.kubeconfig().to_owned();
        let (runtime, client, ns) = kube_namespace_on(server, name);
        let (dir, remote, work) = remote_and_clone(name);
        let state = dir.join("state");
        write_fleet(&work, "agent-1.0");
        let fleet: Fleet = serde_json::from_value(serde_json::json!({
            "apiVersion": "fleet.endstate.dev/v1alpha1", "kind": "Fleet",
            "metadata": {"name": "f", "namespace": ns},
            "spec": {"source": {"url": format!("file://{}", remote.display()), "branch": "main"},
                     "revert": {"authorName": "endstate", "authorEmail": "endstate@example.com"}}
        }))
        .unwrap();
        let agent = crate::support::fleet_with_agent(
            &runtime,
            &client,
            &fleet,
            Duration::from_millis(400),
            faults,
        );
        let setup = Setup {
            server: own,
            kubeconfig,
            runtime,
            client,
            ns,
            dir,
            work,
            state,
            agent,
        };
        let first = setup.commit("The fleet");
        // The initial sync, uninterrupted.
        let mut run = setup.run("run-0.log", &[]);
        assert_eq!(
            wait(&mut run, Duration::from_secs(120)),
            0,
            "{}",
            setup.log("run-0.log")
        );
        (setup, first)
    }

    pub(crate) fn commit(&self, message: &str) -> String {
        crate::support::commit_and_push(&self.work, message)
    }

    pub(crate) fn run(&self, log: &str, env: &[(&str, &str)]) -> Child {
        start_with(
            &self.kubeconfig,
            &self.ns,
            &self.state,
            &self.dir.join(log),
            env,
        )
    }

    pub(crate) fn log(&self, log: &str) -> String {
        std::fs::read_to_string(self.dir.join(log)).unwrap_or_default()
    }

    fn status(&self) -> endstate_api::FleetStatus {
        self.runtime
            .block_on(Api::<Fleet>::namespaced(self.client.clone(), &self.ns).get("f"))
            .unwrap()
            .status
            .unwrap_or_default()
    }

    /// Every Machine runs `agent`, and `machine-update` was spent exactly once per change.
    fn converged_with_spends(&self, agent: &str, spends: i64, head: &str) {
        let machines = self
            .runtime
            .block_on(
                Api::<Machine>::namespaced(self.client.clone(), &self.ns).list(&Default::default()),
            )
            .unwrap()
            .items;
        assert_eq!(machines.len(), MACHINES);
        for m in &machines {
            assert_eq!(
                m.status.as_ref().unwrap().versions.as_ref().unwrap()["agent"],
                agent
            );
        }
        let status = self.status();
        assert_eq!(status.last_good_commit.as_deref(), Some(head));
        let spent = status
            .budgets
            .unwrap()
            .into_iter()
            .find(|b| b.class == "machine-update")
            .unwrap()
            .spent;
        assert_eq!(
            spent, spends,
            "one budget spend per change, kills notwithstanding"
        );
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        self.agent.abort();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn a_killed_run_resumes_at_the_persisted_wave() {
    let (setup, _) = Setup::new("kill");
    let Setup {
        runtime,
        client,
        ns,
        dir,
        work,
        state,
        ..
    } = &setup;
    let server = TestServer::shared();
    let fleets = Api::<Fleet>::namespaced(client.clone(), ns);
    let commit = |message: &str| setup.commit(message);

    // The upgrade, killed twice in the middle of a wave.
    write_fleet(work, "agent-2.0");
    let second = commit("Upgrade the agent");
    let mut killed_at = Vec::new();
    for (attempt, wave) in [1, 2].into_iter().enumerate() {
        let log = dir.join(format!("run-{}.log", attempt + 1));
        let mut run = start(server.kubeconfig(), ns, state, &log);
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
    let mut run = start(server.kubeconfig(), ns, state, &log);
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
    setup.converged_with_spends("agent-2.0", 2 * MACHINES as i64, &second);
}

/// A crash point between the applies of an admitted batch and the next status save: the
/// batch was saved before its writes, so the restarted run spends nothing again and gates
/// the objects it wrote.
#[test]
fn a_kill_between_an_apply_and_the_next_save_spends_once_and_gates_the_object() {
    let (setup, _) = Setup::new("crashpoint");
    write_fleet(&setup.work, "agent-2.0");
    let second = setup.commit("Upgrade the agent");
    setup.crash_at("apply-returned:3");
    // The save before the writes holds them in flight, and their spends.
    let status = setup.status();
    let rollout = status.rollout.clone().unwrap();
    assert_eq!(rollout.commit, second);
    assert!(rollout.in_flight.unwrap_or(0) > 0, "{rollout:?}");
    let mut run = setup.run("after.log", &[]);
    let code = wait(&mut run, Duration::from_secs(120));
    let log = setup.log("after.log");
    assert_eq!(code, 0, "{log}");
    assert!(log.contains("resuming the rollout"), "{log}");
    assert!(!log.contains("failed:"), "a re-gated object failed: {log}");
    setup.converged_with_spends("agent-2.0", 2 * MACHINES as i64, &second);
}

/// The waves a run's log says it started (`wave 2 machines/wave-2: starting`).
fn started_waves(log: &str) -> Vec<String> {
    log.lines()
        .filter(|l| l.contains(": starting "))
        .filter_map(|l| {
            let at = l.find("wave ")?;
            Some(l[at..].split(':').next()?.to_owned())
        })
        .collect()
}

/// The spends of `machine-update` the Fleet status records.
fn machine_update_spends(status: &endstate_api::FleetStatus) -> i64 {
    status
        .budgets
        .iter()
        .flatten()
        .find(|b| b.class == "machine-update")
        .map_or(0, |b| b.spent)
}

/// The fault matrix, for a good upgrade: the run is killed at the named crash point, from its
/// log is checked that it stopped there, and the restarted run finishes the rollout without
/// starting a wave again and with each change's budget spent once (the budget allows exactly
/// the creates and the updates: a spend counted twice would stall it).
fn crash_during_an_upgrade(name: &str, point: &str) {
    let (setup, _) = Setup::new(name);
    write_fleet(&setup.work, "agent-2.0");
    let second = setup.commit("Upgrade the agent");
    let crashed = setup.crash_at(point);
    let mut run = setup.run("after.log", &[]);
    let code = wait(&mut run, Duration::from_secs(120));
    let after = setup.log("after.log");
    assert_eq!(code, 0, "{after}");
    assert!(after.contains("resuming the rollout"), "{after}");
    let before: Vec<String> = started_waves(&crashed);
    for wave in started_waves(&after) {
        assert!(
            !before.contains(&wave),
            "{wave} started again after the kill at {point}:\n{crashed}\n---\n{after}"
        );
    }
    assert!(
        !after.contains("failed:"),
        "a re-gated object failed: {after}"
    );
    setup.converged_with_spends("agent-2.0", 2 * MACHINES as i64, &second);
}

#[test]
fn a_kill_after_a_batch_of_applies_is_issued_resumes_once() {
    crash_during_an_upgrade("crash-issued", "apply-issued:2");
}

#[test]
fn a_kill_after_a_status_save_resumes_once() {
    crash_during_an_upgrade("crash-saved", "status-saved:4");
}

#[test]
fn a_kill_during_a_bake_resumes_once() {
    crash_during_an_upgrade("crash-bake", "baking:1");
}

/// The fault matrix, for a bad upgrade that trips the breaker: killed during the restore, or
/// just before the revert is pushed, the restarted run finishes the restore, pushes one
/// revert, and spends nothing more.
fn crash_after_a_trip(name: &str, point: &str) {
    let faults = Faults::parse(&["package=agent-3.0,rate=1".to_owned()]).unwrap();
    let (setup, _) = Setup::with_faults(name, faults);
    write_fleet(&setup.work, "agent-3.0");
    let bad = setup.commit("Upgrade the agent to a bad build");
    let crashed = setup.crash_at(point);
    assert!(crashed.contains("BREAKER TRIPPED"), "{crashed}");
    let spent = machine_update_spends(&setup.status());
    let mut run = setup.run("after.log", &[]);
    let code = wait(&mut run, Duration::from_secs(120));
    let after = setup.log("after.log");
    assert_eq!(code, 3, "tripped: {after}");
    assert!(
        !after.contains(": starting "),
        "no wave starts after a trip: {after}"
    );
    let status = setup.status();
    assert_eq!(machine_update_spends(&status), spent, "{after}");
    // Every Machine is back at the good version.
    let machines = setup
        .runtime
        .block_on(
            Api::<Machine>::namespaced(setup.client.clone(), &setup.ns).list(&Default::default()),
        )
        .unwrap()
        .items;
    assert!(
        machines
            .iter()
            .all(|m| m.spec.packages["agent"] == "agent-1.0"),
        "{after}"
    );
    // One revert on the remote, of the bad commit.
    let log = git(
        &setup.dir.join("remote.git"),
        &["log", "--format=%B", "main"],
    );
    assert_eq!(
        log.matches(&format!("Endstate-Revert-Of: {bad}")).count(),
        1,
        "{log}"
    );
}

#[test]
fn a_kill_during_the_restore_finishes_it_and_reverts_once() {
    crash_after_a_trip("crash-restore", "restore-issued:1");
}

#[test]
fn a_kill_before_the_revert_push_pushes_it_once() {
    crash_after_a_trip("crash-revert", "revert-push:1");
}

impl Setup {
    /// Runs until the crash point `point` (`NAME:PASS`) kills the run; checks from its log
    /// that it stopped there, and returns the log.
    fn crash_at(&self, point: &str) -> String {
        let mut run = self.run("crash.log", &[("ENDSTATE_CRASH_AT", point)]);
        let code = wait(&mut run, Duration::from_secs(120));
        let crashed = self.log("crash.log");
        let (at, pass) = point.split_once(':').unwrap();
        assert_eq!(code, -1, "killed by a signal: {crashed}");
        assert!(
            crashed.contains(&format!("crash point {at} reached (pass {pass})")),
            "{crashed}"
        );
        crashed
    }

    /// Waits until the Fleet's rollout of `commit` is applying wave `wave` with changes in
    /// flight, while `run` runs.
    fn wait_for_wave(&self, run: &mut Child, log: &str, commit: &str, wave: i32) {
        let fleets = Api::<Fleet>::namespaced(self.client.clone(), &self.ns);
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            assert!(
                Instant::now() < deadline,
                "wave {wave} never started: {}",
                self.log(log)
            );
            assert!(
                run.try_wait().unwrap().is_none(),
                "the run ended early: {}",
                self.log(log)
                    .lines()
                    .filter(|l| !l.contains(" WARN ") && !l.contains(" ERROR kube_client"))
                    .collect::<Vec<_>>()
                    .join("\n")
            );
            if let Ok(fleet) = self.runtime.block_on(fleets.get("f"))
                && let Some(r) = fleet.status.unwrap_or_default().rollout
                && r.commit == commit
                && r.wave == wave
                && r.phase == "Applying"
                && r.in_flight.unwrap_or(0) > 0
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The API server killed and restarted in the middle of one wave, etcd in the middle of the
/// next, on a server of the test's own: the run rides both out and finishes the rollout, with
/// each change's budget spent once.
#[test]
fn a_restart_of_the_api_server_then_of_etcd_mid_wave_loses_nothing() {
    let own = TestServer::start();
    let (mut setup, _) = Setup::on(Some(own), "restarts", Faults::none());
    write_fleet(&setup.work, "agent-2.0");
    let second = setup.commit("Upgrade the agent");
    let mut run = setup.run("run.log", &[]);
    setup.wait_for_wave(&mut run, "run.log", &second, 2);
    let server = setup.server.as_mut().unwrap();
    server.restart_apiserver().expect("the API server restarts");
    setup.wait_for_wave(&mut run, "run.log", &second, 3);
    let server = setup.server.as_mut().unwrap();
    server.restart_etcd().expect("etcd restarts");
    let code = wait(&mut run, Duration::from_secs(180));
    let log = setup.log("run.log");
    assert_eq!(code, 0, "{log}");
    for wave in ["wave 1 ", "wave 2 ", "wave 3 ", "wave 4 "] {
        assert_eq!(
            started_waves(&log)
                .iter()
                .filter(|w| w.starts_with(wave))
                .count(),
            1,
            "{wave}started once: {log}"
        );
    }
    setup.converged_with_spends("agent-2.0", 2 * MACHINES as i64, &second);
}
