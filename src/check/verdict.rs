//! The verdict on each kind of resource, from what the check read: pure
//! code.
//!
//! A kind fails only when both hold:
//!
//! 1. **what stayed behind exceeds its budget**: the reading after the
//!    cool-down minus the one before the warm-up is over what `--allow`
//!    lets stay;
//! 2. **the evidence says it is a leak**, not a pool or cache that filled:
//!    - counts (threads, tasks, fds, goroutines) are exact, so there is no
//!      sampling noise to beat: the count must have kept growing through
//!      the load phase ([`exact_growth`]: at least one unit over the
//!      phase, and one over its recent half at no less than half the
//!      overall pace). A pool that filled in the warm-up, or early in the
//!      load, and then stayed, does not;
//!    - the heap is sampled: an allocation site of the program's own must
//!      be classified growing above the sampling noise across the heap
//!      profiles of the load phase ([`explain::heap`]: a cache that filled
//!      and renews its entries is saturating, never growing) **and** still
//!      hold at least half of its bytes after the cool-down. The total
//!      `heap_bytes` alone never fails the check: an allocator can keep
//!      what was freed, and a full cache stays full.
//!
//! [`explain::heap`]: leakscope_agent::explain::heap

use leakscope_agent::explain::heap::{HeapSnapshot, SiteKey, SiteTrend, finding as heap_finding};
use leakscope_agent::explain::trend::Trend;
use leakscope_agent::explain::{Confidence, Finding, format_bytes};

use super::model::{KindVerdict, Outcome};

/// How a counted quantity moved across the load phase.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Growth {
    /// Least-squares slope, per minute.
    pub per_minute: f64,
    /// Fitted change over the whole phase.
    pub change: f64,
    /// Fitted change over the recent half.
    pub recent_change: f64,
    /// True when it kept growing to the end (see the module docs).
    pub growing: bool,
}

/// Least-squares slope (per second) of `points`; 0 with fewer than two
/// distinct times.
fn slope(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    if points.len() < 2 {
        return 0.0;
    }
    let t0 = points[0].0;
    let mean_t = points.iter().map(|p| p.0 - t0).sum::<f64>() / n;
    let mean_y = points.iter().map(|p| p.1).sum::<f64>() / n;
    let (mut sxy, mut sxx) = (0.0, 0.0);
    for &(t, y) in points {
        let dt = t - t0 - mean_t;
        sxy += dt * (y - mean_y);
        sxx += dt * dt;
    }
    let s = sxy / sxx;
    if s.is_finite() { s } else { 0.0 }
}

fn span(points: &[(f64, f64)]) -> f64 {
    match (points.first(), points.last()) {
        (Some(a), Some(b)) => b.0 - a.0,
        _ => 0.0,
    }
}

/// The growth of an exact count across the load phase, `points` as
/// `(unix seconds, value)` (any order).
pub fn exact_growth(points: &[(f64, f64)]) -> Growth {
    let mut p: Vec<(f64, f64)> = points
        .iter()
        .copied()
        .filter(|(t, v)| t.is_finite() && v.is_finite())
        .collect();
    p.sort_by(|a, b| a.0.total_cmp(&b.0));
    let overall = slope(&p);
    let change = overall * span(&p);
    let recent = &p[p.len() - p.len().div_ceil(2).max(2).min(p.len())..];
    let recent_slope = slope(recent);
    let recent_change = recent_slope * span(recent);
    Growth {
        per_minute: overall * 60.0,
        change,
        recent_change,
        growing: p.len() >= 3
            && change >= 1.0
            && recent_change >= 1.0
            && recent_slope >= 0.5 * overall,
    }
}

/// `3 threads`, `1 fd`, `12.0 MiB`.
fn amount(v: f64, unit: &str) -> String {
    if unit == "bytes" {
        return format_bytes(v);
    }
    let one = match unit {
        "threads" => "thread",
        "tasks" => "task",
        "fds" => "fd",
        "goroutines" => "goroutine",
        u => u,
    };
    let n = v.round();
    if n == 1.0 {
        format!("1 {one}")
    } else {
        format!("{n} {unit}")
    }
}

/// `+3`, `-2`, `+1.5 MiB`.
fn signed(v: f64, unit: &str) -> String {
    let sign = if v < 0.0 { "-" } else { "+" };
    if unit == "bytes" {
        format!("{sign}{}", format_bytes(v.abs()))
    } else {
        format!("{sign}{}", v.abs().round())
    }
}

