//! The in-place frame parser: the first frame of a read buffer, its payload borrowed, checked
//! against every section 6 rule that needs no connection state.

use std::fmt;

use super::types::{ErrorCode, FrameHeader, FrameType, SettingId, StreamId, flags};
use super::{HEADER_LEN, MAX_MAX_FRAME_SIZE, MAX_WINDOW_SIZE};

/// One parsed frame, its variable parts borrowed from the read buffer.
///
/// Flag bits a type does not define are dropped, as RFC 9113 section 4.1 requires; padding
/// is skipped (its length kept, so DATA flow control and re-serialisation stay exact).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame<'a> {
    /// DATA: payload of a stream.
    Data {
        /// Stream the data belongs to (never 0).
        stream_id: StreamId,
        /// The sender's last frame on this stream.
        end_stream: bool,
        /// The payload without padding.
        data: &'a [u8],
        /// Padding octets after the data when the PADDED flag was set (they count against
        /// flow control: see [`Frame::flow_controlled_len`]).
        padding: Option<u8>,
    },
    /// HEADERS: the first fragment of a field block.
    Headers {
        /// Stream the block belongs to (never 0).
        stream_id: StreamId,
        /// The sender's last frame on this stream (trailers, or a body-less message).
        end_stream: bool,
        /// The block is complete; otherwise CONTINUATION frames follow.
        end_headers: bool,
        /// The deprecated priority fields, when the PRIORITY flag was set. If they name the
        /// frame's own stream the engine must still decode the block (HPACK state), then reset
        /// the stream with PROTOCOL_ERROR (RFC 9113 section 5.3.1): see
        /// [`Frame::is_self_dependent`].
        priority: Option<Priority>,
        /// The field block fragment (HPACK).
        block: &'a [u8],
        /// Padding octets when the PADDED flag was set.
        padding: Option<u8>,
    },
    /// PRIORITY: deprecated; a receiver parses and ignores it.
    Priority {
        /// Stream the signal is about (never 0).
        stream_id: StreamId,
        /// The signal (never naming `stream_id` itself: that is a stream error).
        priority: Priority,
    },
    /// RST_STREAM: the peer ends a stream.
    RstStream {
        /// Stream being reset (never 0).
        stream_id: StreamId,
        /// Why.
        code: ErrorCode,
    },
    /// SETTINGS: parameters, all already validated, or an acknowledgement.
    Settings(Settings<'a>),
    /// PUSH_PROMISE: parsed so a client can refuse it (Fulcrum never enables push).
    PushPromise {
        /// Stream the promise is associated with (never 0).
        stream_id: StreamId,
        /// The block is complete; otherwise CONTINUATION frames follow.
        end_headers: bool,
        /// Stream the server reserves.
        promised_id: StreamId,
        /// The field block fragment (HPACK): it must still be decoded to keep HPACK state.
        block: &'a [u8],
        /// Padding octets when the PADDED flag was set.
        padding: Option<u8>,
    },
    /// PING: to be answered with the same data and the ACK flag.
    Ping {
        /// This is the answer to our PING.
        ack: bool,
        /// Opaque data.
        data: [u8; 8],
    },
    /// GOAWAY: the peer stops accepting streams above `last_stream_id`.
    GoAway {
        /// Highest stream the peer may have processed.
        last_stream_id: StreamId,
        /// Why.
        code: ErrorCode,
        /// Opaque diagnostic data.
        debug_data: &'a [u8],
    },
    /// WINDOW_UPDATE: flow-control credit, never 0.
    WindowUpdate {
        /// Stream credited, or 0 for the connection.
        stream_id: StreamId,
        /// Credit in bytes, 1..=2^31-1.
        increment: u32,
    },
    /// CONTINUATION: a further fragment of a field block.
    Continuation {
        /// Stream of the block being continued (never 0).
        stream_id: StreamId,
        /// The block is complete.
        end_headers: bool,
        /// The field block fragment.
        block: &'a [u8],
    },
    /// A frame of an extension type, which the receiver ignores (RFC 9113 section 5.5).
    Unknown {
        /// Its header, as received (flags and stream untouched).
        header: FrameHeader,
        /// Its payload.
        payload: &'a [u8],
    },
}

