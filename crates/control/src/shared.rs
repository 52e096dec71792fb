//! The etcd store: the `lb-store` thread (a current-thread tokio runtime, never a worker) keeps
//! this instance's state equal to one JSON document in etcd shared by every instance.
//!
//! - **Reads.** A watch on the document turns each new revision into an `Install` for
//!   `lb-control`, which builds and runs it as a local epoch; a document that cannot run is
//!   refused (the running epoch stays, the status and metrics say which revision and why).
//! - **Writes.** An admin change is computed from the document of the revision this instance
//!   runs and written with a compare-and-swap on that revision. Losing it to another instance
//!   means running the newer document and computing the change again on it, at most
//!   `store.conflict_retries` times. The change answers once etcd took it and `lb-control`
//!   ran it. A refused current document is replaced by the next change (computed from the
//!   last document this instance ran): that is how an invalid document is repaired over the
//!   API.
//! - **Outage.** Calls fail (admin changes: `StoreUnavailable`); the watch reconnects with
//!   backoff and resynchronises by itself, also across a compaction; the data plane is not
//!   involved. At start, an unreachable etcd means running the last-known-good file (or the
//!   configuration) until etcd answers; an absent document is created from what this instance
//!   runs.

use std::path::PathBuf;
use std::time::Duration;

use crossbeam_channel::Sender;
use tokio::sync::{mpsc, oneshot};

use fulcrum_config::StoreConfig;
use fulcrum_etcd::{
    CasOutcome, Client, EtcdConfig, Snapshot, Timeouts, TlsFiles, Watch, WatchEvent,
};
use fulcrum_telemetry::{error, info, warn};

use crate::change::{self, Change, ControlError, Created};
use crate::control::{Command, Companion, Install};
use crate::epoch::Builder;
use crate::state::StateDocument;
use crate::status::{Source, StoreStatus};
use crate::view::Applied;

/// Admin changes queued for `lb-store` (the admin thread runs at most a few at once).
const REQUEST_QUEUE: usize = 64;

/// An admin change for the shared store, and where to answer.
pub(crate) struct Request {
    /// The change.
    pub change: Change,
    /// The answer, once etcd took the change and this instance runs it.
    pub reply: Sender<Result<Applied, ControlError>>,
}

/// What an instance runs when etcd has nothing better for it.
#[derive(Debug)]
pub(crate) struct Seed {
    /// The last-known-good file's document, or the configuration's.
    pub doc: StateDocument,
    /// The shared revision the file was (`None`: the configuration, or a file store's file).
    pub revision: Option<i64>,
    /// `LastKnownGood` or `StartupConfiguration`.
    pub source: Source,
}

/// The state to start with, decided on `lb-store`'s first contact with etcd.
#[derive(Debug)]
pub(crate) struct Initial {
    /// The document.
    pub doc: StateDocument,
    /// Its shared revision (`None`: etcd was not reached and the seed had none).
    pub revision: Option<i64>,
    /// Where it came from.
    pub source: Source,
}

/// A started `lb-store`.
#[derive(Debug)]
pub(crate) struct Started {
    /// Its first decision.
    pub initial: Initial,
    /// Where admin changes go.
    pub requests: mpsc::Sender<Request>,
    /// Stops and joins it.
    pub companion: Companion,
    /// Its status.
    pub status: StoreStatus,
}

