//! The HTTP/1.1 data path, run by each worker for each client connection: read a request head,
//! pick a backend, forward the request over a pooled upstream connection, stream the response
//! back, repeat while keep-alive allows.

pub mod body;
pub mod buf;
pub mod caching;
pub mod error;
pub mod h1;
pub mod h2;
pub mod pool;
pub mod retry;

use std::cell::Cell;
use std::future::Future;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use monoio::io::AsyncWriteRentExt;
use monoio::io::Splitable;
use monoio::net::TcpStream;
use monoio::net::tcp::{TcpOwnedReadHalf, TcpOwnedWriteHalf};
use monoio::time::timeout;

use self::body::{BodyError, CopySpec, copy_body};
use self::buf::ReadBuf;
use self::error::{ErrorAction, ProxyError};
use self::h1::{ClientSide, Framing, RequestInfo, ResponseHead};
use self::pool::{QueueError, Upstream, UpstreamConn};
use self::retry::RetryReason;
use crate::balance::stats::now_ms;
use crate::config::Timeouts;
use crate::telemetry::BodyTap as _;
use crate::telemetry::exchange::{BodyCapture, ExchangeNote};
use crate::worker::{ConnectionSlot, WorkerCtx, WorkerEpoch};

/// A pooled connection idle longer than this is probed for a close before reuse (always, for a
/// request that must not be sent twice).
const PROBE_IDLE_AFTER: Duration = Duration::from_secs(1);

/// Serves one client connection until it closes, errs, or the worker drains. `_slot` counts it
/// against `limits.max_connections_per_worker` until then. (Taking it here, rather than in a
/// wrapping block, keeps the spawned task one state machine: a block that awaits this future
/// would store it twice.)
pub async fn serve_connection(
    ctx: Rc<WorkerCtx>,
    stream: TcpStream,
    peer: SocketAddr,
    _slot: ConnectionSlot,
) {
    let _ = stream.set_nodelay(true);
    // An HTTP/2 preface on the first read hands the connection to the h2 server.
    let Some((stream, buf)) = h2::route_preface(&ctx, stream, peer).await else { return };
    let client_ip = peer.ip().to_string();
    let (r, w) = stream.into_split();
    let mut client = ClientConn { r, w, buf };
    let mut out = Vec::with_capacity(1024);
    // The last request head as received, kept for the cache key while the cache is on.
    let mut raw_head = Vec::new();
    let _open = ctx.telemetry.metrics.connection();
    let mut requests_left = ctx.limits.max_requests_per_connection;
    loop {
        let timeouts = ctx.current_epoch().epoch.timeouts;
        let head =
            read_request_head(&ctx, &mut client, &mut out, &client_ip, &timeouts, &mut raw_head);
        let mut req = match head.await {
            Ok(Some(req)) => req,
            Ok(None) => return,
            Err(e) => return respond_error(&mut client.w, &e).await,
        };
        // `limits.max_requests_per_connection` (0 = unlimited): the last one's response says
        // `connection: close`.
        if requests_left == 1 {
            req.keep_alive = false;
        }
        requests_left = requests_left.saturating_sub(1);
        // The epoch is pinned once the head is complete: this request runs on it to the end.
        let epoch = ctx.current_epoch();
        let _busy = ctx.busy();
        // Telemetry hook: one log per exchange (access record, metrics, spans).
        let mut log = ctx.telemetry.begin(&mut out, req.head_len, epoch.epoch.id);
        // Response cache: one branch while it is off.
        let cache = if epoch.epoch.cache.enabled {
            caching::prepare(&ctx, &epoch, &req, &mut client, &raw_head, &log.note).await
        } else {
            Ok(caching::CacheMark::Off)
        };
        let result = match cache {
            Ok(caching::CacheMark::Hit(hit)) => {
                caching::serve_hit(&ctx, &epoch, &req, &mut client, &mut out, &hit, &mut log).await
            }
            Ok(cache) => {
                Exchange {
                    ctx: &ctx,
                    epoch: &epoch,
                    req,
                    timeouts: epoch.epoch.timeouts,
                    replayable: false,
                    note: &log.note,
                    cache: &cache,
                }
                .run(&mut client, &mut out, &mut log.capture)
                .await
            }
            Err(failure) => Err(failure),
        };
        if let Err(Failure { error: ProxyError::Client(BodyError::TooSlow), .. }) = &result {
            ctx.telemetry.metrics.body_too_slow();
        }
        let status = match &result {
            Err(Failure { error, responded: false }) => {
                let (status, bytes) = error_status(error);
                log.note.sent(bytes);
                status
            }
            _ => log.note.status(),
        };
        let backend = epoch.metrics_of(log.note.backend());
        ctx.telemetry.finish(log, backend, status);
        match result {
            Ok(true) if !ctx.is_draining() => {}
            Ok(_) => return,
            Err(Failure { error, responded }) => {
                if !responded {
                    respond_error(&mut client.w, &error).await;
                }
                return;
            }
        }
    }
}

