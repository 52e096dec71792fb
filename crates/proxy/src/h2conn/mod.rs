//! One native HTTP/2 connection on a worker, either end of the proxy (client connections in
//! `crate::h2n`, upstream sessions in `crate::upstream::h2n`): the engine's state machine
//! (`fulcrum_h2::conn::Connection`), configured from `[http2]` ([`engine_config`]), shared, in
//! an `Rc`, by the connection's driver and the tasks of its streams, and the owned field
//! sections they exchange ([`fields`]). Everything runs on the worker's thread; no `RefCell` borrow is
//! held across an await.
//!
//! The driver ([`drive`]) is one task with two loops: the reader parses frames in place out of
//! the read buffer and copies each stream's DATA, heads and trailers into the stream's slot
//! (at most the window we advertised: the engine enforces it), and the writer sends whatever
//! the engine wrote to its write buffer, swapping buffers rather than copying. Woken for new
//! output, the writer first lets the tasks queued behind it run, so that one write carries
//! what a whole turn of the worker's loop produced for the connection. A stream's task
//! writes through the engine straight into that buffer ([`H2Conn::send_response`],
//! [`move_data`], ...) and wakes the writer.
//!
//! DATA moves from one connection to the other with [`move_data`]: as much as the receiving
//! stream's send buffer takes, whose credit then returns to the sender, so a slow reader on
//! one side holds the writer on the other to one window.
//!
//! The fast path of a response: an upstream stream whose task called [`H2Conn::relay_to`] has
//! its head, DATA and trailers written by the upstream reader straight into the client
//! connection's engine as they are parsed (no copy into the slot, no wake-up of the stream's
//! task per frame), under the same rule: a DATA frame the client's stream does not take whole
//! ends the fast path, and the rest goes through the slot and [`move_data`]. The task wakes
//! for the head and for the end, to keep its records.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::future::{Future, poll_fn};
use std::hash::BuildHasherDefault;
use std::pin::pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use fulcrum_config::Http2Config;
use fulcrum_h2::conn::{Config, Connection, Event, IdHasher, Limits, Role, SendError};
use fulcrum_h2::hpack::{Field, HeaderBlock};
use fulcrum_h2::{ErrorCode, StreamId};
use fulcrum_http::grpc::parse_grpc_status;
use fulcrum_util::{Notify, ReadBuf};
use monoio::io::{AsyncWriteRent, AsyncWriteRentExt};

use self::fields::Fields;
use crate::transport::{ConnRead, ConnWrite};

pub(crate) mod fields;

/// Bytes of engine output held before reading stops (a client that does not read).
const MAX_WRITE_BUFFER: usize = 256 * 1024;

/// The engine's configuration for one side of the proxy, from `[http2]`.
pub(crate) fn engine_config(cfg: &Http2Config) -> Config {
    Config {
        max_concurrent_streams: cfg.max_concurrent_streams,
        initial_stream_window: cfg.initial_stream_window,
        initial_connection_window: cfg.initial_connection_window,
        max_frame_size: cfg.max_frame_size,
        max_header_list_size: cfg.max_header_list_size,
        header_table_size: cfg.header_table_size,
        // A stream's queue must hold what one stream window lets the other side send.
        max_send_buffer: cfg.max_send_buffer.max(cfg.initial_stream_window as usize),
        max_write_buffer: MAX_WRITE_BUFFER,
        // Set on client connections that pass WebSocket (see `serve`).
        enable_connect_protocol: false,
        limits: Limits { max_resets_per_sec: cfg.max_resets_per_sec, ..Limits::default() },
    }
}

