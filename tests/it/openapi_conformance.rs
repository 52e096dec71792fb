//! The OpenAPI document is what the admin API serves. The real `fulcrum` binary (admin API on,
//! real test backends) is driven through every documented operation to each status it can
//! produce; every answer is checked against the document with a JSON Schema 2020-12 validator
//! (the `jsonschema` crate, `$ref`s resolved inside the published document): its status must be
//! documented for that operation, its `Content-Type` must be a documented media type, its body
//! must validate against that media type's schema, and every header the document gives for that
//! status must be sent and validate against its schema. Paths and methods no operation owns are
//! checked against the document's shared `NotFound` and `MethodNotAllowed` responses. At the
//! end, every documented (operation, status) pair must have been seen, except the few listed in
//! [`UNREACHABLE`] with the reason no outside request can produce them.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use crate::harness::admin::{SECRET, UNDOCUMENTED_PATHS, now, sign_hs};
use crate::harness::http1::request_chunked;
use crate::harness::tls::{CertFiles, Pki};
use crate::harness::{
    Etcd, Fulcrum, Proxy, Response, TempDir, TestBackend, expect_within, have_etcd,
};
use jsonschema::{Draft, Registry, Validator};
use jsonwebtoken::Algorithm;
use serde_json::{Value, json};

/// The base URI the published document is registered under, so that its `#/components/...`
/// references resolve inside it.
const DOC_URI: &str = "urn:fulcrum:admin:openapi.json";

/// Methods tried on every documented path (HEAD is left out: its answer has no body to check).
const METHODS: [&str; 6] = ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"];

/// How long a state the test waits for (health state, published counters) may take.
const SETTLE: Duration = Duration::from_secs(15);

/// Documented answers no request from outside the process can produce, with the reason. Every
/// other documented (operation, status) pair must be seen.
const UNREACHABLE: &[(&str, u16, &str)] = &[
    ("get_config", 503, UNAVAILABLE),
    ("list_backends", 503, UNAVAILABLE),
    ("get_backend", 503, UNAVAILABLE),
    ("get_algorithm", 503, UNAVAILABLE),
    ("get_cache", 503, UNAVAILABLE),
    ("list_pools", 503, UNAVAILABLE),
    ("get_pool", 503, UNAVAILABLE),
    ("list_pool_backends", 503, UNAVAILABLE),
    ("get_pool_backend", 503, UNAVAILABLE),
    ("get_pool_algorithm", 503, UNAVAILABLE),
    ("get_routes", 503, UNAVAILABLE),
];

const UNAVAILABLE: &str = "`unavailable` needs a worker that does not acknowledge an epoch for \
    5 s or a stopped control thread; the admin listener closes before the control thread stops \
    (a mutation's 503 is `store_unavailable` with etcd unreachable, see `etcd_server`)";

/// The published document, compiled validators for the schemas in it, and what was checked.
struct Conformance {
    doc: Value,
    registry: Registry<'static>,
    validators: HashMap<String, Validator>,
    /// (operationId, or `#/components/responses/Name`; status) -> answers checked.
    seen: BTreeMap<(String, u16), usize>,
    /// Which kind of answer (request, operation, status) -> the first reason it did not match.
    mismatches: BTreeMap<String, String>,
}

impl Conformance {
    /// Fetches the document from `f` (the document's own answer is the first one checked).
    fn fetch(f: &Fulcrum) -> Self {
        let r = f.admin().get("/api/v1/openapi.json", None);
        assert_eq!(r.status(), 200, "{}", r.text());
        let doc = r.json();
        assert!(
            doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.1")),
            "{}",
            doc["openapi"]
        );
        let registry = Registry::new()
            .add(DOC_URI, Draft::Draft202012.create_resource(doc.clone()))
            .and_then(|b| b.prepare())
            .unwrap_or_else(|e| panic!("the document is not a usable schema resource: {e}"));
        let mut cx = Self {
            doc,
            registry,
            validators: HashMap::new(),
            seen: BTreeMap::new(),
            mismatches: BTreeMap::new(),
        };
        cx.check("GET", "/api/v1/openapi.json", &r);
        cx
    }

    /// The documented methods of `template`, upper case.
    fn methods(&self, template: &str) -> BTreeSet<String> {
        self.doc["paths"][template]
            .as_object()
            .unwrap_or_else(|| panic!("{template} is not a documented path"))
            .keys()
            .map(|m| m.to_ascii_uppercase())
            .collect()
    }

    /// Checks one answer to `method template` against the response the operation documents for
    /// its status; a mismatch is recorded (see [`Self::mismatches`]).
    fn check(&mut self, method: &str, template: &str, r: &Response) {
        let op_ptr = format!("/paths/{}/{}", escape(template), method.to_ascii_lowercase());
        let op = self
            .doc
            .pointer(&op_ptr)
            .unwrap_or_else(|| panic!("{method} {template} is not a documented operation"));
        let id = op["operationId"].as_str().expect("operationId").to_owned();
        let what = format!("{method} {template} ({id}) answered {}", r.status());
        let resp_ptr = format!("{op_ptr}/responses/{}", r.status());
        let outcome = if self.doc.pointer(&resp_ptr).is_none() {
            Err(format!(
                "a status the document does not give for this operation; body: {}",
                r.text()
            ))
        } else {
            self.check_response(&resp_ptr, r)
        };
        self.record(what, outcome);
        *self.seen.entry((id, r.status())).or_default() += 1;
    }

    /// Checks an answer no operation owns against `#/components/responses/{name}`.
    fn check_shared(&mut self, name: &str, request: &str, r: &Response) {
        let ptr = format!("/components/responses/{name}");
        let outcome = if self.doc.pointer(&ptr).is_none() {
            Err(format!("the document has no #{ptr}"))
        } else {
            self.check_response(&ptr, r)
        };
        // One entry per shared response and status, whatever the path.
        let first = request.split(' ').next().unwrap_or_default();
        self.record(format!("{first} (#{ptr}) answered {}", r.status()), outcome);
        *self.seen.entry((format!("#{ptr}"), r.status())).or_default() += 1;
    }

    /// Keeps the first reason each kind of answer did not match (the same drift repeats on
    /// every call of an operation).
    fn record(&mut self, what: String, outcome: Result<(), String>) {
        if let Err(reason) = outcome {
            self.mismatches.entry(what).or_insert(reason);
        }
    }

