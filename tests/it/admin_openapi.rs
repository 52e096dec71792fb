//! The OpenAPI document against the server that publishes it: every documented operation is
//! answered with a documented status, every route the server answers is documented with its
//! responses and security, and the `/docs` page renders every operation in headless Chromium
//! with no network beyond the admin listener.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use crate::harness::admin::*;
use crate::harness::*;
use oas3::spec::{ObjectOrReference, SecurityScheme};
use serde_json::json;

const METHODS: [&str; 5] = ["GET", "POST", "PUT", "DELETE", "PATCH"];

fn is_protected(path: &str) -> bool {
    path.starts_with("/api/v1/") && path != "/api/v1/openapi.json"
}

#[test]
fn openapi_documents_exactly_the_routes_the_server_answers() {
    let b = TestBackend::named("spec");
    let f = Fulcrum::start([&b]);
    let raw = f.admin().get("/api/v1/openapi.json", None);
    raw.expect(200, None);
    assert!(raw.header("content-type").unwrap().starts_with("application/json"));
    let spec = oas3::from_json(raw.text()).expect("openapi.json parses as OpenAPI 3.1");
    assert!(spec.openapi.starts_with("3.1"), "{}", spec.openapi);

    // The bearer scheme the operations refer to.
    let components = spec.components.as_ref().expect("components");
    match components.security_schemes.get("bearer_auth") {
        Some(ObjectOrReference::Object(SecurityScheme::Http { scheme, bearer_format, .. })) => {
            assert_eq!(scheme.to_lowercase(), "bearer");
            assert_eq!(bearer_format.as_deref(), Some("JWT"));
        }
        other => panic!("bearer_auth scheme missing or wrong: {other:?}"),
    }
    assert!(spec.security.is_empty(), "no global security: public routes stay public");

    let mut documented: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut operation_ids = BTreeSet::new();
    for (path, method, op) in spec.operations() {
        let what = format!("{method} {path}");
        let id = op.operation_id.clone().unwrap_or_else(|| panic!("{what}: no operationId"));
        assert!(operation_ids.insert(id), "{what}: duplicate operationId");
        assert!(op.summary.is_some() || op.description.is_some(), "{what}: undocumented");
        let responses = op.responses.as_ref().unwrap_or_else(|| panic!("{what}: no responses"));
        assert!(!responses.is_empty(), "{what}: no responses");
        for (status, resp) in responses {
            match resp {
                ObjectOrReference::Object(r) => assert!(
                    r.description.as_deref().is_some_and(|d| !d.is_empty()),
                    "{what} {status}: no description"
                ),
                ObjectOrReference::Ref { .. } => {}
            }
        }
        let has = |s: &str| responses.contains_key(s);
        if is_protected(&path) {
            let scope = if method == "GET" { "fulcrum:read" } else { "fulcrum:write" };
            assert_eq!(op.security.len(), 1, "{what}: security");
            assert_eq!(
                op.security[0].0.get("bearer_auth"),
                Some(&vec![scope.to_owned()]),
                "{what}"
            );
            assert!(has("401") && has("403"), "{what}: 401 and 403 documented");
            // Only a mutation that reads a body can refuse one (DELETEs never read theirs, nor
            // does the TLS reload, an action without parameters).
            let reads_body = op.request_body.is_some();
            let takes_body = (method == "POST" || method == "PUT") && path != "/api/v1/tls/reload";
            assert_eq!(reads_body, takes_body, "{what}: request body");
            assert_eq!(has("400") && has("413"), reads_body, "{what}: 400 and 413 documented");
        } else {
            assert!(op.security.is_empty(), "{what}: public route with security");
        }
        documented.entry(path).or_default().insert(method.to_string());
    }
    let paths: BTreeSet<&str> = documented.keys().map(String::as_str).collect();
    let expected: BTreeSet<&str> = [
        "/healthz",
        "/readyz",
        "/metrics",
        "/docs",
        "/docs/{file}",
        "/api/v1/openapi.json",
        "/api/v1/config",
        "/api/v1/backends",
        "/api/v1/backends/{id}",
        "/api/v1/algorithm",
        "/api/v1/cache",
        "/api/v1/cache/entries",
        "/api/v1/pools",
        "/api/v1/pools/{name}",
        "/api/v1/pools/{name}/backends",
        "/api/v1/pools/{name}/backends/{id}",
        "/api/v1/pools/{name}/algorithm",
        "/api/v1/routes",
        "/api/v1/store",
        "/api/v1/tls",
        "/api/v1/tls/reload",
    ]
    .into();
    assert_eq!(paths, expected);

    // Every documented operation is answered (never 404/405) with a documented status, and every
    // other method on a documented path is 405.
    let t = write_token();
    let id = f.admin().get("/api/v1/backends", Some(&t)).json()[0]["id"].as_u64().unwrap();
    // A pool with a backend of its own for the `{name}` and `{name}/backends/{id}` paths.
    let created = f.admin().send(
        "POST",
        "/api/v1/pools",
        Some(&t),
        &json!({"name": "spec", "backends": [{"url": "http://127.0.0.1:2"}]}),
    );
    let pool_backend = created.expect(201, None).json()["backends"][0]["id"].as_u64().unwrap();
    let bodies = BTreeMap::from([
        ("POST /api/v1/backends", json!({"url": "http://127.0.0.1:1"})),
        ("PUT /api/v1/algorithm", json!({"algorithm": "random"})),
        ("PUT /api/v1/cache", json!({"enabled": true})),
        ("POST /api/v1/pools", json!({"name": "another"})),
        ("POST /api/v1/pools/{name}/backends", json!({"url": "http://127.0.0.1:3"})),
        ("PUT /api/v1/pools/{name}/algorithm", json!({"algorithm": "random"})),
        ("PUT /api/v1/routes", json!({"routes": [{"pool": "spec", "path_prefix": "/spec"}]})),
    ]);
    // DELETE last, so the backends and the pool exist for the other calls.
    let mut order: Vec<(&String, &BTreeSet<String>)> = documented.iter().collect();
    order.sort_by_key(|(p, _)| (p.contains("{id}"), p.as_str() == "/api/v1/pools/{name}"));
    for (template, methods) in order {
        let backend = if template.starts_with("/api/v1/pools/") { pool_backend } else { id };
        let path = template
            .replace("{id}", &backend.to_string())
            .replace("{name}", "spec")
            .replace("{file}", "swagger-ui.css");
        for method in METHODS {
            let key = format!("{method} {template}");
            let r = match bodies.get(key.as_str()) {
                Some(body) => f.admin().send(method, &path, Some(&t), body),
                // No body where none belongs: the admin server answers and closes
                // (`Connection: close`) without reading it, and the reset that the unread bytes
                // cause can cut a long answer (the OpenAPI document) short.
                None => f.admin().request(method, &path, Some(&t), &[], None),
            };
            if methods.contains(method) {
                assert!(
                    r.status() != 404 && r.status() != 405,
                    "{key}: {} {}",
                    r.status(),
                    r.text()
                );
                let op = spec.operation(&method.parse().unwrap(), template).unwrap();
                assert!(
                    op.responses.as_ref().unwrap().contains_key(&r.status().to_string()),
                    "{key}: status {} not documented",
                    r.status()
                );
            } else {
                assert_eq!(r.status(), 405, "{key}: undocumented method answered: {}", r.text());
            }
        }
    }

    // Routes the server does not document are not answered.
    for path in UNDOCUMENTED_PATHS {
        for method in METHODS {
            let r = f.admin().send(method, path, Some(&t), &json!(null));
            assert_eq!(r.status(), 404, "{method} {path} is answered but not documented");
        }
    }
}

