//! Go-compatible `/debug/pprof/*` routes, and `/metrics`.
//!
//! Status codes, messages and headers follow Go's net/http/pprof so that
//! `go tool pprof` and every other pprof client treat a leakscope service
//! exactly like a Go service. Heavy work (dumping, symbolizing, encoding)
//! runs on blocking threads, at most [`HEAVY_JOBS`] at a time, never on the
//! service's async workers.

mod error;
mod fds;
mod index;
mod metrics;
mod pprof;
mod tasks;
mod watch;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use tokio::sync::Semaphore;

pub use error::GoError;
pub use watch::WatchParts;

/// Most profile builds (dump + symbolize + encode) running at once; more
/// requests wait their turn instead of piling up threads and memory.
pub const HEAVY_JOBS: usize = 2;

/// Settings the routes need.
#[derive(Debug, Clone)]
pub struct RouteConfig {
    /// CPU sampling frequency in Hz.
    pub cpu_hz: u32,
    /// Longest `seconds` a profile request may ask for.
    pub max_profile_duration: Duration,
    /// The watch loop, when it runs.
    pub watch: Option<WatchParts>,
}

#[derive(Clone)]
pub(crate) struct HttpState {
    #[cfg_attr(not(any(feature = "cpu", feature = "heap")), allow(dead_code))]
    pub(crate) config: Arc<RouteConfig>,
    heavy: Arc<Semaphore>,
}

impl HttpState {
    /// Runs `job` on a blocking thread once a heavy-work slot is free.
    pub(crate) async fn heavy<T, F>(&self, job: F) -> Result<T, GoError>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let _permit = self
            .heavy
            .acquire()
            .await
            .map_err(|_| GoError::internal("profiler is shutting down"))?;
        #[cfg(feature = "heap")]
        let job = move || crate::heap::agent_work(job);
        tokio::task::spawn_blocking(job)
            .await
            .map_err(|e| GoError::internal(format!("profile collection failed: {e}")))
    }
}

/// The `/debug/pprof` routes, ready to merge into a service's own router.
pub fn router(config: RouteConfig) -> Router {
    let state = HttpState {
        config: Arc::new(config),
        heavy: Arc::new(Semaphore::new(HEAVY_JOBS)),
    };
    Router::new()
        .route("/debug/pprof", any(index::redirect))
        .route("/debug/pprof/", any(index::index))
        .route("/debug/pprof/{*name}", any(pprof::named))
        .route("/metrics", get(metrics::metrics))
        .route("/debug/leakscope/alerts", get(watch::alerts))
        .route("/debug/leakscope/evidence/{which}", get(watch::evidence))
        .with_state(state)
}

/// First value of `key` in a query string, as Go's `r.FormValue`; "" when absent.
pub(crate) fn form_value(query: Option<&str>, key: &str) -> String {
    query
        .map(|q| form_urlencoded::parse(q.as_bytes()))
        .and_then(|mut pairs| pairs.find(|(k, _)| k == key))
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

/// Go's `strconv.Atoi` with errors ignored: the integer, or 0.
pub(crate) fn atoi(s: &str) -> i64 {
    s.parse().unwrap_or(0)
}

/// A binary profile response, as Go sends one.
pub(crate) fn attachment(filename: &str, body: Vec<u8>) -> Response {
    let mut res = body.into_response();
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{filename}\"")) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    nosniff(res)
}

/// A text response with Go's headers.
pub(crate) fn text(body: String) -> Response {
    let mut res = body.into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    nosniff(res)
}

pub(crate) fn nosniff(mut res: Response) -> Response {
    res.headers_mut().insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_value_is_first_value_or_empty() {
        assert_eq!(form_value(Some("seconds=5&seconds=7"), "seconds"), "5");
        assert_eq!(form_value(Some("debug=1"), "seconds"), "");
        assert_eq!(form_value(None, "seconds"), "");
        assert_eq!(form_value(Some("x=a%20b"), "x"), "a b");
    }

    #[test]
    fn atoi_ignores_errors_like_go() {
        assert_eq!(atoi("2"), 2);
        assert_eq!(atoi("x"), 0);
        assert_eq!(atoi(""), 0);
        assert_eq!(atoi("-3"), -3);
    }
}
