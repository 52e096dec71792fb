//! Connection tests: a raw-frame peer (the wire layer's writers and an HPACK encoder) feeds
//! the state machine, and every frame it writes back is parsed and checked. Each defence is
//! shown to answer within a bounded number of frames.

use super::*;
use crate::frame::{
    Frame, FrameHeader, FrameType, PREFACE, Priority, Setting, flags, write_continuation,
    write_data, write_frame_header, write_goaway, write_headers, write_ping, write_priority,
    write_rst_stream, write_settings, write_settings_ack, write_window_update,
};
use crate::hpack::{Decoder, Encoder, Field};

fn sid(id: u32) -> StreamId {
    StreamId::new(id)
}

/// An event with everything copied out, so tests can collect them.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Ev {
    Request { stream: u32, fields: Vec<(String, String)>, end: bool },
    Response { stream: u32, status: u16, fields: Vec<(String, String)>, end: bool },
    Trailers { stream: u32, fields: Vec<(String, String)> },
    Data { stream: u32, data: Vec<u8>, end: bool },
    Reset { stream: u32, code: ErrorCode, remote: bool },
    GoAway { last: u32, code: ErrorCode },
    Settings,
    Pong([u8; 8]),
}

fn owned(fields: &HeaderBlock<'_>) -> Vec<(String, String)> {
    fields
        .iter()
        .map(|f| (String::from_utf8_lossy(f.name).into(), String::from_utf8_lossy(f.value).into()))
        .collect()
}

impl From<Event<'_>> for Ev {
    fn from(e: Event<'_>) -> Ev {
        match e {
            Event::Request { stream, fields, end_stream, .. } => {
                Ev::Request { stream: stream.get(), fields: owned(&fields), end: end_stream }
            }
            Event::Response { stream, status, fields, end_stream } => Ev::Response {
                stream: stream.get(),
                status,
                fields: owned(&fields),
                end: end_stream,
            },
            Event::Trailers { stream, fields } => {
                Ev::Trailers { stream: stream.get(), fields: owned(&fields) }
            }
            Event::Data { stream, data, end_stream } => {
                Ev::Data { stream: stream.get(), data: data.to_vec(), end: end_stream }
            }
            Event::Reset { stream, code, remote } => {
                Ev::Reset { stream: stream.get(), code, remote }
            }
            Event::GoAway { last_stream_id, code, .. } => {
                Ev::GoAway { last: last_stream_id.get(), code }
            }
            Event::Settings => Ev::Settings,
            Event::Pong { data } => Ev::Pong(data),
        }
    }
}

/// A frame the connection wrote, with everything copied out.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Out {
    Settings { ack: bool, values: Vec<Setting> },
    WindowUpdate { stream: u32, increment: u32 },
    Ping { ack: bool },
    GoAway { last: u32, code: ErrorCode },
    Rst { stream: u32, code: ErrorCode },
    Headers { stream: u32, end: bool, fields: Vec<(String, String)> },
    Data { stream: u32, len: usize, end: bool },
}

/// The peer: encodes what it sends, decodes what it receives.
struct Peer {
    enc: Encoder,
    dec: Decoder,
    /// A field block being joined from HEADERS and CONTINUATION frames.
    block: Option<(u32, bool, Vec<u8>)>,
}

impl Peer {
    fn new() -> Peer {
        Peer { enc: Encoder::new(), dec: Decoder::new(4096, 1 << 20), block: None }
    }

    fn block(&mut self, fields: &[(&str, &str)]) -> Vec<u8> {
        let mut b = Vec::new();
        for (n, v) in fields {
            if n.bytes().any(|c| c.is_ascii_uppercase()) {
                // The encoder refuses upper case: a literal by hand (RFC 7541 section 6.2.2).
                b.extend([0x00, n.len() as u8]);
                b.extend_from_slice(n.as_bytes());
                b.push(v.len() as u8);
                b.extend_from_slice(v.as_bytes());
            } else {
                self.enc.encode(n.as_bytes(), v.as_bytes(), &mut b);
            }
        }
        b
    }

    fn headers(&mut self, stream: u32, fields: &[(&str, &str)], end: bool) -> Vec<u8> {
        let block = self.block(fields);
        let mut buf = Vec::new();
        write_headers(&mut buf, sid(stream), &block, end, 1 << 20);
        buf
    }

    /// Every frame in `bytes`, decoded.
    fn read(&mut self, bytes: &[u8]) -> Vec<Out> {
        let mut frames = Vec::new();
        let mut at = 0;
        while at < bytes.len() {
            let (frame, n) = frame::parse(&bytes[at..], frame::MAX_MAX_FRAME_SIZE)
                .expect("the connection wrote a valid frame")
                .expect("the connection wrote a whole frame");
            at += n;
            let out = match frame {
                Frame::Settings(s) => Out::Settings { ack: s.is_ack(), values: s.iter().collect() },
                Frame::WindowUpdate { stream_id, increment } => {
                    Out::WindowUpdate { stream: stream_id.get(), increment }
                }
                Frame::Ping { ack, .. } => Out::Ping { ack },
                Frame::GoAway { last_stream_id, code, .. } => {
                    Out::GoAway { last: last_stream_id.get(), code }
                }
                Frame::RstStream { stream_id, code } => Out::Rst { stream: stream_id.get(), code },
                Frame::Data { stream_id, end_stream, data, .. } => {
                    Out::Data { stream: stream_id.get(), len: data.len(), end: end_stream }
                }
                Frame::Headers { stream_id, end_stream, end_headers, block, .. } => {
                    self.block = Some((stream_id.get(), end_stream, block.to_vec()));
                    if !end_headers {
                        continue;
                    }
                    self.finish_block()
                }
                Frame::Continuation { end_headers, block, .. } => {
                    if let Some((_, _, b)) = self.block.as_mut() {
                        b.extend_from_slice(block);
                    }
                    if !end_headers {
                        continue;
                    }
                    self.finish_block()
                }
                other => panic!("unexpected frame {other:?}"),
            };
            frames.push(out);
        }
        frames
    }

    fn finish_block(&mut self) -> Out {
        let (stream, end, block) = self.block.take().expect("a block was started");
        let fields = owned(&self.dec.decode(&block).expect("a valid block"));
        Out::Headers { stream, end, fields }
    }
}

