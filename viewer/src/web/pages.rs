//! The bodies of the web pages (see the table in `web`). Each function
//! reads what it needs from the [`Source`] (blocking) and returns HTML or
//! SVG, or `(status, title, message)` for an error page.

use std::collections::HashMap;
use std::fmt::Write;

use axum::http::StatusCode;
use leakscope_agent::explain::heap::HeapSnapshot;
use leakscope_agent::explain::trend::Trend;
use leakscope_agent::profile::Profile;

use super::alerts::{alerts_table, file_line, latest_finding};
use super::{MetricView, SnapshotView, Source, TargetView};
use crate::fold::{FoldOptions, Folded, fold};
use crate::render::html::{
    Marker, badge, chart, chart_lines, escape, human_span, page, sparkline, url_encode,
};
use crate::render::table::{format_delta, format_value};
use crate::render::{FlameOptions, flamegraph};
use crate::suspects::{
    Suspect, SuspectOptions, bytes_per_minute, leak_suspects, reduce_profiles, total_in_use,
};

/// An error page's status, title and message.
pub(super) type PageError = (StatusCode, String, String);

/// Heap profiles of a target that leak suspects are computed over, at most,
/// when the source has no reduced snapshots at hand.
const HEAP_SNAPSHOTS: usize = 16;

pub(super) fn nav(prefix: &str) -> Vec<(&'static str, String)> {
    vec![("overview", format!("{prefix}/"))]
}

/// `2026-11-23 13:05:01` (UTC) of Unix seconds.
pub(super) fn when(unix: f64) -> String {
    let secs = unix.max(0.0) as u64;
    let (year, month, day) = leakscope_agent::store::civil_from_days(secs / 86_400);
    let rem = secs % 86_400;
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

pub(super) fn error(prefix: &str, title: &str, message: &str) -> String {
    page(
        title,
        &nav(prefix),
        &format!(
            "<div class=\"error\" id=\"error\">{}</div>",
            escape(message)
        ),
    )
}

pub(super) fn error_svg(message: &str) -> String {
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"900\" height=\"40\"><text x=\"10\" y=\"25\" \
         font-family=\"sans-serif\" font-size=\"14\" fill=\"#9b1c12\">{}</text></svg>",
        escape(message)
    )
}

pub(super) fn load(source: &dyn Source, id: &str) -> Result<Profile, PageError> {
    if !source.snapshots(None).iter().any(|s| s.id == id) {
        return Err((
            StatusCode::NOT_FOUND,
            "No such snapshot".into(),
            format!("no snapshot {id:?}: it may have been deleted or aged out"),
        ));
    }
    source.load(id).map_err(|m| {
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            "Cannot read the profile".into(),
            m,
        )
    })
}

pub(super) fn folded(p: &Profile, kind: Option<&str>, id: &str) -> Result<Folded, PageError> {
    let o = FoldOptions {
        sample_type: kind.map(str::to_owned),
    };
    fold(p, &o).map_err(|e| {
        (
            StatusCode::BAD_REQUEST,
            "Unknown sample type".into(),
            format!("{id}: {e}"),
        )
    })
}

fn metric_format(unit: &str) -> impl Fn(f64) -> String + '_ {
    move |v| {
        if unit == "bytes" {
            format_value(v as i64, "bytes")
        } else if v.fract() == 0.0 {
            format!("{v:.0}")
        } else {
            format!("{v:.2}")
        }
    }
}

fn snapshot_link(prefix: &str, s: &SnapshotView) -> String {
    format!(
        "<a href=\"{prefix}/profile/{}\">{}</a>",
        url_encode(&s.id),
        escape(&s.id)
    )
}

