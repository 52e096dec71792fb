//! Differential tests against a reference HPACK implementation (`loona-hpack`, the maintained
//! fork of the `hpack` crate; hyperium h2 keeps its HPACK module private): random blocks of
//! every representation, valid and corrupted, decoded by both; our encoder's output decoded by
//! the reference; the reference encoder's output (which uses its dynamic table) decoded by ours.
//!
//! The two decoders differ on purpose in two places, both RFC 7541 section 4.2 readings:
//! - a size update after the first field: we refuse it (the update "MUST occur at the
//!   beginning" of a block), the reference applies it;
//! - a block ending with a size update: the reference refuses it, we accept it.

use loona_hpack::decoder::DecoderError as RefError;

use super::{Decoder, Encoder, HpackError, encode_int, huffman};

type Fields = Vec<(Vec<u8>, Vec<u8>)>;

/// A small deterministic generator (xorshift64*), so failures reproduce from the seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

fn ours(d: &mut Decoder, block: &[u8]) -> Result<Fields, HpackError> {
    Ok(d.decode(block)?.iter().map(|f| (f.name.to_vec(), f.value.to_vec())).collect())
}

fn reference(d: &mut loona_hpack::Decoder<'_>, block: &[u8]) -> Result<Fields, RefError> {
    d.decode(block)
}

/// A string literal, raw or Huffman-coded.
fn string(rng: &mut Rng, out: &mut Vec<u8>) {
    const WORDS: [&[u8]; 8] = [
        b"",
        b"a",
        b"grpc-timeout",
        b"application/grpc",
        b"/pkg.Service/Method",
        b"x",
        b"\0\xff",
        b"trailers",
    ];
    let mut s = WORDS[rng.below(8) as usize].to_vec();
    for _ in 0..rng.below(4) {
        s.push(rng.next() as u8);
    }
    if rng.chance(10) {
        s.extend(std::iter::repeat_n(b'z', rng.below(300) as usize));
    }
    if rng.chance(50) {
        encode_int(out, 7, 0x80, huffman::encoded_len(&s));
        huffman::encode(&s, out);
    } else {
        encode_int(out, 7, 0, s.len());
        out.extend_from_slice(&s);
    }
}

/// A random block; `dynamic` is roughly how many entries the peer's table may hold.
fn block(rng: &mut Rng, dynamic: u64) -> Vec<u8> {
    let mut out = Vec::new();
    if rng.chance(10) {
        // Sizes around the advertised 4096, some above it.
        encode_int(&mut out, 5, 0x20, rng.below(4200) as usize);
    }
    for _ in 0..rng.below(12) {
        // Indexes reach a little past the tables, to exercise the errors too.
        let index = rng.below(61 + dynamic + 3) as usize;
        match rng.below(5) {
            0 => encode_int(&mut out, 7, 0x80, index),
            kind => {
                let (prefix, flags) =
                    [(6, 0x40), (6, 0x40), (4, 0x00), (4, 0x10)][kind as usize - 1];
                let name_index = if rng.chance(40) { 0 } else { index };
                encode_int(&mut out, prefix, flags, name_index);
                if name_index == 0 {
                    string(rng, &mut out);
                }
                string(rng, &mut out);
            }
        }
    }
    if rng.chance(5) && !out.is_empty() {
        // Corrupt one byte.
        let at = rng.below(out.len() as u64) as usize;
        out[at] ^= 1 << rng.below(8);
    }
    if rng.chance(3) {
        out.truncate(rng.below(out.len() as u64 + 1) as usize);
    }
    out
}

/// True when the reference's verdict differs from ours only where the two read RFC 7541
/// differently (see the module docs).
fn known_difference(
    block: &[u8],
    ours: &Result<Fields, HpackError>,
    theirs: &Result<Fields, RefError>,
) -> bool {
    match (ours, theirs) {
        (Err(HpackError::LateTableSizeUpdate), Ok(_)) => true,
        (Ok(_), Err(RefError::SizeUpdateAtEnd)) => true,
        // Both refuse; which fault each names first may differ when both apply.
        (Err(HpackError::LateTableSizeUpdate), Err(_)) => true,
        (Err(_), Err(RefError::SizeUpdateAtEnd)) => !block.is_empty(),
        _ => false,
    }
}

