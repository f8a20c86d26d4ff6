//! `/metrics` on a live service: the counts rise when the leaky routes leak
//! threads, fds and tasks, and the real `promtool check metrics` reports
//! nothing wrong with the exposition.

mod support;

use std::io::Write;
use std::process::{Command, Stdio};

use std::net::SocketAddr;
use std::sync::OnceLock;

use leakscope::agent::client::{self, Response};
use support::{TIMEOUT, start_service};

/// A service without the watch loop, whose background /proc reads and heap
/// captures would otherwise move the fd count under the test.
fn addr() -> SocketAddr {
    static ADDR: OnceLock<SocketAddr> = OnceLock::new();
    *ADDR.get_or_init(|| start_service(|| leakscope::AgentBuilder::new().without_watch()))
}

async fn get(path: &str) -> Response {
    client::get(addr(), path, TIMEOUT).await.expect(path)
}

leakscope::enable_heap_profiling!();

/// Value of the series `name` (exact text before the value, labels included).
fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no series {series} in:\n{text}"))
}

async fn scrape() -> String {
    let res = get("/metrics").await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(
        res.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    res.text()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_rise_with_leaks_and_promtool_accepts_the_exposition() {
    // Some CPU time of our own, so the CPU counter has something to show.
    let start = std::time::Instant::now();
    let mut x = 1u64;
    while start.elapsed() < std::time::Duration::from_millis(150) {
        x = std::hint::black_box(x.wrapping_mul(3).wrapping_add(1));
    }
    let before = scrape().await;
    for path in ["/leak/thread", "/leak/fd", "/leak/task"] {
        for _ in 0..5 {
            assert_eq!(get(path).await.status, 200);
        }
    }
    let after = scrape().await;

    assert!(value(&after, "process_threads") >= value(&before, "process_threads") + 5.0);
    assert!(value(&after, "process_open_fds") >= value(&before, "process_open_fds") + 5.0);
    let files = "leakscope_open_fds_by_kind{kind=\"file\"}";
    assert!(
        value(&after, files) >= value(&before, files) + 5.0,
        "{after}"
    );
    let tasks = "leakscope_tokio_alive_tasks";
    assert!(
        value(&after, tasks) >= value(&before, tasks) + 5.0,
        "{after}"
    );
    assert!(value(&after, "leakscope_threads_by_name{name=\"leaky-thread\"}") >= 5.0);
    assert!(value(&after, "leakscope_jemalloc_bytes{kind=\"allocated\"}") > 0.0);
    assert!(value(&after, "process_max_fds") > 0.0);
    // CPU seconds are a float (nanoseconds from the process CPU clock), not
    // whole seconds.
    let cpu = value(&after, "process_cpu_seconds_total");
    assert!(cpu > 0.0 && cpu.fract() != 0.0, "cpu {cpu}");
    assert!(
        cpu >= value(&before, "process_cpu_seconds_total"),
        "cpu only grows"
    );

    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool (install the prometheus package)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(after.as_bytes())
        .expect("write metrics");
    let out = child.wait_with_output().expect("promtool");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool: {report}\n{after}");
    assert_eq!(
        report.trim(),
        "",
        "promtool reports lint problems:\n{after}"
    );
}
