//! The HTTP/2 connection state machine, for both ends of a proxy: the server side of a client
//! connection and the client side of an upstream connection. Sans-IO and single-threaded: it
//! runs on the thread that owns the connection (in Fulcrum, the monoio worker that accepted or
//! dialled it), and a driver moves bytes between it and the socket.
//!
//! The driver's part:
//! - feed what the socket delivered to [`Connection::recv`], one call per frame: it parses the
//!   frame in place, applies it (stream states of RFC 9113 section 5.1, SETTINGS, flow control,
//!   PING, GOAWAY, the defences) and returns at most one [`Event`], borrowing from the input
//!   (DATA payloads, single-frame header blocks) or from the connection (HPACK output, field
//!   blocks joined from CONTINUATION frames). Everything it answers by itself (SETTINGS and PING
//!   acknowledgements, WINDOW_UPDATE, RST_STREAM, GOAWAY) goes to the write buffer;
//! - send what the write buffer holds ([`Connection::take_out`]) and stop reading while
//!   [`Connection::wants_read`] is false: the buffer is full (the peer does not read) or the
//!   connection failed;
//! - act for the application: [`Connection::send_request`], [`Connection::send_response`],
//!   [`Connection::send_data`], [`Connection::send_trailers`], [`Connection::reset`],
//!   [`Connection::release`] (flow-control credit back to the peer once received DATA is
//!   consumed), [`Connection::ping`], [`Connection::go_away`]; each writes its frames straight
//!   into the write buffer, HPACK blocks included.
//!
//! Memory is bounded by the configuration whatever the peer does: streams by
//! `max_concurrent_streams`, a stream's unsent DATA by `max_send_buffer` (a driver that takes
//! DATA from another connection only as fast as [`Event::Data`] releases come back never
//! exceeds the window it advertised there), the write buffer by `max_write_buffer` plus one
//! frame per call (reading stops while it is full), a field block by its cap, HPACK by its
//! limits.
//!
//! Every attack listed in the module [`guard`] docs is answered within a bounded number of
//! frames with GOAWAY(ENHANCE_YOUR_CALM), and protocol errors with the GOAWAY or RST_STREAM
//! RFC 9113 names.

mod guard;
mod recv;
mod send;
mod stream;

use std::collections::VecDeque;
use std::fmt;

use crate::frame::{self, ErrorCode, StreamId, Violation};
use crate::hpack::{Decoder, Encoder, HeaderBlock, HpackError};
use crate::validate::{MessageError, RequestPseudo};

use guard::Guard;
use stream::Streams;

pub use send::Sent;
pub use stream::IdHasher;

/// Which end of the connection we are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// We accepted the connection: the peer opens streams with requests.
    Server,
    /// We dialled it: we open streams with requests, the peer answers.
    Client,
}

/// Limits on what a peer may make the connection do before GOAWAY(ENHANCE_YOUR_CALM).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Stream resets per second: those the peer sends before a stream's final response
    /// (rapid reset, CVE-2023-44487) plus those it makes us send (MadeYouReset, CVE-2025-8671).
    pub max_resets_per_sec: u32,
    /// SETTINGS, PING, unknown frame types and frames on closed streams, per second.
    pub max_control_frames_per_sec: u32,
    /// Empty DATA frames without END_STREAM and empty field block fragments, per second.
    pub max_empty_frames_per_sec: u32,
    /// CONTINUATION frames in one field block (the CVE-2024-27316 family).
    pub max_continuation_frames: u32,
    /// WINDOW_UPDATE frames allowed per DATA frame we sent (Envoy's ratio).
    pub window_updates_per_data_frame: u32,
    /// PRIORITY frames allowed per stream opened.
    pub priority_frames_per_stream: u32,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_resets_per_sec: 200,
            max_control_frames_per_sec: 5000,
            max_empty_frames_per_sec: 100,
            max_continuation_frames: 32,
            window_updates_per_data_frame: 10,
            priority_frames_per_stream: 100,
        }
    }
}

