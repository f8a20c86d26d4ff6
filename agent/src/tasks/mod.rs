//! Live tokio tasks by where they were spawned: the `tasks` profile, also
//! served under Go's name `goroutine`.
//!
//! A service that leaks tasks (each awaiting a channel nobody will ever
//! complete) shows a rising `num_alive_tasks()`; this module says which
//! code spawned the tasks that stay. It has three parts:
//!
//! - a [`Registry`] of spawn sites (file, line, column), each with its live
//!   and total task counts and one representative stack of the spawning
//!   code, fed by tokio's task hooks;
//! - the hooks themselves, `install_hooks`, which exist only when the
//!   service is built with `--cfg tokio_unstable` (tokio's task hooks are
//!   an unstable API);
//! - with the `taskdump` feature as well, task dumps of current-thread
//!   runtimes: where each task is parked (`Handle::dump`), joined to its
//!   spawn site.
//!
//! [`TaskCensus`] reads all of it at one moment; [`TaskCensus::profile`]
//! turns it into a pprof profile, [`capture_profile`] does both from any
//! thread given the runtime's handle.
//!
//! ## Setup
//!
//! Without the steps below the profile still works, and says so: it has
//! one sample, `<tokio tasks: spawn sites unknown ...>`, counting the
//! runtime's alive tasks, and a comment naming what to set.
//!
//! 1. Compile with tokio's unstable cfg. In `.cargo/config.toml` of the
//!    service's workspace (keep the frame-pointer flag, which gives the
//!    spawning function's callers too):
//!
//!    ```toml
//!    [build]
//!    rustflags = ["-C", "force-frame-pointers=yes", "--cfg", "tokio_unstable"]
//!    ```
//!
//!    A `RUSTFLAGS` variable in the environment replaces this list rather
//!    than adding to it: put the same flags there if you set it.
//!
//! 2. Build the runtime yourself instead of with `#[tokio::main]`, so the
//!    hooks can go on its builder:
//!
//!    ```ignore
//!    fn main() -> std::io::Result<()> {
//!        let mut builder = tokio::runtime::Builder::new_multi_thread();
//!        builder.enable_all();
//!        leakscope_agent::tasks::install_hooks(&mut builder);
//!        builder.build()?.block_on(serve())
//!    }
//!
//!    async fn serve() -> std::io::Result<()> {
//!        let _agent = leakscope_agent::AgentBuilder::new().spawn().await;
//!        // ... the service ...
//!        Ok(())
//!    }
//!    ```
//!
//!    tokio keeps one spawn and one terminate callback per runtime:
//!    `install_hooks` takes both slots.
//!
//! 3. Optionally, the `taskdump` feature of `leakscope-agent` (Linux;
//!    x86_64, aarch64): on a current-thread runtime the profile also says
//!    where each task is parked. Each profile then stalls the runtime while
//!    tokio polls every task once in tracing mode, and tokio resolves the
//!    traces through the `backtrace` crate (whose cache of debug info stays
//!    in memory) before leakscope symbolizes them again. Multi-thread
//!    runtimes are not dumped: tokio 1.54 can leave a worker stuck for good
//!    when one worker is busy during a dump (see `dump_tasks`); the
//!    profile comment says so.
//!
//! ## What the profile holds
//!
//! One sample per spawn site with live tasks; its value is the live count;
//! its stack is, from the leaf, a frame `tokio::spawn at FILE:LINE:COL`
//! (with that file and line), then the stack of the code that first
//! spawned there, without tokio's and leakscope's own frames. Labels:
//! `spawned_at` (`FILE:LINE:COL`), `spawned` (tasks spawned there in all),
//! and `owner = leakscope` on sites in this crate (the agent's own tasks).
//! With task dumps, a site's tasks are split by the first frame of the
//! program's own code where they are parked (a leaf frame, and a
//! `parked_at` label).

mod census;
#[cfg(all(tokio_unstable, feature = "taskdump", feature = "server"))]
mod dump;
#[cfg(all(tokio_unstable, feature = "server"))]
mod hooks;
mod profile;
mod registry;
mod stack;
#[cfg(test)]
mod tests;
mod text;

use std::sync::atomic::{AtomicBool, Ordering};

pub use census::{DumpedTask, TaskCensus, TaskDumpState};
#[cfg(all(tokio_unstable, feature = "taskdump", feature = "server"))]
pub use dump::{TaskDump, dump_tasks};
#[cfg(all(tokio_unstable, feature = "server"))]
pub use hooks::install_hooks;
pub use profile::SITES_UNKNOWN;
pub use registry::{Counts, Registry, SiteCount, SpawnSite};

/// Set by [`install_hooks`].
static INSTALLED: AtomicBool = AtomicBool::new(false);

/// True once `install_hooks` has been called in this process (so spawn
/// sites are being recorded); always false without `--cfg tokio_unstable`.
pub fn hooks_installed() -> bool {
    INSTALLED.load(Ordering::Acquire)
}

/// The name a tasks profile is served under, which is also its sample type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProfileName {
    /// `tasks/count`.
    Tasks,
    /// `goroutine/count`, as Go's goroutine profile, for tools that scrape
    /// Go services.
    Goroutine,
}

impl ProfileName {
    /// `tasks` or `goroutine`.
    pub fn as_str(self) -> &'static str {
        match self {
            ProfileName::Tasks => "tasks",
            ProfileName::Goroutine => "goroutine",
        }
    }
}

/// The tasks profile of the runtime `handle` belongs to, from any thread
/// (a plain thread too; it blocks for the symbolizer, tens of ms):
/// live tasks by spawn site when [`hooks_installed`], else one sample
/// counting `handle`'s alive tasks with a comment on how to get spawn
/// sites. No task dump is taken (see `dump_tasks`, feature `taskdump`).
#[cfg(feature = "server")]
pub fn capture_profile(handle: &tokio::runtime::Handle) -> crate::profile::Profile {
    let alive = handle.metrics().num_alive_tasks() as u64;
    TaskCensus::take(Some(alive))
        .profile(ProfileName::Tasks, crate::symbolize::Symbolizer::global())
}
