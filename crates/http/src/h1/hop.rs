//! The one notion of hop-by-hop: which fields of a head describe the connection rather than the
//! message. The forwarder (requests and responses, whatever protocol the other side speaks) and
//! the response cache's key decide it with this code, so every field that reaches a backend is
//! part of the key and no field that is dropped is.
//!
//! A field is hop-by-hop when its name is in [`HOP_BY_HOP`] (RFC 9110 7.6.1, plus the
//! proxy-authentication pair) or when any `Connection` field of the same head names it. Every
//! `Connection` line counts, however many tokens it has and whatever bytes its value holds:
//! tokens are compared as bytes, case-insensitively, after trimming optional whitespace.

/// Fields that describe one connection rather than the message: never forwarded, never part of
/// a cache key.
pub const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-authenticate",
    "proxy-authorization",
];

/// Whether `name` is in [`HOP_BY_HOP`] (case-insensitive).
pub fn is_hop_by_hop(name: &[u8]) -> bool {
    HOP_BY_HOP.iter().any(|h| h.as_bytes().eq_ignore_ascii_case(name))
}

/// The tokens of one `Connection` field value: comma-separated, whitespace trimmed, empty list
/// elements skipped.
pub fn connection_tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value.split(|&b| b == b',').map(<[u8]>::trim_ascii).filter(|t| !t.is_empty())
}

fn is_connection(h: &httparse::Header<'_>) -> bool {
    h.name.eq_ignore_ascii_case("connection")
}

/// Whether a field named `name` is hop-by-hop in a head whose `Connection` field values are
/// `connection` (every one of them).
pub fn is_hop_field<'a>(name: &[u8], connection: impl IntoIterator<Item = &'a [u8]>) -> bool {
    is_hop_by_hop(name)
        || connection
            .into_iter()
            .any(|value| connection_tokens(value).any(|t| t.eq_ignore_ascii_case(name)))
}

/// The `Connection` fields of one parsed head, for the questions a forwarder asks about them.
///
/// It holds the run of fields from the first `Connection` field to the last (none when the head
/// has no such field), found once per head: a forwarder asks about every field, and most heads
/// have one `Connection` field or none.
#[derive(Debug, Clone, Copy)]
pub struct Connection<'a, 'h> {
    span: &'a [httparse::Header<'h>],
}

impl<'a, 'h> Connection<'a, 'h> {
    /// The `Connection` fields among `headers`.
    pub fn of(headers: &'a [httparse::Header<'h>]) -> Self {
        let span = match headers.iter().position(is_connection) {
            Some(first) => {
                let last = headers.iter().rposition(is_connection).unwrap_or(first);
                &headers[first..=last]
            }
            None => &[],
        };
        Self { span }
    }

    fn values(self) -> impl Iterator<Item = &'h [u8]> + 'a {
        self.span.iter().filter(|h| is_connection(h)).map(|h| h.value)
    }

    /// Whether some `Connection` field carries `token` (e.g. `close`, `keep-alive`).
    pub fn has(self, token: &[u8]) -> bool {
        self.values().any(|v| connection_tokens(v).any(|t| t.eq_ignore_ascii_case(token)))
    }

    /// Whether a field named `name` must not be forwarded (see the module documentation).
    pub fn drops(self, name: &[u8]) -> bool {
        is_hop_field(name, self.values())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h<'a>(name: &'a str, value: &'a [u8]) -> httparse::Header<'a> {
        httparse::Header { name, value }
    }

    #[test]
    fn every_connection_line_and_token_counts() {
        let long: Vec<u8> = (0..40).map(|i| format!("x-{i}, ")).collect::<String>().into_bytes();
        let headers = [
            h("Connection", &long),
            h("connection", b"keep-alive, \xff\xfe, X-Late"),
            h("x-39", b"1"),
            h("x-late", b"1"),
            h("x-kept", b"1"),
        ];
        let c = Connection::of(&headers);
        assert!(c.drops(b"x-39"), "a token late in a long line");
        assert!(c.drops(b"X-LATE"), "a token in a line with a non-UTF-8 byte");
        assert!(c.drops(b"keep-alive") && c.drops(b"Transfer-Encoding"));
        assert!(!c.drops(b"x-kept"));
        assert!(c.has(b"keep-alive") && !c.has(b"close"));
        assert!(is_hop_field(b"x-late", [&b"a,,  x-late "[..]]));
        assert!(!is_hop_field(b"x", std::iter::empty()));
    }

    #[test]
    fn connection_fields_anywhere_in_the_head_count() {
        let headers = [
            h("host", b"a"),
            h("Connection", b"x-first"),
            h("x-first", b"1"),
            h("x-between", b"1"),
            h("CONNECTION", b"close, x-last"),
            h("x-last", b"1"),
        ];
        let c = Connection::of(&headers);
        assert!(c.drops(b"x-first") && c.drops(b"x-last") && c.has(b"close"));
        assert!(!c.drops(b"x-between") && !c.drops(b"host"));

        let none = Connection::of(&headers[2..4]);
        assert!(!none.drops(b"x-first") && !none.has(b"close"));
        assert!(none.drops(b"te") && none.drops(b"Upgrade"));
    }
}
