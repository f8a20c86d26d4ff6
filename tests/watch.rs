//! The watch loop on a live service under load: leaking threads, fds and
//! tasks through the leaky routes raises the growth and absolute rules, a
//! breach capture is taken beside a healthy baseline (and `go tool pprof
//! -diff_base` between them names the heap leak), and the rules recover once
//! the leaking stops. Rules use short windows so the test takes seconds.

mod support;

use std::time::{Duration, Instant};

use std::sync::{Arc, Mutex};

use leakscope::agent::alert::webhook::WebhookOptions;
use leakscope::agent::client;
use leakscope::agent::watch::monitor::MonitorOptions;
use leakscope::agent::watch::rules::{Condition, Rule};
use support::{TIMEOUT, pprof, save, scratch, start_service};

leakscope::enable_heap_profiling!("prof:true,prof_active:true,prof_accum:true,lg_prof_sample:14");

fn growth(metric: &str, per_minute: f64) -> Rule {
    Rule::new(
        format!("{metric}_growth"),
        metric,
        Condition::Growth {
            per_minute,
            critical_per_minute: None,
            window_secs: 3.0,
        },
    )
}

async fn alerts(addr: std::net::SocketAddr) -> serde_json::Value {
    let res = client::get(addr, "/debug/leakscope/alerts", TIMEOUT)
        .await
        .expect("alerts");
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(res.header("content-type"), Some("application/json"));
    serde_json::from_slice(&res.body).expect("alerts JSON")
}

fn level(v: &serde_json::Value, rule: &str) -> String {
    v["levels"]
        .as_array()
        .and_then(|l| l.iter().find(|e| e["rule"] == rule))
        .and_then(|e| e["level"].as_str())
        .unwrap_or_else(|| panic!("no rule {rule} in {v}"))
        .to_owned()
}

