//! The delivery machinery both alert sinks share: a bounded queue of JSON
//! bodies, one tokio task that posts them in order through an
//! [`Endpoint`] (per-attempt timeouts, retries with jittered backoff, a
//! circuit breaker), an optional periodic re-send, and the counters.
//!
//! Pushing an alert never blocks and never waits: the body goes in a
//! bounded queue (the oldest queued body is dropped when it is full). A
//! slow or dead server therefore costs at most `queue` bodies of memory
//! and one task; the breaker turns a dead server into fast, counted drops,
//! logged once per breaker state change. The webhook posts one body per
//! alert; Alertmanager's sink also re-sends its firing alerts every
//! `resend_every`.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::backoff::{Backoff, BreakerState};
use crate::client::url::HttpUrl;
use crate::client::{Endpoint, RetryPolicy, TlsRoots};
use crate::error::Error;

/// Counters of an alert sink since it was spawned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryStats {
    /// Posts delivered (2xx answer): one per alert for the webhook; one per
    /// change or periodic re-send for Alertmanager.
    pub sent: u64,
    /// Attempts that failed (error, timeout or non-2xx answer).
    pub failed_attempts: u64,
    /// Attempts that were retries of an earlier failed attempt.
    pub retries: u64,
    /// Posts dropped because the queue was full (the oldest go first).
    pub dropped_queue_full: u64,
    /// Posts dropped without an attempt because the breaker was open.
    pub dropped_breaker_open: u64,
    /// The breaker's state as last seen by the delivery task:
    /// `"closed"`, `"open"` or `"half_open"`.
    pub breaker_state: &'static str,
}

/// Which sink a [`Delivery`] serves: names its settings and log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Webhook,
    Alertmanager,
}

impl Kind {
    /// The sink's name in log lines.
    fn name(self) -> &'static str {
        match self {
            Kind::Webhook => "webhook",
            Kind::Alertmanager => "alertmanager",
        }
    }

    /// The CA file's setting name in [`Error::Config`].
    fn ca_setting(self) -> &'static str {
        match self {
            Kind::Webhook => "webhook_ca_file",
            Kind::Alertmanager => "alertmanager_ca_file",
        }
    }

    /// `(url, timeout, queue)` setting names in [`Error::Config`].
    fn settings(self) -> (&'static str, &'static str, &'static str) {
        match self {
            Kind::Webhook => ("webhook_url", "webhook_timeout", "webhook_queue"),
            Kind::Alertmanager => (
                "alertmanager_url",
                "alertmanager_timeout",
                "alertmanager_queue",
            ),
        }
    }
}

/// The delivery settings both sinks' options carry.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub timeout: Duration,
    pub max_retries: u32,
    pub backoff: Backoff,
    pub breaker_failures: u32,
    pub breaker_open_for: Duration,
    pub queue: usize,
    /// Extra trusted CA certificates (PEM) for `https://`.
    pub ca_file: Option<std::path::PathBuf>,
}

/// A periodic post: every `every`, `body()` gives what to post, if
/// anything (called on the delivery task; keep it short).
pub(crate) struct Resend {
    pub every: Duration,
    pub body: Box<dyn Fn() -> Option<Vec<u8>> + Send + Sync>,
}

/// A handle to a delivery task; cheap to clone. When the last handle is
/// dropped, the task posts what is queued and ends.
#[derive(Debug, Clone)]
pub(crate) struct Delivery {
    owner: Arc<Owner>,
}

/// Closes the queue when the last [`Delivery`] goes.
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
    /// The queued bodies, and whether the handles are all gone.
    queue: Mutex<(VecDeque<Vec<u8>>, bool)>,
    capacity: usize,
    wake: Notify,
    sent: AtomicU64,
    failed_attempts: AtomicU64,
    retries: AtomicU64,
    dropped_queue_full: AtomicU64,
    dropped_breaker_open: AtomicU64,
    breaker_state: AtomicU8,
}

fn encode(state: BreakerState) -> u8 {
    match state {
        BreakerState::Closed => 0,
        BreakerState::Open => 1,
        BreakerState::HalfOpen => 2,
    }
}

impl Delivery {
    /// Checks the settings, parses `url` and spawns the delivery task on
    /// the current tokio runtime; bodies are posted to `url`'s path, or to
    /// `path(url's path)` when given.
    ///
    /// A bad URL, an unreadable or empty CA file, a zero `timeout` or
    /// `queue` is an [`Error::Config`] naming the sink's setting; calling outside a tokio
    /// runtime is an [`Error::Io`]. An IP-literal host is used as is; a host
    /// name is resolved by the task before each connection.
    pub(crate) fn spawn(
        kind: Kind,
        url: &str,
        path: impl FnOnce(&str) -> String,
        settings: &Settings,
        resend: Option<Resend>,
    ) -> Result<Delivery, Error> {
        let (url_setting, timeout_setting, queue_setting) = kind.settings();
        let url = HttpUrl::parse(url).map_err(|message| Error::Config {
            setting: url_setting,
            message,
        })?;
        if settings.timeout.is_zero() {
            return Err(Error::Config {
                setting: timeout_setting,
                message: "must be more than zero".into(),
            });
        }
        if settings.queue == 0 {
            return Err(Error::Config {
                setting: queue_setting,
                message: "must hold at least one alert".into(),
            });
        }
        let runtime = tokio::runtime::Handle::try_current().map_err(|e| Error::Io {
            context: "spawning the alert delivery task (call inside a tokio runtime)",
            source: std::io::Error::other(e),
        })?;
        let shared = Arc::new(Shared {
            queue: Mutex::new((VecDeque::with_capacity(settings.queue.min(1024)), false)),
            capacity: settings.queue,
            wake: Notify::new(),
            sent: AtomicU64::new(0),
            failed_attempts: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            dropped_queue_full: AtomicU64::new(0),
            dropped_breaker_open: AtomicU64::new(0),
            breaker_state: AtomicU8::new(encode(BreakerState::Closed)),
        });
        let policy = RetryPolicy::default()
            .timeouts(settings.timeout, settings.timeout)
            .retries(settings.max_retries, settings.backoff)
            .breaker(settings.breaker_failures, settings.breaker_open_for);
        let path = path(url.path());
        let roots = match &settings.ca_file {
            Some(file) => TlsRoots::with_pem_file(file).map_err(|message| Error::Config {
                setting: kind.ca_setting(),
                message,
            })?,
            None => TlsRoots::platform(),
        };
        let endpoint = Endpoint::with_roots(url, policy, &roots);
        let task = Task {
            kind,
            shared: shared.clone(),
            endpoint,
            path,
            open_for: settings.breaker_open_for,
            logged_full: 0,
            logged_open: 0,
            full_logged_at: None,
        };
        runtime.spawn(task.run(resend));
        Ok(Delivery {
            owner: Arc::new(Owner(shared)),
        })
    }

