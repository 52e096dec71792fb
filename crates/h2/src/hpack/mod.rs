//! HPACK (RFC 7541): the header compression of HTTP/2, shaped for a proxy.
//!
//! Each connection owns one [`Decoder`] (fields from the peer) and one [`Encoder`] (fields to
//! the peer), used by the thread that owns the connection; neither is shared or locked.
//!
//! The decoder returns a whole field block as a [`HeaderBlock`]: fields whose name or value is
//! a literal in the block borrow from the block itself, static entries from the static table,
//! dynamic entries from the dynamic table's buffer (copied only if a later field of the same
//! block changes the table), and Huffman-decoded strings live in one scratch buffer the decoder
//! reuses from block to block (a string the peer sent lately is copied from a small memo rather
//! than decoded again). No allocation or hashing happens per field once the buffers have
//! grown to the connection's working size, and the decoded list is counted as RFC 9113 says
//! (name + value + 32 per field) against a limit, so a compression bomb cannot make it hold
//! more than that.
//!
//! The encoder follows HAProxy: names are looked up in the static table only, values are raw
//! literals "without indexing" (or "never indexed" on request), the common exact pairs
//! (`:method GET`, `:status 200`, ...) are one byte each, and there is no dynamic table, so
//! encoding is a handful of byte copies straight into the connection's write buffer.

mod decoder;
mod encoder;
mod huffman;
mod memo;
mod table;

use std::fmt;

pub use decoder::{Decoder, HeaderBlock, HeaderBlockIter};
pub use encoder::Encoder;

/// The default SETTINGS_HEADER_TABLE_SIZE (RFC 9113 section 6.5.2): both directions start
/// with a 4096-byte dynamic table.
pub const DEFAULT_TABLE_SIZE: usize = 4096;

/// Per-field overhead counted in table and header-list sizes (RFC 7541 section 4.1).
pub const ENTRY_OVERHEAD: usize = 32;

/// A decoding failure. All but [`HpackError::HeaderListTooLarge`] leave the connection's HPACK
/// state unusable: a connection error of type COMPRESSION_ERROR (RFC 9113 section 4.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HpackError {
    /// The block ends inside a field representation.
    #[error("HPACK block truncated")]
    Truncated,
    /// An integer with more than 4 continuation octets.
    #[error("HPACK integer overflow")]
    IntegerOverflow,
    /// An index of 0, or one past the static and dynamic tables.
    #[error("HPACK index {0} out of range")]
    BadIndex(u32),
    /// A Huffman string contains the EOS symbol.
    #[error("Huffman string contains EOS")]
    HuffmanEos,
    /// A Huffman string ends with more than 7 bits of padding, or padding not all ones.
    #[error("invalid Huffman padding")]
    HuffmanPadding,
    /// A dynamic table size update above the SETTINGS_HEADER_TABLE_SIZE we advertised.
    #[error("table size update to {requested} above the advertised {max}")]
    TableSizeTooLarge {
        /// The size the peer asked for.
        requested: u32,
        /// Our advertised limit.
        max: usize,
    },
    /// A dynamic table size update after the first field of a block.
    #[error("table size update after a field")]
    LateTableSizeUpdate,
    /// After we lowered SETTINGS_HEADER_TABLE_SIZE, the next block did not start with a size
    /// update (RFC 7541 section 4.2).
    #[error("missing table size update after the table size was lowered")]
    MissingTableSizeUpdate,
    /// The decoded field list exceeds the limit. The block was still decoded to its end, so
    /// the HPACK state is intact: the engine may refuse just the stream (431 or RST_STREAM).
    #[error("header list larger than {limit} bytes")]
    HeaderListTooLarge {
        /// The limit (name + value + 32 per field).
        limit: usize,
    },
}

impl HpackError {
    /// True when the connection must end with COMPRESSION_ERROR; false for a header list that
    /// is merely too large (the decoder state is intact).
    pub fn is_connection_error(&self) -> bool {
        !matches!(self, HpackError::HeaderListTooLarge { .. })
    }
}

/// A pseudo-header field name (RFC 9113 section 8.3, RFC 8441).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Pseudo {
    /// `:authority`
    Authority,
    /// `:method`
    Method,
    /// `:path`
    Path,
    /// `:scheme`
    Scheme,
    /// `:status`
    Status,
    /// `:protocol` (extended CONNECT)
    Protocol,
}

