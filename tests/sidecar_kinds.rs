//! The sidecar names thread, fd and tokio-task leaks in its alerts, for
//! each kind of target:
//!
//! - a process with no pprof URL (a child of this test that opens TCP
//!   connections to a listener, another child, and starts threads named
//!   `conn-N`, at a steady pace): the `open_fds_growth` alert says what the new fds are
//!   (`tcp ESTABLISHED to 127.0.0.1:PORT`) and the `threads_growth` alert
//!   the new threads' names, both `what only` (the code is not known from
//!   outside), with the two profiles compared stored for the viewer's diff;
//! - a leakscope agent (the leaky service in this test process): the
//!   `threads_growth` alert names the code the leaked threads run, from one
//!   thread dump pulled at the alert, the `tokio_tasks_growth` alert says
//!   what the agent's tasks profile says, and the `open_fds_growth` alert
//!   what the agent's fds profile says the new fds are.
//!
//! The rules come from files: growth over 60 s for the child (the built-in
//! 5-minute rules want 150 s of history and hold 30 s: three minutes of
//! test), over 6 s for the agent, whose counts are sampled every 100 to
//! 200 ms (at least four points in each third of the window).

mod support;

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::time::Duration;

use leakscope::client;
use serde_json::Value;
use support::scratch;
use support::sidecar::{Proc, api, spawn_until, start_sidecar, wait_until};

/// Long enough for a 60 s growth rule (30 s of history, a 6 s hold) on a
/// busy machine.
const FD_ALERTS_WITHIN: Duration = Duration::from_secs(240);
const LIMIT: Duration = Duration::from_secs(90);

