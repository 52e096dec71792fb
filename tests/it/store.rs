//! Several instances, one configuration: the etcd store (`[store] kind = "etcd"`) with a real etcd
//! on loopback (Debian's etcd-server, one per test on ephemeral ports with a temporary data
//! directory, started by `fulcrum-etcd-testkit`) and real `fulcrum` processes, each in a working
//! directory of its own (where its last-known-good file goes). Each test skips, saying so, only
//! when the etcd binaries are missing. Every wait is on a condition with a deadline.

use std::collections::BTreeMap;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::process::Builder;
use crate::harness::*;

/// The key prefix of the test clusters.
const PREFIX: &str = "/fulcrum/it";
/// The shared document's key.
const KEY: &str = "/fulcrum/it/state";
/// The bound: a change made on one instance is live on all of them within 1 s.
const LIVE_WITHIN: Duration = Duration::from_secs(1);
/// Generous bound for what must happen but is not being measured (a change reaching every
/// instance on a loaded machine, a reconnect after an outage).
const SETTLE: Duration = Duration::from_secs(20);

/// `n` instances (one worker each) of one cluster on `etcd`; the first creates the shared
/// document from its configuration (`seed` as its backends).
fn cluster(etcd: &Etcd, n: usize, seed: &[&TestBackend]) -> Vec<Fulcrum> {
    instance(&etcd.url()).backends(seed.iter().copied()).start_many(n)
}

/// How an instance of the test cluster is started, reaching etcd at `endpoint`.
fn instance(endpoint: &str) -> Builder {
    Fulcrum::builder().workers(1).etcd_store(&[endpoint], PREFIX)
}

/// `GET path` on the admin API with a read token (200 expected).
fn read(f: &Fulcrum, path: &str) -> Value {
    let r = f.admin().get(path, Some(&read_token()));
    r.expect(200, None);
    r.json()
}

/// `GET /api/v1/store`.
fn store(f: &Fulcrum) -> Value {
    read(f, "/api/v1/store")
}

/// The shared revision the instance runs (`GET /api/v1/config`), 0 if none.
fn revision(f: &Fulcrum) -> i64 {
    read(f, "/api/v1/config")["revision"].as_i64().unwrap_or(0)
}

/// The instance's `default` backends: URL to id.
fn backends(f: &Fulcrum) -> BTreeMap<String, u64> {
    read(f, "/api/v1/backends")
        .as_array()
        .unwrap()
        .iter()
        .map(|b| (b["url"].as_str().unwrap().to_owned(), b["id"].as_u64().unwrap()))
        .collect()
}

/// `POST /api/v1/backends {"url": url}`.
fn add(f: &Fulcrum, url: &str) -> Response {
    f.admin().send("POST", "/api/v1/backends", Some(&write_token()), &json!({"url": url}))
}

/// `PUT /api/v1/algorithm`.
fn set_algorithm(f: &Fulcrum, algorithm: &str) -> Response {
    let body = json!({"algorithm": algorithm});
    f.admin().send("PUT", "/api/v1/algorithm", Some(&write_token()), &body)
}

/// Waits until every instance runs at least `revision`.
fn wait_revision(nodes: &[Fulcrum], at_least: i64, within: Duration) {
    for (i, f) in nodes.iter().enumerate() {
        expect_within(within, &format!("instance {i} runs revision {at_least}"), || {
            revision(f) >= at_least
        });
    }
}

/// The shared document as etcd holds it.
fn document(etcd: &Etcd) -> Value {
    serde_json::from_str(&etcd.get(KEY).expect("the document exists")).expect("JSON")
}

