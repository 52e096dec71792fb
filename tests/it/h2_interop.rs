//! Interop of the HTTP/2 listener and upstream side with real, independent implementations,
//! through the binary: curl (h2c with prior knowledge, and TLS with ALPN `h2`), `nghttp`,
//! a bounded `h2load` run, a Python grpcio client (`tests/interop/grpc_client.py`: gRPC's C
//! core) for the four call kinds over h2c and TLS, and `nghttpd` as an h2c backend. tonic as
//! client and backend is `grpc.rs`'s. Every test runs on the engine the suite runs
//! (`FULCRUM_TEST_H2_ENGINE`; `.ci/test` runs both).
//!
//! The tools are Debian's `curl`, `nghttp2-client` (`nghttp`, `h2load`), `nghttp2-server`
//! (`nghttpd`) and `python3` with PyPI's `grpcio`. `.ci/test` installs them and sets
//! `FULCRUM_REQUIRE_INTEROP=1`, which makes a missing tool a failure; elsewhere a test whose
//! tool is missing says so loudly on stderr and passes without running.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use crate::harness::tls::{CertFiles, Pki};
use crate::harness::*;

/// The Python gRPC client.
const GRPC_CLIENT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/grpc_client.py");

/// Whether the interop tools must be present (`FULCRUM_REQUIRE_INTEROP=1`, set by `.ci/test`).
fn required() -> bool {
    std::env::var("FULCRUM_REQUIRE_INTEROP").as_deref() == Ok("1")
}

/// Whether `program args` runs and succeeds: a tool is present. When it is not, fails the test
/// if the tools are required, else prints why the test is skipped and returns false.
#[allow(clippy::print_stderr)] // the loud skip
fn have(program: &str, args: &[&str], install: &str) -> bool {
    let ok = Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(!required(), "FULCRUM_REQUIRE_INTEROP=1 and `{program}` is missing ({install})");
        eprintln!(
            "!!! SKIPPED: `{program}` is not installed ({install}); this interop test did not run"
        );
    }
    ok
}

fn have_curl() -> bool {
    have("curl", &["--version"], "apt-get install -y curl")
}

fn have_nghttp2_client() -> bool {
    have("nghttp", &["--version"], "apt-get install -y nghttp2-client")
        && have("h2load", &["--version"], "apt-get install -y nghttp2-client")
}

fn have_grpcio() -> bool {
    have("python3", &["-c", "import grpc"], "pip install grpcio")
}

/// Runs `program args` for at most `secs` seconds (coreutils `timeout`), returning its output.
fn run_for(secs: u32, program: &str, args: &[&str]) -> Output {
    let out = Command::new("timeout").arg(secs.to_string()).arg(program).args(args).output();
    out.unwrap_or_else(|e| panic!("cannot run {program}: {e}"))
}

/// Standard output, asserting the command succeeded (stderr in the message otherwise).
fn stdout_of(out: &Output, what: &str) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// A body of `n` bytes that is not all one value.
fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 % 251) as u8).collect()
}

/// A TLS listener's certificate for `localhost` and `127.0.0.1`, and its CA.
fn tls_pki() -> (Pki, CertFiles) {
    let pki = Pki::new("interop");
    let server = pki.issue("server", &["localhost", "127.0.0.1"]);
    (pki, server)
}

/// Fulcrum (one worker) in front of an HTTP/1.1 test backend named `b1`.
fn in_front_of_b1() -> (TestBackend, Fulcrum) {
    let backend = TestBackend::named("b1");
    let lb = Fulcrum::builder().workers(1).backend(&backend).start();
    (backend, lb)
}

/// POSTs `body` to `url` with curl over h2c (prior knowledge); returns what curl's `-w`
/// printed (`%{http_version} %{http_code}`) and the response body.
fn curl_upload(url: &str, body: &[u8]) -> (String, Vec<u8>) {
    let dir = TempDir::new("interop-curl");
    let (up, down) = (dir.join("up.bin"), dir.join("down.bin"));
    std::fs::write(&up, body).unwrap();
    let out = Command::new("timeout")
        .args(["30", "curl", "-sS", "--http2-prior-knowledge", "--data-binary"])
        .arg(format!("@{}", up.display()))
        .arg("-o")
        .arg(&down)
        .args(["-w", "%{http_version} %{http_code}", url])
        .output()
        .unwrap();
    (stdout_of(&out, "curl upload"), std::fs::read(&down).unwrap())
}

