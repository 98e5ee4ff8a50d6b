//! Every refusal of the admin API: `{"error": text, "code": code}` with its HTTP status.

use http::{HeaderValue, StatusCode};

use super::shapes::ErrorBody;
use crate::admin::AdminError;
use crate::operator::error_code;
use crate::server::{Reply, json_reply};
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    retry_after: Option<u64>,
    /// The methods a path takes, for a 405's `Allow`.
    allow: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
            allow: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn unauthorized() -> ApiError {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid admin token is needed: Authorization: Bearer <token>",
        )
    }

    pub fn method_not_allowed(allowed: &[http::Method]) -> ApiError {
        let allow: Vec<&str> = allowed.iter().map(http::Method::as_str).collect();
        ApiError {
            allow: Some(allow.join(", ")),
            ..ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                format!("this path takes {}", allow.join(", ")),
            )
        }
    }

    pub fn too_many(retry_after: u64) -> ApiError {
        ApiError {
            retry_after: Some(retry_after),
            ..ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_requests",
                "too many failed token attempts from this address",
            )
        }
    }

    /// The seconds a 429 asks the caller to wait.
    pub fn retry_after(&self) -> Option<u64> {
        self.retry_after
    }

    pub fn reply(&self) -> Reply {
        let body = ErrorBody {
            error: self.message.clone(),
            code: self.code.to_owned(),
        };
        let bytes = serde_json::to_vec(&body).unwrap_or_default();
        let mut reply = json_reply(self.status, bytes.into());
        if let Some(secs) = self.retry_after {
            reply
                .headers_mut()
                .insert(http::header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if let Some(allow) = self
            .allow
            .as_deref()
            .and_then(|a| HeaderValue::from_str(a).ok())
        {
            reply.headers_mut().insert(http::header::ALLOW, allow);
        }
        if self.status == StatusCode::UNAUTHORIZED {
            reply.headers_mut().insert(
                http::header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer"),
            );
        }
        reply
    }
}

impl From<AdminError> for ApiError {
    fn from(e: AdminError) -> ApiError {
        let code = error_code(&e);
        let status = match code {
            "not_found" => StatusCode::NOT_FOUND,
            "bad_request" => StatusCode::BAD_REQUEST,
            "conflict" | "insufficient_funds" => StatusCode::CONFLICT,
            _ => StatusCode::SERVICE_UNAVAILABLE,
        };
        let message = match status {
            // The database's own words stay in the log.
            StatusCode::SERVICE_UNAVAILABLE => {
                tracing::error!(error = %e, "admin API: the store failed");
                "the database is unavailable; try again".to_owned()
            }
            _ => e.to_string(),
        };
        ApiError::new(status, code, message)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        AdminError::from(e).into()
    }
}
