//! HTTP/1.1 heads, both roles, with `httparse` and without allocating: a client's request head
//! is parsed and the head to forward written in one pass ([`parse_request`]); a backend's
//! response head is parsed and validated once ([`parse_backend_response`]) into a
//! [`BackendResponse`], then rendered for whichever protocol the client speaks: HTTP/1.1 bytes
//! ([`BackendResponse::write_h1`]) or an HTTP/2 head ([`BackendResponse::to_h2`]). A request that
//! arrived over HTTP/2 is written for an HTTP/1.1 backend by [`write_h2_request`].
//!
//! The same rules hold in every direction: framing is strict ([`Framing`]: one plain
//! Content-Length or one `chunked`, never both), hop-by-hop fields are dropped by the one rule in
//! [`super::hop`], and framing fields are re-emitted from the framing validated here. Requests
//! gain `X-Forwarded-For`, `X-Forwarded-Proto` and `Via`; `Host` is forwarded untouched.

use std::mem::MaybeUninit;

use fulcrum_util::push_decimal;

use super::hop::{Connection, is_hop_by_hop};

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
    /// The protocol upgrades the request asks for that Fulcrum passes (`Connection: upgrade`
    /// and `Upgrade` protocols on the allowed list, no body): both fields were forwarded,
    /// narrowed to those protocols, and a `101` naming one of them turns the connection into a
    /// tunnel.
    pub upgrade: Offered,
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

/// Room for the fields of one head ([`MAX_HEADERS`]), filled by the parser.
pub type HeaderStorage<'h> = [MaybeUninit<httparse::Header<'h>>; MAX_HEADERS];

/// Empty field storage for one parse (on the stack; nothing is initialised).
pub fn header_storage<'h>() -> HeaderStorage<'h> {
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
/// `client` says who sent it (`X-Forwarded-For`, `X-Forwarded-Proto`); `upgrades` lists the
/// protocols whose `Upgrade` is passed (lower-case tokens, see [`Offered`]).
pub fn parse_request(
    input: &[u8],
    max_headers: usize,
    client: &Forwarded<'_>,
    upgrades: &[String],
    out: &mut Vec<u8>,
) -> Parsed<RequestInfo> {
    Ok(parse_request_with(input, max_headers, client, upgrades, out, |_| ())?
        .map(|(info, ())| info))
}

/// The parsed parts of a valid request head, lent to [`parse_request_with`]'s `inspect` while
/// the parser's field storage is still alive (the proxy routes on them: no second parse, no
/// copy).
#[derive(Debug, Clone, Copy)]
pub struct RequestHead<'h> {
    /// The method.
    pub method: &'h str,
    /// The request target as received.
    pub target: &'h str,
    /// The `Host` field's value, if any.
    pub host: Option<&'h [u8]>,
    /// Every header field as received.
    pub headers: &'h [httparse::Header<'h>],
}

