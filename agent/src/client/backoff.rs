//! Retry pacing for alert delivery: exponential backoff with full jitter, a
//! circuit breaker, and a tiny xorshift RNG for the jitter.
//!
//! Everything here is pure and deterministic: the random number and the
//! clock are passed in (`rand01`, `now`), so every transition is unit-tested
//! without sleeping. The webhook sink owns one [`CircuitBreaker`] and one
//! [`XorShift`] in its delivery task; nothing here is shared between threads.

use std::time::{Duration, Instant};

/// Exponential backoff with full jitter: the delay before retry `attempt`
/// (0 for the first retry) is uniform in `[0, min(max, base × 2^attempt))`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Upper bound of the first delay.
    pub base: Duration,
    /// Cap of every delay.
    pub max: Duration,
}

impl Default for Backoff {
    /// 100 ms, doubling, capped at 5 s.
    fn default() -> Backoff {
        Backoff {
            base: Duration::from_millis(100),
            max: Duration::from_secs(5),
        }
    }
}

impl Backoff {
    /// The delay before retry `attempt` (0-based): `rand01 × min(max, base ×
    /// 2^attempt)`. `rand01` is clamped to `[0, 1]` (NaN counts as 0); the
    /// exponent saturates instead of overflowing.
    pub fn delay(&self, attempt: u32, rand01: f64) -> Duration {
        let factor = 1u32 << attempt.min(31);
        let ceiling = self.base.saturating_mul(factor).min(self.max);
        let r = if rand01.is_nan() {
            0.0
        } else {
            rand01.clamp(0.0, 1.0)
        };
        ceiling.mul_f64(r)
    }
}

/// The state of a [`CircuitBreaker`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Deliveries go through.
    Closed,
    /// Too many consecutive failures: deliveries are refused until the
    /// `open_for` period has passed.
    Open,
    /// The `open_for` period has passed: one trial delivery is in flight;
    /// its outcome closes or reopens the breaker.
    HalfOpen,
}

impl BreakerState {
    /// `"closed"`, `"open"` or `"half_open"`.
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

/// A circuit breaker over whole deliveries (retries included).
///
/// Closed → Open after `failure_threshold` consecutive failed deliveries;
/// Open → HalfOpen when [`allow`](Self::allow) is asked at least `open_for`
/// after opening (that call admits the one trial); HalfOpen → Closed on
/// [`on_success`](Self::on_success), → Open again (for another `open_for`)
/// on [`on_failure`](Self::on_failure).
#[derive(Debug, Clone)]
pub struct CircuitBreaker {
    /// Consecutive failed deliveries that open the breaker (at least 1).
    pub failure_threshold: u32,
    /// How long the breaker stays open before a trial.
    pub open_for: Duration,
    state: BreakerState,
    consecutive_failures: u32,
    opened_at: Option<Instant>,
}

impl CircuitBreaker {
    /// A closed breaker. A `failure_threshold` of 0 is treated as 1.
    pub fn new(failure_threshold: u32, open_for: Duration) -> CircuitBreaker {
        CircuitBreaker {
            failure_threshold: failure_threshold.max(1),
            open_for,
            state: BreakerState::Closed,
            consecutive_failures: 0,
            opened_at: None,
        }
    }

    /// The current state.
    pub fn state(&self) -> BreakerState {
        self.state
    }

    /// Whether a delivery may be attempted at `now`. When the breaker is open
    /// and `open_for` has passed, it turns half-open and admits this one
    /// call; further calls are refused until the trial's outcome is reported.
    pub fn allow(&mut self, now: Instant) -> bool {
        match self.state {
            BreakerState::Closed => true,
            BreakerState::HalfOpen => false,
            BreakerState::Open => {
                let due = self
                    .opened_at
                    .is_none_or(|at| now.saturating_duration_since(at) >= self.open_for);
                if due {
                    self.state = BreakerState::HalfOpen;
                }
                due
            }
        }
    }

    /// A delivery succeeded: the breaker closes and the failure count resets.
    pub fn on_success(&mut self) {
        self.state = BreakerState::Closed;
        self.consecutive_failures = 0;
        self.opened_at = None;
    }

    /// A delivery failed at `now` (after its last retry). Opens the breaker
    /// when the trial of a half-open breaker failed or when the consecutive
    /// failures reach the threshold.
    pub fn on_failure(&mut self, now: Instant) {
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        let open = match self.state {
            BreakerState::HalfOpen | BreakerState::Open => true,
            BreakerState::Closed => self.consecutive_failures >= self.failure_threshold,
        };
        if open {
            self.state = BreakerState::Open;
            self.opened_at = Some(now);
        }
    }
}

/// xorshift64* — a small, fast, non-cryptographic RNG for backoff jitter.
#[derive(Debug, Clone)]
pub struct XorShift {
    state: u64,
}

impl XorShift {
    /// A generator from `seed` (0 is replaced by a fixed non-zero constant).
    pub fn new(seed: u64) -> XorShift {
        XorShift {
            state: if seed == 0 {
                0x9E37_79B9_7F4A_7C15
            } else {
                seed
            },
        }
    }

