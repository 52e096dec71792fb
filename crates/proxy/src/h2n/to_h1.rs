//! One attempt of a native HTTP/2 stream on an HTTP/1.1 backend, through the one HTTP/1.1
//! codec: the request head written by [`h1::write_h2_request_fields`] (`Host` from
//! `:authority`), the body sent with Content-Length when the client declared one and chunked
//! otherwise, then the response head parsed and validated exactly as for an HTTP/1.1 client
//! ([`h1::parse_backend_response`]) and its body streamed back as DATA under the client's flow
//! control. A response that breaks the framing rules is a `502` before its head reaches the
//! client, and a reset stream after: never a cleanly ended response. `103 Early Hints` goes on
//! as an informational HEADERS frame (at most [`MAX_INTERIM`] interim heads); other interim
//! answers are dropped. An extended CONNECT for WebSocket (RFC 8441) goes as a WebSocket
//! upgrade, and the backend's valid `101` turns the stream into a tunnel
//! ([`super::websocket`]); any other `101` is a `502`. Uses the backend's ordinary HTTP/1.1
//! keep-alive pool. Runs in the stream's task on the worker's thread.

use std::future::poll_fn;

use fulcrum_h2::hpack::Pseudo;
use fulcrum_h2::validate;
use fulcrum_http::h1::body::{RateClock, client_paced, timed_write};
use fulcrum_http::h1::{
    self, BackendResponse, BodyError, BodyTap as _, ChunkedDecoder, Framing, H2RequestHead,
    MinRate, ResponseStart, header_storage,
};
use fulcrum_util::now_ms;
use monoio::io::AsyncWriteRentExt;
use monoio::time::timeout;

use super::stream::{Call, Fail, response_head_bytes};
use crate::attempt::AttemptError;
use crate::error::{ProxyError, QueueError};
use crate::h1::MAX_INTERIM;
use crate::h2conn::Incoming;
use crate::h2conn::fields::Fields;
use crate::tunnel::TunnelEnd;
use crate::upstream::{Reuse, Upstream};
use crate::websocket::{self, WEBSOCKET};

/// Request body bytes taken from the stream per write to the backend.
const CHUNK: usize = 64 * 1024;

fn bad(msg: &'static str) -> AttemptError<Fail> {
    AttemptError::Fail(Fail::Error(ProxyError::BadGateway(msg)))
}

fn failed(error: ProxyError) -> AttemptError<Fail> {
    AttemptError::Fail(Fail::Error(error))
}

