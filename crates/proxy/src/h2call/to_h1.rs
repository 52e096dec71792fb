//! One attempt of an HTTP/2 stream on an HTTP/1.1 backend, through the one HTTP/1.1 codec and
//! for either engine: the request head written by [`h1::write_h2_request_fields`] (with `Host`
//! built from `:authority`), the body sent with Content-Length when the client declared one and
//! chunked otherwise, then the response head parsed and validated exactly as for an HTTP/1.1
//! client ([`h1::parse_backend_response`]) and its body streamed back as DATA under the
//! client's flow control. A response that breaks the framing rules is a `502` before its head
//! reaches the client, and a reset stream after: never a cleanly ended response. `103 Early
//! Hints` goes on as an informational HEADERS frame (at most [`MAX_INTERIM`] interim heads);
//! other interim answers are dropped. An extended CONNECT for WebSocket (RFC 8441) goes as a
//! WebSocket upgrade, and the backend's valid `101` turns the stream into a tunnel
//! ([`ClientStream::tunnel_flows`]); any other `101` is a `502`. Uses the backend's ordinary
//! HTTP/1.1 keep-alive pool. Runs in the stream's task on the worker's thread.

use fulcrum_http::h1::body::{RateClock, client_paced, timed_write};
use fulcrum_http::h1::{
    self, BodyError, BodyTap as _, ChunkedDecoder, Framing, MinRate, ResponseStart, header_storage,
};
use fulcrum_util::{Timer, push_hex};
use monoio::io::AsyncWriteRentExt;

use super::{Call, ClientGone, ClientStream, Fail, Next};
use crate::attempt::AttemptError;
use crate::error::{ProxyError, QueueError};
use crate::h1::MAX_INTERIM;
use crate::tunnel::TunnelEnd;
use crate::upstream::{Reuse, Upstream};
use crate::websocket::{self, WEBSOCKET};

fn bad<C>(msg: &'static str) -> AttemptError<Fail<C>> {
    AttemptError::Fail(Fail::Error(ProxyError::BadGateway(msg)))
}

fn failed<C>(error: ProxyError) -> AttemptError<Fail<C>> {
    AttemptError::Fail(Fail::Error(error))
}

fn gone<C>(_: ClientGone) -> AttemptError<Fail<C>> {
    AttemptError::Fail(Fail::ClientGone)
}

