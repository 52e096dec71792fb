//! The one handle on a spawned `fulcrum` process, and its builder.
//!
//! ```ignore
//! let lb = Fulcrum::builder().workers(1).backend(&a).config("[cache]\nenabled = true").start();
//! assert_eq!(lb.get("/").status(), 200);
//! ```
//!
//! By default the process runs two workers, listens on ephemeral loopback ports, runs on the
//! io driver `FULCRUM_TEST_IO_DRIVER` names, and has the admin API on (the test JWT secret
//! [`SECRET`](super::admin::SECRET) in `FULCRUM_JWT_SECRET`), so `/metrics` and the admin client
//! work in every test. It is killed on drop, and its stderr is kept for assertions and shown
//! when a test fails.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::admin::{AdminClient, SECRET};
use super::http1::{Client, Response, get_once};
use super::tls::{CertFiles, Pki};
use super::{TempDir, expect_within};

/// How long a start may take before the test fails.
const START_DEADLINE: Duration = Duration::from_secs(30);

/// The io driver every test process runs on: `FULCRUM_TEST_IO_DRIVER`, or `auto`.
pub fn test_io_driver() -> String {
    match std::env::var("FULCRUM_TEST_IO_DRIVER") {
        Ok(d) if ["auto", "io_uring", "epoll"].contains(&d.as_str()) => d,
        Ok(d) if d.is_empty() => "auto".into(),
        Ok(d) => panic!("FULCRUM_TEST_IO_DRIVER={d:?}: want auto, io_uring or epoll"),
        Err(_) => "auto".into(),
    }
}

/// `[store]` timings for tests: etcd calls bounded at 2 s, a quiet watch checked every 0.5 s,
/// reconnects after 20 ms to 0.3 s.
const STORE_TIMINGS: [&str; 5] = [
    "connect_timeout_ms = 500",
    "request_timeout_ms = 2000",
    "watch_probe_ms = 500",
    "backoff_min_ms = 20",
    "backoff_max_ms = 300",
];

/// How to start the binary; see [`Fulcrum::builder`]. Cloneable, so one builder can start
/// several instances of a cluster ([`Builder::start_many`]).
#[derive(Clone)]
pub struct Builder {
    workers: Option<usize>,
    backends: Vec<String>,
    config: Option<String>,
    config_file: Option<PathBuf>,
    args: Vec<String>,
    secret: Option<String>,
    expect_admin: bool,
    io_driver: Option<String>,
    stdout: bool,
    deny_io_uring: bool,
    /// `key = value` lines per configuration table, written once each after `config`.
    tables: BTreeMap<&'static str, Vec<String>>,
    /// The working directory of the process.
    workdir: Option<PathBuf>,
    /// Give each process a working directory of its own (removed with it).
    own_workdir: bool,
}

/// How Fulcrum speaks TLS to `https://` and `h2://` backends (`[upstream_tls]`), for
/// [`Builder::upstream_tls`].
#[derive(Debug, Clone, Default)]
pub struct UpstreamTls {
    ca: Option<PathBuf>,
    no_verify: bool,
    server_name: Option<String>,
    client: Option<(PathBuf, PathBuf)>,
}

impl UpstreamTls {
    /// Verifies backends against `pki`'s CA (`ca_file`).
    pub fn trusting(pki: &Pki) -> Self {
        Self { ca: Some(pki.ca.clone()), ..Self::default() }
    }
    /// Does not verify backend certificates (`verify = false`).
    pub fn no_verify() -> Self {
        Self { no_verify: true, ..Self::default() }
    }
    /// Checks every backend certificate against `name` (`server_name`).
    pub fn server_name(mut self, name: &str) -> Self {
        self.server_name = Some(name.to_owned());
        self
    }
    /// Presents `cert` to backends that ask for one (`client_cert_file`, `client_key_file`).
    pub fn client_cert(mut self, cert: &CertFiles) -> Self {
        self.client = Some((cert.cert.clone(), cert.key.clone()));
        self
    }
}

