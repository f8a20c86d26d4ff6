//! The sidecar names a Go service's leaks in its alerts. `leakscope watch`
//! follows the inventory service (tests/data/inventory: stdlib only, the
//! runtime's default sampling) with the built-in rules, while the load
//! generator reserves items (each reservation parks a goroutine for good),
//! records items (each keeps a 64 KiB spec sheet for good) and reads items
//! through a bounded page cache (which fills, then renews its pages). The
//! `goroutines_growth` and `heap_growth` alerts must name the function and
//! file:line of each leak, and the cache must never be named nor classified
//! growing. The goroutine profiles the finding compared diff, in the real
//! `go tool pprof`, to the waiting function.
//!
//! The built-in growth rules want 150 s of history and hold 30 s, so this
//! test takes a little over three minutes. A second test checks that a
//! goroutine dump over leakscope's cap fails its pull with a message
//! that says so.

mod support;

use std::time::{Duration, Instant};

use leakscope::agent::explain::heap::{reduce, site_trends};
use leakscope::agent::explain::trend::Trend;
use leakscope::agent::profile::{Profile, ValueType};
use leakscope::client;
use leakscope::load::{self, LoadOptions, Target};
use serde_json::Value;
use support::sidecar::{api, download, start_inventory, start_sidecar, wait_until};
use support::{pprof, save, scratch};

/// Long enough for the built-in growth rules (150 s of history, a 30 s
/// hold) on a busy machine.
const ALERTS_WITHIN: Duration = Duration::from_secs(360);

/// The 1-based line of the first line of `file` (in tests/data/inventory)
/// containing `needle`.
fn line_of(file: &str, needle: &str) -> i64 {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/inventory")
        .join(file);
    let text = std::fs::read_to_string(&path).expect("inventory source");
    let i = text
        .lines()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("{needle:?} in {}", path.display()));
    i as i64 + 1
}

