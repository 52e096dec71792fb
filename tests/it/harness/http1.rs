//! Shared harness for the integration tests: real test backends on std threads, a small raw
//! HTTP/1.1 client over `std::net::TcpStream`, and a handle on a spawned `fulcrum` process.
//!
//! Everything talks to 127.0.0.1 on ephemeral ports. Waiting is done on conditions with
//! deadlines ([`wait_until`], [`Fulcrum::wait_for_line`]), never on fixed sleeps.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------------
// Waiting
// ---------------------------------------------------------------------------------------------

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

/// A unique path in the temp directory, removed on drop.
pub struct TempFile(pub PathBuf);

impl TempFile {
    pub fn with_contents(tag: &str, contents: &str) -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "fulcrum-test-{}-{}-{tag}.toml",
            std::process::id(),
            N.fetch_add(1, SeqCst)
        ));
        std::fs::write(&path, contents).unwrap();
        Self(path)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
    pub fn path_str(&self) -> String {
        self.0.display().to_string()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A loopback port with nothing listening on it (bound, then released).
pub fn dead_port_url() -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    format!("http://{addr}")
}

// ---------------------------------------------------------------------------------------------
// Deterministic large bodies: 64 KiB blocks, each stamped with its index, so a body of any size
// is generated and verified from one small buffer.
// ---------------------------------------------------------------------------------------------

pub const BLOCK: usize = 64 * 1024;

fn base_block() -> Vec<u8> {
    (0..BLOCK).map(|i| (i * 7 + i / 251) as u8).collect()
}

/// Writes `len` pattern bytes to `w`, optionally as chunks of `BLOCK` bytes.
pub fn write_pattern(w: &mut impl Write, len: u64, chunked: bool) -> io::Result<()> {
    let mut block = base_block();
    let mut off = 0u64;
    let mut k = 0u64;
    while off < len {
        block[..8].copy_from_slice(&k.to_le_bytes());
        let n = (len - off).min(BLOCK as u64) as usize;
        if chunked {
            write!(w, "{n:x}\r\n")?;
            w.write_all(&block[..n])?;
            w.write_all(b"\r\n")?;
        } else {
            w.write_all(&block[..n])?;
        }
        off += n as u64;
        k += 1;
    }
    Ok(())
}

/// Checks a stream of bytes against the pattern as it arrives.
pub struct PatternCheck {
    block: Vec<u8>,
    k: u64,
    pub offset: u64,
    pub mismatch_at: Option<u64>,
}

impl Default for PatternCheck {
    fn default() -> Self {
        let mut block = base_block();
        block[..8].copy_from_slice(&0u64.to_le_bytes());
        Self { block, k: 0, offset: 0, mismatch_at: None }
    }
}

impl PatternCheck {
    pub fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let k = self.offset / BLOCK as u64;
            if k != self.k {
                self.k = k;
                self.block[..8].copy_from_slice(&k.to_le_bytes());
            }
            let p = (self.offset % BLOCK as u64) as usize;
            let take = data.len().min(BLOCK - p);
            if self.mismatch_at.is_none() && data[..take] != self.block[p..p + take] {
                self.mismatch_at = Some(self.offset);
            }
            self.offset += take as u64;
            data = &data[take..];
        }
    }
    pub fn ok(&self, len: u64) -> bool {
        self.mismatch_at.is_none() && self.offset == len
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP/1.1 message reading, shared by the backend and the client.
// ---------------------------------------------------------------------------------------------

/// A parsed message head (request or response).
#[derive(Debug, Clone, Default)]
pub struct Head {
    /// Request: method, target, version. Response: version, status, reason.
    pub start: [String; 3],
    pub headers: Vec<(String, String)>,
}

impl Head {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }
    pub fn has_token(&self, name: &str, token: &str) -> bool {
        self.all(name)
            .iter()
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }
    pub fn content_length(&self) -> Option<u64> {
        self.header("content-length").map(|v| v.trim().parse().expect("numeric content-length"))
    }
    pub fn is_chunked(&self) -> bool {
        self.has_token("transfer-encoding", "chunked")
    }
}

