//! Telemetry of HTTP/2 streams through the real binary: one access record per gRPC call or
//! plain HTTP/2 request (failed ones included, with the gRPC status the client got), the
//! request body captured as its DATA frames stream upstream (base64 for gRPC), `/metrics`
//! counting the calls like HTTP/1.1 requests, and spans with `traceparent` honoured.

use std::time::Duration;

use crate::harness::echo::EchoRequest;
use crate::harness::h2client::{framed, grpc_call, h2_request};
use crate::harness::*;
use serde_json::Value;

/// Fulcrum with one worker and the access log in a file.
struct Lb {
    f: Fulcrum,
    log: std::path::PathBuf,
    _dir: TempDir,
}

fn start(backends: &[String], telemetry: &str) -> Lb {
    let dir = TempDir::new("h2-access");
    let log = dir.join("access.log");
    let f = Fulcrum::builder()
        .workers(1)
        .backends(backends)
        .config(&format!("[telemetry]\n{telemetry}"))
        .access_log(&log.display().to_string())
        .start();
    Lb { f, log, _dir: dir }
}

impl Lb {
    /// One series of `/metrics` (0 when absent).
    fn metric(&self, series: &str) -> f64 {
        self.f.metric(series).unwrap_or(0.0)
    }

    /// Stops Fulcrum (the log is flushed on SIGTERM) and returns its records.
    fn records(mut self) -> (Vec<Value>, String) {
        self.f.sigterm();
        assert!(self.f.wait_exit(Duration::from_secs(15)).success());
        let text = std::fs::read_to_string(&self.log).unwrap();
        let records = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        (records, self.f.log_text())
    }
}

fn base64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn only<'a>(records: &'a [Value], path: &str) -> &'a Value {
    let found: Vec<&Value> = records.iter().filter(|r| r["path"] == path).collect();
    assert_eq!(found.len(), 1, "one record for {path}: {records:#?}");
    found[0]
}

#[test]
fn every_grpc_call_gets_one_record_with_its_grpc_status_and_is_counted() {
    let backend = EchoBackend::spawn("b1");
    let url = backend.url();
    let lb = start(std::slice::from_ref(&url), "");
    let addr = lb.f.addr();
    let hello = framed(&EchoRequest { message: "hello".into(), ..Default::default() });
    let deadline_status = run(async {
        // OK, unary.
        let a = grpc_call(addr, "/echo.Echo/Unary", &[], hello.clone()).await;
        assert_eq!((a.status, a.grpc_status()), (200, 0));
        // NOT_FOUND, trailers-only.
        let req = EchoRequest { fail_code: 5, ..Default::default() };
        let a = grpc_call(addr, "/echo.Echo/Unary?nf", &[], framed(&req)).await;
        assert_eq!((a.status, a.grpc_status()), (200, 5));
        // FAILED_PRECONDITION after two messages, in real trailers.
        let req = EchoRequest { count: 2, fail_code: 9, ..Default::default() };
        let a = grpc_call(addr, "/echo.Echo/ServerStream", &[], framed(&req)).await;
        assert_eq!((a.status, a.grpc_status()), (200, 9));
        // The deadline runs out. Fulcrum answers DEADLINE_EXCEEDED (4) itself, unless the tonic
        // backend, which got the same grpc-timeout forwarded, times out first and answers
        // CANCELLED (1): the two timers race by the forwarding latency.
        let req = EchoRequest { delay_ms: 10_000, ..Default::default() };
        let a = grpc_call(addr, "/echo.Echo/Unary?slow", &[("grpc-timeout", "200m")], framed(&req))
            .await;
        assert!(matches!((a.status, a.grpc_status()), (200, 4 | 1)), "{:?}", a.grpc_status());
        a.grpc_status()
    });
    // Metrics: every call counted against the backend, by HTTP status class, like HTTP/1.1.
    let m = lb.f.metrics_counting(4);
    assert_eq!(
        m.value(&format!(
            "fulcrum_requests_total{{pool=\"default\",backend=\"{url}\",class=\"2xx\"}}"
        )),
        4.0
    );
    let count =
        format!("fulcrum_request_duration_seconds_count{{pool=\"default\",backend=\"{url}\"}}");
    assert_eq!(m.value(&count), 4.0);
    assert_eq!(
        m.value(&format!("fulcrum_backend_in_flight{{pool=\"default\",backend=\"{url}\"}}")),
        0.0
    );

    let (records, _) = lb.records();
    assert_eq!(records.len(), 4, "one record per call: {records:#?}");
    let unary = only(&records, "/echo.Echo/Unary");
    assert_eq!(unary["method"], "POST");
    assert_eq!(unary["backend"], url.as_str());
    assert_eq!((unary["status"].as_u64(), unary["grpc_status"].as_u64()), (Some(200), Some(0)));
    assert_eq!(unary["body_encoding"], "base64", "gRPC bodies are binary: {unary}");
    assert_eq!(unary["body"], base64(&hello).as_str());
    assert_eq!(unary["body_bytes"], hello.len());
    assert_eq!(unary["body_truncated"], false);
    assert_eq!(unary["cache"], "off");
    assert!(unary["bytes_in"].as_u64().unwrap() > hello.len() as u64);
    assert!(unary["bytes_out"].as_u64().unwrap() > 5);
    assert!(unary["upstream_us"].as_u64().unwrap() > 0);
    assert!(unary["duration_us"].as_u64() >= unary["upstream_us"].as_u64());
    assert_eq!(only(&records, "/echo.Echo/Unary?nf")["grpc_status"], 5);
    assert_eq!(only(&records, "/echo.Echo/ServerStream")["grpc_status"], 9);
    let slow = only(&records, "/echo.Echo/Unary?slow");
    // The record carries the status the client got.
    assert_eq!(
        (slow["status"].as_u64(), slow["grpc_status"].as_u64()),
        (Some(200), Some(deadline_status))
    );
    assert_eq!(slow["backend"], url.as_str(), "the call reached its backend");
    assert!(slow["duration_us"].as_u64().unwrap() >= 150_000);
}

