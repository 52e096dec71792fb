//! A worker's view of one backend ([`Upstream`]): its counters, its pool of idle HTTP/1.1
//! keep-alive connections and its multiplexed HTTP/2 sessions ([`h2`]), and how an attempt gets
//! a connection ([`Upstream::connection`]).
//!
//! A request that must not be sent twice takes a pooled connection only once a read armed on it
//! ([`read`]) shows that the backend has not closed it, without a system call; a connection
//! known closed is never handed to such a request.
//!
//! Owned by one worker (`Rc`, never shared); runs on that worker's thread. The pool is LIFO (the
//! warmest connection first), bounded by `pool.max_idle_per_backend`, and connections idle for
//! `pool.idle_timeout_ms` are closed by the worker's ticker, which a check-in wakes for it
//! when nothing sooner is planned.
//!
//! Every open HTTP/1.1 connection (idle or busy) holds a [`Slot`] of its backend's
//! [`ConnGate`]; with `pool.max_connections_per_backend` set, a request that finds the backend at
//! its cap waits in a bounded FIFO queue (`pool.queue_size`, `pool.queue_timeout_ms`) until a
//! connection is checked in or closed.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::poll_fn;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use fulcrum_balance::{Candidate, LocalStats};
use fulcrum_config::{PassiveHealth, PoolConfig, Timeouts};
use fulcrum_model::Backend;
use fulcrum_telemetry::{error, warn};
use fulcrum_tls::AppProtocol;
use fulcrum_util::{Deadline, ReadBuf, ms_at, now_ms};

use crate::error::{ProxyError, QueueError};
use crate::exchange::ExchangeNote;
use crate::metrics::{BackendMetrics, RequestSlot, WorkerSlot};
use crate::transport::{self, ConnRead, ConnWrite};

pub mod h2;
pub mod h2n;
mod read;
mod sessions;
mod tls;

use read::ArmAt;
pub use read::UpstreamRead;
pub use tls::{UpstreamTls, tcp_connect};

/// How getting a stream slot on one of a backend's HTTP/2 sessions failed (either engine's:
/// `E` says why a new session could not be opened).
#[derive(Debug, thiserror::Error)]
pub enum LeaseError<E> {
    /// A new connection could not be opened (counts against passive health).
    #[error(transparent)]
    Connect(E),
    /// The backend was removed from the configuration.
    #[error("backend retired")]
    Retired,
}

/// At most one "backend connect failed" warning per backend per worker in this time (a backend
/// that refuses every connect, or fails TLS verification, would otherwise log per request).
const CONNECT_WARN_EVERY: Duration = Duration::from_secs(10);

/// What every upstream of one worker shares: the worker, the pool settings and buffer size.
#[derive(Debug, Clone, Copy)]
pub struct UpstreamSettings {
    /// The worker these upstreams belong to.
    pub worker: usize,
    /// `[pool]`.
    pub pool: PoolConfig,
    /// Each connection's read buffer (`limits.buffer_bytes`).
    pub buffer_bytes: usize,
    /// The `response_time` window (`balance.response_time_window_ms`).
    pub window: Duration,
    /// How often a `response_time` pick reads the other workers' windows at most
    /// (`balance.stats_publish_ms`).
    pub stats_publish: Duration,
}

/// An upstream connection, split so the request body and the response can flow at once, with
/// its read buffer. Boxed from its connect to its close ([`Conn`]): an exchange hands it from
/// the pool to its attempt and back, and a pointer moves where the connection would be copied.
pub struct UpstreamConn {
    /// Reading side (its first read after a reuse is the one armed while it was pooled: read
    /// through [`fill`](Self::fill) or [`UpstreamRead::fill`]).
    pub r: UpstreamRead,
    /// Writing side.
    pub w: ConnWrite,
    /// Bytes read from the backend and not yet forwarded.
    pub buf: ReadBuf,
    /// Whether it has served a request before (a reused connection may have been closed by the
    /// backend meanwhile).
    pub reused: bool,
    /// When it was last checked in (process-clock ms).
    idle_since_ms: u64,
    /// Its place under the backend's connection cap, given back when the connection closes.
    slot: Slot,
}

