//! Evidence for naming a leak, kept by the agent's watch loop on its own
//! process:
//!
//! - a ring of heap snapshots ([`HeapRing`]), one a minute
//!   (the evidence period, [`Evidence::DEFAULT_EVERY`]) whatever the rules say, so a heap alert
//!   names the allocation site that keeps growing across them and the
//!   viewer shows leak suspects without a store;
//! - the last healthy capture (heap counts plus the resource sample with
//!   its fd and socket breakdown, refreshed every
//!   the evidence period while every rule is `Ok`) and the
//!   capture taken when a rule goes up, served for
//!   `go tool pprof -diff_base baseline breach`, and written to a snapshot
//!   store with [`Evidence::with_store`].
//!
//! - for threads, the ids of the threads alive while the thread rules are
//!   `Ok` (read from `/proc/self/task`, no signal sent): when a thread rule
//!   fires, one thread dump is taken and the threads that are new since
//!   are grouped by the program's own code they run in.
//!
//! - for fds, an fds profile (what every fd is) taken every
//!   evidence period while the fd rules are `Ok`, compared with one
//!   taken when an fd rule fires.
//!
//! - for tokio tasks (given the runtime, [`Evidence::with_runtime`]), a
//!   tasks profile (live tasks by spawn site, with tokio's hooks) taken
//!   every evidence period while the task rules are `Ok`.
//!
//! As a [`WatchHook`] it answers [`WatchHook::explain`] with a [`Finding`]
//! for the rules on the heap (`heap_bytes`, `rss_bytes`), threads, fds and
//! tasks;
//! the profiles a finding compares are kept (the last few) for the viewer,
//! as `KIND-base-N` and `KIND-new-N`.

#[cfg(feature = "heap")]
mod heap_ring;

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

#[cfg(feature = "heap")]
pub use heap_ring::{HeapRing, RingSnapshot};

use super::baselines::Baselines;
use super::monitor::{Levels, WatchHook};
use super::rules::Transition;
use crate::explain::Finding;
use crate::profile::Profile;
use crate::resource::{ResourceSample, SampleOptions, Target, sample};

/// One capture.
#[derive(Debug, Clone)]
pub struct Capture {
    /// When it was taken.
    pub at: SystemTime,
    /// `"baseline"`, or the rule whose breach triggered it.
    pub trigger: String,
    /// The resource sample at capture time, with the breakdowns.
    pub sample: ResourceSample,
    /// Heap profile counts, when heap profiling is on.
    #[cfg(feature = "heap")]
    pub heap: Option<crate::collect::heap::HeapCounts>,
}

/// The kind of evidence that names a leak of `metric`: `threads`,
/// `tasks`, `fds`, `heap` or `goroutine`.
pub fn kind_of(metric: &str) -> Option<&'static str> {
    match metric {
        "threads" => Some("threads"),
        "tokio_tasks" => Some("tasks"),
        "open_fds" => Some("fds"),
        "heap_bytes" | "rss_bytes" => Some("heap"),
        "goroutines" => Some("goroutine"),
        _ => None,
    }
}

struct State {
    baseline: Option<Arc<Capture>>,
    breach: Option<Arc<Capture>>,
    captures_total: u64,
    last_baseline: Option<Instant>,
    #[cfg(feature = "heap")]
    ring: HeapRing,
    last_ring: Option<Instant>,
    /// Threads alive while the thread rules were `Ok`, recent readings.
    thread_tids: Baselines<HashSet<u32>>,
    /// fds profiles taken while the fd rules were `Ok`.
    fds_base: Baselines<Profile>,
    /// Tasks profiles taken while the task rules were `Ok`.
    #[cfg_attr(not(feature = "server"), allow(dead_code))]
    tasks_base: Baselines<Profile>,
    /// Profiles compared by recent findings, newest last.
    kept: VecDeque<KeptProfile>,
    findings: u64,
}

/// A profile a finding compared, kept for the viewer.
#[derive(Debug, Clone)]
pub struct KeptProfile {
    /// `KIND-base-N` or `KIND-new-N`.
    pub id: String,
    /// `threads`, `tasks`, `fds`.
    pub kind: &'static str,
    /// When it was taken.
    pub time: SystemTime,
    /// The profile.
    pub profile: Arc<Profile>,
}

