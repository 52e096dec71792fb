//! The server side: SNI, ALPN, resumption across worker threads, certificate reload and the
//! configuration policy, against real clients on 127.0.0.1.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::mpsc;

use common::*;
use fulcrum_tls::rustls::pki_types::ServerName;
use fulcrum_tls::rustls::{self, ClientConnection, StreamOwned};
use fulcrum_tls::{
    AppProtocol, CertError, ClientOptions, HandshakeError, ServerOptions, SessionInfo, TlsAcceptor,
    TlsConnector, TlsStream,
};
use monoio::io::{AsyncWriteRent, AsyncWriteRentExt};
use monoio::net::TcpStream;
use sha2::{Digest, Sha256};

fn sha256_hex(der: &[u8]) -> String {
    Sha256::digest(der).iter().map(|b| format!("{b:02x}")).collect()
}

/// Serves `count` connections on a spawned task (handshake, then echo); the task ends when
/// all of them have.
fn serve(acceptor: &TlsAcceptor, count: usize) -> (SocketAddr, monoio::task::JoinHandle<()>) {
    let (listener, addr) = listen();
    let acceptor = acceptor.clone();
    let task = monoio::spawn(async move {
        let mut connections = Vec::new();
        for _ in 0..count {
            let (tcp, _) = listener.accept().await.unwrap();
            let acceptor = acceptor.clone();
            connections.push(monoio::spawn(async move {
                echo(acceptor.accept(tcp, STEP).await.unwrap()).await;
            }));
        }
        for connection in connections {
            connection.await;
        }
    });
    (addr, task)
}

async fn ping(tls: &mut TlsStream<TcpStream>, msg: &[u8]) {
    let (res, _) = tls.write_all(msg.to_vec()).await;
    res.unwrap();
    assert_eq!(read_exact(tls, msg.len()).await, msg);
}

fn leaf_sha(tls: &TlsStream<TcpStream>) -> String {
    sha256_hex(&tls.peer_certificates().unwrap()[0])
}

#[test]
fn sni_picks_exact_then_wildcard_names_case_insensitively_else_the_default() {
    let pki = Pki::new("ca");
    let certs = vec![
        pki.server("default", &["localhost", "127.0.0.1"]),
        pki.server("other", &["other.test"]),
        pki.server("wild", &["*.wild.test"]),
    ];
    let acceptor = TlsAcceptor::new(&ServerOptions::new(certs)).unwrap();
    let inventory = acceptor.inventory();
    let sha = |i: usize| inventory[i].sha256.clone();
    // Verification off: the point is which certificate the server picks, not whether it fits.
    let insecure = ClientOptions { verify: false, ..ClientOptions::default() };
    let connector = TlsConnector::new(&insecure).unwrap();
    on_runtime(async {
        let cases = [
            ("localhost", 0),
            ("OTHER.Test", 1),
            ("a.wild.test", 2),
            ("A.WILD.TEST", 2),
            ("b.a.wild.test", 0), // a wildcard covers one label only
            ("wild.test", 0),
            ("unknown.test", 0),
            ("127.0.0.1", 0), // an IP address: no SNI at all
        ];
        let (addr, server) = serve(&acceptor, cases.len());
        for (name, expected) in cases {
            let mut tls = connect(&connector, addr, name, &[]).await.unwrap();
            assert_eq!(leaf_sha(&tls), sha(expected), "certificate served for {name}");
            ping(&mut tls, b"ok").await;
            tls.shutdown().await.unwrap();
        }
        server.await;
    });
    let set = acceptor.certs();
    assert_eq!(set.chosen_for(Some("other.test.")).sha256, sha(1));
    assert_eq!(set.chosen_for(None).sha256, sha(0));
}

