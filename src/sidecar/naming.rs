//! Naming the leak behind an alert of a watched target: the evidence kept
//! per target between alerts, and the [`Finding`] computed when a rule goes
//! up (called from the target's watch thread through
//! [`WatchHook::explain`](leakscope_agent::watch::monitor::WatchHook::explain)).
//!
//! - **Heap** (`heap_bytes`, `rss_bytes` rules): every heap profile pulled
//!   (each minute by default, and at breaches) is reduced to its allocation
//!   sites ([`explain::heap::reduce`]) into a ring of the last
//!   [`HEAP_RING`] per target. An alert pulls a fresh one and names the
//!   own-code site that keeps growing across the ring
//!   ([`explain::heap::site_trends`]); a site that grew and levelled off (a
//!   cache filling up) is never named.
//! - **Goroutines** (`goroutines` rules, Go targets): a goroutine dump
//!   (`debug=2`, at most [`GOROUTINE_DUMP_CAP`]) is pulled with every
//!   scheduled heap profile and reduced to groups ([`super::goroutines`]);
//!   the `debug=0` profile pulled alongside is stored (kind `goroutine`),
//!   for the viewer and `go tool pprof`. An alert pulls both again and
//!   compares with the earliest healthy pull within the rule's window.
//!
//! - **Threads, fds, tokio tasks**: healthy readings while the kind's rules
//!   are `ok`, one at the alert, compared ([`super::kinds`]).
//!
//! [`explain::heap::reduce`]: leakscope_agent::explain::heap::reduce
//! [`explain::heap::site_trends`]: leakscope_agent::explain::heap::site_trends

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use leakscope_agent::explain::Finding;
use leakscope_agent::explain::heap::{HeapSnapshot, finding as heap_finding, site_trends};
use leakscope_agent::resource::ResourceSample;
use leakscope_agent::store::Trigger;
use leakscope_agent::watch::rules::{Condition, Level};

use super::counts::{Flavor, flavor};
use super::goroutines::{Group, finding as goroutine_finding};
use super::pull::{snapshot, unix_now};
use super::{Event, Shared, TargetState, kinds};

/// Heap snapshots kept per target: half an hour at one a minute.
pub const HEAP_RING: usize = 30;
/// Goroutine pulls kept per target (their groups only).
pub const GOROUTINE_RING: usize = 16;
pub use super::remote::GOROUTINE_DUMP_CAP;
/// Longest an alert waits for its finding (the pulls it needs included).
pub const EXPLAIN_TIMEOUT: Duration = Duration::from_secs(20);
/// Window assumed for goroutine rules that have none (not growth rules).
const DEFAULT_WINDOW_SECS: f64 = 300.0;

/// What kind of evidence names a leak of `metric`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Heap profiles.
    Heap,
    /// Goroutine dumps.
    Goroutine,
    /// Thread ids and an agent's thread dump, or thread names.
    Threads,
    /// fds profiles (an agent's, or the sidecar's listing of /proc).
    Fds,
    /// An agent's tasks profiles.
    Tasks,
}

impl Kind {
    /// The kind for `metric`, if the sidecar can name its leaks.
    pub fn of(metric: &str) -> Option<Kind> {
        match metric {
            "heap_bytes" | "rss_bytes" => Some(Kind::Heap),
            "goroutines" => Some(Kind::Goroutine),
            "threads" => Some(Kind::Threads),
            "open_fds" => Some(Kind::Fds),
            "tokio_tasks" => Some(Kind::Tasks),
            _ => None,
        }
    }

    fn names(self) -> (&'static str, &'static str) {
        match self {
            Kind::Heap => ("heap", "bytes"),
            Kind::Goroutine => ("goroutine", "goroutines"),
            Kind::Threads => ("threads", "threads"),
            Kind::Fds => ("fds", "fds"),
            Kind::Tasks => ("tasks", "tasks"),
        }
    }
}

struct HeapEntry {
    pid: Option<u32>,
    id: String,
    snap: HeapSnapshot,
}

struct GoroutineEntry {
    pid: Option<u32>,
    /// The stored `debug=0` profile pulled alongside, when it was stored.
    id: Option<String>,
    t: f64,
    healthy: bool,
    groups: Arc<Vec<Group>>,
}

/// The evidence kept for one target, in memory.
#[derive(Default)]
pub struct Evidence {
    heap: VecDeque<HeapEntry>,
    goroutines: VecDeque<GoroutineEntry>,
}

impl std::fmt::Debug for Evidence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Evidence")
            .field("heap", &self.heap.len())
            .field("goroutines", &self.goroutines.len())
            .finish()
    }
}

