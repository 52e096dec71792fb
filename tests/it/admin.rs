//! The admin REST API against the real binary: every endpoint and status code, every way a
//! token can fail, persistence across a real restart, and a backend added over the API taking
//! the very next proxied request.

use std::collections::HashSet;

use crate::harness::admin::*;
use crate::harness::*;
use jsonwebtoken::Algorithm;
use serde_json::json;

const ALGORITHMS: [&str; 4] = ["round_robin", "random", "least_connections", "response_time"];

#[test]
fn health_readiness_and_public_endpoints_need_no_token() {
    let f = Fulcrum::builder().start();
    let h = f.admin().get("/healthz", None);
    h.expect(200, None);
    assert_eq!(h.json()["status"], "ok");
    // No backend yet: not ready.
    f.admin().get("/readyz", None).expect(503, Some("not_ready"));
    let b = TestBackend::named("ready");
    f.admin()
        .send("POST", "/api/v1/backends", Some(&write_token()), &json!({"url": b.url()}))
        .expect(201, None);
    let r = f.admin().get("/readyz", None);
    r.expect(200, None);
    assert_eq!(r.json()["healthy_backends"], 1);
    assert_eq!(r.json()["workers"], 2);

    let spec = f.admin().get("/api/v1/openapi.json", None);
    spec.expect(200, None);
    assert_eq!(spec.json()["openapi"], "3.1.0");
    let docs = f.admin().get("/docs", None);
    docs.expect(200, None);
    assert!(docs.header("content-type").unwrap().starts_with("text/html"));
    assert!(docs.text().contains("swagger-ui"), "{}", docs.text());
    let css = f.admin().get("/docs/swagger-ui.css", None);
    css.expect(200, None);
    assert!(css.header("content-type").unwrap().starts_with("text/css"));
    let init = f.admin().get("/docs/swagger-initializer.js", None).text();
    assert!(init.contains("/api/v1/openapi.json"), "{init}");
    f.admin().get("/docs/no-such-asset.js", None).expect(404, Some("not_found"));
}

#[test]
fn unknown_paths_404_and_wrong_methods_405() {
    let f = Fulcrum::builder().start();
    let t = write_token();
    for path in ["/", "/api", "/api/v1", "/api/v1/", "/api/v2/config", "/api/v1/config/", "/nope"] {
        f.admin().get(path, Some(&t)).expect(404, Some("not_found"));
    }
    for (method, path, allow) in [
        ("POST", "/healthz", "GET"),
        ("DELETE", "/api/v1/config", "GET"),
        ("PUT", "/api/v1/backends", "GET, POST"),
        ("POST", "/api/v1/backends/1", "GET, DELETE"),
        ("POST", "/api/v1/algorithm", "GET, PUT"),
        ("DELETE", "/api/v1/cache", "GET, PUT"),
        ("PATCH", "/api/v1/cache", "GET, PUT"),
        ("PUT", "/api/v1/openapi.json", "GET"),
    ] {
        let r = f.admin().send(method, path, Some(&t), &json!({}));
        r.expect(405, Some("method_not_allowed"));
        assert_eq!(r.header("allow"), Some(allow), "{method} {path}");
    }
}

