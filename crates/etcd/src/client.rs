//! The public client: read the state document, compare-and-swap it, watch it. Used on the
//! `lb-store` thread inside a current-thread tokio runtime (never on a data-plane worker).

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use bytes::Bytes;
use tokio::sync::Mutex as AsyncMutex;
use tokio::time::Instant;

use crate::channel::{Channel, Retry, Shared, Token, protocol};
use crate::config::{self, EtcdConfig};
use crate::error::{Error, grpc_code};
use crate::status::StatusHandle;
use crate::transport::Connector;
use crate::watch::Watch;
use crate::wire;

/// The key under the prefix that holds the state document.
pub const STATE_KEY: &str = "state";

/// The state document as etcd has it at one revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The document, `None` when the key does not exist.
    pub value: Option<Vec<u8>>,
    /// Revision of the document's last write; 0 when it does not exist. Pass it to
    /// [`Client::put_if`] to replace exactly this version.
    pub mod_revision: i64,
    /// The store revision the read was made at; watch from `header_revision + 1` to see every
    /// later change.
    pub header_revision: i64,
}

impl Snapshot {
    fn from_range(range: wire::RangeResponse) -> Self {
        let header_revision = range.header.revision;
        match range.kvs.into_iter().next() {
            Some(kv) => {
                Self { value: Some(kv.value), mod_revision: kv.mod_revision, header_revision }
            }
            None => Self { value: None, mod_revision: 0, header_revision },
        }
    }
}

/// What a compare-and-swap did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CasOutcome {
    /// The document was replaced; `revision` is its new mod_revision.
    Written {
        /// The write's revision.
        revision: i64,
    },
    /// Someone else wrote first; nothing was written. `current` is what etcd holds now.
    Conflict {
        /// The document that won.
        current: Snapshot,
    },
}

/// An etcd v3 client for Fulcrum's state document at `<prefix>/state`.
///
/// Calls take `&self` and are serialised on one connection; every call is bounded by
/// `timeouts.request` (`put_if`: twice that at most, see there). Watches get their own
/// connections.
pub struct Client {
    shared: Arc<Shared>,
    channel: AsyncMutex<Channel>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("key", &self.shared.key).finish_non_exhaustive()
    }
}

impl Client {
    /// Validates `config` and loads the TLS files; does not contact etcd (the first call does).
    pub fn new(config: EtcdConfig) -> Result<Self, Error> {
        let (endpoints, prefix) = config::validate(&config)?;
        let connector = Connector::new(config.tls.as_ref(), config.timeouts.connect)?;
        let key = format!("{prefix}/{STATE_KEY}");
        let shared = Arc::new(Shared {
            endpoints,
            connector,
            timeouts: config.timeouts,
            limits: config.limits,
            key_b64: wire::encode(key.as_bytes()),
            key,
            credentials: config.username.zip(config.password),
            token: std::sync::Mutex::new(Token::Unknown),
            preferred: AtomicUsize::new(0),
            status: StatusHandle::default(),
        });
        Ok(Self { channel: AsyncMutex::new(Channel::new(shared.clone())), shared })
    }

    /// The full key of the state document.
    pub fn state_key(&self) -> &str {
        &self.shared.key
    }

    /// A handle on the connection status, readable from any thread.
    pub fn status(&self) -> StatusHandle {
        self.shared.status.clone()
    }

    /// Reads the state document (linearizable).
    pub async fn get(&self) -> Result<Snapshot, Error> {
        let deadline = Instant::now() + self.shared.timeouts.request;
        let mut channel = lock(&self.channel, deadline, "get").await?;
        channel.range("get", deadline, false).await.map(Snapshot::from_range)
    }

