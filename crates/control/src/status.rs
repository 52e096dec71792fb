//! What the state store is doing, for operators: written on `lb-store` (applied revision,
//! refusals, conflicts, where the running state came from) and `lb-control` (last-known-good
//! file errors), read on `lb-admin` (`GET /api/v1/store`) and by every `/metrics` scrape. Atomics
//! and one short lock, never held across an await.

use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use fulcrum_config::StoreKind;
use fulcrum_telemetry::{Collect, Encoder, Kind};

/// Where the state an instance runs came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The state file (file store), or the configuration when no state file exists yet.
    StateFile,
    /// The configuration only (file store without a state file).
    Configuration,
    /// A revision of the shared document in etcd.
    Etcd,
    /// The last-known-good file: etcd was unreachable at start and has not been reached since.
    LastKnownGood,
    /// The configuration: etcd was unreachable at start, and there was no last-known-good file.
    StartupConfiguration,
}

impl Source {
    /// `state_file`, `configuration`, `etcd`, `last_known_good` or `configuration`.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::StateFile => "state_file",
            Source::Configuration | Source::StartupConfiguration => "configuration",
            Source::Etcd => "etcd",
            Source::LastKnownGood => "last_known_good",
        }
    }
}

/// A shared document an instance refused to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Its revision in etcd.
    pub revision: i64,
    /// Why (not JSON, a failed check, a URL that does not resolve, deleted).
    pub reason: String,
    /// When it was refused.
    pub at: SystemTime,
}

/// The store's status at one moment.
#[derive(Debug, Clone)]
pub struct StoreView {
    /// `file` or `etcd`.
    pub kind: StoreKind,
    /// etcd endpoints (empty with the file store).
    pub endpoints: Vec<String>,
    /// The key of the shared document (`<prefix>/state`); `None` with the file store.
    pub key: Option<String>,
    /// Whether the latest exchange with etcd succeeded (always true with the file store).
    pub connected: bool,
    /// The shared revision the running epoch was built from; `None` with the file store, or
    /// before etcd was reached.
    pub applied_revision: Option<i64>,
    /// Where the running state came from.
    pub source: Source,
    /// The state file (the last-known-good copy with etcd).
    pub state_file: Option<PathBuf>,
    /// The latest error (etcd, or writing the last-known-good file), kept after recovery.
    pub last_error: Option<(String, SystemTime)>,
    /// The latest shared document refused (a bad document stays refused until a newer one).
    pub last_refused: Option<Refusal>,
    /// Compare-and-swap writes lost to another instance since start.
    pub conflicts: u64,
    /// Watch reconnections since start.
    pub reconnects: u64,
}

/// A cheap, cloneable handle on the store's status.
#[derive(Debug, Clone)]
pub struct StoreStatus {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    kind: StoreKind,
    endpoints: Vec<String>,
    key: Option<String>,
    state_file: Option<PathBuf>,
    /// The etcd client's connection status.
    client: Option<fulcrum_etcd::StatusHandle>,
    /// 0: none.
    applied_revision: AtomicI64,
    /// 0: none.
    refused_revision: AtomicI64,
    conflicts: AtomicU64,
    last: Mutex<Last>,
}

#[derive(Debug)]
struct Last {
    source: Source,
    error: Option<(String, SystemTime)>,
    refused: Option<Refusal>,
}

impl StoreStatus {
    /// The status of the file store.
    pub(crate) fn file(state_file: Option<PathBuf>) -> Self {
        let source = if state_file.is_some() { Source::StateFile } else { Source::Configuration };
        Self::new(StoreKind::File, Vec::new(), None, state_file, None, source)
    }

    /// The status of the etcd store.
    pub(crate) fn etcd(
        endpoints: Vec<String>,
        key: String,
        state_file: Option<PathBuf>,
        client: fulcrum_etcd::StatusHandle,
        source: Source,
    ) -> Self {
        Self::new(StoreKind::Etcd, endpoints, Some(key), state_file, Some(client), source)
    }

    fn new(
        kind: StoreKind,
        endpoints: Vec<String>,
        key: Option<String>,
        state_file: Option<PathBuf>,
        client: Option<fulcrum_etcd::StatusHandle>,
        source: Source,
    ) -> Self {
        let last = Mutex::new(Last { source, error: None, refused: None });
        let inner = Inner {
            kind,
            endpoints,
            key,
            state_file,
            client,
            applied_revision: AtomicI64::new(0),
            refused_revision: AtomicI64::new(0),
            conflicts: AtomicU64::new(0),
            last,
        };
        Self { inner: Arc::new(inner) }
    }

