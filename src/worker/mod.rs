//! Data-plane workers: one OS thread per core (`lb-worker-N`), each with its own pinned monoio
//! runtime, `SO_REUSEPORT` listener, upstream pools, picker and counters.
//!
//! A worker never blocks on another thread: epochs arrive in its inbox (a crossbeam channel
//! whose wake-ups come over a socket pair the runtime can await), are installed between
//! requests and acknowledged to the control thread.

pub mod listener;
pub mod runtime;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::os::unix::net::UnixStream as StdUnixStream;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use monoio::io::AsyncReadRent;
use monoio::net::{TcpListener, UnixStream};

pub use self::runtime::IoDriver;
use crate::balance::Picker;
use crate::balance::stats::now_ms;
use crate::config::{BalanceConfig, Config, Limits, PoolConfig};
use crate::control::{Ack, BackendId, Epoch, WorkerMsg};
use crate::proxy::pool::Upstream;
use crate::{error, info, warn};

/// An epoch as installed on one worker: the shared epoch plus this worker's view of each
/// backend, in the epoch's order.
#[derive(Debug)]
pub struct WorkerEpoch {
    /// The shared, immutable epoch.
    pub epoch: Arc<Epoch>,
    /// This worker's per-backend state, index-aligned with `epoch.backends`.
    pub upstreams: Vec<Rc<Upstream>>,
    /// Whether the backends' weights differ, so the pickers weigh them (computed once here,
    /// not per request).
    pub weighted: bool,
}

impl WorkerEpoch {
    /// The metrics and URL of the backend at `index` (as noted by an exchange), for the access
    /// log and the per-backend metrics.
    pub fn metrics_of(
        &self,
        index: Option<usize>,
    ) -> Option<(&crate::telemetry::metrics::BackendMetrics, &str)> {
        let up = self.upstreams.get(index?)?;
        Some((&up.metrics, up.backend.url.url.as_str()))
    }
}

/// Everything one worker owns. Lives in an `Rc` on the worker thread; never shared.
pub struct WorkerCtx {
    /// Worker index (0-based).
    pub index: usize,
    /// Buffer sizes and protocol limits.
    pub limits: Limits,
    /// Upstream pool settings.
    pub pool: PoolConfig,
    /// Balancer tuning.
    pub balance: BalanceConfig,
    /// HTTP/2 limits and windows (`[http2]`).
    pub http2: crate::config::Http2Config,
    /// Per-worker selection state.
    pub picker: Picker,
    /// When failed upstream attempts are tried again, and this worker's retry budget.
    pub retries: crate::proxy::retry::Retries,
    /// Access log producer, metrics and tracing for this worker (telemetry hook).
    pub telemetry: crate::telemetry::exchange::WorkerTelemetry,
    /// This worker's response cache shard (reconciled with each installed epoch).
    pub cache: crate::proxy::caching::WorkerCache,
    current: RefCell<Rc<WorkerEpoch>>,
    /// Every backend this worker knows, kept across epochs so counters survive changes.
    upstreams: RefCell<HashMap<BackendId, Rc<Upstream>>>,
    draining: Cell<bool>,
    busy: Cell<usize>,
    shutdown_waker: Cell<Option<Waker>>,
    /// Client connections this worker serves now (HTTP/1.1 and HTTP/2).
    open_connections: Cell<usize>,
    /// The accept loop, while paused at `limits.max_connections_per_worker`.
    accept_waker: Cell<Option<Waker>>,
}

/// Counts one client connection against `limits.max_connections_per_worker` until dropped;
/// dropping it resumes a paused accept loop.
#[derive(Debug)]
pub struct ConnectionSlot(Rc<WorkerCtx>);

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let open = &self.0.open_connections;
        open.set(open.get() - 1);
        if let Some(waker) = self.0.accept_waker.take() {
            waker.wake();
        }
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

impl std::fmt::Debug for WorkerCtx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerCtx").field("index", &self.index).finish_non_exhaustive()
    }
}

