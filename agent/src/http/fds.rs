//! `/debug/pprof/fds`: this process's open fds grouped by what they are (see
//! `collect::fds`), with Go's parameter handling for a profile that has no
//! delta form: `seconds` is refused, `debug=1` lists the groups, `debug=2`
//! (or more) every fd; no `debug` (or 0) is the gzipped protobuf. With the
//! `fd-sites` feature the profile and `debug=2` carry creation sites.

use axum::response::Response;

use super::pprof::delta_seconds;
use super::{GoError, HttpState, atoi, attachment, form_value, text};
use crate::collect::fds;
use crate::resource::{ListOptions, Target, list_fds};
use crate::symbolize::Symbolizer;

/// Serves the fds profile.
pub(crate) async fn fds_profile(
    state: &HttpState,
    query: Option<&str>,
) -> Result<Response, GoError> {
    let seconds = form_value(query, "seconds");
    if !seconds.is_empty() {
        // Go checks the value before saying the profile has no delta form.
        delta_seconds(&seconds)?;
        return Err(GoError::bad_request(
            r#""seconds" parameter is not supported for this profile type"#,
        ));
    }
    let debug = atoi(&form_value(query, "debug"));
    let out = state
        .heavy(move || {
            let listing = list_fds(Target::SelfProcess, &ListOptions::default())?;
            let symbolizer = Symbolizer::global();
            Ok::<_, crate::Error>(match debug {
                ..=0 => Output::Profile(fds::build_recorded(&listing, symbolizer).encode_gzip()),
                1 => Output::Text(fds::groups_text(&listing)),
                _ => Output::Text(fds::fds_text_recorded(&listing, symbolizer)),
            })
        })
        .await??;
    Ok(match out {
        Output::Profile(bytes) => attachment("fds", bytes),
        Output::Text(body) => text(body),
    })
}

/// What the blocking job made: a profile or a text form.
enum Output {
    Profile(Vec<u8>),
    Text(String),
}
