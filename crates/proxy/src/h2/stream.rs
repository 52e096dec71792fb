//! One HTTP/2 stream from a client, forwarded through the attempt loop to the backend its own
//! pick chose: an h2c backend over a multiplexed upstream session (here), or an HTTP/1.1
//! backend through the HTTP/1.1 codec (`crate::h2call`, shared with the native engine). Runs in
//! the stream's own task on the worker's thread.
//!
//! Request and response flow at once (bidirectional streaming), each DATA chunk moved only
//! when the receiving side granted capacity and released on the sending side afterwards, so a
//! slow reader back-pressures the writer through both hops' windows. END_STREAM rides on the
//! last DATA frame when the client's did; that last chunk is queued without waiting (h2 sends
//! it as the window allows, and its capacity returns to the sender only when the stream ends),
//! so a unary request's HEADERS and DATA leave together. Resets cross in both directions: a
//! client RST_STREAM cancels the upstream stream, a backend RST_STREAM is passed on with its
//! reason. A stream the backend refused is sent again elsewhere while the request bytes seen
//! so far are still held (at most [`REPLAY_LIMIT`]).

use std::cell::RefCell;
use std::future::{Future, poll_fn};
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use fulcrum_http::Synthetic;
use fulcrum_http::grpc::{GRPC_TIMEOUT, grpc_status, is_grpc, parse_grpc_timeout};
use fulcrum_http::h1::{BackendResponse, BodyTap as _, H2RequestHead};
use h2::server::SendResponse;
use h2::{Reason, RecvStream, SendStream};
use http::header::Entry;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response};

use super::server::ConnState;
use super::websocket;
use crate::attempt::AttemptError;
use crate::ctx::{WorkerCtx, WorkerEpoch};
use crate::error::ProxyError;
use crate::exchange::ExchangeNote;
use crate::h2call::{
    self, Attempt, Call, ClientGone, ClientStream, ExtendedConnect, Next, Open, Opened,
};
use crate::route;
use crate::transport::ConnInfo;
use crate::tunnel::{Flow, Tunnel};
use crate::upstream::h2::Lease;
use crate::upstream::{Upstream, UpstreamConn};

/// Header names used on every stream, built at compile time: a lookup by `&str` parses and
/// validates the name on each call.
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

/// Request bytes kept for a resend on another connection until the response head arrives.
pub const REPLAY_LIMIT: usize = 64 * 1024;

/// How a call on this engine ended early.
type Fail = h2call::Fail<Reason>;

/// Which side of a [`pump`] failed.
#[derive(Debug)]
enum PumpError {
    /// Reading from the source stream.
    Src(h2::Error),
    /// Writing to the destination stream (or it was reset).
    Dst,
}

/// A request stream the client opened: its request and its answer channel, as h2 accepted
/// them. Served by `h2call::serve`.
pub(crate) struct NewStream {
    /// The client connection.
    pub(crate) conn: Rc<ConnState>,
    /// The request, its body the stream's DATA.
    pub(crate) req: Request<RecvStream>,
    /// Where the response goes.
    pub(crate) respond: SendResponse<Bytes>,
}

impl Open for NewStream {
    type Stream = H2Stream;

