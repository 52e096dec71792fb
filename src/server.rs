//! Process assembly: reserve the listen address, start the workers, then the control thread.

use std::net::SocketAddr;
use std::os::unix::net::UnixStream;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{bounded, unbounded};

use crate::config::{Config, ConfigError};
use crate::control::{self, ControlError, ControlHandle, WorkerLink};
use crate::info;
use crate::worker::{self, IoDriver, WorkerSpec, listener};

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
}

/// A running balancer.
#[derive(Debug)]
pub struct Running {
    /// The data-plane address every worker listens on (port 0 resolved).
    pub listen: SocketAddr,
    /// The io driver each worker runs, by worker index.
    pub drivers: Vec<IoDriver>,
    control: ControlHandle,
    control_thread: JoinHandle<()>,
    workers: Vec<JoinHandle<()>>,
}

impl Running {
    /// A handle for configuration changes.
    pub fn control(&self) -> &ControlHandle {
        &self.control
    }

    /// Stops accepting, lets in-flight requests finish (up to the drain timeout), and returns
    /// once every worker has exited.
    pub fn shutdown(self) {
        self.control.shutdown();
        let _ = self.control_thread.join();
        for worker in self.workers {
            let _ = worker.join();
        }
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

/// Starts workers and the control thread; returns once every worker listens.
pub fn start(config: Config) -> Result<Running, StartError> {
    config.validate()?;
    let cpus = allowed_cpus();
    let workers = match config.workers {
        0 => cpus.len().max(1),
        n => n,
    };
    let listen = listener::reserve(config.listen)
        .map_err(|source| StartError::Listen { addr: config.listen, source })?;
    let first = control::initial_epoch(&config, workers)?;

    let (ack_tx, ack_rx) = unbounded();
    let (started_tx, started_rx) = bounded(workers);
    let mut links = Vec::with_capacity(workers);
    let mut handles = Vec::with_capacity(workers);
    for index in 0..workers {
        let (inbox_tx, inbox_rx) = unbounded();
        let (control_end, worker_end) = UnixStream::pair()?;
        control_end.set_nonblocking(true)?;
        let spec = WorkerSpec {
            index,
            cpu: (!cpus.is_empty()).then(|| cpus[index % cpus.len()]),
            listen,
            config: config.clone(),
            first: first.clone(),
            inbox: inbox_rx,
            wake: worker_end,
            acks: ack_tx.clone(),
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
    let (control, control_thread) = control::spawn(config, first, links, ack_rx)?;
    let running = Running { listen, drivers, control, control_thread, workers: handles };
    if let Some(err) = failure {
        running.shutdown();
        return Err(err);
    }
    info!("listening", addr = listen, workers = workers);
    Ok(running)
}
