//! A small etcd v3 client for Fulcrum's shared run-time state: one versioned JSON document at
//! `<prefix>/state`, read with [`Client::get`], replaced with a compare-and-swap
//! ([`Client::put_if`]) and followed with a [`Watch`] that reconnects by itself forever.
//!
//! Thread model: everything runs on the `lb-store` thread inside a current-thread tokio
//! runtime (never on a data-plane worker). The watch is a task on that runtime; the
//! [`StatusHandle`] can be read from any thread.
//!
//! Transport: etcd's gRPC-JSON gateway (`/v3/kv/range`, `/v3/kv/txn`, `/v3/watch`,
//! `/v3/auth/authenticate`, served by etcd 3.4 and later) over hyper's HTTP/1.1 client, with
//! optional rustls; see the crate README for why not gRPC.

mod channel;
mod client;
mod config;
mod error;
mod status;
mod transport;
mod watch;
mod wire;

pub use crate::client::{CasOutcome, Client, STATE_KEY, Snapshot};
pub use crate::config::{EtcdConfig, Limits, Timeouts, TlsFiles};
pub use crate::error::{Error, grpc_code};
pub use crate::status::{Status, StatusHandle};
pub use crate::watch::{Watch, WatchEvent};
