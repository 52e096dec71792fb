//! The admin API's own shapes of the configuration sections it reports, with their OpenAPI
//! schemas. The configuration layer is plain data; these types give each section its JSON
//! form (the same keys as the TOML tables) and its documentation in the published document.

use std::collections::BTreeMap;

use fulcrum_config::{
    ActiveHealth, CachePolicy, PassiveHealth, RetryConfig, RouteConfig, StoreConfig, StoreKind,
    Timeouts,
};
use serde::{Deserialize, Serialize};
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, Schema, SchemaFormat, Type};
use utoipa::{PartialSchema, ToSchema};

/// The schema of one response status in the cache settings: an integer in 100..=599, the
/// range the cache accepts (a `u16` alone would document 0..=65535). Schema only.
pub(crate) struct CacheStatus;

impl PartialSchema for CacheStatus {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::Integer)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int32)))
            .minimum(Some(100))
            .maximum(Some(599))
            .description(Some("An HTTP response status."))
            .into()
    }
}

impl ToSchema for CacheStatus {}

/// The schema of an HTTP method or header name in the cache settings: an RFC 9110 `token`,
/// which is what the cache accepts. Schema only.
pub(crate) struct Token;

impl PartialSchema for Token {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some("^[!#$%&'*+\\-.^_`|~0-9A-Za-z]+$"))
            .description(Some("An RFC 9110 token (a method or a header name)."))
            .into()
    }
}

impl ToSchema for Token {}

/// One route (a `[[routes]]` table): requests matching every matcher it sets go to `pool`.
/// Routes are tried in order; the first match wins; the rest go to `default`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = Route)]
pub struct RouteBody {
    /// The pool matching requests go to.
    #[schema(example = "api")]
    pub pool: String,
    /// `Host`/`:authority` without port, case-insensitive: an exact name, or `*.` and a suffix
    /// (`*.example.com` matches `a.example.com`, not `example.com`). A request with neither
    /// is matched on its TLS SNI name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "api.example.com")]
    pub host: Option<String>,
    /// Path prefix on segment boundaries (`/api` matches `/api`, `/api/x`, `/api?q`, not
    /// `/apix`), compared byte for byte with the path as received.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "/api")]
    pub path_prefix: Option<String>,
    /// gRPC service (`package.Service`): matches gRPC calls to `/<service>/<method>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "echo.Echo")]
    pub grpc_service: Option<String>,
    /// Header fields that must be present with exactly these values (names case-insensitive,
    /// at most 16).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = json!({"x-canary": "1"}))]
    pub headers: Option<BTreeMap<String, String>>,
    /// `true` caches what the route matches (with the `[cache]` settings, even while the cache
    /// is off), `false` never; unset follows `cache.enabled`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<bool>,
}

impl From<&RouteConfig> for RouteBody {
    fn from(r: &RouteConfig) -> Self {
        Self {
            pool: r.pool.clone(),
            host: r.host.clone(),
            path_prefix: r.path_prefix.clone(),
            grpc_service: r.grpc_service.clone(),
            headers: (!r.headers.is_empty()).then(|| r.headers.clone()),
            cache: r.cache,
        }
    }
}

impl From<RouteBody> for RouteConfig {
    fn from(r: RouteBody) -> Self {
        Self {
            pool: r.pool,
            host: r.host,
            path_prefix: r.path_prefix,
            grpc_service: r.grpc_service,
            headers: r.headers.unwrap_or_default(),
            cache: r.cache,
        }
    }
}

/// Response cache settings (the `[cache]` table).
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = CachePolicy)]
pub struct CacheSettings {
    /// Whether cacheable responses are stored and served (default off).
    pub enabled: bool,
    /// Longest freshness lifetime, in milliseconds; also the lifetime of responses without
    /// `max-age`/`s-maxage` (default 60 000).
    #[schema(example = 60000)]
    pub ttl_ms: u64,
    /// Memory budget over all workers' shards, in bytes (default 256 MiB); each worker gets
    /// `max_bytes / workers`.
    #[schema(example = 268435456)]
    pub max_bytes: u64,
    /// Largest body stored, in bytes (default 1 MiB); larger ones pass through uncached.
    #[schema(example = 1048576)]
    pub max_object_bytes: u64,
    /// Request methods looked up and stored, case-sensitive (default `GET`, `HEAD`, `POST`).
    #[schema(value_type = Vec<Token>, example = json!(["GET", "HEAD", "POST"]))]
    pub methods: Vec<String>,
    /// Response statuses stored (default 200, 203, 204, 301, 404, 410).
    #[schema(value_type = Vec<CacheStatus>, example = json!([200, 203, 204, 301, 404, 410]))]
    pub statuses: Vec<u16>,
    /// Request headers left out of the key, case-insensitive (e.g. `x-request-id`; default
    /// none).
    #[schema(value_type = Vec<Token>, example = json!(["x-request-id"]))]
    pub ignore_headers: Vec<String>,
}

