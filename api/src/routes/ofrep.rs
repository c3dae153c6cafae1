//! The OpenFeature Remote Evaluation Protocol (OFREP): OpenFeature's OFREP providers evaluate
//! Verdict's experiments as flags, one per experiment key, through the assignment use-cases
//! (so subjects served this way are assigned, sticky, and their events count).
//!
//! The evaluation context's `targetingKey` is the subject (whatever the experiment's unit);
//! its other fields are the targeting attributes. A flag's value is the variant's config,
//! its `variant` the variant key. Errors have OFREP's shape (`errorCode`, `errorDetails`);
//! authentication and rights answer as everywhere else in the API (401, 403).

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use verdict_app::assignments::{AssignmentRequest, AssignmentView};
use verdict_app::sdk::Rendered;
use verdict_app::{AppError, Caller, ErrorCode, ScopeParams};

use crate::error::ApiError;
use crate::extract::ApiPath;
use crate::routes::sdk::versioned_json;
use crate::state::AppState;

pub fn routes(router: OpenApiRouter<AppState>) -> OpenApiRouter<AppState> {
    router
        .routes(routes!(evaluate_flag))
        .routes(routes!(evaluate_flags))
}

/// An OFREP evaluation request.
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct OfrepRequest {
    /// The evaluation context: `targetingKey` (the subject) and targeting attributes.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub context: Option<Value>,
}

/// One flag's evaluation.
#[derive(Debug, Serialize, ToSchema)]
pub struct OfrepEvaluation<'a> {
    /// The flag key: the experiment key.
    #[schema(value_type = String)]
    pub key: &'a str,
    /// The variant's config.
    #[schema(value_type = Value)]
    pub value: &'a Value,
    /// The variant key.
    #[schema(value_type = String)]
    pub variant: &'a str,
    /// `SPLIT` (in the experiment), `TARGETING_MATCH` (a QA override), `STATIC` (a decided
    /// winner), `DEFAULT` (outside coverage, targeting or namespace: the control, or a
    /// paused experiment's new subject), `DISABLED` (not running: the control).
    pub reason: &'static str,
    /// `experiment`, `in_experiment` and Verdict's own `verdict_reason`.
    #[schema(value_type = Object)]
    pub metadata: Map<String, Value>,
}

/// Every live experiment of the caller's scope, evaluated.
#[derive(Debug, Serialize, ToSchema)]
pub struct OfrepBulk<'a> {
    pub flags: Vec<OfrepEvaluation<'a>>,
}

/// An OFREP error.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OfrepError {
    /// The flag key, for a single-flag evaluation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// `FLAG_NOT_FOUND`, `TARGETING_KEY_MISSING`, `INVALID_CONTEXT`, `PARSE_ERROR` or
    /// `GENERAL`.
    pub error_code: &'static str,
    pub error_details: String,
}

struct OfrepFailure {
    status: StatusCode,
    body: OfrepError,
}

impl IntoResponse for OfrepFailure {
    fn into_response(self) -> Response {
        (self.status, Json(self.body)).into_response()
    }
}

fn failure(key: Option<&str>, code: &'static str, details: impl Into<String>) -> OfrepFailure {
    OfrepFailure {
        status: if code == "FLAG_NOT_FOUND" {
            StatusCode::NOT_FOUND
        } else {
            StatusCode::BAD_REQUEST
        },
        body: OfrepError {
            key: key.map(str::to_owned),
            error_code: code,
            error_details: details.into(),
        },
    }
}

/// The assignment request an OFREP body stands for.
fn assignment_request(key: Option<&str>, body: &[u8]) -> Result<AssignmentRequest, OfrepFailure> {
    let request: OfrepRequest = if body.iter().all(u8::is_ascii_whitespace) {
        OfrepRequest::default()
    } else {
        serde_json::from_slice(body).map_err(|e| {
            failure(
                key,
                "PARSE_ERROR",
                format!("the body is not an evaluation request: {e}"),
            )
        })?
    };
    let mut attributes = match request.context {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(map)) => map,
        Some(_) => return Err(failure(key, "INVALID_CONTEXT", "context must be an object")),
    };
    let subject = match attributes.remove("targetingKey") {
        Some(Value::String(s)) if !s.is_empty() => s,
        Some(Value::String(_)) | None | Some(Value::Null) => {
            return Err(failure(
                key,
                "TARGETING_KEY_MISSING",
                "context.targetingKey (the subject) is required",
            ));
        }
        Some(_) => {
            return Err(failure(
                key,
                "INVALID_CONTEXT",
                "context.targetingKey must be a string",
            ));
        }
    };
    let mut request = AssignmentRequest::subject(subject);
    request.attributes = attributes;
    Ok(request)
}

