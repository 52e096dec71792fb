//! The integration suite, one test binary: the real `fulcrum` binary (and, in `epochs` and
//! `access_log`, the library's public API) against real backends and real clients on
//! loopback. `harness` is how every test starts and talks to them; each other module is one
//! area of behaviour, and its tests read as the behaviour they check.
//!
//! Run one area with `cargo test --test it -- data_plane::`; the io driver is chosen with
//! `FULCRUM_TEST_IO_DRIVER` (`.ci/test` runs the suite once on `io_uring` and once on `epoll`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;

mod access_log;
mod admin;
mod admin_openapi;
mod backend_framing;
mod cache;
mod chaos;
mod client_limits;
mod data_plane;
mod epochs;
mod fuzz_replay;
mod grpc;
mod grpc_access_log;
mod h2_attacks;
mod h2_conformance;
mod h2_interop;
mod h2_limits;
mod health_checks;
mod interim;
mod io_driver;
mod metrics;
mod openapi_conformance;
mod packaging;
mod retries;
mod routing;
mod store;
mod strict_http;
mod tls;
mod upstream_limits;
mod websocket;
mod weights;
