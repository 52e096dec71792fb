//! Frame tests: every type written and parsed back, every rule of the parser, and the in-place
//! HEADERS writer with its CONTINUATION split.

use super::*;

const MAX: u32 = DEFAULT_MAX_FRAME_SIZE;

fn sid(id: u32) -> StreamId {
    StreamId::new(id)
}

/// A raw frame: header fields and payload as given, nothing checked.
fn raw(kind: FrameType, flag_bits: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut buf = Vec::new();
    let header = FrameHeader {
        length: payload.len() as u32,
        kind,
        flags: flag_bits,
        stream_id: sid(stream),
    };
    write_frame_header(&mut buf, header);
    buf.extend_from_slice(payload);
    buf
}

fn parse_one(buf: &[u8]) -> Result<Frame<'_>, FrameError> {
    match parse(buf, MAX)? {
        Some((frame, len)) => {
            assert_eq!(len, buf.len(), "frame length");
            Ok(frame)
        }
        None => panic!("incomplete frame"),
    }
}

/// Writes `frame`, parses it back, and checks the result and its re-serialisation.
fn round_trip(frame: Frame<'_>) {
    let mut buf = Vec::new();
    frame.write(&mut buf);
    assert_eq!(parse_one(&buf), Ok(frame));
    // Every proper prefix is incomplete, never an error or a different frame.
    for cut in 0..buf.len() {
        assert_eq!(parse(&buf[..cut], MAX), Ok(None), "prefix of {cut}");
    }
    // Trailing bytes of the next frame are left alone.
    let mut more = buf.clone();
    more.extend_from_slice(&[0, 0]);
    assert_eq!(parse(&more, MAX), Ok(Some((frame, buf.len()))));
}

#[test]
fn every_frame_type_round_trips() {
    let prio = Priority { dependency: sid(3), exclusive: true, weight: 200 };
    let settings_payload = [0, 4, 0, 1, 0, 0, 0xff, 0xff, 0, 0, 0, 0];
    let frames = [
        Frame::Data { stream_id: sid(1), end_stream: false, data: b"hello", padding: None },
        Frame::Data { stream_id: sid(1), end_stream: true, data: b"", padding: Some(7) },
        Frame::Data { stream_id: sid(5), end_stream: true, data: b"x", padding: Some(0) },
        Frame::Headers {
            stream_id: sid(1),
            end_stream: true,
            end_headers: true,
            priority: None,
            block: &[0x82, 0x84],
            padding: None,
        },
        Frame::Headers {
            stream_id: sid(7),
            end_stream: false,
            end_headers: false,
            priority: Some(prio),
            block: &[0x82],
            padding: Some(3),
        },
        Frame::Priority { stream_id: sid(5), priority: prio },
        Frame::RstStream { stream_id: sid(9), code: ErrorCode::CANCEL },
        Frame::RstStream { stream_id: sid(9), code: ErrorCode(0xdead) },
        Frame::PushPromise {
            stream_id: sid(1),
            end_headers: true,
            promised_id: sid(2),
            block: &[0x82],
            padding: Some(2),
        },
        Frame::Ping { ack: false, data: *b"12345678" },
        Frame::Ping { ack: true, data: [0; 8] },
        Frame::GoAway { last_stream_id: sid(11), code: ErrorCode::NO_ERROR, debug_data: b"bye" },
        Frame::GoAway { last_stream_id: StreamId::MAX, code: ErrorCode(99), debug_data: b"" },
        Frame::WindowUpdate { stream_id: StreamId::ZERO, increment: 1 },
        Frame::WindowUpdate { stream_id: sid(3), increment: MAX_WINDOW_SIZE },
        Frame::Continuation { stream_id: sid(1), end_headers: true, block: &[0x86] },
        Frame::Continuation { stream_id: sid(1), end_headers: false, block: &[] },
        Frame::Unknown {
            header: FrameHeader {
                length: 3,
                kind: FrameType(0xfa),
                flags: 0xff,
                stream_id: sid(4),
            },
            payload: b"ext",
        },
    ];
    for frame in frames {
        round_trip(frame);
    }
    // SETTINGS (built from bytes: the type validates on parse).
    let buf = raw(FrameType::SETTINGS, 0, 0, &settings_payload);
    let Frame::Settings(s) = parse_one(&buf).unwrap() else { panic!("not SETTINGS") };
    round_trip(Frame::Settings(s));
    let ack = raw(FrameType::SETTINGS, flags::ACK, 0, &[]);
    round_trip(parse_one(&ack).unwrap());
}

