//! Access records: the record type, the [`AccessSink`] interface every implementation plugs into,
//! the per-worker bounded queues and the `lb-log` writer thread that drains them.
//!
//! A worker fills a recycled [`AccessRecord`] and `try_push`es it onto its own bounded queue
//! ([`Producer::submit`]): it never blocks and never allocates once warm. When the queue is
//! full the record is dropped and counted. The `lb-log` thread pops records from every queue,
//! hands them to the sink in batches, flushes after each batch and returns the emptied records
//! to the worker's free list. On shutdown it drains every queue before it exits.
//!
//! When the queues are empty the writer naps [`IDLE_SLEEP`] (records arriving meanwhile are
//! written together, after at most that long); when they are still empty after the nap, it
//! sleeps until a worker hands it a record, which wakes it at once. So a busy writer costs no
//! wake-up per record and an idle one costs nothing.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering, fence};
use std::sync::{Arc, OnceLock};
use std::thread::{JoinHandle, Thread};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_queue::ArrayQueue;

use super::metrics::{Collect, Counter, Encoder, Kind, PerWorker};
use crate::{info, warn};

/// Whether a response came from the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CacheStatus {
    /// Served from the cache.
    Hit,
    /// Looked up, not found, forwarded.
    Miss,
    /// Not cacheable (method, headers), forwarded without a lookup.
    Bypass,
    /// The cache is off.
    #[default]
    Off,
}

impl CacheStatus {
    /// The value written in the `cache` field.
    pub fn as_str(self) -> &'static str {
        match self {
            CacheStatus::Hit => "hit",
            CacheStatus::Miss => "miss",
            CacheStatus::Bypass => "bypass",
            CacheStatus::Off => "off",
        }
    }
}

/// How the captured body is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyEncoding {
    /// Valid UTF-8, written as a JSON string.
    Utf8,
    /// Anything else (protobuf, images), base64 (standard alphabet, padded).
    Base64,
}

impl BodyEncoding {
    /// The value written in the `body_encoding` field.
    pub fn as_str(self) -> &'static str {
        match self {
            BodyEncoding::Utf8 => "utf8",
            BodyEncoding::Base64 => "base64",
        }
    }
}

/// One proxied request. Filled on a worker, read on `lb-log`; its buffers are reused.
#[derive(Debug, Clone, Default)]
pub struct AccessRecord {
    /// When the request head was complete, in microseconds since the Unix epoch.
    pub ts_unix_us: u64,
    /// Worker index.
    pub worker: u32,
    /// The epoch the request ran on.
    pub epoch: u64,
    /// Request method.
    pub method: String,
    /// Request target as received (path and query).
    pub path: String,
    /// The pool the request was routed to (`default` when no route matched).
    pub pool: String,
    /// The index of the route that matched, or `None` for the fallback to `default`.
    pub route: Option<u32>,
    /// The backend URL; empty when the request reached none (see [`backend`](Self::backend)).
    pub backend_url: String,
    /// HTTP status sent to the client (499: the client went away before any response).
    pub status: u16,
    /// gRPC status, for gRPC calls (none over HTTP/1.1).
    pub grpc_status: Option<u32>,
    /// From request head complete to the response fully sent.
    pub duration_us: u64,
    /// From request sent upstream to response head received (0 without an upstream response).
    pub upstream_us: u64,
    /// Request head plus body bytes received from the client.
    pub bytes_in: u64,
    /// Response bytes sent to the client.
    pub bytes_out: u64,
    /// Cache outcome.
    pub cache: CacheStatus,
    /// The first `log_body_max_bytes` of the request body.
    pub body: Vec<u8>,
    /// The full request body length.
    pub body_bytes: u64,
    /// The body is binary by its content type (gRPC's framed protobuf): always base64.
    pub binary_body: bool,
    /// The TLS version (`TLSv1.3`) when the request came over TLS.
    pub tls_version: Option<&'static str>,
    /// The server name the TLS client asked for (SNI); empty without TLS or SNI.
    pub sni: String,
    /// The protocol the connection switched to (`websocket`) when the exchange became a
    /// tunnel; empty otherwise (and the `tunnel_*` fields are not written).
    pub upgrade: String,
    /// Bytes the tunnel copied from the client to the backend (after the switch).
    pub tunnel_bytes_client_to_backend: u64,
    /// Bytes the tunnel copied from the backend to the client (after the switch).
    pub tunnel_bytes_backend_to_client: u64,
    /// From the switch to the tunnel's close.
    pub tunnel_duration_us: u64,
    /// Why the tunnel closed: `client`, `backend` (the side that closed first), `idle`,
    /// `drain` or `error`.
    pub tunnel_close: &'static str,
}

