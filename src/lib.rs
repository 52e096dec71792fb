//! Fulcrum: a thread-per-core L7 load balancer on io_uring (monoio).
//!
//! ```text
//! lb-worker-0 .. lb-worker-N-1   one monoio runtime each, pinned, own SO_REUSEPORT listener,
//!                                own upstream pools, picker and counters (no shared lock)
//! lb-control                     owns the canonical config; builds epochs, broadcasts them over
//!                                crossbeam channels, waits for every worker's ack
//! lb-admin                       admin REST API (hyper on a current-thread tokio runtime, JWT)
//! lb-health                      active health checks (current-thread tokio runtime, optional)
//! main                           CLI, signals, graceful shutdown
//! ```
//!
//! A request runs on the epoch that was current when its head was read; a new epoch is
//! installed between requests. Per-backend counters (in flight, latency window, health) live
//! outside the pickers, so algorithm switches and other changes keep them.

pub mod admin;
pub mod balance;
pub mod cache;
pub mod config;
pub mod control;
pub mod demo;
pub mod health;
pub mod healthcheck;
pub mod proxy;
pub mod server;
pub mod telemetry;
pub mod worker;

pub use server::{Running, StartError, StartOptions, start, start_with};
