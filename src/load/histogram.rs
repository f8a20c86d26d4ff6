//! The latency histogram of the load generator: log-linear buckets in the
//! style of HdrHistogram, with two significant digits from 1 µs to about
//! 67 s, plus the exact count, minimum, maximum and sum.
//!
//! Values are bucketed in whole microseconds. Below 128 µs every
//! microsecond has its own bucket; above, each power of two is split into
//! 128 equal buckets, so a bucket is at most 1/128 (0.8 %) of its values
//! wide. That is 2,560 counters (20 KiB) per histogram, allocated once by
//! [`Histogram::new`]; [`Histogram::record`] never allocates.

use std::fmt;
use std::time::Duration;

/// Bits of the linear part of a bucket index: 128 buckets per power of two.
const SUB_BITS: u32 = 7;
/// Buckets per power of two.
const SUB: u64 = 1 << SUB_BITS;
/// The highest power of two with buckets of its own: 2^25 µs ≈ 33.5 s, so
/// its buckets reach 2^26 µs ≈ 67.1 s. Longer values go to the last bucket.
const TOP_POWER: u32 = 25;
/// Number of buckets.
const BUCKETS: usize = (SUB + (TOP_POWER - SUB_BITS + 1) as u64 * SUB) as usize;

/// A latency histogram with two significant digits from 1 µs to about 67 s
/// (longer values share the last bucket), and exact count, min, max and
/// mean.
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
/// assert_eq!(h.max(), Duration::from_millis(100));
/// let p50 = h.quantile(0.5);
/// assert!(p50 >= Duration::from_millis(50) && p50 <= Duration::from_micros(50_400));
/// ```
#[derive(Clone)]
pub struct Histogram {
    counts: Box<[u64]>,
    count: u64,
    min: Duration,
    max: Duration,
    sum_nanos: u128,
}

impl Histogram {
    /// The relative width of the widest bucket (1/128): a quantile is at
    /// most this much (plus 1 µs) above the value it stands for.
    pub const PRECISION: f64 = 1.0 / SUB as f64;

    /// An empty histogram.
    pub fn new() -> Histogram {
        Histogram {
            counts: vec![0; BUCKETS].into_boxed_slice(),
            count: 0,
            min: Duration::ZERO,
            max: Duration::ZERO,
            sum_nanos: 0,
        }
    }

    /// Adds one value.
    pub fn record(&mut self, value: Duration) {
        let micros = u64::try_from(value.as_micros()).unwrap_or(u64::MAX);
        self.counts[bucket_of(micros)] += 1;
        if self.count == 0 || value < self.min {
            self.min = value;
        }
        if value > self.max {
            self.max = value;
        }
        self.count += 1;
        self.sum_nanos += value.as_nanos();
    }

    /// Number of values recorded.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// True when nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The smallest value, exactly (zero when empty).
    pub fn min(&self) -> Duration {
        self.min
    }

    /// The largest value, exactly (zero when empty).
    pub fn max(&self) -> Duration {
        self.max
    }

    /// The mean, exactly up to a nanosecond (zero when empty).
    pub fn mean(&self) -> Duration {
        match self.count {
            0 => Duration::ZERO,
            n => duration_from_nanos(self.sum_nanos / u128::from(n)),
        }
    }

    /// The value at quantile `q` (0.5 for the median, 0.99 for p99): the
    /// upper bound of the bucket that holds the value of rank
    /// `ceil(q × count)`, no more than [`Histogram::max`]. So it is never
    /// below the true value and at most [`Histogram::PRECISION`] above it.
    /// `q` is clamped to 0..=1; `q = 0` gives the minimum. Zero when empty.
    pub fn quantile(&self, q: f64) -> Duration {
        if self.count == 0 {
            return Duration::ZERO;
        }
        let q = if q.is_nan() { 0.0 } else { q.clamp(0.0, 1.0) };
        if q == 0.0 {
            return self.min;
        }
        // Float rounding can put `q × count` a hair above an integer.
        let rank = ((q * self.count as f64) - 1e-9)
            .ceil()
            .clamp(1.0, self.count as f64) as u64;
        let mut seen = 0;
        for (index, &n) in self.counts.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return upper_bound(index).min(self.max);
            }
        }
        self.max
    }

    /// Adds the values of `other`, as if they had been recorded here.
    pub fn merge(&mut self, other: &Histogram) {
        if other.count == 0 {
            return;
        }
        for (mine, theirs) in self.counts.iter_mut().zip(other.counts.iter()) {
            *mine += theirs;
        }
        if self.count == 0 || other.min < self.min {
            self.min = other.min;
        }
        self.max = self.max.max(other.max);
        self.count += other.count;
        self.sum_nanos += other.sum_nanos;
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
            .field("count", &self.count)
            .field("min", &self.min)
            .field("p50", &self.quantile(0.5))
            .field("p99", &self.quantile(0.99))
            .field("max", &self.max)
            .finish_non_exhaustive()
    }
}

