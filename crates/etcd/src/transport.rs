//! One HTTP/1.1 connection to one etcd endpoint: TCP (keep-alive, no Nagle), optional rustls,
//! hyper's client handshake; plus bounded reading of a response body. Runs on the `lb-store`
//! thread's runtime; each connection's driver is a task on that runtime.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use http::{HeaderValue, Method, Request};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::pem::PemObject as _;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore, crypto};

use crate::config::{Endpoint, TlsFiles};
use crate::error::Error;

/// Idle time before the kernel probes a silent etcd connection, then probe spacing and count:
/// a vanished peer is noticed in about 30 + 3 * 10 s even when nothing is being sent.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(30);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEPALIVE_RETRIES: u32 = 3;

/// The sending half of a connection.
pub(crate) type Sender = SendRequest<Full<Bytes>>;

trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// Opens connections; holds the TLS configuration loaded at start.
pub(crate) struct Connector {
    tls: Option<TlsConnector>,
    connect_timeout: Duration,
}

impl Connector {
    /// Loads the TLS files now, so a bad file fails the start rather than the first call.
    pub fn new(tls: Option<&TlsFiles>, connect_timeout: Duration) -> Result<Self, Error> {
        let tls = tls
            .map(|files| tls_config(files).map(|c| TlsConnector::from(Arc::new(c))))
            .transpose()?;
        Ok(Self { tls, connect_timeout })
    }

    /// A new connection to `endpoint`, ready for one request at a time.
    pub async fn connect(&self, endpoint: &Endpoint) -> Result<Sender, Error> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| Error::Config("etcd calls need a tokio runtime".into()))?;
        let failed = |reason: String| Error::Connect { endpoint: endpoint.url.clone(), reason };
        let connect = async {
            let tcp = TcpStream::connect((endpoint.host.as_str(), endpoint.port))
                .await
                .map_err(|e| failed(e.to_string()))?;
            tcp.set_nodelay(true).map_err(|e| failed(e.to_string()))?;
            let keepalive = socket2::TcpKeepalive::new()
                .with_time(KEEPALIVE_IDLE)
                .with_interval(KEEPALIVE_INTERVAL)
                .with_retries(KEEPALIVE_RETRIES);
            socket2::SockRef::from(&tcp)
                .set_tcp_keepalive(&keepalive)
                .map_err(|e| failed(e.to_string()))?;
            let io: Box<dyn Io> = match &self.tls {
                None => Box::new(tcp),
                Some(tls) => {
                    let name = ServerName::try_from(endpoint.host.clone())
                        .map_err(|e| failed(format!("not a TLS server name: {e}")))?;
                    let stream = tls.connect(name, tcp).await.map_err(|e| match tls_cause(&e) {
                        Some(reason) => Error::Tls { endpoint: endpoint.url.clone(), reason },
                        None => failed(format!("TLS handshake: {e}")),
                    })?;
                    Box::new(stream)
                }
            };
            let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
                .await
                .map_err(|e| failed(e.to_string()))?;
            // The driver ends when the sender and any response body are dropped.
            runtime.spawn(async move {
                let _ = conn.await;
            });
            Ok(sender)
        };
        tokio::time::timeout(self.connect_timeout, connect)
            .await
            .map_err(|_| failed(format!("no connection within {:?}", self.connect_timeout)))?
    }
}

/// A JSON POST to the gateway.
pub(crate) fn post(
    endpoint: &Endpoint,
    path: &str,
    token: Option<&str>,
    body: Bytes,
) -> Result<Request<Full<Bytes>>, Error> {
    let host = HeaderValue::from_str(&endpoint.authority)
        .map_err(|_| Error::Config(format!("endpoint `{}` is not a valid host", endpoint.url)))?;
    let mut request = Request::builder()
        .method(Method::POST)
        .uri(path)
        .header(HOST, host)
        .header(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Some(token) = token {
        let value = HeaderValue::from_str(token).map_err(|_| Error::Protocol {
            op: "authenticate",
            reason: "the auth token is not a valid header value".into(),
        })?;
        request = request.header(AUTHORIZATION, value);
    }
    request
        .body(Full::new(body))
        .map_err(|e| Error::Protocol { op: "request", reason: e.to_string() })
}

/// Reads a whole response body, refusing more than `limit` bytes.
pub(crate) async fn read_body(
    body: &mut Incoming,
    limit: usize,
    endpoint: &Endpoint,
) -> Result<Bytes, Error> {
    let mut buf = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| transport(endpoint, &e))?;
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > limit {
                return Err(Error::TooLarge { what: "etcd response", limit });
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf.freeze())
}

