//! The HTTP/1.1 response-head parser and its two renderings (`http::h1::parse_backend_response`,
//! `BackendResponse::write_h1` for an HTTP/1.x client, `BackendResponse::to_h2` for an HTTP/2
//! client).
//!
//! Input: a flags byte (bit 0: the request was `HEAD`; bit 1: the client is HTTP/1.0; bit 2: it
//! wants keep-alive), a byte choosing `max_headers`, then the bytes a backend sent: interim
//! heads are skipped one after the other until the final one. Each head is checked against a
//! model of the rules in docs/proxying.md built on `httparse` alone ([`expected`]):
//! - the outcome is the model's: `1xx` other than `101` is interim, `101` and statuses outside
//!   `200..=599` are errors, and so is every framing the strict rules refuse (both
//!   `Content-Length` and `Transfer-Encoding`, differing or non-numeric `Content-Length`,
//!   `Transfer-Encoding` other than one `chunked`); `HEAD`, `204` and `304` are bodiless; the
//!   framing and the backend's keep-alive are the model's;
//! - a complete head lies within the input, parses the same without what follows it, and one
//!   byte less is still incomplete;
//! - the HTTP/1.1 head written for the client re-parses to the same status, reason and
//!   framing (`UntilClose` when de-chunked for an HTTP/1.0 client), with the client's
//!   keep-alive; it carries no hop-by-hop field (the fixed list, and every field a
//!   `Connection` line of the backend names) but the one framing field that applies and
//!   Fulcrum's own `Connection`, and otherwise exactly the backend's end-to-end fields in
//!   order;
//! - the HTTP/2 head has the same status, no uppercase name, no connection-specific field
//!   (RFC 9113 8.2.2), a `content-length` only for `Length(n)` (exactly `n`, once) or the
//!   backend's own in the bodiless case, and the same end-to-end fields as the HTTP/1.1 head.

use fulcrum_http::h1::{
    self, ClientSide, Framing, HOP_BY_HOP, HeadError, Offered, ResponseStart, header_storage,
    parse_backend_response,
};

/// Runs the invariants on one input (the fuzz target and the replay test call this).
pub fn check(data: &[u8]) {
    let [flags, selector, ref input @ ..] = *data else { return };
    let client = ClientSide {
        is_head: flags & 1 != 0,
        http10: flags & 2 != 0,
        keep_alive: flags & 4 != 0,
        upgrade: Offered::NONE,
    };
    // Leave room for the fields the rendering adds, so the re-parse is never over the limit.
    let max_headers = usize::from(selector) % (h1::MAX_HEADERS - 8) + 1;
    let mut rest = input;
    loop {
        let model = expected(rest, max_headers, client.is_head);
        let Some(len) = check_head(rest, max_headers, client, &model) else { return };
        match model {
            Expected::Interim { .. } => rest = &rest[len..],
            _ => return,
        }
    }
}

/// What the rules say a backend head is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Expected {
    /// More bytes are needed.
    Incomplete,
    /// Not HTTP/1.x, too many fields, or a status out of range.
    Malformed,
    /// Framing the strict rules refuse.
    BadFraming,
    /// An interim response of `len` bytes (`101` included: a switch, which the caller
    /// accepts or refuses).
    Interim { len: usize, status: u16 },
    /// A final response.
    Final(Final),
}

/// The model of a final response head.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Final {
    len: usize,
    status: u16,
    reason: String,
    framing: Framing,
    keep_alive: bool,
    bodiless: bool,
    /// The fields to forward (lower-cased name, value): no hop-by-hop field, and no
    /// `Content-Length` unless bodiless.
    end_to_end: Vec<(Vec<u8>, Vec<u8>)>,
    /// The backend's `Content-Length` values (bodiless responses forward them).
    content_length: Vec<Vec<u8>>,
}

