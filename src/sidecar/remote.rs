//! Reading a process from outside, by its pprof URL and its pid: what
//! serves the URL (a leakscope agent or a Go service), the counts it
//! serves, its count profiles, thread and goroutine dumps and heap
//! profiles, and the fds listing of /proc. One copy of each reader, used by
//! the sidecar's schedules (`counts`, `kinds`, `naming`, `pull`) and by
//! `leakscope check`; each takes the target's [`Endpoint`] (or pid), not
//! the sidecar's state.
//!
//! | what | from a leakscope agent | from a Go service | without a URL |
//! |---|---|---|---|
//! | counts ([`read_counts`]) | `tokio_tasks`, `heap_bytes` from `/metrics` | `goroutines` from `goroutine?debug=1`, `heap_bytes` from `heap?debug=1` | — |
//! | fds ([`count_profile`] of `/debug/pprof/fds`, [`proc_fds`]) | the agent's fds profile (creation sites with fd-sites) | /proc | /proc |
//! | threads ([`thread_dump`]) | `threads?debug=2` | — (thread names from /proc) | thread names from /proc |
//! | tasks ([`count_profile`] of `/debug/pprof/tasks`) | the tasks profile | — | — |
//! | goroutines ([`goroutine_groups`]) | — | `goroutine?debug=2` | — |
//! | heap ([`heap_profile`]) | `heap` | `heap?gc=1` | — |
//!
//! Every read is capped in size. The reads of counts and profiles go
//! through the endpoint (retries, breaker); the probes that find what
//! serves the URL, and a thread dump (which signals every thread of the
//! target), are single requests ([`once`]).

use leakscope_agent::client::{ClientError, Connection, Endpoint, Response};
use leakscope_agent::explain::counts::{Counted, counted};
use leakscope_agent::profile::Profile;
use leakscope_agent::resource::Target;

use super::goroutines::{self, Group};
use super::threads::{self, ThreadDump};

/// Largest answer read for a count: `/metrics`, `goroutine?debug=1`,
/// `heap?debug=1` (whose `runtime.MemStats` lines come last, after every
/// allocation site).
pub const TEXT_CAP: usize = 16 << 20;
/// Largest fds or tasks profile read from an agent.
pub const COUNT_PROFILE_CAP: usize = 32 << 20;
/// Largest thread dump (`debug=2`) read from an agent (which cuts its own
/// text at 4 MiB).
pub const THREAD_DUMP_CAP: usize = 16 << 20;
/// Largest goroutine dump (`debug=2`) read; a larger one fails the pull.
pub const GOROUTINE_DUMP_CAP: usize = 32 << 20;
/// Largest heap profile read.
pub const HEAP_PROFILE_CAP: usize = 256 << 20;

/// What serves a target's pprof URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// Not known yet (no answer so far).
    Unknown,
    /// A Go service with `net/http/pprof`.
    Go,
    /// A leakscope agent.
    Agent,
    /// Neither: profiles may still be pulled, no counts are read.
    Other,
}

impl Flavor {
    /// In words, as reports show it: `go`, `leakscope agent`, `other`,
    /// `unknown`.
    pub fn as_str(self) -> &'static str {
        match self {
            Flavor::Unknown => "unknown",
            Flavor::Go => "go",
            Flavor::Agent => "leakscope agent",
            Flavor::Other => "other",
        }
    }
}

/// The base path of a pprof URL: its path without a trailing
/// `/debug/pprof[/]` or `/`, so `http://h:6060`,
/// `http://h:6060/debug/pprof/` and `http://h:6060/svc` all work.
pub fn base_path(endpoint: &Endpoint) -> String {
    let path = endpoint.url().path().split('?').next().unwrap_or_default();
    let path = path.trim_end_matches('/');
    path.strip_suffix("/debug/pprof").unwrap_or(path).to_owned()
}

