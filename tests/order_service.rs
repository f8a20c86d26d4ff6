//! The example order-service (examples/order-service: its own package,
//! written apart from leakscope's leaky example and set up as the README
//! tells a user to) under load, watched by its agent with the **built-in
//! rules** and heap sampling: every alert names the code that leaks, with
//! function and file:line, in `/debug/leakscope/alerts` and in the webhook
//! body; the catalog cache, which fills up and then only renews entries, is
//! never named and never classified growing.
//!
//! The load leaks fast (the rules' windows are not shortened): the growth
//! rules need two and a half minutes of history and their hold, so the
//! test takes about four minutes after the build.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use leakscope::agent::explain::heap::{reduce, site_trends};
use leakscope::agent::explain::trend::Trend;
use leakscope::agent::profile::Profile;
use leakscope::client;

const TIMEOUT: Duration = Duration::from_secs(30);
/// The rules' built-in windows need 150 s of history; all four kinds must
/// be named well within this.
const ALERTS_WITHIN: Duration = Duration::from_secs(420);

fn example_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/order-service")
}

/// Builds the example in its folder (so its own `.cargo/config.toml`
/// applies) into a target dir of its own; the binary.
fn build() -> PathBuf {
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/order-service");
    let status = Command::new(env!("CARGO"))
        .args(["build", "--locked", "--quiet"])
        .current_dir(example_dir())
        .env("CARGO_TARGET_DIR", &target)
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .status()
        .expect("run cargo");
    assert!(status.success(), "building examples/order-service failed");
    target.join("debug/order-service")
}

/// The 1-based line of `file` (in the example's src/) holding `text`.
fn line_of(file: &str, text: &str) -> i64 {
    let source = std::fs::read_to_string(example_dir().join("src").join(file)).expect("source");
    let lines: Vec<usize> = source
        .lines()
        .enumerate()
        .filter(|(_, l)| l.contains(text))
        .map(|(i, _)| i + 1)
        .collect();
    assert_eq!(lines.len(), 1, "{text:?} in {file}: {lines:?}");
    lines[0] as i64
}

/// A carrier that accepts connections and keeps them open.
fn carrier() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind carrier");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        let mut kept = Vec::new();
        for stream in listener.incoming().flatten() {
            kept.push(stream);
        }
    });
    addr
}

