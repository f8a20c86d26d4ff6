//! A target's alerts with the findings they carry: what leaks, where in the
//! program's own code, how sure that is, the groups that grew most and a
//! link to the diff of the two captures it compared. Every text from a
//! finding (function names hold `<`, `&` and quotes) is escaped.

use std::fmt::Write;

use leakscope_agent::explain::{Confidence, Finding, Group, Site};

use super::AlertView;
use super::pages::when;
use crate::render::html::{badge, escape, url_encode};
use crate::render::table::{format_delta, format_value};

/// The sample type a diff of two profiles of `kind` is read in.
fn sample_type(kind: &str) -> &str {
    match kind {
        "heap" => "inuse_space",
        other => other,
    }
}

/// Where the finding's diff is: its own `url` when it is a path or an
/// http(s) URL, else one built from its `base` and `new` captures.
pub(super) fn diff_href(prefix: &str, f: &Finding) -> Option<String> {
    if let Some(url) = &f.url
        && (url.starts_with('/') || url.starts_with("http://") || url.starts_with("https://"))
    {
        return Some(url.clone());
    }
    let (base, new) = (f.base.as_ref()?, f.new.as_ref()?);
    Some(format!(
        "{prefix}/diff?base={}&new={}&type={}",
        url_encode(base),
        url_encode(new),
        url_encode(sample_type(&f.kind))
    ))
}

/// The confidence as a badge, its detail as the tooltip.
pub(super) fn confidence_badge(c: Confidence, detail: &str) -> String {
    format!(
        "<span class=\"badge conf conf-{}\" title=\"{}\">{}</span>",
        c.as_str().replace(' ', "-"),
        escape(detail),
        escape(c.as_str())
    )
}

/// `file:line` of a site (the file alone without a line, "" without a
/// file).
pub(super) fn file_line(site: &Site) -> String {
    match (site.file.is_empty(), site.line) {
        (true, _) => String::new(),
        (false, 0) => site.file.clone(),
        (false, line) => format!("{}:{line}", site.file),
    }
}

/// `function` and `file:line` of a site.
fn site_html(site: &Site) -> String {
    let at = file_line(site);
    format!(
        "<code class=\"fn\">{}</code> <span class=\"mono muted at\">{}</span>",
        escape(&site.function),
        escape(&at)
    )
}

/// An amount of a finding's unit: bytes made readable, counts with their
/// unit (`+12 threads`).
fn amount(v: f64, unit: &str, signed: bool) -> String {
    let v = v.round() as i64;
    match (unit, signed) {
        ("bytes", true) => format_delta(v, "bytes"),
        ("bytes", false) => format_value(v, "bytes"),
        (_, true) if v > 0 => format!("+{v} {unit}"),
        _ => format!("{v} {unit}"),
    }
}

fn group_row(g: &Group, unit: &str) -> String {
    format!(
        "<tr><td>{}</td><td>{}</td><td class=\"num\">{} → {}</td><td class=\"num grew\">{}</td></tr>",
        escape(&g.what),
        g.site.as_ref().map(site_html).unwrap_or_default(),
        escape(&amount(g.base, unit, false)),
        escape(&amount(g.new, unit, false)),
        escape(&amount(g.delta(), unit, true)),
    )
}

/// What a finding says, as a block under its alert.
pub(super) fn finding_html(prefix: &str, f: &Finding) -> String {
    let mut out = format!(
        "<div class=\"finding\"><p class=\"summary\">{} {}</p>",
        confidence_badge(f.confidence, &f.detail),
        escape(&f.summary)
    );
    if let Some(site) = &f.site {
        let _ = write!(out, "<p class=\"site\">at {}</p>", site_html(site));
    }
    if !f.groups.is_empty() {
        out.push_str(
            "<table class=\"groups\"><tr><th>what</th><th>where</th><th>base → new</th><th>change</th></tr>",
        );
        for g in f.groups.iter().take(Finding::MAX_GROUPS) {
            out.push_str(&group_row(g, &f.unit));
        }
        out.push_str("</table>");
    }
    if let Some(href) = diff_href(prefix, f) {
        let _ = write!(
            out,
            "<p><a class=\"diff-link\" href=\"{}\">diff of the two {} profiles it compared</a></p>",
            escape(&href),
            escape(&f.kind)
        );
    }
    let _ = write!(
        out,
        "<p class=\"muted detail\">{}</p></div>",
        escape(&f.detail)
    );
    out
}

/// The alerts table, newest first, each finding in a row under its alert.
pub(super) fn alerts_table(prefix: &str, alerts: &[AlertView]) -> String {
    let mut out = String::from(
        "<table id=\"alerts\"><tr><th>time (UTC)</th><th>rule</th><th>level</th><th>message</th></tr>",
    );
    for a in alerts.iter().rev() {
        let _ = write!(
            out,
            "<tr class=\"alert\"><td class=\"mono when\">{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            when(a.at),
            escape(&a.rule),
            badge(&a.to),
            escape(&a.message)
        );
        if let Some(f) = &a.finding {
            let _ = write!(
                out,
                "<tr class=\"finding-row\"><td></td><td colspan=\"3\">{}</td></tr>",
                finding_html(prefix, f)
            );
        }
    }
    out.push_str("</table>");
    out
}

