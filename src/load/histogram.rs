//! The latency histogram of the load generator: HdrHistogram (the
//! `hdrhistogram` crate) in whole microseconds, behind a small
//! [`Duration`]-based API for the reports.

use std::fmt;
use std::time::Duration;

/// The smallest latency told apart from zero: 1 µs. A loopback answer
/// takes tens of microseconds, so finer units would only add buckets.
const LOWEST_MICROS: u64 = 1;
/// The longest latency with a bucket of its own: one hour. Requests end at
/// their timeout (10 s by default), and in paced mode a latency also holds
/// the time the generator fell behind its schedule, which a stalled server
/// can stretch to minutes; longer values are recorded as one hour.
const HIGHEST_MICROS: u64 = 3_600_000_000;
/// Two significant figures: every bucket is at most 1/128 (0.8 %) of its
/// values wide, finer than the run-to-run noise of HTTP latencies and than
/// the three digits the summary prints can tell apart above 1 ms. Three
/// figures would cost 8× the memory (185 KiB instead of 26 KiB per
/// histogram, and each worker of a run holds two), for digits no decision
/// about a service rests on.
const SIGNIFICANT_FIGURES: u8 = 2;

/// A latency histogram (HdrHistogram with two significant figures, from
/// 1 µs to one hour; longer values count as one hour).
///
/// ```
/// use std::time::Duration;
/// use leakscope::load::Histogram;
///
/// let mut h = Histogram::new();
/// for ms in 1..=100 {
///     h.record(Duration::from_millis(ms));
/// }
/// assert_eq!(h.count(), 100);
/// let p50 = h.quantile(0.5);
/// assert!(p50 >= Duration::from_millis(50) && p50 <= Duration::from_micros(50_400));
/// assert!(h.max() >= Duration::from_millis(100) && h.max() <= Duration::from_micros(100_800));
/// ```
#[derive(Clone)]
pub struct Histogram {
    hdr: hdrhistogram::Histogram<u64>,
}

impl Histogram {
    /// The relative width of the widest bucket (1/128): a quantile, the
    /// minimum or the maximum is at most this much (plus 1 µs) away from
    /// the value it stands for.
    pub const PRECISION: f64 = 1.0 / 128.0;

    /// An empty histogram (26 KiB, allocated here once; recording never
    /// allocates).
    pub fn new() -> Histogram {
        let hdr = hdrhistogram::Histogram::new_with_bounds(
            LOWEST_MICROS,
            HIGHEST_MICROS,
            SIGNIFICANT_FIGURES,
        )
        .unwrap_or_else(|e| unreachable!("constant histogram bounds are valid: {e}"));
        Histogram { hdr }
    }

    /// Adds one value; longer than an hour counts as an hour.
    pub fn record(&mut self, value: Duration) {
        let micros = u64::try_from(value.as_micros()).unwrap_or(u64::MAX);
        self.hdr.saturating_record(micros.min(HIGHEST_MICROS));
    }

    /// Number of values recorded.
    pub fn count(&self) -> u64 {
        self.hdr.len()
    }

    /// True when nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.hdr.is_empty()
    }

    /// The smallest value, to the histogram's precision (zero when empty).
    pub fn min(&self) -> Duration {
        self.micros(|h| h.min())
    }

    /// The largest value: the upper end of its bucket (zero when empty).
    pub fn max(&self) -> Duration {
        self.micros(|h| h.max())
    }

    /// The mean, to the histogram's precision (zero when empty).
    pub fn mean(&self) -> Duration {
        if self.is_empty() {
            return Duration::ZERO;
        }
        Duration::from_secs_f64(self.hdr.mean() / 1e6)
    }

    /// The value at quantile `q` (0.5 for the median, 0.99 for p99): the
    /// upper end of the bucket of the value of rank `ceil(q × count)`, so
    /// never below the true value and at most [`Histogram::PRECISION`]
    /// above it. `q` is clamped to 0..=1 (NaN reads as 0); `q = 0` gives
    /// the minimum. Zero when empty.
    pub fn quantile(&self, q: f64) -> Duration {
        let q = if q.is_nan() { 0.0 } else { q.clamp(0.0, 1.0) };
        self.micros(|h| h.value_at_quantile(q))
    }

    /// The share of values at or above `value` (0 when empty), to the
    /// histogram's precision.
    pub fn share_at_least(&self, value: Duration) -> f64 {
        if self.is_empty() {
            return 0.0;
        }
        let micros = u64::try_from(value.as_micros()).unwrap_or(u64::MAX);
        let at_least = self.hdr.count_between(micros, HIGHEST_MICROS);
        at_least as f64 / self.count() as f64
    }

    /// Adds the values of `other`, as if they had been recorded here.
    pub fn merge(&mut self, other: &Histogram) {
        // Both have the same bounds, so adding cannot fail.
        let _ = self.hdr.add(&other.hdr);
    }

    /// The HdrHistogram underneath, in microseconds, for what this API
    /// does not offer (iteration, other statistics).
    pub fn hdr(&self) -> &hdrhistogram::Histogram<u64> {
        &self.hdr
    }

    fn micros(&self, read: impl Fn(&hdrhistogram::Histogram<u64>) -> u64) -> Duration {
        if self.is_empty() {
            return Duration::ZERO;
        }
        Duration::from_micros(read(&self.hdr))
    }
}

