//! The server side (TLS from clients): one [`TlsAcceptor`] per process, built on the control
//! thread and cloned into every worker; each worker's `accept` runs the handshake on its own
//! runtime. Certificate reloads swap the live [`CertSet`] from any thread.

use std::fmt;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use monoio::io::{AsyncReadRent, AsyncWriteRent, Split};
use rustls::server::{ClientHello, ResolvesServerCert, ServerSessionMemoryCache};
use rustls::sign::CertifiedKey;
use rustls::{ServerConfig, ServerConnection};

use crate::certs::{CertError, CertInfo, CertPaths, CertSet};
use crate::handshake::{self, HandshakeError};
use crate::stream::{AppProtocol, DEFAULT_READ_BUFFER, TlsStream};

/// Why a server configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// A certificate pair was refused (the error names the file).
    #[error(transparent)]
    Certs(#[from] CertError),
    /// rustls refused the configuration (e.g. no usable ticket key).
    #[error("TLS server configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// What the server side is built from.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Certificate pairs: the first is the default (no SNI or an unknown name), the others are
    /// chosen by SNI from their DNS names.
    pub certs: Vec<CertPaths>,
    /// Protocols offered by ALPN, in preference order.
    pub alpn: Vec<AppProtocol>,
    /// Entries of the process-wide server session cache (TLS 1.2 clients without ticket
    /// support resume through it; everything else resumes by ticket).
    pub session_cache_entries: usize,
    /// Ciphertext read per socket operation, per connection (4 KiB..=1 MiB).
    pub read_buffer_bytes: usize,
}

impl ServerOptions {
    /// Options serving `certs`, offering `h2` then `http/1.1`, with a 4096-entry session
    /// cache and 32 KiB reads.
    pub fn new(certs: Vec<CertPaths>) -> Self {
        Self {
            certs,
            alpn: vec![AppProtocol::H2, AppProtocol::Http11],
            session_cache_entries: 4096,
            read_buffer_bytes: DEFAULT_READ_BUFFER,
        }
    }
}

/// The server side of TLS, shared by every worker (clones share everything).
///
/// Policy: TLS 1.3 and 1.2 only, AEAD suites only, no 0-RTT, no renegotiation (rustls has
/// none). Resumption works whichever worker a client reconnects to: one ticket key rotator and
/// one session cache per acceptor, kept across certificate reloads.
#[derive(Clone)]
pub struct TlsAcceptor {
    config: Arc<ServerConfig>,
    resolver: Arc<SniResolver>,
    read_size: usize,
}

impl TlsAcceptor {
    /// Loads the certificates and builds the configuration.
    pub fn new(options: &ServerOptions) -> Result<Self, ServerError> {
        let resolver = Arc::new(SniResolver::new(CertSet::load(&options.certs)?));
        let mut config = ServerConfig::builder_with_provider(crate::provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
            .with_no_client_auth()
            .with_cert_resolver(resolver.clone());
        config.alpn_protocols = options.alpn.iter().map(|p| p.id().to_vec()).collect();
        config.max_early_data_size = 0;
        config.send_half_rtt_data = false;
        config.ticketer = crate::ticketer()?;
        config.session_storage = ServerSessionMemoryCache::new(options.session_cache_entries);
        Ok(Self { config: Arc::new(config), resolver, read_size: options.read_buffer_bytes })
    }

    /// Runs the server handshake on `io` within `timeout`. Needs the worker's monoio runtime
    /// with its timer enabled.
    pub async fn accept<S>(&self, io: S, timeout: Duration) -> Result<TlsStream<S>, HandshakeError>
    where
        S: Split + AsyncReadRent + AsyncWriteRent + 'static,
    {
        let conn = ServerConnection::new(self.config.clone()).map_err(HandshakeError::Protocol)?;
        handshake::drive(TlsStream::new(io, conn.into(), self.read_size), timeout).await
    }

    /// Loads a new certificate set and, only if every pair passes, makes it live: handshakes
    /// that start afterwards use it, open connections keep theirs.
    pub fn reload(&self, certs: &[CertPaths]) -> Result<(), CertError> {
        self.install(CertSet::load(certs)?);
        Ok(())
    }

    /// Re-reads the files of the live set (the same pairs, in the same order) and makes the
    /// result live, all or nothing, as [`reload`](Self::reload) does (`SIGHUP` and the admin
    /// API's reload). Returns how many certificates are in service.
    pub fn reload_files(&self) -> Result<usize, CertError> {
        let paths: Vec<CertPaths> = self
            .inventory()
            .into_iter()
            .map(|c| CertPaths { cert: c.cert_file, key: c.key_file })
            .collect();
        self.reload(&paths)?;
        Ok(paths.len())
    }

    /// Makes an already loaded set live (for a caller that loads on another thread first).
    pub fn install(&self, set: CertSet) {
        *self.resolver.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(set);
    }

    /// The live certificate set.
    pub fn certs(&self) -> Arc<CertSet> {
        self.resolver.current()
    }

    /// The live certificates, for the admin API.
    pub fn inventory(&self) -> Vec<CertInfo> {
        self.certs().inventory()
    }

    /// The rustls configuration (shared; for inspection).
    pub fn config(&self) -> &Arc<ServerConfig> {
        &self.config
    }
}

impl fmt::Debug for TlsAcceptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsAcceptor").field("certs", &self.inventory()).finish_non_exhaustive()
    }
}

/// Picks the certificate by SNI from the live set. The lock is taken once per handshake, for
/// the time of an `Arc` clone.
struct SniResolver {
    current: RwLock<Arc<CertSet>>,
}

impl SniResolver {
    fn new(set: CertSet) -> Self {
        Self { current: RwLock::new(Arc::new(set)) }
    }

    fn current(&self) -> Arc<CertSet> {
        self.current.read().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current().select(hello.server_name()).clone())
    }
}

impl fmt::Debug for SniResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SniResolver").field("current", &self.current()).finish()
    }
}

impl<S> TlsStream<S>
where
    S: Split + AsyncReadRent + AsyncWriteRent + 'static,
{
    /// Runs a server handshake with any rustls configuration (a [`TlsAcceptor`] brings
    /// Fulcrum's; this is for others, e.g. a server that asks for client certificates), with
    /// the default read buffer.
    pub async fn accept(
        config: Arc<ServerConfig>,
        io: S,
        timeout: Duration,
    ) -> Result<Self, HandshakeError> {
        let conn = ServerConnection::new(config).map_err(HandshakeError::Protocol)?;
        handshake::drive(TlsStream::new(io, conn.into(), DEFAULT_READ_BUFFER), timeout).await
    }
}
