//! Prometheus metrics: per-worker counters on the hot path, per-worker published slots, summed
//! on scrape.
//!
//! Same pattern as the balancer's stats: a worker counts in plain `Cell`s ([`BackendMetrics`],
//! one per backend it knows, plus its [`WorkerMetrics`]); its ticker copies them every
//! `stats_publish_ms` into the worker's own cache-padded slot of [`Metrics`] (a mutex only that
//! worker's ticker and the scraper ever take, so it is never contended on the data path). A
//! scrape ([`Metrics::render_prometheus`], on `lb-admin`) sums the slots. Nothing shared is
//! written per request.

use std::cell::Cell;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, OnceLock};

use crossbeam_utils::CachePadded;

use crate::control::BackendId;
use crate::proxy::pool::QueueError;
use crate::proxy::retry::RetryReason;
use crate::worker::IoDriver;

/// Upper bounds of the latency histogram buckets, in microseconds (then `+Inf`).
pub const LATENCY_BUCKETS_US: [u64; 14] = [
    500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000,
    2_500_000, 5_000_000, 10_000_000,
];
const NB: usize = LATENCY_BUCKETS_US.len() + 1;
const CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "other"];

/// One worker's counters for one backend (or for requests that reached none).
#[derive(Debug, Default)]
pub struct BackendMetrics {
    classes: [Cell<u64>; 6],
    buckets: [Cell<u64>; NB],
    sum_us: Cell<u64>,
    connect_errors: Cell<u64>,
}

impl BackendMetrics {
    /// Counts one finished request.
    #[inline]
    pub fn record(&self, status: u16, duration_us: u64) {
        let class = match status {
            100..=599 => usize::from(status / 100 - 1),
            _ => 5,
        };
        bump(&self.classes[class]);
        let bucket = LATENCY_BUCKETS_US.iter().position(|&b| duration_us <= b).unwrap_or(NB - 1);
        bump(&self.buckets[bucket]);
        self.sum_us.set(self.sum_us.get() + duration_us);
    }

    /// Counts a failed upstream connect.
    pub fn connect_error(&self) {
        bump(&self.connect_errors);
    }

    fn copy_to(&self, c: &mut Counters) {
        for (d, s) in c.classes.iter_mut().zip(&self.classes) {
            *d = s.get();
        }
        for (d, s) in c.buckets.iter_mut().zip(&self.buckets) {
            *d = s.get();
        }
        c.sum_us = self.sum_us.get();
        c.connect_errors = self.connect_errors.get();
    }
}

#[inline]
fn bump(c: &Cell<u64>) {
    c.set(c.get() + 1);
}

/// Plain copies of [`BackendMetrics`].
#[derive(Debug, Clone, Copy, Default)]
struct Counters {
    classes: [u64; 6],
    buckets: [u64; NB],
    sum_us: u64,
    connect_errors: u64,
}

impl Counters {
    fn add(&mut self, o: &Counters) {
        for (a, b) in self.classes.iter_mut().zip(&o.classes) {
            *a += b;
        }
        for (a, b) in self.buckets.iter_mut().zip(&o.buckets) {
            *a += b;
        }
        self.sum_us += o.sum_us;
        self.connect_errors += o.connect_errors;
    }
}

/// What one worker last published about one backend.
#[derive(Debug, Clone, Default)]
struct BackendSlot {
    id: BackendId,
    url: String,
    counters: Counters,
    in_flight: u64,
    ejected: bool,
    open_connections: u64,
    queued: u64,
}

#[derive(Debug, Default)]
struct Published {
    epoch: u64,
    active_connections: u64,
    accept_paused: u64,
    body_too_slow: u64,
    no_backend: Counters,
    backends: Vec<BackendSlot>,
    retries: RetryCounts,
}

#[derive(Debug, Default)]
struct WorkerSlot {
    published: Mutex<Published>,
    /// Access records this worker dropped (written only by that worker, only when dropping).
    log_dropped: AtomicU64,
    /// This worker's cache shard counters (written only by that worker's ticker).
    cache: CacheSlot,
}

/// One worker's published cache counters: single writer, plain relaxed stores.
#[derive(Debug, Default)]
struct CacheSlot {
    hits: AtomicU64,
    misses: AtomicU64,
    entries: AtomicU64,
    bytes: AtomicU64,
}

