//! One HTTP/2 stream from a client on the native engine, forwarded through the attempt loop
//! to the backend its own pick chose: an h2c/h2 backend over a multiplexed native session
//! (here), or an HTTP/1.1 backend through the HTTP/1.1 codec ([`super::to_h1`]). Runs in the
//! stream's own task on the worker's thread.
//!
//! Request and response flow at once (bidirectional streaming). DATA moves between the two
//! connections with [`move_data`]: only as much as the receiving stream's send buffer takes,
//! its credit returned to the sender only then, so a slow reader back-pressures the writer
//! through both hops' windows. END_STREAM rides on the last DATA frame when the sender's did.
//! Resets cross both ways: a client RST_STREAM cancels the upstream stream (its slot is
//! detached, which resets it), a backend RST_STREAM is passed on with its code. A stream the
//! backend refused is sent again elsewhere while the request bytes seen so far are still held
//! (at most [`REPLAY_LIMIT`]).

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::rc::Rc;
use std::time::Instant;

use fulcrum_config::BackendProtocol;
use fulcrum_h2::hpack::{Field, Pseudo};
use fulcrum_h2::{ErrorCode, StreamId};
use fulcrum_http::grpc::{is_grpc_content_type, parse_grpc_status, parse_grpc_timeout};
use fulcrum_http::h1::{BodyError, BodyTap as _};
use fulcrum_telemetry::CacheStatus;
use fulcrum_util::now_ms;
use monoio::time::timeout;

use super::server::ConnState;
use crate::attempt::{self, AttemptError, Forward};
use crate::ctx::{WorkerCtx, WorkerEpoch};
use crate::error::ProxyError;
use crate::exchange::{BodyCapture, ExchangeNote};
use crate::h2conn::fields::Fields;
use crate::h2conn::{H2Conn, Head, Incoming, PumpError, RelayEnd, is_refusal, move_data};
use crate::route;
use crate::tunnel::TunnelReport;
use crate::upstream::h2n::LeaseError;
use crate::upstream::{Reuse, Upstream};
use crate::websocket::WEBSOCKET;

/// Request bytes kept for a resend on another connection until the response head arrives.
pub(crate) const REPLAY_LIMIT: usize = 64 * 1024;

/// How a call ended early.
#[derive(Debug)]
pub(crate) enum Fail {
    /// Fulcrum failed the call: answer with its synthetic response.
    Error(ProxyError),
    /// The client reset the stream or its connection is gone: nothing to answer.
    ClientGone,
    /// The backend reset its stream: pass the reset on with the same code.
    UpstreamReset(ErrorCode),
}

impl From<ProxyError> for Fail {
    fn from(e: ProxyError) -> Self {
        Fail::Error(e)
    }
}

/// A stream's slot on a connection, detached (and the stream reset if still open) on drop.
pub(crate) struct Attached<'a>(pub(crate) &'a H2Conn, pub(crate) StreamId);

impl Drop for Attached<'_> {
    fn drop(&mut self) {
        self.0.detach(self.1);
    }
}

/// The request as it is forwarded: the client's fields with `x-forwarded-for` folded with the
/// client's address and `traceparent` replaced when Fulcrum traces the call.
pub(crate) struct Request {
    pub(crate) head: Fields,
    forwarded_for: Vec<u8>,
    traceparent: Option<String>,
}

impl Request {
    fn new(head: Fields, client_ip: &str, traceparent: Option<String>) -> Request {
        let mut forwarded_for = Vec::new();
        for f in head.regular().filter(|f| f.name == b"x-forwarded-for") {
            forwarded_for.extend_from_slice(f.value);
            forwarded_for.extend_from_slice(b", ");
        }
        forwarded_for.extend_from_slice(client_ip.as_bytes());
        Request { head, forwarded_for, traceparent }
    }

    /// `:method`.
    pub(crate) fn method(&self) -> &[u8] {
        self.head.pseudo(Pseudo::Method).unwrap_or(b"GET")
    }