#[test]
fn curl_with_prior_knowledge_gets_and_uploads_over_h2c() {
    if !have_curl() {
        return;
    }
    let (_backend, lb) = in_front_of_b1();
    let url = format!("http://{}", lb.addr());
    let out = run_for(
        30,
        "curl",
        &["-sS", "--http2-prior-knowledge", "-w", "\n%{http_version} %{http_code}", &url],
    );
    assert_eq!(stdout_of(&out, "curl GET"), "b1\n2 200");

    // 1 MiB up and back: more than the default windows on both hops.
    let body = pattern(1 << 20);
    let (status, echoed) = curl_upload(&format!("{url}/echo"), &body);
    assert_eq!(status, "2 200");
    assert!(echoed == body, "the echoed body differs");
}

#[test]
fn curl_negotiates_h2_over_tls() {
    if !have_curl() {
        return;
    }
    let (pki, server) = tls_pki();
    let backend = TestBackend::named("b1");
    let lb = Fulcrum::builder().workers(1).backend(&backend).tls_listener(&[&server]).start();
    let port = lb.tls_addr().port();
    let resolve = format!("localhost:{port}:127.0.0.1");
    let ca = pki.ca.display().to_string();
    let get = |path: &str| {
        let url = format!("https://localhost:{port}{path}");
        let w = "\n%{http_version} %{http_code} %{size_download}";
        let args = ["-sS", "--http2", "--cacert", &ca, "--resolve", &resolve, "-w", w, &url];
        stdout_of(&run_for(30, "curl", &args), "curl over TLS")
    };
    assert_eq!(get("/"), "b1\n2 200 2");
    let large = get("/large/3000000");
    assert!(large.ends_with("\n2 200 3000000"), "{:?}", &large[large.len().saturating_sub(40)..]);
}

/// `nghttp`'s statistics: the status code of each response.
fn nghttp_codes(stats: &str) -> Vec<u16> {
    // Rows under the `id  responseEnd requestStart  process code size request path` header.
    stats
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("id "))
        .skip(1)
        .filter_map(|l| l.split_whitespace().nth(4).and_then(|c| c.parse().ok()))
        .collect()
}

#[test]
fn nghttp_runs_concurrent_streams_and_uploads() {
    if !have_nghttp2_client() {
        return;
    }
    let backend = TestBackend::named("b1");
    let (_pki, server) = tls_pki();
    let lb = Fulcrum::builder().workers(1).backend(&backend).tls_listener(&[&server]).start();
    let h2c = format!("http://{}/", lb.addr());
    // 20 requests at once on one connection.
    let stats = stdout_of(&run_for(30, "nghttp", &["-n", "-s", "-m", "20", &h2c]), "nghttp");
    assert_eq!(nghttp_codes(&stats), [200; 20], "{stats}");
    // Over TLS (ALPN h2).
    let tls = format!("https://127.0.0.1:{}/", lb.tls_addr().port());
    let stats = stdout_of(&run_for(30, "nghttp", &["-n", "-s", "-m", "5", &tls]), "nghttp TLS");
    assert_eq!(nghttp_codes(&stats), [200; 5], "{stats}");
    // An upload of 256 KiB to the echo path: all of it comes back.
    let dir = TempDir::new("interop-nghttp");
    let up = dir.join("up.bin");
    std::fs::write(&up, pattern(256 << 10)).unwrap();
    let echo = format!("http://{}/echo", lb.addr());
    let up = up.display().to_string();
    let stats = stdout_of(&run_for(30, "nghttp", &["-n", "-s", "-d", &up, &echo]), "nghttp -d");
    assert_eq!(nghttp_codes(&stats), [200], "{stats}");
    let size = stats
        .lines()
        .find(|l| l.ends_with("/echo"))
        .and_then(|l| l.split_whitespace().nth(5).map(str::to_owned));
    assert_eq!(size.as_deref(), Some("256K"), "{stats}");
}

/// Asserts `h2load` finished `n` requests, all successful and answered 2xx.
fn assert_h2load_all_ok(out: &Output, n: u32) {
    let text = stdout_of(out, "h2load");
    let summary = format!("{n} total, {n} started, {n} done, {n} succeeded, 0 failed, 0 errored");
    assert!(text.contains(&summary), "h2load:\n{text}");
    assert!(text.contains(&format!("status codes: {n} 2xx")), "h2load:\n{text}");
}

