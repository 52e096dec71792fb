//! The one attempt loop, for every request whatever the client's and the backend's protocol:
//! pick a backend of the pool the request was routed to, let the protocol acquire a connection or stream and send one attempt,
//! classify how it failed, and decide on a retry. Runs on the worker's thread, inside the
//! request's task.
//!
//! The retry rules are written here once:
//! - An attempt that sent nothing (a connect failure or timeout) is retried for every method,
//!   on a backend not tried yet for this request.
//! - One that reached a connection that closed or reset before any response byte is retried
//!   only for an idempotent method (RFC 9110 9.2.2) whose whole request is still in hand: on
//!   another backend, or on one already tried once every backend was. A pooled keep-alive
//!   connection that failed so is retried on a new connection to the same backend (the backend
//!   most likely closed it while idle).
//! - A stream the backend refused unprocessed (HTTP/2 `REFUSED_STREAM`, or `GOAWAY` beyond it)
//!   is retried, whatever the method, while the request is still in hand, on any backend (the
//!   same one included: a refused stream says nothing about the backend's health).
//! - A backend whose connection queue is full turns the request to another backend; that is
//!   not a retry (nothing was sent).
//! - Anything else is final. `retries.max_attempts` bounds the tries of one request and the
//!   worker's retry budget bounds them all.

use fulcrum_config::BackendProtocol;
use fulcrum_util::now_ms;

use crate::ctx::{WorkerCtx, WorkerPool};
use crate::error::{ProxyError, QueueError};
use crate::exchange::ExchangeNote;
use crate::retry::RetryReason;
use crate::upstream::{Reuse, Upstream};

/// How one attempt on one backend ended without a complete answer, and so whether another
/// attempt is safe. `F` is the client protocol's final failure.
#[derive(Debug)]
pub(crate) enum AttemptError<F> {
    /// Nothing reached the backend: the connect failed or timed out (already recorded for
    /// passive health).
    ConnectFailed,
    /// Nothing reached the backend: its connection queue is full.
    Busy,
    /// Nothing reached the backend: it left the configuration meanwhile.
    Gone,
    /// The request went out and the connection closed or reset before any response byte;
    /// `reused`: it was a pooled keep-alive connection.
    NoResponse {
        /// The connection had served a request before.
        reused: bool,
    },
    /// The backend refused the stream without processing it.
    Refused,
    /// Final: this is the answer.
    Fail(F),
}

impl<F> From<F> for AttemptError<F> {
    fn from(f: F) -> Self {
        AttemptError::Fail(f)
    }
}

/// What a client protocol supplies to the attempt loop: which backends can serve the request,
/// whether it could be sent again, and one attempt.
pub(crate) trait Forward {
    /// A complete exchange.
    type Output;
    /// The protocol's final failure (an error to answer, or a client that is gone).
    type Failure: From<ProxyError>;

    /// Whether backends speaking `protocol` can serve this request at all.
    fn serves(&self, protocol: BackendProtocol) -> bool;

    /// Whether the request is idempotent (RFC 9110 9.2.2).
    fn idempotent(&self) -> bool;

    /// Whether everything sent so far is still in hand, so the request can be sent again.
    fn replayable(&self) -> bool;

    /// One attempt on `up` (backend `index` of the routed pool): acquire a connection (which
    /// one: `reuse`) or a stream, send, relay the answer.
    async fn attempt(
        &mut self,
        index: usize,
        up: &Upstream,
        reuse: Reuse,
    ) -> Result<Self::Output, AttemptError<Self::Failure>>;
}

/// A set of backend indices: those a request tried, or those it could not reach.
#[derive(Debug, Default)]
struct Tried {
    low: u128,
    high: Vec<usize>,
}

impl Tried {
    fn contains(&self, i: usize) -> bool {
        if i < 128 { self.low & (1 << i) != 0 } else { self.high.contains(&i) }
    }
    fn insert(&mut self, i: usize) {
        if i < 128 {
            self.low |= 1 << i;
        } else {
            self.high.push(i);
        }
    }
    fn remove(&mut self, i: usize) {
        if i < 128 {
            self.low &= !(1 << i);
        } else {
            self.high.retain(|&j| j != i);
        }
    }
}

