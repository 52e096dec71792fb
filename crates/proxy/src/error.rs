//! The data path's error type, and the one place that turns an error into an answer: every
//! [`ProxyError`] knows which side failed ([`Side`]) and maps to one [`Synthetic`] response (or to
//! a quiet close), which each client protocol renders its own way.

use fulcrum_http::Synthetic;
use fulcrum_http::grpc::GrpcCode;
use fulcrum_http::h1::{BodyError, HeadError};

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
    /// The backend sent something that is not a valid response, or closed or reset early.
    #[error("bad upstream response: {0}")]
    BadGateway(&'static str),
    /// The upstream side failed while the request body was being sent or the response body
    /// was being relayed.
    #[error("upstream side: {0}")]
    Upstream(BodyError),
    /// Backends at `pool.max_connections_per_backend`: every candidate's wait queue was full, or
    /// no connection came free within `pool.queue_timeout_ms`.
    #[error("backend at its connection limit: {0}")]
    BackendBusy(#[from] QueueError),
    /// The call's own deadline (gRPC `grpc-timeout`) passed.
    #[error("deadline exceeded")]
    DeadlineExceeded,
    /// The client asked for something Fulcrum does not do (an extended CONNECT protocol other
    /// than WebSocket).
    #[error("not supported: {0}")]
    Unsupported(&'static str),
}

/// Why a request queued for a connection was turned away (answered 503).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum QueueError {
    /// `pool.queue_size` requests were already waiting.
    #[error("connection queue full")]
    Full,
    /// No connection came free within `pool.queue_timeout_ms`.
    #[error("timed out waiting for a connection")]
    Timeout,
}

/// Which side of the proxy an error comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The client: a bad or slow request, or it went away.
    Client,
    /// The backend: a failed connection, a bad or late response.
    Backend,
    /// Fulcrum itself: no backend to send to, a limit of its own, the call's deadline.
    Fulcrum,
}

const fn answer(
    status: u16,
    grpc_status: GrpcCode,
    body: &'static str,
    grpc_message: &'static str,
) -> Synthetic {
    Synthetic { status, grpc_status, body, grpc_message, close: true }
}

impl ProxyError {
    /// Which side failed.
    pub fn side(&self) -> Side {
        match self {
            ProxyError::BadRequest(_)
            | ProxyError::HeadTooLarge
            | ProxyError::UriTooLong
            | ProxyError::BodyTooLarge
            | ProxyError::ClientHeaderTimeout
            | ProxyError::Unsupported(_)
            | ProxyError::Client(_) => Side::Client,
            ProxyError::UpstreamTimeout | ProxyError::BadGateway(_) | ProxyError::Upstream(_) => {
                Side::Backend
            }
            ProxyError::NoBackend | ProxyError::BackendBusy(_) | ProxyError::DeadlineExceeded => {
                Side::Fulcrum
            }
        }
    }

    /// The answer for this error while nothing has been sent to the client yet, or `None` when
    /// the connection (or stream) just closes: the client is gone or cannot be told.
    pub fn synthetic(&self) -> Option<Synthetic> {
        use GrpcCode::{DeadlineExceeded, Internal, ResourceExhausted, Unavailable};
        Some(match self {
            ProxyError::BadRequest(HeadError::Expectation) => {
                answer(417, Internal, "unsupported expectation\n", "bad request")
            }
            ProxyError::BadRequest(HeadError::TooManyHeaders) => {
                answer(431, Internal, "too many header fields\n", "bad request")
            }
            ProxyError::BadRequest(_) => answer(400, Internal, "bad request\n", "bad request"),
            ProxyError::HeadTooLarge => {
                answer(431, Internal, "request header fields too large\n", "bad request")
            }
            ProxyError::UriTooLong => {
                answer(414, Internal, "request line too long\n", "bad request")
            }
            ProxyError::BodyTooLarge | ProxyError::Client(BodyError::TooLarge) => {
                answer(413, ResourceExhausted, "request body too large\n", "request too large")
            }
            ProxyError::Client(BodyError::Chunked(_)) => {
                answer(400, Internal, "invalid chunked body\n", "bad request")
            }
            ProxyError::ClientHeaderTimeout | ProxyError::Client(BodyError::ReadTimeout) => {
                answer(408, DeadlineExceeded, "request timeout\n", "request timeout")
            }
            ProxyError::Client(BodyError::TooSlow) => {
                answer(408, DeadlineExceeded, "request body too slow\n", "request timeout")
            }
            ProxyError::Client(_) => return None,
            ProxyError::Unsupported(_) => {
                answer(501, Internal, "not implemented\n", "not implemented")
            }
            ProxyError::NoBackend => {
                answer(503, Unavailable, "no backend available\n", "no backend available")
            }
            ProxyError::BackendBusy(_) => answer(
                503,
                Unavailable,
                "backend at its connection limit\n",
                "backend at its connection limit",
            ),
            ProxyError::UpstreamTimeout | ProxyError::Upstream(BodyError::ReadTimeout) => {
                answer(504, DeadlineExceeded, "upstream timed out\n", "upstream timed out")
            }
            ProxyError::DeadlineExceeded => {
                answer(504, DeadlineExceeded, "deadline exceeded\n", "deadline exceeded")
            }
            ProxyError::BadGateway(detail) => answer(502, Unavailable, "bad gateway\n", detail),
            ProxyError::Upstream(_) => {
                answer(502, Unavailable, "bad gateway\n", "upstream connection failed")
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_has_one_answer_for_every_protocol() {
        let errors = [
            ProxyError::NoBackend,
            ProxyError::BackendBusy(QueueError::Full),
            ProxyError::UpstreamTimeout,
            ProxyError::BadGateway("x"),
            ProxyError::HeadTooLarge,
            ProxyError::BadRequest(HeadError::Malformed("x")),
            ProxyError::BadRequest(HeadError::TooManyHeaders),
            ProxyError::ClientHeaderTimeout,
            ProxyError::Client(BodyError::ReadTimeout),
            ProxyError::Client(BodyError::TooSlow),
            ProxyError::DeadlineExceeded,
            ProxyError::Unsupported("x"),
        ];
        for e in errors {
            let s = e.synthetic().unwrap();
            let bytes = s.to_h1();
            let mut headers = [httparse::EMPTY_HEADER; 8];
            let mut res = httparse::Response::new(&mut headers);
            let httparse::Status::Complete(n) = res.parse(&bytes).unwrap() else { panic!("{e}") };
            assert_eq!(res.code, Some(s.status), "{e}");
            assert_eq!(&bytes[n..], s.body.as_bytes(), "{e}");
            assert_eq!(s.to_h2().status().as_u16(), s.status, "{e}");
            assert!(s.body.ends_with('\n'));
        }
        let s = ProxyError::BadGateway("upstream refused the stream").synthetic().unwrap();
        assert_eq!((s.status, s.grpc_status), (502, GrpcCode::Unavailable));
        assert_eq!(s.grpc_message, "upstream refused the stream");
        let s = ProxyError::BadRequest(HeadError::TooManyHeaders).synthetic().unwrap();
        assert_eq!(s.status, 431);
        assert_eq!(ProxyError::Client(BodyError::Truncated).synthetic(), None);
        assert_eq!(ProxyError::DeadlineExceeded.synthetic().unwrap().grpc_status.as_u16(), 4);
        assert_eq!(ProxyError::NoBackend.side(), Side::Fulcrum);
        assert_eq!(ProxyError::UpstreamTimeout.side(), Side::Backend);
        assert_eq!(ProxyError::ClientHeaderTimeout.side(), Side::Client);
    }
}
