//! One HTTP/2 client stream forwarded, written once for both engines (hyperium `h2` and
//! Fulcrum's own): a stream's life from its routing to its access record ([`serve`]), the call
//! the attempt loop forwards ([`Call`] and its [`Forward`] impl), the answer to a failed call
//! ([`finish_failed`]), the attempt on an HTTP/1.1 backend ([`to_h1`]), the steps every
//! attempt on an HTTP/2 backend takes ([`Call::lease`], [`wait_head`], [`relay_both`]) and the
//! count of a client connection's running streams ([`StreamCount`]). Each engine implements
//! [`ClientStream`] for its streams: how the request is read, how the response and failures
//! are sent, the WebSocket tunnel's two directions and the rest of the attempt on an HTTP/2
//! backend. Generic, not `dyn`: each engine gets its own copy of this code, with nothing
//! dispatched at run time. Runs on the worker's thread, in the stream's own task (hyperium
//! engine) or in its client connection's task (native engine).

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::time::{Duration, Instant};

use fulcrum_config::BackendProtocol;
use fulcrum_http::Synthetic;
use fulcrum_http::h1::{BackendResponse, BodyError, H2RequestHead};
use fulcrum_model::Routed;
use fulcrum_telemetry::CacheStatus;
use monoio::buf::IoBuf;

use crate::attempt::{self, AttemptError, Forward};
use crate::ctx::{WorkerCtx, WorkerEpoch};
use crate::error::ProxyError;
use crate::exchange::{BodyCapture, ExchangeLog, ExchangeNote};
use crate::transport::ConnInfo;
use crate::tunnel::{Flow, Tunnel, TunnelReport};
use crate::upstream::{LeaseError, Reuse, Upstream, UpstreamConn};
use crate::websocket::WEBSOCKET;

mod to_h1;

/// How a call ended early. `C` is the engine's RST_STREAM error code.
#[derive(Debug)]
pub(crate) enum Fail<C> {
    /// Fulcrum failed the call: answer with its synthetic response.
    Error(ProxyError),
    /// The client reset the stream or its connection is gone: nothing to answer.
    ClientGone,
    /// The backend reset its stream: pass the reset on with the same code.
    UpstreamReset(C),
}

impl<C> From<ProxyError> for Fail<C> {
    fn from(e: ProxyError) -> Self {
        Fail::Error(e)
    }
}

/// How one attempt of a call on engine `S` ended.
pub(crate) type Attempt<S> = Result<(), AttemptError<Fail<<S as ClientStream>::Code>>>;

/// The client's stream no longer takes what is sent on it (reset, or its connection gone).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ClientGone;

/// What the client's stream holds next for the request body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Next {
    /// A chunk of DATA (in the buffer given to [`ClientStream::next_chunk`]).
    Data,
    /// The body ended (trailers, which HTTP/1.1 backends do not get, are dropped).
    End,
    /// The client reset the stream, in a way the engine leaves to Fulcrum to count against the
    /// rapid-reset cap ([`ClientStream::count_reset`]).
    Reset,
    /// The stream was reset otherwise, or its connection is gone.
    Gone,
}

/// One engine's side of a client's HTTP/2 stream, as the shared relays use it.
pub(crate) trait ClientStream: Sized {
    /// An RST_STREAM error code.
    type Code: Copy + std::fmt::Debug;
    /// A response head converted for the client.
    type Head;
    /// A buffer of request body bytes read from the stream.
    type Chunk: IoBuf + AsRef<[u8]>;

    /// Reset code: the answer is no longer wanted, or cannot be given.
    const CANCEL: Self::Code;
    /// Reset code: the response broke off after its head.
    const INTERNAL_ERROR: Self::Code;

