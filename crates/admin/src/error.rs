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
    /// The shared store (etcd) cannot be reached; nothing was changed.
    #[error("{0}")]
    StoreUnavailable(String),
    /// Other instances kept changing the shared state while the change was computed.
    #[error("{0}")]
    StoreConflict(String),
    /// A certificate or key file is missing, unreadable, malformed, expired or does not match
    /// (a TLS reload; the certificates in service stay).
    #[error("{0}")]
    InvalidCertificate(String),
    /// The request needs a TLS listener and none is configured.
    #[error("no TLS listener is configured (`[tls] listen`)")]
    TlsNotConfigured,
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
            ControlError::StoreUnavailable(_) => ApiError::StoreUnavailable(message),
            ControlError::StoreConflict(_) => ApiError::StoreConflict(message),
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
    /// Stable machine-readable code.
    pub code: ErrorCode,
    /// Human-readable explanation.
    pub message: String,
}

/// The stable machine-readable error codes: the published schema lists exactly these, so a
/// client can match on them and a new code is a visible change to the document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// `404`: no route has this path.
    NotFound,
    /// `405`: the path exists, the method does not (an `Allow` header lists the methods).
    MethodNotAllowed,
    /// `401`: the bearer token is missing or not valid.
    InvalidToken,
    /// `403`: a valid token without the needed scope.
    InsufficientScope,
    /// `413`: the request body exceeds `admin.max_body_bytes`.
    PayloadTooLarge,
    /// `400`: malformed JSON, wrong types or unknown fields.
    InvalidBody,
    /// `400`: a backend URL that is malformed or uses an unsupported scheme.
    InvalidUrl,
    /// `400`: a weight out of range.
    InvalidWeight,
    /// `400`: an unknown algorithm name.
    InvalidAlgorithm,
    /// `400`: cache settings that cannot work.
    InvalidCache,
    /// `409`: the backend URL is already present.
    DuplicateBackend,
    /// `404`: no backend with that id.
    UnknownBackend,
    /// `404`: no pool with that name.
    UnknownPool,
    /// `409`: the pool name is taken.
    DuplicatePool,
    /// `400`: a pool body that cannot work (name, algorithm or backends).
    InvalidPool,
    /// `409`: the pool is `default` or a route names it.
    PoolInUse,
    /// `400`: a route table that cannot work (unknown pool, malformed matcher, shadowed route).
    InvalidRoute,
    /// `503`: readiness failed.
    NotReady,
    /// `503`: the control plane cannot serve the request right now.
    Unavailable,
    /// `500`: the state file could not be written (or etcd refused the write: permissions,
    /// size); nothing was applied.
    StateNotSaved,
    /// `503`: the shared store (etcd) cannot be reached or did not answer in time; nothing was
    /// changed (the data plane goes on with the configuration it runs).
    StoreUnavailable,
    /// `409`: other instances changed the shared state while this change was computed, more
    /// often than `store.conflict_retries` allows; nothing was changed, try again.
    StoreConflict,
    /// `400`: a certificate or key file the TLS reload read is unusable; nothing changed.
    InvalidCertificate,
    /// `409`: there is no TLS listener to reload.
    TlsNotConfigured,
    /// `500`: a bug or an unexpected failure.
    Internal,
}

