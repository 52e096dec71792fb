//! The admin REST API on its own thread, `lb-admin`: hyper 1 (HTTP/1.1) on a small
//! current-thread tokio runtime, never on a data-plane worker. It talks to `lb-control` through
//! the [`ControlHandle`] (blocking calls run on tokio's blocking pool, so a slow epoch ack never
//! stalls `/healthz`).
//!
//! JWT bearer auth ([`auth`]), one error type mapped once to status + JSON ([`error`]), the
//! OpenAPI 3.1 document ([`openapi`]) and the embedded Swagger UI ([`docs`]).

pub mod api;
pub mod auth;
pub mod docs;
pub mod error;
pub mod openapi;
pub mod settings;

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};

use fulcrum_cache::CacheMetrics;
use fulcrum_config::Config;
use fulcrum_control::ControlHandle;
use fulcrum_telemetry::{Registry, info, warn};
use fulcrum_tls::{AppProtocol, CertPaths, ServerOptions, TlsAcceptor};
use fulcrum_util::IoDriver;

use self::auth::{KeyError, Verifier};

/// How long a client may take to send a request head.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the admin API could not start.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The configured JWT key is unusable.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The admin address is taken or cannot be bound.
    #[error("admin listen {addr}: {source}")]
    Listen {
        /// The configured address.
        addr: SocketAddr,
        /// Why it failed.
        source: std::io::Error,
    },
    /// The thread or its runtime could not be started.
    #[error("starting lb-admin: {0}")]
    Spawn(#[from] std::io::Error),
    /// The admin listener's certificate or key is unusable.
    #[error("admin TLS: {0}")]
    Tls(String),
}

/// What the admin thread reports about the running process.
#[derive(Debug, Clone)]
pub struct RuntimeInfo {
    /// The data-plane address (port resolved).
    pub listen: SocketAddr,
    /// The io driver each worker runs.
    pub drivers: Vec<IoDriver>,
    /// Cleared when the workers stop; `/readyz` fails from then on.
    pub workers_up: Arc<AtomicBool>,
    /// The metrics registry `GET /metrics` renders.
    pub registry: Arc<Registry>,
    /// The response cache's counters (`GET /api/v1/cache`).
    pub cache_metrics: Arc<CacheMetrics>,
    /// The TLS listener's address and certificates (`/api/v1/tls`), when one is configured.
    pub tls: Option<(SocketAddr, TlsAcceptor)>,
}

/// Shared by every admin request.
pub(crate) struct App {
    control: ControlHandle,
    verifier: Verifier,
    listen: SocketAddr,
    admin_listen: SocketAddr,
    drivers: Vec<IoDriver>,
    workers_up: Arc<AtomicBool>,
    registry: Arc<Registry>,
    cache_metrics: Arc<CacheMetrics>,
    tls: Option<(SocketAddr, TlsAcceptor)>,
    metrics_auth: bool,
    max_body_bytes: usize,
    openapi_json: Bytes,
    swagger: Arc<utoipa_swagger_ui::Config<'static>>,
}

