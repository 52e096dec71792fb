//! The control plane: the `lb-control` thread owns the canonical configuration, turns each change
//! into a new [`Epoch`], broadcasts it to every worker and answers only after all of them run it.
//!
//! Callers (the admin API, tests, signal handlers) talk to it through a cloneable
//! [`ControlHandle`]; changes are serialised by the thread, so none is lost.

mod store;

pub use store::{
    FileStore, PersistedBackend, PersistedState, STATE_VERSION, StateStore, StoreError,
};

use std::io::Write as _;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, bounded, unbounded};
use tokio::sync::watch;

use fulcrum_config::{
    Algorithm, BackendUrl, BackendUrlError, CachePolicy, CachePolicyError, Config, Timeouts,
};
pub use fulcrum_model::{Backend, BackendId, Epoch};
use fulcrum_model::{HealthSnapshot, StatsSnapshot};
use fulcrum_telemetry::{info, warn};
use fulcrum_util::now_ms;

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
    /// Replace the cache settings (validated; refused with [`ControlError::InvalidCache`]).
    SetCache(CachePolicy),
    /// Drop every cached response: the new epoch carries a bumped `cache_generation`, and
    /// each worker clears its shard when it installs it, so the change answers only after
    /// every worker's cache is empty.
    PurgeCache,
    /// Replace the phase timeouts.
    SetTimeouts(Timeouts),
    /// Add a backend by URL with a relative weight (`AddBackend` means weight 1).
    AddWeightedBackend {
        /// `http://host:port`.
        url: String,
        /// Relative weight, 1..=[`MAX_WEIGHT`].
        weight: u32,
    },
}

pub use fulcrum_config::{DEFAULT_WEIGHT, MAX_WEIGHT};

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
    /// A weight outside 1..=[`MAX_WEIGHT`].
    #[error("weight {0} out of range (1..={MAX_WEIGHT})")]
    InvalidWeight(u32),
    /// The state store refused the change; nothing was applied.
    #[error("the change was not applied: {0}")]
    Persist(String),
    /// Cache settings that cannot work.
    #[error(transparent)]
    InvalidCache(#[from] CachePolicyError),
}

/// A backend as reported to operators.
#[derive(Debug, Clone, PartialEq)]
pub struct BackendView {
    /// Server-assigned identifier.
    pub id: BackendId,
    /// Normalised URL.
    pub url: String,
    /// Relative weight: the backend's share of requests under every algorithm.
    pub weight: u32,
    /// Merged counters.
    pub stats: StatsSnapshot,
    /// Active health; `None` when `[health_check]` is off.
    pub health: Option<HealthSnapshot>,
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
    pub cache: CachePolicy,
    /// Phase timeouts.
    pub timeouts: Timeouts,
    /// The configuration the process started with (listeners, limits, ...).
    pub config: Config,
    /// Where applied changes are persisted, if anywhere.
    pub state_file: Option<std::path::PathBuf>,
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
    backends: watch::Receiver<Vec<Arc<Backend>>>,
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

    /// The current backends, updated after every epoch that adds or removes one (for
    /// `lb-health`). The sender closes when the control thread stops.
    pub fn backends(&self) -> watch::Receiver<Vec<Arc<Backend>>> {
        self.backends.clone()
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
    store: Option<Box<dyn StateStore>>,
    /// Publishes the backend list to [`ControlHandle::backends`] receivers.
    backends_tx: watch::Sender<Vec<Arc<Backend>>>,
}

/// Builds the first epoch from the configuration (backend URLs resolved here).
pub fn initial_epoch(config: &Config, workers: usize) -> Result<Arc<Epoch>, ControlError> {
    let backends = config
        .backends
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let url = BackendUrl::parse(&b.url)?;
            check_weight(b.weight)?;
            Ok(Arc::new(Backend::new(i as BackendId + 1, url, b.weight, workers)))
        })
        .collect::<Result<Vec<_>, ControlError>>()?;
    Ok(Arc::new(Epoch {
        id: 1,
        algorithm: config.algorithm,
        backends,
        cache: config.cache.clone(),
        cache_generation: 0,
        timeouts: config.timeouts,
        health: config.health,
    }))
}

