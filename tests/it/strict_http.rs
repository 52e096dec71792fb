//! Strict HTTP/1.1 framing (issue 8): byte-exact requests over raw sockets against the real
//! `fulcrum` binary and a real loopback backend. Each ambiguous or over-limit request must be
//! refused with the right status, the connection closed, and nothing forwarded.

use crate::harness::http1::exchange;
use crate::harness::*;

/// Asserts that `raw` gets `want`, a closed connection, and (if `untouched`) no backend request.
fn assert_refused_with(config: &str, raw: &[u8], want: &[u16], untouched: bool) {
    let backend = TestBackend::named("b");
    let f = Fulcrum::builder().backend(&backend).config(config).start();
    let r = exchange(f.addr(), raw);
    let shown = String::from_utf8_lossy(&raw[..raw.len().min(200)]).into_owned();
    let status = r.status();
    assert!(
        status.is_some_and(|s| want.contains(&s)),
        "{shown:?}: want {want:?}, got {status:?}: {:?}",
        r.text()
    );
    assert!(r.closed, "{shown:?}: connection left open after {status:?}");
    if untouched {
        assert_eq!(backend.requests(), 0, "{shown:?}: reached the backend");
    }
}

fn assert_400(raw: &[u8]) {
    assert_refused_with("", raw, &[400], true);
}

/// For chunked bodies the head may have been forwarded before the body error shows.
fn assert_400_body(raw: &[u8]) {
    assert_refused_with("", raw, &[400], false);
}

// ---- message framing -------------------------------------------------------------------------

#[test]
fn content_length_and_transfer_encoding_together() {
    assert_400(
        b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n\
          0\r\n\r\n",
    );
}

#[test]
fn two_different_content_lengths() {
    assert_400(
        b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
    );
}

#[test]
fn content_length_with_a_plus_sign() {
    assert_400(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: +5\r\n\r\nhello");
}

#[test]
fn content_length_with_inner_space() {
    assert_400(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5 5\r\n\r\nhello");
}

#[test]
fn content_length_in_hex() {
    assert_400(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 0x5\r\n\r\nhello");
}

/// `gzip, chunked` ends in chunked, but Fulcrum does not apply transfer codings; RFC 9112 §6.1
/// allows 501 for an unknown coding, so either refusal is accepted.
#[test]
fn transfer_encoding_gzip_then_chunked() {
    assert_refused_with(
        "",
        b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
        &[400, 501],
        true,
    );
}

#[test]
fn transfer_encoding_chunked_not_last() {
    assert_400(b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n");
}

#[test]
fn transfer_encoding_identity() {
    assert_400(b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: identity\r\n\r\nhello");
}

#[test]
fn http_1_0_with_chunked() {
    assert_400(b"POST / HTTP/1.0\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n");
}

#[test]
fn invalid_chunk_size_line() {
    assert_400_body(b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n");
}

#[test]
fn over_long_chunk_extension() {
    let mut raw = b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5;x=".to_vec();
    raw.extend(std::iter::repeat_n(b'a', 2048));
    raw.extend_from_slice(b"\r\nhello\r\n0\r\n\r\n");
    assert_400_body(&raw);
}

// ---- header syntax ---------------------------------------------------------------------------

#[test]
fn obs_fold() {
    assert_400(b"GET / HTTP/1.1\r\nHost: t\r\nX-A: one\r\n two\r\n\r\n");
}

#[test]
fn bare_cr_in_a_header_value() {
    assert_400(b"GET / HTTP/1.1\r\nHost: t\r\nX-A: one\rtwo\r\n\r\n");
}

#[test]
fn whitespace_before_the_colon() {
    assert_400(b"GET / HTTP/1.1\r\nHost: t\r\nX-A : one\r\n\r\n");
}

#[test]
fn nul_in_a_header_name() {
    assert_400(b"GET / HTTP/1.1\r\nHost: t\r\nX\0A: one\r\n\r\n");
}

#[test]
fn space_in_a_header_name() {
    assert_400(b"GET / HTTP/1.1\r\nHost: t\r\nX A: one\r\n\r\n");
}

// ---- limits ----------------------------------------------------------------------------------

#[test]
fn request_line_over_the_buffer_gives_414() {
    let mut raw = b"GET /".to_vec();
    raw.extend(std::iter::repeat_n(b'a', 40 * 1024));
    raw.extend_from_slice(b" HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_refused_with("", &raw, &[414], true);
}

#[test]
fn header_section_over_the_buffer_gives_431() {
    let mut raw = b"GET / HTTP/1.1\r\nHost: t\r\n".to_vec();
    let value = "v".repeat(1000);
    for i in 0..50 {
        raw.extend_from_slice(format!("X-H{i}: {value}\r\n").as_bytes());
    }
    raw.extend_from_slice(b"\r\n");
    assert_refused_with("", &raw, &[431], true);
}

/// A head of `fields` header fields (`Host` included), each small.
fn head_with_fields(fields: usize) -> Vec<u8> {
    let mut raw = b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n".to_vec();
    for i in 2..fields {
        raw.extend_from_slice(format!("X-H{i}: v\r\n").as_bytes());
    }
    raw.extend_from_slice(b"\r\n");
    raw
}

#[test]
fn more_header_fields_than_max_headers_gives_431() {
    let backend = TestBackend::named("b");
    let f = Fulcrum::builder().backend(&backend).config("[limits]\nmax_headers = 8").start();
    // At the limit: forwarded. The head is tiny, so only the count can refuse the next one.
    let at_limit = exchange(f.addr(), &head_with_fields(8));
    assert_eq!(at_limit.status(), Some(200), "{:?}", at_limit.text());
    let over = exchange(f.addr(), &head_with_fields(9));
    assert_eq!(over.status(), Some(431), "{:?}", over.text());
    assert!(over.closed, "connection left open after 431");
    assert_eq!(backend.requests(), 1, "the head over the limit reached the backend");
}

#[test]
fn body_over_max_body_bytes_gives_413() {
    let mut raw = b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n".to_vec();
    raw.extend(std::iter::repeat_n(b'x', 100));
    assert_refused_with("[limits]\nmax_body_bytes = 16", &raw, &[413], true);
}

#[test]
fn unsupported_expect_gives_417() {
    assert_refused_with(
        "",
        b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: something-else\r\n\r\nhello",
        &[417],
        true,
    );
}

// ---- control: the same harness sees a well-formed request go through ------------------------

#[test]
fn control_a_well_formed_request_reaches_the_backend() {
    let backend = TestBackend::named("b");
    let f = Fulcrum::start([&backend]);
    let r = exchange(
        f.addr(),
        b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
          5;ext=1\r\nhello\r\n0\r\n\r\n",
    );
    assert_eq!(r.status(), Some(200), "{:?}", r.text());
    assert!(r.closed);
    assert_eq!(backend.requests(), 1);
}