/// Keeps a target's heap ring and its last baseline and breach captures.
pub struct Evidence {
    target: Target,
    baseline_every: Duration,
    viewer: Option<String>,
    #[cfg(feature = "server")]
    runtime: Option<tokio::runtime::Handle>,
    state: Mutex<State>,
    /// Hands captures to the thread that writes them to the store.
    persist: Option<std::sync::mpsc::SyncSender<Arc<Capture>>>,
}

impl std::fmt::Debug for Evidence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Evidence")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

impl Evidence {
    /// Default time between the heap ring's snapshots, the healthy fds
    /// profiles and the baseline captures: the evidence period.
    pub const DEFAULT_EVERY: Duration = Duration::from_secs(60);
    /// Heap snapshots the ring keeps: half an hour at one a minute.
    pub const RING_SNAPSHOTS: usize = 30;
    /// Captures waiting to be written, at most.
    pub const PERSIST_QUEUE: usize = 4;
    /// Profiles of findings kept for the viewer, at most.
    pub const KEPT_PROFILES: usize = 8;
    /// Longest time between readings of the thread ids while healthy.
    pub const THREAD_IDS_EVERY: Duration = Duration::from_secs(10);

    /// Evidence for `target`, taking a heap snapshot for the ring, a healthy
    /// fds profile and a baseline capture every `every` (the evidence
    /// period; shorter makes findings quicker and costs a heap dump each).
    pub fn new(target: Target, every: Duration) -> Evidence {
        let baseline_every = every;
        Evidence {
            target,
            baseline_every,
            viewer: None,
            #[cfg(feature = "server")]
            runtime: None,
            state: Mutex::new(State {
                baseline: None,
                breach: None,
                captures_total: 0,
                last_baseline: None,
                #[cfg(feature = "heap")]
                ring: HeapRing::new(Self::RING_SNAPSHOTS),
                last_ring: None,
                thread_tids: Baselines::default(),
                fds_base: Baselines::default(),
                tasks_base: Baselines::default(),
                kept: VecDeque::new(),
                findings: 0,
            }),
            persist: None,
        }
    }

    /// Findings link to diffs of this viewer (its path, such as
    /// `/debug/pprof/ui`), where the ring's snapshots are `heap-SEQ`.
    #[must_use]
    pub fn with_viewer(mut self, path: impl Into<String>) -> Evidence {
        self.viewer = Some(path.into());
        self
    }

    /// The tokio runtime whose tasks a task rule is about (the agent's own
    /// runtime): its tasks profile names the spawn sites of the tasks that
    /// grew.
    #[cfg(feature = "server")]
    #[must_use]
    pub fn with_runtime(mut self, handle: tokio::runtime::Handle) -> Evidence {
        self.runtime = Some(handle);
        self
    }

    /// Also writes every capture to `store` as a heap snapshot of target
    /// `name` (trigger `schedule` for baselines, `breach` with a `rule`
    /// label for breaches), on a thread of its own: symbolizing takes tens
    /// of milliseconds. At most [`Self::PERSIST_QUEUE`] captures wait; more
    /// are dropped with a warning rather than held in memory.
    #[must_use]
    pub fn with_store(mut self, store: crate::store::Store, name: String) -> Evidence {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Arc<Capture>>(Self::PERSIST_QUEUE);
        let spawned = std::thread::Builder::new()
            .name("leakscope-persist".into())
            .spawn(move || {
                for capture in rx {
                    #[cfg(feature = "heap")]
                    crate::heap::agent_work(|| write_capture(&store, &name, &capture));
                    #[cfg(not(feature = "heap"))]
                    write_capture(&store, &name, &capture);
                }
            });
        match spawned {
            Ok(_) => self.persist = Some(tx),
            Err(e) => tracing::warn!(error = %e, "leakscope: captures will not be stored"),
        }
        self
    }

    fn persist(&self, capture: &Arc<Capture>) {
        if let Some(tx) = &self.persist
            && tx.try_send(Arc::clone(capture)).is_err()
        {
            tracing::warn!("leakscope: the capture store is behind; a capture was not stored");
        }
    }

    /// The last capture from the healthy period.
    pub fn baseline(&self) -> Option<Arc<Capture>> {
        self.lock().baseline.clone()
    }

    /// The last capture taken on a breach.
    pub fn breach(&self) -> Option<Arc<Capture>> {
        self.lock().breach.clone()
    }

    /// Captures taken since start.
    pub fn captures_total(&self) -> u64 {
        self.lock().captures_total
    }