    /// Body (media type and schema) and headers of `r` against the response object at `ptr`.
    fn check_response(&mut self, ptr: &str, r: &Response) -> Result<(), String> {
        let mut ptr = ptr.to_owned();
        while let Some(target) = self.doc.pointer(&ptr).and_then(|o| o.get("$ref")) {
            let target = target.as_str().ok_or("a $ref that is not a string")?;
            ptr = target.strip_prefix('#').ok_or(format!("a non-local $ref {target}"))?.to_owned();
        }
        let response = self.doc.pointer(&ptr).cloned().ok_or(format!("no #{ptr}"))?;
        let content =
            response.get("content").and_then(Value::as_object).filter(|c| !c.is_empty()).cloned();
        let mut problems = Vec::new();
        match content {
            None if r.body.is_empty() => {}
            None => problems.push(format!("a body, and #{ptr} gives none: {}", r.text())),
            Some(content) => match r.header("content-type") {
                None => problems.push("no Content-Type".into()),
                Some(served) => match content.keys().find(|k| same_media_type(k, served)) {
                    None => problems.push(format!(
                        "Content-Type `{served}` is not among the media types #{ptr} gives: {:?}",
                        content.keys().collect::<Vec<_>>()
                    )),
                    Some(key) if content[key].get("schema").is_some() => {
                        let schema_ptr = format!("{ptr}/content/{}/schema", escape(key));
                        if let Err(e) = body_instance(key, r)
                            .and_then(|instance| self.validate(&schema_ptr, &instance))
                        {
                            problems.push(format!("body: {e}"));
                        }
                    }
                    Some(_) => {}
                },
            },
        }
        let headers = response.get("headers").and_then(Value::as_object).cloned();
        for (name, header) in headers.unwrap_or_default() {
            let Some(value) = r.header(&name) else {
                problems.push(format!("no `{name}` header, which #{ptr} gives"));
                continue;
            };
            if let Some(schema) = header.get("schema") {
                let schema_ptr = format!("{ptr}/headers/{}/schema", escape(&name));
                if let Err(e) = header_instance(schema, value)
                    .and_then(|instance| self.validate(&schema_ptr, &instance))
                {
                    problems.push(format!("header `{name}`: {e}"));
                }
            }
        }
        if problems.is_empty() { Ok(()) } else { Err(problems.join("; ")) }
    }

    /// Validates `instance` against the schema at `ptr` in the document.
    fn validate(&mut self, ptr: &str, instance: &Value) -> Result<(), String> {
        let registry = &self.registry;
        let validator = self.validators.entry(ptr.to_owned()).or_insert_with(|| {
            jsonschema::options()
                .with_draft(Draft::Draft202012)
                .with_registry(registry)
                .should_validate_formats(true)
                .build(&json!({ "$ref": format!("{DOC_URI}#{}", fragment(ptr)) }))
                .unwrap_or_else(|e| panic!("the schema at #{ptr} does not compile: {e}"))
        });
        let errors: Vec<String> = validator
            .iter_errors(instance)
            .map(|e| {
                let mut e = format!("at `{}` (`{}`): {e}", e.instance_path(), e.schema_path());
                if e.len() > 300 {
                    e = format!("{}...", e.chars().take(300).collect::<String>());
                }
                e
            })
            .collect();
        if errors.is_empty() {
            return Ok(());
        }
        let mut shown = instance.to_string();
        if shown.len() > 400 {
            shown = format!("{}...", shown.chars().take(400).collect::<String>());
        }
        Err(format!("does not validate against #{ptr}: {}; instance: {shown}", errors.join(", ")))
    }

    /// Every documented (operation or shared response, status) pair.
    fn documented(&self) -> BTreeSet<(String, u16)> {
        let mut all = BTreeSet::new();
        for item in self.doc["paths"].as_object().unwrap().values() {
            for op in item.as_object().unwrap().values() {
                let id = op["operationId"].as_str().unwrap();
                for status in op["responses"].as_object().unwrap().keys() {
                    all.insert((id.to_owned(), status.parse().unwrap()));
                }
            }
        }
        all.insert(("#/components/responses/NotFound".into(), 404));
        all.insert(("#/components/responses/MethodNotAllowed".into(), 405));
        all
    }

    /// Sends `method path` with `headers` and raw `body`, checks the answer against `template`
    /// and asserts it has the `expected` status.
    fn raw(
        &mut self,
        f: &Fulcrum,
        expected: u16,
        (method, template, path): (&str, &str, &str),
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Response {
        let r = f.admin().request(method, path, None, headers, body);
        self.check(method, template, &r);
        assert_eq!(r.status(), expected, "{method} {path}: {}", r.text());
        r
    }

    /// [`Self::raw`] with a bearer token (or none) and a JSON body (or none).
    fn call(
        &mut self,
        f: &Fulcrum,
        expected: u16,
        route: (&str, &str, &str),
        auth: &Auth,
        body: Option<&Value>,
    ) -> Response {
        let mut headers = auth.headers();
        let body = body.map(|b| serde_json::to_vec(b).unwrap());
        if body.is_some() {
            headers.push(("Content-Type", "application/json"));
        }
        self.raw(f, expected, route, &headers, body.as_deref())
    }
}

impl Drop for Conformance {
    /// When a behaviour assertion fails first, the mismatches found so far still get shown.
    #[allow(clippy::print_stderr)] // shows the mismatches next to a failing test
    fn drop(&mut self) {
        if std::thread::panicking() && !self.mismatches.is_empty() {
            eprintln!("answers that did not match the document before the failure:");
            for (what, why) in &self.mismatches {
                eprintln!("  {what}: {why}");
            }
        }
    }
}

/// `~` and `/` escaped for a JSON pointer segment.
fn escape(segment: &str) -> String {
    segment.replace('~', "~0").replace('/', "~1")
}

/// A JSON pointer as a URI fragment (RFC 6901 section 6): percent-encoded where a fragment
/// may not hold the character, e.g. the braces of `/docs/{file}`.
fn fragment(ptr: &str) -> String {
    let mut out = String::with_capacity(ptr.len());
    for b in ptr.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/?".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A media type's essence (lower case) and its parameters (names lower case, values unquoted).
fn media_type(s: &str) -> (String, BTreeMap<String, String>) {
    let mut parts = s.split(';');
    let essence = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
    let params = parts
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().trim_matches('"').to_owned()))
        .collect();
    (essence, params)
}

/// Whether a served `Content-Type` is exactly a documented media type (parameters included).
fn same_media_type(documented: &str, served: &str) -> bool {
    media_type(documented) == media_type(served)
}

/// The JSON instance a body is validated as: the parsed JSON for a JSON media type, the text
/// as a string for a `text/*` one. A binary media type is documented without a schema.
fn body_instance(media: &str, r: &Response) -> Result<Value, String> {
    let (essence, _) = media_type(media);
    if essence == "application/json" || essence.ends_with("+json") {
        serde_json::from_slice(&r.body).map_err(|e| format!("not JSON ({e}): {}", r.text()))
    } else if essence.starts_with("text/") {
        String::from_utf8(r.body.clone()).map(Value::String).map_err(|_| "not UTF-8".into())
    } else {
        Err(format!("a schema for the binary media type {media}, which no JSON value can match"))
    }
}

/// A header value as the JSON instance its schema describes (`simple` style: a primitive is
/// its literal).
fn header_instance(schema: &Value, value: &str) -> Result<Value, String> {
    match schema.get("type").and_then(Value::as_str) {
        None | Some("string") => Ok(Value::String(value.to_owned())),
        Some(kind) => {
            serde_json::from_str(value).map_err(|e| format!("`{value}` is not {kind} ({e})"))
        }
    }
}

/// What goes in the `Authorization` header: nothing, or this value.
#[derive(Debug, Clone)]
enum Auth {
    None,
    Value(String),
}

impl Auth {
    /// `Bearer {token}`.
    fn bearer(token: String) -> Self {
        Auth::Value(format!("Bearer {token}"))
    }

