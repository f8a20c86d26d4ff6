//! The watch loop names the leak in the alert: a rule on threads fires and
//! its finding names the function of this file that the new threads run
//! in, with its line. (Short rule windows here test the mechanism; the
//! built-in rules are tested end to end on the example services.)

use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use leakscope_agent::explain::Confidence;
use leakscope_agent::resource::Target;
use leakscope_agent::watch::evidence::Evidence;
use leakscope_agent::watch::monitor::{Monitor, MonitorOptions, WatchHook};
use leakscope_agent::watch::rules::{Condition, Rule};

/// Starts a thread that waits forever on a channel nobody sends on; the
/// sender is leaked too, so `recv` never returns.
#[inline(never)]
fn park_a_worker() {
    let (tx, rx) = mpsc::channel::<u8>();
    std::mem::forget(tx);
    std::thread::Builder::new()
        .name("stuck-worker".into())
        .spawn(move || {
            let _ = rx.recv(); // the line the finding names
        })
        .expect("spawn");
}

#[test]
fn a_thread_alert_names_the_code_the_new_threads_run_in() {
    let recv_line = line_of("let _ = rx.recv(); // the line the finding names");
    let rule = Rule::new(
        "threads_fast",
        "threads",
        Condition::Growth {
            per_minute: 30.0,
            critical_per_minute: None,
            window_secs: 6.0,
        },
    );
    let options = MonitorOptions::default()
        .interval(Duration::from_millis(100))
        .rules(vec![rule]);
    let evidence = Arc::new(Evidence::new(Target::SelfProcess, Evidence::DEFAULT_EVERY));
    let hooks: Vec<Arc<dyn WatchHook>> = vec![evidence.clone()];
    let monitor = Monitor::spawn(Target::SelfProcess, options, None, hooks).expect("monitor");
    // A healthy second, then a thread every 100 ms until the rule fires.
    std::thread::sleep(Duration::from_secs(1));
    let start = Instant::now();
    let alert = loop {
        park_a_worker();
        std::thread::sleep(Duration::from_millis(100));
        let view = monitor.view();
        if let Some(a) = view.alerts.iter().find(|a| a.to > a.from) {
            break a.clone();
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no alert: {view:?}"
        );
    };
    let finding = alert.finding.expect("the alert carries a finding");
    assert_eq!(finding.kind, "threads");
    assert_eq!(finding.confidence, Confidence::Exact, "{finding:#?}");
    let site = finding.site.as_ref().expect("a site");
    assert!(
        site.function
            .starts_with("naming::park_a_worker::{{closure}}"),
        "{finding:#?}"
    );
    assert!(site.file.ends_with("tests/naming.rs"), "{finding:#?}");
    assert_eq!(site.line, recv_line, "{finding:#?}");
    assert_eq!(finding.groups[0].what, "thread 'stuck-worker'");
    assert!(finding.groups[0].delta() >= 5.0, "{finding:#?}");
    assert!(
        finding
            .summary
            .contains("in naming::park_a_worker::{{closure}}"),
        "{}",
        finding.summary
    );
    // The two profiles it compared are kept, and differ by the new threads.
    let (base, new) = (finding.base.unwrap(), finding.new.unwrap());
    let (b, n) = (
        evidence.kept_profile(&base).expect("base kept"),
        evidence.kept_profile(&new).expect("new kept"),
    );
    let total = |p: &leakscope_agent::profile::Profile| -> i64 {
        p.sample.iter().map(|s| s.value[0]).sum()
    };
    assert!(total(&n) - total(&b) >= finding.groups[0].delta() as i64);
}

/// The line of this file holding `text`.
fn line_of(text: &str) -> i64 {
    include_str!("naming.rs")
        .lines()
        .position(|l| l.contains(text) && !l.contains("line_of("))
        .map(|i| i as i64 + 1)
        .expect("the line is in this file")
}

#[test]
fn an_fd_alert_names_what_the_new_fds_are() {
    // An upstream that never accepts: the connections complete in its
    // backlog, so only this side's fds are ours.
    let upstream = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = upstream.local_addr().unwrap().port();
    let rule = Rule::new(
        "fds_fast",
        "open_fds",
        Condition::Growth {
            per_minute: 60.0,
            critical_per_minute: None,
            window_secs: 6.0,
        },
    );
    let options = MonitorOptions::default()
        .interval(Duration::from_millis(100))
        .rules(vec![rule]);
    let evidence = Arc::new(Evidence::new(Target::SelfProcess, Evidence::DEFAULT_EVERY));
    let hooks: Vec<Arc<dyn WatchHook>> = vec![evidence.clone()];
    let monitor = Monitor::spawn(Target::SelfProcess, options, None, hooks).expect("monitor");
    std::thread::sleep(Duration::from_secs(1));
    let mut kept = Vec::new();
    let start = Instant::now();
    let alert = loop {
        kept.push(std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect"));
        std::thread::sleep(Duration::from_millis(100));
        let view = monitor.view();
        if let Some(a) = view.alerts.iter().find(|a| a.to > a.from) {
            break a.clone();
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no alert: {view:?}"
        );
    };
    let finding = alert.finding.expect("the alert carries a finding");
    assert_eq!(finding.kind, "fds");
    assert_eq!(finding.confidence, Confidence::WhatOnly, "{finding:#?}");
    let top = &finding.groups[0];
    assert_eq!(top.what, format!("tcp ESTABLISHED to 127.0.0.1:{port}"));
    assert!(top.delta() >= 5.0, "{finding:#?}");
    assert!(
        finding
            .summary
            .contains(&format!("tcp ESTABLISHED to 127.0.0.1:{port}")),
        "{}",
        finding.summary
    );
    assert!(finding.detail.contains("fd-sites"), "{}", finding.detail);
    drop(kept);
}