/// [`parse_request`] that also hands the parsed head to `inspect` once it is complete and
/// valid, and returns what `inspect` made of it with the request's facts.
pub fn parse_request_with<R>(
    input: &[u8],
    max_headers: usize,
    client: &Forwarded<'_>,
    upgrades: &[String],
    out: &mut Vec<u8>,
    inspect: impl FnOnce(&RequestHead<'_>) -> R,
) -> Parsed<(RequestInfo, R)> {
    let mut storage = header_storage();
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
    let connection = Connection::of(headers);
    let declared = body_framing(headers)?;
    if http10 && declared == Some(Framing::Chunked) {
        return Err(HeadError::Framing("chunked request body in HTTP/1.0"));
    }
    let framing = declared.unwrap_or(Framing::None);
    let keep_alive = if http10 { connection.has(b"keep-alive") } else { !connection.has(b"close") };
    // A protocol upgrade on the allowed list keeps its two hop-by-hop fields (RFC 9110 7.8),
    // narrowed to the allowed protocols. Not from HTTP/1.0 (RFC 9110 7.8: ignored there), and
    // not with a body: where the body would end and the new protocol begin is then for the
    // backend to decide, so such a request is forwarded as an ordinary one.
    let bodiless = matches!(framing, Framing::None | Framing::Length(0));
    let mut upgrade = Offered::NONE;
    if !http10 && bodiless && !upgrades.is_empty() && connection.has(b"upgrade") {
        for element in upgrade_elements(headers) {
            if let Some(i) = allowed_index(element, upgrades) {
                upgrade.0 |= Offered::only(i).0;
            }
        }
    }

    out.clear();
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");

    let mut host = None;
    let mut expect_continue = false;
    for h in headers {
        let name = h.name;
        if connection.drops(name.as_bytes()) {
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
            if host.is_some() {
                return Err(HeadError::Malformed("more than one Host"));
            }
            host = Some(h.value);
        }
        if name.eq_ignore_ascii_case("x-forwarded-for") {
            continue;
        }
        push_header(out, name.as_bytes(), h.value);
    }
    let has_host = host.is_some();
    if !http10 && !has_host {
        return Err(HeadError::Malformed("HTTP/1.1 request without Host"));
    }
    // Every incoming X-Forwarded-For folds into one line that ends with this client (none when
    // a Connection line names the field: it is hop-by-hop then, like any other).
    out.extend_from_slice(b"x-forwarded-for: ");
    let folded = |h: &&httparse::Header<'_>| {
        h.name.eq_ignore_ascii_case("x-forwarded-for") && !connection.drops(h.name.as_bytes())
    };
    for h in headers.iter().filter(folded) {
        out.extend_from_slice(trim(h.value));
        out.extend_from_slice(b", ");
    }
    out.extend_from_slice(client.ip.as_bytes());
    out.extend_from_slice(b"\r\nx-forwarded-proto: ");
    out.extend_from_slice(client.proto.as_bytes());
    out.extend_from_slice(b"\r\nvia: 1.1 fulcrum\r\n");
    if !upgrade.is_empty() {
        out.extend_from_slice(b"connection: upgrade\r\nupgrade: ");
        let offered = upgrade_elements(headers).filter(|e| allowed_index(e, upgrades).is_some());
        for (k, element) in offered.enumerate() {
            if k > 0 {
                out.extend_from_slice(b", ");
            }
            out.extend_from_slice(element);
        }
        out.extend_from_slice(b"\r\n");
    }
    push_framing(out, framing);
    let inspected = inspect(&RequestHead { method, target: path, host, headers });
    let info = RequestInfo {
        head_len,
        framing,
        is_head: method == "HEAD",
        idempotent: matches!(method, "GET" | "HEAD" | "OPTIONS" | "TRACE" | "PUT" | "DELETE"),
        keep_alive,
        expect_continue: expect_continue && framing != Framing::None,
        http10,
        has_host,
        upgrade,
    };
    Ok(Some((info, inspected)))
}

/// Most protocols `[upgrade] protocols` may list (they index the bits of [`Offered`]).
pub const MAX_UPGRADE_PROTOCOLS: usize = 32;

/// Which protocols of the allowed list (`[upgrade] protocols`) a request offered in its
/// `Upgrade` field: bit `i` is protocol `i`. Empty when the request asks for no upgrade
/// Fulcrum passes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Offered(u32);

impl Offered {
    /// No upgrade asked for.
    pub const NONE: Offered = Offered(0);

    /// Whether no passed protocol was offered.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Whether protocol `index` of the allowed list was offered.
    pub fn contains(self, index: usize) -> bool {
        index < MAX_UPGRADE_PROTOCOLS && self.0 & (1 << index) != 0
    }

    /// Protocol `index` of the allowed list alone.
    pub fn only(index: usize) -> Offered {
        if index < MAX_UPGRADE_PROTOCOLS { Offered(1 << index) } else { Offered::NONE }
    }
}

/// The elements of `Upgrade` field values (`name` or `name/version`), trimmed, empty ones
/// skipped.
fn upgrade_elements<'h>(
    headers: &'h [httparse::Header<'h>],
) -> impl Iterator<Item = &'h [u8]> + 'h {
    headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("upgrade"))
        .flat_map(|h| h.value.split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|e| !e.is_empty())
}

/// The index in `allowed` of the protocol an `Upgrade` element names (its name, before any
/// `/version`, compared case-insensitively).
fn allowed_index(element: &[u8], allowed: &[String]) -> Option<usize> {
    let name = element.split(|&b| b == b'/').next().unwrap_or_default().trim_ascii();
    allowed
        .iter()
        .take(MAX_UPGRADE_PROTOCOLS)
        .position(|a| !name.is_empty() && a.as_bytes().eq_ignore_ascii_case(name))
}

/// Ends an upstream request head: adds `Host` for HTTP/1.0 clients that sent none, then the
/// empty line.
pub fn finish_request_head(out: &mut Vec<u8>, info: &RequestInfo, backend_authority: &str) {
    if !info.has_host {
        push_header(out, b"host", backend_authority.as_bytes());
    }
    out.extend_from_slice(b"\r\n");
}

/// Appends an HTTP/1.1 status line.
pub(crate) fn push_status_line(out: &mut Vec<u8>, status: u16, reason: &str) {
    out.extend_from_slice(b"HTTP/1.1 ");
    push_decimal(out, u64::from(status));
    out.push(b' ');
    out.extend_from_slice(reason.as_bytes());
    out.extend_from_slice(b"\r\n");
}

