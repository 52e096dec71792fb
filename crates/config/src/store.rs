//! `[store]`: where the run-time state (pools, backends, routes, algorithms, cache settings,
//! timeouts) lives: the local state file (the default) or one document in etcd shared by several
//! instances. Plain data and validation; the control layer connects (see `docs/store.md`).

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::ConfigError;

/// The last-known-good file of an instance with the etcd store when `state_file` is unset,
/// relative to the working directory.
pub const DEFAULT_STATE_FILE: &str = "fulcrum-state.json";

/// Largest state document accepted in etcd (etcd refuses requests above 1.5 MiB by default; the
/// document travels base64-encoded).
pub const MAX_DOCUMENT_BYTES: usize = 1024 * 1024;

/// Which store holds the run-time state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// The local `state_file` (or nothing, when it is unset): one instance.
    #[default]
    File,
    /// One document in etcd, under `prefix`, shared by every instance configured alike.
    Etcd,
}

impl StoreKind {
    /// `file` or `etcd`.
    pub fn as_str(self) -> &'static str {
        match self {
            StoreKind::File => "file",
            StoreKind::Etcd => "etcd",
        }
    }
}

/// `[store]`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// `file` (default) or `etcd`.
    pub kind: StoreKind,
    /// etcd client URLs, `http://host:port` or `https://host:port`, tried in order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<String>,
    /// The key prefix of this cluster's state (the document is `<prefix>/state`); instances
    /// with the same endpoints and prefix share one configuration.
    pub prefix: String,
    /// etcd user, when etcd runs with authentication.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// That user's password (`FULCRUM_STORE_PASSWORD` overrides it). Never printed back.
    #[serde(skip_serializing)]
    pub password: Option<String>,
    /// CA certificate(s) of the etcd servers (PEM); required by `https://` endpoints.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// Client certificate chain (PEM), when etcd runs with `--client-cert-auth`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
    /// How many times an admin change is computed again on a newer document after losing a
    /// compare-and-swap to another instance before it is refused (`409 store_conflict`).
    pub conflict_retries: u32,
    /// TCP connect plus TLS handshake to one endpoint.
    pub connect_timeout_ms: u64,
    /// One whole etcd call (connects, failover and the answer included).
    pub request_timeout_ms: u64,
    /// A watch quiet for this long is checked end to end with a read.
    pub watch_probe_ms: u64,
    /// First reconnect delay; doubles (with jitter) up to `backoff_max_ms`.
    pub backoff_min_ms: u64,
    /// Longest reconnect delay.
    pub backoff_max_ms: u64,
    /// Largest state document written or accepted.
    pub max_document_bytes: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            kind: StoreKind::File,
            endpoints: Vec::new(),
            prefix: "/fulcrum".into(),
            username: None,
            password: None,
            ca_file: None,
            cert_file: None,
            key_file: None,
            conflict_retries: 5,
            connect_timeout_ms: 2_000,
            request_timeout_ms: 5_000,
            watch_probe_ms: 5_000,
            backoff_min_ms: 100,
            backoff_max_ms: 5_000,
            max_document_bytes: MAX_DOCUMENT_BYTES,
        }
    }
}

/// The password never reaches a log line.
impl fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreConfig")
            .field("kind", &self.kind)
            .field("endpoints", &self.endpoints)
            .field("prefix", &self.prefix)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("ca_file", &self.ca_file)
            .field("cert_file", &self.cert_file)
            .field("key_file", &self.key_file)
            .field("conflict_retries", &self.conflict_retries)
            .field("connect_timeout_ms", &self.connect_timeout_ms)
            .field("request_timeout_ms", &self.request_timeout_ms)
            .field("watch_probe_ms", &self.watch_probe_ms)
            .field("backoff_min_ms", &self.backoff_min_ms)
            .field("backoff_max_ms", &self.backoff_max_ms)
            .field("max_document_bytes", &self.max_document_bytes)
            .finish()
    }
}

/// Most endpoints `store.endpoints` may list.
const MAX_ENDPOINTS: usize = 16;
/// Longest accepted `store.prefix`.
const MAX_PREFIX_BYTES: usize = 512;
/// Most conflict retries.
const MAX_CONFLICT_RETRIES: u32 = 100;
/// Longest accepted timeout or backoff, in milliseconds (one hour).
const MAX_TIMEOUT_MS: u64 = 3_600_000;