/// The snapshot table with base/new pickers and a compare button.
fn snapshot_picker(prefix: &str, snaps: &[SnapshotView]) -> String {
    if snaps.is_empty() {
        return "<p class=\"muted\">No snapshots yet.</p>".into();
    }
    let mut out = format!(
        "<form method=\"get\" action=\"{prefix}/diff\" id=\"compare\"><table><tr><th>base</th><th>new</th>\
         <th>time (UTC)</th><th>target</th><th>kind</th><th>trigger</th><th>size</th><th>snapshot</th></tr>"
    );
    let n = snaps.len();
    for (i, s) in snaps.iter().enumerate() {
        let id = escape(&s.id);
        let base_checked = if n >= 2 && i == n - 2 { " checked" } else { "" };
        let new_checked = if i == n - 1 { " checked" } else { "" };
        let _ = write!(
            out,
            "<tr><td><input type=\"radio\" name=\"base\" value=\"{id}\"{base_checked}></td>\
             <td><input type=\"radio\" name=\"new\" value=\"{id}\"{new_checked}></td>\
             <td class=\"mono\">{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"mono\">{}</td></tr>",
            when(s.time),
            escape(&s.target),
            escape(&s.kind),
            escape(&s.trigger),
            // Profiles held in memory have no file size.
            if s.bytes == 0 {
                String::new()
            } else {
                format_value(s.bytes as i64, "bytes")
            },
            snapshot_link(prefix, s)
        );
    }
    out.push_str(
        "</table><p><label><input type=\"checkbox\" name=\"normalize\" value=\"1\"> normalized</label> \
         <button type=\"submit\">Compare base → new</button></p></form>",
    );
    out
}

fn metric_cell(m: &MetricView) -> String {
    let last = m
        .points
        .last()
        .map_or(String::new(), |&(_, v)| metric_format(&m.unit)(v));
    format!(
        "<td>{}</td><td class=\"num\">{}</td>",
        sparkline(&m.points, &m.thresholds, 120, 24),
        escape(&last)
    )
}

pub(super) fn index(prefix: &str, source: &dyn Source) -> String {
    let targets = source.targets();
    let mut body = String::new();
    for note in source.notes() {
        let _ = write!(body, "<div class=\"error\">{}</div>", escape(&note));
    }
    if !targets.is_empty() {
        body.push_str(
            "<h2>Targets</h2><table id=\"targets\"><tr><th>target</th><th>state</th><th>pid</th>",
        );
        let names = ["threads", "open_fds", "rss_bytes", "tasks"];
        for n in names {
            let _ = write!(body, "<th colspan=\"2\">{n}</th>");
        }
        body.push_str("<th>latest finding</th></tr>");
        for t in &targets {
            let _ = write!(
                body,
                "<tr><td><a href=\"{prefix}/target/{}\">{}</a></td><td>{} {}</td><td class=\"num\">{}</td>",
                url_encode(&t.name),
                escape(&t.name),
                badge(&t.status),
                badge(&t.level),
                t.pid.map_or(String::new(), |p| p.to_string())
            );
            for n in names {
                let m = t.metrics.iter().find(|m| {
                    m.name == n
                        || (n == "tasks" && (m.name == "tokio_tasks" || m.name == "goroutines"))
                });
                match m {
                    Some(m) => body.push_str(&metric_cell(m)),
                    None => body.push_str("<td></td><td></td>"),
                }
            }
            let _ = write!(
                body,
                "<td class=\"latest-finding\">{}</td></tr>",
                latest_finding(&t.alerts)
            );
        }
        body.push_str("</table>");
    }
    let snaps = source.snapshots(None);
    let shown = &snaps[snaps.len().saturating_sub(50)..];
    let _ = write!(body, "<h2>Snapshots ({})</h2>", snaps.len());
    body.push_str(&snapshot_picker(prefix, shown));
    page(&source.title(), &nav(prefix), &body)
}

/// The target's recent heap snapshots reduced to sites, oldest first: from
/// the source when it has them at hand, else its last heap profiles
/// (live dumps aside) loaded and reduced.
fn recent_heaps(source: &dyn Source, t: &TargetView) -> Vec<HeapSnapshot> {
    if let Some(snaps) = source.heap_sites(&t.name) {
        return snaps;
    }
    let heaps: Vec<SnapshotView> = source
        .snapshots(Some(&t.name))
        .into_iter()
        .filter(|s| s.kind == "heap" && s.trigger != "live")
        .collect();
    let loaded: Vec<(f64, Profile)> = heaps[heaps.len().saturating_sub(HEAP_SNAPSHOTS)..]
        .iter()
        .filter_map(|s| source.load(&s.id).ok().map(|p| (s.time, p)))
        .collect();
    let refs: Vec<(f64, &Profile)> = loaded.iter().map(|(t, p)| (*t, p)).collect();
    reduce_profiles(&refs)
}