#[test]
fn no_backend_calls_and_plain_http2_requests_are_recorded_and_traced() {
    let http1 = TestBackend::named("h1");
    let lb = start(&[http1.url()], "trace_sample_rate = 1.0\nlog_body_max_bytes = 5");
    let addr = lb.f.addr();
    let incoming = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    run(async {
        // gRPC never goes to an HTTP/1.1 backend: UNAVAILABLE from Fulcrum, no backend.
        let body = framed(&EchoRequest { message: "x".into(), ..Default::default() });
        let a = grpc_call(addr, "/echo.Echo/Unary", &[], body).await;
        assert_eq!((a.status, a.grpc_status()), (200, 14));
        // A plain HTTP/2 request is translated for the HTTP/1.1 backend.
        let headers = [("content-length", "11"), ("traceparent", incoming)];
        let a = h2_request(addr, "POST", "/plain?q=1", &headers, b"hello world".to_vec()).await;
        assert_eq!(a.status, 200);
        assert!(a.headers.get("grpc-status").is_none());
    });
    // The sampled traceparent was honoured: same trace, Fulcrum's span as the parent.
    let seen = http1.last_request().unwrap();
    let forwarded = seen.header("traceparent").unwrap();
    assert!(forwarded.starts_with("00-0af7651916cd43dd8448eb211c80319c-"), "{forwarded}");
    assert!(!forwarded.contains("b7ad6b7169203331") && forwarded.ends_with("-01"), "{forwarded}");
    let plain_ok = format!(
        "fulcrum_requests_total{{pool=\"default\",backend=\"{}\",class=\"2xx\"}}",
        http1.url()
    );
    let none_ok = "fulcrum_requests_total{pool=\"default\",backend=\"none\",class=\"2xx\"}";
    assert!(wait_until(Duration::from_secs(5), || lb.metric(&plain_ok) == 1.0
        && lb.metric(none_ok) == 1.0));
    // Spans of the plain request's phases, reported off the data path.
    for phase in ["request", "pick", "upstream_connect", "upstream_exchange", "respond"] {
        let want = format!("name={phase} trace_id=0af7651916cd43dd8448eb211c80319c");
        assert!(
            lb.f.wait_for_line(Duration::from_secs(5), |l| l.contains(&want)).is_some(),
            "no {phase} span"
        );
    }

    let (records, _) = lb.records();
    assert_eq!(records.len(), 2, "{records:#?}");
    let grpc = only(&records, "/echo.Echo/Unary");
    assert_eq!(grpc["backend"], Value::Null);
    assert_eq!((grpc["status"].as_u64(), grpc["grpc_status"].as_u64()), (Some(200), Some(14)));
    assert_eq!(grpc["upstream_us"], 0);
    let plain = only(&records, "/plain?q=1");
    assert_eq!(plain["method"], "POST");
    assert_eq!(plain["backend"], http1.url().as_str());
    assert_eq!(plain["status"], 200);
    assert!(plain.get("grpc_status").is_none(), "plain HTTP has no gRPC status: {plain}");
    assert_eq!(
        (plain["body"].as_str(), plain["body_encoding"].as_str()),
        (Some("hello"), Some("utf8"))
    );
    assert_eq!(
        (plain["body_bytes"].as_u64(), plain["body_truncated"].as_bool()),
        (Some(11), Some(true))
    );
}
