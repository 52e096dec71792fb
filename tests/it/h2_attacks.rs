//! The attacks every HTTP/2 server has met, through the real binary on the native engine:
//! floods of SETTINGS, PING, PRIORITY, WINDOW_UPDATE, empty DATA and CONTINUATION frames,
//! provoked resets (MadeYouReset), window overflow, stream identifier regression, HPACK bombs
//! and malformed requests. Each is answered with a GOAWAY (or a stream reset or 431) with the
//! right code, and the worker goes on serving a new connection. The engine's own tests
//! (crates/h2/src/conn/tests.rs) show each answer comes within a bounded number of frames; here
//! a burst of a few times the limit must end in GOAWAY.
//!
//! A raw frame client ([`H2Conn`]) sends what no well-behaved client would. Waiting is done on
//! events with deadlines; every test is bounded in frames and time.

use std::time::Duration;

use crate::harness::h2frames::{
    CONTINUATION, DATA, END_HEADERS, END_STREAM, ENHANCE_YOUR_CALM, End, HEADERS, PING,
    PROTOCOL_ERROR, SETTINGS, WINDOW_UPDATE, frame, header_block,
};
use crate::harness::*;

const FLOW_CONTROL_ERROR: u32 = 0x3;
const PRIORITY_FRAME: u8 = 0x2;

/// Fulcrum on the native engine (one worker) in front of `backend`, `[http2]` as given.
fn start(backend: &TestBackend, http2: &str) -> Fulcrum {
    Fulcrum::builder()
        .workers(1)
        .backend(backend)
        .h2_engine("native")
        .config(&format!("[http2]\n{http2}"))
        .start()
}

/// Sends `burst` on a fresh connection and returns the GOAWAY code that ended it; then checks
/// the worker serves a new connection.
fn goaway_after(lb: &Fulcrum, burst: &[u8]) -> u32 {
    let mut c = H2Conn::connect(lb.addr());
    // The server may close while the burst is still being written: the write error is moot.
    let _ = c.send_raw(burst);
    let (_, code) = c.goaway(Duration::from_secs(10)).expect("no GOAWAY after the burst");
    assert_eq!(H2Conn::get_once(lb.addr(), "/").status(), Some(200), "the worker was harmed");
    code
}

fn repeat(one: &[u8], n: usize) -> Vec<u8> {
    one.repeat(n)
}

#[test]
fn control_frame_floods_get_goaway_enhance_your_calm() {
    let backend = TestBackend::named("b1");
    let lb = start(&backend, "");
    // The engine allows 5000 SETTINGS, PING and unknown frames a second.
    let ping = frame(PING, 0, 0, &[0; 8]);
    assert_eq!(goaway_after(&lb, &repeat(&ping, 12_000)), ENHANCE_YOUR_CALM);
    let settings = frame(SETTINGS, 0, 0, &[]);
    assert_eq!(goaway_after(&lb, &repeat(&settings, 12_000)), ENHANCE_YOUR_CALM);
    let unknown = frame(0xee, 0, 0, &[1, 2, 3]);
    assert_eq!(goaway_after(&lb, &repeat(&unknown, 12_000)), ENHANCE_YOUR_CALM);
    // 100 PRIORITY frames per stream opened; 10 WINDOW_UPDATE frames per DATA frame sent.
    let priority = frame(PRIORITY_FRAME, 0, 3, &[0, 0, 0, 1, 16]);
    assert_eq!(goaway_after(&lb, &repeat(&priority, 1000)), ENHANCE_YOUR_CALM);
    let update = frame(WINDOW_UPDATE, 0, 0, &1u32.to_be_bytes());
    assert_eq!(goaway_after(&lb, &repeat(&update, 1000)), ENHANCE_YOUR_CALM);
}

#[test]
fn empty_data_and_continuation_floods_get_goaway() {
    let backend = TestBackend::named("b1");
    let lb = start(&backend, "");
    // Empty DATA frames without END_STREAM on an open stream: 100 a second allowed.
    let mut burst = frame(HEADERS, END_HEADERS, 1, &header_block(&post_fields()));
    burst.extend(repeat(&frame(DATA, 0, 1, &[]), 2000));
    assert_eq!(goaway_after(&lb, &burst), ENHANCE_YOUR_CALM);
    // CONTINUATION frames without end (CVE-2024-27316): at most 32 per block.
    let mut burst = frame(HEADERS, 0, 1, &header_block(&post_fields()));
    burst.extend(repeat(&frame(CONTINUATION, 0, 1, &header_block(&[("x-a", "b")])), 1000));
    assert_eq!(goaway_after(&lb, &burst), ENHANCE_YOUR_CALM);
    // Big fragments: the joined block is capped at twice the header list limit.
    let big = header_block(&[("x-big", &"a".repeat(16_000))]);
    let mut burst = frame(HEADERS, 0, 1, &header_block(&post_fields()));
    burst.extend(repeat(&frame(CONTINUATION, 0, 1, &big), 20));
    assert_eq!(goaway_after(&lb, &burst), ENHANCE_YOUR_CALM);
}