    fn open(self, ctx: &WorkerCtx, epoch: &WorkerEpoch) -> Opened<H2Stream> {
        let NewStream { conn, req, respond } = self;
        let grpc = is_grpc(req.headers());
        let deadline = req
            .headers()
            .get(GRPC_TIMEOUT)
            .filter(|_| grpc)
            .and_then(|v| parse_grpc_timeout(v.as_bytes()));
        let (mut parts, body) = req.into_parts();
        // Each stream is routed on its own pseudo-headers and fields.
        let routed = route::h2(epoch.epoch.routes(), &parts, grpc, conn.info.sni());
        let (log, traceparent) = ctx.telemetry.begin_stream(
            parts.method.as_str(),
            parts.uri.path_and_query().map_or("/", |p| p.as_str()),
            parts.headers.get(TRACEPARENT).map(HeaderValue::as_bytes),
            request_head_bytes(&parts),
            epoch.epoch.id,
            &conn.info,
        );
        // A traced stream is forwarded with Fulcrum's span as the parent.
        if let Some(v) = traceparent.and_then(|v| HeaderValue::from_str(&v).ok()) {
            parts.headers.insert(TRACEPARENT, v);
        }
        // Added once to the request itself (every attempt and either backend protocol sends
        // it), where the decoded map usually has room, rather than to each attempt's copy.
        append_forwarded_for(&mut parts.headers, &conn.client_ip);
        let headers_only = body.is_end_stream();
        // RFC 8441 extended CONNECT: only `websocket` is enabled (and only when it is passed).
        let protocol = (parts.method == http::Method::CONNECT)
            .then(|| parts.extensions.get::<h2::ext::Protocol>())
            .flatten();
        let connect = ExtendedConnect::of(protocol.map(|p| p.as_str().as_bytes()));
        let replay =
            RefCell::new(Replay { recording: true, ended: headers_only, ..Default::default() });
        let stream = H2Stream { conn, parts, body, respond, down: None, replay };
        Opened { routed, log, stream, grpc, deadline, headers_only, connect }
    }
}

/// The size of a header block as HPACK counts it before compression (name and value bytes;
/// the 32-byte per-field overhead is left out).
pub(super) fn header_bytes(headers: &HeaderMap) -> u64 {
    headers.iter().map(|(n, v)| (n.as_str().len() + v.len()) as u64).sum()
}

/// The size of a request's header block, pseudo-headers included (the record's `bytes_in`
/// starts with it).
fn request_head_bytes(parts: &http::request::Parts) -> usize {
    let path = parts.uri.path_and_query().map_or(1, |p| p.as_str().len());
    let authority = parts.uri.authority().map_or(0, |a| a.as_str().len());
    let pseudo = ":method".len() + parts.method.as_str().len() + ":path".len() + path;
    let pseudo = pseudo + if authority > 0 { ":authority".len() + authority } else { 0 };
    pseudo + header_bytes(&parts.headers) as usize
}

/// The size of a response's header block, `:status` included.
pub(super) fn response_head_bytes(headers: &HeaderMap) -> u64 {
    ":status".len() as u64 + 3 + header_bytes(headers)
}

/// The request bytes seen so far, kept until the response head so a refused stream can be
/// sent again.
#[derive(Debug, Default)]
pub(super) struct Replay {
    chunks: Vec<Bytes>,
    bytes: usize,
    /// Still recording (no response head yet, under the limit, nothing forwarded unrecorded).
    recording: bool,
    /// The request body and trailers are all in `chunks` / `trailers`.
    ended: bool,
    trailers: Option<HeaderMap>,
}

impl Replay {
    fn record(&mut self, chunk: &Bytes) {
        if !self.recording {
            return;
        }
        if self.bytes + chunk.len() > REPLAY_LIMIT {
            self.stop();
        } else {
            self.bytes += chunk.len();
            self.chunks.push(chunk.clone());
        }
    }

    /// Stops recording and forgets what was kept: the request can no longer be sent again.
    pub(super) fn stop(&mut self) {
        self.recording = false;
        self.chunks = Vec::new();
        self.trailers = None;
    }
}

/// One client stream on the hyperium `h2` engine: its request, its answer channel, and what
/// was seen of its body.
pub(crate) struct H2Stream {
    conn: Rc<ConnState>,
    parts: http::request::Parts,
    body: RecvStream,
    respond: SendResponse<Bytes>,
    /// The response stream, once its head went out.
    down: Option<SendStream<Bytes>>,
    replay: RefCell<Replay>,
}

/// A stream's alarm on this engine: a timer entry of its own, boxed and made only when polled
/// (monoio's entry is cache-line aligned, 128 bytes, which inline would make every stream's
/// allocation an aligned one).
async fn boxed_sleep(limit: Duration) {
    Box::pin(monoio::time::sleep(limit)).await
}

impl ClientStream for H2Stream {
    type Code = Reason;
    type Head = Response<()>;
    type Chunk = Bytes;