/// What a connection advertises and how much it buffers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// Streams the peer may open at once (server), or most we open at once (client, also
    /// capped by the peer's SETTINGS_MAX_CONCURRENT_STREAMS).
    pub max_concurrent_streams: u32,
    /// SETTINGS_INITIAL_WINDOW_SIZE we advertise: each stream's receive window.
    pub initial_stream_window: u32,
    /// The connection's receive window (raised from 65535 with a WINDOW_UPDATE at start).
    pub initial_connection_window: u32,
    /// SETTINGS_MAX_FRAME_SIZE we advertise.
    pub max_frame_size: u32,
    /// SETTINGS_MAX_HEADER_LIST_SIZE we advertise and enforce on decoded blocks.
    pub max_header_list_size: u32,
    /// SETTINGS_HEADER_TABLE_SIZE we advertise (the peer encoder's dynamic table limit).
    pub header_table_size: u32,
    /// DATA bytes one stream may hold that the peer's window does not let out yet.
    pub max_send_buffer: usize,
    /// Write buffer size above which no more frames are read and no queued DATA is written.
    pub max_write_buffer: usize,
    /// Server: advertise SETTINGS_ENABLE_CONNECT_PROTOCOL and accept extended CONNECT
    /// requests (`:protocol`, RFC 8441); without it such a request is malformed.
    pub enable_connect_protocol: bool,
    /// The defences.
    pub limits: Limits,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            max_concurrent_streams: 256,
            initial_stream_window: 1 << 20,
            initial_connection_window: 8 << 20,
            max_frame_size: frame::DEFAULT_MAX_FRAME_SIZE,
            max_header_list_size: 64 * 1024,
            header_table_size: 4096,
            max_send_buffer: 1 << 20,
            max_write_buffer: 256 * 1024,
            enable_connect_protocol: false,
            limits: Limits::default(),
        }
    }
}

impl Config {
    /// Largest encoded field block accepted across HEADERS and CONTINUATION frames: twice
    /// the decoded limit (Huffman codes may be longer than the bytes they code), at least one
    /// frame.
    fn max_block(&self) -> usize {
        (self.max_header_list_size as usize).saturating_mul(2).max(self.max_frame_size as usize)
    }
}

/// The flood a peer was caught at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flood {
    /// Stream resets (the peer's early ones and those it provoked) above the rate.
    Resets,
    /// SETTINGS, PING, unknown or ignored frames above the rate.
    Control,
    /// Empty frames above the rate.
    EmptyFrames,
    /// WINDOW_UPDATE frames out of proportion to the DATA we sent.
    WindowUpdates,
    /// PRIORITY frames out of proportion to the streams opened.
    Priority,
    /// More CONTINUATION frames in one block than allowed.
    Continuations,
    /// A field block larger than its cap.
    HeaderBlock,
}

impl fmt::Display for Flood {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Flood::Resets => "too many stream resets",
            Flood::Control => "too many control frames",
            Flood::EmptyFrames => "too many empty frames",
            Flood::WindowUpdates => "too many WINDOW_UPDATE frames",
            Flood::Priority => "too many PRIORITY frames",
            Flood::Continuations => "too many CONTINUATION frames",
            Flood::HeaderBlock => "field block too large",
        })
    }
}

