//! The HPACK decoder (`fulcrum_h2::hpack::Decoder`), differential against `loona-hpack`.
//!
//! Input: a configuration byte (header-list limit, dynamic table size, Huffman re-encoding),
//! then field blocks of one connection, each preceded by its length (2 bytes, little endian).
//! Invariants:
//! - the decoder never panics; it returns the same fields as the reference, or both refuse the
//!   block, except where the two read RFC 7541 section 4.2 differently (a size update after a
//!   field: we refuse it; a block ending with one: the reference refuses it);
//! - a block is refused as too large exactly when the reference's list (name + value + 32 per
//!   field) passes the limit, and the dynamic tables still agree afterwards (decoding goes on);
//! - an accepted list is within the limit, and the decoder's heap stays within the bound its
//!   limits set, whatever the blocks hold (HPACK bombs);
//! - the decoded fields, forwarded through our encoder, decode back to the same fields with
//!   the same "never indexed" flags.

#![no_main]

use fulcrum_h2::hpack::{Decoder, Encoder, HpackError};
use libfuzzer_sys::fuzz_target;
use loona_hpack::decoder::DecoderError as RefError;

type Fields = Vec<(Vec<u8>, Vec<u8>)>;

fuzz_target!(|data: &[u8]| {
    let [cfg, ref rest @ ..] = *data else { return };
    let limit = 256usize << (cfg & 7);
    let table = if cfg & 8 == 0 { 4096 } else { 256 };
    let huffman = cfg & 16 != 0;
    let (mut ours, mut reference) = connection(table, limit);
    let mut rest = rest;
    while let [lo, hi, ref tail @ ..] = *rest {
        let len = usize::from(u16::from_le_bytes([lo, hi])).min(tail.len());
        let (block, tail) = tail.split_at(len);
        rest = tail;
        let theirs = decode_reference(&mut reference, block, limit);
        let accepted = match ours.decode(block) {
            Ok(fields) => {
                let got: Fields =
                    fields.iter().map(|f| (f.name.to_vec(), f.value.to_vec())).collect();
                assert!(fields.list_size() <= limit);
                assert_eq!(fields.list_size(), list_size(&got));
                match &theirs {
                    Ok((want, size)) => {
                        assert_eq!(*size, fields.list_size(), "list sizes differ");
                        assert_eq!(&got, want, "fields differ from the reference");
                    }
                    Err(RefError::SizeUpdateAtEnd) => {}
                    Err(e) => panic!("reference refused ({e:?}) a block we accepted: {got:?}"),
                }
                round_trip(&fields.iter().collect::<Vec<_>>(), huffman);
                true
            }
            Err(HpackError::HeaderListTooLarge { .. }) => match &theirs {
                Ok((_, size)) => {
                    assert!(*size > limit, "refused as too large, but the list is {size}");
                    true
                }
                Err(_) => false,
            },
            Err(HpackError::LateTableSizeUpdate) => false,
            Err(e) => {
                assert!(theirs.is_err(), "we refused ({e:?}) a block the reference accepted");
                false
            }
        };
        let bound = 8 * (table + limit) + 4096;
        assert!(ours.heap_bytes() <= bound, "decoder holds {} bytes", ours.heap_bytes());
        if !(accepted && theirs.is_ok()) {
            // The tables may differ after an error: start a new connection.
            (ours, reference) = connection(table, limit);
        } else {
            assert_eq!(ours.table_size(), reference_table_size(&mut reference), "tables differ");
        }
    }
});

fn connection(table: usize, limit: usize) -> (Decoder, loona_hpack::Decoder<'static>) {
    let mut reference = loona_hpack::Decoder::new();
    reference.set_max_allowed_table_size(table);
    reference.set_max_table_size(table);
    (Decoder::new(table, limit), reference)
}

fn list_size(fields: &Fields) -> usize {
    fields.iter().map(|(n, v)| n.len() + v.len() + 32).sum()
}

/// The reference's fields (kept only up to the limit, so a bomb costs it no memory either)
/// and its full list size.
fn decode_reference(
    r: &mut loona_hpack::Decoder<'_>,
    block: &[u8],
    limit: usize,
) -> Result<(Fields, usize), RefError> {
    let mut fields = Vec::new();
    let mut size = 0usize;
    r.decode_with_cb(block, |n, v| {
        size = size.saturating_add(n.len() + v.len() + 32);
        if size <= limit {
            fields.push((n.into_owned(), v.into_owned()));
        }
    })?;
    Ok((fields, size))
}

/// The reference's dynamic table size, read by decoding each dynamic index in turn.
fn reference_table_size(r: &mut loona_hpack::Decoder<'_>) -> usize {
    let mut size = 0;
    for index in 62u32..62 + 4096 / 32 + 1 {
        // An indexed field: 1xxxxxxx with a 7-bit prefix.
        let block: Vec<u8> = if index < 127 {
            vec![0x80 | index as u8]
        } else {
            let mut b = vec![0xff];
            let mut rest = index - 127;
            while rest >= 0x80 {
                b.push(0x80 | (rest & 0x7f) as u8);
                rest >>= 7;
            }
            b.push(rest as u8);
            b
        };
        match r.decode(&block) {
            Ok(fields) => size += list_size(&fields),
            Err(_) => break,
        }
    }
    size
}

/// Forwarding the fields through our encoder loses nothing.
fn round_trip(fields: &[fulcrum_h2::Field<'_>], huffman: bool) {
    // Names with upper case are the caller's to refuse before encoding (debug-asserted).
    if fields.iter().any(|f| f.name.iter().any(u8::is_ascii_uppercase)) {
        return;
    }
    let mut enc = Encoder::new();
    enc.set_huffman(huffman);
    let mut block = Vec::new();
    for f in fields {
        enc.encode_field(f, &mut block);
    }
    let mut d = Decoder::new(4096, usize::MAX);
    let again = d.decode(&block).expect("our own encoding refused");
    assert_eq!(again.len(), fields.len());
    for (a, b) in again.iter().zip(fields) {
        assert_eq!((a.name, a.value, a.never_indexed), (b.name, b.value, b.never_indexed));
        assert_eq!(a.pseudo, b.pseudo);
    }
}
