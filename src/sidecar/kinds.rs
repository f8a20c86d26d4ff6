//! Naming the leak behind a thread, fd or tokio-task alert of a watched
//! target: healthy readings taken while the kind's rules are `ok`, one
//! reading at the alert, and the groups that grew between the oldest
//! healthy reading of the last five minutes and it ([`explain::counts`]).
//!
//! | kind | healthy readings (every `evidence_every`) | at the alert | names |
//! |---|---|---|---|
//! | fds, any target | the fds profile: a leakscope agent's `/debug/pprof/fds`, else the sidecar's listing of `/proc/PID/fd` | the same | what the new fds are (`tcp ESTABLISHED to 127.0.0.1:9000`); the code when the agent records creation sites |
//! | threads, leakscope agent | thread ids from `/proc/PID/task` (no signal sent), every 10 s at most | one `/debug/pprof/threads?debug=2` | the program's own code the new threads run |
//! | threads, other targets | thread ids, as above | names from `/proc/PID/task/*/comm` | the new threads' names, numbers folded (`conn-N`) |
//! | tokio tasks, leakscope agent | `/debug/pprof/tasks` | the same | spawn sites, when the agent records them |
//!
//! The readings are started from the watch thread's
//! [`WatchHook::on_sample`](leakscope_agent::watch::monitor::WatchHook::on_sample)
//! and run on the runtime: pulls through the target's endpoint (capped),
//! /proc reads and decoding on the blocking pool. The two profiles a
//! finding compares are stored (kinds `fds`, `threads`, `tasks`), so the
//! finding links the viewer's diff.
//!
//! [`explain::counts`]: leakscope_agent::explain::counts

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant, SystemTime};

use leakscope_agent::explain::Finding;
use leakscope_agent::explain::counts::{Counted, finding};
use leakscope_agent::profile::Profile;
use leakscope_agent::resource::ResourceSample;
use leakscope_agent::store::{NewSnapshot, Trigger};
use leakscope_agent::watch::monitor::Levels;

use super::counts::{Flavor, find_flavor};
use super::remote::{self, blocking};
use super::threads::{read_names, read_tids};
use super::{Event, Shared, TargetState};
use leakscope_agent::watch::baselines::{BASELINE_SPAN, Baselines};

pub use super::remote::{COUNT_PROFILE_CAP, THREAD_DUMP_CAP};
/// Longest time between readings of the thread ids while healthy.
pub const THREAD_IDS_EVERY: Duration = Duration::from_secs(10);

/// Where a reading came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    /// The sidecar's own listing of /proc.
    Proc,
    /// The target's leakscope agent.
    Agent,
}

/// One fds or tasks profile, reduced, with the bytes to store.
#[derive(Debug, Clone)]
pub struct Reading {
    time: SystemTime,
    origin: Origin,
    counted: Arc<Vec<Counted>>,
    /// Gzipped pprof.
    data: Arc<Vec<u8>>,
    sample: Option<ResourceSample>,
    /// Its snapshot id, once stored (a base can serve two findings).
    stored: Arc<OnceLock<String>>,
    /// Something the finding should say about how it was taken.
    note: Option<String>,
}

/// The healthy readings of one target.
#[derive(Debug, Default)]
pub struct Readings {
    fds: Baselines<Reading>,
    tasks: Baselines<Reading>,
    tids: Baselines<Arc<HashSet<u32>>>,
}

impl Readings {
    /// How many healthy readings are kept, per kind, for the API.
    pub fn kept(&self) -> serde_json::Value {
        serde_json::json!({
            "fds": self.fds.len(),
            "threads": self.tids.len(),
            "tasks": self.tasks.len(),
        })
    }
}

/// Which of the kinds the target's rules watch.
#[derive(Debug, Clone, Copy, Default)]
pub struct Watched {
    fds: bool,
    threads: bool,
    tasks: bool,
}

impl Watched {
    /// From the target's rules (a metric no rule watches is not read).
    pub fn of(rules: &[leakscope_agent::watch::rules::Rule]) -> Watched {
        let any = |m: &str| rules.iter().any(|r| r.metric == m);
        Watched {
            fds: any("open_fds"),
            threads: any("threads"),
            tasks: any("tokio_tasks"),
        }
    }
}

