//! [`ApiError`]: an application error as an HTTP response, and the one table that gives each
//! stable error code its status.
//!
//! Every error body is `{"error": {"code", "message", "details"}}`. A 5xx logs its full cause
//! chain and answers the application's generic message: driver text never reaches a client.
//! 429 and 503 carry `Retry-After`.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::Value;
use verdict_app::{AppError, ErrorCode};
use verdict_domain::ErrorChain;

/// The HTTP status of each code. Exhaustive: a new code does not compile until it has one.
pub fn status(code: ErrorCode) -> StatusCode {
    use ErrorCode::*;
    match code {
        InvalidJson | InvalidQuery | InvalidPath | InvalidPagination => StatusCode::BAD_REQUEST,
        Unauthorized => StatusCode::UNAUTHORIZED,
        Forbidden => StatusCode::FORBIDDEN,
        RouteNotFound
        | NotFound
        | ExperimentNotFound
        | EnvironmentNotFound
        | AudienceNotFound
        | ApiKeyNotFound
        | WebhookEndpointNotFound
        | WebhookMessageNotFound
        | JobNotFound
        | RunNotFound
        | MetricNotFound
        | SnapshotNotFound => StatusCode::NOT_FOUND,
        MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        Conflict | ExperimentExists | EnvironmentExists | AudienceExists | AudienceInUse
        | VersionConflict | InvalidTransition | ExperimentRunning | LeaseHeld | LeaseLost => {
            StatusCode::CONFLICT
        }
        PayloadTooLarge | BatchTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        InvalidBody | ValidationFailed | VariantNotFound => StatusCode::UNPROCESSABLE_ENTITY,
        UpgradeRequired => StatusCode::UPGRADE_REQUIRED,
        RequestTimeout => StatusCode::REQUEST_TIMEOUT,
        RateLimited => StatusCode::TOO_MANY_REQUESTS,
        Internal => StatusCode::INTERNAL_SERVER_ERROR,
        PublishFailed => StatusCode::BAD_GATEWAY,
        StoreUnavailable | AuthUnavailable | Overloaded | ShuttingDown => {
            StatusCode::SERVICE_UNAVAILABLE
        }
    }
}

/// An error answered to a client.
#[derive(Debug)]
pub struct ApiError(pub AppError);

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self(AppError::new(code, message))
    }
}

impl From<AppError> for ApiError {
    fn from(e: AppError) -> Self {
        Self(e)
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
        let e = self.0;
        let status = status(e.code);
        if status.is_server_error() {
            match &e.cause {
                Some(cause) => {
                    let chain = ErrorChain(cause.as_ref());
                    tracing::error!(code = e.code.as_str(), error = %chain, "request failed")
                }
                None => tracing::error!(code = e.code.as_str(), "request failed"),
            }
        }
        let body = Body {
            error: Inner {
                code: e.code,
                message: &e.message,
                details: &e.details,
            },
        };
        let mut response = (status, Json(body)).into_response();
        if let Some(secs) = e.retry_after
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
    fn every_code_is_a_client_or_server_error() {
        for code in ErrorCode::ALL {
            let s = status(*code);
            assert!(s.is_client_error() || s.is_server_error(), "{code}: {s}");
        }
    }
}
