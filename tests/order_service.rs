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

#[path = "support/orders.rs"]
mod orders;
mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use leakscope::agent::explain::heap::{reduce, site_trends};
use leakscope::agent::explain::trend::Trend;
use leakscope::agent::profile::Profile;
use leakscope::client;
use orders::{TIMEOUT, alerts, build, carrier, drive, line_of, start, webhook};
/// The rules' built-in windows need 150 s of history; all four kinds must
/// be named well within this.
const ALERTS_WITHIN: Duration = Duration::from_secs(420);

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

    // The count profiles before the load, for go tool pprof -diff_base.
    let profiles = ["threads", "tasks", "goroutine", "fds"];
    let dir = support::scratch("order-service");
    for name in profiles {
        let r = client::get(svc.agent, &format!("/debug/pprof/{name}"), TIMEOUT)
            .await
            .expect(name);
        assert_eq!(r.status, 200, "{name}: {}", r.text());
        support::save(&dir, &format!("{name}-before.pb.gz"), &r.body);
    }
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
    for name in profiles {
        let r = client::get(svc.agent, &format!("/debug/pprof/{name}"), TIMEOUT)
            .await
            .expect(name);
        support::save(&dir, &format!("{name}-after.pb.gz"), &r.body);
    }
    for l in &loads {
        l.store(true, std::sync::atomic::Ordering::Relaxed);
    }
    // The real go tool pprof reads every count profile, and a diff of the
    // healthy and the leaking one ranks the leak first: tasks (and their Go
    // name) by spawn site, fds by what they are; threads by your own code
    // once the blocking frames below it are pruned, as for Go's goroutines.
    let diff = |name: &str, extra: &[&str]| {
        let before = dir.join(format!("{name}-before.pb.gz"));
        let after = dir.join(format!("{name}-after.pb.gz"));
        let mut args = vec!["-top"];
        args.extend_from_slice(extra);
        let base = format!("-diff_base={}", before.display());
        args.push(&base);
        let after = after.display().to_string();
        args.push(&after);
        support::pprof(&args)
    };
    for (name, extra, first) in [
        ("tasks", &[][..], "tokio::spawn at src/reservations.rs:"),
        ("goroutine", &[][..], "tokio::spawn at src/reservations.rs:"),
        ("fds", &[][..], &*format!("tcp ESTABLISHED to {carrier}")),
        (
            "threads",
            &["-prune_from=^order_service::"][..],
            "order_service::notifications::wait_for_changes",
        ),
    ] {
        let top = diff(name, extra);
        let row = support::top_first_row(&top);
        assert!(row.contains(first), "{name}: {first:?} first in:\n{top}");
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