impl std::fmt::Debug for UpstreamConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamConn").field("r", &self.r).field("reused", &self.reused).finish()
    }
}

/// An [`UpstreamConn`] as it is handed around: boxed.
pub type Conn = Box<UpstreamConn>;

impl UpstreamConn {
    /// Wraps the halves of a freshly connected socket (TLS or not) opened under `slot`.
    fn new(halves: (ConnRead, ConnWrite), buffer_bytes: usize, slot: Slot) -> Conn {
        let (r, w) = halves;
        Box::new(Self {
            r: UpstreamRead::new(r),
            w,
            buf: ReadBuf::with_capacity(buffer_bytes),
            reused: false,
            idle_since_ms: 0,
            slot,
        })
    }

    /// How long the connection has sat in the pool, at `now_ms`.
    fn idle_for(&self, now_ms: u64) -> Duration {
        Duration::from_millis(now_ms.saturating_sub(self.idle_since_ms))
    }

    /// Reads once more from the backend into [`buf`](Self::buf) (see [`UpstreamRead::fill`]).
    pub async fn fill(&mut self) -> std::io::Result<usize> {
        self.r.fill(&mut self.buf).await
    }

    /// Arms a read on it (see [`read`]); `None` when the backend closed it already.
    fn arm(mut self: Conn) -> Option<Conn> {
        let storage = self.buf.take();
        self.r = self.r.arm(storage)?;
        Some(self)
    }

    /// `None` when its armed read completed while it was pooled: the backend closed it (or
    /// sent something unasked), so no request may be sent on it.
    fn still_open(mut self: Conn) -> Option<Conn> {
        self.r = self.r.still_open()?;
        Some(self)
    }
}

/// One backend as seen by one worker.
#[derive(Debug)]
pub struct Upstream {
    /// The shared backend (address, published counters).
    pub backend: Arc<Backend>,
    /// This worker's counters for it.
    pub stats: LocalStats,
    /// Its metrics (this worker writes its own slot).
    pub metrics: Arc<BackendMetrics>,
    /// This worker's multiplexed HTTP/2 connections to it (h2c backends only).
    pub h2: h2::SessionPool,
    /// The same on the native engine (`[http2] engine = "native"`).
    pub h2n: h2n::NativePool,
    settings: UpstreamSettings,
    /// TLS to the backend (`https://`, `h2://`), when it could be set up.
    tls: Option<Arc<UpstreamTls>>,
    idle: RefCell<Vec<Conn>>,
    retired: Cell<bool>,
    gate: Rc<ConnGate>,
    /// The worker's upkeep deadline (idle connections to close, a latency window to age).
    upkeep: Rc<Deadline>,
    /// When a pooled connection has a read armed, on this worker's io driver.
    arm_at: ArmAt,
    /// When this worker last warned of a failed connect to the backend, and the failures
    /// since then that it did not log.
    connect_warned: Cell<Option<Instant>>,
    connect_unreported: Cell<u64>,
}

impl Candidate for Upstream {
    fn stats(&self) -> &LocalStats {
        &self.stats
    }
    fn weight(&self) -> u32 {
        self.backend.weight
    }
}

