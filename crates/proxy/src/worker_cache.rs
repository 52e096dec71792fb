//! One worker's response cache: its shard (no lock, no atomics on a hit), the key builder and
//! the settings of the epoch it runs. Owned by the worker's context; runs on its thread. The
//! HTTP/1.1 path's lookups and fills are in `h1::caching`.

use std::cell::{Cell, RefCell};
use std::sync::Arc;
use std::time::Instant;

use fulcrum_cache::{CacheMetrics, CachePolicy, CacheShard, CacheStats, KeyBuilder};

/// Shard slots examined for expired entries per ticker tick (every `stats_publish_ms`).
const SWEEP_SLOTS_PER_TICK: usize = 256;

/// One worker's cache: its shard, key builder and the settings of the epoch it runs.
#[derive(Debug)]
pub struct WorkerCache {
    pub(crate) shard: RefCell<CacheShard>,
    pub(crate) keys: RefCell<KeyBuilder>,
    workers: usize,
    worker: usize,
    enabled: Cell<bool>,
    generation: Cell<u64>,
    metrics: Arc<CacheMetrics>,
}

impl WorkerCache {
    /// An empty, disabled cache for worker `worker` of `workers`, publishing into `metrics`.
    pub fn new(worker: usize, workers: usize, metrics: Arc<CacheMetrics>) -> WorkerCache {
        WorkerCache {
            shard: RefCell::new(CacheShard::new(0)),
            keys: RefCell::new(KeyBuilder::new()),
            workers: workers.max(1),
            worker,
            enabled: Cell::new(false),
            generation: Cell::new(0),
            metrics,
        }
    }

    /// Brings the shard in line with an epoch being installed: disabled → cleared and freed;
    /// enabled after being off, or a new purge generation → started empty; a budget change →
    /// evicts down to the new budget. Publishes the counters at once, so the admin API sees
    /// the result as soon as the change answers.
    pub fn reconcile(&self, policy: &CachePolicy, generation: u64) {
        let mut shard = self.shard.borrow_mut();
        if !policy.enabled {
            if !shard.is_empty() {
                shard.clear();
            }
        } else {
            if !self.enabled.get() || generation != self.generation.get() {
                shard.clear();
            }
            let budget = policy.shard_budget(self.workers);
            if budget != shard.budget() {
                shard.set_budget(budget);
            }
        }
        self.enabled.set(policy.enabled);
        self.generation.set(generation);
        self.metrics.publish(self.worker, &shard.stats());
    }

    /// Ticker work: reclaims a slice of expired entries and publishes the counters.
    pub fn tick(&self) {
        let Ok(mut shard) = self.shard.try_borrow_mut() else { return };
        if self.enabled.get() && !shard.is_empty() {
            shard.sweep_some(Instant::now(), SWEEP_SLOTS_PER_TICK);
        }
        self.metrics.publish(self.worker, &shard.stats());
    }

    /// Whether the installed epoch has the cache on.
    #[inline]
    pub fn is_enabled(&self) -> bool {
        self.enabled.get()
    }

    /// This shard's counters now.
    pub fn stats(&self) -> CacheStats {
        self.shard.borrow().stats()
    }

    /// Keeps a copy of a request head for the lookup (the head is consumed from the client
    /// buffer before the body arrives); keeps nothing while the cache is off.
    #[inline]
    pub(crate) fn keep_head(&self, keep: &mut Vec<u8>, head: &[u8]) {
        keep.clear();
        if self.enabled.get() {
            keep.extend_from_slice(head);
        }
    }

    /// Whether a response filled under purge `generation` may still be stored.
    pub(crate) fn accepts(&self, generation: u64) -> bool {
        self.enabled.get() && self.generation.get() == generation
    }
}
