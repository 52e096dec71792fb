//! The cache key: a SHA-256 digest of a request's canonical key material.
//!
//! The material is, in order, a version tag, the method, the path with query, every end-to-end
//! request header and the full body. Every variable-length field is prefixed by its length (a
//! little-endian `u64`) and every header record and the body record by a one-byte tag, so the
//! encoding is prefix-free: two different requests never produce the same material (`a: bc`
//! and `ab: c` differ in the name length). Two requests hit the same entry only if their
//! material is identical or SHA-256 collides; a 256-bit digest is what the issue asks for
//! instead of comparing the material itself.
//!
//! Canonicalisation:
//! - header names are lowercased (names are case-insensitive);
//! - hop-by-hop headers are left out: `connection` and every header it names, `keep-alive`,
//!   `proxy-connection`, `te`, `trailer`, `transfer-encoding`, `upgrade`,
//!   `proxy-authorization` and `proxy-authenticate`;
//! - headers named in the configured ignore list are left out (case-insensitive);
//! - distinct names are sorted, so their order on the wire is irrelevant, while repeated
//!   lines of one name keep their relative order (`accept: a` then `accept: b` differs from
//!   the reverse);
//! - the method, path and header values are taken byte for byte (methods are case-sensitive).

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};

use fulcrum_http::h1::hop::is_hop_field;
use sha2::{Digest, Sha256};

/// Version tag at the start of the material; bump it when the encoding changes.
const DOMAIN: &[u8] = b"fulcrum-cache-key-v1";
/// Record tag of one header line.
const TAG_HEADER: u8 = b'H';
/// Record tag of the body (always the last record).
const TAG_BODY: u8 = b'B';

/// A 256-bit digest identifying a request's key material.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct CacheKey([u8; 32]);

impl CacheKey {
    /// Computes the key of a request from its parsed pieces.
    ///
    /// Allocates one small scratch vector; a worker computing many keys should keep a
    /// [`KeyBuilder`] and call [`KeyBuilder::compute`] instead.
    pub fn compute<'h>(
        method: &str,
        path: &str,
        headers: impl Iterator<Item = (&'h str, &'h [u8])>,
        body: &[u8],
        ignore: &[String],
    ) -> CacheKey {
        KeyBuilder::new().compute(method, path, headers, body, ignore)
    }

    /// Wraps a raw digest (tests and tools).
    pub const fn from_bytes(bytes: [u8; 32]) -> CacheKey {
        CacheKey(bytes)
    }

    /// The raw digest.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Two 64-bit words of the digest, for the shard's keyed hash.
    pub(crate) fn words(&self) -> (u64, u64) {
        let mut a = [0u8; 8];
        let mut b = [0u8; 8];
        a.copy_from_slice(&self.0[..8]);
        b.copy_from_slice(&self.0[8..16]);
        (u64::from_le_bytes(a), u64::from_le_bytes(b))
    }
}

impl Hash for CacheKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // The digest is already uniform: feed two words, no length prefix (see shard's hasher).
        let (a, b) = self.words();
        state.write_u64(a);
        state.write_u64(b);
    }
}

impl fmt::Debug for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CacheKey({self})")
    }
}

impl fmt::Display for CacheKey {
    /// Lowercase hex of the digest.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in &self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// One collected header line: name, value and its position on the wire.
type Line<'h> = (&'h str, &'h [u8], u32);

/// Per-worker key computer holding a reusable scratch vector (no allocation per request once
/// the vector has grown to the largest header count seen).
#[derive(Debug, Default)]
pub struct KeyBuilder {
    /// Always empty between calls; only its allocation is reused.
    scratch: Vec<Line<'static>>,
    /// The material of headers, method and path, hashed in one call (small `update` calls
    /// cost more than the copy).
    material: Vec<u8>,
}

impl KeyBuilder {
    /// An empty builder.
    pub fn new() -> KeyBuilder {
        KeyBuilder { scratch: Vec::new(), material: Vec::new() }
    }

