//! Test support: a real `etcd` (Debian's etcd-server) on 127.0.0.1 with ephemeral ports and a
//! temporary data directory, killed on drop; `etcdctl` against it; and a loopback TCP proxy
//! that can cut or freeze the path to it. Runs on the test's current-thread runtime.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

pub mod proxy;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fulcrum_etcd::{EtcdConfig, Timeouts, TlsFiles};
use tokio::time::Instant;

/// How long etcd may take to answer `endpoint health` after a start.
const READY_WITHIN: Duration = Duration::from_secs(20);

/// Whether the etcd binaries are on the PATH; says why a test skips when not.
pub fn have_etcd() -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = ["etcd", "etcdctl"]
        .iter()
        .all(|bin| std::env::split_paths(&path).any(|dir| dir.join(bin).is_file()));
    if !found {
        eprintln!(
            "SKIP: the `etcd`/`etcdctl` binaries are not installed \
             (apt-get install etcd-server etcd-client); this test needs a real etcd"
        );
    }
    found
}

/// TLS material for a server started with [`Etcd::start_tls`].
#[derive(Debug, Clone)]
pub struct TlsSetup {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

/// One etcd member.
pub struct Etcd {
    child: Option<Child>,
    dir: PathBuf,
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

impl Etcd {
    /// A plain-HTTP member, ready to serve.
    pub async fn start(name: &str) -> Self {
        Self::start_with(name, None).await
    }

    /// A member serving clients over TLS with client-certificate authentication.
    pub async fn start_tls(name: &str) -> Self {
        let dir = temp_dir(&format!("{name}-certs"));
        let tls = make_certs(&dir);
        let mut etcd = Self::start_with(name, Some(tls)).await;
        etcd.certs = Some(dir);
        etcd
    }

    async fn start_with(name: &str, tls: Option<TlsSetup>) -> Self {
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
            if etcd.wait_ready().await {
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
    async fn wait_ready(&mut self) -> bool {
        let deadline = Instant::now() + READY_WITHIN;
        while Instant::now() < deadline {
            if let Some(child) = &mut self.child
                && child.try_wait().unwrap().is_some()
            {
                return false;
            }
            let out = self.etcdctl_raw(&["endpoint", "health", "--command-timeout=1s"]).await;
            if out.status.success() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
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

    /// Starts again on the same ports and data directory.
    pub async fn restart(&mut self) {
        self.kill();
        for _ in 0..3 {
            self.spawn();
            if self.wait_ready().await {
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

    async fn etcdctl_raw(&self, args: &[&str]) -> std::process::Output {
        let mut cmd = tokio::process::Command::new("etcdctl");
        cmd.env("ETCDCTL_API", "3").arg("--endpoints").arg(self.url());
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
        cmd.args(args).kill_on_drop(true).output().await.expect("run etcdctl")
    }

    /// Runs etcdctl (as root once auth is on); panics with its output if it fails.
    pub async fn etcdctl(&self, args: &[&str]) -> String {
        let out = tokio::time::timeout(Duration::from_secs(20), self.etcdctl_raw(args))
            .await
            .expect("etcdctl timed out");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "etcdctl {args:?} failed: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }

    /// Turns auth on: a `root` user and a `fulcrum` user with read-write on `prefix`.
    pub async fn enable_auth(&mut self, prefix: &str, password: &str) {
        self.etcdctl(&["user", "add", "root:rootpw"]).await;
        self.etcdctl(&["user", "add", &format!("fulcrum:{password}")]).await;
        self.etcdctl(&["role", "add", "fulcrum"]).await;
        self.etcdctl(&[
            "role",
            "grant-permission",
            "fulcrum",
            "--prefix=true",
            "readwrite",
            prefix,
        ])
        .await;
        self.etcdctl(&["user", "grant-role", "fulcrum", "fulcrum"]).await;
        self.etcdctl(&["auth", "enable"]).await;
        self.root = Some("root:rootpw".into());
    }

    /// The current store revision.
    pub async fn revision(&self) -> i64 {
        let out = self.etcdctl(&["endpoint", "status", "-w", "json"]).await;
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v[0]["Status"]["header"]["revision"].as_i64().unwrap()
    }

    /// A client configuration for this member with short, test-sized timings.
    pub fn config(&self, prefix: &str) -> EtcdConfig {
        config_for(&self.url(), prefix, self.tls.as_ref())
    }
}

/// A client configuration for `url` with short, test-sized timings.
pub fn config_for(url: &str, prefix: &str, tls: Option<&TlsSetup>) -> EtcdConfig {
    let mut config = EtcdConfig::new(vec![url.to_owned()], prefix);
    config.timeouts = Timeouts {
        connect: Duration::from_secs(1),
        request: Duration::from_secs(3),
        watch_probe: Duration::from_millis(500),
        backoff_min: Duration::from_millis(50),
        backoff_max: Duration::from_millis(500),
    };
    config.tls = tls.map(|t| TlsFiles {
        ca_file: t.ca.clone(),
        cert_file: Some(t.client_cert.clone()),
        key_file: Some(t.client_key.clone()),
    });
    config
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

/// A CA, a server certificate for 127.0.0.1/localhost and a client certificate, as PEM files.
fn make_certs(dir: &Path) -> TlsSetup {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, KeyUsagePurpose};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);

    let leaf = |names: Vec<String>, purposes| {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(names).unwrap();
        params.extended_key_usages = purposes;
        let cert = params.signed_by(&key, &issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    };
    use rcgen::ExtendedKeyUsagePurpose::{ClientAuth, ServerAuth};
    // etcd 3.4's JSON gateway dials etcd itself with the server certificate as its client
    // certificate, so under --client-cert-auth that certificate needs ClientAuth too.
    let (server_cert, server_key) =
        leaf(vec!["127.0.0.1".into(), "localhost".into()], vec![ServerAuth, ClientAuth]);
    let (client_cert, client_key) = leaf(vec!["fulcrum".into()], vec![ClientAuth]);
    let write = |name: &str, pem: &str| {
        let path = dir.join(name);
        std::fs::write(&path, pem).unwrap();
        path
    };
    TlsSetup {
        ca: write("ca.pem", &ca_cert.pem()),
        server_cert: write("server.pem", &server_cert),
        server_key: write("server-key.pem", &server_key),
        client_cert: write("client.pem", &client_cert),
        client_key: write("client-key.pem", &client_key),
    }
}

/// p50 and p99 of `samples` (sorted in place).
pub fn percentiles(samples: &mut [Duration]) -> (Duration, Duration) {
    samples.sort_unstable();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    (at(0.50), at(0.99))
}
