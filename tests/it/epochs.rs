//! Control-plane changes (epochs) against a running data plane, in process via `fulcrum::start`,
//! with real backends and real HTTP/1.1 clients on loopback.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::time::{Duration, Instant};

use crate::harness::*;
use fulcrum::config::Algorithm;
use fulcrum::config::{BackendConfig, Config, DEFAULT_POOL};
use fulcrum::control::{BackendId, Change};

const WORKERS: usize = 2;

fn start(backends: &[&TestBackend]) -> fulcrum::Running {
    quiet_in_process_logs();
    let config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        admin_listen: "127.0.0.1:0".parse().unwrap(),
        workers: WORKERS,
        io_driver: test_io_driver().parse().unwrap(),
        algorithm: Algorithm::RoundRobin,
        backends: backends.iter().map(|b| BackendConfig::new(b.url())).collect(),
        // The access log would write to the test runner's stdout.
        telemetry: fulcrum::config::TelemetryConfig {
            access_log: Some("off".to_owned()),
            ..Default::default()
        },
        ..Config::default()
    };
    let running = fulcrum::start(config).expect("fulcrum starts");
    assert_eq!(running.drivers.len(), WORKERS);
    running
}

fn id_of(running: &fulcrum::Running, backend: &TestBackend) -> BackendId {
    let view = running.control().snapshot().unwrap();
    view.backends.iter().find(|b| b.url == backend.url()).expect("backend in snapshot").id
}

#[test]
fn epoch_changes_under_load_fail_no_request() {
    let seq = Arc::new(AtomicU64::new(0));
    let a = TestBackend::builder().name("a").sequence(&seq).spawn();
    let b = TestBackend::builder().name("b").sequence(&seq).spawn();
    let c = TestBackend::builder().name("c").sequence(&seq).spawn();
    let running = start(&[&a, &b]);
    let ctl = running.control();
    let t0 = Instant::now();
    let load = Load::start(running.listen, 4);
    expect_within(Duration::from_secs(10), "warm-up traffic", || load.total() >= 200);

    // Add c: under round robin it is picked within a couple of requests per worker.
    let added = ctl.apply(add_backend(c.url())).unwrap();
    let at_add = seq.load(SeqCst);
    assert_eq!(added.epoch, 2);
    let c_view = added.backend.expect("the new backend");
    assert_eq!(c_view.url, c.url());
    load.each_completes(4);
    let c_first = *c.arrivals().first().expect("added backend got requests");
    // At most the 4 requests in flight at the add, plus two picks per worker before c's turn.
    assert!(
        c_first < at_add + 4 + 2 * WORKERS as u64 + 2,
        "c's first request was arrival {c_first}, the add returned at arrival {at_add}"
    );

    // Switch algorithms twice under load.
    assert_eq!(ctl.apply(set_algorithm(Algorithm::LeastConnections)).unwrap().epoch, 3);
    load.each_completes(20);
    assert_eq!(ctl.apply(set_algorithm(Algorithm::Random)).unwrap().epoch, 4);
    load.each_completes(20);

    // Remove b: once the requests in flight when the removal returned are done (one per client
    // thread at most), b gets nothing more. (Counted after the change returns: until every
    // worker has acknowledged it, b is still a candidate.)
    assert_eq!(ctl.apply(remove_backend(id_of(&running, &b))).unwrap().epoch, 5);
    let b_at_removal = b.requests();
    load.each_completes(2);
    let b_after = b.requests();
    assert!(b_after <= b_at_removal + 4, "b got {} requests after removal", b_after - b_at_removal);
    let total_after = load.total();
    expect_within(Duration::from_secs(10), "load after removal", || {
        load.total() >= total_after + 400 && t0.elapsed() >= Duration::from_secs(2)
    });
    assert_eq!(b.requests(), b_after, "removed backend b still receives requests");

    let (total, failures) = load.finish();
    assert!(
        failures.is_empty(),
        "{} of {total} requests failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(10)]
    );
    let view = ctl.snapshot().unwrap();
    assert_eq!(view.epoch, 5);
    assert_eq!(view.algorithm, Algorithm::Random);
    let urls: Vec<&str> = view.backends.iter().map(|b| b.url.as_str()).collect();
    assert_eq!(urls, [a.url(), c.url()]);
    assert_eq!(
        a.requests() + b.requests() + c.requests(),
        total,
        "every request reached a backend once"
    );
    running.shutdown();
}

