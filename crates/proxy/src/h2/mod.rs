//! The HTTP/2 client side (h2c with prior knowledge, and gRPC), run by each worker: the
//! connection loop with its limits ([`server`]), each stream forwarded through the attempt loop
//! ([`stream`]), and the two directions of a WebSocket over HTTP/2 (RFC 8441 extended CONNECT)
//! tunnel ([`websocket`]). A stream's attempt on an HTTP/1.1 backend, the WebSocket upgrade
//! included, is written once for both engines (`crate::h2call`). Upstream HTTP/2 sessions are
//! the upstream layer's (`crate::upstream::h2`).
//!
//! Built on hyperium `h2` 0.4 over monoio's poll-io layer. Every stream is balanced on its own:
//! one client connection's calls spread over the backends as the algorithm says.

pub(crate) mod server;
mod stream;
mod websocket;

/// The client connection preface of HTTP/2 (RFC 9113 3.4).
pub const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
