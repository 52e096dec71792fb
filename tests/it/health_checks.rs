//! Active health checks through the real binary: HTTP/1.1 test backends whose `/healthz` can be
//! switched to failing or slow, and tonic echo backends answering `grpc.health.v1.Health/Check`.
//! Checks run every 100 ms; every wait polls `/api/v1/config`, `/metrics` or the log with a
//! deadline.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod admin_common;
mod common;
#[path = "grpc_common/echo.rs"]
mod echo;

use std::collections::HashSet;
use std::sync::atomic::Ordering::SeqCst;
use std::time::Duration;

use admin_common::{Fulcrum, Opts, TempDir, read_token, write_token};
use common::{TestBackend, expect_within};
use echo::{EchoReply, EchoRequest};
use serde_json::{Value, json};
use tonic::codegen::http::uri::PathAndQuery;
use tonic_prost::ProstCodec;

/// How long a state change may take to show (many check intervals).
const DEADLINE: Duration = Duration::from_secs(10);

/// `[health_check]` with checks every 100 ms (timing out after 100 ms), rise 2, fall 2, and
/// `extra` lines.
fn health_config(dir: &TempDir, extra: &str) -> std::path::PathBuf {
    dir.write(
        "fulcrum.toml",
        &format!(
            "[health_check]\nenabled = true\npath = \"/healthz\"\ninterval_ms = 100\n\
             timeout_ms = 100\nrise = 2\nfall = 2\n{extra}"
        ),
    )
}

fn start(dir: &TempDir, backends: &[String]) -> Fulcrum {
    let mut opts = Opts::default().config(&health_config(dir, ""));
    for b in backends {
        opts = opts.backend(b);
    }
    Fulcrum::start(opts)
}

