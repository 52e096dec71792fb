//! What an operator can change ([`Change`]), why a change is refused ([`ControlError`]), and the
//! one function that applies a change to the state as data ([`apply`]): a pure computation from
//! one [`StateDocument`] to the next. The file store applies its result on `lb-control`; the
//! shared store computes it on `lb-store` from the revision it applied, and computes it again
//! on a newer document when another instance wrote first.

use fulcrum_config::{
    Algorithm, BackendConfig, BackendUrl, BackendUrlError, CachePolicy, CachePolicyError,
    DEFAULT_POOL, MAX_POOLS, MAX_WEIGHT, RouteConfig, RouteError, Timeouts, check_pool_name,
    validate_routes,
};
use fulcrum_model::BackendId;

use crate::state::{PersistedBackend, PersistedPool, StateDocument};

/// A change to the running configuration. Each one becomes exactly one epoch (or none, when it
/// is refused).
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// Replace the cache settings (validated; refused with [`ControlError::InvalidCache`]).
    SetCache(CachePolicy),
    /// Drop every cached response: the new epoch carries a bumped `cache_generation`, and
    /// each worker clears its shard when it installs it, so the change answers only after
    /// every worker's cache is empty. With the shared store the generation is in the shared
    /// document, so every instance clears its caches.
    PurgeCache,
    /// Replace the phase timeouts.
    SetTimeouts(Timeouts),
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
    /// Remove a backend from a pool: it gets no new requests, in-flight ones finish, idle
    /// connections close.
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
    /// The shared store (etcd) cannot be reached or did not answer in time; nothing was
    /// applied, and the data plane goes on with the configuration it runs.
    #[error("the shared store is unavailable, nothing was changed: {0}")]
    StoreUnavailable(String),
    /// Other instances kept changing the shared state: the change was computed again on each
    /// newer document and lost every compare-and-swap, `store.conflict_retries` times.
    #[error("{0}")]
    StoreConflict(String),
}

/// What a change created, to be reported once it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Created {
    /// Nothing to report.
    Nothing,
    /// This backend.
    Backend(BackendId),
    /// This pool.
    Pool(String),
}

/// `change` applied to `doc`: the next document and what it created. Validates everything the
/// change brings (URLs are parsed and resolved, names, weights, routes against the pools); ids
/// come from the document, so a change computed again on a newer document gets fresh ones.
pub(crate) fn apply(
    doc: &StateDocument,
    change: Change,
) -> Result<(StateDocument, Created), ControlError> {
    let mut next = doc.clone();
    let mut created = Created::Nothing;
    match change {
        Change::SetPoolAlgorithm { pool, algorithm } => {
            if pool == DEFAULT_POOL {
                next.algorithm = algorithm;
            } else {
                pool_mut(&mut next.pools, &pool)?.algorithm = algorithm;
            }
        }
        Change::SetCache(cache) => {
            cache.validate()?;
            next.cache = cache;
        }
        Change::PurgeCache => next.cache_generation += 1,
        Change::SetTimeouts(timeouts) => next.timeouts = timeouts,
        Change::AddPoolBackend { pool, url, weight } => {
            created = add_backend(&mut next, &pool, &url, weight)?;
        }
        Change::RemovePoolBackend { pool, id } => {
            remove_backend(backends_mut(&mut next, &pool)?, id)?;
        }
        Change::CreatePool { name, algorithm, backends } => {
            if name == DEFAULT_POOL || next.pools.iter().any(|p| p.name == name) {
                return Err(ControlError::DuplicatePool(name));
            }
            check_pool_name(&name).map_err(ControlError::InvalidPool)?;
            if next.pools.len() + 1 >= MAX_POOLS {
                return Err(ControlError::InvalidPool(format!(
                    "at most {MAX_POOLS} pools (`default` included)"
                )));
            }
            let mut list = Vec::with_capacity(backends.len());
            for (i, b) in backends.iter().enumerate() {
                let backend = new_backend(&list, &b.url, b.weight, &mut next.next_backend_id)
                    .map_err(|e| match e {
                        ControlError::DuplicateBackend(url) => ControlError::InvalidPool(format!(
                            "backends[{i}]: `{url}` listed twice"
                        )),
                        other => other,
                    })?;
                list.push(backend);
            }
            next.pools.push(PersistedPool { name: name.clone(), algorithm, backends: list });
            created = Created::Pool(name);
        }
        Change::DeletePool(name) => {
            if name == DEFAULT_POOL {
                return Err(ControlError::DefaultPool);
            }
            let index = next
                .pools
                .iter()
                .position(|p| p.name == name)
                .ok_or_else(|| ControlError::UnknownPool(name.clone()))?;
            if let Some(route) = next.routes.iter().position(|r| r.pool == name) {
                return Err(ControlError::PoolInUse { pool: name, route });
            }
            next.pools.remove(index);
        }
        Change::SetRoutes(list) => {
            let pools = &next.pools;
            validate_routes(&list, |p| p == DEFAULT_POOL || pools.iter().any(|x| x.name == p))?;
            next.routes = list;
        }
    }
    Ok((next, created))
}

