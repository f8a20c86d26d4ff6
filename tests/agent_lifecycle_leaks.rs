//! An agent started on a loopback port, asked through `leakscope::client`
//! (one-shot requests and a keep-alive connection) and shut down leaves
//! nothing behind: no thread (the watch loop's included), no socket, no
//! tokio task, no heap beyond the default tolerance. Checked with
//! `leakscope::leakcheck::LeakCheck`.
//!
//! The only test of its binary, so nothing else runs in the process.

leakscope::enable_heap_profiling!();

use std::net::SocketAddr;
use std::time::Duration;

use leakscope::client::{self, Connection};
use leakscope::leakcheck::LeakCheck;

const TIMEOUT: Duration = Duration::from_secs(30);

async fn exchange(addr: SocketAddr) {
    for path in ["/debug/pprof/", "/metrics"] {
        let resp = client::get(addr, path, TIMEOUT).await.expect("get");
        assert_eq!(resp.status, 200, "{path}: {}", resp.text());
    }
    let mut conn = Connection::connect(addr, TIMEOUT).await.expect("connect");
    for _ in 0..3 {
        let resp = conn.get("/debug/pprof/", TIMEOUT).await.expect("get");
        assert_eq!(resp.status, 200);
    }
}

#[test]
fn an_agent_asked_and_shut_down_leaves_nothing_behind() {
    // The agent answers on tokio's blocking pool, whose idle threads stay
    // for 10 s by default: here they go after 100 ms, within the check's
    // wait.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_keep_alive(Duration::from_millis(100))
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async {
        let check = LeakCheck::new();
        let baseline = check.snapshot();
        assert_eq!(baseline.notes(), &[] as &[String], "every check runs");

        let agent = leakscope::AgentBuilder::new()
            .addr(SocketAddr::from(([127, 0, 0, 1], 0)))
            .spawn()
            .await
            .expect("agent");
        exchange(agent.local_addr()).await;
        agent.shutdown().await;

        check
            .verify_async(&baseline)
            .await
            .unwrap_or_else(|report| panic!("{report}"));
    });
}
