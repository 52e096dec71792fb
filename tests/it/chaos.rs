//! Chaos under load, against the real binary: while client threads send keep-alive GETs and
//! POSTs, one of three backends is killed abruptly (listener closed, every connection reset)
//! and restarted on the same port, a fourth backend is added and another removed over the
//! admin API, and the algorithm is switched twice. Every GET must succeed; every POST must get
//! exactly one response and be processed at most once, exactly once when it succeeded.

use std::collections::HashMap;
use std::io::{self, BufReader, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::harness::http1::{read_head, read_sized};
use crate::harness::*;
use serde_json::json;

/// Client threads of the load generator (each alternates GET and POST on one connection).
const CLIENTS: usize = 4;
/// Most requests one client thread sends (the load also stops when the script ends).
const MAX_REQUESTS_PER_CLIENT: u64 = 20_000;
/// Completed requests between two chaos steps, so each step happens under load.
const REQUESTS_PER_STEP: u64 = 1000;
/// Deadline of each step's readiness condition.
const STEP_DEADLINE: Duration = Duration::from_secs(20);
/// How long a backend "processes" a request between reading it and answering, so a kill
/// regularly lands between the two.
const PROCESSING: Duration = Duration::from_millis(1);

// ---------------------------------------------------------------------------------------------
// A backend that can die abruptly and come back on the same port
// ---------------------------------------------------------------------------------------------

/// What a backend did, across its restarts.
#[derive(Default)]
struct Ledger {
    /// Ids of the POSTs it processed (read completely, before answering), in order.
    posts: Mutex<Vec<u64>>,
    /// Requests of any kind it processed.
    requests: AtomicU64,
}

/// One life of a backend: its accept thread and every connection it accepted.
struct Life {
    killed: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
    accept: JoinHandle<()>,
}

/// An HTTP/1.1 keep-alive backend on std threads. `GET` answers 200 with its name; `POST`
/// records the id in its body (`id=N`) and echoes it in `x-post-id`.
struct ChaosBackend {
    name: &'static str,
    addr: SocketAddr,
    ledger: Arc<Ledger>,
    life: Option<Life>,
}

impl ChaosBackend {
    fn start(name: &'static str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let mut b = Self { name, addr, ledger: Arc::default(), life: None };
        b.live(listener);
        b
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn requests(&self) -> u64 {
        self.ledger.requests.load(SeqCst)
    }

    fn live(&mut self, listener: TcpListener) {
        let killed = Arc::new(AtomicBool::new(false));
        let conns = Arc::new(Mutex::new(Vec::new()));
        let (k, c, ledger, name) = (killed.clone(), conns.clone(), self.ledger.clone(), self.name);
        let accept = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if k.load(SeqCst) {
                    return; // drops the listener: new connections are refused
                }
                let Ok(stream) = stream else { continue };
                c.lock().unwrap().push(stream.try_clone().unwrap());
                let (k, ledger) = (k.clone(), ledger.clone());
                std::thread::spawn(move || {
                    let _ = serve(stream, &k, &ledger, name);
                });
            }
        });
        self.life = Some(Life { killed, conns, accept });
    }

    /// Dies abruptly: the listener is closed (connects are refused) and every open connection
    /// is reset, including those with a request being processed (which get no answer).
    fn kill(&mut self) {
        let life = self.life.take().expect("backend is not running");
        life.killed.store(true, SeqCst);
        let _ = TcpStream::connect(self.addr); // wakes the accept loop, which drops the listener
        life.accept.join().unwrap();
        for conn in life.conns.lock().unwrap().drain(..) {
            // Linger 0: the last close sends a RST. Shutting the read side wakes the serving
            // thread (EOF), which then closes without answering.
            let _ = socket2::SockRef::from(&conn).set_linger(Some(Duration::ZERO));
            let _ = conn.shutdown(Shutdown::Read);
        }
    }

    /// Listens again on the same port.
    fn restart(&mut self) {
        let mut listener = None;
        expect_within(STEP_DEADLINE, "rebinding the backend's port", || {
            listener = TcpListener::bind(self.addr).ok();
            listener.is_some()
        });
        self.live(listener.unwrap());
    }
}

impl Drop for ChaosBackend {
    fn drop(&mut self) {
        if self.life.is_some() {
            self.kill();
        }
    }
}

