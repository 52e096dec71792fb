//! The reading half of an upstream HTTP/1.1 connection, and the read that can be armed on it to
//! learn of a close without a system call. Runs on the worker that owns the connection.
//!
//! A request that must not be sent twice (see [`Reuse`](super::Reuse)) may only go out on a
//! pooled connection that is not known to be closed. Asking the socket costs a system call per
//! request, so instead a read is armed on the connection: when the backend closed it (or sent
//! something unasked, which makes it unusable) that read has completed, and
//! [`UpstreamRead::still_open`] sees it without a system call. When the connection is used, the
//! armed read receives the response: it is the first read of the exchange, not an extra one.
//!
//! When the read is armed depends on the io driver:
//! - **epoll**: at checkout, and only for a request that must not be sent twice. Arming is a
//!   look at the socket's readiness, which the driver has from `epoll_wait` already; a pooled
//!   connection that carries only requests that may be sent again costs nothing more.
//! - **io_uring**: at check-in, while the connection is pooled (a receive waits in the ring).
//!   A receive armed at checkout would not reach the kernel before the request is sent, so the
//!   ring could not tell of a close in time.
//!
//! Over TLS the read processes what the backend may send while idle (session tickets, key
//! updates) and completes only on data or a close. The armed read lives in a slot allocated the
//! first time the connection arms it and reused after that: no allocation per request.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use fulcrum_util::ReadBuf;
use monoio::BufResult;
use monoio::buf::{IoBufMut, IoVecBufMut};
use monoio::io::AsyncReadRent;

use crate::transport::ConnRead;

/// What an armed read gives back: the reading half, the buffer with what it read, the result.
type Armed = (ConnRead, ReadBuf, io::Result<usize>);

/// When a pooled connection keeps a read armed (see the module header).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ArmAt {
    /// At check-in, for as long as it is pooled (io_uring).
    Checkin,
    /// At checkout, for a request that must not be sent twice (epoll).
    Checkout,
}

impl ArmAt {
    /// The policy for the driver of the calling worker's runtime.
    pub(super) fn for_this_worker() -> Self {
        if monoio::utils::is_legacy() { Self::Checkout } else { Self::Checkin }
    }
}

/// The reading half of an upstream connection.
pub struct UpstreamRead {
    /// The half, when no read is armed on it (the armed read owns it meanwhile).
    idle: Option<ConnRead>,
    /// The armed read's storage, allocated at the first arm.
    slot: Option<Box<dyn ArmSlot>>,
}

impl std::fmt::Debug for UpstreamRead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.idle.is_some() { "UpstreamRead::Ready" } else { "UpstreamRead::Armed" })
    }
}

impl UpstreamRead {
    /// The reading half of a new connection.
    pub fn new(r: ConnRead) -> Self {
        Self { idle: Some(r), slot: None }
    }

    /// Arms a read into `buf` (emptied by the caller, which keeps an unallocated stand-in) and
    /// starts it. `None` when it completed at once: the backend closed the connection already,
    /// or sent something unasked. A connection armed already stays as it is.
    pub fn arm(mut self, buf: ReadBuf) -> Option<Self> {
        let Some(r) = self.idle.take() else { return Some(self) };
        self.slot.get_or_insert_with(|| new_slot(armed_read)).start(r, buf);
        self.still_open()
    }

    /// Whether the connection may carry a request: `None` when the armed read completed (the
    /// backend closed the connection, or sent something unasked). Polls the armed read once,
    /// without registering interest: the ring or the readiness already told the runtime.
    pub fn still_open(mut self) -> Option<Self> {
        if self.idle.is_none()
            && let Some(slot) = &mut self.slot
        {
            let mut cx = Context::from_waker(Waker::noop());
            if slot.poll_armed(&mut cx).is_ready() {
                return None;
            }
        }
        Some(self)
    }

    /// Reads once more into `buf` (see [`ReadBuf::fill`]); after a read was armed, the first
    /// fill is that read, and gives `buf` back its storage. Like `ReadBuf::fill`, not
    /// cancel-safe for the bytes, but a cancelled wait for the armed read keeps it armed.
    pub async fn fill(&mut self, buf: &mut ReadBuf) -> io::Result<usize> {
        if let Some(r) = &mut self.idle {
            return buf.fill(r).await;
        }
        let Some(slot) = self.slot.as_mut().filter(|slot| slot.is_armed()) else {
            return Err(lost());
        };
        let (r, filled, result) = std::future::poll_fn(|cx| slot.poll_armed(cx)).await;
        self.idle = Some(r);
        *buf = filled;
        result
    }

    /// The reading half itself, when no read is armed on it (a tunnel reads it directly, the
    /// armed read having been collected with the `101` head).
    pub fn half(&mut self) -> Option<&mut ConnRead> {
        self.idle.as_mut()
    }
}

/// Plain reads of the connection, for the body copy loops (after the response head, so after
/// the armed read was collected by [`UpstreamRead::fill`]). A read while it is still armed
/// fails rather than read around it.
impl AsyncReadRent for UpstreamRead {
    async fn read<T: IoBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
        match &mut self.idle {
            Some(r) => r.read(buf).await,
            None => (Err(not_collected()), buf),
        }
    }

    async fn readv<T: IoVecBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
        match &mut self.idle {
            Some(r) => r.readv(buf).await,
            None => (Err(not_collected()), buf),
        }
    }
}

