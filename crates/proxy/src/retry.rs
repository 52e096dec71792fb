//! When a failed upstream attempt may be tried again: the reasons, the per-request bound
//! (`retries.max_attempts`) and the per-worker retry budget that keeps retries from multiplying
//! an overload.
//!
//! The budget follows Linkerd's: over a sliding window of [`WINDOW_SECS`] one-second buckets,
//! retries may add `budget_ratio` of the requests seen plus `budget_min_per_sec` per second.
//! It lives in plain `Cell`s on one worker: nothing shared is written.

use std::cell::Cell;
use std::sync::Arc;

use fulcrum_config::RetryConfig;
use fulcrum_telemetry::{Collect, Counter, Encoder, Kind, PerWorker};
use fulcrum_util::now_ms;

/// Seconds the budget looks back.
pub const WINDOW_SECS: usize = 10;

/// Why an attempt is tried again (the `reason` label of `fulcrum_retries_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum RetryReason {
    /// The connect failed or timed out: nothing was sent.
    Connect,
    /// A new connection was reset or closed before any response byte (idempotent requests only).
    Reset,
    /// A reused keep-alive connection turned out closed before any response byte (idempotent
    /// requests only).
    Stale,
    /// An h2c backend refused the stream (REFUSED_STREAM, or GOAWAY beyond its last stream):
    /// it did not process it.
    Refused,
}

impl RetryReason {
    /// Every reason, in the order of [`RetryReason::label`]'s metric series.
    pub const ALL: [RetryReason; 4] =
        [RetryReason::Connect, RetryReason::Reset, RetryReason::Stale, RetryReason::Refused];

    /// The metric label value.
    pub fn label(self) -> &'static str {
        match self {
            RetryReason::Connect => "connect",
            RetryReason::Reset => "reset",
            RetryReason::Stale => "stale",
            RetryReason::Refused => "refused",
        }
    }
}

/// Retries by reason and retries the budget refused, one slot per worker
/// (`fulcrum_retries_total`, `fulcrum_retry_budget_exhausted_total`).
#[derive(Debug)]
pub struct RetryMetrics {
    slots: PerWorker<RetrySlot>,
}

#[derive(Debug, Default)]
struct RetrySlot {
    by_reason: [Counter; 4],
    budget_exhausted: Counter,
}

impl RetryMetrics {
    /// Slots for `workers` workers.
    pub fn new(workers: usize) -> Self {
        Self { slots: PerWorker::new(workers) }
    }
}

impl Collect for RetryMetrics {
    fn collect(&self, out: &mut Encoder) {
        let name = "fulcrum_retries_total";
        out.family(name, Kind::Counter, "Upstream attempts tried again, by reason.");
        for (i, reason) in RetryReason::ALL.iter().enumerate() {
            out.sample(
                name,
                &[("reason", reason.label())],
                self.slots.sum(|s| s.by_reason[i].get()),
            );
        }
        let name = "fulcrum_retry_budget_exhausted_total";
        out.family(name, Kind::Counter, "Retries not made because the retry budget was empty.");
        out.sample(name, &[], self.slots.sum(|s| s.budget_exhausted.get()));
    }
}

/// One worker's retry policy: the configured bound, its budget and its counters.
#[derive(Debug)]
pub struct Retries {
    max_attempts: u32,
    budget: RetryBudget,
    worker: usize,
    metrics: Arc<RetryMetrics>,
}

impl Retries {
    /// Worker `worker`'s policy of `[retries]`, counting into `metrics`.
    pub fn new(cfg: &RetryConfig, worker: usize, metrics: Arc<RetryMetrics>) -> Self {
        Self { max_attempts: cfg.max_attempts, budget: RetryBudget::new(cfg), worker, metrics }
    }

    /// Counts a request that arrived at `at_ms` (the process clock, [`fulcrum_util::now_ms`])
    /// toward the budget's ratio (once per request, not per attempt).
    #[inline]
    pub fn record_request(&self, at_ms: u64) {
        self.budget.record_request(at_ms / 1000);
    }

    /// Whether a request that made `attempts` tries may make another for `reason`; counts the
    /// retry, or the refusal when the budget is empty.
    pub fn allow(&self, attempts: u32, reason: RetryReason) -> bool {
        if attempts >= self.max_attempts {
            return false;
        }
        let slot = self.metrics.slots.get(self.worker);
        if !self.budget.try_spend(now_ms() / 1000) {
            slot.budget_exhausted.inc();
            return false;
        }
        slot.by_reason[reason as usize].inc();
        true
    }
}

