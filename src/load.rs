//! The load generator: puts an HTTP service under load, because the leaks
//! leakscope looks for appear under load. `leakscope load`, `leakscope
//! check`'s built-in load, the demo and the tests use it.
//!
//! [`run`] sends requests to a [`Target`] (one URL, a weighted mix of
//! paths on one server, or a mix of [`Request`]s of any method, with
//! bodies, numbered so each can name a thing of its own) from [`LoadOptions::concurrency`] workers, each
//! a tokio task with its own keep-alive [`Connection`](leakscope_agent::client::Connection), until a bound (a
//! duration, a number of requests, or both) is reached, and returns a
//! [`LoadReport`]: requests, successes, errors by kind (also per entry),
//! latency histograms (HdrHistogram).
//!
//! - **Closed loop** (no [`LoadOptions::rate`]): each worker sends its next
//!   request as soon as the previous answer arrived, so the server sets the
//!   pace; latency counts from the send.
//! - **Open loop** ([`LoadOptions::rate`] set): request number `n` is due
//!   `n / rate` seconds after the start, and no request is sent before it
//!   is due. When slow answers keep every worker busy, the requests that
//!   fall due meanwhile go out late, as soon as a worker is free, and their
//!   latency counts from their due time: they carry that wait. (A request
//!   a free worker waited for counts from its send, so the timer's own
//!   lateness is not charged to the server.) Measuring from the actual send
//!   instead would hide a stall (coordinated omission): the requests it
//!   kept from being sent would look fast. The report also keeps that
//!   measure, [`LoadReport::service_time`]. Over the run the rate is never
//!   exceeded; right after a stall the late requests go out in a burst.
//!
//! Entries can also be given as text, `[METHOD ]URL[=WEIGHT]`
//! ([`parse_entry`], [`Target::from_entries`]), as `leakscope load` and
//! `leakscope check --load` take them.
//!
//! ```no_run
//! # async fn demo() -> Result<(), leakscope::load::LoadError> {
//! use std::time::Duration;
//! use leakscope::load::{self, LoadOptions, Target};
//!
//! // Mostly normal requests, some that leak.
//! let target = Target::mix(
//!     "http://127.0.0.1:6060",
//!     [("/", 20), ("/leak/heap?kb=256", 4), ("/leak/thread", 1)],
//! )?;
//! let opts = LoadOptions::default().rate(200.0).duration(Duration::from_secs(30));
//! let report = load::run(&target, &opts, None).await?;
//! println!("{}", report.summary());
//! # Ok(())
//! # }
//! ```

mod entry;
mod histogram;
mod report;
mod target;
mod worker;

pub use entry::{LoadEntry, parse_entry};
pub use histogram::Histogram;
pub use report::{LoadReport, Progress};
pub use target::{METHODS, Request, SEQ, Target};

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use tokio::task::JoinSet;

use worker::{Pacer, Shared, Stats, worker};

/// Settings of [`run`]. At least one bound, [`duration`](Self::duration)
/// or [`requests`](Self::requests), must be set; with both, the first one
/// reached ends the run.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct LoadOptions {
    /// Workers, each with one connection: at most this many requests are
    /// in flight (default [`Self::DEFAULT_CONCURRENCY`]).
    pub concurrency: usize,
    /// Requests per second in total, on a fixed schedule (open loop;
    /// latency from each request's due time); `None` for a closed loop,
    /// where each worker sends as soon as its previous answer arrived.
    pub rate: Option<f64>,
    /// Send no request after this long. Requests in flight then may finish,
    /// within [`Self::timeout`].
    pub duration: Option<Duration>,
    /// Send this many requests in total, never more.
    pub requests: Option<u64>,
    /// Limit of each request, connecting included (default
    /// [`Self::DEFAULT_TIMEOUT`]).
    pub timeout: Duration,
}

impl LoadOptions {
    /// Default [`Self::concurrency`].
    pub const DEFAULT_CONCURRENCY: usize = 8;
    /// Default [`Self::timeout`].
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

