//! gRPC over HTTP/2 as the proxy sees it: recognising a call, its deadline (`grpc-timeout`), its
//! status (`grpc-status`), and the status codes Fulcrum answers with when it fails a call itself.

use std::time::Duration;

/// The `grpc-timeout` request header.
pub const GRPC_TIMEOUT: http::HeaderName = http::HeaderName::from_static("grpc-timeout");
/// The `grpc-status` trailer (or header of a trailers-only response).
pub const GRPC_STATUS: http::HeaderName = http::HeaderName::from_static("grpc-status");
/// The `grpc-message` trailer.
pub const GRPC_MESSAGE: http::HeaderName = http::HeaderName::from_static("grpc-message");

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

impl GrpcCode {
    /// The numeric code, as sent in `grpc-status`.
    pub fn as_u16(self) -> u16 {
        self as u16
    }
}

/// Parses a `grpc-timeout` value (`1*8DIGIT unit`, unit one of H M S m u n).
pub fn parse_grpc_timeout(value: &[u8]) -> Option<Duration> {
    let (&unit, digits) = value.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n = digits.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
    Some(match unit {
        b'H' => Duration::from_secs(n * 3600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

/// Whether a `content-type` value names gRPC (`application/grpc` or `application/grpc+…`).
pub fn is_grpc_content_type(value: &[u8]) -> bool {
    value.len() >= 16
        && value[..16].eq_ignore_ascii_case(b"application/grpc")
        && matches!(value.get(16), None | Some(b'+' | b';'))
}

/// Whether a request is a gRPC call (its `content-type` names gRPC).
pub fn is_grpc(headers: &http::HeaderMap) -> bool {
    headers.get(http::header::CONTENT_TYPE).is_some_and(|v| is_grpc_content_type(v.as_bytes()))
}

/// The numeric value of a `grpc-status` field (1 to 5 digits).
pub fn parse_grpc_status(value: &[u8]) -> Option<u32> {
    if value.is_empty() || value.len() > 5 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(value.iter().fold(0u32, |n, d| n * 10 + u32::from(d - b'0')))
}

/// The `grpc-status` of a trailer block (or of trailers-only response headers).
pub fn grpc_status(headers: &http::HeaderMap) -> Option<u32> {
    parse_grpc_status(headers.get(GRPC_STATUS)?.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeout_units() {
        assert_eq!(parse_grpc_timeout(b"100m"), Some(Duration::from_millis(100)));
        assert_eq!(parse_grpc_timeout(b"2S"), Some(Duration::from_secs(2)));
        assert_eq!(parse_grpc_timeout(b"1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_grpc_timeout(b"5n"), Some(Duration::from_nanos(5)));
        for bad in [&b""[..], b"m", b"123456789m", b"10x", b"-1S", b"1 S"] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn grpc_content_types() {
        let mut h = http::HeaderMap::new();
        for (v, want) in [
            ("application/grpc", true),
            ("application/grpc+proto", true),
            ("Application/GRPC+json", true),
            ("application/grpc-web", false),
            ("application/json", false),
        ] {
            h.insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static(v));
            assert_eq!(is_grpc(&h), want, "{v}");
        }
        assert!(!is_grpc(&http::HeaderMap::new()));
    }

    #[test]
    fn grpc_status_values() {
        assert_eq!(parse_grpc_status(b"0"), Some(0));
        assert_eq!(parse_grpc_status(b"14"), Some(14));
        for bad in [&b""[..], b"x", b"123456", b"-1"] {
            assert_eq!(parse_grpc_status(bad), None, "{bad:?}");
        }
    }
}
