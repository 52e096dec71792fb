//! What the control plane reports: the state with merged per-backend counters, and what a
//! change produced. Built on `lb-control`, read on the caller's thread (`lb-admin`, tests).

use fulcrum_config::{Algorithm, CachePolicy, Config, RouteConfig, Timeouts};
use fulcrum_model::{BackendId, HealthSnapshot, StatsSnapshot};

/// What a change produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Applied {
    /// The epoch every worker now runs.
    pub epoch: u64,
    /// The shared revision that epoch was built from (etcd store); `None` with the file store.
    pub revision: Option<i64>,
    /// The backend an `AddPoolBackend` created.
    pub backend: Option<BackendView>,
    /// The pool a `CreatePool` created.
    pub pool: Option<PoolView>,
}

/// A backend as reported to operators.
#[derive(Debug, Clone, PartialEq)]
pub struct BackendView {
    /// Server-assigned identifier.
    pub id: BackendId,
    /// Normalised URL.
    pub url: String,
    /// Relative weight: the backend's share of requests under every algorithm.
    pub weight: u32,
    /// Merged counters.
    pub stats: StatsSnapshot,
    /// Active health; `None` when `[health_check]` is off.
    pub health: Option<HealthSnapshot>,
}

/// A pool as reported to operators.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolView {
    /// Its name.
    pub name: String,
    /// Its algorithm.
    pub algorithm: Algorithm,
    /// Its backends with merged counters.
    pub backends: Vec<BackendView>,
}

/// The current configuration and state, as reported to operators.
#[derive(Debug, Clone)]
pub struct StateView {
    /// Current epoch number (local to this instance).
    pub epoch: u64,
    /// The shared revision the current epoch was built from (etcd store); `None` with the file
    /// store, or before etcd was reached.
    pub revision: Option<i64>,
    /// The `default` pool's algorithm.
    pub algorithm: Algorithm,
    /// The `default` pool's backends with merged counters.
    pub backends: Vec<BackendView>,
    /// Every pool, `default` first.
    pub pools: Vec<PoolView>,
    /// The routes, in order.
    pub routes: Vec<RouteConfig>,
    /// Cache settings.
    pub cache: CachePolicy,
    /// Phase timeouts.
    pub timeouts: Timeouts,
    /// The configuration the process started with (listeners, limits, ...).
    pub config: Config,
    /// Where applied changes are persisted (with the etcd store: the last-known-good copy), if
    /// anywhere.
    pub state_file: Option<std::path::PathBuf>,
}
