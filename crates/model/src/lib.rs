//! Fulcrum's model: what the balancer balances, shared by the control thread, the workers, the
//! health checker and the admin API.
//!
//! - [`epoch`]: [`Backend`] (where it is, its weight, its shared counters and health), the
//!   [`Pool`]s they are balanced in, and the numbered, immutable [`Epoch`] a worker runs
//!   requests on.
//! - [`routing`]: the compiled [`RouteTable`] and the per-request match that picks a pool.
//! - [`stats`]: the counters each worker publishes about each backend ([`SharedStats`]).
//! - [`health`]: the active-health state machine and the cell the pickers read
//!   ([`BackendHealth`]).
//!
//! Everything here is `Send + Sync` and lives in `Arc`s; per-worker state is above, in the
//! balance and proxy layers.

mod epoch;
mod health;
mod routing;
mod stats;

pub use epoch::{Backend, BackendId, Epoch, EpochSettings, Pool};
pub use fulcrum_config::{BackendProtocol, BackendUrl, BackendUrlError};
pub use health::{
    BackendHealth, FULL_SHARE, HealthCounters, HealthSnapshot, HealthState, Transition,
};
pub use routing::{RequestFields, RouteRequest, RouteTable, Routed};
pub use stats::{SharedStats, StatsSnapshot, StatsWriter};