    const CANCEL: Reason = Reason::CANCEL;
    const INTERNAL_ERROR: Reason = Reason::INTERNAL_ERROR;

    fn info(&self) -> &ConnInfo {
        &self.conn.info
    }

    fn method(&self) -> &[u8] {
        self.parts.method.as_str().as_bytes()
    }

    fn request_head(&self) -> H2RequestHead<'_> {
        H2RequestHead::of(&self.parts)
    }

    fn fields(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.parts.headers.iter().map(|(n, v)| (n.as_str().as_bytes(), v.as_bytes()))
    }

    fn content_length(&self) -> Option<&[u8]> {
        self.parts.headers.get(http::header::CONTENT_LENGTH).map(HeaderValue::as_bytes)
    }

    fn replayable(&self) -> bool {
        self.replay.borrow().recording
    }

    fn stop_replay(&self) {
        self.replay.borrow_mut().stop();
    }

    fn chunk_buf() -> Bytes {
        Bytes::new()
    }

    async fn next_chunk(&mut self, chunk: &mut Bytes) -> Next {
        match self.body.data().await {
            Some(Ok(c)) => {
                *chunk = c;
                Next::Data
            }
            Some(Err(e)) if e.is_reset() && e.is_remote() => Next::Reset,
            Some(Err(_)) => Next::Gone,
            None => {
                // The body is over: only its trailers (if any) are left, already received.
                let _ = self.body.trailers().await;
                Next::End
            }
        }
    }

    fn release(&mut self, n: usize) {
        let _ = self.body.flow_control().release_capacity(n);
    }

    fn count_reset(&self) {
        self.conn.client_reset();
    }

    fn alarm(&self, limit: Duration) -> impl Future<Output = ()> + 'static {
        boxed_sleep(limit)
    }

    fn response_head(res: &BackendResponse<'_>, upgrade: bool) -> Option<Response<()>> {
        let mut head = res.to_h2().ok()?;
        if upgrade {
            *head.status_mut() = http::StatusCode::OK;
            head.headers_mut().remove("sec-websocket-accept");
        }
        Some(head)
    }

    fn status(head: &Response<()>) -> u16 {
        head.status().as_u16()
    }

    fn head_bytes(head: &Response<()>) -> u64 {
        response_head_bytes(head.headers())
    }

    fn send_interim(&mut self, head: Response<()>) -> Result<(), ClientGone> {
        self.respond.send_informational(head).map_err(|_| ClientGone)
    }

    fn send_response(&mut self, head: Response<()>, end: bool) -> Result<(), ClientGone> {
        let d = self.respond.send_response(head, end).map_err(|_| ClientGone)?;
        self.down = Some(d);
        Ok(())
    }

    async fn send_body(&mut self, data: &[u8], end: bool) -> Result<(), ClientGone> {
        let Some(d) = self.down.as_mut() else { return Err(ClientGone) };
        send_data(d, Bytes::copy_from_slice(data), end).await.map_err(|_| ClientGone)
    }

    fn tunnel_flows<'t>(
        &'t mut self,
        tunnel: &'t Tunnel<'_>,
        conn: &'t mut UpstreamConn,
    ) -> (impl Future<Output = Flow> + 't, impl Future<Output = Flow> + 't) {
        let (down, UpstreamConn { r, buf, w, .. }) = (self.down.as_mut(), conn);
        let up_flow = websocket::up(tunnel, &mut self.body, w);
        let down_flow = async move {
            match down {
                Some(d) => websocket::down(tunnel, r, buf, d).await,
                None => Flow::Broken,
            }
        };
        (up_flow, down_flow)
    }

    fn head_sent(&self) -> bool {
        self.down.is_some()
    }

    fn reset(&mut self, code: Reason) {
        match self.down.as_mut() {
            Some(d) => d.send_reset(code),
            None => self.respond.send_reset(code),
        }
    }

    fn answer_grpc(&mut self, answer: &Synthetic, note: &ExchangeNote) {
        let res = answer.to_grpc();
        note.sent(response_head_bytes(res.headers()));
        let _ = self.respond.send_response(res, true);
    }

    fn answer_grpc_trailers(&mut self, answer: &Synthetic, note: &ExchangeNote) {
        let t = answer.grpc_trailers();
        note.sent(header_bytes(&t));
        if let Some(d) = self.down.as_mut() {
            let _ = d.send_trailers(t);
        }
    }

    fn answer_http(&mut self, answer: &Synthetic, note: &ExchangeNote) {
        let res = answer.to_h2();
        note.sent(response_head_bytes(res.headers()) + answer.body.len() as u64);
        if let Ok(mut s) = self.respond.send_response(res, false) {
            let _ = s.send_data(Bytes::from_static(answer.body.as_bytes()), true);
        }
    }

    /// One attempt on an h2c backend: a stream on one of this worker's sessions to it.
    async fn attempt_h2(call: &mut Call<'_, Self>, index: usize, up: &Upstream) -> Attempt<Self> {
        let timeouts = &call.epoch.epoch.timeouts;
        let leased = std::pin::pin!(up.lease_h2(&call.ctx.http2, timeouts.upstream_connect()));
        let lease = call.lease(index, up, leased).await?;
        let request = upstream_request(&call.stream.parts, &up.backend.url.authority)?;
        let Ok(mut sender) = lease.sender().ready().await else {
            lease.session().mark_closed();
            return Err(AttemptError::Refused);
        };
        let headers_only = call.headers_only;
        let Ok((response, mut up_send)) = sender.send_request(request, headers_only) else {
            lease.session().mark_closed();
            return Err(AttemptError::Refused);
        };
        // Counted until the backend's response has ended (not until the client has it).
        let in_flight = std::cell::Cell::new(Some(up.stats.begin()));
        let _span = call.note.phase("upstream_exchange");
        let started = fulcrum_util::now();
        let response_alarm = call.stream.alarm(timeouts.upstream_response());
        let note = call.note;
        let replay = &call.stream.replay;
        let body = &mut call.stream.body;
        let capture = &mut *call.capture;
        let respond = &mut call.stream.respond;
        let down = &mut call.stream.down;
        let conn = &*call.stream.conn;
        let grpc = call.grpc;

        // The request side: what was already seen (after a refused attempt), then the rest.
        let send = async {
            if headers_only {
                return Ok(());
            }
            let (chunks, ended, trailers) = {
                let r = replay.borrow();
                (r.chunks.clone(), r.ended, r.trailers.clone())
            };
            let n = chunks.len();
            for (k, chunk) in chunks.into_iter().enumerate() {
                let last = ended && trailers.is_none() && k + 1 == n;
                send_data(&mut up_send, chunk, last).await.map_err(|_| PumpError::Dst)?;
            }
            if ended {
                return match trailers {
                    Some(t) => up_send.send_trailers(t).map_err(|_| PumpError::Dst),
                    None if n == 0 => {
                        up_send.send_data(Bytes::new(), true).map_err(|_| PumpError::Dst)
                    }
                    None => Ok(()),
                };
            }
            // Chunks resent from `replay` were captured when they first arrived.
            pump(body, &mut up_send, Some(replay), |c| capture.tap(c), |_| {}, || {}).await
        };

        // The response side: the head, then the body and trailers.
        let relay = async {
            let client_reset = async {
                let _ = poll_fn(|cx| respond.poll_reset(cx)).await;
                // RST_STREAM from the client: it counts against the rapid-reset cap.
                conn.client_reset();
            };
            let head = h2call::wait_head(grpc, response_alarm, response, client_reset).await?;
            let res = match head {
                Ok(res) => res,
                Err(e) => return Err(upstream_failed(&lease, &e)),
            };
            replay.borrow_mut().stop();
            up.response_head(note, res.status().as_u16(), started, fulcrum_util::now());
            let _respond = note.phase("respond");
            // A trailers-only response carries its grpc-status in the headers.
            if let Some(code) = grpc_status(res.headers()) {
                note.set_grpc_status(code);
            }
            note.sent(response_head_bytes(res.headers()));
            let (head, mut res_body) = res.into_parts();
            let eos = res_body.is_end_stream();
            if eos {
                in_flight.take();
            }
            let d = respond
                .send_response(Response::from_parts(head, ()), eos)
                .map_err(|_| AttemptError::Fail(Fail::ClientGone))?;
            if eos {
                return Ok(());
            }
            let d = down.insert(d);
            let on_trailers = |t: &HeaderMap| {
                note.sent(header_bytes(t));
                if let Some(code) = grpc_status(t) {
                    note.set_grpc_status(code);
                }
            };
            let ended = || drop(in_flight.take());
            let sent = |c: &[u8]| note.sent(c.len() as u64);
            match pump(&mut res_body, d, None, sent, on_trailers, ended).await {
                Ok(()) => Ok(()),
                Err(PumpError::Dst) => Err(AttemptError::Fail(Fail::ClientGone)),
                Err(PumpError::Src(e)) => match upstream_failed(&lease, &e) {
                    AttemptError::Fail(f) => Err(AttemptError::Fail(f)),
                    // The response had started: nothing can be sent again.
                    _ => Err(AttemptError::Fail(
                        ProxyError::BadGateway("upstream connection lost").into(),
                    )),
                },
            }
        };

        // The client is gone when its side failed, not the backend's.
        let gone = |e| match e {
            PumpError::Dst => false,
            PumpError::Src(e) => {
                if e.is_reset() && e.is_remote() {
                    conn.client_reset();
                }
                true
            }
        };
        let (send, relay) = (std::pin::pin!(send), std::pin::pin!(relay));
        h2call::relay_both(send, relay, headers_only, gone).await
    }
}

