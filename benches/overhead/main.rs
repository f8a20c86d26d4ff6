//! Overhead of the leakscope agent on the leaky example service.
//!
//! A plain `fn main` harness (no criterion). It runs the already-built
//! `target/release/examples/leaky_service` twice side by side:
//!
//! - OFF: `_RJEM_MALLOC_CONF=prof:false` (jemalloc heap profiling off), no CPU profile;
//! - ON: the default (heap profiling on, one sample per 512 KiB) plus a CPU
//!   profile (`/debug/pprof/profile`, 100 Hz) running during the load;
//!
//! drives both with a closed-loop keep-alive HTTP/1.1 load generator (8
//! connections on `GET /`), rounds alternated OFF, ON, OFF, ON, ..., and
//! reports, as ratios measured in the same run: throughput, server CPU per
//! request, heap-profile latency, RSS growth after profiling, and CPU samples
//! captured versus expected.
//!
//! ```text
//! cargo build --release --example leaky_service
//! cargo bench --bench overhead
//! ```
//!
//! Environment: `LEAKSCOPE_BENCH_SECS` (seconds per round, default 3),
//! `LEAKSCOPE_BENCH_ROUNDS` (rounds per variant, default 3),
//! `LEAKSCOPE_BENCH_MAX_REQUESTS` (cap per round, default 2000000),
//! `CARGO_TARGET_DIR` (where the example binary is looked for).
//!
//! Layout: `server` (the child process, /proc readings), `load` (the load
//! generator and requests), `phases` (what is measured), `report`
//! (statistics and printing); this file holds the configuration and the
//! order of the run.

mod load;
mod phases;
mod report;
mod server;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, bail};

use crate::load::{fetch, run_load};
use crate::phases::{Round, heap_latency, round, rss_phase};
use crate::server::{LIVE_PIDS, Server, Variant};

/// Load connections per round.
const CONNECTIONS: usize = 8;
/// Seconds of the CPU profile taken before measuring RSS growth.
const RSS_CPU_PROFILE_SECS: u64 = 5;
/// Heap profiles in the latency and RSS phases.
const HEAP_PROFILES: usize = 20;
/// `/leak/heap?kb=64` requests before the heap-profile latency phase.
const HEAP_WARM_LEAKS: usize = 50;
/// Longest any single ordinary request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest a heap profile request may take.
const HEAP_PROFILE_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest a connect may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest the service may take to print its listening line.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(15);
/// Time between asking for a CPU profile and starting the load, so that the
/// sampler is running for the whole load window.
const PROFILE_LEAD: Duration = Duration::from_millis(200);
/// How often the server's CPU time is polled while a CPU profile runs.
const CPU_POLL: Duration = Duration::from_millis(5);

fn main() {
    // `cargo bench` passes `--bench`; nothing here takes arguments.
    match run() {
        Ok(true) => {}
        Ok(false) => {
            eprintln!("overhead: the service misbehaved during the run (see ERRORS above)");
            std::process::exit(1);
        }
        Err(e) => {
            eprintln!("overhead: error: {e:#}");
            std::process::exit(1);
        }
    }
}

// ---------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------

struct Config {
    bin: PathBuf,
    secs: u64,
    rounds: usize,
    max_requests: u64,
    clk_tck: f64,
}

fn env_number<T: std::str::FromStr>(
    name: &str,
    default: T,
    valid: impl Fn(&T) -> bool,
) -> Result<T> {
    match std::env::var(name) {
        Ok(v) => match v.trim().parse::<T>() {
            Ok(n) if valid(&n) => Ok(n),
            _ => bail!("{name}={v:?} is not a valid value"),
        },
        Err(_) => Ok(default),
    }
}

impl Config {
    fn from_env() -> Result<Config> {
        let secs = env_number("LEAKSCOPE_BENCH_SECS", 3u64, |&n| (1..=300).contains(&n))?;
        let rounds = env_number("LEAKSCOPE_BENCH_ROUNDS", 3usize, |&n| (1..=50).contains(&n))?;
        let max_requests = env_number("LEAKSCOPE_BENCH_MAX_REQUESTS", 2_000_000u64, |&n| n > 0)?;
        // SAFETY: sysconf only reads a configuration value.
        let tck = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        if tck <= 0 {
            bail!("sysconf(_SC_CLK_TCK) failed");
        }
        Ok(Config {
            bin: find_service_binary()?,
            secs,
            rounds,
            max_requests,
            clk_tck: tck as f64,
        })
    }
}

/// `target/release/examples/leaky_service`, with the target directory from
/// `CARGO_TARGET_DIR`, else the workspace's `target/`, else the directory
/// this bench binary was built into.
fn find_service_binary() -> Result<PathBuf> {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut candidates = Vec::new();
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        let dir = PathBuf::from(dir);
        candidates.push(if dir.is_absolute() {
            dir
        } else {
            manifest.join(dir)
        });
    }
    candidates.push(manifest.join("target"));
    // <target>/release/deps/overhead-HASH -> <target>
    if let Some(t) = std::env::current_exe()
        .ok()
        .and_then(|e| Some(e.parent()?.parent()?.parent()?.to_path_buf()))
    {
        candidates.push(t);
    }
    let paths: Vec<PathBuf> = candidates
        .iter()
        .map(|t| t.join("release").join("examples").join("leaky_service"))
        .collect();
    let Some(found) = paths.iter().find(|p| p.is_file()) else {
        bail!(
            "the example service is not built (looked for {}): run \
             `cargo build --release --example leaky_service` first",
            paths
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    };
    warn_if_stale(found, manifest);
    Ok(found.clone())
}

