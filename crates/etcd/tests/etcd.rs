//! Integration tests against a real etcd (Debian's etcd-server 3.4) on 127.0.0.1. Each test
//! starts its own member on ephemeral ports and skips, saying so, only when the `etcd` binary is
//! missing. Every test is bounded by `BOUND`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::future::Future;
use std::time::Duration;

use fulcrum_etcd::{CasOutcome, Client, Error, Snapshot, Watch, WatchEvent};
use tokio::time::Instant;

use fulcrum_etcd_testkit::{Etcd, Proxy, config_for, have_etcd, percentiles};

/// The most any one test may take.
const BOUND: Duration = Duration::from_secs(90);
/// The most a watch event may take to arrive.
const EVENT_WITHIN: Duration = Duration::from_secs(10);

const PREFIX: &str = "/fulcrum/test";

/// Runs `test` within `BOUND`, or skips it (saying so) when etcd is not installed.
async fn with_etcd<F: Future<Output = ()>>(test: F) {
    if !have_etcd() {
        return;
    }
    tokio::time::timeout(BOUND, test).await.expect("test took longer than its bound");
}

/// A client of `etcd` under `PREFIX`.
fn client_of(etcd: &Etcd) -> Client {
    Client::new(etcd.config(PREFIX)).unwrap()
}

/// A client under `PREFIX` that reaches etcd through `proxy`.
fn client_via(proxy: &Proxy) -> Client {
    Client::new(config_for(&proxy.url(), PREFIX, None)).unwrap()
}

/// A member named `name`, a proxy in front of it, a client straight to it and one through the
/// proxy.
fn behind_proxy(name: &str) -> (Etcd, Proxy, Client, Client) {
    let etcd = Etcd::start(name);
    let proxy = Proxy::start(etcd.client_port);
    let (direct, via_proxy) = (client_of(&etcd), client_via(&proxy));
    (etcd, proxy, direct, via_proxy)
}

/// A watch of `client` from the revision after the current one.
async fn watch_from_now(client: &Client) -> Watch {
    let start = client.get().await.unwrap();
    client.watch(start.header_revision + 1).unwrap()
}

async fn next_event(watch: &mut Watch) -> WatchEvent {
    tokio::time::timeout(EVENT_WITHIN, watch.recv())
        .await
        .expect("no watch event in time")
        .expect("the watch task stopped")
}

/// The next event that is not a `Progress`.
async fn next_change(watch: &mut Watch) -> WatchEvent {
    loop {
        match next_event(watch).await {
            WatchEvent::Progress { .. } => {}
            event => return event,
        }
    }
}

async fn expect_update(watch: &mut Watch) -> (i64, Option<Vec<u8>>) {
    match next_change(watch).await {
        WatchEvent::Update { revision, value } => (revision, value),
        other => panic!("expected an update, got {other:?}"),
    }
}

async fn write(client: &Client, value: &[u8]) -> i64 {
    let current = client.get().await.unwrap();
    match client.put_if(current.mod_revision, value).await.unwrap() {
        CasOutcome::Written { revision } => revision,
        CasOutcome::Conflict { current } => panic!("unexpected conflict with {current:?}"),
    }
}

#[tokio::test]
async fn get_put_round_trip_and_a_value_written_by_hand() {
    with_etcd(async {
        let etcd = Etcd::start("roundtrip");
        let client = client_of(&etcd);
        assert_eq!(client.state_key(), "/fulcrum/test/state");

        let empty = client.get().await.unwrap();
        assert_eq!((empty.value.as_deref(), empty.mod_revision), (None, 0));
        assert!(empty.header_revision >= 1);
        assert!(client.status().get().connected);

        let first = br#"{"version":1,"backends":[]}"#;
        let CasOutcome::Written { revision: r1 } = client.put_if(0, first).await.unwrap() else {
            panic!("the first write must win");
        };
        let read = client.get().await.unwrap();
        assert_eq!(
            read,
            Snapshot { value: Some(first.to_vec()), mod_revision: r1, header_revision: r1 }
        );

        // "Create only" refuses once the document exists, and says what is there.
        match client.put_if(0, b"{}").await.unwrap() {
            CasOutcome::Conflict { current } => {
                assert_eq!(
                    (current.value.as_deref(), current.mod_revision),
                    (Some(&first[..]), r1)
                );
            }
            other => panic!("expected a conflict, got {other:?}"),
        }

        // An operator's `etcdctl put` is seen by a read and by a watch.
        let mut watch = client.watch(read.header_revision + 1).unwrap();
        let by_hand = r#"{"version":1,"by":"hand"}"#;
        etcd.etcdctl(&["put", client.state_key(), by_hand]);
        let (revision, value) = expect_update(&mut watch).await;
        assert!(revision > r1);
        assert_eq!(value.as_deref(), Some(by_hand.as_bytes()));
        let read = client.get().await.unwrap();
        assert_eq!(
            (read.value.as_deref(), read.mod_revision),
            (Some(by_hand.as_bytes()), revision)
        );

        // A deletion by hand is an update to `None`.
        etcd.etcdctl(&["del", client.state_key()]);
        let (deleted_at, value) = expect_update(&mut watch).await;
        assert!(deleted_at > revision && value.is_none());
        assert_eq!(client.get().await.unwrap().value, None);

        // Oversized documents are refused before they are sent.
        let err = client.put_if(0, &vec![b' '; 2 * 1024 * 1024]).await.unwrap_err();
        assert!(matches!(err, Error::TooLarge { .. }) && !err.is_retryable(), "{err}");
    })
    .await;
}

