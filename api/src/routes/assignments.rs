//! Assignment: which variant a subject sees, with its config.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use time::OffsetDateTime;
use utoipa::ToSchema;
use verdict_domain::assignment::{self, MAX_SUBJECT_LEN, Reason, SubjectState};
use verdict_domain::targeting::Attributes;
use verdict_domain::{Assignment, Experiment, KeyScope, Scope, Status};
use verdict_store::{ExperimentFilter, PageRequest};

use super::now;
use crate::auth::{Caller, ScopeParams};
use crate::error::{ApiError, ErrorCode};
use crate::extract::ApiJson;
use crate::openapi::{ErrorBody, SubjectAssignments};
use crate::routes::experiments::find;
use crate::startup::AppState;

/// What a subject sees in one experiment. Always carries a usable config.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct AssignmentView {
    pub experiment: String,
    pub variant: String,
    pub config: Value,
    #[serde(with = "time::serde::rfc3339::option")]
    pub assigned_at: Option<OffsetDateTime>,
    pub in_experiment: bool,
    pub reason: Reason,
    /// The decided winner's variant key, if any.
    pub winner: Option<String>,
}

fn check_subject(subject: &str) -> Result<(), ApiError> {
    let problem = if subject.is_empty() {
        Some("is required")
    } else if subject.len() > MAX_SUBJECT_LEN {
        Some("must be at most 256 bytes")
    } else {
        None
    };
    match problem {
        None => Ok(()),
        Some(msg) => {
            let mut p = verdict_domain::Problems::new();
            p.push("subject_id", msg);
            Err(ApiError::validation(p))
        }
    }
}

/// Decide and, for new eligible subjects, store the assignment (SPEC §3).
pub async fn assign(
    state: &AppState,
    experiment: &Experiment,
    subject: &str,
    attributes: &Attributes,
) -> Result<AssignmentView, ApiError> {
    let subject_key = assignment::subject_key(experiment, subject);
    let undecided = experiment.winner.is_none();
    let live = matches!(experiment.status, Status::Running | Status::Paused);
    let (forced, stored) = if undecided {
        let record = state
            .store
            .subject_state(&experiment.id, &subject_key)
            .await?;
        let stored = record
            .assignment
            .filter(|_| live && record.forced.is_none());
        (record.forced, stored)
    } else {
        (None, None)
    };
    let audience = match (&experiment.audience, stored.is_some()) {
        (Some(key), false) => state
            .store
            .get_audience(&experiment.scope.environment, key)
            .await?
            // A deleted audience matches nobody rather than everybody.
            .map(|a| a.rules)
            .or_else(|| {
                Some(verdict_domain::Targeting {
                    rules: vec![Default::default()],
                })
            }),
        _ => None,
    };
    let decision = assignment::decide(
        experiment,
        audience.as_ref(),
        subject,
        attributes,
        SubjectState {
            stored: stored.as_ref(),
            forced: forced.as_deref(),
        },
    );
    let mut variant = &experiment.variants[decision.variant];
    let mut assigned_at = stored.as_ref().map(|a| a.assigned_at);
    if decision.create {
        let (kept, _) = state
            .store
            .get_or_create_assignment(&Assignment {
                experiment_id: experiment.id.clone(),
                subject: subject_key,
                variant: variant.key.clone(),
                assigned_at: now(),
            })
            .await?;
        // Another request may have stored this subject first: what is stored wins.
        if let Some(v) = experiment.variant(&kept.variant) {
            variant = v;
        }
        assigned_at = Some(kept.assigned_at);
    }
    Ok(AssignmentView {
        experiment: experiment.key.clone(),
        variant: variant.key.clone(),
        config: variant.config.clone(),
        assigned_at: if decision.in_experiment {
            assigned_at
        } else {
            None
        },
        in_experiment: decision.in_experiment,
        reason: decision.reason,
        winner: experiment.winner.as_ref().map(|w| w.variant.clone()),
    })
}

