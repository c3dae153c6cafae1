//! The jobs of this process (one registry) and what cron operators ask of them: trigger a
//! run, list the jobs with their schedule, next fire, last run, lease holder and lag, page
//! through a job's runs.

use std::sync::Arc;

use anyhow::Context;
use serde::Serialize;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;
use utoipa::ToSchema;
use verdict_aggregator::evaluate::EvaluateJob;
use verdict_aggregator::jobs::{AggregateConfig, AggregateJob};
use verdict_aggregator::lifecycle::LifecycleJob;
use verdict_cache::DynCache;
use verdict_config::Settings;
pub use verdict_jobs::JobStatus;
use verdict_jobs::{Registry, Runner, RunnerConfig, Start, StartError};
use verdict_metrics::Metrics;
use verdict_retention::RetentionJob;
use verdict_store::{DynStore, RunRecord, Trigger};
use verdict_webhooks::{DeliveryJob, Dispatcher, DispatcherConfig};

use crate::App;
use crate::error::{AppError, ErrorCode};
use crate::pages::{PageParams, Paginated};

/// The runner of every job Verdict has, configured from `settings`.
pub(crate) fn runner(
    store: &DynStore,
    cache: &DynCache,
    settings: &Settings,
    metrics: &Metrics,
    stop: &CancellationToken,
    publisher: &verdict_publish::Publisher,
) -> anyhow::Result<Runner> {
    let jobs = &settings.jobs;
    let dispatcher = Dispatcher::new(
        store.clone(),
        DispatcherConfig::from_settings(&settings.webhooks),
    )
    .context("building the webhook HTTP client")?;
    let registry = Registry::new()
        .with(AggregateJob::new(
            store.clone(),
            cache.clone(),
            metrics.clone(),
            AggregateConfig {
                schedule: jobs.aggregate_schedule.clone(),
                max_abs_value: settings.ingest.max_abs_value,
                metrics_push_interval: jobs.metrics_push_interval(),
            },
        ))
        .with(EvaluateJob::new(
            store.clone(),
            cache.clone(),
            jobs.evaluate_schedule.clone(),
        ))
        .with(LifecycleJob::new(
            store.clone(),
            cache.clone(),
            jobs.lifecycle_schedule.clone(),
        ))
        .with(RetentionJob::new(
            store.clone(),
            settings.retention.clone(),
            jobs.retention_schedule.clone(),
        ))
        .with(DeliveryJob::new(dispatcher, metrics.clone()))
        .with(verdict_publish::PublishJob::new(
            publisher.clone(),
            jobs.publish_schedule.clone(),
        ));
    let config = RunnerConfig {
        owner: format!(
            "{}-{}-{}",
            jobs.instance,
            std::process::id(),
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        ),
        lease: jobs.lease(),
        scheduled: jobs.enabled,
    };
    let job_store: Arc<dyn verdict_store::JobStore> = store.clone();
    Ok(Runner::new(
        job_store,
        registry,
        config,
        metrics.clone(),
        stop.clone(),
    ))
}

/// The answer to a trigger.
#[derive(Debug)]
pub enum Triggered {
    /// The run finished within the wait: its record (`outcome` says whether it succeeded).
    Finished(RunRecord),
    /// Still running when the wait ended.
    Accepted(RunAccepted),
}

/// A run still going when the trigger stopped waiting.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunAccepted {
    pub run_id: String,
    pub job: String,
    /// Where to read the run record (`GET`).
    pub status_url: String,
}

/// Every job, for `GET /v1/internal/jobs`.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobList {
    pub data: Vec<JobStatus>,
}

impl From<StartError> for AppError {
    fn from(e: StartError) -> Self {
        match e {
            StartError::UnknownJob { .. } => AppError::new(ErrorCode::JobNotFound, e.to_string()),
            StartError::ShuttingDown => AppError::new(
                ErrorCode::ShuttingDown,
                "this replica is shutting down; retry on another",
            )
            .retry_after(5),
            StartError::Invalid(message) => AppError::new(ErrorCode::InvalidQuery, message),
            StartError::Store(e) => e.into(),
        }
    }
}

impl App {
    fn check_job(&self, name: &str) -> Result<(), AppError> {
        let names = self.0.runner.names();
        if names.contains(&name) {
            Ok(())
        } else {
            Err(AppError::new(
                ErrorCode::JobNotFound,
                format!("no job '{name}'; jobs are {}", names.join(", ")),
            ))
        }
    }

    /// Run `job` now under its lease (as the scheduler does) and wait up to
    /// `jobs.http_wait_seconds` for it; `lease_held` when another replica is running it.
    pub async fn trigger_job(
        &self,
        job: &str,
        experiment: Option<String>,
    ) -> Result<Triggered, AppError> {
        let wait = self.0.settings.jobs.http_wait();
        match self
            .0
            .runner
            .start(job, Trigger::Http, None, experiment)
            .await?
        {
            Start::Started { run, done } => match tokio::time::timeout(wait, done).await {
                Ok(Ok(finished)) => Ok(Triggered::Finished(finished)),
                Ok(Err(_)) => Err(AppError::new(
                    ErrorCode::ShuttingDown,
                    "the run was interrupted by shutdown",
                )),
                Err(_) => Ok(Triggered::Accepted(RunAccepted {
                    status_url: format!("/v1/internal/jobs/{job}/runs/{}", run.id),
                    run_id: run.id,
                    job: job.to_owned(),
                })),
            },
            Start::Held {
                run,
                holder,
                expires_at,
            } => Err(AppError::new(
                ErrorCode::LeaseHeld,
                format!("another replica ({holder}) is running {job}; try again later"),
            )
            .with_details(vec![serde_json::json!({
                "holder": holder,
                "lease_expires_at": expires_at
                    .format(&time::format_description::well_known::Rfc3339)
                    .unwrap_or_default(),
                "run_id": run.id,
            })])),
            // Unscheduled runs are not bound to ticks.
            Start::AlreadyRan => Err(AppError::new(
                ErrorCode::LeaseHeld,
                format!("{job} already ran for this tick"),
            )),
        }
    }

    /// Every job with its schedule, next fire time, last run, lease holder and lag.
    pub async fn jobs(&self) -> Result<JobList, AppError> {
        let data = self
            .0
            .runner
            .status(OffsetDateTime::now_utc())
            .await
            .map_err(|e| match e {
                verdict_jobs::JobError::Store(e) => e.into(),
                e => AppError::internal(e),
            })?;
        Ok(JobList { data })
    }

    /// A page of `job`'s runs, newest first.
    pub async fn job_runs(
        &self,
        job: &str,
        page: PageParams,
    ) -> Result<Paginated<RunRecord>, AppError> {
        self.check_job(job)?;
        let page = page.to_request()?;
        Ok(Paginated::of(
            self.0.store.list_runs(Some(job), page).await?,
            page,
        ))
    }

    /// One run of `job`.
    pub async fn job_run(&self, job: &str, id: &str) -> Result<RunRecord, AppError> {
        self.check_job(job)?;
        match self.0.store.get_run(id).await? {
            Some(run) if run.job == job => Ok(run),
            _ => Err(AppError::new(
                ErrorCode::RunNotFound,
                format!("no run '{id}' of {job}"),
            )),
        }
    }
}
