//! Bounded time series of one resource counter (threads, open fds, RSS...).
//!
//! Pure data structure: points are `(unix seconds, value)` pairs pushed in
//! time order; the oldest point is dropped once the capacity is reached. It
//! also computes the least-squares slope over a recent window, which the
//! growth rules in [`super::rules`] use to spot leaks.

use std::collections::VecDeque;

/// A bounded, time-ordered series of `(t, value)` points, `t` in unix seconds.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    capacity: usize,
    points: VecDeque<(f64, f64)>,
}

impl Series {
    /// Creates an empty series holding at most `capacity` points (at least 1).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self {
            capacity,
            points: VecDeque::with_capacity(capacity.min(4096)),
        }
    }

    /// Maximum number of points kept.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Appends a point, dropping the oldest one past capacity.
    ///
    /// A point whose `t` is not strictly after the last point's, or whose `t`
    /// or `v` is not finite, is ignored. Returns whether the point was kept.
    pub fn push(&mut self, t: f64, v: f64) -> bool {
        if !t.is_finite() || !v.is_finite() {
            return false;
        }
        if self.points.back().is_some_and(|&(last_t, _)| t <= last_t) {
            return false;
        }
        if self.points.len() == self.capacity {
            self.points.pop_front();
        }
        self.points.push_back((t, v));
        true
    }

    /// The most recent point, if any.
    pub fn last(&self) -> Option<(f64, f64)> {
        self.points.back().copied()
    }

    /// All points, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = (f64, f64)> + '_ {
        self.points.iter().copied()
    }

    /// Number of points held.
    pub fn len(&self) -> usize {
        self.points.len()
    }

    /// Whether the series holds no point.
    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }

    /// Points with `t >= since_t`, oldest first.
    pub fn window(&self, since_t: f64) -> impl Iterator<Item = (f64, f64)> + '_ {
        let start = self.points.partition_point(|&(t, _)| t < since_t);
        self.points.range(start..).copied()
    }

    /// Least-squares slope, in value units per second, over the points with
    /// `t >= now - window_secs`.
    ///
    /// Returns `None` with fewer than 3 such points, or when they span less
    /// than half the window (not enough history to call it a trend).
    pub fn slope(&self, window_secs: f64, now: f64) -> Option<f64> {
        let points = self.trend_window(window_secs, now)?;
        least_squares(&points)
    }

    /// The slope over the window (as [`Series::slope`]) and the slowest
    /// rise of its three thirds (by time), both in value units per second:
    /// how fast it grew, and whether it grew *throughout*. A third's rise is
    /// the median of its second half minus the median of its first half,
    /// over half the third's span: medians, so the tail of a ramp that
    /// stopped early in a third does not count as growth there. A step or a
    /// ramp that stopped leaves a third flat; a steady leak does not. `None`
    /// as for [`Series::slope`], or when a third has fewer than four points.
    pub fn growth(&self, window_secs: f64, now: f64) -> Option<(f64, f64)> {
        let points = self.trend_window(window_secs, now)?;
        let overall = least_squares(&points)?;
        let (first, last) = (points[0].0, points[points.len() - 1].0);
        let third = (last - first) / 3.0;
        let mut slowest = f64::INFINITY;
        for k in 0..3 {
            let (from, to) = (first + third * k as f64, first + third * (k + 1) as f64);
            let part: Vec<f64> = points
                .iter()
                .filter(|&&(t, _)| t >= from && (t < to || (k == 2 && t <= to)))
                .map(|&(_, v)| v)
                .collect();
            if part.len() < 4 {
                return None;
            }
            let (early, late) = part.split_at(part.len() / 2);
            let rise = median(late) - median(early);
            slowest = slowest.min(rise / (third / 2.0));
        }
        slowest.is_finite().then_some((overall, slowest))
    }

    /// The points of the window, when they are enough for a trend.
    fn trend_window(&self, window_secs: f64, now: f64) -> Option<Vec<(f64, f64)>> {
        if !window_secs.is_finite() || !now.is_finite() || window_secs < 0.0 {
            return None;
        }
        let points: Vec<(f64, f64)> = self.window(now - window_secs).collect();
        let (first, last) = (points.first()?.0, points.last()?.0);
        if points.len() < 3 || last - first < window_secs / 2.0 {
            return None;
        }
        Some(points)
    }
}

