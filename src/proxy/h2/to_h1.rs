//! An HTTP/2 request for an HTTP/1.1 backend: encode the head (with `Host` built from
//! `:authority`), send the body (Content-Length when the client declared one, chunked
//! otherwise), then parse the response head and stream its body back as DATA frames under the
//! client's flow control. Uses the backend's ordinary HTTP/1.1 keep-alive pool.

use std::io::Write as _;

use bytes::Bytes;
use h2::server::SendResponse;
use h2::{RecvStream, SendStream};
use http::{HeaderName, HeaderValue, Response, StatusCode};
use monoio::io::AsyncWriteRentExt;
use monoio::time::timeout;

use super::forward::{Fail, Retry, response_head_bytes, send_data};
use super::server::ConnState;
use crate::balance::stats::now_ms;
use crate::proxy::body::{BodyError, ChunkedDecoder, RateClock, client_paced, timed_write};
use crate::proxy::error::ProxyError;
use crate::proxy::h1::MAX_HEADERS;
use crate::proxy::pool::{QueueError, Upstream};
use crate::proxy::retry::RetryReason;
use crate::proxy::{Reuse, upstream_conn};
use crate::telemetry::BodyTap as _;
use crate::telemetry::exchange::{BodyCapture, ExchangeNote};
use crate::worker::{WorkerCtx, WorkerEpoch};

/// Response headers that describe the HTTP/1.1 connection, never forwarded on HTTP/2.
const HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
    "te",
    "trailer",
    "proxy-authenticate",
];

/// How the response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    None,
    Length(u64),
    Chunked,
    UntilClose,
}

fn bad(msg: &'static str) -> Retry {
    Retry::Fail(Fail::Error(ProxyError::BadGateway(msg)))
}

