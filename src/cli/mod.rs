//! The `leakscope` command line: subcommands and their wiring.

pub mod check;
pub mod demo;
pub mod diff;
pub mod load;
pub mod view;
pub mod watch;

use clap::{Parser, Subcommand};

/// Find the leak that appears under load.
#[derive(Debug, Parser)]
#[command(name = "leakscope", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// What to run.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a leaky service under load and show the leak being found.
    Demo(demo::DemoArgs),
    /// Watch processes through /proc and pull their pprof profiles into a
    /// snapshot store (the sidecar).
    Watch(Box<watch::WatchArgs>),
    /// Rank what grew between two saved profiles; -o writes the
    /// differential flamegraph.
    Diff(diff::DiffArgs),
    /// Serve the web viewer over saved profiles.
    View(view::ViewArgs),
    /// Put a service under load: URLs with weights, a concurrency, a rate
    /// or a closed loop, bounded by duration or request count; latency and
    /// errors (per URL) at the end.
    Load(load::LoadArgs),
    /// A leak test for CI: load a service, let it cool down, and fail with
    /// each leak named when something stayed behind (exit 0 clean, 1 leak,
    /// 2 could not run).
    Check(Box<check::CheckArgs>),
    /// The demo's leaky service on its own (used by `leakscope demo`).
    #[command(hide = true)]
    LeakyService(demo::LeakyServiceArgs),
}
