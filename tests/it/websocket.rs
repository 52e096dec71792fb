//! WebSocket through Fulcrum: a real client (`tungstenite`) and a real WebSocket server backend
//! ([`WsBackend`]) with the binary between them. The upgrade is forwarded, the backend's `101`
//! turns the connection into a tunnel that carries frames both ways until a side closes, the
//! tunnel idles out or the worker drains; a refused upgrade is an ordinary response, a `101`
//! nobody asked for is a `502`. Tunnels count for `least_connections`, are bounded in number
//! by the connection limit, run over TLS and through routes, and each leaves one access record
//! and its metrics.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::Value;
use tungstenite::Message;
use tungstenite::protocol::frame::coding::CloseCode;

use crate::harness::backend::Then;
use crate::harness::tls::{BOTH, Pki, TlsFront, client_config};
use crate::harness::*;

/// The access records written so far.
fn records(path: &std::path::Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

/// Waits (10 s at most) for a tunnel's access record.
fn tunnel_record(path: &std::path::Path) -> Value {
    let mut found = None;
    expect_within(Duration::from_secs(10), "a tunnel's access record", || {
        found = records(path).into_iter().find(|r| r["upgrade"] == "websocket");
        found.is_some()
    });
    found.unwrap()
}

fn text(ws: &mut WsClient) -> String {
    match ws.read().unwrap() {
        Message::Text(t) => t.as_str().to_owned(),
        other => panic!("expected a text message, got {other:?}"),
    }
}

type WsClient = tungstenite::WebSocket<Box<dyn ws::Io>>;

/// Reads until the connection ends; whether it ended within `limit` (a close frame, a clean
/// close or an error all count).
fn closes_within(ws: &mut WsClient, limit: Duration) -> bool {
    let start = Instant::now();
    loop {
        match ws.read() {
            Ok(_) if start.elapsed() < limit => {}
            Ok(_) => return false,
            Err(_) => return start.elapsed() < limit,
        }
    }
}

fn start(backends: &[&WsBackend], extra: &str) -> Fulcrum {
    builder(backends, extra).start()
}

/// One worker in front of `backends`, configured with `extra` (TOML, may be empty).
fn builder(backends: &[&WsBackend], extra: &str) -> process::Builder {
    let mut b = Fulcrum::builder().workers(1);
    for be in backends {
        b = b.backend(be.url());
    }
    if !extra.is_empty() {
        b = b.config(extra);
    }
    b
}

/// As [`start`] with one backend, writing its access log to the returned path in a fresh
/// directory `name` (removed with the returned [`TempDir`]).
fn start_logged(backend: &WsBackend, extra: &str, name: &str) -> (TempDir, PathBuf, Fulcrum) {
    let dir = TempDir::new(name);
    let log = dir.join("access.log");
    let f = builder(&[backend], extra).access_log(&log.display().to_string()).start();
    (dir, log, f)
}

#[test]
fn text_and_binary_frames_are_echoed_and_the_upgrade_is_forwarded() {
    let backend = WsBackend::start("a");
    let f = start(&[&backend], "");
    let mut ws = ws_connect(f.addr(), "/chat?room=1").unwrap();
    ws.send(Message::text("hello")).unwrap();
    assert_eq!(text(&mut ws), "hello");
    let binary: Vec<u8> = (0..=255).collect();
    ws.send(Message::binary(binary.clone())).unwrap();
    assert_eq!(ws.read().unwrap(), Message::binary(binary));
    ws.send(Message::text("headers")).unwrap();
    let headers = text(&mut ws).to_ascii_lowercase();
    for line in ["connection: upgrade\n", "upgrade: websocket\n", "via: 1.1 fulcrum\n"] {
        assert!(headers.contains(line), "{line:?} not in {headers}");
    }
    assert!(headers.contains("x-forwarded-for: 127.0.0.1\n"), "{headers}");
    assert!(headers.contains("sec-websocket-key: "), "{headers}");
    for round in 0..50 {
        let msg = format!("message {round}");
        ws.send(Message::text(msg.clone())).unwrap();
        assert_eq!(text(&mut ws), msg);
    }
    ws.close(None).unwrap();
    assert!(closes_within(&mut ws, Duration::from_secs(5)));
}

#[test]
fn a_16_mib_message_crosses_both_ways() {
    let backend = WsBackend::start("a");
    let f = start(&[&backend], "");
    let mut ws = ws_connect(f.addr(), "/big").unwrap();
    let big: Vec<u8> =
        (0..16 << 20).map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    ws.send(Message::binary(big.clone())).unwrap();
    match ws.read().unwrap() {
        Message::Binary(echo) => {
            assert_eq!(echo.len(), big.len());
            assert!(echo[..] == big[..], "the echo differs");
        }
        other => panic!("expected binary, got {other:?}"),
    }
}

#[test]
fn ping_is_answered_with_pong() {
    let backend = WsBackend::start("a");
    let f = start(&[&backend], "");
    let mut ws = ws_connect(f.addr(), "/").unwrap();
    ws.send(Message::Ping(b"are you there".to_vec().into())).unwrap();
    assert_eq!(ws.read().unwrap(), Message::Pong(b"are you there".to_vec().into()));
}

#[test]
fn either_side_may_close() {
    let backend = WsBackend::start("a");
    let f = start(&[&backend], "");

    // The client closes: the backend answers the close frame and the tunnel winds down.
    let mut ws = ws_connect(f.addr(), "/").unwrap();
    ws.send(Message::text("x")).unwrap();
    assert_eq!(text(&mut ws), "x");
    ws.close(None).unwrap();
    match ws.read() {
        Ok(Message::Close(_)) | Err(tungstenite::Error::ConnectionClosed) => {}
        other => panic!("expected the close reply, got {other:?}"),
    }
    drop(ws);
    expect_within(Duration::from_secs(5), "the backend connection closed", || backend.open() == 0);

    // The backend closes.
    let mut ws = ws_connect(f.addr(), "/").unwrap();
    ws.send(Message::text("close")).unwrap();
    match ws.read().unwrap() {
        Message::Close(Some(frame)) => {
            assert_eq!((frame.code, frame.reason.as_str()), (CloseCode::Normal, "bye"));
        }
        other => panic!("expected the backend's close frame, got {other:?}"),
    }
    assert!(closes_within(&mut ws, Duration::from_secs(5)));
    drop(ws);
    expect_within(Duration::from_secs(5), "the backend connection closed", || backend.open() == 0);
    f.wait_metric("fulcrum_tunnels_open", |v| v == 0.0);
}

#[test]
fn a_backend_that_refuses_the_upgrade_answers_as_usual() {
    let backend = RawBackend::new(|req| {
        assert_eq!(req.header("upgrade"), Some("websocket"));
        (b"HTTP/1.1 403 Forbidden\r\ncontent-length: 3\r\n\r\nno\n".to_vec(), Then::KeepAlive)
    });
    let f = Fulcrum::builder().workers(1).backend(&backend).start();
    match ws_connect(f.addr(), "/") {
        Err(tungstenite::Error::Http(res)) => {
            assert_eq!(res.status(), 403);
            assert_eq!(res.body().as_deref(), Some(&b"no\n"[..]));
        }
        Err(e) => panic!("expected the 403, got {e}"),
        Ok(_) => panic!("the upgrade succeeded"),
    }
}

/// A `101` to a request that asked for no upgrade, or for another protocol, is a `502`.
#[test]
fn a_switch_nobody_asked_for_is_502() {
    let backend = RawBackend::fixed(
        &b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: h2c\r\n\r\n"[..],
    );
    let f = Fulcrum::builder().workers(1).backend(&backend).start();
    assert_eq!(f.get("/").status(), 502);
    match ws_connect(f.addr(), "/") {
        Err(tungstenite::Error::Http(res)) => assert_eq!(res.status(), 502),
        other => panic!("expected 502, got {:?}", other.map(|_| ())),
    }
}

#[test]
fn an_idle_tunnel_is_closed_and_activity_keeps_it_open() {
    let backend = WsBackend::start("a");
    let (_dir, log, f) = start_logged(&backend, "[timeouts]\ntunnel_idle_ms = 1000", "ws-idle");
    let mut ws = ws_connect(f.addr(), "/").unwrap();
    // Messages every 100 ms for 2 s: activity in either direction resets the one timer (a
    // client thread starved for 900 ms on a loaded machine would still not let it expire).
    let started = Instant::now();
    let mut quiet = Instant::now();
    while started.elapsed() < Duration::from_secs(2) {
        #[allow(clippy::disallowed_methods)] // pacing the client, not synchronisation
        std::thread::sleep(Duration::from_millis(100));
        ws.send(Message::text("tick")).unwrap();
        assert_eq!(text(&mut ws), "tick");
        quiet = Instant::now();
    }
    // Then silence: the tunnel closes about 1 s after the last byte.
    assert!(closes_within(&mut ws, Duration::from_secs(6)));
    let waited = quiet.elapsed();
    assert!(waited >= Duration::from_millis(950), "closed {waited:?} after the last byte");
    drop(ws);
    let r = tunnel_record(&log);
    assert_eq!((r["status"].as_u64(), r["tunnel_close"].as_str()), (Some(101), Some("idle")));
    expect_within(Duration::from_secs(5), "the backend connection closed", || backend.open() == 0);
}

#[test]
fn a_backend_killed_mid_tunnel_closes_the_client() {
    let backend = WsBackend::start("a");
    let f = start(&[&backend], "");
    let mut ws = ws_connect(f.addr(), "/").unwrap();
    ws.send(Message::text("before")).unwrap();
    assert_eq!(text(&mut ws), "before");
    backend.kill();
    assert!(closes_within(&mut ws, Duration::from_secs(5)), "the client did not see the close");
    drop(ws);
    f.wait_metric("fulcrum_tunnels_open", |v| v == 0.0);
}

/// An open tunnel is a request in flight: `least_connections` sends new tunnels to the backend
/// with fewer open ones, and the in-flight gauge shows them until they close.
#[test]
fn least_connections_counts_open_tunnels() {
    let a = WsBackend::start("a");
    let b = WsBackend::start("b");
    let f = Fulcrum::builder()
        .workers(1)
        .backend(a.url())
        .backend(b.url())
        .algorithm("least_connections")
        .start();
    let mut long = ws_connect(f.addr(), "/").unwrap();
    long.send(Message::text("who")).unwrap();
    let busy = text(&mut long);
    let idle = if busy == "a" { "b" } else { "a" };
    let busy_url = if busy == "a" { a.url() } else { b.url() };
    f.wait_metric(
        &format!("fulcrum_backend_in_flight{{pool=\"default\",backend=\"{busy_url}\"}}"),
        |v| v == 1.0,
    );
    // While the long tunnel stays open, every short one goes to the other backend.
    for _ in 0..6 {
        let mut short = ws_connect(f.addr(), "/").unwrap();
        short.send(Message::text("who")).unwrap();
        assert_eq!(text(&mut short), idle);
        short.close(None).unwrap();
        assert!(closes_within(&mut short, Duration::from_secs(5)));
        drop(short);
        f.wait_metric("fulcrum_tunnels_open", |v| v == 1.0);
    }
    long.close(None).unwrap();
    assert!(closes_within(&mut long, Duration::from_secs(5)));
    drop(long);
    f.wait_metric(
        &format!("fulcrum_backend_in_flight{{pool=\"default\",backend=\"{busy_url}\"}}"),
        |v| v == 0.0,
    );
}

/// One worker holds 1000 tunnels at once; each still echoes, and the process's memory is
/// reported.
#[test]
fn a_thousand_concurrent_tunnels_on_one_worker() {
    const N: usize = 1000;
    let backend = WsBackend::start("a");
    let f = start(
        &[&backend],
        "[limits]\nmax_connections_per_worker = 2000\n[pool]\nmax_idle_per_backend = 16",
    );
    let rss_before = f.rss_kib();
    let started = Instant::now();
    let mut clients: Vec<WsClient> = (0..N)
        .map(|i| {
            ws_connect(f.addr(), &format!("/t{i}"))
                .unwrap_or_else(|e| panic!("tunnel {i} after {:?}: {e}", started.elapsed()))
        })
        .collect();
    let opened = started.elapsed();
    for (i, ws) in clients.iter_mut().enumerate() {
        ws.send(Message::text(format!("n{i}"))).unwrap();
    }
    for (i, ws) in clients.iter_mut().enumerate() {
        assert_eq!(text(ws), format!("n{i}"));
    }
    let m = f.wait_metric("fulcrum_tunnels_open", |v| v == N as f64);
    assert_eq!(m.value("fulcrum_client_connections"), N as f64);
    let rss = f.rss_kib();
    #[allow(clippy::print_stderr)] // the figure the test reports
    {
        eprintln!(
            "{N} open tunnels on one worker: RSS {rss} KiB (before {rss_before} KiB, \
             {:.1} KiB per tunnel); opened in {opened:?}",
            (rss.saturating_sub(rss_before)) as f64 / N as f64
        );
    }
    assert!(started.elapsed() < Duration::from_secs(60), "took {:?}", started.elapsed());
    drop(clients);
    f.wait_metric("fulcrum_tunnels_open", |v| v == 0.0);
}

#[test]
fn websocket_over_tls_to_a_tls_backend() {
    let pki = Pki::new("ws");
    let cert = pki.issue("server", &["localhost", "127.0.0.1"]);
    let backend = WsBackend::start("secure");
    // The backend behind a TLS terminator: Fulcrum speaks https:// to it.
    let front = TlsFront::new(&backend.url(), &cert, &["http/1.1"], None);
    let f = Fulcrum::builder()
        .workers(1)
        .backend(front.https_url())
        .tls_listener(&[&cert])
        .upstream_tls(&UpstreamTls::trusting(&pki))
        .start();
    let client = client_config(&[&pki], &["http/1.1"], BOTH);
    let mut ws = ws_connect_tls(f.tls_addr(), "/secure", &client, "localhost").unwrap();
    ws.send(Message::text("who")).unwrap();
    assert_eq!(text(&mut ws), "secure");
    let payload = vec![7u8; 100_000];
    ws.send(Message::binary(payload.clone())).unwrap();
    assert_eq!(ws.read().unwrap(), Message::binary(payload));
    ws.send(Message::text("headers")).unwrap();
    assert!(text(&mut ws).to_ascii_lowercase().contains("x-forwarded-proto: https\n"));
    ws.close(None).unwrap();
    assert!(closes_within(&mut ws, Duration::from_secs(5)));
    drop(ws);
    // Cleartext clients reach the TLS backend too.
    let mut plain = ws_connect(f.addr(), "/").unwrap();
    plain.send(Message::text("who")).unwrap();
    assert_eq!(text(&mut plain), "secure");
    drop(plain);
    f.wait_metric("fulcrum_tunnels_open", |v| v == 0.0);
    assert!(front.handshakes() >= 2);
}

#[test]
fn an_upgrade_is_routed_like_any_request() {
    let chat = WsBackend::start("chat");
    let web = TestBackend::named("web");
    let config = format!(
        "[[pools]]\nname = \"ws\"\n[[pools.backends]]\nurl = \"{}\"\n\
         [[routes]]\npool = \"ws\"\npath_prefix = \"/ws\"\n",
        chat.url()
    );
    let f = Fulcrum::builder().workers(1).backend(&web).config(&config).start();
    let mut ws = ws_connect(f.addr(), "/ws/room").unwrap();
    ws.send(Message::text("who")).unwrap();
    assert_eq!(text(&mut ws), "chat");
    assert_eq!(f.get("/page").backend(), "web");
    // An upgrade to the plain pool is answered by that backend as an ordinary request.
    assert!(matches!(ws_connect(f.addr(), "/other"), Err(tungstenite::Error::Http(_))));
}

/// One access record per tunnel, when it closes; the tunnel metrics.
#[test]
fn a_tunnel_leaves_one_access_record_and_its_metrics() {
    let backend = WsBackend::start("a");
    let (_dir, log, f) = start_logged(&backend, "", "ws-log");
    let mut ws = ws_connect(f.addr(), "/chat").unwrap();
    ws.send(Message::binary(vec![1u8; 1000])).unwrap();
    assert_eq!(ws.read().unwrap(), Message::binary(vec![1u8; 1000]));
    let m = f.wait_metric("fulcrum_tunnels_open", |v| v == 1.0);
    assert_eq!(m.value("fulcrum_tunnels_total"), 1.0);
    assert!(records(&log).is_empty(), "a record before the tunnel closed");
    ws.close(None).unwrap();
    assert!(closes_within(&mut ws, Duration::from_secs(5)));
    drop(ws);
    let r = tunnel_record(&log);
    assert_eq!(r["status"], 101);
    assert_eq!((r["method"].as_str(), r["path"].as_str()), (Some("GET"), Some("/chat")));
    assert_eq!(r["backend"], backend.url());
    // The client started the closing handshake, but the server closes the TCP connection
    // first (RFC 6455 7.1.1), so the backend's end came first.
    assert_eq!(r["tunnel_close"], "backend");
    // A masked 1000-byte frame is 8 bytes of header, 4 of mask; the close frames follow.
    let up = r["tunnel_bytes_client_to_backend"].as_u64().unwrap();
    let down = r["tunnel_bytes_backend_to_client"].as_u64().unwrap();
    assert!((1012..1100).contains(&up), "{r}");
    assert!((1004..1100).contains(&down), "{r}");
    assert!(r["tunnel_duration_us"].as_u64().unwrap() > 0);
    assert!(r["duration_us"].as_u64() >= r["tunnel_duration_us"].as_u64());
    let m = f.wait_metric("fulcrum_tunnels_open", |v| v == 0.0);
    assert_eq!(m.value("fulcrum_tunnel_bytes_total{direction=\"client_to_backend\"}"), up as f64);
    assert_eq!(m.value("fulcrum_tunnel_bytes_total{direction=\"backend_to_client\"}"), down as f64);
    let class = format!(
        "fulcrum_requests_total{{pool=\"default\",backend=\"{}\",class=\"1xx\"}}",
        backend.url()
    );
    assert_eq!(m.value(&class), 1.0);
    assert_eq!(records(&log).iter().filter(|r| r["upgrade"] == "websocket").count(), 1);
}

/// On shutdown an open tunnel gets `timeouts.drain_ms`, then is closed, and the process exits.
#[test]
fn draining_closes_tunnels_after_drain_ms() {
    let backend = WsBackend::start("a");
    let f = start(&[&backend], "[timeouts]\ndrain_ms = 600");
    let mut ws = ws_connect(f.addr(), "/").unwrap();
    ws.send(Message::text("x")).unwrap();
    assert_eq!(text(&mut ws), "x");
    let stop = Instant::now();
    f.sigterm();
    // Still open for the drain.
    #[allow(clippy::disallowed_methods)] // inside the drain window, not synchronisation
    std::thread::sleep(Duration::from_millis(200));
    ws.send(Message::text("during the drain")).unwrap();
    assert_eq!(text(&mut ws), "during the drain");
    assert!(closes_within(&mut ws, Duration::from_secs(10)));
    assert!(stop.elapsed() >= Duration::from_millis(550), "closed after {:?}", stop.elapsed());
    let mut f = f;
    assert!(f.wait_exit(Duration::from_secs(15)).success());
}

/// A raw client's bytes pipelined right after the upgrade request reach the backend first.
#[test]
fn bytes_sent_with_the_upgrade_request_are_forwarded() {
    let backend = WsBackend::start("a");
    let f = start(&[&backend], "");
    let mut s = TcpStream::connect(f.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // A masked text frame "hi" (mask 0) right behind the head.
    let frame = [0x81u8, 0x82, 0, 0, 0, 0, b'h', b'i'];
    let mut req = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
        Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        .to_vec();
    req.extend_from_slice(&frame);
    s.write_all(&req).unwrap();
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    assert!(line.starts_with("HTTP/1.1 101 "), "{line:?}");
    let mut head = String::new();
    loop {
        line.clear();
        r.read_line(&mut line).unwrap();
        if line == "\r\n" {
            break;
        }
        head.push_str(&line.to_ascii_lowercase());
    }
    assert!(head.contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo=\r\n"), "{head}");
    assert!(head.contains("upgrade: websocket\r\n") && head.contains("connection: upgrade\r\n"));
    let mut echo = [0u8; 4];
    std::io::Read::read_exact(&mut r, &mut echo).unwrap();
    assert_eq!(echo, [0x81, 0x02, b'h', b'i']);
}

/// A masked client frame (RFC 6455 5.2) with a payload under 126 bytes.
fn masked_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x11u8, 0x22, 0x33, 0x44];
    let mut frame = vec![0x80 | opcode, 0x80 | payload.len() as u8];
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    frame
}

/// Reads DATA until `n` bytes came (or the stream ended).
async fn read_data(body: &mut h2::RecvStream, n: usize) -> Vec<u8> {
    let mut got = Vec::new();
    while got.len() < n {
        match body.data().await {
            Some(Ok(chunk)) => {
                let _ = body.flow_control().release_capacity(chunk.len());
                got.extend_from_slice(&chunk);
            }
            _ => break,
        }
    }
    got
}

/// An HTTP/2 client connection (hyperium `h2`, prior knowledge) to `addr`, ready to send.
async fn h2_client(addr: std::net::SocketAddr) -> h2::client::SendRequest<bytes::Bytes> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (send, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    send.ready().await.unwrap()
}

/// WebSocket over HTTP/2 (RFC 8441): an extended CONNECT stream becomes a WebSocket upgrade to
/// the HTTP/1.1 backend, answered `200`, and its DATA frames carry the WebSocket frames.
#[test]
fn websocket_over_http2_extended_connect() {
    let backend = WsBackend::start("h2");
    let (_dir, log, f) = start_logged(&backend, "", "ws-h2");
    let addr = f.addr();
    run(async move {
        let mut send = h2_client(addr).await;
        wait_for("SETTINGS_ENABLE_CONNECT_PROTOCOL", || {
            send.is_extended_connect_protocol_enabled()
        })
        .await;
        let connect = |protocol: &'static str| {
            let mut req = http::Request::builder()
                .method("CONNECT")
                .uri(format!("http://{addr}/chat"))
                .header("sec-websocket-version", "13")
                .body(())
                .unwrap();
            req.extensions_mut().insert(h2::ext::Protocol::from_static(protocol));
            req
        };
        // Another protocol is not translated.
        let (res, _s) = send.send_request(connect("chat-v9"), false).unwrap();
        assert_eq!(res.await.unwrap().status(), 501);

        let mut send = send.ready().await.unwrap();
        let (res, mut up) = send.send_request(connect("websocket"), false).unwrap();
        let res = res.await.unwrap();
        assert_eq!(res.status(), 200);
        assert!(res.headers().get("sec-websocket-accept").is_none(), "{:?}", res.headers());
        let mut down = res.into_body();
        up.send_data(masked_frame(0x1, b"hello").into(), false).unwrap();
        assert_eq!(read_data(&mut down, 7).await, [0x81, 5, b'h', b'e', b'l', b'l', b'o']);
        up.send_data(masked_frame(0x1, b"who").into(), false).unwrap();
        assert_eq!(read_data(&mut down, 4).await, [0x81, 2, b'h', b'2']);
        // The client's close frame and END_STREAM; the backend answers the close and closes,
        // which ends the stream.
        up.send_data(masked_frame(0x8, &[0x03, 0xe8]).into(), true).unwrap();
        assert_eq!(read_data(&mut down, 4).await, [0x88, 2, 0x03, 0xe8]);
        assert!(read_data(&mut down, 1).await.is_empty(), "data after the close");
    });
    let r = tunnel_record(&log);
    assert_eq!((r["status"].as_u64(), r["method"].as_str()), (Some(200), Some("CONNECT")));
    assert!(["client", "backend"].contains(&r["tunnel_close"].as_str().unwrap()), "{r}");
    assert_eq!(r["tunnel_bytes_client_to_backend"], 11 + 9 + 8);
    expect_within(Duration::from_secs(5), "the backend connection closed", || backend.open() == 0);
}

/// Without `websocket` on `upgrade.protocols` the HTTP/2 listener does not enable extended
/// CONNECT (no SETTINGS_ENABLE_CONNECT_PROTOCOL), on either engine.
#[test]
fn extended_connect_is_off_without_websocket_upgrades() {
    let backend = TestBackend::named("b1");
    let f =
        Fulcrum::builder().workers(1).backend(&backend).config("[upgrade]\nprotocols = []").start();
    let addr = f.addr();
    run(async move {
        let mut send = h2_client(addr).await;
        // One exchange first: the server's SETTINGS have arrived by its answer.
        let req = http::Request::get(format!("http://{addr}/")).body(()).unwrap();
        let (res, _) = send.send_request(req, true).unwrap();
        assert_eq!(res.await.unwrap().status(), 200);
        assert!(!send.is_extended_connect_protocol_enabled());
    });
}