#[test]
fn a_removed_backends_in_flight_request_completes() {
    let a = TestBackend::named("a");
    let b = TestBackend::named("b");
    let running = start(&[&a, &b]);
    let addr = running.listen;
    b.hold();
    let held = std::thread::spawn(move || {
        // Round robin alternates; retry until the request lands on (and is held by) b.
        loop {
            let r = get_once(addr, "/hold").unwrap();
            if r.status() != 200 || r.backend() == "b" {
                return r;
            }
        }
    });
    expect_within(Duration::from_secs(10), "request held by b", || b.in_flight() == 1);
    let b_id = id_of(&running, &b);
    expect_within(Duration::from_secs(5), "snapshot shows b in flight", || {
        let view = running.control().snapshot().unwrap();
        view.backends.iter().any(|v| v.id == b_id && v.stats.in_flight == 1)
    });

    let t = Instant::now();
    running.control().apply(remove_backend(b_id)).unwrap();
    assert!(t.elapsed() < Duration::from_secs(2), "removal waited for the in-flight request");
    let b_requests = b.requests();
    let mut client = Client::connect(addr);
    for _ in 0..10 {
        let r = client.get("/").unwrap();
        assert_eq!((r.status(), r.backend()), (200, "a"));
    }
    assert!(!held.is_finished(), "the held request must still be in flight");

    b.release();
    let r = held.join().unwrap();
    assert_eq!((r.status(), r.backend(), r.text().as_str()), (200, "b", "b"));
    assert_eq!(b.requests(), b_requests, "removed backend got new requests");
    assert_eq!(client.get("/").unwrap().backend(), "a");
    running.shutdown();
}

#[test]
fn an_added_backend_gets_the_very_next_request_when_the_other_is_removed() {
    let a = TestBackend::named("a");
    let b = TestBackend::named("b");
    let running = start(&[&a]);
    let ctl = running.control();
    let mut kept = Client::connect(running.listen);
    assert_eq!(kept.get("/").unwrap().backend(), "a");

    let added = ctl.apply(add_backend(b.url())).unwrap();
    let b_id = added.backend.unwrap().id;
    ctl.apply(remove_backend(id_of(&running, &a))).unwrap();
    let a_requests = a.requests();

    let r = kept.get("/").unwrap();
    assert_eq!(
        (r.status(), r.backend()),
        (200, "b"),
        "the next request on a kept-alive connection"
    );
    let r = get_once(running.listen, "/").unwrap();
    assert_eq!((r.status(), r.backend()), (200, "b"), "the next request on a new connection");
    assert_eq!(a.requests(), a_requests);
    let view = ctl.snapshot().unwrap();
    assert_eq!(view.backends.iter().map(|v| v.id).collect::<Vec<_>>(), [b_id]);

    // Removing an unknown id and adding a duplicate are refused without a new epoch.
    let epoch = view.epoch;
    assert!(ctl.apply(remove_backend(9999)).is_err());
    assert!(ctl.apply(add_backend(b.url())).is_err());
    assert_eq!(ctl.snapshot().unwrap().epoch, epoch);
    running.shutdown();
}

/// Adds a backend to the `default` pool with weight 1.
fn add_backend(url: String) -> Change {
    Change::AddPoolBackend { pool: DEFAULT_POOL.into(), url, weight: 1 }
}

/// Removes a backend from the `default` pool.
fn remove_backend(id: BackendId) -> Change {
    Change::RemovePoolBackend { pool: DEFAULT_POOL.into(), id }
}

/// Switches the `default` pool's algorithm.
fn set_algorithm(algorithm: Algorithm) -> Change {
    Change::SetPoolAlgorithm { pool: DEFAULT_POOL.into(), algorithm }
}
