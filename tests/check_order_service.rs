//! `leakscope check` on the example order-service (examples/order-service,
//! built as tests/support/orders.rs builds it), spawned by the check and
//! loaded by its built-in load generator, as a CI job would run it:
//!
//! - with every leaking route in the load: exit 1, and the terminal text,
//!   the `--json` report, the `--junit` file (parsed by a strict XML
//!   parser) and the `--report` page (opened in headless Chromium) name
//!   each leak's function and file:line (heap, threads, tasks, fds);
//! - with catalog lookups only (the cache fills in the warm-up, then
//!   renews its entries): exit 0, twice here; the `#[ignore]`d test runs it
//!   ten times (`cargo test --test check_order_service -- --ignored`).
//!
//! Each check takes its own phases (about 45 s), not the growth rules'
//! minutes.

#[path = "support/orders.rs"]
mod orders;
mod support;

use std::net::SocketAddr;

use std::path::Path;
use std::time::Duration;

use orders::{build, carrier, line_of};
use support::browser::Browser;
use support::check::{Run, check, free_port};
use support::scratch;

/// The service's addresses and the environment that sets them.
struct Setup {
    binary: String,
    api: SocketAddr,
    agent: SocketAddr,
    env: Vec<(String, String)>,
}

fn setup(carrier: SocketAddr) -> Setup {
    let binary = build().to_string_lossy().into_owned();
    let api: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let agent: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let env = vec![
        ("ORDERS_ADDR".to_owned(), api.to_string()),
        ("LEAKSCOPE_ADDR".to_owned(), agent.to_string()),
        ("ORDERS_UPSTREAM".to_owned(), carrier.to_string()),
        ("RUST_LOG".to_owned(), "warn".to_owned()),
    ];
    Setup {
        binary,
        api,
        agent,
        env,
    }
}

/// The phases of the tests' checks: short enough for a test.
const SHORT: &[&str] = &["--warmup", "8s", "--duration", "20s", "--cooldown", "12s"];

/// `leakscope check --spawn` of the service with `loads` (and `extra`
/// flags), phases short enough for a test.
fn run_check(s: &Setup, loads: &[String], extra: &[&str]) -> Run {
    run_check_phases(s, loads, extra, SHORT)
}

/// `leakscope check --spawn` of the service with `loads`, `extra` flags and
/// `phases` (none: the defaults).
fn run_check_phases(s: &Setup, loads: &[String], extra: &[&str], phases: &[&str]) -> Run {
    let health = format!("http://{}/healthz", s.api);
    let pprof = format!("http://{}", s.agent);
    let mut args: Vec<&str> = vec![
        "--spawn",
        &s.binary,
        "--health",
        &health,
        "--pprof-url",
        &pprof,
        "--json",
    ];
    args.extend(phases);
    for l in loads {
        args.extend(["--load", l.as_str()]);
    }
    args.extend(extra);
    let env: Vec<(&str, &str)> = s
        .env
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    check(&args, &env)
}

