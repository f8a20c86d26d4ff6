//! The one HTTP client of leakscope: the demo, the tests, the overhead
//! bench, the load generator, webhooks, Alertmanager and the sidecar's
//! profile pulls use it. HTTP/1.1 is hyper's; [`Endpoint`] reaches `http://`
//! and `https://` servers (hyper-util's pooled client, rustls with the
//! platform's CAs and optional [`TlsRoots`] from a PEM file) and adds
//! timeouts, retries with backoff and a circuit breaker on top.
//!
//! [`Connection`] keeps one plain TCP stream to a loopback service open
//! across requests (HTTP/1.1 keep-alive), reads bodies up to a size cap
//! while they stream in, and reconnects once, transparently, when the
//! server closed an idle connection before answering. [`get`] and [`post`]
//! send one request on a fresh connection that is closed afterwards.
//!
//! ```no_run
//! # async fn demo(addr: std::net::SocketAddr) -> Result<(), leakscope_agent::client::ClientError> {
//! use std::time::Duration;
//! use leakscope_agent::client::Connection;
//!
//! let mut conn = Connection::connect(addr, Duration::from_secs(5)).await?;
//! let heap = conn.get("/debug/pprof/heap", Duration::from_secs(60)).await?;
//! let again = conn.get("/debug/pprof/heap", Duration::from_secs(60)).await?; // same stream
//! # let _ = (heap, again);
//! # Ok(())
//! # }
//! ```

pub mod backoff;
mod connection;
mod endpoint;
mod tls;
mod transport;
pub mod url;

pub use connection::Connection;
pub use endpoint::{Endpoint, EndpointStats, RetryPolicy};
pub use tls::TlsRoots;

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

/// A response: status, headers (names lowercased) and body.
#[derive(Debug, Clone)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Headers, names in lowercase, in order.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Response {
    /// First value of header `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Errors of [`get`], [`post`] and [`Connection`].
///
/// Failures of [`Connection::connect`] name the method `CONNECT` and the
/// address as the path.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No complete answer within the timeout.
    #[error("{method} {path}: no answer within {timeout:?}")]
    Timeout {
        /// Request method.
        method: &'static str,
        /// Request path.
        path: String,
        /// The limit.
        timeout: Duration,
    },
    /// Connecting, sending or reading failed.
    #[error("{method} {path}: {source}")]
    Io {
        /// Request method.
        method: &'static str,
        /// Request path.
        path: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The server answered with a status that is not a success (from an
    /// [`Endpoint`], which wants 2xx).
    #[error("{method} {path}: HTTP {status}: {message}")]
    Status {
        /// Request method.
        method: &'static str,
        /// Request path.
        path: String,
        /// The status code.
        status: u16,
        /// The first line of the body, shortened.
        message: String,
    },
    /// An [`Endpoint`]'s circuit breaker is open after repeated failures:
    /// the request was not sent.
    #[error(
        "{url}: not tried, the server failed repeatedly (circuit breaker open, next trial within {open_for:?})"
    )]
    BreakerOpen {
        /// The URL that would have been requested.
        url: String,
        /// How long the breaker stays open after it opens.
        open_for: Duration,
    },
    /// The TLS handshake with an `https://` server failed, typically
    /// because its certificate is not signed by a trusted CA.
    #[error(
        "{method} {url}: TLS failed: {message} (a server behind an internal CA needs that CA's \
         certificate in a PEM file given as the sink's or target's CA file)"
    )]
    Tls {
        /// Request method.
        method: &'static str,
        /// The URL requested.
        url: String,
        /// rustls's account of the failure.
        message: String,
    },
    /// The answer is not HTTP/1.1 this client understands.
    #[error("{method} {path}: bad response: {message}")]
    BadResponse {
        /// Request method.
        method: &'static str,
        /// Request path.
        path: String,
        /// What was wrong.
        message: String,
    },
}

impl ClientError {
    /// True when the answer's body was larger than the cap the request was
    /// made with ([`Connection::with_max_body`], [`Endpoint::get_capped`]).
    pub fn is_body_too_large(&self) -> bool {
        matches!(self, ClientError::BadResponse { message, .. } if message.starts_with(transport::TOO_LARGE))
    }
}