    /// The regular fields to forward, `x-forwarded-for` and `traceparent` rewritten.
    pub(crate) fn fields(&self) -> impl Iterator<Item = Field<'_>> + Clone {
        let traced = self.traceparent.is_some();
        self.head
            .regular()
            .filter(move |f| f.name != b"x-forwarded-for" && !(traced && f.name == b"traceparent"))
            .chain(std::iter::once(Field::new(b"x-forwarded-for", &self.forwarded_for)))
            .chain(self.traceparent.as_deref().map(|t| Field::new(b"traceparent", t.as_bytes())))
    }

    /// The head for an h2c backend: the client's pseudo-header fields (`:scheme` http and the
    /// backend's authority when the client sent none), then [`Request::fields`].
    fn upstream_fields<'a>(
        &'a self,
        backend_authority: &'a str,
    ) -> impl Iterator<Item = Field<'a>> + Clone {
        let h = &self.head;
        let scheme = h.pseudo(Pseudo::Scheme).unwrap_or(b"http");
        let authority = h.pseudo(Pseudo::Authority).unwrap_or(backend_authority.as_bytes());
        let pseudo = [
            Some(pseudo_field(Pseudo::Method, 2, self.method())),
            Some(pseudo_field(Pseudo::Scheme, 6, scheme)),
            Some(pseudo_field(Pseudo::Authority, 1, authority)),
            h.pseudo(Pseudo::Path).map(|p| pseudo_field(Pseudo::Path, 4, p)),
            h.pseudo(Pseudo::Protocol).map(|p| Field::new(b":protocol", p)),
        ];
        pseudo.into_iter().flatten().chain(self.fields())
    }
}

/// Pseudo-header field `p` with `value`, its name at `index` in HPACK's static table.
fn pseudo_field(p: Pseudo, index: u8, value: &[u8]) -> Field<'_> {
    Field { name: p.name(), value, pseudo: Some(p), never_indexed: false, static_name: Some(index) }
}

/// Serves one client stream to its end, and logs it: one access record, the metrics, the
/// spans (as for an HTTP/1.1 exchange).
pub(crate) async fn serve_stream(
    ctx: &Rc<WorkerCtx>,
    conn: &Rc<H2Conn>,
    state: &Rc<ConnState>,
    id: StreamId,
    head: Fields,
    end_stream: bool,
) {
    let _attached = Attached(conn, id);
    let epoch = ctx.current_epoch();
    let _busy = ctx.busy();
    let grpc = head.get(b"content-type").is_some_and(is_grpc_content_type);
    let deadline = head.get(b"grpc-timeout").filter(|_| grpc).and_then(parse_grpc_timeout);
    // Each stream is routed on its own pseudo-header fields and fields.
    let routed = route::h2_native(epoch.epoch.routes(), &head, grpc, state.info.sni());
    let pool = epoch.pool(&routed);
    let method = std::str::from_utf8(head.pseudo(Pseudo::Method).unwrap_or(b"GET")).unwrap_or("?");
    let path = std::str::from_utf8(head.pseudo(Pseudo::Path).unwrap_or(b"/")).unwrap_or("?");
    let (mut log, traceparent) = ctx.telemetry.begin_stream(
        method,
        path,
        head.get(b"traceparent"),
        head.size(),
        epoch.epoch.id,
        &state.info,
    );
    let request = Request::new(head, &state.client_ip, traceparent);
    if grpc {
        log.capture.set_binary();
    }
    // HTTP/2 responses (gRPC above all) are never cached.
    if epoch.epoch.cache_for(routed.cache).is_some() {
        log.note.set_cache(CacheStatus::Bypass);
    }
    let head_sent = Cell::new(false);
    // RFC 8441 extended CONNECT (the engine takes `:protocol` only with CONNECT, and only when
    // the listener enabled it): only `websocket` is translated.
    let protocol = request.head.pseudo(Pseudo::Protocol);
    let upgrade = protocol.is_some();
    let unsupported = protocol.is_some_and(|p| !p.eq_ignore_ascii_case(WEBSOCKET.as_bytes()));
    let tunnel: Cell<Option<TunnelReport>> = Cell::new(None);
    let result = if unsupported {
        Err(Fail::Error(ProxyError::Unsupported("extended CONNECT protocol")))
    } else {
        let mut call = Call {
            ctx,
            epoch: &epoch,
            conn,
            id,
            state,
            grpc,
            note: &log.note,
            request: &request,
            capture: &mut log.capture,
            replay: RefCell::new(Replay {
                recording: true,
                ended: end_stream,
                ..Replay::default()
            }),
            headers_only: end_stream,
            head_sent: &head_sent,
            upgrade,
            tunnel: &tunnel,
        };
        // Pinned here so the deadline wraps a reference: the call's future is stored once.
        let run = std::pin::pin!(attempt::forward(ctx, pool, &log.note, &mut call));
        match deadline {
            // Boxed, and only made when the call has a deadline: monoio's timer entry is
            // cache-line aligned, which inline would make every stream task an aligned
            // allocation.
            Some(limit) => match Box::pin(timeout(limit, run)).await {
                Ok(r) => r,
                Err(_) => Err(Fail::Error(ProxyError::DeadlineExceeded)),
            },
            None => run.await,
        }
    };
    if let Err(Fail::Error(ProxyError::Client(BodyError::TooSlow))) = &result {
        ctx.telemetry.worker().body_too_slow.inc();
    }
    if let Some(report) = tunnel.take() {
        log.note_tunnel(WEBSOCKET, &report);
    }
    let status = match result {
        Ok(()) => log.note.status(),
        Err(fail) => finish_failed(fail, grpc, conn, id, head_sent.get(), &log.note),
    };
    let target = pool.target(ctx.index, routed.route, log.note.backend());
    ctx.telemetry.finish(log, target, status);
    conn.recycle(request.head);
}