    /// Runs `f` on the heap ring.
    #[cfg(feature = "heap")]
    pub fn with_ring<T>(&self, f: impl FnOnce(&HeapRing) -> T) -> T {
        f(&self.lock().ring)
    }

    /// The profiles recent findings compared, oldest first.
    pub fn kept_profiles(&self) -> Vec<KeptProfile> {
        self.lock().kept.iter().cloned().collect()
    }

    /// One of [`Evidence::kept_profiles`], by id.
    pub fn kept_profile(&self, id: &str) -> Option<Arc<Profile>> {
        self.lock()
            .kept
            .iter()
            .find(|k| k.id == id)
            .map(|k| k.profile.clone())
    }

    /// Keeps the two profiles a finding of `kind` compared and points the
    /// finding at them (and at their diff, with a viewer).
    fn keep(
        &self,
        kind: &'static str,
        sample_type: &str,
        base: Profile,
        new: Profile,
        finding: &mut Finding,
    ) {
        let time = SystemTime::now();
        let mut st = self.lock();
        st.findings += 1;
        let n = st.findings;
        let (base_id, new_id) = (format!("{kind}-base-{n}"), format!("{kind}-new-{n}"));
        for (id, p) in [(&base_id, base), (&new_id, new)] {
            st.kept.push_back(KeptProfile {
                id: id.clone(),
                kind,
                time,
                profile: Arc::new(p),
            });
        }
        while st.kept.len() > Self::KEPT_PROFILES {
            st.kept.pop_front();
        }
        finding.url = self
            .viewer
            .as_ref()
            .map(|v| format!("{v}/diff?base={base_id}&new={new_id}&type={sample_type}"));
        finding.base = Some(base_id);
        finding.new = Some(new_id);
    }

    /// The threads finding: one dump, the threads new since the last
    /// healthy reading of thread ids grouped by their own code.
    #[cfg(feature = "cpu")]
    fn threads_finding(&self) -> Finding {
        use crate::collect::threads::build;
        use crate::explain::counts::{counted, finding};
        let raw = match crate::threads::dump(&crate::threads::ThreadDumpOptions::default()) {
            Ok(raw) => raw,
            Err(e) => {
                return Finding::unknown("threads", "threads", format!("no thread dump: {e}"));
            }
        };
        let Some(tids) = self
            .lock()
            .thread_tids
            .base(self.pid(), Instant::now())
            .map(|(_, v)| v)
        else {
            return Finding::unknown(
                "threads",
                "threads",
                "no healthy reading of the threads to compare with (the rule fired before one was taken)",
            );
        };
        let mut before = raw.clone();
        before.threads.retain(|t| tids.contains(&t.tid));
        before.unanswered.retain(|t| tids.contains(&t.tid));
        let symbolizer = crate::symbolize::Symbolizer::global();
        let (base, new) = (build(&before, symbolizer), build(&raw, symbolizer));
        let mut f = finding(
            "threads",
            "threads",
            &counted(&base),
            &counted(&new),
            "they run only library code (no frame of the program's own on their stacks)",
        );
        f.detail
            .push_str("; base: the threads alive at the oldest healthy reading of the last five minutes, as they are now");
        self.keep("threads", "threads", base, new, &mut f);
        f
    }

    /// The fds finding: what the fds that grew are, against the oldest
    /// healthy fds profile of the last five minutes.
    fn fds_finding(&self) -> Finding {
        use crate::explain::counts::{counted, finding};
        let Some(base) = self
            .lock()
            .fds_base
            .base(self.pid(), Instant::now())
            .map(|(_, v)| v)
        else {
            return Finding::unknown(
                "fds",
                "fds",
                "no healthy fds profile to compare with (the rule fired before one was taken)",
            );
        };
        let new = match crate::collect::fds::capture(self.target) {
            Ok(p) => p,
            Err(e) => return Finding::unknown("fds", "fds", format!("no fds listing: {e}")),
        };
        let mut f = finding(
            "fds",
            "fds",
            &counted(&base),
            &counted(&new),
            "leakscope knows what each fd is, not which code opened it (build with the \
             fd-sites feature to record that)",
        );
        self.keep("fds", "fds", base, new, &mut f);
        f
    }

