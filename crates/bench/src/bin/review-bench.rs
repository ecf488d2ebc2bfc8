//! `review-bench`: `endstate plan` end to end as a pull-request reviewer runs it — fetch the
//! branch and its base from the remote, render both, plan, and print the report as markdown
//! and as JSON — beside a reference measured in the same run: `endstate validate` of the same
//! head in a checkout (one render + validate, no fetch), and `endstate render` of it to
//! /dev/null (the same, and every object printed).
//!
//! The branch `feature` adds kubelet 1.29.1 and moves `--changed` percent of the fleet's
//! Machines to it by editing their files. They are taken from the `late` group only: the prod
//! overlay sets the kubelet of the `early` group, so an edit there would not show in the
//! rendered fleet, and a single old version keeps the change one group of diffs.
//!
//! The remote is a `file://` one, whose objects plan reads in place; a remote elsewhere adds
//! its clone, printed for reference as `git clone --bare --no-local` of the same repository.
//!
//! Each command runs `--runs` times, each in a fresh process; the median and range of the wall
//! times are printed, with the ratio of each plan to the reference (goal ≤ 3×).
//!
//! ```text
//! cargo build --release -p endstate -p endstate-bench
//! ./target/release/review-bench --machines 100000
//! ```

use std::fs::{self, File};
use std::path::Path;
use std::process::Command;

use anyhow::{Context, bail};
use clap::Parser;
use endstate_bench::{measure, rollout_repo};

/// Measure `endstate plan` on a pull request's branch.
#[derive(Debug, Parser)]
struct Args {
    /// Machines in the fleet.
    #[arg(long, default_value_t = 100_000)]
    machines: usize,
    /// Percent of the machines the branch changes (at most 50: the late half of the fleet).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=50))]
    changed: u64,
    /// Runs of each command, each in a fresh process.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..))]
    runs: u64,
    /// Keep the repository (in the temporary directory) after the run.
    #[arg(long)]
    keep: bool,
}

/// The size `plan -o markdown` keeps under, below GitHub's 65,536 characters per comment.
const MARKDOWN_CAP: usize = 60_000;

/// `endstate plan` of the branch against `main`, as a pull request's check runs it.
const PLAN: &str = "plan --branch feature --base main --path overlays/prod --namespace fleet-prod";

