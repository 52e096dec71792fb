//! The HTTP/2 connection state machine (`fulcrum_h2::conn::Connection`), in either role, fed
//! an arbitrary sequence of peer frames (well-formed frames with arbitrary fields, HPACK blocks
//! from a vocabulary of valid and invalid fields, and raw bytes) split at arbitrary points,
//! interleaved with arbitrary application actions (heads, DATA, trailers, resets, releases,
//! PINGs, GOAWAY, output drains, clock steps).
//!
//! Invariants:
//! - everything the connection writes is a sequence of valid frames whose field blocks decode;
//! - once `recv` fails, every later call fails the same way and a GOAWAY with that code was
//!   written;
//! - reading stops while the write buffer is over its cap (a peer that does not read cannot
//!   make it grow), and the connection's heap stays under a bound set by its configuration;
//! - live streams never exceed the concurrency limit;
//! - a stream's DATA handed out and not released never exceeds the window we advertised;
//! - requests handed to a server and responses to a client passed RFC 9113 section 8.

use std::collections::HashMap;

use arbitrary::{Result, Unstructured};
use fulcrum_h2::conn::{Config, Connection, Event, Limits, Role};
use fulcrum_h2::frame::{
    self, Frame, FrameHeader, FrameType, Priority, Setting, write_continuation, write_data,
    write_frame_header, write_goaway, write_headers, write_ping, write_priority,
    write_push_promise, write_rst_stream, write_settings, write_settings_ack,
};
use fulcrum_h2::hpack::{Decoder, Encoder, Field};
use fulcrum_h2::{ErrorCode, StreamId, validate};

/// Fields a peer's blocks are made of: valid, and each kind of invalid.
const FIELDS: &[(&str, &str)] = &[
    (":method", "GET"),
    (":method", "POST"),
    (":method", "HEAD"),
    (":method", "CONNECT"),
    (":scheme", "http"),
    (":path", "/"),
    (":path", ""),
    (":authority", "example.com"),
    (":status", "200"),
    (":status", "100"),
    (":status", "204"),
    (":protocol", "websocket"),
    (":bogus", "x"),
    ("host", "example.com"),
    ("host", "other.example"),
    ("content-length", "0"),
    ("content-length", "5"),
    ("content-length", "x"),
    ("te", "trailers"),
    ("te", "gzip"),
    ("connection", "close"),
    ("grpc-status", "0"),
    ("x-value", " padded "),
    ("x-value", "a\rb"),
];

fn config(u: &mut Unstructured<'_>) -> Result<Config> {
    let mut config = Config {
        max_concurrent_streams: u.int_in_range(1..=8)?,
        initial_stream_window: u.int_in_range(65_535..=200_000)?,
        initial_connection_window: u.int_in_range(65_535..=400_000)?,
        max_frame_size: frame::DEFAULT_MAX_FRAME_SIZE,
        max_header_list_size: u.int_in_range(256..=16_384)?,
        header_table_size: u.int_in_range(0..=8192)?,
        max_send_buffer: 200_000,
        max_write_buffer: u.int_in_range(64..=65_536)?,
        limits: Limits {
            max_resets_per_sec: u.int_in_range(1..=50)?,
            max_control_frames_per_sec: u.int_in_range(1..=200)?,
            max_empty_frames_per_sec: u.int_in_range(1..=50)?,
            max_continuation_frames: u.int_in_range(0..=16)?,
            window_updates_per_data_frame: u.int_in_range(0..=10)?,
            priority_frames_per_stream: u.int_in_range(0..=10)?,
        },
        enable_connect_protocol: false,
    };
    // Extended CONNECT on half the inputs, drawn from a value already drawn so the seeds of
    // the corpus keep their meaning.
    config.enable_connect_protocol = config.header_table_size % 2 == 1;
    Ok(config)
}

fn stream_id(u: &mut Unstructured<'_>) -> Result<u32> {
    Ok(if u.ratio(1, 16)? { u.arbitrary()? } else { u.int_in_range(0..=11)? })
}

