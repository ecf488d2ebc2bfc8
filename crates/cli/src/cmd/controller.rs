//! `endstate controller`: its flags resolved into the runtime's settings, then the runtime.

use std::process::ExitCode;

use endstate_kube::{LeaseSettings, Limits};
use endstate_runtime::settings::{Settings, default_identity, default_namespace};
use endstate_runtime::{Ended, run};

use crate::cli::ControllerArgs;

/// `endstate controller`: 0 when stopped by a signal, 1 when the Lease was lost.
pub fn controller(args: &ControllerArgs) -> anyhow::Result<ExitCode> {
    Ok(match run(&settings(args))? {
        Ended::Stopped => ExitCode::SUCCESS,
        Ended::LostLease => ExitCode::from(1),
    })
}

/// The flags, with the defaults that come from the environment applied.
fn settings(args: &ControllerArgs) -> Settings {
    let identity = args.identity.clone().unwrap_or_else(default_identity);
    let lease_namespace = args
        .lease_namespace
        .clone()
        .unwrap_or_else(default_namespace);
    let mut lease = LeaseSettings::new(lease_namespace, &args.lease_name, identity);
    lease.lease_duration = args.lease_duration;
    lease.renew_deadline = args.renew_deadline;
    lease.retry_period = args.retry_period;
    Settings {
        kubeconfig: args.kubeconfig.clone(),
        namespace: args.namespace.clone(),
        fleet_selector: args.fleet_selector.clone(),
        lease,
        limits: Limits {
            qps: args.qps,
            burst: args.burst,
        },
        max_in_flight: args.max_in_flight,
        metrics_listen: args.metrics_listen,
        webhook_listen: args.webhook_listen,
        state_dir: args.state_dir.clone(),
        poll: args.poll,
        shutdown_timeout: args.shutdown_timeout,
        author_name: args.author_name.clone(),
        author_email: args.author_email.clone(),
    }
}