/// Polls the alerts until `pred` holds, for at most `limit`.
async fn wait_for(
    addr: std::net::SocketAddr,
    limit: Duration,
    what: &str,
    pred: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let start = Instant::now();
    loop {
        let v = alerts(addr).await;
        if pred(&v) {
            return v;
        }
        assert!(
            start.elapsed() < limit,
            "timed out waiting for {what}: {v:#}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A webhook receiver on loopback that fails its first `fail_first` posts
/// with 500, then keeps every body.
async fn webhook_receiver(
    fail_first: usize,
) -> (std::net::SocketAddr, Arc<Mutex<Vec<serde_json::Value>>>) {
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::new(Mutex::new(0usize));
    let app = {
        let bodies = bodies.clone();
        axum::Router::new().route(
            "/hook",
            axum::routing::post(move |body: axum::body::Bytes| {
                let bodies = bodies.clone();
                let seen = seen.clone();
                async move {
                    let n = {
                        let mut s = seen.lock().expect("lock");
                        *s += 1;
                        *s
                    };
                    if n <= fail_first {
                        return axum::http::StatusCode::INTERNAL_SERVER_ERROR;
                    }
                    let v = serde_json::from_slice(&body).expect("webhook JSON");
                    bodies.lock().expect("lock").push(v);
                    axum::http::StatusCode::OK
                }
            }),
        )
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, bodies)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaks_raise_rules_capture_evidence_and_recover() {
    let (hook_addr, hook_bodies) = webhook_receiver(2).await;
    let store_dir = scratch("watch-store");
    let store =
        leakscope::agent::store::Store::open(&store_dir, Default::default()).expect("store");
    let agent_store = store.clone();
    let addr = start_service(move || {
        let fds_now = leakscope::agent::resource::sample(
            leakscope::agent::resource::Target::SelfProcess,
            &Default::default(),
        )
        .expect("sample")
        .open_fds as f64;
        let rules = vec![
            growth("threads", 120.0),
            growth("tokio_tasks", 120.0),
            Rule::new(
                "open_fds_high",
                "open_fds",
                Condition::Above {
                    warning: Some(fds_now + 30.0),
                    critical: None,
                },
            ),
        ];
        let mut webhook = WebhookOptions::new(format!("http://{hook_addr}/hook"));
        webhook.backoff.base = Duration::from_millis(20);
        leakscope::AgentBuilder::new()
            .watch(
                MonitorOptions::default()
                    .interval(Duration::from_millis(100))
                    .rules(rules),
            )
            .webhook(webhook)
            .store(agent_store)
    });
    let get = |path: &'static str| async move {
        let r = client::get(addr, path, TIMEOUT).await.expect(path);
        assert_eq!(r.status, 200, "{path}: {}", r.text());
    };

    // A healthy baseline is captured first.
    wait_for(addr, Duration::from_secs(10), "a baseline", |v| {
        v["baseline_at"].is_number()
    })
    .await;
    assert_eq!(level(&alerts(addr).await, "threads_growth"), "ok");

    // Load: leak threads, tasks, fds and heap for ~2.5 s.
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(2500) {
        get("/leak/thread").await;
        get("/leak/task").await;
        get("/leak/fd").await;
        get("/leak/heap?kb=256").await;
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    // A rule's level turns first; its alert is listed once its finding is
    // made (a thread dump, profiles compared), a moment later: wait for both.
    let raised = |v: &serde_json::Value| -> Vec<String> {
        v["alerts"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter(|a| a["to"] == "warning")
                    .filter_map(|a| a["rule"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    let rules = ["threads_growth", "tokio_tasks_growth", "open_fds_high"];
    let v = wait_for(addr, Duration::from_secs(20), "rules to fire", |v| {
        level(v, "threads_growth") != "ok"
            && level(v, "tokio_tasks_growth") != "ok"
            && level(v, "open_fds_high") == "warning"
            && rules.iter().all(|r| raised(v).iter().any(|x| x == r))
    })
    .await;
    for rule in rules {
        assert!(raised(&v).iter().any(|x| x == rule), "{rule} raised: {v:#}");
    }
    assert!(v["breach_at"].is_number(), "breach captured: {v:#}");

    // The captures diff to the heap leak.
    let dir = scratch("watch");
    let mut files = Vec::new();
    for which in ["baseline", "breach"] {
        let path = format!("/debug/leakscope/evidence/{which}");
        let r = client::get(addr, &path, TIMEOUT).await.expect("evidence");
        assert_eq!(r.status, 200, "{which}: {}", r.text());
        assert_eq!(
            r.header("content-disposition"),
            Some(format!("attachment; filename=\"heap-{which}\"").as_str())
        );
        files.push(save(&dir, &format!("{which}.pb.gz"), &r.body));
    }
    let top = pprof(&[
        "-top",
        "-symbolize=none",
        "-sample_index=inuse_space",
        "-diff_base",
        &files[0],
        &files[1],
    ]);
    assert!(
        support::top_first_row(&top).contains("leak_heap_kib"),
        "{top}"
    );

    // Growth stops: the growth rules recover once the window has passed.
    wait_for(
        addr,
        Duration::from_secs(15),
        "growth rules to recover",
        |v| level(v, "threads_growth") == "ok" && level(v, "tokio_tasks_growth") == "ok",
    )
    .await;
    // fds stay high: the absolute rule holds its level.
    let v = alerts(addr).await;
    assert_eq!(level(&v, "open_fds_high"), "warning", "{v:#}");

    // The states are in /metrics too.
    let m = client::get(addr, "/metrics", TIMEOUT)
        .await
        .expect("metrics")
        .text();
    assert!(
        m.contains("leakscope_threshold_state{rule=\"open_fds_high\",metric=\"open_fds\"} 1"),
        "{m}"
    );
    assert!(m.contains("leakscope_alerts_total "), "{m}");

    // The webhook got the alerts, after failing twice: retried with backoff.
    let v = alerts(addr).await;
    let stats = &v["webhook"];
    assert!(stats["retries"].as_u64() >= Some(2), "{v:#}");
    assert!(stats["sent"].as_u64() >= Some(4), "{v:#}");
    let bodies = hook_bodies.lock().expect("lock").clone();
    let texts: Vec<&str> = bodies.iter().filter_map(|b| b["text"].as_str()).collect();
    assert!(
        texts
            .iter()
            .any(|t| t.starts_with("[leakscope] warning: threads growing")),
        "{texts:#?}"
    );
    assert!(
        bodies
            .iter()
            .any(|b| b["rule"] == "threads_growth" && b["to"] == "ok"),
        "the recovery is posted too: {bodies:#?}"
    );

    // The fix: the leaked fds are closed, and the absolute rule recovers.
    let r = client::post(addr, "/leak/fd/close", b"", TIMEOUT)
        .await
        .expect("close fds");
    assert!(r.text().starts_with("closed "), "{}", r.text());
    wait_for(
        addr,
        Duration::from_secs(10),
        "open_fds_high to recover",
        |v| level(v, "open_fds_high") == "ok",
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let bodies = hook_bodies.lock().expect("lock").clone();
        if bodies
            .iter()
            .any(|b| b["rule"] == "open_fds_high" && b["to"] == "ok")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the fds recovery reaches the webhook: {bodies:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The agent kept its captures in the store: a healthy baseline and the
    // breach, as heap profiles that name the leak.
    let deadline = Instant::now() + Duration::from_secs(10);
    let breach = loop {
        let snaps = store.list(&leakscope::agent::store::ListFilter::default().kind("heap"));
        if let Some(b) = snaps
            .iter()
            .find(|s| s.trigger == leakscope::agent::store::Trigger::Breach)
        {
            assert!(
                snaps
                    .iter()
                    .any(|s| s.trigger == leakscope::agent::store::Trigger::Schedule),
                "a baseline too: {snaps:#?}"
            );
            break b.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no breach snapshot in the store: {snaps:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(breach.labels.contains_key("rule"), "{breach:#?}");
    assert!(
        breach
            .sample
            .as_ref()
            .is_some_and(|s| s.fds_by_kind.is_some()),
        "{breach:#?}"
    );
    let bytes = store.read(&breach.id).expect("read the breach snapshot");
    let profile =
        leakscope::agent::profile::Profile::decode_bytes(&bytes, "breach").expect("pprof");
    assert!(
        profile
            .string_table
            .iter()
            .any(|s| s.contains("leak_heap_kib")),
        "the stored breach profile names the leaking function"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_can_be_turned_off() {
    let addr = start_service(|| leakscope::AgentBuilder::new().without_watch());
    let r = client::get(addr, "/debug/leakscope/alerts", TIMEOUT)
        .await
        .expect("get");
    assert_eq!(r.status, 404);
    assert!(r.text().contains("watch loop is off"), "{}", r.text());
}
