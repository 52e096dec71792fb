//! TLS for the integration tests: a throwaway PKI made by the tests ([`Pki`]: a CA and the
//! certificates it issues, written as PEM files, [`CertFiles`]), rustls client configurations
//! ([`client_config`], [`any_cert_client`]), the HTTPS/1.1 client ([`HttpsClient`]), HTTP/2
//! and gRPC over TLS ([`h2_over_tls`], [`grpc_over_tls`]), and TLS backends ([`TlsFront`]: a
//! TLS terminator in front of a cleartext test backend, optionally asking for a client
//! certificate).
//!
//! Every certificate is ECDSA P-256 (rcgen's default). Valid certificates run from 2000 to 2099,
//! the expired one ended in 2001: no test depends on the clock.

use std::future::Future;
use std::io::{self, BufReader, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use fulcrum_tls::AcceptAnyServerCert;
use h2::client::SendRequest;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, date_time_ymd,
};
use rustls::client::Resumption;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{
    ClientConfig, ClientConnection, HandshakeKind, RootCertStore, ServerConfig, StreamOwned,
    SupportedProtocolVersion,
};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt as _;

use super::grpc::GrpcClient;
use super::http1::{Response, read_response, request_head};
use super::{TempDir, wait_until};

/// The crypto provider of every test client and backend (Fulcrum's own: aws-lc-rs).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// TLS 1.3 and 1.2, as Fulcrum offers.
pub const BOTH: &[&SupportedProtocolVersion] = &[&rustls::version::TLS13, &rustls::version::TLS12];
/// TLS 1.2 only.
pub const TLS12: &[&SupportedProtocolVersion] = &[&rustls::version::TLS12];

/// Lowercase hex SHA-256 of `der`: the fingerprint the admin API shows.
pub fn sha256(der: &[u8]) -> String {
    Sha256::digest(der).iter().map(|b| format!("{b:02x}")).collect()
}

/// A certificate chain and its key as PEM files, and the leaf certificate itself.
#[derive(Debug, Clone)]
pub struct CertFiles {
    /// The chain file (the leaf alone).
    pub cert: PathBuf,
    /// The key file (PKCS#8).
    pub key: PathBuf,
    /// The leaf, DER.
    pub der: CertificateDer<'static>,
    /// The key, PEM.
    pub key_pem: String,
}

impl CertFiles {
    /// The leaf's SHA-256 fingerprint.
    pub fn sha256(&self) -> String {
        sha256(&self.der)
    }
    /// The chain, for a rustls server or client.
    pub fn chain(&self) -> Vec<CertificateDer<'static>> {
        vec![self.der.clone()]
    }
    /// The key, for a rustls server or client.
    pub fn private_key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes()).unwrap()
    }
}

/// What a certificate is for and how long it is valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Server,
    Expired,
    Client,
}

/// A CA made by the test, and the directory its certificates are written to (removed on drop).
pub struct Pki {
    dir: TempDir,
    issuer: CertifiedIssuer<'static, KeyPair>,
    /// The CA certificate as a PEM file (a CA bundle of one).
    pub ca: PathBuf,
}

impl Pki {
    /// A new CA named `name`.
    pub fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, format!("{name} test CA"));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.not_before = date_time_ymd(2000, 1, 1);
        params.not_after = date_time_ymd(2099, 12, 31);
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        let dir = TempDir::new(&format!("pki-{name}"));
        let ca = dir.write("ca.pem", &issuer.pem());
        Self { dir, issuer, ca }
    }

    /// The CA certificate, DER.
    pub fn ca_der(&self) -> CertificateDer<'static> {
        self.issuer.der().clone()
    }

    /// A server certificate for `names` (DNS names or IP addresses), valid 2000-2099, written
    /// to `{file}.pem` and `{file}.key` (replacing them atomically: a reload reads either the
    /// old pair or the new one). A new key every time.
    pub fn issue(&self, file: &str, names: &[&str]) -> CertFiles {
        self.make(file, names, Kind::Server)
    }

    /// A server certificate for `names` that expired in 2001.
    pub fn expired(&self, file: &str, names: &[&str]) -> CertFiles {
        self.make(file, names, Kind::Expired)
    }

    /// A client certificate (extended key usage clientAuth) for `name`.
    pub fn client(&self, file: &str, name: &str) -> CertFiles {
        self.make(file, &[name], Kind::Client)
    }

    /// A path in the PKI's directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Writes `contents` to `name` in the PKI's directory atomically (write, then rename).
    pub fn write(&self, name: &str, contents: &str) -> PathBuf {
        let tmp = self.dir.write(&format!(".{name}.tmp"), contents);
        let path = self.path(name);
        std::fs::rename(tmp, &path).unwrap();
        path
    }

    fn make(&self, file: &str, names: &[&str], kind: Kind) -> CertFiles {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(names.clone()).unwrap();
        params.distinguished_name.push(DnType::CommonName, names[0].clone());
        params.not_before = date_time_ymd(2000, 1, 1);
        params.not_after = match kind {
            Kind::Expired => date_time_ymd(2001, 1, 1),
            Kind::Server | Kind::Client => date_time_ymd(2099, 12, 31),
        };
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![match kind {
            Kind::Client => ExtendedKeyUsagePurpose::ClientAuth,
            Kind::Server | Kind::Expired => ExtendedKeyUsagePurpose::ServerAuth,
        }];
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let key_pem = key.serialize_pem();
        let key_path = self.write(&format!("{file}.key"), &key_pem);
        let cert_path = self.write(&format!("{file}.pem"), &cert.pem());
        CertFiles { cert: cert_path, key: key_path, der: cert.der().clone(), key_pem }
    }
}

