//! `endstate demo`: the whole story on a laptop.
//!
//! A temporary Git repository (a bare "remote" and a work clone) is made from the reference
//! layout with the fleet scaled to the requested size, and the reconcile loop runs against the
//! simulated fleet in virtual time:
//!
//! 1. initial sync: every object is created, wave by wave;
//! 2. a good kubelet upgrade rolls out wave by wave;
//! 3. a bad upgrade (a package version the simulated machines fail to install) trips the
//!    breaker in an early wave; the fleet is restored and a revert commit is pushed;
//! 4. the next reconcile, at the revert, writes nothing.
//!
//! The story is checked as it plays; [`run`] fails when any step did not go as it should.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use endstate_git::{History, RevertConfig, RevertWriter, Source, SourceConfig};
use endstate_rollout::Time;
use endstate_sim::{Faults, SimConfig, SimFleet, SimLive};

use crate::clock::SimClock;
use crate::controller::{Config, Controller, Outcome};
use crate::error::Error;
use crate::report::{Reporter, short};

/// How to play the demo.
#[derive(Clone, Debug)]
pub struct Options {
    /// Machines in the fleet.
    pub machines: usize,
    /// Virtual seconds per real second (0: as fast as possible).
    pub speed: f64,
    /// Keep the repositories in this directory instead of a temporary one.
    pub keep: Option<PathBuf>,
    /// The simulator's seed.
    pub seed: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            machines: 1000,
            speed: 600.0,
            keep: None,
            seed: 7,
        }
    }
}

/// What the demo did.
#[derive(Clone, Debug)]
pub struct Summary {
    /// Where the repositories are (removed unless kept).
    pub dir: PathBuf,
    /// The good commits, in order.
    pub good: Vec<String>,
    /// The bad commit.
    pub bad: String,
    /// The revert commit endstate pushed.
    pub revert: String,
    /// The report printed at the end.
    pub text: String,
    /// Real time taken.
    pub elapsed: Duration,
}