impl StoreConfig {
    /// The prefix without trailing slashes (`/fulcrum/` and `/fulcrum` are the same prefix).
    pub fn normalized_prefix(&self) -> &str {
        self.prefix.trim_end_matches('/')
    }

    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        let key = |k: &str| format!("store.{k}");
        if self.kind == StoreKind::File {
            let etcd_only = [
                ("endpoints", !self.endpoints.is_empty()),
                ("username", self.username.is_some()),
                ("password", self.password.is_some()),
                ("ca_file", self.ca_file.is_some()),
                ("cert_file", self.cert_file.is_some()),
                ("key_file", self.key_file.is_some()),
            ];
            if let Some((name, _)) = etcd_only.iter().find(|(_, set)| *set) {
                return Err(ConfigError::invalid(key(name), "only used with `kind = \"etcd\"`"));
            }
        } else {
            self.validate_etcd()?;
        }
        for (name, value) in [
            ("connect_timeout_ms", self.connect_timeout_ms),
            ("request_timeout_ms", self.request_timeout_ms),
            ("watch_probe_ms", self.watch_probe_ms),
            ("backoff_min_ms", self.backoff_min_ms),
            ("backoff_max_ms", self.backoff_max_ms),
        ] {
            if !(1..=MAX_TIMEOUT_MS).contains(&value) {
                return Err(ConfigError::invalid(
                    key(name),
                    format!("must be 1..={MAX_TIMEOUT_MS}"),
                ));
            }
        }
        if self.backoff_max_ms < self.backoff_min_ms {
            return Err(ConfigError::invalid(
                key("backoff_max_ms"),
                "must be at least `backoff_min_ms`",
            ));
        }
        if self.conflict_retries > MAX_CONFLICT_RETRIES {
            return Err(ConfigError::invalid(
                key("conflict_retries"),
                format!("must be 0..={MAX_CONFLICT_RETRIES}"),
            ));
        }
        if !(1024..=MAX_DOCUMENT_BYTES).contains(&self.max_document_bytes) {
            return Err(ConfigError::invalid(
                key("max_document_bytes"),
                format!("must be 1024..={MAX_DOCUMENT_BYTES}"),
            ));
        }
        Ok(())
    }

    fn validate_etcd(&self) -> Result<(), ConfigError> {
        let key = |k: &str| format!("store.{k}");
        if self.endpoints.is_empty() || self.endpoints.len() > MAX_ENDPOINTS {
            return Err(ConfigError::invalid(
                key("endpoints"),
                format!("the etcd store needs 1..={MAX_ENDPOINTS} endpoints"),
            ));
        }
        let mut tls = Vec::with_capacity(self.endpoints.len());
        for (i, endpoint) in self.endpoints.iter().enumerate() {
            tls.push(
                check_endpoint(endpoint).map_err(|reason| {
                    ConfigError::invalid(format!("store.endpoints[{i}]"), reason)
                })?,
            );
        }
        let https = tls.iter().any(|&t| t);
        if https && tls.iter().any(|&t| !t) {
            return Err(ConfigError::invalid(key("endpoints"), "mixes http:// and https://"));
        }
        if https && self.ca_file.is_none() {
            return Err(ConfigError::invalid(key("ca_file"), "https:// endpoints need a CA file"));
        }
        if !https && (self.ca_file.is_some() || self.cert_file.is_some()) {
            return Err(ConfigError::invalid(
                key(if self.ca_file.is_some() { "ca_file" } else { "cert_file" }),
                "TLS files need https:// endpoints",
            ));
        }
        if self.cert_file.is_some() != self.key_file.is_some() {
            return Err(ConfigError::invalid(
                key("cert_file"),
                "cert_file and key_file go together",
            ));
        }
        // A username without a password is checked at start: the password may come from
        // FULCRUM_STORE_PASSWORD.
        if self.password.is_some() && self.username.is_none() {
            return Err(ConfigError::invalid(key("password"), "a password needs a `username`"));
        }
        let prefix = self.normalized_prefix();
        if !prefix.starts_with('/')
            || prefix.len() < 2
            || prefix.len() > MAX_PREFIX_BYTES
            || prefix.contains(|c: char| c.is_control() || c.is_whitespace())
        {
            return Err(ConfigError::invalid(
                key("prefix"),
                format!(
                    "must start with `/`, name something, hold no spaces or control characters \
                     and be at most {MAX_PREFIX_BYTES} bytes"
                ),
            ));
        }
        Ok(())
    }
}