#[test]
fn writers_produce_what_the_parser_reads() {
    let mut buf = Vec::new();
    write_data(&mut buf, sid(1), b"abc", true);
    write_data_header(&mut buf, sid(3), 2, false);
    buf.extend_from_slice(b"de");
    write_headers(&mut buf, sid(5), &[0x82, 0x87], false, MAX);
    write_continuation(&mut buf, sid(5), &[0x84], true);
    write_priority(&mut buf, sid(7), Priority { dependency: sid(1), exclusive: false, weight: 15 });
    write_rst_stream(&mut buf, sid(1), ErrorCode::REFUSED_STREAM);
    write_settings(
        &mut buf,
        &[
            Setting::HeaderTableSize(0),
            Setting::EnablePush(false),
            Setting::MaxConcurrentStreams(100),
            Setting::InitialWindowSize(MAX_WINDOW_SIZE),
            Setting::MaxFrameSize(MAX_MAX_FRAME_SIZE),
            Setting::MaxHeaderListSize(65_536),
            Setting::EnableConnectProtocol(true),
            Setting::NoRfc7540Priorities(true),
        ],
    );
    write_settings_ack(&mut buf);
    write_push_promise(&mut buf, sid(1), sid(2), &[0x82], true);
    write_ping(&mut buf, true, *b"pingpong");
    write_goaway(&mut buf, sid(5), ErrorCode::ENHANCE_YOUR_CALM, b"calm");
    write_window_update(&mut buf, StreamId::ZERO, 65_535);

    let mut frames = Vec::new();
    let mut rest = &buf[..];
    while let Some((frame, len)) = parse(rest, MAX).unwrap() {
        frames.push(frame);
        rest = &rest[len..];
    }
    assert!(rest.is_empty());
    assert_eq!(frames.len(), 12);
    assert_eq!(
        frames[0],
        Frame::Data { stream_id: sid(1), end_stream: true, data: b"abc", padding: None }
    );
    assert_eq!(
        frames[1],
        Frame::Data { stream_id: sid(3), end_stream: false, data: b"de", padding: None }
    );
    assert_eq!(
        frames[2],
        Frame::Headers {
            stream_id: sid(5),
            end_stream: false,
            end_headers: true,
            priority: None,
            block: &[0x82, 0x87],
            padding: None,
        }
    );
    assert_eq!(
        frames[3],
        Frame::Continuation { stream_id: sid(5), end_headers: true, block: &[0x84] }
    );
    assert!(matches!(frames[4], Frame::Priority { .. }));
    assert_eq!(frames[5], Frame::RstStream { stream_id: sid(1), code: ErrorCode::REFUSED_STREAM });
    let Frame::Settings(s) = frames[6] else { panic!("not SETTINGS") };
    assert!(!s.is_ack());
    assert_eq!(s.iter().count(), 8);
    assert_eq!(s.iter().nth(4), Some(Setting::MaxFrameSize(MAX_MAX_FRAME_SIZE)));
    assert!(matches!(frames[7], Frame::Settings(s) if s.is_ack()));
    assert!(matches!(frames[8], Frame::PushPromise { promised_id, .. } if promised_id == sid(2)));
    assert_eq!(frames[9], Frame::Ping { ack: true, data: *b"pingpong" });
    assert_eq!(
        frames[10],
        Frame::GoAway {
            last_stream_id: sid(5),
            code: ErrorCode::ENHANCE_YOUR_CALM,
            debug_data: b"calm"
        }
    );
    assert_eq!(frames[11], Frame::WindowUpdate { stream_id: StreamId::ZERO, increment: 65_535 });
}