/// An OFREP evaluation of one assignment.
fn evaluation<'a>(view: &AssignmentView<'a>) -> OfrepEvaluation<'a> {
    let mut metadata = Map::new();
    metadata.insert("experiment".into(), view.experiment.into());
    metadata.insert("in_experiment".into(), view.in_experiment.into());
    metadata.insert(
        "verdict_reason".into(),
        serde_json::to_value(view.reason).unwrap_or(Value::Null),
    );
    OfrepEvaluation {
        key: view.experiment,
        value: view.config,
        variant: view.variant,
        reason: view.reason.openfeature(),
        metadata,
    }
}

/// A failed assignment as OFREP's error, where OFREP has one (`key`: the flag of a
/// single-flag evaluation).
fn assignment_failure(key: Option<&str>, error: AppError) -> Response {
    match error.code {
        ErrorCode::ExperimentNotFound => {
            let details = format!("no experiment '{}'", key.unwrap_or_default());
            failure(key, "FLAG_NOT_FOUND", details).into_response()
        }
        ErrorCode::ValidationFailed | ErrorCode::InvalidBody => {
            failure(key, "INVALID_CONTEXT", error.message).into_response()
        }
        _ => ApiError::from(error).into_response(),
    }
}

/// `POST /ofrep/v1/evaluate/flags/{key}`
#[utoipa::path(
    post,
    path = "/ofrep/v1/evaluate/flags/{key}",
    tag = "sdk",
    summary = "OFREP: evaluate one flag",
    description = "OpenFeature Remote Evaluation Protocol, single flag: the experiment `key` \
        as a flag for the subject `context.targetingKey` (the other context fields are \
        targeting attributes). The value is the variant's config and `variant` its key, as \
        the assignment API gives them (a new eligible subject is assigned and stored).",
    security(("bearer" = ["assignments:read"])),
    params(("key" = String, Path, description = "The experiment key (the flag key)."),
        ("X-API-Key" = Option<String>, Header,
            description = "The API key, as OFREP's `ApiKeyAuth` sends it (instead of \
                `Authorization: Bearer`).")),
    request_body = OfrepRequest,
    responses(
        (status = 200, description = "The evaluation.", body = OfrepEvaluation),
        (status = 400, description = "`TARGETING_KEY_MISSING`, `INVALID_CONTEXT` or \
            `PARSE_ERROR`.", body = OfrepError),
        (status = 404, description = "`FLAG_NOT_FOUND`.", body = OfrepError),
    )
)]
pub async fn evaluate_flag(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(key): ApiPath<String>,
    body: Bytes,
) -> Response {
    let request = match assignment_request(Some(&key), &body) {
        Ok(request) => request,
        Err(e) => return e.into_response(),
    };
    let answer = async {
        let target = state
            .assignment_target(&caller, &ScopeParams::default(), &key)
            .await?;
        let view = state.assign(&target, &request).await?;
        Ok::<_, AppError>(Json(evaluation(&view)).into_response())
    };
    answer
        .await
        .unwrap_or_else(|e| assignment_failure(Some(&key), e))
}

/// `POST /ofrep/v1/evaluate/flags`
#[utoipa::path(
    post,
    path = "/ofrep/v1/evaluate/flags",
    tag = "sdk",
    summary = "OFREP: evaluate every flag",
    description = "OpenFeature Remote Evaluation Protocol, bulk: every live experiment of the \
        key's scope (as `POST /v1/assignments` serves them) as flags for the subject \
        `context.targetingKey`. Answers carry an `ETag`; `If-None-Match` with it answers 304 \
        while the subject's evaluations are unchanged.",
    security(("bearer" = ["assignments:read"])),
    params(("If-None-Match" = Option<String>, Header,
        description = "The `ETag` of a previous answer."),
        ("X-API-Key" = Option<String>, Header,
            description = "The API key, as OFREP's `ApiKeyAuth` sends it (instead of \
                `Authorization: Bearer`).")),
    request_body = OfrepRequest,
    responses(
        (status = 200, description = "Every flag's evaluation.", body = OfrepBulk,
            headers(("etag" = String, description = "The evaluations' version."))),
        (status = 304, description = "Unchanged since the `If-None-Match` ETag."),
        (status = 400, description = "`TARGETING_KEY_MISSING`, `INVALID_CONTEXT` or \
            `PARSE_ERROR`.", body = OfrepError),
    )
)]
pub async fn evaluate_flags(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let request = match assignment_request(None, &body) {
        Ok(request) => request,
        Err(e) => return e.into_response(),
    };
    let answer = async {
        let live = state
            .live_experiments(&caller, &ScopeParams::default())
            .await?;
        let all = state.assign_all(&live, &request).await?;
        let bulk = OfrepBulk {
            flags: all.assignments.iter().map(evaluation).collect(),
        };
        serde_json::to_vec(&bulk).map_err(AppError::internal)
    };
    match answer.await {
        Ok(bytes) => versioned_json(&headers, &Rendered::new(bytes)),
        Err(e) => assignment_failure(None, e),
    }
}
