//! Strict HTTP/1.1 framing (issue 8): byte-exact requests over raw sockets against the real
//! `fulcrum` binary and a real loopback backend. Each ambiguous or over-limit request must be
//! refused with the right status, the connection closed, and nothing forwarded.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use common::*;

/// Starts fulcrum with two workers over `backends`, plus `extra` flags.
fn start(backends: &[&TestBackend], extra: &[&str]) -> Fulcrum {
    let mut args = vec!["--workers".to_owned(), "2".to_owned()];
    args.extend(backend_args(backends));
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    Fulcrum::start(&args)
}

/// What came back on a raw connection: everything read, and whether the peer closed it.
struct Reply {
    bytes: Vec<u8>,
    closed: bool,
}

impl Reply {
    fn status(&self) -> Option<u16> {
        let text = String::from_utf8_lossy(&self.bytes);
        let line = text.lines().next()?;
        let mut parts = line.split(' ');
        parts.next().filter(|v| v.starts_with("HTTP/1."))?;
        parts.next()?.parse().ok()
    }

    fn text(&self) -> String {
        let text = String::from_utf8_lossy(&self.bytes);
        text.chars().take(300).collect()
    }
}

/// Sends `raw` on a fresh connection, then reads until the peer closes (or 5 s pass).
fn exchange(addr: SocketAddr, raw: &[u8]) -> Reply {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    // The server may answer and close before it has read everything: a failed write is fine.
    let _ = s.write_all(raw);
    let mut bytes = Vec::new();
    let mut buf = [0u8; 4096];
    let closed = loop {
        match s.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => bytes.extend_from_slice(&buf[..n]),
            Err(e) => {
                break matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::ConnectionAborted
                );
            }
        }
    };
    Reply { bytes, closed }
}

/// Asserts that `raw` gets `want`, a closed connection, and (if `untouched`) no backend request.
fn assert_refused_with(extra: &[&str], raw: &[u8], want: &[u16], untouched: bool) {
    let backend = TestBackend::named("b");
    let f = start(&[&backend], extra);
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
    assert_refused_with(&[], raw, &[400], true);
}

/// For chunked bodies the head may have been forwarded before the body error shows.
fn assert_400_body(raw: &[u8]) {
    assert_refused_with(&[], raw, &[400], false);
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
        &[],
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
    assert_refused_with(&[], &raw, &[414], true);
}

#[test]
fn header_section_over_the_buffer_gives_431() {
    let mut raw = b"GET / HTTP/1.1\r\nHost: t\r\n".to_vec();
    let value = "v".repeat(1000);
    for i in 0..50 {
        raw.extend_from_slice(format!("X-H{i}: {value}\r\n").as_bytes());
    }
    raw.extend_from_slice(b"\r\n");
    assert_refused_with(&[], &raw, &[431], true);
}

#[test]
fn body_over_max_body_bytes_gives_413() {
    let cfg = TempFile::with_contents("strict-limits", "[limits]\nmax_body_bytes = 16\n");
    let path = cfg.path_str();
    let mut raw = b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n".to_vec();
    raw.extend(std::iter::repeat_n(b'x', 100));
    assert_refused_with(&["--config", &path], &raw, &[413], true);
}

#[test]
fn unsupported_expect_gives_417() {
    assert_refused_with(
        &[],
        b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: something-else\r\n\r\nhello",
        &[417],
        true,
    );
}

// ---- strict response parsing -----------------------------------------------------------------

/// A backend that reads one request head per connection and answers with `response`, then closes.
fn fixed_backend(response: &'static [u8]) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { return };
            std::thread::spawn(move || {
                let mut r = BufReader::new(conn.try_clone().unwrap());
                let mut line = String::new();
                while matches!(r.read_line(&mut line), Ok(n) if n > 0) {
                    if line == "\r\n" {
                        break;
                    }
                    line.clear();
                }
                let mut w = conn;
                let _ = w.write_all(response);
                let _ = w.shutdown(std::net::Shutdown::Both);
            });
        }
    });
    addr
}

fn assert_502_from(response: &'static [u8]) {
    let addr = fixed_backend(response);
    let url = format!("http://{addr}");
    let f = Fulcrum::start(&["--workers", "1", "--backend", &url]);
    let r = exchange(f.addr(), b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    assert_eq!(r.status(), Some(502), "{:?}", r.text());
}

#[test]
fn response_with_content_length_and_transfer_encoding_gives_502() {
    assert_502_from(
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    );
}

#[test]
fn response_with_an_invalid_status_line_gives_502() {
    assert_502_from(b"HTTP/1.1 2OO OK\r\nContent-Length: 0\r\n\r\n");
}

#[test]
fn response_that_is_not_http_gives_502() {
    let backend = TestBackend::named("bad");
    let f = start(&[&backend], &[]);
    let r = exchange(f.addr(), b"GET /malformed HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    assert_eq!(r.status(), Some(502), "{:?}", r.text());
}

// ---- controls: the same harness sees well-formed traffic go through ------------------------

#[test]
fn control_a_well_formed_request_reaches_the_backend() {
    let backend = TestBackend::named("b");
    let f = start(&[&backend], &[]);
    let r = exchange(
        f.addr(),
        b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
          5;ext=1\r\nhello\r\n0\r\n\r\n",
    );
    assert_eq!(r.status(), Some(200), "{:?}", r.text());
    assert!(r.closed);
    assert_eq!(backend.requests(), 1);
}

#[test]
fn control_a_well_formed_response_is_relayed() {
    let addr = fixed_backend(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
    let url = format!("http://{addr}");
    let f = Fulcrum::start(&["--workers", "1", "--backend", &url]);
    let r = exchange(f.addr(), b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    assert_eq!(r.status(), Some(200), "{:?}", r.text());
}
