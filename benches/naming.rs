//! How long leakscope takes to name a leak, and how often it cries wolf,
//! with its built-in rules, on the example order-service
//! (examples/order-service): not a speed bench but the figures behind
//! "every alert names its leak".
//!
//! Run with: `cargo bench --bench naming [-- --minutes 10] [-- --slow]`
//!
//! 1. **Quiet**: the service under normal load only (catalog lookups over
//!    50,000 skus, so its cache fills and then renews entries; health
//!    checks) for `--minutes`: every alert that goes up is a false alarm.
//! 2. **Leaky**: a new service, warmed with the same normal load for five
//!    minutes (longer than the rules' windows), then the leaking routes are
//!    added: for each kind, the time from the leak's start to its first
//!    alert, and what that alert names. The default leaks well above the
//!    rules' thresholds; `--slow` leaks at about twice them (heap 1 MiB/min,
//!    threads 10/min, tasks 60/min, fds 20/min).

#[path = "../tests/support/orders.rs"]
mod orders;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use leakscope::agent::collect::unix_seconds;

struct Args {
    minutes: f64,
    slow: bool,
}

fn args() -> Args {
    let mut a = Args {
        minutes: 10.0,
        slow: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--minutes" => a.minutes = it.next().and_then(|v| v.parse().ok()).expect("--minutes N"),
            "--slow" => a.slow = true,
            // cargo bench passes --bench.
            _ => {}
        }
    }
    a
}

fn now() -> f64 {
    unix_seconds(std::time::SystemTime::now())
}

/// The normal load: catalog lookups and health checks.
fn normal(api: std::net::SocketAddr) -> Vec<Arc<AtomicBool>> {
    vec![
        orders::drive(api, Duration::from_millis(5), |i| {
            ("GET", format!("/items/{}", (i * 7919) % 50_000))
        }),
        orders::drive(api, Duration::from_millis(50), |_| {
            ("GET", "/healthz".into())
        }),
    ]
}

/// Up-alerts of the agent since `since` (Unix seconds), oldest first.
async fn ups(agent: std::net::SocketAddr, since: f64) -> Vec<serde_json::Value> {
    let v = orders::alerts(agent).await;
    v["alerts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|a| a["to"] != "ok" && a["at"].as_f64().is_some_and(|t| t >= since))
        .cloned()
        .collect()
}

fn stop(loads: &[Arc<AtomicBool>]) {
    for l in loads {
        l.store(true, Ordering::Relaxed);
    }
}

async fn quiet(binary: &std::path::Path, minutes: f64) {
    println!("quiet: normal load only, {minutes} min, built-in rules");
    let (hook, _) = orders::webhook().await;
    let svc = orders::start(binary, orders::carrier(), hook);
    let start = now();
    let loads = normal(svc.api);
    let began = Instant::now();
    while began.elapsed().as_secs_f64() < minutes * 60.0 {
        tokio::time::sleep(Duration::from_secs(30)).await;
        let n = ups(svc.agent, start).await.len();
        println!(
            "  {:>4.0} s  alerts so far: {n}",
            began.elapsed().as_secs_f64()
        );
    }
    stop(&loads);
    let alerts = ups(svc.agent, start).await;
    println!("quiet: {} false alarm(s) in {minutes} min", alerts.len());
    for a in &alerts {
        println!(
            "  {:>5.0} s  {}: {}\n           {}",
            a["at"].as_f64().unwrap_or(0.0) - start,
            a["rule"],
            a["message"],
            a["finding"]["summary"]
        );
    }
}

async fn leaky(binary: &std::path::Path, slow: bool) {
    let (hook, _) = orders::webhook().await;
    let svc = orders::start(binary, orders::carrier(), hook);
    let loads = normal(svc.api);
    println!("leaky: 5 min of normal load first");
    tokio::time::sleep(Duration::from_secs(300)).await;
    let warm = ups(svc.agent, 0.0).await.len();
    let (orders_every, notify, reserve, ship) = if slow {
        // 16 KiB a second = 0.94 MiB/min; 10 threads, 60 tasks, 20 fds a minute.
        (1000, 6000, 1000, 3000)
    } else {
        (50, 1000, 300, 1000)
    };
    let ms = Duration::from_millis;
    let leak_start = now();
    println!(
        "leaky: leaks start ({}), {warm} alert(s) while warming",
        if slow { "slow" } else { "fast" }
    );
    let leaks = [
        orders::drive(svc.api, ms(orders_every), |_| ("POST", "/orders".into())),
        orders::drive(svc.api, ms(notify), |i| {
            ("POST", format!("/orders/{i}/notify"))
        }),
        orders::drive(svc.api, ms(reserve), |i| {
            ("POST", format!("/orders/{i}/reserve"))
        }),
        orders::drive(svc.api, ms(ship), |i| ("POST", format!("/orders/{i}/ship"))),
    ];
    let rules = [
        "heap_growth",
        "threads_growth",
        "tokio_tasks_growth",
        "open_fds_growth",
    ];
    let mut first: BTreeMap<String, serde_json::Value> = BTreeMap::new();
    let began = Instant::now();
    while first.len() < rules.len() && began.elapsed() < Duration::from_secs(900) {
        tokio::time::sleep(Duration::from_secs(5)).await;
        for a in ups(svc.agent, leak_start).await {
            let rule = a["rule"].as_str().unwrap_or_default().to_owned();
            first.entry(rule).or_insert(a);
        }
    }
    stop(&leaks);
    stop(&loads);
    println!("leaky: from the leak's start to its first alert, and what it names");
    for rule in rules {
        match first.get(rule) {
            Some(a) => {
                let f = &a["finding"];
                let site = &f["site"];
                let at = if site.is_null() {
                    String::new()
                } else {
                    format!("{} ({}:{})", site["function"], site["file"], site["line"])
                };
                println!(
                    "  {rule:<20} {:>5.0} s  {:<10} {at}\n  {:<20}          {}",
                    a["at"].as_f64().unwrap_or(0.0) - leak_start,
                    f["confidence"].as_str().unwrap_or("-"),
                    "",
                    f["summary"]
                );
            }
            None => println!("  {rule:<20}     - (no alert within 15 min)"),
        }
    }
}

fn main() {
    let a = args();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let binary = tokio::task::spawn_blocking(orders::build)
            .await
            .expect("build");
        quiet(&binary, a.minutes).await;
        leaky(&binary, a.slow).await;
    });
}
