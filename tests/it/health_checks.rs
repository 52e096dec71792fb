//! Backend health through the real binary. Active checks: HTTP/1.1 test backends whose
//! `/healthz` can be switched to failing or slow, and tonic echo backends answering
//! `grpc.health.v1.Health/Check`, checked every [`CHECK_MS`]. Passive health: connect failures
//! that eject a backend for `health.eject_ms`. Every wait polls `/api/v1/config`, `/metrics`, the
//! backends or the log with a deadline.

use std::collections::HashSet;
use std::sync::atomic::Ordering::SeqCst;
use std::time::{Duration, Instant};

use crate::harness::*;
use serde_json::{Value, json};

/// The check interval and timeout, in ms. A check of a healthy loopback backend takes well
/// under a millisecond, but a loaded machine stalls one for hundreds now and then: at 100 ms
/// healthy backends were taken out (two timeouts in a row) and `last_error` changed under the
/// tests. 500 ms keeps a rise or fall of 2 near a second, with a wide margin.
const CHECK_MS: u64 = 500;

/// How long a state change may take to show (many check intervals).
const DEADLINE: Duration = Duration::from_secs(20);

/// `[health_check]` with checks every [`CHECK_MS`] (timing out after as long), rise 2, fall 2,
/// and `extra` lines.
fn health_config(extra: &str) -> String {
    format!(
        "[health_check]\nenabled = true\npath = \"/healthz\"\ninterval_ms = {CHECK_MS}\n\
         timeout_ms = {CHECK_MS}\nrise = 2\nfall = 2\n{extra}"
    )
}

fn start(backends: &[String]) -> Fulcrum {
    Fulcrum::builder().backends(backends).config(&health_config("")).start()
}

/// The `health` object of the backend with `url` in `/api/v1/config`.
fn health_of(lb: &Fulcrum, url: &str) -> Value {
    let config = lb.admin().get("/api/v1/config", Some(&read_token())).expect(200, None).json();
    let backend = config["backends"].as_array().unwrap().iter().find(|b| b["url"] == url).cloned();
    backend.unwrap_or_else(|| panic!("no backend {url} in {config}"))["health"].clone()
}

fn wait_state(lb: &Fulcrum, url: &str, state: &str) -> Value {
    let mut last = Value::Null;
    expect_within(DEADLINE, &format!("{url} {state}"), || {
        last = health_of(lb, url);
        last["state"] == state
    });
    last
}

fn metric(lb: &Fulcrum, name: &str, labels: &str) -> Option<f64> {
    lb.metric(&format!("{name}{{{labels}}}"))
}

/// Which backends served `n` plain requests.
fn served_by(lb: &Fulcrum, n: usize) -> HashSet<String> {
    (0..n)
        .map(|_| {
            let r = lb.get("/");
            assert_eq!(r.status(), 200, "{}", r.text());
            r.backend().to_owned()
        })
        .collect()
}

#[test]
fn failing_backend_is_taken_out_after_fall_checks_and_back_after_rise() {
    let (a, b) = (TestBackend::named("a"), TestBackend::named("b"));
    let lb = start(&[a.url(), b.url()]);
    wait_state(&lb, &a.url(), "up");
    wait_state(&lb, &b.url(), "up");
    assert_eq!(served_by(&lb, 8), HashSet::from(["a".into(), "b".into()]));
    let label = format!("pool=\"default\",backend=\"{}\"", b.url());
    assert_eq!(metric(&lb, "fulcrum_backend_up", &label), Some(1.0));

    b.set_health_status(503);
    let health = wait_state(&lb, &b.url(), "down");
    assert!(health["consecutive_fail"].as_u64().unwrap() >= 2, "{health}");
    assert_eq!(health["consecutive_ok"], 0, "{health}");
    assert_eq!(health["last_error"], "status 503", "{health}");
    assert!(health["checked_at_unix_ms"].as_u64().unwrap() > 0, "{health}");
    expect_within(DEADLINE, "fulcrum_backend_up 0", || {
        metric(&lb, "fulcrum_backend_up", &label) == Some(0.0)
    });
    let failed = format!("{label},result=\"failed\"");
    expect_within(DEADLINE, "two failed checks counted", || {
        metric(&lb, "fulcrum_health_checks_total", &failed).is_some_and(|n| n >= 2.0)
    });
    let line = lb.wait_log(&format!("backend={} from=up to=down", b.url()));
    assert!(line.contains("backend down: active health check failed"), "{line}");
    assert!(line.contains("status 503"), "{line}");

    // No traffic reaches the down backend.
    let before = b.requests();
    assert_eq!(served_by(&lb, 10), HashSet::from(["a".into()]));
    assert_eq!(b.requests(), before);
    // The passive view is separate: the backend is still reachable.
    let listed = lb.admin().get("/api/v1/backends", Some(&read_token())).expect(200, None).json();
    assert!(listed.as_array().unwrap().iter().all(|b| b["healthy"] == true), "{listed}");

    b.set_health_status(200);
    let health = wait_state(&lb, &b.url(), "up");
    assert!(health["consecutive_ok"].as_u64().unwrap() >= 2, "{health}");
    assert_eq!(health["last_error"], "status 503", "the last failure is kept: {health}");
    let log = lb.log_text();
    assert!(log.contains(&format!("backend={} from=down to=up", b.url())), "{log}");
    assert_eq!(served_by(&lb, 8), HashSet::from(["a".into(), "b".into()]));
    expect_within(DEADLINE, "fulcrum_backend_up 1", || {
        metric(&lb, "fulcrum_backend_up", &label) == Some(1.0)
    });
}

