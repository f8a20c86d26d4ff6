//! The sidecar's HTTP API (JSON, documented in docs/sidecar.md):
//!
//! | route | answer |
//! |---|---|
//! | `GET /api/targets` | every target: pid, status, rule levels, last sample, pulls |
//! | `GET /api/targets/{name}` | one target |
//! | `GET /api/targets/{name}/series[?metric=M]` | its time series, `[[unix_s, value], ...]` per metric |
//! | `GET /api/targets/{name}/alerts` | its recent rule state changes, each rise with its `finding` |
//! | `POST /api/targets/{name}/snapshot?kind=heap[&seconds=N]` | take a profile now (201 + metadata) |
//! | `GET /api/targets/{name}/delta[?base=ID&new=ID]` | heap delta `new − base` as pprof (default: the last two heap snapshots) |
//! | `GET /api/snapshots[?target=&kind=&limit=]` | snapshot metadata, oldest first |
//! | `GET /api/snapshots/{id}` | one snapshot's metadata |
//! | `GET /api/snapshots/{id}/profile` | the profile itself (gzipped pprof, for `go tool pprof`) |
//! | `DELETE /api/snapshots/{id}` | delete it (204) |
//! | `GET /metrics` | every target's counters in Prometheus format, with a `target` label |
//! | `GET /healthz` | `ok` (no token needed) |
//! | `GET /ui/` | the web viewer (`leakscope_viewer::web`) |
//!
//! With a token set, every route but `/healthz` wants
//! `Authorization: Bearer TOKEN` and answers 401 otherwise. Errors are
//! `{"error": "..."}` with a 4xx/5xx status.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use leakscope_agent::profile::{Profile, delta};
use leakscope_agent::resource::prometheus::{PromText, write_samples};
use leakscope_agent::store::{ListFilter, Trigger};
use leakscope_agent::watch::monitor::METRICS;
use serde_json::{Value, json};

use super::pull::{SnapshotError, snapshot};
use super::{Shared, TargetState};

/// The API routes over `shared`.
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/api/targets", get(targets))
        .route("/api/targets/{name}", get(target))
        .route("/api/targets/{name}/series", get(series))
        .route("/api/targets/{name}/alerts", get(alerts))
        .route("/api/targets/{name}/snapshot", post(take_snapshot))
        .route("/api/targets/{name}/delta", get(heap_delta))
        .route("/api/snapshots", get(snapshots))
        .route(
            "/api/snapshots/{id}",
            get(snapshot_meta).delete(delete_snapshot),
        )
        .route("/api/snapshots/{id}/profile", get(snapshot_profile))
        .route("/metrics", get(metrics))
        .layer(axum::middleware::from_fn_with_state(shared.clone(), auth))
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state(shared)
}

/// Refuses requests without the bearer token, when one is set.
pub(crate) async fn auth(State(shared): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    if let Some(token) = &shared.token {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if !given.is_some_and(|g| constant_time_eq(g.as_bytes(), token.as_bytes())) {
            let mut r = error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return r;
        }
    }
    next.run(req).await
}

/// Compares without stopping at the first difference.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn json_response(status: StatusCode, value: &Value) -> Response {
    let body = serde_json::to_vec_pretty(value).unwrap_or_default();
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn error(status: StatusCode, message: impl std::fmt::Display) -> Response {
    json_response(status, &json!({ "error": message.to_string() }))
}

fn no_target(name: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        format!("no target called {name:?} (GET /api/targets lists them)"),
    )
}

fn target_json(shared: &Shared, t: &TargetState) -> Value {
    let view = t.monitor.view();
    let levels: Vec<Value> = view
        .levels
        .iter()
        .map(|(rule, metric, level)| json!({"rule": rule, "metric": metric, "level": level.to_string()}))
        .collect();
    let worst = view
        .levels
        .iter()
        .map(|(_, _, l)| *l)
        .max()
        .map_or("ok".to_owned(), |l| l.to_string());
    let counts: BTreeMap<&str, f64> = t
        .counts
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .copied()
        .collect();
    json!({
        "name": t.spec.name,
        "selector": t.spec.selector.describe(),
        "pid": view.pid,
        "status": view.status.as_str(),
        "level": worst,
        "restarts": view.restarts,
        "error": view.error,
        "limited": view.limited,
        "levels": levels,
        "alerts_total": view.alerts_total,
        "last": view.last,
        "counts": counts,
        "evidence": t.readings.lock().unwrap_or_else(|e| e.into_inner()).kept(),
        "pprof_url": t.endpoint.as_ref().map(|e| e.url().to_string()),
        "pulls": t.endpoint.as_ref().map(|e| e.stats()),
        "snapshots_total": t.snapshots_total.load(Ordering::Relaxed),
        "snapshots_stored": shared.store.list(&ListFilter::default().target(t.spec.name.clone())).len(),
        "pull_failures_total": t.pull_failures_total.load(Ordering::Relaxed),
        "last_pull_error": *t.last_pull_error.lock().unwrap_or_else(|e| e.into_inner()),
    })
}

