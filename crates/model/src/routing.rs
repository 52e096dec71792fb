//! Routes in the form the workers match with: a [`RouteTable`] compiled once per epoch on
//! `lb-control` from the configured [`RouteConfig`]s, and the per-request match that picks a
//! pool, run by each worker before the attempt loop.
//!
//! A request is presented as a [`RouteRequest`] (its host, its TLS SNI name when there is one,
//! its path) and a [`RequestFields`] view of its header fields, which only header and gRPC
//! matchers read. Matching allocates nothing: hosts are compared case-insensitively in place,
//! paths byte for byte, and a table without routes costs one branch.

use fulcrum_config::{RouteConfig, RouteError, validate_routes};

/// Where a request goes: a pool of the epoch, the route that chose it, and that route's cache
/// switch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Routed {
    /// Index of the pool in the epoch's pools (0 is `default`).
    pub pool: usize,
    /// Index of the matching route, or `None` for the fallback to `default`.
    pub route: Option<u32>,
    /// The route's `cache` setting (`None`: follow `cache.enabled`).
    pub cache: Option<bool>,
}

impl Routed {
    /// No route matched: the `default` pool.
    pub const FALLBACK: Routed = Routed { pool: 0, route: None, cache: None };
}

/// What the matchers read of a request besides its header fields.
///
/// The host is the `Host` field (HTTP/1.1; the authority of an absolute-form target wins over
/// it, RFC 9112 3.2.2) or `:authority` (HTTP/2); a route's `host` is matched against it without
/// its port, and against the TLS SNI name only when the request carries no host at all (a TLS
/// transport fills `sni` from the ClientHello; cleartext connections have none).
#[derive(Debug, Clone, Copy)]
pub struct RouteRequest<'a> {
    /// `Host` or `:authority` as received (`name[:port]`), if the request has one.
    pub authority: Option<&'a [u8]>,
    /// The server name the client asked for in its TLS handshake.
    pub sni: Option<&'a str>,
    /// The path as received, query included (`/a/b?q`).
    pub path: &'a [u8],
}

impl<'a> RouteRequest<'a> {
    /// The request of an HTTP/1.1 request target and `Host` field: an absolute-form target
    /// (`http://host/path`) supplies both host and path; any other form is the path.
    pub fn from_target(target: &'a [u8], host: Option<&'a [u8]>, sni: Option<&'a str>) -> Self {
        if target.first() != Some(&b'/')
            && let Some(at) = target.windows(3).position(|w| w == b"://")
        {
            let rest = &target[at + 3..];
            let end = rest.iter().position(|&b| b == b'/' || b == b'?').unwrap_or(rest.len());
            let path: &[u8] = if end == rest.len() { b"/" } else { &rest[end..] };
            return Self { authority: Some(&rest[..end]), sni, path };
        }
        Self { authority: host, sni, path: target }
    }

    /// The host a route's `host` is compared with: the authority without port and trailing
    /// dot, or the SNI name when there is no authority.
    fn host(&self) -> Option<&'a [u8]> {
        match self.authority.filter(|a| !a.is_empty()) {
            Some(authority) => Some(host_of(authority)),
            None => self.sni.map(|s| host_of(s.as_bytes())),
        }
    }
}

/// Strips the port (and a trailing dot) from `name[:port]` or `[v6][:port]`.
fn host_of(authority: &[u8]) -> &[u8] {
    let host = if authority.first() == Some(&b'[') {
        match authority.iter().position(|&b| b == b']') {
            Some(end) => &authority[..=end],
            None => authority,
        }
    } else {
        match authority.iter().position(|&b| b == b':') {
            Some(colon) => &authority[..colon],
            None => authority,
        }
    };
    host.strip_suffix(b".").unwrap_or(host)
}

/// A request's header fields, as the header and gRPC matchers read them; implemented by each
/// client protocol over what it already parsed.
pub trait RequestFields {
    /// Whether the request is a gRPC call (`content-type: application/grpc…`).
    fn is_grpc(&self) -> bool;
    /// Whether some field named `name` (lowercase) has exactly `value` once surrounding
    /// whitespace is trimmed.
    fn has(&self, name: &str, value: &[u8]) -> bool;
}

/// A route's `host`, lowercase.
#[derive(Debug, Clone)]
enum HostMatch {
    /// The whole host.
    Exact(Box<[u8]>),
    /// `*.suffix`: the host ends with this (`.suffix`) and has something before it.
    Suffix(Box<[u8]>),
}

