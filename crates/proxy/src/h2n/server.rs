//! The downstream side on the native engine: one HTTP/2 client connection, served by its
//! driver task on the worker, each request stream run by a task of its own through the attempt
//! loop ([`super::stream`]).
//!
//! The engine enforces the protocol's limits and defences from `[http2]` (concurrent streams,
//! header list size, windows, the reset rate that stops rapid reset and provoked resets, the
//! control-frame and empty-frame floods, CONTINUATION floods). This module adds what needs a
//! clock or the worker: the handshake deadline (`timeouts.client_header_ms`), PINGs on quiet
//! connections and their timeout, the idle close, GOAWAY after
//! `limits.max_requests_per_connection` streams, and the graceful close when the worker drains.

use std::cell::Cell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use fulcrum_h2::ErrorCode;
use fulcrum_h2::conn::{Config, Connection, Role};
use fulcrum_util::ReadBuf;

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
}

impl AsRef<StreamCount> for ConnState {
    fn as_ref(&self) -> &StreamCount {
        &self.streams
    }
}

/// Spawns a task per request stream and answers PINGs' accounting.
struct Streams {
    ctx: Rc<WorkerCtx>,
    state: Rc<ConnState>,
    /// Streams still allowed by `limits.max_requests_per_connection` (0: unlimited).
    left: u64,
    pong: Rc<Cell<bool>>,
}

impl OnEvent for Streams {
    fn request(&mut self, conn: &Rc<H2Conn>, engine: &mut Connection, stream: NewStream) {
        if self.left == 1 {
            engine.go_away(ErrorCode::NO_ERROR);
        }
        self.left = self.left.saturating_sub(1);
        let guard = StreamGuard::new(&self.state);
        let (ctx, conn, state) = (self.ctx.clone(), conn.clone(), self.state.clone());
        // Each stream is its own task: a panic in it loses that stream only.
        self.ctx.spawn_contained(Box::pin(async move {
            h2call::serve(&ctx, Opening { conn, state, stream }).await;
            drop(guard);
        }));
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
    let state =
        Rc::new(ConnState { client_ip: peer.ip().to_string(), info, streams: StreamCount::new() });
    let pong = Rc::new(Cell::new(false));
    let mut streams = Streams {
        ctx: ctx.clone(),
        state: state.clone(),
        left: ctx.limits.max_requests_per_connection,
        pong: pong.clone(),
    };
    let deadlines = watch(&ctx, &conn, &state, &pong);
    drive(&conn, r, w, buf, &mut streams, deadlines).await;
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