/// The model: `httparse` splits the head, the rules of docs/proxying.md say what it means.
fn expected(input: &[u8], max_headers: usize, is_head: bool) -> Expected {
    let mut storage = vec![httparse::EMPTY_HEADER; max_headers];
    let mut res = httparse::Response::new(&mut storage);
    let len = match res.parse(input) {
        Err(_) => return Expected::Malformed,
        Ok(httparse::Status::Partial) => return Expected::Incomplete,
        Ok(httparse::Status::Complete(len)) => len,
    };
    let (Some(status), Some(minor)) = (res.code, res.version) else { return Expected::Malformed };
    match status {
        100..=199 => return Expected::Interim { len, status },
        200..=599 => {}
        _ => return Expected::Malformed,
    }
    let fields: Vec<(Vec<u8>, Vec<u8>)> = res
        .headers
        .iter()
        .map(|h| (h.name.to_ascii_lowercase().into_bytes(), h.value.trim_ascii().to_vec()))
        .collect();
    let values = |name: &[u8]| -> Vec<Vec<u8>> {
        fields.iter().filter(|(n, _)| n == name).map(|(_, v)| v.clone()).collect()
    };
    let content_length = values(b"content-length");
    let transfer_encoding = values(b"transfer-encoding");
    let Some(lengths) = content_length.iter().map(|v| plain_number(v)).collect::<Option<Vec<_>>>()
    else {
        return Expected::BadFraming;
    };
    if lengths.windows(2).any(|w| w[0] != w[1])
        || transfer_encoding.len() > 1
        || transfer_encoding.iter().any(|v| !v.eq_ignore_ascii_case(b"chunked"))
        || !lengths.is_empty() && !transfer_encoding.is_empty()
    {
        return Expected::BadFraming;
    }
    let bodiless = is_head || status == 204 || status == 304;
    let framing = match (lengths.first(), transfer_encoding.is_empty()) {
        _ if bodiless => Framing::None,
        (_, false) => Framing::Chunked,
        (Some(&n), true) => Framing::Length(n),
        (None, true) => Framing::UntilClose,
    };
    let connection = values(b"connection");
    let keep_alive = framing != Framing::UntilClose
        && if minor == 0 {
            named(&connection, b"keep-alive")
        } else {
            !named(&connection, b"close")
        };
    let hop =
        |name: &[u8]| HOP_BY_HOP.iter().any(|h| h.as_bytes() == name) || named(&connection, name);
    let end_to_end = fields
        .iter()
        .filter(|(n, _)| !hop(n) && (bodiless || n != b"content-length"))
        .cloned()
        .collect::<Vec<_>>();
    let content_length =
        end_to_end.iter().filter(|(n, _)| n == b"content-length").map(|(_, v)| v.clone()).collect();
    Expected::Final(Final {
        len,
        status,
        reason: res.reason.unwrap_or("").to_owned(),
        framing,
        keep_alive,
        bodiless,
        end_to_end,
        content_length,
    })
}

/// A `Content-Length` value Fulcrum accepts: 1 to 19 ASCII digits.
fn plain_number(value: &[u8]) -> Option<u64> {
    if value.is_empty() || value.len() > 19 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(value).ok()?.parse().ok()
}

/// Whether a `Connection` value names `token` (this target's own reading of RFC 9110 7.6.1:
/// comma-separated tokens, whitespace trimmed, compared case-insensitively).
fn named(connection: &[Vec<u8>], token: &[u8]) -> bool {
    connection
        .iter()
        .any(|v| v.split(|&c| c == b',').any(|t| t.trim_ascii().eq_ignore_ascii_case(token)))
}