/// Reads and parses the next request head; `Ok(None)` is a quiet close (EOF or idle timeout).
async fn read_request_head(
    ctx: &WorkerCtx,
    client: &mut ClientConn,
    out: &mut Vec<u8>,
    client_ip: &str,
    timeouts: &Timeouts,
    raw_head: &mut Vec<u8>,
) -> Result<Option<RequestInfo>, ProxyError> {
    let cbuf = &mut client.buf;
    let mut deadline: Option<Instant> = None;
    loop {
        if !cbuf.is_empty() {
            if let Some(req) =
                h1::parse_request(cbuf.data(), ctx.limits.max_headers, client_ip, out)?
            {
                ctx.cache.keep_head(raw_head, &cbuf.data()[..req.head_len]);
                cbuf.consume(req.head_len);
                return Ok(Some(req));
            }
            if cbuf.is_full() {
                let line_complete = cbuf.data().contains(&b'\n');
                return Err(if line_complete {
                    ProxyError::HeadTooLarge
                } else {
                    ProxyError::UriTooLong
                });
            }
        }
        // Between requests the idle timeout runs; once a head has begun, the header timeout.
        let idle = cbuf.is_empty();
        let wait = if idle {
            timeouts.client_idle()
        } else {
            let at = *deadline.get_or_insert_with(|| Instant::now() + timeouts.client_header());
            at.saturating_duration_since(Instant::now())
        };
        // (A read cut short by the timeout takes the buffered bytes with it.)
        match timeout(wait, cbuf.fill(&mut client.r)).await {
            Err(_) if idle => return Ok(None),
            Err(_) => return Err(ProxyError::ClientHeaderTimeout),
            Ok(Ok(0) | Err(_)) => return Ok(None),
            Ok(Ok(_)) => {}
        }
    }
}

/// The status and size of the answer `error` gets (499, nothing: the connection just closes).
fn error_status(error: &ProxyError) -> (u16, u64) {
    match error.action() {
        ErrorAction::Respond(bytes) => {
            let status = bytes.get(9..12).and_then(|d| std::str::from_utf8(d).ok());
            (status.and_then(|d| d.parse().ok()).unwrap_or(0), bytes.len() as u64)
        }
        ErrorAction::Close => (499, 0),
    }
}

/// Writes the canned response for `error`, if it has one, and lets the connection close.
async fn respond_error(client: &mut TcpOwnedWriteHalf, error: &ProxyError) {
    if let ErrorAction::Respond(bytes) = error.action() {
        let _ = timeout(Duration::from_secs(5), client.write_all(bytes)).await;
    }
}

/// An exchange that failed; `responded` is true once any response byte reached the client.
#[derive(Debug)]
struct Failure {
    error: ProxyError,
    responded: bool,
}

impl From<ProxyError> for Failure {
    fn from(error: ProxyError) -> Self {
        Self { error, responded: false }
    }
}

/// A set of backend indices: those a request tried, or those it could not connect to or whose
/// connection queue was full.
#[derive(Debug, Default)]
struct Tried {
    low: u128,
    high: Vec<usize>,
}