/// Reads one head; `Ok(None)` on a clean EOF before any byte.
pub fn read_head(r: &mut impl BufRead) -> io::Result<Option<Head>> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    let start_line = line.trim_end_matches(['\r', '\n']).to_owned();
    let mut parts = start_line.splitn(3, ' ');
    let start = [
        parts.next().unwrap_or("").to_owned(),
        parts.next().unwrap_or("").to_owned(),
        parts.next().unwrap_or("").to_owned(),
    ];
    let mut headers = Vec::new();
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "EOF inside a head"));
        }
        let l = line.trim_end_matches(['\r', '\n']);
        if l.is_empty() {
            break;
        }
        let (name, value) = l
            .split_once(':')
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("bad line {l:?}")))?;
        headers.push((name.trim().to_owned(), value.trim().to_owned()));
    }
    Ok(Some(Head { start, headers }))
}

/// Reads a chunked body, handing each payload piece to `sink`; returns the trailers.
pub fn read_chunked(
    r: &mut impl BufRead,
    mut sink: impl FnMut(&[u8]) -> io::Result<()>,
) -> io::Result<Vec<(String, String)>> {
    let bad = |m: &str| io::Error::new(io::ErrorKind::InvalidData, m.to_owned());
    let mut line = String::new();
    let mut buf = vec![0u8; BLOCK];
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return Err(bad("EOF in chunk size"));
        }
        let size_str = line.trim_end().split(';').next().unwrap_or("");
        let mut size = u64::from_str_radix(size_str.trim(), 16).map_err(|_| bad("chunk size"))?;
        if size == 0 {
            break;
        }
        while size > 0 {
            let n = size.min(buf.len() as u64) as usize;
            r.read_exact(&mut buf[..n])?;
            sink(&buf[..n])?;
            size -= n as u64;
        }
        let mut crlf = [0u8; 2];
        r.read_exact(&mut crlf)?;
        if &crlf != b"\r\n" {
            return Err(bad("chunk not followed by CRLF"));
        }
    }
    let mut trailers = Vec::new();
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return Err(bad("EOF in trailers"));
        }
        let l = line.trim_end_matches(['\r', '\n']);
        if l.is_empty() {
            return Ok(trailers);
        }
        let (n, v) = l.split_once(':').ok_or_else(|| bad("trailer line"))?;
        trailers.push((n.trim().to_owned(), v.trim().to_owned()));
    }
}

/// Reads exactly `len` bytes, handing them to `sink` in pieces.
pub fn read_sized(
    r: &mut impl Read,
    mut len: u64,
    mut sink: impl FnMut(&[u8]) -> io::Result<()>,
) -> io::Result<()> {
    let mut buf = vec![0u8; BLOCK];
    while len > 0 {
        let want = len.min(buf.len() as u64) as usize;
        let n = r.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "body truncated"));
        }
        sink(&buf[..n])?;
        len -= n as u64;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// (a) Test backend
// ---------------------------------------------------------------------------------------------

/// One request as a backend saw it.
#[derive(Debug, Clone, Default)]
pub struct Recorded {
    pub method: String,
    pub target: String,
    pub version: String,
    pub headers: Vec<(String, String)>,
    pub trailers: Vec<(String, String)>,
    pub body_len: u64,
    /// Whether the body matched the pattern of [`write_pattern`] (bodies read by plain paths).
    pub pattern_ok: bool,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
    pub fn has(&self, name: &str) -> bool {
        self.header(name).is_some()
    }
}

struct BackendState {
    sequence: Arc<AtomicU64>,
    connections: AtomicUsize,
    closed: AtomicUsize,
    requests: AtomicUsize,
    in_flight: AtomicUsize,
    delay_ms: AtomicU64,
    last: Mutex<Option<Recorded>>,
    arrivals: Mutex<Vec<u64>>,
    /// Requests to `/hold...` wait while this is true.
    gate_closed: Mutex<bool>,
    gate: Condvar,
    stop: AtomicBool,
    /// What `/healthz` answers with, after `health_delay_ms`; those requests are counted apart.
    health_status: AtomicU16,
    health_delay_ms: AtomicU64,
    health_checks: AtomicUsize,
    failure: Option<Failure>,
}

