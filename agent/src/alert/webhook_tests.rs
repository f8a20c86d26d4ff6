//! Loopback tests of the webhook sink against an axum receiver.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use tokio::net::TcpListener;

use super::backoff::Backoff;
use super::tests::sample;
use super::webhook::{WebhookOptions, WebhookSink, WebhookStats};
use crate::error::Error;

/// What the receiver saw and how it answers.
#[derive(Clone, Default)]
struct Rx {
    /// (content-type, host, body) of each request, in arrival order.
    seen: Arc<Mutex<Vec<(String, String, serde_json::Value)>>>,
    hits: Arc<AtomicU32>,
    /// Answer 500 to this many more requests.
    fail_next: Arc<AtomicU32>,
    /// Answer 500 to every request while set.
    fail_all: Arc<AtomicBool>,
    /// Sleep this long before answering.
    delay: Duration,
}

async fn receive(State(rx): State<Rx>, headers: HeaderMap, body: Bytes) -> StatusCode {
    rx.hits.fetch_add(1, SeqCst);
    tokio::time::sleep(rx.delay).await;
    let failing = rx.fail_all.load(SeqCst)
        || rx
            .fail_next
            .fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1))
            .is_ok();
    if failing {
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let value = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
    let seen = (header("content-type"), header("host"), value);
    rx.seen.lock().expect("lock").push(seen);
    StatusCode::NO_CONTENT
}

async fn serve(rx: Rx) -> SocketAddr {
    serve_on(rx, SocketAddr::from(([127, 0, 0, 1], 0))).await
}

async fn serve_on(rx: Rx, at: SocketAddr) -> SocketAddr {
    let listener = TcpListener::bind(at).await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = Router::new()
        .route("/hook", axum::routing::post(receive))
        .with_state(rx);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
}

/// Options for fast tests: short timeouts and backoff.
fn fast(url: String) -> WebhookOptions {
    WebhookOptions {
        timeout: Duration::from_secs(2),
        backoff: Backoff {
            base: Duration::from_millis(5),
            max: Duration::from_millis(20),
        },
        ..WebhookOptions::new(url)
    }
}