/// Feeds all of `input`, collecting events, until it is consumed or the connection fails.
fn feed(conn: &mut Connection, input: &[u8]) -> (Vec<Ev>, Option<ConnError>) {
    let mut events = Vec::new();
    let mut at = 0;
    loop {
        match conn.recv(&input[at..]) {
            Ok(r) => {
                let idle = r.is_idle();
                at += r.used;
                if let Some(e) = r.event {
                    events.push(e.into());
                }
                if idle {
                    assert!(at == input.len() || !conn.wants_read(), "input left unparsed");
                    return (events, None);
                }
            }
            Err(e) => return (events, Some(e)),
        }
    }
}

fn out(conn: &mut Connection, peer: &mut Peer) -> Vec<Out> {
    let bytes = conn.take_out(Vec::new());
    peer.read(&bytes)
}

fn settings(values: &[Setting]) -> Vec<u8> {
    let mut b = Vec::new();
    write_settings(&mut b, values);
    b
}

fn small() -> Config {
    Config {
        max_concurrent_streams: 4,
        initial_stream_window: 65_535,
        initial_connection_window: 65_535,
        max_send_buffer: 64 * 1024,
        limits: Limits {
            max_resets_per_sec: 10,
            max_control_frames_per_sec: 20,
            max_empty_frames_per_sec: 10,
            max_continuation_frames: 8,
            ..Limits::default()
        },
        ..Config::default()
    }
}

/// A server connection after the handshake (the client's SETTINGS, ours acknowledged).
fn server_with(config: Config, client_settings: &[Setting]) -> (Connection, Peer) {
    let mut conn = Connection::new(Role::Server, config);
    let mut peer = Peer::new();
    let first = out(&mut conn, &mut peer);
    assert!(matches!(first[0], Out::Settings { ack: false, .. }), "{first:?}");
    let mut hello = PREFACE.to_vec();
    hello.extend(settings(client_settings));
    write_settings_ack(&mut hello);
    let (events, err) = feed(&mut conn, &hello);
    assert_eq!((events, err), (vec![Ev::Settings], None));
    assert_eq!(out(&mut conn, &mut peer), [Out::Settings { ack: true, values: vec![] }]);
    assert!(conn.is_ready() && conn.settings_acked());
    (conn, peer)
}

fn server() -> (Connection, Peer) {
    server_with(small(), &[])
}

const GET: &[(&str, &str)] =
    &[(":method", "GET"), (":scheme", "http"), (":path", "/"), (":authority", "example.com")];
const POST: &[(&str, &str)] = &[
    (":method", "POST"),
    (":scheme", "http"),
    (":path", "/pkg.Svc/Call"),
    (":authority", "backend"),
    ("content-type", "application/grpc"),
    ("te", "trailers"),
];

fn goaway(frames: &[Out]) -> Option<ErrorCode> {
    frames.iter().find_map(|f| match f {
        Out::GoAway { code, .. } => Some(*code),
        _ => None,
    })
}

fn resets(frames: &[Out]) -> Vec<(u32, ErrorCode)> {
    frames
        .iter()
        .filter_map(|f| match f {
            Out::Rst { stream, code } => Some((*stream, *code)),
            _ => None,
        })
        .collect()
}

#[test]
fn server_handshake_and_a_unary_exchange() {
    let (mut conn, mut peer) = server();
    let mut input = peer.headers(1, POST, false);
    write_data(&mut input, sid(1), b"hello", true);
    let (events, err) = feed(&mut conn, &input);
    assert_eq!(err, None);
    assert_eq!(events.len(), 2);
    assert!(
        matches!(&events[0], Ev::Request { stream: 1, end: false, fields } if fields.len() == 6)
    );
    assert_eq!(events[1], Ev::Data { stream: 1, data: b"hello".to_vec(), end: true });
    conn.release(sid(1), 5);
    conn.send_response(sid(1), 200, [Field::new(b"content-type", b"application/grpc")], false)
        .unwrap();
    let sent = conn.send_data(sid(1), b"world", false).unwrap();
    assert_eq!(sent, Sent { accepted: 5, written: 5 });
    conn.send_trailers(sid(1), [Field::new(b"grpc-status", b"0")]).unwrap();
    assert!(!conn.is_open(sid(1)), "both sides ended");
    let frames = out(&mut conn, &mut peer);
    assert_eq!(
        frames,
        [
            Out::Headers {
                stream: 1,
                end: false,
                fields: vec![
                    (":status".into(), "200".into()),
                    ("content-type".into(), "application/grpc".into())
                ]
            },
            Out::Data { stream: 1, len: 5, end: false },
            Out::Headers { stream: 1, end: true, fields: vec![("grpc-status".into(), "0".into())] },
        ]
    );
}

#[test]
fn preface_and_first_frame_are_checked() {
    let mut conn = Connection::new(Role::Server, small());
    // A correct prefix waits for more.
    assert!(conn.recv(&PREFACE[..10]).unwrap().is_idle());
    let mut conn = Connection::new(Role::Server, small());
    let err = feed(&mut conn, b"GET / HTTP/1.1\r\n\r\n").1.unwrap();
    assert_eq!((err.code, err.cause), (ErrorCode::PROTOCOL_ERROR, Cause::Preface));
    let mut peer = Peer::new();
    assert_eq!(goaway(&out(&mut conn, &mut peer)), Some(ErrorCode::PROTOCOL_ERROR));
    // The error sticks.
    assert_eq!(conn.recv(&[]).unwrap_err(), err);

    let mut conn = Connection::new(Role::Server, small());
    let mut input = PREFACE.to_vec();
    write_ping(&mut input, false, [0; 8]);
    assert_eq!(feed(&mut conn, &input).1.unwrap().cause, Cause::NoSettings);
}

#[test]
fn ping_is_answered_and_pong_reported() {
    let (mut conn, mut peer) = server();
    let mut input = Vec::new();
    write_ping(&mut input, false, [7; 8]);
    write_ping(&mut input, true, [9; 8]);
    let (events, _) = feed(&mut conn, &input);
    assert_eq!(events, [Ev::Pong([9; 8])]);
    assert_eq!(out(&mut conn, &mut peer), [Out::Ping { ack: true }]);
}