impl Pseudo {
    /// The pseudo-header a name denotes, `None` for other names (including unknown ones that
    /// start with a colon).
    pub fn from_name(name: &[u8]) -> Option<Pseudo> {
        Some(match name {
            b":authority" => Pseudo::Authority,
            b":method" => Pseudo::Method,
            b":path" => Pseudo::Path,
            b":scheme" => Pseudo::Scheme,
            b":status" => Pseudo::Status,
            b":protocol" => Pseudo::Protocol,
            _ => return None,
        })
    }

    /// The field name, colon included.
    pub fn name(self) -> &'static [u8] {
        match self {
            Pseudo::Authority => b":authority",
            Pseudo::Method => b":method",
            Pseudo::Path => b":path",
            Pseudo::Scheme => b":scheme",
            Pseudo::Status => b":status",
            Pseudo::Protocol => b":protocol",
        }
    }
}

/// One decoded field, borrowing from the block or the decoder's scratch buffer.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Field<'a> {
    /// Field name as received (HTTP/2 requires lower case: see [`crate::validate`]).
    pub name: &'a [u8],
    /// Field value as received.
    pub value: &'a [u8],
    /// The pseudo-header the name denotes, if any.
    pub pseudo: Option<Pseudo>,
    /// The sender marked it "never indexed": a proxy must forward it the same way
    /// (RFC 7541 section 7.1.3); [`Encoder::encode_field`] does.
    pub never_indexed: bool,
    /// Index of an equal name in the static table when the decoder knows it for free (the
    /// sender referenced the static table); lets the encoder skip its name lookup.
    pub static_name: Option<u8>,
}

impl fmt::Debug for Field<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {}",
            String::from_utf8_lossy(self.name).escape_debug(),
            String::from_utf8_lossy(self.value).escape_debug()
        )?;
        if self.never_indexed {
            f.write_str(" (never indexed)")?;
        }
        Ok(())
    }
}

impl<'a> Field<'a> {
    /// A regular field (no index hint, not sensitive), as a caller builds one to encode.
    pub fn new(name: &'a [u8], value: &'a [u8]) -> Field<'a> {
        Field {
            name,
            value,
            pseudo: Pseudo::from_name(name),
            never_indexed: false,
            static_name: None,
        }
    }

    /// Its size in a header list: name + value + 32 (RFC 9113 section 6.5.2).
    pub fn list_size(&self) -> usize {
        self.name.len() + self.value.len() + ENTRY_OVERHEAD
    }
}

/// Reads an HPACK integer with an `n`-bit prefix (RFC 7541 section 5.1) at `*pos`, advancing
/// `*pos` past it. At most 4 continuation octets are read (values below 2^28 + 2^n, far above
/// any legitimate length, index or table size; the same limit as the `hpack` family of
/// crates), so a run of continuation octets stops at the fifth.
fn decode_int(buf: &[u8], pos: &mut usize, n: u32) -> Result<u32, HpackError> {
    let mask = (1u32 << n) - 1;
    let first = *buf.get(*pos).ok_or(HpackError::Truncated)?;
    *pos += 1;
    let mut value = u32::from(first) & mask;
    if value < mask {
        return Ok(value);
    }
    let mut shift = 0u32;
    loop {
        let b = *buf.get(*pos).ok_or(HpackError::Truncated)?;
        *pos += 1;
        if shift > 21 {
            return Err(HpackError::IntegerOverflow);
        }
        let add = u64::from(b & 0x7f) << shift;
        value = u32::try_from(u64::from(value) + add).map_err(|_| HpackError::IntegerOverflow)?;
        if b & 0x80 == 0 {
            return Ok(value);
        }
        shift += 7;
    }
}

/// Appends `value` as an HPACK integer with an `n`-bit prefix; `flags` holds the bits of the
/// first octet above the prefix.
#[inline]
fn encode_int(dst: &mut Vec<u8>, n: u32, flags: u8, value: usize) {
    let mut buf = [0; INT_MAX_LEN];
    let len = put_int(&mut buf, n, flags, value);
    // One or two octets almost always: pushed, not copied by a call to `memcpy`.
    for &b in &buf[..len] {
        dst.push(b);
    }
}

