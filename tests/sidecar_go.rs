//! The sidecar against a Go service it is not linked into: `leakscope
//! watch --name ... --pprof-url ...` follows the goleaky program
//! (tests/data/goleaky, stdlib only) while it leaks goroutines, fds and
//! heap under load. The counts rise, the rules fire, heap snapshots of the
//! Go service are stored (on schedule and on breach), and they diff, in the
//! real `go tool pprof`, to the leaking function. A restart of the Go
//! service is followed to its new pid.

mod support;

use std::time::{Duration, Instant};

use leakscope::client;
use support::sidecar::{api, download, level, start_goleaky, start_sidecar, wait_until};
use support::{pprof, save, scratch, top_first_row};

const LIMIT: Duration = Duration::from_secs(30);

/// Rules for a short test: growth over a 3 s window, and a line for fds.
const RULES: &str = r#"
[[rule]]
name = "goroutines_growth"
metric = "goroutines"
growth = { per_minute = 120, window_secs = 3 }

[[rule]]
name = "open_fds_growth"
metric = "open_fds"
growth = { per_minute = 120, window_secs = 3 }

[[rule]]
name = "open_fds_high"
metric = "open_fds"
above = { warning = 60 }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecar_watches_a_go_service_and_names_its_heap_leak() {
    let dir = scratch("sidecar-go");
    let rules = dir.join("rules.toml");
    std::fs::write(&rules, RULES).expect("rules");
    let (_go, go_addr) = start_goleaky(&dir, "watched");
    let data = dir.join("data");
    let url = format!("http://{go_addr}");
    let (sidecar, addr) = start_sidecar(&[
        "--name",
        "goleaky-watched",
        "--target-name",
        "go",
        "--pprof-url",
        &url,
        "--interval",
        "100ms",
        "--heap-every",
        "1s",
        "--counts-every",
        "200ms",
        "--rules",
        rules.to_str().expect("utf-8 path"),
        "--data-dir",
        data.to_str().expect("utf-8 path"),
    ]);

    // Running, with a goroutine count from the pprof endpoint and a first
    // (healthy) heap snapshot.
    let before = wait_until(
        addr,
        "/api/targets/go",
        "a first heap snapshot",
        LIMIT,
        |v| {
            v["status"] == "running"
                && v["counts"]["goroutines"].is_number()
                && v["snapshots_total"].as_u64() >= Some(1)
        },
    )
    .await;
    assert_eq!(before["pid"], _go.pid(), "{before:#}");
    let goroutines0 = before["counts"]["goroutines"].as_f64().expect("goroutines");
    let fds0 = before["last"]["open_fds"].as_u64().expect("fds");

    // Load: leak goroutines, fds and heap for ~2.5 s.
    let start = Instant::now();
    let mut sent = 0;
    while start.elapsed() < Duration::from_millis(2500) {
        for path in [
            "/leak/goroutine",
            "/leak/goroutine",
            "/leak/fd",
            "/leak/heap?kb=256",
        ] {
            let r = client::get(go_addr, path, Duration::from_secs(10))
                .await
                .expect(path);
            assert_eq!(r.status, 200, "{path}: {}", r.text());
            sent += 1;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(sent > 40, "only {sent} requests sent");
    let load_end = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();

    // The counts rise and the rules fire.
    let v = wait_until(addr, "/api/targets/go", "the rules to fire", LIMIT, |v| {
        level(v, "goroutines_growth") != "ok" && level(v, "open_fds_high") == "warning"
    })
    .await;
    let goroutines = v["counts"]["goroutines"].as_f64().expect("goroutines");
    let fds = v["last"]["open_fds"].as_u64().expect("fds");
    assert!(
        goroutines >= goroutines0 + 20.0,
        "goroutines {goroutines0} -> {goroutines}"
    );
    assert!(fds >= fds0 + 20, "fds {fds0} -> {fds}");
    let alerts = api(addr, "/api/targets/go/alerts").await;
    let raised: Vec<&str> = alerts["alerts"]
        .as_array()
        .expect("alerts")
        .iter()
        .filter(|a| a["to"] != "ok")
        .filter_map(|a| a["rule"].as_str())
        .collect();
    assert!(raised.contains(&"goroutines_growth"), "{alerts:#}");
    assert!(raised.contains(&"open_fds_high"), "{alerts:#}");
    // The goroutine alert names where the leaked goroutines wait, from the
    // goroutine dumps pulled with every heap profile and at the alert.
    let named = alerts["alerts"]
        .as_array()
        .expect("alerts")
        .iter()
        .find(|a| a["rule"] == "goroutines_growth" && a["to"] != "ok")
        .map(|a| &a["finding"]);
    assert_eq!(
        named.map(|f| &f["site"]["function"]),
        Some(&serde_json::json!("main.parkForever")),
        "{alerts:#}"
    );

    // A breach snapshot was taken, beside the scheduled ones.
    let snaps = wait_until(
        addr,
        "/api/snapshots?target=go&kind=heap",
        "a breach snapshot",
        LIMIT,
        |v| {
            v.as_array()
                .is_some_and(|a| a.iter().any(|s| s["trigger"] == "breach"))
        },
    )
    .await;
    let snaps = snaps.as_array().expect("list");
    assert!(
        snaps.iter().any(|s| s["trigger"] == "schedule"),
        "{snaps:#?}"
    );
    let first = &snaps[0];
    assert_eq!(first["target"], "go");
    assert_eq!(first["pid"], _go.pid());
    assert!(
        first["sample"]["open_fds"].is_number(),
        "the sample at capture: {first:#}"
    );
    assert!(
        first["sample"]["fds_by_kind"].is_object(),
        "with the fd breakdown: {first:#}"
    );

    // Healthy vs now: the real go tool pprof names the leak.
    let newest = wait_until(
        addr,
        "/api/snapshots?target=go&kind=heap&limit=1",
        "a snapshot after the load",
        LIMIT,
        |v| v[0]["time"].as_f64() > Some(load_end),
    )
    .await;
    let mut files = Vec::new();
    for (name, id) in [("base", &first["id"]), ("new", &newest[0]["id"])] {
        let body = download(addr, id.as_str().expect("id")).await;
        files.push(save(&dir, &format!("{name}.pb.gz"), &body));
    }
    let top = pprof(&[
        "-top",
        "-sample_index=inuse_space",
        "-diff_base",
        &files[0],
        &files[1],
    ]);
    assert!(top_first_row(&top).contains("main.leakHeap"), "{top}");

    // The sidecar's own delta of the last two heap snapshots reads in pprof too.
    let r = client::get(addr, "/api/targets/go/delta", Duration::from_secs(30))
        .await
        .expect("delta");
    assert_eq!(r.status, 200, "{}", r.text());
    let delta = save(&dir, "delta.pb.gz", &r.body);
    let comments = pprof(&["-comments", &delta]);
    assert!(comments.contains("leakscope delta"), "{comments}");

    // /metrics carries every target with a label, and promtool accepts it.
    let m = client::get(addr, "/metrics", Duration::from_secs(10))
        .await
        .expect("metrics")
        .text();
    assert!(m.contains("process_open_fds{target=\"go\"}"), "{m}");
    assert!(
        m.contains("leakscope_target_tasks{target=\"go\",kind=\"goroutines\"}"),
        "{m}"
    );
    assert!(
        m.contains(
            "leakscope_threshold_state{target=\"go\",rule=\"open_fds_high\",metric=\"open_fds\"} 1"
        ),
        "{m}"
    );
    let check = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().expect("stdin").write_all(m.as_bytes())?;
            c.wait_with_output()
        })
        .expect("run promtool (install prometheus)");
    assert!(
        check.status.success() && check.stdout.is_empty() && check.stderr.is_empty(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );

    // The terminal said what happened.
    for needle in [
        "go: WARNING goroutines_growth",
        "heap snapshot",
        "grew most: main.leakHeap",
    ] {
        if let Err(out) = sidecar.wait_output(needle, Duration::from_secs(5)) {
            panic!("no {needle:?} in:\n{out}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_process_is_picked_up_under_its_new_pid() {
    let dir = scratch("sidecar-restart");
    let (mut go, _) = start_goleaky(&dir, "restarts");
    let first_pid = go.pid();
    let data = dir.join("data");
    let (_sidecar, addr) = start_sidecar(&[
        "--name",
        "goleaky-restarts",
        "--target-name",
        "svc",
        "--interval",
        "100ms",
        "--data-dir",
        data.to_str().expect("utf-8 path"),
    ]);
    wait_until(addr, "/api/targets/svc", "the first process", LIMIT, |v| {
        v["status"] == "running" && v["pid"] == first_pid
    })
    .await;

    go.kill();
    let v = wait_until(
        addr,
        "/api/targets/svc",
        "the exit to be seen",
        LIMIT,
        |v| v["status"] == "waiting" || v["status"] == "gone",
    )
    .await;
    assert_eq!(v["pid"], first_pid, "the last pid is kept: {v:#}");

    let (go2, _) = start_goleaky(&dir, "restarts");
    let v = wait_until(addr, "/api/targets/svc", "the new process", LIMIT, |v| {
        v["status"] == "running" && v["pid"] == go2.pid()
    })
    .await;
    assert_ne!(go2.pid(), first_pid);
    assert_eq!(v["restarts"], 1, "{v:#}");
    // The terminal said so too (the line can trail the API by a moment).
    for needle in [
        format!("svc: gone (pid {first_pid})"),
        format!("svc: running (pid {})", go2.pid()),
    ] {
        if let Err(out) = _sidecar.wait_output(&needle, Duration::from_secs(5)) {
            panic!("no {needle:?} in:\n{out}");
        }
    }
}
