//! One HTTP/2 stream from a client, forwarded to the backend its own pick chose.
//!
//! Request and response flow at once (bidirectional streaming), each DATA chunk moved only
//! when the receiving side granted capacity and released on the sending side afterwards, so a
//! slow reader back-pressures the writer through both hops' windows. END_STREAM rides on the
//! last DATA frame when the client's did; that last chunk is queued without waiting (h2 sends
//! it as the window allows, and its capacity returns to the sender only when the stream ends),
//! so a unary request's HEADERS and DATA leave together. Resets cross in both directions: a
//! client RST_STREAM cancels the upstream stream, a backend RST_STREAM is passed on with its
//! reason. A stream the backend refused (GOAWAY beyond its last stream id, REFUSED_STREAM) is
//! sent again elsewhere while the request bytes seen so far are still held (at most
//! [`REPLAY_LIMIT`]).

use std::cell::RefCell;
use std::future::poll_fn;
use std::rc::Rc;
use std::time::Instant;

use bytes::Bytes;
use h2::server::SendResponse;
use h2::{Reason, RecvStream, SendStream};
use http::header::Entry;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response};
use monoio::time::timeout;

use super::client::{Lease, LeaseError};
use super::server::ConnState;
use super::{is_grpc, parse_grpc_timeout};
use crate::balance::stats::now_ms;
use crate::config::BackendProtocol;
use crate::proxy::body::BodyError;
use crate::proxy::error::{ErrorAction, ErrorReply, ProxyError};
use crate::proxy::pool::{QueueError, Upstream};
use crate::proxy::retry::RetryReason;
use crate::telemetry::BodyTap as _;
use crate::telemetry::CacheStatus;
use crate::telemetry::exchange::{BodyCapture, ExchangeNote};
use crate::worker::{WorkerCtx, WorkerEpoch};

/// Header names used on every stream, built at compile time: a lookup by `&str` parses and
/// validates the name on each call.
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");
const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
const GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");
const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

/// Request bytes kept for a resend on another connection until the response head arrives.
pub const REPLAY_LIMIT: usize = 64 * 1024;

/// How a call ended early.
#[derive(Debug)]
pub enum Fail {
    /// Fulcrum failed the call: answer through the one error mapping.
    Error(ProxyError),
    /// The client reset the stream or its connection is gone: nothing to answer.
    ClientGone,
    /// The backend reset its stream: pass the reset on with the same reason.
    UpstreamReset(Reason),
}

impl From<ProxyError> for Fail {
    fn from(e: ProxyError) -> Self {
        Fail::Error(e)
    }
}

