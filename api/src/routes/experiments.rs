//! Experiments: create, read, list, update, lifecycle, manual winner, QA overrides, audit.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use rand::RngCore;
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::{IntoParams, ToSchema};
use verdict_domain::experiment::{Provided, VariantInput, variants_from_input};
use verdict_domain::status::Transition;
use verdict_domain::{
    Experiment, ExperimentInput, KeyScope, Metric, PolicyMode, Problems, RetentionOverride, Scope,
    Status, Targeting, Winner, WinnerPolicy,
};
use verdict_store::{AuditEntry, ExperimentFilter, StatusChange, StoreError, WinnerChange};

use super::now;
use crate::auth::{Caller, ScopeParams};
use crate::error::{ApiError, ErrorCode};
use crate::extract::{ApiJson, ApiQuery, PageParams, paginated};
use crate::openapi::{ErrorBody, ForcedAssignment, Paginated, StatusChangeResult};
use crate::startup::AppState;

/// Find an experiment by key or id within `scope`, or 404 `experiment_not_found`.
pub async fn find(state: &AppState, scope: &Scope, key: &str) -> Result<Experiment, ApiError> {
    state
        .store
        .get_experiment(scope, key)
        .await?
        .ok_or_else(|| ApiError::experiment_not_found(key))
}

fn random_salt() -> String {
    let mut b = [0u8; 8];
    rand::rng().fill_bytes(&mut b);
    hex::encode(b)
}