impl WorkerCtx {
    fn new(
        index: usize,
        workers: usize,
        config: &Config,
        first: Arc<Epoch>,
        telemetry: crate::telemetry::exchange::WorkerTelemetrySpec,
    ) -> Self {
        let limits = Limits {
            max_headers: config.limits.max_headers.min(crate::proxy::h1::MAX_HEADERS),
            ..config.limits
        };
        let ctx = Self {
            index,
            limits,
            pool: config.pool,
            balance: config.balance,
            http2: config.http2,
            picker: Picker::new(0x9e37_79b9_7f4a_7c15 ^ index as u64),
            retries: crate::proxy::retry::Retries::new(&config.retries),
            current: RefCell::new(Rc::new(WorkerEpoch {
                epoch: first.clone(),
                upstreams: Vec::new(),
                weighted: false,
            })),
            upstreams: RefCell::new(HashMap::new()),
            draining: Cell::new(false),
            busy: Cell::new(0),
            shutdown_waker: Cell::new(None),
            open_connections: Cell::new(0),
            accept_waker: Cell::new(None),
            telemetry: crate::telemetry::exchange::WorkerTelemetry::new(index, telemetry),
            cache: crate::proxy::caching::WorkerCache::new(workers),
        };
        ctx.install(first);
        ctx
    }

    /// The epoch new requests start on.
    pub fn current_epoch(&self) -> Rc<WorkerEpoch> {
        self.current.borrow().clone()
    }

    /// Installs a new epoch: reuses this worker's state for backends it already knew, creates
    /// it for new ones, and retires removed ones (idle connections close; requests in flight
    /// keep their `Rc` and finish).
    pub fn install(&self, epoch: Arc<Epoch>) {
        let window = Duration::from_millis(self.balance.response_time_window_ms);
        let mut known = self.upstreams.borrow_mut();
        let upstreams: Vec<Rc<Upstream>> = epoch
            .backends
            .iter()
            .map(|b| {
                known
                    .entry(b.id)
                    .or_insert_with(|| Rc::new(Upstream::new(b.clone(), window, &self.pool)))
                    .clone()
            })
            .collect();
        known.retain(|id, up| {
            let keep = epoch.backends.iter().any(|b| b.id == *id);
            if !keep {
                up.retire();
            }
            keep
        });
        self.cache.reconcile(&epoch.cache, epoch.cache_generation, &self.telemetry);
        let weighted = epoch.backends.windows(2).any(|pair| pair[0].weight != pair[1].weight);
        *self.current.borrow_mut() = Rc::new(WorkerEpoch { epoch, upstreams, weighted });
    }

    /// Whether the worker is shutting down (finish the current request, then close).
    pub fn is_draining(&self) -> bool {
        self.draining.get()
    }

    /// Marks a request in progress until the guard drops.
    pub fn busy(&self) -> Busy<'_> {
        self.busy.set(self.busy.get() + 1);
        Busy(self)
    }

    fn begin_drain(&self) {
        self.draining.set(true);
        if let Some(waker) = self.shutdown_waker.take() {
            waker.wake();
        }
    }

    /// Resolves once draining starts.
    fn drained_signal(&self) -> DrainSignal<'_> {
        DrainSignal(self)
    }

    /// Counts a new client connection until the slot drops.
    fn connection_slot(self: &Rc<Self>) -> ConnectionSlot {
        self.open_connections.set(self.open_connections.get() + 1);
        ConnectionSlot(self.clone())
    }

    /// Whether the worker serves `limits.max_connections_per_worker` connections (0: never).
    fn at_connection_limit(&self) -> bool {
        let max = self.limits.max_connections_per_worker;
        max > 0 && self.open_connections.get() >= max
    }

    /// Publishes counters for the other workers and closes stale idle connections.
    fn tick(&self, evict: bool) {
        let now = now_ms();
        let current = self.current_epoch();
        let max_age = Duration::from_millis(self.pool.idle_timeout_ms);
        for up in &current.upstreams {
            up.stats.publish(&up.backend.stats, self.index, now);
            if evict {
                up.evict_idle(max_age);
            }
        }
        self.cache.tick(&self.telemetry);
        // Telemetry hook: publish this worker's metrics to its own slot.
        self.telemetry.publish(
            current.epoch.id,
            current.upstreams.iter().map(|up| crate::telemetry::metrics::BackendSample {
                id: up.backend.id,
                url: &up.backend.url.url,
                metrics: &up.metrics,
                in_flight: up.stats.local_in_flight(),
                ejected: up.stats.is_ejected(now),
                open_connections: up.open_count(),
                queued: up.queued_count(),
            }),
        );
    }
}

/// A future that completes when the worker starts draining.
struct DrainSignal<'a>(&'a WorkerCtx);

impl Future for DrainSignal<'_> {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0.draining.get() {
            Poll::Ready(())
        } else {
            self.0.shutdown_waker.set(Some(cx.waker().clone()));
            Poll::Pending
        }
    }
}

