//! Question: what does HPACK cost the proxy per gRPC head with fulcrum-h2 — encoding and
//! decoding a typical unary request head (`:method POST`, `:scheme http`, `:path`,
//! `:authority`, `content-type: application/grpc`, `te: trailers`, `grpc-timeout`,
//! `user-agent`), the response head and the trailers — beside a reference implementation
//! (`loona-hpack`, the maintained fork of the `hpack` crate; hyperium h2's HPACK is private)?
//!
//! Decoding is measured on three encodings of the request: ours (raw literals, static names),
//! Huffman-coded literals (what most peers send for new values), and the steady state of a
//! peer with a dynamic table (every field a one-byte index, as h2 and grpc-go send a
//! connection's later requests). Each decode walks every field, borrowing (no copy to owned
//! buffers on either side). The reference encoder keeps a dynamic table, but indexes only
//! fields whose name is not in the static table (here `te` and `grpc-timeout`), so in its
//! steady state those two are one byte each.
//!
//! `HPACK_BENCH_ITERS=<case>:<n>` runs one case n times without criterion (`list` names the
//! cases), for counting
//! instructions under valgrind (`benches/hpack_instructions.sh`), which the shared machine's
//! noise does not disturb.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::hint::black_box;

use criterion::Criterion;
use fulcrum_h2::hpack::{Decoder, Encoder};

type Head = &'static [(&'static [u8], &'static [u8])];

const REQUEST: Head = &[
    (b":method", b"POST"),
    (b":scheme", b"http"),
    (b":path", b"/helloworld.Greeter/SayHello"),
    (b":authority", b"backend.internal:50051"),
    (b"content-type", b"application/grpc"),
    (b"te", b"trailers"),
    (b"grpc-timeout", b"1000m"),
    (b"user-agent", b"grpc-go/1.70.0"),
];

const RESPONSE: Head = &[(b":status", b"200"), (b"content-type", b"application/grpc")];

const TRAILERS: Head = &[(b"grpc-status", b"0"), (b"grpc-message", b"OK")];

const HEADS: [(&str, Head); 3] =
    [("request", REQUEST), ("response", RESPONSE), ("trailers", TRAILERS)];

fn encode_ours(enc: &mut Encoder, head: Head, out: &mut Vec<u8>) {
    for &(name, value) in head {
        enc.encode(name, value, out);
    }
}

/// Decodes with ours and touches every field; returns the bytes seen.
fn decode_ours(d: &mut Decoder, block: &[u8]) -> usize {
    let fields = d.decode(block).unwrap();
    fields.iter().map(|f| f.name.len() + f.value.len()).sum()
}

fn decode_reference(d: &mut loona_hpack::Decoder<'_>, block: &[u8]) -> usize {
    let mut n = 0;
    d.decode_with_cb(block, |name, value| n += name.len() + value.len()).unwrap();
    n
}

/// The two blocks an indexing encoder sends for the same head twice (all lengths and indexes
/// below 127, so each integer is one byte).
fn indexing_peer(head: Head) -> (Vec<u8>, Vec<u8>) {
    let exact = |name: &[u8], value: &[u8]| match (name, value) {
        (b":method", b"POST") => Some(0x83),
        (b":scheme", b"http") => Some(0x86),
        (b":status", b"200") => Some(0x88),
        _ => None,
    };
    let inserted = head.iter().filter(|(n, v)| exact(n, v).is_none()).count();
    let (mut first, mut second) = (Vec::new(), Vec::new());
    let mut k = 0;
    for &(name, value) in head {
        if let Some(byte) = exact(name, value) {
            first.push(byte);
            second.push(byte);
            continue;
        }
        // Literal with incremental indexing, literal name; then indexed (newest is 62).
        first.extend_from_slice(&[0x40, name.len() as u8]);
        first.extend_from_slice(name);
        first.push(value.len() as u8);
        first.extend_from_slice(value);
        second.push(0x80 | (62 + inserted - 1 - k) as u8);
        k += 1;
    }
    (first, second)
}

/// One measured operation: its name (`group/case/implementation`) and a closure doing it once.
type Case = (String, Box<dyn FnMut() -> usize>);

fn cases() -> Vec<Case> {
    let mut cases: Vec<Case> = Vec::new();
    for (label, head) in HEADS {
        let (mut enc, mut out) = (Encoder::new(), Vec::with_capacity(512));
        cases.push((
            format!("encode/{label}/fulcrum"),
            Box::new(move || {
                out.clear();
                encode_ours(&mut enc, black_box(head), &mut out);
                out.len()
            }),
        ));
        let (mut enc, mut out) = (loona_hpack::Encoder::new(), Vec::with_capacity(512));
        cases.push((
            format!("encode/{label}/loona-hpack"),
            Box::new(move || {
                out.clear();
                enc.encode_into(black_box(head).iter().copied(), &mut out).unwrap();
                out.len()
            }),
        ));
    }
    let ours_block = |head: Head, huffman: bool| {
        let mut enc = Encoder::new();
        enc.set_huffman(huffman);
        let mut out = Vec::new();
        encode_ours(&mut enc, head, &mut out);
        (out, None)
    };
    let blocks = [
        ("request/raw", ours_block(REQUEST, false)),
        ("request/huffman", ours_block(REQUEST, true)),
        ("request/indexed", {
            let (first, second) = indexing_peer(REQUEST);
            (second, Some(first))
        }),
        ("response/raw", ours_block(RESPONSE, false)),
        ("response/indexed", {
            let (first, second) = indexing_peer(RESPONSE);
            (second, Some(first))
        }),
        ("trailers/raw", ours_block(TRAILERS, false)),
    ];
    for (label, (block, prime)) in blocks {
        let mut ours = Decoder::new(4096, 64 * 1024);
        let mut reference = loona_hpack::Decoder::new();
        if let Some(first) = &prime {
            decode_ours(&mut ours, first);
            decode_reference(&mut reference, first);
        }
        assert_eq!(decode_ours(&mut ours, &block), decode_reference(&mut reference, &block));
        let b = block.clone();
        cases.push((
            format!("decode/{label}/fulcrum"),
            Box::new(move || decode_ours(&mut ours, black_box(&b))),
        ));
        cases.push((
            format!("decode/{label}/loona-hpack"),
            Box::new(move || decode_reference(&mut reference, black_box(&block))),
        ));
    }
    cases
}

fn main() {
    if let Ok(spec) = std::env::var("HPACK_BENCH_ITERS") {
        if spec == "list" {
            cases().iter().for_each(|(name, _)| println!("{name}"));
            return;
        }
        let (name, n) = spec.rsplit_once(':').expect("HPACK_BENCH_ITERS=<case>:<n>");
        let n: u64 = n.parse().expect("iteration count");
        let mut case = cases().into_iter().find(|(c, _)| c == name).expect("no such case").1;
        let mut total = 0;
        for _ in 0..n {
            total += case();
        }
        black_box(total);
        return;
    }
    let mut c = Criterion::default()
        .warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_secs(2))
        .sample_size(50)
        .configure_from_args();
    for (name, mut case) in cases() {
        c.bench_function(&name, |b| b.iter(&mut case));
    }
    c.final_summary();
}
