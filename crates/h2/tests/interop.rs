//! The connection state machine against hyperium `h2` over loopback, in both roles: our
//! server under an `h2` client, our client against an `h2` server. Each side echoes request
//! bodies back with trailers, over many concurrent streams and bodies from empty to several
//! windows long, so flow control, the send queues, CONTINUATION-free heads, trailers, resets
//! and GOAWAY are exercised against an independent implementation.
//!
//! Our side runs on a small driver over tokio's readiness API (read what is there, write what
//! the connection produced), the way the proxy's monoio driver does.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use fulcrum_h2::conn::{Config, Connection, Event, Role};
use fulcrum_h2::hpack::Field;
use fulcrum_h2::{ErrorCode, StreamId};
use tokio::net::{TcpListener, TcpStream};

/// An event copied out of the connection, so the application may act on the connection.
#[derive(Debug)]
enum Ev {
    Request { stream: StreamId, end: bool },
    Response { stream: StreamId, status: u16, end: bool },
    Trailers { stream: StreamId, fields: Vec<(Vec<u8>, Vec<u8>)> },
    Data { stream: StreamId, data: Vec<u8>, end: bool },
    Reset { stream: StreamId, code: ErrorCode },
    Settings,
    GoAway,
    Other,
}

impl From<Event<'_>> for Ev {
    fn from(e: Event<'_>) -> Ev {
        match e {
            Event::Request { stream, end_stream, .. } => Ev::Request { stream, end: end_stream },
            Event::Response { stream, status, end_stream, .. } => {
                Ev::Response { stream, status, end: end_stream }
            }
            Event::Trailers { stream, fields } => Ev::Trailers {
                stream,
                fields: fields.iter().map(|f| (f.name.to_vec(), f.value.to_vec())).collect(),
            },
            Event::Data { stream, data, end_stream } => {
                Ev::Data { stream, data: data.to_vec(), end: end_stream }
            }
            Event::Reset { stream, code, .. } => Ev::Reset { stream, code },
            Event::Settings => Ev::Settings,
            Event::GoAway { .. } => Ev::GoAway,
            _ => Ev::Other,
        }
    }
}

/// What runs on top of our connection.
trait App {
    fn event(&mut self, conn: &mut Connection, ev: Ev);
    /// Queued DATA of `stream` went out: `n` bytes.
    fn sent(&mut self, conn: &mut Connection, stream: StreamId, n: usize);
    /// Nothing more to do: the driver may stop.
    fn done(&self) -> bool;
}

/// Drives `conn` over `sock` until the peer closes, the connection fails, or the app is
/// done. Returns the largest [`Connection::heap_bytes`] seen.
async fn drive(mut conn: Connection, sock: TcpStream, app: &mut impl App) -> usize {
    let mut rbuf = vec![0u8; 64 * 1024];
    let (mut start, mut end) = (0, 0);
    let mut out = Vec::new();
    let mut written = 0;
    let mut spare = Vec::new();
    let mut max_heap = 0;
    let mut eof = false;
    loop {
        // Everything the input holds.
        while let Ok(r) = conn.recv(&rbuf[start..end]) {
            let idle = r.is_idle();
            start += r.used;
            let ev = r.event.map(Ev::from);
            if let Some(ev) = ev {
                app.event(&mut conn, ev);
            }
            while let Some((stream, n)) = conn.take_sent() {
                app.sent(&mut conn, stream, n);
            }
            if idle {
                break;
            }
        }
        max_heap = max_heap.max(conn.heap_bytes());
        if written == out.len() {
            out = conn.take_out(std::mem::take(&mut spare));
            written = 0;
            while let Some((stream, n)) = conn.take_sent() {
                app.sent(&mut conn, stream, n);
            }
        }
        if written == out.len() && (eof || conn.is_finished() || app.done()) {
            return max_heap;
        }
        // Make room in the read buffer.
        if start == end {
            (start, end) = (0, 0);
        } else if end == rbuf.len() {
            rbuf.copy_within(start..end, 0);
            (start, end) = (0, end - start);
        }
        let want_read = !eof && conn.wants_read() && end < rbuf.len();
        let want_write = written < out.len();
        tokio::select! {
            r = sock.readable(), if want_read => {
                r.unwrap();
                match sock.try_read(&mut rbuf[end..]) {
                    Ok(0) => eof = true,
                    Ok(n) => end += n,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(_) => eof = true,
                }
            }
            r = sock.writable(), if want_write => {
                r.unwrap();
                match sock.try_write(&out[written..]) {
                    Ok(n) => written += n,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(_) => return max_heap,
                }
                if written == out.len() {
                    spare = std::mem::take(&mut out);
                    written = 0;
                }
            }
        }
    }
}