/// Refuses a weight outside 1..=[`MAX_WEIGHT`].
pub(crate) fn check_weight(weight: u32) -> Result<(), ControlError> {
    if (1..=MAX_WEIGHT).contains(&weight) {
        Ok(())
    } else {
        Err(ControlError::InvalidWeight(weight))
    }
}

/// Adds a backend to `pool` of `doc`.
fn add_backend(
    doc: &mut StateDocument,
    pool: &str,
    url: &str,
    weight: u32,
) -> Result<Created, ControlError> {
    let mut next_id = doc.next_backend_id;
    let list = backends_mut(doc, pool)?;
    let backend = new_backend(list, url, weight, &mut next_id)?;
    let id = backend.id;
    list.push(backend);
    doc.next_backend_id = next_id;
    Ok(Created::Backend(id))
}

/// Validates a backend for a pool holding `list`, taking the next id.
fn new_backend(
    list: &[PersistedBackend],
    url: &str,
    weight: u32,
    next_id: &mut BackendId,
) -> Result<PersistedBackend, ControlError> {
    check_weight(weight)?;
    let url = BackendUrl::parse(url)?;
    if list.iter().any(|b| b.url == url.url) {
        return Err(ControlError::DuplicateBackend(url.url));
    }
    let backend = PersistedBackend { id: *next_id, url: url.url, weight };
    *next_id += 1;
    Ok(backend)
}

/// The backends of the pool named `name` (`default`: the top-level list).
fn backends_mut<'d>(
    doc: &'d mut StateDocument,
    name: &str,
) -> Result<&'d mut Vec<PersistedBackend>, ControlError> {
    if name == DEFAULT_POOL {
        return Ok(&mut doc.backends);
    }
    Ok(&mut pool_mut(&mut doc.pools, name)?.backends)
}

/// The pool named `name` besides `default`.
fn pool_mut<'p>(
    pools: &'p mut [PersistedPool],
    name: &str,
) -> Result<&'p mut PersistedPool, ControlError> {
    pools.iter_mut().find(|p| p.name == name).ok_or_else(|| ControlError::UnknownPool(name.into()))
}

