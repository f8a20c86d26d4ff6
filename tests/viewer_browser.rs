//! The web viewer in a real headless Chromium, against real servers:
//! `leakscope view` over saved heap profiles of the leaky example (the
//! flamegraph has frames, search highlights one, the diff page lists the
//! leaking function first, a broken file is named on the page, and every
//! flamegraph, the offline report's too, spans its frame), the sidecar's
//! `/ui/` watching this test process (targets with sparklines, a target
//! page with leak suspects and timelines), and the agent's pages with an
//! alert that names its leak. Screenshots go to `target/screenshots/` for
//! people to look at.

mod support;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use support::browser::{Browser, Page};
use support::sidecar::{start_sidecar, wait_until};
use support::{leak_heap, save, scratch};

leakscope::enable_heap_profiling!("prof:true,prof_active:true,prof_accum:true,lg_prof_sample:14");

const WAIT: Duration = Duration::from_secs(30);

fn screenshots() -> PathBuf {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("target dir")
        .join("screenshots");
    std::fs::create_dir_all(&dir).expect("screenshots dir");
    dir
}

/// Share of the width of the iframe `id` spanned by its flamegraph's root
/// frame (`all`), once inferno's script has laid the frames out to the
/// width of their SVG (it removes the SVG's width, then sizes the frames).
fn flame_share(page: &Page, id: &str) -> f64 {
    let js = format!(
        "(function(){{var f=document.getElementById('{id}');var d=f&&f.contentDocument;if(!d)return null;\
         var svg=d.querySelector('svg');var frames=d.getElementById('frames');\
         if(!svg||!frames||svg.hasAttribute('width'))return null;\
         if(Math.abs(frames.width.baseVal.value-(svg.getBoundingClientRect().width-20))>=1)return null;\
         var t=Array.from(frames.querySelectorAll('g > title')).find(function(t){{return t.textContent.indexOf('all (')==0;}});\
         if(!t)return null;var r=t.parentNode.querySelector('rect').getBoundingClientRect();\
         return {{root:r.width,frame:f.clientWidth,top:r.top,height:f.clientHeight}};}})()"
    );
    let v = page.wait_for(&js, &format!("the flamegraph of #{id} laid out"), WAIT);
    let (root, frame) = (
        v["root"].as_f64().unwrap_or(0.0),
        v["frame"].as_f64().unwrap_or(1.0),
    );
    // The frame opens scrolled to the root, at its bottom.
    let (top, height) = (
        v["top"].as_f64().unwrap_or(-1.0),
        v["height"].as_f64().unwrap_or(0.0),
    );
    assert!(
        (0.0..height).contains(&top),
        "the root frame of #{id} is out of view: at {top} px of {height}"
    );
    root / frame
}

/// Asserts that the flamegraph of iframe `id` spans at least 90% of it.
fn assert_full_width(page: &Page, id: &str) {
    let share = flame_share(page, id);
    assert!(
        share >= 0.9,
        "the root frame of #{id} spans {:.0}% of its iframe",
        share * 100.0
    );
}

