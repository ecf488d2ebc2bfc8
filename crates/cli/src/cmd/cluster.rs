//! `endstate run --live kube` and `endstate install crds`: the loop against a real API server.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, anyhow};
use endstate_controller::Console;
use endstate_kube::placed::{Placed, Placement};
use endstate_kube::{KubeLive, Limits, Settings};
use endstate_runtime::fleet::{Overrides, build};

use crate::cli::{InstallArgs, RunArgs};
use crate::cmd::drive::drive;

pub use endstate_runtime::fleet::signature_policy;

/// `endstate install crds`.
pub fn install(args: &InstallArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let client = endstate_kube::client(args.kubeconfig.as_deref()).await?;
        let names = endstate_kube::install_crds(&client, Duration::from_secs(120)).await?;
        for name in names {
            println!("{name} established");
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// The loop on the `Fleet` named by `--fleet`; `--repo`, `--branch` and `--path` override its
/// source.
pub fn run(args: &RunArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let config = endstate_kube::config(args.kubeconfig.as_deref()).await?;
        let server = config.cluster_url.clone();
        let client = kube::Client::try_from(config).context("building the Kubernetes client")?;
        let fleet = endstate_kube::find_fleet(&client, &args.namespace, &args.fleet).await.with_context(|| {
            format!("reading Fleet {}/{} from {server}", args.namespace, args.fleet)
        })?;
        let fleet = fleet.ok_or_else(|| {
            anyhow!(
                "Fleet {}/{} does not exist; create it (see examples/fleet/fleet.yaml and docs/operations.md) before running",
                args.namespace,
                args.fleet
            )
        })?;
        let overrides = Overrides {
            repo: args.repo.clone(),
            branch: args.branch.clone(),
            path: args.path.clone(),
            adopt_rewritten_history: args.adopt_rewritten_history,
            no_revert: args.no_revert,
            author_name: args.author_name.clone(),
            author_email: args.author_email.clone(),
            interval: args.interval,
            poll: args.poll,
            state_dir: match &args.state_dir {
                Some(dir) => dir.clone(),
                None => std::env::temp_dir()
                    .join(format!("endstate-{}-{}", args.namespace, args.fleet)),
            },
            jitter: 0.1,
        };
        let mut settings = Settings::new(args.namespace.clone(), args.fleet.clone());
        settings.limits = Limits {
            qps: args.qps,
            burst: args.burst,
        };
        let config = endstate_kube::config(args.kubeconfig.as_deref()).await?;
        // The caches list the fleet in the background: a restarted run re-gates what it had in
        // flight, and goes on, meanwhile.
        let live = KubeLive::connect_lazily(config, settings)
            .await
            .context("starting the Kubernetes backend")?;
        let placement = Placement::of(&args.namespace, fleet.spec.machines.as_ref())
            .with_context(|| format!("Fleet {}/{}", args.namespace, args.fleet))?;
        let live = Placed::new(std::sync::Arc::new(live), placement);
        let mut controller =
            build(&client, &fleet, live, &overrides, Box::new(Console::new())).await?;
        let control = controller.control();
        control.generation(fleet.metadata.generation.unwrap_or(0));
        control.suspend(fleet.spec.suspend.unwrap_or(false));
        let branch = controller.source().git().map(|s| s.config().branch.clone()).unwrap_or_default();
        controller.resume().await?;
        drive(controller, args, &branch).await
    })
}
