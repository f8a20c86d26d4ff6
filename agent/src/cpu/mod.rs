//! CPU profiling of the whole process by SIGPROF sampling.
//!
//! [`CpuSampler::start`] arms `setitimer(ITIMER_PROF)`, so the kernel sends
//! SIGPROF in proportion to the CPU time the process burns, to the thread
//! that burned it. The handler (see `sampler`) walks frame pointers (see
//! `unwind`) into a preallocated ring, without allocating, locking or calling
//! anything but `prctl`; a drain thread named `leakscope-cpu` aggregates the
//! ring every [`DRAIN_EVERY`] into a map of (stack, thread name) -> count.
//! [`CpuSampler::stop`] (or dropping the sampler) tears it all down and
//! returns a [`RawCpuProfile`] of raw addresses for the symbolizer.
//!
//! Limits of `ITIMER_PROF`: it is one process-wide timer checked at kernel
//! ticks, so the effective rate is capped near `CONFIG_HZ` expirations per
//! second (1000 Hz gave about 250 samples per CPU-second on a 250 Hz kernel),
//! and a sample goes to whichever thread is running when the tick notices the
//! expiry, so a thread's share is right on average, not exactly. Go moved to
//! per-thread `timer_create` timers for these reasons.

#[cfg(not(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64")
)))]
compile_error!("the CPU sampler supports Linux on x86_64 and aarch64 only");

mod sampler;
#[cfg(test)]
mod tests;
mod unwind;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use crate::error::{Error, Result};

use self::sampler::Ring;
use self::unwind::ExecMaps;

/// How often the drain thread empties the ring.
const DRAIN_EVERY: Duration = Duration::from_millis(20);

/// Set while a [`CpuSampler`] exists.
static IN_USE: AtomicBool = AtomicBool::new(false);

type Counts = HashMap<(Vec<u64>, String), u64>;

/// A running CPU profile of the whole process. Only one exists at a time.
pub struct CpuSampler {
    /// Present until the profile is stopped.
    running: Option<Running>,
    period_ns: u64,
    start: SystemTime,
    started: Instant,
}

/// What must be torn down.
struct Running {
    ring: Arc<Ring>,
    old_action: libc::sigaction,
    stop: Arc<AtomicBool>,
    drain: JoinHandle<Counts>,
}

/// An aggregated CPU profile with unsymbolized stacks.
#[derive(Debug, Clone)]
pub struct RawCpuProfile {
    /// Aggregated by (stack, thread_name).
    pub samples: Vec<RawCpuSample>,
    /// Sampling period in nanoseconds (1e9 / hz).
    pub period_ns: u64,
    /// Wall-clock start of the profile.
    pub start: SystemTime,
    /// Duration of the profile.
    pub duration: Duration,
    /// Samples dropped because the buffer was full, or the stack walk failed.
    pub lost: u64,
}

/// One distinct (stack, thread) with how often it was seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawCpuSample {
    /// Program counters, leaf first. stack[0] is the exact interrupted PC
    /// (from the ucontext); stack[1..] are return addresses as found on the
    /// stack (NOT adjusted by -1; the symbolizer does that).
    pub stack: Vec<u64>,
    /// The thread's name (from prctl(PR_GET_NAME) / comm), e.g. "tokio-runtime-w".
    pub thread_name: String,
    /// Number of samples with this stack and thread name.
    pub count: u64,
}

impl CpuSampler {
    /// Starts sampling all threads at `hz` samples per CPU-second (1..=1000).
    /// Err(Error::CpuProfilingInUse) if another CpuSampler is alive;
    /// Err(Error::CpuTimer(io)) if sigaction/setitimer fail.
    pub fn start(hz: u32) -> Result<CpuSampler> {
        if !(1..=1000).contains(&hz) {
            return Err(Error::Config {
                setting: "hz",
                message: format!("{hz} is not in 1..=1000"),
            });
        }
        if IN_USE
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return Err(Error::CpuProfilingInUse);
        }
        match Self::start_claimed(hz) {
            Ok(sampler) => Ok(sampler),
            Err(e) => {
                IN_USE.store(false, Ordering::Release);
                Err(e)
            }
        }
    }

    /// `start` once the IN_USE guard is held; releases nothing itself.
    fn start_claimed(hz: u32) -> Result<CpuSampler> {
        // Everything the handler reads is built here, before the timer runs.
        let ring = Arc::new(Ring::new(ExecMaps::from_proc()));
        let stop = Arc::new(AtomicBool::new(false));
        let drain = {
            let ring = Arc::clone(&ring);
            let stop = Arc::clone(&stop);
            std::thread::Builder::new()
                .name("leakscope-cpu".into())
                .spawn(move || drain_loop(&ring, &stop))
                .map_err(|source| Error::Io {
                    context: "spawning the CPU profile drain thread",
                    source,
                })?
        };
        let stop_drain = |drain: JoinHandle<Counts>| {
            stop.store(true, Ordering::Release);
            drain.thread().unpark();
            // A panic in the drain thread loses nothing we could report.
            let _ = drain.join();
        };
        let old_action = match sampler::install(&ring) {
            Ok(old) => old,
            Err(e) => {
                stop_drain(drain);
                return Err(Error::CpuTimer(e));
            }
        };
        let start = SystemTime::now();
        let started = Instant::now();
        if let Err(e) = sampler::set_timer(1_000_000 / u64::from(hz)) {
            sampler::deactivate();
            sampler::restore(&old_action);
            stop_drain(drain);
            return Err(Error::CpuTimer(e));
        }
        Ok(CpuSampler {
            running: Some(Running {
                ring,
                old_action,
                stop,
                drain,
            }),
            period_ns: 1_000_000_000 / u64::from(hz),
            start,
            started,
        })
    }

    /// Stops the timer, restores the previous SIGPROF disposition, drains
    /// everything and returns the aggregated profile.
    pub fn stop(mut self) -> RawCpuProfile {
        self.finish()
    }

    /// Tears the profile down; after the first call it returns an empty
    /// profile.
    fn finish(&mut self) -> RawCpuProfile {
        let mut profile = RawCpuProfile {
            samples: Vec::new(),
            period_ns: self.period_ns,
            start: self.start,
            duration: self.started.elapsed(),
            lost: 0,
        };
        let Some(run) = self.running.take() else {
            return profile;
        };
        // setitimer cannot fail with a valid, zero interval.
        let _ = sampler::set_timer(0);
        sampler::deactivate();
        sampler::restore(&run.old_action);
        run.stop.store(true, Ordering::Release);
        run.drain.thread().unpark();
        let mut counts = run.drain.join().unwrap_or_default();
        // Catch anything the drain thread missed (or all of it, if it
        // panicked); no handler can write any more.
        run.ring.drain(&mut counts);
        profile.lost = run.ring.lost();
        drop(run.ring);
        profile.samples = counts
            .into_iter()
            .map(|((stack, thread_name), count)| RawCpuSample {
                stack,
                thread_name,
                count,
            })
            .collect();
        IN_USE.store(false, Ordering::Release);
        profile
    }
}

impl Drop for CpuSampler {
    fn drop(&mut self) {
        self.finish();
    }
}

/// Body of the drain thread: empties the ring every [`DRAIN_EVERY`] until
/// told to stop, then once more.
fn drain_loop(ring: &Ring, stop: &AtomicBool) -> Counts {
    let mut counts = Counts::new();
    while !stop.load(Ordering::Acquire) {
        std::thread::park_timeout(DRAIN_EVERY);
        ring.drain(&mut counts);
    }
    ring.drain(&mut counts);
    counts
}