    /// The request headers that carry it.
    fn headers(&self) -> Vec<(&str, &str)> {
        match self {
            Auth::None => Vec::new(),
            Auth::Value(v) => vec![("Authorization", v.as_str())],
        }
    }
}

/// Tokens for one server: valid ones by scope, and one of each kind of invalid token.
struct Tokens {
    read: Auth,
    write: Auth,
    /// Valid, with no Fulcrum scope: `403` everywhere.
    no_scope: Auth,
    /// Every way to get a `401`: none, not `Bearer`, not a JWT, a bad signature, expired.
    invalid: Vec<Auth>,
}

impl Tokens {
    /// Tokens signed with [`SECRET`], carrying `iss`/`aud` when the server requires them.
    fn new(iss_aud: Option<(&str, &str)>) -> Self {
        let claims = |scope: &str, exp: u64| {
            let mut c = json!({"exp": exp, "scope": scope});
            if let Some((iss, aud)) = iss_aud {
                c["iss"] = json!(iss);
                c["aud"] = json!(aud);
            }
            c
        };
        let hs = |scope: &str, exp: u64, key: &str| {
            Auth::bearer(sign_hs(Algorithm::HS256, key.as_bytes(), &claims(scope, exp)))
        };
        let later = now() + 3600;
        Self {
            read: hs("fulcrum:read", later, SECRET),
            write: hs("fulcrum:read fulcrum:write", later, SECRET),
            no_scope: hs("openid", later, SECRET),
            invalid: vec![
                Auth::None,
                Auth::Value("Basic YWRtaW46YWRtaW4=".into()),
                Auth::Value("Bearer x.y.z".into()),
                hs("fulcrum:write", later, "some-other-secret-0123456789abcdef"),
                hs("fulcrum:write", now() - 3600, SECRET),
            ],
        }
    }
}

/// What the answers are asked about: a backend of `default`, a pool other than `default` that
/// a route names, and a backend of that pool.
struct Known {
    backend: u64,
    pool: &'static str,
    pool_backend: u64,
}

/// A concrete path for a documented path template.
fn concrete(template: &str, k: &Known) -> String {
    let id = if template.starts_with("/api/v1/pools/") { k.pool_backend } else { k.backend };
    template
        .replace("{name}", k.pool)
        .replace("{id}", &id.to_string())
        .replace("{file}", "swagger-ui.css")
}

/// Every public endpoint: health, readiness, the document, the docs page and its assets,
/// metrics (`metrics_auth`: whether a read token is needed).
fn public_endpoints(cx: &mut Conformance, f: &Fulcrum, t: &Tokens, metrics_auth: bool) {
    cx.call(f, 200, ("GET", "/healthz", "/healthz"), &Auth::None, None);
    cx.call(f, 200, ("GET", "/readyz", "/readyz"), &Auth::None, None);
    let doc = ("GET", "/api/v1/openapi.json", "/api/v1/openapi.json");
    let served = cx.call(f, 200, doc, &Auth::None, None).json();
    assert!(served == cx.doc, "every server publishes the same document");
    cx.call(f, 200, ("GET", "/docs", "/docs"), &Auth::None, None);
    for file in [
        "index.html",
        "swagger-ui.css",
        "swagger-ui-bundle.js",
        "swagger-initializer.js",
        "favicon-32x32.png",
    ] {
        let path = format!("/docs/{file}");
        cx.call(f, 200, ("GET", "/docs/{file}", &path), &Auth::None, None);
    }
    cx.call(f, 404, ("GET", "/docs/{file}", "/docs/no-such-asset.css"), &Auth::None, None);
    let metrics = ("GET", "/metrics", "/metrics");
    if metrics_auth {
        for auth in &t.invalid {
            cx.call(f, 401, metrics, auth, None);
        }
        cx.call(f, 403, metrics, &t.no_scope, None);
        cx.call(f, 200, metrics, &t.read, None);
    } else {
        cx.call(f, 200, metrics, &Auth::None, None);
    }
}

/// Every authenticated read with every token: 200 with a read or write token, 401 for each
/// invalid one, 403 without the scope; `404` for unknown backend ids (a backend of another pool
/// included) and unknown pools.
fn reads(cx: &mut Conformance, f: &Fulcrum, t: &Tokens, k: &Known) {
    let backend = format!("/api/v1/backends/{}", k.backend);
    let pool = format!("/api/v1/pools/{}", k.pool);
    let pool_backends = format!("{pool}/backends");
    let pool_backend = format!("{pool}/backends/{}", k.pool_backend);
    let pool_algorithm = format!("{pool}/algorithm");
    let routes = [
        ("/api/v1/config", "/api/v1/config"),
        ("/api/v1/backends", "/api/v1/backends"),
        ("/api/v1/backends/{id}", backend.as_str()),
        ("/api/v1/algorithm", "/api/v1/algorithm"),
        ("/api/v1/cache", "/api/v1/cache"),
        ("/api/v1/pools", "/api/v1/pools"),
        ("/api/v1/pools/{name}", pool.as_str()),
        ("/api/v1/pools/{name}/backends", pool_backends.as_str()),
        ("/api/v1/pools/{name}/backends/{id}", pool_backend.as_str()),
        ("/api/v1/pools/{name}/algorithm", pool_algorithm.as_str()),
        ("/api/v1/routes", "/api/v1/routes"),
        ("/api/v1/tls", "/api/v1/tls"),
        ("/api/v1/store", "/api/v1/store"),
    ];
    for (template, path) in routes {
        cx.call(f, 200, ("GET", template, path), &t.read, None);
        cx.call(f, 200, ("GET", template, path), &t.write, None);
        cx.call(f, 403, ("GET", template, path), &t.no_scope, None);
        for auth in &t.invalid {
            cx.call(f, 401, ("GET", template, path), auth, None);
        }
    }
    let of_pool = format!("/api/v1/backends/{}", k.pool_backend);
    for unknown in
        ["/api/v1/backends/999999", "/api/v1/backends/abc", "/api/v1/backends/-1", &of_pool]
    {
        let r = cx.call(f, 404, ("GET", "/api/v1/backends/{id}", unknown), &t.read, None);
        assert_eq!(r.json()["error"]["code"], "unknown_backend");
    }
    let of_default = format!("{pool}/backends/{}", k.backend);
    for unknown in [format!("{pool}/backends/999999"), format!("{pool}/backends/abc"), of_default] {
        let route = ("GET", "/api/v1/pools/{name}/backends/{id}", unknown.as_str());
        let r = cx.call(f, 404, route, &t.read, None);
        assert_eq!(r.json()["error"]["code"], "unknown_backend");
    }
    for template in [
        "/api/v1/pools/{name}",
        "/api/v1/pools/{name}/backends",
        "/api/v1/pools/{name}/backends/{id}",
        "/api/v1/pools/{name}/algorithm",
    ] {
        for id in [k.pool_backend.to_string(), "abc".into()] {
            let path = template.replace("{name}", "nope").replace("{id}", &id);
            let r = cx.call(f, 404, ("GET", template, &path), &t.read, None);
            assert_eq!(r.json()["error"]["code"], "unknown_pool", "{path}");
        }
    }
}

