//! What may be served from and stored in the cache, and for how long.
//!
//! Requests ([`CacheRules::check_request`]): the method must be in `methods`; a request
//! carrying `Cache-Control: no-cache` or `no-store` (or the HTTP/1.0 `Pragma: no-cache`), an
//! `Upgrade` header, or a gRPC `Content-Type` (`application/grpc…`) bypasses the cache.
//!
//! `Authorization`: such a request is *not* bypassed. Its credentials are part of the key, so
//! only a request with byte-identical credentials can ever hit the entry. Following RFC 9111
//! §3.5, the response to it is stored only when the origin opted in with `public`,
//! `s-maxage` or `must-revalidate`. (A revoked credential can still be answered from the
//! cache until the entry expires; operators who cannot accept that keep the TTL short or
//! leave the route's responses without those directives.)
//!
//! Responses ([`CacheRules::check_response`]): the status must be in `statuses`; not stored
//! with `Cache-Control: no-store`, `private` (also the field-qualified `private="…"`),
//! `no-cache` (the cache never revalidates), `Vary: *`, any `Set-Cookie`, or a body above
//! `max_object_bytes`. Freshness is `s-maxage`, else `max-age`, capped by `ttl_ms`, else
//! `ttl_ms`; minus the upstream `Age`. A zero or invalid lifetime (`max-age=0`,
//! `max-age=soon`) means not stored. The first occurrence of a repeated directive wins.
//! `Expires` is not consulted.

use std::time::Duration;

use fulcrum_config::CachePolicy;

/// RFC 9111 §1.2.2: delta-seconds saturate at 2^31.
const MAX_DELTA_SECONDS: u64 = 1 << 31;

/// One `Cache-Control` directive: lowercase-insensitive name and optional value (quotes
/// removed, escapes left as sent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Directive<'a> {
    /// Directive name as sent; compare with `eq_ignore_ascii_case`.
    pub name: &'a [u8],
    /// The value after `=`, without surrounding quotes.
    pub value: Option<&'a [u8]>,
}

impl Directive<'_> {
    /// Whether the directive has this (lowercase) name, ignoring case.
    pub fn is(&self, name: &str) -> bool {
        self.name.eq_ignore_ascii_case(name.as_bytes())
    }
}

/// Iterator over the directives of one `Cache-Control` field value.
///
/// Robust to empty list elements, optional whitespace, any letter case and quoted values
/// containing commas or escaped quotes (`private="a, b"`, `x="\""`).
#[derive(Debug, Clone)]
pub struct Directives<'a> {
    rest: &'a [u8],
}

/// Splits a `Cache-Control` field value into directives.
pub fn directives(value: &[u8]) -> Directives<'_> {
    Directives { rest: value }
}

impl<'a> Iterator for Directives<'a> {
    type Item = Directive<'a>;

    fn next(&mut self) -> Option<Directive<'a>> {
        loop {
            let s = self.rest.trim_ascii_start();
            if s.is_empty() {
                self.rest = s;
                return None;
            }
            let name_end = s.iter().position(|&c| c == b',' || c == b'=').unwrap_or(s.len());
            let name = s[..name_end].trim_ascii();
            let mut rest = &s[name_end..];
            let mut value = None;
            if let Some(after_eq) = rest.strip_prefix(b"=") {
                let v = after_eq.trim_ascii_start();
                if let Some(quoted) = v.strip_prefix(b"\"") {
                    let end = closing_quote(quoted);
                    value = Some(&quoted[..end]);
                    rest = quoted.get(end + 1..).unwrap_or(&[]);
                    // Skip anything up to the next comma (malformed trailing junk).
                    let comma = rest.iter().position(|&c| c == b',').unwrap_or(rest.len());
                    rest = &rest[comma..];
                } else {
                    let end = v.iter().position(|&c| c == b',').unwrap_or(v.len());
                    value = Some(v[..end].trim_ascii());
                    rest = &v[end..];
                }
            }
            self.rest = rest.strip_prefix(b",").unwrap_or(rest);
            if !name.is_empty() {
                return Some(Directive { name, value });
            }
        }
    }
}