    /// The client connection: cleartext or TLS.
    fn info(&self) -> &ConnInfo;
    /// `:method`.
    fn method(&self) -> &[u8];
    /// The pseudo-header fields an HTTP/1.1 request head is written from.
    fn request_head(&self) -> H2RequestHead<'_>;
    /// The regular fields to forward, as name/value pairs.
    fn fields(&self) -> impl Iterator<Item = (&[u8], &[u8])>;
    /// The `content-length` value the client sent, if any.
    fn content_length(&self) -> Option<&[u8]>;

    /// Whether everything sent so far is still in hand, so the request can be sent again.
    fn replayable(&self) -> bool;
    /// Stops keeping the request for a resend: it can no longer be sent again.
    fn stop_replay(&self);

    /// A buffer for [`ClientStream::next_chunk`].
    fn chunk_buf() -> Self::Chunk;
    /// Waits for more of the request body; with [`Next::Data`] the bytes are in `chunk`.
    async fn next_chunk(&mut self, chunk: &mut Self::Chunk) -> Next;
    /// `n` request body bytes were written to the backend: their flow-control credit may go
    /// back to the client.
    fn release(&mut self, n: usize);
    /// Counts a stream the client reset against the rapid-reset cap.
    fn count_reset(&self);
    /// Resolves `limit` after it is first polled: the deadline of one wait of the stream (the
    /// response head, a gRPC call's `grpc-timeout`). Costs nothing when dropped unpolled.
    fn alarm(&self, limit: Duration) -> impl Future<Output = ()> + 'static;

    /// The head for the client of a backend's HTTP/1.1 response (its `101` as a `200` when
    /// `upgrade`); `None` when a field cannot be carried over HTTP/2.
    fn response_head(res: &BackendResponse<'_>, upgrade: bool) -> Option<Self::Head>;
    /// The status of a converted head.
    fn status(head: &Self::Head) -> u16;
    /// The size of a converted head as the access record counts it.
    fn head_bytes(head: &Self::Head) -> u64;
    /// Sends an informational (1xx) head.
    fn send_interim(&mut self, head: Self::Head) -> Result<(), ClientGone>;
    /// Sends the final response head, with END_STREAM when `end`.
    fn send_response(&mut self, head: Self::Head, end: bool) -> Result<(), ClientGone>;
    /// Sends response body bytes under the client's flow control, END_STREAM with the last
    /// when `end`.
    async fn send_body(&mut self, data: &[u8], end: bool) -> Result<(), ClientGone>;
    /// The two directions of a WebSocket tunnel between the stream (its `200` sent) and the
    /// backend's connection `conn`: client to backend, backend to client.
    fn tunnel_flows<'t>(
        &'t mut self,
        tunnel: &'t Tunnel<'_>,
        conn: &'t mut UpstreamConn,
    ) -> (impl Future<Output = Flow> + 't, impl Future<Output = Flow> + 't);

    /// Whether the response head went to the client.
    fn head_sent(&self) -> bool;
    /// Resets the stream with `code`.
    fn reset(&mut self, code: Self::Code);
    /// Answers a gRPC call before any head: trailers-only, `grpc-status` already noted.
    fn answer_grpc(&mut self, answer: &Synthetic, note: &ExchangeNote);
    /// Ends a gRPC call after its head with the answer's status as trailers.
    fn answer_grpc_trailers(&mut self, answer: &Synthetic, note: &ExchangeNote);
    /// Answers a plain HTTP request before any head with the answer's status and body.
    fn answer_http(&mut self, answer: &Synthetic, note: &ExchangeNote);

