//! A read buffer over monoio's owned-buffer IO: bytes `start..len` are unread.

use monoio::buf::{IoBuf, IoBufMut};
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};

/// A fixed-capacity read buffer. Reads append after the unread bytes; consumed bytes are
/// reclaimed when the buffer empties or when space runs out.
#[derive(Debug)]
pub struct ReadBuf {
    buf: Vec<u8>,
    start: usize,
    /// The fixed capacity (kept apart: a read cancelled by a timeout takes `buf` with it).
    capacity: usize,
}

impl ReadBuf {
    /// An empty buffer that never grows beyond `capacity`.
    pub fn with_capacity(capacity: usize) -> Self {
        Self { buf: Vec::with_capacity(capacity), start: 0, capacity }
    }

    /// Raises the capacity to at least `capacity` (a protocol whose unit, such as an HTTP/2
    /// frame, must fit whole), keeping the unread bytes.
    pub fn grow_to(&mut self, capacity: usize) {
        if capacity > self.capacity {
            self.capacity = capacity;
            self.buf.reserve(capacity.saturating_sub(self.buf.len()));
        }
    }

    /// The unread bytes.
    pub fn data(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    /// The unread bytes, mutably (for in-place decoding).
    pub fn data_mut(&mut self) -> &mut [u8] {
        &mut self.buf[self.start..]
    }

    /// Number of unread bytes.
    pub fn len(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Whether no unread bytes remain.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the unread bytes fill the whole capacity (a head that does not fit).
    pub fn is_full(&self) -> bool {
        self.len() >= self.capacity
    }

    /// Marks `n` unread bytes as consumed.
    pub fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.buf.len());
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
    }

    /// Moves the buffer out (for an owned-buffer operation that outlives this borrow, such as a
    /// read armed on a pooled connection), leaving an empty one of the same capacity that
    /// allocates only when it is filled.
    pub fn take(&mut self) -> ReadBuf {
        let start = std::mem::take(&mut self.start);
        ReadBuf { buf: std::mem::take(&mut self.buf), start, capacity: self.capacity }
    }

    /// Drops every unread byte.
    pub fn clear(&mut self) {
        self.buf.clear();
        self.start = 0;
    }

    /// Reads once from `src`, appending to the unread bytes. `Ok(0)` means end of stream.
    /// The buffer must not be full (check [`is_full`](Self::is_full) first).
    ///
    /// Not cancel-safe: the read owns the buffer, so if this future is dropped (a timeout) the
    /// unread bytes go with it; the buffer is then empty, and the next fill re-allocates it.
    pub async fn fill<R: AsyncReadRent>(&mut self, src: &mut R) -> std::io::Result<usize> {
        if self.buf.capacity() == 0 {
            // A cancelled read or write kept the allocation.
            self.buf = Vec::with_capacity(self.capacity);
        }
        if self.buf.len() == self.buf.capacity() && self.start > 0 {
            self.buf.copy_within(self.start.., 0);
            self.buf.truncate(self.buf.len() - self.start);
            self.start = 0;
        }
        let (buf, start) = self.lend();
        let len = buf.len();
        let (result, slice) = src.read(buf.slice_mut(len..)).await;
        self.buf = slice.into_inner();
        self.start = start;
        result
    }

    /// Moves the bytes out for an owned-buffer operation, leaving a consistent empty buffer
    /// behind in case the operation is cancelled; returns them with the unread offset.
    fn lend(&mut self) -> (Vec<u8>, usize) {
        let start = std::mem::take(&mut self.start);
        (std::mem::take(&mut self.buf), start)
    }

    /// Writes unread bytes `start..start + n` (relative to [`data`](Self::data)) to `dst` and
    /// consumes them.
    pub async fn write_to<W: AsyncWriteRent>(
        &mut self,
        dst: &mut W,
        n: usize,
    ) -> std::io::Result<()> {
        let (buf, from) = self.lend();
        let (result, slice) = dst.write_all(buf.slice(from..from + n)).await;
        self.buf = slice.into_inner();
        self.start = from;
        result?;
        self.consume(n);
        Ok(())
    }
}