#[test]
fn request_body_credit_returns_at_half_a_window() {
    let (mut conn, mut peer) = server();
    let mut input = peer.headers(1, POST, false);
    write_data(&mut input, sid(1), &[0; 16_000], false);
    write_data(&mut input, sid(1), &[0; 16_000], false);
    write_data(&mut input, sid(1), &[0; 16_000], false);
    let (events, err) = feed(&mut conn, &input);
    assert_eq!((events.len(), err), (4, None));
    conn.release(sid(1), 16_000);
    assert_eq!(out(&mut conn, &mut peer), []);
    conn.release(sid(1), 32_000);
    assert_eq!(
        out(&mut conn, &mut peer),
        [
            Out::WindowUpdate { stream: 0, increment: 48_000 },
            Out::WindowUpdate { stream: 1, increment: 48_000 }
        ]
    );
}

#[test]
fn a_peer_past_its_windows_is_stopped() {
    // Past the stream window: the stream is reset.
    let config = Config { initial_connection_window: 1 << 20, ..small() };
    let (mut conn, mut peer) = server_with(config, &[]);
    let mut input = peer.headers(1, POST, false);
    for _ in 0..5 {
        write_data(&mut input, sid(1), &[0; 16_000], false);
    }
    let (events, err) = feed(&mut conn, &input);
    assert_eq!(err, None);
    assert_eq!(
        events.last(),
        Some(&Ev::Reset { stream: 1, code: ErrorCode::FLOW_CONTROL_ERROR, remote: false })
    );
    assert_eq!(resets(&out(&mut conn, &mut peer)), [(1, ErrorCode::FLOW_CONTROL_ERROR)]);
    // Past the connection window: GOAWAY.
    let (mut conn, mut peer) = server();
    let mut input = Vec::new();
    for id in [1, 3] {
        input.extend(peer.headers(id, POST, false));
        write_data(&mut input, sid(id), &[0; 16_384], false);
        write_data(&mut input, sid(id), &[0; 16_384], false);
    }
    let err = feed(&mut conn, &input).1.unwrap();
    assert_eq!((err.code, err.cause), (ErrorCode::FLOW_CONTROL_ERROR, Cause::FlowControl));
    assert_eq!(goaway(&out(&mut conn, &mut peer)), Some(ErrorCode::FLOW_CONTROL_ERROR));
}

#[test]
fn data_waits_for_window_and_is_reported_when_written() {
    let (mut conn, mut peer) = server_with(small(), &[Setting::InitialWindowSize(10)]);
    let (events, _) = feed(&mut conn, &peer.headers(1, GET, true));
    assert_eq!(events.len(), 1);
    conn.send_response(sid(1), 200, [], false).unwrap();
    let sent = conn.send_data(sid(1), &[1; 25], false).unwrap();
    assert_eq!(sent, Sent { accepted: 25, written: 10 });
    assert_eq!(conn.queued(sid(1)), 15);
    conn.send_trailers(sid(1), [Field::new(b"grpc-status", b"0")]).unwrap();
    assert_eq!(conn.take_sent(), None);
    let frames = out(&mut conn, &mut peer);
    assert_eq!(frames[1], Out::Data { stream: 1, len: 10, end: false });
    let mut wu = Vec::new();
    write_window_update(&mut wu, sid(1), 100);
    feed(&mut conn, &wu);
    assert_eq!(conn.take_sent(), Some((sid(1), 15)));
    assert_eq!(
        out(&mut conn, &mut peer),
        [
            Out::Data { stream: 1, len: 15, end: false },
            Out::Headers { stream: 1, end: true, fields: vec![("grpc-status".into(), "0".into())] }
        ]
    );
    assert!(!conn.is_open(sid(1)));
}

#[test]
fn a_settings_decrease_makes_a_window_negative() {
    // RFC 9113 section 6.9.2: windows follow SETTINGS_INITIAL_WINDOW_SIZE changes.
    let (mut conn, mut peer) = server_with(small(), &[Setting::InitialWindowSize(3)]);
    feed(&mut conn, &peer.headers(1, GET, true));
    conn.send_response(sid(1), 200, [], false).unwrap();
    conn.send_data(sid(1), b"hello", true).unwrap();
    let frames = out(&mut conn, &mut peer);
    assert_eq!(frames[1], Out::Data { stream: 1, len: 3, end: false });
    feed(&mut conn, &settings(&[Setting::InitialWindowSize(2)]));
    let mut wu = Vec::new();
    write_window_update(&mut wu, sid(1), 2);
    feed(&mut conn, &wu);
    let frames = out(&mut conn, &mut peer);
    assert_eq!(frames[1..], [Out::Data { stream: 1, len: 1, end: false }]);
    // A raise past 2^31-1 on an open stream is a connection FLOW_CONTROL_ERROR.
    feed(&mut conn, &peer.headers(3, GET, true));
    conn.send_response(sid(3), 200, [], false).unwrap();
    let mut wu = Vec::new();
    write_window_update(&mut wu, sid(3), 10);
    feed(&mut conn, &wu);
    let err = feed(&mut conn, &settings(&[Setting::InitialWindowSize(frame::MAX_WINDOW_SIZE)]))
        .1
        .unwrap();
    assert_eq!(err.cause, Cause::WindowOverflow);
}

#[test]
fn the_end_of_stream_rides_on_the_last_queued_frame() {
    let (mut conn, mut peer) = server_with(small(), &[Setting::InitialWindowSize(4)]);
    feed(&mut conn, &peer.headers(1, GET, true));
    conn.send_response(sid(1), 200, [], false).unwrap();
    conn.send_data(sid(1), b"abcdefgh", true).unwrap();
    assert_eq!(conn.send_data(sid(1), b"x", false), Err(SendError::State));
    out(&mut conn, &mut peer);
    let mut wu = Vec::new();
    write_window_update(&mut wu, sid(1), 10);
    feed(&mut conn, &wu);
    assert_eq!(out(&mut conn, &mut peer), [Out::Data { stream: 1, len: 4, end: true }]);
    assert!(!conn.is_open(sid(1)));
}

