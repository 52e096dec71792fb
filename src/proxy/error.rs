//! The proxy's error type and the one place that turns an error into bytes for the client.

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
            ProxyError::ClientHeaderTimeout => {
                Respond(canned!("408 Request Timeout", "16", "request timeout\n"))
            }
            ProxyError::Client(_) => Close,
            ProxyError::NoBackend => {
                Respond(canned!("503 Service Unavailable", "21", "no backend available\n"))
            }
            ProxyError::UpstreamTimeout | ProxyError::Upstream(BodyError::ReadTimeout) => {
                Respond(canned!("504 Gateway Timeout", "19", "upstream timed out\n"))
            }
            ProxyError::BadGateway(_) | ProxyError::Upstream(_) => {
                Respond(canned!("502 Bad Gateway", "12", "bad gateway\n"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canned_responses_are_well_formed() {
        let errors = [
            ProxyError::NoBackend,
            ProxyError::UpstreamTimeout,
            ProxyError::BadGateway("x"),
            ProxyError::HeadTooLarge,
            ProxyError::BadRequest(HeadError::Malformed("x")),
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
}