/// A TOML string (the paths tests write need no more than Rust's escapes, which TOML shares).
fn toml_str(s: impl std::fmt::Display) -> String {
    format!("{:?}", s.to_string())
}

impl Builder {
    /// `--workers N` (2 unless set).
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = Some(n);
        self
    }
    /// One more `--backend` (a URL, or anything with one, such as a [`TestBackend`]).
    ///
    /// [`TestBackend`]: super::TestBackend
    pub fn backend(mut self, backend: impl BackendUrl) -> Self {
        self.backends.push(backend.backend_url());
        self
    }
    /// `--backend` for each of `backends`, in order.
    pub fn backends<I>(self, backends: I) -> Self
    where
        I: IntoIterator,
        I::Item: BackendUrl,
    {
        backends.into_iter().fold(self, Builder::backend)
    }
    /// `--algorithm NAME`.
    pub fn algorithm(self, name: &str) -> Self {
        self.arg("--algorithm").arg(name)
    }
    /// TOML appended to the configuration file (written to a temporary file for this process).
    pub fn config(mut self, toml: &str) -> Self {
        let c = self.config.get_or_insert_with(String::new);
        c.push_str(toml);
        c.push('\n');
        self
    }
    /// A configuration file of the test's own (for restarts on the same file).
    pub fn config_file(mut self, path: &Path) -> Self {
        self.config_file = Some(path.to_owned());
        self
    }
    /// `--access-log TARGET` (a path, `-` or `off`).
    pub fn access_log(self, target: &str) -> Self {
        self.arg("--access-log").arg(target)
    }
    /// `--io-driver D`, instead of the suite's driver.
    pub fn io_driver(mut self, driver: &str) -> Self {
        self.io_driver = Some(driver.to_owned());
        self
    }
    /// Any other flag or argument.
    pub fn arg(mut self, a: impl Into<String>) -> Self {
        self.args.push(a.into());
        self
    }
    /// No admin key from the environment; the admin listener is still awaited (the key comes
    /// from the configuration file, or `--demo`).
    pub fn no_secret(mut self) -> Self {
        self.secret = None;
        self
    }
    /// No admin key at all: the admin API stays off.
    pub fn no_admin(mut self) -> Self {
        self.secret = None;
        self.expect_admin = false;
        self
    }
    /// Keeps stdout (the default access log) for [`Fulcrum::take_stdout`].
    pub fn capture_stdout(mut self) -> Self {
        self.stdout = true;
        self
    }
    /// The TLS listener on an ephemeral loopback port (`--tls-listen`) serving `certs`
    /// (`--tls-cert`/`--tls-key` pairs; the first is the default); see [`Fulcrum::tls_addr`].
    pub fn tls_listener(mut self, certs: &[&CertFiles]) -> Self {
        self = self.arg("--tls-listen").arg("127.0.0.1:0");
        for c in certs {
            self = self.arg("--tls-cert").arg(c.cert.display().to_string());
            self = self.arg("--tls-key").arg(c.key.display().to_string());
        }
        self
    }
    /// `tls.handshake_timeout_ms`.
    pub fn tls_handshake_timeout(self, timeout: Duration) -> Self {
        self.setting("tls", format!("handshake_timeout_ms = {}", timeout.as_millis()))
    }
    /// `tls.max_handshakes_per_worker`.
    pub fn tls_max_handshakes(self, n: usize) -> Self {
        self.setting("tls", format!("max_handshakes_per_worker = {n}"))
    }
    /// `[upstream_tls]`.
    pub fn upstream_tls(mut self, u: &UpstreamTls) -> Self {
        if let Some(ca) = &u.ca {
            self = self.setting("upstream_tls", format!("ca_file = {}", toml_str(ca.display())));
        }
        if u.no_verify {
            self = self.setting("upstream_tls", "verify = false");
        }
        if let Some(name) = &u.server_name {
            self = self.setting("upstream_tls", format!("server_name = {}", toml_str(name)));
        }
        if let Some((cert, key)) = &u.client {
            self = self
                .setting("upstream_tls", format!("client_cert_file = {}", toml_str(cert.display())))
                .setting("upstream_tls", format!("client_key_file = {}", toml_str(key.display())));
        }
        self
    }
    /// The admin API over HTTPS only, with `cert` (`admin.tls_cert_file`, `tls_key_file`).
    pub fn admin_tls(self, cert: &CertFiles) -> Self {
        self.setting("admin", format!("tls_cert_file = {}", toml_str(cert.cert.display())))
            .setting("admin", format!("tls_key_file = {}", toml_str(cert.key.display())))
    }
    /// One `key = value` line of the configuration table `[table]`. Each table is written once,
    /// after the [`config`](Self::config) text (which must not open the same table).
    pub fn setting(mut self, table: &'static str, line: impl Into<String>) -> Self {
        self.tables.entry(table).or_default().push(line.into());
        self
    }
    /// The etcd store at `endpoints` under `prefix`, with test-sized timings; unless
    /// [`Builder::workdir`] says otherwise, each process gets a working directory of its own,
    /// where its last-known-good file (`fulcrum-state.json`) goes. More `[store]` keys:
    /// [`Builder::setting`]`("store", ...)`.
    pub fn etcd_store<S: AsRef<str>>(mut self, endpoints: &[S], prefix: &str) -> Self {
        let list: Vec<String> = endpoints.iter().map(|e| format!("\"{}\"", e.as_ref())).collect();
        self = self
            .setting("store", "kind = \"etcd\"")
            .setting("store", format!("endpoints = [{}]", list.join(", ")))
            .setting("store", format!("prefix = \"{prefix}\""));
        for line in STORE_TIMINGS {
            self = self.setting("store", line);
        }
        self.own_workdir = true;
        self
    }
    /// Runs the process in `dir` (which the test owns, e.g. to restart on the same files).
    pub fn workdir(mut self, dir: &Path) -> Self {
        self.workdir = Some(dir.to_owned());
        self
    }
    /// Starts `n` instances of this builder one after the other (each waited for).
    pub fn start_many(self, n: usize) -> Vec<Fulcrum> {
        (0..n).map(|_| self.clone().start()).collect()
    }
    /// Runs the process under a seccomp filter that fails `io_uring_setup` with `EPERM`, as
    /// Docker's default profile does.
    pub fn deny_io_uring(mut self) -> Self {
        self.deny_io_uring = true;
        self
    }

    /// Spawns the process and returns at once (see [`Fulcrum::wait_listening`]).
    pub fn spawn(mut self) -> Fulcrum {
        let mut argv = Vec::new();
        for (table, lines) in std::mem::take(&mut self.tables) {
            self = self.config(&format!("[{table}]\n{}", lines.join("\n")));
        }
        let dir = match (&self.config, &self.config_file) {
            (Some(_), Some(_)) => panic!("both config text and a config file"),
            (Some(text), None) => {
                let dir = TempDir::new("config");
                let path = dir.write("fulcrum.toml", text);
                argv.extend(["--config".to_owned(), path.display().to_string()]);
                Some(dir)
            }
            (None, Some(path)) => {
                argv.extend(["--config".to_owned(), path.display().to_string()]);
                None
            }
            (None, None) => None,
        };
        for flag in ["--listen", "--admin-listen"] {
            if !self.args.iter().any(|a| a == flag) {
                argv.extend([flag.to_owned(), "127.0.0.1:0".to_owned()]);
            }
        }
        if let Some(n) = self.workers {
            argv.extend(["--workers".to_owned(), n.to_string()]);
        }
        let driver = self.io_driver.unwrap_or_else(test_io_driver);
        argv.extend(["--io-driver".to_owned(), driver]);
        for b in &self.backends {
            argv.extend(["--backend".to_owned(), b.clone()]);
        }
        argv.extend(self.args);
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_fulcrum"));
        cmd.args(&argv).stdin(Stdio::null()).stderr(Stdio::piped());
        let own = (self.workdir.is_none() && self.own_workdir).then(|| TempDir::new("workdir"));
        if let Some(dir) = self.workdir.as_deref().or(own.as_ref().map(TempDir::path)) {
            cmd.current_dir(dir);
        }
        cmd.stdout(if self.stdout { Stdio::piped() } else { Stdio::null() });
        cmd.env_remove("FULCRUM_JWT_SECRET");
        if let Some(secret) = &self.secret {
            cmd.env("FULCRUM_JWT_SECRET", secret);
        }
        let mut f = if self.deny_io_uring {
            // A seccomp filter belongs to the thread that installs it and to the processes that
            // thread spawns: a thread of its own installs it, spawns the binary and ends.
            std::thread::spawn(move || {
                deny_io_uring_in_this_thread();
                Fulcrum::spawn_command(cmd)
            })
            .join()
            .unwrap()
        } else {
            Fulcrum::spawn_command(cmd)
        };
        f.expect_admin = self.expect_admin;
        f._config = dir;
        f._workdir = own;
        f
    }

    /// Starts and waits for the listeners; on an early exit (or none by the deadline), the
    /// exit status if any and the log.
    pub fn try_start(self) -> Result<Fulcrum, (Option<ExitStatus>, String)> {
        let mut f = self.spawn();
        let deadline = Instant::now() + START_DEADLINE;
        let left = || deadline.saturating_duration_since(Instant::now());
        let listening = f.wait_listening(left()).is_some();
        let admin = listening && (!f.expect_admin || f.wait_admin_listening(left()).is_some());
        if listening && admin {
            return Ok(f);
        }
        if f.exited() {
            // Stderr is closed: the process has exited, so this wait is immediate.
            let status = f.wait_exit(START_DEADLINE);
            return Err((Some(status), f.log_text()));
        }
        // Still running at the deadline: dropping `f` kills it.
        Err((None, f.log_text()))
    }

    /// Starts and waits for the listeners (panics with the log if they do not come up).
    pub fn start(self) -> Fulcrum {
        match self.try_start() {
            Ok(f) => f,
            Err((status, log)) => panic!("fulcrum did not start ({status:?}):\n{log}"),
        }
    }

    /// Runs to completion expecting a failed start; returns the status and the log.
    pub fn expect_start_failure(self) -> (ExitStatus, String) {
        match self.try_start() {
            Ok(f) => panic!("fulcrum started but should not have:\n{}", f.log_text()),
            Err((Some(status), log)) => (status, log),
            Err((None, log)) => panic!("fulcrum neither started nor exited:\n{log}"),
        }
    }
}