/// Requests a backend received, against what the slow-start share predicts.
#[derive(Debug, Default)]
struct Tally {
    requests: usize,
    observed: usize,
    /// Sum of each request's chance to reach the backend.
    expected: f64,
    /// Sum of each request's variance.
    variance: f64,
}

impl Tally {
    fn add(&mut self, requests: usize, observed: usize, chance: f64) {
        self.requests += requests;
        self.observed += observed;
        self.expected += requests as f64 * chance;
        self.variance += requests as f64 * chance * (1.0 - chance);
    }
    fn fraction(&self) -> f64 {
        self.observed as f64 / self.requests as f64
    }
    /// Whether what was observed is within 5 standard deviations (plus one request) of the
    /// prediction.
    fn as_predicted(&self) -> bool {
        (self.observed as f64 - self.expected).abs() <= 5.0 * self.variance.sqrt() + 1.0
    }
}

/// b comes back from `down` with a share of new requests that starts at a 10% floor and grows
/// linearly to all of it over `slow_start_ms`. Every reading of b's share must lie in the
/// envelope the test's own clock allows, however slow the machine: the ramp began after b's
/// check was switched back to passing and before the `from=down to=up` line showed, so a reading
/// is at most what the ramp reaches by its answer counted from the switch, and at least what it
/// reaches by its request counted from the line. A missing or instant ramp leaves the envelope
/// at the top, a stuck one at the bottom. With `random` over two backends a request reaches b
/// with chance share / 2, so b's traffic is measured in batches of requests between two readings
/// of its share, and compared with that prediction early (share <= 30%) and late (share >= 70%)
/// in the ramp: without the ramp b would take half of the early requests; stuck at its floor,
/// far too few of the late ones. Four connections send each batch at once, so a slow machine
/// still fits 50 requests in each of those windows.
#[test]
fn a_returning_backend_ramps_up_during_slow_start() {
    const RAMP_MS: u64 = 6000;
    let (a, b) = (TestBackend::named("a"), TestBackend::named("b"));
    let lb = Fulcrum::builder()
        .workers(1)
        .algorithm("random")
        .backends([&a, &b])
        // Keep-alive connections carry every request.
        .config(&health_config(&format!("slow_start_ms = {RAMP_MS}")))
        .config("[limits]\nmax_requests_per_connection = 0")
        .start();
    let health = wait_state(&lb, &b.url(), "up");
    assert_eq!(health["share_percent"], 100, "no slow start from unknown: {health}");
    b.set_health_status(503);
    wait_state(&lb, &b.url(), "down");
    let switched = Instant::now();
    b.set_health_status(200);
    wait_state(&lb, &b.url(), "up");
    let line = lb.wait_log(&format!("backend={} from=down to=up", b.url()));
    let logged = Instant::now();
    assert!(line.contains(&format!("slow_start_ms={RAMP_MS}")), "{line}");

    // The ramp's share in percent `elapsed` after it began (the floor is 10%).
    let ramp = |elapsed: Duration| (elapsed.as_millis() as u64 * 100 / RAMP_MS).clamp(10, 100);
    let share = || {
        let asked = Instant::now();
        let share = health_of(&lb, &b.url())["share_percent"].as_u64().unwrap();
        let (low, high) = (ramp(asked - logged), ramp(switched.elapsed()));
        assert!(
            low.saturating_sub(2) <= share && share <= high + 2,
            "share {share}% outside {low}..={high}% at {:?} into the ramp",
            asked - logged
        );
        share
    };
    let mut clients: Vec<Client> = (0..4).map(|_| Client::connect(lb.addr())).collect();
    // Five requests on each connection, concurrently: how many reached b.
    let mut batch = || {
        std::thread::scope(|s| {
            let sent = clients.iter_mut().map(|c| {
                s.spawn(move || (0..5).filter(|_| c.get("/").unwrap().backend() == "b").count())
            });
            sent.collect::<Vec<_>>().into_iter().map(|h| h.join().unwrap()).sum::<usize>()
        })
    };
    let (mut early, mut late) = (Tally::default(), Tally::default());
    let mut shares = vec![share()];
    while shares.last() != Some(&100) {
        let waited = logged.elapsed();
        assert!(waited < Duration::from_millis(RAMP_MS) + DEADLINE, "no end: {shares:?}");
        let before = *shares.last().unwrap();
        let to_b = batch();
        let after = share();
        shares.push(after);
        let chance = (before + after) as f64 / 400.0;
        if after <= 30 {
            early.add(20, to_b, chance);
        } else if before >= 70 && after < 100 {
            late.add(20, to_b, chance);
        }
    }
    assert!(shares.windows(2).all(|w| w[0] <= w[1]), "the share only rises: {shares:?}");
    for (what, t) in [("early", &early), ("late", &late)] {
        assert!(t.requests >= 50, "{what}: only {} requests measured", t.requests);
        assert!(t.as_predicted(), "{what} in the ramp: {t:?}");
    }
    assert!(early.fraction() + 0.1 < late.fraction(), "early {early:?}, late {late:?}");

    // Ramp over: b takes its full half.
    let before = b.requests();
    for _ in 0..200 {
        assert_eq!(clients[0].get("/").unwrap().status(), 200);
    }
    let to_b = b.requests() - before;
    assert!((65..=135).contains(&to_b), "{to_b} of 200 after the ramp");
}

