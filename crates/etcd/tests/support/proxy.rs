//! A loopback TCP proxy in front of etcd that a test can cut (connections reset, new ones
//! closed at once: etcd unreachable) or freeze (bytes stop flowing both ways but sockets stay
//! open: a silent, half-dead path). Runs as tasks on the test's runtime.

use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Open,
    Cut,
    Frozen,
}

/// The proxy; stops on drop.
pub struct Proxy {
    pub port: u16,
    mode: watch::Sender<Mode>,
    task: JoinHandle<()>,
}

impl Proxy {
    /// Listens on an ephemeral 127.0.0.1 port and forwards to `127.0.0.1:target`.
    pub async fn start(target: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (mode, modes) = watch::channel(Mode::Open);
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else { continue };
                tokio::spawn(serve(client, target, modes.clone()));
            }
        });
        Self { port, mode, task }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Resets every connection and closes new ones at once.
    pub fn cut(&self) {
        self.mode.send_replace(Mode::Cut);
    }

    /// Stops all traffic without closing anything.
    pub fn freeze(&self) {
        self.mode.send_replace(Mode::Frozen);
    }

    /// Back to forwarding (frozen connections are closed, new ones forwarded).
    pub fn open(&self) {
        self.mode.send_replace(Mode::Open);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
        self.mode.send_replace(Mode::Cut);
    }
}

async fn serve(mut client: TcpStream, target: u16, mut modes: watch::Receiver<Mode>) {
    let mode = *modes.borrow_and_update();
    match mode {
        Mode::Cut => {
            reset(&client);
            return;
        }
        Mode::Frozen => {
            // Hold the socket, silent, until the mode changes.
            let _ = modes.changed().await;
            return;
        }
        Mode::Open => {}
    }
    let Ok(mut upstream) = TcpStream::connect(("127.0.0.1", target)).await else { return };
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut upstream) => return,
        _ = modes.wait_for(|m| *m != Mode::Open) => {}
    }
    if *modes.borrow() == Mode::Frozen {
        let _ = modes.wait_for(|m| *m != Mode::Frozen).await;
    }
    // Reset rather than close, like a peer that vanished.
    reset(&client);
    reset(&upstream);
}

/// Makes the coming close send a reset.
fn reset(stream: &TcpStream) {
    let _ = socket2::SockRef::from(stream).set_linger(Some(Duration::ZERO));
}