impl AccessRecord {
    /// The backend URL, or `None` for a request that reached no backend (or a cache hit).
    pub fn backend(&self) -> Option<&str> {
        (!self.backend_url.is_empty()).then_some(self.backend_url.as_str())
    }

    /// Whether [`body`](Self::body) holds less than the whole body.
    pub fn body_truncated(&self) -> bool {
        self.body_bytes > self.body.len() as u64
    }

    /// The body to write and its encoding: UTF-8 when the captured bytes are valid UTF-8 (a
    /// multi-byte character cut by the capture limit is dropped) and the body is not marked
    /// binary, base64 otherwise.
    pub fn body_text(&self) -> (BodyEncoding, &[u8]) {
        if self.binary_body {
            return (BodyEncoding::Base64, &self.body);
        }
        match std::str::from_utf8(&self.body) {
            Ok(_) => (BodyEncoding::Utf8, &self.body),
            Err(e) if e.error_len().is_none() && self.body_truncated() => {
                (BodyEncoding::Utf8, &self.body[..e.valid_up_to()])
            }
            Err(_) => (BodyEncoding::Base64, &self.body),
        }
    }

    /// Empties the record, keeping its buffers.
    pub fn clear(&mut self) {
        self.method.clear();
        self.path.clear();
        self.pool.clear();
        self.route = None;
        self.backend_url.clear();
        self.body.clear();
        self.status = 0;
        self.grpc_status = None;
        self.duration_us = 0;
        self.upstream_us = 0;
        self.bytes_in = 0;
        self.bytes_out = 0;
        self.body_bytes = 0;
        self.binary_body = false;
        self.cache = CacheStatus::Off;
        self.tls_version = None;
        self.sni.clear();
        self.upgrade.clear();
        self.tunnel_bytes_client_to_backend = 0;
        self.tunnel_bytes_backend_to_client = 0;
        self.tunnel_duration_us = 0;
        self.tunnel_close = "";
    }
}

/// An access-log implementation: formats and writes records. Runs only on `lb-log` (or in a
/// test), never on a worker, so it may block and allocate.
pub trait AccessSink: Send + 'static {
    /// Writes (or buffers) one record.
    fn write(&mut self, record: &AccessRecord) -> io::Result<()>;
    /// Called after each batch and at shutdown: push out whatever is buffered.
    fn flush(&mut self) -> io::Result<()>;
}

impl<S: AccessSink + ?Sized> AccessSink for Box<S> {
    fn write(&mut self, record: &AccessRecord) -> io::Result<()> {
        (**self).write(record)
    }
    fn flush(&mut self) -> io::Result<()> {
        (**self).flush()
    }
}

/// One worker's queue to the writer, plus the free list the writer returns records to.
#[derive(Debug)]
struct WorkerQueue {
    full: ArrayQueue<Box<AccessRecord>>,
    free: ArrayQueue<Box<AccessRecord>>,
}

/// How a producer wakes the writer from its sleep.
#[derive(Debug, Default)]
struct WriterWake {
    /// Set while the writer sleeps until a record arrives (not during its naps).
    sleeping: AtomicBool,
    /// The writer's thread (set by the writer before it first sleeps).
    thread: OnceLock<Thread>,
}

/// A worker's end of its access-log queue. Owned by that worker only.
#[derive(Debug)]
pub struct Producer {
    worker: usize,
    queue: Arc<WorkerQueue>,
    dropped: Arc<DroppedRecords>,
    wake: Arc<WriterWake>,
}

impl Producer {
    /// A record to fill: recycled from the free list when one is there.
    pub fn take(&self) -> Box<AccessRecord> {
        match self.queue.free.pop() {
            Some(mut r) => {
                r.clear();
                r
            }
            None => Box::default(),
        }
    }

    /// Hands a record to the writer (waking it if it sleeps); drops (and counts) it when the
    /// queue is full.
    pub fn submit(&self, record: Box<AccessRecord>) {
        if self.queue.full.push(record).is_err() {
            self.dropped.0.get(self.worker).inc();
            return;
        }
        // Pairs with the fence in `Writer::sleep`: either the writer sees this record before it
        // sleeps, or this sees it asleep.
        fence(Ordering::SeqCst);
        if self.wake.sleeping.load(Ordering::Relaxed)
            && self.wake.sleeping.swap(false, Ordering::Relaxed)
            && let Some(writer) = self.wake.thread.get()
        {
            writer.unpark();
        }
    }
}