/// What the hook needs to start readings.
pub struct Schedule {
    /// The target's readings (shared with its state).
    pub readings: Arc<Mutex<Readings>>,
    /// Which kinds to read.
    pub watched: Watched,
    /// The evidence period; zero for no healthy readings.
    pub every: Duration,
    /// Whether the target has a pprof URL (tasks come only from one).
    pub has_url: bool,
    /// True while a reading task runs: one at a time per target, however
    /// slow its pulls.
    pub busy: Arc<AtomicBool>,
}

/// The kinds due, and when they were found due (while healthy).
#[derive(Debug, Clone, Copy)]
struct Due {
    at: Instant,
    fds: bool,
    tids: bool,
    tasks: bool,
}

type Link = (Weak<TargetState>, Weak<Shared>);

/// After each sample of `pid` (on the watch thread): starts the readings
/// that are due, for the kinds whose rules are all `ok`, on the runtime.
pub fn on_sample(
    schedule: &Schedule,
    runtime: &tokio::runtime::Handle,
    link: Option<&Link>,
    sample: &ResourceSample,
    levels: &Levels<'_>,
) {
    if schedule.every.is_zero() {
        return;
    }
    let Some(link) = link else {
        return;
    };
    let (w, now) = (schedule.watched, Instant::now());
    let every = schedule.every;
    if schedule.busy.load(Ordering::Acquire) {
        return;
    }
    let due = {
        let mut r = lock(&schedule.readings);
        let mut due = Due {
            at: now,
            fds: false,
            tids: false,
            tasks: false,
        };
        if w.fds && levels.ok_for(&["open_fds"]) && r.fds.due(every, now) {
            r.fds.start(now);
            due.fds = true;
        }
        if w.threads && levels.ok_for(&["threads"]) && r.tids.due(THREAD_IDS_EVERY.min(every), now)
        {
            r.tids.start(now);
            due.tids = true;
        }
        if schedule.has_url && w.tasks && levels.ok_for(&["tokio_tasks"]) && r.tasks.due(every, now)
        {
            r.tasks.start(now);
            due.tasks = true;
        }
        due
    };
    if !(due.fds || due.tids || due.tasks) {
        return;
    }
    // Only the watch thread starts readings: no other can set it meanwhile.
    schedule.busy.store(true, Ordering::Release);
    let (readings, link, sample) = (schedule.readings.clone(), link.clone(), sample.clone());
    let busy = Busy(schedule.busy.clone());
    // The target is upgraded on the runtime, never on the watch thread
    // (whose monitor it may be the last owner of).
    runtime.spawn(async move {
        let _busy = busy;
        if let (Some(t), Some(_shared)) = (link.0.upgrade(), link.1.upgrade()) {
            take_readings(&t, &readings, due, sample).await;
        }
    });
}

/// Clears a schedule's `busy` flag when the reading task ends, however.
struct Busy(Arc<AtomicBool>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

async fn take_readings(
    t: &TargetState,
    readings: &Mutex<Readings>,
    due: Due,
    sample: ResourceSample,
) {
    // Readings are kept as of when they were found due: while healthy.
    let (pid, at) = (sample.pid, due.at);
    if due.tids {
        match blocking(move || read_tids(pid).map_err(|e| e.to_string())).await {
            Ok(tids) => lock(readings).tids.push(pid, Arc::new(tids), at),
            Err(e) => tracing::debug!(pid, error = %e, "sidecar: no thread ids"),
        }
    }
    if due.fds {
        match read_fds(t, pid, Some(sample.clone())).await {
            Ok(r) => lock(readings).fds.push(pid, r, at),
            Err(e) => tracing::debug!(pid, error = %e, "sidecar: no fds listing"),
        }
    }
    if due.tasks {
        match known_flavor(t).await {
            // The URL did not answer: again at the next sample.
            Flavor::Unknown => lock(readings).tasks.retry(),
            Flavor::Agent => match read_agent(t, "/debug/pprof/tasks", Some(sample)).await {
                Ok(r) => lock(readings).tasks.push(pid, r, at),
                Err(e) => tracing::debug!(pid, error = %e, "sidecar: no tasks profile"),
            },
            Flavor::Go | Flavor::Other => {}
        }
    }
}

/// What serves the target's URL, asking it when that is not known yet for
/// this pid (`Unknown` without a URL, or when it does not answer).
async fn known_flavor(t: &TargetState) -> Flavor {
    if t.endpoint.is_none() {
        return Flavor::Unknown;
    }
    find_flavor(t).await.0
}

fn lock(readings: &Mutex<Readings>) -> std::sync::MutexGuard<'_, Readings> {
    readings.lock().unwrap_or_else(|e| e.into_inner())
}

