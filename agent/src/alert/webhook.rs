//! The webhook sink: posts [`Alert`]s as JSON to an `http://` URL from a
//! background task, with per-attempt timeouts, retries with jittered
//! backoff and a circuit breaker.
//!
//! [`WebhookSink::send`] never blocks and never waits: it puts the alert in a
//! bounded queue (dropping the oldest queued alert when full). One tokio task
//! delivers the queue in order. A slow or dead webhook therefore costs at
//! most `queue` alerts of memory and one task; the breaker turns a dead
//! webhook into fast, counted drops, logged once per breaker state change.
//! Only plain HTTP is spoken (the crate's [`crate::client`]): for HTTPS
//! endpoints such as Slack, point the URL at a local relay.
//!
//! ```no_run
//! # async fn demo(alert: leakscope_agent::alert::Alert) -> Result<(), leakscope_agent::error::Error> {
//! use leakscope_agent::alert::webhook::{WebhookOptions, WebhookSink};
//!
//! let sink = WebhookSink::spawn(WebhookOptions::new("http://127.0.0.1:9000/alerts"))?;
//! sink.send(alert); // returns at once
//! println!("{:?}", sink.stats());
//! # Ok(())
//! # }
//! ```

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::Alert;
use super::backoff::{Backoff, BreakerState};
use crate::client::url::HttpUrl;
use crate::client::{Endpoint, RetryPolicy};
use crate::error::Error;

/// Settings of a [`WebhookSink`].
#[derive(Debug, Clone)]
pub struct WebhookOptions {
    /// `http://host[:port][/path][?query]`; `https://` is refused (no TLS).
    pub url: String,
    /// Bound of each attempt, connecting included (default 2 s).
    pub timeout: Duration,
    /// Retries after a failed attempt (default 3).
    pub max_retries: u32,
    /// Delays between attempts (default 100 ms doubling to 5 s, full jitter).
    pub backoff: Backoff,
    /// Consecutive failed deliveries that open the breaker (default 5).
    pub breaker_failures: u32,
    /// How long an open breaker drops alerts before a trial (default 30 s).
    pub breaker_open_for: Duration,
    /// Alerts waiting for delivery, at most (default 256).
    pub queue: usize,
}

impl WebhookOptions {
    /// The defaults for `url`.
    pub fn new(url: impl Into<String>) -> WebhookOptions {
        WebhookOptions {
            url: url.into(),
            timeout: Duration::from_secs(2),
            max_retries: 3,
            backoff: Backoff::default(),
            breaker_failures: 5,
            breaker_open_for: Duration::from_secs(30),
            queue: 256,
        }
    }
}

/// Counters of a [`WebhookSink`] since it was spawned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookStats {
    /// Alerts delivered (2xx answer).
    pub sent: u64,
    /// Attempts that failed (error, timeout or non-2xx answer).
    pub failed_attempts: u64,
    /// Attempts that were retries of an earlier failed attempt.
    pub retries: u64,
    /// Alerts dropped because the queue was full (the oldest go first).
    pub dropped_queue_full: u64,
    /// Alerts dropped without an attempt because the breaker was open.
    pub dropped_breaker_open: u64,
    /// The breaker's state as last seen by the delivery task:
    /// `"closed"`, `"open"` or `"half_open"`.
    pub breaker_state: &'static str,
}

/// A handle to the webhook delivery task; cheap to clone. When the last
/// handle is dropped, the task delivers what is queued and ends.
#[derive(Debug, Clone)]
pub struct WebhookSink {
    owner: Arc<Owner>,
}

/// Closes the queue when the last [`WebhookSink`] goes.
#[derive(Debug)]
struct Owner(Arc<Shared>);

impl Drop for Owner {
    fn drop(&mut self) {
        self.0.queue.lock().unwrap_or_else(|p| p.into_inner()).1 = true;
        self.0.wake.notify_one();
    }
}

/// State shared by the handles and the delivery task.
#[derive(Debug)]
struct Shared {
    /// The queued alerts, and whether the handles are all gone.
    queue: Mutex<(VecDeque<Alert>, bool)>,
    capacity: usize,
    wake: Notify,
    sent: AtomicU64,
    failed_attempts: AtomicU64,
    retries: AtomicU64,
    dropped_queue_full: AtomicU64,
    dropped_breaker_open: AtomicU64,
    breaker_state: AtomicU8,
}

fn bad_url(message: String) -> Error {
    Error::Config {
        setting: "webhook_url",
        message,
    }
}

fn encode(state: BreakerState) -> u8 {
    match state {
        BreakerState::Closed => 0,
        BreakerState::Open => 1,
        BreakerState::HalfOpen => 2,
    }
}