fn push_header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Who a forwarded request came from, for the fields Fulcrum adds.
#[derive(Debug, Clone, Copy)]
pub struct Forwarded<'a> {
    /// The client's address, formatted (`X-Forwarded-For`).
    pub ip: &'a str,
    /// `http` or `https`: the scheme the client used (`X-Forwarded-Proto`).
    pub proto: &'a str,
}

/// Appends the framing field of a body Fulcrum re-frames (nothing for no body, or a body that
/// ends with the connection).
pub(crate) fn push_framing(out: &mut Vec<u8>, framing: Framing) {
    match framing {
        Framing::Length(n) => {
            out.extend_from_slice(b"content-length: ");
            push_decimal(out, n);
            out.extend_from_slice(b"\r\n");
        }
        Framing::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        Framing::None | Framing::UntilClose => {}
    }
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
    /// The protocol upgrades the request asked for ([`RequestInfo::upgrade`]): a `101` is a
    /// switch only to one of them.
    pub upgrade: Offered,
}

/// The start of a backend's answer.
#[derive(Debug)]
pub enum ResponseStart<'h> {
    /// The final response head.
    Final(BackendResponse<'h>),
    /// An interim (1xx) response other than `101`: `103 Early Hints` is forwarded
    /// ([`BackendResponse::write_h1_interim`], [`BackendResponse::to_h2`]), the others are not.
    Interim(BackendResponse<'h>),
    /// `101 Switching Protocols`: a tunnel when the request asked for the upgrade, a bad
    /// answer otherwise.
    Switching(BackendResponse<'h>),
}

/// A backend's final response head, validated once, whatever protocol the client speaks:
/// framing strict as for requests, hop-by-hop fields known. Borrows the input buffer.
#[derive(Debug)]
pub struct BackendResponse<'h> {
    /// Bytes of the head in the input buffer.
    pub head_len: usize,
    /// Status code (100..=599; a 1xx comes as [`ResponseStart::Interim`] or
    /// [`ResponseStart::Switching`]).
    pub status: u16,
    /// Reason phrase as sent.
    pub reason: &'h str,
    /// Body framing; [`Framing::None`] for `HEAD` requests, `204` and `304` whatever the
    /// fields say, [`Framing::UntilClose`] when the backend declares none.
    pub framing: Framing,
    /// The backend keeps the connection open after this response.
    pub keep_alive: bool,
    /// The response has no body whatever its fields say (its Content-Length describes the
    /// body a GET would get, and is forwarded as is).
    pub bodiless: bool,
    headers: &'h [httparse::Header<'h>],
    /// Its `Connection` fields, worked out once for [`end_to_end`](Self::end_to_end).
    connection: Connection<'h, 'h>,
}

/// Parses a backend's response head from `input` (fields into `storage`, at most
/// `max_headers`), for a request that was `HEAD` or not.
pub fn parse_backend_response<'h>(
    input: &'h [u8],
    storage: &'h mut HeaderStorage<'h>,
    max_headers: usize,
    is_head: bool,
) -> Parsed<ResponseStart<'h>> {
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
    if !(100..=599).contains(&code) {
        return Err(HeadError::Malformed("status code out of range"));
    }
    let headers = res.headers;
    let connection = Connection::of(headers);
    if code < 200 {
        let head = BackendResponse {
            head_len,
            status: code,
            reason: res.reason.unwrap_or(""),
            framing: Framing::None,
            keep_alive: false,
            bodiless: false,
            headers,
            connection,
        };
        return Ok(Some(if code == 101 {
            ResponseStart::Switching(head)
        } else {
            ResponseStart::Interim(head)
        }));
    }
    let declared = body_framing(headers)?;
    let bodiless = is_head || code == 204 || code == 304;
    let framing = match declared {
        _ if bodiless => Framing::None,
        Some(f) => f,
        None => Framing::UntilClose,
    };
    let keep_alive = framing != Framing::UntilClose
        && if minor == 0 { connection.has(b"keep-alive") } else { !connection.has(b"close") };
    Ok(Some(ResponseStart::Final(BackendResponse {
        head_len,
        status: code,
        reason: res.reason.unwrap_or(""),
        framing,
        keep_alive,
        bodiless,
        headers,
        connection,
    })))
}