/// The children: run as `THIS_TEST_BINARY --ignored --exact child
/// --nocapture` with `LEAKSCOPE_KINDS_CHILD` set to `listen` (accept every
/// connection and keep it, printing the port) or to the port to connect to
/// (connect five times a second and keep every connection, start a thread
/// `conn-N` twice a second), until killed. The listener is a process of
/// its own so that this test process, the other test's target, keeps its
/// fds.
#[test]
#[ignore = "a child process of pid_target_alerts_say_what_the_new_fds_and_threads_are"]
fn child() {
    let mode = std::env::var("LEAKSCOPE_KINDS_CHILD")
        .expect("LEAKSCOPE_KINDS_CHILD: run by the test, not alone");
    if mode == "listen" {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        println!("kinds listener on port {port}");
        let _ = std::io::stdout().flush();
        let mut kept = Vec::new();
        for s in listener.incoming().flatten() {
            kept.push(s);
        }
        return;
    }
    let port: u16 = mode.parse().expect("a port");
    println!("kinds child ready");
    let _ = std::io::stdout().flush();
    let mut kept = Vec::new();
    for i in 0u64.. {
        match TcpStream::connect(("127.0.0.1", port)) {
            Ok(s) => kept.push(s),
            Err(e) => eprintln!("kinds child: connect: {e}"),
        }
        if i % 2 == 0 {
            let _ = std::thread::Builder::new()
                .name(format!("conn-{i}"))
                .spawn(|| {
                    loop {
                        std::thread::park();
                    }
                });
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// This test binary as a child (see [`child`]).
fn spawn_child(mode: &str, marker: &str) -> (Proc, String) {
    let mut cmd = Command::new(std::env::current_exe().expect("this test binary"));
    cmd.args(["--ignored", "--exact", "child", "--nocapture"])
        .env("LEAKSCOPE_KINDS_CHILD", mode);
    spawn_until(cmd, marker)
}

/// The first alert of `rule` going up.
fn raised<'a>(alerts: &'a Value, rule: &str) -> Option<&'a Value> {
    alerts["alerts"]
        .as_array()?
        .iter()
        .find(|a| a["rule"] == rule && a["to"] != "ok")
}

/// Checks that a finding's two stored profiles exist and that its viewer
/// diff answers.
async fn check_stored(addr: std::net::SocketAddr, f: &Value, kind: &str) {
    let (base, new) = (f["base"].as_str(), f["new"].as_str());
    assert!(base.is_some() && new.is_some() && base != new, "{f:#}");
    for id in [base, new].into_iter().flatten() {
        let meta = api(addr, &format!("/api/snapshots/{id}")).await;
        assert_eq!(meta["kind"], kind, "{meta:#}");
    }
    let url = f["url"].as_str().expect("a diff URL");
    let path = url
        .strip_prefix(&format!("http://{addr}"))
        .unwrap_or_else(|| panic!("{url}"));
    let page = client::get(addr, path, Duration::from_secs(60))
        .await
        .expect("the diff page");
    assert_eq!(page.status, 200, "{url}: {}", page.text());
}

const CHILD_RULES: &str = r#"
[[rule]]
name = "open_fds_growth"
metric = "open_fds"
growth = { per_minute = 60, window_secs = 60 }

[[rule]]
name = "threads_growth"
metric = "threads"
growth = { per_minute = 30, window_secs = 60 }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pid_target_alerts_say_what_the_new_fds_and_threads_are() {
    let dir = scratch("sidecar-kinds-pid");
    let rules = dir.join("rules.toml");
    std::fs::write(&rules, CHILD_RULES).expect("rules");
    let (listener, line) = spawn_child("listen", "kinds listener on port ");
    let port: u16 = line
        .rsplit(' ')
        .next()
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("a port in {line:?}"));
    let (child, _) = spawn_child(&port.to_string(), "kinds child ready");
    let pid = child.pid().to_string();
    let data = dir.join("data");
    let (sidecar, addr) = start_sidecar(&[
        "--pid",
        &pid,
        "--target-name",
        "child",
        "--interval",
        "250ms",
        "--evidence-every",
        "5s",
        "--rules",
        rules.to_str().expect("utf-8 path"),
        "--data-dir",
        data.to_str().expect("utf-8 path"),
    ]);
    let alerts = wait_until(
        addr,
        "/api/targets/child/alerts",
        "open_fds_growth and threads_growth",
        FD_ALERTS_WITHIN,
        |v| raised(v, "open_fds_growth").is_some() && raised(v, "threads_growth").is_some(),
    )
    .await;
    let target = api(addr, "/api/targets/child").await;
    eprintln!("alerts:\n{alerts:#}");

    // The fds: what they are, not the code.
    let a = raised(&alerts, "open_fds_growth").expect("fd alert");
    let f = &a["finding"];
    let what = format!("tcp ESTABLISHED to 127.0.0.1:{port}");
    assert_eq!(f["kind"], "fds", "{a:#}");
    assert_eq!(f["confidence"], "what_only", "{a:#}");
    assert_eq!(f["groups"][0]["what"], what.as_str(), "{a:#}");
    assert!(
        f["groups"][0]["new"].as_f64() > f["groups"][0]["base"].as_f64(),
        "{a:#}"
    );
    let summary = f["summary"].as_str().expect("summary");
    assert!(summary.contains(&format!(" {what}")), "{summary}");
    assert!(f["site"].is_null(), "{a:#}");
    let detail = f["detail"].as_str().expect("detail");
    assert!(detail.contains("not the code that opened it"), "{detail}");
    assert!(
        detail.contains("base: the oldest healthy fds listing"),
        "{detail}"
    );
    check_stored(addr, f, "fds").await;

    // The threads: their names, numbers folded.
    let a = raised(&alerts, "threads_growth").expect("thread alert");
    let f = &a["finding"];
    assert_eq!(f["kind"], "threads", "{a:#}");
    assert_eq!(f["confidence"], "what_only", "{a:#}");
    assert_eq!(f["groups"][0]["what"], "thread 'conn-N'", "{a:#}");
    let detail = f["detail"].as_str().expect("detail");
    assert!(detail.contains("/proc/PID/task"), "{detail}");
    check_stored(addr, f, "threads").await;

    // Healthy readings were kept while the rules were ok.
    assert!(target["evidence"]["fds"].as_u64() >= Some(1), "{target:#}");
    assert!(
        target["evidence"]["threads"].as_u64() >= Some(1),
        "{target:#}"
    );
    for needle in [
        "child: WARNING open_fds_growth",
        what.as_str(),
        "child: WARNING threads_growth",
        "thread 'conn-N'",
    ] {
        if let Err(out) = sidecar.wait_output(needle, Duration::from_secs(10)) {
            panic!("no {needle:?} in:\n{out}");
        }
    }
    eprintln!("terminal:\n{}", sidecar.output());
    drop((child, listener));
}

const AGENT_RULES: &str = r#"
[[rule]]
name = "threads_growth"
metric = "threads"
growth = { per_minute = 60, window_secs = 6 }

[[rule]]
name = "tokio_tasks_growth"
metric = "tokio_tasks"
growth = { per_minute = 60, window_secs = 6 }

[[rule]]
name = "open_fds_growth"
metric = "open_fds"
growth = { per_minute = 60, window_secs = 6 }
"#;