#[test]
fn every_auth_failure_mode_is_401_or_403_never_500() {
    let f = Fulcrum::builder().start();
    let now = now();
    let hs = |claims: serde_json::Value| sign_hs(Algorithm::HS256, SECRET.as_bytes(), &claims);
    let write = "fulcrum:read fulcrum:write";
    let cases: Vec<(&str, Option<String>)> = vec![
        ("absent", None),
        ("empty", Some(String::new())),
        ("not a jwt", Some("abc".into())),
        ("three garbage parts", Some("a.b.c".into())),
        ("expired", Some(hs(json!({"exp": now - 120, "scope": write})))),
        ("not yet valid", Some(hs(json!({"exp": now + 3600, "nbf": now + 600, "scope": write})))),
        ("no exp", Some(hs(json!({"scope": write})))),
        ("wrong key", Some(token_with("another-secret-another-secret-000", write))),
        (
            "wrong alg (RS256 header, HMAC configured)",
            Some(forge(
                &json!({"alg": "RS256", "typ": "JWT"}),
                &json!({"exp": now + 3600, "scope": write}),
                &[7; 256],
            )),
        ),
        (
            "alg none",
            Some(forge(
                &json!({"alg": "none", "typ": "JWT"}),
                &json!({"exp": now + 3600, "scope": write}),
                b"",
            )),
        ),
        (
            "tampered payload",
            Some({
                let good = write_token();
                let parts: Vec<&str> = good.split('.').collect();
                let claims = b64url(
                    &serde_json::to_vec(&json!({"exp": now + 9999, "scope": write})).unwrap(),
                );
                format!("{}.{}.{}", parts[0], claims, parts[2])
            }),
        ),
    ];
    for (what, tok) in &cases {
        for (method, path) in [("GET", "/api/v1/config"), ("POST", "/api/v1/backends")] {
            let r = f.admin().request(method, path, tok.as_deref(), &[], Some(b"{}"));
            assert_eq!(r.status(), 401, "{what} {method} {path}: {}", r.text());
            assert_eq!(r.json()["error"]["code"], "invalid_token", "{what}");
            assert_eq!(r.header("www-authenticate"), Some("Bearer error=\"invalid_token\""));
        }
    }
    // Not a bearer scheme at all.
    let basic = [("Authorization", "Basic dXNlcjpwYXNz")];
    assert_eq!(f.admin().request("GET", "/api/v1/config", None, &basic, None).status(), 401);

    // Expired, but within the 30 s default leeway: accepted.
    let recent = hs(json!({"exp": now - 5, "scope": "fulcrum:read"}));
    f.admin().get("/api/v1/config", Some(&recent)).expect(200, None);
    // HS384 and HS512 are on the list for an HMAC secret.
    for alg in [Algorithm::HS384, Algorithm::HS512] {
        let t = sign_hs(alg, SECRET.as_bytes(), &json!({"exp": now + 60, "scope": "fulcrum:read"}));
        f.admin().get("/api/v1/config", Some(&t)).expect(200, None);
    }

    // Scopes: read cannot write; no scope cannot read; write implies read.
    let read = read_token();
    f.admin().get("/api/v1/backends", Some(&read)).expect(200, None);
    for (method, path) in [
        ("POST", "/api/v1/backends"),
        ("DELETE", "/api/v1/backends/1"),
        ("PUT", "/api/v1/algorithm"),
        ("PUT", "/api/v1/cache"),
    ] {
        let r = f.admin().send(method, path, Some(&read), &json!({"algorithm": "random"}));
        r.expect(403, Some("insufficient_scope"));
        assert!(r.header("www-authenticate").unwrap().contains("fulcrum:write"));
    }
    let none = hs(json!({"exp": now + 60}));
    f.admin().get("/api/v1/config", Some(&none)).expect(403, Some("insufficient_scope"));
    let other = token("openid profile");
    f.admin().get("/api/v1/cache", Some(&other)).expect(403, Some("insufficient_scope"));
    let write_only = token("fulcrum:write");
    f.admin().get("/api/v1/algorithm", Some(&write_only)).expect(200, None);
}

