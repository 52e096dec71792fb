//! The `[http2]` protections through the real binary: rapid reset, max concurrent streams, max
//! header list size, requests per connection and the body rate on HTTP/2. Limits are checked
//! from the server's side: a raw frame client ([`H2Conn`]) breaks the advertised limits on
//! purpose, where the h2 crate would honour them before sending anything.
//!
//! Waiting is done on conditions with deadlines; every test runs under an overall timeout.

use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::harness::h2client::{connect, finish, fresh_get, get, watched};
use crate::harness::h2frames::{
    CANCEL, ENHANCE_YOUR_CALM, End, PROTOCOL_ERROR, REFUSED_STREAM, SETTINGS_MAX_CONCURRENT_STREAMS,
};
use crate::harness::*;

/// Starts Fulcrum (one worker) in front of `backend` with `http2` as the `[http2]` section.
fn start(backend: &TestBackend, http2: &str) -> Fulcrum {
    Fulcrum::builder().workers(1).backend(backend).config(&format!("[http2]\n{http2}")).start()
}

/// With the default pending-accept cap (50), h2 itself closes a connection whose client opens
/// and cancels streams faster than they are accepted: GOAWAY(ENHANCE_YOUR_CALM), and the worker
/// serves a new connection.
#[test]
fn rapid_reset_past_the_pending_accept_cap_closes_the_connection() {
    let backend = TestBackend::named("b1");
    let lb = start(&backend, "max_resets_per_sec = 20");
    let addr = lb.addr();
    run(async {
        let (mut send, conn) = watched(addr).await;
        // Far more than 20 streams, each opened (request body still open) and cancelled at once.
        for _ in 0..500 {
            let Ok(ready) = send.clone().ready().await else { break };
            send = ready;
            let Ok((_response, mut body)) = send.send_request(get(addr, "/"), false) else {
                break;
            };
            body.send_reset(h2::Reason::CANCEL);
            tokio::task::yield_now().await;
        }
        // `send` stays alive: only Fulcrum can end the connection now.
        let closed = tokio::time::timeout(Duration::from_secs(5), conn)
            .await
            .expect("the connection was not closed by Fulcrum")
            .unwrap();
        let err = closed.expect_err("the connection ended without an error");
        // GOAWAY(ENHANCE_YOUR_CALM), or, when the client was still writing as Fulcrum closed the
        // socket, the write error that hid it.
        let calm = err.is_go_away()
            && err.is_remote()
            && err.reason() == Some(h2::Reason::ENHANCE_YOUR_CALM);
        assert!(calm || err.is_io(), "{err:?}");
        // The worker survived: a new connection is served.
        assert_eq!(fresh_get(addr, "/").await, 200);
    });
}

/// `http2.max_resets_per_sec` on its own (h2's pending-accept cap raised out of the way): every
/// stream is accepted by Fulcrum before it is reset (its head has reached the backend), so
/// Fulcrum's own counter sees each reset, and the connection gets GOAWAY(ENHANCE_YOUR_CALM)
/// after at most twice the cap (a burst may straddle the start of a new one-second window).
#[test]
fn resets_faster_than_max_resets_per_sec_get_goaway_enhance_your_calm() {
    const CAP: usize = 10;
    let backend = TestBackend::named("b1");
    let lb = start(
        &backend,
        &format!("max_resets_per_sec = {CAP}\nmax_pending_accept_reset_streams = 100000"),
    );
    let mut c = H2Conn::connect(lb.addr());
    let mut resets = 0;
    for i in 0..4 * CAP {
        // A request whose body stays open: Fulcrum sends its head on and waits for the body.
        let id = c.request("POST", "/upload", &[], false);
        let mut closed = false;
        expect_within(Duration::from_secs(5), "stream accepted, or the connection closed", || {
            closed = c.goaway_seen().is_some();
            closed || backend.requests() > i
        });
        if closed {
            break;
        }
        if c.reset(id, CANCEL).is_err() {
            break; // closed meanwhile
        }
        resets += 1;
    }
    let (_, code) = c.goaway(Duration::from_secs(5)).expect("no GOAWAY after the resets");
    assert_eq!(code, ENHANCE_YOUR_CALM, "after {resets} resets");
    assert!(resets > CAP && resets <= 2 * CAP + 1, "GOAWAY after {resets} resets, cap {CAP}");
    // The worker survived: a new connection is served.
    assert_eq!(H2Conn::get_once(lb.addr(), "/").status(), Some(200));
}