/// The first alert of `rule` going up, from the alerts JSON.
fn raised<'a>(alerts: &'a Value, rule: &str) -> Option<&'a Value> {
    alerts["alerts"]
        .as_array()?
        .iter()
        .find(|a| a["rule"] == rule && a["to"] != "ok")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_alerts_name_the_goroutine_and_heap_leaks_and_never_the_cache() {
    let started = Instant::now();
    let dir = scratch("sidecar-go-naming");
    let (service, service_addr) = start_inventory(&dir, "naming");
    let url = format!("http://{service_addr}");
    let data = dir.join("data");
    // The built-in rules and schedule: no rules file, heap every 60 s,
    // counts every 5 s.
    let (sidecar, addr) = start_sidecar(&[
        "--name",
        "inventory-naming",
        "--target-name",
        "inv",
        "--pprof-url",
        &url,
        "--data-dir",
        data.to_str().expect("utf-8 path"),
    ]);
    let ready = wait_until(
        addr,
        "/api/targets/inv",
        "the goroutine and heap counts",
        Duration::from_secs(60),
        |v| {
            v["status"] == "running"
                && v["counts"]["goroutines"].is_number()
                && v["counts"]["heap_bytes"].is_number()
        },
    )
    .await;
    assert_eq!(ready["pid"], service.pid(), "{ready:#}");

    // Load: 19 requests/s, of which 5 reservations (300 goroutines/min),
    // 4 items (4 × 64 KiB/s, 15 MiB/min) and 10 page reads over 160 items
    // (the cache keeps 128 pages of 32 KiB: 4 MiB, renewing ~2 pages/s).
    let mut paths: Vec<(String, u32)> = vec![
        ("/reserve?sku=blue-mug".into(), 80),
        ("/items?name=spec".into(), 64),
    ];
    paths.extend((0..160).map(|i| (format!("/items/{i}"), 1)));
    let target = Target::mix(&url, paths).expect("load mix");
    let opts = LoadOptions::default()
        .concurrency(4)
        .rate(19.0)
        .duration(ALERTS_WITHIN + Duration::from_secs(60));
    let load = tokio::spawn(async move { load::run(&target, &opts, None).await });

    // Both alerts, with their findings.
    let alerts = wait_until(
        addr,
        "/api/targets/inv/alerts",
        "goroutines_growth and heap_growth",
        ALERTS_WITHIN,
        |v| raised(v, "goroutines_growth").is_some() && raised(v, "heap_growth").is_some(),
    )
    .await;
    let fired_after = started.elapsed();
    let target_now = api(addr, "/api/targets/inv").await;
    load.abort();
    eprintln!("alerts after {fired_after:?}:\n{alerts:#}");

    // The goroutine leak: where they wait, and the `go` statement.
    let g = raised(&alerts, "goroutines_growth").expect("goroutine alert");
    let f = &g["finding"];
    assert_eq!(f["kind"], "goroutine", "{g:#}");
    assert_eq!(f["confidence"], "exact", "{g:#}");
    assert_eq!(f["site"]["function"], "main.awaitRestock", "{g:#}");
    let file = f["site"]["file"].as_str().expect("file");
    assert!(file.ends_with("tests/data/inventory/restock.go"), "{g:#}");
    let wait_line = line_of("restock.go", "qty := <-restocked");
    assert_eq!(f["site"]["line"], wait_line, "{g:#}");
    let go_line = line_of("handlers.go", "go awaitRestock(");
    let created = format!(
        "created by main.(*shop).reserve ({}",
        file.replace("restock.go", "handlers.go")
    );
    let summary = f["summary"].as_str().expect("summary");
    assert!(
        summary.contains(&format!("in main.awaitRestock ({file}:{wait_line})"))
            && summary.contains(&format!("{created}:{go_line})")),
        "{summary}"
    );
    assert!(
        f["groups"][0]["what"]
            .as_str()
            .unwrap_or_default()
            .starts_with("[chan receive] created by"),
        "{g:#}"
    );
    assert!(
        f["groups"][0]["new"].as_f64() > f["groups"][0]["base"].as_f64(),
        "{g:#}"
    );

    // The heap leak: the append helper, at its allocation.
    let h = raised(&alerts, "heap_growth").expect("heap alert");
    let f = &h["finding"];
    assert_eq!(f["kind"], "heap", "{h:#}");
    assert!(
        f["confidence"] == "clear" || f["confidence"] == "likely",
        "{h:#}"
    );
    assert_eq!(f["site"]["function"], "main.recordItem", "{h:#}");
    assert!(
        f["site"]["file"]
            .as_str()
            .is_some_and(|p| p.ends_with("tests/data/inventory/catalog.go")),
        "{h:#}"
    );
    let make_line = line_of("catalog.go", "make([]byte, specSheetBytes)");
    assert_eq!(f["site"]["line"], make_line, "{h:#}");
    // Each finding links the viewer's diff of the two stored profiles it
    // compared, whose flamegraph shows the leak.
    for (finding, named) in [
        (&g["finding"], "awaitRestock"),
        (&h["finding"], "recordItem"),
    ] {
        let (base, new) = (finding["base"].as_str(), finding["new"].as_str());
        assert!(
            base.is_some() && new.is_some() && base != new,
            "{finding:#}"
        );
        let url = finding["url"].as_str().expect("a diff URL");
        let prefix = format!("http://{addr}");
        let path = url.strip_prefix(&prefix).unwrap_or_else(|| panic!("{url}"));
        assert!(path.starts_with("/ui/diff?base="), "{url}");
        let page = client::get(addr, path, Duration::from_secs(60))
            .await
            .expect("the diff page");
        assert_eq!(page.status, 200, "{url}: {}", page.text());
        // Its differential flamegraph of the new side has the function.
        let svg = format!(
            "{}&side=new",
            path.replacen("/ui/diff?", "/ui/diff/flame.svg?", 1)
        );
        let flame = client::get(addr, &svg, Duration::from_secs(60))
            .await
            .expect("the diff flamegraph");
        assert_eq!(flame.status, 200, "{svg}: {}", flame.text());
        assert!(flame.text().contains(named), "{svg} does not show {named}");
    }

    // The cache is never named by any alert of the run.
    for a in alerts["alerts"].as_array().expect("alerts") {
        let text = a["finding"].to_string();
        assert!(
            !text.contains("renderPage") && !text.contains("pageCache"),
            "the cache named: {a:#}"
        );
    }
    // Nor classified growing across the heap snapshots the sidecar stored,
    // though it is there.
    let snaps = api(addr, "/api/snapshots?target=inv&kind=heap").await;
    let mut reduced = Vec::new();
    for s in snaps.as_array().expect("snapshots") {
        let id = s["id"].as_str().expect("id");
        let bytes = download(addr, id).await;
        let p = Profile::decode_bytes(&bytes, id).expect("a heap profile");
        assert_eq!(p.period, 512 * 1024, "Go's default MemProfileRate");
        reduced.push(reduce(&p, s["time"].as_f64().expect("time")).expect("inuse_space"));
    }
    let trends = site_trends(&reduced, 0.0);
    let cache: Vec<_> = trends
        .iter()
        .filter(|t| t.key.site.function == "main.renderPage")
        .collect();
    assert!(
        !cache.is_empty(),
        "the cache's pages are in the heap profiles"
    );
    for t in &cache {
        assert_ne!(t.fit.trend, Trend::Growing, "{t:#?}");
    }

    // The goroutine profiles the finding compared, in the real pprof. Every
    // parked goroutine's leaf is runtime.gopark, which leads the flat
    // column (and, with -cum, ties the waiting function with chanrecv):
    // with the runtime's frames hidden, the waiting function leads.
    let g = &g["finding"];
    let mut files = Vec::new();
    for (name, id) in [("base", &g["base"]), ("new", &g["new"])] {
        let body = download(addr, id.as_str().expect("id")).await;
        files.push(save(&dir, &format!("goroutine-{name}.pb.gz"), &body));
    }
    let top = pprof(&[
        "-top",
        "-hide=^runtime\\.",
        "-diff_base",
        &files[0],
        &files[1],
    ]);
    let first = support::top_first_row(&top);
    assert!(first.contains("main.awaitRestock"), "{top}");

    // The counts the rules read.
    assert!(
        target_now["counts"]["heap_bytes"].as_f64() > Some(4.0 * 1024.0 * 1024.0),
        "{target_now:#}"
    );

    // The terminal shows each finding under its alert.
    for needle in [
        "inv: WARNING goroutines_growth",
        "in main.awaitRestock (",
        "inv: WARNING heap_growth",
        "at main.recordItem (",
        "diff: http://",
    ] {
        if let Err(out) = sidecar.wait_output(needle, Duration::from_secs(10)) {
            panic!("no {needle:?} in:\n{out}");
        }
    }
    eprintln!("terminal:\n{}", sidecar.output());
    eprintln!("test took {:?}", started.elapsed());
}