#[test]
fn every_backend_down_fails_open_and_says_so() {
    let (a, b) = (TestBackend::named("a"), TestBackend::named("b"));
    a.set_health_status(500);
    b.set_health_status(404);
    let lb = start(&[a.url(), b.url()]);
    wait_state(&lb, &a.url(), "down");
    wait_state(&lb, &b.url(), "down");
    let line = lb.wait_log("every backend is down: failing open");
    assert!(line.contains("protocol=http"), "{line}");

    // Requests are still served, by all of them.
    assert_eq!(served_by(&lb, 8), HashSet::from(["a".into(), "b".into()]));

    a.set_health_status(204);
    wait_state(&lb, &a.url(), "up");
    lb.wait_log("a backend is up again: fail-open over");
    assert_eq!(served_by(&lb, 8), HashSet::from(["a".into()]));
}

#[test]
fn backend_added_at_run_time_is_checked_and_removed_one_is_not() {
    let (a, b) = (TestBackend::named("a"), TestBackend::named("b"));
    b.set_health_status(503);
    let lb = start(&[a.url()]);
    wait_state(&lb, &a.url(), "up");

    let created = lb
        .admin()
        .send("POST", "/api/v1/backends", Some(&write_token()), &json!({ "url": b.url() }))
        .expect(201, None)
        .json();
    assert_eq!(created["health"]["state"], "unknown", "{created}");
    let id = created["id"].as_u64().unwrap();
    expect_within(DEADLINE, "b checked and down", || {
        let one = lb.admin().get(&format!("/api/v1/backends/{id}"), Some(&read_token()));
        one.expect(200, None).json()["health"]["state"] == "down"
    });
    assert!(b.health_checks() >= 2);
    assert_eq!(served_by(&lb, 6), HashSet::from(["a".into()]));

    lb.admin()
        .send("DELETE", &format!("/api/v1/backends/{id}"), Some(&write_token()), &Value::Null)
        .expect(204, None);
    // At most a check already under way reaches b after its removal, while `a` keeps being
    // checked.
    let (removed_at, a_at) = (b.health_checks(), a.health_checks());
    expect_within(DEADLINE, "five more checks of a", || a.health_checks() >= a_at + 5);
    assert!(b.health_checks() <= removed_at + 1, "{} > {removed_at} + 1", b.health_checks());
    let m = lb.metrics();
    let series = m.series("fulcrum_");
    assert!(series.iter().all(|k| !k.contains(&b.url())), "removed backend in metrics: {series:?}");
}

