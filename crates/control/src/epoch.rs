//! From the state as data to the state as run: the first document (from the configuration) and
//! the [`Epoch`] of a document, which keeps the `Arc<Backend>` of every backend the previous
//! epoch already ran unchanged (its counters, health and the workers' connections survive).
//! Runs on `lb-control`, and on `lb-store` once at start to check the document it found.

use std::sync::Arc;

use fulcrum_config::{BackendConfig, BackendUrl, Config, DEFAULT_POOL, PassiveHealth};
use fulcrum_model::{Backend, BackendId, Epoch, EpochSettings, Pool};

use crate::change::{ControlError, check_weight};
use crate::state::{DOCUMENT_VERSION, PersistedBackend, PersistedPool, StateDocument};

/// What every epoch built by one control thread has in common besides its document.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Builder {
    /// Data-plane workers (each backend gets a counter slot per worker).
    pub workers: usize,
    /// Passive health settings (from the configuration; not shared).
    pub health: PassiveHealth,
}

/// An epoch built from a document.
#[derive(Debug)]
pub(crate) struct Built {
    /// The epoch.
    pub epoch: Epoch,
    /// Ids the previous epoch ran as another backend (another URL, weight or pool): a document
    /// written by hand, or after the store was wiped. Workers key their connections by id, so
    /// such a backend must leave in an epoch of its own before its id comes back.
    pub replaced: Vec<BackendId>,
}

impl Builder {
    /// Epoch `id` of `doc`, reusing `previous`'s backends that did not change. URLs of new
    /// backends are parsed and resolved here; a document that cannot run is refused whole.
    pub fn build(
        &self,
        doc: &StateDocument,
        id: u64,
        previous: Option<&Epoch>,
    ) -> Result<Built, ControlError> {
        let mut replaced = Vec::new();
        let mut pool = |name: &str, algorithm, list: &[PersistedBackend]| {
            let mut pool = Pool::new(name, algorithm);
            for b in list {
                check_weight(b.weight)?;
                let old = previous.and_then(|e| e.backends().find(|o| o.id == b.id));
                let backend = match old {
                    Some(o) if o.url.url == b.url && o.weight == b.weight && *o.pool == *name => {
                        o.clone()
                    }
                    _ => {
                        if old.is_some() {
                            replaced.push(b.id);
                        }
                        let url = BackendUrl::parse(&b.url)?;
                        if pool.backends.iter().any(|p| p.url.url == url.url) {
                            return Err(ControlError::DuplicateBackend(url.url));
                        }
                        let backend =
                            Backend::new(b.id, pool.name.clone(), url, b.weight, self.workers);
                        Arc::new(backend)
                    }
                };
                pool.backends.push(backend);
            }
            Ok::<_, ControlError>(pool)
        };
        let mut pools = vec![pool(DEFAULT_POOL, doc.algorithm, &doc.backends)?];
        for p in &doc.pools {
            pools.push(pool(&p.name, p.algorithm, &p.backends)?);
        }
        let settings = EpochSettings {
            cache: doc.cache.clone(),
            cache_generation: doc.cache_generation,
            timeouts: doc.timeouts,
            health: self.health,
        };
        let epoch = Epoch::new(id, pools, doc.routes.clone(), settings)?;
        Ok(Built { epoch, replaced })
    }
}

/// Epoch `id`: `epoch` without the backends `gone` (same routes and settings).
pub(crate) fn without(epoch: &Epoch, gone: &[BackendId], id: u64) -> Result<Epoch, ControlError> {
    let pools = epoch
        .pools()
        .iter()
        .map(|p| {
            let mut p = p.clone();
            p.backends.retain(|b| !gone.contains(&b.id));
            p
        })
        .collect();
    Ok(Epoch::new(id, pools, epoch.routes().configs().to_vec(), epoch.settings())?)
}