/// How a failing backend ends every exchange once it has read the whole request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Closes with `SO_LINGER` 0: the peer sees a reset.
    Reset,
    /// Closes in order (FIN) without answering.
    Close,
}

/// Builder for [`TestBackend`].
pub struct BackendBuilder {
    name: String,
    delay: Duration,
    sequence: Option<Arc<AtomicU64>>,
    failure: Option<Failure>,
}

impl BackendBuilder {
    pub fn name(mut self, name: &str) -> Self {
        self.name = name.to_owned();
        self
    }
    /// Delay before answering a plain request (changeable later with `set_delay`).
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
    /// Numbers arrivals from `sequence`, shared by a test's backends (default: a private one).
    pub fn sequence(mut self, sequence: &Arc<AtomicU64>) -> Self {
        self.sequence = Some(sequence.clone());
        self
    }
    /// Every request is recorded and its body read, then the connection fails this way with
    /// no response byte.
    pub fn failing(mut self, failure: Failure) -> Self {
        self.failure = Some(failure);
        self
    }
    pub fn spawn(self) -> TestBackend {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(BackendState {
            sequence: self.sequence.unwrap_or_default(),
            connections: AtomicUsize::new(0),
            closed: AtomicUsize::new(0),
            requests: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            delay_ms: AtomicU64::new(self.delay.as_millis() as u64),
            last: Mutex::new(None),
            arrivals: Mutex::new(Vec::new()),
            gate_closed: Mutex::new(false),
            gate: Condvar::new(),
            stop: AtomicBool::new(false),
            failure: self.failure,
            health_status: AtomicU16::new(200),
            health_delay_ms: AtomicU64::new(0),
            health_checks: AtomicUsize::new(0),
        });
        let name: Arc<str> = self.name.into();
        let (st, nm) = (state.clone(), name.clone());
        std::thread::Builder::new()
            .name(format!("backend-{name}"))
            .spawn(move || {
                for stream in listener.incoming() {
                    if st.stop.load(SeqCst) {
                        return;
                    }
                    let Ok(stream) = stream else { continue };
                    st.connections.fetch_add(1, SeqCst);
                    let (st, nm) = (st.clone(), nm.clone());
                    let _ = std::thread::Builder::new().spawn(move || {
                        let _ = serve(&stream, &st, &nm);
                        drop(stream);
                        st.closed.fetch_add(1, SeqCst);
                    });
                }
            })
            .unwrap();
        TestBackend { name, addr, state }
    }
}

/// An HTTP/1.1 keep-alive backend on its own threads (one per connection).
///
/// Behaviour is chosen by request path:
/// - `/echo`: streams the request body back with the same framing (chunked trailers too);
/// - `/large/N`: a body of N pattern bytes, streamed from one 64 KiB block;
/// - `/chunked`: a chunked body `hello world` with trailers `x-trailer-one: 1`, `x-trailer-two: 2`;
/// - `/malformed`: a response that is not HTTP; `/close`: closes without answering;
/// - `/oneshot`: a normal keep-alive response, then the connection is closed anyway;
/// - `/delay/MS`: waits MS ms first; `/hold...`: waits while the gate is closed;
/// - `/hop`: a response carrying hop-by-hop headers;
/// - `/healthz`: the health endpoint, answering [`set_health_status`](TestBackend::set_health_status)
///   (200 by default) after [`set_health_delay`](TestBackend::set_health_delay); counted in
///   [`health_checks`](TestBackend::health_checks), not in `requests` or `arrivals`;
/// - anything else: waits the backend's delay, answers 200 with its name.
///
/// Every response names the backend in `x-backend`; plain bodies are the name itself.
pub struct TestBackend {
    pub name: Arc<str>,
    addr: SocketAddr,
    state: Arc<BackendState>,
}

