//! Configuration: the TOML file, its defaults and its validation, as plain data.
//!
//! Parsed once on the main thread; the control thread owns the canonical copy afterwards and
//! hands immutable slices of it to the workers inside each epoch. This crate imports nothing
//! from the layers it configures: the types they need to read (the algorithm names, the cache
//! settings, the io driver choice) are defined here or below.

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

mod algorithm;
mod cache;
mod routing;
mod store;
mod telemetry;
mod tls;
mod upgrade;

pub use algorithm::{Algorithm, UnknownAlgorithm};
pub use cache::{CachePolicy, CachePolicyError};
pub use fulcrum_util::IoDriverChoice;
pub use routing::{
    BackendPoolConfig, DEFAULT_POOL, MAX_POOL_NAME, MAX_POOLS, MAX_ROUTE_HEADERS, MAX_ROUTES,
    RouteConfig, RouteError, check_pool_name, validate_routes,
};
pub use store::{DEFAULT_STATE_FILE, MAX_DOCUMENT_BYTES, StoreConfig, StoreKind};
pub use telemetry::{AccessLogFormat, TelemetryConfig};
pub use tls::{CertificateFiles, MAX_CERTIFICATES, TlsConfig, UpstreamTlsConfig};
pub use upgrade::{MAX_UPGRADE_PROTOCOLS, UpgradeConfig};

/// Errors found while loading or validating a configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: cannot read: {source}")]
    Read {
        /// The file named on the command line.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The file is not valid TOML or does not match the schema (unknown key, wrong type).
    #[error("{path}: {message}")]
    Parse {
        /// The file named on the command line.
        path: PathBuf,
        /// The parser's message, which names the key and the line.
        message: String,
    },
    /// A value is well-typed but not acceptable.
    #[error("invalid `{key}`: {reason}")]
    Invalid {
        /// Dotted path of the offending key.
        key: String,
        /// Why it was refused.
        reason: String,
    },
}

impl ConfigError {
    fn invalid(key: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Invalid { key: key.into(), reason: reason.into() }
    }
}

/// The whole configuration of one Fulcrum process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Data-plane listen address (every worker binds it with `SO_REUSEPORT`).
    pub listen: SocketAddr,
    /// Admin API listen address.
    pub admin_listen: SocketAddr,
    /// Number of worker threads; 0 means one per CPU the process may run on.
    pub workers: usize,
    /// Balancing algorithm of the `default` pool at start.
    pub algorithm: Algorithm,
    /// Which io driver the workers use.
    pub io_driver: IoDriverChoice,
    /// Backends of the `default` pool at start.
    pub backends: Vec<BackendConfig>,
    /// More pools of backends, each with its own algorithm (`[[pools]]`; see `docs/routing.md`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pools: Vec<BackendPoolConfig>,
    /// Which requests go to which pool, tried in order (`[[routes]]`); the rest go to
    /// `default`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<RouteConfig>,
    /// Phase timeouts.
    pub timeouts: Timeouts,
    /// Passive health checking (ejection after consecutive connect failures).
    pub health: PassiveHealth,
    /// Active health checks (`[health_check]`, off by default; run on the `lb-health` thread).
    pub health_check: ActiveHealth,
    /// Upstream connection pools.
    pub pool: PoolConfig,
    /// Retries of failed upstream attempts (`[retries]`).
    pub retries: RetryConfig,
    /// Buffer and size limits.
    pub limits: Limits,
    /// Balancer tuning.
    pub balance: BalanceConfig,
    /// Response cache settings (`[cache]`; see `docs/cache.md`).
    pub cache: CachePolicy,
    /// Admin API: JWT keys and request limits.
    pub admin: AdminConfig,
    /// Where run-time changes are persisted (JSON, replaced atomically). When the file exists at
    /// start it supersedes `backends`, `algorithm`, `pools`, `routes`, `cache` and `timeouts`.
    /// Unset: not persisted. With the etcd store it is the last-known-good copy of the shared
    /// state, [`DEFAULT_STATE_FILE`] in the working directory when unset (see
    /// [`Config::state_file_path`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state_file: Option<PathBuf>,
    /// Where the run-time state lives: the state file (default) or etcd (`[store]`).
    pub store: StoreConfig,
    /// Access log, metrics and tracing (`[telemetry]`).
    pub telemetry: TelemetryConfig,
    /// HTTP/2 and gRPC: limits on client connections, windows on upstream connections.
    pub http2: Http2Config,
    /// The TLS listener and its certificates (`[tls]`).
    pub tls: TlsConfig,
    /// TLS to `https://` and `h2://` backends (`[upstream_tls]`).
    pub upstream_tls: UpstreamTlsConfig,
    /// Which HTTP/1.1 protocol upgrades (WebSocket) are passed through as tunnels
    /// (`[upgrade]`; see `docs/websocket.md`).
    pub upgrade: UpgradeConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            admin_listen: SocketAddr::from(([127, 0, 0, 1], 9090)),
            workers: 0,
            algorithm: Algorithm::RoundRobin,
            io_driver: IoDriverChoice::Auto,
            backends: Vec::new(),
            pools: Vec::new(),
            routes: Vec::new(),
            timeouts: Timeouts::default(),
            health: PassiveHealth::default(),
            health_check: ActiveHealth::default(),
            pool: PoolConfig::default(),
            retries: RetryConfig::default(),
            limits: Limits::default(),
            balance: BalanceConfig::default(),
            cache: CachePolicy::default(),
            admin: AdminConfig::default(),
            state_file: None,
            store: StoreConfig::default(),
            telemetry: TelemetryConfig::default(),
            http2: Http2Config::default(),
            tls: TlsConfig::default(),
            upstream_tls: UpstreamTlsConfig::default(),
            upgrade: UpgradeConfig::default(),
        }
    }
}

