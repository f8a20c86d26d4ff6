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
