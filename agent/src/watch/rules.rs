//! Threshold rules over resource counters, evaluated on each new sample.
//!
//! A [`Rule`] watches one metric's [`Series`] and moves a [`RuleState`]
//! through ok → warning → critical → ok. Raising needs the measured quantity
//! (value, ratio to a limit, or growth rate) to reach a threshold and hold it
//! for `for_secs`; lowering needs it to fall below the threshold minus a
//! hysteresis band and stay there for `clear_secs`, so a value hovering at a
//! line, or a sawtooth, gives one alert per episode, not one per tooth.
//!
//! A growth rule measures the growth that held *throughout* its window: the
//! least-squares slope over the window, capped at twice the rise of the
//! slowest of the window's three thirds (see [`Series::growth`]). A steady leak grows in
//! every third; a one-off step (a pool that filled at start-up, a burst of
//! connections) or a cache that filled and stopped leaves a third flat, and
//! does not fire. Pure code: no I/O, time is passed in.

use std::fmt;

use super::series::Series;

/// Severity of a rule's state; ordered `Ok < Warning < Critical`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Below every threshold.
    #[default]
    Ok,
    /// The warning threshold is reached.
    Warning,
    /// The critical threshold is reached.
    Critical,
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Level::Ok => "ok",
            Level::Warning => "warning",
            Level::Critical => "critical",
        })
    }
}

/// What a rule measures and the thresholds it compares against.
#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    /// Latest value >= `warning` / `critical`.
    Above {
        /// Warning threshold, if any.
        warning: Option<f64>,
        /// Critical threshold, if any.
        critical: Option<f64>,
    },
    /// Latest value / limit >= `warning` / `critical` (e.g. open fds / fd
    /// limit); the limit is given with each evaluation.
    RatioOf {
        /// Warning ratio (0.8 = 80 % of the limit), if any.
        warning: Option<f64>,
        /// Critical ratio, if any.
        critical: Option<f64>,
    },
    /// Growth over `window_secs`, in units per minute, that held
    /// throughout the window (see the module docs): >= `per_minute` is a
    /// warning (a suspected leak).
    Growth {
        /// Warning growth rate, units per minute.
        per_minute: f64,
        /// Critical growth rate, units per minute, if any.
        critical_per_minute: Option<f64>,
        /// Window the slope is fitted over, seconds.
        window_secs: f64,
    },
}

/// A named threshold rule over one metric.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    /// Rule name, e.g. `"threads_growth"`.
    pub name: String,
    /// Metric the rule watches, e.g. `"threads"`.
    pub metric: String,
    /// What is measured and compared.
    pub condition: Condition,
    /// Fraction of a (positive) threshold the quantity must fall below it
    /// before the level is left; default 0.1.
    pub hysteresis: f64,
    /// How long a raised condition must hold before the level is entered,
    /// seconds; default a tenth of the window for growth rules (a ramp that
    /// is about to stop does not fire), 0 (at once) for the others.
    pub for_secs: f64,
    /// How long the quantity must stay below the lowered line before a
    /// raised level is left, seconds; default half the window for growth
    /// rules, 0 (at once) for the others.
    pub clear_secs: f64,
}

/// Evaluation state of one rule, kept by the caller between samples.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct RuleState {
    /// Current level.
    pub level: Level,
    /// Time the current level was entered (unix seconds).
    pub since: f64,
    /// A higher level whose threshold is reached, with the time it was first
    /// reached; entered once it has held for the rule's `for_secs`.
    pub pending: Option<(Level, f64)>,
    /// Since when the quantity has been below the current level's lowered
    /// line; the level is left once that has lasted the rule's `clear_secs`.
    pub clearing: Option<f64>,
}

impl RuleState {
    /// A fresh state at `Level::Ok` since `now`.
    pub fn new(now: f64) -> Self {
        Self {
            level: Level::Ok,
            since: now,
            pending: None,
            clearing: None,
        }
    }
}

