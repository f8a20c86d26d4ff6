//! [`Connection`]: one keep-alive HTTP/1.1 connection (hyper's client
//! connection over a plain TCP stream) to a loopback service, for tests,
//! benches and the load generator, which want to choose when a stream is
//! reused.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::transport::{self, Body, MAX_BUF, MAX_HEADERS, Req};
use super::{ClientError, Response};

/// One keep-alive HTTP/1.1 connection to a loopback service (plain
/// `http://`; [`Endpoint`](super::Endpoint) speaks https).
///
/// Requests are sent one at a time over the same TCP stream. After an error,
/// a timeout or a response that ends the connection (`Connection: close`, a
/// body that runs to the end of the stream), the next request opens a new
/// stream. When a stream that already carried a response is found closed by
/// the server before the next response arrived (the server dropped an idle
/// connection), the request is sent again, once, on a new stream.
#[derive(Debug)]
pub struct Connection {
    addr: SocketAddr,
    connect_timeout: Duration,
    max_body: usize,
    /// The open stream's sender, if any, and how many responses it carried.
    open: Option<(SendRequest<Body>, u64)>,
    /// Ask the server to keep the stream open (false for one-shot requests).
    keep_alive: bool,
    /// Extra request headers (one-shot requests only), already checked.
    headers: Vec<(String, String)>,
}

/// How an exchange failed.
enum Failure {
    /// The stream was closed before any response: worth one more try when
    /// the stream had carried a response before.
    Closed(ClientError),
    Other(ClientError),
}

impl Connection {
    /// Default largest body [`Connection::with_max_body`] accepts: 256 MiB.
    pub const DEFAULT_MAX_BODY: usize = 256 << 20;

    /// A connection that dials on its first request.
    pub(super) fn unopened(
        addr: SocketAddr,
        connect_timeout: Duration,
        max_body: usize,
        keep_alive: bool,
        headers: Vec<(String, String)>,
    ) -> Connection {
        Connection {
            addr,
            connect_timeout,
            max_body,
            open: None,
            keep_alive,
            headers,
        }
    }

    /// Opens a TCP connection to `addr` within `timeout`, which also bounds
    /// every later reconnect.
    pub async fn connect(addr: SocketAddr, timeout: Duration) -> Result<Connection, ClientError> {
        let mut conn = Connection::unopened(
            addr,
            timeout,
            Connection::DEFAULT_MAX_BODY,
            true,
            Vec::new(),
        );
        let path = addr.to_string();
        let req = Req {
            method: "CONNECT",
            target: &path,
            url: &path,
        };
        conn.open = Some((conn.dial_within(req).await?, 0));
        Ok(conn)
    }

    /// Sets the largest response body accepted; a larger one is a
    /// [`ClientError::BadResponse`] (default [`Self::DEFAULT_MAX_BODY`]).
    #[must_use]
    pub fn with_max_body(mut self, bytes: usize) -> Connection {
        self.max_body = bytes;
        self
    }

    /// The server's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// GET `path`; `timeout` bounds the whole exchange, a reconnect included.
    pub async fn get(&mut self, path: &str, timeout: Duration) -> Result<Response, ClientError> {
        self.send("GET", path, None, &[], timeout).await
    }

    /// POST `body` to `path`; `timeout` bounds the whole exchange, a
    /// reconnect included.
    pub async fn post(
        &mut self,
        path: &str,
        body: &[u8],
        timeout: Duration,
    ) -> Result<Response, ClientError> {
        self.send("POST", path, None, body, timeout).await
    }

    /// Sends `method` to `path` with `body` (none for an empty one) and, when
    /// given, a `Content-Type` header; `timeout` bounds the whole exchange, a
    /// reconnect included. A content type with a CR, LF or NUL is refused
    /// (a [`ClientError::Io`] of kind `InvalidInput`) before anything is sent.
    pub async fn request(
        &mut self,
        method: &'static str,
        path: &str,
        content_type: Option<&str>,
        body: &[u8],
        timeout: Duration,
    ) -> Result<Response, ClientError> {
        if let Some(ct) = content_type {
            super::check_headers(&[("Content-Type", ct)]).map_err(|source| ClientError::Io {
                method,
                path: path.to_owned(),
                source,
            })?;
        }
        self.send(method, path, content_type, body, timeout).await
    }

    pub(super) async fn send(
        &mut self,
        method: &'static str,
        path: &str,
        content_type: Option<&str>,
        body: &[u8],
        timeout: Duration,
    ) -> Result<Response, ClientError> {
        let req = Req {
            method,
            target: path,
            url: path,
        };
        let body = Bytes::copy_from_slice(body);
        let exchange = async {
            let reused = matches!(self.open, Some((_, served)) if served > 0);
            match self.exchange(req, content_type, body.clone()).await {
                Err(Failure::Closed(_)) if reused => {
                    self.open = None;
                    self.exchange(req, content_type, body).await
                }
                result => result,
            }
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(Failure::Closed(e) | Failure::Other(e))) => {
                self.open = None;
                Err(e)
            }
            Err(_) => {
                // The stream is somewhere in the middle of a response.
                self.open = None;
                Err(ClientError::Timeout {
                    method,
                    path: path.to_owned(),
                    timeout,
                })
            }
        }
    }

    /// One request and its response, on the open stream or a new one.
    async fn exchange(
        &mut self,
        req: Req<'_>,
        content_type: Option<&str>,
        body: Bytes,
    ) -> Result<Response, Failure> {
        let (mut sender, served) = match self.open.take() {
            Some((sender, served)) if !sender.is_closed() => (sender, served),
            _ => (self.dial_within(req).await.map_err(Failure::Other)?, 0),
        };
        if let Err(e) = sender.ready().await {
            return Err(Failure::Closed(req.failed(&e)));
        }
        let mut headers = self.headers.clone();
        if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
            headers.insert(0, ("Host".to_owned(), self.addr.to_string()));
        }
        let request = transport::build(
            req,
            req.target,
            &headers,
            content_type,
            body,
            !self.keep_alive,
        )
        .map_err(Failure::Other)?;
        let response = match sender.send_request(request).await {
            Ok(response) => response,
            Err(e) if e.is_canceled() || e.is_incomplete_message() => {
                return Err(Failure::Closed(req.failed(&e)));
            }
            Err(e) => return Err(Failure::Other(req.failed(&e))),
        };
        let response = transport::read(req, response, self.max_body)
            .await
            .map_err(Failure::Other)?;
        if self.keep_alive {
            self.open = Some((sender, served + 1));
        }
        Ok(response)
    }

    /// Opens a stream within the connect timeout.
    async fn dial_within(&self, req: Req<'_>) -> Result<SendRequest<Body>, ClientError> {
        tokio::time::timeout(self.connect_timeout, self.dial(req))
            .await
            .map_err(|_| ClientError::Timeout {
                method: req.method,
                path: req.target.to_owned(),
                timeout: self.connect_timeout,
            })?
    }

    async fn dial(&self, req: Req<'_>) -> Result<SendRequest<Body>, ClientError> {
        let stream = TcpStream::connect(self.addr).await.map_err(|e| req.io(e))?;
        stream.set_nodelay(true).map_err(|e| req.io(e))?;
        let (sender, connection) = hyper::client::conn::http1::Builder::new()
            .max_buf_size(MAX_BUF)
            .max_headers(MAX_HEADERS)
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|e| req.failed(&e))?;
        // Drives the stream; ends when the sender is dropped or the server
        // closes it.
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(sender)
    }
}