async fn targets(State(shared): State<Arc<Shared>>) -> Response {
    let all: Vec<Value> = shared
        .targets
        .iter()
        .map(|t| target_json(&shared, t))
        .collect();
    json_response(StatusCode::OK, &Value::Array(all))
}

async fn target(State(shared): State<Arc<Shared>>, Path(name): Path<String>) -> Response {
    match shared.target(&name) {
        Some(t) => json_response(StatusCode::OK, &target_json(&shared, t)),
        None => no_target(&name),
    }
}

async fn series(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let Some(t) = shared.target(&name) else {
        return no_target(&name);
    };
    let wanted: Vec<&str> = match q.get("metric") {
        Some(m) if METRICS.contains(&m.as_str()) => vec![m.as_str()],
        Some(m) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("unknown metric {m:?} (known: {})", METRICS.join(", ")),
            );
        }
        None => METRICS.to_vec(),
    };
    let mut out = serde_json::Map::new();
    for m in wanted {
        let points = t.monitor.series(m);
        if !points.is_empty() || q.contains_key("metric") {
            out.insert(m.to_owned(), json!(points));
        }
    }
    json_response(StatusCode::OK, &Value::Object(out))
}

async fn alerts(State(shared): State<Arc<Shared>>, Path(name): Path<String>) -> Response {
    let Some(t) = shared.target(&name) else {
        return no_target(&name);
    };
    let view = t.monitor.view();
    // Each alert as the watch loop keeps it, with the finding that names
    // its leak when there is one.
    json_response(
        StatusCode::OK,
        &json!({ "target": name, "alerts": view.alerts }),
    )
}

async fn take_snapshot(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let Some(t) = shared.target(&name).cloned() else {
        return no_target(&name);
    };
    let kind = q.get("kind").map_or("heap", String::as_str).to_owned();
    let seconds = match q.get("seconds").map(|s| s.parse::<u32>()) {
        None => None,
        Some(Ok(s)) if (1..=300).contains(&s) => Some(s),
        Some(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "seconds must be a whole number from 1 to 300",
            );
        }
    };
    match snapshot(
        &shared,
        &t,
        &kind,
        Trigger::Manual,
        seconds,
        BTreeMap::new(),
    )
    .await
    {
        Ok(meta) => json_response(StatusCode::CREATED, &json!(meta)),
        Err(e @ (SnapshotError::UnknownKind(_) | SnapshotError::NoEndpoint(_))) => {
            error(StatusCode::BAD_REQUEST, e)
        }
        Err(e) => error(StatusCode::BAD_GATEWAY, e),
    }
}

/// An error answer, small enough to pass around before it becomes a response.
struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        error(self.0, self.1)
    }
}

/// Reads a stored profile off the async workers.
async fn read_profile(shared: &Arc<Shared>, id: &str) -> Result<(Vec<u8>, Profile), ApiError> {
    let store = shared.store.clone();
    let id = id.to_owned();
    tokio::task::spawn_blocking(move || {
        if store.get(&id).is_none() {
            return Err(ApiError(
                StatusCode::NOT_FOUND,
                format!("no snapshot {id:?}"),
            ));
        }
        let bytes = store
            .read(&id)
            .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
        let profile = Profile::decode_bytes(&bytes, &format!("snapshot {id}"))
            .map_err(|e| ApiError(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()))?;
        Ok((bytes, profile))
    })
    .await
    .unwrap_or_else(|e| Err(ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())))
}

fn pprof_response(bytes: Vec<u8>, filename: &str) -> Response {
    let disposition = format!("attachment; filename=\"{filename}\"");
    let mut r = (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/octet-stream")],
        Body::from(bytes),
    )
        .into_response();
    if let Ok(v) = HeaderValue::from_str(&disposition) {
        r.headers_mut().insert(header::CONTENT_DISPOSITION, v);
    }
    r
}

