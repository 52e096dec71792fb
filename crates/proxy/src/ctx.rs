//! Everything one worker owns for the data path ([`WorkerCtx`]): the epoch it runs with its view
//! of every pool ([`WorkerPool`]: backends, picker, metrics), its retry budget, cache shard and
//! telemetry, and the counts that bound it (connections, requests in progress). Lives in an `Rc` on the worker's thread;
//! never shared. The worker layer above drives it: accept loop, epoch inbox, ticker.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fulcrum_balance::Picker;
use fulcrum_cache::CacheMetrics;
use fulcrum_config::{Algorithm, Config, DEFAULT_POOL, Http2Config, Limits, PoolConfig};
use fulcrum_http::h1::{MAX_HEADERS, MAX_UPGRADE_PROTOCOLS};
use fulcrum_model::{BackendId, Epoch, Routed};
use fulcrum_telemetry::error;
use fulcrum_tls::{HandshakeError, TlsAcceptor, TlsStream};
use fulcrum_util::{Deadline, Event, EventWait, Notified, Notify, ms_at, spawn_contained};
use monoio::net::TcpStream;

use crate::exchange::{Target, WorkerTelemetry, WorkerTelemetrySpec};
use crate::metrics::{PoolMetrics, ProxyMetrics, TlsOutcome};
use crate::retry::Retries;
use crate::tunnel::Tunnel;
use crate::upstream::{Upstream, UpstreamSettings, UpstreamTls};
use crate::worker_cache::WorkerCache;

// The configuration's bound on upgrade protocols is the codec's (one bit each).
const _: () = assert!(fulcrum_config::MAX_UPGRADE_PROTOCOLS == MAX_UPGRADE_PROTOCOLS);

/// An epoch as installed on one worker: the shared epoch plus this worker's view of each of its
/// pools, in the epoch's order (`default` first).
#[derive(Debug)]
pub struct WorkerEpoch {
    /// The shared, immutable epoch.
    pub epoch: Arc<Epoch>,
    pools: Box<[WorkerPool]>,
}

impl WorkerEpoch {
    /// The pool a routing decision of this epoch names (`default` for an index this epoch
    /// does not have, which its own route table never yields).
    #[inline]
    pub fn pool(&self, routed: &Routed) -> &WorkerPool {
        self.pools.get(routed.pool).unwrap_or(&self.pools[0])
    }

    /// Every pool, `default` first.
    pub fn pools(&self) -> &[WorkerPool] {
        &self.pools
    }
}

/// One pool as one worker runs it: its backends' per-worker state, its picker and metrics.
#[derive(Debug)]
pub struct WorkerPool {
    /// The pool's name.
    pub name: Arc<str>,
    /// Its algorithm.
    pub algorithm: Algorithm,
    /// This worker's per-backend state, index-aligned with the pool's backends.
    pub upstreams: Vec<Rc<Upstream>>,
    /// Whether the backends' weights differ, so the pickers weigh them (computed once here,
    /// not per request).
    pub weighted: bool,
    /// The pool's selection state on this worker (kept across epochs).
    pub picker: Rc<Picker>,
    metrics: Arc<PoolMetrics>,
}

impl WorkerPool {
    /// Where an exchange routed here by `route` went, given the backend `index` it noted:
    /// the metrics slot and URL of that backend, or the pool's `none` row.
    pub fn target(&self, worker: usize, route: Option<u32>, index: Option<usize>) -> Target<'_> {
        match index.and_then(|i| self.upstreams.get(i)) {
            Some(up) => Target {
                pool: &self.name,
                route,
                slot: up.slot(),
                backend: Some(up.backend.url.url.as_str()),
            },
            None => Target {
                pool: &self.name,
                route,
                slot: self.metrics.no_backend(worker),
                backend: None,
            },
        }
    }
}

/// What a worker keeps of a pool across epochs: its picker (cursor, RNG) and metrics.
#[derive(Debug, Clone)]
struct PoolState {
    picker: Rc<Picker>,
    metrics: Arc<PoolMetrics>,
}

/// The process-wide pieces every worker's context shares.
#[derive(Debug, Clone)]
pub struct Shared {
    /// The data path's metrics.
    pub metrics: Arc<ProxyMetrics>,
    /// The response cache's metrics.
    pub cache_metrics: Arc<CacheMetrics>,
    /// TLS to `https://` and `h2://` backends, when it could be set up (else their connects
    /// fail, and say so).
    pub upstream_tls: Option<Arc<UpstreamTls>>,
    /// The TLS listener's side: certificates (reloadable), ALPN, the session ticketer.
    pub tls_acceptor: Option<TlsAcceptor>,
}

