//! A WebSocket echo server, the backend of `bench.sh ws`:
//! `cargo run --release --example ws_echo -- 127.0.0.1:39101 [ADDR...]`. Echoes every text
//! and binary message on every address (blocking `tungstenite`, one thread per connection)
//! until killed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{SocketAddr, TcpListener, TcpStream};

use tungstenite::Message;

fn main() {
    let addrs: Vec<SocketAddr> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("usage: ws_echo ADDR [ADDR...]"))
        .collect();
    assert!(!addrs.is_empty(), "usage: ws_echo ADDR [ADDR...]");
    let listeners: Vec<_> = addrs.iter().map(|a| TcpListener::bind(a).expect("bind")).collect();
    let threads: Vec<_> = listeners
        .into_iter()
        .map(|l| {
            std::thread::spawn(move || {
                for conn in l.incoming().flatten() {
                    std::thread::Builder::new()
                        .stack_size(256 * 1024)
                        .spawn(move || echo(conn))
                        .expect("spawn");
                }
            })
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
}

/// Echoes one connection's messages until it closes.
fn echo(conn: TcpStream) {
    let _ = conn.set_nodelay(true);
    let Ok(mut ws) = tungstenite::accept(conn) else { return };
    loop {
        match ws.read() {
            Ok(msg @ (Message::Text(_) | Message::Binary(_))) => {
                if ws.send(msg).is_err() {
                    return;
                }
            }
            Ok(_) => {
                if ws.flush().is_err() {
                    return;
                }
            }
            Err(_) => return,
        }
    }
}
