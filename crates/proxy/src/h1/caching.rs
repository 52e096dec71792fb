//! The response cache on the HTTP/1.1 data path: the worker's shard ([`WorkerCache`]), the
//! lookup after a request head ([`prepare`]), serving a hit ([`serve_hit`]) and storing a miss
//! as it streams to the client ([`CacheMark::on_head`], [`Tee`], [`CacheMark::complete`]).
//!
//! Only a request whose whole body fits the client buffer (`limits.buffer_bytes`) is eligible:
//! the body is part of the key, so it must be in hand before the lookup. Chunked request
//! bodies, HTTP/1.0 clients, protocol upgrades and methods outside `cache.methods` bypass
//! (`X-Cache: BYPASS`), as
//! does whatever [`fulcrum_cache::CacheRules::check_request`] refuses. HTTP/2 (and so gRPC) never reaches
//! this module.
//!
//! What is stored is the response exactly as sent to the client: the client head without the
//! `Connection` line this proxy adds, upstream `X-Cache` and `Age` lines, and the body bytes as
//! written (chunk framing and trailers included for a chunked response). A hit is that head
//! plus `age` and `x-cache: HIT` (and `connection: close` when the connection ends), then the
//! body unchanged.

use std::cell::RefCell;
use std::mem::MaybeUninit;
use std::rc::Rc;
use std::time::Duration;

use fulcrum_cache::{
    CacheKey, CachePolicy, CacheRules as _, CachedResponse, FillGuard, FillOutcome, FillRole,
    InsertOutcome, RequestDecision, ResponseDecision,
};
use fulcrum_http::h1::body::{RateClock, fill_within};
use fulcrum_http::h1::{
    BodyError, BodyTap, Framing, MAX_HEADERS, MinRate, RequestInfo, ResponseInfo,
};
use fulcrum_telemetry::CacheStatus;
use fulcrum_util::{Gather, write_all_gathered};
use monoio::io::AsyncWriteRentExt;

use super::{ClientConn, Failure, responded, timed_out};
use crate::ctx::{WorkerCtx, WorkerEpoch};
use crate::error::ProxyError;
use crate::exchange::{ExchangeLog, ExchangeNote};
use crate::worker_cache::WorkerCache;

/// Longest a miss waits for another request filling the same key (also capped by the
/// upstream response timeout); then it goes upstream itself.
const MAX_FILL_WAIT: Duration = Duration::from_secs(10);

/// How the cache treats one exchange.
#[derive(Debug)]
pub(crate) enum CacheMark {
    /// The cache is off: no lookup, no header.
    Off,
    /// Not eligible: forwarded with `X-Cache: BYPASS`, never stored.
    Bypass,
    /// Answer from the cache.
    Hit(Rc<CachedResponse>),
    /// Looked up, not found: forwarded with `X-Cache: MISS`, stored if the response allows.
    Miss(Fill),
}

/// A miss on its way upstream.
#[derive(Debug)]
pub(crate) struct Fill {
    key: CacheKey,
    authorized: bool,
    generation: u64,
    /// Held by the request that leads the fill; later misses for the key wait for it.
    guard: RefCell<Option<FillGuard>>,
    /// Set once a storable response head arrived.
    pending: RefCell<Option<Pending>>,
}

/// A storable response whose body is streaming.
#[derive(Debug)]
struct Pending {
    head: Vec<u8>,
    fresh_for: Duration,
    age: Duration,
    /// The body size when framed by `Content-Length`.
    length: Option<u64>,
}

/// Collects the response body as written to the client, up to a limit; past it, the bytes
/// are dropped and the response is not stored.
#[derive(Debug, Default)]
pub(super) struct Tee {
    buf: Vec<u8>,
    limit: usize,
    on: bool,
}

impl Tee {
    fn on(limit: usize, expected: usize) -> Tee {
        Tee { buf: Vec::with_capacity(expected.min(limit)), limit, on: true }
    }
}

impl BodyTap for Tee {
    #[inline]
    fn tap(&mut self, _: &[u8]) {}

