//! Active health checks on their own thread, `lb-health`: a current-thread tokio runtime with
//! one task per backend, never on a data-plane worker.
//!
//! The thread learns the backend set of every pool from `lb-control` (a watch channel the
//! control thread updates after every epoch, see `ControlHandle::backends` in the control
//! layer, handed over by the composition root): a backend that appears gets a checker task,
//! one that disappears loses it. Results land in the backend's
//! shared [`BackendHealth`] (through its `Arc<Backend>`), which the pickers read with two
//! relaxed loads (state, slow-start ramp). The thread republishes the `fulcrum_backend_up` and
//! `fulcrum_health_checks_total` rows once per interval and at every state change, when it also
//! logs fail-open transitions. It ends when the control thread does (the watch sender is
//! dropped).

mod check;

pub use check::{CheckTls, status_code};
mod metrics;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle as TaskHandle;
use tokio::time::MissedTickBehavior;

use fulcrum_config::{ActiveHealth, BackendProtocol};
use fulcrum_model::{Backend, BackendId, HealthState, Transition};
use fulcrum_telemetry::{info, warn};
use fulcrum_util::now_ms;

pub use self::metrics::HealthMetrics;
use self::metrics::HealthRow;

/// Starts `lb-health`, checking every backend `backends` lists now and later.
pub fn spawn(
    settings: ActiveHealth,
    backends: watch::Receiver<Vec<Arc<Backend>>>,
    metrics: Arc<HealthMetrics>,
    tls: Option<CheckTls>,
) -> std::io::Result<JoinHandle<()>> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    std::thread::Builder::new().name("lb-health".into()).spawn(move || {
        runtime.block_on(Checker::new(settings, metrics, tls).run(backends));
    })
}

/// The `lb-health` thread's state: one task per backend and the fail-open flags.
struct Checker {
    settings: Arc<ActiveHealth>,
    metrics: Arc<HealthMetrics>,
    /// TLS to `https://` and `h2://` backends.
    tls: Option<Arc<CheckTls>>,
    /// Woken by a task after a state change, to republish metrics and re-evaluate fail-open at
    /// once (counters alone are republished once per interval).
    changed: Arc<Notify>,
    backends: Vec<Arc<Backend>>,
    tasks: HashMap<BackendId, TaskHandle<()>>,
    /// Per pool and protocol (`http`, `h2c`): whether every backend of it is down (the pool's
    /// pickers fail open). Only groups failing open are kept.
    failing_open: HashSet<(Arc<str>, BackendProtocol)>,
}

impl Checker {
    fn new(settings: ActiveHealth, metrics: Arc<HealthMetrics>, tls: Option<CheckTls>) -> Self {
        Self {
            settings: Arc::new(settings),
            metrics,
            tls: tls.map(Arc::new),
            changed: Arc::new(Notify::new()),
            backends: Vec::new(),
            tasks: HashMap::new(),
            failing_open: HashSet::new(),
        }
    }

