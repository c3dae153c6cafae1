//! The API's error type and the table of stable error codes.
//!
//! Every error body is `{"error": {"code", "message", "details"}}`. Codes are stable
//! identifiers clients can branch on; each maps to exactly one HTTP status in
//! [`ErrorCode::status`]. A 5xx logs its full cause chain and answers with a generic message:
//! driver text never reaches a client.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::Value;
use verdict_store::StoreError;

/// Stable error codes (serialized snake_case).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    RouteNotFound,
    MethodNotAllowed,
    StoreUnavailable,
    Internal,
}

impl ErrorCode {
    /// The one table of code → HTTP status.
    pub fn status(self) -> StatusCode {
        match self {
            ErrorCode::RouteNotFound => StatusCode::NOT_FOUND,
            ErrorCode::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::StoreUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::RouteNotFound => "route_not_found",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::StoreUnavailable => "store_unavailable",
            ErrorCode::Internal => "internal",
        }
    }
}

/// An error answered to a client.
#[derive(Debug)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    pub details: Vec<Value>,
    /// Logged for 5xx, never sent.
    pub cause: Option<anyhow::Error>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            details: Vec::new(),
            cause: None,
        }
    }

    pub fn with_details(mut self, details: Vec<Value>) -> Self {
        self.details = details;
        self
    }

    pub fn internal(cause: impl Into<anyhow::Error>) -> Self {
        Self {
            code: ErrorCode::Internal,
            message: "internal error; see the server log for this request id".into(),
            details: Vec::new(),
            cause: Some(cause.into()),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        if e.is_retryable() {
            let mut err = ApiError::new(
                ErrorCode::StoreUnavailable,
                "the store is temporarily unavailable; retry later",
            );
            err.cause = Some(e.into());
            err
        } else {
            ApiError::internal(e)
        }
    }
}

#[derive(Serialize)]
struct Body<'a> {
    error: Inner<'a>,
}

#[derive(Serialize)]
struct Inner<'a> {
    code: &'static str,
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
                code: self.code.as_str(),
                message: &self.message,
                details: &self.details,
            },
        };
        let mut response = (status, Json(body)).into_response();
        if self.code == ErrorCode::StoreUnavailable {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}
