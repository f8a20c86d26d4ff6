//! Profile pulls of one target: on a schedule, on a breach, on request.
//!
//! Every pull goes through the target's [`Endpoint`](leakscope_agent::client::Endpoint)
//! (timeouts, retries, breaker), is checked to be a pprof profile, and is
//! stored with the resource sample of the moment; decoding, sampling and
//! writing run on the blocking pool, never on the async workers. A heap
//! profile is compared with the previous one of the same target and the
//! site that grew most is reported.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use leakscope_agent::client::ClientError;
use leakscope_agent::profile::Profile;
use leakscope_agent::resource::{SampleOptions, Target, sample};
use leakscope_agent::store::{NewSnapshot, SnapshotMeta, Trigger};
use leakscope_agent::watch::monitor::TargetStatus;
use leakscope_viewer::render::table::format_delta;
use leakscope_viewer::{DiffOptions, rank_growth};

use super::{Event, Shared, TargetState};

/// Profile kinds a snapshot can be, and the pprof path of each.
pub const PROFILE_KINDS: &[(&str, &str)] = &[
    ("heap", "/debug/pprof/heap"),
    ("allocs", "/debug/pprof/allocs"),
    ("cpu", "/debug/pprof/profile"),
    ("goroutine", "/debug/pprof/goroutine"),
    ("mutex", "/debug/pprof/mutex"),
    ("block", "/debug/pprof/block"),
    ("threadcreate", "/debug/pprof/threadcreate"),
];

/// Why a snapshot was not taken.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The kind is not one of [`PROFILE_KINDS`].
    #[error(
        "unknown profile kind {0:?} (known: heap, allocs, cpu, goroutine, mutex, block, threadcreate)"
    )]
    UnknownKind(String),
    /// The target has no pprof URL.
    #[error("target {0:?} has no pprof URL (--pprof-url): nothing to pull profiles from")]
    NoEndpoint(String),
    /// The pull failed.
    #[error("pulling {kind} from {target}: {source}")]
    Pull {
        /// Target name.
        target: String,
        /// Profile kind.
        kind: String,
        /// The client's error.
        source: ClientError,
    },
    /// The answer is not a pprof profile.
    #[error("{0}")]
    NotAProfile(String),
    /// The store refused it.
    #[error("storing the snapshot: {0}")]
    Store(#[from] leakscope_agent::Error),
}

/// The base path of the target's pprof URL: the URL's path without a
/// trailing `/debug/pprof[/]` or `/`, so `http://h:6060`,
/// `http://h:6060/debug/pprof/` and `http://h:6060/svc` all work.
fn base_path(t: &TargetState) -> String {
    let Some(e) = &t.endpoint else {
        return String::new();
    };
    let path = e.url().path().split('?').next().unwrap_or_default();
    let path = path.trim_end_matches('/');
    path.strip_suffix("/debug/pprof").unwrap_or(path).to_owned()
}

/// Pulls one profile of `kind` from `t` and stores it. `seconds` sets the
/// length of a CPU profile (default: the target's `cpu_seconds`).
pub async fn snapshot(
    shared: &Arc<Shared>,
    t: &Arc<TargetState>,
    kind: &str,
    trigger: Trigger,
    seconds: Option<u32>,
    labels: BTreeMap<String, String>,
) -> Result<SnapshotMeta, SnapshotError> {
    let result = pull_and_store(shared, t, kind, trigger, seconds, labels).await;
    match &result {
        Ok(_) => {
            *t.last_pull_error.lock().unwrap_or_else(|e| e.into_inner()) = None;
        }
        Err(e) => {
            t.pull_failures_total.fetch_add(1, Ordering::Relaxed);
            *t.last_pull_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(e.to_string());
            (shared.events)(Event::PullFailed {
                target: t.spec.name.clone(),
                kind: kind.to_owned(),
                error: e.to_string(),
            });
        }
    }
    result
}