impl Shared {
    /// Fresh metrics for `workers` workers, the backends' TLS and the TLS listener's.
    pub fn new(
        workers: usize,
        upstream_tls: Option<Arc<UpstreamTls>>,
        tls_acceptor: Option<TlsAcceptor>,
    ) -> Self {
        Self {
            metrics: Arc::new(ProxyMetrics::new(workers)),
            cache_metrics: Arc::new(CacheMetrics::new(workers)),
            upstream_tls,
            tls_acceptor,
        }
    }
}

/// Everything one worker owns. Lives in an `Rc` on the worker thread; never shared.
pub struct WorkerCtx {
    /// Worker index (0-based).
    pub index: usize,
    /// Buffer sizes and protocol limits.
    pub limits: Limits,
    /// HTTP/2 limits and windows (`[http2]`).
    pub http2: Http2Config,
    /// The protocols whose HTTP/1.1 upgrades are passed (`upgrade.protocols`).
    pub upgrades: Box<[String]>,
    /// When failed upstream attempts are tried again, and this worker's retry budget.
    pub retries: Retries,
    /// Access log producer, metrics and tracing for this worker.
    pub telemetry: WorkerTelemetry,
    /// This worker's response cache shard (reconciled with each installed epoch).
    pub cache: WorkerCache,
    upstream_settings: UpstreamSettings,
    upstream_tls: Option<Arc<UpstreamTls>>,
    tls: Option<TlsListener>,
    /// When the ticker must run next (see [`tick`](Self::tick)).
    upkeep: Rc<Deadline>,
    current: RefCell<Rc<WorkerEpoch>>,
    /// Every backend this worker knows, kept across epochs so counters survive changes.
    upstreams: RefCell<HashMap<BackendId, Rc<Upstream>>>,
    /// Every pool this worker knows, by name, kept across epochs.
    pool_states: RefCell<HashMap<Arc<str>, PoolState>>,
    /// Fired when the worker starts draining.
    drain: Event,
    busy: Cell<usize>,
    /// Client connections this worker serves now (HTTP/1.1 and HTTP/2).
    open_connections: Cell<usize>,
    /// Wakes the accept loops paused at `limits.max_connections_per_worker` (or the TLS one at
    /// `tls.max_handshakes_per_worker`) when a connection or a handshake ends.
    accept_resume: Notify,
}

impl std::fmt::Debug for WorkerCtx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerCtx").field("index", &self.index).finish_non_exhaustive()
    }
}

/// Counts one client connection against `limits.max_connections_per_worker` (and in
/// `fulcrum_client_connections`) until dropped; dropping it resumes a paused accept loop.
#[derive(Debug)]
pub struct ConnectionSlot(Rc<WorkerCtx>);

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let ctx = &self.0;
        ctx.open_connections.set(ctx.open_connections.get() - 1);
        ctx.telemetry.worker().client_connections.add(-1);
        ctx.accept_resume.notify();
    }
}

/// The worker's side of the TLS listener.
#[derive(Debug)]
struct TlsListener {
    acceptor: TlsAcceptor,
    handshake_timeout: Duration,
    max_handshakes: usize,
    /// Handshakes in progress on this worker.
    handshakes: Cell<usize>,
}

/// Counts one TLS handshake in progress against `tls.max_handshakes_per_worker` until dropped;
/// dropping it resumes a TLS accept loop paused at the cap.
#[derive(Debug)]
pub struct HandshakeSlot(Rc<WorkerCtx>);

impl Drop for HandshakeSlot {
    fn drop(&mut self) {
        let ctx = &self.0;
        if let Some(tls) = &ctx.tls {
            tls.handshakes.set(tls.handshakes.get() - 1);
        }
        ctx.accept_resume.notify();
    }
}

/// Counts a request in progress for graceful drain.
#[derive(Debug)]
pub struct Busy<'a>(&'a WorkerCtx);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.busy.set(self.0.busy.get() - 1);
    }
}

