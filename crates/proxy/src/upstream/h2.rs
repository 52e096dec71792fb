//! Per-worker pools of multiplexed HTTP/2 connections to one h2c backend (on the worker's
//! thread; each connection's driver is a task of the worker).
//!
//! A pool hands out the first session with room under the backend's
//! `SETTINGS_MAX_CONCURRENT_STREAMS` and opens another (up to
//! `http2.max_connections_per_backend`) when all are full; only one connect runs at a time per
//! backend and callers wait for it. Each session's driver task polls the h2 connection, sends
//! keep-alive PINGs and closes the connection after `http2.idle_timeout_ms` without streams.
//! A session that received GOAWAY or failed is dropped from the pool; calls not yet sent go to
//! another session.

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use h2::client::SendRequest;
use monoio::time::timeout;

use fulcrum_config::{BackendUrl, Http2Config};
use fulcrum_tls::AppProtocol;
use fulcrum_util::Rewind;
use monoio::io::poll_io::{AsyncRead, AsyncWrite};

use super::sessions::{PooledSession, Sessions, Slots};
use super::tls::{UpstreamTls, tcp_connect};
use super::{LeaseError, spawn_driver};

/// Why an upstream HTTP/2 connection could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum H2Error {
    /// The socket could not be moved to the poll-io layer.
    #[error("poll-io conversion: {0}")]
    PollIo(String),
    /// Connecting to a backend (TCP, then TLS for `h2://`) failed or timed out.
    #[error("connect: {0}")]
    Connect(String),
    /// The HTTP/2 handshake failed or timed out.
    #[error("handshake: {0}")]
    Handshake(String),
}

/// Streams h2 allows on a new connection before the backend's SETTINGS arrive (none are sent
/// before them: [`connect`] waits for them).
const INITIAL_MAX_STREAMS: usize = 100;

/// One multiplexed upstream connection.
#[derive(Debug)]
pub struct Session {
    send: SendRequest<Bytes>,
    slots: Slots,
    max_streams: Cell<usize>,
    closed: Cell<bool>,
}

impl Session {
    /// Whether the connection is gone (GOAWAY, error, idle close).
    pub fn is_closed(&self) -> bool {
        self.closed.get()
    }

    /// Marks the session unusable for new streams (it keeps serving those in flight).
    pub fn mark_closed(&self) {
        self.closed.set(true);
    }

    fn has_room(&self) -> bool {
        !self.closed.get() && self.slots.leases.get() < self.max_streams.get()
    }
}

impl PooledSession for Session {
    fn slots(&self) -> &Slots {
        &self.slots
    }

    fn is_closing(&self) -> bool {
        self.closed.get()
    }

    fn close(&self) {
        self.closed.set(true);
    }
}

/// A stream slot on a session, held for the life of one call.
#[derive(Debug)]
pub struct Lease {
    session: Rc<Session>,
}

impl Lease {
    /// A handle to open the stream with.
    pub fn sender(&self) -> SendRequest<Bytes> {
        self.session.send.clone()
    }

    /// The session (to mark it closed when it refuses the stream).
    pub fn session(&self) -> &Session {
        &self.session
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.session.slots.give_back();
    }
}

/// The h2 sessions of one worker to one backend.
#[derive(Debug, Default)]
pub struct SessionPool {
    sessions: Sessions<Session>,
}

impl SessionPool {
    /// A stream slot on a session with room, opening a connection when every one is full.
    pub async fn lease(
        &self,
        url: &BackendUrl,
        tls: Option<&UpstreamTls>,
        cfg: &Http2Config,
        connect_timeout: Duration,
    ) -> Result<Lease, LeaseError<H2Error>> {
        loop {
            self.sessions.check_retired()?;
            let (room, count, least) = {
                let sessions = self.sessions.open();
                let room = sessions.iter().find(|s| s.has_room()).cloned();
                let least = sessions.iter().min_by_key(|s| s.slots.leases.get()).cloned();
                (room, sessions.len(), least)
            };
            if let Some(session) = room {
                return Ok(take(session));
            }
            if count >= cfg.max_connections_per_backend
                && let Some(session) = least
            {
                // Every connection is full and no more may open: h2 queues the stream until
                // the backend has room.
                return Ok(take(session));
            }
            if self.sessions.is_connecting() {
                self.sessions.connected().await;
                continue;
            }
            // Boxed: the handshake future is large and rarely run; inline it would grow (and
            // make every stream task copy) the future of every call that leases a stream.
            let connect = Box::pin(connect(url, tls, cfg, connect_timeout));
            return Ok(take(self.sessions.connect(connect).await?));
        }
    }

    /// Closes every idle session and stops pooling (the backend was removed). Sessions with
    /// streams in flight finish them.
    pub fn retire(&self) {
        self.sessions.retire();
    }
}

fn take(session: Rc<Session>) -> Lease {
    session.slots.take();
    Lease { session }
}

