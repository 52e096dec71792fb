//! Tests only: a real `etcd` (Debian's etcd-server) on 127.0.0.1 with ephemeral ports and a
//! temporary data directory, killed on drop ([`Etcd`]); `etcdctl` against it; TLS material for a
//! member with client-certificate authentication; and a loopback TCP proxy that can cut, freeze
//! or deafen the path to it ([`Proxy`]). Shared by `fulcrum-etcd`'s tests and bench and by the
//! integration suite (`tests/it/store.rs`), so there is one way to run etcd in a test.
//!
//! Thread model: everything here is blocking and runs on the test's thread, except the proxy,
//! which forwards on a thread and runtime of its own (so a blocking test can use it too).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

mod etcd;
mod proxy;
mod tls;

use std::time::Duration;

pub use etcd::Etcd;
pub use proxy::Proxy;
pub use tls::TlsSetup;

use fulcrum_etcd::{EtcdConfig, Timeouts, TlsFiles};

/// Whether the etcd binaries are on the PATH; says why a test skips when not.
pub fn have_etcd() -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = ["etcd", "etcdctl"]
        .iter()
        .all(|bin| std::env::split_paths(&path).any(|dir| dir.join(bin).is_file()));
    if !found {
        eprintln!(
            "SKIP: the `etcd`/`etcdctl` binaries are not installed \
             (apt-get install etcd-server etcd-client); this test needs a real etcd"
        );
    }
    found
}

/// A client configuration for `url` with short, test-sized timings.
pub fn config_for(url: &str, prefix: &str, tls: Option<&TlsSetup>) -> EtcdConfig {
    let mut config = EtcdConfig::new(vec![url.to_owned()], prefix);
    config.timeouts = Timeouts {
        connect: Duration::from_secs(1),
        request: Duration::from_secs(3),
        watch_probe: Duration::from_millis(500),
        backoff_min: Duration::from_millis(50),
        backoff_max: Duration::from_millis(500),
    };
    config.tls = tls.map(|t| TlsFiles {
        ca_file: t.ca.clone(),
        cert_file: Some(t.client_cert.clone()),
        key_file: Some(t.client_key.clone()),
    });
    config
}

/// p50 and p99 of `samples` (sorted in place; at least one sample).
pub fn percentiles(samples: &mut [Duration]) -> (Duration, Duration) {
    samples.sort_unstable();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    (at(0.50), at(0.99))
}
