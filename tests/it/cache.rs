//! The response cache end to end: the real binary with a `[cache]` config, a scripted backend
//! that numbers its responses (a hit repeats the number, a miss gets a new one), raw HTTP/1.1
//! clients, and the admin API. Waits are readiness checks with deadlines; the only sleeps are
//! TTL waits, which are the behaviour under test.

use std::io::Read;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use crate::harness::backend::{RawRequest, Then};
use crate::harness::http1::PatternCheck;
use crate::harness::tls::{BOTH, HttpsClient, Pki, client_config};
use crate::harness::*;
use serde_json::{Value, json};

const DEADLINE: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------------
// A scripted backend: every response carries `x-serial: N` and `serial=N` in its body, N
// counting the requests it answered. Request headers `x-resp-h-<name>: v` become response
// headers `<name>: v`; `x-resp-size` pads the body; `x-resp-chunked: 1` sends it chunked;
// `x-resp-delay-ms` waits before answering; `x-resp-status` sets the status.

fn backend() -> RawBackend {
    let serial = AtomicUsize::new(0);
    RawBackend::new(move |req| {
        (scripted(req, serial.fetch_add(1, Ordering::SeqCst) + 1), Then::KeepAlive)
    })
}

#[allow(clippy::disallowed_methods)] // a slow backend is backend behaviour, not synchronisation
fn scripted(req: &RawRequest, serial: usize) -> Vec<u8> {
    let (method, path) = (req.method(), req.target());
    if let Some(ms) = req.header("x-resp-delay-ms").and_then(|v| v.parse().ok()) {
        std::thread::sleep(Duration::from_millis(ms));
    }
    let status = req.header("x-resp-status").unwrap_or("200");
    let mut payload = format!(
        "serial={serial} method={method} path={path} body={}",
        String::from_utf8_lossy(&req.body)
    )
    .into_bytes();
    if let Some(size) = req.header("x-resp-size").and_then(|v| v.parse::<usize>().ok()) {
        let mut i = 0u8;
        while payload.len() < size {
            payload.push(b'a' + i % 26);
            i = i.wrapping_add(1);
        }
    }
    let mut head = format!("HTTP/1.1 {status} Whatever\r\ncontent-type: text/plain\r\n");
    head.push_str(&format!("x-serial: {serial}\r\n"));
    for (k, v) in &req.head.headers {
        if let Some(name) = k.to_ascii_lowercase().strip_prefix("x-resp-h-") {
            head.push_str(&format!("{name}: {v}\r\n"));
        }
    }
    let mut out = head.into_bytes();
    if req.header("x-resp-chunked") == Some("1") {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n\r\n");
        if method != "HEAD" {
            for c in payload.chunks(1000) {
                out.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
                out.extend_from_slice(c);
                out.extend_from_slice(b"\r\n");
            }
            out.extend_from_slice(b"0\r\n\r\n");
        }
    } else {
        out.extend_from_slice(format!("content-length: {}\r\n\r\n", payload.len()).as_bytes());
        if method != "HEAD" && !status.starts_with("204") {
            out.extend_from_slice(&payload);
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// What a cache test reads off a response.

trait Cached {
    /// The `x-cache` header (`none` without one).
    fn x_cache(&self) -> &str;
    /// The backend's serial number of the response.
    fn serial(&self) -> u64;
    /// The status line and the header fields without `age`, `x-cache` and `connection`.
    fn stable_head(&self) -> ([String; 3], Vec<(String, String)>);
}

impl Cached for Response {
    fn x_cache(&self) -> &str {
        self.header("x-cache").unwrap_or("none")
    }
    fn serial(&self) -> u64 {
        self.header("x-serial").and_then(|v| v.parse().ok()).unwrap_or(0)
    }
    fn stable_head(&self) -> ([String; 3], Vec<(String, String)>) {
        let stable =
            |n: &str| !matches!(n.to_ascii_lowercase().as_str(), "age" | "x-cache" | "connection");
        let headers = self.head.headers.iter().filter(|(n, _)| stable(n)).cloned().collect();
        (self.head.start.clone(), headers)
    }
}

/// A keep-alive client connection whose requests must be answered.
struct Conn(Client);

impl Conn {
    fn open(addr: SocketAddr) -> Conn {
        Conn(Client::connect(addr))
    }

    fn send(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Response {
        self.0.request(method, path, headers, body).unwrap()
    }

    fn get(&mut self, path: &str, headers: &[(&str, &str)]) -> Response {
        self.send("GET", path, headers, b"")
    }
}

// ---------------------------------------------------------------------------------------------
// The balancer process.

/// Starts with `[cache]` set to `cache` (TOML lines), `workers` workers and one backend.
fn start(cache: &str, workers: usize, backend: &RawBackend) -> Fulcrum {
    Fulcrum::builder()
        .workers(workers)
        .backend(backend)
        .config(&format!("[cache]\n{cache}"))
        .start()
}

fn admin_call(f: &Fulcrum, method: &str, path: &str, body: Option<Value>) -> Response {
    let t = write_token();
    match body {
        Some(b) => f.admin().send(method, path, Some(&t), &b),
        None => f.admin().request(method, path, Some(&t), &[], None),
    }
}

fn cache_view(f: &Fulcrum) -> Value {
    admin_call(f, "GET", "/api/v1/cache", None).expect(200, None).json()
}

fn wait_until(what: &str, cond: impl FnMut() -> bool) {
    expect_within(DEADLINE, what, cond);
}

/// Asserts a miss then a hit of the same response; returns the serial.
fn miss_then_hit(c: &mut Conn, send: &mut dyn FnMut(&mut Conn) -> Response, what: &str) -> u64 {
    let first = send(c);
    assert_eq!(first.status(), 200, "{what}");
    assert_eq!(first.x_cache(), "MISS", "{what}: first");
    let second = send(c);
    assert_eq!(second.x_cache(), "HIT", "{what}: second");
    assert_eq!(second.serial(), first.serial(), "{what}: served from the cache");
    assert_eq!(second.body, first.body, "{what}");
    first.serial()
}

// ---------------------------------------------------------------------------------------------

const BASE: &[(&str, &str)] = &[("accept", "text/plain"), ("x-tenant", "a")];

#[test]
fn each_key_component_separates_entries() {
    let b = backend();
    let f = start("enabled = true", 1, &b);
    let mut c = Conn::open(f.addr());
    let base = BASE;
    let s0 = miss_then_hit(&mut c, &mut |c| c.send("POST", "/k?x=1", base, b"{\"q\":1}"), "base");
    // Header order and name case do not matter.
    let shuffled: &[(&str, &str)] = &[("X-TENANT", "a"), ("Accept", "text/plain")];
    let r = c.send("POST", "/k?x=1", shuffled, b"{\"q\":1}");
    assert_eq!((r.x_cache(), r.serial()), ("HIT", s0), "reordered headers");

    let mut seen = vec![s0];
    let variants: Vec<Variant> = vec![
        ("path", Box::new(|c: &mut Conn| c.send("POST", "/j?x=1", base, b"{\"q\":1}"))),
        ("query", Box::new(|c: &mut Conn| c.send("POST", "/k?x=2", base, b"{\"q\":1}"))),
        (
            "header value",
            Box::new(|c: &mut Conn| {
                c.send(
                    "POST",
                    "/k?x=1",
                    &[("accept", "text/plain"), ("x-tenant", "b")],
                    b"{\"q\":1}",
                )
            }),
        ),
        (
            "header added",
            Box::new(|c: &mut Conn| {
                let h = [("accept", "text/plain"), ("x-tenant", "a"), ("x-extra", "1")];
                c.send("POST", "/k?x=1", &h, b"{\"q\":1}")
            }),
        ),
        ("body byte", Box::new(|c: &mut Conn| c.send("POST", "/k?x=1", base, b"{\"q\":2}"))),
        ("method", Box::new(|c: &mut Conn| c.send("GET", "/k?x=1", base, b""))),
    ];
    for (what, mut send) in variants {
        let s = miss_then_hit(&mut c, &mut *send, what);
        assert!(!seen.contains(&s), "{what}: a new entry");
        seen.push(s);
    }
    // HEAD is its own entry too, and a hit for it has no body.
    let h1 = c.send("HEAD", "/k?x=1", base, b"");
    let h2 = c.send("HEAD", "/k?x=1", base, b"");
    assert_eq!((h1.x_cache(), h2.x_cache()), ("MISS", "HIT"));
    assert_eq!(h1.serial(), h2.serial());
    assert!(h2.raw_body.is_empty());
    // The base entry is still there.
    let r = c.send("POST", "/k?x=1", base, b"{\"q\":1}");
    assert_eq!((r.x_cache(), r.serial()), ("HIT", s0));
    assert_eq!(b.requests(), 8);
}

#[test]
fn hits_replay_the_stored_response_byte_for_byte() {
    let b = backend();
    let f = start("enabled = true", 1, &b);
    let mut c = Conn::open(f.addr());
    for (path, extra) in [
        ("/sized", vec![("x-resp-size", "3000")]),
        ("/chunked", vec![("x-resp-size", "4500"), ("x-resp-chunked", "1")]),
        ("/headers", vec![("x-resp-h-x-multi", "one"), ("x-resp-h-etag", "\"v1\"")]),
        ("/upstream-age", vec![("x-resp-h-age", "7"), ("x-resp-h-x-cache", "upstream")]),
    ] {
        let miss = c.get(path, &extra);
        let hit = c.get(path, &extra);
        assert_eq!((miss.x_cache(), hit.x_cache()), ("MISS", "HIT"), "{path}");
        assert_eq!(hit.status(), miss.status());
        assert_eq!(hit.stable_head(), miss.stable_head(), "{path}: headers");
        assert_eq!(hit.raw_body, miss.raw_body, "{path}: body bytes");
        let age: u64 = hit.header("age").unwrap().parse().unwrap();
        assert_eq!(hit.head.all("x-cache").len(), 1);
        if path == "/upstream-age" {
            assert!(age >= 7, "upstream Age is carried: {age}");
        } else {
            assert!(age <= 2, "{age}");
        }
    }
    let chunked = c.get("/chunked", &[("x-resp-size", "4500"), ("x-resp-chunked", "1")]);
    assert_eq!(chunked.header("transfer-encoding"), Some("chunked"));
    assert_eq!(chunked.body.len(), 4500);
    // Connection is hop-by-hop (not in the key); `close` is honoured on a hit.
    let r = c.get("/sized", &[("x-resp-size", "3000"), ("connection", "close")]);
    assert_eq!(r.x_cache(), "HIT");
    assert_eq!(r.header("connection"), Some("close"));
    let mut rest = Vec::new();
    assert_eq!(c.0.reader.read_to_end(&mut rest).unwrap(), 0, "closed after the hit");
}

/// Whether `body` is exactly `len` bytes of the test backend's pattern.
fn is_pattern(body: &[u8], len: u64) -> bool {
    let mut check = PatternCheck::default();
    check.feed(body);
    check.ok(len)
}

#[test]
fn hits_of_every_size_arrive_whole_in_cleartext_and_over_tls() {
    // A hit leaves as the head and the stored body in one gathered write: an empty body, one
    // byte, the benchmark's 16 KiB, and bodies larger than a socket takes at once (the write
    // comes back short and resumes mid-body), each byte for byte, on both listeners.
    let pki = Pki::new("cache-hits");
    let server = pki.issue("server", &["fulcrum.test"]);
    let backend = TestBackend::named("b1");
    // One worker: both connections meet the same shard.
    let f = Fulcrum::builder()
        .workers(1)
        .backend(&backend)
        .tls_listener(&[&server])
        .config("[cache]\nenabled = true\nmax_object_bytes = 8388608")
        .start();
    let config = client_config(&[&pki], &["http/1.1"], BOTH);
    let mut plain = Conn::open(f.addr());
    let mut tls = HttpsClient::connect(f.tls_addr(), &config, "fulcrum.test").unwrap();
    for len in [0u64, 1, 16 * 1024, 1 << 20, 6 << 20] {
        let path = format!("/large/{len}");
        let upstream = backend.requests();
        let miss = plain.get(&path, &[]);
        assert_eq!((miss.status(), miss.x_cache()), (200, "MISS"), "{path}");
        for (side, hit) in [
            ("cleartext", plain.get(&path, &[])),
            ("TLS", tls.get(&path).unwrap()),
            ("cleartext again", plain.get(&path, &[])),
        ] {
            assert_eq!((hit.status(), hit.x_cache()), (200, "HIT"), "{path} {side}");
            assert_eq!(hit.stable_head(), miss.stable_head(), "{path} {side}: headers");
            assert!(is_pattern(&hit.body, len), "{path} {side}: {} bytes", hit.body.len());
        }
        assert_eq!(backend.requests(), upstream + 1, "{path}: one trip upstream");
    }
}

/// Waits for a freshness lifetime to run out: the behaviour under test, not synchronisation.
#[allow(clippy::disallowed_methods)]
fn let_expire(d: Duration) {
    std::thread::sleep(d);
}

/// The variants of a base request, each expected to be its own entry.
type Variant = (&'static str, Box<dyn FnMut(&mut Conn) -> Response>);

#[test]
fn ttl_expiry_and_max_age() {
    let b = backend();
    let f = start("enabled = true\nttl_ms = 1000", 1, &b);
    let mut c = Conn::open(f.addr());
    let s = miss_then_hit(&mut c, &mut |c| c.get("/ttl", &[]), "ttl");
    let_expire(Duration::from_millis(1200));
    let r = c.get("/ttl", &[]);
    assert_eq!(r.x_cache(), "MISS", "expired after ttl_ms");
    assert_ne!(r.serial(), s);

    // max-age below the TTL is honoured; above it is capped (tested at the unit level).
    let g = backend();
    let f = start("enabled = true\nttl_ms = 60000", 1, &g);
    let mut c = Conn::open(f.addr());
    let h: &[(&str, &str)] = &[("x-resp-h-cache-control", "max-age=1")];
    let s = miss_then_hit(&mut c, &mut |c| c.get("/maxage", h), "max-age");
    let long: &[(&str, &str)] = &[("x-resp-h-cache-control", "public, max-age=30")];
    let l = miss_then_hit(&mut c, &mut |c| c.get("/long", long), "long max-age");
    let_expire(Duration::from_millis(1200));
    let r = c.get("/maxage", h);
    assert_eq!(r.x_cache(), "MISS", "expired after max-age");
    assert_ne!(r.serial(), s);
    let r = c.get("/long", long);
    assert_eq!((r.x_cache(), r.serial()), ("HIT", l), "still fresh");
    let r = c.get("/zero", &[("x-resp-h-cache-control", "max-age=0")]);
    let r2 = c.get("/zero", &[("x-resp-h-cache-control", "max-age=0")]);
    assert_eq!((r.x_cache(), r2.x_cache()), ("MISS", "MISS"));
}

#[test]
fn unstorable_responses_and_ineligible_requests() {
    let b = backend();
    let f = start("enabled = true\nmethods = [\"GET\", \"HEAD\", \"POST\"]", 1, &b);
    let mut c = Conn::open(f.addr());
    for (what, h) in [
        ("no-store", ("x-resp-h-cache-control", "no-store")),
        ("private", ("x-resp-h-cache-control", "private, max-age=60")),
        ("set-cookie", ("x-resp-h-set-cookie", "session=1")),
    ] {
        let a = c.get("/u", &[h]);
        let b2 = c.get("/u", &[h]);
        assert_eq!((a.x_cache(), b2.x_cache()), ("MISS", "MISS"), "{what}");
        assert_ne!(a.serial(), b2.serial(), "{what}: both from the backend");
    }
    let a = c.get("/status", &[("x-resp-status", "500")]);
    let b2 = c.get("/status", &[("x-resp-status", "500")]);
    assert_ne!(a.serial(), b2.serial(), "500 is not in statuses");
    // Ineligible requests bypass.
    let r = c.send("PUT", "/p", &[], b"x");
    assert_eq!(r.x_cache(), "BYPASS", "method");
    let r = c.get("/p", &[("cache-control", "no-cache")]);
    assert_eq!(r.x_cache(), "BYPASS", "request no-cache");
    let r = c.send("POST", "/p", &[("content-type", "application/grpc")], b"x");
    assert_eq!(r.x_cache(), "BYPASS", "grpc");
    // A request no-cache does not touch a stored entry.
    let s = miss_then_hit(&mut c, &mut |c| c.get("/p", &[]), "plain");
    let r = c.get("/p", &[("pragma", "no-cache")]);
    assert_eq!(r.x_cache(), "BYPASS");
    let r = c.get("/p", &[]);
    assert_eq!((r.x_cache(), r.serial()), ("HIT", s));
}

#[test]
fn oversize_bodies_pass_through_uncached() {
    let b = backend();
    let f = start("enabled = true\nmax_object_bytes = 65536", 1, &b);
    let mut c = Conn::open(f.addr());
    for extra in
        [vec![("x-resp-size", "200000")], vec![("x-resp-size", "200000"), ("x-resp-chunked", "1")]]
    {
        let a = c.get("/big", &extra);
        let b2 = c.get("/big", &extra);
        assert_eq!(a.body.len(), 200_000);
        assert_eq!(b2.body.len(), 200_000);
        assert_eq!(&a.body[20..], &b2.body[20..], "delivered intact");
        assert_eq!((a.x_cache(), b2.x_cache()), ("MISS", "MISS"));
        assert_ne!(a.serial(), b2.serial(), "not stored");
    }
    // Just under the limit is stored.
    miss_then_hit(&mut c, &mut |c| c.get("/fits", &[("x-resp-size", "60000")]), "fits");
    // A request body larger than the client buffer bypasses (it cannot be keyed in hand).
    let big = vec![b'b'; 40_000];
    let r = c.send("POST", "/upload", &[], &big);
    assert_eq!(r.x_cache(), "BYPASS");
    assert_eq!(r.status(), 200);
}

#[test]
fn admin_toggles_reconfigures_and_purges_under_traffic() {
    let b = backend();
    // Each traffic thread keeps one connection for as long as the test runs, which can be past
    // the default `max_requests_per_connection` (1000).
    let config = "enabled = true\n[limits]\nmax_requests_per_connection = 0";
    let f = start(config, 2, &b);
    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicUsize::new(0));
    let mut traffic = Vec::new();
    for t in 0..4 {
        let (stop, served, addr) = (stop.clone(), served.clone(), f.addr());
        traffic.push(std::thread::spawn(move || {
            let mut c = Conn::open(addr);
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let path = format!("/bg/{t}/{}", i % 16);
                let r = c.get(&path, &[("x-resp-size", "2048")]);
                assert_eq!(r.status(), 200);
                assert_eq!(r.body.len(), 2048);
                assert!(String::from_utf8_lossy(&r.body).contains(&format!("path={path} ")));
                served.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
        }));
    }
    let progress = |n: usize| {
        let start = served.load(Ordering::Relaxed);
        wait_until("traffic", || served.load(Ordering::Relaxed) >= start + n);
    };
    progress(200);
    let v = cache_view(&f);
    assert_eq!(v["enabled"], true);
    assert!(v["entries"].as_u64().unwrap() > 0 && v["hits"].as_u64().unwrap() > 0, "{v}");
    assert!(v["bytes"].as_u64().unwrap() > 0 && v["misses"].as_u64().unwrap() > 0, "{v}");

    // Off: no X-Cache, every request upstream, memory freed.
    let r = admin_call(&f, "PUT", "/api/v1/cache", Some(json!({"enabled": false})));
    assert_eq!(r.status(), 200, "{}", r.text());
    assert_eq!(r.json()["enabled"], false);
    assert!(r.header("fulcrum-epoch").is_some());
    let v = cache_view(&f);
    assert_eq!(
        (v["enabled"].as_bool(), v["entries"].as_u64(), v["bytes"].as_u64()),
        (Some(false), Some(0), Some(0)),
        "{v}"
    );
    let mut c = Conn::open(f.addr());
    let before = b.requests();
    let r1 = c.get("/dedicated", &[]);
    let r2 = c.get("/dedicated", &[]);
    assert_eq!((r1.header("x-cache"), r2.header("x-cache")), (None, None));
    assert_ne!(r1.serial(), r2.serial());
    assert!(b.requests() >= before + 2);
    progress(100);

    // On again: starts empty, with new settings.
    let r = admin_call(
        &f,
        "PUT",
        "/api/v1/cache",
        Some(
            json!({"enabled": true, "ttl_ms": 30000, "max_bytes": 8388608, "methods": ["GET", "HEAD"]}),
        ),
    );
    assert_eq!(r.status(), 200, "{}", r.text());
    let applied = r.json();
    assert_eq!(applied["ttl_ms"], 30000);
    assert_eq!(applied["methods"], json!(["GET", "HEAD"]));
    assert!(applied["epoch"].as_u64().is_some());
    let v = cache_view(&f);
    assert_eq!((v["enabled"].as_bool(), v["max_bytes"].as_u64()), (Some(true), Some(8388608)));
    assert_eq!(v["max_object_bytes"], 1048576, "untouched fields keep their value");
    let s = miss_then_hit(&mut c, &mut |c| c.get("/dedicated", &[]), "re-enabled");
    let r = c.send("POST", "/dedicated", &[], b"x");
    assert_eq!(r.x_cache(), "BYPASS", "POST no longer in methods");
    progress(100);

    // Purge: answers after every worker cleared; the next lookup misses.
    let r = admin_call(&f, "DELETE", "/api/v1/cache/entries", None);
    assert_eq!(r.status(), 200, "{}", r.text());
    let epoch = r.json()["epoch"].as_u64().unwrap();
    assert_eq!(r.header("fulcrum-epoch"), Some(epoch.to_string().as_str()));
    let r = c.get("/dedicated", &[]);
    assert_eq!(r.x_cache(), "MISS");
    assert_ne!(r.serial(), s);
    let r = c.get("/dedicated", &[]);
    assert_eq!(r.x_cache(), "HIT");
    progress(100);

    // Invalid settings are refused and change nothing.
    let r = admin_call(&f, "PUT", "/api/v1/cache", Some(json!({"ttl_ms": 0})));
    assert_eq!(r.status(), 400, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "invalid_cache");
    let r = admin_call(&f, "PUT", "/api/v1/cache", Some(json!({"ttl": 5})));
    assert_eq!(r.status(), 400, "unknown field");
    assert_eq!(cache_view(&f)["ttl_ms"], 30000);

    stop.store(true, Ordering::Relaxed);
    for t in traffic {
        t.join().expect("traffic thread saw a wrong answer");
    }
    // The workers' published counters saw both hits and misses.
    let m = f.wait_metric("fulcrum_cache_hits_total", |n| n > 0.0);
    assert!(m.value("fulcrum_cache_misses_total") > 0.0, "{m:?}");
    assert!(f.lines().iter().all(|l| !l.contains("panicked")));
}

#[test]
fn memory_stays_bounded_under_a_flood_of_distinct_keys() {
    let b = backend();
    // 8 MiB over 2 workers; 12 000 distinct 16 KiB responses would be ~190 MiB unbounded.
    // 2 000 requests per connection: past the default `max_requests_per_connection`.
    let config = "enabled = true\nmax_bytes = 8388608\n[limits]\nmax_requests_per_connection = 0";
    let f = start(config, 2, &b);
    let mut warm = Conn::open(f.addr());
    for i in 0..200 {
        warm.get(&format!("/warm/{i}"), &[("x-resp-size", "16384")]);
    }
    let base = f.rss_kib();
    let threads: Vec<_> = (0..6)
        .map(|t| {
            let addr = f.addr();
            std::thread::spawn(move || {
                let mut c = Conn::open(addr);
                for i in 0..2000 {
                    let r = c.get(&format!("/flood/{t}/{i}"), &[("x-resp-size", "16384")]);
                    assert_eq!((r.status(), r.body.len()), (200, 16384));
                }
            })
        })
        .collect();
    let mut peak = base;
    wait_until("the flood", || {
        peak = peak.max(f.rss_kib());
        threads.iter().all(|t| t.is_finished())
    });
    for t in threads {
        t.join().unwrap();
    }
    peak = peak.max(f.rss_kib());
    let v = cache_view(&f);
    assert!(v["bytes"].as_u64().unwrap() <= 8 << 20, "{v}");
    assert!(v["entries"].as_u64().unwrap() > 100, "{v}");
    let growth_mib = (peak.saturating_sub(base)) / 1024;
    eprintln!("RSS base {base} KiB, peak {peak} KiB, cache {v}");
    assert!(growth_mib < 40, "RSS grew {growth_mib} MiB (base {base} KiB, peak {peak} KiB)");
}

#[test]
fn a_stampede_of_identical_misses_makes_one_upstream_request() {
    let b = backend();
    let f = start("enabled = true", 1, &b);
    let n = 100;
    let barrier = Arc::new(Barrier::new(n));
    let threads: Vec<_> = (0..n)
        .map(|_| {
            let (barrier, addr) = (barrier.clone(), f.addr());
            std::thread::spawn(move || {
                let mut c = Conn::open(addr);
                barrier.wait();
                c.get("/stampede", &[("x-resp-delay-ms", "500"), ("x-resp-size", "1000")])
            })
        })
        .collect();
    let replies: Vec<Response> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert_eq!(b.requests(), 1, "one upstream request");
    let serial = replies[0].serial();
    assert!(replies.iter().all(|r| r.status() == 200 && r.serial() == serial));
    assert!(replies.iter().all(|r| r.body == replies[0].body));
    let misses = replies.iter().filter(|r| r.x_cache() == "MISS").count();
    let hits = replies.iter().filter(|r| r.x_cache() == "HIT").count();
    assert_eq!((misses, hits), (1, n - 1));
}
