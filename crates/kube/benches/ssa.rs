//! Server-side apply throughput of the kube backend beside `kubectl apply --server-side`, on
//! the same objects and the same test server, in one run.
//!
//! ```sh
//! cargo bench -p endstate-kube --bench ssa -- [--machines 10000] [--qps 2000] [--burst 1000] [--in-flight 32]
//! ```
//!
//! The same steps for each: create N Machines; upgrade every tenth machine's kubelet, given the
//! whole desired set (as a repository holds it); apply that set again (a no-op); upgrade the
//! same tenth again, where kubectl is given only the changed objects, so that both write the
//! same number. endstate diffs the desired set against its watch cache and writes only what
//! differs, so the no-op writes nothing; kubectl sends every object it is given. endstate runs
//! first; its Machines are deleted before kubectl runs in a namespace of its own, so both start
//! from the same amount of data.

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use endstate_api::Machine;
use endstate_api::k8s_openapi::api::core::v1::Namespace;
use endstate_core::FleetObject;
use endstate_kube::{KubeLive, Limits, Settings, install_crds};
use endstate_rollout::Live;
use endstate_testenv::TestServer;
use kube::Api;
use kube::api::{DeleteParams, ListParams, ObjectMeta, PostParams};

struct Args {
    machines: usize,
    qps: f64,
    burst: u32,
    in_flight: usize,
}

fn parse_args() -> Args {
    let mut args = Args {
        machines: 10_000,
        qps: 2000.0,
        burst: 1000,
        in_flight: 32,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--machines" => args.machines = value().parse().expect("--machines N"),
            "--qps" => args.qps = value().parse().expect("--qps N"),
            "--burst" => args.burst = value().parse().expect("--burst N"),
            "--in-flight" => args.in_flight = value().parse().expect("--in-flight N"),
            // cargo bench passes this to every bench program.
            "--bench" => {}
            other => panic!("unknown argument {other:?}"),
        }
    }
    args
}

/// Machine `i` of the fleet, on kubelet release `kubelet`.
fn machine(i: usize, kubelet: &str) -> Machine {
    let cluster = format!("c-{:03}", i / 1000);
    let idc = format!("idc-{}", i % 3);
    Machine::test(&format!("m-{i:06}"))
        .in_cluster(&cluster)
        .ip(format!("10.{}.{}.{}", i / 65536, (i / 256) % 256, i % 256))
        .hostname(format!("node-{i:06}.example"))
        .idc(&idc)
        .package("kubelet", kubelet)
        .package("containerd", "containerd-1.7.2")
        .package("os", "os-2024.1")
        .readiness_gate("KubeletReady")
        .readiness_gate("NetworkReady")
        .os_generation(1)
        .label("fleet.endstate.dev/cluster", &cluster)
        .label("fleet.endstate.dev/idc", &idc)
        .build()
}

/// The fleet after `upgrades` upgrades of every tenth machine's kubelet.
fn fleet(n: usize, upgrades: usize) -> Vec<Machine> {
    const KUBELETS: [&str; 3] = ["kubelet-1.27.9", "kubelet-1.28.4", "kubelet-1.29.1"];
    (0..n)
        .map(|i| machine(i, KUBELETS[if i % 10 == 0 { upgrades } else { 0 }]))
        .collect()
}

/// One result line.
struct Figure {
    writes: usize,
    elapsed: Duration,
    cpu: Duration,
}

impl Figure {
    fn rate(&self) -> f64 {
        self.writes as f64 / self.elapsed.as_secs_f64()
    }
}

fn main() {
    let args = parse_args();
    let n = args.machines;
    eprintln!("starting the test server (etcd + kube-apiserver 1.20.2 on loopback)…");
    let server = TestServer::start();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run(&server, &args, n));
}

