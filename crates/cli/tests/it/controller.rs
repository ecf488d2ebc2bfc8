//! `endstate controller` on the real test API server: installed with `kubectl apply -k deploy/`
//! and run as the deployed ServiceAccount; two replicas with one writer through a kill, a pause
//! and a hand-over; two Fleets in one process; requests through the Fleet (approve, breaker
//! reset, suspend, resume, a spec change) to a running controller; conditions, Events and
//! `/metrics` as an operator reads them.

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use endstate_api::Fleet;
use endstate_api::k8s_openapi::api::coordination::v1::Lease;
use endstate_api::k8s_openapi::api::core::v1::Secret;
use endstate_api::k8s_openapi::api::events::v1::Event;
use endstate_sim::Faults;
use endstate_testenv::{Options, TestServer};
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;

use crate::kill::write_fleet;
use crate::support::{free_port, git, kube_namespace_on, remote_and_clone, workspace};

/// A running `endstate controller`, killed when dropped.
struct Process {
    child: Child,
    log: PathBuf,
    metrics: String,
}

impl Process {
    fn start(kubeconfig: &Path, log: PathBuf, args: &[&str]) -> Process {
        let port = free_port();
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_endstate"))
            .arg("controller")
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args(["--metrics-listen", &format!("127.0.0.1:{port}")])
            .args([
                "--lease-duration",
                "6s",
                "--renew-deadline",
                "4s",
                "--retry-period",
                "1s",
            ])
            .args(["--poll", "2s", "--shutdown-timeout", "10s"])
            .args(args)
            .env(
                "ENDSTATE_LOG",
                std::env::var("ENDSTATE_TEST_CONTROLLER_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .unwrap();
        Process {
            child,
            log,
            metrics: format!("127.0.0.1:{port}"),
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([format!("-{signal}"), self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit; its code.
    fn wait(&mut self, limit: Duration) -> i32 {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code().unwrap_or(-1);
            }
            assert!(
                Instant::now() < deadline,
                "still running after {limit:?}: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    fn get(&self, path: &str) -> (u16, String) {
        http_get(&self.metrics, path)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A plain HTTP/1.1 GET; (status, body). Retries while nothing listens yet.
fn http_get(addr: &str, path: &str) -> (u16, String) {
    http(addr, "GET", path, &[], b"")
}

fn http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut stream = loop {
        match std::net::TcpStream::connect(addr) {
            Ok(stream) => break stream,
            Err(err) => {
                assert!(Instant::now() < deadline, "{addr}: {err}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    };
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// Polls `check` until it is true.
fn eventually(limit: Duration, what: &str, check: impl FnMut() -> bool) {
    eventually_or(limit, what, check, String::new);
}

/// [`eventually`], saying `context()` (a log, say) if it times out.
fn eventually_or(
    limit: Duration,
    what: &str,
    mut check: impl FnMut() -> bool,
    context: impl Fn() -> String,
) {
    let deadline = Instant::now() + limit;
    while !check() {
        assert!(
            Instant::now() < deadline,
            "{what}: not within {limit:?}\n{}",
            context()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn kubectl(kubeconfig: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .output()
        .expect("kubectl is required");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn endstate(kubeconfig: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_endstate"))
        .args(args)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn commit(work: &Path, message: &str) -> String {
    crate::support::commit_and_push(work, message)
}

/// A namespace with a Fleet `f` following a fresh repository (24 Machines on agent-1.0
/// committed), and sim-agent operating its Machines.
struct Fleetup {
    runtime: tokio::runtime::Runtime,
    client: kube::Client,
    ns: String,
    dir: PathBuf,
    remote: PathBuf,
    work: PathBuf,
    first: String,
    agent: tokio::task::JoinHandle<Result<(), endstate_agent::Error>>,
}

impl Fleetup {
    fn new(
        server: &TestServer,
        name: &str,
        faults: Faults,
        spec: serde_json::Value,
        labels: serde_json::Value,
    ) -> Fleetup {
        let (runtime, client, ns) = kube_namespace_on(server, name);
        let (dir, remote, work) = remote_and_clone(name);
        write_fleet(&work, "agent-1.0");
        let first = commit(&work, "The fleet");
        let mut spec_value = json!({
            "source": {"url": format!("file://{}", remote.display()), "branch": "main", "interval": "2s"},
            "revert": {"authorName": "endstate", "authorEmail": "endstate@example.com"}
        });
        merge(&mut spec_value, spec);
        let fleet: Fleet = serde_json::from_value(json!({
            "apiVersion": "fleet.endstate.dev/v1alpha1", "kind": "Fleet",
            "metadata": {"name": "f", "namespace": ns, "labels": labels},
            "spec": spec_value,
        }))
        .unwrap();
        let agent = crate::support::fleet_with_agent(
            &runtime,
            &client,
            &fleet,
            Duration::from_millis(300),
            faults,
        );
        Fleetup {
            runtime,
            client,
            ns,
            dir,
            remote,
            work,
            first,
            agent,
        }
    }

    fn fleets(&self) -> Api<Fleet> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    fn fleet(&self) -> Fleet {
        self.runtime.block_on(self.fleets().get("f")).unwrap()
    }

    fn status(&self) -> endstate_api::FleetStatus {
        self.fleet().status.unwrap_or_default()
    }

    fn good_at(&self, commit: &str) -> bool {
        let status = self.status();
        status.last_good_commit.as_deref() == Some(commit)
            && !status
                .rollout
                .as_ref()
                .is_some_and(|r| r.phase == "Applying" || r.phase == "Baking")
    }

    fn condition(&self, type_: &str) -> Option<endstate_api::Condition> {
        self.status()
            .conditions?
            .into_iter()
            .find(|c| c.type_ == type_)
    }

    fn spent(&self, class: &str) -> i64 {
        self.status()
            .budgets
            .unwrap_or_default()
            .into_iter()
            .find(|b| b.class == class)
            .map_or(0, |b| b.spent)
    }

    fn event_reasons(&self) -> Vec<String> {
        self.runtime
            .block_on(
                Api::<Event>::namespaced(self.client.clone(), &self.ns).list(&Default::default()),
            )
            .unwrap()
            .items
            .into_iter()
            .filter_map(|e| e.reason)
            .collect()
    }

    /// A controller of this namespace's Fleets, its Lease beside them, as replica `id`.
    fn controller(&self, kubeconfig: &Path, id: &str) -> Process {
        Process::start(
            kubeconfig,
            self.dir.join(format!("{id}.log")),
            &[
                "--namespace",
                &self.ns,
                "--lease-namespace",
                &self.ns,
                "--lease-name",
                "endstate",
                "--identity",
                id,
                "--state-dir",
                self.dir.join(format!("state-{id}")).to_str().unwrap(),
            ],
        )
    }

    fn patch_spec(&self, patch: serde_json::Value) {
        self.runtime
            .block_on(self.fleets().patch(
                "f",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": patch})),
            ))
            .unwrap();
    }
}

impl Drop for Fleetup {
    fn drop(&mut self) {
        self.agent.abort();
        if std::env::var_os("ENDSTATE_KEEP_TEST_DIRS").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn merge(into: &mut serde_json::Value, from: serde_json::Value) {
    match (into, from) {
        (serde_json::Value::Object(into), serde_json::Value::Object(from)) => {
            for (k, v) in from {
                merge(into.entry(k).or_insert(serde_json::Value::Null), v);
            }
        }
        (into, from) => *into = from,
    }
}

fn lease(
    client: &kube::Client,
    runtime: &tokio::runtime::Runtime,
    ns: &str,
    name: &str,
) -> Option<Lease> {
    runtime
        .block_on(Api::<Lease>::namespaced(client.clone(), ns).get_opt(name))
        .unwrap()
}

fn holder(lease: &Option<Lease>) -> String {
    lease
        .as_ref()
        .and_then(|l| l.spec.as_ref())
        .and_then(|s| s.holder_identity.clone())
        .unwrap_or_default()
}

/// The families and samples of an OpenMetrics exposition, as the Prometheus Python client's
/// parser (not the producer) reads them: `name value` per sample.
fn parse_metrics(text: &str) -> std::collections::BTreeMap<String, f64> {
    let script = "import sys\nfrom prometheus_client.openmetrics.parser import text_string_to_metric_families\n\
                  for family in text_string_to_metric_families(sys.stdin.read()):\n    \
                  for s in family.samples:\n        \
                  labels = ','.join(f'{k}={v}' for k, v in sorted(s.labels.items()))\n        \
                  print(f'{s.name}{{{labels}}} {s.value}')\n";
    let mut child = Command::new("/usr/bin/python3")
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect(
            "/usr/bin/python3 with python3-prometheus-client is required (.ci/run installs it)",
        );
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the exposition does not parse: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            Some((name.to_owned(), value.parse().ok()?))
        })
        .collect()
}

/// The sum of every sample of `name` whose labels contain `labels`.
fn sample(metrics: &std::collections::BTreeMap<String, f64>, name: &str, labels: &str) -> f64 {
    metrics
        .iter()
        .filter(|(k, _)| k.starts_with(&format!("{name}{{")) && k.contains(labels))
        .map(|(_, v)| v)
        .sum()
}

#[test]
fn the_deployed_service_account_runs_a_rollout_and_may_do_nothing_more() {
    let server = TestServer::shared();
    let admin = server.kubeconfig();
    let (code, out, err) = kubectl(
        admin,
        &[
            "apply",
            "--server-side",
            "--force-conflicts",
            "-k",
            workspace().join("deploy").to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("deployment.apps/endstate-controller serverside-applied"),
        "{out}"
    );

    let setup = Fleetup::new(
        server,
        "ctl-rbac",
        Faults::none(),
        json!({"source": {"interval": "1h"}, "webhook": {"secretRef": {"name": "fleet-webhook"}}}),
        json!({}),
    );
    let ns = setup.ns.clone();
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "fleet-webhook", "namespace": ns},
        "stringData": {"token": "hook-secret"}
    }))
    .unwrap();
    setup
        .runtime
        .block_on(
            Api::<Secret>::namespaced(setup.client.clone(), &ns)
                .create(&PostParams::default(), &secret),
        )
        .unwrap();

    // The ServiceAccount's identity: a token from the TokenRequest API.
    let (code, token, err) = kubectl(
        admin,
        &[
            "create",
            "token",
            "endstate",
            "-n",
            "endstate-system",
            "--duration",
            "2h",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let sa = setup.dir.join("kubeconfig-sa");
    server.write_kubeconfig(token.trim(), &sa).unwrap();
    let can = |args: &[&str]| {
        let (code, out, err) = kubectl(&sa, &[&["auth", "can-i"], args].concat());
        assert!(code == 0 || code == 1, "{out}{err}");
        out.trim() == "yes"
    };
    for allowed in [
        vec!["patch", "machines.fleet.endstate.dev", "-n", &ns],
        vec!["create", "machines.fleet.endstate.dev", "-n", &ns],
        vec![
            "update",
            "fleets.fleet.endstate.dev",
            "--subresource=status",
            "-n",
            &ns,
        ],
        vec!["create", "events.events.k8s.io", "-n", &ns],
        vec![
            "update",
            "leases.coordination.k8s.io/endstate-controller",
            "-n",
            "endstate-system",
        ],
        vec!["get", "secrets/fleet-webhook", "-n", &ns],
    ] {
        assert!(can(&allowed), "the controller needs {allowed:?}");
    }
    for denied in [
        vec!["list", "secrets", "-n", &ns],
        vec!["watch", "secrets", "-n", &ns],
        vec!["delete", "secrets/fleet-webhook", "-n", &ns],
        vec![
            "update",
            "leases.coordination.k8s.io/endstate-controller",
            "-n",
            &ns,
        ],
        vec![
            "update",
            "leases.coordination.k8s.io/other",
            "-n",
            "endstate-system",
        ],
        vec!["create", "pods", "--subresource=exec", "-n", &ns],
        vec!["create", "customresourcedefinitions.apiextensions.k8s.io"],
        vec!["bind", "clusterroles.rbac.authorization.k8s.io"],
        vec![
            "create",
            "rolebindings.rbac.authorization.k8s.io",
            "-n",
            &ns,
        ],
        vec!["update", "fleets.fleet.endstate.dev", "-n", &ns],
    ] {
        assert!(
            !can(&denied),
            "the controller must not be allowed {denied:?}"
        );
    }

    // The controller as that ServiceAccount: the initial sync, then a push announced by the
    // webhook (the interval is an hour) rolls out.
    let hook_port = free_port();
    let mut controller = Process::start(
        &sa,
        setup.dir.join("controller.log"),
        &[
            "--namespace",
            &ns,
            "--lease-namespace",
            "endstate-system",
            "--lease-name",
            "endstate-controller",
            "--identity",
            "sa-replica",
            "--webhook-listen",
            &format!("127.0.0.1:{hook_port}"),
            "--state-dir",
            setup.dir.join("state").to_str().unwrap(),
        ],
    );
    eventually(Duration::from_secs(120), "the initial sync", || {
        assert!(controller.alive(), "{}", controller.log());
        setup.good_at(&setup.first)
    });
    eventually(Duration::from_secs(20), "readiness", || {
        controller.get("/readyz").0 == 200
    });
    assert_eq!(controller.get("/healthz").0, 200);
    let before = parse_metrics(&controller.get("/metrics").1);

    write_fleet(&setup.work, "agent-2.0");
    let second = commit(&setup.work, "Upgrade the agent");
    let body = format!(r#"{{"ref":"refs/heads/main","commit":"{second}"}}"#);
    let signature =
        endstate_git::webhook::sign(&endstate_git::Secret::new("hook-secret"), body.as_bytes());
    let (status, text) = http(
        &format!("127.0.0.1:{hook_port}"),
        "POST",
        &format!("/hook/{ns}/f"),
        &[
            ("X-Endstate-Signature", &signature),
            ("Content-Type", "application/json"),
        ],
        body.as_bytes(),
    );
    assert_eq!(status, 202, "{text}");
    let (status, _) = http(
        &format!("127.0.0.1:{hook_port}"),
        "POST",
        &format!("/hook/{ns}/f"),
        &[("X-Endstate-Signature", "sha256=00")],
        body.as_bytes(),
    );
    assert_eq!(status, 401, "a bad signature is refused");
    eventually(Duration::from_secs(120), "the rollout of the push", || {
        assert!(controller.alive(), "{}", controller.log());
        setup.good_at(&second)
    });

    // As an operator reads it.
    let fleet_ref = "fleet/f".to_owned();
    let (code, out, err) = kubectl(
        admin,
        &[
            "wait",
            "--for=condition=Ready",
            &fleet_ref,
            "-n",
            &ns,
            "--timeout=30s",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = kubectl(admin, &["get", "fleet", "f", "-n", &ns]);
    assert_eq!(code, 0, "{out}{err}");
    for column in ["READY", "REASON", "PHASE", "WAVE", "BREAKER"] {
        assert!(out.contains(column), "{out}");
    }
    assert!(
        out.contains("True") && out.contains("InSync") && out.contains("closed"),
        "{out}"
    );
    let (code, out, err) = kubectl(admin, &["get", "endstate", "-n", &ns]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("fleet.fleet.endstate.dev/f") && out.contains("m-000"),
        "{out}"
    );
    let fleet = setup.fleet();
    let conditions = fleet.status.clone().unwrap().conditions.unwrap();
    for condition in &conditions {
        assert_eq!(
            condition.observed_generation, fleet.metadata.generation,
            "{condition:?}"
        );
    }
    assert_eq!(
        fleet.status.as_ref().unwrap().observed_generation,
        fleet.metadata.generation
    );
    let ready = conditions.iter().find(|c| c.type_ == "Ready").unwrap();
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("True", "InSync")
    );

    // Events for the waves, and counters that moved during the rollout.
    let reasons = setup.event_reasons();
    for reason in ["WaveStarted", "WaveCompleted", "RolloutCompleted"] {
        assert!(
            reasons.iter().any(|r| r == reason),
            "no {reason} Event: {reasons:?}"
        );
    }
    let after = parse_metrics(&controller.get("/metrics").1);
    let fleet_labels = format!("fleet=f,namespace={ns}");
    for name in [
        "endstate_waves_started_total",
        "endstate_waves_completed_total",
        "endstate_reconcile_total",
    ] {
        assert!(
            sample(&after, name, &fleet_labels) > sample(&before, name, &fleet_labels),
            "{name} did not move: {after:?}"
        );
    }
    assert!(
        sample(&after, "endstate_api_writes_total", "verb=apply") >= 48.0,
        "{after:?}"
    );
    assert_eq!(sample(&after, "endstate_leader", ""), 1.0);
    assert!(
        after
            .keys()
            .any(|k| k.starts_with("endstate_budget_remaining{")),
        "{after:?}"
    );

    // SIGTERM: the state saved, the Lease released.
    controller.signal("TERM");
    assert_eq!(
        controller.wait(Duration::from_secs(30)),
        0,
        "{}",
        controller.log()
    );
    let released = lease(
        &setup.client,
        &setup.runtime,
        "endstate-system",
        "endstate-controller",
    );
    assert_eq!(holder(&released), "", "the Lease is released on SIGTERM");
}

/// Sets the machine-update budget of the repository's policy.
fn set_budget(work: &Path, limit: u32) {
    let path = work.join("policy.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replace("limit: 48", &format!("limit: {limit}"))).unwrap();
}

/// One audited mutating request: when the server received it, from which replica, what.
#[derive(Debug)]
struct Write {
    at: String,
    replica: char,
    what: String,
}

/// The mutating requests of the replicas `endstate-controller/… (<id>)` in the audit log.
fn audited_writes(log: &Path) -> Vec<Write> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let mut writes: Vec<Write> = text
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|e| e["stage"] == "ResponseComplete")
        .filter(|e| {
            matches!(
                e["verb"].as_str(),
                Some("create" | "update" | "patch" | "delete")
            )
        })
        .filter_map(|e| {
            let agent = e["userAgent"].as_str()?;
            let id = agent
                .strip_prefix("endstate-controller/")?
                .split_once(" (")?
                .1;
            let replica = id.strip_suffix(')')?.chars().next()?;
            Some(Write {
                at: e["requestReceivedTimestamp"].as_str()?.to_owned(),
                replica,
                what: format!(
                    "{} {}/{}",
                    e["verb"].as_str()?,
                    e["objectRef"]["resource"].as_str().unwrap_or_default(),
                    e["objectRef"]["name"].as_str().unwrap_or_default()
                ),
            })
        })
        .collect();
    writes.sort_by(|a, b| a.at.cmp(&b.at));
    writes
}

#[test]
fn one_replica_writes_through_a_kill_a_pause_and_a_hand_over() {
    let dir = std::env::temp_dir().join(format!("endstate-ctl-audit-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let policy = dir.join("audit-policy.yaml");
    std::fs::write(
        &policy,
        "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived]\nrules:\n- level: Metadata\n  verbs: [create, update, patch, delete]\n- level: None\n",
    )
    .unwrap();
    let audit = dir.join("audit.log");
    let server = TestServer::start_with(Options {
        apiserver_args: vec![
            format!("--audit-policy-file={}", policy.display()),
            format!("--audit-log-path={}", audit.display()),
        ],
    });
    let setup = Fleetup::new(
        &server,
        "ctl-failover",
        Faults::none(),
        json!({}),
        json!({}),
    );
    set_budget(&setup.work, 96);
    let first = commit(&setup.work, "A budget for three rollouts");
    let ns = setup.ns.clone();
    let kubeconfig = server.kubeconfig();
    let replica = |id: &str| setup.controller(kubeconfig, id);
    let holder_now = || holder(&lease(&setup.client, &setup.runtime, &ns, "endstate"));

    // a leads and syncs; b stands by with warm caches.
    let mut a = replica("a");
    eventually(Duration::from_secs(30), "a leads", || holder_now() == "a");
    eventually(Duration::from_secs(120), "the initial sync", || {
        setup.good_at(&first)
    });
    let mut b = replica("b");
    eventually(Duration::from_secs(30), "b is ready as a standby", || {
        b.get("/readyz").0 == 200
    });
    assert_eq!(holder_now(), "a");

    // SIGKILL a in the middle of a wave: b takes over once the lease expires and resumes there.
    write_fleet(&setup.work, "agent-2.0");
    set_budget(&setup.work, 96);
    let second = commit(&setup.work, "Upgrade the agent");
    let mut killed_at = 0;
    eventually(
        Duration::from_secs(120),
        "a wave of the upgrade in flight",
        || {
            let status = setup.status();
            match status.rollout {
                Some(r)
                    if r.commit == second
                        && r.wave >= 1
                        && r.phase == "Applying"
                        && r.in_flight.unwrap_or(0) > 0 =>
                {
                    killed_at = r.wave;
                    true
                }
                _ => false,
            }
        },
    );
    a.signal("KILL");
    a.wait(Duration::from_secs(5));
    eventually(Duration::from_secs(60), "b leads", || holder_now() == "b");
    eventually(Duration::from_secs(120), "b completes the upgrade", || {
        assert!(b.alive(), "{}", b.log());
        setup.good_at(&second)
    });
    let b_log = b.log();
    assert!(b_log.contains("resuming the rollout"), "{b_log}");
    for wave in 0..=killed_at {
        let started = format!("wave {} machines/wave-{}: starting", wave + 1, wave + 1);
        assert!(
            !b_log.contains(&started),
            "b started wave {} again: {b_log}",
            wave + 1
        );
    }
    assert_eq!(
        setup.spent("machine-update"),
        48,
        "each change spent once: 24 creates, 24 updates"
    );

    // SIGTERM b with c standing by: b releases the Lease, and c takes it before it would have
    // expired.
    let mut c = replica("c");
    eventually(Duration::from_secs(30), "c is ready as a standby", || {
        c.get("/readyz").0 == 200
    });
    let renewed = lease(&setup.client, &setup.runtime, &ns, "endstate")
        .and_then(|l| l.spec?.renew_time)
        .expect("b renews the Lease");
    b.signal("TERM");
    assert_eq!(b.wait(Duration::from_secs(30)), 0, "{}", b.log());
    eventually(Duration::from_secs(30), "c leads", || holder_now() == "c");
    let acquired = lease(&setup.client, &setup.runtime, &ns, "endstate")
        .and_then(|l| l.spec?.acquire_time)
        .unwrap();
    assert!(
        acquired.0 < renewed.0 + Duration::from_secs(6),
        "c took over at {} (released at once), before b's lease (renewed {}) would have expired",
        acquired.0,
        renewed.0
    );

    // SIGSTOP c past its lease: d takes over and rolls out; c, continued, writes nothing more.
    let mut d = replica("d");
    eventually(Duration::from_secs(30), "d is ready as a standby", || {
        d.get("/readyz").0 == 200
    });
    c.signal("STOP");
    eventually(Duration::from_secs(60), "d leads", || holder_now() == "d");
    write_fleet(&setup.work, "agent-3.0");
    set_budget(&setup.work, 96);
    let third = commit(&setup.work, "Upgrade the agent again");
    eventually(
        Duration::from_secs(60),
        "d starts the third rollout",
        || setup.status().rollout.is_some_and(|r| r.commit == third),
    );
    c.signal("CONT");
    assert_eq!(
        c.wait(Duration::from_secs(30)),
        1,
        "c exits once it sees the Lease lost: {}",
        c.log()
    );
    eventually(
        Duration::from_secs(120),
        "d completes the third rollout",
        || {
            assert!(d.alive(), "{}", d.log());
            setup.good_at(&third)
        },
    );

    // The audit log: the writers follow one another, never interleave.
    let writes = audited_writes(&audit);
    let order: String = writes.iter().map(|w| w.replica).collect();
    let mut runs: Vec<char> = order.chars().collect();
    runs.dedup();
    assert_eq!(
        runs,
        vec!['a', 'b', 'c', 'd'],
        "every write comes from the leader of the time: {:#?}",
        writes
            .iter()
            .map(|w| format!("{} {} {}", w.at, w.replica, w.what))
            .collect::<Vec<_>>()
    );
    for replica in ['a', 'b', 'd'] {
        assert!(
            writes
                .iter()
                .any(|w| w.replica == replica && w.what.contains("machines/")),
            "{replica} wrote Machines"
        );
    }
    drop(setup);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn two_fleets_in_one_process_roll_out_independently_and_a_trip_spares_the_other() {
    let server = TestServer::shared();
    let selector = format!("endstate-test=pair-{}", std::process::id());
    let labels = json!({"endstate-test": format!("pair-{}", std::process::id())});
    let healthy = Fleetup::new(
        server,
        "ctl-pair-ok",
        Faults::none(),
        json!({}),
        labels.clone(),
    );
    let faults = Faults::parse(&["package=agent-2.0,rate=1"]).unwrap();
    let broken = Fleetup::new(server, "ctl-pair-bad", faults, json!({}), labels);
    let mut controller = Process::start(
        server.kubeconfig(),
        healthy.dir.join("controller.log"),
        &[
            "--fleet-selector",
            &selector,
            "--lease-namespace",
            &healthy.ns,
            "--lease-name",
            "endstate",
            "--identity",
            "pair",
            "--state-dir",
            healthy.dir.join("state").to_str().unwrap(),
        ],
    );
    eventually(Duration::from_secs(120), "both initial syncs", || {
        assert!(controller.alive(), "{}", controller.log());
        healthy.good_at(&healthy.first) && broken.good_at(&broken.first)
    });
    write_fleet(&healthy.work, "agent-2.0");
    write_fleet(&broken.work, "agent-2.0");
    let good = commit(&healthy.work, "Upgrade the agent");
    let bad = commit(&broken.work, "Upgrade the agent");
    eventually(
        Duration::from_secs(120),
        "the trip of one and the rollout of the other",
        || {
            assert!(controller.alive(), "{}", controller.log());
            let tripped = broken
                .status()
                .breaker
                .is_some_and(|b| b.state == "open" && b.commit.as_deref() == Some(bad.as_str()));
            tripped && healthy.good_at(&good)
        },
    );
    // The broken fleet is restored and its revert pushed; the healthy one never noticed.
    eventually(
        Duration::from_secs(60),
        "the revert of the broken fleet",
        || git(&broken.remote, &["log", "-1", "--format=%s", "main"]).starts_with("Revert"),
    );
    assert!(
        healthy
            .status()
            .breaker
            .is_some_and(|b| b.state == "closed")
    );
    let reasons = broken.event_reasons();
    for reason in ["BreakerTripped", "RevertPushed"] {
        assert!(
            reasons.iter().any(|r| r == reason),
            "no {reason} Event: {reasons:?}"
        );
    }
    assert!(
        !healthy
            .event_reasons()
            .iter()
            .any(|r| r == "BreakerTripped"),
        "the trip is the other fleet's"
    );
}

#[test]
fn requests_through_the_fleet_act_on_the_running_controller() {
    let server = TestServer::shared();
    let kubeconfig = server.kubeconfig();
    let faults = Faults::parse(&["package=agent-3.0,rate=1"]).unwrap();
    let setup = Fleetup::new(server, "ctl-requests", faults, json!({}), json!({}));
    let ns = setup.ns.clone();
    // The canary holds for approval; another overlay (`other/`) annotates every object.
    let policy = "apiVersion: fleet.endstate.dev/v1alpha1\nkind: RolloutPolicy\nmetadata:\n  name: p\nspec:\n  machines:\n    waves:\n    - size: 1\n      pause: true\n    - size: 100%\n    spreadBy: idc\n    maxUnavailable: 4\n  clusters:\n    waves:\n    - size: 100%\n  gates:\n    timeout: 60s\n  budgets:\n  - class: machine-update\n    limit: 1000\n    window: 1h\n";
    std::fs::write(setup.work.join("policy.yaml"), policy).unwrap();
    std::fs::create_dir_all(setup.work.join("other")).unwrap();
    std::fs::write(
        setup.work.join("other/kustomization.yaml"),
        "resources:\n- ..\ncommonAnnotations:\n  tier: other\n",
    )
    .unwrap();
    let first = commit(&setup.work, "Hold the canary; another overlay");
    let mut controller = setup.controller(kubeconfig, "requests");
    let paused = || setup.status().rollout.is_some_and(|r| r.phase == "Paused");
    let alive = |controller: &mut Process| assert!(controller.alive(), "{}", controller.log());

    // The canary of the initial sync holds: an approval for another wave is refused, one for
    // it releases the rest.
    eventually(Duration::from_secs(120), "the canary holds", || {
        alive(&mut controller);
        paused()
    });
    let ready = setup.condition("Ready").unwrap();
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "AwaitingApproval"),
        "{ready:?}"
    );
    let holding = setup.status().rollout.unwrap();
    let (code, out, err) = endstate(kubeconfig, &["approve", "f", "-n", &ns, "--wave", "1"]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains("not 1"), "{err}");
    assert!(paused(), "a refused approval releases nothing");
    let wave = holding.wave_name.unwrap();
    let (code, out, err) = endstate(kubeconfig, &["approve", "f", "-n", &ns, "--wave", &wave]);
    assert_eq!(code, 0, "{out}{err}");
    eventually(Duration::from_secs(120), "the initial sync", || {
        alive(&mut controller);
        setup.good_at(&first)
    });

    // While the status holds, the transition times do not move (a fetch request saves it).
    let ready = setup.condition("Ready").unwrap();
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("True", "InSync")
    );
    let (code, out, err) = endstate(kubeconfig, &["reconcile", "f", "-n", &ns]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("Ready") && out.contains("InSync"), "{out}");
    assert_eq!(
        setup.condition("Ready").unwrap().last_transition_time,
        ready.last_transition_time
    );

    // Suspended: a new commit is not even fetched; resumed: it rolls out, up to its canary,
    // which `kubectl annotate` approves.
    let (code, out, err) = endstate(kubeconfig, &["suspend", "f", "-n", &ns]);
    assert_eq!(code, 0, "{out}{err}");
    eventually(
        Duration::from_secs(30),
        "the Fleet reports itself suspended",
        || {
            setup
                .condition("Ready")
                .is_some_and(|c| c.reason == "Suspended")
        },
    );
    let upgrade = |agent: &str| {
        // write_fleet writes its own policy: put this test's back.
        write_fleet(&setup.work, agent);
        std::fs::write(setup.work.join("policy.yaml"), policy).unwrap();
    };
    upgrade("agent-2.0");
    let second = commit(&setup.work, "Upgrade the agent");
    std::thread::sleep(Duration::from_secs(5)); // two and a half intervals
    let status = setup.status();
    assert_eq!(status.last_applied_commit.as_deref(), Some(first.as_str()));
    assert!(
        status.rollout.is_none_or(|r| r.commit != second),
        "nothing moves while suspended"
    );
    let (code, out, err) = endstate(kubeconfig, &["resume", "f", "-n", &ns]);
    assert_eq!(code, 0, "{out}{err}");
    eventually(
        Duration::from_secs(60),
        "the upgrade's canary holds",
        || {
            alive(&mut controller);
            paused() && setup.status().rollout.is_some_and(|r| r.commit == second)
        },
    );
    // An approval for a wave that does not hold is refused by the controller itself.
    let annotate = |args: &[&str]| {
        let (code, out, err) = kubectl(
            kubeconfig,
            &[&["annotate", "fleet", "f", "-n", &ns, "--overwrite"], args].concat(),
        );
        assert_eq!(code, 0, "{out}{err}");
    };
    annotate(&[
        "fleet.endstate.dev/approve-requested-at=by-hand-0",
        "fleet.endstate.dev/approve-wave=machines/wave-9",
    ]);
    eventually(Duration::from_secs(30), "the refusal recorded", || {
        setup.status().last_handled_approve_at.as_deref() == Some("by-hand-0")
    });
    assert!(paused(), "an approval of another wave releases nothing");
    annotate(&[
        "fleet.endstate.dev/approve-requested-at=by-hand-1",
        "fleet.endstate.dev/approve-wave-",
    ]);
    eventually(Duration::from_secs(120), "the upgrade", || {
        alive(&mut controller);
        setup.good_at(&second)
    });
    assert_eq!(
        setup.status().last_handled_approve_at.as_deref(),
        Some("by-hand-1")
    );

    // A failing upgrade trips the breaker; `endstate breaker reset` shows why, then closes it.
    upgrade("agent-3.0");
    let third = commit(&setup.work, "Upgrade to a broken agent");
    eventually(Duration::from_secs(120), "the trip", || {
        alive(&mut controller);
        setup
            .status()
            .breaker
            .is_some_and(|b| b.state == "open" && b.commit.as_deref() == Some(third.as_str()))
    });
    let ready = setup.condition("Ready").unwrap();
    assert_eq!(ready.reason, "BreakerOpen", "{ready:?}");
    let (code, out, err) = endstate(kubeconfig, &["status", "f", "-n", &ns]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("BREAKER OPEN") && out.contains("quarantined"),
        "{out}"
    );
    let (code, out, err) = endstate(kubeconfig, &["breaker", "reset", "f", "-n", &ns]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("the evidence") && out.contains("breaker closed"),
        "{out}"
    );
    assert_eq!(setup.status().breaker.unwrap().state, "closed");

    // A new path in the spec takes effect without a restart.
    setup.patch_spec(json!({"source": {"path": "other"}}));
    eventually(
        Duration::from_secs(60),
        "the other overlay's canary holds",
        || {
            alive(&mut controller);
            paused()
        },
    );
    let (code, out, err) = endstate(kubeconfig, &["approve", "f", "-n", &ns]);
    assert_eq!(code, 0, "{out}{err}");
    let machines: Api<endstate_api::Machine> = Api::namespaced(setup.client.clone(), &ns);
    eventually(
        Duration::from_secs(120),
        "every Machine annotated by the other overlay",
        || {
            alive(&mut controller);
            let list = setup
                .runtime
                .block_on(machines.list(&Default::default()))
                .unwrap()
                .items;
            list.len() == 24
                && list.iter().all(|m| {
                    m.metadata
                        .annotations
                        .as_ref()
                        .and_then(|a| a.get("tier"))
                        .map(String::as_str)
                        == Some("other")
                })
        },
    );
    let generation = setup.fleet().metadata.generation;
    eventually(
        Duration::from_secs(30),
        "observedGeneration follows the spec",
        || setup.status().observed_generation == generation,
    );
    let reasons = setup.event_reasons();
    for reason in [
        "AwaitingApproval",
        "Approved",
        "ApprovalRefused",
        "Suspended",
        "Resumed",
        "BreakerTripped",
        "BreakerReset",
    ] {
        assert!(
            reasons.iter().any(|r| r == reason),
            "no {reason} Event: {reasons:?}"
        );
    }
}

/// A new Fleet said `Ready=True InSync` before anything was fetched, and again at the end of
/// its first rollout in the save before the good commit: `kubectl wait --for=condition=Ready`
/// returned before the fleet was there. Every status update of a new Fleet is watched; Ready
/// turns True only in the update that records the good commit, and `kubectl wait` returns
/// only once every Machine is live and healthy at its spec.
#[test]
fn a_new_fleet_is_ready_only_once_its_machines_are_live_and_healthy() {
    use futures::StreamExt as _;
    use kube::runtime::{WatchStreamExt as _, watcher};

    let server = TestServer::shared();
    let kubeconfig = server.kubeconfig();
    let setup = Fleetup::new(server, "ctl-ready", Faults::default(), json!({}), json!({}));
    let ns = setup.ns.clone();
    // Every status the Fleet goes through, in order.
    let updates = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let watch = {
        let updates = updates.clone();
        let stream = watcher(
            setup.fleets(),
            watcher::Config::default().fields("metadata.name=f"),
        )
        .applied_objects();
        setup.runtime.spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(Ok(fleet)) = stream.next().await {
                updates
                    .lock()
                    .unwrap()
                    .push(fleet.status.unwrap_or_default());
            }
        })
    };
    let mut wait = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args([
            "wait",
            "--for=condition=Ready",
            "fleet/f",
            "-n",
            &ns,
            "--timeout=180s",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl is required");
    let mut controller = setup.controller(kubeconfig, "ready");
    let deadline = Instant::now() + Duration::from_secs(200);
    let waited = loop {
        if let Some(status) = wait.try_wait().unwrap() {
            break status;
        }
        assert!(controller.alive(), "{}", controller.log());
        assert!(Instant::now() < deadline, "kubectl wait is still waiting");
        std::thread::sleep(Duration::from_millis(20));
    };
    // What kubectl saw as Ready is what is live now: the Fleet at its good commit, and every
    // Machine healthy at its spec.
    let status = setup.status();
    let machines = setup
        .runtime
        .block_on(
            Api::<endstate_api::Machine>::namespaced(setup.client.clone(), &ns)
                .list(&Default::default()),
        )
        .unwrap()
        .items;
    let mut out = String::new();
    wait.stderr
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert!(
        waited.success(),
        "kubectl wait: {out}\n{}",
        controller.log()
    );
    assert_eq!(
        status.last_good_commit.as_deref(),
        Some(setup.first.as_str())
    );
    assert_eq!(machines.len(), 24);
    for machine in &machines {
        let live = machine.status.as_ref().expect("a Machine with a status");
        assert_eq!(
            live.observed_generation, machine.metadata.generation,
            "{machine:?}"
        );
        assert_eq!(
            live.phase,
            Some(endstate_api::MachinePhase::Running),
            "{machine:?}"
        );
        assert_eq!(
            live.versions.as_ref(),
            Some(&machine.spec.packages),
            "{machine:?}"
        );
    }
    watch.abort();
    // The Fleet as created, before the controller wrote any status, does not count.
    let updates: Vec<endstate_api::FleetStatus> = updates
        .lock()
        .unwrap()
        .iter()
        .filter(|s| s.conditions.is_some())
        .cloned()
        .collect();
    let ready = |s: &endstate_api::FleetStatus| {
        s.conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == "Ready")
            .map(|c| (c.status.clone(), c.reason.clone()))
    };
    let first_ready = updates
        .iter()
        .position(|s| ready(s).is_some_and(|(status, _)| status == "True"))
        .expect("a Ready update");
    assert!(first_ready > 0, "the first status is Ready: {updates:#?}");
    assert_eq!(
        updates[first_ready].last_good_commit.as_deref(),
        Some(setup.first.as_str()),
        "Ready=True without the good commit: {:#?}",
        &updates[..=first_ready]
    );
    // Before it: a new Fleet reconciling, then its rollout; never Ready.
    let (status, reason) = ready(&updates[0]).expect("conditions in the first status");
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "Progressing"),
        "{updates:#?}"
    );
}