/// Something with a backend URL.
pub trait BackendUrl {
    fn backend_url(&self) -> String;
}

impl BackendUrl for &str {
    fn backend_url(&self) -> String {
        (*self).to_owned()
    }
}

impl BackendUrl for String {
    fn backend_url(&self) -> String {
        self.clone()
    }
}

impl BackendUrl for &String {
    fn backend_url(&self) -> String {
        (*self).clone()
    }
}

impl BackendUrl for &super::TestBackend {
    fn backend_url(&self) -> String {
        self.url()
    }
}

impl BackendUrl for &super::RawBackend {
    fn backend_url(&self) -> String {
        self.url()
    }
}

impl BackendUrl for &super::EchoBackend {
    fn backend_url(&self) -> String {
        self.url()
    }
}

impl BackendUrl for &super::RawH2Backend {
    fn backend_url(&self) -> String {
        self.url()
    }
}

#[derive(Default)]
struct LogState {
    lines: Vec<String>,
    eof: bool,
}

/// A spawned `fulcrum` binary; killed on drop. Its stderr lines are kept for assertions.
pub struct Fulcrum {
    child: Child,
    log: Arc<(Mutex<LogState>, Condvar)>,
    addr: Option<SocketAddr>,
    admin: Option<SocketAddr>,
    tls: Option<SocketAddr>,
    expect_admin: bool,
    _config: Option<TempDir>,
    /// The working directory the builder made for it (with the etcd store: where its
    /// last-known-good file goes), removed with it.
    _workdir: Option<TempDir>,
}

