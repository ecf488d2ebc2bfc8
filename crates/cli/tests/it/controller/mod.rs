//! `endstate controller` on the real test API server: installed with `kubectl apply -k deploy/`
//! and run as the deployed ServiceAccount; two replicas with one writer through a kill, a pause
//! and a hand-over; two Fleets in one process; requests through the Fleet (approve, breaker
//! reset, suspend, resume, a spec change) to a running controller; conditions, Events and
//! `/metrics` as an operator reads them.

mod deploy;
mod owners;
mod ready;
mod replicas;
mod requests;

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
use crate::support::{
    can_i, free_port, git, kube_namespace_on, kubectl, remote_and_clone, workspace,
};

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
