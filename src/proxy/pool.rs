//! A worker's view of one backend: its counters and its pool of idle keep-alive connections.
//!
//! Owned by one worker (`Rc`, never shared). The pool is LIFO (the warmest connection first),
//! bounded by `pool.max_idle_per_backend`, and connections idle for longer than
//! `pool.idle_timeout_ms` are closed by the worker's ticker.

use std::cell::RefCell;
use std::sync::Arc;
use std::time::{Duration, Instant};

use std::os::fd::{AsRawFd, RawFd};

use monoio::io::Splitable;
use monoio::net::TcpStream;
use monoio::net::tcp::{TcpOwnedReadHalf, TcpOwnedWriteHalf};

use super::buf::ReadBuf;
use crate::balance::stats::LocalStats;
use crate::control::Backend;

/// An upstream connection, split so the request body and the response can flow at once, with
/// its read buffer.
pub struct UpstreamConn {
    /// Reading side.
    pub r: TcpOwnedReadHalf,
    /// Writing side.
    pub w: TcpOwnedWriteHalf,
    /// The socket's descriptor, for the liveness probe before reuse.
    pub fd: RawFd,
    /// Bytes read from the backend and not yet forwarded.
    pub buf: ReadBuf,
    /// Whether it has served a request before (a reused connection may have been closed by the
    /// backend meanwhile).
    pub reused: bool,
    idle_since: Instant,
}

impl std::fmt::Debug for UpstreamConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamConn").field("fd", &self.fd).field("reused", &self.reused).finish()
    }
}

impl UpstreamConn {
    /// Wraps a freshly connected socket.
    pub fn new(stream: TcpStream, buffer_bytes: usize) -> Self {
        let _ = stream.set_nodelay(true);
        let fd = stream.as_raw_fd();
        let (r, w) = stream.into_split();
        Self {
            r,
            w,
            fd,
            buf: ReadBuf::with_capacity(buffer_bytes),
            reused: false,
            idle_since: Instant::now(),
        }
    }

    /// How long the connection has sat in the pool.
    pub fn idle_for(&self) -> Duration {
        self.idle_since.elapsed()
    }
}

/// One backend as seen by one worker.
#[derive(Debug)]
pub struct Upstream {
    /// The shared backend (address, published counters).
    pub backend: Arc<Backend>,
    /// This worker's counters for it.
    pub stats: LocalStats,
    /// This worker's Prometheus counters for it (telemetry hook).
    pub metrics: crate::telemetry::metrics::BackendMetrics,
    /// This worker's multiplexed HTTP/2 connections to it (h2c backends only).
    pub h2: super::h2::client::SessionPool,
    idle: RefCell<Vec<UpstreamConn>>,
    max_idle: usize,
    retired: std::cell::Cell<bool>,
}

impl AsRef<LocalStats> for Upstream {
    fn as_ref(&self) -> &LocalStats {
        &self.stats
    }
}

impl AsRef<LocalStats> for std::rc::Rc<Upstream> {
    fn as_ref(&self) -> &LocalStats {
        &self.stats
    }
}

impl Upstream {
    /// A worker-local view of `backend`.
    pub fn new(backend: Arc<Backend>, window: Duration, max_idle: usize) -> Self {
        Self {
            backend,
            stats: LocalStats::new(window),
            metrics: Default::default(),
            h2: Default::default(),
            idle: RefCell::new(Vec::new()),
            max_idle,
            retired: std::cell::Cell::new(false),
        }
    }

    /// Takes the most recently used idle connection younger than `max_idle_age`.
    pub fn checkout(&self, max_idle_age: Duration) -> Option<UpstreamConn> {
        let mut idle = self.idle.borrow_mut();
        while let Some(conn) = idle.pop() {
            if conn.idle_since.elapsed() < max_idle_age {
                return Some(conn);
            }
        }
        None
    }

    /// Returns a connection whose last exchange ended cleanly; drops it when the pool is full or
    /// the backend was removed.
    pub fn checkin(&self, mut conn: UpstreamConn) {
        if self.retired.get() || !conn.buf.is_empty() {
            return;
        }
        let mut idle = self.idle.borrow_mut();
        if idle.len() < self.max_idle {
            conn.reused = true;
            conn.idle_since = Instant::now();
            idle.push(conn);
        }
    }

    /// Closes idle connections older than `max_idle_age`.
    pub fn evict_idle(&self, max_idle_age: Duration) {
        self.idle.borrow_mut().retain(|c| c.idle_since.elapsed() < max_idle_age);
    }

    /// The backend left the configuration: close idle connections and pool no more.
    pub fn retire(&self) {
        self.retired.set(true);
        self.idle.borrow_mut().clear();
        self.h2.retire();
    }

    /// Idle connections currently pooled.
    pub fn idle_count(&self) -> usize {
        self.idle.borrow().len()
    }
}