/// Cache counters summed over every worker's shard.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheTotals {
    /// Requests answered from the cache.
    pub hits: u64,
    /// Cacheable lookups that found nothing fresh.
    pub misses: u64,
    /// Entries held now.
    pub entries: u64,
    /// Bytes charged now (key, head, body and bookkeeping).
    pub bytes: u64,
}

/// The process-wide registry: one published slot per worker.
#[derive(Debug)]
pub struct Metrics {
    workers: Box<[CachePadded<WorkerSlot>]>,
    drivers: OnceLock<Vec<IoDriver>>,
    /// Active health per backend, replaced by `lb-health` after each check (empty when off).
    health: Mutex<Vec<HealthRow>>,
}

/// What `lb-health` publishes about one backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthRow {
    /// Backend URL (label value).
    pub url: String,
    /// `false` only while the active checks hold the backend down.
    pub up: bool,
    /// Checks passed since the backend was added.
    pub checks_ok: u64,
    /// Checks failed since the backend was added.
    pub checks_failed: u64,
}

/// What a worker's ticker publishes about one backend.
#[derive(Debug, Clone, Copy)]
pub struct BackendSample<'a> {
    /// Backend id.
    pub id: BackendId,
    /// Backend URL (label value).
    pub url: &'a str,
    /// This worker's counters for it.
    pub metrics: &'a BackendMetrics,
    /// Requests in flight on this worker.
    pub in_flight: u32,
    /// Whether this worker currently ejects it.
    pub ejected: bool,
    /// Open HTTP/1.1 connections to it from this worker (idle and busy).
    pub open_connections: usize,
    /// Requests waiting on this worker for a connection to it (at its connection cap).
    pub queued: usize,
}

impl Metrics {
    /// A registry for `workers` workers.
    pub fn new(workers: usize) -> Self {
        Self {
            workers: (0..workers.max(1)).map(|_| CachePadded::new(WorkerSlot::default())).collect(),
            drivers: OnceLock::new(),
            health: Mutex::new(Vec::new()),
        }
    }

    /// Replaces the active health rows (`lb-health` only).
    pub fn publish_health(&self, rows: Vec<HealthRow>) {
        if let Ok(mut health) = self.health.lock() {
            *health = rows;
        }
    }

    /// Records the io driver each worker runs (once, after start).
    pub fn set_drivers(&self, drivers: Vec<IoDriver>) {
        let _ = self.drivers.set(drivers);
    }

    pub(crate) fn set_log_dropped(&self, worker: usize, total: u64) {
        if let Some(w) = self.workers.get(worker) {
            w.log_dropped.store(total, Relaxed);
        }
    }

    /// Copies one worker's cache counters into its slot (that worker's ticker only).
    pub fn publish_cache(&self, worker: usize, stats: &crate::cache::CacheStats) {
        if let Some(w) = self.workers.get(worker) {
            w.cache.hits.store(stats.hits, Relaxed);
            w.cache.misses.store(stats.misses, Relaxed);
            w.cache.entries.store(stats.entries, Relaxed);
            w.cache.bytes.store(stats.bytes, Relaxed);
        }
    }

    /// The cache counters summed over every worker (as of their last publish).
    pub fn cache_totals(&self) -> CacheTotals {
        let mut t = CacheTotals::default();
        for w in self.workers.iter() {
            t.hits += w.cache.hits.load(Relaxed);
            t.misses += w.cache.misses.load(Relaxed);
            t.entries += w.cache.entries.load(Relaxed);
            t.bytes += w.cache.bytes.load(Relaxed);
        }
        t
    }

    /// Access records dropped so far, over every worker.
    pub fn log_dropped_total(&self) -> u64 {
        self.workers.iter().map(|w| w.log_dropped.load(Relaxed)).sum()
    }

