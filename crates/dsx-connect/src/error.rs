//! Every error the API returns: `{"detail": "<code>"}` (or the FastAPI-style list for 422).

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use dsx_hmac::AuthError;
use dsx_model::FieldError;
use dsx_store::StoreError;
use serde_json::json;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// DSX-HMAC failure: 401 with the contract's code and `WWW-Authenticate: DSX-HMAC`.
    #[error("{0}")]
    Hmac(#[from] AuthError),
    #[error("invalid_enrollment_token")]
    InvalidEnrollmentToken,
    #[error("invalid_operator_token")]
    InvalidOperatorToken,
    #[error("connector_mismatch")]
    ConnectorMismatch,
    #[error("url_conflict")]
    UrlConflict,
    /// The job was created by (or for) another connector.
    #[error("job_belongs_to_another_connector")]
    JobOwnedElsewhere,
    /// An operator revoked this connector; it stays out until readmitted.
    #[error("connector_revoked")]
    ConnectorRevoked,
    #[error("connector_not_found")]
    ConnectorNotFound,
    #[error("not_found")]
    RouteNotFound,
    #[error("job_not_found")]
    JobNotFound,
    /// `scan/request` into a paused (`job_paused`) or cancelled (`job_cancelled`) job.
    #[error("{code}")]
    JobClosed { code: &'static str, job_id: String },
    #[error("connector_unreachable: {0}")]
    ConnectorUnreachable(String),
    /// A token-only re-registration of a live connector whose key could not be checked.
    #[error("key_check_unavailable")]
    KeyCheckUnavailable,
    #[error("rate_limited")]
    RateLimited { retry_after_secs: u64 },
    #[error("body_too_large")]
    BodyTooLarge,
    /// The request body did not arrive in time.
    #[error("body_timeout")]
    BodyTimeout,
    #[error("validation error: {0}")]
    Validation(FieldError),
    /// The client's request is wrong.
    #[error("{0}")]
    BadRequest(&'static str),
    /// The server failed (not the client's fault): 500 with the code, logged as an error.
    #[error("internal error: {0}")]
    Internal(&'static str),
    #[error("store: {0}")]
    Store(#[from] StoreError),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Hmac(_) | ApiError::InvalidEnrollmentToken | ApiError::InvalidOperatorToken => {
                StatusCode::UNAUTHORIZED
            }
            ApiError::ConnectorMismatch | ApiError::ConnectorRevoked | ApiError::JobOwnedElsewhere => {
                StatusCode::FORBIDDEN
            }
            ApiError::UrlConflict => StatusCode::CONFLICT,
            ApiError::ConnectorNotFound | ApiError::RouteNotFound | ApiError::JobNotFound => StatusCode::NOT_FOUND,
            ApiError::JobClosed { .. } => StatusCode::CONFLICT,
            ApiError::ConnectorUnreachable(_) => StatusCode::BAD_GATEWAY,
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::KeyCheckUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            ApiError::Validation(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::Store(StoreError::Unavailable(_)) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Store(StoreError::Corrupt(_)) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The `detail` code (never carries secrets or internal error text).
    pub fn detail(&self) -> &'static str {
        match self {
            ApiError::Hmac(e) => e.code(),
            ApiError::InvalidEnrollmentToken => "invalid_enrollment_token",
            ApiError::InvalidOperatorToken => "invalid_operator_token",
            ApiError::ConnectorMismatch => "connector_mismatch",
            ApiError::UrlConflict => "url_conflict",
            ApiError::ConnectorRevoked => "connector_revoked",
            ApiError::JobOwnedElsewhere => "job_belongs_to_another_connector",
            ApiError::ConnectorNotFound => "connector_not_found",
            ApiError::RouteNotFound => "not_found",
            ApiError::JobNotFound => "job_not_found",
            ApiError::JobClosed { code, .. } => code,
            ApiError::ConnectorUnreachable(_) => "connector_unreachable",
            ApiError::RateLimited { .. } => "rate_limited",
            ApiError::KeyCheckUnavailable => "key_check_unavailable",
            ApiError::BodyTooLarge => "body_too_large",
            ApiError::BodyTimeout => "body_timeout",
            ApiError::Validation(_) => "validation_error",
            ApiError::BadRequest(code) => code,
            ApiError::Internal(code) => code,
            ApiError::Store(StoreError::Unavailable(_)) => "registry_unavailable",
            ApiError::Store(StoreError::Corrupt(_)) => "store_corrupt",
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match &self {
            ApiError::Store(err) => {
                let store = crate::config::STORE_LOCATION.get().map(String::as_str).unwrap_or("unknown");
                tracing::error!(error = %err, store, "store error")
            }
            ApiError::ConnectorUnreachable(err) => tracing::warn!(error = %err, "connector unreachable"),
            ApiError::Internal(code) => tracing::error!(code, "internal error"),
            _ => {}
        }
        let status = self.status();
        let body = match &self {
            ApiError::Validation(field) => json!({ "detail": [field] }),
            // Python connectors read a StatusResponse here; ours read `detail` to tell a
            // pause (wait and retry) from a cancel (stop).
            ApiError::JobClosed { code, job_id } => json!({
                "status": "error",
                "message": "Job paused/cancelled",
                "description": format!("scan_job_id={job_id}"),
                "id": null,
                "preview": null,
                "detail": code,
            }),
            other => json!({ "detail": other.detail() }),
        };
        let mut response = (status, Json(body)).into_response();
        let headers = response.headers_mut();
        match &self {
            ApiError::Hmac(_) => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("DSX-HMAC"));
            }
            ApiError::InvalidOperatorToken => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            ApiError::RateLimited { retry_after_secs } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
            }
            // The connector may be starting: its registration retry finds it listening.
            ApiError::KeyCheckUnavailable => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("2"));
            }
            _ => {}
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn internal_is_a_500_with_its_code() {
        let response = ApiError::Internal("serialize").into_response();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = axum::body::to_bytes(response.into_body(), 1024).await.unwrap();
        assert_eq!(serde_json::from_slice::<serde_json::Value>(&body).unwrap(), json!({ "detail": "serialize" }));
        assert_eq!(ApiError::BadRequest("unknown_queue_type").status(), StatusCode::BAD_REQUEST);
    }
}
