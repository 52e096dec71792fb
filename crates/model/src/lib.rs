//! Fulcrum's model: what the balancer balances, shared by the control thread, the workers, the
//! health checker and the admin API.
//!
//! - [`epoch`]: [`Backend`] (where it is, its weight, its shared counters and health) and the
//!   numbered, immutable [`Epoch`] a worker runs requests on.
//! - [`stats`]: the counters each worker publishes about each backend ([`SharedStats`]).
//! - [`health`]: the active-health state machine and the cell the pickers read
//!   ([`BackendHealth`]).
//!
//! Everything here is `Send + Sync` and lives in `Arc`s; per-worker state is above, in the
//! balance and proxy layers.

mod epoch;
mod health;
mod stats;

pub use epoch::{Backend, BackendId, Epoch};
pub use fulcrum_config::{BackendProtocol, BackendUrl, BackendUrlError};
pub use health::{
    BackendHealth, FULL_SHARE, HealthCounters, HealthSnapshot, HealthState, Transition,
};
pub use stats::{SharedStats, StatsSnapshot, StatsWriter};