#[test]
fn a_check_that_times_out_is_a_failure() {
    let (a, b) = (TestBackend::named("a"), TestBackend::named("b"));
    let lb = start(&[a.url(), b.url()]);
    wait_state(&lb, &b.url(), "up");
    b.set_health_delay(Duration::from_millis(CHECK_MS * 4));
    let health = wait_state(&lb, &b.url(), "down");
    assert_eq!(health["last_error"], format!("timed out after {CHECK_MS} ms"), "{health}");
    assert_eq!(served_by(&lb, 6), HashSet::from(["a".into()]));
    b.set_health_delay(Duration::ZERO);
    wait_state(&lb, &b.url(), "up");
}

/// Which backends served `calls` unary calls, each on a new connection.
fn grpc_backends(lb: &Fulcrum, calls: usize) -> HashSet<String> {
    run(async {
        let mut seen = HashSet::new();
        for _ in 0..calls {
            seen.insert(GrpcClient::connect(lb.addr()).await.say("hi").await.unwrap().backend);
        }
        seen
    })
}

#[test]
fn h2c_backends_are_checked_with_the_grpc_health_protocol() {
    let (one, two) = (EchoBackend::spawn("one"), EchoBackend::spawn("two"));
    let (one_url, two_url) = (one.url(), two.url());
    let lb = start(&[one_url.clone(), two_url.clone()]);
    wait_state(&lb, &one_url, "up");
    wait_state(&lb, &two_url, "up");
    assert!(two.health_checks() >= 1);
    assert_eq!(grpc_backends(&lb, 6), HashSet::from(["one".into(), "two".into()]));

    two.state.not_serving.store(true, SeqCst);
    let health = wait_state(&lb, &two_url, "down");
    assert_eq!(health["last_error"], "serving status 2 (not SERVING)", "{health}");
    let calls = two.calls();
    assert_eq!(grpc_backends(&lb, 6), HashSet::from(["one".into()]));
    assert_eq!(two.calls(), calls);

    two.state.not_serving.store(false, SeqCst);
    wait_state(&lb, &two_url, "up");
    assert_eq!(grpc_backends(&lb, 6), HashSet::from(["one".into(), "two".into()]));
    assert_eq!(one.calls() + two.calls(), 18);
}

#[test]
fn grpc_check_of_an_unknown_service_fails_with_its_status() {
    let backend = EchoBackend::spawn("one");
    let url = backend.url();
    let config = health_config("grpc_service = \"no.such.Service\"");
    let lb = Fulcrum::builder().backend(&url).config(&config).start();
    // NOT_FOUND is grpc-status 5.
    expect_within(DEADLINE, "grpc-status 5", || {
        let health = health_of(&lb, &url);
        health["state"] == "down" && health["last_error"] == "grpc-status 5"
    });
}

#[test]
fn settings_are_shown_and_checks_are_off_by_default() {
    let a = TestBackend::named("a");
    // Checks every 100 ms if they ran: without `enabled = true` they must not.
    let lb = Fulcrum::builder()
        .backend(&a)
        .config("[health_check]\ninterval_ms = 100\ntimeout_ms = 100")
        .start();
    let config = lb.admin().get("/api/v1/config", Some(&read_token())).expect(200, None).json();
    assert_eq!(config["health_check"]["enabled"], false, "{config}");
    assert_eq!(config["health_check"]["path"], "/healthz", "{config}");
    assert_eq!(config["backends"][0]["health"]["state"], "disabled", "{config}");
    assert!(lb.metrics().series("fulcrum_backend_up").is_empty());
    holds_for(Duration::from_millis(500), "no health check", || a.health_checks() == 0);

    let dir = TempDir::new("health-check-config");
    let good = dir.write("good.toml", &health_config(""));
    let (status, out, err) = check_config(&good);
    assert!(status.success(), "{err}");
    let interval = format!("interval_ms = {CHECK_MS}");
    assert!(out.contains("[health_check]") && out.contains(&interval), "{out}");
    let bad = dir.write("bad.toml", "[health_check]\ninterval_ms = 100\ntimeout_ms = 500\n");
    let (status, _, err) = check_config(&bad);
    assert!(!status.success());
    assert!(err.contains("health_check.timeout_ms") && err.contains("interval_ms"), "{err}");
}

