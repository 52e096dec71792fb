//! The HTTP/1.1 client side, run by each worker for each HTTP/1.1 client connection: read a
//! request head and route it to a pool (on the parsed head, before it is consumed), consult the
//! response cache, forward the request through the attempt loop
//! (this module supplies the HTTP/1.1-to-HTTP/1.1 attempt), stream the response back, repeat
//! while keep-alive allows.
//!
//! Interim answers: `103 Early Hints` is forwarded (at most [`MAX_INTERIM`] interim heads per
//! request), other `1xx` are dropped. A request that asked for a protocol upgrade
//! (`[upgrade] protocols`) and got `101` to one of them ends the attempt with a tunnel
//! ([`crate::tunnel`]) instead of a response; the connection closes with the tunnel.

mod caching;

use std::cell::Cell;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::time::{Duration, Instant};

use fulcrum_balance::InFlight;
use fulcrum_config::{BackendProtocol, Timeouts};
use fulcrum_http::h1::{
    self, BodyError, BodyTap, ClientSide, CopySpec, Forwarded, Framing, MinRate, RequestInfo,
    ResponseHead, copy_body,
};
use fulcrum_model::Routed;
use fulcrum_util::{ReadBuf, Timer};
use monoio::io::AsyncWriteRentExt;
use monoio::time::timeout;

use crate::attempt::{self, AttemptError, Forward};
use crate::ctx::{WorkerCtx, WorkerEpoch, WorkerPool};
use crate::error::ProxyError;
use crate::exchange::{BodyCapture, ExchangeNote};
use crate::route;
use crate::transport::{ConnInfo, ConnRead, ConnWrite};
use crate::tunnel::{self, Direction, TunnelReport};
use crate::upstream::{Conn, Reuse, Upstream, UpstreamConn, UpstreamRead};

pub(crate) use caching::CacheMark;
use caching::Tee as CacheTee;

/// A client connection, split so a request body and a response can flow at the same time.
pub struct ClientConn {
    r: ConnRead,
    w: ConnWrite,
    buf: ReadBuf,
    /// Bounds the connection's waits one at a time: reading a request head or a body held
    /// for the cache, and the response (its head from the backend, then head and body to the
    /// client).
    timer: Pin<Box<Timer>>,
    /// Bounds the reads and writes of a request body streamed to the backend, which run
    /// beside the response's; made on the first such body.
    upload_timer: Option<Pin<Box<Timer>>>,
}

impl ClientConn {
    /// The halves of an accepted connection and the bytes already read from it.
    pub fn new((r, w): (ConnRead, ConnWrite), buf: ReadBuf) -> Self {
        Self { r, w, buf, timer: Box::pin(Timer::new()), upload_timer: None }
    }
}

