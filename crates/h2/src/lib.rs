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
//!
//! Connection and stream state machines, flow control and IO live above this crate.

#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod frame;
pub mod hpack;
pub mod validate;

pub use frame::{ErrorCode, Frame, FrameError, FrameType, SettingId, StreamId};
pub use hpack::{Decoder, Encoder, Field, HeaderBlock, HpackError, Pseudo};