/// `http://host:port` or `https://host:port` (an IPv6 host in brackets), nothing after; returns
/// whether it is TLS.
fn check_endpoint(url: &str) -> Result<bool, String> {
    let (tls, rest) = if let Some(rest) = url.strip_prefix("http://") {
        (false, rest)
    } else if let Some(rest) = url.strip_prefix("https://") {
        (true, rest)
    } else {
        return Err(format!("`{url}` must start with http:// or https://"));
    };
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    let bad = || format!("`{url}` must be scheme://host:port with no path");
    if authority.is_empty() || authority.contains(['/', '?', '#', '@']) {
        return Err(bad());
    }
    let (host, port) = match authority.strip_prefix('[') {
        Some(v6) => v6.split_once("]:").ok_or_else(bad)?,
        None => authority.rsplit_once(':').ok_or_else(bad)?,
    };
    if host.is_empty() || !port.parse::<u16>().is_ok_and(|p| p != 0) {
        return Err(bad());
    }
    Ok(tls)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn etcd(endpoints: &[&str]) -> StoreConfig {
        StoreConfig {
            kind: StoreKind::Etcd,
            endpoints: endpoints.iter().map(|e| (*e).to_owned()).collect(),
            ..StoreConfig::default()
        }
    }

    #[test]
    fn valid_stores() {
        StoreConfig::default().validate().unwrap();
        etcd(&["http://127.0.0.1:2379", "http://[::1]:2379/"]).validate().unwrap();
        let tls = StoreConfig {
            ca_file: Some("ca.pem".into()),
            cert_file: Some("c.pem".into()),
            key_file: Some("k.pem".into()),
            username: Some("fulcrum".into()),
            password: Some("pw".into()),
            prefix: "/fulcrum/prod/".into(),
            ..etcd(&["https://etcd-1:2379", "https://etcd-2:2379"])
        };
        tls.validate().unwrap();
        assert_eq!(tls.normalized_prefix(), "/fulcrum/prod");
        // The password may come from the environment.
        StoreConfig { username: Some("fulcrum".into()), ..etcd(&["http://a:1"]) }
            .validate()
            .unwrap();
    }

    #[test]
    fn invalid_stores_name_their_key() {
        let cases = [
            (
                StoreConfig { endpoints: vec!["http://a:1".into()], ..StoreConfig::default() },
                "endpoints",
            ),
            (StoreConfig { ca_file: Some("ca".into()), ..StoreConfig::default() }, "ca_file"),
            (etcd(&[]), "endpoints"),
            (etcd(&["a:1"]), "endpoints[0]"),
            (etcd(&["http://a"]), "endpoints[0]"),
            (etcd(&["http://a:0"]), "endpoints[0]"),
            (etcd(&["http://a:1", "http://a:1/v3"]), "endpoints[1]"),
            (etcd(&["http://a:1", "https://b:1"]), "endpoints"),
            (etcd(&["https://a:1"]), "ca_file"),
            (StoreConfig { ca_file: Some("ca".into()), ..etcd(&["http://a:1"]) }, "ca_file"),
            (
                StoreConfig {
                    ca_file: Some("ca".into()),
                    cert_file: Some("c".into()),
                    ..etcd(&["https://a:1"])
                },
                "cert_file",
            ),
            (StoreConfig { password: Some("pw".into()), ..etcd(&["http://a:1"]) }, "password"),
            (StoreConfig { prefix: "fulcrum".into(), ..etcd(&["http://a:1"]) }, "prefix"),
            (StoreConfig { prefix: "/".into(), ..etcd(&["http://a:1"]) }, "prefix"),
            (StoreConfig { prefix: "/a b".into(), ..etcd(&["http://a:1"]) }, "prefix"),
            (StoreConfig { request_timeout_ms: 0, ..etcd(&["http://a:1"]) }, "request_timeout_ms"),
            (
                StoreConfig { backoff_min_ms: 500, backoff_max_ms: 100, ..etcd(&["http://a:1"]) },
                "backoff_max_ms",
            ),
            (StoreConfig { conflict_retries: 101, ..etcd(&["http://a:1"]) }, "conflict_retries"),
            (StoreConfig { max_document_bytes: 10, ..etcd(&["http://a:1"]) }, "max_document_bytes"),
        ];
        for (config, key) in cases {
            let err = config.validate().unwrap_err().to_string();
            assert!(err.contains(&format!("`store.{key}`")), "{key}: {err}");
        }
    }

    #[test]
    fn debug_hides_the_password() {
        let c = StoreConfig { password: Some("hunter2".into()), ..StoreConfig::default() };
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
