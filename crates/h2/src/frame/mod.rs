//! HTTP/2 frames (RFC 9113 sections 4 and 6): in-place parsing and writing.
//!
//! Runs on the thread that owns the connection; nothing here is shared or allocates per frame.
//! [`parse`] looks at the front of the connection's read buffer and returns the first frame
//! with its payload borrowed from that buffer, or `None` while the frame is incomplete. The
//! writers ([`write`]) append frames to the connection's write buffer, a `Vec<u8>`.
//!
//! Parsing enforces every rule of section 6 that a frame alone can check (stream identifier
//! zero or not, fixed lengths, padding, setting values, zero window increments) and reports a
//! violation as a [`FrameError`] that says what the connection must do: a connection error
//! (GOAWAY with [`FrameError::code`]) or a stream error (RST_STREAM on
//! [`FrameError::stream_id`], after skipping [`FrameError::frame_len`] bytes). Rules that need
//! connection or stream state (CONTINUATION sequencing, stream id order, flow control, the
//! role-dependent push rules) belong to the engine above.

mod parse;
mod types;
mod write;

pub use parse::{
    Frame, FrameError, Priority, Setting, Settings, SettingsIter, Violation, parse, parse_header,
};
pub use types::{ErrorCode, FrameHeader, FrameType, SettingId, StreamId, flags};
pub use write::{
    PendingHeaders, write_continuation, write_data, write_data_header, write_frame_header,
    write_goaway, write_headers, write_ping, write_priority, write_push_promise, write_rst_stream,
    write_settings, write_settings_ack, write_window_update,
};

/// Size of the frame header that precedes every payload (RFC 9113 section 4.1).
pub const HEADER_LEN: usize = 9;

/// The initial and smallest SETTINGS_MAX_FRAME_SIZE (RFC 9113 section 6.5.2).
pub const DEFAULT_MAX_FRAME_SIZE: u32 = 16_384;

/// The largest SETTINGS_MAX_FRAME_SIZE a peer may advertise: 2^24-1.
pub const MAX_MAX_FRAME_SIZE: u32 = 16_777_215;

/// The largest flow-control window and window increment: 2^31-1 (RFC 9113 section 6.9.1).
pub const MAX_WINDOW_SIZE: u32 = (1 << 31) - 1;

/// The client connection preface that precedes the client's first SETTINGS frame (RFC 9113
/// section 3.4).
pub const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

#[cfg(test)]
mod tests;
