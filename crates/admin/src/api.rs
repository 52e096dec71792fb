//! Routes, request/response shapes and handlers of the admin API (on `lb-admin`).
//!
//! Each handler is annotated for the OpenAPI document ([`super::openapi`]); the route table in
//! [`route`] is the single place that maps paths and methods to handlers.

use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::{Body as _, Incoming};
use hyper::header::{
    AUTHORIZATION, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE, HeaderValue, LOCATION,
};
use hyper::{Method, Request, Response, StatusCode};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use utoipa::openapi::{self, RefOr};
use utoipa::{IntoResponses, ToSchema};

use fulcrum_config::{
    Algorithm, BackendConfig, CachePolicy, DEFAULT_POOL, RouteConfig, UnknownAlgorithm,
};
use fulcrum_control::{
    Applied, BackendView, Change, ControlHandle, DEFAULT_WEIGHT, PoolView, Source, StateView,
    StoreView,
};
use fulcrum_model::{HealthSnapshot, HealthState};

use crate::App;
use crate::auth::Scope;
use crate::error::{ApiError, ErrorBody};
use crate::settings::{
    ActiveHealthOut, CacheSettings, CacheStatus, PassiveHealthOut, RetriesOut, RouteBody,
    StoreKindName, StoreSettingsOut, TimeoutsOut, Token,
};

/// Header carrying the epoch a mutation produced (also in the body where there is one).
pub const EPOCH_HEADER: &str = "fulcrum-epoch";

type Resp = Response<Full<Bytes>>;

// ---------------------------------------------------------------------------------------------
// Shapes

/// A backend with its merged counters.
#[derive(Debug, Serialize, ToSchema)]
pub struct BackendOut {
    /// Server-assigned identifier (never reused).
    #[schema(example = 1)]
    pub id: u64,
    /// Normalised `scheme://host:port`: `http`, `https`, `h2c` or `h2`.
    #[schema(example = "http://127.0.0.1:9001", pattern = "^(https?|h2c?)://[^/?#@]+$")]
    pub url: String,
    /// Relative weight: the backend's share of requests under every algorithm.
    #[schema(example = 1, minimum = 1, maximum = 10000)]
    pub weight: u32,
    /// `false` while passive health checking has ejected it on any worker.
    pub healthy: bool,
    /// Requests in flight on every worker.
    pub in_flight: u32,
    /// Average response time over the balancer's window, in milliseconds; `null` without samples.
    pub avg_response_ms: Option<f64>,
    /// Requests sent to this backend since it was added.
    pub requests_total: u64,
    /// Active health checks (`[health_check]`).
    pub health: BackendHealthOut,
}

/// What the active health checks say about a backend.
#[derive(Debug, Serialize, ToSchema)]
pub struct BackendHealthOut {
    /// `disabled` when `[health_check]` is off; `unknown` until the first check (traffic
    /// flows); `up`; `down` after `fall` failed checks in a row (skipped unless every backend
    /// is down, then all are used: fail open).
    pub state: HealthStateName,
    /// Checks passed in a row.
    pub consecutive_ok: u32,
    /// Checks failed in a row.
    pub consecutive_fail: u32,
    /// Checks passed since the backend was added.
    pub checks_ok: u64,
    /// Checks failed since the backend was added.
    pub checks_failed: u64,
    /// Why the most recent failed check failed (kept after later passes); `null` if none failed.
    #[schema(example = "status 503")]
    pub last_error: Option<String>,
    /// When the last check finished, in milliseconds since the Unix epoch; `null` before the
    /// first.
    pub checked_at_unix_ms: Option<u64>,
    /// Percentage of its full share of new requests the pickers give it: 100, or less during
    /// slow start (`health_check.slow_start_ms`) after it came back up.
    #[schema(example = 100, minimum = 0, maximum = 100)]
    pub share_percent: u64,
}

/// A backend's active health state.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum HealthStateName {
    /// Active health checks are off.
    Disabled,
    /// Not checked yet; receives traffic.
    Unknown,
    /// Passing.
    Up,
    /// Taken out by failed checks.
    Down,
}

impl From<Option<&HealthSnapshot>> for BackendHealthOut {
    fn from(h: Option<&HealthSnapshot>) -> Self {
        let Some(h) = h else {
            return Self {
                state: HealthStateName::Disabled,
                consecutive_ok: 0,
                consecutive_fail: 0,
                checks_ok: 0,
                checks_failed: 0,
                last_error: None,
                checked_at_unix_ms: None,
                share_percent: 100,
            };
        };
        let c = &h.counters;
        Self {
            state: match h.state {
                HealthState::Unknown => HealthStateName::Unknown,
                HealthState::Up => HealthStateName::Up,
                HealthState::Down => HealthStateName::Down,
            },
            consecutive_ok: c.consecutive_ok,
            consecutive_fail: c.consecutive_fail,
            checks_ok: c.checks_ok,
            checks_failed: c.checks_failed,
            last_error: h.last_error.clone(),
            checked_at_unix_ms: h.checked_at_ms,
            share_percent: h.share / 10,
        }
    }
}

impl From<&BackendView> for BackendOut {
    fn from(b: &BackendView) -> Self {
        Self {
            id: b.id,
            url: b.url.clone(),
            weight: b.weight,
            healthy: !b.stats.ejected,
            in_flight: b.stats.in_flight,
            avg_response_ms: b.stats.avg_response_us().map(|us| us as f64 / 1000.0),
            requests_total: b.stats.requests_total,
            health: b.health.as_ref().into(),
        }
    }
}

/// A backend just created, with the epoch that contains it.
#[derive(Debug, Serialize, ToSchema)]
pub struct BackendCreated {
    /// Server-assigned identifier.
    pub id: u64,
    /// Normalised `scheme://host:port`: `http`, `https`, `h2c` or `h2`.
    #[schema(pattern = "^(https?|h2c?)://[^/?#@]+$")]
    pub url: String,
    /// Relative weight.
    #[schema(minimum = 1, maximum = 10000)]
    pub weight: u32,
    /// Always `true` for a new backend.
    pub healthy: bool,
    /// Always 0 for a new backend.
    pub in_flight: u32,
    /// `null` for a new backend.
    pub avg_response_ms: Option<f64>,
    /// Always 0 for a new backend.
    pub requests_total: u64,
    /// Active health: `unknown` for a new backend (`disabled` when checks are off).
    pub health: BackendHealthOut,
    /// The epoch every worker runs now.
    pub epoch: u64,
}

/// `POST /api/v1/backends` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewBackend {
    /// `http://host[:port]` (HTTP/1.1), `h2c://host[:port]` (HTTP/2 cleartext, gRPC), or
    /// `https://` and `h2://` for the same over TLS; the port defaults to 80 (443 over TLS) and
    /// the host is resolved once, when the backend is added.
    #[schema(example = "http://127.0.0.1:9001", pattern = "^(https?|h2c?)://[^/?#@]+/?$")]
    pub url: String,
    /// Relative weight, 1..=10000 (default 1).
    #[schema(example = 1, minimum = 1, maximum = 10000)]
    pub weight: Option<u32>,
}

/// A balancing algorithm.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AlgorithmName {
    /// Each backend in turn.
    RoundRobin,
    /// Uniformly at random.
    Random,
    /// Fewest requests in flight across all workers.
    LeastConnections,
    /// Lowest average response time over the window; unsampled backends are probed first.
    ResponseTime,
}

impl From<Algorithm> for AlgorithmName {
    fn from(a: Algorithm) -> Self {
        match a {
            Algorithm::RoundRobin => Self::RoundRobin,
            Algorithm::Random => Self::Random,
            Algorithm::LeastConnections => Self::LeastConnections,
            Algorithm::ResponseTime => Self::ResponseTime,
        }
    }
}

/// The current algorithm.
#[derive(Debug, Serialize, ToSchema)]
pub struct AlgorithmOut {
    /// Algorithm name.
    pub algorithm: AlgorithmName,
}

/// `PUT /api/v1/algorithm` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetAlgorithm {
    /// One of `round_robin`, `random`, `least_connections`, `response_time`.
    #[schema(value_type = AlgorithmName)]
    pub algorithm: String,
}

/// The algorithm now in force, with the epoch that carries it.
#[derive(Debug, Serialize, ToSchema)]
pub struct AlgorithmApplied {
    /// Algorithm name.
    pub algorithm: AlgorithmName,
    /// The epoch every worker runs now.
    pub epoch: u64,
}

/// A pool with its backends and their counters.
#[derive(Debug, Serialize, ToSchema)]
pub struct PoolOut {
    /// The pool's name (`default`: the top-level backends).
    #[schema(example = "api")]
    pub name: String,
    /// Its balancing algorithm.
    pub algorithm: AlgorithmName,
    /// Its backends in operator order, with merged counters.
    pub backends: Vec<BackendOut>,
}

impl From<&PoolView> for PoolOut {
    fn from(p: &PoolView) -> Self {
        Self {
            name: p.name.clone(),
            algorithm: p.algorithm.into(),
            backends: p.backends.iter().map(BackendOut::from).collect(),
        }
    }
}

