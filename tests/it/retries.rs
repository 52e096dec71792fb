//! Retries against real failing backends: a connect failure is retried for any method; a reset
//! or close before any response byte only for idempotent methods; `retries.max_attempts` bounds
//! the tries and an empty retry budget allows none. One worker, so the per-worker round-robin
//! order and budget are deterministic.

use std::net::SocketAddr;
use std::time::Duration;

use crate::harness::h2client::h2_request_blocking;
use crate::harness::h2frames::Refuse;
use crate::harness::*;

/// One worker over `backends`, with `config`.
fn start(config: &str, backends: &[String]) -> Fulcrum {
    Fulcrum::builder().workers(1).backends(backends).config(config).start()
}

/// One request with a small body on its own connection.
fn send(addr: SocketAddr, method: &str) -> Response {
    let body: &[u8] = if matches!(method, "POST" | "PUT") { b"payload" } else { b"" };
    Client::connect(addr).request(method, "/x", &[("Connection", "close")], body).unwrap()
}

#[test]
fn idempotent_methods_are_retried_after_a_reset_or_close() {
    for failure in [Failure::Reset, Failure::Close] {
        let bad = TestBackend::builder().name("bad").failing(failure).spawn();
        let good = TestBackend::named("good");
        let f = start("", &[bad.url(), good.url()]);
        for method in ["GET", "PUT", "DELETE", "GET", "OPTIONS", "PUT"] {
            let r = send(f.addr(), method);
            assert_eq!(r.status(), 200, "{failure:?} {method}: {}", r.text());
            assert_eq!(r.backend(), "good", "{failure:?} {method}");
        }
        // Round robin sends every request to `bad` first (the retry moves the cursor on).
        assert!(bad.requests() >= 3, "{failure:?}: bad saw {}", bad.requests());
        assert_eq!(good.requests(), 6, "{failure:?}: each request reached good once");
        f.wait_metric("fulcrum_retries_total{reason=\"reset\"}", |n| n >= 3.0);
    }
}

#[test]
fn a_post_that_was_sent_is_never_sent_again() {
    let bad = TestBackend::builder().name("bad").failing(Failure::Reset).spawn();
    let good = TestBackend::named("good");
    let f = start("", &[bad.url(), good.url()]);
    let statuses: Vec<u16> = (0..4).map(|_| send(f.addr(), "POST").status()).collect();
    let failed = statuses.iter().filter(|s| **s == 502).count();
    let ok = statuses.iter().filter(|s| **s == 200).count();
    assert_eq!(failed + ok, 4, "{statuses:?}");
    assert!(failed >= 1, "round robin sends some POSTs to the resetting backend: {statuses:?}");
    // Every POST reached exactly one backend: the failed ones `bad`, the others `good`.
    assert_eq!(bad.requests(), failed, "{statuses:?}");
    assert_eq!(good.requests(), ok, "{statuses:?}");
    // Counted once all four are published: none was retried.
    let m = f.metrics_counting(4);
    assert_eq!(m.value("fulcrum_retries_total{reason=\"reset\"}"), 0.0);
}

#[test]
fn a_connect_failure_is_retried_for_any_method() {
    let good = TestBackend::named("good");
    let f = start("", &[dead_port_url(), good.url()]);
    for method in ["POST", "POST", "GET", "POST"] {
        let r = send(f.addr(), method);
        assert_eq!(r.status(), 200, "{method}: {}", r.text());
        assert_eq!(r.backend(), "good");
    }
    assert_eq!(good.requests(), 4, "each request once");
    f.wait_metric("fulcrum_retries_total{reason=\"connect\"}", |n| n >= 1.0);
}

#[test]
fn max_attempts_bounds_the_tries() {
    let bad: Vec<TestBackend> = (0..4)
        .map(|i| TestBackend::builder().name(&format!("bad{i}")).failing(Failure::Reset).spawn())
        .collect();
    let urls: Vec<String> = bad.iter().map(TestBackend::url).collect();
    let f = start("[retries]\nmax_attempts = 3\nbudget_min_per_sec = 1000\n", &urls);
    let r = send(f.addr(), "GET");
    assert_eq!(r.status(), 502, "{}", r.text());
    let arrivals: usize = bad.iter().map(TestBackend::requests).sum();
    assert_eq!(arrivals, 3, "three tries in all");
    assert!(bad.iter().all(|b| b.requests() <= 1), "each try on another backend");

    let f = start("[retries]\nmax_attempts = 1\n", &urls);
    assert_eq!(send(f.addr(), "GET").status(), 502);
    assert_eq!(bad.iter().map(TestBackend::requests).sum::<usize>(), 4, "one more try only");
}

