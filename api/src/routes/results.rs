//! Winner snapshot and results.
//!
//! Until the aggregator exists, results are computed by the store from raw events and
//! assignments (`Store::variant_counts`), subject-level and attribution-aware.

use axum::Json;
use axum::extract::{Path, State};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};
use verdict_domain::{Experiment, KeyScope, Status};
use verdict_store::{TimeRange, VariantCounts};

use crate::auth::{Caller, ScopeParams};
use crate::error::ApiError;
use crate::extract::ApiQuery;
use crate::openapi::{ErrorBody, ResultsView};
use crate::routes::experiments::find;
use crate::startup::AppState;

/// The event counted as an exposure when an experiment names no `exposure_event`.
pub const DEFAULT_EXPOSURE_EVENT: &str = "exposure";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct WinnerSnapshot {
    pub experiment: String,
    pub experiment_id: String,
    pub environment: String,
    pub status: Status,
    pub winner: Option<String>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub decided_at: Option<OffsetDateTime>,
    pub source: Option<verdict_domain::PolicyMode>,
    pub policy: verdict_domain::WinnerPolicy,
    /// The numbers behind the decision.
    pub details: Value,
    pub version: u64,
}

impl WinnerSnapshot {
    pub fn of(e: &Experiment) -> Self {
        Self {
            experiment: e.key.clone(),
            experiment_id: e.id.clone(),
            environment: e.scope.environment.clone(),
            status: e.status,
            winner: e.winner.as_ref().map(|w| w.variant.clone()),
            decided_at: e.winner.as_ref().map(|w| w.decided_at),
            source: e.winner.as_ref().map(|w| w.source),
            policy: e.policy.clone(),
            details: e
                .winner
                .as_ref()
                .map(|w| w.details.clone())
                .unwrap_or(Value::Null),
            version: e.version,
        }
    }
}

