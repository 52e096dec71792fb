//! HTTP/2 as raw frames over std sockets, for what a well-behaved HTTP/2 library will not do or
//! will not show: [`H2Conn`], a client that sends exactly the frames a test asks for (more
//! streams than the server allows, resets at any rate) and reports every frame it receives
//! (RST_STREAM codes, GOAWAY, whether a response really ended with END_STREAM); and
//! [`RawH2Backend`], an h2c backend that counts the streams it sees per connection at the frame
//! level and can refuse, hold or ignore them.
//!
//! Header blocks are sent as HPACK literals without indexing (valid for any peer, no table
//! state); blocks received by the client are decoded with `fluke-hpack`. The backend never
//! decodes what it receives: it needs only the frame boundaries.

use std::collections::{HashSet, VecDeque};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The client connection preface.
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Frame types (RFC 9113 section 6).
pub const DATA: u8 = 0x0;
pub const HEADERS: u8 = 0x1;
pub const RST_STREAM: u8 = 0x3;
pub const PUSH_PROMISE: u8 = 0x5;
pub const SETTINGS: u8 = 0x4;
pub const PING: u8 = 0x6;
pub const GOAWAY: u8 = 0x7;
pub const WINDOW_UPDATE: u8 = 0x8;
pub const CONTINUATION: u8 = 0x9;

/// Frame flags.
pub const END_STREAM: u8 = 0x1;
pub const ACK: u8 = 0x1;
pub const END_HEADERS: u8 = 0x4;
pub const PADDED: u8 = 0x8;
pub const PRIORITY: u8 = 0x20;

/// Setting identifiers.
pub const SETTINGS_ENABLE_PUSH: u16 = 0x2;
pub const SETTINGS_MAX_CONCURRENT_STREAMS: u16 = 0x3;
pub const SETTINGS_INITIAL_WINDOW_SIZE: u16 = 0x4;

/// Error codes (RFC 9113 section 7).
pub const NO_ERROR: u32 = 0x0;
pub const PROTOCOL_ERROR: u32 = 0x1;
pub const CANCEL: u32 = 0x8;
pub const REFUSED_STREAM: u32 = 0x7;
pub const ENHANCE_YOUR_CALM: u32 = 0xb;

/// Fields a response may not carry in HTTP/2 (RFC 9113 section 8.2.2).
const CONNECTION_SPECIFIC: [&str; 5] =
    ["connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade"];

/// One frame.
#[derive(Debug, Clone)]
pub struct Frame {
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
    pub payload: Vec<u8>,
}

/// A frame's bytes.
pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut out = Vec::with_capacity(9 + payload.len());
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.extend_from_slice(&[kind, flags]);
    out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// A SETTINGS frame with `settings`.
pub fn settings(settings: &[(u16, u32)]) -> Vec<u8> {
    let payload: Vec<u8> = settings
        .iter()
        .flat_map(|(id, v)| [&id.to_be_bytes()[..], &v.to_be_bytes()].concat())
        .collect();
    frame(SETTINGS, 0, 0, &payload)
}

fn read_frame(r: &mut impl Read) -> io::Result<Frame> {
    let mut h = [0u8; 9];
    r.read_exact(&mut h)?;
    let len = u32::from_be_bytes([0, h[0], h[1], h[2]]) as usize;
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload)?;
    let stream = u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff;
    Ok(Frame { kind: h[3], flags: h[4], stream, payload })
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    b.get(at..at + 4).map_or(0, |s| u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}

/// The header block fragment of a HEADERS frame (padding and priority removed).
fn header_fragment(f: &Frame) -> &[u8] {
    let mut p = &f.payload[..];
    let mut pad = 0;
    if f.flags & PADDED != 0 && !p.is_empty() {
        pad = usize::from(p[0]);
        p = &p[1..];
    }
    if f.flags & PRIORITY != 0 && p.len() >= 5 {
        p = &p[5..];
    }
    &p[..p.len().saturating_sub(pad)]
}