    /// A generator seeded from the system clock and a stack address, so two
    /// sinks started at once do not retry in lockstep.
    pub fn from_time() -> XorShift {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let local = 0u8;
        let addr = std::ptr::addr_of!(local) as usize as u64;
        // splitmix64 finalizer to spread the bits of the seed.
        let mut z = nanos ^ addr.rotate_left(32);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        XorShift::new(z ^ (z >> 31))
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.state;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.state = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number uniform in `[0, 1)`.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn backoff_doubles_caps_and_jitters() {
        let b = Backoff {
            base: 100 * MS,
            max: 5000 * MS,
        };
        assert_eq!(b.delay(0, 1.0), 100 * MS);
        assert_eq!(b.delay(1, 1.0), 200 * MS);
        assert_eq!(b.delay(3, 1.0), 800 * MS);
        assert_eq!(b.delay(6, 1.0), 5000 * MS); // 6.4 s capped
        assert_eq!(b.delay(u32::MAX, 1.0), 5000 * MS); // no overflow
        assert_eq!(b.delay(2, 0.5), 200 * MS);
        assert_eq!(b.delay(2, 0.0), Duration::ZERO);
        assert_eq!(b.delay(2, -3.0), Duration::ZERO);
        assert_eq!(b.delay(2, 7.0), 400 * MS);
        assert_eq!(b.delay(2, f64::NAN), Duration::ZERO);
        assert_eq!(Backoff::default(), b);
    }

    #[test]
    fn breaker_opens_after_consecutive_failures_only() {
        let t0 = Instant::now();
        let mut cb = CircuitBreaker::new(3, 1000 * MS);
        assert_eq!(cb.state(), BreakerState::Closed);
        cb.on_failure(t0);
        cb.on_failure(t0);
        cb.on_success(); // resets the count
        cb.on_failure(t0);
        cb.on_failure(t0);
        assert_eq!(cb.state(), BreakerState::Closed);
        assert!(cb.allow(t0));
        cb.on_failure(t0);
        assert_eq!(cb.state(), BreakerState::Open);
        assert!(!cb.allow(t0));
        assert!(!cb.allow(t0 + 999 * MS));
        assert_eq!(cb.state(), BreakerState::Open);
    }

    #[test]
    fn breaker_half_open_admits_one_trial_then_closes_on_success() {
        let t0 = Instant::now();
        let mut cb = CircuitBreaker::new(1, 1000 * MS);
        cb.on_failure(t0);
        assert_eq!(cb.state(), BreakerState::Open);
        assert!(cb.allow(t0 + 1000 * MS));
        assert_eq!(cb.state(), BreakerState::HalfOpen);
        assert!(!cb.allow(t0 + 1001 * MS), "only one trial");
        cb.on_success();
        assert_eq!(cb.state(), BreakerState::Closed);
        assert!(cb.allow(t0 + 1002 * MS));
    }

    #[test]
    fn breaker_half_open_failure_reopens_for_another_period() {
        let t0 = Instant::now();
        let mut cb = CircuitBreaker::new(5, 1000 * MS);
        for _ in 0..5 {
            cb.on_failure(t0);
        }
        assert_eq!(cb.state(), BreakerState::Open);
        let t1 = t0 + 1500 * MS;
        assert!(cb.allow(t1));
        assert_eq!(cb.state(), BreakerState::HalfOpen);
        cb.on_failure(t1); // one failure suffices in half-open
        assert_eq!(cb.state(), BreakerState::Open);
        assert!(
            !cb.allow(t1 + 999 * MS),
            "open_for counts from the reopening"
        );
        assert!(cb.allow(t1 + 1000 * MS));
        assert_eq!(cb.state(), BreakerState::HalfOpen);
        assert_eq!(cb.state().as_str(), "half_open");
    }

    #[test]
    fn zero_threshold_means_one() {
        let mut cb = CircuitBreaker::new(0, MS);
        assert_eq!(cb.failure_threshold, 1);
        cb.on_failure(Instant::now());
        assert_eq!(cb.state(), BreakerState::Open);
    }

    #[test]
    fn xorshift_is_deterministic_and_in_range() {
        let mut a = XorShift::new(42);
        let mut b = XorShift::new(42);
        let xs: Vec<f64> = (0..1000).map(|_| a.next_f64()).collect();
        let ys: Vec<f64> = (0..1000).map(|_| b.next_f64()).collect();
        assert_eq!(xs, ys);
        assert!(xs.iter().all(|x| (0.0..1.0).contains(x)));
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        assert!((0.4..0.6).contains(&mean), "{mean}");
        assert_ne!(XorShift::new(0).next_u64(), 0);
        let mut t = XorShift::from_time();
        assert_ne!(t.next_u64(), t.next_u64());
    }
}
