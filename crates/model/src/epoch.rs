//! The immutable configuration snapshot a worker runs requests on.

use std::sync::Arc;

use fulcrum_config::{Algorithm, BackendUrl, CachePolicy, PassiveHealth, Timeouts};

use crate::health::BackendHealth;
use crate::stats::SharedStats;

/// Server-assigned backend identifier, stable for the backend's lifetime.
pub type BackendId = u64;

/// One backend: where it is, plus the counters every worker publishes for it.
///
/// Shared by every epoch that contains it, so its counters survive algorithm switches and other
/// changes.
#[derive(Debug)]
pub struct Backend {
    /// Server-assigned identifier.
    pub id: BackendId,
    /// Normalised URL and resolved address.
    pub url: BackendUrl,
    /// Relative share of requests, 1..=[`MAX_WEIGHT`](fulcrum_config::MAX_WEIGHT); fixed for
    /// the backend's lifetime (to change it, remove and add the backend again).
    pub weight: u32,
    /// Per-worker published counters.
    pub stats: SharedStats,
    /// Active health state, written by `lb-health` and read by the pickers.
    pub health: BackendHealth,
}

impl Backend {
    /// A backend of `weight` (already validated) with fresh counters for `workers` workers and
    /// unknown health.
    pub fn new(id: BackendId, url: BackendUrl, weight: u32, workers: usize) -> Self {
        Self { id, url, weight, stats: SharedStats::new(workers), health: BackendHealth::default() }
    }
}

/// A numbered, immutable configuration. Workers swap epochs between requests; a request in
/// flight keeps the epoch it started with.
#[derive(Debug)]
pub struct Epoch {
    /// Monotonic number, starting at 1.
    pub id: u64,
    /// Balancing algorithm.
    pub algorithm: Algorithm,
    /// Backends in operator order.
    pub backends: Vec<Arc<Backend>>,
    /// Response cache settings.
    pub cache: CachePolicy,
    /// Bumped by every cache purge: a worker installing an epoch whose generation differs
    /// from the one it runs clears its cache shard (not persisted; starts at 0).
    pub cache_generation: u64,
    /// Phase timeouts.
    pub timeouts: Timeouts,
    /// Passive health settings.
    pub health: PassiveHealth,
}
