//! `kube-loop-bench`: the whole loop on a real API server at fleet size. `endstate run --live
//! kube --until-idle` rolls out the initial sync of N Machines (waves `1, 5%, 25%, 100%`,
//! `maxUnavailable: 10%`) from a Git repository while `endstate sim-agent` converges them; then,
//! optionally, a fleet-wide upgrade is killed with SIGKILL in the middle of a wave and the run
//! started again.
//!
//! Printed, each beside its reference or goal:
//! - the rollout's Machines/s during the Machine waves, beside the bare server-side-apply rate
//!   (endstate's backend creating Machines on the same idle server, as `benches/ssa.rs` does),
//!   measured first in the same run;
//! - the largest `Fleet` object seen by a watch (managedFields included), against 256 KiB;
//! - the controller process's peak RSS, against 500 MB;
//! - with `--kill`, the time from the restart to the first Machine written, against 30 s.
//!
//! ```text
//! cargo build --release -p endstate -p endstate-bench
//! ./target/release/kube-loop-bench --machines 20000 [--kill]
//! ```

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::bail;
use clap::Parser;
use endstate_api::k8s_openapi::api::core::v1::Namespace;
use endstate_api::{Fleet, Machine, MachineSpec};
use endstate_bench::rollout_repo;
use endstate_core::FleetObject;
use endstate_kube::{KubeLive, Limits, Settings, install_crds};
use endstate_rollout::Live;
use endstate_testenv::TestServer;
use futures::StreamExt as _;
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::runtime::watcher;
use kube::{Api, Client};

/// Measure the loop on a real API server.
#[derive(Debug, Parser)]
struct Args {
    /// Machines in the fleet.
    #[arg(long, default_value_t = 20_000)]
    machines: usize,
    /// Machines the bare server-side-apply rate is measured on (default: as many as the fleet,
    /// at most 20000).
    #[arg(long)]
    reference: Option<usize>,
    /// After the initial sync, roll out an upgrade, SIGKILL the run in the middle of its third
    /// wave, start it again, and measure the time to its first write.
    #[arg(long)]
    kill: bool,
    /// The controller's client-side rate limit.
    #[arg(long, default_value_t = 2000.0)]
    qps: f64,
    /// Keep the repository and the runs' logs (printed) instead of removing them.
    #[arg(long)]
    keep: bool,
    /// An argument for the test kube-apiserver (an audit log, say). Repeatable.
    #[arg(long, value_name = "ARG")]
    apiserver_arg: Vec<String>,
    /// sim-agent's speed: the simulated operators' delays are divided by it. At 10^6 they
    /// report a Machine `Running` at once, in one status write.
    #[arg(long, default_value_t = 1e6)]
    agent_speed: f64,
}

/// The generated overlay's namespace.
const NS: &str = "fleet-prod";

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let endstate = endstate_bench::endstate_binary()?;
    eprintln!("starting the test server (etcd + kube-apiserver 1.20.2 on loopback)…");
    let server = TestServer::start_with(endstate_testenv::Options {
        apiserver_args: args.apiserver_arg.clone(),
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(run(&server, &args, &endstate))
}

async fn namespace(client: &Client, name: &str) -> anyhow::Result<()> {
    let namespace: Namespace =
        serde_json::from_value(serde_json::json!({"metadata": {"name": name}}))?;
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &namespace)
        .await?;
    Ok(())
}