#[tokio::test]
async fn compare_and_swap_lets_exactly_one_of_two_clients_win() {
    with_etcd(async {
        let etcd = Etcd::start("cas");
        let a = client_of(&etcd);
        let b = client_of(&etcd);
        write(&a, b"seed").await;
        for round in 0..20 {
            let (seen_a, seen_b) = tokio::join!(a.get(), b.get());
            let (seen_a, seen_b) = (seen_a.unwrap(), seen_b.unwrap());
            assert_eq!(seen_a.mod_revision, seen_b.mod_revision);
            let (doc_a, doc_b) = (format!("a{round}"), format!("b{round}"));
            let (out_a, out_b) = tokio::join!(
                a.put_if(seen_a.mod_revision, doc_a.as_bytes()),
                b.put_if(seen_b.mod_revision, doc_b.as_bytes())
            );
            let (winner, revision, current) = match (out_a.unwrap(), out_b.unwrap()) {
                (CasOutcome::Written { revision }, CasOutcome::Conflict { current }) => {
                    (&doc_a, revision, current)
                }
                (CasOutcome::Conflict { current }, CasOutcome::Written { revision }) => {
                    (&doc_b, revision, current)
                }
                other => panic!("round {round}: exactly one must win, got {other:?}"),
            };
            // The loser sees the winner's document, at the winner's revision.
            assert_eq!(current.value.as_deref(), Some(winner.as_bytes()), "round {round}");
            assert_eq!(current.mod_revision, revision, "round {round}");
            assert!(revision > seen_a.mod_revision);
        }
    })
    .await;
}