    /// Copies one worker's counters into its slot (that worker's ticker only).
    pub fn publish<'a>(
        &self,
        worker: usize,
        epoch: u64,
        local: &WorkerMetrics,
        backends: impl Iterator<Item = BackendSample<'a>>,
    ) {
        let Some(slot) = self.workers.get(worker) else { return };
        let Ok(mut p) = slot.published.lock() else { return };
        p.epoch = epoch;
        p.active_connections = local.active_connections.get();
        p.accept_paused = local.accept_paused.get();
        p.body_too_slow = local.body_too_slow.get();
        local.no_backend.copy_to(&mut p.no_backend);
        p.retries = local.retries.counts();
        let mut n = 0;
        for b in backends {
            if p.backends.len() <= n {
                p.backends.push(BackendSlot::default());
            }
            let s = &mut p.backends[n];
            if s.id != b.id || s.url != b.url {
                s.id = b.id;
                s.url.clear();
                s.url.push_str(b.url);
            }
            b.metrics.copy_to(&mut s.counters);
            s.in_flight = u64::from(b.in_flight);
            s.ejected = b.ejected;
            s.open_connections = b.open_connections as u64;
            s.queued = b.queued as u64;
            n += 1;
        }
        p.backends.truncate(n);
    }

    /// Every metric in the Prometheus text exposition format (version 0.0.4).
    pub fn render_prometheus(&self) -> String {
        // Merge the workers' slots per backend, in first-seen order.
        let mut backends: Vec<BackendSlot> = Vec::new();
        let mut no_backend = Counters::default();
        let (mut epoch, mut connections) = (0, 0);
        let mut retries = RetryCounts::default();
        let (mut accept_paused, mut body_too_slow) = (0, 0);
        for w in self.workers.iter() {
            let Ok(p) = w.published.lock() else { continue };
            epoch = epoch.max(p.epoch);
            connections += p.active_connections;
            accept_paused += p.accept_paused;
            body_too_slow += p.body_too_slow;
            no_backend.add(&p.no_backend);
            retries.add(&p.retries);
            for b in &p.backends {
                match backends.iter_mut().find(|m| m.id == b.id) {
                    Some(m) => {
                        m.counters.add(&b.counters);
                        m.in_flight += b.in_flight;
                        m.ejected |= b.ejected;
                        m.open_connections += b.open_connections;
                        m.queued += b.queued;
                    }
                    None => backends.push(b.clone()),
                }
            }
        }
        let mut rows: Vec<(&str, &Counters)> =
            backends.iter().map(|b| (b.url.as_str(), &b.counters)).collect();
        rows.push(("none", &no_backend));

        let mut out = String::with_capacity(4096);
        header(
            &mut out,
            "fulcrum_requests_total",
            "counter",
            "Proxied requests by backend (\"none\": no backend reached) and status class.",
        );
        for (url, c) in &rows {
            for (class, n) in CLASSES.iter().zip(c.classes) {
                if n > 0 || *class != "other" {
                    let _ = writeln!(
                        out,
                        "fulcrum_requests_total{{backend=\"{}\",class=\"{class}\"}} {n}",
                        esc(url)
                    );
                }
            }
        }
        header(
            &mut out,
            "fulcrum_request_duration_seconds",
            "histogram",
            "Time from request head to response sent, by backend.",
        );
        for (url, c) in &rows {
            let url = esc(url);
            let mut cumulative = 0;
            for (i, n) in c.buckets.iter().enumerate() {
                cumulative += n;
                let le = LATENCY_BUCKETS_US
                    .get(i)
                    .map_or_else(|| "+Inf".to_owned(), |us| format!("{}", *us as f64 / 1e6));
                let _ = writeln!(
                    out,
                    "fulcrum_request_duration_seconds_bucket{{backend=\"{url}\",le=\"{le}\"}} {cumulative}"
                );
            }
            let _ = writeln!(
                out,
                "fulcrum_request_duration_seconds_sum{{backend=\"{url}\"}} {}",
                c.sum_us as f64 / 1e6
            );
            let _ = writeln!(
                out,
                "fulcrum_request_duration_seconds_count{{backend=\"{url}\"}} {cumulative}"
            );
        }
        header(&mut out, "fulcrum_backend_in_flight", "gauge", "Requests in flight per backend.");
        for b in &backends {
            let _ = writeln!(
                out,
                "fulcrum_backend_in_flight{{backend=\"{}\"}} {}",
                esc(&b.url),
                b.in_flight
            );
        }
        let gauges: [(&str, &str, BackendGauge); 2] = [
            (
                "fulcrum_backend_open_connections",
                "Open HTTP/1.1 upstream connections per backend (idle and busy).",
                |b| b.open_connections,
            ),
            (
                "fulcrum_backend_queued_requests",
                "Requests waiting for a connection to a backend at its connection cap.",
                |b| b.queued,
            ),
        ];
        for (name, help, value) in gauges {
            header(&mut out, name, "gauge", help);
            for b in &backends {
                let _ = writeln!(out, "{name}{{backend=\"{}\"}} {}", esc(&b.url), value(b));
            }
        }
        header(
            &mut out,
            "fulcrum_backend_healthy",
            "gauge",
            "1 unless passive health checking ejected the backend on some worker.",
        );
        for b in &backends {
            let _ = writeln!(
                out,
                "fulcrum_backend_healthy{{backend=\"{}\"}} {}",
                esc(&b.url),
                u8::from(!b.ejected)
            );
        }
        header(
            &mut out,
            "fulcrum_upstream_connect_errors_total",
            "counter",
            "Failed or timed-out upstream connects per backend.",
        );
        for b in &backends {
            let _ = writeln!(
                out,
                "fulcrum_upstream_connect_errors_total{{backend=\"{}\"}} {}",
                esc(&b.url),
                b.counters.connect_errors
            );
        }
        self.render_health(&mut out);
        retries.render(&mut out);
        let cache = self.cache_totals();
        header(&mut out, "fulcrum_cache_hits_total", "counter", "Responses served from the cache.");
        let _ = writeln!(out, "fulcrum_cache_hits_total {}", cache.hits);
        header(
            &mut out,
            "fulcrum_cache_misses_total",
            "counter",
            "Cacheable requests not found in the cache.",
        );
        let _ = writeln!(out, "fulcrum_cache_misses_total {}", cache.misses);
        header(&mut out, "fulcrum_cache_bytes", "gauge", "Bytes held by the response cache.");
        let _ = writeln!(out, "fulcrum_cache_bytes {}", cache.bytes);
        header(&mut out, "fulcrum_cache_entries", "gauge", "Responses held by the cache.");
        let _ = writeln!(out, "fulcrum_cache_entries {}", cache.entries);
        header(
            &mut out,
            "fulcrum_epoch",
            "gauge",
            "Newest configuration epoch installed on the workers.",
        );
        let _ = writeln!(out, "fulcrum_epoch {epoch}");
        header(&mut out, "fulcrum_client_connections", "gauge", "Open client connections.");
        let _ = writeln!(out, "fulcrum_client_connections {connections}");
        header(
            &mut out,
            "fulcrum_accept_paused_total",
            "counter",
            "Times a worker stopped accepting because it had limits.max_connections_per_worker \
             client connections open.",
        );
        let _ = writeln!(out, "fulcrum_accept_paused_total {accept_paused}");
        header(
            &mut out,
            "fulcrum_client_body_too_slow_total",
            "counter",
            "Requests cut off (408 or close) because their body arrived slower than \
             timeouts.client_body_min_rate.",
        );
        let _ = writeln!(out, "fulcrum_client_body_too_slow_total {body_too_slow}");
        header(
            &mut out,
            "fulcrum_access_log_dropped_total",
            "counter",
            "Access records dropped because the writer fell behind.",
        );
        let _ = writeln!(out, "fulcrum_access_log_dropped_total {}", self.log_dropped_total());
        header(
            &mut out,
            "fulcrum_io_driver",
            "gauge",
            "The io driver each worker runs (always 1).",
        );
        for (i, d) in self.drivers.get().map(Vec::as_slice).unwrap_or_default().iter().enumerate() {
            let _ = writeln!(out, "fulcrum_io_driver{{worker=\"{i}\",driver=\"{d}\"}} 1");
        }
        out
    }
}