impl HostMatch {
    #[inline]
    fn matches(&self, host: &[u8]) -> bool {
        match self {
            HostMatch::Exact(name) => host.eq_ignore_ascii_case(name),
            HostMatch::Suffix(suffix) => {
                host.len() > suffix.len()
                    && host[host.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
            }
        }
    }
}

/// A header matcher: a lowercase name and the exact value.
type HeaderMatch = (Box<str>, Box<[u8]>);

/// One compiled route.
#[derive(Debug, Clone)]
struct Route {
    pool: usize,
    index: u32,
    host: Option<HostMatch>,
    path_prefix: Option<Box<[u8]>>,
    grpc_service: Option<Box<[u8]>>,
    headers: Box<[HeaderMatch]>,
    cache: Option<bool>,
}

impl Route {
    fn compile(index: usize, config: &RouteConfig, pool: usize) -> Self {
        let host = config.host.as_deref().map(|h| {
            let h = h.to_ascii_lowercase();
            match h.strip_prefix('*') {
                Some(suffix) => HostMatch::Suffix(suffix.as_bytes().into()),
                None => HostMatch::Exact(h.as_bytes().into()),
            }
        });
        Route {
            pool,
            index: u32::try_from(index).unwrap_or(u32::MAX),
            host,
            path_prefix: config.path_prefix.as_deref().map(|p| p.as_bytes().into()),
            grpc_service: config.grpc_service.as_deref().map(|s| s.as_bytes().into()),
            headers: config
                .headers
                .iter()
                .map(|(n, v)| (n.to_ascii_lowercase().into(), v.as_bytes().into()))
                .collect(),
            cache: config.cache,
        }
    }

    #[inline]
    fn matches(&self, host: Option<&[u8]>, path: &[u8], fields: &impl RequestFields) -> bool {
        if let Some(want) = &self.host
            && !host.is_some_and(|h| want.matches(h))
        {
            return false;
        }
        if let Some(prefix) = &self.path_prefix
            && !prefix_matches(prefix, path)
        {
            return false;
        }
        if let Some(service) = &self.grpc_service
            && !(is_call_of(service, path) && fields.is_grpc())
        {
            return false;
        }
        self.headers.iter().all(|(name, value)| fields.has(name, value))
    }
}

/// `/api` matches `/api`, `/api/…` and `/api?…`; a prefix ending in `/` matches whatever
/// starts with it.
#[inline]
fn prefix_matches(prefix: &[u8], path: &[u8]) -> bool {
    path.starts_with(prefix)
        && (prefix.last() == Some(&b'/')
            || path.len() == prefix.len()
            || matches!(path[prefix.len()], b'/' | b'?'))
}

/// Whether `path` is `/<service>/<method>` (a method of one segment, no query).
#[inline]
fn is_call_of(service: &[u8], path: &[u8]) -> bool {
    let Some(rest) = path.strip_prefix(b"/").and_then(|p| p.strip_prefix(service)) else {
        return false;
    };
    match rest.strip_prefix(b"/") {
        Some(method) => !method.is_empty() && !method.iter().any(|&b| b == b'/' || b == b'?'),
        None => false,
    }
}

/// The ordered routes of one epoch, compiled against its pools, with the configuration they
/// came from (for the admin API and the state file).
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    routes: Box<[Route]>,
    configs: Vec<RouteConfig>,
}

impl RouteTable {
    /// Validates `configs` (see [`validate_routes`]) against the pool names in `pools` (index
    /// order; `default` first) and compiles them.
    pub fn compile(configs: Vec<RouteConfig>, pools: &[&str]) -> Result<Self, RouteError> {
        validate_routes(&configs, |name| pools.contains(&name))?;
        let routes = configs
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let pool = pools.iter().position(|p| *p == c.pool).unwrap_or(0);
                Route::compile(i, c, pool)
            })
            .collect();
        Ok(Self { routes, configs })
    }

    /// The routes as configured, in order.
    pub fn configs(&self) -> &[RouteConfig] {
        &self.configs
    }

    /// Whether there are no routes (every request goes to `default`).
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// Whether a route names the pool at `pool`.
    pub fn uses_pool(&self, pool: &str) -> Option<usize> {
        self.configs.iter().position(|c| c.pool == pool)
    }

    /// Whether some route turns the cache on for what it matches.
    pub fn forces_cache(&self) -> bool {
        self.routes.iter().any(|r| r.cache == Some(true))
    }

    /// The first route `request` matches, or the fallback to `default`. Reads header fields
    /// only for routes with header or gRPC matchers; never allocates.
    #[inline]
    pub fn route(&self, request: &RouteRequest<'_>, fields: &impl RequestFields) -> Routed {
        if self.routes.is_empty() {
            return Routed::FALLBACK;
        }
        let host = request.host();
        for r in self.routes.iter() {
            if r.matches(host, request.path, fields) {
                return Routed { pool: r.pool, route: Some(r.index), cache: r.cache };
            }
        }
        Routed::FALLBACK
    }
}

#[cfg(test)]
mod tests {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;

    use super::*;

