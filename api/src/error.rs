//! The API's error type and the table of stable error codes.
//!
//! Every error body is `{"error": {"code", "message", "details"}}`. Codes are stable
//! identifiers clients can branch on; each maps to exactly one HTTP status in
//! [`ErrorCode::status`]. A 5xx logs its full cause chain and answers with a generic message:
//! driver text never reaches a client. Validation errors list every problem in `details` as
//! `{"field", "message"}`.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Value, json};
use verdict_domain::Problems;
use verdict_store::StoreError;

macro_rules! error_codes {
    ($($variant:ident => ($code:literal, $status:ident)),* $(,)?) => {
        /// Stable error codes. The table below is the only place a code meets its status.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum ErrorCode { $($variant),* }

        impl ErrorCode {
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant),*];

            pub fn status(self) -> StatusCode {
                match self { $(ErrorCode::$variant => StatusCode::$status),* }
            }

            pub fn as_str(self) -> &'static str {
                match self { $(ErrorCode::$variant => $code),* }
            }
        }
    };
}

error_codes! {
    InvalidJson => ("invalid_json", BAD_REQUEST),
    InvalidBody => ("invalid_body", UNPROCESSABLE_ENTITY),
    UnsupportedMediaType => ("unsupported_media_type", UNSUPPORTED_MEDIA_TYPE),
    PayloadTooLarge => ("payload_too_large", PAYLOAD_TOO_LARGE),
    InvalidQuery => ("invalid_query", BAD_REQUEST),
    InvalidPagination => ("invalid_pagination", BAD_REQUEST),
    ValidationFailed => ("validation_failed", UNPROCESSABLE_ENTITY),
    BatchTooLarge => ("batch_too_large", PAYLOAD_TOO_LARGE),
    Unauthorized => ("unauthorized", UNAUTHORIZED),
    Forbidden => ("forbidden", FORBIDDEN),
    RouteNotFound => ("route_not_found", NOT_FOUND),
    MethodNotAllowed => ("method_not_allowed", METHOD_NOT_ALLOWED),
    ExperimentNotFound => ("experiment_not_found", NOT_FOUND),
    EnvironmentNotFound => ("environment_not_found", NOT_FOUND),
    AudienceNotFound => ("audience_not_found", NOT_FOUND),
    ApiKeyNotFound => ("api_key_not_found", NOT_FOUND),
    WebhookEndpointNotFound => ("webhook_endpoint_not_found", NOT_FOUND),
    WebhookMessageNotFound => ("webhook_message_not_found", NOT_FOUND),
    VariantNotFound => ("variant_not_found", UNPROCESSABLE_ENTITY),
    ExperimentExists => ("experiment_exists", CONFLICT),
    EnvironmentExists => ("environment_exists", CONFLICT),
    AudienceExists => ("audience_exists", CONFLICT),
    AudienceInUse => ("audience_in_use", CONFLICT),
    VersionConflict => ("version_conflict", CONFLICT),
    InvalidTransition => ("invalid_transition", CONFLICT),
    ExperimentRunning => ("experiment_running", CONFLICT),
    RateLimited => ("rate_limited", TOO_MANY_REQUESTS),
    StoreUnavailable => ("store_unavailable", SERVICE_UNAVAILABLE),
    JobNotFound => ("job_not_found", NOT_FOUND),
    RunNotFound => ("run_not_found", NOT_FOUND),
    LeaseHeld => ("lease_held", CONFLICT),
    ShuttingDown => ("shutting_down", SERVICE_UNAVAILABLE),
    UpgradeRequired => ("upgrade_required", UPGRADE_REQUIRED),
    Internal => ("internal", INTERNAL_SERVER_ERROR),
}

impl Serialize for ErrorCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// An error answered to a client.
#[derive(Debug)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    pub details: Vec<Value>,
    /// Seconds for `Retry-After` (429, 503).
    pub retry_after: Option<u64>,
    /// Logged for 5xx, never sent.
    pub cause: Option<anyhow::Error>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            details: Vec::new(),
            retry_after: None,
            cause: None,
        }
    }

    pub fn with_details(mut self, details: Vec<Value>) -> Self {
        self.details = details;
        self
    }

    pub fn internal(cause: impl Into<anyhow::Error>) -> Self {
        Self {
            cause: Some(cause.into()),
            ..Self::new(
                ErrorCode::Internal,
                "internal error; see the server log for this request id",
            )
        }
    }

    /// 422 listing every problem.
    pub fn validation(problems: Problems) -> Self {
        let details = problems
            .into_iter()
            .map(|p| json!({"field": p.field, "message": p.message}))
            .collect();
        Self::new(
            ErrorCode::ValidationFailed,
            "the request has invalid fields; see details",
        )
        .with_details(details)
    }

    pub fn experiment_not_found(key: &str) -> Self {
        Self::new(
            ErrorCode::ExperimentNotFound,
            format!("no experiment '{key}' in this scope"),
        )
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable { .. } => Self {
                retry_after: Some(1),
                cause: Some(e.into()),
                ..Self::new(
                    ErrorCode::StoreUnavailable,
                    "the store is temporarily unavailable; retry later",
                )
            },
            StoreError::VersionConflict { expected, actual } => Self::new(
                ErrorCode::VersionConflict,
                format!(
                    "the experiment changed: you sent version {expected}, the current version \
                     is {actual}; re-read it and retry"
                ),
            ),
            e => ApiError::internal(e),
        }
    }
}

#[derive(Serialize)]
struct Body<'a> {
    error: Inner<'a>,
}

#[derive(Serialize)]
struct Inner<'a> {
    code: ErrorCode,
    message: &'a str,
    details: &'a [Value],
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.code.status();
        if status.is_server_error() {
            match &self.cause {
                Some(cause) => {
                    tracing::error!(code = self.code.as_str(), error = ?cause, "request failed")
                }
                None => tracing::error!(code = self.code.as_str(), "request failed"),
            }
        }
        let body = Body {
            error: Inner {
                code: self.code,
                message: &self.message,
                details: &self.details,
            },
        };
        let mut response = (status, Json(body)).into_response();
        if let Some(secs) = self.retry_after
            && let Ok(v) = HeaderValue::from_str(&secs.to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, v);
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_is_unique_and_4xx_or_5xx() {
        let mut seen = std::collections::HashSet::new();
        for code in ErrorCode::ALL {
            assert!(seen.insert(code.as_str()), "{} twice", code.as_str());
            assert!(code.status().is_client_error() || code.status().is_server_error());
        }
    }
}