    /// Queues `body` and returns at once; never blocks on the network.
    /// When the queue is full, the oldest queued body is dropped (and
    /// counted in [`DeliveryStats::dropped_queue_full`]).
    pub(crate) fn push(&self, body: Vec<u8>) {
        let shared = &self.owner.0;
        {
            let mut guard = shared.queue.lock().unwrap_or_else(|p| p.into_inner());
            let queue = &mut guard.0;
            if queue.len() >= shared.capacity {
                queue.pop_front();
                shared.dropped_queue_full.fetch_add(1, Relaxed);
            }
            queue.push_back(body);
        }
        shared.wake.notify_one();
    }

    /// The counters so far.
    pub(crate) fn stats(&self) -> DeliveryStats {
        let s = &self.owner.0;
        let breaker_state = match s.breaker_state.load(Relaxed) {
            0 => BreakerState::Closed,
            1 => BreakerState::Open,
            _ => BreakerState::HalfOpen,
        };
        DeliveryStats {
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

/// The delivery task's state.
struct Task {
    kind: Kind,
    shared: Arc<Shared>,
    endpoint: Endpoint,
    path: String,
    open_for: Duration,
    /// Drop counters as of the last log line about them.
    logged_full: u64,
    logged_open: u64,
    full_logged_at: Option<Instant>,
}

impl Task {
    /// Posts bodies in order until the handles are gone and the queue is
    /// empty, and the re-sends when they are due. The endpoint does the
    /// attempts, retries and breaker; this loop mirrors its counters and
    /// logs breaker changes once each.
    async fn run(mut self, resend: Option<Resend>) {
        let mut next_resend = resend.as_ref().map(|r| Instant::now() + r.every);
        loop {
            if let (Some(r), Some(at)) = (&resend, next_resend)
                && Instant::now() >= at
            {
                next_resend = Some(Instant::now() + r.every);
                if let Some(body) = (r.body)() {
                    self.post(&body).await;
                }
            }
            let next = {
                let mut guard = self.shared.queue.lock().unwrap_or_else(|p| p.into_inner());
                match guard.0.pop_front() {
                    Some(body) => Ok(body),
                    None => Err(guard.1),
                }
            };
            match next {
                Ok(body) => self.post(&body).await,
                Err(true) => return,
                // A notify_one() since the last wait left a permit: no lost
                // wake-up. Wake for the next re-send too.
                Err(false) => match next_resend {
                    Some(at) => {
                        let _ = tokio::time::timeout_at(at, self.shared.wake.notified()).await;
                    }
                    None => self.shared.wake.notified().await,
                },
            }
        }
    }

    async fn post(&mut self, body: &[u8]) {
        let name = self.kind.name();
        let url = self.endpoint.url().to_string();
        let shared = &self.shared;
        let full = shared.dropped_queue_full.load(Relaxed);
        let quiet = self
            .full_logged_at
            .is_some_and(|at| at.elapsed() < QUEUE_FULL_LOG_EVERY);
        if full > self.logged_full && !quiet {
            self.full_logged_at = Some(Instant::now());
            tracing::warn!(sink = name, %url, dropped = full - self.logged_full, "alert queue full: oldest alerts dropped");
            self.logged_full = full;
        }
        let before = self.endpoint.breaker_state();
        let headers = [("Content-Type", "application/json")];
        let result = self.endpoint.post(&self.path, body, &headers).await;
        let stats = self.endpoint.stats();
        shared.sent.store(stats.ok, Relaxed);
        shared.failed_attempts.store(stats.failed_attempts, Relaxed);
        shared.retries.store(stats.retries, Relaxed);
        shared
            .dropped_breaker_open
            .store(stats.refused_breaker_open, Relaxed);
        let after = self.endpoint.breaker_state();
        shared.breaker_state.store(encode(after), Relaxed);
        if after == before {
            return;
        }
        let dropped = stats.refused_breaker_open - self.logged_open;
        self.logged_open = stats.refused_breaker_open;
        match after {
            BreakerState::Open => tracing::warn!(
                sink = name, %url, error = %result.err().map(|e| e.to_string()).unwrap_or_default(),
                open_for = ?self.open_for,
                "alert circuit breaker open: alerts are dropped until a trial succeeds"
            ),
            BreakerState::Closed => {
                tracing::warn!(sink = name, %url, dropped, "alert circuit breaker closed: delivering again")
            }
            BreakerState::HalfOpen => {}
        }
    }
}