/// Index of the closing quote of a quoted string (after the opening quote), honouring
/// backslash escapes; the length if unterminated.
fn closing_quote(s: &[u8]) -> usize {
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'\\' => i += 2,
            b'"' => return i,
            _ => i += 1,
        }
    }
    s.len()
}

/// Parses delta-seconds (digits only, saturating at 2^31); `None` when invalid.
pub fn delta_seconds(v: &[u8]) -> Option<u64> {
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(v.iter().fold(0u64, |acc, &d| {
        acc.saturating_mul(10).saturating_add(u64::from(d - b'0')).min(MAX_DELTA_SECONDS)
    }))
}

/// The verdict on a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestDecision {
    /// Look it up; on a miss, consider storing the response.
    Cacheable {
        /// The request carries `Authorization`: pass this to [`CachePolicy::check_response`].
        authorized: bool,
    },
    /// Neither served from nor stored in the cache (`X-Cache: BYPASS`).
    Bypass(BypassReason),
}

/// Why a request bypasses the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BypassReason {
    /// The cache is switched off.
    Disabled,
    /// The method is not in `methods`.
    Method,
    /// `Cache-Control: no-cache` or `Pragma: no-cache`.
    NoCache,
    /// `Cache-Control: no-store`.
    NoStore,
    /// A gRPC request (never cached).
    Grpc,
    /// A protocol upgrade request.
    Upgrade,
}

impl BypassReason {
    /// A short lowercase label for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            BypassReason::Disabled => "disabled",
            BypassReason::Method => "method",
            BypassReason::NoCache => "no-cache",
            BypassReason::NoStore => "no-store",
            BypassReason::Grpc => "grpc",
            BypassReason::Upgrade => "upgrade",
        }
    }
}

/// The verdict on a response to a cacheable request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseDecision {
    /// Store it.
    Store {
        /// How long it stays fresh from now (already reduced by `age`).
        fresh_for: Duration,
        /// The upstream `Age` at reception; added to the resident time in the hit's `Age`.
        age: Duration,
    },
    /// Forward it, do not store it.
    Skip(SkipReason),
}

/// Why a response is not stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipReason {
    /// The status is not in `statuses`.
    Status,
    /// `Cache-Control: no-store`.
    NoStore,
    /// `Cache-Control: private`.
    Private,
    /// `Cache-Control: no-cache` (would need revalidation on every use).
    NoCache,
    /// A `Set-Cookie` header.
    SetCookie,
    /// `Vary: *`.
    VaryStar,
    /// The request carried `Authorization` and the response did not opt in.
    Authorization,
    /// Freshness lifetime zero, already used up by `Age`, or invalid.
    Stale,
    /// The body is larger than `max_object_bytes`.
    TooLarge,
}

impl SkipReason {
    /// A short lowercase label for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::Status => "status",
            SkipReason::NoStore => "no-store",
            SkipReason::Private => "private",
            SkipReason::NoCache => "no-cache",
            SkipReason::SetCookie => "set-cookie",
            SkipReason::VaryStar => "vary",
            SkipReason::Authorization => "authorization",
            SkipReason::Stale => "stale",
            SkipReason::TooLarge => "too-large",
        }
    }
}

/// Flags gathered from a response's `Cache-Control` lines.
#[derive(Debug, Default)]
struct ResponseDirectives {
    no_store: bool,
    private: bool,
    no_cache: bool,
    public: bool,
    must_revalidate: bool,
    /// First `s-maxage`: `Some(None)` when present but invalid.
    s_maxage: Option<Option<u64>>,
    /// First `max-age`: `Some(None)` when present but invalid.
    max_age: Option<Option<u64>>,
}