/// Longest HPACK integer of a `usize`: the prefix octet and ten continuation octets.
const INT_MAX_LEN: usize = 11;

/// Writes `value` as an HPACK integer at the start of `buf`, returning its length.
#[inline]
fn put_int(buf: &mut [u8; INT_MAX_LEN], n: u32, flags: u8, value: usize) -> usize {
    let mask = (1usize << n) - 1;
    if value < mask {
        buf[0] = flags | value as u8;
        return 1;
    }
    buf[0] = flags | mask as u8;
    let mut rest = value - mask;
    let mut len = 1;
    while rest >= 0x80 && len < INT_MAX_LEN - 1 {
        buf[len] = 0x80 | (rest & 0x7f) as u8;
        rest >>= 7;
        len += 1;
    }
    buf[len] = rest as u8;
    len + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn int(buf: &[u8], n: u32) -> Result<(u32, usize), HpackError> {
        let mut pos = 0;
        decode_int(buf, &mut pos, n).map(|v| (v, pos))
    }

    #[test]
    fn integers_of_rfc7541_c1() {
        // C.1.1: 10 in a 5-bit prefix; C.1.2: 1337 in a 5-bit prefix; C.1.3: 42 at an octet.
        let mut out = Vec::new();
        encode_int(&mut out, 5, 0, 10);
        assert_eq!(out, [0x0a]);
        assert_eq!(int(&out, 5), Ok((10, 1)));
        out.clear();
        encode_int(&mut out, 5, 0, 1337);
        assert_eq!(out, [0x1f, 0x9a, 0x0a]);
        assert_eq!(int(&out, 5), Ok((1337, 3)));
        out.clear();
        encode_int(&mut out, 8, 0, 42);
        assert_eq!(out, [0x2a]);
        assert_eq!(int(&out, 8), Ok((42, 1)));
    }

    #[test]
    fn integer_round_trips_at_every_prefix() {
        for n in 1..=8 {
            for v in [0usize, 1, 30, 31, 127, 128, 255, 256, 16_383, 1 << 21, (1 << 28) - 1] {
                let mut out = Vec::new();
                encode_int(&mut out, n, 0, v);
                assert_eq!(int(&out, n), Ok((v as u32, out.len())), "n={n} v={v}");
            }
        }
    }

    #[test]
    fn the_longest_integers_fit() {
        let mut buf = [0; INT_MAX_LEN];
        assert_eq!(put_int(&mut buf, 1, 0, usize::MAX), INT_MAX_LEN);
        assert_eq!(buf[INT_MAX_LEN - 1], 1);
        assert_eq!(put_int(&mut buf, 8, 0, usize::MAX), INT_MAX_LEN);
    }

    #[test]
    fn integer_overflow_and_truncation_are_refused() {
        assert_eq!(int(&[0x1f, 0xff, 0xff, 0xff, 0xff, 0x7f], 5), Err(HpackError::IntegerOverflow));
        // Five continuation octets, even zero ones; four are fine.
        assert_eq!(int(&[0x1f, 0x80, 0x80, 0x80, 0x80, 0x00], 5), Err(HpackError::IntegerOverflow));
        assert_eq!(int(&[0x1f, 0x80, 0x80, 0x80, 0x00], 5), Ok((31, 5)));
        // A million continuation octets stop at the fifth.
        let mut huge = vec![0x1f];
        huge.extend(std::iter::repeat_n(0xff, 1_000_000));
        assert_eq!(int(&huge, 5), Err(HpackError::IntegerOverflow));
        assert_eq!(int(&[0x1f, 0x80], 5), Err(HpackError::Truncated));
        assert_eq!(int(&[], 5), Err(HpackError::Truncated));
        // 31 + 2^28 - 1 is the largest accepted.
        let largest = 31 + (1 << 28) - 1;
        let mut max = Vec::new();
        encode_int(&mut max, 5, 0, largest);
        assert_eq!(int(&max, 5), Ok((largest as u32, max.len())));
        max.clear();
        encode_int(&mut max, 5, 0, largest + 1);
        assert_eq!(int(&max, 5), Err(HpackError::IntegerOverflow));
    }
}

#[cfg(test)]
mod differential;
