//! `failover-bench`: two `endstate controller` replicas on one Fleet of N Machines, with the
//! default leader election (15 s lease, 10 s renew deadline, 2 s retry); the leader is killed
//! with SIGKILL in the middle of a wave of a fleet-wide upgrade, and the standby takes over.
//!
//! Printed, from the API server's audit log (the server's own clock):
//! - SIGKILL → the standby holds the Lease, beside its floor: the lease duration less the age
//!   of the last renew at the kill (what leader election must wait, whoever implements it);
//! - SIGKILL → the standby's first write to the fleet (a Machine or the Fleet's status),
//!   against the 20 s goal, and how much of it the standby spent after taking the Lease.
//!
//! ```text
//! cargo build --release -p endstate -p endstate-bench
//! ./target/release/failover-bench --machines 5000
//! ```

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use endstate_api::Fleet;
use endstate_api::k8s_openapi::api::coordination::v1::Lease;
use endstate_api::k8s_openapi::api::core::v1::Namespace;
use endstate_api::k8s_openapi::jiff::Timestamp;
use endstate_bench::rollout_repo;
use endstate_kube::install_crds;
use endstate_testenv::TestServer;
use kube::Api;
use kube::api::PostParams;

/// Measure leader failover.
#[derive(Debug, Parser)]
struct Args {
    /// Machines in the fleet.
    #[arg(long, default_value_t = 5_000)]
    machines: usize,
    /// Keep the repository, the logs and the audit log.
    #[arg(long)]
    keep: bool,
}

const NS: &str = "fleet-prod";

