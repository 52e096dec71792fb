//! Data-plane workers: one OS thread per core (`lb-worker-N`), each with its own pinned monoio
//! runtime, `SO_REUSEPORT` listener, upstream pools, picker and counters.
//!
//! A worker never blocks on another thread: epochs arrive in its inbox (a crossbeam channel
//! whose wake-ups come over a socket pair the runtime can await), are installed between
//! requests and acknowledged to the control thread.

mod listener;

pub use listener::{Reservation, reserve};

use std::os::unix::net::UnixStream as StdUnixStream;
use std::rc::Rc;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use fulcrum_config::Config;
use fulcrum_control::{Ack, WorkerMsg};
use fulcrum_model::Epoch;
use fulcrum_proxy::{Shared, WorkerCtx, WorkerTelemetrySpec};
use fulcrum_telemetry::{Collect, Encoder, Kind, info, warn};
pub use fulcrum_util::IoDriver;
use monoio::io::AsyncReadRent;
use monoio::net::{TcpListener, UnixStream};

/// What a worker needs to start.
#[derive(Debug)]
pub struct WorkerSpec {
    /// Worker index.
    pub index: usize,
    /// How many workers the process runs (cache shards split `cache.max_bytes` by it).
    pub workers: usize,
    /// CPU to pin to, if any.
    pub cpu: Option<usize>,
    /// This worker's cleartext listening socket (from a [`Reservation`]).
    pub listener: std::net::TcpListener,
    /// This worker's TLS listening socket, when `[tls] listen` is set.
    pub tls_listener: Option<std::net::TcpListener>,
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
    /// This worker's share of telemetry (access-log queue, tracing).
    pub telemetry: WorkerTelemetrySpec,
    /// What every worker shares (metrics).
    pub shared: Shared,
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
    let (mut runtime, driver) = match fulcrum_util::build_runtime(spec.config.io_driver) {
        Ok(built) => {
            if let Some(reason) = built.fallback {
                warn!(
                    "io_uring unavailable, falling back to epoll",
                    worker = index,
                    reason = reason
                );
            }
            (built.runtime, built.driver)
        }
        Err(e) => {
            let _ = started.send((index, Err(format!("runtime: {e}"))));
            return;
        }
    };
    let drain = spec.config.timeouts.drain();
    runtime.block_on(async move {
        let listener = match TcpListener::from_std(spec.listener) {
            Ok(l) => l,
            Err(e) => {
                let _ = started.send((index, Err(format!("listener: {e}"))));
                return;
            }
        };
        let tls_listener = match spec.tls_listener.map(TcpListener::from_std).transpose() {
            Ok(l) => l,
            Err(e) => {
                let _ = started.send((index, Err(format!("TLS listener: {e}"))));
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
        let ctx = Rc::new(WorkerCtx::new(
            index,
            spec.workers,
            &spec.config,
            spec.first,
            spec.telemetry,
            &spec.shared,
        ));
        info!(
            "worker started",
            worker = index,
            driver = driver,
            cpu = spec.cpu.map_or("-".into(), |c| c.to_string())
        );
        monoio::spawn(inbox_task(ctx.clone(), spec.inbox, wake, spec.acks));
        monoio::spawn(ticker_task(ctx.clone()));
        let _ = started.send((index, Ok(driver)));
        match tls_listener {
            Some(tls) if ctx.serves_tls() => {
                let plain = accept_loop(&ctx, &listener, Listener::Plain);
                let tls = accept_loop(&ctx, &tls, Listener::Tls);
                futures_join(plain, tls).await;
            }
            _ => accept_loop(&ctx, &listener, Listener::Plain).await,
        }
        drop(listener);
        wait_for_drain(&ctx, drain).await;
        info!("worker stopped", worker = index);
    });
}

/// The least time between two "accepting paused" warnings of one worker.
const PAUSE_WARN_EVERY: Duration = Duration::from_secs(10);

/// Which of a worker's listeners an accept loop serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Listener {
    /// The cleartext listener (HTTP/1.1, or HTTP/2 with prior knowledge).
    Plain,
    /// The TLS listener.
    Tls,
}

/// Runs two futures to their ends, concurrently on this worker.
async fn futures_join(
    a: impl std::future::Future<Output = ()>,
    b: impl std::future::Future<Output = ()>,
) {
    let (mut a, mut b) = (std::pin::pin!(a), std::pin::pin!(b));
    let (mut a_done, mut b_done) = (false, false);
    while !(a_done && b_done) {
        monoio::select! {
            _ = &mut a, if !a_done => a_done = true,
            _ = &mut b, if !b_done => b_done = true,
        }
    }
}

/// Accepts client connections on one listener until the worker drains. At
/// `limits.max_connections_per_worker` it stops accepting (new connections wait in the listen
/// backlog) until one closes; the TLS listener also pauses at `tls.max_handshakes_per_worker`
/// handshakes in progress, until one ends.
async fn accept_loop(ctx: &Rc<WorkerCtx>, listener: &TcpListener, kind: Listener) {
    let mut last_warning: Option<Instant> = None;
    let mut pauses_unreported: u64 = 0;
    loop {
        if kind == Listener::Tls && ctx.at_handshake_limit() {
            monoio::select! {
                _ = ctx.accept_resumed() => continue,
                _ = ctx.drained_signal() => return,
            }
        }
        if ctx.at_connection_limit() {
            ctx.telemetry.worker().accept_paused.inc();
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
                _ = ctx.accept_resumed() => continue,
                _ = ctx.drained_signal() => return,
            }
        }
        monoio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let slot = ctx.connection_slot();
                    if kind == Listener::Tls {
                        let handshake = ctx.handshake_slot();
                        let serve = fulcrum_proxy::serve_tls_connection(
                            ctx.clone(),
                            stream,
                            peer,
                            slot,
                            handshake,
                        );
                        ctx.spawn_contained(Box::pin(serve));
                    } else {
                        let serve = fulcrum_proxy::serve_connection(ctx.clone(), stream, peer, slot);
                        ctx.spawn_contained(Box::pin(serve));
                    }
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
    while ctx.busy_count() > 0 && std::time::Instant::now() < deadline {
        monoio::time::sleep(Duration::from_millis(5)).await;
    }
    if ctx.busy_count() > 0 {
        warn!(
            "drain timeout: closing requests still in flight",
            worker = ctx.index,
            in_flight = ctx.busy_count()
        );
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

/// Runs the worker's timed upkeep ([`WorkerCtx::tick`]) when it is due, and sleeps otherwise:
/// until the planned deadline, or until the data path creates work due sooner, or forever
/// when nothing is pending. An idle worker is never woken by it.
async fn ticker_task(ctx: Rc<WorkerCtx>) {
    loop {
        let sooner = ctx.upkeep_sooner();
        let next = ctx.tick();
        let now = fulcrum_util::now_ms();
        match next {
            // A sweep goes on in steps: let the worker's other tasks run first.
            Some(at) if at <= now => {
                fulcrum_util::yield_now().await;
                continue;
            }
            Some(at) => monoio::select! {
                _ = monoio::time::sleep(Duration::from_millis(at - now)) => {}
                _ = sooner => {}
                _ = ctx.drained_signal() => return,
            },
            None => monoio::select! {
                _ = sooner => {}
                _ = ctx.drained_signal() => return,
            },
        }
    }
}

/// The io driver each worker runs (`fulcrum_io_driver`), known once every worker started.
#[derive(Debug, Default)]
pub struct IoDrivers(OnceLock<Vec<IoDriver>>);

impl IoDrivers {
    /// Records the drivers, by worker index (once).
    pub fn set(&self, drivers: Vec<IoDriver>) {
        let _ = self.0.set(drivers);
    }
}

impl Collect for IoDrivers {
    fn collect(&self, out: &mut Encoder) {
        let name = "fulcrum_io_driver";
        out.family(name, Kind::Gauge, "The io driver each worker runs (always 1).");
        for (i, d) in self.0.get().map(Vec::as_slice).unwrap_or_default().iter().enumerate() {
            out.sample(name, &[("worker", &i.to_string()), ("driver", &d.to_string())], 1);
        }
    }
}