/// The median of `values` (not empty).
fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Least-squares slope of `points`; `None` when their times do not vary.
fn least_squares(points: &[(f64, f64)]) -> Option<f64> {
    let n = points.len() as f64;
    if points.len() < 2 {
        return None;
    }
    // Centre on the means for numerical stability with unix timestamps.
    let mean_t = points.iter().map(|p| p.0).sum::<f64>() / n;
    let mean_v = points.iter().map(|p| p.1).sum::<f64>() / n;
    let (mut sxy, mut sxx) = (0.0, 0.0);
    for &(t, v) in points {
        let dt = t - mean_t;
        sxy += dt * (v - mean_v);
        sxx += dt * dt;
    }
    (sxx > 0.0).then(|| sxy / sxx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacity_bounds_the_series_dropping_oldest() {
        let mut s = Series::new(3);
        for i in 0..5 {
            assert!(s.push(i as f64, i as f64 * 10.0));
        }
        assert_eq!(s.len(), 3);
        assert_eq!(
            s.iter().collect::<Vec<_>>(),
            vec![(2.0, 20.0), (3.0, 30.0), (4.0, 40.0)]
        );
        assert_eq!(s.last(), Some((4.0, 40.0)));
    }

    #[test]
    fn push_ignores_points_not_after_the_last() {
        let mut s = Series::new(10);
        assert!(s.push(10.0, 1.0));
        assert!(!s.push(10.0, 2.0));
        assert!(!s.push(9.0, 3.0));
        assert!(!s.push(f64::NAN, 3.0));
        assert!(!s.push(11.0, f64::INFINITY));
        assert_eq!(s.len(), 1);
        assert_eq!(s.last(), Some((10.0, 1.0)));
    }

    #[test]
    fn window_yields_points_since_t() {
        let mut s = Series::new(10);
        for i in 0..6 {
            s.push(i as f64, i as f64);
        }
        let w: Vec<_> = s.window(3.0).map(|p| p.0).collect();
        assert_eq!(w, vec![3.0, 4.0, 5.0]);
        assert_eq!(s.window(100.0).count(), 0);
    }

    #[test]
    fn slope_of_exact_line_is_exact() {
        let mut s = Series::new(1000);
        let t0 = 1_700_000_000.0;
        for i in 0..600 {
            s.push(t0 + i as f64, 2.5 * i as f64 + 7.0);
        }
        let now = t0 + 599.0;
        let slope = s.slope(300.0, now).unwrap();
        assert!((slope - 2.5).abs() < 1e-9, "slope {slope}");
        let slope = s.slope(600.0, now).unwrap();
        assert!((slope - 2.5).abs() < 1e-9, "slope {slope}");
    }

    #[test]
    fn slope_is_none_with_too_little_history() {
        let mut s = Series::new(100);
        s.push(0.0, 1.0);
        s.push(100.0, 2.0);
        assert_eq!(s.slope(300.0, 100.0), None, "only 2 points");
        s.push(140.0, 3.0);
        // 3 points spanning 140 s < 150 s (half of the 300 s window).
        assert_eq!(s.slope(300.0, 140.0), None);
        s.push(150.0, 4.0);
        assert!(s.slope(300.0, 150.0).is_some());
        // Old points fall out of the window: only 150 is left in [200, 500].
        assert_eq!(s.slope(300.0, 500.0), None);
    }

    #[test]
    fn growth_sees_a_steady_rise_throughout_and_a_step_in_one_third() {
        let t0 = 1_700_000_000.0;
        let mut steady = Series::new(1000);
        let mut step = Series::new(1000);
        for i in 0..=300 {
            steady.push(t0 + i as f64, 0.5 * i as f64);
            step.push(t0 + i as f64, if i < 150 { 10.0 } else { 40.0 });
        }
        let now = t0 + 300.0;
        let (overall, slowest) = steady.growth(300.0, now).unwrap();
        assert!((overall - 0.5).abs() < 1e-9, "{overall}");
        assert!((slowest - 0.5).abs() < 0.01, "{slowest}");
        // The step makes the whole-window slope large, but the first and
        // last thirds are flat.
        let (overall, slowest) = step.growth(300.0, now).unwrap();
        assert!(overall > 0.1, "{overall}");
        assert!(slowest.abs() < 1e-9, "{slowest}");
        // Not enough history: as for slope.
        assert_eq!(steady.growth(300.0, t0 + 800.0), None);
    }
}