#[allow(clippy::disallowed_methods)] // a backend's processing time is its behaviour, not a wait
fn serve(stream: TcpStream, killed: &AtomicBool, ledger: &Ledger, name: &str) -> io::Result<()> {
    let _ = stream.set_nodelay(true);
    let mut r = BufReader::new(stream.try_clone()?);
    let mut w = stream;
    while let Some(head) = read_head(&mut r)? {
        let mut body = Vec::new();
        read_sized(&mut r, head.content_length().unwrap_or(0), |b| {
            body.extend_from_slice(b);
            Ok(())
        })?;
        if killed.load(SeqCst) {
            return Ok(());
        }
        let id = post_id(&head, &body);
        if let Some(id) = id {
            ledger.posts.lock().unwrap().push(id);
        }
        ledger.requests.fetch_add(1, SeqCst);
        std::thread::sleep(PROCESSING);
        if killed.load(SeqCst) {
            return Ok(()); // processed, but died before answering
        }
        let echo = id.map(|id| format!("x-post-id: {id}\r\n")).unwrap_or_default();
        write!(
            w,
            "HTTP/1.1 200 OK\r\nx-backend: {name}\r\n{echo}content-length: {}\r\n\r\n{name}",
            name.len()
        )?;
    }
    Ok(())
}

fn post_id(head: &Head, body: &[u8]) -> Option<u64> {
    if head.start[0] != "POST" {
        return None;
    }
    let text = std::str::from_utf8(body).ok()?;
    text.strip_prefix("id=")?.parse().ok()
}

// ---------------------------------------------------------------------------------------------
// Load generator
// ---------------------------------------------------------------------------------------------

/// How one request ended for the client.
#[derive(Debug)]
enum Outcome {
    /// A complete response with this status (and, for POSTs, the echoed id).
    Status(u16, Option<u64>),
    /// No response: the connection failed or closed first.
    Lost(String),
}

impl Outcome {
    fn describe(&self) -> String {
        match self {
            Outcome::Status(status, Some(id)) => format!("{status} (x-post-id {id})"),
            Outcome::Status(status, None) => status.to_string(),
            Outcome::Lost(error) => format!("no response: {error}"),
        }
    }
}

#[derive(Default)]
struct Results {
    gets: Vec<Outcome>,
    posts: HashMap<u64, Vec<Outcome>>,
}

struct Load {
    stop: Arc<AtomicBool>,
    completed: Arc<AtomicU64>,
    threads: Vec<JoinHandle<Results>>,
}

impl Load {
    fn start(addr: SocketAddr) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let completed = Arc::new(AtomicU64::new(0));
        let threads = (0..CLIENTS as u64)
            .map(|t| {
                let (stop, completed) = (stop.clone(), completed.clone());
                std::thread::spawn(move || client_loop(addr, t, &stop, &completed))
            })
            .collect();
        Self { stop, completed, threads }
    }

    fn completed(&self) -> u64 {
        self.completed.load(SeqCst)
    }

    /// Waits until `n` more requests have completed.
    fn run_for(&self, n: u64, what: &str) {
        let target = self.completed() + n;
        expect_within(STEP_DEADLINE, what, || self.completed() >= target);
    }

    fn finish(self) -> Results {
        self.stop.store(true, SeqCst);
        let mut all = Results::default();
        for t in self.threads {
            let r = t.join().unwrap();
            all.gets.extend(r.gets);
            all.posts.extend(r.posts);
        }
        all
    }
}

fn client_loop(addr: SocketAddr, thread: u64, stop: &AtomicBool, completed: &AtomicU64) -> Results {
    let mut results = Results::default();
    let mut client: Option<Client> = None;
    for i in 0..MAX_REQUESTS_PER_CLIENT {
        if stop.load(SeqCst) {
            break;
        }
        let c = client.get_or_insert_with(|| Client::connect(addr));
        let post = i % 2 == 1;
        let id = thread * MAX_REQUESTS_PER_CLIENT + i;
        let outcome = if post {
            let body = format!("id={id}");
            c.request("POST", "/submit", &[("x-post-id", &id.to_string())], body.as_bytes())
        } else {
            c.get("/get")
        };
        let outcome = match outcome {
            Ok(resp) => {
                if resp.head.has_token("connection", "close") {
                    client = None;
                }
                let echoed = resp.header("x-post-id").and_then(|v| v.parse().ok());
                Outcome::Status(resp.status(), echoed)
            }
            Err(e) => {
                client = None;
                Outcome::Lost(e.to_string())
            }
        };
        if post {
            results.posts.entry(id).or_default().push(outcome);
        } else {
            results.gets.push(outcome);
        }
        completed.fetch_add(1, SeqCst);
    }
    results
}