/// The framing of the request body to send: none, the length the client declared (validated
/// by the HTTP/2 engine against the DATA it sends), or chunked.
fn request_framing<S: ClientStream>(call: &Call<'_, S>) -> Framing {
    if call.headers_only {
        return Framing::None;
    }
    let declared = call.stream.content_length().and_then(|v| {
        (!v.is_empty() && v.len() <= 19 && v.iter().all(u8::is_ascii_digit))
            .then(|| v.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0')))
    });
    declared.map_or(Framing::Chunked, Framing::Length)
}

/// Forwards the stream to an HTTP/1.1 backend (backend `index` of the routed pool), on the
/// connection `reuse` allows.
pub(super) async fn attempt<S: ClientStream>(
    call: &mut Call<'_, S>,
    index: usize,
    up: &Upstream,
    reuse: Reuse,
) -> Result<(), AttemptError<Fail<S::Code>>> {
    let timeouts = call.epoch.epoch.timeouts;
    // Bounds the attempt's waits in turn: the request body's reads, the response's.
    let mut timer = std::pin::pin!(Timer::new());
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
    let is_head = call.stream.method() == b"HEAD";
    // An extended CONNECT goes as a WebSocket upgrade, with a key of Fulcrum's own; its stream
    // carries no body until the tunnel.
    let ws_key = call.upgrade.then(websocket::new_key);
    let framing = if call.upgrade { Framing::None } else { request_framing(call) };
    let mut head = Vec::with_capacity(512);
    let proto = call.stream.info().proto();
    let pseudo = call.stream.request_head();
    let fields = || call.stream.fields();
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
    let started = fulcrum_util::now();
    let (res, _) = conn.w.write_all(head).await;
    if res.is_err() {
        return Err(AttemptError::NoResponse { reused: conn.reused });
    }
    if framing != Framing::None {
        // The body streams as it arrives and is not kept: from here on the request cannot be
        // sent again.
        call.stream.stop_replay();
        let chunked = framing == Framing::Chunked;
        let mut clock = MinRate::new(timeouts.client_body_min_rate, timeouts.client_body())
            .map(RateClock::start);
        let mut received = 0;
        let upstream_failed = || bad("upstream connection failed");
        let mut chunk = S::chunk_buf();
        let mut size_line = Vec::with_capacity(18);
        loop {
            let next = call.stream.next_chunk(&mut chunk);
            let paced = client_paced(
                next,
                timeouts.client_body(),
                clock.as_mut(),
                received,
                timer.as_mut(),
            )
            .await;
            match paced {
                Ok(Next::Data) => {}
                // Request trailers are not forwarded to HTTP/1.1 backends.
                Ok(Next::End) => break,
                Ok(Next::Reset) => {
                    // A stream the client reset counts against the rapid-reset cap, as on the
                    // h2c path.
                    call.stream.count_reset();
                    return Err(AttemptError::Fail(Fail::ClientGone));
                }
                Ok(Next::Gone) => return Err(AttemptError::Fail(Fail::ClientGone)),
                Err(e) => return Err(failed(ProxyError::Client(e))),
            }
            let len = chunk.as_ref().len();
            received += len as u64;
            call.capture.tap(chunk.as_ref());
            if chunked && len > 0 {
                size_line.clear();
                push_hex(&mut size_line, len as u64);
                size_line.extend_from_slice(b"\r\n");
                let (r, back) = timed_write(conn.w.write_all(size_line), clock.as_mut()).await;
                size_line = back;
                r.map_err(|_| upstream_failed())?;
            }
            let (r, back) = timed_write(conn.w.write_all(chunk), clock.as_mut()).await;
            chunk = back;
            r.map_err(|_| upstream_failed())?;
            if chunked && len > 0 {
                let (r, _) = timed_write(conn.w.write_all(&b"\r\n"[..]), clock.as_mut()).await;
                r.map_err(|_| upstream_failed())?;
            }
            call.stream.release(len);
        }
        if chunked {
            let (r, _) = conn.w.write_all(&b"0\r\n\r\n"[..]).await;
            r.map_err(|_| upstream_failed())?;
        }
    }

    // Read the response head: the same parser and rules as for an HTTP/1.1 client.
    let mut interim = 0;
    let (response, res_framing, keep_alive) = loop {
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
                        let head = S::response_head(&res, false)
                            .ok_or_else(|| bad("malformed response head"))?;
                        note.sent(S::head_bytes(&head));
                        call.stream.send_interim(head).map_err(gone)?;
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
                    let head = S::response_head(&res, true)
                        .ok_or_else(|| bad("malformed response head"))?;
                    conn.buf.consume(res.head_len);
                    up.response_head(note, 200, started, fulcrum_util::now());
                    note.sent(S::head_bytes(&head));
                    call.stream.send_response(head, false).map_err(gone)?;
                    let _span = note.phase("tunnel");
                    let ctx = call.ctx;
                    let tunnel = ctx.open_tunnel();
                    let (up_flow, down_flow) = call.stream.tunnel_flows(&tunnel, &mut conn);
                    let (idle, drain) = (timeouts.tunnel_idle(), timeouts.drain());
                    let report =
                        tunnel.run(ctx.drained_signal(), idle, drain, up_flow, down_flow).await;
                    if !matches!(report.end, TunnelEnd::Client | TunnelEnd::Backend) {
                        call.stream.reset(S::CANCEL);
                    }
                    call.tunnel.set(Some(report));
                    // Counted in flight until here; the connection is never pooled.
                    drop(in_flight);
                    return Ok(());
                }
                Ok(Some(ResponseStart::Final(res))) => {
                    let head = S::response_head(&res, false)
                        .ok_or_else(|| bad("malformed response head"))?;
                    let (framing, keep_alive, len) = (res.framing, res.keep_alive, res.head_len);
                    conn.buf.consume(len);
                    break (head, framing, keep_alive);
                }
                Ok(None) if conn.buf.is_full() => return Err(bad("response head too large")),
                Ok(None) => {}
                Err(_) => return Err(bad("malformed response head")),
            }
        }
        match timer.as_mut().within(timeouts.upstream_response(), conn.fill()).await {
            Err(_) => return Err(failed(ProxyError::UpstreamTimeout)),
            // (After an interim head the response has begun: not sent again.)
            Ok(Ok(0) | Err(_)) if conn.buf.is_empty() && interim == 0 => {
                return Err(AttemptError::NoResponse { reused: conn.reused });
            }
            Ok(Ok(0) | Err(_)) => return Err(bad("upstream closed before the response")),
            Ok(Ok(_)) => {}
        }
    };
    up.response_head(note, S::status(&response), started, fulcrum_util::now());
    let _respond = note.phase("respond");
    note.sent(S::head_bytes(&response));
    let eos = matches!(res_framing, Framing::None | Framing::Length(0));
    if eos {
        in_flight = None;
    }
    call.stream.send_response(response, eos).map_err(gone)?;
    if eos {
        if keep_alive {
            up.checkin(conn);
        }
        return Ok(());
    }
    let client = &mut call.stream;
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
                    client.send_body(&conn.buf.data()[..n], last).await.map_err(gone)?;
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
                        client.send_body(&payload, done).await.map_err(gone)?;
                    }
                    if done {
                        break;
                    }
                }
                Framing::None => break,
            }
        }
        match timer.as_mut().within(timeouts.upstream_response(), conn.fill()).await {
            Err(_) => {
                return Err(failed(ProxyError::Upstream(BodyError::ReadTimeout)));
            }
            Ok(Ok(0)) if res_framing == Framing::UntilClose => {
                drop(in_flight);
                let _ = client.send_body(&[], true).await;
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