impl Upstream {
    /// A worker-local view of `backend`; its open HTTP/1.1 connections are capped by the pool
    /// settings, and what must be done later (closing idle connections, ageing the latency
    /// window) is told to the worker's ticker through `upkeep`.
    pub fn new(
        backend: Arc<Backend>,
        settings: UpstreamSettings,
        metrics: Arc<BackendMetrics>,
        tls: Option<Arc<UpstreamTls>>,
        upkeep: Rc<Deadline>,
    ) -> Self {
        let pool = settings.pool;
        let gate = ConnGate::new(
            pool.max_connections_per_backend,
            pool.queue_size,
            Gauges { metrics: metrics.clone(), worker: settings.worker },
        );
        Self {
            stats: LocalStats::new(settings.window, backend.stats.writer(settings.worker))
                .merge_every(settings.stats_publish)
                .upkeep(upkeep.clone()),
            backend,
            metrics,
            h2: Default::default(),
            h2n: Default::default(),
            settings,
            tls,
            idle: RefCell::new(Vec::new()),
            retired: Cell::new(false),
            gate: Rc::new(gate),
            upkeep,
            arm_at: ArmAt::for_this_worker(),
            connect_warned: Cell::new(None),
            connect_unreported: Cell::new(0),
        }
    }

    /// This worker's metrics slot for the backend.
    #[inline]
    pub fn slot(&self) -> &RequestSlot {
        self.metrics.slot(self.settings.worker)
    }

    /// Takes the most recently used idle connection younger than `max_idle_age` at `now_ms`.
    fn checkout(&self, max_idle_age: Duration, now_ms: u64) -> Option<Conn> {
        let mut idle = self.idle.borrow_mut();
        while let Some(conn) = idle.pop() {
            if conn.idle_for(now_ms) < max_idle_age {
                return Some(conn);
            }
        }
        None
    }

    /// Returns a connection whose last exchange ended cleanly (with a read armed on it on
    /// io_uring); drops it when the pool is full, the backend was removed, or the backend
    /// closed it already.
    pub fn checkin(&self, conn: Conn) {
        if self.retired.get()
            || !conn.buf.is_empty()
            || self.idle.borrow().len() >= self.settings.pool.max_idle_per_backend
        {
            return;
        }
        let conn = match self.arm_at {
            ArmAt::Checkin => conn.arm(),
            ArmAt::Checkout => Some(conn),
        };
        let Some(mut conn) = conn else { return };
        let now = now_ms();
        conn.reused = true;
        conn.idle_since_ms = now;
        self.idle.borrow_mut().push(conn);
        self.upkeep.need_by(now.saturating_add(self.settings.pool.idle_timeout_ms));
        // A request queued at the connection cap can take it.
        self.gate.wake_one();
    }

    /// A response head from this backend arrived at `at` for a request sent at `sent`: its
    /// response time goes into the backend's stats (`least_time`, the latency window) and, with
    /// `status`, onto the exchange's record. One reading of the clock (`at`) serves both.
    pub(crate) fn response_head(
        &self,
        note: &ExchangeNote,
        status: u16,
        sent: Instant,
        at: Instant,
    ) {
        let elapsed = at.saturating_duration_since(sent);
        self.stats.record_response_time(ms_at(at), elapsed);
        note.response(status, elapsed);
    }

    /// Records a failed connect (or connect timeout, or failed TLS handshake: a backend
    /// certificate that fails verification included) for passive health, logging it with its
    /// reason (at most once per [`CONNECT_WARN_EVERY`]) and the ejection when `health.max_fails`
    /// failures in a row eject the backend. Both the HTTP/1.1 and the HTTP/2 paths report here.
    pub fn connect_failed(&self, health: PassiveHealth, reason: &str) {
        let worker = self.settings.worker;
        self.slot().connect_error();
        let unreported = self.connect_unreported.get() + 1;
        if self.connect_warned.get().is_none_or(|at| at.elapsed() >= CONNECT_WARN_EVERY) {
            warn!(
                "backend connect failed",
                worker = worker,
                backend = self.backend.url,
                failures = unreported,
                error = reason
            );
            self.connect_warned.set(Some(Instant::now()));
            self.connect_unreported.set(0);
        } else {
            self.connect_unreported.set(unreported);
        }
        let eject = Duration::from_millis(health.eject_ms);
        if self.stats.record_connect_failure(now_ms(), health.max_fails, eject) {
            warn!(
                "backend ejected after consecutive connect failures",
                worker = worker,
                backend = self.backend.url,
                eject_ms = health.eject_ms,
                error = reason
            );
        }
    }

