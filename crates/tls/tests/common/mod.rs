//! Test support: a throwaway PKI written to a temporary directory, runtimes on both monoio
//! drivers, a loopback listener and a small bounded channel between tasks.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::{Future, poll_fn};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Poll, Waker};
use std::time::Duration;

use fulcrum_tls::rustls::pki_types::{CertificateDer, pem::PemObject};
use fulcrum_tls::rustls::{ClientConfig, RootCertStore, SupportedProtocolVersion};
use fulcrum_tls::{
    AppProtocol, CertPaths, ClientOptions, ServerOptions, TlsAcceptor, TlsConnector, TlsStream,
};
use monoio::buf::IoBuf;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::{TcpListener, TcpStream};
use monoio::{FusionDriver, IoUringDriver, LegacyDriver, RuntimeBuilder};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, date_time_ymd,
};

/// A generous bound on any single test step (a hang fails instead of blocking CI).
pub const STEP: Duration = Duration::from_secs(20);

/// A directory under the system temp dir, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new() -> Self {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("fulcrum-tls-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Validity and purpose of a generated certificate.
#[derive(Clone, Copy)]
pub struct Spec {
    pub not_before: (i32, u8, u8),
    pub not_after: (i32, u8, u8),
    pub client: bool,
    pub rsa: bool,
}

impl Default for Spec {
    fn default() -> Self {
        Self { not_before: (2020, 1, 1), not_after: (2090, 1, 1), client: false, rsa: false }
    }
}

/// A test CA and the certificates it signs, as files.
pub struct Pki {
    pub dir: TempDir,
    ca: CertifiedIssuer<'static, KeyPair>,
    pub ca_file: PathBuf,
}

impl Pki {
    pub fn new(name: &str) -> Self {
        let dir = TempDir::new();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, ca.pem()).unwrap();
        Self { dir, ca, ca_file }
    }

    /// A server certificate (ECDSA P-256, PKCS#8 key) for `names`, valid 2020..2090.
    pub fn server(&self, file: &str, names: &[&str]) -> CertPaths {
        self.cert(file, names, Spec::default())
    }

    /// A client certificate (for mTLS).
    pub fn client(&self, file: &str) -> CertPaths {
        self.cert(file, &["client.test"], Spec { client: true, ..Spec::default() })
    }

    pub fn cert(&self, file: &str, names: &[&str], spec: Spec) -> CertPaths {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        params.distinguished_name.push(DnType::CommonName, file);
        let (y, m, d) = spec.not_before;
        params.not_before = date_time_ymd(y, m, d);
        let (y, m, d) = spec.not_after;
        params.not_after = date_time_ymd(y, m, d);
        params.extended_key_usages = vec![if spec.client {
            ExtendedKeyUsagePurpose::ClientAuth
        } else {
            ExtendedKeyUsagePurpose::ServerAuth
        }];
        let key = if spec.rsa {
            KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap()
        } else {
            KeyPair::generate().unwrap()
        };
        let cert = params.signed_by(&key, &self.ca).unwrap();
        let paths = CertPaths {
            cert: self.dir.path().join(format!("{file}.crt")),
            key: self.dir.path().join(format!("{file}.key")),
        };
        std::fs::write(&paths.cert, cert.pem()).unwrap();
        std::fs::write(&paths.key, key.serialize_pem()).unwrap();
        paths
    }

    /// Writes `contents` to a file of the PKI's directory.
    pub fn file(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }

    /// The key of `paths` rewritten in OpenSSL's traditional format (SEC1 for EC keys, PKCS#1
    /// for RSA keys), by Debian's `openssl`.
    pub fn traditional_key(&self, paths: &CertPaths, file: &str) -> PathBuf {
        let out = self.dir.path().join(file);
        let status = Command::new("openssl")
            .args(["pkey", "-traditional", "-in"])
            .arg(&paths.key)
            .arg("-out")
            .arg(&out)
            .status()
            .expect("openssl (Debian package `openssl`) must be installed");
        assert!(status.success());
        out
    }

    /// Client options trusting this CA.
    pub fn client_options(&self) -> ClientOptions {
        ClientOptions { ca_file: Some(self.ca_file.clone()), ..ClientOptions::default() }
    }

    pub fn connector(&self) -> TlsConnector {
        TlsConnector::new(&self.client_options()).unwrap()
    }

    /// An acceptor serving one certificate for `localhost` and 127.0.0.1.
    pub fn acceptor(&self) -> TlsAcceptor {
        let cert = self.server("localhost", &["localhost", "127.0.0.1"]);
        TlsAcceptor::new(&ServerOptions::new(vec![cert])).unwrap()
    }

    /// A plain rustls client configuration (an independent peer) trusting this CA, for
    /// `versions`, with rustls's default session cache.
    pub fn rustls_client(&self, versions: &[&'static SupportedProtocolVersion]) -> ClientConfig {
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(&self.ca_file).unwrap() {
            roots.add(cert.unwrap()).unwrap();
        }
        ClientConfig::builder_with_provider(fulcrum_tls::provider())
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth()
    }
}

/// Runs `test` on a runtime with io_uring (when the kernel allows it, else the fusion driver's
/// fallback) and again on the legacy epoll driver.
pub fn on_both_drivers(test: impl AsyncFn()) {
    if monoio::utils::detect_uring() {
        let mut rt = RuntimeBuilder::<IoUringDriver>::new().enable_timer().build().unwrap();
        rt.block_on(bounded(test()));
    } else {
        eprintln!("io_uring unavailable: the fusion driver falls back to epoll");
        let mut rt = RuntimeBuilder::<FusionDriver>::new().enable_timer().build().unwrap();
        rt.block_on(bounded(test()));
    }
    let mut rt = RuntimeBuilder::<LegacyDriver>::new().enable_timer().build().unwrap();
    rt.block_on(bounded(test()));
}

