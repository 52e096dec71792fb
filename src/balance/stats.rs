//! Per-backend counters the algorithms read: in-flight requests, a sliding latency window and
//! passive health.
//!
//! Each worker owns a [`LocalStats`] per backend and updates it with plain `Cell`s on the hot
//! path. Every `stats_publish_ms` the worker's ticker copies its totals into its own
//! cache-padded slot of the backend's [`SharedStats`] (one writer per slot, so no contention) and
//! reads the other workers' slots back. Pickers therefore see other cores' counts a few
//! milliseconds stale, which the design allows, without any shared write per request.
//! The stats live outside the pickers, so switching the algorithm loses nothing.

use std::cell::{Cell, RefCell};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use crossbeam_utils::CachePadded;

/// Number of buckets in a latency window; each covers `window / BUCKETS`.
pub const BUCKETS: usize = 10;

/// One worker's published view of one backend.
#[derive(Debug, Default)]
struct Slot {
    in_flight: AtomicU32,
    window_sum_us: AtomicU64,
    window_count: AtomicU64,
    requests_total: AtomicU64,
    /// Milliseconds since the process epoch until which this worker ejected the backend; 0 = not.
    ejected_until_ms: AtomicU64,
}

/// Cross-worker view of one backend: one padded slot per worker.
#[derive(Debug)]
pub struct SharedStats {
    slots: Box<[CachePadded<Slot>]>,
}

/// The merged counters of one backend, summed over workers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Requests in flight on every worker.
    pub in_flight: u32,
    /// Sum of response times in the window, in microseconds.
    pub window_sum_us: u64,
    /// Samples in the window.
    pub window_count: u64,
    /// Requests sent to the backend since it was added.
    pub requests_total: u64,
    /// Whether any worker currently ejects the backend.
    pub ejected: bool,
}

impl StatsSnapshot {
    /// Average response time in the window, if there are samples.
    pub fn avg_response_us(&self) -> Option<u64> {
        self.window_sum_us.checked_div(self.window_count)
    }
}

impl SharedStats {
    /// Slots for `workers` workers.
    pub fn new(workers: usize) -> Self {
        Self { slots: (0..workers.max(1)).map(|_| CachePadded::new(Slot::default())).collect() }
    }

    /// Sums every worker's slot (control thread, admin views).
    pub fn snapshot(&self, now_ms: u64) -> StatsSnapshot {
        let mut s = StatsSnapshot::default();
        for slot in self.slots.iter() {
            s.in_flight += slot.in_flight.load(Relaxed);
            s.window_sum_us += slot.window_sum_us.load(Relaxed);
            s.window_count += slot.window_count.load(Relaxed);
            s.requests_total += slot.requests_total.load(Relaxed);
            s.ejected |= slot.ejected_until_ms.load(Relaxed) > now_ms;
        }
        s
    }
}

/// A ring of time buckets: samples older than the window age out bucket by bucket.
#[derive(Debug)]
pub struct LatencyWindow {
    bucket_ms: u64,
    /// (bucket index since the clock origin, sum of microseconds, count)
    buckets: [(u64, u64, u64); BUCKETS],
}

impl LatencyWindow {
    /// A window of `window` split into [`BUCKETS`] buckets.
    pub fn new(window: Duration) -> Self {
        let bucket_ms = (window.as_millis() as u64 / BUCKETS as u64).max(1);
        Self { bucket_ms, buckets: [(u64::MAX, 0, 0); BUCKETS] }
    }

    /// Adds one sample taken at `now_ms`.
    pub fn record(&mut self, now_ms: u64, micros: u64) {
        let index = now_ms / self.bucket_ms;
        let bucket = &mut self.buckets[(index % BUCKETS as u64) as usize];
        if bucket.0 != index {
            *bucket = (index, 0, 0);
        }
        bucket.1 += micros;
        bucket.2 += 1;
    }

    /// Sum and count of the samples still inside the window at `now_ms`.
    pub fn totals(&self, now_ms: u64) -> (u64, u64) {
        let current = now_ms / self.bucket_ms;
        let oldest = current.saturating_sub(BUCKETS as u64 - 1);
        self.buckets
            .iter()
            .filter(|(index, _, _)| *index != u64::MAX && *index >= oldest && *index <= current)
            .fold((0, 0), |(sum, count), (_, s, c)| (sum + s, count + c))
    }
}

/// A worker's own counters for one backend, plus its last view of the other workers.
#[derive(Debug)]
pub struct LocalStats {
    in_flight: Cell<u32>,
    requests_total: Cell<u64>,
    window: RefCell<LatencyWindow>,
    consecutive_failures: Cell<u32>,
    ejected_until_ms: Cell<u64>,
    /// In-flight on the other workers, as of the last publish.
    remote_in_flight: Cell<u32>,
    /// Window totals over every worker, as of the last publish.
    merged_window: Cell<(u64, u64)>,
    /// This worker's smooth weighted round-robin "current weight" for the backend.
    round_robin_weight: Cell<i64>,
}

impl LocalStats {
    /// Fresh counters with a latency window of `window`.
    pub fn new(window: Duration) -> Self {
        Self {
            in_flight: Cell::new(0),
            requests_total: Cell::new(0),
            window: RefCell::new(LatencyWindow::new(window)),
            consecutive_failures: Cell::new(0),
            ejected_until_ms: Cell::new(0),
            remote_in_flight: Cell::new(0),
            merged_window: Cell::new((0, 0)),
            round_robin_weight: Cell::new(0),
        }
    }

