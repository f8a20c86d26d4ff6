//! Thread dumps: the current stack of every live OS thread of this process,
//! the data behind `/debug/pprof/threads` (Go's goroutine profile, for
//! threads). A Rust service that leaks threads (a `std::thread` parked on a
//! channel nobody sends to, a pool that only grows) shows them here, grouped
//! by stack, with the function, file and line that runs them.
//!
//! # How a dump is taken
//!
//! [`dump`] lists `/proc/self/task` (at most [`ThreadDumpOptions::max_threads`],
//! by default [`MAX_THREADS`]; the rest are counted in
//! [`RawThreadDump::skipped`]), builds a table with one slot per thread and
//! the executable-mapping table of the frame-pointer unwinder, installs a
//! SIGURG handler and sends SIGURG to each thread with `tgkill`, the calling
//! thread included (it signals itself, so its stack shows the dump being
//! taken). In each thread the handler (see `handler`) acts only while a dump
//! runs and only for a `tgkill` from this process; it walks its own stack
//! with the CPU sampler's unwinder (`crate::cpu::unwind`, same leaf
//! heuristic), reads its name with `prctl(PR_GET_NAME)` and publishes its
//! slot. The dump polls for answers for at most
//! [`ThreadDumpOptions::timeout`] (default [`DEFAULT_TIMEOUT`], 200 ms),
//! then waits for handlers still running, restores the previous SIGURG
//! disposition and frees the table. Threads that did not answer (SIGURG
//! blocked, stuck in an uninterruptible sleep, busy exiting) are listed in
//! [`RawThreadDump::unanswered`] with their tid and name from
//! `/proc/self/task/TID/comm`; one that exited before it could be signalled
//! or answer is counted in [`RawThreadDump::gone`].
//!
//! One dump runs at a time: a second caller waits for the first to finish
//! (at most the timeout plus the listing and the teardown), then takes its
//! own dump.
//!
//! # Why SIGURG, and what it costs the threads
//!
//! SIGURG's default action is to ignore it, so a signal that arrives late
//! (a thread that had it blocked and unblocks it after the dump) can never
//! kill the process; Go's runtime uses it to preempt goroutines for the same
//! reason. If the application has installed its own SIGURG handler (Go code
//! linked in through cgo does; so may code that uses TCP urgent data), the
//! dump refuses with [`Error::ThreadDumpSignalTaken`] instead of replacing
//! it.
//!
//! The signal interrupts each thread once. The kernel resumes most blocking
//! system calls afterwards (the handler is installed with `SA_RESTART`):
//! futex waits without a timeout, and reads, writes and `accept`s on
//! sockets without timeouts carry on as if nothing happened. Calls that
//! Linux never restarts after a handler return `EINTR` once: `epoll_wait`,
//! `poll`, `select`, `nanosleep`, futex waits with a timeout, and socket
//! reads and writes on a socket with `SO_RCVTIMEO`/`SO_SNDTIMEO`. std retries
//! `EINTR` in its futex waits (`Mutex`, `Condvar`, `park`, channels) and in
//! `thread::sleep`; mio hands `Interrupted` to its caller and tokio's I/O
//! driver treats it as a wake-up with no events and polls again. std's
//! `Read::read` on a socket with a read timeout does not retry: its caller
//! sees `ErrorKind::Interrupted` once (`read_exact`, `read_to_end` and
//! `BufRead::read_line` retry it). C code calling libc directly gets
//! `EINTR` where POSIX says it may.
//!
//! Memory: about 1 KiB per thread for the dump's table (10 MiB at the
//! 10,000-thread maximum), freed when the dump returns.

mod handler;

use std::time::{Duration, Instant, SystemTime};

use crate::cpu::sampler::gettid;
use crate::cpu::unwind::ExecMaps;
use crate::error::{Error, Result};

use self::handler::{InstallError, Table};

/// Default for [`ThreadDumpOptions::timeout`].
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(200);
/// Longest [`ThreadDumpOptions::timeout`] accepted.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(10);
/// Default and largest [`ThreadDumpOptions::max_threads`].
pub const MAX_THREADS: usize = 10_000;
/// How often the dump checks for answers while it waits.
const POLL_EVERY: Duration = Duration::from_millis(1);