/// Classifies an upstream stream error: refused (retry), reset (pass on) or lost.
fn upstream_failed(lease: &Lease, e: &h2::Error) -> AttemptError<Fail> {
    if e.is_go_away() && e.is_remote() {
        lease.session().mark_closed();
        return AttemptError::Refused;
    }
    if e.is_reset() && e.is_remote() {
        return match e.reason() {
            Some(Reason::REFUSED_STREAM) => AttemptError::Refused,
            Some(reason) => AttemptError::Fail(Fail::UpstreamReset(reason)),
            None => AttemptError::Fail(Fail::UpstreamReset(Reason::INTERNAL_ERROR)),
        };
    }
    lease.session().mark_closed();
    AttemptError::Fail(ProxyError::BadGateway("upstream connection lost").into())
}

/// The request for an h2c backend: the client's method, URI and headers (`x-forwarded-for`
/// already among them).
fn upstream_request(
    parts: &http::request::Parts,
    backend_authority: &str,
) -> Result<Request<()>, Fail> {
    let uri = if parts.uri.scheme().is_some() && parts.uri.authority().is_some() {
        parts.uri.clone()
    } else {
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        http::Uri::builder()
            .scheme("http")
            .authority(backend_authority)
            .path_and_query(path)
            .build()
            .map_err(|_| Fail::Error(ProxyError::BadGateway("invalid request URI")))?
    };
    let mut req = Request::new(());
    *req.method_mut() = parts.method.clone();
    *req.uri_mut() = uri;
    *req.version_mut() = http::Version::HTTP_2;
    *req.headers_mut() = parts.headers.clone();
    Ok(req)
}