/// `http2.max_concurrent_streams` is advertised, and a client that ignores it gets its extra
/// stream refused (RST_STREAM with REFUSED_STREAM or PROTOCOL_ERROR, RFC 9113 section 5.1.2);
/// the backend never sees more than the cap, and the open streams finish.
#[test]
fn max_concurrent_streams_is_advertised_and_enforced() {
    let backend = TestBackend::named("b1");
    let lb = start(&backend, "max_concurrent_streams = 4");
    let mut c = H2Conn::connect(lb.addr());
    assert_eq!(c.max_concurrent_streams(), Some(4), "{:?}", c.server_settings);
    assert!(c.server_settings.iter().any(|(id, _)| *id == SETTINGS_MAX_CONCURRENT_STREAMS));

    backend.hold();
    let held: Vec<u32> = (0..4).map(|_| c.request("GET", "/hold", &[], true)).collect();
    expect_within(Duration::from_secs(10), "4 requests at the backend", || {
        backend.in_flight() == 4
    });
    // A fifth stream, opened anyway.
    let fifth = c.request("GET", "/hold", &[], true);
    let refused = c.response(fifth, Duration::from_secs(10));
    assert!(
        matches!(refused.end, End::Reset(REFUSED_STREAM | PROTOCOL_ERROR)),
        "the fifth stream was not refused: {refused:?}"
    );
    assert_eq!((backend.in_flight(), backend.requests()), (4, 4), "the fifth reached the backend");

    backend.release();
    for id in held {
        let r = c.response(id, Duration::from_secs(10));
        assert_eq!((r.status(), &r.end), (Some(200), &End::Stream), "{r:?}");
    }
    // Slots are free again on the same connection.
    let id = c.request("GET", "/", &[], true);
    assert_eq!(c.response(id, Duration::from_secs(10)).status(), Some(200));
}

#[test]
fn an_oversized_header_list_is_refused() {
    let backend = TestBackend::named("b1");
    let lb = start(&backend, "max_header_list_size = 4096");
    let addr = lb.addr();
    run(async {
        let mut send = connect(addr).await.ready().await.unwrap();
        let big = "a".repeat(16 * 1024);
        let req = http::Request::get(format!("http://{addr}/big"))
            .header("x-big", big.as_str())
            .body(())
            .unwrap();
        let outcome = match send.send_request(req, true) {
            Ok((response, _)) => finish(response).await.map(|a| a.status),
            Err(e) => Err(e),
        };
        // Refused by the server itself: hyperium h2 closes a connection whose list is this far
        // over the limit with GOAWAY(ENHANCE_YOUR_CALM); the native engine decodes the block to
        // its end (the HPACK state stays intact) and answers the stream 431.
        match outcome {
            Ok(status) => assert_eq!(status, 431, "an oversized header list was answered"),
            Err(err) => {
                assert!(err.is_go_away() && err.is_remote(), "{err:?}");
                assert_eq!(err.reason(), Some(h2::Reason::ENHANCE_YOUR_CALM), "{err:?}");
            }
        }
        assert!(
            backend.last_request().is_none_or(|r| r.header("x-big").is_none()),
            "the oversized request reached the backend"
        );
        // A small request on a fresh connection is served.
        assert_eq!(fresh_get(addr, "/small").await, 200);
    });
}

/// `limits.max_requests_per_connection` on HTTP/2: after the third stream Fulcrum sends a
/// graceful GOAWAY, lets that stream finish and closes the connection without an error.
#[test]
fn goaway_after_max_requests_per_connection() {
    let backend = TestBackend::named("b1");
    let lb = start(&backend, "\n[limits]\nmax_requests_per_connection = 3");
    let addr = lb.addr();
    run(async {
        let (mut send, conn) = watched(addr).await;
        for _ in 0..3 {
            send = send.ready().await.unwrap();
            let (response, _) = send.send_request(get(addr, "/"), true).unwrap();
            assert_eq!(finish(response).await.unwrap().status, 200);
        }
        // `send` stays alive: only Fulcrum can end the connection now, and it ends cleanly.
        let closed = tokio::time::timeout(Duration::from_secs(5), conn)
            .await
            .expect("the connection was not closed after 3 streams")
            .unwrap();
        let graceful = match &closed {
            Ok(()) => true,
            Err(e) => e.is_go_away() && e.reason() == Some(h2::Reason::NO_ERROR),
        };
        assert!(graceful, "{closed:?}");
        assert!(send.ready().await.is_err(), "a fourth stream on the closed connection");
        // A fourth request needs a new connection.
        assert_eq!(fresh_get(addr, "/").await, 200);
        assert_eq!(backend.requests(), 4);
    });
}

/// `timeouts.client_body_min_rate` on an HTTP/2 request for an HTTP/1.1 backend: 5 bytes every
/// 100 ms stay within the gap timeout but far below 10 000 B/s, so the stream gets 408 and the
/// backend never sees a complete request.
#[test]
fn an_h2_request_body_below_the_minimum_rate_gets_408() {
    let backend = TestBackend::named("b1");
    let config = "\n[timeouts]\nclient_body_ms = 400\nclient_body_min_rate = 10000";
    let lb = start(&backend, config);
    let addr = lb.addr();
    run(async {
        let mut send = connect(addr).await.ready().await.unwrap();
        let req = http::Request::post(format!("http://{addr}/upload"))
            .header("content-length", "100000")
            .body(())
            .unwrap();
        let started = Instant::now();
        let (response, mut body) = send.send_request(req, false).unwrap();
        // The slow client: its pauses are the behaviour under test.
        tokio::spawn(async move {
            for _ in 0..40 {
                if body.send_data(Bytes::from_static(b"xxxxx"), false).is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        let status = finish(response).await.unwrap().status;
        let took = started.elapsed();
        assert_eq!(status, 408);
        assert!(took >= Duration::from_millis(380) && took < Duration::from_secs(2), "{took:?}");
        assert!(backend.last_request().is_none(), "the backend never saw a complete request");
    });
}