#[test]
fn public_key_only_accepts_its_algorithm_and_rejects_hs_confusion() {
    let dir = TempDir::new("pubkey");
    let key = dir.write("ed25519.pub.pem", ED25519_PUBLIC_PEM);
    let cfg = dir
        .write("fulcrum.toml", &format!("[admin]\njwt_public_key_file = \"{}\"\n", key.display()));
    let f = Fulcrum::builder().no_secret().config_file(&cfg).start();
    let claims = json!({"exp": now() + 600, "scope": "fulcrum:read"});
    f.admin().get("/api/v1/config", Some(&sign_ed(&claims))).expect(200, None);
    let algs =
        f.admin().get("/api/v1/config", Some(&sign_ed(&claims))).json()["admin"]["jwt_algorithms"]
            .clone();
    assert_eq!(algs, json!(["EdDSA"]));
    // HS256 signed with the public key's bytes (the classic confusion attack).
    let confused = sign_hs(Algorithm::HS256, ED25519_PUBLIC_PEM.as_bytes(), &claims);
    f.admin().get("/api/v1/config", Some(&confused)).expect(401, Some("invalid_token"));
    // HS256 with the secret other tests use: no HMAC key here at all.
    f.admin().get("/api/v1/config", Some(&read_token())).expect(401, Some("invalid_token"));
    // EdDSA token signed by a different key: forged signature bytes.
    let forged = forge(&json!({"alg": "EdDSA", "typ": "JWT"}), &claims, &[1; 64]);
    f.admin().get("/api/v1/config", Some(&forged)).expect(401, Some("invalid_token"));
}

#[test]
fn issuer_and_audience_are_enforced_when_configured() {
    let dir = TempDir::new("issaud");
    let cfg = dir.write(
        "fulcrum.toml",
        "[admin]\njwt_issuer = \"ops\"\njwt_audience = \"fulcrum\"\njwt_leeway_secs = 0\n",
    );
    let f = Fulcrum::builder().config_file(&cfg).start();
    let hs = |c: serde_json::Value| sign_hs(Algorithm::HS256, SECRET.as_bytes(), &c);
    let exp = now() + 600;
    let ok = hs(json!({"exp": exp, "scope": "fulcrum:read", "iss": "ops", "aud": "fulcrum"}));
    f.admin().get("/api/v1/config", Some(&ok)).expect(200, None);
    for bad in [
        json!({"exp": exp, "scope": "fulcrum:read", "iss": "eve", "aud": "fulcrum"}),
        json!({"exp": exp, "scope": "fulcrum:read", "iss": "ops", "aud": "other"}),
        json!({"exp": exp, "scope": "fulcrum:read", "aud": "fulcrum"}),
        json!({"exp": exp, "scope": "fulcrum:read", "iss": "ops"}),
        // Leeway 0: one second late is late.
        json!({"exp": now() - 2, "scope": "fulcrum:read", "iss": "ops", "aud": "fulcrum"}),
    ] {
        f.admin().get("/api/v1/config", Some(&hs(bad.clone()))).expect(401, Some("invalid_token"));
    }
}