/// The answers every mutation shares: 401 for each invalid token and 403 with a read-only one
/// (a valid body, so only authentication decides).
fn mutation_auth(cx: &mut Conformance, f: &Fulcrum, t: &Tokens, route: (&str, &str, &str)) {
    let body = match route.1 {
        "/api/v1/backends" | "/api/v1/pools/{name}/backends" => {
            Some(json!({"url": "http://127.0.0.1:9"}))
        }
        "/api/v1/algorithm" | "/api/v1/pools/{name}/algorithm" => {
            Some(json!({"algorithm": "random"}))
        }
        "/api/v1/cache" => Some(json!({"enabled": false})),
        "/api/v1/pools" => Some(json!({"name": "refused"})),
        "/api/v1/routes" => Some(json!({"routes": []})),
        _ => None,
    };
    for auth in &t.invalid {
        cx.call(f, 401, route, auth, body.as_ref());
    }
    cx.call(f, 403, route, &t.read, body.as_ref());
    cx.call(f, 403, route, &t.no_scope, body.as_ref());
}

/// Every way a JSON body is refused: bad JSON, wrong types, unknown fields, an empty body (400)
/// and a body over the 64 KiB cap (413), declared up front and streamed chunked.
fn body_errors(cx: &mut Conformance, f: &Fulcrum, t: &Tokens, route: (&str, &str, &str)) {
    let mut headers = t.write.headers();
    headers.push(("Content-Type", "application/json"));
    for bad in [&b"{"[..], b"", b"[]", b"null", b"{\"nope\": 1}", b"\xff\xfe"] {
        cx.raw(f, 400, route, &headers, Some(bad));
    }
    let big = format!("{{\"url\": \"{}\"}}", "x".repeat(70 * 1024));
    cx.raw(f, 413, route, &headers, Some(big.as_bytes()));
    let r = request_chunked(f.admin_addr(), route.0, route.2, &headers, big.as_bytes(), 8192);
    cx.check(route.0, route.1, &r);
    assert_eq!(r.status(), 413, "{}", r.text());
}

/// Backends: create (201, with and without a weight), duplicate (409), invalid URL and weight
/// (400), body errors, auth; delete (204, then 404 for the same id and for ids that never
/// existed). Returns the id of a backend that stays.
fn backends(cx: &mut Conformance, f: &Fulcrum, t: &Tokens, spare: &TestBackend) -> u64 {
    let create = ("POST", "/api/v1/backends", "/api/v1/backends");
    let url = spare.url();
    let r = cx.call(f, 201, create, &t.write, Some(&json!({"url": url, "weight": 3})));
    let kept = r.json()["id"].as_u64().unwrap();
    assert_eq!(r.header("location"), Some(format!("/api/v1/backends/{kept}").as_str()));
    cx.call(f, 409, create, &t.write, Some(&json!({"url": url})));
    for bad in [
        json!({"url": "ftp://127.0.0.1:21"}),
        json!({"url": "not a url"}),
        json!({"url": "http://127.0.0.1:9", "weight": 0}),
        json!({"url": "http://127.0.0.1:9", "weight": 10001}),
        json!({"url": 9}),
        json!({"weight": 1}),
    ] {
        cx.call(f, 400, create, &t.write, Some(&bad));
    }
    body_errors(cx, f, t, create);
    mutation_auth(cx, f, t, create);
    let r = cx.call(f, 201, create, &t.write, Some(&json!({"url": "http://127.0.0.1:9"})));
    let gone = r.json()["id"].as_u64().unwrap();

    let path = format!("/api/v1/backends/{gone}");
    let delete = ("DELETE", "/api/v1/backends/{id}", path.as_str());
    mutation_auth(cx, f, t, delete);
    cx.call(f, 204, delete, &t.write, None);
    cx.call(f, 404, delete, &t.write, None);
    for unknown in ["/api/v1/backends/999999", "/api/v1/backends/abc"] {
        cx.call(f, 404, ("DELETE", "/api/v1/backends/{id}", unknown), &t.write, None);
    }
    kept
}

/// Algorithm (every name, an unknown one, body errors, auth) and cache (settings, invalid
/// settings, body errors, auth, purge); the cache ends on with entries and counters.
fn algorithm_and_cache(cx: &mut Conformance, f: &Fulcrum, t: &Tokens) {
    let put = ("PUT", "/api/v1/algorithm", "/api/v1/algorithm");
    for name in ["random", "least_connections", "response_time", "round_robin"] {
        cx.call(f, 200, put, &t.write, Some(&json!({"algorithm": name})));
        cx.call(f, 200, ("GET", "/api/v1/algorithm", "/api/v1/algorithm"), &t.read, None);
    }
    for bad in [json!({"algorithm": "fastest"}), json!({"algorithm": 1}), json!({})] {
        cx.call(f, 400, put, &t.write, Some(&bad));
    }
    body_errors(cx, f, t, put);
    mutation_auth(cx, f, t, put);

    let put = ("PUT", "/api/v1/cache", "/api/v1/cache");
    cx.call(f, 200, put, &t.write, Some(&json!({})));
    cx.call(
        f,
        200,
        put,
        &t.write,
        Some(&json!({
            "enabled": true, "ttl_ms": 60000, "max_bytes": 1 << 24, "max_object_bytes": 1 << 16,
            "methods": ["GET", "HEAD"], "statuses": [200, 404], "ignore_headers": ["x-request-id"],
        })),
    );
    for bad in [
        json!({"ttl_ms": 0}),
        json!({"methods": ["G ET"]}),
        json!({"statuses": [99]}),
        json!({"enabled": "yes"}),
        json!({"ttl_ms": -1}),
    ] {
        cx.call(f, 400, put, &t.write, Some(&bad));
    }
    body_errors(cx, f, t, put);
    mutation_auth(cx, f, t, put);

    let purge = ("DELETE", "/api/v1/cache/entries", "/api/v1/cache/entries");
    cx.call(f, 200, purge, &t.write, None);
    mutation_auth(cx, f, t, purge);

    // Some traffic, so the cache and the backends report non-zero counters and averages.
    for _ in 0..4 {
        assert_eq!(f.get("/cached").status(), 200);
    }
    expect_within(SETTLE, "cache hits published", || {
        let r = cx.call(f, 200, ("GET", "/api/v1/cache", "/api/v1/cache"), &t.read, None);
        r.json()["hits"].as_u64().is_some_and(|h| h > 0)
    });
    expect_within(SETTLE, "a response-time average published", || {
        let r = cx.call(f, 200, ("GET", "/api/v1/backends", "/api/v1/backends"), &t.read, None);
        r.json().as_array().unwrap().iter().any(|b| b["avg_response_ms"].is_number())
    });
}

