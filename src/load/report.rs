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
    /// Latency of every answered request, whatever its status: from its
    /// send, or in paced mode from its due time when it went out late
    /// because every worker was busy (so the requests a slow answer held
    /// back carry their wait).
    pub latency: Histogram,
    /// Time from the send to the end of the answer, of every answered
    /// request. The same as [`Self::latency`] in a closed loop; in paced
    /// mode, what a generator that ignores its schedule would report.
    pub service_time: Histogram,
    /// Requests sent to each entry of the target, in the target's order,
    /// named by path (after the method unless GET).
    pub by_path: Vec<(String, u64)>,
    /// Failed requests by kind, per entry, in the order of
    /// [`Self::by_path`].
    pub errors_by_path: Vec<BTreeMap<String, u64>>,
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
    /// successes, errors by kind, latency quantiles (in paced mode also
    /// the service time, from the actual send) and, for a mix, the
    /// requests and errors per entry.
    ///
    /// ```text
    /// requests  500 in 1.02s: 490.2/s (target 500/s)
    /// ok        480 (96.0%)
    /// errors    20 (4.0%)
    ///   HTTP 500          15
    ///   timeout            5
    /// latency   p50 1.23ms  p90 2.10ms  p99 4.56ms  max 7.89ms  (mean 1.40ms, 495 answers)
    /// service   p50 1.20ms  p90 1.95ms  p99 2.30ms  max 7.89ms  (from the actual send)
    /// paths
    ///   /                 400 (80.0%)  errors 5: timeout 5
    ///   POST /orders      100 (20.0%)  errors 15: HTTP 500 15
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
        for (kind, n) in by_count(&self.errors) {
            let _ = writeln!(out, "  {kind:<width$}  {n:>8}");
        }
        let h = &self.latency;
        if h.is_empty() {
            let _ = writeln!(out, "latency   p50 -  p90 -  p99 -  max -  (no answers)");
        } else {
            let _ = writeln!(
                out,
                "latency   {}  (mean {}, {} answers)",
                quantiles(h),
                format_duration(h.mean()),
                h.count()
            );
            if self.target_rate.is_some() {
                let _ = writeln!(
                    out,
                    "service   {}  (from the actual send)",
                    quantiles(&self.service_time)
                );
            }
        }
        if self.by_path.len() > 1 {
            let width = self.by_path.iter().map(|(p, _)| p.chars().count()).max();
            let width = width.unwrap_or(0);
            let _ = writeln!(out, "paths");
            let no_errors = BTreeMap::new();
            for (i, (path, n)) in self.by_path.iter().enumerate() {
                let _ = write!(out, "  {path:<width$}  {n:>8}{}", share(*n));
                if !self.errors.is_empty() {
                    let errors = self.errors_by_path.get(i).unwrap_or(&no_errors);
                    let _ = write!(out, "  errors {}", errors.values().sum::<u64>());
                    for (k, (kind, n)) in by_count(errors).into_iter().enumerate() {
                        let _ = write!(out, "{}{kind} {n}", if k == 0 { ": " } else { ", " });
                    }
                }
                out.push('\n');
            }
        }
        out
    }
}

/// Error kinds, most frequent first.
fn by_count(errors: &BTreeMap<String, u64>) -> Vec<(&String, &u64)> {
    let mut sorted: Vec<(&String, &u64)> = errors.iter().collect();
    sorted.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    sorted
}

/// `p50 1.23ms  p90 2.10ms  p99 4.56ms  max 7.89ms`.
fn quantiles(h: &Histogram) -> String {
    format!(
        "p50 {}  p90 {}  p99 {}  max {}",
        format_duration(h.quantile(0.5)),
        format_duration(h.quantile(0.9)),
        format_duration(h.quantile(0.99)),
        format_duration(h.max()),
    )
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
        let (mut latency, mut service_time) = (Histogram::new(), Histogram::new());
        for ms in 1..=100 {
            latency.record(Duration::from_millis(ms));
            service_time.record(Duration::from_micros(ms * 100));
        }
        let counts = |list: &[(&str, u64)]| -> BTreeMap<String, u64> {
            list.iter().map(|(k, n)| ((*k).to_owned(), *n)).collect()
        };
        LoadReport {
            requests: 120,
            ok: 100,
            errors: counts(&[("timeout", 5), ("HTTP 500", 15)]),
            elapsed: Duration::from_secs(2),
            latency,
            service_time,
            by_path: vec![("/".into(), 96), ("POST /leak/heap?kb=256".into(), 24)],
            errors_by_path: vec![
                counts(&[("HTTP 500", 3)]),
                counts(&[("HTTP 500", 12), ("timeout", 5)]),
            ],
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
        // Quantiles and max are the upper ends of their buckets (50 ms
        // lies in 49.920..50.175 ms); the mean is taken over the buckets'
        // middles.
        assert_eq!(
            lines[5],
            "latency   p50 50.2ms  p90 90.1ms  p99 99.3ms  max 100.4ms  (mean 50.5ms, 100 answers)"
        );
        // Paced: the service time too.
        assert_eq!(
            lines[6],
            "service   p50 5.02ms  p90 9.02ms  p99 9.92ms  max 10.0ms  (from the actual send)"
        );
        assert_eq!(lines[7], "paths");
        assert_eq!(
            lines[8],
            "  /                             96 (80.0%)  errors 3: HTTP 500 3"
        );
        assert_eq!(
            lines[9],
            "  POST /leak/heap?kb=256        24 (20.0%)  errors 17: HTTP 500 12, timeout 5"
        );
        assert_eq!(lines.len(), 10);
    }

    #[test]
    fn a_closed_loop_without_errors_shows_neither_service_time_nor_errors_per_path() {
        let mut r = report();
        r.target_rate = None;
        r.errors.clear();
        r.errors_by_path = vec![BTreeMap::new(); 2];
        let text = r.summary();
        assert!(!text.contains("service"), "{text}");
        assert!(
            text.contains("\n  /                             96 (80.0%)\n"),
            "{text}"
        );
    }

    #[test]
    fn summary_of_a_run_without_answers() {
        let r = LoadReport {
            requests: 0,
            ok: 0,
            errors: BTreeMap::new(),
            elapsed: Duration::ZERO,
            latency: Histogram::new(),
            service_time: Histogram::new(),
            by_path: vec![("/".into(), 0)],
            errors_by_path: vec![BTreeMap::new()],
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