/// Folds existing `x-forwarded-for` values and the client (its address as a header value, made
/// once per connection) into one header. Without an incoming one this is a single insert.
pub(super) fn append_forwarded_for(headers: &mut HeaderMap, client: &HeaderValue) {
    match headers.entry(X_FORWARDED_FOR) {
        Entry::Vacant(e) => {
            e.insert(client.clone());
        }
        Entry::Occupied(mut e) => {
            let mut value = Vec::new();
            for v in e.iter() {
                value.extend_from_slice(v.as_bytes());
                value.extend_from_slice(b", ");
            }
            value.extend_from_slice(client.as_bytes());
            if let Ok(v) = HeaderValue::from_bytes(&value) {
                e.insert(v);
            }
        }
    }
}

/// Moves a stream's DATA and trailers from `src` to `dst`, chunk by chunk, under flow control.
/// `on_data` sees each DATA payload and `on_trailers` the trailers, as they pass; `on_end` runs
/// once the source has ended, before its last frame is sent on.
async fn pump(
    src: &mut RecvStream,
    dst: &mut SendStream<Bytes>,
    replay: Option<&RefCell<Replay>>,
    mut on_data: impl FnMut(&[u8]),
    on_trailers: impl FnOnce(&HeaderMap),
    on_end: impl FnOnce(),
) -> Result<(), PumpError> {
    loop {
        // Data first: when it is already there the reset watch is not registered (a registered
        // one is woken for nothing when h2 opens or closes the stream).
        let next = monoio::select! {
            biased;
            d = src.data() => d,
            _ = poll_fn(|cx| dst.poll_reset(cx)) => return Err(PumpError::Dst),
        };
        let chunk = match next {
            Some(Ok(chunk)) => chunk,
            Some(Err(e)) => return Err(PumpError::Src(e)),
            None => break,
        };
        let len = chunk.len();
        let end = src.is_end_stream();
        on_data(&chunk);
        if let Some(r) = replay {
            let mut r = r.borrow_mut();
            r.record(&chunk);
            r.ended = end;
        }
        if end {
            on_end();
            // The chunk that ends the stream is queued at once instead of after waiting for
            // the peer's window. h2 still sends it only as that window allows and nothing
            // follows it on this stream; its receive capacity is not released here but by h2
            // when the stream is dropped, so the sender's connection window still bounds what
            // is buffered. For a unary call the request's DATA then leaves with its HEADERS:
            // the upstream stream is not open yet when the call is forwarded, and waiting for
            // capacity cost a second pass of the connection and a wake-up of this task.
            return dst.send_data(chunk, true).map_err(|_| PumpError::Dst);
        }
        send_data(dst, chunk, false).await.map_err(|_| PumpError::Dst)?;
        let _ = src.flow_control().release_capacity(len);
    }
    let trailers = monoio::select! {
        biased;
        t = src.trailers() => t.map_err(PumpError::Src)?,
        _ = poll_fn(|cx| dst.poll_reset(cx)) => return Err(PumpError::Dst),
    };
    if let Some(r) = replay {
        let mut r = r.borrow_mut();
        r.ended = true;
        if r.recording {
            r.trailers = trailers.clone();
        }
    }
    on_end();
    match trailers {
        Some(t) => {
            on_trailers(&t);
            dst.send_trailers(t).map_err(|_| PumpError::Dst)
        }
        None => dst.send_data(Bytes::new(), true).map_err(|_| PumpError::Dst),
    }
}

