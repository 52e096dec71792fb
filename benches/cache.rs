//! Question: what does the response cache's core cost a worker per request — computing the
//! SHA-256 key of a typical GET and of a 1 KiB POST, a lookup hit (with rendering the hit's
//! head), and an insert into a full shard (which must evict)? These bound the cache's share of
//! the CPU per hit that `bench.sh` compares against nginx's `proxy_cache` (about 27 us).
#![allow(missing_docs, clippy::unwrap_used)]

use std::hint::black_box;
use std::rc::Rc;
use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use fulcrum::cache::{CacheKey, CacheShard, CachedResponse, KeyBuilder};

const GET_HEADERS: &[(&str, &str)] = &[
    ("Host", "example.test"),
    ("User-Agent", "bench/1.0"),
    ("Accept", "*/*"),
    ("Accept-Encoding", "gzip"),
    ("Connection", "keep-alive"),
    ("X-Request-Id", "0123456789abcdef"),
];

const POST_HEADERS: &[(&str, &str)] = &[
    ("Host", "example.test"),
    ("User-Agent", "bench/1.0"),
    ("Content-Type", "application/json"),
    ("Content-Length", "1024"),
    ("Accept", "application/json"),
    ("Authorization", "Bearer eyJhbGciOiJIUzI1NiJ9.e30.sig"),
];

const HEAD: &[u8] = b"HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Type: application/json\r\n\
Content-Length: 1024\r\n";

fn headers(
    h: &'static [(&'static str, &'static str)],
) -> impl Iterator<Item = (&'static str, &'static [u8])> {
    h.iter().map(|(n, v)| (*n, v.as_bytes()))
}

fn key_of(n: u64) -> CacheKey {
    let mut b = [0u8; 32];
    b[..8].copy_from_slice(&n.to_le_bytes());
    CacheKey::from_bytes(b)
}

fn keys(c: &mut Criterion) {
    let mut kb = KeyBuilder::new();
    let ignore = vec!["x-request-id".to_owned()];
    c.bench_function("cache key: GET, 6 headers", |b| {
        b.iter(|| {
            kb.compute(
                black_box("GET"),
                black_box("/api/items?id=42"),
                headers(GET_HEADERS),
                b"",
                &ignore,
            )
        })
    });
    let body: Vec<u8> =
        br#"{"query":"widgets","tags":["a","b"]}"#.iter().copied().cycle().take(1024).collect();
    let mut g = c.benchmark_group("cache key");
    g.throughput(Throughput::Bytes(body.len() as u64));
    g.bench_function("POST, 6 headers, 1 KiB body", |b| {
        b.iter(|| kb.compute("POST", "/api/search", headers(POST_HEADERS), black_box(&body), &[]))
    });
    g.finish();
}

fn shard(c: &mut Criterion) {
    let now = Instant::now();
    let body = vec![b'x'; 1024];
    let response =
        |at| Rc::new(CachedResponse::new(HEAD, body.clone(), at, Duration::from_secs(3600)));

    // A shard of 64 MiB holding ~50k 1 KiB responses; look one of them up and render the head.
    let mut s = CacheShard::new(64 << 20);
    let mut n = 0;
    while s.bytes() + CacheShard::entry_cost(HEAD.len(), body.len()) <= s.budget() {
        s.insert(key_of(n), response(now));
        n += 1;
    }
    let mut out = Vec::with_capacity(512);
    let mut i = 0u64;
    c.bench_function("cache lookup hit + render head", |b| {
        b.iter(|| {
            i = (i + 7919) % n;
            let hit = s.get(black_box(&key_of(i)), now).unwrap();
            out.clear();
            hit.render_head(now, false, &mut out);
            black_box(&out);
        })
    });

    // Insert into a full shard: every insert evicts (SIEVE hand) one entry.
    let mut next = n;
    c.bench_function("cache insert 1 KiB at budget (evicts)", |b| {
        b.iter_batched(
            || {
                next += 1;
                (key_of(next), response(now))
            },
            |(k, r)| s.insert(k, r),
            BatchSize::SmallInput,
        )
    });
}

criterion_group!(benches, keys, shard);
criterion_main!(benches);
