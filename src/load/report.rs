//! What a load run reports: live [`Progress`] while it runs, the
//! [`LoadReport`] at the end and its human summary.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::Duration;

use super::Histogram;

/// Live counts, passed to the progress callback of [`run`](super::run).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Progress {
    /// Requests sent so far (some may still wait for their answer).
    pub sent: u64,
    /// Requests answered with a 2xx status.
    pub ok: u64,
    /// Requests that failed.
    pub errors: u64,
    /// Time since the load started.
    pub elapsed: Duration,
}

/// The result of [`run`](super::run).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct LoadReport {
    /// Requests sent; each is either ok or counted in `errors`.
    pub requests: u64,
    /// Requests answered with a 2xx status.
    pub ok: u64,
    /// Failed requests by kind: "HTTP 500", "timeout", "connect refused",
    /// "connection reset", "connection closed", "io: ..." and so on.
    pub errors: BTreeMap<String, u64>,
    /// From the start to the end of the last request.
    pub elapsed: Duration,
    /// Latency of every answered request, whatever its status.
    pub latency: Histogram,
    /// Requests sent to each path of the target, in the target's order.
    pub by_path: Vec<(String, u64)>,
    /// The rate that was asked for, if any, in requests per second.
    pub target_rate: Option<f64>,
}

impl LoadReport {
    /// Failed requests, of every kind.
    pub fn failed(&self) -> u64 {
        self.errors.values().sum()
    }

    /// The rate achieved: requests per second over [`Self::elapsed`]. With
    /// a request bound in rate mode, `n` requests span `n - 1` intervals
    /// plus the last answer, so a short run can read slightly above the
    /// target although no two sends were closer than `1/rate`.
    pub fn rate(&self) -> f64 {
        match self.elapsed.as_secs_f64() {
            0.0 => 0.0,
            secs => self.requests as f64 / secs,
        }
    }

    /// A multi-line summary for people: requests and the rate achieved,
    /// successes, errors by kind, latency quantiles and, for a mix, the
    /// requests per path.
    ///
    /// ```text
    /// requests  500 in 1.02s: 490.2/s
    /// ok        480 (96.0%)
    /// errors    20
    ///   HTTP 500          15
    ///   timeout            5
    /// latency   p50 1.23ms  p90 2.10ms  p99 4.56ms  max 7.89ms  (mean 1.40ms, 495 answers)
    /// ```
    pub fn summary(&self) -> String {
        let mut out = String::new();
        let target = match self.target_rate {
            Some(rate) => format!(" (target {}/s)", trim_float(rate)),
            None => String::new(),
        };
        let _ = writeln!(
            out,
            "requests  {} in {}: {:.1}/s{target}",
            self.requests,
            format_duration(self.elapsed),
            self.rate()
        );
        let share = |n: u64| match self.requests {
            0 => String::new(),
            total => format!(" ({:.1}%)", n as f64 * 100.0 / total as f64),
        };
        let _ = writeln!(out, "ok        {}{}", self.ok, share(self.ok));
        let _ = writeln!(out, "errors    {}{}", self.failed(), share(self.failed()));
        let width = self
            .errors
            .keys()
            .map(|k| k.chars().count())
            .max()
            .unwrap_or(0);
        let mut errors: Vec<(&String, &u64)> = self.errors.iter().collect();
        errors.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        for (kind, n) in errors {
            let _ = writeln!(out, "  {kind:<width$}  {n:>8}");
        }
        let h = &self.latency;
        if h.is_empty() {
            let _ = writeln!(out, "latency   p50 -  p90 -  p99 -  max -  (no answers)");
        } else {
            let _ = writeln!(
                out,
                "latency   p50 {}  p90 {}  p99 {}  max {}  (mean {}, {} answers)",
                format_duration(h.quantile(0.5)),
                format_duration(h.quantile(0.9)),
                format_duration(h.quantile(0.99)),
                format_duration(h.max()),
                format_duration(h.mean()),
                h.count()
            );
        }
        if self.by_path.len() > 1 {
            let width = self.by_path.iter().map(|(p, _)| p.chars().count()).max();
            let width = width.unwrap_or(0);
            let _ = writeln!(out, "paths");
            for (path, n) in &self.by_path {
                let _ = writeln!(out, "  {path:<width$}  {n:>8}{}", share(*n));
            }
        }
        out
    }
}

