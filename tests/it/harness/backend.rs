//! HTTP/1.1 backends on std threads (one per connection), for the balancer to forward to:
//! [`TestBackend`], whose behaviour is chosen by request path and which records what it saw,
//! and [`RawBackend`], whose every answer a closure writes byte for byte (misbehaving backends,
//! interim responses, scripted caches).

use std::io::{self, BufReader, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use super::http1::{BLOCK, Head, PatternCheck, read_chunked, read_head, read_sized, write_pattern};

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
    /// A header's value (the first, case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
    /// Whether the request carried the header.
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
    listener: Option<TcpListener>,
}

impl BackendBuilder {
    /// The name it answers with (body and `x-backend`).
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
    /// Serves on `listener` (a port reserved earlier) instead of a new ephemeral port.
    pub fn listener(mut self, listener: TcpListener) -> Self {
        self.listener = Some(listener);
        self
    }
    /// Starts it.
    pub fn spawn(self) -> TestBackend {
        let listener = self.listener.unwrap_or_else(|| TcpListener::bind("127.0.0.1:0").unwrap());
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
    /// A backend named `backend`, prompt, numbering its own arrivals.
    pub fn builder() -> BackendBuilder {
        BackendBuilder {
            name: "backend".into(),
            delay: Duration::ZERO,
            sequence: None,
            failure: None,
            listener: None,
        }
    }
    /// A prompt backend named `name`.
    pub fn named(name: &str) -> Self {
        Self::builder().name(name).spawn()
    }
    /// Its `http://` URL.
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
    /// The last request it read.
    pub fn last_request(&self) -> Option<Recorded> {
        self.state.last.lock().unwrap().clone()
    }
    /// The arrival numbers (from the backend's sequence) of every request it received.
    pub fn arrivals(&self) -> Vec<u64> {
        self.state.arrivals.lock().unwrap().clone()
    }
    /// The delay before answering a plain request, from now on.
    pub fn set_delay(&self, delay: Duration) {
        self.state.delay_ms.store(delay.as_millis() as u64, SeqCst);
    }
    /// From now on, `/hold` requests wait until [`release`](Self::release).
    pub fn hold(&self) {
        *self.state.gate_closed.lock().unwrap() = true;
    }
    /// Lets held `/hold` requests (and later ones) be answered.
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
// A backend whose answers a closure writes
// ---------------------------------------------------------------------------------------------

/// One request as a [`RawBackend`] read it: the head and the whole body.
#[derive(Debug, Clone)]
pub struct RawRequest {
    pub head: Head,
    pub body: Vec<u8>,
}

impl RawRequest {
    /// The request method.
    pub fn method(&self) -> &str {
        &self.head.start[0]
    }
    /// The request target.
    pub fn target(&self) -> &str {
        &self.head.start[1]
    }
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.header(name)
    }
}

/// What a [`RawBackend`] does with the connection once its answer is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Then {
    /// Reads the next request.
    KeepAlive,
    /// Closes in order (FIN).
    Close,
}

type Answer = dyn Fn(&RawRequest) -> (Vec<u8>, Then) + Send + Sync;

/// An HTTP/1.1 backend whose every answer is written, byte for byte, by a closure given the
/// request it read (head and whole body, sized or chunked). For backends that misbehave on
/// purpose: malformed heads, truncated bodies, interim responses, upgrades.
pub struct RawBackend {
    addr: SocketAddr,
    requests: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl RawBackend {
    /// Answers every request with `answer`'s bytes, then does what it says.
    pub fn new(answer: impl Fn(&RawRequest) -> (Vec<u8>, Then) + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let answer: Arc<Answer> = Arc::new(answer);
        let (count, stopped) = (requests.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stopped.load(SeqCst) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                let (answer, count) = (answer.clone(), count.clone());
                std::thread::spawn(move || {
                    let _ = serve_raw(conn, &*answer, &count);
                });
            }
        });
        Self { addr, requests, stop }
    }

    /// Answers every request with the same bytes, then closes the connection.
    pub fn fixed(bytes: impl Into<Vec<u8>>) -> Self {
        let bytes = bytes.into();
        Self::new(move |_| (bytes.clone(), Then::Close))
    }

    /// Its `http://` URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requests read so far.
    pub fn requests(&self) -> usize {
        self.requests.load(SeqCst)
    }
}

impl Drop for RawBackend {
    fn drop(&mut self) {
        self.stop.store(true, SeqCst);
        let _ = TcpStream::connect(self.addr);
    }
}

fn serve_raw(conn: TcpStream, answer: &Answer, count: &AtomicUsize) -> io::Result<()> {
    let _ = conn.set_nodelay(true);
    let mut r = BufReader::new(conn.try_clone()?);
    let mut w = conn;
    while let Some(head) = read_head(&mut r)? {
        let mut body = Vec::new();
        let sink = |b: &[u8]| {
            body.extend_from_slice(b);
            Ok(())
        };
        if head.is_chunked() {
            read_chunked(&mut r, sink)?;
        } else {
            read_sized(&mut r, head.content_length().unwrap_or(0), sink)?;
        }
        count.fetch_add(1, SeqCst);
        let (bytes, then) = answer(&RawRequest { head, body });
        w.write_all(&bytes)?;
        if then == Then::Close {
            let _ = w.shutdown(Shutdown::Both);
            return Ok(());
        }
    }
    Ok(())
}