/// Why the connection failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// A frame broke a rule of RFC 9113 section 4 or 6.
    Frame(Violation),
    /// The HPACK state cannot be kept.
    Hpack(HpackError),
    /// The client preface was wrong.
    Preface,
    /// The peer's first frame was not SETTINGS.
    NoSettings,
    /// A frame other than the expected CONTINUATION arrived inside a field block, or a
    /// CONTINUATION outside one.
    Continuation,
    /// A frame for a stream that was never opened.
    IdleStream,
    /// A new stream whose identifier is not above every earlier one, or of the wrong parity.
    StreamId,
    /// A HEADERS on a stream both sides had ended.
    ClosedStream,
    /// PUSH_PROMISE, which we never allow.
    Push,
    /// The peer sent more than the connection window allowed.
    FlowControl,
    /// A WINDOW_UPDATE or SETTINGS pushed a send window above 2^31-1.
    WindowOverflow,
    /// A server announced ENABLE_PUSH = 1.
    EnablePush,
    /// A defence limit.
    Flood(Flood),
    /// The application closed the connection with an error code.
    Local,
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cause::Frame(v) => fmt::Display::fmt(v, f),
            Cause::Hpack(e) => fmt::Display::fmt(e, f),
            Cause::Preface => f.write_str("invalid connection preface"),
            Cause::NoSettings => f.write_str("first frame not SETTINGS"),
            Cause::Continuation => f.write_str("field block interrupted or not started"),
            Cause::IdleStream => f.write_str("frame on an idle stream"),
            Cause::StreamId => f.write_str("unexpected stream identifier"),
            Cause::ClosedStream => f.write_str("HEADERS on a closed stream"),
            Cause::Push => f.write_str("PUSH_PROMISE"),
            Cause::FlowControl => f.write_str("connection window exceeded"),
            Cause::WindowOverflow => f.write_str("send window above 2^31-1"),
            Cause::EnablePush => f.write_str("server enabled push"),
            Cause::Flood(flood) => fmt::Display::fmt(flood, f),
            Cause::Local => f.write_str("closed by the application"),
        }
    }
}

/// A connection error: GOAWAY with `code` went to the write buffer; flush it and close.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("HTTP/2 connection error {code}: {cause}")]
pub struct ConnError {
    /// The GOAWAY error code.
    pub code: ErrorCode,
    /// What happened.
    pub cause: Cause,
}

/// Why the application's request to send was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// No such open stream (it ended or was reset).
    #[error("no such stream")]
    UnknownStream,
    /// The stream's state does not allow this (a second response head, DATA before a head or
    /// after the end, a request on a server connection).
    #[error("not allowed in the stream's state")]
    State,
    /// No new stream may open: GOAWAY was sent or received, or the peer's concurrency limit
    /// is reached, or stream identifiers ran out.
    #[error("no new stream allowed")]
    Refused,
    /// The connection failed.
    #[error("connection closed")]
    Closed,
}

/// One thing the peer did that the application must know about.
#[derive(Debug, Clone, Copy)]
pub enum Event<'a> {
    /// Server: a request opened stream `stream` (validated by RFC 9113 section 8).
    Request {
        /// The new stream.
        stream: StreamId,
        /// Its pseudo-header fields.
        head: RequestPseudo<'a>,
        /// All its fields in order, pseudo-header fields first.
        fields: HeaderBlock<'a>,
        /// No body follows.
        end_stream: bool,
    },
    /// Client: a response head for `stream`: informational (1xx, more follow) or final.
    Response {
        /// The stream.
        stream: StreamId,
        /// `:status`.
        status: u16,
        /// All its fields in order, `:status` first.
        fields: HeaderBlock<'a>,
        /// No body follows.
        end_stream: bool,
    },
    /// Trailers, which end the stream's incoming side.
    Trailers {
        /// The stream.
        stream: StreamId,
        /// The trailer fields.
        fields: HeaderBlock<'a>,
    },
    /// DATA for `stream`; return `data.len()` with [`Connection::release`] once consumed.
    Data {
        /// The stream.
        stream: StreamId,
        /// The payload (padding removed and already released).
        data: &'a [u8],
        /// The incoming side ends here.
        end_stream: bool,
    },
    /// The stream ended abruptly: `remote`: the peer reset it (or refused it by GOAWAY, with
    /// REFUSED_STREAM: it was not processed and may be sent again); otherwise we reset it for a
    /// protocol error of the peer's.
    Reset {
        /// The stream.
        stream: StreamId,
        /// The RST_STREAM code.
        code: ErrorCode,
        /// The peer reset it.
        remote: bool,
    },
    /// The peer sent GOAWAY: no new streams; streams above `last_stream_id` are reported
    /// refused.
    GoAway {
        /// Highest stream the peer may have processed.
        last_stream_id: StreamId,
        /// Why.
        code: ErrorCode,
        /// The peer's diagnostic data.
        debug_data: &'a [u8],
    },
    /// The peer's SETTINGS were applied (the first ones make the connection ready).
    Settings,
    /// The answer to one of our PINGs.
    Pong {
        /// Its opaque data.
        data: [u8; 8],
    },
}

