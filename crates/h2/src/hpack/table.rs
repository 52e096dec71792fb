//! The HPACK static table (RFC 7541 Appendix A) and the decoder's dynamic table.

use std::collections::VecDeque;

use super::{ENTRY_OVERHEAD, Pseudo};

/// The static table: index `i` (1-based on the wire) is `STATIC[i - 1]`.
pub(crate) const STATIC: [(&[u8], &[u8]); 61] = [
    (b":authority", b""),
    (b":method", b"GET"),
    (b":method", b"POST"),
    (b":path", b"/"),
    (b":path", b"/index.html"),
    (b":scheme", b"http"),
    (b":scheme", b"https"),
    (b":status", b"200"),
    (b":status", b"204"),
    (b":status", b"206"),
    (b":status", b"304"),
    (b":status", b"400"),
    (b":status", b"404"),
    (b":status", b"500"),
    (b"accept-charset", b""),
    (b"accept-encoding", b"gzip, deflate"),
    (b"accept-language", b""),
    (b"accept-ranges", b""),
    (b"accept", b""),
    (b"access-control-allow-origin", b""),
    (b"age", b""),
    (b"allow", b""),
    (b"authorization", b""),
    (b"cache-control", b""),
    (b"content-disposition", b""),
    (b"content-encoding", b""),
    (b"content-language", b""),
    (b"content-length", b""),
    (b"content-location", b""),
    (b"content-range", b""),
    (b"content-type", b""),
    (b"cookie", b""),
    (b"date", b""),
    (b"etag", b""),
    (b"expect", b""),
    (b"expires", b""),
    (b"from", b""),
    (b"host", b""),
    (b"if-match", b""),
    (b"if-modified-since", b""),
    (b"if-none-match", b""),
    (b"if-range", b""),
    (b"if-unmodified-since", b""),
    (b"last-modified", b""),
    (b"link", b""),
    (b"location", b""),
    (b"max-forwards", b""),
    (b"proxy-authenticate", b""),
    (b"proxy-authorization", b""),
    (b"range", b""),
    (b"referer", b""),
    (b"refresh", b""),
    (b"retry-after", b""),
    (b"server", b""),
    (b"set-cookie", b""),
    (b"strict-transport-security", b""),
    (b"transfer-encoding", b""),
    (b"user-agent", b""),
    (b"vary", b""),
    (b"via", b""),
    (b"www-authenticate", b""),
];

/// Total bytes of the static table's names and values.
const STATIC_BLOB_LEN: usize = {
    let mut n = 0;
    let mut i = 0;
    while i < STATIC.len() {
        n += STATIC[i].0.len() + STATIC[i].1.len();
        i += 1;
    }
    n
};

/// The static table's names and values back to back (entry `i`'s name at
/// `STATIC_OFFSET[i]`, its value right after), so decoded fields can point into it the same
/// way they point into the block or the dynamic table.
pub(crate) const STATIC_BLOB: [u8; STATIC_BLOB_LEN] = {
    let mut blob = [0u8; STATIC_BLOB_LEN];
    let mut at = 0;
    let mut i = 0;
    while i < STATIC.len() {
        let (name, value) = STATIC[i];
        let mut j = 0;
        while j < name.len() {
            blob[at] = name[j];
            at += 1;
            j += 1;
        }
        let mut j = 0;
        while j < value.len() {
            blob[at] = value[j];
            at += 1;
            j += 1;
        }
        i += 1;
    }
    blob
};

/// Offset of each static entry in [`STATIC_BLOB`].
pub(crate) const STATIC_OFFSET: [u16; 61] = {
    let mut offsets = [0u16; 61];
    let mut at = 0;
    let mut i = 0;
    while i < STATIC.len() {
        offsets[i] = at as u16;
        at += STATIC[i].0.len() + STATIC[i].1.len();
        i += 1;
    }
    offsets
};

/// The pseudo-header named by static entry `index` (1-based), without comparing bytes.
pub(crate) fn static_pseudo(index: usize) -> Option<Pseudo> {
    match index {
        1 => Some(Pseudo::Authority),
        2 | 3 => Some(Pseudo::Method),
        4 | 5 => Some(Pseudo::Path),
        6 | 7 => Some(Pseudo::Scheme),
        8..=14 => Some(Pseudo::Status),
        _ => None,
    }
}