    /// Room for one new connection under `pool.max_connections_per_backend`, if there is some
    /// now. At the cap, an idle connection the caller chose not to reuse is closed to make room.
    pub fn reserve(&self) -> Option<Slot> {
        if let Some(slot) = Slot::take(&self.gate) {
            return Some(slot);
        }
        let oldest = {
            let mut idle = self.idle.borrow_mut();
            (!idle.is_empty()).then(|| idle.remove(0))
        };
        oldest.map(|conn| conn.slot)
    }

    /// Waits in this backend's queue until a connection is checked in or closed (then the
    /// caller looks again), at most until `deadline`. `queued_before` skips the queue-size check
    /// for a request that was already admitted and lost the race for what woke it.
    pub async fn wait_for_connection(
        &self,
        deadline: Instant,
        queued_before: bool,
    ) -> Result<(), QueueError> {
        self.gate.wait(deadline, queued_before).await
    }

    /// A queued request got its connection: when room is left (a free slot or an idle
    /// connection), the next in line is woken, so a queue that newcomers joined never stalls.
    pub fn pass_turn(&self) {
        let gate = &self.gate;
        if gate.max == 0 || gate.open.get() < gate.max || !self.idle.borrow().is_empty() {
            gate.wake_one();
        }
    }

    /// Open HTTP/1.1 connections (idle and busy) on this worker.
    pub fn open_count(&self) -> usize {
        self.gate.open.get()
    }

    /// Requests waiting for a connection to this backend on this worker.
    pub fn queued_count(&self) -> usize {
        self.gate.waiters.borrow().len()
    }

    /// The ticker's work at `now_ms`: closes the idle connections that reached
    /// `pool.idle_timeout_ms` and publishes the latency window if it aged; returns when there is
    /// more to do (`None`: nothing until new traffic).
    pub fn upkeep(&self, now_ms: u64) -> Option<u64> {
        let timeout = self.settings.pool.idle_timeout_ms;
        let mut idle = self.idle.borrow_mut();
        idle.retain(|c| now_ms.saturating_sub(c.idle_since_ms) < timeout);
        // Checked in in order: the first is the oldest.
        let close_next = idle.first().map(|c| c.idle_since_ms.saturating_add(timeout));
        drop(idle);
        let age_next = self.stats.publish(now_ms);
        match (close_next, age_next) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The backend left the configuration: close idle connections and pool no more.
    pub fn retire(&self) {
        self.retired.set(true);
        self.idle.borrow_mut().clear();
        self.h2.retire();
        self.h2n.retire();
    }

    /// Idle connections currently pooled.
    pub fn idle_count(&self) -> usize {
        self.idle.borrow().len()
    }
}

/// Which connection an attempt may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reuse {
    /// A new one (a stale pooled connection's request is sent again).
    Fresh,
    /// A pooled one when there is one. With `check_closed` (a request that must not be sent
    /// twice), only one that a read armed on it shows open: a close found after a request was
    /// sent could not be told from a backend that failed while acting on it.
    Pooled {
        /// Whether the request must not go out on a connection the backend already closed.
        check_closed: bool,
    },
}

impl Reuse {
    /// For an attempt: a new connection when `fresh`, else a pooled one, checked for a close
    /// unless the request can be sent again (`resendable`: idempotent and still in hand).
    pub fn for_attempt(fresh: bool, resendable: bool) -> Self {
        if fresh { Self::Fresh } else { Self::Pooled { check_closed: !resendable } }
    }
}

