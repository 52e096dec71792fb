//! Fulcrum's HTTP layer: the protocol rules, with no knowledge of backends, pools or epochs.
//!
//! - [`h1`]: the one HTTP/1.1 codec for both roles (heads, framing, hop-by-hop, chunked, the
//!   body copy loop). A backend response is parsed and framed one way whatever the client
//!   speaks.
//! - [`grpc`]: recognising gRPC calls, `grpc-timeout`, `grpc-status`, the codes Fulcrum uses.
//! - [`synthetic`]: Fulcrum's own answers (`400` to `504`, gRPC trailers-only errors) as one
//!   typed value rendered for HTTP/1.1, HTTP/2 and gRPC.
//!
//! Runs on the worker threads (the body copy loop on their monoio runtime).

pub mod grpc;
pub mod h1;
pub mod synthetic;

pub use synthetic::Synthetic;
