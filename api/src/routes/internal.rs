//! The internal API for cron operators (`internal` scope): trigger a job run, list the jobs
//! with their schedule, next fire time, last run, lease holder and lag, and page through a
//! job's runs. Runs go through the application's job runner, the same path the scheduler and
//! `verdict run` take (lease, fencing token, run record).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use verdict_app::jobs::{JobList, RunAccepted, Triggered};
use verdict_app::{PageParams, Paginated};
use verdict_store::RunRecord;

use crate::error::ApiError;
use crate::extract::{ApiPath, ApiQuery};
use crate::openapi::ErrorBody;
use crate::state::AppState;

pub fn routes(router: OpenApiRouter<AppState>) -> OpenApiRouter<AppState> {
    router
        .routes(routes!(run_job))
        .routes(routes!(run_aggregate_alias))
        .routes(routes!(run_retention_alias))
        .routes(routes!(list_jobs))
        .routes(routes!(list_runs))
        .routes(routes!(get_run))
}

/// Query of a trigger.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct TriggerParams {
    /// For jobs that can be narrowed (`evaluate`): just this experiment (its id, or its key
    /// in the default environment).
    experiment: Option<String>,
}

fn triggered(t: Triggered) -> Response {
    match t {
        Triggered::Finished(run) => Json(run).into_response(),
        Triggered::Accepted(accepted) => (StatusCode::ACCEPTED, Json(accepted)).into_response(),
    }
}

/// `POST /v1/internal/jobs/{job}/run`
#[utoipa::path(
    post,
    path = "/v1/internal/jobs/{job}/run",
    tag = "internal",
    summary = "Run a job now",
    description = "Runs the job under its lease (as the scheduler \
        does) and waits up to `jobs.http_wait_seconds` for it: 200 with the finished run record \
        (its `outcome` says whether the job succeeded, its `report` what it did); 202 with the \
        run's id when it takes longer (it goes on; poll `GET /v1/internal/jobs/{job}/runs/{id}`); \
        409 `lease_held` when another replica is running the job.",
    security(("bearer" = ["jobs:run"])),
    params(("job" = String, Path, description = "The job's name (`GET /v1/internal/jobs` lists them)."), TriggerParams),
    responses(
        (status = 200, description = "The finished run.", body = RunRecord),
        (status = 202, description = "Still running (it goes on).", body = RunAccepted),
        (status = 404, description = "`job_not_found`.", body = ErrorBody),
        (status = 409, description = "`lease_held`: another replica holds the job's lease \
            (details name the holder and when its lease expires).", body = ErrorBody),
        (status = 503, description = "`store_unavailable` or `shutting_down`.", body = ErrorBody),
    )
)]
pub async fn run_job(
    State(state): State<AppState>,
    ApiPath(job): ApiPath<String>,
    ApiQuery(params): ApiQuery<TriggerParams>,
) -> Result<Response, ApiError> {
    let run = state.trigger_job(&job, params.experiment).await?;
    Ok(triggered(run))
}

/// `POST /v1/internal/experiments/aggregate/run`
#[utoipa::path(
    post,
    path = "/v1/internal/experiments/aggregate/run",
    tag = "internal",
    summary = "Run the aggregation job now (alias)",
    description = "Same as `POST /v1/internal/jobs/aggregate/run`.",
    security(("bearer" = ["jobs:run"])),
    responses(
        (status = 200, description = "The finished run.", body = RunRecord),
        (status = 202, description = "Still running (it goes on).", body = RunAccepted),
        (status = 409, description = "`lease_held`.", body = ErrorBody),
        (status = 503, description = "`store_unavailable` or `shutting_down`.", body = ErrorBody),
    )
)]
pub async fn run_aggregate_alias(State(state): State<AppState>) -> Result<Response, ApiError> {
    Ok(triggered(state.trigger_job("aggregate", None).await?))
}

/// `POST /v1/internal/experiments/retention/run`
#[utoipa::path(
    post,
    path = "/v1/internal/experiments/retention/run",
    tag = "internal",
    summary = "Run the retention job now (alias)",
    description = "Same as `POST /v1/internal/jobs/retention/run`.",
    security(("bearer" = ["jobs:run"])),
    responses(
        (status = 200, description = "The finished run.", body = RunRecord),
        (status = 202, description = "Still running (it goes on).", body = RunAccepted),
        (status = 409, description = "`lease_held`.", body = ErrorBody),
        (status = 503, description = "`store_unavailable` or `shutting_down`.", body = ErrorBody),
    )
)]
pub async fn run_retention_alias(State(state): State<AppState>) -> Result<Response, ApiError> {
    Ok(triggered(state.trigger_job("retention", None).await?))
}

/// `GET /v1/internal/jobs`
#[utoipa::path(
    get,
    path = "/v1/internal/jobs",
    tag = "internal",
    summary = "The jobs",
    description = "Each job with its schedule, next fire time, \
        last run, current lease holder and lag (for `aggregate`: the age of the oldest raw \
        event not yet aggregated).",
    security(("bearer" = ["jobs:read"])),
    responses((status = 200, description = "Every job.", body = JobList))
)]
pub async fn list_jobs(State(state): State<AppState>) -> Result<Json<JobList>, ApiError> {
    Ok(Json(state.jobs().await?))
}

/// `GET /v1/internal/jobs/{job}/runs`
#[utoipa::path(
    get,
    path = "/v1/internal/jobs/{job}/runs",
    tag = "internal",
    summary = "A job's runs",
    description = "Newest first, including attempts skipped \
        because another replica held the lease.",
    security(("bearer" = ["jobs:read"])),
    params(("job" = String, Path, description = "The job's name."), PageParams),
    responses(
        (status = 200, description = "A page of runs.", body = Paginated<RunRecord>),
        (status = 404, description = "`job_not_found`.", body = ErrorBody),
    )
)]
pub async fn list_runs(
    State(state): State<AppState>,
    ApiPath(job): ApiPath<String>,
    ApiQuery(page): ApiQuery<PageParams>,
) -> Result<Json<Paginated<RunRecord>>, ApiError> {
    Ok(Json(state.job_runs(&job, page).await?))
}

/// `GET /v1/internal/jobs/{job}/runs/{id}`
#[utoipa::path(
    get,
    path = "/v1/internal/jobs/{job}/runs/{id}",
    tag = "internal",
    summary = "One run",
    security(("bearer" = ["jobs:read"])),
    params(
        ("job" = String, Path, description = "The job's name."),
        ("id" = String, Path, description = "The run's id."),
    ),
    responses(
        (status = 200, description = "The run.", body = RunRecord),
        (status = 404, description = "`job_not_found` or `run_not_found`.", body = ErrorBody),
    )
)]
pub async fn get_run(
    State(state): State<AppState>,
    ApiPath((job, id)): ApiPath<(String, String)>,
) -> Result<Json<RunRecord>, ApiError> {
    Ok(Json(state.job_run(&job, &id).await?))
}