    /// One attempt on an h2c/h2 backend (backend `index` of the routed pool): a stream on one
    /// of this worker's sessions to it, leased with [`Call::lease`].
    async fn attempt_h2(call: &mut Call<'_, Self>, index: usize, up: &Upstream) -> Attempt<Self>;
}

/// One call on a pinned epoch: the client's stream, and what the attempt loop needs to know
/// about it.
pub(crate) struct Call<'a, S> {
    /// The worker.
    pub(crate) ctx: &'a WorkerCtx,
    /// The epoch pinned for the call (routes, pools, timeouts).
    pub(crate) epoch: &'a WorkerEpoch,
    /// A gRPC call: HTTP/2 backends only, answered with gRPC statuses.
    pub(crate) grpc: bool,
    /// Telemetry: backend, status, timings and spans of this stream.
    pub(crate) note: &'a ExchangeNote,
    /// The request body as the access record keeps it.
    pub(crate) capture: &'a mut BodyCapture,
    /// The client sent END_STREAM with its head: there is no body.
    pub(crate) headers_only: bool,
    /// An extended CONNECT for WebSocket (RFC 8441): an upgrade for an HTTP/1.1 backend.
    pub(crate) upgrade: bool,
    /// The tunnel's report, once an upgraded stream's tunnel has closed.
    pub(crate) tunnel: &'a Cell<Option<TunnelReport>>,
    /// The engine's side of the stream.
    pub(crate) stream: S,
}

impl<S: ClientStream> Forward for Call<'_, S> {
    type Output = ();
    type Failure = Fail<S::Code>;

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
                self.stream.method(),
                b"GET" | b"HEAD" | b"OPTIONS" | b"TRACE" | b"PUT" | b"DELETE"
            )
    }

    fn replayable(&self) -> bool {
        self.stream.replayable()
    }

    async fn attempt(&mut self, index: usize, up: &Upstream, reuse: Reuse) -> Attempt<S> {
        match up.backend.url.protocol {
            BackendProtocol::H2c => S::attempt_h2(self, index, up).await,
            // Boxed: the HTTP/1.1 translation is a large future that gRPC calls (the hot path)
            // never run; inline it would be copied with every stream's future.
            BackendProtocol::Http1 => Box::pin(to_h1::attempt(self, index, up, reuse)).await,
        }
    }
}

impl<S: ClientStream> Call<'_, S> {
    /// A stream slot from `lease` (the engine's session pool of backend `index`, `up`), the
    /// connect timed as its own phase; a session that could not be opened counts against the
    /// backend's passive health.
    pub(crate) async fn lease<L, E: std::fmt::Display>(
        &self,
        index: usize,
        up: &Upstream,
        lease: Pin<&mut impl Future<Output = Result<L, LeaseError<E>>>>,
    ) -> Result<L, AttemptError<Fail<S::Code>>> {
        let connect = self.note.phase("upstream_connect");
        let leased = lease.await;
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
        Ok(lease)
    }
}

/// Waits for the backend's response `head`: for plain HTTP until `response_alarm` (the stream's
/// [`ClientStream::alarm`] for `upstream_response_ms`) at most, while gRPC calls (often
/// long-lived streams) are bounded by their own `grpc-timeout` instead. Fails with
/// [`Fail::ClientGone`] when `client_reset` (the client's RST_STREAM) comes first.
pub(crate) async fn wait_head<T, C>(
    grpc: bool,
    response_alarm: impl Future<Output = ()>,
    head: impl Future<Output = T>,
    client_reset: impl Future<Output = ()>,
) -> Result<T, AttemptError<Fail<C>>> {
    monoio::select! {
        biased;
        r = head => Ok(r),
        () = response_alarm, if !grpc => {
            Err(AttemptError::Fail(ProxyError::UpstreamTimeout.into()))
        }
        _ = client_reset => Err(AttemptError::Fail(Fail::ClientGone)),
    }
}

/// Runs an attempt's request side `send` and response side `relay` at once until the response
/// side ends: its result is the attempt's. The request side's end matters only when `gone`
/// says its error means the client went away; otherwise the backend stopped reading (an early
/// answer, or a reset the response side reports). Both come pinned where the attempt keeps
/// them: moved in here, their (large) states would be copied with every call.
pub(crate) async fn relay_both<E, C>(
    mut send: Pin<&mut impl Future<Output = Result<(), E>>>,
    mut relay: Pin<&mut impl Future<Output = Result<(), AttemptError<Fail<C>>>>>,
    headers_only: bool,
    gone: impl Fn(E) -> bool,
) -> Result<(), AttemptError<Fail<C>>> {
    let mut sent = headers_only;
    loop {
        monoio::select! {
            r = &mut send, if !sent => {
                sent = true;
                if let Err(e) = r
                    && gone(e)
                {
                    return Err(AttemptError::Fail(Fail::ClientGone));
                }
            }
            r = &mut relay => return r,
        }
    }
}