/// The first static index whose name is `name`: a jump on the length, then at most six
/// compares (a flat match on 52 byte strings compiles to a chain of compares, which costs a
/// miss like `te` or `grpc-timeout` every one of them). No hashing involved.
pub(crate) fn static_name_index(name: &[u8]) -> Option<u8> {
    let index = match name.len() {
        3 => match name {
            b"age" => 21,
            b"via" => 60,
            _ => return None,
        },
        4 => match name {
            b"date" => 33,
            b"etag" => 34,
            b"from" => 37,
            b"host" => 38,
            b"link" => 45,
            b"vary" => 59,
            _ => return None,
        },
        5 => match name {
            b":path" => 4,
            b"allow" => 22,
            b"range" => 50,
            _ => return None,
        },
        6 => match name {
            b"accept" => 19,
            b"cookie" => 32,
            b"expect" => 35,
            b"server" => 54,
            _ => return None,
        },
        7 => match name {
            b":method" => 2,
            b":scheme" => 6,
            b":status" => 8,
            b"expires" => 36,
            b"referer" => 51,
            b"refresh" => 52,
            _ => return None,
        },
        8 => match name {
            b"if-match" => 39,
            b"if-range" => 42,
            b"location" => 46,
            _ => return None,
        },
        10 => match name {
            b":authority" => 1,
            b"set-cookie" => 55,
            b"user-agent" => 58,
            _ => return None,
        },
        11 => match name {
            b"retry-after" => 53,
            _ => return None,
        },
        12 => match name {
            b"content-type" => 31,
            b"max-forwards" => 47,
            _ => return None,
        },
        13 => match name {
            b"accept-ranges" => 18,
            b"authorization" => 23,
            b"cache-control" => 24,
            b"content-range" => 30,
            b"if-none-match" => 41,
            b"last-modified" => 44,
            _ => return None,
        },
        14 => match name {
            b"accept-charset" => 15,
            b"content-length" => 28,
            _ => return None,
        },
        15 => match name {
            b"accept-encoding" => 16,
            b"accept-language" => 17,
            _ => return None,
        },
        16 => match name {
            b"content-encoding" => 26,
            b"content-language" => 27,
            b"content-location" => 29,
            b"www-authenticate" => 61,
            _ => return None,
        },
        17 => match name {
            b"if-modified-since" => 40,
            b"transfer-encoding" => 57,
            _ => return None,
        },
        18 => match name {
            b"proxy-authenticate" => 48,
            _ => return None,
        },
        19 => match name {
            b"content-disposition" => 25,
            b"if-unmodified-since" => 43,
            b"proxy-authorization" => 49,
            _ => return None,
        },
        25 => match name {
            b"strict-transport-security" => 56,
            _ => return None,
        },
        27 => match name {
            b"access-control-allow-origin" => 20,
            _ => return None,
        },
        _ => return None,
    };
    Some(index)
}

/// The static index of an exact (name, value) pair worth one byte: the pseudo-header pairs
/// and `accept-encoding: gzip, deflate`. `name_index` is any static index of the name.
pub(crate) fn static_pair_index(name_index: u8, value: &[u8]) -> Option<u8> {
    Some(match (name_index, value) {
        (2 | 3, b"GET") => 2,
        (2 | 3, b"POST") => 3,
        (4 | 5, b"/") => 4,
        (4 | 5, b"/index.html") => 5,
        (6 | 7, b"http") => 6,
        (6 | 7, b"https") => 7,
        (8..=14, b"200") => 8,
        (8..=14, b"204") => 9,
        (8..=14, b"206") => 10,
        (8..=14, b"304") => 11,
        (8..=14, b"400") => 12,
        (8..=14, b"404") => 13,
        (8..=14, b"500") => 14,
        (16, b"gzip, deflate") => 16,
        _ => return None,
    })
}

/// One dynamic-table entry; its bytes (name then value) live in [`DynamicTable::bytes`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Entry {
    /// Offset of the name in `bytes`.
    pub(crate) offset: usize,
    pub(crate) name_len: usize,
    pub(crate) value_len: usize,
    /// Facts about the name learnt once, at insertion.
    pub(crate) pseudo: Option<Pseudo>,
    pub(crate) static_name: Option<u8>,
}

impl Entry {
    fn size(&self) -> usize {
        self.name_len + self.value_len + ENTRY_OVERHEAD
    }
}

/// The decoder's dynamic table (RFC 7541 section 2.3.2): entries' bytes packed in one buffer in
/// insertion order, oldest first; eviction advances `head`, and the live bytes move back to the
/// front only when the buffer would pass twice the table size. Memory is bounded by
/// 2 * `max_size` bytes plus `max_size / 32` entry records.
#[derive(Debug, Default)]
pub(crate) struct DynamicTable {
    bytes: Vec<u8>,
    /// Offset of the oldest live entry's bytes.
    head: usize,
    /// Oldest at the front, newest (index 1) at the back.
    entries: VecDeque<Entry>,
    /// Sum of entry sizes (name + value + 32).
    size: usize,
    max_size: usize,
}

