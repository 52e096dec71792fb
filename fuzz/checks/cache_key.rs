//! The response-cache key (`cache::key`).
//!
//! Input: a recipe for a request (method, target, header fields, body), an ignore list and a
//! set of fields to add. Invariants:
//! - the key is deterministic: `CacheKey::compute` and a reused `KeyBuilder` agree, twice;
//! - hop-by-hop fields, fields named by an added `Connection` line, and fields on the
//!   configured ignore list never change the key, wherever they are inserted and however
//!   their names are cased;
//! - the case of field names and the order of distinct names do not change the key;
//! - one more body byte, or one more end-to-end field, does;
//! - the key counts exactly what the forwarder sends on: for a recipe that makes a request
//!   head `parse_request` accepts, the key of the head as received equals the key of the head
//!   it forwards (fields the forwarder rewrites left out of both), so no field that reaches
//!   the backend is missing from the key and no dropped field is in it;
//! - with `Connection` lines of up to 40 tokens naming fields of the recipe, the key is the key
//!   of the fields this target's own reading of RFC 9110 7.6.1 keeps.

use arbitrary::{Result, Unstructured};
use fulcrum_cache::{CacheKey, KeyBuilder};
use fulcrum_http::h1::{Forwarded, HOP_BY_HOP, MAX_HEADERS, finish_request_head, parse_request};

/// Header names the recipe picks from (plus arbitrary tokens), so collisions with the ignore
/// list and repeated names are frequent.
const NAMES: [&str; 8] =
    ["host", "accept", "x-tenant", "x-request-id", "cookie", "authorization", "via", "x-a"];
const TOKEN: &[u8] =
    b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";

type Field = (String, Vec<u8>);

/// Runs the invariants on one input (the fuzz target and the replay test call this).
pub fn check(data: &[u8]) {
    // Running out of input ends the recipe early; what was checked until then stands.
    let _ = run(&mut Unstructured::new(data));
}