    #[inline]
    fn wire(&mut self, bytes: &[u8]) {
        if !self.on {
            return;
        }
        if self.buf.len() + bytes.len() > self.limit {
            self.on = false;
            self.buf = Vec::new();
        } else {
            self.buf.extend_from_slice(bytes);
        }
    }
}

impl CacheMark {
    /// The access-log value.
    fn status(&self) -> CacheStatus {
        match self {
            CacheMark::Off => CacheStatus::Off,
            CacheMark::Bypass => CacheStatus::Bypass,
            CacheMark::Hit(_) => CacheStatus::Hit,
            CacheMark::Miss(_) => CacheStatus::Miss,
        }
    }

    /// A final response head is in `out` (built by `h1::parse_response`): adds `X-Cache`,
    /// decides whether the response will be stored, and returns the tee for its body.
    pub(super) fn on_head(
        &self,
        res: &ResponseInfo,
        out: &mut Vec<u8>,
        policy: &CachePolicy,
    ) -> Tee {
        let fill = match self {
            CacheMark::Off | CacheMark::Hit(_) => return Tee::default(),
            CacheMark::Bypass => {
                let at = res.end_to_end_len.min(out.len());
                out.splice(at..at, b"x-cache: BYPASS\r\n".iter().copied());
                return Tee::default();
            }
            CacheMark::Miss(fill) => fill,
        };
        let e2e = res.end_to_end_len.min(out.len());
        let status_end = out[..e2e].windows(2).position(|w| w == b"\r\n").map_or(e2e, |i| i + 2);
        let length = match res.framing {
            Framing::None => Some(0),
            Framing::Length(n) => Some(n),
            Framing::Chunked | Framing::UntilClose => None,
        };
        // A body delimited by the connection's close cannot be replayed on a kept-alive
        // connection; a de-chunked body is not what other clients get.
        let decision = if res.framing == Framing::UntilClose || res.dechunk {
            None
        } else {
            let lines = header_lines(&out[status_end..e2e]);
            Some(policy.check_response(fill.authorized, res.status, lines, length))
        };
        // Client head: upstream X-Cache lines replaced by ours. Stored head: also without Age.
        let mut head = Vec::with_capacity(out.len() + 16);
        let mut stored = Vec::with_capacity(e2e);
        head.extend_from_slice(&out[..status_end]);
        stored.extend_from_slice(&out[..status_end]);
        for line in out[status_end..e2e].split_inclusive(|&b| b == b'\n') {
            let name = line.split(|&b| b == b':').next().unwrap_or_default();
            if name.eq_ignore_ascii_case(b"x-cache") {
                continue;
            }
            head.extend_from_slice(line);
            if !name.eq_ignore_ascii_case(b"age") {
                stored.extend_from_slice(line);
            }
        }
        head.extend_from_slice(b"x-cache: MISS\r\n");
        head.extend_from_slice(&out[e2e..]);
        *out = head;
        match decision {
            Some(ResponseDecision::Store { fresh_for, age }) => {
                let limit = usize::try_from(policy.max_object_bytes).unwrap_or(usize::MAX);
                let expected = length.map_or(4096, |n| usize::try_from(n).unwrap_or(usize::MAX));
                *fill.pending.borrow_mut() = Some(Pending { head: stored, fresh_for, age, length });
                Tee::on(limit, expected)
            }
            _ => {
                *fill.pending.borrow_mut() = None;
                Tee::default()
            }
        }
    }

    /// The whole response reached the client: stores it if it was storable and complete,
    /// then ends the fill (waiters look up again, or go upstream if nothing was stored).
    pub(super) fn complete(&self, cache: &WorkerCache, tee: Tee) {
        let CacheMark::Miss(fill) = self else { return };
        let Some(p) = fill.pending.borrow_mut().take() else { return };
        if !tee.on
            || p.length.is_some_and(|n| n != tee.buf.len() as u64)
            || !cache.accepts(fill.generation)
        {
            return;
        }
        let response = CachedResponse::new(p.head, tee.buf, fulcrum_util::now(), p.fresh_for)
            .with_base_age(p.age);
        let outcome = cache.insert(fill.key, Rc::new(response));
        if let InsertOutcome::Stored { .. } = outcome
            && let Some(guard) = fill.guard.borrow_mut().take()
        {
            guard.complete(FillOutcome::Stored);
        }
    }
}

