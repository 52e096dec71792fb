//! The downstream side on the native engine: one HTTP/2 client connection, served by its
//! driver task on the worker. Its request streams run through the attempt loop
//! ([`super::stream`]) inside that same task ([`StreamSet`]): no task per stream.
//!
//! The engine enforces the protocol's limits and defences from `[http2]` (concurrent streams,
//! header list size, windows, the reset rate that stops rapid reset and provoked resets, the
//! control-frame and empty-frame floods, CONTINUATION floods). This module adds what needs a
//! clock or the worker: the handshake deadline (`timeouts.client_header_ms`), the streams'
//! response and `grpc-timeout` deadlines (one [`Alarms`] table, rung by this task), PINGs on
//! quiet connections and their timeout, the idle close, GOAWAY after
//! `limits.max_requests_per_connection` streams, and the graceful close when the worker drains.

use std::cell::{Cell, RefCell};
use std::future::{Future, poll_fn};
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::task::Poll;
use std::time::{Duration, Instant};

use fulcrum_h2::ErrorCode;
use fulcrum_h2::conn::{Config, Connection, Role};
use fulcrum_telemetry::error;
use fulcrum_util::{Alarms, CatchUnwind, ReadBuf};
use futures_util::stream::{FuturesUnordered, StreamExt as _};

use super::stream::Opening;
use crate::ctx::WorkerCtx;
use crate::h2call::{self, StreamCount, StreamGuard};
use crate::h2conn::{H2Conn, NewStream, OnEvent, drive, engine_config};
use crate::transport::{ConnInfo, ConnRead, ConnWrite};

/// How often a client connection checks its deadlines.
const TICK: Duration = Duration::from_secs(1);

/// The read buffer capacity for a connection: a whole frame of the size we advertise fits.
pub(crate) fn read_capacity(ctx: &WorkerCtx) -> usize {
    ctx.limits.buffer_bytes.max(ctx.http2.max_frame_size as usize + fulcrum_h2::frame::HEADER_LEN)
}

/// What one client connection's streams share with it.
#[derive(Debug)]
pub(crate) struct ConnState {
    /// The client's address, for `x-forwarded-for`.
    pub(crate) client_ip: String,
    /// Cleartext or TLS (and the TLS session), for `X-Forwarded-Proto` and the records.
    pub(crate) info: ConnInfo,
    streams: StreamCount,
    /// The deadlines of the streams' waits, rung by the connection's task.
    pub(crate) alarms: Alarms,
}

impl AsRef<StreamCount> for ConnState {
    fn as_ref(&self) -> &StreamCount {
        &self.streams
    }
}

/// The request streams of one client connection, run inside the connection's own task rather
/// than as a task each: a stream costs no task of its own (its allocation, its scheduling
/// through the worker's queue), and the connection's turn that reads a batch of requests also
/// starts them. Each stream is polled only when woken, with a waker of its own; a panic in one
/// loses that stream only (its slot is detached and reset as it drops). A stream's future is
/// boxed where it is made: the set's entry then holds a pointer, and the future's state (about
/// 1.5 KiB) is not copied on its way in.
struct StreamSet<F> {
    running: RefCell<FuturesUnordered<CatchUnwind<F>>>,
    worker: usize,
}

impl<F: Future<Output = ()>> StreamSet<F> {
    fn new(worker: usize) -> Self {
        Self { running: RefCell::new(FuturesUnordered::new()), worker }
    }

    /// Adds a stream. It is first polled by the next poll of [`run`](Self::run): `drive`
    /// polls the connection's reader, which adds streams, before its `stop` future, which runs
    /// them, so that is in the same turn.
    fn push(&self, stream: Pin<Box<F>>) {
        self.running.borrow_mut().push(CatchUnwind::new(stream));
    }