/// Why the saved state could not be restored at start.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// The state file is unreadable, corrupt or cannot be written.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A backend in the configuration or the state file is unusable.
    #[error("{origin}: {source}")]
    Backend {
        /// The configuration or the state file.
        origin: String,
        /// Why.
        source: ControlError,
    },
}

/// The state the control plane starts from: the first epoch and what it needs to continue.
#[derive(Debug)]
pub struct Restored {
    /// The epoch the workers start with.
    pub first: Arc<Epoch>,
    next_backend_id: BackendId,
    store: Option<Box<dyn StateStore>>,
}

/// Builds the first epoch from the state file when `config.state_file` names one that exists
/// (it supersedes the configuration's backends, algorithm, cache and timeouts), from the
/// configuration otherwise; then saves it, so an unwritable state file stops the start too.
pub fn restore(config: &Config, workers: usize) -> Result<Restored, RestoreError> {
    let store: Option<Box<dyn StateStore>> =
        config.state_file.as_ref().map(|p| Box::new(FileStore::new(p)) as _);
    let saved = match &store {
        Some(store) => store.load()?,
        None => None,
    };
    let restored = match saved {
        None => {
            let first = initial_epoch(config, workers)
                .map_err(|source| RestoreError::Backend { origin: "backends".into(), source })?;
            let next_backend_id = first.backends.iter().map(|b| b.id).max().unwrap_or(0) + 1;
            Restored { first, next_backend_id, store }
        }
        Some(saved) => {
            let origin = || config.state_file.as_ref().map(|p| p.display().to_string());
            let backends = saved
                .backends
                .iter()
                .map(|b| {
                    let url = BackendUrl::parse(&b.url)?;
                    check_weight(b.weight)?;
                    Ok(Arc::new(Backend::new(b.id, url, b.weight, workers)))
                })
                .collect::<Result<Vec<_>, ControlError>>()
                .map_err(|source| RestoreError::Backend {
                    origin: origin().unwrap_or_default(),
                    source,
                })?;
            info!(
                "state restored",
                file = origin().unwrap_or_default(),
                epoch = saved.epoch,
                backends = backends.len(),
                algorithm = saved.algorithm
            );
            let first = Arc::new(Epoch {
                id: saved.epoch + 1,
                algorithm: saved.algorithm,
                backends,
                cache: saved.cache,
                cache_generation: 0,
                timeouts: saved.timeouts,
                health: config.health,
            });
            Restored { first, next_backend_id: saved.next_backend_id, store }
        }
    };
    if let Some(store) = &restored.store {
        store.save(&persisted(&restored.first, restored.next_backend_id))?;
    }
    Ok(restored)
}

/// Refuses a weight outside 1..=[`MAX_WEIGHT`].
fn check_weight(weight: u32) -> Result<(), ControlError> {
    if (1..=MAX_WEIGHT).contains(&weight) {
        Ok(())
    } else {
        Err(ControlError::InvalidWeight(weight))
    }
}

/// The persisted form of an epoch.
fn persisted(epoch: &Epoch, next_backend_id: BackendId) -> PersistedState {
    PersistedState {
        version: STATE_VERSION,
        epoch: epoch.id,
        next_backend_id,
        algorithm: epoch.algorithm,
        backends: epoch
            .backends
            .iter()
            .map(|b| PersistedBackend { id: b.id, url: b.url.url.clone(), weight: b.weight })
            .collect(),
        cache: epoch.cache.clone(),
        timeouts: epoch.timeouts,
    }
}

/// Starts the `lb-control` thread. `first` must be the epoch the workers were started with.
/// Nothing is persisted; see [`spawn_restored`].
pub fn spawn(
    config: Config,
    first: Arc<Epoch>,
    workers: Vec<WorkerLink>,
    acks: Receiver<Ack>,
) -> std::io::Result<(ControlHandle, std::thread::JoinHandle<()>)> {
    let next_backend_id = first.backends.iter().map(|b| b.id).max().unwrap_or(0) + 1;
    spawn_restored(config, Restored { first, next_backend_id, store: None }, workers, acks)
}