/// `GET /v1/experiments/{key}/assignment?subject_id=…&attr.country=US`
#[utoipa::path(
    get,
    path = "/experiments/{key}/assignment",
    tag = "assignments",
    summary = "Assign a subject (query)",
    description = "Requires the `client` scope (an admin key also passes). Which variant `subject_id` sees, with its config; new eligible subjects are \
        stored (sticky). Targeting attributes are query parameters `attr.<name>=<value>` \
        (string values), e.g. `attr.country=US`; any other parameter is refused.",
    security(("bearer" = [])),
    params(("key" = String, Path, description = "The experiment key or id."),
        ("subject_id" = String, Query, description = "The subject (1 to 256 bytes)."),
        ("attr.{name}" = Option<String>, Query,
            description = "A targeting attribute, e.g. `attr.country=US`; repeat for more."),
        ("environment" = Option<String>, Query,
            description = "Act in this environment instead of the key's (admin keys only)."),
        ("organization" = Option<String>, Query,
            description = "Act in this organization instead of the key's (admin keys only).")),
    responses(
        (status = 200, description = "The subject's variant and config.", body = AssignmentView),
        (status = 400, description = "`invalid_query`: an unknown parameter.", body = ErrorBody),
        (status = 401, description = "`unauthorized`.", body = ErrorBody),
        (status = 403, description = "`forbidden`: lacks the `client` scope, or names another \
            environment or organization without being an admin key.", body = ErrorBody),
        (status = 404, description = "`experiment_not_found`.", body = ErrorBody),
        (status = 422, description = "`validation_failed`: missing or too long `subject_id`.",
            body = ErrorBody),
        (status = 500, description = "`internal`.", body = ErrorBody),
        (status = 503, description = "`store_unavailable`.", body = ErrorBody),
    )
)]
pub async fn get_assignment(
    State(state): State<AppState>,
    caller: Caller,
    Path(key): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Json<AssignmentView>, ApiError> {
    caller.require(KeyScope::Client)?;
    let mut subject = None;
    let mut attributes = Map::new();
    let mut scope_params = ScopeParams::default();
    for (k, v) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        match k.as_ref() {
            "subject_id" => subject = Some(v.into_owned()),
            "environment" => scope_params.environment = Some(v.into_owned()),
            "organization" => scope_params.organization = Some(v.into_owned()),
            other => match other.strip_prefix("attr.") {
                Some(name) if !name.is_empty() => {
                    attributes.insert(name.to_owned(), Value::String(v.into_owned()));
                }
                _ => {
                    return Err(ApiError::new(
                        ErrorCode::InvalidQuery,
                        format!("unknown query parameter '{other}'"),
                    )
                    .with_details(vec![serde_json::json!({
                        "field": other,
                        "message": "expected subject_id, attr.<name>, environment or organization"
                    })]));
                }
            },
        }
    }
    let subject = subject.unwrap_or_default();
    check_subject(&subject)?;
    let scope = caller.scope(&scope_params)?;
    let experiment = state.experiments.get(&state, &scope, &key).await?;
    assign(&state, &experiment, &subject, &attributes)
        .await
        .map(Json)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AssignmentRequest {
    /// The subject (1 to 256 bytes).
    pub subject_id: String,
    /// Targeting attributes: any JSON values by name.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub attributes: Attributes,
}

/// `POST /v1/experiments/{key}/assignment` with `{subject_id, attributes}`.
#[utoipa::path(
    post,
    path = "/experiments/{key}/assignment",
    tag = "assignments",
    summary = "Assign a subject",
    description = "Requires the `client` scope (an admin key also passes). Which variant `subject_id` sees, with its config; attributes may be any JSON \
        values. New eligible subjects are stored (sticky).",
    security(("bearer" = [])),
    params(("key" = String, Path, description = "The experiment key or id."), ScopeParams),
    request_body = AssignmentRequest,
    responses(
        (status = 200, description = "The subject's variant and config.", body = AssignmentView),
        (status = 400, description = "`invalid_json` or `invalid_query`.", body = ErrorBody),
        (status = 401, description = "`unauthorized`.", body = ErrorBody),
        (status = 403, description = "`forbidden`: lacks the `client` scope, or names another \
            environment or organization without being an admin key.", body = ErrorBody),
        (status = 404, description = "`experiment_not_found`.", body = ErrorBody),
        (status = 413, description = "`payload_too_large`.", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`.", body = ErrorBody),
        (status = 422, description = "`invalid_body` or `validation_failed`.", body = ErrorBody),
        (status = 500, description = "`internal`.", body = ErrorBody),
        (status = 503, description = "`store_unavailable`.", body = ErrorBody),
    )
)]
pub async fn post_assignment(
    State(state): State<AppState>,
    caller: Caller,
    Path(key): Path<String>,
    crate::extract::ApiQuery(params): crate::extract::ApiQuery<ScopeParams>,
    ApiJson(body): ApiJson<AssignmentRequest>,
) -> Result<Json<AssignmentView>, ApiError> {
    caller.require(KeyScope::Client)?;
    check_subject(&body.subject_id)?;
    let scope = caller.scope(&params)?;
    let experiment = state.experiments.get(&state, &scope, &key).await?;
    assign(&state, &experiment, &body.subject_id, &body.attributes)
        .await
        .map(Json)
}

/// `POST /v1/assignments`: every live (running or paused) experiment of the caller's scope
/// for one subject; paused ones serve stored assignments only.
#[utoipa::path(
    post,
    path = "/assignments",
    tag = "assignments",
    summary = "Assign a subject in every live experiment",
    description = "Requires the `client` scope (an admin key also passes). Every running or paused experiment of the scope; paused ones serve stored \
        assignments only.",
    security(("bearer" = [])),
    params(ScopeParams),
    request_body = AssignmentRequest,
    responses(
        (status = 200, description = "One assignment per live experiment.",
            body = SubjectAssignments),
        (status = 400, description = "`invalid_json` or `invalid_query`.", body = ErrorBody),
        (status = 401, description = "`unauthorized`.", body = ErrorBody),
        (status = 403, description = "`forbidden`: lacks the `client` scope, or names another \
            environment or organization without being an admin key.", body = ErrorBody),
        (status = 413, description = "`payload_too_large`.", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`.", body = ErrorBody),
        (status = 422, description = "`invalid_body` or `validation_failed`.", body = ErrorBody),
        (status = 500, description = "`internal`.", body = ErrorBody),
        (status = 503, description = "`store_unavailable`.", body = ErrorBody),
    )
)]
pub async fn assign_all(
    State(state): State<AppState>,
    caller: Caller,
    crate::extract::ApiQuery(params): crate::extract::ApiQuery<ScopeParams>,
    ApiJson(body): ApiJson<AssignmentRequest>,
) -> Result<Json<Value>, ApiError> {
    caller.require(KeyScope::Client)?;
    check_subject(&body.subject_id)?;
    let scope = caller.scope(&params)?;
    let mut views = Vec::new();
    for experiment in live_experiments(&state, &scope).await? {
        views.push(assign(&state, &experiment, &body.subject_id, &body.attributes).await?);
    }
    Ok(Json(
        serde_json::json!({ "subject_id": body.subject_id, "assignments": views }),
    ))
}

