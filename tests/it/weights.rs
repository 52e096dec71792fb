//! Backend weights through the real binary on one worker (so the round-robin counts are exact):
//! weights from the configuration file, a weighted backend added over the admin API, the weights
//! in `/api/v1/config`, `check-config`, across a restart with a state file, and under random.

use crate::harness::*;
use serde_json::json;

/// Sends `n` requests and returns how many each of `backends` received meanwhile.
fn share(f: &Fulcrum, backends: &[&TestBackend], n: usize) -> Vec<usize> {
    let before: Vec<usize> = backends.iter().map(|b| b.requests()).collect();
    for i in 0..n {
        let r = f.get("/");
        assert_eq!(r.status(), 200, "request {i}: {}", r.text());
    }
    backends.iter().zip(before).map(|(b, was)| b.requests() - was).collect()
}

/// `(url, weight)` of every backend in `/api/v1/config`.
fn configured_weights(f: &Fulcrum) -> Vec<(String, u64)> {
    let c = f.admin().get("/api/v1/config", Some(&write_token())).json();
    c["backends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| (b["url"].as_str().unwrap().to_owned(), b["weight"].as_u64().unwrap()))
        .collect()
}

#[test]
fn round_robin_follows_the_weights_from_file_api_and_state_file() {
    let dir = TempDir::new("weights");
    let state = dir.join("state.json");
    let (a, b, c) = (TestBackend::named("a"), TestBackend::named("b"), TestBackend::named("c"));
    let cfg = dir.write(
        "fulcrum.toml",
        &format!(
            "algorithm = \"round_robin\"\nstate_file = \"{}\"\n\n\
             [[backends]]\nurl = \"{}\"\nweight = 3\n\n[[backends]]\nurl = \"{}\"\nweight = 1\n",
            state.display(),
            a.url(),
            b.url()
        ),
    );
    let (status, effective, _) = check_config(&cfg);
    assert!(status.success());
    assert!(effective.contains("weight = 3") && effective.contains("weight = 1"), "{effective}");

    let t = write_token();
    {
        let f = Fulcrum::builder().workers(1).config_file(&cfg).start();
        assert_eq!(configured_weights(&f), [(a.url().clone(), 3), (b.url().clone(), 1)]);
        assert_eq!(share(&f, &[&a, &b], 40), [30, 10]);

        let r = f.admin().send(
            "POST",
            "/api/v1/backends",
            Some(&t),
            &json!({"url": c.url(), "weight": 4}),
        );
        r.expect(201, None);
        assert_eq!(r.json()["weight"], 4);
        assert_eq!(share(&f, &[&a, &b, &c], 80), [30, 10, 40]);
        assert!(f.stop().success());
    }

    // The state file supersedes the file's backends and keeps every weight.
    let f = Fulcrum::builder().workers(1).config_file(&cfg).start();
    let expected = [(a.url().clone(), 3), (b.url().clone(), 1), (c.url().clone(), 4)];
    assert_eq!(configured_weights(&f), expected);
    assert_eq!(share(&f, &[&a, &b, &c], 80), [30, 10, 40]);

    // Random draws in proportion too: expected 150 / 50 / 200 of 400, bounds over 4 sigma.
    f.admin()
        .send("PUT", "/api/v1/algorithm", Some(&t), &json!({"algorithm": "random"}))
        .expect(200, None);
    let got = share(&f, &[&a, &b, &c], 400);
    let bounds = [110..=190, 20..=80, 160..=240];
    assert!(got.iter().zip(&bounds).all(|(n, ok)| ok.contains(n)), "{got:?}");
}

#[test]
fn a_weight_out_of_range_in_the_file_is_refused_with_its_key() {
    let dir = TempDir::new("weights-bad");
    for weight in [0, 10_001] {
        let cfg = dir.write(
            "fulcrum.toml",
            &format!("[[backends]]\nurl = \"http://127.0.0.1:9\"\nweight = {weight}\n"),
        );
        let (status, _, err) = check_config(&cfg);
        assert!(!status.success());
        assert!(err.contains("backends[0].weight") && err.contains("1..=10000"), "{err}");
    }
}