/// A future that completes when the worker may accept again (a connection slot is free).
struct SlotFreed<'a>(&'a WorkerCtx);

impl Future for SlotFreed<'_> {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0.at_connection_limit() {
            self.0.accept_waker.set(Some(cx.waker().clone()));
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    }
}

/// What a worker needs to start.
#[derive(Debug)]
pub struct WorkerSpec {
    /// Worker index.
    pub index: usize,
    /// How many workers the process runs (cache shards split `cache.max_bytes` by it).
    pub workers: usize,
    /// CPU to pin to, if any.
    pub cpu: Option<usize>,
    /// The resolved listen address (same port for every worker).
    pub listen: SocketAddr,
    /// The configuration at start.
    pub config: Config,
    /// The first epoch.
    pub first: Arc<Epoch>,
    /// Messages from the control thread.
    pub inbox: Receiver<WorkerMsg>,
    /// Wake-ups for the inbox.
    pub wake: StdUnixStream,
    /// Acknowledgements to the control thread.
    pub acks: Sender<Ack>,
    /// This worker's share of telemetry (access-log queue, metrics registry, tracing).
    pub telemetry: crate::telemetry::exchange::WorkerTelemetrySpec,
}

/// Reported by a worker once it listens (or failed to start).
pub type Started = Result<IoDriver, String>;

/// Spawns worker thread `spec.index`; it reports on `started` once it is serving.
pub fn spawn(
    spec: WorkerSpec,
    started: Sender<(usize, Started)>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name(format!("lb-worker-{}", spec.index))
        .spawn(move || run_thread(spec, started))
}

fn run_thread(spec: WorkerSpec, started: Sender<(usize, Started)>) {
    let index = spec.index;
    if let Some(cpu) = spec.cpu
        && let Err(e) = monoio::utils::bind_to_cpu_set([cpu])
    {
        warn!("cannot pin worker", worker = index, cpu = cpu, error = format!("{e:?}"));
    }
    let (mut runtime, driver) = match runtime::build(spec.config.io_driver) {
        Ok(built) => built,
        Err(e) => {
            let _ = started.send((index, Err(format!("runtime: {e}"))));
            return;
        }
    };
    let drain = spec.config.timeouts.drain();
    runtime.block_on(async move {
        let listener = match listener::bind_worker(spec.listen).and_then(TcpListener::from_std) {
            Ok(l) => l,
            Err(e) => {
                let _ = started.send((index, Err(format!("bind {}: {e}", spec.listen))));
                return;
            }
        };
        let wake =
            match spec.wake.set_nonblocking(true).and_then(|()| UnixStream::from_std(spec.wake)) {
                Ok(w) => w,
                Err(e) => {
                    let _ = started.send((index, Err(format!("inbox: {e}"))));
                    return;
                }
            };
        let ctx =
            Rc::new(WorkerCtx::new(index, spec.workers, &spec.config, spec.first, spec.telemetry));
        info!(
            "worker started",
            worker = index,
            driver = driver,
            cpu = spec.cpu.map_or("-".into(), |c| c.to_string())
        );
        monoio::spawn(inbox_task(ctx.clone(), spec.inbox, wake, spec.acks));
        monoio::spawn(ticker_task(ctx.clone()));
        let _ = started.send((index, Ok(driver)));
        accept_loop(&ctx, &listener).await;
        drop(listener);
        wait_for_drain(&ctx, drain).await;
        info!("worker stopped", worker = index);
    });
}

/// The least time between two "accepting paused" warnings of one worker.
const PAUSE_WARN_EVERY: Duration = Duration::from_secs(10);