#[test]
fn h2load_bounded_runs_all_succeed() {
    if !have_nghttp2_client() {
        return;
    }
    // Plain HTTP/2 requests to an HTTP/1.1 backend.
    let (_backend, lb) = in_front_of_b1();
    let url = format!("http://{}/", lb.addr());
    let out = run_for(60, "h2load", &["-n", "2000", "-c", "4", "-m", "10", &url]);
    assert_h2load_all_ok(&out, 2000);

    // gRPC unary calls to an h2c backend (tonic): EchoRequest { message: "hello" }.
    let echo = EchoBackend::spawn("g1");
    let lb = Fulcrum::builder().workers(1).backend(echo.url()).start();
    let dir = TempDir::new("interop-h2load");
    let body = dir.join("call.bin");
    std::fs::write(&body, b"\x00\x00\x00\x00\x07\x0a\x05hello").unwrap();
    let url = format!("http://{}/echo.Echo/Unary", lb.addr());
    let body = body.display().to_string();
    let args = ["-n", "1000", "-c", "2", "-m", "10", "-d", &body];
    let headers = ["-H", "content-type: application/grpc", "-H", "te: trailers"];
    let out = Command::new("timeout")
        .args(["60", "h2load"])
        .args(args)
        .args(headers)
        .arg(&url)
        .output()
        .unwrap();
    assert_h2load_all_ok(&out, 1000);
    assert!(echo.calls() >= 1000, "the backend saw {} calls", echo.calls());
}

/// Runs the Python grpcio client against `addr` with `extra` arguments; asserts its report.
fn grpcio_client(addr: SocketAddr, extra: &[&str]) {
    let addr = addr.to_string();
    let mut args = vec![GRPC_CLIENT, addr.as_str()];
    args.extend_from_slice(extra);
    let report = stdout_of(&run_for(60, "python3", &args), "the grpcio client");
    let kinds: Vec<&str> = report.lines().filter_map(|l| l.split(" ok").next()).collect();
    assert_eq!(
        kinds,
        ["unary", "server_stream", "client_stream", "bidi", "status"],
        "grpcio client:\n{report}"
    );
}

#[test]
fn a_python_grpcio_client_makes_the_four_call_kinds_over_h2c() {
    if !have_grpcio() {
        return;
    }
    let echo = EchoBackend::spawn("g1");
    let lb = Fulcrum::builder().workers(1).backend(echo.url()).start();
    grpcio_client(lb.addr(), &[]);
}

#[test]
fn a_python_grpcio_client_makes_the_four_call_kinds_over_tls() {
    if !have_grpcio() {
        return;
    }
    let (pki, server) = tls_pki();
    let echo = EchoBackend::spawn("g1");
    let lb = Fulcrum::builder().workers(1).backend(echo.url()).tls_listener(&[&server]).start();
    let ca = pki.ca.display().to_string();
    grpcio_client(lb.tls_addr(), &["--tls", &ca, "--name", "localhost"]);
}

/// `nghttpd` serving `dir` in cleartext on a loopback port, killed on drop.
struct Nghttpd {
    child: Child,
    addr: SocketAddr,
}

impl Nghttpd {
    fn start(dir: &TempDir) -> Nghttpd {
        // A port the kernel just handed out and nobody holds now.
        let addr = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let child = Command::new("nghttpd")
            .args(["--no-tls", "--echo-upload", "-a", "127.0.0.1", "-d"])
            .arg(dir.path())
            .arg(addr.port().to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let nghttpd = Nghttpd { child, addr };
        expect_within(Duration::from_secs(10), "nghttpd listening", || {
            TcpStream::connect(addr).is_ok()
        });
        nghttpd
    }
}

impl Drop for Nghttpd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn nghttpd_as_an_h2c_backend() {
    if !(have_curl() && have("nghttpd", &["--version"], "apt-get install -y nghttp2-server")) {
        return;
    }
    let docs = TempDir::new("interop-nghttpd");
    docs.write("hello.txt", "hello from nghttpd\n");
    let nghttpd = Nghttpd::start(&docs);
    let lb = Fulcrum::builder().workers(1).backend(format!("h2c://{}", nghttpd.addr)).start();
    // (HTTP/1.1 clients go to HTTP/1.1 backends only: this pool serves HTTP/2 clients.)
    let url = format!("http://{}/hello.txt", lb.addr());
    let out =
        run_for(30, "curl", &["-sS", "--http2-prior-knowledge", "-w", "%{http_version}", &url]);
    assert_eq!(stdout_of(&out, "curl"), "hello from nghttpd\n2");
    // An upload nghttpd echoes back (`--echo-upload`), 512 KiB through both hops' windows.
    let body = pattern(512 << 10);
    let (status, echoed) = curl_upload(&format!("http://{}/upload", lb.addr()), &body);
    assert_eq!(status, "2 200");
    assert!(echoed == body, "the echoed upload differs");
}