/// An HPACK integer with an `n`-bit prefix, the byte's high bits set to `flags`.
fn hpack_int(out: &mut Vec<u8>, flags: u8, n: u8, mut value: usize) {
    let max = (1usize << n) - 1;
    if value < max {
        out.push(flags | value as u8);
        return;
    }
    out.push(flags | max as u8);
    value -= max;
    while value >= 128 {
        out.push((value % 128) as u8 | 0x80);
        value /= 128;
    }
    out.push(value as u8);
}

/// A header block of literal fields without indexing (names lowercased by the caller).
pub fn header_block(fields: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in fields {
        out.push(0);
        hpack_int(&mut out, 0, 7, name.len());
        out.extend_from_slice(name.as_bytes());
        hpack_int(&mut out, 0, 7, value.len());
        out.extend_from_slice(value.as_bytes());
    }
    out
}

// ---------------------------------------------------------------------------------------------
// The client
// ---------------------------------------------------------------------------------------------

/// Something the server sent (SETTINGS and PING are acknowledged by the reader itself).
#[derive(Debug, Clone)]
pub enum Event {
    Settings(Vec<(u16, u32)>),
    Headers {
        stream: u32,
        fields: Vec<(String, String)>,
        end_stream: bool,
    },
    Data {
        stream: u32,
        data: Vec<u8>,
        end_stream: bool,
    },
    Reset {
        stream: u32,
        code: u32,
    },
    GoAway {
        last_stream: u32,
        code: u32,
    },
    /// A frame the server should not send: its kind, or a header block HPACK cannot decode.
    Invalid(String),
    /// The connection closed (EOF or an error).
    Closed,
}

/// How a stream ended, as the client saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// A frame with END_STREAM: the response is complete.
    Stream,
    /// RST_STREAM with this code.
    Reset(u32),
    /// GOAWAY (code, last stream id) that covers this stream, or an error GOAWAY.
    GoAway(u32, u32),
    /// The connection closed first.
    Closed,
    /// Nothing ended it in time.
    Timeout,
}

/// Everything one stream received.
#[derive(Debug, Clone)]
pub struct StreamOutcome {
    /// The header blocks, in order: interim heads, the response head, trailers.
    pub heads: Vec<Vec<(String, String)>>,
    pub data: Vec<u8>,
    pub end: End,
    /// Frames that break the protocol, anywhere on the connection meanwhile.
    pub invalid: Vec<String>,
}

impl StreamOutcome {
    fn status_of(head: &[(String, String)]) -> Option<u16> {
        head.iter().find(|(n, _)| n == ":status").and_then(|(_, v)| v.parse().ok())
    }

    /// The final status (the first head whose status is not 1xx), if a response head came.
    pub fn status(&self) -> Option<u16> {
        self.heads.iter().filter_map(|h| Self::status_of(h)).find(|s| *s >= 200)
    }

    /// Interim (1xx) statuses received.
    pub fn interim(&self) -> Vec<u16> {
        self.heads.iter().filter_map(|h| Self::status_of(h)).filter(|s| *s < 200).collect()
    }