async fn pull_and_store(
    shared: &Arc<Shared>,
    t: &Arc<TargetState>,
    kind: &str,
    trigger: Trigger,
    seconds: Option<u32>,
    mut labels: BTreeMap<String, String>,
) -> Result<SnapshotMeta, SnapshotError> {
    let path = PROFILE_KINDS
        .iter()
        .find(|(k, _)| *k == kind)
        .map(|(_, p)| *p)
        .ok_or_else(|| SnapshotError::UnknownKind(kind.to_owned()))?;
    let endpoint = t
        .endpoint
        .as_ref()
        .ok_or_else(|| SnapshotError::NoEndpoint(t.spec.name.clone()))?;
    let base = base_path(t);
    let (url_path, timeout) = if kind == "cpu" {
        let secs = seconds.unwrap_or(t.spec.cpu_seconds).max(1);
        (
            format!("{base}{path}?seconds={secs}"),
            Some(Duration::from_secs(u64::from(secs)) + endpoint.policy().timeout),
        )
    } else {
        (format!("{base}{path}"), None)
    };
    let response =
        endpoint
            .get(&url_path, timeout)
            .await
            .map_err(|source| SnapshotError::Pull {
                target: t.spec.name.clone(),
                kind: kind.to_owned(),
                source,
            })?;
    for (k, v) in &t.spec.labels {
        labels.entry(k.clone()).or_insert_with(|| v.clone());
    }
    let origin = format!("{} from {}", kind, endpoint.url().with_path(&url_path));
    let view = t.monitor.view();
    let (pid, last) = (view.pid, view.last);
    let store = shared.store.clone();
    let name = t.spec.name.clone();
    let kind_owned = kind.to_owned();
    let (meta, profile) = tokio::task::spawn_blocking(move || {
        let profile = Profile::decode_bytes(&response.body, &origin)
            .map_err(|e| SnapshotError::NotAProfile(e.to_string()))?;
        // The sample of the moment, with the breakdowns; the watch loop's
        // last one if the process cannot be read now.
        let full = SampleOptions {
            fd_breakdown: true,
            thread_names: true,
            tcp_states: true,
        };
        let sample = pid
            .and_then(|p| sample(Target::Pid(p), &full).ok())
            .or(last);
        let meta = store.put(NewSnapshot {
            target: &name,
            pid,
            kind: &kind_owned,
            trigger,
            labels,
            sample,
            time: None,
            data: &response.body,
        })?;
        Ok::<_, SnapshotError>((meta, profile))
    })
    .await
    .map_err(|e| SnapshotError::NotAProfile(format!("decoding the profile: {e}")))??;
    t.snapshots_total.fetch_add(1, Ordering::Relaxed);
    let growth = if kind == "heap" {
        let mut last = t.last_heap.lock().await;
        let line = last.as_ref().and_then(|prev| growth_line(prev, &profile));
        *last = Some(profile);
        line
    } else {
        None
    };
    (shared.events)(Event::Snapshot {
        meta: Box::new(meta.clone()),
        growth,
    });
    Ok(meta)
}

/// "in-use +12.3 MiB since the previous heap profile; most: f (file:line) +10.0 MiB".
fn growth_line(prev: &Profile, new: &Profile) -> Option<String> {
    let opts = DiffOptions::default().with_sample_type("inuse_space");
    let ranked = rank_growth(prev, new, &opts).ok()?;
    let total: i64 = ranked.iter().map(|g| g.delta()).sum();
    let top = ranked.first().filter(|g| g.delta() > 0)?;
    let at = if top.file.is_empty() {
        String::new()
    } else {
        format!(" ({}:{})", top.file, top.line)
    };
    Some(format!(
        "in-use {} since the previous heap profile; grew most: {}{at} {}",
        format_delta(total, "bytes"),
        top.function,
        format_delta(top.delta(), "bytes")
    ))
}

/// Which count the target's endpoint offers.
#[derive(Clone, Copy, PartialEq, Eq)]
enum CountSource {
    Unknown,
    Goroutines,
    TokioTasks,
    None,
}

/// Reads the goroutine count (Go) or the tokio task count (leakscope agent).
async fn read_counts(t: &TargetState, source: &mut CountSource) {
    let Some(endpoint) = &t.endpoint else {
        return;
    };
    let base = base_path(t);
    if matches!(*source, CountSource::Unknown | CountSource::Goroutines) {
        match endpoint
            .get(&format!("{base}/debug/pprof/goroutine?debug=1"), None)
            .await
        {
            Ok(r) => {
                if let Some((name, n)) = goroutine_count(&r.text()) {
                    *source = CountSource::Goroutines;
                    set_count(t, name, n);
                    return;
                }
                if *source == CountSource::Unknown {
                    *source = CountSource::TokioTasks;
                }
            }
            Err(ClientError::Status { status: 404, .. }) if *source == CountSource::Unknown => {
                *source = CountSource::TokioTasks;
            }
            Err(_) => return,
        }
    }
    if *source == CountSource::TokioTasks
        && let Ok(r) = endpoint.get(&format!("{base}/metrics"), None).await
    {
        let n = r.text().lines().find_map(|l| {
            l.strip_prefix("leakscope_tokio_alive_tasks ")
                .and_then(|v| v.trim().parse::<f64>().ok())
        });
        match n {
            Some(n) => set_count(t, "tokio_tasks", n),
            None => *source = CountSource::None,
        }
    }
}

