//! Handlers for the named profiles: `profile` (CPU), `heap`, `allocs`,
//! `threads`, `cmdline` and `symbol`, and the dispatch to `fds` (in
//! `http::fds`) and `tasks`/`goroutine` (in `http::tasks`). Each mirrors
//! its Go counterpart's parameters, validation order, status codes and
//! messages.

#![cfg_attr(
    not(all(feature = "cpu", feature = "heap")),
    allow(unused_imports, dead_code)
)]

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::Method;
use axum::response::{IntoResponse, Response};

use super::{GoError, HttpState, atoi, attachment, form_value, nosniff, text};
use crate::symbolize::{ProcessMaps, Symbolizer};

/// `/debug/pprof/{name}`: dispatches on the profile name like Go's `Index`.
pub(crate) async fn named(
    State(state): State<HttpState>,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
    method: Method,
    body: Bytes,
) -> Response {
    let query = query.as_deref();
    let res = match name.as_str() {
        "profile" => cpu_profile(&state, query).await,
        "heap" | "allocs" => heap_profile(&state, &name, query).await,
        "threads" => threads_profile(&state, query).await,
        "cmdline" => Ok(cmdline()),
        "fds" => super::fds::fds_profile(&state, query).await,
        "symbol" => symbol(&state, method, query, body).await,
        "tasks" | "goroutine" => super::tasks::tasks_profile(&state, &name, query).await,
        _ => Err(GoError::not_found("Unknown profile")),
    };
    nosniff(res.unwrap_or_else(IntoResponse::into_response))
}

/// Go's `seconds` check for delta profiles: a positive integer.
pub(super) fn delta_seconds(raw: &str) -> Result<u64, GoError> {
    match raw.parse::<i64>() {
        Ok(s) if s > 0 => Ok(s as u64),
        _ => Err(GoError::bad_request(
            r#"invalid value for "seconds" - must be a positive integer"#,
        )),
    }
}

fn check_duration(state: &HttpState, seconds: u64) -> Result<Duration, GoError> {
    let max = state.config.max_profile_duration;
    let asked = Duration::from_secs(seconds);
    if asked > max {
        return Err(GoError::bad_request(format!(
            "profile duration exceeds server's maximum of {}s: ask for fewer seconds \
             or raise max_profile_duration",
            max.as_secs()
        )));
    }
    Ok(asked)
}

#[cfg(feature = "cpu")]
async fn cpu_profile(state: &HttpState, query: Option<&str>) -> Result<Response, GoError> {
    use crate::cpu::CpuSampler;
    // Go: anything but a positive integer means the default, 30 seconds.
    let seconds = match form_value(query, "seconds").parse::<i64>() {
        Ok(s) if s > 0 => s as u64,
        _ => 30,
    };
    let duration = check_duration(state, seconds)?;
    let sampler = CpuSampler::start(state.config.cpu_hz)
        .map_err(|e| GoError::internal(format!("Could not enable CPU profiling: {e}")))?;
    let mut guard = StopOffThread(Some(sampler));
    // If the client goes away, this future is dropped and so is the guard,
    // which stops sampling at once.
    tokio::time::sleep(duration).await;
    let sampler = guard.0.take();
    let profile = state
        .heavy(move || sampler.map(|s| crate::collect::cpu::build(s.stop(), Symbolizer::global())))
        .await?
        .ok_or_else(|| GoError::internal("CPU profile lost"))?;
    Ok(attachment("profile", profile.encode_gzip()))
}

/// Stopping a sampler joins its drain thread; when a request is dropped
/// (client gone) that must not happen on an async worker, so it is handed
/// to a short-lived thread.
#[cfg(feature = "cpu")]
struct StopOffThread(Option<crate::cpu::CpuSampler>);

#[cfg(feature = "cpu")]
impl Drop for StopOffThread {
    fn drop(&mut self) {
        if let Some(sampler) = self.0.take() {
            let moved = std::thread::Builder::new()
                .name("leakscope-cpustop".into())
                .spawn(move || drop(sampler));
            // If no thread can be spawned, `spawn` drops the closure and with
            // it the sampler, stopping it inline: still correct, only slower.
            drop(moved);
        }
    }
}