#[test]
fn a_change_on_any_instance_is_live_on_every_instance_within_a_second() {
    if !have_etcd() {
        return;
    }
    let etcd = Etcd::start("it-propagation");
    let a = TestBackend::named("a");
    let nodes = cluster(&etcd, 3, &[&a]);

    // The first instance created the document from its configuration; all three run it.
    let created = revision(&nodes[0]);
    assert!(created > 0, "{}", nodes[0].log_text());
    wait_revision(&nodes, created, SETTLE);
    for f in &nodes {
        let s = store(f);
        assert_eq!((s["kind"].as_str(), s["source"].as_str()), (Some("etcd"), Some("etcd")), "{s}");
        assert_eq!(s["connected"], true, "{s}");
        assert_eq!(s["applied_revision"], created, "{s}");
        assert_eq!(s["key"], KEY, "{s}");
        assert_eq!(f.get("/").backend(), "a");
        f.wait_metric("fulcrum_store_revision", |v| v == created as f64);
        f.wait_metric("fulcrum_store_connected", |v| v == 1.0);
    }
    let doc = document(&etcd);
    assert_eq!(
        (doc["version"].as_u64(), doc["backends"][0]["url"].as_str()),
        (Some(1), Some(&*a.url()))
    );
    assert!(doc.get("epoch").is_none(), "epochs are local: {doc}");

    // Changes on each instance in turn, each timed from the call to the revision running on
    // all three (a read of each instance's configuration answers after its workers run it).
    const CHANGES: usize = 30;
    let mut samples = Vec::with_capacity(CHANGES);
    for i in 0..CHANGES {
        let writer = &nodes[i % nodes.len()];
        let start = Instant::now();
        let algorithm = ["random", "least_connections", "round_robin"][i % 3];
        set_algorithm(writer, algorithm).expect(200, None);
        let written = revision(writer);
        for f in &nodes {
            expect_within(SETTLE, "the change on every instance", || revision(f) >= written);
        }
        samples.push(start.elapsed());
        for f in &nodes {
            assert_eq!(read(f, "/api/v1/algorithm")["algorithm"], algorithm);
        }
    }
    let (p50, p99) = percentiles(&mut samples);
    eprintln!(
        "propagation of {CHANGES} admin changes (call on one instance to its revision running on \
         all three): p50 {p50:?} p99 {p99:?}"
    );
    assert!(p99 < LIVE_WITHIN, "p99 {p99:?}");

    // A backend added on the third instance takes requests on the first within the bound.
    let b = TestBackend::named("b");
    let start = Instant::now();
    add(&nodes[2], &b.url()).expect(201, None);
    expect_within(SETTLE, "b serves through the first instance", || {
        nodes[0].get("/").backend() == "b"
    });
    eprintln!("a backend added on one instance served by another after {:?}", start.elapsed());
    assert!(start.elapsed() < LIVE_WITHIN * 2, "{:?}", start.elapsed());
}

#[test]
fn two_instances_adding_different_backends_at_once_both_get_their_own_id() {
    if !have_etcd() {
        return;
    }
    let etcd = Etcd::start("it-concurrent");
    let nodes = cluster(&etcd, 3, &[]);
    let spares: Vec<TestBackend> = (0..10).map(|i| TestBackend::named(&format!("c{i}"))).collect();
    let mut created = BTreeMap::new();
    for pair in spares.chunks(2) {
        let barrier = Barrier::new(2);
        let (r0, r1) = std::thread::scope(|s| {
            let first = s.spawn(|| {
                barrier.wait();
                add(&nodes[0], &pair[0].url())
            });
            let second = s.spawn(|| {
                barrier.wait();
                add(&nodes[1], &pair[1].url())
            });
            (first.join().unwrap(), second.join().unwrap())
        });
        for (r, backend) in [(r0, &pair[0]), (r1, &pair[1])] {
            r.expect(201, None);
            let id = r.json()["id"].as_u64().unwrap();
            assert!(created.insert(backend.url(), id).is_none());
        }
    }
    let mut ids: Vec<u64> = created.values().copied().collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), spares.len(), "every backend has its own id: {created:?}");
    for (i, f) in nodes.iter().enumerate() {
        expect_within(SETTLE, &format!("instance {i} has every backend"), || {
            backends(f) == created
        });
    }
    let conflicts: u64 = nodes.iter().map(|f| store(f)["conflicts"].as_u64().unwrap()).sum();
    eprintln!("compare-and-swaps lost and computed again over 5 simultaneous pairs: {conflicts}");
    let counted: f64 =
        nodes.iter().map(|f| f.metric("fulcrum_store_conflicts_total").unwrap()).sum();
    assert_eq!(counted, conflicts as f64);
}

