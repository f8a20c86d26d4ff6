//! The web viewer wired to leakscope's parts: a target view of any watch
//! loop, and the in-process agent's pages at `/debug/pprof/ui/`
//! ([`AgentBuilderExt::with_ui`]), next to its `/debug/pprof/*` routes.
//!
//! ```no_run
//! use leakscope::ui::AgentBuilderExt;
//! # async fn f() -> Result<(), leakscope::agent::Error> {
//! let agent = leakscope::AgentBuilder::new().with_ui().spawn().await?;
//! println!("viewer at http://{}/debug/pprof/ui/", agent.local_addr());
//! # Ok(()) }
//! ```

use std::sync::Arc;

use std::time::SystemTime;

use leakscope_agent::collect::unix_seconds;
use leakscope_agent::explain::heap::HeapSnapshot;
use leakscope_agent::profile::Profile;
use leakscope_agent::resource::ResourceSample;
use leakscope_agent::store::ListFilter;
use leakscope_agent::watch::evidence::Evidence;
use leakscope_agent::watch::monitor::{METRICS, Monitor};
use leakscope_agent::watch::rules::{Condition, Rule};
use leakscope_agent::{AgentBuilder, AgentParts};
use leakscope_viewer::web::{AlertView, MetricView, SnapshotView, Source, TargetView, Threshold};

/// Where the agent's pages live.
pub const AGENT_UI: &str = "/debug/pprof/ui";

/// Threshold lines of `metric` from `rules` (absolute lines, and ratio
/// lines once the fd limit is known).
pub fn thresholds(rules: &[Rule], metric: &str, last: Option<&ResourceSample>) -> Vec<Threshold> {
    let mut out = Vec::new();
    for r in rules.iter().filter(|r| r.metric == metric) {
        let (warning, critical, scale) = match r.condition {
            Condition::Above { warning, critical } => (warning, critical, Some(1.0)),
            Condition::RatioOf { warning, critical } => (
                warning,
                critical,
                last.and_then(|s| s.fd_limit).map(|l| l as f64),
            ),
            _ => (None, None, None),
        };
        let Some(scale) = scale else { continue };
        for (label, v) in [("warning", warning), ("critical", critical)] {
            if let Some(v) = v {
                out.push(Threshold {
                    label: label.into(),
                    value: v * scale,
                });
            }
        }
    }
    out
}

/// The last breakdown of a sample, grouped for a table.
pub fn breakdown(s: &ResourceSample) -> Vec<(String, String, u64)> {
    let mut out = Vec::new();
    if let Some(k) = &s.fds_by_kind {
        out.extend(
            k.iter()
                .filter(|(_, n)| *n > 0)
                .map(|(k, n)| ("fds by kind".to_owned(), k.to_owned(), n)),
        );
    }
    if let Some(t) = &s.tcp_by_state {
        out.extend(
            t.iter()
                .map(|(st, n)| ("TCP sockets".to_owned(), st.as_str().to_owned(), *n)),
        );
    }
    if let Some(t) = &s.threads_by_name {
        out.extend(
            t.iter()
                .take(12)
                .map(|(name, n)| ("threads by name".to_owned(), name.clone(), *n)),
        );
    }
    out
}

/// What the pages show of one watch loop.
pub fn target_view(name: &str, monitor: &Monitor) -> TargetView {
    let v = monitor.view();
    let mut metrics: Vec<MetricView> = METRICS
        .iter()
        .filter(|m| **m != "cpu_seconds")
        .filter_map(|m| {
            let points = monitor.series(m);
            (!points.is_empty()).then(|| MetricView {
                name: (*m).to_owned(),
                points,
                thresholds: thresholds(monitor.rules(), m, v.last.as_ref()),
                unit: if m.ends_with("_bytes") { "bytes" } else { "" }.into(),
                lines: Vec::new(),
            })
        })
        .collect();
    // The breakdowns, one chart each with a line per kind or state.
    let names = monitor.series_names();
    for (prefix, title) in [
        ("fds_by_kind:", "fds by kind"),
        ("tcp:", "TCP sockets by state"),
    ] {
        let lines: Vec<(String, Vec<(f64, f64)>)> = names
            .iter()
            .filter_map(|n| n.strip_prefix(prefix).map(|k| (k, n)))
            .map(|(k, n)| (k.to_owned(), monitor.series(n)))
            .filter(|(_, p)| p.iter().any(|&(_, v)| v > 0.0))
            .collect();
        if !lines.is_empty() {
            metrics.push(MetricView {
                name: title.to_owned(),
                lines,
                ..MetricView::default()
            });
        }
    }
    let level = v
        .levels
        .iter()
        .map(|(_, _, l)| *l)
        .max()
        .unwrap_or_default();
    TargetView {
        name: name.to_owned(),
        status: v.status.as_str().to_owned(),
        level: level.to_string(),
        pid: v.pid,
        limited: v.limited.clone(),
        metrics,
        alerts: v
            .alerts
            .iter()
            .map(|a| AlertView {
                at: a.at,
                rule: a.rule.clone(),
                to: a.to.to_string(),
                message: a.message.clone(),
                finding: a.finding.clone(),
            })
            .collect(),
        breakdown: v.last.as_ref().map(breakdown).unwrap_or_default(),
    }
}