/// Polls `sink` until `done` holds; panics after 5 s.
async fn wait_for(sink: &WebhookSink, done: impl Fn(&WebhookStats) -> bool) -> WebhookStats {
    let start = Instant::now();
    loop {
        let stats = sink.stats();
        if done(&stats) {
            return stats;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "timed out: {stats:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn posts_json_bodies_in_order() {
    let rx = Rx::default();
    let addr = serve(rx.clone()).await;
    let sink = WebhookSink::spawn(fast(format!("http://{addr}/hook"))).expect("spawn");
    for rule in ["a", "b", "c"] {
        sink.send(sample(rule));
    }
    let stats = wait_for(&sink, |s| s.sent == 3).await;
    assert_eq!((stats.failed_attempts, stats.retries), (0, 0));
    assert_eq!(stats.breaker_state, "closed");
    let seen = rx.seen.lock().expect("lock").clone();
    let rules: Vec<_> = seen.iter().map(|(_, _, v)| v["rule"].clone()).collect();
    assert_eq!(rules, ["a", "b", "c"]);
    for (content_type, host, v) in &seen {
        assert_eq!(content_type, "application/json");
        assert_eq!(host, &addr.to_string());
        assert_eq!(v["to"], "warning");
        assert_eq!(v["value"], 12.0);
        assert_eq!(v["target"], "self");
        assert_eq!(
            v["text"],
            "[leakscope] warning: threads grow by 12.0/min over 5m (limit 5.0/min): suspected leak (self)"
        );
    }
}

#[tokio::test]
async fn resolves_a_host_name_and_sends_it_as_host() {
    // Listen where the sink's lookup of "localhost" will go first.
    let first = tokio::net::lookup_host("localhost:0")
        .await
        .expect("lookup")
        .next()
        .expect("an address");
    let rx = Rx::default();
    let addr = serve_on(rx.clone(), first).await;
    let url = format!("http://localhost:{}/hook", addr.port());
    let sink = WebhookSink::spawn(fast(url)).expect("spawn");
    sink.send(sample("named"));
    wait_for(&sink, |s| s.sent == 1).await;
    let seen = rx.seen.lock().expect("lock").clone();
    assert_eq!(seen[0].1, format!("localhost:{}", addr.port()));
}

#[tokio::test]
async fn retries_until_the_webhook_answers() {
    let rx = Rx::default();
    rx.fail_next.store(2, SeqCst);
    let addr = serve(rx.clone()).await;
    let sink = WebhookSink::spawn(fast(format!("http://{addr}/hook"))).expect("spawn");
    sink.send(sample("retried"));
    let stats = wait_for(&sink, |s| s.sent == 1).await;
    assert_eq!((stats.retries, stats.failed_attempts), (2, 2));
    assert_eq!(rx.hits.load(SeqCst), 3);
    assert_eq!(rx.seen.lock().expect("lock")[0].2["rule"], "retried");
}

#[tokio::test]
async fn breaker_opens_drops_then_recovers() {
    let rx = Rx::default();
    rx.fail_all.store(true, SeqCst);
    let addr = serve(rx.clone()).await;
    let opts = WebhookOptions {
        max_retries: 1,
        breaker_failures: 3,
        breaker_open_for: Duration::from_millis(200),
        ..fast(format!("http://{addr}/hook"))
    };
    let sink = WebhookSink::spawn(opts).expect("spawn");
    for _ in 0..3 {
        sink.send(sample("down"));
    }
    let stats = wait_for(&sink, |s| s.breaker_state == "open").await;
    assert_eq!((stats.failed_attempts, stats.retries), (6, 3));
    let hits = rx.hits.load(SeqCst);
    assert_eq!(hits, 6);
    // Open: dropped at once, no HTTP attempt.
    let start = Instant::now();
    for _ in 0..5 {
        sink.send(sample("dropped"));
    }
    wait_for(&sink, |s| s.dropped_breaker_open == 5).await;
    assert!(
        start.elapsed() < Duration::from_millis(150),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(rx.hits.load(SeqCst), hits);
    // Fixed webhook, open period over: the half-open trial closes the breaker.
    rx.fail_all.store(false, SeqCst);
    tokio::time::sleep(Duration::from_millis(250)).await;
    sink.send(sample("back"));
    let stats = wait_for(&sink, |s| s.sent == 1).await;
    assert_eq!(stats.breaker_state, "closed");
    assert_eq!(rx.seen.lock().expect("lock")[0].2["rule"], "back");
}

#[tokio::test]
async fn breaker_opens_on_a_closed_port() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    let opts = WebhookOptions {
        max_retries: 1,
        breaker_failures: 2,
        ..fast(format!("http://{addr}/hook"))
    };
    let sink = WebhookSink::spawn(opts).expect("spawn");
    for _ in 0..12 {
        sink.send(sample("refused"));
    }
    let stats = wait_for(&sink, |s| s.dropped_breaker_open == 10).await;
    assert_eq!(
        (stats.failed_attempts, stats.retries, stats.sent),
        (4, 2, 0)
    );
    assert_eq!(stats.breaker_state, "open");
}

#[tokio::test]
async fn slow_webhook_never_blocks_send() {
    let rx = Rx {
        delay: Duration::from_secs(5),
        ..Rx::default()
    };
    let addr = serve(rx.clone()).await;
    let opts = WebhookOptions {
        timeout: Duration::from_millis(200),
        max_retries: 1,
        ..fast(format!("http://{addr}/hook"))
    };
    let queue = opts.queue as u64;
    let sink = WebhookSink::spawn(opts).expect("spawn");
    let start = Instant::now();
    for i in 0..1000 {
        let mut alert = sample("slow");
        alert.value = f64::from(i);
        sink.send(alert);
    }
    let took = start.elapsed();
    assert!(took < Duration::from_millis(50), "send() took {took:?}");
    let stats = sink.stats();
    assert!(stats.dropped_queue_full >= 1000 - queue - 1, "{stats:?}");
    // The first delivery times out (twice), unbounded by the 5 s handler.
    let stats = wait_for(&sink, |s| s.failed_attempts >= 2).await;
    assert_eq!(stats.sent, 0);
}

#[tokio::test]
async fn refuses_bad_urls_and_settings() {
    let config = |url: &str| match WebhookSink::spawn(WebhookOptions::new(url)) {
        Err(Error::Config { setting, message }) => format!("{setting}: {message}"),
        Err(e) => panic!("{url}: unexpected {e}"),
        Ok(_) => panic!("{url}: accepted"),
    };
    let m = config("ftp://example.com/");
    assert!(
        m.starts_with("webhook_url: ") && m.contains("expected an http:// or https:// URL"),
        "{m}"
    );
    assert!(config("not a url").contains("expected an http:// or https:// URL"));
    let missing = WebhookOptions {
        ca_file: Some("/nonexistent/leakscope-ca.pem".into()),
        ..WebhookOptions::new("https://127.0.0.1:9/")
    };
    match WebhookSink::spawn(missing) {
        Err(Error::Config { setting, message }) => {
            assert_eq!(setting, "webhook_ca_file");
            assert!(
                message.contains("/nonexistent/leakscope-ca.pem"),
                "{message}"
            );
        }
        other => panic!("expected a config error, got {other:?}"),
    }
    assert!(config("http://").contains("missing or invalid host"));
    assert!(config("http://bad host/").contains("invalid host"));
    assert!(config("http://127.0.0.1:99999/").contains("invalid port"));
    assert!(config("http://127.0.0.1:0/").contains("invalid port"));
    assert!(config("http://u:p@127.0.0.1/").contains("credentials"));
    assert!(config("http://[::1/").contains("unclosed"));
    assert!(config("http://127.0.0.1/a b").contains("invalid character"));
    let zero_queue = WebhookOptions {
        queue: 0,
        ..WebhookOptions::new("http://127.0.0.1:9/")
    };
    assert!(matches!(
        WebhookSink::spawn(zero_queue),
        Err(Error::Config {
            setting: "webhook_queue",
            ..
        })
    ));
    for ok in [
        "http://127.0.0.1:9/hook?x=1",
        "HTTP://[::1]:9",
        "http://localhost:9/x#frag",
        "http://example.invalid?q",
        "https://hooks.example.invalid/services/x",
    ] {
        WebhookSink::spawn(WebhookOptions::new(ok)).expect(ok);
    }
}

#[test]
fn spawn_outside_a_runtime_is_an_error() {
    let e = WebhookSink::spawn(WebhookOptions::new("http://127.0.0.1:9/")).expect_err("no rt");
    assert!(matches!(e, Error::Io { .. }), "{e}");
}
