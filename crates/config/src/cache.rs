//! The `[cache]` table: the response cache's settings and their validation (the cache itself
//! lives in the cache layer).

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Response cache settings (the `[cache]` table, and what the admin API reports).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CachePolicy {
    /// Whether cacheable responses are stored and served (default off).
    pub enabled: bool,
    /// Longest freshness lifetime, in milliseconds; also the lifetime of responses without
    /// `max-age`/`s-maxage` (default 60 000).
    pub ttl_ms: u64,
    /// Memory budget over all workers' shards, in bytes (default 256 MiB); each worker gets
    /// `max_bytes / workers`.
    pub max_bytes: u64,
    /// Largest body stored, in bytes (default 1 MiB); larger ones pass through uncached.
    pub max_object_bytes: u64,
    /// Request methods looked up and stored, case-sensitive (default `GET`, `HEAD`, `POST`).
    pub methods: Vec<String>,
    /// Response statuses stored (default 200, 203, 204, 301, 404, 410).
    pub statuses: Vec<u16>,
    /// Request headers left out of the key, case-insensitive (e.g. `x-request-id`; default
    /// none).
    pub ignore_headers: Vec<String>,
}

impl Default for CachePolicy {
    fn default() -> Self {
        Self {
            enabled: false,
            ttl_ms: 60_000,
            max_bytes: 256 * 1024 * 1024,
            max_object_bytes: 1024 * 1024,
            methods: vec!["GET".into(), "HEAD".into(), "POST".into()],
            statuses: vec![200, 203, 204, 301, 404, 410],
            ignore_headers: Vec::new(),
        }
    }
}

/// Why a [`CachePolicy`] was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CachePolicyError {
    /// `ttl_ms` must be positive.
    #[error("cache ttl_ms must be greater than zero")]
    ZeroTtl,
    /// A method is not an HTTP token.
    #[error("cache method `{0}` is not a valid HTTP method token")]
    Method(String),
    /// A status is outside 100..=599.
    #[error("cache status {0} is not an HTTP status (100..=599)")]
    Status(u16),
    /// An ignored header name is not an HTTP token.
    #[error("cache ignore_headers entry `{0}` is not a valid header name")]
    HeaderName(String),
}

impl CachePolicy {
    /// The freshness cap as a duration.
    pub fn ttl(&self) -> Duration {
        Duration::from_millis(self.ttl_ms)
    }

    /// One worker's shard budget: `max_bytes / workers` (saturating on 32-bit targets).
    pub fn shard_budget(&self, workers: usize) -> usize {
        let per = self.max_bytes / workers.max(1) as u64;
        usize::try_from(per).unwrap_or(usize::MAX)
    }

    /// Checks the settings for values that cannot work.
    pub fn validate(&self) -> Result<(), CachePolicyError> {
        if self.ttl_ms == 0 {
            return Err(CachePolicyError::ZeroTtl);
        }
        if let Some(m) = self.methods.iter().find(|m| !is_token(m)) {
            return Err(CachePolicyError::Method(m.clone()));
        }
        if let Some(&s) = self.statuses.iter().find(|s| !(100..=599).contains(*s)) {
            return Err(CachePolicyError::Status(s));
        }
        if let Some(h) = self.ignore_headers.iter().find(|h| !is_token(h)) {
            return Err(CachePolicyError::HeaderName(h.clone()));
        }
        Ok(())
    }
}

/// RFC 9110 `token`: one or more tchars.
pub(crate) fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|c| c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_issue() {
        let p = CachePolicy::default();
        assert!(!p.enabled);
        assert_eq!(p.ttl(), Duration::from_secs(60));
        assert_eq!(p.max_bytes, 256 << 20);
        assert_eq!(p.max_object_bytes, 1 << 20);
        assert_eq!(p.methods, ["GET", "HEAD", "POST"]);
        assert_eq!(p.statuses, [200, 203, 204, 301, 404, 410]);
        assert!(p.ignore_headers.is_empty());
        assert_eq!(p.validate(), Ok(()));
        assert_eq!(p.shard_budget(4), 64 << 20);
        assert_eq!(p.shard_budget(0), 256 << 20);
    }

    #[test]
    fn serde_round_trip_defaults_and_unknown_fields() {
        let p: CachePolicy = toml::from_str("enabled = true\nttl_ms = 5000").unwrap();
        assert_eq!(p, CachePolicy { enabled: true, ttl_ms: 5000, ..CachePolicy::default() });
        let json = serde_json::to_string(&p).unwrap();
        assert_eq!(serde_json::from_str::<CachePolicy>(&json).unwrap(), p);
        assert!(serde_json::from_str::<CachePolicy>(r#"{"enabled":true,"ttl":5}"#).is_err());
    }

    #[test]
    fn validation() {
        let bad = |p: CachePolicy| p.validate().unwrap_err();
        let d = CachePolicy::default;
        assert_eq!(bad(CachePolicy { ttl_ms: 0, ..d() }), CachePolicyError::ZeroTtl);
        assert_eq!(
            bad(CachePolicy { methods: vec!["GE T".into()], ..d() }),
            CachePolicyError::Method("GE T".into())
        );
        assert_eq!(bad(CachePolicy { statuses: vec![99], ..d() }), CachePolicyError::Status(99));
        assert_eq!(
            bad(CachePolicy { ignore_headers: vec!["x id".into()], ..d() }),
            CachePolicyError::HeaderName("x id".into())
        );
        assert_eq!(
            CachePolicy { ignore_headers: vec!["X-Request-Id".into()], ..d() }.validate(),
            Ok(())
        );
    }
}
