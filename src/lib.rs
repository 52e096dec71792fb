//! Fulcrum: a thread-per-core L7 load balancer on io_uring (monoio).
//!
//! ```text
//! lb-worker-0 .. lb-worker-N-1   one monoio runtime each, pinned, own SO_REUSEPORT listener,
//!                                own upstream pools, picker and counters (no shared lock)
//! lb-control                     owns the canonical config; builds epochs, broadcasts them over
//!                                crossbeam channels, waits for every worker's ack
//! lb-admin                       admin REST API (hyper on a current-thread tokio runtime, JWT)
//! lb-health                      active health checks (current-thread tokio runtime, optional)
//! lb-log                         access-log writer
//! main                           CLI, signals, graceful shutdown
//! ```
//!
//! This crate is the composition root: it wires the layers' threads together ([`start`]) and
//! holds the CLI's helpers. Each layer is a crate of the workspace, importing only those below
//! it (`docs/architecture.md`); they are re-exported here under their layer names.

pub mod demo;
pub mod healthcheck;
pub mod server;

pub use fulcrum_admin as admin;
pub use fulcrum_balance as balance;
pub use fulcrum_cache as cache;
pub use fulcrum_config as config;
pub use fulcrum_control as control;
pub use fulcrum_health as health;
pub use fulcrum_http as http;
pub use fulcrum_model as model;
pub use fulcrum_proxy as proxy;
pub use fulcrum_telemetry as telemetry;
pub use fulcrum_util as util;
pub use fulcrum_worker as worker;
pub use server::{Running, StartError, StartOptions, start, start_with};
