//! The watch on the state document: a task on the `lb-store` runtime that streams
//! `/v3/watch`, resumes after any failure from the first revision it has not delivered, checks a
//! quiet stream end to end with a read, and reports everything as [`WatchEvent`]s on a bounded
//! queue. It has no exit but being dropped: a watch that silently dies (Traefik #566) cannot
//! happen here, only one that keeps saying `Disconnected` and why.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::body::Incoming;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::channel::{Channel, Shared, http_status, protocol};
use crate::config::Endpoint;
use crate::error::{Error, grpc_code};
use crate::status::StatusHandle;
use crate::transport::{self, Lines};
use crate::wire;

/// What a watch reports, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    /// As of `revision` the document is `value` (`None`: deleted). Revisions only increase.
    /// Every write is delivered, except across a `Compacted` (or an over-large catch-up), after
    /// which one `Update` carries the current document: `revision` is then its mod_revision,
    /// or the read's revision if it does not exist, and may equal one delivered before.
    Update {
        /// Revision of the change.
        revision: i64,
        /// The document after the change.
        value: Option<Vec<u8>>,
    },
    /// The watch is alive and nothing was missed: a read at `revision` found the document the
    /// watch last delivered. Sent after each quiet `timeouts.watch_probe`.
    Progress {
        /// The store revision of the check.
        revision: i64,
    },
    /// etcd compacted the history the watch had to resume from (it was disconnected too long,
    /// or started too far back); `compact_revision` is the oldest revision etcd still has. The
    /// watch reads the document itself, and the next event is an `Update` with it.
    Compacted {
        /// The compaction point.
        compact_revision: i64,
    },
    /// The watch lost etcd; it reconnects with backoff (bounded, jittered) until it succeeds.
    /// Sent once per outage, with the first error (later ones go to the status).
    Disconnected {
        /// Why.
        error: Error,
    },
    /// The watch is back after a `Disconnected`, resuming from `revision` (nothing missed).
    Reconnected {
        /// The first revision the resumed stream will deliver.
        revision: i64,
    },
}

/// A running watch: receive its events with [`Watch::recv`]; dropping it stops the task.
#[derive(Debug)]
pub struct Watch {
    events: mpsc::Receiver<WatchEvent>,
    task: JoinHandle<()>,
    status: StatusHandle,
}

impl Watch {
    pub(crate) fn start(shared: Arc<Shared>, from_revision: i64) -> Result<Self, Error> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| Error::Config("a watch needs a tokio runtime".into()))?;
        let (tx, events) = mpsc::channel(shared.limits.event_queue);
        let watcher = Watcher {
            channel: Channel::new(shared.clone()),
            events: tx,
            next: from_revision.max(1),
            present: None,
            resync: from_revision <= 0,
            outage: false,
            backoff: Backoff::new(shared.timeouts.backoff_min, shared.timeouts.backoff_max),
            shared: shared.clone(),
        };
        shared.status.set_watch_revision(watcher.next);
        let task = runtime.spawn(watcher.run());
        Ok(Self { events, task, status: shared.status.clone() })
    }

    /// The next event. Cancel-safe (fine in `tokio::select!`). `None` only if the watch task
    /// is gone, which takes a runtime shutdown or a bug (a panic): treat it as fatal.
    pub async fn recv(&mut self) -> Option<WatchEvent> {
        self.events.recv().await
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.task.abort();
        self.status.set_watching(false);
    }
}

/// How a stream session ended (it never ends well: a healthy stream runs forever).
enum Ended {
    /// The `Watch` was dropped.
    Stopped,
    /// History is gone (compaction, or a catch-up larger than the limit): read the document.
    HistoryLost,
    /// The stream or a probe failed; reconnect after a backoff.
    Failed(Error),
}

impl From<Error> for Ended {
    fn from(e: Error) -> Self {
        Ended::Failed(e)
    }
}