impl ApiError {
    /// The HTTP status and the stable error code.
    pub fn status_and_code(&self) -> (StatusCode, ErrorCode) {
        match self {
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, ErrorCode::NotFound),
            ApiError::MethodNotAllowed(_) => {
                (StatusCode::METHOD_NOT_ALLOWED, ErrorCode::MethodNotAllowed)
            }
            ApiError::Auth(AuthError::InsufficientScope(_)) => {
                (StatusCode::FORBIDDEN, ErrorCode::InsufficientScope)
            }
            ApiError::Auth(_) => (StatusCode::UNAUTHORIZED, ErrorCode::InvalidToken),
            ApiError::PayloadTooLarge(_) => {
                (StatusCode::PAYLOAD_TOO_LARGE, ErrorCode::PayloadTooLarge)
            }
            ApiError::InvalidBody(_) => (StatusCode::BAD_REQUEST, ErrorCode::InvalidBody),
            ApiError::InvalidUrl(_) => (StatusCode::BAD_REQUEST, ErrorCode::InvalidUrl),
            ApiError::InvalidWeight(_) => (StatusCode::BAD_REQUEST, ErrorCode::InvalidWeight),
            ApiError::InvalidAlgorithm(_) => (StatusCode::BAD_REQUEST, ErrorCode::InvalidAlgorithm),
            ApiError::InvalidCache(_) => (StatusCode::BAD_REQUEST, ErrorCode::InvalidCache),
            ApiError::DuplicateBackend(_) => (StatusCode::CONFLICT, ErrorCode::DuplicateBackend),
            ApiError::UnknownBackend(_) => (StatusCode::NOT_FOUND, ErrorCode::UnknownBackend),
            ApiError::UnknownPool(_) => (StatusCode::NOT_FOUND, ErrorCode::UnknownPool),
            ApiError::DuplicatePool(_) => (StatusCode::CONFLICT, ErrorCode::DuplicatePool),
            ApiError::InvalidPool(_) => (StatusCode::BAD_REQUEST, ErrorCode::InvalidPool),
            ApiError::PoolInUse(_) => (StatusCode::CONFLICT, ErrorCode::PoolInUse),
            ApiError::InvalidRoute(_) => (StatusCode::BAD_REQUEST, ErrorCode::InvalidRoute),
            ApiError::NotReady(_) => (StatusCode::SERVICE_UNAVAILABLE, ErrorCode::NotReady),
            ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, ErrorCode::Unavailable),
            ApiError::StateNotSaved(_) => {
                (StatusCode::INTERNAL_SERVER_ERROR, ErrorCode::StateNotSaved)
            }
            ApiError::StoreUnavailable(_) => {
                (StatusCode::SERVICE_UNAVAILABLE, ErrorCode::StoreUnavailable)
            }
            ApiError::StoreConflict(_) => (StatusCode::CONFLICT, ErrorCode::StoreConflict),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, ErrorCode::Internal),
            ApiError::InvalidCertificate(_) => {
                (StatusCode::BAD_REQUEST, ErrorCode::InvalidCertificate)
            }
            ApiError::TlsNotConfigured => (StatusCode::CONFLICT, ErrorCode::TlsNotConfigured),
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The codes on the wire are the documented snake_case strings (docs/admin.md), one per
    /// error, with their statuses.
    #[test]
    fn codes_and_statuses_are_the_documented_ones() {
        let cases = [
            (ApiError::NotFound("/x".into()), 404, "not_found"),
            (ApiError::MethodNotAllowed("GET"), 405, "method_not_allowed"),
            (ApiError::Auth(AuthError::Missing), 401, "invalid_token"),
            (
                ApiError::Auth(AuthError::InsufficientScope(crate::auth::Scope::Write)),
                403,
                "insufficient_scope",
            ),
            (ApiError::PayloadTooLarge(1), 413, "payload_too_large"),
            (ApiError::InvalidBody(String::new()), 400, "invalid_body"),
            (ApiError::InvalidUrl(String::new()), 400, "invalid_url"),
            (ApiError::InvalidWeight(String::new()), 400, "invalid_weight"),
            (ApiError::InvalidAlgorithm(String::new()), 400, "invalid_algorithm"),
            (ApiError::InvalidCache(String::new()), 400, "invalid_cache"),
            (ApiError::DuplicateBackend(String::new()), 409, "duplicate_backend"),
            (ApiError::UnknownBackend(String::new()), 404, "unknown_backend"),
            (ApiError::NotReady(String::new()), 503, "not_ready"),
            (ApiError::Unavailable(String::new()), 503, "unavailable"),
            (ApiError::StateNotSaved(String::new()), 500, "state_not_saved"),
            (ApiError::StoreUnavailable(String::new()), 503, "store_unavailable"),
            (ApiError::StoreConflict(String::new()), 409, "store_conflict"),
            (ApiError::Internal(String::new()), 500, "internal"),
            (ApiError::InvalidCertificate(String::new()), 400, "invalid_certificate"),
            (ApiError::TlsNotConfigured, 409, "tls_not_configured"),
        ];
        for (error, status, code) in cases {
            let (s, c) = error.status_and_code();
            assert_eq!((s.as_u16(), serde_json::to_value(c).unwrap()), (status, code.into()));
        }
    }
}