/// `leakscope view DIR` on a loopback port; returns the child and base URL.
fn view(dir: &std::path::Path) -> (support::sidecar::Proc, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_leakscope"))
        .args(["view", dir.to_str().expect("utf-8")])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start leakscope view");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).expect("read");
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no URL in {line:?}"))
        .trim_end_matches('/')
        .to_owned();
    let proc = support::sidecar::Proc {
        child,
        lines: Default::default(),
    };
    (proc, url)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewer_pages_in_chromium() {
    let dir = scratch("viewer-browser");
    let base = support::get("/debug/pprof/heap").await;
    leak_heap(40, 256).await;
    let new = support::get("/debug/pprof/heap").await;
    save(&dir, "1-base.pb.gz", &base.body);
    save(&dir, "2-new.pb.gz", &new.body);
    std::fs::write(dir.join("3-broken.pb.gz"), b"not a profile").expect("write");
    let (_view, url) = view(&dir);
    let shots = screenshots();
    let report = dir.join("report.html");
    let made = Command::new(env!("CARGO_BIN_EXE_leakscope"))
        .args(["diff", "-o"])
        .arg(&report)
        .arg(dir.join("1-base.pb.gz"))
        .arg(dir.join("2-new.pb.gz"))
        .output()
        .expect("run leakscope diff");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );

    tokio::task::spawn_blocking(move || {
        let browser = Browser::start();

        // The overview lists both profiles and names the broken file.
        let page = browser.open(&format!("{url}/"));
        page.wait_for(
            "document.querySelectorAll('#compare tr').length == 3",
            "two snapshots listed",
            WAIT,
        );
        let notes = page.eval("document.querySelector('.error').textContent");
        assert!(
            notes
                .as_str()
                .unwrap_or_default()
                .contains("3-broken.pb.gz"),
            "{notes}"
        );
        page.screenshot(&shots.join("viewer-index.png"));

        // One profile: frames in the flamegraph, a top table, search.
        let page = browser.open(&format!("{url}/profile/2-new.pb.gz?type=inuse_space"));
        page.wait_for(
            "(function(){var f=document.getElementById('flame');var d=f&&f.contentDocument;\
             return d && d.querySelectorAll('#frames > g').length > 10;})()",
            "flamegraph frames",
            WAIT,
        );
        let top = page.eval("document.querySelector('#top tr:nth-child(2)').textContent");
        assert!(
            top.as_str().unwrap_or_default().contains("leak_heap_kib"),
            "top row: {top}"
        );
        page.eval(
            "(function(){var s=document.getElementById('search');s.value='leak_heap_kib';\
             s.dispatchEvent(new Event('input'));return true;})()",
        );
        let highlighted = page.wait_for(
            "(function(){var d=document.getElementById('flame').contentDocument;\
             return Array.from(d.querySelectorAll('#frames rect')).filter(function(r){\
             return r.getAttribute('fill')=='rgb(230,0,230)';}).length;})()",
            "search to highlight a frame",
            WAIT,
        );
        assert!(highlighted.as_u64() >= Some(1), "{highlighted}");
        assert_full_width(&page, "flame");
        page.screenshot(&shots.join("viewer-profile-search.png"));
        assert!(page.errors().is_empty(), "{:?}", page.errors());

        // The diff: the leaking function first, both sides drawn.
        let page = browser.open(&format!(
            "{url}/diff?base=1-base.pb.gz&new=2-new.pb.gz&type=inuse_space"
        ));
        let first = page.eval("document.querySelector('#ranked tr:nth-child(2) .fn').textContent");
        assert!(
            first
                .as_str()
                .unwrap_or_default()
                .ends_with("leak_heap_kib"),
            "first: {first}"
        );
        for id in ["flame-new", "flame-base"] {
            page.wait_for(
                &format!(
                    "(function(){{var d=document.getElementById('{id}').contentDocument;\
                     return d && d.querySelectorAll('#frames > g').length > 5;}})()"
                ),
                id,
                WAIT,
            );
            assert_full_width(&page, id);
        }
        page.screenshot(&shots.join("viewer-diff.png"));
        // The toggle goes to the normalized view and back.
        let href = page.eval("document.getElementById('toggle-normalize').href");
        assert!(
            href.as_str().unwrap_or_default().contains("normalize=1"),
            "{href}"
        );
        assert!(page.errors().is_empty(), "{:?}", page.errors());

        // A bad id is an error page, not a crash.
        let page = browser.open(&format!("{url}/profile/nope"));
        let err = page.eval("document.getElementById('error').textContent");
        assert!(
            err.as_str().unwrap_or_default().contains("no snapshot"),
            "{err}"
        );

        // The offline report of `leakscope diff -o`: both flamegraphs, in
        // srcdoc frames, at full width too.
        let page = browser.open(&format!("file://{}", report.display()));
        let shares = ["flame-new", "flame-base"].map(|id| (id, flame_share(&page, id)));
        page.eval("document.getElementById('flame-new').previousElementSibling.scrollIntoView()");
        page.screenshot(&shots.join("viewer-report.png"));
        for (id, share) in shares {
            assert!(
                share >= 0.9,
                "the root frame of #{id} spans {:.0}% of its iframe",
                share * 100.0
            );
        }
        assert!(page.errors().is_empty(), "{:?}", page.errors());
    })
    .await
    .expect("browser part");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecar_ui_in_chromium() {
    let dir = scratch("viewer-sidecar-ui");
    let me = std::process::id().to_string();
    let pprof = format!("http://{}", support::service());
    let data = dir.join("data");
    let (_sidecar, addr) = start_sidecar(&[
        "--pid",
        &me,
        "--target-name",
        "tests",
        "--pprof-url",
        &pprof,
        "--interval",
        "100ms",
        "--heap-every",
        "400ms",
        "--counts-every",
        "200ms",
        "--data-dir",
        data.to_str().expect("utf-8"),
    ]);
    // Leak steadily while heap snapshots are taken, and on until the pages
    // have been checked: a linear grower.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let leaking = {
        let stop = stop.clone();
        tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                leak_heap(2, 256).await;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    wait_until(
        addr,
        "/api/targets/tests",
        "five heap snapshots",
        WAIT,
        |v| v["snapshots_total"].as_u64() >= Some(5),
    )
    .await;
    let url = format!("http://{addr}/ui");
    let shots = screenshots();
    tokio::task::spawn_blocking(move || {
        let browser = Browser::start();
        let page = browser.open(&format!("{url}/"));
        page.wait_for(
            "document.querySelectorAll('#targets svg.spark').length >= 3",
            "sparklines",
            WAIT,
        );
        page.screenshot(&shots.join("sidecar-overview.png"));
        let page = browser.open(&format!("{url}/target/tests"));
        let first = page.eval("document.querySelector('#suspects tr:nth-child(2)').textContent");
        let first = first.as_str().unwrap_or_default().to_owned();
        assert!(
            first.contains("leak_heap_kib") && first.contains("growing"),
            "first suspect: {first}"
        );
        // leakscope's own allocations are one line apart, never a row.
        let rows = page.eval("document.getElementById('suspects').textContent");
        let rows = rows.as_str().unwrap_or_default().to_owned();
        assert!(!rows.contains("leakscope_agent::"), "{rows}");
        let own = page.eval("document.getElementById('leakscope-own').textContent");
        assert!(
            own.as_str().unwrap_or_default().starts_with("leakscope's own: "),
            "{own}"
        );
        let charts = page.eval("document.querySelectorAll('#timeline svg.chart').length");
        assert!(charts.as_u64() >= Some(3), "{charts}");
        // The heap across snapshots, and the breakdowns as multi-line charts.
        let titles = page.eval(
            "Array.from(document.querySelectorAll('#timeline svg.chart text')).map(function(t){return t.textContent;}).join('|')",
        );
        let titles = titles.as_str().unwrap_or_default().to_owned();
        for want in ["heap in use (snapshots)", "fds by kind", "threads", "open_fds"] {
            assert!(titles.split('|').any(|t| t == want), "{want} chart in {titles}");
        }
        let legends = page.eval("document.querySelectorAll('#timeline .legend').length");
        assert!(legends.as_u64() >= Some(2), "legend entries: {legends}");
        let markers = page.eval("document.querySelectorAll('#timeline .snapshot-marker').length");
        assert!(markers.as_u64() >= Some(3), "{markers}");
        page.screenshot(&shots.join("sidecar-target.png"));
        assert!(page.errors().is_empty(), "{:?}", page.errors());
    })
    .await
    .expect("browser part");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    leaking.await.expect("leaking task");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_ui_in_chromium() {
    leak_heap(10, 256).await;
    let url = format!("http://{}/debug/pprof/ui", support::service());
    let shots = screenshots();
    tokio::task::spawn_blocking(move || {
        let browser = Browser::start();
        let page = browser.open(&format!("{url}/"));
        page.wait_for("document.querySelectorAll('#targets svg.spark').length >= 1", "the process's sparklines", WAIT);
        let live = page.eval("Array.from(document.querySelectorAll('#compare a')).some(function(a){return a.textContent=='live-heap';})");
        assert_eq!(live, serde_json::Value::Bool(true), "the live heap is listed");
        page.screenshot(&shots.join("agent-overview.png"));
        let page = browser.open(&format!("{url}/profile/live-heap?type=inuse_space"));
        page.wait_for(
            "(function(){var d=document.getElementById('flame').contentDocument;\
             return d && d.querySelectorAll('#frames > g').length > 10;})()",
            "live heap flamegraph",
            WAIT,
        );
        let top = page.eval("document.querySelector('#top').textContent");
        assert!(top.as_str().unwrap_or_default().contains("leak_heap_kib"), "{top}");
        page.screenshot(&shots.join("agent-live-heap.png"));
        assert!(page.errors().is_empty(), "{:?}", page.errors());
    })
    .await
    .expect("browser part");
}

/// Starts a thread that waits forever on a channel nobody sends on; the
/// sender is leaked too, so `recv` never returns.
#[inline(never)]
fn park_a_worker() {
    let (tx, rx) = std::sync::mpsc::channel::<u8>();
    std::mem::forget(tx);
    std::thread::Builder::new()
        .name("stuck-worker".into())
        .spawn(move || {
            let _ = rx.recv();
        })
        .expect("spawn");
}

/// The agent's own pages, with no store: a thread rule with a short window
/// (the mechanism; the built-in rules take minutes) fires while threads
/// pile up, and the target page shows the finding its alert carries: the
/// function the threads run in, exact, the group, and a link to the diff
/// of the two thread profiles it compared, which the agent serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_alert_names_its_leak_in_chromium() {
    use leakscope::agent::watch::monitor::MonitorOptions;
    use leakscope::agent::watch::rules::{Condition, Rule};
    use leakscope::ui::AgentBuilderExt;

    let rule = Rule::new(
        "threads_fast",
        "threads",
        Condition::Growth {
            per_minute: 30.0,
            critical_per_minute: None,
            window_secs: 6.0,
        },
    );
    let addr = support::start_service(move || {
        leakscope::AgentBuilder::new()
            .watch(
                MonitorOptions::default()
                    .interval(Duration::from_millis(100))
                    .rules(vec![rule]),
            )
            .with_ui()
    });
    // A healthy second (the thread ids are read while the rule is ok), then
    // a thread every 100 ms until the alert names them.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let start = std::time::Instant::now();
    loop {
        park_a_worker();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let r = leakscope::client::get(addr, "/debug/leakscope/alerts", WAIT)
            .await
            .expect("alerts");
        let v: serde_json::Value = serde_json::from_slice(&r.body).expect("alerts JSON");
        let named = v["alerts"].as_array().is_some_and(|a| {
            a.iter()
                .any(|a| a["finding"]["kind"] == "threads" && a["finding"]["new"].is_string())
        });
        if named {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(90), "no finding: {v}");
    }
    let url = format!("http://{addr}/debug/pprof/ui");
    let shots = screenshots();
    tokio::task::spawn_blocking(move || {
        let browser = Browser::start();
        let page = browser.open(&format!("{url}/"));
        // The front page: the latest finding per target; the heap ring's
        // snapshots and the profiles the finding compared are listed.
        let latest = page.eval("document.querySelector('#targets .latest-finding').textContent");
        let latest = latest.as_str().unwrap_or_default().to_owned();
        assert!(latest.contains("stuck-worker"), "latest finding: {latest}");
        let ids = page.eval(
            "Array.from(document.querySelectorAll('#compare tr')).map(function(r){return r.textContent;}).join('|')",
        );
        let ids = ids.as_str().unwrap_or_default().to_owned();
        assert!(ids.contains("heap-1") && ids.contains("ring"), "{ids}");
        assert!(ids.contains("threads-base-") && ids.contains("threads-new-"), "{ids}");
        page.screenshot(&shots.join("agent-overview.png"));
        let target = page.eval("document.querySelector('#targets a').href");
        let page = browser.open(target.as_str().expect("target link"));

        // The alert and its finding.
        let text = |sel: &str| {
            let v = page.eval(&format!(
                "(function(){{var e=document.querySelector('{sel}');return e?e.textContent:'';}})()"
            ));
            v.as_str().unwrap_or_default().to_owned()
        };
        assert!(text("#alerts tr.alert").contains("threads_fast"), "{}", text("#alerts"));
        let site = text("#alerts .finding .site code.fn");
        assert!(
            site.starts_with("viewer_browser::park_a_worker::{{closure}}"),
            "site: {site}"
        );
        assert!(
            text("#alerts .finding .site .at").contains("tests/viewer_browser.rs:"),
            "{}",
            text("#alerts .finding")
        );
        assert_eq!(text("#alerts .finding .conf"), "exact");
        let detail = page.eval("document.querySelector('#alerts .finding .conf').title");
        assert!(!detail.as_str().unwrap_or_default().is_empty(), "a tooltip");
        assert!(
            text("#alerts .finding table.groups").contains("thread 'stuck-worker'"),
            "{}",
            text("#alerts .finding")
        );
        page.eval("document.getElementById('alerts').previousElementSibling.scrollIntoView()");
        page.screenshot(&shots.join("agent-alert-finding.png"));
        assert!(page.errors().is_empty(), "{:?}", page.errors());

        // Its link: the diff of the two thread profiles, full width.
        let href = page.eval("document.querySelector('#alerts .finding a.diff-link').href");
        let href = href.as_str().expect("diff link").to_owned();
        assert!(href.contains("base=threads-base-") && href.contains("type=threads"), "{href}");
        let page = browser.open(&href);
        let grew = page.eval("document.querySelectorAll('#ranked td.grew').length");
        assert!(grew.as_u64() >= Some(1), "the new threads show as growth: {grew}");
        for id in ["flame-new", "flame-base"] {
            assert_full_width(&page, id);
        }
        page.screenshot(&shots.join("agent-finding-diff.png"));
        assert!(page.errors().is_empty(), "{:?}", page.errors());

        // A snapshot of the heap ring opens as a profile.
        let page = browser.open(&format!("{url}/profile/heap-1?type=inuse_space"));
        assert_full_width(&page, "flame");
        assert!(page.errors().is_empty(), "{:?}", page.errors());
    })
    .await
    .expect("browser part");
}
