//! `pool.max_connections_per_backend` with its bounded wait queue, against a real backend that
//! holds requests: a request beyond the cap waits for a connection and then succeeds, one more
//! than the queue holds is answered 503 at once, and a wait longer than
//! `pool.queue_timeout_ms` is answered 503. One worker, so the per-worker cap is the cap.

use std::net::SocketAddr;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::harness::*;

/// One worker in front of `backend`, with `pool` as its `[pool]` section.
fn start(pool: &str, backend: &TestBackend) -> Fulcrum {
    Fulcrum::builder().workers(1).backend(backend).config(&format!("[pool]\n{pool}")).start()
}

/// `GET /hold` on its own keep-alive connection, answered on a thread.
fn hold_request(addr: SocketAddr) -> JoinHandle<Response> {
    std::thread::spawn(move || Client::connect(addr).get("/hold").unwrap())
}

fn gauge(f: &Fulcrum, name: &str, backend: &TestBackend) -> Option<f64> {
    f.metric(&format!("{name}{{pool=\"default\",backend=\"{}\"}}", backend.url()))
}

#[test]
fn a_request_beyond_the_cap_waits_and_one_beyond_the_queue_gets_503() {
    let backend = TestBackend::named("held");
    backend.hold();
    let f = start("max_connections_per_backend = 1\nqueue_size = 1\n", &backend);

    let first = hold_request(f.addr());
    expect_within(Duration::from_secs(5), "first request at the backend", || {
        backend.in_flight() == 1
    });
    let second = hold_request(f.addr());
    expect_within(Duration::from_secs(5), "second request queued", || {
        gauge(&f, "fulcrum_backend_queued_requests", &backend) == Some(1.0)
    });
    // The queue is full: the third is answered at once, without reaching the backend.
    let started = Instant::now();
    let third = Client::connect(f.addr()).get("/hold").unwrap();
    assert_eq!(third.status(), 503, "{}", third.text());
    assert_eq!(third.text(), "backend at its connection limit\n");
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    assert_eq!(backend.requests(), 1);

    backend.release();
    for (name, handle) in [("first", first), ("second", second)] {
        let r = handle.join().unwrap();
        assert_eq!(r.status(), 200, "{name}: {}", r.text());
    }
    // The second reused the first one's connection: the cap held throughout.
    assert_eq!((backend.requests(), backend.connections()), (2, 1));
    expect_within(Duration::from_secs(5), "rejection counted", || {
        f.metric("fulcrum_upstream_queue_rejected_total{reason=\"full\"}") == Some(1.0)
    });
    expect_within(Duration::from_secs(5), "one open connection", || {
        gauge(&f, "fulcrum_backend_open_connections", &backend) == Some(1.0)
            && gauge(&f, "fulcrum_backend_queued_requests", &backend) == Some(0.0)
    });
}

#[test]
fn a_queued_request_gets_503_after_the_queue_timeout() {
    let backend = TestBackend::named("held");
    backend.hold();
    let f = start(
        "max_connections_per_backend = 1\nqueue_size = 4\nqueue_timeout_ms = 300\n",
        &backend,
    );
    let first = hold_request(f.addr());
    expect_within(Duration::from_secs(5), "first request at the backend", || {
        backend.in_flight() == 1
    });
    let started = Instant::now();
    let r = Client::connect(f.addr()).get("/x").unwrap();
    let waited = started.elapsed();
    assert_eq!(r.status(), 503, "{}", r.text());
    assert!(waited >= Duration::from_millis(250), "answered after {waited:?}");
    assert!(waited < Duration::from_secs(3), "answered after {waited:?}");
    expect_within(Duration::from_secs(5), "timeout counted", || {
        f.metric("fulcrum_upstream_queue_rejected_total{reason=\"timeout\"}") == Some(1.0)
    });

    // The timed-out waiter left no trace: once the connection is free, requests flow again.
    backend.release();
    assert_eq!(first.join().unwrap().status(), 200);
    let r = Client::connect(f.addr()).get("/x").unwrap();
    assert_eq!(r.status(), 200, "{}", r.text());
    assert_eq!(backend.connections(), 1);
}

#[test]
fn without_a_cap_connections_are_not_limited() {
    let backend = TestBackend::named("held");
    backend.hold();
    let f = start("queue_size = 0\n", &backend);
    let held: Vec<_> = (0..3).map(|_| hold_request(f.addr())).collect();
    expect_within(Duration::from_secs(5), "three requests at the backend", || {
        backend.in_flight() == 3
    });
    backend.release();
    for h in held {
        assert_eq!(h.join().unwrap().status(), 200);
    }
}