#[test]
fn the_same_url_added_on_two_instances_at_once_is_one_201_and_one_409() {
    if !have_etcd() {
        return;
    }
    let etcd = Etcd::start("it-duplicate");
    let nodes = cluster(&etcd, 3, &[]);
    for round in 0..3 {
        let backend = TestBackend::named(&format!("dup{round}"));
        let url = backend.url();
        let barrier = Arc::new(Barrier::new(2));
        let answers: Vec<Response> = std::thread::scope(|s| {
            let calls: Vec<_> = nodes[..2]
                .iter()
                .map(|f| {
                    let (barrier, url) = (barrier.clone(), url.clone());
                    s.spawn(move || {
                        barrier.wait();
                        add(f, &url)
                    })
                })
                .collect();
            calls.into_iter().map(|c| c.join().unwrap()).collect()
        });
        let mut statuses: Vec<u16> = answers.iter().map(Response::status).collect();
        statuses.sort_unstable();
        assert_eq!(
            statuses,
            [201, 409],
            "round {round}: {:?}",
            answers.iter().map(Response::text).collect::<Vec<_>>()
        );
        let refused = answers.iter().find(|r| r.status() == 409).unwrap();
        refused.expect(409, Some("duplicate_backend"));
        for f in &nodes {
            expect_within(SETTLE, "one backend with the URL everywhere", || {
                backends(f).keys().filter(|u| **u == url).count() == 1
            });
        }
    }
}

