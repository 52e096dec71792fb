//! HTTP/2 message rules on decoded fields (RFC 9113 sections 8.2 and 8.3, RFC 8441).
//!
//! Runs on the connection's thread, after HPACK decoding: a block that breaks these rules is a
//! malformed message, a stream error of type PROTOCOL_ERROR (the HPACK state is unaffected).
//! [`request`], [`response`] and [`trailers`] check a whole field section in one pass and
//! collect the pseudo-headers into a small struct the engine routes with.

use crate::frame::ErrorCode;
use crate::hpack::{Field, Pseudo};

/// Why a field section is malformed. Every case is a stream error of type PROTOCOL_ERROR
/// ([`MessageError::code`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    /// A field name that is empty, not a token, or has upper-case letters.
    #[error("invalid field name")]
    InvalidName,
    /// A connection-specific field (`connection`, `keep-alive`, `proxy-connection`,
    /// `transfer-encoding`, `upgrade`).
    #[error("connection-specific field")]
    ConnectionSpecific,
    /// `te` with a value other than `trailers`.
    #[error("te other than trailers")]
    BadTe,
    /// A field value with NUL, CR or LF, or leading or trailing whitespace.
    #[error("invalid field value")]
    InvalidValue,
    /// A name starting with a colon that is no pseudo-header this message may carry.
    #[error("unknown pseudo-header")]
    UnknownPseudo,
    /// A pseudo-header of the other kind of message (`:status` in a request, `:method` in a
    /// response), or `:scheme`/`:path` in a plain CONNECT.
    #[error("pseudo-header {0:?} not allowed here")]
    UnexpectedPseudo(Pseudo),
    /// The same pseudo-header twice.
    #[error("duplicate pseudo-header {0:?}")]
    DuplicatePseudo(Pseudo),
    /// A pseudo-header after a regular field.
    #[error("pseudo-header after a regular field")]
    PseudoAfterRegular,
    /// Any pseudo-header in trailers.
    #[error("pseudo-header in trailers")]
    PseudoInTrailers,
    /// A required pseudo-header is missing.
    #[error("missing pseudo-header {0:?}")]
    MissingPseudo(Pseudo),
    /// `:path` is empty.
    #[error("empty :path")]
    EmptyPath,
    /// `:protocol` without `:method CONNECT`.
    #[error(":protocol without CONNECT")]
    ProtocolWithoutConnect,
    /// `:status` is not three digits.
    #[error("invalid :status")]
    BadStatus,
}

impl MessageError {
    /// The RST_STREAM code for a malformed message.
    pub fn code(&self) -> ErrorCode {
        ErrorCode::PROTOCOL_ERROR
    }
}

/// `TOKEN[b]`: `b` is a lower-case `tchar` (RFC 9110 section 5.6.2).
const TOKEN: [bool; 256] = {
    let mut t = [false; 256];
    let extra = b"!#$%&'*+-.^_`|~";
    let mut i = 0;
    while i < extra.len() {
        t[extra[i] as usize] = true;
        i += 1;
    }
    let mut c = b'0';
    while c <= b'9' {
        t[c as usize] = true;
        c += 1;
    }
    let mut c = b'a';
    while c <= b'z' {
        t[c as usize] = true;
        c += 1;
    }
    t
};

/// True for a valid HTTP/2 field name: a non-empty token in lower case.
pub fn is_valid_name(name: &[u8]) -> bool {
    !name.is_empty() && name.iter().all(|&b| TOKEN[usize::from(b)])
}

/// True for a valid field value: no NUL, CR or LF, and no SP or HTAB at either end.
pub fn is_valid_value(value: &[u8]) -> bool {
    let ws = |b: &u8| *b == b' ' || *b == b'\t';
    !value.first().is_some_and(ws) && !value.last().is_some_and(ws) && !has_nul_cr_lf(value)
}