/// `850µs`, `1.23ms`, `45.6ms`, `1.02s`, `2m05s`.
pub(super) fn format_duration(d: Duration) -> String {
    let micros = d.as_micros();
    let secs = d.as_secs_f64();
    if micros < 1_000 {
        format!("{micros}µs")
    } else if micros < 10_000 {
        format!("{:.2}ms", secs * 1e3)
    } else if micros < 1_000_000 {
        format!("{:.1}ms", secs * 1e3)
    } else if secs < 60.0 {
        format!("{secs:.2}s")
    } else {
        format!("{}m{:02}s", d.as_secs() / 60, d.as_secs() % 60)
    }
}

/// `100` for 100.0, `0.5` for 0.5.
fn trim_float(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{x:.0}")
    } else {
        format!("{x}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> LoadReport {
        let mut latency = Histogram::new();
        for ms in 1..=100 {
            latency.record(Duration::from_millis(ms));
        }
        LoadReport {
            requests: 120,
            ok: 100,
            errors: BTreeMap::from([("timeout".to_owned(), 5), ("HTTP 500".to_owned(), 15)]),
            elapsed: Duration::from_secs(2),
            latency,
            by_path: vec![("/".into(), 96), ("/leak/heap?kb=256".into(), 24)],
            target_rate: Some(100.0),
        }
    }

    #[test]
    fn summary_gives_counts_rate_errors_quantiles_and_paths() {
        let text = report().summary();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "requests  120 in 2.00s: 60.0/s (target 100/s)");
        assert_eq!(lines[1], "ok        100 (83.3%)");
        assert_eq!(lines[2], "errors    20 (16.7%)");
        // Most frequent kind first.
        assert_eq!(lines[3], "  HTTP 500        15");
        assert_eq!(lines[4], "  timeout          5");
        // Quantiles are the upper bounds of their buckets (50 ms lies in
        // 49.920..50.176 ms); max and mean are exact.
        assert_eq!(
            lines[5],
            "latency   p50 50.2ms  p90 90.1ms  p99 99.3ms  max 100.0ms  (mean 50.5ms, 100 answers)"
        );
        assert_eq!(lines[6], "paths");
        assert_eq!(lines[7], "  /                        96 (80.0%)");
        assert_eq!(lines[8], "  /leak/heap?kb=256        24 (20.0%)");
    }

    #[test]
    fn summary_of_a_run_without_answers() {
        let r = LoadReport {
            requests: 0,
            ok: 0,
            errors: BTreeMap::new(),
            elapsed: Duration::ZERO,
            latency: Histogram::new(),
            by_path: vec![("/".into(), 0)],
            target_rate: None,
        };
        assert_eq!(r.rate(), 0.0);
        let text = r.summary();
        assert!(
            text.starts_with("requests  0 in 0µs: 0.0/s\nok        0\nerrors    0\n"),
            "{text}"
        );
        assert!(text.contains("(no answers)"), "{text}");
        assert!(!text.contains("paths"), "{text}");
    }

    #[test]
    fn durations_read_well() {
        for (d, want) in [
            (Duration::from_micros(850), "850µs"),
            (Duration::from_micros(1_234), "1.23ms"),
            (Duration::from_micros(45_600), "45.6ms"),
            (Duration::from_millis(1_020), "1.02s"),
            (Duration::from_secs(125), "2m05s"),
        ] {
            assert_eq!(format_duration(d), want);
        }
        assert_eq!(trim_float(0.5), "0.5");
    }
}