    /// The tasks finding: the spawn sites of the tasks that grew, against
    /// the oldest healthy tasks profile of the last five minutes.
    #[cfg(feature = "server")]
    fn tasks_finding(&self) -> Option<Finding> {
        use crate::explain::counts::{counted, finding, total};
        let handle = self.runtime.as_ref()?;
        let base = self
            .lock()
            .tasks_base
            .base(self.pid(), Instant::now())
            .map(|(_, v)| v);
        let new = crate::tasks::capture_profile(handle);
        let Some(base) = base else {
            return Some(Finding::unknown(
                "tasks",
                "tasks",
                "no healthy tasks profile to compare with (the rule fired before one was taken)",
            ));
        };
        let (b, n) = (counted(&base), counted(&new));
        let mut f = if crate::tasks::hooks_installed() {
            finding(
                "tasks",
                "tasks",
                &b,
                &n,
                "the tasks that grew were spawned from library code only",
            )
        } else {
            let mut f = Finding::unknown(
                "tasks",
                "tasks",
                format!(
                    "tokio tasks {} -> {} ({:+}): spawn sites unknown; tokio records them only in \
                     services built with --cfg tokio_unstable whose runtime is built with \
                     leakscope_agent::tasks::install_hooks",
                    total(&b),
                    total(&n),
                    total(&n) - total(&b)
                ),
            );
            f.groups = crate::explain::counts::grown(&b, &n);
            f
        };
        self.keep("tasks", "tasks", base, new, &mut f);
        Some(f)
    }

