//! The WebSocket handshake Fulcrum makes itself for WebSocket over HTTP/2 (RFC 8441), shared
//! by both HTTP/2 engines: an extended CONNECT stream (`:protocol = websocket`) goes to an
//! HTTP/1.1 backend as a WebSocket upgrade with a `Sec-WebSocket-Key` of Fulcrum's own (HTTP/2
//! does not carry one), and the backend's `101` must prove it read that key. Plain functions,
//! run in the stream's task on the worker's thread.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use fulcrum_http::h1::{BackendResponse, Offered};
use sha1::{Digest, Sha1};

/// The one protocol extended CONNECT is translated for.
pub(crate) const WEBSOCKET: &str = "websocket";

/// RFC 6455 1.3: appended to the key before hashing.
const ACCEPT_GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Whether WebSocket upgrades are passed (`upgrade.protocols`), so HTTP/2 listeners enable
/// extended CONNECT (SETTINGS_ENABLE_CONNECT_PROTOCOL).
pub(crate) fn enabled(upgrades: &[String]) -> bool {
    upgrades.iter().any(|p| p.eq_ignore_ascii_case(WEBSOCKET))
}

/// A fresh `Sec-WebSocket-Key`: 16 random bytes, base64 (RFC 6455 4.1).
pub(crate) fn new_key() -> String {
    let bytes: [u8; 16] = std::array::from_fn(|_| fastrand::u8(..));
    STANDARD.encode(bytes)
}

/// The `Sec-WebSocket-Accept` a backend must answer `key` with (RFC 6455 4.2.2).
fn accept_for(key: &str) -> String {
    let mut sha = Sha1::new();
    sha.update(key.as_bytes());
    sha.update(ACCEPT_GUID);
    STANDARD.encode(sha.finalize())
}

/// Whether a backend's `101` completes the WebSocket handshake Fulcrum started with `key`:
/// it switches to `websocket` and proves it read the key.
pub(crate) fn switch_is_valid(res: &BackendResponse<'_>, key: &str) -> bool {
    let websocket = [WEBSOCKET.to_owned()];
    res.switched_to(&websocket, Offered::only(0)).is_some()
        && res
            .field("sec-websocket-accept")
            .is_some_and(|a| a.trim_ascii() == accept_for(key).as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_accept_value_of_rfc_6455() {
        // RFC 6455 1.3's example.
        assert_eq!(accept_for("dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        let key = new_key();
        assert_eq!(STANDARD.decode(&key).unwrap().len(), 16);
        assert_ne!(key, new_key());
    }

    #[test]
    fn enabled_by_the_upgrade_list() {
        assert!(enabled(&["h2c".into(), "WebSocket".into()]));
        assert!(!enabled(&["h2c".into()]));
    }
}