/// Own-code rows shown, at most; library-only rows follow, at most
/// [`LIBRARY_ROWS`].
const OWN_ROWS: usize = 12;
/// Library-only rows shown, at most.
const LIBRARY_ROWS: usize = 5;

fn suspect_row(out: &mut String, s: &Suspect) {
    let trend = s.fit.trend;
    let class = match trend {
        Trend::Growing => "critical",
        Trend::Saturating => "warning",
        Trend::Stable | Trend::Freed => "ok",
    };
    let why = format!(
        "change {:.1}× the sampling noise over all snapshots, {:.1}× over the recent half",
        s.overall_sureness(),
        s.sureness()
    );
    let site = &s.key.site;
    let at = file_line(site);
    let library = if s.key.own {
        ""
    } else {
        " <span class=\"flag\" title=\"no frame of the program's own code on these stacks\">library only</span>"
    };
    let points: Vec<(f64, f64)> = s.points.iter().map(|p| (p.t, p.value)).collect();
    // A rate only where it stands above the sampling noise.
    let growth = if trend == Trend::Growing {
        format_delta(bytes_per_minute(s) as i64, "bytes")
    } else {
        "<span class=\"muted\">–</span>".to_owned()
    };
    let _ = write!(
        out,
        "<tr class=\"suspect-{}{}\"><td><span class=\"badge {class}\" title=\"{}\">{}</span></td>\
         <td class=\"mono\">{}{library}</td><td class=\"mono\">{}</td>\
         <td class=\"num\">{}</td><td class=\"num\">{}</td><td>{}</td></tr>",
        trend.as_str(),
        if s.key.own { "" } else { " library" },
        escape(&why),
        trend.as_str(),
        escape(&site.function),
        escape(&at),
        growth,
        format_value(s.last() as i64, "bytes"),
        sparkline(&points, &[], 140, 24)
    );
}

fn suspects_table(heaps: &[HeapSnapshot]) -> String {
    if heaps.len() < 3 {
        return format!(
            "<p class=\"muted\" id=\"suspects\">Leak suspects need 3 heap snapshots of this target; it has {}.</p>",
            heaps.len()
        );
    }
    let suspects = leak_suspects(heaps, &SuspectOptions::default());
    let mut out = format!(
        "<table id=\"suspects\"><tr><th>trend</th><th>function</th><th>file:line</th><th>growth / min</th><th>in use</th><th>over {} snapshots, {}</th></tr>",
        suspects.snapshots,
        escape(&human_span(suspects.span_secs))
    );
    for s in suspects
        .own()
        .take(OWN_ROWS)
        .chain(suspects.library().take(LIBRARY_ROWS))
    {
        suspect_row(&mut out, s);
    }
    out.push_str("</table>");
    let _ = write!(
        out,
        "<p class=\"muted\" id=\"leakscope-own\">leakscope's own: {} in use (its allocations are no suspect)</p>",
        format_value(suspects.leakscope_bytes as i64, "bytes")
    );
    out
}

