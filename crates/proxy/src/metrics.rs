//! The data path's metrics, beside it: requests and latency per pool and backend, in-flight
//! requests, upstream connections and queues, passive health, client connections, and the
//! worker-level counters. Every per-backend series carries its pool (`pool`, `backend`), and
//! each pool has a `backend="none"` row for its requests that reached no backend. Workers write their own slots as things happen (see `fulcrum_telemetry::metrics`);
//! a scrape on `lb-admin` sums them. Nothing is published on a timer.

use std::sync::{Arc, Mutex, Weak};

use fulcrum_model::{Backend, BackendId};
use fulcrum_telemetry::{Collect, Counter, Encoder, Gauge, Histogram, Kind, PerWorker};
use fulcrum_util::now_ms;

use crate::error::QueueError;
use crate::retry::RetryMetrics;
use crate::tunnel::TunnelMetrics;

/// Upper bounds of the latency histogram buckets, in microseconds (then `+Inf`).
pub const LATENCY_BUCKETS_US: [u64; 14] = [
    500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000,
    2_500_000, 5_000_000, 10_000_000,
];
const NB: usize = LATENCY_BUCKETS_US.len() + 1;
const CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "other"];

/// One worker's request counters for one backend (or for requests that reached none).
#[derive(Debug, Default)]
pub struct RequestSlot {
    classes: [Counter; 6],
    latency: Histogram<NB>,
    connect_errors: Counter,
    open_connections: Gauge,
    queued: Gauge,
}

impl RequestSlot {
    /// Counts one finished request with the status the client got.
    #[inline]
    pub fn record(&self, status: u16, duration_us: u64) {
        let class = match status {
            100..=599 => usize::from(status / 100 - 1),
            _ => 5,
        };
        self.classes[class].inc();
        self.latency.observe(&LATENCY_BUCKETS_US, duration_us);
    }

    /// Counts a failed upstream connect.
    pub fn connect_error(&self) {
        self.connect_errors.inc();
    }

    /// This worker's open HTTP/1.1 connections to the backend (idle and busy).
    pub fn set_open_connections(&self, n: usize) {
        self.open_connections.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// Requests waiting on this worker for a connection to the backend.
    pub fn set_queued(&self, n: usize) {
        self.queued.set(i64::try_from(n).unwrap_or(i64::MAX));
    }
}

/// The metrics of one backend: its shared state (URL, in-flight counts, ejections) and one
/// [`RequestSlot`] per worker. Each worker's view of the backend holds an `Arc`; when the last
/// one goes (the backend left the configuration and its requests finished), so do its series.
#[derive(Debug)]
pub struct BackendMetrics {
    backend: Arc<Backend>,
    slots: PerWorker<RequestSlot>,
}

impl BackendMetrics {
    /// Worker `worker`'s slot.
    #[inline]
    pub fn slot(&self, worker: usize) -> &RequestSlot {
        self.slots.get(worker)
    }
}

/// The metrics of one pool that belong to none of its backends: the requests routed to it that
/// reached no backend. Each worker's view of the pool holds an `Arc`; the series go with the
/// last one (the pool was deleted and its requests finished).
#[derive(Debug)]
pub struct PoolMetrics {
    name: Arc<str>,
    no_backend: PerWorker<RequestSlot>,
}

impl PoolMetrics {
    /// Worker `worker`'s slot for requests that reached no backend of the pool.
    #[inline]
    pub fn no_backend(&self, worker: usize) -> &RequestSlot {
        self.no_backend.get(worker)
    }
}

/// One worker's counters that belong to no backend.
#[derive(Debug, Default)]
pub struct WorkerSlot {
    /// Open client connections (HTTP/1.1 and HTTP/2).
    pub client_connections: Gauge,
    /// Times the accept loop paused at `limits.max_connections_per_worker`.
    pub accept_paused: Counter,
    /// Requests cut off because their body arrived slower than the minimum rate.
    pub body_too_slow: Counter,
    /// The epoch the worker runs.
    pub epoch: Gauge,
    queue_full: Counter,
    queue_timeout: Counter,
    tls_handshakes: [Counter; 4],
    tls_requests: [Counter; 2],
}

/// How a TLS handshake on the listener ended (`fulcrum_tls_handshakes_total{result}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsOutcome {
    /// A full handshake.
    Full = 0,
    /// A resumed session (a ticket).
    Resumed = 1,
    /// The client did not finish within `tls.handshake_timeout_ms`.
    Timeout = 2,
    /// Refused: a protocol error, an alert, an unsupported version or cipher, a closed socket.
    Failed = 3,
}

