//! gRPC and HTTP/2 through the real binary: tonic clients talk h2c (prior knowledge) to Fulcrum,
//! which balances every call over tonic echo backends (`h2c://`) and plain HTTP/1.1 backends.
//!
//! Waiting is done on conditions (backend counters, stream messages) with deadlines; every test
//! runs under an overall timeout.

use std::collections::HashMap;
use std::sync::atomic::Ordering::SeqCst;
use std::time::Duration;

use crate::harness::echo::EchoRequest;
use crate::harness::grpc::four_call_kinds;
use crate::harness::h2client::{Answer, framed, grpc_call};
use crate::harness::h2frames::{CANCEL, End, Reply};
use crate::harness::*;
use tonic::Code;
use tonic::transport::Endpoint;

fn start(backends: &[String], algorithm: Option<&str>) -> Fulcrum {
    let b = Fulcrum::builder().backends(backends);
    match algorithm {
        Some(a) => b.algorithm(a).start(),
        None => b.start(),
    }
}

#[test]
fn the_four_call_kinds() {
    let backend = EchoBackend::spawn("b1");
    let lb = start(&[backend.url()], None);
    run(async {
        let mut c = GrpcClient::connect(lb.addr()).await;
        four_call_kinds(&mut c, "b1").await;
    });
}

#[test]
fn non_ok_status_keeps_custom_and_binary_metadata() {
    let backend = EchoBackend::spawn("b1");
    let lb = start(&[backend.url()], None);
    run(async {
        let mut c = GrpcClient::connect(lb.addr()).await;
        // Unary failure: tonic answers trailers-only.
        let req = EchoRequest { fail_code: Code::NotFound as i32, ..Default::default() };
        let status = c.unary(tonic::Request::new(req)).await.unwrap_err();
        assert_eq!(status.code(), Code::NotFound);
        assert_eq!(status.message(), "requested failure");
        assert_eq!(status.metadata().get("x-custom").unwrap(), "custom-value");
        assert_eq!(
            status.metadata().get_bin("x-detail-bin").unwrap().to_bytes().unwrap().as_ref(),
            &[0, 1, 2, 255]
        );
        // Failure after two messages: the status travels in real trailers.
        let req = EchoRequest {
            count: 2,
            fail_code: Code::FailedPrecondition as i32,
            ..Default::default()
        };
        let mut stream = c.server_stream(req).await.unwrap();
        assert_eq!(stream.message().await.unwrap().unwrap().seq, 0);
        assert_eq!(stream.message().await.unwrap().unwrap().seq, 1);
        let status = stream.message().await.unwrap_err();
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert_eq!(status.metadata().get("x-custom").unwrap(), "custom-value");
        assert_eq!(
            status.metadata().get_bin("x-detail-bin").unwrap().to_bytes().unwrap().as_ref(),
            &[0, 1, 2, 255]
        );
    });
}

#[test]
fn sixteen_mib_messages_both_ways() {
    let backend = EchoBackend::spawn("b1");
    let lb = start(&[backend.url()], None);
    run(async {
        let mut c = GrpcClient::connect(lb.addr()).await;
        let payload: Vec<u8> = (0..16u32 << 20).map(|i| (i * 7 + i / 251) as u8).collect();
        let req = EchoRequest { payload: payload.clone(), ..Default::default() };
        let reply = c.unary(tonic::Request::new(req)).await.unwrap().into_inner();
        assert!(reply.payload == payload, "16 MiB payload corrupted");
        // Several at once over the same connection.
        let mut calls = Vec::new();
        for _ in 0..3 {
            let mut c = c.clone();
            let payload = payload.clone();
            calls.push(tokio::spawn(async move {
                let req = EchoRequest { payload: payload.clone(), ..Default::default() };
                let reply = c.unary(tonic::Request::new(req)).await.unwrap().into_inner();
                reply.payload == payload
            }));
        }
        for call in calls {
            assert!(call.await.unwrap());
        }
    });
}

#[test]
fn cancellation_reaches_the_backend() {
    let backend = EchoBackend::spawn("b1");
    let lb = start(&[backend.url()], None);
    run(async {
        let c = GrpcClient::connect(lb.addr()).await;
        // A unary call the backend holds: the client gives up, the handler must be dropped.
        let mut c1 = c.clone();
        let call = tokio::spawn(async move {
            let req = EchoRequest { delay_ms: 30_000, ..Default::default() };
            let _ = c1.unary(tonic::Request::new(req)).await;
        });
        wait_for("backend counter", || backend.calls() == 1).await;
        call.abort();
        wait_for("backend counter", || backend.cancelled() == 1).await;

        // A server stream the client drops after two messages.
        let mut c2 = c.clone();
        let req = EchoRequest { count: 100_000, delay_ms: 5, ..Default::default() };
        let mut stream = c2.server_stream(req).await.unwrap();
        stream.message().await.unwrap().unwrap();
        stream.message().await.unwrap().unwrap();
        drop(stream);
        wait_for("backend counter", || backend.cancelled() == 2).await;
    });
}