#[test]
fn alpn_outcomes() {
    let pki = Pki::new("ca");
    let cert = pki.server("localhost", &["localhost"]);
    let both = TlsAcceptor::new(&ServerOptions::new(vec![cert.clone()])).unwrap();
    let h1_only = TlsAcceptor::new(&ServerOptions {
        alpn: vec![AppProtocol::Http11],
        ..ServerOptions::new(vec![cert])
    })
    .unwrap();
    on_runtime(async {
        let connector = pki.connector();
        let cases: [(&TlsAcceptor, &[AppProtocol], Option<AppProtocol>); 5] = [
            (&both, &[AppProtocol::H2, AppProtocol::Http11], Some(AppProtocol::H2)),
            (&both, &[AppProtocol::Http11, AppProtocol::H2], Some(AppProtocol::H2)),
            (&both, &[AppProtocol::Http11], Some(AppProtocol::Http11)),
            (&both, &[], None),
            (&h1_only, &[AppProtocol::H2, AppProtocol::Http11], Some(AppProtocol::Http11)),
        ];
        for (acceptor, offer, expected) in cases {
            let (listener, addr) = listen();
            let acceptor = acceptor.clone();
            let server = monoio::spawn(async move {
                let tls = accept_one(&listener, &acceptor).await.unwrap();
                let alpn = tls.info().alpn;
                echo(tls).await;
                alpn
            });
            let mut tls = connect(&connector, addr, "localhost", offer).await.unwrap();
            assert_eq!(tls.info().alpn, expected, "offer {offer:?}");
            ping(&mut tls, b"x").await;
            tls.shutdown().await.unwrap();
            assert_eq!(server.await, expected);
        }

        // No protocol in common: the server refuses with no_application_protocol.
        let (listener, addr) = listen();
        let server = monoio::spawn({
            let acceptor = h1_only.clone();
            async move { accept_one(&listener, &acceptor).await.map(|_| ()) }
        });
        let tcp = TcpStream::connect(addr).await.unwrap();
        let name = fulcrum_tls::server_name("localhost").unwrap();
        let client =
            TlsStream::connect(connector.config().clone(), name, vec![b"h2".to_vec()], tcp, STEP);
        match client.await {
            Err(HandshakeError::Alert(rustls::AlertDescription::NoApplicationProtocol)) => {}
            other => panic!("expected a no_application_protocol alert, got {other:?}"),
        }
        match server.await {
            Err(HandshakeError::Protocol(rustls::Error::NoApplicationProtocol)) => {}
            other => panic!("expected NoApplicationProtocol, got {other:?}"),
        }
    });
}

/// Two "workers": one acceptor shared by two threads, each with its own runtime and listener.
/// A client resumes on the second the session it got from the first (TLS 1.3 and TLS 1.2).
#[test]
fn a_session_resumes_on_another_worker_thread() {
    let pki = Pki::new("ca");
    let acceptor =
        TlsAcceptor::new(&ServerOptions::new(vec![pki.server("localhost", &["localhost"])]))
            .unwrap();
    let workers: Vec<_> = (0..2)
        .map(|_| {
            let acceptor = acceptor.clone();
            let (addr_tx, addr_rx) = mpsc::channel();
            let (info_tx, info_rx) = mpsc::channel::<SessionInfo>();
            let thread = std::thread::spawn(move || {
                on_runtime(async move {
                    let (listener, addr) = listen();
                    addr_tx.send(addr).unwrap();
                    for _ in 0..2 {
                        let tls = accept_one(&listener, &acceptor).await.unwrap();
                        info_tx.send(tls.info().clone()).unwrap();
                        echo(tls).await;
                    }
                })
            });
            (addr_rx.recv_timeout(STEP).unwrap(), info_rx, thread)
        })
        .collect();

    for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
        let config = Arc::new(pki.rustls_client(&[version]));
        on_runtime(async {
            for (i, (addr, infos, _)) in workers.iter().enumerate() {
                let tcp = TcpStream::connect(*addr).await.unwrap();
                let name = fulcrum_tls::server_name("localhost").unwrap();
                let mut tls =
                    TlsStream::connect(config.clone(), name, vec![], tcp, STEP).await.unwrap();
                // Reading the echo also takes in the TLS 1.3 tickets sent after the handshake.
                ping(&mut tls, b"resume?").await;
                tls.shutdown().await.unwrap();
                let server_side = infos.recv_timeout(STEP).unwrap();
                let resumed = i == 1;
                assert_eq!(tls.info().resumed, resumed, "client, worker {i}, {version:?}");
                assert_eq!(server_side.resumed, resumed, "server, worker {i}, {version:?}");
            }
        });
    }
    for (_, _, thread) in workers {
        thread.join().unwrap();
    }
}

