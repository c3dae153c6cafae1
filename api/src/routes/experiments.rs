//! `/v1/experiments`: create, read, list, edit, lifecycle, manual winner, QA overrides,
//! audit.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use verdict_app::experiments::{
    DeleteQuery, DeletedExperiment, ExperimentPatch, ForcedAssignment, ForcedList, ForcedVariant,
    ListParams, ScopedPageParams, StatusChangeResult, StatusRequest, VariantsUpdate,
    WinnerOverride,
};
use verdict_app::{Caller, Paginated, ScopeParams};
use verdict_domain::{Experiment, ExperimentInput, Status};
use verdict_store::AuditEntry;

use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::openapi::ErrorBody;
use crate::routes::snapshots::changed;
use crate::state::AppState;

pub fn routes(router: OpenApiRouter<AppState>) -> OpenApiRouter<AppState> {
    router
        .routes(routes!(create, list))
        .routes(routes!(get, update, delete))
        .routes(routes!(put_variants))
        .routes(routes!(set_status))
        .routes(routes!(activate))
        // One path: the read (results) and the manual winner share it.
        .routes(routes!(super::results::winner, override_winner))
        .routes(routes!(put_forced, delete_forced))
        .routes(routes!(list_forced))
        .routes(routes!(audit))
}

#[utoipa::path(
    post,
    path = "/v1/experiments",
    tag = "experiments",
    operation_id = "create_experiment",
    summary = "Create an experiment",
    description = "The experiment starts as a `draft` in the caller's environment (admin keys may name \
        another with `environment` / `organization`). Weights default to an equal split; \
        every invalid field is reported at once.",
    security(("bearer" = ["experiments:write"])),
    params(ScopeParams),
    request_body = ExperimentInput,
    responses(
        (status = 201, description = "Created (a draft).", body = Experiment),
        (status = 404, description = "`environment_not_found`.", body = ErrorBody),
        (status = 409, description = "`experiment_exists`: the key is taken in this scope.",
            body = ErrorBody),
        (status = 422, description = "`invalid_body` or `validation_failed`.", body = ErrorBody),
    )
)]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(scope): ApiQuery<ScopeParams>,
    ApiJson(input): ApiJson<ExperimentInput>,
) -> Result<(StatusCode, (HeaderMap, Json<Experiment>)), ApiError> {
    let created = state.create_experiment(&caller, &scope, input).await?;
    Ok((StatusCode::CREATED, changed(created)))
}

#[utoipa::path(
    get,
    path = "/v1/experiments/{key}",
    tag = "experiments",
    operation_id = "get_experiment",
    summary = "Get an experiment",
    security(("bearer" = ["experiments:read"])),
    params(("key" = String, Path, description = "The experiment key or id."), ScopeParams),
    responses(
        (status = 200, description = "The experiment.", body = Experiment),
        (status = 404, description = "`experiment_not_found`.", body = ErrorBody),
    )
)]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(key): ApiPath<String>,
    ApiQuery(scope): ApiQuery<ScopeParams>,
) -> Result<Json<Experiment>, ApiError> {
    Ok(Json(state.experiment(&caller, &scope, &key).await?))
}

#[utoipa::path(
    get,
    path = "/v1/experiments",
    tag = "experiments",
    operation_id = "list_experiments",
    summary = "List experiments",
    description = "Lists the scope's experiments, optionally of one `status`.",
    security(("bearer" = ["experiments:read"])),
    params(ListParams),
    responses(
        (status = 200, description = "A page of experiments.", body = Paginated<Experiment>),
        (status = 400, description = "`invalid_query` (e.g. an unknown status) or \
            `invalid_pagination`.", body = ErrorBody),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(params): ApiQuery<ListParams>,
) -> Result<Json<Paginated<Experiment>>, ApiError> {
    Ok(Json(state.list_experiments(&caller, params).await?))
}

#[utoipa::path(
    patch,
    path = "/v1/experiments/{key}",
    tag = "experiments",
    operation_id = "update_experiment",
    summary = "Update an experiment",
    description = "Optimistic: send the `version` you read; a stale one answers 409 \
        `version_conflict`. Status and winner change through their own routes; variants \
        change here only while a draft (then through `PUT …/variants`).",
    security(("bearer" = ["experiments:write"])),
    params(("key" = String, Path, description = "The experiment key or id."), ScopeParams),
    request_body = ExperimentPatch,
    responses(
        (status = 200, description = "The updated experiment (its `version` incremented).",
            body = Experiment),
        (status = 404, description = "`experiment_not_found`.", body = ErrorBody),
        (status = 409, description = "`version_conflict`, `experiment_running` (variants of a \
            started experiment) or `experiment_exists`.", body = ErrorBody),
        (status = 422, description = "`invalid_body` or `validation_failed`.", body = ErrorBody),
    )
)]
pub async fn update(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(key): ApiPath<String>,
    ApiQuery(scope): ApiQuery<ScopeParams>,
    ApiJson(patch): ApiJson<ExperimentPatch>,
) -> Result<(HeaderMap, Json<Experiment>), ApiError> {
    Ok(changed(
        state
            .update_experiment(&caller, &scope, &key, patch)
            .await?,
    ))
}

