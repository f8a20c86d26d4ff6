//! The wire side of the client: reading an HTTP/1.1 response head and
//! body (Content-Length, chunked, or to the end of the stream) from a
//! buffered stream, with line and size limits, and telling a stream the
//! server closed from other failures.

use std::io;

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt};

use super::{ClientError, MAX_HEADERS, MAX_LINE, Response};

/// How an exchange failed.
#[derive(Debug)]
pub(super) enum Failure {
    /// The server closed the stream before the first byte of the response.
    ClosedBeforeResponse(io::Error),
    /// Reading or writing failed later.
    Io(io::Error),
    /// The response is malformed or too large.
    Bad(String),
    /// Connecting failed.
    Client(ClientError),
}

impl Failure {
    pub(super) fn into_error(self, method: &'static str, path: &str) -> ClientError {
        match self {
            Failure::ClosedBeforeResponse(source) | Failure::Io(source) => ClientError::Io {
                method,
                path: path.to_owned(),
                source,
            },
            Failure::Bad(message) => ClientError::BadResponse {
                method,
                path: path.to_owned(),
                message,
            },
            Failure::Client(e) => e,
        }
    }
}

pub(super) fn is_closed(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::UnexpectedEof
    )
}

/// Reads one line ending in CRLF into `line`, without the CRLF.
pub(super) async fn read_line<R: AsyncBufRead + Unpin>(
    r: &mut R,
    line: &mut Vec<u8>,
) -> Result<(), Failure> {
    line.clear();
    let n = (&mut *r)
        .take(MAX_LINE as u64 + 2)
        .read_until(b'\n', line)
        .await
        .map_err(Failure::Io)?;
    if n == 0 {
        return Err(Failure::Io(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "connection closed by the server in the middle of a response",
        )));
    }
    if !line.ends_with(b"\r\n") {
        return Err(Failure::Bad(if line.len() > MAX_LINE {
            format!("line longer than {MAX_LINE} bytes")
        } else {
            format!("malformed line {:?}", String::from_utf8_lossy(line))
        }));
    }
    line.truncate(line.len() - 2);
    Ok(())
}

/// Reads one response: the head, then the body framed by `Content-Length`,
/// chunked encoding or the end of the stream. Also returns whether the
/// stream may carry another request.
pub(super) async fn read_response<R: AsyncBufRead + Unpin>(
    r: &mut R,
    line: &mut Vec<u8>,
    max_body: usize,
) -> Result<(Response, bool), Failure> {
    // Nothing at all yet: the server closed an idle stream.
    match r.fill_buf().await {
        Ok([]) => {
            return Err(Failure::ClosedBeforeResponse(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed by the server before any response",
            )));
        }
        Ok(_) => {}
        Err(e) if is_closed(&e) => return Err(Failure::ClosedBeforeResponse(e)),
        Err(e) => return Err(Failure::Io(e)),
    }
    loop {
        let (status, http10) = read_status_line(r, line).await?;
        let mut headers = Vec::new();
        loop {
            read_line(r, line).await?;
            if line.is_empty() {
                break;
            }
            if headers.len() == MAX_HEADERS {
                return Err(Failure::Bad(format!("more than {MAX_HEADERS} headers")));
            }
            let text = String::from_utf8_lossy(line);
            let Some((name, value)) = text.split_once(':') else {
                return Err(Failure::Bad(format!("malformed header {text:?}")));
            };
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
        }
        // 1xx (100 Continue, 103 Early Hints): the real answer follows.
        if (100..200).contains(&status) && status != 101 {
            continue;
        }
        let has_token = |name: &str, token: &str| {
            headers
                .iter()
                .filter(|(k, _)| k == name)
                .flat_map(|(_, v)| v.split(','))
                .any(|t| t.trim().eq_ignore_ascii_case(token))
        };
        let mut keep = if http10 {
            has_token("connection", "keep-alive")
        } else {
            !has_token("connection", "close")
        };
        let mut body = Vec::new();
        if has_token("transfer-encoding", "chunked") {
            read_chunked(r, line, max_body, &mut body).await?;
        } else if let Some((_, v)) = headers.iter().find(|(k, _)| k == "content-length") {
            let n: usize = v
                .parse()
                .map_err(|_| Failure::Bad(format!("bad content-length {v:?}")))?;
            if n > max_body {
                return Err(too_large(max_body));
            }
            body.resize(n, 0);
            r.read_exact(&mut body).await.map_err(Failure::Io)?;
        } else if !(status == 204 || status == 304 || status == 101) {
            // No length: the body runs to the end of the stream.
            (&mut *r)
                .take(max_body as u64 + 1)
                .read_to_end(&mut body)
                .await
                .map_err(Failure::Io)?;
            if body.len() > max_body {
                return Err(too_large(max_body));
            }
            keep = false;
        }
        let response = Response {
            status,
            headers,
            body,
        };
        return Ok((response, keep && status != 101));
    }
}

/// The status code, and whether the server speaks HTTP/1.0.
pub(super) async fn read_status_line<R: AsyncBufRead + Unpin>(
    r: &mut R,
    line: &mut Vec<u8>,
) -> Result<(u16, bool), Failure> {
    read_line(r, line).await?;
    let text = String::from_utf8_lossy(line);
    let mut parts = text.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    let status = parts
        .next()
        .filter(|s| s.len() == 3)
        .and_then(|s| s.parse::<u16>().ok())
        .filter(|s| (100..600).contains(s) && version.starts_with("HTTP/1."))
        .ok_or_else(|| Failure::Bad(format!("bad status line {text:?}")))?;
    Ok((status, version == "HTTP/1.0"))
}

pub(super) async fn read_chunked<R: AsyncBufRead + Unpin>(
    r: &mut R,
    line: &mut Vec<u8>,
    max_body: usize,
    body: &mut Vec<u8>,
) -> Result<(), Failure> {
    loop {
        read_line(r, line).await?;
        let text = String::from_utf8_lossy(line);
        let size_text = text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| Failure::Bad(format!("bad chunk size {text:?}")))?;
        if size == 0 {
            // Trailers, then the empty line.
            loop {
                read_line(r, line).await?;
                if line.is_empty() {
                    return Ok(());
                }
            }
        }
        if size > max_body.saturating_sub(body.len()) {
            return Err(too_large(max_body));
        }
        let start = body.len();
        body.resize(start + size, 0);
        r.read_exact(&mut body[start..])
            .await
            .map_err(Failure::Io)?;
        read_line(r, line).await?;
        if !line.is_empty() {
            return Err(Failure::Bad("chunk not followed by CRLF".into()));
        }
    }
}

/// How the message of a body over the cap starts (see
/// [`ClientError::is_body_too_large`](super::ClientError::is_body_too_large)).
pub(super) const TOO_LARGE: &str = "body larger than ";

pub(super) fn too_large(max_body: usize) -> Failure {
    Failure::Bad(format!("{TOO_LARGE}{max_body} bytes"))
}
