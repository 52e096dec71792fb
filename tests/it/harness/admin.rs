//! The admin layer over the shared harness (`tests/common`, which a test using this module
//! declares as `mod common;` too): start options (JWT secret, workers), a started
//! [`common::Fulcrum`] with both resolved listener addresses, JSON requests with bearer tokens
//! over [`common::Client`], a tiny std::net backend, and JWT minting. Every wait is a readiness
//! check with a deadline, never a fixed sleep.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use crate::common;

/// The HMAC secret every test server uses unless told otherwise.
pub const SECRET: &str = "test-secret-0123456789abcdef0123456789abcdef";
/// How long to wait for the process to report its listeners.
pub const START_DEADLINE: Duration = Duration::from_secs(30);

/// A test Ed25519 key pair (never used outside tests).
pub const ED25519_PRIVATE_PEM: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEII/FchjacIALP1xj0spCOxYa8wkyohD6fV8gj7BpVI6f
-----END PRIVATE KEY-----
";
/// The public half of [`ED25519_PRIVATE_PEM`].
pub const ED25519_PUBLIC_PEM: &str = "-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEAHi/un4BLcmFbQS701EYAETWWeerkEXgRh4UKCcnjgr4=
-----END PUBLIC KEY-----
";

/// A scratch directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "fulcrum-admin-{}-{}-{tag}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }
    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
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

/// How to start the binary.
#[derive(Debug, Clone)]
pub struct Opts {
    pub args: Vec<String>,
    pub secret: Option<String>,
    /// Wait for `admin listening` too (false when the admin API is expected to stay off).
    pub expect_admin: bool,
    /// `--workers` (2 unless set).
    pub workers: usize,
}

impl Default for Opts {
    fn default() -> Self {
        Self { args: Vec::new(), secret: Some(SECRET.into()), expect_admin: true, workers: 2 }
    }
}

impl Opts {
    pub fn arg(mut self, a: impl Into<String>) -> Self {
        self.args.push(a.into());
        self
    }
    pub fn config(self, path: &Path) -> Self {
        self.arg("--config").arg(path.display().to_string())
    }
    pub fn backend(self, url: &str) -> Self {
        self.arg("--backend").arg(url)
    }
    pub fn no_secret(mut self) -> Self {
        self.secret = None;
        self
    }
    pub fn no_admin(mut self) -> Self {
        self.expect_admin = false;
        self
    }
    /// Runs `workers` workers (one makes per-worker balancing exact).
    pub fn workers(mut self, workers: usize) -> Self {
        self.workers = workers;
        self
    }
}

/// A running `fulcrum` process ([`common::Fulcrum`], killed on drop) with its listeners up.
pub struct Fulcrum {
    process: common::Fulcrum,
    pub listen: SocketAddr,
    pub admin: Option<SocketAddr>,
}

/// Value of `key=` in a logfmt line.
pub fn log_field(line: &str, key: &str) -> Option<String> {
    let start = line.find(&format!(" {key}="))? + key.len() + 2;
    let rest = &line[start..];
    if let Some(quoted) = rest.strip_prefix('"') {
        return quoted.split('"').next().map(str::to_owned);
    }
    rest.split(' ').next().map(str::to_owned)
}

impl Fulcrum {
    pub fn start(opts: Opts) -> Fulcrum {
        match Self::try_start(opts) {
            Ok(f) => f,
            Err((status, log)) => panic!("fulcrum did not start ({status:?}):\n{log}"),
        }
    }

    /// Starts and waits for the listeners; on early exit returns the status and the log.
    pub fn try_start(opts: Opts) -> Result<Fulcrum, (Option<ExitStatus>, String)> {
        let mut args = vec!["--workers".to_owned(), opts.workers.to_string()];
        args.extend(opts.args.iter().cloned());
        let mut process = common::Fulcrum::spawn_with(&args, |cmd| {
            cmd.env_remove("FULCRUM_JWT_SECRET");
            if let Some(secret) = &opts.secret {
                cmd.env("FULCRUM_JWT_SECRET", secret);
            }
        });
        let deadline = Instant::now() + START_DEADLINE;
        let left = || deadline.saturating_duration_since(Instant::now());
        let listen = process.wait_listening(left());
        let admin = match listen {
            Some(_) if opts.expect_admin => process.wait_admin_listening(left()),
            _ => None,
        };
        match listen {
            Some(listen) if admin.is_some() || !opts.expect_admin => {
                Ok(Fulcrum { process, listen, admin })
            }
            // Stderr is closed: the process has exited, so this wait is immediate.
            _ if process.exited() => {
                let status = process.wait_exit(START_DEADLINE);
                Err((Some(status), process.log_text()))
            }
            // Still running at the deadline: dropping `process` kills it.
            _ => Err((None, process.log_text())),
        }
    }

    /// Runs to completion expecting a failed start; returns the status and the log.
    pub fn expect_start_failure(opts: Opts) -> (ExitStatus, String) {
        match Self::try_start(opts) {
            Ok(f) => panic!("fulcrum started but should not have:\n{}", f.log()),
            Err((Some(status), log)) => (status, log),
            Err((None, log)) => panic!("fulcrum neither started nor exited:\n{log}"),
        }
    }

