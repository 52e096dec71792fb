//! Response cache core: keys, the storage/freshness policy and the per-worker shard.
//!
//! Thread-per-core: every worker owns one [`CacheShard`] (no lock, no atomics on a hit); the
//! shard budgets add up to [`CachePolicy::max_bytes`]. One key can therefore be cached once
//! per worker: N workers may each hold a copy and each pay one upstream miss for it.
//!
//! A request's life through the cache (the proxy does the wiring):
//! 1. [`CacheRules::check_request`]: bypass, or cacheable;
//! 2. [`KeyBuilder::compute`] over method, path, headers and the buffered body;
//! 3. [`CacheShard::get`]: on a hit, [`CachedResponse::render_head`] plus the body;
//! 4. on a miss, [`CacheShard::begin_fill`]: the leader goes upstream, checks the response with
//!    [`CacheRules::check_response`], [`CacheShard::insert`]s it and completes its
//!    [`FillGuard`]; waiters wait (bounded) and look up again, or go upstream themselves when
//!    the leader's response was not stored.
//!
//! A timer calls [`CacheShard::sweep_some`] to reclaim expired entries nobody asks for.

mod key;
mod metrics;
mod policy;
mod shard;

pub use fulcrum_config::{CachePolicy, CachePolicyError};
pub use key::{CacheKey, KeyBuilder};
pub use metrics::{CacheMetrics, CacheTotals};
pub use policy::{BypassReason, CacheRules, RequestDecision, ResponseDecision, SkipReason};
pub use shard::{
    CacheShard, CacheStats, CachedResponse, FillGuard, FillOutcome, FillRole, FillWait,
    InsertOutcome,
};