/// The `health` object of the backend with `url` in `/api/v1/config`.
fn health_of(lb: &Fulcrum, url: &str) -> Value {
    let config = lb.get("/api/v1/config", Some(&read_token())).expect(200, None).json();
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

fn metrics(lb: &Fulcrum) -> String {
    lb.get("/metrics", Some(&read_token())).expect(200, None).text()
}

fn metric(lb: &Fulcrum, name: &str, labels: &str) -> Option<u64> {
    let prefix = format!("{name}{{{labels}}} ");
    metrics(lb).lines().find_map(|l| l.strip_prefix(&prefix)?.parse().ok())
}

/// Which backends served `n` plain requests.
fn served_by(lb: &Fulcrum, n: usize) -> HashSet<String> {
    (0..n)
        .map(|_| {
            let r = lb.proxy_get("/");
            assert_eq!(r.status, 200, "{}", r.text());
            r.header("x-backend").unwrap().to_owned()
        })
        .collect()
}

#[test]
fn failing_backend_is_taken_out_after_fall_checks_and_back_after_rise() {
    let (a, b) = (TestBackend::named("a"), TestBackend::named("b"));
    let dir = TempDir::new("health-fall-rise");
    let lb = start(&dir, &[a.url(), b.url()]);
    wait_state(&lb, &a.url(), "up");
    wait_state(&lb, &b.url(), "up");
    assert_eq!(served_by(&lb, 8), HashSet::from(["a".into(), "b".into()]));
    let label = format!("backend=\"{}\"", b.url());
    assert_eq!(metric(&lb, "fulcrum_backend_up", &label), Some(1));

    b.set_health_status(503);
    let health = wait_state(&lb, &b.url(), "down");
    assert!(health["consecutive_fail"].as_u64().unwrap() >= 2, "{health}");
    assert_eq!(health["consecutive_ok"], 0, "{health}");
    assert_eq!(health["last_error"], "status 503", "{health}");
    assert!(health["checked_at_unix_ms"].as_u64().unwrap() > 0, "{health}");
    expect_within(DEADLINE, "fulcrum_backend_up 0", || {
        metric(&lb, "fulcrum_backend_up", &label) == Some(0)
    });
    let failed = format!("{label},result=\"failed\"");
    expect_within(DEADLINE, "two failed checks counted", || {
        metric(&lb, "fulcrum_health_checks_total", &failed).is_some_and(|n| n >= 2)
    });
    let line = lb.wait_for_line("backend down: active health check failed");
    assert!(line.contains(&b.url()) && line.contains("status 503"), "{line}");

    // No traffic reaches the down backend.
    let before = b.requests();
    assert_eq!(served_by(&lb, 10), HashSet::from(["a".into()]));
    assert_eq!(b.requests(), before);
    // The passive view is separate: the backend is still reachable.
    let listed = lb.get("/api/v1/backends", Some(&read_token())).expect(200, None).json();
    assert!(listed.as_array().unwrap().iter().all(|b| b["healthy"] == true), "{listed}");

    b.set_health_status(200);
    let health = wait_state(&lb, &b.url(), "up");
    assert!(health["consecutive_ok"].as_u64().unwrap() >= 2, "{health}");
    assert_eq!(health["last_error"], "status 503", "the last failure is kept: {health}");
    assert!(lb.log().contains(&format!("backend={} from=down to=up", b.url())), "{}", lb.log());
    assert_eq!(served_by(&lb, 8), HashSet::from(["a".into(), "b".into()]));
    expect_within(DEADLINE, "fulcrum_backend_up 1", || {
        metric(&lb, "fulcrum_backend_up", &label) == Some(1)
    });
}

#[test]
fn a_returning_backend_ramps_up_during_slow_start() {
    let (a, b) = (TestBackend::named("a"), TestBackend::named("b"));
    let dir = TempDir::new("health-slow-start");
    let config = health_config(&dir, "slow_start_ms = 2000\n");
    let lb = Fulcrum::start(Opts::default().config(&config).backend(&a.url()).backend(&b.url()));
    let health = wait_state(&lb, &b.url(), "up");
    assert_eq!(health["share_percent"], 100, "no slow start from unknown: {health}");
    b.set_health_status(503);
    wait_state(&lb, &b.url(), "down");
    b.set_health_status(200);
    let health = wait_state(&lb, &b.url(), "up");
    assert!(health["share_percent"].as_u64().unwrap() < 50, "{health}");
    let line = lb.wait_for_line(&format!("backend={} from=down to=up", b.url()));
    assert!(line.contains("slow_start_ms=2000"), "{line}");

    // Early in the ramp b gets a small share (about 10-30%; 60% would be far beyond chance).
    let before = b.requests();
    for _ in 0..40 {
        assert_eq!(lb.proxy_get("/").status, 200);
    }
    let to_b = b.requests() - before;
    assert!(to_b < 24, "{to_b} of 40 requests reached b early in its slow start");

    expect_within(DEADLINE, "slow start over", || health_of(&lb, &b.url())["share_percent"] == 100);
    assert_eq!(served_by(&lb, 8), HashSet::from(["a".into(), "b".into()]));
}

#[test]
fn every_backend_down_fails_open_and_says_so() {
    let (a, b) = (TestBackend::named("a"), TestBackend::named("b"));
    a.set_health_status(500);
    b.set_health_status(404);
    let dir = TempDir::new("health-fail-open");
    let lb = start(&dir, &[a.url(), b.url()]);
    wait_state(&lb, &a.url(), "down");
    wait_state(&lb, &b.url(), "down");
    let line = lb.wait_for_line("every backend is down: failing open");
    assert!(line.contains("protocol=http"), "{line}");

    // Requests are still served, by all of them.
    assert_eq!(served_by(&lb, 8), HashSet::from(["a".into(), "b".into()]));

    a.set_health_status(204);
    wait_state(&lb, &a.url(), "up");
    lb.wait_for_line("a backend is up again: fail-open over");
    assert_eq!(served_by(&lb, 8), HashSet::from(["a".into()]));
}

#[test]
fn backend_added_at_run_time_is_checked_and_removed_one_is_not() {
    let (a, b) = (TestBackend::named("a"), TestBackend::named("b"));
    b.set_health_status(503);
    let dir = TempDir::new("health-runtime");
    let lb = start(&dir, &[a.url()]);
    wait_state(&lb, &a.url(), "up");

    let created = lb
        .send("POST", "/api/v1/backends", Some(&write_token()), &json!({ "url": b.url() }))
        .expect(201, None)
        .json();
    assert_eq!(created["health"]["state"], "unknown", "{created}");
    let id = created["id"].as_u64().unwrap();
    expect_within(DEADLINE, "b checked and down", || {
        let one = lb.get(&format!("/api/v1/backends/{id}"), Some(&read_token()));
        one.expect(200, None).json()["health"]["state"] == "down"
    });
    assert!(b.health_checks() >= 2);
    assert_eq!(served_by(&lb, 6), HashSet::from(["a".into()]));

    lb.send("DELETE", &format!("/api/v1/backends/{id}"), Some(&write_token()), &Value::Null)
        .expect(204, None);
    // At most a check already under way reaches b after its removal, while `a` keeps being
    // checked.
    let (removed_at, a_at) = (b.health_checks(), a.health_checks());
    expect_within(DEADLINE, "five more checks of a", || a.health_checks() >= a_at + 5);
    assert!(b.health_checks() <= removed_at + 1, "{} > {removed_at} + 1", b.health_checks());
    let m = metrics(&lb);
    assert!(!m.contains(&b.url()), "removed backend still in metrics:\n{m}");
}

#[test]
fn a_check_that_times_out_is_a_failure() {
    let (a, b) = (TestBackend::named("a"), TestBackend::named("b"));
    let dir = TempDir::new("health-timeout");
    let lb = start(&dir, &[a.url(), b.url()]);
    wait_state(&lb, &b.url(), "up");
    b.set_health_delay(Duration::from_millis(500));
    let health = wait_state(&lb, &b.url(), "down");
    assert_eq!(health["last_error"], "timed out after 100 ms", "{health}");
    assert_eq!(served_by(&lb, 6), HashSet::from(["a".into()]));
    b.set_health_delay(Duration::ZERO);
    wait_state(&lb, &b.url(), "up");
}

/// One `echo.Echo/Unary` call through Fulcrum; returns the backend that answered.
async fn unary_backend(lb: std::net::SocketAddr) -> String {
    let channel =
        tonic::transport::Endpoint::from_shared(format!("http://{lb}")).unwrap().connect().await;
    let mut client = tonic::client::Grpc::new(channel.unwrap());
    client.ready().await.unwrap();
    let request = tonic::Request::new(EchoRequest { message: "hi".into(), ..Default::default() });
    let path = PathAndQuery::from_static("/echo.Echo/Unary");
    let codec: ProstCodec<EchoRequest, EchoReply> = ProstCodec::default();
    client.unary(request, path, codec).await.unwrap().into_inner().backend
}

fn grpc_backends(lb: &Fulcrum, calls: usize) -> HashSet<String> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let mut seen = HashSet::new();
        for _ in 0..calls {
            seen.insert(unary_backend(lb.listen).await);
        }
        seen
    })
}

