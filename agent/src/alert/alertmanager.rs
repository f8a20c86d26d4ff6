//! The Alertmanager sink: posts [`Alert`]s to Prometheus Alertmanager's API
//! v2 (`POST /api/v2/alerts`, a JSON array of alerts) through the
//! [`delivery`](super::delivery) machinery the webhook uses: a bounded
//! queue, per-attempt timeouts, retries with jittered backoff, a circuit
//! breaker, and a send that never blocks.
//!
//! Each firing rule is one Alertmanager alert, identified by its labels:
//! `alertname` (the rule's name), `rule`, `metric`, `target`, `severity`
//! (`warning` or `critical`) and the options' extra `labels`. Its
//! annotations carry the message (`summary`, `description`) and, when the
//! watch loop named the leak, the named site (`site`: function and
//! file:line), the finding's `confidence` and one line on what grew
//! (`finding`). When the rule recovers, the same labels are posted with
//! `endsAt` set to the recovery time, which resolves the alert. A change of
//! level (warning to critical, or back) resolves the alert of the old
//! severity and fires one of the new, in one post.
//!
//! Re-sending. Alertmanager's documentation for clients asks them to keep
//! re-sending an alert while it is active ("on the order of 30 seconds to 3
//! minutes"); an alert it stops hearing about ends at its `endsAt`, or,
//! without one, `resolve_timeout` (5 min by default) after it was last
//! received. This sink does what Prometheus does: every
//! [`resend_every`](AlertmanagerOptions::resend_every) (default 1 min) it
//! posts every alert still firing with `endsAt` four periods ahead. A live
//! agent thus keeps its alerts firing whatever `resolve_timeout` says, an
//! Alertmanager that restarted hears of them again within a period, and an
//! agent that dies (or a recovery post that is lost) lets its alerts expire
//! on their own within four periods. The set of firing alerts is updated by
//! [`AlertmanagerSink::send`] itself, so a post dropped from a full queue
//! or by an open breaker is corrected by the next re-send.
//!
//! ```no_run
//! # async fn demo(alert: leakscope_agent::alert::Alert) -> Result<(), leakscope_agent::error::Error> {
//! use leakscope_agent::alert::alertmanager::{AlertmanagerOptions, AlertmanagerSink};
//!
//! let mut opts = AlertmanagerOptions::new("http://127.0.0.1:9093");
//! opts.labels.insert("service".into(), "orders".into());
//! let sink = AlertmanagerSink::spawn(opts)?;
//! sink.send(alert); // returns at once
//! # Ok(())
//! # }
//! ```

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::Alert;
use super::backoff::Backoff;
use super::delivery::{Delivery, DeliveryStats, Kind, Resend, Settings};
use crate::error::Error;

/// Settings of an [`AlertmanagerSink`].
#[derive(Debug, Clone)]
pub struct AlertmanagerOptions {
    /// Alertmanager's base URL, `http://host:9093` (with its
    /// `--web.route-prefix` path, if any); alerts go to
    /// `{url}/api/v2/alerts`; `https://` works too.
    pub url: String,
    /// A PEM file of CA certificates trusted for an `https://` URL besides
    /// the platform's (an internal CA); read when the sink is spawned.
    pub ca_file: Option<std::path::PathBuf>,
    /// Labels added to every alert, such as `service` or `instance`, to
    /// tell the senders apart; they may not reuse the built-in names
    /// (`alertname`, `rule`, `metric`, `target`, `severity`).
    pub labels: BTreeMap<String, String>,
    /// Where a reader of the alert can see more (the agent's or sidecar's
    /// address as users reach it, e.g. `http://api-7:6060`): the alert's
    /// `generatorURL` is the finding's viewer link under it, or this URL.
    /// A finding's link that is already a full URL is used as is.
    pub generator_url: Option<String>,
    /// How often firing alerts are posted again (default 1 min); each post
    /// says they end four periods later unless heard of again.
    pub resend_every: Duration,
    /// Bound of each attempt, connecting included (default 2 s).
    pub timeout: Duration,
    /// Retries after a failed attempt (default 3).
    pub max_retries: u32,
    /// Delays between attempts (default 100 ms doubling to 5 s, full jitter).
    pub backoff: Backoff,
    /// Consecutive failed deliveries that open the breaker (default 5).
    pub breaker_failures: u32,
    /// How long an open breaker drops posts before a trial (default 30 s).
    pub breaker_open_for: Duration,
    /// Posts waiting for delivery, at most (default 256).
    pub queue: usize,
}

impl AlertmanagerOptions {
    /// Default [`resend_every`](Self::resend_every): Prometheus's
    /// `--rules.alert.resend-delay`.
    pub const DEFAULT_RESEND_EVERY: Duration = Duration::from_secs(60);

    /// The defaults for Alertmanager at `url`.
    pub fn new(url: impl Into<String>) -> AlertmanagerOptions {
        AlertmanagerOptions {
            url: url.into(),
            ca_file: None,
            labels: BTreeMap::new(),
            generator_url: None,
            resend_every: Self::DEFAULT_RESEND_EVERY,
            timeout: Duration::from_secs(2),
            max_retries: 3,
            backoff: Backoff::default(),
            breaker_failures: 5,
            breaker_open_for: Duration::from_secs(30),
            queue: 256,
        }
    }
}