/// GET `http://addr{path}` on a fresh connection, closed afterwards.
///
/// `timeout` bounds the whole exchange, connecting included.
pub async fn get(addr: SocketAddr, path: &str, timeout: Duration) -> Result<Response, ClientError> {
    let max = Connection::DEFAULT_MAX_BODY;
    one_shot(addr, "GET", path, &[], Vec::new(), (timeout, timeout), max).await
}

/// POST `body` to `http://addr{path}` on a fresh connection, closed
/// afterwards.
///
/// `timeout` bounds the whole exchange, connecting included.
pub async fn post(
    addr: SocketAddr,
    path: &str,
    body: &[u8],
    timeout: Duration,
) -> Result<Response, ClientError> {
    let max = Connection::DEFAULT_MAX_BODY;
    one_shot(
        addr,
        "POST",
        path,
        body,
        Vec::new(),
        (timeout, timeout),
        max,
    )
    .await
}

/// POST `body` to `http://addr{path}` with extra request headers, such as
/// `("Content-Type", "application/json")`, on a fresh connection, closed
/// afterwards.
///
/// A `Host` header given here replaces the default `Host: {addr}` (useful
/// when `addr` was resolved from a name); `Content-Length`, `Connection`
/// and `Transfer-Encoding` are the client's and are refused, as are names
/// or values that would break the request head (CR, LF, `:` in a name).
/// A refused header is a [`ClientError::Io`] of kind `InvalidInput`, before
/// anything is sent. `timeout` bounds the whole exchange, connecting
/// included.
pub async fn post_with_headers(
    addr: SocketAddr,
    path: &str,
    body: &[u8],
    headers: &[(&str, &str)],
    timeout: Duration,
) -> Result<Response, ClientError> {
    let extra = check_headers(headers).map_err(|source| ClientError::Io {
        method: "POST",
        path: path.to_owned(),
        source,
    })?;
    let max = Connection::DEFAULT_MAX_BODY;
    one_shot(addr, "POST", path, body, extra, (timeout, timeout), max).await
}

/// Checks extra request headers: no reserved names (`Content-Length`,
/// `Connection`, `Transfer-Encoding`), nothing that would break the request
/// head. A later `Host` replaces the default one.
fn check_headers(headers: &[(&str, &str)]) -> io::Result<Vec<(String, String)>> {
    let mut extra: Vec<(String, String)> = Vec::with_capacity(headers.len());
    for &(name, value) in headers {
        let reserved = ["content-length", "connection", "transfer-encoding"]
            .iter()
            .any(|r| name.eq_ignore_ascii_case(r));
        let bad_name = name.is_empty()
            || name
                .bytes()
                .any(|b| b <= b' ' || b == b':' || b == 0x7f || !b.is_ascii());
        let bad_value = value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0);
        if reserved || bad_name || bad_value {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("refused request header {name:?}"),
            ));
        }
        extra.retain(|(n, _)| !n.eq_ignore_ascii_case(name) || !name.eq_ignore_ascii_case("host"));
        extra.push((name.to_owned(), value.to_owned()));
    }
    Ok(extra)
}

/// One request on a fresh connection; `timeouts` are (connect, whole
/// exchange), `max_body` the largest body read.
async fn one_shot(
    addr: SocketAddr,
    method: &'static str,
    path: &str,
    body: &[u8],
    headers: Vec<(String, String)>,
    (connect_timeout, timeout): (Duration, Duration),
    max_body: usize,
) -> Result<Response, ClientError> {
    let mut conn = Connection::unopened(addr, connect_timeout, max_body, false, headers);
    conn.send(method, path, None, body, timeout).await
}

#[cfg(test)]
mod tests {
    use super::*;

    use axum::Router;
    use axum::extract::ConnectInfo;
    use axum::routing::{get as get_route, post as post_route};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    const T: Duration = Duration::from_secs(10);

