//! The HPACK encoder, after HAProxy's `hpack-enc.c`: one per connection, writing straight into
//! the connection's write buffer (usually right after a reserved HEADERS frame header, see
//! [`crate::frame::PendingHeaders`]).
//!
//! No dynamic table: a field is one of the static table's exact pairs (one byte), or a literal
//! "without indexing" (or "never indexed") whose name is a static-table index when the table
//! has the name, and whose value is a raw string. No table search, no insertion, no eviction,
//! no Huffman coding unless asked for: the cost of a field is a couple of lookups and copies.

use super::table::{static_name_index, static_pair_index};
use super::{DEFAULT_TABLE_SIZE, Field, INT_MAX_LEN, encode_int, huffman};

/// Encodes field blocks for the peer's decoder (see the module docs for the representation).
#[derive(Debug, Clone)]
pub struct Encoder {
    /// The dynamic table size the peer's decoder believes we use: 4096 until we signal 0.
    signalled: usize,
    /// A size update of 0 must open the next block.
    update_pending: bool,
    /// Huffman-code strings when that makes them shorter (off by default: it costs CPU on
    /// every field to save bytes a LAN does not need saved).
    huffman: bool,
}

impl Default for Encoder {
    fn default() -> Encoder {
        Encoder::new()
    }
}

impl Encoder {
    /// An encoder for a peer that starts with the default 4096-byte table.
    pub fn new() -> Encoder {
        Encoder { signalled: DEFAULT_TABLE_SIZE, update_pending: false, huffman: false }
    }

    /// Turns Huffman coding of literal strings on or off (off by default). When on, each
    /// string is coded only if that makes it shorter.
    pub fn set_huffman(&mut self, on: bool) {
        self.huffman = on;
    }

    /// Applies the peer's SETTINGS_HEADER_TABLE_SIZE. We never insert, so our table is always
    /// empty; but a peer that lowers its setting may insist on a size update (RFC 7541
    /// section 4.2), so the next block starts with "size 0" once, after which no setting needs
    /// another.
    pub fn set_peer_table_size(&mut self, size: u32) {
        if (size as usize) < self.signalled {
            self.update_pending = true;
        }
    }

    /// Emits the pending size update; a block must begin with it, so every encode call
    /// checks first. Call it explicitly to open a block that may have no field.
    pub fn begin_block(&mut self, dst: &mut Vec<u8>) {
        if self.update_pending {
            // Dynamic table size update (001xxxxx) to 0.
            dst.push(0x20);
            self.signalled = 0;
            self.update_pending = false;
        }
    }

    /// Appends one field "without indexing" (or as an exact static pair). `name` must be in
    /// lower case (checked in debug builds only; see [`crate::validate`]).
    pub fn encode(&mut self, name: &[u8], value: &[u8], dst: &mut Vec<u8>) {
        self.encode_with(name, static_name_index(name), value, false, dst);
    }

    /// Appends one field "never indexed" (RFC 7541 section 6.2.3), for values an intermediary
    /// must not let any later hop compress (credentials, small secrets).
    pub fn encode_never_indexed(&mut self, name: &[u8], value: &[u8], dst: &mut Vec<u8>) {
        self.encode_with(name, static_name_index(name), value, true, dst);
    }

    /// Appends a decoded field as it came: its static name index reused when the decoder
    /// knew it, and "never indexed" kept (RFC 7541 section 7.1.3).
    pub fn encode_field(&mut self, field: &Field<'_>, dst: &mut Vec<u8>) {
        let index = field.static_name.or_else(|| static_name_index(field.name));
        self.encode_with(field.name, index, field.value, field.never_indexed, dst);
    }

    /// Appends `:status`: one byte for 200, 204, 206, 304, 400, 404 and 500.
    pub fn encode_status(&mut self, status: u16, dst: &mut Vec<u8>) {
        debug_assert!((100..=999).contains(&status), "status code out of range");
        let digits = [
            b'0' + (status / 100 % 10) as u8,
            b'0' + (status / 10 % 10) as u8,
            b'0' + (status % 10) as u8,
        ];
        self.encode_with(b":status", Some(8), &digits, false, dst);
    }

    fn encode_with(
        &mut self,
        name: &[u8],
        name_index: Option<u8>,
        value: &[u8],
        never_indexed: bool,
        dst: &mut Vec<u8>,
    ) {
        debug_assert!(
            !name.iter().any(u8::is_ascii_uppercase),
            "HTTP/2 field names are lower case"
        );
        self.begin_block(dst);
        // Literal without indexing (0000xxxx) or never indexed (0001xxxx).
        let flags = if never_indexed { 0x10 } else { 0 };
        let Some(index) = name_index else {
            dst.push(flags);
            self.string(name, dst);
            self.string(value, dst);
            return;
        };
        if !never_indexed && let Some(pair) = static_pair_index(index, value) {
            // Indexed field (1xxxxxxx).
            dst.push(0x80 | pair);
            return;
        }
        if self.huffman {
            encode_int(dst, 4, flags, usize::from(index));
            self.string(value, dst);
            return;
        }
        // The common case in one go: name index, raw value length, value.
        dst.reserve(2 * INT_MAX_LEN + value.len());
        encode_int(dst, 4, flags, usize::from(index));
        encode_int(dst, 7, 0, value.len());
        dst.extend_from_slice(value);
    }

