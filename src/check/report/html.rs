//! The HTML report of `leakscope check --report FILE.html`: one file that
//! opens offline, with the verdict, a table of the verdict per kind (the
//! leak's site and how sure its naming is), the findings, the counters'
//! timelines with the phases marked, the load, the settings, and for every
//! kind with evidence the differential flamegraphs of base → new.
//!
//! Built from the viewer's parts, so it looks and behaves like the viewer
//! and `leakscope diff -o`: the page frame and its style, the server-drawn
//! timeline charts, the differential flamegraphs (narrow frames merged, so
//! a huge profile stays light) each in an `srcdoc` frame as its own
//! document, where inferno's zoom and search scripts run without a server.
//! A Content-Security-Policy in the page forbids every load from outside
//! (frames inherit it), so the report cannot reach the network even by
//! mistake. Every string is escaped.

use std::fmt::Write;

use leakscope_agent::explain::Finding;
use leakscope_agent::profile::Profile;
use leakscope_viewer::analysis::{DiffOptions, rank_growth};
use leakscope_viewer::diff::{DiffStacksOptions, diff};
use leakscope_viewer::fold::fold_pair;
use leakscope_viewer::render::html::{Marker, Threshold, chart, escape, page};
use leakscope_viewer::render::table::{format_delta, format_value};
use leakscope_viewer::render::{FlameOptions, Side, diff_flamegraph, flame_document};

use super::{
    amount, course, delta, duration_secs, load_line, metric_of, outcome_word, started, tail_lines,
    verdict_word,
};
use crate::check::model::{CheckReport, Evidence, KindVerdict, Outcome};

/// The policy that keeps the page offline: nothing is fetched, inline
/// scripts and styles (the page's and inferno's) run.
const CSP: &str = "default-src 'none'; script-src 'unsafe-inline'; \
                   style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'";

/// What the report adds to the viewer's style.
const STYLE: &str = "<style>\
    .verdict{font-size:15px;margin:4px 0 10px}.verdict .badge{font-size:15px;padding:2px 12px}\
    tr.leaked td{background:#fff4f3}td.kind{font-weight:600}td.reason{max-width:320px;font-size:12px}\
    td.site{max-width:380px}.at{color:#4a5560}\
    pre.tail{background:#1d2733;color:#e8edf2;padding:8px 12px;border-radius:6px;font-size:12px;\
    overflow-x:auto;max-height:360px;white-space:pre-wrap}\
    section.evidence{margin-top:22px;border-top:1px solid #e3e7eb}h3{font-size:15px;margin:16px 0 6px}\
    h4{font-size:13px;margin:12px 0 4px}#timelines{margin-top:6px}\
    .finding.card{margin:8px 0}td .badge{white-space:nowrap}\
    </style>";

/// The zoom, search and sizing of the flamegraph frames: each frame gets
/// the height of its flamegraph (at most 640 px) and opens scrolled to the
/// root at its bottom; the search box highlights matching frames in all.
const SCRIPT: &str = "<script>(function(){\
    function fit(f){try{var d=f.contentDocument;if(!d||!d.documentElement)return;\
    var h=d.documentElement.scrollHeight;f.style.height=Math.min(Math.max(h,120),640)+'px';\
    f.contentWindow.scrollTo(0,d.documentElement.scrollHeight);}catch(e){}}\
    var frames=document.querySelectorAll('iframe.flame');\
    frames.forEach(function(f){f.addEventListener('load',function(){fit(f);});fit(f);});\
    var box=document.getElementById('search');\
    if(box)box.addEventListener('input',function(e){var term=e.target.value;\
    frames.forEach(function(f){var w=f.contentWindow;if(!w||!w.search)return;\
    w.reset_search();if(term){try{w.search(term);}catch(err){}}});});\
    })();</script>";

/// Rows of the "what grew" table of each evidence.
const GROWTH_ROWS: usize = 10;