impl ResponseDirectives {
    fn add(&mut self, d: Directive<'_>) {
        let seconds = || d.value.and_then(delta_seconds);
        if d.is("no-store") {
            self.no_store = true;
        } else if d.is("private") {
            self.private = true;
        } else if d.is("no-cache") {
            self.no_cache = true;
        } else if d.is("public") {
            self.public = true;
        } else if d.is("must-revalidate") || d.is("proxy-revalidate") {
            self.must_revalidate = true;
        } else if d.is("s-maxage") {
            self.s_maxage.get_or_insert_with(seconds);
        } else if d.is("max-age") {
            self.max_age.get_or_insert_with(seconds);
        }
    }
}

/// The cache's rules over its settings: what may be served from and stored in the cache.
/// (The settings are plain data in the config layer; the rules are the cache's.)
pub trait CacheRules {
    /// Whether `method` is in the configured list (exact match: methods are case-sensitive).
    fn allows_method(&self, method: &str) -> bool;
    /// Whether `status` is in the configured list.
    fn allows_status(&self, status: u16) -> bool;
    /// Decides whether a request may be served from (and its response stored in) the cache.
    fn check_request<'h>(
        &self,
        method: &str,
        headers: impl Iterator<Item = (&'h str, &'h [u8])>,
    ) -> RequestDecision;
    /// Decides whether a response to a cacheable request is stored, and for how long.
    ///
    /// `body_len` is the body size when known up front (`Content-Length`); with `None`
    /// (chunked, until close) the caller must stop buffering, and not store, once the body
    /// grows past `max_object_bytes` (see [`CacheRules::fits`]).
    fn check_response<'h>(
        &self,
        authorized: bool,
        status: u16,
        headers: impl Iterator<Item = (&'h str, &'h [u8])>,
        body_len: Option<u64>,
    ) -> ResponseDecision;
    /// Whether a body of `len` bytes may be stored (`len ≤ max_object_bytes`).
    fn fits(&self, len: u64) -> bool;
}

impl CacheRules for CachePolicy {
    fn allows_method(&self, method: &str) -> bool {
        self.methods.iter().any(|m| m == method)
    }

    fn allows_status(&self, status: u16) -> bool {
        self.statuses.contains(&status)
    }