/// Splits a streaming body (the watch) into newline-terminated JSON messages.
pub(crate) struct Lines {
    buf: BytesMut,
    /// Bytes of `buf` already known to hold no newline.
    scanned: usize,
    limit: usize,
}

impl Lines {
    /// Messages of at most `limit` bytes.
    pub fn new(limit: usize) -> Self {
        Self { buf: BytesMut::new(), scanned: 0, limit }
    }

    /// The next non-empty message. Cancel-safe: data read before a cancellation stays buffered.
    pub async fn next(&mut self, body: &mut Incoming, endpoint: &Endpoint) -> Result<Bytes, Error> {
        loop {
            while let Some(pos) = self.buf[self.scanned..].iter().position(|&b| b == b'\n') {
                let line = self.buf.split_to(self.scanned + pos + 1).freeze();
                self.scanned = 0;
                if line.iter().any(|b| !b.is_ascii_whitespace()) {
                    return Ok(line);
                }
            }
            self.scanned = self.buf.len();
            if self.buf.len() > self.limit {
                return Err(Error::TooLarge { what: "etcd watch message", limit: self.limit });
            }
            match body.frame().await {
                None => {
                    return Err(Error::Transport {
                        endpoint: endpoint.url.clone(),
                        reason: "etcd ended the watch stream".into(),
                    });
                }
                Some(Err(e)) => return Err(transport(endpoint, &e)),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.buf.extend_from_slice(&data);
                    }
                }
            }
        }
    }
}

/// A connection failure while a request was in flight (TLS refusals, such as a client
/// certificate etcd rejects after the handshake, are told apart).
pub(crate) fn transport(endpoint: &Endpoint, e: &hyper::Error) -> Error {
    match tls_cause(e) {
        Some(reason) => Error::Tls { endpoint: endpoint.url.clone(), reason },
        None => Error::Transport { endpoint: endpoint.url.clone(), reason: e.to_string() },
    }
}

/// The rustls error somewhere in `e`'s chain, if any (an `io::Error` hides its inner error
/// from `source()`, so those are opened by hand).
fn tls_cause(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut next = Some(e);
    while let Some(e) = next {
        let inner = e.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref());
        for candidate in [Some(e), inner.map(|i| i as &(dyn std::error::Error + 'static))] {
            if let Some(tls) = candidate.and_then(|c| c.downcast_ref::<rustls::Error>()) {
                return Some(tls.to_string());
            }
        }
        next = e.source();
    }
    None
}

fn tls_config(files: &TlsFiles) -> Result<ClientConfig, Error> {
    let bad = |path: &Path, why: String| Error::Config(format!("{}: {why}", path.display()));
    let mut roots = RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(&files.ca_file)
        .map_err(|e| bad(&files.ca_file, e.to_string()))?;
    for cert in certs {
        let cert = cert.map_err(|e| bad(&files.ca_file, e.to_string()))?;
        roots.add(cert).map_err(|e| bad(&files.ca_file, e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(bad(&files.ca_file, "no CA certificate in the file".into()));
    }
    let builder =
        ClientConfig::builder_with_provider(Arc::new(crypto::aws_lc_rs::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Config(format!("TLS: {e}")))?
            .with_root_certificates(roots);
    // No ALPN: etcd (Go) refuses a handshake whose ALPN list has nothing in common with its
    // own, and its cmux tells HTTP/1.1 from gRPC by the bytes, not by ALPN.
    let config = match (&files.cert_file, &files.key_file) {
        (Some(cert_file), Some(key_file)) => {
            let chain = CertificateDer::pem_file_iter(cert_file)
                .map_err(|e| bad(cert_file, e.to_string()))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| bad(cert_file, e.to_string()))?;
            if chain.is_empty() {
                return Err(bad(cert_file, "no certificate in the file".into()));
            }
            let key =
                PrivateKeyDer::from_pem_file(key_file).map_err(|e| bad(key_file, e.to_string()))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| bad(cert_file, format!("client certificate: {e}")))?
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(config)
}