impl Tried {
    fn contains(&self, i: usize) -> bool {
        if i < 128 { self.low & (1 << i) != 0 } else { self.high.contains(&i) }
    }
    fn insert(&mut self, i: usize) {
        if i < 128 {
            self.low |= 1 << i;
        } else {
            self.high.push(i);
        }
    }
}

/// One request/response exchange on a pinned epoch.
struct Exchange<'a> {
    ctx: &'a WorkerCtx,
    epoch: &'a WorkerEpoch,
    req: RequestInfo,
    timeouts: Timeouts,
    /// The whole request is in hand, so it can be sent again on a new connection.
    replayable: bool,
    /// Telemetry: backend, status, timings and spans of this exchange.
    note: &'a ExchangeNote,
    /// How the response cache treats this exchange (`X-Cache`, storing a miss).
    cache: &'a caching::CacheMark,
}

/// How a send attempt on one upstream connection ended.
enum Attempt {
    /// The response was relayed; the value says whether the client connection stays open.
    Done(bool),
    /// The connection was reset or closed (or a write to it failed) before any response byte
    /// came back; `reused` says it was a pooled keep-alive connection.
    NoResponse {
        /// The connection had served a request before.
        reused: bool,
    },
}

impl Exchange<'_> {
    /// Runs the exchange; `Ok(keep_alive)` once the whole response reached the client.
    async fn run(
        mut self,
        client: &mut ClientConn,
        out: &mut Vec<u8>,
        capture: &mut BodyCapture,
    ) -> Result<bool, Failure> {
        let max_body = self.ctx.limits.max_body_bytes;
        if let Framing::Length(n) = self.req.framing
            && max_body > 0
            && n > max_body
        {
            return Err(ProxyError::BodyTooLarge.into());
        }
        if self.req.expect_continue && client.buf.is_empty() {
            let continue_head: &'static [u8] = b"HTTP/1.1 100 Continue\r\n\r\n";
            let (res, _) = client.w.write_all(continue_head).await;
            res.map_err(|e| ProxyError::Client(BodyError::Write(e)))?;
        }
        // The request can be sent again on a new connection only if all of it is in hand.
        self.replayable = match self.req.framing {
            Framing::None => true,
            Framing::Length(n) => n <= client.buf.len() as u64,
            Framing::Chunked | Framing::UntilClose => false,
        };
        // A request that was sent goes out again only if its method allows it (RFC 9110 9.2.2)
        // and all of it is still in hand; a connect failure sent nothing and always may.
        let resend_ok = self.replayable && self.req.idempotent;
        self.ctx.retries.record_request();
        let head_len = out.len();
        let mut tried = Tried::default();
        let mut unreachable = Tried::default();
        let mut attempts = 0;
        // The answer if no further attempt is made, and why the last attempt failed.
        let mut last: Option<(ProxyError, RetryReason)> = None;
        // A stale pooled connection's request is sent again on a new connection to its backend.
        let mut fresh_on: Option<usize> = None;
        // Some backend turned the request away because its connection queue was full.
        let mut busy = false;
        loop {
            let pick = self.note.phase("pick");
            let upstream = match fresh_on.take() {
                Some(i) => self.epoch.upstreams.get(i).map(|up| (i, &**up)),
                // After a reset, the backends already tried are used again once every other
                // one was: better the same backend than no retry.
                None => self.pick(&tried).or_else(|| match &last {
                    Some((_, RetryReason::Reset)) => self.pick(&unreachable),
                    _ => None,
                }),
            };
            drop(pick);
            let Some(upstream) = upstream else {
                let none = if busy {
                    ProxyError::BackendBusy(QueueError::Full)
                } else {
                    ProxyError::NoBackend
                };
                return Err(last.map_or(none, |(e, _)| e).into());
            };
            let fresh = matches!(last, Some((_, RetryReason::Stale)));
            tried.insert(upstream.0);
            attempts += 1;
            let up = upstream.1;
            // A request that cannot be sent twice probes every pooled connection first.
            let reuse = if fresh { Reuse::Fresh } else { Reuse::Pooled { probe: !resend_ok } };
            let conn = match upstream_conn(self.ctx, self.epoch, self.note, up, reuse).await {
                Ok(Some(conn)) => conn,
                Ok(None) => {
                    unreachable.insert(upstream.0);
                    if !self.retry(attempts, RetryReason::Connect) {
                        return Err(ProxyError::NoBackend.into());
                    }
                    last = Some((ProxyError::NoBackend, RetryReason::Connect));
                    continue;
                }
                // Its queue is full: nothing was sent, and another backend may have room (as
                // HAProxy redispatches at a server's `maxqueue`). Not a retry.
                Err(ProxyError::BackendBusy(QueueError::Full)) => {
                    unreachable.insert(upstream.0);
                    attempts -= 1;
                    busy = true;
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            out.truncate(head_len);
            h1::finish_request_head(out, &self.req, &up.backend.url.authority);
            let mut body_sent = 0;
            if let Framing::Length(n) = self.req.framing {
                body_sent = (n.min(client.buf.len() as u64)) as usize;
                out.extend_from_slice(&client.buf.data()[..body_sent]);
            }
            self.note.set_backend(upstream.0);
            capture.reset();
            capture.tap(&client.buf.data()[..body_sent]);
            match self.attempt(up, conn, client, out, body_sent, capture).await? {
                Attempt::Done(keep_alive) => {
                    if self.replayable {
                        // Held back until now in case the request had to be sent again.
                        client.buf.consume(body_sent);
                    }
                    return Ok(keep_alive);
                }
                Attempt::NoResponse { reused } => {
                    let error = ProxyError::BadGateway("upstream closed before the response");
                    let reason = if reused { RetryReason::Stale } else { RetryReason::Reset };
                    if !resend_ok || !self.retry(attempts, reason) {
                        return Err(error.into());
                    }
                    if reused {
                        fresh_on = Some(upstream.0);
                    }
                    last = Some((error, reason));
                }
            }
        }
    }

    /// Whether a request that made `attempts` tries may make another (and counts it).
    fn retry(&self, attempts: u32, reason: RetryReason) -> bool {
        self.ctx.retries.allow(attempts, reason, &self.ctx.telemetry.metrics.retries)
    }

    /// Picks a backend not yet tried and not ejected, preferring those the active health
    /// checks have not taken out (failing open when every candidate is down).
    fn pick(&self, tried: &Tried) -> Option<(usize, &Upstream)> {
        let ups = &self.epoch.upstreams;
        let now = now_ms();
        let excluded = |i: usize| {
            tried.contains(i)
                || ups[i].stats.is_ejected(now)
                || ups[i].backend.url.protocol == crate::config::BackendProtocol::H2c
        };
        let health = |i: usize| &ups[i].backend.health;
        let algorithm = self.epoch.epoch.algorithm;
        let weighted = self.epoch.weighted;
        let i = self.ctx.picker.pick_healthy(algorithm, weighted, ups, excluded, health, now)?;
        Some((i, &*ups[i]))
    }

    /// Sends the request on `conn` and relays the response. A request body streams upstream
    /// while the response streams back (full duplex), so a backend that answers early, or
    /// echoes as it reads, is relayed at once instead of deadlocking on full socket buffers.
    async fn attempt(
        &self,
        up: &Upstream,
        mut conn: UpstreamConn,
        client: &mut ClientConn,
        out: &mut Vec<u8>,
        body_in_head: usize,
        capture: &mut BodyCapture,
    ) -> Result<Attempt, Failure> {
        let _in_flight = up.stats.begin();
        let _span = self.note.phase("upstream_exchange");
        let request = std::mem::take(out);
        let (res, request) = conn.w.write_all(request).await;
        *out = request;
        if res.is_err() {
            return Ok(Attempt::NoResponse { reused: conn.reused });
        }
        if !self.replayable {
            client.buf.consume(body_in_head);
        }
        let rest = match self.req.framing {
            Framing::Length(n) => Framing::Length(n - body_in_head as u64),
            other => other,
        };
        let head_sent = Instant::now();
        let streaming = !matches!(rest, Framing::None | Framing::Length(0));
        // When the last request byte went upstream; the response-time clock starts there.
        let body_sent: Cell<Option<Instant>> = Cell::new((!streaming).then_some(head_sent));
        let head_written = Cell::new(false);

        let (sent, relayed) = {
            let mut half = UpstreamHalf { r: &mut conn.r, buf: &mut conn.buf };
            let conn_w = &mut conn.w;
            let relay =
                self.relay_response(up, &mut half, &mut client.w, out, &body_sent, &head_written);
            if streaming {
                let spec = CopySpec {
                    framing: rest,
                    dechunk: false,
                    read_timeout: self.timeouts.client_body(),
                    write_timeout: self.timeouts.upstream_response(),
                    max_bytes: self.ctx.limits.max_body_bytes,
                    min_rate: self
                        .timeouts
                        .client_body_min_rate()
                        .map(|rate| rate.after(body_in_head as u64)),
                };
                let send = async {
                    let result =
                        copy_body(&mut client.r, &mut client.buf, conn_w, spec, capture).await;
                    body_sent.set(Some(Instant::now()));
                    result
                };
                duplex(send, relay, &head_written).await
            } else {
                (Some(Ok(0)), Some(relay.await))
            }
        };
        match (sent, relayed) {
            (_, Some(Err(failure))) => Err(failure),
            (_, Some(Ok(Relayed::NoResponse))) => Ok(Attempt::NoResponse { reused: conn.reused }),
            (Some(Ok(_)), Some(Ok(Relayed::Done(res)))) => {
                if res.upstream_keep_alive {
                    up.checkin(conn);
                }
                Ok(Attempt::Done(res.client_keep_alive))
            }
            // The response finished first: the rest of the request body is unread, so neither
            // connection can carry another exchange.
            (_, Some(Ok(Relayed::Done(_)))) => Ok(Attempt::Done(false)),
            (Some(Err(e)), None) => Err(Failure {
                error: match e {
                    BodyError::Write(_) => ProxyError::Upstream(e),
                    other => ProxyError::Client(other),
                },
                responded: head_written.get(),
            }),
            (Some(Ok(_)) | None, None) => Err(upstream_gone().into()),
        }
    }

    /// Reads the response head, then streams the response to the client.
    async fn relay_response(
        &self,
        up: &Upstream,
        conn: &mut UpstreamHalf<'_>,
        client_w: &mut TcpOwnedWriteHalf,
        out: &mut Vec<u8>,
        body_sent: &Cell<Option<Instant>>,
        head_written: &Cell<bool>,
    ) -> Result<Relayed, Failure> {
        let t = &self.timeouts;
        let client_side = ClientSide {
            is_head: self.req.is_head,
            http10: self.req.http10,
            keep_alive: self.req.keep_alive && !self.ctx.is_draining(),
        };
        let res = loop {
            let parsed = if conn.buf.is_empty() {
                None
            } else {
                h1::parse_response(conn.buf.data(), self.ctx.limits.max_headers, client_side, out)
                    .map_err(|_| ProxyError::BadGateway("malformed response head"))?
            };
            match parsed {
                Some(ResponseHead::Final(res)) => break res,
                Some(ResponseHead::Interim(len)) => {
                    conn.buf.consume(len);
                    continue;
                }
                None if conn.buf.is_full() => {
                    return Err(ProxyError::BadGateway("response head too large").into());
                }
                None => {}
            }
            // The response timeout runs from the end of the request; while the body is still
            // uploading, the client-body timeout on the other side bounds the wait.
            let remaining = match body_sent.get() {
                Some(at) => t.upstream_response().saturating_sub(at.elapsed()),
                None => t.upstream_response(),
            };
            match timeout(remaining, conn.buf.fill(&mut *conn.r)).await {
                Err(_) if body_sent.get().is_none() => {}
                Err(_) => return Err(ProxyError::UpstreamTimeout.into()),
                Ok(Ok(0) | Err(_)) if conn.buf.is_empty() => return Ok(Relayed::NoResponse),
                Ok(Ok(0) | Err(_)) => {
                    return Err(
                        ProxyError::BadGateway("upstream closed before the response").into()
                    );
                }
                Ok(Ok(_)) => {}
            }
        };
        let started = body_sent.get().unwrap_or_else(Instant::now);
        up.stats.record_response_time(now_ms(), started.elapsed());
        self.note.response(res.status, started.elapsed());
        let _span = self.note.phase("respond");
        conn.buf.consume(res.head_len);
        let mut tee = self.cache.on_head(&res, out, &self.epoch.epoch.cache);

        // Send the head, with as much of a sized body as already arrived.
        let mut body_in_head = 0;
        if let Framing::Length(n) = res.framing {
            body_in_head = n.min(conn.buf.len() as u64) as usize;
            tee.wire(&conn.buf.data()[..body_in_head]);
            out.extend_from_slice(&conn.buf.data()[..body_in_head]);
            conn.buf.consume(body_in_head);
        }
        head_written.set(true);
        let head = std::mem::take(out);
        let (written, head) = match timeout(t.client_send(), client_w.write_all(head)).await {
            Ok(r) => r,
            Err(_) => return Err(responded(ProxyError::Client(BodyError::Write(timed_out())))),
        };
        *out = head;
        written.map_err(|e| responded(ProxyError::Client(BodyError::Write(e))))?;
        self.note.sent(out.len() as u64);

        let rest = match res.framing {
            Framing::Length(n) => Framing::Length(n - body_in_head as u64),
            other => other,
        };
        let spec = CopySpec {
            framing: rest,
            dechunk: res.dechunk,
            read_timeout: t.upstream_response(),
            write_timeout: t.client_send(),
            max_bytes: 0,
            min_rate: None,
        };
        let body_out = copy_body(&mut *conn.r, &mut *conn.buf, client_w, spec, &mut tee)
            .await
            .map_err(|e| {
                responded(match e {
                    BodyError::Write(_) => ProxyError::Client(e),
                    other => ProxyError::Upstream(other),
                })
            })?;
        self.note.sent(body_out);
        self.cache.complete(self.ctx, tee);
        Ok(Relayed::Done(res))
    }
}

/// The reading side of an upstream connection, lent to the response relay while the request
/// body still streams through the writing side.
struct UpstreamHalf<'a> {
    r: &'a mut TcpOwnedReadHalf,
    buf: &'a mut ReadBuf,
}

