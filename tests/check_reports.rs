//! The CI reports of `leakscope check` (`leakscope::check::report`), made
//! from a `CheckReport` whose evidence is real: thread, heap and fd
//! profiles of the leaky service in this process, taken before and after it
//! leaked, and named by the agent's own `explain` code.
//!
//! - JUnit: parsed by a strict XML parser (roxmltree) as a CI system would:
//!   the counts, a failure per leaked kind naming the site with file:line,
//!   a nasty function name and control characters in the load's output, a
//!   check that could not run.
//! - HTML: opened as a `file://` page in headless Chromium: a row per kind
//!   with its site, the timelines drawn, both differential flamegraphs of
//!   every evidence at full width, search working offline, no console
//!   errors and no request for anything. A huge profile makes a light
//!   report. Screenshots go to `target/screenshots/check-report-*.png`.

mod support;

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use leakscope::agent::explain::counts::{counted, finding as count_finding};
use leakscope::agent::explain::{Confidence, Finding, Group, Site};
use leakscope::agent::profile::{Profile, ProfileMeta, PseudoFrame, StackSample, build_profile};
use leakscope::agent::symbolize::{ProcessMaps, Symbolizer};
use leakscope::check::model::{
    CheckReport, Evidence, KindVerdict, LoadSummary, Outcome, Phase, Series,
};
use leakscope::check::report;
use leakscope::viewer::analysis::{DiffOptions, rank_growth};
use support::browser::{Browser, Page};
use support::scratch;

leakscope::enable_heap_profiling!("prof:true,prof_active:true,prof_accum:true,lg_prof_sample:14");

const WAIT: Duration = Duration::from_secs(30);
/// Threads, heap blocks (of 256 KiB) and fds the fixture leaks.
const THREADS: usize = 6;
const BLOCKS: usize = 40;
const FDS: usize = 4;

/// The line of the park call leaked threads wait in, in src/leaky.rs.
fn park_line() -> i64 {
    let src = include_str!("../src/leaky.rs");
    let (i, _) = src
        .lines()
        .enumerate()
        .find(|(_, l)| l.trim() == "std::thread::park();")
        .expect("the park call in src/leaky.rs");
    i as i64 + 1
}

/// Threads of this process named `name` that sleep (state `S`).
fn sleeping_threads(name: &str) -> usize {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    dir.flatten()
        .filter(|t| {
            let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
            let stat = std::fs::read_to_string(t.path().join("stat")).unwrap_or_default();
            // The state follows the `(comm)` field.
            let state = stat
                .rsplit_once(") ")
                .map(|(_, rest)| rest.starts_with('S'));
            comm.trim_end() == name && state == Some(true)
        })
        .count()
}

/// Sum of sample type `index` of a profile.
fn total(p: &Profile, index: usize) -> f64 {
    p.sample
        .iter()
        .map(|s| s.value.get(index).copied().unwrap_or(0) as f64)
        .sum()
}

/// A counter rising during the load and settling at `after`: warm-up at
/// `before` (0–10 s), the load rising to `peak` (10–70 s), the cool-down
/// dropping to `after` (70–100 s), one reading a second.
fn series(metric: &str, unit: &str, t0: f64, before: f64, peak: f64, after: f64) -> Series {
    let points = (0..=100)
        .map(|i| {
            let t = f64::from(i);
            let v = if t <= 10.0 {
                before
            } else if t <= 70.0 {
                before + (peak - before) * (t - 10.0) / 60.0
            } else if t <= 75.0 {
                peak + (after - peak) * (t - 70.0) / 5.0
            } else {
                after
            };
            (t0 + t, v.round())
        })
        .collect();
    Series {
        metric: metric.into(),
        unit: unit.into(),
        points,
    }
}