impl Frame<'_> {
    /// The frame's type.
    pub fn kind(&self) -> FrameType {
        match self {
            Frame::Data { .. } => FrameType::DATA,
            Frame::Headers { .. } => FrameType::HEADERS,
            Frame::Priority { .. } => FrameType::PRIORITY,
            Frame::RstStream { .. } => FrameType::RST_STREAM,
            Frame::Settings(_) => FrameType::SETTINGS,
            Frame::PushPromise { .. } => FrameType::PUSH_PROMISE,
            Frame::Ping { .. } => FrameType::PING,
            Frame::GoAway { .. } => FrameType::GOAWAY,
            Frame::WindowUpdate { .. } => FrameType::WINDOW_UPDATE,
            Frame::Continuation { .. } => FrameType::CONTINUATION,
            Frame::Unknown { header, .. } => header.kind,
        }
    }

    /// The stream the frame belongs to (0 for connection-level frames).
    pub fn stream_id(&self) -> StreamId {
        match *self {
            Frame::Data { stream_id, .. }
            | Frame::Headers { stream_id, .. }
            | Frame::Priority { stream_id, .. }
            | Frame::RstStream { stream_id, .. }
            | Frame::PushPromise { stream_id, .. }
            | Frame::WindowUpdate { stream_id, .. }
            | Frame::Continuation { stream_id, .. } => stream_id,
            Frame::Settings(_) | Frame::Ping { .. } | Frame::GoAway { .. } => StreamId::ZERO,
            Frame::Unknown { header, .. } => header.stream_id,
        }
    }

    /// Bytes the frame takes from the flow-control windows: the whole DATA payload including
    /// the pad length octet and padding (RFC 9113 section 6.1); 0 for other frames.
    pub fn flow_controlled_len(&self) -> u32 {
        match *self {
            Frame::Data { data, padding, .. } => {
                // A parsed payload is below 2^24, so this cannot truncate.
                data.len() as u32 + padding.map_or(0, |p| u32::from(p) + 1)
            }
            _ => 0,
        }
    }

    /// True for a HEADERS frame whose priority fields make its stream depend on itself: a
    /// stream error of type PROTOCOL_ERROR once its field block has been decoded.
    pub fn is_self_dependent(&self) -> bool {
        matches!(*self, Frame::Headers { stream_id, priority: Some(p), .. } if p.dependency == stream_id)
    }
}

/// The deprecated RFC 7540 priority fields of HEADERS and PRIORITY frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Priority {
    /// The stream depended upon.
    pub dependency: StreamId,
    /// Exclusive dependency flag.
    pub exclusive: bool,
    /// Weight octet as sent: the weight is this plus one.
    pub weight: u8,
}

impl Priority {
    fn decode(b: &[u8; 5]) -> Priority {
        let dep = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        Priority { dependency: StreamId::new(dep), exclusive: dep >> 31 == 1, weight: b[4] }
    }

    pub(super) fn encode(&self) -> [u8; 5] {
        let dep = self.dependency.get() | u32::from(self.exclusive) << 31;
        let d = dep.to_be_bytes();
        [d[0], d[1], d[2], d[3], self.weight]
    }
}

/// A SETTINGS frame: an acknowledgement, or parameters whose values were all validated when
/// the frame was parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings<'a> {
    ack: bool,
    payload: &'a [u8],
}

impl<'a> Settings<'a> {
    /// True for the acknowledgement of our SETTINGS (it carries no parameters).
    pub fn is_ack(&self) -> bool {
        self.ack
    }

    /// The known parameters in the order sent (a later value of the same identifier
    /// overrides an earlier one); unknown identifiers are skipped, as RFC 9113 requires.
    pub fn iter(&self) -> SettingsIter<'a> {
        SettingsIter { rest: self.payload }
    }

    /// The raw payload: 6 bytes a parameter, unknown ones included.
    pub fn payload(&self) -> &'a [u8] {
        self.payload
    }
}

/// Iterator over the known parameters of a [`Settings`] frame.
#[derive(Debug, Clone)]
pub struct SettingsIter<'a> {
    rest: &'a [u8],
}

impl Iterator for SettingsIter<'_> {
    type Item = Setting;

    fn next(&mut self) -> Option<Setting> {
        while let Some((entry, rest)) = self.rest.split_first_chunk::<6>() {
            self.rest = rest;
            if let Some(setting) = Setting::from_entry(entry) {
                return Some(setting);
            }
        }
        None
    }
}