/// `name: value` lines of a head this proxy wrote (each ends in CRLF).
fn header_lines(block: &[u8]) -> impl Iterator<Item = (&str, &[u8])> {
    block.split_inclusive(|&b| b == b'\n').filter_map(|line| {
        let line = line.strip_suffix(b"\r\n").unwrap_or(line);
        let colon = line.iter().position(|&b| b == b':')?;
        let name = std::str::from_utf8(&line[..colon]).ok()?;
        Some((name, line[colon + 1..].trim_ascii()))
    })
}

/// What a lookup runs under: the pinned epoch, the cache settings the request's route gives it,
/// and its pool (part of the key, so two pools never share an entry).
pub(super) struct Lookup<'a> {
    /// The pinned epoch.
    pub epoch: &'a WorkerEpoch,
    /// The settings in force for this request.
    pub policy: &'a CachePolicy,
    /// The pool it was routed to.
    pub pool: &'a str,
}

/// Decides how the cache treats a request whose head was just read (the cache is on for it),
/// reading the rest of a small body into the client buffer when needed, and looks it up. Notes
/// the outcome for the access log.
pub(super) async fn prepare(
    ctx: &WorkerCtx,
    at: &Lookup<'_>,
    req: &RequestInfo,
    client: &mut ClientConn,
    raw_head: &[u8],
    note: &ExchangeNote,
) -> Result<CacheMark, Failure> {
    let mark = lookup(ctx, at, req, client, raw_head).await?;
    note.set_cache(mark.status());
    Ok(mark)
}

async fn lookup(
    ctx: &WorkerCtx,
    at: &Lookup<'_>,
    req: &RequestInfo,
    client: &mut ClientConn,
    raw_head: &[u8],
) -> Result<CacheMark, Failure> {
    let (epoch, policy) = (at.epoch, at.policy);
    let method = raw_head.split(|&b| b == b' ').next().unwrap_or_default();
    let method_ok = std::str::from_utf8(method).is_ok_and(|m| policy.allows_method(m));
    let max_body = ctx.limits.max_body_bytes;
    let body_len = match req.framing {
        Framing::None => 0,
        Framing::Length(n)
            if n <= ctx.limits.buffer_bytes as u64 && (max_body == 0 || n <= max_body) =>
        {
            n as usize
        }
        Framing::Length(_) | Framing::Chunked | Framing::UntilClose => {
            return Ok(CacheMark::Bypass);
        }
    };
    // A protocol upgrade is never answered from or stored in the cache.
    if raw_head.is_empty() || req.http10 || !method_ok || !req.upgrade.is_empty() {
        return Ok(CacheMark::Bypass);
    }
    if client.buf.len() < body_len {
        read_body(epoch, req, client, body_len).await?;
    }
    let body = &client.buf.data()[..body_len];
    let Some((key, authorized)) = key_of(ctx, policy, raw_head, body, at.pool) else {
        return Ok(CacheMark::Bypass);
    };
    if let Some(hit) = ctx.cache.get(&key, fulcrum_util::now()) {
        return Ok(CacheMark::Hit(hit));
    }
    let role = ctx.cache.shard.borrow_mut().begin_fill(key);
    let generation = epoch.epoch.cache_generation;
    let miss = |guard| {
        CacheMark::Miss(Fill {
            key,
            authorized,
            generation,
            guard: RefCell::new(guard),
            pending: RefCell::new(None),
        })
    };
    match role {
        FillRole::Leader(guard) => Ok(miss(Some(guard))),
        FillRole::Waiter(wait) => {
            let limit = epoch.epoch.timeouts.upstream_response().min(MAX_FILL_WAIT);
            if wait.wait(limit).await == Some(FillOutcome::Stored)
                && let Some(hit) = ctx.cache.get(&key, fulcrum_util::now())
            {
                return Ok(CacheMark::Hit(hit));
            }
            // Not stored, timed out, or already gone: upstream without leading a new fill.
            Ok(miss(None))
        }
    }
}