/// GET `path` (the full path) through the endpoint (timeouts, retries,
/// breaker, counters), reading at most `cap` bytes of body; an answer that
/// is not 2xx, or a larger one, is an error that says so.
pub async fn get_capped(endpoint: &Endpoint, path: &str, cap: usize) -> Result<Response, String> {
    endpoint
        .get_capped(path, None, cap)
        .await
        .map_err(|e| describe_capped(path, cap, &e))
}

/// A capped pull's error in words: one over the cap names the cap.
pub fn describe_capped(path: &str, cap: usize, e: &ClientError) -> String {
    if e.is_body_too_large() {
        format!(
            "GET {path}: the answer is larger than leakscope's cap of {} MiB for it",
            cap >> 20
        )
    } else {
        e.to_string()
    }
}

/// GET `path` (the full path) once, any status returned, reading at most
/// `cap` bytes, out of the endpoint's retries and counters: for the probes
/// that find out what serves the URL (a 404 there is an answer, not a
/// failed pull) and for a request that must not be repeated (a thread dump
/// signals every thread of the target). Refused while the endpoint's
/// breaker is open.
pub async fn once(endpoint: &Endpoint, path: &str, cap: usize) -> Result<Response, String> {
    if endpoint.breaker_state() == leakscope_agent::client::backoff::BreakerState::Open {
        return Err(format!(
            "GET {path}: not tried, the target's pulls keep failing (circuit breaker open)"
        ));
    }
    let policy = endpoint.policy();
    let addr = endpoint.url().resolve(policy.connect_timeout).await?;
    let mut conn = Connection::connect(addr, policy.connect_timeout)
        .await
        .map_err(|e| e.to_string())?
        .with_max_body(cap);
    conn.get(path, policy.timeout)
        .await
        .map_err(|e| describe_capped(path, cap, &e))
}

/// Runs `f` on the blocking pool.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| format!("a blocking job failed: {e}"))?
}

/// `goroutine profile: total N` → N.
pub fn goroutine_total(text: &str) -> Option<f64> {
    text.lines()
        .next()?
        .strip_prefix("goroutine profile: total ")?
        .trim()
        .parse()
        .ok()
}

/// `# HeapAlloc = N` of a Go heap profile in text (`debug=1`) → N.
pub fn heap_alloc(text: &str) -> Option<f64> {
    text.lines().rev().find_map(|l| {
        l.strip_prefix("# HeapAlloc = ")
            .and_then(|v| v.trim().parse().ok())
    })
}

/// The value of series `name` (with label `label` when given) in
/// Prometheus text.
pub fn prom_value(text: &str, name: &str, label: Option<(&str, &str)>) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let rest = l.strip_prefix(name)?;
        let (labels, value) = match rest.strip_prefix('{') {
            Some(r) => {
                let (labels, value) = r.split_once('}')?;
                (labels, value)
            }
            None if rest.starts_with(' ') => ("", rest),
            None => return None,
        };
        if let Some((k, v)) = label {
            let want = format!("{k}=\"{v}\"");
            if !labels.split(',').any(|p| p.trim() == want) {
                return None;
            }
        }
        value.split_whitespace().next()?.parse().ok()
    })
}

/// True for Prometheus text with a `leakscope_` series.
pub fn is_agent_metrics(text: &str) -> bool {
    text.lines().any(|l| l.starts_with("leakscope_"))
}

/// A probe's answer to GET `path` (under the URL's base): its text when
/// 2xx, `None` when the path is not served (4xx), an error when the target
/// could not be asked.
async fn ask(endpoint: &Endpoint, path: &str) -> Result<Option<String>, String> {
    let r = once(
        endpoint,
        &format!("{}{path}", base_path(endpoint)),
        TEXT_CAP,
    )
    .await?;
    match r.status {
        200..=299 => Ok(Some(r.text())),
        400..=499 => Ok(None),
        s => Err(format!("GET {path}: HTTP {s}")),
    }
}

