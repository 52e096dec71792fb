//! Fulcrum's HTTP/2 wire layer: the bottom of its own HTTP/2 engine, built for proxying.
//!
//! Pure code without IO or shared state, so it runs on whichever thread owns the connection
//! (in Fulcrum: the monoio worker that accepted or dialled it), with no locks and no
//! allocation per frame or per header on the steady path:
//!
//! - [`frame`]: RFC 9113 frames parsed in place out of a read buffer (payloads borrowed) with
//!   every rule a frame alone can check, and writers that append frames to a write buffer,
//!   including a HEADERS frame whose HPACK block is encoded straight into that buffer.
//! - [`hpack`]: an RFC 7541 decoder that hands back fields as slices of the input or of one
//!   scratch buffer, and an encoder in HAProxy's style (static-table names, raw literal values,
//!   no dynamic table).
//! - [`validate`]: the RFC 9113 section 8 rules on field names, values and pseudo-headers that
//!   the engine applies to a decoded header block.
//! - [`conn`]: the connection state machine for either end (stream states, SETTINGS, flow
//!   control, GOAWAY, the defences against floods and resets), sans-IO: bytes in, events out,
//!   frames written into a buffer the driver sends.
//!
//! IO lives above this crate (Fulcrum's driver is `fulcrum-proxy`'s `h2n` module).
//!
//! The proxy path in brief: a request HEADERS frame is parsed in place, its block decoded,
//! validated and re-encoded straight into the upstream connection's write buffer.
//!
//! ```
//! use fulcrum_h2::frame::{self, DEFAULT_MAX_FRAME_SIZE, Frame, PendingHeaders, StreamId};
//! use fulcrum_h2::hpack::{Decoder, Encoder};
//! use fulcrum_h2::validate;
//!
//! // What a client sent, as it sits in the downstream read buffer.
//! let mut read_buf = Vec::new();
//! let mut client = Encoder::new();
//! let pending = PendingHeaders::begin(&mut read_buf, StreamId::new(1));
//! for (name, value) in [(":method", "POST"), (":scheme", "http"), (":path", "/pkg.Svc/Call"),
//!     (":authority", "backend"), ("content-type", "application/grpc"), ("te", "trailers")]
//! {
//!     client.encode(name.as_bytes(), value.as_bytes(), &mut read_buf);
//! }
//! pending.finish(&mut read_buf, false, DEFAULT_MAX_FRAME_SIZE);
//!
//! // The proxy: one decoder per downstream connection, one encoder per upstream connection.
//! let (mut decoder, mut upstream) = (Decoder::default(), Encoder::new());
//! let mut write_buf = Vec::new();
//! let (frame, used) = frame::parse(&read_buf, DEFAULT_MAX_FRAME_SIZE)?.ok_or("incomplete")?;
//! if let Frame::Headers { block, end_headers: true, end_stream, .. } = frame {
//!     let fields = decoder.decode(block)?;
//!     let request = validate::request(fields.iter())?;
//!     assert_eq!(request.path, Some(&b"/pkg.Svc/Call"[..]));
//!     let out = PendingHeaders::begin(&mut write_buf, StreamId::new(1));
//!     for field in &fields {
//!         upstream.encode_field(&field, &mut write_buf);
//!     }
//!     out.finish(&mut write_buf, end_stream, DEFAULT_MAX_FRAME_SIZE);
//! }
//! assert_eq!(used, read_buf.len());
//! assert_eq!(write_buf, read_buf); // same encoder choices on both sides
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod conn;
pub mod frame;
pub mod hpack;
pub mod validate;

pub use frame::{ErrorCode, Frame, FrameError, FrameType, SettingId, StreamId};
pub use hpack::{Decoder, Encoder, Field, HeaderBlock, HpackError, Pseudo};
