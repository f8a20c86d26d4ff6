//! The JUnit XML of `leakscope check --junit FILE`: the format the test
//! views of CI systems read (GitHub Actions' JUnit actions, GitLab's
//! `artifacts:reports:junit`, Jenkins' `junit` step).
//!
//! One `<testsuite name="leakscope check">` inside `<testsuites>`, with
//! `tests`, `failures`, `errors`, `skipped`, `time` and `timestamp`; one
//! `<testcase>` per kind (`classname` the target, `name` the kind, `time`
//! the check's length, since every kind is watched for all of it); a
//! `<failure>` whose `message` names what stayed behind and where, with the
//! finding's detail and groups in its body, and the site's `file` and
//! `line` on the test case (GitLab links them, GitHub's JUnit actions
//! annotate the line). A check that could not run adds
//! a `check` test case with an `<error>`, and kinds it had not judged to the
//! end are `<skipped>`. The settings are `<properties>`, the phases and the
//! load `<system-out>`.
//!
//! Everything from outside (function names, the load command's output) is
//! escaped, and characters XML 1.0 does not allow (control characters,
//! U+FFFE, U+FFFF) are written as `\u{..}`, so the file always parses.

use std::fmt::Write;

use super::{
    amount, course, delta, duration_secs, failure_message, iso_utc, load_line, started, tail_lines,
    verdict_word,
};
use crate::check::model::{CheckReport, KindVerdict, Outcome};

/// The JUnit XML of `r`.
pub fn junit(r: &CheckReport) -> String {
    let time = duration_secs(r);
    let errored = r.outcome == Outcome::Error;
    let failures = r.kinds.iter().filter(|k| k.leaked).count();
    let skipped = if errored {
        r.kinds.iter().filter(|k| !k.leaked).count()
    } else {
        0
    };
    let errors = usize::from(errored);
    let tests = r.kinds.len() + errors;

    let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let counts = format!(
        "tests=\"{tests}\" failures=\"{failures}\" errors=\"{errors}\" skipped=\"{skipped}\" time=\"{time:.3}\""
    );
    let _ = writeln!(x, "<testsuites name=\"leakscope check\" {counts}>");
    let _ = write!(x, "  <testsuite name=\"leakscope check\" {counts}");
    if let Some(t) = started(r) {
        let _ = write!(x, " timestamp=\"{}\"", iso_utc(t));
    }
    x.push_str(">\n");

    x.push_str("    <properties>\n");
    let mut property = |name: &str, value: &str| {
        let _ = writeln!(
            x,
            "      <property name=\"{}\" value=\"{}\"/>",
            attr(name),
            attr(value)
        );
    };
    property("target", &r.target);
    if let Some(pid) = r.pid {
        property("pid", &pid.to_string());
    }
    property("flavor", &r.flavor);
    property("outcome", super::outcome_word(r.outcome));
    property("exit_code", &r.outcome.exit_code().to_string());
    for (name, value) in &r.settings {
        property(name, value);
    }
    x.push_str("    </properties>\n");

    let classname = attr(&r.target);
    if errored {
        let why = r.error.as_deref().unwrap_or("the check could not run");
        let _ = writeln!(
            x,
            "    <testcase classname=\"{classname}\" name=\"check\" time=\"{time:.3}\">\n      \
             <error type=\"check error\" message=\"{}\">{}</error>\n    </testcase>",
            attr(why),
            text(why)
        );
    }
    for k in &r.kinds {
        let _ = write!(
            x,
            "    <testcase classname=\"{classname}\" name=\"{}\" time=\"{time:.3}\"{}>",
            attr(&k.kind),
            source_attrs(k)
        );
        if k.leaked {
            let _ = write!(
                x,
                "\n      <failure type=\"leak\" message=\"{}\">{}</failure>\n    ",
                attr(&failure_message(k)),
                text(&failure_body(k))
            );
        } else if errored {
            let why = format!(
                "not judged to the end: the check stopped ({})",
                r.error.as_deref().unwrap_or("error")
            );
            let _ = write!(x, "\n      <skipped message=\"{}\"/>\n    ", attr(&why));
        }
        x.push_str("</testcase>\n");
    }
    let _ = writeln!(x, "    <system-out>{}</system-out>", text(&system_out(r)));
    x.push_str("  </testsuite>\n</testsuites>\n");
    x
}

/// ` file="..." line="N"` of a leak's site, which GitLab links to and
/// GitHub's JUnit actions annotate; "" when the kind passed or no file is
/// known.
fn source_attrs(k: &KindVerdict) -> String {
    let site = k.finding.as_ref().and_then(|f| f.site.as_ref());
    match site {
        Some(s) if k.leaked && !s.file.is_empty() => {
            let mut out = format!(" file=\"{}\"", attr(&s.file));
            if s.line > 0 {
                let _ = write!(out, " line=\"{}\"", s.line);
            }
            out
        }
        _ => String::new(),
    }
}

