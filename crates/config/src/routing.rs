//! Pools and routes as written in the configuration (`[[pools]]`, `[[routes]]`) and in the admin
//! API, and their validation: which pool names, hosts, path prefixes, gRPC services and header
//! fields are acceptable, how many, and the rule that refuses a route an earlier one always
//! shadows. Plain data, checked on the main thread (configuration files) and on `lb-control`
//! (admin changes); the form the workers match with is built from it in the model layer.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::cache::is_token;
use crate::{Algorithm, BackendConfig};

/// The pool of the top-level `backends` and `algorithm`, and of every request no route matches.
pub const DEFAULT_POOL: &str = "default";
/// Most pools, `default` included.
pub const MAX_POOLS: usize = 256;
/// Most routes.
pub const MAX_ROUTES: usize = 1024;
/// Most header matchers on one route.
pub const MAX_ROUTE_HEADERS: usize = 16;
/// Longest pool name.
pub const MAX_POOL_NAME: usize = 64;
const MAX_HOST: usize = 253;
const MAX_PATH_PREFIX: usize = 1024;
const MAX_SERVICE: usize = 256;
const MAX_HEADER_NAME: usize = 128;
const MAX_HEADER_VALUE: usize = 1024;

/// One named pool of backends with its own algorithm (`[[pools]]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendPoolConfig {
    /// `[A-Za-z0-9_.-]`, 1..=64 characters, the first a letter or digit; `default` is reserved
    /// for the top-level backends.
    pub name: String,
    /// Balancing algorithm within the pool (default `round_robin`).
    #[serde(default = "default_algorithm")]
    pub algorithm: Algorithm,
    /// The pool's backends (`[[pools.backends]]`: `url`, `weight`).
    #[serde(default)]
    pub backends: Vec<BackendConfig>,
}

fn default_algorithm() -> Algorithm {
    Algorithm::RoundRobin
}

/// One route (`[[routes]]`): requests that match every matcher it sets go to `pool`. Routes are
/// tried in order; the first match wins; a request no route matches goes to `default`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// The pool matching requests go to.
    pub pool: String,
    /// `Host` (HTTP/1.1) or `:authority` (HTTP/2), without port, case-insensitive: an exact name
    /// or `*.` and a suffix (`*.example.com` matches `a.example.com` and `a.b.example.com`, not
    /// `example.com`). A request with neither is matched on its TLS SNI name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// A path prefix on segment boundaries: `/api` matches `/api`, `/api/x` and `/api?q`, not
    /// `/apix`. Compared byte for byte with the path as received (no decoding).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_prefix: Option<String>,
    /// A gRPC service (`package.Service`): matches gRPC calls (`content-type: application/grpc…`)
    /// to `/<service>/<method>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc_service: Option<String>,
    /// Request header fields that must be present with exactly these values (names
    /// case-insensitive, values case-sensitive, compared without surrounding whitespace).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Turns the response cache on (`true`, with the `[cache]` settings even while
    /// `cache.enabled` is false) or off (`false`) for what the route matches; unset follows
    /// `cache.enabled`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<bool>,
}

/// A pool or route refused, with the dotted key that names it (`routes[2].host`,
/// `pools[0].name`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid `{key}`: {reason}")]
pub struct RouteError {
    /// Dotted path of the offending key.
    pub key: String,
    /// Why it was refused.
    pub reason: String,
}

impl RouteError {
    fn new(key: impl Into<String>, reason: impl Into<String>) -> Self {
        Self { key: key.into(), reason: reason.into() }
    }
}

