//! Synthetic fleet repositories and the measuring helpers of the benchmark programs.

pub mod fleetgen;
pub mod measure;
pub mod rollout_repo;

/// The allocator the `endstate` binary uses, so that the benchmarks measure the same thing.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