/// Serves one HTTP/1.1 client connection (whose first bytes are in `client.buf`) until it
/// closes, errs, or the worker drains.
pub async fn serve(ctx: &Rc<WorkerCtx>, mut client: ClientConn, peer: SocketAddr, conn: &ConnInfo) {
    let client_ip = peer.ip().to_string();
    let forwarded = Forwarded { ip: &client_ip, proto: conn.proto() };
    let mut out = Vec::with_capacity(1024);
    // The last request head as received, kept for the cache key while the cache is on.
    let mut raw_head = Vec::new();
    let mut requests_left = ctx.limits.max_requests_per_connection;
    loop {
        let timeouts = ctx.current_epoch().epoch.timeouts;
        let reading =
            RequestReading { forwarded: &forwarded, sni: conn.sni(), timeouts: &timeouts };
        let head = read_request_head(ctx, &mut client, &mut out, &reading, &mut raw_head);
        // The epoch is pinned once the head is complete (and routed on it): this request runs
        // on it to the end.
        let (mut req, epoch, routed) = match head.await {
            Ok(Some(head)) => head,
            Ok(None) => return,
            Err(e) => return respond_error(&mut client.w, &e).await,
        };
        // `limits.max_requests_per_connection` (0 = unlimited): the last one's response says
        // `connection: close`.
        if requests_left == 1 {
            req.keep_alive = false;
        }
        requests_left = requests_left.saturating_sub(1);
        let pool = epoch.pool(&routed);
        let _busy = ctx.busy();
        // Telemetry hook: one log per exchange (access record, metrics, spans).
        let mut log = ctx.telemetry.begin(&mut out, req.head_len, epoch.epoch.id, conn);
        // Response cache (on for this request by `[cache]` or its route): one branch while off.
        let cache = match epoch.epoch.cache_for(routed.cache) {
            Some(policy) => {
                let lookup = caching::Lookup { epoch: &epoch, policy, pool: &pool.name };
                caching::prepare(ctx, &lookup, &req, &mut client, &raw_head, &log.note).await
            }
            None => Ok(CacheMark::Off),
        };
        let result = match cache {
            Ok(CacheMark::Hit(hit)) => {
                caching::serve_hit(ctx, &epoch, &req, &mut client, &mut out, &hit, &mut log)
                    .await
                    .map(Outcome::Done)
            }
            Ok(cache) => {
                let exchange = Exchange {
                    ctx,
                    epoch: &epoch,
                    pool,
                    req,
                    timeouts: epoch.epoch.timeouts,
                    replayable: false,
                    note: &log.note,
                    cache: &cache,
                    client: &mut client,
                    out: &mut out,
                    capture: &mut log.capture,
                    head_len: 0,
                    body_in_head: 0,
                };
                exchange.run().await
            }
            Err(failure) => Err(failure),
        };
        if let Err(Failure { error: ProxyError::Client(BodyError::TooSlow), .. }) = &result {
            ctx.telemetry.worker().body_too_slow.inc();
        }
        // Fulcrum's own answer, rendered once for the client and the access record.
        let (status, answer) = match &result {
            Err(Failure { error, responded: false }) => match error.synthetic() {
                Some(answer) => {
                    let bytes = answer.to_h1();
                    log.note.sent(bytes.len() as u64);
                    (answer.status, Some(bytes))
                }
                None => (499, None),
            },
            _ => (log.note.status(), None),
        };
        if let Ok(Outcome::Tunnel { protocol, report }) = &result {
            let name = ctx.upgrades.get(*protocol).map_or("", String::as_str);
            log.note_tunnel(name, report);
        }
        let target = pool.target(ctx.index, routed.route, log.note.backend());
        ctx.telemetry.finish(log, target, status);
        match result {
            Ok(Outcome::Done(true)) if !ctx.is_draining() => {}
            Ok(_) => return,
            Err(_) => {
                if let Some(bytes) = answer {
                    let _ = timeout(ERROR_SEND, client.w.write_all(bytes)).await;
                }
                return;
            }
        }
    }
}

/// What reading one request head needs to know about the connection.
struct RequestReading<'a> {
    forwarded: &'a Forwarded<'a>,
    sni: Option<&'a str>,
    timeouts: &'a Timeouts,
}

