//! HTTP/1.1 heads: parse a request or response head with `httparse` and write the head to
//! forward in one pass, without allocating.
//!
//! What is rewritten: hop-by-hop headers (RFC 9110 7.6.1, plus any named in `Connection`) are
//! dropped; framing headers are re-emitted from the framing we validated; requests gain
//! `X-Forwarded-For`, `X-Forwarded-Proto` and `Via`. `Host` is forwarded untouched.

use std::io::Write as _;
use std::mem::MaybeUninit;

/// Most header fields Fulcrum parses in one head (`limits.max_headers` is capped to this).
pub const MAX_HEADERS: usize = 256;

/// How a message body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body.
    None,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
    /// Until the sender closes the connection (responses only).
    UntilClose,
}

/// Why a head was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    /// The head is not valid HTTP/1.x.
    #[error("malformed head: {0}")]
    Malformed(&'static str),
    /// Framing headers conflict or are invalid.
    #[error("invalid framing: {0}")]
    Framing(&'static str),
    /// An `Expect` other than `100-continue`.
    #[error("unsupported expectation")]
    Expectation,
    /// The head has more fields than allowed.
    #[error("too many header fields")]
    TooManyHeaders,
}

/// What the proxy needs to know about a parsed request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestInfo {
    /// Bytes of the head in the input buffer.
    pub head_len: usize,
    /// Request body framing.
    pub framing: Framing,
    /// `HEAD` requests get no response body.
    pub is_head: bool,
    /// Safe to send twice (RFC 9110 9.2.2).
    pub idempotent: bool,
    /// The client wants the connection kept open after this exchange.
    pub keep_alive: bool,
    /// The client waits for `100 Continue` before sending the body.
    pub expect_continue: bool,
    /// HTTP/1.0 client.
    pub http10: bool,
    /// The request carried a `Host` header (if not, one is added for the backend).
    pub has_host: bool,
}

/// What the proxy needs to know about a parsed response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseInfo {
    /// Bytes of the head in the input buffer.
    pub head_len: usize,
    /// Status code.
    pub status: u16,
    /// Upstream body framing.
    pub framing: Framing,
    /// The backend keeps the connection open after this response.
    pub upstream_keep_alive: bool,
    /// The client connection stays open after this response.
    pub client_keep_alive: bool,
    /// The body must be de-chunked for an HTTP/1.0 client.
    pub dechunk: bool,
    /// Length of the client head's prefix without the `Connection` line this proxy adds and
    /// the final empty line: the status line and the forwarded headers (what the cache
    /// stores, and where it inserts `X-Cache`).
    pub end_to_end_len: usize,
}

/// A parse outcome: a complete head, or more bytes needed.
pub type Parsed<T> = Result<Option<T>, HeadError>;

/// Headers that describe one connection rather than the message (RFC 9110 7.6.1, plus the
/// proxy-authentication pair): never forwarded, never part of a cache key.
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
pub fn is_hop_by_hop(name: &str) -> bool {
    HOP_BY_HOP.iter().any(|h| h.eq_ignore_ascii_case(name))
}

/// Tokens of every `Connection` header, lowercased on comparison; at most 16 are honoured.
struct ConnectionTokens<'a> {
    tokens: [&'a str; 16],
    len: usize,
}

