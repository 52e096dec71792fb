//! The `/docs` page: Swagger UI with every asset embedded in the binary at build time
//! (`utoipa-swagger-ui`'s vendored copy), pointed at `/api/v1/openapi.json`. Runs on `lb-admin`.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::Response;
use hyper::header::{CONTENT_ENCODING, CONTENT_TYPE, HeaderValue};

use super::App;
use super::error::ApiError;

/// The Swagger UI configuration served in `swagger-initializer.js`.
pub(super) fn config() -> Arc<utoipa_swagger_ui::Config<'static>> {
    Arc::new(
        utoipa_swagger_ui::Config::from("/api/v1/openapi.json")
            // No call to the public validator: the page talks to this listener only.
            .validator_url("none")
            .try_it_out_enabled(true)
            .display_operation_id(true),
    )
}

/// One embedded file, or `None` when there is no such asset. `index.html` is served at `/docs`
/// with a `<base href="/docs/">` so its relative asset links resolve under `/docs/`.
pub(super) fn file(app: &App, name: &str) -> Result<Option<Response<Full<Bytes>>>, ApiError> {
    let found = utoipa_swagger_ui::serve(name, app.swagger.clone())
        .map_err(|e| ApiError::Internal(format!("serving {name}: {e}")))?;
    let Some(file) = found else { return Ok(None) };
    let bytes = if name == "index.html" {
        let html = String::from_utf8_lossy(&file.bytes);
        Bytes::from(html.replacen("<head>", "<head>\n    <base href=\"/docs/\">", 1))
    } else {
        Bytes::from(file.bytes.into_owned())
    };
    let mut resp = Response::new(Full::new(bytes));
    let headers = resp.headers_mut();
    if let Ok(ct) = HeaderValue::from_str(&file.content_type) {
        headers.insert(CONTENT_TYPE, ct);
    }
    if file.gzpipped {
        headers.insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    Ok(Some(resp))
}
