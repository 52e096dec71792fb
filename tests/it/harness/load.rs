//! Load for tests that change things under traffic: client threads doing keep-alive GETs, every
//! answer other than 200 recorded, progress observable without sleeping.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{Client, expect_within};

/// Client threads doing keep-alive `GET /` until stopped; every outcome other than 200 is
/// recorded.
pub struct Load {
    stop: Arc<AtomicBool>,
    done: Arc<Vec<AtomicUsize>>,
    failures: Arc<Mutex<Vec<String>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    /// `threads` client threads against `addr`.
    pub fn start(addr: std::net::SocketAddr, threads: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let done: Arc<Vec<AtomicUsize>> =
            Arc::new((0..threads).map(|_| AtomicUsize::new(0)).collect());
        let failures = Arc::new(Mutex::new(Vec::new()));
        let threads = (0..threads)
            .map(|i| {
                let (stop, done, failures) = (stop.clone(), done.clone(), failures.clone());
                std::thread::spawn(move || {
                    let mut client = Client::connect(addr);
                    let mut n = 0;
                    while !stop.load(SeqCst) {
                        // A fresh connection now and then, so both workers see traffic.
                        if n > 0 && n % 50 == 0 {
                            client = Client::connect(addr);
                        }
                        match client.get("/") {
                            Ok(r) if r.status() == 200 => {}
                            Ok(r) => failures.lock().unwrap().push(format!(
                                "{}: {}",
                                r.status(),
                                r.text()
                            )),
                            Err(e) => {
                                failures.lock().unwrap().push(format!("error: {e}"));
                                client = Client::connect(addr);
                            }
                        }
                        n += 1;
                        done[i].fetch_add(1, SeqCst);
                    }
                })
            })
            .collect();
        Self { stop, done, failures, threads }
    }

    /// Requests each thread completed so far.
    pub fn counts(&self) -> Vec<usize> {
        self.done.iter().map(|d| d.load(SeqCst)).collect()
    }

    /// Requests completed so far.
    pub fn total(&self) -> usize {
        self.counts().iter().sum()
    }

    /// Waits until every thread completed `n` more requests than now (so every request that
    /// was in flight at the call has finished, and `n - 1` new ones started after it).
    pub fn each_completes(&self, n: usize) {
        let base = self.counts();
        expect_within(Duration::from_secs(10), "load progress", || {
            self.counts().iter().zip(&base).all(|(now, then)| *now >= then + n)
        });
    }

    /// Stops the threads; returns the requests completed and the failures.
    pub fn finish(self) -> (usize, Vec<String>) {
        self.stop.store(true, SeqCst);
        for t in self.threads {
            t.join().unwrap();
        }
        let total = self.done.iter().map(|d| d.load(SeqCst)).sum();
        let failures = self.failures.lock().unwrap().clone();
        (total, failures)
    }
}
