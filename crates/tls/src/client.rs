//! The client side (TLS to backends): one [`TlsConnector`] per backend TLS policy, built on the
//! control thread (it reads files) and cloned into every worker; `connect` runs the handshake
//! on the worker's runtime.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use monoio::io::{AsyncReadRent, AsyncWriteRent, Split};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ClientConfig, Resumption};
use rustls::crypto::{
    CryptoProvider, WebPkiSupportedAlgorithms, verify_tls12_signature, verify_tls13_signature,
};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConnection, DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::certs::{self, CertError, CertPaths};
use crate::handshake::{self, HandshakeError};
use crate::stream::{AppProtocol, DEFAULT_READ_BUFFER, TlsStream};

/// Why a client configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The CA bundle file was refused (the error names it).
    #[error("CA bundle: {0}")]
    CaFile(CertError),
    /// No CA bundle was given and the system trust store had no usable certificate.
    #[error(
        "no usable certificate in the system trust store ({0}); install ca-certificates or set a CA file"
    )]
    NoSystemRoots(String),
    /// The client certificate or its key was refused (the error names the file).
    #[error("client certificate: {0}")]
    ClientCert(CertError),
    /// rustls refused the configuration.
    #[error("TLS client configuration: {0}")]
    Config(#[from] rustls::Error),
    /// Not a DNS name or IP address usable for verification.
    #[error("invalid TLS server name {0:?}")]
    InvalidServerName(String),
}

/// What the client side is built from.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// PEM bundle of the CAs to trust; `None`: the system trust store.
    pub ca_file: Option<PathBuf>,
    /// `false` accepts any server certificate (tests only: the caller logs a warning).
    pub verify: bool,
    /// A client certificate and key, for backends that require mTLS.
    pub client_cert: Option<CertPaths>,
    /// Entries of the session cache used to resume with backends (per server name).
    pub session_cache_entries: usize,
    /// Ciphertext read per socket operation, per connection (4 KiB..=1 MiB).
    pub read_buffer_bytes: usize,
}

impl Default for ClientOptions {
    /// System roots, verification on, no client certificate, 256 cached sessions, 32 KiB
    /// reads.
    fn default() -> Self {
        Self {
            ca_file: None,
            verify: true,
            client_cert: None,
            session_cache_entries: 256,
            read_buffer_bytes: DEFAULT_READ_BUFFER,
        }
    }
}

/// The client side of TLS to backends, shared by every worker (clones share the session
/// cache). TLS 1.3 and 1.2, AEAD suites only, no early data.
#[derive(Clone)]
pub struct TlsConnector {
    config: Arc<ClientConfig>,
    read_size: usize,
}

impl TlsConnector {
    /// Builds the configuration: loads the CA bundle (or the system trust store) and the client
    /// certificate.
    pub fn new(options: &ClientOptions) -> Result<Self, ClientError> {
        let provider = crate::provider();
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?;
        let builder = if options.verify {
            builder.with_root_certificates(roots(options.ca_file.as_deref())?)
        } else {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAnyServerCert::new(&provider)))
        };
        let mut config = match &options.client_cert {
            Some(paths) => {
                let pair = certs::load_pair(paths, &provider, SystemTime::now())
                    .map_err(ClientError::ClientCert)?;
                builder.with_client_auth_cert(pair.chain, pair.key)?
            }
            None => builder.with_no_client_auth(),
        };
        config.resumption = Resumption::in_memory_sessions(options.session_cache_entries);
        config.enable_early_data = false;
        Ok(Self { config: Arc::new(config), read_size: options.read_buffer_bytes })
    }

    /// Runs the client handshake on `io` within `timeout`, verifying the server's certificate
    /// for `name` (the backend host, or the configured override) and offering `alpn`.
    ///
    /// Under TLS 1.3 a server that refuses our client certificate says so after the client's
    /// side of the handshake is done: that refusal arrives as an error on the first read.
    pub async fn connect<S>(
        &self,
        io: S,
        name: ServerName<'static>,
        alpn: &[AppProtocol],
        timeout: Duration,
    ) -> Result<TlsStream<S>, HandshakeError>
    where
        S: Split + AsyncReadRent + AsyncWriteRent + 'static,
    {
        let alpn = alpn.iter().map(|p| p.id().to_vec()).collect();
        let conn = ClientConnection::new_with_alpn(self.config.clone(), name, alpn)
            .map_err(HandshakeError::Protocol)?;
        handshake::drive(TlsStream::new(io, conn.into(), self.read_size), timeout).await
    }

    /// The rustls configuration (shared; for inspection).
    pub fn config(&self) -> &Arc<ClientConfig> {
        &self.config
    }
}

impl fmt::Debug for TlsConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConnector").finish_non_exhaustive()
    }
}

/// Parses a backend host (DNS name or IP address) into the name its certificate must match.
pub fn server_name(host: &str) -> Result<ServerName<'static>, ClientError> {
    ServerName::try_from(host.to_owned()).map_err(|_| ClientError::InvalidServerName(host.into()))
}

/// The trust anchors: the CA bundle when given, else the system store.
///
/// The system store (rustls-native-certs) rather than a compiled-in list (webpki-roots): it is
/// what operators manage (a private CA added with `update-ca-certificates`, a distrusted root
/// removed by an OS update, `SSL_CERT_FILE`/`SSL_CERT_DIR`) without rebuilding Fulcrum. The
/// cost: the image must carry `ca-certificates`, and an empty store is refused here.
fn roots(ca_file: Option<&std::path::Path>) -> Result<RootCertStore, ClientError> {
    let mut roots = RootCertStore::empty();
    match ca_file {
        Some(path) => {
            for cert in certs::load_certificates(path).map_err(ClientError::CaFile)? {
                roots.add(cert).map_err(|e| {
                    ClientError::CaFile(CertError::BadCertificate {
                        path: path.to_owned(),
                        reason: e.to_string(),
                    })
                })?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                let errors: Vec<String> = found.errors.iter().map(ToString::to_string).collect();
                let why = if errors.is_empty() { "none found".into() } else { errors.join("; ") };
                return Err(ClientError::NoSystemRoots(why));
            }
        }
    }
    Ok(roots)
}

/// `verify = false`: any certificate for any name is accepted; handshake signatures are still
/// checked against the presented key, so the peer must hold that key. (Also how tests see which
/// certificate a server chose.)
#[derive(Debug)]
pub struct AcceptAnyServerCert {
    algorithms: WebPkiSupportedAlgorithms,
}

impl AcceptAnyServerCert {
    /// Checks handshake signatures with `provider`'s algorithms.
    pub fn new(provider: &CryptoProvider) -> Self {
        Self { algorithms: provider.signature_verification_algorithms }
    }
}

impl ServerCertVerifier for AcceptAnyServerCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

impl<S> TlsStream<S>
where
    S: Split + AsyncReadRent + AsyncWriteRent + 'static,
{
    /// Runs a client handshake with any rustls configuration, offering `alpn` (identifiers)
    /// on this connection, with the default read buffer.
    pub async fn connect(
        config: Arc<ClientConfig>,
        name: ServerName<'static>,
        alpn: Vec<Vec<u8>>,
        io: S,
        timeout: Duration,
    ) -> Result<Self, HandshakeError> {
        let conn = ClientConnection::new_with_alpn(config, name, alpn)
            .map_err(HandshakeError::Protocol)?;
        handshake::drive(TlsStream::new(io, conn.into(), DEFAULT_READ_BUFFER), timeout).await
    }
}
