//! Command-line arguments.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

/// GitOps for fleets of Kubernetes clusters and machines: canary waves, a fleet-wide change
/// budget, a circuit breaker, and an automatic `git revert` when a change goes wrong.
#[derive(Debug, Parser)]
#[command(name = "endstate", version, propagate_version = true)]
pub struct Args {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Render a fleet repository overlay and print the objects (kind, namespace, name order).
    Render {
        #[command(flatten)]
        source: SourceArgs,
        /// Output format.
        #[arg(long, short, value_enum, default_value_t = Format::Yaml)]
        output: Format,
    },
    /// Render and validate an overlay; print a summary or every problem found.
    Validate {
        #[command(flatten)]
        source: SourceArgs,
        /// Output format.
        #[arg(long, short, value_enum, default_value_t = ReportFormat::Text)]
        output: ReportFormat,
    },
    /// Print the CustomResourceDefinitions of the fleet.endstate.dev objects.
    Crds,
    /// Play the whole story on a simulated fleet: waves, a breaker trip, an automatic revert.
    Demo(DemoArgs),
}

/// How to play the demo.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Machines in the simulated fleet.
    #[arg(long, default_value_t = 1000)]
    pub machines: usize,
    /// Virtual seconds per real second; 0 runs as fast as the machine allows.
    #[arg(long, default_value_t = 600.0)]
    pub speed: f64,
    /// Keep the Git repositories in this directory for inspection.
    #[arg(long, value_name = "DIR")]
    pub keep: Option<PathBuf>,
    /// The simulator's seed.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
}

/// Where to render from.
#[derive(Debug, clap::Args)]
pub struct SourceArgs {
    /// The directory holding the kustomization to render.
    pub dir: PathBuf,
    /// The repository root: no file outside it is read. Default: the enclosing Git work tree,
    /// or the current directory when DIR is inside it, or DIR itself.
    #[arg(long, env = "ENDSTATE_REPO_ROOT")]
    pub root: Option<PathBuf>,
    /// The largest file read; a larger one is an error, not a slow render.
    #[arg(long, default_value_t = 64 << 20, value_name = "BYTES")]
    pub max_file_bytes: u64,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Format {
    Yaml,
    Json,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ReportFormat {
    Text,
    Json,
}
