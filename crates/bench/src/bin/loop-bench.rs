//! `loop-bench`: the whole reconcile loop at fleet size — a fleet-wide kubelet upgrade (waves
//! `1, 5%, 25%, 100%`, `maxUnavailable: 10%`) rolled out from a real Git repository against
//! the simulated fleet in virtual time, as fast as the machine allows (`--speed 0`).
//!
//! Printed beside the reference measured in the same run: one cold render of the same
//! repository (fetch excluded), and the ratio. Also the largest persisted Fleet status and the
//! peak RSS of the process.
//!
//! ```text
//! cargo build --release -p endstate-bench
//! ./target/release/loop-bench --machines 10000,30000,100000
//! ```
//!
//! The same on a real API server with `sim-agent` converging the Machines is
//! `kube-loop-bench` (see docs/benchmarks.md).

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::bail;
use clap::Parser;
use endstate_bench::{measure, rollout_repo};
use endstate_controller::{Config, Controller, Outcome, Recorder, SimClock};
use endstate_git::{History, RenderCache, Source, SourceConfig};
use endstate_sim::{SimConfig, SimFleet, SimLive};

/// Measure a fleet-wide rollout through the whole loop.
#[derive(Debug, Parser)]
struct Args {
    /// Fleet sizes to measure, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "10000,30000,100000")]
    machines: Vec<usize>,
    /// Internal: measure one size in this process.
    #[arg(long, hide = true)]
    one: bool,
}

const NS: &str = "fleet-prod";
const FLEET: &str = "bench";

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.one {
        let [n] = args.machines[..] else {
            bail!("--one takes one size");
        };
        return one(n);
    }
    println!("loop-bench: fleet-wide kubelet upgrade, waves 1, 5%, 25%, 100%, maxUnavailable 10%");
    println!(
        "{:>8}  {:>12}  {:>12}  {:>7}  {:>12}  {:>10}  {:>9}",
        "machines", "cold render", "rollout", "ratio", "per machine", "status max", "peak RSS"
    );
    // Each size in a process of its own, so peak RSS is its own.
    for n in &args.machines {
        let out = Command::new(std::env::current_exe()?)
            .args(["--one", "--machines", &n.to_string()])
            .output()?;
        if !out.status.success() {
            bail!(
                "{n} machines failed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        print!("{}", String::from_utf8_lossy(&out.stdout));
    }
    Ok(())
}

/// Measures one size, in this process: the repository, the cold render, the rollout.
fn one(n: usize) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("endstate-loop-bench-{n}"));
    let (work, remote) = rollout_repo::create(&dir, n)?;
    rollout_repo::upgrade(&work)?;
    let url = format!("file://{}", remote.display());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;

    // The reference: a cold render of the head, through a fresh mirror and an empty cache.
    let mut reference = Source::open(
        SourceConfig::new(url.clone(), dir.join("reference.git")).path("overlays/prod"),
        History::default(),
    )?;
    let head = reference.fetch()?.commit;
    let start = Instant::now();
    let rendered = reference.render(head, &mut RenderCache::new())?;
    let render = start.elapsed();
    drop(rendered);
    drop(reference);

    // The fleet, converged at the first commit.
    let config = SourceConfig::new(url, dir.join("mirror.git"))
        .branch("main")
        .path("overlays/prod");
    let source = Source::open(config, History::default())?;
    let live = SimLive::new(SimFleet::new(SimConfig::new(NS, 7)));
    let clock = SimClock::new(live.clone(), 0.0);
    let mut loop_config = Config::new(FLEET, NS);
    loop_config.interval = Duration::from_secs(3600);
    let mut controller = Controller::new(
        loop_config,
        source,
        None,
        live.clone(),
        clock,
        Box::new(Recorder::default()),
    );
    let outcome = runtime.block_on(async {
        controller.resume().await?;
        let first = controller
            .resolve("main~1")
            .map_err(|e| anyhow::anyhow!(e))?;
        let objects = controller.prepare(&first).map_err(|e| anyhow::anyhow!(e))?;
        live.lock()
            .seed_converged(objects)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        controller.adopt(&first).await?;
        live.lock().reset_counters();
        measure::reset_peak_rss();
        let start = Instant::now();
        let outcome = controller.run_until_idle().await?;
        anyhow::Ok((outcome, start.elapsed()))
    })?;
    let (outcome, rollout) = outcome;
    let Outcome::Converged { commit } = &outcome else {
        bail!("the rollout did not converge: {outcome:?}");
    };
    if *commit != head.to_string() {
        bail!("converged at {commit}, not the head {head}");
    }
    let writes = live.lock().counters().applies;
    if writes < n as u64 {
        bail!("{writes} applies for {n} machines");
    }
    let largest = live.lock().largest_status();
    println!(
        "{:>8}  {:>10.2} s  {:>10.2} s  {:>6.1}×  {:>9.1} µs  {:>7.1} KiB  {:>6.0} MB",
        n,
        render.as_secs_f64(),
        rollout.as_secs_f64(),
        rollout.as_secs_f64() / render.as_secs_f64(),
        rollout.as_secs_f64() * 1e6 / n as f64,
        largest as f64 / 1024.0,
        measure::mb(measure::peak_rss().unwrap_or(0)),
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