/// A count profile pulled from the target's agent at `path`, reduced.
async fn read_agent(
    t: &TargetState,
    path: &str,
    sample: Option<ResourceSample>,
) -> Result<Reading, String> {
    let endpoint = super::pull::endpoint_of(t)?;
    let p = remote::count_profile(endpoint, path).await?;
    Ok(Reading {
        time: SystemTime::now(),
        origin: Origin::Agent,
        counted: Arc::new(p.counted),
        data: Arc::new(p.data),
        sample,
        stored: Arc::default(),
        note: None,
    })
}

/// The fds profile of `pid`: from its leakscope agent when it is one (the
/// agent may know which code opened them), else (or when that pull fails)
/// from /proc.
async fn read_fds(
    t: &TargetState,
    pid: u32,
    sample: Option<ResourceSample>,
) -> Result<Reading, String> {
    let mut note = None;
    if known_flavor(t).await == Flavor::Agent {
        match read_agent(t, "/debug/pprof/fds", sample.clone()).await {
            Ok(r) => return Ok(r),
            Err(e) => {
                note = Some(format!(
                    "the agent's fds profile could not be pulled ({e}): listed from /proc instead"
                ));
            }
        }
    }
    let time = SystemTime::now();
    let p = remote::proc_fds(pid).await?;
    Ok(Reading {
        time,
        origin: Origin::Proc,
        counted: Arc::new(p.counted),
        data: Arc::new(p.data),
        sample,
        stored: Arc::default(),
        note,
    })
}

/// `counted` without code sites (to compare a listing that has them with
/// one that cannot).
fn without_sites(counted: &[Counted]) -> Vec<Counted> {
    counted
        .iter()
        .cloned()
        .map(|mut c| {
            c.site = None;
            c
        })
        .collect()
}

/// "the oldest healthy READING of the last 5 minutes, 42 s before the alert".
fn base_words(what: &str, at: Instant, now: Instant) -> String {
    format!(
        "base: the oldest healthy {what} of the last {} minutes, {:.0} s before the alert",
        BASELINE_SPAN.as_secs() / 60,
        now.saturating_duration_since(at).as_secs_f64()
    )
}

/// The fds finding of `pid`.
pub async fn explain_fds(
    shared: &Arc<Shared>,
    t: &Arc<TargetState>,
    pid: u32,
    sample: ResourceSample,
    labels: BTreeMap<String, String>,
) -> Finding {
    let new = match read_fds(t, pid, Some(sample)).await {
        Ok(r) => r,
        Err(e) => return Finding::unknown("fds", "fds", format!("no fds listing: {e}")),
    };
    let now = Instant::now();
    let Some((at, base)) = lock(&t.readings).fds.base(pid, now) else {
        return Finding::unknown(
            "fds",
            "fds",
            "no healthy fds listing of this process to compare with (the rule fired before the \
             first one was taken)",
        );
    };
    let (mut b, mut n) = (base.counted.to_vec(), new.counted.to_vec());
    let mut notes = Vec::new();
    let has_sites = |c: &[Counted]| c.iter().any(|c| c.site.is_some());
    if base.origin != new.origin && (has_sites(&b) || has_sites(&n)) {
        // One side knows the code, the other cannot: compare what.
        b = without_sites(&b);
        n = without_sites(&n);
        notes.push(
            "one listing came from the agent and the other from /proc: compared by what the fds \
             are only"
                .to_owned(),
        );
    }
    let missing = match new.origin {
        Origin::Proc => {
            "the sidecar lists them from /proc/PID/fd, outside the process: what each fd is, not \
             the code that opened it"
        }
        Origin::Agent => "the agent's fds profile records no creation sites",
    };
    let mut f = finding("fds", "fds", &b, &n, missing);
    f.detail
        .push_str(&format!("; {}", base_words("fds listing", at, now)));
    notes.extend(base.note.clone());
    notes.extend(new.note.clone());
    for note in notes {
        f.detail.push_str(&format!("; {note}"));
    }
    let base = (&base, Taken::Healthy);
    link_stored(shared, t, "fds", base, &new, labels, &mut f).await;
    f
}

