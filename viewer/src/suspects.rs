//! Leak suspects: across a target's last heap snapshots, the in-use bytes
//! of each allocation site over time, fitted and classified, so the sites
//! that keep growing come first and a cache that fills up and then stays
//! flat is not called a leak.
//!
//! A site is named like [`rank_growth`](crate::rank_growth) names it: the
//! first frame from the leaf whose file is not under `/rustc/`. Its value
//! in a snapshot is the sum of the chosen sample type over its samples, 0
//! when the snapshot has none.
//!
//! # How a series is classified
//!
//! [`classify`] takes the values `y` of one site at times `t` (seconds),
//! oldest first. Besides their `max`, `min`, `first` and `last`, it fits
//! two least-squares slopes, `y` against `t`: `overall`, over every point,
//! and `recent`, over the last half of the points (the last ⌈n/2⌉, at
//! least 2). The *fitted change* is `overall × (t_last − t_first)`. With
//! n ≥ 3 points, the first rule that holds wins:
//!
//! | # | rule | trend |
//! |---|------|-------|
//! | 1 | `max ≤ 0` (nothing there) | Stable |
//! | 2 | `last < 50% × max` (over half the peak given back) | Freed |
//! | 3 | `max − min ≤ 10% × max` (within a tenth of the peak; ±5% noise lands here) | Stable |
//! | 4 | `|fitted change| ≤ 10% × max` (no trend, however noisy) | Stable |
//! | 5 | `fitted change < −10% × max` (drifting down) | Freed |
//! | 6 | grew by over 10% of `max`, and `recent ≥ 50% × overall` (still growing at least half as fast as on average) | GrowingLinearly |
//! | 7 | grew, but `recent < 50% × overall` (levelled off) | Saturating |
//!
//! A cache that fills during the first snapshots and then stays flat has
//! `recent ≈ 0` once the flat part makes up the recent half, so it is
//! Saturating (rule 7), never GrowingLinearly (one that fills over 7 of 10
//! snapshots still rises in the recent half, but at 28% of its average
//! rate: Saturating too); a leak that started late
//! grows faster recently than on average, so it is GrowingLinearly
//! (rule 6). With 2 points: rules 1 to 3, then GrowingLinearly when the
//! second value is the larger, Freed otherwise. With 0 or 1 point: Stable.
//!
//! [`Suspect::bytes_per_minute`] is `recent × 60` (0 below 2 points).

use std::collections::{BTreeSet, HashMap};

use leakscope_agent::profile::Profile;

use crate::analysis::{Site, flat_by_site, sample_index};

/// How a site's in-use bytes moved over the snapshots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Trend {
    /// Grows steadily to the last snapshot: the leak pattern.
    GrowingLinearly,
    /// Grew, then levelled off (a bounded cache or pool filling up).
    Saturating,
    /// About the same throughout.
    Stable,
    /// Went back down (released).
    Freed,
}

/// One allocation site and its history.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Suspect {
    /// Function of the site (first non-std frame from the leaf).
    pub function: String,
    /// Its file, "" when unknown.
    pub file: String,
    /// Its line, 0 when unknown.
    pub line: i64,
    /// The classification.
    pub trend: Trend,
    /// Least-squares slope over the recent part of the history, bytes per
    /// minute.
    pub bytes_per_minute: f64,
    /// In-use bytes in the last snapshot.
    pub last_bytes: i64,
    /// `(unix seconds, in-use bytes)` per snapshot, oldest first.
    pub points: Vec<(f64, i64)>,
}

/// Options of [`leak_suspects`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SuspectOptions {
    /// Sample type to follow (default `inuse_space`).
    pub sample_type: String,
    /// Sites whose largest value over the snapshots is below this many
    /// bytes are left out.
    pub min_bytes: i64,
}

impl Default for SuspectOptions {
    fn default() -> Self {
        SuspectOptions {
            sample_type: "inuse_space".into(),
            min_bytes: 0,
        }
    }
}

impl SuspectOptions {
    /// Follow `sample_type` (e.g. `alloc_space`) instead of `inuse_space`.
    #[must_use]
    pub fn with_sample_type(mut self, sample_type: impl Into<String>) -> Self {
        self.sample_type = sample_type.into();
        self
    }

    /// Leave out sites that never reach `min_bytes`.
    #[must_use]
    pub fn with_min_bytes(mut self, min_bytes: i64) -> Self {
        self.min_bytes = min_bytes;
        self
    }
}