/// A client connection, split so a request body and a response can flow at the same time.
pub struct ClientConn {
    r: TcpOwnedReadHalf,
    w: TcpOwnedWriteHalf,
    buf: ReadBuf,
}

/// How relaying a response ended.
enum Relayed {
    /// The whole response reached the client.
    Done(h1::ResponseInfo),
    /// The connection was reset or closed before any response byte.
    NoResponse,
}

/// Runs the request-body upload and the response relay together. Stops when the response is
/// done (an early answer ends the upload), or when the upload fails before any response byte
/// reached the client (the error is then the client's answer).
async fn duplex<S, R>(
    send: S,
    relay: R,
    head_written: &Cell<bool>,
) -> (Option<Result<u64, BodyError>>, Option<Result<Relayed, Failure>>)
where
    S: Future<Output = Result<u64, BodyError>>,
    R: Future<Output = Result<Relayed, Failure>>,
{
    let mut send = std::pin::pin!(send);
    let mut relay = std::pin::pin!(relay);
    let mut sent = None;
    loop {
        monoio::select! {
            result = &mut send, if sent.is_none() => {
                let failed = result.is_err();
                sent = Some(result);
                if failed && !head_written.get() {
                    return (sent, None);
                }
            }
            result = &mut relay => return (sent, Some(result)),
        }
    }
}

