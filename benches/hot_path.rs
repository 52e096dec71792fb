//! Question: what do the pure per-request steps of the data plane cost on one core — parsing
//! and rewriting a request head, routing it past 20 routes, parsing a response head, decoding a
//! chunked body, and each picker over 8 backends, with equal and with different weights?
//! (End-to-end figures come from `bench.sh`.)
#![allow(missing_docs, clippy::unwrap_used)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use fulcrum::balance::{Algorithm, Candidate, LocalStats, Picker};
use fulcrum::config::RouteConfig;
use fulcrum::http::h1::{self, ChunkedDecoder, ClientSide, Forwarded, Offered};
use fulcrum::model::{RequestFields, RouteRequest, RouteTable, SharedStats};

const REQUEST: &[u8] = b"GET /api/items?id=42 HTTP/1.1\r\nHost: example.test\r\n\
User-Agent: bench/1.0\r\nAccept: */*\r\nAccept-Encoding: gzip\r\nConnection: keep-alive\r\n\
X-Request-Id: 0123456789abcdef\r\n\r\n";

const RESPONSE: &[u8] =
    b"HTTP/1.1 200 OK\r\nServer: nginx\r\nDate: Fri, 27 Nov 2026 18:00:00 GMT\r\n\
Content-Type: application/json\r\nContent-Length: 512\r\nConnection: keep-alive\r\n\r\n";

/// The default `[upgrade] protocols`.
fn upgrades() -> Vec<String> {
    vec!["websocket".to_owned()]
}

fn heads(c: &mut Criterion) {
    let mut out = Vec::with_capacity(1024);
    let upgrades = upgrades();
    c.bench_function("parse+rewrite request head", |b| {
        let client = Forwarded { ip: "127.0.0.1", proto: "http" };
        b.iter(|| h1::parse_request(black_box(REQUEST), 100, &client, &upgrades, &mut out).unwrap())
    });
    let client =
        ClientSide { is_head: false, http10: false, keep_alive: true, upgrade: Offered::NONE };
    c.bench_function("parse+rewrite response head", |b| {
        b.iter(|| {
            h1::parse_response(black_box(RESPONSE), 100, client, &upgrades, &mut out).unwrap()
        })
    });
    let mut chunked = Vec::new();
    for _ in 0..64 {
        chunked.extend_from_slice(b"100\r\n");
        chunked.extend_from_slice(&[b'x'; 256]);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    c.bench_function("decode 16 KiB chunked (64 chunks)", |b| {
        b.iter(|| ChunkedDecoder::default().decode(black_box(&chunked), |_| {}).unwrap())
    });
}

/// An HTTP/1.1 head's fields, as the proxy presents them to the matchers.
struct Fields<'h>(&'h [httparse::Header<'h>]);

impl RequestFields for Fields<'_> {
    fn is_grpc(&self) -> bool {
        false
    }
    fn has(&self, name: &str, value: &[u8]) -> bool {
        self.0.iter().any(|h| h.name.eq_ignore_ascii_case(name) && h.value.trim_ascii() == value)
    }
}

/// The table of `bench.sh`'s routes20 targets: 20 routes the request fails (5 exact hosts,
/// 5 wildcard hosts, 10 path prefixes), then the one it matches.
fn bench_routes() -> RouteTable {
    let route = |host: Option<String>, path: Option<String>| RouteConfig {
        pool: "bench".into(),
        host,
        path_prefix: path,
        ..RouteConfig::default()
    };
    let mut routes = Vec::new();
    for i in 0..5 {
        routes.push(route(Some(format!("svc{i}.bench.internal")), None));
        routes.push(route(Some(format!("*.svc{i}.bench.internal")), None));
    }
    routes.extend((0..10).map(|i| route(None, Some(format!("/svc{i}/api")))));
    routes.push(route(Some("example.test".into()), Some("/".into())));
    RouteTable::compile(routes, &["default", "bench"]).unwrap()
}

fn routing(c: &mut Criterion) {
    let mut out = Vec::with_capacity(1024);
    let upgrades = upgrades();
    let client = Forwarded { ip: "127.0.0.1", proto: "http" };
    for (label, table) in [("no routes", RouteTable::default()), ("21 routes", bench_routes())] {
        c.bench_function(&format!("parse+rewrite+route request head, {label}"), |b| {
            b.iter(|| {
                let parsed = h1::parse_request_with(
                    black_box(REQUEST),
                    100,
                    &client,
                    &upgrades,
                    &mut out,
                    |h| {
                        if table.is_empty() {
                            return 0;
                        }
                        let req = RouteRequest::from_target(h.target.as_bytes(), h.host, None);
                        table.route(&req, &Fields(h.headers)).pool
                    },
                );
                parsed.unwrap()
            })
        });
    }
}

struct B(LocalStats, u32);
impl Candidate for B {
    fn stats(&self) -> &LocalStats {
        &self.0
    }
    fn weight(&self) -> u32 {
        self.1
    }
}

fn pickers(c: &mut Criterion) {
    let shared = SharedStats::new(2);
    let backends: Vec<B> = (0..8)
        .map(|i| B(LocalStats::new(Duration::from_secs(300), shared.writer(0)), i + 1))
        .collect();
    for (i, b) in backends.iter().enumerate() {
        b.0.record_response_time(1, Duration::from_micros(100 + i as u64 * 10));
    }
    let picker = Picker::new(1);
    for algorithm in Algorithm::ALL {
        for (weighted, label) in [(false, ""), (true, " weighted")] {
            c.bench_function(&format!("pick {algorithm} of 8{label}"), |b| {
                b.iter(|| picker.pick(algorithm, weighted, black_box(&backends), |_| false))
            });
        }
    }
}

criterion_group!(benches, heads, routing, pickers);
criterion_main!(benches);
