//! Each worker's counters for each backend, read by the pickers: in-flight requests, a sliding
//! latency window and passive health, in plain `Cell`s on the worker's thread.
//!
//! What other workers must see is written to the worker's own slot of the backend's shared
//! counters ([`fulcrum_model::SharedStats`]) as it changes, the latency window included (and
//! again by the worker's ticker when a bucket of it ages out). The other workers' windows are
//! read back at most every `balance.stats_publish_ms`, when a `response_time` pick needs them.
//! The stats live outside the pickers, so switching the algorithm loses nothing.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use fulcrum_model::StatsWriter;
use fulcrum_util::Deadline;

/// Number of buckets in a latency window; each covers `window / BUCKETS`.
pub const BUCKETS: usize = 10;

/// A ring of time buckets: samples older than the window age out bucket by bucket.
#[derive(Debug)]
pub struct LatencyWindow {
    bucket_ms: u64,
    /// (bucket index since the clock origin, sum of microseconds, count)
    buckets: [(u64, u64, u64); BUCKETS],
    /// [`totals`](Self::totals) as of one bucket index, (index, sum, count): kept up to date
    /// by [`record`](Self::record), so a sample in the same bucket as the last one does not
    /// sum the whole window again.
    last_totals: (u64, u64, u64),
}

impl LatencyWindow {
    /// A window of `window` split into [`BUCKETS`] buckets.
    pub fn new(window: Duration) -> Self {
        let bucket_ms = (window.as_millis() as u64 / BUCKETS as u64).max(1);
        Self { bucket_ms, buckets: [(u64::MAX, 0, 0); BUCKETS], last_totals: (u64::MAX, 0, 0) }
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
        if self.last_totals.0 == index {
            self.last_totals.1 += micros;
            self.last_totals.2 += 1;
        } else {
            let (sum, count) = self.sum_at(index);
            self.last_totals = (index, sum, count);
        }
    }

    /// The first time after `now_ms` at which [`totals`](Self::totals) changes with no new
    /// sample (the oldest bucket with samples leaves the window); `None` when it holds none.
    pub fn next_change(&self, now_ms: u64) -> Option<u64> {
        let current = now_ms / self.bucket_ms;
        let oldest = current.saturating_sub(BUCKETS as u64 - 1);
        self.buckets
            .iter()
            .filter(|(index, _, count)| {
                *index != u64::MAX && *count > 0 && *index >= oldest && *index <= current
            })
            .map(|(index, _, _)| (index + BUCKETS as u64) * self.bucket_ms)
            .min()
    }

    /// Sum and count of the samples still inside the window at `now_ms`.
    pub fn totals(&self, now_ms: u64) -> (u64, u64) {
        let current = now_ms / self.bucket_ms;
        match self.last_totals {
            (index, sum, count) if index == current => (sum, count),
            _ => self.sum_at(current),
        }
    }

    /// Sum and count of the samples inside the window while the clock is in bucket `current`.
    fn sum_at(&self, current: u64) -> (u64, u64) {
        let oldest = current.saturating_sub(BUCKETS as u64 - 1);
        self.buckets
            .iter()
            .filter(|(index, _, _)| *index != u64::MAX && *index >= oldest && *index <= current)
            .fold((0, 0), |(sum, count), (_, s, c)| (sum + s, count + c))
    }
}