impl<'h> BackendResponse<'h> {
    /// The fields to forward: hop-by-hop fields and `Content-Length` dropped (framing is
    /// re-emitted from [`framing`](Self::framing)), except that a bodiless response keeps its
    /// `Content-Length`.
    pub fn end_to_end(&self) -> impl Iterator<Item = &httparse::Header<'h>> {
        let connection = self.connection;
        let bodiless = self.bodiless;
        self.headers.iter().filter(move |h| {
            !connection.drops(h.name.as_bytes())
                && (bodiless || !h.name.eq_ignore_ascii_case("content-length"))
        })
    }

    /// Writes the head for an HTTP/1.1 (or 1.0) client into `out` and says how the exchange
    /// continues.
    pub fn write_h1(&self, client: ClientSide, out: &mut Vec<u8>) -> ResponseInfo {
        let dechunk = client.http10 && self.framing == Framing::Chunked;
        let client_keep_alive =
            client.keep_alive && self.framing != Framing::UntilClose && !dechunk;
        out.clear();
        push_status_line(out, self.status, self.reason);
        for h in self.end_to_end() {
            push_header(out, h.name.as_bytes(), h.value);
        }
        if !dechunk {
            push_framing(out, self.framing);
        }
        let end_to_end_len = out.len();
        if !client_keep_alive {
            out.extend_from_slice(b"connection: close\r\n");
        } else if client.http10 {
            out.extend_from_slice(b"connection: keep-alive\r\n");
        }
        out.extend_from_slice(b"\r\n");
        ResponseInfo {
            head_len: self.head_len,
            status: self.status,
            framing: self.framing,
            upstream_keep_alive: self.keep_alive,
            client_keep_alive,
            dechunk,
            end_to_end_len,
        }
    }

    /// Writes an interim (`103 Early Hints`) head for an HTTP/1.1 client: the status line and
    /// the end-to-end fields.
    pub fn write_h1_interim(&self, out: &mut Vec<u8>) {
        out.clear();
        push_status_line(out, self.status, self.reason);
        for h in self.end_to_end() {
            push_header(out, h.name.as_bytes(), h.value);
        }
        out.extend_from_slice(b"\r\n");
    }

    /// Writes a `101 Switching Protocols` head for an HTTP/1.1 client whose request asked for
    /// the upgrade: the end-to-end fields plus `Connection: upgrade` and the backend's
    /// `Upgrade`. `None` when the backend named no protocol.
    pub fn write_h1_switching(&self, out: &mut Vec<u8>) -> Option<()> {
        let upgrade = self.field("upgrade")?;
        out.clear();
        push_status_line(out, 101, self.reason);
        for h in self.end_to_end() {
            push_header(out, h.name.as_bytes(), h.value);
        }
        out.extend_from_slice(b"connection: upgrade\r\n");
        push_header(out, b"upgrade", upgrade);
        out.extend_from_slice(b"\r\n");
        Some(())
    }

    /// The value of the first field named `name` (case-insensitive), if any.
    pub fn field(&self, name: &str) -> Option<&'h [u8]> {
        self.headers.iter().find(|h| h.name.eq_ignore_ascii_case(name)).map(|h| h.value)
    }

    /// For a `101`: the index in `allowed` of the protocol the backend switched to, when it
    /// names exactly one protocol (its `Upgrade` field) and the request `offered` it; `None`
    /// is a switch nobody asked for.
    pub fn switched_to(&self, allowed: &[String], offered: Offered) -> Option<usize> {
        let mut elements = upgrade_elements(self.headers);
        let (Some(chosen), None) = (elements.next(), elements.next()) else { return None };
        allowed_index(chosen, allowed).filter(|&i| offered.contains(i))
    }

    /// The head for an HTTP/2 client: names lower-cased, no connection-specific field (RFC 9113
    /// 8.2.2; they are all hop-by-hop), and a `content-length` only where the framing validated
    /// one.
    pub fn to_h2(&self) -> Result<http::Response<()>, HeadError> {
        let mut res = http::Response::new(());
        *res.status_mut() = http::StatusCode::from_u16(self.status)
            .map_err(|_| HeadError::Malformed("status code out of range"))?;
        let fields = res.headers_mut();
        for h in self.end_to_end() {
            let name = http::HeaderName::from_bytes(h.name.as_bytes())
                .map_err(|_| HeadError::Malformed("invalid header name"))?;
            let value = http::HeaderValue::from_bytes(h.value)
                .map_err(|_| HeadError::Malformed("invalid header value"))?;
            fields.append(name, value);
        }
        if let Framing::Length(n) = self.framing {
            fields.insert(http::header::CONTENT_LENGTH, http::HeaderValue::from(n));
        }
        Ok(res)
    }
}

