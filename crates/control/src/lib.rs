//! The control plane: the `lb-control` thread owns the canonical configuration, turns each change
//! into a new [`Epoch`], broadcasts it to every worker and answers only after all of them run it.
//!
//! Callers (the admin API, tests, signal handlers) talk to it through a cloneable
//! [`ControlHandle`]; changes are serialised by the thread, so none is lost.

mod store;

pub use store::{
    FileStore, PersistedBackend, PersistedPool, PersistedState, STATE_VERSION, StateStore,
    StoreError,
};

use std::io::Write as _;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, bounded, unbounded};
use tokio::sync::watch;

use fulcrum_config::{
    Algorithm, BackendConfig, BackendUrl, BackendUrlError, CachePolicy, CachePolicyError, Config,
    DEFAULT_POOL, MAX_POOLS, RouteConfig, RouteError, Timeouts, check_pool_name,
};
pub use fulcrum_model::{Backend, BackendId, Epoch};
use fulcrum_model::{EpochSettings, Pool};
use fulcrum_model::{HealthSnapshot, StatsSnapshot};
use fulcrum_telemetry::{info, warn};
use fulcrum_util::now_ms;

/// How long a change waits for every worker to acknowledge its epoch.
const ACK_TIMEOUT: Duration = Duration::from_secs(5);

/// A change to the running configuration. Each one becomes exactly one epoch (or none, when it
/// is refused).
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// Switch the balancing algorithm of the `default` pool.
    SetAlgorithm(Algorithm),
    /// Add a backend to the `default` pool by URL.
    AddBackend {
        /// `http://host:port`.
        url: String,
    },
    /// Remove a backend of the `default` pool: it gets no new requests, in-flight ones finish,
    /// idle connections close.
    RemoveBackend(BackendId),
    /// Replace the cache settings (validated; refused with [`ControlError::InvalidCache`]).
    SetCache(CachePolicy),
    /// Drop every cached response: the new epoch carries a bumped `cache_generation`, and
    /// each worker clears its shard when it installs it, so the change answers only after
    /// every worker's cache is empty.
    PurgeCache,
    /// Replace the phase timeouts.
    SetTimeouts(Timeouts),
    /// Add a backend to the `default` pool by URL with a relative weight (`AddBackend` means
    /// weight 1).
    AddWeightedBackend {
        /// `http://host:port`.
        url: String,
        /// Relative weight, 1..=[`MAX_WEIGHT`].
        weight: u32,
    },
    /// Create a pool (refused with [`ControlError::DuplicatePool`] when the name is taken).
    CreatePool {
        /// Its name (see [`check_pool_name`]).
        name: String,
        /// Its algorithm.
        algorithm: Algorithm,
        /// Its backends.
        backends: Vec<BackendConfig>,
    },
    /// Delete a pool and its backends; refused for `default` and while a route names it.
    DeletePool(String),
    /// Add a backend to a pool.
    AddPoolBackend {
        /// The pool.
        pool: String,
        /// `http://host:port`.
        url: String,
        /// Relative weight, 1..=[`MAX_WEIGHT`].
        weight: u32,
    },
    /// Remove a backend from a pool.
    RemovePoolBackend {
        /// The pool.
        pool: String,
        /// The backend.
        id: BackendId,
    },
    /// Switch a pool's balancing algorithm.
    SetPoolAlgorithm {
        /// The pool.
        pool: String,
        /// The algorithm.
        algorithm: Algorithm,
    },
    /// Replace the whole ordered route list.
    SetRoutes(Vec<RouteConfig>),
}

pub use fulcrum_config::{DEFAULT_WEIGHT, MAX_WEIGHT};

