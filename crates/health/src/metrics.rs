//! The active checks' metrics, beside them: `fulcrum_backend_up` and
//! `fulcrum_health_checks_total`, republished by `lb-health` and read on a scrape.

use std::sync::Mutex;

use fulcrum_telemetry::{Collect, Encoder, Kind};

/// What `lb-health` publishes about one backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HealthRow {
    /// The backend's pool (label value).
    pub pool: String,
    /// Backend URL (label value).
    pub url: String,
    /// `false` only while the active checks hold the backend down.
    pub up: bool,
    /// Checks passed since the backend was added.
    pub checks_ok: u64,
    /// Checks failed since the backend was added.
    pub checks_failed: u64,
}

/// The rows `lb-health` last published (none while checks are off: the families are absent).
#[derive(Debug, Default)]
pub struct HealthMetrics {
    rows: Mutex<Vec<HealthRow>>,
}

impl HealthMetrics {
    /// Replaces the rows (`lb-health` only).
    pub(crate) fn publish(&self, rows: Vec<HealthRow>) {
        if let Ok(mut r) = self.rows.lock() {
            *r = rows;
        }
    }
}

impl Collect for HealthMetrics {
    fn collect(&self, out: &mut Encoder) {
        let Ok(rows) = self.rows.lock() else { return };
        if rows.is_empty() {
            return;
        }
        out.family(
            "fulcrum_backend_up",
            Kind::Gauge,
            "0 while active health checks hold the backend down, 1 otherwise (up or not yet checked).",
        );
        for r in rows.iter() {
            let labels = [("pool", r.pool.as_str()), ("backend", r.url.as_str())];
            out.sample("fulcrum_backend_up", &labels, u8::from(r.up));
        }
        let name = "fulcrum_health_checks_total";
        out.family(name, Kind::Counter, "Active health checks by result.");
        for r in rows.iter() {
            for (result, n) in [("ok", r.checks_ok), ("failed", r.checks_failed)] {
                let labels = [("pool", r.pool.as_str()), ("backend", &r.url), ("result", result)];
                out.sample(name, &labels, n);
            }
        }
    }
}
