//! The admin API's one error type and the one function that turns it into a response:
//! an HTTP status plus `{"error": {"code": "snake_case", "message": "..."}}`.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{ALLOW, CONTENT_TYPE, HeaderValue, WWW_AUTHENTICATE};
use hyper::{Response, StatusCode};
use serde::Serialize;
use utoipa::ToSchema;

use super::auth::AuthError;
use fulcrum_control::ControlError;

/// Everything an admin request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No route has this path.
    #[error("no route for `{0}`")]
    NotFound(String),
    /// The path exists, the method does not.
    #[error("method not allowed (allowed: {0})")]
    MethodNotAllowed(&'static str),
    /// Authentication or authorisation failed.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// The request body exceeds the cap.
    #[error("request body larger than {0} bytes")]
    PayloadTooLarge(usize),
    /// Malformed JSON, wrong types, unknown fields.
    #[error("invalid request body: {0}")]
    InvalidBody(String),
    /// A backend URL that is malformed or uses an unsupported scheme.
    #[error("{0}")]
    InvalidUrl(String),
    /// A weight out of range.
    #[error("{0}")]
    InvalidWeight(String),
    /// An unknown algorithm name.
    #[error("{0}")]
    InvalidAlgorithm(String),
    /// Cache settings that cannot work (zero TTL, a bad method token, ...).
    #[error("{0}")]
    InvalidCache(String),
    /// The backend URL is already present.
    #[error("{0}")]
    DuplicateBackend(String),
    /// No backend with that id.
    #[error("{0}")]
    UnknownBackend(String),
    /// No pool with that name.
    #[error("{0}")]
    UnknownPool(String),
    /// A pool with that name exists already.
    #[error("{0}")]
    DuplicatePool(String),
    /// A pool that cannot be created as given (its name, its backends, too many pools).
    #[error("{0}")]
    InvalidPool(String),
    /// The pool cannot be deleted: it is `default`, or a route names it.
    #[error("{0}")]
    PoolInUse(String),
    /// A route list that is malformed, names an unknown pool or has a route that can never
    /// match (the message names the route).
    #[error("{0}")]
    InvalidRoute(String),
    /// Readiness failed.
    #[error("not ready: {0}")]
    NotReady(String),
    /// The control plane cannot serve the request right now.
    #[error("{0}")]
    Unavailable(String),
    /// The state store refused the change (nothing was applied).
    #[error("{0}")]
    StateNotSaved(String),
    /// A bug or an unexpected failure.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<ControlError> for ApiError {
    fn from(e: ControlError) -> Self {
        let message = e.to_string();
        match e {
            ControlError::InvalidUrl(_) => ApiError::InvalidUrl(message),
            ControlError::InvalidWeight(_) => ApiError::InvalidWeight(message),
            ControlError::DuplicateBackend(_) => ApiError::DuplicateBackend(message),
            ControlError::UnknownBackend(_) => ApiError::UnknownBackend(message),
            ControlError::WorkersUnresponsive(_) | ControlError::Stopped => {
                ApiError::Unavailable(message)
            }
            ControlError::Persist(_) => ApiError::StateNotSaved(message),
            ControlError::InvalidCache(_) => ApiError::InvalidCache(message),
            ControlError::UnknownPool(_) => ApiError::UnknownPool(message),
            ControlError::DuplicatePool(_) => ApiError::DuplicatePool(message),
            ControlError::InvalidPool(_) => ApiError::InvalidPool(message),
            ControlError::DefaultPool | ControlError::PoolInUse { .. } => {
                ApiError::PoolInUse(message)
            }
            ControlError::InvalidRoutes(_) => ApiError::InvalidRoute(message),
        }
    }
}

/// The error envelope every failure answers with.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// One error.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable machine-readable code, e.g. `invalid_token`, `duplicate_backend`.
    #[schema(example = "invalid_body")]
    pub code: &'static str,
    /// Human-readable explanation.
    pub message: String,
}

impl ApiError {
    /// The HTTP status and the stable error code.
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::MethodNotAllowed(_) => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            ApiError::Auth(AuthError::InsufficientScope(_)) => {
                (StatusCode::FORBIDDEN, "insufficient_scope")
            }
            ApiError::Auth(_) => (StatusCode::UNAUTHORIZED, "invalid_token"),
            ApiError::PayloadTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            ApiError::InvalidBody(_) => (StatusCode::BAD_REQUEST, "invalid_body"),
            ApiError::InvalidUrl(_) => (StatusCode::BAD_REQUEST, "invalid_url"),
            ApiError::InvalidWeight(_) => (StatusCode::BAD_REQUEST, "invalid_weight"),
            ApiError::InvalidAlgorithm(_) => (StatusCode::BAD_REQUEST, "invalid_algorithm"),
            ApiError::InvalidCache(_) => (StatusCode::BAD_REQUEST, "invalid_cache"),
            ApiError::DuplicateBackend(_) => (StatusCode::CONFLICT, "duplicate_backend"),
            ApiError::UnknownBackend(_) => (StatusCode::NOT_FOUND, "unknown_backend"),
            ApiError::UnknownPool(_) => (StatusCode::NOT_FOUND, "unknown_pool"),
            ApiError::DuplicatePool(_) => (StatusCode::CONFLICT, "duplicate_pool"),
            ApiError::InvalidPool(_) => (StatusCode::BAD_REQUEST, "invalid_pool"),
            ApiError::PoolInUse(_) => (StatusCode::CONFLICT, "pool_in_use"),
            ApiError::InvalidRoute(_) => (StatusCode::BAD_REQUEST, "invalid_route"),
            ApiError::NotReady(_) => (StatusCode::SERVICE_UNAVAILABLE, "not_ready"),
            ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ApiError::StateNotSaved(_) => (StatusCode::INTERNAL_SERVER_ERROR, "state_not_saved"),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }

    /// The one mapping from an error to the bytes sent.
    pub fn into_response(self) -> Response<Full<Bytes>> {
        let (status, code) = self.status_and_code();
        let body = ErrorBody { error: ErrorDetail { code, message: self.to_string() } };
        let json = serde_json::to_vec(&body).unwrap_or_default();
        let mut resp = Response::new(Full::new(Bytes::from(json)));
        *resp.status_mut() = status;
        let headers = resp.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        match &self {
            ApiError::Auth(AuthError::InsufficientScope(scope)) => {
                let value =
                    format!("Bearer error=\"insufficient_scope\", scope=\"{}\"", scope.as_str());
                if let Ok(v) = HeaderValue::from_str(&value) {
                    headers.insert(WWW_AUTHENTICATE, v);
                }
            }
            ApiError::Auth(_) => {
                headers.insert(
                    WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer error=\"invalid_token\""),
                );
            }
            ApiError::MethodNotAllowed(allow) => {
                headers.insert(ALLOW, HeaderValue::from_static(allow));
            }
            _ => {}
        }
        resp
    }
}