// ---------------------------------------------------------------------------------------------
// Client configurations
// ---------------------------------------------------------------------------------------------

/// A client trusting `cas` (certificates are verified, names included), offering `alpn` and
/// `versions`, with rustls's in-memory session store (clones of the `Arc` share it: a second
/// connection resumes the first one's session).
pub fn client_config(
    cas: &[&Pki],
    alpn: &[&str],
    versions: &[&'static SupportedProtocolVersion],
) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for ca in cas {
        roots.add(ca.ca_der()).unwrap();
    }
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    Arc::new(config)
}

/// A client that accepts any server certificate (to look at which one the server chose),
/// offering `alpn`, TLS 1.3 and 1.2.
pub fn any_cert_client(alpn: &[&str]) -> Arc<ClientConfig> {
    let provider = provider();
    let mut config = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(BOTH)
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyServerCert::new(&provider)))
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    config.resumption = Resumption::disabled();
    Arc::new(config)
}

/// `config` without session resumption: every handshake is full, so the client sees the
/// certificate the server presents now (a resumed session keeps the one it was made with).
pub fn without_resumption(config: &Arc<ClientConfig>) -> Arc<ClientConfig> {
    let mut config = ClientConfig::clone(config);
    config.resumption = Resumption::disabled();
    Arc::new(config)
}

/// The name to verify and to send as SNI: a DNS name, or an IP address (then no SNI is sent).
pub fn server_name(name: &str) -> ServerName<'static> {
    match name.parse::<IpAddr>() {
        Ok(ip) => ServerName::IpAddress(ip.into()),
        Err(_) => ServerName::try_from(name.to_owned()).unwrap(),
    }
}

// ---------------------------------------------------------------------------------------------
// HTTPS/1.1
// ---------------------------------------------------------------------------------------------

/// One HTTPS connection (blocking, rustls over `std::net`), its handshake done; requests are
/// HTTP/1.1 keep-alive, read with the harness's HTTP/1.1 reader.
pub struct HttpsClient {
    io: BufReader<StreamOwned<ClientConnection, TcpStream>>,
}

impl HttpsClient {
    /// Connects to `addr` and runs the handshake for `name` (SNI unless an IP address); reads
    /// time out after 20 s. `Err`: the TCP connect or the handshake failed.
    pub fn connect(addr: SocketAddr, config: &Arc<ClientConfig>, name: &str) -> io::Result<Self> {
        let mut tcp = TcpStream::connect(addr)?;
        tcp.set_read_timeout(Some(Duration::from_secs(20)))?;
        let _ = tcp.set_nodelay(true);
        let mut conn =
            ClientConnection::new(config.clone(), server_name(name)).map_err(io::Error::other)?;
        while conn.is_handshaking() {
            conn.complete_io(&mut tcp)?;
        }
        Ok(Self { io: BufReader::new(StreamOwned::new(conn, tcp)) })
    }

    fn conn(&self) -> &ClientConnection {
        &self.io.get_ref().conn
    }

    /// The protocol ALPN chose, if any.
    pub fn alpn(&self) -> Option<String> {
        self.conn().alpn_protocol().map(|p| String::from_utf8_lossy(p).into_owned())
    }