/// The TLS reload: authentication, then `409` without a TLS listener; with one (`tls`: its CA
/// and certificate), `200`, and `400` while its key file is missing (nothing changes, so the
/// next reload succeeds again).
fn tls_reload(cx: &mut Conformance, f: &Fulcrum, t: &Tokens, tls: Option<(&Pki, &CertFiles)>) {
    let reload = ("POST", "/api/v1/tls/reload", "/api/v1/tls/reload");
    mutation_auth(cx, f, t, reload);
    let Some((pki, cert)) = tls else {
        let r = cx.call(f, 409, reload, &t.write, None);
        assert_eq!(r.json()["error"]["code"], "tls_not_configured");
        return;
    };
    cx.call(f, 200, reload, &t.write, None);
    std::fs::remove_file(&cert.key).unwrap();
    let r = cx.call(f, 400, reload, &t.write, None);
    assert_eq!(r.json()["error"]["code"], "invalid_certificate");
    pki.write("server.key", &cert.key_pem);
    cx.call(f, 200, reload, &t.write, None);
    cx.call(f, 200, ("GET", "/api/v1/tls", "/api/v1/tls"), &t.read, None);
}

/// Sends `body` to `route` with a write token, expects `status` with error `code`.
fn refused(
    cx: &mut Conformance,
    f: &Fulcrum,
    t: &Tokens,
    route: (&str, &str, &str),
    body: Option<&Value>,
    (status, code): (u16, &str),
) {
    let r = cx.call(f, status, route, &t.write, body);
    assert_eq!(r.json()["error"]["code"], code, "{} {} {body:?}: {}", route.0, route.2, r.text());
}