/// HTTP/2 settings (`[http2]`): protections on client connections and flow-control windows.
///
/// The same windows are advertised to clients and to h2c backends. The data-frame budget bounds
/// the memory a peer can make h2 spend on small DATA frames; it is raised well above h2's
/// default so multiplexed upstream connections survive heavy small-message traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Http2Config {
    /// Which HTTP/2 implementation serves client connections and h2c/h2 backends.
    pub engine: Http2Engine,
    /// Most concurrent streams one client connection may open (SETTINGS_MAX_CONCURRENT_STREAMS).
    pub max_concurrent_streams: u32,
    /// Largest decoded header list accepted, in bytes (also bounds CONTINUATION frames and
    /// HPACK expansion).
    pub max_header_list_size: u32,
    /// HPACK dynamic table size advertised to peers.
    pub header_table_size: u32,
    /// Initial per-stream receive window, in bytes.
    pub initial_stream_window: u32,
    /// Initial connection receive window, in bytes.
    pub initial_connection_window: u32,
    /// Largest DATA frame payload we accept (SETTINGS_MAX_FRAME_SIZE).
    pub max_frame_size: u32,
    /// Per-connection budget for small-DATA-frame overhead, in bytes.
    pub data_frame_budget: usize,
    /// Most bytes buffered per stream for sending before back-pressure.
    pub max_send_buffer: usize,
    /// Streams a client may reset per second before its connection is closed with
    /// GOAWAY(ENHANCE_YOUR_CALM) (rapid-reset protection).
    pub max_resets_per_sec: u32,
    /// Remotely reset streams tolerated in h2's pending-accept queue.
    pub max_pending_accept_reset_streams: usize,
    /// Interval between keep-alive PINGs on idle upstream and client connections; 0 disables.
    pub keepalive_interval_ms: u64,
    /// How long a PING may go unanswered before the connection is closed.
    pub keepalive_timeout_ms: u64,
    /// A connection (client or upstream) with no open stream for this long is closed.
    pub idle_timeout_ms: u64,
    /// Most upstream h2 connections per backend and per worker.
    pub max_connections_per_backend: usize,
}

impl Default for Http2Config {
    fn default() -> Self {
        Self {
            engine: Http2Engine::Native,
            max_concurrent_streams: 256,
            max_header_list_size: 64 * 1024,
            header_table_size: 4096,
            initial_stream_window: 1 << 20,
            initial_connection_window: 8 << 20,
            max_frame_size: 16 * 1024,
            data_frame_budget: 4 << 20,
            max_send_buffer: 1 << 20,
            max_resets_per_sec: 200,
            max_pending_accept_reset_streams: 50,
            keepalive_interval_ms: 30_000,
            keepalive_timeout_ms: 10_000,
            idle_timeout_ms: 300_000,
            max_connections_per_backend: 16,
        }
    }
}

/// The HTTP/2 implementation (`[http2] engine`, `--http2-engine`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Http2Engine {
    /// hyperium `h2`, the reference implementation the native engine is tested against.
    H2,
    /// Fulcrum's own engine (`fulcrum-h2`), the default: in-place frames, HPACK without a
    /// dynamic table or Huffman coding on output, streams handled by the connection.
    #[default]
    Native,
}

impl Http2Engine {
    /// The configuration name.
    pub fn as_str(self) -> &'static str {
        match self {
            Http2Engine::H2 => "h2",
            Http2Engine::Native => "native",
        }
    }
}

impl std::fmt::Display for Http2Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Http2Engine {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "h2" => Ok(Http2Engine::H2),
            "native" => Ok(Http2Engine::Native),
            other => Err(format!("unknown HTTP/2 engine `{other}` (expected h2 or native)")),
        }
    }
}

impl Http2Config {
    fn validate(&self) -> Result<(), ConfigError> {
        let windows = [
            ("http2.initial_stream_window", self.initial_stream_window),
            ("http2.initial_connection_window", self.initial_connection_window),
        ];
        for (key, value) in windows {
            if !(65_535..=(1 << 31) - 1).contains(&value) {
                return Err(ConfigError::invalid(key, "must be 65535..=2147483647"));
            }
        }
        if !(16_384..=16_777_215).contains(&self.max_frame_size) {
            return Err(ConfigError::invalid("http2.max_frame_size", "must be 16384..=16777215"));
        }
        for (key, value) in [
            ("http2.max_concurrent_streams", u64::from(self.max_concurrent_streams)),
            ("http2.max_header_list_size", u64::from(self.max_header_list_size)),
            ("http2.data_frame_budget", self.data_frame_budget as u64),
            ("http2.max_send_buffer", self.max_send_buffer as u64),
            ("http2.max_resets_per_sec", u64::from(self.max_resets_per_sec)),
            ("http2.keepalive_timeout_ms", self.keepalive_timeout_ms),
            ("http2.idle_timeout_ms", self.idle_timeout_ms),
            ("http2.max_connections_per_backend", self.max_connections_per_backend as u64),
        ] {
            if value == 0 {
                return Err(ConfigError::invalid(key, "must be greater than 0"));
            }
        }
        Ok(())
    }
}