    /// Writes `value` if the document's mod_revision is still `expected_mod_revision` (0: if
    /// the document does not exist yet), in one transaction that reads the current document
    /// when the comparison fails.
    ///
    /// A current document equal to `value` counts as `Written` (at its revision): the state is
    /// what the caller wanted either way.
    ///
    /// When the outcome is unknown (the connection broke or etcd timed out after the request
    /// left), the document is read, within one further `timeouts.request`: changed, it settles
    /// the answer as above; unchanged, the transaction is sent once more (the compare keeps that
    /// safe). Only when that fails too is the first error returned, and then the write may or
    /// may not happen: read again before deciding.
    pub async fn put_if(
        &self,
        expected_mod_revision: i64,
        value: &[u8],
    ) -> Result<CasOutcome, Error> {
        let limit = self.shared.limits.max_value_bytes;
        if value.len() > limit {
            return Err(Error::TooLarge { what: "state document", limit });
        }
        if expected_mod_revision < 0 {
            return Err(Error::Config("expected_mod_revision must be 0 or more".into()));
        }
        let deadline = Instant::now() + self.shared.timeouts.request;
        let mut channel = lock(&self.channel, deadline, "put_if").await?;
        let encoded = wire::encode(value);
        let txn = wire::TxnRequest::cas(&self.shared.key_b64, expected_mod_revision, &encoded);
        let body = Bytes::from(serde_json::to_vec(&txn).map_err(|e| protocol("put_if", e))?);
        let error =
            match channel.call("put_if", wire::TXN, body.clone(), deadline, Retry::Once).await {
                Ok(bytes) => return outcome(&bytes, value),
                Err(e) if ambiguous(&e) => e,
                Err(e) => return Err(e),
            };
        // The write may or may not have happened: look, within one more request timeout.
        let deadline = Instant::now() + self.shared.timeouts.request;
        let Ok(range) = channel.range("put_if", deadline, false).await else {
            return Err(error);
        };
        let current = Snapshot::from_range(range);
        if current.mod_revision != expected_mod_revision {
            return Ok(settle(current, value));
        }
        // Unchanged, so it did not happen; the compare keeps a second try safe even if the first
        // one is still on its way inside etcd (then this one finds it, as our own bytes).
        match channel.call("put_if", wire::TXN, body, deadline, Retry::Once).await {
            Ok(bytes) => outcome(&bytes, value),
            Err(_) => Err(error),
        }
    }

    /// Watches the state document from `from_revision` on (usually a [`Snapshot`]'s
    /// `header_revision + 1`); with `from_revision <= 0` the first event is the current
    /// document. The watch runs as a task on the current tokio runtime until dropped, and
    /// reconnects by itself forever; see [`Watch`].
    pub fn watch(&self, from_revision: i64) -> Result<Watch, Error> {
        Watch::start(self.shared.clone(), from_revision)
    }
}

/// Waits for the connection, within the call's deadline.
async fn lock<'a>(
    channel: &'a AsyncMutex<Channel>,
    deadline: Instant,
    op: &'static str,
) -> Result<tokio::sync::MutexGuard<'a, Channel>, Error> {
    let after = deadline.saturating_duration_since(Instant::now());
    tokio::time::timeout_at(deadline, channel.lock())
        .await
        .map_err(|_| Error::Timeout { op, after })
}

/// Whether a failed write may still have happened.
fn ambiguous(e: &Error) -> bool {
    match e {
        Error::Transport { .. } | Error::Timeout { .. } => true,
        Error::Etcd { code, .. } => {
            matches!(*code, grpc_code::UNAVAILABLE | grpc_code::DEADLINE_EXCEEDED)
        }
        _ => false,
    }
}

fn outcome(answer: &[u8], value: &[u8]) -> Result<CasOutcome, Error> {
    let answer: wire::TxnResponse =
        serde_json::from_slice(answer).map_err(|e| protocol("put_if", e))?;
    if answer.succeeded {
        return Ok(CasOutcome::Written { revision: answer.header.revision });
    }
    let range = answer.responses.into_iter().find_map(|r| r.response_range).ok_or_else(|| {
        Error::Protocol { op: "put_if", reason: "a failed compare without the range".into() }
    })?;
    let mut current = Snapshot::from_range(range);
    if current.header_revision == 0 {
        current.header_revision = answer.header.revision;
    }
    Ok(settle(current, value))
}

/// A document other than the expected one: a conflict, unless it is exactly what we meant to
/// write (our own earlier attempt, or an identical write), which is as good as written.
fn settle(current: Snapshot, value: &[u8]) -> CasOutcome {
    if current.value.as_deref() == Some(value) {
        CasOutcome::Written { revision: current.mod_revision }
    } else {
        CasOutcome::Conflict { current }
    }
}