/// A verdict on `kind` of the amounts given, leaked when `after` exceeds
/// `before` + `allowed`.
fn verdict(
    kind: &str,
    unit: &str,
    (before, peak, after): (f64, f64, f64),
    allowed: f64,
) -> KindVerdict {
    let leaked = after - before > allowed;
    KindVerdict {
        kind: kind.into(),
        unit: unit.into(),
        before,
        peak,
        after,
        allowed,
        growth_per_minute: (peak - before) / 1.0,
        leaked,
        reason: if leaked {
            format!(
                "{} more after the cool-down than before the warm-up, over the budget",
                if unit == "bytes" {
                    leakscope::agent::explain::format_bytes(after - before)
                } else {
                    (after - before).to_string()
                }
            )
        } else {
            "back to where it started, within its budget".into()
        },
        finding: None,
        evidence: None,
    }
}

/// What one check of the leaky service found, with real evidence: taken
/// once per test binary.
fn leak_report() -> &'static CheckReport {
    static REPORT: OnceLock<CheckReport> = OnceLock::new();
    REPORT.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let (threads, heap, fds) = rt.block_on(async {
            let threads0 = support::get("/debug/pprof/threads").await.body;
            let heap0 = support::get("/debug/pprof/heap").await.body;
            let fds0 = support::get("/debug/pprof/fds").await.body;
            let parked = sleeping_threads("leaky-thread");
            for _ in 0..THREADS {
                assert_eq!(support::get("/leak/thread").await.status, 200);
            }
            support::leak_heap(BLOCKS, 256).await;
            for _ in 0..FDS {
                assert_eq!(support::get("/leak/fd").await.status, 200);
            }
            // Each new thread parked, so the dump finds it in its loop.
            let deadline = std::time::Instant::now() + WAIT;
            while sleeping_threads("leaky-thread") < parked + THREADS {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the leaked threads never slept"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let threads1 = support::get("/debug/pprof/threads").await.body;
            let heap1 = support::get("/debug/pprof/heap").await.body;
            let fds1 = support::get("/debug/pprof/fds").await.body;
            ((threads0, threads1), (heap0, heap1), (fds0, fds1))
        });
        let decode =
            |b: &[u8]| Profile::decode_bytes(b, "a profile of the service").expect("profile");
        let t0 = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs_f64()
            .floor()
            - 100.0;

        // Threads and fds: counted, named by the agent's count findings.
        let count_kind = |kind: &str, (b0, b1): &(Vec<u8>, Vec<u8>), missing: &str| {
            let (base, new) = (counted(&decode(b0)), counted(&decode(b1)));
            let f = count_finding(kind, kind, &base, &new, missing);
            let before = leakscope::agent::explain::counts::total(&base);
            let after = leakscope::agent::explain::counts::total(&new);
            let mut v = verdict(kind, kind, (before, after + 3.0, after), 0.0);
            v.finding = Some(f);
            v.evidence = Some(Evidence {
                sample_type: kind.into(),
                base: b0.clone(),
                new: b1.clone(),
            });
            v
        };
        let threads = count_kind("threads", &threads, "");
        let fds = count_kind(
            "fds",
            &fds,
            "no creation stacks were recorded (fd-sites is off)",
        );

        // Heap: the site that grew most, as the viewer ranks it.
        let (h0, h1) = (decode(&heap.0), decode(&heap.1));
        let inuse = h1
            .sample_type_names()
            .iter()
            .position(|(t, _)| *t == "inuse_space")
            .expect("inuse_space");
        let top = rank_growth(
            &h0,
            &h1,
            &DiffOptions::default().with_sample_type("inuse_space"),
        )
        .expect("rank")
        .into_iter()
        .next()
        .expect("something grew");
        let site = Site {
            function: top.function.clone(),
            file: top.file.clone(),
            line: top.line,
        };
        let mut heap_v = verdict(
            "heap",
            "bytes",
            (
                total(&h0, inuse),
                total(&h1, inuse) * 1.2,
                total(&h1, inuse),
            ),
            4.0 * 1024.0 * 1024.0,
        );
        heap_v.finding = Some(Finding {
            kind: "heap".into(),
            unit: "bytes".into(),
            summary: format!("+{} B in use at {site}", top.delta()),
            site: Some(site.clone()),
            confidence: Confidence::Clear,
            detail: "the site that grew most between the two heap profiles".into(),
            groups: vec![Group {
                what: String::new(),
                site: Some(site),
                base: top.base as f64,
                new: top.new as f64,
            }],
            base: None,
            new: None,
            url: None,
        });
        heap_v.evidence = Some(Evidence {
            sample_type: "inuse_space".into(),
            base: heap.0.clone(),
            new: heap.1.clone(),
        });
        let tasks = verdict("tasks", "tasks", (3.0, 40.0, 3.0), 0.0);

        let series = vec![
            series(
                "threads",
                "",
                t0,
                threads.before,
                threads.peak,
                threads.after,
            ),
            series(
                "heap_bytes",
                "bytes",
                t0,
                heap_v.before,
                heap_v.peak,
                heap_v.after,
            ),
            series("open_fds", "", t0, fds.before, fds.peak, fds.after),
            series("tokio_tasks", "", t0, 3.0, 40.0, 3.0),
        ];
        let phase = |name: &str, a: f64, b: f64| Phase {
            name: name.into(),
            start: t0 + a,
            end: t0 + b,
        };
        CheckReport {
            target: "target/debug/examples/leaky_service".into(),
            pid: Some(std::process::id()),
            flavor: "leakscope agent".into(),
            outcome: Outcome::Leak,
            error: None,
            phases: vec![
                phase("warm-up", 0.0, 10.0),
                phase("load", 10.0, 70.0),
                phase("cool-down", 70.0, 100.0),
            ],
            kinds: vec![threads, heap_v, fds, tasks],
            series,
            load: LoadSummary {
                source: "built-in".into(),
                requests: 1200,
                errors: 0,
                latency_ms: Some((1.2, 8.5)),
                exit_status: None,
                output_tail: Vec::new(),
            },
            settings: vec![
                ("duration".into(), "60s".into()),
                ("cool_down".into(), "30s".into()),
                ("allow".into(), "heap=4MiB".into()),
            ],
        }
    })
}

