//! The `[telemetry]` section of the configuration: access log, metrics and tracing settings.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Which access-log implementation formats and writes the records (on `lb-log`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum AccessLogFormat {
    /// Fulcrum's own JSON-lines writer (the faster one; see `benches/access_log.rs`).
    #[default]
    JsonLines,
    /// The same records emitted as `tracing` events to a JSON-writing subscriber.
    Tracing,
}

/// Access log, metrics and tracing settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// Access log destination: a file path, `-` for stdout (the default), or `off`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access_log: Option<String>,
    /// Which implementation writes the access log.
    pub access_log_format: AccessLogFormat,
    /// Request body bytes captured per record (0 turns body capture off).
    pub log_body_max_bytes: usize,
    /// Records each worker may queue for the writer thread; beyond that they are dropped and
    /// counted, never waited for.
    pub log_queue_capacity: usize,
    /// Fraction of requests traced with fastrace spans (0 = tracing off, 1 = every request).
    /// Requests with a W3C `traceparent` follow its sampled flag while tracing is on.
    pub trace_sample_rate: f64,
    /// Whether `GET /metrics` requires a `fulcrum:read` token.
    pub metrics_auth: bool,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            access_log: Some("-".to_owned()),
            access_log_format: AccessLogFormat::JsonLines,
            log_body_max_bytes: 4096,
            log_queue_capacity: 4096,
            trace_sample_rate: 0.0,
            metrics_auth: false,
        }
    }
}

impl TelemetryConfig {
    /// The access log destination, if any: `None` when off, `Some(None)` for stdout (`-`),
    /// `Some(Some(path))` for a file.
    pub fn destination(&self) -> Option<Option<PathBuf>> {
        self.access_log
            .as_deref()
            .filter(|s| !s.is_empty() && !s.eq_ignore_ascii_case("off"))
            .map(|raw| (raw != "-").then(|| PathBuf::from(raw)))
    }

    /// Checks values serde cannot: `(key, reason)` of the first bad one.
    pub fn validate(&self) -> Result<(), (&'static str, &'static str)> {
        if !(0.0..=1.0).contains(&self.trace_sample_rate) {
            return Err(("telemetry.trace_sample_rate", "must be within 0..=1"));
        }
        if self.log_queue_capacity == 0 || self.log_queue_capacity > 1 << 20 {
            return Err(("telemetry.log_queue_capacity", "must be 1..=1048576"));
        }
        if self.log_body_max_bytes > 1 << 20 {
            return Err(("telemetry.log_body_max_bytes", "must be at most 1048576"));
        }
        Ok(())
    }
}
