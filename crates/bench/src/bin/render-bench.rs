//! `render-bench`: render + validate time and peak memory for a generated fleet, beside
//! `kubectl kustomize` on the same tree.
//!
//! ```text
//! cargo run --release -p endstate-bench --bin render-bench -- --machines 100000 --peer-machines 10000
//! ```

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, bail};
use clap::Parser;
use endstate_bench::{fleetgen, measure};

/// Measure render + validate of a synthetic fleet, and the kustomize peer.
#[derive(Debug, Parser)]
struct Args {
    /// Machines in the measured repository.
    #[arg(long, default_value_t = 100_000)]
    machines: usize,
    /// Machines in the repository both endstate and `kubectl kustomize` render (0: skip the
    /// peer). kustomize takes minutes beyond ~10k, hence the cap.
    #[arg(long, default_value_t = 10_000)]
    peer_machines: usize,
    /// Runs per measurement; the best wall time is reported.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Internal: render this repository in this process and print `wall peak objects`.
    #[arg(long, hide = true)]
    child: Option<std::path::PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(dir) = &args.child {
        let (wall, peak, objects) = render_here(dir, args.runs)?;
        println!("{wall} {peak} {objects}");
        return Ok(());
    }
    if args.peer_machines > 20_000 {
        bail!("--peer-machines is capped at 20000: kustomize would run for many minutes");
    }
    let scratch =
        std::env::temp_dir().join(format!("endstate-render-bench-{}", std::process::id()));
    let result = bench(&args, &scratch);
    let _ = std::fs::remove_dir_all(&scratch);
    result
}

fn bench(args: &Args, scratch: &Path) -> anyhow::Result<()> {
    println!(
        "render + validate of overlays/prod (best of {} runs; peak RSS of the rendering process)",
        args.runs
    );
    println!(
        "{:<28} {:>10} {:>12} {:>10}",
        "", "machines", "wall", "peak RSS"
    );
    let big = scratch.join("big");
    fleetgen::generate(&big, fleetgen::Spec::machines(args.machines))?;
    let (wall, rss, objects) = ours(&big, args.runs)?;
    row(
        "endstate",
        args.machines,
        wall,
        rss,
        &format!("({objects} objects)"),
    );
    if args.peer_machines > 0 {
        let small = scratch.join("small");
        fleetgen::generate(&small, fleetgen::Spec::machines(args.peer_machines))?;
        let (wall, rss, _) = ours(&small, args.runs)?;
        row("endstate", args.peer_machines, wall, rss, "");
        let run = measure::run(
            Command::new("kubectl")
                .arg("kustomize")
                .arg(small.join("overlays/prod")),
        )
        .context("running kubectl kustomize (is kubectl on PATH?)")?;
        if !run.success {
            bail!("kubectl kustomize failed on the generated repository");
        }
        let wall = run.wall.as_secs_f64();
        row(
            "kubectl kustomize (peer)",
            args.peer_machines,
            wall,
            run.peak_rss,
            "",
        );
    }
    Ok(())
}

fn row(who: &str, machines: usize, wall: f64, rss: u64, note: &str) {
    println!(
        "{who:<28} {machines:>10} {wall:>10.3} s {:>7.0} MB   {note}",
        measure::mb(rss)
    );
}

/// Renders in a fresh process of this program, so that each figure's peak RSS is its own.
fn ours(root: &Path, runs: usize) -> anyhow::Result<(f64, u64, usize)> {
    let out = Command::new(std::env::current_exe()?)
        .arg("--child")
        .arg(root)
        .arg("--runs")
        .arg(runs.to_string())
        .output()?;
    if !out.status.success() {
        bail!(
            "rendering failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = String::from_utf8(out.stdout)?;
    let mut fields = text.split_whitespace();
    let mut next = || fields.next().context("malformed child output");
    Ok((next()?.parse()?, next()?.parse()?, next()?.parse()?))
}

/// Best wall time and the largest peak RSS over `runs` renders in this process.
fn render_here(root: &Path, runs: usize) -> anyhow::Result<(f64, u64, usize)> {
    let tree = endstate_core::DirTree::open(root)?;
    measure::reset_peak_rss();
    let mut best = f64::INFINITY;
    let mut peak = 0;
    let mut objects = 0;
    for _ in 0..runs.max(1) {
        let start = Instant::now();
        let rendered = endstate_core::render(&tree, "overlays/prod", Default::default())
            .map_err(|d| anyhow::anyhow!("the generated repository is invalid:\n{d}"))?;
        best = best.min(start.elapsed().as_secs_f64());
        objects = rendered.objects.len();
        drop(rendered);
        peak = peak.max(measure::peak_rss().unwrap_or(0));
    }
    Ok((best, peak, objects))
}