    /// The TLS version, as Fulcrum names it (`TLSv1.3`, `TLSv1.2`).
    pub fn version(&self) -> &'static str {
        match self.conn().protocol_version() {
            Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3",
            Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2",
            other => panic!("unexpected TLS version {other:?}"),
        }
    }

    /// Whether the handshake resumed an earlier session.
    pub fn resumed(&self) -> bool {
        self.conn().handshake_kind() == Some(HandshakeKind::Resumed)
    }

    /// The SHA-256 fingerprint of the certificate the server presented.
    pub fn peer_sha256(&self) -> String {
        sha256(&self.conn().peer_certificates().expect("a server certificate")[0])
    }

    /// Sends a request (adding `Host: test` unless given, `Content-Length` for a body) and
    /// reads its response.
    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> io::Result<Response> {
        let sized = !body.is_empty() || method == "POST" || method == "PUT";
        let mut bytes = request_head(method, path, headers, sized.then_some(body.len()));
        bytes.extend_from_slice(body);
        let stream = self.io.get_mut();
        stream.write_all(&bytes)?;
        stream.flush()?;
        read_response(&mut self.io, method == "HEAD")
    }

    /// `GET path` on this connection.
    pub fn get(&mut self, path: &str) -> io::Result<Response> {
        self.request("GET", path, &[], b"")
    }
}

/// `GET path` on a fresh HTTPS connection with `Connection: close`; the response and the
/// fingerprint of the certificate the server presented.
pub fn https_get(
    addr: SocketAddr,
    config: &Arc<ClientConfig>,
    name: &str,
    path: &str,
) -> io::Result<(Response, String)> {
    let mut c = HttpsClient::connect(addr, config, name)?;
    let fingerprint = c.peer_sha256();
    Ok((c.request("GET", path, &[("Connection", "close")], b"")?, fingerprint))
}

/// The fingerprint of the certificate the server at `addr` presents for `name` (any
/// certificate accepted; no request is sent).
pub fn fingerprint_for(addr: SocketAddr, name: &str) -> String {
    HttpsClient::connect(addr, &any_cert_client(&[]), name).unwrap().peer_sha256()
}

// ---------------------------------------------------------------------------------------------
// HTTP/2 and gRPC over TLS (tokio)
// ---------------------------------------------------------------------------------------------

/// A TLS connection on tokio to `addr` for `name`.
pub async fn tls_connect(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
    name: &str,
) -> io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let _ = tcp.set_nodelay(true);
    tokio_rustls::TlsConnector::from(config).connect(server_name(name), tcp).await
}

/// An HTTP/2 connection over TLS (the h2 crate; `config` must offer ALPN `h2`), its connection
/// future running in a task of its own.
pub async fn h2_over_tls(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
    name: &str,
) -> SendRequest<Bytes> {
    let tls = tls_connect(addr, config, name).await.unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]), "ALPN chose h2");
    let (send, conn) = h2::client::handshake(tls).await.unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    send
}

/// A tonic gRPC client of the echo service over TLS (ALPN `h2`) to `addr`, verifying `name`
/// against `ca`.
pub async fn grpc_over_tls(addr: SocketAddr, ca: &Pki, name: &str) -> GrpcClient {
    let dial = TlsDial { addr, config: client_config(&[ca], &["h2"], BOTH), name: name.to_owned() };
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{name}")).unwrap();
    GrpcClient::over(endpoint.connect_with_connector(dial).await.unwrap())
}

/// tonic's connector: every connection of the channel is TLS to one address.
#[derive(Clone)]
struct TlsDial {
    addr: SocketAddr,
    config: Arc<ClientConfig>,
    name: String,
}

type TlsIo = hyper_util::rt::TokioIo<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;

impl tonic::codegen::Service<tonic::codegen::http::Uri> for TlsDial {
    type Response = TlsIo;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<TlsIo>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: tonic::codegen::http::Uri) -> Self::Future {
        let dial = self.clone();
        Box::pin(async move {
            let tls = tls_connect(dial.addr, dial.config, &dial.name).await?;
            if tls.get_ref().1.alpn_protocol() != Some(b"h2") {
                return Err(io::Error::other("ALPN did not choose h2"));
            }
            Ok(hyper_util::rt::TokioIo::new(tls))
        })
    }
}

// ---------------------------------------------------------------------------------------------
// TLS backends
// ---------------------------------------------------------------------------------------------

/// What a [`TlsFront`] saw.
#[derive(Debug, Default)]
pub struct FrontStats {
    /// Handshakes completed.
    pub handshakes: AtomicUsize,
    /// Handshakes that failed (the client refused our certificate, sent none of its own...).
    pub failed: AtomicUsize,
    /// Completed handshakes in which the client presented a certificate.
    pub client_certs: AtomicUsize,
    /// The reason of each failed handshake, as rustls gave it.
    pub errors: Mutex<Vec<String>>,
    /// Connections whose backend closed its side, after which the front closed its TLS side
    /// in turn (`close_notify` and FIN sent to the client).
    pub closed: AtomicUsize,
}