/// The framing of the request body to send: none, the length the client declared (checked by
/// the engine against the DATA it sends), or chunked.
fn request_framing(call: &Call<'_>) -> Framing {
    if call.headers_only {
        return Framing::None;
    }
    let declared = call.request.head.get(b"content-length").and_then(|v| {
        (!v.is_empty() && v.len() <= 19 && v.iter().all(u8::is_ascii_digit))
            .then(|| v.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0')))
    });
    declared.map_or(Framing::Chunked, Framing::Length)
}

/// The response head for the client: end-to-end fields with lower-case names but those named in
/// `skip`, the length when the body has one; `None` when a field cannot be carried over HTTP/2.
fn response_fields(res: &BackendResponse<'_>, skip: &[&[u8]]) -> Option<Fields> {
    let mut fields = Fields::default();
    let mut name = Vec::new();
    for h in res.end_to_end() {
        name.clear();
        name.extend(h.name.bytes().map(|b| b.to_ascii_lowercase()));
        let value = h.value.trim_ascii();
        if validate::is_connection_specific(&name) || skip.contains(&name.as_slice()) {
            continue;
        }
        if !validate::is_valid_name(&name) || !validate::is_valid_value(value) {
            return None;
        }
        fields.push(&name, value);
    }
    if let Framing::Length(n) = res.framing {
        fields.push(b"content-length", n.to_string().as_bytes());
    }
    Some(fields)
}

/// Forwards the stream to an HTTP/1.1 backend (backend `index` of the routed pool), on the
/// connection `reuse` allows.
pub(super) async fn attempt(
    call: &mut Call<'_>,
    index: usize,
    up: &Upstream,
    reuse: Reuse,
) -> Result<(), AttemptError<Fail>> {
    let timeouts = call.epoch.epoch.timeouts;
    let health = call.epoch.epoch.health;
    let worker = call.ctx.telemetry.worker();
    let mut conn = match up.connection(reuse, &timeouts, health, call.note, worker).await {
        Ok(Some(conn)) => conn,
        Ok(None) => return Err(AttemptError::ConnectFailed),
        Err(ProxyError::BackendBusy(QueueError::Full)) => return Err(AttemptError::Busy),
        Err(e) => return Err(failed(e)),
    };
    let note = call.note;
    note.set_backend(index);
    // Counted until the backend's whole response is read (not until the client has it).
    let mut in_flight = Some(up.stats.begin());
    let _span = note.phase("upstream_exchange");
    let is_head = call.request.method() == b"HEAD";
    // An extended CONNECT goes as a WebSocket upgrade, with a key of Fulcrum's own; its stream
    // carries no body until the tunnel.
    let ws_key = call.upgrade.then(websocket::new_key);
    let framing = if call.upgrade { Framing::None } else { request_framing(call) };
    let mut head = Vec::with_capacity(512);
    let proto = call.state.info.proto();
    let h = &call.request.head;
    let pseudo = H2RequestHead {
        method: call.request.method(),
        path: h.pseudo(Pseudo::Path).unwrap_or(b"/"),
        authority: h.pseudo(Pseudo::Authority),
    };
    let fields = || call.request.fields().map(|f| (f.name, f.value));
    let authority = &up.backend.url.authority;
    match &ws_key {
        Some(key) => {
            let extra = [("sec-websocket-key", key.as_bytes())];
            h1::write_h2_upgrade_fields(
                &pseudo, fields, authority, proto, WEBSOCKET, &extra, &mut head,
            );
        }
        None => h1::write_h2_request_fields(&pseudo, fields, authority, proto, framing, &mut head),
    }

    // Send the head and the body.
    let started = std::time::Instant::now();
    let (res, _) = conn.w.write_all(head).await;
    if res.is_err() {
        return Err(AttemptError::NoResponse { reused: conn.reused });
    }
    if framing != Framing::None {
        // The body streams as it arrives and is not kept: from here on the request cannot be
        // sent again.
        call.replay.borrow_mut().stop();
        let chunked = framing == Framing::Chunked;
        let mut clock = MinRate::new(timeouts.client_body_min_rate, timeouts.client_body())
            .map(RateClock::start);
        let mut received = 0;
        let upstream_failed = || bad("upstream connection failed");
        let mut chunk = Vec::with_capacity(CHUNK);
        loop {
            let next = poll_fn(|cx| call.conn.poll_incoming(call.id, cx));
            let paced = client_paced(next, timeouts.client_body(), clock.as_mut(), received).await;
            match paced {
                Ok(Incoming::Data) => {}
                // Request trailers are not forwarded to HTTP/1.1 backends.
                Ok(Incoming::End | Incoming::Trailers(_)) => break,
                Ok(Incoming::Reset(..) | Incoming::Lost) => {
                    return Err(AttemptError::Fail(Fail::ClientGone));
                }
                Err(e) => return Err(failed(ProxyError::Client(e))),
            }
            chunk.clear();
            let len = call.conn.take_data(call.id, &mut chunk, CHUNK);
            received += len as u64;
            call.capture.tap(&chunk);
            if chunked && len > 0 {
                let size_line = conn.w.write_all(format!("{len:x}\r\n").into_bytes());
                let (r, _) = timed_write(size_line, clock.as_mut()).await;
                r.map_err(|_| upstream_failed())?;
            }
            let (r, back) = timed_write(conn.w.write_all(chunk), clock.as_mut()).await;
            chunk = back;
            r.map_err(|_| upstream_failed())?;
            if chunked && len > 0 {
                let (r, _) = timed_write(conn.w.write_all(&b"\r\n"[..]), clock.as_mut()).await;
                r.map_err(|_| upstream_failed())?;
            }
        }
        if chunked {
            let (r, _) = conn.w.write_all(&b"0\r\n\r\n"[..]).await;
            r.map_err(|_| upstream_failed())?;
        }
    }

    // Read the response head: the same parser and rules as for an HTTP/1.1 client.
    let mut interim = 0;
    let (status, fields, res_framing, keep_alive) = loop {
        if !conn.buf.is_empty() {
            let mut storage = header_storage();
            let parsed = h1::parse_backend_response(
                conn.buf.data(),
                &mut storage,
                call.ctx.limits.max_headers,
                is_head,
            );
            match parsed {
                Ok(Some(ResponseStart::Interim(res))) => {
                    interim += 1;
                    if interim > MAX_INTERIM {
                        return Err(bad("too many interim responses"));
                    }
                    // 103 Early Hints goes on as an informational HEADERS frame.
                    if res.status == 103 {
                        let fields = response_fields(&res, &[])
                            .ok_or_else(|| bad("malformed response head"))?;
                        note.sent(response_head_bytes(&fields));
                        call.conn
                            .send_response(call.id, 103, fields.iter(), false)
                            .map_err(|_| AttemptError::Fail(Fail::ClientGone))?;
                    }
                    conn.buf.consume(res.head_len);
                    continue;
                }
                Ok(Some(ResponseStart::Switching(res))) => {
                    let Some(key) = &ws_key else {
                        return Err(bad("protocol switch nobody asked for"));
                    };
                    if !websocket::switch_is_valid(&res, key) {
                        return Err(bad("invalid WebSocket handshake"));
                    }
                    // The `200` for the client: the backend's end-to-end fields without the
                    // HTTP/1.1-only `Sec-WebSocket-Accept`.
                    let fields = response_fields(&res, &[b"sec-websocket-accept"])
                        .ok_or_else(|| bad("malformed response head"))?;
                    conn.buf.consume(res.head_len);
                    let elapsed = started.elapsed();
                    up.stats.record_response_time(now_ms(), elapsed);
                    note.response(200, elapsed);
                    note.sent(response_head_bytes(&fields));
                    let (client, id) = (call.conn, call.id);
                    client
                        .send_response(id, 200, fields.iter(), false)
                        .map_err(|_| AttemptError::Fail(Fail::ClientGone))?;
                    call.head_sent.set(true);
                    let _span = note.phase("tunnel");
                    let ctx = call.ctx;
                    let tunnel = ctx.open_tunnel();
                    let up_flow = super::websocket::up(&tunnel, client, id, &mut conn.w);
                    let down_flow =
                        super::websocket::down(&tunnel, &mut conn.r, &mut conn.buf, client, id);
                    let (idle, drain) = (timeouts.tunnel_idle(), timeouts.drain());
                    let report =
                        tunnel.run(ctx.drained_signal(), idle, drain, up_flow, down_flow).await;
                    if !matches!(report.end, TunnelEnd::Client | TunnelEnd::Backend) {
                        client.reset(id, fulcrum_h2::ErrorCode::CANCEL);
                    }
                    call.tunnel.set(Some(report));
                    // Counted in flight until here; the connection is never pooled.
                    drop(in_flight);
                    return Ok(());
                }
                Ok(Some(ResponseStart::Final(res))) => {
                    let fields =
                        response_fields(&res, &[]).ok_or_else(|| bad("malformed response head"))?;
                    let (status, framing, keep_alive, len) =
                        (res.status, res.framing, res.keep_alive, res.head_len);
                    conn.buf.consume(len);
                    break (status, fields, framing, keep_alive);
                }
                Ok(None) if conn.buf.is_full() => return Err(bad("response head too large")),
                Ok(None) => {}
                Err(_) => return Err(bad("malformed response head")),
            }
        }
        match timeout(timeouts.upstream_response(), conn.fill()).await {
            Err(_) => return Err(failed(ProxyError::UpstreamTimeout)),
            // (After an interim head the response has begun: not sent again.)
            Ok(Ok(0) | Err(_)) if conn.buf.is_empty() && interim == 0 => {
                return Err(AttemptError::NoResponse { reused: conn.reused });
            }
            Ok(Ok(0) | Err(_)) => return Err(bad("upstream closed before the response")),
            Ok(Ok(_)) => {}
        }
    };
    let elapsed = started.elapsed();
    up.stats.record_response_time(now_ms(), elapsed);
    note.response(status, elapsed);
    let _respond = note.phase("respond");
    note.sent(response_head_bytes(&fields));
    let eos = matches!(res_framing, Framing::None | Framing::Length(0));
    if eos {
        in_flight = None;
    }
    call.conn
        .send_response(call.id, status, fields.iter(), eos)
        .map_err(|_| AttemptError::Fail(Fail::ClientGone))?;
    call.head_sent.set(true);
    if eos {
        if keep_alive {
            up.checkin(conn);
        }
        return Ok(());
    }
    let (client, id) = (call.conn, call.id);
    let gone = |_| AttemptError::Fail(Fail::ClientGone);
    let lost = || bad("upstream connection lost");
    let mut left = match res_framing {
        Framing::Length(n) => n,
        _ => u64::MAX,
    };
    let mut decoder = ChunkedDecoder::default();
    let mut payload = Vec::new();
    loop {
        // Forward what is buffered.
        if !conn.buf.is_empty() {
            match res_framing {
                Framing::Length(_) | Framing::UntilClose => {
                    let n = (conn.buf.len() as u64).min(left) as usize;
                    left -= n as u64;
                    let last = res_framing != Framing::UntilClose && left == 0;
                    if last {
                        in_flight = None;
                    }
                    note.sent(n as u64);
                    client.send_all(id, &conn.buf.data()[..n], last).await.map_err(gone)?;
                    conn.buf.consume(n);
                    if last {
                        break;
                    }
                }
                Framing::Chunked => {
                    payload.clear();
                    let data = conn.buf.data();
                    let used = decoder
                        .decode(data, |r| payload.extend_from_slice(&data[r]))
                        .map_err(|_| bad("invalid chunked response"))?;
                    conn.buf.consume(used);
                    let done = decoder.is_done();
                    if done {
                        in_flight = None;
                    }
                    if !payload.is_empty() || done {
                        note.sent(payload.len() as u64);
                        client.send_all(id, &payload, done).await.map_err(gone)?;
                    }
                    if done {
                        break;
                    }
                }
                Framing::None => break,
            }
        }
        match timeout(timeouts.upstream_response(), conn.fill()).await {
            Err(_) => {
                return Err(failed(ProxyError::Upstream(BodyError::ReadTimeout)));
            }
            Ok(Ok(0)) if res_framing == Framing::UntilClose => {
                drop(in_flight);
                let _ = client.send_all(id, &[], true).await;
                return Ok(());
            }
            Ok(Ok(0) | Err(_)) => return Err(lost()),
            Ok(Ok(_)) => {}
        }
    }
    if keep_alive && res_framing != Framing::UntilClose {
        up.checkin(conn);
    }
    Ok(())
}
