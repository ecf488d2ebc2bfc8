//! `plan-bench`: the engine's cost on top of render for a large fleet — diff + plan with 10%
//! of the machines changed, and a no-op reconcile against a converged simulated fleet (which
//! must write nothing).
//!
//! ```text
//! cargo run --release -p endstate-bench --bin plan-bench -- --machines 100000
//! ```

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use clap::Parser;
use endstate_bench::fleetgen;
use endstate_core::ownership::FleetId;
use endstate_core::policy::Policy;
use endstate_core::{DirTree, FleetObject, Options, Owner, render};
use endstate_rollout::plan::{Inputs, Plan};
use endstate_sim::{SimConfig, SimFleet};

/// Measure diff + plan and a no-op reconcile.
#[derive(Debug, Parser)]
struct Args {
    /// Machines in the fleet.
    #[arg(long, default_value_t = 100_000)]
    machines: usize,
    /// Percent of the machines changed.
    #[arg(long, default_value_t = 10)]
    changed: usize,
    /// Runs per measurement; the best is reported.
    #[arg(long, default_value_t = 3)]
    runs: usize,
}

const NS: &str = "fleet-prod";
const FLEET: &str = "bench";

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dir = std::env::temp_dir().join(format!("endstate-plan-bench-{}", args.machines));
    if !dir.join("overlays/prod/kustomization.yaml").exists() {
        fleetgen::generate(&dir, fleetgen::Spec::machines(args.machines)).context("generating")?;
    }
    let tree = DirTree::open(&dir)?;
    let fleet = FleetId::new(NS, FLEET);
    let owner = Owner {
        namespace: NS.into(),
        labels: fleet.labels(NS),
    };
    let t = Instant::now();
    let rendered = render(&tree, "overlays/prod", Options::owned_by(owner))
        .map_err(|d| anyhow::anyhow!("the generated fleet does not render:\n{d}"))?;
    let render_time = t.elapsed();
    let mut policy = Policy::default();
    let mut live: Vec<FleetObject> = Vec::with_capacity(rendered.objects.len());
    for r in rendered.objects {
        match r.object {
            FleetObject::RolloutPolicy(p) => {
                policy = Policy::resolve(&p.spec).map_err(|why| anyhow::anyhow!(why.join("; ")))?
            }
            object => live.push(object),
        }
    }
    let machines = live
        .iter()
        .filter(|o| matches!(o, FleetObject::Machine(_)))
        .count();

    // The desired set: every n-th machine moves to another kubelet.
    let every = (100 / args.changed.max(1)).max(1);
    let mut desired = live.clone();
    let mut changed = 0;
    for (i, object) in desired.iter_mut().enumerate() {
        if let FleetObject::Machine(m) = object
            && i % every == 0
        {
            let kubelet = Arc::make_mut(m)
                .spec
                .packages
                .get_mut("kubelet")
                .expect("a kubelet");
            *kubelet = if kubelet == "kubelet-1.28.4" {
                "kubelet-1.27.9"
            } else {
                "kubelet-1.28.4"
            }
            .to_owned();
            changed += 1;
        }
    }

    let mut best_diff = f64::MAX;
    let mut best_plan = f64::MAX;
    let mut stages = 0;
    let mut changes_found = 0;
    for _ in 0..args.runs {
        // The plan: each sequence's order and the diff of every position against live.
        let t = Instant::now();
        let plan = Plan::new(inputs(&desired, &live, &policy, &fleet));
        let d = t.elapsed().as_secs_f64();
        // The waves cut from it.
        let t = Instant::now();
        let waves = plan.stages(&policy);
        let p = t.elapsed().as_secs_f64();
        best_diff = best_diff.min(d);
        best_plan = best_plan.min(p);
        stages = waves.len();
        changes_found = plan.len_changes();
    }
    assert_eq!(
        changes_found, changed,
        "the diff finds exactly the changed machines"
    );

    // A no-op reconcile: the simulated fleet converged at the desired set; snapshot + diff.
    let mut sim = SimFleet::new(SimConfig::new(NS, 1));
    sim.seed_converged(live.iter().cloned())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    sim.reset_counters();
    let mut best_noop = f64::MAX;
    let mut noop_changes = usize::MAX;
    for _ in 0..args.runs {
        let t = Instant::now();
        let snapshot = sim.snapshot();
        let plan = Plan::new(inputs(&live, &snapshot, &policy, &fleet));
        best_noop = best_noop.min(t.elapsed().as_secs_f64());
        noop_changes = plan.len_changes();
    }
    let writes = sim.counters().writes();

    println!(
        "plan-bench: {machines} machines ({} objects), {changed} changed ({}%)",
        live.len(),
        args.changed
    );
    println!(
        "  render + validate (for reference)   {:>8.3} s",
        render_time.as_secs_f64()
    );
    println!("  order + diff                        {:>8.3} s", best_diff);
    println!(
        "  waves ({stages} stages)                     {:>8.3} s",
        best_plan
    );
    println!(
        "  diff + plan                         {:>8.3} s   (target ≤ 0.5 s)",
        best_diff + best_plan
    );
    println!(
        "  no-op reconcile: snapshot + diff    {:>8.3} s   {noop_changes} changes, {writes} writes (target 0 writes, ≤ 1 s)",
        best_noop
    );
    Ok(())
}

fn inputs<'a>(
    desired: &'a [FleetObject],
    live: &'a [FleetObject],
    policy: &'a Policy,
    fleet: &'a FleetId,
) -> Inputs<'a> {
    Inputs {
        desired,
        base: None,
        live,
        fleet,
        policy,
        orphans: None,
    }
}
