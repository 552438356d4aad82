//! Errors of the server's two boundaries: the store ([`StoreError`]) and the HTTP API
//! ([`ApiError`], the one place where errors become status codes and JSON bodies).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use hoist_core::api::{ErrorBody, ErrorCode, ErrorDetail};
use hoist_core::run::IllegalTransition;
use thiserror::Error;

#[derive(Debug, Clone, Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Db(std::sync::Arc<sqlx::Error>),
    #[error("{0}")]
    Config(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    IllegalTransition(#[from] IllegalTransition),
    #[error("{0}")]
    Superseded(String),
    #[error("{0}")]
    Invalid(String),
    #[error("the store is closed (the server is shutting down)")]
    Closed,
    #[error("corrupt row in the store: {0}")]
    Corrupt(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        StoreError::Db(std::sync::Arc::new(e))
    }
}

impl StoreError {
    /// A unique-constraint violation (the object exists already).
    pub fn is_unique_violation(&self) -> bool {
        match self {
            StoreError::Db(e) => match e.as_ref() {
                sqlx::Error::Database(d) => {
                    d.is_unique_violation()
                        || d.message().contains("UNIQUE constraint failed")
                        || d.code().as_deref() == Some("23505")
                }
                _ => false,
            },
            _ => false,
        }
    }
}

/// An error answered to an API client.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: ErrorCode,
    pub message: String,
    pub details: Option<serde_json::Value>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            details: None,
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

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(m) => ApiError::not_found(m),
            StoreError::Conflict(m) => ApiError::conflict(m),
            StoreError::Invalid(m) => ApiError::bad_request(m),
            StoreError::Superseded(m) => {
                ApiError::new(StatusCode::CONFLICT, ErrorCode::Superseded, m)
            }
            StoreError::IllegalTransition(t) => ApiError::new(
                StatusCode::CONFLICT,
                ErrorCode::IllegalTransition,
                t.to_string(),
            )
            .with_details(serde_json::json!({"from": t.from, "to": t.to})),
            StoreError::Closed => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::Unavailable,
                "the server is shutting down; retry against another replica or after restart",
            ),
            e @ (StoreError::Db(_) | StoreError::Config(_) | StoreError::Corrupt(_)) => {
                if e.is_unique_violation() {
                    return ApiError::conflict("the object exists already");
                }
                tracing::error!(message = "Store failure.", error = %e);
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
        (self.status, axum::Json(body)).into_response()
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
