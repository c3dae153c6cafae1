//! Assignment: which variant a subject sees, with its config.

use axum::Json;
use axum::extract::{RawQuery, State};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use verdict_app::assignments::{AssignmentRequest, AssignmentView, SubjectAssignments};
use verdict_app::{AppError, Caller, ErrorCode, ScopeParams};
use verdict_domain::targeting::Attributes;

use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::openapi::ErrorBody;
use crate::state::AppState;

pub fn routes(router: OpenApiRouter<AppState>) -> OpenApiRouter<AppState> {
    router
        .routes(routes!(get_assignment, post_assignment))
        .routes(routes!(assign_all))
}

/// The query of `GET …/assignment`: `subject_id`, `attr.<name>` attributes (strings), and
/// the scope parameters; anything else is `invalid_query`.
fn assignment_query(query: Option<String>) -> Result<(String, Attributes, ScopeParams), ApiError> {
    let mut subject = String::new();
    let mut attributes = Map::new();
    let mut scope = ScopeParams::default();
    let query = query.unwrap_or_default();
    crate::extract::check_utf8_query(&query)?;
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        match k.as_ref() {
            "subject_id" => subject = v.into_owned(),
            "environment" => scope.environment = Some(v.into_owned()),
            "organization" => scope.organization = Some(v.into_owned()),
            other => match other.strip_prefix("attr.") {
                Some(name) if !name.is_empty() => {
                    attributes.insert(name.to_owned(), Value::String(v.into_owned()));
                }
                _ => {
                    return Err(AppError::new(
                        ErrorCode::InvalidQuery,
                        format!("unknown query parameter '{other}'"),
                    )
                    .with_details(vec![json!({
                        "field": other,
                        "message": "expected subject_id, attr.<name>, environment or organization"
                    })])
                    .into());
                }
            },
        }
    }
    Ok((subject, attributes, scope))
}

/// `GET /v1/experiments/{key}/assignment?subject_id=…&attr.country=US`
#[utoipa::path(
    get,
    path = "/v1/experiments/{key}/assignment",
    tag = "assignments",
    summary = "Assign a subject (query)",
    description = "Which variant `subject_id` sees, with its config; new eligible subjects are \
        stored (sticky). Targeting attributes are query parameters `attr.<name>=<value>` \
        (string values), e.g. `attr.country=US`; any other parameter is refused.",
    security(("bearer" = ["assignments:read"])),
    params(("key" = String, Path, description = "The experiment key or id."),
        ("subject_id" = String, Query, description = "The subject (1 to 256 bytes)."),
        ("attr.{name}" = Option<String>, Query,
            description = "A targeting attribute, e.g. `attr.country=US`; repeat for more."),
        ("environment" = Option<String>, Query,
            description = "Act in this environment instead of the caller's (right `scope:any`)."),
        ("organization" = Option<String>, Query,
            description = "Act in this organization instead of the caller's (right `scope:any`).")),
    responses(
        (status = 200, description = "The subject's variant and config.", body = AssignmentView),
        (status = 404, description = "`experiment_not_found`.", body = ErrorBody),
        (status = 422, description = "`validation_failed`: missing or too long `subject_id`.",
            body = ErrorBody),
    )
)]
pub async fn get_assignment(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(key): ApiPath<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let (subject, attributes, scope) = assignment_query(query)?;
    let experiment = state.assignment_target(&caller, &scope, &key).await?;
    let view = state.assign(&experiment, &subject, &attributes).await?;
    Ok(Json(view).into_response())
}

/// `POST /v1/experiments/{key}/assignment` with `{subject_id, attributes}`.
#[utoipa::path(
    post,
    path = "/v1/experiments/{key}/assignment",
    tag = "assignments",
    summary = "Assign a subject",
    description = "Which variant `subject_id` sees, with its config; attributes may be any JSON \
        values. New eligible subjects are stored (sticky).",
    security(("bearer" = ["assignments:read"])),
    params(("key" = String, Path, description = "The experiment key or id."), ScopeParams),
    request_body = AssignmentRequest,
    responses(
        (status = 200, description = "The subject's variant and config.", body = AssignmentView),
        (status = 404, description = "`experiment_not_found`.", body = ErrorBody),
        (status = 422, description = "`invalid_body` or `validation_failed`.", body = ErrorBody),
    )
)]
pub async fn post_assignment(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(key): ApiPath<String>,
    ApiQuery(scope): ApiQuery<ScopeParams>,
    ApiJson(body): ApiJson<AssignmentRequest>,
) -> Result<Response, ApiError> {
    let experiment = state.assignment_target(&caller, &scope, &key).await?;
    let view = state
        .assign(&experiment, &body.subject_id, &body.attributes)
        .await?;
    Ok(Json(view).into_response())
}

/// `POST /v1/assignments`: every live experiment of the caller's scope for one subject.
#[utoipa::path(
    post,
    path = "/v1/assignments",
    tag = "assignments",
    summary = "Assign a subject in every live experiment",
    description = "Every running or paused experiment of the scope, and every \
        completed one with a winner: paused ones serve stored assignments only, completed ones the winner's config to everyone \
        (`reason: winner`), so an app reading its configs in bulk keeps a decided winner rolled out. Drafts, completed \
        experiments without a winner and archived ones are left out.",
    security(("bearer" = ["assignments:read"])),
    params(ScopeParams),
    request_body = AssignmentRequest,
    responses(
        (status = 200, description = "One assignment per live experiment.",
            body = SubjectAssignments),
        (status = 422, description = "`invalid_body` or `validation_failed`.", body = ErrorBody),
    )
)]
pub async fn assign_all(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(scope): ApiQuery<ScopeParams>,
    ApiJson(body): ApiJson<AssignmentRequest>,
) -> Result<Response, ApiError> {
    let live = state.live_experiments(&caller, &scope).await?;
    let answer = state.assign_all(&live, &body).await?;
    Ok(Json(answer).into_response())
}
