//! The `lb-control` thread: owns the canonical state (the document and the epoch built from it),
//! turns each change (file store) or each shared revision `lb-store` hands it (etcd store) into
//! a new numbered epoch, broadcasts it to every worker and answers only after all of them run
//! it. Commands arrive on one channel, so changes are serialised and none is lost.

use std::io::Write as _;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use tokio::sync::{oneshot, watch};

use fulcrum_config::Config;
use fulcrum_model::{Backend, Epoch, Pool};
use fulcrum_telemetry::{info, warn};
use fulcrum_util::now_ms;

use crate::change::{self, Change, ControlError, Created};
use crate::epoch::{self, Builder};
use crate::state::{FileStore, PersistedState, StateDocument, StateStore as _};
use crate::status::StoreStatus;
use crate::view::{Applied, BackendView, PoolView, StateView};

/// How long a change waits for every worker to acknowledge its epoch.
const ACK_TIMEOUT: Duration = Duration::from_secs(5);

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

/// What the control thread is asked to do.
pub(crate) enum Command {
    /// Apply a change (file store, or no persistence).
    Apply(Change, Sender<Result<Applied, ControlError>>),
    /// Run a shared revision (etcd store, from `lb-store`; boxed: a document is large).
    Install(Box<Install>),
    /// Report the state.
    Snapshot(Sender<StateView>),
    /// Tell the workers to drain and stop, then exit.
    Shutdown,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::Apply(c, _) => write!(f, "Apply({c:?})"),
            Command::Install(i) => write!(f, "Install(revision {})", i.revision),
            Command::Snapshot(_) => f.write_str("Snapshot"),
            Command::Shutdown => f.write_str("Shutdown"),
        }
    }
}

/// A shared revision to run, and where to say whether it runs.
pub(crate) struct Install {
    /// The document, checked by `lb-store` (the URLs are resolved here).
    pub doc: StateDocument,
    /// Its etcd revision.
    pub revision: i64,
    /// What the admin change that wrote it created, to report.
    pub created: Created,
    /// `Ok`, or `WorkersUnresponsive` (it runs, not acknowledged in time), or why it was
    /// refused (nothing changed).
    pub reply: oneshot::Sender<Result<Applied, ControlError>>,
}

/// A thread the control thread stops and joins when it exits (`lb-store`).
#[derive(Debug)]
pub(crate) struct Companion {
    /// Tells it to stop.
    pub stop: oneshot::Sender<()>,
    /// The thread.
    pub thread: JoinHandle<()>,
}

/// Where accepted changes go.
#[derive(Debug)]
pub(crate) enum Persistence {
    /// Nowhere.
    None,
    /// The state file: each change is saved before it is applied.
    File(FileStore),
    /// etcd, through `lb-store`; each applied revision is copied to the last-known-good file.
    Shared {
        /// The last-known-good file.
        last_known_good: Option<FileStore>,
        /// The `lb-store` thread.
        store: Companion,
    },
}

/// The canonical state owned by the control thread.
pub(crate) struct ControlState {
    pub config: Config,
    /// The running epoch.
    pub current: Arc<Epoch>,
    /// The document `current` was built from.
    pub doc: StateDocument,
    /// Its shared revision (etcd store).
    pub revision: Option<i64>,
    pub builder: Builder,
    pub workers: Vec<WorkerLink>,
    pub acks: Receiver<Ack>,
    pub persistence: Persistence,
    pub status: StoreStatus,
    /// Publishes the backend list to `ControlHandle::backends` receivers.
    pub backends_tx: watch::Sender<Vec<Arc<Backend>>>,
}

/// The thread's loop: one command at a time until `Shutdown` (or every sender is gone).
#[expect(clippy::disallowed_methods, reason = "the control thread waits for commands")]
pub(crate) fn run(mut state: ControlState, commands: Receiver<Command>) {
    while let Ok(command) = commands.recv() {
        match command {
            Command::Apply(change, reply) => {
                let _ = reply.send(state.apply(change));
            }
            Command::Install(install) => state.install(*install),
            Command::Snapshot(reply) => {
                let _ = reply.send(state.view());
            }
            Command::Shutdown => break,
        }
    }
    // Installs still queued are dropped with the channel, so `lb-store` stops waiting for them.
    drop(commands);
    for link in &mut state.workers {
        link.send(WorkerMsg::Shutdown);
    }
    if let Persistence::Shared { store, .. } = state.persistence {
        let _ = store.stop.send(());
        let _ = store.thread.join();
    }
}