/// The count of a `goroutine?debug=1` answer and its name: `goroutines`
/// from Go, `tokio_tasks` from a leakscope agent (which serves its tasks
/// profile under Go's name too, with `# leakscope:` comment lines).
fn goroutine_count(text: &str) -> Option<(&'static str, f64)> {
    let n = text
        .lines()
        .next()?
        .strip_prefix("goroutine profile: total ")?
        .trim()
        .parse::<f64>()
        .ok()?;
    let name = if text.contains("\n# leakscope: ") {
        "tokio_tasks"
    } else {
        "goroutines"
    };
    Some((name, n))
}

fn set_count(t: &TargetState, name: &'static str, value: f64) {
    let mut counts = t.counts.lock().unwrap_or_else(|e| e.into_inner());
    counts.retain(|(n, _)| *n != name);
    counts.push((name, value));
}

/// The target's schedule: heap and CPU profiles and counts, each on its own
/// interval, until the sidecar is gone. A pull still running when its next
/// turn comes is not started twice.
pub async fn schedule(shared: Weak<Shared>, target: Weak<TargetState>) {
    // Let the watch loop find the process first, so the first profile is
    // stored with its pid and sample.
    loop {
        let Some(t) = target.upgrade() else {
            return;
        };
        if t.monitor.view().status != TargetStatus::Starting {
            break;
        }
        drop(t);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let Some(t) = target.upgrade() else {
        return;
    };
    let tick = |every: Option<Duration>| {
        every.filter(|d| !d.is_zero()).map(|d| {
            let mut i = tokio::time::interval(d);
            i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            i
        })
    };
    let mut heap = tick(t.spec.heap_every);
    let mut cpu = tick(t.spec.cpu_every);
    let mut counts = tick(Some(t.spec.counts_every));
    drop(t);
    let heap_busy = Arc::new(AtomicBool::new(false));
    let cpu_busy = Arc::new(AtomicBool::new(false));
    let counts_busy = Arc::new(AtomicBool::new(false));
    let source = Arc::new(std::sync::Mutex::new(CountSource::Unknown));
    loop {
        let kind = tokio::select! {
            _ = next(&mut heap) => "heap",
            _ = next(&mut cpu) => "cpu",
            _ = next(&mut counts) => "counts",
        };
        let (Some(shared), Some(t)) = (shared.upgrade(), target.upgrade()) else {
            return;
        };
        // Nothing to pull from a process that is not there.
        if t.monitor.view().status == TargetStatus::Waiting {
            continue;
        }
        let busy = match kind {
            "heap" => &heap_busy,
            "cpu" => &cpu_busy,
            _ => &counts_busy,
        };
        if busy.swap(true, Ordering::AcqRel) {
            continue;
        }
        let busy = busy.clone();
        let source = source.clone();
        tokio::spawn(async move {
            if kind == "counts" {
                let mut s = *source.lock().unwrap_or_else(|e| e.into_inner());
                if s != CountSource::None {
                    read_counts(&t, &mut s).await;
                    *source.lock().unwrap_or_else(|e| e.into_inner()) = s;
                }
            } else {
                let _ = snapshot(&shared, &t, kind, Trigger::Schedule, None, BTreeMap::new()).await;
            }
            busy.store(false, Ordering::Release);
        });
    }
}

/// The next tick of an optional interval (never, for `None`).
async fn next(i: &mut Option<tokio::time::Interval>) {
    match i {
        Some(i) => {
            i.tick().await;
        }
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn goroutine_counts_are_named_for_their_source() {
        let go = "goroutine profile: total 12\n5 @ 0x1 0x2\n#\t0x1\tmain.park+0x1\tmain.go:4\n\n";
        assert_eq!(super::goroutine_count(go), Some(("goroutines", 12.0)));
        let agent = "goroutine profile: total 7\n7 @\n#\t0x0\t<tokio tasks: ...>\n\n\
                     # leakscope: the runtime asked has 7 alive tasks\n";
        assert_eq!(super::goroutine_count(agent), Some(("tokio_tasks", 7.0)));
        assert_eq!(super::goroutine_count("404 page not found\n"), None);
    }
}
