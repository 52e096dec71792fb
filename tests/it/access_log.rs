//! The access log, end to end: one JSON-lines record per proxied request with exactly the
//! documented fields, base64 for binary bodies, truncation at `log_body_max_bytes`, the file and
//! stdout sinks, both implementations, drop counting when the sink stalls, nothing accepted lost
//! on SIGTERM, a third sink plugged in through the public API, and W3C `traceparent` handling.

use std::io::Read;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::harness::*;
use fulcrum::config::{BackendConfig, Config};
use fulcrum::telemetry::{AccessRecord, AccessSink};
use serde_json::Value;

const FIELDS: [&str; 18] = [
    "ts",
    "worker",
    "epoch",
    "method",
    "path",
    "pool",
    "route",
    "backend",
    "status",
    "duration_us",
    "upstream_us",
    "bytes_in",
    "bytes_out",
    "cache",
    "body",
    "body_bytes",
    "body_truncated",
    "body_encoding",
];

fn parse_lines(text: &str) -> Vec<Value> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
        .collect()
}

fn check_shape(v: &Value) {
    let obj = v.as_object().expect("object");
    let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    keys.sort_unstable();
    let mut want = FIELDS.to_vec();
    want.sort_unstable();
    assert_eq!(keys, want, "exact field set: {v}");
    let ts = v["ts"].as_str().unwrap();
    // 2026-11-27T18:23:28.123456Z
    assert_eq!(ts.len(), 27, "{ts}");
    assert!(ts.ends_with('Z') && &ts[10..11] == "T" && &ts[19..20] == ".", "{ts}");
    assert!(ts[20..26].bytes().all(|b| b.is_ascii_digit()), "{ts}");
    for k in [
        "worker",
        "epoch",
        "status",
        "duration_us",
        "upstream_us",
        "bytes_in",
        "bytes_out",
        "body_bytes",
    ] {
        assert!(v[k].is_u64(), "{k} is an unsigned integer: {v}");
    }
    assert!(v["epoch"].as_u64().unwrap() >= 1);
    // No routes: every request goes to `default` by the fallback.
    assert_eq!((&v["pool"], &v["route"]), (&Value::from("default"), &Value::Null));
    assert_eq!(v["cache"], "off");
    assert!(v["body_truncated"].is_boolean());
    assert!(matches!(v["body_encoding"].as_str(), Some("utf8" | "base64")));
}

/// Starts Fulcrum on one worker with `telemetry` as its `[telemetry]` lines, `backend`, and the
/// access log written to `access_log`.
fn start_logging(telemetry: &str, backend: &TestBackend, access_log: &str) -> Fulcrum {
    Fulcrum::builder()
        .workers(1)
        .backend(backend)
        .config(&format!("[telemetry]\n{telemetry}"))
        .access_log(access_log)
        .start()
}

fn by_path<'a>(records: &'a [Value], path: &str) -> &'a Value {
    records.iter().find(|r| r["path"] == path).unwrap_or_else(|| panic!("no record for {path}"))
}

fn base64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[test]
fn file_sink_writes_one_complete_record_per_request() {
    let backend = TestBackend::named("b1");
    let dir = TempDir::new("access-log");
    let log = dir.join("access.log"); // created by fulcrum
    let mut f = start_logging("log_body_max_bytes = 16", &backend, &log.display().to_string());
    let mut c = Client::connect(f.addr());
    assert_eq!(c.get("/plain?x=1&y=%22").unwrap().status(), 200);
    assert_eq!(c.request("POST", "/text", &[], "héllo".as_bytes()).unwrap().status(), 200);
    let binary = [0u8, 159, 146, 150, 255, 1];
    assert_eq!(c.request("POST", "/binary", &[], &binary).unwrap().status(), 200);
    let long = "abcdefghij".repeat(10);
    assert_eq!(c.request("POST", "/long", &[], long.as_bytes()).unwrap().status(), 200);
    c.send_raw(
        b"POST /chunked-up HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n\
          3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n",
    )
    .unwrap();
    assert_eq!(c.read_response().unwrap().status(), 200);
    assert_eq!(c.get("/malformed").unwrap().status(), 502);
    drop(c);

    f.sigterm();
    assert!(f.wait_exit(Duration::from_secs(15)).success());
    let records = parse_lines(&std::fs::read_to_string(&log).unwrap());
    assert_eq!(records.len(), 6, "one record per request: {records:#?}");
    for r in &records {
        check_shape(r);
        assert_eq!(r["worker"], 0);
    }

    let plain = by_path(&records, "/plain?x=1&y=%22");
    assert_eq!(plain["method"], "GET");
    assert_eq!(plain["backend"], backend.url().as_str());
    assert_eq!(plain["status"], 200);
    assert_eq!((plain["body"].as_str(), plain["body_bytes"].as_u64()), (Some(""), Some(0)));
    assert_eq!(plain["body_truncated"], false);
    assert!(plain["bytes_in"].as_u64().unwrap() > 20);
    assert!(plain["bytes_out"].as_u64().unwrap() > 20);
    assert!(plain["duration_us"].as_u64() >= plain["upstream_us"].as_u64());

    let text = by_path(&records, "/text");
    assert_eq!(
        (text["body"].as_str(), text["body_encoding"].as_str()),
        (Some("héllo"), Some("utf8"))
    );
    assert_eq!(text["body_bytes"], 6);

    let bin = by_path(&records, "/binary");
    assert_eq!(bin["body_encoding"], "base64");
    assert_eq!(bin["body"], base64(&binary).as_str());
    assert_eq!(bin["body_bytes"], 6);

    let long_rec = by_path(&records, "/long");
    assert_eq!(long_rec["body"], &long[..16]);
    assert_eq!(
        (long_rec["body_bytes"].as_u64(), long_rec["body_truncated"].as_bool()),
        (Some(100), Some(true))
    );

    let chunked = by_path(&records, "/chunked-up");
    assert_eq!(chunked["body"], "abcdefg", "chunk framing is not part of the body");
    assert_eq!(chunked["body_bytes"], 7);

    assert_eq!(by_path(&records, "/malformed")["status"], 502);
}