/// Pools: create (201: backends of every scheme, or none and the defaults), a taken name
/// (409, `default` included), each refusal of a pool body (400), body errors, auth; a pool's
/// backends (201, 409 within the pool, 400, 404 for an unknown pool, delete 204 then 404, a
/// backend of `default` not found there); its algorithm; delete (204, 404, 409 for `default`).
/// The pool `api` stays, with the spare's backend; so does an empty pool `bare`.
fn pools(
    cx: &mut Conformance,
    f: &Fulcrum,
    t: &Tokens,
    spare: &TestBackend,
    backend: u64,
) -> Known {
    let create = ("POST", "/api/v1/pools", "/api/v1/pools");
    let url = spare.url();
    let body = json!({"name": "api", "algorithm": "least_connections", "backends": [
        {"url": url, "weight": 2}, {"url": "https://127.0.0.1:9"}, {"url": "h2://127.0.0.1:9/"},
        {"url": "h2c://127.0.0.1:9"},
    ]});
    let r = cx.call(f, 201, create, &t.write, Some(&body));
    assert_eq!(r.header("location"), Some("/api/v1/pools/api"));
    let created = r.json();
    assert_eq!(
        (&created["name"], &created["algorithm"]),
        (&json!("api"), &json!("least_connections"))
    );
    let urls: Vec<&str> = created["backends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["url"].as_str().unwrap())
        .collect();
    assert_eq!(
        urls,
        [url.as_str(), "https://127.0.0.1:9", "h2://127.0.0.1:9", "h2c://127.0.0.1:9"]
    );
    let kept = created["backends"][0]["id"].as_u64().unwrap();
    let r = cx.call(f, 201, create, &t.write, Some(&json!({"name": "bare"})));
    assert_eq!(
        (&r.json()["algorithm"], &r.json()["backends"]),
        (&json!("round_robin"), &json!([]))
    );
    for name in ["api", "default"] {
        refused(cx, f, t, create, Some(&json!({"name": name})), (409, "duplicate_pool"));
    }
    let twice = json!([{"url": "http://127.0.0.1:9"}, {"url": "http://127.0.0.1:9/"}]);
    let invalid = [
        (json!({"name": ""}), "invalid_pool"),
        (json!({"name": "-api"}), "invalid_pool"),
        (json!({"name": "a/b"}), "invalid_pool"),
        (json!({"name": "x".repeat(65)}), "invalid_pool"),
        (json!({"name": "x", "backends": twice}), "invalid_pool"),
        (json!({"name": "x", "algorithm": "fastest"}), "invalid_algorithm"),
        (json!({"name": "x", "backends": [{"url": "ftp://127.0.0.1:21"}]}), "invalid_url"),
        (
            json!({"name": "x", "backends": [{"url": "http://127.0.0.1:9", "weight": 0}]}),
            "invalid_weight",
        ),
        (json!({"name": 1}), "invalid_body"),
        (json!({"algorithm": "random"}), "invalid_body"),
        (json!({"name": "x", "backends": {}}), "invalid_body"),
        (json!({"name": "x", "backends": [{"weight": 1}]}), "invalid_body"),
    ];
    for (body, code) in invalid {
        refused(cx, f, t, create, Some(&body), (400, code));
    }
    body_errors(cx, f, t, create);
    mutation_auth(cx, f, t, create);

    let add = ("POST", "/api/v1/pools/{name}/backends", "/api/v1/pools/api/backends");
    let r =
        cx.call(f, 201, add, &t.write, Some(&json!({"url": "http://127.0.0.1:9", "weight": 5})));
    let gone = r.json()["id"].as_u64().unwrap();
    assert_eq!(r.header("location"), Some(format!("/api/v1/pools/api/backends/{gone}").as_str()));
    refused(cx, f, t, add, Some(&json!({"url": url})), (409, "duplicate_backend"));
    for (body, code) in [
        (json!({"url": "ftp://127.0.0.1:21"}), "invalid_url"),
        (json!({"url": "http://127.0.0.1:9", "weight": 10001}), "invalid_weight"),
        (json!({"weight": 1}), "invalid_body"),
    ] {
        refused(cx, f, t, add, Some(&body), (400, code));
    }
    let unknown = ("POST", "/api/v1/pools/{name}/backends", "/api/v1/pools/nope/backends");
    // The pool in the path is looked up before the body.
    for body in [json!({"url": "http://127.0.0.1:7"}), json!({"url": "ftp://x"}), json!({})] {
        refused(cx, f, t, unknown, Some(&body), (404, "unknown_pool"));
    }
    body_errors(cx, f, t, add);
    mutation_auth(cx, f, t, add);

    let template = "/api/v1/pools/{name}/backends/{id}";
    let path = format!("/api/v1/pools/api/backends/{gone}");
    let delete = ("DELETE", template, path.as_str());
    mutation_auth(cx, f, t, delete);
    cx.call(f, 204, delete, &t.write, None);
    refused(cx, f, t, delete, None, (404, "unknown_backend"));
    let of_default = format!("/api/v1/pools/api/backends/{backend}");
    let of_unknown = format!("/api/v1/pools/nope/backends/{kept}");
    for (path, code) in [
        (of_default.as_str(), "unknown_backend"),
        ("/api/v1/pools/api/backends/abc", "unknown_backend"),
        (of_unknown.as_str(), "unknown_pool"),
        ("/api/v1/pools/nope/backends/abc", "unknown_pool"),
    ] {
        refused(cx, f, t, ("DELETE", template, path), None, (404, code));
    }

    let put = ("PUT", "/api/v1/pools/{name}/algorithm", "/api/v1/pools/api/algorithm");
    let get = ("GET", "/api/v1/pools/{name}/algorithm", "/api/v1/pools/api/algorithm");
    for name in ["random", "round_robin", "response_time", "least_connections"] {
        cx.call(f, 200, put, &t.write, Some(&json!({"algorithm": name})));
        assert_eq!(cx.call(f, 200, get, &t.read, None).json()["algorithm"], name);
    }
    for (body, code) in [
        (json!({"algorithm": "fastest"}), "invalid_algorithm"),
        (json!({"algorithm": 1}), "invalid_body"),
        (json!({}), "invalid_body"),
    ] {
        refused(cx, f, t, put, Some(&body), (400, code));
    }
    let unknown = ("PUT", "/api/v1/pools/{name}/algorithm", "/api/v1/pools/nope/algorithm");
    for body in [json!({"algorithm": "random"}), json!({"algorithm": "fastest"}), json!({})] {
        refused(cx, f, t, unknown, Some(&body), (404, "unknown_pool"));
    }
    body_errors(cx, f, t, put);
    mutation_auth(cx, f, t, put);

    let r = cx.call(f, 201, create, &t.write, Some(&json!({"name": "gone"})));
    assert_eq!(r.header("location"), Some("/api/v1/pools/gone"));
    let delete = ("DELETE", "/api/v1/pools/{name}", "/api/v1/pools/gone");
    mutation_auth(cx, f, t, delete);
    cx.call(f, 204, delete, &t.write, None);
    refused(cx, f, t, delete, None, (404, "unknown_pool"));
    let default = ("DELETE", "/api/v1/pools/{name}", "/api/v1/pools/default");
    refused(cx, f, t, default, None, (409, "pool_in_use"));
    Known { backend, pool: "api", pool_backend: kept }
}

/// Routes: a list with every matcher (200, read back as sent), each refusal (400
/// `invalid_route`, nothing changed), body errors, auth; a pool a route names cannot be
/// deleted (409). The list stays: `api` is in use.
fn routes(cx: &mut Conformance, f: &Fulcrum, t: &Tokens) {
    let get = ("GET", "/api/v1/routes", "/api/v1/routes");
    let put = ("PUT", "/api/v1/routes", "/api/v1/routes");
    let list = json!([
        {"pool": "api", "host": "api.example.com"},
        {"pool": "api", "host": "*.example.org", "path_prefix": "/api",
            "headers": {"x-canary": "1"}, "cache": false},
        {"pool": "api", "grpc_service": "echo.Echo"},
        {"pool": "default", "path_prefix": "/static", "cache": true},
    ]);
    let r = cx.call(f, 200, put, &t.write, Some(&json!({"routes": list})));
    let epoch = r.json()["epoch"].clone();
    assert_eq!(r.header("fulcrum-epoch").map(str::to_owned), Some(epoch.to_string()));
    assert_eq!(r.json()["routes"], list);
    let too_many: serde_json::Map<String, Value> =
        (0..17).map(|i| (format!("x-h{i}"), json!("1"))).collect();
    for bad in [
        json!([{"pool": "nope"}]),
        json!([{"pool": "api"}, {"pool": "api", "host": "a.example.com"}]),
        json!([{"pool": "api", "host": "*"}]),
        json!([{"pool": "api", "host": "a.example.com:80"}]),
        json!([{"pool": "api", "path_prefix": "api"}]),
        json!([{"pool": "api", "grpc_service": "echo/Echo"}]),
        json!([{"pool": "api", "grpc_service": "echo.Echo", "path_prefix": "/other"}]),
        json!([{"pool": "api", "headers": {"host": "x"}}]),
        json!([{"pool": "api", "headers": {"bad name": "x"}}]),
        json!([{"pool": "api", "headers": too_many}]),
        json!([{"pool": "api", "nope": 1}]),
        json!([{"host": "a.example.com"}]),
        json!([{"pool": "api", "cache": "yes"}]),
        json!([1]),
    ] {
        refused(cx, f, t, put, Some(&json!({"routes": bad})), (400, "invalid_route"));
    }
    for bad in [json!({}), json!({"routes": {}}), json!({"routes": [], "pools": []})] {
        refused(cx, f, t, put, Some(&bad), (400, "invalid_body"));
    }
    body_errors(cx, f, t, put);
    mutation_auth(cx, f, t, put);
    let r = cx.call(f, 200, get, &t.read, None);
    assert_eq!((r.json()["epoch"].clone(), r.json()["routes"].clone()), (epoch, list));
    let delete = ("DELETE", "/api/v1/pools/{name}", "/api/v1/pools/api");
    refused(cx, f, t, delete, None, (409, "pool_in_use"));
}

/// Every other method on each documented path is 405 with `Allow` naming exactly the
/// documented methods; paths the document does not have are 404.
fn unowned(cx: &mut Conformance, f: &Fulcrum, t: &Tokens, k: &Known) {
    let templates: Vec<String> = cx.doc["paths"].as_object().unwrap().keys().cloned().collect();
    for template in templates {
        let documented = cx.methods(&template);
        let path = concrete(&template, k);
        for method in METHODS.iter().filter(|m| !documented.contains(**m)) {
            let r = f.admin().request(method, &path, None, &t.write.headers(), Some(b"{}"));
            assert_eq!(r.status(), 405, "{method} {path}: {}", r.text());
            let allow: BTreeSet<String> =
                r.header("allow").unwrap_or_default().split(',').map(|m| m.trim().into()).collect();
            assert_eq!(allow, documented, "{method} {path}: Allow is not the documented methods");
            cx.check_shared("MethodNotAllowed", &format!("{method} {template}"), &r);
        }
    }
    for path in UNDOCUMENTED_PATHS {
        for auth in [&Auth::None, &t.write] {
            let r = f.admin().request("GET", path, None, &auth.headers(), None);
            assert_eq!(r.status(), 404, "GET {path}: {}", r.text());
            cx.check_shared("NotFound", "GET", &r);
        }
    }
}

/// A server with defaults: active health checks off (`disabled`), no issuer or audience, no
/// state file (`null`s), public metrics. Ends with every route, pool (but `default`) and
/// backend removed: `/readyz` is 503.
/// The document is fetched from it.
fn plain_server() -> Conformance {
    let a = TestBackend::named("plain-a");
    let spare = TestBackend::named("plain-spare");
    let f = Fulcrum::start([&a]);
    let mut conformance = Conformance::fetch(&f);
    let cx = &mut conformance;
    let t = Tokens::new(None);
    public_endpoints(cx, &f, &t, false);
    let id = backends(cx, &f, &t, &spare);
    let known = pools(cx, &f, &t, &spare, id);
    routes(cx, &f, &t);
    reads(cx, &f, &t, &known);
    algorithm_and_cache(cx, &f, &t);
    reads(cx, &f, &t, &known);
    tls_reload(cx, &f, &t, None);
    unowned(cx, &f, &t, &known);

    // Without routes, every pool but `default` can go; then its backends.
    let r = cx.call(
        &f,
        200,
        ("PUT", "/api/v1/routes", "/api/v1/routes"),
        &t.write,
        Some(&json!({"routes": []})),
    );
    assert_eq!(r.json()["routes"], json!([]));
    for name in ["api", "bare"] {
        let path = format!("/api/v1/pools/{name}");
        cx.call(&f, 204, ("DELETE", "/api/v1/pools/{name}", &path), &t.write, None);
    }
    let r = cx.call(&f, 200, ("GET", "/api/v1/pools", "/api/v1/pools"), &t.read, None);
    assert_eq!(r.json().as_array().unwrap().len(), 1, "only `default` is left: {}", r.text());
    let list = cx.call(&f, 200, ("GET", "/api/v1/backends", "/api/v1/backends"), &t.read, None);
    for b in list.json().as_array().unwrap() {
        let path = format!("/api/v1/backends/{}", b["id"]);
        cx.call(&f, 204, ("DELETE", "/api/v1/backends/{id}", &path), &t.write, None);
    }
    cx.call(&f, 503, ("GET", "/readyz", "/readyz"), &Auth::None, None);
    cx.call(&f, 200, ("GET", "/api/v1/backends", "/api/v1/backends"), &t.read, None);
    cx.call(&f, 200, ("GET", "/api/v1/config", "/api/v1/config"), &t.read, None);
    conformance
}

/// A server with everything on: issuer and audience, `metrics_auth`, a state file, active
/// health checks with one backend up and one down (`up`, `down` with its last error, then
/// `unknown` for a new one), a TLS listener. Ends with the state file unwritable: every
/// mutation is 500.
fn configured_server(cx: &mut Conformance) {
    let up = TestBackend::named("up");
    let down = TestBackend::named("down");
    down.set_health_status(503);
    let spare = TestBackend::named("spare");
    let dir = TempDir::new("conformance");
    let state = dir.join("state.json");
    let config = dir.write(
        "fulcrum.toml",
        &format!(
            "state_file = \"{}\"\n\
             [admin]\njwt_issuer = \"fulcrum-test\"\njwt_audience = \"fulcrum-admin\"\n\
             [telemetry]\nmetrics_auth = true\n\
             [health_check]\nenabled = true\npath = \"/healthz\"\ninterval_ms = 500\n\
             timeout_ms = 500\nrise = 1\nfall = 1\nslow_start_ms = 60000\n\
             [[backends]]\nurl = \"{}\"\n[[backends]]\nurl = \"{}\"\n",
            state.display(),
            up.url(),
            down.url()
        ),
    );
    let pki = Pki::new("conformance");
    let cert = pki.issue("server", &["fulcrum.test"]);
    let f = Fulcrum::builder().config_file(&config).tls_listener(&[&cert]).start();
    let t = Tokens::new(Some(("fulcrum-test", "fulcrum-admin")));
    // A token without the configured issuer and audience is invalid here.
    let foreign = Tokens::new(None).write;
    let r = cx.call(&f, 401, ("GET", "/api/v1/config", "/api/v1/config"), &foreign, None);
    assert_eq!(r.json()["error"]["code"], "invalid_token");

    expect_within(SETTLE, "one backend up and one down", || {
        let r = cx.call(&f, 200, ("GET", "/api/v1/backends", "/api/v1/backends"), &t.read, None);
        let states: BTreeSet<String> = r
            .json()
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["health"]["state"].as_str().unwrap().to_owned())
            .collect();
        states == BTreeSet::from(["up".to_owned(), "down".to_owned()])
    });
    public_endpoints(cx, &f, &t, true);
    let id = backends(cx, &f, &t, &spare);
    let known = pools(cx, &f, &t, &spare, id);
    routes(cx, &f, &t);
    reads(cx, &f, &t, &known);
    algorithm_and_cache(cx, &f, &t);
    tls_reload(cx, &f, &t, Some((&pki, &cert)));
    unowned(cx, &f, &t, &known);
    cx.call(&f, 200, ("GET", "/readyz", "/readyz"), &Auth::None, None);

    // The down backend passes again: `up`, its last error kept, a share below 100% while its
    // slow start lasts.
    down.set_health_status(200);
    expect_within(SETTLE, "the recovered backend in its slow start", || {
        let r = cx.call(&f, 200, ("GET", "/api/v1/backends", "/api/v1/backends"), &t.read, None);
        r.json().as_array().unwrap().iter().any(|b| {
            b["url"] == down.url()
                && b["health"]["state"] == "up"
                && b["health"]["share_percent"].as_u64().is_some_and(|s| s < 100)
        })
    });
    cx.call(&f, 200, ("GET", "/api/v1/config", "/api/v1/config"), &t.read, None);

    // The state file cannot be replaced (a directory stands where it goes): every mutation is
    // refused with 500 and nothing is applied.
    std::fs::remove_file(&state).unwrap();
    std::fs::create_dir(&state).unwrap();
    let backend = format!("/api/v1/backends/{id}");
    let pool_backend = format!("/api/v1/pools/api/backends/{}", known.pool_backend);
    let unsaved = [
        (
            ("POST", "/api/v1/backends", "/api/v1/backends"),
            Some(json!({"url": "http://127.0.0.1:7"})),
        ),
        (("DELETE", "/api/v1/backends/{id}", backend.as_str()), None),
        (("PUT", "/api/v1/algorithm", "/api/v1/algorithm"), Some(json!({"algorithm": "random"}))),
        (("PUT", "/api/v1/cache", "/api/v1/cache"), Some(json!({"enabled": false}))),
        (("DELETE", "/api/v1/cache/entries", "/api/v1/cache/entries"), None),
        (("POST", "/api/v1/pools", "/api/v1/pools"), Some(json!({"name": "unsaved"}))),
        (("DELETE", "/api/v1/pools/{name}", "/api/v1/pools/bare"), None),
        (
            ("POST", "/api/v1/pools/{name}/backends", "/api/v1/pools/api/backends"),
            Some(json!({"url": "http://127.0.0.1:7"})),
        ),
        (("DELETE", "/api/v1/pools/{name}/backends/{id}", pool_backend.as_str()), None),
        (
            ("PUT", "/api/v1/pools/{name}/algorithm", "/api/v1/pools/api/algorithm"),
            Some(json!({"algorithm": "random"})),
        ),
        (("PUT", "/api/v1/routes", "/api/v1/routes"), Some(json!({"routes": []}))),
    ];
    let before = cx.call(&f, 200, ("GET", "/api/v1/config", "/api/v1/config"), &t.read, None);
    for (route, body) in unsaved {
        refused(cx, &f, &t, route, body.as_ref(), (500, "state_not_saved"));
    }
    // Nothing was applied: the same epoch, pools and routes (`reads` finds the backends).
    let after = cx.call(&f, 200, ("GET", "/api/v1/config", "/api/v1/config"), &t.read, None);
    for key in ["epoch", "routes", "algorithm"] {
        assert_eq!(after.json()[key], before.json()[key], "{key}");
    }
    let names = |r: &Response| -> Vec<Value> {
        r.json()["pools"].as_array().unwrap().iter().map(|p| p["name"].clone()).collect()
    };
    assert_eq!(names(&after), names(&before));
    reads(cx, &f, &t, &known);
}

