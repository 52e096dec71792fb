//! The TLS sections: `[tls]` (the TLS listener for clients and its certificates) and
//! `[upstream_tls]` (TLS to `https://` and `h2://` backends). Plain data and validation; the
//! files are read and checked by the TLS layer when Fulcrum starts or reloads.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::ConfigError;

/// One certificate chain and its private key, both PEM files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateFiles {
    /// The certificate chain (leaf first), PEM.
    pub cert_file: PathBuf,
    /// The private key (PKCS#8, SEC1 or PKCS#1), PEM.
    pub key_file: PathBuf,
}

/// `[tls]`: a TLS listener beside the cleartext one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// The TLS listener's address (every worker binds it with `SO_REUSEPORT`); unset: none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    /// Certificates: the first is the default, the others are chosen by SNI from their DNS
    /// names (exact and `*.` wildcard).
    pub certificates: Vec<CertificateFiles>,
    /// Time a client has to finish its handshake (then the connection closes).
    pub handshake_timeout_ms: u64,
    /// Handshakes one worker runs at once; at the cap it stops accepting TLS connections until
    /// one finishes.
    pub max_handshakes_per_worker: usize,
}

impl Default for TlsConfig {
    fn default() -> Self {
        Self {
            listen: None,
            certificates: Vec::new(),
            handshake_timeout_ms: 10_000,
            max_handshakes_per_worker: 1024,
        }
    }
}

/// Most certificates `[[tls.certificates]]` may list.
pub const MAX_CERTIFICATES: usize = 1024;

impl TlsConfig {
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if self.listen.is_some() && self.certificates.is_empty() {
            return Err(ConfigError::invalid(
                "tls.certificates",
                "a TLS listener needs at least one certificate (cert_file and key_file)",
            ));
        }
        if self.certificates.len() > MAX_CERTIFICATES {
            return Err(ConfigError::invalid(
                "tls.certificates",
                format!("at most {MAX_CERTIFICATES} certificates"),
            ));
        }
        if self.handshake_timeout_ms == 0 {
            return Err(ConfigError::invalid("tls.handshake_timeout_ms", "must be greater than 0"));
        }
        if !(1..=65_536).contains(&self.max_handshakes_per_worker) {
            return Err(ConfigError::invalid("tls.max_handshakes_per_worker", "must be 1..=65536"));
        }
        Ok(())
    }
}

/// `[upstream_tls]`: how Fulcrum speaks TLS to `https://` and `h2://` backends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamTlsConfig {
    /// CA bundle (PEM) that backend certificates must chain to; unset: the system's roots.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// The name every backend certificate is checked against; unset: each backend's host.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
    /// Whether backend certificates are verified (`false` is for tests; logged as a warning).
    pub verify: bool,
    /// Client certificate chain (PEM) presented to backends that ask for one (mTLS).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_cert_file: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_key_file: Option<PathBuf>,
}

impl Default for UpstreamTlsConfig {
    fn default() -> Self {
        Self {
            ca_file: None,
            server_name: None,
            verify: true,
            client_cert_file: None,
            client_key_file: None,
        }
    }
}

impl UpstreamTlsConfig {
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if self.client_cert_file.is_some() != self.client_key_file.is_some() {
            return Err(ConfigError::invalid(
                "upstream_tls.client_cert_file",
                "client_cert_file and client_key_file go together",
            ));
        }
        if let Some(name) = &self.server_name
            && (name.is_empty() || name.len() > 253 || !name.bytes().all(|b| b.is_ascii_graphic()))
        {
            return Err(ConfigError::invalid(
                "upstream_tls.server_name",
                "must be a DNS name or an IP address",
            ));
        }
        Ok(())
    }
}