    fn check_request<'h>(
        &self,
        method: &str,
        headers: impl Iterator<Item = (&'h str, &'h [u8])>,
    ) -> RequestDecision {
        if !self.enabled {
            return RequestDecision::Bypass(BypassReason::Disabled);
        }
        if !self.allows_method(method) {
            return RequestDecision::Bypass(BypassReason::Method);
        }
        let mut authorized = false;
        for (name, value) in headers {
            if name.eq_ignore_ascii_case("cache-control") {
                for d in directives(value) {
                    if d.is("no-store") {
                        return RequestDecision::Bypass(BypassReason::NoStore);
                    }
                    if d.is("no-cache") {
                        return RequestDecision::Bypass(BypassReason::NoCache);
                    }
                }
            } else if name.eq_ignore_ascii_case("pragma") {
                if directives(value).any(|d| d.is("no-cache")) {
                    return RequestDecision::Bypass(BypassReason::NoCache);
                }
            } else if name.eq_ignore_ascii_case("content-type") {
                let v = value.trim_ascii();
                let grpc = b"application/grpc";
                if v.len() >= grpc.len() && v[..grpc.len()].eq_ignore_ascii_case(grpc) {
                    return RequestDecision::Bypass(BypassReason::Grpc);
                }
            } else if name.eq_ignore_ascii_case("upgrade") {
                return RequestDecision::Bypass(BypassReason::Upgrade);
            } else if name.eq_ignore_ascii_case("authorization") {
                authorized = true;
            }
        }
        RequestDecision::Cacheable { authorized }
    }

    fn check_response<'h>(
        &self,
        authorized: bool,
        status: u16,
        headers: impl Iterator<Item = (&'h str, &'h [u8])>,
        body_len: Option<u64>,
    ) -> ResponseDecision {
        use ResponseDecision::Skip;
        if !self.allows_status(status) {
            return Skip(SkipReason::Status);
        }
        if body_len.is_some_and(|n| !self.fits(n)) {
            return Skip(SkipReason::TooLarge);
        }
        let mut cc = ResponseDirectives::default();
        let mut age = 0u64;
        for (name, value) in headers {
            if name.eq_ignore_ascii_case("cache-control") {
                directives(value).for_each(|d| cc.add(d));
            } else if name.eq_ignore_ascii_case("set-cookie") {
                return Skip(SkipReason::SetCookie);
            } else if name.eq_ignore_ascii_case("vary") {
                if value.split(|&c| c == b',').any(|t| t.trim_ascii() == b"*") {
                    return Skip(SkipReason::VaryStar);
                }
            } else if name.eq_ignore_ascii_case("age") {
                // An invalid Age is ignored (RFC 9111 §5.1).
                age = age.max(delta_seconds(value.trim_ascii()).unwrap_or(0));
            }
        }
        if cc.no_store {
            return Skip(SkipReason::NoStore);
        }
        if cc.private {
            return Skip(SkipReason::Private);
        }
        if cc.no_cache {
            return Skip(SkipReason::NoCache);
        }
        if authorized && !(cc.public || cc.must_revalidate || cc.s_maxage.is_some()) {
            return Skip(SkipReason::Authorization);
        }
        let ttl = self.ttl();
        let lifetime = match cc.s_maxage.or(cc.max_age) {
            Some(Some(secs)) => Duration::from_secs(secs).min(ttl),
            Some(None) => return Skip(SkipReason::Stale),
            None => ttl,
        };
        let age = Duration::from_secs(age);
        let fresh_for = lifetime.saturating_sub(age);
        if fresh_for.is_zero() {
            return Skip(SkipReason::Stale);
        }
        ResponseDecision::Store { fresh_for, age }
    }

    fn fits(&self, len: u64) -> bool {
        len <= self.max_object_bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn on() -> CachePolicy {
        CachePolicy { enabled: true, ..CachePolicy::default() }
    }

    fn req(p: &CachePolicy, method: &str, headers: &[(&str, &str)]) -> RequestDecision {
        p.check_request(method, headers.iter().map(|(n, v)| (*n, v.as_bytes())))
    }

    fn resp(status: u16, headers: &[(&str, &str)]) -> ResponseDecision {
        resp_with(&on(), false, status, headers, Some(10))
    }

    fn resp_with(
        p: &CachePolicy,
        authorized: bool,
        status: u16,
        headers: &[(&str, &str)],
        len: Option<u64>,
    ) -> ResponseDecision {
        p.check_response(authorized, status, headers.iter().map(|(n, v)| (*n, v.as_bytes())), len)
    }

    fn store(secs: u64) -> ResponseDecision {
        ResponseDecision::Store { fresh_for: Duration::from_secs(secs), age: Duration::ZERO }
    }

    fn names(v: &str) -> Vec<(String, Option<String>)> {
        directives(v.as_bytes())
            .map(|d| {
                let s = |b: &[u8]| String::from_utf8(b.to_vec()).unwrap();
                (s(d.name), d.value.map(s))
            })
            .collect()
    }

    #[test]
    fn parses_cache_control_lists() {
        let o = |s: &str| Some(s.to_owned());
        assert_eq!(
            names(
                " Max-Age=60 ,, no-store,private=\"set-cookie, x\" , s-maxage = \"30\",x=\"a\\\"b,c\" ,public"
            ),
            vec![
                ("Max-Age".to_owned(), o("60")),
                ("no-store".to_owned(), None),
                ("private".to_owned(), o("set-cookie, x")),
                ("s-maxage".to_owned(), o("30")),
                ("x".to_owned(), o("a\\\"b,c")),
                ("public".to_owned(), None),
            ]
        );
        assert!(names("").is_empty());
        assert!(names(" , ,").is_empty());
        assert_eq!(names("a=\"unterminated, b"), vec![("a".to_owned(), o("unterminated, b"))]);
        assert_eq!(names("a=\"q\"junk, b"), vec![("a".to_owned(), o("q")), ("b".to_owned(), None)]);
    }

    #[test]
    fn delta_seconds_is_strict_and_saturates() {
        assert_eq!(delta_seconds(b"60"), Some(60));
        assert_eq!(delta_seconds(b"0"), Some(0));
        assert_eq!(delta_seconds(b"99999999999999999999999"), Some(1 << 31));
        assert_eq!(delta_seconds(b""), None);
        assert_eq!(delta_seconds(b"-1"), None);
        assert_eq!(delta_seconds(b"1.5"), None);
    }

    #[test]
    fn request_eligibility() {
        let p = on();
        let ok = RequestDecision::Cacheable { authorized: false };
        assert_eq!(req(&p, "GET", &[("Host", "h")]), ok);
        assert_eq!(req(&p, "HEAD", &[]), ok);
        assert_eq!(req(&p, "POST", &[("Content-Type", "application/json")]), ok);
        assert_eq!(req(&p, "PUT", &[]), RequestDecision::Bypass(BypassReason::Method));
        assert_eq!(req(&p, "get", &[]), RequestDecision::Bypass(BypassReason::Method));
        let off = CachePolicy::default();
        assert_eq!(req(&off, "GET", &[]), RequestDecision::Bypass(BypassReason::Disabled));
        let nc = RequestDecision::Bypass(BypassReason::NoCache);
        assert_eq!(req(&p, "GET", &[("cache-control", "max-age=5, No-Cache")]), nc);
        assert_eq!(req(&p, "GET", &[("Pragma", "no-cache")]), nc);
        let ns = RequestDecision::Bypass(BypassReason::NoStore);
        assert_eq!(req(&p, "GET", &[("Cache-Control", "NO-STORE")]), ns);
        // Other request directives do not bypass.
        assert_eq!(req(&p, "GET", &[("Cache-Control", "max-age=0")]), ok);
        let grpc = RequestDecision::Bypass(BypassReason::Grpc);
        assert_eq!(req(&p, "POST", &[("content-type", "application/grpc+proto")]), grpc);
        let up = RequestDecision::Bypass(BypassReason::Upgrade);
        assert_eq!(req(&p, "GET", &[("Upgrade", "websocket")]), up);
        assert_eq!(
            req(&p, "GET", &[("Authorization", "Bearer x")]),
            RequestDecision::Cacheable { authorized: true }
        );
        let custom = CachePolicy { methods: vec!["GET".into()], ..on() };
        assert_eq!(req(&custom, "POST", &[]), RequestDecision::Bypass(BypassReason::Method));
    }

    #[test]
    fn response_storability() {
        assert_eq!(resp(200, &[("Content-Type", "text/plain")]), store(60));
        for s in [203, 204, 301, 404, 410] {
            assert_eq!(resp(s, &[]), store(60), "{s}");
        }
        for s in [201, 206, 302, 500, 503] {
            assert_eq!(resp(s, &[]), ResponseDecision::Skip(SkipReason::Status), "{s}");
        }
        let skip = |r| ResponseDecision::Skip(r);
        assert_eq!(resp(200, &[("Cache-Control", "public, No-Store")]), skip(SkipReason::NoStore));
        assert_eq!(resp(200, &[("cache-control", "private")]), skip(SkipReason::Private));
        assert_eq!(
            resp(200, &[("cache-control", "private=\"x-user\"")]),
            skip(SkipReason::Private)
        );
        assert_eq!(resp(200, &[("cache-control", "no-cache")]), skip(SkipReason::NoCache));
        assert_eq!(resp(200, &[("Set-Cookie", "a=b")]), skip(SkipReason::SetCookie));
        assert_eq!(resp(200, &[("Vary", "accept, *")]), skip(SkipReason::VaryStar));
        assert_eq!(resp(200, &[("Vary", "accept")]), store(60));
        // Directives split over several lines still count.
        assert_eq!(
            resp(200, &[("Cache-Control", "max-age=10"), ("Cache-Control", "private")]),
            skip(SkipReason::Private)
        );
    }

    #[test]
    fn freshness() {
        assert_eq!(resp(200, &[("Cache-Control", "max-age=10")]), store(10));
        assert_eq!(resp(200, &[("Cache-Control", "max-age=\"10\"")]), store(10));
        assert_eq!(resp(200, &[("Cache-Control", "max-age=600")]), store(60), "capped by ttl");
        assert_eq!(resp(200, &[("Cache-Control", "max-age=10, s-maxage=20")]), store(20));
        assert_eq!(resp(200, &[("Cache-Control", "s-maxage=5,max-age=20")]), store(5));
        assert_eq!(resp(200, &[("Cache-Control", "max-age=10, max-age=30")]), store(10));
        let stale = ResponseDecision::Skip(SkipReason::Stale);
        assert_eq!(resp(200, &[("Cache-Control", "max-age=0")]), stale);
        assert_eq!(resp(200, &[("Cache-Control", "s-maxage=0, max-age=30")]), stale);
        assert_eq!(resp(200, &[("Cache-Control", "max-age=soon")]), stale);
        assert_eq!(resp(200, &[("Cache-Control", "max-age")]), stale);
        // Upstream Age is subtracted and reported.
        assert_eq!(
            resp(200, &[("Cache-Control", "max-age=30"), ("Age", "12")]),
            ResponseDecision::Store {
                fresh_for: Duration::from_secs(18),
                age: Duration::from_secs(12)
            }
        );
        assert_eq!(resp(200, &[("Cache-Control", "max-age=30"), ("Age", "30")]), stale);
        assert_eq!(resp(200, &[("Age", "bogus")]), store(60));
        let short = CachePolicy { ttl_ms: 1500, ..on() };
        assert_eq!(
            resp_with(&short, false, 200, &[], None),
            ResponseDecision::Store { fresh_for: Duration::from_millis(1500), age: Duration::ZERO }
        );
    }

    #[test]
    fn authorization_needs_an_opt_in() {
        let p = on();
        let skip = ResponseDecision::Skip(SkipReason::Authorization);
        assert_eq!(resp_with(&p, true, 200, &[], Some(1)), skip);
        assert_eq!(resp_with(&p, true, 200, &[("Cache-Control", "max-age=5")], Some(1)), skip);
        for cc in ["public", "must-revalidate", "s-maxage=30"] {
            let d = resp_with(&p, true, 200, &[("Cache-Control", cc)], Some(1));
            assert!(matches!(d, ResponseDecision::Store { .. }), "{cc}");
        }
        // private still wins over public.
        let d = resp_with(&p, true, 200, &[("Cache-Control", "public, private")], Some(1));
        assert_eq!(d, ResponseDecision::Skip(SkipReason::Private));
    }

    #[test]
    fn object_size_limit() {
        let p = CachePolicy { max_object_bytes: 100, ..on() };
        assert_eq!(resp_with(&p, false, 200, &[], Some(100)), store(60));
        assert_eq!(
            resp_with(&p, false, 200, &[], Some(101)),
            ResponseDecision::Skip(SkipReason::TooLarge)
        );
        assert_eq!(resp_with(&p, false, 200, &[], None), store(60));
        assert!(p.fits(100) && !p.fits(101));
    }

    #[test]
    fn labels() {
        assert_eq!(BypassReason::NoStore.as_str(), "no-store");
        assert_eq!(SkipReason::SetCookie.as_str(), "set-cookie");
    }
}