/// A server that answers like a Go service whose goroutine dump is larger
/// than the sidecar reads.
async fn huge_dump_server() -> std::net::SocketAddr {
    use axum::extract::Query;
    use axum::routing::get;
    use std::collections::HashMap;
    let heap = Profile {
        string_table: vec!["".into(), "inuse_space".into(), "bytes".into()],
        sample_type: vec![ValueType { r#type: 1, unit: 2 }],
        ..Profile::default()
    }
    .encode_gzip();
    let goroutine = move |Query(q): Query<HashMap<String, String>>| async move {
        match q.get("debug").map(String::as_str) {
            Some("1") => "goroutine profile: total 1\n".to_owned(),
            Some("2") => {
                let block = "goroutine 7 [chan receive]:\nmain.wait()\n\t/srv/w.go:3 +0x1\n\n";
                block.repeat((33 << 20) / block.len() + 1)
            }
            _ => String::new(),
        }
    };
    let app = axum::Router::new()
        .route("/debug/pprof/goroutine", get(goroutine))
        .route(
            "/debug/pprof/heap",
            get(move || async move { heap.clone() }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_goroutine_dump_over_the_cap_fails_its_pull_clearly() {
    let dir = scratch("sidecar-go-cap");
    let server = huge_dump_server().await;
    let me = std::process::id().to_string();
    let url = format!("http://{server}");
    let data = dir.join("data");
    let (sidecar, addr) = start_sidecar(&[
        "--pid",
        &me,
        "--target-name",
        "big",
        "--pprof-url",
        &url,
        "--heap-every",
        "500ms",
        "--data-dir",
        data.to_str().expect("utf-8 path"),
    ]);
    let cap = format!(
        "larger than leakscope's cap of {} MiB",
        leakscope::sidecar::GOROUTINE_DUMP_CAP >> 20
    );
    let v = wait_until(
        addr,
        "/api/targets/big",
        "the capped pull to fail",
        Duration::from_secs(60),
        |v| {
            v["last_pull_error"]
                .as_str()
                .is_some_and(|e| e.contains(&cap))
        },
    )
    .await;
    assert!(v["counts"]["goroutines"] == 1.0, "a Go target: {v:#}");
    if let Err(out) = sidecar.wait_output(
        "goroutine pull failed: goroutine dump (debug=2) of big",
        Duration::from_secs(10),
    ) {
        panic!("no failure line in:\n{out}");
    }
}