/// Requests and retries per second over the last [`WINDOW_SECS`] seconds.
#[derive(Debug)]
struct RetryBudget {
    ratio: f64,
    min_per_sec: u32,
    /// (requests, retries) of the second `second - (second - i) % WINDOW_SECS`.
    buckets: [Cell<(u32, u32)>; WINDOW_SECS],
    /// The second the newest bucket belongs to.
    second: Cell<u64>,
}

impl RetryBudget {
    fn new(cfg: &RetryConfig) -> Self {
        Self {
            ratio: cfg.budget_ratio,
            min_per_sec: cfg.budget_min_per_sec,
            buckets: Default::default(),
            second: Cell::new(0),
        }
    }

    /// Moves the window to `now` (seconds), emptying the buckets it left behind.
    fn advance(&self, now: u64) -> &Cell<(u32, u32)> {
        let last = self.second.get();
        if now > last {
            let stale = (now - last).min(WINDOW_SECS as u64);
            for s in 0..stale {
                self.buckets[((now - s) % WINDOW_SECS as u64) as usize].set((0, 0));
            }
            self.second.set(now);
        }
        &self.buckets[(self.second.get() % WINDOW_SECS as u64) as usize]
    }

    fn record_request(&self, now: u64) {
        let bucket = self.advance(now);
        let (requests, retries) = bucket.get();
        bucket.set((requests.saturating_add(1), retries));
    }

    fn try_spend(&self, now: u64) -> bool {
        let bucket = self.advance(now);
        let (requests, retries) = self
            .buckets
            .iter()
            .map(Cell::get)
            .fold((0u64, 0u64), |a, b| (a.0 + u64::from(b.0), a.1 + u64::from(b.1)));
        let allowed =
            self.ratio * requests as f64 + f64::from(self.min_per_sec) * WINDOW_SECS as f64;
        if (retries + 1) as f64 > allowed {
            return false;
        }
        let (req, ret) = bucket.get();
        bucket.set((req, ret.saturating_add(1)));
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(ratio: f64, min_per_sec: u32) -> RetryBudget {
        RetryBudget::new(&RetryConfig {
            max_attempts: 3,
            budget_ratio: ratio,
            budget_min_per_sec: min_per_sec,
        })
    }

    #[test]
    fn ratio_of_recent_requests_plus_floor() {
        let b = budget(0.2, 0);
        for _ in 0..50 {
            b.record_request(100);
        }
        let granted = (0..20).filter(|_| b.try_spend(100)).count();
        assert_eq!(granted, 10, "20% of 50 requests");
        let floor = budget(0.0, 1);
        let granted = (0..20).filter(|_| floor.try_spend(100)).count();
        assert_eq!(granted, WINDOW_SECS, "one per second over the window");
        assert!(!budget(0.0, 0).try_spend(5), "an empty budget grants nothing");
    }

    #[test]
    fn old_seconds_leave_the_window() {
        let b = budget(1.0, 0);
        b.record_request(10);
        assert!(b.try_spend(10));
        assert!(!b.try_spend(10));
        // Nine seconds on, the request and the retry still count; ten on, neither does.
        b.record_request(19);
        assert!(b.try_spend(19));
        assert!(!b.try_spend(19));
        b.record_request(20);
        assert!(b.try_spend(20), "second 10 left the window");
        b.record_request(1000);
        assert!(b.try_spend(1000));
        assert!(!b.try_spend(1000), "a long gap clears every bucket");
    }

    #[test]
    fn max_attempts_bounds_each_request() {
        let m = Arc::new(RetryMetrics::new(1));
        let cfg = RetryConfig { max_attempts: 2, budget_ratio: 0.0, budget_min_per_sec: 100 };
        let r = Retries::new(&cfg, 0, m.clone());
        assert!(r.allow(1, RetryReason::Connect));
        assert!(!r.allow(2, RetryReason::Connect));
        let cfg = RetryConfig { max_attempts: 3, budget_ratio: 0.0, budget_min_per_sec: 0 };
        let none = Retries::new(&cfg, 0, m.clone());
        assert!(!none.allow(1, RetryReason::Reset));
        let registry = fulcrum_telemetry::Registry::default();
        registry.register(m);
        let text = registry.render();
        assert!(text.contains("fulcrum_retries_total{reason=\"connect\"} 1\n"), "{text}");
        assert!(text.contains("fulcrum_retry_budget_exhausted_total 1\n"), "{text}");
    }
}
