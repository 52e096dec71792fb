//! Interim (`1xx`) responses from backends. Fulcrum does not forward them: a client, over
//! HTTP/1.1 or HTTP/2, receives the final response alone. A protocol upgrade (`101`) is refused
//! with `502`. `Expect: 100-continue` from a client is answered by Fulcrum itself (`data_plane`).

use crate::harness::h2frames::End;
use crate::harness::*;

/// `100 Continue` and `103 Early Hints` (with a `link`), then the final `200`.
const INTERIM_THEN_FINAL: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n\
    HTTP/1.1 103 Early Hints\r\nlink: </style.css>; rel=preload; as=style\r\n\r\n\
    HTTP/1.1 200 OK\r\ncontent-length: 5\r\nx-final: yes\r\n\r\nfinal";

const SWITCHING_PROTOCOLS: &[u8] =
    b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n";

fn start(backend: &RawBackend) -> Fulcrum {
    Fulcrum::builder().workers(1).backend(backend).start()
}

#[test]
fn interim_responses_are_not_forwarded_to_an_http1_client() {
    let backend = RawBackend::fixed(INTERIM_THEN_FINAL);
    let f = start(&backend);
    let r = f.get("/");
    assert!(r.interim.is_empty(), "interim heads reached the client: {:?}", r.interim);
    assert_eq!((r.status(), r.header("x-final"), r.text().as_str()), (200, Some("yes"), "final"));
    assert_eq!(r.header("link"), None, "the 103's field leaked into the final head");
}

#[test]
fn interim_responses_are_not_forwarded_to_an_http2_client() {
    let backend = RawBackend::fixed(INTERIM_THEN_FINAL);
    let f = start(&backend);
    let r = H2Conn::get_once(f.addr(), "/");
    assert!(r.interim().is_empty(), "interim heads reached the client: {r:?}");
    assert_eq!(r.heads.len(), 1, "{r:?}");
    assert_eq!((r.status(), r.header("x-final")), (Some(200), Some("yes")), "{r:?}");
    assert_eq!((&r.end, r.data.as_slice()), (&End::Stream, &b"final"[..]));
    assert!(r.violations().is_empty(), "{r:?}");
}

#[test]
fn a_protocol_upgrade_gets_502_over_http1() {
    let backend = RawBackend::fixed(SWITCHING_PROTOCOLS);
    let f = start(&backend);
    let r = f.get("/");
    assert_eq!(r.status(), 502, "{r:?}");
    assert!(r.interim.is_empty(), "{r:?}");
}

#[test]
fn a_protocol_upgrade_gets_502_over_http2() {
    let backend = RawBackend::fixed(SWITCHING_PROTOCOLS);
    let f = start(&backend);
    let r = H2Conn::get_once(f.addr(), "/");
    assert_eq!((r.status(), &r.end), (Some(502), &End::Stream), "{r:?}");
    assert!(r.violations().is_empty(), "{r:?}");
}