/// The package version the branch adds, as `rollout_repo::upgrade` adds it.
const KUBELET_1_29_1: &str = "---\napiVersion: fleet.endstate.dev/v1alpha1\nkind: MachinePackageVersion\nmetadata:\n  name: kubelet-1.29.1\nspec:\n  packageName: kubelet\n  version: \"1.29.1\"\n  install:\n    url: https://packages.example.internal/kubelet-1.29.1.rpm\n    sha256: 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\n";

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let endstate = endstate_bench::endstate_binary()?;
    let dir = std::env::temp_dir().join(format!("endstate-review-bench-{}", args.machines));
    let (work, remote) = rollout_repo::create(&dir, args.machines)?;
    let changed = feature_branch(&work, args.changed)?;
    let url = format!("file://{}", remote.display());
    let overlay = work.join("overlays/prod");

    println!(
        "review-bench: {} machines, {changed} moved to kubelet 1.29.1 ({:.1}%) on branch feature, {} runs",
        args.machines,
        changed as f64 * 100.0 / args.machines as f64,
        args.runs
    );
    println!(
        "  {:<22} {:>9}  {:>15}  {:>8}",
        "", "median", "min–max", "peak RSS"
    );
    let validate = reference_runs(
        args.runs,
        Command::new(&endstate).arg("validate").arg(&overlay),
    )?;
    let reference = row("validate (reference)", &validate, None);
    let render = reference_runs(
        args.runs,
        Command::new(&endstate).arg("render").arg(&overlay),
    )?;
    row("render > /dev/null", &render, None);
    // What a remote elsewhere would add: git's own clone of the same repository, packed and
    // sent as over a network (plan reads a local remote's objects in place instead).
    let clone_to = dir.join("clone.git");
    let clone = (0..args.runs)
        .map(|_| {
            let _ = fs::remove_dir_all(&clone_to);
            let run = measure::run(
                Command::new("git")
                    .args(["clone", "-q", "--bare", "--no-local"])
                    .arg(&remote)
                    .arg(&clone_to),
            )?;
            if !run.success {
                bail!("git clone of {} failed", remote.display());
            }
            Ok(run)
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let _ = fs::remove_dir_all(&clone_to);
    row("git clone (network)", &clone, None);
    let mut reports = Vec::new();
    for format in ["markdown", "json"] {
        let out = dir.join(format!("plan.{format}"));
        let runs = (0..args.runs)
            .map(|_| {
                let mut command = Command::new(&endstate);
                command
                    .args(PLAN.split(' '))
                    .args(["--repo", &url, "-o", format]);
                plan(&mut command, &out)
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        row(&format!("plan -o {format}"), &runs, Some(reference));
        reports.push(fs::read_to_string(&out)?);
    }

    let chars = reports[0].chars().count();
    println!("  markdown report: {chars} characters (cap {MARKDOWN_CAP})");
    let json: serde_json::Value =
        serde_json::from_str(&reports[1]).context("plan -o json prints JSON")?;
    let updates = json["summary"]["updates"].as_u64().unwrap_or(0);
    let diffs = json["diffs"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    println!(
        "  json report: outcome {}, summary.updates {updates} ({changed} Machines changed), {} diff groups",
        json["outcome"].as_str().unwrap_or("?"),
        diffs.len()
    );
    for diff in diffs.iter().take(3) {
        println!(
            "    {} {}: {} members",
            diff["op"].as_str().unwrap_or("?"),
            diff["object"].as_str().unwrap_or("?"),
            diff["members"]
        );
    }
    if chars >= MARKDOWN_CAP {
        bail!("the markdown report is {chars} characters, over the cap of {MARKDOWN_CAP}");
    }
    if updates != changed as u64 {
        bail!("the plan updates {updates} objects, the branch changes {changed} Machines");
    }
    if !args.keep {
        let _ = fs::remove_dir_all(&dir);
    }
    Ok(())
}

/// Checks out `feature`, adds kubelet 1.29.1 and moves every n-th Machine of the late group
/// to it, so that `percent`% of the fleet changes; commits, pushes, and returns how many
/// Machines changed.
fn feature_branch(work: &Path, percent: u64) -> anyhow::Result<usize> {
    const LATE: &str = "    fleet.endstate.dev/group: late\n";
    const OLD: &str = "    kubelet: kubelet-1.27.9\n";
    const NEW: &str = "    kubelet: kubelet-1.29.1\n";
    rollout_repo::git(work, &["checkout", "-q", "-b", "feature"])?;
    let packages = work.join("base/packages.yaml");
    let text = fs::read_to_string(&packages)? + KUBELET_1_29_1;
    fs::write(&packages, text)?;
    // The late group is half the fleet, so every (50/percent)-th of it is percent% of all.
    let every = (50 / percent) as usize;
    let mut files: Vec<_> = fs::read_dir(work.join("base/machines"))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    files.sort();
    let (mut late, mut changed) = (0, 0);
    for path in files {
        let text = fs::read_to_string(&path)?;
        let mut out = String::with_capacity(text.len());
        // One Machine per piece: each ends with the next document's `---`.
        for doc in text.split_inclusive("---\n") {
            let is_late = doc.contains(LATE) && doc.contains(OLD);
            if is_late && late % every == 0 {
                out.push_str(&doc.replacen(OLD, NEW, 1));
                changed += 1;
            } else {
                out.push_str(doc);
            }
            late += usize::from(is_late);
        }
        fs::write(&path, out)?;
    }
    if changed == 0 {
        bail!("no Machine of the late group found to change");
    }
    let message = format!("Move {changed} Machines to kubelet 1.29.1");
    rollout_repo::git(work, &["commit", "-q", "-am", &message])?;
    rollout_repo::git(work, &["push", "-q", "origin", "feature"])?;
    Ok(changed)
}

/// Runs a reference command `runs` times, each in a fresh process; it must exit 0.
fn reference_runs(runs: u64, command: &mut Command) -> anyhow::Result<Vec<measure::Run>> {
    (0..runs)
        .map(|_| {
            let run = measure::run(command)?;
            if !run.success {
                bail!("{command:?} failed");
            }
            Ok(run)
        })
        .collect()
}

/// Runs `endstate plan` with its output in `out` (and its errors beside it). Exit 1,
/// changes found, is what the branch must give.
fn plan(command: &mut Command, out: &Path) -> anyhow::Result<measure::Run> {
    let errors = out.with_extension("stderr");
    let run = measure::sample(
        command
            .stdout(File::create(out)?)
            .stderr(File::create(&errors)?),
    )?;
    if run.code != Some(1) {
        bail!(
            "{command:?} exited with {:?}, not 1 (changes):\n{}",
            run.code,
            fs::read_to_string(&errors)?
        );
    }
    Ok(run)
}

/// Prints the median and range of the runs' wall times, their highest peak RSS and the
/// ratio of the median to `reference`'s; returns the median in seconds.
fn row(name: &str, runs: &[measure::Run], reference: Option<f64>) -> f64 {
    let mut walls: Vec<f64> = runs.iter().map(|r| r.wall.as_secs_f64()).collect();
    walls.sort_by(f64::total_cmp);
    let n = walls.len();
    let median = (walls[(n - 1) / 2] + walls[n / 2]) / 2.0;
    let peak = runs.iter().map(|r| r.peak_rss).max().unwrap_or(0);
    let ratio = reference
        .map(|r| format!("  {:>4.1}× the reference (goal ≤ 3×)", median / r))
        .unwrap_or_default();
    let range = format!("{:.3}–{:.3} s", walls[0], walls[n - 1]);
    println!(
        "  {name:<22} {median:>7.3} s  {range:>15}  {:>5.0} MB{ratio}",
        measure::mb(peak),
    );
    median
}