impl Evidence {
    /// Keeps a reduced heap profile (stored as `id`) of process `pid`. One
    /// taken less than `min_gap` seconds after the newest kept replaces it:
    /// a breach pull seconds after a scheduled one (or two breach pulls
    /// together) would leave the recent half of the series, which decides
    /// whether a site is still growing, spanning seconds instead of minutes.
    pub fn push_heap(&mut self, pid: Option<u32>, id: String, snap: HeapSnapshot, min_gap: f64) {
        if let Some(last) = self.heap.back()
            && last.pid == pid
            && (snap.t - last.snap.t).abs() < min_gap
        {
            self.heap.pop_back();
        }
        self.heap.push_back(HeapEntry { pid, id, snap });
        while self.heap.len() > HEAP_RING {
            self.heap.pop_front();
        }
    }

    fn push_goroutines(&mut self, entry: GoroutineEntry) {
        self.goroutines.push_back(entry);
        while self.goroutines.len() > GOROUTINE_RING {
            self.goroutines.pop_front();
        }
    }

    /// The heap snapshots of `pid`, oldest first, with their ids.
    fn heap_of(&self, pid: Option<u32>) -> Vec<(&str, &HeapSnapshot)> {
        let mut v: Vec<(&str, &HeapSnapshot)> = self
            .heap
            .iter()
            .filter(|e| e.pid == pid)
            .map(|e| (e.id.as_str(), &e.snap))
            .collect();
        v.sort_by(|a, b| a.1.t.total_cmp(&b.1.t));
        v
    }

    /// The pull to compare a breach pull at `now` with: the earliest
    /// healthy one within `window` seconds, else the latest healthy one,
    /// else the earliest at all; with a word on which.
    fn goroutine_base(
        &self,
        pid: Option<u32>,
        now: f64,
        window: f64,
    ) -> Option<(&GoroutineEntry, &'static str)> {
        let mine: Vec<&GoroutineEntry> = self
            .goroutines
            .iter()
            .filter(|e| e.pid == pid && e.t < now)
            .collect();
        let by_time = |a: &&GoroutineEntry, b: &&GoroutineEntry| a.t.total_cmp(&b.t);
        let healthy = || mine.iter().copied().filter(|e| e.healthy);
        if let Some(e) = healthy().filter(|e| e.t >= now - window).min_by(by_time) {
            return Some((e, "the earliest healthy pull within the rule's window"));
        }
        if let Some(e) = healthy().max_by(by_time) {
            return Some((e, "the latest healthy pull"));
        }
        mine.iter().copied().min_by(by_time).map(|e| {
            (
                e,
                "the earliest pull kept (none was taken while the goroutine rules were ok)",
            )
        })
    }
}

/// True when every goroutine rule of `t` is at `Ok`.
fn goroutines_ok(t: &TargetState) -> bool {
    t.monitor
        .view()
        .levels
        .iter()
        .filter(|(_, metric, _)| metric == "goroutines")
        .all(|(_, _, level)| *level == Level::Ok)
}

/// The longest window of `t`'s goroutine growth rules, in seconds.
fn goroutine_window(t: &TargetState) -> f64 {
    t.spec
        .rules
        .iter()
        .filter(|r| r.metric == "goroutines")
        .filter_map(|r| match r.condition {
            Condition::Growth { window_secs, .. } => Some(window_secs),
            _ => None,
        })
        .fold(None, |m: Option<f64>, w| Some(m.map_or(w, |m| m.max(w))))
        .unwrap_or(DEFAULT_WINDOW_SECS)
}

fn note_failure(shared: &Shared, t: &TargetState, kind: &str, error: &str) {
    t.pull_failures_total.fetch_add(1, Ordering::Relaxed);
    *t.last_pull_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(error.to_owned());
    (shared.events)(Event::PullFailed {
        target: t.spec.name.clone(),
        kind: kind.to_owned(),
        error: error.to_owned(),
    });
}

/// Pulls a goroutine dump (`debug=2`, kept in memory as groups) and the
/// `debug=0` profile (stored), and keeps them in the target's evidence.
pub async fn pull_goroutines(
    shared: &Arc<Shared>,
    t: &Arc<TargetState>,
    trigger: Trigger,
    labels: BTreeMap<String, String>,
) -> Result<(Option<String>, Arc<Vec<Group>>, f64), String> {
    let healthy = trigger == Trigger::Schedule && goroutines_ok(t);
    let pid = t.monitor.view().pid;
    let dump = async {
        let endpoint = super::pull::endpoint_of(t)?;
        let groups = super::remote::goroutine_groups(endpoint).await?;
        Ok::<_, String>((unix_now(), groups))
    };
    let (at, groups) = match dump.await {
        Ok(d) => d,
        Err(e) => {
            let e = format!("goroutine dump (debug=2) of {}: {e}", t.spec.name);
            note_failure(shared, t, "goroutine", &e);
            return Err(e);
        }
    };
    // The profile pulled alongside, for the store (failures are reported
    // by `snapshot` itself).
    let id = snapshot(shared, t, "goroutine", trigger, None, labels)
        .await
        .ok()
        .map(|m| m.id);
    let groups = Arc::new(groups);
    t.evidence
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push_goroutines(GoroutineEntry {
            pid,
            id: id.clone(),
            t: at,
            healthy,
            groups: groups.clone(),
        });
    Ok((id, groups, at))
}

