//! Cost of the symbolizer and of building profiles, in-process.
//!
//! Run with: `cargo bench --bench symbolizer`
//!
//! A process holding 32 MiB of "service" heap takes one CPU profile and 20
//! heap profiles through the agent's collectors (no HTTP) and reports:
//! cold and warm latency of a heap profile (dump + symbolize + encode),
//! RSS before and after, the symbolizer's cache counters, and the share of
//! the in-use bytes the heap profile shows that are the agent's own.

leakscope::enable_heap_profiling!();

use std::time::{Duration, Instant};

use leakscope::agent::collect::heap::{HeapCounts, HeapView, build};
use leakscope::agent::cpu::CpuSampler;
use leakscope::agent::profile::Profile;
use leakscope::agent::symbolize::{Symbolizer, SymbolizerOptions};

fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn rss_kib() -> u64 {
    status_kib("VmRSS:")
}

fn heap_profile(sym: &Symbolizer) -> (Profile, Duration) {
    let t = Instant::now();
    let raw = leakscope::agent::heap::dump().expect("heap profiling is on in this bench");
    let p = build(&HeapCounts::from_raw(&raw), HeapView::Heap, None, sym);
    let _bytes = p.encode_gzip();
    (p, t.elapsed())
}

/// In-use bytes of samples whose stack has a frame of the agent (or of the
/// symbolizer's DWARF readers), and the total.
fn agent_share(p: &Profile) -> (i64, i64) {
    let inuse = p
        .sample_type_names()
        .iter()
        .position(|(t, _)| *t == "inuse_space")
        .expect("inuse_space");
    let agent_loc: std::collections::HashSet<u64> = p
        .location
        .iter()
        .filter(|l| {
            l.line.iter().any(|ln| {
                p.function.iter().any(|f| {
                    f.id == ln.function_id && {
                        let n = p.string(f.name);
                        n.contains("leakscope_agent::")
                            || n.starts_with("addr2line::")
                            || n.starts_with("gimli::")
                    }
                })
            })
        })
        .map(|l| l.id)
        .collect();
    let mut agent = 0;
    let mut total = 0;
    for s in &p.sample {
        total += s.value[inuse];
        if s.location_id.iter().any(|id| agent_loc.contains(id)) {
            agent += s.value[inuse];
        }
    }
    (agent, total)
}

#[inline(never)]
fn busy(ms: u64) -> u64 {
    let end = Instant::now() + Duration::from_millis(ms);
    let mut x = 1u64;
    while Instant::now() < end {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
    }
    x
}

fn main() {
    // The service's own state: 32 MiB from one site.
    for _ in 0..128 {
        leakscope::leaky::leak_heap_kib(256);
    }
    let rss0 = rss_kib();

    let sampler = CpuSampler::start(100).expect("cpu sampler");
    std::hint::black_box(busy(1000));
    let t = Instant::now();
    let cpu = leakscope::agent::collect::cpu::build(sampler.stop(), Symbolizer::global());
    let cpu_build = t.elapsed();
    let _ = cpu.encode_gzip();

    let (cold, median, p90, last) = twenty_heap_profiles(Symbolizer::global());
    let rss1 = rss_kib();
    let (anon1, file1) = (status_kib("RssAnon:"), status_kib("RssFile:"));
    let stats = Symbolizer::global().stats();
    let (agent, total) = agent_share(&last);

    // Side by side: the same work with parsed debug info kept between
    // profiles (the faster, hungrier setting).
    let keep = Symbolizer::new(SymbolizerOptions::default().keep_debug_info(true));
    let (keep_cold, keep_median, _, keep_last) = twenty_heap_profiles(&keep);
    let (keep_agent, keep_total) = agent_share(&keep_last);
    let rss2 = rss_kib();

    println!(
        "leakscope symbolizer and profile cost (in-process, 32 MiB service heap, 512 KiB sampling)"
    );
    println!(
        "cpu profile build (1 s at 100 Hz)      {:>8.1} ms ({} samples)",
        cpu_build.as_secs_f64() * 1e3,
        cpu.sample.len()
    );
    println!(
        "heap profile, first (cold symbolizer)   {:>8.1} ms",
        cold.as_secs_f64() * 1e3
    );
    println!(
        "heap profile, warm median / p90         {:>8.1} / {:.1} ms",
        median.as_secs_f64() * 1e3,
        p90.as_secs_f64() * 1e3
    );
    println!(
        "  same with debug info kept: cold {:.1} ms, warm median {:.1} ms (default/kept warm ratio {:.2})",
        keep_cold.as_secs_f64() * 1e3,
        keep_median.as_secs_f64() * 1e3,
        median.as_secs_f64() / keep_median.as_secs_f64()
    );
    println!(
        "symbolizer: {} lookups, {} cache hits ({:.0}%), {} loads, {} cached",
        stats.lookups,
        stats.cache_hits,
        100.0 * stats.cache_hits as f64 / stats.lookups.max(1) as f64,
        stats.loads,
        stats.cached
    );
    println!(
        "RSS before profiles                     {:>8.1} MiB",
        rss0 as f64 / 1024.0
    );
    println!(
        "RSS after 1 CPU + 20 heap profiles      {:>8.1} MiB  (+{:.1} MiB)",
        rss1 as f64 / 1024.0,
        (rss1 as f64 - rss0 as f64) / 1024.0
    );
    println!(
        "  of which anonymous / file-backed      {:>8.1} / {:.1} MiB",
        anon1 as f64 / 1024.0,
        file1 as f64 / 1024.0
    );
    println!(
        "RSS after 20 more with debug info kept  {:>8.1} MiB  (+{:.1} MiB over start)",
        rss2 as f64 / 1024.0,
        (rss2 as f64 - rss0 as f64) / 1024.0
    );
    println!(
        "agent's own share of in-use heap shown  {:>8.2}%  ({} of {} bytes)",
        100.0 * agent as f64 / total.max(1) as f64,
        agent,
        total
    );
    println!(
        "  same with debug info kept             {:>8.2}%  ({} of {} bytes)",
        100.0 * keep_agent as f64 / keep_total.max(1) as f64,
        keep_agent,
        keep_total
    );
}

/// Cold latency, warm median, warm p90, and the last profile.
fn twenty_heap_profiles(sym: &Symbolizer) -> (Duration, Duration, Duration, Profile) {
    let mut latencies = Vec::new();
    let mut last = None;
    for _ in 0..20 {
        let (p, d) = heap_profile(sym);
        latencies.push(d);
        last = Some(p);
    }
    let cold = latencies[0];
    let mut warm: Vec<Duration> = latencies[1..].to_vec();
    warm.sort();
    (
        cold,
        warm[warm.len() / 2],
        warm[warm.len() * 9 / 10],
        last.expect("a profile"),
    )
}
