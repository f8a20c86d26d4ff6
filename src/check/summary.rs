//! The terminal side of a check: a progress line per phase while it runs
//! ([`Progress`]), the summary table at the end ([`render`]), and `--json`
//! ([`json`]). Colours only when asked (on a terminal).

use std::fmt::Write as _;
use std::io::Write;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use leakscope_agent::explain::format_bytes;

use super::model::{CheckReport, KindVerdict, Outcome};
use super::run::Event;

const RED: &str = "\x1b[1;31m";
const GREEN: &str = "\x1b[32m";
const YELLOW: &str = "\x1b[1;33m";
const BOLD: &str = "\x1b[1m";
const RESET: &str = "\x1b[0m";

fn paint(s: &str, code: &str, color: bool) -> String {
    if color {
        format!("{code}{s}{RESET}")
    } else {
        s.to_owned()
    }
}

/// An amount of a kind: bytes with a unit, counts as whole numbers.
fn amount(v: f64, unit: &str) -> String {
    if unit == "bytes" {
        format_bytes(v)
    } else {
        format!("{}", v.round())
    }
}

/// `path` relative to the working directory when it is inside it.
fn short_path(file: &str) -> String {
    if let Ok(cwd) = std::env::current_dir()
        && let Some(rest) = std::path::Path::new(file)
            .strip_prefix(&cwd)
            .ok()
            .and_then(|p| p.to_str())
    {
        return rest.to_owned();
    }
    file.to_owned()
}

/// What and where a failing kind's finding names, in one short line.
pub fn what_where(k: &KindVerdict) -> String {
    let Some(f) = &k.finding else {
        return "-".into();
    };
    let top = f.groups.first();
    let what = top
        .filter(|g| !g.what.is_empty() && k.unit != "bytes")
        .map(|g| {
            // A goroutine group's creator is in the finding's summary.
            let what = g.what.split(" created by ").next().unwrap_or_default();
            format!("+{} {what} ", g.delta().round())
        })
        .unwrap_or_default();
    match &f.site {
        Some(site) => {
            let at = match (site.file.is_empty(), site.line) {
                (true, _) => String::new(),
                (false, 0) => format!(" ({})", short_path(&site.file)),
                (false, line) => format!(" ({}:{line})", short_path(&site.file)),
            };
            let what = if what.is_empty() {
                what
            } else {
                format!("{what}in ")
            };
            format!("{what}{}{at}", site.function)
        }
        None if !what.is_empty() => format!("{}({})", what, f.confidence),
        None => f.summary.clone(),
    }
}

