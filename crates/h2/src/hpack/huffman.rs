//! The HPACK Huffman code (RFC 7541 section 5.2, Appendix B).
//!
//! The code is canonical (codes of one length are consecutive, in symbol order, and shorter
//! codes come first), so the table below holds only each symbol's code length, as Appendix B
//! lists them; the codes and a decoding automaton are derived from it at compile time.
//!
//! Decoding walks the input a nibble at a time through a 256-state automaton (one state per
//! internal node of the code tree, as nghttp2 and h2 do): each step is one table lookup that
//! yields the next state and at most one symbol (no code is shorter than 5 bits).

use super::HpackError;

/// Code length in bits of each symbol 0..=255 and EOS (256), from RFC 7541 Appendix B.
const CODE_LEN: [u8; 257] = [
    13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28, // 0x00
    28, 28, 28, 28, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 28, // 0x10
    6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6, // 0x20
    5, 5, 5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10, // 0x30
    13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, // 0x40
    7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6, // 0x50
    15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6, 6, 5, // 0x60
    6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28, // 0x70
    20, 22, 20, 20, 22, 22, 22, 23, 22, 23, 23, 23, 23, 23, 24, 23, // 0x80
    24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24, // 0x90
    22, 21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23, // 0xa0
    21, 21, 22, 21, 23, 22, 23, 23, 20, 22, 22, 22, 23, 22, 22, 23, // 0xb0
    26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25, // 0xc0
    19, 21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27, // 0xd0
    20, 24, 20, 21, 22, 21, 21, 23, 22, 22, 25, 25, 24, 24, 26, 23, // 0xe0
    26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26, // 0xf0
    30, // EOS
];

const EOS: u16 = 256;
const MAX_LEN: u8 = 30;

/// Each symbol's code (right-aligned), assigned canonically from [`CODE_LEN`].
const CODES: [u32; 257] = {
    let mut codes = [0u32; 257];
    let mut code = 0u32;
    let mut len = 1;
    while len <= MAX_LEN {
        let mut sym = 0;
        while sym < 257 {
            if CODE_LEN[sym] == len {
                codes[sym] = code;
                code += 1;
            }
            sym += 1;
        }
        code <<= 1;
        len += 1;
    }
    codes
};

/// A child in the code tree: an internal node (state) or a leaf symbol.
const LEAF: u16 = 0x8000;

/// The code tree: `TREE[node][bit]`, node 0 the root; 256 internal nodes for 257 leaves.
const TREE: [[u16; 2]; 256] = {
    let mut tree = [[0u16; 2]; 256];
    let mut nodes = 1;
    let mut sym = 0;
    while sym < 257 {
        let len = CODE_LEN[sym] as u32;
        let code = CODES[sym];
        let mut node = 0;
        let mut i = 0;
        while i < len {
            let bit = ((code >> (len - 1 - i)) & 1) as usize;
            if i == len - 1 {
                tree[node][bit] = LEAF | sym as u16;
            } else {
                if tree[node][bit] == 0 {
                    tree[node][bit] = nodes as u16;
                    nodes += 1;
                }
                node = tree[node][bit] as usize;
            }
            i += 1;
        }
        sym += 1;
    }
    assert!(nodes == 256, "HPACK Huffman tree must have 256 internal nodes");
    tree
};

/// For each state: may the string end here? Only when the bits since the last symbol are a
/// prefix of EOS (all ones) no longer than 7 (RFC 7541 section 5.2).
const ACCEPT: [bool; 256] = {
    let mut accept = [false; 256];
    let mut node = 0;
    let mut depth = 0;
    while depth <= 7 {
        accept[node] = true;
        node = TREE[node][1] as usize;
        depth += 1;
    }
    accept
};

/// One automaton step: the state after a nibble, and the symbol it completed (if `EMIT`).
#[derive(Clone, Copy)]
struct Step {
    next: u8,
    flags: u8,
    sym: u8,
}

const EMIT: u8 = 1;
const FAIL: u8 = 2;