impl TestBackend {
    pub fn builder() -> BackendBuilder {
        BackendBuilder {
            name: "backend".into(),
            delay: Duration::ZERO,
            sequence: None,
            failure: None,
        }
    }
    pub fn named(name: &str) -> Self {
        Self::builder().name(name).spawn()
    }
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.state.connections.load(SeqCst)
    }
    /// Connections it has closed (or seen closed) so far.
    pub fn closed_connections(&self) -> usize {
        self.state.closed.load(SeqCst)
    }
    /// Request heads received so far.
    pub fn requests(&self) -> usize {
        self.state.requests.load(SeqCst)
    }
    /// Requests received and not yet fully answered.
    pub fn in_flight(&self) -> usize {
        self.state.in_flight.load(SeqCst)
    }
    pub fn last_request(&self) -> Option<Recorded> {
        self.state.last.lock().unwrap().clone()
    }
    /// The arrival numbers (from the backend's sequence) of every request it received.
    pub fn arrivals(&self) -> Vec<u64> {
        self.state.arrivals.lock().unwrap().clone()
    }
    pub fn set_delay(&self, delay: Duration) {
        self.state.delay_ms.store(delay.as_millis() as u64, SeqCst);
    }
    /// From now on, `/hold` requests wait until [`release`](Self::release).
    pub fn hold(&self) {
        *self.state.gate_closed.lock().unwrap() = true;
    }
    pub fn release(&self) {
        *self.state.gate_closed.lock().unwrap() = false;
        self.state.gate.notify_all();
    }
    /// The status `/healthz` answers with from now on.
    pub fn set_health_status(&self, status: u16) {
        self.state.health_status.store(status, SeqCst);
    }
    /// How long `/healthz` waits before answering from now on.
    pub fn set_health_delay(&self, delay: Duration) {
        self.state.health_delay_ms.store(delay.as_millis() as u64, SeqCst);
    }
    /// `/healthz` requests received so far.
    pub fn health_checks(&self) -> usize {
        self.state.health_checks.load(SeqCst)
    }
}

impl Drop for TestBackend {
    fn drop(&mut self) {
        self.state.stop.store(true, SeqCst);
        self.release();
        let _ = TcpStream::connect(self.addr);
    }
}

struct InFlightGuard<'a>(&'a BackendState);
impl Drop for InFlightGuard<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, SeqCst);
    }
}

#[allow(clippy::disallowed_methods)] // a slow backend is backend behaviour, not synchronisation
fn backend_sleep(ms: u64) {
    if ms > 0 {
        std::thread::sleep(Duration::from_millis(ms));
    }
}