/// The summary of a check, for a terminal.
pub fn render(r: &CheckReport, color: bool) -> String {
    let mut out = String::new();
    let leaked = r.kinds.iter().filter(|k| k.leaked).count();
    let headline = match r.outcome {
        Outcome::Clean => paint(
            &format!(
                "CLEAN: nothing leaked beyond its budget ({} kinds)",
                r.kinds.len()
            ),
            GREEN,
            color,
        ),
        Outcome::Leak => paint(
            &format!("LEAK: {leaked} of {} kinds leaked", r.kinds.len()),
            RED,
            color,
        ),
        Outcome::Error => paint("ERROR: the check could not run to its end", YELLOW, color),
    };
    let _ = writeln!(out, "\nleakscope check: {headline}");
    let pid = r
        .pid
        .filter(|p| r.target != format!("pid {p}"))
        .map_or(String::new(), |p| format!("pid {p}, "));
    let _ = writeln!(out, "  target   {} ({pid}{})", r.target, r.flavor);
    if let Some(e) = &r.error {
        let _ = writeln!(out, "  error    {}", e.replace('\n', "\n           "));
    }
    if !r.phases.is_empty() {
        let phases: Vec<String> = r
            .phases
            .iter()
            .map(|p| format!("{} {:.0} s", p.name, p.end - p.start))
            .collect();
        let _ = writeln!(out, "  phases   {}", phases.join(", "));
    }
    let l = &r.load;
    let load = if l.source == "built-in" {
        let lat = l.latency_ms.map_or(String::new(), |(p50, p99)| {
            format!(", p50 {p50:.1} ms, p99 {p99:.1} ms")
        });
        format!(
            "built-in: {} requests, {} failed{lat}",
            l.requests, l.errors
        )
    } else {
        let status = l
            .exit_status
            .map_or("stopped at the end of the load phase".to_owned(), |c| {
                format!("exit status {c}")
            });
        format!("`{}`: {status}", l.source)
    };
    if r.outcome != Outcome::Error || l.requests > 0 || l.exit_status.is_some() {
        let _ = writeln!(out, "  load     {load}");
    }
    if r.kinds.is_empty() {
        return out;
    }
    let rows: Vec<[String; 5]> = r
        .kinds
        .iter()
        .map(|k| {
            [
                k.kind.clone(),
                format!(
                    "{} → {} → {}",
                    amount(k.before, &k.unit),
                    amount(k.peak, &k.unit),
                    amount(k.after, &k.unit)
                ),
                amount(k.allowed, &k.unit),
                if k.leaked { "LEAK" } else { "ok" }.to_owned(),
                what_where(k),
            ]
        })
        .collect();
    let header = [
        "kind",
        "before → peak → after",
        "budget",
        "verdict",
        "what / where",
    ];
    let width = |i: usize| {
        rows.iter()
            .map(|r| r[i].chars().count())
            .chain([header[i].chars().count()])
            .max()
            .unwrap_or(0)
    };
    let w: Vec<usize> = (0..4).map(width).collect();
    let pad = |s: &str, n: usize| format!("{s}{}", " ".repeat(n.saturating_sub(s.chars().count())));
    let _ = writeln!(out);
    let head = format!(
        "  {}  {}  {}  {}  {}",
        pad(header[0], w[0]),
        pad(header[1], w[1]),
        pad(header[2], w[2]),
        pad(header[3], w[3]),
        header[4]
    );
    let _ = writeln!(out, "{}", paint(&head, BOLD, color));
    for (row, k) in rows.iter().zip(&r.kinds) {
        let verdict = pad(&row[3], w[3]);
        let verdict = if k.leaked {
            paint(&verdict, RED, color)
        } else {
            paint(&verdict, GREEN, color)
        };
        let _ = writeln!(
            out,
            "  {}  {}  {}  {verdict}  {}",
            pad(&row[0], w[0]),
            pad(&row[1], w[1]),
            pad(&row[2], w[2]),
            row[4]
        );
    }
    let _ = writeln!(out);
    for k in &r.kinds {
        let _ = writeln!(out, "  {}: {}", k.kind, k.reason);
        if let Some(f) = &k.finding {
            let _ = writeln!(out, "    {} ({})", f.summary, f.confidence);
        }
    }
    out
}

/// The report as JSON (pretty), for `--json`.
pub fn json(r: &CheckReport) -> String {
    serde_json::to_string_pretty(r).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}

/// The progress display of a running check: a line per phase and a line
/// of counters, rewritten in place on a terminal (every interval), else
/// printed every 10 s.
pub struct Progress {
    tty: bool,
    out: Mutex<(Box<dyn Write + Send>, Option<Instant>, bool)>,
}

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Progress").field("tty", &self.tty).finish()
    }
}

/// How often a progress line is printed when not on a terminal.
const PLAIN_EVERY: Duration = Duration::from_secs(10);

fn counters_line(counters: &[(String, f64)]) -> String {
    counters
        .iter()
        .filter(|(m, _)| m != "rss_bytes")
        .map(|(m, v)| {
            let name = match m.as_str() {
                "open_fds" => "fds",
                "tokio_tasks" => "tasks",
                "heap_bytes" => "heap",
                m => m,
            };
            if m.ends_with("_bytes") {
                format!("{name} {}", format_bytes(*v))
            } else {
                format!("{name} {v}")
            }
        })
        .collect::<Vec<_>>()
        .join("  ")
}

impl Progress {
    /// Progress written to `out`; `tty` when it is a terminal.
    pub fn new(out: Box<dyn Write + Send>, tty: bool) -> Progress {
        Progress {
            tty,
            out: Mutex::new((out, None, false)),
        }
    }