/// `POST /api/v1/pools` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewPool {
    /// `[A-Za-z0-9_.-]`, 1..=64 characters, starting with a letter or digit.
    #[schema(example = "api")]
    pub name: String,
    /// Its algorithm (default `round_robin`).
    #[schema(value_type = Option<AlgorithmName>)]
    pub algorithm: Option<String>,
    /// Its backends (default none).
    pub backends: Option<Vec<NewBackend>>,
}

/// A pool just created, with the epoch that contains it.
#[derive(Debug, Serialize, ToSchema)]
pub struct PoolCreated {
    /// The pool's name.
    pub name: String,
    /// Its balancing algorithm.
    pub algorithm: AlgorithmName,
    /// Its backends, with their ids.
    pub backends: Vec<BackendOut>,
    /// The epoch every worker runs now.
    pub epoch: u64,
}

/// The routes, with the epoch that carries them.
#[derive(Debug, Serialize, ToSchema)]
pub struct RoutesOut {
    /// The epoch every worker runs.
    pub epoch: u64,
    /// The routes in order (the first match wins; the rest go to `default`).
    pub routes: Vec<RouteBody>,
}

/// `PUT /api/v1/routes` body: the whole ordered list, replaced in one epoch.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetRoutes {
    /// The routes in order (decoded one by one, so an error names the route).
    #[schema(value_type = Vec<RouteBody>)]
    pub routes: Vec<serde_json::Value>,
}

/// Response cache settings and counters summed over every worker's shard (each worker
/// publishes its counters as they change, and at once after a settings change).
#[derive(Debug, Serialize, ToSchema)]
pub struct CacheOut {
    /// The settings in force.
    #[serde(flatten)]
    pub settings: CacheSettings,
    /// Responses held now (one key may be held once per worker).
    pub entries: u64,
    /// Bytes charged now: keys, heads, bodies and per-entry bookkeeping.
    pub bytes: u64,
    /// Requests answered from the cache since start.
    pub hits: u64,
    /// Cacheable lookups that found nothing fresh since start.
    pub misses: u64,
}

/// `PUT /api/v1/cache` body: fields left out keep their value. Turning the cache off frees
/// its memory at once; turning it on starts it empty.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CacheUpdate {
    /// Turn the cache on or off.
    pub enabled: Option<bool>,
    /// Longest freshness lifetime in milliseconds (> 0).
    #[schema(minimum = 1, example = 60000)]
    pub ttl_ms: Option<u64>,
    /// Memory budget over all workers, in bytes; shrinking it evicts at once.
    #[schema(example = 268435456)]
    pub max_bytes: Option<u64>,
    /// Largest body stored, in bytes.
    #[schema(example = 1048576)]
    pub max_object_bytes: Option<u64>,
    /// Request methods looked up and stored (HTTP method tokens, case-sensitive).
    #[schema(value_type = Option<Vec<Token>>, example = json!(["GET", "HEAD", "POST"]))]
    pub methods: Option<Vec<String>>,
    /// Response statuses stored (100..=599).
    #[schema(value_type = Option<Vec<CacheStatus>>, example = json!([200, 404]))]
    pub statuses: Option<Vec<u16>>,
    /// Request headers left out of the key.
    #[schema(value_type = Option<Vec<Token>>, example = json!(["x-request-id"]))]
    pub ignore_headers: Option<Vec<String>>,
}

/// Cache settings now in force, with the epoch that carries them.
#[derive(Debug, Serialize, ToSchema)]
pub struct CacheApplied {
    /// The settings every worker runs now.
    #[serde(flatten)]
    pub settings: CacheSettings,
    /// The epoch every worker runs now.
    pub epoch: u64,
}

/// The result of a purge.
#[derive(Debug, Serialize, ToSchema)]
pub struct CachePurged {
    /// The epoch every worker runs now; each cleared its shard before acknowledging it.
    pub epoch: u64,
}

/// Listen addresses.
#[derive(Debug, Serialize, ToSchema)]
pub struct ListenersOut {
    /// Data-plane address (port resolved).
    #[schema(example = "127.0.0.1:8080")]
    pub listen: String,
    /// This admin API's address (port resolved).
    #[schema(example = "127.0.0.1:9090")]
    pub admin_listen: String,
    /// The TLS listener's address (port resolved); `null` without one.
    #[schema(example = "127.0.0.1:8443")]
    pub tls_listen: Option<String>,
}

/// One certificate of the TLS listener (never its key).
#[derive(Debug, Serialize, ToSchema)]
pub struct CertificateOut {
    /// The certificate chain file.
    #[schema(example = "/etc/fulcrum/example.pem")]
    pub file: String,
    /// The DNS names (subject alternative names) SNI chooses it by.
    #[schema(example = json!(["example.com", "*.example.com"]))]
    pub dns_names: Vec<String>,
    /// End of validity of the leaf certificate (RFC 3339).
    #[schema(example = "2027-12-03T00:00:00Z")]
    pub not_after: String,
    /// SHA-256 fingerprint of the leaf certificate (lowercase hex).
    pub sha256: String,
    /// Whether it is the default (the first pair: no SNI, or an unknown name).
    pub default: bool,
}

/// The TLS listener and its certificates in service.
#[derive(Debug, Serialize, ToSchema)]
pub struct TlsOut {
    /// The TLS listener's address; `null` when none is configured.
    pub listen: Option<String>,
    /// The TLS library's crypto provider.
    #[schema(example = "aws-lc-rs")]
    pub provider: String,
    /// The certificates in service, the default first.
    pub certificates: Vec<CertificateOut>,
}

/// The io driver: what was asked for and what each worker runs.
#[derive(Debug, Serialize, ToSchema)]
pub struct IoDriverOut {
    /// `auto`, `io_uring` or `epoll`, as configured.
    #[schema(example = "auto")]
    pub configured: String,
    /// The driver each worker runs, by worker index: `io_uring` or `epoll`.
    pub workers: Vec<String>,
}

/// Limits and tuning that are fixed at start.
#[derive(Debug, Serialize, ToSchema)]
pub struct LimitsOut {
    /// Per-connection read buffer; also the largest head.
    pub buffer_bytes: usize,
    /// Most header fields in one head.
    pub max_headers: usize,
    /// Largest proxied request body (0 = unlimited).
    pub max_body_bytes: u64,
    /// Client connections one worker serves at once before it pauses accepting (0 = unlimited).
    pub max_connections_per_worker: usize,
    /// Requests served on one client connection before it closes (0 = unlimited).
    pub max_requests_per_connection: u64,
    /// Idle upstream connections kept per backend and worker.
    pub pool_max_idle_per_backend: usize,
    /// Idle upstream connections older than this close, in milliseconds.
    pub pool_idle_timeout_ms: u64,
    /// Open HTTP/1.1 connections per backend and worker, idle and busy (0 = unlimited).
    pub pool_max_connections_per_backend: usize,
    /// Requests that may wait for a connection at that cap, per backend and worker.
    pub pool_queue_size: usize,
    /// Longest wait in that queue, in milliseconds.
    pub pool_queue_timeout_ms: u64,
    /// Window of the `response_time` average, in milliseconds.
    pub response_time_window_ms: u64,
    /// How often workers publish their per-backend counters, in milliseconds.
    pub stats_publish_ms: u64,
    /// Protocols whose HTTP/1.1 upgrades are passed through as tunnels (`upgrade.protocols`).
    pub upgrade_protocols: Vec<String>,
}

/// Admin API settings (keys are never shown).
#[derive(Debug, Serialize, ToSchema)]
pub struct AdminOut {
    /// Accepted JWT `alg` values, derived from the configured keys.
    pub jwt_algorithms: Vec<String>,
    /// Required `iss`, if any.
    pub jwt_issuer: Option<String>,
    /// Required `aud`, if any.
    pub jwt_audience: Option<String>,
    /// Clock leeway for `exp`/`nbf`, in seconds.
    pub jwt_leeway_secs: u64,
    /// Largest admin request body.
    pub max_body_bytes: usize,
}

/// The whole effective configuration and state.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConfigOut {
    /// The epoch every worker runs (local to this instance).
    pub epoch: u64,
    /// The shared revision (etcd mod_revision of the state document) that epoch was built
    /// from: equal on every instance that runs the same state. `null` with the file store, or
    /// before etcd was reached.
    pub revision: Option<i64>,
    /// Balancing algorithm of the `default` pool.
    pub algorithm: AlgorithmName,
    /// Backends of the `default` pool in operator order, with merged counters.
    pub backends: Vec<BackendOut>,
    /// Every pool (`default` first) with its backends.
    pub pools: Vec<PoolOut>,
    /// The routes in order.
    pub routes: Vec<RouteBody>,
    /// Response cache settings.
    pub cache: CacheSettings,
    /// Listen addresses.
    pub listeners: ListenersOut,
    /// Number of data-plane worker threads.
    pub workers: usize,
    /// io driver.
    pub io_driver: IoDriverOut,
    /// Phase timeouts.
    pub timeouts: TimeoutsOut,
    /// Passive health checking.
    pub health: PassiveHealthOut,
    /// Active health checks.
    pub health_check: ActiveHealthOut,
    /// Limits and tuning.
    pub limits: LimitsOut,
    /// When failed upstream attempts are tried again (`[retries]`).
    pub retries: RetriesOut,
    /// Admin API settings.
    pub admin: AdminOut,
    /// Where run-time changes are persisted (with the etcd store: the last-known-good copy);
    /// `null` when they are not.
    pub state_file: Option<String>,
    /// Where the run-time state lives (`[store]`).
    pub store: StoreSettingsOut,
}