/// True when `value` holds a NUL, CR or LF byte. Every value of every field is scanned, so
/// eight bytes are tested at a time: a word has a zero byte exactly when
/// `(x - 0x01..01) & !x & 0x80..80` is non-zero, and a byte equals `c` when it is zero in
/// `x ^ (c * 0x01..01)`.
fn has_nul_cr_lf(value: &[u8]) -> bool {
    const ONES: u64 = u64::from_ne_bytes([1; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    let has_zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGHS != 0;
    let mut words = value.chunks_exact(8);
    for word in &mut words {
        let mut bytes = [0; 8];
        bytes.copy_from_slice(word);
        let x = u64::from_ne_bytes(bytes);
        if has_zero(x)
            || has_zero(x ^ (ONES * u64::from(b'\r')))
            || has_zero(x ^ (ONES * u64::from(b'\n')))
        {
            return true;
        }
    }
    words.remainder().iter().any(|&b| b == 0 || b == b'\r' || b == b'\n')
}

/// True for the connection-specific fields HTTP/2 forbids (RFC 9113 section 8.2.2); `te` is
/// checked separately, since `te: trailers` is allowed.
pub fn is_connection_specific(name: &[u8]) -> bool {
    matches!(
        name,
        b"connection" | b"keep-alive" | b"proxy-connection" | b"transfer-encoding" | b"upgrade"
    )
}

/// Checks a regular (non-pseudo) field: its name, that it is not connection-specific, `te`
/// only as `trailers`, and its value.
pub fn check_field(name: &[u8], value: &[u8]) -> Result<(), MessageError> {
    if !is_valid_name(name) {
        return Err(MessageError::InvalidName);
    }
    check_named_field(name, value)
}

/// [`check_field`] for a name already known to be valid.
fn check_named_field(name: &[u8], value: &[u8]) -> Result<(), MessageError> {
    if is_connection_specific(name) {
        return Err(MessageError::ConnectionSpecific);
    }
    if name == b"te" && value != b"trailers" {
        return Err(MessageError::BadTe);
    }
    if !is_valid_value(value) {
        return Err(MessageError::InvalidValue);
    }
    Ok(())
}

/// The pseudo-headers of a valid request (RFC 9113 section 8.3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestPseudo<'a> {
    /// `:method`.
    pub method: &'a [u8],
    /// `:scheme` (absent only in a plain CONNECT).
    pub scheme: Option<&'a [u8]>,
    /// `:authority` (required in a CONNECT).
    pub authority: Option<&'a [u8]>,
    /// `:path`, non-empty (absent only in a plain CONNECT).
    pub path: Option<&'a [u8]>,
    /// `:protocol` of an extended CONNECT (RFC 8441).
    pub protocol: Option<&'a [u8]>,
}

impl RequestPseudo<'_> {
    /// True for a CONNECT request (plain or extended).
    pub fn is_connect(&self) -> bool {
        self.method == b"CONNECT"
    }
}

/// The pseudo-header of a valid response (RFC 9113 section 8.3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponsePseudo {
    /// `:status`, 100..=999.
    pub status: u16,
}

/// Walks a field section: pseudo-headers first (each passed to `pseudo`), then regular fields
/// (each checked as [`check_field`] does, then its name passed to `regular`).
fn walk<'a>(
    fields: impl IntoIterator<Item = Field<'a>>,
    mut pseudo: impl FnMut(Pseudo, &'a [u8]) -> Result<(), MessageError>,
    mut regular: impl FnMut(&[u8]),
) -> Result<(), MessageError> {
    let mut seen_regular = false;
    for f in fields {
        if f.name.first() == Some(&b':') {
            if seen_regular {
                return Err(MessageError::PseudoAfterRegular);
            }
            let kind = f.pseudo.ok_or(MessageError::UnknownPseudo)?;
            if !is_valid_value(f.value) {
                return Err(MessageError::InvalidValue);
            }
            pseudo(kind, f.value)?;
        } else {
            seen_regular = true;
            // A name the decoder took from HPACK's static table is a lower-case token already.
            if f.static_name.is_none() && !is_valid_name(f.name) {
                return Err(MessageError::InvalidName);
            }
            check_named_field(f.name, f.value)?;
            regular(f.name);
        }
    }
    Ok(())
}