#[test]
fn grpc_timeout_is_the_upstream_deadline() {
    let backend = RawH2Backend::builder().reply(Reply::Silent).spawn();
    let lb = start(&[backend.url()], None);
    run(async {
        let req = EchoRequest { message: "late".into(), ..Default::default() };
        let Answer { status, headers, trailers, elapsed: took, .. } =
            grpc_call(lb.addr(), "/echo.Echo/Unary", &[("grpc-timeout", "300m")], framed(&req))
                .await;
        // Fulcrum's own trailers-only answer: HTTP 200, DEADLINE_EXCEEDED.
        assert_eq!(status, 200);
        assert!(trailers.is_none(), "{trailers:?}");
        assert_eq!(headers.get("grpc-status").unwrap(), "4", "{headers:?}");
        assert_eq!(headers.get("grpc-message").unwrap(), "deadline exceeded");
        assert!(took >= Duration::from_millis(250) && took < Duration::from_secs(5), "{took:?}");
        // The backend saw the call cancelled (RST_STREAM).
        wait_for("the backend saw the reset", || backend.resets() == 1).await;
    });
}

#[test]
fn a_tonic_backend_given_the_deadline_ends_the_call_in_time() {
    // Fulcrum forwards `grpc-timeout`, so tonic enforces it too; whichever side fires first
    // answers (Fulcrum: DEADLINE_EXCEEDED; tonic's own timeout: CANCELLED). Either way the
    // call ends at the deadline, the backend's handler is cancelled and the connection works on.
    let backend = EchoBackend::spawn("b1");
    let lb = start(&[backend.url()], None);
    run(async {
        let req = EchoRequest { delay_ms: 10_000, ..Default::default() };
        let Answer { status, headers, trailers, elapsed: took, .. } =
            grpc_call(lb.addr(), "/echo.Echo/Unary", &[("grpc-timeout", "300m")], framed(&req))
                .await;
        assert_eq!(status, 200);
        let grpc_status = headers
            .get("grpc-status")
            .or_else(|| trailers.as_ref().and_then(|t| t.get("grpc-status")))
            .map(|v| v.to_str().unwrap().to_owned());
        assert!(matches!(grpc_status.as_deref(), Some("4" | "1")), "{headers:?} {trailers:?}");
        assert!(took >= Duration::from_millis(250) && took < Duration::from_secs(5), "{took:?}");
        wait_for("backend counter", || backend.cancelled() == 1).await;
        let mut c = GrpcClient::connect(lb.addr()).await;
        assert_eq!(c.say("after").await.unwrap().message, "after");
    });
}

#[test]
fn a_backend_killed_mid_stream_fails_the_call_cleanly_and_the_survivor_takes_over() {
    let mut backends = [EchoBackend::spawn("b1"), EchoBackend::spawn("b2")];
    let urls: Vec<String> = backends.iter().map(EchoBackend::url).collect();
    let lb = start(&urls, Some("round_robin"));
    run(async {
        let mut c = GrpcClient::connect(lb.addr()).await;
        let req = EchoRequest { count: 100_000, delay_ms: 5, ..Default::default() };
        let mut stream = c.server_stream(req).await.unwrap();
        let first = stream.message().await.unwrap().unwrap();
        let (victim, survivor) = if first.backend == "b1" { (0, "b2") } else { (1, "b1") };
        backends[victim].kill();
        let status = loop {
            match stream.message().await {
                Ok(Some(_)) => continue,
                Ok(None) => panic!("stream ended cleanly after its backend died"),
                Err(status) => break status,
            }
        };
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        for i in 0..10 {
            let reply = c.say(&format!("after{i}")).await.unwrap();
            assert_eq!(reply.backend, survivor);
        }
    });
}

#[test]
fn no_backend_is_unavailable() {
    let lb = start(&[], None);
    let http1 = TestBackend::named("h1");
    // gRPC never goes to an HTTP/1.1 backend.
    let lb_h1_only = start(&[http1.url()], None);
    run(async {
        for addr in [lb.addr(), lb_h1_only.addr()] {
            let mut c = GrpcClient::connect(addr).await;
            let status = c.say("x").await.unwrap_err();
            assert_eq!(status.code(), Code::Unavailable, "{status:?}");
            assert_eq!(status.message(), "no backend available");
        }
    });
    assert_eq!(http1.requests(), 0);
}