fn run<F: std::future::Future>(f: F) -> F::Output {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async { tokio::time::timeout(Duration::from_secs(30), f).await.unwrap() })
}

/// Body sizes used for the streams: empty, tiny, several frames, several windows.
const SIZES: [usize; 6] = [0, 1, 1000, 16_385, 70_000, 300_000];

fn body(i: usize) -> Vec<u8> {
    (0..SIZES[i % SIZES.len()]).map(|k| (k * 31 + i) as u8).collect()
}

/// Our echo server: each request's body comes back as the response body, then trailers with
/// its length. Request credit is released only as the echo goes out (back-pressure).
#[derive(Default)]
struct EchoServer {
    totals: HashMap<StreamId, usize>,
    resets: Rc<RefCell<Vec<(StreamId, ErrorCode)>>>,
}

impl EchoServer {
    fn finish(conn: &mut Connection, stream: StreamId, total: usize) {
        let len = total.to_string();
        let trailers = [Field::new(b"x-echoed", len.as_bytes())];
        conn.send_trailers(stream, trailers).unwrap();
    }
}

impl App for EchoServer {
    fn event(&mut self, conn: &mut Connection, ev: Ev) {
        match ev {
            Ev::Request { stream, end, .. } => {
                let fields = [Field::new(b"content-type", b"application/octet-stream")];
                conn.send_response(stream, 200, fields, false).unwrap();
                self.totals.insert(stream, 0);
                if end {
                    EchoServer::finish(conn, stream, 0);
                }
            }
            Ev::Data { stream, data, end } => {
                let sent = conn.send_data(stream, &data, false).unwrap();
                assert_eq!(sent.accepted, data.len(), "the send buffer holds a window");
                conn.release(stream, sent.written);
                let total = self.totals.entry(stream).or_default();
                *total += data.len();
                if end {
                    EchoServer::finish(conn, stream, *total);
                }
            }
            Ev::Reset { stream, code } => self.resets.borrow_mut().push((stream, code)),
            _ => {}
        }
    }

    fn sent(&mut self, conn: &mut Connection, stream: StreamId, n: usize) {
        conn.release(stream, n);
    }

    fn done(&self) -> bool {
        false
    }
}

fn server_config() -> Config {
    Config { max_concurrent_streams: 8, ..Config::default() }
}

/// Sends `data` on an h2 stream as its window allows.
async fn send_body(tx: &mut h2::SendStream<Bytes>, mut data: Bytes) {
    while !data.is_empty() {
        tx.reserve_capacity(data.len());
        let n = std::future::poll_fn(|cx| tx.poll_capacity(cx)).await.unwrap().unwrap();
        let chunk = data.split_to(n.min(data.len()));
        tx.send_data(chunk, false).unwrap();
    }
}

/// Reads a whole h2 body, releasing its credit as it goes.
async fn read_body(rx: &mut h2::RecvStream) -> Vec<u8> {
    let mut got = Vec::new();
    while let Some(chunk) = rx.data().await {
        let chunk = chunk.unwrap();
        rx.flow_control().release_capacity(chunk.len()).unwrap();
        got.extend_from_slice(&chunk);
    }
    got
}