fn attr<'a>(n: roxmltree::Node<'a, '_>, name: &str) -> &'a str {
    n.attribute(name)
        .unwrap_or_else(|| panic!("<{}> has no {name}", n.tag_name().name()))
}

fn child<'a, 'i>(n: roxmltree::Node<'a, 'i>, tag: &str) -> Option<roxmltree::Node<'a, 'i>> {
    n.children().find(|c| c.has_tag_name(tag))
}

#[test]
fn junit_names_each_leak_with_its_site() {
    let r = leak_report();
    let xml = report::junit(r);
    // Kept for people to read.
    let file = scratch("check-junit").join("leak-check.xml");
    std::fs::write(&file, &xml).expect("write the JUnit file");
    let doc = roxmltree::Document::parse(&xml).unwrap_or_else(|e| panic!("{e}\n{xml}"));
    let root = doc.root_element();
    assert!(root.has_tag_name("testsuites"));
    let suite = child(root, "testsuite").expect("a testsuite");
    assert_eq!(attr(suite, "name"), "leakscope check");
    for n in [root, suite] {
        assert_eq!(attr(n, "tests"), "4");
        assert_eq!(attr(n, "failures"), "3");
        assert_eq!(attr(n, "errors"), "0");
        assert_eq!(attr(n, "time").parse::<f64>().ok(), Some(100.0));
    }
    let stamp = attr(suite, "timestamp");
    assert_eq!((stamp.len(), &stamp[10..11]), (19, "T"), "{stamp}");

    let cases: Vec<_> = suite
        .children()
        .filter(|c| c.has_tag_name("testcase"))
        .collect();
    let names: Vec<&str> = cases.iter().map(|c| attr(*c, "name")).collect();
    assert_eq!(names, ["threads", "heap", "fds", "tasks"]);
    for c in &cases {
        assert_eq!(attr(*c, "classname"), r.target);
        assert_eq!(attr(*c, "time").parse::<f64>().ok(), Some(100.0));
    }

    // The threads: the closure that parks them, at its line.
    let failure = child(cases[0], "failure").expect("threads fail");
    let message = attr(failure, "message");
    let site = r.kinds[0]
        .finding
        .as_ref()
        .and_then(|f| f.site.as_ref())
        .expect("threads named");
    assert!(site.function.contains("leak_thread"), "{site}");
    assert!(site.file.ends_with("src/leaky.rs"), "{site}");
    assert_eq!(site.line, park_line(), "{site}");
    // The totals are the whole process's (a blocking thread of the runtime
    // may come or go): the group is the leak's own count.
    assert!(
        message.starts_with("threads: +")
            && message.contains(" threads stayed after the cool-down ("),
        "{message}"
    );
    assert!(
        message.ends_with(&format!(
            " in {} ({}:{})",
            site.function, site.file, site.line
        )),
        "{message}"
    );
    assert_eq!(attr(cases[0], "file"), site.file);
    assert_eq!(attr(cases[0], "line"), site.line.to_string());
    assert_eq!(cases[3].attribute("file"), None, "tasks passed");
    let body = failure.text().unwrap_or_default();
    let detail = &r.kinds[0].finding.as_ref().expect("finding").detail;
    assert!(body.contains(detail.as_str()), "{body}");
    assert!(body.contains(&format!("+{THREADS} (")), "the group: {body}");

    // The heap: leak_heap_kib at its allocation line.
    let message = attr(child(cases[1], "failure").expect("heap fails"), "message");
    assert!(
        message.contains("leak_heap_kib (")
            && message.contains(&format!("src/leaky.rs:{}", support::leak_line())),
        "{message}"
    );
    // The fds: what they are, the code not known.
    let message = attr(child(cases[2], "failure").expect("fds fail"), "message");
    assert!(
        message.contains("/dev/null") && message.contains("not named"),
        "{message}"
    );
    assert!(child(cases[3], "failure").is_none());

    let out = child(suite, "system-out")
        .and_then(|n| n.text())
        .unwrap_or_default();
    assert!(
        out.contains("load: built-in: 1200 requests, 0 errors, p50 1.2 ms, p99 8.5 ms"),
        "{out}"
    );
    assert!(out.contains("setting duration = 60s"), "{out}");
    assert!(out.contains("phase cool-down: 70.0 s to 100.0 s"), "{out}");
    let props = child(suite, "properties").expect("properties");
    let prop = |name: &str| {
        props
            .children()
            .find(|p| p.attribute("name") == Some(name))
            .and_then(|p| p.attribute("value"))
    };
    assert_eq!(prop("exit_code"), Some("1"));
    assert_eq!(prop("allow"), Some("heap=4MiB"));
}