    /// A response header's value (from the final head).
    pub fn header(&self, name: &str) -> Option<&str> {
        let head = self.heads.iter().find(|h| Self::status_of(h).is_some_and(|s| s >= 200))?;
        head.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// Whether the response ended cleanly (END_STREAM).
    pub fn ended_cleanly(&self) -> bool {
        self.end == End::Stream
    }

    /// What makes this response invalid HTTP/2 (RFC 9113 section 8): connection-specific or
    /// uppercase fields, a `content-length` that is repeated or disagrees with the DATA of a
    /// response that ended cleanly, an error GOAWAY, frames the client could not accept.
    pub fn violations(&self) -> Vec<String> {
        let mut out = self.invalid.clone();
        for head in &self.heads {
            for (name, value) in head {
                if CONNECTION_SPECIFIC.contains(&name.as_str()) {
                    out.push(format!("connection-specific field {name}: {value}"));
                }
                if name.bytes().any(|b| b.is_ascii_uppercase()) {
                    out.push(format!("uppercase field name {name}"));
                }
            }
        }
        if let Some(head) = self.heads.iter().find(|h| Self::status_of(h).is_some_and(|s| s >= 200))
        {
            let lengths: Vec<&str> = head
                .iter()
                .filter(|(n, _)| n == "content-length")
                .map(|(_, v)| v.as_str())
                .collect();
            if lengths.len() > 1 {
                out.push(format!("content-length repeated: {lengths:?}"));
            }
            if let [one] = lengths[..] {
                let digits = !one.is_empty() && one.bytes().all(|b| b.is_ascii_digit());
                match one.parse::<usize>() {
                    Ok(n) if digits && self.ended_cleanly() && n != self.data.len() => {
                        out.push(format!(
                            "content-length {n} but {} DATA bytes before END_STREAM",
                            self.data.len()
                        ));
                    }
                    Ok(_) if digits => {}
                    _ => out.push(format!("content-length {one:?} is not a number")),
                }
            }
        }
        if let End::GoAway(code, _) = self.end
            && code != NO_ERROR
        {
            out.push(format!("GOAWAY with error code {code:#x}"));
        }
        out
    }
}

/// A raw HTTP/2 client connection (prior knowledge h2c).
pub struct H2Conn {
    writer: Arc<Mutex<TcpStream>>,
    events: Receiver<Event>,
    backlog: VecDeque<Event>,
    next_stream: u32,
    authority: String,
    /// The server's first SETTINGS.
    pub server_settings: Vec<(u16, u32)>,
}

impl H2Conn {
    /// Connects, sends the preface with a 16 MiB stream window (replenished as DATA arrives),
    /// and waits for the server's SETTINGS.
    pub fn connect(addr: SocketAddr) -> Self {
        Self::connect_with(addr, 16 << 20, true)
    }

    /// A slow reader: a stream window of `window` bytes, never replenished.
    pub fn connect_slow_reader(addr: SocketAddr, window: u32) -> Self {
        Self::connect_with(addr, window, false)
    }

    fn connect_with(addr: SocketAddr, window: u32, replenish: bool) -> Self {
        let stream = TcpStream::connect(addr).unwrap();
        let _ = stream.set_nodelay(true);
        let writer = Arc::new(Mutex::new(stream.try_clone().unwrap()));
        let mut hello = PREFACE.to_vec();
        hello
            .extend(settings(&[(SETTINGS_ENABLE_PUSH, 0), (SETTINGS_INITIAL_WINDOW_SIZE, window)]));
        if replenish {
            hello.extend(frame(WINDOW_UPDATE, 0, 0, &(1u32 << 30).to_be_bytes()));
        }
        writer.lock().unwrap().write_all(&hello).unwrap();
        let (tx, events) = channel();
        let w = writer.clone();
        std::thread::spawn(move || client_reader(stream, w, tx, replenish));
        let mut conn = Self {
            writer,
            events,
            backlog: VecDeque::new(),
            next_stream: 1,
            authority: addr.to_string(),
            server_settings: Vec::new(),
        };
        match conn.events.recv_timeout(Duration::from_secs(10)) {
            Ok(Event::Settings(s)) => conn.server_settings = s,
            other => panic!("no SETTINGS from the server first: {other:?}"),
        }
        conn
    }

    /// `GET path` on a fresh connection: everything its stream received within 10 s.
    pub fn get_once(addr: SocketAddr, path: &str) -> StreamOutcome {
        let mut c = Self::connect(addr);
        let id = c.request("GET", path, &[], true);
        c.response(id, Duration::from_secs(10))
    }

    /// The server's SETTINGS_MAX_CONCURRENT_STREAMS, if it sent one.
    pub fn max_concurrent_streams(&self) -> Option<u32> {
        self.server_settings
            .iter()
            .find(|(id, _)| *id == SETTINGS_MAX_CONCURRENT_STREAMS)
            .map(|s| s.1)
    }

