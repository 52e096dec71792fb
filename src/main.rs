//! The `fulcrum` command: parse the CLI, load the configuration, run until SIGTERM/SIGINT.
//! The only place that picks concrete backends for the telemetry interfaces.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use fulcrum::config::Algorithm;
use fulcrum::config::{BackendConfig, CertificateFiles, Config, Http2Engine, IoDriverChoice};
use fulcrum::telemetry::{self, Level, StderrSink};
use fulcrum::telemetry::{error, info};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};

/// jemalloc instead of glibc malloc. Per-thread caches suit thread-per-core workers, and the
/// HTTP/2 path (hyperium h2's frames, header maps, stream slabs) allocates a few dozen small
/// blocks per call: glibc spent ~6k instructions per gRPC call in malloc/free (8.5% of
/// Fulcrum's). Its background thread returns freed pages to the system within about a second
/// (`.cargo/config.toml`), so RSS goes back to the baseline after a connection flood, where
/// glibc kept the flood's peak (docs/performance.md, Soak).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Fulcrum: a thread-per-core HTTP/1.1 load balancer on io_uring.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Validate a configuration file and print the effective configuration.
    CheckConfig {
        /// The TOML file to check.
        file: PathBuf,
    },
    /// Mint an admin API token (HS256) from the configured secret (FULCRUM_JWT_SECRET or
    /// `admin.jwt_secret`) and print it.
    Token {
        /// Space-separated scopes: fulcrum:read, fulcrum:write (write implies read).
        #[arg(long, default_value = "fulcrum:read")]
        scope: String,
        /// Lifetime, e.g. 90s, 30m, 1h, 7d.
        #[arg(long, default_value = "1h", value_parser = fulcrum::admin::auth::parse_ttl)]
        ttl: std::time::Duration,
        /// TOML configuration file holding `admin.jwt_secret`, `jwt_issuer`, `jwt_audience`.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Probe a URL once and exit 0 when it is healthy: `http://` wants a 2xx answer to GET,
    /// `tcp://` only a connect. The container image's HEALTHCHECK (it ships no curl).
    Healthcheck {
        /// `http://host:port/path` or `tcp://host:port`.
        #[arg(long, default_value = "http://127.0.0.1:9090/healthz")]
        url: String,
        /// Deadline for the whole probe, e.g. 2s.
        #[arg(long, default_value = "2s", value_parser = fulcrum::admin::auth::parse_ttl)]
        timeout: std::time::Duration,
    },
    /// Serve one HTTP/1.1 demo backend that answers `hello from NAME` (the compose stack's
    /// demo services; `--demo` starts three of these in-process instead).
    DemoBackend {
        /// Address to listen on.
        #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:8080")]
        listen: SocketAddr,
        /// Name in every answer's body and `x-demo-backend` header.
        #[arg(long, default_value = "demo")]
        name: String,
    },
}

/// The environment variable holding the admin API's HMAC secret; overrides the file.
const JWT_SECRET_ENV: &str = "FULCRUM_JWT_SECRET";

/// The environment variable holding the etcd store's password; overrides the file.
const STORE_PASSWORD_ENV: &str = "FULCRUM_STORE_PASSWORD";

fn apply_env_secret(config: &mut Config) {
    if let Some(secret) = std::env::var(JWT_SECRET_ENV).ok().filter(|s| !s.is_empty()) {
        config.admin.jwt_secret = Some(secret);
    }
    let etcd = config.store.kind == fulcrum::config::StoreKind::Etcd;
    if let Some(password) = std::env::var(STORE_PASSWORD_ENV).ok().filter(|s| etcd && !s.is_empty())
    {
        config.store.password = Some(password);
    }
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// TOML configuration file; the flags below override it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Data-plane listen address.
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Admin API listen address.
    #[arg(long, value_name = "ADDR")]
    admin_listen: Option<SocketAddr>,
    /// Backend URL (http://, https://, h2c:// or h2:// host:port); repeatable; replaces the
    /// file's backends.
    #[arg(long = "backend", value_name = "URL")]
    backends: Vec<String>,
    /// Balancing algorithm: round_robin, random, least_connections, response_time.
    #[arg(long, value_name = "NAME")]
    algorithm: Option<Algorithm>,
    /// Worker threads (default: one per CPU).
    #[arg(long, value_name = "N")]
    workers: Option<usize>,
    /// io driver: auto, io_uring or epoll.
    #[arg(long, value_name = "DRIVER")]
    io_driver: Option<IoDriverChoice>,
    /// HTTP/2 engine: native (Fulcrum's own, the default) or h2 (hyperium, the reference)
    /// (overrides `http2.engine`).
    #[arg(long, value_name = "ENGINE")]
    http2_engine: Option<Http2Engine>,
    /// Also start three demo backends on loopback and balance over them.
    #[arg(long)]
    demo: bool,
    /// Access log destination: a file path, `-` for stdout (the default), or `off` (overrides
    /// `telemetry.access_log`).
    #[arg(long, value_name = "PATH")]
    access_log: Option<String>,
    /// TLS listen address (needs at least one --tls-cert/--tls-key pair).
    #[arg(long, value_name = "ADDR")]
    tls_listen: Option<SocketAddr>,
    /// Certificate chain (PEM) of the TLS listener; repeatable, in pairs with --tls-key; the
    /// first pair is the default, the others are chosen by SNI. Replaces the file's list.
    #[arg(long = "tls-cert", value_name = "FILE")]
    tls_certs: Vec<PathBuf>,
    /// Private key (PEM: PKCS#8, SEC1 or PKCS#1) of the --tls-cert given in the same position.
    #[arg(long = "tls-key", value_name = "FILE")]
    tls_keys: Vec<PathBuf>,
}