/// The size of a response head as the access record counts it (`:status` and its 3 digits,
/// then names and values).
pub(crate) fn response_head_bytes(fields: &Fields) -> u64 {
    (":status".len() + 3 + fields.regular().map(|f| f.name.len() + f.value.len()).sum::<usize>())
        as u64
}

/// Answers a failed call: before the response head, with Fulcrum's synthetic response (an
/// HTTP error, or a gRPC trailers-only answer); after it, with gRPC trailers or a reset.
/// Returns the HTTP status the client got (499: none, the stream was reset before a head).
fn finish_failed(
    fail: Fail,
    grpc: bool,
    conn: &H2Conn,
    id: StreamId,
    head_sent: bool,
    note: &ExchangeNote,
) -> u16 {
    let relayed = if head_sent { note.status() } else { 499 };
    let error = match fail {
        Fail::ClientGone => {
            conn.reset(id, ErrorCode::CANCEL);
            return relayed;
        }
        Fail::UpstreamReset(code) => {
            conn.reset(id, code);
            return if head_sent { relayed } else { 502 };
        }
        Fail::Error(e) => e,
    };
    let Some(answer) = error.synthetic() else {
        conn.reset(id, ErrorCode::CANCEL);
        return relayed;
    };
    let grpc_status = answer.grpc_status.as_u16().to_string();
    let status_fields = [
        Field::new(b"grpc-status", grpc_status.as_bytes()),
        Field::new(b"grpc-message", answer.grpc_message.as_bytes()),
    ];
    let status_bytes =
        (status_fields.iter().map(|f| f.name.len() + f.value.len()).sum::<usize>()) as u64;
    match (grpc, head_sent) {
        (true, false) => {
            note.set_grpc_status(u32::from(answer.grpc_status.as_u16()));
            let content_type = Field::new(b"content-type", b"application/grpc");
            // `:status`, `content-type: application/grpc` and the status fields.
            note.sent(":status".len() as u64 + 3 + 28 + status_bytes);
            let _ =
                conn.send_response(id, 200, [content_type].into_iter().chain(status_fields), true);
            200
        }
        (true, true) => {
            note.set_grpc_status(u32::from(answer.grpc_status.as_u16()));
            note.sent(status_bytes);
            let _ = conn.send_trailers(id, status_fields);
            relayed
        }
        (false, false) => {
            let length = answer.body.len().to_string();
            let fields = [
                Field::new(b"content-type", b"text/plain"),
                Field::new(b"content-length", length.as_bytes()),
            ];
            // `content-type: text/plain` and `content-length`.
            note.sent(":status".len() as u64 + 3 + 36 + length.len() as u64);
            note.sent(answer.body.len() as u64);
            if conn.send_response(id, answer.status, fields, false).is_ok() {
                // A few bytes: the stream's send buffer takes them whole.
                let _ = conn.send_body_now(id, answer.body.as_bytes());
            }
            answer.status
        }
        (false, true) => {
            conn.reset(id, ErrorCode::INTERNAL_ERROR);
            relayed
        }
    }
}