#[test]
fn backends_create_list_get_delete_with_every_status() {
    let f = Fulcrum::builder().start();
    let t = write_token();
    let (a, b) = (TestBackend::named("a"), TestBackend::named("b"));

    let r = f.admin().send("POST", "/api/v1/backends", Some(&t), &json!({"url": a.url()}));
    r.expect(201, None);
    let created = r.json();
    let id_a = created["id"].as_u64().unwrap();
    assert_eq!(created["url"], a.url());
    assert_eq!(created["weight"], 1);
    assert_eq!(created["healthy"], true);
    let epoch1 = created["epoch"].as_u64().unwrap();
    assert_eq!(r.header("fulcrum-epoch"), Some(epoch1.to_string().as_str()));
    assert_eq!(r.header("location"), Some(format!("/api/v1/backends/{id_a}").as_str()));

    let r =
        f.admin().send("POST", "/api/v1/backends", Some(&t), &json!({"url": b.url(), "weight": 5}));
    r.expect(201, None);
    let id_b = r.json()["id"].as_u64().unwrap();
    assert_eq!(r.json()["weight"], 5);
    assert!(r.json()["epoch"].as_u64().unwrap() > epoch1);
    assert_ne!(id_a, id_b);

    // Same URL again, also written with a trailing slash: 409.
    f.admin()
        .send("POST", "/api/v1/backends", Some(&t), &json!({"url": a.url()}))
        .expect(409, Some("duplicate_backend"));
    f.admin()
        .send("POST", "/api/v1/backends", Some(&t), &json!({"url": format!("{}/", a.url())}))
        .expect(409, Some("duplicate_backend"));
    // Bad URLs and unsupported schemes: 400.
    for url in ["h3://127.0.0.1:1", "ftp://x:1", "127.0.0.1:1", "http://", "http://h:1/path"] {
        f.admin()
            .send("POST", "/api/v1/backends", Some(&t), &json!({"url": url}))
            .expect(400, Some("invalid_url"));
    }
    for weight in [0, 10_001] {
        f.admin()
            .send(
                "POST",
                "/api/v1/backends",
                Some(&t),
                &json!({"url": "http://127.0.0.1:2", "weight": weight}),
            )
            .expect(400, Some("invalid_weight"));
    }
    // Unknown fields, wrong types, malformed JSON, empty body: 400 with the reason.
    let r = f.admin().send(
        "POST",
        "/api/v1/backends",
        Some(&t),
        &json!({"url": "http://127.0.0.1:3", "extra": 1}),
    );
    r.expect(400, Some("invalid_body"));
    assert!(r.json()["error"]["message"].as_str().unwrap().contains("extra"), "{}", r.text());
    f.admin()
        .send("POST", "/api/v1/backends", Some(&t), &json!({"url": 7}))
        .expect(400, Some("invalid_body"));
    f.admin()
        .send("POST", "/api/v1/backends", Some(&t), &json!({}))
        .expect(400, Some("invalid_body"));
    let api = f.admin();
    api.request("POST", "/api/v1/backends", Some(&t), &[], Some(b"{\"url\": "))
        .expect(400, Some("invalid_body"));
    api.request("POST", "/api/v1/backends", Some(&t), &[], Some(b""))
        .expect(400, Some("invalid_body"));
    // Over the 64 KiB cap: 413.
    let big = format!("{{\"url\": \"{}\"}}", "x".repeat(70 * 1024));
    api.request("POST", "/api/v1/backends", Some(&t), &[], Some(big.as_bytes()))
        .expect(413, Some("payload_too_large"));

    let list = f.admin().get("/api/v1/backends", Some(&read_token()));
    list.expect(200, None);
    let list = list.json();
    let urls: Vec<&str> =
        list.as_array().unwrap().iter().map(|b| b["url"].as_str().unwrap()).collect();
    assert_eq!(urls, [a.url().as_str(), b.url().as_str()]);
    for field in
        ["id", "url", "weight", "healthy", "in_flight", "avg_response_ms", "requests_total"]
    {
        assert!(list[0].get(field).is_some(), "missing {field}: {list}");
    }

    let one = f.admin().get(&format!("/api/v1/backends/{id_b}"), Some(&t));
    one.expect(200, None);
    assert_eq!(one.json()["url"], b.url());
    f.admin().get("/api/v1/backends/999", Some(&t)).expect(404, Some("unknown_backend"));
    f.admin().get("/api/v1/backends/abc", Some(&t)).expect(404, Some("unknown_backend"));

    let before = f.admin().get("/api/v1/config", Some(&t)).json()["epoch"].as_u64().unwrap();
    let r = f.admin().send("DELETE", &format!("/api/v1/backends/{id_a}"), Some(&t), &json!(null));
    r.expect(204, None);
    assert!(r.body.is_empty());
    let after: u64 = r.header("fulcrum-epoch").unwrap().parse().unwrap();
    assert_eq!(after, before + 1);
    f.admin()
        .send("DELETE", &format!("/api/v1/backends/{id_a}"), Some(&t), &json!(null))
        .expect(404, Some("unknown_backend"));
    f.admin()
        .send("DELETE", "/api/v1/backends/abc", Some(&t), &json!(null))
        .expect(404, Some("unknown_backend"));
    let left = f.admin().get("/api/v1/backends", Some(&t)).json();
    assert_eq!(left.as_array().unwrap().len(), 1);
    assert_eq!(left[0]["id"], id_b);
    // Ids are never reused.
    let r = f.admin().send("POST", "/api/v1/backends", Some(&t), &json!({"url": a.url()}));
    r.expect(201, None);
    assert!(r.json()["id"].as_u64().unwrap() > id_b);
}