/// Below this share of its peak, a site's last value counts as released
/// (rule 2).
const FREED_BELOW: f64 = 0.5;
/// A range or a fitted change within this share of the peak is no trend
/// (rules 3 to 5).
const FLAT_WITHIN: f64 = 0.1;
/// A recent slope at least this share of the overall slope is still
/// growing (rules 6 and 7).
const STILL_GROWING: f64 = 0.5;

/// Classifies one series of `(unix seconds, value)`, oldest first, by the
/// rules in the [module docs](self).
pub fn classify(points: &[(f64, i64)]) -> Trend {
    let recent = recent_window(points);
    classify_fitted(points, slope(points), slope(recent))
}

/// The last ⌈n/2⌉ points, at least 2 (all of them when there are fewer).
fn recent_window(points: &[(f64, i64)]) -> &[(f64, i64)] {
    let n = points.len();
    let len = n.div_ceil(2).max(2).min(n);
    &points[n - len..]
}

/// Least-squares slope of value against time, per second; 0 below two
/// points, when every point has the same time, or when not finite.
fn slope(points: &[(f64, i64)]) -> f64 {
    let Some(&(t0, _)) = points.first() else {
        return 0.0;
    };
    if points.len() < 2 {
        return 0.0;
    }
    let n = points.len() as f64;
    // Times relative to the first one: Unix seconds squared lose precision.
    let mean_t = points.iter().map(|(t, _)| t - t0).sum::<f64>() / n;
    let mean_y = points.iter().map(|(_, y)| *y as f64).sum::<f64>() / n;
    let (mut sxy, mut sxx) = (0.0, 0.0);
    for (t, y) in points {
        let dt = t - t0 - mean_t;
        sxy += dt * (*y as f64 - mean_y);
        sxx += dt * dt;
    }
    let s = sxy / sxx;
    if s.is_finite() { s } else { 0.0 }
}

/// The rules of the module docs, given both slopes.
fn classify_fitted(points: &[(f64, i64)], overall: f64, recent: f64) -> Trend {
    let (Some(&(t_first, first)), Some(&(t_last, last))) = (points.first(), points.last()) else {
        return Trend::Stable;
    };
    if points.len() < 2 {
        return Trend::Stable;
    }
    let values = points.iter().map(|(_, y)| *y as f64);
    let max = values.clone().fold(f64::MIN, f64::max);
    let min = values.fold(f64::MAX, f64::min);
    let (first, last) = (first as f64, last as f64);
    if max <= 0.0 {
        return Trend::Stable;
    }
    if last < FREED_BELOW * max {
        return Trend::Freed;
    }
    if max - min <= FLAT_WITHIN * max {
        return Trend::Stable;
    }
    if points.len() == 2 {
        return if last > first {
            Trend::GrowingLinearly
        } else {
            Trend::Freed
        };
    }
    let change = overall * (t_last - t_first);
    if change.abs() <= FLAT_WITHIN * max || !change.is_finite() {
        Trend::Stable
    } else if change < 0.0 {
        Trend::Freed
    } else if recent >= STILL_GROWING * overall {
        Trend::GrowingLinearly
    } else {
        Trend::Saturating
    }
}