    /// Sets the number of workers (connections).
    #[must_use]
    pub fn concurrency(mut self, workers: usize) -> LoadOptions {
        self.concurrency = workers;
        self
    }

    /// Paces requests at `per_second` in total (open loop).
    #[must_use]
    pub fn rate(mut self, per_second: f64) -> LoadOptions {
        self.rate = Some(per_second);
        self
    }

    /// Stops sending after `duration`.
    #[must_use]
    pub fn duration(mut self, duration: Duration) -> LoadOptions {
        self.duration = Some(duration);
        self
    }

    /// Stops after `requests` requests in total.
    #[must_use]
    pub fn requests(mut self, requests: u64) -> LoadOptions {
        self.requests = Some(requests);
        self
    }

    /// Sets the limit of each request.
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> LoadOptions {
        self.timeout = timeout;
        self
    }

    /// Checks the settings.
    fn check(&self) -> Result<(), LoadError> {
        if self.duration.is_none() && self.requests.is_none() {
            return Err(LoadError::Unbounded);
        }
        if self.concurrency == 0 {
            return Err(LoadError::ZeroConcurrency);
        }
        if self.timeout.is_zero() {
            return Err(LoadError::ZeroTimeout);
        }
        match self.rate {
            // The pause between two sends must be a duration.
            Some(rate)
                if !(rate > 0.0 && rate.is_finite())
                    || Duration::try_from_secs_f64(1.0 / rate).is_err() =>
            {
                Err(LoadError::BadRate(rate))
            }
            _ => Ok(()),
        }
    }
}

impl Default for LoadOptions {
    fn default() -> LoadOptions {
        LoadOptions {
            concurrency: Self::DEFAULT_CONCURRENCY,
            rate: None,
            duration: None,
            requests: None,
            timeout: Self::DEFAULT_TIMEOUT,
        }
    }
}

/// Why a load could not start. Failed requests are not errors of [`run`]:
/// they are counted in the [`LoadReport`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// The URL cannot be used; the message says why.
    #[error("bad load target: {0}")]
    BadUrl(String),
    /// A path or weight of a mix cannot be used, or the mix is empty.
    #[error("bad load mix: {0}")]
    BadMix(String),
    /// Neither a duration nor a number of requests was given.
    #[error("the load has no end: give a duration, a number of requests, or both")]
    Unbounded,
    /// Concurrency 0.
    #[error("concurrency is 0: use at least one connection")]
    ZeroConcurrency,
    /// The rate is not a positive, finite number of requests per second.
    #[error(
        "rate {0} is not a usable number of requests per second: give a positive \
         rate, or none for a closed loop"
    )]
    BadRate(f64),
    /// A timeout of zero, which every request would exceed.
    #[error("the request timeout is 0: every request would time out")]
    ZeroTimeout,
    /// A load entry (`[METHOD ]URL[=WEIGHT]`) cannot be used; the message
    /// names it and says why.
    #[error("bad load entry {0}")]
    BadEntry(String),
    /// The load entries name more than one server; a run loads one.
    #[error("{url}: every load URL must be on one server ({first} first)")]
    ManyServers {
        /// The first entry on another server.
        url: String,
        /// The server of the first entry.
        first: String,
    },
    /// The host name did not resolve.
    #[error("cannot resolve the load target: {0}")]
    Resolve(String),
}

/// How often [`run`] calls its progress callback.
const PROGRESS_EVERY: Duration = Duration::from_millis(200);

