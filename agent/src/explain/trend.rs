//! Is a quantity still growing? A classification of one series of
//! snapshots that knows how noisy sampled estimates are.
//!
//! A heap profile does not count bytes, it samples them: at sampling period
//! `P` (jemalloc's `lg_prof_sample`, 512 KiB by default) an estimate of `B`
//! bytes rests on about `B / P` sampled objects. A change between two
//! snapshots is then uncertain by the sampling of the bytes that moved in
//! between: the bytes that grew, and twice the bytes that were freed and
//! replaced (a cache that keeps its size but renews its entries is
//! re-sampled as it goes). With `F` the bytes freed over an interval (from
//! the cumulative `alloc_space`: allocated − change) and `C` the change, the
//! standard error of `C` is taken as `√(P·(|C| + 2F) + P²)`; the `P²` floor
//! is one sample's worth. Counts that are not sampled (threads, tasks, fds:
//! `period` ≤ 1) have no such noise.
//!
//! # Rules
//!
//! With the points oldest first, `max` their largest value, `C` the
//! least-squares change over all of them (slope × span) and `Cr` the same
//! over the *recent half* (the last ⌈n/2⌉ points, at least 2), the first
//! rule that holds wins:
//!
//! | # | rule | trend |
//! |---|------|-------|
//! | 1 | `max ≤ 0` | Stable |
//! | 2 | the last value is under half of `max` | Freed |
//! | 3 | the values stay within 10% of `max` | Stable |
//! | 4 | `|C|` is within 10% of `max` or within [`Z`] standard errors | Stable |
//! | 5 | `C < 0` | Freed |
//! | 6 | `Cr` is over [`Z`] standard errors of its own, the recent slope is at least half the overall slope, and the last value is above the one before (when growth at the recent rate would have shown in one interval: six samples' worth) | Growing |
//! | 7 | otherwise: it grew, then levelled off (a cache or pool filling up) | Saturating |
//!
//! With 2 points: rules 1 to 5, then Growing when the change is above the
//! noise, else Stable. With 0 or 1 point: Stable.
//!
//! Rule 6's last condition makes a series that stopped moving Saturating
//! from the moment it is flat (two snapshots at one level), and rule 6's
//! noise bound keeps a full cache whose entries are renewed from being
//! called Growing by sampling noise. The price is patience, set by [`Z`]:
//! in simulations of jemalloc's sampling at its default 512 KiB (the
//! tests), a leak of 1 MiB/min is called Growing over 30 one-minute
//! snapshots in 99.3–99.5% of runs, one of 10 MiB/min within 5 snapshots
//! in all, and an 8 MiB cache renewing all its entries every 1 or 5
//! minutes never, in 2,000 runs of an hour each. Callers that must name a
//! site sooner report how sure they are from [`Fit`]'s changes and noise.

use serde::{Deserialize, Serialize};

/// How many standard errors a change must exceed to count (rules 4 and 6).
pub const Z: f64 = 3.5;
/// Share of the peak under which a change is no trend (rules 3 and 4).
const FLAT_WITHIN: f64 = 0.1;
/// Share of its peak under which a last value counts as released (rule 2).
const FREED_BELOW: f64 = 0.5;
/// Expected samples (or units, for exact counts) of growth over the last
/// snapshot interval from which a flat last interval is believed (rule 6).
const TAIL_SAMPLES: f64 = 6.0;
/// A recent slope at least this share of the overall one is still growing.
const STILL_GROWING: f64 = 0.5;

/// One snapshot of the quantity.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Point {
    /// Time, Unix seconds.
    pub t: f64,
    /// The value (in-use bytes, a count, ...).
    pub value: f64,
    /// Cumulative amount allocated so far (`alloc_space`), when known: it
    /// tells how much was freed and replaced between snapshots, which is
    /// where the noise of a sampled estimate comes from.
    pub allocated: Option<f64>,
}

impl Point {
    /// A point with no allocation total.
    pub fn new(t: f64, value: f64) -> Point {
        Point {
            t,
            value,
            allocated: None,
        }
    }
}

/// How a quantity moved over the snapshots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trend {
    /// Still growing, clearly above the noise: the leak pattern.
    Growing,
    /// Grew, then levelled off (a bounded cache or pool filling up).
    Saturating,
    /// About the same throughout, or no change above the noise.
    Stable,
    /// Went back down (released).
    Freed,
}

impl Trend {
    /// The trend in one word, as pages and messages show it.
    pub fn as_str(self) -> &'static str {
        match self {
            Trend::Growing => "growing",
            Trend::Saturating => "saturating",
            Trend::Stable => "stable",
            Trend::Freed => "freed",
        }
    }
}