/// Every site of the snapshots (oldest first, each with its time in Unix
/// seconds), classified; growing sites first by slope, then saturating,
/// stable and freed, each by last value.
///
/// Snapshots are put in time order; those without the sample type, or
/// with a time that is not finite, are skipped.
pub fn leak_suspects(snapshots: &[(f64, &Profile)], options: &SuspectOptions) -> Vec<Suspect> {
    let mut history: Vec<(f64, HashMap<Site, i64>)> = snapshots
        .iter()
        .filter(|(t, _)| t.is_finite())
        .filter_map(|(t, p)| {
            let index = sample_index(p, Some(&options.sample_type))?;
            Some((*t, flat_by_site(p, index, true)))
        })
        .collect();
    history.sort_by(|a, b| a.0.total_cmp(&b.0));
    let sites: BTreeSet<&Site> = history
        .iter()
        .flat_map(|(_, by_site)| by_site.keys())
        .collect();

    let mut suspects: Vec<Suspect> = sites
        .into_iter()
        .filter_map(|site| {
            let points: Vec<(f64, i64)> = history
                .iter()
                .map(|(t, by_site)| (*t, by_site.get(site).copied().unwrap_or(0)))
                .collect();
            let max = points.iter().map(|(_, y)| *y).max().unwrap_or(0);
            if max < options.min_bytes {
                return None;
            }
            let recent = slope(recent_window(&points));
            let (function, file, line) = site.clone();
            Some(Suspect {
                function,
                file,
                line,
                trend: classify_fitted(&points, slope(&points), recent),
                bytes_per_minute: recent * 60.0,
                last_bytes: points.last().map_or(0, |(_, y)| *y),
                points,
            })
        })
        .collect();
    suspects.sort_by(|a, b| {
        rank(a.trend)
            .cmp(&rank(b.trend))
            .then_with(|| {
                if a.trend == Trend::GrowingLinearly {
                    b.bytes_per_minute.total_cmp(&a.bytes_per_minute)
                } else {
                    std::cmp::Ordering::Equal
                }
            })
            .then_with(|| b.last_bytes.cmp(&a.last_bytes))
            .then_with(|| (&a.function, &a.file, a.line).cmp(&(&b.function, &b.file, b.line)))
    });
    suspects
}

