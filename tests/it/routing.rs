//! Routing to several pools, through the real binary: each matcher alone and combined, route
//! order and the fallback to `default`, gRPC calls and HTTP/2 streams routed one by one on one
//! client connection, an algorithm per pool, pools and routes changed over the admin API under
//! load, persistence across a restart, validation (`check-config` and the API), the per-route
//! cache switch, and the existing flags and endpoints acting on `default`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::harness::admin::*;
use crate::harness::*;
use serde_json::{Value, json};

/// `GET path` with `Host: host` and `headers` on a fresh connection.
fn get_as(f: &Fulcrum, host: &str, path: &str, headers: &[(&str, &str)]) -> Response {
    let mut all = vec![("Host", host), ("Connection", "close")];
    all.extend_from_slice(headers);
    Client::connect(f.addr()).request("GET", path, &all, b"").unwrap()
}

/// The backend that answered `GET path` as `host`.
fn served(f: &Fulcrum, host: &str, path: &str, headers: &[(&str, &str)]) -> String {
    let r = get_as(f, host, path, headers);
    assert_eq!(r.status(), 200, "{host}{path}: {}", r.text());
    r.backend().to_owned()
}

/// A `[[pools]]` table with one backend per URL.
fn pool_toml(name: &str, algorithm: &str, urls: &[String]) -> String {
    let mut t = format!("[[pools]]\nname = \"{name}\"\nalgorithm = \"{algorithm}\"\n");
    for url in urls {
        t.push_str(&format!("[[pools.backends]]\nurl = \"{url}\"\n"));
    }
    t
}

