//! The client side (Fulcrum to backends): verification outcomes with their reasons, mTLS,
//! resumption, and configuration errors.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::sync::Arc;

use common::*;
use fulcrum_tls::rustls::pki_types::pem::PemObject;
use fulcrum_tls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use fulcrum_tls::rustls::server::WebPkiClientVerifier;
use fulcrum_tls::rustls::{
    self, AlertDescription, CertificateError, RootCertStore, ServerConfig, SupportedProtocolVersion,
};
use fulcrum_tls::{
    CertError, CertPaths, ClientError, ClientOptions, HandshakeError, StreamError, TlsConnector,
    TlsStream,
};
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};

/// Accepts connections with `config` until the listener's task is dropped; each successful
/// handshake is echoed, each failure sent to the returned channel.
fn serve_with(config: Arc<ServerConfig>) -> (SocketAddr, Receiver<Result<(), HandshakeError>>) {
    let (listener, addr) = listen();
    let (tx, rx) = channel(16);
    monoio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            match TlsStream::accept(config.clone(), tcp, STEP).await {
                Ok(tls) => {
                    tx.send(Ok(())).await;
                    monoio::spawn(async move {
                        let mut tls = tls;
                        // Echo until the client goes, however it goes.
                        loop {
                            let (res, buf) = tls.read(Vec::with_capacity(1024)).await;
                            match res {
                                Ok(n) if n > 0 => {
                                    let _ = tls.write_all(buf).await;
                                }
                                _ => break,
                            }
                        }
                        let _ = tls.shutdown().await;
                    });
                }
                Err(e) => tx.send(Err(e)).await,
            }
        }
    });
    (addr, rx)
}

fn acceptor_config(pki: &Pki) -> Arc<ServerConfig> {
    pki.acceptor().config().clone()
}

async fn ping(tls: &mut TlsStream<monoio::net::TcpStream>) {
    let (res, _) = tls.write_all(b"ping".to_vec()).await;
    res.unwrap();
    assert_eq!(read_exact(tls, 4).await, b"ping");
}

fn certificate_error(
    result: Result<TlsStream<monoio::net::TcpStream>, HandshakeError>,
) -> CertificateError {
    match result {
        Err(HandshakeError::Certificate(reason)) => reason,
        other => panic!("expected a certificate verification failure, got {other:?}"),
    }
}

#[test]
fn backends_are_verified_by_name_and_ca_and_failures_say_why() {
    let pki = Pki::new("ca");
    let other_ca = Pki::new("other ca");
    let config = acceptor_config(&pki);
    on_runtime(async {
        let (addr, results) = serve_with(config);
        let trusted = pki.connector();

        for name in ["localhost", "127.0.0.1"] {
            let mut tls = connect(&trusted, addr, name, &[]).await.unwrap();
            ping(&mut tls).await;
            tls.shutdown().await.unwrap();
            results.recv().await.unwrap().unwrap();
        }

        let err = certificate_error(connect(&trusted, addr, "wrong.test", &[]).await);
        assert!(
            matches!(
                err,
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. }
            ),
            "{err:?}"
        );
        let text = HandshakeError::Certificate(err).to_string();
        assert!(text.contains("wrong.test"), "the reason names the host: {text}");
        // The server sees our refusal as an alert.
        assert!(matches!(results.recv().await.unwrap(), Err(HandshakeError::Alert(_))));

        let err = certificate_error(connect(&other_ca.connector(), addr, "localhost", &[]).await);
        assert_eq!(err, CertificateError::UnknownIssuer);
        results.recv().await.unwrap().unwrap_err();

        // The system trust store does not know the test CA either.
        let system = TlsConnector::new(&ClientOptions::default()).unwrap();
        let err = certificate_error(connect(&system, addr, "localhost", &[]).await);
        assert_eq!(err, CertificateError::UnknownIssuer);
        results.recv().await.unwrap().unwrap_err();

        // verify = false: an unknown CA and a wrong name are accepted.
        let insecure = ClientOptions { verify: false, ..other_ca.client_options() };
        let insecure = TlsConnector::new(&insecure).unwrap();
        let mut tls = connect(&insecure, addr, "wrong.test", &[]).await.unwrap();
        ping(&mut tls).await;
        tls.shutdown().await.unwrap();
        results.recv().await.unwrap().unwrap();
    });
}

#[test]
fn an_expired_backend_certificate_is_refused() {
    let pki = Pki::new("ca");
    // Fulcrum's own loader refuses expired certificates, so the backend uses rustls directly.
    let expired = pki.cert(
        "expired",
        &["localhost"],
        Spec { not_before: (2000, 1, 1), not_after: (2001, 1, 1), ..Spec::default() },
    );
    let config = server_config(&expired, None, &rustls::version::TLS13);
    on_runtime(async {
        let (addr, _results) = serve_with(config);
        let err = certificate_error(connect(&pki.connector(), addr, "localhost", &[]).await);
        assert!(
            matches!(err, CertificateError::Expired | CertificateError::ExpiredContext { .. }),
            "{err:?}"
        );
    });
}

