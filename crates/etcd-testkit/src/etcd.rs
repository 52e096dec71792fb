//! One etcd member on 127.0.0.1: started on ephemeral ports with a temporary data directory,
//! waited for with `etcdctl endpoint health` (a readiness check, not a sleep), killed like a
//! crash and restarted on the same ports and data, removed on drop. Blocking; runs on the
//! test's thread.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use fulcrum_etcd::EtcdConfig;

use crate::tls::{TlsSetup, make_certs};

/// How long etcd may take to answer `endpoint health` after a start.
const READY_WITHIN: Duration = Duration::from_secs(20);
/// Bounds of one `etcdctl` run (its own flags: it gives up by itself).
const DIAL_TIMEOUT: &str = "--dial-timeout=2s";
const COMMAND_TIMEOUT: &str = "--command-timeout=10s";

/// One etcd member.
pub struct Etcd {
    child: Option<Child>,
    dir: PathBuf,
    /// The client port (the peer port is private).
    pub client_port: u16,
    peer_port: u16,
    tls: Option<TlsSetup>,
    /// Where the TLS files are (removed on drop).
    certs: Option<PathBuf>,
    /// `user:password` for etcdctl once auth is on.
    pub root: Option<String>,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn temp_dir(name: &str) -> PathBuf {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("fulcrum-etcd-{name}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Sleeps between two polls of a readiness check.
#[expect(clippy::disallowed_methods, reason = "the poll interval of a readiness check")]
fn pause() {
    std::thread::sleep(Duration::from_millis(50));
}

impl Etcd {
    /// A plain-HTTP member, ready to serve.
    pub fn start(name: &str) -> Self {
        Self::start_with(name, None)
    }

    /// A member serving clients over TLS with client-certificate authentication.
    pub fn start_tls(name: &str) -> Self {
        let dir = temp_dir(&format!("{name}-certs"));
        let tls = make_certs(&dir);
        let mut etcd = Self::start_with(name, Some(tls));
        etcd.certs = Some(dir);
        etcd
    }

    fn start_with(name: &str, tls: Option<TlsSetup>) -> Self {
        // A port picked free can be taken before etcd binds it: try a few times.
        for _ in 0..3 {
            let mut etcd = Etcd {
                child: None,
                dir: temp_dir(name),
                client_port: free_port(),
                peer_port: free_port(),
                tls: tls.clone(),
                certs: None,
                root: None,
            };
            etcd.spawn();
            if etcd.wait_ready() {
                return etcd;
            }
            eprintln!("etcd did not start; log:\n{}", etcd.log());
        }
        panic!("etcd did not start in 3 attempts");
    }

    /// The client URL.
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.client_port)
    }

    /// The TLS files of a TLS member.
    pub fn tls(&self) -> Option<&TlsSetup> {
        self.tls.as_ref()
    }

    /// Whether the process runs (it may still be starting).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    fn spawn(&mut self) {
        let client = self.url();
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("etcd.log"))
            .unwrap();
        let mut cmd = Command::new("etcd");
        cmd.args(["--name", "t", "--data-dir"])
            .arg(self.dir.join("data"))
            .args(["--listen-client-urls", &client, "--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("t={peer}")])
            .args(["--logger", "zap", "--log-outputs", "stderr"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        if let Some(tls) = &self.tls {
            cmd.arg("--cert-file")
                .arg(&tls.server_cert)
                .arg("--key-file")
                .arg(&tls.server_key)
                .arg("--trusted-ca-file")
                .arg(&tls.ca)
                .arg("--client-cert-auth");
        }
        self.child = Some(cmd.spawn().expect("spawn etcd"));
    }

    /// Polls `etcdctl endpoint health` until it succeeds; false if etcd exited or took too long.
    fn wait_ready(&mut self) -> bool {
        let deadline = Instant::now() + READY_WITHIN;
        while Instant::now() < deadline {
            if let Some(child) = &mut self.child
                && child.try_wait().unwrap().is_some()
            {
                return false;
            }
            let out = self.etcdctl_raw(&["endpoint", "health", "--command-timeout=1s"]);
            if out.status.success() {
                return true;
            }
            pause();
        }
        false
    }

    /// SIGKILL, like a crash.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts again on the same ports and data directory (kills first if it runs).
    pub fn restart(&mut self) {
        self.kill();
        for _ in 0..3 {
            self.spawn();
            if self.wait_ready() {
                return;
            }
            // The old socket may linger for a moment; the port is ours, so try again.
            self.kill();
        }
        panic!("etcd did not restart; log:\n{}", self.log());
    }

    /// etcd's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("etcd.log")).unwrap_or_default()
    }

    fn etcdctl_raw(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new("etcdctl");
        cmd.env("ETCDCTL_API", "3").arg("--endpoints").arg(self.url());
        cmd.args([DIAL_TIMEOUT, COMMAND_TIMEOUT]);
        if let Some(tls) = &self.tls {
            cmd.arg("--cacert")
                .arg(&tls.ca)
                .arg("--cert")
                .arg(&tls.client_cert)
                .arg("--key")
                .arg(&tls.client_key);
        }
        if let Some(root) = &self.root {
            cmd.arg("--user").arg(root);
        }
        cmd.args(args).stdin(Stdio::null()).output().expect("run etcdctl")
    }

    /// Runs etcdctl (as root once auth is on); panics with its output if it fails.
    pub fn etcdctl(&self, args: &[&str]) -> String {
        let out = self.etcdctl_raw(args);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "etcdctl {args:?} failed: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }

    /// `etcdctl put KEY VALUE`.
    pub fn put(&self, key: &str, value: &str) {
        self.etcdctl(&["put", key, value]);
    }

    /// `etcdctl get KEY --print-value-only`: the value, `None` when the key does not exist.
    pub fn get(&self, key: &str) -> Option<String> {
        let out = self.etcdctl(&["get", key, "--print-value-only"]);
        let value = out.strip_suffix('\n').unwrap_or(&out);
        (!out.is_empty()).then(|| value.to_owned())
    }

    /// Compacts the history up to the current revision; returns that revision.
    pub fn compact(&self) -> i64 {
        let revision = self.revision();
        self.etcdctl(&["compact", &revision.to_string()]);
        revision
    }

    /// Turns auth on: a `root` user and a `fulcrum` user with read-write on `prefix`.
    pub fn enable_auth(&mut self, prefix: &str, password: &str) {
        self.etcdctl(&["user", "add", "root:rootpw"]);
        self.etcdctl(&["user", "add", &format!("fulcrum:{password}")]);
        self.etcdctl(&["role", "add", "fulcrum"]);
        self.etcdctl(&[
            "role",
            "grant-permission",
            "fulcrum",
            "--prefix=true",
            "readwrite",
            prefix,
        ]);
        self.etcdctl(&["user", "grant-role", "fulcrum", "fulcrum"]);
        self.etcdctl(&["auth", "enable"]);
        self.root = Some("root:rootpw".into());
    }

    /// The current store revision.
    pub fn revision(&self) -> i64 {
        let out = self.etcdctl(&["endpoint", "status", "-w", "json"]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v[0]["Status"]["header"]["revision"].as_i64().unwrap()
    }

    /// A client configuration for this member with short, test-sized timings.
    pub fn config(&self, prefix: &str) -> EtcdConfig {
        crate::config_for(&self.url(), prefix, self.tls.as_ref())
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
            if let Some(certs) = &self.certs {
                let _ = std::fs::remove_dir_all(certs);
            }
        }
    }
}