    /// Computes the key of a request; see the module documentation for the canonical form.
    pub fn compute<'h>(
        &mut self,
        method: &str,
        path: &str,
        headers: impl Iterator<Item = (&'h str, &'h [u8])>,
        body: &[u8],
        ignore: &[String],
    ) -> CacheKey {
        let mut lines: Vec<Line<'h>> = recycle(std::mem::take(&mut self.scratch));
        lines.extend(headers.enumerate().map(|(i, (n, v))| (n, v, i as u32)));
        // Unstable sort with the wire position as tie-break: stable semantics, no allocation.
        lines.sort_unstable_by(|a, b| cmp_ignore_case(a.0, b.0).then(a.2.cmp(&b.2)));

        let m = &mut self.material;
        m.clear();
        m.extend_from_slice(DOMAIN);
        field(m, method.as_bytes());
        field(m, path.as_bytes());
        let conn = connection_lines(&lines);
        for &(name, value, _) in &lines {
            if excluded(name, conn, ignore) {
                continue;
            }
            m.push(TAG_HEADER);
            m.extend_from_slice(&(name.len() as u64).to_le_bytes());
            m.extend(name.bytes().map(|c| c.to_ascii_lowercase()));
            field(m, value);
        }
        m.push(TAG_BODY);
        m.extend_from_slice(&(body.len() as u64).to_le_bytes());
        let mut h = Sha256::new();
        h.update(&*m);
        h.update(body);

        lines.clear();
        self.scratch = recycle(lines);
        CacheKey(h.finalize().into())
    }
}

/// Reuses a vector's allocation for another lifetime of the same element type (the vector is
/// empty; in-place collection keeps the buffer because the layouts are identical).
#[expect(
    clippy::unnecessary_filter_map,
    reason = "filter_map to an empty iterator changes the element lifetime; filter cannot"
)]
fn recycle<'a, 'b>(v: Vec<Line<'a>>) -> Vec<Line<'b>> {
    v.into_iter().filter_map(|_| None).collect()
}

/// Appends a length-prefixed field.
fn field(m: &mut Vec<u8>, bytes: &[u8]) {
    m.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
    m.extend_from_slice(bytes);
}

/// Compares two header names as if both were lowercased.
fn cmp_ignore_case(a: &str, b: &str) -> Ordering {
    let a = a.bytes().map(|c| c.to_ascii_lowercase());
    let b = b.bytes().map(|c| c.to_ascii_lowercase());
    a.cmp(b)
}

/// The `Connection` lines of a sorted line list (contiguous because of the sort).
fn connection_lines<'a, 'h>(sorted: &'a [Line<'h>]) -> &'a [Line<'h>] {
    let start = sorted.partition_point(|l| cmp_ignore_case(l.0, "connection") == Ordering::Less);
    let len = sorted[start..].iter().take_while(|l| l.0.eq_ignore_ascii_case("connection")).count();
    &sorted[start..start + len]
}