/// Access records written to `path` (after the process stopped and flushed them).
fn records(path: &std::path::Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[test]
fn each_matcher_alone_and_combined_in_order_with_the_fallback() {
    let [def, api, web, canary, both] =
        ["def", "api", "web", "canary", "both"].map(TestBackend::named);
    let dir = TempDir::new("routes");
    let log = dir.join("access.log");
    let config = [
        pool_toml("api", "round_robin", &[api.url()]),
        pool_toml("web", "round_robin", &[web.url()]),
        pool_toml("canary", "round_robin", &[canary.url()]),
        pool_toml("both", "round_robin", &[both.url()]),
        r#"
        [[routes]]
        pool = "both"
        host = "shop.example.com"
        path_prefix = "/v1"
        headers = { x-tier = "gold" }

        [[routes]]
        pool = "canary"
        headers = { X-Canary = "1" }

        [[routes]]
        pool = "api"
        path_prefix = "/api"

        [[routes]]
        pool = "web"
        host = "*.example.com"
        "#
        .to_owned(),
    ]
    .concat();
    let f = Fulcrum::builder()
        .workers(1)
        .backend(&def)
        .config(&config)
        .access_log(&log.display().to_string())
        .start();
    let gold = [("x-tier", "gold")];
    for (host, path, headers, want) in [
        // All three matchers of route 0 together; each one missing falls through.
        ("shop.example.com", "/v1/cart", &gold[..], "both"),
        ("shop.example.com", "/v2/cart", &gold[..], "web"),
        ("shop.example.com", "/v1/cart", &[][..], "web"),
        ("other.test", "/v1/cart", &gold[..], "def"),
        // Headers alone (names ignore case, values exact), before the path route.
        ("other.test", "/api/x", &[("x-canary", "1")][..], "canary"),
        ("other.test", "/api/x", &[("x-canary", "10")][..], "api"),
        // The path prefix alone, on segment boundaries.
        ("other.test", "/api", &[][..], "api"),
        ("other.test", "/api?q=1", &[][..], "api"),
        ("other.test", "/apix", &[][..], "def"),
        // The wildcard host alone: any subdomain, any case, any port; not the bare domain.
        ("www.Example.COM:8080", "/", &[][..], "web"),
        ("a.b.example.com", "/", &[][..], "web"),
        ("example.com", "/", &[][..], "def"),
        // Nothing matches: `default`.
        ("other.test", "/", &[][..], "def"),
    ] {
        assert_eq!(served(&f, host, path, headers), want, "{host} {path} {headers:?}");
    }
    // Absolute-form targets name the host themselves.
    let mut c = Client::connect(f.addr());
    let r = c.request("GET", "http://x.example.com/", &[("Host", "other.test")], b"").unwrap();
    assert_eq!(r.backend(), "web");

    let m = f.metrics_counting(14);
    let api_ok =
        format!("fulcrum_requests_total{{pool=\"api\",backend=\"{}\",class=\"2xx\"}}", api.url());
    assert_eq!(m.value(&api_ok), 3.0);
    let def_ok = format!(
        "fulcrum_requests_total{{pool=\"default\",backend=\"{}\",class=\"2xx\"}}",
        def.url()
    );
    assert_eq!(m.value(&def_ok), 4.0);
    assert_eq!(
        m.value("fulcrum_requests_total{pool=\"both\",backend=\"none\",class=\"5xx\"}"),
        0.0
    );

    f.stop();
    let recs = records(&log);
    assert_eq!(recs.len(), 14, "{recs:#?}");
    let pools: Vec<(&str, Value)> =
        recs.iter().map(|r| (r["pool"].as_str().unwrap(), r["route"].clone())).collect();
    assert_eq!(pools[0], ("both", json!(0)));
    assert_eq!(pools[1], ("web", json!(3)));
    assert_eq!(pools[3], ("default", Value::Null));
    assert_eq!(pools[4], ("canary", json!(1)));
    assert_eq!(pools[5], ("api", json!(2)));
    assert_eq!(recs[5]["backend"], api.url());
}

#[test]
fn grpc_calls_to_two_services_on_one_connection_reach_two_pools() {
    let echo = EchoBackend::spawn("echo-pool");
    let mirror = EchoBackend::spawn("mirror-pool");
    let fallback = EchoBackend::spawn("default-pool");
    let config = [
        pool_toml("echo", "round_robin", &[echo.url()]),
        pool_toml("mirror", "round_robin", &[mirror.url()]),
        "[[routes]]\npool = \"echo\"\ngrpc_service = \"echo.Echo\"\n\
         [[routes]]\npool = \"mirror\"\ngrpc_service = \"echo.Mirror\"\n"
            .to_owned(),
    ]
    .concat();
    let f = Fulcrum::builder().backend(&fallback).config(&config).start();
    let addr = f.addr();
    run(async move {
        let mut client = GrpcClient::connect(addr).await;
        for i in 0..6 {
            let (service, want) = if i % 2 == 0 {
                ("echo.Echo", "echo-pool")
            } else {
                ("echo.Mirror", "mirror-pool")
            };
            let reply = client.say_to(service, &format!("m{i}")).await.unwrap();
            assert_eq!((reply.backend.as_str(), reply.message.as_str()), (want, &*format!("m{i}")));
        }
        // The same path without `content-type: application/grpc` is not a gRPC call: the
        // `grpc_service` routes do not match it.
        h2client::h2_request(addr, "POST", "/echo.Mirror/Unary", &[], Vec::new()).await;
    });
    assert_eq!((echo.calls(), mirror.calls()), (3, 3));
    let m = f.metrics_counting(7);
    let to = |pool: &str, url: &str| -> f64 {
        let prefix = format!("fulcrum_requests_total{{pool=\"{pool}\",backend=\"{url}\"");
        m.series(&prefix).iter().map(|k| m.value(k)).sum()
    };
    assert_eq!(to("echo", &echo.url()), 3.0);
    assert_eq!(to("mirror", &mirror.url()), 3.0);
    assert_eq!(to("default", &fallback.url()), 1.0, "the plain request fell back to default");
}

#[test]
fn http2_streams_on_one_connection_are_routed_one_by_one() {
    let [def, a, b] = ["def", "a", "b"].map(TestBackend::named);
    let config = [
        pool_toml("a", "round_robin", &[a.url()]),
        pool_toml("b", "round_robin", &[b.url()]),
        "[[routes]]\npool = \"a\"\nhost = \"a.test\"\n[[routes]]\npool = \"b\"\npath_prefix = \"/b\"\n"
            .to_owned(),
    ]
    .concat();
    let f = Fulcrum::builder().workers(1).backend(&def).config(&config).start();
    let addr = f.addr();
    run(async move {
        let mut send = h2client::connect(addr).await.ready().await.unwrap();
        for (authority, path, want) in [
            ("a.test", "/x", "a"),
            ("other", "/b/1", "b"),
            ("other", "/x", "def"),
            ("A.TEST:1", "/b", "a"),
        ] {
            let req = tonic::codegen::http::Request::get(format!("http://{authority}{path}"))
                .body(())
                .unwrap();
            let (response, _) = send.send_request(req, true).unwrap();
            let answer = h2client::finish(response).await.unwrap();
            assert_eq!(answer.status, 200);
            assert_eq!(answer.headers["x-backend"], want, "{authority}{path}");
            send = send.ready().await.unwrap();
        }
    });
}

#[test]
fn each_pool_balances_with_its_own_algorithm() {
    let [d1, d2] = ["d1", "d2"].map(TestBackend::named);
    let [w1, w2] = ["w1", "w2"].map(TestBackend::named);
    let [busy, idle] = ["busy", "idle"].map(TestBackend::named);
    let weighted = "[[pools]]\nname = \"weighted\"\n\
        [[pools.backends]]\nurl = \"W1\"\nweight = 3\n[[pools.backends]]\nurl = \"W2\"\n"
        .replace("W1", &w1.url())
        .replace("W2", &w2.url());
    let config = [
        weighted,
        pool_toml("least", "least_connections", &[busy.url(), idle.url()]),
        "[[routes]]\npool = \"weighted\"\npath_prefix = \"/w\"\n\
         [[routes]]\npool = \"least\"\nhost = \"least.test\"\n"
            .to_owned(),
    ]
    .concat();
    let f = Fulcrum::builder().workers(1).backends([&d1, &d2]).config(&config).start();

    // default: round robin, strictly alternating.
    let order: Vec<String> = (0..4).map(|_| served(&f, "t", "/", &[])).collect();
    assert!(order == ["d1", "d2", "d1", "d2"] || order == ["d2", "d1", "d2", "d1"], "{order:?}");
    // weighted: smooth weighted round robin, exactly 3:1.
    let mut tally = std::collections::HashMap::new();
    for _ in 0..40 {
        *tally.entry(served(&f, "t", "/w", &[])).or_insert(0) += 1;
    }
    assert_eq!((tally["w1"], tally["w2"]), (30, 10), "{tally:?}");
    // least: with one backend holding a request, every new one goes to the other.
    busy.hold();
    let addr = f.addr();
    let mut held = Vec::new();
    for _ in 0..4 {
        let idle_before = idle.requests();
        held.push(std::thread::spawn(move || {
            Client::connect(addr).request("GET", "/hold", &[("Host", "least.test")], b"").unwrap()
        }));
        expect_within(Duration::from_secs(10), "the request reached a backend", || {
            busy.in_flight() == 1 || idle.requests() > idle_before
        });
        if busy.in_flight() == 1 {
            break;
        }
    }
    assert_eq!(busy.in_flight(), 1, "ties go in turn: `busy` got one of the first requests");
    let before = idle.requests();
    for _ in 0..10 {
        assert_eq!(served(&f, "least.test", "/hold", &[]), "idle");
    }
    assert_eq!(idle.requests(), before + 10);
    busy.release();
    for h in held {
        assert_eq!(h.join().unwrap().status(), 200);
    }

    // Switching one pool's algorithm leaves the others alone.
    let admin = f.admin();
    let t = write_token();
    let r = admin.send(
        "PUT",
        "/api/v1/pools/least/algorithm",
        Some(&t),
        &json!({"algorithm": "random"}),
    );
    r.expect(200, None);
    let epoch = r.json()["epoch"].as_u64().unwrap();
    assert_eq!(r.header("fulcrum-epoch"), Some(&*epoch.to_string()));
    let algorithm =
        |path: &str| admin.get(path, Some(&t)).expect(200, None).json()["algorithm"].clone();
    assert_eq!(algorithm("/api/v1/pools/least/algorithm"), "random");
    assert_eq!(algorithm("/api/v1/pools/weighted/algorithm"), "round_robin");
    assert_eq!(algorithm("/api/v1/algorithm"), "round_robin");
    admin.get("/api/v1/pools/nope/algorithm", Some(&t)).expect(404, Some("unknown_pool"));
}

/// Client threads sending keep-alive GETs for `path` until stopped; every answer other than
/// 200 (and every error) is a failure.
struct Load {
    stop: Arc<AtomicBool>,
    done: Arc<AtomicUsize>,
    failures: Arc<Mutex<Vec<String>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(addr: SocketAddr, paths: &[&'static str]) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicUsize::new(0));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let threads = paths
            .iter()
            .map(|&path| {
                let (stop, done, failures) = (stop.clone(), done.clone(), failures.clone());
                std::thread::spawn(move || {
                    let mut client = Client::connect(addr);
                    let mut n = 0;
                    while !stop.load(SeqCst) {
                        // A new connection now and then, so both workers see traffic.
                        if n % 25 == 24 {
                            client = Client::connect(addr);
                        }
                        match client.request("GET", path, &[("Host", "load.test")], b"") {
                            Ok(r) if r.status() == 200 => {}
                            Ok(r) => {
                                failures.lock().unwrap().push(format!("{path}: {}", r.status()))
                            }
                            Err(e) => {
                                failures.lock().unwrap().push(format!("{path}: {e}"));
                                client = Client::connect(addr);
                            }
                        }
                        n += 1;
                        done.fetch_add(1, SeqCst);
                    }
                })
            })
            .collect();
        Self { stop, done, failures, threads }
    }

    /// Waits until `n` more requests completed.
    fn progress(&self, n: usize) {
        let base = self.done.load(SeqCst);
        expect_within(Duration::from_secs(20), "load progress", || {
            self.done.load(SeqCst) >= base + n
        });
    }

    fn finish(self) -> Vec<String> {
        self.stop.store(true, SeqCst);
        for t in self.threads {
            t.join().unwrap();
        }
        self.failures.lock().unwrap().clone()
    }
}

#[test]
fn pools_and_routes_change_live_under_load_without_a_failed_request() {
    let def = TestBackend::named("def");
    let [a, b] = ["a", "b"].map(TestBackend::named);
    let dir = TempDir::new("live-routes");
    let log = dir.join("access.log");
    let f = Fulcrum::builder().backend(&def).access_log(&log.display().to_string()).start();
    let admin = f.admin();
    let t = write_token();
    let load = Load::start(f.addr(), &["/api/x", "/api/y", "/web", "/api"]);
    load.progress(50);

    // A pool, then a route to it: two epochs.
    let r = admin.send("POST", "/api/v1/pools", Some(&t), &json!({"name": "api", "algorithm": "round_robin", "backends": [{"url": a.url(), "weight": 1}]}));
    r.expect(201, None);
    assert_eq!(r.header("location"), Some("/api/v1/pools/api"));
    assert_eq!(r.json()["backends"][0]["url"], a.url());
    admin
        .send("POST", "/api/v1/pools", Some(&t), &json!({"name": "api"}))
        .expect(409, Some("duplicate_pool"));
    load.progress(50);
    let routes = json!({"routes": [{"pool": "api", "path_prefix": "/api"}]});
    let r = admin.send("PUT", "/api/v1/routes", Some(&t), &routes);
    r.expect(200, None);
    let routed_at = r.json()["epoch"].as_u64().unwrap();
    assert_eq!(r.json()["routes"], routes["routes"]);
    load.progress(100);
    assert!(a.requests() > 0, "the route sends /api to the new pool");

    // The pool changes under the route: a second backend, another algorithm.
    let r = admin.send("POST", "/api/v1/pools/api/backends", Some(&t), &json!({"url": b.url()}));
    r.expect(201, None);
    let b_id = r.json()["id"].as_u64().unwrap();
    assert_eq!(r.header("location"), Some(&*format!("/api/v1/pools/api/backends/{b_id}")));
    admin
        .send(
            "PUT",
            "/api/v1/pools/api/algorithm",
            Some(&t),
            &json!({"algorithm": "least_connections"}),
        )
        .expect(200, None);
    load.progress(100);
    assert!(b.requests() > 0, "the pool's new backend takes traffic");
    admin
        .send("DELETE", "/api/v1/pools/api", Some(&t), &Value::Null)
        .expect(409, Some("pool_in_use"));
    admin
        .send("DELETE", "/api/v1/pools/default", Some(&t), &Value::Null)
        .expect(409, Some("pool_in_use"));

    // The route goes: from its epoch on, nothing reaches the pool.
    let r = admin.send("PUT", "/api/v1/routes", Some(&t), &json!({"routes": []}));
    r.expect(200, None);
    let removed_at = r.json()["epoch"].as_u64().unwrap();
    load.progress(100);
    let r =
        admin.send("DELETE", &format!("/api/v1/pools/api/backends/{b_id}"), Some(&t), &Value::Null);
    r.expect(204, None);
    admin.send("DELETE", "/api/v1/pools/api", Some(&t), &Value::Null).expect(204, None);
    admin.get("/api/v1/pools/api", Some(&t)).expect(404, Some("unknown_pool"));
    load.progress(50);
    let failures = load.finish();
    assert!(failures.is_empty(), "failed requests: {failures:?}");

    f.stop();
    let recs = records(&log);
    assert!(recs.len() >= 450, "{}", recs.len());
    let mut after_route = 0;
    for r in &recs {
        let epoch = r["epoch"].as_u64().unwrap();
        let path = r["path"].as_str().unwrap();
        let pool = r["pool"].as_str().unwrap();
        assert_eq!(r["status"], 200, "{r}");
        if epoch >= removed_at || epoch < routed_at || path == "/web" {
            assert_eq!((pool, &r["backend"]), ("default", &json!(def.url())), "{r}");
            assert_eq!(r["route"], Value::Null, "{r}");
        } else {
            assert_eq!((pool, &r["route"]), ("api", &json!(0)), "{r}");
            after_route += 1;
        }
    }
    assert!(after_route > 0);
}

#[test]
fn pools_and_routes_survive_a_restart() {
    let def = TestBackend::named("def");
    let api = TestBackend::named("api");
    let dir = TempDir::new("routes-state");
    let state = dir.join("state.json");
    let cfg = dir.write(
        "fulcrum.toml",
        &format!(
            "state_file = \"{}\"\nbackends = [{{ url = \"{}\" }}]\n",
            state.display(),
            def.url()
        ),
    );
    let t = write_token();
    let f = Fulcrum::builder().config_file(&cfg).start();
    let admin = f.admin();
    let r = admin.send(
        "POST",
        "/api/v1/pools",
        Some(&t),
        &json!({"name": "api", "algorithm": "random", "backends": [{"url": api.url(), "weight": 7}]}),
    );
    r.expect(201, None);
    let routes =
        json!([{"pool": "api", "host": "api.test", "headers": {"x-v": "2"}, "cache": false}]);
    admin.send("PUT", "/api/v1/routes", Some(&t), &json!({"routes": routes})).expect(200, None);
    let pools_before = admin.get("/api/v1/pools", Some(&t)).expect(200, None).json();
    assert_eq!(served(&f, "api.test", "/", &[("x-v", "2")]), "api");
    f.stop();

    let f = Fulcrum::builder().config_file(&cfg).start();
    let admin = f.admin();
    let got = admin.get("/api/v1/routes", Some(&t)).expect(200, None).json();
    assert_eq!(got["routes"], routes);
    let pools = admin.get("/api/v1/pools", Some(&t)).expect(200, None).json();
    let shape = |p: &Value| {
        p.as_array()
            .unwrap()
            .iter()
            .map(|p| {
                let backends: Vec<Value> = p["backends"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|b| json!([b["id"], b["url"], b["weight"]]))
                    .collect();
                json!([p["name"], p["algorithm"], backends])
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(shape(&pools), shape(&pools_before));
    assert_eq!(served(&f, "api.test", "/", &[("x-v", "2")]), "api");
    assert_eq!(served(&f, "api.test", "/", &[]), "def");
}

#[test]
fn check_config_names_the_offending_key() {
    let dir = TempDir::new("check-routes");
    for (toml, key) in [
        ("[[routes]]\npool = \"nope\"\n", "routes[0].pool"),
        ("[[pools]]\nname = \"a\"\n[[pools]]\nname = \"a\"\n", "pools[1].name"),
        (
            "[[pools]]\nname = \"a\"\n[[routes]]\npool = \"a\"\npath_prefix = \"/api\"\n\
             [[routes]]\npool = \"default\"\npath_prefix = \"/api/v1\"\n",
            "routes[1]",
        ),
        (
            "[[pools]]\nname = \"a\"\n[[routes]]\npool = \"a\"\nheaders = { \"bad name\" = \"1\" }\n",
            "routes[0].headers.bad name",
        ),
    ] {
        let path = dir.write("bad.toml", toml);
        let (status, _, stderr) = check_config(&path);
        assert!(!status.success(), "{toml}");
        assert!(stderr.contains(&format!("`{key}`")), "{toml}: {stderr}");
    }
    let good = dir.write(
        "good.toml",
        "[[pools]]\nname = \"api\"\nalgorithm = \"random\"\n[[pools.backends]]\nurl = \"http://127.0.0.1:1\"\n\
         [[routes]]\npool = \"api\"\nhost = \"*.example.com\"\n",
    );
    let (status, stdout, stderr) = check_config(&good);
    assert!(status.success(), "{stderr}");
    assert!(stdout.contains("[[pools]]") && stdout.contains("[[routes]]"), "{stdout}");
}

#[test]
fn bad_route_lists_change_nothing_and_answer_400_naming_the_route() {
    let def = TestBackend::named("def");
    let f = Fulcrum::builder()
        .backend(&def)
        .config("[[pools]]\nname = \"api\"\n[[routes]]\npool = \"api\"\npath_prefix = \"/api\"\n")
        .start();
    let admin = f.admin();
    let t = write_token();
    let before = admin.get("/api/v1/routes", Some(&t)).expect(200, None).json();
    for (routes, needle) in [
        (json!([{"pool": "api", "host": "a.test"}, {"pool": "nope"}]), "routes[1].pool"),
        (json!([{"pool": "api", "port": 80}]), "routes[0]"),
        (json!([{"pool": "api"}, {"pool": "api", "host": "a.test"}]), "routes[1]"),
        (json!([{"pool": "api", "path_prefix": "api"}]), "routes[0].path_prefix"),
        (json!([{"pool": "api", "headers": {"x-a": "1\n"}}]), "routes[0].headers.x-a"),
        (json!([{"pool": "api", "host": "a.test:80"}]), "routes[0].host"),
    ] {
        let r = admin.send("PUT", "/api/v1/routes", Some(&t), &json!({ "routes": routes }));
        r.expect(400, Some("invalid_route"));
        assert!(r.text().contains(needle), "{routes}: {}", r.text());
    }
    let too_many: Vec<Value> =
        (0..1025).map(|i| json!({"pool": "api", "host": format!("h{i}.test")})).collect();
    let r = admin.send("PUT", "/api/v1/routes", Some(&t), &json!({ "routes": too_many }));
    r.expect(400, Some("invalid_route"));
    assert_eq!(admin.get("/api/v1/routes", Some(&t)).json(), before, "nothing changed");
    // Scopes as for every mutation.
    admin
        .send("PUT", "/api/v1/routes", Some(&read_token()), &json!({"routes": []}))
        .expect(403, None);
    admin.get("/api/v1/routes", None).expect(401, None);
    // Bad pools.
    for (body, status, code) in [
        (json!({"name": "a b"}), 400, "invalid_pool"),
        (json!({"name": "default"}), 409, "duplicate_pool"),
        (json!({"name": "x", "algorithm": "fastest"}), 400, "invalid_algorithm"),
        (json!({"name": "x", "backends": [{"url": "ftp://a:1"}]}), 400, "invalid_url"),
        (
            json!({"name": "x", "backends": [{"url": "http://127.0.0.1:1"}, {"url": "http://127.0.0.1:1"}]}),
            400,
            "invalid_pool",
        ),
    ] {
        admin.send("POST", "/api/v1/pools", Some(&t), &body).expect(status, Some(code));
    }
    // The route still holds: `/api` goes to the empty pool `api` (503), never to `default`.
    assert_eq!(get_as(&f, "t", "/api", &[]).status(), 503);
    assert_eq!(def.requests(), 0);
}

#[test]
fn a_route_turns_the_cache_on_or_off_for_what_it_matches() {
    let def = TestBackend::named("def");
    let config = "[[pools]]\nname = \"cached\"\n[[pools.backends]]\nurl = \"URL\"\n\
        [[routes]]\npool = \"cached\"\npath_prefix = \"/on\"\ncache = true\n\
        [[routes]]\npool = \"default\"\npath_prefix = \"/off\"\ncache = false\n"
        .replace("URL", &def.url());
    let f = Fulcrum::builder().workers(1).backend(&def).config(&config).start();
    // `[cache]` is off: only the route's requests are cached.
    let x_cache = |path: &str| get_as(&f, "t", path, &[]).header("x-cache").map(str::to_owned);
    assert_eq!(x_cache("/on/a").as_deref(), Some("MISS"));
    assert_eq!(x_cache("/on/a").as_deref(), Some("HIT"));
    assert_eq!(x_cache("/other"), None);
    // With `[cache]` on, the `cache = false` route is never cached.
    let t = write_token();
    f.admin().send("PUT", "/api/v1/cache", Some(&t), &json!({"enabled": true})).expect(200, None);
    assert_eq!(x_cache("/other").as_deref(), Some("MISS"));
    assert_eq!(x_cache("/other").as_deref(), Some("HIT"));
    assert_eq!(x_cache("/off/a"), None);
    assert_eq!(x_cache("/off/a"), None);
}

#[test]
fn existing_flags_and_endpoints_act_on_the_default_pool() {
    let [a, b, c] = ["a", "b", "c"].map(TestBackend::named);
    let f = Fulcrum::builder()
        .backends([&a, &b])
        .algorithm("least_connections")
        .config("[[pools]]\nname = \"other\"\n")
        .start();
    let admin = f.admin();
    let t = write_token();
    let pools = admin.get("/api/v1/pools", Some(&t)).expect(200, None).json();
    assert_eq!(pools[0]["name"], "default");
    assert_eq!(pools[0]["algorithm"], "least_connections");
    let urls: Vec<&Value> =
        pools[0]["backends"].as_array().unwrap().iter().map(|b| &b["url"]).collect();
    assert_eq!(urls, [&json!(a.url()), &json!(b.url())]);
    assert_eq!(pools[1]["name"], "other");
    // `/api/v1/backends` and `/api/v1/algorithm` are the default pool's.
    let r = admin.send("POST", "/api/v1/backends", Some(&t), &json!({"url": c.url()}));
    r.expect(201, None);
    let id = r.json()["id"].as_u64().unwrap();
    assert_eq!(r.header("location"), Some(&*format!("/api/v1/backends/{id}")));
    let default = admin.get("/api/v1/pools/default", Some(&t)).expect(200, None).json();
    assert_eq!(default["backends"][2]["id"], id);
    let same = admin
        .get(&format!("/api/v1/pools/default/backends/{id}"), Some(&t))
        .expect(200, None)
        .json();
    assert_eq!(same["url"], c.url());
    admin
        .send("PUT", "/api/v1/algorithm", Some(&t), &json!({"algorithm": "random"}))
        .expect(200, None);
    let default = admin.get("/api/v1/pools/default/algorithm", Some(&t)).expect(200, None).json();
    assert_eq!(default["algorithm"], "random");
    let other = admin.get("/api/v1/pools/other/algorithm", Some(&t)).expect(200, None).json();
    assert_eq!(other["algorithm"], "round_robin");
    // A backend of another pool is not one of `/api/v1/backends`.
    let r = admin.send("POST", "/api/v1/pools/other/backends", Some(&t), &json!({"url": a.url()}));
    let other_id = r.expect(201, None).json()["id"].as_u64().unwrap();
    assert!(other_id > id, "ids are unique across pools");
    admin
        .get(&format!("/api/v1/backends/{other_id}"), Some(&t))
        .expect(404, Some("unknown_backend"));
    admin
        .send("DELETE", &format!("/api/v1/backends/{other_id}"), Some(&t), &Value::Null)
        .expect(404, Some("unknown_backend"));
    // `/api/v1/config` shows every pool and the routes.
    let config = admin.get("/api/v1/config", Some(&t)).expect(200, None).json();
    assert_eq!(config["algorithm"], "random");
    assert_eq!(config["backends"].as_array().unwrap().len(), 3);
    let names: Vec<&Value> =
        config["pools"].as_array().unwrap().iter().map(|p| &p["name"]).collect();
    assert_eq!(names, [&json!("default"), &json!("other")]);
    assert_eq!(config["routes"], json!([]));
    assert_eq!(served(&f, "t", "/", &[]).len(), 1);
}
