//! Question: with the etcd store, how long does a change made on one instance take to be live on
//! every instance of a cluster, and how long does the instance that takes the change keep its
//! caller waiting? Three instances in this process (`fulcrum::start`, two workers each) share
//! a real etcd on loopback (Debian's etcd-server, data on local disk with its fsyncs; started by
//! `fulcrum-etcd-testkit`). Each change adds a backend on the next instance in turn (a
//! compare-and-swap in etcd, then that instance's epoch); the time runs from the call to the
//! moment the other two instances' workers have acknowledged the epoch that contains it (their
//! backend lists change only after every worker's ack). Not a criterion bench: each sample
//! crosses processes and threads, so percentiles of plain samples say more than a mean.
//!
//! `cargo bench --bench store` (skips, saying so, without the etcd binaries); `cargo test --bench
//! store` runs the same measurement in the debug profile.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use fulcrum::config::{Config, DEFAULT_POOL, StoreConfig, StoreKind, TelemetryConfig};
use fulcrum::control::{Backend, Change};
use fulcrum_etcd_testkit::{Etcd, have_etcd};

const INSTANCES: usize = 3;
const CHANGES: usize = 300;

fn config(etcd: &Etcd, dir: &std::path::Path, i: usize) -> Config {
    Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        admin_listen: "127.0.0.1:0".parse().unwrap(),
        workers: 2,
        state_file: Some(dir.join(format!("state-{i}.json"))),
        store: StoreConfig {
            kind: StoreKind::Etcd,
            endpoints: vec![etcd.url()],
            prefix: "/fulcrum/bench".into(),
            ..StoreConfig::default()
        },
        telemetry: TelemetryConfig { access_log: Some("off".into()), ..Default::default() },
        ..Config::default()
    }
}

fn report(name: &str, samples: &mut [Duration]) {
    samples.sort_unstable();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    println!(
        "{name:<52} n={:<4} p50 {:>9.3?}  p90 {:>9.3?}  p99 {:>9.3?}  max {:>9.3?}",
        samples.len(),
        at(0.5),
        at(0.9),
        at(0.99),
        at(1.0)
    );
}

/// Reports (instance, backends) each time an instance's backend list changes (after every
/// worker of it acknowledged the epoch), on a thread of its own.
fn observe(
    i: usize,
    mut backends: tokio::sync::watch::Receiver<Vec<Arc<Backend>>>,
    seen: mpsc::Sender<(usize, usize, Instant)>,
) {
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async move {
            while backends.changed().await.is_ok() {
                let n = backends.borrow_and_update().len();
                if seen.send((i, n, Instant::now())).is_err() {
                    return;
                }
            }
        });
    });
}

fn main() {
    if !have_etcd() {
        return;
    }
    fulcrum::telemetry::install(Box::new(fulcrum::telemetry::StderrSink::new(
        fulcrum::telemetry::Level::Warn,
    )));
    let etcd = Etcd::start("bench-store");
    let dir = std::env::temp_dir().join(format!("fulcrum-bench-store-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let nodes: Vec<fulcrum::Running> =
        (0..INSTANCES).map(|i| fulcrum::start(config(&etcd, &dir, i)).unwrap()).collect();
    let (seen_tx, seen_rx) = mpsc::channel();
    for (i, node) in nodes.iter().enumerate() {
        observe(i, node.control().backends(), seen_tx.clone());
    }

    let mut propagation = Vec::with_capacity(CHANGES);
    let mut local = Vec::with_capacity(CHANGES);
    for change in 0..CHANGES {
        let writer = change % INSTANCES;
        // Distinct loopback URLs; nothing needs to listen there.
        let url = format!("http://127.0.0.1:{}", 10_000 + change);
        let start = Instant::now();
        nodes[writer]
            .control()
            .apply(Change::AddPoolBackend { pool: DEFAULT_POOL.into(), url, weight: 1 })
            .unwrap();
        local.push(start.elapsed());
        let mut waiting: Vec<usize> = (0..INSTANCES).filter(|&i| i != writer).collect();
        let mut last = start;
        while !waiting.is_empty() {
            let (i, n, at) = seen_rx.recv_timeout(Duration::from_secs(10)).expect("propagated");
            if n == change + 1 && waiting.contains(&i) {
                waiting.retain(|&w| w != i);
                last = last.max(at);
            }
        }
        propagation.push(last - start);
    }
    println!("{INSTANCES} instances x 2 workers, {CHANGES} changes, {}", etcd_version().trim());
    report("change answered on the instance that took it", &mut local);
    report("change live on every other instance (from the call)", &mut propagation);
    for node in nodes {
        node.shutdown();
    }
    let _ = std::fs::remove_dir_all(dir);
}

fn etcd_version() -> String {
    let out = std::process::Command::new("etcd").arg("--version").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines().next().unwrap_or_default().to_owned()
}