/// The self-contained HTML report of `r`.
pub fn html(r: &CheckReport) -> String {
    let mut body = String::from(STYLE);
    verdict(&mut body, r);
    verdict_table(&mut body, r);
    findings(&mut body, r);
    timelines(&mut body, r);
    load(&mut body, r);
    settings(&mut body, r);
    evidence_all(&mut body, r);
    let title = format!("Leak check of {}", r.target);
    let doc = page(&title, &[], &body);
    // The policy must come first in the head, before anything it governs.
    doc.replacen(
        "<head>",
        &format!("<head><meta http-equiv=\"Content-Security-Policy\" content=\"{CSP}\">"),
        1,
    )
}

/// The outcome, the target and what the check was.
fn verdict(b: &mut String, r: &CheckReport) {
    let class = match r.outcome {
        Outcome::Clean => "ok",
        Outcome::Leak => "critical",
        Outcome::Error => "warning",
    };
    let leaked: Vec<&str> = r
        .kinds
        .iter()
        .filter(|k| k.leaked)
        .map(|k| k.kind.as_str())
        .collect();
    let said = match r.outcome {
        Outcome::Clean => format!(
            "no kind leaked beyond its budget ({} judged)",
            r.kinds.len()
        ),
        Outcome::Leak => format!(
            "{} of {} kinds leaked: {}",
            leaked.len(),
            r.kinds.len(),
            leaked.join(", ")
        ),
        Outcome::Error => "the check could not run to its end".into(),
    };
    let pid = r.pid.map(|p| format!(", pid {p}")).unwrap_or_default();
    let _ = write!(
        b,
        "<p class=\"verdict\"><span id=\"outcome\" class=\"badge {class}\">{}</span> \
         exit {} · {}</p>\
         <p>target <code id=\"target\">{}</code> ({}{pid}) · {:.0} s{}</p>",
        outcome_word(r.outcome),
        r.outcome.exit_code(),
        escape(&said),
        escape(&r.target),
        escape(&r.flavor),
        duration_secs(r),
        started(r)
            .map(|t| format!(" from {} UTC", super::iso_utc(t).replace('T', " ")))
            .unwrap_or_default()
    );
    if let Some(e) = &r.error {
        let _ = write!(b, "<div class=\"error\" id=\"error\">{}</div>", escape(e));
    }
}