/// The tasks finding of `pid` (a leakscope agent only).
pub async fn explain_tasks(
    shared: &Arc<Shared>,
    t: &Arc<TargetState>,
    pid: u32,
    sample: ResourceSample,
    labels: BTreeMap<String, String>,
) -> Option<Finding> {
    if known_flavor(t).await != Flavor::Agent {
        return None;
    }
    let new = match read_agent(t, "/debug/pprof/tasks", Some(sample)).await {
        Ok(r) => r,
        Err(e) => {
            return Some(Finding::unknown(
                "tasks",
                "tasks",
                format!("no tasks profile from the agent: {e}"),
            ));
        }
    };
    let now = Instant::now();
    let Some((at, base)) = lock(&t.readings).tasks.base(pid, now) else {
        return Some(Finding::unknown(
            "tasks",
            "tasks",
            "no healthy tasks profile of this process to compare with (the rule fired before the \
             first one was taken)",
        ));
    };
    let mut f = remote::tasks_finding(&base.counted, &new.counted);
    f.detail
        .push_str(&format!("; {}", base_words("tasks profile", at, now)));
    let base = (&base, Taken::Healthy);
    link_stored(shared, t, "tasks", base, &new, labels, &mut f).await;
    Some(f)
}

/// The threads finding of `pid`: the threads that are new since the
/// oldest healthy reading of the thread ids, by their code (an agent's
/// dump) or by name (/proc).
pub async fn explain_threads(
    shared: &Arc<Shared>,
    t: &Arc<TargetState>,
    pid: u32,
    sample: ResourceSample,
    labels: BTreeMap<String, String>,
) -> Finding {
    let now = Instant::now();
    let Some((at, tids)) = lock(&t.readings).tids.base(pid, now) else {
        return Finding::unknown(
            "threads",
            "threads",
            "no healthy reading of the thread ids to compare with (the rule fired before the \
             first one was taken)",
        );
    };
    let kind = known_flavor(t).await;
    let mut note = None;
    if kind == Flavor::Agent {
        match dump_threads(t).await {
            Ok(dump) => {
                let time = SystemTime::now();
                let c = super::threads::compare_dump(&tids, &dump, time);
                let mut f = c.finding;
                f.detail.push_str(&format!(
                    "; {}, as they are in the agent's thread dump at the alert",
                    base_words("reading of the thread ids", at, now)
                ));
                for n in &dump.notes {
                    f.detail.push_str(&format!("; the dump says: {n}"));
                }
                store_threads(shared, t, (c.base, c.new), time, &sample, labels, &mut f).await;
                return f;
            }
            Err(e) => {
                note = Some(format!(
                    "no thread dump from the agent ({e}): named by the threads' names instead"
                ));
            }
        }
    }
    let names = match blocking(move || read_names(pid).map_err(|e| e.to_string())).await {
        Ok(n) => n,
        Err(e) => {
            return Finding::unknown(
                "threads",
                "threads",
                format!("the threads of pid {pid} could not be read: {e}"),
            );
        }
    };
    let time = SystemTime::now();
    let missing = if kind == Flavor::Go {
        super::threads::MISSING_GO
    } else {
        "the sidecar reads the threads' names from /proc/PID/task, outside the process: the code \
         a thread runs is not known from there (a leakscope agent's pprof URL gives it)"
    };
    let c = super::threads::compare_names(&tids, &names, missing, time);
    let mut f = c.finding;
    f.detail.push_str(&format!(
        "; {}, as they are at the alert",
        base_words("reading of the thread ids", at, now)
    ));
    if let Some(note) = note {
        f.detail.push_str(&format!("; {note}"));
    }
    store_threads(shared, t, (c.base, c.new), time, &sample, labels, &mut f).await;
    f
}