/// Snapshot views of a store's listing.
pub fn store_snapshots(
    store: &leakscope_agent::store::Store,
    target: Option<&str>,
) -> Vec<SnapshotView> {
    let mut filter = ListFilter::default();
    filter.target = target.map(str::to_owned);
    store
        .list(&filter)
        .into_iter()
        .map(|m| SnapshotView {
            id: m.id,
            target: m.target,
            kind: m.kind,
            time: m.time,
            trigger: m.trigger.to_string(),
            bytes: m.bytes,
        })
        .collect()
}

/// The pages' view of the agent: the process as one target, its live heap,
/// the ring of heap snapshots its watch loop keeps (`heap-SEQ`), the
/// profiles its findings compared (`threads-base-N`, `fds-new-N`, ...), its
/// baseline and breach captures, and its store.
struct AgentSource {
    parts: AgentParts,
    name: String,
}

/// Id of the heap profile taken when it is opened.
const LIVE: &str = "live-heap";

/// Prefix of the ids of the heap ring's snapshots: `heap-SEQ`, the ids the
/// heap findings' diff links use.
#[cfg(feature = "heap")]
const RING: &str = "heap-";

fn now() -> f64 {
    unix_seconds(SystemTime::now())
}

/// The profile of heap counts, built while no other heap profile is made.
#[cfg(feature = "heap")]
fn heap_profile(counts: &leakscope_agent::collect::heap::HeapCounts) -> Profile {
    leakscope_agent::collect::heap::exclusive(|| {
        leakscope_agent::collect::heap::build(
            counts,
            leakscope_agent::collect::heap::HeapView::Heap,
            None,
            leakscope_agent::symbolize::Symbolizer::global(),
        )
    })
}

impl AgentSource {
    /// Snapshot views of the heap ring and of the findings' profiles.
    fn evidence_snapshots(&self, e: &Evidence) -> Vec<SnapshotView> {
        let view = |id: String, kind: &str, time: SystemTime, trigger: &str| SnapshotView {
            id,
            target: self.name.clone(),
            kind: kind.to_owned(),
            time: unix_seconds(time),
            trigger: trigger.to_owned(),
            bytes: 0,
        };
        let mut out = Vec::new();
        for (id, c) in [("baseline", e.baseline()), ("breach", e.breach())] {
            if let Some(c) = c {
                let trigger = if id == "baseline" {
                    "schedule"
                } else {
                    "breach"
                };
                out.push(view(id.into(), "heap", c.at, trigger));
            }
        }
        #[cfg(feature = "heap")]
        out.extend(e.with_ring(|r| {
            r.snapshots()
                .map(|s| view(format!("{RING}{}", s.seq), "heap", s.time, "ring"))
                .collect::<Vec<_>>()
        }));
        out.extend(
            e.kept_profiles()
                .into_iter()
                .map(|k| view(k.id, k.kind, k.time, "finding")),
        );
        out
    }

