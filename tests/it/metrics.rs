//! `GET /metrics` on the admin listener, after known traffic: parsed as Prometheus text and
//! checked value by value (requests by backend and class, histogram, in-flight, health, connect
//! errors, cache, epoch, connections, dropped records, io driver), and the optional auth.

use crate::harness::*;

#[test]
fn metrics_after_known_traffic() {
    let live = TestBackend::named("live");
    let dead = dead_port_url();
    let f = Fulcrum::builder().backend(&live).backend(&dead).start();

    let mut c = Client::connect(f.addr());
    let n = 20;
    for i in 0..n {
        assert_eq!(c.get(&format!("/ok/{i}")).unwrap().status(), 200);
    }
    // A bad gateway closes its connection: use another one.
    assert_eq!(Client::connect(f.addr()).get("/malformed").unwrap().status(), 502);

    let l = live.url();
    // Workers publish every few milliseconds: a scrape that shows every request.
    let m = f.metrics_counting(n + 1);
    let get = |series: &str| m.value(series);
    assert_eq!(
        get(&format!("fulcrum_requests_total{{pool=\"default\",backend=\"{l}\",class=\"2xx\"}}")),
        n as f64
    );
    assert_eq!(
        get(&format!("fulcrum_requests_total{{pool=\"default\",backend=\"{l}\",class=\"5xx\"}}")),
        1.0
    );
    assert_eq!(
        get(&format!("fulcrum_requests_total{{pool=\"default\",backend=\"{l}\",class=\"4xx\"}}")),
        0.0
    );
    let count =
        get(&format!("fulcrum_request_duration_seconds_count{{pool=\"default\",backend=\"{l}\"}}"));
    assert_eq!(count, (n + 1) as f64);
    assert_eq!(
        get(&format!(
            "fulcrum_request_duration_seconds_bucket{{pool=\"default\",backend=\"{l}\",le=\"+Inf\"}}"
        )),
        count
    );
    let under_10s = get(&format!(
        "fulcrum_request_duration_seconds_bucket{{pool=\"default\",backend=\"{l}\",le=\"10\"}}"
    ));
    assert_eq!(under_10s, count, "buckets are cumulative");
    assert!(
        get(&format!("fulcrum_request_duration_seconds_sum{{pool=\"default\",backend=\"{l}\"}}"))
            > 0.0
    );
    assert_eq!(get(&format!("fulcrum_backend_in_flight{{pool=\"default\",backend=\"{l}\"}}")), 0.0);
    assert_eq!(get(&format!("fulcrum_backend_healthy{{pool=\"default\",backend=\"{l}\"}}")), 1.0);
    // Round robin sent some requests to the dead backend first: each was a connect error and a
    // retry on the live one.
    assert!(
        get(&format!(
            "fulcrum_upstream_connect_errors_total{{pool=\"default\",backend=\"{dead}\"}}"
        )) >= 1.0
    );
    assert_eq!(
        get(&format!("fulcrum_upstream_connect_errors_total{{pool=\"default\",backend=\"{l}\"}}")),
        0.0
    );
    for zero in ["fulcrum_cache_hits_total", "fulcrum_cache_misses_total", "fulcrum_cache_bytes"] {
        assert_eq!(get(zero), 0.0, "{zero}");
    }
    assert_eq!(get("fulcrum_epoch"), 1.0);
    f.wait_metric("fulcrum_client_connections", |n| n == 1.0);
    assert_eq!(get("fulcrum_access_log_dropped_total"), 0.0);
    let drivers = m.series("fulcrum_io_driver{");
    assert_eq!(drivers.len(), 2, "one per worker: {drivers:?}");
    // Each worker runs the driver the suite asked for (either one under `auto`).
    let driver = test_io_driver();
    let runs_it = |d: &str| match driver.as_str() {
        "auto" => d.contains("driver=\"io_uring\"") || d.contains("driver=\"epoll\""),
        one => d.contains(&format!("driver=\"{one}\"")),
    };
    assert!(drivers.iter().all(|d| runs_it(d)), "{drivers:?} with {driver}");

    drop(c);
    f.wait_metric("fulcrum_client_connections", |n| n == 0.0);
}

#[test]
fn requests_that_reach_no_backend_are_counted_under_none() {
    let f = Fulcrum::start([dead_port_url()]);
    for _ in 0..3 {
        let status = Client::connect(f.addr()).get("/").unwrap().status();
        assert!(status == 502 || status == 503);
    }
    let m = f.metrics_counting(3);
    assert_eq!(
        m.value("fulcrum_requests_total{pool=\"default\",backend=\"none\",class=\"5xx\"}"),
        3.0
    );
}

#[test]
fn metrics_auth_when_configured() {
    let live = TestBackend::named("live");
    let f = Fulcrum::builder().backend(&live).config("[telemetry]\nmetrics_auth = true").start();
    assert_eq!(f.admin().get("/metrics", None).status(), 401);
    let m = f.admin().get("/metrics", Some(&read_token()));
    assert_eq!(m.status(), 200, "{}", m.text());
    assert!(m.text().contains("fulcrum_epoch 1"), "{}", m.text());
}