#[utoipa::path(
    post,
    path = "/v1/experiments",
    tag = "experiments",
    operation_id = "create_experiment",
    summary = "Create an experiment",
    description = "Requires the `admin` scope. The experiment starts as a `draft` in the caller's environment (admin keys may name \
        another with `environment` / `organization`). Weights default to an equal split; \
        every invalid field is reported at once.",
    security(("bearer" = [])),
    params(ScopeParams),
    request_body = ExperimentInput,
    responses(
        (status = 201, description = "Created (a draft).", body = Experiment),
        (status = 400, description = "`invalid_json` or `invalid_query`.", body = ErrorBody),
        (status = 401, description = "`unauthorized`.", body = ErrorBody),
        (status = 403, description = "`forbidden`: not an admin key.", body = ErrorBody),
        (status = 404, description = "`environment_not_found`.", body = ErrorBody),
        (status = 409, description = "`experiment_exists`: the key is taken in this scope.",
            body = ErrorBody),
        (status = 413, description = "`payload_too_large`.", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`.", body = ErrorBody),
        (status = 422, description = "`invalid_body` or `validation_failed`.", body = ErrorBody),
        (status = 500, description = "`internal`.", body = ErrorBody),
        (status = 503, description = "`store_unavailable`.", body = ErrorBody),
    )
)]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(params): ApiQuery<ScopeParams>,
    ApiJson(input): ApiJson<ExperimentInput>,
) -> Result<(StatusCode, Json<Experiment>), ApiError> {
    caller.require(KeyScope::Admin)?;
    let scope = caller.scope(&params)?;
    let experiment = create_experiment(&state, scope, input, &caller.actor()).await?;
    Ok((StatusCode::CREATED, Json(experiment)))
}

pub async fn create_experiment(
    state: &AppState,
    scope: Scope,
    input: ExperimentInput,
    actor: &str,
) -> Result<Experiment, ApiError> {
    if state
        .store
        .get_environment(&scope.environment)
        .await?
        .is_none()
    {
        return Err(ApiError::new(
            ErrorCode::EnvironmentNotFound,
            format!("no environment '{}'; create it first", scope.environment),
        ));
    }
    let provided = Provided {
        id: uuid::Uuid::now_v7().to_string(),
        salt: random_salt(),
        now: now(),
    };
    let experiment = input
        .into_experiment(scope, provided)
        .map_err(ApiError::validation)?;
    check_audience_exists(state, &experiment).await?;
    match state.store.create_experiment(&experiment, actor).await {
        Ok(()) => Ok(experiment),
        Err(StoreError::Conflict(msg)) => Err(ApiError::new(ErrorCode::ExperimentExists, msg)),
        Err(e) => Err(e.into()),
    }
}

async fn check_audience_exists(state: &AppState, e: &Experiment) -> Result<(), ApiError> {
    if let Some(a) = &e.audience
        && state
            .store
            .get_audience(&e.scope.environment, a)
            .await?
            .is_none()
    {
        let mut p = Problems::new();
        p.push(
            "audience",
            format!("no audience '{a}' in environment '{}'", e.scope.environment),
        );
        return Err(ApiError::validation(p));
    }
    Ok(())
}

#[utoipa::path(
    get,
    path = "/v1/experiments/{key}",
    tag = "experiments",
    operation_id = "get_experiment",
    summary = "Get an experiment",
    description = "Requires the `admin` scope.",
    security(("bearer" = [])),
    params(("key" = String, Path, description = "The experiment key or id."), ScopeParams),
    responses(
        (status = 200, description = "The experiment.", body = Experiment),
        (status = 400, description = "`invalid_query`.", body = ErrorBody),
        (status = 401, description = "`unauthorized`.", body = ErrorBody),
        (status = 403, description = "`forbidden`: not an admin key.", body = ErrorBody),
        (status = 404, description = "`experiment_not_found`.", body = ErrorBody),
        (status = 500, description = "`internal`.", body = ErrorBody),
        (status = 503, description = "`store_unavailable`.", body = ErrorBody),
    )
)]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(key): Path<String>,
    ApiQuery(params): ApiQuery<ScopeParams>,
) -> Result<Json<Experiment>, ApiError> {
    caller.require(KeyScope::Admin)?;
    Ok(Json(find(&state, &caller.scope(&params)?, &key).await?))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    /// List this environment instead of the key's (admin keys only).
    environment: Option<String>,
    /// List this organization instead of the key's (admin keys only).
    organization: Option<String>,
    /// Only experiments in this status.
    #[param(value_type = Option<Status>)]
    status: Option<String>,
    /// Page number, from 1 (default 1; give with `page_size`).
    #[param(minimum = 1)]
    page: Option<u32>,
    /// Items per page, 1 to 100 (default 20; give with `page`).
    #[param(minimum = 1, maximum = 100)]
    page_size: Option<u32>,
}

#[utoipa::path(
    get,
    path = "/v1/experiments",
    tag = "experiments",
    operation_id = "list_experiments",
    summary = "List experiments",
    description = "Requires the `admin` scope. Lists the scope's experiments, optionally of one `status`.",
    security(("bearer" = [])),
    params(ListParams),
    responses(
        (status = 200, description = "A page of experiments.", body = Paginated<Experiment>),
        (status = 400, description = "`invalid_query` (e.g. an unknown status) or \
            `invalid_pagination`.", body = ErrorBody),
        (status = 401, description = "`unauthorized`.", body = ErrorBody),
        (status = 403, description = "`forbidden`: not an admin key.", body = ErrorBody),
        (status = 500, description = "`internal`.", body = ErrorBody),
        (status = 503, description = "`store_unavailable`.", body = ErrorBody),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(params): ApiQuery<ListParams>,
) -> Result<Json<Value>, ApiError> {
    caller.require(KeyScope::Admin)?;
    let page = PageParams {
        page: params.page,
        page_size: params.page_size,
    }
    .to_request()?;
    let status = match params.status.as_deref() {
        None => None,
        Some(s) => Some(Status::parse(s).ok_or_else(|| {
            ApiError::new(ErrorCode::InvalidQuery, format!("unknown status '{s}'")).with_details(
                vec![json!({"field": "status", "message": "one of draft, running, paused, completed, archived"})],
            )
        })?),
    };
    let scope = caller.scope(&ScopeParams {
        environment: params.environment,
        organization: params.organization,
    })?;
    let filter = ExperimentFilter {
        environment: Some(scope.environment),
        organization: scope.organization.map(Some),
        status,
    };
    let found = state.store.list_experiments(&filter, page).await?;
    Ok(Json(paginated(found, page)))
}

/// Fields an update may change; `version` is the one the client read.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExperimentPatch {
    pub version: u64,
    pub name: Option<String>,
    pub description: Option<String>,
    pub coverage: Option<f64>,
    pub targeting: Option<Targeting>,
    /// `null` removes the audience.
    #[serde(default, deserialize_with = "double_option")]
    pub audience: Option<Option<String>>,
    pub primary_metric: Option<Metric>,
    pub secondary_metrics: Option<Vec<Metric>>,
    pub guardrail_metrics: Option<Vec<Metric>>,
    #[serde(default, deserialize_with = "double_option")]
    pub exposure_event: Option<Option<String>>,
    pub policy: Option<WinnerPolicy>,
    pub retention: Option<RetentionOverride>,
    /// Only while a draft; running experiments use `PUT …/variants`.
    pub variants: Option<Vec<VariantInput>>,
}

fn double_option<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

#[utoipa::path(
    patch,
    path = "/v1/experiments/{key}",
    tag = "experiments",
    operation_id = "update_experiment",
    summary = "Update an experiment",
    description = "Requires the `admin` scope. Optimistic: send the `version` you read; a stale one answers 409 \
        `version_conflict`. Status and winner change through their own routes; variants \
        change here only while a draft (then through `PUT …/variants`).",
    security(("bearer" = [])),
    params(("key" = String, Path, description = "The experiment key or id."), ScopeParams),
    request_body = ExperimentPatch,
    responses(
        (status = 200, description = "The updated experiment (its `version` incremented).",
            body = Experiment),
        (status = 400, description = "`invalid_json` or `invalid_query`.", body = ErrorBody),
        (status = 401, description = "`unauthorized`.", body = ErrorBody),
        (status = 403, description = "`forbidden`: not an admin key.", body = ErrorBody),
        (status = 404, description = "`experiment_not_found`.", body = ErrorBody),
        (status = 409, description = "`version_conflict`, `experiment_running` (variants of a \
            started experiment) or `experiment_exists`.", body = ErrorBody),
        (status = 413, description = "`payload_too_large`.", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`.", body = ErrorBody),
        (status = 422, description = "`invalid_body` or `validation_failed`.", body = ErrorBody),
        (status = 500, description = "`internal`.", body = ErrorBody),
        (status = 503, description = "`store_unavailable`.", body = ErrorBody),
    )
)]
pub async fn update(
    State(state): State<AppState>,
    caller: Caller,
    Path(key): Path<String>,
    ApiQuery(params): ApiQuery<ScopeParams>,
    ApiJson(patch): ApiJson<ExperimentPatch>,
) -> Result<Json<Experiment>, ApiError> {
    caller.require(KeyScope::Admin)?;
    let current = find(&state, &caller.scope(&params)?, &key).await?;
    if patch.variants.is_some() && current.status != Status::Draft {
        return Err(ApiError::new(
            ErrorCode::ExperimentRunning,
            "variants of a started experiment change only through PUT /v1/experiments/{key}/variants",
        ));
    }
    let mut next = current;
    next.version = patch.version;
    next.updated_at = now();
    if let Some(v) = patch.name {
        next.name = v;
    }
    if let Some(v) = patch.description {
        next.description = v;
    }
    if let Some(v) = patch.coverage {
        next.coverage = v;
    }
    if let Some(v) = patch.targeting {
        next.targeting = v;
    }
    if let Some(v) = patch.audience {
        next.audience = v;
    }
    if let Some(v) = patch.primary_metric {
        next.primary_metric = v;
    }
    if let Some(v) = patch.secondary_metrics {
        next.secondary_metrics = v;
    }
    if let Some(v) = patch.guardrail_metrics {
        next.guardrail_metrics = v;
    }
    if let Some(v) = patch.exposure_event {
        next.exposure_event = v;
    }
    if let Some(v) = patch.policy {
        next.policy = v;
    }
    if let Some(v) = patch.retention {
        next.retention = v;
    }
    let mut problems = Problems::new();
    if let Some(v) = patch.variants {
        next.variants = variants_from_input(v, &mut problems);
    }
    save(&state, next, problems, &caller.actor())
        .await
        .map(Json)
}

