//! Errors of the server's two boundaries: the store ([`StoreError`], defined in
//! `store/error.rs` with the classification of database failures) and the HTTP API
//! ([`ApiError`], the one place where errors become status codes and JSON bodies).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hoist_core::api::{ErrorBody, ErrorCode, ErrorDetail};

pub use crate::store::error::{Constraint, StoreError};

/// Seconds a client is asked to wait before retrying a transient failure.
pub const RETRY_AFTER_SECS: u64 = 1;

/// An error answered to an API client.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: ErrorCode,
    pub message: String,
    pub details: Option<serde_json::Value>,
    /// Sent as `Retry-After` (seconds): the failure is transient.
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            details: None,
            retry_after: None,
        }
    }
    pub fn with_details(mut self, details: serde_json::Value) -> Self {
        self.details = Some(details);
        self
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, ErrorCode::BadRequest, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, ErrorCode::NotFound, message)
    }
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, ErrorCode::Conflict, message)
    }
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, ErrorCode::Forbidden, message)
    }
    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            ErrorCode::Unauthenticated,
            message,
        )
    }
    pub fn invalid_config(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::InvalidConfig,
            message,
        )
    }
    pub fn invalid_template(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::InvalidTemplate,
            message,
        )
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.status)
    }
}

impl std::error::Error for ApiError {}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        if e.is_transient() {
            let message = match &e {
                StoreError::Closed => {
                    "the server is shutting down; retry against another replica or after restart"
                }
                _ => "the server's store is busy or unreachable; retry in a moment",
            };
            tracing::warn!(message = "Transient store failure.", error = %e);
            let mut a = ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::Unavailable,
                message,
            );
            a.retry_after = Some(RETRY_AFTER_SECS);
            return a;
        }
        match e.constraint() {
            Some(Constraint::Unique | Constraint::PrimaryKey) => {
                return ApiError::conflict("the object exists already");
            }
            Some(Constraint::ForeignKey) => {
                return ApiError::conflict(
                    "the change refers to an object that no longer exists (it was deleted meanwhile); look it up again and retry",
                );
            }
            _ => {}
        }
        match e {
            StoreError::NotFound(m) => ApiError::not_found(m),
            StoreError::Conflict(m) => ApiError::conflict(m),
            StoreError::Invalid(m) => ApiError::bad_request(m),
            StoreError::Superseded(m) => {
                ApiError::new(StatusCode::CONFLICT, ErrorCode::Superseded, m)
            }
            StoreError::SessionEnded(m) => {
                ApiError::new(StatusCode::FORBIDDEN, ErrorCode::SessionEnded, m)
            }
            StoreError::UnknownSession(m) => {
                ApiError::new(StatusCode::CONFLICT, ErrorCode::UnknownSession, m)
            }
            StoreError::IllegalTransition(t) => ApiError::new(
                StatusCode::CONFLICT,
                ErrorCode::IllegalTransition,
                t.to_string(),
            )
            .with_details(serde_json::json!({"from": t.from, "to": t.to})),
            e @ (StoreError::Db { .. }
            | StoreError::Bug(_)
            | StoreError::Config(_)
            | StoreError::Corrupt { .. }
            | StoreError::Closed) => {
                tracing::error!(message = "Store failure.", error = %e, cause = ?std::error::Error::source(&e).map(|c| c.to_string()));
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    ErrorCode::Internal,
                    "internal error in the server's store; the server log has the details",
                )
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code,
                message: self.message,
                details: self.details,
            },
        };
        let mut resp = (self.status, axum::Json(body)).into_response();
        if let Some(secs) = self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