    /// The pid of the target, for its baselines.
    fn pid(&self) -> u32 {
        match self.target {
            Target::SelfProcess => std::process::id(),
            Target::Pid(p) => p,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Dumps the heap (this process only, heap profiling on) into the ring;
    /// the counts.
    #[cfg(feature = "heap")]
    fn ring_dump(&self) -> Option<crate::collect::heap::HeapCounts> {
        if self.target != Target::SelfProcess {
            return None;
        }
        let counts = crate::collect::heap::exclusive(|| {
            crate::collect::heap::dump().map(|raw| crate::collect::heap::HeapCounts::from_raw(&raw))
        })
        .ok()?;
        let mut st = self.lock();
        st.ring.push(&counts);
        st.last_ring = Some(Instant::now());
        Some(counts)
    }

    fn capture(
        &self,
        trigger: String,
        fallback: &ResourceSample,
        #[cfg(feature = "heap")] heap: Option<crate::collect::heap::HeapCounts>,
    ) -> Capture {
        let full = SampleOptions {
            fd_breakdown: true,
            thread_names: true,
            tcp_states: true,
        };
        let sample = sample(self.target, &full).unwrap_or_else(|_| fallback.clone());
        Capture {
            at: SystemTime::now(),
            trigger,
            sample,
            #[cfg(feature = "heap")]
            heap,
        }
    }

    /// The heap finding over the ring (after a fresh snapshot), with the
    /// ids of its first and last snapshots.
    #[cfg(feature = "heap")]
    fn heap_finding(&self) -> Finding {
        let (snaps, first, last) = {
            let st = self.lock();
            let first = st.ring.snapshots().next().map(|s| s.seq);
            let last = st.ring.snapshots().last().map(|s| s.seq);
            (
                st.ring.reduce(crate::symbolize::Symbolizer::global()),
                first,
                last,
            )
        };
        let trends = crate::explain::heap::site_trends(&snaps, 0.0);
        let mut finding = crate::explain::heap::finding(&trends);
        if let (Some(first), Some(last)) = (first, last)
            && first != last
        {
            finding.base = Some(format!("heap-{first}"));
            finding.new = Some(format!("heap-{last}"));
            finding.url = self
                .viewer
                .as_ref()
                .map(|v| format!("{v}/diff?base=heap-{first}&new=heap-{last}&type=inuse_space"));
        }
        finding
    }
}

impl WatchHook for Evidence {
    fn on_sample(&self, sample: &ResourceSample, levels: &Levels<'_>) {
        let (ring_due, baseline_due) = {
            let st = self.lock();
            (
                st.last_ring
                    .is_none_or(|t| t.elapsed() >= self.baseline_every),
                levels.all_ok()
                    && st
                        .last_baseline
                        .is_none_or(|t| t.elapsed() >= self.baseline_every),
            )
        };
        #[cfg(feature = "heap")]
        let heap = if ring_due || baseline_due {
            self.ring_dump()
        } else {
            None
        };
        #[cfg(not(feature = "heap"))]
        let _ = ring_due;
        if self.target == Target::SelfProcess && levels.ok_for(&["threads"]) {
            let every = Self::THREAD_IDS_EVERY.min(self.baseline_every);
            if self.lock().thread_tids.due(every, Instant::now()) {
                self.lock().thread_tids.start(Instant::now());
                if let Some(tids) = thread_ids() {
                    self.lock()
                        .thread_tids
                        .push(self.pid(), tids, Instant::now());
                }
            }
        }
        #[cfg(feature = "server")]
        if let Some(handle) = &self.runtime
            && levels.ok_for(&["tokio_tasks"])
            && self
                .lock()
                .tasks_base
                .due(self.baseline_every, Instant::now())
        {
            self.lock().tasks_base.start(Instant::now());
            let p = crate::tasks::capture_profile(handle);
            self.lock().tasks_base.push(self.pid(), p, Instant::now());
        }
        if levels.ok_for(&["open_fds"])
            && self
                .lock()
                .fds_base
                .due(self.baseline_every, Instant::now())
        {
            self.lock().fds_base.start(Instant::now());
            if let Ok(p) = crate::collect::fds::capture(self.target) {
                self.lock().fds_base.push(self.pid(), p, Instant::now());
            }
        }
        if baseline_due {
            let c = Arc::new(self.capture(
                "baseline".into(),
                sample,
                #[cfg(feature = "heap")]
                heap,
            ));
            self.persist(&c);
            let mut st = self.lock();
            st.baseline = Some(c);
            st.last_baseline = Some(Instant::now());
            st.captures_total += 1;
        }
    }

    fn explain(&self, t: &Transition, sample: &ResourceSample) -> Option<Finding> {
        match kind_of(&t.metric)? {
            #[cfg(feature = "heap")]
            "heap" if self.target == Target::SelfProcess => {
                let counts = self.ring_dump();
                let finding = self.heap_finding();
                let c = Arc::new(self.capture(t.rule.clone(), sample, counts));
                self.persist(&c);
                let mut st = self.lock();
                st.breach = Some(c);
                st.captures_total += 1;
                Some(finding)
            }
            #[cfg(feature = "cpu")]
            "threads" if self.target == Target::SelfProcess => Some(self.threads_finding()),
            "fds" => Some(self.fds_finding()),
            #[cfg(feature = "server")]
            "tasks" => self.tasks_finding(),
            _ => {
                let _ = sample;
                None
            }
        }
    }

    fn on_transition(&self, t: &Transition, sample: &ResourceSample) {
        // Heap rules took their breach capture while explaining.
        if t.to <= t.from || kind_of(&t.metric) == Some("heap") {
            return;
        }
        #[cfg(feature = "heap")]
        let heap = self.ring_dump();
        let c = Arc::new(self.capture(
            t.rule.clone(),
            sample,
            #[cfg(feature = "heap")]
            heap,
        ));
        tracing::info!(rule = %t.rule, "leakscope: captured evidence for the breach");
        self.persist(&c);
        let mut st = self.lock();
        st.breach = Some(c);
        st.captures_total += 1;
    }
}

/// Ids of this process's threads, from `/proc/self/task`.
fn thread_ids() -> Option<HashSet<u32>> {
    let dir = std::fs::read_dir("/proc/self/task").ok()?;
    Some(
        dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect(),
    )
}

/// Symbolizes, encodes and stores one capture (heap profiling on).
fn write_capture(store: &crate::store::Store, name: &str, capture: &Capture) {
    #[cfg(feature = "heap")]
    {
        let Some(counts) = &capture.heap else {
            return;
        };
        let bytes = crate::collect::heap::exclusive(|| {
            crate::collect::heap::build(
                counts,
                crate::collect::heap::HeapView::Heap,
                None,
                crate::symbolize::Symbolizer::global(),
            )
            .encode_gzip()
        });
        let baseline = capture.trigger == "baseline";
        let mut labels = std::collections::BTreeMap::new();
        if !baseline {
            labels.insert("rule".to_owned(), capture.trigger.clone());
        }
        let put = store.put(crate::store::NewSnapshot {
            target: name,
            pid: Some(capture.sample.pid),
            kind: "heap",
            trigger: if baseline {
                crate::store::Trigger::Schedule
            } else {
                crate::store::Trigger::Breach
            },
            labels,
            sample: Some(capture.sample.clone()),
            time: Some(capture.at),
            data: &bytes,
        });
        if let Err(e) = put {
            tracing::warn!(error = %e, "leakscope: could not store the capture");
        }
    }
    #[cfg(not(feature = "heap"))]
    let _ = (store, name, capture);
}
