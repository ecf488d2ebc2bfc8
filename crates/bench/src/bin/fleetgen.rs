//! `fleetgen DIR --machines N`: writes a synthetic fleet repository.

use clap::Parser;

/// Write a synthetic fleet repository (render `DIR/overlays/prod`).
#[derive(Debug, Parser)]
struct Args {
    /// Where to write it.
    dir: std::path::PathBuf,
    /// Number of Machines.
    #[arg(long, default_value_t = 100_000)]
    machines: usize,
    /// Machines per cluster (one file each).
    #[arg(long, default_value_t = 1000)]
    per_cluster: usize,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let spec = endstate_bench::fleetgen::Spec {
        machines: args.machines,
        machines_per_cluster: args.per_cluster,
    };
    endstate_bench::fleetgen::generate(&args.dir, spec)?;
    println!(
        "wrote {} machines in {} clusters to {}; render {}/overlays/prod",
        spec.machines,
        spec.clusters(),
        args.dir.display(),
        args.dir.display()
    );
    Ok(())
}
