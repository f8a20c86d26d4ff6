//! The classification against simulated jemalloc sampling: objects are
//! sampled with probability `1 − e^(−size/P)` and weighted by its inverse,
//! as jemalloc and pprof do, and snapshots are taken as a service would.

use super::*;

const KIB: f64 = 1024.0;
const MIB: f64 = 1024.0 * 1024.0;
/// jemalloc's default sampling period (`lg_prof_sample:19`).
const P: f64 = 512.0 * KIB;
const T0: f64 = 1_700_000_000.0;

/// splitmix64: a small deterministic generator, one stream per seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }

    /// The weight an allocation of `size` bytes adds to the estimate: 0
    /// when it is not sampled.
    fn sample(&mut self, size: f64) -> f64 {
        let p = -(-size / P).exp_m1();
        if self.next() < p { size / p } else { 0.0 }
    }
}

/// A site's estimated in-use and allocated bytes, sampled like jemalloc.
#[derive(Default)]
struct Site {
    live: Vec<f64>,
    allocated: f64,
}

impl Site {
    fn alloc(&mut self, rng: &mut Rng, size: f64) {
        let w = rng.sample(size);
        self.allocated += w;
        self.live.push(w);
    }

    /// `count` allocations of `size` bytes that are never freed: only the
    /// sampled ones are kept, found by skipping geometrically distributed
    /// runs of unsampled ones.
    fn leak(&mut self, rng: &mut Rng, size: f64, count: u64, skip: &mut u64) {
        let p = -(-size / P).exp_m1();
        let mut left = count;
        while left > 0 {
            if *skip == u64::MAX {
                // Allocations before the next sampled one.
                let u = rng.next().max(f64::MIN_POSITIVE);
                *skip = (u.ln() / (-p).ln_1p()).floor() as u64;
            }
            if *skip >= left {
                *skip -= left;
                return;
            }
            left -= *skip + 1;
            *skip = u64::MAX;
            self.allocated += size / p;
            self.live.push(size / p);
        }
    }

    fn point(&self, t: f64) -> Point {
        Point {
            t,
            value: self.live.iter().sum(),
            allocated: Some(self.allocated),
        }
    }
}

/// A leak of `per_minute` bytes a minute in objects of `size` bytes,
/// snapshotted every `every` seconds, `n` snapshots (the first at its start).
fn leak(seed: u64, per_minute: f64, size: f64, every: f64, n: usize) -> Vec<Point> {
    let mut rng = Rng(seed);
    let mut site = Site::default();
    let mut owed = 0.0;
    let mut skip = u64::MAX;
    let mut points = vec![site.point(T0)];
    for i in 1..n {
        owed += per_minute * every / 60.0;
        let count = (owed / size).floor();
        owed -= count * size;
        site.leak(&mut rng, size, count as u64, &mut skip);
        points.push(site.point(T0 + every * i as f64));
    }
    points
}

/// A cache of `capacity` objects of `size` bytes filled over `fill_secs`,
/// then renewing `renew_per_sec` random entries a second (each freed and
/// replaced by a new allocation), snapshotted every `every` seconds.
fn cache(
    seed: u64,
    capacity: usize,
    size: f64,
    fill_secs: f64,
    renew_per_sec: f64,
    every: f64,
    n: usize,
) -> Vec<Point> {
    let mut rng = Rng(seed);
    let mut site = Site::default();
    let mut points = vec![site.point(T0)];
    let mut owed_renewals = 0.0;
    for i in 1..n {
        let t = every * i as f64;
        let target = ((t / fill_secs).min(1.0) * capacity as f64) as usize;
        while site.live.len() < target {
            site.alloc(&mut rng, size);
        }
        if t > fill_secs {
            owed_renewals += renew_per_sec * every;
            while owed_renewals >= 1.0 {
                let victim = (rng.next() * site.live.len() as f64) as usize;
                let victim = victim.min(site.live.len() - 1);
                let w = rng.sample(size);
                site.allocated += w;
                site.live[victim] = w;
                owed_renewals -= 1.0;
            }
        }
        points.push(site.point(T0 + t));
    }
    points
}

/// Sites of the leak and cache simulations, and how many seeds.
const SEEDS: u64 = 1000;
/// The agent's ring of heap snapshots: 30, a minute apart.
const RING: usize = 30;

#[test]
fn a_leak_of_one_mib_a_minute_is_growing_over_the_ring() {
    // A leak of 1 MiB/min in objects of 64 B to 16 KiB, a heap snapshot a
    // minute for 30 minutes: about 60 sampled objects, and growing in
    // (measured) 98.8% of runs for 1 KiB objects.
    for size in [64.0, KIB, 16.0 * KIB] {
        let growing = (0..SEEDS)
            .filter(|&seed| {
                classify(&leak(seed, MIB, size, 60.0, RING + 1), P).trend == Trend::Growing
            })
            .count();
        eprintln!(
            "1 MiB/min leak in {size} B objects: growing after {RING} snapshots in {growing}/{SEEDS} runs"
        );
        assert!(
            growing * 1000 >= 975 * SEEDS as usize,
            "{size} B: {growing}/{SEEDS}"
        );
    }
    // Ten times faster, it is growing within five snapshots (4 minutes).
    let growing = (0..SEEDS)
        .filter(|&seed| classify(&leak(seed, 10.0 * MIB, KIB, 60.0, 5), P).trend == Trend::Growing)
        .count();
    eprintln!("10 MiB/min leak: growing after 5 snapshots in {growing}/{SEEDS} runs");
    assert!(growing * 100 >= 99 * SEEDS as usize, "{growing}/{SEEDS}");
}

