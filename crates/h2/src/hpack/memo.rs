//! What the peer's last few Huffman strings decode to. Part of the
//! [`Decoder`](super::Decoder), so it runs on the thread that owns the connection.
//!
//! Some servers send the same response fields Huffman-coded on every response, without ever
//! referring back to them: nginx sends `server`, `date`, `content-type` and the fields an
//! operator adds as literals "with incremental indexing" each time. Decoding them was about a
//! tenth of the instructions of a request proxied to nginx over HTTP/2. Finding a string here
//! costs one comparison and one copy.
//!
//! The memory is fixed: [`SLOTS`] strings of at most [`MAX_CODED`] coded bytes, about 1.4 KiB,
//! allocated when the first string is remembered. Fields marked "never indexed" are kept out,
//! as their sender asks of intermediaries (RFC 7541 section 7.1.3).

use std::fmt;

use super::{HpackError, huffman};

/// Strings remembered. A lookup compares the lengths of all of them, and a new string takes
/// the place of the oldest.
const SLOTS: usize = 16;

/// Longer strings are decoded every time (a `date` is 22 coded bytes).
const MAX_CODED: usize = 32;

/// A code is at least 5 bits long, so this is the longest decoding of [`MAX_CODED`] bytes.
const MAX_DECODED: usize = MAX_CODED * 8 / 5;

/// One remembered string: `coded[..coded_len]` decodes to `decoded[..decoded_len]`.
#[derive(Clone, Copy)]
struct Slot {
    /// 0 while the slot is empty (an empty string is never remembered).
    coded_len: u8,
    decoded_len: u8,
    coded: [u8; MAX_CODED],
    decoded: [u8; MAX_DECODED],
}

impl Slot {
    const EMPTY: Slot =
        Slot { coded_len: 0, decoded_len: 0, coded: [0; MAX_CODED], decoded: [0; MAX_DECODED] };

    fn holds(&self, coded: &[u8]) -> Option<&[u8]> {
        let n = usize::from(self.coded_len);
        (n == coded.len() && self.coded[..n] == *coded)
            .then(|| &self.decoded[..usize::from(self.decoded_len)])
    }
}

/// A connection's remembered strings (see the module documentation).
#[derive(Default)]
pub(super) struct HuffmanMemo {
    /// Empty until the first string is remembered, then [`SLOTS`] long.
    slots: Box<[Slot]>,
    /// The slot the next new string takes (the oldest).
    next: usize,
}

impl fmt::Debug for HuffmanMemo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let held = self.slots.iter().filter(|s| s.coded_len != 0).count();
        f.debug_struct("HuffmanMemo").field("held", &held).finish()
    }
}

impl HuffmanMemo {
    /// [`huffman::decode`] of `coded` (appended to `dst`, at most `cap` bytes stored, the full
    /// decoded length returned), through the memory: a string found here is copied, one
    /// that is not is decoded and, when it is short and was stored whole, remembered.
    /// A string that fails to decode is never remembered, so it fails every time.
    pub(super) fn decode(
        &mut self,
        coded: &[u8],
        dst: &mut Vec<u8>,
        cap: usize,
    ) -> Result<usize, HpackError> {
        if coded.is_empty() || coded.len() > MAX_CODED {
            return huffman::decode(coded, dst, cap);
        }
        if let Some(decoded) = self.slots.iter().find_map(|slot| slot.holds(coded)) {
            dst.extend_from_slice(&decoded[..decoded.len().min(cap)]);
            return Ok(decoded.len());
        }
        let at = dst.len();
        let len = huffman::decode(coded, dst, cap)?;
        if let Some(decoded) = dst.get(at..).filter(|d| d.len() == len && len <= MAX_DECODED) {
            if self.slots.is_empty() {
                self.slots = vec![Slot::EMPTY; SLOTS].into_boxed_slice();
            }
            if let Some(slot) = self.slots.get_mut(self.next) {
                slot.coded[..coded.len()].copy_from_slice(coded);
                slot.decoded[..len].copy_from_slice(decoded);
                // Both fit in a u8: MAX_CODED and MAX_DECODED are below 256.
                slot.coded_len = coded.len() as u8;
                slot.decoded_len = len as u8;
            }
            self.next = (self.next + 1) % SLOTS;
        }
        Ok(len)
    }

    /// Heap bytes held: none until the first string is remembered.
    pub(super) fn heap_bytes(&self) -> usize {
        std::mem::size_of_val(&*self.slots)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn coded(s: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        huffman::encode(s, &mut v);
        v
    }

    fn through(
        memo: &mut HuffmanMemo,
        coded: &[u8],
        cap: usize,
    ) -> (Result<usize, HpackError>, Vec<u8>) {
        let mut dst = b"prefix".to_vec();
        let r = memo.decode(coded, &mut dst, cap);
        (r, dst)
    }

    #[test]
    fn a_remembered_string_decodes_as_the_decoder_does_with_any_cap() {
        let mut memo = HuffmanMemo::default();
        assert_eq!(memo.heap_bytes(), 0, "nothing held before the first string");
        let date = coded(b"Fri, 04 Dec 2026 19:06:03 GMT");
        for cap in [usize::MAX, 29, 10, 0] {
            let mut want = b"prefix".to_vec();
            let n = huffman::decode(&date, &mut want, cap);
            for _ in 0..2 {
                assert_eq!(through(&mut memo, &date, cap), (n, want.clone()), "cap {cap}");
            }
        }
        assert!(memo.heap_bytes() > 0 && memo.heap_bytes() <= 4096);
    }

    #[test]
    fn the_oldest_string_makes_room_and_long_ones_are_not_kept() {
        let mut memo = HuffmanMemo::default();
        let strings: Vec<Vec<u8>> =
            (0..SLOTS + 1).map(|i| coded(format!("value-{i}").as_bytes())).collect();
        for round in 0..2 {
            for s in &strings {
                let mut want = b"prefix".to_vec();
                let n = huffman::decode(s, &mut want, usize::MAX);
                assert_eq!(through(&mut memo, s, usize::MAX), (n, want), "round {round}");
            }
        }
        let held =
            |memo: &HuffmanMemo, s: &[u8]| memo.slots.iter().any(|slot| slot.holds(s).is_some());
        assert_eq!(strings.iter().filter(|s| held(&memo, s)).count(), SLOTS);
        assert!(held(&memo, &strings[SLOTS]), "the newest is held");
        let long = coded(&[b'a'; 200]);
        let mut want = b"prefix".to_vec();
        let n = huffman::decode(&long, &mut want, usize::MAX);
        assert_eq!(through(&mut memo, &long, usize::MAX), (n, want));
        assert!(!held(&memo, &long));
    }

    #[test]
    fn a_string_that_fails_fails_every_time() {
        let mut memo = HuffmanMemo::default();
        // All ones: the EOS symbol, then padding.
        let eos = [0xff, 0xff, 0xff, 0xff, 0xff];
        for _ in 0..3 {
            assert_eq!(through(&mut memo, &eos, usize::MAX).0, Err(HpackError::HuffmanEos));
        }
        // A stored prefix with padding that is not all ones.
        let bad_padding = [0x00];
        for _ in 0..3 {
            assert_eq!(
                through(&mut memo, &bad_padding, usize::MAX).0,
                Err(HpackError::HuffmanPadding)
            );
        }
    }
}
