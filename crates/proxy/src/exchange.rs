//! The data path's view of telemetry: a worker's [`WorkerTelemetry`] and the per-request
//! [`ExchangeLog`] that the proxy fills as the exchange runs (backend, status, timings, the body
//! as it streams past) and hands back once it is over: one access record, the metrics, the end
//! of the request's spans.

use std::cell::Cell;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fulcrum_http::h1::BodyTap;
use fulcrum_telemetry::{AccessRecord, CacheStatus, Producer, RequestTrace, unix_micros_now};

use crate::metrics::{ProxyMetrics, RequestSlot, WorkerSlot};
use crate::transport::ConnInfo;
use crate::tunnel::TunnelReport;

/// What a worker is given at spawn for its access log and spans.
#[derive(Debug, Default)]
pub struct WorkerTelemetrySpec {
    /// This worker's access-log queue, when the access log is on.
    pub producer: Option<Producer>,
    /// Request body bytes captured per record.
    pub body_max: usize,
    /// Fraction of requests traced (0 = off).
    pub trace_rate: f64,
}

/// One worker's telemetry state. Lives in the worker's context; never shared.
#[derive(Debug)]
pub struct WorkerTelemetry {
    index: usize,
    /// The data path's metrics (this worker writes its own slots).
    pub metrics: Arc<ProxyMetrics>,
    producer: Option<Producer>,
    body_max: usize,
    trace_rate: f64,
}

impl WorkerTelemetry {
    /// Worker `index`'s telemetry.
    pub fn new(index: usize, spec: WorkerTelemetrySpec, metrics: Arc<ProxyMetrics>) -> Self {
        Self {
            index,
            metrics,
            producer: spec.producer,
            body_max: spec.body_max,
            trace_rate: spec.trace_rate,
        }
    }

    /// This worker's own counters.
    #[inline]
    pub fn worker(&self) -> &WorkerSlot {
        self.metrics.worker(self.index)
    }

    /// Starts the log of one exchange. `head` is the request head about to be forwarded (it
    /// starts with the request line; a `traceparent` may be rewritten or added);
    /// `head_len` is the size of the head as received.
    pub fn begin(
        &self,
        head: &mut Vec<u8>,
        head_len: usize,
        epoch: u64,
        conn: &ConnInfo,
    ) -> ExchangeLog {
        if let Some(version) = conn.tls_version() {
            self.worker().tls_request(version);
        }
        let trace = if self.trace_rate > 0.0 {
            RequestTrace::begin(self.trace_rate, head)
        } else {
            RequestTrace::off()
        };
        let record = self.producer.as_ref().map(|p| {
            let mut r = p.take();
            r.ts_unix_us = unix_micros_now();
            r.worker = self.index as u32;
            r.epoch = epoch;
            let line_end = head.iter().position(|&b| b == b'\r').unwrap_or(head.len());
            let mut parts = head[..line_end].splitn(3, |&b| b == b' ');
            let method = parts.next().unwrap_or_default();
            let path = parts.next().unwrap_or_default();
            r.method.push_str(std::str::from_utf8(method).unwrap_or("?"));
            r.path.push_str(std::str::from_utf8(path).unwrap_or("?"));
            self.note_tls(&mut r, conn);
            r
        });
        ExchangeLog {
            capture: BodyCapture { record, max: self.body_max, total: 0 },
            note: ExchangeNote::new(trace, head_len),
        }
    }