/// Reads until `len` body bytes are in the client buffer (`len ≤ buffer_bytes`), answering
/// `Expect: 100-continue` first.
async fn read_body(
    epoch: &WorkerEpoch,
    req: &RequestInfo,
    client: &mut ClientConn,
    len: usize,
) -> Result<(), Failure> {
    let t = &epoch.epoch.timeouts;
    if req.expect_continue && client.buf.is_empty() {
        let continue_head: &'static [u8] = b"HTTP/1.1 100 Continue\r\n\r\n";
        let (res, _) = client.w.write_all(continue_head).await;
        res.map_err(|e| ProxyError::Client(BodyError::Write(e)))?;
    }
    let mut clock = MinRate::new(t.client_body_min_rate, t.client_body()).map(RateClock::start);
    while client.buf.len() < len {
        let received = client.buf.len() as u64;
        let (r, buf, timer) = (&mut client.r, &mut client.buf, client.timer.as_mut());
        match fill_within(r, buf, t.client_body(), clock.as_mut(), received, timer).await {
            Err(e) => return Err(ProxyError::Client(e).into()),
            Ok(0) => return Err(ProxyError::Client(BodyError::Truncated).into()),
            Ok(_) => {}
        }
    }
    Ok(())
}

/// The key of a request (from its pool, its head as received and its body) and whether it
/// carries `Authorization`; `None` when the policy bypasses it.
fn key_of(
    ctx: &WorkerCtx,
    policy: &CachePolicy,
    raw_head: &[u8],
    body: &[u8],
    pool: &str,
) -> Option<(CacheKey, bool)> {
    let mut storage = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let max = ctx.limits.max_headers.clamp(1, MAX_HEADERS);
    let parsed = httparse::ParserConfig::default().parse_request_with_uninit_headers(
        &mut req,
        raw_head,
        &mut storage[..max],
    );
    let (Ok(httparse::Status::Complete(_)), Some(method), Some(path)) =
        (parsed, req.method, req.path)
    else {
        return None;
    };
    let headers = || req.headers.iter().map(|h| (h.name, h.value));
    let RequestDecision::Cacheable { authorized } = policy.check_request(method, headers()) else {
        return None;
    };
    // The pool goes in as a field no request can carry (`:` is not a token character).
    let fields = std::iter::once((":pool", pool.as_bytes())).chain(headers());
    let key =
        ctx.cache.keys.borrow_mut().compute(method, path, fields, body, &policy.ignore_headers);
    Some((key, authorized))
}

