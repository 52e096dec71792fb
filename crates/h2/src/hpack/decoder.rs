//! The HPACK decoder: one per connection, fed each complete field block (HEADERS plus its
//! CONTINUATION fragments, joined by the engine) in the order received.

use super::memo::HuffmanMemo;
use super::table::{DynamicTable, STATIC, STATIC_BLOB, STATIC_OFFSET, static_pseudo};
use super::{DEFAULT_TABLE_SIZE, ENTRY_OVERHEAD, Field, HpackError, Pseudo, decode_int, huffman};

/// Which buffer a decoded name or value lives in: an index into `HeaderBlock::bases`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Src {
    /// A raw literal in the block.
    Input = 0,
    /// Huffman-decoded, or copied from the dynamic table, in the scratch buffer.
    Scratch = 1,
    /// A dynamic-table entry's bytes, valid until the table changes (fields are copied to the
    /// scratch buffer before that).
    Table = 2,
    /// The static table ([`STATIC_BLOB`]).
    Static = 3,
}

/// Where a decoded name or value lives: `bases[src][start..start + len]`. One shape for all
/// four buffers, so resolving a field is two indexed slices, not a branch per source.
#[derive(Debug, Clone, Copy)]
struct Str {
    src: Src,
    start: usize,
    len: usize,
}

impl Str {
    const fn new(src: Src, start: usize, len: usize) -> Str {
        Str { src, start, len }
    }

    fn resolve<'a>(self, bases: &[&'a [u8]; 4]) -> &'a [u8] {
        bases[self.src as usize].get(self.start..self.start + self.len).unwrap_or_default()
    }
}

/// Static entry `index` (1-based) as name and value locations.
fn static_strs(index: usize) -> (Str, Str) {
    let (name, value) = STATIC[index - 1];
    let at = usize::from(STATIC_OFFSET[index - 1]);
    (Str::new(Src::Static, at, name.len()), Str::new(Src::Static, at + name.len(), value.len()))
}

/// A decoded field as the decoder keeps it: two locations and the facts about the name.
#[derive(Debug, Clone, Copy)]
struct Span {
    name: Str,
    value: Str,
    pseudo: Option<Pseudo>,
    never_indexed: bool,
    static_name: Option<u8>,
}

/// How a literal field affects the dynamic table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Indexing {
    Incremental,
    Without,
    Never,
}

/// A string read from the block: where it is, its full decoded length, and whether all of it
/// was stored (Huffman strings are stored only up to a cap; see [`Decoder::decode`]).
struct Decoded {
    at: Str,
    len: usize,
    complete: bool,
}

/// Decodes the peer's field blocks, keeping the dynamic table the peer's encoder indexes.
///
/// Memory is bounded by the two limits it is built with: the dynamic table by
/// `max_table_size` (twice that in its buffer), the decoded fields of one block by
/// `max_list_size` plus one table's worth (RFC 9113 counting), whatever the block holds; the
/// memo of recent Huffman strings is about 1.4 KiB once used.
#[derive(Debug)]
pub struct Decoder {
    table: DynamicTable,
    /// The SETTINGS_HEADER_TABLE_SIZE we advertise: no size update may exceed it.
    max_table_size: usize,
    /// We lowered our setting below the table's size: the next block must start with an
    /// update.
    update_required: bool,
    max_list_size: usize,
    /// Huffman-decoded strings of the current block, and copies of dynamic-table entries
    /// it references before changing the table.
    scratch: Vec<u8>,
    /// The current block's fields.
    fields: Vec<Span>,
    /// Some of them borrow dynamic-table bytes ([`Src::Table`]).
    table_refs: bool,
    /// What the peer's recent Huffman strings decode to.
    memo: HuffmanMemo,
}

impl Default for Decoder {
    /// A decoder for the protocol's default table size (4096) and a 64 KiB header list.
    fn default() -> Decoder {
        Decoder::new(DEFAULT_TABLE_SIZE, 64 * 1024)
    }
}

impl Decoder {
    /// A decoder whose peer may use a dynamic table of up to `max_table_size` bytes (the
    /// SETTINGS_HEADER_TABLE_SIZE we advertise; use 4096, the protocol's initial value, and
    /// [`Decoder::set_max_table_size`] once a different setting is acknowledged) and whose
    /// blocks may decode to at most `max_list_size` (name + value + 32 per field).
    pub fn new(max_table_size: usize, max_list_size: usize) -> Decoder {
        Decoder {
            table: DynamicTable::new(max_table_size),
            max_table_size,
            update_required: false,
            max_list_size,
            scratch: Vec::new(),
            fields: Vec::new(),
            table_refs: false,
            memo: HuffmanMemo::default(),
        }
    }