/// Reads and parses the next request head, and routes it on the epoch current when it is
/// complete (returned with it: the request runs on that epoch); `Ok(None)` is a quiet close
/// (EOF or idle timeout).
async fn read_request_head(
    ctx: &WorkerCtx,
    client: &mut ClientConn,
    out: &mut Vec<u8>,
    reading: &RequestReading<'_>,
    raw_head: &mut Vec<u8>,
) -> Result<Option<(RequestInfo, Rc<WorkerEpoch>, Routed)>, ProxyError> {
    let (cbuf, timer) = (&mut client.buf, &mut client.timer);
    let timeouts = reading.timeouts;
    // When the head began to arrive: the header timeout runs from there.
    let mut head_started: Option<Instant> = None;
    loop {
        if !cbuf.is_empty() {
            let epoch = ctx.current_epoch();
            let routes = epoch.epoch.routes();
            let parsed = h1::parse_request_with(
                cbuf.data(),
                ctx.limits.max_headers,
                reading.forwarded,
                &ctx.upgrades,
                out,
                |head| route::h1(routes, head, reading.sni),
            )?;
            if let Some((req, routed)) = parsed {
                ctx.cache.keep_head(raw_head, &cbuf.data()[..req.head_len]);
                cbuf.consume(req.head_len);
                return Ok(Some((req, epoch, routed)));
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
        // (A read cut short by the timeout takes the buffered bytes with it.)
        let idle = cbuf.is_empty();
        // Pinned where it is made (here and at the other waits of an exchange): the timeout
        // then holds a pointer, not a copy of the read's state.
        let fill = std::pin::pin!(cbuf.fill(&mut client.r));
        let read = if idle {
            // A connection between requests closes as soon as the worker drains.
            if ctx.is_draining() {
                return Ok(None);
            }
            monoio::select! {
                r = timer.as_mut().within(timeouts.client_idle(), fill) => r,
                _ = ctx.drained_signal() => return Ok(None),
            }
        } else {
            let started = *head_started.get_or_insert_with(fulcrum_util::now);
            let limit = timeouts.client_header();
            timer.as_mut().within_from(started, limit, fill).await
        };
        match read {
            Err(_) if idle => return Ok(None),
            Err(_) => return Err(ProxyError::ClientHeaderTimeout),
            Ok(Ok(0) | Err(_)) => return Ok(None),
            Ok(Ok(_)) => {}
        }
    }
}

/// Longest Fulcrum waits to hand its own error answer to a client before closing.
const ERROR_SEND: Duration = Duration::from_secs(5);

/// Writes Fulcrum's own answer for `error`, if it has one, and lets the connection close.
async fn respond_error(client: &mut ConnWrite, error: &ProxyError) {
    if let Some(answer) = error.synthetic() {
        let _ = timeout(ERROR_SEND, client.write_all(answer.to_h1())).await;
    }
}

/// An exchange that failed; `responded` is true once any response byte reached the client.
#[derive(Debug)]
pub(crate) struct Failure {
    error: ProxyError,
    responded: bool,
}

impl From<ProxyError> for Failure {
    fn from(error: ProxyError) -> Self {
        Self { error, responded: false }
    }
}

fn responded(error: ProxyError) -> Failure {
    Failure { error, responded: true }
}

/// How an exchange that did not fail ended.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// The whole response reached the client; `true`: the connection stays open.
    Done(bool),
    /// The backend switched to `protocol` (an index in `upgrade.protocols`) and the tunnel
    /// that followed has closed; so does the connection.
    Tunnel {
        /// The protocol switched to.
        protocol: usize,
        /// The tunnel's bytes, duration and close.
        report: TunnelReport,
    },
}

/// Most interim (`1xx`) heads a backend may send before its final answer.
pub(crate) const MAX_INTERIM: usize = 8;

/// One request/response exchange on a pinned epoch, and its HTTP/1.1-backend attempts.
struct Exchange<'a> {
    ctx: &'a WorkerCtx,
    epoch: &'a WorkerEpoch,
    /// The pool the request was routed to.
    pool: &'a WorkerPool,
    req: RequestInfo,
    timeouts: Timeouts,
    /// The whole request is in hand, so it can be sent again on a new connection.
    replayable: bool,
    /// Telemetry: backend, status, timings and spans of this exchange.
    note: &'a ExchangeNote,
    /// How the response cache treats this exchange (`X-Cache`, storing a miss).
    cache: &'a CacheMark,
    client: &'a mut ClientConn,
    /// The request head to forward (then reused for the response head).
    out: &'a mut Vec<u8>,
    capture: &'a mut BodyCapture,
    /// Length of the forwarded head as parsed, before an attempt completes it.
    head_len: usize,
    /// Body bytes that came with the head and go out with it (held until the exchange is
    /// done while the request is replayable).
    body_in_head: usize,
}

