//! Winner snapshot, results and time series.
//!
//! Results read their figures through `verdict_aggregator::counts` (as the evaluation job
//! does): the rollups the aggregation job maintains (per variant, assigned subjects and
//! subject-level figures of the metric), so their cost does not grow with raw events, as
//! fresh as the last aggregation run (`aggregated_through` says how far it got); or raw
//! events at query time when a `from` / `to` range, the metric's window or the experiment's
//! exposure event applies, since rollups keep no per-subject start. They add the statistics
//! of `verdict_policy::analysis`. Time series serve the hour and day buckets.

use axum::Json;
use axum::extract::{Path, State};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};
use verdict_aggregator::counts::{self, ResultsSource};
use verdict_domain::{Experiment, KeyScope, Status, WinnerSnapshot};
use verdict_policy::analysis::{Analysis, MetricSpec, analyze};
use verdict_store::{Granularity, TimeRange};

use crate::auth::{Caller, ScopeParams};
use crate::error::ApiError;
use crate::extract::ApiQuery;
use crate::openapi::ErrorBody;
use crate::routes::experiments::find;
use crate::startup::AppState;

/// `GET /v1/experiments/{key}/winner`
#[utoipa::path(
    get,
    path = "/v1/experiments/{key}/winner",
    tag = "results",
    summary = "Winner snapshot",
    description = "Requires the `client` scope (an admin key also passes). The decided winner (if any), how it was decided and the policy behind it. \
        Served from the winner-snapshot cache; when the cache is unavailable, from the store.",
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
    Ok(Json(state.snapshots.read(&state.store, &e).await?))
}

/// The experiment a `client`-scoped read names, and the metric event it asks for (the
/// primary metric's by default).
async fn experiment_and_metric(
    state: &AppState,
    caller: &Caller,
    key: &str,
    environment: Option<String>,
    organization: Option<String>,
    metric: Option<String>,
) -> Result<(Experiment, String), ApiError> {
    caller.require(KeyScope::Client)?;
    let scope = caller.scope(&ScopeParams {
        environment,
        organization,
    })?;
    let e = find(state, &scope, key).await?;
    let metric = metric.unwrap_or_else(|| e.primary_metric.event.clone());
    Ok((e, metric))
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ResultsParams {
    /// The metric event to analyse (default: the primary metric's).
    metric: Option<String>,
    /// Count events at or after this time (RFC 3339); counts raw events.
    #[serde(default, with = "time::serde::rfc3339::option")]
    from: Option<OffsetDateTime>,
    /// Count events before this time (RFC 3339); counts raw events.
    #[serde(default, with = "time::serde::rfc3339::option")]
    to: Option<OffsetDateTime>,
    /// Act in this environment instead of the key's (admin keys only).
    environment: Option<String>,
    /// Act in this organization instead of the key's (admin keys only).
    organization: Option<String>,
}

/// Per-variant results of one metric with their statistics.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ResultsView {
    /// The experiment key.
    pub experiment: String,
    pub experiment_id: String,
    /// The metric event analysed (the primary metric's unless `metric` was given).
    pub metric: String,
    pub status: Status,
    /// The decided winner's variant key, if any.
    pub winner: Option<String>,
    pub source: ResultsSource,
    /// Ingestion sequence number of the last event folded into the rollups.
    pub aggregated_through: u64,
    #[serde(flatten)]
    pub analysis: Analysis,
}