/// Events decided while handling a frame that had another (resets of refused streams after
/// GOAWAY), given out by the following [`Connection::recv`] calls.
#[derive(Debug, Clone, Copy)]
enum Note {
    Reset { stream: StreamId, code: ErrorCode, remote: bool },
}

impl Note {
    fn event<'a>(self) -> Event<'a> {
        match self {
            Note::Reset { stream, code, remote } => Event::Reset { stream, code, remote },
        }
    }
}

/// What one [`Connection::recv`] call did.
#[derive(Debug)]
pub struct Received<'a> {
    /// Input bytes consumed (drop them from the read buffer once `event` is handled).
    pub used: usize,
    /// What happened, if the application must know.
    pub event: Option<Event<'a>>,
}

impl Received<'_> {
    /// Nothing consumed and nothing to report: read more input (or, while
    /// [`Connection::wants_read`] is false, write first).
    pub fn is_idle(&self) -> bool {
        self.used == 0 && self.event.is_none()
    }
}

/// The peer's settings as they apply to what we send.
#[derive(Debug, Clone, Copy)]
struct PeerSettings {
    max_concurrent_streams: u32,
    initial_window: u32,
    max_frame_size: u32,
}

impl Default for PeerSettings {
    fn default() -> PeerSettings {
        PeerSettings {
            max_concurrent_streams: u32::MAX,
            initial_window: 65_535,
            max_frame_size: frame::DEFAULT_MAX_FRAME_SIZE,
        }
    }
}

/// A field block being assembled from HEADERS and CONTINUATION frames.
#[derive(Debug, Clone, Copy)]
struct Continuation {
    stream: StreamId,
    end_stream: bool,
    self_dependent: bool,
    frames: u32,
}

/// One HTTP/2 connection (see the module docs).
#[derive(Debug)]
pub struct Connection {
    /// The peer's field blocks: decoded fields borrow it until the next block.
    decoder: Decoder,
    /// A field block split over CONTINUATION frames, joined (bounded by the block cap).
    block: Vec<u8>,
    /// Everything else.
    c: Core,
}

/// The connection state apart from what decoded fields borrow.
#[derive(Debug)]
struct Core {
    role: Role,
    config: Config,
    encoder: Encoder,
    /// Frames to write to the peer.
    out: Vec<u8>,
    streams: Streams,
    guard: Guard,
    /// The driver's clock (ms), for the rate limits.
    now: u64,
    /// Server: the client preface has not been read yet.
    preface_pending: bool,
    /// The peer's first SETTINGS arrived.
    ready: bool,
    /// The peer acknowledged our SETTINGS.
    acked: bool,
    peer: PeerSettings,
    /// Credit the peer has left on the connection, and released bytes not yet returned.
    recv_window: i64,
    recv_unacked: u32,
    /// Credit we have left on the connection.
    send_window: i64,
    /// Highest stream identifier the peer opened.
    last_peer_id: StreamId,
    /// Server: highest stream acted on (what a GOAWAY names as the last processed).
    last_accepted: StreamId,
    /// Client: the next stream identifier we open.
    next_local_id: u32,
    continuation: Option<Continuation>,
    /// GOAWAY we sent (its last stream) and received.
    goaway_sent: Option<StreamId>,
    goaway_received: Option<StreamId>,
    error: Option<ConnError>,
    notes: VecDeque<Note>,
    /// Streams with queued DATA or trailers, in the order they wait.
    pending: VecDeque<StreamId>,
    /// Queued DATA written since the application last asked (stream, bytes).
    sent: VecDeque<(StreamId, usize)>,
}

