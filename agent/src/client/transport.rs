//! What [`Connection`](super::Connection) and [`Endpoint`](super::Endpoint)
//! share on top of hyper: building a request, reading a response whose body
//! is capped while it streams in, and turning hyper's, rustls's and the
//! socket's errors into [`ClientError`]s that name the request.

use std::error::Error as StdError;
use std::io;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body as _, Incoming};

use super::{ClientError, Response};

/// The request body type: the whole body, known in advance.
pub(super) type Body = Full<Bytes>;

/// Largest response head (status line and headers) hyper buffers; hyper's
/// floor is 8 KiB. Also its read buffer for bodies.
pub(super) const MAX_BUF: usize = 64 * 1024;
/// Most header lines in one response head.
pub(super) const MAX_HEADERS: usize = 128;

/// How the message of a body over the cap starts (see
/// [`ClientError::is_body_too_large`]).
pub(super) const TOO_LARGE: &str = "body larger than ";

/// The request being made, for errors.
#[derive(Clone, Copy)]
pub(super) struct Req<'a> {
    pub method: &'static str,
    /// The path and query.
    pub target: &'a str,
    /// The whole URL, for TLS errors.
    pub url: &'a str,
}

impl Req<'_> {
    pub(super) fn io(self, source: io::Error) -> ClientError {
        ClientError::Io {
            method: self.method,
            path: self.target.to_owned(),
            source,
        }
    }

    pub(super) fn bad(self, message: String) -> ClientError {
        ClientError::BadResponse {
            method: self.method,
            path: self.target.to_owned(),
            message,
        }
    }

    /// An error of hyper (or of the connector under it): a TLS failure is
    /// a [`ClientError::Tls`], a malformed answer a
    /// [`ClientError::BadResponse`], the rest [`ClientError::Io`] with the
    /// socket error's kind when there is one.
    pub(super) fn failed(self, e: &(dyn StdError + 'static)) -> ClientError {
        let mut chain: Vec<&(dyn StdError + 'static)> = Vec::new();
        let mut next = Some(e);
        while let Some(err) = next {
            chain.push(err);
            // An io::Error's `source` skips the error it wraps (hyper-rustls
            // wraps tokio-rustls's, which wraps rustls's): step into it.
            next = match err.downcast_ref::<io::Error>().and_then(io::Error::get_ref) {
                Some(inner) => Some(inner as &(dyn StdError + 'static)),
                None => err.source(),
            };
        }
        let tls = chain
            .iter()
            .find_map(|err| err.downcast_ref::<rustls::Error>());
        if let Some(tls) = tls {
            return ClientError::Tls {
                method: self.method,
                url: self.url.to_owned(),
                message: tls.to_string(),
            };
        }
        // hyper-util's outer "client error (Connect)" says less than what
        // it wraps; skip it.
        let skip = usize::from(
            chain.len() > 1
                && e.downcast_ref::<hyper_util::client::legacy::Error>()
                    .is_some(),
        );
        let mut message = String::new();
        for err in &chain[skip..] {
            let text = err.to_string();
            if !message.contains(&text) {
                if !message.is_empty() {
                    message.push_str(": ");
                }
                message.push_str(&text);
            }
        }
        let parse = chain.iter().any(|err| {
            err.downcast_ref::<hyper::Error>()
                .is_some_and(|h| h.is_parse())
        });
        if parse {
            return self.bad(message);
        }
        let kind = chain
            .iter()
            .find_map(|err| err.downcast_ref::<io::Error>().map(io::Error::kind))
            .unwrap_or_else(|| {
                let incomplete = chain.iter().any(|err| {
                    err.downcast_ref::<hyper::Error>()
                        .is_some_and(|h| h.is_incomplete_message() || h.is_canceled())
                });
                if incomplete {
                    io::ErrorKind::UnexpectedEof
                } else {
                    io::ErrorKind::Other
                }
            });
        self.io(io::Error::new(kind, message))
    }
}

/// Builds a request for `uri` (a path for a [`Connection`](super::Connection),
/// an absolute URL for an [`Endpoint`](super::Endpoint)). `headers` were
/// checked by [`super::check_headers`].
pub(super) fn build(
    req: Req<'_>,
    uri: &str,
    headers: &[(String, String)],
    content_type: Option<&str>,
    body: Bytes,
    close: bool,
) -> Result<hyper::Request<Body>, ClientError> {
    let mut b = hyper::Request::builder()
        .method(req.method)
        .uri(uri)
        .header(
            hyper::header::USER_AGENT,
            concat!("leakscope/", env!("CARGO_PKG_VERSION")),
        );
    for (name, value) in headers {
        b = b.header(name.as_str(), value.as_str());
    }
    if let Some(ct) = content_type {
        b = b.header(hyper::header::CONTENT_TYPE, ct);
    }
    if close {
        b = b.header(hyper::header::CONNECTION, "close");
    }
    if req.method != "GET" || !body.is_empty() {
        b = b.header(hyper::header::CONTENT_LENGTH, body.len());
    }
    b.body(Full::new(body)).map_err(|e| {
        req.io(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("invalid request: {e}"),
        ))
    })
}

/// Reads the answer's body, at most `max_body` bytes: a larger body fails
/// as soon as its announced length or the bytes read so far pass the cap.
pub(super) async fn read(
    req: Req<'_>,
    response: hyper::Response<Incoming>,
    max_body: usize,
) -> Result<Response, ClientError> {
    let (parts, mut incoming) = response.into_parts();
    let too_large = || req.bad(format!("{TOO_LARGE}{max_body} bytes"));
    let announced = incoming.size_hint().lower();
    if announced > max_body as u64 {
        return Err(too_large());
    }
    let mut body = Vec::with_capacity(usize::try_from(announced).unwrap_or(0).min(1 << 20));
    while let Some(frame) = incoming.frame().await {
        let frame = frame.map_err(|e| req.failed(&e))?;
        if let Ok(data) = frame.into_data() {
            if data.len() > max_body - body.len() {
                return Err(too_large());
            }
            body.extend_from_slice(&data);
        }
    }
    let headers = parts
        .headers
        .iter()
        .map(|(name, value)| {
            (
                name.as_str().to_owned(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            )
        })
        .collect();
    Ok(Response {
        status: parts.status.as_u16(),
        headers,
        body,
    })
}