/// The readings of one counted kind.
#[derive(Debug, Clone)]
pub struct Counted<'a> {
    /// `threads`, `tasks`, `fds`, `goroutines`.
    pub kind: &'a str,
    /// `threads`, `tasks`, `fds`, `goroutines`.
    pub unit: &'a str,
    /// Before the warm-up.
    pub before: f64,
    /// After the cool-down.
    pub after: f64,
    /// The counts of the load phase, `(unix seconds, value)`.
    pub load: &'a [(f64, f64)],
    /// The budget.
    pub allowed: f64,
    /// What the profiles before and after say grew, if they were read.
    pub finding: Option<Finding>,
}

/// The verdict on a counted kind (module docs).
pub fn counted(c: Counted<'_>) -> KindVerdict {
    let g = exact_growth(c.load);
    let stayed = c.after - c.before;
    let peak = c
        .load
        .iter()
        .map(|p| p.1)
        .fold(c.before.max(c.after), f64::max);
    let (leaked, reason) = if stayed <= c.allowed {
        (
            false,
            format!(
                "{} after the cool-down than before the warm-up, within the budget of {}",
                change_words(stayed, c.unit),
                amount(c.allowed, c.unit)
            ),
        )
    } else if !g.growing {
        (
            false,
            format!(
                "{} stayed after the cool-down, over the budget of {}, but the count did not \
                 keep growing under load ({:+.1} over the load phase, {:+.1} over its second \
                 half): a pool that filled, not a leak",
                signed(stayed, c.unit),
                amount(c.allowed, c.unit),
                g.change,
                g.recent_change
            ),
        )
    } else {
        (
            true,
            format!(
                "{} stayed after the cool-down (budget {}), and the count grew throughout the \
                 load ({:+.1}/min)",
                signed(stayed, c.unit),
                amount(c.allowed, c.unit),
                g.per_minute
            ),
        )
    };
    KindVerdict {
        kind: c.kind.to_owned(),
        unit: c.unit.to_owned(),
        before: c.before,
        peak,
        after: c.after,
        allowed: c.allowed,
        growth_per_minute: g.per_minute,
        leaked,
        reason,
        finding: if leaked { c.finding } else { None },
        evidence: None,
    }
}

/// `3 more threads`, `2 fewer fds`, `as many tasks`.
fn change_words(d: f64, unit: &str) -> String {
    if unit == "bytes" {
        return match d {
            d if d > 0.0 => format!("{} more in use", format_bytes(d)),
            d if d < 0.0 => format!("{} less in use", format_bytes(-d)),
            _ => "as much in use".to_owned(),
        };
    }
    let n = d.round();
    let one = |n: f64| amount(n, unit);
    match n {
        n if n > 0.0 => one(n).replacen(' ', " more ", 1),
        n if n < 0.0 => one(-n).replacen(' ', " fewer ", 1),
        _ => format!("as many {unit}"),
    }
}

/// The readings of the heap.
#[derive(Debug, Clone)]
pub struct Heap<'a> {
    /// `heap_bytes` before the warm-up.
    pub before: f64,
    /// `heap_bytes` after the cool-down.
    pub after: f64,
    /// `heap_bytes` in the load phase, `(unix seconds, value)`.
    pub load: &'a [(f64, f64)],
    /// The budget, bytes.
    pub allowed: f64,
    /// The allocation sites across the heap profiles of the load phase
    /// ([`site_trends`](leakscope_agent::explain::heap::site_trends)).
    pub trends: &'a [SiteTrend],
    /// The heap profile after the cool-down, reduced.
    pub held: Option<&'a HeapSnapshot>,
}

/// Share of its last bytes of the load phase a growing site must still
/// hold after the cool-down to count as kept (below it, as in
/// [`trend`](leakscope_agent::explain::trend)'s rule 2, it was released).
pub const HELD_SHARE: f64 = 0.5;