/// Where the running state came from.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum StateSource {
    /// A revision of the shared document in etcd.
    Etcd,
    /// The last-known-good file: etcd was unreachable at start and has not answered since.
    LastKnownGood,
    /// The configuration file: nothing was saved yet (and, with etcd, etcd has not answered
    /// since start).
    Configuration,
    /// The state file (file store).
    StateFile,
}

impl From<Source> for StateSource {
    fn from(s: Source) -> Self {
        match s {
            Source::Etcd => Self::Etcd,
            Source::LastKnownGood => Self::LastKnownGood,
            Source::Configuration | Source::StartupConfiguration => Self::Configuration,
            Source::StateFile => Self::StateFile,
        }
    }
}

/// An error of the store, kept after recovery.
#[derive(Debug, Serialize, ToSchema)]
pub struct StoreErrorOut {
    /// What failed.
    #[schema(example = "cannot connect to etcd at http://10.0.0.5:2379: Connection refused")]
    pub message: String,
    /// When, in milliseconds since the Unix epoch.
    pub at_unix_ms: u64,
}

/// A shared document this instance refused to run (it keeps the epoch it runs).
#[derive(Debug, Serialize, ToSchema)]
pub struct RefusedOut {
    /// Its etcd revision.
    pub revision: i64,
    /// Why: not a state document, a failed check (naming the key), a URL that does not
    /// resolve, or deleted.
    #[schema(example = "not a state document: expected value at line 1 column 1")]
    pub reason: String,
    /// When, in milliseconds since the Unix epoch.
    pub at_unix_ms: u64,
}

/// The state store: where the run-time state lives and how that is going.
#[derive(Debug, Serialize, ToSchema)]
pub struct StoreOut {
    /// `file` (the local state file) or `etcd` (one document shared by the cluster).
    pub kind: StoreKindName,
    /// etcd client URLs (empty with the file store).
    pub endpoints: Vec<String>,
    /// The etcd key of the shared document (`<prefix>/state`); `null` with the file store.
    #[schema(example = "/fulcrum/state")]
    pub key: Option<String>,
    /// Whether the latest exchange with etcd succeeded (always `true` with the file store).
    pub connected: bool,
    /// The shared revision the running epoch was built from; `null` with the file store, or
    /// before etcd was reached.
    pub applied_revision: Option<i64>,
    /// Where the running state came from: with etcd unreachable since start,
    /// `last_known_good` or `configuration`.
    pub source: StateSource,
    /// The state file (with the etcd store: the last-known-good copy of each applied revision).
    pub state_file: Option<String>,
    /// The latest error (etcd, or writing the last-known-good file); `null` if none.
    pub last_error: Option<StoreErrorOut>,
    /// The latest shared revision this instance refused; `null` if none.
    pub last_refused: Option<RefusedOut>,
    /// Admin changes that lost a compare-and-swap to another instance since start (each was
    /// computed again on the newer document).
    pub conflicts: u64,
    /// Watch reconnections to etcd since start.
    pub reconnects: u64,
}

/// Milliseconds since the Unix epoch.
fn unix_ms(at: std::time::SystemTime) -> u64 {
    at.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

impl From<StoreView> for StoreOut {
    fn from(v: StoreView) -> Self {
        Self {
            kind: v.kind.into(),
            endpoints: v.endpoints,
            key: v.key,
            connected: v.connected,
            applied_revision: v.applied_revision,
            source: v.source.into(),
            state_file: v.state_file.map(|p| p.display().to_string()),
            last_error: v
                .last_error
                .map(|(message, at)| StoreErrorOut { message, at_unix_ms: unix_ms(at) }),
            last_refused: v.last_refused.map(|r| RefusedOut {
                revision: r.revision,
                reason: r.reason,
                at_unix_ms: unix_ms(r.at),
            }),
            conflicts: v.conflicts,
            reconnects: v.reconnects,
        }
    }
}

/// Liveness.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// Always `ok`.
    #[schema(example = "ok")]
    pub status: String,
}

/// Readiness.
#[derive(Debug, Serialize, ToSchema)]
pub struct Ready {
    /// Always `ready` (a 503 is sent otherwise).
    #[schema(example = "ready")]
    pub status: String,
    /// Backends not ejected by passive health checking.
    pub healthy_backends: usize,
    /// Worker threads running.
    pub workers: usize,
}

/// Errors every authenticated read can answer with: the token's, and `503` while the control
/// plane is stopping.
pub type ReadErrors = Both<LocalReadErrors, ControlStopping>;

/// Errors every mutation can answer with: the token's, and those of applying a change.
pub type WriteErrors = Both<LocalWriteErrors, ApplyErrors>;

/// Errors an authenticated read that never waits on the control plane can answer with (the
/// TLS inventory, the store's status): only the token's.
pub type LocalReadErrors = Both<InvalidToken, ReadForbidden>;

/// Errors a mutation that never waits on the control plane nor writes the state file can answer
/// with (the TLS reload): only the token's.
pub type LocalWriteErrors = Both<InvalidToken, WriteForbidden>;

/// The responses of `A` and those of `B` (no status is in both) as one set.
pub struct Both<A, B>(PhantomData<(A, B)>);

impl<A: IntoResponses, B: IntoResponses> IntoResponses for Both<A, B> {
    fn responses() -> BTreeMap<String, RefOr<openapi::Response>> {
        let mut responses = A::responses();
        responses.extend(B::responses());
        responses
    }
}

/// The `401` of every authenticated path.
#[derive(IntoResponses)]
pub enum InvalidToken {
    /// Missing, malformed, badly signed, expired or not-yet-valid token.
    #[response(
        status = 401,
        headers(("WWW-Authenticate" = String, description = "`Bearer error=\"invalid_token\"`"))
    )]
    Unauthorized(#[to_schema] ErrorBody),
}

/// The `403` of a read.
#[derive(IntoResponses)]
pub enum ReadForbidden {
    /// Valid token without the `fulcrum:read` (or `fulcrum:write`) scope.
    #[response(
        status = 403,
        headers(("WWW-Authenticate" = String,
            description = "`Bearer error=\"insufficient_scope\", scope=\"fulcrum:read\"`"))
    )]
    Forbidden(#[to_schema] ErrorBody),
}

/// The `403` of a mutation.
#[derive(IntoResponses)]
pub enum WriteForbidden {
    /// Valid token without the `fulcrum:write` scope.
    #[response(
        status = 403,
        headers(("WWW-Authenticate" = String,
            description = "`Bearer error=\"insufficient_scope\", scope=\"fulcrum:write\"`"))
    )]
    Forbidden(#[to_schema] ErrorBody),
}

