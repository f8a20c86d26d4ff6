//! The background watch loop: samples a target on an interval, keeps a
//! bounded time series per metric, evaluates the threshold rules, and on a
//! state change logs a structured `tracing` event, keeps the alert, calls
//! the alert hooks and captures evidence.
//!
//! It runs on a thread of its own (`leakscope-watch`), never on the
//! service's async workers: a count-only sample costs tens of microseconds,
//! the fd/socket breakdown (every [`MonitorOptions::breakdown_every`]
//! samples) a few milliseconds.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::rules::{Level, Rule, RuleState, Transition, default_rules};
use super::series::Series;
use crate::error::{Error, Result};
use crate::resource::{ResourceSample, SampleOptions, Target, sample};

/// Settings of the watch loop.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct MonitorOptions {
    /// Time between samples.
    pub interval: Duration,
    /// Every this many samples, also read the fd kinds, TCP states and
    /// thread names (slower).
    pub breakdown_every: u32,
    /// Points kept per metric.
    pub history: usize,
    /// Alerts kept for `/debug/leakscope/alerts`.
    pub recent_alerts: usize,
    /// The rules evaluated on each sample.
    pub rules: Vec<Rule>,
}

impl MonitorOptions {
    /// Default [`MonitorOptions::interval`].
    pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);
    /// Default [`MonitorOptions::breakdown_every`].
    pub const DEFAULT_BREAKDOWN_EVERY: u32 = 10;
    /// Default [`MonitorOptions::history`]: an hour at one sample a second.
    pub const DEFAULT_HISTORY: usize = 3600;
    /// Default [`MonitorOptions::recent_alerts`].
    pub const DEFAULT_RECENT_ALERTS: usize = 100;

    /// Sets the interval.
    #[must_use]
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// Replaces the rules.
    #[must_use]
    pub fn rules(mut self, rules: Vec<Rule>) -> Self {
        self.rules = rules;
        self
    }
}

impl Default for MonitorOptions {
    fn default() -> Self {
        MonitorOptions {
            interval: Self::DEFAULT_INTERVAL,
            breakdown_every: Self::DEFAULT_BREAKDOWN_EVERY,
            history: Self::DEFAULT_HISTORY,
            recent_alerts: Self::DEFAULT_RECENT_ALERTS,
            rules: default_rules(),
        }
    }
}

/// What the watch loop tells others, on its own thread. Implementations keep
/// it short or hand heavy work elsewhere: the next sample waits for them.
pub trait WatchHook: Send + Sync {
    /// After every successful sample; `all_ok` when every rule is at `Ok`.
    fn on_sample(&self, _sample: &ResourceSample, _all_ok: bool) {}
    /// On every state change of a rule.
    fn on_transition(&self, _transition: &Transition, _sample: &ResourceSample) {}
}