/// The verdict on the heap (module docs).
pub fn heap(h: Heap<'_>) -> KindVerdict {
    let stayed = h.after - h.before;
    let peak = h
        .load
        .iter()
        .map(|p| p.1)
        .fold(h.before.max(h.after), f64::max);
    let per_minute = slope(h.load) * 60.0;
    let profiles = h.trends.first().map_or(0, |t| t.points.len());
    let finding = heap_finding(h.trends);
    let growing = h
        .trends
        .iter()
        .find(|t| t.key.own && t.fit.trend == Trend::Growing);
    let held_at = |key: &SiteKey| h.held.and_then(|s| s.sites.get(key)).map_or(0.0, |v| v[0]);
    let budget = format_bytes(h.allowed);
    let (leaked, reason) = match growing {
        _ if stayed <= h.allowed => (
            false,
            format!(
                "{} after the cool-down than before the warm-up, within the budget of {budget}",
                change_words(stayed, "bytes")
            ),
        ),
        None => {
            let likely = match (finding.confidence, &finding.site) {
                (Confidence::Likely, Some(site)) => format!(
                    "; {site} grew most, but not clearly above the sampling noise (a longer \
                     --duration tells)"
                ),
                _ => String::new(),
            };
            (
                false,
                format!(
                    "{} stayed after the cool-down, over the budget of {budget}, but no allocation \
                     site of the program's own kept growing across the {profiles} heap profiles \
                     of the load (a cache that filled, or memory the allocator keeps){likely}",
                    signed(stayed, "bytes")
                ),
            )
        }
        Some(t) => {
            let held = held_at(&t.key);
            let last = t.last();
            if h.held.is_some() && held < HELD_SHARE * last {
                (
                    false,
                    format!(
                        "{} kept growing under load, but released it in the cool-down ({} of \
                         {} still held): not a leak",
                        t.key.site,
                        format_bytes(held),
                        format_bytes(last)
                    ),
                )
            } else {
                (
                    true,
                    format!(
                        "{} stayed after the cool-down (budget {budget}); {} kept growing across \
                         the {profiles} heap profiles of the load ({}/min) and holds {} after it",
                        signed(stayed, "bytes"),
                        t.key.site,
                        format_bytes(t.fit.recent_per_second * 60.0),
                        format_bytes(if h.held.is_some() { held } else { last })
                    ),
                )
            }
        }
    };
    KindVerdict {
        kind: "heap".into(),
        unit: "bytes".into(),
        before: h.before,
        peak,
        after: h.after,
        allowed: h.allowed,
        growth_per_minute: per_minute,
        leaked,
        reason,
        finding: leaked.then_some(finding),
        evidence: None,
    }
}