/// Opens one connection (TLS with ALPN `h2` for `h2://`), runs the HTTP/2 handshake, then
/// spawns its driver task.
async fn connect(
    url: &BackendUrl,
    tls: Option<&UpstreamTls>,
    cfg: &Http2Config,
    connect_timeout: Duration,
) -> Result<Rc<Session>, H2Error> {
    let stream = tcp_connect(url.addr, connect_timeout).await.map_err(H2Error::Connect)?;
    if !url.tls {
        let io = Rewind::new(stream, Bytes::new()).map_err(|e| H2Error::PollIo(e.to_string()))?;
        return handshake(io, cfg, connect_timeout).await;
    }
    let tls = tls.ok_or_else(|| H2Error::Connect("upstream TLS is not available".into()))?;
    let stream = tls
        .connect(stream, &url.host, AppProtocol::H2, connect_timeout)
        .await
        .map_err(H2Error::Connect)?;
    let io = stream.into_poll_io().map_err(|e| H2Error::PollIo(e.to_string()))?;
    handshake(io, cfg, connect_timeout).await
}

/// The HTTP/2 handshake over `io`, then the backend's SETTINGS, then the driver task.
async fn handshake<T>(
    io: T,
    cfg: &Http2Config,
    connect_timeout: Duration,
) -> Result<Rc<Session>, H2Error>
where
    T: AsyncRead + AsyncWrite + Unpin + 'static,
{
    let mut builder = h2::client::Builder::new();
    builder
        .enable_push(false)
        .initial_window_size(cfg.initial_stream_window)
        .initial_connection_window_size(cfg.initial_connection_window)
        .max_frame_size(cfg.max_frame_size)
        .max_header_list_size(cfg.max_header_list_size)
        .header_table_size(cfg.header_table_size)
        .max_send_buffer_size(cfg.max_send_buffer)
        .initial_max_send_streams(INITIAL_MAX_STREAMS)
        .data_frame_budget(cfg.data_frame_budget);
    let (send, mut conn) = match timeout(connect_timeout, builder.handshake::<_, Bytes>(io)).await {
        Ok(Ok(pair)) => pair,
        Ok(Err(e)) => return Err(H2Error::Handshake(e.to_string())),
        Err(_) => return Err(H2Error::Handshake("timed out".into())),
    };
    // The backend's SETTINGS (its stream limit above all) is the first frame it sends, so once
    // a PING round trip is over they are known: no stream goes out on an assumed limit.
    let mut ping = conn.ping_pong();
    if let Some(p) = ping.as_mut() {
        let settled = async {
            monoio::select! {
                _ = &mut conn => Err(H2Error::Handshake("closed before its SETTINGS".into())),
                pong = p.ping(h2::Ping::opaque()) => {
                    pong.map_err(|e| H2Error::Handshake(e.to_string()))
                }
            }
        };
        match timeout(connect_timeout, settled).await {
            Ok(Ok(_pong)) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(H2Error::Handshake("no SETTINGS in time".into())),
        }
    }
    let session = Rc::new(Session {
        send,
        slots: Slots::new(),
        max_streams: Cell::new(conn.max_concurrent_send_streams().max(1)),
        closed: Cell::new(false),
    });
    let lost = session.clone();
    spawn_driver(drive(conn, ping, session.clone(), *cfg), move || lost.closed.set(true));
    Ok(session)
}

/// Polls one upstream connection until it ends; PINGs it while it is quiet and closes it when
/// it stays idle.
async fn drive<T: AsyncRead + AsyncWrite + Unpin>(
    mut conn: h2::client::Connection<T, Bytes>,
    mut ping: Option<h2::PingPong>,
    session: Rc<Session>,
    cfg: Http2Config,
) {
    let idle_timeout = Duration::from_millis(cfg.idle_timeout_ms);
    let keepalive = Duration::from_millis(cfg.keepalive_interval_ms);
    let pong_timeout = Duration::from_millis(cfg.keepalive_timeout_ms);
    let tick = if keepalive.is_zero() { idle_timeout } else { keepalive.min(idle_timeout) };
    let mut conn = Watch { conn: &mut conn, session: &session };
    let mut kill = std::pin::pin!(session.slots.kill.notified());
    loop {
        monoio::select! {
            _ = &mut conn => break,
            _ = &mut kill => break,
            _ = monoio::time::sleep(tick) => {
                let idle = session.slots.leases.get() == 0;
                if idle && (session.closed.get() || session.slots.idle_since.get().elapsed() >= idle_timeout) {
                    break;
                }
                if keepalive.is_zero() || session.closed.get() {
                    continue;
                }
                let Some(p) = ping.as_mut() else { continue };
                let alive = monoio::select! {
                    _ = &mut conn => false,
                    r = timeout(pong_timeout, p.ping(h2::Ping::opaque())) => matches!(r, Ok(Ok(_))),
                };
                if !alive {
                    break;
                }
            }
        }
    }
    session.closed.set(true);
}

/// The connection future, recording the backend's stream limit at every poll.
struct Watch<'a, T> {
    conn: &'a mut h2::client::Connection<T, Bytes>,
    session: &'a Session,
}

impl<T: AsyncRead + AsyncWrite + Unpin> std::future::Future for Watch<'_, T> {
    type Output = ();
    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        let this = &mut *self;
        let polled = std::pin::Pin::new(&mut *this.conn).poll(cx);
        let max = this.conn.max_concurrent_send_streams();
        this.session.max_streams.set(max.max(1));
        match polled {
            std::task::Poll::Ready(_) => {
                this.session.closed.set(true);
                std::task::Poll::Ready(())
            }
            std::task::Poll::Pending => std::task::Poll::Pending,
        }
    }
}
