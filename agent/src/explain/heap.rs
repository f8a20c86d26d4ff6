//! Naming a heap leak across snapshots: each snapshot is reduced to the
//! in-use and allocated bytes of each *site* (the first frame of the
//! program's own code from the leaf; stacks through leakscope's own code
//! are set apart), each site's series is classified with the noise of
//! sampling in mind ([`trend`](super::trend)), and the site that keeps
//! growing is named.
//!
//! A two-snapshot diff cannot tell a leak from a cache that filled in
//! between; a series can: a cache that filled and stays full is
//! Saturating, never named.

use std::collections::HashMap;

use super::finding::{Confidence, Finding, Group, Site};
use super::frames::{is_agent_function, is_library_frame, own_frame};
use super::trend::{Fit, Point, Trend, Z, classify};
use crate::profile::{Profile, ProfileIndex};

/// Where the bytes of a stack are charged.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SiteKey {
    /// The site.
    pub site: Site,
    /// True when it is the program's own code; false when the stack has
    /// only library frames (the site is then the first frame that is not
    /// the standard library's).
    pub own: bool,
}

/// The site of one stack, from its frames leaf first as
/// `(function, file, line)`; `None` for a stack through leakscope's own
/// code. A stack with no symbolized frame is charged to `<unknown>`.
pub fn site_of(frames: &[(&str, &str, i64)]) -> Option<SiteKey> {
    if frames.iter().any(|(f, _, _)| is_agent_function(f)) {
        return None;
    }
    let site = |(function, file, line): (&str, &str, i64)| Site {
        function: function.to_owned(),
        file: file.to_owned(),
        line,
    };
    if let Some(i) = own_frame(frames.iter().map(|(f, file, _)| (*f, *file))) {
        return Some(SiteKey {
            site: site(frames[i]),
            own: true,
        });
    }
    let chosen = frames
        .iter()
        .find(|(f, file, _)| {
            !file.starts_with("/rustc/") && !f.is_empty() && !is_allocator(f, file)
        })
        .or(frames
            .iter()
            .find(|(f, file, _)| !is_library_frame(f, file)))
        .or(frames.first())
        .copied()
        .unwrap_or(("<unknown>", "", 0));
    Some(SiteKey {
        site: site(chosen),
        own: false,
    })
}

/// jemalloc's C code and the allocator shims: never what a site is.
fn is_allocator(function: &str, file: &str) -> bool {
    (file.contains("jemalloc") && file.ends_with(".c"))
        || function.starts_with("_rjem_")
        || function.starts_with("__rust")
        || function.contains("tikv_jemallocator")
}

/// One heap snapshot, reduced to sites.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HeapSnapshot {
    /// Time, Unix seconds.
    pub t: f64,
    /// Sampling period in bytes (1 for exact).
    pub period: f64,
    /// `[in-use bytes, allocated bytes]` per site.
    pub sites: HashMap<SiteKey, [f64; 2]>,
    /// `[in-use, allocated]` of stacks through leakscope's own code.
    pub agent: [f64; 2],
}

impl HeapSnapshot {
    /// Adds the values of one stack.
    pub fn add(&mut self, frames: &[(&str, &str, i64)], inuse: f64, allocated: f64) {
        let slot = match site_of(frames) {
            Some(key) => self.sites.entry(key).or_default(),
            None => &mut self.agent,
        };
        slot[0] += inuse;
        slot[1] += allocated;
    }
}

/// Reduces a heap profile (with `inuse_space`, and `alloc_space` when it
/// has it) taken at `t`; `None` without `inuse_space`.
pub fn reduce(profile: &Profile, t: f64) -> Option<HeapSnapshot> {
    let index = ProfileIndex::new(profile);
    let inuse = index.sample_type("inuse_space")?;
    let alloc = index.sample_type("alloc_space");
    let mut snap = HeapSnapshot {
        t,
        period: (profile.period as f64).max(1.0),
        ..HeapSnapshot::default()
    };
    for s in &profile.sample {
        let frames = index.frames(s);
        let frames: Vec<(&str, &str, i64)> = frames
            .iter()
            .filter(|f| !f.pseudo)
            .map(|f| (f.function, f.file, f.line))
            .collect();
        let value = |i: usize| s.value.get(i).copied().unwrap_or(0) as f64;
        snap.add(&frames, value(inuse), alloc.map_or(f64::NAN, value));
    }
    Some(snap)
}