    /// Applies a new SETTINGS_HEADER_TABLE_SIZE once the peer has acknowledged it. When it is
    /// below the size the peer's encoder uses, the peer's next block must begin with a size
    /// update within it (RFC 7541 section 4.2), or decoding fails.
    pub fn set_max_table_size(&mut self, max_table_size: usize) {
        self.max_table_size = max_table_size;
        if self.table.max_size() > max_table_size {
            self.update_required = true;
        }
    }

    /// Changes the limit on a decoded block (name + value + 32 per field).
    pub fn set_max_list_size(&mut self, max_list_size: usize) {
        self.max_list_size = max_list_size;
    }

    /// The dynamic table's current size (name + value + 32 per entry).
    pub fn table_size(&self) -> usize {
        self.table.size()
    }

    /// The dynamic table's current limit, as last set by the peer's size updates.
    pub fn table_max_size(&self) -> usize {
        self.table.max_size()
    }

    /// Number of entries in the dynamic table.
    pub fn table_len(&self) -> usize {
        self.table.len()
    }

    /// Dynamic-table entry `index` (1 = newest) as name and value; for diagnostics and tests.
    pub fn table_entry(&self, index: usize) -> Option<(&[u8], &[u8])> {
        self.table.get(index).map(|(_, name, value)| (name, value))
    }

    /// Heap bytes the decoder holds (dynamic table, scratch buffer, field list), for a
    /// connection's memory accounting. Bounded by its limits: about 2 * `max_table_size` for
    /// the table, and for the buffers of one block `max_list_size + max_table_size` bytes plus
    /// a 56-byte record per stored field, each of which counts at least 32 bytes against
    /// `max_list_size` (allocation rounding can double both).
    pub fn heap_bytes(&self) -> usize {
        self.table.heap_bytes()
            + self.memo.heap_bytes()
            + self.scratch.capacity()
            + self.fields.capacity() * std::mem::size_of::<Span>()
    }

    /// Decodes one complete field block.
    ///
    /// The fields borrow from `block` and from the decoder, which cannot decode the next block
    /// until they are dropped. Every error but [`HpackError::HeaderListTooLarge`] is a
    /// COMPRESSION_ERROR for the whole connection. When the list grows past the limit the
    /// decoder stops storing fields (and stores no Huffman string beyond the limit or the
    /// table size), but still reads the block to its end so the dynamic table stays in step
    /// with the peer's; the block is then refused with `HeaderListTooLarge`.
    pub fn decode<'a>(&'a mut self, block: &'a [u8]) -> Result<HeaderBlock<'a>, HpackError> {
        self.scratch.clear();
        self.fields.clear();
        self.table_refs = false;
        if self.update_required && block.first().is_none_or(|&b| b & 0xe0 != 0x20) {
            return Err(HpackError::MissingTableSizeUpdate);
        }
        let mut st = BlockState { pos: 0, list_size: 0, over: false };
        let mut fields_seen = false;
        while let Some(&b) = block.get(st.pos) {
            if b & 0x80 != 0 {
                let index = decode_int(block, &mut st.pos, 7)?;
                self.indexed(index, &mut st)?;
            } else if b & 0x40 != 0 {
                let index = decode_int(block, &mut st.pos, 6)?;
                self.literal(block, index, Indexing::Incremental, &mut st)?;
            } else if b & 0x20 != 0 {
                if fields_seen {
                    return Err(HpackError::LateTableSizeUpdate);
                }
                let size = decode_int(block, &mut st.pos, 5)?;
                if size as usize > self.max_table_size {
                    let max = self.max_table_size;
                    return Err(HpackError::TableSizeTooLarge { requested: size, max });
                }
                self.detach_table_refs();
                self.table.set_max_size(size as usize);
                self.update_required = false;
                continue;
            } else {
                let index = decode_int(block, &mut st.pos, 4)?;
                let mode = if b & 0x10 != 0 { Indexing::Never } else { Indexing::Without };
                self.literal(block, index, mode, &mut st)?;
            }
            fields_seen = true;
        }
        if st.over {
            return Err(HpackError::HeaderListTooLarge { limit: self.max_list_size });
        }
        Ok(HeaderBlock {
            bases: [block, &self.scratch, self.table.bytes(), &STATIC_BLOB],
            fields: &self.fields,
            list_size: st.list_size,
        })
    }