/// Which side of a [`pump`] failed.
#[derive(Debug)]
enum PumpError {
    /// Reading from the source stream.
    Src(h2::Error),
    /// Writing to the destination stream (or it was reset).
    Dst(#[allow(dead_code)] h2::Error),
}

/// Serves one client stream to its end, and logs it: one access record, the metrics, the
/// spans (as for an HTTP/1.1 exchange).
pub async fn serve_stream(
    ctx: &Rc<WorkerCtx>,
    conn: &Rc<ConnState>,
    req: Request<RecvStream>,
    mut respond: SendResponse<Bytes>,
) {
    let epoch = ctx.current_epoch();
    let _busy = ctx.busy();
    let grpc = is_grpc(req.headers());
    let deadline = req
        .headers()
        .get(GRPC_TIMEOUT)
        .filter(|_| grpc)
        .and_then(|v| parse_grpc_timeout(v.as_bytes()));
    let (mut parts, body) = req.into_parts();
    let (mut log, traceparent) = ctx.telemetry.begin_stream(
        parts.method.as_str(),
        parts.uri.path_and_query().map_or("/", |p| p.as_str()),
        parts.headers.get(TRACEPARENT).map(HeaderValue::as_bytes),
        request_head_bytes(&parts),
        epoch.epoch.id,
    );
    // A traced stream is forwarded with Fulcrum's span as the parent.
    if let Some(v) = traceparent.and_then(|v| HeaderValue::from_str(&v).ok()) {
        parts.headers.insert(TRACEPARENT, v);
    }
    // Added once to the request itself (every attempt and either backend protocol sends it),
    // where the decoded map usually has room, rather than to each attempt's copy.
    append_forwarded_for(&mut parts.headers, &conn.client_ip);
    if grpc {
        log.capture.set_binary();
    }
    // HTTP/2 responses (gRPC above all) are never cached.
    if epoch.epoch.cache.enabled {
        log.note.set_cache(CacheStatus::Bypass);
    }
    let mut down: Option<SendStream<Bytes>> = None;
    let call = Call { ctx, epoch: &epoch, conn, grpc, note: &log.note };
    let result = {
        // Pinned here so the deadline wraps a reference: the call's (large) future is stored
        // once in this one, not once bare and once inside the timeout.
        let run = std::pin::pin!(call.run(&parts, body, &mut log.capture, &mut respond, &mut down));
        match deadline {
            // The timer is boxed (and only made when the call has a deadline): monoio's timer
            // entry is cache-line aligned (128 bytes), which inline would make every stream
            // task an aligned allocation.
            Some(limit) => match Box::pin(timeout(limit, run)).await {
                Ok(r) => r,
                Err(_) => Err(Fail::Error(ProxyError::DeadlineExceeded)),
            },
            None => run.await,
        }
    };
    if let Err(Fail::Error(ProxyError::Client(BodyError::TooSlow))) = &result {
        ctx.telemetry.metrics.body_too_slow();
    }
    let status = match result {
        Ok(()) => log.note.status(),
        Err(fail) => finish_failed(fail, grpc, &mut respond, down.as_mut(), &log.note),
    };
    let backend = epoch.metrics_of(log.note.backend());
    ctx.telemetry.finish(log, backend, status);
}

/// Answers a failed call: before the response head, through the error mapping; after it, with
/// gRPC trailers or a reset. Returns the HTTP status the client got (499: none, the stream was
/// reset before a response head) and notes the gRPC status Fulcrum generated.
fn finish_failed(
    fail: Fail,
    grpc: bool,
    respond: &mut SendResponse<Bytes>,
    down: Option<&mut SendStream<Bytes>>,
    note: &ExchangeNote,
) -> u16 {
    // After a response head the client has its status; before one, a reset gives it none.
    let head_sent = down.is_some();
    let relayed = if head_sent { note.status() } else { 499 };
    let error = match fail {
        Fail::ClientGone => {
            match down {
                Some(d) => d.send_reset(Reason::CANCEL),
                None => respond.send_reset(Reason::CANCEL),
            }
            return relayed;
        }
        Fail::UpstreamReset(reason) => {
            match down {
                Some(d) => d.send_reset(reason),
                None => respond.send_reset(reason),
            }
            return if head_sent { relayed } else { 502 };
        }
        Fail::Error(e) => e,
    };
    match (error.reply(grpc), down) {
        (ErrorReply::Grpc { code, message }, None) => {
            let mut res = Response::new(());
            let h = res.headers_mut();
            h.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
            h.insert(GRPC_STATUS, HeaderValue::from(code as u16));
            h.insert(GRPC_MESSAGE, HeaderValue::from_static(message));
            note.set_grpc_status(code as u32);
            note.sent(response_head_bytes(res.headers()));
            let _ = respond.send_response(res, true);
            200
        }
        (ErrorReply::Grpc { code, message }, Some(d)) => {
            let mut t = HeaderMap::new();
            t.insert(GRPC_STATUS, HeaderValue::from(code as u16));
            t.insert(GRPC_MESSAGE, HeaderValue::from_static(message));
            note.set_grpc_status(code as u32);
            note.sent(header_bytes(&t));
            let _ = d.send_trailers(t);
            relayed
        }
        (ErrorReply::Http(action), None) => match action.status_and_body() {
            Some((status, body)) => {
                let mut res = Response::new(());
                *res.status_mut() = http::StatusCode::from_u16(status)
                    .unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
                let h = res.headers_mut();
                h.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
                h.insert(http::header::CONTENT_LENGTH, HeaderValue::from(body.len()));
                note.sent(response_head_bytes(res.headers()) + body.len() as u64);
                if let Ok(mut s) = respond.send_response(res, false) {
                    let _ = s.send_data(Bytes::from_static(body), true);
                }
                status
            }
            None => {
                respond.send_reset(Reason::CANCEL);
                499
            }
        },
        (ErrorReply::Http(ErrorAction::Close), Some(d)) => {
            d.send_reset(Reason::CANCEL);
            relayed
        }
        (ErrorReply::Http(_), Some(d)) => {
            d.send_reset(Reason::INTERNAL_ERROR);
            relayed
        }
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

/// The `grpc-status` of a trailer block (or of trailers-only response headers).
pub(super) fn grpc_status(headers: &HeaderMap) -> Option<u32> {
    let v = headers.get(GRPC_STATUS)?.as_bytes();
    if v.is_empty() || v.len() > 5 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(v.iter().fold(0u32, |n, d| n * 10 + u32::from(d - b'0')))
}

/// The request bytes seen so far, kept until the response head so a refused stream can be
/// sent again.
#[derive(Debug, Default)]
struct Replay {
    chunks: Vec<Bytes>,
    bytes: usize,
    /// Still recording (no response head yet, under the limit).
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
    fn stop(&mut self) {
        self.recording = false;
        self.chunks = Vec::new();
        self.trailers = None;
    }
}

/// How one attempt on one backend ended, when it did not answer the client.
pub(super) enum Retry {
    /// Nothing was processed upstream: try again (another session or backend), within
    /// `retries.max_attempts` and the retry budget.
    Again(RetryReason),
    /// The backend's connection queue is full: nothing was sent, try another backend (not a
    /// retry).
    Busy,
    /// Give up with this.
    Fail(Fail),
}

impl From<Fail> for Retry {
    fn from(f: Fail) -> Self {
        Retry::Fail(f)
    }
}

/// One call on a pinned epoch.
struct Call<'a> {
    ctx: &'a WorkerCtx,
    epoch: &'a WorkerEpoch,
    conn: &'a ConnState,
    grpc: bool,
    /// Telemetry: backend, status, timings and spans of this stream.
    note: &'a ExchangeNote,
}

impl Call<'_> {
    async fn run(
        &self,
        parts: &http::request::Parts,
        mut body: RecvStream,
        capture: &mut BodyCapture,
        respond: &mut SendResponse<Bytes>,
        down: &mut Option<SendStream<Bytes>>,
    ) -> Result<(), Fail> {
        let headers_only = body.is_end_stream();
        let replay =
            RefCell::new(Replay { recording: true, ended: headers_only, ..Default::default() });
        let ups = &self.epoch.upstreams;
        let mut tried = vec![false; ups.len()];
        let mut attempts = 0;
        // Some backend turned the call away because its connection queue was full.
        let mut busy = false;
        self.ctx.retries.record_request();
        loop {
            let pick = self.note.phase("pick");
            let none = || {
                if busy { ProxyError::BackendBusy(QueueError::Full) } else { ProxyError::NoBackend }
            };
            let (i, up) = self.pick(&tried).ok_or_else(none)?;
            drop(pick);
            let outcome = match up.backend.url.protocol {
                BackendProtocol::H2c => {
                    let connect = self.note.phase("upstream_connect");
                    let leased = up
                        .h2
                        .lease(
                            up.backend.url.addr,
                            &self.ctx.http2,
                            self.epoch.epoch.timeouts.upstream_connect(),
                        )
                        .await;
                    drop(connect);
                    let lease = match leased {
                        Ok(lease) => {
                            up.stats.record_connect_success();
                            self.note.set_backend(i);
                            lease
                        }
                        Err(LeaseError::Connect(e)) => {
                            up.connect_failed(
                                self.ctx.index,
                                self.epoch.epoch.health,
                                &e.to_string(),
                            );
                            tried[i] = true;
                            attempts += 1;
                            if !self.retry(attempts, RetryReason::Connect) {
                                return Err(ProxyError::NoBackend.into());
                            }
                            continue;
                        }
                        Err(LeaseError::Retired) => {
                            tried[i] = true;
                            continue;
                        }
                    };
                    self.attempt_h2(
                        up,
                        lease,
                        parts,
                        &mut body,
                        capture,
                        &replay,
                        headers_only,
                        respond,
                        down,
                    )
                    .await
                }
                BackendProtocol::Http1 => {
                    tried[i] = true;
                    // Boxed: the HTTP/1.1 translation is a large future that gRPC calls (the
                    // hot path) never run; inline it would be copied with every stream task.
                    Box::pin(super::to_h1::forward(
                        self.ctx,
                        self.epoch,
                        (i, up),
                        self.conn,
                        self.note,
                        parts,
                        &mut body,
                        capture,
                        respond,
                        down,
                    ))
                    .await
                }
            };
            match outcome {
                Ok(()) => return Ok(()),
                Err(Retry::Fail(f)) => return Err(f),
                Err(Retry::Busy) => busy = true,
                Err(Retry::Again(reason)) => {
                    attempts += 1;
                    let error = match reason {
                        RetryReason::Connect => ProxyError::NoBackend,
                        _ => ProxyError::BadGateway("upstream refused the stream"),
                    };
                    if !replay.borrow().recording || !self.retry(attempts, reason) {
                        return Err(error.into());
                    }
                }
            }
        }
    }

    /// Whether a call that made `attempts` tries may make another (and counts it).
    fn retry(&self, attempts: u32, reason: RetryReason) -> bool {
        self.ctx.retries.allow(attempts, reason, &self.ctx.telemetry.metrics.retries)
    }

    /// Picks a backend not yet tried, not ejected, and able to serve this request (gRPC needs
    /// an h2c backend), preferring those the active health checks have not taken out (failing
    /// open when every candidate is down).
    fn pick(&self, tried: &[bool]) -> Option<(usize, &Upstream)> {
        let ups = &self.epoch.upstreams;
        let now = now_ms();
        let grpc = self.grpc;
        let excluded = |i: usize| {
            tried[i]
                || (grpc && ups[i].backend.url.protocol != BackendProtocol::H2c)
                || ups[i].stats.is_ejected(now)
        };
        let health = |i: usize| &ups[i].backend.health;
        let algorithm = self.epoch.epoch.algorithm;
        let weighted = self.epoch.weighted;
        let i = self.ctx.picker.pick_healthy(algorithm, weighted, ups, excluded, health, now)?;
        Some((i, &*ups[i]))
    }

    #[allow(clippy::too_many_arguments)]
    async fn attempt_h2(
        &self,
        up: &Upstream,
        lease: Lease,
        parts: &http::request::Parts,
        body: &mut RecvStream,
        capture: &mut BodyCapture,
        replay: &RefCell<Replay>,
        headers_only: bool,
        respond: &mut SendResponse<Bytes>,
        down: &mut Option<SendStream<Bytes>>,
    ) -> Result<(), Retry> {
        let request = upstream_request(parts, &up.backend.url.authority)?;
        let mut sender = match lease.sender().ready().await {
            Ok(s) => s,
            Err(_) => {
                lease.session().mark_closed();
                return Err(Retry::Again(RetryReason::Refused));
            }
        };
        let (response, mut up_send) = match sender.send_request(request, headers_only) {
            Ok(pair) => pair,
            Err(_) => {
                lease.session().mark_closed();
                return Err(Retry::Again(RetryReason::Refused));
            }
        };
        let _in_flight = up.stats.begin();
        let _span = self.note.phase("upstream_exchange");
        let started = Instant::now();
        let note = self.note;

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
                send_data(&mut up_send, chunk, last).await.map_err(PumpError::Dst)?;
            }
            if ended {
                return match trailers {
                    Some(t) => up_send.send_trailers(t).map_err(PumpError::Dst),
                    None if n == 0 => up_send.send_data(Bytes::new(), true).map_err(PumpError::Dst),
                    None => Ok(()),
                };
            }
            // Chunks resent from `replay` were captured when they first arrived.
            pump(body, &mut up_send, Some(replay), |c| capture.tap(c), |_| {}).await
        };

