//! `GET /metrics` on the admin listener, after known traffic: parsed as Prometheus text and
//! checked value by value (requests by backend and class, histogram, in-flight, health, connect
//! errors, cache, epoch, connections, dropped records, io driver), and the optional auth.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use common::{
    Client, Fulcrum, TempFile, TestBackend, dead_port_url, start_with_config, wait_until,
};

const SECRET: &str = "metrics-test-secret-0123456789abcdef";

fn start(extra: &str, backends: &[String]) -> (Fulcrum, SocketAddr, TempFile) {
    let config = format!("workers = 2\n[admin]\njwt_secret = \"{SECRET}\"\n{extra}");
    let (f, conf) = start_with_config("metrics", &config, backends, &[]);
    let admin = f.admin_addr();
    (f, admin, conf)
}

/// Parses the text format into `name{labels}` -> value (labels as written).
fn scrape(admin: SocketAddr) -> HashMap<String, f64> {
    let resp = Client::connect(admin).get("/metrics").unwrap();
    assert_eq!(resp.status(), 200, "{}", resp.text());
    assert!(resp.header("content-type").unwrap().starts_with("text/plain; version=0.0.4"));
    let text = resp.text();
    let mut out = HashMap::new();
    for line in text.lines() {
        if line.starts_with('#') || line.is_empty() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let kind = rest.split_whitespace().nth(1).unwrap();
                assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
            }
            continue;
        }
        let (key, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("bad line {line:?}"));
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("bad value in {line:?}"));
        assert!(out.insert(key.to_owned(), value).is_none(), "duplicate series {key}");
    }
    out
}

fn get(m: &HashMap<String, f64>, key: &str) -> f64 {
    *m.get(key).unwrap_or_else(|| {
        let mut keys: Vec<_> = m.keys().collect();
        keys.sort();
        panic!("no series {key}; have {keys:#?}")
    })
}

#[test]
fn metrics_after_known_traffic() {
    let live = TestBackend::named("live");
    let dead = dead_port_url();
    let (_f, admin, _conf) = start("", &[live.url(), dead.clone()]);

    let mut c = Client::connect(_f.addr());
    let n = 20;
    for i in 0..n {
        assert_eq!(c.get(&format!("/ok/{i}")).unwrap().status(), 200);
    }
    // A bad gateway closes its connection: use another one.
    assert_eq!(Client::connect(_f.addr()).get("/malformed").unwrap().status(), 502);

    let l = live.url();
    let ok_series = format!("fulcrum_requests_total{{backend=\"{l}\",class=\"2xx\"}}");
    // Workers publish every few milliseconds: wait for the last request to show up.
    let mut m = HashMap::new();
    assert!(wait_until(Duration::from_secs(5), || {
        m = scrape(admin);
        m.get(&ok_series) == Some(&(n as f64))
            && m.get(&format!("fulcrum_requests_total{{backend=\"{l}\",class=\"5xx\"}}"))
                == Some(&1.0)
    }));
    assert_eq!(get(&m, &format!("fulcrum_requests_total{{backend=\"{l}\",class=\"4xx\"}}")), 0.0);
    let count = get(&m, &format!("fulcrum_request_duration_seconds_count{{backend=\"{l}\"}}"));
    assert_eq!(count, (n + 1) as f64);
    assert_eq!(
        get(&m, &format!("fulcrum_request_duration_seconds_bucket{{backend=\"{l}\",le=\"+Inf\"}}")),
        count
    );
    let under_10s =
        get(&m, &format!("fulcrum_request_duration_seconds_bucket{{backend=\"{l}\",le=\"10\"}}"));
    assert_eq!(under_10s, count, "buckets are cumulative");
    assert!(get(&m, &format!("fulcrum_request_duration_seconds_sum{{backend=\"{l}\"}}")) > 0.0);
    assert_eq!(get(&m, &format!("fulcrum_backend_in_flight{{backend=\"{l}\"}}")), 0.0);
    assert_eq!(get(&m, &format!("fulcrum_backend_healthy{{backend=\"{l}\"}}")), 1.0);
    // Round robin sent some requests to the dead backend first: each was a connect error and a
    // retry on the live one.
    assert!(
        get(&m, &format!("fulcrum_upstream_connect_errors_total{{backend=\"{dead}\"}}")) >= 1.0
    );
    assert_eq!(get(&m, &format!("fulcrum_upstream_connect_errors_total{{backend=\"{l}\"}}")), 0.0);
    for zero in ["fulcrum_cache_hits_total", "fulcrum_cache_misses_total", "fulcrum_cache_bytes"] {
        assert_eq!(get(&m, zero), 0.0, "{zero}");
    }
    assert_eq!(get(&m, "fulcrum_epoch"), 1.0);
    assert!(
        wait_until(Duration::from_secs(5), || scrape(admin).get("fulcrum_client_connections")
            == Some(&1.0)),
        "the test's client is still open, the other one closed"
    );
    assert_eq!(get(&m, "fulcrum_access_log_dropped_total"), 0.0);
    let drivers: Vec<_> = m.keys().filter(|k| k.starts_with("fulcrum_io_driver{")).collect();
    assert_eq!(drivers.len(), 2, "one per worker: {drivers:?}");
    assert!(
        drivers.iter().all(|d| d.contains("driver=\"io_uring\"") || d.contains("driver=\"epoll\""))
    );

    drop(c);
    assert!(wait_until(Duration::from_secs(5), || scrape(admin).get("fulcrum_client_connections")
        == Some(&0.0)));
}

#[test]
fn requests_that_reach_no_backend_are_counted_under_none() {
    let (f, admin, _conf) = start("", &[dead_port_url()]);
    for _ in 0..3 {
        let status = Client::connect(f.addr()).get("/").unwrap().status();
        assert!(status == 502 || status == 503);
    }
    assert!(wait_until(Duration::from_secs(5), || {
        let m = scrape(admin);
        let five = m.get("fulcrum_requests_total{backend=\"none\",class=\"5xx\"}");
        five == Some(&3.0)
    }));
}

#[test]
fn metrics_auth_when_configured() {
    let live = TestBackend::named("live");
    let (_f, admin, _conf) = start("[telemetry]\nmetrics_auth = true\n", &[live.url()]);
    assert_eq!(Client::connect(admin).get("/metrics").unwrap().status(), 401);
}
