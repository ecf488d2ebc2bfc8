//! The `endstate` command.

mod cli;
mod cmd;

use std::process::ExitCode;

use clap::Parser;

/// mimalloc: rendering, diffing and the engine's state allocate many small strings and maps,
/// which glibc's allocator serves markedly slower.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let args = cli::Args::parse();
    cmd::run(args)
}