/// Outcome of reading a response head for an HTTP/1.1 client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseHead {
    /// A final response; its head for the client is in `out`.
    Final(ResponseInfo),
    /// An interim (1xx) response of `len` bytes; `forward`: it is a `103 Early Hints`, whose
    /// head for the client is in `out`.
    Interim {
        /// Bytes of the interim head in the input.
        len: usize,
        /// Whether to forward it (the head is in `out`).
        forward: bool,
    },
    /// `101 Switching Protocols` of `len` bytes. When it switches to a protocol the request
    /// offered, its head for the client is in `out`; otherwise it is a bad answer.
    Switching {
        /// Bytes of the head in the input.
        len: usize,
        /// The index in the allowed list of the protocol switched to; `None`: a switch the
        /// request did not ask for (or to a protocol it did not offer).
        protocol: Option<usize>,
    },
}

/// Parses a response head from `input` and writes the head to send to an HTTP/1.1 client
/// into `out` ([`parse_backend_response`] then [`BackendResponse::write_h1`]).
/// A `101` is checked against `upgrades`, the allowed list the request was parsed with.
pub fn parse_response(
    input: &[u8],
    max_headers: usize,
    client: ClientSide,
    upgrades: &[String],
    out: &mut Vec<u8>,
) -> Parsed<ResponseHead> {
    let mut storage = header_storage();
    Ok(match parse_backend_response(input, &mut storage, max_headers, client.is_head)? {
        None => None,
        Some(ResponseStart::Interim(res)) => {
            let forward = res.status == 103 && !client.http10;
            if forward {
                res.write_h1_interim(out);
            }
            Some(ResponseHead::Interim { len: res.head_len, forward })
        }
        Some(ResponseStart::Switching(res)) => {
            let protocol = res.switched_to(upgrades, client.upgrade);
            if protocol.is_some() {
                res.write_h1_switching(out);
            }
            Some(ResponseHead::Switching { len: res.head_len, protocol })
        }
        Some(ResponseStart::Final(res)) => Some(ResponseHead::Final(res.write_h1(client, out))),
    })
}

/// Writes the HTTP/1.1 head of a request that arrived over HTTP/2, for an HTTP/1.1 backend:
/// `Host` from `:authority` (else the request's `host`, else the backend's authority), cookie
/// fields joined into one (RFC 9113 8.2.3), hop-by-hop fields (`te`) and any incoming
/// `X-Forwarded-Proto` dropped, then `X-Forwarded-Proto`, `Via` and the body framing.
/// `X-Forwarded-For` is expected among the request's fields already.
pub fn write_h2_request(
    parts: &http::request::Parts,
    backend_authority: &str,
    proto: &str,
    framing: Framing,
    out: &mut Vec<u8>,
) {
    let head = H2RequestHead::of(parts);
    let fields = || parts.headers.iter().map(|(n, v)| (n.as_str().as_bytes(), v.as_bytes()));
    write_h2_request_fields(&head, fields, backend_authority, proto, framing, out);
}

/// The pseudo-header fields of an HTTP/2 request that [`write_h2_request_fields`] needs.
#[derive(Debug, Clone, Copy)]
pub struct H2RequestHead<'a> {
    /// `:method`.
    pub method: &'a [u8],
    /// `:path` (`/` when absent).
    pub path: &'a [u8],
    /// `:authority`, if present.
    pub authority: Option<&'a [u8]>,
}

impl<'a> H2RequestHead<'a> {
    /// The pseudo-header fields of a request held as [`http::request::Parts`].
    pub fn of(parts: &'a http::request::Parts) -> Self {
        H2RequestHead {
            method: parts.method.as_str().as_bytes(),
            path: parts.uri.path_and_query().map_or("/", |p| p.as_str()).as_bytes(),
            authority: parts.uri.authority().map(|a| a.as_str().as_bytes()),
        }
    }
}

/// [`write_h2_request`] for a request whose fields are name/value pairs (names lower case, as
/// HTTP/2 requires), without the pseudo-header fields; `fields` iterates them afresh at each
/// call (the head is written in three passes: host, cookies, the rest).
pub fn write_h2_request_fields<'a, I>(
    head: &H2RequestHead<'_>,
    fields: impl Fn() -> I,
    backend_authority: &str,
    proto: &str,
    framing: Framing,
    out: &mut Vec<u8>,
) where
    I: Iterator<Item = (&'a [u8], &'a [u8])>,
{
    write_h2_head(head, fields, backend_authority, proto, out);
    push_framing(out, framing);
    out.extend_from_slice(b"\r\n");
}