impl Fulcrum {
    /// How to start one: two workers, the admin API on, the suite's io driver.
    pub fn builder() -> Builder {
        Builder {
            workers: Some(2),
            backends: Vec::new(),
            config: None,
            config_file: None,
            args: Vec::new(),
            secret: Some(SECRET.to_owned()),
            expect_admin: true,
            io_driver: None,
            stdout: false,
            deny_io_uring: false,
            tables: BTreeMap::new(),
            workdir: None,
            own_workdir: false,
        }
    }

    /// Starts one with the defaults in front of `backends`.
    pub fn start<I>(backends: I) -> Self
    where
        I: IntoIterator,
        I::Item: BackendUrl,
    {
        Self::builder().backends(backends).start()
    }

    fn spawn_command(mut cmd: Command) -> Self {
        let mut child = cmd.spawn().expect("spawn fulcrum");
        let stderr = child.stderr.take().unwrap();
        let log: Arc<(Mutex<LogState>, Condvar)> = Arc::default();
        let log2 = log.clone();
        std::thread::spawn(move || {
            let mut r = BufReader::new(stderr);
            let mut line = String::new();
            loop {
                line.clear();
                let done = !matches!(r.read_line(&mut line), Ok(n) if n > 0);
                let (m, cv) = &*log2;
                let mut st = m.lock().unwrap();
                if done {
                    st.eof = true;
                    cv.notify_all();
                    return;
                }
                st.lines.push(line.trim_end().to_owned());
                cv.notify_all();
            }
        });
        Self {
            child,
            log,
            addr: None,
            admin: None,
            tls: None,
            expect_admin: false,
            _config: None,
            _workdir: None,
        }
    }

