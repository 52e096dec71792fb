//! Frame writers: each appends one frame (header, then payload) to the connection's write
//! buffer. Payload sizes are the caller's to keep within the peer's SETTINGS_MAX_FRAME_SIZE,
//! except for field blocks, which [`PendingHeaders::finish`] splits into CONTINUATION frames.

use super::HEADER_LEN;
use super::parse::{Frame, Priority, Setting};
use super::types::{ErrorCode, FrameHeader, FrameType, StreamId, flags};

/// Largest payload a frame header can describe (24 bits).
const MAX_LEN: usize = (1 << 24) - 1;

/// Appends a frame header.
pub fn write_frame_header(buf: &mut Vec<u8>, header: FrameHeader) {
    debug_assert!(header.length as usize <= MAX_LEN, "frame length beyond 24 bits");
    buf.extend_from_slice(&header.encode());
}

fn header(buf: &mut Vec<u8>, kind: FrameType, flags: u8, stream_id: StreamId, len: usize) {
    debug_assert!(len <= MAX_LEN, "frame length beyond 24 bits");
    write_frame_header(buf, FrameHeader { length: len as u32, kind, flags, stream_id });
}

fn end_stream_flag(end_stream: bool) -> u8 {
    if end_stream { flags::END_STREAM } else { 0 }
}

/// Appends the header of a DATA frame whose `len` payload bytes the caller appends (or sends
/// from another buffer) next.
pub fn write_data_header(buf: &mut Vec<u8>, stream_id: StreamId, len: usize, end_stream: bool) {
    header(buf, FrameType::DATA, end_stream_flag(end_stream), stream_id, len);
}

/// Appends a DATA frame without padding.
pub fn write_data(buf: &mut Vec<u8>, stream_id: StreamId, data: &[u8], end_stream: bool) {
    write_data_header(buf, stream_id, data.len(), end_stream);
    buf.extend_from_slice(data);
}

/// Appends an already encoded field block as HEADERS, followed by CONTINUATION frames when it
/// is longer than `max_frame_size` (the peer's SETTINGS_MAX_FRAME_SIZE).
pub fn write_headers(
    buf: &mut Vec<u8>,
    stream_id: StreamId,
    block: &[u8],
    end_stream: bool,
    max_frame_size: u32,
) {
    let pending = PendingHeaders::begin(buf, stream_id);
    buf.extend_from_slice(block);
    pending.finish(buf, end_stream, max_frame_size);
}

/// Appends one CONTINUATION frame.
pub fn write_continuation(buf: &mut Vec<u8>, stream_id: StreamId, block: &[u8], end_headers: bool) {
    let f = if end_headers { flags::END_HEADERS } else { 0 };
    header(buf, FrameType::CONTINUATION, f, stream_id, block.len());
    buf.extend_from_slice(block);
}

/// Appends a PRIORITY frame.
pub fn write_priority(buf: &mut Vec<u8>, stream_id: StreamId, priority: Priority) {
    header(buf, FrameType::PRIORITY, 0, stream_id, 5);
    buf.extend_from_slice(&priority.encode());
}

/// Appends an RST_STREAM frame.
pub fn write_rst_stream(buf: &mut Vec<u8>, stream_id: StreamId, code: ErrorCode) {
    header(buf, FrameType::RST_STREAM, 0, stream_id, 4);
    buf.extend_from_slice(&code.0.to_be_bytes());
}

/// Appends a SETTINGS frame carrying `settings`.
pub fn write_settings(buf: &mut Vec<u8>, settings: &[Setting]) {
    header(buf, FrameType::SETTINGS, 0, StreamId::ZERO, settings.len() * 6);
    for s in settings {
        buf.extend_from_slice(&s.id().0.to_be_bytes());
        buf.extend_from_slice(&s.value().to_be_bytes());
    }
}

/// Appends the acknowledgement of the peer's SETTINGS.
pub fn write_settings_ack(buf: &mut Vec<u8>) {
    header(buf, FrameType::SETTINGS, flags::ACK, StreamId::ZERO, 0);
}