pub(super) fn target(prefix: &str, source: &dyn Source, name: &str) -> Result<String, PageError> {
    let Some(t) = source.targets().into_iter().find(|t| t.name == name) else {
        return Err((
            StatusCode::NOT_FOUND,
            "No such target".into(),
            format!("no target called {name:?}"),
        ));
    };
    let snaps = source.snapshots(Some(name));
    let mut body = format!(
        "<p>{} {} {}{}</p>",
        badge(&t.status),
        badge(&t.level),
        t.pid.map_or(String::new(), |p| format!("pid {p}")),
        t.limited.as_ref().map_or(String::new(), |l| format!(
            " <span class=\"muted\">({})</span>",
            escape(l)
        ))
    );
    body.push_str("<h2>Leak suspects</h2>");
    let heaps = recent_heaps(source, &t);
    body.push_str(&suspects_table(&heaps));
    let markers: Vec<Marker> = t
        .alerts
        .iter()
        .map(|a| Marker {
            at: a.at,
            label: format!("{} → {}: {}", a.rule, a.to, a.message),
            href: None,
            alert: true,
        })
        .chain(snaps.iter().map(|s| Marker {
            at: s.time,
            label: format!("{} snapshot ({})", s.kind, s.trigger),
            href: Some(format!("{prefix}/profile/{}", url_encode(&s.id))),
            alert: false,
        }))
        .collect();
    body.push_str("<h2>Timeline</h2><div class=\"row\" id=\"timeline\">");
    if heaps.len() >= 2 {
        let points: Vec<(f64, f64)> = heaps.iter().map(|s| (s.t, total_in_use(s))).collect();
        let _ = write!(
            body,
            "<div class=\"card\">{}</div>",
            chart(
                "heap in use (snapshots)",
                &points,
                &[],
                &markers,
                &metric_format("bytes")
            )
        );
    }
    for m in &t.metrics {
        let drawn = if m.lines.is_empty() {
            chart(
                &m.name,
                &m.points,
                &m.thresholds,
                &markers,
                &metric_format(&m.unit),
            )
        } else {
            let lines: Vec<(&str, &[(f64, f64)])> = m
                .lines
                .iter()
                .map(|(n, p)| (n.as_str(), p.as_slice()))
                .collect();
            chart_lines(
                &m.name,
                &lines,
                &m.thresholds,
                &markers,
                &metric_format(&m.unit),
            )
        };
        let _ = write!(body, "<div class=\"card\">{drawn}</div>");
    }
    body.push_str("</div>");
    if !t.breakdown.is_empty() {
        body.push_str("<h2>Last breakdown</h2><div class=\"row\">");
        let mut groups: Vec<&str> = t.breakdown.iter().map(|(g, _, _)| g.as_str()).collect();
        groups.dedup();
        for g in groups {
            let _ = write!(body, "<table><tr><th colspan=\"2\">{}</th></tr>", escape(g));
            for (_, k, n) in t.breakdown.iter().filter(|(gg, _, _)| gg == g) {
                let _ = write!(
                    body,
                    "<tr><td>{}</td><td class=\"num\">{n}</td></tr>",
                    escape(k)
                );
            }
            body.push_str("</table>");
        }
        body.push_str("</div>");
    }
    if !t.alerts.is_empty() {
        body.push_str("<h2>Alerts</h2>");
        body.push_str(&alerts_table(prefix, &t.alerts));
    }
    body.push_str("<h2>Snapshots: pick two to diff</h2>");
    body.push_str(&snapshot_picker(
        prefix,
        &snaps[snaps.len().saturating_sub(50)..],
    ));
    Ok(page(name, &nav(prefix), &body))
}

/// `?type=` links for every sample type, the current one marked.
pub(super) fn type_nav(
    href: &dyn Fn(&str) -> String,
    types: &[(String, String)],
    current: &str,
) -> String {
    let mut out = String::from("<nav class=\"types\">sample type: ");
    for (t, _) in types {
        let class = if t == current { " class=\"on\"" } else { "" };
        let _ = write!(
            out,
            "<a{class} href=\"{}\">{}</a>",
            escape(&href(t)),
            escape(t)
        );
    }
    out.push_str("</nav>");
    out
}

/// A search box that highlights matching frames in every flamegraph frame
/// of the page (inferno's `search`), and the script behind it; the script
/// also scrolls each flamegraph frame to its bottom once loaded, where the
/// root and the widest frames are (the narrow towers are above). An
/// iframe's `load` does not reach `window`, so it is caught on `document`
/// while capturing.
pub(super) fn search_box() -> &'static str {
    "<p><input type=\"search\" id=\"search\" placeholder=\"search frames (regex)\"> \
     <span class=\"muted\">click a frame to zoom; hover for details</span></p>\
     <script>\
     document.getElementById('search').addEventListener('input', function (e) {\
       var term = e.target.value;\
       document.querySelectorAll('iframe.flame').forEach(function (f) {\
         var w = f.contentWindow;\
         if (!w || !w.search) return;\
         w.reset_search();\
         if (term) { try { w.search(term); } catch (err) {} }\
       });\
     });\
     document.addEventListener('load', function (e) {\
       var f = e.target;\
       if (!f || f.tagName != 'IFRAME' || !f.classList.contains('flame')) return;\
       try {\
         var d = f.contentDocument;\
         f.contentWindow.scrollTo(0, d.documentElement.scrollHeight);\
       } catch (err) {}\
     }, true);\
     </script>"
}

