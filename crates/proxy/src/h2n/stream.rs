//! One HTTP/2 stream from a client on the native engine, forwarded through the attempt loop
//! to the backend its own pick chose: an h2c/h2 backend over a multiplexed native session
//! (here), or an HTTP/1.1 backend through the HTTP/1.1 codec (`crate::h2call`, shared with the
//! hyperium engine). Runs inside its client connection's task on the worker's thread
//! (`super::server::StreamSet`).
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
use std::future::{Future, poll_fn};
use std::rc::Rc;
use std::time::Duration;

use fulcrum_h2::hpack::{Field, Pseudo};
use fulcrum_h2::{ErrorCode, StreamId, validate};
use fulcrum_http::Synthetic;
use fulcrum_http::grpc::{is_grpc_content_type, parse_grpc_status, parse_grpc_timeout};
use fulcrum_http::h1::{BackendResponse, BodyTap as _, Framing, H2RequestHead};
use fulcrum_util::push_decimal;

use super::server::ConnState;
use super::websocket;
use crate::attempt::AttemptError;
use crate::ctx::{WorkerCtx, WorkerEpoch};
use crate::error::ProxyError;
use crate::exchange::ExchangeNote;
use crate::h2call::{
    self, Attempt, Call, ClientGone, ClientStream, ExtendedConnect, Next, Open, Opened,
};
use crate::h2conn::fields::Fields;
use crate::h2conn::{
    H2Conn, Head, Incoming, NewStream, PumpError, RelayEnd, is_refusal, move_data,
};
use crate::route;
use crate::transport::ConnInfo;
use crate::tunnel::{Flow, Tunnel};
use crate::upstream::{Upstream, UpstreamConn};

/// Request bytes kept for a resend on another connection until the response head arrives.
pub(crate) const REPLAY_LIMIT: usize = 64 * 1024;

/// Most request body bytes taken from the stream per write to an HTTP/1.1 backend.
pub(super) const CHUNK: usize = 64 * 1024;