async fn run(server: &TestServer, args: &Args, n: usize) {
    let client = server.client().await;
    let version = client.apiserver_version().await.expect("server version");
    install_crds(&client, Duration::from_secs(60))
        .await
        .expect("install the CRDs");
    for ns in ["bench-kubectl", "bench-endstate"] {
        let namespace = Namespace {
            metadata: ObjectMeta {
                name: Some(ns.into()),
                ..Default::default()
            },
            ..Default::default()
        };
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &namespace)
            .await
            .unwrap_or_else(|err| panic!("create namespace {ns}: {err}"));
    }
    let kubectl_version = Command::new("kubectl")
        .args(["version", "--client", "-o", "json"])
        .output()
        .ok()
        .and_then(|out| serde_json::from_slice::<serde_json::Value>(&out.stdout).ok())
        .and_then(|v| v["clientVersion"]["gitVersion"].as_str().map(str::to_owned))
        .unwrap_or_else(|| "unknown".into());

    println!(
        "server: kube-apiserver {} (etcd on tmpfs), 2 cores",
        version.git_version
    );
    println!("objects: {n} Machines; update step: every 10th machine (kubelet upgrade)");
    println!();

    let created = fleet(n, 0);
    let updated = fleet(n, 1);
    let updated_again = fleet(n, 2);
    let changed_again: Vec<Machine> = updated_again.iter().step_by(10).cloned().collect();

    // endstate.
    let mut settings = Settings::new("bench-endstate", "bench");
    settings.limits = Limits {
        qps: args.qps,
        burst: args.burst,
    };
    settings.max_in_flight = args.in_flight;
    println!(
        "endstate: KubeLive (SSA, field manager endstate), limiter {} QPS burst {}, {} in flight; \
         each step diffs all {n} desired Machines against the watch cache and applies what differs",
        args.qps, args.burst, args.in_flight
    );
    let backend = KubeLive::connect(server.config().await, settings)
        .await
        .expect("start the backend");
    let to_objects = |machines: &[Machine]| -> Vec<FleetObject> {
        machines
            .iter()
            .map(|m| FleetObject::from(m.clone()))
            .collect()
    };
    let endstate_create = endstate_step(&backend, &to_objects(&created)).await;
    let endstate_update = endstate_step(&backend, &to_objects(&updated)).await;
    let endstate_noop = endstate_step(&backend, &to_objects(&updated)).await;
    let endstate_changed = endstate_step(&backend, &to_objects(&updated_again)).await;
    let limiter = backend.limiter().stats();
    println!();

    // Then kubectl, the same steps on the same objects in its own namespace, after endstate's
    // objects are deleted, so that both start from the same amount of data.
    let machines: Api<Machine> = Api::namespaced(client.clone(), "bench-endstate");
    machines
        .delete_collection(&DeleteParams::default(), &ListParams::default())
        .await
        .expect("delete endstate's Machines");
    while !machines
        .list(&ListParams::default().limit(1))
        .await
        .unwrap()
        .items
        .is_empty()
    {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let dir = std::env::temp_dir().join(format!("endstate-ssa-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let files = [
        ("create.yaml", &created),
        ("update.yaml", &updated),
        ("update-again-changed-only.yaml", &changed_again),
    ];
    for (name, machines) in files {
        write_yaml(&dir.join(name), machines, "bench-kubectl");
    }
    let kubeconfig = server.kubeconfig();
    let kubectl_create = kubectl(kubeconfig, &dir.join("create.yaml"), n);
    let kubectl_update = kubectl(kubeconfig, &dir.join("update.yaml"), n);
    let kubectl_noop = kubectl(kubeconfig, &dir.join("update.yaml"), n);
    let kubectl_changed = kubectl(
        kubeconfig,
        &dir.join("update-again-changed-only.yaml"),
        changed_again.len(),
    );
    std::fs::remove_dir_all(&dir).ok();
    println!();

    let kubectl_name = format!("kubectl {kubectl_version} apply --server-side");
    println!(
        "{:<36} | {:<44} | {:<44} |",
        "step", "endstate (writes, wall, writes/s, own CPU)", kubectl_name
    );
    let ours = |f: &Figure| {
        format!(
            "{:>6} writes {:>6.2} s {:>6.0}/s cpu {:>5.2} s",
            f.writes,
            f.elapsed.as_secs_f64(),
            f.rate(),
            f.cpu.as_secs_f64()
        )
    };
    let theirs = |f: &Figure| {
        format!(
            "{:>6} objects sent {:>6.2} s {:>6.0}/s",
            f.writes,
            f.elapsed.as_secs_f64(),
            f.rate()
        )
    };
    let ratio =
        |ours: &Figure, theirs: &Figure| theirs.elapsed.as_secs_f64() / ours.elapsed.as_secs_f64();
    let rows = [
        (format!("create {n}"), &endstate_create, &kubectl_create),
        (
            format!("update 10%, all {n} given"),
            &endstate_update,
            &kubectl_update,
        ),
        (
            format!("no-op, all {n} given"),
            &endstate_noop,
            &kubectl_noop,
        ),
        (
            format!("update 10% again, kubectl: {} only", changed_again.len()),
            &endstate_changed,
            &kubectl_changed,
        ),
    ];
    for (name, e, k) in rows {
        println!(
            "{name:<36} | {:<44} | {:<44} | ×{:.1} faster",
            ours(e),
            theirs(k),
            ratio(e, k)
        );
    }
    println!();
    println!(
        "×N: kubectl's wall time over endstate's for the same end state. In the last row kubectl \
         is given only the changed objects, so both write {} objects.",
        changed_again.len()
    );
    println!("limiter: {limiter:?}");
    println!("backend: {:?}", backend.stats());
    assert_eq!(endstate_noop.writes, 0, "the no-op step wrote");
}

/// This process's CPU time so far (user + system), from /proc.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // The fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i)?.parse::<u64>().ok())
        .sum();
    // USER_HZ is 100 on Linux.
    Duration::from_millis(ticks * 10)
}

