//! The admin API's error: an HTTP status, a contract error code, one sentence for a
//! person and `details`, rendered as `{"error": {"code", "message", "details": [...]}}`.
//! Model and store errors convert into it here, so the mapping code → status is in one place.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tracing::error;

use crate::model::certificate::CertificateError;
use crate::model::policy::PolicyError;
use crate::model::{InvalidRequest, ResourceId};
use crate::store::StoreError;

/// An error answer of the admin API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminError {
    /// The HTTP status.
    pub status: StatusCode,
    /// The contract error code, e.g. `CertificateInUse`.
    pub code: &'static str,
    /// One sentence for a person.
    pub message: String,
    /// Structured details (e.g. `{"kind": "backend", "id": "b1"}`); often empty.
    pub details: Vec<serde_json::Value>,
}

impl AdminError {
    /// Any error.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            details: Vec::new(),
        }
    }

    /// 400 with the given code.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 400 `InvalidRequest`.
    pub fn invalid_request(message: impl Into<String>) -> Self {
        Self::bad_request("InvalidRequest", message)
    }

    /// 400 `InvalidId`.
    pub fn invalid_id() -> Self {
        Self::bad_request(
            "InvalidId",
            "The id must be 1 to 80 characters of A-Z a-z 0-9 . _ -.",
        )
    }

    /// 404 `NotFound` for a missing resource.
    pub fn not_found(what: &str, id: &ResourceId) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("The {what} {id} does not exist."),
        )
    }

    /// 409 with a code and details.
    pub fn conflict(
        code: &'static str,
        message: impl Into<String>,
        details: Vec<serde_json::Value>,
    ) -> Self {
        Self {
            details,
            ..Self::new(StatusCode::CONFLICT, code, message)
        }
    }

    /// 401 `Unauthorized`.
    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "A valid 'Authorization: Bearer <token>' header is required.",
        )
    }

    /// 507 `InsufficientStorage` (contract §6): the data directory's file system is full,
    /// so the change could not be made durable; nothing was changed, and what was stored
    /// before still reads as it was.
    pub fn insufficient_storage() -> Self {
        Self::new(
            StatusCode::INSUFFICIENT_STORAGE,
            "InsufficientStorage",
            "The gateway's data directory is full, so the change could not be saved; nothing was changed. Free space in server.data_dir and retry.",
        )
    }

    /// 500 `InternalError`; the cause is logged, not shown.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        error!(error = %cause, "admin request failed");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            "The gateway could not complete the request; see its log.",
        )
    }
}

impl std::fmt::Display for AdminError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.code,
            self.message
        )
    }
}

impl std::error::Error for AdminError {}

impl From<CertificateError> for AdminError {
    fn from(e: CertificateError) -> Self {
        Self::bad_request(e.code(), e.to_string())
    }
}

impl From<PolicyError> for AdminError {
    fn from(e: PolicyError) -> Self {
        Self {
            details: vec![json!({"line": e.line, "column": e.column})],
            ..Self::bad_request(e.code(), e.message)
        }
    }
}

impl From<InvalidRequest> for AdminError {
    fn from(e: InvalidRequest) -> Self {
        Self::invalid_request(e.0)
    }
}

impl From<StoreError> for AdminError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(why) => {
                tracing::info!(why = %why, "write lost to a concurrent write");
                Self::new(
                    StatusCode::CONFLICT,
                    "Conflict",
                    "Another write changed what this one was checked against first; nothing was changed. Read the resource again and retry.",
                )
            }
            StoreError::Unavailable(why) => {
                error!(error = %why, "store unavailable: write refused");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "StoreUnavailable",
                    "The configuration store cannot be reached; nothing was changed. The gateway keeps serving its current configuration; retry later.",
                )
            }
            StoreError::Unconfirmed(why) => {
                error!(error = %why, "store did not confirm a write");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "StoreUnavailable",
                    "The configuration store did not confirm the change in time: it may have been applied. Read the resource to see, then retry.",
                )
            }
            StoreError::StorageFull(why) => {
                error!(error = %why, "store write refused: the data directory is full");
                Self::insufficient_storage()
            }
            e => {
                error!(error = %e, "store write failed");
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "StoreError",
                    "The change could not be saved durably; nothing was changed.",
                )
            }
        }
    }
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        let body = json!({
            "error": {
                "code": self.code,
                "message": self.message,
                "details": self.details,
            }
        });
        let mut response = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}