#[test]
fn flags_reserved_bits_and_flow_control_length() {
    // Undefined flags are dropped, the reserved stream bit is cleared.
    let buf = raw(FrameType::DATA, 0xf7 & !flags::PADDED, 0x8000_0001, b"xy");
    let frame = parse_one(&buf).unwrap();
    assert_eq!(
        frame,
        Frame::Data { stream_id: sid(1), end_stream: true, data: b"xy", padding: None }
    );
    assert_eq!(frame.flow_controlled_len(), 2);
    // Padding counts against flow control: 1 (pad length) + 2 + 4.
    let buf = raw(FrameType::DATA, flags::PADDED, 1, &[4, b'x', b'y', 0, 0, 0, 0]);
    assert_eq!(parse_one(&buf).unwrap().flow_controlled_len(), 7);
    // The reserved bit of a window increment is ignored.
    let buf = raw(FrameType::WINDOW_UPDATE, 0, 1, &[0x80, 0, 0, 5]);
    assert_eq!(parse_one(&buf), Ok(Frame::WindowUpdate { stream_id: sid(1), increment: 5 }));
    // The exclusive bit is split from the dependency.
    let buf = raw(FrameType::PRIORITY, 0, 3, &[0x80, 0, 0, 1, 9]);
    assert_eq!(
        parse_one(&buf),
        Ok(Frame::Priority {
            stream_id: sid(3),
            priority: Priority { dependency: sid(1), exclusive: true, weight: 9 }
        })
    );
}

fn conn_err(buf: &[u8]) -> (ErrorCode, Violation) {
    match parse(buf, MAX) {
        Err(FrameError::Connection { code, violation, .. }) => (code, violation),
        other => panic!("expected a connection error, got {other:?}"),
    }
}

fn stream_err(buf: &[u8]) -> (StreamId, ErrorCode, Violation) {
    match parse(buf, MAX) {
        Err(e @ FrameError::Stream { stream_id, code, violation, frame_len, .. }) => {
            assert_eq!(frame_len, buf.len());
            assert_eq!(
                (e.stream_id(), e.frame_len(), e.code()),
                (Some(stream_id), Some(frame_len), code)
            );
            (stream_id, code, violation)
        }
        other => panic!("expected a stream error, got {other:?}"),
    }
}

#[test]
fn size_rules() {
    use ErrorCode as C;
    use Violation as V;
    // Too large: refused from the header alone, before the payload is in.
    let mut big = raw(FrameType::DATA, 0, 1, &[]);
    big[..3].copy_from_slice(&[0, 0x40, 0x01]);
    assert_eq!(conn_err(&big), (C::FRAME_SIZE_ERROR, V::FrameTooLarge));
    assert_eq!(parse(&big, 16_385).map(|f| f.is_none()), Ok(true));
    let big = raw(FrameType(0xee), 0, 0, &[0; 16_385]);
    assert_eq!(conn_err(&big), (C::FRAME_SIZE_ERROR, V::FrameTooLarge));
    assert_eq!(parse(&big, 16_385).map(|f| f.is_some()), Ok(true));

    // Fixed lengths.
    assert_eq!(
        conn_err(&raw(FrameType::RST_STREAM, 0, 1, &[0; 3])),
        (C::FRAME_SIZE_ERROR, V::BadLength)
    );
    assert_eq!(
        conn_err(&raw(FrameType::RST_STREAM, 0, 1, &[0; 5])),
        (C::FRAME_SIZE_ERROR, V::BadLength)
    );
    assert_eq!(conn_err(&raw(FrameType::PING, 0, 0, &[0; 7])), (C::FRAME_SIZE_ERROR, V::BadLength));
    assert_eq!(conn_err(&raw(FrameType::PING, 0, 0, &[0; 9])), (C::FRAME_SIZE_ERROR, V::BadLength));
    assert_eq!(
        conn_err(&raw(FrameType::WINDOW_UPDATE, 0, 0, &[0; 3])),
        (C::FRAME_SIZE_ERROR, V::BadLength)
    );
    assert_eq!(
        conn_err(&raw(FrameType::WINDOW_UPDATE, 0, 1, &[0, 0, 0, 1, 0])),
        (C::FRAME_SIZE_ERROR, V::BadLength)
    );
    assert_eq!(
        conn_err(&raw(FrameType::GOAWAY, 0, 0, &[0; 7])),
        (C::FRAME_SIZE_ERROR, V::TooShort)
    );
    assert_eq!(
        conn_err(&raw(FrameType::SETTINGS, 0, 0, &[0; 5])),
        (C::FRAME_SIZE_ERROR, V::BadLength)
    );
    assert_eq!(
        conn_err(&raw(FrameType::SETTINGS, flags::ACK, 0, &[0; 6])),
        (C::FRAME_SIZE_ERROR, V::SettingsAckWithPayload)
    );
    // PRIORITY of the wrong length is only a stream error.
    assert_eq!(
        stream_err(&raw(FrameType::PRIORITY, 0, 3, &[0; 4])),
        (sid(3), C::FRAME_SIZE_ERROR, V::BadLength)
    );
    assert_eq!(
        stream_err(&raw(FrameType::PRIORITY, 0, 3, &[0; 6])),
        (sid(3), C::FRAME_SIZE_ERROR, V::BadLength)
    );

    // Padding and mandatory fields.
    assert_eq!(
        conn_err(&raw(FrameType::DATA, flags::PADDED, 1, &[])),
        (C::FRAME_SIZE_ERROR, V::TooShort)
    );
    assert_eq!(
        conn_err(&raw(FrameType::DATA, flags::PADDED, 1, &[1])),
        (C::PROTOCOL_ERROR, V::PaddingTooLong)
    );
    assert!(parse_one(&raw(FrameType::DATA, flags::PADDED, 1, &[1, 0])).is_ok());
    let hp = flags::PADDED | flags::PRIORITY;
    assert_eq!(
        conn_err(&raw(FrameType::HEADERS, hp, 1, &[0; 5])),
        (C::FRAME_SIZE_ERROR, V::TooShort)
    );
    assert_eq!(
        conn_err(&raw(FrameType::HEADERS, hp, 1, &[1, 0, 0, 0, 0, 0])),
        (C::PROTOCOL_ERROR, V::PaddingTooLong)
    );
    assert!(parse_one(&raw(FrameType::HEADERS, hp, 1, &[1, 0, 0, 0, 0, 0, 0])).is_ok());
    assert_eq!(
        conn_err(&raw(FrameType::HEADERS, flags::PRIORITY, 1, &[0; 4])),
        (C::FRAME_SIZE_ERROR, V::TooShort)
    );
    assert_eq!(
        conn_err(&raw(FrameType::HEADERS, flags::PADDED, 1, &[])),
        (C::FRAME_SIZE_ERROR, V::TooShort)
    );
    assert_eq!(
        conn_err(&raw(FrameType::HEADERS, flags::PADDED, 1, &[1])),
        (C::PROTOCOL_ERROR, V::PaddingTooLong)
    );
    assert_eq!(
        conn_err(&raw(FrameType::PUSH_PROMISE, 0, 1, &[0; 3])),
        (C::FRAME_SIZE_ERROR, V::TooShort)
    );
    assert_eq!(
        conn_err(&raw(FrameType::PUSH_PROMISE, flags::PADDED, 1, &[1, 0, 0, 0, 2])),
        (C::PROTOCOL_ERROR, V::PaddingTooLong)
    );
}