impl WebhookSink {
    /// Checks the options, parses the URL and spawns the delivery task on
    /// the current tokio runtime.
    ///
    /// A bad or `https://` URL, a zero `timeout` or `queue` is an
    /// [`Error::Config`]; calling outside a tokio runtime is an
    /// [`Error::Io`]. An IP-literal host is used as is; a host name is
    /// resolved with `tokio::net::lookup_host` by the delivery task before
    /// its first attempt (this function does not wait), and again after a
    /// failed lookup, which counts as a failed attempt.
    pub fn spawn(opts: WebhookOptions) -> Result<WebhookSink, Error> {
        let url = HttpUrl::parse(&opts.url).map_err(bad_url)?;
        if opts.timeout.is_zero() {
            return Err(Error::Config {
                setting: "webhook_timeout",
                message: "must be more than zero".into(),
            });
        }
        if opts.queue == 0 {
            return Err(Error::Config {
                setting: "webhook_queue",
                message: "must hold at least one alert".into(),
            });
        }
        let runtime = tokio::runtime::Handle::try_current().map_err(|e| Error::Io {
            context: "spawning the webhook delivery task",
            source: std::io::Error::other(e),
        })?;
        let shared = Arc::new(Shared {
            queue: Mutex::new((VecDeque::with_capacity(opts.queue.min(1024)), false)),
            capacity: opts.queue,
            wake: Notify::new(),
            sent: AtomicU64::new(0),
            failed_attempts: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            dropped_queue_full: AtomicU64::new(0),
            dropped_breaker_open: AtomicU64::new(0),
            breaker_state: AtomicU8::new(encode(BreakerState::Closed)),
        });
        let policy = RetryPolicy::default()
            .timeouts(opts.timeout, opts.timeout)
            .retries(opts.max_retries, opts.backoff)
            .breaker(opts.breaker_failures, opts.breaker_open_for);
        let endpoint = Endpoint::new(url, policy);
        runtime.spawn(deliver_all(shared.clone(), endpoint, opts));
        Ok(WebhookSink {
            owner: Arc::new(Owner(shared)),
        })
    }

    /// Queues `alert` for delivery and returns at once; never blocks on the
    /// network. When the queue is full, the oldest queued alert is dropped
    /// (and counted in [`WebhookStats::dropped_queue_full`]).
    pub fn send(&self, alert: Alert) {
        let shared = &self.owner.0;
        {
            let mut guard = shared.queue.lock().unwrap_or_else(|p| p.into_inner());
            let queue = &mut guard.0;
            if queue.len() >= shared.capacity {
                queue.pop_front();
                shared.dropped_queue_full.fetch_add(1, Relaxed);
            }
            queue.push_back(alert);
        }
        shared.wake.notify_one();
    }

    /// The counters so far.
    pub fn stats(&self) -> WebhookStats {
        let s = &self.owner.0;
        let breaker_state = match s.breaker_state.load(Relaxed) {
            0 => BreakerState::Closed,
            1 => BreakerState::Open,
            _ => BreakerState::HalfOpen,
        };
        WebhookStats {
            sent: s.sent.load(Relaxed),
            failed_attempts: s.failed_attempts.load(Relaxed),
            retries: s.retries.load(Relaxed),
            dropped_queue_full: s.dropped_queue_full.load(Relaxed),
            dropped_breaker_open: s.dropped_breaker_open.load(Relaxed),
            breaker_state: breaker_state.as_str(),
        }
    }
}

/// Least time between two "queue full" warnings.
const QUEUE_FULL_LOG_EVERY: Duration = Duration::from_secs(60);

/// The delivery task: takes alerts in order until the handles are gone and
/// the queue is empty. The endpoint does the attempts, retries and breaker;
/// this loop mirrors its counters and logs breaker changes once each.
async fn deliver_all(shared: Arc<Shared>, endpoint: Endpoint, opts: WebhookOptions) {
    let url = opts.url.trim().to_owned();
    let path = endpoint.url().path().to_owned();
    let headers = [("Content-Type", "application/json")];
    // Drop counters as of the last log line about them.
    let (mut logged_full, mut logged_open) = (0u64, 0u64);
    let mut full_logged_at: Option<Instant> = None;
    loop {
        let next = {
            let mut guard = shared.queue.lock().unwrap_or_else(|p| p.into_inner());
            match guard.0.pop_front() {
                Some(alert) => Ok(alert),
                None => Err(guard.1),
            }
        };
        let alert = match next {
            Ok(alert) => alert,
            Err(true) => return,
            // A notify_one() since the last wait left a permit: no lost wake-up.
            Err(false) => {
                shared.wake.notified().await;
                continue;
            }
        };
        let full = shared.dropped_queue_full.load(Relaxed);
        let quiet = full_logged_at.is_some_and(|at| at.elapsed() < QUEUE_FULL_LOG_EVERY);
        if full > logged_full && !quiet {
            full_logged_at = Some(Instant::now());
            tracing::warn!(%url, dropped = full - logged_full, "webhook queue full: oldest alerts dropped");
            logged_full = full;
        }
        let before = endpoint.breaker_state();
        let result = endpoint.post(&path, &alert.to_json(), &headers).await;
        let stats = endpoint.stats();
        shared.sent.store(stats.ok, Relaxed);
        shared.failed_attempts.store(stats.failed_attempts, Relaxed);
        shared.retries.store(stats.retries, Relaxed);
        shared
            .dropped_breaker_open
            .store(stats.refused_breaker_open, Relaxed);
        let after = endpoint.breaker_state();
        shared.breaker_state.store(encode(after), Relaxed);
        if after == before {
            continue;
        }
        let dropped = stats.refused_breaker_open - logged_open;
        logged_open = stats.refused_breaker_open;
        match after {
            BreakerState::Open => tracing::warn!(
                %url, error = %result.err().map(|e| e.to_string()).unwrap_or_default(),
                open_for = ?opts.breaker_open_for,
                "webhook circuit breaker open: alerts are dropped until a trial succeeds"
            ),
            BreakerState::Closed => {
                tracing::warn!(%url, dropped, "webhook circuit breaker closed: delivering again")
            }
            BreakerState::HalfOpen => {}
        }
    }
}