/// Starts the `lb-control` thread from [`restore`]'s result; every accepted change is saved to
/// the store before it is broadcast, so a change that answers `Ok` survives a restart.
pub fn spawn_restored(
    config: Config,
    restored: Restored,
    workers: Vec<WorkerLink>,
    acks: Receiver<Ack>,
) -> std::io::Result<(ControlHandle, std::thread::JoinHandle<()>)> {
    let (tx, rx) = unbounded();
    let Restored { first, next_backend_id, store } = restored;
    let (backends_tx, backends) = watch::channel(first.backends.clone());
    let state =
        ControlState { config, current: first, next_backend_id, workers, acks, store, backends_tx };
    let thread =
        std::thread::Builder::new().name("lb-control".into()).spawn(move || run(state, rx))?;
    Ok((ControlHandle { tx, backends }, thread))
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
            cache: cur.cache.clone(),
            cache_generation: cur.cache_generation,
            timeouts: cur.timeouts,
            health: cur.health,
        };
        let mut created = None;
        let mut next_backend_id = self.next_backend_id;
        match change {
            Change::SetAlgorithm(algorithm) => next.algorithm = algorithm,
            Change::SetCache(cache) => {
                cache.validate()?;
                next.cache = cache;
            }
            Change::PurgeCache => next.cache_generation += 1,
            Change::SetTimeouts(timeouts) => next.timeouts = timeouts,
            Change::AddBackend { url } => {
                let backend =
                    self.new_backend(&next, &url, DEFAULT_WEIGHT, &mut next_backend_id)?;
                created = Some(backend.clone());
                next.backends.push(backend);
            }
            Change::AddWeightedBackend { url, weight } => {
                let backend = self.new_backend(&next, &url, weight, &mut next_backend_id)?;
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
        // Persist first: a change the store refuses is not applied at all.
        if let Some(store) = &self.store {
            store
                .save(&persisted(&next, next_backend_id))
                .map_err(|e| ControlError::Persist(e.to_string()))?;
        }
        self.next_backend_id = next_backend_id;
        let epoch = Arc::new(next);
        let broadcast = self.broadcast(&epoch);
        // Even unacknowledged, the epoch is the truth now (see `broadcast`).
        self.publish_backends(&epoch);
        broadcast?;
        info!(
            "epoch applied",
            epoch = epoch.id,
            algorithm = epoch.algorithm,
            backends = epoch.backends.len()
        );
        self.current = epoch;
        let now = now_ms();
        let backend = created.map(|b| self.view_of(&b, now));
        Ok(Applied { epoch: self.current.id, backend })
    }

    /// Validates and builds a backend for `next`, taking the next id.
    fn new_backend(
        &self,
        next: &Epoch,
        url: &str,
        weight: u32,
        next_backend_id: &mut BackendId,
    ) -> Result<Arc<Backend>, ControlError> {
        check_weight(weight)?;
        let url = BackendUrl::parse(url)?;
        if next.backends.iter().any(|b| b.url.url == url.url) {
            return Err(ControlError::DuplicateBackend(url.url));
        }
        let backend = Arc::new(Backend::new(*next_backend_id, url, weight, self.workers.len()));
        *next_backend_id += 1;
        Ok(backend)
    }

    /// Tells [`ControlHandle::backends`] receivers about `epoch`'s backends if the set changed.
    fn publish_backends(&self, epoch: &Epoch) {
        self.backends_tx.send_if_modified(|list| {
            let same = list.len() == epoch.backends.len()
                && list.iter().zip(&epoch.backends).all(|(a, b)| a.id == b.id);
            if !same {
                list.clone_from(&epoch.backends);
            }
            !same
        });
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
            backends: e.backends.iter().map(|b| self.view_of(b, now)).collect(),
            cache: e.cache.clone(),
            timeouts: e.timeouts,
            config: self.config.clone(),
            state_file: self.config.state_file.clone(),
        }
    }

    fn view_of(&self, backend: &Backend, now: u64) -> BackendView {
        BackendView {
            id: backend.id,
            url: backend.url.url.clone(),
            weight: backend.weight,
            stats: backend.stats.snapshot(now),
            health: self.config.health_check.enabled.then(|| backend.health.snapshot(now)),
        }
    }
}
