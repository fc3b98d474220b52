//! API errors: a status, a machine code, a human message naming the fix, and
//! the offending field. Rendered as `{"error": {"code", "message", "field"}}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chanto_core::ValidationError;
use chanto_store::StoreError;
use serde::Serialize;

/// An error as an API client sees it.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable machine-readable code (`not_found`, `hash_mismatch`, …).
    pub code: &'static str,
    /// What went wrong and how to fix it.
    pub message: String,
    /// The offending input, if one is to blame.
    pub field: Option<String>,
    /// Structured details (e.g. the hashes still missing).
    pub details: Option<serde_json::Value>,
}

/// The JSON body of an error response.
#[derive(Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// The error inside [`ErrorBody`].
#[derive(Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Stable machine-readable code.
    pub code: String,
    /// What went wrong and how to fix it.
    pub message: String,
    /// The offending input, if one is to blame.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// Structured details.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub details: Option<serde_json::Value>,
}

impl ApiError {
    /// An error with no field.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into(), field: None, details: None }
    }

    /// Names the offending field.
    pub fn field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    /// Adds structured details.
    pub fn details(mut self, details: serde_json::Value) -> Self {
        self.details = Some(details);
        self
    }

    /// 401 for a missing or unknown token.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    /// 404 for a missing thing.
    pub fn not_found(what: impl std::fmt::Display) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", format!("{what} not found"))
    }
}

impl From<ValidationError> for ApiError {
    fn from(e: ValidationError) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid", e.message).field(e.field)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        let status = StatusCode::from_u16(e.http_status_code()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let code = match &e {
            StoreError::NotFound(_) => "not_found",
            StoreError::HashMismatch { .. } => "hash_mismatch",
            StoreError::TooLarge { .. } => "too_large",
            StoreError::Full { .. } => "storage_full",
            StoreError::Conflict(_) => "conflict",
            StoreError::Invalid(v) => return v.clone().into(),
            StoreError::Io { .. } | StoreError::Db(_) | StoreError::Config(_) => "internal",
            StoreError::Unavailable(_) => "unavailable",
        };
        if code == "internal" || code == "storage_full" || code == "unavailable" {
            tracing::error!(error = %e, "storage error");
        }
        Self::new(status, code, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_owned(),
                message: self.message,
                field: self.field,
                details: self.details,
            },
        };
        (self.status, axum::Json(body)).into_response()
    }
}