/// Supplies in-process figures /proc does not have (tokio tasks), by metric
/// name.
pub type ExtraMetrics = Box<dyn Fn() -> Vec<(&'static str, f64)> + Send + Sync>;

/// What the watch loop knows now.
#[derive(Debug, Clone, Default)]
pub struct MonitorView {
    /// The latest sample.
    pub last: Option<ResourceSample>,
    /// Each rule's name, metric and current level.
    pub levels: Vec<(String, String, Level)>,
    /// Recent state changes, oldest first.
    pub alerts: Vec<Transition>,
    /// State changes since start.
    pub alerts_total: u64,
    /// The last sampling error (a process that exited, no access), if the
    /// latest attempt failed.
    pub error: Option<String>,
}

#[derive(Default)]
struct Shared {
    view: MonitorView,
    alerts: VecDeque<Transition>,
    series: HashMap<String, Series>,
}

/// A running watch loop; dropping it stops the loop.
pub struct Monitor {
    shared: Arc<Mutex<Shared>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for Monitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Monitor").finish_non_exhaustive()
    }
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

impl Monitor {
    /// Starts watching `target`.
    pub fn spawn(
        target: Target,
        options: MonitorOptions,
        extra: Option<ExtraMetrics>,
        hooks: Vec<Arc<dyn WatchHook>>,
    ) -> Result<Monitor> {
        let shared = Arc::new(Mutex::new(Shared::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let shared = Arc::clone(&shared);
            let stop = Arc::clone(&stop);
            std::thread::Builder::new()
                .name("leakscope-watch".into())
                .spawn(move || run(target, options, extra, hooks, &shared, &stop))
                .map_err(|source| Error::Io {
                    context: "spawning the watch thread",
                    source,
                })?
        };
        Ok(Monitor {
            shared,
            stop,
            thread: Some(thread),
        })
    }

    /// A copy of what the loop knows now.
    pub fn view(&self) -> MonitorView {
        let shared = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        let mut view = shared.view.clone();
        view.alerts = shared.alerts.iter().cloned().collect();
        view
    }

    /// The time series of `metric` as (unix seconds, value) points.
    pub fn series(&self, metric: &str) -> Vec<(f64, f64)> {
        let shared = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        shared
            .series
            .get(metric)
            .map(|s| s.iter().collect())
            .unwrap_or_default()
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

/// Metrics a rule can name: those read from /proc and `tokio_tasks`
/// (from the runtime, when the agent runs inside one).
pub const METRICS: &[&str] = &[
    "threads",
    "open_fds",
    "rss_bytes",
    "cpu_seconds",
    "tokio_tasks",
];

/// The metrics the rules can name, from one sample.
fn metrics_of(s: &ResourceSample) -> Vec<(&'static str, f64)> {
    vec![
        ("threads", s.threads as f64),
        ("open_fds", s.open_fds as f64),
        ("rss_bytes", s.rss_bytes as f64),
        ("cpu_seconds", s.cpu_seconds),
    ]
}

fn run(
    target: Target,
    options: MonitorOptions,
    extra: Option<ExtraMetrics>,
    hooks: Vec<Arc<dyn WatchHook>>,
    shared: &Mutex<Shared>,
    stop: &AtomicBool,
) {
    let mut states: Vec<RuleState> = options
        .rules
        .iter()
        .map(|_| RuleState::new(unix_now()))
        .collect();
    let mut n: u64 = 0;
    let mut last_error: Option<String> = None;
    while !stop.load(Ordering::Acquire) {
        let full =
            options.breakdown_every > 0 && n.is_multiple_of(u64::from(options.breakdown_every));
        n += 1;
        let opts = SampleOptions {
            fd_breakdown: full,
            thread_names: full,
            tcp_states: full,
        };
        match sample(target, &opts) {
            Ok(s) => {
                if last_error.take().is_some() {
                    tracing::info!(?target, "leakscope watch: sampling works again");
                }
                let now = unix_now();
                let mut values = metrics_of(&s);
                if let Some(extra) = &extra {
                    values.extend(extra());
                }
                let transitions = {
                    let mut sh = shared.lock().unwrap_or_else(|e| e.into_inner());
                    for (name, v) in &values {
                        sh.series
                            .entry((*name).to_owned())
                            .or_insert_with(|| Series::new(options.history))
                            .push(now, *v);
                    }
                    let mut transitions = Vec::new();
                    for (rule, state) in options.rules.iter().zip(states.iter_mut()) {
                        let Some(series) = sh.series.get(&rule.metric) else {
                            continue;
                        };
                        let limit = (rule.metric == "open_fds")
                            .then_some(s.fd_limit.map(|l| l as f64))
                            .flatten();
                        if let Some(t) = rule.evaluate(state, series, limit, now) {
                            transitions.push(t);
                        }
                    }
                    for t in &transitions {
                        if sh.alerts.len() >= options.recent_alerts.max(1) {
                            sh.alerts.pop_front();
                        }
                        sh.alerts.push_back(t.clone());
                        sh.view.alerts_total += 1;
                    }
                    sh.view.levels = options
                        .rules
                        .iter()
                        .zip(&states)
                        .map(|(r, st)| (r.name.clone(), r.metric.clone(), st.level))
                        .collect();
                    // Keep the last breakdown when this sample has none.
                    let mut s2 = s.clone();
                    if let Some(prev) = &sh.view.last {
                        if s2.fds_by_kind.is_none() {
                            s2.fds_by_kind = prev.fds_by_kind;
                        }
                        if s2.tcp_by_state.is_none() {
                            s2.tcp_by_state = prev.tcp_by_state.clone();
                        }
                        if s2.threads_by_name.is_none() {
                            s2.threads_by_name = prev.threads_by_name.clone();
                        }
                    }
                    sh.view.last = Some(s2);
                    sh.view.error = None;
                    transitions
                };
                for t in &transitions {
                    if t.to > t.from {
                        tracing::warn!(rule = %t.rule, metric = %t.metric, from = %t.from, to = %t.to,
                            value = t.value, threshold = t.threshold, "leakscope alert: {}", t.message);
                    } else {
                        tracing::info!(rule = %t.rule, metric = %t.metric, from = %t.from, to = %t.to,
                            value = t.value, threshold = t.threshold, "leakscope alert: {}", t.message);
                    }
                    for hook in &hooks {
                        hook.on_transition(t, &s);
                    }
                }
                let all_ok = states.iter().all(|st| st.level == Level::Ok);
                for hook in &hooks {
                    hook.on_sample(&s, all_ok);
                }
            }
            Err(e) => {
                let text = e.to_string();
                // One message per distinct problem, not one per interval.
                if last_error.as_deref() != Some(text.as_str()) {
                    tracing::warn!(?target, error = %text, "leakscope watch: cannot sample");
                    last_error = Some(text.clone());
                }
                shared.lock().unwrap_or_else(|e| e.into_inner()).view.error = Some(text);
            }
        }
        std::thread::park_timeout(options.interval);
    }
}
