//! Per-worker pools of multiplexed native HTTP/2 connections to one h2c or h2 backend, for the
//! native engine (`[http2] engine = "native"`). Runs on the worker's thread; each connection's
//! driver is a task of the worker.
//!
//! A pool hands out a stream slot on the first session with room under the backend's
//! `SETTINGS_MAX_CONCURRENT_STREAMS` and opens another session (up to
//! `http2.max_connections_per_backend`) when all are full; only one connect runs at a time per
//! backend and callers wait for it. When every session is full and no more may open, a caller
//! waits for a stream to end (within the connect timeout). A session's driver sends keep-alive
//! PINGs and closes it after `http2.idle_timeout_ms` without streams. A session that received
//! GOAWAY or failed takes no new stream; calls not yet sent go to another.

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use fulcrum_config::{BackendUrl, Http2Config};
use fulcrum_h2::conn::{Connection, Role};
use fulcrum_tls::AppProtocol;
use fulcrum_util::{Notify, ReadBuf};
use monoio::time::timeout;

use super::sessions::{PooledSession, Sessions, Slots};
use super::tls::{UpstreamTls, tcp_connect};
use super::{LeaseError, spawn_driver};
use crate::h2conn::{H2Conn, NewStream, OnEvent, drive, engine_config};
use crate::transport;

/// Why a native upstream connection could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum H2nError {
    /// Connecting to the backend (TCP, then TLS for `h2://`) failed or timed out.
    #[error("connect: {0}")]
    Connect(String),
    /// The backend's SETTINGS did not arrive in time, or the connection closed first.
    #[error("handshake: {0}")]
    Handshake(&'static str),
}

/// One multiplexed upstream connection.
#[derive(Debug)]
struct Session {
    conn: Rc<H2Conn>,
    slots: Slots,
}

impl Session {
    fn has_room(&self) -> bool {
        !self.conn.is_closing() && self.slots.leases.get() < self.conn.max_streams().max(1)
    }
}

impl PooledSession for Session {
    fn slots(&self) -> &Slots {
        &self.slots
    }

    fn is_closing(&self) -> bool {
        self.conn.is_closing()
    }

    fn close(&self) {
        self.conn.go_away(fulcrum_h2::ErrorCode::NO_ERROR);
    }
}

/// A stream slot on a session, held for the life of one call.
#[derive(Debug)]
pub struct Lease {
    session: Rc<Session>,
    freed: Rc<Notify>,
}

impl Lease {
    /// The connection to open the stream on.
    pub(crate) fn session(&self) -> &H2Conn {
        &self.session.conn
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.session.slots.give_back();
        self.freed.notify();
    }
}

/// The native sessions of one worker to one backend.
#[derive(Debug, Default)]
pub struct NativePool {
    sessions: Sessions<Session>,
    /// A lease ended or a session closed: room may have appeared.
    freed: Rc<Notify>,
}

impl NativePool {
    /// A stream slot on a session with room, opening a connection when every one is full.
    pub async fn lease(
        &self,
        url: &BackendUrl,
        tls: Option<&UpstreamTls>,
        cfg: &Http2Config,
        connect_timeout: Duration,
    ) -> Result<Lease, LeaseError<H2nError>> {
        // Set by the first wait only: a lease that finds room reads no clock.
        let mut deadline = None;
        loop {
            self.sessions.check_retired()?;
            let freed = self.freed.notified();
            let (room, count) = {
                let sessions = self.sessions.open();
                (sessions.iter().find(|s| s.has_room()).cloned(), sessions.len())
            };
            if let Some(session) = room {
                return Ok(self.take(session));
            }
            if count < cfg.max_connections_per_backend && !self.sessions.is_connecting() {
                // Boxed: the connect future is large and rarely run.
                let connect = Box::pin(connect(url, tls, cfg, connect_timeout, self.freed.clone()));
                return Ok(self.take(self.sessions.connect(connect).await?));
            }
            // A connect in progress, or every session full at the connection cap: wait for
            // either, within the connect timeout.
            let now = Instant::now();
            let left = deadline.get_or_insert(now + connect_timeout).saturating_duration_since(now);
            // Boxed: monoio's timer entry is cache-line aligned (128 bytes); inline, this
            // rarely taken wait would make every stream task a large aligned allocation.
            let waited = Box::pin(timeout(left, async {
                monoio::select! {
                    _ = self.sessions.connected() => {},
                    _ = freed => {},
                }
            }))
            .await;
            if waited.is_err() {
                return Err(LeaseError::Connect(H2nError::Connect(
                    "no stream slot free in time".into(),
                )));
            }
        }
    }

