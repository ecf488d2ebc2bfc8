//! `endstate demo`.

use std::process::ExitCode;

/// The simulated fleet, the rollout engine and the revert writer that the demo plays are not
/// built yet; say so plainly instead of pretending.
pub fn run() -> anyhow::Result<ExitCode> {
    eprintln!(
        "endstate demo: not yet available. The demo needs the rollout engine and the simulated \
         fleet, which are not part of this build. Today you can render and validate a fleet \
         repository:\n  endstate validate examples/repo-layout/overlays/prod"
    );
    Ok(ExitCode::from(1))
}
