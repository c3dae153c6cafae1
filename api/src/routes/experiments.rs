//! Experiments: create, read, list, update, lifecycle, manual winner, QA overrides, audit.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use rand::RngCore;
use serde::Deserialize;
use serde_json::{Value, json};
use verdict_domain::experiment::{Provided, VariantInput};
use verdict_domain::status::Transition;
use verdict_domain::{
    Experiment, ExperimentInput, KeyScope, Metric, PolicyMode, Problems, Scope, Status, Targeting,
    Winner, WinnerPolicy,
};
use verdict_store::{ExperimentFilter, StatusChange, StoreError, WinnerChange};

use super::now;
use crate::auth::{Caller, ScopeParams};
use crate::error::{ApiError, ErrorCode};
use crate::extract::{ApiJson, ApiQuery, PageParams, paginated};
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

pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(key): Path<String>,
    ApiQuery(params): ApiQuery<ScopeParams>,
) -> Result<Json<Experiment>, ApiError> {
    caller.require(KeyScope::Admin)?;
    Ok(Json(find(&state, &caller.scope(&params)?, &key).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    environment: Option<String>,
    organization: Option<String>,
    status: Option<String>,
    page: Option<u32>,
    page_size: Option<u32>,
}

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
#[derive(Debug, Deserialize)]
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
    /// Only while a draft; running experiments use `PUT …/variants`.
    pub variants: Option<Vec<VariantInput>>,
}

fn double_option<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

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
    if let Some(v) = patch.variants {
        next.variants = variants_from_input(v, &mut Problems::new())?;
    }
    save(&state, next, &caller.actor()).await.map(Json)
}

fn variants_from_input(
    input: Vec<VariantInput>,
    problems: &mut Problems,
) -> Result<Vec<verdict_domain::Variant>, ApiError> {
    let given = input.iter().filter(|v| v.weight.is_some()).count();
    if given != 0 && given != input.len() {
        problems.push(
            "variants",
            "give a weight for every variant, or for none (equal split)",
        );
        return Err(ApiError::validation(std::mem::take(problems)));
    }
    let equal = 1.0 / input.len().max(1) as f64;
    Ok(input
        .into_iter()
        .map(|v| verdict_domain::Variant {
            name: v.name.unwrap_or_else(|| v.key.clone()),
            weight: v.weight.unwrap_or(equal),
            key: v.key,
            config: v.config,
            control: v.control,
        })
        .collect())
}

/// Validate and store an edited experiment (optimistic on `version`).
async fn save(state: &AppState, next: Experiment, actor: &str) -> Result<Experiment, ApiError> {
    let problems = next.check();
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VariantsUpdate {
    pub version: u64,
    pub variants: Vec<VariantInput>,
}

/// `PUT /v1/experiments/{key}/variants`: change variants and weights in any status. Stored
/// assignments are untouched (sticky); only new subjects see the new split. Variants that
/// subjects may already hold cannot be removed once the experiment has started.
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
    let variants = variants_from_input(body.variants, &mut problems)?;
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
    if !problems.is_empty() {
        return Err(ApiError::validation(problems));
    }
    let mut next = current;
    next.variants = variants;
    next.version = body.version;
    next.updated_at = now();
    save(&state, next, &caller.actor()).await.map(Json)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusRequest {
    pub status: String,
}

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
            return Ok(json!({"changed": true, "experiment": updated}));
        }
        // Lost the race: re-read and decide again.
    }
    Err(ApiError::new(
        ErrorCode::VersionConflict,
        "the experiment keeps changing; retry",
    ))
}

#[derive(Debug, Deserialize)]
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
        experiment_id: e.id,
        winner: Winner {
            variant: body.variant,
            decided_at: now(),
            source: PolicyMode::Manual,
            details: json!({"reason": body.reason, "by": caller.actor()}),
        },
        complete: body.complete,
        actor: caller.actor(),
    };
    Ok(Json(state.store.set_winner(&change).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForcedVariant {
    pub variant: String,
}

/// `PUT /v1/experiments/{key}/forced/{subject}`: always serve `variant` to this subject.
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

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditParams {
    environment: Option<String>,
    organization: Option<String>,
    page: Option<u32>,
    page_size: Option<u32>,
}

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
