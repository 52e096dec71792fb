//! A small h2c gRPC echo server (the tests' `echo.Echo` service), used as the backend of
//! `bench.sh grpc`: `cargo run --release --example grpc_echo -- 127.0.0.1:50051 [ADDR...]`.
//! Serves every address on one current-thread runtime until killed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/it/harness/echo.rs"]
mod echo;

use std::net::SocketAddr;
use std::sync::Arc;

fn main() {
    let addrs: Vec<SocketAddr> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("usage: grpc_echo ADDR [ADDR...]"))
        .collect();
    assert!(!addrs.is_empty(), "usage: grpc_echo ADDR [ADDR...]");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async move {
        let mut servers = Vec::new();
        for (i, addr) in addrs.into_iter().enumerate() {
            let listener = tokio::net::TcpListener::from_std(echo::bind(addr)).unwrap();
            let state =
                Arc::new(echo::EchoState { name: format!("b{}", i + 1), ..Default::default() });
            servers.push(tokio::spawn(echo::serve(listener, state)));
        }
        for s in servers {
            let _ = s.await;
        }
    });
}