/// Position of a trend in the ranking.
fn rank(trend: Trend) -> u8 {
    match trend {
        Trend::GrowingLinearly => 0,
        Trend::Saturating => 1,
        Trend::Stable => 2,
        Trend::Freed => 3,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::test_profiles::{FILE, ProfileBuilder, flat_profile};

    const T0: f64 = 1_700_000_000.0;
    const MIB: i64 = 1 << 20;

    /// `values` one snapshot every 30 seconds from `T0`.
    fn series(values: &[i64]) -> Vec<(f64, i64)> {
        values
            .iter()
            .enumerate()
            .map(|(i, v)| (T0 + 30.0 * i as f64, *v))
            .collect()
    }

    /// `level` with each point moved by `noise` percent (cycled).
    fn noisy(level: i64, noise: &[i64], n: usize) -> Vec<i64> {
        (0..n)
            .map(|i| level + level * noise[i % noise.len()] / 100)
            .collect()
    }

    /// One profile per snapshot, 30 seconds apart: site `name` (line = its
    /// position + 1) at `values[i]` in snapshot `i`, absent when 0.
    fn snapshots(sites: &[(&str, &[i64])]) -> Vec<(f64, Profile)> {
        let n = sites.iter().map(|(_, v)| v.len()).max().unwrap_or(0);
        (0..n)
            .map(|i| {
                let samples: Vec<(&str, i64, i64)> = sites
                    .iter()
                    .enumerate()
                    .filter_map(|(line, (name, values))| {
                        let v = values.get(i).copied().unwrap_or(0);
                        (v != 0).then_some((*name, line as i64 + 1, v))
                    })
                    .collect();
                (T0 + 30.0 * i as f64, flat_profile(&samples))
            })
            .collect()
    }

    fn suspects_of(profiles: &[(f64, Profile)], options: &SuspectOptions) -> Vec<Suspect> {
        let refs: Vec<(f64, &Profile)> = profiles.iter().map(|(t, p)| (*t, p)).collect();
        leak_suspects(&refs, options)
    }

    fn trends(suspects: &[Suspect]) -> Vec<(&str, Trend)> {
        suspects
            .iter()
            .map(|s| (s.function.as_str(), s.trend))
            .collect()
    }

    #[test]
    fn a_linear_leak_comes_first_with_its_slope() {
        // 2000 B/s = 120 000 B/min, snapshots at irregular times.
        let offsets = [
            0.0, 30.0, 60.0, 120.0, 150.0, 240.0, 300.0, 330.0, 420.0, 480.0,
        ];
        let leak: Vec<(f64, Profile)> = offsets
            .iter()
            .map(|dt| {
                let bytes = MIB + 2000 * *dt as i64;
                let p = flat_profile(&[("leak", 7, bytes), ("steady", 9, 8 * MIB)]);
                (T0 + dt, p)
            })
            .collect();
        let ranked = suspects_of(&leak, &SuspectOptions::default());
        assert_eq!(
            trends(&ranked),
            [("leak", Trend::GrowingLinearly), ("steady", Trend::Stable)]
        );
        let first = &ranked[0];
        assert!(
            (first.bytes_per_minute - 120_000.0).abs() <= 1_200.0,
            "slope {}",
            first.bytes_per_minute
        );
        assert_eq!((first.file.as_str(), first.line), (FILE, 7));
        assert_eq!(first.last_bytes, MIB + 960_000);
        assert_eq!(first.points.len(), 10);
        assert_eq!(first.points[3], (T0 + 120.0, MIB + 240_000));
        assert_eq!(ranked[1].bytes_per_minute, 0.0);
    }

    #[test]
    fn a_noisy_leak_is_still_growing() {
        let values: Vec<i64> = (0..12)
            .map(|i| 10 * MIB + i * MIB + [0, 40_000, -30_000, 20_000][i as usize % 4])
            .collect();
        assert_eq!(classify(&series(&values)), Trend::GrowingLinearly);
        // Slowing down (√t) but still at 77% of its average rate.
        let values: Vec<i64> = (1..=10)
            .map(|i| (f64::from(i).sqrt() * MIB as f64) as i64)
            .collect();
        assert_eq!(classify(&series(&values)), Trend::GrowingLinearly);
    }

    #[test]
    fn a_bounded_cache_saturates_and_is_never_a_leak() {
        // Fills over the first three snapshots, then stays at 64 MiB ±1%.
        let mut values = vec![21 * MIB, 43 * MIB];
        values.extend(noisy(64 * MIB, &[0, 1, -1, 1, 0, -1, 1, 0], 8));
        let points = series(&values);
        assert_eq!(classify(&points), Trend::Saturating);
        // From the first snapshot after the fill on, whatever the history
        // length, it is not called a leak.
        for n in 4..=points.len() {
            assert_eq!(classify(&points[..n]), Trend::Saturating, "{n} points");
        }
        // Nor when the fill took longer: up to 6 of 10 snapshots, the
        // recent half is flat (recent slope 0); over 7, it still rises in
        // the recent half, at 28% of the average rate: below the 50% of a
        // leak.
        for fill in 2..=7 {
            let values: Vec<i64> = (0..10)
                .map(|i| 64 * MIB * (i + 1).min(fill) / fill)
                .collect();
            assert_eq!(classify(&series(&values)), Trend::Saturating, "fill {fill}");
        }
    }

    #[test]
    fn a_constant_site_is_stable() {
        assert_eq!(classify(&series(&[4096; 6])), Trend::Stable);
        assert_eq!(classify(&series(&[0; 6])), Trend::Stable);
    }

    #[test]
    fn a_site_released_after_rising_is_freed() {
        let values = [MIB, 20 * MIB, 40 * MIB, 40 * MIB, 2 * MIB];
        assert_eq!(classify(&series(&values)), Trend::Freed);
        // Drifting down without losing half: still freed (rule 5).
        let values = [100 * MIB, 90 * MIB, 80 * MIB, 70 * MIB, 60 * MIB];
        assert_eq!(classify(&series(&values)), Trend::Freed);
    }

    #[test]
    fn a_noisy_flat_site_is_stable() {
        // ±5% around 10 MiB: within a tenth of the peak (rule 3).
        let values = noisy(10 * MIB, &[5, -5, 3, -4, 5, -5, 0, 4, -3, -5], 10);
        assert_eq!(classify(&series(&values)), Trend::Stable);
        // ±8%: a wider range, but no fitted trend (rule 4).
        let values = noisy(10 * MIB, &[8, -8, 5, -6, 8, -8, 0, 6, -5, -8, 8, 2], 12);
        assert_eq!(classify(&series(&values)), Trend::Stable);
    }

    #[test]
    fn a_site_absent_early_then_growing_is_a_leak() {
        let late: &[i64] = &[0, 0, 0, 0, 0, MIB, 2 * MIB, 3 * MIB, 4 * MIB, 5 * MIB];
        let profiles = snapshots(&[("late", late), ("steady", &[MIB; 10])]);
        let ranked = suspects_of(&profiles, &SuspectOptions::default());
        assert_eq!(
            trends(&ranked),
            [("late", Trend::GrowingLinearly), ("steady", Trend::Stable)]
        );
        assert_eq!(ranked[0].points[0], (T0, 0));
        assert_eq!(ranked[0].points[9], (T0 + 270.0, 5 * MIB));
        // 1 MiB per 30 s over the recent half.
        assert!((ranked[0].bytes_per_minute - 2.0 * MIB as f64).abs() < 1.0);
    }

    #[test]
    fn short_histories() {
        assert_eq!(classify(&[]), Trend::Stable);
        assert_eq!(classify(&series(&[MIB])), Trend::Stable);
        assert_eq!(classify(&series(&[MIB, 2 * MIB])), Trend::GrowingLinearly);
        assert_eq!(classify(&series(&[MIB, MIB + 1000])), Trend::Stable);
        assert_eq!(classify(&series(&[2 * MIB, MIB + MIB / 2])), Trend::Freed);
        assert_eq!(
            classify(&series(&[MIB, 2 * MIB, 3 * MIB])),
            Trend::GrowingLinearly
        );
        assert_eq!(
            classify(&series(&[MIB, 3 * MIB, 3 * MIB])),
            Trend::Saturating
        );
    }

    #[test]
    fn ranking_puts_leaks_first_then_saturating_stable_freed() {
        let fast: Vec<i64> = (1..=8).map(|i| i * 2 * MIB).collect();
        let slow: Vec<i64> = (1..=8).map(|i| 40 * MIB + i * MIB).collect();
        let profiles = snapshots(&[
            (
                "freed",
                &[MIB, 30 * MIB, 60 * MIB, 60 * MIB, 9 * MIB, MIB, MIB, MIB],
            ),
            ("small_stable", &[MIB; 8]),
            ("slow_leak", &slow),
            (
                "cache",
                &[
                    10 * MIB,
                    20 * MIB,
                    30 * MIB,
                    30 * MIB,
                    30 * MIB,
                    30 * MIB,
                    30 * MIB,
                    30 * MIB,
                ],
            ),
            ("big_stable", &[50 * MIB; 8]),
            ("fast_leak", &fast),
        ]);
        let ranked = suspects_of(&profiles, &SuspectOptions::default());
        assert_eq!(
            trends(&ranked),
            [
                ("fast_leak", Trend::GrowingLinearly),
                ("slow_leak", Trend::GrowingLinearly),
                ("cache", Trend::Saturating),
                ("big_stable", Trend::Stable),
                ("small_stable", Trend::Stable),
                ("freed", Trend::Freed),
            ]
        );
    }

    #[test]
    fn min_bytes_filters_on_the_peak() {
        let profiles = snapshots(&[
            ("tiny", &[100, 200, 300, 400]),
            ("released", &[MIB, 4 * MIB, 100, 100]),
            ("big", &[2 * MIB; 4]),
        ]);
        let options = SuspectOptions::default().with_min_bytes(MIB);
        let ranked = suspects_of(&profiles, &options);
        assert_eq!(
            trends(&ranked),
            [("big", Trend::Stable), ("released", Trend::Freed)]
        );
        let all = suspects_of(&profiles, &SuspectOptions::default());
        assert_eq!(all.len(), 3);
    }

    #[test]
    fn sites_skip_std_frames_and_snapshots_without_the_type_are_skipped() {
        let site = |bytes: i64| {
            let mut b = ProfileBuilder::inuse();
            let loc = b.location(
                0x1000,
                &[
                    ("alloc::raw_vec::grow", "/rustc/abc/raw_vec.rs", 3),
                    ("my::push", FILE, 12),
                ],
            );
            b.sample(&[loc], &[bytes]).build()
        };
        let other_type = ProfileBuilder::new(&[("alloc_space", "bytes")])
            .stack(&["x"], &[5])
            .build();
        let profiles = [
            (T0, site(MIB)),
            (T0 + 30.0, other_type),
            (T0 + 60.0, site(2 * MIB)),
            (T0 + 90.0, site(3 * MIB)),
        ];
        let ranked = suspects_of(&profiles, &SuspectOptions::default());
        assert_eq!(ranked.len(), 1);
        assert_eq!(
            (ranked[0].function.as_str(), ranked[0].line),
            ("my::push", 12)
        );
        assert_eq!(
            ranked[0].points,
            [(T0, MIB), (T0 + 60.0, 2 * MIB), (T0 + 90.0, 3 * MIB)]
        );
        assert_eq!(ranked[0].trend, Trend::GrowingLinearly);

        let alloc = SuspectOptions::default().with_sample_type("alloc_space");
        let ranked = suspects_of(&profiles, &alloc);
        assert_eq!(trends(&ranked), [("x", Trend::Stable)]);
    }
}