/// A worker's own counters for one backend. In-flight counts, request totals, ejections and the
/// latency window are published to the backend's shared slot as they change (so other workers'
/// pickers see them at once); the window again by [`publish`](Self::publish) when it ages.
#[derive(Debug)]
pub struct LocalStats {
    in_flight: Cell<u32>,
    requests_total: Cell<u64>,
    window: RefCell<LatencyWindow>,
    consecutive_failures: Cell<u32>,
    ejected_until_ms: Cell<u64>,
    /// This worker's slot of the backend's shared counters.
    shared: StatsWriter,
    /// This worker's window totals, as last published.
    own_window: Cell<(u64, u64)>,
    /// The other workers' window totals, as last read, and when (process-clock ms).
    others_window: Cell<(u64, u64)>,
    others_read_at: Cell<Option<u64>>,
    /// The least time between two reads of the other workers' windows
    /// (`balance.stats_publish_ms`).
    merge_every_ms: u64,
    /// The worker's upkeep deadline: a new sample is due for republishing when it ages out.
    upkeep: Option<Rc<Deadline>>,
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
            own_window: Cell::new((0, 0)),
            others_window: Cell::new((0, 0)),
            others_read_at: Cell::new(None),
            merge_every_ms: DEFAULT_MERGE_EVERY_MS,
            upkeep: None,
            round_robin_weight: Cell::new(0),
        }
    }

    /// Reads the other workers' windows at most every `every` (`balance.stats_publish_ms`;
    /// 5 ms unless set).
    pub fn merge_every(mut self, every: Duration) -> Self {
        self.merge_every_ms = u64::try_from(every.as_millis()).unwrap_or(u64::MAX);
        self
    }

    /// Tells the worker's ticker (through `deadline`) when a sample ages out, so that the
    /// window is published again then (see [`publish`](Self::publish)).
    pub fn upkeep(mut self, deadline: Rc<Deadline>) -> Self {
        self.upkeep = Some(deadline);
        self
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

    /// Records the time from request sent to response head received and publishes the window;
    /// returns when this sample ages out of it (process-clock ms), the latest the window must
    /// be published again.
    pub fn record_response_time(&self, now_ms: u64, elapsed: Duration) -> u64 {
        let micros = elapsed.as_micros().min(u128::from(u64::MAX)) as u64;
        let mut window = self.window.borrow_mut();
        window.record(now_ms, micros);
        self.set_own(window.totals(now_ms));
        let ages_out = (now_ms / window.bucket_ms + BUCKETS as u64) * window.bucket_ms;
        if let Some(upkeep) = &self.upkeep {
            upkeep.need_by(ages_out);
        }
        ages_out
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

    /// Average response time over every worker's window: this worker's as of its last sample
    /// (or ageing), the others' as of the last [`refresh_merged`](Self::refresh_merged).
    pub fn merged_avg_us(&self) -> Option<u64> {
        let (own_sum, own_count) = self.own_window.get();
        let (sum, count) = self.others_window.get();
        (own_sum + sum).checked_div(own_count + count)
    }

    /// Reads the other workers' windows again if the last read is `merge_every` old (a
    /// `response_time` pick at `now_ms`): other workers' averages are never staler than that
    /// when they are used, and an idle worker reads nothing.
    pub fn refresh_merged(&self, now_ms: u64) {
        if self
            .others_read_at
            .get()
            .is_none_or(|at| now_ms >= at.saturating_add(self.merge_every_ms))
        {
            self.others_window.set(self.shared.others_window());
            self.others_read_at.set(Some(now_ms));
        }
    }

    /// Adds `delta` to the smooth weighted round-robin current weight; returns the new value.
    pub(crate) fn add_round_robin_weight(&self, delta: i64) -> i64 {
        let current = self.round_robin_weight.get() + delta;
        self.round_robin_weight.set(current);
        current
    }

    /// Publishes this worker's latency-window totals as of `now_ms` (the worker's ticker, when
    /// a bucket ages out) and returns when they change next with no new sample.
    pub fn publish(&self, now_ms: u64) -> Option<u64> {
        let window = self.window.borrow();
        self.set_own(window.totals(now_ms));
        window.next_change(now_ms)
    }

    /// When the published window changes next with no new sample (a bucket ages out).
    pub fn next_publish(&self, now_ms: u64) -> Option<u64> {
        self.window.borrow().next_change(now_ms)
    }

    fn set_own(&self, totals: (u64, u64)) {
        if self.own_window.replace(totals) != totals {
            self.shared.set_window(totals.0, totals.1);
        }
    }
}

/// How often the other workers' windows are read at most, unless set
/// (`balance.stats_publish_ms`' default).
const DEFAULT_MERGE_EVERY_MS: u64 = 5;

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
    fn the_running_totals_match_a_full_sum_of_the_window() {
        let mut w = LatencyWindow::new(Duration::from_millis(1000)); // 100 ms buckets
        let (mut now, mut seed) = (0u64, 7u64);
        for _ in 0..5_000 {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            // Mostly within a bucket, sometimes a few buckets on, now and then past the window.
            now += match seed >> 60 {
                0 => 1_500,
                1..=3 => 100 + (seed >> 40) % 300,
                _ => (seed >> 40) % 20,
            };
            w.record(now, (seed >> 20) % 10_000);
            for at in [now, now + 50, now + 450, now + 1_200] {
                assert_eq!(w.totals(at), w.sum_at(at / w.bucket_ms), "at {at}");
            }
        }
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
        // Each sample is published as it is recorded; the others' windows are read back when
        // a pick needs them, at most every `merge_every`.
        a.refresh_merged(10);
        assert_eq!(a.merged_avg_us(), Some(200));
        b.record_response_time(11, Duration::from_micros(500));
        a.refresh_merged(12);
        assert_eq!(a.merged_avg_us(), Some(200), "read again only after merge_every");
        a.refresh_merged(15);
        assert_eq!(a.merged_avg_us(), Some(300));
        let snap = shared.snapshot(15);
        assert_eq!(
            (snap.in_flight, snap.requests_total, snap.avg_response_us()),
            (1, 3, Some(300))
        );
    }

    #[test]
    fn window_is_republished_when_it_ages() {
        let shared = SharedStats::new(1);
        let s = LocalStats::new(Duration::from_millis(1000), shared.writer(0)); // 100 ms buckets
        assert_eq!(s.next_publish(0), None, "nothing to age");
        assert_eq!(s.record_response_time(50, Duration::from_micros(10)), 1000);
        assert_eq!(s.record_response_time(250, Duration::from_micros(30)), 1200);
        assert_eq!(shared.snapshot(250).avg_response_us(), Some(20), "published at once");
        assert_eq!(s.next_publish(300), Some(1000));
        assert_eq!(s.publish(1000), Some(1200), "bucket 0 aged out; bucket 2 is next");
        assert_eq!(shared.snapshot(1000).avg_response_us(), Some(30));
        assert_eq!(s.publish(1200), None);
        assert_eq!(shared.snapshot(1200).window_count, 0);
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
