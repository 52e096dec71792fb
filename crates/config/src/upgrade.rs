//! The `[upgrade]` section: which HTTP/1.1 protocol upgrades (`Upgrade` with
//! `Connection: upgrade`, RFC 9110 7.8) Fulcrum passes to backends and turns into tunnels when
//! they answer `101 Switching Protocols`. Plain data and validation; the tunnel's idle timeout
//! is `timeouts.tunnel_idle_ms`.

use serde::{Deserialize, Serialize};

use crate::ConfigError;

/// Most protocols `upgrade.protocols` may list.
pub const MAX_UPGRADE_PROTOCOLS: usize = 32;

/// Longest protocol name accepted.
const MAX_PROTOCOL_LEN: usize = 64;

/// `[upgrade]`: the protocols whose upgrades are passed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpgradeConfig {
    /// Protocol names (RFC 9110 tokens, compared case-insensitively) whose `Upgrade` requests
    /// are forwarded with their `Upgrade` and `Connection: upgrade` fields; a request for any
    /// other protocol is forwarded without them, as an ordinary request. Empty: no upgrade is
    /// passed.
    pub protocols: Vec<String>,
}

impl Default for UpgradeConfig {
    fn default() -> Self {
        Self { protocols: vec!["websocket".to_owned()] }
    }
}

/// Whether `b` may appear in an RFC 9110 token (`tchar`).
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

impl UpgradeConfig {
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if self.protocols.len() > MAX_UPGRADE_PROTOCOLS {
            return Err(ConfigError::invalid(
                "upgrade.protocols",
                format!("at most {MAX_UPGRADE_PROTOCOLS} protocols"),
            ));
        }
        for (i, p) in self.protocols.iter().enumerate() {
            let key = format!("upgrade.protocols[{i}]");
            if p.is_empty() || p.len() > MAX_PROTOCOL_LEN || !p.bytes().all(is_tchar) {
                return Err(ConfigError::invalid(
                    key,
                    format!(
                        "`{p}` is not a protocol name (an RFC 9110 token of 1..={MAX_PROTOCOL_LEN} \
                         letters, digits and !#$%&'*+-.^_`|~)"
                    ),
                ));
            }
            if self.protocols[..i].iter().any(|q| q.eq_ignore_ascii_case(p)) {
                return Err(ConfigError::invalid(key, format!("`{p}` is listed twice")));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocols_are_tokens_listed_once() {
        let ok = |list: &[&str]| {
            UpgradeConfig { protocols: list.iter().map(|s| (*s).to_owned()).collect() }
                .validate()
                .map_err(|e| e.to_string())
        };
        assert!(ok(&["websocket", "h2c", "TLS"]).is_ok());
        assert!(ok(&[]).is_ok());
        for (bad, key) in [
            (vec!["web socket"], "upgrade.protocols[0]"),
            (vec![""], "upgrade.protocols[0]"),
            (vec!["websocket", "WebSocket"], "upgrade.protocols[1]"),
            (vec!["a/1"], "upgrade.protocols[0]"),
            (vec!["x"; 33], "upgrade.protocols"),
        ] {
            let e = ok(&bad).unwrap_err();
            assert!(e.contains(&format!("`{key}`")), "{bad:?}: {e}");
        }
        assert_eq!(UpgradeConfig::default().protocols, ["websocket"]);
    }
}