/// What each kind's finding must name: kind, function, file, line.
fn expected() -> [(&'static str, &'static str, &'static str, i64); 4] {
    [
        (
            "heap",
            "order_service::audit::remember",
            "src/audit.rs",
            line_of("audit.rs", "let mut record = vec![0u8; RECORD_BYTES]"),
        ),
        (
            "threads",
            "order_service::notifications::wait_for_changes",
            "src/notifications.rs",
            line_of("notifications.rs", "while let Ok(change) = changes.recv()"),
        ),
        (
            "tasks",
            "order_service::reservations::Reservations::hold",
            "src/reservations.rs",
            line_of("reservations.rs", "tokio::spawn(async move {"),
        ),
        (
            "fds",
            "order_service::shipping::Dispatcher::dispatch::{{closure}}",
            "src/shipping.rs",
            line_of("shipping.rs", "TcpStream::connect(carrier)"),
        ),
    ]
}

/// Every route in the mix, the leaking ones a few in a hundred.
fn leaky_loads(s: &Setup) -> [String; 5] {
    let api = s.api;
    [
        format!("http://{api}/items/{{n}}=40"),
        format!("POST http://{api}/orders=20"),
        format!("POST http://{api}/orders/{{n}}/notify=1"),
        format!("POST http://{api}/orders/{{n}}/reserve=2"),
        format!("POST http://{api}/orders/{{n}}/ship=1"),
    ]
}

/// The body of the POSTs.
const BODY: &str = r#"{"customer":"c{n}","items":[{"sku":7,"quantity":2}],"note":"check"}"#;

#[test]
fn every_leak_is_named_and_the_check_fails() {
    let s = setup(carrier());
    let loads = leaky_loads(&s);
    let body = BODY;
    let dir = scratch("check-order-service");
    let junit = dir.join("reports/leaks.xml");
    let html = dir.join("reports/leaks.html");
    let (junit_arg, html_arg) = (junit.to_string_lossy(), html.to_string_lossy());
    let r = run_check(
        &s,
        &loads,
        &[
            "--rate",
            "400",
            "--load-body",
            body,
            "--junit",
            &junit_arg,
            "--report",
            &html_arg,
        ],
    );
    eprintln!("{}", r.stderr);
    assert_eq!(r.code, Some(1), "{}", r.output());
    let json = r.json.as_ref().expect("a JSON report on stdout");
    assert_eq!(json["outcome"], "leak", "{}", r.output());
    assert_eq!(json["flavor"], "leakscope agent");
    assert_eq!(json["load"]["errors"], 0, "{}", r.output());
    for (kind, function, file, line) in expected() {
        let k = r.kind(kind);
        assert_eq!(k["leaked"], true, "{kind}: {k:#}");
        let site = &k["finding"]["site"];
        assert_eq!(site["function"], function, "{kind}: {k:#}");
        assert!(
            site["file"].as_str().unwrap_or_default().ends_with(file),
            "{kind}: {k:#}"
        );
        assert_eq!(site["line"], line, "{kind}: {k:#}");
        // The terminal text (stderr with --json) names it too, in the
        // table's row of the kind.
        let row = r
            .stderr
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{kind} ")) && l.contains("LEAK"))
            .unwrap_or_else(|| panic!("no {kind} row in:\n{}", r.stderr));
        assert!(
            row.contains(function) && row.contains(&format!("{file}:{line})")),
            "{kind}: {row}"
        );
    }
    // The cache is never what the heap names.
    assert!(
        !r.kind("heap")["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("catalog"),
        "{}",
        r.output()
    );
    // The phases ran in order, and the series cover them.
    let phases: Vec<&str> = json["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(phases, ["warm-up", "load", "cool-down"]);
    let threads = json["series"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["metric"] == "threads")
        .expect("the threads series");
    assert!(
        threads["points"].as_array().unwrap().len() >= 35,
        "{threads}"
    );
    eprintln!("one failing check took {:.0} s", r.secs);
    junit_names_every_leak(&junit);
    html_names_every_leak(&html);
}

/// The `--junit` file, as a CI system reads it: a failing test case per
/// kind, carrying the site's file and line and naming the function.
fn junit_names_every_leak(path: &Path) {
    let xml = std::fs::read_to_string(path).expect("the --junit file was written");
    let doc = roxmltree::Document::parse(&xml).unwrap_or_else(|e| panic!("{e}\n{xml}"));
    let suite = doc
        .root_element()
        .children()
        .find(|n| n.has_tag_name("testsuite"))
        .expect("a testsuite");
    assert_eq!(suite.attribute("failures"), Some("4"), "{xml}");
    for (kind, function, file, line) in expected() {
        let case = suite
            .children()
            .find(|n| n.has_tag_name("testcase") && n.attribute("name") == Some(kind))
            .unwrap_or_else(|| panic!("no {kind} test case:\n{xml}"));
        assert!(
            case.attribute("file").is_some_and(|f| f.ends_with(file)),
            "{kind}: {xml}"
        );
        assert_eq!(case.attribute("line"), Some(line.to_string().as_str()));
        let message = case
            .children()
            .find(|n| n.has_tag_name("failure"))
            .and_then(|f| f.attribute("message"))
            .unwrap_or_else(|| panic!("{kind} has no failure:\n{xml}"));
        assert!(
            message.contains(function) && message.contains(&format!("{file}:{line})")),
            "{kind}: {message}"
        );
    }
}

/// The `--report` page in headless Chromium: the verdict table names each
/// leak at its line, and each evidence's flamegraph is drawn.
fn html_names_every_leak(path: &Path) {
    let browser = Browser::start();
    let page = browser.open(&format!("file://{}", path.display()));
    let text = |sel: String| {
        page.eval(&format!(
            "(function(){{var e=document.querySelector({});return e?e.textContent:'';}})()",
            serde_json::json!(sel)
        ))
        .as_str()
        .unwrap_or_default()
        .to_owned()
    };
    assert_eq!(text("#outcome".into()), "leak");
    for (kind, function, file, line) in expected() {
        let row = format!("#verdicts tr[data-kind={kind}]");
        assert!(
            text(format!("{row} .badge")).starts_with("leaked"),
            "{kind}"
        );
        assert_eq!(text(format!("{row} td.site code.fn")), function, "{kind}");
        let at = text(format!("{row} td.site .at"));
        assert!(at.ends_with(&format!("{file}:{line}")), "{kind}: {at}");
    }
    // Each evidence has its flamegraph laid out, with frames in it.
    let kinds = page.eval(
        "Array.from(document.querySelectorAll('iframe[id^=flame-][id$=-new]'))\
         .map(function(f){return f.id;})",
    );
    let ids: Vec<String> = kinds
        .as_array()
        .expect("ids")
        .iter()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect();
    assert!(ids.len() >= 3, "flamegraphs: {ids:?}");
    for id in &ids {
        let js = format!(
            "(function(){{var d=document.getElementById('{id}').contentDocument;\
             var n=d&&d.querySelectorAll('#frames rect').length;return n>1?n:null;}})()"
        );
        page.wait_for(
            &js,
            &format!("the frames of #{id}"),
            Duration::from_secs(30),
        );
    }
    assert!(page.errors().is_empty(), "{:?}", page.errors());
}

/// Catalog lookups only: the cache fills in the warm-up (12,000 entries
/// at 1,000 requests/s) and renews its entries after; nothing leaks.
fn clean_run(s: &Setup) -> Run {
    let loads = [format!("http://{}/items/{{n}}", s.api)];
    run_check(s, &loads, &["--rate", "1000"])
}

fn assert_clean(r: &Run) {
    assert_eq!(r.code, Some(0), "{}", r.output());
    let json = r.json.as_ref().expect("a JSON report");
    assert_eq!(json["outcome"], "clean", "{}", r.output());
    for kind in ["heap", "threads", "tasks", "fds"] {
        let k = r.kind(kind);
        assert_eq!(k["leaked"], false, "{kind}: {k:#}");
        assert!(k["finding"].is_null(), "{kind}: {k:#}");
    }
    // The cache did fill and stay: the heap held more after than before.
    let heap = r.kind("heap");
    let stayed = heap["after"].as_f64().unwrap() - heap["before"].as_f64().unwrap();
    assert!(stayed > 16.0 * 1024.0 * 1024.0, "{heap:#}");
}

#[test]
fn a_cache_that_fills_and_stays_passes_twice() {
    let s = setup(carrier());
    for i in 0..2 {
        let r = clean_run(&s);
        eprintln!("clean run {i}: {:.0} s\n{}", r.secs, r.stderr);
        assert_clean(&r);
    }
}

/// The false-failure rate: ten clean checks in a row.
#[test]
#[ignore = "ten checks of about 45 s each; run with --ignored"]
fn a_cache_that_fills_and_stays_passes_ten_times() {
    let s = setup(carrier());
    let mut failed = Vec::new();
    for i in 0..10 {
        let r = clean_run(&s);
        let ok = r.code == Some(0);
        eprintln!(
            "clean run {i}: exit {:?} in {:.0} s{}",
            r.code,
            r.secs,
            if ok {
                String::new()
            } else {
                format!("\n{}", r.output())
            }
        );
        if !ok {
            failed.push(i);
        }
    }
    assert!(failed.is_empty(), "runs {failed:?} of 10 failed");
}

/// What a CI check costs with the default phases (10 s, 60 s, 15 s): one
/// leaking check (exit 1, every kind named) and three clean ones (exit 0),
/// each timed. For the figures in docs, not for CI.
#[test]
#[ignore = "four checks of about 90 s each; run with --ignored"]
fn default_phases_time_and_verdicts() {
    let s = setup(carrier());
    let r = run_check_phases(
        &s,
        &leaky_loads(&s),
        &["--rate", "400", "--load-body", BODY],
        &[],
    );
    eprintln!(
        "leaking check, default phases: exit {:?} in {:.0} s",
        r.code, r.secs
    );
    assert_eq!(r.code, Some(1), "{}", r.output());
    for (kind, function, _, line) in expected() {
        let site = &r.kind(kind)["finding"]["site"];
        assert_eq!(site["function"], function, "{kind}: {}", r.output());
        assert_eq!(site["line"], line, "{kind}");
    }
    for i in 0..3 {
        let loads = [format!("http://{}/items/{{n}}", s.api)];
        let r = run_check_phases(&s, &loads, &["--rate", "1000"], &[]);
        eprintln!(
            "clean check {i}, default phases: exit {:?} in {:.0} s",
            r.code, r.secs
        );
        assert_clean(&r);
    }
}