/// Limits of one [`dump`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ThreadDumpOptions {
    /// How long to wait for the threads to answer (1 ms to [`MAX_TIMEOUT`]).
    pub timeout: Duration,
    /// Most threads signalled (1 to [`MAX_THREADS`]); further ones are
    /// counted in [`RawThreadDump::skipped`].
    pub max_threads: usize,
}

impl Default for ThreadDumpOptions {
    fn default() -> Self {
        ThreadDumpOptions {
            timeout: DEFAULT_TIMEOUT,
            max_threads: MAX_THREADS,
        }
    }
}

impl ThreadDumpOptions {
    /// Sets [`ThreadDumpOptions::timeout`].
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets [`ThreadDumpOptions::max_threads`].
    #[must_use]
    pub fn max_threads(mut self, max_threads: usize) -> Self {
        self.max_threads = max_threads;
        self
    }

    fn check(&self) -> Result<()> {
        if self.timeout < Duration::from_millis(1) || self.timeout > MAX_TIMEOUT {
            return Err(Error::Config {
                setting: "timeout",
                message: format!(
                    "{:?} is not between 1ms and {}s",
                    self.timeout,
                    MAX_TIMEOUT.as_secs()
                ),
            });
        }
        if !(1..=MAX_THREADS).contains(&self.max_threads) {
            return Err(Error::Config {
                setting: "max_threads",
                message: format!("{} is not in 1..={MAX_THREADS}", self.max_threads),
            });
        }
        Ok(())
    }
}

/// The stacks of the threads of this process at one moment, unsymbolized.
#[derive(Debug, Clone)]
pub struct RawThreadDump {
    /// When the signals went out.
    pub time: SystemTime,
    /// Threads that answered, by ascending tid.
    pub threads: Vec<RawThread>,
    /// Threads that were signalled but did not answer within the timeout,
    /// by ascending tid.
    pub unanswered: Vec<UnansweredThread>,
    /// Threads listed in `/proc/self/task` that exited before they were
    /// signalled or before they answered.
    pub gone: usize,
    /// Threads not signalled because of [`ThreadDumpOptions::max_threads`].
    pub skipped: usize,
    /// The [`ThreadDumpOptions::max_threads`] the dump ran with.
    pub max_threads: usize,
    /// The timeout the dump waited with.
    pub timeout: Duration,
    /// From the listing of the threads to the end of the teardown.
    pub elapsed: Duration,
}

impl RawThreadDump {
    /// Threads dumped: those that answered and those that did not (skipped
    /// and exited threads are not counted).
    pub fn total(&self) -> usize {
        self.threads.len() + self.unanswered.len()
    }
}

/// One thread's stack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawThread {
    /// Kernel thread id.
    pub tid: u32,
    /// Thread name (at most 15 bytes, as the kernel keeps it).
    pub name: String,
    /// Program counters, leaf first: `stack[0]` is the exact PC where the
    /// thread was interrupted; `stack[1..]` are return addresses as found on
    /// the stack (not moved back by one; the profile builder does that).
    pub stack: Vec<u64>,
}

/// A thread that did not answer the dump's signal in time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnansweredThread {
    /// Kernel thread id.
    pub tid: u32,
    /// Thread name, from `/proc/self/task/TID/comm`.
    pub name: String,
}

