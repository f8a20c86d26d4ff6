//! The measured phases: an A/B throughput round (with a CPU profile on the
//! ON variant, checked against the server's CPU time), RSS growth on a fresh
//! service, and heap-profile latency.

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, anyhow, bail};
use leakscope::agent::profile::Profile;
use leakscope::client::Connection;

use crate::load::{Load, fetch, get_ok, run_load};
use crate::report::mib;
use crate::server::{CpuRecorder, Rss, Server, Variant, ticks_at};
use crate::{
    CONNECT_TIMEOUT, Config, HEAP_PROFILE_TIMEOUT, HEAP_PROFILES, HEAP_WARM_LEAKS, PROFILE_LEAD,
    REQUEST_TIMEOUT, RSS_CPU_PROFILE_SECS,
};

pub(crate) struct CpuCheck {
    pub(crate) captured: i64,
    pub(crate) expected: f64,
    pub(crate) hz: f64,
    pub(crate) lost_window: bool,
}

/// Decodes a CPU profile and compares its sample count with the server's
/// CPU time over the profile's own [time, time + duration] window.
pub(crate) fn check_cpu_profile(
    bytes: &[u8],
    trace: &[(SystemTime, u64)],
    clk_tck: f64,
) -> Result<CpuCheck> {
    let p = Profile::decode_bytes(bytes, "cpu profile").map_err(|e| anyhow!("{e}"))?;
    let name = |i: i64| {
        p.string_table
            .get(i as usize)
            .map(String::as_str)
            .unwrap_or("")
    };
    let idx = p
        .sample_type
        .iter()
        .position(|t| name(t.r#type) == "samples" && name(t.unit) == "count")
        .ok_or_else(|| anyhow!("cpu profile has no samples/count sample type"))?;
    let captured: i64 = p.sample.iter().filter_map(|s| s.value.get(idx)).sum();
    if p.period <= 0 {
        bail!("cpu profile has period {}", p.period);
    }
    let hz = 1e9 / p.period as f64;
    let start = SystemTime::UNIX_EPOCH + Duration::from_nanos(p.time_nanos.max(0) as u64);
    let end = start + Duration::from_nanos(p.duration_nanos.max(0) as u64);
    let (c0, c1) = match (ticks_at(trace, start), ticks_at(trace, end)) {
        (Some(a), Some(b)) => (a, b),
        _ => {
            return Ok(CpuCheck {
                captured,
                expected: f64::NAN,
                hz,
                lost_window: true,
            });
        }
    };
    Ok(CpuCheck {
        captured,
        expected: (c1 - c0) / clk_tck * hz,
        hz,
        lost_window: false,
    })
}

pub(crate) struct Round {
    pub(crate) variant: Variant,
    pub(crate) load: Load,
    /// Server CPU seconds from the end of the load to the profile's arrival
    /// (the profile build: symbolize, encode), ON only.
    pub(crate) build_cpu: Option<f64>,
    pub(crate) cpu: Option<CpuCheck>,
}

impl Round {
    pub(crate) fn rps(&self) -> f64 {
        self.load.requests as f64 / self.load.elapsed.as_secs_f64()
    }
    pub(crate) fn cpu_per_req_us(&self, clk_tck: f64) -> f64 {
        self.load.cpu_ticks as f64 / clk_tck / self.load.requests.max(1) as f64 * 1e6
    }
}

/// Asks for a CPU profile of `secs` on its own connection, in the background.
fn spawn_cpu_profile(
    addr: SocketAddr,
    secs: u64,
) -> tokio::task::JoinHandle<Result<(u16, Vec<u8>, Duration)>> {
    let path = format!("/debug/pprof/profile?seconds={secs}");
    tokio::spawn(async move { fetch(addr, &path, Duration::from_secs(secs + 60)).await })
}

async fn await_cpu_profile(
    task: tokio::task::JoinHandle<Result<(u16, Vec<u8>, Duration)>>,
) -> Result<Vec<u8>> {
    let (status, body, _) = task.await.context("cpu profile task panicked")??;
    if status != 200 {
        bail!(
            "GET /debug/pprof/profile answered {status}: {}",
            String::from_utf8_lossy(&body[..body.len().min(300)]).trim_end()
        );
    }
    Ok(body)
}

pub(crate) async fn round(cfg: &Config, server: &mut Server) -> Result<Round> {
    server.check_alive()?;
    let pid = server.pid();
    let recorder = CpuRecorder::start(pid);
    let profile =
        (server.variant == Variant::On).then(|| spawn_cpu_profile(server.addr, cfg.secs + 1));
    tokio::time::sleep(PROFILE_LEAD).await;
    let load = run_load(server, Duration::from_secs(cfg.secs), cfg.max_requests).await?;
    let (build_cpu, cpu) = match profile {
        Some(task) => {
            let after_load = server.cpu_ticks()?;
            let bytes = await_cpu_profile(task).await?;
            let after_profile = server.cpu_ticks()?;
            let trace = recorder.finish();
            let check = check_cpu_profile(&bytes, &trace, cfg.clk_tck)?;
            (
                Some(after_profile.saturating_sub(after_load) as f64 / cfg.clk_tck),
                Some(check),
            )
        }
        None => {
            drop(recorder);
            (None, None)
        }
    };
    server.check_alive()?;
    Ok(Round {
        variant: server.variant,
        load,
        build_cpu,
        cpu,
    })
}

pub(crate) struct RssResult {
    pub(crate) before_kib: Rss,
    pub(crate) after_kib: Rss,
    pub(crate) cpu: Option<CpuCheck>,
    pub(crate) errors: Vec<String>,
}

impl RssResult {
    pub(crate) fn growth_mib(&self) -> f64 {
        mib(self.after_kib.total) - mib(self.before_kib.total)
    }
}

/// A fresh service: warm-up traffic, RSS; then (ON) one CPU profile under
/// the same traffic and `HEAP_PROFILES` heap profiles, or (OFF) the same
/// traffic alone; RSS again.
pub(crate) async fn rss_phase(cfg: &Config, variant: Variant) -> Result<RssResult> {
    let mut server = Server::start(
        &cfg.bin,
        variant,
        &format!("fresh {} (RSS)", variant.name()),
    )?;
    let mut errors = Vec::new();
    let warm = run_load(&server, Duration::from_secs(2), cfg.max_requests).await?;
    errors.extend(warm.errors);
    server.check_alive()?;
    let before_kib = server.rss_kib()?;
    let recorder = CpuRecorder::start(server.pid());
    let profile =
        (variant == Variant::On).then(|| spawn_cpu_profile(server.addr, RSS_CPU_PROFILE_SECS));
    tokio::time::sleep(PROFILE_LEAD).await;
    let load = run_load(
        &server,
        Duration::from_secs(RSS_CPU_PROFILE_SECS),
        cfg.max_requests,
    )
    .await?;
    errors.extend(load.errors);
    let mut cpu = None;
    if let Some(task) = profile {
        let bytes = await_cpu_profile(task).await?;
        let trace = recorder.finish();
        cpu = Some(check_cpu_profile(&bytes, &trace, cfg.clk_tck)?);
        let mut c = Connection::connect(server.addr, CONNECT_TIMEOUT).await?;
        for _ in 0..HEAP_PROFILES {
            get_ok(&mut c, "/debug/pprof/heap", HEAP_PROFILE_TIMEOUT).await?;
        }
    } else {
        drop(recorder);
    }
    server.check_alive()?;
    let after_kib = server.rss_kib()?;
    Ok(RssResult {
        before_kib,
        after_kib,
        cpu,
        errors,
    })
}

pub(crate) struct HeapLatency {
    pub(crate) ms: Vec<f64>,
    pub(crate) leak_site_seen: bool,
    pub(crate) bytes: usize,
}

/// `HEAP_WARM_LEAKS` × `/leak/heap?kb=64`, then `HEAP_PROFILES` sequential
/// heap profiles, each timed from request to the end of the body.
pub(crate) async fn heap_latency(server: &mut Server) -> Result<HeapLatency> {
    server.check_alive()?;
    let mut c = Connection::connect(server.addr, CONNECT_TIMEOUT).await?;
    for _ in 0..HEAP_WARM_LEAKS {
        get_ok(&mut c, "/leak/heap?kb=64", REQUEST_TIMEOUT).await?;
    }
    let mut ms = Vec::with_capacity(HEAP_PROFILES);
    let mut last = Vec::new();
    for _ in 0..HEAP_PROFILES {
        let t0 = Instant::now();
        let body = get_ok(&mut c, "/debug/pprof/heap", HEAP_PROFILE_TIMEOUT).await?;
        ms.push(t0.elapsed().as_secs_f64() * 1e3);
        last = body;
    }
    let p = Profile::decode_bytes(&last, "heap profile").map_err(|e| anyhow!("{e}"))?;
    let leak_site_seen = p
        .function
        .iter()
        .filter_map(|f| p.string_table.get(f.name as usize))
        .any(|n| n.contains("leak_heap_kib"));
    server.check_alive()?;
    Ok(HeapLatency {
        ms,
        leak_site_seen,
        bytes: last.len(),
    })
}