struct TopRow {
    function: String,
    at: String,
    flat: i64,
    cum: i64,
}

/// Flat (leaf) and cumulative (anywhere on the stack) values per function.
fn top(f: &Folded) -> Vec<TopRow> {
    let mut rows: HashMap<std::sync::Arc<str>, TopRow> = HashMap::new();
    for (frames, v) in &f.stacks {
        let mut seen = std::collections::HashSet::new();
        for (i, fr) in frames.iter().enumerate() {
            let row = rows.entry(fr.function.clone()).or_insert_with(|| TopRow {
                function: fr.function.to_string(),
                at: if fr.file.is_empty() {
                    String::new()
                } else {
                    format!("{}:{}", fr.file, fr.line)
                },
                flat: 0,
                cum: 0,
            });
            if seen.insert(fr.function.clone()) {
                row.cum += v;
            }
            if i + 1 == frames.len() {
                row.flat += v;
            }
        }
    }
    let mut out: Vec<TopRow> = rows.into_values().collect();
    out.sort_by(|a, b| {
        b.flat
            .cmp(&a.flat)
            .then(b.cum.cmp(&a.cum))
            .then(a.function.cmp(&b.function))
    });
    out
}

pub(super) fn profile(
    prefix: &str,
    source: &dyn Source,
    id: &str,
    kind: Option<&str>,
) -> Result<String, PageError> {
    let p = load(source, id)?;
    let f = folded(&p, kind, id)?;
    let total = f.total();
    let href = |t: &str| format!("{prefix}/profile/{}?type={}", url_encode(id), url_encode(t));
    let mut body = type_nav(&href, &f.sample_types, &f.sample_type);
    let _ = write!(
        body,
        "<p>total {}: <b>{}</b> in {} stacks</p>",
        escape(&f.sample_type),
        format_value(total, &f.unit),
        f.stacks.len()
    );
    body.push_str(search_box());
    let _ = write!(
        body,
        "<iframe class=\"flame\" id=\"flame\" style=\"height:560px\" src=\"{prefix}/profile/{}/flame.svg?type={}\"></iframe>",
        url_encode(id),
        url_encode(&f.sample_type)
    );
    body.push_str("<h2>Top</h2><table id=\"top\"><tr><th>flat</th><th>flat%</th><th>cum</th><th>cum%</th><th>function</th><th>file:line</th></tr>");
    let pct = |v: i64| {
        if total == 0 {
            0.0
        } else {
            v as f64 * 100.0 / total as f64
        }
    };
    for r in top(&f).iter().take(30) {
        let _ = write!(
            body,
            "<tr><td class=\"num\">{}</td><td class=\"num\">{:.1}%</td><td class=\"num\">{}</td><td class=\"num\">{:.1}%</td>\
             <td class=\"mono\">{}</td><td class=\"mono\">{}</td></tr>",
            format_value(r.flat, &f.unit),
            pct(r.flat),
            format_value(r.cum, &f.unit),
            pct(r.cum),
            escape(&r.function),
            escape(&r.at)
        );
    }
    body.push_str("</table>");
    Ok(page(&format!("Profile {id}"), &nav(prefix), &body))
}

