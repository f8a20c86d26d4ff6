//! Leak suspects: a target's heap snapshots through the agent's own leak
//! analysis ([`explain::heap`](leakscope_agent::explain::heap)), so the
//! pages and the alerts agree on what grows.
//!
//! Each heap profile is reduced to its *sites* (the first frame of the
//! program's own code from the leaf; never the standard library, tokio or
//! a crate from a registry), each site's in-use bytes across the snapshots
//! is classified with the noise of heap sampling in mind
//! ([`explain::trend`](leakscope_agent::explain::trend)): *growing* only
//! when clearly above that noise, *saturating* for a cache or pool that
//! filled and stopped. Allocations made by leakscope itself are no row:
//! they are summed apart ([`Suspects::leakscope_bytes`]). Sites whose
//! stacks have no frame of the program's own come after the own-code rows,
//! marked (their `key.own` is false).

use leakscope_agent::explain::heap::{HeapSnapshot, SiteTrend, reduce, site_trends};
use leakscope_agent::profile::Profile;

/// One allocation site across the snapshots.
pub type Suspect = SiteTrend;

/// Options of [`leak_suspects`].
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct SuspectOptions {
    /// Sites whose largest in-use value over the snapshots is below this
    /// many bytes are left out.
    pub min_bytes: f64,
}

impl SuspectOptions {
    /// Leave out sites that never reach `min_bytes`.
    #[must_use]
    pub fn with_min_bytes(mut self, min_bytes: f64) -> Self {
        self.min_bytes = min_bytes;
        self
    }
}

/// The suspects of a series of heap snapshots.
#[derive(Debug, Clone, Default)]
pub struct Suspects {
    /// Sites of the program's own code first (growing, fastest first; then
    /// saturating, stable and freed, each by bytes in use), then the sites
    /// with only library frames, in the same order.
    pub rows: Vec<Suspect>,
    /// Bytes in use by leakscope's own allocations in the last snapshot.
    pub leakscope_bytes: f64,
    /// Snapshots the rows span.
    pub snapshots: usize,
    /// Seconds from the first snapshot to the last.
    pub span_secs: f64,
}

impl Suspects {
    /// The rows of the program's own code.
    pub fn own(&self) -> impl Iterator<Item = &Suspect> {
        self.rows.iter().filter(|s| s.key.own)
    }

    /// The rows with only library frames.
    pub fn library(&self) -> impl Iterator<Item = &Suspect> {
        self.rows.iter().filter(|s| !s.key.own)
    }
}

/// Heap profiles, each with its time in Unix seconds, reduced to sites;
/// profiles without `inuse_space` are skipped.
pub fn reduce_profiles(profiles: &[(f64, &Profile)]) -> Vec<HeapSnapshot> {
    profiles.iter().filter_map(|(t, p)| reduce(p, *t)).collect()
}

/// Total bytes in use of one reduced snapshot, leakscope's own included.
pub fn total_in_use(s: &HeapSnapshot) -> f64 {
    s.sites.values().map(|v| v[0]).sum::<f64>() + s.agent[0]
}

/// Every site of `snapshots` (any order), classified and ordered as
/// [`Suspects::rows`] says.
pub fn leak_suspects(snapshots: &[HeapSnapshot], options: &SuspectOptions) -> Suspects {
    let trends = site_trends(snapshots, options.min_bytes);
    let (mut rows, library): (Vec<Suspect>, Vec<Suspect>) =
        trends.into_iter().partition(|t| t.key.own);
    rows.extend(library);
    let mut times: Vec<f64> = snapshots
        .iter()
        .map(|s| s.t)
        .filter(|t| t.is_finite())
        .collect();
    times.sort_by(f64::total_cmp);
    let last = snapshots
        .iter()
        .filter(|s| s.t.is_finite())
        .max_by(|a, b| a.t.total_cmp(&b.t));
    Suspects {
        rows,
        leakscope_bytes: last.map_or(0.0, |s| s.agent[0]),
        snapshots: times.len(),
        span_secs: match (times.first(), times.last()) {
            (Some(a), Some(b)) => b - a,
            _ => 0.0,
        },
    }
}