impl Connection {
    /// A connection in `role`, its preface (client), SETTINGS and connection WINDOW_UPDATE
    /// already in the write buffer.
    pub fn new(role: Role, config: Config) -> Connection {
        // Until the peer acknowledges our table size it may still use the default one.
        let table = (config.header_table_size as usize).max(crate::hpack::DEFAULT_TABLE_SIZE);
        let decoder = Decoder::new(table, config.max_header_list_size as usize);
        let mut c = Core {
            role,
            config,
            encoder: Encoder::new(),
            out: Vec::with_capacity(4096),
            streams: Streams::default(),
            guard: Guard::new(config.limits),
            now: 0,
            preface_pending: role == Role::Server,
            ready: false,
            acked: false,
            peer: PeerSettings::default(),
            recv_window: 65_535,
            recv_unacked: 0,
            send_window: 65_535,
            last_peer_id: StreamId::ZERO,
            last_accepted: StreamId::ZERO,
            next_local_id: 1,
            continuation: None,
            goaway_sent: None,
            goaway_received: None,
            error: None,
            notes: VecDeque::new(),
            pending: VecDeque::new(),
            sent: VecDeque::new(),
        };
        c.start();
        Connection { decoder, block: Vec::new(), c }
    }

    /// Our role.
    pub fn role(&self) -> Role {
        self.c.role
    }

    /// Sets the clock the rate limits use (milliseconds from any fixed origin; a clock that
    /// stays put makes every limit count from the connection's start).
    pub fn set_now(&mut self, now_ms: u64) {
        self.c.now = now_ms;
    }

    /// The peer's first SETTINGS arrived: its limits are known.
    pub fn is_ready(&self) -> bool {
        self.c.ready
    }

    /// The peer acknowledged our SETTINGS.
    pub fn settings_acked(&self) -> bool {
        self.c.acked
    }

    /// Whether more input should be read: not while the write buffer is full or after a
    /// connection error.
    pub fn wants_read(&self) -> bool {
        self.c.error.is_none() && !self.c.out_full()
    }

    /// Bytes waiting in the write buffer.
    pub fn out_len(&self) -> usize {
        self.c.out.len()
    }

    /// Whether the connection is over: it failed, or a GOAWAY went (or, for a client, came)
    /// and no stream is left. The driver flushes the write buffer and closes.
    pub fn is_finished(&self) -> bool {
        let c = &self.c;
        let goaway =
            c.goaway_sent.is_some() || (c.role == Role::Client && c.goaway_received.is_some());
        c.error.is_some() || (goaway && c.streams.len() == 0)
    }

    /// The connection error, once there is one.
    pub fn error(&self) -> Option<ConnError> {
        self.c.error
    }

    /// GOAWAY was sent or received: no new stream will open.
    pub fn is_going_away(&self) -> bool {
        self.c.goaway_sent.is_some() || self.c.goaway_received.is_some()
    }

    /// Open streams.
    pub fn active_streams(&self) -> usize {
        self.c.streams.len()
    }

    /// Client: how many streams we may open at once now (the peer's limit, capped by ours).
    pub fn max_streams(&self) -> usize {
        self.c.peer.max_concurrent_streams.min(self.c.config.max_concurrent_streams) as usize
    }

    /// Client: whether [`Connection::send_request`] would open a stream now.
    pub fn can_open_stream(&self) -> bool {
        let c = &self.c;
        c.role == Role::Client
            && c.error.is_none()
            && !self.is_going_away()
            && c.next_local_id <= StreamId::MAX.get()
            && c.streams.len() < self.max_streams()
    }

