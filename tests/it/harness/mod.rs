//! The integration harness: one way to start the real `fulcrum` binary ([`Fulcrum`]), one way
//! to start real backends ([`TestBackend`], [`RawBackend`] for HTTP/1.1; [`EchoBackend`] and
//! [`RawH2Backend`] for h2c), one HTTP/1.1 client ([`Client`]), HTTP/2 clients (the h2 crate in
//! [`h2client`], raw frames in [`H2Conn`]), the admin API client with its tokens ([`admin`]), TLS
//! (certificates made by the tests, HTTPS, HTTP/2 and gRPC clients over TLS, and TLS backends:
//! [`tls`]), and a real etcd with the proxy that cuts the path to it ([`Etcd`], [`Proxy`], shared
//! with `crates/etcd`'s tests through `fulcrum-etcd-testkit`) for clusters of instances.
//!
//! Everything talks to 127.0.0.1 on ephemeral ports. Waiting is done on conditions with
//! deadlines ([`wait_until`], [`Fulcrum::wait_for_line`]), never on fixed sleeps. The balancer
//! runs on the io driver named by `FULCRUM_TEST_IO_DRIVER` (`auto`, `io_uring` or `epoll`;
//! `auto` when unset), so the same suite runs once per driver (`.ci/test`).

pub mod admin;
pub mod backend;
pub mod echo;
pub mod grpc;
pub mod h2client;
pub mod h2frames;
pub mod http1;
pub mod load;
pub mod process;
pub mod tls;
pub mod ws;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::{Duration, Instant};

pub use admin::{read_token, write_token};
pub use backend::{Failure, RawBackend, TestBackend};
pub use fulcrum_etcd_testkit::{Etcd, Proxy, have_etcd, percentiles};
pub use grpc::{EchoBackend, GrpcClient};
pub use h2frames::{H2Conn, RawH2Backend};
pub use http1::{Client, Head, Response, get_once, tally};
pub use load::Load;
pub use process::{
    Fulcrum, UpstreamTls, check_config, log_field, quiet_in_process_logs, test_io_driver,
};
pub use ws::{WsBackend, ws_connect, ws_connect_tls};

/// Polls `cond` every 2 ms until it holds or `timeout` passes; returns whether it held.
#[allow(clippy::disallowed_methods)] // the poll interval of a readiness check, not synchronisation
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Like [`wait_until`] but panics with `what` when the deadline passes.
pub fn expect_within(timeout: Duration, what: &str, cond: impl FnMut() -> bool) {
    assert!(wait_until(timeout, cond), "timed out after {timeout:?} waiting for: {what}");
}

/// Asserts that `cond` holds at every poll for `window` (a property that must not change while
/// something else runs, e.g. a request that must stay queued).
#[allow(clippy::disallowed_methods)] // the poll interval of an invariant check
pub fn holds_for(window: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let until = Instant::now() + window;
    while Instant::now() < until {
        assert!(cond(), "no longer true: {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Runs `f` on a fresh current-thread tokio runtime, failing the test after 60 s.
pub fn run<F: std::future::Future>(f: F) -> F::Output {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(60), f).await.expect("test timed out")
    })
}

/// Polls `cond` every 5 ms on the tokio runtime, up to 10 s.
pub async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "{what}: not reached within 10 s");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A scratch directory removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    /// A new, empty directory named after `tag`.
    pub fn new(tag: &str) -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "fulcrum-test-{}-{}-{tag}",
            std::process::id(),
            N.fetch_add(1, SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }
    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }
    /// A path inside it.
    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
    /// Writes `contents` to `name` in the directory; returns its path.
    pub fn write(&self, name: &str, contents: &str) -> PathBuf {
        let p = self.join(name);
        std::fs::write(&p, contents).unwrap();
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A loopback URL with nothing listening on it (bound, then released).
pub fn dead_port_url() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    format!("http://{addr}")
}

/// A loopback port bound but not listening (connects are refused) for as long as the socket
/// lives, so no other test can take it meanwhile; `listen` on the socket opens it.
pub fn refusing_port() -> (socket2::Socket, std::net::SocketAddr) {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.bind(&"127.0.0.1:0".parse::<std::net::SocketAddr>().unwrap().into()).unwrap();
    let addr = socket.local_addr().unwrap().as_socket().unwrap();
    (socket, addr)
}
