//! The immutable configuration snapshot a worker runs requests on.

use std::sync::Arc;

use fulcrum_config::{
    Algorithm, BackendUrl, CachePolicy, DEFAULT_POOL, PassiveHealth, RouteConfig, RouteError,
    Timeouts,
};

use crate::health::BackendHealth;
use crate::routing::RouteTable;
use crate::stats::SharedStats;

/// Server-assigned backend identifier, stable for the backend's lifetime.
pub type BackendId = u64;

/// One backend: where it is, plus the counters every worker publishes for it.
///
/// Shared by every epoch that contains it, so its counters survive algorithm switches and other
/// changes.
#[derive(Debug)]
pub struct Backend {
    /// Server-assigned identifier, unique across pools.
    pub id: BackendId,
    /// The pool it belongs to, for life (metric labels, logs).
    pub pool: Arc<str>,
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
    /// A backend of pool `pool` with `weight` (already validated), fresh counters for `workers`
    /// workers and unknown health.
    pub fn new(
        id: BackendId,
        pool: Arc<str>,
        url: BackendUrl,
        weight: u32,
        workers: usize,
    ) -> Self {
        let stats = SharedStats::new(workers);
        Self { id, pool, url, weight, stats, health: BackendHealth::default() }
    }
}

/// A named set of backends balanced by its own algorithm.
#[derive(Debug, Clone)]
pub struct Pool {
    /// The pool's name (`default` for the top-level backends).
    pub name: Arc<str>,
    /// Its balancing algorithm.
    pub algorithm: Algorithm,
    /// Its backends in operator order.
    pub backends: Vec<Arc<Backend>>,
}

impl Pool {
    /// An empty pool.
    pub fn new(name: &str, algorithm: Algorithm) -> Self {
        Self { name: name.into(), algorithm, backends: Vec::new() }
    }
}

/// The settings an epoch carries besides its pools and routes.
#[derive(Debug, Clone)]
pub struct EpochSettings {
    /// Response cache settings.
    pub cache: CachePolicy,
    /// Bumped by every cache purge (see [`Epoch::cache_generation`]).
    pub cache_generation: u64,
    /// Phase timeouts.
    pub timeouts: Timeouts,
    /// Passive health settings.
    pub health: PassiveHealth,
}

/// A numbered, immutable configuration. Workers swap epochs between requests; a request in
/// flight keeps the epoch it started with, so it sees one routing table and one set of pools.
#[derive(Debug)]
pub struct Epoch {
    /// Monotonic number, starting at 1.
    pub id: u64,
    /// The pools, `default` first (index 0, the fallback of every route table).
    pools: Vec<Pool>,
    /// The routes, compiled against `pools`.
    routes: RouteTable,
    /// Response cache settings.
    pub cache: CachePolicy,
    /// `cache` switched on, for the routes that turn the cache on while `cache.enabled` is off
    /// (`None` when no route does, or the cache is on anyway).
    route_cache: Option<CachePolicy>,
    /// Bumped by every cache purge: a worker installing an epoch whose generation differs
    /// from the one it runs clears its cache shard (not persisted; starts at 0).
    pub cache_generation: u64,
    /// Phase timeouts.
    pub timeouts: Timeouts,
    /// Passive health settings.
    pub health: PassiveHealth,
}

impl Epoch {
    /// Epoch `id` of `pools` (`default` first, names unique) and `routes` (validated against
    /// them and compiled here, on the control thread).
    pub fn new(
        id: u64,
        pools: Vec<Pool>,
        routes: Vec<RouteConfig>,
        settings: EpochSettings,
    ) -> Result<Self, RouteError> {
        if pools.first().is_none_or(|p| &*p.name != DEFAULT_POOL) {
            return Err(RouteError {
                key: "pools".into(),
                reason: format!("the first pool must be `{DEFAULT_POOL}`"),
            });
        }
        let names: Vec<&str> = pools.iter().map(|p| &*p.name).collect();
        if let Some(dup) = names.iter().enumerate().find(|(i, n)| names[..*i].contains(n)) {
            return Err(RouteError {
                key: "pools".into(),
                reason: format!("duplicate pool name `{}`", dup.1),
            });
        }
        let routes = RouteTable::compile(routes, &names)?;
        let EpochSettings { cache, cache_generation, timeouts, health } = settings;
        let route_cache = (!cache.enabled && routes.forces_cache())
            .then(|| CachePolicy { enabled: true, ..cache.clone() });
        Ok(Self { id, pools, routes, cache, route_cache, cache_generation, timeouts, health })
    }

    /// Every pool, `default` first.
    pub fn pools(&self) -> &[Pool] {
        &self.pools
    }

    /// The `default` pool (the top-level backends and algorithm).
    pub fn default_pool(&self) -> &Pool {
        // `new` guarantees a first pool; an empty slice cannot be built.
        &self.pools[0]
    }

    /// The pool named `name` and its index.
    pub fn pool(&self, name: &str) -> Option<(usize, &Pool)> {
        self.pools.iter().enumerate().find(|(_, p)| &*p.name == name)
    }

    /// Every backend of every pool.
    pub fn backends(&self) -> impl Iterator<Item = &Arc<Backend>> {
        self.pools.iter().flat_map(|p| p.backends.iter())
    }

    /// The routes.
    pub fn routes(&self) -> &RouteTable {
        &self.routes
    }

    /// The settings besides pools and routes, to build the next epoch from.
    pub fn settings(&self) -> EpochSettings {
        EpochSettings {
            cache: self.cache.clone(),
            cache_generation: self.cache_generation,
            timeouts: self.timeouts,
            health: self.health,
        }
    }

    /// The cache settings a request runs under given its route's `cache` switch, or `None`
    /// when the cache is off for it.
    #[inline]
    pub fn cache_for(&self, route: Option<bool>) -> Option<&CachePolicy> {
        match route {
            Some(false) => None,
            Some(true) => Some(self.route_cache.as_ref().unwrap_or(&self.cache)),
            None => self.cache.enabled.then_some(&self.cache),
        }
    }

    /// The settings a worker's cache shard follows: on when `cache.enabled` is, or when some
    /// route turns the cache on.
    pub fn shard_policy(&self) -> &CachePolicy {
        self.route_cache.as_ref().unwrap_or(&self.cache)
    }
}
