//! WebSocket peers for the tunnel tests: a real WebSocket server backend ([`WsBackend`],
//! `tungstenite` on blocking sockets, one thread per connection; put a [`super::tls::TlsFront`]
//! before it for an `https://` backend) and clients over cleartext and TLS ([`ws_connect`],
//! [`ws_connect_tls`]).
//!
//! The backend echoes every text and binary message and answers three text commands: `who`
//! (its name), `close` (it starts the closing handshake) and `headers` (the request's header
//! fields, one `name: value` per line, as it received them).

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::{ClientConfig, ClientConnection, StreamOwned};
use tungstenite::handshake::server::{Request, Response};
use tungstenite::protocol::WebSocketConfig;
use tungstenite::protocol::frame::CloseFrame;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::{Message, WebSocket};

use super::tls::server_name;

/// A byte stream a WebSocket runs over in these tests.
pub trait Io: Read + Write + Send + 'static {}
impl<T: Read + Write + Send + 'static> Io for T {}

/// Frames as large as the 16 MiB test needs, on both ends.
pub fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default().max_message_size(Some(64 << 20)).max_frame_size(Some(32 << 20))
}

/// A WebSocket client to `path` through the balancer at `addr` (cleartext); the handshake's
/// response with it.
pub fn ws_connect(
    addr: SocketAddr,
    path: &str,
) -> Result<WebSocket<Box<dyn Io>>, tungstenite::Error> {
    let stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let _ = stream.set_nodelay(true);
    handshake(Box::new(stream), &format!("ws://{addr}{path}"))
}

/// A WebSocket client to `path` through the balancer's TLS listener at `addr`, trusting what
/// `config` trusts, asking for `name` (SNI).
pub fn ws_connect_tls(
    addr: SocketAddr,
    path: &str,
    config: &Arc<ClientConfig>,
    name: &str,
) -> Result<WebSocket<Box<dyn Io>>, tungstenite::Error> {
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let conn = ClientConnection::new(config.clone(), server_name(name)).unwrap();
    let url = format!("wss://{name}:{}{path}", addr.port());
    handshake(Box::new(StreamOwned::new(conn, tcp)), &url)
}

fn handshake(stream: Box<dyn Io>, url: &str) -> Result<WebSocket<Box<dyn Io>>, tungstenite::Error> {
    match tungstenite::client::client_with_config(url, stream, Some(ws_config())) {
        Ok((ws, _response)) => Ok(ws),
        Err(tungstenite::HandshakeError::Failure(e)) => Err(e),
        Err(tungstenite::HandshakeError::Interrupted(_)) => {
            panic!("blocking handshake interrupted")
        }
    }
}

/// A WebSocket echo server (see the module documentation).
pub struct WsBackend {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
    open: Arc<AtomicUsize>,
}

impl WsBackend {
    /// A backend answering `who` with `name`.
    pub fn start(name: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let conns = Arc::new(Mutex::new(Vec::new()));
        let open = Arc::new(AtomicUsize::new(0));
        let (s, c, o, n) = (stop.clone(), conns.clone(), open.clone(), name);
        let name = n.to_owned();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.load(SeqCst) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                let _ = conn.set_nodelay(true);
                c.lock().unwrap().push(conn.try_clone().unwrap());
                let (name, open) = (name.clone(), o.clone());
                std::thread::Builder::new()
                    .stack_size(128 * 1024)
                    .spawn(move || {
                        open.fetch_add(1, SeqCst);
                        let closer = conn.try_clone().unwrap();
                        serve(Box::new(conn), &name);
                        // The clone kept for `kill` would hold the socket open: close it here.
                        let _ = closer.shutdown(Shutdown::Both);
                        open.fetch_sub(1, SeqCst);
                    })
                    .unwrap();
            }
        });
        Self { addr, stop, conns, open }
    }

    /// Its `http://` URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// WebSocket connections being served now.
    pub fn open(&self) -> usize {
        self.open.load(SeqCst)
    }

    /// Dies: stops accepting and cuts every connection at once (as a killed process would).
    pub fn kill(&self) {
        self.stop.store(true, SeqCst);
        let _ = TcpStream::connect(self.addr);
        for c in self.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
    }
}

impl Drop for WsBackend {
    fn drop(&mut self) {
        self.kill();
    }
}

impl super::process::BackendUrl for &WsBackend {
    fn backend_url(&self) -> String {
        self.url()
    }
}

/// Serves one WebSocket connection until it closes.
#[allow(clippy::result_large_err)] // the handshake callback's type is tungstenite's
fn serve(stream: Box<dyn Io>, name: &str) {
    let headers = Arc::new(Mutex::new(String::new()));
    let seen = headers.clone();
    let record = move |req: &Request, res: Response| {
        let mut text = seen.lock().unwrap();
        for (n, v) in req.headers() {
            text.push_str(&format!("{}: {}\n", n, v.to_str().unwrap_or("?")));
        }
        Ok(res)
    };
    let Ok(mut ws) = tungstenite::accept_hdr_with_config(stream, record, Some(ws_config())) else {
        return;
    };
    loop {
        let msg = match ws.read() {
            Ok(m) => m,
            Err(_) => return,
        };
        let reply = match msg {
            Message::Text(t) if t.as_str() == "who" => Message::text(name),
            Message::Text(t) if t.as_str() == "headers" => {
                Message::text(headers.lock().unwrap().clone())
            }
            Message::Text(t) if t.as_str() == "close" => {
                let frame = CloseFrame { code: CloseCode::Normal, reason: "bye".into() };
                let _ = ws.close(Some(frame));
                continue;
            }
            Message::Text(_) | Message::Binary(_) => msg,
            // Pongs are queued by tungstenite; flush them now, before blocking in read again.
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {
                let _ = ws.flush();
                continue;
            }
            Message::Close(_) => {
                let _ = ws.flush();
                continue;
            }
        };
        if ws.send(reply).is_err() {
            return;
        }
    }
}