/// Removes backend `id` from `list`.
fn remove_backend(list: &mut Vec<PersistedBackend>, id: BackendId) -> Result<(), ControlError> {
    let before = list.len();
    list.retain(|b| b.id != id);
    if list.len() == before { Err(ControlError::UnknownBackend(id)) } else { Ok(()) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::DOCUMENT_VERSION;

    fn empty() -> StateDocument {
        StateDocument::parse(br#"{"version":1,"next_backend_id":1}"#).unwrap()
    }

    fn add(doc: &StateDocument, url: &str) -> Result<(StateDocument, Created), ControlError> {
        apply(doc, Change::AddPoolBackend { pool: DEFAULT_POOL.into(), url: url.into(), weight: 1 })
    }

    #[test]
    fn ids_come_from_the_document_so_a_recomputed_add_gets_a_fresh_one() {
        let base = empty();
        assert_eq!(base.version, DOCUMENT_VERSION);
        let (a, created) = add(&base, "http://127.0.0.1:1/").unwrap();
        assert_eq!(created, Created::Backend(1));
        assert_eq!(a.backends[0].url, "http://127.0.0.1:1", "normalised");
        // Another instance added :1 first; this one adds :2 computed again on that document.
        let (b, created) = add(&a, "http://127.0.0.1:2").unwrap();
        assert_eq!((created, b.next_backend_id), (Created::Backend(2), 3));
        // The same URL computed again on a document that has it is a duplicate.
        assert_eq!(
            add(&a, "http://127.0.0.1:1").unwrap_err(),
            ControlError::DuplicateBackend("http://127.0.0.1:1".into())
        );
        // Removing never frees an id.
        let (c, ()) = (
            apply(&b, Change::RemovePoolBackend { pool: DEFAULT_POOL.into(), id: 2 }).unwrap().0,
            (),
        );
        assert_eq!(add(&c, "http://127.0.0.1:2").unwrap().1, Created::Backend(3));
        assert_eq!(
            apply(&c, Change::RemovePoolBackend { pool: DEFAULT_POOL.into(), id: 2 }).unwrap_err(),
            ControlError::UnknownBackend(2)
        );
    }

    #[test]
    fn pools_routes_and_settings() {
        let create = Change::CreatePool {
            name: "api".into(),
            algorithm: Algorithm::Random,
            backends: vec![BackendConfig::new("http://127.0.0.1:5".into())],
        };
        let (doc, created) = apply(&empty(), create.clone()).unwrap();
        assert_eq!(created, Created::Pool("api".into()));
        assert_eq!(apply(&doc, create).unwrap_err(), ControlError::DuplicatePool("api".into()));
        let twice = Change::CreatePool {
            name: "b".into(),
            algorithm: Algorithm::Random,
            backends: vec![
                BackendConfig::new("http://127.0.0.1:5".into()),
                BackendConfig::new("http://127.0.0.1:5/".into()),
            ],
        };
        assert!(
            matches!(apply(&doc, twice), Err(ControlError::InvalidPool(m)) if m.contains("backends[1]"))
        );
        let route = RouteConfig { pool: "api".into(), ..RouteConfig::default() };
        let (doc, _) = apply(&doc, Change::SetRoutes(vec![route])).unwrap();
        assert_eq!(
            apply(&doc, Change::DeletePool("api".into())).unwrap_err(),
            ControlError::PoolInUse { pool: "api".into(), route: 0 }
        );
        assert_eq!(
            apply(&doc, Change::DeletePool("default".into())).unwrap_err(),
            ControlError::DefaultPool
        );
        let unknown = RouteConfig { pool: "nope".into(), ..RouteConfig::default() };
        assert!(matches!(
            apply(&doc, Change::SetRoutes(vec![unknown])),
            Err(ControlError::InvalidRoutes(_))
        ));
        let set = Change::SetPoolAlgorithm { pool: "default".into(), algorithm: Algorithm::Random };
        assert_eq!(apply(&doc, set).unwrap().0.algorithm, Algorithm::Random);
        let (purged, _) = apply(&doc, Change::PurgeCache).unwrap();
        assert_eq!(purged.cache_generation, doc.cache_generation + 1);
        let bad = CachePolicy { ttl_ms: 0, ..CachePolicy::default() };
        assert!(matches!(apply(&doc, Change::SetCache(bad)), Err(ControlError::InvalidCache(_))));
        assert_eq!(
            apply(
                &doc,
                Change::AddPoolBackend {
                    pool: "x".into(),
                    url: "http://127.0.0.1:1".into(),
                    weight: 1
                }
            )
            .unwrap_err(),
            ControlError::UnknownPool("x".into())
        );
        assert_eq!(
            apply(
                &doc,
                Change::AddPoolBackend {
                    pool: DEFAULT_POOL.into(),
                    url: "http://127.0.0.1:1".into(),
                    weight: 0
                }
            )
            .unwrap_err(),
            ControlError::InvalidWeight(0)
        );
    }
}