/// The `503` of a read that waits on the control plane.
#[derive(IntoResponses)]
pub enum ControlStopping {
    /// The control plane is stopping.
    #[response(status = 503)]
    Unavailable(#[to_schema] ErrorBody),
}

/// Errors of applying a change, besides the token's.
#[derive(IntoResponses)]
pub enum ApplyErrors {
    /// The state file could not be written; nothing was applied.
    #[response(status = 500)]
    StateNotSaved(#[to_schema] ErrorBody),
    /// Workers did not acknowledge in time, or the control plane is stopping (`unavailable`);
    /// or, with the etcd store, etcd cannot be reached (`store_unavailable`): nothing changed.
    #[response(status = 503)]
    Unavailable(#[to_schema] ErrorBody),
}

/// The `409` of a mutation that has no other: with the etcd store, other instances kept
/// changing the shared state while this change was computed (`store_conflict`).
#[derive(IntoResponses)]
pub enum StoreConflict {
    /// Lost `store.conflict_retries + 1` compare-and-swaps in a row; nothing changed.
    #[response(status = 409)]
    Conflict(#[to_schema] ErrorBody),
}

/// Errors a mutation that reads a JSON body can answer with, on top of [`WriteErrors`]
/// (mutations without a body never read one, so never answer these).
#[derive(IntoResponses)]
pub enum BodyErrors {
    /// Malformed JSON, wrong types, unknown fields or invalid values.
    #[response(status = 400)]
    BadRequest(#[to_schema] ErrorBody),
    /// Request body larger than `admin.max_body_bytes` (64 KiB by default).
    #[response(status = 413)]
    PayloadTooLarge(#[to_schema] ErrorBody),
}

// ---------------------------------------------------------------------------------------------
// Routing

/// A matched path.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Route {
    Healthz,
    Readyz,
    Metrics,
    OpenApi,
    Docs,
    DocsFile(String),
    Config,
    Backends,
    Backend(String),
    Algorithm,
    Cache,
    CacheEntries,
    Tls,
    TlsReload,
    Pools,
    Pool(String),
    PoolBackends(String),
    PoolBackend(String, String),
    PoolAlgorithm(String),
    Routes,
    Store,
}

impl Route {
    fn parse(path: &str) -> Option<Route> {
        Some(match path {
            "/healthz" => Route::Healthz,
            "/metrics" => Route::Metrics,
            "/readyz" => Route::Readyz,
            "/docs" => Route::Docs,
            "/api/v1/openapi.json" => Route::OpenApi,
            "/api/v1/config" => Route::Config,
            "/api/v1/backends" => Route::Backends,
            "/api/v1/algorithm" => Route::Algorithm,
            "/api/v1/cache" => Route::Cache,
            "/api/v1/cache/entries" => Route::CacheEntries,
            "/api/v1/tls" => Route::Tls,
            "/api/v1/tls/reload" => Route::TlsReload,
            "/api/v1/pools" => Route::Pools,
            "/api/v1/routes" => Route::Routes,
            "/api/v1/store" => Route::Store,
            _ => {
                if let Some(file) = path.strip_prefix("/docs/") {
                    if file.is_empty() || file.contains('/') {
                        return None;
                    }
                    Route::DocsFile(file.to_owned())
                } else if let Some(id) = path.strip_prefix("/api/v1/backends/") {
                    if id.is_empty() || id.contains('/') {
                        return None;
                    }
                    Route::Backend(id.to_owned())
                } else if let Some(rest) = path.strip_prefix("/api/v1/pools/") {
                    Route::parse_pool(rest)?
                } else {
                    return None;
                }
            }
        })
    }

    /// `{name}`, `{name}/backends`, `{name}/backends/{id}` or `{name}/algorithm`.
    fn parse_pool(rest: &str) -> Option<Route> {
        let segment = |s: &str| (!s.is_empty()).then(|| s.to_owned());
        let mut parts = rest.split('/');
        let name = segment(parts.next()?)?;
        let route = match (parts.next(), parts.next(), parts.next()) {
            (None, _, _) => Route::Pool(name),
            (Some("backends"), None, _) => Route::PoolBackends(name),
            (Some("backends"), Some(id), None) => Route::PoolBackend(name, segment(id)?),
            (Some("algorithm"), None, _) => Route::PoolAlgorithm(name),
            _ => return None,
        };
        Some(route)
    }

    /// The `Allow` header value.
    fn allow(&self) -> &'static str {
        match self {
            Route::Backends | Route::Pools | Route::PoolBackends(_) => "GET, POST",
            Route::Backend(_) | Route::Pool(_) | Route::PoolBackend(..) => "GET, DELETE",
            Route::Algorithm | Route::Cache | Route::PoolAlgorithm(_) | Route::Routes => "GET, PUT",
            Route::CacheEntries => "DELETE",
            Route::TlsReload => "POST",
            _ => "GET",
        }
    }

    /// The pool a pool-scoped route names.
    fn pool(&self) -> Option<&str> {
        match self {
            Route::Pool(name)
            | Route::PoolBackends(name)
            | Route::PoolBackend(name, _)
            | Route::PoolAlgorithm(name) => Some(name),
            _ => None,
        }
    }

    fn allows(&self, method: &Method) -> bool {
        self.allow().split(", ").any(|m| m == method.as_str())
    }

    fn protected(&self) -> bool {
        matches!(
            self,
            Route::Config
                | Route::Backends
                | Route::Backend(_)
                | Route::Algorithm
                | Route::Cache
                | Route::CacheEntries
                | Route::Tls
                | Route::TlsReload
                | Route::Pools
                | Route::Pool(_)
                | Route::PoolBackends(_)
                | Route::PoolBackend(..)
                | Route::PoolAlgorithm(_)
                | Route::Routes
                | Route::Store
        )
    }
}

/// Serves one request; every failure goes through [`ApiError::into_response`].
pub(crate) async fn serve(app: Arc<App>, mut req: Request<Incoming>) -> Resp {
    let mut resp = match dispatch(&app, &mut req).await {
        Ok(resp) => resp,
        Err(e) => e.into_response(),
    };
    // A body no handler read (a `GET` with a body, a request refused before its body was
    // read) is read and dropped, up to the body cap, so that the connection stays usable: a
    // connection closed with unread input is reset by the kernel, which can cut off the answer
    // before the client has read it.
    if !req.body().is_end_stream() {
        let _ = Limited::new(req.body_mut(), app.max_body_bytes).collect().await;
    }
    resp.headers_mut().entry(CACHE_CONTROL).or_insert(HeaderValue::from_static("no-store"));
    resp
}

async fn dispatch(app: &Arc<App>, req: &mut Request<Incoming>) -> Result<Resp, ApiError> {
    let path = req.uri().path().to_owned();
    let route = Route::parse(&path).ok_or_else(|| ApiError::NotFound(path.clone()))?;
    let method = req.method().clone();
    if !route.allows(&method) {
        return Err(ApiError::MethodNotAllowed(route.allow()));
    }
    if route.protected() || (route == Route::Metrics && app.metrics_auth) {
        let needed = if method == Method::GET { Scope::Read } else { Scope::Write };
        let header = req.headers().get(AUTHORIZATION).map(HeaderValue::as_bytes);
        app.verifier.authorize(header, needed)?;
    }
    // The pool in the path comes first: naming no pool is `404 unknown_pool`, whatever the id
    // or the body (the read handlers look the pool up before anything else themselves).
    if let Some(name) = route.pool()
        && method != Method::GET
    {
        find_pool(&snapshot(app).await?, name)?;
    }
    match (route, method) {
        (Route::Healthz, _) => Ok(healthz()),
        (Route::Metrics, _) => Ok(metrics(app)),
        (Route::Readyz, _) => readyz(app).await,
        (Route::OpenApi, _) => Ok(openapi_json(app)),
        (Route::Docs, _) => docs_page(app),
        (Route::DocsFile(file), _) => docs_file(app, &file),
        (Route::Config, _) => get_config(app).await,
        (Route::Backends, Method::GET) => list_backends(app).await,
        (Route::Backends, _) => {
            let body: NewBackend = read_json(app, req).await?;
            create_backend(app, body).await
        }
        (Route::Backend(id), Method::GET) => get_backend(app, &id).await,
        (Route::Backend(id), _) => delete_backend(app, &id).await,
        (Route::Algorithm, Method::GET) => get_algorithm(app).await,
        (Route::Algorithm, _) => {
            let body: SetAlgorithm = read_json(app, req).await?;
            put_algorithm(app, body).await
        }
        (Route::Cache, Method::GET) => get_cache(app).await,
        (Route::Cache, _) => {
            let body: CacheUpdate = read_json(app, req).await?;
            put_cache(app, body).await
        }
        (Route::CacheEntries, _) => purge_cache(app).await,
        (Route::Tls, _) => get_tls(app),
        (Route::TlsReload, _) => reload_tls(app).await,
        (Route::Pools, Method::GET) => list_pools(app).await,
        (Route::Pools, _) => {
            let body: NewPool = read_json(app, req).await?;
            create_pool(app, body).await
        }
        (Route::Pool(name), Method::GET) => get_pool(app, &name).await,
        (Route::Pool(name), _) => delete_pool(app, &name).await,
        (Route::PoolBackends(name), Method::GET) => list_pool_backends(app, &name).await,
        (Route::PoolBackends(name), _) => {
            let body: NewBackend = read_json(app, req).await?;
            create_pool_backend(app, &name, body).await
        }
        (Route::PoolBackend(name, id), Method::GET) => get_pool_backend(app, &name, &id).await,
        (Route::PoolBackend(name, id), _) => delete_pool_backend(app, &name, &id).await,
        (Route::PoolAlgorithm(name), Method::GET) => get_pool_algorithm(app, &name).await,
        (Route::PoolAlgorithm(name), _) => {
            let body: SetAlgorithm = read_json(app, req).await?;
            put_pool_algorithm(app, &name, body).await
        }
        (Route::Store, _) => Ok(get_store(app)),
        (Route::Routes, Method::GET) => get_routes(app).await,
        (Route::Routes, _) => {
            let body: SetRoutes = read_json(app, req).await?;
            put_routes(app, body).await
        }
    }
}

/// Reads a capped body and decodes it; unknown fields, wrong types and bad JSON are 400.
async fn read_json<T: DeserializeOwned>(
    app: &App,
    req: &mut Request<Incoming>,
) -> Result<T, ApiError> {
    let cap = app.max_body_bytes;
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > cap as u64) {
        return Err(ApiError::PayloadTooLarge(cap));
    }
    let bytes = match Limited::new(req.body_mut(), cap).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
            return Err(ApiError::PayloadTooLarge(cap));
        }
        Err(e) => return Err(ApiError::InvalidBody(format!("reading the body failed: {e}"))),
    };
    serde_json::from_slice(&bytes).map_err(|e| ApiError::InvalidBody(e.to_string()))
}

fn json<T: Serialize>(status: StatusCode, value: &T) -> Resp {
    let bytes = serde_json::to_vec(value).unwrap_or_default();
    let mut resp = Response::new(Full::new(Bytes::from(bytes)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

fn with_epoch(mut resp: Resp, epoch: u64) -> Resp {
    resp.headers_mut().insert(EPOCH_HEADER, HeaderValue::from(epoch));
    resp
}

/// `201` with `value`, the epoch that created it and its `Location`.
fn created_at<T: Serialize>(value: &T, epoch: u64, location: &str) -> Resp {
    let mut resp = with_epoch(json(StatusCode::CREATED, value), epoch);
    if let Ok(loc) = HeaderValue::from_str(location) {
        resp.headers_mut().insert(LOCATION, loc);
    }
    resp
}

/// `204` for a deletion, with the epoch that no longer has the deleted thing.
fn deleted(epoch: u64) -> Resp {
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = StatusCode::NO_CONTENT;
    with_epoch(resp, epoch)
}

/// Runs a blocking control-plane call off the admin runtime's only thread.
async fn blocking<T: Send + 'static>(
    control: &ControlHandle,
    f: impl FnOnce(&ControlHandle) -> T + Send + 'static,
) -> Result<T, ApiError> {
    let control = control.clone();
    tokio::task::spawn_blocking(move || f(&control))
        .await
        .map_err(|e| ApiError::Internal(format!("control call failed: {e}")))
}

async fn snapshot(app: &App) -> Result<StateView, ApiError> {
    Ok(blocking(&app.control, ControlHandle::snapshot).await??)
}

async fn apply(app: &App, change: Change) -> Result<Applied, ApiError> {
    Ok(blocking(&app.control, move |c| c.apply(change)).await??)
}

// ---------------------------------------------------------------------------------------------
// Handlers

/// Liveness: the admin thread answers.
#[utoipa::path(
    get, path = "/healthz", tag = "health", operation_id = "healthz",
    responses((status = 200, description = "The process is alive.", body = Health))
)]
fn healthz() -> Resp {
    json(StatusCode::OK, &Health { status: "ok".into() })
}

/// Prometheus metrics, text exposition format 0.0.4: requests by backend and status class,
/// latency histograms, in-flight, health, connect errors, cache, epoch, connections, dropped
/// access records, io driver. No authentication unless `telemetry.metrics_auth` is set (then a
/// `fulcrum:read` token).
#[utoipa::path(
    get, path = "/metrics", tag = "metrics", operation_id = "metrics",
    responses(
        (status = 200, description = "Every metric, summed over the workers.",
            content_type = "text/plain; version=0.0.4; charset=utf-8", body = String),
        (status = 401, description = "`telemetry.metrics_auth` is set and the token is missing or invalid.",
            body = ErrorBody,
            headers(("WWW-Authenticate" = String, description = "`Bearer error=\"invalid_token\"`"))),
        (status = 403, description = "`telemetry.metrics_auth` is set and the token lacks the `fulcrum:read` scope.",
            body = ErrorBody,
            headers(("WWW-Authenticate" = String,
                description = "`Bearer error=\"insufficient_scope\", scope=\"fulcrum:read\"`"))),
    )
)]
fn metrics(app: &App) -> Resp {
    let mut resp = Response::new(Full::new(Bytes::from(app.registry.render())));
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
    resp
}

