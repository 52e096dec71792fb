//! Where the control plane's source of truth is kept between runs: the [`StateStore`] trait and
//! its file implementation. Called only from the `lb-control` thread (and once at start).
//!
//! The trait is small on purpose: a distributed store (etcd) can replace the file later without
//! touching the control thread.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use fulcrum_config::{
    Algorithm, CachePolicy, DEFAULT_POOL, RouteConfig, Timeouts, check_pool_name, validate_routes,
};
use fulcrum_model::BackendId;

/// Current version of the persisted format. Version 2 added `pools` and `routes`; files of
/// version 1 (without them) still load.
pub const STATE_VERSION: u32 = 2;
/// The oldest version that still loads.
const OLDEST_VERSION: u32 = 1;

/// Everything an operator can change at run time, as persisted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PersistedState {
    /// Format version ([`STATE_VERSION`]).
    pub version: u32,
    /// The epoch this state was applied as; a restart continues numbering after it.
    pub epoch: u64,
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
    /// Phase timeouts.
    pub timeouts: Timeouts,
}

/// One persisted pool besides `default`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PersistedPool {
    /// Its name.
    pub name: String,
    /// Its algorithm.
    pub algorithm: Algorithm,
    /// Its backends in operator order.
    pub backends: Vec<PersistedBackend>,
}

/// One persisted backend.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PersistedBackend {
    /// Server-assigned identifier.
    pub id: BackendId,
    /// Normalised `http://host:port`.
    pub url: String,
    /// Relative weight.
    pub weight: u32,
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

/// The control plane's persistence: load once at start, save after every accepted change.
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
        let names: Vec<&str> = state.pools.iter().map(|p| p.name.as_str()).collect();
        for (i, name) in names.iter().enumerate() {
            check_pool_name(name).map_err(&corrupt)?;
            if *name == DEFAULT_POOL || names[..i].contains(name) {
                return Err(corrupt(format!("pool `{name}` listed twice")));
            }
        }
        validate_routes(&state.routes, |p| p == DEFAULT_POOL || names.contains(&p))
            .map_err(|e| corrupt(e.to_string()))?;
        let pooled = state.pools.iter().flat_map(|p| p.backends.iter());
        let mut ids: Vec<_> = state.backends.iter().chain(pooled).map(|b| b.id).collect();
        ids.sort_unstable();
        if ids.windows(2).any(|w| w[0] == w[1]) {
            return Err(corrupt("duplicate backend id".into()));
        }
        if ids.last().is_some_and(|&max| max >= state.next_backend_id) {
            return Err(corrupt("next_backend_id is not above every backend id".into()));
        }
        state.cache.validate().map_err(|e| corrupt(e.to_string()))?;
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
            serde_json::to_string(&sample()).unwrap().replace("\"version\":2", "\"version\":99"),
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
}