/// A mutation: method, path template, path, and its body.
type Mutation = ((&'static str, &'static str, String), Option<Value>);

/// Every mutation with a body that applies on `etcd_server`'s state, in the order that keeps
/// it applicable when they do apply.
fn etcd_mutations(k: &Known) -> Vec<Mutation> {
    let route = |m, t, p: &str| (m, t, p.to_owned());
    vec![
        (
            route("POST", "/api/v1/backends", "/api/v1/backends"),
            Some(json!({"url": "http://127.0.0.1:7"})),
        ),
        (
            route("DELETE", "/api/v1/backends/{id}", &format!("/api/v1/backends/{}", k.backend)),
            None,
        ),
        (
            route("PUT", "/api/v1/algorithm", "/api/v1/algorithm"),
            Some(json!({"algorithm": "random"})),
        ),
        (route("PUT", "/api/v1/cache", "/api/v1/cache"), Some(json!({"enabled": true}))),
        (route("DELETE", "/api/v1/cache/entries", "/api/v1/cache/entries"), None),
        (route("POST", "/api/v1/pools", "/api/v1/pools"), Some(json!({"name": "more"}))),
        (route("DELETE", "/api/v1/pools/{name}", "/api/v1/pools/bare"), None),
        (
            route("POST", "/api/v1/pools/{name}/backends", "/api/v1/pools/api/backends"),
            Some(json!({"url": "http://127.0.0.1:7"})),
        ),
        (
            route(
                "DELETE",
                "/api/v1/pools/{name}/backends/{id}",
                &format!("/api/v1/pools/api/backends/{}", k.pool_backend),
            ),
            None,
        ),
        (
            route("PUT", "/api/v1/pools/{name}/algorithm", "/api/v1/pools/api/algorithm"),
            Some(json!({"algorithm": "random"})),
        ),
        (
            route("PUT", "/api/v1/routes", "/api/v1/routes"),
            Some(json!({"routes": [{"pool": "api", "path_prefix": "/v2"}]})),
        ),
    ]
}