#[test]
fn a_request_that_reaches_no_backend_is_logged_with_a_null_backend() {
    let dir = TempDir::new("access-none");
    let log = dir.join("access.log");
    let mut f = Fulcrum::builder()
        .workers(1)
        .backend(dead_port_url())
        .access_log(&log.display().to_string())
        .start();
    let status = Client::connect(f.addr()).get("/nowhere").unwrap().status();
    assert!(status == 502 || status == 503, "{status}");
    f.sigterm();
    assert!(f.wait_exit(Duration::from_secs(15)).success());
    let records = parse_lines(&std::fs::read_to_string(&log).unwrap());
    assert_eq!(records.len(), 1);
    check_shape(&records[0]);
    assert_eq!(records[0]["backend"], Value::Null);
    assert_eq!(records[0]["status"], status);
    assert_eq!(records[0]["upstream_us"], 0);
}

#[test]
fn stdout_sink_with_the_tracing_implementation() {
    let backend = TestBackend::named("b1");
    // Stdout kept (the harness discards it by default): the sink under test.
    let mut f = Fulcrum::builder()
        .workers(1)
        .backend(&backend)
        .config("[telemetry]\naccess_log = \"-\"\naccess_log_format = \"tracing\"")
        .capture_stdout()
        .start();
    let mut c = Client::connect(f.addr());
    for i in 0..3 {
        assert_eq!(c.request("POST", &format!("/t{i}"), &[], &[0xff, i]).unwrap().status(), 200);
    }
    drop(c);
    f.sigterm();
    let mut out = String::new();
    f.take_stdout().unwrap().read_to_string(&mut out).unwrap();
    assert!(f.wait_exit(Duration::from_secs(15)).success());
    let records = parse_lines(&out);
    assert_eq!(records.len(), 3, "{out}");
    for (i, r) in records.iter().enumerate() {
        check_shape(r);
        assert_eq!(r["path"], format!("/t{i}"));
        assert_eq!(r["body"], base64(&[0xff, i as u8]).as_str());
        assert_eq!(r["backend"], backend.url().as_str());
    }
}

