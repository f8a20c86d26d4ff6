//! Naming what grew between two count profiles: threads, tasks, fds,
//! goroutines. Each sample is reduced to *what* it is (its pseudo frame:
//! `tcp ESTABLISHED to 127.0.0.1:9000`, `tokio::spawn at src/jobs.rs:42`)
//! and *where* (the first frame of the program's own code from the leaf),
//! the two captures are summed per (what, where), and the groups that grew
//! most are named. Counts are exact: a group named this way was seen, not
//! estimated.
//!
//! Stacks with a frame of leakscope's own code (its threads, the thread
//! taking the dump) are left out of the groups and counted apart.

use std::collections::HashMap;

use super::finding::{Confidence, Finding, Group, Site};
use super::frames::{is_agent_function, own_frame};
use crate::profile::{Profile, ProfileIndex};

/// One sample of a count profile, reduced.
#[derive(Debug, Clone, PartialEq)]
pub struct Counted {
    /// What it is: the leaf-most pseudo frame's name, "" when none.
    pub what: String,
    /// The program's own code it runs in or was created by.
    pub site: Option<Site>,
    /// How many.
    pub count: f64,
    /// True when the stack passes through leakscope's own code.
    pub agent: bool,
}

/// The samples of `profile` (first sample type), reduced.
pub fn counted(profile: &Profile) -> Vec<Counted> {
    let index = ProfileIndex::new(profile);
    profile
        .sample
        .iter()
        .map(|s| {
            let frames = index.frames(s);
            // What it is: its pseudo frame, else (threads) its name with
            // numbers folded, so `conn-1` and `conn-2` group together.
            let what = frames
                .iter()
                .find(|f| f.pseudo)
                .map(|f| f.function.to_owned())
                .or_else(|| {
                    index
                        .label(s, "thread")
                        .map(|n| format!("thread '{}'", fold_digits(n)))
                })
                .unwrap_or_default();
            let real: Vec<_> = frames.iter().filter(|f| !f.pseudo).collect();
            let site = own_frame(real.iter().map(|f| (f.function, f.file))).map(|i| Site {
                function: real[i].function.to_owned(),
                file: real[i].file.to_owned(),
                line: real[i].line,
            });
            Counted {
                what,
                site,
                count: s.value.first().copied().unwrap_or(0) as f64,
                agent: real.iter().any(|f| is_agent_function(f.function)),
            }
        })
        .collect()
}

/// `name` with each run of ASCII digits replaced by `N` (`conn-12` →
/// `conn-N`), so numbered threads of one kind group together.
pub fn fold_digits(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut in_digits = false;
    for c in name.chars() {
        if c.is_ascii_digit() {
            if !in_digits {
                out.push('N');
            }
            in_digits = true;
        } else {
            out.push(c);
            in_digits = false;
        }
    }
    out
}

/// Sums of `items` by (what, site), leakscope's own left out.
fn sums(items: &[Counted]) -> HashMap<(String, Option<Site>), f64> {
    let mut out: HashMap<(String, Option<Site>), f64> = HashMap::new();
    for c in items.iter().filter(|c| !c.agent) {
        *out.entry((c.what.clone(), c.site.clone())).or_default() += c.count;
    }
    out
}

/// Every (what, site) group that grew from `base` to `new`, most first.
pub fn grown(base: &[Counted], new: &[Counted]) -> Vec<Group> {
    let before = sums(base);
    let mut groups: Vec<Group> = sums(new)
        .into_iter()
        .map(|((what, site), n)| Group {
            base: before
                .get(&(what.clone(), site.clone()))
                .copied()
                .unwrap_or(0.0),
            what,
            site,
            new: n,
        })
        .filter(|g| g.delta() > 0.0)
        .collect();
    groups.sort_by(|a, b| {
        b.delta()
            .total_cmp(&a.delta())
            .then_with(|| a.what.cmp(&b.what))
            .then_with(|| a.site.cmp(&b.site))
    });
    groups
}

/// Total count of `items`, leakscope's own left out.
pub fn total(items: &[Counted]) -> f64 {
    items.iter().filter(|c| !c.agent).map(|c| c.count).sum()
}