fn serve(stream: &TcpStream, st: &BackendState, name: &str) -> io::Result<()> {
    let _ = stream.set_nodelay(true);
    let mut r = BufReader::with_capacity(BLOCK, stream.try_clone()?);
    let mut w = stream.try_clone()?;
    loop {
        let Some(head) = read_head(&mut r)? else { return Ok(()) };
        let close = head.has_token("connection", "close");
        if head.start[1] == "/healthz" {
            st.health_checks.fetch_add(1, SeqCst);
            backend_sleep(st.health_delay_ms.load(SeqCst));
            let status = st.health_status.load(SeqCst);
            write!(
                w,
                "HTTP/1.1 {status} Health\r\nx-backend: {name}\r\ncontent-length: 0\r\n\r\n"
            )?;
            if close {
                return Ok(());
            }
            continue;
        }
        let seq = st.sequence.fetch_add(1, SeqCst);
        st.in_flight.fetch_add(1, SeqCst);
        let _guard = InFlightGuard(st);
        st.requests.fetch_add(1, SeqCst);
        st.arrivals.lock().unwrap().push(seq);
        let [method, target, version] = head.start.clone();
        let mut rec = Recorded {
            method,
            target: target.clone(),
            version,
            headers: head.headers.clone(),
            ..Recorded::default()
        };
        let path = target.split('?').next().unwrap_or("").to_owned();

        if path == "/echo" {
            *st.last.lock().unwrap() = Some(rec.clone());
            echo(&mut r, &mut w, &head, name, &mut rec, &st.last)?;
            *st.last.lock().unwrap() = Some(rec);
            if close {
                return Ok(());
            }
            continue;
        }

        // Every other behaviour reads (and discards) the request body first.
        let mut check = PatternCheck::default();
        if head.is_chunked() {
            rec.trailers = read_chunked(&mut r, |b| {
                check.feed(b);
                Ok(())
            })?;
        } else if let Some(n) = head.content_length() {
            read_sized(&mut r, n, |b| {
                check.feed(b);
                Ok(())
            })?;
        }
        rec.body_len = check.offset;
        rec.pattern_ok = check.ok(check.offset);
        *st.last.lock().unwrap() = Some(rec);
        match st.failure {
            Some(Failure::Reset) => {
                socket2::SockRef::from(stream).set_linger(Some(Duration::ZERO))?;
                return Ok(());
            }
            Some(Failure::Close) => {
                let _ = w.shutdown(Shutdown::Both);
                return Ok(());
            }
            None => {}
        }

        let conn_hdr = if close { "connection: close\r\n" } else { "" };
        if let Some(n) = path.strip_prefix("/large/") {
            let n: u64 = n.parse().unwrap();
            write!(
                w,
                "HTTP/1.1 200 OK\r\nx-backend: {name}\r\ncontent-length: {n}\r\n{conn_hdr}\r\n"
            )?;
            let mut bw = io::BufWriter::with_capacity(BLOCK, &mut w);
            write_pattern(&mut bw, n, false)?;
            bw.flush()?;
        } else if path == "/chunked" {
            write!(
                w,
                "HTTP/1.1 200 OK\r\nx-backend: {name}\r\ntransfer-encoding: chunked\r\n{conn_hdr}\r\n\
                 5\r\nhello\r\n6\r\n world\r\n0\r\nx-trailer-one: 1\r\nx-trailer-two: 2\r\n\r\n"
            )?;
        } else if path == "/malformed" {
            w.write_all(b"this is not http at all\r\n\r\n")?;
            return Ok(());
        } else if path == "/close" {
            let _ = w.shutdown(Shutdown::Both);
            return Ok(());
        } else if path == "/hop" {
            write!(
                w,
                "HTTP/1.1 200 OK\r\nx-backend: {name}\r\nconnection: x-resp-hop\r\n\
                 x-resp-hop: secret\r\nkeep-alive: timeout=5\r\nproxy-authenticate: Basic\r\n\
                 x-resp-end2end: kept\r\ncontent-length: 2\r\n{conn_hdr}\r\nok"
            )?;
        } else {
            if let Some(ms) = path.strip_prefix("/delay/") {
                backend_sleep(ms.parse().unwrap());
            } else if path.starts_with("/hold") {
                let mut closed = st.gate_closed.lock().unwrap();
                while *closed && !st.stop.load(SeqCst) {
                    closed = st.gate.wait(closed).unwrap();
                }
            } else {
                backend_sleep(st.delay_ms.load(SeqCst));
            }
            write!(
                w,
                "HTTP/1.1 200 OK\r\nx-backend: {name}\r\ncontent-type: text/plain\r\n\
                 content-length: {}\r\n{conn_hdr}\r\n{name}",
                name.len()
            )?;
            if path == "/oneshot" {
                let _ = w.shutdown(Shutdown::Both);
                return Ok(());
            }
        }
        if close {
            return Ok(());
        }
    }
}