/// Checks a pool name: `[A-Za-z0-9_.-]`, 1..=[`MAX_POOL_NAME`] characters, the first a letter or
/// digit (it appears in admin API paths, metric labels and access records as is).
pub fn check_pool_name(name: &str) -> Result<(), String> {
    let ok = name.len() <= MAX_POOL_NAME
        && name.as_bytes().first().is_some_and(u8::is_ascii_alphanumeric)
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{name}` is not a pool name (1..={MAX_POOL_NAME} of A-Z, a-z, 0-9, `_`, `.`, `-`, \
             starting with a letter or digit)"
        ))
    }
}

/// Checks an ordered route list against the pools that exist (`has_pool`): at most
/// [`MAX_ROUTES`], every route well-formed and naming a pool, and none that can never match.
///
/// A route can never match when an earlier one matches every request it matches. The check is
/// conservative (it refuses a route only when that is certain) and compares the two routes
/// matcher by matcher; the earlier route `a` covers the later `b` when each matcher `a` sets is
/// implied by `b`'s:
/// - `host`: the same name; or `a` is `*.s` and `b` is a name or wildcard ending in `.s`;
/// - `path_prefix`: `b`'s prefix (or `/<service>/` for a `grpc_service` route) lies inside `a`'s
///   on a segment boundary (`/api` covers `/api`, `/api/` and `/api/v1`, not `/apix`);
/// - `grpc_service`: the same service;
/// - `headers`: every field `a` requires, `b` requires with the same value.
///
/// A route without matchers therefore shadows every route after it. Shadowing by several
/// earlier routes together (two hosts that between them cover a wildcard) is not detected. A
/// route whose `path_prefix` no path of its `grpc_service` can start with is refused too.
pub fn validate_routes(
    routes: &[RouteConfig],
    has_pool: impl Fn(&str) -> bool,
) -> Result<(), RouteError> {
    if routes.len() > MAX_ROUTES {
        return Err(RouteError::new("routes", format!("at most {MAX_ROUTES} routes")));
    }
    for (i, route) in routes.iter().enumerate() {
        check_route(i, route, &has_pool)?;
    }
    for (j, later) in routes.iter().enumerate() {
        if let Some(i) = routes[..j].iter().position(|earlier| covers(earlier, later)) {
            return Err(RouteError::new(
                format!("routes[{j}]"),
                format!(
                    "can never match: routes[{i}] comes first and matches every request it matches"
                ),
            ));
        }
    }
    Ok(())
}

fn check_route(
    i: usize,
    route: &RouteConfig,
    has_pool: &impl Fn(&str) -> bool,
) -> Result<(), RouteError> {
    let key = |field: &str| format!("routes[{i}].{field}");
    if !has_pool(&route.pool) {
        return Err(RouteError::new(key("pool"), format!("unknown pool `{}`", route.pool)));
    }
    if let Some(host) = &route.host {
        check_host(host).map_err(|reason| RouteError::new(key("host"), reason))?;
    }
    if let Some(prefix) = &route.path_prefix {
        check_path_prefix(prefix).map_err(|reason| RouteError::new(key("path_prefix"), reason))?;
    }
    if let Some(service) = &route.grpc_service {
        check_service(service).map_err(|reason| RouteError::new(key("grpc_service"), reason))?;
        if let Some(prefix) = &route.path_prefix {
            let calls = format!("/{service}/");
            if !calls.starts_with(prefix.as_str()) && !prefix.starts_with(&calls) {
                return Err(RouteError::new(
                    key("path_prefix"),
                    format!("no call to `{service}` (`{calls}<method>`) starts with `{prefix}`"),
                ));
            }
        }
    }
    if route.headers.len() > MAX_ROUTE_HEADERS {
        return Err(RouteError::new(
            key("headers"),
            format!("at most {MAX_ROUTE_HEADERS} header matchers"),
        ));
    }
    let mut seen: Vec<String> = Vec::with_capacity(route.headers.len());
    for (name, value) in &route.headers {
        let field = key(&format!("headers.{name}"));
        check_header(name, value).map_err(|reason| RouteError::new(field.clone(), reason))?;
        let lower = name.to_ascii_lowercase();
        if seen.contains(&lower) {
            return Err(RouteError::new(field, "the same header named twice (names ignore case)"));
        }
        seen.push(lower);
    }
    Ok(())
}

/// `name`, `*.suffix` or a bracketed IPv6 literal; no port, no trailing dot.
fn check_host(host: &str) -> Result<(), String> {
    let name = host.strip_prefix("*.").unwrap_or(host);
    if host == "*" || name.is_empty() {
        return Err("to match every host, leave `host` out".into());
    }
    if host.len() > MAX_HOST {
        return Err(format!("longer than {MAX_HOST} characters"));
    }
    if let Some(inner) = name.strip_prefix('[') {
        let ok = name.len() == host.len()
            && inner.strip_suffix(']').is_some_and(|ip| {
                !ip.is_empty() && ip.bytes().all(|b| b.is_ascii_hexdigit() || b":.".contains(&b))
            });
        return if ok { Ok(()) } else { Err(format!("`{host}` is not an IPv6 literal")) };
    }
    if name.contains(':') {
        return Err("hosts are compared without port: leave the port out".into());
    }
    let label_ok = |l: &str| {
        !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b))
    };
    if name.split('.').all(label_ok) {
        Ok(())
    } else {
        Err(format!("`{host}` is not a host name (labels of A-Z, a-z, 0-9, `-`, `_`)"))
    }
}

fn check_path_prefix(prefix: &str) -> Result<(), String> {
    if !prefix.starts_with('/') {
        return Err("must start with `/`".into());
    }
    if prefix.len() > MAX_PATH_PREFIX {
        return Err(format!("longer than {MAX_PATH_PREFIX} bytes"));
    }
    if !prefix.bytes().all(|b| b.is_ascii_graphic() && b != b'?' && b != b'#') {
        return Err(
            "only visible ASCII, without `?` or `#` (a prefix of the path, not the query)".into()
        );
    }
    Ok(())
}