fn run(u: &mut Unstructured<'_>) -> Result<()> {
    let method = token(u)?;
    let path = String::from_utf8_lossy(u.arbitrary::<&[u8]>()?).into_owned();
    let mut fields: Vec<Field> = Vec::new();
    for _ in 0..u.int_in_range(0..=12)? {
        fields.push((name(u)?, u.arbitrary::<Vec<u8>>()?));
    }
    let ignore: Vec<String> =
        (0..u.int_in_range(0..=3)?).map(|_| name(u)).collect::<Result<_>>()?;
    let body: Vec<u8> = u.arbitrary()?;
    let key = |fields: &[Field], body: &[u8]| {
        let it = fields.iter().map(|(n, v)| (n.as_str(), v.as_slice()));
        CacheKey::compute(&method, &path, it, body, &ignore)
    };
    let base = key(&fields, &body);

    // Deterministic, and a builder that computed another key first agrees.
    assert_eq!(base, key(&fields, &body));
    let mut builder = KeyBuilder::new();
    let other = [("x-other".to_owned(), b"1".to_vec())];
    let _ = builder.compute("GET", "/", other.iter().map(|(n, v)| (n.as_str(), &v[..])), b"", &[]);
    let it = fields.iter().map(|(n, v)| (n.as_str(), v.as_slice()));
    assert_eq!(builder.compute(&method, &path, it, &body, &ignore), base, "builder reuse");

    // Names in any case, distinct names in any order (repeated names keep their order).
    let mut reordered = Vec::with_capacity(fields.len());
    for (n, v) in &fields {
        reordered.push((recase(u, n)?, v.clone()));
    }
    if u.arbitrary()? {
        reordered.sort_by_key(|(n, _)| std::cmp::Reverse(n.to_ascii_lowercase()));
    } else {
        reordered.sort_by_key(|(n, _)| n.to_ascii_lowercase());
    }
    assert_eq!(key(&reordered, &body), base, "name case or order of distinct names mattered");

    // Fields that must not count, inserted anywhere.
    let present = |n: &str| fields.iter().any(|(f, _)| f.eq_ignore_ascii_case(n));
    let nominated = (0..4).map(|i| format!("x-fuzz-hop-{i}")).find(|n| !present(n));
    let mut noisy = fields.clone();
    for _ in 0..u.int_in_range(1..=6)? {
        let name = match u.int_in_range(0..=2)? {
            0 => HOP_BY_HOP[u.choose_index(HOP_BY_HOP.len())?].to_owned(),
            1 if !ignore.is_empty() => ignore[u.choose_index(ignore.len())?].clone(),
            _ => match &nominated {
                Some(n) => n.clone(),
                None => "keep-alive".to_owned(),
            },
        };
        let name = recase(u, &name)?;
        let value = if name.eq_ignore_ascii_case("connection") {
            // A Connection line may only name fields that are excluded anyway, and the new
            // nominated one.
            let mut tokens: Vec<&str> = HOP_BY_HOP.to_vec();
            tokens.extend(ignore.iter().map(String::as_str));
            let pick = tokens[u.choose_index(tokens.len())?];
            format!(" {pick} , {}", nominated.as_deref().unwrap_or("te")).into_bytes()
        } else {
            u.arbitrary::<Vec<u8>>()?
        };
        let at = u.int_in_range(0..=noisy.len())?;
        noisy.insert(at, (name, value));
    }
    if let Some(n) = &nominated
        && !named_by_connection(&noisy, n)
    {
        // No Connection line names the nominated field, so it is end-to-end (a Connection
        // line of the recipe that names other fields does not change that): drop it.
        noisy.retain(|(f, _)| !f.eq_ignore_ascii_case(n));
    }
    assert_eq!(key(&noisy, &body), base, "an excluded field changed the key");

    // What does count.
    let mut longer = body.clone();
    longer.push(u.arbitrary()?);
    assert_ne!(key(&fields, &longer), base, "a body byte did not change the key");
    let fresh = (0..4).map(|i| format!("x-fuzz-new-{i}")).find(|n| {
        !present(n)
            && !ignore.iter().any(|i| i.trim().eq_ignore_ascii_case(n))
            && !named_by_connection(&fields, n)
    });
    if let Some(n) = fresh {
        let mut more = fields.clone();
        more.push((n, Vec::new()));
        assert_ne!(key(&more, &body), base, "an end-to-end field did not change the key");
    }

    // The key counts exactly the fields the forwarder sends on.
    forwarder_agrees(&fields, &ignore);
    forwarder_agrees(&noisy, &ignore);

    // Connection lines of up to 40 tokens, naming fields of the recipe among others: the key
    // leaves out exactly what this target's own reading of them says is hop-by-hop.
    // (Drawn last, so that the inputs above keep meaning the same recipe.)
    let mut named = fields.clone();
    for _ in 0..u.int_in_range(1..=3)? {
        let mut value = Vec::new();
        for i in 0..u.int_in_range(1..=40)? {
            if i > 0 {
                value.push(b',');
            }
            value.extend_from_slice(ows(u)?);
            let token = match u.int_in_range(0..=2)? {
                0 if !fields.is_empty() => fields[u.choose_index(fields.len())?].0.clone(),
                1 => NAMES[u.choose_index(NAMES.len())?].to_owned(),
                _ => token(u)?,
            };
            value.extend_from_slice(recase(u, &token)?.as_bytes());
            value.extend_from_slice(ows(u)?);
        }
        let at = u.int_in_range(0..=named.len())?;
        named.insert(at, (recase(u, "connection")?, value));
    }
    let end_to_end: Vec<Field> = named
        .iter()
        .filter(|(n, _)| {
            !HOP_BY_HOP.iter().any(|h| h.eq_ignore_ascii_case(n))
                && !named_by_connection(&named, n)
                && !ignore.iter().any(|i| i.trim().eq_ignore_ascii_case(n))
        })
        .cloned()
        .collect();
    assert_eq!(key(&named, &body), key(&end_to_end, &body), "a Connection line read wrong");
    forwarder_agrees(&named, &ignore);
    Ok(())
}