/// What a change produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Applied {
    /// The epoch every worker now runs.
    pub epoch: u64,
    /// The backend an `AddBackend`, `AddWeightedBackend` or `AddPoolBackend` created.
    pub backend: Option<BackendView>,
    /// The pool a [`Change::CreatePool`] created.
    pub pool: Option<PoolView>,
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
    /// No pool has that name.
    #[error("no pool named `{0}`")]
    UnknownPool(String),
    /// A pool of that name exists already.
    #[error("pool `{0}` already exists")]
    DuplicatePool(String),
    /// A pool that cannot be created as given (its name, its backends, too many pools).
    #[error("{0}")]
    InvalidPool(String),
    /// The `default` pool cannot be deleted.
    #[error("the `default` pool cannot be deleted")]
    DefaultPool,
    /// A route still sends requests to the pool.
    #[error("pool `{pool}` is in use by routes[{route}]; change the routes first")]
    PoolInUse {
        /// The pool.
        pool: String,
        /// The first route that names it.
        route: usize,
    },
    /// A route list that is malformed, names an unknown pool or has a route that can never
    /// match; nothing was changed.
    #[error(transparent)]
    InvalidRoutes(#[from] RouteError),
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

/// A pool as reported to operators.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolView {
    /// Its name.
    pub name: String,
    /// Its algorithm.
    pub algorithm: Algorithm,
    /// Its backends with merged counters.
    pub backends: Vec<BackendView>,
}

/// The current configuration and state, as reported to operators.
#[derive(Debug, Clone)]
pub struct StateView {
    /// Current epoch number.
    pub epoch: u64,
    /// The `default` pool's algorithm.
    pub algorithm: Algorithm,
    /// The `default` pool's backends with merged counters.
    pub backends: Vec<BackendView>,
    /// Every pool, `default` first.
    pub pools: Vec<PoolView>,
    /// The routes, in order.
    pub routes: Vec<RouteConfig>,
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

