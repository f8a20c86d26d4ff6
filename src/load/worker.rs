//! The workers of a run: what they share (bounds, counters, the schedule
//! of paced mode), one request at a time on a keep-alive connection, and
//! how a failure is named.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use leakscope_agent::client::{ClientError, Connection};

use super::target::{SEQ, Target};
use super::{Histogram, Progress};

/// First pause of a worker before it connects again after a failed
/// connect; it doubles up to [`MAX_BACKOFF`] and resets on success.
const FIRST_BACKOFF: Duration = Duration::from_millis(10);
/// Longest pause before a new connect.
const MAX_BACKOFF: Duration = Duration::from_millis(250);

/// What the workers share.
pub(super) struct Shared {
    pub(super) addr: SocketAddr,
    pub(super) target: Target,
    pub(super) timeout: Duration,
    /// No request is sent at or after this instant.
    pub(super) end: Option<Instant>,
    /// At most this many requests.
    pub(super) limit: Option<u64>,
    /// Request numbers handed out so far.
    pub(super) issued: AtomicU64,
    pub(super) pacer: Option<Pacer>,
    /// Live counts for [`Progress`].
    pub(super) sent: AtomicU64,
    pub(super) ok: AtomicU64,
    pub(super) failed: AtomicU64,
}

impl Shared {
    /// The number of the next request, unless the bound of requests is
    /// reached.
    fn ticket(&self) -> Option<u64> {
        match self.limit {
            None => Some(self.issued.fetch_add(1, Relaxed)),
            Some(limit) => self
                .issued
                .fetch_update(Relaxed, Relaxed, |n| (n < limit).then_some(n + 1))
                .ok(),
        }
    }

    /// True when no more requests may be sent at `now`.
    fn done(&self, now: Instant) -> bool {
        self.end.is_some_and(|end| now >= end)
            || self
                .limit
                .is_some_and(|limit| self.issued.load(Relaxed) >= limit)
    }

    pub(super) fn progress(&self, elapsed: Duration) -> Progress {
        Progress {
            sent: self.sent.load(Relaxed),
            ok: self.ok.load(Relaxed),
            errors: self.failed.load(Relaxed),
            elapsed,
        }
    }
}

/// The schedule of paced mode: request number `n` is due at
/// `start + n × interval`, whoever sends it and however late.
pub(super) struct Pacer {
    pub(super) start: Instant,
    /// Requests per second (positive and finite).
    pub(super) per_second: f64,
}

impl Pacer {
    /// When request number `ticket` is due; `None` past any instant.
    /// Computed from the number, not by adding intervals, so the schedule
    /// does not drift.
    fn slot(&self, ticket: u64) -> Option<Instant> {
        let offset = Duration::try_from_secs_f64(ticket as f64 / self.per_second).ok()?;
        self.start.checked_add(offset)
    }
}

/// The counts of one worker, merged at the end.
pub(super) struct Stats {
    pub(super) requests: u64,
    pub(super) ok: u64,
    pub(super) errors: BTreeMap<String, u64>,
    /// From the due time in paced mode, else from the send.
    pub(super) latency: Histogram,
    /// From the send.
    pub(super) service_time: Histogram,
    /// Requests and failures by kind, per entry of the target.
    pub(super) by_path: Vec<(u64, BTreeMap<String, u64>)>,
}

impl Stats {
    pub(super) fn new(paths: usize) -> Stats {
        Stats {
            requests: 0,
            ok: 0,
            errors: BTreeMap::new(),
            latency: Histogram::new(),
            service_time: Histogram::new(),
            by_path: vec![(0, BTreeMap::new()); paths],
        }
    }

    pub(super) fn merge(&mut self, other: Stats) {
        self.requests += other.requests;
        self.ok += other.ok;
        add_counts(&mut self.errors, other.errors);
        self.latency.merge(&other.latency);
        self.service_time.merge(&other.service_time);
        for (mine, theirs) in self.by_path.iter_mut().zip(other.by_path) {
            mine.0 += theirs.0;
            add_counts(&mut mine.1, theirs.1);
        }
    }
}

