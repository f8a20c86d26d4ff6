//! The sidecar against a leakscope agent (the leaky service in this test
//! process, jemalloc profiling on): the agent is recognised as such, not
//! as a Go service (no goroutine count is read), its tokio tasks and
//! jemalloc's allocated bytes become the `tokio_tasks` and `heap_bytes`
//! metrics, and a heap growth alert names the leaking function from the
//! heap profiles pulled from the agent.

leakscope::enable_heap_profiling!("prof:true,prof_active:true,prof_accum:true,lg_prof_sample:14");

mod support;

use std::time::Duration;

use support::sidecar::{api, start_sidecar, wait_until};
use support::{leak_heap, leak_line, scratch};

const LIMIT: Duration = Duration::from_secs(60);

/// A short heap growth rule, so the test does not wait minutes.
const RULES: &str = r#"
[[rule]]
name = "heap_growth"
metric = "heap_bytes"
growth = { per_minute = 1048576, window_secs = 6 }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_target_feeds_heap_bytes_and_its_heap_alert_names_the_leak() {
    let dir = scratch("sidecar-agent-naming");
    let rules = dir.join("rules.toml");
    std::fs::write(&rules, RULES).expect("rules");
    let me = std::process::id().to_string();
    let pprof = format!("http://{}", support::service());
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
        "1s",
        "--counts-every",
        "200ms",
        "--rules",
        rules.to_str().expect("utf-8 path"),
        "--data-dir",
        data.to_str().expect("utf-8 path"),
    ]);
    let before = wait_until(
        addr,
        "/api/targets/agent",
        "the agent's counts",
        LIMIT,
        |v| v["counts"]["tokio_tasks"].is_number() && v["counts"]["heap_bytes"].is_number(),
    )
    .await;
    assert!(
        before["counts"].get("goroutines").is_none(),
        "an agent is not a Go service: {before:#}"
    );
    let heap0 = before["counts"]["heap_bytes"].as_f64().expect("heap_bytes");

    // Leak ~30 MiB/min until the rule fires.
    let leaking = tokio::spawn(async {
        loop {
            leak_heap(2, 128).await;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    // heap_bytes is jemalloc's allocated bytes: it follows the leak.
    wait_until(
        addr,
        "/api/targets/agent",
        "heap_bytes to follow the leak",
        LIMIT,
        |v| v["counts"]["heap_bytes"].as_f64() > Some(heap0 + 4.0 * 1024.0 * 1024.0),
    )
    .await;
    let alerts = wait_until(
        addr,
        "/api/targets/agent/alerts",
        "the heap alert",
        LIMIT,
        |v| {
            v["alerts"].as_array().is_some_and(|a| {
                a.iter()
                    .any(|a| a["rule"] == "heap_growth" && a["to"] != "ok")
            })
        },
    )
    .await;
    leaking.abort();
    let alert = alerts["alerts"]
        .as_array()
        .and_then(|a| a.iter().find(|a| a["rule"] == "heap_growth"))
        .expect("alert");
    let f = &alert["finding"];
    assert_eq!(f["kind"], "heap", "{alert:#}");
    assert_eq!(
        f["site"]["function"], "leakscope::leaky::leak_heap_kib",
        "{alert:#}"
    );
    assert_eq!(f["site"]["line"], leak_line(), "{alert:#}");
    assert!(
        f["site"]["file"]
            .as_str()
            .is_some_and(|p| p.ends_with("src/leaky.rs")),
        "{alert:#}"
    );
    for id in [&f["base"], &f["new"]] {
        let id = id.as_str().expect("a stored snapshot id");
        api(addr, &format!("/api/snapshots/{id}")).await;
    }
    if let Err(out) = sidecar.wait_output("at leakscope::leaky::leak_heap_kib (", LIMIT) {
        panic!("no finding under the alert in:\n{out}");
    }
    // No goroutine dump was asked of the agent.
    let snaps = api(addr, "/api/snapshots?target=agent&kind=goroutine").await;
    assert_eq!(snaps.as_array().map(Vec::len), Some(0), "{snaps:#}");
}