/// Readiness: workers up and at least one healthy backend.
#[utoipa::path(
    get, path = "/readyz", tag = "health", operation_id = "readyz",
    responses(
        (status = 200, description = "Ready to proxy.", body = Ready),
        (status = 503, description = "No healthy backend, or workers not running.", body = ErrorBody),
    )
)]
async fn readyz(app: &App) -> Result<Resp, ApiError> {
    if !app.workers_up.load(Ordering::Acquire) {
        return Err(ApiError::NotReady("workers are not running".into()));
    }
    let view = snapshot(app).await.map_err(|e| ApiError::NotReady(e.to_string()))?;
    let all = view.pools.iter().flat_map(|p| p.backends.iter());
    let healthy = all.filter(|b| !b.stats.ejected).count();
    if healthy == 0 {
        return Err(ApiError::NotReady("no healthy backend".into()));
    }
    Ok(json(
        StatusCode::OK,
        &Ready { status: "ready".into(), healthy_backends: healthy, workers: app.drivers.len() },
    ))
}

/// This document (OpenAPI 3.1).
#[utoipa::path(
    get, path = "/api/v1/openapi.json", tag = "docs", operation_id = "openapi",
    responses((status = 200, description = "The OpenAPI 3.1 document.", content_type = "application/json", body = Object))
)]
fn openapi_json(app: &App) -> Resp {
    let mut resp = Response::new(Full::new(app.openapi_json.clone()));
    resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

/// Interactive API reference (Swagger UI, every asset embedded).
#[utoipa::path(
    get, path = "/docs", tag = "docs", operation_id = "docs",
    responses((status = 200, description = "The Swagger UI page.", content_type = "text/html", body = String))
)]
fn docs_page(app: &App) -> Result<Resp, ApiError> {
    let index = crate::docs::file(app, "index.html")?
        .ok_or_else(|| ApiError::Internal("embedded index.html missing".into()))?;
    Ok(index)
}

/// A Swagger UI asset (script, stylesheet, image).
#[utoipa::path(
    get, path = "/docs/{file}", tag = "docs", operation_id = "docs_asset",
    params(("file" = String, Path, description = "Asset name, e.g. `swagger-ui.css`.")),
    responses(
        (status = 200, description = "The asset, with the media type of its file name.",
            content(
                (String = "text/html"),
                (String = "text/css"),
                (String = "text/javascript"),
                ("image/png"),
            )),
        (status = 404, description = "No such asset.", body = ErrorBody),
    )
)]
fn docs_file(app: &App, file: &str) -> Result<Resp, ApiError> {
    crate::docs::file(app, file)?.ok_or_else(|| ApiError::NotFound(format!("/docs/{file}")))
}

/// The whole effective configuration and state.
#[utoipa::path(
    get, path = "/api/v1/config", tag = "config", operation_id = "get_config",
    responses((status = 200, description = "Configuration and state.", body = ConfigOut), ReadErrors),
    security(("bearer_auth" = ["fulcrum:read"]))
)]
async fn get_config(app: &App) -> Result<Resp, ApiError> {
    let v = snapshot(app).await?;
    let c = &v.config;
    let t = &v.timeouts;
    let out = ConfigOut {
        epoch: v.epoch,
        revision: v.revision,
        algorithm: v.algorithm.into(),
        backends: v.backends.iter().map(BackendOut::from).collect(),
        pools: v.pools.iter().map(PoolOut::from).collect(),
        routes: v.routes.iter().map(RouteBody::from).collect(),
        cache: CacheSettings::from(&v.cache),
        listeners: ListenersOut {
            listen: app.listen.to_string(),
            admin_listen: app.admin_listen.to_string(),
            tls_listen: app.tls.as_ref().map(|(addr, _)| addr.to_string()),
        },
        workers: app.drivers.len(),
        io_driver: IoDriverOut {
            configured: c.io_driver.as_str().into(),
            workers: app.drivers.iter().map(ToString::to_string).collect(),
        },
        timeouts: t.into(),
        health: (&c.health).into(),
        health_check: (&c.health_check).into(),
        retries: (&c.retries).into(),
        limits: LimitsOut {
            buffer_bytes: c.limits.buffer_bytes,
            max_headers: c.limits.max_headers,
            max_body_bytes: c.limits.max_body_bytes,
            max_connections_per_worker: c.limits.max_connections_per_worker,
            max_requests_per_connection: c.limits.max_requests_per_connection,
            pool_max_idle_per_backend: c.pool.max_idle_per_backend,
            pool_idle_timeout_ms: c.pool.idle_timeout_ms,
            pool_max_connections_per_backend: c.pool.max_connections_per_backend,
            pool_queue_size: c.pool.queue_size,
            pool_queue_timeout_ms: c.pool.queue_timeout_ms,
            response_time_window_ms: c.balance.response_time_window_ms,
            stats_publish_ms: c.balance.stats_publish_ms,
            upgrade_protocols: c.upgrade.protocols.clone(),
        },
        admin: AdminOut {
            jwt_algorithms: app.verifier.algorithms().iter().map(|a| format!("{a:?}")).collect(),
            jwt_issuer: c.admin.jwt_issuer.clone(),
            jwt_audience: c.admin.jwt_audience.clone(),
            jwt_leeway_secs: c.admin.jwt_leeway_secs,
            max_body_bytes: c.admin.max_body_bytes,
        },
        state_file: v.state_file.as_ref().map(|p| p.display().to_string()),
        store: (&c.store).into(),
    };
    Ok(json(StatusCode::OK, &out))
}

/// The state store: kind, endpoints, whether etcd answers, the shared revision this instance
/// runs, where its state came from, the latest error and the latest refused revision.
#[utoipa::path(
    get, path = "/api/v1/store", tag = "store", operation_id = "get_store",
    responses((status = 200, description = "The store's status.", body = StoreOut), LocalReadErrors),
    security(("bearer_auth" = ["fulcrum:read"]))
)]
fn get_store(app: &App) -> Resp {
    json(StatusCode::OK, &StoreOut::from(app.control.store_status().view()))
}