/// One known SETTINGS parameter with its value (validated when parsed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setting {
    /// SETTINGS_HEADER_TABLE_SIZE: the peer decoder's dynamic table limit.
    HeaderTableSize(u32),
    /// SETTINGS_ENABLE_PUSH.
    EnablePush(bool),
    /// SETTINGS_MAX_CONCURRENT_STREAMS.
    MaxConcurrentStreams(u32),
    /// SETTINGS_INITIAL_WINDOW_SIZE, at most 2^31-1.
    InitialWindowSize(u32),
    /// SETTINGS_MAX_FRAME_SIZE, 16384..=16777215.
    MaxFrameSize(u32),
    /// SETTINGS_MAX_HEADER_LIST_SIZE.
    MaxHeaderListSize(u32),
    /// SETTINGS_ENABLE_CONNECT_PROTOCOL (RFC 8441).
    EnableConnectProtocol(bool),
    /// SETTINGS_NO_RFC7540_PRIORITIES (RFC 9218).
    NoRfc7540Priorities(bool),
}

impl Setting {
    /// The parameter's identifier.
    pub fn id(&self) -> SettingId {
        match self {
            Setting::HeaderTableSize(_) => SettingId::HEADER_TABLE_SIZE,
            Setting::EnablePush(_) => SettingId::ENABLE_PUSH,
            Setting::MaxConcurrentStreams(_) => SettingId::MAX_CONCURRENT_STREAMS,
            Setting::InitialWindowSize(_) => SettingId::INITIAL_WINDOW_SIZE,
            Setting::MaxFrameSize(_) => SettingId::MAX_FRAME_SIZE,
            Setting::MaxHeaderListSize(_) => SettingId::MAX_HEADER_LIST_SIZE,
            Setting::EnableConnectProtocol(_) => SettingId::ENABLE_CONNECT_PROTOCOL,
            Setting::NoRfc7540Priorities(_) => SettingId::NO_RFC7540_PRIORITIES,
        }
    }

    /// The parameter's value as sent.
    pub fn value(&self) -> u32 {
        match *self {
            Setting::HeaderTableSize(v)
            | Setting::MaxConcurrentStreams(v)
            | Setting::InitialWindowSize(v)
            | Setting::MaxFrameSize(v)
            | Setting::MaxHeaderListSize(v) => v,
            Setting::EnablePush(b)
            | Setting::EnableConnectProtocol(b)
            | Setting::NoRfc7540Priorities(b) => u32::from(b),
        }
    }

    /// Checks one 6-byte entry: `Ok(None)` for an unknown identifier.
    fn check(entry: &[u8; 6]) -> Result<Option<Setting>, (ErrorCode, Violation)> {
        let id = SettingId(u16::from_be_bytes([entry[0], entry[1]]));
        let v = u32::from_be_bytes([entry[2], entry[3], entry[4], entry[5]]);
        let flag = |v: u32| match v {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err((ErrorCode::PROTOCOL_ERROR, Violation::SettingNotBoolean)),
        };
        Ok(Some(match id {
            SettingId::HEADER_TABLE_SIZE => Setting::HeaderTableSize(v),
            SettingId::ENABLE_PUSH => Setting::EnablePush(flag(v)?),
            SettingId::MAX_CONCURRENT_STREAMS => Setting::MaxConcurrentStreams(v),
            SettingId::INITIAL_WINDOW_SIZE if v > MAX_WINDOW_SIZE => {
                return Err((ErrorCode::FLOW_CONTROL_ERROR, Violation::InitialWindowTooLarge));
            }
            SettingId::INITIAL_WINDOW_SIZE => Setting::InitialWindowSize(v),
            SettingId::MAX_FRAME_SIZE
                if !(super::DEFAULT_MAX_FRAME_SIZE..=MAX_MAX_FRAME_SIZE).contains(&v) =>
            {
                return Err((ErrorCode::PROTOCOL_ERROR, Violation::MaxFrameSizeOutOfRange));
            }
            SettingId::MAX_FRAME_SIZE => Setting::MaxFrameSize(v),
            SettingId::MAX_HEADER_LIST_SIZE => Setting::MaxHeaderListSize(v),
            SettingId::ENABLE_CONNECT_PROTOCOL => Setting::EnableConnectProtocol(flag(v)?),
            SettingId::NO_RFC7540_PRIORITIES => Setting::NoRfc7540Priorities(flag(v)?),
            _ => return Ok(None),
        }))
    }