/// Whether a header line stays out of the key: hop-by-hop (by the forwarder's own rule, so
/// that every field a backend receives is in the key) or ignored.
fn excluded(name: &str, connection: &[Line<'_>], ignore: &[String]) -> bool {
    is_hop_field(name.as_bytes(), connection.iter().map(|l| l.1))
        || ignore.iter().any(|i| name.eq_ignore_ascii_case(i.trim()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> CacheKey {
        key_ignoring(method, path, headers, body, &[])
    }

    fn key_ignoring(
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        ignore: &[String],
    ) -> CacheKey {
        let it = headers.iter().map(|(n, v)| (*n, v.as_bytes()));
        CacheKey::compute(method, path, it, body, ignore)
    }

    const BASE: &[(&str, &str)] =
        &[("Host", "example.test"), ("Accept", "application/json"), ("X-Tenant", "a")];

    fn base() -> CacheKey {
        key("POST", "/q?x=1", BASE, b"{\"q\":1}")
    }

    #[test]
    fn identical_requests_share_a_key() {
        assert_eq!(base(), base());
    }

    #[test]
    fn each_component_changes_the_key() {
        let b = base();
        assert_ne!(b, key("GET", "/q?x=1", BASE, b"{\"q\":1}"), "method");
        assert_ne!(b, key("POST", "/r?x=1", BASE, b"{\"q\":1}"), "path");
        assert_ne!(b, key("POST", "/q?x=2", BASE, b"{\"q\":1}"), "query");
        assert_ne!(b, key("POST", "/q", BASE, b"{\"q\":1}"), "query removed");
        let changed = [("Host", "example.test"), ("Accept", "application/json"), ("X-Tenant", "b")];
        assert_ne!(b, key("POST", "/q?x=1", &changed, b"{\"q\":1}"), "header value");
        let mut added = BASE.to_vec();
        added.push(("X-Extra", ""));
        assert_ne!(b, key("POST", "/q?x=1", &added, b"{\"q\":1}"), "header added");
        assert_ne!(b, key("POST", "/q?x=1", &BASE[..2], b"{\"q\":1}"), "header removed");
        assert_ne!(b, key("POST", "/q?x=1", BASE, b"{\"q\":2}"), "body byte");
        assert_ne!(b, key("POST", "/q?x=1", BASE, b"{\"q\":1} "), "body byte added");
        assert_ne!(b, key("POST", "/q?x=1", BASE, b""), "body removed");
    }

    #[test]
    fn length_prefixes_keep_field_boundaries() {
        assert_ne!(key("GET", "/", &[("a", "bc")], b""), key("GET", "/", &[("ab", "c")], b""));
        assert_ne!(key("GE", "T/", &[], b""), key("GET", "/", &[], b""));
        assert_ne!(key("GET", "/", &[("a", "b")], b""), key("GET", "/", &[], b"a"));
        // An empty header is not the same as no header.
        assert_ne!(key("GET", "/", &[("a", "")], b""), key("GET", "/", &[], b""));
    }

    #[test]
    fn header_order_and_name_case_do_not_matter() {
        let shuffled =
            [("x-tenant", "a"), ("HOST", "example.test"), ("accept", "application/json")];
        assert_eq!(base(), key("POST", "/q?x=1", &shuffled, b"{\"q\":1}"));
    }

    #[test]
    fn header_value_case_matters() {
        let upper = [("Host", "example.test"), ("Accept", "application/json"), ("X-Tenant", "A")];
        assert_ne!(base(), key("POST", "/q?x=1", &upper, b"{\"q\":1}"));
    }

    #[test]
    fn repeated_values_keep_their_order() {
        let ab = key("GET", "/", &[("Accept", "a"), ("Host", "h"), ("accept", "b")], b"");
        let ba = key("GET", "/", &[("accept", "b"), ("Host", "h"), ("Accept", "a")], b"");
        let ab2 = key("GET", "/", &[("Host", "h"), ("accept", "a"), ("ACCEPT", "b")], b"");
        assert_ne!(ab, ba);
        assert_eq!(ab, ab2);
    }

    #[test]
    fn hop_by_hop_headers_are_left_out() {
        let plain = key("GET", "/", &[("Host", "h")], b"");
        let hop = [
            ("Host", "h"),
            ("Connection", "keep-alive, X-Hop"),
            ("Keep-Alive", "timeout=5"),
            ("X-Hop", "1"),
            ("TE", "trailers"),
            ("Proxy-Authorization", "Basic Zm9v"),
            ("Upgrade", "h2c"),
            ("Transfer-Encoding", "chunked"),
            ("Trailer", "x"),
            ("Proxy-Connection", "close"),
        ];
        assert_eq!(plain, key("GET", "/", &hop, b""));
        // Without the Connection line, X-Hop is end-to-end.
        assert_ne!(plain, key("GET", "/", &[("Host", "h"), ("X-Hop", "1")], b""));
    }

    /// fuzz/regressions/cache_key/cache_key-33fc7738...: the request had a `Connection: hok`
    /// line and four `x-fuzz-hop-0` lines that no `Connection` line named. The target expected
    /// them not to count because *a* `Connection` line was present; the forwarder sends them to
    /// the backend, so the key must (and does) count them.
    #[test]
    fn a_connection_line_leaves_out_only_the_fields_it_names() {
        let mut forwarded = Vec::new();
        let client = fulcrum_http::h1::Forwarded { ip: "192.0.2.7", proto: "http" };
        let raw = b"GET / HTTP/1.1\r\nHost: h\r\nConnection: hok\r\nx-fUZZ-hOp-0: j,\r\n\r\n";
        fulcrum_http::h1::parse_request(raw, 8, &client, &[], &mut forwarded).unwrap().unwrap();
        assert!(String::from_utf8(forwarded).unwrap().contains("\r\nx-fUZZ-hOp-0: j,\r\n"));

        let plain = key("GET", "/", &[("Host", "h"), ("Connection", "hok")], b"");
        let unnamed = [("Host", "h"), ("Connection", "hok"), ("x-fUZZ-hOp-0", "j,")];
        assert_ne!(plain, key("GET", "/", &unnamed, b""), "a forwarded field did not count");
        let named = [("Host", "h"), ("Connection", "hok, X-Fuzz-Hop-0"), ("x-fUZZ-hOp-0", "j,")];
        let named_alone = [("Host", "h"), ("Connection", "hok, X-Fuzz-Hop-0")];
        assert_eq!(key("GET", "/", &named, b""), key("GET", "/", &named_alone, b""));
    }

    #[test]
    fn ignore_list_is_case_insensitive() {
        let ignore = vec!["x-request-id".to_owned()];
        let a = key_ignoring("GET", "/", &[("Host", "h"), ("X-Request-Id", "1")], b"", &ignore);
        let b = key_ignoring("GET", "/", &[("X-REQUEST-ID", "2"), ("Host", "h")], b"", &ignore);
        let c = key_ignoring("GET", "/", &[("Host", "h")], b"", &ignore);
        assert_eq!(a, b);
        assert_eq!(a, c);
        let d = key("GET", "/", &[("Host", "h"), ("X-Request-Id", "1")], b"");
        assert_ne!(a, d, "not ignored by default");
    }

    #[test]
    fn long_names_are_lowercased() {
        let long_upper = "X-".to_owned() + &"A".repeat(150);
        let long_lower = long_upper.to_ascii_lowercase();
        assert_eq!(
            key("GET", "/", &[(&long_upper, "v")], b""),
            key("GET", "/", &[(&long_lower, "v")], b"")
        );
    }

    #[test]
    fn builder_reuses_its_scratch_and_agrees_with_compute() {
        let mut kb = KeyBuilder::new();
        let headers: Vec<(String, String)> =
            (0..20).map(|i| (format!("x-h{i}"), format!("v{i}"))).collect();
        let it = || headers.iter().map(|(n, v)| (n.as_str(), v.as_bytes()));
        let first = kb.compute("GET", "/", it(), b"", &[]);
        let cap = kb.scratch.capacity();
        assert!(cap >= 20);
        let second = kb.compute("GET", "/", it(), b"", &[]);
        assert_eq!(kb.scratch.capacity(), cap, "allocation kept");
        assert_eq!(first, second);
        assert_eq!(first, CacheKey::compute("GET", "/", it(), b"", &[]));
    }

    #[test]
    fn display_is_hex() {
        let k = CacheKey::from_bytes([0xab; 32]);
        assert_eq!(k.to_string(), "ab".repeat(32));
        assert_eq!(k.as_bytes(), &[0xab; 32]);
    }
}
