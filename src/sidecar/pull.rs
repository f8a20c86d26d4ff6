//! Profile pulls of one target: on a schedule, on a breach, on request.
//!
//! Every pull goes through the target's [`Endpoint`](leakscope_agent::client::Endpoint)
//! (timeouts, retries, breaker), is checked to be a pprof profile, and is
//! stored with the resource sample of the moment; decoding, sampling and
//! writing run on the blocking pool, never on the async workers. A heap
//! profile is compared with the previous one of the same target and the
//! site that grew most is reported, and reduced to its allocation sites
//! into the target's evidence ([`super::naming`]). A Go service's heap
//! profile is pulled with `gc=1`: Go's heap profile is otherwise as of the
//! last collection, which can be minutes old when the leak itself is what
//! drives the collector.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use leakscope_agent::client::ClientError;
use leakscope_agent::explain::heap::reduce;
use leakscope_agent::profile::Profile;
use leakscope_agent::resource::{SampleOptions, Target, sample};
use leakscope_agent::store::{NewSnapshot, SnapshotMeta, Trigger};
use leakscope_agent::watch::monitor::TargetStatus;
use leakscope_viewer::render::table::format_delta;
use leakscope_viewer::{DiffOptions, rank_growth};

use super::counts::{self, Flavor};
use super::naming::pull_goroutines;
use super::remote;
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

/// The base path of the target's pprof URL ([`remote::base_path`]); ""
/// without one.
pub(super) fn base_path(t: &TargetState) -> String {
    t.endpoint
        .as_ref()
        .map(remote::base_path)
        .unwrap_or_default()
}

/// The target's endpoint, or an error naming the target that has none.
pub(super) fn endpoint_of(t: &TargetState) -> Result<&leakscope_agent::client::Endpoint, String> {
    t.endpoint
        .as_ref()
        .ok_or_else(|| format!("target {:?} has no pprof URL", t.spec.name))
}

/// Now, in Unix seconds.
pub(super) fn unix_now() -> f64 {
    leakscope_agent::collect::unix_seconds(std::time::SystemTime::now())
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
    } else if kind == "heap" {
        (
            format!("{base}{path}{}", remote::heap_query(counts::flavor(t))),
            None,
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
    let (meta, profile, sites) = tokio::task::spawn_blocking(move || {
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
        let sites = (kind_owned == "heap")
            .then(|| reduce(&profile, meta.time))
            .flatten();
        Ok::<_, SnapshotError>((meta, profile, sites))
    })
    .await
    .map_err(|e| SnapshotError::NotAProfile(format!("decoding the profile: {e}")))??;
    t.snapshots_total.fetch_add(1, Ordering::Relaxed);
    if let Some(sites) = sites {
        t.evidence
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push_heap(meta.pid, meta.id.clone(), sites, min_heap_gap(t));
    }
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

/// Seconds under which a heap profile replaces the previous one in the
/// target's evidence: a quarter of its heap interval (15 s without one).
fn min_heap_gap(t: &TargetState) -> f64 {
    t.spec
        .heap_every
        .filter(|d| !d.is_zero())
        .map_or(15.0, |d| d.as_secs_f64() / 4.0)
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

/// The target's schedule: heap and CPU profiles and counts, each on its own
/// interval, until the sidecar is gone; a Go target's goroutines are pulled
/// with each heap profile. A pull still running when its next turn comes
/// is not started twice.
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
    // What serves the URL decides what the first pulls are (a Go heap
    // profile after a collection, goroutine dumps).
    let _ = counts::find_flavor(&t).await;
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
        tokio::spawn(async move {
            if kind == "counts" {
                counts::read(&t).await;
            } else {
                if kind == "heap" {
                    // Found again after a restart, even with counts off.
                    let _ = counts::find_flavor(&t).await;
                }
                let _ = snapshot(&shared, &t, kind, Trigger::Schedule, None, BTreeMap::new()).await;
                if kind == "heap" && counts::flavor(&t) == Flavor::Go {
                    let _ = pull_goroutines(&shared, &t, Trigger::Schedule, BTreeMap::new()).await;
                }
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