#[test]
fn a_full_cache_whose_entries_are_renewed_is_never_growing() {
    // A cache of 8 MiB (2048 entries of 4 KiB) filled in two minutes, then
    // renewing all its entries every five minutes (or every minute),
    // watched for an hour through the agent's ring of 30 snapshots: from
    // the first snapshot after the fill on, never growing.
    for renew_every in [300.0, 60.0] {
        for seed in 0..SEEDS {
            let points = cache(seed, 2048, 4.0 * KIB, 120.0, 2048.0 / renew_every, 60.0, 61);
            for end in 4..=points.len() {
                let window = &points[end.saturating_sub(RING)..end];
                let fit = classify(window, P);
                assert_ne!(
                    fit.trend,
                    Trend::Growing,
                    "renewed every {renew_every} s, seed {seed}, snapshots {}..{end}: {fit:?} over {window:?}",
                    end.saturating_sub(RING)
                );
            }
        }
    }
}

#[test]
fn a_cache_that_stops_growing_is_saturating_from_the_moment_it_is_flat() {
    // Exact counts (a pool of threads, say): fills for 5 snapshots, flat after.
    let values = [0.0, 10.0, 20.0, 30.0, 40.0, 50.0, 50.0, 50.0, 50.0, 50.0];
    let points: Vec<Point> = values
        .iter()
        .enumerate()
        .map(|(i, v)| Point::new(T0 + 30.0 * i as f64, *v))
        .collect();
    for k in 3..=6 {
        assert_eq!(classify(&points[..k], 1.0).trend, Trend::Growing, "{k}");
    }
    // Two snapshots at the same level: no longer growing.
    for k in 7..=10 {
        assert_eq!(classify(&points[..k], 1.0).trend, Trend::Saturating, "{k}");
    }
    // A sampled cache that is never renewed keeps its samples: flat too
    // (32 MiB: 64 samples, a fill well above the noise).
    for seed in 0..50 {
        let points = cache(seed, 8192, 4.0 * KIB, 120.0, 0.0, 30.0, 12);
        let fit = classify(&points, P);
        assert_eq!(fit.trend, Trend::Saturating, "seed {seed}: {fit:?}");
    }
}

#[test]
fn exact_counts_have_no_noise() {
    let points: Vec<Point> = (0..6)
        .map(|i| Point::new(T0 + 60.0 * f64::from(i), 10.0 + 3.0 * f64::from(i)))
        .collect();
    let fit = classify(&points, 1.0);
    assert_eq!(fit.trend, Trend::Growing);
    assert_eq!((fit.noise, fit.recent_noise), (0.0, 0.0));
    assert!((fit.change - 15.0).abs() < 1e-9, "{fit:?}");
    assert!((fit.recent_per_second - 0.05).abs() < 1e-9, "{fit:?}");
}

#[test]
fn small_changes_within_the_noise_are_stable() {
    // +1 MiB on 4 MiB at 512 KiB sampling, with nothing freed: σ ≈ 0.87
    // MiB, so 1 MiB is not 3σ.
    let points: Vec<Point> = [4.0, 4.3, 4.6, 5.0]
        .iter()
        .enumerate()
        .map(|(i, mib)| Point {
            t: T0 + 60.0 * i as f64,
            value: mib * MIB,
            allocated: Some(mib * MIB),
        })
        .collect();
    assert_eq!(classify(&points, P).trend, Trend::Stable);
    // The same counted exactly is a clear rise.
    assert_eq!(classify(&points, 1.0).trend, Trend::Growing);
}

#[test]
fn other_shapes() {
    let series = |values: &[f64]| -> Vec<Point> {
        values
            .iter()
            .enumerate()
            .map(|(i, v)| Point::new(T0 + 60.0 * i as f64, *v))
            .collect()
    };
    assert_eq!(classify(&[], 1.0).trend, Trend::Stable);
    assert_eq!(classify(&series(&[5.0]), 1.0).trend, Trend::Stable);
    assert_eq!(
        classify(&series(&[0.0, 0.0, 0.0]), 1.0).trend,
        Trend::Stable
    );
    assert_eq!(classify(&series(&[10.0, 20.0]), 1.0).trend, Trend::Growing);
    assert_eq!(
        classify(&series(&[100.0, 400.0, 400.0, 40.0]), 1.0).trend,
        Trend::Freed
    );
    assert_eq!(
        classify(&series(&[100.0, 90.0, 80.0, 70.0, 60.0]), 1.0).trend,
        Trend::Freed
    );
    assert_eq!(
        classify(&series(&[100.0, 104.0, 97.0, 103.0]), 1.0).trend,
        Trend::Stable
    );
    // Unsorted input is put in time order.
    let mut shuffled = series(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    shuffled.reverse();
    assert_eq!(classify(&shuffled, 1.0).trend, Trend::Growing);
}
