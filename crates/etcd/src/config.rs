//! What the client is told: endpoints, key prefix, credentials, TLS files, timeouts and limits,
//! and their validation. Built once by the caller (at start, on the main thread); read by the
//! `lb-store` thread afterwards.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::error::Error;

/// How to reach etcd and where Fulcrum's keys live.
#[derive(Clone)]
pub struct EtcdConfig {
    /// Client URLs of the etcd members, `http://host:port` or `https://host:port`; tried in
    /// order, the next one after a failure.
    pub endpoints: Vec<String>,
    /// Key prefix owned by this Fulcrum deployment, e.g. `/fulcrum/prod` (no trailing `/`).
    /// The state document is `<prefix>/state`.
    pub prefix: String,
    /// User name for etcd authentication; `None` when auth is off.
    pub username: Option<String>,
    /// Password for `username`.
    pub password: Option<String>,
    /// TLS to etcd; required by (and only allowed with) `https://` endpoints.
    pub tls: Option<TlsFiles>,
    /// Per-call and reconnect timing.
    pub timeouts: Timeouts,
    /// Size and queue bounds.
    pub limits: Limits,
}

impl EtcdConfig {
    /// A configuration with the default timeouts and limits, no auth and no TLS.
    pub fn new(endpoints: Vec<String>, prefix: impl Into<String>) -> Self {
        Self {
            endpoints,
            prefix: prefix.into(),
            username: None,
            password: None,
            tls: None,
            timeouts: Timeouts::default(),
            limits: Limits::default(),
        }
    }
}

/// The password never reaches a log line.
impl fmt::Debug for EtcdConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdConfig")
            .field("endpoints", &self.endpoints)
            .field("prefix", &self.prefix)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("tls", &self.tls)
            .field("timeouts", &self.timeouts)
            .field("limits", &self.limits)
            .finish()
    }
}

/// PEM files for TLS to etcd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// CA certificate(s) that signed the etcd server certificates.
    pub ca_file: PathBuf,
    /// Client certificate chain, when etcd runs with `--client-cert-auth`.
    pub cert_file: Option<PathBuf>,
    /// Private key of `cert_file`.
    pub key_file: Option<PathBuf>,
}

/// Timing of calls and reconnects. Every call is bounded by `request`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP connect plus TLS handshake to one endpoint.
    pub connect: Duration,
    /// One whole call (connects, failover, re-authentication and the response included).
    pub request: Duration,
    /// A watch quiet for this long checks the key with a read: if nothing was missed the watch
    /// is known alive (a `Progress` event); if the read fails or shows a change the watch did
    /// not deliver in time, the watch reconnects.
    pub watch_probe: Duration,
    /// First reconnect delay; doubles per failed attempt (with jitter) up to `backoff_max`.
    pub backoff_min: Duration,
    /// Longest reconnect delay.
    pub backoff_max: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(2),
            request: Duration::from_secs(5),
            watch_probe: Duration::from_secs(5),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
        }
    }
}

/// Size and queue bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest state document written or accepted (etcd's own default limit is 1.5 MiB).
    pub max_value_bytes: usize,
    /// Largest response body or watch message read from etcd (JSON, values in base64).
    pub max_response_bytes: usize,
    /// Watch events buffered for the caller; the watch stops reading etcd while it is full.
    pub event_queue: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self { max_value_bytes: 1024 * 1024, max_response_bytes: 8 * 1024 * 1024, event_queue: 64 }
    }
}

/// One parsed endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Endpoint {
    /// As configured, for messages.
    pub url: String,
    /// `https://`.
    pub tls: bool,
    /// Host name or IP address (without brackets).
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// `host:port` for the `Host` header.
    pub authority: String,
}

impl Endpoint {
    fn parse(url: &str) -> Result<Self, Error> {
        let bad = |why: &str| Error::Config(format!("endpoint `{url}`: {why}"));
        let (tls, rest) = if let Some(rest) = url.strip_prefix("http://") {
            (false, rest)
        } else if let Some(rest) = url.strip_prefix("https://") {
            (true, rest)
        } else {
            return Err(bad("must start with http:// or https://"));
        };
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.is_empty() || authority.contains(['/', '?', '#', '@']) {
            return Err(bad("must be scheme://host:port with no path"));
        }
        let (host, port) = match authority.strip_prefix('[') {
            Some(v6) => v6.split_once("]:").ok_or_else(|| bad("needs a port"))?,
            None => authority.rsplit_once(':').ok_or_else(|| bad("needs a port"))?,
        };
        let port: u16 = port.parse().map_err(|_| bad("bad port"))?;
        if host.is_empty() || port == 0 {
            return Err(bad("needs a host and a non-zero port"));
        }
        Ok(Self {
            url: url.to_owned(),
            tls,
            host: host.to_owned(),
            port,
            authority: authority.to_owned(),
        })
    }
}

