//! The proxy's error type and the one place that turns an error into an answer for the client:
//! an HTTP status page ([`ProxyError::action`]) or, for a gRPC call, a trailers-only answer with
//! a `grpc-status` ([`ProxyError::reply`], which derives both from the same mapping).

use super::body::BodyError;
use super::h1::HeadError;

/// Everything that can end a proxied exchange early.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The client sent a malformed request head.
    #[error("bad request: {0}")]
    BadRequest(#[from] HeadError),
    /// The request head did not fit in the buffer.
    #[error("request head too large")]
    HeadTooLarge,
    /// The request line alone did not fit in the buffer.
    #[error("request line too long")]
    UriTooLong,
    /// The request body is larger than `limits.max_body_bytes`.
    #[error("request body too large")]
    BodyTooLarge,
    /// The client did not send a complete head in time.
    #[error("client header timeout")]
    ClientHeaderTimeout,
    /// Reading the request body or writing the response failed on the client side.
    #[error("client side: {0}")]
    Client(BodyError),
    /// No backend is available (none configured, all ejected, all failed to connect).
    #[error("no backend available")]
    NoBackend,
    /// The backend did not answer in time.
    #[error("upstream timed out")]
    UpstreamTimeout,
    /// The backend sent something that is not a valid HTTP/1.1 response, or closed early.
    #[error("bad upstream response: {0}")]
    BadGateway(&'static str),
    /// The upstream side failed while the request body was being sent or the response body
    /// was being relayed.
    #[error("upstream side: {0}")]
    Upstream(BodyError),
    /// Backends at `pool.max_connections_per_backend`: every candidate's wait queue was full, or
    /// no connection came free within `pool.queue_timeout_ms`.
    #[error("backend at its connection limit: {0}")]
    BackendBusy(#[from] super::pool::QueueError),
    /// The call's own deadline (gRPC `grpc-timeout`) passed.
    #[error("deadline exceeded")]
    DeadlineExceeded,
}

/// The gRPC status codes Fulcrum answers with when it fails a call itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum GrpcCode {
    /// The call was cancelled.
    Cancelled = 1,
    /// The deadline passed, or the backend did not answer in time.
    DeadlineExceeded = 4,
    /// A size limit was exceeded.
    ResourceExhausted = 8,
    /// The request could not be forwarded as sent.
    Internal = 13,
    /// No backend could take the call, or the backend connection failed.
    Unavailable = 14,
}

/// The answer to a failed exchange in the client's protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorReply {
    /// Plain HTTP: the canned response (HTTP/1.1 bytes; HTTP/2 uses its status and body).
    Http(ErrorAction),
    /// gRPC: HTTP 200 with only headers, `grpc-status: code` and `grpc-message: message`.
    Grpc {
        /// The `grpc-status` value.
        code: GrpcCode,
        /// The `grpc-message` value (plain ASCII, needs no percent-encoding).
        message: &'static str,
    },
}

impl ErrorAction {
    /// The status code and body of a canned response (for HTTP/2, which sends them as frames).
    pub fn status_and_body(&self) -> Option<(u16, &'static [u8])> {
        let ErrorAction::Respond(bytes) = *self else { return None };
        let status = std::str::from_utf8(bytes.get(9..12)?).ok()?.parse().ok()?;
        let body_at = bytes.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
        Some((status, &bytes[body_at..]))
    }
}

/// What to do with the client connection after an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorAction {
    /// Send this complete response, then close.
    Respond(&'static [u8]),
    /// Close without a word (the client is gone, or a response already started).
    Close,
}

macro_rules! canned {
    ($status:literal, $len:literal, $body:literal) => {
        concat!(
            "HTTP/1.1 ",
            $status,
            "\r\ncontent-type: text/plain\r\nconnection: close\r\ncontent-length: ",
            $len,
            "\r\n\r\n",
            $body
        )
        .as_bytes()
    };
}

impl ProxyError {
    /// The response for this error when nothing has been sent to the client yet.
    pub fn action(&self) -> ErrorAction {
        use ErrorAction::{Close, Respond};
        match self {
            ProxyError::BadRequest(HeadError::Expectation) => {
                Respond(canned!("417 Expectation Failed", "24", "unsupported expectation\n"))
            }
            ProxyError::BadRequest(HeadError::TooManyHeaders) => Respond(canned!(
                "431 Request Header Fields Too Large",
                "23",
                "too many header fields\n"
            )),
            ProxyError::BadRequest(_) => Respond(canned!("400 Bad Request", "12", "bad request\n")),
            ProxyError::HeadTooLarge => Respond(canned!(
                "431 Request Header Fields Too Large",
                "32",
                "request header fields too large\n"
            )),
            ProxyError::UriTooLong => {
                Respond(canned!("414 URI Too Long", "22", "request line too long\n"))
            }
            ProxyError::BodyTooLarge | ProxyError::Client(BodyError::TooLarge) => {
                Respond(canned!("413 Content Too Large", "23", "request body too large\n"))
            }
            ProxyError::Client(BodyError::Chunked(_)) => {
                Respond(canned!("400 Bad Request", "21", "invalid chunked body\n"))
            }
            ProxyError::ClientHeaderTimeout | ProxyError::Client(BodyError::ReadTimeout) => {
                Respond(canned!("408 Request Timeout", "16", "request timeout\n"))
            }
            ProxyError::Client(BodyError::TooSlow) => {
                Respond(canned!("408 Request Timeout", "22", "request body too slow\n"))
            }
            ProxyError::Client(_) => Close,
            ProxyError::NoBackend => {
                Respond(canned!("503 Service Unavailable", "21", "no backend available\n"))
            }
            ProxyError::BackendBusy(_) => Respond(canned!(
                "503 Service Unavailable",
                "32",
                "backend at its connection limit\n"
            )),
            ProxyError::UpstreamTimeout | ProxyError::Upstream(BodyError::ReadTimeout) => {
                Respond(canned!("504 Gateway Timeout", "19", "upstream timed out\n"))
            }
            ProxyError::DeadlineExceeded => {
                Respond(canned!("504 Gateway Timeout", "18", "deadline exceeded\n"))
            }
            ProxyError::BadGateway(_) | ProxyError::Upstream(_) => {
                Respond(canned!("502 Bad Gateway", "12", "bad gateway\n"))
            }
        }
    }