/// Forwards one HTTP/2 stream to an HTTP/1.1 backend.
#[allow(clippy::too_many_arguments)]
pub(super) async fn forward(
    ctx: &WorkerCtx,
    epoch: &WorkerEpoch,
    (index, up): (usize, &Upstream),
    conn_state: &ConnState,
    note: &ExchangeNote,
    parts: &http::request::Parts,
    body: &mut RecvStream,
    capture: &mut BodyCapture,
    respond: &mut SendResponse<Bytes>,
    down: &mut Option<SendStream<Bytes>>,
) -> Result<(), Retry> {
    let timeouts = epoch.epoch.timeouts;
    // The request is never sent twice on this path, so every pooled connection is probed for a
    // close before reuse.
    let reuse = Reuse::Pooled { probe: true };
    let mut conn = match upstream_conn(ctx, epoch, note, up, reuse).await {
        Ok(Some(conn)) => conn,
        Ok(None) => return Err(Retry::Again(RetryReason::Connect)),
        Err(ProxyError::BackendBusy(QueueError::Full)) => return Err(Retry::Busy),
        Err(e) => return Err(Retry::Fail(Fail::Error(e))),
    };
    note.set_backend(index);
    let _in_flight = up.stats.begin();
    let _span = note.phase("upstream_exchange");
    let headers_only = body.is_end_stream();
    let is_head = parts.method == http::Method::HEAD;
    let declared_len = parts
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let chunked = !headers_only && declared_len.is_none();
    let head = encode_head(parts, &up.backend.url.authority, chunked, headers_only);

    // Send the head and the body.
    let started = std::time::Instant::now();
    let (res, _) = conn.w.write_all(head).await;
    res.map_err(|_| bad("upstream connection failed"))?;
    if !headers_only {
        let mut clock = timeouts.client_body_min_rate().map(RateClock::start);
        let mut received = 0;
        loop {
            let paced =
                client_paced(body.data(), timeouts.client_body(), clock.as_mut(), received).await;
            let next = match paced {
                Ok(n) => n,
                Err(BodyError::TooSlow) => {
                    return Err(Retry::Fail(Fail::Error(ProxyError::Client(BodyError::TooSlow))));
                }
                Err(_) => return Err(Retry::Fail(Fail::Error(ProxyError::ClientHeaderTimeout))),
            };
            let chunk = match next {
                Some(Ok(c)) => c,
                Some(Err(e)) => {
                    // A stream the client reset counts against the rapid-reset cap, as on the
                    // h2c path.
                    if e.is_reset() && e.is_remote() {
                        conn_state.client_reset();
                    }
                    return Err(Retry::Fail(Fail::ClientGone));
                }
                None => break,
            };
            let len = chunk.len();
            received += len as u64;
            capture.tap(&chunk);
            if chunked && len > 0 {
                let size_line = conn.w.write_all(format!("{len:x}\r\n").into_bytes());
                let (r, _) = timed_write(size_line, clock.as_mut()).await;
                r.map_err(|_| bad("upstream connection failed"))?;
            }
            let (r, _) = timed_write(conn.w.write_all(chunk), clock.as_mut()).await;
            r.map_err(|_| bad("upstream connection failed"))?;
            if chunked && len > 0 {
                let (r, _) = timed_write(conn.w.write_all(&b"\r\n"[..]), clock.as_mut()).await;
                r.map_err(|_| bad("upstream connection failed"))?;
            }
            let _ = body.flow_control().release_capacity(len);
        }
        // HTTP/1.1 trailers are not forwarded to HTTP/1.1 backends.
        let _ = body.trailers().await;
        if chunked {
            let (r, _) = conn.w.write_all(&b"0\r\n\r\n"[..]).await;
            r.map_err(|_| bad("upstream connection failed"))?;
        }
    }

    // Read the response head.
    let (response, framing, keep_alive, head_len) = loop {
        if !conn.buf.is_empty() {
            match parse_head(conn.buf.data(), ctx.limits.max_headers, is_head) {
                Ok(Some(Parsed::Interim(n))) => {
                    conn.buf.consume(n);
                    continue;
                }
                Ok(Some(Parsed::Final(res, framing, keep_alive, n))) => {
                    break (res, framing, keep_alive, n);
                }
                Ok(None) if conn.buf.is_full() => return Err(bad("response head too large")),
                Ok(None) => {}
                Err(msg) => return Err(bad(msg)),
            }
        }
        match timeout(timeouts.upstream_response(), conn.buf.fill(&mut conn.r)).await {
            Err(_) => return Err(Retry::Fail(Fail::Error(ProxyError::UpstreamTimeout))),
            Ok(Ok(0) | Err(_)) => return Err(bad("upstream closed before the response")),
            Ok(Ok(_)) => {}
        }
    };
    conn.buf.consume(head_len);
    let elapsed = started.elapsed();
    up.stats.record_response_time(now_ms(), elapsed);
    note.response(response.status().as_u16(), elapsed);
    let _respond = note.phase("respond");
    note.sent(response_head_bytes(response.headers()));
    let eos = matches!(framing, Framing::None | Framing::Length(0));
    let d = respond.send_response(response, eos).map_err(|_| Retry::Fail(Fail::ClientGone))?;
    if eos {
        if keep_alive {
            up.checkin(conn);
        }
        return Ok(());
    }
    let d = down.insert(d);
    let lost = || Retry::Fail(Fail::Error(ProxyError::BadGateway("upstream connection lost")));
    let mut left = match framing {
        Framing::Length(n) => n,
        _ => u64::MAX,
    };
    let mut decoder = ChunkedDecoder::default();
    loop {
        // Forward what is buffered.
        if !conn.buf.is_empty() {
            match framing {
                Framing::Length(_) | Framing::UntilClose => {
                    let n = (conn.buf.len() as u64).min(left) as usize;
                    let chunk = Bytes::copy_from_slice(&conn.buf.data()[..n]);
                    conn.buf.consume(n);
                    left -= n as u64;
                    let last = framing != Framing::UntilClose && left == 0;
                    note.sent(n as u64);
                    send_data(d, chunk, last).await.map_err(|_| Retry::Fail(Fail::ClientGone))?;
                    if last {
                        break;
                    }
                }
                Framing::Chunked => {
                    let mut payload = Vec::new();
                    let data = conn.buf.data();
                    let used = decoder
                        .decode(data, |r| payload.extend_from_slice(&data[r]))
                        .map_err(|_| bad("invalid chunked response"))?;
                    conn.buf.consume(used);
                    let done = decoder.is_done();
                    if !payload.is_empty() || done {
                        note.sent(payload.len() as u64);
                        send_data(d, Bytes::from(payload), done)
                            .await
                            .map_err(|_| Retry::Fail(Fail::ClientGone))?;
                    }
                    if done {
                        break;
                    }
                }
                Framing::None => break,
            }
        }
        match timeout(timeouts.upstream_response(), conn.buf.fill(&mut conn.r)).await {
            Err(_) => return Err(Retry::Fail(Fail::Error(ProxyError::UpstreamTimeout))),
            Ok(Ok(0)) if framing == Framing::UntilClose => {
                let _ = d.send_data(Bytes::new(), true);
                return Ok(());
            }
            Ok(Ok(0) | Err(_)) => return Err(lost()),
            Ok(Ok(_)) => {}
        }
    }
    if keep_alive && framing != Framing::UntilClose {
        up.checkin(conn);
    }
    Ok(())
}

