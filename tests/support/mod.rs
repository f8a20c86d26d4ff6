//! Shared helpers of the end-to-end tests: a leaky service with the agent on
//! a loopback port, a client, and the real `go tool pprof`.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use leakscope::client::{self, Response};

/// Generous per-request limit: profiles take seconds by design.
pub const TIMEOUT: Duration = Duration::from_secs(60);

/// The leaky service with the agent (profiles up to 20 s), started once per
/// test binary on its own runtime thread so it outlives each test's runtime.
pub fn service() -> SocketAddr {
    static ADDR: OnceLock<SocketAddr> = OnceLock::new();
    *ADDR.get_or_init(|| {
        start_service(|| {
            use leakscope::ui::AgentBuilderExt;
            leakscope::AgentBuilder::new()
                .max_profile_duration(Duration::from_secs(20))
                .with_ui()
        })
    })
}

/// Starts the leaky service with the agent `builder()` makes (called on the
/// service's runtime, so the watch loop sees its tokio tasks) on a loopback
/// port of a runtime thread of its own, and returns the address.
pub fn start_service(
    builder: impl FnOnce() -> leakscope::AgentBuilder + Send + 'static,
) -> SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("test-service".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("service runtime");
            rt.block_on(async move {
                let app = leakscope::leaky::router().merge(builder().router());
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind loopback");
                tx.send(listener.local_addr().expect("addr"))
                    .expect("send addr");
                axum::serve(listener, app).await.expect("serve");
            });
        })
        .expect("spawn service thread");
    rx.recv_timeout(Duration::from_secs(10))
        .expect("service started")
}

/// Tests that take a CPU profile hold this lock: only one runs at a time.
pub async fn cpu_lock() -> tokio::sync::MutexGuard<'static, ()> {
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    LOCK.lock().await
}

pub async fn get(path: &str) -> Response {
    client::get(service(), path, TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

pub async fn post(path: &str, body: &[u8]) -> Response {
    client::post(service(), path, body, TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Sends `n` leaking heap requests of `kb` KiB each.
pub async fn leak_heap(n: usize, kb: u64) {
    for _ in 0..n {
        let r = get(&format!("/leak/heap?kb={kb}")).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
}

pub fn url(path: &str) -> String {
    format!("http://{}{path}", service())
}

/// A fresh scratch directory under the target dir.
pub fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// Runs `go tool pprof ARGS` and returns stdout; fails the test with
/// stderr when it fails. `go` must be on PATH (`.ci/run` installs it).
pub fn pprof(args: &[&str]) -> String {
    let tmp = scratch("pprof-home");
    let out = Command::new("go")
        .arg("tool")
        .arg("pprof")
        .args(args)
        .env("PPROF_TMPDIR", &tmp)
        .env("HOME", &tmp)
        .env("GOCACHE", tmp.join("gocache"))
        .env("PPROF_BINARY_PATH", "/nonexistent")
        .output()
        .unwrap_or_else(|e| panic!("cannot run `go tool pprof` (install golang-go): {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "go tool pprof {args:?} failed: {stderr}\n{stdout}"
    );
    stdout
}

/// Saves `bytes` to `dir/name` and returns the path as a string.
pub fn save(dir: &Path, name: &str, bytes: &[u8]) -> String {
    let p = dir.join(name);
    std::fs::write(&p, bytes).expect("write profile");
    p.to_string_lossy().into_owned()
}

/// The fixed line of `leak_heap_kib`'s allocation in src/leaky.rs.
pub fn leak_line() -> u32 {
    let src = include_str!("../../src/leaky.rs");
    let (i, _) = src
        .lines()
        .enumerate()
        .find(|(_, l)| l.contains("let block = vec![0x5au8;"))
        .expect("allocation line in src/leaky.rs");
    i as u32 + 1
}

/// The first data row of `go tool pprof -top` output (the biggest entry).
pub fn top_first_row(top: &str) -> &str {
    top.lines()
        .skip_while(|l| !l.trim_start().starts_with("flat"))
        .nth(1)
        .unwrap_or_else(|| panic!("no rows in -top output:\n{top}"))
}
pub mod browser;
pub mod check;
pub mod sidecar;