/// A field block from the vocabulary (the encoder's representations plus, at times, a
/// literal with incremental indexing, an indexed reference or raw bytes).
fn block(u: &mut Unstructured<'_>, enc: &mut Encoder) -> Result<Vec<u8>> {
    let mut b = Vec::new();
    for _ in 0..u.int_in_range(0..=8)? {
        match u.int_in_range(0..=9)? {
            0 => {
                // Literal with incremental indexing, new name.
                let (n, v) = *u.choose(FIELDS)?;
                b.push(0x40);
                b.push(n.len() as u8);
                b.extend_from_slice(n.as_bytes());
                b.push(v.len() as u8);
                b.extend_from_slice(v.as_bytes());
            }
            1 => b.push(0x80 | u.int_in_range(1..=70)?),
            2 => {
                let n = u.int_in_range(0..=6)?;
                b.extend_from_slice(u.bytes(n)?);
            }
            3 => {
                // Upper case, by hand: the encoder refuses it.
                b.extend_from_slice(&[0x00, 5]);
                b.extend_from_slice(b"Upper");
                b.extend_from_slice(&[1, b'x']);
            }
            _ => {
                let (n, v) = *u.choose(FIELDS)?;
                enc.encode(n.as_bytes(), v.as_bytes(), &mut b);
            }
        }
    }
    Ok(b)
}

/// One frame from the peer, appended to `input`.
fn peer_frame(u: &mut Unstructured<'_>, enc: &mut Encoder, input: &mut Vec<u8>) -> Result<()> {
    let id = StreamId::new(stream_id(u)?);
    match u.int_in_range(0..=13)? {
        0 => {
            let len = u.int_in_range(0..=20_000)?;
            let data = vec![0x5a; len];
            write_data(input, id, &data, u.arbitrary()?);
        }
        1 => {
            let b = block(u, enc)?;
            write_headers(input, id, &b, u.arbitrary()?, frame::DEFAULT_MAX_FRAME_SIZE);
        }
        2 => {
            // A block split into HEADERS and CONTINUATION frames, flags and streams arbitrary.
            let b = block(u, enc)?;
            let cut = u.int_in_range(0..=b.len())?;
            let flags = if u.arbitrary()? { frame::flags::END_STREAM } else { 0 };
            let head =
                FrameHeader { length: cut as u32, kind: FrameType::HEADERS, flags, stream_id: id };
            write_frame_header(input, head);
            input.extend_from_slice(&b[..cut]);
            let other = if u.ratio(1, 8)? { StreamId::new(stream_id(u)?) } else { id };
            write_continuation(input, other, &b[cut..], u.arbitrary()?);
        }
        3 => write_continuation(input, id, &block(u, enc)?, u.arbitrary()?),
        4 => {
            let p =
                Priority { dependency: StreamId::new(stream_id(u)?), exclusive: false, weight: 0 };
            write_priority(input, id, p);
        }
        5 => write_rst_stream(input, id, ErrorCode(u.int_in_range(0..=14)?)),
        6 => {
            let mut settings = Vec::new();
            for _ in 0..u.int_in_range(0..=3)? {
                settings.push(match u.int_in_range(0..=5)? {
                    0 => Setting::HeaderTableSize(u.int_in_range(0..=8192)?),
                    1 => Setting::EnablePush(u.arbitrary()?),
                    2 => Setting::MaxConcurrentStreams(u.int_in_range(0..=10)?),
                    3 => Setting::InitialWindowSize(u.int_in_range(0..=frame::MAX_WINDOW_SIZE)?),
                    4 => Setting::MaxFrameSize(u.int_in_range(16_384..=65_536)?),
                    _ => Setting::MaxHeaderListSize(u.arbitrary()?),
                });
            }
            write_settings(input, &settings);
        }
        7 => write_settings_ack(input),
        8 => write_ping(input, u.arbitrary()?, u.arbitrary()?),
        9 => write_goaway(input, StreamId::new(stream_id(u)?), ErrorCode(u.arbitrary()?), b""),
        10 => {
            // Any increment, 0 and the reserved bit included (the writer refuses those).
            let inc: u32 =
                if u.arbitrary()? { u.int_in_range(1..=100_000)? } else { u.arbitrary()? };
            let head =
                FrameHeader { length: 4, kind: FrameType::WINDOW_UPDATE, flags: 0, stream_id: id };
            write_frame_header(input, head);
            input.extend_from_slice(&inc.to_be_bytes());
        }
        11 => write_push_promise(input, id, StreamId::new(stream_id(u)?), &block(u, enc)?, true),
        12 => {
            let n = u.int_in_range(0..=16)?;
            let payload = u.bytes(n)?;
            let head = FrameHeader {
                length: payload.len() as u32,
                kind: FrameType(u.arbitrary()?),
                flags: u.arbitrary()?,
                stream_id: id,
            };
            write_frame_header(input, head);
            input.extend_from_slice(payload);
        }
        _ => {
            let n = u.int_in_range(0..=12)?;
            input.extend_from_slice(u.bytes(n)?);
        }
    }
    Ok(())
}

