//! The reading half of an upstream HTTP/1.1 connection, with a read armed on it while it sits
//! in the pool. Runs on the worker that owns the connection.
//!
//! A pooled connection keeps one read in flight: on io_uring a receive in the ring, on epoll a
//! wait on the socket's readiness. When the backend closes the idle connection (or sends
//! something unasked, which makes it unusable) that read completes, and the check at checkout
//! ([`UpstreamRead::still_open`]) sees it without a system call. When the connection is reused
//! instead, the armed read receives the response: it is the first read of the next exchange,
//! so keeping it armed costs no extra operation. Over TLS the read processes what the backend
//! may send while idle (session tickets, key updates) and completes only on data or a close.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Waker};

use fulcrum_util::ReadBuf;
use monoio::BufResult;
use monoio::buf::{IoBufMut, IoVecBufMut};
use monoio::io::AsyncReadRent;

use crate::transport::ConnRead;

/// What an armed read gives back: the reading half, the buffer with what it read, the result.
type Armed = (ConnRead, ReadBuf, io::Result<usize>);

/// The reading half of an upstream connection.
pub struct UpstreamRead(State);

enum State {
    /// Nothing in flight: reads go straight to the connection.
    Ready(ConnRead),
    /// A read armed while the connection was pooled, owning the half and the read buffer.
    Armed(Pin<Box<dyn Future<Output = Armed>>>),
}

impl std::fmt::Debug for UpstreamRead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.0 {
            State::Ready(_) => "UpstreamRead::Ready",
            State::Armed(_) => "UpstreamRead::Armed",
        })
    }
}

impl UpstreamRead {
    /// The reading half of a new connection.
    pub fn new(r: ConnRead) -> Self {
        Self(State::Ready(r))
    }

    /// Arms a read into `buf` (emptied by the caller, which keeps an unallocated stand-in) for
    /// a connection going into the pool, and starts it. `None` when it completed at once: the
    /// backend closed the connection already, or sent something unasked.
    pub fn arm(self, buf: ReadBuf) -> Option<Self> {
        let armed = match self.0 {
            State::Ready(mut r) => Box::pin(async move {
                let mut buf = buf;
                let result = buf.fill(&mut r).await;
                (r, buf, result)
            }),
            // Armed already (never: a connection is checked in after a complete exchange).
            armed @ State::Armed(_) => return Some(Self(armed)),
        };
        Self(State::Armed(armed)).still_open()
    }

    /// Whether the connection may carry a request: `None` when the armed read completed (the
    /// backend closed the connection, or sent something unasked). Polls the armed read once,
    /// without registering interest: the ring or the readiness already told the runtime.
    pub fn still_open(mut self) -> Option<Self> {
        if let State::Armed(armed) = &mut self.0 {
            let mut cx = Context::from_waker(Waker::noop());
            if armed.as_mut().poll(&mut cx).is_ready() {
                return None;
            }
        }
        Some(self)
    }

    /// Reads once more into `buf` (see [`ReadBuf::fill`]); on a reused connection the first
    /// fill is the read armed while it was pooled, and gives `buf` back its storage. Like
    /// `ReadBuf::fill`, not cancel-safe for the bytes, but a cancelled wait for the armed read
    /// keeps it armed.
    pub async fn fill(&mut self, buf: &mut ReadBuf) -> io::Result<usize> {
        let (r, filled, result) = match &mut self.0 {
            State::Ready(r) => return buf.fill(r).await,
            State::Armed(armed) => armed.as_mut().await,
        };
        self.0 = State::Ready(r);
        *buf = filled;
        result
    }
}

/// Plain reads of the connection, for the body copy loops (after the response head, so after
/// the armed read was collected by [`UpstreamRead::fill`]). A read while it is still armed
/// fails rather than read around it.
impl AsyncReadRent for UpstreamRead {
    async fn read<T: IoBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
        match &mut self.0 {
            State::Ready(r) => r.read(buf).await,
            State::Armed(_) => (Err(not_collected()), buf),
        }
    }

    async fn readv<T: IoVecBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
        match &mut self.0 {
            State::Ready(r) => r.readv(buf).await,
            State::Armed(_) => (Err(not_collected()), buf),
        }
    }
}

fn not_collected() -> io::Error {
    io::Error::other("the read armed on a pooled connection was not collected")
}
