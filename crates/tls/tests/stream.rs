//! The owned-buffer stream against real peers on 127.0.0.1: our client, rustls's blocking
//! client and Debian's `openssl s_client`, on io_uring and on the legacy epoll driver.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use common::*;
use fulcrum_tls::rustls::{self, ClientConfig, ClientConnection, StreamOwned};
use fulcrum_tls::{AppProtocol, HandshakeError, StreamError};
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};
use monoio::net::TcpStream;

#[test]
fn echo_negotiates_alpn_and_closes_cleanly() {
    let pki = Pki::new("ca");
    let acceptor = pki.acceptor();
    on_both_drivers(async || {
        let connector = pki.connector();
        let (addr, server) = serve_one(&acceptor, |tls| async move {
            assert_eq!(tls.info().alpn, Some(AppProtocol::H2));
            assert_eq!(tls.info().sni.as_deref(), Some("localhost"));
            assert_eq!(tls.info().version, Some(rustls::ProtocolVersion::TLSv1_3));
            echo(tls).await;
        });
        let alpn = [AppProtocol::H2, AppProtocol::Http11];
        let mut tls = connect(&connector, addr, "localhost", &alpn).await.unwrap();
        assert_eq!(tls.info().alpn, Some(AppProtocol::H2));
        assert!(!tls.info().resumed);
        let (res, _) = tls.write_all(b"hello tls".to_vec()).await;
        res.unwrap();
        assert_eq!(read_exact(&mut tls, 9).await, b"hello tls");
        tls.shutdown().await.unwrap();
        // The server answers our close_notify with its own: a clean end of stream, Ok(0).
        assert_eq!(read_to_end(&mut tls).await.unwrap(), b"");
        server.await;
    });
}

/// 16 MiB up and the same 16 MiB echoed down at the same time, through split halves on both
/// sides; the server's halves run in two tasks joined by a small bounded queue, so neither
/// side can buffer the transfer: the directions must flow together.
#[test]
fn split_halves_carry_16_mib_both_ways_at_once() {
    const TOTAL: usize = 16 << 20;
    let pki = Pki::new("ca");
    let acceptor = pki.acceptor();
    on_both_drivers(async || {
        let connector = pki.connector();
        let (addr, server) = serve_one(&acceptor, |tls| async move {
            let (mut r, mut w) = tls.into_split();
            let (tx, rx) = channel::<Vec<u8>>(4);
            let upload = monoio::spawn(async move {
                loop {
                    let (res, buf) = r.read(Vec::with_capacity(32 * 1024)).await;
                    if res.unwrap() == 0 {
                        break;
                    }
                    tx.send(buf).await;
                }
            });
            while let Some(buf) = rx.recv().await {
                let (res, _) = w.write_all(buf).await;
                res.unwrap();
            }
            w.shutdown().await.unwrap();
            upload.await;
        });
        let tls = connect(&connector, addr, "localhost", &[]).await.unwrap();
        let (mut r, mut w) = tls.into_split();
        let send = async move {
            let mut sent = 0;
            while sent < TOTAL {
                let chunk = pattern_chunk(sent, (50_000).min(TOTAL - sent));
                sent += chunk.len();
                let (res, _) = w.write_all(chunk).await;
                res.unwrap();
            }
            w.shutdown().await.unwrap();
        };
        let receive = async move {
            let mut got = 0;
            loop {
                let (res, buf) = r.read(Vec::with_capacity(40_000)).await;
                let n = res.unwrap();
                if n == 0 {
                    break;
                }
                assert!(buf == pattern_chunk(got, n), "corrupt data at offset {got}");
                got += n;
            }
            assert_eq!(got, TOTAL);
        };
        monoio::join!(send, receive);
        server.await;
    });
}

#[test]
fn eof_without_close_notify_is_an_error_distinct_from_a_clean_close() {
    let pki = Pki::new("ca");
    let acceptor = pki.acceptor();
    on_both_drivers(async || {
        let connector = pki.connector();
        let (addr, server) = serve_one(&acceptor, |mut tls| async move {
            assert_eq!(read_exact(&mut tls, 3).await, b"abc");
            let err = read_to_end(&mut tls).await.unwrap_err();
            assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof);
            assert!(matches!(StreamError::of(&err), Some(StreamError::Truncated)), "{err}");
        });
        let mut tls = connect(&connector, addr, "localhost", &[]).await.unwrap();
        let (res, _) = tls.write_all(b"abc".to_vec()).await;
        res.unwrap();
        drop(tls); // TCP close, no close_notify
        server.await;
    });
}