/// The bare rate: endstate's backend creating `n` Machines on the idle server.
async fn bare_ssa_rate(
    server: &TestServer,
    client: &Client,
    n: usize,
    qps: f64,
) -> anyhow::Result<f64> {
    namespace(client, "bench-ssa").await?;
    let mut settings = Settings::new("bench-ssa", "bench");
    settings.limits = Limits {
        qps,
        burst: qps as u32,
    };
    let backend = KubeLive::connect(server.config().await, settings).await?;
    let machines: Vec<FleetObject> = (0..n)
        .map(|i| {
            FleetObject::from(Machine::new(
                &format!("m-{i:06}"),
                MachineSpec {
                    cluster: format!("cluster-{:03}", i / 1000),
                    ip: format!("10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255),
                    hostname: format!("m-{i:06}.example.internal"),
                    idc: ["hz-a", "hz-b", "hz-c"][i % 3].to_owned(),
                    packages: [
                        ("kubelet".to_owned(), "kubelet-1.27.9".to_owned()),
                        ("containerd".to_owned(), "containerd-1.7.13".to_owned()),
                    ]
                    .into(),
                    readiness_gates: Some(vec!["KubeletReady".into()]),
                    unschedulable: None,
                    os_generation: None,
                },
            ))
        })
        .collect();
    let start = Instant::now();
    let results = backend.apply(&machines).await;
    let elapsed = start.elapsed();
    if let Some(err) = results.iter().find_map(|r| r.as_ref().err()) {
        bail!("the reference apply failed: {err}");
    }
    drop(backend);
    let api = Api::<Machine>::namespaced(client.clone(), "bench-ssa");
    api.delete_collection(&DeleteParams::default(), &ListParams::default())
        .await?;
    Ok(n as f64 / elapsed.as_secs_f64())
}

/// What the watches see.
#[derive(Default)]
struct Seen {
    /// The largest Fleet object, in bytes of JSON.
    fleet: AtomicUsize,
    /// When the Fleet's status first showed a Machine wave, and when it showed the rollout
    /// completed after that.
    machine_waves: Mutex<(Option<Instant>, Option<Instant>)>,
    /// Machine spec writes (a new generation), with when they were seen.
    writes: Mutex<Vec<(Instant, i64)>>,
}

/// Watches the Fleet: its size, and when the Machine waves start and the rollout completes.
fn watch_fleet(client: Client, seen: Arc<Seen>) {
    let fleets = Api::<Fleet>::namespaced(client, NS);
    tokio::spawn(async move {
        let stream = watcher(fleets, watcher::Config::default());
        futures::pin_mut!(stream);
        while let Some(event) = stream.next().await {
            if let Ok(watcher::Event::Apply(f) | watcher::Event::InitApply(f)) = event {
                let size = serde_json::to_vec(&f).map_or(0, |v| v.len());
                seen.fleet.fetch_max(size, Ordering::Relaxed);
                let rollout = f.status.and_then(|s| s.rollout);
                let mut waves = seen.machine_waves.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(r) = rollout {
                    if waves.0.is_none() && r.wave_name.is_some_and(|w| w.starts_with("machines/"))
                    {
                        waves.0 = Some(Instant::now());
                    }
                    if waves.0.is_some() && waves.1.is_none() && r.phase == "Completed" {
                        waves.1 = Some(Instant::now());
                    }
                }
            }
        }
    });
}

/// Watches the Machines for spec writes (only for the restart: a watch of every Machine loads
/// the server like another controller would).
fn watch_machines(client: Client, seen: Arc<Seen>) {
    let machines = Api::<Machine>::namespaced(client, NS);
    tokio::spawn(async move {
        let mut generations = std::collections::HashMap::<String, i64>::new();
        let stream = watcher(machines, watcher::Config::default());
        futures::pin_mut!(stream);
        while let Some(event) = stream.next().await {
            match event {
                // What exists when the watch starts is not a write.
                Ok(watcher::Event::InitApply(m)) => {
                    let name = m.metadata.name.clone().unwrap_or_default();
                    generations.insert(name, m.metadata.generation.unwrap_or(0));
                }
                Ok(watcher::Event::Apply(m)) => {
                    let name = m.metadata.name.clone().unwrap_or_default();
                    let generation = m.metadata.generation.unwrap_or(0);
                    let before = generations.insert(name, generation);
                    if before.is_none_or(|g| g < generation) {
                        seen.writes
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push((Instant::now(), generation));
                    }
                }
                _ => {}
            }
        }
    });
}

/// `endstate run --live kube --until-idle` on the bench's Fleet.
fn start_run(
    endstate: &Path,
    kubeconfig: &Path,
    state: &Path,
    log: &Path,
    qps: f64,
) -> anyhow::Result<Child> {
    let log = std::fs::File::create(log)?;
    Ok(Command::new(endstate)
        .args(["--log-level", "info"])
        .args([
            "run",
            "--live",
            "kube",
            "--until-idle",
            "--fleet",
            "f",
            "--namespace",
            NS,
        ])
        .args([
            "--interval",
            "1h",
            "--qps",
            &qps.to_string(),
            "--burst",
            &qps.to_string(),
        ])
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .arg("--state-dir")
        .arg(state)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()?)
}

/// Peak RSS of a process while it runs, sampled every 100 ms; its exit code.
async fn wait(mut child: Child, limit: Duration) -> anyhow::Result<(i32, u64)> {
    let status = format!("/proc/{}/status", child.id());
    let deadline = Instant::now() + limit;
    let mut peak = 0;
    loop {
        if let Ok(text) = std::fs::read_to_string(&status)
            && let Some(kb) = text
                .lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        {
            peak = peak.max(kb * 1024);
        }
        if let Some(exit) = child.try_wait()? {
            return Ok((exit.code().unwrap_or(-1), peak));
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            bail!("the run did not finish within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn run(server: &TestServer, args: &Args, endstate: &Path) -> anyhow::Result<()> {
    let n = args.machines;
    let client = server.client().await;
    install_crds(&client, Duration::from_secs(60)).await?;
    let reference = args.reference.unwrap_or(n.min(20_000));
    eprintln!("measuring the bare server-side-apply rate on {reference} Machines…");
    let bare = bare_ssa_rate(server, &client, reference, args.qps).await?;

    let dir = std::env::temp_dir().join(format!("endstate-kube-loop-bench-{n}"));
    let (work, remote) = rollout_repo::create(&dir, n)?;
    namespace(&client, NS).await?;
    let fleet: Fleet = serde_json::from_value(serde_json::json!({
        "apiVersion": "fleet.endstate.dev/v1alpha1", "kind": "Fleet",
        "metadata": {"name": "f", "namespace": NS},
        "spec": {"source": {"url": format!("file://{}", remote.display()), "branch": "main", "path": "overlays/prod"},
                 "revert": {"authorName": "endstate", "authorEmail": "endstate@bench.example"}}
    }))?;
    Api::<Fleet>::namespaced(client.clone(), NS)
        .create(&PostParams::default(), &fleet)
        .await?;
    let seen = Arc::new(Seen::default());
    watch_fleet(client.clone(), seen.clone());
    let mut agent = Command::new(endstate)
        .args([
            "sim-agent",
            "--namespace",
            NS,
            "--speed",
            &args.agent_speed.to_string(),
        ])
        .arg("--kubeconfig")
        .arg(server.kubeconfig())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;

    eprintln!("initial sync of {n} Machines…");
    let state = dir.join("state");
    let started = Instant::now();
    let run = start_run(
        endstate,
        server.kubeconfig(),
        &state,
        &dir.join("sync.log"),
        args.qps,
    )?;
    let (code, rss) = wait(run, Duration::from_secs(3 * 3600)).await?;
    let wall = started.elapsed();
    if code != 0 {
        let _ = agent.kill();
        bail!(
            "the initial sync exited {code}:\n{}",
            std::fs::read_to_string(dir.join("sync.log")).unwrap_or_default()
        );
    }
    let machine_waves = match *seen.machine_waves.lock().unwrap_or_else(|p| p.into_inner()) {
        (Some(start), Some(end)) => end.duration_since(start),
        _ => bail!("the Fleet's status never showed the Machine waves start and complete"),
    };
    let rate = n as f64 / machine_waves.as_secs_f64().max(1e-9);
    println!(
        "kube-loop-bench: {n} Machines on kube-apiserver 1.20.2 (test server), sim-agent --speed {}",
        args.agent_speed
    );
    println!(
        "  initial sync (exit 0)                 {:>9.1} s wall",
        wall.as_secs_f64()
    );
    println!(
        "  Machines/s during the Machine waves   {:>9.0} /s   bare SSA {:.0}/s on {reference} → {:.0}% (goal ≥ 70%)",
        rate,
        bare,
        100.0 * rate / bare
    );
    println!(
        "  largest Fleet object seen             {:>9.1} KiB  (goal ≤ 256 KiB)",
        seen.fleet.load(Ordering::Relaxed) as f64 / 1024.0
    );
    println!(
        "  controller peak RSS                   {:>9.0} MB   (goal ≤ 500 MB)",
        rss as f64 / 1e6
    );

    if args.kill {
        watch_machines(client.clone(), seen.clone());
        rollout_repo::upgrade(&work)?;
        seen.writes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        let fleets = Api::<Fleet>::namespaced(client.clone(), NS);
        let mut run = start_run(
            endstate,
            server.kubeconfig(),
            &state,
            &dir.join("upgrade.log"),
            args.qps,
        )?;
        let deadline = Instant::now() + Duration::from_secs(3600);
        loop {
            if Instant::now() > deadline {
                bail!("the upgrade never reached its third wave");
            }
            if let Some(exit) = run.try_wait()? {
                bail!("the upgrade ended ({exit}) before it could be killed");
            }
            let status = fleets.get("f").await?.status.unwrap_or_default();
            if let Some(r) = status.rollout
                && r.wave >= 3
                && r.phase == "Applying"
                && r.in_flight.unwrap_or(0) > 0
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        run.kill()?; // SIGKILL
        run.wait()?;
        // Writes the killed run had sent may still be landing: wait until none has for 2 s.
        let mut quiet = (
            seen.writes.lock().unwrap_or_else(|p| p.into_inner()).len(),
            Instant::now(),
        );
        while quiet.1.elapsed() < Duration::from_secs(2) {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let now = seen.writes.lock().unwrap_or_else(|p| p.into_inner()).len();
            if now != quiet.0 {
                quiet = (now, Instant::now());
            }
        }
        let before = quiet.0;
        let restarted = Instant::now();
        let run = start_run(
            endstate,
            server.kubeconfig(),
            &state,
            &dir.join("resumed.log"),
            args.qps,
        )?;
        let first_write = loop {
            let writes = seen
                .writes
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            if let Some((at, _)) = writes.get(before)
                && *at > restarted
            {
                break at.duration_since(restarted);
            }
            if restarted.elapsed() > Duration::from_secs(600) {
                bail!("no Machine was written within 10 minutes of the restart");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let (code, rss) = wait(run, Duration::from_secs(3 * 3600)).await?;
        let log = std::fs::read_to_string(dir.join("resumed.log")).unwrap_or_default();
        if code != 0 || !log.contains("resuming the rollout") {
            bail!("the resumed upgrade exited {code}:\n{log}");
        }
        println!(
            "  kill -9 mid-wave → first Machine write {:>7.1} s after the restart (goal ≤ 30 s); resumed run exit 0, peak RSS {:.0} MB",
            first_write.as_secs_f64(),
            rss as f64 / 1e6
        );
        println!(
            "  largest Fleet object seen             {:>9.1} KiB",
            seen.fleet.load(Ordering::Relaxed) as f64 / 1024.0
        );
    }
    let _ = agent.kill();
    let _ = agent.wait();
    if args.keep {
        println!("  logs and repository kept in {}", dir.display());
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(())
}
