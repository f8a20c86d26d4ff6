//! Loopback tests of the Alertmanager sink's posts against an axum
//! receiver standing in for `/api/v2/alerts` (the real Alertmanager is
//! driven in `agent/tests/alertmanager.rs`).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use tokio::net::TcpListener;

use super::alertmanager::{AlertmanagerOptions, AlertmanagerSink, rfc3339};
use super::backoff::Backoff;
use super::tests::sample;
use crate::error::Error;
use crate::explain::{Confidence, Finding, Site};

type Posts = Arc<Mutex<Vec<serde_json::Value>>>;

async fn receive(State(posts): State<Posts>, body: Bytes) -> StatusCode {
    let value = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
    posts.lock().expect("lock").push(value);
    StatusCode::OK
}

/// A receiver at `/am/api/v2/alerts`; returns its base URL.
async fn serve() -> (String, Posts) {
    let posts = Posts::default();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr: SocketAddr = listener.local_addr().expect("addr");
    let app = Router::new()
        .route("/am/api/v2/alerts", axum::routing::post(receive))
        .with_state(posts.clone());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}/am/"), posts)
}

fn fast(url: String) -> AlertmanagerOptions {
    AlertmanagerOptions {
        backoff: Backoff {
            base: Duration::from_millis(5),
            max: Duration::from_millis(20),
        },
        ..AlertmanagerOptions::new(url)
    }
}