impl std::fmt::Display for Trend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What [`classify`] found.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Fit {
    /// The classification.
    pub trend: Trend,
    /// Least-squares change over all the points (slope × span).
    pub change: f64,
    /// Its standard error from sampling (0 for exact counts).
    pub noise: f64,
    /// Least-squares change over the recent half.
    pub recent_change: f64,
    /// Its standard error.
    pub recent_noise: f64,
    /// Slope over the recent half, per second.
    pub recent_per_second: f64,
}

impl Fit {
    fn flat(trend: Trend) -> Fit {
        Fit {
            trend,
            change: 0.0,
            noise: 0.0,
            recent_change: 0.0,
            recent_noise: 0.0,
            recent_per_second: 0.0,
        }
    }
}

/// Classifies `points` (oldest first; unsorted input is sorted by time)
/// estimated at sampling period `period` (in the value's unit; 1 or less for
/// exact counts), by the rules of the [module docs](self).
pub fn classify(points: &[Point], period: f64) -> Fit {
    classify_z(points, period, Z)
}

pub(crate) fn classify_z(points: &[Point], period: f64, z: f64) -> Fit {
    let mut points: Vec<Point> = points
        .iter()
        .copied()
        .filter(|p| p.t.is_finite() && p.value.is_finite())
        .collect();
    points.sort_by(|a, b| a.t.total_cmp(&b.t));
    let n = points.len();
    if n < 2 {
        return Fit::flat(Trend::Stable);
    }
    let max = points.iter().map(|p| p.value).fold(f64::MIN, f64::max);
    let min = points.iter().map(|p| p.value).fold(f64::MAX, f64::min);
    let last = points[n - 1].value;
    if max <= 0.0 {
        return Fit::flat(Trend::Stable);
    }
    if last < FREED_BELOW * max {
        return Fit::flat(Trend::Freed);
    }
    if max - min <= FLAT_WITHIN * max {
        return Fit::flat(Trend::Stable);
    }
    let (slope, change) = fitted(&points);
    let noise = noise_of(&points, change, period);
    let recent = &points[n - n.div_ceil(2).max(2).min(n)..];
    let (recent_slope, recent_change) = fitted(recent);
    let recent_noise = noise_of(recent, recent_change, period);
    let fit = |trend| Fit {
        trend,
        change,
        noise,
        recent_change,
        recent_noise,
        recent_per_second: recent_slope,
    };
    if !change.is_finite() || change.abs() <= (FLAT_WITHIN * max).max(z * noise) {
        return fit(Trend::Stable);
    }
    if change < 0.0 {
        return fit(Trend::Freed);
    }
    if n == 2 {
        return fit(Trend::Growing);
    }
    // A flat last interval says the growth stopped, when growth at the
    // recent rate would have shown in it: several samples' worth (or, for
    // exact counts, several units).
    let before = points[n - 2];
    let expected_tail = recent_slope * (points[n - 1].t - before.t);
    let tail_tells = expected_tail >= TAIL_SAMPLES * period.max(1.0);
    let moving_at_the_end = !tail_tells || last > before.value;
    if recent_change > z * recent_noise
        && recent_slope >= STILL_GROWING * slope
        && moving_at_the_end
    {
        fit(Trend::Growing)
    } else {
        fit(Trend::Saturating)
    }
}

/// Least-squares slope (per second) and fitted change (slope × span).
fn fitted(points: &[Point]) -> (f64, f64) {
    let n = points.len() as f64;
    let (Some(first), Some(last)) = (points.first(), points.last()) else {
        return (0.0, 0.0);
    };
    let t0 = first.t;
    let mean_t = points.iter().map(|p| p.t - t0).sum::<f64>() / n;
    let mean_y = points.iter().map(|p| p.value).sum::<f64>() / n;
    let (mut sxy, mut sxx) = (0.0, 0.0);
    for p in points {
        let dt = p.t - t0 - mean_t;
        sxy += dt * (p.value - mean_y);
        sxx += dt * dt;
    }
    let slope = sxy / sxx;
    if !slope.is_finite() {
        return (0.0, 0.0);
    }
    (slope, slope * (last.t - first.t))
}

/// Standard error of a `change` over `points` sampled at `period`.
fn noise_of(points: &[Point], change: f64, period: f64) -> f64 {
    if period <= 1.0 {
        return 0.0;
    }
    let (first, last) = (points[0], points[points.len() - 1]);
    let freed = match (first.allocated, last.allocated) {
        (Some(a0), Some(a1)) => (a1 - a0 - change).max(0.0),
        // Without allocation totals, assume the worst: everything there may
        // have been renewed.
        _ => points.iter().map(|p| p.value).fold(0.0, f64::max),
    };
    (period * (change.abs() + 2.0 * freed) + period * period).sqrt()
}

#[cfg(test)]
mod tests;
