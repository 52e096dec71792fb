//! The in-place frame parser and the frame writers (`fulcrum_h2::frame`).
//!
//! Input: two bytes choosing SETTINGS_MAX_FRAME_SIZE and a cut point, then the bytes a peer
//! sent. Invariants:
//! - the parser never panics, and every frame (or stream error) lies within the buffer;
//! - a frame written back parses to the same frame, and its bytes equal the input's except
//!   where the input was not canonical: flag bits the type does not define, reserved bits, and
//!   the content of padding (written as zeros);
//! - a prefix of a frame is incomplete (`Ok(None)`) unless its header alone is refused, and
//!   then with the same error;
//! - a HEADERS block written with `write_headers` (split into CONTINUATION frames at the
//!   peer's limit) reassembles to the same block.

#![no_main]

use fulcrum_h2::frame::{
    self, DEFAULT_MAX_FRAME_SIZE, Frame, FrameError, FrameType, HEADER_LEN, StreamId, flags,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let [size, cut, ref input @ ..] = *data else { return };
    // Our advertised limit: the minimum, or a little more, so oversized frames are cheap.
    let max = DEFAULT_MAX_FRAME_SIZE + u32::from(size) * 64;
    let mut buf = input;
    loop {
        check_prefix(buf, max, cut);
        match frame::parse(buf, max) {
            Ok(None) => break,
            Ok(Some((f, len))) => {
                assert!((HEADER_LEN..=buf.len()).contains(&len), "frame length out of the buffer");
                check_frame(&buf[..len], f, max);
                buf = &buf[len..];
            }
            Err(e @ FrameError::Stream { frame_len, .. }) => {
                assert!(
                    (HEADER_LEN..=buf.len()).contains(&frame_len),
                    "{e}: length out of the buffer"
                );
                assert!(e.stream_id().is_some_and(|id| !id.is_zero()));
                buf = &buf[frame_len..];
            }
            Err(FrameError::Connection { .. }) => break,
        }
    }
});

/// A cut of the first frame is incomplete, or refused for its header exactly like the whole.
fn check_prefix(buf: &[u8], max: u32, cut: u8) {
    let Some(head) = frame::parse_header(buf) else { return };
    let whole = HEADER_LEN + head.length as usize;
    if whole > buf.len() {
        return;
    }
    let cut = usize::from(cut) % whole;
    match frame::parse(&buf[..cut], max) {
        Ok(None) => {}
        Err(e) => assert_eq!(Err(e), frame::parse(buf, max).map(|_| ()), "prefix error differs"),
        Ok(Some(_)) => panic!("a prefix of {cut} bytes parsed as a whole frame"),
    }
}

fn check_frame(input: &[u8], f: Frame<'_>, max: u32) {
    let mut out = Vec::new();
    f.write(&mut out);
    assert_eq!(
        frame::parse(&out, max),
        Ok(Some((f, out.len()))),
        "written frame reads differently"
    );
    assert_eq!(out.len(), input.len(), "written frame has another length");
    let defined = match f.kind() {
        FrameType::DATA => flags::END_STREAM | flags::PADDED,
        FrameType::HEADERS => {
            flags::END_STREAM | flags::END_HEADERS | flags::PADDED | flags::PRIORITY
        }
        FrameType::PUSH_PROMISE => flags::END_HEADERS | flags::PADDED,
        FrameType::CONTINUATION => flags::END_HEADERS,
        FrameType::SETTINGS | FrameType::PING => flags::ACK,
        FrameType::PRIORITY | FrameType::RST_STREAM | FrameType::GOAWAY => 0,
        FrameType::WINDOW_UPDATE => 0,
        _ => 0xff,
    };
    for (i, (&a, &b)) in input.iter().zip(&out).enumerate() {
        let expected = match i {
            4 => a & defined,
            5 => a & 0x7f,
            9 if matches!(f, Frame::WindowUpdate { .. } | Frame::GoAway { .. }) => a & 0x7f,
            _ => a,
        };
        if b != expected && !in_padding(&f, input, i) && !promised_reserved_bit(&f, input, i) {
            panic!("byte {i} written as {b:#04x}, read {a:#04x}");
        }
    }
    if let Frame::Headers { stream_id, block, end_stream, .. } = f {
        check_split(stream_id, block, end_stream, max);
    }
}

/// Is byte `i` of the frame padding?
fn in_padding(f: &Frame<'_>, input: &[u8], i: usize) -> bool {
    let padding = match *f {
        Frame::Data { padding, .. }
        | Frame::Headers { padding, .. }
        | Frame::PushPromise { padding, .. } => padding,
        _ => None,
    };
    padding.is_some_and(|p| i >= input.len() - usize::from(p))
}

/// Is byte `i` the one holding the reserved bit of a promised stream id (and only it differs)?
fn promised_reserved_bit(f: &Frame<'_>, input: &[u8], i: usize) -> bool {
    let Frame::PushPromise { padding, promised_id, .. } = *f else { return false };
    let at = HEADER_LEN + usize::from(padding.is_some());
    i == at && input[i] & 0x7f == (promised_id.get() >> 24) as u8
}

/// A block written as HEADERS + CONTINUATION at a small peer limit reassembles.
fn check_split(stream_id: StreamId, block: &[u8], end_stream: bool, max: u32) {
    let mut out = Vec::new();
    frame::write_headers(&mut out, stream_id, block, end_stream, DEFAULT_MAX_FRAME_SIZE);
    let mut rest = &out[..];
    let mut joined = Vec::new();
    let mut first = true;
    while let Ok(Some((f, len))) = frame::parse(rest, max) {
        let (fragment, end) = match f {
            Frame::Headers { block, end_headers, .. } if first => (block, end_headers),
            Frame::Continuation { block, end_headers, .. } if !first => (block, end_headers),
            other => panic!("unexpected {other:?} in a split block"),
        };
        first = false;
        joined.extend_from_slice(fragment);
        rest = &rest[len..];
        assert_eq!(end, rest.is_empty(), "END_HEADERS not on the last frame");
    }
    assert!(rest.is_empty());
    assert_eq!(joined, block);
}
