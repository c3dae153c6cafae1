//! Winner snapshot, results, time series and the evaluation history.

use axum::Json;
use axum::extract::State;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use verdict_app::history::HistoryView;
use verdict_app::results::{ResultsParams, ResultsView, TimeseriesParams, TimeseriesView};
use verdict_app::{Caller, ScopeParams};
use verdict_domain::WinnerSnapshot;

use crate::error::ApiError;
use crate::extract::{ApiPath, ApiQuery};
use crate::openapi::ErrorBody;
use crate::state::AppState;

pub fn routes(router: OpenApiRouter<AppState>) -> OpenApiRouter<AppState> {
    // `winner` shares its path with the manual winner: `experiments::routes` adds it.
    router
        .routes(routes!(results))
        .routes(routes!(timeseries))
        .routes(routes!(history))
}

/// `GET /v1/experiments/{key}/winner`
#[utoipa::path(
    get,
    path = "/v1/experiments/{key}/winner",
    tag = "results",
    summary = "Winner snapshot",
    description = "The decided winner (if any), how it was decided and the policy behind it. \
        Served from the winner-snapshot cache; when the cache is unavailable, from the store.",
    security(("bearer" = ["results:read"])),
    params(("key" = String, Path, description = "The experiment key or id."), ScopeParams),
    responses(
        (status = 200, description = "The snapshot.", body = WinnerSnapshot),
        (status = 404, description = "`experiment_not_found`.", body = ErrorBody),
    )
)]
pub async fn winner(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(key): ApiPath<String>,
    ApiQuery(scope): ApiQuery<ScopeParams>,
) -> Result<Json<WinnerSnapshot>, ApiError> {
    Ok(Json(state.winner(&caller, &scope, &key).await?))
}

/// `GET /v1/experiments/{key}/results?metric=…&from=…&to=…`
#[utoipa::path(
    get,
    path = "/v1/experiments/{key}/results",
    tag = "results",
    summary = "Per-variant results with statistics",
    description = "Subject-level figures \
        of one metric of the experiment (the primary metric by default), from the rollups as of \
        the last aggregation run, with the same statistics whatever the metric's kind: each \
        variant's estimate (a rate, events or value per subject, or value per event) with its \
        interval, P(best), expected loss, chance to beat the control, lift with its interval, \
        the always-valid confidence interval of the difference to the control, Welch's t-test \
        for value metrics, the SRM check (with degrees of freedom and expected counts) and, for \
        a guardrail metric, its status per arm. For the primary metric, `decision` is the \
        winner policy's reading of these figures now: its verdict, every blocker with its \
        figures, the subjects per arm still needed where a rule allows an estimate, and each \
        guardrail's status. Only events at or after a subject's assignment count; when the \
        experiment names an `exposure_event`, only subjects who sent it count, from their first \
        exposure; a metric's `window_hours` limits its events to that long after the subject's \
        start; a metric's `cap` caps each subject's total. With a window, an exposure event or \
        `from`/`to`, raw events are counted at query time (`source: raw_events`). With \
        `breakdown=true`, `breakdown` holds the same statistics per segment of the \
        experiment's declared dimension, read from the rollups (400 `invalid_query` when it \
        declares none, or with `from`/`to`).",
    security(("bearer" = ["results:read"])),
    params(("key" = String, Path, description = "The experiment key or id."), ResultsParams),
    responses(
        (status = 200, description = "Per-variant figures.", body = ResultsView),
        (status = 404, description = "`experiment_not_found`, or `metric_not_found`: `metric` \
            is none of the experiment's metrics (listed in `details`).", body = ErrorBody),
    )
)]
pub async fn results(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(key): ApiPath<String>,
    ApiQuery(params): ApiQuery<ResultsParams>,
) -> Result<Json<ResultsView>, ApiError> {
    Ok(Json(state.results(&caller, &key, params).await?))
}

/// `GET /v1/experiments/{key}/timeseries?metric=…&granularity=hour|day`
#[utoipa::path(
    get,
    path = "/v1/experiments/{key}/timeseries",
    tag = "results",
    summary = "Metric buckets for charts",
    description = "Hour or day buckets \
        (UTC) of one metric event per variant: event count, Σ value and Σ value², as of the \
        last aggregation run.",
    security(("bearer" = ["results:read"])),
    params(("key" = String, Path, description = "The experiment key or id."), TimeseriesParams),
    responses(
        (status = 200, description = "One series per variant.", body = TimeseriesView),
        (status = 404, description = "`experiment_not_found`, or `metric_not_found`: `metric` \
            is none of the experiment's metrics (listed in `details`).", body = ErrorBody),
    )
)]
pub async fn timeseries(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(key): ApiPath<String>,
    ApiQuery(params): ApiQuery<TimeseriesParams>,
) -> Result<Json<TimeseriesView>, ApiError> {
    Ok(Json(state.timeseries(&caller, &key, params).await?))
}

/// `GET /v1/experiments/{key}/results/history`
#[utoipa::path(
    get,
    path = "/v1/experiments/{key}/results/history",
    tag = "results",
    summary = "The primary metric over time, for charts",
    description = "Each arm's estimate of the primary metric with its 95% credible interval \
        and its P(best), as the evaluation job computed them at each run that found new \
        figures (a run over the same data adds no point): the latest 500 points, oldest \
        first, each with its time and the rollup watermark it saw (`aggregated_through`). \
        Empty until the experiment's first evaluation. Points older than the buckets' \
        retention (`retention.buckets_days`, or the experiment's own) are deleted with them.",
    security(("bearer" = ["results:read"])),
    params(("key" = String, Path, description = "The experiment key or id."), ScopeParams),
    responses(
        (status = 200, description = "The points, oldest first.", body = HistoryView),
        (status = 404, description = "`experiment_not_found`.", body = ErrorBody),
    )
)]
pub async fn history(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(key): ApiPath<String>,
    ApiQuery(scope): ApiQuery<ScopeParams>,
) -> Result<Json<HistoryView>, ApiError> {
    Ok(Json(state.evaluation_history(&caller, scope, &key).await?))
}
