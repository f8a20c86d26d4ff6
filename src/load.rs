//! The load generator: puts an HTTP service under load, because the leaks
//! leakscope looks for appear under load. `leakscope load URL`, the demo
//! and the tests use it.
//!
//! [`run`] sends requests to a [`Target`] (one URL, a weighted mix of
//! paths on one server, or a mix of [`Request`]s of any method, with
//! bodies, numbered so each can name a thing of its own) from [`LoadOptions::concurrency`] workers, each
//! a tokio task with its own keep-alive [`Connection`], until a bound (a
//! duration, a number of requests, or both) is reached, and returns a
//! [`LoadReport`]: requests, successes, errors by kind, latency histogram.
//!
//! - **Closed loop** (no [`LoadOptions::rate`]): each worker sends its next
//!   request as soon as the previous answer arrived, so the server sets the
//!   pace.
//! - **Open loop** ([`LoadOptions::rate`] set): all workers share one
//!   schedule of send times `1/rate` apart and never send ahead of it. A
//!   slot nobody could take in time (every worker busy with a slow answer)
//!   is dropped rather than made up for with a burst later, so the rate is
//!   never exceeded and the report shows the rate actually achieved.
//!
//! ```no_run
//! # async fn demo() -> Result<(), leakscope::load::LoadError> {
//! use std::time::Duration;
//! use leakscope::load::{self, LoadOptions, Target};
//!
//! // Mostly normal requests, some that leak.
//! let target = Target::mix(
//!     "http://127.0.0.1:6060",
//!     [("/", 20), ("/leak/heap?kb=256", 4), ("/leak/thread", 1)],
//! )?;
//! let opts = LoadOptions::default().rate(200.0).duration(Duration::from_secs(30));
//! let report = load::run(&target, &opts, None).await?;
//! println!("{}", report.summary());
//! # Ok(())
//! # }
//! ```

mod histogram;
mod report;

pub use histogram::Histogram;
pub use report::{LoadReport, Progress};

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use leakscope_agent::client::url::HttpUrl;
use leakscope_agent::client::{ClientError, Connection};
use tokio::task::JoinSet;

/// Settings of [`run`]. At least one bound, [`duration`](Self::duration)
/// or [`requests`](Self::requests), must be set; with both, the first one
/// reached ends the run.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct LoadOptions {
    /// Workers, each with one connection: at most this many requests are
    /// in flight (default [`Self::DEFAULT_CONCURRENCY`]).
    pub concurrency: usize,
    /// Requests per second in total, paced on a shared schedule (open
    /// loop); `None` for a closed loop, where each worker sends as soon as
    /// its previous answer arrived.
    pub rate: Option<f64>,
    /// Send no request after this long. Requests in flight then may finish,
    /// within [`Self::timeout`].
    pub duration: Option<Duration>,
    /// Send this many requests in total, never more.
    pub requests: Option<u64>,
    /// Limit of each request, connecting included (default
    /// [`Self::DEFAULT_TIMEOUT`]).
    pub timeout: Duration,
}

impl LoadOptions {
    /// Default [`Self::concurrency`].
    pub const DEFAULT_CONCURRENCY: usize = 8;
    /// Default [`Self::timeout`].
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

    /// Sets the number of workers (connections).
    #[must_use]
    pub fn concurrency(mut self, workers: usize) -> LoadOptions {
        self.concurrency = workers;
        self
    }

    /// Paces requests at `per_second` in total (open loop).
    #[must_use]
    pub fn rate(mut self, per_second: f64) -> LoadOptions {
        self.rate = Some(per_second);
        self
    }

    /// Stops sending after `duration`.
    #[must_use]
    pub fn duration(mut self, duration: Duration) -> LoadOptions {
        self.duration = Some(duration);
        self
    }

    /// Stops after `requests` requests in total.
    #[must_use]
    pub fn requests(mut self, requests: u64) -> LoadOptions {
        self.requests = Some(requests);
        self
    }

    /// Sets the limit of each request.
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> LoadOptions {
        self.timeout = timeout;
        self
    }