/// `GET /v1/experiments/{key}/winner`
#[utoipa::path(
    get,
    path = "/experiments/{key}/winner",
    tag = "results",
    summary = "Winner snapshot",
    description = "Requires the `client` scope (an admin key also passes). The decided winner (if any), how it was decided and the policy behind it.",
    security(("bearer" = [])),
    params(("key" = String, Path, description = "The experiment key or id."), ScopeParams),
    responses(
        (status = 200, description = "The snapshot.", body = WinnerSnapshot),
        (status = 400, description = "`invalid_query`.", body = ErrorBody),
        (status = 401, description = "`unauthorized`.", body = ErrorBody),
        (status = 403, description = "`forbidden`: lacks the `client` scope, or names another \
            environment or organization without being an admin key.", body = ErrorBody),
        (status = 404, description = "`experiment_not_found`.", body = ErrorBody),
        (status = 500, description = "`internal`.", body = ErrorBody),
        (status = 503, description = "`store_unavailable`.", body = ErrorBody),
    )
)]
pub async fn winner(
    State(state): State<AppState>,
    caller: Caller,
    Path(key): Path<String>,
    ApiQuery(params): ApiQuery<ScopeParams>,
) -> Result<Json<WinnerSnapshot>, ApiError> {
    caller.require(KeyScope::Client)?;
    let e = find(&state, &caller.scope(&params)?, &key).await?;
    Ok(Json(WinnerSnapshot::of(&e)))
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ResultsParams {
    /// The metric event to count (default: the primary metric's).
    metric: Option<String>,
    /// Count events at or after this time (RFC 3339).
    #[serde(default, with = "time::serde::rfc3339::option")]
    from: Option<OffsetDateTime>,
    /// Count events before this time (RFC 3339).
    #[serde(default, with = "time::serde::rfc3339::option")]
    to: Option<OffsetDateTime>,
    /// Act in this environment instead of the key's (admin keys only).
    environment: Option<String>,
    /// Act in this organization instead of the key's (admin keys only).
    organization: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct VariantResult {
    pub variant: String,
    pub control: bool,
    /// Assigned subjects.
    pub subjects: u64,
    /// Exposure events (event-level count).
    pub exposures: u64,
    /// Subjects who sent the exposure event.
    pub exposed_subjects: u64,
    /// Metric events counted (event-level).
    pub conversions: u64,
    /// Subjects with at least one metric event.
    pub converted_subjects: u64,
    /// converted_subjects / subjects.
    pub rate: Option<f64>,
    pub sum: f64,
    /// Per-subject mean of the metric's values (sum / subjects).
    pub mean: Option<f64>,
    /// Relative lift of the rate over the control's.
    pub lift: Option<f64>,
}

/// Per-variant figures for one metric event of `e`.
pub async fn compute(
    state: &AppState,
    e: &Experiment,
    metric: &str,
    range: TimeRange,
) -> Result<Vec<VariantResult>, ApiError> {
    let counts = state.store.variant_counts(&e.id, metric, range).await?;
    let exposure_event = e
        .exposure_event
        .as_deref()
        .unwrap_or(DEFAULT_EXPOSURE_EVENT);
    let exposures = state
        .store
        .variant_counts(&e.id, exposure_event, range)
        .await?;
    let find = |list: &[VariantCounts], key: &str| list.iter().find(|c| c.variant == key).cloned();
    let control_key = &e.variants[e.control_index()].key;
    let mut rows: Vec<VariantResult> = e
        .variants
        .iter()
        .map(|v| {
            let c = find(&counts, &v.key);
            let x = find(&exposures, &v.key);
            let subjects = c.as_ref().map_or(0, |c| c.subjects);
            let converted = c.as_ref().map_or(0, |c| c.converted_subjects);
            let sum = c.as_ref().map_or(0.0, |c| c.sum);
            VariantResult {
                variant: v.key.clone(),
                control: &v.key == control_key,
                subjects,
                exposures: x.as_ref().map_or(0, |x| x.events),
                exposed_subjects: x.as_ref().map_or(0, |x| x.converted_subjects),
                conversions: c.as_ref().map_or(0, |c| c.events),
                converted_subjects: converted,
                rate: (subjects > 0).then(|| converted as f64 / subjects as f64),
                sum,
                mean: (subjects > 0).then(|| sum / subjects as f64),
                lift: None,
            }
        })
        .collect();
    let control_rate = rows.iter().find(|r| r.control).and_then(|r| r.rate);
    for r in &mut rows {
        r.lift = match (r.rate, control_rate) {
            (Some(rate), Some(base)) if base > 0.0 && !r.control => Some((rate - base) / base),
            _ => None,
        };
    }
    Ok(rows)
}

/// `GET /v1/experiments/{key}/results?metric=…&from=…&to=…`
#[utoipa::path(
    get,
    path = "/experiments/{key}/results",
    tag = "results",
    summary = "Per-variant results",
    description = "Requires the `client` scope (an admin key also passes). Subject-level figures of one metric event (the primary metric by default) \
        over an optional time range.",
    security(("bearer" = [])),
    params(("key" = String, Path, description = "The experiment key or id."), ResultsParams),
    responses(
        (status = 200, description = "Per-variant figures.", body = ResultsView),
        (status = 400, description = "`invalid_query`.", body = ErrorBody),
        (status = 401, description = "`unauthorized`.", body = ErrorBody),
        (status = 403, description = "`forbidden`: lacks the `client` scope, or names another \
            environment or organization without being an admin key.", body = ErrorBody),
        (status = 404, description = "`experiment_not_found`.", body = ErrorBody),
        (status = 500, description = "`internal`.", body = ErrorBody),
        (status = 503, description = "`store_unavailable`.", body = ErrorBody),
    )
)]
pub async fn results(
    State(state): State<AppState>,
    caller: Caller,
    Path(key): Path<String>,
    ApiQuery(params): ApiQuery<ResultsParams>,
) -> Result<Json<Value>, ApiError> {
    caller.require(KeyScope::Client)?;
    let scope = caller.scope(&ScopeParams {
        environment: params.environment,
        organization: params.organization,
    })?;
    let e = find(&state, &scope, &key).await?;
    let metric = params
        .metric
        .unwrap_or_else(|| e.primary_metric.event.clone());
    let range = TimeRange {
        from: params.from,
        to: params.to,
    };
    let variants = compute(&state, &e, &metric, range).await?;
    Ok(Json(json!({
        "experiment": e.key,
        "metric": metric,
        "status": e.status,
        "winner": e.winner.as_ref().map(|w| &w.variant),
        "variants": variants,
    })))
}
