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
    if let Err(err) = logging(&args.log) {
        eprintln!("error: --log-level: {err}");
        return ExitCode::from(cmd::EXIT_INVALID);
    }
    cmd::run(args)
}

/// Installs the subscriber the libraries' `tracing` events go to.
fn logging(args: &cli::LogArgs) -> Result<(), String> {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_new(&args.log_level).map_err(|e| e.to_string())?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let installed = match args.log_format {
        cli::LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
        cli::LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    installed.map_err(|e| e.to_string())
}