/// The request bytes seen so far, kept until the response head so a refused stream can be
/// sent again.
#[derive(Debug, Default)]
pub(crate) struct Replay {
    bytes: Vec<u8>,
    /// Still recording (no response head yet, under the limit, nothing forwarded unrecorded).
    recording: bool,
    /// The request body and trailers are all in `bytes` / `trailers`.
    ended: bool,
    trailers: Option<Fields>,
}

impl Replay {
    fn record(&mut self, chunk: &[u8]) {
        if !self.recording {
            return;
        }
        if self.bytes.len() + chunk.len() > REPLAY_LIMIT {
            self.stop();
        } else {
            self.bytes.extend_from_slice(chunk);
        }
    }

    /// Stops recording and forgets what was kept: the request can no longer be sent again.
    pub(crate) fn stop(&mut self) {
        self.recording = false;
        self.bytes = Vec::new();
        self.trailers = None;
    }
}

/// One call on a pinned epoch: the stream's request, its answer channel, and what the attempt
/// loop needs to know about it.
pub(crate) struct Call<'a> {
    pub(crate) ctx: &'a WorkerCtx,
    pub(crate) epoch: &'a WorkerEpoch,
    /// The client connection and the stream on it.
    pub(crate) conn: &'a Rc<H2Conn>,
    pub(crate) id: StreamId,
    pub(crate) state: &'a ConnState,
    grpc: bool,
    /// Telemetry: backend, status, timings and spans of this stream.
    pub(crate) note: &'a ExchangeNote,
    pub(crate) request: &'a Request,
    pub(crate) capture: &'a mut BodyCapture,
    pub(crate) replay: RefCell<Replay>,
    /// The client sent END_STREAM with its head: there is no body.
    pub(crate) headers_only: bool,
    /// The response head went to the client.
    pub(crate) head_sent: &'a Cell<bool>,
    /// An extended CONNECT for WebSocket (RFC 8441): an upgrade for an HTTP/1.1 backend.
    pub(crate) upgrade: bool,
    /// The tunnel's report, once an upgraded stream's tunnel has closed.
    pub(crate) tunnel: &'a Cell<Option<TunnelReport>>,
}

impl Forward for Call<'_> {
    type Output = ();
    type Failure = Fail;

    fn serves(&self, protocol: BackendProtocol) -> bool {
        // gRPC goes only to HTTP/2 backends; WebSocket only to HTTP/1.1 ones (as an upgrade).
        if self.upgrade {
            return protocol == BackendProtocol::Http1;
        }
        !self.grpc || protocol == BackendProtocol::H2c
    }

    fn idempotent(&self) -> bool {
        // An extended CONNECT goes upstream as a `GET`.
        self.upgrade
            || matches!(
                self.request.method(),
                b"GET" | b"HEAD" | b"OPTIONS" | b"TRACE" | b"PUT" | b"DELETE"
            )
    }

    fn replayable(&self) -> bool {
        self.replay.borrow().recording
    }

    async fn attempt(
        &mut self,
        index: usize,
        up: &Upstream,
        reuse: Reuse,
    ) -> Result<(), AttemptError<Fail>> {
        match up.backend.url.protocol {
            BackendProtocol::H2c => self.attempt_h2(index, up).await,
            // Boxed: the HTTP/1.1 translation is a large future that gRPC calls never run.
            BackendProtocol::Http1 => Box::pin(super::to_h1::attempt(self, index, up, reuse)).await,
        }
    }
}

/// Why a stream's head will not come from the backend, as the attempt loop sees it.
fn head_failed(why: Incoming) -> AttemptError<Fail> {
    match why {
        Incoming::Reset(code, remote) if is_refusal(code, remote) => AttemptError::Refused,
        Incoming::Reset(code, true) => AttemptError::Fail(Fail::UpstreamReset(code)),
        // Our side of the session reset it: the backend broke the protocol.
        Incoming::Reset(_, false) => {
            AttemptError::Fail(ProxyError::BadGateway("malformed response head").into())
        }
        _ => AttemptError::Fail(ProxyError::BadGateway("upstream connection lost").into()),
    }
}