fn ratio(change: f64, noise: f64) -> f64 {
    if noise > 0.0 {
        change / noise
    } else if change > 0.0 {
        f64::INFINITY
    } else {
        0.0
    }
}

/// One site across the snapshots.
#[derive(Debug, Clone, PartialEq)]
pub struct SiteTrend {
    /// The site.
    pub key: SiteKey,
    /// In-use bytes (and allocated bytes) per snapshot, oldest first; 0
    /// where a snapshot has nothing there.
    pub points: Vec<Point>,
    /// The classification.
    pub fit: Fit,
}

impl SiteTrend {
    /// In-use bytes in the last snapshot.
    pub fn last(&self) -> f64 {
        self.points.last().map_or(0.0, |p| p.value)
    }

    /// How many standard errors of sampling the recent change is (∞ for
    /// exact data that changed).
    pub fn sureness(&self) -> f64 {
        ratio(self.fit.recent_change, self.fit.recent_noise)
    }

    /// How many standard errors of sampling the whole change is.
    pub fn overall_sureness(&self) -> f64 {
        ratio(self.fit.change, self.fit.noise)
    }
}

/// Every site of `snapshots` (any order), classified; growing sites first
/// (fastest recent growth first), then saturating, stable and freed (each
/// by last in-use bytes). Sites never above `min_bytes` are left out.
pub fn site_trends(snapshots: &[HeapSnapshot], min_bytes: f64) -> Vec<SiteTrend> {
    let mut snaps: Vec<&HeapSnapshot> = snapshots.iter().filter(|s| s.t.is_finite()).collect();
    snaps.sort_by(|a, b| a.t.total_cmp(&b.t));
    let period = snaps.iter().map(|s| s.period).fold(1.0, f64::max);
    let mut keys: Vec<&SiteKey> = snaps.iter().flat_map(|s| s.sites.keys()).collect();
    keys.sort();
    keys.dedup();
    let mut trends: Vec<SiteTrend> = keys
        .into_iter()
        .filter_map(|key| {
            let points: Vec<Point> = snaps
                .iter()
                .map(|s| {
                    let [inuse, alloc] = s.sites.get(key).copied().unwrap_or([0.0, 0.0]);
                    Point {
                        t: s.t,
                        value: inuse,
                        allocated: alloc.is_finite().then_some(alloc),
                    }
                })
                .collect();
            let peak = points.iter().map(|p| p.value).fold(0.0, f64::max);
            (peak >= min_bytes && peak > 0.0).then(|| SiteTrend {
                key: key.clone(),
                fit: classify(&points, period),
                points,
            })
        })
        .collect();
    let rank = |t: Trend| match t {
        Trend::Growing => 0,
        Trend::Saturating => 1,
        Trend::Stable => 2,
        Trend::Freed => 3,
    };
    trends.sort_by(|a, b| {
        rank(a.fit.trend)
            .cmp(&rank(b.fit.trend))
            .then_with(|| {
                if a.fit.trend == Trend::Growing {
                    b.fit.recent_per_second.total_cmp(&a.fit.recent_per_second)
                } else {
                    std::cmp::Ordering::Equal
                }
            })
            .then_with(|| b.last().total_cmp(&a.last()))
            .then_with(|| a.key.cmp(&b.key))
    });
    trends
}

/// How many standard errors make a site a "likely" culprit when none is
/// clearly growing yet.
pub const LIKELY_Z: f64 = 2.0;