fn timed_out() -> std::io::Error {
    std::io::ErrorKind::TimedOut.into()
}

fn upstream_gone() -> ProxyError {
    ProxyError::BadGateway("upstream connection failed")
}

fn responded(error: ProxyError) -> Failure {
    Failure { error, responded: true }
}

/// Which connection an attempt may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reuse {
    /// A new one (a stale pooled connection's request is sent again).
    Fresh,
    /// A pooled one when there is one that still looks open; `probe` checks every pooled
    /// connection for a close first, not only those idle for [`PROBE_IDLE_AFTER`] (for a
    /// request that must not be sent twice).
    Pooled {
        /// Probe even a recently used connection.
        probe: bool,
    },
}

/// A connection to `up` for one attempt: a pooled one (see [`Reuse`]), else a new one under
/// the backend's `pool.max_connections_per_backend`, waiting in its bounded queue while it is
/// at the cap. `Ok(None)`: the connect failed (recorded for passive health); `Err`: the queue
/// was full or timed out.
pub(crate) async fn upstream_conn(
    ctx: &WorkerCtx,
    epoch: &WorkerEpoch,
    note: &ExchangeNote,
    up: &Upstream,
    reuse: Reuse,
) -> Result<Option<UpstreamConn>, ProxyError> {
    let mut deadline = None;
    loop {
        // Requests already queued go first: a newcomer joins the queue behind them.
        if deadline.is_none() && up.queued_count() > 0 {
            wait_in_queue(ctx, up, &mut deadline).await?;
            continue;
        }
        if let Reuse::Pooled { probe } = reuse {
            let max_age = Duration::from_millis(ctx.pool.idle_timeout_ms);
            while let Some(conn) = up.checkout(max_age) {
                if (!probe && conn.idle_for() < PROBE_IDLE_AFTER) || !peer_closed(conn.fd) {
                    if deadline.is_some() {
                        up.pass_turn();
                    }
                    return Ok(Some(conn));
                }
            }
        }
        if let Some(slot) = up.reserve() {
            if deadline.is_some() {
                up.pass_turn();
            }
            let _span = note.phase("upstream_connect");
            let addr = up.backend.url.addr;
            let connect =
                timeout(epoch.epoch.timeouts.upstream_connect(), TcpStream::connect_addr(addr));
            return Ok(match connect.await {
                Ok(Ok(stream)) => {
                    up.stats.record_connect_success();
                    Some(UpstreamConn::new(stream, ctx.limits.buffer_bytes, slot))
                }
                Ok(Err(e)) => {
                    up.connect_failed(ctx.index, epoch.epoch.health, &e.to_string());
                    None
                }
                Err(_) => {
                    up.connect_failed(ctx.index, epoch.epoch.health, "timeout");
                    None
                }
            });
        }
        wait_in_queue(ctx, up, &mut deadline).await?;
    }
}