/// Streams the request body back as it arrives, with the request's framing.
fn echo(
    r: &mut BufReader<TcpStream>,
    w: &mut TcpStream,
    head: &Head,
    name: &str,
    rec: &mut Recorded,
    last: &Mutex<Option<Recorded>>,
) -> io::Result<()> {
    if head.is_chunked() {
        write!(w, "HTTP/1.1 200 OK\r\nx-backend: {name}\r\ntransfer-encoding: chunked\r\n\r\n")?;
        let mut total = 0u64;
        let trailers = read_chunked(r, |b| {
            total += b.len() as u64;
            write!(w, "{:x}\r\n", b.len())?;
            w.write_all(b)?;
            w.write_all(b"\r\n")
        })?;
        rec.body_len = total;
        rec.trailers = trailers;
        // Recorded before the response ends: a client that has read it sees this request.
        *last.lock().unwrap() = Some(rec.clone());
        w.write_all(b"0\r\n")?;
        for (n, v) in &rec.trailers {
            write!(w, "{n}: {v}\r\n")?;
        }
        w.write_all(b"\r\n")?;
    } else {
        let n = head.content_length().unwrap_or(0);
        write!(w, "HTTP/1.1 200 OK\r\nx-backend: {name}\r\ncontent-length: {n}\r\n\r\n")?;
        read_sized(r, n, |b| w.write_all(b))?;
        rec.body_len = n;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// (b) Raw HTTP/1.1 client
// ---------------------------------------------------------------------------------------------

/// A complete response.
#[derive(Debug, Clone)]
pub struct Response {
    pub head: Head,
    pub body: Vec<u8>,
    pub trailers: Vec<(String, String)>,
}

impl Response {
    pub fn status(&self) -> u16 {
        self.head.start[1].parse().unwrap_or(0)
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.header(name)
    }
    /// The `x-backend` header the test backends add.
    pub fn backend(&self) -> &str {
        self.header("x-backend").unwrap_or("")
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One client connection; keep-alive by default.
pub struct Client {
    pub reader: BufReader<TcpStream>,
    pub writer: TcpStream,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let _ = stream.set_nodelay(true);
        Self {
            reader: BufReader::with_capacity(BLOCK, stream.try_clone().unwrap()),
            writer: stream,
        }
    }

    pub fn set_read_timeout(&self, t: Duration) {
        self.writer.set_read_timeout(Some(t)).unwrap();
    }

    /// Writes raw bytes.
    pub fn send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.writer.write_all(bytes)
    }

    /// Writes a request head (adding `Host: test` unless given) and a sized body.
    pub fn send(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> io::Result<()> {
        let sized = !body.is_empty() || method == "POST" || method == "PUT";
        let mut bytes = request_head(method, path, headers, sized.then_some(body.len()));
        bytes.extend_from_slice(body);
        self.writer.write_all(&bytes)
    }

    /// Writes a request head only (adding `Host: test` unless given), with `Content-Length`
    /// when `content_length` is set; the body, if any, follows with [`Client::send_raw`].
    pub fn send_head(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        content_length: Option<usize>,
    ) -> io::Result<()> {
        self.writer.write_all(&request_head(method, path, headers, content_length))
    }

    /// Sends a request and reads its response.
    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> io::Result<Response> {
        self.send(method, path, headers, body)?;
        self.read_response()
    }

    pub fn get(&mut self, path: &str) -> io::Result<Response> {
        self.request("GET", path, &[], b"")
    }

    /// Reads the next head (interim or final).
    pub fn read_head(&mut self) -> io::Result<Head> {
        read_head(&mut self.reader)?.ok_or_else(|| {
            io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed before a response")
        })
    }

    /// Reads the next final response (1xx heads are skipped), body and trailers included.
    pub fn read_response(&mut self) -> io::Result<Response> {
        let head = loop {
            let head = self.read_head()?;
            if !head.start[1].starts_with('1') {
                break head;
            }
        };
        let mut body = Vec::new();
        let trailers = self.read_body(&head, |b| {
            body.extend_from_slice(b);
            Ok(())
        })?;
        Ok(Response { head, body, trailers })
    }

    /// Reads the body of a response whose head was read, streaming it into `sink`.
    pub fn read_body(
        &mut self,
        head: &Head,
        mut sink: impl FnMut(&[u8]) -> io::Result<()>,
    ) -> io::Result<Vec<(String, String)>> {
        let status: u16 = head.start[1].parse().unwrap_or(0);
        if status == 204 || status == 304 {
            return Ok(Vec::new());
        }
        if head.is_chunked() {
            read_chunked(&mut self.reader, sink)
        } else if let Some(n) = head.content_length() {
            read_sized(&mut self.reader, n, sink).map(|()| Vec::new())
        } else {
            let mut buf = vec![0u8; BLOCK];
            loop {
                let n = self.reader.read(&mut buf)?;
                if n == 0 {
                    return Ok(Vec::new());
                }
                sink(&buf[..n])?;
            }
        }
    }

    /// Reads the body of a response whose head was read, checking it against the pattern
    /// [`write_pattern`] writes.
    pub fn read_pattern_body(&mut self, head: &Head) -> io::Result<PatternCheck> {
        let mut check = PatternCheck::default();
        self.read_body(head, |b| {
            check.feed(b);
            Ok(())
        })?;
        Ok(check)
    }

    /// Whether the server closed the connection: a read returns EOF (or a reset) within `t`.
    pub fn is_closed_by_peer(&mut self, t: Duration) -> bool {
        self.set_read_timeout(t);
        let mut b = [0u8; 1];
        match self.reader.read(&mut b) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => matches!(
                e.kind(),
                io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted
            ),
        }
    }

    /// Starts a thread that writes a `len`-byte pattern body (sized or chunked, with optional
    /// trailers) on a clone of the socket; the caller reads the response concurrently.
    pub fn stream_body_in_thread(
        &self,
        len: u64,
        chunked: bool,
        trailers: &'static str,
    ) -> std::thread::JoinHandle<io::Result<()>> {
        let stream = self.writer.try_clone().unwrap();
        std::thread::spawn(move || {
            let mut w = io::BufWriter::with_capacity(BLOCK, stream);
            write_pattern(&mut w, len, chunked)?;
            if chunked {
                write!(w, "0\r\n{trailers}\r\n")?;
            }
            w.flush()
        })
    }
}

/// A request head: `Host: test` unless `headers` name one, then `headers`, then
/// `Content-Length` when given.
fn request_head(
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    content_length: Option<usize>,
) -> Vec<u8> {
    let mut req = format!("{method} {path} HTTP/1.1\r\n");
    if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("host")) {
        req.push_str("Host: test\r\n");
    }
    for (n, v) in headers {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    if let Some(len) = content_length {
        req.push_str(&format!("Content-Length: {len}\r\n"));
    }
    req.push_str("\r\n");
    req.into_bytes()
}

/// Sends `GET path` on a fresh connection with `Connection: close`.
pub fn get_once(addr: SocketAddr, path: &str) -> io::Result<Response> {
    let mut c = Client::connect(addr);
    c.request("GET", path, &[("Connection", "close")], b"")
}

/// Counts the responses per backend name.
pub fn tally(responses: &[Response]) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for r in responses {
        *m.entry(r.backend().to_owned()).or_insert(0) += 1;
    }
    m
}

// ---------------------------------------------------------------------------------------------
// (c) The fulcrum process
// ---------------------------------------------------------------------------------------------

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
}