#[test]
fn stream_id_rules() {
    use ErrorCode as C;
    use Violation as V;
    for kind in [
        FrameType::DATA,
        FrameType::HEADERS,
        FrameType::PRIORITY,
        FrameType::RST_STREAM,
        FrameType::PUSH_PROMISE,
        FrameType::CONTINUATION,
    ] {
        let payload = [0u8; 5];
        let len =
            if kind == FrameType::RST_STREAM || kind == FrameType::PUSH_PROMISE { 4 } else { 5 };
        assert_eq!(
            conn_err(&raw(kind, 0, 0, &payload[..len])),
            (C::PROTOCOL_ERROR, V::StreamIdZero),
            "{kind}"
        );
    }
    for (kind, len) in [(FrameType::SETTINGS, 0), (FrameType::PING, 8), (FrameType::GOAWAY, 8)] {
        assert_eq!(
            conn_err(&raw(kind, 0, 1, &[0; 8][..len])),
            (C::PROTOCOL_ERROR, V::StreamIdNotZero),
            "{kind}"
        );
    }
    // Extension frames are ignored wherever they are.
    assert!(matches!(parse_one(&raw(FrameType(0x10), 0, 0, b"")), Ok(Frame::Unknown { .. })));
    // Self-dependency: a stream error for PRIORITY; HEADERS is returned for HPACK's sake.
    assert_eq!(
        stream_err(&raw(FrameType::PRIORITY, 0, 3, &[0, 0, 0, 3, 0])),
        (sid(3), C::PROTOCOL_ERROR, V::SelfDependency)
    );
    let headers =
        raw(FrameType::HEADERS, flags::PRIORITY | flags::END_HEADERS, 3, &[0, 0, 0, 3, 0, 0x82]);
    let frame = parse_one(&headers).unwrap();
    assert!(frame.is_self_dependent());
    assert!(
        !parse_one(&raw(FrameType::HEADERS, flags::PRIORITY, 3, &[0, 0, 0, 1, 0]))
            .unwrap()
            .is_self_dependent()
    );
    // WINDOW_UPDATE of 0: a connection error on stream 0, a stream error elsewhere.
    assert_eq!(
        conn_err(&raw(FrameType::WINDOW_UPDATE, 0, 0, &[0; 4])),
        (C::PROTOCOL_ERROR, V::ZeroWindowIncrement)
    );
    assert_eq!(
        stream_err(&raw(FrameType::WINDOW_UPDATE, 0, 5, &[0x80, 0, 0, 0])),
        (sid(5), C::PROTOCOL_ERROR, V::ZeroWindowIncrement)
    );
}