#[cfg(not(feature = "cpu"))]
async fn cpu_profile(_state: &HttpState, _query: Option<&str>) -> Result<Response, GoError> {
    Err(GoError::internal(format!(
        "Could not enable CPU profiling: {}",
        crate::Error::CpuFeatureOff
    )))
}

/// The threads profile, answered like Go's goroutine profile: `seconds` is
/// refused (after Go's own check of its value), `debug=N` gives text,
/// anything else the gzipped protobuf.
#[cfg(feature = "cpu")]
async fn threads_profile(state: &HttpState, query: Option<&str>) -> Result<Response, GoError> {
    use crate::threads::ThreadDumpOptions;

    let seconds = form_value(query, "seconds");
    if !seconds.is_empty() {
        delta_seconds(&seconds)?;
        return Err(GoError::bad_request(
            r#""seconds" parameter is not supported for this profile type"#,
        ));
    }
    let debug = atoi(&form_value(query, "debug"));
    let failed = |e: crate::Error| GoError::internal(format!("Could not dump threads: {e}"));
    let options = ThreadDumpOptions::default();
    if debug != 0 {
        let body = state
            .heavy(move || {
                crate::threads::dump(&options)
                    .map(|raw| crate::collect::threads::text(&raw, debug, Symbolizer::global()))
            })
            .await?
            .map_err(failed)?;
        return Ok(text(body));
    }
    let bytes = state
        .heavy(move || {
            crate::collect::threads::capture(&options, Symbolizer::global())
                .map(|p| p.encode_gzip())
        })
        .await?
        .map_err(failed)?;
    Ok(attachment("threads", bytes))
}

#[cfg(not(feature = "cpu"))]
async fn threads_profile(_state: &HttpState, _query: Option<&str>) -> Result<Response, GoError> {
    Err(GoError::internal(format!(
        "Could not dump threads: {}",
        crate::Error::CpuFeatureOff
    )))
}

#[cfg(feature = "heap")]
async fn heap_profile(
    state: &HttpState,
    name: &str,
    query: Option<&str>,
) -> Result<Response, GoError> {
    use crate::collect::heap::{HeapCounts, HeapView, build};

    let view = if name == "allocs" {
        HeapView::Allocs
    } else {
        HeapView::Heap
    };
    let seconds = form_value(query, "seconds");
    let debug = atoi(&form_value(query, "debug"));
    // `gc` is accepted for compatibility: jemalloc has no collector to run.
    let _gc = atoi(&form_value(query, "gc"));

    if !seconds.is_empty() {
        let duration = check_duration(state, delta_seconds(&seconds)?)?;
        if debug != 0 {
            return Err(GoError::bad_request(
                "seconds and debug params are incompatible",
            ));
        }
        let collect = || async {
            state
                .heavy(|| {
                    crate::collect::heap::exclusive(|| {
                        crate::collect::heap::dump().map(|raw| HeapCounts::from_raw(&raw))
                    })
                })
                .await?
                .map_err(GoError::from)
        };
        let p0 = collect().await?;
        tokio::time::sleep(duration).await;
        let p1 = collect().await?;
        let elapsed = p1.time.duration_since(p0.time).unwrap_or(duration);
        let profile = state
            .heavy(move || {
                crate::collect::heap::exclusive(|| {
                    build(&p1.delta(&p0), view, Some(elapsed), Symbolizer::global())
                })
            })
            .await?;
        return Ok(attachment(&format!("{name}-delta"), profile.encode_gzip()));
    }

    if debug != 0 {
        let body = state
            .heavy(|| crate::collect::heap::exclusive(legacy_heap_text))
            .await??;
        return Ok(text(body));
    }
    let bytes = state
        .heavy(move || {
            crate::collect::heap::exclusive(|| {
                crate::collect::heap::dump()
                    .map(|raw| {
                        build(
                            &HeapCounts::from_raw(&raw),
                            view,
                            None,
                            Symbolizer::global(),
                        )
                    })
                    .map(|p| p.encode_gzip())
            })
        })
        .await??;
    Ok(attachment(name, bytes))
}

