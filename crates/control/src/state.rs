//! The run-time state as data: the shared document ([`StateDocument`], one JSON value in etcd
//! under the store's prefix), the local state file ([`PersistedState`]: the document plus this
//! instance's epoch and the shared revision it came from) with their validation, and the
//! [`StateStore`] trait with its file implementation. Used on the `lb-control` thread (saves),
//! the `lb-store` thread (documents) and once at start.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use fulcrum_config::{
    Algorithm, CachePolicy, DEFAULT_POOL, MAX_POOLS, RouteConfig, Timeouts, check_pool_name,
    validate_routes,
};
use fulcrum_model::BackendId;

/// Current version of the state file. Version 2 added `pools` and `routes`, version 3
/// `cache_generation` and `revision`; files of versions 1 and 2 still load.
pub const STATE_VERSION: u32 = 3;
/// The oldest version that still loads.
const OLDEST_VERSION: u32 = 1;
/// Current version of the shared document ([`StateDocument`]).
pub const DOCUMENT_VERSION: u32 = 1;

/// Everything an operator can change at run time, as persisted in the local state file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PersistedState {
    /// Format version ([`STATE_VERSION`]).
    pub version: u32,
    /// The epoch this state was applied as; a restart continues numbering after it.
    pub epoch: u64,
    /// The shared store's revision this state is (etcd's mod_revision of the document); absent
    /// with the file store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<i64>,
    /// The id the next added backend gets (ids are never reused).
    pub next_backend_id: BackendId,
    /// Balancing algorithm of the `default` pool.
    pub algorithm: Algorithm,
    /// Backends of the `default` pool in operator order.
    pub backends: Vec<PersistedBackend>,
    /// The other pools, in order.
    #[serde(default)]
    pub pools: Vec<PersistedPool>,
    /// The routes, in order.
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    /// Response cache settings (files written before the full policy existed hold only
    /// `enabled`; the other keys take their defaults).
    pub cache: CachePolicy,
    /// Bumped by every cache purge (files before version 3: 0).
    #[serde(default)]
    pub cache_generation: u64,
    /// Phase timeouts.
    pub timeouts: Timeouts,
}

impl PersistedState {
    /// The file form of `doc`, applied as `epoch`, at shared `revision`.
    pub fn new(doc: &StateDocument, epoch: u64, revision: Option<i64>) -> Self {
        Self {
            version: STATE_VERSION,
            epoch,
            revision,
            next_backend_id: doc.next_backend_id,
            algorithm: doc.algorithm,
            backends: doc.backends.clone(),
            pools: doc.pools.clone(),
            routes: doc.routes.clone(),
            cache: doc.cache.clone(),
            cache_generation: doc.cache_generation,
            timeouts: doc.timeouts,
        }
    }

    /// The state without this instance's epoch and revision: what every instance shares.
    pub fn document(&self) -> StateDocument {
        StateDocument {
            version: DOCUMENT_VERSION,
            next_backend_id: self.next_backend_id,
            algorithm: self.algorithm,
            backends: self.backends.clone(),
            pools: self.pools.clone(),
            routes: self.routes.clone(),
            cache: self.cache.clone(),
            cache_generation: self.cache_generation,
            timeouts: self.timeouts,
            written_by: None,
        }
    }
}

/// The run-time state every instance of a cluster shares: one JSON document in etcd
/// (`<prefix>/state`), versioned by etcd's revision. It is the state file without an epoch:
/// epochs are local to each instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateDocument {
    /// Format version ([`DOCUMENT_VERSION`]).
    pub version: u32,
    /// The id the next added backend gets, on whichever instance adds it: ids never collide
    /// across instances because each add is a compare-and-swap on the document holding it.
    pub next_backend_id: BackendId,
    /// Balancing algorithm of the `default` pool.
    #[serde(default)]
    pub algorithm: Algorithm,
    /// Backends of the `default` pool in operator order.
    #[serde(default)]
    pub backends: Vec<PersistedBackend>,
    /// The other pools, in order.
    #[serde(default)]
    pub pools: Vec<PersistedPool>,
    /// The routes, in order.
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    /// Response cache settings.
    #[serde(default)]
    pub cache: CachePolicy,
    /// Bumped by every cache purge: an instance installing a document with another
    /// generation clears its caches, so a purge on one instance purges every instance.
    #[serde(default)]
    pub cache_generation: u64,
    /// Phase timeouts.
    #[serde(default)]
    pub timeouts: Timeouts,
    /// Which instance wrote this revision, and its how-manyth write (for operators, and so
    /// that two instances making the same change at once write different documents: the
    /// compare-and-swap counts a document equal to its own as its own earlier write).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub written_by: Option<String>,
}

