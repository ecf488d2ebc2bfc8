//! Command-line arguments.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};

/// GitOps for fleets of Kubernetes clusters and machines: canary waves, a fleet-wide change
/// budget, a circuit breaker, and an automatic `git revert` when a change goes wrong.
#[derive(Debug, Parser)]
#[command(name = "endstate", version, propagate_version = true)]
pub struct Args {
    #[command(subcommand)]
    pub command: Command,
    #[command(flatten)]
    pub log: LogArgs,
}

/// Where the libraries' logs go: stderr, filtered and formatted.
#[derive(Debug, clap::Args)]
pub struct LogArgs {
    /// The least severe events logged, or a filter like `endstate_kube=debug,info`
    /// (`RUST_LOG` syntax). Default: `info` for `controller`, whose log is its progress;
    /// `warn` for the other commands, which print their own.
    #[arg(long, global = true, env = "ENDSTATE_LOG")]
    pub log_level: Option<String>,
    /// `text` (for people) or `json` (one object per line, for log pipelines).
    #[arg(long, global = true, value_enum, env = "ENDSTATE_LOG_FORMAT", default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// How log events are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Lines for people.
    Text,
    /// One JSON object per line, with the span fields (fleet, commit, wave).
    Json,
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
    Crds {
        /// Only those a business cluster holds (Machine, MachinePackageVersion), as
        /// `deploy/target/` installs them.
        #[arg(long)]
        target: bool,
    },
    /// Play the whole story on a simulated fleet: waves, a breaker trip, an automatic revert.
    Demo(DemoArgs),
    /// Run the reconcile loop on a repository (against the simulated fleet with `--live sim`).
    Run(Box<RunArgs>),
    /// Show what merging a change would do: risks, blast radius, budgets, waves and their times, diffs.
    Plan(PlanArgs),
    /// Run the simulated Machine and Cluster operators against a real API server.
    SimAgent(AgentArgs),
    /// Install what endstate needs in a cluster.
    Install {
        /// What to install.
        #[command(subcommand)]
        what: Install,
    },
    /// Run in the cluster: reconcile every Fleet, one replica at a time (a Lease elects it).
    Controller(Box<ControllerArgs>),
    /// Release the wave of a running rollout that holds for approval.
    Approve(ApproveArgs),
    /// Look at or close a Fleet's circuit breaker.
    Breaker {
        /// What to do.
        #[command(subcommand)]
        what: Breaker,
    },
    /// Stop reconciling a Fleet: nothing is fetched or written until it is resumed.
    Suspend(FleetArgs),
    /// Reconcile a suspended Fleet again.
    Resume(FleetArgs),
    /// Fetch a Fleet's branch now, instead of at the next interval.
    Reconcile(FleetArgs),
    /// Show a Fleet: commit, waves, objects in flight and failed, budgets, breaker, reverts.
    Status(FleetArgs),
}

/// A Fleet in a cluster, and how long to wait for the controller to act.
#[derive(Debug, clap::Args)]
pub struct FleetArgs {
    /// The Fleet's name.
    pub fleet: String,
    /// The Fleet's namespace.
    #[arg(long, short, default_value = "default")]
    pub namespace: String,
    /// The kubeconfig; default: $KUBECONFIG, ~/.kube/config, or in-cluster.
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// How long to wait for the controller to act on the request (0: do not wait).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub timeout: std::time::Duration,
}

/// `endstate approve`.
#[derive(Debug, clap::Args)]
pub struct ApproveArgs {
    #[command(flatten)]
    pub fleet: FleetArgs,
    /// The wave being approved (its name or 1-based number): refused when another wave holds.
    #[arg(long)]
    pub wave: Option<String>,
}

/// `endstate breaker`.
#[derive(Debug, Subcommand)]
pub enum Breaker {
    /// Print the evidence, then close the latched breaker; quarantined commits stay quarantined.
    Reset(FleetArgs),
}