/// `STEPS[state][nibble]`.
const STEPS: [[Step; 16]; 256] = {
    let mut steps = [[Step { next: 0, flags: 0, sym: 0 }; 16]; 256];
    let mut state = 0;
    while state < 256 {
        let mut nibble = 0;
        while nibble < 16 {
            let mut node = state;
            let mut step = Step { next: 0, flags: 0, sym: 0 };
            let mut i = 0;
            while i < 4 {
                let bit = (nibble >> (3 - i)) & 1;
                let child = TREE[node][bit];
                if child & LEAF != 0 {
                    if child & !LEAF == EOS {
                        step.flags = FAIL;
                    } else {
                        step.flags |= EMIT;
                        step.sym = (child & 0xff) as u8;
                    }
                    node = 0;
                } else {
                    node = child as usize;
                }
                i += 1;
            }
            step.next = node as u8;
            steps[state][nibble] = step;
            nibble += 1;
        }
        state += 1;
    }
    steps
};

/// Decodes `src` and appends the result to `dst`, storing at most `cap` bytes: past that the
/// input is still checked but nothing more is stored. Returns the full decoded length.
pub(crate) fn decode(src: &[u8], dst: &mut Vec<u8>, cap: usize) -> Result<usize, HpackError> {
    // A code is at least 5 bits, so the output is at most 8/5 of the input.
    let bound = src.len() * 8 / 5;
    let limit = dst.len().saturating_add(cap);
    dst.reserve(bound.min(cap));
    let mut state = 0usize;
    let mut n = 0usize;
    for &b in src {
        for nibble in [b >> 4, b & 0xf] {
            let step = STEPS[state][usize::from(nibble)];
            if step.flags & FAIL != 0 {
                return Err(HpackError::HuffmanEos);
            }
            if step.flags & EMIT != 0 {
                if dst.len() < limit {
                    dst.push(step.sym);
                }
                n += 1;
            }
            state = usize::from(step.next);
        }
    }
    if !ACCEPT[state] {
        return Err(HpackError::HuffmanPadding);
    }
    Ok(n)
}

/// Length of `src` once Huffman-encoded.
pub(crate) fn encoded_len(src: &[u8]) -> usize {
    let bits: usize = src.iter().map(|&b| usize::from(CODE_LEN[usize::from(b)])).sum();
    bits.div_ceil(8)
}

