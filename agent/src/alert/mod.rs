//! Alerts: threshold state changes of a watched metric, and where they go.
//!
//! An [`Alert`] says that a rule's state changed (`ok` → `warning`, ...).
//! [`webhook::WebhookSink`] posts alerts as JSON to an `http://` or `https://` webhook
//! (Slack-compatible thanks to the `text` field) from a background task,
//! with retries, backoff and a circuit breaker ([`backoff`]), without ever
//! blocking the caller. [`alertmanager::AlertmanagerSink`] posts them to
//! Prometheus Alertmanager's API v2 through the same [`delivery`]
//! machinery, resolving each alert when its rule recovers.

pub use crate::client::backoff;
pub mod alertmanager;
pub mod delivery;
pub mod webhook;

pub use alertmanager::{AlertmanagerOptions, AlertmanagerSink};
pub use webhook::{WebhookOptions, WebhookSink};

/// One alert: a threshold state change.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Alert {
    /// Name of the rule that changed state.
    pub rule: String,
    /// The metric the rule watches, such as `threads`.
    pub metric: String,
    /// The previous state: `"ok"`, `"warning"` or `"critical"`.
    pub from: String,
    /// The new state: `"ok"`, `"warning"` or `"critical"`.
    pub to: String,
    /// The value that crossed the threshold.
    pub value: f64,
    /// The threshold it was compared with.
    pub threshold: f64,
    /// When the change happened, in seconds since the Unix epoch.
    pub at_unix: f64,
    /// A human sentence describing the change.
    pub message: String,
    /// What is watched: `"self"` or `"pid 1234"`.
    pub target: String,
    /// What leaks and where, when the watch loop could name it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finding: Option<crate::explain::Finding>,
}

/// The JSON body of a webhook post: the alert's fields plus `text`.
#[derive(serde::Serialize)]
struct Body<'a> {
    #[serde(flatten)]
    alert: &'a Alert,
    text: String,
}

impl Alert {
    /// A one-line, Slack-compatible summary such as
    /// `[leakscope] warning: threads growing 12.0/min over 5m, throughout (warning at 5.0/min): suspected leak (self): threads 4 -> 64 (+60); +60 in app::worker (src/worker.rs:42)`,
    /// the finding's summary last when there is one.
    ///
    /// Line breaks in the message become spaces. Without a message, the
    /// summary is built from the rule, metric, value and threshold.
    pub fn summary(&self) -> String {
        let message = self.message_line();
        let named = self
            .finding
            .as_ref()
            .map_or(String::new(), |f| format!(": {}", f.summary));
        let line = format!(
            "[leakscope] {}: {} ({}){named}",
            self.to, message, self.target
        );
        one_line(&line)
    }

    /// The message on one line, or, without one, a sentence built from the
    /// rule, metric, value and threshold.
    pub(crate) fn message_line(&self) -> String {
        if self.message.trim().is_empty() {
            format!(
                "{} {}: {} = {} (threshold {}, was {})",
                self.rule, self.to, self.metric, self.value, self.threshold, self.from
            )
        } else {
            one_line(&self.message)
        }
    }

    /// The webhook body: this alert as a JSON object with the extra `text`
    /// field ([`Alert::summary`]). Non-finite numbers become `null`.
    pub fn to_json(&self) -> Vec<u8> {
        let body = Body {
            alert: self,
            text: self.summary(),
        };
        // Serializing plain strings and floats into a Vec cannot fail.
        serde_json::to_vec(&body).unwrap_or_default()
    }
}

/// `text` with its line breaks turned into single spaces.
fn one_line(text: &str) -> String {
    text.split(['\r', '\n'])
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An alert like the ones the rules emit.
    pub(crate) fn sample(rule: &str) -> Alert {
        Alert {
            rule: rule.into(),
            metric: "threads".into(),
            from: "ok".into(),
            to: "warning".into(),
            value: 12.0,
            threshold: 5.0,
            at_unix: 1_700_000_000.5,
            message: "threads grow by 12.0/min over 5m (limit 5.0/min): suspected leak".into(),
            target: "self".into(),
            finding: None,
        }
    }

    #[test]
    fn summary_is_one_slack_line() {
        let a = sample("thread-growth");
        assert_eq!(
            a.summary(),
            "[leakscope] warning: threads grow by 12.0/min over 5m (limit 5.0/min): suspected leak (self)"
        );
        let mut b = a.clone();
        b.message = "two\nlines".into();
        b.target = "pid 1234".into();
        assert_eq!(b.summary(), "[leakscope] warning: two lines (pid 1234)");
        b.message = String::new();
        assert_eq!(
            b.summary(),
            "[leakscope] warning: thread-growth warning: threads = 12 (threshold 5, was ok) (pid 1234)"
        );
    }

    #[test]
    fn json_has_fields_and_text() {
        let mut a = sample("r");
        let v: serde_json::Value = serde_json::from_slice(&a.to_json()).expect("json");
        assert_eq!(v["rule"], "r");
        assert_eq!(v["metric"], "threads");
        assert_eq!(v["from"], "ok");
        assert_eq!(v["to"], "warning");
        assert_eq!(v["value"], 12.0);
        assert_eq!(v["threshold"], 5.0);
        assert_eq!(v["at_unix"], 1_700_000_000.5);
        assert_eq!(v["target"], "self");
        assert_eq!(v["text"], a.summary());
        a.value = f64::NAN;
        let v: serde_json::Value = serde_json::from_slice(&a.to_json()).expect("json");
        assert!(v["value"].is_null());
    }
}

#[cfg(test)]
mod alertmanager_tests;
#[cfg(test)]
mod webhook_tests;

impl Alert {
    /// The alert for a rule's state change on `target`.
    pub fn from_transition(t: &crate::watch::rules::Transition, target: &str) -> Alert {
        Alert {
            rule: t.rule.clone(),
            metric: t.metric.clone(),
            from: t.from.to_string(),
            to: t.to.to_string(),
            value: t.value,
            threshold: t.threshold,
            at_unix: t.at,
            message: t.message.clone(),
            target: target.to_owned(),
            finding: t.finding.clone(),
        }
    }
}

/// Where a watch loop's alerts can go: [`webhook::WebhookSink`] and
/// [`alertmanager::AlertmanagerSink`]. `send` must return at once.
pub trait AlertSink: Send + Sync + std::fmt::Debug {
    /// Hands `alert` over for delivery, without blocking.
    fn send(&self, alert: Alert);
}

/// Forwards every state change of the watch loop to an [`AlertSink`].
#[derive(Debug, Clone)]
pub struct AlertHook<S> {
    /// The sink alerts go to.
    pub sink: S,
    /// Name of the watched target in the alerts.
    pub target: String,
}

/// Forwards every state change of the watch loop to a webhook.
pub type WebhookHook = AlertHook<webhook::WebhookSink>;

/// Forwards every state change of the watch loop to Alertmanager.
pub type AlertmanagerHook = AlertHook<alertmanager::AlertmanagerSink>;

impl<S: AlertSink> crate::watch::monitor::WatchHook for AlertHook<S> {
    fn on_transition(
        &self,
        transition: &crate::watch::rules::Transition,
        _sample: &crate::resource::ResourceSample,
    ) {
        self.sink
            .send(Alert::from_transition(transition, &self.target));
    }
}