#[utoipa::path(
    delete,
    path = "/v1/experiments/{key}",
    tag = "experiments",
    operation_id = "delete_experiment",
    summary = "Delete an experiment",
    description = "Refused while the experiment serves subjects (running or paused) unless \
        `force=true`. The definition goes at once (its key is free again); its raw events, \
        rollups, assignments, QA overrides and evaluation state are removed by the retention \
        job in bounded batches. The deletion is audited; the log stays readable at \
        `GET /v1/audit?subject=experiment:<id>`.",
    security(("bearer" = ["experiments:write"])),
    params(("key" = String, Path, description = "The experiment key or id."), DeleteQuery),
    responses(
        (status = 200, description = "Deleted; its data is being removed.",
            body = DeletedExperiment),
        (status = 404, description = "`experiment_not_found`.", body = ErrorBody),
        (status = 409, description = "`experiment_running` (running or paused, without \
            `force=true`) or `version_conflict` (changed meanwhile).", body = ErrorBody),
    )
)]
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(key): ApiPath<String>,
    ApiQuery(query): ApiQuery<DeleteQuery>,
) -> Result<(HeaderMap, Json<DeletedExperiment>), ApiError> {
    Ok(changed(
        state.delete_experiment(&caller, &key, query).await?,
    ))
}

/// `PUT /v1/experiments/{key}/variants`: change variants and weights (or explicit ranges)
/// in any status.
#[utoipa::path(
    put,
    path = "/v1/experiments/{key}/variants",
    tag = "experiments",
    summary = "Replace variants and weights, or their allocation ranges",
    description = "Works in any status. Stored assignments are untouched (sticky): only new \
        subjects see the new split. Once started, no variant may be removed. Explicit \
        `range`s (`[start, end)` of the hash space, on every variant or none, inside [0, 1], \
        not overlapping) replace weights and coverage as in GrowthBook: each weight becomes \
        the range's share of their total width, the coverage their total width.",
    security(("bearer" = ["experiments:write"])),
    params(("key" = String, Path, description = "The experiment key or id."), ScopeParams),
    request_body = VariantsUpdate,
    responses(
        (status = 200, description = "The updated experiment.", body = Experiment),
        (status = 404, description = "`experiment_not_found`.", body = ErrorBody),
        (status = 409, description = "`version_conflict`.", body = ErrorBody),
        (status = 422, description = "`invalid_body` or `validation_failed`.", body = ErrorBody),
    )
)]
pub async fn put_variants(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(key): ApiPath<String>,
    ApiQuery(scope): ApiQuery<ScopeParams>,
    ApiJson(body): ApiJson<VariantsUpdate>,
) -> Result<(HeaderMap, Json<Experiment>), ApiError> {
    Ok(changed(
        state.put_variants(&caller, &scope, &key, body).await?,
    ))
}

#[utoipa::path(
    post,
    path = "/v1/experiments/{key}/status",
    tag = "experiments",
    summary = "Change an experiment's status",
    description = "`draft → running ⇄ paused → completed`, any → `archived`. Idempotent: \
        already there answers `changed: false`.",
    security(("bearer" = ["experiments:write"])),
    params(("key" = String, Path, description = "The experiment key or id."), ScopeParams),
    request_body = StatusRequest,
    responses(
        (status = 200, description = "Changed, or already in that status.",
            body = StatusChangeResult),
        (status = 404, description = "`experiment_not_found`.", body = ErrorBody),
        (status = 409, description = "`invalid_transition` (`details` lists the allowed \
            statuses) or `version_conflict`.", body = ErrorBody),
        (status = 422, description = "`invalid_body` (e.g. an unknown status).", body = ErrorBody),
    )
)]
pub async fn set_status(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(key): ApiPath<String>,
    ApiQuery(scope): ApiQuery<ScopeParams>,
    ApiJson(body): ApiJson<StatusRequest>,
) -> Result<(HeaderMap, Json<StatusChangeResult>), ApiError> {
    Ok(changed(
        state
            .set_status(&caller, &scope, &key, &body.status)
            .await?,
    ))
}

#[utoipa::path(
    post,
    path = "/v1/experiments/{key}/activate",
    tag = "experiments",
    summary = "Activate an experiment",
    description = "Shorthand for setting the status to `running`; idempotent. Any body is ignored.",
    security(("bearer" = ["experiments:write"])),
    params(("key" = String, Path, description = "The experiment key or id."), ScopeParams),
    responses(
        (status = 200, description = "Running now, or already running.",
            body = StatusChangeResult),
        (status = 404, description = "`experiment_not_found`.", body = ErrorBody),
        (status = 409, description = "`invalid_transition` or `version_conflict`.",
            body = ErrorBody),
    )
)]
pub async fn activate(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(key): ApiPath<String>,
    ApiQuery(scope): ApiQuery<ScopeParams>,
) -> Result<(HeaderMap, Json<StatusChangeResult>), ApiError> {
    Ok(changed(
        state
            .transition(&caller, &scope, &key, Status::Running)
            .await?,
    ))
}