async fn live_experiments(state: &AppState, scope: &Scope) -> Result<Vec<Experiment>, ApiError> {
    let mut all = Vec::new();
    for status in [Status::Running, Status::Paused] {
        let filter = ExperimentFilter {
            environment: Some(scope.environment.clone()),
            organization: Some(scope.organization.clone()),
            status: Some(status),
        };
        let mut page = PageRequest {
            page: 1,
            page_size: 100,
        };
        loop {
            let found = state.store.list_experiments(&filter, page).await?;
            let done = found.items.len() < 100;
            all.extend(found.items);
            if done {
                break;
            }
            page.page += 1;
        }
    }
    Ok(all)
}

/// A short-lived in-process cache of experiment definitions for the hot read paths
/// (assignment, events). Writes through this process invalidate at once; the TTL bounds
/// how stale another replica's change can be.
#[derive(Debug, Default)]
pub struct ExperimentCache {
    entries: std::sync::Mutex<HashMap<(Scope, String), (Experiment, std::time::Instant)>>,
}

const EXPERIMENT_CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(1);

impl ExperimentCache {
    pub async fn get(
        &self,
        state: &AppState,
        scope: &Scope,
        key: &str,
    ) -> Result<Experiment, ApiError> {
        let cache_key = (scope.clone(), key.to_owned());
        {
            let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((e, at)) = entries.get(&cache_key)
                && at.elapsed() < EXPERIMENT_CACHE_TTL
            {
                return Ok(e.clone());
            }
        }
        let e = find(state, scope, key).await?;
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() > 10_000 {
            entries.clear();
        }
        entries.insert(cache_key, (e.clone(), std::time::Instant::now()));
        Ok(e)
    }

    pub fn clear(&self) {
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }
}