#[test]
fn a_stream_send_buffer_is_bounded() {
    let config = Config { max_send_buffer: 100, ..small() };
    let (mut conn, mut peer) = server_with(config, &[Setting::InitialWindowSize(0)]);
    feed(&mut conn, &peer.headers(1, GET, true));
    conn.send_response(sid(1), 200, [], false).unwrap();
    assert_eq!(conn.send_capacity(sid(1)), 100);
    let sent = conn.send_data(sid(1), &[0; 1000], false).unwrap();
    assert_eq!(sent, Sent { accepted: 100, written: 0 });
    assert_eq!(conn.send_capacity(sid(1)), 0);
    assert_eq!(conn.send_data(sid(1), &[0; 10], false).unwrap().accepted, 0);
}

#[test]
fn a_field_block_joins_continuation_frames() {
    let (mut conn, mut peer) = server();
    let block = peer.block(POST);
    let mut input = Vec::new();
    let (a, rest) = block.split_at(5);
    let (b, c) = rest.split_at(7);
    let head = FrameHeader {
        length: a.len() as u32,
        kind: FrameType::HEADERS,
        flags: flags::END_STREAM,
        stream_id: sid(1),
    };
    write_frame_header(&mut input, head);
    input.extend_from_slice(a);
    write_continuation(&mut input, sid(1), b, false);
    write_continuation(&mut input, sid(1), c, true);
    let (events, err) = feed(&mut conn, &input);
    assert_eq!(err, None);
    assert!(matches!(&events[..], [Ev::Request { stream: 1, end: true, .. }]));
}

fn headers_without_end(stream: u32, block: &[u8]) -> Vec<u8> {
    let mut input = Vec::new();
    let head = FrameHeader {
        length: block.len() as u32,
        kind: FrameType::HEADERS,
        flags: 0,
        stream_id: sid(stream),
    };
    write_frame_header(&mut input, head);
    input.extend_from_slice(block);
    input
}

#[test]
fn continuation_sequencing_and_floods() {
    // Another frame inside a block.
    let (mut conn, mut peer) = server();
    let mut input = headers_without_end(1, &peer.block(POST));
    write_ping(&mut input, false, [0; 8]);
    assert_eq!(feed(&mut conn, &input).1.unwrap().cause, Cause::Continuation);
    // CONTINUATION on another stream, or without a block.
    let (mut conn, mut peer) = server();
    let mut input = headers_without_end(1, &peer.block(POST));
    write_continuation(&mut input, sid(3), b"", true);
    assert_eq!(feed(&mut conn, &input).1.unwrap().cause, Cause::Continuation);
    let (mut conn, _) = server();
    let mut input = Vec::new();
    write_continuation(&mut input, sid(1), b"", true);
    assert_eq!(feed(&mut conn, &input).1.unwrap().code, ErrorCode::PROTOCOL_ERROR);
    // A flood of small fragments: stopped after max_continuation_frames (8).
    let (mut conn, mut peer) = server();
    let mut input = headers_without_end(1, &peer.block(&POST[..1]));
    for _ in 0..1000 {
        write_continuation(&mut input, sid(1), b"\x82", false);
    }
    let err = feed(&mut conn, &input).1.unwrap();
    assert_eq!(err.cause, Cause::Flood(Flood::Continuations));
    assert_eq!(goaway(&out(&mut conn, &mut peer)), Some(ErrorCode::ENHANCE_YOUR_CALM));
    // Full-size fragments: stopped at the block cap (2 x 64 KiB), before the frame count.
    let config =
        Config { limits: Limits { max_continuation_frames: 1000, ..small().limits }, ..small() };
    let (mut conn, mut peer) = server_with(config, &[]);
    let mut input = headers_without_end(1, &peer.block(&POST[..1]));
    let fragment = vec![0x82; 16_384];
    let mut frames = 1;
    for _ in 0..100 {
        write_continuation(&mut input, sid(1), &fragment, false);
    }
    let mut at = 0;
    let err = loop {
        match conn.recv(&input[at..]) {
            Ok(r) => {
                at += r.used;
                frames += 1;
            }
            Err(e) => break e,
        }
    };
    assert_eq!(err.cause, Cause::Flood(Flood::HeaderBlock));
    assert!(frames <= 10, "{frames} frames");
    assert!(conn.heap_bytes() < 512 * 1024, "{} bytes", conn.heap_bytes());
}

#[test]
fn hpack_abuse_is_a_compression_error_and_big_lists_get_431() {
    // A table size update above what we advertised.
    let (mut conn, _) = server();
    let mut block = vec![0x3f, 0xe1, 0x3f]; // size update to 8192 (31 + 8161)
    block.push(0x82);
    let mut input = Vec::new();
    write_headers(&mut input, sid(1), &block, true, 1 << 20);
    let err = feed(&mut conn, &input).1.unwrap();
    assert_eq!(err.code, ErrorCode::COMPRESSION_ERROR);
    // Garbage.
    let (mut conn, _) = server();
    let mut input = Vec::new();
    write_headers(&mut input, sid(1), &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff], true, 1 << 20);
    assert_eq!(feed(&mut conn, &input).1.unwrap().code, ErrorCode::COMPRESSION_ERROR);
    // A decoded list over the limit (an HPACK bomb: one big literal indexed, then referenced
    // again and again): answered 431, and the connection goes on.
    let config = Config { max_header_list_size: 8 * 1024, ..small() };
    let (mut conn, mut peer) = server_with(config, &[]);
    let mut block = peer.block(GET);
    // Literal with incremental indexing, new name, 3000-byte value.
    block.extend_from_slice(&[0x40, 0x01, b'x', 0x7f, 0x81, 0x16]);
    block.extend(std::iter::repeat_n(b'a', 3000));
    // Dynamic index 62, a hundred times.
    block.extend(std::iter::repeat_n(0xbe, 100));
    let mut input = Vec::new();
    write_headers(&mut input, sid(1), &block, true, 1 << 20);
    let (events, err) = feed(&mut conn, &input);
    assert_eq!((events, err), (vec![], None));
    let frames = out(&mut conn, &mut peer);
    assert_eq!(
        frames,
        [Out::Headers { stream: 1, end: true, fields: vec![(":status".into(), "431".into())] }]
    );
    assert!(conn.heap_bytes() < 64 * 1024, "{}", conn.heap_bytes());
    let (events, _) = feed(&mut conn, &peer.headers(3, GET, true));
    assert_eq!(events.len(), 1);
}

