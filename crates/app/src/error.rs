//! [`AppError`]: what a use-case answers when it cannot do what was asked, with a stable
//! [`ErrorCode`] every adapter (HTTP, console, CLI) shows as is.
//!
//! Codes are stable identifiers clients can branch on. The HTTP adapter maps each to exactly
//! one status in one exhaustive table; nothing here knows about HTTP. An internal error keeps
//! its cause (logged with its whole chain, never shown): driver text never reaches a client.
//! Validation errors list every problem in `details` as `{"field", "message"}`.

use serde::Serialize;
use serde_json::{Value, json};
use verdict_domain::Problems;
use verdict_store::StoreError;

macro_rules! error_codes {
    ($($variant:ident => $code:literal),* $(,)?) => {
        /// Stable error codes.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ErrorCode { $($variant),* }

        impl ErrorCode {
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant),*];

            pub fn as_str(self) -> &'static str {
                match self { $(ErrorCode::$variant => $code),* }
            }
        }
    };
}

error_codes! {
    InvalidJson => "invalid_json",
    InvalidBody => "invalid_body",
    UnsupportedMediaType => "unsupported_media_type",
    PayloadTooLarge => "payload_too_large",
    InvalidQuery => "invalid_query",
    InvalidPath => "invalid_path",
    InvalidPagination => "invalid_pagination",
    ValidationFailed => "validation_failed",
    BatchTooLarge => "batch_too_large",
    Unauthorized => "unauthorized",
    Forbidden => "forbidden",
    RouteNotFound => "route_not_found",
    MethodNotAllowed => "method_not_allowed",
    NotFound => "not_found",
    ExperimentNotFound => "experiment_not_found",
    EnvironmentNotFound => "environment_not_found",
    AudienceNotFound => "audience_not_found",
    ApiKeyNotFound => "api_key_not_found",
    WebhookEndpointNotFound => "webhook_endpoint_not_found",
    WebhookMessageNotFound => "webhook_message_not_found",
    VariantNotFound => "variant_not_found",
    MetricNotFound => "metric_not_found",
    SnapshotNotFound => "snapshot_not_found",
    Conflict => "conflict",
    ExperimentExists => "experiment_exists",
    EnvironmentExists => "environment_exists",
    AudienceExists => "audience_exists",
    AudienceInUse => "audience_in_use",
    VersionConflict => "version_conflict",
    InvalidTransition => "invalid_transition",
    ExperimentRunning => "experiment_running",
    RateLimited => "rate_limited",
    RequestTimeout => "request_timeout",
    StoreUnavailable => "store_unavailable",
    AuthUnavailable => "auth_unavailable",
    Overloaded => "overloaded",
    JobNotFound => "job_not_found",
    RunNotFound => "run_not_found",
    LeaseHeld => "lease_held",
    LeaseLost => "lease_lost",
    ShuttingDown => "shutting_down",
    PublishFailed => "publish_failed",
    UpgradeRequired => "upgrade_required",
    Internal => "internal",
}

impl Serialize for ErrorCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error a use-case answers.
#[derive(Debug)]
pub struct AppError {
    pub code: ErrorCode,
    /// Human-readable; for [`ErrorCode::Internal`] a generic text (the cause is logged).
    pub message: String,
    /// Structured details, e.g. every invalid field as `{"field", "message"}`.
    pub details: Vec<Value>,
    /// Seconds the caller should wait before retrying (rate limits, unavailability).
    pub retry_after: Option<u64>,
    /// Logged with its chain, never shown.
    pub cause: Option<anyhow::Error>,
}

impl std::fmt::Display for AppError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for AppError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.cause.as_ref().map(|c| c.as_ref() as _)
    }
}

impl AppError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            details: Vec::new(),
            retry_after: None,
            cause: None,
        }
    }

    /// The same error with another message.
    pub fn with_message(mut self, message: impl Into<String>) -> Self {
        self.message = message.into();
        self
    }

    pub fn with_details(mut self, details: Vec<Value>) -> Self {
        self.details = details;
        self
    }

    pub fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    pub fn caused_by(mut self, cause: impl Into<anyhow::Error>) -> Self {
        self.cause = Some(cause.into());
        self
    }

    pub fn internal(cause: impl Into<anyhow::Error>) -> Self {
        Self::new(
            ErrorCode::Internal,
            "internal error; see the server log for this request id",
        )
        .caused_by(cause)
    }

    /// Every problem of the input, as `validation_failed`.
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

    /// One bad field, as `validation_failed`.
    pub fn invalid_field(field: &str, message: impl Into<String>) -> Self {
        let mut p = Problems::new();
        p.push(field, message);
        Self::validation(p)
    }

    /// A bad query parameter, as `invalid_query`.
    pub fn invalid_query(field: &str, message: impl Into<String>) -> Self {
        let message = message.into();
        Self::new(ErrorCode::InvalidQuery, format!("{field}: {message}"))
            .with_details(vec![json!({"field": field, "message": message})])
    }

    pub fn experiment_not_found(key: &str) -> Self {
        Self::new(
            ErrorCode::ExperimentNotFound,
            format!("no experiment '{key}' in this scope"),
        )
    }
}

/// Every store error has its own code: a use-case that gives `Conflict` or `NotFound` a more
/// precise meaning (`experiment_exists`, …) maps it itself; the rest keep a generic but
/// correct status instead of becoming 500s.
impl From<StoreError> for AppError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Overloaded { .. } => AppError::new(
                ErrorCode::Overloaded,
                "the store is overloaded; retry later",
            )
            .retry_after(1)
            .caused_by(e),
            StoreError::Unavailable { .. } => AppError::new(
                ErrorCode::StoreUnavailable,
                "the store is temporarily unavailable; retry later",
            )
            .retry_after(1)
            .caused_by(e),
            StoreError::VersionConflict { expected, actual } => AppError::new(
                ErrorCode::VersionConflict,
                format!(
                    "the experiment changed: you sent version {expected}, the current version \
                     is {actual}; re-read it and retry"
                ),
            ),
            StoreError::Conflict(message) => AppError::new(ErrorCode::Conflict, message),
            StoreError::NotFound => AppError::new(ErrorCode::NotFound, "it no longer exists"),
            StoreError::Fenced { .. } => AppError::new(
                ErrorCode::LeaseLost,
                "another process took this job over; the write was refused",
            )
            .caused_by(e),
            StoreError::Internal { .. } => AppError::internal(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_is_unique() {
        let mut seen = std::collections::HashSet::new();
        for code in ErrorCode::ALL {
            assert!(seen.insert(code.as_str()), "{} twice", code.as_str());
        }
    }

    #[test]
    fn store_errors_keep_their_meaning() {
        let conflict: AppError = StoreError::Conflict("key taken".into()).into();
        assert_eq!(conflict.code, ErrorCode::Conflict);
        let gone: AppError = StoreError::NotFound.into();
        assert_eq!(gone.code, ErrorCode::NotFound);
        let fenced: AppError = StoreError::Fenced {
            job: "aggregate".into(),
            token: 3,
        }
        .into();
        assert_eq!(fenced.code, ErrorCode::LeaseLost);
        let down: AppError = StoreError::Unavailable {
            context: "pinging".into(),
            source: Some("connection refused".into()),
        }
        .into();
        assert_eq!(
            (down.code, down.retry_after),
            (ErrorCode::StoreUnavailable, Some(1))
        );
    }
}