    /// A heap profile the agent has in memory: the live heap, a ring
    /// snapshot, the baseline or breach capture; `None` for other ids.
    #[cfg(feature = "heap")]
    fn heap_load(&self, id: &str) -> Option<Result<Profile, String>> {
        use leakscope_agent::collect::heap;
        if id == LIVE {
            return Some(heap::exclusive(|| {
                let raw = heap::dump().map_err(|e| e.to_string())?;
                Ok(heap::build(
                    &heap::HeapCounts::from_raw(&raw),
                    heap::HeapView::Heap,
                    None,
                    leakscope_agent::symbolize::Symbolizer::global(),
                ))
            }));
        }
        let e = self.parts.evidence.as_ref()?;
        if let Some(seq) = id.strip_prefix(RING).and_then(|s| s.parse::<u64>().ok()) {
            let counts = e.with_ring(|r| r.counts(seq));
            return Some(counts.map(|c| heap_profile(&c)).ok_or_else(|| {
                format!(
                    "heap snapshot {id} has left the ring (it keeps the last {})",
                    Evidence::RING_SNAPSHOTS
                )
            }));
        }
        let capture = match id {
            "baseline" => e.baseline(),
            "breach" => e.breach(),
            _ => None,
        }?;
        Some(
            capture.heap.as_ref().map(heap_profile).ok_or_else(|| {
                format!("the {id} capture has no heap profile: heap profiling is off")
            }),
        )
    }
}

impl Source for AgentSource {
    fn title(&self) -> String {
        format!("{} (pid {})", self.name, std::process::id())
    }

    fn targets(&self) -> Vec<TargetView> {
        self.parts
            .monitor
            .as_ref()
            .map(|m| vec![target_view(&self.name, m)])
            .unwrap_or_default()
    }

    fn snapshots(&self, target: Option<&str>) -> Vec<SnapshotView> {
        let mut out = Vec::new();
        if let Some(store) = &self.parts.store {
            out = store_snapshots(store, target);
        }
        if target.is_some_and(|t| t != self.name) {
            return out;
        }
        if let Some(e) = &self.parts.evidence {
            out.extend(self.evidence_snapshots(e));
        }
        if cfg!(feature = "heap") {
            out.push(SnapshotView {
                id: LIVE.into(),
                target: self.name.clone(),
                kind: "heap".into(),
                time: now(),
                trigger: "live".into(),
                bytes: 0,
            });
        }
        out.sort_by(|a, b| a.time.total_cmp(&b.time));
        out
    }

    fn load(&self, id: &str) -> Result<Profile, String> {
        #[cfg(feature = "heap")]
        if let Some(loaded) = self.heap_load(id) {
            return loaded;
        }
        if let Some(p) = self
            .parts
            .evidence
            .as_ref()
            .and_then(|e| e.kept_profile(id))
        {
            return Ok(Profile::clone(&p));
        }
        let store = self
            .parts
            .store
            .as_ref()
            .ok_or_else(|| format!("no snapshot {id:?}"))?;
        let bytes = store.read(id).map_err(|e| e.to_string())?;
        Profile::decode_bytes(&bytes, &format!("snapshot {id}")).map_err(|e| e.to_string())
    }

    /// The heap ring, reduced to sites in one symbolization of its
    /// addresses (never one profile per snapshot). The ring is copied out
    /// first, so the watch loop is not held up while symbolizing.
    fn heap_sites(&self, target: &str) -> Option<Vec<HeapSnapshot>> {
        #[cfg(feature = "heap")]
        if target == self.name
            && let Some(e) = &self.parts.evidence
        {
            use leakscope_agent::watch::evidence::HeapRing;
            let copy = e.with_ring(HeapRing::clone);
            return Some(copy.reduce(leakscope_agent::symbolize::Symbolizer::global()));
        }
        let _ = target;
        None
    }
}

/// Adds the web viewer to an agent.
pub trait AgentBuilderExt {
    /// Serves the viewer at `/debug/pprof/ui/`: the process's counters with
    /// their thresholds and its alerts with the leaks they name, leak
    /// suspects over the watch loop's ring of heap snapshots, its live heap
    /// profile, and diffs of its captures and of the profiles its findings
    /// compared.
    #[must_use]
    fn with_ui(self) -> Self;
}

impl AgentBuilderExt for AgentBuilder {
    fn with_ui(self) -> Self {
        self.viewer_path(AGENT_UI).extra_routes(|parts| {
            let name = std::env::current_exe()
                .ok()
                .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
                .unwrap_or_else(|| "self".into());
            let source = AgentSource {
                parts: parts.clone(),
                name,
            };
            leakscope_viewer::web::router(Arc::new(source), AGENT_UI)
        })
    }
}