#[test]
fn rapid_reset_gets_goaway_within_the_limit() {
    let (mut conn, mut peer) = server();
    let mut frames = 0;
    let mut error = None;
    for i in 0..100u32 {
        let id = 1 + 2 * i;
        let mut input = peer.headers(id, POST, false);
        write_rst_stream(&mut input, sid(id), ErrorCode::CANCEL);
        frames += 2;
        if let (_, Some(e)) = feed(&mut conn, &input) {
            error = Some(e);
            break;
        }
    }
    let err = error.expect("GOAWAY");
    assert_eq!(err.cause, Cause::Flood(Flood::Resets));
    assert!(frames <= 2 * 11, "{frames} frames");
    assert_eq!(goaway(&out(&mut conn, &mut peer)), Some(ErrorCode::ENHANCE_YOUR_CALM));
}

#[test]
fn resets_after_the_response_do_not_count() {
    let (mut conn, mut peer) = server();
    for i in 0..50u32 {
        let id = 1 + 2 * i;
        let (events, err) = feed(&mut conn, &peer.headers(id, POST, false));
        assert_eq!((events.len(), err), (1, None));
        conn.send_response(sid(id), 200, [], false).unwrap();
        let mut input = Vec::new();
        write_rst_stream(&mut input, sid(id), ErrorCode::CANCEL);
        let (events, err) = feed(&mut conn, &input);
        assert_eq!(err, None);
        assert_eq!(events, [Ev::Reset { stream: id, code: ErrorCode::CANCEL, remote: true }]);
        out(&mut conn, &mut peer);
    }
}

#[test]
fn provoked_resets_count_too() {
    // MadeYouReset: each stream made to fail with a WINDOW_UPDATE overflow.
    let (mut conn, mut peer) = server();
    let mut error = None;
    for i in 0..100u32 {
        let id = 1 + 2 * i;
        let mut input = peer.headers(id, POST, false);
        write_window_update(&mut input, sid(id), frame::MAX_WINDOW_SIZE);
        if let (_, Some(e)) = feed(&mut conn, &input) {
            assert!(i <= 10, "after {i} streams");
            error = Some(e);
            break;
        }
    }
    assert_eq!(error.expect("GOAWAY").cause, Cause::Flood(Flood::Resets));
}

#[test]
fn control_floods_get_goaway() {
    let flood = |frame: fn(&mut Vec<u8>)| {
        let (mut conn, mut peer) = server();
        let mut input = Vec::new();
        for _ in 0..10_000 {
            frame(&mut input);
        }
        let mut used = 0;
        let mut frames = 0;
        let err = loop {
            match conn.recv(&input[used..]) {
                Ok(r) if r.is_idle() => {
                    // A peer that does not read its answers: reading stops.
                    assert!(!conn.wants_read());
                    out(&mut conn, &mut peer);
                }
                Ok(r) => {
                    used += r.used;
                    frames += 1;
                }
                Err(e) => break e,
            }
        };
        (err, frames)
    };
    // The client's first SETTINGS counted too: 19 more frames reach the limit of 20.
    let (err, frames) = flood(|b| write_ping(b, false, [0; 8]));
    assert_eq!((err.cause, frames), (Cause::Flood(Flood::Control), 19));
    let (err, frames) = flood(|b| write_settings(b, &[]));
    assert_eq!((err.cause, frames), (Cause::Flood(Flood::Control), 19));
    let (err, _) = flood(|b| {
        let p = Priority { dependency: sid(0), exclusive: false, weight: 1 };
        write_priority(b, sid(5), p);
    });
    assert_eq!(err.cause, Cause::Flood(Flood::Priority));
    let (err, frames) = flood(|b| write_window_update(b, sid(0), 1));
    assert_eq!((err.cause, frames), (Cause::Flood(Flood::WindowUpdates), 10));
    let (err, _) = flood(|b| {
        let head = FrameHeader { length: 1, kind: FrameType(0xee), flags: 0, stream_id: sid(0) };
        write_frame_header(b, head);
        b.push(0);
    });
    assert_eq!(err.cause, Cause::Flood(Flood::Control));
}

#[test]
fn empty_data_frames_get_goaway() {
    let (mut conn, mut peer) = server();
    let mut input = peer.headers(1, POST, false);
    for _ in 0..1000 {
        write_data(&mut input, sid(1), b"", false);
    }
    let err = feed(&mut conn, &input).1.unwrap();
    assert_eq!(err.cause, Cause::Flood(Flood::EmptyFrames));
}

#[test]
fn window_overflow_on_connection_and_stream() {
    let (mut conn, mut peer) = server();
    let mut input = Vec::new();
    write_window_update(&mut input, sid(0), frame::MAX_WINDOW_SIZE);
    let err = feed(&mut conn, &input).1.unwrap();
    assert_eq!((err.code, err.cause), (ErrorCode::FLOW_CONTROL_ERROR, Cause::WindowOverflow));
    let (mut conn, _) = server();
    let mut input = peer.headers(1, POST, false);
    write_window_update(&mut input, sid(1), frame::MAX_WINDOW_SIZE);
    let (events, err) = feed(&mut conn, &input);
    assert_eq!(err, None);
    assert_eq!(
        events[1],
        Ev::Reset { stream: 1, code: ErrorCode::FLOW_CONTROL_ERROR, remote: false }
    );
}

#[test]
fn stream_identifiers_must_grow_and_be_odd() {
    let (mut conn, mut peer) = server();
    let mut input = peer.headers(5, GET, true);
    input.extend(peer.headers(3, GET, true));
    let err = feed(&mut conn, &input).1.unwrap();
    assert_eq!((err.code, err.cause), (ErrorCode::PROTOCOL_ERROR, Cause::StreamId));
    assert_eq!(
        out(&mut conn, &mut peer).last(),
        Some(&Out::GoAway { last: 5, code: ErrorCode::PROTOCOL_ERROR })
    );
    let (mut conn, mut peer) = server();
    let err = feed(&mut conn, &peer.headers(2, GET, true)).1.unwrap();
    assert_eq!(err.code, ErrorCode::PROTOCOL_ERROR);
    // Reuse of a stream both sides ended: STREAM_CLOSED.
    let (mut conn, mut peer) = server();
    feed(&mut conn, &peer.headers(1, GET, true));
    conn.send_response(sid(1), 204, [], true).unwrap();
    let err = feed(&mut conn, &peer.headers(1, GET, true)).1.unwrap();
    assert_eq!(err.code, ErrorCode::STREAM_CLOSED);
}