/// Reads one per-backend gauge from a merged slot.
type BackendGauge = fn(&BackendSlot) -> u64;

impl Metrics {
    /// `fulcrum_backend_up` and `fulcrum_health_checks_total`, only when active checks run.
    fn render_health(&self, out: &mut String) {
        let Ok(rows) = self.health.lock() else { return };
        if rows.is_empty() {
            return;
        }
        header(
            out,
            "fulcrum_backend_up",
            "gauge",
            "0 while active health checks hold the backend down, 1 otherwise (up or not yet checked).",
        );
        for r in rows.iter() {
            let _ = writeln!(
                out,
                "fulcrum_backend_up{{backend=\"{}\"}} {}",
                esc(&r.url),
                u8::from(r.up)
            );
        }
        header(out, "fulcrum_health_checks_total", "counter", "Active health checks by result.");
        for r in rows.iter() {
            for (result, n) in [("ok", r.checks_ok), ("failed", r.checks_failed)] {
                let _ = writeln!(
                    out,
                    "fulcrum_health_checks_total{{backend=\"{}\",result=\"{result}\"}} {n}",
                    esc(&r.url)
                );
            }
        }
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// Escapes a label value (backslash, quote, newline).
fn esc(v: &str) -> std::borrow::Cow<'_, str> {
    if v.contains(['\\', '"', '\n']) {
        v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n").into()
    } else {
        v.into()
    }
}

/// A worker's own counters that belong to no backend.
#[derive(Debug, Default)]
pub struct WorkerMetrics {
    active_connections: Cell<u64>,
    accept_paused: Cell<u64>,
    body_too_slow: Cell<u64>,
    /// Requests that reached no backend.
    pub no_backend: BackendMetrics,
    /// Retries, retry-budget refusals and connection-queue rejections.
    pub retries: RetryMetrics,
}

/// One worker's counters of upstream retries and of requests turned away by a backend's
/// connection cap.
#[derive(Debug, Default)]
pub struct RetryMetrics {
    by_reason: [Cell<u64>; 4],
    budget_exhausted: Cell<u64>,
    queue_full: Cell<u64>,
    queue_timeout: Cell<u64>,
}

impl RetryMetrics {
    /// Counts one retry.
    pub fn retry(&self, reason: RetryReason) {
        let i = RetryReason::ALL.iter().position(|r| *r == reason).unwrap_or(0);
        bump(&self.by_reason[i]);
    }