/// Checks one head of `input` against `model`; the length of a complete head, if any.
fn check_head(
    input: &[u8],
    max_headers: usize,
    client: ClientSide,
    model: &Expected,
) -> Option<usize> {
    let mut storage = header_storage();
    let parsed = parse_backend_response(input, &mut storage, max_headers, client.is_head);
    let first = summary(&parsed);
    let (len, res) = match (parsed, model) {
        (Ok(None), Expected::Incomplete) => return None,
        (Err(HeadError::Framing(_)), Expected::BadFraming) => return None,
        (Err(HeadError::Malformed(_) | HeadError::TooManyHeaders), Expected::Malformed) => {
            return None;
        }
        (
            Ok(Some(ResponseStart::Interim(r) | ResponseStart::Switching(r))),
            &Expected::Interim { len: l, status: s },
        ) => {
            assert_eq!((r.head_len, r.status), (l, s), "interim head read differently");
            assert_eq!(matches!(first, Summary::Switching(..)), s == 101);
            (r.head_len, None)
        }
        (Ok(Some(ResponseStart::Final(res))), Expected::Final(f)) => (res.head_len, Some((res, f))),
        (parsed, model) => {
            panic!("parsed {parsed:?}, the rules say {model:?}: {:?}", text(input))
        }
    };

    // Within the input, the same without what follows, incomplete one byte earlier.
    assert!(len > 0 && len <= input.len(), "head_len {len} outside the input");
    let head = &input[..len];
    assert_eq!(&expected(head, max_headers, client.is_head), model, "trailing bytes mattered");
    let mut alone = header_storage();
    let again = parse_backend_response(head, &mut alone, max_headers, client.is_head);
    assert_eq!(summary(&again), first, "trailing bytes changed the parse");
    let mut shorter = header_storage();
    let cut = parse_backend_response(&head[..len - 1], &mut shorter, max_headers, client.is_head);
    assert!(matches!(cut, Ok(None)), "a head one byte shorter is complete: {:?}", summary(&cut));

    if let Some((res, model)) = res {
        assert_eq!(
            (res.status, res.reason, res.framing, res.keep_alive, res.bodiless),
            (model.status, model.reason.as_str(), model.framing, model.keep_alive, model.bodiless),
            "final head read differently from the rules: {:?}",
            text(head)
        );
        let h1_fields = check_h1(&res, client, model);
        check_h2(&res, model, &h1_fields);
    }
    Some(len)
}

/// What a parse outcome says, comparable across two parses of the same bytes.
#[derive(Debug, PartialEq, Eq)]
enum Summary {
    Incomplete,
    Error(HeadError),
    Interim(usize, u16),
    Switching(usize),
    Final { len: usize, status: u16, reason: String, framing: Framing, keep_alive: bool },
}

fn summary(parsed: &h1::Parsed<ResponseStart<'_>>) -> Summary {
    match parsed {
        Ok(None) => Summary::Incomplete,
        Err(e) => Summary::Error(*e),
        Ok(Some(ResponseStart::Interim(r))) => Summary::Interim(r.head_len, r.status),
        Ok(Some(ResponseStart::Switching(r))) => Summary::Switching(r.head_len),
        Ok(Some(ResponseStart::Final(r))) => Summary::Final {
            len: r.head_len,
            status: r.status,
            reason: r.reason.to_owned(),
            framing: r.framing,
            keep_alive: r.keep_alive,
        },
    }
}