/// Takes a thread dump of this process. Blocks for up to
/// [`ThreadDumpOptions::timeout`] (plus waiting for a dump already running
/// in another thread); callable from any thread, never from an async worker
/// (it sleeps while it polls).
///
/// Errors: [`Error::Config`] for options out of range,
/// [`Error::ThreadDumpSignalTaken`] when the application handles SIGURG
/// itself, [`Error::Io`] when `/proc/self/task` cannot be listed or the
/// handler cannot be installed.
pub fn dump(options: &ThreadDumpOptions) -> Result<RawThreadDump> {
    options.check()?;
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());

    let started = Instant::now();
    let me = gettid();
    let (tids, skipped) = list_threads(me, options.max_threads)?;
    // Everything the handler reads is built before the first signal.
    let table = Table::new(tids, ExecMaps::from_proc());
    let old = handler::install(&table).map_err(|e| match e {
        InstallError::Taken => Error::ThreadDumpSignalTaken,
        InstallError::Os(source) => Error::Io {
            context: "installing the SIGURG handler for a thread dump",
            source,
        },
    })?;
    // From here on the handler must be torn down on every path, unwinding
    // included, before `table` is dropped.
    let installed = Installed(old);
    let time = SystemTime::now();

    // The calling thread goes first: the signal is delivered to it before
    // `tgkill` returns.
    let mut gone = 0;
    let mut sent = Vec::with_capacity(table.tids().count());
    for tid in std::iter::once(me).chain(table.tids().filter(|&t| t != me)) {
        match handler::signal(tid) {
            Ok(()) => sent.push(tid),
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => gone += 1,
            // Any other refusal: the thread is reported as not answering.
            Err(_) => sent.push(tid),
        }
    }
    let waiting = Instant::now();
    while table.answered() < sent.len() && waiting.elapsed() < options.timeout {
        std::thread::sleep(POLL_EVERY.min(options.timeout.saturating_sub(waiting.elapsed())));
    }
    drop(installed);

    sent.sort_unstable();
    let mut threads = Vec::with_capacity(sent.len());
    let mut unanswered = Vec::new();
    for tid in sent {
        let tid_u = tid.unsigned_abs();
        if let Some(answer) = table.answer(tid) {
            threads.push(RawThread {
                tid: tid_u,
                name: answer.name,
                stack: answer.stack,
            });
            continue;
        }
        match std::fs::read_to_string(format!("/proc/self/task/{tid}/comm")) {
            Ok(comm) => unanswered.push(UnansweredThread {
                tid: tid_u,
                name: comm.trim_end_matches('\n').to_owned(),
            }),
            // Exited after it was signalled.
            Err(_) => gone += 1,
        }
    }
    drop(table);
    Ok(RawThreadDump {
        time,
        threads,
        unanswered,
        gone,
        skipped,
        max_threads: options.max_threads,
        timeout: options.timeout,
        elapsed: started.elapsed(),
    })
}

/// The handler installed for one dump; dropping it deactivates the handler
/// (waiting for invocations in flight) and restores the old disposition.
struct Installed(libc::sigaction);

impl Drop for Installed {
    fn drop(&mut self) {
        handler::deactivate();
        handler::restore(&self.0);
    }
}

/// Thread ids of this process, `me` always included, at most `max`; and how
/// many more there were.
fn list_threads(me: libc::pid_t, max: usize) -> Result<(Vec<libc::pid_t>, usize)> {
    let dir = std::fs::read_dir("/proc/self/task").map_err(|source| Error::Io {
        context: "listing /proc/self/task for a thread dump",
        source,
    })?;
    let mut tids: Vec<libc::pid_t> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|&t| t != me)
        .collect();
    tids.sort_unstable();
    let keep = max.saturating_sub(1);
    let skipped = tids.len().saturating_sub(keep);
    tids.truncate(keep);
    tids.push(me);
    Ok((tids, skipped))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_out_of_range_are_refused() {
        let bad = [
            ThreadDumpOptions::default().timeout(Duration::ZERO),
            ThreadDumpOptions::default().timeout(MAX_TIMEOUT + Duration::from_millis(1)),
            ThreadDumpOptions::default().max_threads(0),
            ThreadDumpOptions::default().max_threads(MAX_THREADS + 1),
        ];
        for options in bad {
            assert!(
                matches!(dump(&options), Err(Error::Config { .. })),
                "{options:?}"
            );
        }
        assert!(ThreadDumpOptions::default().check().is_ok());
    }

    #[test]
    fn listing_always_includes_the_caller_and_counts_the_rest() {
        let me = gettid();
        let (all, none) = list_threads(me, MAX_THREADS).expect("list");
        assert!(all.contains(&me));
        assert_eq!(none, 0);
        let (one, skipped) = list_threads(me, 1).expect("list");
        assert_eq!(one, vec![me]);
        assert_eq!(skipped, all.len() - 1);
    }
}