#[test]
fn our_server_echoes_for_an_h2_client() {
    run(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::task::spawn_local(async move {
            let (sock, _) = listener.accept().await.unwrap();
            let mut app = EchoServer::default();
            drive(Connection::new(Role::Server, server_config()), sock, &mut app).await
        });
        let sock = TcpStream::connect(addr).await.unwrap();
        // Streams the client opens before our SETTINGS arrive are not limited by them (and
        // would be refused): start it with our limit.
        let (client, conn) =
            h2::client::Builder::new().initial_max_send_streams(8).handshake(sock).await.unwrap();
        let conn = tokio::task::spawn_local(conn);
        let mut calls = Vec::new();
        for i in 0..24 {
            let mut client = client.clone();
            calls.push(tokio::task::spawn_local(async move {
                let sent = body(i);
                let req = http::Request::post(format!("http://test/echo/{i}")).body(()).unwrap();
                client = client.ready().await.unwrap();
                let (response, mut tx) = client.send_request(req, sent.is_empty()).unwrap();
                if !sent.is_empty() {
                    send_body(&mut tx, Bytes::from(sent.clone())).await;
                    tx.send_data(Bytes::new(), true).unwrap();
                }
                let response = response.await.unwrap();
                assert_eq!(response.status(), 200);
                let mut rx = response.into_body();
                let got = read_body(&mut rx).await;
                assert_eq!(got.len(), sent.len(), "stream {i}");
                assert!(got == sent, "stream {i}: body differs");
                let trailers = rx
                    .trailers()
                    .await
                    .unwrap()
                    .unwrap_or_else(|| panic!("stream {i}: no trailers"));
                assert_eq!(trailers["x-echoed"], sent.len().to_string());
            }));
        }
        for call in calls {
            call.await.unwrap();
        }
        drop(client);
        conn.await.unwrap().unwrap();
        let max_heap = server.await.unwrap();
        // Bounded by the windows, not by the 1.2 MB that went through each way.
        assert!(max_heap < 4 << 20, "server held {max_heap} bytes");
    });
}

#[test]
fn a_slow_reader_back_pressures_its_writer() {
    run(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let config = Config {
            initial_stream_window: 256 * 1024,
            initial_connection_window: 256 * 1024,
            max_send_buffer: 256 * 1024,
            ..Config::default()
        };
        let server = tokio::task::spawn_local(async move {
            let (sock, _) = listener.accept().await.unwrap();
            let mut app = EchoServer::default();
            drive(Connection::new(Role::Server, config), sock, &mut app).await
        });
        let sock = TcpStream::connect(addr).await.unwrap();
        let (client, conn) = h2::client::handshake(sock).await.unwrap();
        let conn = tokio::task::spawn_local(conn);
        let mut client = client.ready().await.unwrap();
        let req = http::Request::post("http://test/slow").body(()).unwrap();
        let (response, mut tx) = client.send_request(req, false).unwrap();
        // 8 MB up while nothing is read: the echo fills the client's windows, the server
        // stops releasing, the upload stalls. Reading then drains both ways.
        let sent: Vec<u8> = (0..8 << 20).map(|k: usize| k as u8).collect();
        let upload = {
            let sent = Bytes::from(sent.clone());
            tokio::task::spawn_local(async move {
                send_body(&mut tx, sent).await;
                tx.send_data(Bytes::new(), true).unwrap();
            })
        };
        let mut rx = response.await.unwrap().into_body();
        let got = read_body(&mut rx).await;
        upload.await.unwrap();
        assert!(got == sent);
        drop(client);
        drop(rx);
        conn.await.unwrap().unwrap();
        let max_heap = server.await.unwrap();
        // One stream window queued for the slow reader plus buffers: far below 8 MB.
        assert!(max_heap < 1 << 20, "server held {max_heap} bytes");
    });
}