/// Starts `fulcrum` on one worker with the admin API on (a test JWT secret, so `/metrics`
/// answers), `extra` appended to its config file, and `backends` in this order. The file lives
/// as long as the returned [`TempFile`].
pub fn start_one_worker(extra: &str, backends: &[String]) -> (Fulcrum, TempFile) {
    start_with_config(
        "one-worker",
        &format!(
            "workers = 1\n[admin]\njwt_secret = \"test-secret-0123456789abcdef-0123\"\n{extra}"
        ),
        backends,
        &[],
    )
}

/// Starts `fulcrum` with `config` as its config file (named after `tag`), `backends` in this
/// order, then `extra_args`. The file lives as long as the returned [`TempFile`].
pub fn start_with_config(
    tag: &str,
    config: &str,
    backends: &[String],
    extra_args: &[String],
) -> (Fulcrum, TempFile) {
    let conf = TempFile::with_contents(tag, config);
    let mut args = vec!["--config".to_owned(), conf.path_str()];
    for b in backends {
        args.extend(["--backend".to_owned(), b.clone()]);
    }
    args.extend_from_slice(extra_args);
    (Fulcrum::start(&args), conf)
}

/// The backend flags for `backends`.
pub fn backend_args(backends: &[&TestBackend]) -> Vec<String> {
    backends.iter().flat_map(|b| ["--backend".to_owned(), b.url()]).collect()
}

