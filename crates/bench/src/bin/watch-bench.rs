//! `watch-bench`: the controller's memory while it watches a large fleet on a real API server,
//! and the time its caches take to sync. A generated fleet repository is rendered and its
//! objects created (with endstate's own server-side apply); then a separate process starts the
//! Kubernetes backend on them and, with its caches full, does what a reconcile does — renders
//! the repository through a render cache, takes a snapshot and plans it against the render (no
//! request; it must find nothing to change) — and prints its peak RSS.
//!
//! ```text
//! cargo run --release -p endstate-bench --bin watch-bench -- --machines 100000
//! ```

use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use endstate_api::k8s_openapi::api::core::v1::Namespace;
use endstate_bench::{fleetgen, measure};
use endstate_core::{DirTree, FleetObject, Options, Owner, RenderCache, render_cached};
use endstate_kube::{KubeLive, Limits, Settings};
use endstate_rollout::Live;
use endstate_testenv::TestServer;
use kube::Api;
use kube::api::PostParams;

/// Measure the watching controller's memory.
#[derive(Debug, Parser)]
struct Args {
    /// Machines in the fleet.
    #[arg(long, default_value_t = 100_000)]
    machines: usize,
    /// Internal: watch NAMESPACE with KUBECONFIG, and write `sync_s rss_after_sync peak_rss`
    /// to REPORT.
    #[arg(long, hide = true, num_args = 3, value_names = ["KUBECONFIG", "NAMESPACE", "REPORT"])]
    child: Option<Vec<String>>,
}

const FLEET: &str = "bench";
/// The generated overlay's namespace.
const NS: &str = "fleet-prod";

/// The generated fleet repository of `n` Machines (made once per size).
fn repository(n: usize) -> anyhow::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("endstate-watch-bench-{n}"));
    if !dir.join("overlays/prod/kustomization.yaml").exists() {
        fleetgen::generate(&dir, fleetgen::Spec::machines(n)).context("generating")?;
    }
    Ok(dir)
}

/// Renders the repository as the controller does: for the fleet, through a render cache.
fn render(dir: &std::path::Path, cache: &mut RenderCache) -> anyhow::Result<Vec<FleetObject>> {
    let tree = DirTree::open(dir)?;
    let options = Options::owned_by(Owner {
        namespace: NS.into(),
        labels: vec![(endstate_api::labels::OWNER_LABEL.into(), FLEET.into())],
    });
    let rendered = render_cached(&tree, "overlays/prod", options, cache)
        .map_err(|d| anyhow::anyhow!("the generated fleet does not render:\n{d}"))?;
    Ok(rendered
        .objects
        .into_iter()
        .map(|r| r.object)
        .filter(|o| o.kind() != endstate_core::Kind::RolloutPolicy)
        .collect())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    if let Some(child) = &args.child {
        return runtime.block_on(watch(&child[0], &child[1], &child[2], args.machines));
    }
    let server = TestServer::start();
    let client = runtime.block_on(server.client());
    runtime.block_on(endstate_kube::install_crds(
        &client,
        Duration::from_secs(60),
    ))?;
    let ns = NS;
    let dir = repository(args.machines)?;
    let namespace: Namespace =
        serde_json::from_value(serde_json::json!({"metadata": {"name": ns}}))?;
    runtime.block_on(
        Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &namespace),
    )?;

    // Create the fleet with endstate's backend (in pages, to keep this process small).
    let created = Instant::now();
    runtime.block_on(async {
        let mut settings = Settings::new(ns, FLEET);
        settings.limits = Limits {
            qps: 5000.0,
            burst: 5000,
        };
        let live = KubeLive::connect(server.config().await, settings).await?;
        let all = render(&dir, &mut RenderCache::new())?;
        for page in all.chunks(5000) {
            let results = live.apply(page).await;
            if let Some(err) = results.into_iter().find_map(Result::err) {
                anyhow::bail!("creating the fleet: {err}");
            }
        }
        Ok(())
    })?;
    let created = created.elapsed();

    let report = std::env::temp_dir().join(format!("watch-bench-{}.txt", std::process::id()));
    let run = measure::run(
        std::process::Command::new(std::env::current_exe()?)
            .args(["--machines", &args.machines.to_string(), "--child"])
            .arg(server.kubeconfig())
            .arg(ns)
            .arg(&report),
    )?;
    anyhow::ensure!(run.success, "the watching process failed");
    let text =
        std::fs::read_to_string(&report).context("reading the watching process's figures")?;
    let _ = std::fs::remove_file(&report);
    let fields: Vec<f64> = text
        .split_whitespace()
        .filter_map(|f| f.parse().ok())
        .collect();
    anyhow::ensure!(
        fields.len() == 4,
        "malformed figures from the watching process: {text:?}"
    );
    println!(
        "watch-bench: {} Machines on kube-apiserver 1.20.2 (test server)",
        args.machines
    );
    println!(
        "  created with endstate's SSA                 {:>8.1} s",
        created.as_secs_f64()
    );
    println!(
        "  caches synced (paged initial lists)         {:>8.1} s",
        fields[0]
    );
    println!(
        "  RSS once the caches hold the fleet          {:>8.0} MB   (target ≤ 500 MB)",
        fields[1] / 1e6
    );
    println!(
        "  render of the same repository on top        {:>8.2} s",
        fields[3]
    );
    println!(
        "  peak RSS with the render, snapshot + plan   {:>8.0} MB   (target ≤ 500 MB; whole process, {:.1} s wall)",
        fields[2] / 1e6,
        run.wall.as_secs_f64()
    );
    Ok(())
}

/// This process's resident set now, in bytes.
fn current_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    Some(line.split_whitespace().nth(1)?.parse::<u64>().ok()? * 1024)
}

/// The child: start the backend, wait for its caches, snapshot and diff; write the figures.
async fn watch(kubeconfig: &str, namespace: &str, report: &str, n: usize) -> anyhow::Result<()> {
    let file = kube::config::Kubeconfig::read_from(kubeconfig).context("reading the kubeconfig")?;
    let config = kube::Config::from_custom_kubeconfig(file, &Default::default()).await?;
    let started = Instant::now();
    let live = KubeLive::connect(config, Settings::new(namespace, FLEET)).await?;
    let synced = started.elapsed();
    let rss_after_sync = current_rss().unwrap_or(0);
    // What a reconcile does with the caches full: render the commit, snapshot, plan.
    let dir = repository(n)?;
    let mut cache = RenderCache::new();
    let rendering = Instant::now();
    let desired = render(&dir, &mut cache)?;
    let rendered_in = rendering.elapsed();
    let snapshot = live.snapshot().await?;
    let changes = endstate_rollout::plan::Plan::new(endstate_rollout::plan::Inputs {
        desired: &desired,
        base: None,
        live: &snapshot,
        fleet: &endstate_core::ownership::FleetId::new(namespace, FLEET),
        policy: &endstate_core::policy::Policy::default(),
        orphans: None,
    });
    anyhow::ensure!(
        snapshot.len() == desired.len(),
        "the caches hold {} objects, want {}",
        snapshot.len(),
        desired.len()
    );
    anyhow::ensure!(
        changes.is_empty(),
        "{} changes against a fleet at its desired state",
        changes.len_changes()
    );
    let figures = format!(
        "{:.1} {} {} {:.3}",
        synced.as_secs_f64(),
        rss_after_sync,
        measure::peak_rss().unwrap_or(0),
        rendered_in.as_secs_f64()
    );
    std::fs::write(report, figures)?;
    Ok(())
}