/// What the events told the harness.
struct Seen {
    role: Role,
    config: Config,
    /// DATA handed out per stream and not yet released.
    outstanding: HashMap<u32, usize>,
    /// Streams the application knows.
    known: Vec<StreamId>,
}

/// What the harness knows about the connection's output and streams.
struct Harness {
    conn: Connection,
    config: Config,
    /// Bytes the connection wrote, not yet checked.
    written: Vec<u8>,
    /// The field block being joined from our output.
    block: Option<Vec<u8>>,
    decoder: Decoder,
    seen: Seen,
    now: u64,
    error: Option<fulcrum_h2::conn::ConnError>,
}

impl Harness {
    /// Drains and checks the connection's output.
    fn drain(&mut self) {
        let out = self.conn.take_out(Vec::new());
        self.written.extend_from_slice(&out);
        let mut at = 0;
        while at < self.written.len() {
            let parsed = frame::parse(&self.written[at..], frame::MAX_MAX_FRAME_SIZE)
                .expect("the connection wrote an invalid frame");
            let Some((frame, n)) = parsed else { break };
            match frame {
                Frame::Headers { block, end_headers, .. } => {
                    assert!(self.block.is_none(), "HEADERS inside a field block");
                    self.block = Some(block.to_vec());
                    if end_headers {
                        self.finish_block();
                    }
                }
                Frame::Continuation { block, end_headers, .. } => {
                    self.block
                        .as_mut()
                        .expect("CONTINUATION outside a block")
                        .extend_from_slice(block);
                    if end_headers {
                        self.finish_block();
                    }
                }
                _ => assert!(self.block.is_none(), "frame inside a field block"),
            }
            at += n;
        }
        self.written.drain(..at);
    }

    fn finish_block(&mut self) {
        let b = self.block.take().unwrap_or_default();
        let fields = self.decoder.decode(&b).expect("the connection wrote an undecodable block");
        for f in fields.iter() {
            assert!(!f.name.iter().any(u8::is_ascii_uppercase), "upper-case name written");
        }
    }

    /// Feeds `input` until the connection stops; returns the bytes it consumed.
    fn recv_all(&mut self, input: &[u8]) -> usize {
        let mut at = 0;
        loop {
            let before = self.conn.out_len();
            let full = before >= self.config.max_write_buffer;
            let result = self.conn.recv(&input[at..]);
            let r = match result {
                Ok(r) => r,
                Err(e) => {
                    if let Some(prev) = self.error {
                        assert_eq!(prev, e, "the connection error changed");
                    }
                    self.error = Some(e);
                    return at;
                }
            };
            assert!(self.error.is_none(), "recv succeeded after an error");
            if full {
                assert_eq!(r.used, 0, "read while the write buffer was full");
            }
            at += r.used;
            let idle = r.is_idle();
            if let Some(event) = r.event {
                self.seen.event(event);
            }
            self.check_bounds();
            if idle {
                return at;
            }
        }
    }
}

impl Seen {
    fn event(&mut self, event: Event<'_>) {
        match event {
            Event::Request { stream, fields, .. } => {
                assert_eq!(self.role, Role::Server, "a request handed to a client");
                assert!(validate::request(fields.iter()).is_ok(), "invalid request handed out");
                self.known.push(stream);
            }
            Event::Response { fields, status, .. } => {
                assert_eq!(self.role, Role::Client);
                assert!(validate::response(fields.iter()).is_ok(), "invalid response handed out");
                assert!(status >= 100);
            }
            Event::Trailers { fields, .. } => {
                assert!(validate::trailers(fields.iter()).is_ok(), "invalid trailers handed out");
            }
            Event::Data { stream, data, .. } => {
                let o = self.outstanding.entry(stream.get()).or_default();
                *o += data.len();
                assert!(
                    *o <= self.config.initial_stream_window as usize,
                    "more DATA than the stream window"
                );
            }
            _ => {}
        }
    }
}

impl Harness {
    fn check_bounds(&self) {
        let max_streams = self.config.max_concurrent_streams as usize;
        assert!(self.conn.active_streams() <= max_streams, "too many live streams");
        let c = &self.config;
        let bound = 4 * c.max_write_buffer
            + max_streams * (c.max_send_buffer + 4096)
            + 4 * (c.header_table_size as usize).max(4096)
            + 8 * c.max_header_list_size as usize
            + 2 * 16_777_216.min(4 * c.max_frame_size as usize)
            + (1 << 20);
        assert!(self.conn.heap_bytes() <= bound, "heap {} over {bound}", self.conn.heap_bytes());
    }