/// A TLS backend: terminates TLS with its certificate (and ALPN protocols) on an ephemeral
/// loopback port and relays the plaintext to a cleartext backend, one TCP connection per TLS
/// connection. With a client CA it requires a client certificate issued by it (mTLS). Runs on
/// its own thread and tokio runtime; stops on drop.
pub struct TlsFront {
    addr: SocketAddr,
    pub stats: Arc<FrontStats>,
    kill: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TlsFront {
    /// A front for the backend at `target` (a `scheme://host:port` URL or `host:port`),
    /// presenting `cert`, offering `alpn`, requiring a client certificate from `client_ca`
    /// when given.
    pub fn new(target: &str, cert: &CertFiles, alpn: &[&str], client_ca: Option<&Pki>) -> Self {
        let target: SocketAddr =
            target.rsplit("://").next().unwrap().parse().expect("a host:port target");
        let provider = provider();
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(BOTH)
            .unwrap();
        let builder = match client_ca {
            Some(ca) => {
                let mut roots = RootCertStore::empty();
                roots.add(ca.ca_der()).unwrap();
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                        .build()
                        .unwrap();
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let mut config = builder.with_single_cert(cert.chain(), cert.private_key()).unwrap();
        config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));

        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let stats = Arc::new(FrontStats::default());
        let (kill, killed) = tokio::sync::oneshot::channel();
        let st = stats.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                tokio::select! {
                    _ = relay_all(listener, acceptor, target, st) => {}
                    _ = killed => {}
                }
            });
            // Dropping the runtime drops every relay task: the sockets close at once.
            rt.shutdown_background();
        });
        Self { addr, stats, kill: Some(kill), thread: Some(thread) }
    }

    /// Its `https://` URL (HTTP/1.1 over TLS).
    pub fn https_url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// Its `h2://` URL (HTTP/2 over TLS).
    pub fn h2_url(&self) -> String {
        format!("h2://{}", self.addr)
    }

    /// Handshakes completed so far.
    pub fn handshakes(&self) -> usize {
        self.stats.handshakes.load(SeqCst)
    }

    /// Handshakes failed so far.
    pub fn failed(&self) -> usize {
        self.stats.failed.load(SeqCst)
    }

    /// Completed handshakes with a client certificate so far.
    pub fn client_certs(&self) -> usize {
        self.stats.client_certs.load(SeqCst)
    }

    /// Connections the backend closed and the front closed in turn, so far.
    pub fn closed(&self) -> usize {
        self.stats.closed.load(SeqCst)
    }

    /// Waits (10 s at most) for `n` failed handshakes; returns their reasons.
    pub fn wait_failed(&self, n: usize) -> Vec<String> {
        let ok = wait_until(Duration::from_secs(10), || self.failed() >= n);
        let errors = self.stats.errors.lock().unwrap().clone();
        assert!(ok, "{n} failed handshakes expected, saw {}: {errors:?}", self.failed());
        errors
    }
}

impl Drop for TlsFront {
    fn drop(&mut self) {
        if let Some(k) = self.kill.take() {
            let _ = k.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn relay_all(
    listener: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    target: SocketAddr,
    stats: Arc<FrontStats>,
) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else { continue };
        let (acceptor, stats) = (acceptor.clone(), stats.clone());
        tokio::spawn(async move {
            let tls = match acceptor.accept(tcp).await {
                Ok(tls) => tls,
                Err(e) => {
                    stats.errors.lock().unwrap().push(e.to_string());
                    stats.failed.fetch_add(1, SeqCst);
                    return;
                }
            };
            if tls.get_ref().1.peer_certificates().is_some_and(|c| !c.is_empty()) {
                stats.client_certs.fetch_add(1, SeqCst);
            }
            stats.handshakes.fetch_add(1, SeqCst);
            let Ok(plain) = tokio::net::TcpStream::connect(target).await else { return };
            let _ = plain.set_nodelay(true);
            // Each direction to its end, then a shutdown of the other side's writing half (as
            // copy_bidirectional does), counting the backend's closes once passed on.
            let (mut tls_r, mut tls_w) = tokio::io::split(tls);
            let (mut plain_r, mut plain_w) = plain.into_split();
            let up = async {
                let _ = tokio::io::copy(&mut tls_r, &mut plain_w).await;
                let _ = plain_w.shutdown().await;
            };
            let down = async {
                let _ = tokio::io::copy(&mut plain_r, &mut tls_w).await;
                if tls_w.shutdown().await.is_ok() {
                    stats.closed.fetch_add(1, SeqCst);
                }
            };
            tokio::join!(up, down);
        });
    }
}
