//! Fulcrum's TLS transport: rustls driven over monoio's owned-buffer IO, for client connections
//! (server side, [`TlsAcceptor`]) and backend connections (client side, [`TlsConnector`]).
//!
//! TLS sits *under* the HTTP paths instead of beside them: a [`TlsStream`] implements monoio's
//! [`AsyncReadRent`](monoio::io::AsyncReadRent) and [`AsyncWriteRent`](monoio::io::AsyncWriteRent)
//! and splits into halves that work concurrently, like the `TcpStream` the HTTP/1.1 path uses
//! today; once ALPN has chosen `h2`, [`TlsStream::into_poll_io`] hands the same connection (and
//! every byte already read) to the hyperium-h2 path as a tokio-style [`PollTlsStream`].
//!
//! Threads: configurations ([`TlsAcceptor`], [`TlsConnector`], [`CertSet`]) are built on any
//! thread (the control thread, typically) and shared by every worker through `Arc`s; streams
//! live and die on the worker thread (one monoio runtime) that made them.

mod certs;
mod client;
mod handshake;
mod poll;
mod rent;
mod server;
mod stream;

use std::sync::{Arc, OnceLock};

use rustls::crypto::CryptoProvider;

pub use certs::{CertError, CertInfo, CertPaths, CertSet};
pub use client::{AcceptAnyServerCert, ClientError, ClientOptions, TlsConnector, server_name};
pub use handshake::HandshakeError;
pub use poll::{IntoPollError, PollTlsStream};
pub use rustls;
pub use server::{ServerError, ServerOptions, TlsAcceptor};
pub use stream::{
    AppProtocol, DEFAULT_READ_BUFFER, SessionInfo, StreamError, TlsReadHalf, TlsStream,
    TlsWriteHalf,
};

#[cfg(not(any(feature = "aws-lc-rs", feature = "ring")))]
compile_error!("fulcrum-tls needs a crypto provider: enable the `aws-lc-rs` or the `ring` feature");

/// The name of the crypto provider this build uses (for logs and the admin API).
pub const PROVIDER: &str = if cfg!(feature = "aws-lc-rs") { "aws-lc-rs" } else { "ring" };

/// The crypto provider every configuration of this crate is built with: the chosen library's
/// defaults (TLS 1.3 AES-GCM and ChaCha20-Poly1305; TLS 1.2 ECDHE with the same AEADs, never
/// CBC), built once per process.
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER.get_or_init(|| Arc::new(modern_only(default_provider()))).clone()
}

#[cfg(feature = "aws-lc-rs")]
fn default_provider() -> CryptoProvider {
    rustls::crypto::aws_lc_rs::default_provider()
}

#[cfg(all(feature = "ring", not(feature = "aws-lc-rs")))]
fn default_provider() -> CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// Keeps only AEAD suites with forward secrecy. rustls implements nothing else today; the filter
/// states the policy so that a future default cannot widen it silently.
fn modern_only(mut provider: CryptoProvider) -> CryptoProvider {
    provider.cipher_suites.retain(|suite| {
        let name = format!("{:?}", suite.suite());
        !name.contains("CBC") && !name.contains("_SHA1") && !name.ends_with("_SHA")
    });
    provider
}

/// The session-ticket encrypter of the chosen provider: a rotator (a new key every 6 hours, the
/// previous one still accepted), one per process so that every worker decrypts every ticket.
fn ticketer() -> Result<Arc<dyn rustls::server::ProducesTickets>, rustls::Error> {
    #[cfg(feature = "aws-lc-rs")]
    return rustls::crypto::aws_lc_rs::Ticketer::new();
    #[cfg(all(feature = "ring", not(feature = "aws-lc-rs")))]
    return rustls::crypto::ring::Ticketer::new();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_provider_offers_only_aead_suites_with_forward_secrecy() {
        let provider = provider();
        assert!(!provider.cipher_suites.is_empty());
        for suite in &provider.cipher_suites {
            let name = format!("{:?}", suite.suite());
            assert!(
                name.starts_with("TLS13_") || name.starts_with("TLS_ECDHE_"),
                "unexpected suite {name}"
            );
            assert!(name.contains("GCM") || name.contains("CHACHA20_POLY1305"), "{name}");
        }
    }
}