/// Reads abandoned in two ways, hundreds of times, while chunks that end mid-record arrive:
/// by a timeout while nothing has arrived (on io_uring the receive stays armed in the kernel),
/// and by a `select!` whose other branch fires just as the data lands (the way the HTTP/1.1
/// path drops a direction). A plain monoio `TcpStream` read the same way loses bytes on
/// io_uring (its completed receive is dropped with the future); here every byte must arrive
/// once, in order.
#[test]
fn cancelled_reads_lose_nothing() {
    const ROUNDS: usize = 300;
    let pki = Pki::new("ca");
    let acceptor = pki.acceptor();
    on_both_drivers(async || {
        let connector = pki.connector();
        let (listener, addr) = listen();
        let (go, wait) = channel::<usize>(1);
        let (sent_tx, sent_rx) = channel::<()>(1);
        let client = monoio::spawn(async move {
            let mut tls = connect(&connector, addr, "localhost", &[]).await.unwrap();
            let mut sent = 0;
            // Each round: the size the server asks for, then word that it is on the socket.
            while let Some(len) = wait.recv().await {
                let (res, _) = tls.write_all(pattern_chunk(sent, len)).await;
                res.unwrap();
                sent += len;
                sent_tx.send(()).await;
            }
            tls.shutdown().await.unwrap();
            read_to_end(&mut tls).await.unwrap();
        });
        let mut tls = accept_one(&listener, &acceptor).await.unwrap();
        let (mut got, mut want) = (0usize, 0usize);
        let check = |got: &mut usize, n: usize, buf: &[u8]| {
            assert!(n > 0, "early end of stream");
            assert!(buf == pattern_chunk(*got, n), "corrupt data at offset {got}");
            *got += n;
        };
        for round in 0..ROUNDS {
            // Nothing is coming: this read is always cut short.
            let idle = monoio::time::timeout(Duration::from_millis(1), tls.read(vec![0; 100]));
            assert!(idle.await.is_err(), "round {round}: a read completed with nothing sent");
            let len = 1 + round * 997 % 40_000;
            want += len;
            go.send(len).await;
            let mut told = false;
            while !told {
                monoio::select! {
                    biased;
                    _ = sent_rx.recv() => told = true,
                    (res, buf) = tls.read(Vec::with_capacity(3000)) => check(&mut got, res.unwrap(), &buf),
                }
            }
            while got < want {
                let (res, buf) = tls.read(Vec::with_capacity(3000)).await;
                check(&mut got, res.unwrap(), &buf);
            }
            assert_eq!(got, want, "round {round}: more bytes than were sent");
        }
        drop(go);
        assert_eq!(read_to_end(&mut tls).await.unwrap(), b"");
        tls.shutdown().await.unwrap();
        client.await;
    });
}

/// Writes cut short by a timeout while the peer does not read (the socket is full, a write
/// is in flight) never leave a torn record: once the peer reads, it decrypts everything up to
/// our close_notify.
#[test]
fn writes_cancelled_by_timeouts_never_tear_a_record() {
    let pki = Pki::new("ca");
    let acceptor = pki.acceptor();
    on_both_drivers(async || {
        let connector = pki.connector();
        let (listener, addr) = listen();
        let (go, wait) = channel::<()>(1);
        let client = monoio::spawn(async move {
            let mut tls = connect(&connector, addr, "localhost", &[]).await.unwrap();
            // Not reading yet: the server's writes soon find the socket full.
            wait.recv().await;
            let received = read_to_end(&mut tls).await.expect("the stream stays decryptable");
            assert!(received.ends_with(b"END"));
        });
        let mut tls = accept_one(&listener, &acceptor).await.unwrap();
        let chunk = vec![7u8; 100_000];
        let mut cancelled = 0;
        while cancelled < 20 {
            let write = tls.write_all(chunk.clone());
            if monoio::time::timeout(Duration::from_millis(1), write).await.is_err() {
                cancelled += 1;
            }
        }
        go.send(()).await;
        let (res, _) = tls.write_all(b"END".to_vec()).await;
        res.unwrap();
        tls.shutdown().await.unwrap();
        client.await;
    });
}

/// rustls's blocking client (an independent peer) asks for a TLS 1.3 KeyUpdate between
/// exchanges: our read half answers with its own KeyUpdate, which must reach the client before
/// the next reply written by the write half, or the client could not decrypt that reply.
#[test]
fn key_updates_from_the_peer_are_answered_in_order() {
    let pki = Pki::new("ca");
    let acceptor = pki.acceptor();
    let config = Arc::new(pki.rustls_client(rustls::DEFAULT_VERSIONS));
    on_both_drivers(async || {
        let (listener, addr) = listen();
        let config = config.clone();
        let client = std::thread::spawn(move || {
            let mut tls = blocking_connect(config, addr, "localhost");
            let mut reply = [0u8; 5];
            for round in 0..5u8 {
                tls.write_all(&[b'p', b'i', b'n', b'g', round]).unwrap();
                tls.read_exact(&mut reply).unwrap();
                assert_eq!(reply, [b'p', b'o', b'n', b'g', round]);
                tls.conn.refresh_traffic_keys().unwrap();
            }
            tls.conn.send_close_notify();
            tls.flush().unwrap();
        });
        let (mut r, mut w) = accept_one(&listener, &acceptor).await.unwrap().into_split();
        for round in 0..5u8 {
            let ping = read_exact(&mut r, 5).await;
            assert_eq!(ping, [b'p', b'i', b'n', b'g', round]);
            let (res, _) = w.write_all(vec![b'p', b'o', b'n', b'g', round]).await;
            res.unwrap();
        }
        assert_eq!(read_to_end(&mut r).await.unwrap(), b"");
        // The client's last act was the close_notify just read.
        client.join().unwrap();
    });
}