    /// Takes the next stream identifier for a stream the caller opens with raw frames.
    pub fn next_stream_id(&mut self) -> u32 {
        let id = self.next_stream;
        self.next_stream += 2;
        id
    }

    /// Writes raw bytes.
    pub fn send_raw(&self, bytes: &[u8]) -> io::Result<()> {
        self.writer.lock().unwrap().write_all(bytes)
    }

    /// Opens a stream with a request head (`extra` after the pseudo-fields), ending the stream
    /// when `end_stream`; returns its id. On a connection the server already closed the write
    /// is lost, and the events say what happened ([`Event::GoAway`], [`Event::Closed`]).
    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        extra: &[(&str, &str)],
        end_stream: bool,
    ) -> u32 {
        let id = self.next_stream;
        self.next_stream += 2;
        let mut fields =
            vec![(":method", method), (":scheme", "http"), (":authority", self.authority.as_str())];
        fields.push((":path", path));
        fields.extend_from_slice(extra);
        let flags = END_HEADERS | if end_stream { END_STREAM } else { 0 };
        let _ = self.send_raw(&frame(HEADERS, flags, id, &header_block(&fields)));
        id
    }

    /// `data` on `stream`, in DATA frames of at most 16 KiB (the default largest frame), at
    /// once: the server's flow-control windows are not consulted, so a body beyond the initial
    /// 65 535 bytes is a flow-control error unless the server opened its windows first.
    pub fn data(&self, stream: u32, data: &[u8], end_stream: bool) -> io::Result<()> {
        let mut bytes = Vec::with_capacity(data.len() + 64);
        let chunks: Vec<&[u8]> =
            if data.is_empty() { vec![data] } else { data.chunks(16 << 10).collect() };
        let last = chunks.len() - 1;
        for (i, chunk) in chunks.into_iter().enumerate() {
            let flags = if end_stream && i == last { END_STREAM } else { 0 };
            bytes.extend(frame(DATA, flags, stream, chunk));
        }
        self.send_raw(&bytes)
    }

    /// RST_STREAM on `stream` with `code`.
    pub fn reset(&self, stream: u32, code: u32) -> io::Result<()> {
        self.send_raw(&frame(RST_STREAM, 0, stream, &code.to_be_bytes()))
    }

    /// The next event, from the backlog first; `None` after `timeout`.
    pub fn next_event(&mut self, timeout: Duration) -> Option<Event> {
        if let Some(e) = self.backlog.pop_front() {
            return Some(e);
        }
        match self.events.recv_timeout(timeout) {
            Ok(e) => Some(e),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => Some(Event::Closed),
        }
    }

    /// A GOAWAY received so far, without waiting (events stay in the backlog).
    pub fn goaway_seen(&mut self) -> Option<(u32, u32)> {
        while let Ok(e) = self.events.try_recv() {
            self.backlog.push_back(e);
        }
        self.backlog.iter().find_map(|e| match e {
            Event::GoAway { last_stream, code } => Some((*last_stream, *code)),
            _ => None,
        })
    }

