//! One module per command; each returns its exit code.

mod agent;
mod cluster;
mod control;
mod controller;
mod demo;
pub mod drive;
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
        Command::Crds { target } => {
            print!("{}", endstate_api::crds::yaml(target));
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo(args) => demo::run(&args),
        Command::Run(args) => run::run(&args),
        Command::Plan(args) => plan::plan(&args),
        Command::SimAgent(args) => agent::run(&args),
        Command::Install {
            what: crate::cli::Install::Crds(args),
        } => cluster::install(&args),
        Command::Controller(args) => controller::controller(&args),
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

/// The client configuration the kubeconfig (or the environment) gives.
pub async fn kube_config(kubeconfig: Option<&std::path::Path>) -> anyhow::Result<kube::Config> {
    Ok(endstate_kube::config(kubeconfig).await?)
}

/// Starts the push webhook `run` was asked for; each accepted push wakes the loop through
/// `kick`. The server stops when the returned value is dropped.
pub async fn webhook(
    args: &crate::cli::RunArgs,
    branch: &str,
    kick: std::sync::Arc<tokio::sync::Notify>,
) -> anyhow::Result<Option<endstate_runtime::http::Server>> {
    use anyhow::Context;
    let Some(bind) = args.webhook_listen else {
        return Ok(None);
    };
    let path = args.webhook_secret_file.as_ref().context(
        "--webhook-listen needs --webhook-secret-file: unsigned pushes are never trusted",
    )?;
    let secret = std::fs::read_to_string(path)
        .with_context(|| format!("reading the webhook secret {}", path.display()))?;
    let router = endstate_runtime::hooks::single(
        endstate_runtime::http::Router::new(),
        branch.to_owned(),
        endstate_git::Secret::new(secret.trim()),
        move |_| kick.notify_one(),
    )?;
    let server = router
        .serve(bind)
        .await
        .with_context(|| format!("the webhook cannot listen on {bind}"))?;
    eprintln!("webhook listening on {}", server.local_addr());
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