fn set<'a>(slot: &mut Option<&'a [u8]>, kind: Pseudo, value: &'a [u8]) -> Result<(), MessageError> {
    if slot.replace(value).is_some() {
        return Err(MessageError::DuplicatePseudo(kind));
    }
    Ok(())
}

/// Checks a request's field section and returns its pseudo-headers.
///
/// `:method` is always required; `:scheme` and `:path` too, except in a plain CONNECT, which
/// must have `:authority` and neither of them (RFC 9113 section 8.5); `:protocol` is allowed
/// only with CONNECT (RFC 8441), and such an extended CONNECT needs all of them. An `http` or
/// `https` request needs `:authority` or `host`; whether the two agree is for the engine.
pub fn request<'a>(
    fields: impl IntoIterator<Item = Field<'a>>,
) -> Result<RequestPseudo<'a>, MessageError> {
    let (mut method, mut scheme, mut authority, mut path, mut protocol) =
        (None, None, None, None, None);
    let mut host = false;
    walk(
        fields,
        |kind, value| match kind {
            Pseudo::Method => set(&mut method, kind, value),
            Pseudo::Scheme => set(&mut scheme, kind, value),
            Pseudo::Authority => set(&mut authority, kind, value),
            Pseudo::Path => set(&mut path, kind, value),
            Pseudo::Protocol => set(&mut protocol, kind, value),
            Pseudo::Status => Err(MessageError::UnexpectedPseudo(kind)),
        },
        |name| host |= name == b"host",
    )?;
    let method = method.ok_or(MessageError::MissingPseudo(Pseudo::Method))?;
    let req = RequestPseudo { method, scheme, authority, path, protocol };
    if req.is_connect() && protocol.is_none() {
        if scheme.is_some() {
            return Err(MessageError::UnexpectedPseudo(Pseudo::Scheme));
        }
        if path.is_some() {
            return Err(MessageError::UnexpectedPseudo(Pseudo::Path));
        }
        if authority.is_none() {
            return Err(MessageError::MissingPseudo(Pseudo::Authority));
        }
        return Ok(req);
    }
    if protocol.is_some() && !req.is_connect() {
        return Err(MessageError::ProtocolWithoutConnect);
    }
    let Some(scheme) = scheme else {
        return Err(MessageError::MissingPseudo(Pseudo::Scheme));
    };
    match path {
        None => return Err(MessageError::MissingPseudo(Pseudo::Path)),
        Some([]) => return Err(MessageError::EmptyPath),
        Some(_) => {}
    }
    // Schemes with a mandatory authority need `:authority` or `host` (RFC 9113 section 8.3.1).
    if authority.is_none() && !host && matches!(scheme, b"http" | b"https") {
        return Err(MessageError::MissingPseudo(Pseudo::Authority));
    }
    Ok(req)
}

/// Checks a response's field section (an informational or final head) and returns its status.
pub fn response<'a>(
    fields: impl IntoIterator<Item = Field<'a>>,
) -> Result<ResponsePseudo, MessageError> {
    let mut status = None;
    walk(
        fields,
        |kind, value| match kind {
            Pseudo::Status => set(&mut status, kind, value),
            other => Err(MessageError::UnexpectedPseudo(other)),
        },
        |_| (),
    )?;
    match status.ok_or(MessageError::MissingPseudo(Pseudo::Status))? {
        &[a, b, c]
            if a.is_ascii_digit() && a != b'0' && b.is_ascii_digit() && c.is_ascii_digit() =>
        {
            let status = u16::from(a - b'0') * 100 + u16::from(b - b'0') * 10 + u16::from(c - b'0');
            Ok(ResponsePseudo { status })
        }
        _ => Err(MessageError::BadStatus),
    }
}

