//! Each worker's counters for each backend, read by the pickers: in-flight requests, a sliding
//! latency window and passive health, in plain `Cell`s on the worker's thread.
//!
//! What other workers must see is written to the worker's own slot of the backend's shared
//! counters ([`fulcrum_model::SharedStats`]) as it changes; the latency window on the worker's
//! tick. The stats live outside the pickers, so switching the algorithm loses nothing.

use std::cell::{Cell, RefCell};
use std::time::Duration;

use fulcrum_model::StatsWriter;

/// Number of buckets in a latency window; each covers `window / BUCKETS`.
pub const BUCKETS: usize = 10;

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

/// A worker's own counters for one backend. In-flight counts, request totals and ejections are
/// published to the backend's shared slot as they change (so other workers' pickers see them at
/// once); the latency window is published by [`publish`](Self::publish) on the worker's tick.
#[derive(Debug)]
pub struct LocalStats {
    in_flight: Cell<u32>,
    requests_total: Cell<u64>,
    window: RefCell<LatencyWindow>,
    consecutive_failures: Cell<u32>,
    ejected_until_ms: Cell<u64>,
    /// This worker's slot of the backend's shared counters.
    shared: StatsWriter,
    /// Window totals over every worker, as of the last publish.
    merged_window: Cell<(u64, u64)>,
    /// This worker's smooth weighted round-robin "current weight" for the backend.
    round_robin_weight: Cell<i64>,
}

impl LocalStats {
    /// Fresh counters with a latency window of `window`, publishing through `shared`.
    pub fn new(window: Duration, shared: StatsWriter) -> Self {
        Self {
            in_flight: Cell::new(0),
            requests_total: Cell::new(0),
            window: RefCell::new(LatencyWindow::new(window)),
            consecutive_failures: Cell::new(0),
            ejected_until_ms: Cell::new(0),
            shared,
            merged_window: Cell::new((0, 0)),
            round_robin_weight: Cell::new(0),
        }
    }

    /// Counts a request sent to the backend; the guard uncounts it when dropped, whatever way
    /// the request ends (success, error, timeout, cancellation or panic).
    #[inline]
    pub fn begin(&self) -> InFlight<'_> {
        let in_flight = self.in_flight.get() + 1;
        let total = self.requests_total.get() + 1;
        self.in_flight.set(in_flight);
        self.requests_total.set(total);
        self.shared.set_in_flight(in_flight, total);
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
            let until = now_ms + eject.as_millis() as u64;
            self.ejected_until_ms.set(until);
            self.shared.set_ejected_until(until);
            return true;
        }
        false
    }

    /// Whether this worker skips the backend at `now_ms`.
    pub fn is_ejected(&self, now_ms: u64) -> bool {
        self.ejected_until_ms.get() > now_ms
    }

    /// In-flight requests on every worker, as of now.
    #[inline]
    pub fn total_in_flight(&self) -> u32 {
        self.in_flight.get() + self.shared.others_in_flight()
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
    pub(crate) fn add_round_robin_weight(&self, delta: i64) -> i64 {
        let current = self.round_robin_weight.get() + delta;
        self.round_robin_weight.set(current);
        current
    }

    /// Publishes this worker's latency-window totals and reads the merged window back (the
    /// worker's tick).
    pub fn publish(&self, now_ms: u64) {
        let (sum, count) = self.window.borrow().totals(now_ms);
        self.shared.set_window(sum, count);
        let (others_sum, others_count) = self.shared.others_window();
        self.merged_window.set((sum + others_sum, count + others_count));
    }
}

/// Decrements a backend's in-flight count when dropped.
#[derive(Debug)]
pub struct InFlight<'a> {
    stats: &'a LocalStats,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let s = self.stats;
        let in_flight = s.in_flight.get().saturating_sub(1);
        s.in_flight.set(in_flight);
        s.shared.set_in_flight(in_flight, s.requests_total.get());
    }
}

#[cfg(test)]
mod tests {
    use fulcrum_model::SharedStats;

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
    fn in_flight_is_seen_by_other_workers_at_once() {
        let shared = SharedStats::new(2);
        let a = LocalStats::new(Duration::from_secs(10), shared.writer(0));
        let b = LocalStats::new(Duration::from_secs(10), shared.writer(1));
        let g1 = a.begin();
        let g2 = b.begin();
        let _g3 = b.begin();
        // No publish: every change is visible to the other worker as it happens.
        assert_eq!((a.total_in_flight(), b.total_in_flight()), (3, 3));
        drop(g2);
        assert_eq!(a.total_in_flight(), 2, "a request that ended frees its backend at once");
        drop(g1);
        assert_eq!((a.local_in_flight(), b.total_in_flight()), (0, 1));
        a.record_response_time(5, Duration::from_micros(100));
        b.record_response_time(5, Duration::from_micros(300));
        b.publish(10);
        a.publish(10);
        assert_eq!(a.merged_avg_us(), Some(200));
        let snap = shared.snapshot(10);
        assert_eq!(
            (snap.in_flight, snap.requests_total, snap.avg_response_us()),
            (1, 3, Some(200))
        );
    }

    #[test]
    fn ejection_after_k_failures() {
        let shared = SharedStats::new(1);
        let s = LocalStats::new(Duration::from_secs(1), shared.writer(0));
        let eject = Duration::from_millis(100);
        assert!(!s.record_connect_failure(0, 2, eject));
        assert!(s.record_connect_failure(1, 2, eject));
        assert!(s.is_ejected(50));
        assert!(shared.snapshot(50).ejected, "the ejection is published at once");
        assert!(!s.is_ejected(101));
        s.record_connect_success();
        assert!(!s.record_connect_failure(200, 2, eject));
    }
}
