//! Collectors: turn the raw output of the CPU sampler and of jemalloc into
//! symbolized pprof [`Profile`](crate::profile::Profile)s.
//!
//! Everything here is synchronous and may take tens of milliseconds
//! (symbolizing, encoding): callers on an async runtime run it on a
//! blocking thread.

#[cfg(feature = "cpu")]
pub mod cpu;
#[cfg(feature = "heap")]
pub mod heap;

/// Nanoseconds since the Unix epoch of `t` (0 before 1970).
pub(crate) fn unix_nanos(t: std::time::SystemTime) -> i64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// Seconds since the Unix epoch of `t`, as a float (0 before 1970).
pub fn unix_seconds(t: std::time::SystemTime) -> f64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}