/// `endstate controller`.
#[derive(Debug, clap::Args)]
pub struct ControllerArgs {
    /// The kubeconfig; default: $KUBECONFIG, ~/.kube/config, or in-cluster.
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// Reconcile only the Fleets of this namespace (default: every namespace).
    #[arg(long)]
    pub namespace: Option<String>,
    /// Reconcile only the Fleets with these labels (a label selector, `shard=a`): several
    /// controllers can split the Fleets between them.
    #[arg(long, value_name = "SELECTOR")]
    pub fleet_selector: Option<String>,
    /// The namespace of the leader election Lease. Default: $POD_NAMESPACE, the in-cluster
    /// service account's namespace, or `endstate-system`.
    #[arg(long)]
    pub lease_namespace: Option<String>,
    /// The leader election Lease's name.
    #[arg(long, default_value = "endstate-controller")]
    pub lease_name: String,
    /// This replica's identity in the Lease. Default: $POD_NAME, or the host name and pid.
    #[arg(long)]
    pub identity: Option<String>,
    /// How long a standby waits from the last renew it saw before it takes the Lease.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    pub lease_duration: std::time::Duration,
    /// How long the leader keeps writing after its last successful renew.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub renew_deadline: std::time::Duration,
    /// How often the leader renews and a standby tries to take the Lease.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub retry_period: std::time::Duration,
    /// Requests per second to the API server, shared fairly by every Fleet.
    #[arg(long, default_value_t = 200.0)]
    pub qps: f64,
    /// Requests allowed in a burst above `--qps`.
    #[arg(long, default_value_t = 400)]
    pub burst: u32,
    /// Writes in flight at once per Fleet (so that one large rollout cannot hold every slot of
    /// the shared rate limit).
    #[arg(long, default_value_t = 32)]
    pub max_in_flight: usize,
    /// Serve `/metrics`, `/healthz` and `/readyz` here.
    #[arg(long, default_value = "0.0.0.0:8080", value_name = "ADDR")]
    pub metrics_listen: std::net::SocketAddr,
    /// Serve push webhooks here, at `/hook/<namespace>/<fleet>` (each Fleet names its secret
    /// in `spec.webhook.secretRef`).
    #[arg(long, value_name = "ADDR")]
    pub webhook_listen: Option<std::net::SocketAddr>,
    /// Where the Git mirrors live (one per Fleet).
    #[arg(long, default_value = "/var/lib/endstate", value_name = "DIR")]
    pub state_dir: PathBuf,
    /// How often every object in flight is looked at again, besides the watch events.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub poll: std::time::Duration,
    /// On SIGTERM, how long the loops may take to finish their writes and save their state
    /// before the Lease is released and the process exits.
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    pub shutdown_timeout: std::time::Duration,
    /// The author of revert commits, for Fleets without `spec.revert`.
    #[arg(long, default_value = "endstate")]
    pub author_name: String,
    /// The author email of revert commits, for Fleets without `spec.revert`.
    #[arg(long, default_value = "endstate@localhost")]
    pub author_email: String,
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

/// Which live fleet to reconcile.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Live {
    /// The simulated fleet, in process.
    Sim,
    /// A Kubernetes API server.
    Kube,
}