    /// Checks the settings; returns the pause between two sends in rate
    /// mode.
    fn check(&self) -> Result<Option<Duration>, LoadError> {
        if self.duration.is_none() && self.requests.is_none() {
            return Err(LoadError::Unbounded);
        }
        if self.concurrency == 0 {
            return Err(LoadError::ZeroConcurrency);
        }
        if self.timeout.is_zero() {
            return Err(LoadError::ZeroTimeout);
        }
        match self.rate {
            None => Ok(None),
            Some(rate) if rate > 0.0 && rate.is_finite() => Duration::try_from_secs_f64(1.0 / rate)
                .map(Some)
                .map_err(|_| LoadError::BadRate(rate)),
            Some(rate) => Err(LoadError::BadRate(rate)),
        }
    }
}

impl Default for LoadOptions {
    fn default() -> LoadOptions {
        LoadOptions {
            concurrency: Self::DEFAULT_CONCURRENCY,
            rate: None,
            duration: None,
            requests: None,
            timeout: Self::DEFAULT_TIMEOUT,
        }
    }
}

/// Why a load could not start. Failed requests are not errors of [`run`]:
/// they are counted in the [`LoadReport`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// The URL cannot be used; the message says why.
    #[error("bad load target: {0}")]
    BadUrl(String),
    /// A path or weight of a mix cannot be used, or the mix is empty.
    #[error("bad load mix: {0}")]
    BadMix(String),
    /// Neither a duration nor a number of requests was given.
    #[error("the load has no end: give a duration, a number of requests, or both")]
    Unbounded,
    /// Concurrency 0.
    #[error("concurrency is 0: use at least one connection")]
    ZeroConcurrency,
    /// The rate is not a positive, finite number of requests per second.
    #[error(
        "rate {0} is not a usable number of requests per second: give a positive \
         rate, or none for a closed loop"
    )]
    BadRate(f64),
    /// A timeout of zero, which every request would exceed.
    #[error("the request timeout is 0: every request would time out")]
    ZeroTimeout,
    /// The host name did not resolve.
    #[error("cannot resolve the load target: {0}")]
    Resolve(String),
}

/// What to request: one URL, or a weighted mix of paths on one server.
///
/// In a mix, the paths are picked in a fixed, interleaved order whose every
/// cycle of `sum(weights)` requests holds each path exactly `weight` times:
/// a run of 250 requests over weights 20, 4, 1 sends exactly 200, 40 and
/// 10, spread over the run rather than in blocks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The server (its path is not used).
    url: HttpUrl,
    /// Path and query of each entry, with its weight.
    paths: Vec<(String, u32)>,
    /// Method and body of each entry.
    how: Vec<How>,
    /// Cumulative weights: path `i` owns positions `ends[i-1]..ends[i]`.
    ends: Vec<u64>,
    /// A step coprime with the total weight, about 0.618 of it, that
    /// spreads consecutive requests over the cycle.
    stride: u64,
}

/// One kind of request of a [`Target`] made with [`Target::requests`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// `GET`, `POST`, `PUT`, `PATCH` or `DELETE` ([`METHODS`]).
    pub method: String,
    /// Path and query, starting with `/`; [`SEQ`] in it is replaced by the
    /// request's number.
    pub path: String,
    /// Share of the requests (at least 1).
    pub weight: u32,
    /// The body, if any ([`SEQ`] replaced too), sent as `application/json`
    /// when it starts with `{` or `[`, else as `text/plain`.
    pub body: Option<String>,
}

/// The methods a [`Request`] may use.
pub const METHODS: &[&str] = &["GET", "POST", "PUT", "PATCH", "DELETE"];

/// Replaced, in a [`Request`]'s path and body, by the request's number
/// (1, 2, 3, ... over the whole run), so each request can name a thing of
/// its own: `/orders/{n}/notify`.
pub const SEQ: &str = "{n}";

/// Method and body of one entry of a [`Target`].
#[derive(Debug, Clone, PartialEq, Eq)]
struct How {
    method: &'static str,
    body: Option<String>,
    content_type: Option<&'static str>,
    /// The path or the body holds [`SEQ`].
    numbered: bool,
}

impl How {
    const GET: How = How {
        method: "GET",
        body: None,
        content_type: None,
        numbered: false,
    };
}

impl Target {
    /// One URL, such as `http://127.0.0.1:6060/leak/heap?kb=64`.
    pub fn parse(url: &str) -> Result<Target, LoadError> {
        let url = HttpUrl::parse(url).map_err(LoadError::BadUrl)?;
        let path = url.path().to_owned();
        Ok(Target::new(url, vec![(path, 1)], vec![How::GET]))
    }