/// Accepts client connections until the worker drains. At `limits.max_connections_per_worker`
/// it stops accepting (new connections wait in the listen backlog) until one closes.
async fn accept_loop(ctx: &Rc<WorkerCtx>, listener: &TcpListener) {
    let mut last_warning: Option<Instant> = None;
    let mut pauses_unreported: u64 = 0;
    loop {
        if ctx.at_connection_limit() {
            ctx.telemetry.metrics.accept_paused();
            pauses_unreported += 1;
            if last_warning.is_none_or(|at| at.elapsed() >= PAUSE_WARN_EVERY) {
                warn!(
                    "connection limit reached: accepting paused until a connection closes",
                    worker = ctx.index,
                    max_connections_per_worker = ctx.limits.max_connections_per_worker,
                    pauses = pauses_unreported
                );
                last_warning = Some(Instant::now());
                pauses_unreported = 0;
            }
            monoio::select! {
                _ = SlotFreed(ctx) => continue,
                _ = ctx.drained_signal() => return,
            }
        }
        monoio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let slot = ctx.connection_slot();
                    let serve = crate::proxy::serve_connection(ctx.clone(), stream, peer, slot);
                    monoio::spawn(contain_panics(ctx.index, Box::pin(serve)));
                }
                Err(e) => {
                    // EMFILE and friends: back off briefly instead of spinning.
                    warn!("accept failed", worker = ctx.index, error = e);
                    monoio::time::sleep(Duration::from_millis(10)).await;
                }
            },
            _ = ctx.drained_signal() => return,
        }
    }
}

/// Waits until no request is in progress, or the drain timeout passes.
async fn wait_for_drain(ctx: &WorkerCtx, drain: Duration) {
    let deadline = std::time::Instant::now() + drain;
    while ctx.busy.get() > 0 && std::time::Instant::now() < deadline {
        monoio::time::sleep(Duration::from_millis(5)).await;
    }
    if ctx.busy.get() > 0 {
        warn!(
            "drain timeout: closing requests still in flight",
            worker = ctx.index,
            in_flight = ctx.busy.get()
        );
    }
}

/// Runs one connection (or HTTP/2 stream); a panic inside it is logged and only that connection
/// is lost (monoio does not catch panics in tasks: one would unwind the whole worker).
///
/// The future comes boxed: the task that runs this then stays small, and spawning it copies a
/// pointer rather than the (several KiB) state of the connection or stream.
pub(crate) async fn contain_panics<F: Future<Output = ()>>(worker: usize, fut: Pin<Box<F>>) {
    if let Err(panic) = CatchUnwind(fut).await {
        let message = panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        error!("connection task panicked; connection closed", worker = worker, panic = message);
    }
}

/// Polls the inner future inside `catch_unwind`.
struct CatchUnwind<F>(Pin<Box<F>>);

impl<F: Future> Future for CatchUnwind<F> {
    type Output = std::thread::Result<F::Output>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let fut = self.0.as_mut();
        match std::panic::catch_unwind(AssertUnwindSafe(move || fut.poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(v)) => Poll::Ready(Ok(v)),
            Err(panic) => Poll::Ready(Err(panic)),
        }
    }
}

/// Installs epochs sent by the control thread and acknowledges them.
async fn inbox_task(
    ctx: Rc<WorkerCtx>,
    inbox: Receiver<WorkerMsg>,
    mut wake: UnixStream,
    acks: Sender<Ack>,
) {
    let mut buf = Vec::with_capacity(64);
    loop {
        while let Ok(msg) = inbox.try_recv() {
            match msg {
                WorkerMsg::Install(epoch) => {
                    let id = epoch.id;
                    ctx.install(epoch);
                    let _ = acks.send(Ack { worker: ctx.index, epoch: id });
                }
                WorkerMsg::Shutdown => {
                    ctx.begin_drain();
                    return;
                }
            }
        }
        buf.clear();
        let (res, b) = wake.read(buf).await;
        buf = b;
        if matches!(res, Ok(0) | Err(_)) {
            // The control thread is gone: nothing will ever reconfigure us; drain.
            ctx.begin_drain();
            return;
        }
    }
}

/// Publishes counters every `stats_publish_ms`; evicts idle upstream connections once a second.
async fn ticker_task(ctx: Rc<WorkerCtx>) {
    let period = Duration::from_millis(ctx.balance.stats_publish_ms);
    let evict_every = (1000 / ctx.balance.stats_publish_ms).max(1);
    let mut ticks: u64 = 0;
    while !ctx.is_draining() {
        monoio::time::sleep(period).await;
        ticks += 1;
        ctx.tick(ticks.is_multiple_of(evict_every));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panicking_connection_task_does_not_take_the_worker_down() {
        let (mut rt, _) = runtime::build(crate::config::IoDriverChoice::Auto).unwrap();
        let survived = rt.block_on(async {
            let panicked = monoio::spawn(contain_panics(0, Box::pin(async { panic!("boom") })));
            panicked.await;
            // The runtime (and its other tasks) keep running after the contained panic.
            monoio::spawn(async { 42 }).await
        });
        assert_eq!(survived, 42);
    }
}
