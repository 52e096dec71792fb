//! The downstream side: one HTTP/2 client connection, its limits, and a task per stream.
//!
//! h2 enforces most protections once configured from `[http2]`: concurrent streams,
//! header-list size (which also bounds CONTINUATION frames and HPACK expansion), the pending
//! accept queue of reset streams and the small-DATA-frame budget. On top of that this module caps
//! streams the client resets per second (rapid reset) with GOAWAY(ENHANCE_YOUR_CALM), PINGs
//! quiet connections, closes idle ones, sends GOAWAY after `limits.max_requests_per_connection`
//! streams, and shuts down gracefully when the worker drains.

use std::cell::Cell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use monoio::io::poll_io::{AsyncRead, AsyncWrite};
use monoio::time::timeout;

use fulcrum_util::Notify;

use super::stream::NewStream;
use crate::ctx::WorkerCtx;
use crate::h2call::{self, StreamCount, StreamGuard};
use crate::transport::ConnInfo;

/// How often a client connection checks idleness, draining and keep-alive.
const TICK: Duration = Duration::from_secs(1);

/// State one client connection shares with its stream tasks.
#[derive(Debug)]
pub struct ConnState {
    /// The client's address as a header value, for `x-forwarded-for` (made once per
    /// connection, cloned per stream).
    pub client_ip: http::HeaderValue,
    /// Cleartext or TLS (and the TLS session), for `X-Forwarded-Proto` and the access records.
    pub info: ConnInfo,
    streams: StreamCount,
    window_start: Cell<Instant>,
    resets: Cell<u32>,
    max_resets: u32,
    calm: Notify,
    too_many_resets: Cell<bool>,
}

impl ConnState {
    /// Counts a stream the client reset; past the per-second cap the connection is closed.
    pub fn client_reset(&self) {
        let now = Instant::now();
        if now.duration_since(self.window_start.get()) >= Duration::from_secs(1) {
            self.window_start.set(now);
            self.resets.set(0);
        }
        self.resets.set(self.resets.get() + 1);
        if self.resets.get() > self.max_resets && !self.too_many_resets.get() {
            self.too_many_resets.set(true);
            self.calm.notify();
        }
    }
}

impl AsRef<StreamCount> for ConnState {
    fn as_ref(&self) -> &StreamCount {
        &self.streams
    }
}

/// Serves one HTTP/2 client connection over `io` (a cleartext socket whose first bytes are
/// replayed, or a TLS stream after ALPN chose `h2`).
pub(crate) async fn serve<T>(ctx: Rc<WorkerCtx>, io: T, peer: SocketAddr, info: ConnInfo)
where
    T: AsyncRead + AsyncWrite + Unpin + 'static,
{
    let cfg = ctx.http2;
    let mut builder = h2::server::Builder::new();
    builder
        .max_concurrent_streams(cfg.max_concurrent_streams)
        .max_header_list_size(cfg.max_header_list_size)
        .header_table_size(cfg.header_table_size)
        .initial_window_size(cfg.initial_stream_window)
        .initial_connection_window_size(cfg.initial_connection_window)
        .max_frame_size(cfg.max_frame_size)
        .max_send_buffer_size(cfg.max_send_buffer)
        .max_pending_accept_reset_streams(cfg.max_pending_accept_reset_streams)
        .data_frame_budget(cfg.data_frame_budget);
    // WebSocket over HTTP/2 (RFC 8441) while WebSocket upgrades are passed.
    if crate::websocket::enabled(&ctx.upgrades) {
        builder.enable_connect_protocol();
    }
    let timeouts = ctx.current_epoch().epoch.timeouts;
    let mut conn = match timeout(timeouts.client_header(), builder.handshake::<_, Bytes>(io)).await
    {
        Ok(Ok(conn)) => conn,
        _ => return,
    };
    let state = Rc::new(ConnState {
        client_ip: http::HeaderValue::from_str(&peer.ip().to_string())
            .unwrap_or_else(|_| http::HeaderValue::from_static("unknown")),
        info,
        streams: StreamCount::new(),
        window_start: Cell::new(Instant::now()),
        resets: Cell::new(0),
        max_resets: cfg.max_resets_per_sec,
        calm: Notify::default(),
        too_many_resets: Cell::new(false),
    });
    let mut ping = conn.ping_pong();
    let idle_timeout = Duration::from_millis(cfg.idle_timeout_ms).min(timeouts.client_idle());
    let keepalive = Duration::from_millis(cfg.keepalive_interval_ms);
    let pong_timeout = Duration::from_millis(cfg.keepalive_timeout_ms);
    let mut last_ping = Instant::now();
    let mut pinging = false;
    let mut shutting_down = false;
    let mut calmed = false;
    // `limits.max_requests_per_connection` (0 = unlimited): GOAWAY once that many streams came.
    let mut streams_left = ctx.limits.max_requests_per_connection;
    // One timer for the connection's life, re-armed when it fires (not one per stream), and one
    // rapid-reset notification (not a new waiter registered at every accepted stream).
    let mut tick = std::pin::pin!(monoio::time::sleep(TICK));
    let mut calm = std::pin::pin!(state.calm.notified());
    let mut drained = std::pin::pin!(ctx.drained_signal());
    loop {
        monoio::select! {
            next = conn.accept() => match next {
                Some(Ok((req, respond))) => {
                    if streams_left == 1 && !shutting_down {
                        conn.graceful_shutdown();
                        shutting_down = true;
                    }
                    streams_left = streams_left.saturating_sub(1);
                    let guard = StreamGuard::new(&state);
                    let task_ctx = ctx.clone();
                    let state = state.clone();
                    // Each stream is its own task: a panic in it loses that stream only.
                    ctx.spawn_contained(Box::pin(async move {
                        let stream = NewStream { conn: state, req, respond };
                        h2call::serve(&task_ctx, stream).await;
                        drop(guard);
                    }));
                }
                Some(Err(_)) | None => break,
            },
            _ = &mut drained, if !shutting_down => {
                // The worker drains: no new streams; those open finish.
                conn.graceful_shutdown();
                shutting_down = true;
            },
            _ = &mut calm, if !calmed => {
                calmed = true;
                conn.abrupt_shutdown(h2::Reason::ENHANCE_YOUR_CALM);
                shutting_down = true;
            },
            pong = ping_reply(&mut ping, pinging) => {
                pinging = false;
                if !pong {
                    break;
                }
            },
            _ = &mut tick => {
                tick.as_mut().reset(monoio::time::Instant::now() + TICK);
                if shutting_down {
                    continue;
                }
                if ctx.is_draining() || state.streams.idle_for(idle_timeout) {
                    conn.graceful_shutdown();
                    shutting_down = true;
                } else if pinging && last_ping.elapsed() >= pong_timeout {
                    break;
                } else if !keepalive.is_zero() && !pinging && last_ping.elapsed() >= keepalive
                    && let Some(p) = ping.as_mut()
                    && p.send_ping(h2::Ping::opaque()).is_ok()
                {
                    last_ping = Instant::now();
                    pinging = true;
                }
            }
        }
    }
}

/// Resolves with whether the outstanding PING was answered; never resolves when none is.
async fn ping_reply(ping: &mut Option<h2::PingPong>, pinging: bool) -> bool {
    match ping.as_mut() {
        Some(p) if pinging => std::future::poll_fn(|cx| p.poll_pong(cx)).await.is_ok(),
        _ => std::future::pending().await,
    }
}