#[test]
fn frames_on_idle_and_closed_streams() {
    for frame in [
        |b: &mut Vec<u8>| write_data(b, sid(1), b"x", true),
        |b: &mut Vec<u8>| write_rst_stream(b, sid(1), ErrorCode::CANCEL),
        |b: &mut Vec<u8>| write_window_update(b, sid(1), 1),
    ] {
        let (mut conn, _) = server();
        let mut input = Vec::new();
        frame(&mut input);
        let err = feed(&mut conn, &input).1.unwrap();
        assert_eq!((err.code, err.cause), (ErrorCode::PROTOCOL_ERROR, Cause::IdleStream));
    }
    // Half-closed (remote): DATA is a STREAM_CLOSED stream error.
    let (mut conn, mut peer) = server();
    let mut input = peer.headers(1, GET, true);
    write_data(&mut input, sid(1), b"x", true);
    let (events, err) = feed(&mut conn, &input);
    assert_eq!(err, None);
    assert_eq!(events[1], Ev::Reset { stream: 1, code: ErrorCode::STREAM_CLOSED, remote: false });
    // After the peer's RST_STREAM: a stream error.
    let (mut conn, mut peer) = server();
    let mut input = peer.headers(1, POST, false);
    write_rst_stream(&mut input, sid(1), ErrorCode::CANCEL);
    write_data(&mut input, sid(1), b"x", true);
    feed(&mut conn, &input);
    assert_eq!(resets(&out(&mut conn, &mut peer)), [(1, ErrorCode::STREAM_CLOSED)]);
    // After ours: ignored (the peer had not seen it), its credit returned.
    let (mut conn, mut peer) = server();
    feed(&mut conn, &peer.headers(1, POST, false));
    conn.reset(sid(1), ErrorCode::CANCEL);
    out(&mut conn, &mut peer);
    let mut input = Vec::new();
    for _ in 0..4 {
        write_data(&mut input, sid(1), &[0; 16_000], false);
    }
    let (events, err) = feed(&mut conn, &input);
    assert_eq!((events, err), (vec![], None));
    assert_eq!(out(&mut conn, &mut peer), [Out::WindowUpdate { stream: 0, increment: 48_000 }]);
}

#[test]
fn oversized_frames_are_a_frame_size_error() {
    let (mut conn, _) = server();
    let mut input = Vec::new();
    write_frame_header(
        &mut input,
        FrameHeader { length: 16_385, kind: FrameType::DATA, flags: 0, stream_id: sid(1) },
    );
    let err = feed(&mut conn, &input).1.unwrap();
    assert_eq!(err.code, ErrorCode::FRAME_SIZE_ERROR);
}

#[test]
fn malformed_requests_are_reset() {
    let cases: &[&[(&str, &str)]] = &[
        &[(":method", "GET"), (":scheme", "http"), (":path", "/"), ("UPPER", "x")],
        &[(":method", "GET"), (":scheme", "http"), (":path", "/"), ("connection", "close")],
        &[(":method", "GET"), (":scheme", "http"), (":path", "/"), ("te", "gzip")],
        &[(":method", "GET"), ("x", "y"), (":scheme", "http"), (":path", "/")],
        &[(":method", "GET"), (":scheme", "http"), (":path", "/"), (":status", "200")],
        &[(":scheme", "http"), (":path", "/")],
        &[(":method", "GET"), (":scheme", "http"), (":path", "")],
        &[
            (":method", "GET"),
            (":scheme", "http"),
            (":path", "/"),
            (":authority", "a"),
            ("host", "b"),
        ],
        &[
            (":method", "POST"),
            (":scheme", "http"),
            (":path", "/"),
            (":authority", "a"),
            ("content-length", "x"),
        ],
        &[
            (":method", "POST"),
            (":scheme", "http"),
            (":path", "/"),
            (":authority", "a"),
            ("content-length", "3"),
        ],
        &[
            (":method", "POST"),
            (":scheme", "http"),
            (":path", "/"),
            (":authority", "a"),
            // Two lengths that disagree (the last alone would be valid with END_STREAM).
            ("content-length", "1"),
            ("content-length", "0"),
        ],
        &[
            (":method", "GET"),
            (":scheme", "http"),
            (":path", "/"),
            (":authority", "a"),
            ("content-length", "0"),
            ("host", "a.b"),
        ],
    ];
    for (i, fields) in cases.iter().enumerate() {
        let (mut conn, mut peer) = server();
        let (events, err) = feed(&mut conn, &peer.headers(1, fields, true));
        assert_eq!((events, err), (vec![], None), "case {i}");
        assert_eq!(
            resets(&out(&mut conn, &mut peer)),
            [(1, ErrorCode::PROTOCOL_ERROR)],
            "case {i}"
        );
    }
}

#[test]
fn extended_connect_only_when_enabled() {
    let ws = [
        (":method", "CONNECT"),
        (":protocol", "websocket"),
        (":scheme", "https"),
        (":path", "/chat"),
        (":authority", "a"),
    ];
    // Not enabled (the default): not advertised, and the request is malformed.
    let (mut conn, mut peer) = server();
    let (events, err) = feed(&mut conn, &peer.headers(1, &ws, false));
    assert_eq!((events, err), (vec![], None));
    assert_eq!(resets(&out(&mut conn, &mut peer)), [(1, ErrorCode::PROTOCOL_ERROR)]);
    // Enabled: SETTINGS_ENABLE_CONNECT_PROTOCOL = 1, and the request opens its stream.
    let config = Config { enable_connect_protocol: true, ..small() };
    let mut conn = Connection::new(Role::Server, config);
    let mut peer = Peer::new();
    let first = out(&mut conn, &mut peer);
    assert!(
        matches!(&first[0], Out::Settings { ack: false, values } if values.contains(&Setting::EnableConnectProtocol(true))),
        "{first:?}"
    );
    let (mut conn, mut peer) = server_with(config, &[]);
    let (events, err) = feed(&mut conn, &peer.headers(1, &ws, false));
    assert_eq!(err, None);
    assert!(
        matches!(&events[..], [Ev::Request { stream: 1, end: false, fields }] if fields[1] == (":protocol".into(), "websocket".into())),
        "{events:?}"
    );
}