/// The 1-based line of the first line of src/leaky.rs containing `needle`.
fn leaky_line(needle: &str) -> i64 {
    let src = include_str!("../src/leaky.rs");
    src.lines()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("{needle:?} in src/leaky.rs")) as i64
        + 1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_target_alerts_name_the_thread_code_and_tell_the_tasks_profile() {
    let dir = scratch("sidecar-kinds-agent");
    let rules = dir.join("rules.toml");
    std::fs::write(&rules, AGENT_RULES).expect("rules");
    let me = std::process::id().to_string();
    let service = support::service();
    let pprof = format!("http://{service}");
    let data = dir.join("data");
    let (sidecar, addr) = start_sidecar(&[
        "--pid",
        &me,
        "--target-name",
        "agent",
        "--pprof-url",
        &pprof,
        "--interval",
        "100ms",
        "--heap-every",
        "0",
        "--counts-every",
        "200ms",
        "--evidence-every",
        "1s",
        "--rules",
        rules.to_str().expect("utf-8 path"),
        "--data-dir",
        data.to_str().expect("utf-8 path"),
    ]);
    // A healthy reading of each kind before anything leaks.
    wait_until(
        addr,
        "/api/targets/agent",
        "healthy thread, task and fd readings",
        LIMIT,
        |v| {
            v["evidence"]["threads"].as_u64() >= Some(1)
                && v["evidence"]["tasks"].as_u64() >= Some(1)
                && v["evidence"]["fds"].as_u64() >= Some(1)
        },
    )
    .await;

    // Leak threads, tasks and fds until the three rules fire.
    let leaking = tokio::spawn(async move {
        loop {
            for path in ["/leak/thread", "/leak/task", "/leak/fd"] {
                let r = client::get(service, path, Duration::from_secs(30))
                    .await
                    .unwrap_or_else(|e| panic!("{path}: {e}"));
                assert_eq!(r.status, 200, "{path}: {}", r.text());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let alerts = wait_until(
        addr,
        "/api/targets/agent/alerts",
        "threads_growth, tokio_tasks_growth and open_fds_growth",
        LIMIT,
        |v| {
            ["threads_growth", "tokio_tasks_growth", "open_fds_growth"]
                .iter()
                .all(|r| raised(v, r).is_some())
        },
    )
    .await;
    leaking.abort();
    // The fix, for the other tests of this process.
    let r = client::post(service, "/leak/fd/close", b"", Duration::from_secs(30))
        .await
        .expect("close the leaked fds");
    assert_eq!(r.status, 200, "{}", r.text());
    eprintln!("alerts:\n{alerts:#}");

    // The threads: the closure that parks in leak_thread, at its line.
    let a = raised(&alerts, "threads_growth").expect("thread alert");
    let f = &a["finding"];
    assert_eq!(f["kind"], "threads", "{a:#}");
    assert_eq!(f["confidence"], "exact", "{a:#}");
    let function = f["site"]["function"].as_str().unwrap_or_default();
    assert!(
        function.starts_with("leakscope::leaky::leak_thread::{{closure}}"),
        "{a:#}"
    );
    assert!(
        f["site"]["file"]
            .as_str()
            .is_some_and(|p| p.ends_with("src/leaky.rs")),
        "{a:#}"
    );
    assert_eq!(
        f["site"]["line"],
        leaky_line("std::thread::park();"),
        "{a:#}"
    );
    assert_eq!(f["groups"][0]["what"], "thread 'leaky-thread'", "{a:#}");
    check_stored(addr, f, "threads").await;

    // The tasks: what the agent's tasks profile says (this build records
    // no spawn sites, and the profile says so).
    let a = raised(&alerts, "tokio_tasks_growth").expect("task alert");
    let f = &a["finding"];
    assert_eq!(f["kind"], "tasks", "{a:#}");
    let summary = f["summary"].as_str().expect("summary");
    let profile = client::get(
        service,
        "/debug/pprof/tasks?debug=1",
        Duration::from_secs(30),
    )
    .await
    .expect("the agent's tasks profile")
    .text();
    if profile.contains("spawn sites unknown") {
        assert_eq!(f["confidence"], "unknown", "{a:#}");
        assert!(
            summary.contains("spawn sites unknown; the agent's tasks profile says <tokio tasks: spawn sites unknown"),
            "{summary}"
        );
        assert!(
            f["groups"][0]["new"].as_f64() > f["groups"][0]["base"].as_f64(),
            "{a:#}"
        );
    } else {
        assert_eq!(f["confidence"], "exact", "{a:#}");
        assert!(summary.contains("leakscope::leaky::leak_task"), "{summary}");
    }
    check_stored(addr, f, "tasks").await;

    // The fds: from the agent's own fds profile, which says what they are
    // (this agent records no creation sites).
    let a = raised(&alerts, "open_fds_growth").expect("fd alert");
    let f = &a["finding"];
    assert_eq!(f["kind"], "fds", "{a:#}");
    assert_eq!(f["confidence"], "what_only", "{a:#}");
    assert_eq!(f["groups"][0]["what"], "file /dev/null", "{a:#}");
    let detail = f["detail"].as_str().expect("detail");
    assert!(
        detail.contains("the agent's fds profile records no creation sites"),
        "{detail}"
    );
    check_stored(addr, f, "fds").await;

    for needle in [
        "agent: WARNING threads_growth",
        "in leakscope::leaky::leak_thread::{{closure}}",
        "agent: WARNING tokio_tasks_growth",
    ] {
        if let Err(out) = sidecar.wait_output(needle, Duration::from_secs(10)) {
            panic!("no {needle:?} in:\n{out}");
        }
    }
    eprintln!("terminal:\n{}", sidecar.output());
}
