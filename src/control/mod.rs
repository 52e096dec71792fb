//! The control plane: the `lb-control` thread owns the canonical configuration, turns each change
//! into a new [`Epoch`], broadcasts it to every worker and answers only after all of them run it.
//!
//! Callers (the admin API, tests, signal handlers) talk to it through a cloneable
//! [`ControlHandle`]; changes are serialised by the thread, so none is lost.

pub mod epoch;

use std::io::Write as _;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, bounded, unbounded};

pub use self::epoch::{Backend, BackendId, Epoch};
use crate::balance::Algorithm;
use crate::balance::stats::{SharedStats, StatsSnapshot, now_ms};
use crate::config::{BackendUrl, BackendUrlError, CacheSettings, Config, Timeouts};
use crate::{info, warn};

/// How long a change waits for every worker to acknowledge its epoch.
const ACK_TIMEOUT: Duration = Duration::from_secs(5);

/// A change to the running configuration.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// Switch the balancing algorithm.
    SetAlgorithm(Algorithm),
    /// Add a backend by URL.
    AddBackend {
        /// `http://host:port`.
        url: String,
    },
    /// Remove a backend: it gets no new requests, in-flight ones finish, idle connections close.
    RemoveBackend(BackendId),
    /// Replace the cache settings.
    SetCache(CacheSettings),
    /// Replace the phase timeouts.
    SetTimeouts(Timeouts),
}

/// What a change produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Applied {
    /// The epoch every worker now runs.
    pub epoch: u64,
    /// The backend a [`Change::AddBackend`] created.
    pub backend: Option<BackendView>,
}

/// Why a change or query was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ControlError {
    /// The backend URL is malformed or unsupported.
    #[error(transparent)]
    InvalidUrl(#[from] BackendUrlError),
    /// The backend URL is already present.
    #[error("backend `{0}` already exists")]
    DuplicateBackend(String),
    /// No backend has that id.
    #[error("no backend with id {0}")]
    UnknownBackend(BackendId),
    /// Some worker did not acknowledge the new epoch in time.
    #[error("workers did not acknowledge epoch {0} in time")]
    WorkersUnresponsive(u64),
    /// The control thread has stopped (shutdown in progress).
    #[error("the control plane has stopped")]
    Stopped,
}

/// A backend as reported to operators.
#[derive(Debug, Clone, PartialEq)]
pub struct BackendView {
    /// Server-assigned identifier.
    pub id: BackendId,
    /// Normalised URL.
    pub url: String,
    /// Merged counters.
    pub stats: StatsSnapshot,
}

/// The current configuration and state, as reported to operators.
#[derive(Debug, Clone)]
pub struct StateView {
    /// Current epoch number.
    pub epoch: u64,
    /// Current algorithm.
    pub algorithm: Algorithm,
    /// Backends with merged counters.
    pub backends: Vec<BackendView>,
    /// Cache settings.
    pub cache: CacheSettings,
    /// Phase timeouts.
    pub timeouts: Timeouts,
    /// The configuration the process started with (listeners, limits, ...).
    pub config: Config,
}

/// A message from the control thread to one worker.
#[derive(Debug)]
pub enum WorkerMsg {
    /// Run this epoch from the next request on, then acknowledge it.
    Install(Arc<Epoch>),
    /// Stop accepting, drain, exit.
    Shutdown,
}

/// The control thread's end of one worker's inbox.
#[derive(Debug)]
pub struct WorkerLink {
    /// Messages for the worker.
    pub inbox: Sender<WorkerMsg>,
    /// Wakes the worker's inbox task (it never blocks on the channel itself).
    pub wake: UnixStream,
}

impl WorkerLink {
    fn send(&mut self, msg: WorkerMsg) -> bool {
        if self.inbox.send(msg).is_err() {
            return false;
        }
        // A full socket buffer means a wake-up is already pending: nothing is lost.
        match self.wake.write(&[1]) {
            Ok(n) => n == 1,
            Err(e) => e.kind() == std::io::ErrorKind::WouldBlock,
        }
    }
}

/// An acknowledgement: worker `worker` runs epoch `epoch`.
#[derive(Debug, Clone, Copy)]
pub struct Ack {
    /// The worker index.
    pub worker: usize,
    /// The epoch it installed.
    pub epoch: u64,
}

enum Command {
    Apply(Change, Sender<Result<Applied, ControlError>>),
    Snapshot(Sender<StateView>),
    Shutdown,
}

/// A cloneable handle to the control thread.
#[derive(Debug, Clone)]
pub struct ControlHandle {
    tx: Sender<Command>,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::Apply(c, _) => write!(f, "Apply({c:?})"),
            Command::Snapshot(_) => f.write_str("Snapshot"),
            Command::Shutdown => f.write_str("Shutdown"),
        }
    }
}

impl ControlHandle {
    /// Applies a change; returns once every worker runs the resulting epoch.
    /// Blocks the caller: call it from the admin thread or a test, never from a worker.
    #[expect(clippy::disallowed_methods, reason = "blocking on the reply is the contract")]
    pub fn apply(&self, change: Change) -> Result<Applied, ControlError> {
        let (tx, rx) = bounded(1);
        self.tx.send(Command::Apply(change, tx)).map_err(|_| ControlError::Stopped)?;
        rx.recv().map_err(|_| ControlError::Stopped)?
    }

    /// The current configuration with merged per-backend counters. Blocks like `apply`.
    #[expect(clippy::disallowed_methods, reason = "blocking on the reply is the contract")]
    pub fn snapshot(&self) -> Result<StateView, ControlError> {
        let (tx, rx) = bounded(1);
        self.tx.send(Command::Snapshot(tx)).map_err(|_| ControlError::Stopped)?;
        rx.recv().map_err(|_| ControlError::Stopped)
    }

