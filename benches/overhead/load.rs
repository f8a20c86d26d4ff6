//! The load generator: a closed loop of keep-alive connections on `GET /`,
//! and the one-off requests of the phases, all through
//! `leakscope::client::Connection`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use leakscope::client::{Connection, Response};

use crate::server::Server;
use crate::{CONNECT_TIMEOUT, CONNECTIONS, REQUEST_TIMEOUT};

/// GET on a fresh connection: status, body and time to the whole body.
pub(crate) async fn fetch(
    addr: SocketAddr,
    path: &str,
    limit: Duration,
) -> Result<(u16, Vec<u8>, Duration)> {
    let mut c = Connection::connect(addr, CONNECT_TIMEOUT).await?;
    let t0 = Instant::now();
    let r = c.get(path, limit).await?;
    let took = t0.elapsed();
    Ok((r.status, r.body, took))
}

/// GET that must answer 200; returns the body.
pub(crate) async fn get_ok(c: &mut Connection, path: &str, limit: Duration) -> Result<Vec<u8>> {
    let r = c.get(path, limit).await?;
    if r.status != 200 {
        bail!("GET {path} answered {}: {}", r.status, body_text(&r));
    }
    Ok(r.body)
}

/// The start of a body, for error messages.
pub(crate) fn body_text(r: &Response) -> String {
    let b = &r.body[..r.body.len().min(300)];
    String::from_utf8_lossy(b).trim_end().to_owned()
}

pub(crate) struct Load {
    pub(crate) requests: u64,
    pub(crate) elapsed: Duration,
    pub(crate) cpu_ticks: u64,
    pub(crate) capped: bool,
    pub(crate) errors: Vec<String>,
}

/// Closed loop: `CONNECTIONS` keep-alive connections each sending `GET /`
/// back to back for `dur` (or until `max_requests` were sent). Server CPU is
/// read just before the first and just after the last request.
pub(crate) async fn run_load(server: &Server, dur: Duration, max_requests: u64) -> Result<Load> {
    let mut conns = Vec::with_capacity(CONNECTIONS);
    for _ in 0..CONNECTIONS {
        conns.push(Connection::connect(server.addr, CONNECT_TIMEOUT).await?);
    }
    let issued = Arc::new(AtomicU64::new(0));
    let cpu0 = server.cpu_ticks()?;
    let start = Instant::now();
    let deadline = start + dur;
    let mut set = tokio::task::JoinSet::new();
    for mut c in conns {
        let issued = Arc::clone(&issued);
        set.spawn(async move {
            let mut done = 0u64;
            let mut errors = Vec::new();
            while Instant::now() < deadline {
                if issued.fetch_add(1, Ordering::Relaxed) >= max_requests {
                    break;
                }
                match c.get("/", REQUEST_TIMEOUT).await {
                    Ok(r) if r.status == 200 && r.body.starts_with(b"ok ") => done += 1,
                    Ok(r) => {
                        errors.push(format!("GET / answered {}: {:?}", r.status, body_text(&r)))
                    }
                    Err(e) => {
                        errors.push(format!("{e:#}"));
                        // Reconnect once; give up on this connection if that fails.
                        match Connection::connect(c.addr(), CONNECT_TIMEOUT).await {
                            Ok(fresh) => c = fresh,
                            Err(e) => {
                                errors.push(format!("reconnect: {e:#}"));
                                break;
                            }
                        }
                    }
                }
                if errors.len() > 20 {
                    break;
                }
            }
            (done, errors)
        });
    }
    let mut requests = 0;
    let mut errors = Vec::new();
    while let Some(r) = set.join_next().await {
        let (done, errs) = r.context("load task panicked")?;
        requests += done;
        errors.extend(errs);
    }
    let elapsed = start.elapsed();
    let cpu1 = server.cpu_ticks()?;
    Ok(Load {
        requests,
        elapsed,
        cpu_ticks: cpu1.saturating_sub(cpu0),
        capped: issued.load(Ordering::Relaxed) >= max_requests,
        errors,
    })
}
