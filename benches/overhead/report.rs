//! Statistics (median, percentile) and the printed report: the per-round
//! table and the summary of on/off ratios.

use crate::phases::{CpuCheck, HeapLatency, Round, RssResult};
use crate::server::Variant;
use crate::{CONNECTIONS, Config, HEAP_PROFILES};

fn sorted(v: &[f64]) -> Vec<f64> {
    let mut s: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    s.sort_by(|a, b| a.total_cmp(b));
    s
}

fn median(v: &[f64]) -> f64 {
    let s = sorted(v);
    match s.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

/// Nearest-rank percentile.
fn percentile(v: &[f64], p: f64) -> f64 {
    let s = sorted(v);
    if s.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * s.len() as f64).ceil().max(1.0) as usize;
    s[rank.min(s.len()) - 1]
}

/// KiB to MiB.
pub(crate) fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// The header of the per-round table.
pub(crate) fn print_round_header() {
    println!(
        "{:>5} {:>4} {:>10} {:>11} {:>9} {:>13} {:>22}",
        "round", "var", "requests", "req/s", "cpu s", "cpu us/req", "cpu samples cap/exp"
    );
}

/// One row of the per-round table; `i` counts from 0.
pub(crate) fn print_round(i: usize, r: &Round, clk_tck: f64) {
    let samples = match &r.cpu {
        Some(c) if !c.lost_window => format!("{} / {:.0}", c.captured, c.expected),
        Some(c) => format!("{} / ?", c.captured),
        None => "-".to_owned(),
    };
    println!(
        "{:>5} {:>4} {:>10} {:>11.0} {:>9.2} {:>13.1} {:>22}{}",
        i + 1,
        r.variant.name(),
        r.load.requests,
        r.rps(),
        r.load.cpu_ticks as f64 / clk_tck,
        r.cpu_per_req_us(clk_tck),
        samples,
        if r.load.capped {
            "  (request cap reached)"
        } else {
            ""
        }
    );
}

/// The summary: on/off ratios of paired rounds, heap-profile latency, RSS
/// growth and CPU samples captured versus expected.
pub(crate) fn print_summary(
    cfg: &Config,
    rounds: &[Round],
    heap: &HeapLatency,
    rss_on: &RssResult,
    rss_off: &RssResult,
) {
    // Pairs: round i of OFF with round i of ON (adjacent in time).
    let offs: Vec<&Round> = rounds
        .iter()
        .filter(|r| r.variant == Variant::Off)
        .collect();
    let ons: Vec<&Round> = rounds.iter().filter(|r| r.variant == Variant::On).collect();
    let tput_ratio: Vec<f64> = offs
        .iter()
        .zip(&ons)
        .map(|(a, b)| b.rps() / a.rps())
        .collect();
    let cpu_ratio: Vec<f64> = offs
        .iter()
        .zip(&ons)
        .map(|(a, b)| b.cpu_per_req_us(cfg.clk_tck) / a.cpu_per_req_us(cfg.clk_tck))
        .collect();
    let med = |v: &[&Round], f: &dyn Fn(&Round) -> f64| {
        median(&v.iter().map(|r| f(r)).collect::<Vec<_>>())
    };
    let rps_off = med(&offs, &|r| r.rps());
    let rps_on = med(&ons, &|r| r.rps());
    let cpr_off = med(&offs, &|r| r.cpu_per_req_us(cfg.clk_tck));
    let cpr_on = med(&ons, &|r| r.cpu_per_req_us(cfg.clk_tck));
    let build_cpu_ms = median(
        &ons.iter()
            .filter_map(|r| r.build_cpu)
            .map(|s| s * 1e3)
            .collect::<Vec<_>>(),
    );

    let checks: Vec<&CpuCheck> = ons
        .iter()
        .filter_map(|r| r.cpu.as_ref())
        .chain(rss_on.cpu.as_ref())
        .filter(|c| !c.lost_window)
        .collect();
    let captured: i64 = checks.iter().map(|c| c.captured).sum();
    let expected: f64 = checks.iter().map(|c| c.expected).sum();
    let per_profile: Vec<String> = checks
        .iter()
        .map(|c| format!("{:.2}", c.captured as f64 / c.expected))
        .collect();
    let hz = checks.first().map_or(f64::NAN, |c| c.hz);

    println!();
    println!(
        "leakscope overhead (leaky_service, {CONNECTIONS} connections, {} rounds x {} s, A/B alternated)",
        cfg.rounds, cfg.secs
    );
    println!(
        "throughput on/off             {:.3}  (median of {} paired rounds; on {:.0} req/s, off {:.0} req/s)",
        median(&tput_ratio),
        tput_ratio.len(),
        rps_on,
        rps_off
    );
    println!(
        "server CPU per request on/off {:.3}  (on {:.1} us, off {:.1} us)",
        median(&cpu_ratio),
        cpr_on,
        cpr_off
    );
    println!(
        "cpu profile build after load  {build_cpu_ms:.0} ms server CPU (median, symbolize + encode)"
    );
    println!(
        "heap profile latency          median {:.1} ms, p90 {:.1} ms ({} profiles; first {:.1} ms, max {:.1} ms, {} KiB each)",
        median(&heap.ms),
        percentile(&heap.ms, 90.0),
        heap.ms.len(),
        heap.ms.first().copied().unwrap_or(f64::NAN),
        percentile(&heap.ms, 100.0),
        heap.bytes / 1024
    );
    println!(
        "RSS growth after 1 CPU + {HEAP_PROFILES} heap profiles: {:+.1} MiB (off-variant growth {:+.1} MiB, difference {:+.1} MiB)",
        rss_on.growth_mib(),
        rss_off.growth_mib(),
        rss_on.growth_mib() - rss_off.growth_mib()
    );
    for (name, r) in [("on", &rss_on), ("off", &rss_off)] {
        println!(
            "  {name:>3}: VmRSS {:.1} -> {:.1} MiB (anon {:.1} -> {:.1}, file-backed {:.1} -> {:.1})",
            mib(r.before_kib.total),
            mib(r.after_kib.total),
            mib(r.before_kib.anon),
            mib(r.after_kib.anon),
            mib(r.before_kib.file),
            mib(r.after_kib.file)
        );
    }
    println!(
        "CPU samples captured/expected {:.2} ({} of {:.0} at {:.0} Hz, {} profiles under load: {})",
        captured as f64 / expected,
        captured,
        expected,
        hz,
        checks.len(),
        per_profile.join(" ")
    );
}