/// Sends `data` as the peer's window allows: reserve, wait for capacity, send what fits.
pub(super) async fn send_data(
    dst: &mut SendStream<Bytes>,
    mut data: Bytes,
    end: bool,
) -> Result<(), h2::Error> {
    if data.is_empty() {
        return dst.send_data(data, end);
    }
    while !data.is_empty() {
        dst.reserve_capacity(data.len());
        let granted = match poll_fn(|cx| dst.poll_capacity(cx)).await {
            Some(Ok(n)) => n,
            Some(Err(e)) => return Err(e),
            None => return Err(h2::Error::from(Reason::STREAM_CLOSED)),
        };
        if granted == 0 {
            continue;
        }
        let chunk = data.split_to(granted.min(data.len()));
        dst.send_data(chunk, end && data.is_empty())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_for_is_added_or_folded() {
        let client = HeaderValue::from_static("127.0.0.1");
        let mut h = HeaderMap::new();
        append_forwarded_for(&mut h, &client);
        assert_eq!(h.get_all("x-forwarded-for").iter().collect::<Vec<_>>(), ["127.0.0.1"]);

        let mut h = HeaderMap::new();
        h.append("x-forwarded-for", HeaderValue::from_static("203.0.113.7"));
        h.append("x-forwarded-for", HeaderValue::from_static("198.51.100.1"));
        append_forwarded_for(&mut h, &client);
        assert_eq!(
            h.get_all("x-forwarded-for").iter().collect::<Vec<_>>(),
            ["203.0.113.7, 198.51.100.1, 127.0.0.1"]
        );
    }
}