struct Watcher {
    shared: Arc<Shared>,
    /// For reads (probes, resyncs) and authentication.
    channel: Channel,
    events: mpsc::Sender<WatchEvent>,
    /// The first revision not yet delivered or verified: where a new stream starts.
    next: i64,
    /// Whether the last delivered document exists (`None`: nothing delivered yet).
    present: Option<bool>,
    /// The document must be read before streaming again.
    resync: bool,
    /// `Disconnected` was sent and `Reconnected` not yet.
    outage: bool,
    backoff: Backoff,
}

impl Watcher {
    async fn run(mut self) {
        loop {
            let ended = if self.resync { self.resync().await } else { self.session().await };
            match ended {
                Ok(()) => {}
                Err(Ended::Stopped) => return,
                Err(Ended::HistoryLost) => self.resync = true,
                Err(Ended::Failed(error)) => {
                    self.shared.status.set_watching(false);
                    self.shared.status.failed(&error, matches!(error, Error::Etcd { .. }));
                    if !self.outage {
                        self.outage = true;
                        if self.emit(WatchEvent::Disconnected { error }).await.is_err() {
                            return;
                        }
                    }
                    tokio::time::sleep(self.backoff.next()).await;
                }
            }
        }
    }

    async fn emit(&self, event: WatchEvent) -> Result<(), Ended> {
        self.events.send(event).await.map_err(|_| Ended::Stopped)
    }

    /// Reads the document, delivers it, and moves the resume point past the read.
    async fn resync(&mut self) -> Result<(), Ended> {
        let deadline = Instant::now() + self.shared.timeouts.request;
        let range = self.channel.range("watch resync", deadline, false).await?;
        let header = range.header.revision;
        let (revision, value) = match range.kvs.into_iter().next() {
            Some(kv) => (kv.mod_revision, Some(kv.value)),
            None => (header, None),
        };
        self.present = Some(value.is_some());
        self.resync = false;
        self.advance(header + 1);
        self.emit(WatchEvent::Update { revision, value }).await
    }

    fn advance(&mut self, next: i64) {
        if next > self.next {
            self.next = next;
            self.shared.status.set_watch_revision(next);
        }
    }

    /// One stream, from creation until it fails.
    async fn session(&mut self) -> Result<(), Ended> {
        let deadline = Instant::now() + self.shared.timeouts.request;
        let Stream { index, endpoint, mut body, mut lines, created } =
            tokio::time::timeout_at(deadline, self.establish(deadline)).await.unwrap_or(Err(
                Error::Timeout { op: "watch", after: self.shared.timeouts.request },
            ))?;
        self.shared.status.set_watching(true);
        self.shared.status.contact();
        self.backoff.reset();
        if self.outage {
            self.outage = false;
            self.shared.status.reconnected();
            self.emit(WatchEvent::Reconnected { revision: self.next }).await?;
        }
        self.handle(created).await?;

        let probe_every = self.shared.timeouts.watch_probe;
        let mut quiet_until = Instant::now() + probe_every;
        let mut behind_since = None;
        loop {
            tokio::select! {
                line = lines.next(&mut body, &endpoint) => {
                    let line = match line {
                        Ok(line) => line,
                        Err(e @ Error::TooLarge { .. }) => {
                            self.shared.status.failed(&e, true);
                            return Err(Ended::HistoryLost);
                        }
                        Err(e) => {
                            self.shared.rotate(index);
                            return Err(e.into());
                        }
                    };
                    self.shared.status.contact();
                    quiet_until = Instant::now() + probe_every;
                    let response = parse(&line)?;
                    self.handle(response).await?;
                }
                () = tokio::time::sleep_until(quiet_until) => {
                    self.probe(&mut behind_since).await?;
                    quiet_until = Instant::now() + probe_every;
                }
            }
        }
    }

    /// Opens a stream and reads etcd's answer to the create request; fetches a new token once
    /// if etcd rejects the current one.
    async fn establish(&mut self, deadline: Instant) -> Result<Stream, Error> {
        let mut refreshed = false;
        loop {
            let token = self.channel.token(deadline).await?;
            match self.open(token.as_deref()).await {
                Err(e)
                    if e.is_token_rejected() && !refreshed && self.shared.credentials.is_some() =>
                {
                    self.shared.reject_token(token.as_ref());
                    refreshed = true;
                }
                result => return result,
            }
        }
    }

