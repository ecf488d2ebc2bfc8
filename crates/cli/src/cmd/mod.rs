//! One module per command; each returns its exit code.

mod agent;
mod cluster;
mod demo;
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
