//! Interim (`1xx`) responses from backends. `103 Early Hints` is forwarded to HTTP/1.1 and
//! HTTP/2 clients ahead of the final response, a bounded number of times; `100 Continue` from a
//! backend is dropped (Fulcrum answers `Expect: 100-continue` itself, see `data_plane`). A
//! `101` that no upgrade asked for is a `502` (WebSocket upgrades: `websocket`).

use crate::harness::h2frames::End;
use crate::harness::*;

/// `100 Continue`, two `103 Early Hints` (each with a `link`), then the final `200`.
const INTERIM_THEN_FINAL: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n\
    HTTP/1.1 103 Early Hints\r\nlink: </style.css>; rel=preload; as=style\r\n\r\n\
    HTTP/1.1 103 Early Hints\r\nlink: </app.js>; rel=preload; as=script\r\nConnection: x-hop\r\n\
    X-Hop: 1\r\n\r\n\
    HTTP/1.1 200 OK\r\ncontent-length: 5\r\nx-final: yes\r\n\r\nfinal";

const SWITCHING_PROTOCOLS: &[u8] =
    b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n";

fn start(backend: &RawBackend) -> Fulcrum {
    Fulcrum::builder().workers(1).backend(backend).start()
}

#[test]
fn early_hints_reach_an_http1_client_and_100_does_not() {
    let backend = RawBackend::fixed(INTERIM_THEN_FINAL);
    let f = start(&backend);
    let r = f.get("/");
    let statuses: Vec<u16> = r.interim.iter().map(Head::status).collect();
    assert_eq!(statuses, [103, 103], "{:?}", r.interim);
    assert_eq!(r.interim[0].header("link"), Some("</style.css>; rel=preload; as=style"));
    assert_eq!(r.interim[1].header("link"), Some("</app.js>; rel=preload; as=script"));
    assert_eq!(r.interim[1].header("x-hop"), None, "a hop-by-hop field of a 103 was forwarded");
    assert_eq!((r.status(), r.header("x-final"), r.text().as_str()), (200, Some("yes"), "final"));
    assert_eq!(r.header("link"), None, "a 103's field leaked into the final head");
}

#[test]
fn early_hints_reach_an_http2_client_and_100_does_not() {
    let backend = RawBackend::fixed(INTERIM_THEN_FINAL);
    let f = start(&backend);
    let r = H2Conn::get_once(f.addr(), "/");
    assert_eq!(r.interim(), [103, 103], "{r:?}");
    let link = |i: usize| r.heads[i].iter().find(|(n, _)| n == "link").map(|(_, v)| v.as_str());
    assert_eq!(link(0), Some("</style.css>; rel=preload; as=style"));
    assert_eq!(link(1), Some("</app.js>; rel=preload; as=script"));
    assert_eq!((r.status(), r.header("x-final")), (Some(200), Some("yes")), "{r:?}");
    assert_eq!((&r.end, r.data.as_slice()), (&End::Stream, &b"final"[..]));
    assert!(r.violations().is_empty(), "{r:?}");
}

/// A backend may not hold the client with interim heads forever.
#[test]
fn too_many_interim_heads_are_a_bad_gateway() {
    let mut answer = b"HTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\n".repeat(9);
    answer.extend_from_slice(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
    let backend = RawBackend::fixed(answer);
    let f = start(&backend);
    let r = f.get("/");
    assert_eq!(r.status(), 502, "{r:?}");
    assert_eq!(r.interim.len(), 8, "{r:?}");
}

#[test]
fn a_protocol_switch_nobody_asked_for_gets_502_over_http1() {
    let backend = RawBackend::fixed(SWITCHING_PROTOCOLS);
    let f = start(&backend);
    let r = f.get("/");
    assert_eq!(r.status(), 502, "{r:?}");
    assert!(r.interim.is_empty(), "{r:?}");
}

#[test]
fn a_protocol_switch_gets_502_over_http2() {
    let backend = RawBackend::fixed(SWITCHING_PROTOCOLS);
    let f = start(&backend);
    let r = H2Conn::get_once(f.addr(), "/");
    assert_eq!((r.status(), &r.end), (Some(502), &End::Stream), "{r:?}");
    assert!(r.violations().is_empty(), "{r:?}");
}