    /// Waits up to `timeout` for the `msg=listening` line and records its address (then
    /// [`Fulcrum::addr`] answers); `None` at the deadline or if the process exited first.
    pub fn wait_listening(&mut self, timeout: Duration) -> Option<SocketAddr> {
        let line = self.wait_for_line(timeout, |l| l.contains("msg=listening"))?;
        let addr = line_addr(&line).unwrap_or_else(|| panic!("no addr= in {line:?}"));
        self.addr = Some(addr);
        // The TLS listener is logged before the cleartext one.
        self.tls = self
            .lines()
            .iter()
            .find(|l| l.contains("msg=\"tls listening\""))
            .map(|l| line_addr(l).unwrap_or_else(|| panic!("no addr= in {l:?}")));
        Some(addr)
    }

    /// Waits up to `timeout` for the `admin listening` line and records its address.
    fn wait_admin_listening(&mut self, timeout: Duration) -> Option<SocketAddr> {
        let line = self.wait_for_line(timeout, |l| l.contains("admin listening"))?;
        let addr = line_addr(&line).unwrap_or_else(|| panic!("no addr= in {line:?}"));
        self.admin = Some(addr);
        Some(addr)
    }

    /// Whether the process closed its stderr (it exited or is exiting).
    pub fn exited(&self) -> bool {
        self.log.0.lock().unwrap().eof
    }

    /// Waits until a stderr line satisfies `pred`; `None` at the deadline or at EOF.
    pub fn wait_for_line(&self, timeout: Duration, pred: impl Fn(&str) -> bool) -> Option<String> {
        let deadline = Instant::now() + timeout;
        let (m, cv) = &*self.log;
        let mut st = m.lock().unwrap();
        loop {
            if let Some(l) = st.lines.iter().find(|l| pred(l)) {
                return Some(l.clone());
            }
            let now = Instant::now();
            if st.eof || now >= deadline {
                return None;
            }
            st = cv.wait_timeout(st, deadline - now).unwrap().0;
        }
    }

    /// Waits (30 s at most) for a log line containing `needle` and returns it.
    pub fn wait_log(&self, needle: &str) -> String {
        self.wait_for_line(START_DEADLINE, |l| l.contains(needle))
            .unwrap_or_else(|| panic!("no log line with `{needle}`:\n{}", self.log_text()))
    }