#[test]
fn random_blocks_decode_as_the_reference_decodes_them() {
    let (mut agreed, mut errors) = (0, 0);
    for seed in 1..=60u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        let mut d = Decoder::new(4096, usize::MAX);
        let mut r = loona_hpack::Decoder::new();
        r.set_max_allowed_table_size(4096);
        for _ in 0..50 {
            let dynamic = d.table_len() as u64;
            let b = block(&mut rng, dynamic);
            let (o, t) = (ours(&mut d, &b), reference(&mut r, &b));
            match (&o, &t) {
                (Ok(a), Ok(b)) => assert_eq!(a, b, "seed {seed}"),
                (Err(_), Err(_)) => {}
                _ => assert!(
                    known_difference(&b, &o, &t),
                    "seed {seed}: {b:02x?}\nours {o:?}\nreference {t:?}"
                ),
            }
            if o.is_err() || t.is_err() {
                // The tables may now differ: start the connection again.
                errors += 1;
                d = Decoder::new(4096, usize::MAX);
                r = loona_hpack::Decoder::new();
                r.set_max_allowed_table_size(4096);
            } else {
                agreed += 1;
                assert_eq!(d.table_size(), table_size(&mut r), "seed {seed}");
            }
        }
    }
    // Both outcomes were exercised, mostly the valid one.
    assert!(agreed > 1_500 && errors > 300, "agreed {agreed}, errors {errors}");
}

/// The reference's table size, measured by evicting: the size update to 0 and back would
/// change its state, so this compares entry by entry instead via its own decode of indexes.
fn table_size(r: &mut loona_hpack::Decoder<'_>) -> usize {
    let mut size = 0;
    for index in 62.. {
        let mut block = Vec::new();
        encode_int(&mut block, 7, 0x80, index);
        match r.decode(&block) {
            Ok(fields) => size += fields.iter().map(|(n, v)| n.len() + v.len() + 32).sum::<usize>(),
            Err(_) => return size,
        }
    }
    size
}

#[test]
fn our_encoder_is_understood_by_the_reference() {
    let mut rng = Rng(7);
    let mut r = loona_hpack::Decoder::new();
    let mut enc = Encoder::new();
    for round in 0..2000 {
        enc.set_huffman(round % 2 == 1);
        if round == 1000 {
            enc.set_peer_table_size(0);
        }
        let mut fields: Fields = Vec::new();
        let mut out = Vec::new();
        for _ in 0..rng.below(10) {
            let name: &[u8] = [
                &b":method"[..],
                b":path",
                b":status",
                b"te",
                b"content-type",
                b"x-custom",
                b"cookie",
            ][rng.below(7) as usize];
            let value: &[u8] =
                [&b"GET"[..], b"POST", b"/", b"200", b"404", b"trailers", b"", b"v\x7f"]
                    [rng.below(8) as usize];
            if rng.chance(20) {
                enc.encode_never_indexed(name, value, &mut out);
            } else {
                enc.encode(name, value, &mut out);
            }
            fields.push((name.to_vec(), value.to_vec()));
        }
        if fields.is_empty() {
            enc.begin_block(&mut out);
        }
        assert_eq!(
            r.decode(&out).unwrap_or_else(|e| panic!("round {round}: {e:?}")),
            fields,
            "round {round}"
        );
    }
}

#[test]
fn the_reference_encoder_is_understood_by_us() {
    // The reference encoder indexes every field in its dynamic table.
    let mut rng = Rng(11);
    let mut enc = loona_hpack::Encoder::new();
    let mut d = Decoder::new(4096, usize::MAX);
    for round in 0..2000 {
        let mut fields: Fields = Vec::new();
        for _ in 0..rng.below(10) {
            let mut value = b"value-".to_vec();
            value
                .extend(std::iter::repeat_n(b'0' + (rng.below(10) as u8), rng.below(200) as usize));
            let name: &[u8] = [&b":authority"[..], b"user-agent", b"x-a", b"x-b", b"grpc-timeout"]
                [rng.below(5) as usize];
            fields.push((name.to_vec(), value));
        }
        let block = enc.encode(fields.iter().map(|(n, v)| (&n[..], &v[..])));
        assert_eq!(ours(&mut d, &block).unwrap_or_else(|e| panic!("round {round}: {e:?}")), fields);
    }
    assert!(d.table_len() > 0);
}