    async fn open(&mut self, token: Option<&str>) -> Result<Stream, Error> {
        let request = wire::WatchCreate::new(&self.shared.key_b64, self.next);
        let body = Bytes::from(serde_json::to_vec(&request).map_err(|e| protocol("watch", e))?);
        let (index, endpoint) = self.shared.endpoint();
        let endpoint = endpoint.clone();
        let stream = async {
            let mut sender = self.shared.connector.connect(&endpoint).await?;
            let request = transport::post(&endpoint, wire::WATCH, token, body)?;
            let mut response = sender
                .send_request(request)
                .await
                .map_err(|e| transport::transport(&endpoint, &e))?;
            let limit = self.shared.limits.max_response_bytes;
            if !response.status().is_success() {
                // A refusal before the stream starts comes as a unary error body.
                let bytes = transport::read_body(response.body_mut(), limit, &endpoint).await?;
                return Err(match serde_json::from_slice::<wire::UnaryError>(&bytes) {
                    Ok(e) => Error::Etcd { op: "watch", code: e.code, message: e.message },
                    Err(_) => protocol("watch", http_status(response.status())),
                });
            }
            let mut body = response.into_body();
            let mut lines = Lines::new(limit);
            let first = lines.next(&mut body, &endpoint).await?;
            Ok((body, lines, first))
        };
        let (body, lines, first) = stream.await.inspect_err(|e| {
            if !matches!(e, Error::Etcd { .. }) {
                self.shared.rotate(index);
            }
        })?;
        let created = parse(&first)?;
        if !created.created {
            return Err(protocol("watch", "the stream did not start with `created`"));
        }
        if created.canceled && created.compact_revision == 0 {
            // Refused at creation (auth, permission): the reason is in the message.
            let (code, message) = cancel_reason(&created.cancel_reason);
            return Err(Error::Etcd { op: "watch", code, message });
        }
        Ok(Stream { index, endpoint, body, lines, created })
    }

    /// Delivers a response's events; ends the session on a cancellation.
    async fn handle(&mut self, response: wire::WatchResponse) -> Result<(), Ended> {
        if response.canceled {
            if response.compact_revision > 0 {
                self.emit(WatchEvent::Compacted { compact_revision: response.compact_revision })
                    .await?;
                return Err(Ended::HistoryLost);
            }
            let (code, message) = cancel_reason(&response.cancel_reason);
            return Err(Error::Etcd { op: "watch", code, message }.into());
        }
        for event in response.events {
            let revision = event.kv.mod_revision;
            if revision < self.next {
                continue; // Already delivered before a reconnect.
            }
            let value = if event.is_delete() { None } else { Some(event.kv.value) };
            self.present = Some(value.is_some());
            self.advance(revision + 1);
            self.emit(WatchEvent::Update { revision, value }).await?;
        }
        Ok(())
    }

    /// Checks a quiet stream end to end: reads the key's metadata and compares it with what the
    /// watch delivered. Behind for a whole probe interval, or unreadable: the session ends.
    async fn probe(&mut self, behind_since: &mut Option<Instant>) -> Result<(), Ended> {
        let deadline = Instant::now() + self.shared.timeouts.request;
        let range = self.channel.range("watch probe", deadline, true).await?;
        let header = range.header.revision;
        let behind = match (range.kvs.first(), self.present) {
            // Unchanged since the last delivered revision: verified up to `header`.
            (Some(kv), _) if kv.mod_revision < self.next => {
                self.advance(header + 1);
                None
            }
            (Some(kv), _) => Some(kv.mod_revision - self.next + 1),
            // Absent and not known to exist: the same document; the resume point stays, since a
            // put-then-delete in between would leave no trace in a read.
            (None, None | Some(false)) => None,
            // Deleted, and the watch has not said so.
            (None, Some(true)) => Some(1),
        };
        match behind {
            None => {
                *behind_since = None;
                // Only informative: dropped rather than waited for when the queue is full.
                match self.events.try_send(WatchEvent::Progress { revision: header }) {
                    Err(mpsc::error::TrySendError::Closed(_)) => Err(Ended::Stopped),
                    _ => Ok(()),
                }
            }
            Some(behind) => {
                let since = *behind_since.get_or_insert_with(Instant::now);
                let after = since.elapsed();
                if after >= self.shared.timeouts.watch_probe {
                    return Err(Error::WatchStalled { behind, after }.into());
                }
                Ok(())
            }
        }
    }
}

