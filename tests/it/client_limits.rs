//! Client-side limits through the real binary over raw TCP: the request-head timeout
//! (slowloris), the request-body gap timeout and minimum rate, the idle keep-alive timeout,
//! `limits.max_connections_per_worker` (accept paused, then resumed) and
//! `limits.max_requests_per_connection`.
//!
//! Timeouts are set to a few hundred milliseconds so each test takes about a second. The slow
//! clients pause between their writes on purpose: those pauses are the behaviour under test.
//! Everything else waits on observable conditions with deadlines.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::harness::h2frames;
use crate::harness::*;

/// Starts one worker in front of `backend` with `config` (TOML) as its configuration file.
fn start(backend: &TestBackend, config: &str) -> Fulcrum {
    Fulcrum::builder().workers(1).backend(backend).config(config).start()
}

/// A slow client: writes `pieces` on a clone of `client`'s socket, `every` apart, and stops at
/// the first write that fails (Fulcrum closed the connection).
#[allow(clippy::disallowed_methods)] // the pauses are the slow client under test
fn dribble(client: &Client, pieces: Vec<Vec<u8>>, every: Duration) -> JoinHandle<()> {
    let mut w = client.writer.try_clone().unwrap();
    std::thread::spawn(move || {
        for piece in pieces {
            if w.write_all(&piece).is_err() {
                return;
            }
            std::thread::sleep(every);
        }
    })
}

/// `n` pieces of `size` bytes each.
fn pieces(n: usize, size: usize) -> Vec<Vec<u8>> {
    (0..n).map(|_| vec![b'x'; size]).collect()
}

/// Whether nothing arrives on `stream` within `wait` (the read times out).
fn silent_for(stream: &TcpStream, wait: Duration) -> bool {
    stream.set_read_timeout(Some(wait)).unwrap();
    let mut byte = [0u8; 1];
    let silent = matches!(
        stream.peek(&mut byte),
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
    );
    stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    silent
}

#[test]
fn a_request_head_dribbled_past_client_header_ms_gets_408() {
    let backend = TestBackend::named("a");
    let f = start(&backend, "[timeouts]\nclient_header_ms = 300\n");
    let mut c = Client::connect(f.addr());
    let head =
        b"GET / HTTP/1.1\r\nHost: test\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    let started = Instant::now();
    // 70 bytes, one every 50 ms: the head would take 3.5 s.
    let _slow =
        dribble(&c, head.chunks(1).map(<[u8]>::to_vec).collect(), Duration::from_millis(50));
    let res = c.read_response().unwrap();
    let took = started.elapsed();
    assert_eq!((res.status(), res.text().as_str()), (408, "request timeout\n"));
    assert_eq!(res.header("connection"), Some("close"));
    assert!(took >= Duration::from_millis(280) && took < Duration::from_secs(2), "{took:?}");
    assert!(c.is_closed_by_peer(Duration::from_secs(2)));
    assert_eq!(backend.requests(), 0, "an incomplete head is never forwarded");
}

#[test]
fn a_request_body_that_stalls_gets_408_after_client_body_ms() {
    let backend = TestBackend::named("a");
    let config = "[timeouts]\nclient_body_ms = 300\nclient_body_min_rate = 0\n";
    let f = start(&backend, config);
    let mut c = Client::connect(f.addr());
    let started = Instant::now();
    c.send_raw(b"POST /upload HTTP/1.1\r\nHost: test\r\nContent-Length: 100\r\n\r\n0123456789")
        .unwrap();
    let res = c.read_response().unwrap();
    let took = started.elapsed();
    assert_eq!((res.status(), res.text().as_str()), (408, "request timeout\n"));
    assert!(took >= Duration::from_millis(280) && took < Duration::from_secs(2), "{took:?}");
    assert!(c.is_closed_by_peer(Duration::from_secs(2)));
    assert!(backend.last_request().is_none(), "the backend never saw a complete request");
    // Once the 408 is published (its worker publishes all counters at once): a gap, not the
    // rate.
    let m = f.metrics_counting(1);
    assert_eq!(m.value("fulcrum_client_body_too_slow_total"), 0.0, "a gap, not the rate");
}

