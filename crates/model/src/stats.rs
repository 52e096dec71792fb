//! The counters every worker publishes about one backend, for the others and for operators:
//! one cache-padded slot per worker, written only by that worker, read by all.
//!
//! In-flight counts, request totals and ejections are written the moment they change (a
//! relaxed store to the worker's own cache line: no shared write, no read-modify-write), so a
//! `least_connections` pick on another worker sees a backend free up at once. Latency-window
//! totals are written by the worker's ticker. The per-worker side that writes them is the
//! balance layer's `LocalStats`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};

use crossbeam_utils::CachePadded;

/// One worker's published view of one backend.
#[derive(Debug, Default)]
struct Slot {
    in_flight: AtomicU32,
    window_sum_us: AtomicU64,
    window_count: AtomicU64,
    requests_total: AtomicU64,
    /// Milliseconds on the process clock until which this worker ejected the backend; 0 = not.
    ejected_until_ms: AtomicU64,
}

/// Cross-worker view of one backend: one padded slot per worker.
#[derive(Debug)]
pub struct SharedStats {
    slots: Arc<[CachePadded<Slot>]>,
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

    /// Worker `worker`'s writing end (held by that worker's `LocalStats`).
    pub fn writer(&self, worker: usize) -> StatsWriter {
        StatsWriter { slots: self.slots.clone(), worker: worker.min(self.slots.len() - 1) }
    }

    /// Sums every worker's slot (control thread, admin views, metrics).
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

/// One worker's writing end of a backend's [`SharedStats`]: it writes only its own slot and
/// reads the others'.
#[derive(Debug)]
pub struct StatsWriter {
    slots: Arc<[CachePadded<Slot>]>,
    worker: usize,
}

impl StatsWriter {
    fn own(&self) -> &Slot {
        &self.slots[self.worker]
    }

    /// Publishes this worker's in-flight count and request total (at every change).
    #[inline]
    pub fn set_in_flight(&self, in_flight: u32, requests_total: u64) {
        let own = self.own();
        own.in_flight.store(in_flight, Relaxed);
        own.requests_total.store(requests_total, Relaxed);
    }

    /// Publishes until when this worker ejects the backend (0: it does not).
    pub fn set_ejected_until(&self, ms: u64) {
        self.own().ejected_until_ms.store(ms, Relaxed);
    }

    /// Publishes this worker's latency-window totals.
    pub fn set_window(&self, sum_us: u64, count: u64) {
        let own = self.own();
        own.window_sum_us.store(sum_us, Relaxed);
        own.window_count.store(count, Relaxed);
    }

    /// Requests in flight on the other workers, as they published them.
    #[inline]
    pub fn others_in_flight(&self) -> u32 {
        let mut n = 0;
        for (i, slot) in self.slots.iter().enumerate() {
            if i != self.worker {
                n += slot.in_flight.load(Relaxed);
            }
        }
        n
    }

    /// The latency-window totals of the other workers.
    pub fn others_window(&self) -> (u64, u64) {
        let (mut sum, mut count) = (0, 0);
        for (i, slot) in self.slots.iter().enumerate() {
            if i != self.worker {
                sum += slot.window_sum_us.load(Relaxed);
                count += slot.window_count.load(Relaxed);
            }
        }
        (sum, count)
    }
}
