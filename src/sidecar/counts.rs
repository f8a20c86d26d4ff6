//! What serves a target's pprof URL (a leakscope agent or a Go service),
//! found once per pid, and the counts read from it on the `counts_every`
//! schedule, fed to the watch loop as metrics (`tokio_tasks`, `goroutines`,
//! `heap_bytes`: [`remote::read_counts`] says where each comes from). The
//! readers themselves are in [`remote`]; this module keeps what the
//! sidecar knows per target.

use super::TargetState;
use super::remote;

pub use remote::{Flavor, TEXT_CAP};

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
    let Some(endpoint) = &t.endpoint else {
        return (Flavor::Unknown, None);
    };
    let (found, text) = remote::detect(endpoint).await;
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
    let Some(endpoint) = &t.endpoint else {
        return;
    };
    for (name, value) in remote::read_counts(endpoint, known, metrics).await {
        set_count(t, name, value);
    }
}

fn set_count(t: &TargetState, name: &'static str, value: f64) {
    let mut counts = t.counts.lock().unwrap_or_else(|e| e.into_inner());
    counts.retain(|(n, _)| *n != name);
    counts.push((name, value));
}
