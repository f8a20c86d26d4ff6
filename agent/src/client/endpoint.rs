//! [`Endpoint`]: requests to one HTTP server with a per-attempt timeout,
//! retries with exponential backoff and full jitter, and a circuit breaker.
//!
//! The webhook sink posts alerts through one, the sidecar pulls every
//! target's profiles through one per target. A request is one *delivery*:
//! up to `1 + max_retries` attempts, each bounded by
//! [`RetryPolicy::timeout`] (connecting by [`RetryPolicy::connect_timeout`]).
//! Attempts go through hyper-util's pooled client: a connection that
//! answered is kept for the next request (idle at most
//! [`Endpoint::POOL_IDLE`]), one that failed or timed out is dropped;
//! `https://` URLs are spoken over rustls with the endpoint's [`TlsRoots`].
//! A delivery that fails counts once against the breaker; while the breaker
//! is open, requests fail at once with [`ClientError::BreakerOpen`], so a
//! dead server costs nothing but a counter. After `breaker_open_for`, one
//! request goes through as a single-attempt trial: success closes the
//! breaker, failure opens it again.
//!
//! Answers 2xx are successes. 5xx, 408 and 429 answers, timeouts and I/O
//! errors are retried; other 4xx answers, TLS failures (an untrusted
//! certificate stays untrusted) and bodies over the cap of
//! [`Endpoint::get_capped`] are final (retrying cannot help) and count as a
//! failed delivery.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::backoff::{Backoff, BreakerState, CircuitBreaker, XorShift};
use super::transport::{self, Body, MAX_BUF, MAX_HEADERS, Req};
use super::url::HttpUrl;
use super::{ClientError, Connection, Response, TlsRoots};

/// hyper-util's pooled client over TCP or rustls.
type Pool = Client<HttpsConnector<HttpConnector>, Body>;

/// Timeouts, retries and breaker settings of an [`Endpoint`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct RetryPolicy {
    /// Bound of opening the TCP connection.
    pub connect_timeout: Duration,
    /// Bound of each attempt, connecting included.
    pub timeout: Duration,
    /// Attempts after the first one fails.
    pub max_retries: u32,
    /// Delays between attempts.
    pub backoff: Backoff,
    /// Consecutive failed deliveries that open the breaker.
    pub breaker_failures: u32,
    /// How long an open breaker refuses requests before a trial.
    pub breaker_open_for: Duration,
}

impl RetryPolicy {
    /// Default [`RetryPolicy::connect_timeout`].
    pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
    /// Default [`RetryPolicy::timeout`].
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
    /// Default [`RetryPolicy::max_retries`].
    pub const DEFAULT_MAX_RETRIES: u32 = 3;
    /// Default [`RetryPolicy::breaker_failures`].
    pub const DEFAULT_BREAKER_FAILURES: u32 = 5;
    /// Default [`RetryPolicy::breaker_open_for`].
    pub const DEFAULT_BREAKER_OPEN_FOR: Duration = Duration::from_secs(30);

    /// Sets both timeouts.
    #[must_use]
    pub fn timeouts(mut self, connect: Duration, total: Duration) -> Self {
        self.connect_timeout = connect;
        self.timeout = total;
        self
    }

    /// Sets the retry count and backoff.
    #[must_use]
    pub fn retries(mut self, max_retries: u32, backoff: Backoff) -> Self {
        self.max_retries = max_retries;
        self.backoff = backoff;
        self
    }

    /// Sets the breaker.
    #[must_use]
    pub fn breaker(mut self, failures: u32, open_for: Duration) -> Self {
        self.breaker_failures = failures;
        self.breaker_open_for = open_for;
        self
    }
}

impl Default for RetryPolicy {
    fn default() -> RetryPolicy {
        RetryPolicy {
            connect_timeout: Self::DEFAULT_CONNECT_TIMEOUT,
            timeout: Self::DEFAULT_TIMEOUT,
            max_retries: Self::DEFAULT_MAX_RETRIES,
            backoff: Backoff::default(),
            breaker_failures: Self::DEFAULT_BREAKER_FAILURES,
            breaker_open_for: Self::DEFAULT_BREAKER_OPEN_FOR,
        }
    }
}

/// Counters of an [`Endpoint`] since it was made.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct EndpointStats {
    /// Requests that got a 2xx answer.
    pub ok: u64,
    /// Requests that failed after their attempts.
    pub failed: u64,
    /// Attempts that failed (error, timeout or non-2xx answer).
    pub failed_attempts: u64,
    /// Attempts that were retries of a failed attempt.
    pub retries: u64,
    /// Requests refused at once because the breaker was open.
    pub refused_breaker_open: u64,
    /// `"closed"`, `"open"` or `"half_open"`.
    pub breaker_state: &'static str,
}

#[derive(Debug)]
struct Inner {
    url: HttpUrl,
    client: Pool,
    policy: RetryPolicy,
    breaker: Mutex<CircuitBreaker>,
    rng: Mutex<XorShift>,
    ok: AtomicU64,
    failed: AtomicU64,
    failed_attempts: AtomicU64,
    retries: AtomicU64,
    refused: AtomicU64,
}

