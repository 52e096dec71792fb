//! Process assembly: reserve the listen addresses (every worker's socket bound and listening
//! before the probe lets go of the port), restore the state (which starts `lb-store` with the
//! etcd store), start the workers, then the control thread (and `lb-health` when active health
//! checks are on).

use std::net::SocketAddr;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{bounded, unbounded};

use fulcrum_admin::{self as admin, AdminError, AdminServer};
use fulcrum_config::{AccessLogFormat, Config, ConfigError, StoreKind};
use fulcrum_control::{self as control, ControlError, ControlHandle, RestoreError, WorkerLink};
use fulcrum_health::{self as health, CheckTls, HealthMetrics};
use fulcrum_proxy::{Shared, UpstreamTls, WorkerTelemetrySpec};
use fulcrum_telemetry::{
    AccessLogSettings, AccessLogTarget, AccessSink, Registry, Telemetry, TelemetryError, info, warn,
};
use fulcrum_tls::{CertPaths, ServerOptions, TlsAcceptor};
use fulcrum_worker::{self as worker, IoDriver, IoDrivers, WorkerSpec};

/// How long workers get to bind and report ready.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the balancer could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A backend in the configuration is unusable.
    #[error("backends: {0}")]
    Backend(#[from] ControlError),
    /// The listen address is taken or cannot be bound.
    #[error("listen {addr}: {source}")]
    Listen {
        /// The configured address.
        addr: SocketAddr,
        /// Why it failed.
        source: std::io::Error,
    },
    /// A worker failed to start.
    #[error("worker {index}: {reason}")]
    Worker {
        /// Worker index.
        index: usize,
        /// What went wrong.
        reason: String,
    },
    /// A thread could not be spawned.
    #[error("spawning threads: {0}")]
    Spawn(#[from] std::io::Error),
    /// The state file is corrupt, unreadable or unwritable, or names an unusable backend; or
    /// the etcd store could not start.
    #[error(transparent)]
    State(#[from] RestoreError),
    /// The admin API could not start.
    #[error(transparent)]
    Admin(#[from] AdminError),
    /// The access log could not be opened or its writer started.
    #[error(transparent)]
    Telemetry(#[from] TelemetryError),
    /// The TLS listener's certificates or the backends' TLS settings are unusable.
    #[error("tls: {0}")]
    Tls(String),
}

/// How long shutdown waits for the access-log writer to drain its queues.
const LOG_FLUSH_DEADLINE: Duration = Duration::from_secs(5);

/// Extra start options for embedding Fulcrum in-process.
#[derive(Default)]
pub struct StartOptions {
    /// Receives every access record instead of the configured access log (`lb-log` calls it).
    pub access_sink: Option<Box<dyn AccessSink>>,
}

impl std::fmt::Debug for StartOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StartOptions").field("access_sink", &self.access_sink.is_some()).finish()
    }
}

/// A running balancer.
#[derive(Debug)]
pub struct Running {
    /// The data-plane address every worker listens on (port 0 resolved).
    pub listen: SocketAddr,
    /// The io driver each worker runs, by worker index.
    pub drivers: Vec<IoDriver>,
    /// The admin API address (port resolved), or `None` when the admin API is off.
    pub admin_listen: Option<SocketAddr>,
    /// The TLS listener's address (port resolved), when `[tls] listen` is set.
    pub tls_listen: Option<SocketAddr>,
    control: ControlHandle,
    control_thread: JoinHandle<()>,
    /// `lb-health`, when active health checks are on (ends with the control thread).
    health_thread: Option<JoinHandle<()>>,
    workers: Vec<JoinHandle<()>>,
    admin: Option<AdminServer>,
    workers_up: Arc<AtomicBool>,
    telemetry: Telemetry,
    /// The TLS listener's certificates (reloadable), when `[tls] listen` is set.
    tls: Option<TlsAcceptor>,
}

impl Running {
    /// Re-reads every configured certificate and key of the TLS listener: all of them, or none
    /// changes (the error names the file). New connections get the new certificates; open ones
    /// are undisturbed. Returns how many are in service, or `None` without a TLS listener
    /// (nothing to reload, which is not a failure).
    pub fn reload_tls(&self) -> Option<Result<usize, String>> {
        let tls = self.tls.as_ref()?;
        Some(tls.reload_files().map_err(|e| e.to_string()))
    }

    /// A handle for configuration changes.
    pub fn control(&self) -> &ControlHandle {
        &self.control
    }

    /// The metrics registry (what `GET /metrics` renders).
    pub fn metrics(&self) -> &Arc<Registry> {
        &self.telemetry.registry
    }

    /// Stops accepting, lets in-flight requests finish (up to the drain timeout), and returns
    /// once every worker has exited; then flushes the access log.
    pub fn shutdown(mut self) {
        self.workers_up.store(false, Ordering::Release);
        if let Some(admin) = self.admin {
            admin.shutdown();
        }
        self.control.shutdown();
        let _ = self.control_thread.join();
        if let Some(health) = self.health_thread {
            let _ = health.join();
        }
        for worker in self.workers {
            let _ = worker.join();
        }
        // Every worker is gone: nothing more is queued, so the flush loses nothing.
        self.telemetry.shutdown(LOG_FLUSH_DEADLINE);
        info!("stopped");
    }
}

/// CPUs this process may run on (honours `taskset`), from `/proc/self/status`.
fn allowed_cpus() -> Vec<usize> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let list = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .map(str::trim)
        .unwrap_or("");
    let mut cpus = Vec::new();
    for part in list.split(',').filter(|p| !p.is_empty()) {
        let (lo, hi) = part.split_once('-').unwrap_or((part, part));
        if let (Ok(lo), Ok(hi)) = (lo.parse::<usize>(), hi.parse::<usize>()) {
            cpus.extend(lo..=hi);
        }
    }
    cpus
}

/// The TLS listener's side: its certificates loaded and checked (all of them, or the start
/// fails naming the file), ALPN `h2` and `http/1.1`, one session ticketer for every worker.
fn tls_acceptor(config: &Config) -> Result<TlsAcceptor, StartError> {
    let certs = cert_paths(&config.tls.certificates);
    let acceptor =
        TlsAcceptor::new(&ServerOptions::new(certs)).map_err(|e| StartError::Tls(e.to_string()))?;
    for cert in acceptor.inventory() {
        info!(
            "tls certificate",
            file = cert.cert_file.display(),
            names = cert.dns_names.join(","),
            not_after = cert.not_after,
            default = cert.default
        );
    }
    Ok(acceptor)
}

/// The `[[tls.certificates]]` pairs as the TLS layer takes them.
pub fn cert_paths(files: &[fulcrum_config::CertificateFiles]) -> Vec<CertPaths> {
    files.iter().map(|f| CertPaths { cert: f.cert_file.clone(), key: f.key_file.clone() }).collect()
}

/// TLS to `https://` and `h2://` backends. When `[upstream_tls]` names files, or a configured
/// backend speaks TLS, a failure to set it up stops the start; otherwise it is logged and TLS
/// backends added later fail to connect, saying why.
fn upstream_tls(config: &Config) -> Result<Option<Arc<UpstreamTls>>, StartError> {
    let cfg = &config.upstream_tls;
    if !cfg.verify {
        warn!("upstream_tls.verify = false: backend certificates are not checked (tests only)");
    }
    let needed = cfg.ca_file.is_some()
        || cfg.client_cert_file.is_some()
        || config
            .backends
            .iter()
            .any(|b| b.url.starts_with("https://") || b.url.starts_with("h2://"));
    match UpstreamTls::new(cfg) {
        Ok(tls) => Ok(Some(Arc::new(tls))),
        Err(e) if needed => Err(StartError::Tls(format!("upstream_tls: {e}"))),
        Err(e) => {
            warn!("TLS to backends unavailable", error = e);
            Ok(None)
        }
    }
}

/// Starts workers and the control thread; returns once every worker listens.
pub fn start(config: Config) -> Result<Running, StartError> {
    start_with(config, StartOptions::default())
}

/// [`start`] with extra options (an in-process access sink).
pub fn start_with(config: Config, options: StartOptions) -> Result<Running, StartError> {
    config.validate()?;
    let cpus = allowed_cpus();
    let workers = match config.workers {
        0 => cpus.len().max(1),
        n => n,
    };
    // Every worker's socket listens from here on (held until the workers take them over).
    let reservation = worker::reserve(config.listen, workers)
        .map_err(|source| StartError::Listen { addr: config.listen, source })?;
    let tls_reservation = match config.tls.listen {
        Some(addr) => Some(
            worker::reserve(addr, workers).map_err(|source| StartError::Listen { addr, source })?,
        ),
        None => None,
    };
    let listen = reservation.addr();
    let tls_listen = tls_reservation.as_ref().map(worker::Reservation::addr);
    let tls_acceptor = tls_listen.map(|_| tls_acceptor(&config)).transpose()?;
    let upstream_tls = upstream_tls(&config)?;
    let restored = control::restore(&config, workers)?;
    let first = restored.first.clone();
    let t = &config.telemetry;
    let access_log = t.destination().map(|path| AccessLogSettings {
        target: path.map_or(AccessLogTarget::Stdout, AccessLogTarget::File),
        format: match t.access_log_format {
            AccessLogFormat::JsonLines => fulcrum_telemetry::AccessLogFormat::JsonLines,
            AccessLogFormat::Tracing => fulcrum_telemetry::AccessLogFormat::Tracing,
        },
    });
    let (telemetry, producers) = Telemetry::start(
        access_log.as_ref(),
        t.log_queue_capacity,
        t.trace_sample_rate,
        workers,
        options.access_sink,
    )?;
    // Every feature's metrics, in the order `GET /metrics` shows them.
    let shared = Shared::new(workers, upstream_tls.clone(), tls_acceptor.clone());
    let health_metrics = Arc::new(HealthMetrics::default());
    let io_drivers = Arc::new(IoDrivers::default());
    let registry = &telemetry.registry;
    registry.register(shared.metrics.clone());
    registry.register(health_metrics.clone());
    registry.register(shared.cache_metrics.clone());
    registry.register(io_drivers.clone());
    if config.store.kind == StoreKind::Etcd {
        registry.register(Arc::new(restored.store_status().clone()));
    }

    let (ack_tx, ack_rx) = unbounded();
    let (started_tx, started_rx) = bounded(workers);
    let mut links = Vec::with_capacity(workers);
    let mut handles = Vec::with_capacity(workers);
    let listeners = reservation.into_listeners().into_iter();
    let mut tls_listeners = tls_reservation.map(|r| r.into_listeners().into_iter());
    for ((index, producer), listener) in producers.into_iter().enumerate().zip(listeners) {
        let (inbox_tx, inbox_rx) = unbounded();
        let (control_end, worker_end) = UnixStream::pair()?;
        control_end.set_nonblocking(true)?;
        let spec = WorkerSpec {
            index,
            workers,
            cpu: (!cpus.is_empty()).then(|| cpus[index % cpus.len()]),
            listener,
            tls_listener: tls_listeners.as_mut().and_then(Iterator::next),
            config: config.clone(),
            first: first.clone(),
            inbox: inbox_rx,
            wake: worker_end,
            acks: ack_tx.clone(),
            telemetry: WorkerTelemetrySpec {
                producer,
                body_max: t.log_body_max_bytes,
                trace_rate: t.trace_sample_rate,
            },
            shared: shared.clone(),
        };
        handles.push(worker::spawn(spec, started_tx.clone())?);
        links.push(WorkerLink { inbox: inbox_tx, wake: control_end });
    }

    let mut drivers = vec![IoDriver::Epoll; workers];
    let mut failure = None;
    for _ in 0..workers {
        match started_rx.recv_timeout(START_TIMEOUT) {
            Ok((index, Ok(driver))) => drivers[index] = driver,
            Ok((index, Err(reason))) => {
                failure.get_or_insert(StartError::Worker { index, reason });
            }
            Err(_) => {
                failure.get_or_insert(StartError::Worker {
                    index: usize::MAX,
                    reason: "start timed out".into(),
                });
                break;
            }
        }
    }
    let admin_config = config.clone();
    let health_check = config.health_check.clone();
    let (control, control_thread) = control::spawn_restored(config, restored, links, ack_rx)?;
    let workers_up = Arc::new(AtomicBool::new(failure.is_none()));
    let mut running = Running {
        listen,
        drivers,
        admin_listen: None,
        tls_listen,
        control,
        control_thread,
        health_thread: None,
        workers: handles,
        admin: None,
        workers_up,
        telemetry,
        tls: tls_acceptor.clone(),
    };
    io_drivers.set(running.drivers.clone());
    if let Some(err) = failure {
        running.shutdown();
        return Err(err);
    }
    if health_check.enabled {
        let check_tls = upstream_tls.as_ref().map(|tls| {
            let (config, name) = tls.client_config();
            CheckTls::new(config, name.map(str::to_owned))
        });
        match health::spawn(health_check, running.control.backends(), health_metrics, check_tls) {
            Ok(thread) => running.health_thread = Some(thread),
            Err(e) => {
                running.shutdown();
                return Err(e.into());
            }
        }
    }
    let runtime = admin::RuntimeInfo {
        listen,
        drivers: running.drivers.clone(),
        workers_up: running.workers_up.clone(),
        registry: running.telemetry.registry.clone(),
        cache_metrics: shared.cache_metrics.clone(),
        tls: tls_listen.zip(tls_acceptor),
    };
    match admin::spawn(&admin_config, running.control.clone(), runtime) {
        Ok(admin) => {
            running.admin_listen = admin.as_ref().map(|a| a.addr);
            running.admin = admin;
        }
        Err(e) => {
            running.shutdown();
            return Err(e.into());
        }
    }
    if let Some(tls) = tls_listen {
        info!("tls listening", addr = tls, workers = workers);
    }
    info!("listening", addr = listen, workers = workers);
    Ok(running)
}
