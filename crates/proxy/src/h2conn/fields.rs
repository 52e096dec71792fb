//! Field blocks copied out of a connection's read buffer for a stream's task: every name and
//! value in one buffer, one small record per field, no hashing, no per-field allocation.
//! Runs on the worker that owns the connection.

use fulcrum_h2::hpack::{Field, HeaderBlock, Pseudo};
use fulcrum_model::RequestFields;

/// One field of a [`Fields`]: where its name and value end in the buffer.
#[derive(Debug, Clone, Copy)]
struct Span {
    start: u32,
    name_end: u32,
    value_end: u32,
    pseudo: Option<Pseudo>,
    never_indexed: bool,
    /// The name's static-table index, as the decoder found it (spares the encoder a lookup).
    static_name: Option<u8>,
}

/// An owned field block (a request or response head, or trailers), in the order received.
#[derive(Debug, Default, Clone)]
pub(crate) struct Fields {
    buf: Vec<u8>,
    spans: Vec<Span>,
}

impl Fields {
    /// A copy of a decoded block.
    pub(crate) fn from_block(block: &HeaderBlock<'_>) -> Fields {
        let mut f = Fields::default();
        f.copy_block(block);
        f
    }

    /// Replaces the fields with a copy of a decoded block, reusing the buffers.
    pub(crate) fn copy_block(&mut self, block: &HeaderBlock<'_>) {
        self.buf.clear();
        self.spans.clear();
        self.buf.reserve(block.list_size());
        self.spans.reserve(block.len());
        for field in block {
            self.push_field(&field);
        }
    }

    /// Heap bytes held.
    pub(crate) fn capacity(&self) -> usize {
        self.buf.capacity() + self.spans.capacity() * std::mem::size_of::<Span>()
    }

    /// Appends a field.
    pub(crate) fn push(&mut self, name: &[u8], value: &[u8]) {
        self.push_field(&Field::new(name, value));
    }

    fn push_field(&mut self, field: &Field<'_>) {
        // Blocks are bounded far below 4 GiB by the header list limit.
        let start = self.buf.len() as u32;
        self.buf.extend_from_slice(field.name);
        let name_end = self.buf.len() as u32;
        self.buf.extend_from_slice(field.value);
        let value_end = self.buf.len() as u32;
        self.spans.push(Span {
            start,
            name_end,
            value_end,
            pseudo: field.pseudo,
            never_indexed: field.never_indexed,
            static_name: field.static_name,
        });
    }

    fn field(&self, s: &Span) -> Field<'_> {
        let name = &self.buf[s.start as usize..s.name_end as usize];
        Field {
            name,
            value: self.value(s),
            pseudo: s.pseudo,
            never_indexed: s.never_indexed,
            static_name: s.static_name,
        }
    }

    /// Every field, pseudo-header fields first (as received).
    pub(crate) fn iter(&self) -> impl Iterator<Item = Field<'_>> + Clone {
        self.spans.iter().map(|s| self.field(s))
    }

    /// The regular (non-pseudo) fields.
    pub(crate) fn regular(&self) -> impl Iterator<Item = Field<'_>> + Clone {
        self.iter().filter(|f| f.pseudo.is_none() && f.name.first() != Some(&b':'))
    }

    /// The value of pseudo-header field `p`.
    pub(crate) fn pseudo(&self, p: Pseudo) -> Option<&[u8]> {
        self.spans.iter().find(|s| s.pseudo == Some(p)).map(|s| self.value(s))
    }

    /// The first value of regular field `name` (lower case, not a pseudo-header name).
    pub(crate) fn get(&self, name: &[u8]) -> Option<&[u8]> {
        self.values(name).next()
    }

    /// Every value of regular field `name` (lower case, not a pseudo-header name), in order.
    /// Runs several times per request: spans are compared by length before any byte is.
    pub(crate) fn values<'a>(&'a self, name: &[u8]) -> impl Iterator<Item = &'a [u8]> {
        debug_assert!(name.first() != Some(&b':'));
        self.spans
            .iter()
            .filter(move |s| {
                (s.name_end - s.start) as usize == name.len()
                    && self.buf.get(s.start as usize..s.name_end as usize) == Some(name)
            })
            .map(|s| self.value(s))
    }

    fn value(&self, s: &Span) -> &[u8] {
        &self.buf[s.name_end as usize..s.value_end as usize]
    }

    /// Name and value bytes of every field (the size HPACK counts before compression,
    /// without its 32-byte per-field overhead), for the access record.
    pub(crate) fn size(&self) -> usize {
        self.buf.len()
    }
}

/// A request's fields as the route table reads them.
pub(crate) struct RouteFields<'a> {
    pub(crate) fields: &'a Fields,
    pub(crate) grpc: bool,
}

impl RequestFields for RouteFields<'_> {
    fn is_grpc(&self) -> bool {
        self.grpc
    }

    fn has(&self, name: &str, value: &[u8]) -> bool {
        // Route header names are tokens (validated with the config): never a pseudo-header's.
        self.fields.values(name.as_bytes()).any(|v| v.trim_ascii() == value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_block_is_copied_in_order_with_its_pseudo_fields() {
        let mut f = Fields::default();
        f.push(b":method", b"POST");
        f.push(b":path", b"/a");
        f.push(b"content-type", b"application/grpc");
        f.push(b"x-a", b"1");
        f.push(b"x-a", b"2");
        assert_eq!(f.pseudo(Pseudo::Method), Some(&b"POST"[..]));
        assert_eq!(f.pseudo(Pseudo::Authority), None);
        assert_eq!(f.get(b"x-a"), Some(&b"1"[..]));
        assert_eq!(f.values(b"x-a").collect::<Vec<_>>(), [&b"1"[..], &b"2"[..]]);
        assert_eq!(f.get(b"x-b"), None);
        assert_eq!(f.regular().count(), 3);
        assert_eq!(f.iter().count(), 5);
        let route = RouteFields { fields: &f, grpc: true };
        assert!(route.has("x-a", b"2") && !route.has("x-a", b"3") && route.is_grpc());
    }

    #[test]
    fn a_block_copied_into_a_used_head_replaces_it_and_keeps_static_names() {
        use fulcrum_h2::hpack::{Decoder, Encoder};
        let mut block = Vec::new();
        let mut encoder = Encoder::new();
        encoder.encode(b":method", b"POST", &mut block);
        encoder.encode(b"content-type", b"application/grpc", &mut block);
        encoder.encode(b"x-custom", b"1", &mut block);
        let mut decoder = Decoder::default();
        let decoded = decoder.decode(&block).unwrap();

        let mut f = Fields::default();
        f.push(b"x-old", b"gone");
        f.copy_block(&decoded);
        let fields: Vec<_> = f.iter().collect();
        assert_eq!(fields.len(), 3);
        assert_eq!(f.get(b"x-old"), None);
        assert_eq!(f.pseudo(Pseudo::Method), Some(&b"POST"[..]));
        // content-type is static entry 31; x-custom is not in the table.
        assert_eq!(fields[1].static_name, Some(31));
        assert_eq!(fields[2].static_name, None);
        assert_eq!(f.size(), b":methodPOSTcontent-typeapplication/grpcx-custom1".len());
    }
}