/// A backend that requires client certificates from our CA: accepted with one, refused
/// without (TLS 1.3 reports the refusal on the first read, TLS 1.2 during the handshake) or
/// with one from another CA.
#[test]
fn mtls_client_certificates_are_presented_and_refusals_surface() {
    let pki = Pki::new("ca");
    let server_cert = pki.server("backend", &["localhost"]);
    let client_cert = pki.client("client");
    let other_ca = Pki::new("other ca");
    let stranger = other_ca.client("stranger");
    for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
        let config = server_config(&server_cert, Some(&pki.ca_file), version);
        on_runtime(async {
            let (addr, results) = serve_with(config);

            let with_cert =
                ClientOptions { client_cert: Some(client_cert.clone()), ..pki.client_options() };
            let connector = TlsConnector::new(&with_cert).unwrap();
            let mut tls = connect(&connector, addr, "localhost", &[]).await.unwrap();
            ping(&mut tls).await;
            tls.shutdown().await.unwrap();
            results.recv().await.unwrap().unwrap();

            for (label, options) in [
                ("no certificate", pki.client_options()),
                (
                    "unknown CA",
                    ClientOptions { client_cert: Some(stranger.clone()), ..pki.client_options() },
                ),
            ] {
                let connector = TlsConnector::new(&options).unwrap();
                let alert = match connect(&connector, addr, "localhost", &[]).await {
                    Err(HandshakeError::Alert(alert)) => alert,
                    Ok(mut tls) => {
                        assert_eq!(version, &rustls::version::TLS13, "{label}");
                        let (res, _) = tls.read(Vec::with_capacity(16)).await;
                        let err = res.unwrap_err();
                        match StreamError::of(&err) {
                            Some(StreamError::Tls(rustls::Error::AlertReceived(alert))) => *alert,
                            other => panic!("{label}: expected an alert, got {other:?}"),
                        }
                    }
                    Err(other) => panic!("{label}: expected an alert, got {other:?}"),
                };
                assert!(
                    matches!(
                        alert,
                        AlertDescription::CertificateRequired
                            | AlertDescription::UnknownCA
                            | AlertDescription::BadCertificate
                            | AlertDescription::HandshakeFailure
                    ),
                    "{label}: {alert:?}"
                );
                let server_side = results.recv().await.unwrap().unwrap_err();
                eprintln!("{version:?} {label}: client saw {alert:?}, server: {server_side}");
            }
        });
    }
}

#[test]
fn backend_sessions_are_resumed_from_the_client_cache() {
    let pki = Pki::new("ca");
    let config = acceptor_config(&pki);
    on_runtime(async {
        let (addr, results) = serve_with(config);
        let connector = pki.connector();
        for round in 0..3 {
            let mut tls = connect(&connector, addr, "localhost", &[]).await.unwrap();
            ping(&mut tls).await; // takes in the TLS 1.3 tickets too
            assert_eq!(tls.info().resumed, round > 0, "round {round}");
            tls.shutdown().await.unwrap();
            results.recv().await.unwrap().unwrap();
        }
    });
}

#[test]
fn client_configuration_errors_name_their_cause() {
    let pki = Pki::new("ca");
    assert!(matches!(
        fulcrum_tls::server_name("not a host name"),
        Err(ClientError::InvalidServerName(_))
    ));
    fulcrum_tls::server_name("10.1.2.3").unwrap();

    let missing = pki.dir.path().join("no-such-ca.pem");
    let options = ClientOptions { ca_file: Some(missing.clone()), ..ClientOptions::default() };
    let err = TlsConnector::new(&options).unwrap_err();
    assert!(matches!(err, ClientError::CaFile(CertError::Read { .. })), "{err}");
    assert!(err.to_string().contains(&*missing.to_string_lossy()), "{err}");

    let empty = pki.file("empty-ca.pem", "");
    let options = ClientOptions { ca_file: Some(empty), ..ClientOptions::default() };
    let err = TlsConnector::new(&options).unwrap_err();
    assert!(matches!(err, ClientError::CaFile(CertError::NoCertificate { .. })), "{err}");

    let a = pki.client("a");
    let b = pki.client("b");
    let swapped = CertPaths { cert: a.cert, key: b.key };
    let options = ClientOptions { client_cert: Some(swapped), ..pki.client_options() };
    let err = TlsConnector::new(&options).unwrap_err();
    assert!(matches!(err, ClientError::ClientCert(CertError::KeyMismatch { .. })), "{err}");
}

/// A plain rustls server configuration (no Fulcrum policy), optionally requiring client
/// certificates signed by `client_ca`.
fn server_config(
    cert: &CertPaths,
    client_ca: Option<&std::path::Path>,
    version: &'static SupportedProtocolVersion,
) -> Arc<ServerConfig> {
    let provider = fulcrum_tls::provider();
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(&cert.cert).unwrap().map(Result::unwrap).collect();
    let key = PrivateKeyDer::from_pem_file(&cert.key).unwrap();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[version])
        .unwrap();
    let builder = match client_ca {
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(ca).unwrap() {
                roots.add(cert.unwrap()).unwrap();
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .unwrap();
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    Arc::new(builder.with_single_cert(chain, key).unwrap())
}
