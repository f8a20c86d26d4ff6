//! `/metrics`: this process's resources in Prometheus text format (the
//! standard `process_*` series plus `leakscope_*` ones), with tokio's task
//! counts and jemalloc's statistics when they are available.

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

use super::{GoError, HttpState};
use crate::resource::prometheus::{PromText, write_sample};
use crate::resource::{SampleOptions, Target, sample};

/// The content type of Prometheus text format 0.0.4.
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

pub(crate) async fn metrics(state: axum::extract::State<HttpState>) -> Response {
    let runtime = tokio::runtime::Handle::try_current().ok().map(|h| {
        let m = h.metrics();
        (m.num_alive_tasks(), m.num_workers(), m.global_queue_depth())
    });
    let watch = state.config.watch.as_ref().map(|w| {
        let view = w.monitor.view();
        (
            view.levels,
            view.alerts_total,
            w.evidence.captures_total(),
            w.webhook.as_ref().map(|h| h.stats()),
            w.alertmanager.as_ref().map(|a| (a.stats(), a.firing())),
        )
    });
    let rendered = state
        .heavy(move || -> Result<String, crate::Error> {
            let opts = SampleOptions {
                fd_breakdown: true,
                thread_names: true,
                tcp_states: true,
            };
            let s = sample(Target::SelfProcess, &opts)?;
            let mut p = PromText::new();
            write_sample(&mut p, &s);
            if let Some((tasks, workers, queue)) = runtime {
                p.single(
                    "leakscope_tokio_alive_tasks",
                    "gauge",
                    "Tokio tasks spawned and not yet completed, on the runtime serving /metrics.",
                    tasks as f64,
                );
                p.single(
                    "leakscope_tokio_workers",
                    "gauge",
                    "Tokio worker threads.",
                    workers as f64,
                );
                p.single(
                    "leakscope_tokio_global_queue_depth",
                    "gauge",
                    "Tasks waiting in the tokio runtime's global queue.",
                    queue as f64,
                );
            }
            #[cfg(feature = "heap")]
            if let Some(a) = crate::heap::allocator_stats() {
                let series = [
                    ("allocated", a.allocated),
                    ("active", a.active),
                    ("resident", a.resident),
                    ("metadata", a.metadata),
                    ("retained", a.retained),
                ]
                .map(|(k, v)| (vec![("kind", k.to_owned())], v as f64));
                p.family(
                    "leakscope_jemalloc_bytes",
                    "gauge",
                    "jemalloc's accounting of the heap, by kind (stats.allocated, .active, ...).",
                    &series,
                );
            }
            if let Some((levels, alerts_total, captures_total, webhook, alertmanager)) = watch {
                if let Some(h) = webhook {
                    write_delivery(&mut p, "webhook", "Alerts handed to the webhook", &h);
                }
                if let Some((a, firing)) = alertmanager {
                    write_delivery(
                        &mut p,
                        "alertmanager",
                        "Posts to Alertmanager (changes and re-sends)",
                        &a,
                    );
                    p.single(
                        "leakscope_alertmanager_firing",
                        "gauge",
                        "Alerts firing in Alertmanager, re-sent every period.",
                        firing as f64,
                    );
                }
                let series: Vec<_> = levels
                    .iter()
                    .map(|(rule, metric, level)| {
                        let v = match level {
                            crate::watch::rules::Level::Ok => 0.0,
                            crate::watch::rules::Level::Warning => 1.0,
                            crate::watch::rules::Level::Critical => 2.0,
                        };
                        (vec![("rule", rule.clone()), ("metric", metric.clone())], v)
                    })
                    .collect();
                p.family(
                    "leakscope_threshold_state",
                    "gauge",
                    "State of each threshold rule: 0 ok, 1 warning, 2 critical.",
                    &series,
                );
                p.single(
                    "leakscope_alerts_total",
                    "counter",
                    "Threshold state changes since start.",
                    alerts_total as f64,
                );
                p.single(
                    "leakscope_captures_total",
                    "counter",
                    "Evidence captures (baseline and breach) taken since start.",
                    captures_total as f64,
                );
            }
            Ok(p.finish())
        })
        .await;
    match rendered {
        Ok(Ok(body)) => {
            let mut res = body.into_response();
            res.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
            res
        }
        Ok(Err(e)) => GoError::from(e).into_response(),
        Err(e) => e.into_response(),
    }
}

/// An alert sink's counters: `leakscope_{sink}_alerts_total` by outcome and
/// `leakscope_{sink}_breaker_open`.
fn write_delivery(
    p: &mut PromText,
    sink: &str,
    what: &str,
    h: &crate::alert::delivery::DeliveryStats,
) {
    p.family(
        &format!("leakscope_{sink}_alerts_total"),
        "counter",
        &format!("{what}, by outcome."),
        &[
            (vec![("outcome", "sent".to_owned())], h.sent as f64),
            (
                vec![("outcome", "dropped_queue_full".to_owned())],
                h.dropped_queue_full as f64,
            ),
            (
                vec![("outcome", "dropped_breaker_open".to_owned())],
                h.dropped_breaker_open as f64,
            ),
        ],
    );
    p.single(
        &format!("leakscope_{sink}_breaker_open"),
        "gauge",
        &format!("1 while the {sink}'s circuit breaker is open."),
        if h.breaker_state == "open" { 1.0 } else { 0.0 },
    );
}