    /// Decodes an entry already validated by [`Setting::check`].
    fn from_entry(entry: &[u8; 6]) -> Option<Setting> {
        Setting::check(entry).ok().flatten()
    }
}

/// Which rule of RFC 9113 section 4 or 6 a frame broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Violation {
    /// The payload is longer than the SETTINGS_MAX_FRAME_SIZE we advertised.
    FrameTooLarge,
    /// A frame that belongs to a stream arrived on stream 0.
    StreamIdZero,
    /// A connection-level frame arrived on a stream other than 0.
    StreamIdNotZero,
    /// The payload is too short for the type's mandatory fields.
    TooShort,
    /// A fixed-size payload (PRIORITY, RST_STREAM, PING, WINDOW_UPDATE) has another length,
    /// or a SETTINGS payload is not a multiple of 6.
    BadLength,
    /// The padding is as long as the payload left for it, or longer.
    PaddingTooLong,
    /// A SETTINGS acknowledgement carries a payload.
    SettingsAckWithPayload,
    /// ENABLE_PUSH, ENABLE_CONNECT_PROTOCOL or NO_RFC7540_PRIORITIES other than 0 or 1.
    SettingNotBoolean,
    /// INITIAL_WINDOW_SIZE above 2^31-1.
    InitialWindowTooLarge,
    /// MAX_FRAME_SIZE outside 16384..=16777215.
    MaxFrameSizeOutOfRange,
    /// A PRIORITY frame makes its stream depend on itself.
    SelfDependency,
    /// A WINDOW_UPDATE increment of 0.
    ZeroWindowIncrement,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Violation::FrameTooLarge => "frame larger than SETTINGS_MAX_FRAME_SIZE",
            Violation::StreamIdZero => "stream frame on stream 0",
            Violation::StreamIdNotZero => "connection frame on a stream",
            Violation::TooShort => "payload too short for the mandatory fields",
            Violation::BadLength => "invalid payload length",
            Violation::PaddingTooLong => "padding longer than the payload",
            Violation::SettingsAckWithPayload => "SETTINGS ACK with a payload",
            Violation::SettingNotBoolean => "boolean setting other than 0 or 1",
            Violation::InitialWindowTooLarge => "SETTINGS_INITIAL_WINDOW_SIZE above 2^31-1",
            Violation::MaxFrameSizeOutOfRange => "SETTINGS_MAX_FRAME_SIZE out of range",
            Violation::SelfDependency => "stream depends on itself",
            Violation::ZeroWindowIncrement => "WINDOW_UPDATE increment of 0",
        })
    }
}

/// A frame that breaks the protocol, and what the connection must do about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Send GOAWAY with `code` and close the connection (RFC 9113 section 5.4.1).
    #[error("connection error {code}: {violation} ({kind} frame)")]
    Connection {
        /// The GOAWAY error code.
        code: ErrorCode,
        /// The rule broken.
        violation: Violation,
        /// Type of the offending frame.
        kind: FrameType,
    },
    /// Send RST_STREAM with `code` on `stream_id`, skip the frame's `frame_len` bytes and go
    /// on (RFC 9113 section 5.4.2). Reported only once the whole frame is in the buffer.
    #[error("stream {stream_id} error {code}: {violation} ({kind} frame)")]
    Stream {
        /// The stream to reset.
        stream_id: StreamId,
        /// The RST_STREAM error code.
        code: ErrorCode,
        /// The rule broken.
        violation: Violation,
        /// Type of the offending frame.
        kind: FrameType,
        /// Bytes the frame occupies in the buffer, header included: consume them.
        frame_len: usize,
    },
}

impl FrameError {
    /// The error code for GOAWAY (connection error) or RST_STREAM (stream error).
    pub fn code(&self) -> ErrorCode {
        match *self {
            FrameError::Connection { code, .. } | FrameError::Stream { code, .. } => code,
        }
    }

    /// The stream to reset for a stream error; `None` for a connection error.
    pub fn stream_id(&self) -> Option<StreamId> {
        match *self {
            FrameError::Connection { .. } => None,
            FrameError::Stream { stream_id, .. } => Some(stream_id),
        }
    }

    /// Bytes to consume after a stream error; `None` for a connection error.
    pub fn frame_len(&self) -> Option<usize> {
        match *self {
            FrameError::Connection { .. } => None,
            FrameError::Stream { frame_len, .. } => Some(frame_len),
        }
    }