/// The latest alert's finding of a target in one line, for the front page.
pub(super) fn latest_finding(alerts: &[AlertView]) -> String {
    alerts
        .iter()
        .rev()
        .find_map(|a| a.finding.as_ref())
        .map(|f| {
            format!(
                "{} <span class=\"finding-summary\">{}</span>",
                confidence_badge(f.confidence, &f.detail),
                escape(&f.summary)
            )
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn thread_finding() -> Finding {
        let site = Site {
            function: "orders::pool::Pool<K,V>::spawn_worker::{{closure}}".into(),
            file: "/srv/orders/src/pool.rs".into(),
            line: 88,
        };
        Finding {
            kind: "threads".into(),
            unit: "threads".into(),
            summary: "threads: +12 thread 'worker-N' in orders::pool::Pool<K,V>::spawn_worker"
                .into(),
            site: Some(site.clone()),
            confidence: Confidence::Exact,
            detail: "counted from two thread dumps \"before\" & after".into(),
            groups: vec![Group {
                what: "thread 'worker-N'".into(),
                site: Some(site),
                base: 2.0,
                new: 14.0,
            }],
            base: Some("threads-base-1".into()),
            new: Some("threads-new-1".into()),
            url: None,
        }
    }

    fn alert(finding: Option<Finding>) -> AlertView {
        AlertView {
            at: 1_795_439_476.0,
            rule: "threads_growth".into(),
            to: "warning".into(),
            message: "threads grew 30/min".into(),
            finding,
        }
    }

    #[test]
    fn an_alert_shows_its_finding_site_confidence_groups_and_diff_link() {
        let html = alerts_table("/debug/pprof/ui", &[alert(Some(thread_finding()))]);
        assert!(html.contains("threads grew 30/min"), "{html}");
        // The site, escaped, with its file and line.
        assert!(
            html.contains(
                "<code class=\"fn\">orders::pool::Pool&lt;K,V&gt;::spawn_worker::{{closure}}</code>"
            ),
            "{html}"
        );
        assert!(html.contains("/srv/orders/src/pool.rs:88"), "{html}");
        // The confidence with its detail as the tooltip, quotes escaped.
        assert!(
            html.contains(
                "<span class=\"badge conf conf-exact\" title=\"counted from two thread dumps &quot;before&quot; &amp; after\">exact</span>"
            ),
            "{html}"
        );
        // The group: what, base → new, +delta.
        assert!(
            html.contains("<td>thread &#39;worker-N&#39;</td>"),
            "{html}"
        );
        assert!(html.contains("2 threads → 14 threads"), "{html}");
        assert!(html.contains("+12 threads"), "{html}");
        // No url: the link is built from base and new, in the kind's type.
        assert!(
            html.contains(
                "href=\"/debug/pprof/ui/diff?base=threads-base-1&amp;new=threads-new-1&amp;type=threads\""
            ),
            "{html}"
        );
        assert!(!html.contains("<K,V>"), "unescaped: {html}");
    }

    #[test]
    fn a_finding_links_to_its_own_url_and_heap_diffs_read_inuse_space() {
        let mut f = thread_finding();
        f.url = Some("/debug/pprof/ui/diff?base=heap-1&new=heap-9&type=inuse_space".into());
        assert_eq!(diff_href("/ui", &f), f.url.clone());
        // A url that is no path or http(s) URL is not linked as such.
        f.url = Some("javascript:alert(1)".into());
        f.kind = "heap".into();
        assert_eq!(
            diff_href("/ui", &f).as_deref(),
            Some("/ui/diff?base=threads-base-1&new=threads-new-1&type=inuse_space")
        );
        f.base = None;
        assert_eq!(diff_href("/ui", &f), None);
    }

    #[test]
    fn byte_groups_are_readable_and_unknown_findings_say_why() {
        let mut f = Finding::unknown("heap", "bytes", "heap: not enough <snapshots> yet");
        f.groups.push(Group {
            what: "12.0 MiB/min".into(),
            site: None,
            base: 1024.0 * 1024.0,
            new: 25.0 * 1024.0 * 1024.0,
        });
        let html = finding_html("/ui", &f);
        assert!(html.contains("conf-unknown"), "{html}");
        assert!(html.contains("not enough &lt;snapshots&gt; yet"), "{html}");
        assert!(html.contains("1.0 MiB → 25.0 MiB"), "{html}");
        assert!(html.contains("+24.0 MiB"), "{html}");
        assert!(!html.contains("diff-link"), "no captures, no link: {html}");
    }

    #[test]
    fn the_front_page_shows_the_latest_finding() {
        let mut older = thread_finding();
        older.summary = "older".into();
        let alerts = [
            alert(Some(older)),
            alert(Some(thread_finding())),
            alert(None),
        ];
        let cell = latest_finding(&alerts);
        assert!(
            cell.contains(
                "threads: +12 thread &#39;worker-N&#39; in orders::pool::Pool&lt;K,V&gt;"
            ),
            "{cell}"
        );
        assert!(!cell.contains("older"), "{cell}");
        assert_eq!(latest_finding(&[alert(None)]), "");
    }
}