    /// Counts a request sent to the backend; the guard uncounts it when dropped, whatever way
    /// the request ends (success, error, timeout, cancellation or panic).
    pub fn begin(&self) -> InFlight<'_> {
        self.in_flight.set(self.in_flight.get() + 1);
        self.requests_total.set(self.requests_total.get() + 1);
        InFlight { stats: self }
    }

    /// Records the time from request sent to response head received.
    pub fn record_response_time(&self, now_ms: u64, elapsed: Duration) {
        let micros = elapsed.as_micros().min(u128::from(u64::MAX)) as u64;
        self.window.borrow_mut().record(now_ms, micros);
    }

    /// A successful connect clears the failure streak.
    pub fn record_connect_success(&self) {
        self.consecutive_failures.set(0);
    }

    /// A failed connect; ejects the backend for `eject` after `max_fails` in a row.
    /// Returns `true` when this failure ejected it.
    pub fn record_connect_failure(&self, now_ms: u64, max_fails: u32, eject: Duration) -> bool {
        let failures = self.consecutive_failures.get() + 1;
        self.consecutive_failures.set(failures);
        if failures >= max_fails {
            self.consecutive_failures.set(0);
            self.ejected_until_ms.set(now_ms + eject.as_millis() as u64);
            return true;
        }
        false
    }

    /// Whether this worker skips the backend at `now_ms`.
    pub fn is_ejected(&self, now_ms: u64) -> bool {
        self.ejected_until_ms.get() > now_ms
    }

    /// In-flight requests on every worker (others as of the last publish).
    pub fn total_in_flight(&self) -> u32 {
        self.in_flight.get() + self.remote_in_flight.get()
    }

    /// In-flight requests on this worker.
    pub fn local_in_flight(&self) -> u32 {
        self.in_flight.get()
    }

    /// Average response time over every worker's window, as of the last publish.
    pub fn merged_avg_us(&self) -> Option<u64> {
        let (sum, count) = self.merged_window.get();
        sum.checked_div(count)
    }

    /// Adds `delta` to the smooth weighted round-robin current weight; returns the new value.
    pub(super) fn add_round_robin_weight(&self, delta: i64) -> i64 {
        let current = self.round_robin_weight.get() + delta;
        self.round_robin_weight.set(current);
        current
    }

    /// Writes this worker's totals into its slot and reads the others back.
    pub fn publish(&self, shared: &SharedStats, worker: usize, now_ms: u64) {
        let (sum, count) = self.window.borrow().totals(now_ms);
        if let Some(own) = shared.slots.get(worker) {
            own.in_flight.store(self.in_flight.get(), Relaxed);
            own.window_sum_us.store(sum, Relaxed);
            own.window_count.store(count, Relaxed);
            own.requests_total.store(self.requests_total.get(), Relaxed);
            own.ejected_until_ms.store(self.ejected_until_ms.get(), Relaxed);
        }
        let (mut remote, mut all_sum, mut all_count) = (0, sum, count);
        for (i, slot) in shared.slots.iter().enumerate() {
            if i != worker {
                remote += slot.in_flight.load(Relaxed);
                all_sum += slot.window_sum_us.load(Relaxed);
                all_count += slot.window_count.load(Relaxed);
            }
        }
        self.remote_in_flight.set(remote);
        self.merged_window.set((all_sum, all_count));
    }
}

/// Decrements a backend's in-flight count when dropped.
#[derive(Debug)]
pub struct InFlight<'a> {
    stats: &'a LocalStats,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.stats.in_flight.set(self.stats.in_flight.get().saturating_sub(1));
    }
}

/// Milliseconds on a monotonic clock shared by every thread of the process.
pub fn now_ms() -> u64 {
    static ORIGIN: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    ORIGIN.get_or_init(Instant::now).elapsed().as_millis() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_ages_out_bucket_by_bucket() {
        let mut w = LatencyWindow::new(Duration::from_millis(1000)); // 100 ms buckets
        w.record(0, 10);
        w.record(50, 30);
        w.record(550, 100);
        assert_eq!(w.totals(600), (140, 3));
        assert_eq!(w.totals(999), (140, 3));
        assert_eq!(w.totals(1000), (100, 1), "bucket 0 aged out");
        assert_eq!(w.totals(1600), (0, 0));
        w.record(1600, 7);
        assert_eq!(w.totals(1600), (7, 1));
    }

    #[test]
    fn in_flight_guard_and_publish_merge() {
        let shared = SharedStats::new(2);
        let a = LocalStats::new(Duration::from_secs(10));
        let b = LocalStats::new(Duration::from_secs(10));
        let g1 = a.begin();
        let _g2 = b.begin();
        let _g3 = b.begin();
        a.record_response_time(5, Duration::from_micros(100));
        b.record_response_time(5, Duration::from_micros(300));
        b.publish(&shared, 1, 10);
        a.publish(&shared, 0, 10);
        assert_eq!(a.total_in_flight(), 3);
        assert_eq!(a.merged_avg_us(), Some(200));
        drop(g1);
        assert_eq!(a.local_in_flight(), 0);
        let snap = shared.snapshot(10);
        assert_eq!(
            (snap.in_flight, snap.requests_total, snap.avg_response_us()),
            (3, 3, Some(200))
        );
    }

    #[test]
    fn ejection_after_k_failures() {
        let s = LocalStats::new(Duration::from_secs(1));
        let eject = Duration::from_millis(100);
        assert!(!s.record_connect_failure(0, 2, eject));
        assert!(s.record_connect_failure(1, 2, eject));
        assert!(s.is_ejected(50));
        assert!(!s.is_ejected(101));
        s.record_connect_success();
        assert!(!s.record_connect_failure(200, 2, eject));
    }
}