fn check_service(service: &str) -> Result<(), String> {
    let ok = !service.is_empty()
        && service.len() <= MAX_SERVICE
        && service.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{service}` is not a gRPC service name (`package.Service`: A-Z, a-z, 0-9, `_`, `.`)"
        ))
    }
}

fn check_header(name: &str, value: &str) -> Result<(), String> {
    if !is_token(name) || name.len() > MAX_HEADER_NAME {
        return Err(format!("`{name}` is not a header name (an RFC 9110 token)"));
    }
    if name.eq_ignore_ascii_case("host") {
        return Err("match the host with `host` (it also covers `:authority`)".into());
    }
    if value.len() > MAX_HEADER_VALUE {
        return Err(format!("the value is longer than {MAX_HEADER_VALUE} bytes"));
    }
    let field_byte = |b: u8| b == b'\t' || b == b' ' || b.is_ascii_graphic() || b >= 0x80;
    if !value.bytes().all(field_byte) {
        return Err("the value is not a valid field value (no control characters)".into());
    }
    if value.trim_matches([' ', '\t']).len() != value.len() {
        return Err("the value has surrounding whitespace (values are compared trimmed)".into());
    }
    Ok(())
}

/// Whether every request `b` matches is also matched by `a` (see [`validate_routes`]).
fn covers(a: &RouteConfig, b: &RouteConfig) -> bool {
    let host = match (&a.host, &b.host) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(a), Some(b)) => host_covers(a, b),
    };
    let b_prefix =
        b.path_prefix.clone().or_else(|| b.grpc_service.as_ref().map(|s| format!("/{s}/")));
    let path = match (&a.path_prefix, &b_prefix) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(p), Some(q)) => prefix_covers(p, q),
    };
    let service = match (&a.grpc_service, &b.grpc_service) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(a), Some(b)) => a == b,
    };
    let headers = a.headers.iter().all(|(name, value)| {
        b.headers.iter().any(|(n, v)| n.eq_ignore_ascii_case(name) && v == value)
    });
    host && path && service && headers
}

fn host_covers(a: &str, b: &str) -> bool {
    let (a, b) = (a.to_ascii_lowercase(), b.to_ascii_lowercase());
    match a.strip_prefix('*') {
        // `a` is `*.s`: `b` (a name or `*.t`) must end in `.s` with something before it.
        Some(suffix) => b.len() > suffix.len() && b.ends_with(suffix),
        None => a == b,
    }
}

/// Whether every path `q` matches on a segment boundary is matched by `p`.
fn prefix_covers(p: &str, q: &str) -> bool {
    q.starts_with(p) && (p.ends_with('/') || q.len() == p.len() || q.as_bytes()[p.len()] == b'/')
}

impl fmt::Display for RouteConfig {
    /// A short description for logs: `pool=api host=*.example.com path_prefix=/v1`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pool={}", self.pool)?;
        if let Some(h) = &self.host {
            write!(f, " host={h}")?;
        }
        if let Some(p) = &self.path_prefix {
            write!(f, " path_prefix={p}")?;
        }
        if let Some(s) = &self.grpc_service {
            write!(f, " grpc_service={s}")?;
        }
        for (n, v) in &self.headers {
            write!(f, " {n}={v}")?;
        }
        if let Some(c) = self.cache {
            write!(f, " cache={c}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(pool: &str) -> RouteConfig {
        RouteConfig { pool: pool.into(), ..RouteConfig::default() }
    }

    fn host(h: &str) -> RouteConfig {
        RouteConfig { host: Some(h.into()), ..route("api") }
    }

    fn prefix(p: &str) -> RouteConfig {
        RouteConfig { path_prefix: Some(p.into()), ..route("api") }
    }

    fn check(routes: &[RouteConfig]) -> Result<(), String> {
        validate_routes(routes, |p| p == "default" || p == "api").map_err(|e| e.to_string())
    }

    #[test]
    fn pool_names() {
        for ok in ["a", "api-v2", "A.b_c", &"x".repeat(64)] {
            assert_eq!(check_pool_name(ok), Ok(()), "{ok}");
        }
        for bad in ["", "a b", "a/b", "é", ".", "..", "-a", &"x".repeat(65)] {
            assert!(check_pool_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn each_matcher_is_validated_and_the_key_named() {
        let with_header = |n: &str, v: &str| RouteConfig {
            headers: [(n.to_owned(), v.to_owned())].into(),
            ..route("api")
        };
        for (r, key) in [
            (route("nope"), "routes[0].pool"),
            (host("*"), "routes[0].host"),
            (host("*."), "routes[0].host"),
            (host("a.com:80"), "routes[0].host"),
            (host("a..com"), "routes[0].host"),
            (host("a.com."), "routes[0].host"),
            (host("a b"), "routes[0].host"),
            (host("*.[::1]"), "routes[0].host"),
            (prefix("api"), "routes[0].path_prefix"),
            (prefix("/a?b"), "routes[0].path_prefix"),
            (prefix("/a b"), "routes[0].path_prefix"),
            (
                RouteConfig { grpc_service: Some("a/b".into()), ..route("api") },
                "routes[0].grpc_service",
            ),
            (
                RouteConfig { grpc_service: Some(String::new()), ..route("api") },
                "routes[0].grpc_service",
            ),
            (
                RouteConfig {
                    grpc_service: Some("a.B".into()),
                    path_prefix: Some("/other".into()),
                    ..route("api")
                },
                "routes[0].path_prefix",
            ),
            (with_header("x y", "1"), "routes[0].headers.x y"),
            (with_header("host", "a"), "routes[0].headers.host"),
            (with_header("x-a", "a\nb"), "routes[0].headers.x-a"),
            (with_header("x-a", " a"), "routes[0].headers.x-a"),
        ] {
            let err = check(std::slice::from_ref(&r)).unwrap_err();
            assert!(err.contains(&format!("`{key}`")), "{r:?}: {err}");
        }
        let twice = RouteConfig {
            headers: [("X-A".to_owned(), "1".to_owned()), ("x-a".to_owned(), "2".to_owned())]
                .into(),
            ..route("api")
        };
        assert!(check(&[twice]).unwrap_err().contains("routes[0].headers.x-a"));
        let many = RouteConfig {
            headers: (0..17).map(|i| (format!("x-{i}"), "1".to_owned())).collect(),
            ..route("api")
        };
        assert!(check(&[many]).unwrap_err().contains("routes[0].headers"));
        assert!(check(&vec![host("a.com"); MAX_ROUTES + 1]).unwrap_err().contains("`routes`"));
        for ok in [
            host("Example.COM"),
            host("*.example.com"),
            host("[::1]"),
            host("127.0.0.1"),
            prefix("/"),
            prefix("/api/"),
            RouteConfig {
                grpc_service: Some("pkg.Svc".into()),
                path_prefix: Some("/pkg.Svc/Get".into()),
                ..route("api")
            },
            with_header("x-canary", ""),
            with_header("x-canary", "a b"),
        ] {
            assert_eq!(check(std::slice::from_ref(&ok)), Ok(()), "{ok:?}");
        }
    }

    #[test]
    fn a_route_an_earlier_one_always_matches_is_refused() {
        let svc = |s: &str| RouteConfig { grpc_service: Some(s.into()), ..route("api") };
        let hdr = |pairs: &[(&str, &str)]| RouteConfig {
            headers: pairs.iter().map(|(n, v)| ((*n).to_owned(), (*v).to_owned())).collect(),
            ..route("api")
        };
        let both = |h: &str, p: &str| RouteConfig { host: Some(h.into()), ..prefix(p) };
        for (earlier, later) in [
            (route("api"), host("a.com")),
            (host("A.com"), host("a.COM")),
            (host("*.a.com"), host("x.a.com")),
            (host("*.a.com"), host("x.y.a.com")),
            (host("*.com"), host("*.a.com")),
            (host("*.a.com"), host("*.a.com")),
            (prefix("/api"), prefix("/api")),
            (prefix("/api"), prefix("/api/v1")),
            (prefix("/api"), prefix("/api/")),
            (prefix("/api/"), prefix("/api/v")),
            (prefix("/"), prefix("/x")),
            (prefix("/pkg.Svc"), svc("pkg.Svc")),
            (svc("a.B"), svc("a.B")),
            (hdr(&[("x-a", "1")]), hdr(&[("X-A", "1"), ("x-b", "2")])),
            (host("a.com"), both("a.com", "/x")),
            (prefix("/x"), both("a.com", "/x/y")),
        ] {
            let err = check(&[earlier.clone(), later.clone()]).unwrap_err();
            assert!(
                err.contains("`routes[1]`") && err.contains("routes[0]"),
                "{earlier:?} {later:?}: {err}"
            );
        }
        for (earlier, later) in [
            (host("a.com"), route("api")),
            (host("a.com"), host("b.com")),
            (host("*.a.com"), host("a.com")),
            (host("x.a.com"), host("*.a.com")),
            (prefix("/api"), prefix("/apix")),
            (prefix("/api/"), prefix("/api")),
            (prefix("/api/v1"), prefix("/api")),
            (svc("a.B"), svc("a.C")),
            (svc("a.B"), prefix("/a.B")),
            (hdr(&[("x-a", "1")]), hdr(&[("x-a", "2")])),
            (hdr(&[("x-a", "1"), ("x-b", "2")]), hdr(&[("x-a", "1")])),
            (both("a.com", "/x"), host("a.com")),
        ] {
            assert_eq!(check(&[earlier.clone(), later.clone()]), Ok(()), "{earlier:?} {later:?}");
        }
    }

    #[test]
    fn toml_form() {
        #[derive(Deserialize)]
        struct Doc {
            pools: Vec<BackendPoolConfig>,
            routes: Vec<RouteConfig>,
        }
        let doc: Doc = toml::from_str(
            r#"
            [[pools]]
            name = "api"
            algorithm = "least_connections"
            [[pools.backends]]
            url = "http://127.0.0.1:1"
            weight = 3

            [[routes]]
            pool = "api"
            host = "*.example.com"
            path_prefix = "/v1"
            headers = { x-canary = "1" }
            cache = false
            "#,
        )
        .unwrap();
        assert_eq!(doc.pools[0].algorithm, Algorithm::LeastConnections);
        assert_eq!(doc.pools[0].backends[0].weight, 3);
        assert_eq!(doc.routes[0].headers["x-canary"], "1");
        assert_eq!(doc.routes[0].cache, Some(false));
        assert!(toml::from_str::<Doc>("pools = []\n[[routes]]\npool = \"a\"\nport = 1").is_err());
        assert_eq!(
            doc.routes[0].to_string(),
            "pool=api host=*.example.com path_prefix=/v1 x-canary=1 cache=false"
        );
    }
}