impl ControlState {
    /// A change with the file store (or none): computed, saved, then run.
    fn apply(&mut self, change: Change) -> Result<Applied, ControlError> {
        if matches!(self.persistence, Persistence::Shared { .. }) {
            // The handle sends changes to `lb-store` with the shared store; never here.
            return Err(ControlError::StoreUnavailable("changes go through lb-store".into()));
        }
        let (doc, created) = change::apply(&self.doc, change)?;
        let epochs = self.next_epochs(&doc)?;
        // Persist first: a change the store refuses is not applied at all.
        if let Persistence::File(store) = &self.persistence {
            store
                .save(&PersistedState::new(&doc, epochs.1.id, None))
                .map_err(|e| ControlError::Persist(e.to_string()))?;
        }
        self.go_live(doc, None, epochs, &created)
    }

    /// A shared revision from `lb-store`: built (refused whole if it cannot run), copied to
    /// the last-known-good file, then run.
    fn install(&mut self, install: Install) {
        let Install { doc, revision, created, reply } = install;
        let result = self.next_epochs(&doc).and_then(|epochs| {
            if let Persistence::Shared { last_known_good: Some(file), .. } = &self.persistence {
                let saved = PersistedState::new(&doc, epochs.1.id, Some(revision));
                if let Err(e) = file.save(&saved) {
                    // etcd has the revision; the local copy only serves a start without etcd.
                    warn!("last-known-good file not written", revision = revision, error = e);
                    self.status.error(format!("last-known-good file: {e}"));
                }
            }
            self.go_live(doc, Some(revision), epochs, &created)
        });
        if let Err(e) = &result
            && !matches!(e, ControlError::WorkersUnresponsive(_))
        {
            warn!(
                "shared revision refused: the running epoch stays",
                revision = revision,
                error = e
            );
        }
        let _ = reply.send(result);
    }

    /// The epochs that take the workers from `current` to `doc`: usually one; two when the
    /// document gives a running backend's id to another backend (that one leaves first).
    fn next_epochs(&self, doc: &StateDocument) -> Result<(Option<Epoch>, Epoch), ControlError> {
        let built = self.builder.build(doc, self.current.id + 1, Some(&self.current))?;
        if built.replaced.is_empty() {
            return Ok((None, built.epoch));
        }
        let gap = epoch::without(&self.current, &built.replaced, self.current.id + 1)?;
        let built = self.builder.build(doc, gap.id + 1, Some(&gap))?;
        Ok((Some(gap), built.epoch))
    }

    /// Makes `doc` the truth and its epochs current, broadcasting each and waiting for the
    /// acks (an epoch not acknowledged in time stays the truth: the workers that did ack run
    /// it).
    fn go_live(
        &mut self,
        doc: StateDocument,
        revision: Option<i64>,
        (gap, epoch): (Option<Epoch>, Epoch),
        created: &Created,
    ) -> Result<Applied, ControlError> {
        self.doc = doc;
        self.revision = revision;
        let mut result = Ok(());
        for epoch in gap.into_iter().chain([epoch]) {
            let epoch = Arc::new(epoch);
            self.current = epoch.clone();
            let broadcast = self.broadcast(&epoch);
            self.publish_backends(&epoch);
            if result.is_ok() {
                result = broadcast;
            }
        }
        result?;
        let epoch = &self.current;
        info!(
            "epoch applied",
            epoch = epoch.id,
            revision = revision.map_or_else(|| "none".to_owned(), |r| r.to_string()),
            algorithm = epoch.default_pool().algorithm,
            backends = epoch.default_pool().backends.len(),
            pools = epoch.pools().len(),
            routes = epoch.routes().configs().len()
        );
        let now = now_ms();
        let (backend, pool) = match created {
            Created::Nothing => (None, None),
            Created::Backend(id) => {
                (epoch.backends().find(|b| b.id == *id).map(|b| self.view_of(b, now)), None)
            }
            Created::Pool(name) => (None, epoch.pool(name).map(|(_, p)| self.pool_view(p, now))),
        };
        Ok(Applied { epoch: epoch.id, revision, backend, pool })
    }

    /// Tells `ControlHandle::backends` receivers about `epoch`'s backends if the set changed.
    fn publish_backends(&self, epoch: &Epoch) {
        self.backends_tx.send_if_modified(|list| {
            let same = list.len() == epoch.backends().count()
                && list.iter().zip(epoch.backends()).all(|(a, b)| Arc::ptr_eq(a, b));
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
            revision: self.revision,
            algorithm: e.default_pool().algorithm,
            backends: pools[0].backends.clone(),
            pools,
            routes: e.routes().configs().to_vec(),
            cache: e.cache.clone(),
            timeouts: e.timeouts,
            config: self.config.clone(),
            state_file: self.config.state_file_path(),
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
