//! The HTTP/1.1 codec, for both roles (a client's requests, a backend's responses): heads
//! ([`head`]), the one hop-by-hop rule ([`hop`]) and body framing with the copy loop that
//! streams a body through one fixed buffer ([`body`]).

pub mod body;
pub mod head;
pub mod hop;

pub use body::{BodyError, BodyTap, ChunkedDecoder, CopySpec, MinRate, RateClock, copy_body};
pub use head::{
    BackendResponse, ClientSide, Forwarded, Framing, HeadError, MAX_HEADERS, MAX_UPGRADE_PROTOCOLS,
    Offered, Parsed, RequestHead, RequestInfo, ResponseHead, ResponseInfo, ResponseStart,
    finish_request_head, header_storage, parse_backend_response, parse_request, parse_request_with,
    parse_response, write_h2_request, write_h2_upgrade,
};
pub use hop::{HOP_BY_HOP, is_hop_by_hop};