    fn act(&mut self, u: &mut Unstructured<'_>) -> Result<()> {
        let known = |u: &mut Unstructured<'_>, h: &Harness| -> Result<StreamId> {
            if h.seen.known.is_empty() || u.ratio(1, 8)? {
                Ok(StreamId::new(stream_id(u)?))
            } else {
                Ok(*u.choose(&h.seen.known)?)
            }
        };
        match u.int_in_range(0..=9)? {
            0 => {
                let id = known(u, self)?;
                let n = u.int_in_range(0..=70_000)?;
                self.conn.release(id, n);
                let o = self.seen.outstanding.entry(id.get()).or_default();
                *o = o.saturating_sub(n);
            }
            1 => {
                let id = known(u, self)?;
                let status = *u.choose(&[100u16, 200, 204, 404])?;
                let fields = [Field::new(b"content-type", b"text/plain")];
                let _ = self.conn.send_response(id, status, fields, u.arbitrary()?);
            }
            2 => {
                let fields = [
                    Field::new(b":method", b"POST"),
                    Field::new(b":scheme", b"http"),
                    Field::new(b":path", b"/x"),
                    Field::new(b":authority", b"a"),
                ];
                if let Ok(id) = self.conn.send_request(fields, u.arbitrary()?) {
                    self.seen.known.push(id);
                }
            }
            3 => {
                let id = known(u, self)?;
                let data = vec![7u8; u.int_in_range(0..=100_000)?];
                let _ = self.conn.send_data(id, &data, u.arbitrary()?);
            }
            4 => {
                let id = known(u, self)?;
                let _ = self.conn.send_trailers(id, [Field::new(b"grpc-status", b"0")]);
            }
            5 => {
                let id = known(u, self)?;
                self.conn.reset(id, ErrorCode::CANCEL);
            }
            6 => self.conn.ping(u.arbitrary()?),
            7 => {
                let code =
                    if u.arbitrary()? { ErrorCode::NO_ERROR } else { ErrorCode::INTERNAL_ERROR };
                self.conn.go_away(code);
            }
            8 => self.drain(),
            _ => {
                self.now += u.int_in_range(0..=2000)?;
                self.conn.set_now(self.now);
            }
        }
        while self.conn.take_sent().is_some() {}
        self.check_bounds();
        Ok(())
    }
}

/// Runs the invariants on one input (the fuzz target and the replay test call this).
pub fn check(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let _ = run(&mut u);
}

fn run(u: &mut Unstructured<'_>) -> Result<()> {
    let role = if u.arbitrary()? { Role::Server } else { Role::Client };
    let config = config(u)?;
    let conn = Connection::new(role, config);
    let mut h = Harness {
        conn,
        config,
        written: Vec::new(),
        block: None,
        decoder: Decoder::new(1 << 16, 1 << 24),
        seen: Seen { role, config, outstanding: HashMap::new(), known: Vec::new() },
        now: 0,
        error: None,
    };
    // The client's output opens with the preface, which is no frame.
    let first = h.conn.take_out(Vec::new());
    let first = first.strip_prefix(frame::PREFACE.as_slice()).unwrap_or(&first).to_vec();
    h.written = first;
    h.drain();
    let mut enc = Encoder::new();
    let mut input = Vec::new();
    if role == Role::Server && !u.ratio(1, 16)? {
        input.extend_from_slice(frame::PREFACE);
    }
    if !u.ratio(1, 16)? {
        write_settings(&mut input, &[]);
    }
    let mut fed = 0;
    for _ in 0..u.int_in_range(0..=64)? {
        match u.int_in_range(0..=3)? {
            0 | 1 => peer_frame(u, &mut enc, &mut input)?,
            2 => {
                // Feed up to an arbitrary point: frames split across reads.
                let upto = u.int_in_range(fed..=input.len())?;
                fed += h.recv_all(&input[fed..upto]);
            }
            _ => h.act(u)?,
        }
        if h.error.is_some() && h.conn.recv(&[]).is_ok() {
            panic!("the connection error was forgotten");
        }
    }
    // The rest, draining whenever a full write buffer stops reading.
    loop {
        let n = h.recv_all(&input[fed..]);
        fed += n;
        h.drain();
        if n == 0 {
            break;
        }
    }
    if let Some(e) = h.error {
        assert_eq!(h.conn.error(), Some(e));
        assert!(h.conn.is_finished());
    }
    Ok(())
}
