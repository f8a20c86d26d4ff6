//! `/debug/pprof/fds` of an agent built with `fd-sites` (this package's
//! build script links its own tests with the `--wrap` argument then):
//! over real HTTP on loopback, `debug=2` names the test function that
//! opened a listener and its connections, and the profile's comment
//! counts the fds with a site.
//!
//! Run with: `cargo test -p leakscope-agent --features fd-sites --test fd_sites_http`

use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::time::Duration;

use leakscope_agent::AgentBuilder;
use leakscope_agent::client::get;

#[inline(never)]
fn connect_five(port: u16) -> Vec<TcpStream> {
    (0..5)
        .map(|_| TcpStream::connect(("127.0.0.1", port)).expect("connect"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debug_2_names_the_opening_function() {
    let agent = AgentBuilder::new()
        .addr("127.0.0.1:0".parse().unwrap())
        .without_watch()
        .spawn()
        .await
        .expect("agent");
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().unwrap().port();
    let conns = connect_five(port);

    let timeout = Duration::from_secs(30);
    let res = get(agent.local_addr(), "/debug/pprof/fds?debug=2", timeout)
        .await
        .expect("get");
    assert_eq!(res.status, 200);
    let text = res.text();
    assert!(
        text.lines()
            .nth(1)
            .is_some_and(|l| l.starts_with("# creation sites: ")),
        "{text}"
    );
    for c in &conns {
        let prefix = format!("fd {}: tcp ESTABLISHED ", c.as_raw_fd());
        let line = text
            .lines()
            .find(|l| l.starts_with(&prefix))
            .unwrap_or_else(|| panic!("{prefix} in\n{text}"));
        assert!(
            line.contains(", opened in fd_sites_http::connect_five")
                && line.contains("agent/tests/fd_sites_http.rs:"),
            "{line}"
        );
    }
    let prefix = format!("fd {}: tcp LISTEN ", listener.as_raw_fd());
    let line = text
        .lines()
        .find(|l| l.starts_with(&prefix))
        .expect("listener");
    assert!(
        line.contains(", opened in fd_sites_http::debug_2_names_the_opening_function"),
        "{line}"
    );
    // The agent's own listener is marked as the agent's.
    let prefix = format!("tcp LISTEN {} ", agent.local_addr());
    let line = text
        .lines()
        .find(|l| l.contains(&prefix))
        .unwrap_or_else(|| panic!("{prefix} in\n{text}"));
    assert!(
        line.contains(", opened by leakscope in leakscope_agent::"),
        "{line}"
    );

    let res = get(agent.local_addr(), "/debug/pprof/fds", timeout)
        .await
        .expect("get");
    assert_eq!(res.status, 200);
    assert!(!res.body.is_empty());
    drop(conns);
    agent.shutdown().await;
}