#[test]
fn algorithm_and_cache_switch_live_and_answer_with_the_epoch() {
    let f = Fulcrum::builder().start();
    let t = write_token();
    let r = f.admin().get("/api/v1/algorithm", Some(&t));
    r.expect(200, None);
    assert_eq!(r.json(), json!({"algorithm": "round_robin"}));
    let mut last = 0;
    for name in ALGORITHMS {
        let r = f.admin().send("PUT", "/api/v1/algorithm", Some(&t), &json!({"algorithm": name}));
        r.expect(200, None);
        let epoch = r.json()["epoch"].as_u64().unwrap();
        assert!(epoch > last);
        last = epoch;
        assert_eq!(r.json()["algorithm"], name);
        assert_eq!(r.header("fulcrum-epoch"), Some(epoch.to_string().as_str()));
        assert_eq!(f.admin().get("/api/v1/algorithm", Some(&t)).json()["algorithm"], name);
    }
    let r = f.admin().send("PUT", "/api/v1/algorithm", Some(&t), &json!({"algorithm": "fastest"}));
    r.expect(400, Some("invalid_algorithm"));
    let message = r.json()["error"]["message"].as_str().unwrap().to_owned();
    for name in ALGORITHMS {
        assert!(message.contains(name), "{message}");
    }
    f.admin()
        .send("PUT", "/api/v1/algorithm", Some(&t), &json!({"algorithm": 3}))
        .expect(400, Some("invalid_body"));
    f.admin()
        .send("PUT", "/api/v1/algorithm", Some(&t), &json!({"algorithm": "random", "x": 1}))
        .expect(400, Some("invalid_body"));
    f.admin()
        .send("PUT", "/api/v1/algorithm", Some(&t), &json!({}))
        .expect(400, Some("invalid_body"));

    let r = f.admin().get("/api/v1/cache", Some(&t));
    r.expect(200, None);
    assert_eq!(r.json()["enabled"], false);
    let r = f.admin().send("PUT", "/api/v1/cache", Some(&t), &json!({"enabled": true}));
    r.expect(200, None);
    assert_eq!(r.json()["enabled"], true);
    assert!(r.json()["epoch"].as_u64().unwrap() > last);
    assert_eq!(f.admin().get("/api/v1/cache", Some(&t)).json()["enabled"], true);
    f.admin()
        .send("PUT", "/api/v1/cache", Some(&t), &json!({"enabled": "yes"}))
        .expect(400, Some("invalid_body"));
    f.admin()
        .send("PUT", "/api/v1/cache", Some(&t), &json!({"size": 1}))
        .expect(400, Some("invalid_body"));
}

#[test]
fn config_dump_has_every_documented_field() {
    let b = TestBackend::named("cfg");
    let f = Fulcrum::start([&b]);
    let c = f.admin().get("/api/v1/config", Some(&read_token()));
    c.expect(200, None);
    let c = c.json();
    assert!(c["epoch"].as_u64().unwrap() >= 1);
    assert_eq!(c["algorithm"], "round_robin");
    let be = &c["backends"][0];
    assert_eq!(be["url"], b.url());
    for field in ["id", "weight", "healthy", "in_flight", "avg_response_ms", "requests_total"] {
        assert!(be.get(field).is_some(), "backend.{field}: {c}");
    }
    assert_eq!(c["cache"]["enabled"], false);
    assert_eq!(c["listeners"]["listen"], f.addr().to_string());
    assert_eq!(c["listeners"]["admin_listen"], f.admin_addr().to_string());
    assert_eq!(c["workers"], 2);
    // What the suite asked for (`FULCRUM_TEST_IO_DRIVER`), and what each worker got.
    let driver = test_io_driver();
    assert_eq!(c["io_driver"]["configured"], driver.as_str());
    let workers = c["io_driver"]["workers"].as_array().unwrap();
    assert_eq!(workers.len(), 2, "{c}");
    if driver != "auto" {
        assert!(workers.iter().all(|w| w.to_string().contains(&driver)), "{c}");
    }
    for t in ["client_header_ms", "upstream_connect_ms", "upstream_response_ms", "drain_ms"] {
        assert!(c["timeouts"][t].as_u64().is_some(), "timeouts.{t}: {c}");
    }
    assert_eq!(c["admin"]["jwt_algorithms"], json!(["HS256", "HS384", "HS512"]));
    assert!(c["state_file"].is_null());
    assert!(!c.to_string().contains(SECRET), "the secret must never be shown");

    // Counters move after traffic.
    f.get("/").expect(200, None);
    // Workers publish counters every few milliseconds: poll (each poll is a round trip).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let c = f.admin().get("/api/v1/config", Some(&read_token())).json();
        // `requests_total` counts at dispatch, the response time when the answer is complete.
        let b = &c["backends"][0];
        if b["requests_total"] == 1
            && b["avg_response_ms"].as_f64().is_some()
            && b["in_flight"] == 0
        {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "counters never moved: {c}");
    }
}

