//! Upgraded connections: once a backend switched protocols (`101` to a WebSocket upgrade, or
//! an HTTP/2 extended CONNECT translated to one), the client's side and the backend connection
//! are joined into a tunnel that copies bytes both ways until either side closes, the tunnel
//! is idle for `timeouts.tunnel_idle_ms`, or the worker's drain runs out (`timeouts.drain_ms`).
//! Runs in the client connection's (or stream's) task on the worker's thread; a worker opens
//! its tunnels with `WorkerCtx::open_tunnel`.
//!
//! Each direction is one loop (read, then write everything read), so a slow reader
//! back-pressures the sender through one fixed buffer per direction. Bytes already read past
//! the heads on either side go first. An end of stream from one side is passed on as a
//! half-close (`shutdown(Write)`, or END_STREAM) and the other direction runs on until it ends
//! too; an error on either side ends both.
//!
//! On plain TCP a write goes first as one direct `send` outside the driver
//! (`ConnWrite::send_now`), and only what the socket did not take is awaited. A tunnel's worker
//! mostly waits between small messages, so on io_uring each awaited write cost a ring operation,
//! a completion and a wake-up of the task of its own (2% to 4% of a message's CPU). HTTP
//! exchanges keep writing through the ring, whose turns carry many writes at once.
//!
//! The idle timeout is one coarse timer per tunnel, kept off the per-message path: a read or
//! write only sets a flag, and a watchdog that wakes `IDLE_SLICES` times per timeout takes
//! the flag and closes the tunnel once it found it unset for the whole timeout. So a tunnel
//! closes between `idle` and `idle * (1 + 1 / IDLE_SLICES)` after its last byte, and no clock
//! is read per message. A read is never cancelled while the tunnel lives (on io_uring a
//! cancelled read could take bytes it already received with it); the reads go only when the
//! tunnel closes.

use std::cell::Cell;
use std::future::Future;
use std::time::{Duration, Instant};

use fulcrum_telemetry::{Collect, Counter, Encoder, Gauge, Kind, PerWorker};
use fulcrum_util::ReadBuf;
use monoio::io::{AsyncReadRent, AsyncWriteRent};

use crate::transport::{ConnRead, ConnWrite};

/// Why a tunnel closed (the access record's `tunnel_close`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TunnelEnd {
    /// The client closed (or half-closed) first, then the backend.
    Client,
    /// The backend closed (or half-closed) first, then the client.
    Backend,
    /// No byte moved in either direction for `timeouts.tunnel_idle_ms`.
    Idle,
    /// The worker drained and `timeouts.drain_ms` ran out.
    Drain,
    /// A read or write failed on either side (a reset, a TLS error).
    Error,
}

impl TunnelEnd {
    /// The value written in access records.
    pub fn as_str(self) -> &'static str {
        match self {
            TunnelEnd::Client => "client",
            TunnelEnd::Backend => "backend",
            TunnelEnd::Idle => "idle",
            TunnelEnd::Drain => "drain",
            TunnelEnd::Error => "error",
        }
    }
}

/// What a closed tunnel reports for its access record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TunnelReport {
    /// Bytes copied from the client to the backend.
    pub client_to_backend: u64,
    /// Bytes copied from the backend to the client.
    pub backend_to_client: u64,
    /// From the switch to the close.
    pub duration: Duration,
    /// Why it closed.
    pub end: TunnelEnd,
}

/// Tunnels opened and open, and the bytes they carried, one slot per worker
/// (`fulcrum_tunnels_open`, `fulcrum_tunnels_total`, `fulcrum_tunnel_bytes_total`).
#[derive(Debug)]
pub struct TunnelMetrics {
    slots: PerWorker<TunnelSlot>,
}

#[derive(Debug, Default)]
struct TunnelSlot {
    open: Gauge,
    total: Counter,
    /// Client to backend, backend to client.
    bytes: [Counter; 2],
}

impl TunnelMetrics {
    /// Slots for `workers` workers.
    pub fn new(workers: usize) -> Self {
        Self { slots: PerWorker::new(workers) }
    }
}

impl Collect for TunnelMetrics {
    fn collect(&self, out: &mut Encoder) {
        let name = "fulcrum_tunnels_open";
        out.family(name, Kind::Gauge, "Upgraded connections (WebSocket tunnels) open now.");
        let open = self.slots.sum(|s| u64::try_from(s.open.get()).unwrap_or(0));
        out.sample(name, &[], open);
        let name = "fulcrum_tunnels_total";
        out.family(name, Kind::Counter, "Upgraded connections (WebSocket tunnels) opened.");
        out.sample(name, &[], self.slots.sum(|s| s.total.get()));
        let name = "fulcrum_tunnel_bytes_total";
        out.family(name, Kind::Counter, "Bytes copied through tunnels, by direction.");
        for (i, direction) in ["client_to_backend", "backend_to_client"].iter().enumerate() {
            out.sample(name, &[("direction", direction)], self.slots.sum(|s| s.bytes[i].get()));
        }
    }
}

/// How many times per idle timeout the watchdog looks for activity: the timeout's precision
/// (a tunnel closes at most `1 / IDLE_SLICES` of the timeout late).
const IDLE_SLICES: u32 = 8;

/// One open tunnel's bookkeeping: its byte counts, whether anything moved since the watchdog
/// last looked, and its place in the worker's gauge (left when dropped).
pub(crate) struct Tunnel<'a> {
    slot: &'a TunnelSlot,
    started: Instant,
    active: Cell<bool>,
    moved: [Cell<u64>; 2],
}