/// A function name with every character XML cares about, and a control
/// character (a name can hold anything a symbol holds).
const NASTY: &str = "<alloc::vec::Vec<T> as core::ops::Fn<(&str,)>>::call \"q\" 'a' ]]> \u{1}";

#[test]
fn junit_escapes_names_and_output() {
    let mut r = leak_report().clone();
    let site = Site {
        function: NASTY.into(),
        file: "src/<gen>&.rs".into(),
        line: 9,
    };
    let f = r.kinds[0].finding.as_mut().expect("finding");
    f.site = Some(site.clone());
    f.groups[0].site = Some(site);
    f.detail = "tab\tnewline\nbell\u{7} nul\u{0} \u{FFFF}".into();
    r.target = "svc --flag=\"a&b\" <in".into();
    r.load = LoadSummary {
        source: "k6 run load.js".into(),
        exit_status: Some(99),
        output_tail: vec![
            "\u{1b}[32m✓\u{1b}[0m checks.........: 100.00%".into(),
            "http_req_failed: 0.00% < 1%".into(),
        ],
        ..LoadSummary::default()
    };
    let xml = report::junit(&r);
    let doc = roxmltree::Document::parse(&xml).unwrap_or_else(|e| panic!("{e}\n{xml}"));
    let suite = child(doc.root_element(), "testsuite").expect("suite");
    let case = suite
        .children()
        .find(|c| c.attribute("name") == Some("threads"))
        .expect("threads");
    assert_eq!(attr(case, "classname"), r.target);
    assert_eq!(attr(case, "file"), "src/<gen>&.rs");
    let failure = child(case, "failure").expect("failure");
    let shown = NASTY.replace('\u{1}', "\\u{1}");
    assert!(
        attr(failure, "message").ends_with(&format!(" in {shown} (src/<gen>&.rs:9)")),
        "{}",
        attr(failure, "message")
    );
    let body = failure.text().unwrap_or_default();
    assert!(
        body.contains("tab\tnewline\nbell\\u{7} nul\\u{0} \\u{ffff}"),
        "{body}"
    );
    let out = child(suite, "system-out")
        .and_then(|n| n.text())
        .unwrap_or_default();
    assert!(
        out.contains("load: k6 run load.js: exit status 99"),
        "{out}"
    );
    // Colours are left out, as a terminal does.
    assert!(out.contains("\n  ✓ checks.........: 100.00%\n"), "{out}");
    assert!(out.contains("http_req_failed: 0.00% < 1%"), "{out}");
}

