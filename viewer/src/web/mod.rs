//! The web pages, over any [`Source`] of targets and snapshots: the
//! sidecar's store and watch loops (`/ui/`), saved files
//! (`leakscope view`), or the in-process agent (`/debug/pprof/ui/`).
//!
//! | page | shows |
//! |---|---|
//! | `{prefix}/` | targets with sparklines and state; snapshots |
//! | `{prefix}/target/NAME` | leak suspects first, then timelines with thresholds, alerts with the leaks they name, and snapshots; pick two to diff |
//! | `{prefix}/profile/ID?type=T` | flamegraph (zoom, search, tooltips), sample types, top table |
//! | `{prefix}/diff?base=ID&new=ID&type=T&normalize=1` | what grew, ranked; differential flamegraphs of both sides |
//!
//! Everything is rendered on the server and embedded: no network needed.
//! Loading, folding and drawing run on the blocking pool, two at a time,
//! so big profiles never stall the async workers.

mod alerts;
mod diff_page;
mod files;
mod pages;

pub use diff_page::diff_report;
pub use files::{Files, collect_paths};

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use leakscope_agent::explain::Finding;
use leakscope_agent::explain::heap::HeapSnapshot;
use leakscope_agent::profile::Profile;

pub use crate::render::html::{Marker, Threshold};

/// One metric's history on a target.
#[derive(Debug, Clone, Default)]
pub struct MetricView {
    /// Metric name (`threads`, `open_fds`, `rss_bytes`, ...).
    pub name: String,
    /// `(unix seconds, value)`, oldest first.
    pub points: Vec<(f64, f64)>,
    /// Threshold lines.
    pub thresholds: Vec<Threshold>,
    /// `"bytes"` for sizes, `""` for counts.
    pub unit: String,
    /// For a chart of several lines (fds by kind, sockets by state): the
    /// named lines, drawn instead of `points`.
    pub lines: Vec<(String, Vec<(f64, f64)>)>,
}

/// A rule's state change.
#[derive(Debug, Clone)]
pub struct AlertView {
    /// When (Unix seconds).
    pub at: f64,
    /// Rule name.
    pub rule: String,
    /// New level.
    pub to: String,
    /// The sentence.
    pub message: String,
    /// What leaks and where, when the watch loop named it.
    pub finding: Option<Finding>,
}

/// A watched target as the pages show it.
#[derive(Debug, Clone, Default)]
pub struct TargetView {
    /// Its name.
    pub name: String,
    /// `running`, `gone`, ...
    pub status: String,
    /// Worst rule level: `ok`, `warning`, `critical`.
    pub level: String,
    /// Its pid.
    pub pid: Option<u32>,
    /// Why only counts are read, if so.
    pub limited: Option<String>,
    /// Metric histories.
    pub metrics: Vec<MetricView>,
    /// Recent alerts, oldest first.
    pub alerts: Vec<AlertView>,
    /// The last breakdown, as `(group, name, count)`: fds by kind, TCP
    /// sockets by state, threads by name.
    pub breakdown: Vec<(String, String, u64)>,
}

/// A stored profile as the pages list it.
#[derive(Debug, Clone)]
pub struct SnapshotView {
    /// Id, used in URLs.
    pub id: String,
    /// Target name.
    pub target: String,
    /// `heap`, `cpu`, ...
    pub kind: String,
    /// Unix seconds.
    pub time: f64,
    /// `schedule`, `breach`, `manual`, `file`, ...
    pub trigger: String,
    /// Size in bytes.
    pub bytes: u64,
}

/// What the pages read. Methods may block (file I/O, decoding): they are
/// called on the blocking pool.
pub trait Source: Send + Sync + 'static {
    /// Shown on the front page.
    fn title(&self) -> String;
    /// Watched targets, in display order (none for saved files).
    fn targets(&self) -> Vec<TargetView>;
    /// Snapshots, oldest first, of one target or all.
    fn snapshots(&self, target: Option<&str>) -> Vec<SnapshotView>;
    /// One profile, decoded; the error names the snapshot or file and says
    /// what is wrong with it.
    fn load(&self, id: &str) -> Result<Profile, String>;
    /// Problems to show on the front page (files that could not be read).
    fn notes(&self) -> Vec<String> {
        Vec::new()
    }
    /// The target's recent heap snapshots already reduced to sites, oldest
    /// first, when the source has them at hand (the agent's ring of heap
    /// snapshots, symbolized once). `None` (the default): the pages load
    /// the target's last heap profiles and reduce them.
    fn heap_sites(&self, target: &str) -> Option<Vec<HeapSnapshot>> {
        let _ = target;
        None
    }
}

/// Routes of the pages under `prefix` (`"/ui"`: `/ui/`, `/ui/profile/ID`,
/// ...), to merge into a router; links are built with it.
pub fn router(source: Arc<dyn Source>, prefix: &str) -> Router {
    let state = Web {
        source,
        prefix: prefix.trim_end_matches('/').to_owned(),
        heavy: Arc::new(tokio::sync::Semaphore::new(2)),
    };
    let p = state.prefix.clone();
    let mut router = Router::new();
    if !p.is_empty() {
        let to = format!("{p}/");
        router = router.route(
            &p,
            get(move || async move { axum::response::Redirect::to(&to) }),
        );
    }
    router
        .route(&format!("{p}/"), get(index))
        .route(&format!("{p}/target/{{name}}"), get(target))
        .route(&format!("{p}/profile/{{id}}"), get(profile))
        .route(&format!("{p}/profile/{{id}}/flame.svg"), get(profile_svg))
        .route(&format!("{p}/diff"), get(diff))
        .route(&format!("{p}/diff/flame.svg"), get(diff_svg))
        .with_state(state)
}