fn add_counts(into: &mut BTreeMap<String, u64>, from: BTreeMap<String, u64>) {
    for (kind, n) in from {
        *into.entry(kind).or_default() += n;
    }
}

/// How one request failed.
enum Failure {
    /// Connecting failed.
    Connect(ClientError),
    /// Connected, but the request failed.
    Request(ClientError),
    /// The whole attempt took longer than the timeout.
    Timeout,
}

/// One worker: one connection, one request at a time until the bound.
///
/// In paced mode a request waits for its due time. When every worker was
/// held up by slow answers, the requests that fell due meanwhile go out
/// late, and their latency counts from their due time: they carry the
/// wait, so a stall is not hidden by the requests it kept from being sent.
/// A request that a free worker waited for counts from its send, so the
/// timer's own lateness (up to a millisecond) is not charged to the
/// server. The service time always counts from the send.
pub(super) async fn worker(shared: Arc<Shared>) -> Stats {
    let mut stats = Stats::new(shared.target.paths.len());
    let mut conn: Option<Connection> = None;
    let mut backoff = Duration::ZERO;
    loop {
        if shared.done(Instant::now()) {
            break;
        }
        if !backoff.is_zero() {
            let until = Instant::now() + backoff;
            let until = shared.end.map_or(until, |end| end.min(until));
            tokio::time::sleep_until(until.into()).await;
        }
        if shared.end.is_some_and(|end| Instant::now() >= end) {
            break;
        }
        let Some(ticket) = shared.ticket() else {
            break;
        };
        // In paced mode, the due time of a request that no worker was free
        // to take when it fell due: its latency counts from then.
        let mut overdue = None;
        if let Some(pacer) = &shared.pacer {
            let Some(slot) = pacer.slot(ticket) else {
                break;
            };
            if shared.end.is_some_and(|end| slot >= end) {
                break;
            }
            if slot < Instant::now() {
                overdue = Some(slot);
            } else {
                tokio::time::sleep_until(slot.into()).await;
            }
        }
        let index = shared.target.pick(ticket);
        let how = &shared.target.how[index];
        let (path, body) = {
            let (path, body) = (&shared.target.paths[index].0, how.body.as_deref());
            if how.numbered {
                let n = (ticket + 1).to_string();
                (
                    std::borrow::Cow::Owned(path.replace(SEQ, &n)),
                    body.map(|b| std::borrow::Cow::Owned(b.replace(SEQ, &n))),
                )
            } else {
                (
                    std::borrow::Cow::Borrowed(path.as_str()),
                    body.map(std::borrow::Cow::Borrowed),
                )
            }
        };
        shared.sent.fetch_add(1, Relaxed);
        stats.requests += 1;
        stats.by_path[index].0 += 1;
        let started = Instant::now();
        let request = Outgoing {
            method: how.method,
            path: &path,
            content_type: how.content_type,
            body: body.as_deref().map_or(&[][..], str::as_bytes),
        };
        let attempt = attempt(&mut conn, shared.addr, request, shared.timeout);
        let result = match tokio::time::timeout(shared.timeout, attempt).await {
            Ok(result) => result,
            Err(_) => {
                // The stream is in the middle of an exchange: start over.
                conn = None;
                Err(Failure::Timeout)
            }
        };
        let kind = match result {
            Ok(status) => {
                let now = Instant::now();
                let from = overdue.unwrap_or(started);
                stats.latency.record(now.duration_since(from));
                stats.service_time.record(now.duration_since(started));
                backoff = Duration::ZERO;
                if (200..300).contains(&status) {
                    stats.ok += 1;
                    shared.ok.fetch_add(1, Relaxed);
                    continue;
                }
                format!("HTTP {status}")
            }
            Err(Failure::Connect(e)) => {
                backoff = (backoff * 2).clamp(FIRST_BACKOFF, MAX_BACKOFF);
                error_kind(&e)
            }
            Err(Failure::Request(e)) => error_kind(&e),
            Err(Failure::Timeout) => "timeout".to_owned(),
        };
        shared.failed.fetch_add(1, Relaxed);
        *stats.by_path[index].1.entry(kind.clone()).or_default() += 1;
        *stats.errors.entry(kind).or_default() += 1;
    }
    stats
}

