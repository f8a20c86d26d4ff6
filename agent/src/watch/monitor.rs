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
use crate::explain::Finding;
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
    /// After every successful sample, with every rule's level.
    fn on_sample(&self, _sample: &ResourceSample, _levels: &Levels<'_>) {}
    /// When a rule goes up: what leaks and where, if this hook can tell
    /// (the first hook that answers names the alert). Bounded work: the
    /// alert waits for it.
    fn explain(&self, _transition: &Transition, _sample: &ResourceSample) -> Option<Finding> {
        None
    }
    /// On every state change of a rule (with its finding, on the way up).
    fn on_transition(&self, _transition: &Transition, _sample: &ResourceSample) {}
    /// When the status changes (a process exits, access is refused, a
    /// located target is found under a new pid, ...).
    fn on_status(&self, _status: TargetStatus, _pid: Option<u32>, _message: &str) {}
}

/// Every rule's level after a sample, as `(rule, metric, level)`.
#[derive(Debug, Clone, Copy)]
pub struct Levels<'a>(pub &'a [(String, String, Level)]);

impl Levels<'_> {
    /// True when every rule is at `Ok`.
    pub fn all_ok(&self) -> bool {
        self.0.iter().all(|(_, _, l)| *l == Level::Ok)
    }

    /// True when every rule on one of `metrics` is at `Ok`.
    pub fn ok_for(&self, metrics: &[&str]) -> bool {
        self.0
            .iter()
            .filter(|(_, m, _)| metrics.contains(&m.as_str()))
            .all(|(_, _, l)| *l == Level::Ok)
    }
}

/// Supplies in-process figures /proc does not have (tokio tasks), by metric
/// name.
pub type ExtraMetrics = Box<dyn Fn() -> Vec<(&'static str, f64)> + Send + Sync>;

/// Finds the process to watch when it is named rather than given by pid
/// (the sidecar's `--name`): called when there is no current process or the
/// last one exited, it returns the pid of a match, if any.
pub type Locator = Box<dyn FnMut() -> Option<u32> + Send>;

/// What the watch loop is watching: one fixed target, or whatever process a
/// [`Locator`] finds (picked up again after a restart).
pub enum WatchTarget {
    /// This process or one pid, for the loop's whole life.
    Fixed(Target),
    /// The process the locator finds; `describe` says what it looks for, for
    /// messages (`"a process matching 'api'"`).
    Located {
        /// Finds the pid.
        locate: Locator,
        /// What is looked for, in words.
        describe: String,
    },
}

impl std::fmt::Debug for WatchTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WatchTarget::Fixed(t) => f.debug_tuple("Fixed").field(t).finish(),
            WatchTarget::Located { describe, .. } => f
                .debug_struct("Located")
                .field("describe", describe)
                .finish(),
        }
    }
}

impl From<Target> for WatchTarget {
    fn from(t: Target) -> WatchTarget {
        WatchTarget::Fixed(t)
    }
}

/// Whether the watched process can be sampled right now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TargetStatus {
    /// No sample taken yet.
    #[default]
    Starting,
    /// Sampled fine on the last attempt.
    Running,
    /// The process has exited; a located target waits for the next match.
    Gone,
    /// The process exists but its /proc files may not be read.
    NoAccess,
    /// A located target with no matching process (yet).
    Waiting,
    /// Sampling failed for another reason (see [`MonitorView::error`]).
    Error,
}

impl TargetStatus {
    /// The status in words, as shown in the terminal and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            TargetStatus::Starting => "starting",
            TargetStatus::Running => "running",
            TargetStatus::Gone => "gone",
            TargetStatus::NoAccess => "no access",
            TargetStatus::Waiting => "waiting",
            TargetStatus::Error => "error",
        }
    }

    fn of(error: &Error) -> TargetStatus {
        match error {
            Error::ProcessGone { .. } => TargetStatus::Gone,
            Error::ProcessNoAccess { .. } => TargetStatus::NoAccess,
            _ => TargetStatus::Error,
        }
    }
}

impl std::fmt::Display for TargetStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the watch loop knows now.
#[derive(Debug, Clone, Default)]
pub struct MonitorView {
    /// The pid being watched (the last one, when it has exited).
    pub pid: Option<u32>,
    /// Whether it can be sampled.
    pub status: TargetStatus,
    /// How many times a located target was found under a new pid.
    pub restarts: u64,
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
    /// Set when only the counts can be read (the fd, socket and thread
    /// breakdown needs ptrace access): why.
    pub limited: Option<String>,
}

