//! Evidence for a diff: a capture (heap profile counts plus the resource
//! sample with its fd and socket breakdown) taken while every rule is `Ok`
//! (the baseline, refreshed every [`Evidence::DEFAULT_BASELINE_EVERY`]) and
//! one taken when a rule goes up (the breach). Serving both as heap profiles
//! lets `go tool pprof -diff_base baseline breach` name what grew.
//!
//! Captures are kept in memory, the last of each kind, and, with
//! [`Evidence::with_store`], written to a snapshot store as well.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use super::monitor::WatchHook;
use super::rules::Transition;
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

#[derive(Default)]
struct State {
    baseline: Option<Arc<Capture>>,
    breach: Option<Arc<Capture>>,
    captures_total: u64,
    last_baseline: Option<Instant>,
}

/// Keeps the last baseline and breach captures of a target.
pub struct Evidence {
    target: Target,
    baseline_every: Duration,
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
    /// Default time between baseline captures while healthy.
    pub const DEFAULT_BASELINE_EVERY: Duration = Duration::from_secs(60);

    /// Evidence for `target`, refreshing the baseline every `baseline_every`.
    pub fn new(target: Target, baseline_every: Duration) -> Evidence {
        Evidence {
            target,
            baseline_every,
            state: Mutex::new(State::default()),
            persist: None,
        }
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
                    write_capture(&store, &name, &capture);
                }
            });
        match spawned {
            Ok(_) => self.persist = Some(tx),
            Err(e) => tracing::warn!(error = %e, "leakscope: captures will not be stored"),
        }
        self
    }

    /// Captures waiting to be written, at most.
    pub const PERSIST_QUEUE: usize = 4;

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

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn capture(&self, trigger: String, fallback: &ResourceSample) -> Capture {
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
            heap: (self.target == Target::SelfProcess)
                .then(|| {
                    crate::collect::heap::exclusive(|| {
                        crate::collect::heap::dump()
                            .map(|raw| crate::collect::heap::HeapCounts::from_raw(&raw))
                    })
                })
                .and_then(|r| r.ok()),
        }
    }
}

impl WatchHook for Evidence {
    fn on_sample(&self, sample: &ResourceSample, all_ok: bool) {
        let due = all_ok
            && self
                .lock()
                .last_baseline
                .is_none_or(|t| t.elapsed() >= self.baseline_every);
        if due {
            let c = Arc::new(self.capture("baseline".into(), sample));
            self.persist(&c);
            let mut st = self.lock();
            st.baseline = Some(c);
            st.last_baseline = Some(Instant::now());
            st.captures_total += 1;
        }
    }

    fn on_transition(&self, t: &Transition, sample: &ResourceSample) {
        if t.to > t.from {
            let c = Arc::new(self.capture(t.rule.clone(), sample));
            tracing::info!(rule = %t.rule, "leakscope: captured evidence for the breach");
            self.persist(&c);
            let mut st = self.lock();
            st.breach = Some(c);
            st.captures_total += 1;
        }
    }
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