impl Upstream {
    /// An HTTP/1.1 connection for one attempt: a pooled one (see [`Reuse`]), else a new one
    /// under `pool.max_connections_per_backend`, waiting in the backend's bounded queue while
    /// it is at the cap. `Ok(None)`: the connect failed (recorded for passive health); `Err`:
    /// the queue was full or timed out (counted in `worker`'s metrics).
    pub async fn connection(
        &self,
        reuse: Reuse,
        timeouts: &Timeouts,
        health: PassiveHealth,
        note: &ExchangeNote,
        worker: &WorkerSlot,
    ) -> Result<Option<Conn>, ProxyError> {
        let mut deadline = None;
        loop {
            // Requests already queued go first: a newcomer joins the queue behind them.
            if deadline.is_none() && self.queued_count() > 0 {
                self.wait_in_queue(&mut deadline, worker).await?;
                continue;
            }
            if let Reuse::Pooled { check_closed } = reuse {
                let max_age = Duration::from_millis(self.settings.pool.idle_timeout_ms);
                let now = now_ms();
                while let Some(conn) = self.checkout(max_age, now) {
                    // One the backend closed while it was pooled is dropped here.
                    let checked = match self.arm_at {
                        ArmAt::Checkout if check_closed => conn.arm(),
                        _ => conn.still_open(),
                    };
                    if let Some(conn) = checked {
                        if deadline.is_some() {
                            self.pass_turn();
                        }
                        return Ok(Some(conn));
                    }
                }
            }
            if let Some(slot) = self.reserve() {
                if deadline.is_some() {
                    self.pass_turn();
                }
                let _span = note.phase("upstream_connect");
                return Ok(match self.connect_h1(timeouts.upstream_connect()).await {
                    Ok(halves) => {
                        self.stats.record_connect_success();
                        Some(UpstreamConn::new(halves, self.settings.buffer_bytes, slot))
                    }
                    Err(reason) => {
                        self.connect_failed(health, &reason);
                        None
                    }
                });
            }
            self.wait_in_queue(&mut deadline, worker).await?;
        }
    }

    /// A stream slot on one of this worker's HTTP/2 sessions to the backend (`h2c://`, or
    /// `h2://` over TLS), opening a session when every one is full.
    pub async fn lease_h2(
        &self,
        cfg: &fulcrum_config::Http2Config,
        connect_timeout: Duration,
    ) -> Result<h2::Lease, LeaseError<h2::H2Error>> {
        self.h2.lease(&self.backend.url, self.tls.as_deref(), cfg, connect_timeout).await
    }

    /// A stream slot on one of this worker's native HTTP/2 sessions to the backend, opening a
    /// session when every one is full.
    pub async fn lease_h2n(
        &self,
        cfg: &fulcrum_config::Http2Config,
        connect_timeout: Duration,
    ) -> Result<h2n::Lease, LeaseError<h2n::H2nError>> {
        self.h2n.lease(&self.backend.url, self.tls.as_deref(), cfg, connect_timeout).await
    }

    /// A new HTTP/1.1 connection to the backend, TLS (ALPN `http/1.1`, the certificate checked)
    /// for `https://`, within `connect_timeout` for the TCP connect and again for the
    /// handshake. `Err` says why it failed.
    async fn connect_h1(&self, connect_timeout: Duration) -> Result<(ConnRead, ConnWrite), String> {
        let stream = tcp_connect(self.backend.url.addr, connect_timeout).await?;
        if !self.backend.url.tls {
            return Ok(transport::split_tcp(stream));
        }
        let tls = self.tls.as_ref().ok_or_else(|| "upstream TLS is not available".to_owned())?;
        let stream = tls
            .connect(stream, &self.backend.url.host, AppProtocol::Http11, connect_timeout)
            .await?;
        Ok(transport::split_tls(stream))
    }

