//! Threshold rules over resource counters, evaluated on each new sample.
//!
//! A [`Rule`] watches one metric's [`Series`] and moves a [`RuleState`]
//! through ok → warning → critical → ok. Raising needs the measured quantity
//! (value, ratio to a limit, or growth slope) to reach a threshold and hold it
//! for `for_secs`; lowering is immediate but only once the quantity falls
//! below the threshold minus a hysteresis band, so a value hovering at a line
//! does not flap. Pure code: no I/O, time is passed in.

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
    /// Least-squares slope over `window_secs`, in units per minute:
    /// >= `per_minute` is a warning (a suspected leak).
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
    /// seconds; default 0 (at once).
    pub for_secs: f64,
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
}

impl RuleState {
    /// A fresh state at `Level::Ok` since `now`.
    pub fn new(now: f64) -> Self {
        Self {
            level: Level::Ok,
            since: now,
            pending: None,
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
}

impl Rule {
    /// A rule with the default hysteresis (0.1) and `for_secs` (0).
    pub fn new(name: impl Into<String>, metric: impl Into<String>, condition: Condition) -> Self {
        Self {
            name: name.into(),
            metric: metric.into(),
            condition,
            hysteresis: 0.1,
            for_secs: 0.0,
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
            } => (
                series.slope(window_secs, now)? * 60.0,
                [Some(per_minute), critical_per_minute],
            ),
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
            return None;
        }
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
        }
    }

    fn message(&self, from: Level, to: Level, q: f64, threshold: f64) -> String {
        let (name, bytes) = match self.metric.strip_suffix("_bytes") {
            Some(stem) => (stem.replace('_', " "), true),
            None => (self.metric.replace('_', " "), false),
        };
        let fmt = |x: f64, d: usize| {
            if bytes {
                fmt_bytes(x, d)
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
                    let what = if to == Level::Critical {
                        "critical at"
                    } else {
                        "limit"
                    };
                    format!(
                        "{name} grow by {}/min over {window} ({what} {}/min): suspected leak",
                        num(q),
                        num(threshold)
                    )
                } else {
                    format!(
                        "{name} growth down to {}/min over {window} (below {}/min, leaving {from}): {to}",
                        num(q),
                        num(threshold)
                    )
                }
            }
        }
    }
}

/// `digits` decimals (none from 1000 on, unless more are needed).
fn fmt_num(x: f64, digits: usize) -> String {
    let digits = if x.abs() >= 1000.0 {
        digits - 1
    } else {
        digits
    };
    format!("{x:.digits$}")
}

fn fmt_bytes(x: f64, digits: usize) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = x;
    let mut unit = 0;
    while v.abs() >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.digits$} {}", UNITS[unit])
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
/// 5 min each; a rule whose metric a target lacks stays `ok`) and RSS
/// (1 MiB/min over 15 min); all with hysteresis 0.1 and no `for_secs`.
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
        growth("rss_bytes", 1024.0 * 1024.0, 900.0),
    ]
}

#[cfg(test)]
mod tests;