    pub fn lines(&self) -> Vec<String> {
        self.log.0.lock().unwrap().lines.clone()
    }

    pub fn log_text(&self) -> String {
        self.lines().join("\n")
    }

    /// The data-plane address.
    pub fn addr(&self) -> SocketAddr {
        self.addr.expect("fulcrum is not listening (spawned without waiting?)")
    }

    /// The TLS listener's address (panics without one: see [`Builder::tls_listener`]).
    pub fn tls_addr(&self) -> SocketAddr {
        self.tls.expect("fulcrum has no TLS listener")
    }

    /// The admin listener's address (panics when the admin API is off).
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin.expect("the admin API is off")
    }

    /// A client of the admin API.
    pub fn admin(&self) -> AdminClient {
        AdminClient::new(self.admin_addr())
    }

    /// `GET path` through the data plane on a fresh connection (`Connection: close`).
    pub fn get(&self, path: &str) -> Response {
        get_once(self.addr(), path).unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    /// One scrape of `GET /metrics`.
    pub fn metrics(&self) -> Metrics {
        let resp = Client::connect(self.admin_addr()).get("/metrics").unwrap();
        assert_eq!(resp.status(), 200, "{}", resp.text());
        Metrics::parse(&resp.text())
    }

    /// The value of one series (`name`, or `name{label="value"}` as rendered), if present.
    pub fn metric(&self, series: &str) -> Option<f64> {
        self.metrics().get(series)
    }

    /// Waits (10 s at most) until the series satisfies `want`; returns the scrape.
    pub fn wait_metric(&self, series: &str, want: impl Fn(f64) -> bool) -> Metrics {
        let mut last = None;
        expect_within(Duration::from_secs(10), series, || {
            let m = self.metrics();
            let ok = m.get(series).is_some_and(&want);
            last = Some(m);
            ok
        });
        last.unwrap()
    }

    /// A scrape that accounts for at least `n` finished requests (`fulcrum_requests_total`
    /// over every backend and class). Each worker publishes all its counters at once, so every
    /// counter in it includes whatever happened before those requests finished: counters that
    /// must still be 0 are asserted on this, never on a scrape that may predate the events.
    pub fn metrics_counting(&self, n: u64) -> Metrics {
        let mut last = None;
        expect_within(Duration::from_secs(10), &format!("{n} requests published"), || {
            let m = self.metrics();
            let ok = m.requests_total() >= n as f64;
            last = Some(m);
            ok
        });
        last.unwrap()
    }

    /// The process's stdout, if the builder kept it.
    pub fn take_stdout(&mut self) -> Option<ChildStdout> {
        self.child.stdout.take()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn status_kib(&self, key: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no {key} in /proc/PID/status"))
    }

    /// Resident set size, KiB.
    pub fn rss_kib(&self) -> u64 {
        self.status_kib("VmRSS:")
    }

    /// Peak resident set size so far, KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        self.status_kib("VmHWM:")
    }

    /// CPU time (user + system) the process has used so far, in clock ticks.
    pub fn cpu_ticks(&self) -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap();
        // Fields after the `(comm)`: state is field 3, utime 14 and stime 15.
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([format!("-{sig}"), self.pid().to_string()])
            .status()
            .expect("run kill")
            .success();
        assert!(ok, "kill -{sig} failed");
    }

    pub fn sigterm(&self) {
        self.signal("TERM");
    }

    /// SIGTERM, then waits (20 s at most) for the graceful exit.
    pub fn stop(mut self) -> ExitStatus {
        self.sigterm();
        self.wait_exit(Duration::from_secs(20))
    }

    /// Waits for the process to exit (its stderr closes first), then reaps it.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        {
            let (m, cv) = &*self.log;
            let mut st = m.lock().unwrap();
            while !st.eof {
                let now = Instant::now();
                assert!(now < deadline, "fulcrum did not exit within {timeout:?}");
                st = cv.wait_timeout(st, deadline - now).unwrap().0;
            }
        }
        // stderr is closed: the process has exited (or is exiting); this wait is immediate.
        self.child.wait().unwrap()
    }
}

