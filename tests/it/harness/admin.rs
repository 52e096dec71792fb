//! The admin API client ([`AdminClient`]: JSON requests with bearer tokens) and the tokens
//! the tests sign: HS256 with the suite's [`SECRET`], an Ed25519 pair, and forged ones.

use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use super::http1::{Response, request};

/// The HMAC secret every test server uses unless told otherwise.
pub const SECRET: &str = "test-secret-0123456789abcdef0123456789abcdef";

/// Near misses of the admin API's paths (trailing slashes, extra or unknown segments, other
/// spellings): none is a route, so each answers `404` whatever the method and the token.
pub const UNDOCUMENTED_PATHS: &[&str] = &[
    "/",
    "/api",
    "/api/v1",
    "/api/v1/",
    "/api/v1/backends/",
    "/api/v1/backends/1/x",
    "/api/v1/cache/purge",
    "/api/v1/configs",
    "/api/v1/openapi.yaml",
    "/api/v1/pools/",
    "/api/v1/pools/api/",
    "/api/v1/pools/api/algorithm/x",
    "/api/v1/pools/api/backends/",
    "/api/v1/pools/api/backends/1/x",
    "/api/v1/pools/api/other",
    "/api/v1/pools/spec/",
    "/api/v1/pools/spec/backends/",
    "/api/v1/pools/spec/other",
    "/api/v1/routes/",
    "/api/v1/routes/0",
    "/api/v1/store/",
    "/docs/",
    "/docs/a/b",
    "/healthz/",
    "/metrics/",
    "/openapi.json",
];

/// A test Ed25519 key pair (never used outside tests).
pub const ED25519_PRIVATE_PEM: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEII/FchjacIALP1xj0spCOxYa8wkyohD6fV8gj7BpVI6f
-----END PRIVATE KEY-----
";
/// The public half of [`ED25519_PRIVATE_PEM`].
pub const ED25519_PUBLIC_PEM: &str = "-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEAHi/un4BLcmFbQS701EYAETWWeerkEXgRh4UKCcnjgr4=
-----END PUBLIC KEY-----
";

/// Requests to one admin listener, each on a fresh connection.
#[derive(Debug, Clone, Copy)]
pub struct AdminClient {
    addr: SocketAddr,
}

impl AdminClient {
    /// A client of the admin listener at `addr`.
    pub fn new(addr: SocketAddr) -> Self {
        Self { addr }
    }

    /// `GET path`, with `token` as the bearer token when given.
    pub fn get(&self, path: &str, token: Option<&str>) -> Response {
        self.request("GET", path, token, &[], None)
    }

    /// `method path` with a JSON body.
    pub fn send(&self, method: &str, path: &str, token: Option<&str>, body: &Value) -> Response {
        let body = serde_json::to_vec(body).unwrap();
        self.request(method, path, token, &[("Content-Type", "application/json")], Some(&body))
    }

    /// The id of the backend with `url`.
    pub fn backend_id(&self, url: &str) -> u64 {
        let list = self.get("/api/v1/backends", Some(&read_token())).expect(200, None).json();
        let found = list.as_array().unwrap().iter().find(|b| b["url"] == url);
        found.unwrap_or_else(|| panic!("no backend {url} in {list}"))["id"].as_u64().unwrap()
    }

    /// Removes the backend with `url` (`204`).
    pub fn remove_backend(&self, url: &str) {
        let path = format!("/api/v1/backends/{}", self.backend_id(url));
        self.send("DELETE", &path, Some(&write_token()), &Value::Null).expect(204, None);
    }

    /// Any request: the bearer token when given, then `headers`, then the raw body.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Response {
        let bearer = token.map(|t| format!("Bearer {t}"));
        let mut all: Vec<(&str, &str)> =
            bearer.as_deref().map(|b| ("Authorization", b)).into_iter().collect();
        all.extend_from_slice(headers);
        request(self.addr, method, path, &all, body)
    }
}

/// Seconds since the Unix epoch (for `exp`, `nbf` claims).
pub fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// HS256 token with `scope`, expiring in an hour, signed with `secret`.
pub fn token_with(secret: &str, scope: &str) -> String {
    sign_hs(Algorithm::HS256, secret.as_bytes(), &json!({"exp": now() + 3600, "scope": scope}))
}

/// HS256 token signed with [`SECRET`].
pub fn token(scope: &str) -> String {
    token_with(SECRET, scope)
}

/// Read + write token.
pub fn write_token() -> String {
    token("fulcrum:read fulcrum:write")
}

/// Read-only token.
pub fn read_token() -> String {
    token("fulcrum:read")
}

/// A token with `claims`, signed with the HMAC `alg` and `key`.
pub fn sign_hs(alg: Algorithm, key: &[u8], claims: &Value) -> String {
    jsonwebtoken::encode(&Header::new(alg), claims, &EncodingKey::from_secret(key)).unwrap()
}

/// A token with `claims`, signed with [`ED25519_PRIVATE_PEM`].
pub fn sign_ed(claims: &Value) -> String {
    let key = EncodingKey::from_ed_pem(ED25519_PRIVATE_PEM.as_bytes()).unwrap();
    jsonwebtoken::encode(&Header::new(Algorithm::EdDSA), claims, &key).unwrap()
}

/// base64url without padding.
pub fn b64url(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

/// A token with an arbitrary header and signature bytes (for `alg: none` and wrong-alg cases).
pub fn forge(header: &Value, claims: &Value, signature: &[u8]) -> String {
    format!(
        "{}.{}.{}",
        b64url(&serde_json::to_vec(header).unwrap()),
        b64url(&serde_json::to_vec(claims).unwrap()),
        b64url(signature)
    )
}