/// The viewer's diff of two stored snapshots, as a full URL.
pub(super) fn diff_url(
    shared: &Shared,
    base: &str,
    new: &str,
    sample_type: &str,
) -> Option<String> {
    if !cfg!(feature = "viewer") {
        return None;
    }
    let addr = shared.addr.get()?;
    Some(format!(
        "http://{addr}/ui/diff?base={base}&new={new}&type={sample_type}"
    ))
}

/// The finding for an alert of `kind` raised by `rule` on `t`, whose
/// process is the one of `sample`.
pub async fn explain(
    shared: Arc<Shared>,
    t: Arc<TargetState>,
    kind: Kind,
    rule: String,
    sample: ResourceSample,
) -> Option<Finding> {
    let labels = BTreeMap::from([("rule".to_owned(), rule)]);
    let pid = sample.pid;
    match kind {
        Kind::Heap => {
            t.endpoint.as_ref()?;
            Some(explain_heap(&shared, &t, labels).await)
        }
        Kind::Goroutine => {
            // TODO(lead): a leakscope agent's goroutine profile (its tasks
            // under Go's name) has no debug=2 dump of this shape yet.
            if t.endpoint.is_none() || flavor(&t) != Flavor::Go {
                return None;
            }
            Some(explain_goroutines(&shared, &t, labels).await)
        }
        Kind::Fds => Some(kinds::explain_fds(&shared, &t, pid, sample, labels).await),
        Kind::Threads => Some(kinds::explain_threads(&shared, &t, pid, sample, labels).await),
        Kind::Tasks => {
            t.endpoint.as_ref()?;
            kinds::explain_tasks(&shared, &t, pid, sample, labels).await
        }
    }
}

async fn explain_heap(
    shared: &Arc<Shared>,
    t: &Arc<TargetState>,
    labels: BTreeMap<String, String>,
) -> Finding {
    let fresh = snapshot(shared, t, "heap", Trigger::Breach, None, labels).await;
    let pid = t.monitor.view().pid;
    let (snaps, first, last) = {
        let ev = t.evidence.lock().unwrap_or_else(|e| e.into_inner());
        let mine = ev.heap_of(pid);
        (
            mine.iter().map(|(_, s)| (*s).clone()).collect::<Vec<_>>(),
            mine.first().map(|(id, _)| (*id).to_owned()),
            mine.last().map(|(id, _)| (*id).to_owned()),
        )
    };
    let mut f = heap_finding(&site_trends(&snaps, 0.0));
    if let Err(e) = &fresh {
        f.detail
            .push_str(&format!("; no fresh heap profile at the alert: {e}"));
    }
    if let (Some(base), Some(new)) = (first, last)
        && base != new
    {
        f.url = diff_url(shared, &base, &new, "inuse_space");
        f.base = Some(base);
        f.new = Some(new);
    }
    f
}

async fn explain_goroutines(
    shared: &Arc<Shared>,
    t: &Arc<TargetState>,
    labels: BTreeMap<String, String>,
) -> Finding {
    let (new_id, new_groups, at) = match pull_goroutines(shared, t, Trigger::Breach, labels).await {
        Ok(p) => p,
        Err(e) => {
            return Finding::unknown("goroutine", "goroutines", format!("no goroutine dump: {e}"));
        }
    };
    let pid = t.monitor.view().pid;
    let window = goroutine_window(t);
    let base = {
        let ev = t.evidence.lock().unwrap_or_else(|e| e.into_inner());
        ev.goroutine_base(pid, at, window)
            .map(|(e, how)| (e.id.clone(), e.groups.clone(), e.t, how))
    };
    let Some((base_id, base_groups, base_t, how)) = base else {
        return Finding::unknown(
            "goroutine",
            "goroutines",
            "no earlier goroutine dump of this process to compare with (the rule fired before \
             the first scheduled pull)",
        );
    };
    let mut f = goroutine_finding(&base_groups, &new_groups);
    f.detail.push_str(&format!(
        "; base: {how}, {:.0} s before the alert",
        at - base_t
    ));
    if let (Some(b), Some(n)) = (base_id, new_id) {
        f.url = diff_url(shared, &b, &n, "goroutine");
        f.base = Some(b);
        f.new = Some(n);
    }
    f
}

