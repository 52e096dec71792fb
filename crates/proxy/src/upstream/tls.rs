//! TLS to `https://` and `h2://` backends (`[upstream_tls]`): one connector per process (its
//! trust anchors, client certificate and session cache shared by every worker), and the
//! handshake of a new upstream connection. Runs on the worker that opens the connection.

use std::time::Duration;

use fulcrum_config::UpstreamTlsConfig;
use fulcrum_tls::{AppProtocol, CertPaths, ClientError, ClientOptions, TlsConnector, TlsStream};
use monoio::net::TcpStream;

/// How Fulcrum speaks TLS to its backends.
#[derive(Debug)]
pub struct UpstreamTls {
    connector: TlsConnector,
    /// The name every certificate is checked against instead of the backend's host.
    server_name: Option<String>,
}

impl UpstreamTls {
    /// The connector of `[upstream_tls]`: the CA bundle (or the system's roots), verification
    /// on or off, the client certificate for mTLS.
    pub fn new(cfg: &UpstreamTlsConfig) -> Result<Self, ClientError> {
        let client_cert = match (&cfg.client_cert_file, &cfg.client_key_file) {
            (Some(cert), Some(key)) => Some(CertPaths { cert: cert.clone(), key: key.clone() }),
            _ => None,
        };
        let options = ClientOptions {
            ca_file: cfg.ca_file.clone(),
            verify: cfg.verify,
            client_cert,
            ..ClientOptions::default()
        };
        Ok(Self { connector: TlsConnector::new(&options)?, server_name: cfg.server_name.clone() })
    }

    /// The rustls client configuration (for the health checks, which run on tokio) and the
    /// server name override.
    pub fn client_config(
        &self,
    ) -> (&std::sync::Arc<fulcrum_tls::rustls::ClientConfig>, Option<&str>) {
        (self.connector.config(), self.server_name.as_deref())
    }

    /// The TLS handshake on a connected `stream` to a backend whose host is `host`, offering
    /// `alpn`, within `timeout`; `Err` says why it failed (a refused certificate included), as
    /// passive health and the log report it.
    pub async fn connect(
        &self,
        stream: TcpStream,
        host: &str,
        alpn: AppProtocol,
        timeout: Duration,
    ) -> Result<TlsStream<TcpStream>, String> {
        let name = self.server_name.as_deref().unwrap_or(host);
        let name = fulcrum_tls::server_name(name).map_err(|e| e.to_string())?;
        let stream = self
            .connector
            .connect(stream, name, &[alpn], timeout)
            .await
            .map_err(|e| format!("TLS handshake: {e}"))?;
        if stream.info().alpn.is_some_and(|p| p != alpn) {
            return Err(format!("TLS: the backend chose another protocol than {alpn:?}"));
        }
        Ok(stream)
    }
}

/// A TCP connection to `addr` within `timeout`, with `TCP_NODELAY`; `Err` says why not.
pub async fn tcp_connect(
    addr: std::net::SocketAddr,
    timeout: Duration,
) -> Result<TcpStream, String> {
    match monoio::time::timeout(timeout, TcpStream::connect_addr(addr)).await {
        Ok(Ok(stream)) => {
            let _ = stream.set_nodelay(true);
            Ok(stream)
        }
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("timeout".to_owned()),
    }
}
