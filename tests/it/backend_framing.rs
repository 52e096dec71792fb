//! Backends are held to the same framing rules as clients ("Framing is strict"): every
//! malformed backend response head, and a truncated or malformed body, reaches an HTTP/1.1
//! client and an HTTP/2 client (h2c prior knowledge, for an `http://` backend) with the same
//! outcome. Before the response head: `502`. Once the head is gone: a cut connection (HTTP/1.1)
//! or a reset stream (HTTP/2). Never a cleanly ended response, and never invalid HTTP/2.
//!
//! Each case is a module with one test per client protocol; the backend answers every request
//! with the case's bytes and closes the connection.

use std::time::Duration;

use crate::harness::h2frames::End;
use crate::harness::*;

/// Where a response breaks the rules, which decides what a client may see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    /// The head: nothing of it may reach the client, only Fulcrum's `502`.
    Head,
    /// The body: the head may be gone, then the response is cut.
    Body,
}

/// What an HTTP/1.1 client must see: `502`; for a bad body, perhaps a head whose body never
/// completes (the connection is cut).
fn assert_http1_refused(response: &[u8], part: Part) {
    let backend = RawBackend::fixed(response);
    let f = Fulcrum::builder().workers(1).backend(&backend).start();
    let mut c = Client::connect(f.addr());
    c.set_read_timeout(Duration::from_secs(10));
    c.send("GET", "/", &[("Connection", "close")], b"").unwrap();
    let head = c.read_head().expect("a response head");
    assert_eq!(backend.requests(), 1);
    assert!(!head.is_interim(), "interim head relayed: {head:?}");
    if head.status() == 502 {
        let body = c.read_body(&head, |_| Ok(()));
        assert!(body.is_ok(), "Fulcrum's own 502 was cut: {head:?}");
        return;
    }
    assert_eq!(part, Part::Body, "the bad head was relayed: {head:?}");
    let body = c.read_body(&head, |_| Ok(()));
    assert!(body.is_err(), "a {} response ended cleanly: {head:?}", head.status());
}

/// What an HTTP/2 client must see, in valid HTTP/2: `502`; for a bad body, perhaps a reset
/// stream instead (after the head, or with it, when the reset overtook it in h2's queue).
fn assert_http2_refused(response: &[u8], part: Part) {
    let backend = RawBackend::fixed(response);
    let f = Fulcrum::builder().workers(1).backend(&backend).start();
    let r = H2Conn::get_once(f.addr(), "/");
    assert_eq!(backend.requests(), 1);
    let violations = r.violations();
    assert!(violations.is_empty(), "invalid HTTP/2: {violations:?} in {r:?}");
    assert!(r.interim().is_empty(), "interim head relayed: {r:?}");
    match (r.status(), &r.end, part) {
        (Some(502), End::Stream, _) => {}
        (_, End::Reset(_), Part::Body) => {}
        _ => panic!("not a 502 (nor, for a bad body, a reset stream): {r:?}"),
    }
}

