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
    quiet_broken_pipe();
    let args = cli::Args::parse();
    let default_level = match args.command {
        cli::Command::Controller(_) => "info",
        _ => "warn",
    };
    if let Err(err) = logging(&args.log, default_level) {
        eprintln!("error: --log-level: {err}");
        return ExitCode::from(cmd::EXIT_INVALID);
    }
    cmd::run(args)
}

/// Installs the subscriber the libraries' `tracing` events go to.
fn logging(args: &cli::LogArgs, default_level: &str) -> anyhow::Result<()> {
    use tracing_subscriber::EnvFilter;
    let level = args.log_level.as_deref().unwrap_or(default_level);
    let filter = EnvFilter::try_new(level)?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let installed = match args.log_format {
        cli::LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
        cli::LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    installed.map_err(|e| anyhow::anyhow!(e))
}

/// Every command ends quietly when its reader goes away (`endstate plan … | head`): printing
/// to a closed pipe panics in `print!`, and that panic is turned into a plain exit, as the
/// shell's own tools end on SIGPIPE.
fn quiet_broken_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if message.starts_with("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(0);
        }
        default(info);
    }));
}