    /// Counts a retry the budget refused.
    pub fn budget_exhausted(&self) {
        bump(&self.budget_exhausted);
    }

    /// Counts a request turned away by a backend's full connection queue, or its queue timeout.
    pub fn queue_rejected(&self, error: QueueError) {
        bump(match error {
            QueueError::Full => &self.queue_full,
            QueueError::Timeout => &self.queue_timeout,
        });
    }

    fn counts(&self) -> RetryCounts {
        RetryCounts {
            by_reason: std::array::from_fn(|i| self.by_reason[i].get()),
            budget_exhausted: self.budget_exhausted.get(),
            queue_full: self.queue_full.get(),
            queue_timeout: self.queue_timeout.get(),
        }
    }
}

/// Plain copies of [`RetryMetrics`].
#[derive(Debug, Clone, Copy, Default)]
struct RetryCounts {
    by_reason: [u64; 4],
    budget_exhausted: u64,
    queue_full: u64,
    queue_timeout: u64,
}

impl RetryCounts {
    fn add(&mut self, o: &RetryCounts) {
        for (a, b) in self.by_reason.iter_mut().zip(&o.by_reason) {
            *a += b;
        }
        self.budget_exhausted += o.budget_exhausted;
        self.queue_full += o.queue_full;
        self.queue_timeout += o.queue_timeout;
    }

    fn render(&self, out: &mut String) {
        header(
            out,
            "fulcrum_retries_total",
            "counter",
            "Upstream attempts tried again, by reason.",
        );
        for (reason, n) in RetryReason::ALL.iter().zip(self.by_reason) {
            let _ = writeln!(out, "fulcrum_retries_total{{reason=\"{}\"}} {n}", reason.label());
        }
        header(
            out,
            "fulcrum_retry_budget_exhausted_total",
            "counter",
            "Retries not made because the retry budget was empty.",
        );
        let _ = writeln!(out, "fulcrum_retry_budget_exhausted_total {}", self.budget_exhausted);
        header(
            out,
            "fulcrum_upstream_queue_rejected_total",
            "counter",
            "Requests a backend's connection cap turned away: its queue was full, or the wait timed out.",
        );
        let _ = writeln!(
            out,
            "fulcrum_upstream_queue_rejected_total{{reason=\"full\"}} {}",
            self.queue_full
        );
        let _ = writeln!(
            out,
            "fulcrum_upstream_queue_rejected_total{{reason=\"timeout\"}} {}",
            self.queue_timeout
        );
    }
}

impl WorkerMetrics {
    /// Counts an open client connection until the guard drops.
    pub fn connection(&self) -> ConnectionGuard<'_> {
        bump(&self.active_connections);
        ConnectionGuard(self)
    }

    /// Counts one pause of the accept loop at `limits.max_connections_per_worker`.
    pub fn accept_paused(&self) {
        bump(&self.accept_paused);
    }

    /// Counts a request cut off for a body slower than `timeouts.client_body_min_rate`.
    pub fn body_too_slow(&self) {
        bump(&self.body_too_slow);
    }
}