impl WorkerCtx {
    /// Worker `index` of `workers`, configured by `config`, running `first`.
    pub fn new(
        index: usize,
        workers: usize,
        config: &Config,
        first: Arc<Epoch>,
        telemetry: WorkerTelemetrySpec,
        shared: &Shared,
    ) -> Self {
        let limits =
            Limits { max_headers: config.limits.max_headers.min(MAX_HEADERS), ..config.limits };
        let upstream_settings = UpstreamSettings {
            worker: index,
            pool: config.pool,
            buffer_bytes: limits.buffer_bytes,
            window: Duration::from_millis(config.balance.response_time_window_ms),
            stats_publish: Duration::from_millis(config.balance.stats_publish_ms),
        };
        let upkeep = Rc::new(Deadline::default());
        let ctx = Self {
            index,
            limits,
            http2: config.http2,
            upgrades: config
                .upgrade
                .protocols
                .iter()
                .take(MAX_UPGRADE_PROTOCOLS)
                .cloned()
                .collect(),
            retries: Retries::new(&config.retries, index, shared.metrics.retries.clone()),
            telemetry: WorkerTelemetry::new(index, telemetry, shared.metrics.clone()),
            cache: WorkerCache::new(index, workers, shared.cache_metrics.clone(), upkeep.clone()),
            upstream_settings,
            upstream_tls: shared.upstream_tls.clone(),
            tls: shared.tls_acceptor.clone().map(|acceptor| TlsListener {
                acceptor,
                handshake_timeout: Duration::from_millis(config.tls.handshake_timeout_ms),
                max_handshakes: config.tls.max_handshakes_per_worker,
                handshakes: Cell::new(0),
            }),
            upkeep,
            current: RefCell::new(Rc::new(WorkerEpoch {
                epoch: first.clone(),
                pools: Box::default(),
            })),
            upstreams: RefCell::new(HashMap::new()),
            pool_states: RefCell::new(HashMap::new()),
            drain: Event::default(),
            busy: Cell::new(0),
            open_connections: Cell::new(0),
            accept_resume: Notify::default(),
        };
        ctx.install(first);
        ctx
    }

    /// The epoch new requests start on.
    pub fn current_epoch(&self) -> Rc<WorkerEpoch> {
        self.current.borrow().clone()
    }

    /// `pool` settings.
    pub fn pool(&self) -> &PoolConfig {
        &self.upstream_settings.pool
    }