#[test]
fn an_empty_budget_allows_no_retry() {
    let no_budget = "[retries]\nbudget_ratio = 0.0\nbudget_min_per_sec = 0\n";
    let bad = TestBackend::builder().name("bad").failing(Failure::Reset).spawn();
    let good = TestBackend::named("good");
    let f = start(no_budget, &[bad.url(), good.url()]);
    // Round robin over two backends: one of two requests goes to `bad`, and is not retried.
    let statuses: Vec<u16> = (0..2).map(|_| send(f.addr(), "GET").status()).collect();
    assert_eq!(statuses.iter().filter(|s| **s == 502).count(), 1, "{statuses:?}");
    assert_eq!((bad.requests(), good.requests()), (1, 1));
    let m = f.metrics_counting(2);
    assert_eq!(m.value("fulcrum_retry_budget_exhausted_total"), 1.0);
    assert_eq!(m.value("fulcrum_retries_total{reason=\"reset\"}"), 0.0);
    drop(f);

    // A connect failure keeps its own answer, 503.
    let f = start(no_budget, &[dead_port_url(), good.url()]);
    let statuses: Vec<u16> = (0..2).map(|_| send(f.addr(), "GET").status()).collect();
    assert!(statuses.contains(&503) && statuses.contains(&200), "{statuses:?}");
}

#[test]
fn an_upstream_timeout_is_not_retried() {
    let slow = TestBackend::builder().name("slow").delay(Duration::from_secs(5)).spawn();
    let good = TestBackend::named("good");
    // 1 s: the good backend answers well within it even on a loaded machine.
    let f = start("[timeouts]\nupstream_response_ms = 1000\n", &[slow.url(), good.url()]);
    let statuses: Vec<u16> = (0..2).map(|_| send(f.addr(), "GET").status()).collect();
    assert!(statuses.contains(&504) && statuses.contains(&200), "{statuses:?}");
    assert_eq!((slow.requests(), good.requests()), (1, 1), "{statuses:?}");
}

/// A pooled connection that the backend closed while it sat idle is known to be closed without
/// a probe (a read stays armed on it while it is pooled): a POST, which must never be sent
/// twice, goes out on a new connection and reaches the backend exactly once. On both io
/// drivers; tests/it/tls.rs has the same over TLS.
#[test]
fn a_post_does_not_land_on_a_pooled_connection_the_backend_closed() {
    const POSTS: usize = 5;
    for driver in ["io_uring", "epoll"] {
        let backend = TestBackend::named("b");
        let f = Fulcrum::builder().workers(1).backend(backend.url()).io_driver(driver).start();
        let mut client = Client::connect(f.addr());
        for i in 1..=POSTS {
            // `/oneshot` answers keep-alive, then the backend closes the connection Fulcrum pooled.
            assert_eq!(client.get("/oneshot").unwrap().status(), 200, "{driver}");
            expect_within(Duration::from_secs(5), "backend closed its side", || {
                backend.closed_connections() == i
            });
            let r = client.request("POST", "/x", &[], b"payload").unwrap();
            assert_eq!(r.status(), 200, "{driver}, POST {i}: {}", r.text());
        }
        // Each POST reached the backend once, on a new connection (the GET after it reused that
        // one, and the backend closed it).
        assert_eq!((backend.requests(), backend.connections()), (2 * POSTS, POSTS + 1), "{driver}");
        // None was sent on a closed connection and retried: no stale retry once all are counted.
        let m = f.metrics_counting(2 * POSTS as u64);
        assert_eq!(m.value("fulcrum_retries_total{reason=\"stale\"}"), 0.0, "{driver}");
    }
}

/// Sends one HTTP/2 (h2c prior knowledge) request with a small body on its own connection;
/// returns the status.
fn h2_request(addr: SocketAddr, method: &str) -> u16 {
    h2_request_blocking(addr, method, "/x", b"payload").status
}

#[test]
fn http2_requests_to_http1_backends_are_retried_only_after_a_connect_failure() {
    let good = TestBackend::named("good");
    let f = start("", &[dead_port_url(), good.url()]);
    for _ in 0..2 {
        assert_eq!(h2_request(f.addr(), "POST"), 200);
    }
    assert_eq!(good.requests(), 2);
    drop(f);

    // Its body streams as it arrives, so a request that was sent is never sent again.
    let bad = TestBackend::builder().name("bad").failing(Failure::Reset).spawn();
    let f = start("", &[bad.url(), good.url()]);
    let mut statuses: Vec<u16> = (0..2).map(|_| h2_request(f.addr(), "PUT")).collect();
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 502], "round robin: one each to bad and good");
    assert_eq!((bad.requests(), good.requests()), (1, 3));
}

/// An h2c backend that refused a stream (REFUSED_STREAM, or GOAWAY below its id) did not act
/// on it: the call is sent again while Fulcrum still holds it, answered, and counted as a
/// `refused` retry.
#[test]
fn an_h2c_stream_the_backend_refused_is_retried() {
    for how in [Refuse::RstStream, Refuse::GoAway] {
        let backend = RawH2Backend::builder().name("h2").refuse_first(how).spawn();
        let f = start("", &[backend.url()]);
        let a = h2_request_blocking(f.addr(), "GET", "/x", b"");
        assert_eq!((a.status, a.body.as_slice()), (200, &b"h2"[..]), "{how:?}");
        // Two streams reached the backend: the refused one and the retry.
        assert_eq!(
            (backend.streams(), backend.refused(), backend.answered()),
            (2, 1, 1),
            "{how:?}"
        );
        let m = f.metrics_counting(1);
        assert_eq!(m.value("fulcrum_retries_total{reason=\"refused\"}"), 1.0, "{how:?}");
    }
}
