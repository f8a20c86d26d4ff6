//! HTML building blocks of the web pages: escaping, the page frame with its
//! embedded style (no network needed), state badges, and server-drawn SVG
//! charts (sparklines and timelines with threshold lines and markers).

use std::fmt::Write;

/// Escapes text for HTML element content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Percent-encodes a query or path component.
pub fn url_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

const STYLE: &str = r#"
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#1d232a;background:#fafbfc}
header{background:#1d2733;color:#fff;padding:10px 20px;display:flex;gap:20px;align-items:baseline}
header a{color:#cfe3ff;text-decoration:none}header b{font-size:18px}
main{padding:16px 20px;max-width:1400px}
h1{font-size:20px;margin:8px 0 12px}h2{font-size:16px;margin:22px 0 8px}
table{border-collapse:collapse;background:#fff;font-size:13px}
th,td{border-bottom:1px solid #e3e7eb;padding:5px 9px;text-align:left;vertical-align:middle}
th{background:#f0f3f6;font-weight:600}td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
code,.mono{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12px}td.mono{word-break:break-all;max-width:520px}
.badge{display:inline-block;padding:1px 8px;border-radius:9px;font-size:12px;font-weight:600}
.ok{background:#dcf5e3;color:#13622d}.warning{background:#fff1c2;color:#7a5300}.critical{background:#ffd9d6;color:#9b1c12}
.muted{color:#6b7580}.grew{color:#b3261e}.shrank{color:#1d5fb3}.flag{font-size:11px;padding:0 5px;border-radius:4px;background:#eef;white-space:nowrap;word-break:normal}
.error{background:#ffd9d6;border:1px solid #e8a39d;padding:10px 14px;border-radius:6px;margin:10px 0}
.row{display:flex;gap:16px;flex-wrap:wrap}.card{background:#fff;border:1px solid #e3e7eb;border-radius:6px;padding:10px 12px}
iframe.flame{width:100%;border:1px solid #e3e7eb;background:#fff}
nav.types a{margin-right:10px}nav.types a.on{font-weight:700;text-decoration:none;color:#1d2733}
input[type=search]{padding:5px 8px;width:280px;border:1px solid #c5ccd3;border-radius:4px}
.suspect-growing{background:#fff4f3}tr.library td{color:#4a5560}
.conf-exact,.conf-clear{background:#dbe7ff;color:#1d3f8f}.conf-likely,.conf-what-only{background:#eceef9;color:#3b4470}.conf-unknown{background:#eceff1;color:#5b6570}
tr.finding-row td{border-bottom:2px solid #e3e7eb}.finding p{margin:3px 0}.finding .summary{font-weight:600}.finding table.groups{margin:4px 0}
.finding .detail{font-size:12px}code.fn{word-break:break-all}td.latest-finding{max-width:360px;font-size:12px}td.when{white-space:nowrap}
"#;

/// A whole page: header with the navigation, then `body` (already HTML).
pub fn page(title: &str, nav: &[(&str, String)], body: &str) -> String {
    let mut links = String::new();
    for (label, href) in nav {
        let _ = write!(links, "<a href=\"{}\">{}</a>", escape(href), escape(label));
    }
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <title>{t} · leakscope</title><style>{STYLE}</style></head><body>\
         <header><b>leakscope</b>{links}</header><main><h1>{t}</h1>{body}</main></body></html>",
        t = escape(title)
    )
}

/// A level or status as a colored badge (`ok`, `warning`, `critical`;
/// anything else is shown plain).
pub fn badge(level: &str) -> String {
    let class = match level {
        "ok" | "running" => "ok",
        "warning" | "waiting" | "starting" | "counts only" => "warning",
        _ => "critical",
    };
    format!("<span class=\"badge {class}\">{}</span>", escape(level))
}

/// A horizontal line across a chart.
#[derive(Debug, Clone)]
pub struct Threshold {
    /// What it is (`warning`, `critical`).
    pub label: String,
    /// Its value.
    pub value: f64,
}

impl Threshold {
    /// Red for critical lines, amber for the rest.
    fn color(&self) -> &'static str {
        if self.label == "critical" {
            "#d93025"
        } else {
            "#e0a800"
        }
    }
}

/// A vertical marker on a chart's time axis.
#[derive(Debug, Clone)]
pub struct Marker {
    /// When (Unix seconds).
    pub at: f64,
    /// Tooltip text.
    pub label: String,
    /// Link, for snapshot markers.
    pub href: Option<String>,
    /// `true` for alerts (red line), `false` for snapshots (blue dot).
    pub alert: bool,
}

fn bounds(points: &[(f64, f64)], thresholds: &[Threshold]) -> (f64, f64, f64, f64) {
    let (mut t0, mut t1) = (f64::INFINITY, f64::NEG_INFINITY);
    let (mut v0, mut v1) = (f64::INFINITY, f64::NEG_INFINITY);
    for &(t, v) in points {
        t0 = t0.min(t);
        t1 = t1.max(t);
        v0 = v0.min(v);
        v1 = v1.max(v);
    }
    for th in thresholds {
        v0 = v0.min(th.value);
        v1 = v1.max(th.value);
    }
    if !t0.is_finite() {
        (t0, t1) = (0.0, 1.0);
    }
    if !v0.is_finite() {
        (v0, v1) = (0.0, 1.0);
    }
    v0 = v0.min(0.0);
    if t1 <= t0 {
        t1 = t0 + 1.0;
    }
    if v1 <= v0 {
        v1 = v0 + 1.0;
    }
    (t0, t1, v0, v1 * 1.05)
}

/// The `points` attribute of a polyline through `points` in chart
/// coordinates.
fn polyline(points: &[(f64, f64)], x: &dyn Fn(f64) -> f64, y: &dyn Fn(f64) -> f64) -> String {
    let mut out = String::new();
    for (i, &(t, v)) in points.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        let _ = write!(out, "{:.1},{:.1}", x(t), y(v));
    }
    out
}

/// A small line chart without axes, for tables.
pub fn sparkline(points: &[(f64, f64)], thresholds: &[Threshold], w: u32, h: u32) -> String {
    let (t0, t1, v0, v1) = bounds(points, thresholds);
    let x = |t: f64| (t - t0) / (t1 - t0) * f64::from(w);
    let y = |v: f64| f64::from(h) - (v - v0) / (v1 - v0) * f64::from(h - 2) - 1.0;
    let mut svg = format!(
        "<svg class=\"spark\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" xmlns=\"http://www.w3.org/2000/svg\">"
    );
    for th in thresholds {
        let color = th.color();
        let _ = write!(
            svg,
            "<line x1=\"0\" x2=\"{w}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"{color}\" stroke-dasharray=\"3,2\" stroke-width=\"1\"/>",
            y = y(th.value)
        );
    }
    let _ = write!(
        svg,
        "<polyline fill=\"none\" stroke=\"#2b6cb0\" stroke-width=\"1.5\" points=\"{}\"/></svg>",
        polyline(points, &x, &y)
    );
    svg
}

/// A timeline chart with value and time labels, threshold lines and
/// markers (alerts as red lines, snapshots as blue dots that link).
pub fn chart(
    title: &str,
    points: &[(f64, f64)],
    thresholds: &[Threshold],
    markers: &[Marker],
    fmt: &dyn Fn(f64) -> String,
) -> String {
    chart_lines(title, &[("", points)], thresholds, markers, fmt)
}

/// Colors of the lines of a multi-line chart, in order.
const LINE_COLORS: [&str; 8] = [
    "#2b6cb0", "#c05621", "#2f855a", "#6b46c1", "#b83280", "#2c7a7b", "#975a16", "#4a5568",
];

/// [`chart`] with several named lines (fds by kind, sockets by state) and a
/// legend; the first line is drawn last, on top.
pub fn chart_lines(
    title: &str,
    lines: &[(&str, &[(f64, f64)])],
    thresholds: &[Threshold],
    markers: &[Marker],
    fmt: &dyn Fn(f64) -> String,
) -> String {
    let (w, h, left, bottom) = (640.0, 150.0, 64.0, 20.0);
    let all: Vec<(f64, f64)> = lines.iter().flat_map(|(_, p)| p.iter().copied()).collect();
    let (t0, t1, v0, v1) = bounds(&all, thresholds);
    let x = |t: f64| left + (t - t0) / (t1 - t0) * (w - left - 8.0);
    let y = |v: f64| (h - bottom) - (v - v0) / (v1 - v0) * (h - bottom - 8.0);
    let mut svg = format!(
        "<svg class=\"chart\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" xmlns=\"http://www.w3.org/2000/svg\" font-family=\"sans-serif\" font-size=\"10\">\
         <rect x=\"{left}\" y=\"0\" width=\"{}\" height=\"{}\" fill=\"#fff\" stroke=\"#e3e7eb\"/>\
         <text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text><text x=\"{}\" y=\"12\" text-anchor=\"end\">{}</text>",
        w - left - 8.0,
        h - bottom,
        left - 4.0,
        h - bottom,
        escape(&fmt(v0)),
        left - 4.0,
        escape(&fmt(v1 / 1.05)),
    );
    let _ = write!(
        svg,
        "<text x=\"{}\" y=\"11\" font-weight=\"600\">{}</text>",
        left + 6.0,
        escape(title)
    );
    let span = t1 - t0;
    let _ = write!(
        svg,
        "<text x=\"{left}\" y=\"{}\">−{}</text><text x=\"{}\" y=\"{}\" text-anchor=\"end\">now</text>",
        h - 6.0,
        escape(&human_span(span)),
        w - 8.0,
        h - 6.0
    );
    for th in thresholds {
        let color = th.color();
        let _ = write!(
            svg,
            "<line class=\"threshold\" x1=\"{left}\" x2=\"{}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"{color}\" stroke-dasharray=\"5,3\"><title>{} {}</title></line>",
            w - 8.0,
            escape(&th.label),
            escape(&fmt(th.value)),
            y = y(th.value)
        );
    }
    for (i, (name, points)) in lines.iter().enumerate().rev() {
        let color = LINE_COLORS[i % LINE_COLORS.len()];
        let _ = write!(
            svg,
            "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"1.6\" points=\"{}\"><title>{}</title></polyline>",
            polyline(points, &x, &y),
            escape(name)
        );
        if !name.is_empty() {
            let last = points.last().map_or(String::new(), |&(_, v)| fmt(v));
            let _ = write!(
                svg,
                "<text class=\"legend\" x=\"{}\" y=\"{}\" text-anchor=\"end\" fill=\"{color}\">{} {}</text>",
                w - 12.0,
                14.0 + 11.0 * i as f64,
                escape(name),
                escape(&last)
            );
        }
    }
    for m in markers.iter().filter(|m| m.at >= t0 && m.at <= t1) {
        let mx = x(m.at);
        if m.alert {
            let _ = write!(
                svg,
                "<line class=\"alert-marker\" x1=\"{mx:.1}\" x2=\"{mx:.1}\" y1=\"0\" y2=\"{}\" stroke=\"#d93025\" stroke-width=\"1\"><title>{}</title></line>",
                h - bottom,
                escape(&m.label)
            );
        } else {
            let dot = format!(
                "<circle class=\"snapshot-marker\" cx=\"{mx:.1}\" cy=\"{}\" r=\"4\" fill=\"#2b6cb0\"><title>{}</title></circle>",
                h - bottom,
                escape(&m.label)
            );
            match &m.href {
                Some(href) => {
                    let _ = write!(svg, "<a href=\"{}\">{dot}</a>", escape(href));
                }
                None => svg.push_str(&dot),
            }
        }
    }
    svg.push_str("</svg>");
    svg
}

/// `90 s`, `15 min`, `2.0 h`.
pub fn human_span(secs: f64) -> String {
    if secs < 120.0 {
        format!("{secs:.0} s")
    } else if secs < 7200.0 {
        format!("{:.0} min", secs / 60.0)
    } else {
        format!("{:.1} h", secs / 3600.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_encodes() {
        assert_eq!(
            escape("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
        assert_eq!(url_encode("a b/c?d"), "a%20b%2Fc%3Fd");
    }

    #[test]
    fn charts_draw_lines_thresholds_and_markers() {
        let points = [(0.0, 1.0), (10.0, 5.0), (20.0, 9.0)];
        let th = [Threshold {
            label: "warning".into(),
            value: 8.0,
        }];
        let s = sparkline(&points, &th, 100, 20);
        assert!(
            s.contains("<polyline") && s.contains("stroke-dasharray"),
            "{s}"
        );
        let markers = [
            Marker {
                at: 15.0,
                label: "warning: threads".into(),
                href: None,
                alert: true,
            },
            Marker {
                at: 5.0,
                label: "heap <x>".into(),
                href: Some("/ui/profile/a".into()),
                alert: false,
            },
            Marker {
                at: 99.0,
                label: "outside".into(),
                href: None,
                alert: true,
            },
        ];
        let c = chart("threads", &points, &th, &markers, &|v| format!("{v:.0}"));
        assert_eq!(c.matches("alert-marker").count(), 1, "{c}");
        assert!(c.contains("<a href=\"/ui/profile/a\">"), "{c}");
        assert!(c.contains("heap &lt;x&gt;"), "{c}");
        assert!(c.contains("class=\"threshold\""), "{c}");
        // Empty input still draws.
        assert!(sparkline(&[], &[], 10, 10).ends_with("</svg>"));
    }
}