    fn take(&self, session: Rc<Session>) -> Lease {
        session.slots.take();
        Lease { session, freed: self.freed.clone() }
    }

    /// Closes every idle session and stops pooling (the backend was removed). Sessions with
    /// streams in flight finish them.
    pub fn retire(&self) {
        self.sessions.retire();
    }
}

/// Opens one connection (TLS with ALPN `h2` for `h2://`), spawns its driver, and waits for
/// the backend's SETTINGS (its stream limit above all), so no stream goes out on an assumed
/// limit.
async fn connect(
    url: &BackendUrl,
    tls: Option<&UpstreamTls>,
    cfg: &Http2Config,
    connect_timeout: Duration,
    freed: Rc<Notify>,
) -> Result<Rc<Session>, H2nError> {
    let stream = tcp_connect(url.addr, connect_timeout).await.map_err(H2nError::Connect)?;
    let halves = if url.tls {
        let tls = tls.ok_or_else(|| H2nError::Connect("upstream TLS is not available".into()))?;
        let stream = tls
            .connect(stream, &url.host, AppProtocol::H2, connect_timeout)
            .await
            .map_err(H2nError::Connect)?;
        transport::split_tls(stream)
    } else {
        transport::split_tcp(stream)
    };
    let conn = H2Conn::new(Role::Client, engine_config(cfg));
    let session = Rc::new(Session { conn: conn.clone(), slots: Slots::new() });
    let capacity =
        (64 * 1024usize).max(cfg.max_frame_size as usize + fulcrum_h2::frame::HEADER_LEN);
    let driver = session.clone();
    let cfg = *cfg;
    let (lost, lost_freed) = (session.conn.clone(), freed.clone());
    let task = async move {
        let (r, w) = halves;
        let mut events = Pongs::default();
        let pong = events.0.clone();
        let stop = watch(&driver, cfg, pong);
        drive(&driver.conn, r, w, ReadBuf::with_capacity(capacity), &mut events, stop).await;
        freed.notify();
    };
    // After a panic its streams see the connection lost, and waiting leases look again.
    spawn_driver(task, move || {
        lost.lose();
        lost_freed.notify();
    });
    let settled = async {
        loop {
            let changed = conn.room.notified();
            if conn.is_ready() {
                return Ok(());
            }
            if conn.is_closing() {
                return Err(H2nError::Handshake("closed before its SETTINGS"));
            }
            changed.await;
        }
    };
    match timeout(connect_timeout, settled).await {
        Ok(Ok(())) => Ok(session),
        Ok(Err(e)) => Err(e),
        Err(_) => {
            session.slots.kill.notify();
            Err(H2nError::Handshake("no SETTINGS in time"))
        }
    }
}

/// An upstream connection's events: only PING answers matter (no requests come this way).
#[derive(Debug, Default)]
struct Pongs(Rc<Cell<bool>>);

impl OnEvent for Pongs {
    fn request(&mut self, _: &Rc<H2Conn>, _: &mut Connection, _: NewStream) {}

    fn pong(&mut self) {
        self.0.set(true);
    }
}

/// A session's clock: resolves when it must close at once (killed, idle past
/// `http2.idle_timeout_ms`, a PING unanswered past `http2.keepalive_timeout_ms`); PINGs the
/// backend every `http2.keepalive_interval_ms`.
async fn watch(session: &Session, cfg: Http2Config, pong: Rc<Cell<bool>>) {
    let idle_timeout = Duration::from_millis(cfg.idle_timeout_ms);
    let keepalive = Duration::from_millis(cfg.keepalive_interval_ms);
    let pong_timeout = Duration::from_millis(cfg.keepalive_timeout_ms);
    let mut tick = idle_timeout.min(pong_timeout);
    if !keepalive.is_zero() {
        tick = tick.min(keepalive);
    }
    let tick = tick.max(Duration::from_millis(100));
    let mut kill = std::pin::pin!(session.slots.kill.notified());
    let mut last_ping = Instant::now();
    let mut pinging = false;
    loop {
        monoio::select! {
            _ = &mut kill => return,
            _ = monoio::time::sleep(tick) => {}
        }
        if pong.replace(false) {
            pinging = false;
        }
        let idle = session.slots.leases.get() == 0;
        if idle && session.slots.idle_since.get().elapsed() >= idle_timeout {
            return;
        }
        if pinging && last_ping.elapsed() >= pong_timeout {
            return;
        }
        if !pinging && !keepalive.is_zero() && last_ping.elapsed() >= keepalive {
            session.conn.ping(*b"fulcrum\0");
            last_ping = Instant::now();
            pinging = true;
        }
    }
}