    /// Starts the log of one HTTP/2 stream (a gRPC call or a plain HTTP/2 request), whose
    /// request has no HTTP/1.1 head: `method` and `path` as received, its `traceparent` value
    /// if any, and `head_len`, the size of its header list. Also returns, when the stream is
    /// traced, the `traceparent` value to forward upstream.
    pub fn begin_stream(
        &self,
        method: &str,
        path: &str,
        traceparent: Option<&[u8]>,
        head_len: usize,
        epoch: u64,
        conn: &ConnInfo,
    ) -> (ExchangeLog, Option<String>) {
        if let Some(version) = conn.tls_version() {
            self.worker().tls_request(version);
        }
        let (trace, forward) = if self.trace_rate > 0.0 {
            RequestTrace::begin_value(self.trace_rate, traceparent)
        } else {
            (RequestTrace::off(), None)
        };
        let record = self.producer.as_ref().map(|p| {
            let mut r = p.take();
            r.ts_unix_us = unix_micros_now();
            r.worker = self.index as u32;
            r.epoch = epoch;
            r.method.push_str(method);
            r.path.push_str(path);
            self.note_tls(&mut r, conn);
            r
        });
        let log = ExchangeLog {
            capture: BodyCapture { record, max: self.body_max, total: 0 },
            note: ExchangeNote::new(trace, head_len),
        };
        (log, forward)
    }

    /// Notes a TLS connection's version and SNI on a record, and counts the request by version.
    fn note_tls(&self, record: &mut AccessRecord, conn: &ConnInfo) {
        if let Some(version) = conn.tls_version() {
            record.tls_version = Some(version);
            record.sni.push_str(conn.sni().unwrap_or(""));
        }
    }

    /// Ends an exchange: counts it in `target`'s metrics slot and queues its access record.
    /// `status` is what the client got.
    pub fn finish(&self, log: ExchangeLog, target: Target<'_>, status: u16) {
        let ExchangeLog { capture, note } = log;
        let duration_us =
            fulcrum_util::now().saturating_duration_since(note.start).as_micros() as u64;
        target.slot.record(status, duration_us);
        if let (Some(mut r), Some(p)) = (capture.record, &self.producer) {
            r.pool.push_str(target.pool);
            r.route = target.route;
            if let Some(url) = target.backend {
                r.backend_url.push_str(url);
            }
            r.status = status;
            r.duration_us = duration_us;
            r.upstream_us = note.upstream_us.get();
            r.bytes_in = note.bytes_in + capture.total;
            r.bytes_out = note.bytes_out.get();
            r.body_bytes = capture.total;
            r.cache = note.cache.get();
            r.grpc_status = note.grpc_status.get();
            p.submit(r);
        }
        note.trace.note("status", || status.to_string());
    }
}

/// Where an exchange went: its pool and route, and the metrics slot it counts in.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    /// The pool's name.
    pub pool: &'a str,
    /// The index of the route that chose it (`None`: the fallback to `default`).
    pub route: Option<u32>,
    /// This worker's slot of the backend that answered, or of the pool's `none` row.
    pub slot: &'a RequestSlot,
    /// The backend's URL, when one answered.
    pub backend: Option<&'a str>,
}

/// What the proxy notes about one exchange while it runs: the request body as it streams
/// past ([`capture`](Self::capture), lent to the upload) and everything else
/// ([`note`](Self::note), shared with the response relay).
#[derive(Debug)]
pub struct ExchangeLog {
    /// Sees the request body.
    pub capture: BodyCapture,
    /// Backend, status, timings, spans.
    pub note: ExchangeNote,
}

impl ExchangeLog {
    /// The exchange became a tunnel to `protocol` that has now closed: its bytes each way,
    /// duration and close go in the record.
    pub fn note_tunnel(&mut self, protocol: &str, report: &TunnelReport) {
        if let Some(r) = self.capture.record.as_deref_mut() {
            r.upgrade.push_str(protocol);
            r.tunnel_bytes_client_to_backend = report.client_to_backend;
            r.tunnel_bytes_backend_to_client = report.backend_to_client;
            r.tunnel_duration_us = report.duration.as_micros() as u64;
            r.tunnel_close = report.end.as_str();
        }
    }
}

/// The request body as it streams past: counted in full, its first bytes kept for the record.
#[derive(Debug)]
pub struct BodyCapture {
    record: Option<Box<AccessRecord>>,
    max: usize,
    total: u64,
}