impl Call<'_> {
    /// One attempt on an h2c/h2 backend: a stream on one of this worker's sessions to it.
    async fn attempt_h2(&mut self, index: usize, up: &Upstream) -> Result<(), AttemptError<Fail>> {
        let timeouts = &self.epoch.epoch.timeouts;
        let connect = self.note.phase("upstream_connect");
        let leased = up.lease_h2n(&self.ctx.http2, timeouts.upstream_connect()).await;
        drop(connect);
        let lease = match leased {
            Ok(lease) => lease,
            Err(LeaseError::Connect(e)) => {
                up.connect_failed(self.epoch.epoch.health, &e.to_string());
                return Err(AttemptError::ConnectFailed);
            }
            Err(LeaseError::Retired) => return Err(AttemptError::Gone),
        };
        up.stats.record_connect_success();
        self.note.set_backend(index);
        let session = lease.session();
        let headers_only = self.headers_only;
        let fields = self.request.upstream_fields(&up.backend.url.authority);
        let Ok(up_id) = session.open(fields, headers_only) else {
            return Err(AttemptError::Refused);
        };
        let _upstream = Attached(session, up_id);
        session.relay_to(up_id, self.conn, self.id);
        // Counted until the backend's response has ended (not until the client has it).
        let in_flight = Cell::new(Some(up.stats.begin()));
        let _span = self.note.phase("upstream_exchange");
        let started = Instant::now();
        let (conn, id, note, replay, grpc) =
            (self.conn, self.id, self.note, &self.replay, self.grpc);
        let capture = &mut *self.capture;
        let head_sent = self.head_sent;
        let response_timeout = timeouts.upstream_response();

        // The request side: what was already seen (after a refused attempt), then the rest.
        let send = async {
            if headers_only {
                return Ok(());
            }
            let (bytes, ended, trailers) = {
                let mut r = replay.borrow_mut();
                (std::mem::take(&mut r.bytes), r.ended, r.trailers.clone())
            };
            let resent = !bytes.is_empty() || ended;
            if resent {
                let last = ended && trailers.is_none();
                let sent = session.send_all(up_id, &bytes, last).await;
                replay.borrow_mut().bytes = bytes;
                sent?;
            }
            if ended {
                if let Some(t) = trailers {
                    session.send_trailers(up_id, t.iter()).map_err(|_| PumpError::Dst)?;
                }
                return Ok(());
            }
            // Bytes resent from `replay` were captured when they first arrived.
            let mut tap = |c: &[u8]| {
                capture.tap(c);
                replay.borrow_mut().record(c);
            };
            let mut on_trailers = |t: &Fields| {
                let mut r = replay.borrow_mut();
                if r.recording {
                    r.trailers = Some(t.clone());
                }
            };
            let mut on_end = || replay.borrow_mut().ended = true;
            pump(conn, id, session, up_id, &mut tap, &mut on_trailers, &mut on_end).await
        };

        // The response side: the head, then the body and trailers.
        let relay = async {
            // Plain HTTP waits `upstream_response_ms` for the head; gRPC calls (often
            // long-lived streams) are bounded by their own `grpc-timeout` instead.
            let limit = (!grpc).then_some(response_timeout);
            let head_wait = async {
                let head = poll_fn(|cx| session.poll_head(up_id, cx));
                match limit {
                    Some(limit) => Box::pin(timeout(limit, head)).await.ok(),
                    None => Some(head.await),
                }
            };
            let head = monoio::select! {
                biased;
                r = head_wait => match r {
                    Some(r) => r,
                    None => return Err(AttemptError::Fail(ProxyError::UpstreamTimeout.into())),
                },
                _ = poll_fn(|cx| conn.poll_reset(id, cx)) => {
                    return Err(AttemptError::Fail(Fail::ClientGone));
                }
            };
            let head = head.map_err(head_failed)?;
            replay.borrow_mut().stop();
            let (status, at, grpc_status, bytes) = match &head {
                Head::Fields(status, fields) => (
                    *status,
                    Instant::now(),
                    // A trailers-only response carries its grpc-status in the head.
                    fields.get(b"grpc-status").and_then(parse_grpc_status),
                    response_head_bytes(fields),
                ),
                Head::Relayed(h) => (h.status, h.at, h.grpc_status, h.bytes),
            };
            let elapsed = at.saturating_duration_since(started);
            up.stats.record_response_time(now_ms(), elapsed);
            note.response(status, elapsed);
            let _respond = note.phase("respond");
            if let Some(code) = grpc_status {
                note.set_grpc_status(code);
            }
            note.sent(bytes);
            match head {
                Head::Fields(status, fields) => {
                    let eos = session.is_ended_now(up_id);
                    if eos {
                        in_flight.take();
                    }
                    conn.send_response(id, status, fields.regular(), eos)
                        .map_err(|_| AttemptError::Fail(Fail::ClientGone))?;
                    head_sent.set(true);
                    if eos {
                        return Ok(());
                    }
                }
                // The upstream reader relays the response as it comes: wait for its end.
                Head::Relayed(_) => {
                    head_sent.set(true);
                    let end = monoio::select! {
                        biased;
                        end = poll_fn(|cx| session.poll_relay(up_id, cx)) => end,
                        _ = poll_fn(|cx| conn.poll_reset(id, cx)) => {
                            return Err(AttemptError::Fail(Fail::ClientGone));
                        }
                    };
                    let relayed = session.take_relayed(up_id);
                    note.sent(relayed.body);
                    if let Some((bytes, code)) = relayed.trailers {
                        note.sent(bytes);
                        if let Some(code) = code {
                            note.set_grpc_status(code);
                        }
                    }
                    if end == RelayEnd::Done {
                        in_flight.take();
                        return Ok(());
                    }
                    // The rest waits in the slot.
                }
            }
            let mut tap = |c: &[u8]| note.sent(c.len() as u64);
            let mut on_trailers = |t: &Fields| {
                note.sent(t.size() as u64);
                if let Some(code) = t.get(b"grpc-status").and_then(parse_grpc_status) {
                    note.set_grpc_status(code);
                }
            };
            let mut on_end = || drop(in_flight.take());
            match pump(session, up_id, conn, id, &mut tap, &mut on_trailers, &mut on_end).await {
                Ok(()) => Ok(()),
                Err(PumpError::Dst) => Err(AttemptError::Fail(Fail::ClientGone)),
                Err(PumpError::Src) => Err(match session.reset_of(up_id) {
                    Some((code, true)) => AttemptError::Fail(Fail::UpstreamReset(code)),
                    // The response had started: nothing can be sent again.
                    _ => AttemptError::Fail(
                        ProxyError::BadGateway("upstream connection lost").into(),
                    ),
                }),
            }
        };

        let mut send = std::pin::pin!(send);
        let mut relay = std::pin::pin!(relay);
        let mut sent = headers_only;
        loop {
            monoio::select! {
                r = &mut send, if !sent => {
                    sent = true;
                    match r {
                        Ok(()) => {}
                        // The backend stopped reading (an early answer, or a reset the
                        // response side reports).
                        Err(PumpError::Dst) => {}
                        Err(PumpError::Src) => return Err(AttemptError::Fail(Fail::ClientGone)),
                    }
                }
                r = &mut relay => return r,
            }
        }
    }
}

