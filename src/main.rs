//! The `leakscope` command-line tool.
//!
//! Exit codes: 0 success, 1 failure (the message says why), 2 bad usage;
//! `leakscope check`: 0 clean, 1 a leak, 2 the check could not run.

leakscope::enable_heap_profiling!();

mod cli;

use clap::Parser;

fn main() {
    let args = cli::Cli::parse();
    // Agent and tool logs go to stderr; RUST_LOG=leakscope_agent=debug for more.
    // `watch` prints alerts and status changes on stdout itself, so the watch
    // loop's own log lines about them are left out by default.
    let default_filter = match args.command {
        cli::Command::Watch(_) | cli::Command::Demo(_) | cli::Command::Check(_) => {
            "warn,leakscope_agent::watch::monitor=error"
        }
        _ => "warn",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter)),
        )
        .with_writer(std::io::stderr)
        .init();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    // Where each task was spawned, for the demo's tasks findings: only in a
    // build with `--cfg tokio_unstable` (tokio's hooks are unstable).
    #[cfg(tokio_unstable)]
    leakscope::agent::tasks::install_hooks(&mut builder);
    let runtime = match builder.build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("leakscope: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    let result = runtime.block_on(async {
        match args.command {
            cli::Command::Check(a) => Ok(Some(cli::check::run(*a).await)),
            cli::Command::LeakyService(a) => cli::demo::leaky_service(a).await.map(|()| None),
            cli::Command::Demo(a) => cli::demo::run(a).await.map(|()| None),
            cli::Command::Watch(a) => cli::watch::run(*a).await.map(|()| None),
            cli::Command::Diff(a) => cli::diff::run(a).map(|()| None),
            cli::Command::View(a) => cli::view::run(a).await.map(|()| None),
            cli::Command::Load(a) => cli::load::run(a).await.map(|()| None),
        }
    });
    match result {
        Ok(None) => {}
        Ok(Some(code)) => std::process::exit(code),
        Err(e) => {
            eprintln!("leakscope: {e:#}");
            std::process::exit(1);
        }
    }
}