#[test]
fn h2c_backends_are_checked_with_the_grpc_health_protocol() {
    let (one_url, one) = echo::spawn_detached("one");
    let (two_url, two) = echo::spawn_detached("two");
    let dir = TempDir::new("health-grpc");
    let lb = start(&dir, &[one_url.clone(), two_url.clone()]);
    wait_state(&lb, &one_url, "up");
    wait_state(&lb, &two_url, "up");
    assert!(two.health_checks.load(SeqCst) >= 1);
    assert_eq!(grpc_backends(&lb, 6), HashSet::from(["one".into(), "two".into()]));

    two.not_serving.store(true, SeqCst);
    let health = wait_state(&lb, &two_url, "down");
    assert_eq!(health["last_error"], "serving status 2 (not SERVING)", "{health}");
    let calls = two.calls.load(SeqCst);
    assert_eq!(grpc_backends(&lb, 6), HashSet::from(["one".into()]));
    assert_eq!(two.calls.load(SeqCst), calls);

    two.not_serving.store(false, SeqCst);
    wait_state(&lb, &two_url, "up");
    assert_eq!(grpc_backends(&lb, 6), HashSet::from(["one".into(), "two".into()]));
    assert_eq!(one.calls.load(SeqCst) + two.calls.load(SeqCst), 18);
}

#[test]
fn grpc_check_of_an_unknown_service_fails_with_its_status() {
    let (url, _state) = echo::spawn_detached("one");
    let dir = TempDir::new("health-grpc-service");
    let config = health_config(&dir, "grpc_service = \"no.such.Service\"\n");
    let lb = Fulcrum::start(Opts::default().config(&config).backend(&url));
    // NOT_FOUND is grpc-status 5.
    expect_within(DEADLINE, "grpc-status 5", || {
        let health = health_of(&lb, &url);
        health["state"] == "down" && health["last_error"] == "grpc-status 5"
    });
}

#[test]
fn settings_are_shown_and_checks_are_off_by_default() {
    let a = TestBackend::named("a");
    let lb = Fulcrum::start(Opts::default().backend(&a.url()));
    let config = lb.get("/api/v1/config", Some(&read_token())).expect(200, None).json();
    assert_eq!(config["health_check"]["enabled"], false, "{config}");
    assert_eq!(config["health_check"]["path"], "/healthz", "{config}");
    assert_eq!(config["backends"][0]["health"]["state"], "disabled", "{config}");
    assert!(!metrics(&lb).contains("fulcrum_backend_up"));
    assert_eq!(a.health_checks(), 0);

    let dir = TempDir::new("health-check-config");
    let good = health_config(&dir, "");
    let (status, out, err) = common::check_config(&good);
    assert!(status.success(), "{err}");
    assert!(out.contains("[health_check]") && out.contains("interval_ms = 100"), "{out}");
    let bad = dir.write("bad.toml", "[health_check]\ninterval_ms = 100\ntimeout_ms = 500\n");
    let (status, _, err) = common::check_config(&bad);
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
    let url = common::dead_port_url();
    let addr = url.trim_start_matches("http://").parse().unwrap();
    let demo = DemoProcess::start(addr);
    let dir = TempDir::new("health-kill");
    let lb = start(&dir, &[a.url(), url.clone()]);
    wait_state(&lb, &url, "up");

    drop(demo);
    let down = wait_state(&lb, &url, "down");
    assert!(down["last_error"].as_str().is_some_and(|e| !e.is_empty()), "{down}");
    assert_eq!(served_by(&lb, 6), HashSet::from(["a".into()]));

    let _demo = DemoProcess::start(addr);
    wait_state(&lb, &url, "up");
    expect_within(DEADLINE, "the restarted backend serves again", || {
        lb.proxy_get("/").header("x-demo-backend") == Some("demo")
    });
}