/// Appends a single PUSH_PROMISE frame (no padding, no splitting); for tests and completeness,
/// since Fulcrum never pushes.
pub fn write_push_promise(
    buf: &mut Vec<u8>,
    stream_id: StreamId,
    promised_id: StreamId,
    block: &[u8],
    end_headers: bool,
) {
    let f = if end_headers { flags::END_HEADERS } else { 0 };
    header(buf, FrameType::PUSH_PROMISE, f, stream_id, 4 + block.len());
    buf.extend_from_slice(&promised_id.get().to_be_bytes());
    buf.extend_from_slice(block);
}

/// Appends a PING, or with `ack` the answer to one (same `data`).
pub fn write_ping(buf: &mut Vec<u8>, ack: bool, data: [u8; 8]) {
    header(buf, FrameType::PING, if ack { flags::ACK } else { 0 }, StreamId::ZERO, 8);
    buf.extend_from_slice(&data);
}

/// Appends a GOAWAY frame.
pub fn write_goaway(buf: &mut Vec<u8>, last_stream_id: StreamId, code: ErrorCode, debug: &[u8]) {
    header(buf, FrameType::GOAWAY, 0, StreamId::ZERO, 8 + debug.len());
    buf.extend_from_slice(&last_stream_id.get().to_be_bytes());
    buf.extend_from_slice(&code.0.to_be_bytes());
    buf.extend_from_slice(debug);
}

/// Appends a WINDOW_UPDATE frame; `increment` must be 1..=2^31-1.
pub fn write_window_update(buf: &mut Vec<u8>, stream_id: StreamId, increment: u32) {
    debug_assert!(increment > 0 && increment <= super::MAX_WINDOW_SIZE, "bad window increment");
    header(buf, FrameType::WINDOW_UPDATE, 0, stream_id, 4);
    buf.extend_from_slice(&increment.to_be_bytes());
}

/// A HEADERS frame being written in place: its 9-byte header is reserved in the write buffer,
/// the caller encodes the field block straight after it (for example with
/// [`crate::hpack::Encoder`]), and [`PendingHeaders::finish`] patches the header, so the block
/// is never copied (HAProxy's `h2s_snd_fhdrs`). Nothing else may be written to the buffer in
/// between.
#[derive(Debug)]
#[must_use = "a reserved HEADERS frame header must be finished"]
pub struct PendingHeaders {
    /// Offset of the reserved frame header in the buffer.
    start: usize,
    stream_id: StreamId,
}

impl PendingHeaders {
    /// Reserves the frame header at the end of `buf`.
    pub fn begin(buf: &mut Vec<u8>, stream_id: StreamId) -> PendingHeaders {
        let start = buf.len();
        buf.extend_from_slice(&[0; HEADER_LEN]);
        PendingHeaders { start, stream_id }
    }

    /// Bytes of field block written after the reserved header so far.
    pub fn block_len(&self, buf: &[u8]) -> usize {
        buf.len().saturating_sub(self.start + HEADER_LEN)
    }

    /// Patches the reserved header for the field block that now follows it. A block longer
    /// than `max_frame_size` (the peer's SETTINGS_MAX_FRAME_SIZE, at least 16384) is split:
    /// HEADERS carries the first `max_frame_size` bytes, CONTINUATION frames the rest, each
    /// inserted in place (one move of the tail per extra frame header, on this rare path only).
    pub fn finish(self, buf: &mut Vec<u8>, end_stream: bool, max_frame_size: u32) {
        debug_assert!(buf.len() >= self.start + HEADER_LEN, "write buffer shrank under a HEADERS");
        let max = (max_frame_size as usize).clamp(super::DEFAULT_MAX_FRAME_SIZE as usize, MAX_LEN);
        let block_len = self.block_len(buf);
        let es = end_stream_flag(end_stream);
        let id = self.stream_id;
        if block_len <= max {
            let head = frame_header(FrameType::HEADERS, es | flags::END_HEADERS, id, block_len);
            buf[self.start..self.start + HEADER_LEN].copy_from_slice(&head);
            return;
        }
        // Chunk i (of `count`) moves 9 * i bytes right to make room for its CONTINUATION
        // header; moving the last chunk first never overwrites one not yet moved.
        let count = block_len.div_ceil(max);
        let data = self.start + HEADER_LEN;
        buf.resize(buf.len() + (count - 1) * HEADER_LEN, 0);
        for i in (1..count).rev() {
            let len = max.min(block_len - i * max);
            let from = data + i * max;
            let at = self.start + i * (HEADER_LEN + max);
            buf.copy_within(from..from + len, at + HEADER_LEN);
            let end_headers = if i == count - 1 { flags::END_HEADERS } else { 0 };
            let head = frame_header(FrameType::CONTINUATION, end_headers, id, len);
            buf[at..at + HEADER_LEN].copy_from_slice(&head);
        }
        let head = frame_header(FrameType::HEADERS, es, id, max);
        buf[self.start..self.start + HEADER_LEN].copy_from_slice(&head);
    }
}