/// Writes the HTTP/1.1 upgrade request for an HTTP/2 extended CONNECT (RFC 8441) to
/// `protocol` (`websocket`): a `GET` of the stream's `:path` with the fields as
/// [`write_h2_request`] writes them, plus `Connection: upgrade`, `Upgrade: protocol` and the
/// `extra` fields (for WebSocket, the `Sec-WebSocket-Key` HTTP/2 does not carry).
pub fn write_h2_upgrade(
    parts: &http::request::Parts,
    backend_authority: &str,
    proto: &str,
    protocol: &str,
    extra: &[(&str, &[u8])],
    out: &mut Vec<u8>,
) {
    let head = H2RequestHead::of(parts);
    let fields = || parts.headers.iter().map(|(n, v)| (n.as_str().as_bytes(), v.as_bytes()));
    write_h2_upgrade_fields(&head, fields, backend_authority, proto, protocol, extra, out);
}

/// [`write_h2_upgrade`] for a request whose fields are name/value pairs, as
/// [`write_h2_request_fields`] takes them (`head.method` is ignored: the upgrade is a `GET`).
pub fn write_h2_upgrade_fields<'a, I>(
    head: &H2RequestHead<'_>,
    fields: impl Fn() -> I,
    backend_authority: &str,
    proto: &str,
    protocol: &str,
    extra: &[(&str, &[u8])],
    out: &mut Vec<u8>,
) where
    I: Iterator<Item = (&'a [u8], &'a [u8])>,
{
    let head = H2RequestHead { method: b"GET", ..*head };
    write_h2_head(&head, fields, backend_authority, proto, out);
    out.extend_from_slice(b"connection: upgrade\r\n");
    push_header(out, b"upgrade", protocol.as_bytes());
    for (name, value) in extra {
        push_header(out, name.as_bytes(), value);
    }
    out.extend_from_slice(b"\r\n");
}