/// Checks the configuration; returns the parsed endpoints and the normalised prefix.
pub(crate) fn validate(config: &EtcdConfig) -> Result<(Vec<Endpoint>, String), Error> {
    if config.endpoints.is_empty() {
        return Err(Error::Config("no etcd endpoint".into()));
    }
    let endpoints =
        config.endpoints.iter().map(|e| Endpoint::parse(e)).collect::<Result<Vec<_>, _>>()?;
    let any_tls = endpoints.iter().any(|e| e.tls);
    if any_tls && endpoints.iter().any(|e| !e.tls) {
        return Err(Error::Config("endpoints mix http:// and https://".into()));
    }
    match (&config.tls, any_tls) {
        (None, true) => {
            return Err(Error::Config("https:// endpoints need `tls` (at least a CA file)".into()));
        }
        (Some(_), false) => {
            return Err(Error::Config("`tls` is set but the endpoints are http://".into()));
        }
        _ => {}
    }
    if let Some(tls) = &config.tls
        && tls.cert_file.is_some() != tls.key_file.is_some()
    {
        return Err(Error::Config("a client certificate needs both cert_file and key_file".into()));
    }
    if config.username.is_some() != config.password.is_some() {
        return Err(Error::Config("username and password go together".into()));
    }
    let prefix = config.prefix.trim_end_matches('/');
    if !prefix.starts_with('/') || prefix.len() < 2 || prefix.contains(char::is_control) {
        return Err(Error::Config(format!(
            "prefix `{}` must start with `/` and name something",
            config.prefix
        )));
    }
    let t = &config.timeouts;
    if [t.connect, t.request, t.watch_probe, t.backoff_min].contains(&Duration::ZERO)
        || t.backoff_max < t.backoff_min
    {
        return Err(Error::Config(
            "timeouts must be non-zero and backoff_max at least backoff_min".into(),
        ));
    }
    let l = &config.limits;
    if l.max_value_bytes == 0 || l.event_queue == 0 || l.max_response_bytes < l.max_value_bytes {
        return Err(Error::Config(
            "limits must be non-zero and max_response_bytes at least max_value_bytes".into(),
        ));
    }
    Ok((endpoints, prefix.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(endpoints: &[&str]) -> EtcdConfig {
        EtcdConfig::new(endpoints.iter().map(|e| e.to_string()).collect(), "/fulcrum/test/")
    }

    #[test]
    fn endpoints_parse() {
        let (eps, prefix) =
            validate(&config(&["http://127.0.0.1:2379", "http://[::1]:2380/"])).expect("valid");
        assert_eq!(prefix, "/fulcrum/test");
        assert_eq!((eps[0].host.as_str(), eps[0].port, eps[0].tls), ("127.0.0.1", 2379, false));
        assert_eq!((eps[1].host.as_str(), eps[1].port), ("::1", 2380));
        assert_eq!(eps[1].authority, "[::1]:2380");
    }

    #[test]
    fn bad_configurations_are_refused() {
        let tls = TlsFiles { ca_file: "ca.pem".into(), cert_file: None, key_file: None };
        let mut cases = vec![
            config(&[]),
            config(&["127.0.0.1:2379"]),
            config(&["http://127.0.0.1"]),
            config(&["http://127.0.0.1:2379/v3"]),
            config(&["http://127.0.0.1:0"]),
            config(&["https://a:1"]),
            config(&["http://a:1", "https://b:1"]),
        ];
        let mut c = config(&["http://a:1"]);
        c.tls = Some(tls.clone());
        cases.push(c);
        let mut c = config(&["https://a:1"]);
        c.tls = Some(TlsFiles { cert_file: Some("c.pem".into()), ..tls });
        cases.push(c);
        let mut c = config(&["http://a:1"]);
        c.username = Some("u".into());
        cases.push(c);
        let mut c = config(&["http://a:1"]);
        c.prefix = "fulcrum".into();
        cases.push(c);
        let mut c = config(&["http://a:1"]);
        c.timeouts.request = Duration::ZERO;
        cases.push(c);
        let mut c = config(&["http://a:1"]);
        c.limits.max_response_bytes = 10;
        cases.push(c);
        for c in cases {
            let err = validate(&c).expect_err(&format!("{c:?}"));
            assert!(matches!(err, Error::Config(_)), "{err}");
            assert!(!err.is_retryable());
        }
    }

    #[test]
    fn debug_hides_the_password() {
        let mut c = config(&["http://a:1"]);
        c.username = Some("fulcrum".into());
        c.password = Some("hunter2".into());
        let shown = format!("{c:?}");
        assert!(shown.contains("fulcrum") && !shown.contains("hunter2"), "{shown}");
    }
}