    fn last(&self) -> std::sync::MutexGuard<'_, Last> {
        self.inner.last.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The status now.
    pub fn view(&self) -> StoreView {
        let i = &self.inner;
        let client = i.client.as_ref().map(fulcrum_etcd::StatusHandle::get);
        let last = self.last();
        let client_error =
            client.as_ref().and_then(|c| c.last_error.as_ref()).map(|(e, at)| (e.to_string(), *at));
        let last_error = match (last.error.clone(), client_error) {
            (Some(own), Some(etcd)) => Some(if etcd.1 > own.1 { etcd } else { own }),
            (own, etcd) => own.or(etcd),
        };
        let applied = i.applied_revision.load(Ordering::Relaxed);
        StoreView {
            kind: i.kind,
            endpoints: i.endpoints.clone(),
            key: i.key.clone(),
            connected: client.as_ref().is_none_or(|c| c.connected),
            applied_revision: (applied > 0).then_some(applied),
            source: last.source,
            state_file: i.state_file.clone(),
            last_error,
            last_refused: last.refused.clone(),
            conflicts: i.conflicts.load(Ordering::Relaxed),
            reconnects: client.map_or(0, |c| c.reconnects),
        }
    }

    /// The running state is shared revision `revision` (written or seen in etcd).
    pub(crate) fn applied(&self, revision: i64) {
        self.inner.applied_revision.store(revision, Ordering::Relaxed);
        self.last().source = Source::Etcd;
    }

    /// The running state is shared revision `revision`, from the last-known-good file (etcd
    /// not reached yet: the source stays).
    pub(crate) fn remembered(&self, revision: i64) {
        self.inner.applied_revision.store(revision, Ordering::Relaxed);
    }

    /// The running state matches etcd again without a new revision (etcd holds what the
    /// last-known-good file held).
    pub(crate) fn in_sync(&self) {
        self.last().source = Source::Etcd;
    }

    /// A shared document was refused.
    pub(crate) fn refused(&self, revision: i64, reason: String) {
        self.inner.refused_revision.store(revision, Ordering::Relaxed);
        self.last().refused = Some(Refusal { revision, reason, at: SystemTime::now() });
    }

    /// A compare-and-swap lost to another instance.
    pub(crate) fn conflict(&self) {
        self.inner.conflicts.fetch_add(1, Ordering::Relaxed);
    }

    /// An error worth showing that the etcd client does not know about.
    pub(crate) fn error(&self, message: String) {
        self.last().error = Some((message, SystemTime::now()));
    }
}

/// Metric names, beside what they count.
const CONNECTED: &str = "fulcrum_store_connected";
const REVISION: &str = "fulcrum_store_revision";
const CONFLICTS: &str = "fulcrum_store_conflicts_total";
const REFUSED: &str = "fulcrum_store_refused_revision";

impl Collect for StoreStatus {
    fn collect(&self, out: &mut Encoder) {
        let view = self.view();
        out.family(CONNECTED, Kind::Gauge, "1 while the latest exchange with etcd succeeded.");
        out.sample(CONNECTED, &[], u8::from(view.connected));
        out.family(
            REVISION,
            Kind::Gauge,
            "The shared revision (etcd mod_revision) the running epoch was built from; 0 before etcd was reached.",
        );
        out.sample(REVISION, &[], view.applied_revision.unwrap_or(0));
        out.family(
            CONFLICTS,
            Kind::Counter,
            "Admin changes that lost a compare-and-swap to another instance and were computed again.",
        );
        out.sample(CONFLICTS, &[], view.conflicts);
        out.family(
            REFUSED,
            Kind::Gauge,
            "The latest shared revision this instance refused to run (invalid document); 0 if none.",
        );
        out.sample(REFUSED, &[], self.inner.refused_revision.load(Ordering::Relaxed));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_and_view() {
        let status = StoreStatus::etcd(
            vec!["http://127.0.0.1:2379".into()],
            "/fulcrum/state".into(),
            Some("fulcrum-state.json".into()),
            fulcrum_etcd::StatusHandle::default(),
            Source::LastKnownGood,
        );
        let view = status.view();
        assert_eq!(
            (view.applied_revision, view.source, view.connected),
            (None, Source::LastKnownGood, false)
        );
        status.applied(7);
        status.conflict();
        status.refused(9, "not JSON".into());
        let view = status.view();
        assert_eq!(
            (view.applied_revision, view.source, view.conflicts),
            (Some(7), Source::Etcd, 1)
        );
        assert_eq!(view.last_refused.map(|r| r.revision), Some(9));
        let mut out = Encoder::default();
        status.collect(&mut out);
        let text = out.finish();
        for line in [
            "fulcrum_store_connected 0",
            "fulcrum_store_revision 7",
            "fulcrum_store_conflicts_total 1",
            "fulcrum_store_refused_revision 9",
        ] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
        let file = StoreStatus::file(None).view();
        assert!(file.connected && file.key.is_none() && file.source == Source::Configuration);
    }
}