/// `fulcrum demo-backend` as a process of its own, so it can really die (SIGKILL) and come
/// back on the same port.
struct DemoProcess(std::process::Child);

impl DemoProcess {
    /// Starts it on `addr` and waits until it accepts connections.
    fn start(addr: std::net::SocketAddr) -> Self {
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_fulcrum"))
            .args(["demo-backend", "--listen", &addr.to_string(), "--name", "demo"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        expect_within(DEADLINE, "demo backend listening", || {
            std::net::TcpStream::connect(addr).is_ok()
        });
        Self(child)
    }
}

impl Drop for DemoProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_killed_backend_is_taken_out_and_back_once_restarted() {
    let a = TestBackend::named("a");
    let url = dead_port_url();
    let addr = url.trim_start_matches("http://").parse().unwrap();
    let demo = DemoProcess::start(addr);
    let lb = start(&[a.url(), url.clone()]);
    wait_state(&lb, &url, "up");

    drop(demo);
    let down = wait_state(&lb, &url, "down");
    assert!(down["last_error"].as_str().is_some_and(|e| !e.is_empty()), "{down}");
    assert_eq!(served_by(&lb, 6), HashSet::from(["a".into()]));

    let _demo = DemoProcess::start(addr);
    wait_state(&lb, &url, "up");
    expect_within(DEADLINE, "the restarted backend serves again", || {
        lb.get("/").header("x-demo-backend") == Some("demo")
    });
}

/// Passive health: after `health.max_fails` consecutive connect failures the worker skips the
/// backend (exactly that many connects were tried, and it shows as not healthy), and only once
/// `health.eject_ms` has passed does it try the backend again, which is then back.
#[test]
fn max_fails_connect_failures_eject_a_backend_for_eject_ms() {
    const EJECT_MS: u64 = 1500;
    // Bound but not listening: connects are refused until it listens.
    let (socket, addr) = refusing_port();
    let dead = format!("http://{addr}");
    let live = TestBackend::named("live");
    let lb = Fulcrum::builder()
        .workers(1)
        .backend(&dead)
        .backend(&live)
        .config(&format!("[health]\nmax_fails = 3\neject_ms = {EJECT_MS}"))
        .start();
    let started = Instant::now();
    let mut client = Client::connect(lb.addr());
    for i in 0..12 {
        let r = client.get("/").unwrap();
        assert_eq!((r.status(), r.backend()), (200, "live"), "request {i}");
    }
    // Once all twelve are published: three connects were tried, then the backend was skipped.
    let m = lb.metrics_counting(12);
    let errors =
        format!("fulcrum_upstream_connect_errors_total{{pool=\"default\",backend=\"{dead}\"}}");
    assert_eq!(m.value(&errors), 3.0);
    assert_eq!(
        m.value(&format!("fulcrum_backend_healthy{{pool=\"default\",backend=\"{dead}\"}}")),
        0.0
    );
    let listed = lb.admin().get("/api/v1/backends", Some(&read_token())).json();
    let ejected = listed.as_array().unwrap().iter().find(|b| b["url"] == dead.as_str()).unwrap();
    assert_eq!(ejected["healthy"], false, "{listed}");

    // The backend comes up at once; the worker tries it only when the ejection is over.
    socket.listen(128).unwrap();
    let back = TestBackend::builder().name("back").listener(socket.into()).spawn();
    let mut back_after = Duration::ZERO;
    expect_within(DEADLINE, "the ejected backend tried again", || {
        let r = client.get("/").unwrap();
        assert_eq!(r.status(), 200, "{}", r.text());
        back_after = started.elapsed();
        r.backend() == "back"
    });
    // The third failure came after `started`, so no correct ejection ends any earlier.
    assert!(back_after >= Duration::from_millis(EJECT_MS), "tried again after {back_after:?}");
    assert_eq!(back.requests(), 1);
    lb.wait_metric(
        &format!("fulcrum_backend_healthy{{pool=\"default\",backend=\"{dead}\"}}"),
        |v| v == 1.0,
    );
}
