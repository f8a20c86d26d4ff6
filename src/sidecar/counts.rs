//! What serves a target's pprof URL (a leakscope agent or a Go service),
//! and the counts read from it on the `counts_every` schedule, fed to the
//! watch loop as metrics:
//!
//! | target | metric | read from |
//! |---|---|---|
//! | leakscope agent | `tokio_tasks` | `leakscope_tokio_alive_tasks` of `/metrics` |
//! | leakscope agent | `heap_bytes` | `leakscope_jemalloc_bytes{kind="allocated"}` of `/metrics` |
//! | Go | `goroutines` | `goroutine profile: total N` of `/debug/pprof/goroutine?debug=1` |
//! | Go | `heap_bytes` | `# HeapAlloc = N` of `/debug/pprof/heap?debug=1` |
//!
//! An agent is recognised first (its `/metrics` has `leakscope_` series, or
//! it answers `/debug/pprof/tasks`), since agents also serve a goroutine
//! profile under Go's name. What a target is, is found again when its pid
//! changes. Every read is capped in size ([`TEXT_CAP`]); the reads go
//! through the target's endpoint (retries, breaker), the probes that find
//! what serves the URL are single requests whose 404s are answers.

use super::TargetState;
use super::pull::{base_path, get_capped, once};

/// Largest answer read for a count: `/metrics`, `goroutine?debug=1`,
/// `heap?debug=1` (whose `runtime.MemStats` lines come last, after every
/// allocation site).
pub const TEXT_CAP: usize = 16 << 20;

/// What serves a target's pprof URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// Not known yet (no answer so far).
    Unknown,
    /// A Go service with `net/http/pprof`.
    Go,
    /// A leakscope agent.
    Agent,
    /// Neither: profiles may still be pulled, no counts are read.
    Other,
}

/// `goroutine profile: total N` → N.
pub fn goroutine_total(text: &str) -> Option<f64> {
    text.lines()
        .next()?
        .strip_prefix("goroutine profile: total ")?
        .trim()
        .parse()
        .ok()
}

/// `# HeapAlloc = N` of a Go heap profile in text (`debug=1`) → N.
pub fn heap_alloc(text: &str) -> Option<f64> {
    text.lines().rev().find_map(|l| {
        l.strip_prefix("# HeapAlloc = ")
            .and_then(|v| v.trim().parse().ok())
    })
}

/// The value of series `name` (with label `label` when given) in
/// Prometheus text.
pub fn prom_value(text: &str, name: &str, label: Option<(&str, &str)>) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let rest = l.strip_prefix(name)?;
        let (labels, value) = match rest.strip_prefix('{') {
            Some(r) => {
                let (labels, value) = r.split_once('}')?;
                (labels, value)
            }
            None if rest.starts_with(' ') => ("", rest),
            None => return None,
        };
        if let Some((k, v)) = label {
            let want = format!("{k}=\"{v}\"");
            if !labels.split(',').any(|p| p.trim() == want) {
                return None;
            }
        }
        value.split_whitespace().next()?.parse().ok()
    })
}

/// True for Prometheus text with a `leakscope_` series.
fn is_agent_metrics(text: &str) -> bool {
    text.lines().any(|l| l.starts_with("leakscope_"))
}

/// A probe's answer to GET `path`: its text when 2xx, `None` when the path
/// is not served (4xx), an error when the target could not be asked.
async fn ask(t: &TargetState, path: &str) -> Result<Option<String>, String> {
    let r = once(t, &format!("{}{path}", base_path(t)), TEXT_CAP).await?;
    match r.status {
        200..=299 => Ok(Some(r.text())),
        400..=499 => Ok(None),
        s => Err(format!("GET {path}: HTTP {s}")),
    }
}

/// The text of `path` read through the endpoint, `None` when it failed.
async fn read_text(t: &TargetState, path: &str) -> Option<String> {
    get_capped(t, &format!("{}{path}", base_path(t)), TEXT_CAP)
        .await
        .ok()
        .map(|r| r.text())
}

/// Finds what serves the target's URL; `Unknown` when it did not answer.
async fn detect(t: &TargetState) -> (Flavor, Option<String>) {
    match ask(t, "/metrics").await {
        Ok(Some(text)) if is_agent_metrics(&text) => return (Flavor::Agent, Some(text)),
        Ok(_) => {}
        Err(_) => return (Flavor::Unknown, None),
    }
    match ask(t, "/debug/pprof/tasks").await {
        Ok(Some(_)) => return (Flavor::Agent, None),
        Ok(None) => {}
        Err(_) => return (Flavor::Unknown, None),
    }
    match ask(t, "/debug/pprof/goroutine?debug=1").await {
        Ok(Some(text)) if goroutine_total(&text).is_some() => (Flavor::Go, None),
        Ok(_) => (Flavor::Other, None),
        Err(_) => (Flavor::Unknown, None),
    }
}