    fn string(&self, s: &[u8], dst: &mut Vec<u8>) {
        if self.huffman {
            let len = huffman::encoded_len(s);
            if len < s.len() {
                encode_int(dst, 7, 0x80, len);
                huffman::encode(s, dst);
                return;
            }
        }
        encode_int(dst, 7, 0, s.len());
        dst.extend_from_slice(s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hpack::Decoder;

    fn encoded(f: impl FnOnce(&mut Encoder, &mut Vec<u8>)) -> Vec<u8> {
        let mut e = Encoder::new();
        let mut out = Vec::new();
        f(&mut e, &mut out);
        out
    }

    #[test]
    fn common_pairs_take_one_byte() {
        for (name, value, byte) in [
            (&b":method"[..], &b"GET"[..], 0x82),
            (b":method", b"POST", 0x83),
            (b":path", b"/", 0x84),
            (b":scheme", b"http", 0x86),
            (b":scheme", b"https", 0x87),
            (b":status", b"200", 0x88),
            (b":status", b"204", 0x89),
            (b":status", b"304", 0x8b),
            (b":status", b"400", 0x8c),
            (b":status", b"404", 0x8d),
            (b":status", b"500", 0x8e),
        ] {
            assert_eq!(encoded(|e, out| e.encode(name, value, out)), [byte]);
        }
        assert_eq!(encoded(|e, out| e.encode_status(200, out)), [0x88]);
        assert_eq!(encoded(|e, out| e.encode_status(503, out)), [0x08, 3, b'5', b'0', b'3']);
    }

    #[test]
    fn names_from_the_static_table_values_raw() {
        // content-type is static index 31: 0000 1111 then 31 - 15 = 16.
        assert_eq!(
            encoded(|e, out| e.encode(b"content-type", b"application/grpc", out)),
            [&[0x0f, 0x10, 16][..], b"application/grpc"].concat()
        );
        // :path with another value: index 4 in the prefix.
        assert_eq!(encoded(|e, out| e.encode(b":path", b"/a", out)), [0x04, 2, b'/', b'a']);
        // te is not in the table: a literal name.
        assert_eq!(
            encoded(|e, out| e.encode(b"te", b"trailers", out)),
            [&[0x00, 2][..], b"te", &[8], b"trailers"].concat()
        );
        // Never indexed, even for a static pair.
        assert_eq!(
            encoded(|e, out| e.encode_never_indexed(b":method", b"GET", out)),
            [0x12, 3, b'G', b'E', b'T']
        );
        assert_eq!(
            encoded(|e, out| e.encode_never_indexed(b"x-secret", b"k", out)),
            [&[0x10, 8][..], b"x-secret", &[1], b"k"].concat()
        );
    }

    #[test]
    fn a_lowered_peer_table_is_answered_with_size_zero_once() {
        let mut e = Encoder::new();
        let mut out = Vec::new();
        e.set_peer_table_size(8192);
        e.encode(b":method", b"GET", &mut out);
        assert_eq!(out, [0x82]);
        out.clear();
        e.set_peer_table_size(100);
        e.encode(b":method", b"GET", &mut out);
        e.encode(b":path", b"/", &mut out);
        assert_eq!(out, [0x20, 0x82, 0x84]);
        out.clear();
        e.set_peer_table_size(0);
        e.encode(b":method", b"GET", &mut out);
        assert_eq!(out, [0x82]);
        let mut d = Decoder::new(4096, 1024);
        d.set_max_table_size(100);
        assert_eq!(d.decode(&[0x20, 0x82]).map(|b| b.len()), Ok(1));
    }

    #[test]
    fn huffman_when_asked_and_shorter() {
        let mut e = Encoder::new();
        e.set_huffman(true);
        let mut out = Vec::new();
        e.encode(b"cache-control", b"no-cache", &mut out);
        // C.4.2: no-cache Huffman-coded; cache-control is index 24.
        assert_eq!(out, [0x0f, 0x09, 0x86, 0xa8, 0xeb, 0x10, 0x64, 0x9c, 0xbf]);
        out.clear();
        // Strings Huffman would not shorten stay raw.
        e.encode(b"x", b"\x00\x01", &mut out);
        assert_eq!(out, [0x00, 1, b'x', 2, 0, 1]);
    }
}
