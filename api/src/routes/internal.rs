//! The internal API for cron operators (`internal` scope): trigger a job run, list the jobs
//! with their schedule, next fire time, last run, lease holder and lag, and page through a
//! job's runs. Runs go through `verdict_jobs::Jobs`, the same path the scheduler and
//! `verdict run` take (lease, fencing token, run record).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};
use verdict_domain::KeyScope;
use verdict_jobs::{Job, JobStatus, RunOptions, Start, StartError};
use verdict_store::{RunRecord, Trigger};

use crate::auth::Caller;
use crate::error::{ApiError, ErrorCode};
use crate::extract::{ApiQuery, PageParams, paginated};
use crate::openapi::{ErrorBody, Paginated};
use crate::startup::AppState;

fn job_of(name: &str) -> Result<Job, ApiError> {
    Job::parse(name).ok_or_else(|| {
        ApiError::new(
            ErrorCode::JobNotFound,
            format!(
                "no job '{name}'; jobs are {}",
                Job::ALL.map(Job::as_str).join(", ")
            ),
        )
    })
}

/// A run still going when the trigger stopped waiting.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunAccepted {
    pub run_id: String,
    pub job: Job,
    /// Where to read the run record (`GET`).
    pub status_url: String,
}

/// Query of a trigger.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct TriggerParams {
    /// `evaluate` only: evaluate just this experiment (its id, or its key in the default
    /// environment).
    experiment: Option<String>,
}

/// `POST /v1/internal/jobs/{job}/run`
#[utoipa::path(
    post,
    path = "/v1/internal/jobs/{job}/run",
    tag = "internal",
    summary = "Run a job now",
    description = "Requires the `internal` scope. Runs the job under its lease (as the scheduler \
        does) and waits up to `jobs.http_wait_seconds` for it: 200 with the finished run record \
        (its `outcome` says whether the job succeeded, its `report` what it did); 202 with the \
        run's id when it takes longer (it goes on; poll `GET /v1/internal/jobs/{job}/runs/{id}`); \
        409 `lease_held` when another replica is running the job.",
    security(("bearer" = [])),
    params(("job" = String, Path, description = "aggregate, evaluate, retention or webhooks."), TriggerParams),
    responses(
        (status = 200, description = "The finished run.", body = RunRecord),
        (status = 202, description = "Still running (it goes on).", body = RunAccepted),
        (status = 400, description = "`invalid_query`.", body = ErrorBody),
        (status = 401, description = "`unauthorized`.", body = ErrorBody),
        (status = 403, description = "`forbidden`: lacks the `internal` scope.", body = ErrorBody),
        (status = 404, description = "`job_not_found`.", body = ErrorBody),
        (status = 409, description = "`lease_held`: another replica holds the job's lease \
            (details name the holder and when its lease expires).", body = ErrorBody),
        (status = 500, description = "`internal`.", body = ErrorBody),
        (status = 503, description = "`store_unavailable` or `shutting_down`.", body = ErrorBody),
    )
)]
pub async fn run_job(
    State(state): State<AppState>,
    caller: Caller,
    Path(job): Path<String>,
    ApiQuery(params): ApiQuery<TriggerParams>,
) -> Result<Response, ApiError> {
    caller.require(KeyScope::Internal)?;
    let job = job_of(&job)?;
    trigger(&state, job, params.experiment).await
}