/// The finding for the heap: the own-code site that keeps growing (clear),
/// else the one that grew most, by more than [`LIKELY_Z`] standard errors
/// over the snapshots and still growing at the end (likely),
/// else none, saying what was seen. `trends` as [`site_trends`] returns
/// them.
pub fn finding(trends: &[SiteTrend]) -> Finding {
    let own = || trends.iter().filter(|t| t.key.own);
    let fmt = |b: f64| crate::explain::format_bytes(b);
    let span = |t: &SiteTrend| {
        let (a, b) = (
            t.points.first().map_or(0.0, |p| p.t),
            t.points.last().map_or(0.0, |p| p.t),
        );
        b - a
    };
    let growing: Vec<&SiteTrend> = own().filter(|t| t.fit.trend == Trend::Growing).collect();
    let groups = |list: &[&SiteTrend]| -> Vec<Group> {
        list.iter()
            .take(Finding::MAX_GROUPS)
            .map(|t| Group {
                what: format!("{}/min", fmt(t.fit.recent_per_second * 60.0)),
                site: Some(t.key.site.clone()),
                base: t.points.first().map_or(0.0, |p| p.value),
                new: t.last(),
            })
            .collect()
    };
    let snapshots = trends.first().map_or(0, |t| t.points.len());
    if let Some(top) = growing.first() {
        let rate = fmt(top.fit.recent_per_second * 60.0);
        return Finding {
            kind: "heap".into(),
            unit: "bytes".into(),
            summary: format!(
                "heap: {} in use at {} and growing {rate}/min",
                fmt(top.last()),
                top.key.site
            ),
            site: Some(top.key.site.clone()),
            confidence: Confidence::Clear,
            detail: format!(
                "growing across {snapshots} heap snapshots over {:.0} s, its recent growth {:.1} times \
                 the sampling noise (growing needs {Z}); {} other site(s) growing",
                span(top),
                top.sureness(),
                growing.len() - 1
            ),
            groups: groups(&growing),
            base: None,
            new: None,
            url: None,
        };
    }
    let mut candidates: Vec<&SiteTrend> = own()
        .filter(|t| t.fit.recent_change > 0.0 && t.overall_sureness() >= LIKELY_Z)
        .collect();
    candidates.sort_by(|a, b| b.fit.change.total_cmp(&a.fit.change));
    if let Some(top) = candidates.first() {
        return Finding {
            kind: "heap".into(),
            unit: "bytes".into(),
            summary: format!(
                "heap: grew most at {}, +{} over {:.0} s (likely: not yet clearly above sampling noise)",
                top.key.site,
                fmt(top.fit.change),
                span(top)
            ),
            site: Some(top.key.site.clone()),
            confidence: Confidence::Likely,
            detail: format!(
                "the site that grew most in {snapshots} heap snapshots, {:.1} times the sampling \
                 noise, and still growing, but its recent growth is {:.1} times the noise \
                 (growing needs {Z}); more snapshots, or a finer heap_sample_interval, will tell",
                top.overall_sureness(),
                top.sureness()
            ),
            groups: groups(&candidates),
            base: None,
            new: None,
            url: None,
        };
    }
    let saturating = own().filter(|t| t.fit.trend == Trend::Saturating).count();
    let why = if snapshots < 2 {
        "heap: not enough heap snapshots yet to tell which site grows".to_owned()
    } else {
        format!(
            "heap: no allocation site of the program's own grows above the sampling noise \
             in {snapshots} heap snapshots ({saturating} filled up and stopped); the growth may be \
             in library code, outside the allocator, or too slow to tell yet"
        )
    };
    Finding::unknown("heap", "bytes", why)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: f64 = 1024.0 * 1024.0;
    const APP: &str = "/srv/orders/src/store.rs";

    fn snap(t: f64, sites: &[(&str, f64, f64)]) -> HeapSnapshot {
        let mut s = HeapSnapshot {
            t,
            period: 512.0 * 1024.0,
            ..HeapSnapshot::default()
        };
        for (name, inuse, alloc) in sites {
            let frames = [
                (
                    "alloc::raw_vec::finish_grow",
                    "/rustc/1/library/alloc/src/raw_vec.rs",
                    1,
                ),
                (*name, APP, 10),
                (
                    "tokio::runtime::task::core::Core<T,S>::poll",
                    "/root/.cargo/registry/src/x/tokio-1/src/core.rs",
                    3,
                ),
            ];
            s.add(&frames, *inuse, *alloc);
        }
        s
    }

    #[test]
    fn a_growing_site_is_named_and_a_full_cache_is_not() {
        // Ten snapshots a minute apart: `remember` leaks 20 MiB/min; `cache`
        // filled 64 MiB in the first two and renews nothing since.
        let snaps: Vec<HeapSnapshot> = (0..10)
            .map(|i| {
                let i = f64::from(i);
                let cache = 32.0 * MIB * i.min(2.0);
                let leak = 20.0 * MIB * i;
                snap(
                    1_700_000_000.0 + 60.0 * i,
                    &[
                        ("orders::cache::put", cache, cache),
                        ("orders::store::remember", leak, leak),
                    ],
                )
            })
            .collect();
        let trends = site_trends(&snaps, 0.0);
        assert_eq!(trends[0].key.site.function, "orders::store::remember");
        assert_eq!(trends[0].fit.trend, Trend::Growing);
        assert_eq!(trends[1].key.site.function, "orders::cache::put");
        assert_eq!(trends[1].fit.trend, Trend::Saturating);
        let f = finding(&trends);
        assert_eq!(f.confidence, Confidence::Clear);
        assert_eq!(f.site.as_ref().unwrap().function, "orders::store::remember");
        assert!(f.summary.contains("growing 20.0 MiB/min"), "{}", f.summary);
        assert!(
            f.groups
                .iter()
                .all(|g| !g.site.as_ref().unwrap().function.contains("cache"))
        );
    }

    #[test]
    fn agent_stacks_are_set_apart_and_library_only_stacks_are_not_own() {
        let mut s = HeapSnapshot::default();
        s.add(
            &[
                (
                    "prost::encoding::encode",
                    "/root/.cargo/registry/src/x/prost-0.14/src/encoding.rs",
                    9,
                ),
                (
                    "leakscope_agent::profile::model::Profile::encode_gzip",
                    "/work/agent/src/profile/model.rs",
                    222,
                ),
            ],
            MIB,
            MIB,
        );
        s.add(
            &[
                (
                    "_rjem_je_malloc_default",
                    "/root/.cargo/registry/src/x/tikv-jemalloc-sys/jemalloc/src/jemalloc.c",
                    1,
                ),
                (
                    "hyper::proto::h1::io::Buffered<T,B>::new",
                    "/root/.cargo/registry/src/x/hyper-1/src/io.rs",
                    5,
                ),
            ],
            MIB,
            MIB,
        );
        assert_eq!(s.agent, [MIB, MIB]);
        let (key, _) = s.sites.iter().next().unwrap();
        assert!(!key.own);
        assert_eq!(
            key.site.function,
            "hyper::proto::h1::io::Buffered<T,B>::new"
        );
        assert_eq!(
            finding(&site_trends(&[s], 0.0)).confidence,
            Confidence::Unknown
        );
    }

    #[test]
    fn before_it_is_clear_the_largest_grower_is_likely() {
        // 3 MiB over two snapshots at 512 KiB sampling: ~6 samples, above
        // 2σ, below 3.5σ.
        let snaps = [
            snap(0.0, &[("orders::store::remember", 0.0, 0.0)]),
            snap(60.0, &[("orders::store::remember", 1.5 * MIB, 1.5 * MIB)]),
            snap(120.0, &[("orders::store::remember", 3.0 * MIB, 3.0 * MIB)]),
        ];
        let f = finding(&site_trends(&snaps, 0.0));
        assert_eq!(f.confidence, Confidence::Likely, "{f:?}");
        assert!(f.summary.contains("likely"), "{}", f.summary);
    }
}