impl TlsOutcome {
    const LABELS: [&str; 4] = ["full", "resumed", "timeout", "failed"];
}

impl WorkerSlot {
    /// Counts one TLS handshake on the listener by outcome.
    pub fn tls_handshake(&self, outcome: TlsOutcome) {
        self.tls_handshakes[outcome as usize].inc();
    }

    /// Counts one request that came over TLS, by version (`TLSv1.2`, `TLSv1.3`).
    #[inline]
    pub fn tls_request(&self, version: &str) {
        self.tls_requests[usize::from(version == "TLSv1.3")].inc();
    }
    /// Counts a request a backend's connection cap turned away.
    pub fn queue_rejected(&self, error: QueueError) {
        match error {
            QueueError::Full => self.queue_full.inc(),
            QueueError::Timeout => self.queue_timeout.inc(),
        }
    }
}

/// The data path's metrics for the whole process (`Arc`-shared by every worker and the
/// registry).
#[derive(Debug)]
pub struct ProxyMetrics {
    workers: usize,
    backends: Mutex<Vec<Weak<BackendMetrics>>>,
    pools: Mutex<Vec<Weak<PoolMetrics>>>,
    worker: PerWorker<WorkerSlot>,
    /// Retries and retry-budget refusals.
    pub retries: Arc<RetryMetrics>,
    /// Upgraded connections (tunnels) and their bytes.
    pub tunnels: Arc<TunnelMetrics>,
}

impl ProxyMetrics {
    /// Metrics for `workers` workers.
    pub fn new(workers: usize) -> Self {
        Self {
            workers,
            backends: Mutex::new(Vec::new()),
            pools: Mutex::new(Vec::new()),
            worker: PerWorker::new(workers),
            retries: Arc::new(RetryMetrics::new(workers)),
            tunnels: Arc::new(TunnelMetrics::new(workers)),
        }
    }

    /// The metrics of `backend`, shared by every worker's view of it (made by the first worker
    /// that installs an epoch with it; taken on epoch installs, never per request).
    pub fn backend(&self, backend: &Arc<Backend>) -> Arc<BackendMetrics> {
        let Ok(mut list) = self.backends.lock() else {
            return Arc::new(BackendMetrics {
                backend: backend.clone(),
                slots: PerWorker::new(self.workers),
            });
        };
        list.retain(|w| w.strong_count() > 0);
        if let Some(found) =
            list.iter().filter_map(Weak::upgrade).find(|m| m.backend.id == backend.id)
        {
            return found;
        }
        let made = Arc::new(BackendMetrics {
            backend: backend.clone(),
            slots: PerWorker::new(self.workers),
        });
        list.push(Arc::downgrade(&made));
        made
    }

    /// The metrics of pool `name`, shared by every worker's view of it (taken on epoch
    /// installs, never per request).
    pub fn pool(&self, name: &Arc<str>) -> Arc<PoolMetrics> {
        let make = || {
            Arc::new(PoolMetrics { name: name.clone(), no_backend: PerWorker::new(self.workers) })
        };
        let Ok(mut list) = self.pools.lock() else { return make() };
        list.retain(|w| w.strong_count() > 0);
        if let Some(found) = list.iter().filter_map(Weak::upgrade).find(|m| m.name == *name) {
            return found;
        }
        let made = make();
        list.push(Arc::downgrade(&made));
        made
    }

    fn live_pools(&self) -> Vec<Arc<PoolMetrics>> {
        let mut live: Vec<Arc<PoolMetrics>> = match self.pools.lock() {
            Ok(list) => list.iter().filter_map(Weak::upgrade).collect(),
            Err(_) => Vec::new(),
        };
        live.sort_by(|a, b| a.name.cmp(&b.name));
        live.dedup_by(|a, b| a.name == b.name);
        live
    }

    /// Worker `worker`'s own counters.
    #[inline]
    pub fn worker(&self, worker: usize) -> &WorkerSlot {
        self.worker.get(worker)
    }