/// Warns when a Rust source file of the service is newer than its binary.
fn warn_if_stale(bin: &Path, root: &Path) {
    let Ok(built) = std::fs::metadata(bin).and_then(|m| m.modified()) else {
        return;
    };
    let mut newest: Option<(SystemTime, PathBuf)> = None;
    let mut stack: Vec<PathBuf> = ["src", "agent/src", "examples"]
        .iter()
        .map(|p| root.join(p))
        .collect();
    while let Some(p) = stack.pop() {
        let Ok(meta) = std::fs::metadata(&p) else {
            continue;
        };
        if meta.is_dir() {
            if let Ok(rd) = std::fs::read_dir(&p) {
                stack.extend(rd.flatten().map(|e| e.path()));
            }
        } else if p.extension().is_some_and(|e| e == "rs")
            && let Ok(m) = meta.modified()
            && newest.as_ref().is_none_or(|(t, _)| m > *t)
        {
            newest = Some((m, p));
        }
    }
    if let Some((t, p)) = newest
        && t > built
    {
        eprintln!(
            "warning: {} is newer than {}; rebuild with \
             `cargo build --release --example leaky_service` to measure the current code",
            p.display(),
            bin.display()
        );
    }
}

fn run() -> Result<bool> {
    let cfg = Config::from_env()?;
    // Everything below is bounded by its own timeouts; this is the backstop.
    let budget = Duration::from_secs(240 + cfg.rounds as u64 * 2 * (cfg.secs + 15));
    std::thread::spawn(move || {
        std::thread::sleep(budget);
        eprintln!("overhead: error: the run took longer than {budget:?}; killing the services");
        if let Ok(live) = LIVE_PIDS.lock() {
            for &pid in live.iter() {
                // SAFETY: kill only sends a signal to a child this harness started.
                unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            }
        }
        std::process::exit(2);
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("building the tokio runtime")?;
    rt.block_on(bench(cfg))
}

async fn bench(cfg: Config) -> Result<bool> {
    println!("service: {}", cfg.bin.display());
    println!(
        "config: {CONNECTIONS} connections, {} rounds x {} s per variant, A/B alternated, cap {} requests/round",
        cfg.rounds, cfg.secs, cfg.max_requests
    );
    let mut errors: Vec<String> = Vec::new();

    let mut off = Server::start(&cfg.bin, Variant::Off, "throughput off")?;
    let mut on = Server::start(&cfg.bin, Variant::On, "throughput on")?;
    println!(
        "off: pid {} on {}    on: pid {} on {}",
        off.pid(),
        off.addr,
        on.pid(),
        on.addr
    );

    // The variants must be what they claim: OFF answers 500 on the heap endpoint.
    let (status, body, _) = fetch(off.addr, "/debug/pprof/heap", HEAP_PROFILE_TIMEOUT).await?;
    if status != 500 {
        errors.push(format!(
            "OFF variant: /debug/pprof/heap answered {status}, expected 500 (heap profiling off); \
             _RJEM_MALLOC_CONF=prof:false did not take effect"
        ));
    }
    drop(body);

    // Warm both (connections, allocator, page cache), not measured.
    for s in [&mut off, &mut on] {
        let w = run_load(s, Duration::from_secs(1), cfg.max_requests).await?;
        errors.extend(
            w.errors
                .into_iter()
                .map(|e| format!("warm-up {}: {e}", s.label)),
        );
    }

    println!();
    report::print_round_header();
    let mut rounds: Vec<Round> = Vec::new();
    for i in 0..cfg.rounds {
        for server in [&mut off, &mut on] {
            let r = round(&cfg, server).await?;
            report::print_round(i, &r, cfg.clk_tck);
            for e in &r.load.errors {
                errors.push(format!("round {} {}: {e}", i + 1, server.label));
            }
            rounds.push(r);
        }
    }

    println!();
    println!(
        "heap profile latency on the on server ({HEAP_WARM_LEAKS} x /leak/heap?kb=64 first) ..."
    );
    let heap = heap_latency(&mut on).await?;
    if !heap.leak_site_seen {
        println!(
            "  note: leak_heap_kib not in the last heap profile (sampling can miss {} x 64 KiB, rarely)",
            HEAP_WARM_LEAKS
        );
    }

    // Both throughput servers must have survived everything.
    off.check_alive()?;
    on.check_alive()?;
    let outputs = [
        (off.label.clone(), off.output()),
        (on.label.clone(), on.output()),
    ];
    drop(off);
    drop(on);

    println!(
        "RSS growth on fresh services (2 s warm-up, then {RSS_CPU_PROFILE_SECS} s of load) ..."
    );
    let rss_off = rss_phase(&cfg, Variant::Off).await?;
    let rss_on = rss_phase(&cfg, Variant::On).await?;
    errors.extend(rss_off.errors.iter().map(|e| format!("RSS off: {e}")));
    errors.extend(rss_on.errors.iter().map(|e| format!("RSS on: {e}")));

    report::print_summary(&cfg, &rounds, &heap, &rss_on, &rss_off);

    for (label, out) in &outputs {
        if !out.is_empty() {
            println!("\noutput of the {label} service:\n{out}");
        }
    }
    if errors.is_empty() {
        Ok(true)
    } else {
        println!("\nERRORS ({}):", errors.len());
        for e in &errors {
            println!("  {e}");
        }
        Ok(false)
    }
}