#[test]
fn calls_from_one_connection_spread_round_robin_over_three_backends() {
    let backends = [EchoBackend::spawn("b1"), EchoBackend::spawn("b2"), EchoBackend::spawn("b3")];
    let urls: Vec<String> = backends.iter().map(EchoBackend::url).collect();
    let lb = start(&urls, Some("round_robin"));
    run(async {
        let c = GrpcClient::connect(lb.addr()).await;
        // 300 calls, 30 at a time, over the one connection.
        let mut tasks = Vec::new();
        for t in 0..30 {
            let mut c = c.clone();
            tasks.push(tokio::spawn(async move {
                let mut seen = Vec::new();
                for i in 0..10 {
                    seen.push(c.say(&format!("{t}-{i}")).await.unwrap().backend);
                }
                seen
            }));
        }
        let mut tally: HashMap<String, usize> = HashMap::new();
        for t in tasks {
            for b in t.await.unwrap() {
                *tally.entry(b).or_default() += 1;
            }
        }
        assert_eq!(tally.len(), 3, "{tally:?}");
        assert!(tally.values().all(|&n| n == 100), "{tally:?}");
    });
    for b in &backends {
        assert_eq!(b.calls(), 100);
    }
}

#[test]
fn http1_and_http2_clients_share_the_port() {
    let grpc_backend = EchoBackend::spawn("g1");
    let http1 = TestBackend::named("h1");
    let lb = start(&[grpc_backend.url(), http1.url()], Some("round_robin"));
    let addr = lb.addr();
    // HTTP/1.1 clients on threads while gRPC calls run.
    let h1_clients: Vec<_> = (0..4)
        .map(|_| {
            std::thread::spawn(move || {
                for _ in 0..25 {
                    let res = get_once(addr, "/plain").unwrap();
                    assert_eq!(res.status(), 200);
                    assert_eq!(res.backend(), "h1");
                }
            })
        })
        .collect();
    run(async {
        let channel =
            Endpoint::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap();
        let mut c = GrpcClient::over(channel.clone());
        for i in 0..50 {
            assert_eq!(c.say(&format!("{i}")).await.unwrap().backend, "g1");
        }
    });
    for t in h1_clients {
        t.join().unwrap();
    }
    // A plain HTTP/2 request may go to the HTTP/1.1 backend: it is translated. (After the
    // HTTP/1.1 clients are done: each of their picks can only choose `h1`, which leaves the
    // round-robin cursor on `g1` for whatever comes next on their worker.)
    run(async {
        let channel =
            Endpoint::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap();
        let mut plain = 0;
        for _ in 0..6 {
            use tonic::codegen::Service;
            let mut ch = channel.clone();
            let req = tonic::codegen::http::Request::get(format!("http://{addr}/plain"))
                .body(tonic::body::Body::empty())
                .unwrap();
            std::future::poll_fn(|cx| ch.poll_ready(cx)).await.unwrap();
            let res = ch.call(req).await.unwrap();
            if res.headers().get("x-backend").is_some_and(|v| v == "h1") {
                assert_eq!(res.status(), 200);
                let body =
                    http_body_util::BodyExt::collect(res.into_body()).await.unwrap().to_bytes();
                assert_eq!(&body[..], b"h1");
                plain += 1;
            }
        }
        assert!(plain >= 1, "no plain HTTP/2 request reached the HTTP/1.1 backend");
    });
    assert_eq!(grpc_backend.calls(), 50);
}

// ---- h2c upstreams: stream caps and flow control ---------------------------------------------

