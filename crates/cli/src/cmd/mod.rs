//! One module per command; each returns its exit code.

mod demo;
mod plan;
mod render;
mod run;

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
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(EXIT_INVALID)
        }
    }
}