    /// Tells every worker to drain and stop; returns at once.
    pub fn shutdown(&self) {
        let _ = self.tx.send(Command::Shutdown);
    }
}

/// The canonical state owned by the control thread.
struct ControlState {
    config: Config,
    current: Arc<Epoch>,
    next_backend_id: BackendId,
    workers: Vec<WorkerLink>,
    acks: Receiver<Ack>,
}

/// Builds the first epoch from the configuration (backend URLs resolved here).
pub fn initial_epoch(config: &Config, workers: usize) -> Result<Arc<Epoch>, ControlError> {
    let backends = config
        .backends
        .iter()
        .enumerate()
        .map(|(i, b)| {
            Ok(Arc::new(Backend {
                id: i as BackendId + 1,
                url: BackendUrl::parse(&b.url)?,
                stats: SharedStats::new(workers),
            }))
        })
        .collect::<Result<Vec<_>, ControlError>>()?;
    Ok(Arc::new(Epoch {
        id: 1,
        algorithm: config.algorithm,
        backends,
        cache: config.cache,
        timeouts: config.timeouts,
        health: config.health,
    }))
}

/// Starts the `lb-control` thread. `first` must be the epoch the workers were started with.
pub fn spawn(
    config: Config,
    first: Arc<Epoch>,
    workers: Vec<WorkerLink>,
    acks: Receiver<Ack>,
) -> std::io::Result<(ControlHandle, std::thread::JoinHandle<()>)> {
    let (tx, rx) = unbounded();
    let next_backend_id = first.backends.iter().map(|b| b.id).max().unwrap_or(0) + 1;
    let state = ControlState { config, current: first, next_backend_id, workers, acks };
    let thread =
        std::thread::Builder::new().name("lb-control".into()).spawn(move || run(state, rx))?;
    Ok((ControlHandle { tx }, thread))
}

#[expect(clippy::disallowed_methods, reason = "the control thread waits for commands")]
fn run(mut state: ControlState, commands: Receiver<Command>) {
    while let Ok(command) = commands.recv() {
        match command {
            Command::Apply(change, reply) => {
                let _ = reply.send(state.apply(change));
            }
            Command::Snapshot(reply) => {
                let _ = reply.send(state.view());
            }
            Command::Shutdown => break,
        }
    }
    for link in &mut state.workers {
        link.send(WorkerMsg::Shutdown);
    }
}

impl ControlState {
    fn apply(&mut self, change: Change) -> Result<Applied, ControlError> {
        let cur = &self.current;
        let mut next = Epoch {
            id: cur.id + 1,
            algorithm: cur.algorithm,
            backends: cur.backends.clone(),
            cache: cur.cache,
            timeouts: cur.timeouts,
            health: cur.health,
        };
        let mut created = None;
        match change {
            Change::SetAlgorithm(algorithm) => next.algorithm = algorithm,
            Change::SetCache(cache) => next.cache = cache,
            Change::SetTimeouts(timeouts) => next.timeouts = timeouts,
            Change::AddBackend { url } => {
                let url = BackendUrl::parse(&url)?;
                if next.backends.iter().any(|b| b.url.url == url.url) {
                    return Err(ControlError::DuplicateBackend(url.url));
                }
                let backend = Arc::new(Backend {
                    id: self.next_backend_id,
                    url,
                    stats: SharedStats::new(self.workers.len()),
                });
                self.next_backend_id += 1;
                created = Some(backend.clone());
                next.backends.push(backend);
            }
            Change::RemoveBackend(id) => {
                let before = next.backends.len();
                next.backends.retain(|b| b.id != id);
                if next.backends.len() == before {
                    return Err(ControlError::UnknownBackend(id));
                }
            }
        }
        let epoch = Arc::new(next);
        self.broadcast(&epoch)?;
        info!(
            "epoch applied",
            epoch = epoch.id,
            algorithm = epoch.algorithm,
            backends = epoch.backends.len()
        );
        self.current = epoch;
        let now = now_ms();
        Ok(Applied { epoch: self.current.id, backend: created.map(|b| view_of(&b, now)) })
    }

    /// Sends the epoch to every worker and waits until all of them acknowledged it.
    fn broadcast(&mut self, epoch: &Arc<Epoch>) -> Result<(), ControlError> {
        let mut pending = vec![true; self.workers.len()];
        for (i, link) in self.workers.iter_mut().enumerate() {
            if !link.send(WorkerMsg::Install(epoch.clone())) {
                pending[i] = false;
                warn!("worker inbox closed", worker = i);
            }
        }
        let deadline = Instant::now() + ACK_TIMEOUT;
        while pending.iter().any(|&p| p) {
            match self.acks.recv_deadline(deadline) {
                Ok(ack) if ack.epoch == epoch.id => {
                    if let Some(p) = pending.get_mut(ack.worker) {
                        *p = false;
                    }
                }
                Ok(_) => {}
                Err(_) => {
                    warn!("epoch not acknowledged in time", epoch = epoch.id);
                    // The workers that did ack run the new epoch; keep it as the truth.
                    self.current = epoch.clone();
                    return Err(ControlError::WorkersUnresponsive(epoch.id));
                }
            }
        }
        Ok(())
    }

    fn view(&self) -> StateView {
        let now = now_ms();
        let e = &self.current;
        StateView {
            epoch: e.id,
            algorithm: e.algorithm,
            backends: e.backends.iter().map(|b| view_of(b, now)).collect(),
            cache: e.cache,
            timeouts: e.timeouts,
            config: self.config.clone(),
        }
    }
}

fn view_of(backend: &Backend, now: u64) -> BackendView {
    BackendView { id: backend.id, url: backend.url.url.clone(), stats: backend.stats.snapshot(now) }
}