    /// Resolves when work is created that is due before the ticker's planned deadline (create
    /// it before [`tick`](Self::tick), so that nothing created meanwhile is missed).
    pub fn upkeep_sooner(&self) -> Notified<'_> {
        self.upkeep.sooner()
    }

    /// Installs a new epoch: reuses this worker's state for backends and pools it already
    /// knew, creates it for new ones, and retires removed backends (idle connections close;
    /// requests in flight keep their `Rc` and finish) and pools.
    pub fn install(&self, epoch: Arc<Epoch>) {
        let mut known = self.upstreams.borrow_mut();
        let mut states = self.pool_states.borrow_mut();
        let pools: Box<[WorkerPool]> = epoch
            .pools()
            .iter()
            .map(|pool| {
                let upstreams: Vec<Rc<Upstream>> = pool
                    .backends
                    .iter()
                    .map(|b| {
                        known
                            .entry(b.id)
                            .or_insert_with(|| {
                                let metrics = self.telemetry.metrics.backend(b);
                                let tls = self.upstream_tls.clone();
                                Rc::new(Upstream::new(
                                    b.clone(),
                                    self.upstream_settings,
                                    metrics,
                                    tls,
                                    self.upkeep.clone(),
                                ))
                            })
                            .clone()
                    })
                    .collect();
                let state = states
                    .entry(pool.name.clone())
                    .or_insert_with(|| PoolState {
                        picker: Rc::new(Picker::new(picker_seed(self.index, &pool.name))),
                        metrics: self.telemetry.metrics.pool(&pool.name),
                    })
                    .clone();
                let weighted =
                    pool.backends.windows(2).any(|pair| pair[0].weight != pair[1].weight);
                WorkerPool {
                    name: pool.name.clone(),
                    algorithm: pool.algorithm,
                    upstreams,
                    weighted,
                    picker: state.picker,
                    metrics: state.metrics,
                }
            })
            .collect();
        known.retain(|id, up| {
            let keep = epoch.backends().any(|b| b.id == *id);
            if !keep {
                up.retire();
            }
            keep
        });
        states.retain(|name, _| epoch.pool(name).is_some());
        self.cache.reconcile(epoch.shard_policy(), epoch.cache_generation);
        self.telemetry.worker().epoch.set(i64::try_from(epoch.id).unwrap_or(i64::MAX));
        *self.current.borrow_mut() = Rc::new(WorkerEpoch { epoch, pools });
    }

    /// Whether the worker is shutting down (finish the current request, then close).
    pub fn is_draining(&self) -> bool {
        self.drain.is_fired()
    }

    /// Marks a request in progress until the guard drops.
    pub fn busy(&self) -> Busy<'_> {
        self.busy.set(self.busy.get() + 1);
        Busy(self)
    }

    /// Requests in progress.
    pub fn busy_count(&self) -> usize {
        self.busy.get()
    }

    /// Starts draining: the accept loop stops, idle connections close, the others finish
    /// their request and close.
    pub fn begin_drain(&self) {
        self.drain.fire();
    }

    /// Resolves once draining starts (any number of tasks may wait).
    pub fn drained_signal(&self) -> EventWait<'_> {
        self.drain.wait()
    }

    /// Opens a tunnel on this worker (an upgraded connection or stream), counted in the
    /// tunnel metrics until dropped.
    pub(crate) fn open_tunnel(&self) -> Tunnel<'_> {
        Tunnel::open(&self.telemetry.metrics.tunnels, self.index)
    }

    /// Counts a new client connection until the slot drops.
    pub fn connection_slot(self: &Rc<Self>) -> ConnectionSlot {
        self.open_connections.set(self.open_connections.get() + 1);
        self.telemetry.worker().client_connections.add(1);
        ConnectionSlot(self.clone())
    }

    /// Whether the worker serves `limits.max_connections_per_worker` connections (0: never).
    pub fn at_connection_limit(&self) -> bool {
        let max = self.limits.max_connections_per_worker;
        max > 0 && self.open_connections.get() >= max
    }

    /// Resolves at the next end of a connection or of a TLS handshake (a paused accept loop
    /// then looks at its limit again).
    pub fn accept_resumed(&self) -> Notified<'_> {
        self.accept_resume.notified()
    }

    /// Whether this worker has a TLS listener (`[tls] listen`).
    pub fn serves_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Whether the worker runs `tls.max_handshakes_per_worker` handshakes (the TLS accept loop
    /// pauses until one ends).
    pub fn at_handshake_limit(&self) -> bool {
        self.tls.as_ref().is_some_and(|t| t.handshakes.get() >= t.max_handshakes)
    }

    /// Counts a new TLS handshake until the slot drops.
    pub fn handshake_slot(self: &Rc<Self>) -> HandshakeSlot {
        if let Some(tls) = &self.tls {
            tls.handshakes.set(tls.handshakes.get() + 1);
        }
        HandshakeSlot(self.clone())
    }

    /// The server side of the TLS handshake on an accepted `stream`, within
    /// `tls.handshake_timeout_ms`, counted in `fulcrum_tls_handshakes_total{result}`; `None`
    /// when it failed (the connection is then dropped).
    pub async fn tls_handshake(
        &self,
        stream: TcpStream,
        slot: HandshakeSlot,
    ) -> Option<TlsStream<TcpStream>> {
        let tls = self.tls.as_ref()?;
        let result = tls.acceptor.accept(stream, tls.handshake_timeout).await;
        drop(slot);
        let worker = self.telemetry.worker();
        match result {
            Ok(stream) => {
                let resumed = stream.info().resumed;
                worker.tls_handshake(if resumed { TlsOutcome::Resumed } else { TlsOutcome::Full });
                Some(stream)
            }
            Err(HandshakeError::Timeout(_)) => {
                worker.tls_handshake(TlsOutcome::Timeout);
                None
            }
            Err(_) => {
                worker.tls_handshake(TlsOutcome::Failed);
                None
            }
        }
    }

    /// The ticker's work, whatever is due now: closes the pooled connections that reached
    /// `pool.idle_timeout_ms`, publishes latency windows in which a bucket aged out, runs a step
    /// of a cache sweep. Returns (and plans) when there is more to do, on the process clock;
    /// `None` when nothing is pending, so an idle worker sleeps until new traffic creates work
    /// (counters are published by the data path as they change, not here).
    pub fn tick(&self) -> Option<u64> {
        // One reading of the clock for the upstreams and the cache.
        let instant = Instant::now();
        let now = ms_at(instant);
        let current = self.current_epoch();
        let mut next = current
            .pools
            .iter()
            .flat_map(|p| p.upstreams.iter())
            .filter_map(|up| up.upkeep(now))
            .min();
        if let Some(at) = self.cache.upkeep(instant) {
            next = Some(next.map_or(at, |n| n.min(at)));
        }
        self.upkeep.plan(next);
        next
    }

    /// Spawns `fut` (a connection or an HTTP/2 stream) on this worker, so that a panic inside
    /// it is logged and loses only that task (monoio does not catch panics in tasks: one would
    /// unwind the whole worker).
    pub fn spawn_contained<F: Future<Output = ()> + 'static>(&self, fut: Pin<Box<F>>) {
        let worker = self.index;
        spawn_contained(fut, move |panic| {
            error!("connection task panicked; connection closed", worker = worker, panic = panic);
        });
    }
}

/// A picker seed for `pool` on worker `worker`, so workers and pools do not move in lockstep
/// (`default` keeps the seed the single picker had before pools).
fn picker_seed(worker: usize, pool: &str) -> u64 {
    let base = 0x9e37_79b9_7f4a_7c15 ^ worker as u64;
    if pool == DEFAULT_POOL {
        return base;
    }
    // FNV-1a over the name.
    base ^ pool
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}