/// The request line and fields of [`write_h2_request_fields`], without framing or the empty
/// line.
fn write_h2_head<'a, I>(
    head: &H2RequestHead<'_>,
    fields: impl Fn() -> I,
    backend_authority: &str,
    proto: &str,
    out: &mut Vec<u8>,
) where
    I: Iterator<Item = (&'a [u8], &'a [u8])>,
{
    out.clear();
    out.extend_from_slice(head.method);
    out.push(b' ');
    out.extend_from_slice(head.path);
    out.extend_from_slice(b" HTTP/1.1\r\nhost: ");
    let host = head
        .authority
        .or_else(|| fields().find(|(n, _)| *n == b"host").map(|(_, v)| v))
        .unwrap_or(backend_authority.as_bytes());
    out.extend_from_slice(host);
    out.extend_from_slice(b"\r\n");
    let mut cookies = fields().filter(|(n, _)| *n == b"cookie");
    if let Some((_, first)) = cookies.next() {
        out.extend_from_slice(b"cookie: ");
        out.extend_from_slice(first);
        for (_, more) in cookies {
            out.extend_from_slice(b"; ");
            out.extend_from_slice(more);
        }
        out.extend_from_slice(b"\r\n");
    }
    for (name, value) in fields() {
        let skip = is_hop_by_hop(name)
            || matches!(name, b"host" | b"cookie" | b"content-length" | b"x-forwarded-proto");
        if !skip {
            push_header(out, name, value);
        }
    }
    out.extend_from_slice(b"x-forwarded-proto: ");
    out.extend_from_slice(proto.as_bytes());
    out.extend_from_slice(b"\r\nvia: 2 fulcrum\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_h2_request_becomes_an_h1_head() {
        let fields: &[(&[u8], &[u8])] = &[
            (b"cookie", b"a=1"),
            (b"te", b"trailers"),
            (b"x-forwarded-proto", b"gopher"),
            (b"cookie", b"b=2"),
            (b"x-forwarded-for", b"10.0.0.1"),
            (b"host", b"from-host"),
            (b"content-length", b"3"),
        ];
        let mut out = Vec::new();
        let head = H2RequestHead { method: b"POST", path: b"/p?q", authority: Some(b"a.example") };
        let iter = || fields.iter().copied();
        write_h2_request_fields(&head, iter, "backend:80", "https", Framing::Length(3), &mut out);
        assert_eq!(
            String::from_utf8(out.clone()).unwrap(),
            "POST /p?q HTTP/1.1\r\nhost: a.example\r\ncookie: a=1; b=2\r\n\
             x-forwarded-for: 10.0.0.1\r\nx-forwarded-proto: https\r\nvia: 2 fulcrum\r\n\
             content-length: 3\r\n\r\n"
        );
        // Without :authority, `host`; without either, the backend's authority.
        let head = H2RequestHead { authority: None, ..head };
        write_h2_request_fields(&head, iter, "backend:80", "http", Framing::None, &mut out);
        assert!(out.starts_with(b"POST /p?q HTTP/1.1\r\nhost: from-host\r\n"));
        write_h2_request_fields(
            &head,
            || [].into_iter(),
            "backend:80",
            "http",
            Framing::None,
            &mut out,
        );
        assert!(out.starts_with(b"POST /p?q HTTP/1.1\r\nhost: backend:80\r\n"));
    }

    fn req(raw: &str) -> (Parsed<RequestInfo>, String) {
        let mut out = Vec::new();
        let client = Forwarded { ip: "10.0.0.9", proto: "http" };
        let r = parse_request(raw.as_bytes(), 100, &client, &upgrades(), &mut out);
        (r, String::from_utf8(out).unwrap())
    }

    fn upgrades() -> Vec<String> {
        vec!["websocket".to_owned(), "h2c".to_owned()]
    }

    #[test]
    fn an_allowed_upgrade_keeps_its_fields_narrowed_to_the_allowed_protocols() {
        let raw = "GET /chat HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, Upgrade\r\n\
                   Upgrade: foo/2, WebSocket\r\nSec-WebSocket-Key: k\r\n\r\n";
        let (r, out) = req(raw);
        let info = r.unwrap().unwrap();
        assert_eq!(info.upgrade, Offered::only(0));
        assert!(info.upgrade.contains(0) && !info.upgrade.contains(1));
        assert!(out.ends_with("via: 1.1 fulcrum\r\nconnection: upgrade\r\nupgrade: WebSocket\r\n"));
        assert!(out.contains("Sec-WebSocket-Key: k\r\n"));
        assert!(!out.contains("keep-alive") && !out.contains("foo"));

        // Not passed: no `Connection: upgrade`, a protocol not on the list, HTTP/1.0, a body,
        // or no list at all. The fields are dropped as hop-by-hop, as before.
        for raw in [
            "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: irc\r\n\r\n",
            "GET / HTTP/1.0\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\
             Content-Length: 2\r\n\r\nab",
        ] {
            let (r, out) = req(raw);
            assert_eq!(r.unwrap().unwrap().upgrade, Offered::NONE, "{raw:?}");
            assert!(!out.to_ascii_lowercase().contains("upgrade"), "{raw:?}: {out:?}");
        }
        let mut out = Vec::new();
        let client = Forwarded { ip: "10.0.0.9", proto: "http" };
        let raw = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n";
        let info = parse_request(raw, 100, &client, &[], &mut out).unwrap().unwrap();
        assert_eq!(info.upgrade, Offered::NONE);
    }

    #[test]
    fn a_switch_is_valid_only_to_a_protocol_the_request_offered() {
        let asked = ClientSide { upgrade: Offered::only(0), ..KA };
        let ok = "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n\
                  Upgrade: websocket\r\nSec-WebSocket-Accept: a\r\n\r\n";
        let (r, out) = res(ok, asked);
        assert_eq!(r, ResponseHead::Switching { len: ok.len(), protocol: Some(0) });
        assert_eq!(
            out,
            "HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Accept: a\r\n\
             connection: upgrade\r\nupgrade: websocket\r\n\r\n"
        );
        // Nobody asked, another protocol, no protocol named, two named.
        for (raw, client) in [
            (ok, KA),
            ("HTTP/1.1 101 S\r\nUpgrade: h2c\r\n\r\n", asked),
            ("HTTP/1.1 101 S\r\n\r\n", asked),
            ("HTTP/1.1 101 S\r\nUpgrade: websocket, h2c\r\n\r\n", asked),
        ] {
            let (r, _) = res(raw, client);
            assert_eq!(r, ResponseHead::Switching { len: raw.len(), protocol: None }, "{raw:?}");
        }
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
    fn x_forwarded_for_named_by_connection_is_not_folded() {
        let raw = "GET / HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 6.6.6.6\r\n\
                   Connection: X-Forwarded-For\r\n\r\n";
        let (r, out) = req(raw);
        r.unwrap().unwrap();
        assert!(!out.contains("6.6.6.6"), "{out:?}");
        assert!(out.contains("x-forwarded-for: 10.0.0.9\r\n"), "{out:?}");
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
        let r =
            parse_response(raw.as_bytes(), 100, client, &upgrades(), &mut out).unwrap().unwrap();
        (r, String::from_utf8(out).unwrap())
    }

    const KA: ClientSide =
        ClientSide { is_head: false, http10: false, keep_alive: true, upgrade: Offered::NONE };

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

        let old = ClientSide { http10: true, ..KA };
        let (r, out) = res("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", old);
        assert!(matches!(
            r,
            ResponseHead::Final(ResponseInfo { dechunk: true, client_keep_alive: false, .. })
        ));
        assert!(!out.contains("chunked"));

        let (r, _) = res("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n\r\n", KA);
        assert_eq!(r, ResponseHead::Interim { len: 25, forward: false });
        let (r, out) =
            res("HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\nConnection: x\r\n\r\n", KA);
        assert_eq!(r, ResponseHead::Interim { len: 59, forward: true });
        assert_eq!(out, "HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n");
    }
}