/// The admin API's settings. Without a key the admin listener stays off.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// HMAC secret for HS256/HS384/HS512 tokens; `FULCRUM_JWT_SECRET` overrides it. Never
    /// printed back (skipped by `check-config`).
    #[serde(skip_serializing)]
    pub jwt_secret: Option<String>,
    /// PEM public key (RSA, EC P-256 or Ed25519) for RS*/ES256/EdDSA tokens.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwt_public_key_file: Option<PathBuf>,
    /// Required `iss` claim, when set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwt_issuer: Option<String>,
    /// Required `aud` claim, when set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwt_audience: Option<String>,
    /// Clock leeway for `exp` and `nbf`, in seconds.
    pub jwt_leeway_secs: u64,
    /// Largest admin request body (413 beyond).
    pub max_body_bytes: usize,
    /// Certificate chain (PEM) of the admin listener: with `tls_key_file`, the admin API is
    /// served over HTTPS only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert_file: Option<PathBuf>,
    /// The admin certificate's private key (PEM).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key_file: Option<PathBuf>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            jwt_secret: None,
            jwt_public_key_file: None,
            jwt_issuer: None,
            jwt_audience: None,
            jwt_leeway_secs: 30,
            max_body_bytes: 64 * 1024,
            tls_cert_file: None,
            tls_key_file: None,
        }
    }
}

impl fmt::Debug for AdminConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminConfig")
            .field("jwt_secret", &self.jwt_secret.as_ref().map(|_| "<redacted>"))
            .field("jwt_public_key_file", &self.jwt_public_key_file)
            .field("jwt_issuer", &self.jwt_issuer)
            .field("jwt_audience", &self.jwt_audience)
            .field("jwt_leeway_secs", &self.jwt_leeway_secs)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("tls_cert_file", &self.tls_cert_file)
            .field("tls_key_file", &self.tls_key_file)
            .finish()
    }
}

/// Default weight of a backend.
pub const DEFAULT_WEIGHT: u32 = 1;
/// Largest accepted backend weight.
pub const MAX_WEIGHT: u32 = 10_000;

/// One backend as written in the configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendConfig {
    /// `http://host:port` (HTTP/1.1) or `h2c://host:port` (HTTP/2 cleartext, needed for gRPC).
    pub url: String,
    /// Relative share of requests, 1..=[`MAX_WEIGHT`] (see the algorithms in `balance`).
    #[serde(default = "default_weight")]
    pub weight: u32,
}

fn default_weight() -> u32 {
    DEFAULT_WEIGHT
}

impl BackendConfig {
    /// A backend at `url` with the default weight (as `--backend URL` adds it).
    pub fn new(url: String) -> Self {
        Self { url, weight: DEFAULT_WEIGHT }
    }
}

/// Timeouts for every phase of a proxied exchange, in milliseconds (also the admin API's view).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Timeouts {
    /// Time allowed for a whole request head once its first byte arrived.
    pub client_header_ms: u64,
    /// How long a keep-alive client connection may sit idle between requests.
    pub client_idle_ms: u64,
    /// Longest gap between two reads of a request body.
    pub client_body_ms: u64,
    /// Slowest average a request body may arrive at, in bytes per second, once its first
    /// `client_body_ms` have passed (each byte buys `1/rate` s more); 0 turns the check off.
    pub client_body_min_rate: u64,
    /// Longest a write to the client may stall.
    pub client_send_ms: u64,
    /// Upstream TCP connect.
    pub upstream_connect_ms: u64,
    /// From request sent to response head received, and the longest gap between two reads of
    /// a response body.
    pub upstream_response_ms: u64,
    /// Graceful shutdown: how long in-flight requests (and open tunnels) may take to finish.
    pub drain_ms: u64,
    /// How long an upgraded connection (a WebSocket tunnel) may pass no byte in either
    /// direction before it is closed (as HAProxy's `timeout tunnel`).
    pub tunnel_idle_ms: u64,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            client_header_ms: 10_000,
            client_idle_ms: 60_000,
            client_body_ms: 60_000,
            client_body_min_rate: 500,
            client_send_ms: 60_000,
            upstream_connect_ms: 3_000,
            upstream_response_ms: 60_000,
            drain_ms: 10_000,
            tunnel_idle_ms: 3_600_000,
        }
    }
}

impl Timeouts {
    /// `client_header_ms` as a duration.
    pub fn client_header(&self) -> Duration {
        Duration::from_millis(self.client_header_ms)
    }
    /// `client_idle_ms` as a duration.
    pub fn client_idle(&self) -> Duration {
        Duration::from_millis(self.client_idle_ms)
    }
    /// `client_body_ms` as a duration.
    pub fn client_body(&self) -> Duration {
        Duration::from_millis(self.client_body_ms)
    }
    /// `client_send_ms` as a duration.
    pub fn client_send(&self) -> Duration {
        Duration::from_millis(self.client_send_ms)
    }
    /// `upstream_connect_ms` as a duration.
    pub fn upstream_connect(&self) -> Duration {
        Duration::from_millis(self.upstream_connect_ms)
    }
    /// `upstream_response_ms` as a duration.
    pub fn upstream_response(&self) -> Duration {
        Duration::from_millis(self.upstream_response_ms)
    }
    /// `drain_ms` as a duration.
    pub fn drain(&self) -> Duration {
        Duration::from_millis(self.drain_ms)
    }
    /// `tunnel_idle_ms` as a duration.
    pub fn tunnel_idle(&self) -> Duration {
        Duration::from_millis(self.tunnel_idle_ms)
    }
}