/// Access records each worker dropped because the writer fell behind
/// (`fulcrum_access_log_dropped_total`).
#[derive(Debug)]
pub struct DroppedRecords(PerWorker<Counter>);

impl DroppedRecords {
    /// Records dropped so far, over every worker.
    pub fn total(&self) -> u64 {
        self.0.sum(Counter::get)
    }
}

impl Collect for DroppedRecords {
    fn collect(&self, out: &mut Encoder) {
        let name = "fulcrum_access_log_dropped_total";
        out.family(name, Kind::Counter, "Access records dropped because the writer fell behind.");
        out.sample(name, &[], self.total());
    }
}

/// The running `lb-log` writer.
#[derive(Debug)]
pub struct AccessLog {
    queues: Vec<Arc<WorkerQueue>>,
    dropped: Arc<DroppedRecords>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    done: crossbeam_channel::Receiver<()>,
}

/// How long the writer naps when every queue was empty, before it sleeps until a record comes.
const IDLE_SLEEP: Duration = Duration::from_millis(2);
/// How often drops are reported as a warning (when there were new ones).
const DROP_WARN_EVERY: Duration = Duration::from_secs(10);
/// Records handed to the sink between two flushes at most.
const BATCH: usize = 1024;

impl AccessLog {
    /// Starts `lb-log` writing to `sink`, with one queue of `capacity` records per worker.
    /// Returns the writer and each worker's producer, by worker index.
    pub fn start(
        sink: Box<dyn AccessSink>,
        workers: usize,
        capacity: usize,
    ) -> io::Result<(Self, Vec<Producer>)> {
        let dropped = Arc::new(DroppedRecords(PerWorker::new(workers)));
        let queues: Vec<Arc<WorkerQueue>> = (0..workers)
            .map(|_| {
                Arc::new(WorkerQueue {
                    full: ArrayQueue::new(capacity.max(1)),
                    free: ArrayQueue::new(capacity.max(1)),
                })
            })
            .collect();
        let wake = Arc::new(WriterWake::default());
        let producers = queues
            .iter()
            .enumerate()
            .map(|(worker, queue)| Producer {
                worker,
                queue: queue.clone(),
                dropped: dropped.clone(),
                wake: wake.clone(),
            })
            .collect();
        let stop = Arc::new(AtomicBool::new(false));
        let (done_tx, done) = crossbeam_channel::bounded(1);
        let writer =
            Writer { queues: queues.clone(), dropped: dropped.clone(), stop: stop.clone(), wake };
        let thread = std::thread::Builder::new().name("lb-log".into()).spawn(move || {
            writer.run(sink);
            let _ = done_tx.send(());
        })?;
        Ok((Self { queues, dropped, stop, thread: Some(thread), done }, producers))
    }

    /// The dropped-records counter, for the metrics registry.
    pub fn dropped(&self) -> Arc<DroppedRecords> {
        self.dropped.clone()
    }

    /// Records waiting in the queues.
    pub fn pending(&self) -> usize {
        self.queues.iter().map(|q| q.full.len()).sum()
    }

    /// Drains every queue into the sink, flushes it and stops the thread. Call after the
    /// workers have exited, so nothing is submitted meanwhile. Waits at most `deadline` for a
    /// sink that is stuck (a full pipe nobody reads): then gives up, with a warning.
    pub fn shutdown(mut self, deadline: Duration) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            thread.thread().unpark();
            if self.done.recv_timeout(deadline).is_ok() {
                let _ = thread.join();
            } else {
                warn!(
                    "access log writer did not finish in time; records still queued are lost",
                    pending = self.pending(),
                    dropped = self.dropped.total()
                );
            }
        }
    }
}

struct Writer {
    queues: Vec<Arc<WorkerQueue>>,
    dropped: Arc<DroppedRecords>,
    stop: Arc<AtomicBool>,
    wake: Arc<WriterWake>,
}

