//! Fulcrum's own answers: one typed value (status, gRPC status, message, whether the
//! connection closes) rendered for an HTTP/1.1 client, an HTTP/2 client, or a gRPC call. No
//! response bytes are counted by hand and no status is parsed back out of bytes.

use crate::grpc::{GRPC_MESSAGE, GRPC_STATUS, GrpcCode};
use crate::h1::head::{Framing, push_framing, push_status_line};

/// An answer Fulcrum makes itself when it cannot forward a request (or a backend failed it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Synthetic {
    /// HTTP status for plain HTTP clients.
    pub status: u16,
    /// The `grpc-status` a gRPC call gets instead (with HTTP 200, trailers only).
    pub grpc_status: GrpcCode,
    /// The plain-text body for HTTP clients, one line ending in `\n`.
    pub body: &'static str,
    /// The `grpc-message` for gRPC calls (plain ASCII, needs no percent-encoding).
    pub grpc_message: &'static str,
    /// Whether the client connection closes after it (HTTP/1.1 `connection: close`).
    pub close: bool,
}

/// The reason phrase Fulcrum writes for the statuses it answers with (RFC 9110 names).
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        408 => "Request Timeout",
        413 => "Content Too Large",
        414 => "URI Too Long",
        417 => "Expectation Failed",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "",
    }
}

impl Synthetic {
    /// Appends the whole HTTP/1.1 response (head and body) to `out`.
    pub fn write_h1(&self, out: &mut Vec<u8>) {
        push_status_line(out, self.status, reason_phrase(self.status));
        out.extend_from_slice(b"content-type: text/plain\r\n");
        if self.close {
            out.extend_from_slice(b"connection: close\r\n");
        }
        push_framing(out, Framing::Length(self.body.len() as u64));
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(self.body.as_bytes());
    }

    /// The HTTP/1.1 response as bytes.
    pub fn to_h1(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(128);
        self.write_h1(&mut out);
        out
    }

    /// The HTTP/2 response head; its body is [`body`](Self::body).
    pub fn to_h2(&self) -> http::Response<()> {
        let mut res = http::Response::new(());
        *res.status_mut() = http::StatusCode::from_u16(self.status)
            .unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
        let h = res.headers_mut();
        h.insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("text/plain"));
        h.insert(http::header::CONTENT_LENGTH, http::HeaderValue::from(self.body.len()));
        res
    }

    /// A gRPC trailers-only response: HTTP 200 whose only header block carries the status.
    pub fn to_grpc(&self) -> http::Response<()> {
        let mut res = http::Response::new(());
        let h = res.headers_mut();
        h.insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/grpc"));
        self.fill_grpc_status(h);
        res
    }

    /// Trailers that end a gRPC call whose response head already went out.
    pub fn grpc_trailers(&self) -> http::HeaderMap {
        let mut t = http::HeaderMap::new();
        self.fill_grpc_status(&mut t);
        t
    }

    fn fill_grpc_status(&self, h: &mut http::HeaderMap) {
        h.insert(GRPC_STATUS, http::HeaderValue::from(self.grpc_status.as_u16()));
        h.insert(GRPC_MESSAGE, http::HeaderValue::from_static(self.grpc_message));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BAD_GATEWAY: Synthetic = Synthetic {
        status: 502,
        grpc_status: GrpcCode::Unavailable,
        body: "bad gateway\n",
        grpc_message: "upstream closed before the response",
        close: true,
    };

    #[test]
    fn one_value_three_renderings() {
        let bytes = BAD_GATEWAY.to_h1();
        let mut headers = [httparse::EMPTY_HEADER; 8];
        let mut res = httparse::Response::new(&mut headers);
        let httparse::Status::Complete(n) = res.parse(&bytes).unwrap() else { panic!() };
        assert_eq!((res.code, res.reason), (Some(502), Some("Bad Gateway")));
        let field = |name: &str| res.headers.iter().find(|h| h.name == name).map(|h| h.value);
        assert_eq!(field("content-length"), Some(&b"12"[..]));
        assert_eq!(field("connection"), Some(&b"close"[..]));
        assert_eq!(&bytes[n..], b"bad gateway\n");

        let h2 = BAD_GATEWAY.to_h2();
        assert_eq!(h2.status(), 502);
        assert_eq!(h2.headers()["content-length"], "12");

        let grpc = BAD_GATEWAY.to_grpc();
        assert_eq!(grpc.status(), 200);
        assert_eq!(grpc.headers()["grpc-status"], "14");
        assert_eq!(grpc.headers()["grpc-message"], "upstream closed before the response");
        assert_eq!(BAD_GATEWAY.grpc_trailers()["grpc-status"], "14");

        let open = Synthetic { close: false, ..BAD_GATEWAY };
        assert!(!String::from_utf8(open.to_h1()).unwrap().contains("connection"));
    }
}
