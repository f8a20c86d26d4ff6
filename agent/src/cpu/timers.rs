//! Per-thread CPU-time timers, the way Go samples on Linux since 1.18
//! (golang/go#35057): one POSIX timer per thread on that thread's CPU-time
//! clock, delivering SIGPROF to that thread (`SIGEV_THREAD_ID`). Each thread
//! is then sampled in proportion to its own CPU time, and expirations of
//! different threads are never merged into one pending process-wide SIGPROF
//! as with `setitimer(ITIMER_PROF)`.
//!
//! The table lives on the drain thread, which calls [`ThreadTimers::rescan`]
//! every drain period to cover new threads and delete the timers of threads
//! that exited. The signal handler never touches it.

use std::collections::{HashMap, HashSet};
use std::io;

use super::sampler;

/// One armed timer per live thread of the process.
pub(crate) struct ThreadTimers {
    interval_ns: u64,
    /// tid -> kernel timer id.
    by_tid: HashMap<libc::pid_t, libc::c_int>,
}

impl ThreadTimers {
    /// Arms a timer on the calling thread, then on every other thread listed
    /// in /proc/self/task. Err if the calling thread's timer cannot be created
    /// (no per-thread timers here: the caller falls back to `setitimer`).
    /// The SIGPROF handler must already be installed.
    pub(crate) fn start(interval_ns: u64) -> io::Result<ThreadTimers> {
        let me = sampler::gettid();
        let id = sampler::create_thread_timer(me, interval_ns)?;
        let mut timers = ThreadTimers {
            interval_ns,
            by_tid: HashMap::from([(me, id)]),
        };
        timers.rescan();
        Ok(timers)
    }

    /// Creates timers for threads not seen before and deletes those of
    /// threads that are gone. Best effort: a thread that exits between the
    /// listing and `timer_create` simply gets no timer, and failures for a
    /// live thread are retried at the next rescan.
    pub(crate) fn rescan(&mut self) {
        let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
            return;
        };
        let live: HashSet<libc::pid_t> = dir
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect();
        self.by_tid.retain(|tid, id| {
            let alive = live.contains(tid);
            if !alive {
                sampler::delete_thread_timer(*id);
            }
            alive
        });
        for tid in live {
            if self.by_tid.contains_key(&tid) {
                continue;
            }
            if let Ok(id) = sampler::create_thread_timer(tid, self.interval_ns) {
                self.by_tid.insert(tid, id);
            }
        }
    }
}

impl Drop for ThreadTimers {
    /// Disarms and deletes every timer.
    fn drop(&mut self) {
        for (_, id) in self.by_tid.drain() {
            sampler::delete_thread_timer(id);
        }
    }
}