/// The text of `path` (under the URL's base) read through the endpoint,
/// `None` when it failed.
async fn read_text(endpoint: &Endpoint, path: &str) -> Option<String> {
    get_capped(
        endpoint,
        &format!("{}{path}", base_path(endpoint)),
        TEXT_CAP,
    )
    .await
    .ok()
    .map(|r| r.text())
}

/// Finds what serves the URL, with the `/metrics` text read on the way (an
/// agent's); `Unknown` when it did not answer. An agent is recognised
/// first (its `/metrics` has `leakscope_` series, or it answers
/// `/debug/pprof/tasks`), since agents also serve a goroutine profile under
/// Go's name.
pub async fn detect(endpoint: &Endpoint) -> (Flavor, Option<String>) {
    match ask(endpoint, "/metrics").await {
        Ok(Some(text)) if is_agent_metrics(&text) => return (Flavor::Agent, Some(text)),
        Ok(_) => {}
        Err(_) => return (Flavor::Unknown, None),
    }
    match ask(endpoint, "/debug/pprof/tasks").await {
        Ok(Some(_)) => return (Flavor::Agent, None),
        Ok(None) => {}
        Err(_) => return (Flavor::Unknown, None),
    }
    match ask(endpoint, "/debug/pprof/goroutine?debug=1").await {
        Ok(Some(text)) if goroutine_total(&text).is_some() => (Flavor::Go, None),
        Ok(_) => (Flavor::Other, None),
        Err(_) => (Flavor::Unknown, None),
    }
}

/// The counts a target of `flavor` serves, as metrics:
///
/// | flavor | metric | read from |
/// |---|---|---|
/// | leakscope agent | `tokio_tasks` | `leakscope_tokio_alive_tasks` of `/metrics` |
/// | leakscope agent | `heap_bytes` | `leakscope_jemalloc_bytes{kind="allocated"}` of `/metrics` |
/// | Go | `goroutines` | `goroutine profile: total N` of `/debug/pprof/goroutine?debug=1` |
/// | Go | `heap_bytes` | `# HeapAlloc = N` of `/debug/pprof/heap?debug=1` |
///
/// `metrics` is an agent's `/metrics` text already read, if any. A count
/// that could not be read is left out.
pub async fn read_counts(
    endpoint: &Endpoint,
    flavor: Flavor,
    metrics: Option<String>,
) -> Vec<(&'static str, f64)> {
    let mut out = Vec::new();
    match flavor {
        Flavor::Agent => {
            let text = match metrics {
                Some(text) => Some(text),
                None => read_text(endpoint, "/metrics").await,
            };
            if let Some(text) = text {
                if let Some(n) = prom_value(&text, "leakscope_tokio_alive_tasks", None) {
                    out.push(("tokio_tasks", n));
                }
                let allocated = prom_value(
                    &text,
                    "leakscope_jemalloc_bytes",
                    Some(("kind", "allocated")),
                );
                if let Some(n) = allocated {
                    out.push(("heap_bytes", n));
                }
            }
        }
        Flavor::Go => {
            if let Some(text) = read_text(endpoint, "/debug/pprof/goroutine?debug=1").await
                && let Some(n) = goroutine_total(&text)
            {
                out.push(("goroutines", n));
            }
            if let Some(text) = read_text(endpoint, "/debug/pprof/heap?debug=1").await
                && let Some(n) = heap_alloc(&text)
            {
                out.push(("heap_bytes", n));
            }
        }
        Flavor::Unknown | Flavor::Other => {}
    }
    out
}

/// One count profile (fds, tasks, threads), reduced, with its bytes.
#[derive(Debug, Clone)]
pub struct CountProfile {
    /// Its samples, reduced ([`counted`]).
    pub counted: Vec<Counted>,
    /// The profile, gzipped pprof.
    pub data: Vec<u8>,
}

