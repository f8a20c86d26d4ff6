//! The webhook sink: posts [`Alert`]s as JSON to an `http(s)://` URL from a
//! background task, with per-attempt timeouts, retries with jittered
//! backoff and a circuit breaker (the [`delivery`](super::delivery)
//! machinery it shares with Alertmanager's sink).
//!
//! [`WebhookSink::send`] never blocks and never waits: it puts the alert in a
//! bounded queue (dropping the oldest queued alert when full). One tokio task
//! delivers the queue in order. A slow or dead webhook therefore costs at
//! most `queue` alerts of memory and one task; the breaker turns a dead
//! webhook into fast, counted drops, logged once per breaker state change.
//! `http://` and `https://` URLs work (the crate's [`crate::client`]:
//! hyper and rustls, the platform's CAs); a webhook behind an internal CA
//! is trusted with [`WebhookOptions::ca_file`].
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

use std::path::PathBuf;
use std::time::Duration;

use super::Alert;
use super::backoff::Backoff;
use super::delivery::{Delivery, DeliveryStats, Kind, Settings};
use crate::error::Error;

/// Settings of a [`WebhookSink`].
#[derive(Debug, Clone)]
pub struct WebhookOptions {
    /// `http[s]://host[:port][/path][?query]`.
    pub url: String,
    /// A PEM file of CA certificates trusted for an `https://` URL besides
    /// the platform's (an internal CA); read when the sink is spawned.
    pub ca_file: Option<PathBuf>,
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
            ca_file: None,
            timeout: Duration::from_secs(2),
            max_retries: 3,
            backoff: Backoff::default(),
            breaker_failures: 5,
            breaker_open_for: Duration::from_secs(30),
            queue: 256,
        }
    }
}

/// Counters of a [`WebhookSink`] since it was spawned (one post per alert).
pub type WebhookStats = DeliveryStats;

/// A handle to the webhook delivery task; cheap to clone. When the last
/// handle is dropped, the task delivers what is queued and ends.
#[derive(Debug, Clone)]
pub struct WebhookSink {
    delivery: Delivery,
}

impl WebhookOptions {
    pub(crate) fn settings(&self) -> Settings {
        Settings {
            timeout: self.timeout,
            max_retries: self.max_retries,
            backoff: self.backoff,
            breaker_failures: self.breaker_failures,
            breaker_open_for: self.breaker_open_for,
            queue: self.queue,
            ca_file: self.ca_file.clone(),
        }
    }
}

impl WebhookSink {
    /// Checks the options, parses the URL and spawns the delivery task on
    /// the current tokio runtime.
    ///
    /// A bad URL, an unreadable `ca_file`, a zero `timeout` or `queue` is
    /// an [`Error::Config`]; calling outside a tokio runtime is an
    /// [`Error::Io`]. An IP-literal host is used as is; a host name is
    /// resolved with `tokio::net::lookup_host` by the delivery task before
    /// its first attempt (this function does not wait), and again after a
    /// failed lookup, which counts as a failed attempt.
    pub fn spawn(opts: WebhookOptions) -> Result<WebhookSink, Error> {
        let delivery = Delivery::spawn(
            Kind::Webhook,
            &opts.url,
            str::to_owned,
            &opts.settings(),
            None,
        )?;
        Ok(WebhookSink { delivery })
    }

    /// Queues `alert` for delivery and returns at once; never blocks on the
    /// network. When the queue is full, the oldest queued alert is dropped
    /// (and counted in [`WebhookStats::dropped_queue_full`]).
    pub fn send(&self, alert: Alert) {
        self.delivery.push(alert.to_json());
    }

    /// The counters so far.
    pub fn stats(&self) -> WebhookStats {
        self.delivery.stats()
    }
}

impl super::AlertSink for WebhookSink {
    fn send(&self, alert: Alert) {
        WebhookSink::send(self, alert);
    }
}