/// The check's outcome from its verdicts.
pub fn outcome(kinds: &[KindVerdict]) -> Outcome {
    if kinds.iter().any(|k| k.leaked) {
        Outcome::Leak
    } else {
        Outcome::Clean
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use leakscope_agent::explain::heap::site_trends;

    const MIB: f64 = 1024.0 * 1024.0;

    fn series(values: impl IntoIterator<Item = f64>) -> Vec<(f64, f64)> {
        values
            .into_iter()
            .enumerate()
            .map(|(i, v)| (1_700_000_000.0 + i as f64, v))
            .collect()
    }

    fn count(before: f64, after: f64, load: &[(f64, f64)], allowed: f64) -> KindVerdict {
        counted(Counted {
            kind: "threads",
            unit: "threads",
            before,
            after,
            load,
            allowed,
            finding: Some(Finding::unknown("threads", "threads", "named")),
        })
    }

    #[test]
    fn a_count_that_grows_through_the_load_and_stays_is_a_leak() {
        // One thread every 2 s of a 60 s load phase.
        let load = series((0..60).map(|i| 20.0 + f64::from(i / 2)));
        let v = count(20.0, 50.0, &load, 2.0);
        assert!(v.leaked, "{v:?}");
        assert!((v.growth_per_minute - 30.0).abs() < 1.0, "{v:?}");
        assert_eq!(v.peak, 50.0);
        assert!(v.reason.contains("+30 stayed"), "{}", v.reason);
        assert!(v.finding.is_some());
        // The same within a larger budget passes, and says so.
        let v = count(20.0, 50.0, &load, 30.0);
        assert!(!v.leaked && v.reason.contains("within the budget of 30 threads"));
        assert!(v.finding.is_none());
    }

    #[test]
    fn a_pool_that_filled_and_stays_is_not_a_leak() {
        // Grew by 16 in the first 10 s of the load phase, flat since.
        let load = series((0..60).map(|i| 20.0 + f64::from(i.min(16))));
        let v = count(20.0, 36.0, &load, 2.0);
        assert!(!v.leaked, "{v:?}");
        assert!(v.reason.contains("a pool that filled"), "{}", v.reason);
        // Flat through the load, filled in the warm-up.
        let v = count(20.0, 36.0, &series([36.0; 60]), 2.0);
        assert!(!v.leaked, "{v:?}");
    }

    #[test]
    fn noise_of_one_unit_never_grows() {
        // Transient threads: 20 or 21 at random-looking moments.
        let load = series((0..60).map(|i| 20.0 + f64::from((i * 7 % 5 == 0) as u8)));
        let g = exact_growth(&load);
        assert!(!g.growing, "{g:?}");
        // A slow leak: 1 per 20 s still grows.
        let g = exact_growth(&series((0..60).map(|i| 20.0 + f64::from(i / 20))));
        assert!(g.growing, "{g:?}");
        assert!(!exact_growth(&series([1.0, 2.0])).growing);
    }

    #[test]
    fn fewer_is_within_any_budget() {
        let v = count(30.0, 25.0, &series([30.0; 10]), 0.0);
        assert!(!v.leaked);
        assert!(v.reason.starts_with("5 fewer threads"), "{}", v.reason);
    }

    fn snap(t: f64, sites: &[(&str, f64, f64)]) -> HeapSnapshot {
        let mut s = HeapSnapshot {
            t,
            period: 512.0 * 1024.0,
            ..HeapSnapshot::default()
        };
        for (name, inuse, alloc) in sites {
            s.add(&[(*name, "/srv/orders/src/store.rs", 10)], *inuse, *alloc);
        }
        s
    }

    /// Twelve profiles 5 s apart: `remember` leaks 4 MiB per profile, the
    /// cache filled before the load and renews 2 MiB per profile.
    fn load_profiles() -> Vec<HeapSnapshot> {
        (0..12)
            .map(|i| {
                let i = f64::from(i);
                snap(
                    1000.0 + 5.0 * i,
                    &[
                        ("orders::cache::put", 24.0 * MIB, 24.0 * MIB + 2.0 * MIB * i),
                        ("orders::store::remember", 4.0 * MIB * i, 4.0 * MIB * i),
                    ],
                )
            })
            .collect()
    }

    #[test]
    fn a_growing_site_that_is_still_held_fails_the_heap() {
        let snaps = load_profiles();
        let trends = site_trends(&snaps, 0.0);
        let held = snap(
            2000.0,
            &[
                ("orders::cache::put", 24.0 * MIB, 60.0 * MIB),
                ("orders::store::remember", 44.0 * MIB, 44.0 * MIB),
            ],
        );
        let load = series((0..60).map(|i| 30.0 * MIB + f64::from(i) * 0.8 * MIB));
        let v = heap(Heap {
            before: 10.0 * MIB,
            after: 80.0 * MIB,
            load: &load,
            allowed: 4.0 * MIB,
            trends: &trends,
            held: Some(&held),
        });
        assert!(v.leaked, "{v:?}");
        let f = v.finding.as_ref().expect("finding");
        assert_eq!(f.site.as_ref().unwrap().function, "orders::store::remember");
        assert!(v.reason.contains("orders::store::remember"), "{}", v.reason);
        assert!(v.reason.contains("holds 44.0 MiB"), "{}", v.reason);
        assert!(!v.reason.contains("cache"), "{}", v.reason);

        // Released in the cool-down: not a leak.
        let freed = snap(
            2000.0,
            &[("orders::store::remember", 2.0 * MIB, 44.0 * MIB)],
        );
        let v = heap(Heap {
            before: 10.0 * MIB,
            after: 30.0 * MIB,
            load: &load,
            allowed: 4.0 * MIB,
            trends: &trends,
            held: Some(&freed),
        });
        assert!(!v.leaked && v.reason.contains("released"), "{}", v.reason);
    }

    #[test]
    fn a_full_cache_and_the_allocator_never_fail_the_heap() {
        // Only the cache: full before the load, renewing.
        let snaps: Vec<HeapSnapshot> = (0..12)
            .map(|i| {
                let i = f64::from(i);
                snap(
                    1000.0 + 5.0 * i,
                    &[("orders::cache::put", 24.0 * MIB, 24.0 * MIB + 2.0 * MIB * i)],
                )
            })
            .collect();
        let trends = site_trends(&snaps, 0.0);
        let held = snap(2000.0, &[("orders::cache::put", 24.0 * MIB, 50.0 * MIB)]);
        let v = heap(Heap {
            before: 2.0 * MIB,
            after: 40.0 * MIB,
            load: &series([40.0 * MIB; 30]),
            allowed: 4.0 * MIB,
            trends: &trends,
            held: Some(&held),
        });
        assert!(!v.leaked, "{v:?}");
        assert!(v.reason.contains("no allocation site"), "{}", v.reason);
        assert!(v.finding.is_none());
        // Within the budget, whatever the profiles say.
        let snaps = load_profiles();
        let v = heap(Heap {
            before: 10.0 * MIB,
            after: 12.0 * MIB,
            load: &[],
            allowed: 4.0 * MIB,
            trends: &site_trends(&snaps, 0.0),
            held: None,
        });
        assert!(
            !v.leaked && v.reason.contains("within the budget"),
            "{}",
            v.reason
        );
    }

    #[test]
    fn the_outcome_is_a_leak_when_any_kind_leaked() {
        let clean = count(20.0, 20.0, &series([20.0; 5]), 2.0);
        let leak = count(
            20.0,
            50.0,
            &series((0..60).map(|i| 20.0 + f64::from(i / 2))),
            2.0,
        );
        assert_eq!(outcome(std::slice::from_ref(&clean)), Outcome::Clean);
        assert_eq!(outcome(&[clean, leak]), Outcome::Leak);
        assert_eq!(outcome(&[]), Outcome::Clean);
    }
}