/// A reload serves new connections the new certificate; a connection opened before keeps
/// working; a reload with one bad file changes nothing.
#[test]
fn reload_swaps_the_certificate_for_new_connections_only() {
    let pki = Pki::new("ca");
    let first = pki.server("first", &["localhost"]);
    let second = pki.server("second", &["localhost"]);
    let acceptor = TlsAcceptor::new(&ServerOptions::new(vec![first])).unwrap();
    let first_sha = acceptor.inventory()[0].sha256.clone();
    on_runtime(async {
        let connector = pki.connector();
        let (addr, server) = serve(&acceptor, 2);
        let mut old = connect(&connector, addr, "localhost", &[]).await.unwrap();
        assert_eq!(leaf_sha(&old), first_sha);

        acceptor.reload(std::slice::from_ref(&second)).unwrap();
        let second_sha = acceptor.inventory()[0].sha256.clone();
        assert_ne!(second_sha, first_sha);
        let mut new = connect(&connector, addr, "localhost", &[]).await.unwrap();
        assert_eq!(leaf_sha(&new), second_sha);

        ping(&mut old, b"still here").await;
        ping(&mut new, b"new one").await;

        let missing = fulcrum_tls::CertPaths {
            cert: pki.dir.path().join("missing.crt"),
            key: second.key.clone(),
        };
        let err = acceptor.reload(&[second.clone(), missing]).unwrap_err();
        assert!(matches!(err, CertError::Read { .. }), "{err}");
        assert_eq!(acceptor.inventory()[0].sha256, second_sha, "a failed reload changed the set");
        for mut tls in [old, new] {
            tls.shutdown().await.unwrap();
        }
        server.await;
    });
}

#[test]
fn the_configuration_says_no_0rtt_and_offers_h2_then_http11() {
    let pki = Pki::new("ca");
    let acceptor =
        TlsAcceptor::new(&ServerOptions::new(vec![pki.server("localhost", &["localhost"])]))
            .unwrap();
    let config = acceptor.config();
    assert_eq!(config.max_early_data_size, 0);
    assert!(!config.send_half_rtt_data);
    assert!(config.ticketer.enabled());
    assert_eq!(config.alpn_protocols, vec![b"h2".to_vec(), b"http/1.1".to_vec()]);
}

/// A client that would send 0-RTT data gets tickets that do not allow it.
#[test]
fn resumed_clients_cannot_send_early_data() {
    let pki = Pki::new("ca");
    let acceptor =
        TlsAcceptor::new(&ServerOptions::new(vec![pki.server("localhost", &["localhost"])]))
            .unwrap();
    let mut config = pki.rustls_client(&[&rustls::version::TLS13]);
    config.enable_early_data = true;
    let config = Arc::new(config);
    let (addr_tx, addr_rx) = mpsc::channel();
    let client = std::thread::spawn(move || {
        let addr: SocketAddr = addr_rx.recv_timeout(STEP).unwrap();
        for round in 0..2 {
            let tcp = std::net::TcpStream::connect(addr).unwrap();
            tcp.set_read_timeout(Some(STEP)).unwrap();
            let name = ServerName::try_from("localhost").unwrap();
            let mut conn = ClientConnection::new(config.clone(), name).unwrap();
            assert!(conn.early_data().is_none(), "round {round}: 0-RTT offered");
            let mut tls = StreamOwned::new(conn, tcp);
            tls.write_all(b"hi").unwrap();
            let mut buf = [0u8; 2];
            tls.read_exact(&mut buf).unwrap();
            assert!(!tls.conn.is_early_data_accepted());
            if round == 1 {
                assert_eq!(tls.conn.handshake_kind(), Some(rustls::HandshakeKind::Resumed));
            }
            tls.conn.send_close_notify();
            tls.flush().unwrap();
        }
    });
    on_runtime(async {
        let (addr, server) = serve(&acceptor, 2);
        addr_tx.send(addr).unwrap();
        server.await;
    });
    client.join().unwrap();
}