impl StateDocument {
    /// Parses and checks a document as read from the store (a hand-written one included).
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        let doc: Self =
            serde_json::from_slice(bytes).map_err(|e| format!("not a state document: {e}"))?;
        if doc.version != DOCUMENT_VERSION {
            return Err(format!(
                "unsupported document version {} (expected {DOCUMENT_VERSION})",
                doc.version
            ));
        }
        doc.check()?;
        Ok(doc)
    }

    /// The checks the type system cannot make: pool names, route targets and shadowing,
    /// backend ids, cache settings (backend URLs are resolved when the epoch is built).
    pub fn check(&self) -> Result<(), String> {
        check_state(&self.pools, &self.routes, &self.backends, self.next_backend_id, &self.cache)
    }

    /// The document as written to the store (compact JSON).
    pub fn to_json(&self) -> Vec<u8> {
        // Plain data of strings, numbers and lists: serialising cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// One persisted pool besides `default`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PersistedPool {
    /// Its name.
    pub name: String,
    /// Its algorithm.
    #[serde(default)]
    pub algorithm: Algorithm,
    /// Its backends in operator order.
    #[serde(default)]
    pub backends: Vec<PersistedBackend>,
}

/// One persisted backend.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PersistedBackend {
    /// Server-assigned identifier.
    pub id: BackendId,
    /// Normalised `scheme://host:port`.
    pub url: String,
    /// Relative weight.
    pub weight: u32,
}

/// Pool names, routes, backend ids and the cache settings of a state (file or document).
fn check_state(
    pools: &[PersistedPool],
    routes: &[RouteConfig],
    backends: &[PersistedBackend],
    next_backend_id: BackendId,
    cache: &CachePolicy,
) -> Result<(), String> {
    if pools.len() >= MAX_POOLS {
        return Err(format!("at most {MAX_POOLS} pools (`default` included)"));
    }
    let names: Vec<&str> = pools.iter().map(|p| p.name.as_str()).collect();
    for (i, name) in names.iter().enumerate() {
        check_pool_name(name)?;
        if *name == DEFAULT_POOL || names[..i].contains(name) {
            return Err(format!("pool `{name}` listed twice"));
        }
    }
    validate_routes(routes, |p| p == DEFAULT_POOL || names.contains(&p))
        .map_err(|e| e.to_string())?;
    let pooled = pools.iter().flat_map(|p| p.backends.iter());
    let mut ids: Vec<_> = backends.iter().chain(pooled).map(|b| b.id).collect();
    ids.sort_unstable();
    if ids.windows(2).any(|w| w[0] == w[1]) {
        return Err("duplicate backend id".into());
    }
    if ids.last().is_some_and(|&max| max >= next_backend_id) {
        return Err("next_backend_id is not above every backend id".into());
    }
    cache.validate().map_err(|e| e.to_string())
}