#[tokio::test]
async fn a_write_whose_answer_is_lost_is_settled_by_reading_the_key() {
    with_etcd(async {
        let (_etcd, proxy, direct, writer) = behind_proxy("ambiguous");
        let r0 = write(&direct, b"v0").await;

        // The transaction reaches etcd and commits; its answer is lost. (The writer's first
        // connection is made now, so no earlier one is reset under it.)
        proxy.deafen();
        let (outcome, committed) = tokio::join!(writer.put_if(r0, b"mine"), async {
            let committed = wait_for_change(&direct, r0).await;
            proxy.open();
            committed
        });
        assert_eq!(outcome.unwrap(), CasOutcome::Written { revision: committed });
        let lost = writer.status().get().last_error.expect("the lost answer was an error");
        assert!(matches!(lost.0, Error::Transport { .. }), "{}", lost.0);

        // The transaction never reaches etcd: the read shows the key unchanged, so it is sent
        // again, safely.
        let before = proxy.swallowed();
        proxy.freeze();
        let (outcome, ()) = tokio::join!(writer.put_if(committed, b"mine again"), async {
            while proxy.swallowed() == before {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            proxy.open();
        });
        let CasOutcome::Written { revision } = outcome.unwrap() else { panic!("must be written") };
        let read = direct.get().await.unwrap();
        assert_eq!(
            (read.mod_revision, read.value.as_deref()),
            (revision, Some(&b"mine again"[..]))
        );
        assert_eq!(revision, committed + 1, "written exactly once");
        let second = writer.status().get().last_error.expect("the swallowed request was an error");
        assert!(matches!(second.0, Error::Transport { .. }) && second.1 > lost.1, "{}", second.0);
    })
    .await;
}

/// Polls (a readiness check) until the document's mod_revision moves past `from`.
async fn wait_for_change(client: &Client, from: i64) -> i64 {
    loop {
        let now = client.get().await.unwrap().mod_revision;
        if now != from {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn watch_delivers_another_clients_updates_quickly() {
    with_etcd(async {
        const UPDATES: usize = 100;
        let etcd = Etcd::start("latency");
        let client = client_of(&etcd);
        let mut watch = watch_from_now(&client).await;

        // The writer is another "instance": its own thread, runtime and client. It writes one
        // update, then waits until the watcher has seen it.
        let (sent_tx, sent_rx) = std::sync::mpsc::channel::<(i64, Instant, Duration)>();
        let (seen_tx, seen_rx) = std::sync::mpsc::channel::<()>();
        let config = etcd.config(PREFIX);
        let writer = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(async {
                let client = Client::new(config).unwrap();
                let mut expected = client.get().await.unwrap().mod_revision;
                for i in 0..UPDATES {
                    let at = Instant::now();
                    let doc = format!(r#"{{"update":{i}}}"#);
                    let CasOutcome::Written { revision } =
                        client.put_if(expected, doc.as_bytes()).await.unwrap()
                    else {
                        panic!("the only writer cannot conflict");
                    };
                    sent_tx.send((revision, at, at.elapsed())).unwrap();
                    expected = revision;
                    if seen_rx.recv_timeout(EVENT_WITHIN).is_err() {
                        return;
                    }
                }
            });
        });

        let mut propagation = Vec::with_capacity(UPDATES);
        let mut cas = Vec::with_capacity(UPDATES);
        for i in 0..UPDATES {
            let (revision, value) = expect_update(&mut watch).await;
            let seen_at = Instant::now();
            let (sent_revision, sent_at, cas_took) =
                sent_rx.recv_timeout(EVENT_WITHIN).expect("the writer reports each write");
            assert_eq!(revision, sent_revision, "update {i}: every revision, in order");
            assert_eq!(value.unwrap(), format!(r#"{{"update":{i}}}"#).into_bytes());
            propagation.push(seen_at - sent_at);
            cas.push(cas_took);
            seen_tx.send(()).unwrap();
        }
        writer.join().unwrap();
        let (p50, p99) = percentiles(&mut propagation);
        let (cas50, cas99) = percentiles(&mut cas);
        eprintln!(
            "watch propagation over {UPDATES} updates (write start to watcher): p50 {p50:?} p99 {p99:?}; \
             CAS write: p50 {cas50:?} p99 {cas99:?}"
        );
        assert!(p99 < Duration::from_secs(2), "p99 propagation {p99:?}");
    })
    .await;
}

#[tokio::test]
async fn watch_resumes_after_etcd_is_killed_and_restarted_without_losing_a_revision() {
    with_etcd(async {
        // The watcher reaches etcd through a proxy, so the test decides when it may come back.
        let (mut etcd, proxy, direct, watcher) = behind_proxy("restart");
        let mut watch = watch_from_now(&watcher).await;
        let r1 = write(&direct, b"v1").await;
        assert_eq!(expect_update(&mut watch).await, (r1, Some(b"v1".to_vec())));

        etcd.kill();
        match next_change(&mut watch).await {
            WatchEvent::Disconnected { error } => assert!(error.is_retryable(), "{error}"),
            other => panic!("expected Disconnected, got {other:?}"),
        }
        let status = watcher.status().get();
        assert!(!status.watching && !status.connected && status.last_error.is_some());

        proxy.cut();
        etcd.restart();
        let mut written = Vec::new();
        for doc in [&b"v2"[..], b"v3", b"v4"] {
            written.push((write(&direct, doc).await, Some(doc.to_vec())));
        }
        proxy.open();

        match next_change(&mut watch).await {
            WatchEvent::Reconnected { revision } => assert_eq!(revision, r1 + 1),
            other => panic!("expected Reconnected, got {other:?}"),
        }
        let mut seen = Vec::new();
        for _ in 0..written.len() {
            seen.push(expect_update(&mut watch).await);
        }
        assert_eq!(seen, written, "every revision written while away, once, in order");
        let status = watcher.status().get();
        assert!(status.watching && status.connected && status.reconnects == 1, "{status:?}");
        assert_eq!(status.watch_revision, written[2].0 + 1);
    })
    .await;
}

#[tokio::test]
async fn watch_reports_compaction_while_disconnected_and_the_caller_resyncs() {
    with_etcd(async {
        let (etcd, proxy, direct, watcher) = behind_proxy("compact");
        let mut watch = watch_from_now(&watcher).await;
        let r1 = write(&direct, b"v1").await;
        assert_eq!(expect_update(&mut watch).await.0, r1);

        proxy.cut();
        assert!(matches!(next_change(&mut watch).await, WatchEvent::Disconnected { .. }));
        let mut last = 0;
        for i in 2..=5 {
            last = write(&direct, format!("v{i}").as_bytes()).await;
        }
        let compact_to = etcd.revision();
        etcd.etcdctl(&["compact", &compact_to.to_string()]);
        proxy.open();

        assert!(matches!(next_change(&mut watch).await, WatchEvent::Reconnected { revision } if revision == r1 + 1));
        match next_change(&mut watch).await {
            WatchEvent::Compacted { compact_revision } => assert_eq!(compact_revision, compact_to),
            other => panic!("expected Compacted, got {other:?}"),
        }
        // The watch re-reads the document itself; the caller's own read agrees.
        assert_eq!(expect_update(&mut watch).await, (last, Some(b"v5".to_vec())));
        let fresh = watcher.get().await.unwrap();
        assert_eq!((fresh.mod_revision, fresh.value.as_deref()), (last, Some(&b"v5"[..])));

        // And it goes on from there.
        let r6 = write(&direct, b"v6").await;
        assert_eq!(expect_update(&mut watch).await, (r6, Some(b"v6".to_vec())));

        // A watch asked to start before the compaction point says so too, then catches up.
        let mut late = watcher.watch(r1).unwrap();
        assert!(matches!(next_change(&mut late).await, WatchEvent::Compacted { .. }));
        assert_eq!(expect_update(&mut late).await, (r6, Some(b"v6".to_vec())));
    })
    .await;
}

#[tokio::test]
async fn a_silent_connection_is_detected_by_the_probe_and_the_watch_comes_back() {
    with_etcd(async {
        let (_etcd, proxy, direct, watcher) = behind_proxy("silent");
        let r1 = write(&direct, b"v1").await;
        // From 0: the current document first.
        let mut watch = watcher.watch(0).unwrap();
        assert_eq!(expect_update(&mut watch).await, (r1, Some(b"v1".to_vec())));
        // A quiet, healthy watch proves itself alive.
        match next_event(&mut watch).await {
            WatchEvent::Progress { revision } => assert!(revision >= r1),
            other => panic!("expected Progress, got {other:?}"),
        }

        // No RST, no FIN: only silence. The probe notices.
        let frozen_at = Instant::now();
        proxy.freeze();
        let r2 = write(&direct, b"v2").await;
        match next_change(&mut watch).await {
            WatchEvent::Disconnected { error } => {
                eprintln!("silent path detected after {:?}: {error}", frozen_at.elapsed());
                assert!(error.is_retryable());
            }
            other => panic!("expected Disconnected, got {other:?}"),
        }
        proxy.open();
        assert!(matches!(next_change(&mut watch).await, WatchEvent::Reconnected { revision } if revision == r1 + 1));
        assert_eq!(expect_update(&mut watch).await, (r2, Some(b"v2".to_vec())));
    })
    .await;
}

#[tokio::test]
async fn calls_and_watches_fail_over_to_the_next_endpoint() {
    with_etcd(async {
        let etcd = Etcd::start("failover");
        // A port nobody listens on (bound, then released), before the live member.
        let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let mut config = etcd.config(PREFIX);
        config.endpoints.insert(0, format!("http://{dead}"));
        let client = Client::new(config).unwrap();
        let r1 = write(&client, b"v1").await;
        let mut watch = client.watch(0).unwrap();
        assert_eq!(expect_update(&mut watch).await, (r1, Some(b"v1".to_vec())));
        let r2 = write(&client, b"v2").await;
        assert_eq!(expect_update(&mut watch).await, (r2, Some(b"v2".to_vec())));

        // Nothing listening anywhere: a retryable error within the call's bound.
        let mut config = etcd.config(PREFIX);
        config.endpoints = vec![format!("http://{dead}")];
        let at = Instant::now();
        let err = Client::new(config).unwrap().get().await.unwrap_err();
        assert!(matches!(err, Error::Connect { .. }) && err.is_retryable(), "{err}");
        assert!(at.elapsed() < Duration::from_secs(4), "{:?}", at.elapsed());
    })
    .await;
}

#[tokio::test]
async fn auth_with_a_password_and_token_refresh() {
    with_etcd(async {
        let mut etcd = Etcd::start("auth");
        let proxy = Proxy::start(etcd.client_port);
        let authed = |url: &str, password: &str| {
            let mut config = config_for(url, PREFIX, None);
            config.username = Some("fulcrum".into());
            config.password = Some(password.into());
            Client::new(config).unwrap()
        };
        let client = authed(&etcd.url(), "fulcrum-pw");
        let watcher = authed(&proxy.url(), "fulcrum-pw");

        // Credentials configured before etcd turns auth on: calls go without a token, and the
        // first refusal once auth is on ("user name is empty") makes the client log in.
        assert_eq!(client.get().await.unwrap().value, None);
        etcd.enable_auth(&format!("{PREFIX}/"), "fulcrum-pw");

        let r1 = write(&client, b"v1").await;
        let mut watch = watcher.watch(r1).unwrap();
        assert_eq!(expect_update(&mut watch).await, (r1, Some(b"v1".to_vec())));

        // Wrong password: refused, and retrying will not help.
        let err = authed(&etcd.url(), "wrong").get().await.unwrap_err();
        assert!(matches!(err, Error::Auth(_)) && !err.is_retryable(), "{err}");
        // No credentials at all.
        let err = client_of(&etcd).get().await.unwrap_err();
        assert!(matches!(err, Error::Etcd { .. }) && !err.is_retryable(), "{err}");

        // Invalidate every token etcd issued (simple tokens die with `auth disable`), while
        // the watcher is away; a token fetched by hand shows that they really are gone.
        let stale = raw_token(etcd.client_port, "fulcrum", "fulcrum-pw").await;
        proxy.cut();
        assert!(matches!(next_change(&mut watch).await, WatchEvent::Disconnected { .. }));
        etcd.etcdctl(&["auth", "disable"]);
        etcd.etcdctl(&["auth", "enable"]);
        assert!(raw_range(etcd.client_port, &stale).await.contains("invalid auth token"));

        // Both clients fetch a new token by themselves.
        let r2 = write(&client, b"v2").await;
        proxy.open();
        assert!(matches!(next_change(&mut watch).await, WatchEvent::Reconnected { .. }));
        assert_eq!(expect_update(&mut watch).await, (r2, Some(b"v2".to_vec())));
        assert_eq!(watcher.get().await.unwrap().mod_revision, r2);
    })
    .await;
}

#[tokio::test]
async fn tls_with_a_ca_file_and_a_client_certificate() {
    with_etcd(async {
        let etcd = Etcd::start_tls("tls");
        let config = etcd.config(PREFIX);
        assert!(config.endpoints[0].starts_with("https://"));
        let client = Client::new(config.clone()).unwrap();
        let mut watch = watch_from_now(&client).await;
        let r1 = write(&client, b"over tls").await;
        assert_eq!(expect_update(&mut watch).await, (r1, Some(b"over tls".to_vec())));

        // etcd runs with --client-cert-auth: no client certificate, no connection.
        let mut anonymous = config.clone();
        if let Some(tls) = &mut anonymous.tls {
            tls.cert_file = None;
            tls.key_file = None;
        }
        let err = Client::new(anonymous).unwrap().get().await.unwrap_err();
        assert!(matches!(err, Error::Tls { .. }) && !err.is_retryable(), "{err}");

        // A CA that did not sign etcd's certificate: refused in the handshake.
        let mut wrong_ca = config.clone();
        if let Some(tls) = &mut wrong_ca.tls {
            tls.ca_file = tls.cert_file.clone().unwrap();
        }
        let err = Client::new(wrong_ca).unwrap().get().await.unwrap_err();
        assert!(
            matches!(&err, Error::Tls { reason, .. } if reason.contains("certificate")),
            "{err}"
        );
        eprintln!("TLS refusals: {err}");

        // A missing file fails at construction, not at the first call.
        let mut missing = config;
        if let Some(tls) = &mut missing.tls {
            tls.ca_file = "/nonexistent/ca.pem".into();
        }
        assert!(matches!(Client::new(missing).unwrap_err(), Error::Config(_)));
    })
    .await;
}

/// A token fetched outside the client (to prove later that etcd forgot it).
async fn raw_token(port: u16, name: &str, password: &str) -> String {
    let body = format!(r#"{{"name":"{name}","password":"{password}"}}"#);
    let answer = raw_post(port, "/v3/auth/authenticate", None, &body).await;
    let json: serde_json::Value = serde_json::from_str(&answer).unwrap();
    json["token"].as_str().unwrap().to_owned()
}

async fn raw_range(port: u16, token: &str) -> String {
    raw_post(port, "/v3/kv/range", Some(token), r#"{"key":"L2Z1bGNydW0vdGVzdC9zdGF0ZQ=="}"#).await
}

/// One HTTP/1.1 POST with `Connection: close`; returns the body.
async fn raw_post(port: u16, path: &str, token: Option<&str>, body: &str) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let auth = token.map(|t| format!("Authorization: {t}\r\n")).unwrap_or_default();
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n{auth}\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    // The JSON object, whatever the framing (etcd answers errors chunked, with trailers).
    let (start, end) = (answer.find('{').unwrap(), answer.rfind('}').unwrap());
    answer[start..=end].to_owned()
}