    /// Polls the streams that were woken (or just added) until each is waiting again.
    /// `Ready` once none is left.
    fn poll_streams(&self, cx: &mut std::task::Context<'_>) -> Poll<()> {
        let mut running = self.running.borrow_mut();
        loop {
            match running.poll_next_unpin(cx) {
                Poll::Ready(Some(Ok(()))) => {}
                Poll::Ready(Some(Err(panic))) => {
                    error!("stream panicked; stream reset", worker = self.worker, panic = panic);
                }
                Poll::Ready(None) => return Poll::Ready(()),
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    /// Runs the streams for as long as the connection runs (never resolves).
    async fn run(&self) {
        poll_fn(|cx| {
            // With none left, the next stream added is polled by the next poll of this
            // future (see `push`).
            let _ = self.poll_streams(cx);
            Poll::Pending
        })
        .await
    }

    /// Runs the streams left after the connection ended until each has ended.
    async fn finish(&self) {
        poll_fn(|cx| self.poll_streams(cx)).await
    }
}

/// What one client stream runs: it through the attempt loop, counted in its connection's
/// streams until it ends.
async fn run_stream(ctx: Rc<WorkerCtx>, opening: Opening, guard: StreamGuard<ConnState>) {
    h2call::serve(&ctx, opening).await;
    drop(guard);
}

/// Starts each request stream in the connection's [`StreamSet`] and answers PINGs' accounting.
struct Streams<F> {
    ctx: Rc<WorkerCtx>,
    state: Rc<ConnState>,
    /// Streams still allowed by `limits.max_requests_per_connection` (0: unlimited).
    left: u64,
    pong: Rc<Cell<bool>>,
    /// [`run_stream`], named by its type so that the set holds one concrete future type
    /// (each boxed, not a `dyn Future`).
    run: fn(Rc<WorkerCtx>, Opening, StreamGuard<ConnState>) -> F,
    set: Rc<StreamSet<F>>,
}

impl<F: Future<Output = ()>> OnEvent for Streams<F> {
    fn request(&mut self, conn: &Rc<H2Conn>, engine: &mut Connection, stream: NewStream) {
        if self.left == 1 {
            engine.go_away(ErrorCode::NO_ERROR);
        }
        self.left = self.left.saturating_sub(1);
        let guard = StreamGuard::new(&self.state);
        let opening = Opening { conn: conn.clone(), state: self.state.clone(), stream };
        self.set.push(Box::pin((self.run)(self.ctx.clone(), opening, guard)));
    }

    fn pong(&mut self) {
        self.pong.set(true);
    }
}

/// Serves one HTTP/2 client connection over `r`/`w` (cleartext, or TLS after ALPN chose
/// `h2`); `buf` holds what was already read (the preface, on cleartext).
pub(crate) async fn serve(
    ctx: Rc<WorkerCtx>,
    (r, w): (ConnRead, ConnWrite),
    mut buf: ReadBuf,
    peer: SocketAddr,
    info: ConnInfo,
) {
    buf.grow_to(read_capacity(&ctx));
    let cfg = ctx.http2;
    // WebSocket over HTTP/2 (RFC 8441) while WebSocket upgrades are passed.
    let config = Config {
        enable_connect_protocol: crate::websocket::enabled(&ctx.upgrades),
        ..engine_config(&cfg)
    };
    let conn = H2Conn::new(Role::Server, config);
    let state = Rc::new(ConnState {
        client_ip: peer.ip().to_string(),
        info,
        streams: StreamCount::new(),
        alarms: Alarms::new(),
    });
    let pong = Rc::new(Cell::new(false));
    let run: fn(_, _, _) -> _ = run_stream;
    let set = Rc::new(StreamSet::new(ctx.index));
    let mut streams = Streams {
        ctx: ctx.clone(),
        state: state.clone(),
        left: ctx.limits.max_requests_per_connection,
        pong: pong.clone(),
        run,
        set: set.clone(),
    };
    let deadlines = watch(&ctx, &conn, &state, &pong);
    let stop = async {
        monoio::select! {
            () = deadlines => {}
            () = set.run() => {}
            () = state.alarms.drive() => {}
        }
    };
    drive(&conn, r, w, buf, &mut streams, stop).await;
    // Streams still running learn that the connection is gone and end (with their records).
    monoio::select! {
        () = set.finish() => {}
        () = state.alarms.drive() => {}
    }
}

/// The connection's clock: resolves when it must close at once (no handshake in time, a PING
/// unanswered); sends GOAWAY when it idles or the worker drains, and PINGs quiet connections.
async fn watch(ctx: &WorkerCtx, conn: &H2Conn, state: &ConnState, pong: &Cell<bool>) {
    let cfg = ctx.http2;
    let timeouts = ctx.current_epoch().epoch.timeouts;
    let idle_timeout = Duration::from_millis(cfg.idle_timeout_ms).min(timeouts.client_idle());
    let keepalive = Duration::from_millis(cfg.keepalive_interval_ms);
    let pong_timeout = Duration::from_millis(cfg.keepalive_timeout_ms);
    let started = Instant::now();
    let mut last_ping = Instant::now();
    let mut pinging = false;
    let mut closing = false;
    let mut drained = std::pin::pin!(ctx.drained_signal());
    loop {
        monoio::select! {
            _ = &mut drained, if !closing => {
                // The worker drains: no new streams; those open finish.
                conn.go_away(ErrorCode::NO_ERROR);
                closing = true;
                continue;
            }
            _ = monoio::time::sleep(TICK) => {}
        }
        if !conn.is_ready() && started.elapsed() >= timeouts.client_header() {
            return;
        }
        if pong.replace(false) {
            pinging = false;
        }
        if closing || conn.is_closing() {
            continue;
        }
        if ctx.is_draining() || state.streams.idle_for(idle_timeout) {
            conn.go_away(ErrorCode::NO_ERROR);
            closing = true;
        } else if pinging && last_ping.elapsed() >= pong_timeout {
            return;
        } else if !keepalive.is_zero() && !pinging && last_ping.elapsed() >= keepalive {
            conn.ping(*b"fulcrum\0");
            last_ping = Instant::now();
            pinging = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_panicking_stream_ends_alone_and_the_others_run_to_their_end() {
        let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .unwrap_or_else(|e| panic!("runtime: {e}"));
        rt.block_on(async {
            let set = StreamSet::new(0);
            let ended = Rc::new(Cell::new(0));
            let stream = |panics: bool, ended: Rc<Cell<u32>>| async move {
                monoio::time::sleep(Duration::from_millis(2)).await;
                assert!(!panics, "a stream's bug");
                ended.set(ended.get() + 1);
            };
            for panics in [false, true, false] {
                set.push(Box::pin(stream(panics, ended.clone())));
            }
            set.finish().await;
            assert_eq!(ended.get(), 2);
            assert!(set.running.borrow().is_empty());
        });
    }
}