#[test]
fn a_stalled_sink_drops_and_counts_and_shutdown_flushes_the_rest() {
    let backend = TestBackend::named("b1");
    let dir = std::env::temp_dir().join(format!("fulcrum-fifo-{}", std::process::id()));
    let _ = std::fs::remove_file(&dir);
    assert!(Command::new("mkfifo").arg(&dir).status().unwrap().success());
    // Hold the read end open without reading: the pipe fills, the writer blocks, queues fill.
    let reader = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(&dir).unwrap()
    };
    let telemetry = "log_queue_capacity = 4\nlog_body_max_bytes = 2048\n";
    let mut f = start_logging(telemetry, &backend, &dir.display().to_string());
    let body = vec![b'x'; 2048];
    let sent = 400;
    let mut c = Client::connect(f.addr());
    for _ in 0..sent {
        assert_eq!(
            c.request("POST", "/fill", &[], &body).unwrap().status(),
            200,
            "the data path never waits for the log"
        );
    }
    drop(c);

    // Now read everything, shut down, and account for every request.
    let drain = std::thread::spawn(move || {
        use std::os::unix::fs::OpenOptionsExt;
        // A blocking reader from here on (the writer still holds the write end). Open it before
        // closing the first reader: a FIFO with no reader left discards what it buffered.
        let r = std::fs::OpenOptions::new().read(true).custom_flags(0).open(&dir);
        drop(reader);
        let mut text = String::new();
        if let Ok(mut r) = r {
            let _ = r.read_to_string(&mut text);
        }
        let _ = std::fs::remove_file(&dir);
        text
    });
    f.sigterm();
    assert!(f.wait_exit(Duration::from_secs(20)).success());
    let text = drain.join().unwrap();
    let written = parse_lines(&text).len() as u64;
    let stopped = f
        .wait_for_line(Duration::from_secs(1), |l| l.contains("msg=\"access log stopped\""))
        .unwrap_or_else(|| panic!("no stop summary:\n{}", f.log_text()));
    let field = |k: &str| -> u64 {
        stopped.split_whitespace().find_map(|kv| kv.strip_prefix(k)).unwrap().parse().unwrap()
    };
    let dropped = field("dropped=");
    assert!(dropped > 0, "a stalled sink must drop: {stopped}");
    assert_eq!(field("written="), written, "{stopped}");
    assert_eq!(written + dropped, sent, "every request is either written or counted as dropped");
}

/// A third, in-test implementation of the access-log interface.
#[derive(Clone, Default)]
struct Collect(Arc<Mutex<Vec<AccessRecord>>>);

impl AccessSink for Collect {
    fn write(&mut self, record: &AccessRecord) -> std::io::Result<()> {
        self.0.lock().unwrap().push(record.clone());
        Ok(())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_custom_sink_plugged_in_through_the_public_api_sees_every_record() {
    let backend = TestBackend::named("b1");
    let config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        workers: 2,
        io_driver: test_io_driver().parse().unwrap(),
        backends: vec![BackendConfig::new(backend.url())],
        telemetry: fulcrum::config::TelemetryConfig {
            trace_sample_rate: 1.0,
            ..Default::default()
        },
        ..Config::default()
    };
    let sink = Collect::default();
    quiet_in_process_logs();
    let running = fulcrum::start_with(
        config,
        fulcrum::StartOptions { access_sink: Some(Box::new(sink.clone())) },
    )
    .unwrap();
    let n = 50;
    let mut clients: Vec<Client> = (0..4).map(|_| Client::connect(running.listen)).collect();
    for i in 0..n {
        let c = &mut clients[i % 4];
        assert_eq!(
            c.request("PUT", &format!("/item/{i}"), &[], format!("v{i}").as_bytes())
                .unwrap()
                .status(),
            200
        );
    }

    // traceparent: a sampled one is honoured (same trace, Fulcrum's span as the new parent);
    // an unsampled one is forwarded untouched.
    let incoming = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let c = &mut clients[0];
    assert_eq!(
        c.request("GET", "/traced", &[("traceparent", incoming)], b"").unwrap().status(),
        200
    );
    let seen = backend.last_request().unwrap();
    let forwarded = seen.header("traceparent").unwrap().to_owned();
    assert!(forwarded.starts_with("00-0af7651916cd43dd8448eb211c80319c-"), "{forwarded}");
    assert!(!forwarded.contains("b7ad6b7169203331") && forwarded.ends_with("-01"), "{forwarded}");
    let unsampled = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00";
    c.request("GET", "/untraced", &[("traceparent", unsampled)], b"").unwrap();
    assert_eq!(backend.last_request().unwrap().header("traceparent"), Some(unsampled));
    // Rate 1: a request without one starts a trace and carries it upstream.
    c.get("/fresh").unwrap();
    assert!(
        backend.last_request().unwrap().header("traceparent").is_some_and(|t| t.ends_with("-01"))
    );
    drop(clients);

    running.shutdown();
    let records = sink.0.lock().unwrap();
    assert_eq!(records.len(), n + 3, "every record, nothing lost on shutdown");
    for i in 0..n {
        let r = records.iter().find(|r| r.path == format!("/item/{i}")).unwrap();
        assert_eq!(
            (r.method.as_str(), r.status, r.backend()),
            ("PUT", 200, Some(backend.url().as_str()))
        );
        assert_eq!(r.body, format!("v{i}").as_bytes());
        assert!(!r.body_truncated());
    }
    let workers: std::collections::HashSet<u32> = records.iter().map(|r| r.worker).collect();
    assert!(workers.iter().all(|w| *w < 2));
}