    /// Counts a field of `size` against the list limit: true when it may be stored.
    fn admit(&self, st: &mut BlockState, size: usize) -> bool {
        st.list_size = st.list_size.saturating_add(size);
        if st.list_size > self.max_list_size {
            st.over = true;
        }
        !st.over
    }

    /// An indexed field (RFC 7541 section 6.1).
    fn indexed(&mut self, index: u32, st: &mut BlockState) -> Result<(), HpackError> {
        let i = index as usize;
        if (1..=STATIC.len()).contains(&i) {
            let (name, value) = static_strs(i);
            if self.admit(st, name.len + value.len + ENTRY_OVERHEAD) {
                self.fields.push(Span {
                    name,
                    value,
                    pseudo: static_pseudo(i),
                    never_indexed: false,
                    static_name: Some(index as u8),
                });
            }
            return Ok(());
        }
        let Some(&e) = i.checked_sub(STATIC.len()).and_then(|d| self.table.entry(d)) else {
            return Err(HpackError::BadIndex(index));
        };
        if self.admit(st, e.name_len + e.value_len + ENTRY_OVERHEAD) {
            // Borrowed from the table: no copy unless a later field of this block changes it.
            self.table_refs = true;
            self.fields.push(Span {
                name: Str::new(Src::Table, e.offset, e.name_len),
                value: Str::new(Src::Table, e.offset + e.name_len, e.value_len),
                pseudo: e.pseudo,
                never_indexed: false,
                static_name: e.static_name,
            });
        }
        Ok(())
    }

    /// Copies the fields that borrow dynamic-table bytes into the scratch buffer, before the
    /// table changes under them.
    fn detach_table_refs(&mut self) {
        if !std::mem::take(&mut self.table_refs) {
            return;
        }
        let table = self.table.bytes();
        for span in &mut self.fields {
            for s in [&mut span.name, &mut span.value] {
                if s.src == Src::Table {
                    let at = self.scratch.len();
                    self.scratch.extend_from_slice(s.resolve(&[&[], &[], table, &[]]));
                    *s = Str::new(Src::Scratch, at, s.len);
                }
            }
        }
    }

    /// A literal field (RFC 7541 sections 6.2.1-6.2.3): name `index` (0 for a literal name).
    fn literal(
        &mut self,
        block: &[u8],
        index: u32,
        mode: Indexing,
        st: &mut BlockState,
    ) -> Result<(), HpackError> {
        let mark = self.scratch.len();
        // Strings are stored up to what the list may still hold, or what the table may hold
        // when the field is to be indexed, so a bomb cannot grow the scratch buffer further.
        let mut cap = if st.over { 0 } else { self.max_list_size.saturating_sub(st.list_size) };
        if mode == Indexing::Incremental {
            cap = cap.max(self.table.max_size());
        }
        let remember = mode != Indexing::Never;
        let i = index as usize;
        let (name, pseudo, static_name) = if i == 0 {
            let name = self.string(block, &mut st.pos, cap, remember)?;
            let bytes = name.at.resolve(&[block, &self.scratch, &[], &[]]);
            let pseudo = if name.complete && bytes.first() == Some(&b':') {
                Pseudo::from_name(bytes)
            } else {
                None
            };
            (name, pseudo, None)
        } else if i <= STATIC.len() {
            let (at, _) = static_strs(i);
            (Decoded { at, len: at.len, complete: true }, static_pseudo(i), Some(index as u8))
        } else {
            let Some((entry, name, _)) =
                i.checked_sub(STATIC.len()).and_then(|d| self.table.get(d))
            else {
                return Err(HpackError::BadIndex(index));
            };
            let (pseudo, static_name, len) = (entry.pseudo, entry.static_name, name.len());
            // A copy: inserting this very field may evict the entry (RFC 7541 section 4.4).
            // At most one table entry long.
            self.scratch.extend_from_slice(name);
            (
                Decoded { at: Str::new(Src::Scratch, mark, len), len, complete: true },
                pseudo,
                static_name,
            )
        };
        let value_cap = cap.saturating_sub(name.len);
        let value = self.string(block, &mut st.pos, value_cap, remember)?;
        let store = self.admit(st, name.len + value.len + ENTRY_OVERHEAD);
        if mode == Indexing::Incremental {
            self.detach_table_refs();
            if self.table.fits(name.len, value.len) {
                // Both strings fit the table, hence the cap: they are complete.
                debug_assert!(name.complete && value.complete);
                let bases = [block, &self.scratch[..], &[], &STATIC_BLOB[..]];
                let (n, v) = (name.at.resolve(&bases), value.at.resolve(&bases));
                self.table.insert(n, v, pseudo, static_name);
            } else {
                self.table.clear();
            }
        }
        if store {
            debug_assert!(name.complete && value.complete);
            self.fields.push(Span {
                name: name.at,
                value: value.at,
                pseudo,
                never_indexed: mode == Indexing::Never,
                static_name,
            });
        } else {
            self.scratch.truncate(mark);
        }
        Ok(())
    }