#[test]
fn junit_reports_a_check_that_could_not_run() {
    let mut r = leak_report().clone();
    r.outcome = Outcome::Error;
    r.error = Some("the service did not answer its health URL within 30 s".into());
    // The threads leak was seen before the error; the rest was not judged.
    for k in &mut r.kinds[1..] {
        k.leaked = false;
    }
    let xml = report::junit(&r);
    let doc = roxmltree::Document::parse(&xml).unwrap_or_else(|e| panic!("{e}\n{xml}"));
    let suite = child(doc.root_element(), "testsuite").expect("suite");
    assert_eq!(
        ["tests", "failures", "errors", "skipped"].map(|a| attr(suite, a)),
        ["5", "1", "1", "3"]
    );
    let check = suite
        .children()
        .find(|c| c.attribute("name") == Some("check"))
        .expect("a check case");
    let error = child(check, "error").expect("an error");
    assert_eq!(attr(error, "message"), r.error.as_deref().expect("error"));
    let skipped = suite
        .descendants()
        .filter(|n| n.has_tag_name("skipped"))
        .count();
    assert_eq!(skipped, 3);

    // Nothing judged at all: the error case alone.
    r.kinds.clear();
    let xml = report::junit(&r);
    let doc = roxmltree::Document::parse(&xml).unwrap_or_else(|e| panic!("{e}\n{xml}"));
    let suite = child(doc.root_element(), "testsuite").expect("suite");
    assert_eq!(
        ["tests", "failures", "errors"].map(|a| attr(suite, a)),
        ["1", "0", "1"]
    );
}

/// A count profile of `n` distinct stacks of pseudo frames, 100 groups of
/// `n / 100` leaves each.
fn wide_profile(n: usize, scale: i64) -> Vec<u8> {
    let meta = ProfileMeta {
        sample_types: vec![("threads", "count")],
        period_type: ("threads", "count"),
        period: 1,
        default_sample_type: None,
        time_nanos: 0,
        duration_nanos: 0,
    };
    let samples = (0..n)
        .map(|i| StackSample {
            stack: Vec::new(),
            values: vec![scale],
            labels: Vec::new(),
            // Leaf first.
            pseudo: vec![
                PseudoFrame::named(format!("leaf_{i}")),
                PseudoFrame::named(format!("group_{}", i % 100)),
                PseudoFrame::named("main"),
            ],
        })
        .collect();
    build_profile(
        &meta,
        samples,
        &ProcessMaps::default(),
        Symbolizer::global(),
        None,
    )
    .encode_gzip()
}

#[test]
fn a_huge_profile_makes_a_light_report() {
    let mut r = leak_report().clone();
    let (base, new) = (wide_profile(50_000, 1), wide_profile(50_000, 2));
    let sizes = base.len() + new.len();
    r.kinds.truncate(1);
    r.kinds[0].evidence = Some(Evidence {
        sample_type: "threads".into(),
        base,
        new,
    });
    let page = report::html(&r);
    std::fs::write(scratch("check-huge").join("huge.html"), &page).expect("write");
    // Without merging, each side would draw 50,000 leaves.
    let frames = page.matches("leaf_").count();
    assert!(frames < 100, "{frames} leaves drawn");
    assert!(
        page.matches("group_").count() >= 200,
        "the groups are drawn"
    );
    assert!(
        page.len() < 512 << 10,
        "{} bytes from {sizes} bytes of profiles",
        page.len()
    );
}