/// `GET /v1/experiments/{key}/results?metric=…&from=…&to=…`
#[utoipa::path(
    get,
    path = "/v1/experiments/{key}/results",
    tag = "results",
    summary = "Per-variant results with statistics",
    description = "Requires the `client` scope (an admin key also passes). Subject-level figures \
        of one metric event (the primary metric by default) from the rollups, as of the last \
        aggregation run, with rates and 95% credible intervals, P(best), expected loss, lift, \
        the SRM check of the split and, for `sum`/`mean` metrics, Welch's t-test against the \
        control. Only events at or after a subject's assignment count; when the experiment \
        names an `exposure_event`, only subjects who sent it count, from their first exposure; \
        a metric's `window_hours` limits its events to that long after the subject's start. \
        With a window, an exposure event or `from`/`to`, raw events are counted at query time \
        (`source: raw_events`).",
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
) -> Result<Json<ResultsView>, ApiError> {
    let (e, metric) = experiment_and_metric(
        &state,
        &caller,
        &key,
        params.environment,
        params.organization,
        params.metric,
    )
    .await?;
    let aggregated_through = state.store.rollup_watermark().await?;
    let range = TimeRange {
        from: params.from,
        to: params.to,
    };
    let figures = counts::results_figures(&state.store, &e, &metric, range).await?;
    let analysis = analyze(
        &e,
        MetricSpec::of(&e, &metric),
        &figures.metric,
        &figures.exposures,
    );
    Ok(Json(ResultsView {
        experiment: e.key,
        experiment_id: e.id,
        metric,
        status: e.status,
        winner: e.winner.map(|w| w.variant),
        source: figures.source,
        aggregated_through,
        analysis,
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct TimeseriesParams {
    /// The metric event (default: the primary metric's).
    metric: Option<String>,
    /// Bucket width: `hour` or `day` (default `day`).
    #[param(value_type = Option<String>)]
    granularity: Option<Granularity>,
    /// Buckets starting at or after this time (RFC 3339).
    #[serde(default, with = "time::serde::rfc3339::option")]
    from: Option<OffsetDateTime>,
    /// Buckets starting before this time (RFC 3339).
    #[serde(default, with = "time::serde::rfc3339::option")]
    to: Option<OffsetDateTime>,
    /// Act in this environment instead of the key's (admin keys only).
    environment: Option<String>,
    /// Act in this organization instead of the key's (admin keys only).
    organization: Option<String>,
}

/// One bucket of one variant: event-level count and sums.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Point {
    #[serde(with = "time::serde::rfc3339")]
    pub start: OffsetDateTime,
    pub count: u64,
    pub sum: f64,
    pub sum_of_squares: f64,
}

/// The buckets of one variant, oldest first.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Series {
    pub variant: String,
    pub points: Vec<Point>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TimeseriesView {
    pub experiment: String,
    pub metric: String,
    /// `hour` or `day`.
    pub granularity: String,
    /// Ingestion sequence number of the last event folded into the buckets.
    pub aggregated_through: u64,
    /// One series per variant, in the experiment's variant order.
    pub series: Vec<Series>,
}

/// `GET /v1/experiments/{key}/timeseries?metric=…&granularity=hour|day`
#[utoipa::path(
    get,
    path = "/v1/experiments/{key}/timeseries",
    tag = "results",
    summary = "Metric buckets for charts",
    description = "Requires the `client` scope (an admin key also passes). Hour or day buckets \
        (UTC) of one metric event per variant: event count, Σ value and Σ value², as of the \
        last aggregation run.",
    security(("bearer" = [])),
    params(("key" = String, Path, description = "The experiment key or id."), TimeseriesParams),
    responses(
        (status = 200, description = "One series per variant.", body = TimeseriesView),
        (status = 400, description = "`invalid_query`.", body = ErrorBody),
        (status = 401, description = "`unauthorized`.", body = ErrorBody),
        (status = 403, description = "`forbidden`.", body = ErrorBody),
        (status = 404, description = "`experiment_not_found`.", body = ErrorBody),
        (status = 500, description = "`internal`.", body = ErrorBody),
        (status = 503, description = "`store_unavailable`.", body = ErrorBody),
    )
)]
pub async fn timeseries(
    State(state): State<AppState>,
    caller: Caller,
    Path(key): Path<String>,
    ApiQuery(params): ApiQuery<TimeseriesParams>,
) -> Result<Json<TimeseriesView>, ApiError> {
    let (e, metric) = experiment_and_metric(
        &state,
        &caller,
        &key,
        params.environment,
        params.organization,
        params.metric,
    )
    .await?;
    let granularity = params.granularity.unwrap_or(Granularity::Day);
    let aggregated_through = state.store.rollup_watermark().await?;
    let range = TimeRange {
        from: params.from,
        to: params.to,
    };
    let buckets = state
        .store
        .buckets(&e.id, &metric, granularity, range)
        .await?;
    let series = e
        .variants
        .iter()
        .map(|v| Series {
            variant: v.key.clone(),
            points: buckets
                .iter()
                .filter(|b| b.variant == v.key)
                .map(|b| Point {
                    start: b.start,
                    count: b.count,
                    sum: b.sum,
                    sum_of_squares: b.sum_of_squares,
                })
                .collect(),
        })
        .collect();
    Ok(Json(TimeseriesView {
        experiment: e.key,
        metric,
        granularity: granularity.as_str().to_owned(),
        aggregated_through,
        series,
    }))
}
