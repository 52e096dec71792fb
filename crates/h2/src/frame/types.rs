//! The typed numbers of the frame layer: stream identifiers, frame types, flags, error codes and
//! setting identifiers, and the 9-byte frame header. Plain `Copy` values, usable from any thread.

use std::fmt;

/// A stream identifier: 31 bits, the reserved high bit of the wire form already cleared.
///
/// Zero is the connection itself; odd identifiers are client-initiated streams.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct StreamId(u32);

impl StreamId {
    /// The connection (stream 0), which connection-level frames use.
    pub const ZERO: StreamId = StreamId(0);
    /// The largest stream identifier, 2^31-1.
    pub const MAX: StreamId = StreamId((1 << 31) - 1);

    /// The stream identifier `id` with the reserved high bit cleared (as a receiver must).
    pub const fn new(id: u32) -> StreamId {
        StreamId(id & 0x7fff_ffff)
    }

    /// The identifier as a number below 2^31.
    pub const fn get(self) -> u32 {
        self.0
    }

    /// True for stream 0, the connection.
    pub const fn is_zero(self) -> bool {
        self.0 == 0
    }

    /// True for identifiers a client opens (odd ones).
    pub const fn is_client_initiated(self) -> bool {
        self.0 & 1 == 1
    }
}

impl fmt::Debug for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StreamId({})", self.0)
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl From<StreamId> for u32 {
    fn from(id: StreamId) -> u32 {
        id.0
    }
}

/// A frame type octet (RFC 9113 section 6); types not listed are extensions, which a receiver
/// ignores.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct FrameType(pub u8);

impl FrameType {
    /// DATA (0x0): stream payload.
    pub const DATA: FrameType = FrameType(0x0);
    /// HEADERS (0x1): opens a stream or carries trailers.
    pub const HEADERS: FrameType = FrameType(0x1);
    /// PRIORITY (0x2): deprecated priority signal, parsed and ignored.
    pub const PRIORITY: FrameType = FrameType(0x2);
    /// RST_STREAM (0x3): ends a stream abruptly.
    pub const RST_STREAM: FrameType = FrameType(0x3);
    /// SETTINGS (0x4): connection parameters, or the acknowledgement of the peer's.
    pub const SETTINGS: FrameType = FrameType(0x4);
    /// PUSH_PROMISE (0x5): server push, which Fulcrum refuses.
    pub const PUSH_PROMISE: FrameType = FrameType(0x5);
    /// PING (0x6): liveness and round-trip measurement.
    pub const PING: FrameType = FrameType(0x6);
    /// GOAWAY (0x7): graceful or error shutdown of the connection.
    pub const GOAWAY: FrameType = FrameType(0x7);
    /// WINDOW_UPDATE (0x8): flow-control credit.
    pub const WINDOW_UPDATE: FrameType = FrameType(0x8);
    /// CONTINUATION (0x9): the rest of a field block.
    pub const CONTINUATION: FrameType = FrameType(0x9);

    /// The RFC name of a known type, `None` for an extension type.
    pub const fn name(self) -> Option<&'static str> {
        Some(match self.0 {
            0x0 => "DATA",
            0x1 => "HEADERS",
            0x2 => "PRIORITY",
            0x3 => "RST_STREAM",
            0x4 => "SETTINGS",
            0x5 => "PUSH_PROMISE",
            0x6 => "PING",
            0x7 => "GOAWAY",
            0x8 => "WINDOW_UPDATE",
            0x9 => "CONTINUATION",
            _ => return None,
        })
    }
}

impl fmt::Debug for FrameType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None => write!(f, "FrameType({:#04x})", self.0),
        }
    }
}

impl fmt::Display for FrameType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Frame flag bits (RFC 9113 section 6); which apply depends on the frame type.
pub mod flags {
    /// DATA, HEADERS: the last frame the sender sends on this stream.
    pub const END_STREAM: u8 = 0x1;
    /// SETTINGS, PING: this frame acknowledges the peer's.
    pub const ACK: u8 = 0x1;
    /// HEADERS, PUSH_PROMISE, CONTINUATION: the field block ends in this frame.
    pub const END_HEADERS: u8 = 0x4;
    /// DATA, HEADERS, PUSH_PROMISE: a pad length octet and padding are present.
    pub const PADDED: u8 = 0x8;
    /// HEADERS: the deprecated priority fields are present.
    pub const PRIORITY: u8 = 0x20;
}

/// An error code of RST_STREAM and GOAWAY (RFC 9113 section 7); unknown codes are kept as they
/// are and must be treated like INTERNAL_ERROR.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ErrorCode(pub u32);

impl ErrorCode {
    /// Graceful shutdown, or no error.
    pub const NO_ERROR: ErrorCode = ErrorCode(0x0);
    /// The peer broke the protocol.
    pub const PROTOCOL_ERROR: ErrorCode = ErrorCode(0x1);
    /// An unexpected internal failure.
    pub const INTERNAL_ERROR: ErrorCode = ErrorCode(0x2);
    /// The peer broke the flow-control rules.
    pub const FLOW_CONTROL_ERROR: ErrorCode = ErrorCode(0x3);
    /// A SETTINGS acknowledgement did not arrive in time.
    pub const SETTINGS_TIMEOUT: ErrorCode = ErrorCode(0x4);
    /// A frame arrived on a half-closed stream.
    pub const STREAM_CLOSED: ErrorCode = ErrorCode(0x5);
    /// A frame had an invalid size.
    pub const FRAME_SIZE_ERROR: ErrorCode = ErrorCode(0x6);
    /// The stream was refused before any application processing.
    pub const REFUSED_STREAM: ErrorCode = ErrorCode(0x7);
    /// The stream is no longer needed.
    pub const CANCEL: ErrorCode = ErrorCode(0x8);
    /// The HPACK state cannot be maintained; always a connection error.
    pub const COMPRESSION_ERROR: ErrorCode = ErrorCode(0x9);
    /// A CONNECT tunnel failed.
    pub const CONNECT_ERROR: ErrorCode = ErrorCode(0xa);
    /// The peer generates excessive load.
    pub const ENHANCE_YOUR_CALM: ErrorCode = ErrorCode(0xb);
    /// The transport does not meet the security requirements.
    pub const INADEQUATE_SECURITY: ErrorCode = ErrorCode(0xc);
    /// The request must be retried over HTTP/1.1.
    pub const HTTP_1_1_REQUIRED: ErrorCode = ErrorCode(0xd);