/// Appends the Huffman encoding of `src`, padded with the most significant bits of EOS.
pub(crate) fn encode(src: &[u8], dst: &mut Vec<u8>) {
    let mut acc: u64 = 0;
    let mut bits = 0u32;
    for &b in src {
        let len = u32::from(CODE_LEN[usize::from(b)]);
        acc = acc << len | u64::from(CODES[usize::from(b)]);
        bits += len;
        while bits >= 8 {
            bits -= 8;
            dst.push((acc >> bits) as u8);
        }
    }
    if bits > 0 {
        let pad = 8 - bits;
        dst.push((acc << pad | ((1 << pad) - 1)) as u8);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn dec(src: &[u8]) -> Result<Vec<u8>, HpackError> {
        let mut out = Vec::new();
        decode(src, &mut out, usize::MAX).map(|n| {
            assert_eq!(n, out.len());
            out
        })
    }

    #[test]
    fn codes_match_appendix_b_samples() {
        // A few rows of Appendix B, code as printed there.
        assert_eq!((CODES[b'0' as usize], CODE_LEN[b'0' as usize]), (0x0, 5));
        assert_eq!((CODES[b' ' as usize], CODE_LEN[b' ' as usize]), (0x14, 6));
        assert_eq!((CODES[b'A' as usize], CODE_LEN[b'A' as usize]), (0x21, 6));
        assert_eq!((CODES[b'z' as usize], CODE_LEN[b'z' as usize]), (0x7b, 7));
        assert_eq!((CODES[0], CODE_LEN[0]), (0x1ff8, 13));
        assert_eq!((CODES[255], CODE_LEN[255]), (0x3ffffee, 26));
        assert_eq!((CODES[256], CODE_LEN[256]), (0x3fffffff, 30));
        // The code is complete: Kraft's sum is exactly one.
        let kraft: u64 = CODE_LEN.iter().map(|&l| 1u64 << (30 - l)).sum();
        assert_eq!(kraft, 1 << 30);
    }

    #[test]
    fn every_byte_round_trips() {
        let all: Vec<u8> = (0..=255).collect();
        for s in [&all[..], b"", b"www.example.com", b"no-cache", b"\0\xff\x7f"] {
            let mut enc = Vec::new();
            encode(s, &mut enc);
            assert_eq!(enc.len(), encoded_len(s));
            assert_eq!(dec(&enc).unwrap(), s);
        }
    }

    #[test]
    fn rfc7541_c4_strings() {
        assert_eq!(
            dec(&[0xf1, 0xe3, 0xc2, 0xe5, 0xf2, 0x3a, 0x6b, 0xa0, 0xab, 0x90, 0xf4, 0xff]).unwrap(),
            b"www.example.com"
        );
        assert_eq!(dec(&[0xa8, 0xeb, 0x10, 0x64, 0x9c, 0xbf]).unwrap(), b"no-cache");
    }

    #[test]
    fn padding_rules() {
        // "0" is 00000: padded with 3 ones is fine; with zeros or a whole byte of ones it is not.
        assert_eq!(dec(&[0b0000_0111]).unwrap(), b"0");
        assert_eq!(dec(&[0b0000_0011]), Err(HpackError::HuffmanPadding));
        assert_eq!(dec(&[0b0000_0111, 0xff]), Err(HpackError::HuffmanPadding));
        // A lone byte of ones is 8 bits of padding.
        assert_eq!(dec(&[0xff]), Err(HpackError::HuffmanPadding));
        // EOS itself (30 ones) inside the string.
        assert_eq!(dec(&[0xff, 0xff, 0xff, 0xff]), Err(HpackError::HuffmanEos));
        assert_eq!(dec(&[]).unwrap(), b"");
    }

    /// Decodes a bit at a time by looking up the bits so far in the code list (`codes`, by
    /// length and code): slow, and plainly right.
    fn reference(codes: &HashMap<(u8, u32), usize>, src: &[u8]) -> Result<Vec<u8>, HpackError> {
        let (mut out, mut code, mut len) = (Vec::new(), 0u32, 0u8);
        for i in 0..src.len() * 8 {
            code = code << 1 | u32::from(src[i / 8] >> (7 - i % 8) & 1);
            len += 1;
            if let Some(&sym) = codes.get(&(len, code)) {
                if sym == usize::from(EOS) {
                    return Err(HpackError::HuffmanEos);
                }
                out.push(sym as u8);
                (code, len) = (0, 0);
            }
        }
        if len > 7 || code != (1 << len) - 1 {
            return Err(HpackError::HuffmanPadding);
        }
        Ok(out)
    }

    #[test]
    fn agrees_with_a_bit_by_bit_decoder_on_arbitrary_input() {
        // Arbitrary bytes (mostly invalid: long codes, EOS, bad padding) and valid encodings
        // of arbitrary strings, from a fixed xorshift sequence.
        let codes: HashMap<_, _> = (0..257).map(|s| ((CODE_LEN[s], CODES[s]), s)).collect();
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for round in 0..4000 {
            let len = (next() % 24) as usize;
            let raw: Vec<u8> = (0..len)
                .map(|_| match round % 3 {
                    0 => next() as u8,
                    1 => 0xf0 | next() as u8,
                    _ => b' ' + (next() % 95) as u8,
                })
                .collect();
            let src = if round % 2 == 0 {
                raw
            } else {
                let mut enc = Vec::new();
                encode(&raw, &mut enc);
                assert_eq!(dec(&enc).unwrap(), raw);
                enc
            };
            assert_eq!(dec(&src), reference(&codes, &src), "input {src:02x?}");
        }
    }

    #[test]
    fn agrees_with_a_bit_by_bit_decoder_on_every_short_input() {
        // Every input of one and two bytes, and of three bytes that begin with a long code's
        // first ones: every way a string can end inside, or just after, a code.
        let codes: HashMap<_, _> = (0..257).map(|s| ((CODE_LEN[s], CODES[s]), s)).collect();
        let short = (0..=255u8).map(|a| vec![a]);
        let two = (0..=0xffffu16).map(|x| x.to_be_bytes().to_vec());
        let three = (0..=0xffffu16).map(|x| [&[0xff][..], &x.to_be_bytes()].concat());
        for src in short.chain(two).chain(three) {
            assert_eq!(dec(&src), reference(&codes, &src), "input {src:02x?}");
        }
    }

    #[test]
    fn cap_bounds_what_is_stored_but_not_the_check() {
        let mut enc = Vec::new();
        encode(&[b'a'; 1000], &mut enc);
        let mut out = Vec::new();
        assert_eq!(decode(&enc, &mut out, 10), Ok(1000));
        assert_eq!(out, [b'a'; 10]);
        enc.push(0xff);
        assert_eq!(decode(&enc, &mut Vec::new(), 10), Err(HpackError::HuffmanPadding));
    }
}