/// Why `lb-store` could not start.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StartError {
    /// The etcd client refused the configuration (endpoints, TLS files, credentials).
    #[error("store: {0}")]
    Client(#[from] fulcrum_etcd::Error),
    /// The thread or its runtime could not start.
    #[error("starting lb-store: {0}")]
    Spawn(#[from] std::io::Error),
    /// The thread did not report its first contact with etcd in time.
    #[error("lb-store did not report within {0:?}")]
    Silent(Duration),
}

/// The etcd client configuration of `[store]`.
fn etcd_config(store: &StoreConfig) -> EtcdConfig {
    let ms = Duration::from_millis;
    let mut config = EtcdConfig::new(store.endpoints.clone(), store.normalized_prefix());
    config.username.clone_from(&store.username);
    config.password.clone_from(&store.password);
    config.tls = store.ca_file.clone().map(|ca_file| TlsFiles {
        ca_file,
        cert_file: store.cert_file.clone(),
        key_file: store.key_file.clone(),
    });
    config.timeouts = Timeouts {
        connect: ms(store.connect_timeout_ms),
        request: ms(store.request_timeout_ms),
        watch_probe: ms(store.watch_probe_ms),
        backoff_min: ms(store.backoff_min_ms),
        backoff_max: ms(store.backoff_max_ms),
    };
    config.limits.max_value_bytes = store.max_document_bytes;
    config
}

/// Starts `lb-store` and returns once it made its first contact with etcd (or gave up on it,
/// within the store's request timeouts): the state to start with is then known.
pub(crate) fn start(
    store: &StoreConfig,
    state_file: Option<PathBuf>,
    seed: Seed,
    builder: Builder,
    control: Sender<Command>,
) -> Result<Started, StartError> {
    let client = Client::new(etcd_config(store))?;
    let status = StoreStatus::etcd(
        store.endpoints.clone(),
        client.state_key().to_owned(),
        state_file.clone(),
        client.status(),
        seed.source,
    );
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let (initial_tx, initial_rx) = std::sync::mpsc::sync_channel(1);
    let (requests, requests_rx) = mpsc::channel(REQUEST_QUEUE);
    let (stop, stop_rx) = oneshot::channel();
    let mut lb_store = Store {
        client,
        control,
        status: status.clone(),
        builder,
        state_file,
        doc: seed.doc.clone(),
        applied: 0,
        head: 0,
        seen: 0,
        reached: None,
        retries: store.conflict_retries,
        instance: format!("pid {} started {}", std::process::id(), unix_ms()),
        writes: 0,
    };
    let thread = std::thread::Builder::new().name("lb-store".into()).spawn(move || {
        runtime.block_on(async move {
            let initial = lb_store.first_contact(seed).await;
            if initial_tx.send(initial).is_ok() {
                lb_store.run(requests_rx, stop_rx).await;
            }
        });
    })?;
    // A get, then perhaps a create-if-absent (twice the request bound at most), and the check.
    let bound =
        Duration::from_millis(store.request_timeout_ms.saturating_mul(4)) + Duration::from_secs(5);
    let initial = initial_rx.recv_timeout(bound).map_err(|_| StartError::Silent(bound))?;
    Ok(Started { initial, requests, companion: Companion { stop, thread }, status })
}

/// Milliseconds since the Unix epoch.
fn unix_ms() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis())
}

/// The `lb-store` thread's state.
struct Store {
    client: Client,
    control: Sender<Command>,
    status: StoreStatus,
    builder: Builder,
    state_file: Option<PathBuf>,
    /// The document the running epoch was built from.
    doc: StateDocument,
    /// Its revision (0: not from etcd).
    applied: i64,
    /// The document's mod_revision in etcd as last seen (0: absent): what a write compares
    /// with. Ahead of `applied` while the current document is refused.
    head: i64,
    /// The newest revision handled (run, refused or deleted): older ones are not looked at.
    seen: i64,
    /// Where the watch starts: `Some(revision)` once etcd was reached; `None` before (the
    /// watch then starts with a read of the document, which decides like the first contact).
    reached: Option<i64>,
    retries: u32,
    /// This instance in `written_by` (process id and start time).
    instance: String,
    /// Writes made so far.
    writes: u64,
}

impl Store {
    /// `doc` as this instance writes it: stamped with who writes it.
    fn stamped(&mut self, doc: &StateDocument) -> StateDocument {
        self.writes += 1;
        let mut doc = doc.clone();
        doc.written_by = Some(format!("{}, write {}", self.instance, self.writes));
        doc
    }

