//! A gathered write: two owned buffers, a head and a body, leave in one `writev` (one system
//! call, or one ring operation) without either being copied into the other. Runs on the
//! worker that writes.

use std::io;

use monoio::BufResult;
use monoio::buf::{IoBuf, IoVecBuf};
use monoio::io::AsyncWriteRent;

/// Two owned buffers written as one: `first`, then `second`.
pub struct Gather<A, B> {
    first: A,
    second: B,
    /// Bytes of the two already written.
    written: usize,
    /// The entries for what is left to write. On the heap, so that their address survives the
    /// moves of this value into an operation and out of it.
    iov: Box<[libc::iovec; 2]>,
    /// Entries of `iov` in use.
    used: usize,
}

impl<A: IoBuf, B: IoBuf> Gather<A, B> {
    /// `first` then `second`, nothing written yet.
    pub fn new(first: A, second: B) -> Self {
        let empty = libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 };
        let mut g = Self { first, second, written: 0, iov: Box::new([empty; 2]), used: 0 };
        g.point();
        g
    }

    /// Bytes of both buffers.
    pub fn len(&self) -> usize {
        self.first.bytes_init() + self.second.bytes_init()
    }

    /// Whether both buffers are empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The two buffers back.
    pub fn into_parts(self) -> (A, B) {
        (self.first, self.second)
    }

    /// Points the entries at what is left of the two buffers.
    fn point(&mut self) {
        let (a_len, b_len) = (self.first.bytes_init(), self.second.bytes_init());
        let mut used = 0;
        if self.written < a_len {
            self.iov[used] = libc::iovec {
                iov_base: self.first.read_ptr().wrapping_add(self.written).cast_mut().cast(),
                iov_len: a_len - self.written,
            };
            used += 1;
        }
        let b_from = self.written.saturating_sub(a_len);
        if b_from < b_len {
            self.iov[used] = libc::iovec {
                iov_base: self.second.read_ptr().wrapping_add(b_from).cast_mut().cast(),
                iov_len: b_len - b_from,
            };
            used += 1;
        }
        self.used = used;
    }
}

// SAFETY: `read_iovec_ptr` points at `used` (at most 2) initialised entries of `iov`, a heap
// allocation owned by this value, so the pointer stays valid while the runtime holds the value
// (moves of the value do not move the entries). Each entry points into the initialised bytes of
// `first` or `second` (`IoBuf`s, whose memory is stable while owned, as their trait requires),
// which this value owns and does not change while it is lent to an operation: `point` runs only
// between operations, with the value back in hand.
#[allow(unsafe_code)]
unsafe impl<A: IoBuf, B: IoBuf> IoVecBuf for Gather<A, B> {
    fn read_iovec_ptr(&self) -> *const libc::iovec {
        self.iov.as_ptr()
    }

    fn read_iovec_len(&self) -> usize {
        self.used
    }
}

/// Writes both buffers of `buf` to `dst` whole, in as few gathered writes as it takes (one
/// unless the socket takes less); gives them back. Cancel-safe for memory: an operation in
/// flight owns the buffers until it completes.
pub async fn write_all_gathered<W, A, B>(
    dst: &mut W,
    mut buf: Gather<A, B>,
) -> BufResult<usize, Gather<A, B>>
where
    W: AsyncWriteRent,
    A: IoBuf,
    B: IoBuf,
{
    let total = buf.len();
    while buf.written < total {
        let (result, back) = dst.writev(buf).await;
        buf = back;
        match result {
            Ok(0) => return (Err(io::ErrorKind::WriteZero.into()), buf),
            Ok(n) => {
                buf.written += n;
                buf.point();
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return (Err(e), buf),
        }
    }
    (Ok(total), buf)
}

#[cfg(test)]
mod tests {
    use std::rc::Rc;

    use monoio::io::AsyncReadRentExt;
    use monoio::net::{TcpListener, TcpStream};

    use super::*;
    use crate::{IoDriverChoice, build_runtime};

    /// A socket that counts the writes it is given.
    struct Counting {
        inner: TcpStream,
        writes: usize,
    }

    impl AsyncWriteRent for Counting {
        async fn write<T: IoBuf>(&mut self, buf: T) -> BufResult<usize, T> {
            self.writes += 1;
            self.inner.write(buf).await
        }
        async fn writev<T: IoVecBuf>(&mut self, buf: T) -> BufResult<usize, T> {
            self.writes += 1;
            self.inner.writev(buf).await
        }
        async fn flush(&mut self) -> io::Result<()> {
            self.inner.flush().await
        }
        async fn shutdown(&mut self) -> io::Result<()> {
            self.inner.shutdown().await
        }
    }

    /// Writes `head` and `body` gathered over loopback while the other end reads them; returns
    /// what arrived, how many writes it took, and the head given back.
    async fn send(head: Vec<u8>, body: Rc<Box<[u8]>>) -> (Vec<u8>, usize, Vec<u8>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let inner = TcpStream::connect(addr).await.unwrap();
        let (mut server, _) = listener.accept().await.unwrap();
        let total = head.len() + body.len();
        let reader = monoio::spawn(async move {
            let (res, got) = server.read_exact(vec![0u8; total]).await;
            res.unwrap();
            got
        });
        let mut sock = Counting { inner, writes: 0 };
        let (res, g) = write_all_gathered(&mut sock, Gather::new(head, body)).await;
        assert_eq!(res.unwrap(), total);
        let (head, _) = g.into_parts();
        (reader.await, sock.writes, head)
    }

    /// Runs `test` once on each io driver (io_uring where the kernel allows it, and epoll).
    fn on_each_driver<F: std::future::Future<Output = ()>>(test: impl Fn() -> F) {
        for choice in [IoDriverChoice::IoUring, IoDriverChoice::Epoll] {
            let mut built = build_runtime(choice).unwrap();
            built.runtime.block_on(test());
        }
    }

    #[test]
    fn a_head_and_a_body_leave_in_one_write() {
        on_each_driver(|| async {
            let body: Rc<Box<[u8]>> = Rc::new(vec![b'x'; 16 * 1024].into());
            let (got, writes, head) = send(b"HTTP/1.1 200 OK\r\n\r\n".to_vec(), body).await;
            assert_eq!(writes, 1);
            assert_eq!(got.len(), 19 + 16 * 1024);
            assert!(got.starts_with(b"HTTP/1.1 200 OK\r\n\r\nxxx") && got.ends_with(b"xxx"));
            assert_eq!(head, b"HTTP/1.1 200 OK\r\n\r\n", "the head comes back");
        });
    }

    #[test]
    fn short_writes_resume_where_they_stopped() {
        on_each_driver(|| async {
            // More than a loopback socket buffer holds: the writes come back short.
            let body: Vec<u8> = (0..16 * 1024 * 1024).map(|i: u32| (i % 251) as u8).collect();
            let (got, writes, _) = send(b"head:".to_vec(), Rc::new(body.clone().into())).await;
            assert!(writes > 1, "one write took it all");
            assert_eq!(&got[..5], b"head:");
            assert!(got[5..] == body[..], "bytes lost or repeated across short writes");
            assert!(Gather::new(Vec::new(), Vec::new()).is_empty());
        });
    }
}