    /// A weighted mix of paths (with queries) on the server of `base`,
    /// such as `http://127.0.0.1:6060`. Paths start with `/`; weights are
    /// at least 1; `base` has no path of its own.
    pub fn mix<P: AsRef<str>>(
        base: &str,
        paths: impl IntoIterator<Item = (P, u32)>,
    ) -> Result<Target, LoadError> {
        let url = HttpUrl::parse(base).map_err(LoadError::BadUrl)?;
        if url.path() != "/" {
            return Err(LoadError::BadMix(format!(
                "the base {base:?} has a path: give the server only, the paths in the mix"
            )));
        }
        let mut checked = Vec::new();
        for (path, weight) in paths {
            let path = path.as_ref();
            if !path.starts_with('/') {
                return Err(LoadError::BadMix(format!(
                    "path {path:?} does not start with '/'"
                )));
            }
            if weight == 0 {
                return Err(LoadError::BadMix(format!(
                    "path {path:?} has weight 0: give weights of at least 1"
                )));
            }
            let full = HttpUrl::parse(&format!("http://{}{path}", url.authority()))
                .map_err(LoadError::BadMix)?;
            checked.push((full.path().to_owned(), weight));
        }
        if checked.is_empty() {
            return Err(LoadError::BadMix("no paths given".into()));
        }
        let how = vec![How::GET; checked.len()];
        Ok(Target::new(url, checked, how))
    }

    /// A weighted mix of requests of any method, with bodies, on the server
    /// of `base` (which has no path of its own). [`SEQ`] in a path or body
    /// is replaced by the request's number.
    pub fn requests(
        base: &str,
        requests: impl IntoIterator<Item = Request>,
    ) -> Result<Target, LoadError> {
        let requests: Vec<Request> = requests.into_iter().collect();
        let mix = Target::mix(
            base,
            requests
                .iter()
                .map(|r| (r.path.replace(SEQ, "1"), r.weight)),
        )?;
        let mut paths = Vec::with_capacity(requests.len());
        let mut how = Vec::with_capacity(requests.len());
        for r in requests {
            let method = METHODS
                .iter()
                .find(|m| m.eq_ignore_ascii_case(&r.method))
                .ok_or_else(|| {
                    LoadError::BadMix(format!(
                        "method {:?} of {}: use one of {}",
                        r.method,
                        r.path,
                        METHODS.join(", ")
                    ))
                })?;
            let content_type = r.body.as_deref().map(|b| {
                if b.trim_start().starts_with(['{', '[']) {
                    "application/json"
                } else {
                    "text/plain; charset=utf-8"
                }
            });
            how.push(How {
                method,
                numbered: r.path.contains(SEQ)
                    || r.body.as_deref().is_some_and(|b| b.contains(SEQ)),
                body: r.body,
                content_type,
            });
            paths.push((r.path, r.weight));
        }
        Ok(Target::new(mix.url, paths, how))
    }

    fn new(url: HttpUrl, paths: Vec<(String, u32)>, how: Vec<How>) -> Target {
        let ends: Vec<u64> = paths
            .iter()
            .scan(0u64, |sum, (_, w)| {
                *sum += u64::from(*w);
                Some(*sum)
            })
            .collect();
        let total = ends.last().copied().unwrap_or(1);
        let mut stride = ((total as f64 * 0.618) as u64).max(1);
        while gcd(stride, total) != 1 {
            stride += 1;
        }
        Target {
            url,
            paths,
            how,
            ends,
            stride,
        }
    }

    /// `host:port` of the server.
    pub fn authority(&self) -> &str {
        self.url.authority()
    }

    /// The paths (with queries) and their weights, in the given order.
    pub fn paths(&self) -> impl ExactSizeIterator<Item = (&str, u32)> {
        self.paths.iter().map(|(p, w)| (p.as_str(), *w))
    }

    /// Index of the path of request number `ticket`.
    fn pick(&self, ticket: u64) -> usize {
        let total = self.ends.last().copied().unwrap_or(1);
        let position =
            (u128::from(ticket % total) * u128::from(self.stride) % u128::from(total)) as u64;
        self.ends.partition_point(|&end| end <= position)
    }
}