/// Diffs `desired` against the cache, applies what differs, then waits until the cache has
/// seen every write (the next step diffs against it). Only the diff and the apply are timed.
async fn endstate_step(backend: &KubeLive, desired: &[FleetObject]) -> Figure {
    let start = Instant::now();
    let cpu = cpu_time();
    let changed: Vec<FleetObject> = desired
        .iter()
        .filter(|o| !backend.is_current(o))
        .cloned()
        .collect();
    let results = backend.apply(&changed).await;
    let elapsed = start.elapsed();
    let cpu = cpu_time().saturating_sub(cpu);
    let failed: Vec<String> = results
        .iter()
        .filter_map(|r| r.as_ref().err().map(ToString::to_string))
        .collect();
    assert!(
        failed.is_empty(),
        "{} applies failed, e.g. {}",
        failed.len(),
        failed[0]
    );
    let deadline = Instant::now() + Duration::from_secs(120);
    while backend.cached_len() < desired.len() || !desired.iter().all(|o| backend.is_current(o)) {
        assert!(Instant::now() < deadline, "the cache did not catch up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Figure {
        writes: changed.len(),
        elapsed,
        cpu,
    }
}

fn write_yaml(path: &Path, machines: &[Machine], namespace: &str) {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    for machine in machines {
        let mut machine = machine.clone();
        machine.metadata.namespace = Some(namespace.into());
        writeln!(out, "---").unwrap();
        // JSON is YAML, and much faster to write than YAML for 10k objects.
        serde_json::to_writer(&mut out, &machine).unwrap();
        writeln!(out).unwrap();
    }
}

/// Runs `kubectl apply --server-side` on a file of `objects` objects and times it.
fn kubectl(kubeconfig: &Path, file: &Path, objects: usize) -> Figure {
    let args = [
        "--kubeconfig".to_owned(),
        kubeconfig.display().to_string(),
        "apply".to_owned(),
        "--server-side".to_owned(),
        "--field-manager=kubectl-bench".to_owned(),
        "-f".to_owned(),
        file.display().to_string(),
    ];
    println!("$ kubectl {}", args.join(" "));
    let start = Instant::now();
    let status = Command::new("kubectl")
        .args(&args)
        .stdout(Stdio::null())
        .status()
        .expect("run kubectl");
    let elapsed = start.elapsed();
    assert!(status.success(), "kubectl apply failed: {status}");
    println!("  {objects} objects in {:.2} s", elapsed.as_secs_f64());
    Figure {
        writes: objects,
        elapsed,
        cpu: Duration::ZERO,
    }
}