/// How long a connection whose peer stopped sending may take to flush what is left.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// A wake-up for one waiting task that is kept when it comes before the wait.
#[derive(Debug, Default)]
pub(crate) struct Signal {
    set: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

impl Signal {
    /// Sets the signal and wakes the waiter, if any.
    pub(crate) fn wake(&self) {
        self.set.set(true);
        let waker = self.waker.borrow_mut().take();
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// Resolves once the signal is set, and clears it.
    pub(crate) async fn wait(&self) {
        poll_fn(|cx| {
            if self.set.replace(false) {
                return Poll::Ready(());
            }
            let mut slot = self.waker.borrow_mut();
            if !slot.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                *slot = Some(cx.waker().clone());
            }
            Poll::Pending
        })
        .await;
    }
}

/// What a stream's reader finds in its slot.
#[derive(Debug)]
pub(crate) enum Incoming {
    /// DATA is waiting (move it with [`move_data`] or [`H2Conn::take_data`]).
    Data,
    /// The trailers, which end the stream.
    Trailers(Fields),
    /// END_STREAM, with no more DATA.
    End,
    /// The stream was reset: its code, and whether the peer did it.
    Reset(ErrorCode, bool),
    /// The connection is gone.
    Lost,
}

/// What one stream's task and the driver exchange.
#[derive(Debug, Default)]
struct Slot {
    /// Received DATA not taken yet.
    data: VecDeque<u8>,
    /// END_STREAM arrived (after `data` and `trailers`).
    ended: bool,
    trailers: Option<Fields>,
    /// Client: the final response head.
    head: Option<(u16, Fields)>,
    /// Reset, with its code and whether the peer did it.
    reset: Option<(ErrorCode, bool)>,
    recv_waker: Option<Waker>,
    send_waker: Option<Waker>,
    /// Client: where the reader relays the response inline, while it can.
    relay: Option<Relay>,
}

/// A response relayed by the upstream connection's reader straight to the client's stream,
/// without waking the stream's task per frame or copying the head, DATA or trailers into the
/// slot: the fast path of a proxied stream. It stops (the task's [`pump`] takes over from the
/// slot) as soon as the client's stream does not take a DATA frame whole.
///
/// [`pump`]: super::stream::pump
#[derive(Debug)]
struct Relay {
    /// The client connection and its stream.
    to: Rc<H2Conn>,
    stream: StreamId,
    /// Frames are still relayed inline.
    active: bool,
    /// The task has seen the relayed head.
    head_seen: bool,
    report: Relayed,
}

/// What the reader relayed inline, for the stream task's records.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Relayed {
    /// The final response head.
    pub(crate) head: Option<RelayedHead>,
    /// DATA bytes relayed.
    pub(crate) body: u64,
    /// The trailers: name and value bytes, and their `grpc-status`.
    pub(crate) trailers: Option<(u64, Option<u32>)>,
    /// The response ended (END_STREAM went to the client).
    pub(crate) ended: bool,
}

/// A response head relayed inline.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RelayedHead {
    /// `:status`.
    pub(crate) status: u16,
    /// `grpc-status` in the head (a trailers-only answer).
    pub(crate) grpc_status: Option<u32>,
    /// `:status`, its 3 digits, then names and values, as the access record counts them.
    pub(crate) bytes: u64,
    /// When it arrived.
    pub(crate) at: Instant,
}

/// A response head as the stream's task gets it.
#[derive(Debug)]
pub(crate) enum Head {
    /// Copied into the slot: the task forwards it.
    Fields(u16, Fields),
    /// Already relayed to the client by the reader.
    Relayed(RelayedHead),
}

/// How an inline relay ended, as the stream's task sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RelayEnd {
    /// The whole response went to the client.
    Done,
    /// The rest waits in the slot (a frame the client's stream did not take whole, or could
    /// not take at all), or the stream was reset or its connection lost: the task takes over.
    Fallback,
}

impl Relay {
    /// The head arrived and was relayed before: DATA and trailers may follow inline.
    fn relaying(&self) -> bool {
        self.active && self.report.head.is_some()
    }

    /// Relays a final response head; false (and the relay stops) when the client's stream
    /// does not take it: the task then forwards it from the slot and meets the same failure.
    fn head(&mut self, status: u16, fields: &HeaderBlock<'_>, end_stream: bool) -> bool {
        let regular = fields.iter().filter(|f| f.pseudo.is_none() && f.name.first() != Some(&b':'));
        let mut bytes = (":status".len() + 3) as u64;
        let mut grpc_status = None;
        for f in regular.clone() {
            bytes += (f.name.len() + f.value.len()) as u64;
            if f.name == b"grpc-status" && grpc_status.is_none() {
                grpc_status = Some(parse_grpc_status(f.value));
            }
        }
        if self.to.is_lost()
            || self.to.send_response(self.stream, status, regular, end_stream).is_err()
        {
            self.active = false;
            return false;
        }
        let at = fulcrum_util::now();
        let grpc_status = grpc_status.flatten();
        self.report.head = Some(RelayedHead { status, grpc_status, bytes, at });
        self.report.ended = end_stream;
        true
    }

    /// Relays a DATA frame: the bytes the client's stream took, and whether it took the whole
    /// frame (END_STREAM included). When not, the relay stops and the rest goes to the slot.
    fn data(&mut self, data: &[u8], end_stream: bool) -> (usize, bool) {
        let sent = if self.to.is_lost() {
            None
        } else {
            self.to.with(|c| c.send_data(self.stream, data, end_stream)).ok()
        };
        let taken = sent.map_or(0, |s| s.accepted);
        self.report.body += taken as u64;
        let whole = sent.is_some() && taken == data.len();
        if whole {
            self.report.ended |= end_stream;
        } else {
            self.active = false;
        }
        (taken, whole)
    }