/// Passive health: eject a backend after `max_fails` consecutive connect failures for `eject_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PassiveHealth {
    /// Consecutive connect failures that eject a backend (K).
    pub max_fails: u32,
    /// How long an ejected backend is skipped before it is tried again (T).
    pub eject_ms: u64,
}

impl Default for PassiveHealth {
    fn default() -> Self {
        Self { max_fails: 3, eject_ms: 10_000 }
    }
}

/// Active health checks (`[health_check]`): every `interval_ms` the `lb-health` thread probes each
/// backend on a new connection — `GET path` for `http://` backends (a 2xx or 3xx status passes),
/// the gRPC health-checking protocol (`grpc.health.v1.Health/Check`, `SERVING` passes) for
/// `h2c://` backends. `fall` consecutive failures take a backend out, `rise` consecutive
/// successes bring it back. Off by default, like HAProxy's `check`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ActiveHealth {
    /// Whether the checks run at all.
    pub enabled: bool,
    /// Path of the HTTP check (`http://` backends), sent as `GET path HTTP/1.1`.
    pub path: String,
    /// Service name sent in the gRPC check (`h2c://` backends); empty means the whole server.
    pub grpc_service: String,
    /// Time between the starts of two checks of one backend.
    pub interval_ms: u64,
    /// Time allowed for one whole check (connect, request, answer); at most `interval_ms`.
    pub timeout_ms: u64,
    /// Consecutive passed checks that bring a down backend back.
    pub rise: u32,
    /// Consecutive failed checks that take a backend out.
    pub fall: u32,
    /// After a backend comes back from `down`, its share of new requests ramps up linearly over
    /// this long (from 10%); 0 turns slow start off.
    pub slow_start_ms: u64,
}

impl Default for ActiveHealth {
    fn default() -> Self {
        Self {
            enabled: false,
            path: "/healthz".into(),
            grpc_service: String::new(),
            interval_ms: 2_000,
            timeout_ms: 1_000,
            rise: 2,
            fall: 3,
            slow_start_ms: 0,
        }
    }
}

/// Most consecutive checks `rise` or `fall` may ask for.
const MAX_HEALTH_THRESHOLD: u32 = 1_000;
/// Longest accepted `health_check.slow_start_ms`.
const MAX_SLOW_START_MS: u64 = 3_600_000;
/// Longest accepted `health_check.path` or `health_check.grpc_service`.
const MAX_HEALTH_TARGET_BYTES: usize = 1_024;

impl ActiveHealth {
    /// `interval_ms` as a duration.
    pub fn interval(&self) -> Duration {
        Duration::from_millis(self.interval_ms)
    }
    /// `timeout_ms` as a duration.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let key = |k: &str| format!("health_check.{k}");
        if self.interval_ms == 0 {
            return Err(ConfigError::invalid(key("interval_ms"), "must be greater than 0"));
        }
        if self.timeout_ms == 0 || self.timeout_ms > self.interval_ms {
            return Err(ConfigError::invalid(
                key("timeout_ms"),
                format!("must be 1..=interval_ms ({})", self.interval_ms),
            ));
        }
        for (name, value) in [("rise", self.rise), ("fall", self.fall)] {
            if !(1..=MAX_HEALTH_THRESHOLD).contains(&value) {
                return Err(ConfigError::invalid(
                    key(name),
                    format!("must be 1..={MAX_HEALTH_THRESHOLD}"),
                ));
            }
        }
        if self.slow_start_ms > MAX_SLOW_START_MS {
            return Err(ConfigError::invalid(
                key("slow_start_ms"),
                format!("must be at most {MAX_SLOW_START_MS} (one hour)"),
            ));
        }
        let visible = |s: &str| s.bytes().all(|b| b.is_ascii_graphic());
        if !self.path.starts_with('/')
            || !visible(&self.path)
            || self.path.len() > MAX_HEALTH_TARGET_BYTES
        {
            return Err(ConfigError::invalid(
                key("path"),
                format!(
                    "must start with `/`, hold only visible ASCII (no spaces) and be at most \
                     {MAX_HEALTH_TARGET_BYTES} bytes"
                ),
            ));
        }
        if !visible(&self.grpc_service) || self.grpc_service.len() > MAX_HEALTH_TARGET_BYTES {
            return Err(ConfigError::invalid(
                key("grpc_service"),
                format!(
                    "must hold only visible ASCII and be at most {MAX_HEALTH_TARGET_BYTES} bytes"
                ),
            ));
        }
        Ok(())
    }
}

/// Per-worker upstream connection pool settings (HTTP/1.1 backends).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PoolConfig {
    /// Idle keep-alive connections kept per backend and per worker.
    pub max_idle_per_backend: usize,
    /// Idle connections older than this are closed.
    pub idle_timeout_ms: u64,
    /// Most open connections (idle and busy) per backend and per worker; 0 means no limit.
    pub max_connections_per_backend: usize,
    /// Requests that may wait for a connection to a backend at its limit, per backend and per
    /// worker; one more is answered 503 at once.
    pub queue_size: usize,
    /// How long a request waits in that queue before it is answered 503.
    pub queue_timeout_ms: u64,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            max_idle_per_backend: 64,
            idle_timeout_ms: 30_000,
            max_connections_per_backend: 0,
            queue_size: 128,
            queue_timeout_ms: 3_000,
        }
    }
}

impl PoolConfig {
    /// Largest accepted `queue_size` (the queue is scanned linearly on wake-ups).
    pub const MAX_QUEUE: usize = 65_536;