/// Polls until `posts` holds at least `n` posts; panics after 10 s.
async fn wait_posts(posts: &Posts, n: usize) -> Vec<serde_json::Value> {
    let start = Instant::now();
    loop {
        let seen = posts.lock().expect("lock").clone();
        if seen.len() >= n {
            return seen;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "waiting for {n} posts: {seen:#?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn finding() -> Finding {
    Finding {
        summary: "+60 threads in app::worker (src/worker.rs:42)".into(),
        site: Some(Site {
            function: "app::worker".into(),
            file: "src/worker.rs".into(),
            line: 42,
        }),
        confidence: Confidence::Exact,
        url: Some("/debug/pprof/ui/diff?base=a&new=b".into()),
        ..Finding::unknown("threads", "threads", "")
    }
}

fn alert_at(v: &serde_json::Value, i: usize) -> &serde_json::Value {
    &v.as_array().expect("a JSON array of alerts")[i]
}

#[tokio::test]
async fn fires_escalates_and_resolves_with_labels_and_the_site() {
    let (url, posts) = serve().await;
    let mut opts = fast(url);
    opts.labels.insert("service".into(), "orders".into());
    opts.generator_url = Some("http://api-7:6060/".into());
    let sink = AlertmanagerSink::spawn(opts).expect("spawn");

    let mut warn = sample("threads_growth");
    warn.finding = Some(finding());
    let before = super::alertmanager::rfc3339(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs_f64(),
    );
    sink.send(warn.clone());
    let seen = wait_posts(&posts, 1).await;
    let a = alert_at(&seen[0], 0);
    assert_eq!(seen[0].as_array().map(Vec::len), Some(1));
    let labels = &a["labels"];
    assert_eq!(labels["alertname"], "threads_growth");
    assert_eq!(labels["rule"], "threads_growth");
    assert_eq!(labels["metric"], "threads");
    assert_eq!(labels["target"], "self");
    assert_eq!(labels["severity"], "warning");
    assert_eq!(labels["service"], "orders");
    assert_eq!(labels.as_object().map(|o| o.len()), Some(6), "{labels}");
    let notes = &a["annotations"];
    assert_eq!(notes["summary"], warn.message);
    assert_eq!(notes["site"], "app::worker (src/worker.rs:42)");
    assert_eq!(notes["confidence"], "exact");
    let description = notes["description"].as_str().expect("description");
    for part in [
        &warn.message,
        "(self)",
        "src/worker.rs:42",
        "confidence: exact",
    ] {
        assert!(description.contains(part), "{part}: {description}");
    }
    assert_eq!(a["startsAt"], "2023-11-14T22:13:20.500Z");
    // Firing: it ends four minutes ahead unless re-sent.
    let ends = a["endsAt"].as_str().expect("endsAt");
    assert!(ends > before.as_str(), "{ends} after {before}");
    assert_eq!(
        a["generatorURL"],
        "http://api-7:6060/debug/pprof/ui/diff?base=a&new=b"
    );
    assert_eq!(sink.firing(), 1);

    // Critical: the warning is resolved and the critical one fires.
    let mut crit = warn.clone();
    crit.from = "warning".into();
    crit.to = "critical".into();
    crit.at_unix += 60.0;
    sink.send(crit);
    let seen = wait_posts(&posts, 2).await;
    let (old, new) = (alert_at(&seen[1], 0), alert_at(&seen[1], 1));
    assert_eq!(old["labels"]["severity"], "warning");
    assert_eq!(old["endsAt"], "2023-11-14T22:14:20.500Z");
    assert_eq!(new["labels"]["severity"], "critical");
    assert_eq!(new["startsAt"], "2023-11-14T22:14:20.500Z");
    assert_eq!(sink.firing(), 1);

    // Recovery: the same labels, ended at the recovery time.
    let mut ok = warn.clone();
    ok.from = "critical".into();
    ok.to = "ok".into();
    ok.finding = None;
    ok.at_unix += 120.0;
    sink.send(ok);
    let seen = wait_posts(&posts, 3).await;
    assert_eq!(seen[2].as_array().map(Vec::len), Some(1));
    let done = alert_at(&seen[2], 0);
    assert_eq!(done["labels"], new["labels"]);
    assert_eq!(done["startsAt"], new["startsAt"]);
    assert_eq!(done["endsAt"], "2023-11-14T22:15:20.500Z");
    assert_eq!(sink.firing(), 0);
    let stats = sink.stats();
    assert_eq!((stats.sent, stats.failed_attempts), (3, 0), "{stats:?}");
}

#[tokio::test]
async fn firing_alerts_are_re_sent_until_they_recover() {
    let (url, posts) = serve().await;
    let opts = AlertmanagerOptions {
        resend_every: Duration::from_millis(100),
        ..fast(url)
    };
    let sink = AlertmanagerSink::spawn(opts).expect("spawn");
    // Nothing firing: nothing is re-sent.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(posts.lock().expect("lock").is_empty());
    sink.send(sample("a"));
    let mut b = sample("b");
    b.target = "pid 7".into();
    sink.send(b.clone());
    // Re-sends carry both alerts (one carrying only `a` may come first,
    // when a period ends between the two sends).
    let both = |post: &serde_json::Value| post.as_array().is_some_and(|a| a.len() == 2);
    let start = Instant::now();
    let seen = loop {
        let seen = posts.lock().expect("lock").clone();
        if seen.iter().filter(|p| both(p)).count() >= 2 {
            break seen;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "{seen:#?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let resent: Vec<_> = seen.iter().filter(|p| both(p)).collect();
    for post in &resent {
        let rules: Vec<_> = post
            .as_array()
            .expect("array")
            .iter()
            .map(|a| (a["labels"]["rule"].clone(), a["labels"]["target"].clone()))
            .collect();
        assert_eq!(
            rules,
            [("a".into(), "self".into()), ("b".into(), "pid 7".into())]
        );
    }
    let first_end = alert_at(&seen[0], 0)["endsAt"].as_str().expect("end");
    let later_end = alert_at(resent[1], 0)["endsAt"].as_str().expect("end");
    assert!(later_end > first_end, "{later_end} > {first_end}");
    assert_eq!(
        alert_at(resent[1], 0)["startsAt"],
        alert_at(&seen[0], 0)["startsAt"]
    );

    // Both recover: after the resolutions, no more posts.
    for mut recovered in [sample("a"), b] {
        recovered.from = "warning".into();
        recovered.to = "ok".into();
        sink.send(recovered);
    }
    let resolved_b = |post: &serde_json::Value| {
        post.as_array().is_some_and(|alerts| {
            alerts
                .iter()
                .any(|x| x["labels"]["rule"] == "b" && x["endsAt"] == x["startsAt"])
        })
    };
    let start = Instant::now();
    while !posts.lock().expect("lock").iter().any(resolved_b) {
        assert!(start.elapsed() < Duration::from_secs(10), "{posts:#?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(sink.firing(), 0);
    // Let any re-send in flight land, then count: three periods later,
    // nothing more was posted.
    tokio::time::sleep(Duration::from_millis(150)).await;
    let count = posts.lock().expect("lock").len();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let seen = posts.lock().expect("lock").clone();
    assert_eq!(seen.len(), count, "re-sent after recovery: {seen:#?}");
    // A re-send computed before the recovery is posted before it: the
    // resolution is the last word.
    assert!(resolved_b(&seen[count - 1]), "{seen:#?}");
}

#[tokio::test]
async fn refuses_bad_settings() {
    let config = |opts: AlertmanagerOptions| match AlertmanagerSink::spawn(opts) {
        Err(Error::Config { setting, message }) => format!("{setting}: {message}"),
        Err(e) => panic!("unexpected {e}"),
        Ok(_) => panic!("accepted"),
    };
    let m = config(AlertmanagerOptions::new("ftp://am.example.com"));
    assert!(m.starts_with("alertmanager_url: "), "{m}");
    assert!(m.contains("expected an http:// or https:// URL"), "{m}");
    let empty = std::env::temp_dir().join(format!("leakscope-empty-ca-{}.pem", std::process::id()));
    std::fs::write(&empty, "not a certificate\n").expect("write");
    let m = config(AlertmanagerOptions {
        ca_file: Some(empty.clone()),
        ..AlertmanagerOptions::new("https://am.example.com")
    });
    let _ = std::fs::remove_file(&empty);
    assert!(m.starts_with("alertmanager_ca_file: "), "{m}");
    assert!(m.contains("no certificate found"), "{m}");
    for (name, expected) in [
        ("severity", "set by leakscope"),
        ("alertname", "set by leakscope"),
        ("9lives", "not a label name"),
        ("has-dash", "not a label name"),
        ("__reserved", "not a label name"),
        ("", "not a label name"),
    ] {
        let mut opts = AlertmanagerOptions::new("http://127.0.0.1:9093");
        opts.labels.insert(name.into(), "x".into());
        let m = config(opts);
        assert!(m.starts_with("alertmanager_labels: "), "{m}");
        assert!(m.contains(expected), "{name}: {m}");
    }
    let zero = AlertmanagerOptions {
        resend_every: Duration::ZERO,
        ..AlertmanagerOptions::new("http://127.0.0.1:9093")
    };
    assert!(config(zero).starts_with("alertmanager_resend_every: "));
    let zero = AlertmanagerOptions {
        queue: 0,
        ..AlertmanagerOptions::new("http://127.0.0.1:9093")
    };
    assert!(config(zero).starts_with("alertmanager_queue: "));
    let mut fine = AlertmanagerOptions::new("http://localhost:9093/prefix?x");
    fine.labels.insert("instance".into(), "api-7".into());
    AlertmanagerSink::spawn(fine).expect("valid");
}

#[test]
fn timestamps_are_rfc3339_utc() {
    assert_eq!(rfc3339(0.0), "1970-01-01T00:00:00.000Z");
    assert_eq!(rfc3339(f64::NAN), "1970-01-01T00:00:00.000Z");
    assert_eq!(rfc3339(1_700_000_000.5), "2023-11-14T22:13:20.500Z");
    // 2024-02-29 (a leap day) 23:59:59.999.
    assert_eq!(rfc3339(1_709_251_199.999), "2024-02-29T23:59:59.999Z");
}