#[test]
fn etcd_killed_and_restarted_under_load_fails_no_request_and_refuses_writes_meanwhile() {
    if !have_etcd() {
        return;
    }
    let mut etcd = Etcd::start("it-outage");
    let a = TestBackend::named("a");
    let b = TestBackend::named("b");
    let nodes = cluster(&etcd, 3, &[&a, &b]);
    let running = revision(&nodes[0]);
    wait_revision(&nodes, running, SETTLE);
    let loads: Vec<Load> = nodes.iter().map(|f| Load::start(f.addr(), 2)).collect();
    for load in &loads {
        load.each_completes(20);
    }

    etcd.kill();
    for f in &nodes {
        expect_within(SETTLE, "the instance sees etcd gone", || store(f)["connected"] == false);
        f.wait_metric("fulcrum_store_connected", |v| v == 0.0);
    }
    // The data plane goes on with the running configuration; writes are refused, reads answer.
    for load in &loads {
        load.each_completes(50);
    }
    for f in &nodes {
        add(f, "http://127.0.0.1:1").expect(503, Some("store_unavailable"));
        set_algorithm(f, "random").expect(503, Some("store_unavailable"));
        let s = store(f);
        assert!(s["last_error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{s}");
        assert_eq!((revision(f), s["applied_revision"].as_i64()), (running, Some(running)));
        assert_eq!(backends(f).len(), 2);
    }
    for load in &loads {
        load.each_completes(50);
    }

    etcd.restart();
    for f in &nodes {
        expect_within(SETTLE, "the instance reconnects", || store(f)["connected"] == true);
    }
    let c = TestBackend::named("c");
    add(&nodes[1], &c.url()).expect(201, None);
    let written = revision(&nodes[1]);
    assert!(written > running);
    wait_revision(&nodes, written, SETTLE);
    for load in &loads {
        load.each_completes(20);
    }
    for (i, load) in loads.into_iter().enumerate() {
        let (total, failures) = load.finish();
        assert!(
            failures.is_empty(),
            "instance {i}: {} of {total} failed: {:?}",
            failures.len(),
            &failures[..failures.len().min(5)]
        );
    }
    for f in &nodes {
        assert!(store(f)["reconnects"].as_u64().unwrap() >= 1);
    }
}

#[test]
fn an_instance_started_while_etcd_is_down_serves_its_last_known_good_state_and_says_so() {
    if !have_etcd() {
        return;
    }
    let mut etcd = Etcd::start("it-lkg");
    let a = TestBackend::named("lkg-a");
    let b = TestBackend::named("lkg-b");
    let dir = TempDir::new("lkg");
    let f = instance(&etcd.url()).workdir(dir.path()).backend(&a).start();
    add(&f, &b.url()).expect(201, None);
    let written = revision(&f);
    // Every applied revision is copied to fulcrum-state.json in the working directory.
    let lkg = dir.join("fulcrum-state.json");
    let saved: Value = serde_json::from_slice(&std::fs::read(&lkg).unwrap()).unwrap();
    assert_eq!(saved["revision"], written, "{saved}");
    assert_eq!(saved["backends"][1]["url"], b.url());
    assert_eq!(store(&f)["state_file"], "fulcrum-state.json");
    assert!(f.stop().success());

    etcd.kill();
    // Its configuration names no backend: what it serves comes from the file.
    let f = instance(&etcd.url()).workdir(dir.path()).start();
    f.wait_log("etcd unreachable at start");
    let s = store(&f);
    assert_eq!(
        (s["source"].as_str(), s["connected"].as_bool()),
        (Some("last_known_good"), Some(false)),
        "{s}"
    );
    assert_eq!(s["applied_revision"], written, "{s}");
    assert_eq!(revision(&f), written);
    let served: std::collections::BTreeSet<String> =
        (0..4).map(|_| f.get("/").backend().to_owned()).collect();
    assert_eq!(served, ["lkg-a".to_owned(), "lkg-b".to_owned()].into());
    add(&f, "http://127.0.0.1:1").expect(503, Some("store_unavailable"));

    // An instance with no last-known-good file serves its configuration, and says so too.
    let c = TestBackend::named("lkg-c");
    let fresh = instance(&etcd.url()).backend(&c).start();
    fresh.wait_log("etcd unreachable at start");
    assert_eq!(store(&fresh)["source"], "configuration");
    assert_eq!(fresh.get("/").backend(), "lkg-c");

    // etcd is back: the first one finds its state current; the fresh one takes the cluster's.
    etcd.restart();
    expect_within(SETTLE, "back on etcd", || store(&f)["source"] == "etcd");
    assert_eq!(revision(&f), written);
    expect_within(SETTLE, "the fresh instance runs the shared state", || {
        revision(&fresh) == written && backends(&fresh).len() == 2
    });
    assert_eq!(store(&fresh)["source"], "etcd");
    expect_within(SETTLE, "the shared backends serve it", || fresh.get("/").backend() != "lkg-c");
}

#[test]
fn an_instance_disconnected_while_etcd_compacted_catches_up() {
    if !have_etcd() {
        return;
    }
    let etcd = Etcd::start("it-compact");
    let proxy = Proxy::start(etcd.client_port);
    let direct = instance(&etcd.url()).start();
    let behind = instance(&proxy.url()).start();
    wait_revision(std::slice::from_ref(&behind), revision(&direct), SETTLE);

    proxy.cut();
    expect_within(SETTLE, "the path to etcd is cut", || store(&behind)["connected"] == false);
    let spares: Vec<TestBackend> = (0..5).map(|i| TestBackend::named(&format!("k{i}"))).collect();
    for backend in &spares {
        add(&direct, &backend.url()).expect(201, None);
    }
    add(&behind, "http://127.0.0.1:1").expect(503, Some("store_unavailable"));
    let compacted = etcd.compact();
    assert!(compacted >= revision(&direct));

    proxy.open();
    expect_within(SETTLE, "the disconnected instance catches up", || {
        revision(&behind) == revision(&direct)
    });
    assert_eq!(backends(&behind), backends(&direct));
    behind.wait_log("etcd compacted revisions this instance had not seen");
    let s = store(&behind);
    assert!(s["connected"] == true && s["reconnects"].as_u64().unwrap() >= 1, "{s}");
    // And it goes on from there, both ways.
    let more = TestBackend::named("k-more");
    add(&behind, &more.url()).expect(201, None);
    wait_revision(std::slice::from_ref(&direct), revision(&behind), SETTLE);
}

#[test]
fn an_invalid_document_written_with_etcdctl_is_refused_and_the_next_change_repairs_it() {
    if !have_etcd() {
        return;
    }
    let etcd = Etcd::start("it-invalid");
    let a = TestBackend::named("ok-a");
    let nodes = cluster(&etcd, 3, &[&a]);
    let running = revision(&nodes[0]);
    wait_revision(&nodes, running, SETTLE);

    for (bad, reason) in [
        ("{not json".to_owned(), "not a state document"),
        (
            json!({"version": 1, "next_backend_id": 1, "routes": [{"pool": "nope"}]}).to_string(),
            "unknown pool",
        ),
    ] {
        etcd.put(KEY, &bad);
        let refused = etcd.revision();
        for (i, f) in nodes.iter().enumerate() {
            expect_within(SETTLE, &format!("instance {i} refuses revision {refused}"), || {
                store(f)["last_refused"]["revision"] == refused
            });
            let s = store(f);
            assert!(s["last_refused"]["reason"].as_str().unwrap().contains(reason), "{s}");
            assert_eq!(s["applied_revision"], running, "{s}");
            assert_eq!(revision(f), running, "the running epoch stays");
            f.wait_metric("fulcrum_store_refused_revision", |v| v == refused as f64);
            f.wait_log("shared state refused");
            assert_eq!(f.get("/").backend(), "ok-a");
        }
    }

    // The next admin change is computed from the last document the instance ran and replaces
    // the refused one.
    let b = TestBackend::named("ok-b");
    add(&nodes[1], &b.url()).expect(201, None);
    let repaired = revision(&nodes[1]);
    wait_revision(&nodes, repaired, SETTLE);
    for f in &nodes {
        assert_eq!(backends(f).len(), 2);
    }
    assert_eq!(document(&etcd)["backends"].as_array().unwrap().len(), 2);
}

#[test]
fn a_cache_purge_on_one_instance_purges_every_instance() {
    if !have_etcd() {
        return;
    }
    let etcd = Etcd::start("it-purge");
    let a = TestBackend::named("cached");
    let nodes = cluster(&etcd, 3, &[&a]);
    let body = json!({"enabled": true});
    nodes[0].admin().send("PUT", "/api/v1/cache", Some(&write_token()), &body).expect(200, None);
    wait_revision(&nodes, revision(&nodes[0]), SETTLE);
    for f in &nodes {
        assert_eq!(read(f, "/api/v1/cache")["enabled"], true);
    }

    // One miss per instance (one worker each), then hits.
    for f in &nodes {
        assert_eq!(f.get("/cached").status(), 200);
    }
    assert_eq!(a.requests(), nodes.len());
    for f in &nodes {
        assert_eq!(f.get("/cached").status(), 200);
    }
    assert_eq!(a.requests(), nodes.len(), "served from each instance's cache");

    let r = nodes[1].admin().send(
        "DELETE",
        "/api/v1/cache/entries",
        Some(&write_token()),
        &json!(null),
    );
    r.expect(200, None);
    wait_revision(&nodes, revision(&nodes[1]), LIVE_WITHIN * 5);
    for f in &nodes {
        assert_eq!(f.get("/cached").status(), 200);
    }
    assert_eq!(a.requests(), 2 * nodes.len(), "every instance missed again after the purge");
    assert!(document(&etcd)["cache_generation"].as_u64().unwrap() >= 1);
}

#[test]
fn the_file_store_reports_itself_and_has_no_shared_revision() {
    let f = Fulcrum::builder().workers(1).start();
    let s = store(&f);
    assert_eq!(
        (s["kind"].as_str(), s["source"].as_str()),
        (Some("file"), Some("configuration")),
        "{s}"
    );
    assert_eq!(
        (s["connected"].as_bool(), s["applied_revision"].is_null()),
        (Some(true), true),
        "{s}"
    );
    let c = read(&f, "/api/v1/config");
    assert!(c["revision"].is_null() && c["store"]["kind"] == "file", "{c}");
    assert!(f.metrics().series("fulcrum_store_").is_empty());
    f.admin().get("/api/v1/store", None).expect(401, Some("invalid_token"));
}