    /// `queue_timeout_ms` as a duration.
    pub fn queue_timeout(&self) -> Duration {
        Duration::from_millis(self.queue_timeout_ms)
    }
}

/// When a failed upstream attempt is tried again (`[retries]`), per worker.
///
/// A connect failure is always retried on another backend; a reset or close before any
/// response byte only for an idempotent request whose body is all in hand. Every try after the
/// first counts against `max_attempts` and spends from the worker's retry budget: over the last
/// ten seconds, retries may add `budget_ratio` of the requests seen plus
/// `budget_min_per_sec` per second.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    /// Tries per request, the first included (1 disables retries).
    pub max_attempts: u32,
    /// Retries allowed as a share of the requests seen (0.2: at most 20% more upstream tries).
    pub budget_ratio: f64,
    /// Retries allowed per second on top of the ratio, so light traffic can still retry.
    pub budget_min_per_sec: u32,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self { max_attempts: 3, budget_ratio: 0.2, budget_min_per_sec: 10 }
    }
}

impl RetryConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=16).contains(&self.max_attempts) {
            return Err(ConfigError::invalid("retries.max_attempts", "must be 1..=16"));
        }
        if !(0.0..=10.0).contains(&self.budget_ratio) {
            return Err(ConfigError::invalid("retries.budget_ratio", "must be 0.0..=10.0"));
        }
        if self.budget_min_per_sec > 100_000 {
            return Err(ConfigError::invalid("retries.budget_min_per_sec", "must be 0..=100000"));
        }
        Ok(())
    }
}

/// Buffer sizes and protocol limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Size of each connection's read buffer; also the largest request or response head.
    pub buffer_bytes: usize,
    /// Most header fields in one request or response head.
    pub max_headers: usize,
    /// Largest request body accepted (413 beyond); 0 means no limit.
    pub max_body_bytes: u64,
    /// Client connections (HTTP/1.1 and HTTP/2) one worker serves at once; beyond it the worker
    /// stops accepting until one closes (new connections wait in the kernel's backlog).
    /// 0 means no limit.
    pub max_connections_per_worker: usize,
    /// Requests served on one client connection before it is closed (HTTP/1.1: the last
    /// response carries `connection: close`; HTTP/2: GOAWAY after that many streams).
    /// 0 means no limit.
    pub max_requests_per_connection: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            buffer_bytes: 32 * 1024,
            max_headers: 100,
            max_body_bytes: 0,
            max_connections_per_worker: 4096,
            max_requests_per_connection: 1000,
        }
    }
}

/// Load-balancing tuning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BalanceConfig {
    /// Window of the `response_time` average (default five minutes).
    pub response_time_window_ms: u64,
    /// How often each worker publishes its per-backend counters for the others.
    pub stats_publish_ms: u64,
}

impl Default for BalanceConfig {
    fn default() -> Self {
        Self { response_time_window_ms: 300_000, stats_publish_ms: 5 }
    }
}

/// The protocol Fulcrum speaks to a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BackendProtocol {
    /// `http://` and `https://`: HTTP/1.1 over pooled keep-alive connections.
    Http1,
    /// `h2c://` (cleartext, prior knowledge) and `h2://` (TLS, ALPN `h2`): HTTP/2, multiplexed;
    /// the only kind that serves gRPC.
    H2c,
}

/// A parsed and resolved backend address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendUrl {
    /// The URL as the operator wrote it, normalised to `scheme://host:port`.
    pub url: String,
    /// HTTP/1.1 or HTTP/2.
    pub protocol: BackendProtocol,
    /// Whether Fulcrum speaks TLS to it (`https://`, `h2://`).
    pub tls: bool,
    /// `host:port` as sent in `Host` when the client sent none.
    pub authority: String,
    /// The host alone (no port, no brackets): the name a TLS certificate is checked against.
    pub host: String,
    /// The resolved socket address.
    pub addr: SocketAddr,
}

impl fmt::Display for BackendUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.url)
    }
}

/// Why a backend URL was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackendUrlError {
    /// Only `http://`, `https://`, `h2c://` and `h2://` are spoken.
    #[error(
        "unsupported scheme in `{0}` (expected http://, https://, h2c:// or h2:// with host:port)"
    )]
    Scheme(String),
    /// Host or port missing or malformed, or a path was given.
    #[error("malformed backend URL `{0}` (expected scheme://host:port)")]
    Malformed(String),
    /// The host name did not resolve.
    #[error("cannot resolve `{0}`")]
    Resolve(String),
}

impl BackendUrl {
    /// Parses `scheme://host[:port][/]` (`http`, `https`, `h2c`, `h2`; the port defaults to 80,
    /// or 443 with TLS) and resolves the host once.
    pub fn parse(raw: &str) -> Result<Self, BackendUrlError> {
        let (scheme, protocol, tls, rest) = match raw.split_once("://") {
            Some(("http", rest)) => ("http", BackendProtocol::Http1, false, rest),
            Some(("https", rest)) => ("https", BackendProtocol::Http1, true, rest),
            Some(("h2c", rest)) => ("h2c", BackendProtocol::H2c, false, rest),
            Some(("h2", rest)) => ("h2", BackendProtocol::H2c, true, rest),
            Some(_) => return Err(BackendUrlError::Scheme(raw.to_owned())),
            None => return Err(BackendUrlError::Malformed(raw.to_owned())),
        };
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        let malformed = || BackendUrlError::Malformed(raw.to_owned());
        if authority.is_empty() || authority.contains(['/', '?', '#', '@']) {
            return Err(malformed());
        }
        let default_port = if tls { 443 } else { 80 };
        let with_port = if has_port(authority) {
            authority.to_owned()
        } else {
            format!("{authority}:{default_port}")
        };
        let Some((host, port)) = with_port.rsplit_once(':') else { return Err(malformed()) };
        if host.is_empty() || !port.parse::<u16>().is_ok_and(|p| p != 0) {
            return Err(malformed());
        }
        let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
        let addr = with_port
            .to_socket_addrs()
            .map_err(|_| BackendUrlError::Resolve(with_port.clone()))?
            .next()
            .ok_or_else(|| BackendUrlError::Resolve(with_port.clone()))?;
        Ok(Self {
            url: format!("{scheme}://{with_port}"),
            protocol,
            tls,
            authority: with_port,
            host,
            addr,
        })
    }
}