impl std::str::FromStr for Target {
    type Err = LoadError;

    fn from_str(url: &str) -> Result<Target, LoadError> {
        Target::parse(url)
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.paths.as_slice() {
            [(path, _)] => write!(f, "http://{}{path}", self.authority()),
            paths => write!(f, "http://{} ({} paths)", self.authority(), paths.len()),
        }
    }
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// How often [`run`] calls its progress callback.
const PROGRESS_EVERY: Duration = Duration::from_millis(200);
/// First pause of a worker before it connects again after a failed
/// connect; it doubles up to [`MAX_BACKOFF`] and resets on success.
const FIRST_BACKOFF: Duration = Duration::from_millis(10);
/// Longest pause before a new connect.
const MAX_BACKOFF: Duration = Duration::from_millis(250);

/// Puts `target` under load as `opts` say, and reports what happened.
///
/// `progress`, when given, is called about every 200 ms while the load
/// runs, and once more at the end with the final counts. Failed requests
/// are counted in the report by kind ("HTTP 500", "timeout", "connect
/// refused", "connection reset", "connection closed", "io: ..."); after a
/// failure the worker connects again, and after a failed connect it waits
/// first (10 ms, doubling up to 250 ms) so a server that is down is not
/// hammered. A failed connect counts as a failed request.
///
/// Latency is measured per request, from just before sending it (a
/// reconnect included) to the end of its answer, for every answer whatever
/// its status; requests without an answer are not in the histogram.
///
/// Errors only when the load cannot start: invalid options or a host that
/// does not resolve. Dropping the returned future stops the workers.
pub async fn run(
    target: &Target,
    opts: &LoadOptions,
    progress: Option<&(dyn Fn(&Progress) + Sync)>,
) -> Result<LoadReport, LoadError> {
    let interval = opts.check()?;
    let addr = target
        .url
        .resolve(opts.timeout)
        .await
        .map_err(LoadError::Resolve)?;
    let start = Instant::now();
    let shared = Arc::new(Shared {
        addr,
        target: target.clone(),
        timeout: opts.timeout,
        end: opts.duration.and_then(|d| start.checked_add(d)),
        limit: opts.requests,
        issued: AtomicU64::new(0),
        pacer: interval.map(|interval| Pacer {
            interval,
            next: Mutex::new(start),
        }),
        sent: AtomicU64::new(0),
        ok: AtomicU64::new(0),
        failed: AtomicU64::new(0),
    });
    let mut workers = JoinSet::new();
    for _ in 0..opts.concurrency {
        workers.spawn(worker(Arc::clone(&shared)));
    }
    let mut total = Stats::new(target.paths.len());
    let mut ticks = tokio::time::interval_at((start + PROGRESS_EVERY).into(), PROGRESS_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            joined = workers.join_next() => match joined {
                None => break,
                Some(Ok(stats)) => total.merge(stats),
                Some(Err(e)) => match e.try_into_panic() {
                    Ok(panic) => std::panic::resume_unwind(panic),
                    // Only `abort` cancels a worker, and nothing calls it.
                    Err(e) => unreachable!("load worker cancelled: {e}"),
                },
            },
            _ = ticks.tick(), if progress.is_some() => {
                if let Some(show) = progress {
                    show(&shared.progress(start.elapsed()));
                }
            }
        }
    }
    let elapsed = start.elapsed();
    if let Some(show) = progress {
        show(&shared.progress(elapsed));
    }
    Ok(LoadReport {
        requests: total.requests,
        ok: total.ok,
        errors: total.errors,
        elapsed,
        latency: total.latency,
        by_path: target
            .paths
            .iter()
            .zip(&target.how)
            .map(|((p, _), how)| match how.method {
                "GET" => p.clone(),
                m => format!("{m} {p}"),
            })
            .zip(total.by_path)
            .collect(),
        target_rate: opts.rate,
    })
}

/// What the workers share.
struct Shared {
    addr: SocketAddr,
    target: Target,
    timeout: Duration,
    /// No request is sent at or after this instant.
    end: Option<Instant>,
    /// At most this many requests.
    limit: Option<u64>,
    /// Request numbers handed out so far.
    issued: AtomicU64,
    pacer: Option<Pacer>,
    /// Live counts for [`Progress`].
    sent: AtomicU64,
    ok: AtomicU64,
    failed: AtomicU64,
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