    /// The rule broken.
    pub fn violation(&self) -> Violation {
        match *self {
            FrameError::Connection { violation, .. } | FrameError::Stream { violation, .. } => {
                violation
            }
        }
    }
}

/// Reads the frame header at the front of `buf`, or `None` while fewer than 9 bytes are there.
pub fn parse_header(buf: &[u8]) -> Option<FrameHeader> {
    buf.first_chunk::<HEADER_LEN>().map(FrameHeader::decode)
}

/// Parses the first frame of `buf`, the connection's read buffer.
///
/// Returns `Ok(None)` while the frame is incomplete, or the frame (borrowing from `buf`) and
/// the number of bytes it occupies, which the caller consumes after handling it.
/// `max_frame_size` is the SETTINGS_MAX_FRAME_SIZE we advertised: a longer frame is refused
/// as soon as its header is in, before its payload is buffered, and always as a connection
/// error (RFC 9113 section 4.2 allows that for every type; a proxy has no use for a peer that
/// ignores its settings).
pub fn parse(buf: &[u8], max_frame_size: u32) -> Result<Option<(Frame<'_>, usize)>, FrameError> {
    let Some(head) = parse_header(buf) else { return Ok(None) };
    if head.length > max_frame_size {
        return Err(conn(head.kind, ErrorCode::FRAME_SIZE_ERROR, Violation::FrameTooLarge));
    }
    // At most 2^24-1, so the sum cannot overflow.
    let total = HEADER_LEN + head.length as usize;
    let Some(payload) = buf.get(HEADER_LEN..total) else { return Ok(None) };
    let frame = parse_payload(head, payload, total)?;
    Ok(Some((frame, total)))
}

fn conn(kind: FrameType, code: ErrorCode, violation: Violation) -> FrameError {
    FrameError::Connection { code, violation, kind }
}

/// Checks that a frame is on a stream (not 0).
fn on_stream(head: &FrameHeader) -> Result<StreamId, FrameError> {
    if head.stream_id.is_zero() {
        return Err(conn(head.kind, ErrorCode::PROTOCOL_ERROR, Violation::StreamIdZero));
    }
    Ok(head.stream_id)
}

/// Checks that a frame is on the connection (stream 0).
fn on_connection(head: &FrameHeader) -> Result<(), FrameError> {
    if !head.stream_id.is_zero() {
        return Err(conn(head.kind, ErrorCode::PROTOCOL_ERROR, Violation::StreamIdNotZero));
    }
    Ok(())
}

/// Strips the pad length octet and the padding of a PADDED frame, leaving `fixed` bytes of
/// mandatory fields and the content between them.
fn unpad<'a>(
    head: &FrameHeader,
    payload: &'a [u8],
    fixed: usize,
) -> Result<(&'a [u8], Option<u8>), FrameError> {
    if !head.has(flags::PADDED) {
        if payload.len() < fixed {
            return Err(conn(head.kind, ErrorCode::FRAME_SIZE_ERROR, Violation::TooShort));
        }
        return Ok((payload, None));
    }
    let Some((&pad, rest)) = payload.split_first() else {
        return Err(conn(head.kind, ErrorCode::FRAME_SIZE_ERROR, Violation::TooShort));
    };
    if rest.len() < fixed {
        return Err(conn(head.kind, ErrorCode::FRAME_SIZE_ERROR, Violation::TooShort));
    }
    if usize::from(pad) > rest.len() - fixed {
        return Err(conn(head.kind, ErrorCode::PROTOCOL_ERROR, Violation::PaddingTooLong));
    }
    Ok((&rest[..rest.len() - usize::from(pad)], Some(pad)))
}

