//! Latency of the client against a real local etcd (Debian's etcd-server 3.4 on 127.0.0.1, data
//! on local disk with etcd's fsyncs): a read, a compare-and-swap write, and the propagation from
//! a write on one client (own thread and runtime, like another instance) to a watcher. Not a
//! criterion bench: each sample is a round trip to a separate process, so the percentiles of
//! plain samples say more than a mean with outliers removed.
//!
//! `cargo bench -p fulcrum-etcd --bench latency` (skips without etcd).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout, clippy::print_stderr)]

use fulcrum_etcd_testkit as support;

use std::time::Duration;

use fulcrum_etcd::{CasOutcome, Client, WatchEvent};
use tokio::time::Instant;

const READS: usize = 1000;
const WRITES: usize = 1000;
const PROPAGATIONS: usize = 500;
/// A state document of a realistic size: a few dozen backends.
const DOC_BYTES: usize = 4096;

fn report(name: &str, samples: &mut [Duration]) {
    samples.sort_unstable();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    println!(
        "{name:<40} n={:<5} p50 {:>9.3?}  p90 {:>9.3?}  p99 {:>9.3?}  max {:>9.3?}",
        samples.len(),
        at(0.5),
        at(0.9),
        at(0.99),
        at(1.0)
    );
}

fn doc(i: usize) -> Vec<u8> {
    let mut doc = format!(r#"{{"update":{i},"pad":""#).into_bytes();
    doc.resize(DOC_BYTES - 2, b'x');
    doc.extend_from_slice(b"\"}");
    doc
}

fn main() {
    if !support::have_etcd() {
        return;
    }
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let etcd = support::Etcd::start("bench");
        let prefix = "/fulcrum/bench";
        let client = Client::new(etcd.config(prefix)).unwrap();

        let mut expected = client.get().await.unwrap().mod_revision;
        let mut writes = Vec::with_capacity(WRITES);
        for i in 0..WRITES {
            let at = Instant::now();
            match client.put_if(expected, &doc(i)).await.unwrap() {
                CasOutcome::Written { revision } => expected = revision,
                CasOutcome::Conflict { .. } => panic!("the only writer cannot conflict"),
            }
            writes.push(at.elapsed());
        }
        let mut reads = Vec::with_capacity(READS);
        for _ in 0..READS {
            let at = Instant::now();
            client.get().await.unwrap();
            reads.push(at.elapsed());
        }

        let start = client.get().await.unwrap();
        let mut watch = client.watch(start.header_revision + 1).unwrap();
        let (sent_tx, sent_rx) = std::sync::mpsc::channel::<(i64, Instant)>();
        let (seen_tx, seen_rx) = std::sync::mpsc::channel::<()>();
        let config = etcd.config(prefix);
        let writer = std::thread::spawn(move || {
            let runtime =
                tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(async {
                let client = Client::new(config).unwrap();
                let mut expected = client.get().await.unwrap().mod_revision;
                for i in 0..PROPAGATIONS {
                    let at = Instant::now();
                    let CasOutcome::Written { revision } =
                        client.put_if(expected, &doc(i)).await.unwrap()
                    else {
                        panic!("the only writer cannot conflict");
                    };
                    expected = revision;
                    sent_tx.send((revision, at)).unwrap();
                    if seen_rx.recv_timeout(Duration::from_secs(10)).is_err() {
                        return;
                    }
                }
            });
        });
        let mut propagation = Vec::with_capacity(PROPAGATIONS);
        while propagation.len() < PROPAGATIONS {
            match tokio::time::timeout(Duration::from_secs(10), watch.recv()).await {
                Ok(Some(WatchEvent::Update { revision, .. })) => {
                    let seen = Instant::now();
                    let (sent_revision, at) = sent_rx.recv().unwrap();
                    assert_eq!(revision, sent_revision);
                    propagation.push(seen - at);
                    seen_tx.send(()).unwrap();
                }
                Ok(Some(WatchEvent::Progress { .. })) => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        writer.join().unwrap();

        println!("etcd {} on 127.0.0.1, {DOC_BYTES}-byte document", etcd_version());
        report("get (linearizable read)", &mut reads);
        report("put_if (CAS write, Written)", &mut writes);
        report("write start -> watcher Update", &mut propagation);
    });
}

fn etcd_version() -> String {
    let out = std::process::Command::new("etcd").arg("--version").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines().next().unwrap_or_default().trim_start_matches("etcd Version: ").to_owned()
}