#[test]
fn settings_rules() {
    use ErrorCode as C;
    use Violation as V;
    let one = |id: u16, value: u32| {
        let mut p = id.to_be_bytes().to_vec();
        p.extend_from_slice(&value.to_be_bytes());
        raw(FrameType::SETTINGS, 0, 0, &p)
    };
    assert_eq!(conn_err(&one(0x2, 2)), (C::PROTOCOL_ERROR, V::SettingNotBoolean));
    assert_eq!(conn_err(&one(0x8, 2)), (C::PROTOCOL_ERROR, V::SettingNotBoolean));
    assert_eq!(conn_err(&one(0x9, u32::MAX)), (C::PROTOCOL_ERROR, V::SettingNotBoolean));
    assert_eq!(
        conn_err(&one(0x4, MAX_WINDOW_SIZE + 1)),
        (C::FLOW_CONTROL_ERROR, V::InitialWindowTooLarge)
    );
    assert_eq!(conn_err(&one(0x5, 16_383)), (C::PROTOCOL_ERROR, V::MaxFrameSizeOutOfRange));
    assert_eq!(
        conn_err(&one(0x5, MAX_MAX_FRAME_SIZE + 1)),
        (C::PROTOCOL_ERROR, V::MaxFrameSizeOutOfRange)
    );
    for (id, value, setting) in [
        (0x1, u32::MAX, Setting::HeaderTableSize(u32::MAX)),
        (0x2, 1, Setting::EnablePush(true)),
        (0x3, 0, Setting::MaxConcurrentStreams(0)),
        (0x4, MAX_WINDOW_SIZE, Setting::InitialWindowSize(MAX_WINDOW_SIZE)),
        (0x5, 16_384, Setting::MaxFrameSize(16_384)),
        (0x6, 1, Setting::MaxHeaderListSize(1)),
        (0x8, 0, Setting::EnableConnectProtocol(false)),
        (0x9, 1, Setting::NoRfc7540Priorities(true)),
    ] {
        let buf = one(id, value);
        let Ok(Frame::Settings(s)) = parse_one(&buf) else { panic!("setting {id}") };
        assert_eq!(s.iter().collect::<Vec<_>>(), [setting]);
        assert_eq!((setting.id(), setting.value()), (SettingId(id), value));
    }
    // Unknown identifiers, whatever their value, are skipped but kept in the payload.
    let mut p = vec![0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
    p.extend_from_slice(&[0, 3, 0, 0, 0, 7]);
    let buf = raw(FrameType::SETTINGS, 0, 0, &p);
    let Ok(Frame::Settings(s)) = parse_one(&buf) else { panic!("settings") };
    assert_eq!(s.iter().collect::<Vec<_>>(), [Setting::MaxConcurrentStreams(7)]);
    assert_eq!(s.payload(), &p[..]);
    // An invalid value anywhere in the frame refuses it all.
    let mut p = vec![0, 3, 0, 0, 0, 7];
    p.extend_from_slice(&[0, 2, 0, 0, 0, 5]);
    assert_eq!(
        conn_err(&raw(FrameType::SETTINGS, 0, 0, &p)),
        (C::PROTOCOL_ERROR, V::SettingNotBoolean)
    );
}

/// Parses a HEADERS frame and its CONTINUATION frames back into one block.
fn reassemble(mut buf: &[u8], max: u32) -> (Vec<u8>, bool, usize) {
    let mut block = Vec::new();
    let mut frames = 0;
    let mut end_stream = false;
    while let Some((frame, len)) = parse(buf, max).unwrap() {
        frames += 1;
        let (fragment, end) = match frame {
            Frame::Headers { block, end_headers, end_stream: es, stream_id, .. } => {
                assert_eq!((frames, stream_id), (1, sid(3)));
                end_stream = es;
                (block, end_headers)
            }
            Frame::Continuation { block, end_headers, stream_id } => {
                assert!(frames > 1 && stream_id == sid(3));
                (block, end_headers)
            }
            other => panic!("unexpected {other:?}"),
        };
        assert!(fragment.len() <= max as usize);
        block.extend_from_slice(fragment);
        buf = &buf[len..];
        if end {
            assert!(buf.is_empty(), "END_HEADERS before the last frame");
        }
    }
    assert!(buf.is_empty());
    (block, end_stream, frames)
}

#[test]
fn headers_encoded_in_place_and_split_into_continuations() {
    let max = 16_384usize;
    for block_len in [0, 1, max - 1, max, max + 1, 2 * max, 2 * max + 7, 5 * max + 3] {
        let block: Vec<u8> = (0..block_len).map(|i| (i * 7 % 251) as u8).collect();
        let mut buf = b"earlier frames".to_vec();
        let pending = PendingHeaders::begin(&mut buf, sid(3));
        buf.extend_from_slice(&block);
        assert_eq!(pending.block_len(&buf), block_len);
        pending.finish(&mut buf, block_len % 2 == 0, max as u32);
        assert_eq!(&buf[..14], b"earlier frames");
        let (got, end_stream, frames) = reassemble(&buf[14..], max as u32);
        assert_eq!(got, block, "block of {block_len}");
        assert_eq!(end_stream, block_len % 2 == 0);
        assert_eq!(frames, block_len.div_ceil(max).max(1));
        assert_eq!(buf.len(), 14 + block_len + 9 * frames);
    }
    // A larger peer limit means fewer frames; a limit below the minimum is raised to it.
    let block = vec![0x82; 40_000];
    let mut buf = Vec::new();
    write_headers(&mut buf, sid(3), &block, true, 32_768);
    assert_eq!(reassemble(&buf, 32_768).2, 2);
    let mut buf = Vec::new();
    write_headers(&mut buf, sid(3), &block, true, 100);
    assert_eq!(reassemble(&buf, 16_384).2, 3);
}

#[test]
fn hpack_encoded_straight_into_the_write_buffer() {
    let mut enc = crate::hpack::Encoder::new();
    let mut buf = Vec::new();
    let pending = PendingHeaders::begin(&mut buf, sid(1));
    enc.encode(b":method", b"POST", &mut buf);
    enc.encode(b":scheme", b"http", &mut buf);
    enc.encode(b":path", b"/pkg.Service/Method", &mut buf);
    enc.encode(b"te", b"trailers", &mut buf);
    pending.finish(&mut buf, false, MAX);
    let Ok(Frame::Headers { block, end_headers: true, end_stream: false, .. }) = parse_one(&buf)
    else {
        panic!("not a complete HEADERS frame");
    };
    let mut dec = crate::hpack::Decoder::default();
    let fields = dec.decode(block).unwrap();
    let names: Vec<&[u8]> = fields.iter().map(|f| f.name).collect();
    assert_eq!(names, [&b":method"[..], b":scheme", b":path", b"te"]);
}

#[test]
fn error_messages_name_the_rule() {
    let e = parse(&raw(FrameType::PING, 0, 1, &[0; 8]), MAX).unwrap_err();
    assert_eq!(
        e.to_string(),
        "connection error PROTOCOL_ERROR: connection frame on a stream (PING frame)"
    );
    assert_eq!((e.code(), e.stream_id(), e.frame_len()), (ErrorCode::PROTOCOL_ERROR, None, None));
    let e = parse(&raw(FrameType::WINDOW_UPDATE, 0, 5, &[0; 4]), MAX).unwrap_err();
    assert_eq!(
        e.to_string(),
        "stream 5 error PROTOCOL_ERROR: WINDOW_UPDATE increment of 0 (WINDOW_UPDATE frame)"
    );
    assert_eq!(format!("{:?}", ErrorCode(0x42)), "ErrorCode(0x42)");
    assert_eq!(format!("{:?}", FrameType(0x42)), "FrameType(0x42)");
    assert_eq!(format!("{:?}", SettingId(0x42)), "SettingId(0x42)");
}