impl BodyCapture {
    /// Marks the body binary by its content type (gRPC): it is logged as base64 whatever its
    /// bytes.
    pub fn set_binary(&mut self) {
        if let Some(r) = self.record.as_deref_mut() {
            r.binary_body = true;
        }
    }

    /// Forgets the body seen so far (the request is being sent again from the start).
    pub fn reset(&mut self) {
        self.total = 0;
        if let Some(r) = self.record.as_deref_mut() {
            r.body.clear();
        }
    }
}

impl BodyTap for BodyCapture {
    #[inline]
    fn tap(&mut self, bytes: &[u8]) {
        self.total += bytes.len() as u64;
        if let Some(r) = self.record.as_deref_mut() {
            let room = self.max.saturating_sub(r.body.len());
            if room > 0 {
                r.body.extend_from_slice(&bytes[..bytes.len().min(room)]);
            }
        }
    }
}

/// Facts about an exchange, noted through a shared reference as it runs.
#[derive(Debug)]
pub struct ExchangeNote {
    start: Instant,
    trace: RequestTrace,
    bytes_in: u64,
    backend: Cell<Option<usize>>,
    status: Cell<u16>,
    upstream_us: Cell<u64>,
    bytes_out: Cell<u64>,
    cache: Cell<CacheStatus>,
    grpc_status: Cell<Option<u32>>,
}

impl ExchangeNote {
    /// A note for an exchange that starts now with a request head of `head_len` bytes.
    fn new(trace: RequestTrace, head_len: usize) -> Self {
        Self {
            start: fulcrum_util::now(),
            trace,
            bytes_in: head_len as u64,
            backend: Cell::new(None),
            status: Cell::new(0),
            upstream_us: Cell::new(0),
            bytes_out: Cell::new(0),
            cache: Cell::new(CacheStatus::Off),
            grpc_status: Cell::new(None),
        }
    }

    /// When the exchange started, on the process clock ([`fulcrum_util::now_ms`]).
    pub(crate) fn start_ms(&self) -> u64 {
        fulcrum_util::ms_at(self.start)
    }

    /// The request is being sent to backend `index` (in its pool's backends).
    #[inline]
    pub fn set_backend(&self, index: usize) {
        self.backend.set(Some(index));
    }

    /// How the response cache treated this exchange (`off` unless set).
    #[inline]
    pub fn set_cache(&self, status: CacheStatus) {
        self.cache.set(status);
    }

    /// The gRPC status the client got (from the backend's trailers or trailers-only headers,
    /// or generated by Fulcrum). Unset for plain HTTP.
    #[inline]
    pub fn set_grpc_status(&self, code: u32) {
        self.grpc_status.set(Some(code));
    }

    /// The gRPC status noted so far.
    pub fn grpc_status(&self) -> Option<u32> {
        self.grpc_status.get()
    }

    /// The backend the request was last sent to.
    pub fn backend(&self) -> Option<usize> {
        self.backend.get()
    }

    /// A response head arrived: its status, and the time since the request was sent.
    #[inline]
    pub fn response(&self, status: u16, upstream: Duration) {
        self.status.set(status);
        self.upstream_us.set(upstream.as_micros() as u64);
    }

    /// The status relayed from the backend (0 until a response head arrived).
    pub fn status(&self) -> u16 {
        self.status.get()
    }

    /// Counts response bytes written to the client.
    #[inline]
    pub fn sent(&self, bytes: u64) {
        self.bytes_out.set(self.bytes_out.get() + bytes);
    }

    /// A span for one phase of the request (a no-op unless the request is traced); the phase
    /// ends when the returned guard drops.
    #[inline]
    pub fn phase(&self, name: &'static str) -> Phase {
        Phase(self.trace.phase(name))
    }
}

/// Ends a phase span when dropped.
#[must_use = "the phase ends when this is dropped"]
pub struct Phase(#[allow(dead_code)] Option<Box<fastrace::Span>>);

impl std::fmt::Debug for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Phase")
    }
}