/// `POST /v1/internal/experiments/aggregate/run`: the seed API's name for running `aggregate`.
#[utoipa::path(
    post,
    path = "/v1/internal/experiments/aggregate/run",
    tag = "internal",
    summary = "Run the aggregation job now (alias)",
    description = "Requires the `internal` scope. Same as `POST /v1/internal/jobs/aggregate/run`.",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The finished run.", body = RunRecord),
        (status = 202, description = "Still running (it goes on).", body = RunAccepted),
        (status = 401, description = "`unauthorized`.", body = ErrorBody),
        (status = 403, description = "`forbidden`.", body = ErrorBody),
        (status = 409, description = "`lease_held`.", body = ErrorBody),
        (status = 500, description = "`internal`.", body = ErrorBody),
        (status = 503, description = "`store_unavailable` or `shutting_down`.", body = ErrorBody),
    )
)]
pub async fn run_aggregate_alias(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Response, ApiError> {
    caller.require(KeyScope::Internal)?;
    trigger(&state, Job::Aggregate, None).await
}

/// `POST /v1/internal/experiments/retention/run`: the seed API's name for running `retention`.
#[utoipa::path(
    post,
    path = "/v1/internal/experiments/retention/run",
    tag = "internal",
    summary = "Run the retention job now (alias)",
    description = "Requires the `internal` scope. Same as `POST /v1/internal/jobs/retention/run`.",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The finished run.", body = RunRecord),
        (status = 202, description = "Still running (it goes on).", body = RunAccepted),
        (status = 401, description = "`unauthorized`.", body = ErrorBody),
        (status = 403, description = "`forbidden`.", body = ErrorBody),
        (status = 409, description = "`lease_held`.", body = ErrorBody),
        (status = 500, description = "`internal`.", body = ErrorBody),
        (status = 503, description = "`store_unavailable` or `shutting_down`.", body = ErrorBody),
    )
)]
pub async fn run_retention_alias(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Response, ApiError> {
    caller.require(KeyScope::Internal)?;
    trigger(&state, Job::Retention, None).await
}

async fn trigger(
    state: &AppState,
    job: Job,
    experiment: Option<String>,
) -> Result<Response, ApiError> {
    let started = state
        .jobs
        .start(job, Trigger::Http, None, RunOptions { experiment })
        .await
        .map_err(|e| match e {
            StartError::ShuttingDown => ApiError {
                retry_after: Some(5),
                ..ApiError::new(
                    ErrorCode::ShuttingDown,
                    "this replica is shutting down; retry on another",
                )
            },
            StartError::BadRequest(message) => ApiError::new(ErrorCode::InvalidQuery, message),
            StartError::Store(e) => e.into(),
        })?;
    match started {
        Start::Started { run, done } => {
            match tokio::time::timeout(state.settings.jobs.http_wait(), done).await {
                Ok(Ok(finished)) => Ok(Json(finished).into_response()),
                Ok(Err(_)) => Err(ApiError::new(
                    ErrorCode::ShuttingDown,
                    "the run was interrupted by shutdown",
                )),
                Err(_) => Ok((
                    StatusCode::ACCEPTED,
                    Json(RunAccepted {
                        status_url: format!("/v1/internal/jobs/{job}/runs/{}", run.id),
                        run_id: run.id,
                        job,
                    }),
                )
                    .into_response()),
            }
        }
        Start::Held {
            run,
            holder,
            expires_at,
        } => Err(ApiError::new(
            ErrorCode::LeaseHeld,
            format!("another replica ({holder}) is running {job}; try again later"),
        )
        .with_details(vec![json!({
            "holder": holder,
            "lease_expires_at": expires_at
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default(),
            "run_id": run.id,
        })])),
        // Unscheduled runs are not bound to ticks.
        Start::AlreadyRan => Err(ApiError::new(
            ErrorCode::LeaseHeld,
            format!("{job} already ran for this tick"),
        )),
    }
}

/// `GET /v1/internal/jobs`
#[utoipa::path(
    get,
    path = "/v1/internal/jobs",
    tag = "internal",
    summary = "The jobs",
    description = "Requires the `internal` scope. Each job with its schedule, next fire time, \
        last run, current lease holder and lag (for `aggregate`: the age of the oldest raw \
        event not yet aggregated).",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "`{data: [job]}`.", body = Vec<JobStatus>),
        (status = 401, description = "`unauthorized`.", body = ErrorBody),
        (status = 403, description = "`forbidden`.", body = ErrorBody),
        (status = 500, description = "`internal`.", body = ErrorBody),
        (status = 503, description = "`store_unavailable`.", body = ErrorBody),
    )
)]
pub async fn list_jobs(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    caller.require(KeyScope::Internal)?;
    let jobs = state.jobs.status(OffsetDateTime::now_utc()).await?;
    Ok(Json(json!({ "data": jobs })))
}

/// `GET /v1/internal/jobs/{job}/runs`
#[utoipa::path(
    get,
    path = "/v1/internal/jobs/{job}/runs",
    tag = "internal",
    summary = "A job's runs",
    description = "Requires the `internal` scope. Newest first, including attempts skipped \
        because another replica held the lease.",
    security(("bearer" = [])),
    params(("job" = String, Path, description = "aggregate, evaluate, retention or webhooks."), PageParams),
    responses(
        (status = 200, description = "A page of run records.", body = Paginated<RunRecord>),
        (status = 400, description = "`invalid_query` or `invalid_pagination`.", body = ErrorBody),
        (status = 401, description = "`unauthorized`.", body = ErrorBody),
        (status = 403, description = "`forbidden`.", body = ErrorBody),
        (status = 404, description = "`job_not_found`.", body = ErrorBody),
        (status = 500, description = "`internal`.", body = ErrorBody),
        (status = 503, description = "`store_unavailable`.", body = ErrorBody),
    )
)]
pub async fn list_runs(
    State(state): State<AppState>,
    caller: Caller,
    Path(job): Path<String>,
    ApiQuery(params): ApiQuery<PageParams>,
) -> Result<Json<Value>, ApiError> {
    caller.require(KeyScope::Internal)?;
    let job = job_of(&job)?;
    let page = params.to_request()?;
    Ok(Json(paginated(
        state.store.list_runs(Some(job.as_str()), page).await?,
        page,
    )))
}

/// `GET /v1/internal/jobs/{job}/runs/{id}`
#[utoipa::path(
    get,
    path = "/v1/internal/jobs/{job}/runs/{id}",
    tag = "internal",
    summary = "One run",
    description = "Requires the `internal` scope.",
    security(("bearer" = [])),
    params(
        ("job" = String, Path, description = "aggregate, evaluate, retention or webhooks."),
        ("id" = String, Path, description = "The run's id."),
    ),
    responses(
        (status = 200, description = "The run record.", body = RunRecord),
        (status = 401, description = "`unauthorized`.", body = ErrorBody),
        (status = 403, description = "`forbidden`.", body = ErrorBody),
        (status = 404, description = "`job_not_found` or `run_not_found`.", body = ErrorBody),
        (status = 500, description = "`internal`.", body = ErrorBody),
        (status = 503, description = "`store_unavailable`.", body = ErrorBody),
    )
)]
pub async fn get_run(
    State(state): State<AppState>,
    caller: Caller,
    Path((job, id)): Path<(String, String)>,
) -> Result<Json<RunRecord>, ApiError> {
    caller.require(KeyScope::Internal)?;
    let job = job_of(&job)?;
    match state.store.get_run(&id).await? {
        Some(run) if run.job == job.as_str() => Ok(Json(run)),
        _ => Err(ApiError::new(
            ErrorCode::RunNotFound,
            format!("no run '{id}' of {job}"),
        )),
    }
}
