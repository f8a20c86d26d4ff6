//! `/debug/pprof/tasks` and `/debug/pprof/goroutine`: live tokio tasks by
//! spawn site (see [`crate::tasks`]), with Go's parameter handling for the
//! goroutine profile: `seconds` is refused (after Go's positive-integer
//! check), `debug=1` is the count-profile text, `debug=2` one block per
//! site (and per task with a dump), anything else a gzipped protobuf.

use axum::response::Response;
use tokio::runtime::Handle;

use super::{GoError, HttpState, atoi, attachment, form_value, text};
use crate::symbolize::Symbolizer;
use crate::tasks::{ProfileName, TaskCensus, TaskDumpState};

/// The answer built on a blocking thread.
enum Body {
    Text(String),
    Profile(Vec<u8>),
}

pub(super) async fn tasks_profile(
    state: &HttpState,
    name: &str,
    query: Option<&str>,
) -> Result<Response, GoError> {
    let seconds = form_value(query, "seconds");
    if !seconds.is_empty() {
        super::pprof::delta_seconds(&seconds)?;
        return Err(GoError::bad_request(
            r#""seconds" parameter is not supported for this profile type"#,
        ));
    }
    let debug = atoi(&form_value(query, "debug"));
    let kind = if name == "goroutine" {
        ProfileName::Goroutine
    } else {
        ProfileName::Tasks
    };
    // The runtime serving this request is the one counted (and dumped):
    // read here, on it, not on the blocking thread.
    let handle = Handle::try_current().ok();
    let alive = handle
        .as_ref()
        .map(|h| h.metrics().num_alive_tasks() as u64);
    let pending = pending_dump(state, handle.as_ref()).await;
    let body = state
        .heavy(move || {
            let census = TaskCensus::take(alive).with_dump(finish_dump(pending));
            let symbolizer = Symbolizer::global();
            if debug != 0 {
                Body::Text(census.text(kind, debug, symbolizer))
            } else {
                Body::Profile(census.profile(kind, symbolizer).encode_gzip())
            }
        })
        .await?;
    Ok(match body {
        Body::Text(t) => text(t),
        Body::Profile(bytes) => attachment(kind.as_str(), bytes),
    })
}

/// A task dump taken, or why not.
#[cfg(all(tokio_unstable, feature = "taskdump"))]
type PendingDump = Option<crate::Result<crate::tasks::TaskDump>>;
#[cfg(not(all(tokio_unstable, feature = "taskdump")))]
type PendingDump = ();

/// With hooks and the `taskdump` feature: a dump of the serving runtime
/// (current-thread runtimes only, see `tasks::dump`), taken while holding a
/// heavy-work slot, since it stalls the runtime while it polls every task.
#[cfg(all(tokio_unstable, feature = "taskdump"))]
async fn pending_dump(state: &HttpState, handle: Option<&Handle>) -> PendingDump {
    let handle = handle.filter(|_| crate::tasks::hooks_installed())?;
    // Closed only when the routes are going away: then no dump.
    let _permit = state.heavy.acquire().await.ok()?;
    Some(crate::tasks::dump_tasks(handle).await)
}

#[cfg(not(all(tokio_unstable, feature = "taskdump")))]
async fn pending_dump(_state: &HttpState, _handle: Option<&Handle>) -> PendingDump {}

#[cfg(all(tokio_unstable, feature = "taskdump"))]
fn finish_dump(pending: PendingDump) -> TaskDumpState {
    match pending {
        None => TaskDumpState::NotTaken,
        Some(Ok(dump)) => dump.resolve(),
        Some(Err(e)) => TaskDumpState::Failed(e.to_string()),
    }
}

#[cfg(not(all(tokio_unstable, feature = "taskdump")))]
fn finish_dump(_pending: PendingDump) -> TaskDumpState {
    TaskDumpState::NotTaken
}