/// Bytes per minute a suspect grows at, over the recent half of its
/// snapshots.
pub fn bytes_per_minute(s: &Suspect) -> f64 {
    s.fit.recent_per_second * 60.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::test_profiles::ProfileBuilder;
    use leakscope_agent::explain::trend::Trend;

    const T0: f64 = 1_700_000_000.0;
    const MIB: i64 = 1 << 20;
    const APP: &str = "/srv/orders/src/store.rs";
    const STD: &str = "/rustc/1/library/alloc/src/raw_vec.rs";
    const TOKIO: &str = "/root/.cargo/registry/src/x/tokio-1.0.0/src/runtime/task/core.rs";
    const HYPER: &str = "/root/.cargo/registry/src/x/hyper-1.0.0/src/proto/h1/io.rs";

    /// A heap profile as jemalloc's would be (512 KiB sampling): `leak` and
    /// `cache` under a std frame and above tokio, a buffer of hyper's with
    /// no frame of the program's, and leakscope's own encoder.
    fn heap(leak: i64, cache: i64, hyper: i64, agent: i64) -> Profile {
        let mut b = ProfileBuilder::new(&[("alloc_space", "bytes"), ("inuse_space", "bytes")])
            .period(512 * 1024);
        let grow = b.location(0x10, &[("alloc::raw_vec::finish_grow", STD, 1)]);
        let poll = b.location(
            0x20,
            &[("tokio::runtime::task::core::Core<T,S>::poll", TOKIO, 3)],
        );
        let leak_at = b.location(0x30, &[("orders::store::remember", APP, 42)]);
        let cache_at = b.location(0x40, &[("orders::cache::Cache<K,V>::put", APP, 77)]);
        let hyper_at = b.location(
            0x50,
            &[("hyper::proto::h1::io::Buffered<T,B>::new", HYPER, 5)],
        );
        let agent_at = b.location(
            0x60,
            &[(
                "leakscope_agent::profile::model::Profile::encode_gzip",
                "/work/agent/src/profile/model.rs",
                222,
            )],
        );
        for (stack, v) in [
            (vec![grow, leak_at, poll], leak),
            (vec![grow, cache_at, poll], cache),
            (vec![hyper_at, poll], hyper),
            (vec![grow, agent_at], agent),
        ] {
            if v > 0 {
                b = b.sample(&stack, &[v, v]);
            }
        }
        b.build()
    }

    #[test]
    fn a_filled_cache_saturates_after_the_growing_site_and_leakscope_is_no_row() {
        // Twelve snapshots a minute apart: `remember` leaks 8 MiB a minute;
        // the cache filled 48 MiB over the first three and holds; hyper's
        // buffers hold 4 MiB; leakscope's own 3 MiB.
        let profiles: Vec<(f64, Profile)> = (0..12)
            .map(|i| {
                let cache = 16 * MIB * (i + 1).min(3);
                (
                    T0 + 60.0 * i as f64,
                    heap(8 * MIB * (i + 1), cache, 4 * MIB, 3 * MIB),
                )
            })
            .collect();
        let refs: Vec<(f64, &Profile)> = profiles.iter().map(|(t, p)| (*t, p)).collect();
        let snaps = reduce_profiles(&refs);
        assert_eq!(snaps.len(), 12);
        assert_eq!(
            total_in_use(&snaps[11]),
            (96 + 48 + 4 + 3) as f64 * MIB as f64
        );
        let s = leak_suspects(&snaps, &SuspectOptions::default());
        let rows: Vec<(&str, Trend, bool)> = s
            .rows
            .iter()
            .map(|r| (r.key.site.function.as_str(), r.fit.trend, r.key.own))
            .collect();
        assert_eq!(
            rows,
            [
                ("orders::store::remember", Trend::Growing, true),
                ("orders::cache::Cache<K,V>::put", Trend::Saturating, true),
                (
                    "hyper::proto::h1::io::Buffered<T,B>::new",
                    Trend::Stable,
                    false
                ),
            ]
        );
        // Named by the program's line, not by the std frame above it.
        assert_eq!(
            (s.rows[0].key.site.file.as_str(), s.rows[0].key.site.line),
            (APP, 42)
        );
        assert!((bytes_per_minute(&s.rows[0]) - 8.0 * MIB as f64).abs() < 1024.0);
        assert_eq!(s.leakscope_bytes, 3.0 * MIB as f64);
        assert_eq!((s.snapshots, s.span_secs), (12, 660.0));
        assert_eq!(s.own().count(), 2);
        assert_eq!(s.library().count(), 1);
    }

    #[test]
    fn growth_within_the_sampling_noise_is_not_growing() {
        // +256 KiB a snapshot at 512 KiB sampling: 1.25 MiB over six
        // snapshots rests on a few samples, well within the noise.
        let profiles: Vec<(f64, Profile)> = (0..6)
            .map(|i| (T0 + 60.0 * i as f64, heap(MIB + i * 256 * 1024, 0, 0, 0)))
            .collect();
        let refs: Vec<(f64, &Profile)> = profiles.iter().map(|(t, p)| (*t, p)).collect();
        let s = leak_suspects(&reduce_profiles(&refs), &SuspectOptions::default());
        assert!(
            s.rows.iter().all(|r| r.fit.trend != Trend::Growing),
            "{:?}",
            s.rows
        );
    }

    #[test]
    fn small_sites_can_be_left_out_and_profiles_without_inuse_are_skipped() {
        let cpu = ProfileBuilder::new(&[("cpu", "nanoseconds")])
            .stack(&["main"], &[5])
            .build();
        let a = heap(MIB, 0, 2048, 0);
        let b = heap(2 * MIB, 0, 2048, 0);
        let refs = [(T0, &a), (T0 + 30.0, &cpu), (T0 + 60.0, &b)];
        let snaps = reduce_profiles(&refs);
        assert_eq!(snaps.len(), 2);
        let s = leak_suspects(&snaps, &SuspectOptions::default().with_min_bytes(4096.0));
        assert_eq!(s.rows.len(), 1);
        assert_eq!(s.rows[0].key.site.function, "orders::store::remember");
        assert_eq!(s.leakscope_bytes, 0.0);
    }
}