/// Runs [`explain`] on the runtime from a plain thread (the watch thread),
/// waiting at most [`EXPLAIN_TIMEOUT`]; never called on an async worker.
pub fn explain_blocking(
    runtime: &tokio::runtime::Handle,
    shared: Arc<Shared>,
    t: Arc<TargetState>,
    kind: Kind,
    rule: String,
    sample: ResourceSample,
) -> Option<Finding> {
    let (what, unit) = kind.names();
    if tokio::runtime::Handle::try_current().is_ok() {
        // Waiting here would block an async worker.
        return Some(Finding::unknown(
            what,
            unit,
            "the alert was raised on an async worker, where the sidecar does not wait for profiles",
        ));
    }
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    // The task owns the target from here: it is released on the runtime,
    // never on the watch thread (whose monitor it may be the last owner of).
    runtime.spawn(async move {
        let found = explain(shared, t, kind, rule, sample);
        let out = tokio::time::timeout(EXPLAIN_TIMEOUT, found).await;
        let _ = tx.send(out.ok());
    });
    match rx.recv_timeout(EXPLAIN_TIMEOUT + Duration::from_secs(1)) {
        Ok(Some(found)) => found,
        Ok(None) | Err(std::sync::mpsc::RecvTimeoutError::Timeout) => Some(Finding::unknown(
            what,
            unit,
            format!(
                "the profiles to name it did not arrive within {}s",
                EXPLAIN_TIMEOUT.as_secs()
            ),
        )),
        // The runtime is shutting down.
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(pid: u32, t: f64, healthy: bool) -> GoroutineEntry {
        GoroutineEntry {
            pid: Some(pid),
            id: Some(format!("g{t}")),
            t,
            healthy,
            groups: Arc::default(),
        }
    }

    #[test]
    fn the_goroutine_base_is_the_earliest_healthy_pull_in_the_window() {
        let mut ev = Evidence::default();
        for (t, healthy) in [(0.0, true), (100.0, true), (200.0, true), (260.0, false)] {
            ev.push_goroutines(entry(7, t, healthy));
        }
        ev.push_goroutines(entry(8, 150.0, true));
        let (e, how) = ev.goroutine_base(Some(7), 300.0, 250.0).unwrap();
        assert_eq!((e.t, how.contains("within")), (100.0, true));
        // Nothing healthy in a short window: the latest healthy one.
        let (e, how) = ev.goroutine_base(Some(7), 300.0, 10.0).unwrap();
        assert_eq!((e.t, how), (200.0, "the latest healthy pull"));
        // Another process's pulls are never compared.
        let (e, _) = ev.goroutine_base(Some(8), 300.0, 250.0).unwrap();
        assert_eq!(e.t, 150.0);
        assert!(ev.goroutine_base(Some(9), 300.0, 250.0).is_none());
        // Nothing healthy at all: the earliest.
        let mut sick = Evidence::default();
        sick.push_goroutines(entry(7, 5.0, false));
        sick.push_goroutines(entry(7, 9.0, false));
        assert_eq!(sick.goroutine_base(Some(7), 10.0, 300.0).unwrap().0.t, 5.0);
    }

    #[test]
    fn rings_are_bounded() {
        let mut ev = Evidence::default();
        for i in 0..100 {
            ev.push_goroutines(entry(1, f64::from(i), true));
            let snap = HeapSnapshot {
                t: f64::from(i),
                ..HeapSnapshot::default()
            };
            ev.push_heap(Some(1), format!("h{i}"), snap, 0.5);
        }
        assert_eq!(ev.goroutines.len(), GOROUTINE_RING);
        let heap = ev.heap_of(Some(1));
        assert_eq!(heap.len(), HEAP_RING);
        assert_eq!(heap[0].0, "h70");
        assert!(ev.heap_of(Some(2)).is_empty());
        // One taken right after the newest replaces it.
        let snap = HeapSnapshot {
            t: 99.2,
            ..HeapSnapshot::default()
        };
        ev.push_heap(Some(1), "breach".into(), snap, 15.0);
        let heap = ev.heap_of(Some(1));
        assert_eq!((heap.len(), heap[HEAP_RING - 1].0), (HEAP_RING, "breach"));
        assert_eq!(heap[HEAP_RING - 2].0, "h98");
    }

    #[test]
    fn kinds() {
        assert_eq!(Kind::of("heap_bytes"), Some(Kind::Heap));
        assert_eq!(Kind::of("rss_bytes"), Some(Kind::Heap));
        assert_eq!(Kind::of("goroutines"), Some(Kind::Goroutine));
        assert_eq!(Kind::of("threads"), Some(Kind::Threads));
        assert_eq!(Kind::of("open_fds"), Some(Kind::Fds));
        assert_eq!(Kind::of("tokio_tasks"), Some(Kind::Tasks));
        assert_eq!(Kind::of("cpu_seconds"), None);
    }
}