/// A replica, killed when dropped.
struct Replica(Child);

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn replica(endstate: &Path, server: &TestServer, dir: &Path, id: &str) -> anyhow::Result<Replica> {
    let log = std::fs::File::create(dir.join(format!("{id}.log")))?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    Ok(Replica(
        Command::new(endstate)
            .args([
                "controller",
                "--namespace",
                NS,
                "--lease-namespace",
                NS,
                "--identity",
                id,
            ])
            .args([
                "--metrics-listen",
                &format!("127.0.0.1:{port}"),
                "--qps",
                "2000",
                "--burst",
                "2000",
            ])
            .arg("--kubeconfig")
            .arg(server.kubeconfig())
            .arg("--state-dir")
            .arg(dir.join(format!("state-{id}")))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?,
    ))
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let endstate = endstate_bench::endstate_binary()?;
    let dir = std::env::temp_dir().join(format!("endstate-failover-bench-{}", args.machines));
    let (work, remote) = rollout_repo::create(&dir, args.machines)?;
    let policy = dir.join("audit-policy.yaml");
    std::fs::write(
        &policy,
        "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived]\nrules:\n- level: Metadata\n  verbs: [create, update, patch, delete]\n- level: None\n",
    )?;
    let audit = dir.join("audit.log");
    eprintln!(
        "starting the test server (etcd + kube-apiserver 1.20.2 on loopback, with an audit log)…"
    );
    let server = TestServer::start_with(endstate_testenv::Options {
        apiserver_args: vec![
            format!("--audit-policy-file={}", policy.display()),
            format!("--audit-log-path={}", audit.display()),
        ],
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let outcome = runtime.block_on(run(&server, &args, &endstate, &dir, &work, &remote, &audit));
    if args.keep {
        eprintln!("kept {}", dir.display());
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
    outcome
}

async fn run(
    server: &TestServer,
    args: &Args,
    endstate: &Path,
    dir: &Path,
    work: &Path,
    remote: &Path,
    audit: &PathBuf,
) -> anyhow::Result<()> {
    let client = server.client().await;
    install_crds(&client, Duration::from_secs(60)).await?;
    let namespace: Namespace =
        serde_json::from_value(serde_json::json!({"metadata": {"name": NS}}))?;
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &namespace)
        .await?;
    let fleet: Fleet = serde_json::from_value(serde_json::json!({
        "apiVersion": "fleet.endstate.dev/v1alpha1", "kind": "Fleet",
        "metadata": {"name": "f", "namespace": NS},
        "spec": {"source": {"url": format!("file://{}", remote.display()), "branch": "main", "path": "overlays/prod", "interval": "2s"},
                 "revert": {"authorName": "endstate", "authorEmail": "endstate@bench.example"}}
    }))?;
    let fleets: Api<Fleet> = Api::namespaced(client.clone(), NS);
    fleets.create(&PostParams::default(), &fleet).await?;
    let leases: Api<Lease> = Api::namespaced(client.clone(), NS);
    let _agent = Replica(
        Command::new(endstate)
            .args(["sim-agent", "--namespace", NS, "--speed", "20"])
            .arg("--kubeconfig")
            .arg(server.kubeconfig())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?,
    );
    let holder = || async {
        let lease = leases.get_opt("endstate-controller").await.ok().flatten();
        let spec = lease.and_then(|l| l.spec).unwrap_or_default();
        (spec.holder_identity.unwrap_or_default(), spec.renew_time)
    };

    let mut a = Some(replica(endstate, server, dir, "a")?);
    let good = |commit: Option<String>| {
        let fleets = fleets.clone();
        async move {
            let status = fleets.get("f").await.ok()?.status?;
            let head = commit?;
            (status.last_good_commit.as_deref() == Some(head.as_str())).then_some(())
        }
    };
    let head = || {
        let out = Command::new("git")
            .arg("-C")
            .arg(work)
            .args(["rev-parse", "HEAD"])
            .output()
            .ok()?;
        Some(String::from_utf8(out.stdout).ok()?.trim().to_owned())
    };
    eprintln!("initial sync of {} Machines…", args.machines);
    wait_for(Duration::from_secs(3600), "the initial sync", || {
        good(head())
    })
    .await?;
    let _b = replica(endstate, server, dir, "b")?;
    // The standby lists the fleet before the leader is killed.
    tokio::time::sleep(Duration::from_secs(10)).await;
    rollout_repo::upgrade(work)?;
    let upgrade = head().context("the upgrade's commit")?;
    eprintln!("upgrade {upgrade}; waiting for its third wave…");
    wait_for(Duration::from_secs(600), "the third wave", || {
        let fleets = fleets.clone();
        let upgrade = upgrade.clone();
        async move {
            let r = fleets.get("f").await.ok()?.status?.rollout?;
            (r.commit == upgrade && r.wave >= 2 && r.phase == "Applying").then_some(())
        }
    })
    .await?;
    let (before, renewed) = holder().await;
    if before != "a" {
        bail!("a should lead, and {before:?} does");
    }
    let killed = Timestamp::now();
    drop(a.take()); // SIGKILL
    let killed_at = Instant::now();
    wait_for(Duration::from_secs(120), "b takes the Lease", || async {
        (holder().await.0 == "b").then_some(())
    })
    .await?;
    let took_lease = killed_at.elapsed();
    wait_for(Duration::from_secs(3600), "b completes the upgrade", || {
        good(Some(upgrade.clone()))
    })
    .await?;

    // From the audit log: b's first Lease write and its first write to the fleet.
    let text = std::fs::read_to_string(audit)?;
    let writes: Vec<(Timestamp, String)> = text
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|e| e["userAgent"].as_str().is_some_and(|a| a.ends_with("(b)")))
        .filter(|e| e["stage"] == "ResponseComplete")
        .filter_map(|e| {
            let at: Timestamp = e["requestReceivedTimestamp"].as_str()?.parse().ok()?;
            Some((at, e["objectRef"]["resource"].as_str()?.to_owned()))
        })
        .filter(|(at, _)| *at > killed)
        .collect();
    let first = |what: &dyn Fn(&str) -> bool| {
        writes
            .iter()
            .filter(|(_, r)| what(r))
            .map(|(at, _)| *at)
            .min()
            .context("no such write by b in the audit log")
    };
    let lease_at = first(&|r| r == "leases")?;
    let write_at = first(&|r| r == "machines" || r == "fleets")?;
    let secs = |from: Timestamp, to: Timestamp| (to - from).total(jiff_unit()).unwrap_or(f64::NAN);
    let age = renewed.map_or(f64::NAN, |r| secs(r.0, killed));
    let floor = 15.0 - age;
    println!(
        "failover of {} Machines (lease 15 s, renew deadline 10 s, retry 2 s):",
        args.machines
    );
    println!(
        "  SIGKILL → b holds the Lease:         {:.2} s  (floor: the lease's 15 s less the {age:.2} s since the last renew = {floor:.2} s; polled: {:.2} s)",
        secs(killed, lease_at),
        took_lease.as_secs_f64()
    );
    println!(
        "  SIGKILL → b's first fleet write:     {:.2} s  (goal ≤ 20 s; {:.2} s after taking the Lease)",
        secs(killed, write_at),
        secs(lease_at, write_at)
    );
    Ok(())
}

fn jiff_unit() -> endstate_api::k8s_openapi::jiff::Unit {
    endstate_api::k8s_openapi::jiff::Unit::Second
}

async fn wait_for<F, T>(
    limit: Duration,
    what: &str,
    mut check: impl FnMut() -> F,
) -> anyhow::Result<T>
where
    F: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return Ok(value);
        }
        if Instant::now() > deadline {
            bail!("{what}: not within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