/// A webhook receiver keeping every alert body.
async fn webhook() -> (SocketAddr, Arc<Mutex<Vec<serde_json::Value>>>) {
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let app = {
        let bodies = bodies.clone();
        axum::Router::new().route(
            "/alerts",
            axum::routing::post(move |body: axum::body::Bytes| {
                let bodies = bodies.clone();
                async move {
                    if let Ok(v) = serde_json::from_slice(&body) {
                        bodies.lock().expect("lock").push(v);
                    }
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

/// The service as a child, killed on drop; its stderr kept for messages.
struct Service {
    child: Child,
    api: SocketAddr,
    agent: SocketAddr,
    log: Arc<Mutex<String>>,
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(binary: &Path, carrier: SocketAddr, hook: SocketAddr) -> Service {
    let mut child = Command::new(binary)
        .env("ORDERS_ADDR", "127.0.0.1:0")
        .env("LEAKSCOPE_ADDR", "127.0.0.1:0")
        .env("ORDERS_UPSTREAM", carrier.to_string())
        .env("ORDERS_ALERT_WEBHOOK", format!("http://{hook}/alerts"))
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start order-service");
    let log = Arc::new(Mutex::new(String::new()));
    {
        let mut err = child.stderr.take().expect("stderr");
        let log = log.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 {
                    break;
                }
                log.lock()
                    .expect("log")
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
    }
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let (mut api, mut agent) = (None, None);
    while api.is_none() || agent.is_none() {
        let mut line = String::new();
        assert!(
            out.read_line(&mut line).expect("read") > 0,
            "order-service exited: {}",
            log.lock().expect("log")
        );
        let addr = |prefix: &str| {
            line.trim()
                .strip_prefix(prefix)
                .and_then(|a| a.parse::<SocketAddr>().ok())
        };
        api = api.or(addr("orders listening on http://"));
        agent = agent.or(addr("leakscope agent on http://"));
    }
    std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
    Service {
        child,
        api: api.expect("api"),
        agent: agent.expect("agent"),
        log,
    }
}

/// Sends `path` (POST with a JSON order, or GET) every `every` until the
/// returned flag is set; ids count up.
fn drive(
    api: SocketAddr,
    every: Duration,
    request: impl Fn(u64) -> (&'static str, String) + Send + 'static,
) -> Arc<std::sync::atomic::AtomicBool> {
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = stop.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut i = 0u64;
        while !flag.load(std::sync::atomic::Ordering::Relaxed) {
            tick.tick().await;
            i += 1;
            let (method, path) = request(i);
            let result = if method == "POST" {
                let body = format!(
                    r#"{{"customer":"c{i}","items":[{{"sku":{},"quantity":2}}],"note":"load"}}"#,
                    i % 997
                );
                client::post_with_headers(
                    api,
                    &path,
                    body.as_bytes(),
                    &[("Content-Type", "application/json")],
                    TIMEOUT,
                )
                .await
            } else {
                client::get(api, &path, TIMEOUT).await
            };
            if let Ok(r) = result {
                assert!(
                    r.status < 500 || r.status == 503,
                    "{method} {path}: {}",
                    r.status
                );
            }
        }
    });
    stop
}

async fn alerts(agent: SocketAddr) -> serde_json::Value {
    let r = client::get(agent, "/debug/leakscope/alerts", TIMEOUT)
        .await
        .expect("alerts");
    serde_json::from_slice(&r.body).expect("alerts JSON")
}

/// What each rule's first alert must name: rule, function, file, line.
struct Expected {
    rule: &'static str,
    function: &'static str,
    file: &'static str,
    line: i64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_alert_names_the_code_that_leaks_with_the_built_in_rules() {
    let binary = tokio::task::spawn_blocking(build).await.expect("build");
    let carrier = carrier();
    let (hook, bodies) = webhook().await;
    let svc = start(&binary, carrier, hook);
    let expected = [
        Expected {
            rule: "heap_growth",
            function: "order_service::audit::remember",
            file: "src/audit.rs",
            line: line_of("audit.rs", "let mut record = vec![0u8; RECORD_BYTES]"),
        },
        Expected {
            rule: "threads_growth",
            function: "order_service::notifications::wait_for_changes",
            file: "src/notifications.rs",
            line: line_of("notifications.rs", "while let Ok(change) = changes.recv()"),
        },
        Expected {
            rule: "tokio_tasks_growth",
            function: "order_service::reservations::Reservations::hold",
            file: "src/reservations.rs",
            line: line_of("reservations.rs", "tokio::spawn(async move {"),
        },
        Expected {
            rule: "open_fds_growth",
            function: "order_service::shipping::Dispatcher::dispatch::{{closure}}",
            file: "src/shipping.rs",
            line: line_of("shipping.rs", "TcpStream::connect(carrier)"),
        },
    ];

    // Heap profiles every 30 s, to classify the cache at the end.
    let heaps: Arc<Mutex<Vec<(f64, Profile)>>> = Arc::default();
    let started = Instant::now();
    let loads = [
        // Catalog lookups over 50,000 skus: the cache (12,000 entries)
        // fills within a minute and then renews entries on every miss.
        drive(svc.api, Duration::from_millis(5), |i| {
            ("GET", format!("/items/{}", (i * 7919) % 50_000))
        }),
        drive(svc.api, Duration::from_millis(50), |_| {
            ("POST", "/orders".into())
        }),
        drive(svc.api, Duration::from_millis(1000), |i| {
            ("POST", format!("/orders/{i}/notify"))
        }),
        drive(svc.api, Duration::from_millis(300), |i| {
            ("POST", format!("/orders/{i}/reserve"))
        }),
        drive(svc.api, Duration::from_millis(1000), |i| {
            ("POST", format!("/orders/{i}/ship"))
        }),
    ];
    let mut first_up: HashMap<String, (f64, serde_json::Value)> = HashMap::new();
    let mut last_heap = Instant::now() - Duration::from_secs(60);
    let load_start = leakscope::agent::collect::unix_seconds(std::time::SystemTime::now());
    loop {
        if last_heap.elapsed() >= Duration::from_secs(30) {
            last_heap = Instant::now();
            if let Ok(r) = client::get(svc.agent, "/debug/pprof/heap", TIMEOUT).await
                && let Ok(p) = Profile::decode_bytes(&r.body, "heap")
            {
                let t = leakscope::agent::collect::unix_seconds(std::time::SystemTime::now());
                heaps.lock().expect("heaps").push((t, p));
            }
        }
        let v = alerts(svc.agent).await;
        for a in v["alerts"].as_array().into_iter().flatten() {
            let rule = a["rule"].as_str().unwrap_or_default().to_owned();
            if a["to"] != "ok" && !first_up.contains_key(&rule) {
                let at = a["at"].as_f64().unwrap_or(0.0) - load_start;
                eprintln!(
                    "{:>5.0} s  {rule}: {}\n         {}",
                    at, a["message"], a["finding"]["summary"]
                );
                first_up.insert(rule, (at, a.clone()));
            }
        }
        if expected.iter().all(|e| first_up.contains_key(e.rule)) {
            break;
        }
        assert!(
            started.elapsed() < ALERTS_WITHIN,
            "not every kind alerted within {ALERTS_WITHIN:?}: {:?}\n{v:#}\nservice log:\n{}",
            first_up.keys().collect::<Vec<_>>(),
            svc.log.lock().expect("log")
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    for l in &loads {
        l.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    for e in &expected {
        let (_, alert) = &first_up[e.rule];
        let f = &alert["finding"];
        let site = &f["site"];
        assert_eq!(site["function"], e.function, "{}: {f:#}", e.rule);
        assert!(
            site["file"]
                .as_str()
                .is_some_and(|file| file.ends_with(e.file)),
            "{}: {f:#}",
            e.rule
        );
        assert_eq!(site["line"], e.line, "{}: {f:#}", e.rule);
        assert!(
            ["exact", "clear"].contains(&f["confidence"].as_str().unwrap_or_default()),
            "{}: {f:#}",
            e.rule
        );
    }
    // The cache is never named, in any alert.
    let v = alerts(svc.agent).await;
    for a in v["alerts"].as_array().into_iter().flatten() {
        assert!(
            !a.to_string().contains("catalog"),
            "an alert names the cache: {a:#}"
        );
    }
    // The webhook got the same findings.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let posted = bodies.lock().expect("bodies").clone();
    for e in &expected {
        let body = posted
            .iter()
            .find(|b| b["rule"] == e.rule && b["to"] != "ok")
            .unwrap_or_else(|| panic!("no webhook body for {}: {posted:#?}", e.rule));
        assert_eq!(body["finding"]["site"]["function"], e.function);
        assert!(
            body["text"]
                .as_str()
                .is_some_and(|t| t.contains(e.function)),
            "{body:#}"
        );
    }
    // Across the heap profiles of the run, the cache filled and stopped:
    // never growing; the audit trail is.
    let heaps = heaps.lock().expect("heaps");
    let snaps: Vec<_> = heaps.iter().filter_map(|(t, p)| reduce(p, *t)).collect();
    assert!(snaps.len() >= 4, "{} heap profiles", snaps.len());
    let trends = site_trends(&snaps, 0.0);
    for t in &trends {
        if t.key.site.function.contains("catalog") {
            assert_ne!(t.fit.trend, Trend::Growing, "{t:#?}");
        }
    }
    let audit = trends
        .iter()
        .find(|t| t.key.site.function == "order_service::audit::remember")
        .expect("the audit trail in the heap profiles");
    assert_eq!(audit.fit.trend, Trend::Growing, "{audit:#?}");
    let mut times: Vec<_> = first_up
        .iter()
        .map(|(r, (at, _))| (r.clone(), *at))
        .collect();
    times.sort_by(|a, b| a.1.total_cmp(&b.1));
    eprintln!("alert after load start, by rule: {times:?}");
}