impl Exchange<'_> {
    /// Runs the exchange until the whole response reached the client, or its tunnel closed.
    async fn run(mut self) -> Result<Outcome, Failure> {
        let max_body = self.ctx.limits.max_body_bytes;
        if let Framing::Length(n) = self.req.framing
            && max_body > 0
            && n > max_body
        {
            return Err(ProxyError::BodyTooLarge.into());
        }
        if self.req.expect_continue && self.client.buf.is_empty() {
            let continue_head: &'static [u8] = b"HTTP/1.1 100 Continue\r\n\r\n";
            let (res, _) = self.client.w.write_all(continue_head).await;
            res.map_err(|e| ProxyError::Client(BodyError::Write(e)))?;
        }
        // The request can be sent again on a new connection only if all of it is in hand.
        self.replayable = match self.req.framing {
            Framing::None => true,
            Framing::Length(n) => n <= self.client.buf.len() as u64,
            Framing::Chunked | Framing::UntilClose => false,
        };
        self.head_len = self.out.len();
        let (ctx, pool, note) = (self.ctx, self.pool, self.note);
        let outcome = attempt::forward(ctx, pool, note, &mut self).await?;
        if self.replayable {
            // Held back until now in case the request had to be sent again.
            self.client.buf.consume(self.body_in_head);
        }
        Ok(outcome)
    }

    /// Sends the request on `conn` and relays the response. A request body streams upstream
    /// while the response streams back (full duplex), so a backend that answers early, or
    /// echoes as it reads, is relayed at once instead of deadlocking on full socket buffers.
    async fn send(
        &mut self,
        up: &Upstream,
        mut conn: Conn,
    ) -> Result<Outcome, AttemptError<Failure>> {
        // Counted until the backend's whole response is read (not until the client has it):
        // `relay_response` ends it there.
        let in_flight = Cell::new(Some(up.stats.begin()));
        let _span = self.note.phase("upstream_exchange");
        let body_in_head = self.body_in_head;
        let request = std::mem::take(self.out);
        // Read in this turn of the clock, which the exchange's start already read: the write's
        // completion comes in a turn of its own on io_uring.
        let head_sent = fulcrum_util::now();
        let (res, request) = conn.w.write_all(request).await;
        *self.out = request;
        if res.is_err() {
            return Err(AttemptError::NoResponse { reused: conn.reused });
        }
        if !self.replayable {
            self.client.buf.consume(body_in_head);
        }
        let rest = match self.req.framing {
            Framing::Length(n) => Framing::Length(n - body_in_head as u64),
            other => other,
        };
        let streaming = !matches!(rest, Framing::None | Framing::Length(0));
        // When the last request byte went upstream (for a request without a body to stream, its
        // head's handing to the kernel); the response-time clock starts there.
        let body_sent: Cell<Option<Instant>> = Cell::new((!streaming).then_some(head_sent));
        let head_written = Cell::new(false);

        let client = &mut *self.client;
        let (sent, relayed) = {
            let mut half = UpstreamHalf { r: &mut conn.r, buf: &mut conn.buf };
            let conn_w = &mut conn.w;
            // Pinned where it is made: awaited by value, its large state would be copied into
            // the await's slot on every exchange.
            let relay = std::pin::pin!(relay_response(
                self.ctx,
                self.epoch,
                &self.req,
                &self.timeouts,
                self.note,
                self.cache,
                up,
                &mut half,
                &mut client.w,
                client.timer.as_mut(),
                self.out,
                &body_sent,
                &head_written,
                &in_flight,
            ));
            if streaming {
                let t = &self.timeouts;
                let spec = CopySpec {
                    framing: rest,
                    dechunk: false,
                    read_timeout: t.client_body(),
                    write_timeout: t.upstream_response(),
                    max_bytes: self.ctx.limits.max_body_bytes,
                    min_rate: MinRate::new(t.client_body_min_rate, t.client_body())
                        .map(|rate| rate.after(body_in_head as u64)),
                };
                let capture = &mut *self.capture;
                let timer =
                    client.upload_timer.get_or_insert_with(|| Box::pin(Timer::new())).as_mut();
                let send = async {
                    let (r, buf) = (&mut client.r, &mut client.buf);
                    let result = copy_body(r, buf, conn_w, spec, capture, timer).await;
                    body_sent.set(Some(fulcrum_util::now()));
                    result
                };
                duplex(send, relay, &head_written).await
            } else {
                (Some(Ok(0)), Some(relay.await))
            }
        };
        match (sent, relayed) {
            (_, Some(Err(failure))) => Err(AttemptError::Fail(failure)),
            (_, Some(Ok(Relayed::NoResponse))) => {
                Err(AttemptError::NoResponse { reused: conn.reused })
            }
            (Some(Ok(_)), Some(Ok(Relayed::Done(res)))) => {
                if res.upstream_keep_alive {
                    up.checkin(conn);
                }
                Ok(Outcome::Done(res.client_keep_alive))
            }
            // The response finished first: the rest of the request body is unread, so neither
            // connection can carry another exchange.
            (_, Some(Ok(Relayed::Done(_)))) => Ok(Outcome::Done(false)),
            // Only a bodiless request asks for an upgrade, so its upload is done. The tunnel
            // keeps the backend's in-flight count and connection (never pooled) until it
            // closes.
            (_, Some(Ok(Relayed::Switched(protocol)))) => {
                let _span = self.note.phase("tunnel");
                let report = self.tunnel(&mut conn).await;
                drop(in_flight);
                Ok(Outcome::Tunnel { protocol, report })
            }
            (Some(Err(e)), None) => Err(AttemptError::Fail(Failure {
                error: match e {
                    BodyError::Write(_) => ProxyError::Upstream(e),
                    other => ProxyError::Client(other),
                },
                responded: head_written.get(),
            })),
            (Some(Ok(_)) | None, None) => {
                Err(AttemptError::Fail(ProxyError::BadGateway("upstream connection failed").into()))
            }
        }
    }

    /// Joins the client connection and the backend connection `conn` after a switch, until
    /// the tunnel closes.
    async fn tunnel(&mut self, conn: &mut UpstreamConn) -> TunnelReport {
        let t = &self.timeouts;
        let client = &mut *self.client;
        let tunnel = self.ctx.open_tunnel();
        let (up_src, down_src) = (Some(&mut client.r), conn.r.half());
        let up = tunnel::copy(&tunnel, Direction::Up, up_src, &mut client.buf, &mut conn.w);
        let down = tunnel::copy(&tunnel, Direction::Down, down_src, &mut conn.buf, &mut client.w);
        tunnel.run(self.ctx.drained_signal(), t.tunnel_idle(), t.drain(), up, down).await
    }
}

