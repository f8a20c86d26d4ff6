//! Healthy readings of one kind (fds or tasks profiles, thread ids) kept for
//! a target, to compare a reading at an alert with. Pure code: the time is
//! passed in.
//!
//! A finding compares with the *oldest* healthy reading of the process
//! within [`BASELINE_SPAN`]: a leak grows for minutes before its rule fires,
//! and the latest healthy reading, seconds old, would show only its last
//! few seconds. Readings of an earlier process (a `--name` target that
//! restarted) are dropped when one of the new process arrives.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How far back a finding looks for its healthy base: the built-in growth
/// rules' window.
pub const BASELINE_SPAN: Duration = Duration::from_secs(300);
/// Most readings kept per kind.
pub const MAX_BASELINES: usize = 64;

/// One reading and when, of which process, it was taken.
#[derive(Debug, Clone)]
struct Held<T> {
    at: Instant,
    pid: u32,
    value: T,
}

/// Healthy readings of one kind, oldest first.
#[derive(Debug)]
pub struct Baselines<T> {
    readings: VecDeque<Held<T>>,
    /// When the last reading was started (it may still be under way).
    started: Option<Instant>,
}

impl<T> Default for Baselines<T> {
    fn default() -> Self {
        Baselines {
            readings: VecDeque::new(),
            started: None,
        }
    }
}

impl<T: Clone> Baselines<T> {
    /// True when no reading was started within `every` of `now`.
    pub fn due(&self, every: Duration, now: Instant) -> bool {
        self.started
            .is_none_or(|s| now.saturating_duration_since(s) >= every)
    }

    /// Notes that a reading starts at `now` (so it is not started twice).
    pub fn start(&mut self, now: Instant) {
        self.started = Some(now);
    }

    /// Forgets the last start: the reading could not be taken, try again
    /// at the next sample.
    pub fn retry(&mut self) {
        self.started = None;
    }

    /// Keeps `value`, read from process `pid` at `at`. Readings of other
    /// processes go; so do readings older than the span, but the newest
    /// older one stays, so there is a base once there was a reading.
    pub fn push(&mut self, pid: u32, value: T, at: Instant) {
        self.readings.retain(|h| h.pid == pid);
        self.readings.push_back(Held { at, pid, value });
        while self.readings.len() > 1
            && at.saturating_duration_since(self.readings[1].at) >= BASELINE_SPAN
        {
            self.readings.pop_front();
        }
        while self.readings.len() > MAX_BASELINES {
            self.readings.pop_front();
        }
    }

    /// The reading of `pid` to compare with at `now`: the oldest within the
    /// span, else the newest; with when it was taken.
    pub fn base(&self, pid: u32, now: Instant) -> Option<(Instant, T)> {
        let mine = || self.readings.iter().filter(|h| h.pid == pid && h.at <= now);
        mine()
            .find(|h| now.saturating_duration_since(h.at) <= BASELINE_SPAN)
            .or_else(|| mine().last())
            .map(|h| (h.at, h.value.clone()))
    }

    /// Readings kept.
    pub fn len(&self) -> usize {
        self.readings.len()
    }

    /// True when no reading is kept.
    pub fn is_empty(&self) -> bool {
        self.readings.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_within_the_span_of_this_process() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut b: Baselines<u32> = Baselines::default();
        assert!(b.due(Duration::from_secs(60), at(0)));
        assert_eq!(b.base(1, at(0)), None);
        b.start(at(0));
        assert!(!b.due(Duration::from_secs(60), at(30)));
        assert!(b.due(Duration::from_secs(60), at(60)));
        for s in [0, 60, 120, 180, 240, 300, 360] {
            b.push(1, s as u32, at(s));
        }
        // At 400 s: the 100 s reading is out of the span; 120 s is the base.
        assert_eq!(b.base(1, at(400)).map(|(_, v)| v), Some(120));
        // One older than the span is kept in case nothing newer comes.
        assert_eq!(b.len(), 7 - 1);
        assert_eq!(b.base(1, at(2000)).map(|(_, v)| v), Some(360));
        // Another process: nothing to compare with; its first reading
        // drops the old process's.
        assert_eq!(b.base(2, at(400)), None);
        b.push(2, 7, at(410));
        assert_eq!(b.len(), 1);
        assert_eq!(b.base(1, at(420)), None);
        assert_eq!(b.base(2, at(420)).map(|(_, v)| v), Some(7));
        // A reading taken after `now` (a race with the alert) is no base.
        assert_eq!(b.base(2, at(405)), None);
        b.retry();
        assert!(b.due(Duration::from_secs(60), at(411)));
    }

    #[test]
    fn bounded() {
        let t0 = Instant::now();
        let mut b: Baselines<usize> = Baselines::default();
        for i in 0..1000 {
            b.push(1, i, t0 + Duration::from_millis(i as u64));
        }
        assert_eq!(b.len(), MAX_BASELINES);
        assert_eq!(
            b.base(1, t0 + Duration::from_secs(2)).map(|(_, v)| v),
            Some(1000 - MAX_BASELINES)
        );
    }
}