/// Waits in `up`'s connection queue until a connection is returned or closed; the first wait
/// sets the `deadline` (`pool.queue_timeout_ms`) that later ones keep.
async fn wait_in_queue(
    ctx: &WorkerCtx,
    up: &Upstream,
    deadline: &mut Option<Instant>,
) -> Result<(), ProxyError> {
    let queued_before = deadline.is_some();
    let at = *deadline.get_or_insert_with(|| Instant::now() + ctx.pool.queue_timeout());
    up.wait_for_connection(at, queued_before).await.map_err(|e| {
        ctx.telemetry.metrics.retries.queue_rejected(e);
        e.into()
    })
}

/// Whether the peer has closed (or reset) an idle connection: a non-blocking peek reads EOF.
fn peer_closed(fd: std::os::fd::RawFd) -> bool {
    let mut byte = [0u8; 1];
    // SAFETY: `fd` is a valid, open socket owned by `stream` for the duration of the call, and
    // `byte` is a valid one-byte buffer. MSG_PEEK leaves the socket's data untouched.
    #[allow(unsafe_code)]
    let n =
        unsafe { libc::recv(fd, byte.as_mut_ptr().cast(), 1, libc::MSG_PEEK | libc::MSG_DONTWAIT) };
    // 0 = orderly close; >0 = unsolicited bytes (unusable); EAGAIN = open and quiet.
    n >= 0 || std::io::Error::last_os_error().kind() != std::io::ErrorKind::WouldBlock
}
