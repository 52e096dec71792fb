//! The HTTP/1.1 request-head parser and rewriter (`http::h1::parse_request`).
//!
//! Input: one byte choosing `max_headers`, then the bytes a client sent. Invariants:
//! - a complete head lies within the input, ends with its empty line, and parses identically
//!   with nothing after it; one byte less is still incomplete (the head ends at the first
//!   empty line, never earlier);
//! - the head Fulcrum forwards re-parses to the same method, target and framing, as HTTP/1.1
//!   with a `Host`, no `Expect` and no hop-by-hop field (none of the fixed list but the framing
//!   it re-emits, none that a `Connection` line of the request names but the fields Fulcrum
//!   writes itself); its `X-Forwarded-For` is the client's own lines (unless `Connection` names
//!   the field) and then the client's address; and rewriting it again changes nothing but
//!   `X-Forwarded-For` and `Via`, which each gain exactly this hop;
//! - a protocol upgrade is passed only for an HTTP/1.1 request without a body whose
//!   `Connection` names `upgrade` and whose `Upgrade` offers an allowed protocol: then the
//!   forwarded head carries exactly `connection: upgrade` and an `upgrade` line of allowed
//!   protocols only, and it re-parses to the same upgrade.

use fulcrum_http::h1::{self, Forwarded, Framing, RequestInfo, parse_request};

const CLIENT: Forwarded<'static> = Forwarded { ip: "192.0.2.7", proto: "http" };
const BACKEND: &str = "backend.test:8080";

/// The allowed upgrade protocols (`[upgrade] protocols`).
fn upgrades() -> Vec<String> {
    vec!["websocket".to_owned(), "h2c".to_owned()]
}

/// Runs the invariants on one input (the fuzz target and the replay test call this).
pub fn check(data: &[u8]) {
    let Some((&selector, input)) = data.split_first() else { return };
    // Leave room for the fields the rewrite adds, so the re-parse is never over the limit.
    let max_headers = usize::from(selector) % (h1::MAX_HEADERS - 8) + 1;
    let mut out = Vec::new();
    let allowed = upgrades();
    let Ok(Some(info)) = parse_request(input, max_headers, &CLIENT, &allowed, &mut out) else {
        return;
    };

    assert!(info.head_len <= input.len(), "head_len beyond the input");
    assert!(input[..info.head_len].ends_with(b"\n"), "head does not end with a line break");
    let mut alone = Vec::new();
    let head = &input[..info.head_len];
    assert_eq!(parse_request(head, max_headers, &CLIENT, &allowed, &mut alone), Ok(Some(info)));
    assert_eq!(alone, out, "bytes after the head changed the rewrite");
    let shorter = &head[..head.len() - 1];
    assert_eq!(
        parse_request(shorter, max_headers, &CLIENT, &allowed, &mut alone),
        Ok(None),
        "a head one byte shorter is already complete"
    );

    h1::finish_request_head(&mut out, &info, BACKEND);
    let mut again = Vec::new();
    let re = parse_request(&out, h1::MAX_HEADERS, &CLIENT, &allowed, &mut again)
        .unwrap_or_else(|e| panic!("forwarded head does not re-parse: {e}: {:?}", text(&out)))
        .unwrap_or_else(|| panic!("forwarded head is incomplete: {:?}", text(&out)));
    assert_eq!(re.head_len, out.len());
    let expected = RequestInfo {
        head_len: out.len(),
        framing: info.framing,
        is_head: info.is_head,
        idempotent: info.idempotent,
        keep_alive: true,
        expect_continue: false,
        http10: false,
        has_host: true,
        upgrade: info.upgrade,
    };
    assert_eq!(re, expected, "forwarded head reads differently: {:?}", text(&out));
    assert_ne!(re.framing, Framing::UntilClose);

    let first = fields(&out);
    again.extend_from_slice(b"\r\n");
    let second = fields(&again);
    assert_eq!(first.start, second.start, "request line changed");
    assert!(first.start.ends_with(b" HTTP/1.1"));
    assert_eq!(first.others, second.others, "end-to-end fields changed on a second pass");
    // Framing is re-emitted from what was validated: one line, and only the one that applies.
    let count = |n: &[u8]| first.others.iter().filter(|(name, _)| name == n).count();
    assert_eq!(count(b"transfer-encoding"), usize::from(info.framing == Framing::Chunked));
    assert_eq!(count(b"content-length"), usize::from(matches!(info.framing, Framing::Length(_))));
    // No hop-by-hop field: none of the fixed list (but the re-emitted framing), none that a
    // Connection line of the request names (but the fields Fulcrum writes itself).
    let connection = connection_values(head);
    let upgrading = !info.upgrade.is_empty();
    let asks = named(&connection, b"upgrade")
        && request_fields(head).iter().any(|(n, v)| {
            n.eq_ignore_ascii_case(b"upgrade")
                && v.split(|&b| b == b',').any(|e| {
                    let name = e.split(|&b| b == b'/').next().unwrap_or_default().trim_ascii();
                    allowed.iter().any(|a| a.as_bytes().eq_ignore_ascii_case(name))
                })
        });
    let bodiless = matches!(info.framing, Framing::None | Framing::Length(0));
    assert_eq!(upgrading, asks && bodiless && !info.http10, "upgrade passed wrongly");
    for (name, value) in &first.others {
        let framing = name == b"transfer-encoding" || name == b"content-length";
        let upgrade_line = upgrading && (name == b"connection" || name == b"upgrade");
        if upgrade_line && name == b"connection" {
            assert_eq!(text(value), "upgrade");
        }
        if upgrade_line && name == b"upgrade" {
            for e in value.split(|&b| b == b',') {
                let p = e.split(|&b| b == b'/').next().unwrap_or_default().trim_ascii();
                assert!(allowed.iter().any(|a| a.as_bytes().eq_ignore_ascii_case(p)), "{value:?}");
            }
        }
        let own = name == b"x-forwarded-proto" || name == b"host" && !info.has_host || upgrade_line;
        assert!(
            framing || upgrade_line || !h1::is_hop_by_hop(name),
            "hop-by-hop field {} forwarded",
            text(name)
        );
        assert!(
            framing || own || !named(&connection, name),
            "field {} forwarded though Connection names it",
            text(name)
        );
        assert!(name != b"expect", "Expect forwarded");
    }
    // X-Forwarded-For: the client's own lines (unless Connection names the field), then the
    // client's address.
    let mut client_hops = request_fields(head)
        .into_iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(b"x-forwarded-for"))
        .filter(|_| !named(&connection, b"x-forwarded-for"))
        .map(|(_, v)| v)
        .collect::<Vec<_>>();
    client_hops.push(CLIENT.ip.as_bytes().to_vec());
    let folded = client_hops.join(&b", "[..]);
    assert_eq!(text(&first.forwarded_for), text(&folded), "X-Forwarded-For folded wrong");
    let mut grown = first.forwarded_for.clone();
    grown.extend_from_slice(b", ");
    grown.extend_from_slice(CLIENT.ip.as_bytes());
    assert_eq!(second.forwarded_for, grown, "X-Forwarded-For did not gain exactly one hop");
    let mut via = first.via.clone();
    via.push(b"1.1 fulcrum".to_vec());
    assert_eq!(second.via, via, "Via did not gain exactly one hop");
}