#[test]
fn check_config_shows_and_validates_the_new_keys() {
    let dir = TempDir::new("limits-check-config");
    let empty = dir.write("empty.toml", "");
    let (status, stdout, stderr) = check_config(&empty);
    assert!(status.success(), "{stderr}");
    let pool = stdout.split("[pool]").nth(1).expect("a [pool] table");
    let pool = pool.split("\n[").next().unwrap();
    for want in ["max_connections_per_backend = 0", "queue_size = 128", "queue_timeout_ms = 3000"] {
        assert!(pool.contains(want), "missing {want:?} in [pool]:{pool}");
    }
    let retries = stdout.split("[retries]").nth(1).expect("a [retries] table");
    for want in ["max_attempts = 3", "budget_ratio = 0.2", "budget_min_per_sec = 10"] {
        assert!(retries.contains(want), "missing {want:?} in [retries]:{retries}");
    }
    for (bad, key) in [
        ("[pool]\nqueue_timeout_ms = 0\n", "pool.queue_timeout_ms"),
        ("[retries]\nmax_attempts = 0\n", "retries.max_attempts"),
    ] {
        let file = dir.write("bad.toml", bad);
        let (status, _, stderr) = check_config(&file);
        assert_eq!(status.code(), Some(1), "{bad}");
        assert!(stderr.starts_with(&format!("error: invalid `{key}`:")), "{stderr}");
    }
}

#[test]
fn queued_requests_are_all_served_through_the_capped_connections() {
    let backend = TestBackend::named("held");
    backend.hold();
    let f = start("max_connections_per_backend = 2\nqueue_size = 8\n", &backend);
    let mut handles: Vec<_> = (0..2).map(|_| hold_request(f.addr())).collect();
    expect_within(Duration::from_secs(5), "two requests at the backend", || {
        backend.in_flight() == 2
    });
    handles.extend((0..5).map(|_| hold_request(f.addr())));
    expect_within(Duration::from_secs(5), "five requests queued", || {
        gauge(&f, "fulcrum_backend_queued_requests", &backend) == Some(5.0)
    });
    backend.release();
    for h in handles {
        let r = h.join().unwrap();
        assert_eq!(r.status(), 200, "{}", r.text());
    }
    assert_eq!(backend.requests(), 7);
    assert!(backend.connections() <= 2, "{} connections", backend.connections());
}

#[test]
fn a_full_queue_sends_the_request_to_another_backend() {
    let (a, b) = (TestBackend::named("a"), TestBackend::named("b"));
    a.hold();
    b.hold();
    let f = Fulcrum::builder()
        .workers(1)
        .backends([&a, &b])
        .config("[pool]\nmax_connections_per_backend = 1\nqueue_size = 0")
        .start();
    // One held request on each backend fills both caps.
    let held: Vec<_> = (0..2).map(|_| hold_request(f.addr())).collect();
    expect_within(Duration::from_secs(5), "one request at each backend", || {
        a.in_flight() == 1 && b.in_flight() == 1
    });
    let r = Client::connect(f.addr()).get("/x").unwrap();
    assert_eq!(r.status(), 503, "both full: {}", r.text());
    // `b` frees its connection; requests that round robin sends to the full `a` go to `b`.
    b.release();
    expect_within(Duration::from_secs(5), "b answered", || b.in_flight() == 0);
    for i in 0..3 {
        let r = Client::connect(f.addr()).get("/x").unwrap();
        assert_eq!((r.status(), r.backend()), (200, "b"), "request {i}: {}", r.text());
    }
    assert_eq!(a.requests(), 1);
    a.release();
    for h in held {
        assert_eq!(h.join().unwrap().status(), 200);
    }
}

#[test]
fn the_admin_api_shows_the_settings() {
    let lb = Fulcrum::builder()
        .config(
            "[pool]\nmax_connections_per_backend = 4\nqueue_size = 2\nqueue_timeout_ms = 250\n\
             [retries]\nmax_attempts = 2\nbudget_ratio = 0.5\nbudget_min_per_sec = 1",
        )
        .start();
    let c = lb.admin().get("/api/v1/config", Some(&read_token())).expect(200, None).json();
    assert_eq!(c["limits"]["pool_max_connections_per_backend"], 4, "{c}");
    assert_eq!(c["limits"]["pool_queue_size"], 2, "{c}");
    assert_eq!(c["limits"]["pool_queue_timeout_ms"], 250, "{c}");
    let retries = &c["retries"];
    assert_eq!(retries["max_attempts"], 2, "{c}");
    assert_eq!(retries["budget_ratio"], 0.5, "{c}");
    assert_eq!(retries["budget_min_per_sec"], 1, "{c}");
}