impl Default for Histogram {
    fn default() -> Histogram {
        Histogram::new()
    }
}

impl fmt::Debug for Histogram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Histogram")
            .field("count", &self.count())
            .field("min", &self.min())
            .field("p50", &self.quantile(0.5))
            .field("p99", &self.quantile(0.99))
            .field("max", &self.max())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const US: Duration = Duration::from_micros(1);

    /// `got` is the quantile reported for a true value `want`: never below,
    /// at most one bucket (1/128, or 1 µs) above.
    fn assert_close(got: Duration, want: Duration) {
        let slack = want.mul_f64(Histogram::PRECISION) + US;
        assert!(
            got >= want && got <= want + slack,
            "got {got:?}, want {want:?} (+{slack:?})"
        );
    }

    #[test]
    fn quantiles_of_a_uniform_distribution() {
        let mut h = Histogram::new();
        for us in 1..=10_000u64 {
            h.record(Duration::from_micros(us));
        }
        assert_eq!(h.count(), 10_000);
        assert_eq!(h.min(), US);
        assert_close(h.max(), Duration::from_millis(10));
        let mean = h.mean().as_secs_f64();
        assert!(
            (mean / 5_000.5e-6 - 1.0).abs() < Histogram::PRECISION,
            "{mean}"
        );
        for (q, want_us) in [(0.5, 5_000), (0.9, 9_000), (0.99, 9_900), (0.001, 10)] {
            assert_close(h.quantile(q), Duration::from_micros(want_us));
        }
        assert_eq!(h.quantile(0.0), US);
        assert_eq!(h.quantile(1.0), h.max());
        assert_eq!(h.quantile(7.0), h.max());
        assert_eq!(h.quantile(f64::NAN), h.min());
    }

    #[test]
    fn quantiles_and_shares_of_a_skewed_distribution() {
        // 90 fast answers of 200 µs, 9 of 40 ms, one of 2.5 s.
        let mut h = Histogram::new();
        for (value, n) in [
            (Duration::from_micros(200), 90),
            (Duration::from_millis(40), 9),
            (Duration::from_millis(2_500), 1),
        ] {
            for _ in 0..n {
                h.record(value);
            }
        }
        assert_close(h.quantile(0.5), Duration::from_micros(200));
        assert_close(h.quantile(0.9), Duration::from_micros(200));
        assert_close(h.quantile(0.91), Duration::from_millis(40));
        assert_close(h.quantile(0.99), Duration::from_millis(40));
        assert_close(h.quantile(0.999), Duration::from_millis(2_500));
        assert_eq!(h.share_at_least(Duration::from_millis(1)), 0.10);
        assert_eq!(h.share_at_least(Duration::from_secs(1)), 0.01);
        assert_eq!(h.share_at_least(Duration::ZERO), 1.0);
        assert_eq!(h.share_at_least(Duration::from_secs(3)), 0.0);
    }

    #[test]
    fn sub_microsecond_and_beyond_range_values() {
        let mut h = Histogram::new();
        h.record(Duration::from_nanos(300));
        h.record(Duration::from_secs(7_200));
        assert_eq!(h.count(), 2);
        assert_eq!(h.min(), Duration::ZERO);
        // Two hours count as one (to the last bucket's width).
        assert_close(h.max(), Duration::from_secs(3_600));
        assert_eq!(h.share_at_least(Duration::from_secs(60)), 0.5);
    }

    #[test]
    fn merge_equals_recording_everything_in_one() {
        let (mut a, mut b, mut all) = (Histogram::new(), Histogram::new(), Histogram::new());
        for i in 0..3_000u64 {
            let v = Duration::from_micros(i * i % 70_001 + 3);
            all.record(v);
            if i % 3 == 0 { &mut a } else { &mut b }.record(v);
        }
        a.merge(&b);
        assert_eq!(a.count(), all.count());
        assert_eq!(
            (a.min(), a.max(), a.mean()),
            (all.min(), all.max(), all.mean())
        );
        assert_eq!(a.hdr(), all.hdr());
        for q in [0.1, 0.5, 0.9, 0.99, 1.0] {
            assert_eq!(a.quantile(q), all.quantile(q), "q {q}");
        }
        let mut empty = Histogram::new();
        empty.merge(&all);
        assert_eq!((empty.count(), empty.min()), (all.count(), all.min()));
    }

    #[test]
    fn empty_histogram_reports_zeros() {
        let h = Histogram::default();
        assert!(h.is_empty());
        assert_eq!(h.count(), 0);
        for d in [h.min(), h.max(), h.mean(), h.quantile(0.5), h.quantile(1.0)] {
            assert_eq!(d, Duration::ZERO);
        }
        assert_eq!(h.share_at_least(Duration::ZERO), 0.0);
        assert!(format!("{h:?}").contains("count: 0"));
    }
}