#[derive(Default)]
struct Shared {
    view: MonitorView,
    alerts: VecDeque<Transition>,
    series: HashMap<String, Series>,
}

/// A running watch loop; dropping it stops the loop.
pub struct Monitor {
    rules: Vec<Rule>,
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
    /// Starts watching `target`: a [`Target`] or a [`WatchTarget`].
    pub fn spawn(
        target: impl Into<WatchTarget>,
        options: MonitorOptions,
        extra: Option<ExtraMetrics>,
        hooks: Vec<Arc<dyn WatchHook>>,
    ) -> Result<Monitor> {
        let target = target.into();
        let rules = options.rules.clone();
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
            rules,
            shared,
            stop,
            thread: Some(thread),
        })
    }

    /// The rules it evaluates.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// A copy of what the loop knows now.
    pub fn view(&self) -> MonitorView {
        let shared = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        let mut view = shared.view.clone();
        view.alerts = shared.alerts.iter().cloned().collect();
        view
    }

    /// Names of every series kept: the rule metrics, plus the breakdowns as
    /// `fds_by_kind:KIND` and `tcp:STATE`. Sorted.
    pub fn series_names(&self) -> Vec<String> {
        let shared = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        let mut names: Vec<String> = shared.series.keys().cloned().collect();
        names.sort();
        names
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

/// Metrics a rule can name: those read from /proc, `tokio_tasks` (from the
/// runtime, when the agent runs inside one, or from a leakscope agent's
/// `/metrics` for the sidecar), `goroutines` (the sidecar reads a Go
/// service's goroutine count from its pprof endpoint) and `heap_bytes` (the
/// heap in use: jemalloc's allocated bytes in the agent, a leakscope
/// agent's `/metrics` or a Go service's `HeapAlloc` for the sidecar).
pub const METRICS: &[&str] = &[
    "threads",
    "open_fds",
    "rss_bytes",
    "heap_bytes",
    "cpu_seconds",
    "tokio_tasks",
    "goroutines",
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

fn target_pid(t: Target) -> Option<u32> {
    match t {
        Target::Pid(p) => Some(p),
        Target::SelfProcess => Some(std::process::id()),
    }
}

fn run(
    mut target: WatchTarget,
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
    let mut status = TargetStatus::Starting;
    // The pid whose breakdown was refused (no ptrace access).
    let mut denied_for: Option<u32> = None;
    // The located pid; for a fixed target, the target itself.
    let mut current: Option<Target> = match &target {
        WatchTarget::Fixed(t) => Some(*t),
        WatchTarget::Located { .. } => None,
    };
    let set_status =
        |status: &mut TargetStatus, new: TargetStatus, pid: Option<u32>, message: String| {
            if *status == new {
                return;
            }
            *status = new;
            {
                let mut sh = shared.lock().unwrap_or_else(|e| e.into_inner());
                sh.view.status = new;
                if pid.is_some() {
                    sh.view.pid = pid;
                }
            }
            for hook in &hooks {
                hook.on_status(new, pid, &message);
            }
        };
    while !stop.load(Ordering::Acquire) {
        if current.is_none()
            && let WatchTarget::Located { locate, describe } = &mut target
        {
            match locate() {
                Some(pid) => {
                    let restarted = {
                        let mut sh = shared.lock().unwrap_or_else(|e| e.into_inner());
                        let restarted = sh.view.pid.is_some_and(|old| old != pid);
                        sh.view.restarts += u64::from(restarted);
                        if restarted {
                            sh.view.limited = None;
                        }
                        sh.view.pid = Some(pid);
                        restarted
                    };
                    if restarted {
                        tracing::info!(
                            pid,
                            "leakscope watch: found {describe} again, as a new process"
                        );
                    }
                    current = Some(Target::Pid(pid));
                }
                None => {
                    let message = format!("waiting for {describe}");
                    let pid = shared.lock().unwrap_or_else(|e| e.into_inner()).view.pid;
                    shared.lock().unwrap_or_else(|e| e.into_inner()).view.error =
                        Some(message.clone());
                    set_status(&mut status, TargetStatus::Waiting, pid, message);
                    std::thread::park_timeout(options.interval);
                    continue;
                }
            }
        }
        let Some(pid_target) = current else {
            continue;
        };
        let denied_here = denied_for.is_some() && denied_for == target_pid(pid_target);
        let full = options.breakdown_every > 0
            && n.is_multiple_of(u64::from(options.breakdown_every))
            && !denied_here;
        n += 1;
        let opts = SampleOptions {
            fd_breakdown: full,
            thread_names: full,
            tcp_states: full,
        };
        let mut result = sample(pid_target, &opts);
        // The counts need no ptrace access (the fd count is the size of
        // /proc/PID/fd), the breakdown does: fall back to counts, say so
        // once, and stop asking for the breakdown of this process.
        if full && let Err(e @ Error::ProcessNoAccess { .. }) = &result {
            let counts = sample(pid_target, &SampleOptions::default());
            if counts.is_ok() {
                let message =
                    format!("counts only: {e} (fd kinds, TCP states and thread names need it)");
                tracing::warn!(target = ?pid_target, "leakscope watch: {message}");
                denied_for = target_pid(pid_target);
                shared
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .view
                    .limited = Some(message.clone());
                for hook in &hooks {
                    hook.on_status(TargetStatus::Running, denied_for, &message);
                }
                result = counts;
            }
        }
        match result {
            Ok(s) => {
                if last_error.take().is_some() {
                    tracing::info!(target = ?pid_target, "leakscope watch: sampling works again");
                }
                set_status(
                    &mut status,
                    TargetStatus::Running,
                    Some(s.pid),
                    format!("watching pid {}", s.pid),
                );
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
                    // The breakdowns, when this sample has them, as series of
                    // their own (`fds_by_kind:tcp`, `tcp:CLOSE_WAIT`); a state
                    // seen before and absent now is a 0.
                    let mut breakdown: Vec<(String, f64)> = Vec::new();
                    if let Some(k) = &s.fds_by_kind {
                        breakdown.extend(
                            k.iter()
                                .map(|(kind, n)| (format!("fds_by_kind:{kind}"), n as f64)),
                        );
                    }
                    if let Some(t) = &s.tcp_by_state {
                        for state in crate::resource::TcpState::ALL {
                            let key = format!("tcp:{}", state.as_str());
                            let n = t.iter().find(|(st, _)| *st == state).map_or(0, |(_, n)| *n);
                            if n > 0 || sh.series.contains_key(&key) {
                                breakdown.push((key, n as f64));
                            }
                        }
                    }
                    for (key, v) in breakdown {
                        sh.series
                            .entry(key)
                            .or_insert_with(|| Series::new(options.history))
                            .push(now, v);
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
                let mut transitions = transitions;
                for t in transitions.iter_mut().filter(|t| t.to > t.from) {
                    t.finding = hooks.iter().find_map(|h| h.explain(t, &s));
                }
                {
                    let mut sh = shared.lock().unwrap_or_else(|e| e.into_inner());
                    for t in &transitions {
                        if sh.alerts.len() >= options.recent_alerts.max(1) {
                            sh.alerts.pop_front();
                        }
                        sh.alerts.push_back(t.clone());
                        sh.view.alerts_total += 1;
                    }
                }
                for t in &transitions {
                    let named = t
                        .finding
                        .as_ref()
                        .map_or(String::new(), |f| format!("; {}", f.summary));
                    if t.to > t.from {
                        tracing::warn!(rule = %t.rule, metric = %t.metric, from = %t.from, to = %t.to,
                            value = t.value, threshold = t.threshold, "leakscope alert: {}{named}", t.message);
                    } else {
                        tracing::info!(rule = %t.rule, metric = %t.metric, from = %t.from, to = %t.to,
                            value = t.value, threshold = t.threshold, "leakscope alert: {}", t.message);
                    }
                    for hook in &hooks {
                        hook.on_transition(t, &s);
                    }
                }
                let levels: Vec<(String, String, Level)> = options
                    .rules
                    .iter()
                    .zip(&states)
                    .map(|(r, st)| (r.name.clone(), r.metric.clone(), st.level))
                    .collect();
                for hook in &hooks {
                    hook.on_sample(&s, &Levels(&levels));
                }
            }
            Err(e) => {
                let text = e.to_string();
                let new_status = TargetStatus::of(&e);
                // One message per distinct problem, not one per interval.
                if last_error.as_deref() != Some(text.as_str()) {
                    tracing::warn!(target = ?pid_target, error = %text, "leakscope watch: cannot sample");
                    last_error = Some(text.clone());
                }
                let pid = match pid_target {
                    Target::Pid(p) => Some(p),
                    Target::SelfProcess => None,
                };
                shared.lock().unwrap_or_else(|e| e.into_inner()).view.error = Some(text.clone());
                set_status(&mut status, new_status, pid, text);
                // A located process that exited: look for the next match on the
                // next tick (a zombie may still match meanwhile).
                if new_status == TargetStatus::Gone && matches!(target, WatchTarget::Located { .. })
                {
                    current = None;
                }
            }
        }
        std::thread::park_timeout(options.interval);
    }
}