/// The count profile an agent serves at `path` (under the URL's base,
/// `/debug/pprof/fds` or `/debug/pprof/tasks`), decoded and reduced off
/// the async workers.
pub async fn count_profile(endpoint: &Endpoint, path: &str) -> Result<CountProfile, String> {
    let full = format!("{}{path}", base_path(endpoint));
    let r = get_capped(endpoint, &full, COUNT_PROFILE_CAP).await?;
    let origin = format!("{path} of {}", endpoint.url());
    let body = r.body;
    blocking(move || {
        let p = Profile::decode_bytes(&body, &origin).map_err(|e| e.to_string())?;
        Ok(CountProfile {
            counted: counted(&p),
            data: body,
        })
    })
    .await
}

/// The fds profile of `pid` listed from /proc (what each fd is, no code),
/// off the async workers.
pub async fn proc_fds(pid: u32) -> Result<CountProfile, String> {
    blocking(move || {
        let p =
            leakscope_agent::collect::fds::capture(Target::Pid(pid)).map_err(|e| e.to_string())?;
        Ok(CountProfile {
            counted: counted(&p),
            data: p.encode_gzip(),
        })
    })
    .await
}

/// An agent's thread dump (`debug=2`), read: one request, not retried,
/// since each dump signals every thread of the service.
pub async fn thread_dump(endpoint: &Endpoint) -> Result<ThreadDump, String> {
    let path = format!("{}/debug/pprof/threads?debug=2", base_path(endpoint));
    let r = once(endpoint, &path, THREAD_DUMP_CAP).await?;
    if !(200..300).contains(&r.status) {
        return Err(format!(
            "GET {path}: HTTP {}: {}",
            r.status,
            r.text().lines().next().unwrap_or_default()
        ));
    }
    blocking(move || threads::parse(&String::from_utf8_lossy(&r.body)).map_err(|e| e.to_string()))
        .await
}

/// A Go service's goroutine dump (`debug=2`), parsed and grouped off the
/// async workers.
pub async fn goroutine_groups(endpoint: &Endpoint) -> Result<Vec<Group>, String> {
    let path = format!("{}/debug/pprof/goroutine?debug=2", base_path(endpoint));
    let r = get_capped(endpoint, &path, GOROUTINE_DUMP_CAP).await?;
    blocking(move || {
        let text = String::from_utf8_lossy(&r.body);
        goroutines::parse(&text)
            .map(|gs| goroutines::group(&gs))
            .map_err(|e| e.to_string())
    })
    .await
}

/// The query a heap profile is pulled with: `?gc=1` for a Go service,
/// whose heap profile is otherwise as of the last collection (minutes old
/// when the leak itself is what drives the collector).
pub fn heap_query(flavor: Flavor) -> &'static str {
    if flavor == Flavor::Go { "?gc=1" } else { "" }
}

/// A heap profile: the bytes as served (gzipped pprof) and decoded.
pub async fn heap_profile(
    endpoint: &Endpoint,
    flavor: Flavor,
) -> Result<(Profile, Vec<u8>), String> {
    let path = format!(
        "{}/debug/pprof/heap{}",
        base_path(endpoint),
        heap_query(flavor)
    );
    let r = get_capped(endpoint, &path, HEAP_PROFILE_CAP).await?;
    let origin = format!("heap from {}", endpoint.url().with_path(&path));
    let body = r.body;
    blocking(move || {
        let p = Profile::decode_bytes(&body, &origin).map_err(|e| e.to_string())?;
        Ok((p, body))
    })
    .await
}

/// A profile of Go's shape from `path` (under the URL's base, with its
/// query), as served (gzipped pprof), checked to decode.
pub async fn raw_profile(endpoint: &Endpoint, path: &str, cap: usize) -> Result<Vec<u8>, String> {
    let full = format!("{}{path}", base_path(endpoint));
    let r = get_capped(endpoint, &full, cap).await?;
    let origin = format!("{path} of {}", endpoint.url());
    let body = r.body;
    blocking(move || {
        Profile::decode_bytes(&body, &origin).map_err(|e| e.to_string())?;
        Ok(body)
    })
    .await
}