impl From<&CachePolicy> for CacheSettings {
    fn from(p: &CachePolicy) -> Self {
        Self {
            enabled: p.enabled,
            ttl_ms: p.ttl_ms,
            max_bytes: p.max_bytes,
            max_object_bytes: p.max_object_bytes,
            methods: p.methods.clone(),
            statuses: p.statuses.clone(),
            ignore_headers: p.ignore_headers.clone(),
        }
    }
}

/// Timeouts for every phase of a proxied exchange, in milliseconds (the `[timeouts]` table).
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[schema(as = Timeouts)]
pub struct TimeoutsOut {
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
    /// direction before it is closed.
    pub tunnel_idle_ms: u64,
}

impl From<&Timeouts> for TimeoutsOut {
    fn from(t: &Timeouts) -> Self {
        Self {
            client_header_ms: t.client_header_ms,
            client_idle_ms: t.client_idle_ms,
            client_body_ms: t.client_body_ms,
            client_body_min_rate: t.client_body_min_rate,
            client_send_ms: t.client_send_ms,
            upstream_connect_ms: t.upstream_connect_ms,
            upstream_response_ms: t.upstream_response_ms,
            drain_ms: t.drain_ms,
            tunnel_idle_ms: t.tunnel_idle_ms,
        }
    }
}

/// Passive health (`[health]`): eject a backend after `max_fails` consecutive connect failures
/// for `eject_ms`.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[schema(as = PassiveHealth)]
pub struct PassiveHealthOut {
    /// Consecutive connect failures that eject a backend (K).
    pub max_fails: u32,
    /// How long an ejected backend is skipped before it is tried again (T).
    pub eject_ms: u64,
}

impl From<&PassiveHealth> for PassiveHealthOut {
    fn from(h: &PassiveHealth) -> Self {
        Self { max_fails: h.max_fails, eject_ms: h.eject_ms }
    }
}

/// Active health checks (`[health_check]`).
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = ActiveHealth)]
pub struct ActiveHealthOut {
    /// Whether the checks run at all.
    pub enabled: bool,
    /// Path of the HTTP check (`http://` backends), sent as `GET path HTTP/1.1`.
    #[schema(example = "/healthz")]
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

impl From<&ActiveHealth> for ActiveHealthOut {
    fn from(h: &ActiveHealth) -> Self {
        Self {
            enabled: h.enabled,
            path: h.path.clone(),
            grpc_service: h.grpc_service.clone(),
            interval_ms: h.interval_ms,
            timeout_ms: h.timeout_ms,
            rise: h.rise,
            fall: h.fall,
            slow_start_ms: h.slow_start_ms,
        }
    }
}

/// When a failed upstream attempt is tried again (`[retries]`), per worker.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[schema(as = RetryConfig)]
pub struct RetriesOut {
    /// Tries per request, the first included (1 disables retries).
    pub max_attempts: u32,
    /// Retries allowed as a share of the requests seen (0.2: at most 20% more upstream tries).
    pub budget_ratio: f64,
    /// Retries allowed per second on top of the ratio, so light traffic can still retry.
    pub budget_min_per_sec: u32,
}

impl From<&RetryConfig> for RetriesOut {
    fn from(r: &RetryConfig) -> Self {
        Self {
            max_attempts: r.max_attempts,
            budget_ratio: r.budget_ratio,
            budget_min_per_sec: r.budget_min_per_sec,
        }
    }
}

/// Where the run-time state lives.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum StoreKindName {
    /// The local state file (or nothing): one instance.
    File,
    /// One document in etcd shared by every instance with the same endpoints and prefix.
    Etcd,
}

impl From<StoreKind> for StoreKindName {
    fn from(k: StoreKind) -> Self {
        match k {
            StoreKind::File => Self::File,
            StoreKind::Etcd => Self::Etcd,
        }
    }
}