    /// Waits (bounded) for the connection to end: the GOAWAY's (last stream, code), if one came.
    pub fn goaway(&mut self, timeout: Duration) -> Option<(u32, u32)> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_event(left)? {
                Event::GoAway { last_stream, code } => return Some((last_stream, code)),
                Event::Closed => return None,
                _ => {}
            }
        }
    }

    /// Everything `stream` receives until it ends (or `timeout`); events of other streams
    /// wait in the backlog.
    pub fn response(&mut self, stream: u32, timeout: Duration) -> StreamOutcome {
        let deadline = Instant::now() + timeout;
        let mut out = StreamOutcome {
            heads: Vec::new(),
            data: Vec::new(),
            end: End::Timeout,
            invalid: Vec::new(),
        };
        let mut others = VecDeque::new();
        let mut pending: VecDeque<Event> = std::mem::take(&mut self.backlog);
        loop {
            let event = match pending.pop_front() {
                Some(e) => e,
                None => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    match self.events.recv_timeout(left) {
                        Ok(e) => e,
                        Err(RecvTimeoutError::Timeout) => break,
                        Err(RecvTimeoutError::Disconnected) => Event::Closed,
                    }
                }
            };
            match event {
                Event::Headers { stream: s, fields, end_stream } if s == stream => {
                    out.heads.push(fields);
                    if end_stream {
                        out.end = End::Stream;
                        break;
                    }
                }
                Event::Data { stream: s, data, end_stream } if s == stream => {
                    out.data.extend_from_slice(&data);
                    if end_stream {
                        out.end = End::Stream;
                        break;
                    }
                }
                Event::Reset { stream: s, code } if s == stream => {
                    out.end = End::Reset(code);
                    break;
                }
                Event::GoAway { last_stream, code } => {
                    if stream > last_stream || code != NO_ERROR {
                        out.end = End::GoAway(code, last_stream);
                        others.push_back(Event::GoAway { last_stream, code });
                        break;
                    }
                    others.push_back(Event::GoAway { last_stream, code });
                }
                Event::Invalid(what) => out.invalid.push(what),
                Event::Closed => {
                    out.end = End::Closed;
                    others.push_back(Event::Closed);
                    break;
                }
                other => others.push_back(other),
            }
        }
        others.extend(pending);
        self.backlog = others;
        out
    }
}