impl DynamicTable {
    pub(crate) fn new(max_size: usize) -> DynamicTable {
        DynamicTable { max_size, ..DynamicTable::default() }
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(crate) fn size(&self) -> usize {
        self.size
    }

    pub(crate) fn max_size(&self) -> usize {
        self.max_size
    }

    /// The buffer entries' bytes live in, for fields that borrow them until the table changes.
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Entry `index` (1 = newest), without slicing its bytes.
    pub(crate) fn entry(&self, index: usize) -> Option<&Entry> {
        self.entries.get(self.entries.len().checked_sub(index)?)
    }

    /// Entry `index` (1 = newest) and its name and value bytes.
    pub(crate) fn get(&self, index: usize) -> Option<(&Entry, &[u8], &[u8])> {
        let i = self.entries.len().checked_sub(index)?;
        let e = self.entries.get(i)?;
        let name = self.bytes.get(e.offset..e.offset + e.name_len)?;
        let value = self.bytes.get(e.offset + e.name_len..e.offset + e.name_len + e.value_len)?;
        Some((e, name, value))
    }

    /// Applies a dynamic table size update.
    pub(crate) fn set_max_size(&mut self, max_size: usize) {
        self.max_size = max_size;
        self.evict_to(max_size);
    }

    fn evict_to(&mut self, target: usize) {
        while self.size > target {
            let Some(e) = self.entries.pop_front() else { break };
            self.size -= e.size();
            self.head = e.offset + e.name_len + e.value_len;
        }
        if self.entries.is_empty() {
            self.bytes.clear();
            self.head = 0;
            self.size = 0;
        }
    }

    /// Empties the table, as inserting an entry larger than it does.
    pub(crate) fn clear(&mut self) {
        self.evict_to(0);
    }

    /// Would an entry of this size fit at all (otherwise inserting empties the table)?
    pub(crate) fn fits(&self, name_len: usize, value_len: usize) -> bool {
        name_len + value_len + ENTRY_OVERHEAD <= self.max_size
    }

    /// Inserts an entry, evicting the oldest ones to make room (RFC 7541 section 4.4); an
    /// entry larger than the whole table empties it.
    pub(crate) fn insert(
        &mut self,
        name: &[u8],
        value: &[u8],
        pseudo: Option<Pseudo>,
        static_name: Option<u8>,
    ) {
        let entry_size = name.len() + value.len() + ENTRY_OVERHEAD;
        if entry_size > self.max_size {
            self.evict_to(0);
            return;
        }
        self.evict_to(self.max_size - entry_size);
        let needed = name.len() + value.len();
        if self.head > 0 && self.bytes.len() + needed > 2 * self.max_size {
            self.bytes.drain(..self.head);
            for e in &mut self.entries {
                e.offset -= self.head;
            }
            self.head = 0;
        }
        let offset = self.bytes.len();
        self.bytes.extend_from_slice(name);
        self.bytes.extend_from_slice(value);
        self.entries.push_back(Entry {
            offset,
            name_len: name.len(),
            value_len: value.len(),
            pseudo,
            static_name,
        });
        self.size += entry_size;
    }

    /// Bytes held by the buffer, live and dead (for the bounded-memory tests).
    #[cfg(test)]
    pub(crate) fn buffer_len(&self) -> usize {
        self.bytes.len()
    }

    /// Heap bytes allocated for the table.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.bytes.capacity() + self.entries.capacity() * std::mem::size_of::<Entry>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_blob_holds_every_entry() {
        for (i, (name, value)) in STATIC.iter().enumerate() {
            let at = usize::from(STATIC_OFFSET[i]);
            assert_eq!(&STATIC_BLOB[at..at + name.len()], *name);
            assert_eq!(&STATIC_BLOB[at + name.len()..at + name.len() + value.len()], *value);
        }
    }

    #[test]
    fn static_lookups_agree_with_the_table() {
        for (i, (name, value)) in STATIC.iter().enumerate() {
            let index = i + 1;
            let first = STATIC.iter().position(|(n, _)| n == name).map(|p| p as u8 + 1);
            assert_eq!(static_name_index(name), first, "{}", String::from_utf8_lossy(name));
            assert_eq!(static_pseudo(index), Pseudo::from_name(name));
            if let Some(pair) = static_pair_index(first.unwrap_or(0), value) {
                assert_eq!(STATIC[pair as usize - 1], (*name, *value));
            }
        }
        assert_eq!(static_name_index(b"te"), None);
        assert_eq!(static_name_index(b"Content-Type"), None);
    }

    #[test]
    fn dynamic_table_evicts_oldest_and_keeps_buffer_bounded() {
        let mut t = DynamicTable::new(100);
        for i in 0..1000u32 {
            let value = format!("v{i}");
            t.insert(b"name", value.as_bytes(), None, None);
            assert!(t.size() <= 100);
            assert!(t.buffer_len() <= 200, "buffer {}", t.buffer_len());
            let (_, n, v) = t.get(1).unwrap();
            assert_eq!((n, v), (&b"name"[..], value.as_bytes()));
        }
        // 4 + 4 + 32 = 40 bytes each: two fit in 100.
        assert_eq!(t.len(), 2);
        t.insert(&[b'x'; 100], b"", None, None);
        assert_eq!((t.len(), t.size()), (0, 0));
        t.insert(b"a", b"b", None, None);
        t.set_max_size(0);
        assert_eq!((t.len(), t.size()), (0, 0));
    }
}