#[test]
fn an_h2_client_reset_reaches_our_server() {
    run(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let resets = Rc::new(RefCell::new(Vec::new()));
        let seen = resets.clone();
        let server = tokio::task::spawn_local(async move {
            let (sock, _) = listener.accept().await.unwrap();
            let mut app = EchoServer { resets: seen, ..EchoServer::default() };
            drive(Connection::new(Role::Server, server_config()), sock, &mut app).await
        });
        let sock = TcpStream::connect(addr).await.unwrap();
        let (client, conn) = h2::client::handshake(sock).await.unwrap();
        let conn = tokio::task::spawn_local(conn);
        let mut client = client.ready().await.unwrap();
        let req = http::Request::post("http://test/cancel").body(()).unwrap();
        let (response, mut tx) = client.send_request(req, false).unwrap();
        tx.send_data(Bytes::from_static(b"partial"), false).unwrap();
        // The head arrives: the server has the stream; then the client cancels it.
        let response = response.await.unwrap();
        assert_eq!(response.status(), 200);
        tx.send_reset(h2::Reason::CANCEL);
        drop((response, tx));
        // A later call on the same connection still works.
        let req = http::Request::get("http://test/after").body(()).unwrap();
        let mut client = client.ready().await.unwrap();
        let (response, _) = client.send_request(req, true).unwrap();
        let mut rx = response.await.unwrap().into_body();
        read_body(&mut rx).await;
        drop(client);
        drop(rx);
        conn.await.unwrap().unwrap();
        server.await.unwrap();
        assert_eq!(resets.borrow().as_slice(), [(StreamId::new(1), ErrorCode::CANCEL)]);
    });
}

/// Our client: opens `calls` requests (as the server's stream limit allows), sends each its
/// body as capacity allows, and checks each echo and its trailers.
struct EchoClient {
    calls: usize,
    opened: usize,
    /// Per stream: call index, body bytes still to send, bytes echoed so far.
    streams: HashMap<StreamId, (usize, usize, Vec<u8>)>,
    finished: usize,
}

impl EchoClient {
    fn open_more(&mut self, conn: &mut Connection) {
        while self.opened < self.calls && conn.can_open_stream() {
            let i = self.opened;
            self.opened += 1;
            let path = format!("/echo/{i}");
            let b = body(i);
            let fields = [
                Field::new(b":method", b"POST"),
                Field::new(b":scheme", b"http"),
                Field::new(b":path", path.as_bytes()),
                Field::new(b":authority", b"test"),
            ];
            let stream = conn.send_request(fields, b.is_empty()).unwrap();
            self.streams.insert(stream, (i, 0, Vec::new()));
            self.push_body(conn, stream);
        }
    }

    /// Sends as much of the stream's body as its send buffer takes.
    fn push_body(&mut self, conn: &mut Connection, stream: StreamId) {
        let Some((i, at, _)) = self.streams.get_mut(&stream) else { return };
        let b = body(*i);
        if b.is_empty() || *at == b.len() {
            return;
        }
        let room = conn.send_capacity(stream).min(b.len() - *at);
        let end = *at + room == b.len();
        let sent = conn.send_data(stream, &b[*at..*at + room], end).unwrap();
        *at += sent.accepted;
    }
}

impl App for EchoClient {
    fn event(&mut self, conn: &mut Connection, ev: Ev) {
        match ev {
            Ev::Settings => self.open_more(conn),
            Ev::Response { status, .. } => assert_eq!(status, 200),
            Ev::Data { stream, data, .. } => {
                conn.release(stream, data.len());
                if let Some((_, _, got)) = self.streams.get_mut(&stream) {
                    got.extend_from_slice(&data);
                }
            }
            Ev::Trailers { stream, fields } => {
                let (i, _, got) = self.streams.remove(&stream).unwrap();
                let sent = body(i);
                assert!(got == sent, "call {i}: echo differs ({} of {})", got.len(), sent.len());
                assert_eq!(fields, [(b"x-echoed".to_vec(), sent.len().to_string().into_bytes())]);
                self.finished += 1;
                self.open_more(conn);
            }
            Ev::Reset { stream, code } => panic!("stream {stream} reset: {code}"),
            _ => {}
        }
    }

    fn sent(&mut self, conn: &mut Connection, stream: StreamId, _n: usize) {
        self.push_body(conn, stream);
    }

    fn done(&self) -> bool {
        self.finished == self.calls
    }
}