/// Writes the HTTP/1.1 request head for an HTTP/2 request (`x-forwarded-for` is already among
/// its headers).
fn encode_head(
    parts: &http::request::Parts,
    backend_authority: &str,
    chunked: bool,
    headers_only: bool,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let _ = write!(out, "{} {} HTTP/1.1\r\nhost: ", parts.method, path);
    let host = parts
        .uri
        .authority()
        .map(|a| a.as_str().as_bytes())
        .or_else(|| parts.headers.get(http::header::HOST).map(HeaderValue::as_bytes))
        .unwrap_or(backend_authority.as_bytes());
    out.extend_from_slice(host);
    out.extend_from_slice(b"\r\n");
    let mut cookies: Vec<&[u8]> = Vec::new();
    for (name, value) in &parts.headers {
        if name == http::header::HOST || name == http::header::TE {
            continue;
        }
        if name == http::header::COOKIE {
            cookies.push(value.as_bytes());
            continue;
        }
        if name == http::header::CONTENT_LENGTH && (chunked || headers_only) {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if !cookies.is_empty() {
        out.extend_from_slice(b"cookie: ");
        out.extend_from_slice(&cookies.join(&b"; "[..]));
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"x-forwarded-proto: http\r\nvia: 2 fulcrum\r\n");
    if chunked {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// A parsed HTTP/1.1 response head.
enum Parsed {
    /// A 1xx of this many bytes (skipped).
    Interim(usize),
    /// The final head: the response to send, body framing, keep-alive, head length.
    Final(Response<()>, Framing, bool, usize),
}

/// Parses an HTTP/1.1 response head into an HTTP/2 response (hop-by-hop headers dropped).
fn parse_head(
    input: &[u8],
    max_headers: usize,
    is_head: bool,
) -> Result<Option<Parsed>, &'static str> {
    let mut headers = vec![httparse::EMPTY_HEADER; max_headers.clamp(1, MAX_HEADERS)];
    let mut res = httparse::Response::new(&mut headers);
    let httparse::Status::Complete(n) = res.parse(input).map_err(|_| "malformed response head")?
    else {
        return Ok(None);
    };
    let code = res.code.ok_or("malformed response head")?;
    if code == 101 {
        return Err("protocol upgrade is not supported");
    }
    if (100..200).contains(&code) {
        return Ok(Some(Parsed::Interim(n)));
    }
    let mut out = Response::new(());
    *out.status_mut() = StatusCode::from_u16(code).map_err(|_| "invalid status")?;
    let mut length = None;
    let mut chunked = false;
    let mut close = res.version == Some(0);
    for h in res.headers.iter() {
        let name = h.name;
        if name.eq_ignore_ascii_case("content-length") {
            let v = std::str::from_utf8(h.value).ok().and_then(|v| v.trim().parse::<u64>().ok());
            length = Some(v.ok_or("invalid Content-Length")?);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = true;
            continue;
        } else if name.eq_ignore_ascii_case("connection") {
            let v = h.value.to_ascii_lowercase();
            if v.windows(5).any(|w| w == b"close") {
                close = true;
            } else if v.windows(10).any(|w| w == b"keep-alive") {
                close = false;
            }
        }
        if HOP.iter().any(|hop| hop.eq_ignore_ascii_case(name)) {
            continue;
        }
        let (Ok(name), Ok(value)) =
            (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_bytes(h.value))
        else {
            return Err("invalid response header");
        };
        out.headers_mut().append(name, value);
    }
    if chunked {
        out.headers_mut().remove(http::header::CONTENT_LENGTH);
    }
    let framing = if is_head || code == 204 || code == 304 {
        Framing::None
    } else if chunked {
        Framing::Chunked
    } else if let Some(n) = length {
        Framing::Length(n)
    } else {
        Framing::UntilClose
    };
    Ok(Some(Parsed::Final(out, framing, !close, n)))
}