/// What serves the target's URL, as last found for its current pid.
pub fn flavor(t: &TargetState) -> Flavor {
    let pid = t.monitor.view().pid;
    let f = t.flavor.lock().unwrap_or_else(|e| e.into_inner());
    if f.0 == pid { f.1 } else { Flavor::Unknown }
}

/// What serves the target's URL, finding out when it is not known for the
/// current pid; with the `/metrics` text read on the way, if any. Callers
/// at the same time wait for one detection.
pub async fn find_flavor(t: &TargetState) -> (Flavor, Option<String>) {
    let known = flavor(t);
    if known != Flavor::Unknown || t.endpoint.is_none() {
        return (known, None);
    }
    let _one = t.detecting.lock().await;
    let known = flavor(t);
    if known != Flavor::Unknown {
        return (known, None);
    }
    let pid = t.monitor.view().pid;
    let (found, text) = detect(t).await;
    if found != Flavor::Unknown {
        *t.flavor.lock().unwrap_or_else(|e| e.into_inner()) = (pid, found);
        // Forget the counts of what the URL served before.
        t.counts.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
    (found, text)
}

/// Reads the target's counts (finding what it is first, when needed).
pub async fn read(t: &TargetState) {
    let (known, metrics) = find_flavor(t).await;
    match known {
        Flavor::Agent => {
            let text = match metrics {
                Some(text) => Some(text),
                None => read_text(t, "/metrics").await,
            };
            if let Some(text) = text {
                if let Some(n) = prom_value(&text, "leakscope_tokio_alive_tasks", None) {
                    set_count(t, "tokio_tasks", n);
                }
                let allocated = prom_value(
                    &text,
                    "leakscope_jemalloc_bytes",
                    Some(("kind", "allocated")),
                );
                if let Some(n) = allocated {
                    set_count(t, "heap_bytes", n);
                }
            }
        }
        Flavor::Go => {
            if let Some(text) = read_text(t, "/debug/pprof/goroutine?debug=1").await
                && let Some(n) = goroutine_total(&text)
            {
                set_count(t, "goroutines", n);
            }
            if let Some(text) = read_text(t, "/debug/pprof/heap?debug=1").await
                && let Some(n) = heap_alloc(&text)
            {
                set_count(t, "heap_bytes", n);
            }
        }
        Flavor::Unknown | Flavor::Other => {}
    }
}

fn set_count(t: &TargetState, name: &'static str, value: f64) {
    let mut counts = t.counts.lock().unwrap_or_else(|e| e.into_inner());
    counts.retain(|(n, _)| *n != name);
    counts.push((name, value));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_texts() {
        let heap = include_str!("../../tests/data/go-profiles/inventory-heap.debug1.txt");
        let want = heap
            .lines()
            .find_map(|l| l.strip_prefix("# HeapAlloc = "))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap();
        assert_eq!(heap_alloc(heap), Some(want));
        assert!(want > 0.0);
        assert_eq!(
            heap_alloc("heap profile: 0: 0 [0: 0] @ heap/1048576\n"),
            None
        );
        assert_eq!(
            goroutine_total("goroutine profile: total 43\n3 @ 0x1\n"),
            Some(43.0)
        );
        assert_eq!(goroutine_total("goroutine 1 [running]:\n"), None);
    }

    #[test]
    fn prometheus_values() {
        let text = "# HELP leakscope_jemalloc_bytes x\n\
                    # TYPE leakscope_jemalloc_bytes gauge\n\
                    leakscope_jemalloc_bytes{kind=\"active\"} 9\n\
                    leakscope_jemalloc_bytes{kind=\"allocated\"} 1234567\n\
                    leakscope_tokio_alive_tasks 17\n\
                    leakscope_tokio_alive_tasks_more 3\n";
        assert_eq!(
            prom_value(
                text,
                "leakscope_jemalloc_bytes",
                Some(("kind", "allocated"))
            ),
            Some(1_234_567.0)
        );
        assert_eq!(
            prom_value(text, "leakscope_tokio_alive_tasks", None),
            Some(17.0)
        );
        assert_eq!(
            prom_value(text, "leakscope_jemalloc_bytes", Some(("kind", "x"))),
            None
        );
        assert!(is_agent_metrics(text));
        assert!(!is_agent_metrics(
            "# HELP go_goroutines n\ngo_goroutines 12\n"
        ));
    }
}