/// The document the configuration describes: the `default` pool from `backends` and
/// `algorithm`, then `pools` in order, ids numbered across them from 1 (URLs normalised, which
/// resolves them).
pub(crate) fn initial_document(config: &Config) -> Result<StateDocument, ControlError> {
    let mut next_backend_id: BackendId = 1;
    let mut list = |backends: &[BackendConfig]| {
        backends
            .iter()
            .map(|b| {
                check_weight(b.weight)?;
                let url = BackendUrl::parse(&b.url)?;
                let backend =
                    PersistedBackend { id: next_backend_id, url: url.url, weight: b.weight };
                next_backend_id += 1;
                Ok(backend)
            })
            .collect::<Result<Vec<_>, ControlError>>()
    };
    let backends = list(&config.backends)?;
    let pools = config
        .pools
        .iter()
        .map(|p| {
            Ok(PersistedPool {
                name: p.name.clone(),
                algorithm: p.algorithm,
                backends: list(&p.backends)?,
            })
        })
        .collect::<Result<Vec<_>, ControlError>>()?;
    Ok(StateDocument {
        version: DOCUMENT_VERSION,
        next_backend_id,
        algorithm: config.algorithm,
        backends,
        pools,
        routes: config.routes.clone(),
        cache: config.cache.clone(),
        cache_generation: 0,
        timeouts: config.timeouts,
        written_by: None,
    })
}

/// The document an epoch runs (`next_backend_id`: the id the next added backend gets).
pub(crate) fn document_of(epoch: &Epoch, next_backend_id: BackendId) -> StateDocument {
    let backends = |pool: &Pool| {
        pool.backends
            .iter()
            .map(|b| PersistedBackend { id: b.id, url: b.url.url.clone(), weight: b.weight })
            .collect()
    };
    let default = epoch.default_pool();
    StateDocument {
        version: DOCUMENT_VERSION,
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
        cache_generation: epoch.cache_generation,
        timeouts: epoch.timeouts,
        written_by: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::change::{Change, apply};

    fn builder() -> Builder {
        Builder { workers: 2, health: PassiveHealth::default() }
    }

    #[test]
    fn unchanged_backends_keep_their_arc_and_changed_ids_are_reported() {
        let config = Config {
            backends: vec![BackendConfig::new("http://127.0.0.1:1".into())],
            ..Config::default()
        };
        let doc = initial_document(&config).unwrap();
        assert_eq!((doc.next_backend_id, doc.backends[0].id), (2, 1));
        let first = builder().build(&doc, 1, None).unwrap().epoch;
        let (doc2, _) = apply(
            &doc,
            Change::AddPoolBackend {
                pool: DEFAULT_POOL.into(),
                url: "http://127.0.0.1:2".into(),
                weight: 3,
            },
        )
        .unwrap();
        let built = builder().build(&doc2, 2, Some(&first)).unwrap();
        assert!(built.replaced.is_empty());
        let (a, b) = (&first.default_pool().backends[0], &built.epoch.default_pool().backends[0]);
        assert!(Arc::ptr_eq(a, b), "unchanged backend reused");
        assert_eq!(document_of(&built.epoch, doc2.next_backend_id), doc2);

        // A document that gives id 1 another URL (written by hand).
        let mut hand = doc2.clone();
        hand.backends[0].url = "http://127.0.0.1:9".into();
        let built = builder().build(&hand, 3, Some(&first)).unwrap();
        assert_eq!(built.replaced, vec![1]);
        let gap = without(&first, &built.replaced, 3).unwrap();
        assert_eq!(gap.backends().count(), 0);

        // A weight out of range, an unresolvable URL: refused whole.
        let mut bad = doc2.clone();
        bad.backends[1].weight = 0;
        assert_eq!(builder().build(&bad, 3, None).unwrap_err(), ControlError::InvalidWeight(0));
        let mut bad = doc2;
        bad.backends[1].url = "ftp://x:1".into();
        assert!(matches!(builder().build(&bad, 3, None), Err(ControlError::InvalidUrl(_))));
    }
}
