//! The OpenAPI 3.1 document, generated from the handlers' annotations (utoipa), with the bearer
//! security scheme and the answers every path shares (`404`, `405`). Built once when the admin
//! thread starts (on the caller of [`crate::spawn`]).

use utoipa::Modify;
use utoipa::OpenApi;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Object, Ref, ResponseBuilder, Type};

use super::api;
use super::error::{ErrorBody, ErrorCode, ErrorDetail};

/// The admin API's OpenAPI document.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Fulcrum admin API",
        description = "Change a running Fulcrum load balancer: pools, backends, algorithms, routes, cache. \
            Every mutation answers after every worker runs the new epoch, and carries that epoch \
            (with the etcd store: after etcd accepted it and this instance runs it). \
            Authenticate with `Authorization: Bearer <JWT>`; the `scope` claim grants \
            `fulcrum:read` (GET) or `fulcrum:write` (mutations; implies read). Mint one with \
            `fulcrum token --scope \"fulcrum:read fulcrum:write\" --ttl 1h`. Errors are \
            `{\"error\": {\"code\": \"snake_case\", \"message\": \"...\"}}`. A path not listed \
            here answers `404` (`#/components/responses/NotFound`); a method not listed for a \
            path answers `405` with an `Allow` header (`#/components/responses/MethodNotAllowed`)."
    ),
    paths(
        api::healthz,
        api::metrics,
        api::readyz,
        api::openapi_json,
        api::docs_page,
        api::docs_file,
        api::get_config,
        api::list_backends,
        api::create_backend,
        api::get_backend,
        api::delete_backend,
        api::get_algorithm,
        api::put_algorithm,
        api::get_cache,
        api::put_cache,
        api::purge_cache,
        api::get_tls,
        api::reload_tls,
        api::list_pools,
        api::create_pool,
        api::get_pool,
        api::delete_pool,
        api::list_pool_backends,
        api::create_pool_backend,
        api::get_pool_backend,
        api::delete_pool_backend,
        api::get_pool_algorithm,
        api::put_pool_algorithm,
        api::get_routes,
        api::put_routes,
        api::get_store,
    ),
    components(schemas(ErrorBody, ErrorDetail, ErrorCode)),
    modifiers(&BearerScheme, &SharedResponses),
    tags(
        (name = "config", description = "The whole effective configuration and state."),
        (name = "backends", description = "Add, list and remove backends of the `default` pool."),
        (name = "algorithm", description = "The balancing algorithm of the `default` pool."),
        (name = "pools", description = "Pools of backends, each with its own algorithm: create, list, delete; their backends and algorithm."),
        (name = "routes", description = "Which requests go to which pool: the ordered route list, replaced as a whole."),
        (name = "cache", description = "Response cache: settings, counters and purge."),
        (name = "tls", description = "The TLS listener's certificates: inventory and live reload."),
        (name = "store", description = "Where the run-time state lives (the state file, or etcd shared by several instances) and how that is going."),
        (name = "health", description = "Liveness and readiness (no authentication)."),
        (name = "metrics", description = "Prometheus metrics (no authentication unless configured)."),
        (name = "docs", description = "This document and its interactive page (no authentication)."),
    )
)]
pub struct ApiDoc;

/// Adds the `bearer_auth` scheme the operations refer to.
struct BearerScheme;

impl Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer_auth",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "JWT (HS256/384/512 with the configured secret, or RS*/PS*/ES256/ES384/\
                         EdDSA with the configured public key); `exp` required; scopes in the \
                         space-separated `scope` claim.",
                    ))
                    .build(),
            ),
        );
    }
}

/// Adds the answers no operation owns: a path the API does not have (`NotFound`) and a method
/// a path does not take (`MethodNotAllowed`), so clients and tests can check them too.
struct SharedResponses;

impl Modify for SharedResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let error_body =
            || ContentBuilder::new().schema(Some(Ref::from_schema_name("ErrorBody"))).build();
        let components = openapi.components.get_or_insert_with(Default::default);
        components.responses.insert(
            "NotFound".into(),
            ResponseBuilder::new()
                .description("No such path (`not_found`).")
                .content("application/json", error_body())
                .build()
                .into(),
        );
        components.responses.insert(
            "MethodNotAllowed".into(),
            ResponseBuilder::new()
                .description("The path does not take this method (`method_not_allowed`).")
                .header(
                    "Allow",
                    HeaderBuilder::new()
                        .schema(Some(Object::with_type(Type::String)))
                        .description(Some("The methods the path takes, e.g. `GET, POST`."))
                        .build(),
                )
                .content("application/json", error_body())
                .build()
                .into(),
        );
    }
}

/// The document as JSON.
pub fn json() -> String {
    ApiDoc::openapi().to_pretty_json().unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
}
