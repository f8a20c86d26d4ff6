//! The example order-service (examples/order-service) as a child process
//! for tests and benches: built in its own folder into `target/order-service`,
//! a carrier that keeps its connections, a webhook receiver, paced requests,
//! and the agent's alerts.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use leakscope::client;

pub const TIMEOUT: Duration = Duration::from_secs(30);

pub fn example_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/order-service")
}

/// Builds the example in its folder (so its own `.cargo/config.toml`
/// applies) into a target dir of its own; the binary.
pub fn build() -> PathBuf {
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
pub fn line_of(file: &str, text: &str) -> i64 {
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
pub fn carrier() -> SocketAddr {
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
pub async fn webhook() -> (SocketAddr, Arc<Mutex<Vec<serde_json::Value>>>) {
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
pub struct Service {
    child: Child,
    pub api: SocketAddr,
    pub agent: SocketAddr,
    pub log: Arc<Mutex<String>>,
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn start(binary: &Path, carrier: SocketAddr, hook: SocketAddr) -> Service {
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
pub fn drive(
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

pub async fn alerts(agent: SocketAddr) -> serde_json::Value {
    let r = client::get(agent, "/debug/leakscope/alerts", TIMEOUT)
        .await
        .expect("alerts");
    serde_json::from_slice(&r.body).expect("alerts JSON")
}
