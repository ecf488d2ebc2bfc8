//! Driving a started loop: for ever, or until idle with an exit code by outcome; shared by
//! `run --live sim` and `run --live kube`.

use std::process::ExitCode;

use endstate_controller::{Controller, Outcome};

use crate::cli::RunArgs;
use crate::cmd::EXIT_INVALID;

/// Exit code: the breaker tripped; the fleet was restored and the revert handled.
pub const EXIT_TRIPPED: u8 = 3;

/// Exit code: a wave with `pause: true` holds the rollout for approval.
pub const EXIT_HELD: u8 = 4;

/// Runs the loop.
/// Runs a started controller: for ever, or with `--until-idle` until the fleet is idle
/// (approving held waves with `--approve`), serving the webhook and the directory watch the
/// flags ask for. Closes the breaker first with `--reset-breaker`.
pub async fn drive<L: endstate_rollout::Live, C: endstate_controller::Clock>(
    mut controller: Controller<L, C>,
    args: &RunArgs,
    branch: &str,
) -> anyhow::Result<ExitCode> {
    let _webhook = crate::cmd::webhook(args, branch, controller.kick()).await?;
    let _watch = watch(args, controller.kick())?;
    if args.reset_breaker {
        controller.reset_breaker().await?;
    }
    if !args.until_idle {
        controller.run().await?;
        return Ok(ExitCode::SUCCESS);
    }
    let outcome = loop {
        match controller.run_until_idle().await? {
            Outcome::AwaitingApproval { wave, .. } if args.approve => {
                eprintln!("approving the wave after {wave} (--approve)");
                controller.approve().await?;
            }
            outcome => break outcome,
        }
    };
    Ok(exit_code(outcome))
}

/// The exit code of a `--until-idle` run, after printing how it ended.
pub fn exit_code(outcome: Outcome) -> ExitCode {
    match outcome {
        Outcome::Converged { commit } => {
            println!("converged: the fleet is at {commit}");
            ExitCode::SUCCESS
        }
        Outcome::Tripped { commit, revert } => {
            println!("breaker tripped on {commit}: the fleet was restored; {revert}");
            ExitCode::from(EXIT_TRIPPED)
        }
        Outcome::AwaitingApproval { commit, wave } => {
            println!(
                "held for approval after wave {wave} of {commit}; run again with --approve to go on"
            );
            ExitCode::from(EXIT_HELD)
        }
        Outcome::Suspended => {
            println!("the Fleet is suspended (spec.suspend): nothing was fetched or written");
            ExitCode::from(EXIT_HELD)
        }
        Outcome::Refused { reason } => {
            eprintln!("error: {reason}");
            ExitCode::from(EXIT_INVALID)
        }
    }
}

/// With `--local`, watches the directory and wakes the loop on every change.
fn watch(
    args: &RunArgs,
    kick: std::sync::Arc<tokio::sync::Notify>,
) -> anyhow::Result<Option<endstate_git::Watcher>> {
    let Some(dir) = &args.local else {
        return Ok(None);
    };
    let (sender, receiver) = std::sync::mpsc::channel();
    let watcher = endstate_git::Watcher::start(dir, sender)?;
    eprintln!("watching {} for changes", dir.display());
    crate::cmd::wake_on(receiver, kick);
    Ok(Some(watcher))
}