#[test]
fn a_request_body_below_the_minimum_rate_gets_408() {
    let backend = TestBackend::named("a");
    // 5 bytes every 100 ms (50 B/s) stay within the gap timeout but far below 10 000 B/s.
    let config = "[timeouts]\nclient_body_ms = 400\nclient_body_min_rate = 10000\n";
    let f = start(&backend, config);
    let mut c = Client::connect(f.addr());
    let started = Instant::now();
    c.send_raw(b"POST /upload HTTP/1.1\r\nHost: test\r\nContent-Length: 100000\r\n\r\n").unwrap();
    let _slow = dribble(&c, pieces(40, 5), Duration::from_millis(100));
    let res = c.read_response().unwrap();
    let took = started.elapsed();
    assert_eq!((res.status(), res.text().as_str()), (408, "request body too slow\n"));
    // Cut once the grace (client_body_ms) and the 1/rate s each byte bought have run out.
    assert!(took >= Duration::from_millis(380) && took < Duration::from_secs(2), "{took:?}");
    assert!(c.is_closed_by_peer(Duration::from_secs(2)));
    assert!(backend.last_request().is_none(), "the backend never saw a complete request");
    expect_within(Duration::from_secs(5), "fulcrum_client_body_too_slow_total = 1", || {
        f.metric("fulcrum_client_body_too_slow_total") == Some(1.0)
    });
}

#[test]
fn a_request_body_that_keeps_the_minimum_rate_is_forwarded() {
    let backend = TestBackend::named("a");
    // 100 bytes every 50 ms (2 000 B/s) for two seconds, against a minimum of 1 000 B/s that
    // applies after the first 500 ms: the client is always at least 500 ms ahead of the cut,
    // so a client thread starved for a moment on a busy machine is not taken for a slow one.
    let config = "[timeouts]\nclient_body_ms = 500\nclient_body_min_rate = 1000\n";
    let f = start(&backend, config);
    let mut c = Client::connect(f.addr());
    c.send_raw(b"POST /upload HTTP/1.1\r\nHost: test\r\nContent-Length: 4000\r\n\r\n").unwrap();
    let _steady = dribble(&c, pieces(40, 100), Duration::from_millis(50));
    let res = c.read_response().unwrap();
    assert_eq!(res.status(), 200, "{}", res.text());
    assert_eq!(backend.last_request().unwrap().body_len, 4000);
    let m = f.metrics_counting(1);
    assert_eq!(m.value("fulcrum_client_body_too_slow_total"), 0.0);
}

#[test]
fn a_slow_upload_may_outlast_upstream_response_ms() {
    let backend = TestBackend::named("a");
    // The response timeout runs from the end of the request: an upload taking three times
    // longer than it (at 1 000 B/s, well above the minimum rate) is answered, not a 502 or 504.
    // (700 ms, not less: a client thread starved for that long on a busy machine is a gap.)
    let f = start(&backend, "[timeouts]\nupstream_response_ms = 700\n");
    let mut c = Client::connect(f.addr());
    c.send_raw(b"POST /upload HTTP/1.1\r\nHost: test\r\nContent-Length: 2100\r\n\r\n").unwrap();
    let _steady = dribble(&c, pieces(21, 100), Duration::from_millis(100));
    let res = c.read_response().unwrap();
    assert_eq!(res.status(), 200, "{}", res.text());
    assert_eq!(backend.last_request().unwrap().body_len, 2100);
    assert_eq!(c.get("/").unwrap().status(), 200, "the connection stays usable");
}