/// Validate and store an edited experiment (optimistic on `version`); `problems` already
/// found in the request are reported with the experiment's own.
async fn save(
    state: &AppState,
    next: Experiment,
    mut problems: Problems,
    actor: &str,
) -> Result<Experiment, ApiError> {
    for problem in next.check() {
        problems.push(problem.field, problem.message);
    }
    if !problems.is_empty() {
        return Err(ApiError::validation(problems));
    }
    check_audience_exists(state, &next).await?;
    match state.store.update_experiment(&next, actor).await {
        Ok(e) => Ok(e),
        Err(StoreError::Conflict(msg)) => Err(ApiError::new(ErrorCode::ExperimentExists, msg)),
        Err(StoreError::NotFound) => Err(ApiError::experiment_not_found(&next.key)),
        Err(e) => Err(e.into()),
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VariantsUpdate {
    pub version: u64,
    pub variants: Vec<VariantInput>,
}

/// `PUT /v1/experiments/{key}/variants`: change variants and weights in any status. Stored
/// assignments are untouched (sticky); only new subjects see the new split. Variants that
/// subjects may already hold cannot be removed once the experiment has started.
#[utoipa::path(
    put,
    path = "/v1/experiments/{key}/variants",
    tag = "experiments",
    summary = "Replace variants and weights",
    description = "Requires the `admin` scope. Works in any status. Stored assignments are untouched (sticky): only new \
        subjects see the new split. Once started, no variant may be removed.",
    security(("bearer" = [])),
    params(("key" = String, Path, description = "The experiment key or id."), ScopeParams),
    request_body = VariantsUpdate,
    responses(
        (status = 200, description = "The updated experiment.", body = Experiment),
        (status = 400, description = "`invalid_json` or `invalid_query`.", body = ErrorBody),
        (status = 401, description = "`unauthorized`.", body = ErrorBody),
        (status = 403, description = "`forbidden`: not an admin key.", body = ErrorBody),
        (status = 404, description = "`experiment_not_found`.", body = ErrorBody),
        (status = 409, description = "`version_conflict`.", body = ErrorBody),
        (status = 413, description = "`payload_too_large`.", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`.", body = ErrorBody),
        (status = 422, description = "`invalid_body` or `validation_failed`.", body = ErrorBody),
        (status = 500, description = "`internal`.", body = ErrorBody),
        (status = 503, description = "`store_unavailable`.", body = ErrorBody),
    )
)]
pub async fn put_variants(
    State(state): State<AppState>,
    caller: Caller,
    Path(key): Path<String>,
    ApiQuery(params): ApiQuery<ScopeParams>,
    ApiJson(body): ApiJson<VariantsUpdate>,
) -> Result<Json<Experiment>, ApiError> {
    caller.require(KeyScope::Admin)?;
    let current = find(&state, &caller.scope(&params)?, &key).await?;
    let mut problems = Problems::new();
    let variants = variants_from_input(body.variants, &mut problems);
    if current.started_at.is_some() {
        for old in &current.variants {
            if !variants.iter().any(|v| v.key == old.key) {
                problems.push(
                    "variants",
                    format!(
                        "variant '{}' may hold assigned subjects and cannot be removed",
                        old.key
                    ),
                );
            }
        }
    }
    let mut next = current;
    next.variants = variants;
    next.version = body.version;
    next.updated_at = now();
    save(&state, next, problems, &caller.actor())
        .await
        .map(Json)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StatusRequest {
    /// The status to move to.
    #[schema(value_type = Status)]
    pub status: String,
}

#[utoipa::path(
    post,
    path = "/v1/experiments/{key}/status",
    tag = "experiments",
    summary = "Change an experiment's status",
    description = "Requires the `admin` scope. `draft → running ⇄ paused → completed`, any → `archived`. Idempotent: \
        already there answers `changed: false`.",
    security(("bearer" = [])),
    params(("key" = String, Path, description = "The experiment key or id."), ScopeParams),
    request_body = StatusRequest,
    responses(
        (status = 200, description = "Changed, or already in that status.",
            body = StatusChangeResult),
        (status = 400, description = "`invalid_json` or `invalid_query`.", body = ErrorBody),
        (status = 401, description = "`unauthorized`.", body = ErrorBody),
        (status = 403, description = "`forbidden`: not an admin key.", body = ErrorBody),
        (status = 404, description = "`experiment_not_found`.", body = ErrorBody),
        (status = 409, description = "`invalid_transition` (`details` lists the allowed \
            statuses) or `version_conflict`.", body = ErrorBody),
        (status = 413, description = "`payload_too_large`.", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`.", body = ErrorBody),
        (status = 422, description = "`invalid_body` (e.g. an unknown status).", body = ErrorBody),
        (status = 500, description = "`internal`.", body = ErrorBody),
        (status = 503, description = "`store_unavailable`.", body = ErrorBody),
    )
)]
pub async fn set_status(
    State(state): State<AppState>,
    caller: Caller,
    Path(key): Path<String>,
    ApiQuery(params): ApiQuery<ScopeParams>,
    ApiJson(body): ApiJson<StatusRequest>,
) -> Result<Json<Value>, ApiError> {
    caller.require(KeyScope::Admin)?;
    let to = Status::parse(&body.status).ok_or_else(|| {
        ApiError::new(
            ErrorCode::InvalidBody,
            format!("unknown status '{}'", body.status),
        )
        .with_details(vec![json!({
            "field": "status",
            "message": "one of draft, running, paused, completed, archived"
        })])
    })?;
    let scope = caller.scope(&params)?;
    transition(&state, &scope, &key, to, &caller.actor())
        .await
        .map(Json)
}

#[utoipa::path(
    post,
    path = "/v1/experiments/{key}/activate",
    tag = "experiments",
    summary = "Activate an experiment",
    description = "Requires the `admin` scope. Shorthand for setting the status to `running`; idempotent. Any body is ignored.",
    security(("bearer" = [])),
    params(("key" = String, Path, description = "The experiment key or id."), ScopeParams),
    responses(
        (status = 200, description = "Running now, or already running.",
            body = StatusChangeResult),
        (status = 400, description = "`invalid_query`.", body = ErrorBody),
        (status = 401, description = "`unauthorized`.", body = ErrorBody),
        (status = 403, description = "`forbidden`: not an admin key.", body = ErrorBody),
        (status = 404, description = "`experiment_not_found`.", body = ErrorBody),
        (status = 409, description = "`invalid_transition` or `version_conflict`.",
            body = ErrorBody),
        (status = 500, description = "`internal`.", body = ErrorBody),
        (status = 503, description = "`store_unavailable`.", body = ErrorBody),
    )
)]
pub async fn activate(
    State(state): State<AppState>,
    caller: Caller,
    Path(key): Path<String>,
    ApiQuery(params): ApiQuery<ScopeParams>,
) -> Result<Json<Value>, ApiError> {
    caller.require(KeyScope::Admin)?;
    let scope = caller.scope(&params)?;
    transition(&state, &scope, &key, Status::Running, &caller.actor())
        .await
        .map(Json)
}