/// Fulcrum honours an h2c backend's SETTINGS_MAX_CONCURRENT_STREAMS: with 2 advertised and
/// `http2.max_connections_per_backend = 2`, eight calls at once never put more than two streams
/// on one backend connection (counted in frames on the backend's side, where a real server
/// would refuse the excess), open at most two connections, and all finish once answered.
#[test]
fn h2c_upstream_streams_stay_within_the_backends_limit() {
    let backend = RawH2Backend::builder().max_concurrent_streams(2).reply(Reply::Hold).spawn();
    let lb = Fulcrum::builder()
        .workers(1)
        .backend(&backend)
        .config("[http2]\nmax_connections_per_backend = 2")
        .start();
    let mut c = H2Conn::connect(lb.addr());
    let ids: Vec<u32> = (0..8).map(|_| c.request("GET", "/", &[], true)).collect();
    // Two connections of two streams each; the other calls wait inside Fulcrum.
    expect_within(Duration::from_secs(10), "four streams at the backend", || {
        backend.open_streams() == 4
    });
    holds_for(Duration::from_millis(300), "at most four streams open", || {
        backend.open_streams() <= 4
    });
    backend.release();
    for id in ids {
        let r = c.response(id, Duration::from_secs(10));
        assert_eq!((r.status(), &r.end), (Some(200), &End::Stream), "{r:?}");
    }
    assert_eq!(backend.over_limit(), 0, "streams opened beyond the advertised limit");
    assert_eq!(backend.max_concurrent_seen(), 2);
    assert_eq!((backend.connections(), backend.answered()), (2, 8));
}

/// A plain HTTP/2 request to an h2c backend that never answers gets `504` once
/// `timeouts.upstream_response_ms` has passed since that stream's request, on both engines.
/// The second stream starts 150 ms after the first on the same connection: on the native
/// engine the streams of a client connection share one timer entry, and neither stream's
/// deadline may cut the other's short.
#[test]
fn each_stream_to_a_silent_h2c_backend_gets_504_after_its_own_response_timeout() {
    for engine in ["native", "h2"] {
        let backend = RawH2Backend::builder().reply(Reply::Silent).spawn();
        let lb = Fulcrum::builder()
            .workers(1)
            .backend(&backend)
            .h2_engine(engine)
            .config("[timeouts]\nupstream_response_ms = 300")
            .start();
        let mut c = H2Conn::connect(lb.addr());
        let first = (c.request("GET", "/", &[], true), std::time::Instant::now());
        holds_for(Duration::from_millis(150), "the first stream still waits", || {
            backend.resets() == 0
        });
        let second = (c.request("GET", "/", &[], true), std::time::Instant::now());
        for (id, sent) in [first, second] {
            let r = c.response(id, Duration::from_secs(10));
            let took = sent.elapsed();
            assert_eq!((r.status(), &r.end), (Some(504), &End::Stream), "{engine}: {r:?}");
            let late = Duration::from_secs(5);
            assert!(took >= Duration::from_millis(300) && took < late, "{engine}: {took:?}");
        }
        // The backend saw both streams cancelled.
        expect_within(Duration::from_secs(5), "two resets at the backend", || {
            backend.resets() == 2
        });
    }
}

/// A client that reads nothing (a 64 KiB window it never opens further) back-pressures a
/// server stream of 60 KiB replies: the backend gets to hand its transport only what the
/// windows along the way hold, then stalls, and Fulcrum's memory stays flat.
#[test]
fn a_slow_reader_back_pressures_a_fast_server_stream() {
    // The request carries the payload each reply echoes; it fits the initial 64 KiB windows.
    const REPLY: usize = 60 << 10;
    let backend = EchoBackend::spawn("b1");
    let lb = Fulcrum::builder().workers(1).backend(&backend).start();
    let base_kib = lb.rss_kib();
    let mut c = H2Conn::connect_slow_reader(lb.addr(), 65_535);
    // 10 000 replies (586 MiB) if nothing held the backend back.
    let req = EchoRequest { payload: vec![7; REPLY], count: 10_000, ..Default::default() };
    let grpc = [("content-type", "application/grpc"), ("te", "trailers")];
    let id = c.request("POST", "/echo.Echo/ServerStream", &grpc, false);
    c.data(id, &framed(&req), true).unwrap();

    let sent = || backend.state.replies_sent.load(SeqCst);
    expect_within(Duration::from_secs(10), "the stream started", || sent() > 0);
    // Stalled: no reply handed over for half a second.
    expect_within(Duration::from_secs(20), "the backend stalled", || {
        let before = sent();
        !wait_until(Duration::from_millis(500), || sent() != before)
    });
    let stalled = sent();
    assert!(
        stalled as usize * REPLY < 32 << 20,
        "the backend sent {stalled} replies of 60 KiB to a client that took 64 KiB"
    );
    let growth_mib = lb.rss_kib().saturating_sub(base_kib) / 1024;
    assert!(growth_mib < 32, "Fulcrum grew {growth_mib} MiB holding a stalled stream");

    // The client gives up: the backend's stream is cancelled.
    c.reset(id, CANCEL).unwrap();
    expect_within(Duration::from_secs(10), "the backend saw the cancel", || {
        backend.cancelled() >= 1
    });
}
