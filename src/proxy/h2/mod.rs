//! HTTP/2 cleartext (h2c, prior knowledge) and gRPC, run by each worker: the downstream
//! server ([`server`]), the per-backend pools of multiplexed upstream connections ([`client`]),
//! per-stream forwarding with flow control ([`forward`]) and the translation of an HTTP/2
//! request for an HTTP/1.1 backend ([`to_h1`]).
//!
//! Built on hyperium `h2` 0.4 over monoio's poll-io layer. Every stream is balanced on its own:
//! one client connection's calls spread over the backends as the algorithm says.

pub mod client;
pub mod forward;
pub mod server;
pub mod to_h1;

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::{Buf, Bytes};
use monoio::io::IntoPollIo;
use monoio::io::poll_io::{AsyncRead, AsyncWrite, ReadBuf as PollReadBuf};
use monoio::net::TcpStream;
use monoio::net::tcp::stream_poll::TcpStreamPoll;
use monoio::time::timeout;

use super::buf::ReadBuf;
use crate::worker::WorkerCtx;

/// The client connection preface of HTTP/2 (RFC 9113 3.4).
pub const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Errors of the HTTP/2 layer.
#[derive(Debug, thiserror::Error)]
pub enum H2Error {
    /// The socket could not be moved to the poll-io layer.
    #[error("poll-io conversion: {0}")]
    PollIo(io::Error),
    /// Connecting to a backend failed or timed out.
    #[error("connect: {0}")]
    Connect(io::Error),
    /// The HTTP/2 handshake failed or timed out.
    #[error("handshake: {0}")]
    Handshake(String),
    /// An h2 protocol or IO error.
    #[error(transparent)]
    Proto(#[from] h2::Error),
}

/// Reads the first bytes of a new client connection and routes it: an HTTP/2 preface hands the
/// connection to [`server::serve`] (and returns `None` once it ends); anything else returns the
/// stream and the bytes read for the HTTP/1.1 path. `None` also means the client left or idled.
///
/// HTTP/1.1 pays one compare of at most 24 bytes on the first read only.
pub async fn route_preface(
    ctx: &Rc<WorkerCtx>,
    mut stream: TcpStream,
    peer: SocketAddr,
) -> Option<(TcpStream, ReadBuf)> {
    let mut buf = ReadBuf::with_capacity(ctx.limits.buffer_bytes);
    let idle = ctx.current_epoch().epoch.timeouts.client_idle();
    loop {
        match timeout(idle, buf.fill(&mut stream)).await {
            Ok(Ok(n)) if n > 0 => {}
            _ => return None,
        }
        let data = buf.data();
        let n = data.len().min(PREFACE.len());
        if data[..n] != PREFACE[..n] {
            return Some((stream, buf));
        }
        if n == PREFACE.len() {
            let pre = Bytes::copy_from_slice(data);
            server::serve(ctx.clone(), stream, pre, peer).await;
            return None;
        }
        // A strict prefix of the preface: read on (rare; a real HTTP/1.1 head never matches).
    }
}

/// A poll-io socket with bytes already read from it replayed first.
#[derive(Debug)]
pub struct Rewind {
    pre: Bytes,
    inner: TcpStreamPoll,
}

impl Rewind {
    /// Moves `stream` to the poll-io layer; `pre` is read back before the socket.
    pub fn new(stream: TcpStream, pre: Bytes) -> Result<Self, H2Error> {
        let inner = stream.into_poll_io().map_err(H2Error::PollIo)?;
        Ok(Self { pre, inner })
    }
}

impl AsyncRead for Rewind {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut PollReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.pre.is_empty() {
            let n = self.pre.len().min(buf.remaining());
            buf.put_slice(&self.pre[..n]);
            self.pre.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Rewind {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// A single-threaded notification: waiters registered before [`Notify::notify`] are woken.
#[derive(Debug, Default)]
pub struct Notify {
    generation: Cell<u64>,
    waiters: RefCell<Vec<Waker>>,
}

impl Notify {
    /// Wakes every current waiter.
    pub fn notify(&self) {
        self.generation.set(self.generation.get().wrapping_add(1));
        for w in self.waiters.take() {
            w.wake();
        }
    }

    /// Resolves at the next [`notify`](Self::notify).
    pub fn notified(&self) -> Notified<'_> {
        Notified { notify: self, generation: self.generation.get(), slot: None }
    }
}

/// The future returned by [`Notify::notified`].
///
/// It holds one place in the waiter list however often it is polled (a connection loop polls
/// it on every wake-up), and only refreshes its waker there when the task's changed.
#[derive(Debug)]
pub struct Notified<'a> {
    notify: &'a Notify,
    generation: u64,
    /// This future's index in `waiters`. Valid while the generation is unchanged: the list is
    /// only appended to until `notify` takes it whole (and bumps the generation).
    slot: Option<usize>,
}

impl Future for Notified<'_> {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        if this.notify.generation.get() != this.generation {
            return Poll::Ready(());
        }
        let mut waiters = this.notify.waiters.borrow_mut();
        match this.slot.and_then(|i| waiters.get_mut(i)) {
            Some(w) => {
                if !w.will_wake(cx.waker()) {
                    w.clone_from(cx.waker());
                }
            }
            None => {
                this.slot = Some(waiters.len());
                waiters.push(cx.waker().clone());
            }
        }
        Poll::Pending
    }
}

/// Parses a `grpc-timeout` value (`1*8DIGIT unit`, unit one of H M S m u n).
pub fn parse_grpc_timeout(value: &[u8]) -> Option<Duration> {
    let (&unit, digits) = value.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n = digits.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
    Some(match unit {
        b'H' => Duration::from_secs(n * 3600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

/// Whether a request is a gRPC call (`content-type: application/grpc` or `application/grpc+…`).
pub fn is_grpc(headers: &http::HeaderMap) -> bool {
    headers.get(http::header::CONTENT_TYPE).is_some_and(|v| {
        let v = v.as_bytes();
        v.len() >= 16
            && v[..16].eq_ignore_ascii_case(b"application/grpc")
            && matches!(v.get(16), None | Some(b'+' | b';'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeout_units() {
        assert_eq!(parse_grpc_timeout(b"100m"), Some(Duration::from_millis(100)));
        assert_eq!(parse_grpc_timeout(b"2S"), Some(Duration::from_secs(2)));
        assert_eq!(parse_grpc_timeout(b"1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_grpc_timeout(b"5n"), Some(Duration::from_nanos(5)));
        for bad in [&b""[..], b"m", b"123456789m", b"10x", b"-1S", b"1 S"] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn notified_registers_once_however_often_polled() {
        let notify = Notify::default();
        let mut fut = std::pin::pin!(notify.notified());
        let waker = Waker::noop();
        let mut cx = Context::from_waker(waker);
        for _ in 0..5 {
            assert!(fut.as_mut().poll(&mut cx).is_pending());
        }
        assert_eq!(notify.waiters.borrow().len(), 1);
        notify.notify();
        assert!(fut.as_mut().poll(&mut cx).is_ready());
        assert!(notify.waiters.borrow().is_empty());
    }

    #[test]
    fn grpc_content_types() {
        let mut h = http::HeaderMap::new();
        for (v, want) in [
            ("application/grpc", true),
            ("application/grpc+proto", true),
            ("Application/GRPC+json", true),
            ("application/grpc-web", false),
            ("application/json", false),
        ] {
            h.insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static(v));
            assert_eq!(is_grpc(&h), want, "{v}");
        }
        assert!(!is_grpc(&http::HeaderMap::new()));
    }
}