/// `endstate run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The live fleet: `sim` (simulated, in process) or `kube` (a Kubernetes API server). A
    /// `--kubeconfig`, or running inside a cluster, means `kube`; otherwise it must be said.
    #[arg(long, value_enum)]
    pub live: Option<Live>,
    /// The Git remote: a path, file://, ssh://, scp-style or https:// URL. With `--live kube`
    /// it overrides the Fleet's `spec.source.url`.
    #[arg(long, default_value = "")]
    pub repo: String,
    /// Reconcile from this directory instead of a Git remote, re-rendering whenever a file in it
    /// changes (for iterating on a repository; nothing is reverted in a directory).
    #[arg(long, value_name = "DIR", conflicts_with_all = ["repo", "sim_initial"])]
    pub local: Option<PathBuf>,
    /// The kubeconfig (`--live kube`); default: $KUBECONFIG, ~/.kube/config, or in-cluster.
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// Requests per second to the API server (`--live kube`); halved on 429s, then recovered.
    #[arg(long, default_value_t = 200.0)]
    pub qps: f64,
    /// Requests allowed in a burst above `--qps`.
    #[arg(long, default_value_t = 400)]
    pub burst: u32,
    /// The branch holding the fleet's end state. Default: `main`, or the Fleet's
    /// `spec.source.branch` with `--live kube`.
    #[arg(long)]
    pub branch: Option<String>,
    /// The overlay (directory with a kustomization.yaml) inside the repository.
    #[arg(long, default_value = "")]
    pub path: String,
    /// The fleet's name: its objects' owner label and the revert trailer.
    #[arg(long, default_value = "default")]
    pub fleet: String,
    /// The namespace of the fleet's objects.
    #[arg(long, default_value = "default")]
    pub namespace: String,
    /// How often the branch is fetched, e.g. `30s`. Default: 60s, or the Fleet's
    /// `spec.source.interval` with `--live kube`.
    #[arg(long, value_parser = parse_duration)]
    pub interval: Option<std::time::Duration>,
    /// Serve a push webhook here (e.g. `0.0.0.0:9292`): GitHub and GitLab push events and
    /// generic HMAC-signed requests fetch at once.
    #[arg(long, value_name = "ADDR")]
    pub webhook_listen: Option<std::net::SocketAddr>,
    /// The file holding the webhook's shared secret (GitHub/generic HMAC key, GitLab token).
    #[arg(long, value_name = "FILE", requires = "webhook_listen")]
    pub webhook_secret_file: Option<PathBuf>,
    /// How often every object in flight is looked at again, besides the watch events that wake
    /// the loop for each one as it changes (from the watch cache: no API requests).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub poll: std::time::Duration,
    /// Exit when the branch head is rolled out (or reverted) and nothing is pending.
    #[arg(long)]
    pub until_idle: bool,
    /// Start the simulated fleet converged at this commit (id, branch or `main~1`), as if it
    /// had been rolled out before; it becomes the last good commit.
    #[arg(long, value_name = "REF")]
    pub sim_initial: Option<String>,
    /// A fault rule: `package=<MachinePackageVersion>,rate=<0..1>`, `idc=<idc>,delay=<10m>`,
    /// `machine=<name>,silent`. Repeatable.
    #[arg(long, value_name = "RULE")]
    pub sim_fault: Vec<String>,
    /// Fault rules from a YAML or JSON file.
    #[arg(long, value_name = "FILE")]
    pub sim_faults_file: Option<PathBuf>,
    /// The simulator's seed.
    #[arg(long, default_value_t = 1)]
    pub sim_seed: u64,
    /// Keep the Fleet status (rollout cursor, breaker, quarantine, budgets) in this file, so a
    /// restarted run resumes.
    #[arg(long, value_name = "FILE")]
    pub sim_status_file: Option<PathBuf>,
    /// Virtual seconds per real second in the simulator; 0 runs as fast as possible.
    #[arg(long, default_value_t = 0.0)]
    pub speed: f64,
    /// The Secrets metric gates name (`secretRef`), laid out as mounted Secrets are:
    /// `DIR/<name>/<key>` (`--live sim`; in a cluster they are read from the Fleet's namespace).
    #[arg(long, value_name = "DIR")]
    pub secrets_dir: Option<PathBuf>,
    /// Where the Git mirror lives between runs. Default: a temporary directory.
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Follow the branch when its history is rewritten (force-push) instead of refusing.
    #[arg(long)]
    pub adopt_rewritten_history: bool,
    /// Close the latched breaker before running (after looking at its evidence in the Fleet
    /// status); quarantined commits stay quarantined.
    #[arg(long)]
    pub reset_breaker: bool,
    /// Approve every wave that holds for approval (`pause: true`) as it comes.
    #[arg(long)]
    pub approve: bool,
    /// Restore the fleet on a trip but do not push a revert.
    #[arg(long)]
    pub no_revert: bool,
    /// The author of revert commits.
    #[arg(long, default_value = "endstate")]
    pub author_name: String,
    /// The author email of revert commits.
    #[arg(long, default_value = "endstate@localhost")]
    pub author_email: String,
}

/// What `endstate install` installs.
#[derive(Debug, Subcommand)]
pub enum Install {
    /// Apply the CustomResourceDefinitions (server-side) and wait until they are established.
    Crds(InstallArgs),
}

/// Where to install.
#[derive(Debug, clap::Args)]
pub struct InstallArgs {
    /// The kubeconfig; default: $KUBECONFIG, ~/.kube/config, or in-cluster.
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
}

