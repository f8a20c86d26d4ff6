//! The CI reports of `leakscope check`, rendered from a [`CheckReport`]:
//!
//! - [`junit()`]: JUnit XML (`--junit FILE`), one test case per kind, a
//!   failure naming the leak's site, for the test views of GitHub Actions,
//!   GitLab and Jenkins;
//! - [`html()`]: a self-contained HTML page (`--report FILE.html`) with the
//!   verdict, the counters' timelines and the differential flamegraphs of
//!   the evidence, which opens offline.
//!
//! Both are pure and infallible: a report is written even when a part of it
//! (an evidence profile that does not decode) cannot be drawn; the page
//! then says so where the part would be. The helpers here (amounts, sites,
//! times) are shared by the two so they say the same thing the same way.

mod html;
mod junit;

pub use html::html;
pub use junit::junit;

use leakscope_agent::explain::{Finding, format_bytes};

use super::model::{CheckReport, KindVerdict, Outcome};

/// Longest line of a load command's output a report keeps (characters).
pub(crate) const MAX_LINE_CHARS: usize = 400;
/// Most lines of a load command's output a report keeps (the last ones).
pub(crate) const MAX_TAIL_LINES: usize = 40;

/// `12.0 MiB` for bytes, `37` (or `2.5`) for counts.
pub(crate) fn amount(v: f64, unit: &str) -> String {
    if unit == "bytes" {
        format_bytes(v)
    } else if v.fract() == 0.0 || !v.is_finite() {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

/// `+3`, `-1.5 MiB`, `0`: a signed change.
pub(crate) fn delta(v: f64, unit: &str) -> String {
    if v > 0.0 {
        format!("+{}", amount(v, unit))
    } else {
        amount(v, unit)
    }
}

/// `2 → 9 → 7`: before the warm-up, peak during the load, after the
/// cool-down.
pub(crate) fn course(k: &KindVerdict) -> String {
    format!(
        "{} → {} → {}",
        amount(k.before, &k.unit),
        amount(k.peak, &k.unit),
        amount(k.after, &k.unit)
    )
}

/// `leaked` or `ok`.
pub(crate) fn verdict_word(k: &KindVerdict) -> &'static str {
    if k.leaked { "leaked" } else { "ok" }
}

/// The outcome in one word.
pub(crate) fn outcome_word(o: Outcome) -> &'static str {
    match o {
        Outcome::Clean => "clean",
        Outcome::Leak => "leak",
        Outcome::Error => "error",
    }
}

/// `function (file:line)` of the finding, when it names code.
pub(crate) fn site_text(f: Option<&Finding>) -> Option<String> {
    f.and_then(|f| f.site.as_ref()).map(ToString::to_string)
}

/// The one-line message of a failing kind: what stayed behind and where.
/// `threads: +3 threads stayed after the cool-down (2 → 9 → 5, budget 0)
/// in app::spawn_worker (src/app.rs:42)`.
pub(crate) fn failure_message(k: &KindVerdict) -> String {
    let left = k.after - k.before;
    let unit = if k.unit == "bytes" { "" } else { &k.unit };
    let mut msg = format!(
        "{}: {}{}{unit} stayed after the cool-down ({}, budget {})",
        k.kind,
        delta(left, &k.unit),
        if unit.is_empty() { "" } else { " " },
        course(k),
        amount(k.allowed, &k.unit),
    );
    match (site_text(k.finding.as_ref()), &k.finding) {
        (Some(site), _) => {
            msg.push_str(" in ");
            msg.push_str(&site);
        }
        (None, Some(f)) => {
            msg.push_str("; not named: ");
            msg.push_str(&f.summary);
        }
        (None, None) => {
            msg.push_str("; ");
            msg.push_str(&k.reason);
        }
    }
    msg
}

/// Start of the check (Unix seconds): its first phase, else its first
/// counter reading, else `None`.
pub(crate) fn started(r: &CheckReport) -> Option<f64> {
    r.phases.first().map(|p| p.start).or_else(|| {
        r.series
            .iter()
            .filter_map(|s| s.points.first().map(|p| p.0))
            .reduce(f64::min)
    })
}

/// Length of the check in seconds: first phase start to last phase end.
pub(crate) fn duration_secs(r: &CheckReport) -> f64 {
    match (r.phases.first(), r.phases.last()) {
        (Some(a), Some(b)) if b.end >= a.start => b.end - a.start,
        _ => 0.0,
    }
}