#[cfg(test)]
mod backend_response_tests {
    use super::*;

    fn parse(raw: &str, is_head: bool) -> Result<Option<(u16, Framing, bool)>, HeadError> {
        let mut storage = header_storage();
        Ok(match parse_backend_response(raw.as_bytes(), &mut storage, 100, is_head)? {
            Some(ResponseStart::Final(r)) => Some((r.status, r.framing, r.keep_alive)),
            Some(ResponseStart::Interim(r)) => Some((r.status, Framing::None, true)),
            Some(ResponseStart::Switching(r)) => Some((r.status, Framing::None, true)),
            None => None,
        })
    }

    /// Every framing rule that holds for requests holds for backend responses, whatever the
    /// client speaks: the one parser refuses these before either renderer runs.
    #[test]
    fn malformed_backend_heads_are_refused() {
        for bad in [
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: +2\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
            "HTTP/1.1 2000 OK\r\n\r\n",
            "HTTP/1.1 099 Odd\r\n\r\n",
            "HTTP/1.1 700 Odd\r\n\r\n",
            "HTTP/2.0 200 OK\r\n\r\n",
            "HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n",
        ] {
            assert!(parse(bad, false).is_err(), "{bad:?}");
        }
        assert_eq!(parse("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n", false), Ok(None));
        assert_eq!(
            parse("HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n", false),
            Ok(Some((103, Framing::None, true)))
        );
        assert_eq!(
            parse("HTTP/1.1 204 No Content\r\nContent-Length: 7\r\n\r\n", false),
            Ok(Some((204, Framing::None, true)))
        );
        assert_eq!(
            parse("HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n", true),
            Ok(Some((200, Framing::None, true)))
        );
        assert_eq!(
            parse("HTTP/1.0 200 OK\r\nContent-Length: 7\r\n\r\n", false),
            Ok(Some((200, Framing::Length(7), false)))
        );
    }

    #[test]
    fn the_http2_head_carries_no_connection_field_and_a_validated_length() {
        let raw = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: keep-alive, X-Hop\r\n\
                   X-Hop: 1\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\nUpgrade: h2c\r\n\
                   Proxy-Connection: close\r\nContent-Length: 5\r\nX-End: ok\r\n\r\nhello";
        let mut storage = header_storage();
        let Ok(Some(ResponseStart::Final(res))) =
            parse_backend_response(raw.as_bytes(), &mut storage, 100, false)
        else {
            panic!("not parsed")
        };
        assert_eq!(res.head_len, raw.len() - 5);
        let h2 = res.to_h2().unwrap();
        let names: Vec<&str> = h2.headers().keys().map(http::HeaderName::as_str).collect();
        assert_eq!(names, ["content-type", "x-end", "content-length"]);
        assert_eq!(h2.headers()["content-length"], "5");
        let mut out = Vec::new();
        let client =
            ClientSide { is_head: false, http10: false, keep_alive: true, upgrade: Offered::NONE };
        let info = res.write_h1(client, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-End: ok\r\ncontent-length: 5\r\n\r\n"
        );
        assert!(info.client_keep_alive && info.upstream_keep_alive);

        // Chunked: no content-length for HTTP/2 (DATA frames end the body).
        let raw = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
        let mut storage = header_storage();
        let Ok(Some(ResponseStart::Final(res))) =
            parse_backend_response(raw.as_bytes(), &mut storage, 100, false)
        else {
            panic!("not parsed")
        };
        assert_eq!(res.framing, Framing::Chunked);
        assert!(res.to_h2().unwrap().headers().is_empty());
    }

    #[test]
    fn an_http2_request_is_written_once_for_an_http1_backend() {
        let req = http::Request::builder()
            .method("POST")
            .uri("http://example.test/a?b=1")
            .header("te", "trailers")
            .header("cookie", "a=1")
            .header("cookie", "b=2")
            .header("x-forwarded-proto", "https")
            .header("x-forwarded-for", "10.0.0.1")
            .header("content-length", "3")
            .body(())
            .unwrap();
        let (parts, ()) = req.into_parts();
        let mut out = Vec::new();
        write_h2_request(&parts, "backend:1", "http", Framing::Length(3), &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "POST /a?b=1 HTTP/1.1\r\nhost: example.test\r\ncookie: a=1; b=2\r\n\
             x-forwarded-for: 10.0.0.1\r\nx-forwarded-proto: http\r\nvia: 2 fulcrum\r\n\
             content-length: 3\r\n\r\n"
        );
    }
}