/// A level change decided by [`Rule::evaluate`].
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Transition {
    /// Name of the rule.
    pub rule: String,
    /// Metric the rule watches.
    pub metric: String,
    /// Level before.
    pub from: Level,
    /// Level after.
    pub to: Level,
    /// Value, ratio or slope (per minute) that decided.
    pub value: f64,
    /// Threshold crossed: the raised level's threshold when going up, the
    /// lowered line (threshold × (1 − hysteresis)) of the level left when
    /// going down.
    pub threshold: f64,
    /// Time of the evaluation (unix seconds).
    pub at: f64,
    /// Human sentence describing the change.
    pub message: String,
    /// What leaks and where, when the watch loop could name it (set on the
    /// way up, by the hooks' [`explain`](super::monitor::WatchHook::explain)).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finding: Option<crate::explain::Finding>,
}

impl Rule {
    /// A rule with the default hysteresis (0.1), `for_secs` (a tenth of
    /// the window of a growth rule, else 0) and `clear_secs` (half the
    /// window of a growth rule, else 0).
    pub fn new(name: impl Into<String>, metric: impl Into<String>, condition: Condition) -> Self {
        let (for_secs, clear_secs) = match condition {
            Condition::Growth { window_secs, .. } if window_secs.is_finite() => {
                let w = window_secs.max(0.0);
                (w / 10.0, w / 2.0)
            }
            _ => (0.0, 0.0),
        };
        Self {
            name: name.into(),
            metric: metric.into(),
            condition,
            hysteresis: 0.1,
            for_secs,
            clear_secs,
        }
    }

    /// Sets the hysteresis fraction.
    pub fn with_hysteresis(mut self, hysteresis: f64) -> Self {
        self.hysteresis = hysteresis;
        self
    }

    /// Sets how long a condition must hold before its level is entered.
    pub fn with_for_secs(mut self, for_secs: f64) -> Self {
        self.for_secs = for_secs;
        self
    }

    /// Sets how long the quantity must stay low before a level is left.
    pub fn with_clear_secs(mut self, clear_secs: f64) -> Self {
        self.clear_secs = clear_secs;
        self
    }

    /// Measured quantity (value, ratio, or slope per minute) and the
    /// warning / critical thresholds; `None` when it cannot be measured
    /// (empty series, missing limit, not enough history).
    fn measure(
        &self,
        series: &Series,
        limit: Option<f64>,
        now: f64,
    ) -> Option<(f64, [Option<f64>; 2])> {
        let (q, thresholds) = match self.condition {
            Condition::Above { warning, critical } => (series.last()?.1, [warning, critical]),
            Condition::RatioOf { warning, critical } => {
                let limit = limit.filter(|l| *l > 0.0 && l.is_finite())?;
                (series.last()?.1 / limit, [warning, critical])
            }
            Condition::Growth {
                per_minute,
                critical_per_minute,
                window_secs,
            } => {
                let (overall, slowest) = series.growth(window_secs, now)?;
                (
                    overall.min(SUSTAINED * slowest) * 60.0,
                    [Some(per_minute), critical_per_minute],
                )
            }
        };
        q.is_finite().then_some((q, thresholds))
    }

    /// The line a level is left below: threshold × (1 − hysteresis) for a
    /// positive threshold, the threshold itself otherwise.
    fn lowered(&self, threshold: f64) -> f64 {
        if threshold > 0.0 {
            threshold * (1.0 - self.hysteresis.clamp(0.0, 1.0))
        } else {
            threshold
        }
    }