/// `POST /v1/experiments/{key}/winner`: declare a winner by hand (audited).
#[utoipa::path(
    post,
    path = "/v1/experiments/{key}/winner",
    tag = "experiments",
    summary = "Declare a winner by hand",
    description = "Audited; by default also completes a running or paused experiment.",
    security(("bearer" = ["experiments:decide"])),
    params(("key" = String, Path, description = "The experiment key or id."), ScopeParams),
    request_body = WinnerOverride,
    responses(
        (status = 200, description = "The experiment with its winner.", body = Experiment),
        (status = 404, description = "`experiment_not_found`.", body = ErrorBody),
        (status = 422, description = "`invalid_body` or `variant_not_found`.", body = ErrorBody),
    )
)]
pub async fn override_winner(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(key): ApiPath<String>,
    ApiQuery(scope): ApiQuery<ScopeParams>,
    ApiJson(body): ApiJson<WinnerOverride>,
) -> Result<(HeaderMap, Json<Experiment>), ApiError> {
    Ok(changed(
        state.override_winner(&caller, &scope, &key, body).await?,
    ))
}

/// `GET /v1/experiments/{key}/forced`: the experiment's QA overrides.
#[utoipa::path(
    get,
    path = "/v1/experiments/{key}/forced",
    tag = "experiments",
    summary = "List forced variants",
    description = "The experiment's QA overrides, by subject (at most 500).",
    security(("bearer" = ["experiments:read"])),
    params(("key" = String, Path, description = "The experiment key or id."), ScopeParams),
    responses(
        (status = 200, description = "The overrides.", body = ForcedList),
        (status = 404, description = "`experiment_not_found`.", body = ErrorBody),
    )
)]
pub async fn list_forced(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(key): ApiPath<String>,
    ApiQuery(scope): ApiQuery<ScopeParams>,
) -> Result<Json<ForcedList>, ApiError> {
    Ok(Json(state.forced_variants(&caller, &scope, &key).await?))
}

/// `PUT /v1/experiments/{key}/forced/{subject}`: always serve `variant` to this subject.
#[utoipa::path(
    put,
    path = "/v1/experiments/{key}/forced/{subject}",
    tag = "experiments",
    summary = "Force a subject's variant",
    description = "A QA override: the subject always sees `variant`, whatever the split.",
    security(("bearer" = ["experiments:write"])),
    params(("key" = String, Path, description = "The experiment key or id."),
        ("subject" = String, Path, description = "The subject id."),
        ScopeParams),
    request_body = ForcedVariant,
    responses(
        (status = 200, description = "The override.", body = ForcedAssignment),
        (status = 404, description = "`experiment_not_found`.", body = ErrorBody),
        (status = 422, description = "`invalid_body` or `variant_not_found`.", body = ErrorBody),
    )
)]
pub async fn put_forced(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((key, subject)): ApiPath<(String, String)>,
    ApiQuery(scope): ApiQuery<ScopeParams>,
    ApiJson(body): ApiJson<ForcedVariant>,
) -> Result<Json<ForcedAssignment>, ApiError> {
    let forced = state
        .force_variant(&caller, &scope, &key, &subject, body)
        .await?;
    Ok(Json(forced))
}

#[utoipa::path(
    delete,
    path = "/v1/experiments/{key}/forced/{subject}",
    tag = "experiments",
    summary = "Remove a forced variant",
    description = "The subject goes back to normal assignment.",
    security(("bearer" = ["experiments:write"])),
    params(("key" = String, Path, description = "The experiment key or id."),
        ("subject" = String, Path, description = "The subject id."),
        ScopeParams),
    responses(
        (status = 204, description = "Removed (or there was none)."),
        (status = 404, description = "`experiment_not_found`.", body = ErrorBody),
    )
)]
pub async fn delete_forced(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((key, subject)): ApiPath<(String, String)>,
    ApiQuery(scope): ApiQuery<ScopeParams>,
) -> Result<StatusCode, ApiError> {
    state
        .unforce_variant(&caller, &scope, &key, &subject)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    get,
    path = "/v1/experiments/{key}/audit",
    tag = "experiments",
    summary = "An experiment's audit log",
    description = "Every change to the experiment, with who made it and when.",
    security(("bearer" = ["audit:read"])),
    params(("key" = String, Path, description = "The experiment key or id."), ScopedPageParams),
    responses(
        (status = 200, description = "A page of audit entries.", body = Paginated<AuditEntry>),
        (status = 404, description = "`experiment_not_found`.", body = ErrorBody),
    )
)]
pub async fn audit(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(key): ApiPath<String>,
    ApiQuery(params): ApiQuery<ScopedPageParams>,
) -> Result<Json<Paginated<AuditEntry>>, ApiError> {
    Ok(Json(state.audit(&caller, &key, params).await?))
}