    /// Answers every connection with `raw` after reading its request, then
    /// closes it; hyper reads what the server sent.
    async fn raw_server(raw: &'static [u8]) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    let _ = s.read(&mut buf).await;
                    let _ = s.write_all(raw).await;
                    let _ = s.shutdown().await;
                });
            }
        });
        addr
    }

    /// The response `raw` as the one-shot GET reads it, capped at 1 MiB.
    async fn parse(raw: &'static [u8]) -> Result<Response, ClientError> {
        let addr = raw_server(raw).await;
        one_shot(addr, "GET", "/", &[], Vec::new(), (T, T), 1 << 20).await
    }

    #[tokio::test]
    async fn parses_plain_and_chunked_bodies() {
        let r = parse(b"HTTP/1.1 404 Not Found\r\nX-Go-Pprof: 1\r\n\r\nUnknown profile\n")
            .await
            .expect("parse");
        assert_eq!(r.status, 404);
        assert_eq!(r.header("x-go-pprof"), Some("1"));
        assert_eq!(r.text(), "Unknown profile\n");
        let r = parse(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
            .await
            .expect("parse");
        assert_eq!(r.body, b"abcde");
        assert!(parse(b"HTTP/1.1 200 OK\r\n").await.is_err());
    }

    #[tokio::test]
    async fn rejects_bad_and_oversized_responses() {
        let e = parse(b"SSH-2.0-OpenSSH\r\n\r\n")
            .await
            .expect_err("not http");
        assert!(matches!(e, ClientError::BadResponse { .. }), "{e}");
        let e = parse(b"HTTP/1.1 200 OK\r\nContent-Length: 2000000\r\n\r\n")
            .await
            .expect_err("too large");
        assert!(e.is_body_too_large(), "{e}");
        // Over the cap without a length: stopped while streaming.
        static BIG: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
        let big = BIG.get_or_init(|| {
            let mut raw = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n".to_vec();
            raw.resize(raw.len() + (2 << 20), b'x');
            raw
        });
        let e = parse(big).await.expect_err("too large");
        assert!(e.is_body_too_large(), "{e}");
        assert!(
            parse(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n")
                .await
                .is_err()
        );
        assert!(
            parse(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")
                .await
                .is_err()
        );
        assert!(
            parse(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\n")
                .await
                .is_err()
        );
        let r =
            parse(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi")
                .await
                .expect("parse");
        assert_eq!((r.status, r.body.as_slice()), (200, &b"hi"[..]));
    }

    /// Serves `app` on a loopback port with the peer address available.
    async fn serve(app: Router) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let _ = axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .await;
        });
        addr
    }

    #[tokio::test]
    async fn keeps_one_connection_for_several_requests() {
        let app = Router::new()
            .route(
                "/peer",
                get_route(
                    |ConnectInfo(peer): ConnectInfo<SocketAddr>| async move { peer.to_string() },
                ),
            )
            .route("/echo", post_route(|body: String| async move { body }));
        let addr = serve(app).await;
        let mut conn = Connection::connect(addr, T).await.expect("connect");
        let mut peers = Vec::new();
        for i in 0..5 {
            let r = conn.get("/peer", T).await.expect("get");
            assert_eq!(r.status, 200);
            peers.push(r.text());
            let r = conn
                .post("/echo", format!("body {i}").as_bytes(), T)
                .await
                .expect("post");
            assert_eq!(r.text(), format!("body {i}"));
        }
        let r = conn.get("/peer", T).await.expect("get");
        peers.push(r.text());
        assert!(peers.windows(2).all(|w| w[0] == w[1]), "{peers:?}");
        // The one-shot functions use a new connection each time.
        let a = get(addr, "/peer", T).await.expect("get").text();
        let b = get(addr, "/peer", T).await.expect("get").text();
        assert_ne!(a, peers[0]);
        assert_ne!(b, peers[0]);
        let r = post(addr, "/echo", b"posted", T).await.expect("post");
        assert_eq!(r.text(), "posted");
    }

    #[tokio::test]
    async fn posts_with_extra_headers_and_refuses_unsafe_ones() {
        let app = Router::new().route(
            "/h",
            post_route(|headers: axum::http::HeaderMap, body: String| async move {
                let h = |n: &str| {
                    headers
                        .get(n)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("-")
                        .to_owned()
                };
                format!("{} {} {}", h("content-type"), h("host"), body)
            }),
        );
        let addr = serve(app).await;
        let json = [("Content-Type", "application/json")];
        let r = post_with_headers(addr, "/h", b"{}", &json, T)
            .await
            .expect("post");
        assert_eq!(r.text(), format!("application/json {addr} {{}}"));
        let named = [("Host", "hooks.example:80")];
        let r = post_with_headers(addr, "/h", b"x", &named, T)
            .await
            .expect("post");
        assert_eq!(r.text(), "- hooks.example:80 x");
        for bad in [
            ("X-A", "1\r\nX-B: 2"),
            ("Bad Name", "v"),
            ("", "v"),
            ("content-length", "9"),
        ] {
            let e = post_with_headers(addr, "/h", b"", &[bad], T)
                .await
                .expect_err("refused");
            assert!(
                matches!(&e, ClientError::Io { source, .. } if source.kind() == io::ErrorKind::InvalidInput),
                "{e}"
            );
        }
    }

    #[tokio::test]
    async fn reads_a_chunked_body_and_reuses_the_connection() {
        // No length known in advance: hyper answers with chunked encoding.
        let app = Router::new().route(
            "/stream",
            get_route(|| async {
                axum::body::Body::from_stream(
                    axum::body::Body::from("x".repeat(100_000)).into_data_stream(),
                )
            }),
        );
        let addr = serve(app).await;
        let mut conn = Connection::connect(addr, T).await.expect("connect");
        for _ in 0..3 {
            let r = conn.get("/stream", T).await.expect("get");
            assert_eq!(r.header("transfer-encoding"), Some("chunked"));
            assert_eq!(r.body.len(), 100_000);
            assert!(r.body.iter().all(|&b| b == b'x'));
        }
        // Over the cap: an error.
        let mut small = Connection::connect(addr, T)
            .await
            .expect("connect")
            .with_max_body(1000);
        let e = small.get("/stream", T).await.expect_err("too large");
        assert!(matches!(e, ClientError::BadResponse { .. }), "{e}");
    }

    #[tokio::test]
    async fn reads_chunks_with_extensions_and_trailers_split_across_writes() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).await;
            for part in [
                &b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4;name=v"[..],
                b"alue\r\nleak\r\n",
                b"5\r\nscope\r\n0\r\nX-Trailer: 1\r\n",
                b"\r\n",
            ] {
                let _ = s.write_all(part).await;
                let _ = s.flush().await;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        let mut conn = Connection::connect(addr, T).await.expect("connect");
        let r = conn.get("/", T).await.expect("get");
        assert_eq!(r.text(), "leakscope");
    }

    #[tokio::test]
    async fn reconnects_once_when_the_server_closed_an_idle_connection() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        // Each accepted stream answers one request, keep-alive, then closes.
        tokio::spawn(async move {
            for n in 0.. {
                let Ok((mut s, _)) = listener.accept().await else {
                    return;
                };
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let body = format!("stream {n}");
                let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len());
                let _ = s.write_all(format!("{head}{body}").as_bytes()).await;
            }
        });
        let mut conn = Connection::connect(addr, T).await.expect("connect");
        assert_eq!(conn.get("/", T).await.expect("first").text(), "stream 0");
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(conn.get("/", T).await.expect("second").text(), "stream 1");
        assert_eq!(conn.get("/", T).await.expect("third").text(), "stream 2");
    }

    #[tokio::test]
    async fn times_out_and_recovers_on_a_new_stream() {
        let app = Router::new()
            .route(
                "/slow",
                get_route(|| async {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    "late"
                }),
            )
            .route("/fast", get_route(|| async { "fast" }));
        let addr = serve(app).await;
        let limit = Duration::from_millis(200);
        let mut conn = Connection::connect(addr, T).await.expect("connect");
        let e = conn.get("/slow", limit).await.expect_err("timeout");
        match &e {
            ClientError::Timeout {
                method,
                path,
                timeout,
            } => assert_eq!((*method, path.as_str(), *timeout), ("GET", "/slow", limit)),
            other => panic!("expected a timeout, got {other}"),
        }
        assert_eq!(e.to_string(), "GET /slow: no answer within 200ms");
        assert_eq!(conn.get("/fast", T).await.expect("fast").text(), "fast");
        let e = get(addr, "/slow", limit).await.expect_err("timeout");
        assert!(matches!(e, ClientError::Timeout { .. }), "{e}");
    }

    #[tokio::test]
    async fn connect_errors_name_the_address() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        drop(listener);
        let e = Connection::connect(addr, T).await.expect_err("refused");
        assert!(
            e.to_string().starts_with(&format!("CONNECT {addr}: ")),
            "{e}"
        );
        let e = get(addr, "/x", T).await.expect_err("refused");
        assert!(e.to_string().starts_with("GET /x: "), "{e}");
    }
}