/// An established stream.
struct Stream {
    index: usize,
    endpoint: Endpoint,
    body: Incoming,
    lines: Lines,
    /// etcd's answer to the create request.
    created: wire::WatchResponse,
}

/// One message of the stream.
fn parse(line: &[u8]) -> Result<wire::WatchResponse, Error> {
    let line: wire::WatchLine = serde_json::from_slice(line).map_err(|e| protocol("watch", e))?;
    if let Some(e) = line.error {
        return Err(Error::Etcd { op: "watch", code: e.grpc_code, message: e.message });
    }
    line.result.ok_or_else(|| protocol("watch", "a message with neither result nor error"))
}

/// Splits etcd's `rpc error: code = Unauthenticated desc = etcdserver: ...` into a gRPC code
/// and the message.
fn cancel_reason(reason: &str) -> (i32, String) {
    let Some(rest) = reason.strip_prefix("rpc error: code = ") else {
        return (0, reason.to_owned());
    };
    let (name, message) = rest.split_once(" desc = ").unwrap_or((rest, ""));
    let code = match name {
        "Canceled" => 1,
        "InvalidArgument" => 3,
        "DeadlineExceeded" => grpc_code::DEADLINE_EXCEEDED,
        "NotFound" => 5,
        "PermissionDenied" => grpc_code::PERMISSION_DENIED,
        "ResourceExhausted" => grpc_code::RESOURCE_EXHAUSTED,
        "FailedPrecondition" => grpc_code::FAILED_PRECONDITION,
        "Aborted" => grpc_code::ABORTED,
        "OutOfRange" => grpc_code::OUT_OF_RANGE,
        "Unavailable" => grpc_code::UNAVAILABLE,
        "Unauthenticated" => grpc_code::UNAUTHENTICATED,
        _ => 2,
    };
    (code, message.to_owned())
}

/// Reconnect delays: exponential from `min` to `max`, each drawn from its upper half ("equal
/// jitter"), so many instances that lost etcd together do not come back in step.
#[derive(Debug)]
struct Backoff {
    min: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    fn new(min: Duration, max: Duration) -> Self {
        Self { min, max, attempt: 0 }
    }

    fn next(&mut self) -> Duration {
        let ceiling = self.min.saturating_mul(1 << self.attempt.min(20)).min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        let half = ceiling / 2;
        let spread = u64::try_from((ceiling - half).as_nanos()).unwrap_or(u64::MAX);
        half + Duration::from_nanos(fastrand::u64(0..=spread))
    }

    fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_within_bounds_and_resets() {
        let (min, max) = (Duration::from_millis(100), Duration::from_secs(2));
        let mut b = Backoff::new(min, max);
        let first = b.next();
        assert!(first >= min / 2 && first <= min, "{first:?}");
        for _ in 0..40 {
            let d = b.next();
            assert!(d <= max && d >= min / 2, "{d:?}");
        }
        let late = b.next();
        assert!(late >= max / 2, "{late:?}");
        b.reset();
        assert!(b.next() <= min);
    }

    #[test]
    fn cancel_reasons_parse() {
        assert_eq!(
            cancel_reason(
                "rpc error: code = Unauthenticated desc = etcdserver: invalid auth token"
            ),
            (16, "etcdserver: invalid auth token".to_owned())
        );
        assert_eq!(
            cancel_reason(
                "rpc error: code = PermissionDenied desc = etcdserver: permission denied"
            ),
            (7, "etcdserver: permission denied".to_owned())
        );
        assert_eq!(cancel_reason("something else"), (0, "something else".to_owned()));
    }
}