/// Counters of an [`AlertmanagerSink`]: posts, not alerts (a post may carry
/// several alerts, and firing alerts are re-sent).
pub type AlertmanagerStats = DeliveryStats;

/// Labels every alert has; [`AlertmanagerOptions::labels`] may not set them.
const BUILT_IN_LABELS: [&str; 5] = ["alertname", "rule", "metric", "target", "severity"];

/// Most alerts tracked as firing at once (rules × targets is far less).
const MAX_ACTIVE: usize = 4096;

/// `endsAt` of a firing alert, in re-send periods from now.
const VALID_FOR_PERIODS: u32 = 4;

/// A handle to the Alertmanager delivery task; cheap to clone. When the
/// last handle is dropped, the task delivers what is queued and ends (and
/// the firing alerts expire on their own).
#[derive(Debug, Clone)]
pub struct AlertmanagerSink {
    delivery: Delivery,
    state: Arc<State>,
}

/// The firing alerts and what every alert gets.
#[derive(Debug)]
struct State {
    /// Firing alerts by (rule, target).
    active: Mutex<BTreeMap<(String, String), Firing>>,
    labels: BTreeMap<String, String>,
    generator_url: Option<String>,
    /// How far ahead a firing alert's `endsAt` is.
    valid_for: Duration,
}

/// One alert as Alertmanager knows it.
#[derive(Debug, Clone)]
struct Firing {
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
    starts_at: f64,
    generator_url: Option<String>,
}

/// The JSON of one alert in a post.
#[derive(serde::Serialize)]
struct Posted<'a> {
    labels: &'a BTreeMap<String, String>,
    annotations: &'a BTreeMap<String, String>,
    #[serde(rename = "startsAt")]
    starts_at: String,
    #[serde(rename = "endsAt")]
    ends_at: String,
    #[serde(rename = "generatorURL", skip_serializing_if = "Option::is_none")]
    generator_url: Option<&'a str>,
}

impl Firing {
    fn posted(&self, ends_at: f64) -> Posted<'_> {
        Posted {
            labels: &self.labels,
            annotations: &self.annotations,
            starts_at: rfc3339(self.starts_at),
            ends_at: rfc3339(ends_at.max(self.starts_at)),
            generator_url: self.generator_url.as_deref(),
        }
    }
}

fn bad_labels(message: String) -> Error {
    Error::Config {
        setting: "alertmanager_labels",
        message,
    }
}

/// Whether `name` is a Prometheus label name: `[a-zA-Z_][a-zA-Z0-9_]*`.
fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl AlertmanagerSink {
    /// Checks the options, parses the URL and spawns the delivery task on
    /// the current tokio runtime.
    ///
    /// A bad URL, an unreadable `ca_file`, a zero `timeout`, `queue` or
    /// `resend_every`, or a label that is not a Prometheus label name or
    /// reuses a built-in one is an [`Error::Config`]; calling outside a
    /// tokio runtime is an [`Error::Io`].
    pub fn spawn(opts: AlertmanagerOptions) -> Result<AlertmanagerSink, Error> {
        for name in opts.labels.keys() {
            if !is_label_name(name) || name.starts_with("__") {
                return Err(bad_labels(format!(
                    "{name:?} is not a label name (letters, digits and '_', not starting \
                     with a digit or \"__\")"
                )));
            }
            if BUILT_IN_LABELS.contains(&name.as_str()) {
                return Err(bad_labels(format!(
                    "{name:?} is set by leakscope on every alert; choose another name"
                )));
            }
        }
        if opts.resend_every.is_zero() {
            return Err(Error::Config {
                setting: "alertmanager_resend_every",
                message: "must be more than zero".into(),
            });
        }
        let state = Arc::new(State {
            active: Mutex::new(BTreeMap::new()),
            labels: opts.labels.clone(),
            generator_url: opts
                .generator_url
                .as_deref()
                .map(|u| u.trim().trim_end_matches('/').to_owned())
                .filter(|u| !u.is_empty()),
            valid_for: opts.resend_every.saturating_mul(VALID_FOR_PERIODS),
        });
        let resend = Resend {
            every: opts.resend_every,
            body: Box::new({
                let state = state.clone();
                move || state.resend_body()
            }),
        };
        let settings = Settings {
            timeout: opts.timeout,
            max_retries: opts.max_retries,
            backoff: opts.backoff,
            breaker_failures: opts.breaker_failures,
            breaker_open_for: opts.breaker_open_for,
            queue: opts.queue,
            ca_file: opts.ca_file.clone(),
        };
        let delivery = Delivery::spawn(
            Kind::Alertmanager,
            &opts.url,
            |base| {
                let base = base.split('?').next().unwrap_or_default();
                format!("{}/api/v2/alerts", base.trim_end_matches('/'))
            },
            &settings,
            Some(resend),
        )?;
        Ok(AlertmanagerSink { delivery, state })
    }

    /// Updates the firing alerts with `alert` and queues the post that
    /// tells Alertmanager (the alert firing, resolved, or both on a change
    /// of severity); returns at once, never blocking on the network.
    pub fn send(&self, alert: Alert) {
        let state = &self.state;
        let now = unix_now();
        let key = (alert.rule.clone(), alert.target.clone());
        let firing = (alert.to != "ok").then(|| state.firing(&alert));
        let at = if alert.at_unix.is_finite() && alert.at_unix > 0.0 {
            alert.at_unix
        } else {
            now
        };
        let (resolved, fired) = {
            let mut active = state.active.lock().unwrap_or_else(|p| p.into_inner());
            let (resolved, fired) = match (active.remove(&key), firing) {
                // The same alert again (its annotations may differ): keep
                // when it started.
                (Some(old), Some(mut new)) if old.labels == new.labels => {
                    new.starts_at = old.starts_at;
                    (None, Some(new))
                }
                (old, new) => (
                    old,
                    new.map(|mut f| {
                        f.starts_at = at;
                        f
                    }),
                ),
            };
            if let Some(f) = &fired {
                if active.len() < MAX_ACTIVE {
                    active.insert(key, f.clone());
                } else {
                    tracing::warn!(
                        rule = %alert.rule, target = %alert.target,
                        "alertmanager: {MAX_ACTIVE} alerts already firing; this one is sent once, not re-sent"
                    );
                }
            }
            (resolved, fired)
        };
        let ends = now + state.valid_for.as_secs_f64();
        let posted: Vec<Posted<'_>> = resolved
            .iter()
            .map(|r| r.posted(at))
            .chain(fired.iter().map(|f| f.posted(ends)))
            .collect();
        if !posted.is_empty() {
            // Serializing strings into a Vec cannot fail.
            self.delivery
                .push(serde_json::to_vec(&posted).unwrap_or_default());
        }
    }

    /// The counters so far.
    pub fn stats(&self) -> AlertmanagerStats {
        self.delivery.stats()
    }

    /// How many alerts are firing (re-sent every period).
    pub fn firing(&self) -> usize {
        self.state
            .active
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }
}