#[test]
fn a_client_that_never_sends_a_client_hello_times_out() {
    let pki = Pki::new("ca");
    let acceptor = pki.acceptor();
    on_both_drivers(async || {
        let (listener, addr) = listen();
        let _silent = TcpStream::connect(addr).await.unwrap();
        let (tcp, _) = listener.accept().await.unwrap();
        let deadline = Duration::from_millis(200);
        match acceptor.accept(tcp, deadline).await {
            Err(HandshakeError::Timeout(d)) => assert_eq!(d, deadline),
            other => panic!("expected a timeout, got {other:?}"),
        }
    });
}

#[test]
fn plain_http_on_the_tls_port_is_a_protocol_error_answered_with_an_alert() {
    let pki = Pki::new("ca");
    let acceptor = pki.acceptor();
    on_both_drivers(async || {
        let (listener, addr) = listen();
        let mut plain = TcpStream::connect(addr).await.unwrap();
        let (res, _) = plain.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()).await;
        res.unwrap();
        let (tcp, _) = listener.accept().await.unwrap();
        match acceptor.accept(tcp, STEP).await {
            Err(HandshakeError::Protocol(e)) => eprintln!("refused: {e}"),
            other => panic!("expected a protocol error, got {other:?}"),
        }
        let (res, alert) = plain.read(Vec::with_capacity(64)).await;
        assert!(res.unwrap() > 0);
        assert_eq!(alert[0], 0x15, "a TLS alert record");
    });
}

/// Debian's OpenSSL as the client: TLS 1.3 with ALPN, TLS 1.2 with ChaCha20, and the refusals
/// (a CBC suite, TLS 1.1) that the policy promises.
#[test]
fn openssl_s_client_sees_the_promised_versions_suites_and_alpn() {
    let pki = Pki::new("ca");
    let acceptor = pki.acceptor();
    let (addr_tx, addr_rx) = mpsc::channel();
    let (result_tx, result_rx) = mpsc::channel();
    let server = std::thread::spawn(move || {
        on_runtime(async move {
            let (listener, addr) = listen();
            addr_tx.send(addr).unwrap();
            for _ in 0..4 {
                let tls = accept_one(&listener, &acceptor).await;
                let _ = result_tx
                    .send(tls.as_ref().map(|t| t.info().clone()).map_err(|e| e.to_string()));
                if let Ok(mut tls) = tls {
                    let _ = tls.shutdown().await;
                }
            }
        })
    });
    let addr = addr_rx.recv_timeout(STEP).unwrap();
    let s_client = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(["s_client", "-connect", &addr.to_string(), "-servername", "localhost"])
            .arg("-CAfile")
            .arg(&pki.ca_file)
            .args(["-verify_return_error", "-verify_hostname", "localhost"])
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .expect("openssl (Debian package `openssl`) must be installed");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        (out.status.success(), text)
    };

    let (ok, text) = s_client(&["-tls1_3", "-alpn", "h2"]);
    assert!(ok && text.contains("ALPN protocol: h2"), "{text}");
    let info = result_rx.recv_timeout(STEP).unwrap().unwrap();
    assert_eq!(info.alpn, Some(AppProtocol::H2));

    let (ok, text) = s_client(&["-tls1_2", "-cipher", "ECDHE-ECDSA-CHACHA20-POLY1305"]);
    assert!(ok && text.contains("ECDHE-ECDSA-CHACHA20-POLY1305"), "{text}");
    let info = result_rx.recv_timeout(STEP).unwrap().unwrap();
    assert_eq!(info.version, Some(rustls::ProtocolVersion::TLSv1_2));
    assert_eq!(info.alpn, None);

    let (ok, text) = s_client(&["-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-SHA"]);
    assert!(!ok, "a CBC suite was accepted: {text}");
    result_rx.recv_timeout(STEP).unwrap().unwrap_err();

    let (ok, text) = s_client(&["-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0"]);
    assert!(!ok, "TLS 1.1 was accepted: {text}");
    result_rx.recv_timeout(STEP).unwrap().unwrap_err();
    server.join().unwrap();
}

fn blocking_connect(
    config: Arc<ClientConfig>,
    addr: std::net::SocketAddr,
    name: &str,
) -> StreamOwned<ClientConnection, std::net::TcpStream> {
    let tcp = std::net::TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(STEP)).unwrap();
    let name = rustls::pki_types::ServerName::try_from(name.to_owned()).unwrap();
    StreamOwned::new(ClientConnection::new(config, name).unwrap(), tcp)
}