/// A stream a client opened, as its engine received it: [`serve`] opens it on the worker's
/// current epoch.
pub(crate) trait Open {
    /// The engine's stream.
    type Stream: ClientStream;

    /// Routes the request, starts its record and rewrites its head for the backends (the
    /// synchronous part of a stream's start, run once `epoch` is pinned).
    fn open(self, ctx: &WorkerCtx, epoch: &WorkerEpoch) -> Opened<Self::Stream>;
}

/// A stream ready to be forwarded: where it goes, its record, and what its head says.
pub(crate) struct Opened<S> {
    /// The pool it was routed to.
    pub(crate) routed: Routed,
    /// Its access record and telemetry.
    pub(crate) log: ExchangeLog,
    /// The engine's stream.
    pub(crate) stream: S,
    /// A gRPC call (`content-type: application/grpc...`).
    pub(crate) grpc: bool,
    /// The call's `grpc-timeout`.
    pub(crate) deadline: Option<Duration>,
    /// END_STREAM came with the head.
    pub(crate) headers_only: bool,
    /// What an RFC 8441 extended CONNECT asks for.
    pub(crate) connect: ExtendedConnect,
}

/// What a stream's RFC 8441 extended CONNECT asks for, from its `:protocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ExtendedConnect {
    /// Not an extended CONNECT (no `:protocol`).
    No,
    /// `websocket`: translated to an HTTP/1.1 upgrade.
    WebSocket,
    /// Another protocol, which Fulcrum does not translate.
    Unsupported,
}

impl ExtendedConnect {
    /// From the request's `:protocol`, if it has one.
    pub(crate) fn of(protocol: Option<&[u8]>) -> Self {
        match protocol {
            None => Self::No,
            Some(p) if p.eq_ignore_ascii_case(WEBSOCKET.as_bytes()) => Self::WebSocket,
            Some(_) => Self::Unsupported,
        }
    }
}

/// Serves one client stream to its end through the attempt loop on the pool it was routed
/// to, and logs it: one access record, the metrics, the spans (as for an HTTP/1.1 exchange).
/// The engine's part of the start is [`Open::open`], called here so that the whole stream is
/// one future (the one the engine runs), not one nested in another.
pub(crate) async fn serve<O: Open>(ctx: &WorkerCtx, open: O) {
    let epoch = ctx.current_epoch();
    let _busy = ctx.busy();
    let opened = open.open(ctx, &epoch);
    let Opened { routed, mut log, stream, grpc, deadline, headers_only, connect } = opened;
    let pool = epoch.pool(&routed);
    if grpc {
        log.capture.set_binary();
    }
    // HTTP/2 responses (gRPC above all) are never cached.
    if epoch.epoch.cache_for(routed.cache).is_some() {
        log.note.set_cache(CacheStatus::Bypass);
    }
    let tunnel: Cell<Option<TunnelReport>> = Cell::new(None);
    let mut call = Call {
        ctx,
        epoch: &epoch,
        grpc,
        note: &log.note,
        capture: &mut log.capture,
        headers_only,
        upgrade: connect != ExtendedConnect::No,
        tunnel: &tunnel,
        stream,
    };
    let result = if connect == ExtendedConnect::Unsupported {
        Err(Fail::Error(ProxyError::Unsupported("extended CONNECT protocol")))
    } else {
        let deadline = deadline.map(|limit| call.stream.alarm(limit));
        // Pinned here so the deadline's select holds a reference: the call's (large) future
        // is stored once, in this one.
        let run = std::pin::pin!(attempt::forward(ctx, pool, call.note, &mut call));
        match deadline {
            Some(deadline) => monoio::select! {
                biased;
                r = run => r,
                () = deadline => Err(Fail::Error(ProxyError::DeadlineExceeded)),
            },
            None => run.await,
        }
    };
    if let Err(Fail::Error(ProxyError::Client(BodyError::TooSlow))) = &result {
        ctx.telemetry.worker().body_too_slow.inc();
    }
    let status = match result {
        Ok(()) => call.note.status(),
        Err(fail) => finish_failed(fail, grpc, &mut call.stream, call.note),
    };
    drop(call);
    if let Some(report) = tunnel.take() {
        log.note_tunnel(WEBSOCKET, &report);
    }
    let target = pool.target(ctx.index, routed.route, log.note.backend());
    ctx.telemetry.finish(log, target, status);
}