/// Why the state could not be loaded or saved.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Reading or writing failed.
    #[error("state file {path}: {op}: {source}")]
    Io {
        /// The state file.
        path: PathBuf,
        /// What was being done.
        op: &'static str,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The file exists but is not a valid state; it is never silently dropped.
    #[error("state file {path} is corrupt ({reason}); fix or remove it to start")]
    Corrupt {
        /// The state file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

/// A local copy of the state: load once at start, save after every accepted change (the file
/// store), or after every shared revision run (the etcd store's last-known-good copy). The etcd
/// store itself is not behind this trait: its writes are compare-and-swaps on `lb-store`.
pub trait StateStore: Send + std::fmt::Debug {
    /// The saved state, or `None` when nothing was saved yet.
    fn load(&self) -> Result<Option<PersistedState>, StoreError>;
    /// Replaces the saved state; when this returns `Ok`, the state survives a crash.
    fn save(&self, state: &PersistedState) -> Result<(), StoreError>;
}

/// A JSON file replaced atomically: write a temp file, fsync it, rename over, fsync the dir.
#[derive(Debug, Clone)]
pub struct FileStore {
    path: PathBuf,
}

impl FileStore {
    /// A store at `path` (created on the first save; its directory must exist).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// The state file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn io(&self, op: &'static str) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
        move |source| StoreError::Io { path: self.path.clone(), op, source }
    }

    fn temp_path(&self) -> PathBuf {
        let mut name = self.path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
        name.push(".tmp");
        self.path.with_file_name(name)
    }
}

impl StateStore for FileStore {
    fn load(&self) -> Result<Option<PersistedState>, StoreError> {
        let bytes = match std::fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.io("read")(e)),
        };
        let corrupt = |reason: String| StoreError::Corrupt { path: self.path.clone(), reason };
        let state: PersistedState =
            serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
        if !(OLDEST_VERSION..=STATE_VERSION).contains(&state.version) {
            return Err(corrupt(format!(
                "unsupported version {} (expected {OLDEST_VERSION}..={STATE_VERSION})",
                state.version
            )));
        }
        check_state(
            &state.pools,
            &state.routes,
            &state.backends,
            state.next_backend_id,
            &state.cache,
        )
        .map_err(corrupt)?;
        Ok(Some(state))
    }

    fn save(&self, state: &PersistedState) -> Result<(), StoreError> {
        let mut bytes = serde_json::to_vec_pretty(state)
            .map_err(|e| self.io("encode")(std::io::Error::other(e)))?;
        bytes.push(b'\n');
        let temp = self.temp_path();
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&temp)
            .map_err(self.io("create temp file"))?;
        file.write_all(&bytes).map_err(self.io("write temp file"))?;
        file.sync_all().map_err(self.io("fsync temp file"))?;
        drop(file);
        std::fs::rename(&temp, &self.path).map_err(self.io("rename temp file"))?;
        let dir = match self.path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        File::open(dir).and_then(|d| d.sync_all()).map_err(self.io("fsync directory"))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> PersistedState {
        PersistedState {
            version: STATE_VERSION,
            epoch: 7,
            revision: None,
            next_backend_id: 4,
            algorithm: Algorithm::LeastConnections,
            backends: vec![PersistedBackend { id: 3, url: "http://127.0.0.1:9".into(), weight: 2 }],
            pools: vec![PersistedPool {
                name: "api".into(),
                algorithm: Algorithm::Random,
                backends: vec![PersistedBackend {
                    id: 2,
                    url: "http://127.0.0.1:9".into(),
                    weight: 1,
                }],
            }],
            routes: vec![RouteConfig {
                pool: "api".into(),
                path_prefix: Some("/api".into()),
                ..RouteConfig::default()
            }],
            cache: CachePolicy { enabled: true, ttl_ms: 5_000, ..CachePolicy::default() },
            cache_generation: 0,
            timeouts: Timeouts::default(),
        }
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("fulcrum-store-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn round_trip_and_missing() {
        let dir = temp_dir("rt");
        let store = FileStore::new(dir.join("state.json"));
        assert!(store.load().unwrap().is_none());
        store.save(&sample()).unwrap();
        assert_eq!(store.load().unwrap(), Some(sample()));
        assert!(!store.temp_path().exists());
        let mut next = sample();
        next.epoch = 8;
        store.save(&next).unwrap();
        assert_eq!(store.load().unwrap().unwrap().epoch, 8);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn version_1_files_without_pools_still_load() {
        let dir = temp_dir("v1");
        let store = FileStore::new(dir.join("state.json"));
        let mut old: serde_json::Value = serde_json::to_value(sample()).unwrap();
        old["version"] = 1.into();
        let map = old.as_object_mut().unwrap();
        map.remove("pools");
        map.remove("routes");
        std::fs::write(store.path(), old.to_string()).unwrap();
        let loaded = store.load().unwrap().unwrap();
        assert!(loaded.pools.is_empty() && loaded.routes.is_empty());
        assert_eq!(loaded.backends, sample().backends);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn files_with_only_the_cache_switch_still_load() {
        let dir = temp_dir("old-cache");
        let store = FileStore::new(dir.join("state.json"));
        let mut old: serde_json::Value = serde_json::to_value(sample()).unwrap();
        old["cache"] = serde_json::json!({"enabled": true});
        std::fs::write(store.path(), old.to_string()).unwrap();
        let loaded = store.load().unwrap().unwrap();
        assert_eq!(loaded.cache, CachePolicy { enabled: true, ..CachePolicy::default() });
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn corrupt_files_are_refused_with_the_path() {
        let dir = temp_dir("corrupt");
        let path = dir.join("state.json");
        let store = FileStore::new(&path);
        for bad in [
            "{not json".to_owned(),
            serde_json::to_string(&sample()).unwrap().replace("\"epoch\"", "\"epok\""),
            serde_json::to_string(&sample()).unwrap().replace("\"version\":3", "\"version\":99"),
            serde_json::to_string(&sample()).unwrap().replace("\"id\":2", "\"id\":3"),
            serde_json::to_string(&sample()).unwrap().replace("\"pool\":\"api\"", "\"pool\":\"x\""),
            serde_json::to_string(&sample())
                .unwrap()
                .replace("\"name\":\"api\"", "\"name\":\"default\""),
            serde_json::to_string(&sample())
                .unwrap()
                .replace("\"next_backend_id\":4", "\"next_backend_id\":2"),
            serde_json::to_string(&sample()).unwrap().replace("\"ttl_ms\":5000", "\"ttl_ms\":0"),
        ] {
            std::fs::write(&path, bad).unwrap();
            let err = store.load().unwrap_err();
            assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
            assert!(err.to_string().contains(&path.display().to_string()), "{err}");
        }
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn version_2_files_without_a_generation_or_revision_still_load() {
        let dir = temp_dir("v2");
        let store = FileStore::new(dir.join("state.json"));
        let mut old: serde_json::Value = serde_json::to_value(sample()).unwrap();
        old["version"] = 2.into();
        old.as_object_mut().unwrap().remove("cache_generation");
        std::fs::write(store.path(), old.to_string()).unwrap();
        let loaded = store.load().unwrap().unwrap();
        assert_eq!((loaded.cache_generation, loaded.revision), (0, None));
        let mut shared = sample();
        shared.revision = Some(42);
        shared.cache_generation = 3;
        store.save(&shared).unwrap();
        assert_eq!(store.load().unwrap(), Some(shared));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn documents_round_trip_through_the_file_form() {
        let file = sample();
        let doc = file.document();
        assert_eq!(doc.version, DOCUMENT_VERSION);
        let bytes = doc.to_json();
        assert!(!String::from_utf8_lossy(&bytes).contains("epoch"));
        assert_eq!(StateDocument::parse(&bytes).unwrap(), doc);
        assert_eq!(PersistedState::new(&doc, 7, None), file);
    }

    #[test]
    fn a_hand_written_document_needs_only_its_version_and_next_id() {
        let doc = StateDocument::parse(br#"{"version":1,"next_backend_id":1}"#).unwrap();
        assert!(doc.backends.is_empty() && doc.pools.is_empty() && doc.routes.is_empty());
        assert_eq!((doc.algorithm, doc.cache_generation), (Algorithm::RoundRobin, 0));
        let doc = StateDocument::parse(
            br#"{"version":1,"next_backend_id":3,"backends":[{"id":1,"url":"http://127.0.0.1:1","weight":1}],
                "pools":[{"name":"api","backends":[{"id":2,"url":"http://127.0.0.1:2","weight":5}]}],
                "routes":[{"pool":"api","path_prefix":"/api"}]}"#,
        )
        .unwrap();
        assert_eq!(doc.pools[0].backends[0].weight, 5);
    }

    #[test]
    fn invalid_documents_are_refused_with_the_reason() {
        for (bad, reason) in [
            (&b"{not json"[..], "not a state document"),
            (b"null", "not a state document"),
            (br#"{"version":1}"#, "next_backend_id"),
            (br#"{"version":2,"next_backend_id":1}"#, "unsupported document version 2"),
            (br#"{"version":1,"next_backend_id":1,"epoch":3}"#, "unknown field `epoch`"),
            (
                br#"{"version":1,"next_backend_id":1,"backends":[{"id":1,"url":"http://a:1","weight":1}]}"#,
                "next_backend_id is not above",
            ),
            (br#"{"version":1,"next_backend_id":1,"routes":[{"pool":"nope"}]}"#, "unknown pool"),
            (
                br#"{"version":1,"next_backend_id":1,"pools":[{"name":"default"}]}"#,
                "listed twice",
            ),
            (br#"{"version":1,"next_backend_id":1,"cache":{"ttl_ms":0}}"#, "ttl"),
        ] {
            let err = StateDocument::parse(bad).unwrap_err();
            assert!(err.contains(reason), "{}: {err}", String::from_utf8_lossy(bad));
        }
    }
}