    /// Evaluates the rule on the latest sample of `series` at time `now`,
    /// updating `state`; returns the transition if the level changed.
    ///
    /// `limit` is only used by [`Condition::RatioOf`]; with `None` or 0 the
    /// state is kept. Growth rules without enough history keep their state.
    pub fn evaluate(
        &self,
        state: &mut RuleState,
        series: &Series,
        limit: Option<f64>,
        now: f64,
    ) -> Option<Transition> {
        let (q, thresholds) = self.measure(series, limit, now)?;
        let threshold_of = |level: Level| match level {
            Level::Ok => None,
            Level::Warning => thresholds[0],
            Level::Critical => thresholds[1],
        };
        let raised = [Level::Critical, Level::Warning]
            .into_iter()
            .find(|&l| threshold_of(l).is_some_and(|t| q >= t))
            .unwrap_or(Level::Ok);
        let current = state.level;

        if raised > current {
            let pending = match state.pending {
                // Same level, or a lower one still above the current level:
                // its condition has held at least since the older start.
                Some((level, since)) if level >= raised => (raised, since),
                // Escalation: a matured lower pending level is entered now,
                // the higher one starts pending from now.
                Some((level, since)) if level > current && now - since >= self.for_secs => {
                    state.pending = Some((raised, now));
                    return Some(self.enter(state, level, q, threshold_of(level)?, now));
                }
                _ => (raised, now),
            };
            state.pending = Some(pending);
            if now - pending.1 >= self.for_secs {
                state.pending = None;
                return Some(self.enter(state, raised, q, threshold_of(raised)?, now));
            }
            return None;
        }

        state.pending = None;
        let held = |level: Level| threshold_of(level).is_some_and(|t| q >= self.lowered(t));
        if current == Level::Ok || held(current) {
            state.clearing = None;
            return None;
        }
        let since = *state.clearing.get_or_insert(now);
        if now - since < self.clear_secs {
            return None;
        }
        state.clearing = None;
        let to = [Level::Warning, Level::Ok]
            .into_iter()
            .find(|&l| l < current && (l == Level::Ok || held(l)))
            .unwrap_or(Level::Ok);
        let line = threshold_of(current).map_or(f64::NAN, |t| self.lowered(t));
        Some(self.enter(state, to, q, line, now))
    }

    fn enter(
        &self,
        state: &mut RuleState,
        to: Level,
        q: f64,
        threshold: f64,
        now: f64,
    ) -> Transition {
        let from = state.level;
        state.level = to;
        state.since = now;
        Transition {
            rule: self.name.clone(),
            metric: self.metric.clone(),
            from,
            to,
            value: q,
            threshold,
            at: now,
            message: self.message(from, to, q, threshold),
            finding: None,
        }
    }

    fn message(&self, from: Level, to: Level, q: f64, threshold: f64) -> String {
        let bytes = self.metric.ends_with("_bytes");
        let name = display_name(&self.metric);
        let fmt = |x: f64, d: usize| {
            if bytes {
                crate::explain::format_bytes_with(x, d)
            } else {
                fmt_num(x, d)
            }
        };
        // Enough decimals that the value and the line it crossed differ.
        let digits = |f: &dyn Fn(f64, usize) -> String| {
            (1..=4).find(|&d| f(q, d) != f(threshold, d)).unwrap_or(1)
        };
        let d = digits(&fmt);
        let num = |x: f64| fmt(x, d);
        let pd = digits(&fmt_pct);
        let pct = |x: f64| fmt_pct(x, pd);
        let up = to > from;
        match self.condition {
            Condition::Above { .. } if up => {
                format!("{name} at {} ({to} at {})", num(q), num(threshold))
            }
            Condition::Above { .. } => {
                format!(
                    "{name} back to {} (below {}, leaving {from}): {to}",
                    num(q),
                    num(threshold)
                )
            }
            Condition::RatioOf { .. } if up => {
                format!(
                    "{name} at {} of the limit ({to} at {})",
                    pct(q),
                    pct(threshold)
                )
            }
            Condition::RatioOf { .. } => format!(
                "{name} back to {} of the limit (below {}, leaving {from}): {to}",
                pct(q),
                pct(threshold)
            ),
            Condition::Growth { window_secs, .. } => {
                let window = fmt_window(window_secs);
                if up {
                    format!(
                        "{name} growing {}/min over {window}, throughout ({to} at {}/min): suspected leak",
                        num(q),
                        num(threshold)
                    )
                } else {
                    format!(
                        "{name} growth down to {}/min over {window} (below {}/min for {}, leaving {from}): {to}",
                        num(q),
                        num(threshold),
                        fmt_window(self.clear_secs)
                    )
                }
            }
        }
    }
}

