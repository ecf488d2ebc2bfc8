//! `endstate demo`: the whole story on a simulated fleet.

use std::process::ExitCode;

use endstate_controller::Console;
use endstate_controller::demo::{self, Options};

use crate::cli::DemoArgs;

/// Plays the demo; exit 0 when the story played as expected.
pub fn run(args: &DemoArgs) -> anyhow::Result<ExitCode> {
    let options = Options {
        machines: args.machines,
        speed: args.speed,
        keep: args.keep.clone(),
        seed: args.seed,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    match runtime.block_on(demo::run(&options, Box::new(Console::new()))) {
        Ok(summary) => {
            println!("{}", summary.text.trim_end());
            println!("  real time         {:.1}s", summary.elapsed.as_secs_f64());
            if options.keep.is_some() {
                println!(
                    "\n  git -C {} log --format='%h %s%n%b' -n 2",
                    summary.dir.join("work").display()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(why) => {
            eprintln!("endstate demo: the story did not play as expected: {why}");
            Ok(ExitCode::from(1))
        }
    }
}