/// Why the demo stopped: a step failed, or did not go as the story says.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// A file of the demo's repository.
    #[error("{doing}: {source}")]
    Io {
        /// What was being done.
        doing: String,
        /// Why it failed.
        source: std::io::Error,
    },
    /// The demo's repositories, with what was being done.
    #[error("{doing}: {source}")]
    Repo {
        /// What was being done.
        doing: String,
        /// Why it failed.
        source: git2::Error,
    },
    /// The demo's repositories.
    #[error(transparent)]
    Git(#[from] git2::Error),
    /// The Git source or the revert writer.
    #[error(transparent)]
    Source(#[from] endstate_git::Error),
    /// The fault rule of the bad package.
    #[error(transparent)]
    Faults(#[from] endstate_sim::FaultError),
    /// The reconcile loop.
    #[error(transparent)]
    Loop(#[from] Error),
    /// A step that did not go as the story says.
    #[error("{0}")]
    Story(String),
}

/// The package version the simulated machines fail to install.
pub const BAD_KUBELET: &str = "kubelet-1.29.0";
const FLEET: &str = "demo";
const NAMESPACE: &str = "fleet-demo";
const OVERLAY: &str = "overlays/demo";

/// Plays the story; fails when a step did not go as expected.
pub async fn run(options: &Options, reporter: Box<dyn Reporter>) -> Result<Summary, DemoError> {
    let started = Instant::now();
    let dir = match &options.keep {
        Some(dir) => {
            std::fs::create_dir_all(dir).map_err(|source| DemoError::Io {
                doing: format!("creating {}", dir.display()),
                source,
            })?;
            dir.clone()
        }
        None => {
            let dir = std::env::temp_dir().join(format!("endstate-demo-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            dir
        }
    };
    let result = play(options, &dir, reporter, started).await;
    if options.keep.is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}

async fn play(
    options: &Options,
    dir: &Path,
    mut reporter: Box<dyn Reporter>,
    started: Instant,
) -> Result<Summary, DemoError> {
    let repo = Repo::create(dir, options.machines)?;
    let faults = Faults::parse(&[format!("package={BAD_KUBELET},rate=0.5")])?;
    let sim = SimFleet::new(
        SimConfig::new(NAMESPACE, options.seed)
            .with_faults(faults)
            .starting_at(Time(1_798_761_600_000)),
    );
    let live = SimLive::new(sim);
    let clock = SimClock::new(live.clone(), options.speed);
    let say = |reporter: &mut Box<dyn Reporter>, text: &str| {
        let now = live.lock().now();
        reporter.line(now, None, text);
    };
    say(
        &mut reporter,
        &format!(
            "demo: {} machines in 3 clusters and 3 idcs; repository at {}",
            options.machines,
            repo.work.display()
        ),
    );

    let source_config = SourceConfig::new(
        format!("file://{}", repo.remote.display()),
        dir.join("mirror"),
    )
    .branch("main")
    .path(OVERLAY);
    let writer = RevertWriter::open(
        &source_config,
        RevertConfig::new(FLEET, "endstate", "endstate@fleet.example"),
    )?;
    let source = Source::open(source_config, History::default())?;
    let mut config = Config::new(FLEET, NAMESPACE);
    config.interval = Duration::from_secs(30);
    config.poll = Duration::from_secs(5);
    let mut controller =
        Controller::new(config, source, Some(writer), live.clone(), clock, reporter);
    controller.resume().await?;

    // 1. Initial sync.
    let first = repo.head()?;
    expect_converged(controller.run_until_idle().await, &first, "initial sync")?;
    let synced_at = controller.tally().writes;

    // 2. A good upgrade.
    let good = repo.commit_upgrade(
        "kubelet-1.28.4",
        "Upgrade kubelet to 1.28.4 on every machine",
    )?;
    let waves_before = controller.tally().waves;
    expect_converged(
        controller.run_until_idle().await,
        &good,
        "the kubelet 1.28.4 upgrade",
    )?;
    let upgraded = controller.tally().writes - synced_at;
    let upgrade_waves = controller.tally().waves - waves_before;

    // 3. A bad upgrade: the breaker trips, the fleet is restored, the revert is pushed.
    let bad = repo.commit_upgrade(BAD_KUBELET, "Upgrade kubelet to 1.29.0 on every machine")?;
    let outcome = controller.run_until_idle().await?;
    let Outcome::Tripped { commit, revert } = outcome else {
        return Err(DemoError::Story(format!(
            "the bad upgrade {} should trip the breaker, but: {outcome:?}",
            short(&bad)
        )));
    };
    if commit != bad {
        return Err(DemoError::Story(format!(
            "the breaker tripped on {}, not on the bad commit {}",
            short(&commit),
            short(&bad)
        )));
    }
    let trip = controller
        .engine()
        .breaker()
        .cloned()
        .ok_or_else(|| DemoError::Story("the breaker is not open after the trip".into()))?;
    let reverted = repo.remote_head()?;
    let message = repo.message(&reverted)?;
    let trailer = format!("Endstate-Revert-Of: {bad}");
    if !message.contains(&trailer) {
        return Err(DemoError::Story(format!(
            "the branch head {} is not endstate's revert of {}:\n{message}",
            short(&reverted),
            short(&bad)
        )));
    }
    // Every machine runs the last good kubelet again.
    let stragglers = {
        let fleet = live.lock();
        fleet
            .snapshot()
            .into_iter()
            .filter(|o| matches!(o, endstate_core::FleetObject::Machine(m) if m.spec.packages.get("kubelet").map(String::as_str) != Some("kubelet-1.28.4")))
            .count()
    };
    if stragglers > 0 {
        return Err(DemoError::Story(format!(
            "{stragglers} machines were not restored to kubelet-1.28.4"
        )));
    }

    // 4. The next reconcile, at the revert, writes nothing.
    let before = live.lock().counters();
    let writes_before = controller.tally().writes + controller.tally().restores;
    let outcome = controller.run_until_idle().await?;
    let after = live.lock().counters();
    if controller.tally().writes + controller.tally().restores != writes_before
        || after.applies != before.applies
    {
        return Err(DemoError::Story(format!(
            "the reconcile after the revert wrote to the fleet ({outcome:?})"
        )));
    }
    if controller.record().last_applied.as_deref() != Some(reverted.as_str()) {
        return Err(DemoError::Story(format!(
            "the fleet should be recorded at the revert {}, but is at {:?}",
            short(&reverted),
            controller.record().last_applied
        )));
    }
    repo.pull()?;

    let engine = controller.engine();
    if engine.rollout().is_none() {
        return Err(DemoError::Story("no rollout recorded".into()));
    }
    let mut text = String::new();
    let _ = writeln!(text, "\nendstate demo: summary");
    let _ = writeln!(
        text,
        "  fleet             {} machines, 3 clusters, namespace {NAMESPACE}",
        options.machines
    );
    let _ = writeln!(
        text,
        "  initial sync      {} ({} objects written)",
        short(&first),
        synced_at
    );
    let _ = writeln!(
        text,
        "  good upgrade      {} ({} machines changed, {} waves)",
        short(&good),
        upgraded,
        upgrade_waves
    );
    let _ = writeln!(
        text,
        "  bad upgrade       {} tripped the breaker in wave {}",
        short(&bad),
        trip.evidence.stage
    );
    let _ = writeln!(text, "  breaker evidence  {}", trip.evidence.threshold);
    for (object, why) in trip.evidence.failed.iter().take(3) {
        let _ = writeln!(text, "                    {object}: {why}");
    }
    let _ = writeln!(
        text,
        "  restored          {} objects changed by the bad upgrade",
        controller.tally().restores
    );
    let _ = writeln!(text, "  revert            {} ({revert})", short(&reverted));
    let _ = writeln!(
        text,
        "  quarantined       {}",
        engine
            .quarantine()
            .iter()
            .map(|q| short(&q.commit))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let policy = engine
        .rollout()
        .map(|r| r.policy().clone())
        .unwrap_or_default();
    for (class, used, limit) in engine.budgets().usage(&policy, live.lock().now()) {
        let _ = writeln!(
            text,
            "  budget            {class}: {used} of {limit} in the window"
        );
    }
    let ms = |d: Option<Duration>| {
        d.map_or("-".to_owned(), |d| {
            format!("{:.1} ms", d.as_secs_f64() * 1000.0)
        })
    };
    let _ = writeln!(
        text,
        "  trip → restored   {} real time (target ≤ 1 s); trip → revert pushed {} (target ≤ 5 s)",
        ms(controller.tally().trip_to_restored),
        ms(controller.tally().trip_to_revert)
    );
    let _ = writeln!(
        text,
        "  after the revert  0 writes: the fleet and the branch agree"
    );
    let _ = writeln!(
        text,
        "  virtual time      {}",
        endstate_rollout::time::human(live.lock().now().since(Time(1_798_761_600_000)))
    );
    if options.keep.is_some() {
        let _ = writeln!(
            text,
            "  repository        {} (git log shows the revert and its trailers)",
            repo.work.display()
        );
    } else {
        let _ = writeln!(
            text,
            "  repository        removed on exit; run with --keep DIR to keep it and read the revert with git log"
        );
    }
    Ok(Summary {
        dir: dir.to_owned(),
        good: vec![first, good],
        bad,
        revert: reverted,
        text,
        elapsed: started.elapsed(),
    })
}

fn expect_converged(
    outcome: Result<Outcome, Error>,
    commit: &str,
    what: &str,
) -> Result<(), DemoError> {
    match outcome? {
        Outcome::Converged { commit: c } if c == commit => Ok(()),
        other => Err(DemoError::Story(format!(
            "{what} ({}) should converge, but: {other:?}",
            short(commit)
        ))),
    }
}

/// The demo's repositories: a bare remote and a work clone that commits and pushes to it.
struct Repo {
    remote: PathBuf,
    work: PathBuf,
    machines: usize,
}

const CLUSTERS: [&str; 3] = ["payments", "search", "batch"];
const IDCS: [&str; 3] = ["hz-a", "hz-b", "hz-c"];

impl Repo {
    fn create(dir: &Path, machines: usize) -> Result<Repo, DemoError> {
        let remote = dir.join("remote.git");
        let work = dir.join("work");
        let _ = std::fs::remove_dir_all(&remote);
        let _ = std::fs::remove_dir_all(&work);
        git2::Repository::init_opts(
            &remote,
            git2::RepositoryInitOptions::new()
                .bare(true)
                .initial_head("main"),
        )
        .map_err(|source| DemoError::Repo {
            doing: format!("creating {}", remote.display()),
            source,
        })?;
        let repo = git2::Repository::init_opts(
            &work,
            git2::RepositoryInitOptions::new().initial_head("main"),
        )
        .map_err(|source| DemoError::Repo {
            doing: format!("creating {}", work.display()),
            source,
        })?;
        repo.remote("origin", &format!("file://{}", remote.display()))?;
        let this = Repo {
            remote,
            work,
            machines,
        };
        this.write_base()?;
        this.write_overlay("kubelet-1.27.9")?;
        this.commit("Add the fleet: 3 clusters and their machines")?;
        Ok(this)
    }

    fn write(&self, path: &str, content: &str) -> Result<(), DemoError> {
        let path = self.work.join(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|source| DemoError::Io {
                doing: parent.display().to_string(),
                source,
            })?;
        }
        std::fs::write(&path, content).map_err(|source| DemoError::Io {
            doing: path.display().to_string(),
            source,
        })
    }

    fn write_base(&self) -> Result<(), DemoError> {
        self.write(
            "base/kustomization.yaml",
            include_str!("../../../examples/repo-layout/base/kustomization.yaml"),
        )?;
        self.write(
            "base/packages/kustomization.yaml",
            "resources:\n- machine-packages.yaml\n- cluster-packages.yaml\n",
        )?;
        self.write(
            "base/packages/machine-packages.yaml",
            include_str!("../../../examples/repo-layout/base/packages/machine-packages.yaml"),
        )?;
        self.write(
            "base/packages/cluster-packages.yaml",
            include_str!("../../../examples/repo-layout/base/packages/cluster-packages.yaml"),
        )?;
        self.write(
            "base/clusters/kustomization.yaml",
            include_str!("../../../examples/repo-layout/base/clusters/kustomization.yaml"),
        )?;
        self.write(
            "base/clusters/clusters.yaml",
            include_str!("../../../examples/repo-layout/base/clusters/clusters.yaml"),
        )?;
        let mut kustomization = String::from("resources:\n");
        for (c, cluster) in CLUSTERS.iter().enumerate() {
            let mut out = format!("# Worker nodes of the {cluster} cluster.\n");
            let count = self.machines / 3 + usize::from(c < self.machines % 3);
            for i in 0..count {
                let idc = IDCS[i % IDCS.len()];
                let _ = write!(
                    out,
                    "---\napiVersion: fleet.endstate.dev/v1alpha1\nkind: Machine\nmetadata:\n  name: {cluster}-{n:05}\n  labels:\n    fleet.endstate.dev/cluster: {cluster}\n    topology.endstate.dev/idc: {idc}\nspec:\n  cluster: {cluster}\n  ip: 10.{c}.{hi}.{lo}\n  hostname: {cluster}-{n:05}.{idc}.example.internal\n  idc: {idc}\n  packages:\n    kubelet: kubelet-1.27.9\n    containerd: containerd-1.7.13\n    node-exporter: node-exporter-1.7.0\n    os-image: os-image-2024.1\n  readinessGates: [KubeletReady]\n",
                    n = i + 1,
                    hi = (i + 10) / 250,
                    lo = (i + 10) % 250 + 1,
                );
            }
            self.write(&format!("base/machines/{cluster}.yaml"), &out)?;
            let _ = writeln!(kustomization, "- {cluster}.yaml");
        }
        self.write("base/machines/kustomization.yaml", &kustomization)
    }

    fn write_overlay(&self, kubelet: &str) -> Result<(), DemoError> {
        self.write(
            &format!("{OVERLAY}/kustomization.yaml"),
            &format!(
                "# The demo fleet: every machine runs the kubelet named in the patch below.\napiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nnamespace: {NAMESPACE}\nresources:\n- ../../base\n- rollout-policy.yaml\nlabels:\n- pairs:\n    fleet.endstate.dev/environment: demo\npatches:\n- target:\n    kind: Machine\n  patch: |\n    apiVersion: fleet.endstate.dev/v1alpha1\n    kind: Machine\n    metadata:\n      name: any\n    spec:\n      packages:\n        kubelet: {kubelet}\n"
            ),
        )?;
        self.write(
            &format!("{OVERLAY}/rollout-policy.yaml"),
            "apiVersion: fleet.endstate.dev/v1alpha1\nkind: RolloutPolicy\nmetadata:\n  name: demo\nspec:\n  machines:\n    waves:\n    - name: canary\n      size: 1\n      bake: 5m\n    - name: early\n      size: 5%\n      bake: 5m\n    - name: quarter\n      size: 25%\n      bake: 10m\n    - name: all\n      size: 100%\n    spreadBy: idc\n    maxUnavailable: 5%\n  clusters:\n    waves:\n    - name: canary\n      size: 1\n    - name: rest\n      size: 100%\n  gates:\n    timeout: 10m\n  breaker:\n    maxFailuresPerWave: 1\n    maxFailureRatio: 2%\n  budgets:\n  - class: machine-update\n    limit: 5000\n    window: 1h\n  - class: cluster-update\n    limit: 10\n    window: 1h\n",
        )
    }

    /// Points every machine at `kubelet` (adding its package version if new), commits, pushes.
    fn commit_upgrade(&self, kubelet: &str, message: &str) -> Result<String, DemoError> {
        if kubelet == BAD_KUBELET {
            let path = "base/packages/machine-packages.yaml";
            let mut packages =
                std::fs::read_to_string(self.work.join(path)).map_err(|source| DemoError::Io {
                    doing: path.to_owned(),
                    source,
                })?;
            let _ = write!(
                packages,
                "---\napiVersion: fleet.endstate.dev/v1alpha1\nkind: MachinePackageVersion\nmetadata:\n  name: {BAD_KUBELET}\nspec:\n  packageName: kubelet\n  version: \"1.29.0\"\n  install:\n    url: https://packages.example.internal/kubelet/kubelet-1.29.0-1.el8.x86_64.rpm\n    sha256: 3f1d2a7c5b9e8d6f4a2c0b1e3d5f7a9c8b6d4e2f0a1c3e5b7d9f8a6c4e2b0d1f\n  risk: high\n"
            );
            self.write(path, &packages)?;
        }
        self.write_overlay(kubelet)?;
        self.commit(message)
    }

    fn commit(&self, message: &str) -> Result<String, DemoError> {
        let repo = git2::Repository::open(&self.work)?;
        let mut index = repo.index()?;
        index.add_all(["*"], git2::IndexAddOption::DEFAULT, None)?;
        index.write()?;
        let tree = repo.find_tree(index.write_tree()?)?;
        let who = git2::Signature::now("Platform Team", "platform@fleet.example")?;
        let parent = repo.head().ok().and_then(|h| h.peel_to_commit().ok());
        let parents: Vec<&git2::Commit> = parent.iter().collect();
        let oid = repo.commit(Some("HEAD"), &who, &who, message, &tree, &parents)?;
        let mut origin = repo.find_remote("origin")?;
        origin
            .push(&["refs/heads/main:refs/heads/main"], None)
            .map_err(|source| DemoError::Repo {
                doing: format!("pushing {}", short(&oid.to_string())),
                source,
            })?;
        Ok(oid.to_string())
    }

    fn head(&self) -> Result<String, DemoError> {
        let repo = git2::Repository::open(&self.work)?;
        let head = repo.head().and_then(|h| h.peel_to_commit())?;
        Ok(head.id().to_string())
    }

    fn remote_head(&self) -> Result<String, DemoError> {
        let repo = git2::Repository::open_bare(&self.remote)?;
        let id = repo.refname_to_id("refs/heads/main")?;
        Ok(id.to_string())
    }

    fn message(&self, commit: &str) -> Result<String, DemoError> {
        let repo = git2::Repository::open_bare(&self.remote)?;
        let oid = git2::Oid::from_str(commit)?;
        let commit = repo.find_commit(oid)?;
        Ok(commit.message().unwrap_or_default().to_owned())
    }

    /// Brings the work clone up to the remote, so `git log` there shows the revert.
    fn pull(&self) -> Result<(), DemoError> {
        let repo = git2::Repository::open(&self.work)?;
        let mut origin = repo.find_remote("origin")?;
        origin.fetch(&["refs/heads/main:refs/remotes/origin/main"], None, None)?;
        let head = repo.refname_to_id("refs/remotes/origin/main")?;
        let commit = repo.find_commit(head)?;
        Ok(repo.reset(commit.as_object(), git2::ResetType::Hard, None)?)
    }
}
