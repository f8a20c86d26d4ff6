//! `/debug/pprof/fds` over real HTTP on loopback, read by the real `go tool
//! pprof`: the groups of real sockets of this process (the test and the
//! service share it), a `-diff_base` between two downloads that ranks the
//! upstream that gained 20 connections first, the `debug=1` and `debug=2`
//! text forms, Go's answers to `seconds`, and the index entry.

mod support;

use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;

use support::{get, pprof, save, scratch, top_first_row, url};

/// The flat value of the `-top` row whose name is `name`.
fn top_flat(top: &str, name: &str) -> Option<i64> {
    top.lines()
        .find(|l| l.trim_end().ends_with(name))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_tool_pprof_lists_the_groups() {
    const N: usize = 6;
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().unwrap().port();
    let mut conns = Vec::new();
    for _ in 0..N {
        let c = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        let (a, _) = listener.accept().expect("accept");
        conns.push((c, a));
    }
    let fds_url = url("/debug/pprof/fds");

    let top = pprof(&["-top", "-nodecount=1000", &fds_url]);
    let outbound = format!("tcp ESTABLISHED to 127.0.0.1:{port}");
    let inbound = format!("tcp ESTABLISHED from 127.0.0.1 to 127.0.0.1:{port}");
    let listen = format!("tcp LISTEN 127.0.0.1:{port}");
    assert_eq!(top_flat(&top, &outbound), Some(N as i64), "{top}");
    assert_eq!(top_flat(&top, &inbound), Some(N as i64), "{top}");
    assert_eq!(top_flat(&top, &listen), Some(1), "{top}");
    assert!(top.contains("Type: fds"), "{top}");

    let raw = pprof(&["-raw", &fds_url]);
    assert!(raw.contains("PeriodType: fds count"), "{raw}");
    assert!(raw.contains("Period: 1"), "{raw}");
    assert!(raw.contains("fds/count"), "{raw}");
    assert!(raw.contains("direction:[outbound]"), "{raw}");
    assert!(raw.contains(&format!("peer:[127.0.0.1:{port}]")), "{raw}");
    // The kind is the root: -traces prints each stack leaf first.
    let traces = pprof(&["-traces", &fds_url]);
    let block = traces
        .split("-----------+")
        .find(|b| b.contains(&outbound))
        .unwrap_or_else(|| panic!("{outbound} in {traces}"));
    // Labels, then the value and the leaf, then the callers: the kind.
    let lines: Vec<&str> = block
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let [.., leaf, root] = lines[..] else {
        panic!("a two-frame stack in {block}");
    };
    assert_eq!(leaf, format!("{N}   {outbound}"), "{block}");
    assert_eq!(root, "tcp", "the kind is the root:\n{block}");
    drop(conns);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diff_base_ranks_the_grown_upstream_first() {
    // An upstream that never accepts: only the connecting ends are fds of
    // this process, so exactly one group grows by 20.
    let upstream = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = upstream.local_addr().unwrap().port();
    let dir = scratch("pprof-fds-diff");
    let before = get("/debug/pprof/fds").await;
    assert_eq!(before.status, 200);
    assert_eq!(
        before.header("content-disposition"),
        Some("attachment; filename=\"fds\"")
    );
    assert_eq!(
        before.header("content-type"),
        Some("application/octet-stream")
    );
    let conns: Vec<TcpStream> = (0..20)
        .map(|_| TcpStream::connect(("127.0.0.1", port)).expect("connect"))
        .collect();
    let after = get("/debug/pprof/fds").await;
    assert_eq!(after.status, 200);
    let before = save(&dir, "before.pb.gz", &before.body);
    let after = save(&dir, "after.pb.gz", &after.body);
    let top = pprof(&["-top", "-diff_base", &before, &after]);
    let first = top_first_row(&top);
    let name = format!("tcp ESTABLISHED to 127.0.0.1:{port}");
    assert!(first.trim_end().ends_with(&name), "{name} first in:\n{top}");
    assert_eq!(first.split_whitespace().next(), Some("20"), "{top}");
    drop(conns);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debug_text_forms() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().unwrap().port();
    let conns: Vec<TcpStream> = (0..3)
        .map(|_| TcpStream::connect(("127.0.0.1", port)).expect("connect"))
        .collect();

    let res = get("/debug/pprof/fds?debug=1").await;
    assert_eq!(res.status, 200);
    assert_eq!(
        res.header("content-type"),
        Some("text/plain; charset=utf-8")
    );
    assert_eq!(res.header("x-content-type-options"), Some("nosniff"));
    let text = res.text();
    let mut lines = text.lines();
    let head = lines.next().unwrap_or_default();
    assert!(head.starts_with("fds profile: total "), "{text}");
    assert!(head.contains(" (limit "), "{text}");
    let counts: Vec<(u64, &str)> = lines
        .filter(|l| !l.starts_with('#'))
        .map(|l| {
            let (n, g) = l.split_once(' ').unwrap_or_else(|| panic!("{l:?}"));
            (n.parse().unwrap_or_else(|_| panic!("{l:?}")), g)
        })
        .collect();
    assert!(
        counts.windows(2).all(|w| w[0].0 >= w[1].0),
        "sorted by count:\n{text}"
    );
    assert!(
        counts.contains(&(3, format!("tcp ESTABLISHED to 127.0.0.1:{port}").as_str())),
        "{text}"
    );

    let res = get("/debug/pprof/fds?debug=2").await;
    assert_eq!(res.status, 200);
    let text = res.text();
    for c in &conns {
        let line = format!(
            "fd {}: tcp ESTABLISHED {} -> 127.0.0.1:{port} (inode ",
            c.as_raw_fd(),
            c.local_addr().unwrap()
        );
        assert!(
            text.lines().any(|l| l.starts_with(&line)),
            "{line} in\n{text}"
        );
    }
    let line = format!(
        "fd {}: tcp LISTEN 127.0.0.1:{port} (inode ",
        listener.as_raw_fd()
    );
    assert!(
        text.lines().any(|l| l.starts_with(&line)),
        "{line} in\n{text}"
    );
    drop(conns);
}

fn assert_go_error(res: &leakscope::client::Response, status: u16, message: &str) {
    assert_eq!(res.status, status, "{}", res.text());
    assert_eq!(res.text(), format!("{message}\n"));
    assert_eq!(res.header("x-go-pprof"), Some("1"));
    assert_eq!(
        res.header("content-type"),
        Some("text/plain; charset=utf-8")
    );
    assert_eq!(res.header("x-content-type-options"), Some("nosniff"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seconds_is_refused_as_go_refuses_it() {
    for q in ["0", "-1", "x", "1.5"] {
        assert_go_error(
            &get(&format!("/debug/pprof/fds?seconds={q}")).await,
            400,
            r#"invalid value for "seconds" - must be a positive integer"#,
        );
    }
    for q in ["seconds=5", "seconds=5&debug=1"] {
        assert_go_error(
            &get(&format!("/debug/pprof/fds?{q}")).await,
            400,
            r#""seconds" parameter is not supported for this profile type"#,
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn index_lists_fds_with_its_count() {
    let html = get("/debug/pprof/").await.text();
    let row = html
        .lines()
        .find(|l| l.contains("href=\"fds?debug=1\""))
        .unwrap_or_else(|| panic!("fds row in {html}"));
    let count: u64 = row
        .strip_prefix("<tr><td>")
        .and_then(|r| r.split('<').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("a count in {row}"));
    assert!(count >= 3, "{row}");
}