/// Every backend, in operator order.
#[utoipa::path(
    get, path = "/api/v1/backends", tag = "backends", operation_id = "list_backends",
    responses((status = 200, description = "The backends.", body = Vec<BackendOut>), ReadErrors),
    security(("bearer_auth" = ["fulcrum:read"]))
)]
async fn list_backends(app: &App) -> Result<Resp, ApiError> {
    list_pool_backends(app, DEFAULT_POOL).await
}

/// Adds a backend; it receives traffic from the very next request.
#[utoipa::path(
    post, path = "/api/v1/backends", tag = "backends", operation_id = "create_backend",
    request_body(content = NewBackend, content_type = "application/json"),
    responses(
        (status = 201, description = "Created; every worker runs the returned epoch.", body = BackendCreated,
            headers(
                ("Location" = String, description = "`/api/v1/backends/{id}`"),
                ("Fulcrum-Epoch" = u64, description = "The epoch every worker runs now."),
            )),
        (status = 409, description = "That URL is already a backend; or, with the etcd store, other instances kept changing the shared state (`store_conflict`).", body = ErrorBody),
        WriteErrors,
        BodyErrors,
    ),
    security(("bearer_auth" = ["fulcrum:write"]))
)]
async fn create_backend(app: &App, body: NewBackend) -> Result<Resp, ApiError> {
    add_backend(app, DEFAULT_POOL, body, "/api/v1/backends").await
}

/// Adds the backend of `body` to `pool`: `201` with it, `Location` under `collection`.
async fn add_backend(
    app: &App,
    pool: &str,
    body: NewBackend,
    collection: &str,
) -> Result<Resp, ApiError> {
    let weight = body.weight.unwrap_or(DEFAULT_WEIGHT);
    let change = Change::AddPoolBackend { pool: pool.to_owned(), url: body.url, weight };
    let applied = apply(app, change).await?;
    let b = applied
        .backend
        .as_ref()
        .ok_or_else(|| ApiError::Internal("the control plane returned no backend".into()))?;
    let out = BackendOut::from(b);
    let created = BackendCreated {
        id: out.id,
        url: out.url,
        weight: out.weight,
        healthy: out.healthy,
        in_flight: out.in_flight,
        avg_response_ms: out.avg_response_ms,
        requests_total: out.requests_total,
        health: out.health,
        epoch: applied.epoch,
    };
    Ok(created_at(&created, applied.epoch, &format!("{collection}/{}", b.id)))
}

fn parse_id(id: &str) -> Result<u64, ApiError> {
    id.parse().map_err(|_| ApiError::UnknownBackend(format!("no backend with id `{id}`")))
}

/// One backend.
#[utoipa::path(
    get, path = "/api/v1/backends/{id}", tag = "backends", operation_id = "get_backend",
    params(("id" = u64, Path, description = "Backend id.")),
    responses(
        (status = 200, description = "The backend.", body = BackendOut),
        (status = 404, description = "No backend with that id.", body = ErrorBody),
        ReadErrors,
    ),
    security(("bearer_auth" = ["fulcrum:read"]))
)]
async fn get_backend(app: &App, id: &str) -> Result<Resp, ApiError> {
    // `default` always exists: a malformed id is refused before the control plane is asked.
    parse_id(id)?;
    get_pool_backend(app, DEFAULT_POOL, id).await
}

/// Removes a backend: no new requests; in-flight ones finish; idle connections close.
#[utoipa::path(
    delete, path = "/api/v1/backends/{id}", tag = "backends", operation_id = "delete_backend",
    params(("id" = u64, Path, description = "Backend id.")),
    responses(
        (status = 204, description = "Removed; every worker runs the epoch in `Fulcrum-Epoch`.",
            headers(("Fulcrum-Epoch" = u64, description = "The epoch every worker runs now."))),
        (status = 404, description = "No backend with that id.", body = ErrorBody),
        WriteErrors,
        StoreConflict,
    ),
    security(("bearer_auth" = ["fulcrum:write"]))
)]
async fn delete_backend(app: &App, id: &str) -> Result<Resp, ApiError> {
    delete_pool_backend(app, DEFAULT_POOL, id).await
}

/// The balancing algorithm.
#[utoipa::path(
    get, path = "/api/v1/algorithm", tag = "algorithm", operation_id = "get_algorithm",
    responses((status = 200, description = "The current algorithm.", body = AlgorithmOut), ReadErrors),
    security(("bearer_auth" = ["fulcrum:read"]))
)]
async fn get_algorithm(app: &App) -> Result<Resp, ApiError> {
    get_pool_algorithm(app, DEFAULT_POOL).await
}

/// Switches the algorithm live; per-backend counters are kept.
#[utoipa::path(
    put, path = "/api/v1/algorithm", tag = "algorithm", operation_id = "put_algorithm",
    request_body(content = SetAlgorithm, content_type = "application/json"),
    responses(
        (status = 200, description = "Switched; every worker runs the returned epoch.", body = AlgorithmApplied,
            headers(("Fulcrum-Epoch" = u64, description = "The epoch every worker runs now."))),
        WriteErrors,
        StoreConflict,
        BodyErrors,
    ),
    security(("bearer_auth" = ["fulcrum:write"]))
)]
async fn put_algorithm(app: &App, body: SetAlgorithm) -> Result<Resp, ApiError> {
    put_pool_algorithm(app, DEFAULT_POOL, body).await
}

/// Response cache settings, with entries, bytes, hits and misses summed over the workers.
#[utoipa::path(
    get, path = "/api/v1/cache", tag = "cache", operation_id = "get_cache",
    responses((status = 200, description = "The cache settings and counters.", body = CacheOut), ReadErrors),
    security(("bearer_auth" = ["fulcrum:read"]))
)]
async fn get_cache(app: &App) -> Result<Resp, ApiError> {
    let p = snapshot(app).await?.cache;
    let totals = app.cache_metrics.totals();
    let out = CacheOut {
        settings: CacheSettings::from(&p),
        entries: totals.entries,
        bytes: totals.bytes,
        hits: totals.hits,
        misses: totals.misses,
    };
    Ok(json(StatusCode::OK, &out))
}

/// Changes cache settings live (fields left out keep their value). `enabled: false` stops
/// serving and storing at once and frees the memory; `enabled: true` starts empty.
#[utoipa::path(
    put, path = "/api/v1/cache", tag = "cache", operation_id = "put_cache",
    request_body(content = CacheUpdate, content_type = "application/json"),
    responses(
        (status = 200, description = "Applied; every worker runs the returned epoch.", body = CacheApplied,
            headers(("Fulcrum-Epoch" = u64, description = "The epoch every worker runs now."))),
        WriteErrors,
        StoreConflict,
        BodyErrors,
    ),
    security(("bearer_auth" = ["fulcrum:write"]))
)]
async fn put_cache(app: &App, body: CacheUpdate) -> Result<Resp, ApiError> {
    let current = snapshot(app).await?.cache;
    let next = CachePolicy {
        enabled: body.enabled.unwrap_or(current.enabled),
        ttl_ms: body.ttl_ms.unwrap_or(current.ttl_ms),
        max_bytes: body.max_bytes.unwrap_or(current.max_bytes),
        max_object_bytes: body.max_object_bytes.unwrap_or(current.max_object_bytes),
        methods: body.methods.unwrap_or(current.methods),
        statuses: body.statuses.unwrap_or(current.statuses),
        ignore_headers: body.ignore_headers.unwrap_or(current.ignore_headers),
    };
    let settings = CacheSettings::from(&next);
    let applied = apply(app, Change::SetCache(next)).await?;
    let out = CacheApplied { settings, epoch: applied.epoch };
    Ok(with_epoch(json(StatusCode::OK, &out), applied.epoch))
}

/// Purges the cache: every worker drops every stored response before this answers.
#[utoipa::path(
    delete, path = "/api/v1/cache/entries", tag = "cache", operation_id = "purge_cache",
    responses(
        (status = 200, description = "Purged; every worker runs the returned epoch and has cleared its shard.",
            body = CachePurged,
            headers(("Fulcrum-Epoch" = u64, description = "The epoch every worker runs now."))),
        WriteErrors,
        StoreConflict,
    ),
    security(("bearer_auth" = ["fulcrum:write"]))
)]
async fn purge_cache(app: &App) -> Result<Resp, ApiError> {
    let applied = apply(app, Change::PurgeCache).await?;
    Ok(with_epoch(json(StatusCode::OK, &CachePurged { epoch: applied.epoch }), applied.epoch))
}

/// Parses an algorithm name (400 `invalid_algorithm` otherwise).
fn parse_algorithm(name: &str) -> Result<Algorithm, ApiError> {
    name.parse().map_err(|e: UnknownAlgorithm| ApiError::InvalidAlgorithm(e.to_string()))
}

