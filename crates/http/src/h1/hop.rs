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

/// Bit `n` is set when some name in [`HOP_BY_HOP`] is `n` bytes long: most names are ruled out
/// by their length alone.
const HOP_BY_HOP_LENGTHS: u32 = {
    let mut mask = 0;
    let mut i = 0;
    while i < HOP_BY_HOP.len() {
        mask |= 1 << HOP_BY_HOP[i].len();
        i += 1;
    }
    mask
};

/// Whether `name` is in [`HOP_BY_HOP`] (case-insensitive).
pub fn is_hop_by_hop(name: &[u8]) -> bool {
    name.len() < 32
        && HOP_BY_HOP_LENGTHS & (1 << name.len()) != 0
        && HOP_BY_HOP.iter().any(|h| h.as_bytes().eq_ignore_ascii_case(name))
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
/// What a forwarder asks about every field is worked out once per head: the run of fields from
/// the first `Connection` field to the last (none when the head has no such field), and whether
/// any of their tokens names something beyond [`HOP_BY_HOP`]. Most heads have no `Connection`
/// field, or one whose tokens are all hop-by-hop anyway (`keep-alive`, `upgrade`); for those a
/// field's name alone decides.
#[derive(Debug, Clone, Copy)]
pub struct Connection<'a, 'h> {
    span: &'a [httparse::Header<'h>],
    /// Some token of some `Connection` field is not in [`HOP_BY_HOP`] (`close`, or an
    /// extension field the sender wants dropped).
    names_more: bool,
}

impl<'a, 'h> Connection<'a, 'h> {
    /// The `Connection` fields among `headers`.
    pub fn of(headers: &'a [httparse::Header<'h>]) -> Self {
        let (mut first, mut last, mut names_more) = (None, 0, false);
        for (i, h) in headers.iter().enumerate() {
            if is_connection(h) {
                first.get_or_insert(i);
                last = i;
                names_more |= connection_tokens(h.value).any(|t| !is_hop_by_hop(t));
            }
        }
        let span = first.and_then(|first| headers.get(first..=last)).unwrap_or_default();
        Self { span, names_more }
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
        if self.names_more { is_hop_field(name, self.values()) } else { is_hop_by_hop(name) }
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
    fn hop_by_hop_names_whatever_their_case_and_nothing_else() {
        for name in HOP_BY_HOP {
            assert!(is_hop_by_hop(name.as_bytes()));
            assert!(is_hop_by_hop(name.to_ascii_uppercase().as_bytes()));
            let mut longer = name.as_bytes().to_vec();
            longer.push(b's');
            assert!(!is_hop_by_hop(&longer));
            assert!(!is_hop_by_hop(&name.as_bytes()[1..]));
        }
        for name in ["", "host", "content-length", "x-connection", "keep-alive-x", &"a".repeat(40)]
        {
            assert!(!is_hop_by_hop(name.as_bytes()), "{name}");
        }
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

        // Tokens that are all hop-by-hop names add nothing to drop.
        let plain = [h("Connection", b"keep-alive, Upgrade"), h("close", b"1"), h("x", b"1")];
        let c = Connection::of(&plain);
        assert!(c.drops(b"Connection") && c.drops(b"upgrade") && c.has(b"keep-alive"));
        assert!(!c.drops(b"close") && !c.drops(b"x"));

        let none = Connection::of(&headers[2..4]);
        assert!(!none.drops(b"x-first") && !none.has(b"close"));
        assert!(none.drops(b"te") && none.drops(b"Upgrade"));
    }
}