fn frame_header(kind: FrameType, flags: u8, stream_id: StreamId, len: usize) -> [u8; HEADER_LEN] {
    FrameHeader { length: len as u32, kind, flags, stream_id }.encode()
}

impl Frame<'_> {
    /// Appends this frame exactly as parsed: same flags (those the type defines), same
    /// padding length with zero padding, unknown settings and extension frames as received.
    pub fn write(&self, buf: &mut Vec<u8>) {
        match *self {
            Frame::Data { stream_id, end_stream, data, padding } => {
                let f = end_stream_flag(end_stream);
                padded(buf, FrameType::DATA, f, stream_id, padding, &[], data);
            }
            Frame::Headers { stream_id, end_stream, end_headers, priority, block, padding } => {
                let mut f = end_stream_flag(end_stream);
                if end_headers {
                    f |= flags::END_HEADERS;
                }
                let prio = priority.map(|p| p.encode());
                if prio.is_some() {
                    f |= flags::PRIORITY;
                }
                let fields = prio.as_ref().map_or(&[][..], |p| &p[..]);
                padded(buf, FrameType::HEADERS, f, stream_id, padding, fields, block);
            }
            Frame::Priority { stream_id, priority } => write_priority(buf, stream_id, priority),
            Frame::RstStream { stream_id, code } => write_rst_stream(buf, stream_id, code),
            Frame::Settings(s) => {
                let f = if s.is_ack() { flags::ACK } else { 0 };
                header(buf, FrameType::SETTINGS, f, StreamId::ZERO, s.payload().len());
                buf.extend_from_slice(s.payload());
            }
            Frame::PushPromise { stream_id, end_headers, promised_id, block, padding } => {
                let f = if end_headers { flags::END_HEADERS } else { 0 };
                let promised = promised_id.get().to_be_bytes();
                padded(buf, FrameType::PUSH_PROMISE, f, stream_id, padding, &promised, block);
            }
            Frame::Ping { ack, data } => write_ping(buf, ack, data),
            Frame::GoAway { last_stream_id, code, debug_data } => {
                write_goaway(buf, last_stream_id, code, debug_data);
            }
            Frame::WindowUpdate { stream_id, increment } => {
                write_window_update(buf, stream_id, increment);
            }
            Frame::Continuation { stream_id, end_headers, block } => {
                write_continuation(buf, stream_id, block, end_headers);
            }
            Frame::Unknown { header, payload } => {
                write_frame_header(buf, header);
                buf.extend_from_slice(payload);
            }
        }
    }
}

/// Appends a frame with optional padding: [pad length] fields content [zero padding].
fn padded(
    buf: &mut Vec<u8>,
    kind: FrameType,
    mut flag_bits: u8,
    stream_id: StreamId,
    padding: Option<u8>,
    fields: &[u8],
    content: &[u8],
) {
    let pad = padding.map_or(0, usize::from);
    let extra = padding.map_or(0, |p| 1 + usize::from(p));
    if padding.is_some() {
        flag_bits |= flags::PADDED;
    }
    header(buf, kind, flag_bits, stream_id, extra + fields.len() + content.len());
    if let Some(p) = padding {
        buf.push(p);
    }
    buf.extend_from_slice(fields);
    buf.extend_from_slice(content);
    buf.resize(buf.len() + pad, 0);
}
