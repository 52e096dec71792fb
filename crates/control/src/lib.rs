//! The control plane: the `lb-control` thread owns the canonical configuration, turns each change
//! into a new [`Epoch`], broadcasts it to every worker and answers only after all of them run it.
//! With the etcd store (`[store] kind = "etcd"`), the `lb-store` thread keeps that configuration
//! equal to one document shared by every instance: admin changes are compare-and-swapped into
//! etcd first, and every new revision becomes a local epoch (see `docs/store.md`).
//!
//! Callers (the admin API, tests, signal handlers) talk to it through a cloneable
//! [`ControlHandle`]; changes are serialised, so none is lost.
//!
//! Modules, bottom up: `state` (the state as data: the shared document, the state file),
//! `change` (a change applied to a document), `epoch` (a document built into an epoch),
//! `status` (what the store is doing), `view` (reports), `control` (the `lb-control` thread),
//! `shared` (the `lb-store` thread), `handle` (the handle).

mod change;
mod control;
mod epoch;
mod handle;
mod shared;
mod state;
mod status;
mod view;

pub use change::{Change, ControlError};
pub use control::{Ack, WorkerLink, WorkerMsg};
pub use fulcrum_config::{DEFAULT_WEIGHT, MAX_WEIGHT};
pub use fulcrum_model::{Backend, BackendId, Epoch};
pub use handle::ControlHandle;
pub use state::{
    DOCUMENT_VERSION, FileStore, PersistedBackend, PersistedPool, PersistedState, STATE_VERSION,
    StateDocument, StateStore, StoreError,
};
pub use status::{Refusal, Source, StoreStatus, StoreView};
pub use view::{Applied, BackendView, PoolView, StateView};

use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender, unbounded};
use tokio::sync::{mpsc, watch};

use fulcrum_config::{Config, StoreKind};
use fulcrum_telemetry::{info, warn};

use crate::control::{Command, ControlState, Persistence};
use crate::epoch::Builder;
use crate::shared::{Request, Seed};

/// Builds the first epoch from the configuration (backend URLs resolved here): the `default`
/// pool from `backends` and `algorithm`, then `pools` in order, ids numbered across them.
pub fn initial_epoch(config: &Config, workers: usize) -> Result<Arc<Epoch>, ControlError> {
    let doc = epoch::initial_document(config)?;
    let builder = Builder { workers, health: config.health };
    Ok(Arc::new(builder.build(&doc, 1, None)?.epoch))
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
    /// The etcd store could not start (its configuration, TLS files, or the `lb-store` thread).
    #[error("{0}")]
    Shared(String),
}

/// The state the control plane starts from: the first epoch and what it needs to continue.
#[derive(Debug)]
pub struct Restored {
    /// The epoch the workers start with.
    pub first: Arc<Epoch>,
    doc: StateDocument,
    revision: Option<i64>,
    persistence: Persistence,
    store: Option<mpsc::Sender<Request>>,
    status: StoreStatus,
    commands: (Sender<Command>, Receiver<Command>),
}

impl Restored {
    /// The state store's status (to register its metrics before the control thread starts).
    pub fn store_status(&self) -> &StoreStatus {
        &self.status
    }
}

/// Builds the first epoch and readies its persistence.
///
/// File store: from the state file when `config.state_file` names one that exists (it
/// supersedes the configuration's backends, algorithm, pools, routes, cache and timeouts), from
/// the configuration otherwise; then saves it, so an unwritable state file stops the start too.
///
/// etcd store: starts `lb-store`, which reads the shared document (creating it from the
/// last-known-good file or the configuration when absent); when etcd cannot be reached, from the
/// last-known-good file (`config.state_file_path()`), else the configuration, and says so. The
/// state started with is written to the last-known-good file.
pub fn restore(config: &Config, workers: usize) -> Result<Restored, RestoreError> {
    let builder = Builder { workers, health: config.health };
    let commands = unbounded();
    let file = config.state_file_path().map(FileStore::new);
    if config.store.kind == StoreKind::Etcd {
        return restore_shared(config, builder, file, commands);
    }
    let saved = match &file {
        Some(file) => file.load()?,
        None => None,
    };
    let file_name = || file.as_ref().map(|f| f.path().display().to_string()).unwrap_or_default();
    let (doc, id) = match saved {
        None => (epoch::initial_document(config).map_err(origin("configuration"))?, 1),
        Some(saved) => {
            info!(
                "state restored",
                file = file_name(),
                epoch = saved.epoch,
                backends = saved.backends.len()
                    + saved.pools.iter().map(|p| p.backends.len()).sum::<usize>(),
                pools = saved.pools.len() + 1,
                routes = saved.routes.len(),
                algorithm = saved.algorithm
            );
            (saved.document(), saved.epoch + 1)
        }
    };
    let first = builder.build(&doc, id, None).map_err(origin(&file_name()))?.epoch;
    if let Some(file) = &file {
        file.save(&PersistedState::new(&doc, first.id, None))?;
    }
    let status = StoreStatus::file(file.as_ref().map(|f| f.path().to_owned()));
    let persistence = file.map_or(Persistence::None, Persistence::File);
    Ok(Restored {
        first: Arc::new(first),
        doc,
        revision: None,
        persistence,
        store: None,
        status,
        commands,
    })
}