/// Puts `target` under load as `opts` say, and reports what happened.
///
/// `progress`, when given, is called about every 200 ms while the load
/// runs, and once more at the end with the final counts. Failed requests
/// are counted in the report by kind ("HTTP 500", "timeout", "connect
/// refused", "connection reset", "connection closed", "io: ..."); after a
/// failure the worker connects again, and after a failed connect it waits
/// first (10 ms, doubling up to 250 ms) so a server that is down is not
/// hammered. A failed connect counts as a failed request.
///
/// Latency is measured per request to the end of its answer, for every
/// answer whatever its status, from just before sending it (a reconnect
/// included), or in paced mode from the time it was due if it went out
/// late because every worker was busy;
/// requests without an answer are not in the histograms.
///
/// Errors only when the load cannot start: invalid options or a host that
/// does not resolve. Dropping the returned future stops the workers.
pub async fn run(
    target: &Target,
    opts: &LoadOptions,
    progress: Option<&(dyn Fn(&Progress) + Sync)>,
) -> Result<LoadReport, LoadError> {
    opts.check()?;
    let addr = target
        .url
        .resolve(opts.timeout)
        .await
        .map_err(LoadError::Resolve)?;
    let start = Instant::now();
    let shared = Arc::new(Shared {
        addr,
        target: target.clone(),
        timeout: opts.timeout,
        end: opts.duration.and_then(|d| start.checked_add(d)),
        limit: opts.requests,
        issued: AtomicU64::new(0),
        pacer: opts.rate.map(|per_second| Pacer { start, per_second }),
        sent: AtomicU64::new(0),
        ok: AtomicU64::new(0),
        failed: AtomicU64::new(0),
    });
    let mut workers = JoinSet::new();
    for _ in 0..opts.concurrency {
        workers.spawn(worker(Arc::clone(&shared)));
    }
    let mut total = Stats::new(target.paths.len());
    let mut ticks = tokio::time::interval_at((start + PROGRESS_EVERY).into(), PROGRESS_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            joined = workers.join_next() => match joined {
                None => break,
                Some(Ok(stats)) => total.merge(stats),
                Some(Err(e)) => match e.try_into_panic() {
                    Ok(panic) => std::panic::resume_unwind(panic),
                    // Only `abort` cancels a worker, and nothing calls it.
                    Err(e) => unreachable!("load worker cancelled: {e}"),
                },
            },
            _ = ticks.tick(), if progress.is_some() => {
                if let Some(show) = progress {
                    show(&shared.progress(start.elapsed()));
                }
            }
        }
    }
    let elapsed = start.elapsed();
    if let Some(show) = progress {
        show(&shared.progress(elapsed));
    }
    let (by_path, errors_by_path) = target
        .labels()
        .zip(total.by_path)
        .map(|(label, (n, errors))| ((label, n), errors))
        .unzip();
    Ok(LoadReport {
        requests: total.requests,
        ok: total.ok,
        errors: total.errors,
        elapsed,
        latency: total.latency,
        service_time: total.service_time,
        by_path,
        errors_by_path,
        target_rate: opts.rate,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_need_a_bound_workers_and_a_usable_rate() {
        let bounded = LoadOptions::default().requests(10);
        assert!(bounded.check().is_ok());
        let e = LoadOptions::default().check().unwrap_err();
        assert!(matches!(e, LoadError::Unbounded), "{e}");
        assert!(e.to_string().contains("give a duration"), "{e}");
        let e = bounded.clone().concurrency(0).check().unwrap_err();
        assert!(matches!(e, LoadError::ZeroConcurrency), "{e}");
        let e = bounded.clone().timeout(Duration::ZERO).check().unwrap_err();
        assert!(matches!(e, LoadError::ZeroTimeout), "{e}");
        for rate in [0.0, -5.0, f64::NAN, f64::INFINITY, 1e-300] {
            let e = bounded.clone().rate(rate).check().unwrap_err();
            assert!(matches!(e, LoadError::BadRate(_)), "{rate}: {e}");
        }
        assert!(bounded.rate(0.5).check().is_ok());
        let d = LoadOptions::default().duration(Duration::from_secs(1));
        assert_eq!((d.concurrency, d.timeout), (8, Duration::from_secs(10)));
    }

    #[test]
    fn the_run_future_can_be_spawned() {
        fn assert_send<T: Send>(_: &T) {}
        let target = Target::parse("http://127.0.0.1:1/").unwrap();
        let opts = LoadOptions::default().requests(1);
        let show = |_: &Progress| {};
        assert_send(&run(&target, &opts, Some(&show)));
    }
}
