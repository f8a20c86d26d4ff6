//! The watch loop over HTTP: `/debug/leakscope/alerts` (rule levels and
//! recent alerts, JSON) and `/debug/leakscope/evidence/{baseline,breach}`
//! (the captured heap profiles, for `go tool pprof -diff_base`).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

#[cfg(feature = "heap")]
use super::attachment;
use super::{GoError, HttpState, nosniff};
use crate::watch::evidence::Evidence;
use crate::watch::monitor::Monitor;

/// The watch loop and its evidence, shared with the routes.
#[derive(Debug, Clone)]
pub struct WatchParts {
    /// The running loop.
    pub monitor: Arc<Monitor>,
    /// Its captures.
    pub evidence: Arc<Evidence>,
    /// Where alerts are posted, if anywhere.
    pub webhook: Option<crate::alert::webhook::WebhookSink>,
    /// Where alerts are posted for Alertmanager, if anywhere.
    pub alertmanager: Option<crate::alert::alertmanager::AlertmanagerSink>,
}

fn parts(state: &HttpState) -> Result<&WatchParts, GoError> {
    state.config.watch.as_ref().ok_or_else(|| {
        GoError::not_found("the watch loop is off in this agent (AgentBuilder::watch)")
    })
}

pub(crate) async fn alerts(State(state): State<HttpState>) -> Response {
    let w = match parts(&state) {
        Ok(w) => w,
        Err(e) => return e.into_response(),
    };
    let view = w.monitor.view();
    let levels: Vec<_> = view
        .levels
        .iter()
        .map(|(rule, metric, level)| serde_json::json!({"rule": rule, "metric": metric, "level": level}))
        .collect();
    let body = serde_json::json!({
        "target": "self",
        "levels": levels,
        "alerts": view.alerts,
        "alerts_total": view.alerts_total,
        "captures_total": w.evidence.captures_total(),
        "error": view.error,
        "baseline_at": w.evidence.baseline().map(|c| crate::collect::unix_seconds(c.at)),
        "breach_at": w.evidence.breach().map(|c| crate::collect::unix_seconds(c.at)),
        "webhook": w.webhook.as_ref().map(|h| delivery_json(h.stats())),
        "alertmanager": w.alertmanager.as_ref().map(|a| {
            let mut v = delivery_json(a.stats());
            v["firing"] = a.firing().into();
            v
        }),
    });
    let mut res = body.to_string().into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    nosniff(res)
}

/// An alert sink's counters as JSON.
fn delivery_json(s: crate::alert::delivery::DeliveryStats) -> serde_json::Value {
    serde_json::json!({
        "sent": s.sent,
        "failed_attempts": s.failed_attempts,
        "retries": s.retries,
        "dropped_queue_full": s.dropped_queue_full,
        "dropped_breaker_open": s.dropped_breaker_open,
        "breaker": s.breaker_state,
    })
}

pub(crate) async fn evidence(
    State(state): State<HttpState>,
    Path(which): Path<String>,
) -> Response {
    match evidence_inner(&state, &which).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn evidence_inner(state: &HttpState, which: &str) -> Result<Response, GoError> {
    let w = parts(state)?;
    let capture = match which {
        "baseline" => w.evidence.baseline(),
        "breach" => w.evidence.breach(),
        _ => {
            return Err(GoError::not_found(
                "Unknown capture: use baseline or breach",
            ));
        }
    }
    .ok_or_else(|| GoError::not_found(format!("no {which} capture yet")))?;
    #[cfg(feature = "heap")]
    {
        let Some(counts) = capture.heap.clone() else {
            return Err(crate::Error::HeapProfilingDisabled.into());
        };
        let bytes = state
            .heavy(move || {
                crate::collect::heap::build(
                    &counts,
                    crate::collect::heap::HeapView::Heap,
                    None,
                    crate::symbolize::Symbolizer::global(),
                )
                .encode_gzip()
            })
            .await?;
        Ok(attachment(&format!("heap-{which}"), bytes))
    }
    #[cfg(not(feature = "heap"))]
    {
        let _ = capture;
        Err(crate::Error::HeapFeatureOff.into())
    }
}