/// Sends a request to a backend of `pool` (of the pinned epoch) until an attempt succeeds or
/// the rules above say stop.
pub(crate) async fn forward<P: Forward>(
    ctx: &WorkerCtx,
    pool: &WorkerPool,
    note: &ExchangeNote,
    request: &mut P,
) -> Result<P::Output, P::Failure> {
    // The request's arrival serves as the clock for its budget entry and first pick (ejections
    // are judged to the millisecond); a retry reads the clock again.
    let arrived = note.start_ms();
    ctx.retries.record_request(arrived);
    let mut clock = Some(arrived);
    let mut tried = Tried::default();
    let mut unreachable = Tried::default();
    let mut attempts = 0;
    // The answer if no further attempt is made, and why the last attempt failed.
    let mut last: Option<(ProxyError, RetryReason)> = None;
    // A stale pooled connection's request goes again on a new connection to its backend.
    let mut fresh_on: Option<usize> = None;
    // Some backend turned the request away because its connection queue was full.
    let mut busy = false;
    loop {
        let picking = note.phase("pick");
        let now = clock.take().unwrap_or_else(now_ms);
        let fresh = fresh_on.is_some();
        let picked = match fresh_on.take() {
            Some(i) => pool.upstreams.get(i).map(|up| (i, &**up)),
            // After a reset, the backends already tried are used again once every other one
            // was: better the same backend than no retry.
            None => pick(pool, request, &tried, now).or_else(|| match &last {
                Some((_, RetryReason::Reset)) => pick(pool, request, &unreachable, now),
                _ => None,
            }),
        };
        drop(picking);
        let Some((i, up)) = picked else {
            let none = if busy {
                ProxyError::BackendBusy(QueueError::Full)
            } else {
                ProxyError::NoBackend
            };
            return Err(last.map_or(none, |(e, _)| e).into());
        };
        tried.insert(i);
        attempts += 1;
        let reuse = Reuse::for_attempt(fresh, request.idempotent() && request.replayable());
        let (error, reason) = match request.attempt(i, up, reuse).await {
            Ok(done) => return Ok(done),
            Err(AttemptError::Fail(f)) => return Err(f),
            Err(AttemptError::Busy) => {
                // Nothing was sent, and another backend may have room (as HAProxy redispatches
                // at a server's `maxqueue`). Not a retry.
                unreachable.insert(i);
                attempts -= 1;
                busy = true;
                continue;
            }
            Err(AttemptError::Gone) => {
                unreachable.insert(i);
                attempts -= 1;
                continue;
            }
            Err(AttemptError::ConnectFailed) => {
                unreachable.insert(i);
                (ProxyError::NoBackend, RetryReason::Connect)
            }
            Err(AttemptError::NoResponse { reused }) => {
                let error = ProxyError::BadGateway("upstream closed before the response");
                if !(request.idempotent() && request.replayable()) {
                    return Err(error.into());
                }
                if reused {
                    fresh_on = Some(i);
                    (error, RetryReason::Stale)
                } else {
                    (error, RetryReason::Reset)
                }
            }
            Err(AttemptError::Refused) => {
                let error = ProxyError::BadGateway("upstream refused the stream");
                if !request.replayable() {
                    return Err(error.into());
                }
                // The backend did not act on it and may take it on another stream or session.
                tried.remove(i);
                (error, RetryReason::Refused)
            }
        };
        if !ctx.retries.allow(attempts, reason) {
            return Err(error.into());
        }
        last = Some((error, reason));
    }
}

/// Picks a backend that can serve `request`, not in `skip` and not ejected at `now` (ms),
/// preferring those the active health checks have not taken out (failing open when every
/// candidate is down).
fn pick<'e, P: Forward>(
    pool: &'e WorkerPool,
    request: &P,
    skip: &Tried,
    now: u64,
) -> Option<(usize, &'e Upstream)> {
    let ups = &pool.upstreams;
    let excluded = |i: usize| {
        skip.contains(i)
            || !request.serves(ups[i].backend.url.protocol)
            || ups[i].stats.is_ejected(now)
    };
    let health = |i: usize| &ups[i].backend.health;
    let i = pool.picker.pick_healthy(pool.algorithm, pool.weighted, ups, excluded, health, now)?;
    Some((i, &*ups[i]))
}
