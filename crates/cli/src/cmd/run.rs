//! `endstate run --live sim`: the reconcile loop on a repository the user names, against the
//! simulated fleet.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use endstate_controller::gates::DirSecrets;
use endstate_controller::{Config, Console, Controller, LocalDir, Origin, SimClock, WallClock};
use endstate_git::{RevertConfig, RevertWriter, Source, SourceConfig};
use endstate_sim::{Faults, SimConfig, SimFleet, SimLive};

use crate::cli::{Live, RunArgs};
use crate::cmd::drive::drive;

pub fn run(args: &RunArgs) -> anyhow::Result<ExitCode> {
    if live(args)? == Live::Kube {
        return crate::cmd::cluster::run(args);
    }
    if args.repo.is_empty() && args.local.is_none() {
        bail!("--live sim needs --repo URL or --local DIR");
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run_sim(args))
}

/// Which live fleet `run` works on: never the simulated one when a cluster was named.
pub fn live(args: &RunArgs) -> anyhow::Result<Live> {
    let in_cluster = std::env::var_os("KUBERNETES_SERVICE_HOST").is_some();
    match (args.live, &args.kubeconfig) {
        (Some(Live::Sim), Some(_)) => bail!(
            "--kubeconfig names a cluster, and --live sim runs the simulated fleet, which writes nothing to it: say --live kube, or drop --kubeconfig"
        ),
        (Some(live), _) => Ok(live),
        (None, Some(_)) => Ok(Live::Kube),
        (None, None) if in_cluster => Ok(Live::Kube),
        (None, None) => bail!(
            "say which fleet to reconcile: --live sim (the simulated fleet, in process) or --live kube (a cluster: --kubeconfig, $KUBECONFIG or in-cluster)"
        ),
    }
}

async fn run_sim(args: &RunArgs) -> anyhow::Result<ExitCode> {
    let mut faults = Faults::parse(&args.sim_fault).context("--sim-fault")?;
    if let Some(file) = &args.sim_faults_file {
        faults
            .rules
            .extend(Faults::load(file).context("--sim-faults-file")?.rules);
    }
    let state_dir = match &args.state_dir {
        Some(dir) => dir.clone(),
        None => {
            // This run's alone: one left by an earlier process of the same pid holds another
            // repository's mirror.
            let dir = std::env::temp_dir().join(format!("endstate-run-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            dir
        }
    };
    // The status file holds what the last run applied: the source checks the branch against it.
    let mut sim =
        SimFleet::new(SimConfig::new(args.namespace.clone(), args.sim_seed).with_faults(faults));
    if let Some(path) = &args.sim_status_file {
        sim = sim.with_status_file(path)?;
    }
    let (source, writer): (Origin, Option<RevertWriter>) = match &args.local {
        Some(dir) => (
            LocalDir::new(dir.clone(), args.path.trim_matches('/')).into(),
            None,
        ),
        None => {
            let mut source_config = SourceConfig::new(args.repo.clone(), state_dir.join("mirror"))
                .branch(args.branch.clone().unwrap_or_else(|| "main".to_owned()))
                .path(args.path.trim_matches('/').to_owned());
            if args.adopt_rewritten_history {
                source_config =
                    source_config.on_history_rewrite(endstate_git::RewritePolicy::Adopt);
            }
            let writer = if args.no_revert {
                None
            } else {
                Some(RevertWriter::open(
                    &source_config,
                    RevertConfig::new(&args.fleet, &args.author_name, &args.author_email),
                )?)
            };
            (
                Source::open(
                    source_config,
                    endstate_runtime::fleet::history(sim.fleet_status()),
                )?
                .into(),
                writer,
            )
        }
    };

    let live = SimLive::new(sim);
    let mut config = Config::new(args.fleet.clone(), args.namespace.clone());
    config.interval = args.interval.unwrap_or(Duration::from_secs(60));
    config.poll = args.poll;

    let branch = args.branch.clone().unwrap_or_else(|| "main".to_owned());
    // Until idle, or with a speed, the simulated fleet runs in virtual time.
    if args.speed > 0.0 || args.until_idle {
        let clock = SimClock::new(live.clone(), args.speed);
        let mut controller = Controller::new(
            config,
            source,
            writer,
            live.clone(),
            clock,
            Box::new(Console::new()),
        );
        if let Some(dir) = &args.secrets_dir {
            controller.set_gate_secrets(Arc::new(DirSecrets(dir.clone())));
        }
        start(&mut controller, args, &live).await?;
        drive(controller, args, &branch).await
    } else {
        let mut controller = Controller::new(
            config,
            source,
            writer,
            live.clone(),
            WallClock,
            Box::new(Console::new()),
        );
        if let Some(dir) = &args.secrets_dir {
            controller.set_gate_secrets(Arc::new(DirSecrets(dir.clone())));
        }
        start(&mut controller, args, &live).await?;
        drive(controller, args, &branch).await
    }
}

/// Resumes persisted state and, with `--sim-initial`, starts the simulated fleet converged at
/// that commit.
async fn start<C: endstate_controller::Clock>(
    controller: &mut Controller<SimLive, C>,
    args: &RunArgs,
    live: &SimLive,
) -> anyhow::Result<()> {
    controller.resume().await?;
    if let Some(rev) = &args.sim_initial {
        let commit = controller
            .resolve(rev)
            .map_err(anyhow::Error::msg)
            .context("--sim-initial")?;
        let objects = controller
            .prepare(&commit)
            .map_err(anyhow::Error::msg)
            .context("--sim-initial")?;
        let count = objects.len();
        live.lock()
            .seed_converged(objects)
            .context("seeding the simulated fleet")?;
        controller.adopt(&commit).await?;
        eprintln!("simulated fleet starts converged at {commit} ({count} objects)");
    }
    Ok(())
}