#[derive(Clone)]
struct Web {
    source: Arc<dyn Source>,
    prefix: String,
    heavy: Arc<tokio::sync::Semaphore>,
}

/// An answer: a status and HTML or SVG.
struct Answer {
    status: StatusCode,
    content_type: &'static str,
    body: String,
}

impl IntoResponse for Answer {
    fn into_response(self) -> Response {
        (
            self.status,
            [
                (header::CONTENT_TYPE, self.content_type),
                (header::CACHE_CONTROL, "no-store"),
            ],
            self.body,
        )
            .into_response()
    }
}

fn html(status: StatusCode, body: String) -> Answer {
    Answer {
        status,
        content_type: "text/html; charset=utf-8",
        body,
    }
}

fn svg(body: String) -> Answer {
    Answer {
        status: StatusCode::OK,
        content_type: "image/svg+xml",
        body,
    }
}

impl Web {
    /// Runs `f` on the blocking pool, two at a time.
    async fn heavy<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn Source) -> T + Send + 'static,
    ) -> Option<T> {
        let _permit = self.heavy.acquire().await.ok()?;
        let source = self.source.clone();
        tokio::task::spawn_blocking(move || f(source.as_ref()))
            .await
            .ok()
    }

    fn error_page(&self, status: StatusCode, title: &str, message: &str) -> Answer {
        html(status, pages::error(&self.prefix, title, message))
    }

    /// A page's outcome as an answer: the page, its error page, or "busy"
    /// when the blocking pool is gone.
    fn page(&self, outcome: Option<Result<String, pages::PageError>>) -> Answer {
        match outcome {
            Some(Ok(page)) => html(StatusCode::OK, page),
            Some(Err((status, title, message))) => self.error_page(status, &title, &message),
            None => self.error_page(
                StatusCode::SERVICE_UNAVAILABLE,
                "Busy",
                "the server is shutting down",
            ),
        }
    }
}

/// An image's outcome as an answer: the SVG, or an SVG with the error.
fn svg_answer(outcome: Option<Result<String, pages::PageError>>) -> Answer {
    match outcome {
        Some(Ok(body)) => svg(body),
        Some(Err((status, _, message))) => Answer {
            status,
            content_type: "image/svg+xml",
            body: pages::error_svg(&message),
        },
        None => html(StatusCode::SERVICE_UNAVAILABLE, String::new()),
    }
}

type Params = Query<HashMap<String, String>>;

async fn index(State(w): State<Web>) -> Answer {
    let prefix = w.prefix.clone();
    let outcome = w.heavy(move |s| Ok(pages::index(&prefix, s))).await;
    w.page(outcome)
}

async fn target(State(w): State<Web>, Path(name): Path<String>) -> Answer {
    let prefix = w.prefix.clone();
    let outcome = w.heavy(move |s| pages::target(&prefix, s, &name)).await;
    w.page(outcome)
}

async fn profile(State(w): State<Web>, Path(id): Path<String>, Query(q): Params) -> Answer {
    let prefix = w.prefix.clone();
    let kind = q.get("type").cloned();
    let outcome = w
        .heavy(move |s| pages::profile(&prefix, s, &id, kind.as_deref()))
        .await;
    w.page(outcome)
}

async fn profile_svg(State(w): State<Web>, Path(id): Path<String>, Query(q): Params) -> Answer {
    let kind = q.get("type").cloned();
    svg_answer(
        w.heavy(move |s| pages::profile_svg(s, &id, kind.as_deref()))
            .await,
    )
}

/// `base`, `new`, `type`, `normalize` of a diff request.
#[derive(Debug, Clone)]
struct DiffQuery {
    base: String,
    new: String,
    kind: Option<String>,
    normalize: bool,
}

fn diff_query(q: &HashMap<String, String>) -> Result<DiffQuery, String> {
    let get = |k: &str| q.get(k).filter(|v| !v.is_empty()).cloned();
    match (get("base"), get("new")) {
        (Some(base), Some(new)) => Ok(DiffQuery {
            base,
            new,
            kind: get("type"),
            normalize: matches!(
                q.get("normalize").map(String::as_str),
                Some("1" | "true" | "on")
            ),
        }),
        _ => Err("choose two snapshots: ?base=ID&new=ID".into()),
    }
}

async fn diff(State(w): State<Web>, Query(q): Params) -> Answer {
    let dq = match diff_query(&q) {
        Ok(d) => d,
        Err(m) => return w.error_page(StatusCode::BAD_REQUEST, "Diff", &m),
    };
    let prefix = w.prefix.clone();
    let outcome = w.heavy(move |s| diff_page::diff(&prefix, s, &dq)).await;
    w.page(outcome)
}

async fn diff_svg(State(w): State<Web>, Query(q): Params) -> Answer {
    let dq = match diff_query(&q) {
        Ok(d) => d,
        Err(m) => return svg_answer(Some(Err((StatusCode::BAD_REQUEST, String::new(), m)))),
    };
    let side = if q.get("side").map(String::as_str) == Some("base") {
        crate::render::Side::Base
    } else {
        crate::render::Side::New
    };
    svg_answer(w.heavy(move |s| diff_page::diff_svg(s, &dq, side)).await)
}