    /// Reads the document once: runs it, creates it from `seed` when absent, or falls back to
    /// `seed` when etcd cannot be reached or the document cannot run.
    async fn first_contact(&mut self, seed: Seed) -> Initial {
        let fallback = |store: &mut Self, seed: Seed| {
            store.doc = seed.doc.clone();
            store.applied = seed.revision.unwrap_or(0);
            store.head = store.applied;
            store.seen = store.applied;
            if let Some(revision) = seed.revision {
                store.status.remembered(revision);
            }
            Initial { doc: seed.doc, revision: seed.revision, source: seed.source }
        };
        let snapshot = match self.client.get().await {
            Ok(snapshot) => snapshot,
            Err(e) => {
                warn!(
                    "etcd unreachable at start: serving the last-known-good state (the configuration without one) until etcd answers",
                    source = seed.source.as_str(),
                    file = self.file_name(),
                    revision = seed.revision.unwrap_or(0),
                    error = e
                );
                return fallback(self, seed);
            }
        };
        self.reached = Some(snapshot.header_revision + 1);
        let stamped_seed = self.stamped(&seed.doc).to_json();
        let current = match snapshot.value {
            Some(_) => snapshot,
            None => match self.client.put_if(0, &stamped_seed).await {
                Ok(CasOutcome::Written { revision }) => {
                    info!(
                        "shared state created in etcd from this instance's state",
                        source = seed.source.as_str(),
                        revision = revision,
                        key = self.client.state_key()
                    );
                    self.reached = Some(revision + 1);
                    self.accept(&seed.doc, revision);
                    return Initial {
                        doc: seed.doc,
                        revision: Some(revision),
                        source: Source::Etcd,
                    };
                }
                Ok(CasOutcome::Conflict { current }) => current,
                Err(e) => {
                    warn!("etcd: creating the shared state failed", error = e);
                    self.reached = None;
                    return fallback(self, seed);
                }
            },
        };
        let revision = current.mod_revision;
        let checked = current
            .value
            .ok_or_else(|| "the document was deleted".to_owned())
            .and_then(|bytes| StateDocument::parse(&bytes))
            .and_then(|doc| match self.builder.build(&doc, 1, None) {
                Ok(_) => Ok(doc),
                Err(e) => Err(e.to_string()),
            });
        match checked {
            Ok(doc) => {
                info!(
                    "shared state read from etcd",
                    revision = revision,
                    key = self.client.state_key()
                );
                self.accept(&doc, revision);
                Initial { doc, revision: Some(revision), source: Source::Etcd }
            }
            Err(reason) => {
                let initial = fallback(self, seed);
                self.refuse(revision, reason);
                initial
            }
        }
    }

    /// The last-known-good file, for logs.
    fn file_name(&self) -> String {
        self.state_file.as_ref().map(|p| p.display().to_string()).unwrap_or_default()
    }

    /// `doc` at `revision` runs.
    fn accept(&mut self, doc: &StateDocument, revision: i64) {
        self.doc = doc.clone();
        self.applied = revision;
        self.head = revision;
        self.seen = self.seen.max(revision);
        self.status.applied(revision);
    }

    /// The document at `revision` does not run; the running epoch stays.
    fn refuse(&mut self, revision: i64, reason: String) {
        warn!(
            "shared state refused: keeping the running epoch",
            revision = revision,
            running = self.applied,
            reason = reason
        );
        self.status.refused(revision, reason);
        self.head = revision;
        self.seen = self.seen.max(revision);
    }

    /// Serves admin changes and follows the document until told to stop.
    async fn run(mut self, mut requests: mpsc::Receiver<Request>, mut stop: oneshot::Receiver<()>) {
        let Some(mut watch) = self.watch() else { return };
        loop {
            tokio::select! {
                _ = &mut stop => return,
                request = requests.recv() => match request {
                    Some(Request { change, reply }) => {
                        let result = self.write(change).await;
                        let _ = reply.send(result);
                    }
                    None => return,
                },
                event = watch.recv() => match event {
                    Some(event) => self.on_event(event).await,
                    None => {
                        error!("the etcd watch stopped; starting it again");
                        let Some(again) = self.watch() else { return };
                        watch = again;
                    }
                },
            }
        }
    }

    /// A watch from where this instance is (from a read of the document if etcd was never
    /// reached).
    fn watch(&self) -> Option<Watch> {
        let from = self.reached.map_or(0, |next| next.max(self.seen + 1));
        match self.client.watch(from) {
            Ok(watch) => Some(watch),
            Err(e) => {
                error!("cannot watch etcd: lb-store stops", error = e);
                None
            }
        }
    }

    async fn on_event(&mut self, event: WatchEvent) {
        match event {
            WatchEvent::Update { revision, value } => self.on_update(revision, value).await,
            WatchEvent::Progress { .. } => {}
            WatchEvent::Compacted { compact_revision } => info!(
                "etcd compacted revisions this instance had not seen: reading the document again",
                compact_revision = compact_revision,
                running = self.applied
            ),
            WatchEvent::Disconnected { error } => warn!(
                "etcd unreachable: serving the running state, admin changes are refused until it is back",
                revision = self.applied,
                error = error
            ),
            WatchEvent::Reconnected { revision } => {
                info!("etcd reachable again", resume_at = revision, running = self.applied);
            }
        }
    }