    /// The current backends of every pool, updated after every epoch that adds or removes one
    /// (for `lb-health`). The sender closes when the control thread stops.
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

/// Builds the first epoch from the configuration (backend URLs resolved here): the `default`
/// pool from `backends` and `algorithm`, then `pools` in order, ids numbered across them.
pub fn initial_epoch(config: &Config, workers: usize) -> Result<Arc<Epoch>, ControlError> {
    let mut next_id: BackendId = 1;
    let mut build = |name: &str, algorithm: Algorithm, list: &[BackendConfig]| {
        let mut pool = Pool::new(name, algorithm);
        for b in list {
            let url = BackendUrl::parse(&b.url)?;
            check_weight(b.weight)?;
            pool.backends.push(Arc::new(Backend::new(
                next_id,
                pool.name.clone(),
                url,
                b.weight,
                workers,
            )));
            next_id += 1;
        }
        Ok::<_, ControlError>(pool)
    };
    let mut pools = vec![build(DEFAULT_POOL, config.algorithm, &config.backends)?];
    for p in &config.pools {
        pools.push(build(&p.name, p.algorithm, &p.backends)?);
    }
    let settings = EpochSettings {
        cache: config.cache.clone(),
        cache_generation: 0,
        timeouts: config.timeouts,
        health: config.health,
    };
    Ok(Arc::new(Epoch::new(1, pools, config.routes.clone(), settings)?))
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
            let first = initial_epoch(config, workers).map_err(|source| RestoreError::Backend {
                origin: "configuration".into(),
                source,
            })?;
            let next_backend_id = next_id_after(&first);
            Restored { first, next_backend_id, store }
        }
        Some(saved) => {
            let origin = || config.state_file.as_ref().map(|p| p.display().to_string());
            let error =
                |source| RestoreError::Backend { origin: origin().unwrap_or_default(), source };
            let build = |name: &str, algorithm: Algorithm, list: &[PersistedBackend]| {
                let mut pool = Pool::new(name, algorithm);
                for b in list {
                    let url = BackendUrl::parse(&b.url)?;
                    check_weight(b.weight)?;
                    let backend = Backend::new(b.id, pool.name.clone(), url, b.weight, workers);
                    pool.backends.push(Arc::new(backend));
                }
                Ok::<_, ControlError>(pool)
            };
            let mut pools =
                vec![build(DEFAULT_POOL, saved.algorithm, &saved.backends).map_err(error)?];
            for p in &saved.pools {
                pools.push(build(&p.name, p.algorithm, &p.backends).map_err(error)?);
            }
            let settings = EpochSettings {
                cache: saved.cache,
                cache_generation: 0,
                timeouts: saved.timeouts,
                health: config.health,
            };
            let first = Epoch::new(saved.epoch + 1, pools, saved.routes, settings)
                .map_err(|e| error(e.into()))?;
            info!(
                "state restored",
                file = origin().unwrap_or_default(),
                epoch = saved.epoch,
                backends = first.backends().count(),
                pools = first.pools().len(),
                routes = first.routes().configs().len(),
                algorithm = saved.algorithm
            );
            Restored { first: Arc::new(first), next_backend_id: saved.next_backend_id, store }
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

/// The id after the largest one in `epoch`.
fn next_id_after(epoch: &Epoch) -> BackendId {
    epoch.backends().map(|b| b.id).max().unwrap_or(0) + 1
}

/// The persisted form of an epoch.
fn persisted(epoch: &Epoch, next_backend_id: BackendId) -> PersistedState {
    let backends = |pool: &Pool| {
        pool.backends
            .iter()
            .map(|b| PersistedBackend { id: b.id, url: b.url.url.clone(), weight: b.weight })
            .collect()
    };
    let default = epoch.default_pool();
    PersistedState {
        version: STATE_VERSION,
        epoch: epoch.id,
        next_backend_id,
        algorithm: default.algorithm,
        backends: backends(default),
        pools: epoch.pools()[1..]
            .iter()
            .map(|p| PersistedPool {
                name: p.name.to_string(),
                algorithm: p.algorithm,
                backends: backends(p),
            })
            .collect(),
        routes: epoch.routes().configs().to_vec(),
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
    let next_backend_id = next_id_after(&first);
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
    let (backends_tx, backends) = watch::channel(first.backends().cloned().collect());
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
        let mut pools = cur.pools().to_vec();
        let mut routes = cur.routes().configs().to_vec();
        let mut settings = cur.settings();
        let mut created = None;
        let mut created_pool = None;
        let mut next_backend_id = self.next_backend_id;
        match change {
            Change::SetAlgorithm(algorithm) => pools[0].algorithm = algorithm,
            Change::SetPoolAlgorithm { pool, algorithm } => {
                pool_mut(&mut pools, &pool)?.algorithm = algorithm;
            }
            Change::SetCache(cache) => {
                cache.validate()?;
                settings.cache = cache;
            }
            Change::PurgeCache => settings.cache_generation += 1,
            Change::SetTimeouts(timeouts) => settings.timeouts = timeouts,
            Change::AddBackend { url } => {
                let pool = &mut pools[0];
                let backend = self.new_backend(pool, &url, DEFAULT_WEIGHT, &mut next_backend_id)?;
                created = Some(backend.clone());
                pool.backends.push(backend);
            }
            Change::AddWeightedBackend { url, weight } => {
                let pool = &mut pools[0];
                let backend = self.new_backend(pool, &url, weight, &mut next_backend_id)?;
                created = Some(backend.clone());
                pool.backends.push(backend);
            }
            Change::AddPoolBackend { pool, url, weight } => {
                let pool = pool_mut(&mut pools, &pool)?;
                let backend = self.new_backend(pool, &url, weight, &mut next_backend_id)?;
                created = Some(backend.clone());
                pool.backends.push(backend);
            }
            Change::RemoveBackend(id) => remove_backend(&mut pools[0], id)?,
            Change::RemovePoolBackend { pool, id } => {
                remove_backend(pool_mut(&mut pools, &pool)?, id)?;
            }
            Change::CreatePool { name, algorithm, backends } => {
                if pools.iter().any(|p| *p.name == name) {
                    return Err(ControlError::DuplicatePool(name));
                }
                check_pool_name(&name).map_err(ControlError::InvalidPool)?;
                if pools.len() >= MAX_POOLS {
                    return Err(ControlError::InvalidPool(format!(
                        "at most {MAX_POOLS} pools (`default` included)"
                    )));
                }
                let mut pool = Pool::new(&name, algorithm);
                for (i, b) in backends.iter().enumerate() {
                    let backend = self
                        .new_backend(&pool, &b.url, b.weight, &mut next_backend_id)
                        .map_err(|e| match e {
                        ControlError::DuplicateBackend(url) => ControlError::InvalidPool(format!(
                            "backends[{i}]: `{url}` listed twice"
                        )),
                        other => other,
                    })?;
                    pool.backends.push(backend);
                }
                created_pool = Some(pool.clone());
                pools.push(pool);
            }
            Change::DeletePool(name) => {
                if name == DEFAULT_POOL {
                    return Err(ControlError::DefaultPool);
                }
                let index = pools
                    .iter()
                    .position(|p| *p.name == name)
                    .ok_or_else(|| ControlError::UnknownPool(name.clone()))?;
                if let Some(route) = cur.routes().uses_pool(&name) {
                    return Err(ControlError::PoolInUse { pool: name, route });
                }
                pools.remove(index);
            }
            Change::SetRoutes(list) => routes = list,
        }
        let next = Epoch::new(cur.id + 1, pools, routes, settings)?;
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
            algorithm = epoch.default_pool().algorithm,
            backends = epoch.default_pool().backends.len(),
            pools = epoch.pools().len(),
            routes = epoch.routes().configs().len()
        );
        self.current = epoch;
        let now = now_ms();
        let backend = created.map(|b| self.view_of(&b, now));
        let pool = created_pool.map(|p| self.pool_view(&p, now));
        Ok(Applied { epoch: self.current.id, backend, pool })
    }

    /// Validates and builds a backend for `pool`, taking the next id.
    fn new_backend(
        &self,
        pool: &Pool,
        url: &str,
        weight: u32,
        next_backend_id: &mut BackendId,
    ) -> Result<Arc<Backend>, ControlError> {
        check_weight(weight)?;
        let url = BackendUrl::parse(url)?;
        if pool.backends.iter().any(|b| b.url.url == url.url) {
            return Err(ControlError::DuplicateBackend(url.url));
        }
        let backend =
            Backend::new(*next_backend_id, pool.name.clone(), url, weight, self.workers.len());
        *next_backend_id += 1;
        Ok(Arc::new(backend))
    }

    /// Tells [`ControlHandle::backends`] receivers about `epoch`'s backends if the set changed.
    fn publish_backends(&self, epoch: &Epoch) {
        self.backends_tx.send_if_modified(|list| {
            let same = list.len() == epoch.backends().count()
                && list.iter().zip(epoch.backends()).all(|(a, b)| a.id == b.id);
            if !same {
                *list = epoch.backends().cloned().collect();
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
        let pools: Vec<PoolView> = e.pools().iter().map(|p| self.pool_view(p, now)).collect();
        StateView {
            epoch: e.id,
            algorithm: e.default_pool().algorithm,
            backends: pools[0].backends.clone(),
            pools,
            routes: e.routes().configs().to_vec(),
            cache: e.cache.clone(),
            timeouts: e.timeouts,
            config: self.config.clone(),
            state_file: self.config.state_file.clone(),
        }
    }

    fn pool_view(&self, pool: &Pool, now: u64) -> PoolView {
        PoolView {
            name: pool.name.to_string(),
            algorithm: pool.algorithm,
            backends: pool.backends.iter().map(|b| self.view_of(b, now)).collect(),
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

/// The pool named `name` in `pools`.
fn pool_mut<'p>(pools: &'p mut [Pool], name: &str) -> Result<&'p mut Pool, ControlError> {
    pools
        .iter_mut()
        .find(|p| *p.name == *name)
        .ok_or_else(|| ControlError::UnknownPool(name.into()))
}

/// Removes backend `id` from `pool`.
fn remove_backend(pool: &mut Pool, id: BackendId) -> Result<(), ControlError> {
    let before = pool.backends.len();
    pool.backends.retain(|b| b.id != id);
    if pool.backends.len() == before { Err(ControlError::UnknownBackend(id)) } else { Ok(()) }
}
