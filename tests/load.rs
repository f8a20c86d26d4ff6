//! The load generator (`leakscope::load`) against a real server on
//! 127.0.0.1: exact request counts, latency, pacing (and latency from the
//! due time under a server that stalls), errors by kind and weighted
//! mixes; then `leakscope load` as a user runs it.
//!
//! Each test starts its own axum server on a loopback port, which counts
//! the requests it received per path. Every run is wrapped in a generous
//! timeout so a hang fails the test instead of blocking the suite; no test
//! asserts how fast anything is.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::routing::{any, get};
use leakscope::load::{self, LoadOptions, LoadReport, Progress, Target};

/// Requests received, by path.
#[derive(Default)]
struct Received(Mutex<BTreeMap<String, u64>>);

impl Received {
    fn path(&self, path: &str) -> u64 {
        self.lock().get(path).copied().unwrap_or(0)
    }

    fn total(&self) -> u64 {
        self.lock().values().sum()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, u64>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Counts the request, then answers as its path says.
async fn handle(State(received): State<Arc<Received>>, uri: Uri) -> (StatusCode, &'static str) {
    *received.lock().entry(uri.path().to_owned()).or_default() += 1;
    match uri.path() {
        "/slow" => {
            tokio::time::sleep(Duration::from_millis(50)).await;
            (StatusCode::OK, "slow")
        }
        "/fail" => (StatusCode::INTERNAL_SERVER_ERROR, "failed on purpose"),
        _ => (StatusCode::OK, "ok"),
    }
}

fn app(received: Arc<Received>) -> Router {
    Router::new()
        .route("/ok", get(handle))
        .route("/slow", get(handle))
        .route("/fail", get(handle))
        .route("/a", get(handle))
        .route("/b", any(handle))
        .with_state(received)
}

/// The test server on a loopback port of the current runtime.
async fn serve() -> (SocketAddr, Arc<Received>) {
    let received = Arc::new(Received::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local addr");
    let app = app(Arc::clone(&received));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (addr, received)
}

/// A loopback port with nothing listening.
fn closed_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    addr
}

/// Runs the load, failing the test if it does not end within 30 s.
async fn run(target: &Target, opts: &LoadOptions) -> LoadReport {
    tokio::time::timeout(Duration::from_secs(30), load::run(target, opts, None))
        .await
        .expect("the load did not end within 30 s")
        .expect("the load started")
}

fn url(addr: SocketAddr, path: &str) -> Target {
    Target::parse(&format!("http://{addr}{path}")).expect("target")
}

/// `requests` equals ok plus every error, and the histogram holds every
/// answer.
fn assert_consistent(r: &LoadReport) {
    assert_eq!(r.requests, r.ok + r.failed(), "{r:?}");
    assert_eq!(r.by_path.iter().map(|(_, n)| n).sum::<u64>(), r.requests);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_loop_sends_exactly_the_requests_asked_for() {
    let (addr, received) = serve().await;
    let opts = LoadOptions::default().requests(500).concurrency(4);
    let r = run(&url(addr, "/ok"), &opts).await;
    assert_eq!(received.path("/ok"), 500);
    assert_eq!(received.total(), 500);
    assert_eq!((r.requests, r.ok), (500, 500), "{}", r.summary());
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(r.latency.count(), 500);
    assert_eq!(r.by_path, [("/ok".to_owned(), 500)]);
    assert_consistent(&r);
    // Closed loop: latency counts from the send.
    assert_eq!(r.latency.hdr(), r.service_time.hdr());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_of_a_slow_path_is_at_least_its_delay() {
    let (addr, received) = serve().await;
    let opts = LoadOptions::default().requests(20).concurrency(2);
    let r = run(&url(addr, "/slow"), &opts).await;
    assert_eq!((r.ok, received.path("/slow")), (20, 20));
    let h = &r.latency;
    let (p50, p99) = (h.quantile(0.5), h.quantile(0.99));
    let delay = Duration::from_millis(50);
    assert_eq!(h.count(), 20);
    assert!(h.min() >= delay, "{h:?}");
    assert!(p50 >= delay, "{h:?}");
    assert!(h.max() >= p99 && p99 >= p50, "{h:?}");
    assert!(h.mean() >= delay && h.mean() <= h.max(), "{h:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_mode_does_not_exceed_the_rate() {
    let (addr, received) = serve().await;
    let opts = LoadOptions::default()
        .rate(100.0)
        .duration(Duration::from_secs(1))
        .concurrency(4);
    let r = run(&url(addr, "/ok"), &opts).await;
    // 100 slots 10 ms apart fit in 1 s: a few may be lost on a busy
    // machine, none may be added.
    let n = received.path("/ok");
    assert!(
        (80..=110).contains(&n),
        "{n} requests received\n{}",
        r.summary()
    );
    assert_eq!(r.requests, n);
    assert_eq!(r.target_rate, Some(100.0));
    assert_consistent(&r);
}

/// Where the stall is: the first 200 ms of every wall-clock second.
const STALL: Duration = Duration::from_millis(200);

/// A server that answers at once, except that a request arriving in the
/// first 200 ms of a wall-clock second is held until that window ends:
/// it stalls for 200 ms once a second.
async fn serve_stalling() -> SocketAddr {
    async fn stall() -> &'static str {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock after 1970");
        let into_second = Duration::from_nanos(u64::from(now.subsec_nanos()));
        if into_second < STALL {
            tokio::time::sleep(STALL - into_second).await;
        }
        "ok"
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, Router::new().route("/", get(stall))).await;
    });
    addr
}

/// Coordinated omission: paced at 200/s over 4 connections, a server that
/// stalls 200 ms a second holds every connection, and the requests due
/// during the stall can only go out after it. Counted from their due
/// time, a request due `t` into the window waits about `200 ms - t`, so
/// about (200 - 50) / 1000 = 15 % of the requests take 50 ms or more, and
/// p99 (about 190 ms) shows the stall. Counted from the actual send, only
/// the few requests in flight when the window opened (about 4 of the 200
/// of each second, 2 %) look slow. The bounds are wide: a busy machine
/// adds delay everywhere, but cannot make the stall's share small or the
/// requests sent after it slow in thousands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paced_latency_counts_from_the_due_time_so_a_stall_shows_in_p99() {
    let addr = serve_stalling().await;
    let opts = LoadOptions::default()
        .rate(200.0)
        .duration(Duration::from_secs(5))
        .concurrency(4);
    let r = run(&url(addr, "/"), &opts).await;
    let summary = r.summary();
    assert_eq!(r.ok, r.requests, "{summary}");
    // Due slots are not dropped: 1000 are due in 5 s and go out, if late.
    // Dropping the slots that fell due in the stalls would lose about a
    // fifth; a busy machine only loses the few due when the time ran out.
    assert!((900..=1_001).contains(&r.requests), "{summary}");
    let ms = Duration::from_millis;
    let (latency, service) = (&r.latency, &r.service_time);
    assert!(latency.quantile(0.99) >= ms(100), "{summary}");
    assert!(latency.quantile(0.5) < ms(50), "{summary}");
    let stalled = latency.share_at_least(ms(50));
    assert!((0.08..=0.30).contains(&stalled), "{stalled}\n{summary}");
    // Measured from the send, the stall all but disappears.
    let from_send = service.share_at_least(ms(50));
    assert!(from_send <= 0.06, "{from_send}\n{summary}");
    assert!(
        from_send * 3.0 < stalled,
        "{from_send} {stalled}\n{summary}"
    );
    assert!(summary.contains("\nservice   p50 "), "{summary}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_mode_stops_at_the_request_bound() {
    let (addr, received) = serve().await;
    let opts = LoadOptions::default()
        .rate(2_000.0)
        .requests(50)
        .duration(Duration::from_secs(20))
        .concurrency(8);
    let r = run(&url(addr, "/ok"), &opts).await;
    assert_eq!((received.total(), r.requests, r.ok), (50, 50, 50));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_are_counted_by_status() {
    let (addr, received) = serve().await;
    let opts = LoadOptions::default().requests(30).concurrency(3);
    let r = run(&url(addr, "/fail"), &opts).await;
    assert_eq!(r.ok, 0);
    assert_eq!(r.errors, BTreeMap::from([("HTTP 500".to_owned(), 30)]));
    assert_eq!(received.path("/fail"), 30);
    // Answered, so timed.
    assert_eq!(r.latency.count(), 30);
    assert!(r.summary().contains("HTTP 500"), "{}", r.summary());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_answers_time_out_and_the_worker_reconnects() {
    let (addr, received) = serve().await;
    let opts = LoadOptions::default()
        .requests(4)
        .concurrency(1)
        .timeout(Duration::from_millis(10));
    let r = run(&url(addr, "/slow"), &opts).await;
    assert_eq!(r.errors, BTreeMap::from([("timeout".to_owned(), 4)]));
    assert_eq!((r.ok, r.latency.count()), (0, 0));
    // Each attempt reached the server on a new connection.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(received.path("/slow"), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_port_is_counted_as_connect_refused() {
    let target = url(closed_port(), "/ok");
    let opts = LoadOptions::default().requests(6).concurrency(2);
    let r = run(&target, &opts).await;
    assert_eq!((r.requests, r.ok), (6, 0));
    assert_eq!(
        r.errors,
        BTreeMap::from([("connect refused".to_owned(), 6)])
    );
    assert!(r.latency.is_empty());
    // Bounded by time alone, the workers back off instead of spinning.
    let opts = LoadOptions::default().duration(Duration::from_millis(300));
    let r = run(&target, &opts).await;
    assert_eq!(r.ok, 0);
    assert!(r.requests >= 8, "{}", r.summary());
    assert_eq!(
        r.errors.get("connect refused"),
        Some(&r.requests),
        "{:?}",
        r.errors
    );
    assert!(r.summary().contains("connect refused"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_hangs_up_is_counted_as_such() {
    // Accepts, reads the request and closes without answering.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        use tokio::io::AsyncReadExt;
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut buf = [0u8; 1024];
            let _ = stream.read(&mut buf).await;
        }
    });
    let opts = LoadOptions::default().requests(10).concurrency(2);
    let r = run(&url(addr, "/"), &opts).await;
    assert_eq!(r.ok, 0);
    let hangups = ["connection closed", "connection reset"]
        .iter()
        .filter_map(|k| r.errors.get(*k))
        .sum::<u64>();
    assert_eq!(hangups, 10, "{:?}", r.errors);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_weighted_mix_follows_the_weights() {
    let (addr, received) = serve().await;
    let target = Target::mix(&format!("http://{addr}"), [("/a", 3), ("/b", 1)]).expect("mix");
    let opts = LoadOptions::default().requests(400).concurrency(4);
    let r = run(&target, &opts).await;
    assert_eq!(r.ok, 400);
    let by_path: BTreeMap<String, u64> = r.by_path.iter().cloned().collect();
    let (a, b) = (by_path["/a"], by_path["/b"]);
    assert!(a > 0 && b > 0 && a > b, "{by_path:?}");
    // Roughly 3:1 (the mix is exact over whole cycles of 4 requests).
    assert!((270..=330).contains(&a), "{by_path:?}");
    assert_eq!((received.path("/a"), received.path("/b")), (a, b));
    assert_consistent(&r);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duration_bound_stops_and_progress_ends_with_the_totals() {
    let (addr, _received) = serve().await;
    let seen: Mutex<Vec<Progress>> = Mutex::new(Vec::new());
    let record = |p: &Progress| seen.lock().expect("lock").push(*p);
    let opts = LoadOptions::default()
        .duration(Duration::from_millis(500))
        .concurrency(2);
    let target = url(addr, "/ok");
    let r = tokio::time::timeout(
        Duration::from_secs(30),
        load::run(&target, &opts, Some(&record)),
    )
    .await
    .expect("ended")
    .expect("started");
    assert!(r.requests > 0 && r.ok == r.requests, "{}", r.summary());
    let seen = seen.into_inner().expect("lock");
    let last = seen.last().expect("a final progress call");
    assert_eq!((last.sent, last.ok, last.errors), (r.requests, r.ok, 0));
    assert!(
        seen.windows(2)
            .all(|w| w[0].sent <= w[1].sent && w[0].elapsed <= w[1].elapsed)
    );
}

#[tokio::test]
async fn refuses_to_start_without_a_bound_or_with_bad_settings() {
    let target = url(closed_port(), "/");
    let e = load::run(&target, &LoadOptions::default(), None)
        .await
        .expect_err("unbounded");
    assert!(e.to_string().contains("no end"), "{e}");
    let bounded = LoadOptions::default().requests(1);
    for opts in [
        bounded.clone().concurrency(0),
        bounded.clone().rate(0.0),
        bounded.rate(-1.0),
    ] {
        assert!(load::run(&target, &opts, None).await.is_err(), "{opts:?}");
    }
}

// --- The command line -------------------------------------------------
//
// These run the real binary, so they need `leakscope load` wired into
// src/cli/mod.rs and src/main.rs.

mod cli {
    use super::*;
    use std::process::Command;

    /// The test server on a runtime thread of its own, for the binary.
    fn serve_in_background() -> SocketAddr {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Runtime::new().expect("runtime");
            rt.block_on(async {
                let (addr, _received) = serve().await;
                let _ = tx.send(addr);
                std::future::pending::<()>().await;
            });
        });
        rx.recv_timeout(Duration::from_secs(10))
            .expect("server started")
    }

    fn leakscope_load(args: &[&str]) -> std::process::Output {
        Command::new(env!("CARGO_BIN_EXE_leakscope"))
            .arg("load")
            .args(args)
            .output()
            .expect("run leakscope load")
    }

    #[test]
    fn load_prints_a_summary_and_exits_0() {
        let addr = serve_in_background();
        let out = leakscope_load(&[&format!("http://{addr}/ok"), "--requests", "50", "-c", "2"]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}\n{stdout}");
        for word in ["requests  50 ", "ok        50 ", "p50", "p99", "max"] {
            assert!(stdout.contains(word), "{word:?} missing in:\n{stdout}");
        }
        // Progress goes to stderr, not into the summary.
        assert!(!stdout.contains(" sent, "), "{stdout}");
    }

    #[test]
    fn load_exits_1_when_every_request_failed() {
        let addr = serve_in_background();
        let out = leakscope_load(&[
            &format!("http://{addr}/fail"),
            "-n",
            "10",
            "--timeout",
            "5s",
        ]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(String::from_utf8_lossy(&out.stdout).contains("HTTP 500"));
        assert!(stderr.contains("all 10 requests"), "{stderr}");
        let out = leakscope_load(&[&format!("http://{}/", closed_port()), "-d", "200ms"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains("connect refused"), "{stderr}");
    }

    #[test]
    fn load_takes_weighted_urls_and_reports_each() {
        let addr = serve_in_background();
        let out = leakscope_load(&[
            &format!("http://{addr}/a=2"),
            &format!("POST http://{addr}/b"),
            &format!("http://{addr}/fail"),
            "--body",
            r#"{"n":{n}}"#,
            "-n",
            "400",
            "-c",
            "4",
        ]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}\n{stdout}");
        // Exact over whole cycles of 4: 2 + 1 + 1.
        let lines: Vec<&str> = stdout.lines().collect();
        let paths = lines.iter().position(|l| *l == "paths").expect(&stdout);
        let row = |i: usize| lines[paths + i].split_whitespace().collect::<Vec<_>>();
        assert_eq!(row(1), ["/a", "200", "(50.0%)", "errors", "0"], "{stdout}");
        assert_eq!(
            row(2),
            ["POST", "/b", "100", "(25.0%)", "errors", "0"],
            "{stdout}"
        );
        assert_eq!(
            row(3),
            [
                "/fail", "100", "(25.0%)", "errors", "100:", "HTTP", "500", "100"
            ],
            "{stdout}"
        );
        // Two servers in one load are refused, naming both.
        let out = leakscope_load(&[
            &format!("http://{addr}/a"),
            "http://127.0.0.1:1/b",
            "-n",
            "1",
        ]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(
            stderr.contains(&format!("is not on http://{addr}")),
            "{stderr}"
        );
        let out = leakscope_load(&[&format!("BREW http://{addr}/a"), "-n", "1"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains("method \"BREW\""), "{stderr}");
    }

    #[test]
    fn load_refuses_bad_input() {
        let out = leakscope_load(&["https://127.0.0.1:1/", "-n", "1"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains("https is not supported"), "{stderr}");
        let out = leakscope_load(&["http://127.0.0.1:1/", "--duration", "soon"]);
        assert_eq!(out.status.code(), Some(2));
    }
}