#[test]
fn a_backend_added_over_the_api_takes_the_very_next_request() {
    let f = Fulcrum::builder().start();
    let t = write_token();
    assert_eq!(f.get("/").status(), 503, "no backend yet");
    let first = TestBackend::named("first");
    f.admin()
        .send("POST", "/api/v1/backends", Some(&t), &json!({"url": first.url()}))
        .expect(201, None);
    let r = f.get("/");
    r.expect(200, None);
    assert_eq!(r.text(), "first");

    // Swap: add a second, remove the first; the very next request goes to the second.
    let second = TestBackend::named("second");
    f.admin()
        .send("POST", "/api/v1/backends", Some(&t), &json!({"url": second.url()}))
        .expect(201, None);
    let id_first = f.admin().get("/api/v1/backends", Some(&t)).json()[0]["id"].as_u64().unwrap();
    f.admin()
        .send("DELETE", &format!("/api/v1/backends/{id_first}"), Some(&t), &json!(null))
        .expect(204, None);
    let hits_before = first.requests();
    for _ in 0..4 {
        let r = f.get("/");
        r.expect(200, None);
        assert_eq!(r.text(), "second");
    }
    assert_eq!(first.requests(), hits_before);
}

#[test]
fn concurrent_mutations_are_serialised_and_none_is_lost() {
    let f = Fulcrum::builder().start();
    let admin = f.admin();
    let t = write_token();
    let threads: Vec<_> = (0..6)
        .map(|i| {
            let t = t.clone();
            std::thread::spawn(move || {
                (0..5)
                    .map(|j| {
                        let body = serde_json::to_vec(
                            &json!({"url": format!("http://127.0.0.1:{}", 20_000 + i * 10 + j)}),
                        )
                        .unwrap();
                        let r =
                            admin.request("POST", "/api/v1/backends", Some(&t), &[], Some(&body));
                        r.expect(201, None);
                        r.json()["epoch"].as_u64().unwrap()
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let epochs: Vec<u64> = threads.into_iter().flat_map(|h| h.join().unwrap()).collect();
    assert_eq!(epochs.iter().collect::<HashSet<_>>().len(), 30, "every change has its epoch");
    assert_eq!(f.admin().get("/api/v1/backends", Some(&t)).json().as_array().unwrap().len(), 30);
}

#[test]
fn changes_survive_a_real_restart() {
    let dir = TempDir::new("persist");
    let state = dir.join("state.json");
    let initial = TestBackend::named("initial");
    let cfg = dir.write(
        "fulcrum.toml",
        &format!(
            "state_file = \"{}\"\n\n[[backends]]\nurl = \"{}\"\n",
            state.display(),
            initial.url()
        ),
    );
    let t = write_token();
    let (added, weighted) = (TestBackend::named("added"), TestBackend::named("weighted"));
    let (epoch, ids) = {
        let f = Fulcrum::builder().config_file(&cfg).start();
        assert!(state.exists(), "the state is written at start");
        let r = f.admin().send("POST", "/api/v1/backends", Some(&t), &json!({"url": added.url()}));
        r.expect(201, None);
        let r = f.admin().send(
            "POST",
            "/api/v1/backends",
            Some(&t),
            &json!({"url": weighted.url(), "weight": 7}),
        );
        r.expect(201, None);
        let list = f.admin().get("/api/v1/backends", Some(&t)).json();
        let initial_id = list[0]["id"].as_u64().unwrap();
        f.admin()
            .send("DELETE", &format!("/api/v1/backends/{initial_id}"), Some(&t), &json!(null))
            .expect(204, None);
        f.admin()
            .send("PUT", "/api/v1/algorithm", Some(&t), &json!({"algorithm": "least_connections"}))
            .expect(200, None);
        let r = f.admin().send("PUT", "/api/v1/cache", Some(&t), &json!({"enabled": true}));
        r.expect(200, None);
        let epoch = r.json()["epoch"].as_u64().unwrap();
        let ids: Vec<u64> = f
            .admin()
            .get("/api/v1/backends", Some(&t))
            .json()
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["id"].as_u64().unwrap())
            .collect();
        assert!(f.stop().success());
        (epoch, ids)
    };
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&state).unwrap()).unwrap();
    assert_eq!(saved["epoch"], epoch, "{saved}");

    let f = Fulcrum::builder().config_file(&cfg).start();
    let c = f.admin().get("/api/v1/config", Some(&t)).json();
    assert_eq!(c["algorithm"], "least_connections", "{c}");
    assert_eq!(c["cache"]["enabled"], true);
    assert!(c["epoch"].as_u64().unwrap() > epoch, "epochs continue after a restart: {c}");
    assert_eq!(c["state_file"], state.display().to_string());
    let backends = c["backends"].as_array().unwrap();
    let got: Vec<(u64, &str, u64)> = backends
        .iter()
        .map(|b| {
            (b["id"].as_u64().unwrap(), b["url"].as_str().unwrap(), b["weight"].as_u64().unwrap())
        })
        .collect();
    assert_eq!(got, [(ids[0], added.url().as_str(), 1), (ids[1], weighted.url().as_str(), 7)]);
    // The removed config backend stays removed; new ids continue after the old ones.
    let r = f.admin().send("POST", "/api/v1/backends", Some(&t), &json!({"url": initial.url()}));
    r.expect(201, None);
    assert!(r.json()["id"].as_u64().unwrap() > ids[1]);
    // And the restored backends take traffic.
    f.get("/").expect(200, None);
}

#[test]
fn a_corrupt_state_file_stops_the_start_and_names_the_file() {
    let dir = TempDir::new("corrupt");
    let state = dir.write("state.json", "{\"version\": 1, \"epoch\": ");
    let cfg = dir.write("fulcrum.toml", &format!("state_file = \"{}\"\n", state.display()));
    let (status, log) = Fulcrum::builder().config_file(&cfg).expect_start_failure();
    assert!(!status.success());
    assert!(log.contains(&state.display().to_string()), "{log}");
    assert!(log.contains("corrupt"), "{log}");
    // The file is left alone for the operator.
    assert_eq!(std::fs::read_to_string(&state).unwrap(), "{\"version\": 1, \"epoch\": ");
}

#[test]
fn without_a_key_the_admin_api_stays_off_and_says_why() {
    let f = Fulcrum::builder().no_secret().no_admin().start();
    assert!(f.log_text().contains("admin API disabled"), "{}", f.log_text());
    assert!(!f.log_text().contains("admin listening"), "{}", f.log_text());
    assert_eq!(f.get("/").status(), 503, "the data plane runs without the admin API");
}

#[test]
fn token_subcommand_mints_usable_tokens() {
    let run = |args: &[&str], secret: Option<&str>| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_fulcrum"));
        cmd.arg("token").args(args).env_remove("FULCRUM_JWT_SECRET");
        if let Some(s) = secret {
            cmd.env("FULCRUM_JWT_SECRET", s);
        }
        cmd.output().unwrap()
    };
    let out = run(&["--scope", "fulcrum:read fulcrum:write", "--ttl", "1h"], Some(SECRET));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let write = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let out = run(&["--ttl", "10m"], Some(SECRET));
    let read = String::from_utf8(out.stdout).unwrap().trim().to_owned();

    let f = Fulcrum::builder().start();
    f.admin()
        .send("PUT", "/api/v1/algorithm", Some(&write), &json!({"algorithm": "random"}))
        .expect(200, None);
    f.admin().get("/api/v1/config", Some(&read)).expect(200, None);
    f.admin()
        .send("PUT", "/api/v1/algorithm", Some(&read), &json!({"algorithm": "random"}))
        .expect(403, Some("insufficient_scope"));

    // From a config file's secret.
    let dir = TempDir::new("token");
    let cfg = dir.write("f.toml", &format!("[admin]\njwt_secret = \"{SECRET}\"\n"));
    let out = run(&["--config", cfg.to_str().unwrap()], None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let from_file = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    f.admin().get("/api/v1/config", Some(&from_file)).expect(200, None);

    // No secret, bad scope, bad ttl: clear errors.
    let out = run(&[], None);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("FULCRUM_JWT_SECRET"));
    let out = run(&["--scope", "admin"], Some(SECRET));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("fulcrum:read"));
    assert!(!run(&["--ttl", "soon"], Some(SECRET)).status.success());
}

#[test]
fn demo_mode_prints_a_ready_write_token() {
    let f = Fulcrum::builder().no_secret().arg("--demo").start();
    let line = f.wait_log("demo admin token");
    let token = log_field(&line, "token").unwrap();
    f.admin()
        .send("PUT", "/api/v1/cache", Some(&token), &json!({"enabled": true}))
        .expect(200, None);
    assert_eq!(f.admin().get("/api/v1/backends", Some(&token)).json().as_array().unwrap().len(), 3);
    f.admin().get("/readyz", None).expect(200, None);
}

#[test]
fn a_change_the_state_file_refuses_is_not_applied() {
    let dir = TempDir::new("unsaved");
    let state = dir.join("state.json");
    let cfg = dir.write("fulcrum.toml", &format!("state_file = \"{}\"\n", state.display()));
    let f = Fulcrum::builder().config_file(&cfg).start();
    let t = write_token();
    let epoch = f.admin().get("/api/v1/config", Some(&t)).json()["epoch"].as_u64().unwrap();
    // A directory where the file should go: the atomic rename fails.
    std::fs::remove_file(&state).unwrap();
    std::fs::create_dir(&state).unwrap();
    let r = f.admin().send("PUT", "/api/v1/algorithm", Some(&t), &json!({"algorithm": "random"}));
    r.expect(500, Some("state_not_saved"));
    assert!(r.json()["error"]["message"].as_str().unwrap().contains("state.json"), "{}", r.text());
    let c = f.admin().get("/api/v1/config", Some(&t)).json();
    assert_eq!(c["algorithm"], "round_robin", "nothing applied: {c}");
    assert_eq!(c["epoch"], epoch);
    // Once the store works again, changes go through.
    std::fs::remove_dir(&state).unwrap();
    f.admin()
        .send("PUT", "/api/v1/algorithm", Some(&t), &json!({"algorithm": "random"}))
        .expect(200, None);
    assert!(std::fs::read_to_string(&state).unwrap().contains("\"random\""));
}

#[test]
fn the_example_config_is_valid_and_persists() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/fulcrum.example.toml");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_fulcrum"))
        .args(["check-config", example])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let effective = String::from_utf8(out.stdout).unwrap();
    assert!(effective.contains("state_file = "), "{effective}");
    assert!(!effective.contains("jwt_secret"), "secrets are never printed back");
}