    /// Waits in this backend's connection queue until a connection is returned or closed; the
    /// first wait sets the `deadline` (`pool.queue_timeout_ms`) that later ones keep.
    async fn wait_in_queue(
        &self,
        deadline: &mut Option<Instant>,
        worker: &WorkerSlot,
    ) -> Result<(), ProxyError> {
        let queued_before = deadline.is_some();
        let at =
            *deadline.get_or_insert_with(|| Instant::now() + self.settings.pool.queue_timeout());
        self.wait_for_connection(at, queued_before).await.map_err(|e| {
            worker.queue_rejected(e);
            e.into()
        })
    }
}

/// Caps one backend's open connections on one worker and queues the requests that wait for one.
#[derive(Debug)]
struct ConnGate {
    /// `pool.max_connections_per_backend`; 0 means no cap.
    max: usize,
    queue_size: usize,
    open: Cell<usize>,
    waiters: RefCell<VecDeque<Waiter>>,
    next_id: Cell<u64>,
    gauges: Gauges,
}

/// Where a gate publishes its open connections and queue length as they change.
#[derive(Debug)]
struct Gauges {
    metrics: Arc<BackendMetrics>,
    worker: usize,
}

impl Gauges {
    fn open(&self, n: usize) {
        self.metrics.slot(self.worker).set_open_connections(n);
    }
    fn queued(&self, n: usize) {
        self.metrics.slot(self.worker).set_queued(n);
    }
}

#[derive(Debug)]
struct Waiter {
    id: u64,
    waker: Option<Waker>,
    woken: bool,
}

impl ConnGate {
    /// See [`Upstream::wait_for_connection`]. No `RefCell` borrow is held across the await.
    async fn wait(&self, deadline: Instant, queued_before: bool) -> Result<(), QueueError> {
        if !queued_before && self.waiters.borrow().len() >= self.queue_size {
            return Err(QueueError::Full);
        }
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        let waiter = Waiter { id, waker: None, woken: false };
        {
            let mut waiters = self.waiters.borrow_mut();
            if queued_before {
                // It was first in line already: it keeps its turn.
                waiters.push_front(waiter);
            } else {
                waiters.push_back(waiter);
            }
            self.gauges.queued(waiters.len());
        }
        let mut entry = QueuedEntry { gate: self, id, used: false };
        let woken = poll_fn(|cx| {
            let mut waiters = self.waiters.borrow_mut();
            match waiters.iter_mut().find(|w| w.id == id) {
                Some(w) if w.woken => Poll::Ready(()),
                Some(w) => {
                    if !w.waker.as_ref().is_some_and(|k| k.will_wake(cx.waker())) {
                        w.waker = Some(cx.waker().clone());
                    }
                    Poll::Pending
                }
                None => Poll::Ready(()),
            }
        });
        let result = monoio::time::timeout_at(deadline.into(), woken).await;
        entry.used = result.is_ok();
        drop(entry);
        result.map_err(|_| QueueError::Timeout)
    }

    fn new(max: usize, queue_size: usize, gauges: Gauges) -> Self {
        Self {
            max,
            queue_size,
            open: Cell::new(0),
            waiters: RefCell::new(VecDeque::new()),
            next_id: Cell::new(0),
            gauges,
        }
    }