/// One module per malformed response: `to_an_http1_client` and `to_an_http2_client`, the
/// latter with its own attributes (an `#[ignore]` where the HTTP/2 path is known wrong).
macro_rules! malformed_response {
    ($(#[doc = $doc:literal])* $part:ident $name:ident = $bytes:expr; $(http2: #[$attr:meta])?) => {
        $(#[doc = $doc])*
        mod $name {
            use super::Part::$part;

            #[test]
            fn to_an_http1_client() {
                super::assert_http1_refused(&$bytes, $part);
            }

            #[test]
            $(#[$attr])?
            fn to_an_http2_client() {
                super::assert_http2_refused(&$bytes, $part);
            }
        }
    };
}

/// A response head of `fields` header fields.
fn with_fields(fields: usize) -> Vec<u8> {
    let mut r = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n".to_vec();
    for i in 1..fields {
        r.extend_from_slice(format!("x-h{i}: v\r\n").as_bytes());
    }
    r.extend_from_slice(b"\r\nok");
    r
}

/// A response head larger than `limits.buffer_bytes` (32 KiB).
fn oversized_head() -> Vec<u8> {
    let mut r = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nx-big: ".to_vec();
    r.extend(std::iter::repeat_n(b'a', 40 * 1024));
    r.extend_from_slice(b"\r\n\r\nok");
    r
}

// ---- the head ----------------------------------------------------------------------------------

malformed_response! {
    /// Both `Content-Length` and `Transfer-Encoding`.
    Head content_length_and_transfer_encoding =
        *b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
}

malformed_response! {
    /// Two different `Content-Length` values.
    Head differing_content_lengths =
        *b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!";
}

malformed_response! {
    /// A `Content-Length` that is not a number.
    Head non_numeric_content_length = *b"HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\nhello";
}

malformed_response! {
    /// A `Content-Length` with a sign.
    Head signed_content_length = *b"HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\nhello";
}

malformed_response! {
    /// A transfer coding before `chunked`: Fulcrum applies none.
    Head transfer_encoding_gzip_then_chunked =
        *b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n";
}

malformed_response! {
    /// `chunked` that is not the last coding.
    Head transfer_encoding_chunked_then_gzip =
        *b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n";
}

malformed_response! {
    /// `identity` is not a transfer coding (RFC 9112).
    Head transfer_encoding_identity = *b"HTTP/1.1 200 OK\r\nTransfer-Encoding: identity\r\n\r\nhello";
}

malformed_response! {
    /// A status that is not three digits.
    Head malformed_status_line = *b"HTTP/1.1 2OO OK\r\nContent-Length: 0\r\n\r\n";
}

malformed_response! {
    /// Not HTTP at all.
    Head not_http = *b"this is not http at all\r\n\r\n";
}

malformed_response! {
    /// A folded header line (obs-fold).
    Head folded_header_line = *b"HTTP/1.1 200 OK\r\nX-A: one\r\n two\r\nContent-Length: 2\r\n\r\nok";
}

malformed_response! {
    /// A space inside a header name.
    Head space_in_a_header_name = *b"HTTP/1.1 200 OK\r\nX A: one\r\nContent-Length: 2\r\n\r\nok";
}

malformed_response! {
    /// A head larger than `limits.buffer_bytes`.
    Head head_too_large = super::oversized_head();
}

malformed_response! {
    /// More header fields than `limits.max_headers` (100).
    Head too_many_header_fields = super::with_fields(150);
}

// ---- the body ----------------------------------------------------------------------------------

malformed_response! {
    /// Fewer body bytes than `Content-Length`, then the close.
    Body body_shorter_than_content_length = *b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello";
}

malformed_response! {
    /// A chunked body cut inside a chunk.
    Body chunked_body_cut_mid_chunk = *b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel";
}

malformed_response! {
    /// A chunked body whose last chunk never comes.
    Body chunked_body_without_its_last_chunk =
        *b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n";
}

malformed_response! {
    /// A chunk size line that is not hexadecimal.
    Body malformed_chunk_size =
        *b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n";
}

malformed_response! {
    /// A chunk not followed by CRLF.
    Body chunk_without_its_crlf =
        *b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n";
}

// ---- control: the same harness sees a well-formed response through ---------------------------

#[test]
fn control_a_well_formed_response_reaches_both_clients_intact() {
    let backend = RawBackend::fixed(
        *b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    );
    let f = Fulcrum::builder().workers(1).backend(&backend).start();
    let r = f.get("/");
    assert_eq!((r.status(), r.text().as_str()), (200, "hello"));
    let r = H2Conn::get_once(f.addr(), "/");
    assert_eq!((r.status(), &r.end, r.data.as_slice()), (Some(200), &End::Stream, &b"hello"[..]));
    assert!(r.violations().is_empty(), "{r:?}");
}