        // The response side: the head, then the body and trailers.
        let relay = async {
            // Plain HTTP waits `upstream_response_ms` for the head; gRPC calls (often long-lived
            // streams) are bounded by their own `grpc-timeout` instead.
            let limit = (!self.grpc).then(|| self.epoch.epoch.timeouts.upstream_response());
            let head_wait = async {
                match limit {
                    // Boxed for the same reason as the deadline in `serve_stream`.
                    Some(limit) => Box::pin(timeout(limit, response)).await.ok(),
                    None => Some(response.await),
                }
            };
            let head = monoio::select! {
                biased;
                r = head_wait => match r {
                    Some(r) => r,
                    None => return Err(Retry::Fail(Fail::Error(ProxyError::UpstreamTimeout))),
                },
                _ = poll_fn(|cx| respond.poll_reset(cx)) => {
                    // RST_STREAM from the client: it counts against the rapid-reset cap.
                    self.conn.client_reset();
                    return Err(Retry::Fail(Fail::ClientGone));
                }
            };
            let res = match head {
                Ok(res) => res,
                Err(e) => return Err(self.upstream_failed(&lease, &e)),
            };
            replay.borrow_mut().stop();
            let elapsed = started.elapsed();
            up.stats.record_response_time(now_ms(), elapsed);
            note.response(res.status().as_u16(), elapsed);
            let _respond = note.phase("respond");
            // A trailers-only response carries its grpc-status in the headers.
            if let Some(code) = grpc_status(res.headers()) {
                note.set_grpc_status(code);
            }
            note.sent(response_head_bytes(res.headers()));
            let (head, mut res_body) = res.into_parts();
            let eos = res_body.is_end_stream();
            let d = respond
                .send_response(Response::from_parts(head, ()), eos)
                .map_err(|_| Retry::Fail(Fail::ClientGone))?;
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
            match pump(&mut res_body, d, None, |c| note.sent(c.len() as u64), on_trailers).await {
                Ok(()) => Ok(()),
                Err(PumpError::Dst(_)) => Err(Retry::Fail(Fail::ClientGone)),
                Err(PumpError::Src(e)) => match self.upstream_failed(&lease, &e) {
                    Retry::Again(_) => Err(Retry::Fail(Fail::Error(ProxyError::BadGateway(
                        "upstream connection lost",
                    )))),
                    fail => Err(fail),
                },
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
                        Err(PumpError::Dst(_)) => {}
                        Err(PumpError::Src(e)) => {
                            if e.is_reset() && e.is_remote() {
                                self.conn.client_reset();
                            }
                            return Err(Retry::Fail(Fail::ClientGone));
                        }
                    }
                }
                r = &mut relay => return r,
            }
        }
    }

    /// Classifies an upstream stream error: refused (retry), reset (pass on) or lost.
    fn upstream_failed(&self, lease: &Lease, e: &h2::Error) -> Retry {
        if e.is_go_away() && e.is_remote() {
            lease.session().mark_closed();
            return Retry::Again(RetryReason::Refused);
        }
        if e.is_reset() && e.is_remote() {
            return match e.reason() {
                Some(Reason::REFUSED_STREAM) => Retry::Again(RetryReason::Refused),
                Some(reason) => Retry::Fail(Fail::UpstreamReset(reason)),
                None => Retry::Fail(Fail::UpstreamReset(Reason::INTERNAL_ERROR)),
            };
        }
        lease.session().mark_closed();
        Retry::Fail(Fail::Error(ProxyError::BadGateway("upstream connection lost")))
    }
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
/// `on_data` sees each DATA payload and `on_trailers` the trailers, as they pass.
async fn pump(
    src: &mut RecvStream,
    dst: &mut SendStream<Bytes>,
    replay: Option<&RefCell<Replay>>,
    mut on_data: impl FnMut(&[u8]),
    on_trailers: impl FnOnce(&HeaderMap),
) -> Result<(), PumpError> {
    loop {
        // Data first: when it is already there the reset watch is not registered (a registered
        // one is woken for nothing when h2 opens or closes the stream).
        let next = monoio::select! {
            biased;
            d = src.data() => d,
            r = poll_fn(|cx| dst.poll_reset(cx)) => {
                return Err(PumpError::Dst(match r {
                    Ok(reason) => h2::Error::from(reason),
                    Err(e) => e,
                }));
            }
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
            // The chunk that ends the stream is queued at once instead of after waiting for
            // the peer's window. h2 still sends it only as that window allows and nothing
            // follows it on this stream; its receive capacity is not released here but by h2
            // when the stream is dropped, so the sender's connection window still bounds what
            // is buffered. For a unary call the request's DATA then leaves with its HEADERS:
            // the upstream stream is not open yet when the call is forwarded, and waiting for
            // capacity cost a second pass of the connection and a wake-up of this task.
            return dst.send_data(chunk, true).map_err(PumpError::Dst);
        }
        send_data(dst, chunk, false).await.map_err(PumpError::Dst)?;
        let _ = src.flow_control().release_capacity(len);
    }
    let trailers = monoio::select! {
        biased;
        t = src.trailers() => t.map_err(PumpError::Src)?,
        r = poll_fn(|cx| dst.poll_reset(cx)) => {
            return Err(PumpError::Dst(match r {
                Ok(reason) => h2::Error::from(reason),
                Err(e) => e,
            }));
        }
    };
    if let Some(r) = replay {
        let mut r = r.borrow_mut();
        r.ended = true;
        if r.recording {
            r.trailers = trailers.clone();
        }
    }
    match trailers {
        Some(t) => {
            on_trailers(&t);
            dst.send_trailers(t).map_err(PumpError::Dst)
        }
        None => dst.send_data(Bytes::new(), true).map_err(PumpError::Dst),
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