/// Installs, on the calling thread only, a seccomp filter that fails `io_uring_setup` with
/// `EPERM` and allows every other system call; processes the thread spawns inherit it.
fn deny_io_uring_in_this_thread() {
    use seccompiler::{BpfProgram, SeccompAction, SeccompFilter, TargetArch};
    let arch = TargetArch::try_from(std::env::consts::ARCH).expect("a seccompiler architecture");
    let filter = SeccompFilter::new(
        [(libc::SYS_io_uring_setup, Vec::new())].into_iter().collect(),
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        arch,
    )
    .unwrap();
    let program: BpfProgram = filter.try_into().unwrap();
    seccompiler::apply_filter(&program).unwrap();
}

/// The `addr=` field of a log line.
fn line_addr(line: &str) -> Option<SocketAddr> {
    line.split_whitespace().find_map(|kv| kv.strip_prefix("addr="))?.parse().ok()
}

impl Drop for Fulcrum {
    #[allow(clippy::print_stderr)] // shows the balancer's log next to a failing test
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- fulcrum log ----\n{}\n---------------------", self.log_text());
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One `/metrics` scrape, parsed: `name{labels}` (labels as rendered) to value. Parsing checks
/// the text format: known `# TYPE`s, a value on every line, no series twice.
#[derive(Debug, Clone)]
pub struct Metrics(HashMap<String, f64>);

impl Metrics {
    fn parse(text: &str) -> Self {
        let mut out = HashMap::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let kind = rest.split_whitespace().nth(1).unwrap();
                assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
            }
            if line.starts_with('#') || line.is_empty() {
                continue;
            }
            let (key, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("bad line {line:?}"));
            let value: f64 = value.parse().unwrap_or_else(|_| panic!("bad value in {line:?}"));
            assert!(out.insert(key.to_owned(), value).is_none(), "duplicate series {key}");
        }
        Self(out)
    }

    /// The series' value, if present.
    pub fn get(&self, series: &str) -> Option<f64> {
        self.0.get(series).copied()
    }

    /// The series' value (panics, listing what there is, when absent).
    pub fn value(&self, series: &str) -> f64 {
        self.get(series).unwrap_or_else(|| {
            let mut keys: Vec<_> = self.0.keys().collect();
            keys.sort();
            panic!("no series {series}; have {keys:#?}")
        })
    }

    /// Every series whose name (with labels) starts with `prefix`.
    pub fn series(&self, prefix: &str) -> Vec<&str> {
        self.0.keys().filter(|k| k.starts_with(prefix)).map(String::as_str).collect()
    }

    /// Finished requests over every backend and class.
    pub fn requests_total(&self) -> f64 {
        self.0
            .iter()
            .filter(|(k, _)| k.starts_with("fulcrum_requests_total{"))
            .map(|(_, v)| v)
            .sum()
    }
}

/// Runs `fulcrum check-config FILE`; returns (exit status, stdout, stderr).
pub fn check_config(file: &Path) -> (ExitStatus, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_fulcrum"))
        .arg("check-config")
        .arg(file)
        .output()
        .expect("run fulcrum check-config");
    (
        out.status,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Value of `key=` in a logfmt line (unquoted).
pub fn log_field(line: &str, key: &str) -> Option<String> {
    let start = line.find(&format!(" {key}="))? + key.len() + 2;
    let rest = &line[start..];
    if let Some(quoted) = rest.strip_prefix('"') {
        return quoted.split('"').next().map(str::to_owned);
    }
    rest.split(' ').next().map(str::to_owned)
}

/// Keeps the log of a balancer started in this process (`fulcrum::start`) to warnings and
/// errors, so it does not flood the test output; the first call in the process decides.
pub fn quiet_in_process_logs() {
    use fulcrum::telemetry::{Level, StderrSink};
    fulcrum::telemetry::install(Box::new(StderrSink::new(Level::Warn)));
}
