//! Error responses in the shape of Go's net/http/pprof: `text/plain`, the
//! message and a newline, `X-Go-Pprof: 1` (which tells `go tool pprof` the
//! body is a message from the server) and `X-Content-Type-Options: nosniff`.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// An HTTP error answered the way Go's pprof handlers answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoError {
    /// Status code.
    pub status: StatusCode,
    /// Message, without the trailing newline.
    pub message: String,
}

impl GoError {
    /// 400 with `message`.
    pub fn bad_request(message: impl Into<String>) -> GoError {
        GoError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }

    /// 404 with `message`.
    pub fn not_found(message: impl Into<String>) -> GoError {
        GoError {
            status: StatusCode::NOT_FOUND,
            message: message.into(),
        }
    }

    /// 500 with `message`.
    pub fn internal(message: impl Into<String>) -> GoError {
        GoError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: message.into(),
        }
    }
}

impl From<crate::Error> for GoError {
    fn from(e: crate::Error) -> GoError {
        GoError::internal(e.to_string())
    }
}

impl IntoResponse for GoError {
    fn into_response(self) -> Response {
        let mut res = (self.status, format!("{}\n", self.message)).into_response();
        let h = res.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        h.insert("x-go-pprof", HeaderValue::from_static("1"));
        h.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        res
    }
}