    /// A string literal (RFC 7541 section 5.2) at `*pos`; a Huffman one is decoded into the
    /// scratch buffer, storing at most `cap` bytes, through the memo when `remember` (a field
    /// the peer did not mark "never indexed").
    fn string(
        &mut self,
        block: &[u8],
        pos: &mut usize,
        cap: usize,
        remember: bool,
    ) -> Result<Decoded, HpackError> {
        let huffman = block.get(*pos).is_some_and(|&b| b & 0x80 != 0);
        let len = decode_int(block, pos, 7)? as usize;
        let start = *pos;
        let raw = block.get(start..start.saturating_add(len)).ok_or(HpackError::Truncated)?;
        *pos = start + len;
        if !huffman {
            return Ok(Decoded { at: Str::new(Src::Input, start, len), len, complete: true });
        }
        let at = self.scratch.len();
        let decoded = if remember {
            self.memo.decode(raw, &mut self.scratch, cap)?
        } else {
            huffman::decode(raw, &mut self.scratch, cap)?
        };
        let stored = self.scratch.len() - at;
        Ok(Decoded {
            at: Str::new(Src::Scratch, at, stored),
            len: decoded,
            complete: stored == decoded,
        })
    }

    /// Bytes held by the scratch buffer and the field list (for the bounded-memory tests).
    #[cfg(test)]
    fn held(&self) -> (usize, usize) {
        (self.scratch.capacity(), self.fields.capacity())
    }
}

/// Progress through one block.
struct BlockState {
    pos: usize,
    /// Decoded list size so far (RFC 9113 counting), saturating.
    list_size: usize,
    /// The list passed the limit: fields are no longer stored.
    over: bool,
}

/// A decoded field block: the fields in order, borrowed from the block and the decoder.
#[derive(Debug, Clone, Copy)]
pub struct HeaderBlock<'a> {
    /// The buffers fields point into, indexed by [`Src`].
    bases: [&'a [u8]; 4],
    fields: &'a [Span],
    list_size: usize,
}

impl<'a> HeaderBlock<'a> {
    /// Number of fields.
    pub fn len(&self) -> usize {
        self.fields.len()
    }

    /// True for a block without fields.
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// The decoded list size: name + value + 32 per field (RFC 9113 section 6.5.2).
    pub fn list_size(&self) -> usize {
        self.list_size
    }

    /// Field `i`, in block order.
    pub fn get(&self, i: usize) -> Option<Field<'a>> {
        self.fields.get(i).map(|s| self.field(s))
    }

    /// The fields in block order.
    pub fn iter(&self) -> HeaderBlockIter<'a> {
        HeaderBlockIter { block: *self, spans: self.fields.iter() }
    }

    fn field(&self, s: &Span) -> Field<'a> {
        Field {
            name: s.name.resolve(&self.bases),
            value: s.value.resolve(&self.bases),
            pseudo: s.pseudo,
            never_indexed: s.never_indexed,
            static_name: s.static_name,
        }
    }
}

impl<'a> IntoIterator for &HeaderBlock<'a> {
    type Item = Field<'a>;
    type IntoIter = HeaderBlockIter<'a>;

    fn into_iter(self) -> HeaderBlockIter<'a> {
        self.iter()
    }
}

/// Iterator over the fields of a [`HeaderBlock`].
#[derive(Debug, Clone)]
pub struct HeaderBlockIter<'a> {
    block: HeaderBlock<'a>,
    spans: std::slice::Iter<'a, Span>,
}

impl<'a> Iterator for HeaderBlockIter<'a> {
    type Item = Field<'a>;

    fn next(&mut self) -> Option<Field<'a>> {
        self.spans.next().map(|s| self.block.field(s))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.spans.size_hint()
    }
}

impl ExactSizeIterator for HeaderBlockIter<'_> {}

#[cfg(test)]
mod tests;