#[test]
fn provoked_resets_get_goaway() {
    let backend = TestBackend::named("b1");
    let lb = start(&backend, "max_resets_per_sec = 10");
    // MadeYouReset (CVE-2025-8671): each stream made to fail with a window overflow, which
    // Fulcrum must answer with RST_STREAM; 10 a second allowed.
    let mut burst = Vec::new();
    for i in 0..50u32 {
        let id = 1 + 2 * i;
        burst.extend(frame(HEADERS, END_HEADERS, id, &header_block(&post_fields())));
        burst.extend(frame(WINDOW_UPDATE, 0, id, &0x7fff_ffffu32.to_be_bytes()));
    }
    assert_eq!(goaway_after(&lb, &burst), ENHANCE_YOUR_CALM);
}

#[test]
fn protocol_violations_get_their_error_codes() {
    let backend = TestBackend::named("b1");
    let lb = start(&backend, "");
    // The connection window pushed past 2^31-1.
    let over = repeat(&frame(WINDOW_UPDATE, 0, 0, &0x7fff_ffffu32.to_be_bytes()), 2);
    assert_eq!(goaway_after(&lb, &over), FLOW_CONTROL_ERROR);
    // A stream identifier lower than one already used.
    let mut regress = frame(HEADERS, END_HEADERS | END_STREAM, 5, &header_block(&get_fields()));
    regress.extend(frame(HEADERS, END_HEADERS | END_STREAM, 3, &header_block(&get_fields())));
    assert_eq!(goaway_after(&lb, &regress), PROTOCOL_ERROR);
    // A frame larger than SETTINGS_MAX_FRAME_SIZE.
    let oversized = frame(DATA, 0, 1, &vec![0; 20_000]);
    assert_eq!(goaway_after(&lb, &oversized), 0x6);
}

#[test]
fn malformed_requests_are_reset_before_the_backend() {
    let backend = TestBackend::named("b1");
    let lb = start(&backend, "");
    let mut c = H2Conn::connect(lb.addr());
    for extra in [
        &[("Upper-Case", "x")][..],
        &[("connection", "keep-alive")],
        &[("te", "gzip")],
        &[("host", "elsewhere.example")],
    ] {
        let id = c.request("GET", "/", extra, true);
        let r = c.response(id, Duration::from_secs(10));
        assert!(matches!(r.end, End::Reset(PROTOCOL_ERROR)), "{extra:?}: {r:?}");
    }
    // The connection is fine and only a valid request reaches the backend.
    let id = c.request("GET", "/", &[], true);
    assert_eq!(c.response(id, Duration::from_secs(10)).status(), Some(200));
    assert_eq!(backend.requests(), 1);
}

#[test]
fn an_hpack_bomb_gets_431_and_the_connection_survives() {
    let backend = TestBackend::named("b1");
    let lb = start(&backend, "max_header_list_size = 8192");
    let mut c = H2Conn::connect(lb.addr());
    // One 4000-byte field indexed once, then referenced 200 times: 12 bytes on the wire
    // decode to 800 KB. Decoded up to the limit only, then refused with 431.
    let authority = lb.addr().to_string();
    let fields =
        [(":method", "GET"), (":scheme", "http"), (":path", "/"), (":authority", &authority)];
    let mut block = header_block(&fields);
    block.extend_from_slice(&[0x40, 1, b'x', 0x7f, 0xa1, 0x1e]);
    block.extend(std::iter::repeat_n(b'a', 4000));
    block.extend(std::iter::repeat_n(0xbe, 200));
    let id = c.next_stream_id();
    c.send_raw(&frame(HEADERS, END_HEADERS | END_STREAM, id, &block)).unwrap();
    let r = c.response(id, Duration::from_secs(10));
    assert_eq!(r.status(), Some(431), "{r:?}");
    assert_eq!(backend.requests(), 0);
    // The HPACK state is intact: the next request on the same connection works.
    let id = c.request("GET", "/", &[], true);
    assert_eq!(c.response(id, Duration::from_secs(10)).status(), Some(200));
}

fn get_fields() -> Vec<(&'static str, &'static str)> {
    vec![(":method", "GET"), (":scheme", "http"), (":path", "/"), (":authority", "lb")]
}

fn post_fields() -> Vec<(&'static str, &'static str)> {
    vec![(":method", "POST"), (":scheme", "http"), (":path", "/upload"), (":authority", "lb")]
}