impl Writer {
    fn run(self, mut sink: Box<dyn AccessSink>) {
        let _ = self.wake.thread.set(std::thread::current());
        let mut written: u64 = 0;
        let mut errors: u64 = 0;
        let mut warned_drops = 0;
        let mut last_warn = Instant::now();
        let mut napped = false;
        loop {
            // Read the flag before draining: whatever was queued before it was set is written.
            let stopping = self.stop.load(Ordering::Acquire);
            let mut batch = 0;
            for q in &self.queues {
                while let Some(record) = q.full.pop() {
                    if sink.write(&record).is_err() {
                        errors += 1;
                    }
                    written += 1;
                    let _ = q.free.push(record);
                    batch += 1;
                    if batch % BATCH == 0 && sink.flush().is_err() {
                        errors += 1;
                    }
                }
            }
            if batch > 0 && sink.flush().is_err() {
                errors += 1;
            }
            if last_warn.elapsed() >= DROP_WARN_EVERY {
                last_warn = Instant::now();
                let dropped = self.dropped.total();
                if dropped > warned_drops || errors > 0 {
                    warn!(
                        "access log falling behind: records dropped",
                        dropped_since_last = dropped - warned_drops,
                        dropped_total = dropped,
                        write_errors = errors
                    );
                    warned_drops = dropped;
                    errors = 0;
                }
            }
            if stopping && batch == 0 {
                break;
            }
            if batch > 0 {
                napped = false;
            } else if !napped {
                std::thread::park_timeout(IDLE_SLEEP);
                napped = true;
            } else {
                // Drops not reported yet are reported on time.
                let unreported = self.dropped.total() > warned_drops || errors > 0;
                self.sleep(unreported.then(|| DROP_WARN_EVERY.saturating_sub(last_warn.elapsed())));
                napped = false;
            }
        }
        let _ = sink.flush();
        info!(
            "access log stopped",
            written = written,
            dropped = self.dropped.total(),
            write_errors = errors
        );
    }
}

impl Writer {
    /// Sleeps until a producer hands over a record (or `at_most`, or shutdown), unless one
    /// arrived meanwhile.
    fn sleep(&self, at_most: Option<Duration>) {
        self.wake.sleeping.store(true, Ordering::Relaxed);
        // Pairs with the fence in `Producer::submit`.
        fence(Ordering::SeqCst);
        let empty = self.queues.iter().all(|q| q.full.is_empty());
        if empty && !self.stop.load(Ordering::Acquire) {
            match at_most {
                Some(d) => std::thread::park_timeout(d),
                None => std::thread::park(),
            }
        }
        self.wake.sleeping.store(false, Ordering::Relaxed);
    }
}

/// Microseconds since the Unix epoch, now.
pub fn unix_micros_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sends each record's path to the test.
    struct ChannelSink(crossbeam_channel::Sender<String>);

    impl AccessSink for ChannelSink {
        fn write(&mut self, record: &AccessRecord) -> io::Result<()> {
            let _ = self.0.send(record.path.clone());
            Ok(())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn an_idle_writer_sleeps_until_a_record_wakes_it() {
        let (tx, rx) = crossbeam_channel::unbounded();
        let (log, producers) = AccessLog::start(Box::new(ChannelSink(tx)), 1, 8).unwrap();
        let wake = producers[0].wake.clone();
        for round in 0..3 {
            // Idle: after its nap the writer sleeps with no timeout.
            let deadline = Instant::now() + Duration::from_secs(5);
            while !wake.sleeping.load(Ordering::Relaxed) {
                assert!(Instant::now() < deadline, "the writer never went to sleep");
                std::thread::yield_now();
            }
            let mut record = producers[0].take();
            record.path = format!("/{round}");
            producers[0].submit(record);
            let written = rx.recv_timeout(Duration::from_secs(5)).expect("record written");
            assert_eq!(written, format!("/{round}"));
        }
        log.shutdown(Duration::from_secs(5));
    }

    #[test]
    fn body_encodings() {
        let mut r = AccessRecord { body: b"hi".to_vec(), body_bytes: 2, ..Default::default() };
        assert_eq!(r.body_text(), (BodyEncoding::Utf8, &b"hi"[..]));
        r.body = vec![0xff, 0x00];
        assert_eq!(r.body_text().0, BodyEncoding::Base64);
        // "é" cut in half by the cap: the half character is dropped, still UTF-8.
        r.body = "aé".as_bytes()[..2].to_vec();
        r.body_bytes = 3;
        assert_eq!(r.body_text(), (BodyEncoding::Utf8, &b"a"[..]));
        // A binary body (gRPC) is base64 even when its bytes happen to be UTF-8.
        r.binary_body = true;
        assert_eq!(r.body_text(), (BodyEncoding::Base64, &"aé".as_bytes()[..2]));
    }
}