impl Forward for Exchange<'_> {
    type Output = Outcome;
    type Failure = Failure;

    fn serves(&self, protocol: BackendProtocol) -> bool {
        protocol == BackendProtocol::Http1
    }

    fn idempotent(&self) -> bool {
        self.req.idempotent
    }

    fn replayable(&self) -> bool {
        self.replayable
    }

    async fn attempt(
        &mut self,
        index: usize,
        up: &Upstream,
        reuse: Reuse,
    ) -> Result<Outcome, AttemptError<Failure>> {
        let health = self.epoch.epoch.health;
        let worker = self.ctx.telemetry.worker();
        let conn = match up.connection(reuse, &self.timeouts, health, self.note, worker).await {
            Ok(Some(conn)) => conn,
            Ok(None) => return Err(AttemptError::ConnectFailed),
            Err(ProxyError::BackendBusy(crate::error::QueueError::Full)) => {
                return Err(AttemptError::Busy);
            }
            Err(e) => return Err(AttemptError::Fail(e.into())),
        };
        self.out.truncate(self.head_len);
        h1::finish_request_head(self.out, &self.req, &up.backend.url.authority);
        self.body_in_head = 0;
        if let Framing::Length(n) = self.req.framing {
            self.body_in_head = (n.min(self.client.buf.len() as u64)) as usize;
            self.out.extend_from_slice(&self.client.buf.data()[..self.body_in_head]);
        }
        self.note.set_backend(index);
        self.capture.reset();
        self.capture.tap(&self.client.buf.data()[..self.body_in_head]);
        self.send(up, conn).await
    }
}