    /// Whether `stream` is open (not ended both ways, not reset).
    pub fn is_open(&self, stream: StreamId) -> bool {
        self.c.streams.get(stream).is_some()
    }

    /// Heap bytes the connection holds (write buffer, queues, HPACK, block assembly), for
    /// memory accounting and the bounded-memory tests.
    pub fn heap_bytes(&self) -> usize {
        let c = &self.c;
        let queued: usize = c.streams.queued_capacity();
        c.out.capacity()
            + queued
            + self.decoder.heap_bytes()
            + self.block.capacity()
            + c.streams.len() * std::mem::size_of::<stream::Stream>()
    }
}

impl Core {
    /// Writes what opens the connection: the client preface, our SETTINGS and the
    /// connection window raise.
    fn start(&mut self) {
        use crate::frame::Setting;
        let cfg = self.config;
        if self.role == Role::Client {
            self.out.extend_from_slice(frame::PREFACE);
        }
        let mut settings = Vec::with_capacity(6);
        if cfg.header_table_size != 4096 {
            settings.push(Setting::HeaderTableSize(cfg.header_table_size));
        }
        match self.role {
            Role::Client => settings.push(Setting::EnablePush(false)),
            Role::Server => {
                settings.push(Setting::MaxConcurrentStreams(cfg.max_concurrent_streams));
                if cfg.enable_connect_protocol {
                    settings.push(Setting::EnableConnectProtocol(true));
                }
            }
        }
        settings.push(Setting::InitialWindowSize(cfg.initial_stream_window));
        if cfg.max_frame_size != frame::DEFAULT_MAX_FRAME_SIZE {
            settings.push(Setting::MaxFrameSize(cfg.max_frame_size));
        }
        settings.push(Setting::MaxHeaderListSize(cfg.max_header_list_size));
        frame::write_settings(&mut self.out, &settings);
        let raise = i64::from(cfg.initial_connection_window) - 65_535;
        if raise > 0 {
            // At most 2^31-1 - 65535: a valid increment.
            frame::write_window_update(&mut self.out, StreamId::ZERO, raise as u32);
            self.recv_window += raise;
        }
    }

    fn out_full(&self) -> bool {
        self.out.len() >= self.config.max_write_buffer
    }

    /// Fails the connection: GOAWAY with `code` goes out (once), queued DATA is dropped, and
    /// every later call reports the error.
    fn fail(&mut self, code: ErrorCode, cause: Cause) -> ConnError {
        if let Some(e) = self.error {
            return e;
        }
        let error = ConnError { code, cause };
        let last = match self.role {
            Role::Server => self.last_accepted,
            Role::Client => StreamId::ZERO,
        };
        frame::write_goaway(&mut self.out, last, code, b"");
        self.error = Some(error);
        self.pending.clear();
        error
    }

    /// Fails the connection for a flood.
    fn calm(&mut self, flood: Flood) -> ConnError {
        self.fail(ErrorCode::ENHANCE_YOUR_CALM, Cause::Flood(flood))
    }
}

/// The malformed-message rules of RFC 9113 section 8 the validator leaves to the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Malformed {
    /// The validator's rules.
    Message,
    /// `content-length` not a number, or several that differ.
    ContentLength,
    /// `host` names another authority than `:authority`.
    HostMismatch,
    /// DATA disagrees with `content-length`.
    LengthMismatch,
    /// A 1xx head with END_STREAM, or a 101.
    Informational,
    /// Trailers without END_STREAM, or DATA before the response head.
    Sequence,
    /// The head depends on its own stream.
    SelfDependency,
    /// `:protocol` without SETTINGS_ENABLE_CONNECT_PROTOCOL from us (RFC 8441 section 4).
    ExtendedConnect,
}

impl From<MessageError> for Malformed {
    fn from(_: MessageError) -> Malformed {
        Malformed::Message
    }
}

#[cfg(test)]
mod tests;