/// Every backend of one list (`key`: `backends` or `pools[i].backends`) well-formed, weighted
/// in range, and listed once.
fn validate_backends(key: &str, backends: &[BackendConfig]) -> Result<(), ConfigError> {
    for (i, backend) in backends.iter().enumerate() {
        BackendUrl::parse(&backend.url)
            .map_err(|e| ConfigError::invalid(format!("{key}[{i}].url"), e.to_string()))?;
        if !(1..=MAX_WEIGHT).contains(&backend.weight) {
            return Err(ConfigError::invalid(
                format!("{key}[{i}].weight"),
                format!("must be 1..={MAX_WEIGHT}"),
            ));
        }
    }
    let mut urls: Vec<&str> = backends.iter().map(|b| b.url.as_str()).collect();
    urls.sort_unstable();
    if let Some(dup) = urls.windows(2).find(|w| w[0] == w[1]) {
        return Err(ConfigError::invalid(key, format!("`{}` listed twice", dup[0])));
    }
    Ok(())
}

fn has_port(authority: &str) -> bool {
    match authority.rsplit_once(':') {
        // `[::1]` has colons but no port; `[::1]:80` has one.
        Some((host, _)) => !host.starts_with('[') || host.ends_with(']'),
        None => false,
    }
}

impl Config {
    /// Reads and validates a TOML file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        let config: Config = toml::from_str(&text)
            .map_err(|e| ConfigError::Parse { path: path.to_owned(), message: e.to_string() })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks the values the type system cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        validate_backends("backends", &self.backends)?;
        self.validate_pools()?;
        let t = &self.timeouts;
        for (key, value) in [
            ("timeouts.client_header_ms", t.client_header_ms),
            ("timeouts.client_idle_ms", t.client_idle_ms),
            ("timeouts.client_body_ms", t.client_body_ms),
            ("timeouts.client_send_ms", t.client_send_ms),
            ("timeouts.upstream_connect_ms", t.upstream_connect_ms),
            ("timeouts.upstream_response_ms", t.upstream_response_ms),
            ("timeouts.tunnel_idle_ms", t.tunnel_idle_ms),
            ("balance.response_time_window_ms", self.balance.response_time_window_ms),
            ("balance.stats_publish_ms", self.balance.stats_publish_ms),
        ] {
            if value == 0 {
                return Err(ConfigError::invalid(key, "must be greater than 0"));
            }
        }
        if self.limits.buffer_bytes < 1024 || self.limits.buffer_bytes > 1 << 20 {
            return Err(ConfigError::invalid("limits.buffer_bytes", "must be 1024..=1048576"));
        }
        if self.limits.max_headers == 0 || self.limits.max_headers > 1024 {
            return Err(ConfigError::invalid("limits.max_headers", "must be 1..=1024"));
        }
        if self.pool.queue_size > PoolConfig::MAX_QUEUE {
            return Err(ConfigError::invalid("pool.queue_size", "must be 0..=65536"));
        }
        if self.pool.queue_timeout_ms == 0 {
            return Err(ConfigError::invalid("pool.queue_timeout_ms", "must be greater than 0"));
        }
        self.retries.validate()?;
        if self.health.max_fails == 0 {
            return Err(ConfigError::invalid("health.max_fails", "must be greater than 0"));
        }
        if self.workers > 1024 {
            return Err(ConfigError::invalid("workers", "must be at most 1024"));
        }
        if self.admin.jwt_secret.as_deref() == Some("") {
            return Err(ConfigError::invalid("admin.jwt_secret", "must not be empty"));
        }
        if self.admin.max_body_bytes == 0 || self.admin.max_body_bytes > 16 << 20 {
            return Err(ConfigError::invalid("admin.max_body_bytes", "must be 1..=16777216"));
        }
        self.telemetry.validate().map_err(|(key, reason)| ConfigError::invalid(key, reason))?;
        self.http2.validate()?;
        self.tls.validate()?;
        self.upstream_tls.validate()?;
        self.upgrade.validate()?;
        if self.admin.tls_cert_file.is_some() != self.admin.tls_key_file.is_some() {
            return Err(ConfigError::invalid(
                "admin.tls_cert_file",
                "tls_cert_file and tls_key_file go together",
            ));
        }
        // Port 0 asks the kernel for a free port: two such listeners never collide.
        if let Some(tls) = self.tls.listen
            && tls.port() != 0
            && (tls == self.listen || tls == self.admin_listen)
        {
            return Err(ConfigError::invalid(
                "tls.listen",
                "must differ from `listen` and `admin_listen`",
            ));
        }
        self.health_check.validate()?;
        self.cache.validate().map_err(|e| ConfigError::invalid("cache", e.to_string()))?;
        self.store.validate()?;
        Ok(())
    }

    /// The state file in effect: `state_file`, or with the etcd store [`DEFAULT_STATE_FILE`]
    /// (the last-known-good copy is always kept there).
    pub fn state_file_path(&self) -> Option<PathBuf> {
        match (&self.state_file, self.store.kind) {
            (Some(path), _) => Some(path.clone()),
            (None, StoreKind::Etcd) => Some(PathBuf::from(DEFAULT_STATE_FILE)),
            (None, StoreKind::File) => None,
        }
    }

    /// Pool names unique and valid, their backends valid, the routes valid and reachable.
    fn validate_pools(&self) -> Result<(), ConfigError> {
        if self.pools.len() >= MAX_POOLS {
            return Err(ConfigError::invalid(
                "pools",
                format!("at most {} pools besides `{DEFAULT_POOL}`", MAX_POOLS - 1),
            ));
        }
        for (i, pool) in self.pools.iter().enumerate() {
            let key = format!("pools[{i}].name");
            check_pool_name(&pool.name).map_err(|reason| ConfigError::invalid(&key, reason))?;
            if pool.name == DEFAULT_POOL {
                return Err(ConfigError::invalid(
                    key,
                    "`default` is the pool of the top-level `backends` and `algorithm`",
                ));
            }
            if self.pools[..i].iter().any(|p| p.name == pool.name) {
                return Err(ConfigError::invalid(
                    key,
                    format!("duplicate pool name `{}`", pool.name),
                ));
            }
            validate_backends(&format!("pools[{i}].backends"), &pool.backends)?;
        }
        let has_pool =
            |name: &str| name == DEFAULT_POOL || self.pools.iter().any(|p| p.name == name);
        validate_routes(&self.routes, has_pool)
            .map_err(|e| ConfigError::Invalid { key: e.key, reason: e.reason })
    }

    /// The effective configuration as TOML, for `check-config`.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_url_forms() {
        let u = BackendUrl::parse("http://127.0.0.1:9001").unwrap();
        assert_eq!(u.url, "http://127.0.0.1:9001");
        assert_eq!(u.addr, "127.0.0.1:9001".parse().unwrap());
        assert_eq!(BackendUrl::parse("http://127.0.0.1/").unwrap().authority, "127.0.0.1:80");
        assert_eq!(BackendUrl::parse("http://[::1]:81").unwrap().authority, "[::1]:81");
        assert!(matches!(BackendUrl::parse("ftp://a:1"), Err(BackendUrlError::Scheme(_))));
        let tls = BackendUrl::parse("https://localhost").unwrap();
        assert_eq!(
            (tls.url.as_str(), tls.tls, tls.host.as_str()),
            ("https://localhost:443", true, "localhost")
        );
        let h2 = BackendUrl::parse("h2://127.0.0.1:8443").unwrap();
        assert_eq!((h2.protocol, h2.tls), (BackendProtocol::H2c, true));
        assert_eq!(BackendUrl::parse("http://[::1]:81").unwrap().host, "::1");
        let h2 = BackendUrl::parse("h2c://127.0.0.1:50051/").unwrap();
        assert_eq!((h2.url.as_str(), h2.protocol), ("h2c://127.0.0.1:50051", BackendProtocol::H2c));
        assert_eq!(
            BackendUrl::parse("http://127.0.0.1:1").unwrap().protocol,
            BackendProtocol::Http1
        );
        assert!(matches!(BackendUrl::parse("127.0.0.1:1"), Err(BackendUrlError::Malformed(_))));
        for bad in ["http://", "http://h:0", "http://h:x", "http://h:1/path", "http://u@h:1"] {
            assert!(BackendUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_tls_listener_may_share_port_zero_but_no_fixed_address() {
        let certs = "[[tls.certificates]]\ncert_file = \"c.pem\"\nkey_file = \"k.pem\"\n";
        let ephemeral = format!(
            "listen = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n\
             [tls]\nlisten = \"127.0.0.1:0\"\n{certs}"
        );
        let c: Config = toml::from_str(&ephemeral).unwrap();
        assert!(c.validate().is_ok(), "{:?}", c.validate());
        let clash =
            format!("listen = \"127.0.0.1:8443\"\n[tls]\nlisten = \"127.0.0.1:8443\"\n{certs}");
        let c: Config = toml::from_str(&clash).unwrap();
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("tls.listen"), "{err}");
    }

    #[test]
    fn unknown_keys_and_bad_values_are_errors() {
        assert!(toml::from_str::<Config>("listn = \"127.0.0.1:1\"").is_err());
        assert!(toml::from_str::<Config>("[timeouts]\nfoo = 1").is_err());
        let c: Config = toml::from_str("[[backends]]\nurl = \"ftp://x:1\"").unwrap();
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("backends[0].url"), "{err}");
        let c: Config = toml::from_str("[[backends]]\nurl = \"http://127.0.0.1:1\"").unwrap();
        assert_eq!(c.backends[0].weight, DEFAULT_WEIGHT);
        for bad in [0, MAX_WEIGHT + 1] {
            let c: Config = toml::from_str(&format!(
                "[[backends]]\nurl = \"http://127.0.0.1:1\"\nweight = {bad}"
            ))
            .unwrap();
            let err = c.validate().unwrap_err().to_string();
            assert!(err.contains("backends[0].weight") && err.contains("1..=10000"), "{err}");
        }
    }

    #[test]
    fn pool_limit_and_retry_keys_are_validated() {
        for (toml, key) in [
            ("[pool]\nqueue_size = 70000", "pool.queue_size"),
            ("[pool]\nqueue_timeout_ms = 0", "pool.queue_timeout_ms"),
            ("[retries]\nmax_attempts = 0", "retries.max_attempts"),
            ("[retries]\nbudget_ratio = -0.5", "retries.budget_ratio"),
            ("[retries]\nbudget_min_per_sec = 1000000", "retries.budget_min_per_sec"),
        ] {
            let c: Config = toml::from_str(toml).unwrap();
            let err = c.validate().unwrap_err().to_string();
            assert!(err.contains(key), "{toml}: {err}");
        }
        let c: Config = toml::from_str(
            "[pool]\nmax_connections_per_backend = 4\nqueue_size = 0\n\
             [retries]\nmax_attempts = 1\nbudget_ratio = 0.0\nbudget_min_per_sec = 0",
        )
        .unwrap();
        c.validate().unwrap();
        assert_eq!(c.pool.max_connections_per_backend, 4);
        assert_eq!(c.retries.max_attempts, 1);
    }

    #[test]
    fn health_check_values_are_validated() {
        let err = |toml_text: &str| {
            let c: Config = toml::from_str(toml_text).unwrap();
            c.validate().map(|_| ()).map_err(|e| e.to_string())
        };
        assert_eq!(err("[health_check]\nenabled = true"), Ok(()));
        for (text, key) in [
            ("[health_check]\ninterval_ms = 0", "health_check.interval_ms"),
            ("[health_check]\ntimeout_ms = 0", "health_check.timeout_ms"),
            ("[health_check]\ninterval_ms = 100\ntimeout_ms = 200", "health_check.timeout_ms"),
            ("[health_check]\nrise = 0", "health_check.rise"),
            ("[health_check]\nfall = 0", "health_check.fall"),
            ("[health_check]\nslow_start_ms = 3600001", "health_check.slow_start_ms"),
            ("[health_check]\npath = \"healthz\"", "health_check.path"),
            ("[health_check]\npath = \"/a b\"", "health_check.path"),
            ("[health_check]\ngrpc_service = \"a\\nb\"", "health_check.grpc_service"),
        ] {
            let e = err(text).unwrap_err();
            assert!(e.contains(key), "{text}: {e}");
        }
        assert!(toml::from_str::<Config>("[health_check]\ncheck = true").is_err());
    }

    #[test]
    fn pools_and_routes_are_validated_with_their_keys() {
        let base = "[[pools]]\nname = \"api\"\n[[pools.backends]]\nurl = \"http://127.0.0.1:1\"\n";
        for (extra, key) in [
            ("[[pools]]\nname = \"api\"\n", "pools[1].name"),
            ("[[pools]]\nname = \"default\"\n", "pools[1].name"),
            ("[[pools]]\nname = \"a b\"\n", "pools[1].name"),
            (
                "[[pools]]\nname = \"b\"\n[[pools.backends]]\nurl = \"ftp://x:1\"\n",
                "pools[1].backends[0].url",
            ),
            (
                "[[pools]]\nname = \"b\"\n[[pools.backends]]\nurl = \"http://127.0.0.1:1\"\nweight = 0\n",
                "pools[1].backends[0].weight",
            ),
            ("[[routes]]\npool = \"nope\"\n", "routes[0].pool"),
            (
                "[[routes]]\npool = \"api\"\n[[routes]]\npool = \"default\"\nhost = \"a\"\n",
                "routes[1]",
            ),
        ] {
            let c: Config = toml::from_str(&format!("{base}{extra}")).unwrap();
            let err = c.validate().unwrap_err().to_string();
            assert!(err.contains(&format!("`{key}`")), "{extra}: {err}");
        }
        let c: Config =
            toml::from_str(&format!("{base}[[routes]]\npool = \"api\"\npath_prefix = \"/api\"\n"))
                .unwrap();
        c.validate().unwrap();
        // The same URL may serve two pools; within one it is listed once.
        let c: Config =
            toml::from_str(&format!("backends = [{{ url = \"http://127.0.0.1:1\" }}]\n{base}"))
                .unwrap();
        c.validate().unwrap();
        let back: Config = toml::from_str(&c.to_toml()).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn defaults_round_trip() {
        let c = Config::default();
        let back: Config = toml::from_str(&c.to_toml()).unwrap();
        assert_eq!(c, back);
    }

    #[test]
    fn the_etcd_store_round_trips_without_its_password_and_has_a_state_file() {
        let c: Config = toml::from_str(
            "[store]\nkind = \"etcd\"\nendpoints = [\"http://127.0.0.1:2379\"]\n\
             prefix = \"/fulcrum/a\"\nusername = \"fulcrum\"\npassword = \"hunter2\"\n",
        )
        .unwrap();
        c.validate().unwrap();
        assert_eq!(c.state_file_path(), Some(PathBuf::from(DEFAULT_STATE_FILE)));
        let text = c.to_toml();
        assert!(text.contains("kind = \"etcd\"") && !text.contains("hunter2"), "{text}");
        let back: Config = toml::from_str(&text).unwrap();
        assert_eq!(back.store.password, None);
        assert_eq!(back.store.endpoints, c.store.endpoints);
        assert_eq!(Config::default().state_file_path(), None);
        let c = Config { state_file: Some("/var/lib/fulcrum/state.json".into()), ..c };
        assert_eq!(c.state_file_path(), c.state_file);
        let err = toml::from_str::<Config>("[store]\nkind = \"consul\"").unwrap_err();
        assert!(err.to_string().contains("consul"), "{err}");
    }
}