fn client_reader(mut r: TcpStream, w: Arc<Mutex<TcpStream>>, tx: Sender<Event>, replenish: bool) {
    let mut decoder = fluke_hpack::Decoder::new();
    let mut block: Option<(u32, bool, Vec<u8>)> = None;
    loop {
        let Ok(f) = read_frame(&mut r) else {
            let _ = tx.send(Event::Closed);
            return;
        };
        let event = match f.kind {
            SETTINGS if f.flags & ACK == 0 => {
                let _ = w.lock().unwrap().write_all(&frame(SETTINGS, ACK, 0, &[]));
                let s = f.payload.chunks(6).filter(|c| c.len() == 6);
                Some(Event::Settings(
                    s.map(|c| (u16::from_be_bytes([c[0], c[1]]), u32_at(c, 2))).collect(),
                ))
            }
            PING if f.flags & ACK == 0 => {
                let _ = w.lock().unwrap().write_all(&frame(PING, ACK, 0, &f.payload));
                None
            }
            HEADERS | CONTINUATION => {
                let fragment = if f.kind == HEADERS { header_fragment(&f) } else { &f.payload[..] };
                let (stream, end_stream, mut bytes) = match block.take() {
                    Some(b) if f.kind == CONTINUATION => b,
                    None if f.kind == HEADERS => (f.stream, f.flags & END_STREAM != 0, Vec::new()),
                    _ => {
                        let _ = tx.send(Event::Invalid("CONTINUATION out of place".into()));
                        continue;
                    }
                };
                bytes.extend_from_slice(fragment);
                if f.flags & END_HEADERS == 0 {
                    block = Some((stream, end_stream, bytes));
                    None
                } else {
                    Some(match decoder.decode(&bytes) {
                        Ok(list) => Event::Headers {
                            stream,
                            fields: list
                                .into_iter()
                                .map(|(n, v)| {
                                    (
                                        String::from_utf8_lossy(&n).into_owned(),
                                        String::from_utf8_lossy(&v).into_owned(),
                                    )
                                })
                                .collect(),
                            end_stream,
                        },
                        Err(e) => Event::Invalid(format!("undecodable header block: {e:?}")),
                    })
                }
            }
            DATA => {
                let data = if f.flags & PADDED != 0 && !f.payload.is_empty() {
                    let pad = usize::from(f.payload[0]);
                    f.payload[1..f.payload.len().saturating_sub(pad)].to_vec()
                } else {
                    f.payload.clone()
                };
                if replenish && !f.payload.is_empty() {
                    let inc = (f.payload.len() as u32).to_be_bytes();
                    let mut wu = frame(WINDOW_UPDATE, 0, f.stream, &inc);
                    wu.extend(frame(WINDOW_UPDATE, 0, 0, &inc));
                    let _ = w.lock().unwrap().write_all(&wu);
                }
                Some(Event::Data { stream: f.stream, data, end_stream: f.flags & END_STREAM != 0 })
            }
            RST_STREAM => Some(Event::Reset { stream: f.stream, code: u32_at(&f.payload, 0) }),
            GOAWAY => Some(Event::GoAway {
                last_stream: u32_at(&f.payload, 0) & 0x7fff_ffff,
                code: u32_at(&f.payload, 4),
            }),
            PUSH_PROMISE => Some(Event::Invalid("PUSH_PROMISE with push disabled".into())),
            _ => None,
        };
        if let Some(e) = event
            && tx.send(e).is_err()
        {
            return;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The backend
// ---------------------------------------------------------------------------------------------

/// How a [`RawH2Backend`] treats its very first stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refuse {
    /// RST_STREAM(REFUSED_STREAM).
    RstStream,
    /// GOAWAY(NO_ERROR) whose last stream id is below it, then a close.
    GoAway,
}

/// What a [`RawH2Backend`] does with the streams it accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// Answers 200 with its name as soon as the request ended.
    Answer,
    /// Answers only once [`RawH2Backend::release`] is called.
    Hold,
    /// Never answers (counts the resets it gets).
    Silent,
}

/// Builder for [`RawH2Backend`].
pub struct RawH2Builder {
    name: String,
    max_streams: Option<u32>,
    refuse_first: Option<Refuse>,
    reply: Reply,
}

impl RawH2Builder {
    /// The name it answers with (body and `x-backend`).
    pub fn name(mut self, name: &str) -> Self {
        self.name = name.to_owned();
        self
    }
    /// Advertises SETTINGS_MAX_CONCURRENT_STREAMS (and refuses streams beyond it, as a real
    /// server would, counting them in [`RawH2Backend::over_limit`]).
    pub fn max_concurrent_streams(mut self, n: u32) -> Self {
        self.max_streams = Some(n);
        self
    }
    /// Refuses the first stream it ever sees this way.
    pub fn refuse_first(mut self, how: Refuse) -> Self {
        self.refuse_first = Some(how);
        self
    }
    /// What it does with the streams it accepts ([`Reply::Answer`] by default).
    pub fn reply(mut self, reply: Reply) -> Self {
        self.reply = reply;
        self
    }

    /// Starts it.
    pub fn spawn(self) -> RawH2Backend {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(H2State {
            name: self.name,
            max_streams: self.max_streams,
            refuse_first: self.refuse_first,
            reply: self.reply,
            released: AtomicBool::new(self.reply != Reply::Hold),
            stop: AtomicBool::new(false),
            connections: AtomicUsize::new(0),
            streams: AtomicUsize::new(0),
            answered: AtomicUsize::new(0),
            refused: AtomicUsize::new(0),
            resets: AtomicUsize::new(0),
            over_limit: AtomicUsize::new(0),
            max_seen: AtomicUsize::new(0),
            open_now: AtomicUsize::new(0),
            held: Mutex::new(Vec::new()),
        });
        let st = state.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if st.stop.load(SeqCst) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                st.connections.fetch_add(1, SeqCst);
                let st = st.clone();
                std::thread::spawn(move || {
                    let _ = serve_h2(conn, &st);
                });
            }
        });
        RawH2Backend { addr, state }
    }
}

struct H2State {
    name: String,
    max_streams: Option<u32>,
    refuse_first: Option<Refuse>,
    reply: Reply,
    released: AtomicBool,
    stop: AtomicBool,
    connections: AtomicUsize,
    streams: AtomicUsize,
    answered: AtomicUsize,
    refused: AtomicUsize,
    resets: AtomicUsize,
    over_limit: AtomicUsize,
    max_seen: AtomicUsize,
    open_now: AtomicUsize,
    /// Streams waiting for [`RawH2Backend::release`].
    held: Mutex<Vec<(Arc<BackendConn>, u32)>>,
}