#[test]
fn docs_page_renders_every_operation_in_headless_chromium() {
    let chromium = ["chromium", "chromium-browser"]
        .into_iter()
        .find(|c| Command::new(c).arg("--version").output().is_ok_and(|o| o.status.success()))
        .unwrap_or_else(|| {
            panic!(
                "headless Chromium is required for this test and was not found on PATH: \
                 install it with `apt-get install -y chromium` (Debian)"
            )
        });
    let f = Fulcrum::builder().start();
    let spec = f.admin().get("/api/v1/openapi.json", None).json();
    let mut ids = Vec::new();
    for item in spec["paths"].as_object().unwrap().values() {
        for op in item.as_object().unwrap().values() {
            ids.push(op["operationId"].as_str().unwrap().to_owned());
        }
    }
    assert!(ids.len() >= 14, "{ids:?}");

    let profile = TempDir::new("chromium");
    let url = format!("http://{}/docs", f.admin_addr());
    let out = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--no-first-run",
            // Every host but the admin listener's fails to resolve: the page must need nothing
            // from the network (no CDN).
            "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
            "--proxy-server=direct://",
            "--virtual-time-budget=10000",
            "--timeout=60000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("--dump-dom")
        .arg(&url)
        .output()
        .expect("run chromium");
    let dom = String::from_utf8_lossy(&out.stdout);
    assert!(
        dom.contains("opblock"),
        "Swagger UI did not render ({}):\n{dom}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!dom.contains("Failed to load API definition"), "{dom}");
    assert!(dom.contains("Fulcrum admin API"), "title missing");
    for id in &ids {
        assert!(dom.contains(&format!(">{id}<")), "operation `{id}` not rendered");
    }
    for path in ["/api/v1/config", "/api/v1/backends", "/api/v1/algorithm", "/api/v1/cache"] {
        assert!(dom.contains(path), "{path} not rendered");
    }
}
