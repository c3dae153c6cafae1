//! Assignment: which variant a subject sees, with its config.

use axum::Json;
use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use verdict_app::assignments::{AssignmentRequest, AssignmentView, SubjectAssignments};
use verdict_app::{AppError, Caller, ErrorCode, ScopeParams};

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
/// The header an anonymous visitor's id may come in (the `anon_id` unit's).
const ANON_ID_HEADER: &str = "x-anon-id";

/// The `x-anon-id` header's value; a value that is not UTF-8 is refused.
fn anon_header(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    headers
        .get(ANON_ID_HEADER)
        .map(|v| {
            v.to_str().map(str::to_owned).map_err(|_| {
                ApiError::from(AppError::invalid_field(
                    "x-anon-id",
                    "must be printable ASCII text",
                ))
            })
        })
        .transpose()
}

fn assignment_query(query: Option<String>) -> Result<(AssignmentRequest, ScopeParams), ApiError> {
    let mut request = AssignmentRequest {
        subject_id: None,
        anon_id: None,
        user_id: None,
        org_id: None,
        attributes: Map::new(),
    };
    let attributes = &mut request.attributes;
    let mut scope = ScopeParams::default();
    let query = query.unwrap_or_default();
    crate::extract::check_utf8_query(&query)?;
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        match k.as_ref() {
            "subject_id" => request.subject_id = Some(v.into_owned()),
            "anon_id" => request.anon_id = Some(v.into_owned()),
            "user_id" => request.user_id = Some(v.into_owned()),
            "org_id" => request.org_id = Some(v.into_owned()),
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
                        "message": "expected subject_id, anon_id, user_id, org_id, attr.<name>, \
                            environment or organization"
                    })])
                    .into());
                }
            },
        }
    }
    Ok((request, scope))
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
        ("subject_id" = Option<String>, Query, description = "The subject (1 to 256 bytes), \
            for experiments whose `assignment.unit` is `subject_id` (the default), and for \
            others when the request lacks that unit's id."),
        ("anon_id" = Option<String>, Query,
            description = "An anonymous visitor's id (unit `anon_id`; or the `x-anon-id` header)."),
        ("user_id" = Option<String>, Query,
            description = "A signed-in user's id (unit `user_id`; default: the subject of the \
                caller's JWT)."),
        ("org_id" = Option<String>, Query,
            description = "An organization's id (unit `org_id`; default: the organization the \
                request acts in)."),
        ("x-anon-id" = Option<String>, Header,
            description = "An anonymous visitor's id (unit `anon_id`)."),
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
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let (request, scope) = assignment_query(query)?;
    let request = request.with_anon_header(anon_header(&headers)?);
    let experiment = state.assignment_target(&caller, &scope, &key).await?;
    let view = state.assign(&experiment, &request).await?;
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
    params(("key" = String, Path, description = "The experiment key or id."), ScopeParams,
        ("x-anon-id" = Option<String>, Header,
            description = "An anonymous visitor's id (unit `anon_id`), unless the body gives \
                `anon_id`.")),
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
    headers: HeaderMap,
    ApiQuery(scope): ApiQuery<ScopeParams>,
    ApiJson(body): ApiJson<AssignmentRequest>,
) -> Result<Response, ApiError> {
    let body = body.with_anon_header(anon_header(&headers)?);
    let experiment = state.assignment_target(&caller, &scope, &key).await?;
    let view = state.assign(&experiment, &body).await?;
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
    params(ScopeParams,
        ("x-anon-id" = Option<String>, Header,
            description = "An anonymous visitor's id (unit `anon_id`), unless the body gives \
                `anon_id`.")),
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
    headers: HeaderMap,
    ApiQuery(scope): ApiQuery<ScopeParams>,
    ApiJson(body): ApiJson<AssignmentRequest>,
) -> Result<Response, ApiError> {
    let body = body.with_anon_header(anon_header(&headers)?);
    let live = state.live_experiments(&caller, &scope).await?;
    let answer = state.assign_all(&live, &body).await?;
    Ok(Json(answer).into_response())
}