/// A server with the etcd store (`conflict_retries = 0`), reaching etcd through a proxy: its
/// store status (`GET /api/v1/store`, also in `reads`); every mutation losing its
/// compare-and-swap to a write by hand that the server's watch has not delivered (the proxy
/// stalls watch streams) answers `409 store_conflict`; with the path to etcd cut, every mutation
/// answers `503 store_unavailable` and nothing changes.
fn etcd_server(cx: &mut Conformance) {
    assert!(
        have_etcd(),
        "this test needs a real etcd: install it with `apt-get install -y etcd-server etcd-client` \
         (Debian; .ci/test does)"
    );
    const KEY: &str = "/fulcrum/conformance/state";
    let etcd = Etcd::start("conformance");
    let proxy = Proxy::start(etcd.client_port);
    let a = TestBackend::named("etcd-a");
    let spare = TestBackend::named("etcd-spare");
    let f = Fulcrum::builder()
        .workers(1)
        .etcd_store(&[proxy.url()], "/fulcrum/conformance")
        .setting("store", "conflict_retries = 0")
        .backend(&a)
        .start();
    let t = Tokens::new(None);
    let store = ("GET", "/api/v1/store", "/api/v1/store");
    let s = cx.call(&f, 200, store, &t.read, None).json();
    assert_eq!(
        (&s["kind"], &s["source"], &s["connected"]),
        (&json!("etcd"), &json!("etcd"), &json!(true))
    );
    let backend = cx
        .call(
            &f,
            201,
            ("POST", "/api/v1/backends", "/api/v1/backends"),
            &t.write,
            Some(&json!({"url": spare.url()})),
        )
        .json()["id"]
        .as_u64()
        .unwrap();
    let create = ("POST", "/api/v1/pools", "/api/v1/pools");
    let api = cx.call(
        &f,
        201,
        create,
        &t.write,
        Some(&json!({"name": "api", "backends": [{"url": spare.url()}]})),
    );
    let pool_backend = api.json()["backends"][0]["id"].as_u64().unwrap();
    cx.call(&f, 201, create, &t.write, Some(&json!({"name": "bare"})));
    let routes = ("PUT", "/api/v1/routes", "/api/v1/routes");
    cx.call(
        &f,
        200,
        routes,
        &t.write,
        Some(&json!({"routes": [{"pool": "api", "path_prefix": "/api"}]})),
    );
    let known = Known { backend, pool: "api", pool_backend };
    reads(cx, &f, &t, &known);
    let config = ("GET", "/api/v1/config", "/api/v1/config");
    let revision =
        |cx: &mut Conformance| cx.call(&f, 200, config, &t.read, None).json()["revision"].clone();

    // Each mutation after a write by hand the server has not seen: lost once, refused.
    proxy.stall_watches();
    for (i, ((method, template, path), body)) in etcd_mutations(&known).into_iter().enumerate() {
        let mut doc: Value = serde_json::from_str(&etcd.get(KEY).unwrap()).unwrap();
        doc["written_by"] = json!(format!("the conformance test, write {i}"));
        etcd.put(KEY, &doc.to_string());
        refused(cx, &f, &t, (method, template, &path), body.as_ref(), (409, "store_conflict"));
    }
    let s = cx.call(&f, 200, store, &t.read, None).json();
    assert!(s["conflicts"].as_u64().unwrap() >= 11, "{s}");
    proxy.open();

    // etcd unreachable: refused, nothing changed; reads answer from the running state.
    proxy.cut();
    expect_within(SETTLE, "etcd unreachable", || {
        cx.call(&f, 200, store, &t.read, None).json()["connected"] == false
    });
    let before = revision(cx);
    for ((method, template, path), body) in etcd_mutations(&known) {
        refused(cx, &f, &t, (method, template, &path), body.as_ref(), (503, "store_unavailable"));
    }
    assert_eq!(revision(cx), before);
    let s = cx.call(&f, 200, store, &t.read, None).json();
    assert!(s["last_error"]["message"].is_string(), "{s}");
    reads(cx, &f, &t, &known);
}

#[test]
fn every_admin_answer_matches_the_published_document() {
    let mut cx = plain_server();
    configured_server(&mut cx);
    etcd_server(&mut cx);

    let mismatches: Vec<String> =
        cx.mismatches.iter().map(|(what, why)| format!("{what}: {why}")).collect();
    assert!(
        mismatches.is_empty(),
        "{} kinds of answer do not match the document:\n\n{}",
        mismatches.len(),
        mismatches.join("\n\n")
    );

    let documented = cx.documented();
    let seen: BTreeSet<(String, u16)> = cx.seen.keys().cloned().collect();
    let unreachable: BTreeSet<(String, u16)> =
        UNREACHABLE.iter().map(|(id, status, _)| ((*id).to_owned(), *status)).collect();
    let stale: Vec<_> = unreachable.difference(&documented).collect();
    assert!(stale.is_empty(), "UNREACHABLE names answers the document does not give: {stale:?}");
    let reached: Vec<_> = unreachable.intersection(&seen).collect();
    assert!(reached.is_empty(), "UNREACHABLE names answers that were seen: {reached:?}");
    let missing: Vec<_> =
        documented.iter().filter(|k| !seen.contains(*k) && !unreachable.contains(*k)).collect();
    assert!(missing.is_empty(), "documented answers never produced: {missing:?}");

    let mut matrix: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for ((id, status), n) in &cx.seen {
        matrix.entry(id).or_default().push(format!("{status}×{n}"));
    }
    eprintln!("answers checked against the document ({} in all):", cx.seen.values().sum::<usize>());
    for (id, statuses) in matrix {
        eprintln!("  {id:<42} {}", statuses.join(" "));
    }
    for (id, status, why) in UNREACHABLE {
        eprintln!("  not reachable: {id} {status}: {why}");
    }
}