    fn progress(&self, elapsed: Duration) -> Progress {
        Progress {
            sent: self.sent.load(Relaxed),
            ok: self.ok.load(Relaxed),
            errors: self.failed.load(Relaxed),
            elapsed,
        }
    }
}

/// The shared schedule of rate mode.
struct Pacer {
    /// Time between two sends.
    interval: Duration,
    /// The earliest time of the next send.
    next: Mutex<Instant>,
}

impl Pacer {
    /// Claims the next send time, no earlier than `now`: slots that passed
    /// unclaimed are dropped, so sends stay `interval` apart.
    fn slot(&self, now: Instant) -> Instant {
        let mut next = self.next.lock().unwrap_or_else(PoisonError::into_inner);
        let slot = (*next).max(now);
        *next = slot + self.interval;
        slot
    }
}

/// The counts of one worker, merged at the end.
struct Stats {
    requests: u64,
    ok: u64,
    errors: std::collections::BTreeMap<String, u64>,
    latency: Histogram,
    by_path: Vec<u64>,
}

impl Stats {
    fn new(paths: usize) -> Stats {
        Stats {
            requests: 0,
            ok: 0,
            errors: Default::default(),
            latency: Histogram::new(),
            by_path: vec![0; paths],
        }
    }

    fn merge(&mut self, other: Stats) {
        self.requests += other.requests;
        self.ok += other.ok;
        for (kind, n) in other.errors {
            *self.errors.entry(kind).or_default() += n;
        }
        self.latency.merge(&other.latency);
        for (mine, theirs) in self.by_path.iter_mut().zip(other.by_path) {
            *mine += theirs;
        }
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
async fn worker(shared: Arc<Shared>) -> Stats {
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
        if let Some(pacer) = &shared.pacer {
            let slot = pacer.slot(Instant::now());
            if shared.end.is_some_and(|end| slot >= end) {
                break;
            }
            tokio::time::sleep_until(slot.into()).await;
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
        stats.by_path[index] += 1;
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
                stats.latency.record(started.elapsed());
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

/// The kind of a failed request, as counted in [`LoadReport::errors`].
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_need_a_bound_workers_and_a_usable_rate() {
        let bounded = LoadOptions::default().requests(10);
        assert_eq!(bounded.check().ok(), Some(None));
        let e = LoadOptions::default().check().unwrap_err();
        assert!(matches!(e, LoadError::Unbounded), "{e}");
        assert!(e.to_string().contains("give a duration"), "{e}");
        let e = bounded.clone().concurrency(0).check().unwrap_err();
        assert!(matches!(e, LoadError::ZeroConcurrency), "{e}");
        let e = bounded.clone().timeout(Duration::ZERO).check().unwrap_err();
        assert!(matches!(e, LoadError::ZeroTimeout), "{e}");
        for rate in [0.0, -5.0, f64::NAN, f64::INFINITY, 1e-300] {
            let e = bounded.clone().rate(rate).check().unwrap_err();
            assert!(matches!(e, LoadError::BadRate(_)), "{rate}: {e}");
        }
        let paced = bounded.rate(4.0).check().unwrap();
        assert_eq!(paced, Some(Duration::from_millis(250)));
        let d = LoadOptions::default().duration(Duration::from_secs(1));
        assert_eq!((d.concurrency, d.timeout), (8, Duration::from_secs(10)));
    }

    #[test]
    fn parses_a_url_or_a_mix() {
        let t = Target::parse("http://127.0.0.1:6060/leak/heap?kb=64").unwrap();
        assert_eq!(t.authority(), "127.0.0.1:6060");
        assert_eq!(t.paths().collect::<Vec<_>>(), [("/leak/heap?kb=64", 1)]);
        assert_eq!(t.to_string(), "http://127.0.0.1:6060/leak/heap?kb=64");
        assert_eq!("http://[::1]:9".parse::<Target>().unwrap().paths().len(), 1);
        let e = Target::parse("https://127.0.0.1").unwrap_err();
        assert!(matches!(&e, LoadError::BadUrl(m) if m.contains("https is not supported")));

        let mix = [("/", 20), ("/leak/heap?kb=256", 4), ("/leak/thread", 1)];
        let t = Target::mix("http://localhost:6060", mix).unwrap();
        assert_eq!(t.paths().collect::<Vec<_>>(), mix);
        assert_eq!(t.to_string(), "http://localhost:6060 (3 paths)");
        for (base, paths, want) in [
            ("http://h:1/x", vec![("/", 1)], "has a path"),
            ("http://h:1", vec![("x", 1)], "does not start with '/'"),
            ("http://h:1", vec![("/x", 0)], "weight 0"),
            ("http://h:1", vec![("/a b", 1)], "invalid character"),
            ("http://h:1", vec![], "no paths"),
        ] {
            let e = Target::mix(base, paths).unwrap_err();
            assert!(
                matches!(&e, LoadError::BadMix(m) if m.contains(want)),
                "{e}"
            );
        }
        let e = Target::mix("ftp://h", [("/", 1)]).unwrap_err();
        assert!(matches!(e, LoadError::BadUrl(_)), "{e}");
    }

    #[test]
    fn a_mix_is_exact_per_cycle_and_interleaved() {
        let t = Target::mix("http://h:1", [("/", 20), ("/heap", 4), ("/thread", 1)]).unwrap();
        let picks: Vec<usize> = (0..250).map(|n| t.pick(n)).collect();
        for (index, want) in [(0, 200), (1, 40), (2, 10)] {
            assert_eq!(picks.iter().filter(|&&p| p == index).count(), want);
        }
        // The four "/heap" requests of a cycle are not next to each other.
        let heap: Vec<usize> = (0..25).filter(|&n| picks[n] == 1).collect();
        assert!(heap.windows(2).all(|w| w[1] - w[0] >= 3), "{heap:?}");
        // A single path, and weights with a common factor.
        let one = Target::parse("http://h:1/x").unwrap();
        assert!((0..10).all(|n| one.pick(n) == 0));
        let even = Target::mix("http://h:1", [("/a", 6), ("/b", 6)]).unwrap();
        assert_eq!((0..12).filter(|&n| even.pick(n) == 0).count(), 6);
    }

    #[test]
    fn requests_take_methods_bodies_and_numbers() {
        let req = |method: &str, path: &str, body: Option<&str>| Request {
            method: method.into(),
            path: path.into(),
            weight: 2,
            body: body.map(str::to_owned),
        };
        let t = Target::requests(
            "http://h:1",
            [
                req("post", "/orders", Some(r#"{"id":{n}}"#)),
                req("POST", "/orders/{n}/notify", None),
                req("GET", "/", Some("x")),
            ],
        )
        .unwrap();
        assert_eq!(t.how[0].method, "POST");
        assert_eq!(t.how[0].content_type, Some("application/json"));
        assert!(t.how[0].numbered && t.how[1].numbered && !t.how[2].numbered);
        assert_eq!(t.how[2].content_type, Some("text/plain; charset=utf-8"));
        assert_eq!(t.paths().nth(1), Some(("/orders/{n}/notify", 2)));
        let e = Target::requests("http://h:1", [req("BREW", "/", None)]).unwrap_err();
        assert!(e.to_string().contains("use one of GET, POST"), "{e}");
        let e = Target::requests("http://h:1", [req("GET", "x", None)]).unwrap_err();
        assert!(e.to_string().contains("does not start with '/'"), "{e}");
    }

    #[test]
    fn the_pacer_keeps_sends_apart_and_drops_missed_slots() {
        let start = Instant::now();
        let ms = Duration::from_millis;
        let pacer = Pacer {
            interval: ms(10),
            next: Mutex::new(start),
        };
        // Claimed ahead of time: one every 10 ms.
        assert_eq!(pacer.slot(start), start);
        assert_eq!(pacer.slot(start), start + ms(10));
        assert_eq!(pacer.slot(start + ms(5)), start + ms(20));
        // Nobody claimed a slot for 100 ms: no burst to catch up.
        assert_eq!(pacer.slot(start + ms(130)), start + ms(130));
        assert_eq!(pacer.slot(start + ms(130)), start + ms(140));
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

    #[test]
    fn the_run_future_can_be_spawned() {
        fn assert_send<T: Send>(_: &T) {}
        let target = Target::parse("http://127.0.0.1:1/").unwrap();
        let opts = LoadOptions::default().requests(1);
        let show = |_: &Progress| {};
        assert_send(&run(&target, &opts, Some(&show)));
    }
}