#[test]
fn a_host_that_agrees_with_the_authority_is_accepted() {
    let fields = [
        (":method", "GET"),
        (":scheme", "http"),
        (":path", "/"),
        (":authority", "Example.test"),
        ("content-length", "0"),
        ("host", "example.TEST"),
        ("content-length", "0"),
    ];
    let (mut conn, mut peer) = server();
    let (events, err) = feed(&mut conn, &peer.headers(1, &fields, true));
    assert_eq!(err, None);
    assert!(matches!(&events[..], [Ev::Request { stream: 1, end: true, .. }]), "{events:?}");
}

#[test]
fn content_length_and_trailers_rules() {
    let with_length: Vec<(&str, &str)> =
        POST.iter().copied().chain([("content-length", "4")]).collect();
    // Too much DATA.
    let (mut conn, mut peer) = server();
    let mut input = peer.headers(1, &with_length, false);
    write_data(&mut input, sid(1), b"hello", true);
    let (events, _) = feed(&mut conn, &input);
    assert_eq!(events[1], Ev::Reset { stream: 1, code: ErrorCode::PROTOCOL_ERROR, remote: false });
    // Too little.
    let (mut conn, mut peer) = server();
    let mut input = peer.headers(1, &with_length, false);
    write_data(&mut input, sid(1), b"hel", true);
    let (events, _) = feed(&mut conn, &input);
    assert_eq!(events[1], Ev::Reset { stream: 1, code: ErrorCode::PROTOCOL_ERROR, remote: false });
    // Trailers without END_STREAM, or with a pseudo-header field.
    for (fields, end) in [(&[("x", "y")][..], false), (&[(":method", "POST")][..], true)] {
        let (mut conn, mut peer) = server();
        let mut input = peer.headers(1, POST, false);
        input.extend(peer.headers(1, fields, end));
        let (events, _) = feed(&mut conn, &input);
        assert_eq!(
            events[1],
            Ev::Reset { stream: 1, code: ErrorCode::PROTOCOL_ERROR, remote: false }
        );
    }
    // Valid trailers end the stream.
    let (mut conn, mut peer) = server();
    let mut input = peer.headers(1, &with_length, false);
    write_data(&mut input, sid(1), b"four", false);
    input.extend(peer.headers(1, &[("grpc-status", "0")], true));
    let (events, _) = feed(&mut conn, &input);
    assert_eq!(
        events[2],
        Ev::Trailers { stream: 1, fields: vec![("grpc-status".into(), "0".into())] }
    );
}

#[test]
fn streams_beyond_the_limit_are_refused() {
    let (mut conn, mut peer) = server();
    let mut input = Vec::new();
    for id in [1, 3, 5, 7, 9] {
        input.extend(peer.headers(id, POST, false));
    }
    let (events, _) = feed(&mut conn, &input);
    assert_eq!(events.len(), 4);
    assert_eq!(resets(&out(&mut conn, &mut peer)), [(9, ErrorCode::REFUSED_STREAM)]);
}

#[test]
fn graceful_goaway_drains_then_finishes() {
    let (mut conn, mut peer) = server();
    feed(&mut conn, &peer.headers(1, POST, false));
    conn.go_away(ErrorCode::NO_ERROR);
    assert_eq!(out(&mut conn, &mut peer), [Out::GoAway { last: 1, code: ErrorCode::NO_ERROR }]);
    // A stream opened after it is ignored; stream 1 still works.
    let mut input = peer.headers(3, GET, true);
    write_data(&mut input, sid(1), b"x", true);
    let (events, err) = feed(&mut conn, &input);
    assert_eq!(err, None);
    assert_eq!(events, [Ev::Data { stream: 1, data: b"x".to_vec(), end: true }]);
    assert!(!conn.is_finished());
    conn.send_response(sid(1), 200, [], true).unwrap();
    assert!(conn.is_finished());
}

#[test]
fn push_promise_is_refused() {
    let (mut conn, _) = server();
    let mut input = Vec::new();
    frame::write_push_promise(&mut input, sid(1), sid(2), b"\x82", true);
    assert_eq!(feed(&mut conn, &input).1.unwrap().cause, Cause::Push);
}

#[test]
fn a_full_write_buffer_stops_reading() {
    let config = Config { max_write_buffer: 100, ..small() };
    let (mut conn, _) = server_with(config, &[]);
    let mut input = Vec::new();
    for _ in 0..15 {
        write_ping(&mut input, false, [0; 8]);
    }
    let (_, err) = feed(&mut conn, &input);
    assert_eq!(err, None);
    assert!(!conn.wants_read());
    // 6 answers of 17 bytes reach 100; the rest waits in the input.
    assert_eq!(conn.out_len(), 6 * 17);
}

/// A client connection after the handshake.
fn client_with(server_settings: &[Setting]) -> (Connection, Peer) {
    let mut conn = Connection::new(Role::Client, small());
    let mut peer = Peer::new();
    let bytes = conn.take_out(Vec::new());
    assert!(bytes.starts_with(PREFACE));
    let first = peer.read(&bytes[PREFACE.len()..]);
    assert!(
        matches!(&first[0], Out::Settings { ack: false, values } if values.contains(&Setting::EnablePush(false)))
    );
    let mut hello = settings(server_settings);
    write_settings_ack(&mut hello);
    let (events, err) = feed(&mut conn, &hello);
    assert_eq!((events, err), (vec![Ev::Settings], None));
    out(&mut conn, &mut peer);
    (conn, peer)
}

fn request_fields() -> Vec<Field<'static>> {
    POST.iter().map(|(n, v)| Field::new(n.as_bytes(), v.as_bytes())).collect()
}