fn main() -> ExitCode {
    telemetry::install(Box::new(StderrSink::new(Level::Info)));
    let cli = Cli::parse();
    match cli.command {
        Some(Command::CheckConfig { file }) => check_config(&file),
        Some(Command::Token { scope, ttl, config }) => token(&scope, ttl, config.as_deref()),
        Some(Command::Healthcheck { url, timeout }) => healthcheck(&url, timeout),
        Some(Command::DemoBackend { listen, name }) => {
            let listener = match std::net::TcpListener::bind(listen) {
                Ok(l) => l,
                Err(e) => {
                    error!("fatal", error = format!("demo backend: listen {listen}: {e}"));
                    return ExitCode::FAILURE;
                }
            };
            let addr = listener.local_addr().map_or(listen, |a| a);
            info!("demo backend listening", addr = addr.to_string(), name = name.clone());
            fulcrum::demo::serve_backend(listener, &name);
            ExitCode::SUCCESS
        }
        None => match run(cli.run) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                error!("fatal", error = format!("{e}"));
                ExitCode::FAILURE
            }
        },
    }
}

#[allow(clippy::print_stdout, clippy::print_stderr)]
fn check_config(file: &std::path::Path) -> ExitCode {
    match Config::from_file(file) {
        Ok(config) => {
            print!("{}", config.to_toml());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

#[allow(clippy::print_stdout, clippy::print_stderr)]
fn token(scope: &str, ttl: std::time::Duration, file: Option<&std::path::Path>) -> ExitCode {
    let result = (|| -> anyhow::Result<String> {
        let mut config = match file {
            Some(path) => Config::from_file(path)?,
            None => Config::default(),
        };
        apply_env_secret(&mut config);
        for s in scope.split_whitespace() {
            anyhow::ensure!(
                s == fulcrum::admin::auth::SCOPE_READ || s == fulcrum::admin::auth::SCOPE_WRITE,
                "unknown scope `{s}` (valid: fulcrum:read, fulcrum:write)"
            );
        }
        Ok(fulcrum::admin::auth::mint(&config.admin, scope, ttl)?)
    })();
    match result {
        Ok(token) => {
            println!("{token}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

#[allow(clippy::print_stdout, clippy::print_stderr)]
fn healthcheck(url: &str, timeout: std::time::Duration) -> ExitCode {
    match fulcrum::healthcheck::probe(url, timeout) {
        Ok(line) => {
            println!("healthy: {line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("unhealthy: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: RunArgs) -> anyhow::Result<()> {
    let mut config = match &args.config {
        Some(path) => Config::from_file(path)?,
        None => Config::default(),
    };
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    if let Some(admin) = args.admin_listen {
        config.admin_listen = admin;
    }
    if !args.backends.is_empty() {
        config.backends = args.backends.into_iter().map(BackendConfig::new).collect();
    }
    if let Some(algorithm) = args.algorithm {
        config.algorithm = algorithm;
    }
    if let Some(workers) = args.workers {
        config.workers = workers;
    }
    if let Some(driver) = args.io_driver {
        config.io_driver = driver;
    }
    if let Some(engine) = args.http2_engine {
        config.http2.engine = engine;
    }
    if let Some(path) = args.access_log {
        config.telemetry.access_log = Some(path);
    }
    if let Some(addr) = args.tls_listen {
        config.tls.listen = Some(addr);
    }
    if args.tls_certs.len() != args.tls_keys.len() {
        return Err(anyhow::anyhow!(
            "--tls-cert and --tls-key come in pairs ({} certificates, {} keys)",
            args.tls_certs.len(),
            args.tls_keys.len()
        ));
    }
    if !args.tls_certs.is_empty() {
        config.tls.certificates = args
            .tls_certs
            .into_iter()
            .zip(args.tls_keys)
            .map(|(cert_file, key_file)| CertificateFiles { cert_file, key_file })
            .collect();
    }
    apply_env_secret(&mut config);
    let demo_secret = args.demo
        && config.admin.jwt_secret.is_none()
        && config.admin.jwt_public_key_file.is_none();
    if demo_secret {
        config.admin.jwt_secret = Some(fulcrum::admin::auth::random_secret()?);
    }
    if args.demo {
        for url in fulcrum::demo::start_backends(3)? {
            info!("demo backend started", url = url);
            config.backends.push(BackendConfig::new(url));
        }
    }
    if config.backends.is_empty() {
        info!("no backends configured: every request gets 503 until one is added");
    }
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])?;
    let admin = config.admin.clone();
    let running = fulcrum::start(config)?;
    if args.demo && running.admin_listen.is_some() && admin.jwt_secret.is_some() {
        let token = fulcrum::admin::auth::mint(
            &admin,
            "fulcrum:read fulcrum:write",
            std::time::Duration::from_secs(3600),
        )?;
        let addr = running.admin_listen.map(|a| a.to_string()).unwrap_or_default();
        info!(
            "demo admin token (one hour, fulcrum:read fulcrum:write)",
            token = token,
            secret = if demo_secret { "random, this run only" } else { "configured" },
            example =
                format!("curl -H 'Authorization: Bearer {token}' http://{addr}/api/v1/config"),
        );
    }
    for signal in signals.forever() {
        if signal == SIGHUP {
            // Re-read every certificate and key: all of them, or none changes.
            match running.reload_tls() {
                Ok(certs) => info!("tls certificates reloaded (SIGHUP)", certificates = certs),
                Err(e) => error!("tls reload refused (SIGHUP): certificates unchanged", error = e),
            }
            continue;
        }
        info!("signal received, draining", signal = signal);
        break;
    }
    running.shutdown();
    Ok(())
}