/// Optional whitespace around a list element.
fn ows(u: &mut Unstructured<'_>) -> Result<&'static [u8]> {
    Ok([&b""[..], b" ", b"\t", b"  "][u.choose_index(4)?])
}

/// Whether some `Connection` line among `fields` names `name` (this target's own reading of
/// RFC 9110 7.6.1: comma-separated tokens, whitespace trimmed, compared case-insensitively).
fn named_by_connection(fields: &[Field], name: &str) -> bool {
    fields.iter().any(|(f, v)| {
        f.eq_ignore_ascii_case("connection")
            && v.split(|&c| c == b',').any(|t| t.trim_ascii().eq_ignore_ascii_case(name.as_bytes()))
    })
}

/// Fields the forwarder rewrites instead of passing on or dropping (`X-Forwarded-For` gains a
/// hop, `X-Forwarded-Proto` and `Via` are its own, framing is re-emitted, `Expect` is
/// answered): the key takes them as received, so they are left out of the comparison.
const REWRITTEN: [&str; 5] =
    ["x-forwarded-for", "x-forwarded-proto", "via", "content-length", "expect"];

/// When `fields` (control bytes in values replaced, a `Host` added if missing) make a request
/// head the forwarder accepts, the key of the head as received (what the proxy computes) equals
/// the key of the head the backend gets: every forwarded field counts, no dropped one does.
fn forwarder_agrees(fields: &[Field], ignore: &[String]) {
    let mut head = b"GET / HTTP/1.1\r\n".to_vec();
    if !fields.iter().any(|(n, _)| n.eq_ignore_ascii_case("host")) {
        head.extend_from_slice(b"host: h\r\n");
    }
    for (name, value) in fields {
        head.extend_from_slice(name.as_bytes());
        head.extend_from_slice(b": ");
        head.extend(
            value.iter().map(|&b| if b < 0x20 && b != b'\t' || b == 0x7f { b'x' } else { b }),
        );
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"\r\n");
    let client = Forwarded { ip: "192.0.2.7", proto: "http" };
    let mut out = Vec::new();
    let Ok(Some(info)) = parse_request(&head, MAX_HEADERS, &client, &[], &mut out) else { return };
    finish_request_head(&mut out, &info, "backend.test:8080");
    assert_eq!(
        key_of_head(&head, ignore),
        key_of_head(&out, ignore),
        "the key and the forwarder disagree on a field: {:?} forwarded as {:?}",
        String::from_utf8_lossy(&head),
        String::from_utf8_lossy(&out),
    );
}

/// The key of a complete request head's fields, as the proxy computes it from the bytes
/// received (method and target fixed), without the [`REWRITTEN`] fields.
fn key_of_head(head: &[u8], ignore: &[String]) -> CacheKey {
    let mut storage = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut storage);
    let status = req.parse(head).expect("a head the forwarder accepted or wrote does not parse");
    assert!(status.is_complete(), "incomplete head {:?}", String::from_utf8_lossy(head));
    let fields = req
        .headers
        .iter()
        .filter(|h| !REWRITTEN.iter().any(|r| h.name.eq_ignore_ascii_case(r)))
        .map(|h| (h.name, h.value));
    CacheKey::compute("GET", "/", fields, b"", ignore)
}

/// A header name: one of [`NAMES`] or a short arbitrary token.
fn name(u: &mut Unstructured<'_>) -> Result<String> {
    if u.arbitrary()? { Ok(NAMES[u.choose_index(NAMES.len())?].to_owned()) } else { token(u) }
}

/// A non-empty token of at most 12 characters.
fn token(u: &mut Unstructured<'_>) -> Result<String> {
    let len = u.int_in_range(1..=12)?;
    (0..len).map(|_| Ok(char::from(TOKEN[u.choose_index(TOKEN.len())?]))).collect()
}

/// `name` with each letter's case chosen by the input.
fn recase(u: &mut Unstructured<'_>, name: &str) -> Result<String> {
    name.chars()
        .map(|c| Ok(if u.arbitrary()? { c.to_ascii_uppercase() } else { c.to_ascii_lowercase() }))
        .collect()
}