/// Uncounts a client connection when dropped.
#[derive(Debug)]
pub struct ConnectionGuard<'a>(&'a WorkerMetrics);

impl Drop for ConnectionGuard<'_> {
    fn drop(&mut self) {
        let c = &self.0.active_connections;
        c.set(c.get().saturating_sub(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_and_render_sum_workers() {
        let m = Metrics::new(2);
        m.set_drivers(vec![IoDriver::Epoll, IoDriver::IoUring]);
        let (w0, w1) = (WorkerMetrics::default(), WorkerMetrics::default());
        let (b0, b1) = (BackendMetrics::default(), BackendMetrics::default());
        b0.record(200, 300);
        b1.record(503, 2_000_000);
        b1.record(204, 700);
        b1.connect_error();
        w0.no_backend.record(503, 10);
        w0.retries.retry(RetryReason::Connect);
        w1.retries.retry(RetryReason::Connect);
        w1.retries.budget_exhausted();
        w1.retries.queue_rejected(QueueError::Timeout);
        let _c = w1.connection();
        w0.accept_paused();
        w1.accept_paused();
        w1.body_too_slow();
        let sample = |b| BackendSample {
            id: 1,
            url: "http://a:1",
            metrics: b,
            in_flight: 1,
            ejected: false,
            open_connections: 2,
            queued: 1,
        };
        m.publish(0, 3, &w0, [sample(&b0)].into_iter());
        m.publish(1, 4, &w1, [sample(&b1)].into_iter());
        m.set_log_dropped(1, 5);
        let cache = |hits, bytes| crate::cache::CacheStats {
            hits,
            misses: 1,
            entries: 2,
            bytes,
            ..Default::default()
        };
        m.publish_cache(0, &cache(3, 100));
        m.publish_cache(1, &cache(4, 50));
        assert!(!m.render_prometheus().contains("fulcrum_backend_up"), "only when checks run");
        m.publish_health(vec![HealthRow {
            url: "http://a:1".into(),
            up: false,
            checks_ok: 2,
            checks_failed: 3,
        }]);
        let text = m.render_prometheus();
        for line in [
            "fulcrum_backend_up{backend=\"http://a:1\"} 0",
            "fulcrum_health_checks_total{backend=\"http://a:1\",result=\"ok\"} 2",
            "fulcrum_health_checks_total{backend=\"http://a:1\",result=\"failed\"} 3",
            "fulcrum_requests_total{backend=\"http://a:1\",class=\"2xx\"} 2",
            "fulcrum_requests_total{backend=\"http://a:1\",class=\"5xx\"} 1",
            "fulcrum_requests_total{backend=\"none\",class=\"5xx\"} 1",
            "fulcrum_request_duration_seconds_bucket{backend=\"http://a:1\",le=\"0.0005\"} 1",
            "fulcrum_request_duration_seconds_bucket{backend=\"http://a:1\",le=\"0.001\"} 2",
            "fulcrum_request_duration_seconds_bucket{backend=\"http://a:1\",le=\"+Inf\"} 3",
            "fulcrum_request_duration_seconds_count{backend=\"http://a:1\"} 3",
            "fulcrum_backend_in_flight{backend=\"http://a:1\"} 2",
            "fulcrum_backend_open_connections{backend=\"http://a:1\"} 4",
            "fulcrum_backend_queued_requests{backend=\"http://a:1\"} 2",
            "fulcrum_upstream_connect_errors_total{backend=\"http://a:1\"} 1",
            "fulcrum_epoch 4",
            "fulcrum_client_connections 1",
            "fulcrum_accept_paused_total 2",
            "fulcrum_client_body_too_slow_total 1",
            "fulcrum_access_log_dropped_total 5",
            "fulcrum_cache_hits_total 7",
            "fulcrum_cache_misses_total 2",
            "fulcrum_cache_bytes 150",
            "fulcrum_cache_entries 4",
            "fulcrum_io_driver{worker=\"1\",driver=\"io_uring\"} 1",
            "fulcrum_retries_total{reason=\"connect\"} 2",
            "fulcrum_retries_total{reason=\"reset\"} 0",
            "fulcrum_retry_budget_exhausted_total 1",
            "fulcrum_upstream_queue_rejected_total{reason=\"full\"} 0",
            "fulcrum_upstream_queue_rejected_total{reason=\"timeout\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line}\n{text}");
        }
    }
}