    /// Shows one event.
    pub fn show(&self, e: &Event) {
        let mut g = self.out.lock().unwrap_or_else(|e| e.into_inner());
        let (out, last, open) = &mut *g;
        let line = match e {
            Event::Note(n) => Some(format!("  {n}")),
            Event::Phase { name, seconds } => {
                *last = None;
                Some(format!("  [{name}] {seconds:.0} s"))
            }
            Event::Tick {
                phase,
                elapsed,
                total,
                counters,
                requests,
            } => {
                let due = self.tty || last.is_none_or(|t| t.elapsed() >= PLAIN_EVERY);
                if !due {
                    return;
                }
                *last = Some(Instant::now());
                let req = requests.map_or(String::new(), |n| format!("  {n} requests"));
                let text = format!(
                    "    {phase} {elapsed:>4.0}/{total:.0} s{req}  {}",
                    counters_line(counters)
                );
                if self.tty {
                    let _ = write!(out, "\r{text}\x1b[K");
                    let _ = out.flush();
                    *open = true;
                    return;
                }
                Some(text)
            }
        };
        if let Some(line) = line {
            if *open {
                let _ = write!(out, "\r\x1b[K");
                *open = false;
            }
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
        }
    }

    /// Clears a line left open on the terminal.
    pub fn finish(&self) {
        let mut g = self.out.lock().unwrap_or_else(|e| e.into_inner());
        let (out, _, open) = &mut *g;
        if *open {
            let _ = write!(out, "\r\x1b[K");
            let _ = out.flush();
            *open = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::model::{LoadSummary, Phase};
    use leakscope_agent::explain::{Confidence, Finding, Group, Site};

    fn report() -> CheckReport {
        let site = Site {
            function: "orders::notify::wait".into(),
            file: "/srv/orders/src/notify.rs".into(),
            line: 44,
        };
        let finding = Finding {
            kind: "threads".into(),
            unit: "threads".into(),
            summary: "threads 20 -> 50 (+30); +30 thread 'notify-N' in orders::notify::wait".into(),
            site: Some(site.clone()),
            confidence: Confidence::Exact,
            detail: String::new(),
            groups: vec![Group {
                what: "thread 'notify-N'".into(),
                site: Some(site),
                base: 0.0,
                new: 30.0,
            }],
            base: None,
            new: None,
            url: None,
        };
        let kind = |k: &str, unit: &str, leaked: bool| KindVerdict {
            kind: k.into(),
            unit: unit.into(),
            before: 20.0,
            peak: 52.0,
            after: if leaked { 50.0 } else { 20.0 },
            allowed: 2.0,
            growth_per_minute: 30.0,
            leaked,
            reason: format!("{k} reason"),
            finding: leaked.then(|| finding.clone()),
            evidence: None,
        };
        CheckReport {
            target: "./orders".into(),
            pid: Some(42),
            flavor: "leakscope agent".into(),
            outcome: Outcome::Leak,
            error: None,
            phases: vec![Phase {
                name: "load".into(),
                start: 0.0,
                end: 60.0,
            }],
            kinds: vec![kind("threads", "threads", true), kind("fds", "fds", false)],
            series: Vec::new(),
            load: LoadSummary {
                source: "built-in".into(),
                requests: 1200,
                ..LoadSummary::default()
            },
            settings: Vec::new(),
        }
    }

    #[test]
    fn the_table_names_each_leak_and_says_why() {
        let text = render(&report(), false);
        assert!(text.contains("LEAK: 1 of 2 kinds leaked"), "{text}");
        assert!(
            text.contains("target   ./orders (pid 42, leakscope agent)"),
            "{text}"
        );
        let row = text
            .lines()
            .find(|l| l.trim_start().starts_with("threads "))
            .unwrap();
        assert!(row.contains("20 → 52 → 50"), "{row}");
        assert!(
            row.contains(
                "+30 thread 'notify-N' in orders::notify::wait (/srv/orders/src/notify.rs:44)"
            ),
            "{row}"
        );
        let fds = text
            .lines()
            .find(|l| l.trim_start().starts_with("fds "))
            .unwrap();
        assert!(fds.contains(" ok ") && fds.ends_with('-'), "{fds}");
        assert!(text.contains("  fds: fds reason"), "{text}");
        assert!(!text.contains('\x1b'));
        assert!(render(&report(), true).contains(RED));
    }

    #[test]
    fn json_round_trips() {
        let r = report();
        let back: CheckReport = serde_json::from_str(&json(&r)).unwrap();
        assert_eq!(back, r);
    }
}