/// Which way bytes go.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Direction {
    /// Client to backend.
    Up = 0,
    /// Backend to client.
    Down = 1,
}

/// How one direction of a tunnel stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flow {
    /// Its source ended the stream; the end was passed on.
    Ended,
    /// A read or a write failed.
    Broken,
}

impl<'a> Tunnel<'a> {
    /// Opens a tunnel on worker `worker`, counted in `metrics` until dropped.
    pub(crate) fn open(metrics: &'a TunnelMetrics, worker: usize) -> Self {
        let slot = metrics.slots.get(worker);
        slot.open.add(1);
        slot.total.inc();
        let (started, active) = (Instant::now(), Cell::new(false));
        Self { slot, started, active, moved: [Cell::new(0), Cell::new(0)] }
    }

    /// Counts `n` bytes moved `direction` now (activity for the idle timer).
    #[inline]
    pub(crate) fn moved(&self, direction: Direction, n: usize) {
        let i = direction as usize;
        self.moved[i].set(self.moved[i].get() + n as u64);
        self.slot.bytes[i].add(n as u64);
        self.active.set(true);
    }

    /// Something arrived (activity for the idle timer, not yet copied).
    #[inline]
    pub(crate) fn touch(&self) {
        self.active.set(true);
    }

    /// Runs the two directions until both ended, one broke, the tunnel idled out or the
    /// worker's drain (`drained` resolving, then `drain` more) ran out; returns the report.
    /// Dropping the directions closes nothing by itself: the caller drops the connections.
    pub(crate) async fn run(
        &self,
        drained: impl Future<Output = ()>,
        idle: Duration,
        drain: Duration,
        up: impl Future<Output = Flow>,
        down: impl Future<Output = Flow>,
    ) -> TunnelReport {
        let mut up = std::pin::pin!(up);
        let mut down = std::pin::pin!(down);
        let mut watchdog = std::pin::pin!(self.idle_watch(idle));
        let mut drained = std::pin::pin!(async {
            drained.await;
            monoio::time::sleep(drain).await;
        });
        let (mut up_done, mut down_done) = (false, false);
        let mut first: Option<TunnelEnd> = None;
        let end = loop {
            monoio::select! {
                flow = &mut up, if !up_done => {
                    if flow == Flow::Broken {
                        break TunnelEnd::Error;
                    }
                    up_done = true;
                    first.get_or_insert(TunnelEnd::Client);
                }
                flow = &mut down, if !down_done => {
                    if flow == Flow::Broken {
                        break TunnelEnd::Error;
                    }
                    down_done = true;
                    first.get_or_insert(TunnelEnd::Backend);
                }
                _ = &mut watchdog => break TunnelEnd::Idle,
                _ = &mut drained => break TunnelEnd::Drain,
            }
            if up_done && down_done {
                break first.unwrap_or(TunnelEnd::Client);
            }
        };
        TunnelReport {
            client_to_backend: self.moved[0].get(),
            backend_to_client: self.moved[1].get(),
            duration: self.started.elapsed(),
            end,
        }
    }

    /// Resolves once no byte moved for at least `idle`: wakes every `idle / IDLE_SLICES` and
    /// takes the activity flag; a look that finds it set restarts the quiet period (the
    /// activity happened before that look, so the tunnel is never closed early).
    async fn idle_watch(&self, idle: Duration) {
        let slice = (idle / IDLE_SLICES).max(Duration::from_millis(1));
        let mut quiet_since = self.started;
        loop {
            monoio::time::sleep(slice).await;
            let now = Instant::now();
            if self.active.replace(false) {
                quiet_since = now;
            } else if now.duration_since(quiet_since) >= idle {
                return;
            }
        }
    }
}

impl Drop for Tunnel<'_> {
    fn drop(&mut self) {
        self.slot.open.add(-1);
    }
}

/// Copies one direction between two connections: what `buf` already holds first, then
/// everything `src` sends, until it ends (then `dst` is shut for writing) or either side fails.
/// `None` for `src` (a backend half still owned by an armed read) is a broken direction.
///
/// The transport is matched once here rather than in every read: each read is then the
/// runtime's own future, without a `ConnRead` future around it to build and poll per message.
pub(crate) async fn copy(
    tunnel: &Tunnel<'_>,
    direction: Direction,
    src: Option<&mut ConnRead>,
    buf: &mut ReadBuf,
    dst: &mut ConnWrite,
) -> Flow {
    match src {
        Some(ConnRead::Tcp(r)) => pump(tunnel, direction, r, buf, dst).await,
        Some(ConnRead::Tls(r)) => pump(tunnel, direction, r, buf, dst).await,
        None => Flow::Broken,
    }
}

/// [`copy`]'s loop over one transport's reading half.
async fn pump<R: AsyncReadRent>(
    tunnel: &Tunnel<'_>,
    direction: Direction,
    src: &mut R,
    buf: &mut ReadBuf,
    dst: &mut ConnWrite,
) -> Flow {
    loop {
        let n = buf.len();
        if n > 0 {
            // What the socket takes at once goes without the driver; the rest is awaited.
            let Ok(sent) = dst.send_now(buf.data()) else {
                return Flow::Broken;
            };
            buf.consume(sent);
            if sent < n && buf.write_to(dst, n - sent).await.is_err() {
                return Flow::Broken;
            }
            tunnel.moved(direction, n);
        }
        match buf.fill(src).await {
            Ok(0) => {
                let _ = dst.shutdown().await;
                return Flow::Ended;
            }
            Ok(_) => tunnel.touch(),
            Err(_) => return Flow::Broken,
        }
    }
}