/// One HTTP server reached through a [`RetryPolicy`]; cheap to clone, and
/// clones share the breaker and counters. Requests may run concurrently.
#[derive(Debug, Clone)]
pub struct Endpoint {
    inner: Arc<Inner>,
}

/// What a failed attempt means for the next one.
enum Attempt {
    Retry(ClientError),
    Final(ClientError),
}

impl Endpoint {
    /// How long a connection that answered is kept for the next request.
    pub const POOL_IDLE: Duration = Duration::from_secs(30);

    /// An endpoint for the server of `url` (its path is the default path);
    /// `https://` servers must have a certificate from a CA of the
    /// platform's store ([`TlsRoots::platform`]).
    pub fn new(url: HttpUrl, policy: RetryPolicy) -> Endpoint {
        Endpoint::with_roots(url, policy, &TlsRoots::platform())
    }

    /// [`Endpoint::new`] trusting `roots` for `https://`, such as the
    /// platform's CAs and an internal CA ([`TlsRoots::with_pem_file`]).
    pub fn with_roots(url: HttpUrl, policy: RetryPolicy, roots: &TlsRoots) -> Endpoint {
        let breaker = CircuitBreaker::new(policy.breaker_failures, policy.breaker_open_for);
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(policy.connect_timeout));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(roots.client_config().clone())
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .pool_idle_timeout(Self::POOL_IDLE)
            .pool_max_idle_per_host(4)
            .http1_max_buf_size(MAX_BUF)
            .http1_max_headers(MAX_HEADERS)
            .build(connector);
        Endpoint {
            inner: Arc::new(Inner {
                url,
                client,
                policy,
                breaker: Mutex::new(breaker),
                rng: Mutex::new(XorShift::from_time()),
                ok: AtomicU64::new(0),
                failed: AtomicU64::new(0),
                failed_attempts: AtomicU64::new(0),
                retries: AtomicU64::new(0),
                refused: AtomicU64::new(0),
            }),
        }
    }

    /// The URL it was made with.
    pub fn url(&self) -> &HttpUrl {
        &self.inner.url
    }

    /// The policy.
    pub fn policy(&self) -> &RetryPolicy {
        &self.inner.policy
    }

    /// The breaker's state now.
    pub fn breaker_state(&self) -> BreakerState {
        self.inner
            .breaker
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .state()
    }

    /// The counters so far.
    pub fn stats(&self) -> EndpointStats {
        let i = &self.inner;
        EndpointStats {
            ok: i.ok.load(Relaxed),
            failed: i.failed.load(Relaxed),
            failed_attempts: i.failed_attempts.load(Relaxed),
            retries: i.retries.load(Relaxed),
            refused_breaker_open: i.refused.load(Relaxed),
            breaker_state: self.breaker_state().as_str(),
        }
    }

    /// GET `path` (with query) on this server. `timeout` replaces the
    /// policy's per-attempt timeout for this request (a 30 s CPU profile
    /// needs more than the default).
    pub async fn get(
        &self,
        path: &str,
        timeout: Option<Duration>,
    ) -> Result<Response, ClientError> {
        let max = Connection::DEFAULT_MAX_BODY;
        self.request("GET", path, &[], &[], timeout, max).await
    }

    /// [`Endpoint::get`] reading at most `max_body` bytes of body: a larger
    /// answer fails at once, without retries, with an error for which
    /// [`ClientError::is_body_too_large`] is true (and counts as a failed
    /// delivery). For answers whose size the server decides, such as a
    /// goroutine dump.
    pub async fn get_capped(
        &self,
        path: &str,
        timeout: Option<Duration>,
        max_body: usize,
    ) -> Result<Response, ClientError> {
        self.request("GET", path, &[], &[], timeout, max_body).await
    }

    /// POST `body` to `path` with extra headers (see
    /// [`super::post_with_headers`]); `Host` is the URL's authority unless
    /// given.
    pub async fn post(
        &self,
        path: &str,
        body: &[u8],
        headers: &[(&str, &str)],
    ) -> Result<Response, ClientError> {
        let max = Connection::DEFAULT_MAX_BODY;
        self.request("POST", path, body, headers, None, max).await
    }

    async fn request(
        &self,
        method: &'static str,
        path: &str,
        body: &[u8],
        headers: &[(&str, &str)],
        timeout: Option<Duration>,
        max_body: usize,
    ) -> Result<Response, ClientError> {
        let i = &self.inner;
        let (allowed, trial) = {
            let mut b = i.breaker.lock().unwrap_or_else(|e| e.into_inner());
            let allowed = b.allow(Instant::now());
            (allowed, b.state() == BreakerState::HalfOpen)
        };
        if !allowed {
            i.refused.fetch_add(1, Relaxed);
            return Err(ClientError::BreakerOpen {
                url: i.url.with_path(path).to_string(),
                open_for: i.policy.breaker_open_for,
            });
        }
        // A half-open breaker gets one trial attempt, not a retry series.
        let attempts = if trial {
            1
        } else {
            i.policy.max_retries.saturating_add(1)
        };
        let timeout = timeout.unwrap_or(i.policy.timeout);
        let mut last = None;
        for attempt in 0..attempts {
            if attempt > 0 {
                i.retries.fetch_add(1, Relaxed);
                let r = i.rng.lock().unwrap_or_else(|e| e.into_inner()).next_f64();
                tokio::time::sleep(i.policy.backoff.delay(attempt - 1, r)).await;
            }
            let sent = self.attempt(method, path, body, headers, (timeout, max_body));
            match sent.await {
                Ok(response) => {
                    i.ok.fetch_add(1, Relaxed);
                    i.breaker
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .on_success();
                    return Ok(response);
                }
                Err(Attempt::Retry(e)) => {
                    i.failed_attempts.fetch_add(1, Relaxed);
                    tracing::debug!(url = %i.url, attempt, error = %e, "request attempt failed");
                    last = Some(e);
                }
                Err(Attempt::Final(e)) => {
                    i.failed_attempts.fetch_add(1, Relaxed);
                    last = Some(e);
                    break;
                }
            }
        }
        i.failed.fetch_add(1, Relaxed);
        i.breaker
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .on_failure(Instant::now());
        Err(last.unwrap_or_else(|| ClientError::BadResponse {
            method,
            path: path.to_owned(),
            message: "no attempt was made".into(),
        }))
    }

    async fn attempt(
        &self,
        method: &'static str,
        path: &str,
        body: &[u8],
        headers: &[(&str, &str)],
        (timeout, max_body): (Duration, usize),
    ) -> Result<Response, Attempt> {
        let i = &self.inner;
        let url = i.url.with_path(path).to_string();
        let req = Req {
            method,
            target: path,
            url: &url,
        };
        let checked = super::check_headers(headers).map_err(|source| {
            Attempt::Final(ClientError::Io {
                method,
                path: path.to_owned(),
                source,
            })
        })?;
        let request = transport::build(
            req,
            &url,
            &checked,
            None,
            Bytes::copy_from_slice(body),
            false,
        )
        .map_err(Attempt::Final)?;
        let exchange = async {
            let response = i
                .client
                .request(request)
                .await
                .map_err(|e| req.failed(&e))?;
            transport::read(req, response, max_body).await
        };
        let response = match tokio::time::timeout(timeout, exchange).await {
            Ok(Ok(response)) => response,
            Ok(Err(e)) if e.is_body_too_large() || matches!(e, ClientError::Tls { .. }) => {
                return Err(Attempt::Final(e));
            }
            Ok(Err(e)) => return Err(Attempt::Retry(e)),
            Err(_) => {
                return Err(Attempt::Retry(ClientError::Timeout {
                    method,
                    path: path.to_owned(),
                    timeout,
                }));
            }
        };
        match response.status {
            200..=299 => Ok(response),
            status => {
                let e = ClientError::Status {
                    method,
                    path: path.to_owned(),
                    status,
                    message: response
                        .text()
                        .lines()
                        .next()
                        .unwrap_or_default()
                        .chars()
                        .take(200)
                        .collect(),
                };
                if status >= 500 || status == 408 || status == 429 {
                    Err(Attempt::Retry(e))
                } else {
                    Err(Attempt::Final(e))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use axum::Router;
    use axum::routing::get;

    use super::super::backoff::Backoff;
    use super::*;

    #[tokio::test]
    async fn a_capped_get_fails_once_over_its_cap_and_passes_under_it() {
        let hits = Arc::new(AtomicUsize::new(0));
        let counted = hits.clone();
        let app = Router::new().route(
            "/dump",
            get(move || {
                counted.fetch_add(1, Relaxed);
                async { "x".repeat(10_000) }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        let url = HttpUrl::parse(&format!("http://{addr}")).expect("url");
        let backoff = Backoff {
            base: Duration::from_millis(1),
            max: Duration::from_millis(5),
        };
        let endpoint = Endpoint::new(url, RetryPolicy::default().retries(3, backoff));

        let e = endpoint
            .get_capped("/dump", None, 1000)
            .await
            .expect_err("over the cap");
        assert!(e.is_body_too_large(), "{e}");
        assert!(e.to_string().contains("body larger than 1000 bytes"), "{e}");
        // Asked once: a larger answer is not retried.
        assert_eq!(hits.load(Relaxed), 1);
        let s = endpoint.stats();
        assert_eq!((s.failed, s.failed_attempts, s.retries), (1, 1, 0), "{s:?}");

        let r = endpoint
            .get_capped("/dump", None, 10_000)
            .await
            .expect("at the cap");
        assert_eq!(r.body.len(), 10_000);
        assert_eq!(hits.load(Relaxed), 2);
        assert_eq!(endpoint.stats().ok, 1);
        // Other errors keep their kind.
        let e = endpoint
            .get_capped("/nothing", None, 10)
            .await
            .expect_err("404");
        assert!(!e.is_body_too_large(), "{e}");
        assert!(matches!(e, ClientError::Status { status: 404, .. }), "{e}");
    }
}