/// The pool named `name` in a snapshot (404 `unknown_pool` otherwise).
fn find_pool<'v>(view: &'v StateView, name: &str) -> Result<&'v PoolView, ApiError> {
    view.pools
        .iter()
        .find(|p| p.name == name)
        .ok_or_else(|| ApiError::UnknownPool(format!("no pool named `{name}`")))
}

/// Every pool, `default` first, with its backends.
#[utoipa::path(
    get, path = "/api/v1/pools", tag = "pools", operation_id = "list_pools",
    responses((status = 200, description = "The pools.", body = Vec<PoolOut>), ReadErrors),
    security(("bearer_auth" = ["fulcrum:read"]))
)]
async fn list_pools(app: &App) -> Result<Resp, ApiError> {
    let v = snapshot(app).await?;
    let list: Vec<PoolOut> = v.pools.iter().map(PoolOut::from).collect();
    Ok(json(StatusCode::OK, &list))
}

/// Creates a pool; routes may send requests to it from the next epoch on.
#[utoipa::path(
    post, path = "/api/v1/pools", tag = "pools", operation_id = "create_pool",
    request_body(content = NewPool, content_type = "application/json"),
    responses(
        (status = 201, description = "Created; every worker runs the returned epoch.", body = PoolCreated,
            headers(
                ("Location" = String, description = "`/api/v1/pools/{name}`"),
                ("Fulcrum-Epoch" = u64, description = "The epoch every worker runs now."),
            )),
        (status = 409, description = "A pool of that name exists; or, with the etcd store, other instances kept changing the shared state (`store_conflict`).", body = ErrorBody),
        WriteErrors,
        BodyErrors,
    ),
    security(("bearer_auth" = ["fulcrum:write"]))
)]
async fn create_pool(app: &App, body: NewPool) -> Result<Resp, ApiError> {
    let algorithm = match &body.algorithm {
        Some(name) => parse_algorithm(name)?,
        None => Algorithm::RoundRobin,
    };
    let backends = body
        .backends
        .unwrap_or_default()
        .into_iter()
        .map(|b| BackendConfig { url: b.url, weight: b.weight.unwrap_or(DEFAULT_WEIGHT) })
        .collect();
    let change = Change::CreatePool { name: body.name, algorithm, backends };
    let applied = apply(app, change).await?;
    let pool = applied
        .pool
        .as_ref()
        .ok_or_else(|| ApiError::Internal("the control plane returned no pool".into()))?;
    let out = PoolOut::from(pool);
    let created = PoolCreated {
        name: out.name,
        algorithm: out.algorithm,
        backends: out.backends,
        epoch: applied.epoch,
    };
    Ok(created_at(&created, applied.epoch, &format!("/api/v1/pools/{}", pool.name)))
}

/// One pool with its backends.
#[utoipa::path(
    get, path = "/api/v1/pools/{name}", tag = "pools", operation_id = "get_pool",
    params(("name" = String, Path, description = "Pool name.")),
    responses(
        (status = 200, description = "The pool.", body = PoolOut),
        (status = 404, description = "No pool of that name.", body = ErrorBody),
        ReadErrors,
    ),
    security(("bearer_auth" = ["fulcrum:read"]))
)]
async fn get_pool(app: &App, name: &str) -> Result<Resp, ApiError> {
    let v = snapshot(app).await?;
    Ok(json(StatusCode::OK, &PoolOut::from(find_pool(&v, name)?)))
}

/// Deletes a pool and its backends (in-flight requests finish). Refused for `default` and
/// while a route names the pool.
#[utoipa::path(
    delete, path = "/api/v1/pools/{name}", tag = "pools", operation_id = "delete_pool",
    params(("name" = String, Path, description = "Pool name.")),
    responses(
        (status = 204, description = "Deleted; every worker runs the epoch in `Fulcrum-Epoch`.",
            headers(("Fulcrum-Epoch" = u64, description = "The epoch every worker runs now."))),
        (status = 404, description = "No pool of that name.", body = ErrorBody),
        (status = 409, description = "`default`, or a route names the pool; or, with the etcd store, other instances kept changing the shared state (`store_conflict`).", body = ErrorBody),
        WriteErrors,
    ),
    security(("bearer_auth" = ["fulcrum:write"]))
)]
async fn delete_pool(app: &App, name: &str) -> Result<Resp, ApiError> {
    let applied = apply(app, Change::DeletePool(name.to_owned())).await?;
    Ok(deleted(applied.epoch))
}

/// A pool's backends, in operator order.
#[utoipa::path(
    get, path = "/api/v1/pools/{name}/backends", tag = "pools", operation_id = "list_pool_backends",
    params(("name" = String, Path, description = "Pool name.")),
    responses(
        (status = 200, description = "The pool's backends.", body = Vec<BackendOut>),
        (status = 404, description = "No pool of that name.", body = ErrorBody),
        ReadErrors,
    ),
    security(("bearer_auth" = ["fulcrum:read"]))
)]
async fn list_pool_backends(app: &App, name: &str) -> Result<Resp, ApiError> {
    let v = snapshot(app).await?;
    let list: Vec<BackendOut> =
        find_pool(&v, name)?.backends.iter().map(BackendOut::from).collect();
    Ok(json(StatusCode::OK, &list))
}

/// Adds a backend to a pool (as `POST /api/v1/backends` does to `default`).
#[utoipa::path(
    post, path = "/api/v1/pools/{name}/backends", tag = "pools", operation_id = "create_pool_backend",
    params(("name" = String, Path, description = "Pool name.")),
    request_body(content = NewBackend, content_type = "application/json"),
    responses(
        (status = 201, description = "Created; every worker runs the returned epoch.", body = BackendCreated,
            headers(
                ("Location" = String, description = "`/api/v1/pools/{name}/backends/{id}`"),
                ("Fulcrum-Epoch" = u64, description = "The epoch every worker runs now."),
            )),
        (status = 404, description = "No pool of that name (`unknown_pool`, whatever the body).", body = ErrorBody),
        (status = 409, description = "That URL is already a backend of the pool; or, with the etcd store, other instances kept changing the shared state (`store_conflict`).", body = ErrorBody),
        WriteErrors,
        BodyErrors,
    ),
    security(("bearer_auth" = ["fulcrum:write"]))
)]
async fn create_pool_backend(app: &App, name: &str, body: NewBackend) -> Result<Resp, ApiError> {
    add_backend(app, name, body, &format!("/api/v1/pools/{name}/backends")).await
}

/// One backend of a pool.
#[utoipa::path(
    get, path = "/api/v1/pools/{name}/backends/{id}", tag = "pools", operation_id = "get_pool_backend",
    params(
        ("name" = String, Path, description = "Pool name."),
        ("id" = u64, Path, description = "Backend id."),
    ),
    responses(
        (status = 200, description = "The backend.", body = BackendOut),
        (status = 404, description = "No pool of that name (`unknown_pool`, whatever the id), or no backend with that id in it (`unknown_backend`).", body = ErrorBody),
        ReadErrors,
    ),
    security(("bearer_auth" = ["fulcrum:read"]))
)]
async fn get_pool_backend(app: &App, name: &str, id: &str) -> Result<Resp, ApiError> {
    let v = snapshot(app).await?;
    let pool = find_pool(&v, name)?;
    let id = parse_id(id)?;
    let b = pool
        .backends
        .iter()
        .find(|b| b.id == id)
        .ok_or_else(|| ApiError::UnknownBackend(format!("no backend with id {id}")))?;
    Ok(json(StatusCode::OK, &BackendOut::from(b)))
}

/// Removes a backend from a pool (as `DELETE /api/v1/backends/{id}` does from `default`).
#[utoipa::path(
    delete, path = "/api/v1/pools/{name}/backends/{id}", tag = "pools", operation_id = "delete_pool_backend",
    params(
        ("name" = String, Path, description = "Pool name."),
        ("id" = u64, Path, description = "Backend id."),
    ),
    responses(
        (status = 204, description = "Removed; every worker runs the epoch in `Fulcrum-Epoch`.",
            headers(("Fulcrum-Epoch" = u64, description = "The epoch every worker runs now."))),
        (status = 404, description = "No pool of that name (`unknown_pool`, whatever the id), or no backend with that id in it (`unknown_backend`).", body = ErrorBody),
        WriteErrors,
        StoreConflict,
    ),
    security(("bearer_auth" = ["fulcrum:write"]))
)]
async fn delete_pool_backend(app: &App, name: &str, id: &str) -> Result<Resp, ApiError> {
    let id = parse_id(id)?;
    let applied = apply(app, Change::RemovePoolBackend { pool: name.to_owned(), id }).await?;
    Ok(deleted(applied.epoch))
}

/// A pool's balancing algorithm.
#[utoipa::path(
    get, path = "/api/v1/pools/{name}/algorithm", tag = "pools", operation_id = "get_pool_algorithm",
    params(("name" = String, Path, description = "Pool name.")),
    responses(
        (status = 200, description = "The pool's algorithm.", body = AlgorithmOut),
        (status = 404, description = "No pool of that name.", body = ErrorBody),
        ReadErrors,
    ),
    security(("bearer_auth" = ["fulcrum:read"]))
)]
async fn get_pool_algorithm(app: &App, name: &str) -> Result<Resp, ApiError> {
    let v = snapshot(app).await?;
    Ok(json(StatusCode::OK, &AlgorithmOut { algorithm: find_pool(&v, name)?.algorithm.into() }))
}