/// The running admin thread.
#[derive(Debug)]
pub struct AdminServer {
    /// The address it listens on (port resolved).
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl AdminServer {
    /// Stops accepting and returns once the thread exited (open connections are dropped).
    pub fn shutdown(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for AdminServer {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

/// Starts `lb-admin` on `config.admin_listen`. Returns `Ok(None)`, and logs why, when no JWT
/// key is configured: the admin API then stays off.
pub fn spawn(
    config: &Config,
    control: ControlHandle,
    runtime: RuntimeInfo,
) -> Result<Option<AdminServer>, AdminError> {
    let Some(verifier) = Verifier::from_config(&config.admin)? else {
        warn!(
            "admin API disabled: no JWT key configured",
            hint = "set FULCRUM_JWT_SECRET, admin.jwt_secret or admin.jwt_public_key_file"
        );
        return Ok(None);
    };
    if config.admin.jwt_secret.as_ref().is_some_and(|s| s.len() < 32) {
        warn!("admin.jwt_secret is shorter than 32 bytes; use a longer random secret");
    }
    let addr = config.admin_listen;
    let https = admin_tls(config)?;
    if https.is_none() && !addr.ip().is_loopback() {
        warn!(
            "admin API on a non-loopback address without TLS: bearer tokens travel in the clear",
            addr = addr,
            hint = "set admin.tls_cert_file and admin.tls_key_file"
        );
    }
    let listener = TcpListener::bind(addr).map_err(|source| AdminError::Listen { addr, source })?;
    listener.set_nonblocking(true).map_err(|source| AdminError::Listen { addr, source })?;
    let local = listener.local_addr().map_err(|source| AdminError::Listen { addr, source })?;
    let algorithms: Vec<String> = verifier.algorithms().iter().map(|a| format!("{a:?}")).collect();
    let app = Arc::new(App {
        control,
        verifier,
        listen: runtime.listen,
        admin_listen: local,
        drivers: runtime.drivers,
        workers_up: runtime.workers_up,
        registry: runtime.registry,
        cache_metrics: runtime.cache_metrics,
        tls: runtime.tls,
        metrics_auth: config.telemetry.metrics_auth,
        max_body_bytes: config.admin.max_body_bytes,
        openapi_json: Bytes::from(openapi::json()),
        swagger: docs::config(),
    });
    let tls_on = https.is_some();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(4)
        .build()?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
    let thread = std::thread::Builder::new()
        .name("lb-admin".into())
        .spawn(move || rt.block_on(accept_loop(listener, app, https, stop_rx)))?;
    info!(
        "admin listening",
        addr = local,
        scheme = if tls_on { "https" } else { "http" },
        jwt_algorithms = algorithms.join(",")
    );
    Ok(Some(AdminServer { addr: local, stop: Some(stop_tx), thread: Some(thread) }))
}

/// The admin listener's TLS (`admin.tls_cert_file`, `admin.tls_key_file`): HTTP/1.1 only.
fn admin_tls(config: &Config) -> Result<Option<tokio_rustls::TlsAcceptor>, AdminError> {
    let (Some(cert), Some(key)) = (&config.admin.tls_cert_file, &config.admin.tls_key_file) else {
        return Ok(None);
    };
    let mut options = ServerOptions::new(vec![CertPaths { cert: cert.clone(), key: key.clone() }]);
    options.alpn = vec![AppProtocol::Http11];
    let acceptor = TlsAcceptor::new(&options).map_err(|e| AdminError::Tls(e.to_string()))?;
    Ok(Some(tokio_rustls::TlsAcceptor::from(acceptor.config().clone())))
}

/// Longest an admin client may take over its TLS handshake.
const ADMIN_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves one admin connection (HTTP/1.1) over `io`.
async fn serve_admin<T>(io: T, app: Arc<App>)
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |req| {
        let app = app.clone();
        async move { Ok::<_, std::convert::Infallible>(api::serve(app, req).await) }
    });
    let _ = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .serve_connection(TokioIo::new(io), service)
        .await;
}

async fn accept_loop(
    listener: TcpListener,
    app: Arc<App>,
    https: Option<tokio_rustls::TlsAcceptor>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            warn!("admin listener unusable", error = e);
            return;
        }
    };
    loop {
        tokio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    let _ = stream.set_nodelay(true);
                    let app = app.clone();
                    let https = https.clone();
                    tokio::spawn(async move {
                        match https {
                            Some(tls) => {
                                let handshake = tls.accept(stream);
                                if let Ok(Ok(stream)) =
                                    tokio::time::timeout(ADMIN_HANDSHAKE_TIMEOUT, handshake).await
                                {
                                    serve_admin(stream, app).await;
                                }
                            }
                            None => serve_admin(stream, app).await,
                        }
                    });
                }
                Err(e) => {
                    // EMFILE and friends: back off briefly instead of spinning.
                    warn!("admin accept failed", error = e);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
    info!("admin stopped", workers_up = app.workers_up.load(Ordering::Acquire));
}