/// Answers a failed call: before the response head, with Fulcrum's synthetic response (an
/// HTTP error, or a gRPC trailers-only answer); after it, with gRPC trailers or a reset.
/// Returns the HTTP status the client got (499: none, the stream was reset before a response
/// head) and notes the gRPC status Fulcrum generated.
fn finish_failed<S: ClientStream>(
    fail: Fail<S::Code>,
    grpc: bool,
    stream: &mut S,
    note: &ExchangeNote,
) -> u16 {
    // After a response head the client has its status; before one, a reset gives it none.
    let head_sent = stream.head_sent();
    let relayed = if head_sent { note.status() } else { 499 };
    let error = match fail {
        Fail::ClientGone => {
            stream.reset(S::CANCEL);
            return relayed;
        }
        Fail::UpstreamReset(code) => {
            stream.reset(code);
            return if head_sent { relayed } else { 502 };
        }
        Fail::Error(e) => e,
    };
    let Some(answer) = error.synthetic() else {
        stream.reset(S::CANCEL);
        return relayed;
    };
    match (grpc, head_sent) {
        (true, false) => {
            note.set_grpc_status(u32::from(answer.grpc_status.as_u16()));
            stream.answer_grpc(&answer, note);
            200
        }
        (true, true) => {
            note.set_grpc_status(u32::from(answer.grpc_status.as_u16()));
            stream.answer_grpc_trailers(&answer, note);
            relayed
        }
        (false, false) => {
            stream.answer_http(&answer, note);
            answer.status
        }
        (false, true) => {
            stream.reset(S::INTERNAL_ERROR);
            relayed
        }
    }
}

/// How many streams of a client connection are running, and since when none has (for the
/// connection's idle close).
#[derive(Debug)]
pub(crate) struct StreamCount {
    active: Cell<usize>,
    idle_since: Cell<Instant>,
}

impl StreamCount {
    /// No stream yet: idle from now.
    pub(crate) fn new() -> StreamCount {
        StreamCount { active: Cell::new(0), idle_since: Cell::new(Instant::now()) }
    }

    /// Whether no stream has run for `timeout`.
    pub(crate) fn idle_for(&self, timeout: Duration) -> bool {
        self.active.get() == 0 && self.idle_since.get().elapsed() >= timeout
    }
}

/// A running stream of client connection `T`, counted in its [`StreamCount`] until it drops.
#[derive(Debug)]
pub(crate) struct StreamGuard<T: AsRef<StreamCount>>(Rc<T>);

impl<T: AsRef<StreamCount>> StreamGuard<T> {
    /// Counts a stream of `conn` as running.
    pub(crate) fn new(conn: &Rc<T>) -> StreamGuard<T> {
        let s = (**conn).as_ref();
        s.active.set(s.active.get() + 1);
        StreamGuard(conn.clone())
    }
}

impl<T: AsRef<StreamCount>> Drop for StreamGuard<T> {
    fn drop(&mut self) {
        let s = (*self.0).as_ref();
        s.active.set(s.active.get() - 1);
        if s.active.get() == 0 {
            s.idle_since.set(fulcrum_util::now());
        }
    }
}