/// One request to send.
struct Outgoing<'a> {
    method: &'static str,
    path: &'a str,
    content_type: Option<&'static str>,
    body: &'a [u8],
}

/// Sends one request on the worker's connection, connecting first if there
/// is none; returns the status. A failed request drops the connection.
async fn attempt(
    conn: &mut Option<Connection>,
    addr: SocketAddr,
    r: Outgoing<'_>,
    timeout: Duration,
) -> Result<u16, Failure> {
    let open = match conn {
        Some(open) => open,
        None => conn.insert(
            Connection::connect(addr, timeout)
                .await
                .map_err(Failure::Connect)?,
        ),
    };
    match open
        .request(r.method, r.path, r.content_type, r.body, timeout)
        .await
    {
        Ok(response) => Ok(response.status),
        Err(e) => {
            *conn = None;
            Err(Failure::Request(e))
        }
    }
}

/// The kind of a failed request, as counted in
/// [`LoadReport::errors`](super::LoadReport::errors).
fn error_kind(e: &ClientError) -> String {
    use std::io::ErrorKind;
    match e {
        ClientError::Timeout { .. } => "timeout".to_owned(),
        ClientError::Io { source, .. } => match source.kind() {
            ErrorKind::ConnectionRefused => "connect refused".to_owned(),
            ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe => {
                "connection reset".to_owned()
            }
            ErrorKind::UnexpectedEof => "connection closed".to_owned(),
            ErrorKind::TimedOut => "timeout".to_owned(),
            kind => format!("io: {kind}"),
        },
        ClientError::Status { status, .. } => format!("HTTP {status}"),
        ClientError::BadResponse { .. } => "bad response".to_owned(),
        ClientError::BreakerOpen { .. } => "circuit breaker open".to_owned(),
        ClientError::Tls { .. } => "tls".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pacer_dues_are_fixed_by_request_number() {
        const US: Duration = Duration::from_micros(1);
        let start = Instant::now();
        let ms = Duration::from_millis;
        let pacer = Pacer {
            start,
            per_second: 100.0,
        };
        // Request n is due n intervals after the start, whenever it is
        // claimed: a worker that comes late finds its due time passed.
        assert_eq!(pacer.slot(0), Some(start));
        assert_eq!(pacer.slot(1), Some(start + ms(10)));
        assert_eq!(pacer.slot(130), Some(start + ms(1_300)));
        // A third of a millisecond apart, without drift over a million.
        let third = Pacer {
            start,
            per_second: 3_000.0,
        };
        let late = third.slot(3_000_000).map(|t| t - start);
        assert!(
            late.is_some_and(|d| d.abs_diff(Duration::from_secs(1_000)) < US),
            "{late:?}"
        );
        let tiny = Pacer {
            start,
            per_second: 1e-300,
        };
        assert_eq!(tiny.slot(1), None);
    }

    #[test]
    fn errors_are_counted_by_kind() {
        use std::io::{Error, ErrorKind};
        let io = |kind| ClientError::Io {
            method: "GET",
            path: "/".into(),
            source: Error::new(kind, "x"),
        };
        assert_eq!(
            error_kind(&io(ErrorKind::ConnectionRefused)),
            "connect refused"
        );
        assert_eq!(error_kind(&io(ErrorKind::BrokenPipe)), "connection reset");
        assert_eq!(
            error_kind(&io(ErrorKind::UnexpectedEof)),
            "connection closed"
        );
        assert_eq!(
            error_kind(&io(ErrorKind::AddrNotAvailable)),
            "io: address not available"
        );
        let timeout = ClientError::Timeout {
            method: "GET",
            path: "/".into(),
            timeout: Duration::from_secs(1),
        };
        assert_eq!(error_kind(&timeout), "timeout");
    }
}