/// A backend of `origin` (the configuration, a file, the shared state) is unusable.
fn origin(what: &str) -> impl FnOnce(ControlError) -> RestoreError + '_ {
    move |source| RestoreError::Backend { origin: what.into(), source }
}

/// [`restore`] with the etcd store.
fn restore_shared(
    config: &Config,
    builder: Builder,
    file: Option<FileStore>,
    commands: (Sender<Command>, Receiver<Command>),
) -> Result<Restored, RestoreError> {
    // A last-known-good file that cannot be read only matters when etcd cannot be reached.
    let (saved, unusable) = match file.as_ref().map(FileStore::load).transpose() {
        Ok(saved) => (saved.flatten(), None),
        Err(e) => (None, Some(e)),
    };
    let seed = match &saved {
        Some(saved) => {
            Seed { doc: saved.document(), revision: saved.revision, source: Source::LastKnownGood }
        }
        None => Seed {
            doc: epoch::initial_document(config).map_err(origin("configuration"))?,
            revision: None,
            source: Source::StartupConfiguration,
        },
    };
    let state_file = file.as_ref().map(|f| f.path().to_owned());
    let started = shared::start(&config.store, state_file, seed, builder, commands.0.clone())
        .map_err(|e| RestoreError::Shared(e.to_string()))?;
    let stop = |started: shared::Started| {
        let _ = started.companion.stop.send(());
        let _ = started.companion.thread.join();
    };
    let initial = &started.initial;
    if let Some(e) = unusable {
        if initial.source != Source::Etcd {
            stop(started);
            return Err(e.into());
        }
        warn!(
            "the last-known-good file is unusable; the next applied revision replaces it",
            error = e
        );
    }
    let id = saved.as_ref().map_or(1, |s| s.epoch + 1);
    let first = match builder.build(&initial.doc, id, None) {
        Ok(built) => built.epoch,
        Err(e) => {
            stop(started);
            return Err(origin("the shared state")(e));
        }
    };
    if let Some(file) = &file
        && let Err(e) = file.save(&PersistedState::new(&initial.doc, first.id, initial.revision))
    {
        stop(started);
        return Err(e.into());
    }
    let (doc, revision) = (started.initial.doc.clone(), started.initial.revision);
    Ok(Restored {
        first: Arc::new(first),
        doc,
        revision,
        persistence: Persistence::Shared { last_known_good: file, store: started.companion },
        store: Some(started.requests),
        status: started.status,
        commands,
    })
}

/// Starts the `lb-control` thread. `first` must be the epoch the workers were started with.
/// Nothing is persisted; see [`spawn_restored`].
pub fn spawn(
    config: Config,
    first: Arc<Epoch>,
    workers: Vec<WorkerLink>,
    acks: Receiver<Ack>,
) -> std::io::Result<(ControlHandle, std::thread::JoinHandle<()>)> {
    let next_backend_id = first.backends().map(|b| b.id).max().unwrap_or(0) + 1;
    let restored = Restored {
        doc: epoch::document_of(&first, next_backend_id),
        first,
        revision: None,
        persistence: Persistence::None,
        store: None,
        status: StoreStatus::file(None),
        commands: unbounded(),
    };
    spawn_restored(config, restored, workers, acks)
}

/// Starts the `lb-control` thread from [`restore`]'s result. With the file store every
/// accepted change is saved before it is broadcast, so a change that answers `Ok` survives a
/// restart; with the etcd store it is in etcd before it is broadcast. The control thread stops
/// `lb-store` when it exits.
pub fn spawn_restored(
    config: Config,
    restored: Restored,
    workers: Vec<WorkerLink>,
    acks: Receiver<Ack>,
) -> std::io::Result<(ControlHandle, std::thread::JoinHandle<()>)> {
    let Restored { first, doc, revision, persistence, store, status, commands } = restored;
    let (tx, rx) = commands;
    let (backends_tx, backends) = watch::channel(first.backends().cloned().collect());
    let builder = Builder { workers: workers.len(), health: config.health };
    let state = ControlState {
        config,
        current: first,
        doc,
        revision,
        builder,
        workers,
        acks,
        persistence,
        status: status.clone(),
        backends_tx,
    };
    let thread = std::thread::Builder::new()
        .name("lb-control".into())
        .spawn(move || control::run(state, rx))?;
    Ok((ControlHandle { commands: tx, store, status, backends }, thread))
}
