//! Task dumps (`--cfg tokio_unstable` and the `taskdump` feature): every
//! task of a runtime with the trace of where it is parked, from tokio's
//! `Handle::dump`, joined to spawn sites by task id.
//!
//! Only current-thread runtimes are dumped. On a multi-thread runtime,
//! tokio 1.54 makes the workers meet at a barrier and gives up on a worker
//! that does not arrive within 250 ms, but counts its arrival anyway: the
//! next worker to arrive then leads the dump alone and waits for good at
//! the closing barrier (tokio-rs/tokio#7478; fix proposed in #8370). A
//! timeout around the dump cannot help, the worker stays stuck. Any worker
//! busy in one poll for 250 ms (a loaded machine is enough) triggers it, so
//! leakscope does not ask, and says so in the profile.
//!
//! A current-thread dump runs synchronously on the runtime's only thread:
//! it polls every task once in tracing mode, which stalls the runtime for
//! as long as that takes (proportional to the number of tasks).

use tokio::runtime::{Handle, RuntimeFlavor};

use super::census::{DumpedTask, TaskDumpState};
use super::registry::SpawnSite;
use crate::error::{Error, Result};

/// A task dump as tokio gave it, with each task's spawn site looked up at
/// once (the hooks forget a task when it ends).
pub struct TaskDump {
    dump: tokio::runtime::Dump,
    sites: Vec<Option<SpawnSite>>,
}

impl std::fmt::Debug for TaskDump {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskDump")
            .field("tasks", &self.sites.len())
            .finish_non_exhaustive()
    }
}

/// Dumps the tasks of `handle`'s runtime. Only a current-thread runtime,
/// and only from its own thread (from a task or `block_on` of it): anything
/// else is an [`Error::TaskDumpUnavailable`] saying why.
pub async fn dump_tasks(handle: &Handle) -> Result<TaskDump> {
    if handle.runtime_flavor() != RuntimeFlavor::CurrentThread {
        return Err(Error::TaskDumpUnavailable {
            reason: "tokio 1.54's task dump of a multi-thread runtime can leave a worker \
                     stuck for good when another worker is busy for 250 ms \
                     (tokio-rs/tokio#7478), so leakscope dumps current-thread runtimes only",
        });
    }
    let inside = Handle::try_current().is_ok_and(|h| h.id() == handle.id());
    if !inside {
        return Err(Error::TaskDumpUnavailable {
            reason: "a current-thread runtime can only be dumped from its own thread: \
                     ask from one of its tasks",
        });
    }
    let dump = handle.dump().await;
    let sites = dump
        .tasks()
        .iter()
        .map(|t| super::hooks::ids::site(t.id()))
        .collect();
    Ok(TaskDump { dump, sites })
}

impl TaskDump {
    /// Each task's traces as addresses. tokio's only way to them resolves
    /// every frame through the `backtrace` crate first (slow, and its cache
    /// of debug info stays in memory); only the addresses are kept, for
    /// leakscope's own symbolizer. Run it off async workers.
    pub fn resolve(self) -> TaskDumpState {
        let tasks = self
            .dump
            .tasks()
            .iter()
            .zip(self.sites)
            .map(|(t, site)| DumpedTask {
                id: t.id().to_string().parse().unwrap_or(0),
                site,
                traces: t
                    .trace()
                    .resolve_backtraces()
                    .iter()
                    .map(|bt| bt.frames().map(|f| f.ip() as u64).collect())
                    .collect(),
            })
            .collect();
        TaskDumpState::Taken(tasks)
    }
}