/// Moves a stream's DATA and trailers from `src` to `dst` under flow control. `tap` sees each
/// byte moved, `on_trailers` the trailers; `on_end` runs once the source has ended, before its
/// last frame is sent on.
pub(crate) async fn pump(
    src: &H2Conn,
    s: StreamId,
    dst: &H2Conn,
    d: StreamId,
    tap: &mut dyn FnMut(&[u8]),
    on_trailers: &mut dyn FnMut(&Fields),
    on_end: &mut dyn FnMut(),
) -> Result<(), PumpError> {
    loop {
        let next = monoio::select! {
            biased;
            i = poll_fn(|cx| src.poll_incoming(s, cx)) => i,
            _ = poll_fn(|cx| dst.poll_reset(d, cx)) => return Err(PumpError::Dst),
        };
        match next {
            Incoming::Data => {
                let (moved, ended) = move_data(src, s, dst, d, tap)?;
                if ended {
                    on_end();
                    return Ok(());
                }
                if moved == 0 {
                    poll_fn(|cx| dst.poll_capacity(d, cx)).await?;
                }
            }
            Incoming::Trailers(t) => {
                on_end();
                on_trailers(&t);
                return dst.send_trailers(d, t.iter()).map_err(|_| PumpError::Dst);
            }
            Incoming::End => {
                on_end();
                return dst.send_all(d, &[], true).await;
            }
            Incoming::Reset(..) | Incoming::Lost => return Err(PumpError::Src),
        }
    }
}