async fn heap_delta(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if shared.target(&name).is_none() {
        return no_target(&name);
    }
    let (base_id, new_id) = match (q.get("base"), q.get("new")) {
        (Some(b), Some(n)) => (b.clone(), n.clone()),
        (None, None) => {
            let last = shared.store.latest(&name, "heap", 2);
            if last.len() < 2 {
                return error(
                    StatusCode::NOT_FOUND,
                    format!("target {name:?} has fewer than two heap snapshots yet"),
                );
            }
            (last[0].id.clone(), last[1].id.clone())
        }
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                "give both base and new snapshot ids, or neither",
            );
        }
    };
    let base = match read_profile(&shared, &base_id).await {
        Ok((_, p)) => p,
        Err(r) => return r.into_response(),
    };
    let new = match read_profile(&shared, &new_id).await {
        Ok((_, p)) => p,
        Err(r) => return r.into_response(),
    };
    let encoded =
        tokio::task::spawn_blocking(move || delta(&base, &new).map(|d| d.encode_gzip())).await;
    match encoded {
        Ok(Ok(bytes)) => pprof_response(bytes, &format!("{name}-heap-delta.pb.gz")),
        Ok(Err(e)) => error(StatusCode::UNPROCESSABLE_ENTITY, e),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

async fn snapshots(
    State(shared): State<Arc<Shared>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let limit = match q.get("limit").map(|l| l.parse::<usize>()) {
        None => None,
        Some(Ok(l)) => Some(l),
        Some(Err(_)) => return error(StatusCode::BAD_REQUEST, "limit must be a whole number"),
    };
    let mut filter = ListFilter::default();
    filter.target = q.get("target").cloned();
    filter.kind = q.get("kind").cloned();
    filter.limit = limit;
    json_response(StatusCode::OK, &json!(shared.store.list(&filter)))
}

async fn snapshot_meta(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    match shared.store.get(&id) {
        Some(meta) => json_response(StatusCode::OK, &json!(meta)),
        None => error(StatusCode::NOT_FOUND, format!("no snapshot {id:?}")),
    }
}

async fn snapshot_profile(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    match read_profile(&shared, &id).await {
        Ok((bytes, _)) => pprof_response(bytes, &format!("{id}.pb.gz")),
        Err(r) => r.into_response(),
    }
}

async fn delete_snapshot(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    let store = shared.store.clone();
    let id2 = id.clone();
    match tokio::task::spawn_blocking(move || store.delete(&id2)).await {
        Ok(Ok(true)) => StatusCode::NO_CONTENT.into_response(),
        Ok(Ok(false)) => error(StatusCode::NOT_FOUND, format!("no snapshot {id:?}")),
        Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    let views: Vec<_> = shared
        .targets
        .iter()
        .map(|t| (t.clone(), t.monitor.view()))
        .collect();
    let mut p = PromText::new();
    let samples: Vec<_> = views
        .iter()
        .filter_map(|(t, v)| {
            v.last
                .as_ref()
                .map(|s| (vec![("target", t.spec.name.clone())], s))
        })
        .collect();
    write_samples(&mut p, &samples);
    let per_target =
        |f: &dyn Fn(&TargetState, &leakscope_agent::watch::monitor::MonitorView) -> f64| {
            views
                .iter()
                .map(|(t, v)| (vec![("target", t.spec.name.clone())], f(t, v)))
                .collect::<Vec<_>>()
        };
    p.family(
        "leakscope_target_up",
        "gauge",
        "1 when the target's process could be sampled on the last try.",
        &per_target(&|_, v| f64::from(u8::from(v.status.as_str() == "running"))),
    );
    let mut counts = Vec::new();
    for (t, _) in &views {
        for (name, value) in t.counts.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            counts.push((
                vec![
                    ("target", t.spec.name.clone()),
                    ("kind", (*name).to_owned()),
                ],
                *value,
            ));
        }
    }
    if !counts.is_empty() {
        p.family(
            "leakscope_target_tasks",
            "gauge",
            "Goroutines (Go) or tokio tasks (leakscope agent), read from the target's pprof endpoint.",
            &counts,
        );
    }
    let mut levels = Vec::new();
    for (t, v) in &views {
        for (rule, metric, level) in &v.levels {
            levels.push((
                vec![
                    ("target", t.spec.name.clone()),
                    ("rule", rule.clone()),
                    ("metric", metric.clone()),
                ],
                f64::from(*level as u8),
            ));
        }
    }
    p.family(
        "leakscope_threshold_state",
        "gauge",
        "State of each threshold rule: 0 ok, 1 warning, 2 critical.",
        &levels,
    );
    p.family(
        "leakscope_alerts_total",
        "counter",
        "Threshold state changes since the sidecar started.",
        &per_target(&|_, v| v.alerts_total as f64),
    );
    p.family(
        "leakscope_snapshots_total",
        "counter",
        "Profiles pulled and stored since the sidecar started.",
        &per_target(&|t, _| t.snapshots_total.load(Ordering::Relaxed) as f64),
    );
    p.family(
        "leakscope_pull_failures_total",
        "counter",
        "Profile pulls that failed since the sidecar started.",
        &per_target(&|t, _| t.pull_failures_total.load(Ordering::Relaxed) as f64),
    );
    let stats = shared.store.stats();
    p.single(
        "leakscope_store_snapshots",
        "gauge",
        "Snapshots in the store.",
        stats.count as f64,
    );
    p.single(
        "leakscope_store_bytes",
        "gauge",
        "Bytes of snapshot data in the store.",
        stats.bytes as f64,
    );
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        p.finish(),
    )
        .into_response()
}
