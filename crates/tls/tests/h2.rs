//! The hand-over to the hyperium-h2 path: handshake on the owned-buffer stream, ALPN `h2`,
//! then `into_poll_io` and hyperium `h2` on both ends, on io_uring and on epoll.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::sync::Arc;

use bytes::Bytes;
use common::*;
use fulcrum_tls::AppProtocol;
use fulcrum_tls::rustls::pki_types::ServerName;
use fulcrum_tls::rustls::{ClientConnection, StreamOwned};
use http::{HeaderMap, HeaderValue, Request, Response};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BODY: usize = 1 << 20;

/// Reads a whole h2 body, giving flow-control capacity back as it goes.
async fn read_body(body: &mut h2::RecvStream) -> Vec<u8> {
    let mut data = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.unwrap();
        body.flow_control().release_capacity(chunk.len()).unwrap();
        data.extend_from_slice(&chunk);
    }
    data
}

/// Three concurrent requests with 1 MiB bodies, echoed with a trailer, over TLS.
#[test]
fn hyperium_h2_client_and_server_run_over_the_poll_io_conversion() {
    let pki = Pki::new("ca");
    let acceptor = pki.acceptor();
    on_both_drivers(async || {
        let connector = pki.connector();
        let (addr, server) = serve_one(&acceptor, |tls| async move {
            assert_eq!(tls.info().alpn, Some(AppProtocol::H2));
            let mut conn = h2::server::handshake(tls.into_poll_io().unwrap()).await.unwrap();
            let mut served = 0;
            while let Some(request) = conn.accept().await {
                let (request, mut respond) = request.unwrap();
                served += 1;
                monoio::spawn(async move {
                    let body = read_body(&mut request.into_body()).await;
                    let head = Response::builder().status(200).body(()).unwrap();
                    let mut send = respond.send_response(head, false).unwrap();
                    let len = body.len();
                    send.send_data(Bytes::from(body), false).unwrap();
                    let mut trailers = HeaderMap::new();
                    trailers.insert("x-length", HeaderValue::from(len));
                    send.send_trailers(trailers).unwrap();
                });
            }
            served
        });

        let tls = connect(&connector, addr, "localhost", &[AppProtocol::H2]).await.unwrap();
        assert_eq!(tls.info().alpn, Some(AppProtocol::H2));
        let (client, conn) = h2::client::handshake(tls.into_poll_io().unwrap()).await.unwrap();
        let driver = monoio::spawn(async move { conn.await.unwrap() });
        let calls = (0..3).map(|i| {
            let mut client = client.clone();
            async move {
                let body = pattern_chunk(i * 7, BODY);
                client = client.ready().await.unwrap();
                let request = Request::post("https://localhost/echo").body(()).unwrap();
                let (response, mut send) = client.send_request(request, false).unwrap();
                send.send_data(Bytes::from(body.clone()), true).unwrap();
                let response = response.await.unwrap();
                assert_eq!(response.status(), 200);
                let mut received = response.into_body();
                let echoed = read_body(&mut received).await;
                assert!(echoed == body, "call {i}: the echo differs");
                let trailers = received.trailers().await.unwrap().unwrap();
                assert_eq!(trailers["x-length"], BODY.to_string().as_str());
            }
        });
        let (a, b, c) = {
            let mut calls = calls.collect::<Vec<_>>().into_iter();
            (calls.next().unwrap(), calls.next().unwrap(), calls.next().unwrap())
        };
        monoio::join!(a, b, c);
        drop(client);
        driver.await;
        assert_eq!(server.await, 3);
    });
}

/// A client that sends application data right behind its Finished (one TCP write): the server
/// handshake reads it along, partly processed by rustls, partly not; the poll-io stream must
/// deliver all of it.
#[test]
fn bytes_read_with_the_handshake_reach_the_poll_io_stream() {
    const EARLY: usize = 40_000;
    let pki = Pki::new("ca");
    let acceptor = pki.acceptor();
    let config = Arc::new(pki.rustls_client(rustls::DEFAULT_VERSIONS));
    on_both_drivers(async || {
        let (listener, addr) = listen();
        let config = config.clone();
        let client = std::thread::spawn(move || {
            let tcp = std::net::TcpStream::connect(addr).unwrap();
            tcp.set_read_timeout(Some(STEP)).unwrap();
            let name = ServerName::try_from("localhost").unwrap();
            let mut conn = ClientConnection::new(config, name).unwrap();
            // Buffered by rustls until the handshake is done, then sent with the Finished.
            conn.writer().write_all(&pattern_chunk(0, EARLY)).unwrap();
            let mut tls = StreamOwned::new(conn, tcp);
            let mut echoed = vec![0u8; EARLY];
            tls.read_exact(&mut echoed).unwrap();
            assert!(echoed == pattern_chunk(0, EARLY));
            tls.conn.send_close_notify();
            tls.flush().unwrap();
        });
        let tls = accept_one(&listener, &acceptor).await.unwrap();
        let mut io = tls.into_poll_io().unwrap();
        let mut early = vec![0u8; EARLY];
        io.read_exact(&mut early).await.unwrap();
        assert!(early == pattern_chunk(0, EARLY), "bytes lost or reordered in the hand-over");
        io.write_all(&early).await.unwrap();
        io.flush().await.unwrap();
        let mut rest = Vec::new();
        io.read_to_end(&mut rest).await.unwrap(); // the client's close_notify: a clean end
        assert!(rest.is_empty());
        io.shutdown().await.unwrap();
        client.join().unwrap();
    });
}
