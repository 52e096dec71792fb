//! Question: which access-log implementation formats and writes a record faster on `lb-log` —
//! Fulcrum's hand-tuned JSON-lines writer or the `tracing`-based one — for a record without a
//! body, with a 1 KiB text body and with a 1 KiB binary (base64) body? The faster one is the
//! default (`telemetry.access_log_format`). Both write to `io::sink()`, so this is formatting
//! cost only. (Worker-side cost, and throughput with logging on, come from
//! `./bench.sh logging`.)
#![allow(missing_docs, clippy::unwrap_used)]

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use fulcrum::telemetry::AccessRecord;
use fulcrum::telemetry::AccessSink;
use fulcrum::telemetry::JsonLinesSink;
use fulcrum::telemetry::TracingSink;

fn record(body: Vec<u8>) -> AccessRecord {
    AccessRecord {
        ts_unix_us: 1_795_000_000_123_456,
        worker: 1,
        epoch: 3,
        method: "POST".into(),
        path: "/api/items?id=42&sort=desc".into(),
        backend_url: "http://127.0.0.1:9001".into(),
        status: 200,
        duration_us: 412,
        upstream_us: 380,
        bytes_in: 1_200,
        bytes_out: 530,
        body_bytes: body.len() as u64,
        body,
        ..Default::default()
    }
}

fn sinks(c: &mut Criterion) {
    let text: Vec<u8> = br#"{"name":"widget","tags":["a","b"],"qty":3}"#.iter().copied().cycle().take(1024).collect();
    let binary: Vec<u8> = (0..1024u32).map(|i| (i * 7 % 256) as u8).collect();
    let cases = [
        ("no body", record(Vec::new())),
        ("1 KiB text", record(text)),
        ("1 KiB binary", record(binary)),
    ];
    for (name, rec) in &cases {
        let mut group = c.benchmark_group(format!("access record, {name}"));
        group.throughput(Throughput::Elements(1));
        let mut json = JsonLinesSink::new(std::io::sink());
        group.bench_function("json_lines (hand-tuned)", |b| {
            b.iter(|| {
                json.write(black_box(rec)).unwrap();
                json.flush().unwrap();
            })
        });
        let mut tracing = TracingSink::new(std::io::sink());
        group.bench_function("tracing", |b| {
            b.iter(|| {
                tracing.write(black_box(rec)).unwrap();
                tracing.flush().unwrap();
            })
        });
        group.finish();
    }
}

criterion_group!(benches, sinks);
criterion_main!(benches);