/// The body of a failure: the verdict's numbers and reason, then the
/// finding (summary, confidence, detail, the groups that grew).
fn failure_body(k: &KindVerdict) -> String {
    let mut b = String::new();
    let _ = writeln!(
        b,
        "{} {}: {} (before → peak → after), budget {}, growth during the load {}/min",
        k.kind,
        verdict_word(k),
        course(k),
        amount(k.allowed, &k.unit),
        delta(k.growth_per_minute, &k.unit)
    );
    let _ = writeln!(b, "{}", k.reason);
    if let Some(f) = &k.finding {
        let _ = writeln!(b, "\n{}", f.summary);
        let _ = writeln!(b, "confidence: {} ({})", f.confidence, f.detail);
        if !f.groups.is_empty() {
            let _ = writeln!(b, "what grew ({}, base → new):", f.unit);
            for g in &f.groups {
                let what = if g.what.is_empty() { "" } else { &g.what };
                let site = g.site.as_ref().map(|s| s.to_string()).unwrap_or_default();
                let sep = if what.is_empty() || site.is_empty() {
                    ""
                } else {
                    " in "
                };
                let _ = writeln!(
                    b,
                    "  {} ({} → {}): {what}{sep}{site}",
                    delta(g.delta(), &f.unit),
                    amount(g.base, &f.unit),
                    amount(g.new, &f.unit),
                );
            }
        }
    }
    b
}

/// The load summary, the phases and the settings, as text.
fn system_out(r: &CheckReport) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "leakscope check of {} ({}): {}, exit {}",
        r.target,
        r.flavor,
        super::outcome_word(r.outcome),
        r.outcome.exit_code()
    );
    if let Some(e) = &r.error {
        let _ = writeln!(s, "error: {e}");
    }
    let t0 = started(r).unwrap_or(0.0);
    for p in &r.phases {
        let _ = writeln!(
            s,
            "phase {}: {:.1} s to {:.1} s",
            p.name,
            p.start - t0,
            p.end - t0
        );
    }
    let _ = writeln!(s, "load: {}", load_line(r));
    let tail = tail_lines(&r.load.output_tail);
    if !tail.is_empty() {
        let _ = writeln!(s, "load output (last lines):");
        for l in tail {
            let _ = writeln!(s, "  {l}");
        }
    }
    for (name, value) in &r.settings {
        let _ = writeln!(s, "setting {name} = {value}");
    }
    for k in &r.kinds {
        let _ = writeln!(
            s,
            "{}: {} {} (budget {}): {}",
            k.kind,
            verdict_word(k),
            course(k),
            amount(k.allowed, &k.unit),
            k.reason
        );
    }
    s
}

/// Pushes `c`, or `\u{..}` when XML 1.0 does not allow it.
fn push_char(out: &mut String, c: char) {
    let allowed = matches!(c, '\t' | '\n' | '\r')
        || ('\u{20}'..='\u{D7FF}').contains(&c)
        || ('\u{E000}'..='\u{FFFD}').contains(&c)
        || c >= '\u{10000}';
    if allowed {
        out.push(c);
    } else {
        let _ = write!(out, "\\u{{{:x}}}", c as u32);
    }
}

/// Escapes element text.
fn text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            // A bare CR would be read as a line end: keep it.
            '\r' => out.push_str("&#13;"),
            c => push_char(&mut out, c),
        }
    }
    out
}

/// Escapes an attribute value (in double quotes); tabs and line ends as
/// character references, since a parser turns literal ones into spaces.
fn attr(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' => out.push_str("&#9;"),
            '\n' => out.push_str("&#10;"),
            '\r' => out.push_str("&#13;"),
            c => push_char(&mut out, c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_keeps_xml_well_formed() {
        assert_eq!(
            attr("<T as Tr>::f & \"x\" 'y'\n"),
            "&lt;T as Tr&gt;::f &amp; &quot;x&quot; &apos;y&apos;&#10;"
        );
        assert_eq!(text("a]]>b\u{1b}[31m\u{0}"), "a]]&gt;b\\u{1b}[31m\\u{0}");
        assert_eq!(
            text("\u{FFFE}\u{FFFD}\u{1F600}"),
            "\\u{fffe}\u{FFFD}\u{1F600}"
        );
        assert_eq!(attr("tab\tcr\r"), "tab&#9;cr&#13;");
    }
}