impl super::AlertSink for AlertmanagerSink {
    fn send(&self, alert: Alert) {
        AlertmanagerSink::send(self, alert);
    }
}

impl State {
    /// The Alertmanager alert for a rule now at `alert.to` (its `starts_at`
    /// is set by the caller).
    fn firing(&self, alert: &Alert) -> Firing {
        let mut labels = self.labels.clone();
        labels.insert("alertname".into(), alert.rule.clone());
        labels.insert("rule".into(), alert.rule.clone());
        labels.insert("metric".into(), alert.metric.clone());
        labels.insert("target".into(), alert.target.clone());
        labels.insert("severity".into(), alert.to.clone());
        let message = alert.message_line();
        let mut annotations = BTreeMap::new();
        let mut description = format!("{message} ({})", alert.target);
        annotations.insert("value".into(), alert.value.to_string());
        annotations.insert("threshold".into(), alert.threshold.to_string());
        let mut link = None;
        if let Some(f) = &alert.finding {
            description.push_str(&format!(". {}", f.summary));
            if let Some(site) = &f.site {
                description.push_str(&format!(" Site: {site}"));
                annotations.insert("site".into(), site.to_string());
            }
            description.push_str(&format!(" (confidence: {}).", f.confidence));
            annotations.insert("confidence".into(), f.confidence.to_string());
            annotations.insert("finding".into(), f.summary.clone());
            link = f.url.clone();
        }
        annotations.insert("summary".into(), message);
        annotations.insert("description".into(), description);
        let generator_url = match (link, &self.generator_url) {
            (Some(l), _) if l.starts_with("http://") || l.starts_with("https://") => Some(l),
            (Some(l), Some(base)) if l.starts_with('/') => Some(format!("{base}{l}")),
            (_, base) => base.clone(),
        };
        Firing {
            labels,
            annotations,
            starts_at: alert.at_unix,
            generator_url,
        }
    }

    /// Every firing alert, ending four periods from now; `None` when none
    /// is firing.
    fn resend_body(&self) -> Option<Vec<u8>> {
        let active = self.active.lock().unwrap_or_else(|p| p.into_inner());
        if active.is_empty() {
            return None;
        }
        let ends = unix_now() + self.valid_for.as_secs_f64();
        let posted: Vec<Posted<'_>> = active.values().map(|f| f.posted(ends)).collect();
        serde_json::to_vec(&posted).ok()
    }
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// `unix` seconds as RFC 3339 in UTC with milliseconds,
/// `2023-11-14T22:13:20.500Z`; before 1970 or not a number is the epoch.
pub(crate) fn rfc3339(unix: f64) -> String {
    let millis = if unix.is_finite() && unix > 0.0 {
        (unix * 1000.0).round() as u64
    } else {
        0
    };
    let secs = millis / 1000;
    let (year, month, day) = crate::store::civil_from_days(secs / 86_400);
    let rem = secs % 86_400;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        millis % 1000
    )
}