    /// Wakes the longest-waiting request not woken yet.
    fn wake_one(&self) {
        let waker = {
            let mut waiters = self.waiters.borrow_mut();
            let Some(w) = waiters.iter_mut().find(|w| !w.woken) else { return };
            w.woken = true;
            w.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

/// A request's place in a [`ConnGate`] queue; leaving it (woken, timed out or cancelled)
/// removes the entry, and a wake-up it received but did not use passes to the next in line.
struct QueuedEntry<'a> {
    gate: &'a ConnGate,
    id: u64,
    /// The wake-up reached the request, which now looks for its connection.
    used: bool,
}

impl Drop for QueuedEntry<'_> {
    fn drop(&mut self) {
        let removed = {
            let mut waiters = self.gate.waiters.borrow_mut();
            let at = waiters.iter().position(|w| w.id == self.id);
            let removed = at.and_then(|i| waiters.remove(i));
            self.gate.gauges.queued(waiters.len());
            removed
        };
        // A timed-out or cancelled waiter that had been woken must not swallow the wake-up.
        if !self.used && removed.is_some_and(|w| w.woken) {
            self.gate.wake_one();
        }
    }
}

/// One open connection's place under its backend's cap; dropping it frees the place and wakes
/// a queued request.
#[derive(Debug)]
pub struct Slot(Rc<ConnGate>);

impl Slot {
    fn take(gate: &Rc<ConnGate>) -> Option<Self> {
        let open = gate.open.get();
        if gate.max != 0 && open >= gate.max {
            return None;
        }
        gate.open.set(open + 1);
        gate.gauges.open(open + 1);
        Some(Self(gate.clone()))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let gate = &self.0;
        let open = gate.open.get().saturating_sub(1);
        gate.open.set(open);
        gate.gauges.open(open);
        gate.wake_one();
    }
}

/// Spawns the task that drives a pooled HTTP/2 connection (either engine), contained: a panic
/// in it (a bug in an HTTP/2 engine reached by a backend's bytes) is logged and loses that
/// connection only, `settle` marking it lost so that no lease takes it.
fn spawn_driver<F: Future<Output = ()> + 'static>(task: F, settle: impl FnOnce() + 'static) {
    fulcrum_util::spawn_contained(Box::pin(task), move |panic| {
        error!("upstream HTTP/2 connection task panicked; connection closed", panic = panic);
        settle();
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_gate(max: usize, queue_size: usize) -> ConnGate {
        let url = fulcrum_config::BackendUrl::parse("http://127.0.0.1:1").unwrap();
        let backend = Arc::new(Backend::new(1, "default".into(), url, 1, 1));
        let metrics = crate::metrics::ProxyMetrics::new(1).backend(&backend);
        ConnGate::new(max, queue_size, Gauges { metrics, worker: 0 })
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .expect("runtime");
        rt.block_on(f)
    }

    fn poll_once<F: std::future::Future + ?Sized>(f: std::pin::Pin<&mut F>) -> Poll<F::Output> {
        f.poll(&mut std::task::Context::from_waker(Waker::noop()))
    }

    #[test]
    fn cap_queue_and_cancelled_waiters() {
        block_on(async {
            let gate = Rc::new(new_gate(1, 2));
            let slot = Slot::take(&gate).expect("room for one");
            assert!(Slot::take(&gate).is_none(), "at the cap");
            let far = Instant::now() + Duration::from_secs(10);
            let mut first = Box::pin(gate.wait(far, false));
            let mut second = Box::pin(gate.wait(far, false));
            assert!(poll_once(first.as_mut()).is_pending());
            assert!(poll_once(second.as_mut()).is_pending());
            assert_eq!(gate.wait(far, false).await, Err(QueueError::Full));
            // The slot frees: the first waiter is woken, then cancelled without using it; the
            // wake-up passes to the second, and the cancelled entry leaves the queue.
            drop(slot);
            drop(first);
            assert_eq!(gate.waiters.borrow().len(), 1);
            assert_eq!(poll_once(second.as_mut()), Poll::Ready(Ok(())));
            drop(second);
            assert!(gate.waiters.borrow().is_empty());
            assert_eq!(gate.open.get(), 0);
            assert!(Slot::take(&gate).is_some());
        });
    }

    #[test]
    fn a_queued_request_times_out_and_leaves_the_queue() {
        block_on(async {
            let gate = Rc::new(new_gate(1, 1));
            let _slot = Slot::take(&gate).expect("room for one");
            let soon = Instant::now() + Duration::from_millis(20);
            assert_eq!(gate.wait(soon, false).await, Err(QueueError::Timeout));
            assert!(gate.waiters.borrow().is_empty());
            let no_queue = new_gate(1, 0);
            assert_eq!(no_queue.wait(soon, false).await, Err(QueueError::Full));
        });
    }
}