/// Move an experiment to `to`. Idempotent: already there → `changed: false`. Concurrent
/// callers race on the store's compare-and-set; exactly one transitions, the others re-read
/// and answer `changed: false` (or the refusal the new status implies).
pub async fn transition(
    state: &AppState,
    scope: &Scope,
    key: &str,
    to: Status,
    actor: &str,
) -> Result<Value, ApiError> {
    for _ in 0..3 {
        let current = find(state, scope, key).await?;
        let change = match current.status.transition_to(to) {
            Ok(Transition::Unchanged) => {
                return Ok(json!({"changed": false, "experiment": current}));
            }
            Ok(Transition::Change { from, to }) => StatusChange {
                experiment_id: current.id.clone(),
                from,
                to,
                at: now(),
                actor: actor.to_owned(),
            },
            Err(e) => {
                return Err(ApiError::new(ErrorCode::InvalidTransition, e.to_string())
                    .with_details(vec![json!({
                        "from": e.from, "to": e.to, "allowed": e.allowed
                    })]));
            }
        };
        if let Some(updated) = state.store.transition_status(&change).await? {
            verdict_cache::announce(state.snapshots.cache(), &current, &updated).await;
            return Ok(json!({"changed": true, "experiment": updated}));
        }
        // Lost the race: re-read and decide again.
    }
    Err(ApiError::new(
        ErrorCode::VersionConflict,
        "the experiment keeps changing; retry",
    ))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WinnerOverride {
    pub variant: String,
    /// Also complete a running or paused experiment (default true).
    #[serde(default = "yes")]
    pub complete: bool,
    #[serde(default)]
    pub reason: Option<String>,
}

fn yes() -> bool {
    true
}

/// `POST /v1/experiments/{key}/winner`: declare a winner by hand (audited).
#[utoipa::path(
    post,
    path = "/v1/experiments/{key}/winner",
    tag = "experiments",
    summary = "Declare a winner by hand",
    description = "Requires the `admin` scope. Audited; by default also completes a running or paused experiment.",
    security(("bearer" = [])),
    params(("key" = String, Path, description = "The experiment key or id."), ScopeParams),
    request_body = WinnerOverride,
    responses(
        (status = 200, description = "The experiment with its winner.", body = Experiment),
        (status = 400, description = "`invalid_json` or `invalid_query`.", body = ErrorBody),
        (status = 401, description = "`unauthorized`.", body = ErrorBody),
        (status = 403, description = "`forbidden`: not an admin key.", body = ErrorBody),
        (status = 404, description = "`experiment_not_found`.", body = ErrorBody),
        (status = 413, description = "`payload_too_large`.", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`.", body = ErrorBody),
        (status = 422, description = "`invalid_body` or `variant_not_found`.", body = ErrorBody),
        (status = 500, description = "`internal`.", body = ErrorBody),
        (status = 503, description = "`store_unavailable`.", body = ErrorBody),
    )
)]
pub async fn override_winner(
    State(state): State<AppState>,
    caller: Caller,
    Path(key): Path<String>,
    ApiQuery(params): ApiQuery<ScopeParams>,
    ApiJson(body): ApiJson<WinnerOverride>,
) -> Result<Json<Experiment>, ApiError> {
    caller.require(KeyScope::Admin)?;
    let e = find(&state, &caller.scope(&params)?, &key).await?;
    if e.variant(&body.variant).is_none() {
        return Err(ApiError::new(
            ErrorCode::VariantNotFound,
            format!("'{}' is not a variant of '{}'", body.variant, e.key),
        ));
    }
    let change = WinnerChange {
        experiment_id: e.id.clone(),
        winner: Winner {
            variant: body.variant,
            decided_at: now(),
            source: PolicyMode::Manual,
            details: json!({"reason": body.reason, "by": caller.actor()}),
        },
        complete: body.complete,
        actor: caller.actor(),
        expected_version: None,
    };
    let updated = state.store.set_winner(&change).await?;
    verdict_cache::announce(state.snapshots.cache(), &e, &updated).await;
    Ok(Json(updated))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ForcedVariant {
    pub variant: String,
}

/// `PUT /v1/experiments/{key}/forced/{subject}`: always serve `variant` to this subject.
#[utoipa::path(
    put,
    path = "/v1/experiments/{key}/forced/{subject}",
    tag = "experiments",
    summary = "Force a subject's variant",
    description = "Requires the `admin` scope. A QA override: the subject always sees `variant`, whatever the split.",
    security(("bearer" = [])),
    params(("key" = String, Path, description = "The experiment key or id."),
        ("subject" = String, Path, description = "The subject id."),
        ScopeParams),
    request_body = ForcedVariant,
    responses(
        (status = 200, description = "The override.", body = ForcedAssignment),
        (status = 400, description = "`invalid_json` or `invalid_query`.", body = ErrorBody),
        (status = 401, description = "`unauthorized`.", body = ErrorBody),
        (status = 403, description = "`forbidden`: not an admin key.", body = ErrorBody),
        (status = 404, description = "`experiment_not_found`.", body = ErrorBody),
        (status = 413, description = "`payload_too_large`.", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`.", body = ErrorBody),
        (status = 422, description = "`invalid_body` or `variant_not_found`.", body = ErrorBody),
        (status = 500, description = "`internal`.", body = ErrorBody),
        (status = 503, description = "`store_unavailable`.", body = ErrorBody),
    )
)]
pub async fn put_forced(
    State(state): State<AppState>,
    caller: Caller,
    Path((key, subject)): Path<(String, String)>,
    ApiQuery(params): ApiQuery<ScopeParams>,
    ApiJson(body): ApiJson<ForcedVariant>,
) -> Result<Json<Value>, ApiError> {
    caller.require(KeyScope::Admin)?;
    let e = find(&state, &caller.scope(&params)?, &key).await?;
    if e.variant(&body.variant).is_none() {
        return Err(ApiError::new(
            ErrorCode::VariantNotFound,
            format!("'{}' is not a variant of '{}'", body.variant, e.key),
        ));
    }
    let subject_key = verdict_domain::assignment::subject_key(&e, &subject);
    state
        .store
        .set_forced_variant(&e.id, &subject_key, Some(&body.variant), &caller.actor())
        .await?;
    Ok(Json(
        json!({"experiment": e.key, "subject_id": subject, "variant": body.variant}),
    ))
}