// ---------------------------------------------------------------------------------------------
// The scenario
// ---------------------------------------------------------------------------------------------

#[test]
fn no_failed_gets_and_no_lost_or_duplicated_posts_under_chaos() {
    let mut backends: Vec<ChaosBackend> =
        ["b0", "b1", "b2"].into_iter().map(ChaosBackend::start).collect();
    // A refused connect ejects a backend for a short while only, so the restart is seen.
    let f = Fulcrum::builder()
        .backends(backends.iter().map(ChaosBackend::url))
        .config("[health]\nmax_fails = 1\neject_ms = 200\n\n[telemetry]\naccess_log = \"off\"")
        .start();
    let token = write_token();

    let load = Load::start(f.addr());
    load.run_for(REQUESTS_PER_STEP, "load before the first step");

    backends[0].kill();
    load.run_for(REQUESTS_PER_STEP, "load with b0 dead");
    backends[0].restart();
    let before = backends[0].requests();
    expect_within(STEP_DEADLINE, "restarted b0 serving again", || backends[0].requests() > before);
    load.run_for(REQUESTS_PER_STEP, "load after b0 restarted");

    backends.push(ChaosBackend::start("b3"));
    f.admin()
        .send("POST", "/api/v1/backends", Some(&token), &json!({"url": backends[3].url()}))
        .expect(201, None);
    expect_within(STEP_DEADLINE, "added b3 serving", || backends[3].requests() > 0);
    load.run_for(REQUESTS_PER_STEP, "load after adding b3");

    f.admin().remove_backend(&backends[1].url());
    load.run_for(REQUESTS_PER_STEP, "load after removing b1");
    let b1_after_removal = backends[1].requests();

    for algorithm in ["least_connections", "random"] {
        f.admin()
            .send("PUT", "/api/v1/algorithm", Some(&token), &json!({ "algorithm": algorithm }))
            .expect(200, None);
        load.run_for(REQUESTS_PER_STEP, "load after an algorithm switch");
    }
    let results = load.finish();

    // Idempotent requests: every one succeeded.
    let failed_gets: Vec<String> = results
        .gets
        .iter()
        .filter(|o| !matches!(o, Outcome::Status(200, _)))
        .map(Outcome::describe)
        .collect();
    assert!(
        failed_gets.is_empty(),
        "{} of {} GETs failed, e.g. {:?}",
        failed_gets.len(),
        results.gets.len(),
        &failed_gets[..failed_gets.len().min(5)]
    );

    // Non-idempotent requests: one response each; processed once if it succeeded, at most
    // once if it failed, never twice.
    let mut processed: HashMap<u64, Vec<&str>> = HashMap::new();
    for b in &backends {
        for &id in b.ledger.posts.lock().unwrap().iter() {
            processed.entry(id).or_default().push(b.name);
        }
    }
    let mut problems = Vec::new();
    let mut failed_posts = 0;
    for (id, outcomes) in &results.posts {
        let by = processed.get(id).map(Vec::as_slice).unwrap_or_default();
        let times = by.len();
        match outcomes.as_slice() {
            [Outcome::Status(200, echoed)] if times == 1 && *echoed == Some(*id) => {}
            [Outcome::Status(502 | 503, _)] if times <= 1 => failed_posts += 1,
            other => {
                let answers: Vec<String> = other.iter().map(Outcome::describe).collect();
                problems.push(format!("POST {id}: answered {answers:?}, processed by {by:?}"));
            }
        }
    }
    let unsent: Vec<&u64> = processed.keys().filter(|id| !results.posts.contains_key(id)).collect();
    assert!(unsent.is_empty(), "backends processed POSTs never sent: {unsent:?}");
    assert!(
        problems.is_empty(),
        "{} of {} POSTs lost, duplicated or misanswered, e.g. {:?}",
        problems.len(),
        results.posts.len(),
        &problems[..problems.len().min(5)]
    );

    // The scenario really happened under load, and the removed backend got nothing new
    // (requests it had already accepted may have finished after the removal).
    assert!(results.gets.len() + results.posts.len() >= 7 * REQUESTS_PER_STEP as usize);
    assert!(
        backends[1].requests() <= b1_after_removal + CLIENTS as u64,
        "removed b1 kept getting requests"
    );
    eprintln!(
        "chaos: {} GETs, {} POSTs ({failed_posts} answered 502/503), per backend {:?}",
        results.gets.len(),
        results.posts.len(),
        backends.iter().map(|b| (b.name, b.requests())).collect::<Vec<_>>()
    );
}
