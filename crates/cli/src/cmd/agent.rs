//! `endstate sim-agent`: the simulated operators against a real API server.

use std::process::ExitCode;

use anyhow::Context;
use endstate_agent::AgentConfig;
use endstate_sim::{Faults, OperatorConfig};

use crate::cli::AgentArgs;

/// Runs the agent until it fails or is stopped.
pub fn run(args: &AgentArgs) -> anyhow::Result<ExitCode> {
    let mut faults = Faults::parse(&args.sim_fault).context("--sim-fault")?;
    if let Some(file) = &args.sim_faults_file {
        faults
            .rules
            .extend(Faults::load(file).context("--sim-faults-file")?.rules);
    }
    let config = AgentConfig {
        namespace: args.namespace.clone(),
        seed: args.seed,
        operators: OperatorConfig::default().scaled(args.speed),
        faults,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let client = endstate_kube::client(args.kubeconfig.as_deref()).await?;
        endstate_agent::run(client, config).await?;
        Ok(ExitCode::SUCCESS)
    })
}
