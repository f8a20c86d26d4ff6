//! The `leakscope` command-line tool.
//!
//! Exit codes: 0 success, 1 failure (the message says why), 2 bad usage.

leakscope::enable_heap_profiling!();

mod cli;

use clap::Parser;

fn main() {
    let args = cli::Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("leakscope: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    let result = runtime.block_on(async {
        match args.command {
            cli::Command::Demo(a) => cli::demo::run(a).await,
        }
    });
    if let Err(e) = result {
        eprintln!("leakscope: {e:#}");
        std::process::exit(1);
    }
}