    /// Relays the trailers; false (and the relay stops) when the client's stream does not
    /// take them.
    fn trailers(&mut self, fields: &HeaderBlock<'_>) -> bool {
        if self.to.is_lost() || self.to.send_trailers(self.stream, fields.iter()).is_err() {
            self.active = false;
            return false;
        }
        let mut bytes = 0;
        let mut grpc_status = None;
        for f in fields {
            bytes += (f.name.len() + f.value.len()) as u64;
            if f.name == b"grpc-status" && grpc_status.is_none() {
                grpc_status = Some(parse_grpc_status(f.value));
            }
        }
        self.report.trailers = Some((bytes, grpc_status.flatten()));
        self.report.ended = true;
        true
    }
}

impl Slot {
    fn wake(&mut self) {
        if let Some(w) = self.recv_waker.take() {
            w.wake();
        }
        if let Some(w) = self.send_waker.take() {
            w.wake();
        }
    }
}

/// The slots of a connection's streams, by stream identifier.
type Slots = HashMap<u32, Slot, BuildHasherDefault<IdHasher>>;

/// The engine and the slots of the streams whose tasks are running.
#[derive(Debug)]
struct State {
    conn: Connection,
    slots: Slots,
    /// The socket is gone (or going): nothing more will be read.
    lost: bool,
}

/// A native HTTP/2 connection shared by its driver and its streams' tasks.
#[derive(Debug)]
pub(crate) struct H2Conn {
    state: RefCell<State>,
    /// The engine wrote something: wakes the writer.
    output: Signal,
    /// A write completed: wakes a reader that stopped on a full write buffer.
    drained: Signal,
    /// Client: a stream ended, or the peer's settings arrived or changed (stream room).
    pub(crate) room: Notify,
    /// Server: request heads of finished streams, their buffers kept for the next ones.
    spare_heads: RefCell<Vec<Fields>>,
}

/// Most request heads a connection keeps for reuse.
const SPARE_HEADS: usize = 8;

/// Largest request head (buffer bytes) kept for reuse.
const SPARE_HEAD_BYTES: usize = 4096;

/// Which side of a [`move_data`] failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PumpError {
    /// The source stream was reset or its connection lost.
    Src,
    /// The destination stream was reset or its connection lost.
    Dst,
}

impl H2Conn {
    /// A connection in `role`; its preface and SETTINGS wait in the write buffer.
    pub(crate) fn new(role: Role, config: Config) -> Rc<H2Conn> {
        Rc::new(H2Conn {
            state: RefCell::new(State {
                conn: Connection::new(role, config),
                slots: Slots::default(),
                lost: false,
            }),
            output: Signal::default(),
            drained: Signal::default(),
            room: Notify::default(),
            spare_heads: RefCell::new(Vec::new()),
        })
    }

    /// Server: gives back the request head of a finished stream, for the next stream's copy.
    pub(crate) fn recycle(&self, head: Fields) {
        let mut spare = self.spare_heads.borrow_mut();
        if spare.len() < SPARE_HEADS && head.capacity() <= SPARE_HEAD_BYTES {
            spare.push(head);
        }
    }

    /// A copy of a request head, in a recycled buffer when there is one.
    fn copy_head(&self, block: &HeaderBlock<'_>) -> Fields {
        let mut head = self.spare_heads.borrow_mut().pop().unwrap_or_default();
        head.copy_block(block);
        head
    }

    /// Runs `f` on the engine, then wakes the writer.
    fn with<R>(&self, f: impl FnOnce(&mut Connection) -> R) -> R {
        let r = f(&mut self.state.borrow_mut().conn);
        self.output.wake();
        r
    }

    /// Whether the socket is gone.
    pub(crate) fn is_lost(&self) -> bool {
        self.state.borrow().lost
    }

    /// The peer's SETTINGS arrived.
    pub(crate) fn is_ready(&self) -> bool {
        self.state.borrow().conn.is_ready()
    }

    /// GOAWAY was sent or received, or the connection is gone: no new stream.
    pub(crate) fn is_closing(&self) -> bool {
        let s = self.state.borrow();
        s.lost || s.conn.is_going_away() || s.conn.error().is_some()
    }

