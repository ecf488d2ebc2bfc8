//! One module per command; each returns its exit code.

mod agent;
mod cluster;
mod control;
mod demo;
pub mod drive;
mod manager;
mod plan;
mod render;
pub mod run;

use std::process::ExitCode;

use crate::cli::{Args, Command};

/// Exit code: the input (a repository, a flag) is invalid, or the command failed.
pub const EXIT_INVALID: u8 = 2;

/// Runs a parsed command line.
pub fn run(args: Args) -> ExitCode {
    let result = match args.command {
        Command::Render { source, output } => render::render(&source, output),
        Command::Validate { source, output } => render::validate(&source, output),
        Command::Crds => {
            print!("{}", endstate_api::crds::yaml());
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo(args) => demo::run(&args),
        Command::Run(args) => run::run(&args),
        Command::Plan(args) => plan::plan(&args),
        Command::SimAgent(args) => agent::run(&args),
        Command::Install {
            what: crate::cli::Install::Crds(args),
        } => cluster::install(&args),
        Command::Controller(args) => manager::run(&args),
        Command::Approve(args) => control::approve(&args),
        Command::Breaker {
            what: crate::cli::Breaker::Reset(args),
        } => control::reset_breaker(&args),
        Command::Suspend(args) => control::suspend(&args, true),
        Command::Resume(args) => control::suspend(&args, false),
        Command::Reconcile(args) => control::reconcile(&args),
        Command::Status(args) => control::status(&args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(EXIT_INVALID)
        }
    }
}

/// A client for the cluster the kubeconfig (or the environment) names.
pub async fn kube_client(kubeconfig: Option<&std::path::Path>) -> anyhow::Result<kube::Client> {
    use anyhow::Context;
    let config = kube_config(kubeconfig).await?;
    kube::Client::try_from(config).context("building the Kubernetes client")
}

/// The client configuration the kubeconfig (or the environment) gives.
pub async fn kube_config(kubeconfig: Option<&std::path::Path>) -> anyhow::Result<kube::Config> {
    use anyhow::Context;
    Ok(match kubeconfig {
        Some(path) => {
            let file = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("reading the kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(file, &kube::config::KubeConfigOptions::default())
                .await
                .with_context(|| format!("using the kubeconfig {}", path.display()))?
        }
        None => kube::Config::infer()
            .await
            .context("finding a kubeconfig")?,
    })
}

/// Starts the push webhook `run` was asked for; each accepted push wakes the loop through
/// `kick`. The server stops when the returned value is dropped.
pub fn webhook(
    args: &crate::cli::RunArgs,
    branch: &str,
    kick: std::sync::Arc<tokio::sync::Notify>,
) -> anyhow::Result<Option<endstate_git::WebhookServer>> {
    use anyhow::Context;
    let Some(bind) = args.webhook_listen else {
        return Ok(None);
    };
    let path = args.webhook_secret_file.as_ref().context(
        "--webhook-listen needs --webhook-secret-file: unsigned pushes are never trusted",
    )?;
    let secret = std::fs::read_to_string(path)
        .with_context(|| format!("reading the webhook secret {}", path.display()))?;
    let (sender, receiver) = std::sync::mpsc::channel();
    let server = endstate_git::WebhookServer::start(
        endstate_git::WebhookConfig {
            bind,
            branch: branch.to_owned(),
            secret: endstate_git::Secret::new(secret.trim()),
        },
        sender,
    )?;
    eprintln!("webhook listening on {}", server.local_addr());
    wake_on(receiver, kick);
    Ok(Some(server))
}

/// Wakes the loop through `kick` for every trigger `receiver` gets, until its sender is gone.
pub fn wake_on(
    receiver: std::sync::mpsc::Receiver<endstate_git::Trigger>,
    kick: std::sync::Arc<tokio::sync::Notify>,
) {
    std::thread::spawn(move || {
        while receiver.recv().is_ok() {
            kick.notify_one();
        }
    });
}

/// What a persisted Fleet status says the fleet applied last, and was good at last: the
/// source refuses a branch whose head does not descend from it.
pub fn history(status: Option<&endstate_api::FleetStatus>) -> endstate_git::History {
    endstate_git::History {
        last_applied: status.and_then(|s| s.last_applied_commit.clone()),
        last_good: status.and_then(|s| s.last_good_commit.clone()),
    }
}