    /// Counts this thread's allocations, so a test can assert a call made none.
    struct Counting;

    thread_local! {
        static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
    }

    // SAFETY: delegates to the system allocator; the counter is a const-initialised
    // thread-local `Cell` without destructor, whose access never allocates.
    #[allow(unsafe_code)]
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            ALLOCATIONS.with(|n| n.set(n.get() + 1));
            // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract.
            unsafe { System.alloc(layout) }
        }
        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            // SAFETY: the caller upholds `GlobalAlloc::dealloc`'s contract.
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    #[global_allocator]
    static ALLOCATOR: Counting = Counting;

    struct Fields<'a> {
        grpc: bool,
        headers: &'a [(&'a str, &'a str)],
    }

    impl RequestFields for Fields<'_> {
        fn is_grpc(&self) -> bool {
            self.grpc
        }
        fn has(&self, name: &str, value: &[u8]) -> bool {
            self.headers
                .iter()
                .any(|(n, v)| n.eq_ignore_ascii_case(name) && v.trim().as_bytes() == value)
        }
    }

    const NONE: Fields<'static> = Fields { grpc: false, headers: &[] };

    fn table(routes: &[RouteConfig]) -> RouteTable {
        RouteTable::compile(routes.to_vec(), &["default", "api", "web", "grpc"]).unwrap()
    }

    fn r(pool: &str) -> RouteConfig {
        RouteConfig { pool: pool.into(), ..RouteConfig::default() }
    }

    fn req<'a>(host: &'a str, path: &'a str) -> RouteRequest<'a> {
        RouteRequest::from_target(path.as_bytes(), Some(host.as_bytes()), None)
    }

    fn pool_of(t: &RouteTable, request: &RouteRequest<'_>, fields: &Fields<'_>) -> usize {
        t.route(request, fields).pool
    }

    #[test]
    fn host_exact_and_wildcard_without_port_ignoring_case() {
        let t = table(&[
            RouteConfig { host: Some("API.example.com".into()), ..r("api") },
            RouteConfig { host: Some("*.example.com".into()), ..r("web") },
            RouteConfig { host: Some("[::1]".into()), ..r("grpc") },
        ]);
        for (host, pool) in [
            ("api.example.com", 1),
            ("Api.Example.Com:8080", 1),
            ("api.example.com.", 1),
            ("www.example.com", 2),
            ("a.b.example.com:1", 2),
            ("example.com", 0),
            ("xexample.com", 0),
            ("[::1]:80", 3),
            ("[::1]", 3),
            ("", 0),
        ] {
            assert_eq!(pool_of(&t, &req(host, "/"), &NONE), pool, "{host}");
        }
        let hostless = RouteRequest::from_target(b"/", None, None);
        assert_eq!(t.route(&hostless, &NONE), Routed::FALLBACK);
    }

    #[test]
    fn sni_only_when_the_request_has_no_host() {
        let t = table(&[RouteConfig { host: Some("api.example.com".into()), ..r("api") }]);
        let sni = Some("api.example.com");
        let no_host = RouteRequest::from_target(b"/", None, sni);
        assert_eq!(pool_of(&t, &no_host, &NONE), 1);
        let other_host = RouteRequest::from_target(b"/", Some(b"www.example.com"), sni);
        assert_eq!(pool_of(&t, &other_host, &NONE), 0, "Host wins over SNI");
    }

    #[test]
    fn path_prefix_on_segment_boundaries() {
        let t = table(&[
            RouteConfig { path_prefix: Some("/api".into()), ..r("api") },
            RouteConfig { path_prefix: Some("/static/".into()), ..r("web") },
        ]);
        for (path, pool) in [
            ("/api", 1),
            ("/api/", 1),
            ("/api/v1/x", 1),
            ("/api?q=1", 1),
            ("/apix", 0),
            ("/ap", 0),
            ("/static/a.css", 2),
            ("/static", 0),
            ("/", 0),
            ("*", 0),
        ] {
            assert_eq!(pool_of(&t, &req("h", path), &NONE), pool, "{path}");
        }
    }

    #[test]
    fn absolute_form_targets_supply_host_and_path() {
        let t = table(&[RouteConfig {
            host: Some("a.com".into()),
            path_prefix: Some("/api".into()),
            ..r("api")
        }]);
        let abs = RouteRequest::from_target(b"http://A.com:80/api/x?y", Some(b"other"), None);
        assert_eq!(abs.path, b"/api/x?y");
        assert_eq!(pool_of(&t, &abs, &NONE), 1);
        let bare = RouteRequest::from_target(b"http://a.com", Some(b"other"), None);
        assert_eq!((bare.authority, bare.path), (Some(&b"a.com"[..]), &b"/"[..]));
        let query = RouteRequest::from_target(b"http://a.com?x", None, None);
        assert_eq!((query.authority, query.path), (Some(&b"a.com"[..]), &b"?x"[..]));
    }

    #[test]
    fn grpc_service_needs_a_grpc_call_to_one_of_its_methods() {
        let t = table(&[RouteConfig { grpc_service: Some("pkg.Echo".into()), ..r("grpc") }]);
        let grpc = Fields { grpc: true, headers: &[] };
        for (path, fields, pool) in [
            ("/pkg.Echo/Say", &grpc, 3),
            ("/pkg.Echo/Say", &NONE, 0),
            ("/pkg.Echo/", &grpc, 0),
            ("/pkg.Echo", &grpc, 0),
            ("/pkg.EchoX/Say", &grpc, 0),
            ("/pkg.Echo/Say/x", &grpc, 0),
            ("/other.Svc/Say", &grpc, 0),
        ] {
            assert_eq!(pool_of(&t, &req("h", path), fields), pool, "{path}");
        }
    }

    #[test]
    fn headers_exact_values_and_all_matchers_together() {
        let t = table(&[
            RouteConfig {
                host: Some("a.com".into()),
                path_prefix: Some("/v1".into()),
                headers: [("X-Canary".to_owned(), "yes".to_owned())].into(),
                ..r("web")
            },
            RouteConfig { headers: [("x-canary".to_owned(), "yes".to_owned())].into(), ..r("api") },
        ]);
        let canary = Fields { grpc: false, headers: &[("x-other", "1"), ("X-CANARY", " yes ")] };
        let wrong = Fields { grpc: false, headers: &[("x-canary", "Yes")] };
        assert_eq!(pool_of(&t, &req("a.com", "/v1/x"), &canary), 2);
        assert_eq!(pool_of(&t, &req("b.com", "/v1/x"), &canary), 1, "host differs: next route");
        assert_eq!(pool_of(&t, &req("a.com", "/v2"), &canary), 1, "path differs: next route");
        assert_eq!(pool_of(&t, &req("a.com", "/v1"), &wrong), 0, "values are case-sensitive");
        assert_eq!(pool_of(&t, &req("a.com", "/v1"), &NONE), 0);
    }

    #[test]
    fn first_match_wins_and_reports_its_index_and_cache_switch() {
        let t = table(&[
            RouteConfig { path_prefix: Some("/a".into()), cache: Some(false), ..r("api") },
            RouteConfig { host: Some("x.com".into()), cache: Some(true), ..r("web") },
        ]);
        let got = t.route(&req("x.com", "/a"), &NONE);
        assert_eq!(got, Routed { pool: 1, route: Some(0), cache: Some(false) });
        let got = t.route(&req("x.com", "/b"), &NONE);
        assert_eq!(got, Routed { pool: 2, route: Some(1), cache: Some(true) });
        assert_eq!(t.route(&req("y.com", "/b"), &NONE), Routed::FALLBACK);
        assert!(t.forces_cache());
        assert_eq!(t.uses_pool("web"), Some(1));
        assert_eq!(t.uses_pool("grpc"), None);
    }

    #[test]
    fn compile_refuses_what_validation_refuses() {
        let bad = RouteTable::compile(vec![r("nope")], &["default"]).unwrap_err();
        assert_eq!(bad.key, "routes[0].pool");
        let empty = RouteTable::compile(Vec::new(), &["default"]).unwrap();
        assert!(empty.is_empty());
        assert_eq!(empty.route(&req("a", "/"), &NONE), Routed::FALLBACK);
    }

    #[test]
    fn matching_never_allocates() {
        let mut routes: Vec<RouteConfig> = (0..20)
            .map(|i| RouteConfig {
                host: Some(format!("svc{i}.example.com")),
                path_prefix: Some(format!("/svc{i}")),
                ..r("api")
            })
            .collect();
        routes.push(RouteConfig {
            headers: [("x-a".to_owned(), "1".to_owned())].into(),
            grpc_service: Some("pkg.S".into()),
            ..r("grpc")
        });
        routes.push(RouteConfig { host: Some("*.example.com".into()), ..r("web") });
        let t = table(&routes);
        let fields = Fields { grpc: true, headers: &[("x-a", "1")] };
        let requests = [
            req("www.example.com:8080", "/index.html"),
            req("svc19.example.com", "/svc19/x"),
            req("h", "/pkg.S/M"),
            RouteRequest::from_target(b"http://a.example.com/x", None, None),
        ];
        let before = ALLOCATIONS.with(Cell::get);
        let pools: [usize; 4] = std::array::from_fn(|i| t.route(&requests[i], &fields).pool);
        assert_eq!(ALLOCATIONS.with(Cell::get), before, "route matching allocated");
        assert_eq!(pools, [2, 1, 3, 2]);
    }
}