/// An h2 echo server: every request's body back, then trailers with its length.
async fn h2_echo_server(listener: TcpListener, max_streams: u32) {
    let (sock, _) = listener.accept().await.unwrap();
    let mut conn = h2::server::Builder::new()
        .max_concurrent_streams(max_streams)
        .handshake::<_, Bytes>(sock)
        .await
        .unwrap();
    while let Some(accepted) = conn.accept().await {
        let (req, mut respond) = accepted.unwrap();
        tokio::task::spawn_local(async move {
            let mut rx = req.into_body();
            let response = http::Response::builder().status(200).body(()).unwrap();
            let mut tx = respond.send_response(response, false).unwrap();
            let mut total = 0;
            while let Some(chunk) = rx.data().await {
                let chunk = chunk.unwrap();
                rx.flow_control().release_capacity(chunk.len()).unwrap();
                total += chunk.len();
                send_body(&mut tx, chunk).await;
            }
            let mut trailers = http::HeaderMap::new();
            trailers.insert("x-echoed", total.to_string().parse().unwrap());
            tx.send_trailers(trailers).unwrap();
        });
    }
}

#[test]
fn our_client_gets_echoes_from_an_h2_server() {
    run(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::task::spawn_local(h2_echo_server(listener, 5));
        let sock = TcpStream::connect(addr).await.unwrap();
        let config = Config { initial_stream_window: 65_535, ..Config::default() };
        let conn = Connection::new(Role::Client, config);
        let mut app = EchoClient { calls: 30, opened: 0, streams: HashMap::new(), finished: 0 };
        let max_heap = drive(conn, sock, &mut app).await;
        assert_eq!(app.finished, 30);
        assert!(max_heap < 4 << 20, "client held {max_heap} bytes");
        server.abort();
    });
}

/// Our client against an h2 server that shuts down gracefully at its first request: every
/// stream is either answered or reported refused (none lost, none failed otherwise), and the
/// connection then finishes.
#[test]
fn our_client_sees_goaway_from_an_h2_server() {
    run(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::task::spawn_local(async move {
            let (sock, _) = listener.accept().await.unwrap();
            let mut conn = h2::server::handshake(sock).await.unwrap();
            let mut first = true;
            while let Some(Ok((_req, mut respond))) = conn.accept().await {
                if std::mem::take(&mut first) {
                    conn.graceful_shutdown();
                }
                let response = http::Response::builder().status(200).body(()).unwrap();
                respond.send_response(response, true).unwrap();
            }
        });
        let sock = TcpStream::connect(addr).await.unwrap();
        let conn = Connection::new(Role::Client, Config::default());

        /// Opens three GETs at once, records how each ended.
        #[derive(Default)]
        struct Three {
            ended: Vec<(StreamId, Result<u16, ErrorCode>)>,
            goaway: bool,
        }
        impl App for Three {
            fn event(&mut self, conn: &mut Connection, ev: Ev) {
                match ev {
                    Ev::Settings if conn.active_streams() == 0 && self.ended.is_empty() => {
                        for _ in 0..3 {
                            let fields = [
                                Field::new(b":method", b"GET"),
                                Field::new(b":scheme", b"http"),
                                Field::new(b":path", b"/"),
                                Field::new(b":authority", b"test"),
                            ];
                            conn.send_request(fields, true).unwrap();
                        }
                    }
                    Ev::Response { stream, status, end: true } => {
                        self.ended.push((stream, Ok(status)))
                    }
                    Ev::Reset { stream, code } => self.ended.push((stream, Err(code))),
                    Ev::GoAway => self.goaway = true,
                    _ => {}
                }
            }
            fn sent(&mut self, _: &mut Connection, _: StreamId, _: usize) {}
            fn done(&self) -> bool {
                false
            }
        }
        let mut app = Three::default();
        drive(conn, sock, &mut app).await;
        assert!(app.goaway);
        app.ended.sort_by_key(|(id, _)| *id);
        assert_eq!(app.ended.len(), 3, "{:?}", app.ended);
        assert_eq!(app.ended[0], (StreamId::new(1), Ok(200)));
        for (id, end) in &app.ended {
            assert!(matches!(end, Ok(200) | Err(ErrorCode::REFUSED_STREAM)), "{id}: {end:?}");
        }
        server.await.unwrap();
    });
}