/// Checks a trailer section: regular fields only.
pub fn trailers<'a>(fields: impl IntoIterator<Item = Field<'a>>) -> Result<(), MessageError> {
    walk(fields, |_, _| Err(MessageError::PseudoInTrailers), |_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields<'a>(list: &[(&'a str, &'a str)]) -> Vec<Field<'a>> {
        list.iter().map(|(n, v)| Field::new(n.as_bytes(), v.as_bytes())).collect()
    }

    const GRPC: &[(&str, &str)] = &[
        (":method", "POST"),
        (":scheme", "http"),
        (":path", "/pkg.Service/Method"),
        (":authority", "backend:50051"),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
        ("grpc-timeout", "1S"),
    ];

    #[test]
    fn the_word_scan_finds_what_a_byte_scan_finds() {
        // Every byte value at every offset of values from 1 to 40 bytes, over a clean filler,
        // so each lands in a whole word and in the remainder.
        for len in 1..=40 {
            for at in 0..len {
                for b in 0..=255u8 {
                    let mut v = vec![b'a'; len];
                    v[at] = b;
                    let naive = v.iter().any(|&c| c == 0 || c == b'\r' || c == b'\n');
                    assert_eq!(has_nul_cr_lf(&v), naive, "len {len}, byte {b} at {at}");
                }
            }
        }
        assert!(!has_nul_cr_lf(b""));
        // Bytes next to the ones looked for, and 0x80, in every lane.
        assert!(!has_nul_cr_lf(&[0x0b, 0x0c, 0x0e, 0x09, 0x01, 0x80, 0xff, 0x8d, 0x8a]));
    }

    #[test]
    fn a_grpc_request_passes() {
        let p = request(fields(GRPC)).unwrap();
        assert_eq!(p.method, b"POST");
        assert_eq!(p.scheme, Some(&b"http"[..]));
        assert_eq!(p.path, Some(&b"/pkg.Service/Method"[..]));
        assert_eq!(p.authority, Some(&b"backend:50051"[..]));
        assert_eq!(p.protocol, None);
    }

    fn req_err(list: &[(&str, &str)]) -> MessageError {
        request(fields(list)).unwrap_err()
    }

    #[test]
    fn request_pseudo_rules() {
        use MessageError as E;
        assert_eq!(
            req_err(&[(":scheme", "http"), (":path", "/")]),
            E::MissingPseudo(Pseudo::Method)
        );
        assert_eq!(
            req_err(&[(":method", "GET"), (":path", "/")]),
            E::MissingPseudo(Pseudo::Scheme)
        );
        assert_eq!(
            req_err(&[(":method", "GET"), (":scheme", "http")]),
            E::MissingPseudo(Pseudo::Path)
        );
        assert_eq!(req_err(&[(":method", "GET"), (":scheme", "h"), (":path", "")]), E::EmptyPath);
        // http and https need an authority, as :authority or host.
        let no_authority = [(":method", "GET"), (":scheme", "https"), (":path", "/")];
        assert_eq!(req_err(&no_authority), E::MissingPseudo(Pseudo::Authority));
        let mut with_host = no_authority.to_vec();
        with_host.push(("host", "example.com"));
        assert_eq!(request(fields(&with_host)).unwrap().authority, None);
        assert!(request(fields(&[(":method", "GET"), (":scheme", "urn"), (":path", "/")])).is_ok());
        assert_eq!(
            req_err(&[(":method", "GET"), (":method", "GET"), (":scheme", "h"), (":path", "/")]),
            E::DuplicatePseudo(Pseudo::Method)
        );
        assert_eq!(
            req_err(&[(":method", "GET"), ("a", "b"), (":scheme", "h"), (":path", "/")]),
            E::PseudoAfterRegular
        );
        assert_eq!(req_err(&[(":method", "GET"), (":foo", "x")]), E::UnknownPseudo);
        assert_eq!(req_err(&[(":status", "200")]), E::UnexpectedPseudo(Pseudo::Status));
        // CONNECT: authority only; extended CONNECT: everything plus :protocol.
        let connect = request(fields(&[(":method", "CONNECT"), (":authority", "h:443")])).unwrap();
        assert!(connect.is_connect());
        assert_eq!(req_err(&[(":method", "CONNECT")]), E::MissingPseudo(Pseudo::Authority));
        assert_eq!(
            req_err(&[(":method", "CONNECT"), (":authority", "h"), (":path", "/")]),
            E::UnexpectedPseudo(Pseudo::Path)
        );
        assert_eq!(
            req_err(&[(":method", "CONNECT"), (":authority", "h"), (":scheme", "https")]),
            E::UnexpectedPseudo(Pseudo::Scheme)
        );
        let ws = [
            (":method", "CONNECT"),
            (":protocol", "websocket"),
            (":scheme", "https"),
            (":path", "/chat"),
            (":authority", "h"),
        ];
        assert_eq!(request(fields(&ws)).unwrap().protocol, Some(&b"websocket"[..]));
        assert_eq!(req_err(&[ws[0], ws[1], ws[4]]), E::MissingPseudo(Pseudo::Scheme));
        assert_eq!(
            req_err(&[
                (":method", "GET"),
                (":protocol", "websocket"),
                (":scheme", "h"),
                (":path", "/")
            ]),
            E::ProtocolWithoutConnect
        );
    }

    #[test]
    fn regular_field_rules() {
        use MessageError as E;
        assert_eq!(check_field(b"content-type", b"application/grpc"), Ok(()));
        assert_eq!(check_field(b"x-empty", b""), Ok(()));
        assert_eq!(check_field(b"Content-Type", b"x"), Err(E::InvalidName));
        assert_eq!(check_field(b"", b"x"), Err(E::InvalidName));
        assert_eq!(check_field(b"a b", b"x"), Err(E::InvalidName));
        assert_eq!(check_field(b"a:b", b"x"), Err(E::InvalidName));
        for name in ["connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade"]
        {
            assert_eq!(check_field(name.as_bytes(), b"x"), Err(E::ConnectionSpecific), "{name}");
        }
        assert_eq!(check_field(b"te", b"trailers"), Ok(()));
        assert_eq!(check_field(b"te", b"gzip"), Err(E::BadTe));
        for bad in [&b"a\0b"[..], b"a\rb", b"a\nb", b" a", b"a ", b"\ta", b"a\t"] {
            assert_eq!(check_field(b"x", bad), Err(E::InvalidValue), "{bad:?}");
        }
        assert_eq!(check_field(b"x", b"a b\tc"), Ok(()));
        assert_eq!(
            req_err(&[
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/"),
                ("connection", "close")
            ]),
            E::ConnectionSpecific
        );
        assert_eq!(req_err(&[(":method", " GET")]), E::InvalidValue);
    }

    #[test]
    fn response_and_trailers() {
        use MessageError as E;
        assert_eq!(
            response(fields(&[(":status", "200"), ("grpc-status", "0")])),
            Ok(ResponsePseudo { status: 200 })
        );
        assert_eq!(response(fields(&[(":status", "103")])), Ok(ResponsePseudo { status: 103 }));
        assert_eq!(response(fields(&[("a", "b")])), Err(E::MissingPseudo(Pseudo::Status)));
        assert_eq!(response(fields(&[(":status", "20")])), Err(E::BadStatus));
        assert_eq!(response(fields(&[(":status", "099")])), Err(E::BadStatus));
        assert_eq!(response(fields(&[(":status", "2x0")])), Err(E::BadStatus));
        assert_eq!(
            response(fields(&[(":status", "200"), (":status", "200")])),
            Err(E::DuplicatePseudo(Pseudo::Status))
        );
        assert_eq!(
            response(fields(&[(":status", "200"), (":path", "/")])),
            Err(E::UnexpectedPseudo(Pseudo::Path))
        );
        assert_eq!(trailers(fields(&[("grpc-status", "0"), ("grpc-message", "ok")])), Ok(()));
        assert_eq!(trailers(fields(&[(":status", "200")])), Err(E::PseudoInTrailers));
        assert_eq!(
            trailers(fields(&[("transfer-encoding", "chunked")])),
            Err(E::ConnectionSpecific)
        );
    }
}