    fn live_backends(&self) -> Vec<Arc<BackendMetrics>> {
        let mut live: Vec<Arc<BackendMetrics>> = match self.backends.lock() {
            Ok(list) => list.iter().filter_map(Weak::upgrade).collect(),
            Err(_) => Vec::new(),
        };
        live.sort_by_key(|m| m.backend.id);
        live.dedup_by_key(|m| m.backend.id);
        live
    }
}

/// One per-backend family: name, kind, help, and its value for the backend at an index.
type PerBackend<'a> = (&'static str, Kind, &'static str, &'a dyn Fn(usize) -> u64);

/// Merged request counters of one row (a backend, or `none`).
struct Merged {
    classes: [u64; 6],
    counts: [u64; NB],
    sum_us: u64,
}

fn merge(slots: &PerWorker<RequestSlot>) -> Merged {
    let mut m = Merged { classes: [0; 6], counts: [0; NB], sum_us: 0 };
    for s in slots.iter() {
        for (c, counter) in m.classes.iter_mut().zip(&s.classes) {
            *c += counter.get();
        }
        s.latency.add_to(&mut m.counts, &mut m.sum_us);
    }
    m
}

fn gauge_sum(slots: &PerWorker<RequestSlot>, value: impl Fn(&RequestSlot) -> &Gauge) -> u64 {
    slots.sum(|s| u64::try_from(value(s).get()).unwrap_or(0))
}

impl Collect for ProxyMetrics {
    fn collect(&self, out: &mut Encoder) {
        let backends = self.live_backends();
        let pools = self.live_pools();
        let now = now_ms();
        let mut rows: Vec<(&str, &str, Merged)> = backends
            .iter()
            .map(|b| (&*b.backend.pool, b.backend.url.url.as_str(), merge(&b.slots)))
            .collect();
        rows.extend(pools.iter().map(|p| (&*p.name, "none", merge(&p.no_backend))));

        let name = "fulcrum_requests_total";
        out.family(
            name,
            Kind::Counter,
            "Proxied requests by pool, backend (\"none\": no backend reached) and status class.",
        );
        for (pool, url, m) in &rows {
            for (class, n) in CLASSES.iter().zip(m.classes) {
                if n > 0 || *class != "other" {
                    out.sample(name, &[("pool", pool), ("backend", url), ("class", class)], n);
                }
            }
        }
        let name = "fulcrum_request_duration_seconds";
        out.family(
            name,
            Kind::Histogram,
            "Time from request head to response sent, by pool and backend.",
        );
        for (pool, url, m) in &rows {
            let labels = [("pool", *pool), ("backend", *url)];
            out.histogram(name, &labels, &LATENCY_BUCKETS_US, 1e6, &m.counts, m.sum_us);
        }
        let snapshots: Vec<_> = backends.iter().map(|b| b.backend.stats.snapshot(now)).collect();
        let per_backend: [PerBackend<'_>; 5] = [
            ("fulcrum_backend_in_flight", Kind::Gauge, "Requests in flight per backend.", &|i| {
                u64::from(snapshots[i].in_flight)
            }),
            (
                "fulcrum_backend_open_connections",
                Kind::Gauge,
                "Open HTTP/1.1 upstream connections per backend (idle and busy).",
                &|i| gauge_sum(&backends[i].slots, |s| &s.open_connections),
            ),
            (
                "fulcrum_backend_queued_requests",
                Kind::Gauge,
                "Requests waiting for a connection to a backend at its connection cap.",
                &|i| gauge_sum(&backends[i].slots, |s| &s.queued),
            ),
            (
                "fulcrum_backend_healthy",
                Kind::Gauge,
                "1 unless passive health checking ejected the backend on some worker.",
                &|i| u64::from(!snapshots[i].ejected),
            ),
            (
                "fulcrum_upstream_connect_errors_total",
                Kind::Counter,
                "Failed or timed-out upstream connects per backend.",
                &|i| backends[i].slots.sum(|s| s.connect_errors.get()),
            ),
        ];
        for (name, kind, help, value) in per_backend {
            out.family(name, kind, help);
            for (i, b) in backends.iter().enumerate() {
                let labels = [("pool", &*b.backend.pool), ("backend", b.backend.url.url.as_str())];
                out.sample(name, &labels, value(i));
            }
        }
        self.retries.collect(out);
        self.tunnels.collect(out);
        let name = "fulcrum_upstream_queue_rejected_total";
        out.family(
            name,
            Kind::Counter,
            "Requests a backend's connection cap turned away: its queue was full, or the wait timed out.",
        );
        out.sample(name, &[("reason", "full")], self.worker.sum(|w| w.queue_full.get()));
        out.sample(name, &[("reason", "timeout")], self.worker.sum(|w| w.queue_timeout.get()));
        let name = "fulcrum_tls_handshakes_total";
        out.family(name, Kind::Counter, "TLS handshakes on the TLS listener, by outcome.");
        for (i, result) in TlsOutcome::LABELS.iter().enumerate() {
            out.sample(name, &[("result", result)], self.worker.sum(|w| w.tls_handshakes[i].get()));
        }
        let name = "fulcrum_tls_requests_total";
        out.family(name, Kind::Counter, "Requests that came over TLS, by TLS version.");
        for (i, version) in ["TLSv1.2", "TLSv1.3"].iter().enumerate() {
            out.sample(name, &[("version", version)], self.worker.sum(|w| w.tls_requests[i].get()));
        }
        let epoch = self.worker.iter().map(|w| w.epoch.get()).max().unwrap_or(0);
        let connections =
            self.worker.sum(|w| u64::try_from(w.client_connections.get()).unwrap_or(0));
        for (name, kind, help, value) in [
            (
                "fulcrum_epoch",
                Kind::Gauge,
                "Newest configuration epoch installed on the workers.",
                u64::try_from(epoch).unwrap_or(0),
            ),
            ("fulcrum_client_connections", Kind::Gauge, "Open client connections.", connections),
            (
                "fulcrum_accept_paused_total",
                Kind::Counter,
                "Times a worker stopped accepting because it had limits.max_connections_per_worker \
                 client connections open.",
                self.worker.sum(|w| w.accept_paused.get()),
            ),
            (
                "fulcrum_client_body_too_slow_total",
                Kind::Counter,
                "Requests cut off (408 or close) because their body arrived slower than \
                 timeouts.client_body_min_rate.",
                self.worker.sum(|w| w.body_too_slow.get()),
            ),
        ] {
            out.family(name, kind, help);
            out.sample(name, &[], value);
        }
    }
}