/// Reads the response head with the one HTTP/1.1 codec, then streams the response to the
/// client.
#[allow(clippy::too_many_arguments)]
async fn relay_response(
    ctx: &WorkerCtx,
    epoch: &WorkerEpoch,
    req: &RequestInfo,
    t: &Timeouts,
    note: &ExchangeNote,
    cache: &CacheMark,
    up: &Upstream,
    conn: &mut UpstreamHalf<'_>,
    client_w: &mut ConnWrite,
    mut timer: Pin<&mut Timer>,
    out: &mut Vec<u8>,
    body_sent: &Cell<Option<Instant>>,
    head_written: &Cell<bool>,
    in_flight: &Cell<Option<InFlight<'_>>>,
) -> Result<Relayed, Failure> {
    let mut interim = 0;
    let res = loop {
        let parsed = if conn.buf.is_empty() {
            None
        } else {
            // Decided when the head arrives: a worker that started draining meanwhile closes
            // the connection after this response.
            let client_side = ClientSide {
                is_head: req.is_head,
                http10: req.http10,
                keep_alive: req.keep_alive && !ctx.is_draining(),
                upgrade: req.upgrade,
            };
            let max = ctx.limits.max_headers;
            h1::parse_response(conn.buf.data(), max, client_side, &ctx.upgrades, out)
                .map_err(|_| ProxyError::BadGateway("malformed response head"))?
        };
        match parsed {
            Some(ResponseHead::Final(res)) => break res,
            Some(ResponseHead::Interim { len, forward }) => {
                conn.buf.consume(len);
                interim += 1;
                if interim > MAX_INTERIM {
                    return Err(ProxyError::BadGateway("too many interim responses").into());
                }
                if forward {
                    // 103 Early Hints: the client may start fetching while the backend works;
                    // the final answer (or Fulcrum's error) still follows.
                    send_head(client_w, timer.as_mut(), out, t).await?;
                    note.sent(out.len() as u64);
                }
                continue;
            }
            Some(ResponseHead::Switching { len, protocol: Some(protocol) }) => {
                conn.buf.consume(len);
                let now = fulcrum_util::now();
                up.response_head(note, 101, body_sent.get().unwrap_or(now), now);
                head_written.set(true);
                send_head(client_w, timer.as_mut(), out, t)
                    .await
                    .map_err(|e| responded(e.error))?;
                note.sent(out.len() as u64);
                return Ok(Relayed::Switched(protocol));
            }
            Some(ResponseHead::Switching { protocol: None, .. }) => {
                return Err(ProxyError::BadGateway("protocol switch nobody asked for").into());
            }
            None if conn.buf.is_full() => {
                return Err(ProxyError::BadGateway("response head too large").into());
            }
            None => {}
        }
        // The response timeout runs from the end of the request; while the body is still
        // uploading, the client-body timeout on the other side bounds the wait.
        let start = body_sent.get().unwrap_or_else(fulcrum_util::now);
        let read = {
            let read = std::pin::pin!(conn.r.fill(conn.buf));
            timer.as_mut().within_from(start, t.upstream_response(), read).await
        };
        match read {
            Err(_) if body_sent.get().is_none() => {}
            Err(_) => return Err(ProxyError::UpstreamTimeout.into()),
            // (After an interim head the response has begun: not sent again.)
            Ok(Ok(0) | Err(_)) if conn.buf.is_empty() && interim == 0 => {
                return Ok(Relayed::NoResponse);
            }
            Ok(Ok(0) | Err(_)) => {
                return Err(ProxyError::BadGateway("upstream closed before the response").into());
            }
            Ok(Ok(_)) => {}
        }
    };
    let now = fulcrum_util::now();
    up.response_head(note, res.status, body_sent.get().unwrap_or(now), now);
    let _span = note.phase("respond");
    conn.buf.consume(res.head_len);
    let mut tee = cache.on_head(&res, out, epoch.epoch.shard_policy());

    // Send the head, with as much of a sized body as already arrived.
    let mut body_in_head = 0;
    if let Framing::Length(n) = res.framing {
        body_in_head = n.min(conn.buf.len() as u64) as usize;
        tee.wire(&conn.buf.data()[..body_in_head]);
        out.extend_from_slice(&conn.buf.data()[..body_in_head]);
        conn.buf.consume(body_in_head);
    }
    let rest = match res.framing {
        Framing::Length(n) => Framing::Length(n - body_in_head as u64),
        other => other,
    };
    if matches!(rest, Framing::None | Framing::Length(0)) {
        // The backend is done with this request before the client hears of it.
        in_flight.take();
    }
    head_written.set(true);
    // The send timeout starts at the response head's arrival (`now`): microseconds ago, and
    // one reading of the clock fewer.
    let sent = {
        let write = std::pin::pin!(client_w.write_all(std::mem::take(out)));
        timer.as_mut().within_from(now, t.client_send(), write).await
    };
    let (written, head) = match sent {
        Ok(r) => r,
        Err(_) => return Err(responded(ProxyError::Client(BodyError::Write(timed_out())))),
    };
    *out = head;
    written.map_err(|e| responded(ProxyError::Client(BodyError::Write(e))))?;
    note.sent(out.len() as u64);

    let spec = CopySpec {
        framing: rest,
        dechunk: res.dechunk,
        read_timeout: t.upstream_response(),
        write_timeout: t.client_send(),
        max_bytes: 0,
        min_rate: None,
    };
    let mut tap = RelayTap { tee: &mut tee, in_flight };
    let body_out = copy_body(&mut *conn.r, &mut *conn.buf, client_w, spec, &mut tap, timer)
        .await
        .map_err(|e| {
        responded(match e {
            BodyError::Write(_) => ProxyError::Client(e),
            other => ProxyError::Upstream(other),
        })
    })?;
    note.sent(body_out);
    cache.complete(&ctx.cache, tee);
    Ok(Relayed::Done(res))
}