/// Stores the two threads profiles a finding compared and links it to
/// them.
async fn store_threads(
    shared: &Arc<Shared>,
    t: &Arc<TargetState>,
    (base, new): (Profile, Profile),
    time: SystemTime,
    sample: &ResourceSample,
    labels: BTreeMap<String, String>,
    f: &mut Finding,
) {
    let (base, new) = threads_readings(base, new, time, sample).await;
    link_stored(
        shared,
        t,
        "threads",
        (&base, Taken::AtAlert),
        &new,
        labels,
        f,
    )
    .await;
}

/// The agent's thread dump (`debug=2`) of the target ([`remote::thread_dump`]).
async fn dump_threads(t: &TargetState) -> Result<super::threads::ThreadDump, String> {
    let endpoint = super::pull::endpoint_of(t)?;
    remote::thread_dump(endpoint).await
}

/// The two threads profiles a finding compared, as readings to store.
async fn threads_readings(
    base: Profile,
    new: Profile,
    time: SystemTime,
    sample: &ResourceSample,
) -> (Reading, Reading) {
    let (b, n) = blocking(move || Ok((base.encode_gzip(), new.encode_gzip())))
        .await
        .unwrap_or_default();
    let reading = |data: Vec<u8>| Reading {
        time,
        origin: Origin::Proc,
        counted: Arc::default(),
        data: Arc::new(data),
        sample: Some(sample.clone()),
        stored: Arc::default(),
        note: None,
    };
    (reading(b), reading(n))
}

/// Which side of a finding a stored profile is, and how it was taken.
#[derive(Clone, Copy)]
enum Taken {
    /// A healthy reading, stored once (it may serve several findings).
    Healthy,
    /// Made at the alert (a threads base: the threads alive at the healthy
    /// reading, as they are at the alert).
    AtAlert,
}

/// Stores the base (once) and the new profile of a finding of `kind` and
/// points the finding at them and at their diff. `labels` (the rule) go
/// with what was made at the alert; the target's labels with both.
async fn link_stored(
    shared: &Arc<Shared>,
    t: &Arc<TargetState>,
    kind: &'static str,
    (base, taken): (&Reading, Taken),
    new: &Reading,
    labels: BTreeMap<String, String>,
    f: &mut Finding,
) {
    if base.data.is_empty() || new.data.is_empty() {
        return;
    }
    let mut labels = labels;
    for (k, v) in &t.spec.labels {
        labels.entry(k.clone()).or_insert_with(|| v.clone());
    }
    let base_id = match (base.stored.get(), taken) {
        (Some(id), _) => Some(id.clone()),
        (None, Taken::Healthy) => {
            let plain = t.spec.labels.clone();
            let id = store(shared, t, kind, Trigger::Schedule, base, plain).await;
            id.map(|id| base.stored.get_or_init(|| id).clone())
        }
        (None, Taken::AtAlert) => {
            store(shared, t, kind, Trigger::Breach, base, labels.clone()).await
        }
    };
    let new_id = store(shared, t, kind, Trigger::Breach, new, labels).await;
    if let (Some(b), Some(n)) = (base_id, new_id) {
        f.url = super::naming::diff_url(shared, &b, &n, kind);
        f.base = Some(b);
        f.new = Some(n);
    }
}

/// Stores one reading; its id, `None` (reported) when the store refused.
async fn store(
    shared: &Arc<Shared>,
    t: &Arc<TargetState>,
    kind: &'static str,
    trigger: Trigger,
    reading: &Reading,
    labels: BTreeMap<String, String>,
) -> Option<String> {
    let (store, name) = (shared.store.clone(), t.spec.name.clone());
    let r = reading.clone();
    let put = blocking(move || {
        store
            .put(NewSnapshot {
                target: &name,
                pid: r.sample.as_ref().map(|s| s.pid),
                kind,
                trigger,
                labels,
                sample: r.sample.clone(),
                time: Some(r.time),
                data: &r.data,
            })
            .map_err(|e| e.to_string())
    })
    .await;
    match put {
        Ok(meta) => {
            t.snapshots_total.fetch_add(1, Ordering::Relaxed);
            let id = meta.id.clone();
            (shared.events)(Event::Snapshot {
                meta: Box::new(meta),
                growth: None,
            });
            Some(id)
        }
        Err(e) => {
            (shared.events)(Event::PullFailed {
                target: t.spec.name.clone(),
                kind: kind.to_owned(),
                error: format!("storing the {kind} profile: {e}"),
            });
            None
        }
    }
}