/// `endstate sim-agent`.
#[derive(Debug, clap::Args)]
pub struct AgentArgs {
    /// The kubeconfig; default: $KUBECONFIG, ~/.kube/config, or the in-cluster service account.
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// The namespace whose Machines and Clusters the agent operates.
    #[arg(long, default_value = "default")]
    pub namespace: String,
    /// The seed of every delay and fault decision.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// A fault rule, as for `run --live sim`. Repeatable.
    #[arg(long, value_name = "RULE")]
    pub sim_fault: Vec<String>,
    /// Fault rules from a YAML or JSON file.
    #[arg(long, value_name = "FILE")]
    pub sim_faults_file: Option<PathBuf>,
    /// Divide the operators' delays by this (60: a minute's install takes a second).
    #[arg(long, default_value_t = 1.0)]
    pub speed: f64,
}

/// `endstate plan`.
#[derive(Debug, clap::Args)]
pub struct PlanArgs {
    /// The Git remote. With `--live`, the Fleet's `spec.source.url` by default; with
    /// `--local`, the work tree's own repository.
    #[arg(long, default_value = "")]
    pub repo: String,
    /// What to plan: a branch of the remote, an expression on one (`main~1`), or a commit id
    /// the branch or `--target-branch` reaches. Default: `main`, or the Fleet's branch with
    /// `--live`.
    #[arg(
        long,
        visible_alias = "branch",
        value_name = "REF",
        conflicts_with = "local"
    )]
    pub head: Option<String>,
    /// What the fleet runs now: a branch, an expression or a commit id, as `--head` (another
    /// branch is fetched too). Default: the merge base of the head with `--target-branch`.
    #[arg(long, value_name = "REF", conflicts_with_all = ["live", "no_base"])]
    pub base: Option<String>,
    /// The branch the change merges into, whose merge base with the head is the default base.
    #[arg(long, default_value = "main", value_name = "BRANCH")]
    pub target_branch: String,
    /// Plan as if nothing were applied: every object is a create.
    #[arg(long, conflicts_with = "live")]
    pub no_base: bool,
    /// Plan a work tree as it is on disk, uncommitted changes included, as the head; the base
    /// comes from its repository.
    #[arg(long, value_name = "DIR")]
    pub local: Option<PathBuf>,
    /// Plan against a Fleet's live objects, budgets and quarantine instead of a base commit.
    #[arg(long, requires = "fleet")]
    pub live: bool,
    /// The Fleet planned against, with `--live` (in `--namespace`).
    #[arg(long)]
    pub fleet: Option<String>,
    /// The kubeconfig for `--live`; default: $KUBECONFIG, ~/.kube/config, or in-cluster.
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// The overlay inside the repository. Default: with `--local DIR` below the work tree's
    /// top, DIR; with `--live`, the Fleet's `spec.source.path`.
    #[arg(long)]
    pub path: Option<String>,
    /// The namespace of the fleet's objects (and of the Fleet, with `--live`).
    #[arg(long, short, default_value = "default")]
    pub namespace: String,
    /// When the rollout is taken to start (RFC 3339): maintenance windows and budgets are
    /// evaluated from it. Default: now.
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub now: Option<endstate_rollout::Time>,
    /// Print the unified diff of at most this many distinct changes.
    #[arg(long, default_value_t = 20)]
    pub diffs: usize,
    /// `text` for people, `markdown` for a pull request comment (under GitHub's 65,536
    /// characters), `json` for programs (schema: docs/plan.schema.json).
    #[arg(long, short, value_enum, default_value_t = PlanFormat::Text)]
    pub output: PlanFormat,
    /// Print the JSON report's schema and exit.
    #[arg(long, exclusive = true)]
    pub schema: bool,
}

fn parse_time(text: &str) -> anyhow::Result<endstate_rollout::Time> {
    endstate_rollout::Time::parse_rfc3339(text)
        .with_context(|| format!("{text:?} is not an RFC 3339 time (2026-12-01T09:30:00Z)"))
}

fn parse_duration(
    text: &str,
) -> Result<std::time::Duration, endstate_api::duration::InvalidDuration> {
    endstate_api::duration::parse(text)
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

/// How `plan` prints its report.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum PlanFormat {
    Text,
    Markdown,
    Json,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ReportFormat {
    Text,
    Json,
}