/// One backend connection: its writer and the streams open on it (HEADERS seen, no answer or
/// reset yet).
struct BackendConn {
    w: Mutex<TcpStream>,
    live: Mutex<HashSet<u32>>,
}

impl BackendConn {
    fn write(&self, bytes: &[u8]) -> io::Result<()> {
        self.w.lock().unwrap().write_all(bytes)
    }

    /// Marks `stream` open; returns how many are open now.
    fn open(&self, stream: u32, st: &H2State) -> usize {
        let mut live = self.live.lock().unwrap();
        live.insert(stream);
        st.open_now.fetch_add(1, SeqCst);
        live.len()
    }

    /// Marks `stream` closed (once).
    fn close(&self, stream: u32, st: &H2State) {
        if self.live.lock().unwrap().remove(&stream) {
            st.open_now.fetch_sub(1, SeqCst);
        }
    }

    fn open_count(&self) -> usize {
        self.live.lock().unwrap().len()
    }
}

/// An h2c backend speaking raw frames: counts connections, streams (and the most open at once
/// on one connection) and resets at the frame level, so what it reports is what crossed the
/// wire, whatever any HTTP/2 library would have enforced.
pub struct RawH2Backend {
    addr: SocketAddr,
    state: Arc<H2State>,
}

impl RawH2Backend {
    /// A backend named `h2` that answers every stream.
    pub fn builder() -> RawH2Builder {
        RawH2Builder {
            name: "h2".into(),
            max_streams: None,
            refuse_first: None,
            reply: Reply::Answer,
        }
    }
    /// Its `h2c://` URL.
    pub fn url(&self) -> String {
        format!("h2c://{}", self.addr)
    }
    /// TCP connections accepted.
    pub fn connections(&self) -> usize {
        self.state.connections.load(SeqCst)
    }
    /// Streams opened by the peer (HEADERS on a new stream id), refused ones included.
    pub fn streams(&self) -> usize {
        self.state.streams.load(SeqCst)
    }
    /// Responses sent.
    pub fn answered(&self) -> usize {
        self.state.answered.load(SeqCst)
    }
    /// Streams it refused on purpose ([`Refuse`]).
    pub fn refused(&self) -> usize {
        self.state.refused.load(SeqCst)
    }
    /// RST_STREAM frames received.
    pub fn resets(&self) -> usize {
        self.state.resets.load(SeqCst)
    }
    /// Streams opened beyond the advertised SETTINGS_MAX_CONCURRENT_STREAMS.
    pub fn over_limit(&self) -> usize {
        self.state.over_limit.load(SeqCst)
    }
    /// The most streams open at once on one connection.
    pub fn max_concurrent_seen(&self) -> usize {
        self.state.max_seen.load(SeqCst)
    }
    /// Streams open now, over every connection.
    pub fn open_streams(&self) -> usize {
        self.state.open_now.load(SeqCst)
    }
    /// Answers every held stream, and every later one at once.
    pub fn release(&self) {
        self.state.released.store(true, SeqCst);
        let held = std::mem::take(&mut *self.state.held.lock().unwrap());
        for (c, stream) in held {
            answer(&c, stream, &self.state);
        }
    }
}

impl Drop for RawH2Backend {
    fn drop(&mut self) {
        self.state.stop.store(true, SeqCst);
        let _ = TcpStream::connect(self.addr);
    }
}

/// Writes a 200 response (its name as the body) on `stream`.
fn answer(c: &BackendConn, stream: u32, st: &H2State) {
    let name = st.name.as_str();
    let len = name.len().to_string();
    let head = header_block(&[(":status", "200"), ("x-backend", name), ("content-length", &len)]);
    let mut out = frame(HEADERS, END_HEADERS, stream, &head);
    out.extend(frame(DATA, END_STREAM, stream, name.as_bytes()));
    // Counted before the bytes leave: a client that has the answer sees the count.
    c.close(stream, st);
    st.answered.fetch_add(1, SeqCst);
    let _ = c.write(&out);
}