fn parse_payload(head: FrameHeader, payload: &[u8], total: usize) -> Result<Frame<'_>, FrameError> {
    let kind = head.kind;
    let frame = match kind {
        FrameType::DATA => {
            let stream_id = on_stream(&head)?;
            let (data, padding) = unpad(&head, payload, 0)?;
            Frame::Data { stream_id, end_stream: head.has(flags::END_STREAM), data, padding }
        }
        FrameType::HEADERS => {
            let stream_id = on_stream(&head)?;
            let has_priority = head.has(flags::PRIORITY);
            let (content, padding) = unpad(&head, payload, if has_priority { 5 } else { 0 })?;
            let (priority, block) = match content.split_first_chunk::<5>() {
                Some((p, block)) if has_priority => (Some(Priority::decode(p)), block),
                _ => (None, content),
            };
            Frame::Headers {
                stream_id,
                end_stream: head.has(flags::END_STREAM),
                end_headers: head.has(flags::END_HEADERS),
                priority,
                block,
                padding,
            }
        }
        FrameType::PRIORITY => {
            let stream_id = on_stream(&head)?;
            let Ok(p) = <&[u8; 5]>::try_from(payload) else {
                return Err(FrameError::Stream {
                    stream_id,
                    code: ErrorCode::FRAME_SIZE_ERROR,
                    violation: Violation::BadLength,
                    kind,
                    frame_len: total,
                });
            };
            let priority = Priority::decode(p);
            if priority.dependency == stream_id {
                return Err(FrameError::Stream {
                    stream_id,
                    code: ErrorCode::PROTOCOL_ERROR,
                    violation: Violation::SelfDependency,
                    kind,
                    frame_len: total,
                });
            }
            Frame::Priority { stream_id, priority }
        }
        FrameType::RST_STREAM => {
            let stream_id = on_stream(&head)?;
            let code = u32::from_be_bytes(fixed(&head, payload)?);
            Frame::RstStream { stream_id, code: ErrorCode(code) }
        }
        FrameType::SETTINGS => {
            on_connection(&head)?;
            let ack = head.has(flags::ACK);
            if ack && !payload.is_empty() {
                return Err(conn(
                    kind,
                    ErrorCode::FRAME_SIZE_ERROR,
                    Violation::SettingsAckWithPayload,
                ));
            }
            if !payload.len().is_multiple_of(6) {
                return Err(conn(kind, ErrorCode::FRAME_SIZE_ERROR, Violation::BadLength));
            }
            for entry in payload.as_chunks::<6>().0 {
                Setting::check(entry).map_err(|(code, violation)| conn(kind, code, violation))?;
            }
            Frame::Settings(Settings { ack, payload })
        }
        FrameType::PUSH_PROMISE => {
            let stream_id = on_stream(&head)?;
            let (content, padding) = unpad(&head, payload, 4)?;
            let (promised, block) = content.split_first_chunk::<4>().unwrap_or((&[0; 4], &[]));
            Frame::PushPromise {
                stream_id,
                end_headers: head.has(flags::END_HEADERS),
                promised_id: StreamId::new(u32::from_be_bytes(*promised)),
                block,
                padding,
            }
        }
        FrameType::PING => {
            on_connection(&head)?;
            Frame::Ping { ack: head.has(flags::ACK), data: fixed(&head, payload)? }
        }
        FrameType::GOAWAY => {
            on_connection(&head)?;
            let Some((fields, debug_data)) = payload.split_first_chunk::<8>() else {
                return Err(conn(kind, ErrorCode::FRAME_SIZE_ERROR, Violation::TooShort));
            };
            let last = u32::from_be_bytes([fields[0], fields[1], fields[2], fields[3]]);
            let code = u32::from_be_bytes([fields[4], fields[5], fields[6], fields[7]]);
            Frame::GoAway { last_stream_id: StreamId::new(last), code: ErrorCode(code), debug_data }
        }
        FrameType::WINDOW_UPDATE => {
            let increment = u32::from_be_bytes(fixed(&head, payload)?) & MAX_WINDOW_SIZE;
            let stream_id = head.stream_id;
            if increment == 0 {
                let (code, violation) = (ErrorCode::PROTOCOL_ERROR, Violation::ZeroWindowIncrement);
                if stream_id.is_zero() {
                    return Err(conn(kind, code, violation));
                }
                return Err(FrameError::Stream {
                    stream_id,
                    code,
                    violation,
                    kind,
                    frame_len: total,
                });
            }
            Frame::WindowUpdate { stream_id, increment }
        }
        FrameType::CONTINUATION => Frame::Continuation {
            stream_id: on_stream(&head)?,
            end_headers: head.has(flags::END_HEADERS),
            block: payload,
        },
        _ => Frame::Unknown { header: head, payload },
    };
    Ok(frame)
}

/// A fixed-size payload, or a connection FRAME_SIZE_ERROR.
fn fixed<const N: usize>(head: &FrameHeader, payload: &[u8]) -> Result<[u8; N], FrameError> {
    <[u8; N]>::try_from(payload)
        .map_err(|_| conn(head.kind, ErrorCode::FRAME_SIZE_ERROR, Violation::BadLength))
}
