//! Synthetic fleet repositories and the measuring helpers of the benchmark programs.

pub mod fleetgen;
pub mod measure;
pub mod rollout_repo;

/// The allocator the `endstate` binary uses, so that the benchmarks measure the same thing.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The `endstate` binary built beside the running benchmark program (`cargo build --release
/// -p endstate -p endstate-bench` puts both in `target/release`).
pub fn endstate_binary() -> anyhow::Result<std::path::PathBuf> {
    use anyhow::Context as _;
    let program = std::env::current_exe()?;
    program
        .parent()
        .map(|d| d.join("endstate"))
        .filter(|p| p.exists())
        .with_context(|| {
            format!(
                "the endstate binary must be built beside {} (cargo build --release -p endstate)",
                program.display()
            )
        })
}