fn serve_h2(conn: TcpStream, st: &H2State) -> io::Result<()> {
    let _ = conn.set_nodelay(true);
    let c = Arc::new(BackendConn { w: Mutex::new(conn.try_clone()?), live: Mutex::default() });
    let mut ours = vec![(SETTINGS_INITIAL_WINDOW_SIZE, 1 << 20)];
    if let Some(n) = st.max_streams {
        ours.push((SETTINGS_MAX_CONCURRENT_STREAMS, n));
    }
    c.write(&settings(&ours))?;
    let mut r = conn;
    let mut preface = [0u8; 24];
    r.read_exact(&mut preface)?;
    if preface != PREFACE {
        return Ok(());
    }
    // Streams whose request is still arriving (no END_STREAM yet), and every id seen.
    let mut receiving: HashSet<u32> = HashSet::new();
    let mut seen: HashSet<u32> = HashSet::new();
    loop {
        let f = read_frame(&mut r)?;
        match f.kind {
            SETTINGS if f.flags & ACK == 0 => c.write(&frame(SETTINGS, ACK, 0, &[]))?,
            PING if f.flags & ACK == 0 => c.write(&frame(PING, ACK, 0, &f.payload))?,
            GOAWAY => return Ok(()),
            RST_STREAM => {
                st.resets.fetch_add(1, SeqCst);
                receiving.remove(&f.stream);
                c.close(f.stream, st);
            }
            HEADERS if seen.insert(f.stream) => {
                let first = st.streams.fetch_add(1, SeqCst) == 0;
                if first && let Some(how) = st.refuse_first {
                    st.refused.fetch_add(1, SeqCst);
                    if how == Refuse::GoAway {
                        let payload = [0u32.to_be_bytes(), NO_ERROR.to_be_bytes()].concat();
                        c.write(&frame(GOAWAY, 0, 0, &payload))?;
                        return Ok(());
                    }
                    c.write(&frame(RST_STREAM, 0, f.stream, &REFUSED_STREAM.to_be_bytes()))?;
                    continue;
                }
                if st.max_streams.is_some_and(|m| c.open_count() >= m as usize) {
                    st.over_limit.fetch_add(1, SeqCst);
                    c.write(&frame(RST_STREAM, 0, f.stream, &REFUSED_STREAM.to_be_bytes()))?;
                    continue;
                }
                st.max_seen.fetch_max(c.open(f.stream, st), SeqCst);
                if f.flags & END_STREAM != 0 {
                    respond(&c, f.stream, st);
                } else {
                    receiving.insert(f.stream);
                }
            }
            DATA => {
                if !f.payload.is_empty() {
                    let inc = (f.payload.len() as u32).to_be_bytes();
                    let mut wu = frame(WINDOW_UPDATE, 0, 0, &inc);
                    if f.flags & END_STREAM == 0 {
                        wu.extend(frame(WINDOW_UPDATE, 0, f.stream, &inc));
                    }
                    c.write(&wu)?;
                }
                if f.flags & END_STREAM != 0 && receiving.remove(&f.stream) {
                    respond(&c, f.stream, st);
                }
            }
            _ => {}
        }
    }
}

/// Answers a stream whose request ended, now or when released, as the backend's [`Reply`] says.
fn respond(c: &Arc<BackendConn>, stream: u32, st: &H2State) {
    match st.reply {
        Reply::Silent => {}
        Reply::Hold => {
            let mut held = st.held.lock().unwrap();
            // `release` sets the flag, then drains under this lock: checked under it, no
            // stream is stranded.
            if st.released.load(SeqCst) {
                drop(held);
                answer(c, stream, st);
            } else {
                held.push((c.clone(), stream));
            }
        }
        Reply::Answer => answer(c, stream, st),
    }
}