#[test]
fn an_idle_keep_alive_connection_is_closed_quietly_after_client_idle_ms() {
    let backend = TestBackend::named("a");
    let f = start(&backend, "[timeouts]\nclient_idle_ms = 300\n");
    let mut c = Client::connect(f.addr());
    assert_eq!(c.get("/").unwrap().status(), 200);
    let idle_from = Instant::now();
    // Closed without a byte (a 408 would count as "not closed").
    assert!(c.is_closed_by_peer(Duration::from_secs(3)), "idle connection left open");
    let took = idle_from.elapsed();
    assert!(took >= Duration::from_millis(280) && took < Duration::from_secs(2), "{took:?}");
}

#[test]
fn accept_pauses_at_max_connections_per_worker_and_resumes_when_one_closes() {
    let backend = TestBackend::named("a");
    let f = start(&backend, "[limits]\nmax_connections_per_worker = 2\n");

    // First slot: an HTTP/2 (prior knowledge) connection, answered with the server's SETTINGS.
    let mut h2 = TcpStream::connect(f.addr()).unwrap();
    h2.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    h2.write_all(&[h2frames::PREFACE, &h2frames::settings(&[])].concat()).unwrap();
    let mut frame_head = [0u8; 9];
    h2.read_exact(&mut frame_head).unwrap();
    assert_eq!(frame_head[3], h2frames::SETTINGS, "the server's first frame is SETTINGS");

    // Second slot: an HTTP/1.1 keep-alive connection.
    let mut h1 = Client::connect(f.addr());
    assert_eq!(h1.get("/").unwrap().status(), 200);

    // A third connection completes in the kernel's backlog, but its request is not read.
    let mut third = Client::connect(f.addr());
    third.send("GET", "/", &[], b"").unwrap();
    let cpu_before = f.cpu_ticks();
    assert!(silent_for(&third.writer, Duration::from_millis(300)), "answered beyond the cap");
    // Paused, not spinning: well under the 300 ms of CPU a busy accept loop would burn.
    let spent = f.cpu_ticks() - cpu_before;
    assert!(spent <= 10, "{spent} ticks of CPU while paused");
    assert!(
        f.wait_for_line(Duration::from_secs(2), |l| l.contains("accepting paused")).is_some(),
        "no warning about the paused accept loop"
    );
    assert!(h1.get("/").unwrap().status() == 200, "open connections are still served");

    // Closing the HTTP/2 connection frees a slot: the third connection is served.
    drop(h2);
    let res = third.read_response().unwrap();
    assert_eq!(res.status(), 200);
    expect_within(Duration::from_secs(5), "fulcrum_accept_paused_total >= 1", || {
        f.metric("fulcrum_accept_paused_total").is_some_and(|n| n >= 1.0)
    });
}

#[test]
fn the_last_of_max_requests_per_connection_closes_the_connection() {
    let backend = TestBackend::named("a");
    let f = start(&backend, "[limits]\nmax_requests_per_connection = 3\n");
    let mut c = Client::connect(f.addr());
    for _ in 0..2 {
        let res = c.get("/").unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(res.header("connection"), None, "kept alive before the limit");
    }
    let third = c.get("/").unwrap();
    assert_eq!(third.status(), 200);
    assert_eq!(third.header("connection"), Some("close"));
    assert!(c.is_closed_by_peer(Duration::from_secs(2)), "connection left open after the 3rd");
    // A fourth request needs a new connection.
    let mut fresh = Client::connect(f.addr());
    assert_eq!(fresh.get("/").unwrap().status(), 200);
    assert_eq!(backend.requests(), 4);
}

#[test]
fn check_config_shows_every_client_limit_with_its_default() {
    let dir = TempDir::new("client-limits-defaults");
    let (status, stdout, stderr) = check_config(&dir.write("empty.toml", ""));
    assert!(status.success(), "{stderr}");
    for line in [
        "client_header_ms = 10000",
        "client_idle_ms = 60000",
        "client_body_ms = 60000",
        "client_body_min_rate = 500",
        "max_connections_per_worker = 4096",
        "max_requests_per_connection = 1000",
    ] {
        assert!(stdout.lines().any(|l| l.trim() == line), "missing `{line}` in\n{stdout}");
    }
}