/// The finding for a count profile of `kind` (`threads`, `tasks`, `fds`,
/// `goroutine`) counted in `unit`, from a healthy `base` to `new`.
/// `missing_site` says, when the top group has no code site, why none can
/// be known (for fds: no creation stacks were recorded).
pub fn finding(
    kind: &str,
    unit: &str,
    base: &[Counted],
    new: &[Counted],
    missing_site: &str,
) -> Finding {
    let (before, after) = (total(base), total(new));
    let groups = grown(base, new);
    let Some(top) = groups.first().cloned() else {
        return Finding::unknown(
            kind,
            unit,
            format!(
                "{unit}: {before} -> {after}, and no group of the {kind} profile grew \
                 (what grew was gone again, or is leakscope's own)"
            ),
        );
    };
    let change = format!("{unit} {before} -> {after} ({:+})", after - before);
    let what = if top.what.is_empty() {
        String::new()
    } else {
        format!(" {}", top.what)
    };
    let (summary, confidence, detail) = match &top.site {
        Some(site) => (
            format!("{change}; +{}{what} in {site}", top.delta()),
            Confidence::Exact,
            format!(
                "counted in the {kind} profile: {} of them, {} before, in the program's own code at {site}",
                top.new, top.base
            ),
        ),
        None if !top.what.is_empty() => (
            format!("{change}; +{}{what}", top.delta()),
            Confidence::WhatOnly,
            format!("counted in the {kind} profile; the code is not known: {missing_site}"),
        ),
        None => (
            format!("{change}; the {kind} that grew run in no code of the program's own"),
            Confidence::Unknown,
            format!("the {kind} that grew have only library frames: {missing_site}"),
        ),
    };
    Finding {
        kind: kind.to_owned(),
        unit: unit.to_owned(),
        summary,
        site: top.site.clone(),
        confidence,
        detail,
        groups: groups.into_iter().take(Finding::MAX_GROUPS).collect(),
        base: None,
        new: None,
        url: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::{ProfileMeta, PseudoFrame, SampleLabel, StackSample, build_profile};
    use crate::symbolize::{ProcessMaps, Symbolizer};

    /// A count profile of pseudo frames only: `(what, count)`.
    fn fds(groups: &[(&str, i64)]) -> Profile {
        let meta = ProfileMeta {
            sample_types: vec![("fds", "count")],
            period_type: ("fds", "count"),
            period: 1,
            default_sample_type: None,
            time_nanos: 0,
            duration_nanos: 0,
        };
        let samples = groups
            .iter()
            .map(|(what, n)| StackSample {
                stack: Vec::new(),
                values: vec![*n],
                labels: vec![SampleLabel::Str("kind", "tcp".into())],
                pseudo: vec![PseudoFrame::named(*what), PseudoFrame::named("tcp")],
            })
            .collect();
        build_profile(
            &meta,
            samples,
            &ProcessMaps::default(),
            Symbolizer::global(),
            None,
        )
    }

    fn item(what: &str, site: Option<(&str, &str, i64)>, count: f64, agent: bool) -> Counted {
        Counted {
            what: what.into(),
            site: site.map(|(f, file, line)| Site {
                function: f.into(),
                file: file.into(),
                line,
            }),
            count,
            agent,
        }
    }

    #[test]
    fn an_upstream_is_named_even_without_code() {
        let base = counted(&fds(&[
            ("tcp ESTABLISHED to 127.0.0.1:9000", 2),
            ("tcp LISTEN 127.0.0.1:8080", 1),
        ]));
        let new = counted(&fds(&[
            ("tcp ESTABLISHED to 127.0.0.1:9000", 952),
            ("tcp LISTEN 127.0.0.1:8080", 1),
            ("file /var/log/app.log", 3),
        ]));
        assert_eq!(base[0].what, "tcp ESTABLISHED to 127.0.0.1:9000");
        assert_eq!(base[0].site, None);
        let f = finding(
            "fds",
            "fds",
            &base,
            &new,
            "no creation stacks were recorded",
        );
        assert_eq!(f.confidence, Confidence::WhatOnly);
        assert_eq!(f.site, None);
        assert_eq!(
            f.summary,
            "fds 3 -> 956 (+953); +950 tcp ESTABLISHED to 127.0.0.1:9000"
        );
        assert_eq!(f.groups.len(), 2);
        assert_eq!(f.groups[1].what, "file /var/log/app.log");
        assert!(f.detail.contains("no creation stacks"), "{}", f.detail);
    }

    #[test]
    fn code_sites_are_exact_and_the_agent_is_left_out() {
        let app = Some((
            "orders::workers::run::{{closure}}",
            "/srv/src/workers.rs",
            42,
        ));
        let pool = Some(("orders::pool::worker", "/srv/src/pool.rs", 7));
        let base = vec![item("", pool, 4.0, false), item("", None, 3.0, true)];
        let new = vec![
            item("", pool, 4.0, false),
            item("", app, 37.0, false),
            // leakscope's own threads come and go: never a finding.
            item("", None, 9.0, true),
        ];
        let f = finding("threads", "threads", &base, &new, "");
        assert_eq!(f.confidence, Confidence::Exact);
        let site = f.site.as_ref().expect("a site");
        assert_eq!(
            (site.function.as_str(), site.line),
            ("orders::workers::run::{{closure}}", 42)
        );
        assert_eq!(
            f.summary,
            "threads 4 -> 41 (+37); +37 in orders::workers::run::{{closure}} (/srv/src/workers.rs:42)"
        );
        assert_eq!(f.groups.len(), 1);
    }

    #[test]
    fn numbered_names_fold() {
        assert_eq!(fold_digits("conn-12"), "conn-N");
        assert_eq!(fold_digits("w1x22"), "wNxN");
        assert_eq!(fold_digits("tokio-runtime-w"), "tokio-runtime-w");
    }

    #[test]
    fn nothing_grown_names_nothing() {
        let same = vec![item("", None, 5.0, false)];
        let f = finding("tasks", "tasks", &same, &same, "");
        assert_eq!(f.confidence, Confidence::Unknown);
        assert!(f.groups.is_empty());
        assert!(f.summary.contains("no group"), "{}", f.summary);
    }
}