    /// The answer for this error when nothing has been sent to the client yet: [`action`]
    /// for plain HTTP, a trailers-only `grpc-status` answer for a gRPC call (whose client
    /// cannot read an HTTP error page). An error that closes the connection closes (or resets
    /// the stream) for gRPC too.
    ///
    /// [`action`]: Self::action
    pub fn reply(&self, grpc: bool) -> ErrorReply {
        let action = self.action();
        if !grpc || action == ErrorAction::Close {
            return ErrorReply::Http(action);
        }
        let (code, message) = match self {
            ProxyError::NoBackend => (GrpcCode::Unavailable, "no backend available"),
            ProxyError::BackendBusy(_) => {
                (GrpcCode::Unavailable, "backend at its connection limit")
            }
            ProxyError::BadGateway(msg) => (GrpcCode::Unavailable, *msg),
            ProxyError::Upstream(BodyError::ReadTimeout) | ProxyError::UpstreamTimeout => {
                (GrpcCode::DeadlineExceeded, "upstream timed out")
            }
            ProxyError::Upstream(_) => (GrpcCode::Unavailable, "upstream connection failed"),
            ProxyError::DeadlineExceeded => (GrpcCode::DeadlineExceeded, "deadline exceeded"),
            ProxyError::ClientHeaderTimeout
            | ProxyError::Client(BodyError::ReadTimeout | BodyError::TooSlow) => {
                (GrpcCode::DeadlineExceeded, "request timeout")
            }
            ProxyError::BodyTooLarge | ProxyError::Client(BodyError::TooLarge) => {
                (GrpcCode::ResourceExhausted, "request too large")
            }
            ProxyError::Client(_) => (GrpcCode::Cancelled, "client gone"),
            ProxyError::BadRequest(_) | ProxyError::HeadTooLarge | ProxyError::UriTooLong => {
                (GrpcCode::Internal, "bad request")
            }
        };
        ErrorReply::Grpc { code, message }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canned_responses_are_well_formed() {
        let errors = [
            ProxyError::NoBackend,
            ProxyError::BackendBusy(crate::proxy::pool::QueueError::Full),
            ProxyError::UpstreamTimeout,
            ProxyError::BadGateway("x"),
            ProxyError::HeadTooLarge,
            ProxyError::BadRequest(HeadError::Malformed("x")),
            ProxyError::ClientHeaderTimeout,
            ProxyError::Client(BodyError::ReadTimeout),
            ProxyError::Client(BodyError::TooSlow),
        ];
        for e in errors {
            let ErrorAction::Respond(bytes) = e.action() else { panic!("{e}") };
            let mut headers = [httparse::EMPTY_HEADER; 8];
            let mut res = httparse::Response::new(&mut headers);
            let httparse::Status::Complete(n) = res.parse(bytes).unwrap() else { panic!() };
            let len: usize = res
                .headers
                .iter()
                .find(|h| h.name == "content-length")
                .map(|h| std::str::from_utf8(h.value).unwrap().parse().unwrap())
                .unwrap();
            assert_eq!(bytes.len() - n, len, "{e}");
        }
    }

    #[test]
    fn one_mapping_serves_http_and_grpc() {
        let e = ProxyError::NoBackend;
        assert_eq!(e.reply(false), ErrorReply::Http(e.action()));
        assert_eq!(
            e.reply(true),
            ErrorReply::Grpc { code: GrpcCode::Unavailable, message: "no backend available" }
        );
        let ErrorReply::Grpc { code, .. } = ProxyError::DeadlineExceeded.reply(true) else {
            panic!()
        };
        assert_eq!(code as u16, 4);
        let ErrorReply::Grpc { code, .. } = ProxyError::BadGateway("x").reply(true) else {
            panic!()
        };
        assert_eq!(code as u16, 14);
        let closed = ProxyError::Client(BodyError::Truncated);
        assert_eq!(closed.reply(true), ErrorReply::Http(ErrorAction::Close));
        assert_eq!(
            ProxyError::NoBackend.action().status_and_body(),
            Some((503, &b"no backend available\n"[..]))
        );
    }
}