    async fn run(mut self, mut backends: watch::Receiver<Vec<Arc<Backend>>>) {
        let s = &self.settings;
        info!(
            "active health checks started",
            interval_ms = s.interval_ms,
            timeout_ms = s.timeout_ms,
            rise = s.rise,
            fall = s.fall,
            slow_start_ms = s.slow_start_ms,
            path = s.path
        );
        let current = backends.borrow_and_update().clone();
        self.reconcile(current);
        let changed = self.changed.clone();
        let mut republish = tokio::time::interval(self.settings.interval());
        republish.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                update = backends.changed() => {
                    if update.is_err() {
                        break;
                    }
                    let current = backends.borrow_and_update().clone();
                    self.reconcile(current);
                }
                () = changed.notified() => self.publish(),
                _ = republish.tick() => self.publish(),
            }
        }
        for task in self.tasks.values() {
            task.abort();
        }
    }

    /// Starts tasks for new backends and stops those of removed ones.
    fn reconcile(&mut self, backends: Vec<Arc<Backend>>) {
        self.tasks.retain(|id, task| {
            let keep = backends.iter().any(|b| b.id == *id);
            if !keep {
                task.abort();
            }
            keep
        });
        for backend in &backends {
            self.tasks.entry(backend.id).or_insert_with(|| {
                tokio::spawn(check_loop(
                    backend.clone(),
                    self.settings.clone(),
                    self.tls.clone(),
                    self.changed.clone(),
                ))
            });
        }
        self.backends = backends;
        self.publish();
    }

    /// Republishes the metric rows and logs fail-open transitions.
    fn publish(&mut self) {
        let now = now_ms();
        let rows = self.backends.iter().map(|b| {
            let s = b.health.snapshot(now);
            HealthRow {
                pool: b.pool.to_string(),
                url: b.url.url.clone(),
                up: s.state != HealthState::Down,
                checks_ok: s.counters.checks_ok,
                checks_failed: s.counters.checks_failed,
            }
        });
        self.metrics.publish(rows.collect());
        let mut groups: Vec<(Arc<str>, BackendProtocol)> =
            self.backends.iter().map(|b| (b.pool.clone(), b.url.protocol)).collect();
        groups.sort_by(|a, b| a.0.cmp(&b.0).then((a.1 as u8).cmp(&(b.1 as u8))));
        groups.dedup();
        let all_down = |(pool, protocol): &(Arc<str>, BackendProtocol)| {
            self.backends
                .iter()
                .filter(|b| b.pool == *pool && b.url.protocol == *protocol)
                .all(|b| b.health.is_down())
        };
        let down: HashSet<(Arc<str>, BackendProtocol)> =
            groups.into_iter().filter(|g| all_down(g)).collect();
        for (pool, protocol) in down.difference(&self.failing_open) {
            warn!(
                "every backend is down: failing open, requests go to all of them",
                pool = pool,
                protocol = protocol_name(*protocol)
            );
        }
        for (pool, protocol) in self.failing_open.difference(&down) {
            info!(
                "a backend is up again: fail-open over",
                pool = pool,
                protocol = protocol_name(*protocol)
            );
        }
        self.failing_open = down;
    }
}

/// Checks `backend` every `interval_ms` until aborted, logging each up/down transition and
/// waking `changed` on it.
async fn check_loop(
    backend: Arc<Backend>,
    settings: Arc<ActiveHealth>,
    tls: Option<Arc<CheckTls>>,
    changed: Arc<Notify>,
) {
    let mut ticker = tokio::time::interval(settings.interval());
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let result = tokio::time::timeout(
            settings.timeout(),
            check::check(&backend.url, &settings, tls.as_deref()),
        )
        .await
        .unwrap_or(Err(check::CheckError::Timeout(settings.timeout_ms)))
        .map_err(|e| e.to_string());
        let reason = result.as_ref().err().cloned().unwrap_or_default();
        let health = &backend.health;
        let transition = health.record(result, settings.rise, settings.fall, unix_ms());
        health.finish_slow_start(now_ms());
        match transition {
            Some(Transition { from, to: HealthState::Down }) => warn!(
                "backend down: active health check failed",
                pool = backend.pool,
                backend = backend.url,
                from = from.as_str(),
                to = "down",
                fall = settings.fall,
                error = reason
            ),
            Some(Transition { from, to }) => {
                let slow_start_ms =
                    if from == HealthState::Down { settings.slow_start_ms } else { 0 };
                health.start_slow_start(now_ms(), slow_start_ms);
                info!(
                    "backend up: active health check passed",
                    pool = backend.pool,
                    backend = backend.url,
                    from = from.as_str(),
                    to = to.as_str(),
                    rise = settings.rise,
                    slow_start_ms = slow_start_ms
                );
            }
            None => {}
        }
        if transition.is_some() {
            changed.notify_one();
        }
    }
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// The log name of a backend protocol.
fn protocol_name(protocol: BackendProtocol) -> &'static str {
    match protocol {
        BackendProtocol::Http1 => "http",
        BackendProtocol::H2c => "h2c",
    }
}