/// `kind-name` as a piece of an element id.
fn id_part(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// `<code class="fn">f</code> <span class="at">file:line</span>`, or a dash.
fn site_cell(f: Option<&Finding>) -> String {
    let Some(s) = f.and_then(|f| f.site.as_ref()) else {
        return "<span class=\"muted\">—</span>".into();
    };
    let at = match (s.file.is_empty(), s.line) {
        (true, _) => String::new(),
        (false, 0) => s.file.clone(),
        (false, line) => format!("{}:{line}", s.file),
    };
    format!(
        "<code class=\"fn\">{}</code> <span class=\"at mono\">{}</span>",
        escape(&s.function),
        escape(&at)
    )
}

/// The confidence as a badge, its detail as the tooltip.
fn confidence_badge(f: Option<&Finding>) -> String {
    match f {
        Some(f) => format!(
            "<span class=\"badge conf conf-{}\" title=\"{}\">{}</span>",
            f.confidence.as_str().replace(' ', "-"),
            escape(&f.detail),
            escape(f.confidence.as_str())
        ),
        None => "<span class=\"muted\">—</span>".into(),
    }
}

fn verdict_table(b: &mut String, r: &CheckReport) {
    b.push_str(
        "<h2>Verdict per kind</h2><table id=\"verdicts\"><tr><th>kind</th>\
         <th>before → peak → after</th><th>growth in load</th><th>budget</th><th>verdict</th>\
         <th>reason</th><th>site</th><th>confidence</th></tr>",
    );
    for k in &r.kinds {
        let (row, badge) = if k.leaked {
            ("leaked", "critical")
        } else {
            ("passed", "ok")
        };
        let _ = write!(
            b,
            "<tr class=\"kind {row}\" data-kind=\"{}\"><td class=\"kind\">{}</td><td class=\"num\">{}</td>\
             <td class=\"num\">{}/min</td><td class=\"num\">{}</td>\
             <td><span class=\"badge {badge}\">{}</span></td><td class=\"reason\">{}</td>\
             <td class=\"site\">{}</td><td>{}</td></tr>",
            escape(&k.kind),
            escape(&k.kind),
            escape(&course(k)),
            escape(&delta(k.growth_per_minute, &k.unit)),
            escape(&amount(k.allowed, &k.unit)),
            verdict_word(k),
            escape(&k.reason),
            site_cell(k.finding.as_ref()),
            confidence_badge(k.finding.as_ref()),
        );
    }
    if r.kinds.is_empty() {
        b.push_str("<tr><td colspan=\"8\" class=\"muted\">No kind was judged.</td></tr>");
    }
    b.push_str("</table>");
}

/// Whether `summary` already says its kind in its first words (`heap: ...`,
/// `threads 4 -> 9`, `tokio tasks 1 -> 9`), so the heading need not.
fn names_kind(summary: &str, kind: &str) -> bool {
    summary
        .split_whitespace()
        .take(2)
        .any(|w| w.trim_end_matches(':') == kind)
}

/// Each finding: its summary, how it was named, the groups that grew.
fn findings(b: &mut String, r: &CheckReport) {
    let with: Vec<(&KindVerdict, &Finding)> = r
        .kinds
        .iter()
        .filter_map(|k| k.finding.as_ref().map(|f| (k, f)))
        .collect();
    if with.is_empty() {
        return;
    }
    b.push_str("<h2>What stayed behind</h2>");
    for (k, f) in with {
        let _ = write!(
            b,
            "<div class=\"finding card\" id=\"finding-{}\"><p class=\"summary\">{}{}</p>\
             <p>{}{}</p><p class=\"detail muted\">{}</p>",
            id_part(&k.kind),
            if names_kind(&f.summary, &k.kind) {
                String::new()
            } else {
                format!("{}: ", escape(&k.kind))
            },
            escape(&f.summary),
            if f.site.is_some() {
                site_cell(Some(f)) + " "
            } else {
                String::new()
            },
            confidence_badge(Some(f)),
            escape(&f.detail)
        );
        if !f.groups.is_empty() {
            b.push_str(
                "<table class=\"groups\"><tr><th>what</th><th>site</th><th>base</th><th>new</th><th>change</th></tr>",
            );
            for g in &f.groups {
                let site = match &g.site {
                    Some(s) => format!("<code class=\"fn\">{}</code>", escape(&s.to_string())),
                    None => "<span class=\"muted\">—</span>".into(),
                };
                let _ = write!(
                    b,
                    "<tr><td class=\"mono\">{}</td><td>{site}</td><td class=\"num\">{}</td>\
                     <td class=\"num\">{}</td><td class=\"num grew\">{}</td></tr>",
                    escape(&g.what),
                    escape(&amount(g.base, &f.unit)),
                    escape(&amount(g.new, &f.unit)),
                    escape(&delta(g.delta(), &f.unit)),
                );
            }
            b.push_str("</table>");
        }
        b.push_str("</div>");
    }
}

/// One chart per counter, a red line where each phase starts and, for the
/// counter a kind is judged on, its budget (before + allowed).
fn timelines(b: &mut String, r: &CheckReport) {
    if r.series.is_empty() {
        return;
    }
    let t0 = started(r).unwrap_or(0.0);
    let markers: Vec<Marker> = r
        .phases
        .iter()
        .map(|p| Marker {
            at: p.start,
            label: format!("{} starts ({:.0} s)", p.name, p.start - t0),
            href: None,
            alert: true,
        })
        .collect();
    b.push_str("<h2>Timelines</h2><p id=\"phases\" class=\"muted\">");
    let phases: Vec<String> = r
        .phases
        .iter()
        .map(|p| {
            format!(
                "{} {:.0}–{:.0} s",
                escape(&p.name),
                p.start - t0,
                p.end - t0
            )
        })
        .collect();
    b.push_str(&phases.join(" · "));
    if !phases.is_empty() {
        b.push_str(
            "; a red line marks where each phase starts, a dashed one the budget (before + allowed).",
        );
    }
    b.push_str("</p><div id=\"timelines\" class=\"row\">");
    for s in &r.series {
        let unit = s.unit.clone();
        let fmt = move |v: f64| amount(v, if unit == "bytes" { "bytes" } else { "" });
        let thresholds: Vec<Threshold> = r
            .kinds
            .iter()
            .filter(|k| metric_of(&k.kind) == s.metric)
            .map(|k| Threshold {
                label: "budget".into(),
                value: k.before + k.allowed,
            })
            .collect();
        let _ = write!(
            b,
            "<div class=\"card\" data-metric=\"{}\">{}</div>",
            escape(&s.metric),
            chart(&s.metric, &s.points, &thresholds, &markers, &fmt)
        );
    }
    b.push_str("</div>");
}

fn load(b: &mut String, r: &CheckReport) {
    let _ = write!(
        b,
        "<h2>Load</h2><div id=\"load\"><p>{}</p>",
        escape(&load_line(r))
    );
    let tail = tail_lines(&r.load.output_tail);
    if !tail.is_empty() {
        let _ = write!(
            b,
            "<p class=\"muted\">The load command's last lines:</p><pre class=\"tail\">{}</pre>",
            escape(&tail.join("\n"))
        );
    }
    b.push_str("</div>");
}

fn settings(b: &mut String, r: &CheckReport) {
    if r.settings.is_empty() {
        return;
    }
    b.push_str("<h2>Settings</h2><table id=\"settings\">");
    for (name, value) in &r.settings {
        let _ = write!(
            b,
            "<tr><th>{}</th><td class=\"mono\">{}</td></tr>",
            escape(name),
            escape(value)
        );
    }
    b.push_str("</table>");
}

/// The evidence of every kind that has some, with one search box for all
/// the flamegraphs.
fn evidence_all(b: &mut String, r: &CheckReport) {
    let with: Vec<(&KindVerdict, &Evidence)> = r
        .kinds
        .iter()
        .filter_map(|k| k.evidence.as_ref().map(|e| (k, e)))
        .collect();
    if with.is_empty() {
        return;
    }
    b.push_str(
        "<h2>Evidence</h2><p class=\"muted\">The two profiles each finding compared: before the \
         warm-up (base) and after the cool-down (new). In the differential flamegraphs red grew, \
         blue shrank; the first is sized by the new profile, the second by the base, so stacks \
         that vanished show there.</p>\
         <p><input type=\"search\" id=\"search\" placeholder=\"search the flamegraphs (regex)\"> \
         <span class=\"muted\">click a frame to zoom; hover for details</span></p>",
    );
    for (k, e) in with {
        let id = id_part(&k.kind);
        let _ = write!(
            b,
            "<section class=\"evidence\" id=\"evidence-{id}\"><h3>{}: base → new</h3>",
            escape(&k.kind)
        );
        match evidence(&k.kind, &id, e) {
            Ok(html) => b.push_str(&html),
            Err(why) => {
                let _ = write!(
                    b,
                    "<div class=\"error\">The evidence of {} cannot be drawn: {}</div>",
                    escape(&k.kind),
                    escape(&why)
                );
            }
        }
        b.push_str("</section>");
    }
    b.push_str(SCRIPT);
}

/// Totals, the sites that grew most and both differential flamegraphs of
/// one kind's evidence.
fn evidence(kind: &str, id: &str, e: &Evidence) -> Result<String, String> {
    let base = Profile::decode_bytes(&e.base, "the base profile").map_err(|e| e.to_string())?;
    let new = Profile::decode_bytes(&e.new, "the new profile").map_err(|e| e.to_string())?;
    let wanted = (!e.sample_type.is_empty()).then_some(e.sample_type.as_str());
    let (f_base, f_new) = fold_pair(&base, &new, wanted).map_err(|e| e.to_string())?;
    let d = diff(&f_base, &f_new, DiffStacksOptions::default()).map_err(|e| e.to_string())?;
    let unit = d.unit.as_str();
    let mut b = format!(
        "<p>{} {} → {} (<b class=\"{}\">{}</b>)</p>",
        escape(&d.sample_type),
        format_value(d.base_total, unit),
        format_value(d.new_total, unit),
        if d.new_total >= d.base_total {
            "grew"
        } else {
            "shrank"
        },
        format_delta(d.new_total - d.base_total, unit)
    );
    let growth = rank_growth(
        &base,
        &new,
        &DiffOptions::default().with_sample_type(&d.sample_type),
    )
    .map_err(|e| e.to_string())?;
    let _ = write!(
        b,
        "<table class=\"ranked\" id=\"ranked-{id}\"><tr><th>function</th><th>file:line</th>\
         <th>change</th><th>base</th><th>new</th></tr>"
    );
    for g in growth.iter().take(GROWTH_ROWS) {
        let at = if g.file.is_empty() {
            String::new()
        } else {
            format!("{}:{}", g.file, g.line)
        };
        let _ = write!(
            b,
            "<tr><td class=\"mono fn\">{}</td><td class=\"mono\">{}</td><td class=\"num {}\">{}</td>\
             <td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
            escape(&g.function),
            escape(&at),
            if g.delta() > 0 { "grew" } else { "shrank" },
            format_delta(g.delta(), unit),
            format_value(g.base, unit),
            format_value(g.new, unit)
        );
    }
    if growth.is_empty() {
        b.push_str("<tr><td colspan=\"5\" class=\"muted\">Nothing changed.</td></tr>");
    }
    b.push_str("</table>");
    for (side, label) in [(Side::New, "new"), (Side::Base, "base")] {
        let title = format!(
            "{kind}: before warm-up → after cool-down ({}), sized by {label}",
            d.sample_type
        );
        let svg =
            diff_flamegraph(&d, &FlameOptions::new(title), side).map_err(|e| e.to_string())?;
        let _ = write!(
            b,
            "<h4>Sized by {label}</h4><iframe class=\"flame\" id=\"flame-{id}-{label}\" \
             title=\"{} {label}\" style=\"height:420px\" srcdoc=\"{}\"></iframe>",
            escape(kind),
            escape(&flame_document(&svg))
        );
    }
    Ok(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::model::{LoadSummary, Phase, Series};
    use leakscope_agent::explain::{Confidence, Group, Site};

    fn kind(name: &str, leaked: bool, finding: Option<Finding>) -> KindVerdict {
        KindVerdict {
            kind: name.into(),
            unit: name.into(),
            before: 2.0,
            peak: 12.0,
            after: if leaked { 7.0 } else { 2.0 },
            allowed: 0.0,
            growth_per_minute: 5.0,
            leaked,
            reason: if leaked {
                "5 stayed after the cool-down".into()
            } else {
                "back to its level".into()
            },
            finding,
            evidence: None,
        }
    }

    fn report(kinds: Vec<KindVerdict>) -> CheckReport {
        CheckReport {
            target: "svc <main>".into(),
            pid: Some(42),
            flavor: "leakscope agent".into(),
            outcome: if kinds.iter().any(|k| k.leaked) {
                Outcome::Leak
            } else {
                Outcome::Clean
            },
            error: None,
            phases: vec![
                Phase {
                    name: "warm-up".into(),
                    start: 1000.0,
                    end: 1010.0,
                },
                Phase {
                    name: "load".into(),
                    start: 1010.0,
                    end: 1070.0,
                },
                Phase {
                    name: "cool-down".into(),
                    start: 1070.0,
                    end: 1100.0,
                },
            ],
            kinds,
            series: vec![Series {
                metric: "threads".into(),
                unit: "".into(),
                points: (0..=100).map(|i| (1000.0 + f64::from(i), 2.0)).collect(),
            }],
            load: LoadSummary {
                source: "built-in".into(),
                requests: 100,
                ..LoadSummary::default()
            },
            settings: vec![("duration".into(), "60s".into())],
        }
    }

    fn nasty_finding() -> Finding {
        let site = Site {
            function: "<Vec<T> as Drop>::drop&\"x\"".into(),
            file: "src/a<b>.rs".into(),
            line: 7,
        };
        Finding {
            kind: "threads".into(),
            unit: "threads".into(),
            summary: "threads 2 -> 7 (+5) <script>".into(),
            site: Some(site.clone()),
            confidence: Confidence::Exact,
            detail: "counted \"exactly\"".into(),
            groups: vec![Group {
                what: "thread 'w<N>'".into(),
                site: Some(site),
                base: 0.0,
                new: 5.0,
            }],
            base: None,
            new: None,
            url: None,
        }
    }

    #[test]
    fn a_row_per_kind_with_the_site_and_everything_escaped() {
        let r = report(vec![
            kind("threads", true, Some(nasty_finding())),
            kind("fds", false, None),
        ]);
        let page = html(&r);
        assert_eq!(page.matches("<tr class=\"kind ").count(), 2);
        assert!(page.contains("<tr class=\"kind leaked\" data-kind=\"threads\">"));
        assert!(page.contains("&lt;Vec&lt;T&gt; as Drop&gt;::drop&amp;&quot;x&quot;"));
        assert!(page.contains("src/a&lt;b&gt;.rs:7"));
        assert!(page.contains("conf-exact"));
        assert!(!page.contains("<script>\"") && !page.contains("+5) <script>"));
        assert!(page.contains("svc &lt;main&gt;"));
        // No evidence: no flamegraph frames, no script.
        assert!(!page.contains("<iframe") && !page.contains("<script>"));
    }

    #[test]
    fn the_page_forbids_loads_from_outside() {
        let page = html(&report(vec![]));
        let head = &page[..page.find("</head>").expect("a head")];
        assert!(
            head.starts_with(
                "<!doctype html><html lang=\"en\"><head><meta http-equiv=\"Content-Security-Policy\""
            ),
            "{head}"
        );
        assert!(head.contains("default-src 'none'"), "{head}");
        assert!(page.contains("No kind was judged."));
    }

    #[test]
    fn timelines_mark_the_phases_and_the_budget() {
        let r = report(vec![kind("threads", true, None)]);
        let page = html(&r);
        // Three phase starts, all within the points' span.
        assert_eq!(page.matches("class=\"alert-marker\"").count(), 3);
        assert!(page.contains("cool-down starts (70 s)"));
        assert_eq!(page.matches("class=\"threshold\"").count(), 1);
        assert!(page.contains("warm-up 0–10 s · load 10–70 s · cool-down 70–100 s"));
    }

    #[test]
    fn broken_evidence_is_said_not_fatal() {
        let mut k = kind("heap", true, None);
        k.evidence = Some(Evidence {
            sample_type: "inuse_space".into(),
            base: b"not a profile".to_vec(),
            new: Vec::new(),
        });
        let page = html(&report(vec![k]));
        assert!(
            page.contains("The evidence of heap cannot be drawn: the base profile"),
            "{page}"
        );
    }

    #[test]
    fn a_load_command_shows_its_status_and_last_lines() {
        let mut r = report(vec![]);
        r.load = LoadSummary {
            source: "ab -n 100 http://127.0.0.1:8080/".into(),
            exit_status: Some(3),
            output_tail: vec!["<b>Failed requests:</b>\u{1b}[1m 7".into()],
            ..LoadSummary::default()
        };
        let page = html(&r);
        assert!(page.contains("<p>ab -n 100 http://127.0.0.1:8080/: exit status 3</p>"));
        assert!(page.contains("<pre class=\"tail\">&lt;b&gt;Failed requests:&lt;/b&gt; 7</pre>"));
    }

    #[test]
    fn an_error_is_shown() {
        let mut r = report(vec![]);
        r.outcome = Outcome::Error;
        r.error = Some("the service did not answer on http://127.0.0.1:1/health".into());
        let page = html(&r);
        assert!(page.contains("<div class=\"error\" id=\"error\">the service did not answer"));
        assert!(page.contains("class=\"badge warning\">error</span> exit 2"));
    }
}