    pub fn admin(&self) -> SocketAddr {
        self.admin.expect("admin API is off")
    }

    /// The process underneath (memory, signals, log waits with a predicate).
    pub fn process(&self) -> &common::Fulcrum {
        &self.process
    }

    /// Waits (bounded) for a log line containing `needle` and returns it.
    pub fn wait_for_line(&self, needle: &str) -> String {
        self.process
            .wait_for_line(START_DEADLINE, |l| l.contains(needle))
            .unwrap_or_else(|| panic!("no log line with `{needle}`:\n{}", self.log()))
    }

    pub fn log(&self) -> String {
        self.process.log_text()
    }

    /// SIGTERM, then wait (bounded) for the graceful exit.
    pub fn stop(mut self) -> ExitStatus {
        self.process.sigterm();
        self.process.wait_exit(Duration::from_secs(20))
    }

    pub fn get(&self, path: &str, token: Option<&str>) -> Resp {
        request(self.admin(), "GET", path, &auth(token), None)
    }

    pub fn send(&self, method: &str, path: &str, token: Option<&str>, body: &Value) -> Resp {
        let body = serde_json::to_vec(body).unwrap();
        let mut headers = auth(token);
        headers.push(("Content-Type".into(), "application/json".into()));
        request(self.admin(), method, path, &headers, Some(&body))
    }

    /// One request through the data plane.
    pub fn proxy_get(&self, path: &str) -> Resp {
        request(self.listen, "GET", path, &[], None)
    }
}

fn auth(token: Option<&str>) -> Vec<(String, String)> {
    token.map(|t| vec![("Authorization".into(), format!("Bearer {t}"))]).unwrap_or_default()
}

/// A parsed response.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    /// Asserts the status and, for errors, the JSON envelope's code.
    pub fn expect(&self, status: u16, code: Option<&str>) -> &Self {
        assert_eq!(self.status, status, "body: {}", self.text());
        if let Some(code) = code {
            let v = self.json();
            assert_eq!(v["error"]["code"], code, "body: {v}");
            assert!(v["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
        }
        self
    }
}

/// One HTTP/1.1 request with `Host: {addr}` and `Connection: close` on a fresh
/// [`common::Client`] connection; reads the whole answer.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(String, String)],
    body: Option<&[u8]>,
) -> Resp {
    let host = addr.to_string();
    let mut all = vec![("Host", host.as_str()), ("Connection", "close")];
    all.extend(headers.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let mut c = common::Client::connect(addr);
    c.send_head(method, path, &all, body.map(<[u8]>::len)).unwrap();
    if let Some(body) = body {
        // The server may answer (413) and close before reading everything.
        let _ = c.send_raw(body);
    }
    let r = c.read_response().unwrap_or_else(|e| panic!("no response to {method} {path}: {e}"));
    let status = r.head.start[1].parse().unwrap_or_else(|_| panic!("bad status in {:?}", r.head));
    Resp { status, headers: r.head.headers, body: r.body }
}

/// A keep-alive HTTP/1.1 backend answering every request with `name`; counts requests.
pub struct Backend {
    pub url: String,
    pub hits: Arc<AtomicUsize>,
}

pub fn backend(name: &'static str) -> Backend {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let counter = counter.clone();
            std::thread::spawn(move || serve_backend(stream, name, &counter));
        }
    });
    Backend { url, hits }
}

fn serve_backend(stream: TcpStream, name: &str, hits: &AtomicUsize) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    loop {
        let mut len = 0usize;
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        loop {
            line.clear();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let h = line.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                len = v.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0; len];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        hits.fetch_add(1, Ordering::SeqCst);
        let resp = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{name}", name.len());
        if writer.write_all(resp.as_bytes()).is_err() {
            return;
        }
    }
}

pub fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// HS256 token with `scope`, expiring in an hour, signed with `secret`.
pub fn token_with(secret: &str, scope: &str) -> String {
    sign_hs(Algorithm::HS256, secret.as_bytes(), &json!({"exp": now() + 3600, "scope": scope}))
}

/// HS256 token signed with [`SECRET`].
pub fn token(scope: &str) -> String {
    token_with(SECRET, scope)
}

/// Read + write token.
pub fn write_token() -> String {
    token("fulcrum:read fulcrum:write")
}

/// Read-only token.
pub fn read_token() -> String {
    token("fulcrum:read")
}

pub fn sign_hs(alg: Algorithm, key: &[u8], claims: &Value) -> String {
    jsonwebtoken::encode(&Header::new(alg), claims, &EncodingKey::from_secret(key)).unwrap()
}

pub fn sign_ed(claims: &Value) -> String {
    let key = EncodingKey::from_ed_pem(ED25519_PRIVATE_PEM.as_bytes()).unwrap();
    jsonwebtoken::encode(&Header::new(Algorithm::EdDSA), claims, &key).unwrap()
}

/// base64url without padding.
pub fn b64url(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

/// A token with an arbitrary header and signature bytes (for `alg: none` and wrong-alg cases).
pub fn forge(header: &Value, claims: &Value, signature: &[u8]) -> String {
    format!(
        "{}.{}.{}",
        b64url(&serde_json::to_vec(header).unwrap()),
        b64url(&serde_json::to_vec(claims).unwrap()),
        b64url(signature)
    )
}
