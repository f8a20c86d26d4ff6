//! The web viewer in a real headless Chromium, against real servers:
//! `leakscope view` over saved heap profiles of the leaky example (the
//! flamegraph has frames, search highlights one, the diff page lists the
//! leaking function first, a broken file is named on the page) and the
//! sidecar's `/ui/` watching this test process (targets with sparklines, a
//! target page with leak suspects and timelines). Screenshots go to
//! `target/screenshots/` for people to look at.

mod support;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use support::browser::Browser;
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