/// Go's legacy text heap profile, with one comment line per address naming
/// its function and file:line, and the process's mappings.
#[cfg(feature = "heap")]
fn legacy_heap_text() -> Result<String, GoError> {
    let raw = crate::collect::heap::dump()?;
    let maps = ProcessMaps::current().unwrap_or_default();
    let addrs: Vec<u64> = raw
        .samples
        .iter()
        .flat_map(|s| s.stack.iter().map(|a| a.saturating_sub(1)))
        .collect();
    let resolved = Symbolizer::global().resolve(&maps, &addrs);
    let mut describe = |addr: u64| {
        let r = resolved.get(&addr.saturating_sub(1))?;
        let f = r.frames.first()?;
        Some(match &f.file {
            Some(file) => format!("{}\t{}:{}", f.name, file, f.line),
            None => f.name.to_string(),
        })
    };
    let maps_text = std::fs::read_to_string("/proc/self/maps").ok();
    Ok(crate::heap::write_legacy_text(
        &raw,
        &mut describe,
        maps_text.as_deref(),
    ))
}

#[cfg(not(feature = "heap"))]
async fn heap_profile(
    _state: &HttpState,
    _name: &str,
    _query: Option<&str>,
) -> Result<Response, GoError> {
    Err(crate::Error::HeapFeatureOff.into())
}

/// The command line, arguments separated by NUL bytes, as Go sends it.
fn cmdline() -> Response {
    let args: Vec<String> = std::env::args_os()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    text(args.join("\0"))
}

/// Most addresses one symbol request may ask for.
const MAX_SYMBOL_ADDRESSES: usize = 100_000;

/// Go's symbol protocol: `num_symbols: 1`, then `0x<addr> <name>` for each
/// address (from the query on GET, the body on POST, separated by `+`) that
/// resolves to a function.
async fn symbol(
    state: &HttpState,
    method: Method,
    query: Option<&str>,
    body: Bytes,
) -> Result<Response, GoError> {
    let input: Vec<u8> = if method == Method::POST {
        body.to_vec()
    } else {
        query.unwrap_or("").as_bytes().to_vec()
    };
    let addrs: Vec<u64> = input
        .split(|b| *b == b'+')
        .filter_map(|w| parse_go_uint(std::str::from_utf8(w).ok()?.trim()))
        .filter(|a| *a != 0)
        .take(MAX_SYMBOL_ADDRESSES)
        .collect();
    let body = state
        .heavy(move || {
            let maps = ProcessMaps::current().unwrap_or_default();
            let resolved = Symbolizer::global().resolve(&maps, &addrs);
            let mut out = String::from("num_symbols: 1\n");
            for a in &addrs {
                if let Some(f) = resolved.get(a).and_then(|r| r.frames.first()) {
                    out.push_str(&format!("{a:#x} {}\n", f.name));
                }
            }
            out
        })
        .await?;
    Ok(text(body))
}

/// Go's `strconv.ParseUint(s, 0, 64)`: `0x` hex, leading-0 octal, `0b`
/// binary, or decimal; `_` separators are not accepted here.
fn parse_go_uint(s: &str) -> Option<u64> {
    let lower = s.to_ascii_lowercase();
    if let Some(hex) = lower.strip_prefix("0x") {
        u64::from_str_radix(hex, 16).ok()
    } else if let Some(bin) = lower.strip_prefix("0b") {
        u64::from_str_radix(bin, 2).ok()
    } else if let Some(oct) = lower.strip_prefix("0o") {
        u64::from_str_radix(oct, 8).ok()
    } else if lower.len() > 1 && lower.starts_with('0') {
        u64::from_str_radix(&lower[1..], 8).ok()
    } else {
        lower.parse().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_uint_forms() {
        assert_eq!(parse_go_uint("0x1f"), Some(31));
        assert_eq!(parse_go_uint("0X1F"), Some(31));
        assert_eq!(parse_go_uint("017"), Some(15));
        assert_eq!(parse_go_uint("42"), Some(42));
        assert_eq!(parse_go_uint("0"), Some(0));
        assert_eq!(parse_go_uint("zz"), None);
        assert_eq!(parse_go_uint(""), None);
    }

    #[test]
    fn delta_seconds_must_be_positive_integer() {
        assert_eq!(delta_seconds("3").ok(), Some(3));
        for bad in ["0", "-1", "x", "1.5", ""] {
            let e = delta_seconds(bad).expect_err(bad);
            assert_eq!(e.status, 400);
        }
    }
}