#[test]
fn client_request_response_and_trailers() {
    let (mut conn, mut peer) = client_with(&[Setting::MaxConcurrentStreams(2)]);
    assert_eq!(conn.max_streams(), 2);
    let id = conn.send_request(request_fields(), false).unwrap();
    assert_eq!(id, sid(1));
    conn.send_data(id, b"ping", true).unwrap();
    let frames = out(&mut conn, &mut peer);
    assert!(
        matches!(&frames[0], Out::Headers { stream: 1, end: false, fields } if fields.len() == 6)
    );
    assert_eq!(frames[1], Out::Data { stream: 1, len: 4, end: true });
    let mut input = peer.headers(1, &[(":status", "100")], false);
    input.extend(peer.headers(
        1,
        &[(":status", "200"), ("content-type", "application/grpc")],
        false,
    ));
    write_data(&mut input, sid(1), b"pong", false);
    input.extend(peer.headers(1, &[("grpc-status", "0")], true));
    let (events, err) = feed(&mut conn, &input);
    assert_eq!(err, None);
    assert!(matches!(events[0], Ev::Response { stream: 1, status: 100, end: false, .. }));
    assert!(matches!(events[1], Ev::Response { stream: 1, status: 200, end: false, .. }));
    assert_eq!(events[2], Ev::Data { stream: 1, data: b"pong".to_vec(), end: false });
    assert!(matches!(events[3], Ev::Trailers { stream: 1, .. }));
    assert!(!conn.is_open(id));
}

#[test]
fn client_honours_the_peer_stream_limit_and_goaway() {
    let (mut conn, mut peer) = client_with(&[Setting::MaxConcurrentStreams(2)]);
    let a = conn.send_request(request_fields(), false).unwrap();
    let b = conn.send_request(request_fields(), false).unwrap();
    assert!(!conn.can_open_stream());
    assert_eq!(conn.send_request(request_fields(), false), Err(SendError::Refused));
    out(&mut conn, &mut peer);
    let mut input = Vec::new();
    write_goaway(&mut input, a, ErrorCode::NO_ERROR, b"bye");
    let (events, err) = feed(&mut conn, &input);
    assert_eq!(err, None);
    assert_eq!(
        events,
        [
            Ev::GoAway { last: 1, code: ErrorCode::NO_ERROR },
            Ev::Reset { stream: b.get(), code: ErrorCode::REFUSED_STREAM, remote: true }
        ]
    );
    assert!(conn.is_open(a) && !conn.is_finished());
    let (events, _) = feed(&mut conn, &peer.headers(1, &[(":status", "200")], true));
    assert_eq!(events.len(), 1);
    conn.send_data(a, b"", true).unwrap();
    assert!(conn.is_finished());
}

#[test]
fn client_refuses_push_and_checks_responses() {
    let mut conn = Connection::new(Role::Client, small());
    let mut input = settings(&[Setting::EnablePush(true)]);
    write_settings_ack(&mut input);
    assert_eq!(feed(&mut conn, &input).1.unwrap().cause, Cause::EnablePush);
    // A response on a stream never opened.
    let (mut conn, mut peer) = client_with(&[]);
    let err = feed(&mut conn, &peer.headers(1, &[(":status", "200")], true)).1.unwrap();
    assert_eq!(err.cause, Cause::IdleStream);
    // DATA before the response head, a 1xx with END_STREAM, a request pseudo-header field.
    for bad in [
        |p: &mut Peer| {
            let mut b = Vec::new();
            write_data(&mut b, sid(1), b"x", false);
            let _ = p;
            b
        },
        |p: &mut Peer| p.headers(1, &[(":status", "103")], true),
        |p: &mut Peer| p.headers(1, &[(":status", "200"), (":path", "/")], true),
    ] {
        let (mut conn, mut peer) = client_with(&[]);
        conn.send_request(request_fields(), true).unwrap();
        out(&mut conn, &mut peer);
        let (events, err) = feed(&mut conn, &bad(&mut peer));
        assert_eq!(err, None);
        assert_eq!(
            events,
            [Ev::Reset { stream: 1, code: ErrorCode::PROTOCOL_ERROR, remote: false }]
        );
    }
}

#[test]
fn a_head_response_may_declare_a_length_without_data() {
    let (mut conn, mut peer) = client_with(&[]);
    let head = [
        Field::new(b":method", b"HEAD"),
        Field::new(b":scheme", b"http"),
        Field::new(b":path", b"/"),
        Field::new(b":authority", b"a"),
    ];
    conn.send_request(head, true).unwrap();
    out(&mut conn, &mut peer);
    let (events, err) =
        feed(&mut conn, &peer.headers(1, &[(":status", "200"), ("content-length", "10")], true));
    assert_eq!(err, None);
    assert!(matches!(events[..], [Ev::Response { status: 200, end: true, .. }]));
}

#[test]
fn a_finished_stream_keeps_its_queued_end_then_stops_the_peer() {
    let (mut conn, mut peer) = server_with(small(), &[Setting::InitialWindowSize(3)]);
    feed(&mut conn, &peer.headers(1, POST, false));
    conn.send_response(sid(1), 200, [], false).unwrap();
    conn.send_data(sid(1), b"hello", true).unwrap();
    conn.finish(sid(1));
    assert!(conn.is_open(sid(1)), "the queued end is kept");
    let frames = out(&mut conn, &mut peer);
    assert_eq!(frames[1], Out::Data { stream: 1, len: 3, end: false });
    let mut wu = Vec::new();
    write_window_update(&mut wu, sid(1), 10);
    feed(&mut conn, &wu);
    // The rest with END_STREAM, then RST_STREAM(NO_ERROR): the client still had its body open.
    assert_eq!(
        out(&mut conn, &mut peer),
        [
            Out::Data { stream: 1, len: 2, end: true },
            Out::Rst { stream: 1, code: ErrorCode::NO_ERROR }
        ]
    );
    assert!(!conn.is_open(sid(1)));
    // A stream whose outgoing side is not ended is reset at once.
    feed(&mut conn, &peer.headers(3, POST, false));
    conn.send_response(sid(3), 200, [], false).unwrap();
    conn.finish(sid(3));
    let frames = out(&mut conn, &mut peer);
    assert_eq!(frames.last(), Some(&Out::Rst { stream: 3, code: ErrorCode::CANCEL }));
    // One whose both sides ended is left alone.
    feed(&mut conn, &peer.headers(5, GET, true));
    conn.send_response(sid(5), 204, [], true).unwrap();
    conn.finish(sid(5));
    assert_eq!(resets(&out(&mut conn, &mut peer)), []);
}