/// Writes the head for an HTTP/1.x client and checks it; its end-to-end fields (lower-cased).
fn check_h1(
    res: &h1::BackendResponse<'_>,
    client: ClientSide,
    model: &Final,
) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    let info = res.write_h1(client, &mut out);
    let dechunk = client.http10 && model.framing == Framing::Chunked;
    let client_keep_alive = client.keep_alive && model.framing != Framing::UntilClose && !dechunk;
    assert_eq!(
        (info.head_len, info.status, info.framing, info.upstream_keep_alive),
        (model.len, model.status, model.framing, model.keep_alive)
    );
    assert_eq!((info.dechunk, info.client_keep_alive), (dechunk, client_keep_alive));

    // It re-parses to the same status, reason and framing, with the client's keep-alive.
    let mut storage = header_storage();
    let re = parse_backend_response(&out, &mut storage, h1::MAX_HEADERS, client.is_head);
    let Ok(Some(ResponseStart::Final(re))) = re else {
        panic!("written head does not re-parse ({:?}): {:?}", summary(&re), text(&out))
    };
    let framing = if dechunk { Framing::UntilClose } else { model.framing };
    assert_eq!(
        (re.head_len, re.status, re.reason, re.framing, re.keep_alive, re.bodiless),
        (
            out.len(),
            model.status,
            model.reason.as_str(),
            framing,
            client_keep_alive,
            model.bodiless
        ),
        "written head reads differently: {:?}",
        text(&out)
    );
    assert!(info.end_to_end_len <= out.len() - 2, "end_to_end_len beyond the head");

    // Its fields: the end-to-end ones, then one framing field, then Fulcrum's Connection.
    let mut fields = header_fields(&out);
    let own_connection: &[u8] = match (client_keep_alive, client.http10) {
        (false, _) => b"close",
        (true, true) => b"keep-alive",
        (true, false) => b"",
    };
    if !own_connection.is_empty() {
        assert_eq!(fields.pop(), Some((b"connection".to_vec(), own_connection.to_vec())));
    }
    let framing_field = match framing {
        Framing::Length(n) => Some((b"content-length".to_vec(), n.to_string().into_bytes())),
        Framing::Chunked => Some((b"transfer-encoding".to_vec(), b"chunked".to_vec())),
        Framing::None | Framing::UntilClose => None,
    };
    if let Some(field) = framing_field {
        assert_eq!(fields.pop(), Some(field), "framing field: {:?}", text(&out));
    }
    for (name, _) in &fields {
        assert!(!HOP_BY_HOP.iter().any(|h| h.as_bytes() == name), "{} forwarded", text(name));
        assert!(
            !(model.bodiless && name == b"transfer-encoding") && name != b"connection",
            "{} forwarded",
            text(name)
        );
    }
    assert_eq!(
        fields,
        model.end_to_end,
        "end-to-end fields of {:?}: want {:?}",
        text(&out),
        show(&model.end_to_end)
    );
    fields
}

/// The head for an HTTP/2 client.
fn check_h2(res: &h1::BackendResponse<'_>, model: &Final, h1_fields: &[(Vec<u8>, Vec<u8>)]) {
    let h2 =
        res.to_h2().unwrap_or_else(|e| panic!("{e} for an HTTP/2 client, forwarded to HTTP/1.1"));
    assert_eq!(h2.status().as_u16(), model.status);
    const CONNECTION_SPECIFIC: [&str; 6] =
        ["connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "te"];
    let mut fields = Vec::new();
    let mut content_length = Vec::new();
    for (name, value) in h2.headers() {
        let name = name.as_str();
        assert!(!name.bytes().any(|b| b.is_ascii_uppercase()), "uppercase name {name}");
        assert!(!CONNECTION_SPECIFIC.contains(&name), "connection-specific field {name}");
        if name == "content-length" {
            content_length.push(value.as_bytes().to_vec());
            if !model.bodiless {
                continue;
            }
        }
        fields.push((name.as_bytes().to_vec(), value.as_bytes().to_vec()));
    }
    let want = match model.framing {
        Framing::Length(n) => vec![n.to_string().into_bytes()],
        _ if model.bodiless => model.content_length.clone(),
        _ => Vec::new(),
    };
    assert_eq!(content_length, want, "content-length for HTTP/2: {:?}", show(&fields));
    // The same end-to-end fields as for HTTP/1.1 (HTTP/2 groups the values of one name).
    let mut h1_fields = h1_fields.to_vec();
    h1_fields.sort_by(|a, b| a.0.cmp(&b.0));
    fields.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        fields,
        h1_fields,
        "HTTP/2 and HTTP/1.1 forward different fields: {:?} and {:?}",
        show(&fields),
        show(&h1_fields)
    );
}

/// The fields of a complete head, as `httparse` reads them (name lower-cased, value trimmed).
fn header_fields(head: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut storage = vec![httparse::EMPTY_HEADER; h1::MAX_HEADERS];
    let mut res = httparse::Response::new(&mut storage);
    assert!(matches!(res.parse(head), Ok(httparse::Status::Complete(_))));
    res.headers
        .iter()
        .map(|h| (h.name.to_ascii_lowercase().into_bytes(), h.value.trim_ascii().to_vec()))
        .collect()
}

/// Fields as `name: value` lines, for failure messages.
fn show(fields: &[(Vec<u8>, Vec<u8>)]) -> String {
    fields.iter().map(|(n, v)| format!("{}: {}\n", n.escape_ascii(), v.escape_ascii())).collect()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}