impl Fulcrum {
    /// Spawns `fulcrum` with `args` and returns at once. `--listen 127.0.0.1:0` and
    /// `--admin-listen 127.0.0.1:0` are added unless `args` set them or run a subcommand.
    pub fn spawn<S: AsRef<str>>(args: &[S]) -> Self {
        Self::spawn_with(args, |_| {})
    }

    /// [`Fulcrum::spawn`], letting `setup` adjust the command first (environment variables, a
    /// piped stdout to read with [`Fulcrum::take_stdout`]).
    pub fn spawn_with<S: AsRef<str>>(args: &[S], setup: impl FnOnce(&mut Command)) -> Self {
        let mut argv: Vec<String> = args.iter().map(|a| a.as_ref().to_owned()).collect();
        let subcommand = argv.first().is_some_and(|a| !a.starts_with('-'));
        if !subcommand {
            if !argv.iter().any(|a| a == "--listen") {
                argv.extend(["--listen".into(), "127.0.0.1:0".into()]);
            }
            if !argv.iter().any(|a| a == "--admin-listen") {
                argv.extend(["--admin-listen".into(), "127.0.0.1:0".into()]);
            }
        }
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_fulcrum"));
        cmd.args(&argv).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
        setup(&mut cmd);
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
        Self { child, log, addr: None }
    }

    /// Spawns and waits (10 s at most) for the `msg=listening` line.
    pub fn start<S: AsRef<str>>(args: &[S]) -> Self {
        Self::start_with(args, |_| {})
    }

    /// [`Fulcrum::start`], letting `setup` adjust the command first (see [`Fulcrum::spawn_with`]).
    pub fn start_with<S: AsRef<str>>(args: &[S], setup: impl FnOnce(&mut Command)) -> Self {
        let mut f = Self::spawn_with(args, setup);
        f.wait_listening(Duration::from_secs(10))
            .unwrap_or_else(|| panic!("fulcrum did not report listening; log:\n{}", f.log_text()));
        f
    }

    /// Waits up to `timeout` for the `msg=listening` line and records its address (then
    /// [`Fulcrum::addr`] answers); `None` at the deadline or if the process exited first.
    pub fn wait_listening(&mut self, timeout: Duration) -> Option<SocketAddr> {
        let line = self.wait_for_line(timeout, |l| l.contains("msg=listening"))?;
        let addr = line_addr(&line).unwrap_or_else(|| panic!("no addr= in {line:?}"));
        self.addr = Some(addr);
        Some(addr)
    }

    /// Waits up to `timeout` for the `admin listening` line; its address, or `None` at the
    /// deadline or if the process exited first.
    pub fn wait_admin_listening(&self, timeout: Duration) -> Option<SocketAddr> {
        let line = self.wait_for_line(timeout, |l| l.contains("admin listening"))?;
        Some(line_addr(&line).unwrap_or_else(|| panic!("no addr= in {line:?}")))
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

    pub fn lines(&self) -> Vec<String> {
        self.log.0.lock().unwrap().lines.clone()
    }

    pub fn log_text(&self) -> String {
        self.lines().join("\n")
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr.expect("fulcrum was not started with Fulcrum::start")
    }

    /// The admin listener's address (from the `admin listening` line; needs an admin key).
    pub fn admin_addr(&self) -> SocketAddr {
        self.wait_admin_listening(Duration::from_secs(5))
            .unwrap_or_else(|| panic!("no admin listening line; log:\n{}", self.log_text()))
    }

    /// The value of a metric on `GET /metrics` (needs an admin key), if present: `name`, or
    /// `name{label="value"}` as rendered.
    pub fn metric(&self, name: &str) -> Option<f64> {
        let text = Client::connect(self.admin_addr()).get("/metrics").ok()?.text();
        text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
    }

    /// The process's stdout, if `setup` piped it (see [`Fulcrum::spawn_with`]).
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

/// The value of one series, written as rendered (`name{label="v"}`), from `GET /metrics` on
/// the admin listener (which must allow unauthenticated scrapes, the default).
pub fn metric(admin: SocketAddr, series: &str) -> Option<f64> {
    let resp = Client::connect(admin).get("/metrics").ok()?;
    resp.text().lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
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