/// The metric as messages name it.
fn display_name(metric: &str) -> String {
    match metric {
        "heap_bytes" => "heap in use".into(),
        "rss_bytes" => "RSS".into(),
        "open_fds" => "open fds".into(),
        "tokio_tasks" => "tokio tasks".into(),
        other => other
            .strip_suffix("_bytes")
            .unwrap_or(other)
            .replace('_', " "),
    }
}

/// A growth rule's rate is capped at this many times the rise of the
/// slowest third of its window: growth that did not hold throughout is no
/// trend.
const SUSTAINED: f64 = 2.0;

/// `digits` decimals (none from 1000 on, unless more are needed).
fn fmt_num(x: f64, digits: usize) -> String {
    let digits = if x.abs() >= 1000.0 {
        digits - 1
    } else {
        digits
    };
    format!("{x:.digits$}")
}

/// Percentage: whole when close to one (at `digits` 1), else `digits` − 1 decimals.
fn fmt_pct(ratio: f64, digits: usize) -> String {
    let p = ratio * 100.0;
    let digits = if digits == 1 && (p - p.round()).abs() < 0.05 {
        0
    } else {
        digits.max(2) - 1
    };
    format!("{p:.digits$}%")
}

fn fmt_window(secs: f64) -> String {
    if secs >= 3600.0 && secs % 3600.0 == 0.0 {
        format!("{}h", secs / 3600.0)
    } else if secs >= 60.0 && secs % 60.0 == 0.0 {
        format!("{}m", secs / 60.0)
    } else {
        format!("{secs}s")
    }
}

fn growth(metric: &str, per_minute: f64, window_secs: f64) -> Rule {
    let condition = Condition::Growth {
        per_minute,
        critical_per_minute: None,
        window_secs,
    };
    Rule::new(format!("{metric}_growth"), metric, condition)
}

/// The default rule set: open fds at 80 % (warning) / 95 % (critical) of the
/// fd limit, and growth rules (suspected leaks) on threads (5/min over 5 min),
/// open fds (10/min over 5 min), tokio tasks and Go goroutines (50/min over
/// 5 min each), the heap in use (`heap_bytes`: jemalloc's allocated bytes,
/// or a Go service's `HeapAlloc`; 512 KiB/min over 5 min, so a leak of
/// 1 MiB/min fires within 5 minutes) and RSS (1 MiB/min over 15 min). A
/// rule whose metric a target lacks stays `ok`. All with hysteresis 0.1;
/// growth rules hold a tenth of their window before firing and clear after
/// half of it.
pub fn default_rules() -> Vec<Rule> {
    vec![
        Rule::new(
            "open_fds_ratio",
            "open_fds",
            Condition::RatioOf {
                warning: Some(0.8),
                critical: Some(0.95),
            },
        ),
        growth("threads", 5.0, 300.0),
        growth("open_fds", 10.0, 300.0),
        growth("tokio_tasks", 50.0, 300.0),
        growth("goroutines", 50.0, 300.0),
        Rule::new(
            "heap_growth",
            "heap_bytes",
            Condition::Growth {
                per_minute: 512.0 * 1024.0,
                critical_per_minute: None,
                window_secs: 300.0,
            },
        ),
        growth("rss_bytes", 1024.0 * 1024.0, 900.0),
    ]
}

#[cfg(test)]
mod tests;