/// `2024-05-01T12:30:05` (UTC, no zone: JUnit's `timestamp` form) of Unix
/// seconds.
pub(crate) fn iso_utc(unix: f64) -> String {
    let secs = unix.max(0.0).floor() as u64;
    let (year, month, day) = leakscope_agent::store::civil_from_days(secs / 86_400);
    let rem = secs % 86_400;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// The last [`MAX_TAIL_LINES`] lines of a load command's output, as a
/// terminal shows them ([`clean_line`]), each cut to [`MAX_LINE_CHARS`]
/// characters.
pub(crate) fn tail_lines(lines: &[String]) -> Vec<String> {
    let from = lines.len().saturating_sub(MAX_TAIL_LINES);
    lines[from..]
        .iter()
        .map(|l| {
            let l = clean_line(l);
            if l.chars().count() > MAX_LINE_CHARS {
                let mut s: String = l.chars().take(MAX_LINE_CHARS).collect();
                s.push('…');
                s
            } else {
                l
            }
        })
        .collect()
}

/// A line of a tool's output as a terminal leaves it: what follows the
/// last carriage return (progress lines redraw themselves), without ANSI
/// escape sequences (colours), other control characters but tabs written
/// as `\u{..}`.
pub(crate) fn clean_line(line: &str) -> String {
    let line = line.trim_end_matches('\r');
    let line = line.rsplit('\r').next().unwrap_or(line);
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => {
                // CSI: ESC [ parameters, then one final byte in @..~;
                // any other escape is ESC and one character.
                if chars.next_if_eq(&'[').is_some() {
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                } else {
                    chars.next();
                }
            }
            '\t' => out.push(c),
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// The counter a kind is judged on, by the metric names the check records
/// (see [`Series::metric`](super::model::Series::metric)).
pub(crate) fn metric_of(kind: &str) -> &str {
    match kind {
        "heap" => "heap_bytes",
        "fds" => "open_fds",
        "tasks" => "tokio_tasks",
        other => other,
    }
}

/// The load in one line: `built-in: 12000 requests, 3 errors, p50 1.2 ms,
/// p99 8.0 ms` or `k6 run load.js: exit 0`.
pub(crate) fn load_line(r: &CheckReport) -> String {
    let l = &r.load;
    let mut parts = Vec::new();
    if l.requests > 0 || l.source == "built-in" {
        parts.push(format!("{} requests, {} errors", l.requests, l.errors));
    }
    if let Some((p50, p99)) = l.latency_ms {
        parts.push(format!("p50 {p50:.1} ms, p99 {p99:.1} ms"));
    }
    if let Some(code) = l.exit_status {
        parts.push(format!("exit status {code}"));
    }
    let source = if l.source.is_empty() {
        "no load"
    } else {
        &l.source
    };
    if parts.is_empty() {
        source.to_owned()
    } else {
        format!("{source}: {}", parts.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_civil_utc() {
        assert_eq!(iso_utc(0.0), "1970-01-01T00:00:00");
        // 2000-02-29 (a leap day of a century divisible by 400) 23:59:59.
        assert_eq!(iso_utc(951_868_799.5), "2000-02-29T23:59:59");
        assert_eq!(iso_utc(1_709_251_200.0), "2024-03-01T00:00:00");
    }

    #[test]
    fn amounts_and_changes() {
        assert_eq!(amount(3.0, "threads"), "3");
        assert_eq!(amount(2.5, "tasks"), "2.5");
        assert_eq!(amount(4.0 * 1024.0 * 1024.0, "bytes"), "4.0 MiB");
        assert_eq!(delta(3.0, "fds"), "+3");
        assert_eq!(delta(-1024.0, "bytes"), "-1.0 KiB");
        assert_eq!(delta(0.0, "fds"), "0");
    }

    #[test]
    fn output_lines_read_as_on_a_terminal() {
        assert_eq!(
            clean_line("\u{1b}[32m✓\u{1b}[0m checks\t100%\u{7}"),
            "✓ checks\t100%\\u{7}"
        );
        assert_eq!(clean_line("running 10%\rrunning 55%\rdone\r"), "done");
        assert_eq!(clean_line("cut \u{1b}["), "cut ");
    }

    #[test]
    fn output_tails_are_bounded() {
        let lines: Vec<String> = (0..100).map(|i| format!("line {i}")).collect();
        let t = tail_lines(&lines);
        assert_eq!(t.len(), MAX_TAIL_LINES);
        assert_eq!(t.last().map(String::as_str), Some("line 99"));
        let long = tail_lines(&["x".repeat(1000)]);
        assert_eq!(long[0].chars().count(), MAX_LINE_CHARS + 1);
    }
}