/// Answers a request from the cache: the stored head with `age` and `x-cache: HIT`, then the
/// body, in one gathered write (the stored body is shared, never copied). Consumes the request
/// body from the client buffer. `Ok(keep_alive)` like an exchange.
pub(super) async fn serve_hit(
    ctx: &WorkerCtx,
    epoch: &WorkerEpoch,
    req: &RequestInfo,
    client: &mut ClientConn,
    out: &mut Vec<u8>,
    hit: &CachedResponse,
    log: &mut ExchangeLog,
) -> Result<bool, Failure> {
    let note = &log.note;
    let _span = note.phase("cache_hit");
    if let Framing::Length(n) = req.framing {
        let n = (n as usize).min(client.buf.len());
        log.capture.tap(&client.buf.data()[..n]);
        client.buf.consume(n);
    }
    let keep_alive = req.keep_alive && !ctx.is_draining();
    out.clear();
    hit.render_head(fulcrum_util::now(), !keep_alive, out);
    let status = hit
        .head
        .get(9..12)
        .and_then(|d| std::str::from_utf8(d).ok())
        .and_then(|d| d.parse().ok())
        .unwrap_or(0);
    note.response(status, Duration::ZERO);
    let send = epoch.epoch.timeouts.client_send();
    let response = Gather::new(std::mem::take(out), Rc::clone(&hit.body));
    let (written, response) = client
        .timer
        .as_mut()
        .within(send, write_all_gathered(&mut client.w, response))
        .await
        .map_err(|_| responded(ProxyError::Client(BodyError::Write(timed_out()))))?;
    // The head's buffer comes back for the next response on this connection.
    (*out, _) = response.into_parts();
    let sent = written.map_err(|e| responded(ProxyError::Client(BodyError::Write(e))))?;
    note.sent(sent as u64);
    Ok(keep_alive)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tee_stops_past_its_limit() {
        let mut t = Tee::on(5, 100);
        t.wire(b"abc");
        t.wire(b"de");
        assert!(t.on);
        assert_eq!(t.buf, b"abcde");
        t.wire(b"f");
        assert!(!t.on);
        assert_eq!(t.buf.capacity(), 0, "memory released");
        let mut off = Tee::default();
        off.wire(b"x");
        assert!(off.buf.is_empty());
    }

    #[test]
    fn header_lines_split_names_and_values() {
        let block = b"content-type: text/plain\r\nX-Cache:  HIT \r\nage: 3\r\n";
        let lines: Vec<(&str, &[u8])> = header_lines(block).collect();
        assert_eq!(
            lines,
            vec![
                ("content-type", &b"text/plain"[..]),
                ("X-Cache", &b"HIT"[..]),
                ("age", &b"3"[..])
            ]
        );
    }

    fn info(len: usize, framing: Framing) -> ResponseInfo {
        ResponseInfo {
            head_len: 0,
            status: 200,
            framing,
            upstream_keep_alive: true,
            client_keep_alive: true,
            dechunk: false,
            end_to_end_len: len,
        }
    }

    fn miss() -> CacheMark {
        CacheMark::Miss(Fill {
            key: CacheKey::from_bytes([1; 32]),
            authorized: false,
            generation: 0,
            guard: RefCell::new(None),
            pending: RefCell::new(None),
        })
    }

    #[test]
    fn miss_head_gets_x_cache_and_the_stored_head_loses_age() {
        let e2e =
            "HTTP/1.1 200 OK\r\ncontent-type: a\r\nAge: 5\r\nX-Cache: HIT\r\ncontent-length: 2\r\n";
        let mut out = format!("{e2e}connection: close\r\n\r\nhi").into_bytes();
        let policy = CachePolicy { enabled: true, ..CachePolicy::default() };
        let mark = miss();
        let tee = mark.on_head(&info(e2e.len(), Framing::Length(2)), &mut out, &policy);
        assert!(tee.on);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 200 OK\r\ncontent-type: a\r\nAge: 5\r\ncontent-length: 2\r\nx-cache: MISS\r\n\
             connection: close\r\n\r\nhi"
        );
        let CacheMark::Miss(fill) = &mark else { unreachable!() };
        let pending = fill.pending.borrow();
        let p = pending.as_ref().unwrap();
        assert_eq!(p.head, b"HTTP/1.1 200 OK\r\ncontent-type: a\r\ncontent-length: 2\r\n");
        assert_eq!(p.age, Duration::from_secs(5));
        assert_eq!(p.fresh_for, Duration::from_secs(55));
    }

    #[test]
    fn unstorable_responses_get_no_tee() {
        let policy = CachePolicy { enabled: true, ..CachePolicy::default() };
        let e2e = "HTTP/1.1 200 OK\r\ncache-control: no-store\r\n";
        let mut out = format!("{e2e}\r\n").into_bytes();
        let tee = miss().on_head(&info(e2e.len(), Framing::Chunked), &mut out, &policy);
        assert!(!tee.on);
        assert!(out.ends_with(b"x-cache: MISS\r\n\r\n"));
        let e2e = "HTTP/1.1 200 OK\r\n";
        let mut out = format!("{e2e}connection: close\r\n\r\n").into_bytes();
        let tee = miss().on_head(&info(e2e.len(), Framing::UntilClose), &mut out, &policy);
        assert!(!tee.on, "until-close bodies are not stored");
        let mut out = format!("{e2e}\r\n").into_bytes();
        let tee = CacheMark::Bypass.on_head(&info(e2e.len(), Framing::None), &mut out, &policy);
        assert!(!tee.on);
        assert_eq!(out, b"HTTP/1.1 200 OK\r\nx-cache: BYPASS\r\n\r\n");
    }
}
