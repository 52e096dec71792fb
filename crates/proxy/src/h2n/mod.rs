//! The HTTP/2 client side on Fulcrum's own engine (`[http2] engine = "native"`, the default),
//! run by each worker over the connection driver shared by a connection and its streams
//! (`crate::h2conn`): the client connection loop with its limits ([`server`]), each stream
//! forwarded through the attempt loop ([`stream`]), and WebSocket over HTTP/2 (RFC 8441
//! extended CONNECT) as a tunnel to an HTTP/1.1 upgrade ([`websocket`]). A stream's attempt on
//! an HTTP/1.1 backend is written once for both engines (`crate::h2call`). Native upstream
//! sessions are the upstream layer's (`crate::upstream::h2n`).
//!
//! The protocol itself (frames, HPACK, stream states, flow control, the defences) is
//! `fulcrum-h2`'s; this module moves bytes between it and the transports (cleartext or TLS)
//! and between the two sides of the proxy. Every stream is balanced on its own.

pub(crate) mod server;
mod stream;
mod websocket;
