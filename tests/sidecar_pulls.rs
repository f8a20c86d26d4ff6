//! The sidecar's pulls when endpoints misbehave, and its store when the
//! sidecar itself is killed: a slow endpoint and a closed port cost bounded
//! time, open their breakers and never delay a healthy target; the breaker
//! closes when the endpoint is back; `kill -9` during writes leaves a store
//! whose every listed snapshot reads back; retention holds.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use leakscope::agent::profile::{Function, Line, Location, Profile, Sample, ValueType};
use leakscope::client;
use support::scratch;
use support::sidecar::{api, download, start_sidecar, wait_until};

const LIMIT: Duration = Duration::from_secs(30);
const SLOW: u8 = 0;
const OK: u8 = 1;

/// A valid heap-like profile with `functions` distinct functions whose
/// names do not compress well (so big ones take real time to write).
fn profile_bytes(functions: usize, seed: u64) -> Vec<u8> {
    let mut p = Profile {
        string_table: vec!["".into(), "inuse_space".into(), "bytes".into()],
        sample_type: vec![ValueType { r#type: 1, unit: 2 }],
        ..Profile::default()
    };
    let mut x = seed | 1;
    for i in 0..functions as u64 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        p.string_table
            .push(format!("f{i}_{x:016x}{:016x}", x.rotate_left(29)));
        p.function.push(Function {
            id: i + 1,
            name: p.string_table.len() as i64 - 1,
            ..Function::default()
        });
        p.location.push(Location {
            id: i + 1,
            address: 0x1000 + i,
            line: vec![Line {
                function_id: i + 1,
                line: 1,
                column: 0,
            }],
            ..Location::default()
        });
        p.sample.push(Sample {
            location_id: vec![i + 1],
            value: vec![(x % 4096) as i64],
            label: vec![],
        });
    }
    p.encode_gzip()
}

/// A pprof endpoint whose heap answer is slow (never comes) or a valid
/// profile, switched by `mode`.
async fn endpoint(mode: Arc<AtomicU8>, body: Vec<u8>) -> SocketAddr {
    let body = Arc::new(body);
    let app = Router::new().route(
        "/debug/pprof/heap",
        get(move || {
            let (mode, body) = (mode.clone(), body.clone());
            async move {
                if mode.load(Ordering::SeqCst) == SLOW {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                }
                body.as_ref().clone()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// A loopback port nothing listens on.
fn closed_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr")
}

fn target(v: &serde_json::Value, name: &str) -> serde_json::Value {
    v.as_array()
        .and_then(|a| a.iter().find(|t| t["name"] == name))
        .cloned()
        .unwrap_or_else(|| panic!("no target {name} in {v:#}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_dead_endpoints_open_breakers_without_delaying_others() {
    let dir = scratch("sidecar-breakers");
    let flaky_mode = Arc::new(AtomicU8::new(SLOW));
    let flaky = endpoint(flaky_mode.clone(), profile_bytes(50, 1)).await;
    let healthy = endpoint(Arc::new(AtomicU8::new(OK)), profile_bytes(50, 2)).await;
    let dead = closed_port();
    let me = std::process::id();
    let config = format!(
        r#"
[sidecar]
interval_ms = 100

[[target]]
name = "slow"
pid = {me}
pprof_url = "http://{flaky}"
heap_every_secs = 0.2
counts_every_secs = 0

[[target]]
name = "dead"
pid = {me}
pprof_url = "http://{dead}"
heap_every_secs = 0.2
counts_every_secs = 0

[[target]]
name = "healthy"
pid = {me}
pprof_url = "http://{healthy}"
heap_every_secs = 0.2
counts_every_secs = 0
"#
    );
    let config_path = dir.join("sidecar.toml");
    std::fs::write(&config_path, config).expect("config");
    let data = dir.join("data");
    let (sidecar, addr) = start_sidecar(&[
        "--config",
        config_path.to_str().expect("utf-8"),
        "--data-dir",
        data.to_str().expect("utf-8"),
        "--timeout",
        "300ms",
        "--connect-timeout",
        "200ms",
        "--retries",
        "1",
        "--breaker-failures",
        "2",
        "--breaker-open-for",
        "1s",
    ]);

    // Both bad endpoints open their breakers; each failure was bounded by
    // the timeouts (the messages say so) and is refused fast afterwards.
    let all = wait_until(addr, "/api/targets", "both breakers to open", LIMIT, |v| {
        ["slow", "dead"].iter().all(|n| {
            let t = target(v, n);
            t["pulls"]["breaker_state"] == "open"
                && t["pulls"]["refused_breaker_open"].as_u64() >= Some(1)
        })
    })
    .await;
    let slow = target(&all, "slow");
    let dead_t = target(&all, "dead");
    for t in [&slow, &dead_t] {
        let e = t["last_pull_error"].as_str().unwrap_or_default();
        assert!(e.contains("circuit breaker open"), "{t:#}");
    }
    // The failures that opened them were bounded by the timeouts.
    let out = sidecar.output();
    assert!(
        out.lines()
            .any(|l| l.contains("slow: heap pull failed") && l.contains("no answer within 300ms")),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.contains("dead: heap pull failed") && l.contains("refused")),
        "{out}"
    );
    assert_eq!(slow["snapshots_total"], 0);

    // Meanwhile the healthy target kept its schedule, and still does.
    let healthy_then = target(&all, "healthy")["snapshots_total"]
        .as_u64()
        .expect("count");
    assert!(healthy_then >= 2, "{all:#}");
    wait_until(
        addr,
        "/api/targets/healthy",
        "more healthy snapshots",
        LIMIT,
        |v| v["snapshots_total"].as_u64() >= Some(healthy_then + 3),
    )
    .await;

    // The slow endpoint recovers: after open_for, a trial pull succeeds and
    // the breaker closes.
    flaky_mode.store(OK, Ordering::SeqCst);
    let slow = wait_until(
        addr,
        "/api/targets/slow",
        "the breaker to close",
        LIMIT,
        |v| v["pulls"]["breaker_state"] == "closed" && v["snapshots_total"].as_u64() >= Some(1),
    )
    .await;
    assert!(slow["last_pull_error"].is_null(), "{slow:#}");
    for needle in ["slow: heap pull failed", "healthy: heap snapshot"] {
        if let Err(out) = sidecar.wait_output(needle, Duration::from_secs(5)) {
            panic!("no {needle:?} in:\n{out}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_writes_keeps_the_store_consistent() {
    let dir = scratch("sidecar-kill9");
    // ~1 MiB profiles, pulled back to back.
    let server = endpoint(Arc::new(AtomicU8::new(OK)), profile_bytes(20_000, 3)).await;
    let url = format!("http://{server}");
    let data = dir.join("data");
    let me = std::process::id().to_string();
    let args = [
        "--pid",
        me.as_str(),
        "--pprof-url",
        url.as_str(),
        "--heap-every",
        "30ms",
        "--counts-every",
        "0",
        "--data-dir",
        data.to_str().expect("utf-8"),
    ];
    let mut listed = 0;
    for round in 0..5u64 {
        let (mut sidecar, addr) = start_sidecar(&args);
        // Each start finds what the last one stored.
        let v = api(addr, "/api/snapshots").await;
        let now = v.as_array().expect("list").len();
        assert!(now >= listed, "round {round}: {now} listed after {listed}");
        tokio::time::sleep(Duration::from_millis(300 + 97 * round)).await;
        // SIGKILL, in the middle of whatever write is under way.
        sidecar.kill();
        listed = now;
    }
    let (_sidecar, addr) = start_sidecar(&args);
    let v = api(addr, "/api/snapshots").await;
    let snaps = v.as_array().expect("list");
    assert!(
        snaps.len() >= 5,
        "snapshots survived the kills: {}",
        snaps.len()
    );
    for s in snaps {
        let id = s["id"].as_str().expect("id");
        let body = download(addr, id).await;
        assert_eq!(
            body.len() as u64,
            s["bytes"].as_u64().expect("bytes"),
            "{id}"
        );
        Profile::decode_bytes(&body, id).unwrap_or_else(|e| panic!("{id}: {e}"));
    }
    // On disk: no temp file, no data without its metadata.
    let files: Vec<String> = std::fs::read_dir(data.join("snapshots"))
        .expect("snapshots dir")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    assert!(files.iter().all(|f| !f.ends_with(".tmp")), "{files:#?}");
    let metas = files.iter().filter(|f| f.ends_with(".json")).count();
    let datas = files.iter().filter(|f| f.ends_with(".pb.gz")).count();
    assert!(
        metas == datas && metas >= snaps.len(),
        "{metas} json, {datas} data, {} listed",
        snaps.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_keeps_the_newest_snapshots() {
    let dir = scratch("sidecar-retention");
    let server = endpoint(Arc::new(AtomicU8::new(OK)), profile_bytes(100, 4)).await;
    let url = format!("http://{server}");
    let data = dir.join("data");
    let me = std::process::id().to_string();
    let (_sidecar, addr) = start_sidecar(&[
        "--pid",
        &me,
        "--pprof-url",
        &url,
        "--heap-every",
        "50ms",
        "--counts-every",
        "0",
        "--max-snapshots",
        "3",
        "--data-dir",
        data.to_str().expect("utf-8"),
    ]);
    let t = wait_until(
        addr,
        &format!("/api/targets/pid-{me}"),
        "ten pulls",
        LIMIT,
        |v| v["snapshots_total"].as_u64() >= Some(10),
    )
    .await;
    let v = api(addr, "/api/snapshots").await;
    let snaps = v.as_array().expect("list");
    assert!(
        snaps.len() <= 3 && !snaps.is_empty(),
        "{} kept of {}",
        snaps.len(),
        t["snapshots_total"]
    );
    let times: Vec<f64> = snaps
        .iter()
        .map(|s| s["time"].as_f64().expect("time"))
        .collect();
    assert!(
        times.windows(2).all(|w| w[0] <= w[1]),
        "oldest first: {times:?}"
    );
    let on_disk = std::fs::read_dir(data.join("snapshots"))
        .expect("dir")
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".pb.gz"))
        })
        .count();
    assert!(on_disk <= 4, "{on_disk} data files for a limit of 3");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_takes_lists_serves_and_deletes_snapshots() {
    let dir = scratch("sidecar-api");
    let body = profile_bytes(30, 5);
    let server = endpoint(Arc::new(AtomicU8::new(OK)), body.clone()).await;
    let url = format!("http://{server}/debug/pprof/");
    let data = dir.join("data");
    let me = std::process::id().to_string();
    let (_sidecar, addr) = start_sidecar(&[
        "--pid",
        &me,
        "--target-name",
        "svc",
        "--pprof-url",
        &url,
        "--heap-every",
        "0",
        "--counts-every",
        "0",
        "--interval",
        "100ms",
        "--data-dir",
        data.to_str().expect("utf-8"),
    ]);
    wait_until(addr, "/api/targets/svc", "running", LIMIT, |v| {
        v["status"] == "running"
    })
    .await;
    let t = Duration::from_secs(10);

    // Take one now: 201 with its metadata, trigger manual.
    let r = client::post(addr, "/api/targets/svc/snapshot?kind=heap", b"", t)
        .await
        .expect("post");
    assert_eq!(r.status, 201, "{}", r.text());
    let meta: serde_json::Value = serde_json::from_slice(&r.body).expect("json");
    assert_eq!(meta["trigger"], "manual");
    assert_eq!(meta["kind"], "heap");
    assert_eq!(meta["bytes"], body.len());
    let id = meta["id"].as_str().expect("id").to_owned();

    // Bad requests say what is wrong.
    for (path, status, want) in [
        (
            "/api/targets/svc/snapshot?kind=bogus",
            400,
            "unknown profile kind",
        ),
        (
            "/api/targets/svc/snapshot?kind=cpu&seconds=0",
            400,
            "seconds must be",
        ),
        ("/api/targets/nope/snapshot", 404, "no target called"),
        // The test endpoint serves no CPU profile: the pull fails, bounded.
        (
            "/api/targets/svc/snapshot?kind=cpu&seconds=1",
            502,
            "HTTP 404",
        ),
    ] {
        let r = client::post(addr, path, b"", Duration::from_secs(30))
            .await
            .expect("post");
        assert_eq!(r.status, status, "{path}: {}", r.text());
        assert!(r.text().contains(want), "{path}: {}", r.text());
    }

    // Listed, served byte for byte, then deleted.
    let list = api(addr, "/api/snapshots?target=svc").await;
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list:#}");
    let one = api(addr, &format!("/api/snapshots/{id}")).await;
    assert_eq!(one["id"], id.as_str());
    let r = client::get(addr, &format!("/api/snapshots/{id}/profile"), t)
        .await
        .expect("get");
    assert_eq!(r.status, 200);
    assert_eq!(r.body, body);
    let r = client::get(addr, "/api/targets/svc/delta", t)
        .await
        .expect("get");
    assert_eq!(
        r.status,
        404,
        "one heap snapshot is not enough for a delta: {}",
        r.text()
    );
    let r = raw_delete(addr, &format!("/api/snapshots/{id}")).await;
    assert!(r.starts_with("HTTP/1.1 204"), "{r}");
    let r = raw_delete(addr, &format!("/api/snapshots/{id}")).await;
    assert!(r.starts_with("HTTP/1.1 404"), "{r}");
    let r = client::get(addr, &format!("/api/snapshots/{id}/profile"), t)
        .await
        .expect("get");
    assert_eq!(r.status, 404);

    // The time series.
    let s = api(addr, "/api/targets/svc/series?metric=threads").await;
    assert!(
        s["threads"].as_array().is_some_and(|p| !p.is_empty()),
        "{s:#}"
    );
    let r = client::get(addr, "/api/targets/svc/series?metric=nope", t)
        .await
        .expect("get");
    assert_eq!(r.status, 400, "{}", r.text());
}

/// DELETE with a bare request (the client speaks GET and POST).
async fn raw_delete(addr: SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let req = format!("DELETE {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).await.expect("read");
    out
}