#[utoipa::path(
    delete,
    path = "/v1/experiments/{key}/forced/{subject}",
    tag = "experiments",
    summary = "Remove a forced variant",
    description = "Requires the `admin` scope. The subject goes back to normal assignment.",
    security(("bearer" = [])),
    params(("key" = String, Path, description = "The experiment key or id."),
        ("subject" = String, Path, description = "The subject id."),
        ScopeParams),
    responses(
        (status = 204, description = "Removed (or there was none)."),
        (status = 400, description = "`invalid_query`.", body = ErrorBody),
        (status = 401, description = "`unauthorized`.", body = ErrorBody),
        (status = 403, description = "`forbidden`: not an admin key.", body = ErrorBody),
        (status = 404, description = "`experiment_not_found`.", body = ErrorBody),
        (status = 500, description = "`internal`.", body = ErrorBody),
        (status = 503, description = "`store_unavailable`.", body = ErrorBody),
    )
)]
pub async fn delete_forced(
    State(state): State<AppState>,
    caller: Caller,
    Path((key, subject)): Path<(String, String)>,
    ApiQuery(params): ApiQuery<ScopeParams>,
) -> Result<StatusCode, ApiError> {
    caller.require(KeyScope::Admin)?;
    let e = find(&state, &caller.scope(&params)?, &key).await?;
    let subject_key = verdict_domain::assignment::subject_key(&e, &subject);
    state
        .store
        .set_forced_variant(&e.id, &subject_key, None, &caller.actor())
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AuditParams {
    /// Act in this environment instead of the key's (admin keys only).
    environment: Option<String>,
    /// Act in this organization instead of the key's (admin keys only).
    organization: Option<String>,
    /// Page number, from 1 (default 1; give with `page_size`).
    #[param(minimum = 1)]
    page: Option<u32>,
    /// Items per page, 1 to 100 (default 20; give with `page`).
    #[param(minimum = 1, maximum = 100)]
    page_size: Option<u32>,
}

#[utoipa::path(
    get,
    path = "/v1/experiments/{key}/audit",
    tag = "experiments",
    summary = "An experiment's audit log",
    description = "Requires the `admin` scope. Every change to the experiment, with who made it and when.",
    security(("bearer" = [])),
    params(("key" = String, Path, description = "The experiment key or id."), AuditParams),
    responses(
        (status = 200, description = "A page of audit entries.", body = Paginated<AuditEntry>),
        (status = 400, description = "`invalid_query` or `invalid_pagination`.", body = ErrorBody),
        (status = 401, description = "`unauthorized`.", body = ErrorBody),
        (status = 403, description = "`forbidden`: not an admin key.", body = ErrorBody),
        (status = 404, description = "`experiment_not_found`.", body = ErrorBody),
        (status = 500, description = "`internal`.", body = ErrorBody),
        (status = 503, description = "`store_unavailable`.", body = ErrorBody),
    )
)]
pub async fn audit(
    State(state): State<AppState>,
    caller: Caller,
    Path(key): Path<String>,
    ApiQuery(params): ApiQuery<AuditParams>,
) -> Result<Json<Value>, ApiError> {
    caller.require(KeyScope::Admin)?;
    let page = PageParams {
        page: params.page,
        page_size: params.page_size,
    }
    .to_request()?;
    let scope = caller.scope(&ScopeParams {
        environment: params.environment,
        organization: params.organization,
    })?;
    let e = find(&state, &scope, &key).await?;
    Ok(Json(paginated(
        state.store.list_audit(&e.id, page).await?,
        page,
    )))
}