/// How a call on this engine ended early.
type Fail = h2call::Fail<ErrorCode>;

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
        for value in head.values(b"x-forwarded-for") {
            forwarded_for.extend_from_slice(value);
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

/// A request stream the client opened on the native engine. Served by `h2call::serve`.
pub(crate) struct Opening {
    /// The client connection.
    pub(crate) conn: Rc<H2Conn>,
    /// What its streams share with it.
    pub(crate) state: Rc<ConnState>,
    /// The stream, its head and END_STREAM.
    pub(crate) stream: NewStream,
}

impl Open for Opening {
    type Stream = NativeStream;

    fn open(self, ctx: &WorkerCtx, epoch: &WorkerEpoch) -> Opened<NativeStream> {
        let Opening { conn, state, stream: NewStream { id, head, end_stream } } = self;
        // Detached (and reset) should the start fail; the stream detaches itself once made.
        let attached = Attached(&conn, id);
        let grpc = head.get(b"content-type").is_some_and(is_grpc_content_type);
        let deadline = head.get(b"grpc-timeout").filter(|_| grpc).and_then(parse_grpc_timeout);
        // Each stream is routed on its own pseudo-header fields and fields.
        let routed = route::h2_native(epoch.epoch.routes(), &head, grpc, state.info.sni());
        let method = head.pseudo(Pseudo::Method).unwrap_or(b"GET");
        let method = std::str::from_utf8(method).unwrap_or("?");
        let path = std::str::from_utf8(head.pseudo(Pseudo::Path).unwrap_or(b"/")).unwrap_or("?");
        let (log, traceparent) = ctx.telemetry.begin_stream(
            method,
            path,
            head.get(b"traceparent"),
            head.size(),
            epoch.epoch.id,
            &state.info,
        );
        let request = Request::new(head, &state.client_ip, traceparent);
        // RFC 8441 extended CONNECT (the engine takes `:protocol` only with CONNECT, and only
        // when the listener enabled it): only `websocket` is translated.
        let connect = ExtendedConnect::of(request.head.pseudo(Pseudo::Protocol));
        std::mem::forget(attached);
        let replay =
            RefCell::new(Replay { recording: true, ended: end_stream, ..Replay::default() });
        let stream = NativeStream { conn, id, state, request, replay, head_sent: Cell::new(false) };
        let headers_only = end_stream;
        Opened { routed, log, stream, grpc, deadline, headers_only, connect }
    }
}

/// The size of a response head as the access record counts it (`:status` and its 3 digits,
/// then names and values).
pub(crate) fn response_head_bytes(fields: &Fields) -> u64 {
    (":status".len() + 3 + fields.regular().map(|f| f.name.len() + f.value.len()).sum::<usize>())
        as u64
}

/// The response head for the client: end-to-end fields with lower-case names but those named in
/// `skip`, the length when the body has one; `None` when a field cannot be carried over HTTP/2.
fn response_fields(res: &BackendResponse<'_>, skip: &[&[u8]]) -> Option<Fields> {
    let mut fields = Fields::default();
    let mut name = Vec::new();
    for h in res.end_to_end() {
        name.clear();
        name.extend(h.name.bytes().map(|b| b.to_ascii_lowercase()));
        let value = h.value.trim_ascii();
        if validate::is_connection_specific(&name) || skip.contains(&name.as_slice()) {
            continue;
        }
        if !validate::is_valid_name(&name) || !validate::is_valid_value(value) {
            return None;
        }
        fields.push(&name, value);
    }
    if let Framing::Length(n) = res.framing {
        name.clear();
        push_decimal(&mut name, n);
        fields.push(b"content-length", &name);
    }
    Some(fields)
}

/// The `grpc-status` and `grpc-message` fields of Fulcrum's answer, and their size as the
/// access record counts it.
fn grpc_status_fields<'a>(answer: &'a Synthetic, status: &'a str) -> ([Field<'a>; 2], u64) {
    let fields = [
        Field::new(b"grpc-status", status.as_bytes()),
        Field::new(b"grpc-message", answer.grpc_message.as_bytes()),
    ];
    let bytes = (fields.iter().map(|f| f.name.len() + f.value.len()).sum::<usize>()) as u64;
    (fields, bytes)
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

/// One client stream on the native engine: the connection and the stream on it, its request,
/// and what was seen of its body.
pub(crate) struct NativeStream {
    conn: Rc<H2Conn>,
    id: StreamId,
    state: Rc<ConnState>,
    request: Request,
    replay: RefCell<Replay>,
    /// The response head went to the client.
    head_sent: Cell<bool>,
}

impl Drop for NativeStream {
    fn drop(&mut self) {
        // The head's buffer goes back to the connection for the next stream; the stream's
        // slot is detached (and the stream reset if its response did not end).
        self.conn.recycle(std::mem::take(&mut self.request.head));
        self.conn.detach(self.id);
    }
}

impl ClientStream for NativeStream {
    type Code = ErrorCode;
    type Head = (u16, Fields);
    type Chunk = Vec<u8>;

    const CANCEL: ErrorCode = ErrorCode::CANCEL;
    const INTERNAL_ERROR: ErrorCode = ErrorCode::INTERNAL_ERROR;

    fn info(&self) -> &ConnInfo {
        &self.state.info
    }

    fn method(&self) -> &[u8] {
        self.request.method()
    }

    fn request_head(&self) -> H2RequestHead<'_> {
        let h = &self.request.head;
        H2RequestHead {
            method: self.request.method(),
            path: h.pseudo(Pseudo::Path).unwrap_or(b"/"),
            authority: h.pseudo(Pseudo::Authority),
        }
    }

    fn fields(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.request.fields().map(|f| (f.name, f.value))
    }

    fn content_length(&self) -> Option<&[u8]> {
        self.request.head.get(b"content-length")
    }

    fn replayable(&self) -> bool {
        self.replay.borrow().recording
    }

    fn stop_replay(&self) {
        self.replay.borrow_mut().stop();
    }

    fn chunk_buf() -> Vec<u8> {
        Vec::with_capacity(CHUNK)
    }

    async fn next_chunk(&mut self, chunk: &mut Vec<u8>) -> Next {
        match poll_fn(|cx| self.conn.poll_incoming(self.id, cx)).await {
            Incoming::Data => {}
            Incoming::End | Incoming::Trailers(_) => return Next::End,
            // The engine counts the client's resets itself.
            Incoming::Reset(..) | Incoming::Lost => return Next::Gone,
        }
        chunk.clear();
        self.conn.take_data(self.id, chunk, CHUNK);
        Next::Data
    }

    fn release(&mut self, _: usize) {
        // `take_data` gave the credit back as it took the bytes.
    }

    fn count_reset(&self) {}

    fn alarm(&self, limit: Duration) -> impl Future<Output = ()> + 'static {
        self.state.alarms.after(limit)
    }

    fn response_head(res: &BackendResponse<'_>, upgrade: bool) -> Option<(u16, Fields)> {
        if upgrade {
            // The `200` for the client, without the HTTP/1.1-only `Sec-WebSocket-Accept`.
            return response_fields(res, &[b"sec-websocket-accept"]).map(|f| (200, f));
        }
        response_fields(res, &[]).map(|f| (res.status, f))
    }

    fn status(head: &(u16, Fields)) -> u16 {
        head.0
    }

    fn head_bytes(head: &(u16, Fields)) -> u64 {
        response_head_bytes(&head.1)
    }

    fn send_interim(&mut self, (status, fields): (u16, Fields)) -> Result<(), ClientGone> {
        self.conn.send_response(self.id, status, fields.iter(), false).map_err(|_| ClientGone)
    }

    fn send_response(&mut self, head: (u16, Fields), end: bool) -> Result<(), ClientGone> {
        let (status, fields) = head;
        self.conn.send_response(self.id, status, fields.iter(), end).map_err(|_| ClientGone)?;
        self.head_sent.set(true);
        Ok(())
    }

    async fn send_body(&mut self, data: &[u8], end: bool) -> Result<(), ClientGone> {
        self.conn.send_all(self.id, data, end).await.map_err(|_| ClientGone)
    }

    fn tunnel_flows<'t>(
        &'t mut self,
        tunnel: &'t Tunnel<'_>,
        conn: &'t mut UpstreamConn,
    ) -> (impl Future<Output = Flow> + 't, impl Future<Output = Flow> + 't) {
        let (client, id) = (&*self.conn, self.id);
        let UpstreamConn { r, buf, w, .. } = conn;
        (websocket::up(tunnel, client, id, w), websocket::down(tunnel, r, buf, client, id))
    }

    fn head_sent(&self) -> bool {
        self.head_sent.get()
    }

    fn reset(&mut self, code: ErrorCode) {
        self.conn.reset(self.id, code);
    }

    fn answer_grpc(&mut self, answer: &Synthetic, note: &ExchangeNote) {
        let status = answer.grpc_status.as_u16().to_string();
        let (status_fields, status_bytes) = grpc_status_fields(answer, &status);
        let content_type = Field::new(b"content-type", b"application/grpc");
        // `:status`, `content-type: application/grpc` and the status fields.
        note.sent(":status".len() as u64 + 3 + 28 + status_bytes);
        let fields = [content_type].into_iter().chain(status_fields);
        let _ = self.conn.send_response(self.id, 200, fields, true);
    }

    fn answer_grpc_trailers(&mut self, answer: &Synthetic, note: &ExchangeNote) {
        let status = answer.grpc_status.as_u16().to_string();
        let (status_fields, status_bytes) = grpc_status_fields(answer, &status);
        note.sent(status_bytes);
        let _ = self.conn.send_trailers(self.id, status_fields);
    }

    fn answer_http(&mut self, answer: &Synthetic, note: &ExchangeNote) {
        let length = answer.body.len().to_string();
        let fields = [
            Field::new(b"content-type", b"text/plain"),
            Field::new(b"content-length", length.as_bytes()),
        ];
        // `content-type: text/plain` and `content-length`.
        note.sent(":status".len() as u64 + 3 + 36 + length.len() as u64);
        note.sent(answer.body.len() as u64);
        if self.conn.send_response(self.id, answer.status, fields, false).is_ok() {
            // A few bytes: the stream's send buffer takes them whole.
            let _ = self.conn.send_body_now(self.id, answer.body.as_bytes());
        }
    }

    /// One attempt on an h2c/h2 backend: a stream on one of this worker's sessions to it.
    async fn attempt_h2(call: &mut Call<'_, Self>, index: usize, up: &Upstream) -> Attempt<Self> {
        let timeouts = &call.epoch.epoch.timeouts;
        let leased = std::pin::pin!(up.lease_h2n(&call.ctx.http2, timeouts.upstream_connect()));
        let lease = call.lease(index, up, leased).await?;
        let session = lease.session();
        let headers_only = call.headers_only;
        let fields = call.stream.request.upstream_fields(&up.backend.url.authority);
        let Ok(up_id) = session.open(fields, headers_only) else {
            return Err(AttemptError::Refused);
        };
        let _upstream = Attached(session, up_id);
        session.relay_to(up_id, &call.stream.conn, call.stream.id);
        // Counted until the backend's response has ended (not until the client has it).
        let in_flight = Cell::new(Some(up.stats.begin()));
        let _span = call.note.phase("upstream_exchange");
        let started = fulcrum_util::now();
        let (conn, id, note, replay, grpc) =
            (&call.stream.conn, call.stream.id, call.note, &call.stream.replay, call.grpc);
        let capture = &mut *call.capture;
        let head_sent = &call.stream.head_sent;
        let response_alarm = call.stream.alarm(timeouts.upstream_response());

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
            let head = poll_fn(|cx| session.poll_head(up_id, cx));
            let client_reset = poll_fn(|cx| conn.poll_reset(id, cx));
            let head = h2call::wait_head(grpc, response_alarm, head, client_reset).await?;
            let head = head.map_err(head_failed)?;
            replay.borrow_mut().stop();
            let (status, at, grpc_status, bytes) = match &head {
                Head::Fields(status, fields) => (
                    *status,
                    fulcrum_util::now(),
                    // A trailers-only response carries its grpc-status in the head.
                    fields.get(b"grpc-status").and_then(parse_grpc_status),
                    response_head_bytes(fields),
                ),
                Head::Relayed(h) => (h.status, h.at, h.grpc_status, h.bytes),
            };
            up.response_head(note, status, started, at);
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

        // The client is gone when its side failed, not the backend's.
        let (send, relay) = (std::pin::pin!(send), std::pin::pin!(relay));
        h2call::relay_both(send, relay, headers_only, |e| e == PumpError::Src).await
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