fn duration_from_nanos(nanos: u128) -> Duration {
    let secs = u64::try_from(nanos / 1_000_000_000).unwrap_or(u64::MAX);
    Duration::new(secs, (nanos % 1_000_000_000) as u32)
}

/// The bucket of a value in microseconds.
fn bucket_of(micros: u64) -> usize {
    if micros < SUB {
        return micros as usize;
    }
    let power = 63 - micros.leading_zeros(); // >= SUB_BITS
    let shift = power - SUB_BITS;
    let sub = (micros >> shift) - SUB; // the 7 bits after the leading one
    let index = SUB + u64::from(shift) * SUB + sub;
    (index as usize).min(BUCKETS - 1)
}

/// The exclusive upper bound of a bucket: every value in it is below.
/// The last bucket also holds everything longer, so it has none.
fn upper_bound(index: usize) -> Duration {
    if index == BUCKETS - 1 {
        return Duration::MAX;
    }
    let index = index as u64;
    let micros = if index < SUB {
        index + 1
    } else {
        let shift = (index - SUB) / SUB;
        let sub = (index - SUB) % SUB;
        (SUB + sub + 1) << shift
    };
    Duration::from_micros(micros)
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
    fn buckets_are_contiguous_and_narrow() {
        // Every bucket starts where the previous one ended, and is at most
        // 1/128 of its values wide.
        let mut lower = 0u64;
        for index in 0..BUCKETS - 1 {
            let upper = upper_bound(index).as_micros() as u64;
            assert_eq!(bucket_of(lower), index, "lower bound of bucket {index}");
            assert_eq!(bucket_of(upper - 1), index, "last value of bucket {index}");
            assert!(
                upper - lower == 1 || (upper - lower) * SUB <= lower,
                "{index}"
            );
            lower = upper;
        }
        assert_eq!(bucket_of(lower), BUCKETS - 1);
        assert_eq!(bucket_of(u64::MAX), BUCKETS - 1);
        assert!(Duration::from_micros(lower) > Duration::from_secs(60));
    }

    #[test]
    fn quantiles_of_a_uniform_distribution() {
        let mut h = Histogram::new();
        for us in 1..=10_000u64 {
            h.record(Duration::from_micros(us));
        }
        assert_eq!(h.count(), 10_000);
        assert_eq!(h.min(), US);
        assert_eq!(h.max(), Duration::from_millis(10));
        assert_eq!(h.mean(), Duration::from_nanos(5_000_500));
        for (q, want_us) in [(0.5, 5_000), (0.9, 9_000), (0.99, 9_900), (0.001, 10)] {
            assert_close(h.quantile(q), Duration::from_micros(want_us));
        }
        assert_eq!(h.quantile(0.0), US);
        assert_eq!(h.quantile(1.0), h.max());
        assert_eq!(h.quantile(7.0), h.max());
        assert_eq!(h.quantile(f64::NAN), h.min());
    }

    #[test]
    fn quantiles_of_a_skewed_distribution() {
        // 90 fast answers of 200 µs, 9 of 40 ms, one of 2.5 s.
        let mut h = Histogram::new();
        let mut values = vec![Duration::from_micros(200); 90];
        values.extend([Duration::from_millis(40); 9]);
        values.push(Duration::from_millis(2_500));
        for v in &values {
            h.record(*v);
        }
        assert_close(h.quantile(0.5), Duration::from_micros(200));
        assert_close(h.quantile(0.9), Duration::from_micros(200));
        assert_close(h.quantile(0.91), Duration::from_millis(40));
        assert_close(h.quantile(0.99), Duration::from_millis(40));
        assert_eq!(h.quantile(0.999), Duration::from_millis(2_500));
        let sum: Duration = values.iter().sum();
        assert_eq!(h.mean(), sum / 100);
    }

    #[test]
    fn min_and_max_are_exact_and_quantiles_never_exceed_max() {
        let mut h = Histogram::new();
        h.record(Duration::from_nanos(50_123_456));
        h.record(Duration::from_nanos(50_123_999));
        assert_eq!(h.min(), Duration::from_nanos(50_123_456));
        assert_eq!(h.max(), Duration::from_nanos(50_123_999));
        // The bucket reaches past both values; the quantile stops at max.
        assert_eq!(h.quantile(0.5), h.max());
        // Sub-microsecond and beyond-range values.
        h.record(Duration::from_nanos(300));
        h.record(Duration::from_secs(600));
        assert_eq!(h.min(), Duration::from_nanos(300));
        assert_eq!(h.quantile(0.1), US);
        assert_eq!(h.quantile(1.0), Duration::from_secs(600));
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
        assert_eq!(a.counts, all.counts);
        for q in [0.1, 0.5, 0.9, 0.99, 1.0] {
            assert_eq!(a.quantile(q), all.quantile(q), "q {q}");
        }
        // Merging into or from an empty histogram.
        let mut empty = Histogram::new();
        empty.merge(&all);
        assert_eq!((empty.count(), empty.min()), (all.count(), all.min()));
        all.merge(&Histogram::new());
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
        assert!(format!("{h:?}").contains("count: 0"));
    }
}