/// A forwarded head split into its request line, its single `X-Forwarded-For` value, its `Via`
/// values in order, and every other field (`Host` included).
struct Fields {
    start: Vec<u8>,
    forwarded_for: Vec<u8>,
    via: Vec<Vec<u8>>,
    others: Vec<(Vec<u8>, Vec<u8>)>,
}

fn fields(head: &[u8]) -> Fields {
    let mut lines = head.split(|&b| b == b'\n').map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let start = lines.next().unwrap_or_default().to_vec();
    let mut forwarded_for = None;
    let mut via = Vec::new();
    let mut others = Vec::new();
    for line in lines.filter(|l| !l.is_empty()) {
        let colon = line.iter().position(|&b| b == b':').expect("field line without a colon");
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
        if name.eq_ignore_ascii_case(b"x-forwarded-for") {
            assert!(forwarded_for.is_none(), "X-Forwarded-For forwarded twice");
            forwarded_for = Some(value.to_vec());
        } else if name.eq_ignore_ascii_case(b"via") {
            via.push(value.to_vec());
        } else {
            others.push((name.to_ascii_lowercase(), value.to_vec()));
        }
    }
    // Sort by name (stable): a Host added at the end by `finish_request_head` moves up on the
    // second pass, while repeated fields keep their order.
    others.sort_by(|a, b| a.0.cmp(&b.0));
    Fields { start, forwarded_for: forwarded_for.expect("no X-Forwarded-For"), via, others }
}

/// The fields of a complete request head, as `httparse` reads them (value trimmed).
fn request_fields(head: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut storage = vec![httparse::EMPTY_HEADER; h1::MAX_HEADERS];
    let mut req = httparse::Request::new(&mut storage);
    assert!(matches!(req.parse(head), Ok(httparse::Status::Complete(_))), "head does not re-parse");
    req.headers
        .iter()
        .map(|h| (h.name.as_bytes().to_vec(), h.value.trim_ascii().to_vec()))
        .collect()
}

/// The values of a head's `Connection` lines.
fn connection_values(head: &[u8]) -> Vec<Vec<u8>> {
    request_fields(head)
        .into_iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(b"connection"))
        .map(|(_, v)| v)
        .collect()
}

/// Whether a `Connection` value names `name` (this target's own reading of RFC 9110 7.6.1:
/// comma-separated tokens, whitespace trimmed, compared case-insensitively).
fn named(connection: &[Vec<u8>], name: &[u8]) -> bool {
    connection
        .iter()
        .any(|v| v.split(|&c| c == b',').any(|t| t.trim_ascii().eq_ignore_ascii_case(name)))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}