    /// A revision of the document from the watch.
    async fn on_update(&mut self, revision: i64, value: Option<Vec<u8>>) {
        let first = self.reached.is_none();
        if first {
            self.reached = Some(revision + 1);
        } else if revision <= self.seen {
            return;
        }
        let Some(bytes) = value else {
            self.head = 0;
            self.seen = self.seen.max(revision);
            if first {
                // Never created (or lost with etcd's data): from what this instance runs.
                let doc = self.stamped(&self.doc.clone());
                match self.client.put_if(0, &doc.to_json()).await {
                    Ok(CasOutcome::Written { revision }) => {
                        info!(
                            "shared state created in etcd from this instance's state",
                            revision = revision
                        );
                        let _ = self.install(doc, revision, Created::Nothing).await;
                    }
                    Ok(CasOutcome::Conflict { current }) => self.adopt(current).await,
                    Err(e) => warn!("etcd: creating the shared state failed", error = e),
                }
            } else {
                self.status.refused(revision, "the document was deleted".into());
                warn!(
                    "shared state deleted in etcd: keeping the running epoch; the next admin change writes it again",
                    revision = revision
                );
            }
            return;
        };
        if first && revision == self.applied {
            info!("etcd reached: the running state is its current revision", revision = revision);
            self.head = revision;
            self.seen = self.seen.max(revision);
            self.status.in_sync();
            return;
        }
        match StateDocument::parse(&bytes) {
            Ok(doc) => {
                let _ = self.install(doc, revision, Created::Nothing).await;
            }
            Err(reason) => self.refuse(revision, reason),
        }
    }

    /// Runs a document another instance (or an operator) wrote, or refuses it.
    async fn adopt(&mut self, current: Snapshot) {
        let revision = current.mod_revision;
        match current.value {
            None => self.head = 0,
            Some(_) if revision == self.applied => self.head = revision,
            Some(bytes) => match StateDocument::parse(&bytes) {
                Ok(doc) => {
                    let _ = self.install(doc, revision, Created::Nothing).await;
                }
                Err(reason) => self.refuse(revision, reason),
            },
        }
    }

    /// Hands `doc` at `revision` to `lb-control` and waits until it runs (or is refused).
    async fn install(
        &mut self,
        doc: StateDocument,
        revision: i64,
        created: Created,
    ) -> Result<Applied, ControlError> {
        let (reply, answer) = oneshot::channel();
        let install = Install { doc: doc.clone(), revision, created, reply };
        if self.control.send(Command::Install(Box::new(install))).is_err() {
            return Err(ControlError::Stopped);
        }
        let result = answer.await.map_err(|_| ControlError::Stopped)?;
        match &result {
            Ok(_) | Err(ControlError::WorkersUnresponsive(_)) => self.accept(&doc, revision),
            Err(e) => self.refuse(revision, e.to_string()),
        }
        result
    }

    /// An admin change: computed on the running document, compared-and-swapped on the revision
    /// seen in etcd, computed again on a newer document after each lost race (bounded).
    async fn write(&mut self, change: Change) -> Result<Applied, ControlError> {
        let mut lost = 0;
        loop {
            let (doc, created) = change::apply(&self.doc, change.clone())?;
            let doc = self.stamped(&doc);
            let outcome = self.client.put_if(self.head, &doc.to_json()).await;
            match outcome {
                Ok(CasOutcome::Written { revision }) => {
                    if self.reached.is_none() {
                        self.reached = Some(revision + 1);
                    }
                    return match self.install(doc, revision, created).await {
                        Err(e @ (ControlError::WorkersUnresponsive(_) | ControlError::Stopped)) => {
                            Err(e)
                        }
                        Err(e) => Err(ControlError::Persist(format!(
                            "written to etcd as revision {revision} but refused here: {e}"
                        ))),
                        ok => ok,
                    };
                }
                Ok(CasOutcome::Conflict { current }) => {
                    lost += 1;
                    self.status.conflict();
                    info!(
                        "another instance changed the shared state first: computing the change again",
                        revision = current.mod_revision,
                        attempt = lost
                    );
                    self.adopt(current).await;
                    if lost > self.retries {
                        return Err(ControlError::StoreConflict(format!(
                            "the shared state changed under this change {lost} times in a row \
                             (store.conflict_retries = {}); nothing was changed, try again",
                            self.retries
                        )));
                    }
                }
                Err(e) if e.is_retryable() => {
                    return Err(ControlError::StoreUnavailable(e.to_string()));
                }
                Err(e) => {
                    return Err(ControlError::Persist(format!("etcd refused the write: {e}")));
                }
            }
        }
    }
}