fn not_collected() -> io::Error {
    io::Error::other("the read armed on a pooled connection was not collected")
}

fn lost() -> io::Error {
    io::Error::other("an upstream connection lost its reading half")
}

/// The read armed on a pooled connection.
async fn armed_read(mut r: ConnRead, mut buf: ReadBuf) -> Armed {
    let result = buf.fill(&mut r).await;
    (r, buf, result)
}

/// Storage for one armed read at a time, reused for the next: the future's type is only known
/// to the compiler (an `async fn`), so the slot is used through this trait.
trait ArmSlot {
    /// Starts a read on `r` into `buf`, in place of any read in flight.
    fn start(&mut self, r: ConnRead, buf: ReadBuf);
    /// Whether a read is in flight.
    fn is_armed(&self) -> bool;
    /// Polls the read in flight (pending when there is none); the slot is empty again once it
    /// gave its result.
    fn poll_armed(&mut self, cx: &mut Context<'_>) -> Poll<Armed>;
}

/// The slot for reads made by `make`.
struct Slot<F> {
    read: Pin<Box<Option<F>>>,
    make: fn(ConnRead, ReadBuf) -> F,
}

fn new_slot<F: Future<Output = Armed> + 'static>(
    make: fn(ConnRead, ReadBuf) -> F,
) -> Box<dyn ArmSlot> {
    Box::new(Slot { read: Box::pin(None), make })
}

impl<F: Future<Output = Armed>> ArmSlot for Slot<F> {
    fn start(&mut self, r: ConnRead, buf: ReadBuf) {
        let read = (self.make)(r, buf);
        self.read.as_mut().set(Some(read));
    }

    fn is_armed(&self) -> bool {
        self.read.is_some()
    }

    fn poll_armed(&mut self, cx: &mut Context<'_>) -> Poll<Armed> {
        let Some(read) = self.read.as_mut().as_pin_mut() else { return Poll::Pending };
        let done = std::task::ready!(read.poll(cx));
        self.read.as_mut().set(None);
        Poll::Ready(done)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use monoio::io::AsyncWriteRentExt;
    use monoio::net::{TcpListener, TcpStream};

    use super::*;
    use crate::transport::split_tcp;

    /// Runs `test` on a runtime of each io driver.
    fn on_each_driver<F: Future<Output = ()>>(test: impl Fn() -> F) {
        monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .expect("epoll runtime")
            .block_on(test());
        monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
            .enable_timer()
            .build()
            .expect("io_uring runtime (the integration suite needs it too)")
            .block_on(test());
    }

    /// A connected pair on loopback: the proxy's reading half of one end, and the other end
    /// (the backend).
    async fn pair() -> (UpstreamRead, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (connected, accepted) = monoio::join!(TcpStream::connect(addr), listener.accept());
        let (r, _w) = split_tcp(connected.unwrap());
        // The writing half may go: a read half keeps the socket open.
        (UpstreamRead::new(r), accepted.unwrap().0)
    }

    fn slot_address(r: &UpstreamRead) -> *const u8 {
        let slot: &dyn ArmSlot = &**r.slot.as_ref().expect("a slot");
        slot as *const dyn ArmSlot as *const u8
    }

    #[test]
    fn the_armed_read_receives_the_response_and_its_slot_is_reused() {
        on_each_driver(|| async {
            let (r, mut backend) = pair().await;
            let mut buf = ReadBuf::with_capacity(64);
            let mut r = r.arm(buf.take()).expect("nothing was sent: still open");
            let first = slot_address(&r);
            for answer in [&b"one"[..], b"two"] {
                backend.write_all(answer.to_vec()).await.0.unwrap();
                assert_eq!(r.fill(&mut buf).await.unwrap(), answer.len());
                assert_eq!(buf.data(), answer);
                buf.consume(answer.len());
                r = r.arm(buf.take()).expect("still open");
                assert_eq!(slot_address(&r), first, "the slot is reused, not allocated again");
            }
        });
    }

    #[test]
    fn a_close_while_armed_is_seen_without_a_read() {
        on_each_driver(|| async {
            let (r, backend) = pair().await;
            let mut r = Some(r.arm(ReadBuf::with_capacity(64)).expect("still open"));
            drop(backend);
            // Readiness check: the runtime learns of the close on its next turns.
            for _ in 0..2000 {
                match r.take().and_then(UpstreamRead::still_open) {
                    Some(open) => r = Some(open),
                    None => break,
                }
                monoio::time::sleep(Duration::from_millis(1)).await;
            }
            assert!(r.is_none(), "the close was not seen within 2 s");
        });
    }

    #[test]
    fn reads_while_armed_fail_instead_of_reading_around_it() {
        on_each_driver(|| async {
            let (r, _backend) = pair().await;
            let mut r = r.arm(ReadBuf::with_capacity(64)).expect("still open");
            let (result, _) = r.read(vec![0u8; 16]).await;
            assert!(result.is_err());
        });
    }
}