    /// Client: how many streams may be open at once.
    pub(crate) fn max_streams(&self) -> usize {
        self.state.borrow().conn.max_streams()
    }

    /// Sends GOAWAY (graceful with NO_ERROR).
    pub(crate) fn go_away(&self, code: ErrorCode) {
        self.with(|c| c.go_away(code));
    }

    /// Sends a PING.
    pub(crate) fn ping(&self, data: [u8; 8]) {
        self.with(|c| c.ping(data));
    }

    /// Client: opens a stream with a request head.
    pub(crate) fn open<'f>(
        &self,
        fields: impl IntoIterator<Item = Field<'f>>,
        end_stream: bool,
    ) -> Result<StreamId, SendError> {
        let mut s = self.state.borrow_mut();
        if s.lost {
            return Err(SendError::Closed);
        }
        let id = s.conn.send_request(fields, end_stream)?;
        s.slots.insert(id.get(), Slot::default());
        drop(s);
        self.output.wake();
        Ok(id)
    }

    /// Server: sends a response head.
    pub(crate) fn send_response<'f>(
        &self,
        stream: StreamId,
        status: u16,
        fields: impl IntoIterator<Item = Field<'f>>,
        end_stream: bool,
    ) -> Result<(), SendError> {
        self.with(|c| c.send_response(stream, status, fields, end_stream))
    }

    /// Sends trailers (after the DATA queued before them).
    pub(crate) fn send_trailers<'f>(
        &self,
        stream: StreamId,
        fields: impl IntoIterator<Item = Field<'f>>,
    ) -> Result<(), SendError> {
        self.with(|c| c.send_trailers(stream, fields))
    }

    /// Resets a stream.
    pub(crate) fn reset(&self, stream: StreamId, code: ErrorCode) {
        self.with(|c| c.reset(stream, code));
    }

    /// Sends all of `data` (and END_STREAM when `end`), waiting for send buffer room.
    pub(crate) async fn send_all(
        &self,
        stream: StreamId,
        mut data: &[u8],
        end: bool,
    ) -> Result<(), PumpError> {
        loop {
            let sent = self.with(|c| c.send_data(stream, data, end)).map_err(|_| PumpError::Dst)?;
            data = &data[sent.accepted..];
            if data.is_empty() {
                return Ok(());
            }
            poll_fn(|cx| self.poll_capacity(stream, cx)).await?;
        }
    }

    /// Sends `data` with END_STREAM if the stream's send buffer takes it whole at once (a
    /// short synthetic body).
    pub(crate) fn send_body_now(&self, stream: StreamId, data: &[u8]) -> Result<(), SendError> {
        let sent = self.with(|c| c.send_data(stream, data, true))?;
        if sent.accepted < data.len() {
            self.reset(stream, ErrorCode::INTERNAL_ERROR);
        }
        Ok(())
    }

    /// Whether `stream` received END_STREAM and nothing is left to take (a response that was
    /// only a head).
    pub(crate) fn is_ended_now(&self, stream: StreamId) -> bool {
        let s = self.state.borrow();
        s.slots
            .get(&stream.get())
            .is_some_and(|s| s.ended && s.data.is_empty() && s.trailers.is_none())
    }

    /// Resolves when `stream` can take more DATA, or fails when it is gone.
    pub(crate) fn poll_capacity(
        &self,
        stream: StreamId,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), PumpError>> {
        let mut s = self.state.borrow_mut();
        if s.lost || !s.conn.is_open(stream) {
            return Poll::Ready(Err(PumpError::Dst));
        }
        if s.conn.send_capacity(stream) > 0 {
            return Poll::Ready(Ok(()));
        }
        let Some(slot) = s.slots.get_mut(&stream.get()) else {
            return Poll::Ready(Err(PumpError::Dst));
        };
        if slot.reset.is_some() {
            return Poll::Ready(Err(PumpError::Dst));
        }
        slot.send_waker = Some(cx.waker().clone());
        Poll::Pending
    }

    /// What `stream` has received that its task has not taken; registers the task to be
    /// woken when there is more.
    pub(crate) fn poll_incoming(&self, stream: StreamId, cx: &mut Context<'_>) -> Poll<Incoming> {
        let mut s = self.state.borrow_mut();
        let lost = s.lost;
        let Some(slot) = s.slots.get_mut(&stream.get()) else {
            return Poll::Ready(Incoming::Lost);
        };
        if !slot.data.is_empty() {
            return Poll::Ready(Incoming::Data);
        }
        if let Some(t) = slot.trailers.take() {
            return Poll::Ready(Incoming::Trailers(t));
        }
        if slot.ended {
            return Poll::Ready(Incoming::End);
        }
        if let Some((code, remote)) = slot.reset {
            return Poll::Ready(Incoming::Reset(code, remote));
        }
        if lost {
            return Poll::Ready(Incoming::Lost);
        }
        slot.recv_waker = Some(cx.waker().clone());
        Poll::Pending
    }

    /// Client: the final response head of `stream`, or why it will not come.
    pub(crate) fn poll_head(
        &self,
        stream: StreamId,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Head, Incoming>> {
        let mut s = self.state.borrow_mut();
        let lost = s.lost;
        let Some(slot) = s.slots.get_mut(&stream.get()) else {
            return Poll::Ready(Err(Incoming::Lost));
        };
        if let Some((status, fields)) = slot.head.take() {
            return Poll::Ready(Ok(Head::Fields(status, fields)));
        }
        if let Some(relay) = &mut slot.relay
            && !relay.head_seen
            && let Some(head) = relay.report.head
        {
            relay.head_seen = true;
            return Poll::Ready(Ok(Head::Relayed(head)));
        }
        if let Some((code, remote)) = slot.reset {
            return Poll::Ready(Err(Incoming::Reset(code, remote)));
        }
        if lost {
            return Poll::Ready(Err(Incoming::Lost));
        }
        slot.recv_waker = Some(cx.waker().clone());
        Poll::Pending
    }

    /// Client: relays `stream`'s response to stream `to_stream` of `to` from the reader, frame
    /// by frame as it arrives (see [`Relay`]).
    pub(crate) fn relay_to(&self, stream: StreamId, to: &Rc<H2Conn>, to_stream: StreamId) {
        if let Some(slot) = self.state.borrow_mut().slots.get_mut(&stream.get()) {
            slot.relay = Some(Relay {
                to: to.clone(),
                stream: to_stream,
                active: true,
                head_seen: false,
                report: Relayed::default(),
            });
        }
    }

    /// Client: resolves when the inline relay of `stream` (after its head) is over, and says
    /// how; [`H2Conn::take_relayed`] then gives what went.
    pub(crate) fn poll_relay(&self, stream: StreamId, cx: &mut Context<'_>) -> Poll<RelayEnd> {
        let mut s = self.state.borrow_mut();
        let lost = s.lost;
        let Some(slot) = s.slots.get_mut(&stream.get()) else {
            return Poll::Ready(RelayEnd::Fallback);
        };
        let Some(relay) = &slot.relay else { return Poll::Ready(RelayEnd::Fallback) };
        if relay.report.ended {
            return Poll::Ready(RelayEnd::Done);
        }
        if !relay.active || slot.reset.is_some() || lost {
            return Poll::Ready(RelayEnd::Fallback);
        }
        slot.recv_waker = Some(cx.waker().clone());
        Poll::Pending
    }

    /// Client: what the reader relayed of `stream` since the last call (the body bytes and
    /// trailers are reported once), and stops relaying inline.
    pub(crate) fn take_relayed(&self, stream: StreamId) -> Relayed {
        let mut s = self.state.borrow_mut();
        let Some(relay) = s.slots.get_mut(&stream.get()).and_then(|s| s.relay.as_mut()) else {
            return Relayed::default();
        };
        relay.active = false;
        let report = relay.report;
        relay.report.body = 0;
        relay.report.trailers = None;
        report
    }

    /// Resolves when `stream` is reset or its connection lost (a destination watched while
    /// its task waits on the source).
    pub(crate) fn poll_reset(&self, stream: StreamId, cx: &mut Context<'_>) -> Poll<()> {
        let mut s = self.state.borrow_mut();
        let lost = s.lost;
        match s.slots.get_mut(&stream.get()) {
            None => Poll::Ready(()),
            Some(slot) if slot.reset.is_some() || lost => Poll::Ready(()),
            Some(slot) => {
                slot.send_waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }

    /// Whether `stream` was reset, and by whom.
    pub(crate) fn reset_of(&self, stream: StreamId) -> Option<(ErrorCode, bool)> {
        self.state.borrow().slots.get(&stream.get()).and_then(|s| s.reset)
    }

    /// Moves up to `max` received DATA bytes of `stream` into `out`, returning their credit
    /// to the peer.
    pub(crate) fn take_data(&self, stream: StreamId, out: &mut Vec<u8>, max: usize) -> usize {
        let mut s = self.state.borrow_mut();
        let State { conn, slots, .. } = &mut *s;
        let Some(slot) = slots.get_mut(&stream.get()) else { return 0 };
        let n = slot.data.len().min(max);
        out.extend(slot.data.drain(..n));
        conn.release(stream, n);
        drop(s);
        self.output.wake();
        n
    }

    /// Drops `stream`'s slot. Server: a stream whose response was not ended is reset with
    /// CANCEL, one whose end is still queued is left to finish (see `Connection::finish`).
    /// Client: a stream still open is reset with CANCEL (its answer is no longer wanted).
    pub(crate) fn detach(&self, stream: StreamId) {
        let mut s = self.state.borrow_mut();
        let State { conn, slots, lost } = &mut *s;
        if let Some(slot) = slots.remove(&stream.get())
            && !slot.data.is_empty()
        {
            // Credit for what nobody will read.
            conn.release(stream, slot.data.len());
        }
        if !*lost {
            match conn.role() {
                // A response whose end is queued goes out; an abandoned one is reset.
                Role::Server => conn.finish(stream),
                // A request whose answer is no longer wanted is cancelled.
                Role::Client if conn.is_open(stream) => conn.reset(stream, ErrorCode::CANCEL),
                Role::Client => {}
            }
        }
        drop(s);
        self.output.wake();
        self.room.notify();
    }

    /// Marks the connection lost and wakes every stream's task (also after its driver
    /// panicked).
    pub(crate) fn lose(&self) {
        let mut s = self.state.borrow_mut();
        s.lost = true;
        for slot in s.slots.values_mut() {
            slot.wake();
        }
        drop(s);
        self.room.notify();
        self.output.wake();
        self.drained.wake();
    }

    /// Server: attaches a slot for a stream the peer opened.
    fn attach(slots: &mut Slots, stream: StreamId, ended: bool) {
        slots.insert(stream.get(), Slot { ended, ..Slot::default() });
    }
}

/// Moves received DATA of stream `s` on `src` to stream `d` on `dst`: as much as `d`'s send
/// buffer takes, END_STREAM with the last byte when `s` ended without trailers. `tap` sees
/// every byte moved. Returns the bytes moved and whether END_STREAM went with them.
pub(crate) fn move_data(
    src: &H2Conn,
    s: StreamId,
    dst: &H2Conn,
    d: StreamId,
    tap: &mut dyn FnMut(&[u8]),
) -> Result<(usize, bool), PumpError> {
    let mut ss = src.state.borrow_mut();
    let mut ds = dst.state.borrow_mut();
    if ds.lost {
        return Err(PumpError::Dst);
    }
    let State { conn: sconn, slots, .. } = &mut *ss;
    let slot = slots.get_mut(&s.get()).ok_or(PumpError::Src)?;
    let end = slot.ended && slot.trailers.is_none();
    let total = slot.data.len();
    let mut moved = 0;
    let mut ended = false;
    let (a, b) = slot.data.as_slices();
    for part in [a, b] {
        if part.is_empty() {
            continue;
        }
        let last = end && moved + part.len() == total;
        let sent = ds.conn.send_data(d, part, last).map_err(|_| PumpError::Dst)?;
        tap(&part[..sent.accepted]);
        moved += sent.accepted;
        if sent.accepted < part.len() {
            break;
        }
        ended = last;
    }
    slot.data.drain(..moved);
    sconn.release(s, moved);
    drop((ss, ds));
    src.output.wake();
    dst.output.wake();
    Ok((moved, ended))
}

/// A stream a request opened (server side), its slot attached.
#[derive(Debug)]
pub(crate) struct NewStream {
    /// The stream.
    pub(crate) id: StreamId,
    /// The request head.
    pub(crate) head: Fields,
    /// END_STREAM came with the head.
    pub(crate) end_stream: bool,
}

/// Role-specific handling of what the reader finds.
pub(crate) trait OnEvent {
    /// Server: a request opened `stream`. `engine` is the connection, for a GOAWAY the handler
    /// decides on.
    fn request(&mut self, conn: &Rc<H2Conn>, engine: &mut Connection, stream: NewStream);

    /// The answer to our PING arrived.
    fn pong(&mut self) {}
}

/// What the reader does with one event once its borrowed parts are copied.
enum Action {
    None,
    Request(NewStream),
    /// DATA relayed inline, or for a stream whose task is gone: its credit goes back at once.
    Release(StreamId, usize),
    Pong,
}

impl H2Conn {
    /// Handles every frame in `buf`. Returns false once the connection failed.
    fn process(self: &Rc<Self>, buf: &mut ReadBuf, on: &mut impl OnEvent) -> bool {
        let mut state = self.state.borrow_mut();
        let State { conn, slots, .. } = &mut *state;
        let mut used = 0;
        let mut room = false;
        let ok = loop {
            let r = match conn.recv(&buf.data()[used..]) {
                Ok(r) => r,
                Err(_) => break false,
            };
            used += r.used;
            let idle = r.is_idle();
            let action = match r.event {
                None => Action::None,
                Some(Event::Request { stream, fields, end_stream, .. }) => {
                    Action::Request(NewStream {
                        id: stream,
                        head: self.copy_head(&fields),
                        end_stream,
                    })
                }
                Some(Event::Response { stream, status, fields, end_stream }) => {
                    // Informational heads are not forwarded.
                    if let Some(slot) = slots.get_mut(&stream.get())
                        && status >= 200
                    {
                        let relayed = slot
                            .relay
                            .as_mut()
                            .is_some_and(|r| r.active && r.head(status, &fields, end_stream));
                        if !relayed {
                            slot.head = Some((status, Fields::from_block(&fields)));
                        }
                        slot.ended |= end_stream;
                        slot.wake();
                    }
                    room |= end_stream;
                    Action::None
                }
                Some(Event::Trailers { stream, fields }) => {
                    if let Some(slot) = slots.get_mut(&stream.get()) {
                        let idle = slot.data.is_empty();
                        let relayed = slot
                            .relay
                            .as_mut()
                            .is_some_and(|r| r.relaying() && idle && r.trailers(&fields));
                        if !relayed {
                            slot.trailers = Some(Fields::from_block(&fields));
                        }
                        slot.ended = true;
                        slot.wake();
                    }
                    room = true;
                    Action::None
                }
                Some(Event::Data { stream, data, end_stream }) => {
                    room |= end_stream;
                    match slots.get_mut(&stream.get()) {
                        Some(slot) => {
                            let idle = slot.data.is_empty();
                            let (taken, whole) = match &mut slot.relay {
                                Some(r) if r.relaying() && idle => r.data(data, end_stream),
                                _ => (0, false),
                            };
                            if !whole {
                                slot.data.extend(&data[taken..]);
                            }
                            slot.ended |= end_stream;
                            // A frame relayed whole that does not end the response is no news
                            // for the task.
                            if !whole || end_stream {
                                slot.wake();
                            }
                            // The client's stream holds what it took: credit goes back now.
                            Action::Release(stream, taken)
                        }
                        None => Action::Release(stream, data.len()),
                    }
                }
                Some(Event::Reset { stream, code, remote }) => {
                    if let Some(slot) = slots.get_mut(&stream.get()) {
                        slot.reset = Some((code, remote));
                        slot.wake();
                    }
                    room = true;
                    Action::None
                }
                Some(Event::GoAway { .. } | Event::Settings) => {
                    room = true;
                    Action::None
                }
                Some(Event::Pong { .. }) => Action::Pong,
            };
            match action {
                Action::None => {}
                Action::Request(stream) => {
                    H2Conn::attach(slots, stream.id, stream.end_stream);
                    on.request(self, conn, stream);
                }
                Action::Release(_, 0) => {}
                Action::Release(stream, n) => conn.release(stream, n),
                Action::Pong => on.pong(),
            }
            if idle {
                break true;
            }
        };
        buf.consume(used);
        while let Some((stream, _)) = conn.take_sent() {
            if let Some(w) = slots.get_mut(&stream.get()).and_then(|s| s.send_waker.take()) {
                w.wake();
            }
        }
        drop(state);
        self.output.wake();
        if room {
            self.room.notify();
        }
        ok
    }

    /// Whether the reader should read more now.
    fn wants_read(&self) -> bool {
        let s = self.state.borrow();
        !s.lost && s.conn.wants_read()
    }
}

/// Why the reader stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReadEnd {
    /// The peer closed its side (or the socket failed).
    Eof,
    /// The connection failed: a GOAWAY waits to be flushed.
    Failed,
    /// The connection was marked lost.
    Lost,
}

/// Reads and handles frames until the peer closes, the connection fails or is lost.
async fn read_loop(
    conn: &Rc<H2Conn>,
    r: &mut ConnRead,
    buf: &mut ReadBuf,
    on: &mut impl OnEvent,
) -> ReadEnd {
    loop {
        if !conn.process(buf, on) {
            return ReadEnd::Failed;
        }
        if conn.is_lost() {
            return ReadEnd::Lost;
        }
        if !conn.wants_read() {
            conn.drained.wait().await;
            continue;
        }
        match buf.fill(r).await {
            Ok(0) | Err(_) => return ReadEnd::Eof,
            Ok(_) => {}
        }
    }
}

/// Writes what the engine produces until the connection is finished (or lost) and flushed.
async fn write_loop(conn: &H2Conn, w: &mut ConnWrite) {
    let mut spare = Vec::new();
    loop {
        let (out, done) = {
            let mut s = conn.state.borrow_mut();
            let State { conn: engine, slots, lost } = &mut *s;
            let out = engine.take_out(std::mem::take(&mut spare));
            while let Some((stream, _)) = engine.take_sent() {
                if let Some(w) = slots.get_mut(&stream.get()).and_then(|s| s.send_waker.take()) {
                    w.wake();
                }
            }
            (out, *lost || engine.is_finished())
        };
        if out.is_empty() {
            spare = out;
            if done {
                return;
            }
            conn.drained.wake();
            conn.output.wait().await;
            // The tasks already queued behind this one may add output too (other streams'
            // heads, relayed responses): let them, so that one write carries what the whole
            // turn of the worker's loop produced for this connection.
            fulcrum_util::yield_now().await;
            continue;
        }
        let (result, written) = w.write_all(out).await;
        spare = written;
        if result.is_err() {
            return;
        }
        conn.drained.wake();
    }
}

/// Drives `conn` over a socket: reads (starting with what `buf` already holds) and writes
/// until the connection is finished, lost, or `stop` resolves (then it closes at once). `stop`
/// is polled after the reader and before the writer in every turn, and goes on being polled
/// while the connection flushes and lingers (a client connection runs its streams in it).
///
/// A connection that ends while the peer may still be sending (a GOAWAY for an error or a
/// flood, a graceful finish) is closed the lingering way: our side shut down, then the peer's
/// bytes read and dropped for at most [`LINGER`] (or until it closes), so unread input does not
/// make the kernel reset the connection and destroy the GOAWAY on its way.
pub(crate) async fn drive(
    conn: &Rc<H2Conn>,
    mut r: ConnRead,
    mut w: ConnWrite,
    mut buf: ReadBuf,
    on: &mut impl OnEvent,
    stop: impl Future<Output = ()>,
) {
    let mut stop = pin!(stop);
    let linger = {
        let mut reader = pin!(read_loop(conn, &mut r, &mut buf, on));
        let mut writer = pin!(write_loop(conn, &mut w));
        // In this order: what the reader takes in (a client's new streams included) is acted
        // on by `stop` and then written, all in the same turn.
        let ended = monoio::select! {
            biased;
            end = &mut reader => Some(end),
            _ = &mut stop => Some(ReadEnd::Lost),
            _ = &mut writer => None,
        };
        match ended {
            Some(ReadEnd::Lost) => false,
            // The connection failed (a GOAWAY waits) or the peer stopped sending: flush what
            // is left for it, then linger after a failure (unless `stop` came first).
            Some(end) => {
                conn.state.borrow_mut().lost = true;
                conn.output.wake();
                monoio::select! {
                    _ = monoio::time::timeout(FLUSH_TIMEOUT, &mut writer) => {
                        end == ReadEnd::Failed
                    }
                    _ = &mut stop => false,
                }
            }
            // Finished and flushed.
            None => true,
        }
    };
    conn.lose();
    // Every way here on which `stop` resolved leaves `linger` false, so it may be polled again.
    if linger {
        let tail = async {
            let _ = w.shutdown().await;
            let _ = monoio::time::timeout(LINGER, drain(&mut r)).await;
        };
        monoio::select! {
            _ = tail => {}
            _ = &mut stop => {}
        }
    }
}

/// How long a closing connection keeps reading (and dropping) what its peer still sends.
const LINGER: Duration = Duration::from_secs(1);

/// Most bytes read and dropped while lingering.
const LINGER_BYTES: usize = 4 << 20;

/// Reads and drops the peer's bytes until it closes or [`LINGER_BYTES`] went by.
async fn drain(r: &mut ConnRead) {
    use monoio::io::AsyncReadRent;
    let mut buf = Vec::with_capacity(16 * 1024);
    let mut total = 0;
    while total < LINGER_BYTES {
        buf.clear();
        let (result, back) = r.read(buf).await;
        buf = back;
        match result {
            Ok(n) if n > 0 => total += n,
            _ => return,
        }
    }
}

/// Whether `code` with `remote` means the peer refused the stream unprocessed.
pub(crate) fn is_refusal(code: ErrorCode, remote: bool) -> bool {
    remote && code == ErrorCode::REFUSED_STREAM
}
