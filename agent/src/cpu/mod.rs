//! CPU profiling of the whole process by SIGPROF sampling.
//!
//! [`CpuSampler::start`] arms one POSIX timer per thread on that thread's
//! CPU-time clock, delivering SIGPROF to that thread (see `timers`), so every
//! thread is sampled in proportion to its own CPU time; the drain thread
//! rescans `/proc/self/task` for new threads. Where `timer_create` is refused
//! it falls back to `setitimer(ITIMER_PROF)` (see
//! [`RawCpuProfile::timer`]). The handler (see `sampler`) walks frame pointers (see
//! `unwind`) into a preallocated ring, without allocating, locking or calling
//! anything but `prctl`; a drain thread named `leakscope-cpu` aggregates the
//! ring every `DRAIN_EVERY` (20 ms) into a map of (stack, thread name) -> count.
//! [`CpuSampler::stop`] (or dropping the sampler) tears it all down and
//! returns a [`RawCpuProfile`] of raw addresses for the symbolizer.
//!
//! Limits of the per-thread timers: a thread is covered from the first
//! rescan after it starts (up to `DRAIN_EVERY` (20 ms) late); POSIX CPU timers are
//! checked at kernel ticks too, so one thread gets at most about `CONFIG_HZ`
//! samples per CPU-second (expirations beyond that are overruns, not
//! counted); a thread id reused within one rescan period keeps the dead
//! thread's (never firing) timer until the next stop.
//!
//! Limits of the `ITIMER_PROF` fallback: it is one process-wide timer checked at kernel
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
mod timers;
pub(crate) mod unwind;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use crate::error::{Error, Result};

use self::sampler::Ring;
use self::timers::ThreadTimers;
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
    timer: &'static str,
}

/// [`RawCpuProfile::timer`] with one POSIX CPU-time timer per thread.
pub const TIMER_PER_THREAD: &str = "per-thread";
/// [`RawCpuProfile::timer`] with the process-wide `setitimer(ITIMER_PROF)`.
pub const TIMER_PROCESS: &str = "process";

/// What must be torn down.
struct Running {
    ring: Arc<Ring>,
    old_action: libc::sigaction,
    stop: Arc<AtomicBool>,
    /// Owns the per-thread timers, if any, and deletes them when it ends.
    drain: JoinHandle<Counts>,
    /// Whether `setitimer(ITIMER_PROF)` is armed (the fallback).
    itimer: bool,
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
    /// How SIGPROF was generated: [`TIMER_PER_THREAD`] (a CPU-time timer per
    /// thread) or [`TIMER_PROCESS`] (`setitimer(ITIMER_PROF)`, the fallback
    /// where `timer_create` is refused).
    pub timer: &'static str,
}

/// One distinct (stack, thread) with how often it was seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawCpuSample {
    /// Program counters, leaf first. `stack[0]` is the exact interrupted PC
    /// (from the ucontext); `stack[1..]` are return addresses as found on the
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
    /// Err(Error::CpuTimer(io)) if sigaction fails, or if per-thread timers
    /// are refused and setitimer fails too.
    pub fn start(hz: u32) -> Result<CpuSampler> {
        Self::start_with(hz, true)
    }

    fn start_with(hz: u32, per_thread: bool) -> Result<CpuSampler> {
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
        match Self::start_claimed(hz, per_thread) {
            Ok(sampler) => Ok(sampler),
            Err(e) => {
                IN_USE.store(false, Ordering::Release);
                Err(e)
            }
        }
    }

    /// `start` once the IN_USE guard is held; releases nothing itself.
    /// With `per_thread` false, goes straight to the `setitimer` fallback.
    fn start_claimed(hz: u32, per_thread: bool) -> Result<CpuSampler> {
        let period_ns = 1_000_000_000 / u64::from(hz);
        // Everything the handler reads is built here, before any timer runs.
        let ring = Arc::new(Ring::new(ExecMaps::from_proc()));
        let stop = Arc::new(AtomicBool::new(false));
        // The handler goes in before any timer can fire.
        let old_action = sampler::install(&ring).map_err(Error::CpuTimer)?;
        let undo = |old_action: &libc::sigaction| {
            sampler::deactivate();
            sampler::restore(old_action);
        };
        let start = SystemTime::now();
        let started = Instant::now();
        let timers = if per_thread {
            ThreadTimers::start(period_ns).ok()
        } else {
            None
        };
        let itimer = timers.is_none();
        if itimer && let Err(e) = sampler::set_timer(1_000_000 / u64::from(hz)) {
            undo(&old_action);
            return Err(Error::CpuTimer(e));
        }
        let spawned = {
            let ring = Arc::clone(&ring);
            let stop = Arc::clone(&stop);
            // On failure the closure, and with it `timers`, is dropped,
            // which deletes the timers.
            std::thread::Builder::new()
                .name("leakscope-cpu".into())
                .spawn(move || drain_loop(&ring, &stop, timers))
        };
        let drain = match spawned {
            Ok(drain) => drain,
            Err(source) => {
                if itimer {
                    let _ = sampler::set_timer(0);
                }
                undo(&old_action);
                return Err(Error::Io {
                    context: "spawning the CPU profile drain thread",
                    source,
                });
            }
        };
        Ok(CpuSampler {
            running: Some(Running {
                ring,
                old_action,
                stop,
                drain,
                itimer,
            }),
            period_ns,
            start,
            started,
            timer: if itimer {
                TIMER_PROCESS
            } else {
                TIMER_PER_THREAD
            },
        })
    }

    /// Like [`CpuSampler::start`] but always with the `setitimer` fallback
    /// (for comparisons in tests).
    #[cfg(test)]
    pub(crate) fn start_process_timer(hz: u32) -> Result<CpuSampler> {
        Self::start_with(hz, false)
    }

    /// How SIGPROF is generated: [`TIMER_PER_THREAD`] or [`TIMER_PROCESS`].
    pub fn timer(&self) -> &'static str {
        self.timer
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
            timer: self.timer,
        };
        let Some(run) = self.running.take() else {
            return profile;
        };
        if run.itimer {
            // setitimer cannot fail with a valid, zero interval.
            let _ = sampler::set_timer(0);
        }
        // The drain thread deletes the per-thread timers before it returns
        // (also if it panics: they are dropped while unwinding).
        run.stop.store(true, Ordering::Release);
        run.drain.thread().unpark();
        let counts = run.drain.join();
        // No timer is left; SIGPROFs generated before may still be pending,
        // which `restore` discards before putting the old action back.
        sampler::deactivate();
        sampler::restore(&run.old_action);
        let mut counts = counts.unwrap_or_default();
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

/// Body of the drain thread: empties the ring and rescans the threads for
/// `timers` every `DRAIN_EVERY` (20 ms) until told to stop, then deletes the timers
/// and empties the ring once more.
fn drain_loop(ring: &Ring, stop: &AtomicBool, mut timers: Option<ThreadTimers>) -> Counts {
    let mut counts = Counts::new();
    while !stop.load(Ordering::Acquire) {
        std::thread::park_timeout(DRAIN_EVERY);
        if let Some(timers) = &mut timers {
            timers.rescan();
        }
        ring.drain(&mut counts);
    }
    drop(timers);
    ring.drain(&mut counts);
    counts
}
