//! The HTTP/2 client side on Fulcrum's own engine (`[http2] engine = "native"`, the default),
//! run by each worker over the connection driver shared by a connection and its streams
//! (`crate::h2conn`): the client connection loop with its limits ([`server`]), each stream
//! forwarded through the attempt loop ([`stream`]), a stream's attempt on an HTTP/1.1 backend
//! ([`to_h1`]), and WebSocket over HTTP/2 (RFC 8441 extended CONNECT) as a tunnel to an
//! HTTP/1.1 upgrade ([`websocket`]). Native upstream sessions are the upstream layer's
//! (`crate::upstream::h2n`).
//!
//! The protocol itself (frames, HPACK, stream states, flow control, the defences) is
//! `fulcrum-h2`'s; this module moves bytes between it and the transports (cleartext or TLS)
//! and between the two sides of the proxy. Every stream is balanced on its own.

pub(crate) mod server;
mod stream;
mod to_h1;
mod websocket;