fn screenshots() -> PathBuf {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("target dir")
        .join("screenshots");
    std::fs::create_dir_all(&dir).expect("screenshots dir");
    dir
}

/// The flamegraph in iframe `id` once inferno has laid it out to its
/// width: `[root frame width, iframe width, root top, iframe height]`.
fn root_frame(page: &Page, id: &str) -> [f64; 4] {
    let js = format!(
        "(function(){{var f=document.getElementById('{id}');var d=f&&f.contentDocument;\
         var svg=d&&d.querySelector('svg');var g=d&&d.getElementById('frames');\
         if(!svg||!g||svg.hasAttribute('width'))return null;\
         if(Math.abs(g.width.baseVal.value-(svg.getBoundingClientRect().width-20))>=1)return null;\
         var root=Array.from(g.querySelectorAll('g > title')).filter(function(t){{\
         return t.textContent.indexOf('all (')==0;}})[0];if(!root)return null;\
         var r=root.parentNode.querySelector('rect').getBoundingClientRect();\
         return [r.width,f.clientWidth,r.top,f.clientHeight];}})()"
    );
    let v = page.wait_for(&js, &format!("the flamegraph of #{id}"), WAIT);
    let n = |i: usize| v[i].as_f64().unwrap_or(-1.0);
    [n(0), n(1), n(2), n(3)]
}

/// The text of the first element matching `sel`, "" when none.
fn text(page: &Page, sel: &str) -> String {
    let v = page.eval(&format!(
        "(function(){{var e=document.querySelector({});return e?e.textContent:'';}})()",
        serde_json::json!(sel)
    ));
    v.as_str().unwrap_or_default().to_owned()
}