impl<'a> ConnectionTokens<'a> {
    fn collect(headers: &[httparse::Header<'a>]) -> Self {
        let mut this = Self { tokens: [""; 16], len: 0 };
        for h in headers.iter().filter(|h| h.name.eq_ignore_ascii_case("connection")) {
            let Ok(value) = std::str::from_utf8(h.value) else { continue };
            for token in value.split(',').map(str::trim).filter(|t| !t.is_empty()) {
                if this.len < this.tokens.len() {
                    this.tokens[this.len] = token;
                    this.len += 1;
                }
            }
        }
        this
    }

    fn has(&self, token: &str) -> bool {
        self.tokens[..self.len].iter().any(|t| t.eq_ignore_ascii_case(token))
    }

    /// Whether `name` must not be forwarded because `Connection` names it.
    fn nominates(&self, name: &str) -> bool {
        self.has(name)
    }
}

/// Validated message framing from `Content-Length` and `Transfer-Encoding`.
fn body_framing(headers: &[httparse::Header<'_>]) -> Result<Option<Framing>, HeadError> {
    let mut length: Option<u64> = None;
    let mut chunked = false;
    for h in headers {
        if h.name.eq_ignore_ascii_case("content-length") {
            let value = trim(h.value);
            if value.is_empty() || value.len() > 19 || !value.iter().all(u8::is_ascii_digit) {
                return Err(HeadError::Framing("Content-Length is not a plain number"));
            }
            let n = value.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
            if length.is_some_and(|prev| prev != n) {
                return Err(HeadError::Framing("conflicting Content-Length values"));
            }
            length = Some(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            if chunked || !trim(h.value).eq_ignore_ascii_case(b"chunked") {
                return Err(HeadError::Framing("Transfer-Encoding other than a single chunked"));
            }
            chunked = true;
        }
    }
    match (length, chunked) {
        (Some(_), true) => Err(HeadError::Framing("both Content-Length and Transfer-Encoding")),
        (_, true) => Ok(Some(Framing::Chunked)),
        (Some(n), false) => Ok(Some(Framing::Length(n))),
        (None, false) => Ok(None),
    }
}

fn trim(v: &[u8]) -> &[u8] {
    v.trim_ascii()
}

fn uninit_headers<'a>() -> [MaybeUninit<httparse::Header<'a>>; MAX_HEADERS] {
    [const { MaybeUninit::uninit() }; MAX_HEADERS]
}

fn map_parse_error(e: httparse::Error) -> HeadError {
    match e {
        httparse::Error::TooManyHeaders => HeadError::TooManyHeaders,
        httparse::Error::Version => HeadError::Malformed("unsupported HTTP version"),
        httparse::Error::HeaderName => HeadError::Malformed("invalid header name"),
        httparse::Error::HeaderValue => HeadError::Malformed("invalid header value"),
        httparse::Error::NewLine => HeadError::Malformed("invalid line ending"),
        httparse::Error::Status => HeadError::Malformed("invalid status"),
        httparse::Error::Token => HeadError::Malformed("invalid token"),
    }
}

/// Parses a request head from `input` and writes the head to send upstream into `out`, without
/// the final empty line (the caller may still add `Host`, see [`finish_request_head`]).
///
/// `client_ip` is this connection's peer address, already formatted.
pub fn parse_request(
    input: &[u8],
    max_headers: usize,
    client_ip: &str,
    out: &mut Vec<u8>,
) -> Parsed<RequestInfo> {
    let mut storage = uninit_headers();
    let mut req = httparse::Request::new(&mut []);
    let status = httparse::ParserConfig::default()
        .parse_request_with_uninit_headers(
            &mut req,
            input,
            &mut storage[..max_headers.clamp(1, MAX_HEADERS)],
        )
        .map_err(map_parse_error)?;
    let httparse::Status::Complete(head_len) = status else { return Ok(None) };
    let (Some(method), Some(path), Some(minor)) = (req.method, req.path, req.version) else {
        return Err(HeadError::Malformed("incomplete request line"));
    };
    let headers = &*req.headers;
    let http10 = minor == 0;
    let tokens = ConnectionTokens::collect(headers);
    let declared = body_framing(headers)?;
    if http10 && declared == Some(Framing::Chunked) {
        return Err(HeadError::Framing("chunked request body in HTTP/1.0"));
    }
    let framing = declared.unwrap_or(Framing::None);
    let keep_alive = if http10 { tokens.has("keep-alive") } else { !tokens.has("close") };

    out.clear();
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");

    let mut has_host = false;
    let mut expect_continue = false;
    for h in headers {
        let name = h.name;
        if is_hop_by_hop(name) || tokens.nominates(name) {
            continue;
        }
        if name.eq_ignore_ascii_case("content-length")
            || name.eq_ignore_ascii_case("x-forwarded-proto")
        {
            continue;
        }
        if name.eq_ignore_ascii_case("expect") {
            if !trim(h.value).eq_ignore_ascii_case(b"100-continue") {
                return Err(HeadError::Expectation);
            }
            expect_continue = !http10;
            continue;
        }
        if name.eq_ignore_ascii_case("host") {
            if has_host {
                return Err(HeadError::Malformed("more than one Host"));
            }
            has_host = true;
        }
        if name.eq_ignore_ascii_case("x-forwarded-for") {
            continue;
        }
        push_header(out, name.as_bytes(), h.value);
    }
    if !http10 && !has_host {
        return Err(HeadError::Malformed("HTTP/1.1 request without Host"));
    }
    // Every incoming X-Forwarded-For folds into one line that ends with this client.
    out.extend_from_slice(b"x-forwarded-for: ");
    for h in headers.iter().filter(|h| h.name.eq_ignore_ascii_case("x-forwarded-for")) {
        out.extend_from_slice(trim(h.value));
        out.extend_from_slice(b", ");
    }
    out.extend_from_slice(client_ip.as_bytes());
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(b"x-forwarded-proto: http\r\nvia: 1.1 fulcrum\r\n");
    match framing {
        Framing::Length(n) => {
            let _ = write!(out, "content-length: {n}\r\n");
        }
        Framing::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        Framing::None | Framing::UntilClose => {}
    }
    Ok(Some(RequestInfo {
        head_len,
        framing,
        is_head: method == "HEAD",
        idempotent: matches!(method, "GET" | "HEAD" | "OPTIONS" | "TRACE" | "PUT" | "DELETE"),
        keep_alive,
        expect_continue: expect_continue && framing != Framing::None,
        http10,
        has_host,
    }))
}

/// Ends an upstream request head: adds `Host` for HTTP/1.0 clients that sent none, then the
/// empty line.
pub fn finish_request_head(out: &mut Vec<u8>, info: &RequestInfo, backend_authority: &str) {
    if !info.has_host {
        push_header(out, b"host", backend_authority.as_bytes());
    }
    out.extend_from_slice(b"\r\n");
}

fn push_header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// What the client side of the exchange allows for the response.
#[derive(Debug, Clone, Copy)]
pub struct ClientSide {
    /// The request was `HEAD`.
    pub is_head: bool,
    /// The client is HTTP/1.0.
    pub http10: bool,
    /// Keep the client connection open if the response framing allows it.
    pub keep_alive: bool,
}

/// Outcome of reading a response head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseHead {
    /// A final response; its head for the client is in `out`.
    Final(ResponseInfo),
    /// An interim (1xx) response of this many bytes, to be skipped.
    Interim(usize),
}

/// Parses a response head from `input` and writes the head to send to the client into `out`.
pub fn parse_response(
    input: &[u8],
    max_headers: usize,
    client: ClientSide,
    out: &mut Vec<u8>,
) -> Parsed<ResponseHead> {
    let mut storage = uninit_headers();
    let mut res = httparse::Response::new(&mut []);
    let status = httparse::ParserConfig::default()
        .parse_response_with_uninit_headers(
            &mut res,
            input,
            &mut storage[..max_headers.clamp(1, MAX_HEADERS)],
        )
        .map_err(map_parse_error)?;
    let httparse::Status::Complete(head_len) = status else { return Ok(None) };
    let (Some(code), Some(minor)) = (res.code, res.version) else {
        return Err(HeadError::Malformed("incomplete status line"));
    };
    if code == 101 {
        return Err(HeadError::Malformed("protocol upgrade is not supported"));
    }
    if (100..200).contains(&code) {
        return Ok(Some(ResponseHead::Interim(head_len)));
    }
    let headers = &*res.headers;
    let tokens = ConnectionTokens::collect(headers);
    let declared = body_framing(headers)?;
    let bodiless = client.is_head || code == 204 || code == 304;
    let framing = match declared {
        _ if bodiless => Framing::None,
        Some(f) => f,
        None => Framing::UntilClose,
    };
    let upstream_keep_alive = framing != Framing::UntilClose
        && if minor == 0 { tokens.has("keep-alive") } else { !tokens.has("close") };
    let dechunk = client.http10 && framing == Framing::Chunked;
    let client_keep_alive = client.keep_alive && framing != Framing::UntilClose && !dechunk;

    out.clear();
    let _ = write!(out, "HTTP/1.1 {code} {}\r\n", res.reason.unwrap_or(""));
    for h in headers {
        let name = h.name;
        if is_hop_by_hop(name) || tokens.nominates(name) {
            continue;
        }
        // A bodiless response keeps its Content-Length (it describes the GET body of a HEAD).
        if name.eq_ignore_ascii_case("content-length") && !bodiless {
            continue;
        }
        push_header(out, name.as_bytes(), h.value);
    }
    match framing {
        Framing::Length(n) => {
            let _ = write!(out, "content-length: {n}\r\n");
        }
        Framing::Chunked if !dechunk => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        _ => {}
    }
    let end_to_end_len = out.len();
    if !client_keep_alive {
        out.extend_from_slice(b"connection: close\r\n");
    } else if client.http10 {
        out.extend_from_slice(b"connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");
    Ok(Some(ResponseHead::Final(ResponseInfo {
        head_len,
        status: code,
        framing,
        upstream_keep_alive,
        client_keep_alive,
        dechunk,
        end_to_end_len,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(raw: &str) -> (Parsed<RequestInfo>, String) {
        let mut out = Vec::new();
        let r = parse_request(raw.as_bytes(), 100, "10.0.0.9", &mut out);
        (r, String::from_utf8(out).unwrap())
    }

    #[test]
    fn request_rewrite() {
        let raw = "POST /a?b=1 HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\n\
             Keep-Alive: 5\r\nX-Forwarded-For: 1.1.1.1\r\nContent-Length: 3\r\nX-Other: y\r\n\r\nabc";
        let (r, out) = req(raw);
        let info = r.unwrap().unwrap();
        assert_eq!(info.framing, Framing::Length(3));
        assert!(info.keep_alive && !info.http10 && info.has_host && !info.idempotent);
        assert_eq!(
            out,
            "POST /a?b=1 HTTP/1.1\r\nHost: x\r\nX-Other: y\r\nx-forwarded-for: 1.1.1.1, 10.0.0.9\r\n\
             x-forwarded-proto: http\r\nvia: 1.1 fulcrum\r\ncontent-length: 3\r\n"
        );
        assert_eq!(info.head_len, raw.len() - 3);
    }

    #[test]
    fn request_framing_errors() {
        for bad in [
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +1\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            "GET / HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        ] {
            assert!(req(bad).0.is_err(), "{bad:?}");
        }
        assert_eq!(
            req("PUT / HTTP/1.1\r\nHost: x\r\nExpect: bogus\r\n\r\n").0,
            Err(HeadError::Expectation)
        );
        assert_eq!(req("GET / HTTP/1.1\r\nHost: x\r\n").0, Ok(None));
    }

    #[test]
    fn http10_and_expect() {
        let (r, out) = req("GET / HTTP/1.0\r\n\r\n");
        let info = r.unwrap().unwrap();
        assert!(!info.keep_alive && info.http10 && !info.has_host);
        let mut out = out.into_bytes();
        finish_request_head(&mut out, &info, "b:1");
        assert!(String::from_utf8(out).unwrap().ends_with("host: b:1\r\n\r\n"));
        let (r, out) =
            req("PUT / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n");
        assert!(r.unwrap().unwrap().expect_continue);
        assert!(!out.to_ascii_lowercase().contains("expect"));
    }

    fn res(raw: &str, client: ClientSide) -> (ResponseHead, String) {
        let mut out = Vec::new();
        let r = parse_response(raw.as_bytes(), 100, client, &mut out).unwrap().unwrap();
        (r, String::from_utf8(out).unwrap())
    }

    const KA: ClientSide = ClientSide { is_head: false, http10: false, keep_alive: true };

    #[test]
    fn response_framing() {
        let (r, out) = res("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n", KA);
        let ResponseHead::Final(info) = r else { panic!() };
        assert_eq!(
            (info.framing, info.upstream_keep_alive, info.client_keep_alive),
            (Framing::Length(2), false, true)
        );
        assert_eq!(out, "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n");
        assert_eq!(info.end_to_end_len, out.len() - 2);

        let (r, out) = res("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", KA);
        assert!(matches!(r, ResponseHead::Final(ResponseInfo { framing: Framing::Chunked, .. })));
        assert!(out.contains("transfer-encoding: chunked"));

        let (r, out) = res("HTTP/1.1 200 OK\r\n\r\n", KA);
        let ResponseHead::Final(info) = r else { panic!() };
        assert_eq!((info.framing, info.client_keep_alive), (Framing::UntilClose, false));
        assert!(out.contains("connection: close"));
        assert_eq!(&out[info.end_to_end_len..], "connection: close\r\n\r\n");

        let head = ClientSide { is_head: true, ..KA };
        let (r, out) = res("HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n", head);
        assert!(matches!(r, ResponseHead::Final(ResponseInfo { framing: Framing::None, .. })));
        assert!(out.contains("Content-Length: 99"));

        let old = ClientSide { is_head: false, http10: true, keep_alive: true };
        let (r, out) = res("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", old);
        assert!(matches!(
            r,
            ResponseHead::Final(ResponseInfo { dechunk: true, client_keep_alive: false, .. })
        ));
        assert!(!out.contains("chunked"));

        let (r, _) = res("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n\r\n", KA);
        assert_eq!(r, ResponseHead::Interim(25));
    }
}