    /// The RFC name of a known code, `None` for others.
    pub const fn name(self) -> Option<&'static str> {
        const NAMES: [&str; 14] = [
            "NO_ERROR",
            "PROTOCOL_ERROR",
            "INTERNAL_ERROR",
            "FLOW_CONTROL_ERROR",
            "SETTINGS_TIMEOUT",
            "STREAM_CLOSED",
            "FRAME_SIZE_ERROR",
            "REFUSED_STREAM",
            "CANCEL",
            "COMPRESSION_ERROR",
            "CONNECT_ERROR",
            "ENHANCE_YOUR_CALM",
            "INADEQUATE_SECURITY",
            "HTTP_1_1_REQUIRED",
        ];
        if (self.0 as usize) < NAMES.len() { Some(NAMES[self.0 as usize]) } else { None }
    }
}

impl fmt::Debug for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None => write!(f, "ErrorCode({:#x})", self.0),
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// A SETTINGS parameter identifier (RFC 9113 section 6.5.2, RFC 8441, RFC 9218).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SettingId(pub u16);

impl SettingId {
    /// Size of the HPACK dynamic table the sender's decoder allows (initially 4096).
    pub const HEADER_TABLE_SIZE: SettingId = SettingId(0x1);
    /// Whether server push is allowed: 0 or 1.
    pub const ENABLE_PUSH: SettingId = SettingId(0x2);
    /// Streams the sender lets its peer open at once.
    pub const MAX_CONCURRENT_STREAMS: SettingId = SettingId(0x3);
    /// Initial stream flow-control window, at most 2^31-1.
    pub const INITIAL_WINDOW_SIZE: SettingId = SettingId(0x4);
    /// Largest frame payload the sender accepts, 16384..=16777215.
    pub const MAX_FRAME_SIZE: SettingId = SettingId(0x5);
    /// Advisory limit on a decoded field section (name + value + 32 per field).
    pub const MAX_HEADER_LIST_SIZE: SettingId = SettingId(0x6);
    /// RFC 8441 extended CONNECT (`:protocol`): 0 or 1.
    pub const ENABLE_CONNECT_PROTOCOL: SettingId = SettingId(0x8);
    /// RFC 9218: the sender ignores RFC 7540 priorities: 0 or 1.
    pub const NO_RFC7540_PRIORITIES: SettingId = SettingId(0x9);
}

impl fmt::Debug for SettingId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match *self {
            SettingId::HEADER_TABLE_SIZE => "HEADER_TABLE_SIZE",
            SettingId::ENABLE_PUSH => "ENABLE_PUSH",
            SettingId::MAX_CONCURRENT_STREAMS => "MAX_CONCURRENT_STREAMS",
            SettingId::INITIAL_WINDOW_SIZE => "INITIAL_WINDOW_SIZE",
            SettingId::MAX_FRAME_SIZE => "MAX_FRAME_SIZE",
            SettingId::MAX_HEADER_LIST_SIZE => "MAX_HEADER_LIST_SIZE",
            SettingId::ENABLE_CONNECT_PROTOCOL => "ENABLE_CONNECT_PROTOCOL",
            SettingId::NO_RFC7540_PRIORITIES => "NO_RFC7540_PRIORITIES",
            SettingId(other) => return write!(f, "SettingId({other:#x})"),
        };
        f.write_str(name)
    }
}

impl fmt::Display for SettingId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// The 9-byte header in front of every frame payload (RFC 9113 section 4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Payload length in bytes (24 bits).
    pub length: u32,
    /// Frame type.
    pub kind: FrameType,
    /// Flag bits, meaning per type (see [`flags`]).
    pub flags: u8,
    /// Stream the frame belongs to (the reserved bit cleared).
    pub stream_id: StreamId,
}

impl FrameHeader {
    /// Reads a frame header from its 9 bytes.
    pub const fn decode(b: &[u8; 9]) -> FrameHeader {
        FrameHeader {
            length: (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32,
            kind: FrameType(b[3]),
            flags: b[4],
            stream_id: StreamId::new(u32::from_be_bytes([b[5], b[6], b[7], b[8]])),
        }
    }

    /// The header's 9 bytes; `length` must fit in 24 bits.
    pub const fn encode(&self) -> [u8; 9] {
        let l = self.length;
        let s = self.stream_id.get().to_be_bytes();
        [(l >> 16) as u8, (l >> 8) as u8, l as u8, self.kind.0, self.flags, s[0], s[1], s[2], s[3]]
    }

    /// True when flag bit(s) `flag` are set.
    pub const fn has(&self, flag: u8) -> bool {
        self.flags & flag == flag
    }
}