pub(super) fn profile_svg(
    source: &dyn Source,
    id: &str,
    kind: Option<&str>,
) -> Result<String, PageError> {
    let p = load(source, id)?;
    let f = folded(&p, kind, id)?;
    let o = FlameOptions::new(format!("{} ({})", id, f.sample_type));
    flamegraph(&f, &o).map_err(|e| {
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            "Render".into(),
            e.to_string(),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::web::AlertView;
    use leakscope_agent::explain::{Confidence, Finding};

    #[test]
    fn dates_are_utc_civil() {
        assert_eq!(when(0.0), "1970-01-01 00:00:00");
        assert_eq!(when(951_782_400.0), "2000-02-29 00:00:00");
        assert_eq!(when(1_795_439_476.9), "2026-11-23 13:11:16");
    }

    const MIB: f64 = 1024.0 * 1024.0;

    /// One target whose reduced heap snapshots are at hand, with an alert
    /// that names its leak.
    struct Reduced;

    impl Source for Reduced {
        fn title(&self) -> String {
            "test".into()
        }
        fn targets(&self) -> Vec<TargetView> {
            let mut finding = Finding::unknown("heap", "bytes", "");
            finding.summary = "heap: growing at Store<K>::remember".into();
            finding.confidence = Confidence::Clear;
            vec![TargetView {
                name: "orders".into(),
                alerts: vec![AlertView {
                    at: 1_700_000_600.0,
                    rule: "heap_growth".into(),
                    to: "warning".into(),
                    message: "heap grew".into(),
                    finding: Some(finding),
                }],
                ..TargetView::default()
            }]
        }
        fn snapshots(&self, _: Option<&str>) -> Vec<SnapshotView> {
            Vec::new()
        }
        fn load(&self, id: &str) -> Result<Profile, String> {
            Err(format!(
                "{id}: the pages must not load profiles of this source"
            ))
        }
        fn heap_sites(&self, _: &str) -> Option<Vec<HeapSnapshot>> {
            let app = "/srv/orders/src/store.rs";
            let std = "/rustc/1/library/alloc/src/raw_vec.rs";
            let hyper = "/root/.cargo/registry/src/x/hyper-1.0.0/src/io.rs";
            Some(
                (0..10)
                    .map(|i| {
                        let i = f64::from(i);
                        let mut s = HeapSnapshot {
                            t: 1_700_000_000.0 + 60.0 * i,
                            period: 512.0 * 1024.0,
                            ..HeapSnapshot::default()
                        };
                        let leak = 10.0 * MIB * (i + 1.0);
                        let cache = 32.0 * MIB * i.min(2.0);
                        let grow = ("alloc::raw_vec::finish_grow", std, 1);
                        s.add(&[grow, ("orders::Store<K>::remember", app, 42)], leak, leak);
                        s.add(&[grow, ("orders::cache::put", app, 9)], cache, cache);
                        s.add(&[("hyper::io::Buffered::new", hyper, 5)], MIB, MIB);
                        let enc = "leakscope_agent::profile::Profile::encode_gzip";
                        s.add(
                            &[grow, (enc, "/w/agent/src/model.rs", 1)],
                            3.0 * MIB,
                            3.0 * MIB,
                        );
                        s
                    })
                    .collect(),
            )
        }
    }

    #[test]
    fn the_target_page_ranks_suspects_by_the_shared_analysis_and_shows_the_finding() {
        let html = target("/ui", &Reduced, "orders").expect("page");
        let table = &html[html
            .find("<table id=\"suspects\">")
            .expect("suspects table")..];
        let table = &table[..table.find("</table>").expect("end")];
        let rows: Vec<&str> = table.split("<tr class=\"suspect-").skip(1).collect();
        assert_eq!(rows.len(), 3, "{table}");
        assert!(rows[0].starts_with("growing\""), "{}", rows[0]);
        assert!(
            rows[0].contains("orders::Store&lt;K&gt;::remember"),
            "{}",
            rows[0]
        );
        assert!(
            rows[0].contains("/srv/orders/src/store.rs:42"),
            "{}",
            rows[0]
        );
        assert!(rows[1].starts_with("saturating\""), "{}", rows[1]);
        assert!(rows[1].contains("orders::cache::put"), "{}", rows[1]);
        // The library-only site comes last, marked.
        assert!(rows[2].starts_with("stable library\""), "{}", rows[2]);
        assert!(rows[2].contains("library only"), "{}", rows[2]);
        // leakscope's own allocations are one line, no row.
        assert!(!table.contains("leakscope_agent"), "{table}");
        assert!(html.contains("leakscope's own: 3.0 MiB in use"), "{html}");
        // The heap chart adds them all up: 100 + 64 + 1 + 3 MiB at the end.
        assert!(html.contains("heap in use (snapshots)"), "{html}");
        assert!(html.contains("168.0 MiB"), "{html}");
        // The alert and its finding.
        assert!(
            html.contains("heap: growing at Store&lt;K&gt;::remember"),
            "{html}"
        );
        assert!(html.contains("conf-clear"), "{html}");
        let index = index("/ui", &Reduced);
        assert!(index.contains("<td class=\"latest-finding\">"), "{index}");
        assert!(
            index.contains("heap: growing at Store&lt;K&gt;::remember"),
            "{index}"
        );
    }
}
