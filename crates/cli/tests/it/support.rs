//! Paths, running the binary, and comparing object sets.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// A fixture directory under `tests/fixtures`.
pub fn fixtures(sub: &str) -> PathBuf {
    workspace().join("tests/fixtures").join(sub)
}

/// Runs `endstate` with arguments.
pub fn endstate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_endstate"))
        .args(args)
        .output()
        .expect("running endstate")
}

/// Exit code, stdout, stderr.
pub fn outcome(out: &Output) -> (i32, String, String) {
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Parses a YAML stream into objects keyed by (kind, namespace, name). Integral floats become
/// integers, since kustomize writes `1.0` as `1`.
pub fn objects(stream: &str) -> BTreeMap<(String, String, String), Value> {
    let mut out = BTreeMap::new();
    for doc in serde_norway::Deserializer::from_str(stream) {
        let value: Value = serde::Deserialize::deserialize(doc).expect("valid YAML");
        if value.is_null() {
            continue;
        }
        let id = |v: &Value| v.as_str().unwrap_or_default().to_owned();
        let key = (
            id(&value["kind"]),
            id(&value["metadata"]["namespace"]),
            id(&value["metadata"]["name"]),
        );
        assert!(
            out.insert(key.clone(), normalise(value)).is_none(),
            "{key:?} twice"
        );
    }
    out
}

fn normalise(value: Value) -> Value {
    match value {
        Value::Number(n) if n.as_f64().is_some_and(|f| f.fract() == 0.0 && !n.is_i64()) => {
            Value::from(n.as_f64().unwrap() as i64)
        }
        Value::Array(items) => Value::Array(items.into_iter().map(normalise).collect()),
        Value::Object(map) => {
            Value::Object(map.into_iter().map(|(k, v)| (k, normalise(v))).collect())
        }
        other => other,
    }
}

/// Runs `git -C dir args…`, which must succeed; its trimmed stdout.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .expect("git must be installed");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// Commits everything in `work` as the test developer and pushes it to `origin main`; the
/// new commit's id.
pub fn commit_and_push(work: &Path, message: &str) -> String {
    commit_and_push_to(work, message, "main")
}

/// Commits everything in `work` as a developer and pushes it to `branch` of `origin`; returns
/// the commit id.
pub fn commit_and_push_to(work: &Path, message: &str, branch: &str) -> String {
    git(work, &["add", "-A"]);
    git(
        work,
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
    git(work, &["push", "-q", "origin", branch]);
    git(work, &["rev-parse", "HEAD"])
}

/// A runtime, the shared test API server's client with the CRDs installed, and a fresh
/// namespace `<prefix>-<pid>`.
pub fn kube_namespace(prefix: &str) -> (tokio::runtime::Runtime, kube::Client, String) {
    kube_namespace_on(endstate_testenv::TestServer::shared(), prefix)
}

/// [`kube_namespace`] on `server`.
pub fn kube_namespace_on(
    server: &endstate_testenv::TestServer,
    prefix: &str,
) -> (tokio::runtime::Runtime, kube::Client, String) {
    use endstate_api::k8s_openapi::api::core::v1::Namespace;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let client = runtime.block_on(server.client());
    runtime
        .block_on(endstate_kube::install_crds(
            &client,
            std::time::Duration::from_secs(60),
        ))
        .unwrap();
    let ns = format!("{prefix}-{}", std::process::id());
    let namespace: Namespace =
        serde_json::from_value(serde_json::json!({"metadata": {"name": ns}})).unwrap();
    runtime
        .block_on(
            kube::Api::<Namespace>::all(client.clone())
                .create(&kube::api::PostParams::default(), &namespace),
        )
        .unwrap();
    (runtime, client, ns)
}

/// A fresh directory `endstate-<name>-<pid>` with a bare `remote.git` and a `work` clone of
/// it on branch main; returns (dir, remote, work).
pub fn remote_and_clone(name: &str) -> (PathBuf, PathBuf, PathBuf) {
    let dir = std::env::temp_dir().join(format!("endstate-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (remote, work) = (dir.join("remote.git"), dir.join("work"));
    std::fs::create_dir_all(&work).unwrap();
    git(
        &dir,
        &[
            "init",
            "-q",
            "--bare",
            "-b",
            "main",
            remote.to_str().unwrap(),
        ],
    );
    git(&work, &["init", "-q", "-b", "main"]);
    git(
        &work,
        &["remote", "add", "origin", remote.to_str().unwrap()],
    );
    (dir, remote, work)
}

/// The demo's repository (initial, good upgrade, bad upgrade, revert), kept in a fresh
/// directory `endstate-<name>-test-<pid>`.
pub fn demo_repo(name: &str) -> PathBuf {
    demo_repo_of(name, 30)
}

/// [`demo_repo`] with `machines` Machines.
pub fn demo_repo_of(name: &str, machines: usize) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("endstate-{name}-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let machines = machines.to_string();
    let out = endstate(&[
        "demo",
        "--machines",
        &machines,
        "--speed",
        "0",
        "--keep",
        dir.to_str().unwrap(),
    ]);
    assert_eq!(outcome(&out).0, 0, "{}", outcome(&out).2);
    dir
}

/// Creates `fleet` in its namespace and starts sim-agent operating that namespace's Machines
/// and Clusters (each step taking `delay`, failing as `faults` say) on `runtime`.
pub fn fleet_with_agent(
    runtime: &tokio::runtime::Runtime,
    client: &kube::Client,
    fleet: &endstate_api::Fleet,
    delay: std::time::Duration,
    faults: endstate_sim::Faults,
) -> tokio::task::JoinHandle<Result<(), endstate_agent::Error>> {
    let ns = fleet
        .metadata
        .namespace
        .clone()
        .expect("a namespaced Fleet");
    runtime
        .block_on(
            kube::Api::<endstate_api::Fleet>::namespaced(client.clone(), &ns)
                .create(&kube::api::PostParams::default(), fleet),
        )
        .expect("creating the Fleet");
    runtime.spawn(endstate_agent::run(
        client.clone(),
        endstate_agent::AgentConfig::fixed(ns, delay, faults),
    ))
}

/// A loopback port nothing listens on (as of now).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `kubectl --kubeconfig KUBECONFIG ARGS…`: exit code, stdout, stderr.
pub fn kubectl(kubeconfig: &Path, args: &[&str]) -> (i32, String, String) {
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

/// Whether `kubectl auth can-i ARGS…` says yes for the identity of `kubeconfig`.
pub fn can_i(kubeconfig: &Path, args: &[&str]) -> bool {
    let (code, out, err) = kubectl(kubeconfig, &[&["auth", "can-i"], args].concat());
    assert!(code == 0 || code == 1, "{out}{err}");
    out.trim() == "yes"
}

/// A token of ServiceAccount `endstate` in `namespace`, from the TokenRequest API (2 hours).
pub fn service_account_token(admin: &Path, namespace: &str) -> String {
    let (code, token, err) = kubectl(
        admin,
        &[
            "create",
            "token",
            "endstate",
            "-n",
            namespace,
            "--duration",
            "2h",
        ],
    );
    assert_eq!(code, 0, "{err}");
    token.trim().to_owned()
}