/// Switches a pool's algorithm live; per-backend counters are kept.
#[utoipa::path(
    put, path = "/api/v1/pools/{name}/algorithm", tag = "pools", operation_id = "put_pool_algorithm",
    params(("name" = String, Path, description = "Pool name.")),
    request_body(content = SetAlgorithm, content_type = "application/json"),
    responses(
        (status = 200, description = "Switched; every worker runs the returned epoch.", body = AlgorithmApplied,
            headers(("Fulcrum-Epoch" = u64, description = "The epoch every worker runs now."))),
        (status = 404, description = "No pool of that name (`unknown_pool`, whatever the body).", body = ErrorBody),
        WriteErrors,
        StoreConflict,
        BodyErrors,
    ),
    security(("bearer_auth" = ["fulcrum:write"]))
)]
async fn put_pool_algorithm(app: &App, name: &str, body: SetAlgorithm) -> Result<Resp, ApiError> {
    let algorithm = parse_algorithm(&body.algorithm)?;
    let applied = apply(app, Change::SetPoolAlgorithm { pool: name.to_owned(), algorithm }).await?;
    let out = AlgorithmApplied { algorithm: algorithm.into(), epoch: applied.epoch };
    Ok(with_epoch(json(StatusCode::OK, &out), applied.epoch))
}

/// The routes in order, with the epoch that carries them.
#[utoipa::path(
    get, path = "/api/v1/routes", tag = "routes", operation_id = "get_routes",
    responses((status = 200, description = "The routes.", body = RoutesOut), ReadErrors),
    security(("bearer_auth" = ["fulcrum:read"]))
)]
async fn get_routes(app: &App) -> Result<Resp, ApiError> {
    let v = snapshot(app).await?;
    let out = RoutesOut { epoch: v.epoch, routes: v.routes.iter().map(RouteBody::from).collect() };
    Ok(json(StatusCode::OK, &out))
}

/// Replaces the whole ordered route list in one epoch: a request sees the old routes or the
/// new ones, never a mix. A bad list changes nothing (400 naming the route).
#[utoipa::path(
    put, path = "/api/v1/routes", tag = "routes", operation_id = "put_routes",
    request_body(content = SetRoutes, content_type = "application/json"),
    responses(
        (status = 200, description = "Replaced; every worker runs the returned epoch.", body = RoutesOut,
            headers(("Fulcrum-Epoch" = u64, description = "The epoch every worker runs now."))),
        WriteErrors,
        StoreConflict,
        BodyErrors,
    ),
    security(("bearer_auth" = ["fulcrum:write"]))
)]
async fn put_routes(app: &App, body: SetRoutes) -> Result<Resp, ApiError> {
    let routes: Vec<RouteConfig> = body
        .routes
        .into_iter()
        .enumerate()
        .map(|(i, value)| {
            serde_json::from_value::<RouteBody>(value)
                .map(RouteConfig::from)
                .map_err(|e| ApiError::InvalidRoute(format!("invalid `routes[{i}]`: {e}")))
        })
        .collect::<Result<_, _>>()?;
    let out_routes = routes.iter().map(RouteBody::from).collect();
    let applied = apply(app, Change::SetRoutes(routes)).await?;
    let out = RoutesOut { epoch: applied.epoch, routes: out_routes };
    Ok(with_epoch(json(StatusCode::OK, &out), applied.epoch))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(Route::parse("/api/v1/backends/12"), Some(Route::Backend("12".into())));
        assert_eq!(Route::parse("/api/v1/backends/"), None);
        assert_eq!(Route::parse("/api/v1/backends/1/x"), None);
        assert_eq!(Route::parse("/docs/"), None);
        assert_eq!(Route::parse("/docs/a.css"), Some(Route::DocsFile("a.css".into())));
        assert_eq!(Route::parse("/api/v1/config/"), None);
        assert!(Route::Backends.allows(&Method::POST));
        assert!(!Route::Backends.allows(&Method::DELETE));
        assert!(!Route::OpenApi.protected());
        assert_eq!(Route::parse("/api/v1/cache/entries"), Some(Route::CacheEntries));
        assert!(Route::CacheEntries.allows(&Method::DELETE));
        assert!(!Route::CacheEntries.allows(&Method::GET));
        assert!(Route::CacheEntries.protected());
        assert_eq!(Route::parse("/api/v1/pools"), Some(Route::Pools));
        assert_eq!(Route::parse("/api/v1/pools/api"), Some(Route::Pool("api".into())));
        assert_eq!(
            Route::parse("/api/v1/pools/api/backends"),
            Some(Route::PoolBackends("api".into()))
        );
        assert_eq!(
            Route::parse("/api/v1/pools/api/backends/3"),
            Some(Route::PoolBackend("api".into(), "3".into()))
        );
        assert_eq!(
            Route::parse("/api/v1/pools/api/algorithm"),
            Some(Route::PoolAlgorithm("api".into()))
        );
        for bad in [
            "/api/v1/pools/",
            "/api/v1/pools//backends",
            "/api/v1/pools/api/",
            "/api/v1/pools/api/backends/",
            "/api/v1/pools/api/backends/3/x",
            "/api/v1/pools/api/algorithm/x",
            "/api/v1/pools/api/other",
            "/api/v1/routes/",
        ] {
            assert_eq!(Route::parse(bad), None, "{bad}");
        }
        assert!(Route::Routes.allows(&Method::PUT) && !Route::Routes.allows(&Method::POST));
        assert!(Route::Pool("a".into()).allows(&Method::DELETE));
        assert!(Route::Routes.protected() && Route::PoolAlgorithm("a".into()).protected());
        assert_eq!(Route::parse("/api/v1/store"), Some(Route::Store));
        assert_eq!(Route::parse("/api/v1/store/"), None);
        assert!(Route::Store.protected() && Route::Store.allows(&Method::GET));
        assert!(!Route::Store.allows(&Method::PUT));
    }
}

/// The certificates in service, as the admin API shows them.
fn tls_out(app: &App) -> TlsOut {
    let certificates = app.tls.as_ref().map_or_else(Vec::new, |(_, acceptor)| {
        acceptor
            .inventory()
            .into_iter()
            .map(|c| CertificateOut {
                file: c.cert_file.display().to_string(),
                dns_names: c.dns_names,
                not_after: c.not_after,
                sha256: c.sha256,
                default: c.default,
            })
            .collect()
    });
    TlsOut {
        listen: app.tls.as_ref().map(|(addr, _)| addr.to_string()),
        provider: fulcrum_tls::PROVIDER.to_owned(),
        certificates,
    }
}

/// The TLS listener's certificates in service: file, DNS names, not-after, SHA-256 fingerprint.
#[utoipa::path(
    get, path = "/api/v1/tls", tag = "tls", operation_id = "get_tls",
    responses((status = 200, description = "The TLS listener and its certificates (none, and a `null` listener, without one).", body = TlsOut), LocalReadErrors),
    security(("bearer_auth" = ["fulcrum:read"]))
)]
fn get_tls(app: &App) -> Result<Resp, ApiError> {
    Ok(json(StatusCode::OK, &tls_out(app)))
}

/// Re-reads every configured certificate and key file (as `SIGHUP` does): all of them, or
/// nothing changes. New connections get the new certificates; open ones are undisturbed.
#[utoipa::path(
    post, path = "/api/v1/tls/reload", tag = "tls", operation_id = "reload_tls",
    responses(
        (status = 200, description = "Reloaded; the certificates now in service.", body = TlsOut),
        (status = 400, description = "A file is missing, unreadable, malformed, expired or its key does not match (`invalid_certificate`, naming the file); the certificates in service stay.", body = ErrorBody),
        (status = 409, description = "No TLS listener is configured (`tls_not_configured`).", body = ErrorBody),
        LocalWriteErrors,
    ),
    security(("bearer_auth" = ["fulcrum:write"]))
)]
async fn reload_tls(app: &App) -> Result<Resp, ApiError> {
    let Some((_, acceptor)) = &app.tls else { return Err(ApiError::TlsNotConfigured) };
    let acceptor = acceptor.clone();
    // Reading and checking files blocks: off the admin runtime's only thread.
    let reloaded = tokio::task::spawn_blocking(move || acceptor.reload_files())
        .await
        .map_err(|e| ApiError::Internal(format!("reload failed: {e}")))?;
    match reloaded {
        Ok(n) => {
            fulcrum_telemetry::info!("tls certificates reloaded (admin API)", certificates = n);
            Ok(json(StatusCode::OK, &tls_out(app)))
        }
        Err(e) => {
            fulcrum_telemetry::warn!("tls reload refused: certificates unchanged", error = e);
            Err(ApiError::InvalidCertificate(e.to_string()))
        }
    }
}