/// The `[store]` settings (never the password).
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = StoreConfig)]
pub struct StoreSettingsOut {
    /// `file` or `etcd`.
    pub kind: StoreKindName,
    /// etcd client URLs, tried in order (empty with the file store).
    pub endpoints: Vec<String>,
    /// The key prefix of this cluster's state; the document is `<prefix>/state`.
    #[schema(example = "/fulcrum")]
    pub prefix: String,
    /// The etcd user, if any.
    pub username: Option<String>,
    /// The CA file for `https://` endpoints, if any.
    pub ca_file: Option<String>,
    /// The client certificate, if any.
    pub cert_file: Option<String>,
    /// The client certificate's key file, if any.
    pub key_file: Option<String>,
    /// Times a change is computed again after losing a compare-and-swap before `409`.
    pub conflict_retries: u32,
    /// TCP connect plus TLS handshake to one endpoint, in milliseconds.
    pub connect_timeout_ms: u64,
    /// One whole etcd call, in milliseconds.
    pub request_timeout_ms: u64,
    /// A quiet watch is checked with a read after this many milliseconds.
    pub watch_probe_ms: u64,
    /// First reconnect delay, in milliseconds.
    pub backoff_min_ms: u64,
    /// Longest reconnect delay, in milliseconds.
    pub backoff_max_ms: u64,
    /// Largest state document written or accepted, in bytes.
    pub max_document_bytes: usize,
}

impl From<&StoreConfig> for StoreSettingsOut {
    fn from(s: &StoreConfig) -> Self {
        let path = |p: &Option<std::path::PathBuf>| p.as_ref().map(|p| p.display().to_string());
        Self {
            kind: s.kind.into(),
            endpoints: s.endpoints.clone(),
            prefix: s.prefix.clone(),
            username: s.username.clone(),
            ca_file: path(&s.ca_file),
            cert_file: path(&s.cert_file),
            key_file: path(&s.key_file),
            conflict_retries: s.conflict_retries,
            connect_timeout_ms: s.connect_timeout_ms,
            request_timeout_ms: s.request_timeout_ms,
            watch_probe_ms: s.watch_probe_ms,
            backoff_min_ms: s.backoff_min_ms,
            backoff_max_ms: s.backoff_max_ms,
            max_document_bytes: s.max_document_bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each shape serialises with exactly the keys of its configuration table.
    #[test]
    fn shapes_have_the_keys_of_their_tables() {
        fn keys(v: serde_json::Value) -> Vec<String> {
            let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
            k.sort();
            k
        }
        let cache = CachePolicy::default();
        assert_eq!(
            keys(serde_json::to_value(CacheSettings::from(&cache)).unwrap()),
            keys(serde_json::to_value(&cache).unwrap())
        );
        let t = Timeouts::default();
        assert_eq!(
            keys(serde_json::to_value(TimeoutsOut::from(&t)).unwrap()),
            keys(serde_json::to_value(t).unwrap())
        );
        let h = ActiveHealth::default();
        assert_eq!(
            keys(serde_json::to_value(ActiveHealthOut::from(&h)).unwrap()),
            keys(serde_json::to_value(&h).unwrap())
        );
        let p = PassiveHealth::default();
        assert_eq!(
            keys(serde_json::to_value(PassiveHealthOut::from(&p)).unwrap()),
            keys(serde_json::to_value(p).unwrap())
        );
        let r = RetryConfig::default();
        assert_eq!(
            keys(serde_json::to_value(RetriesOut::from(&r)).unwrap()),
            keys(serde_json::to_value(r).unwrap())
        );
        let route = RouteConfig {
            pool: "api".into(),
            host: Some("a.com".into()),
            path_prefix: Some("/a".into()),
            grpc_service: Some("p.S".into()),
            headers: [("x-a".to_owned(), "1".to_owned())].into(),
            cache: Some(true),
        };
        let body = serde_json::to_value(RouteBody::from(&route)).unwrap();
        assert_eq!(keys(body.clone()), keys(serde_json::to_value(&route).unwrap()));
        let back: RouteBody = serde_json::from_value(body).unwrap();
        assert_eq!(RouteConfig::from(back), route);
        let store = StoreConfig {
            kind: StoreKind::Etcd,
            endpoints: vec!["https://127.0.0.1:2379".into()],
            username: Some("fulcrum".into()),
            password: Some("secret".into()),
            ca_file: Some("ca.pem".into()),
            cert_file: Some("c.pem".into()),
            key_file: Some("k.pem".into()),
            ..StoreConfig::default()
        };
        let shown = serde_json::to_value(StoreSettingsOut::from(&store)).unwrap();
        assert_eq!(keys(shown.clone()), keys(serde_json::to_value(&store).unwrap()));
        assert!(!shown.to_string().contains("secret"));
        let bare = RouteConfig { pool: "api".into(), ..RouteConfig::default() };
        assert_eq!(
            serde_json::to_value(RouteBody::from(&bare)).unwrap(),
            serde_json::to_value(&bare).unwrap()
        );
    }
}