/// What watches a response body stream to the client: the cache's tee, and the backend's
/// in-flight count, which ends when the backend's last byte is read.
struct RelayTap<'t, 'f> {
    tee: &'t mut CacheTee,
    in_flight: &'t Cell<Option<InFlight<'f>>>,
}

impl BodyTap for RelayTap<'_, '_> {
    #[inline]
    fn tap(&mut self, bytes: &[u8]) {
        self.tee.tap(bytes);
    }
    #[inline]
    fn wire(&mut self, bytes: &[u8]) {
        self.tee.wire(bytes);
    }
    #[inline]
    fn source_done(&mut self) {
        self.in_flight.take();
    }
}

/// The reading side of an upstream connection, lent to the response relay while the request
/// body still streams through the writing side.
struct UpstreamHalf<'a> {
    r: &'a mut UpstreamRead,
    buf: &'a mut ReadBuf,
}

/// Writes a head Fulcrum relays (`out`) to the client within `client_send_ms`.
async fn send_head(
    client_w: &mut ConnWrite,
    timer: Pin<&mut Timer>,
    out: &mut Vec<u8>,
    t: &Timeouts,
) -> Result<(), Failure> {
    let head = std::mem::take(out);
    let (written, head) = match timer.within(t.client_send(), client_w.write_all(head)).await {
        Ok(r) => r,
        Err(_) => return Err(ProxyError::Client(BodyError::Write(timed_out())).into()),
    };
    *out = head;
    written.map(|_| ()).map_err(|e| ProxyError::Client(BodyError::Write(e)).into())
}

/// How relaying a response ended.
enum Relayed {
    /// The whole response reached the client.
    Done(h1::ResponseInfo),
    /// The backend switched to this protocol (an index in `upgrade.protocols`); its `101`
    /// reached the client.
    Switched(usize),
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