/// The id of a backend's metrics (for tests and the admin API's counters).
impl BackendMetrics {
    /// The backend these metrics count.
    pub fn id(&self) -> BackendId {
        self.backend.id
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fulcrum_config::BackendUrl;

    fn backend(id: BackendId, port: u16) -> Arc<Backend> {
        let url = BackendUrl::parse(&format!("http://127.0.0.1:{port}")).unwrap();
        Arc::new(Backend::new(id, "api".into(), url, 1, 2))
    }

    #[test]
    fn a_backend_has_one_set_of_series_while_any_worker_knows_it() {
        let m = ProxyMetrics::new(2);
        let a = backend(1, 9001);
        let w0 = m.backend(&a);
        let w1 = m.backend(&a);
        assert!(Arc::ptr_eq(&w0, &w1));
        w0.slot(0).record(200, 400);
        w1.slot(1).record(503, 3000);
        let pool = m.pool(&"api".into());
        assert!(Arc::ptr_eq(&pool, &m.pool(&"api".into())));
        pool.no_backend(0).record(503, 10);
        let text = {
            let r = fulcrum_telemetry::Registry::default();
            let m = Arc::new(m);
            r.register(m.clone());
            let text = r.render();
            drop((w0, w1, pool));
            let after = r.render();
            assert!(!after.contains("127.0.0.1:9001"), "gone with the last view");
            assert!(!after.contains("pool=\"api\""), "gone with the last view");
            text
        };
        let backend_label = "pool=\"api\",backend=\"http://127.0.0.1:9001\"";
        assert!(
            text.contains(&format!("fulcrum_requests_total{{{backend_label},class=\"2xx\"}} 1\n"))
        );
        assert!(
            text.contains(&format!("fulcrum_requests_total{{{backend_label},class=\"5xx\"}} 1\n"))
        );
        assert!(
            text.contains(
                "fulcrum_requests_total{pool=\"api\",backend=\"none\",class=\"5xx\"} 1\n"
            )
        );
        assert!(
            text.contains(&format!(
                "fulcrum_request_duration_seconds_count{{{backend_label}}} 2\n"
            ))
        );
        assert!(text.contains(&format!("fulcrum_backend_healthy{{{backend_label}}} 1\n")));
    }
}