#[test]
fn html_report_in_chromium() {
    let r = leak_report();
    let dir = scratch("check-report");
    let file = dir.join("leak-check.html");
    let html = report::html(r);
    std::fs::write(&file, &html).expect("write the report");

    // No attribute or style in the file, the frames' documents included
    // (escaped in `srcdoc`), points outside it: URLs appear only as names
    // (XML namespaces, inferno's comments), which nothing fetches.
    for quote in ["\"", "&quot;", "'"] {
        for attr in ["src=", "href=", "action=", "data=", "poster="] {
            let at = format!("{attr}{quote}");
            for (i, _) in html.match_indices(&at) {
                let value = &html[i + at.len()..];
                assert!(
                    !(value.starts_with("http")
                        || value.starts_with("//")
                        || value.starts_with("file:")),
                    "a link out of the report: {}",
                    &html[i..(i + 100).min(html.len())]
                );
            }
        }
    }
    // `url(#id)` refers to an element of the same document.
    for (i, _) in html.match_indices("url(") {
        let at = &html[i..(i + 80).min(html.len())];
        assert!(at[4..].starts_with('#'), "a style that loads: {at}");
    }
    assert!(!html.contains("@import"), "a style that loads");

    let browser = Browser::start();
    let page = browser.open(&format!("file://{}", file.display()));
    let shots = screenshots();

    // The verdict table: a row per kind, the leaks' sites named.
    assert_eq!(text(&page, "#outcome"), "leak");
    let rows = page.eval("document.querySelectorAll('#verdicts tr.kind').length");
    assert_eq!(rows.as_u64(), Some(r.kinds.len() as u64));
    for k in &r.kinds {
        let row = format!("#verdicts tr[data-kind={}]", k.kind);
        assert!(
            text(&page, &format!("{row} .badge")).starts_with(if k.leaked {
                "leaked"
            } else {
                "ok"
            })
        );
        if let Some(site) = k.finding.as_ref().and_then(|f| f.site.as_ref()) {
            assert_eq!(
                text(&page, &format!("{row} td.site code.fn")),
                site.function
            );
            assert_eq!(
                text(&page, &format!("{row} td.site .at")),
                format!("{}:{}", site.file, site.line)
            );
        }
    }
    assert!(text(&page, "#verdicts tr[data-kind=threads] td.site").contains("leak_thread"));
    assert!(text(&page, "#verdicts tr[data-kind=heap] td.site").contains("leak_heap_kib"));
    page.screenshot(&shots.join("check-report-verdict.png"));

    // The timelines: one chart per counter, drawn, the phases marked.
    let charts = page.eval(
        "Array.from(document.querySelectorAll('#timelines svg.chart')).map(function(s){\
         var p=s.querySelector('polyline');return p?p.getAttribute('points').split(' ').length:0;})",
    );
    let points: Vec<u64> = charts
        .as_array()
        .expect("charts")
        .iter()
        .map(|v| v.as_u64().unwrap_or(0))
        .collect();
    assert_eq!(points, vec![101; r.series.len()], "points per chart");
    let markers = page.eval("document.querySelectorAll('#timelines .alert-marker').length");
    assert_eq!(
        markers.as_u64(),
        Some(3 * r.series.len() as u64),
        "phase lines"
    );
    page.eval("document.getElementById('timelines').previousElementSibling.scrollIntoView()");
    page.screenshot(&shots.join("check-report-timelines.png"));

    // Every evidence: both sides at full width, the root in view.
    let with: Vec<&str> = r
        .kinds
        .iter()
        .filter(|k| k.evidence.is_some())
        .map(|k| k.kind.as_str())
        .collect();
    assert_eq!(with, ["threads", "heap", "fds"]);
    for kind in &with {
        for side in ["new", "base"] {
            let id = format!("flame-{kind}-{side}");
            let [root, width, top, height] = root_frame(&page, &id);
            assert!(
                root >= 0.9 * width,
                "#{id}: the root spans {root} of {width} px"
            );
            assert!(
                (0.0..height).contains(&top),
                "#{id}: the root at {top} px of {height}"
            );
        }
    }
    let ranked = text(&page, "#ranked-heap tr:nth-child(2) td.fn");
    assert!(ranked.ends_with("leak_heap_kib"), "{ranked}");

    // Search, offline, across the frames.
    page.eval(
        "(function(){var s=document.getElementById('search');s.value='leak_thread';\
         s.dispatchEvent(new Event('input'));return true;})()",
    );
    let lit = page.wait_for(
        "(function(){var d=document.getElementById('flame-threads-new').contentDocument;\
         return Array.from(d.querySelectorAll('#frames rect')).filter(function(r){\
         return r.getAttribute('fill')=='rgb(230,0,230)';}).length;})()",
        "search to highlight the leaking closure",
        WAIT,
    );
    assert!(lit.as_u64() >= Some(1), "{lit}");
    // Zoom, offline: a click on the leaking closure widens it to the frame.
    // (The page's policy forbids `eval`, so the test reaches into the frame
    // through the DOM.)
    let zoomed = page.eval(
        "(function(){var d=document.getElementById('flame-threads-new').contentDocument;\
         var t=Array.from(d.querySelectorAll('#frames g > title')).find(function(t){\
         return t.textContent.indexOf('leakscope::leaky::leak_thread')==0;});\
         var g=t.parentNode;var before=g.querySelector('rect').getBoundingClientRect().width;\
         g.dispatchEvent(new MouseEvent('click',{bubbles:true}));\
         return [before,g.querySelector('rect').getBoundingClientRect().width,\
         d.getElementById('unzoom').classList.contains('hide')];})()",
    );
    let width = |i: usize| zoomed[i].as_f64().unwrap_or(0.0);
    assert!(width(1) > width(0) * 1.2, "zoom: {zoomed}");
    assert_eq!(zoomed[2], serde_json::json!(false), "Reset Zoom shown");
    page.eval("document.getElementById('evidence-threads').scrollIntoView()");
    page.screenshot(&shots.join("check-report-evidence.png"));

    // Nothing fetched by the page or any of its frames, nothing went wrong.
    let fetched = page.eval(
        "(function(){var n=performance.getEntriesByType('resource').map(function(e){return e.name;});\
         document.querySelectorAll('iframe').forEach(function(f){\
         n=n.concat(f.contentWindow.performance.getEntriesByType('resource').map(function(e){return e.name;}));});\
         return n;})()",
    );
    assert_eq!(fetched, serde_json::json!([]), "requests made");
    assert!(page.errors().is_empty(), "{:?}", page.errors());
}
