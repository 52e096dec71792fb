//! The handshake driver with its deadline, shared by the server and the client side (runs on
//! the worker thread that owns the connection).

use std::io;
use std::time::Duration;

use monoio::io::{AsyncReadRent, AsyncWriteRent, Split};

use crate::stream::TlsStream;

/// Why a TLS handshake failed. Fulcrum counts a client-side failure as a connect failure of
/// the backend and logs this error's text.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// The handshake did not finish within its deadline (e.g. a client that never sends a
    /// ClientHello).
    #[error("TLS handshake timed out after {0:?}")]
    Timeout(Duration),
    /// This side rejected the peer's certificate: unknown issuer, wrong name, expired... (the
    /// reason is rustls's). On the client side this is the backend failing verification.
    #[error("peer certificate rejected: {0}")]
    Certificate(rustls::CertificateError),
    /// The peer aborted the handshake with a fatal alert (it rejected our certificate, our
    /// offer of versions, suites or ALPN protocols...).
    #[error("peer sent TLS alert {0:?}")]
    Alert(rustls::AlertDescription),
    /// Any other TLS failure: a protocol violation, no common version, suite or ALPN protocol.
    #[error("TLS handshake failed: {0}")]
    Protocol(rustls::Error),
    /// The peer closed the connection before the handshake finished.
    #[error("peer closed the connection during the TLS handshake")]
    Eof,
    /// The socket failed.
    #[error("I/O error during the TLS handshake: {0}")]
    Io(io::Error),
}

impl HandshakeError {
    /// Sorts a rustls error into the variant that says whose fault it is.
    pub(crate) fn from_tls(error: rustls::Error) -> Self {
        match error {
            rustls::Error::InvalidCertificate(reason) => Self::Certificate(reason),
            rustls::Error::AlertReceived(alert) => Self::Alert(alert),
            other => Self::Protocol(other),
        }
    }
}

/// Runs the handshake of `stream` to its end or to `deadline`, whichever comes first. Needs a
/// monoio runtime with its timer enabled.
pub(crate) async fn drive<S>(
    mut stream: TlsStream<S>,
    deadline: Duration,
) -> Result<TlsStream<S>, HandshakeError>
where
    S: Split + AsyncReadRent + AsyncWriteRent + 'static,
{
    match monoio::time::timeout(deadline, stream.handshake()).await {
        Ok(Ok(())) => Ok(stream),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(HandshakeError::Timeout(deadline)),
    }
}
