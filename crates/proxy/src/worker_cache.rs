//! One worker's response cache: its shard (no lock, no atomics on a hit), the key builder and
//! the settings of the epoch it runs. Owned by the worker's context; runs on its thread. The
//! HTTP/1.1 path's lookups and fills are in `h1::caching`.
//!
//! The counters are published as they change (after each lookup, insert, reconcile and sweep
//! step). Expired entries nobody asks for are reclaimed by sweep passes that the worker's ticker
//! runs when the earliest entry expires, at most one pass a second, in steps of
//! [`SWEEP_STEP`] slots: a shard whose entries are all fresh costs no wake-up.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fulcrum_cache::{
    CacheKey, CacheMetrics, CachePolicy, CacheShard, CacheStats, CachedResponse, InsertOutcome,
    KeyBuilder,
};
use fulcrum_util::{Deadline, ms_at};

/// Shard slots examined per step of a sweep pass (the worker's other tasks run between steps).
const SWEEP_STEP: usize = 4096;
/// The least time from the end of one sweep pass to the start of the next.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

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
    /// The worker's upkeep deadline (the next sweep).
    upkeep: Rc<Deadline>,
    /// When the next sweep pass may start.
    next_pass: Cell<Option<Instant>>,
}

impl WorkerCache {
    /// An empty, disabled cache for worker `worker` of `workers`, publishing into `metrics` and
    /// telling the worker's ticker through `upkeep` when entries expire.
    pub fn new(
        worker: usize,
        workers: usize,
        metrics: Arc<CacheMetrics>,
        upkeep: Rc<Deadline>,
    ) -> WorkerCache {
        WorkerCache {
            shard: RefCell::new(CacheShard::new(0)),
            keys: RefCell::new(KeyBuilder::new()),
            workers: workers.max(1),
            worker,
            enabled: Cell::new(false),
            generation: Cell::new(0),
            metrics,
            upkeep,
            next_pass: Cell::new(None),
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

    /// The ticker's work at `now`: a step of a sweep pass when one is due; returns when to look
    /// again on the process clock (`now` itself while a pass goes on, `None` when no entry can
    /// expire).
    pub fn upkeep(&self, now: Instant) -> Option<u64> {
        let now_ms = ms_at(now);
        let Ok(mut shard) = self.shard.try_borrow_mut() else {
            // Never on the ticker (no borrow is held across an await): look again soon.
            return Some(now_ms + 1);
        };
        if !self.enabled.get() || shard.is_empty() {
            return None;
        }
        let start = shard.next_expiry()?.max(self.next_pass.get().unwrap_or(now));
        if start > now {
            return Some(ms_by(now, start));
        }
        let passes = shard.sweep_passes();
        shard.sweep_some(now, SWEEP_STEP);
        self.metrics.publish(self.worker, &shard.stats());
        if shard.sweep_passes() == passes {
            return Some(now_ms);
        }
        let next_pass = now + SWEEP_EVERY;
        self.next_pass.set(Some(next_pass));
        shard.next_expiry().map(|at| ms_by(now, at.max(next_pass)))
    }

    /// Looks `key` up at `now` (see [`CacheShard::get`]) and publishes the counters.
    pub(crate) fn get(&self, key: &CacheKey, now: Instant) -> Option<Rc<CachedResponse>> {
        let mut shard = self.shard.borrow_mut();
        let hit = shard.get(key, now);
        self.metrics.publish(self.worker, &shard.stats());
        hit
    }

    /// Stores `response` under `key` (see [`CacheShard::insert`]), publishes the counters and
    /// tells the ticker when the entry expires.
    pub(crate) fn insert(&self, key: CacheKey, response: Rc<CachedResponse>) -> InsertOutcome {
        let expires = response.expires_at();
        let mut shard = self.shard.borrow_mut();
        let outcome = shard.insert(key, response);
        self.metrics.publish(self.worker, &shard.stats());
        drop(shard);
        if let (InsertOutcome::Stored { .. }, Some(at)) = (outcome, expires) {
            let now = Instant::now();
            let at = at.max(self.next_pass.get().unwrap_or(now));
            self.upkeep.need_by(ms_by(now, at));
        }
        outcome
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

/// `at` on the process clock, counted from `now` (the time to it rounded up to the next
/// millisecond, so that a timer set to it never fires early).
fn ms_by(now: Instant, at: Instant) -> u64 {
    let ahead = at.saturating_duration_since(now);
    let ms = ahead.as_millis() + u128::from(!ahead.subsec_nanos().is_multiple_of(1_000_000));
    ms_at(now).saturating_add(u64::try_from(ms).unwrap_or(u64::MAX))
}