/// Runs `test` on the default (fusion) runtime, for tests whose subject is not the driver.
pub fn on_runtime<Fut: Future<Output = ()>>(test: Fut) {
    let mut rt = RuntimeBuilder::<FusionDriver>::new().enable_timer().build().unwrap();
    rt.block_on(bounded(test));
}

async fn bounded<Fut: Future<Output = ()>>(test: Fut) {
    monoio::time::timeout(Duration::from_secs(60), test).await.expect("test timed out");
}

pub fn listen() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    (listener, addr)
}

/// Listens on 127.0.0.1 and, in a task, accepts one connection there, runs the server
/// handshake with `acceptor` and hands the stream to `serve`: the address and that task.
pub fn serve_one<F, Fut>(
    acceptor: &TlsAcceptor,
    serve: F,
) -> (SocketAddr, monoio::task::JoinHandle<Fut::Output>)
where
    F: FnOnce(TlsStream<TcpStream>) -> Fut + 'static,
    Fut: Future + 'static,
{
    let (listener, addr) = listen();
    let acceptor = acceptor.clone();
    let server = monoio::spawn(async move {
        let tls = accept_one(&listener, &acceptor).await.unwrap();
        serve(tls).await
    });
    (addr, server)
}

/// Accepts one connection and runs the server handshake.
pub async fn accept_one(
    listener: &TcpListener,
    acceptor: &TlsAcceptor,
) -> Result<TlsStream<TcpStream>, fulcrum_tls::HandshakeError> {
    let (tcp, _) = listener.accept().await.unwrap();
    acceptor.accept(tcp, STEP).await
}

/// Connects to `addr` and runs the client handshake for `name`.
pub async fn connect(
    connector: &TlsConnector,
    addr: SocketAddr,
    name: &str,
    alpn: &[AppProtocol],
) -> Result<TlsStream<TcpStream>, fulcrum_tls::HandshakeError> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    connector.connect(tcp, fulcrum_tls::server_name(name).unwrap(), alpn, STEP).await
}

/// Echoes everything back until the peer's close_notify, then closes with one.
pub async fn echo(mut tls: TlsStream<TcpStream>) {
    let mut buf = Vec::with_capacity(16 * 1024);
    loop {
        let (n, b) = tls.read(buf).await;
        buf = b;
        match n.unwrap() {
            0 => break,
            n => {
                let (r, b) = tls.write_all(buf.slice(0..n)).await;
                r.unwrap();
                buf = b.into_inner();
                buf.clear();
            }
        }
    }
    monoio::io::AsyncWriteRent::shutdown(&mut tls).await.unwrap();
}

/// Reads exactly `n` bytes.
pub async fn read_exact<R: AsyncReadRent>(r: &mut R, n: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let buf = Vec::with_capacity((n - out.len()).min(64 * 1024));
        let (res, buf) = r.read(buf).await;
        assert!(res.unwrap() > 0, "unexpected end of stream after {} bytes", out.len());
        out.extend_from_slice(&buf);
    }
    out
}

/// Reads until the peer's clean close; returns what was read.
pub async fn read_to_end<R: AsyncReadRent>(r: &mut R) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let (res, buf) = r.read(Vec::with_capacity(16 * 1024)).await;
        if res? == 0 {
            return Ok(out);
        }
        out.extend_from_slice(&buf);
    }
}

/// The test pattern: byte `i` of a stream.
pub fn pattern(i: usize) -> u8 {
    (i.wrapping_mul(31) ^ (i >> 13)) as u8
}

pub fn pattern_chunk(start: usize, len: usize) -> Vec<u8> {
    (start..start + len).map(pattern).collect()
}

/// A bounded single-thread channel (tests only).
pub fn channel<T>(capacity: usize) -> (Sender<T>, Receiver<T>) {
    let chan = Rc::new(RefCell::new(Chan {
        queue: VecDeque::new(),
        capacity,
        closed: false,
        rx: None,
        tx: None,
    }));
    (Sender(chan.clone()), Receiver(chan))
}

struct Chan<T> {
    queue: VecDeque<T>,
    capacity: usize,
    closed: bool,
    rx: Option<Waker>,
    tx: Option<Waker>,
}

pub struct Sender<T>(Rc<RefCell<Chan<T>>>);
pub struct Receiver<T>(Rc<RefCell<Chan<T>>>);

impl<T> Sender<T> {
    pub async fn send(&self, value: T) {
        let mut value = Some(value);
        poll_fn(|cx| {
            let mut chan = self.0.borrow_mut();
            if chan.queue.len() < chan.capacity {
                chan.queue.push_back(value.take().unwrap());
                if let Some(w) = chan.rx.take() {
                    w.wake();
                }
                Poll::Ready(())
            } else {
                chan.tx = Some(cx.waker().clone());
                Poll::Pending
            }
        })
        .await
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        let mut chan = self.0.borrow_mut();
        chan.closed = true;
        if let Some(w) = chan.rx.take() {
            w.wake();
        }
    }
}

impl<T> Receiver<T> {
    pub async fn recv(&self) -> Option<T> {
        poll_fn(|cx| {
            let mut chan = self.0.borrow_mut();
            if let Some(value) = chan.queue.pop_front() {
                if let Some(w) = chan.tx.take() {
                    w.wake();
                }
                Poll::Ready(Some(value))
            } else if chan.closed {
                Poll::Ready(None)
            } else {
                chan.rx = Some(cx.waker().clone());
                Poll::Pending
            }
        })
        .await
    }
}