/// The finding of two tasks profiles of an agent: the spawn sites that
/// grew; when the agent cannot know spawn sites (no `--cfg
/// tokio_unstable`), the count and what the profile says to set.
pub fn tasks_finding(base: &[Counted], new: &[Counted]) -> leakscope_agent::explain::Finding {
    use leakscope_agent::explain::Finding;
    use leakscope_agent::explain::counts::{finding, grown, total};
    let unknown = new
        .iter()
        .find(|c| c.what.starts_with(leakscope_agent::tasks::SITES_UNKNOWN));
    match unknown {
        Some(c) => {
            let mut f = Finding::unknown(
                "tasks",
                "tasks",
                format!(
                    "tokio tasks {} -> {} ({:+}): spawn sites unknown; the agent's tasks profile \
                     says {}",
                    total(base),
                    total(new),
                    total(new) - total(base),
                    c.what
                ),
            );
            f.groups = grown(base, new)
                .into_iter()
                .take(Finding::MAX_GROUPS)
                .collect();
            f
        }
        None => finding(
            "tasks",
            "tasks",
            base,
            new,
            "the tasks that grew were spawned from library code only",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_texts() {
        let heap = include_str!("../../tests/data/go-profiles/inventory-heap.debug1.txt");
        let want = heap
            .lines()
            .find_map(|l| l.strip_prefix("# HeapAlloc = "))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap();
        assert_eq!(heap_alloc(heap), Some(want));
        assert!(want > 0.0);
        assert_eq!(
            heap_alloc("heap profile: 0: 0 [0: 0] @ heap/1048576\n"),
            None
        );
        assert_eq!(
            goroutine_total("goroutine profile: total 43\n3 @ 0x1\n"),
            Some(43.0)
        );
        assert_eq!(goroutine_total("goroutine 1 [running]:\n"), None);
    }

    #[test]
    fn prometheus_values() {
        let text = "# HELP leakscope_jemalloc_bytes x\n\
                    # TYPE leakscope_jemalloc_bytes gauge\n\
                    leakscope_jemalloc_bytes{kind=\"active\"} 9\n\
                    leakscope_jemalloc_bytes{kind=\"allocated\"} 1234567\n\
                    leakscope_tokio_alive_tasks 17\n\
                    leakscope_tokio_alive_tasks_more 3\n";
        assert_eq!(
            prom_value(
                text,
                "leakscope_jemalloc_bytes",
                Some(("kind", "allocated"))
            ),
            Some(1_234_567.0)
        );
        assert_eq!(
            prom_value(text, "leakscope_tokio_alive_tasks", None),
            Some(17.0)
        );
        assert_eq!(
            prom_value(text, "leakscope_jemalloc_bytes", Some(("kind", "x"))),
            None
        );
        assert!(is_agent_metrics(text));
        assert!(!is_agent_metrics(
            "# HELP go_goroutines n\ngo_goroutines 12\n"
        ));
    }

    #[test]
    fn base_paths() {
        use leakscope_agent::client::RetryPolicy;
        use leakscope_agent::client::url::HttpUrl;
        let base = |u: &str| {
            base_path(&Endpoint::new(
                HttpUrl::parse(u).unwrap(),
                RetryPolicy::default(),
            ))
        };
        assert_eq!(base("http://h:6060"), "");
        assert_eq!(base("http://h:6060/debug/pprof/"), "");
        assert_eq!(base("http://h:6060/svc/debug/pprof"), "/svc");
        assert_eq!(base("http://h:6060/svc/"), "/svc");
        assert_eq!(heap_query(Flavor::Go), "?gc=1");
        assert_eq!(heap_query(Flavor::Agent), "");
    }
}
