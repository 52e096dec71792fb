//! A loopback TCP proxy in front of etcd that a test can cut (connections reset, new ones
//! reset at once: etcd unreachable), freeze (nothing comes back and nothing goes through, but
//! sockets stay open: a silent, half-dead path), deafen (requests reach etcd, answers are
//! lost) or stall watches (calls go through, watch streams deliver nothing: a client that
//! learns of changes only from its own calls). Every change of mode resets the connections open
//! at that moment. Forwards on a thread
//! of its own (`etcd-proxy`, a current-thread tokio runtime); the handle is used from any thread.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Open,
    Cut,
    Frozen,
    Deaf,
    /// Watch streams (`POST /v3/watch`) are deaf; everything else goes through.
    StallWatches,
    /// The proxy is dropped: the thread ends.
    Stopped,
}

/// The proxy; stops (and resets its connections) on drop.
pub struct Proxy {
    /// Its port on 127.0.0.1.
    pub port: u16,
    mode: watch::Sender<Mode>,
    swallowed: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl Proxy {
    /// Listens on an ephemeral 127.0.0.1 port and forwards to `127.0.0.1:target`.
    pub fn start(target: u16) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let (mode, modes) = watch::channel(Mode::Open);
        let swallowed = Arc::new(AtomicU64::new(0));
        let counter = swallowed.clone();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let thread = std::thread::Builder::new()
            .name("etcd-proxy".into())
            .spawn(move || runtime.block_on(accept(listener, target, modes, counter)))
            .unwrap();
        Self { port, mode, swallowed, thread: Some(thread) }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// etcd unreachable: connections reset.
    pub fn cut(&self) {
        self.mode.send_replace(Mode::Cut);
    }

    /// Silence: client bytes are read and dropped (counted in [`Proxy::swallowed`]), nothing
    /// is sent back, nothing is closed.
    pub fn freeze(&self) {
        self.mode.send_replace(Mode::Frozen);
    }

    /// Requests go through, answers are dropped.
    pub fn deafen(&self) {
        self.mode.send_replace(Mode::Deaf);
    }

    /// Calls go through; watch streams are opened at etcd but deliver nothing.
    pub fn stall_watches(&self) {
        self.mode.send_replace(Mode::StallWatches);
    }

    /// Back to forwarding.
    pub fn open(&self) {
        self.mode.send_replace(Mode::Open);
    }

    /// Client bytes dropped while frozen, so far.
    pub fn swallowed(&self) -> u64 {
        self.swallowed.load(Ordering::Relaxed)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.mode.send_replace(Mode::Stopped);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The accept loop; returns (dropping every connection task with the runtime) once stopped.
async fn accept(
    listener: std::net::TcpListener,
    target: u16,
    mut modes: watch::Receiver<Mode>,
    swallowed: Arc<AtomicU64>,
) {
    let listener = TcpListener::from_std(listener).unwrap();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((client, _)) = accepted else { continue };
                tokio::spawn(serve(client, target, modes.clone(), swallowed.clone()));
            }
            changed = modes.changed() => {
                if changed.is_err() || *modes.borrow_and_update() == Mode::Stopped {
                    return;
                }
            }
        }
    }
}

async fn serve(
    mut client: TcpStream,
    target: u16,
    mut modes: watch::Receiver<Mode>,
    swallowed: Arc<AtomicU64>,
) {
    let mode = *modes.borrow_and_update();
    match mode {
        Mode::Cut | Mode::Stopped => return reset(&client),
        Mode::Frozen => {
            hold(&mut client, &mut modes, &swallowed).await;
            return reset(&client);
        }
        Mode::Open | Mode::Deaf | Mode::StallWatches => {}
    }
    let deaf = match mode {
        Mode::Deaf => true,
        Mode::StallWatches => is_watch(&client).await,
        _ => false,
    };
    let Ok(mut upstream) = TcpStream::connect(("127.0.0.1", target)).await else { return };
    tokio::select! {
        // A mode change wins over bytes that arrived with it: a test that freezes the proxy and
        // then writes must see its bytes held, never forwarded.
        biased;
        _ = modes.changed() => {}
        () = pump(&mut client, &mut upstream, deaf) => return,
    }
    if *modes.borrow_and_update() == Mode::Frozen {
        hold(&mut client, &mut modes, &swallowed).await;
    }
    reset(&client);
    reset(&upstream);
}

/// Whether the connection's first request is a watch (its request line, peeked, not read).
async fn is_watch(client: &TcpStream) -> bool {
    const WATCH: &[u8] = b"POST /v3/watch";
    let mut buf = [0; WATCH.len()];
    match tokio::time::timeout(Duration::from_secs(5), client.peek(&mut buf)).await {
        Ok(Ok(n)) => n > 0 && buf[..n] == WATCH[..n] && n == WATCH.len(),
        _ => false,
    }
}

/// Forwards both ways (answers dropped when `deaf`) until either side closes.
async fn pump(client: &mut TcpStream, upstream: &mut TcpStream, deaf: bool) {
    let (mut client_rx, mut client_tx) = client.split();
    let (mut upstream_rx, mut upstream_tx) = upstream.split();
    let up = tokio::io::copy(&mut client_rx, &mut upstream_tx);
    let down = async {
        let mut buf = vec![0; 16 * 1024];
        loop {
            match upstream_rx.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) if !deaf => {
                    if client_tx.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
                Ok(_) => {}
            }
        }
    };
    tokio::select! {
        _ = up => {}
        () = down => {}
    }
}

/// Reads and drops client bytes until the mode changes.
async fn hold(client: &mut TcpStream, modes: &mut watch::Receiver<Mode>, swallowed: &AtomicU64) {
    let mut buf = vec![0; 16 * 1024];
    loop {
        tokio::select! {
            read = client.read(&mut buf) => match read {
                Ok(0) | Err(_) => {
                    let _ = modes.changed().await;
                    return;
                }
                Ok(n) => {
                    swallowed.fetch_add(n as u64, Ordering::Relaxed);
                }
            },
            _ = modes.changed() => return,
        }
    }
}

/// Makes the coming close send a reset, like a peer that vanished.
fn reset(stream: &TcpStream) {
    let _ = socket2::SockRef::from(stream).set_linger(Some(Duration::ZERO));
}
