//! Access to the memory behind monoio's owned buffers (any thread; pure functions).
//!
//! monoio's buffer traits describe memory by raw pointer and length, so reading from or
//! writing into a caller's buffer needs `unsafe`. It is confined to this module: four small
//! functions, each relying only on the contract the `unsafe trait`s `IoBuf`, `IoBufMut`,
//! `IoVecBuf` and `IoVecBufMut` impose on their implementors (the same contract monoio's own
//! socket operations rely on).
#![allow(unsafe_code)]

use monoio::buf::{IoBuf, IoBufMut, IoVecBuf, IoVecBufMut};

/// The initialized bytes of `buf`.
pub(crate) fn bytes<T: IoBuf>(buf: &T) -> &[u8] {
    let len = buf.bytes_init();
    if len == 0 {
        return &[];
    }
    // SAFETY: `IoBuf` requires `read_ptr` to be valid for reads of `bytes_init` initialized
    // bytes while the buffer is neither moved nor mutated; the returned slice borrows `buf`
    // immutably, which guarantees both for its lifetime. `len > 0`, so the pointer is not a
    // dangling zero-length one.
    unsafe { std::slice::from_raw_parts(buf.read_ptr(), len) }
}

/// The initialized bytes of every slice of `buf`, in order.
pub(crate) fn iovec_bytes<T: IoVecBuf>(buf: &T) -> Vec<&[u8]> {
    let (ptr, len) = (buf.read_iovec_ptr(), buf.read_iovec_len());
    if len == 0 || ptr.is_null() {
        return Vec::new();
    }
    // SAFETY: `IoVecBuf` requires `read_iovec_ptr` to point to `read_iovec_len` valid iovecs,
    // each describing initialized memory, for as long as the buffer is borrowed and unchanged;
    // every slice made here borrows `buf` immutably. Empty or null entries are skipped.
    let iovecs = unsafe { std::slice::from_raw_parts(ptr, len) };
    iovecs
        .iter()
        .filter(|iov| iov.iov_len > 0 && !iov.iov_base.is_null())
        .map(|iov| unsafe { std::slice::from_raw_parts(iov.iov_base as *const u8, iov.iov_len) })
        .collect()
}

/// Copies as much of `src` as fits into `dst` (from its start) and marks it initialized;
/// returns the number of bytes copied.
pub(crate) fn fill<T: IoBufMut>(dst: &mut T, src: &[u8]) -> usize {
    let n = src.len().min(dst.bytes_total());
    if n == 0 {
        return 0;
    }
    // SAFETY: `IoBufMut` requires `write_ptr` to be valid for writes of `bytes_total` bytes;
    // `n <= bytes_total`. `src` is a shared borrow of other memory (`dst` is borrowed mutably
    // here), so the two cannot overlap. `set_init(n)` is called only after `n` bytes were
    // written, as its contract asks.
    unsafe {
        std::ptr::copy_nonoverlapping(src.as_ptr(), dst.write_ptr(), n);
        dst.set_init(n);
    }
    n
}

/// Copies as much of `src` as fits into the slices of `dst`, in order, and marks the total
/// initialized; returns the number of bytes copied.
pub(crate) fn fill_iovec<T: IoVecBufMut>(dst: &mut T, src: &[u8]) -> usize {
    let (ptr, len) = (dst.write_iovec_ptr(), dst.write_iovec_len());
    if len == 0 || ptr.is_null() || src.is_empty() {
        return 0;
    }
    let mut copied = 0;
    // SAFETY: `IoVecBufMut` requires `write_iovec_ptr` to point to `write_iovec_len` valid
    // iovecs, each writable for `iov_len` bytes, while `dst` is borrowed mutably (it is, for
    // this whole block). Each copy stays within one iovec (`n <= iov_len`) and reads from
    // `src`, which is other memory. `set_init` is called with the number of bytes written.
    unsafe {
        for iov in std::slice::from_raw_parts(ptr, len) {
            let n = (src.len() - copied).min(iov.iov_len);
            if n == 0 || iov.iov_base.is_null() {
                continue;
            }
            std::ptr::copy_nonoverlapping(src[copied..].as_ptr(), iov.iov_base.cast::<u8>(), n);
            copied += n;
        }
        dst.set_init(copied);
    }
    copied
}

#[cfg(test)]
mod tests {
    use monoio::buf::VecBuf;

    use super::*;

    #[test]
    fn fill_respects_capacity_and_slices() {
        let buf = Vec::with_capacity(4);
        let mut slice = buf.slice_mut(0..3);
        assert_eq!(fill(&mut slice, b"hello"), 3);
        assert_eq!(slice.into_inner(), b"hel");

        let mut full = vec![1u8, 2];
        full.reserve_exact(2);
        let cap = full.capacity();
        let mut tail = full.slice_mut(2..cap);
        assert_eq!(fill(&mut tail, b"xy"), 2);
        assert_eq!(&tail.into_inner()[..4], &[1, 2, b'x', b'y']);
    }

    #[test]
    fn bytes_and_iovecs_see_initialized_data_only() {
        let mut v = Vec::with_capacity(16);
        v.extend_from_slice(b"abc");
        assert_eq!(bytes(&v), b"abc");
        assert_eq!(bytes(&Vec::<u8>::new()), b"");

        let vb = VecBuf::from(vec![b"ab".to_vec(), Vec::new(), b"cde".to_vec()]);
        assert_eq!(iovec_bytes(&vb), vec![&b"ab"[..], &b"cde"[..]]);
    }

    #[test]
    fn fill_iovec_spreads_over_slices() {
        let mut vb = VecBuf::from(vec![vec![0u8; 2], vec![0u8; 3]]);
        assert_eq!(fill_iovec(&mut vb, b"hello!"), 5);
        let parts: Vec<Vec<u8>> = vb.into();
        assert_eq!(parts, vec![b"he".to_vec(), b"llo".to_vec()]);
    }
}
