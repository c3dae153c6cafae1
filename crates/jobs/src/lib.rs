//! The job framework: every run of `aggregate`, `evaluate`, `retention` and `webhooks`,
//! whoever triggers it (the schedule, the internal HTTP API, `verdict run`), goes through
//! [`Jobs::start`]:
//!
//! 1. take the job's **lease** in the store (one holder at a time across replicas; for a
//!    scheduled tick, a tick another replica already ran is not run again);
//! 2. write a **run record** (`running`), run the job, renewing the lease every third of its
//!    duration; the job's writes carry the lease's **fencing token**, so if the lease is lost
//!    (this process stalled past expiry and another took over) the store refuses them and
//!    the run stops;
//! 3. finish the record (`succeeded` / `failed`, the job's report, the error), release the
//!    lease, count the run in the metrics.
//!
//! When the lease is held elsewhere the attempt is recorded as `skipped_lease_held` and the
//! caller learns who holds it (the HTTP API answers 409).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tokio::sync::{Notify, oneshot};
use verdict_cache::DynCache;
use verdict_config::Settings;
use verdict_domain::Scope;
use verdict_metrics::Metrics;
use verdict_store::{
    DynStore, Lease, LeaseGrant, PageRequest, RunOutcome, RunRecord, StoreError, Trigger,
};

/// The jobs Verdict runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Job {
    Aggregate,
    Evaluate,
    Retention,
    Webhooks,
}

impl Job {
    pub const ALL: [Job; 4] = [Job::Aggregate, Job::Evaluate, Job::Retention, Job::Webhooks];

    pub fn as_str(self) -> &'static str {
        match self {
            Job::Aggregate => "aggregate",
            Job::Evaluate => "evaluate",
            Job::Retention => "retention",
            Job::Webhooks => "webhooks",
        }
    }

    pub fn parse(name: &str) -> Option<Job> {
        Job::ALL.into_iter().find(|j| j.as_str() == name)
    }

    /// The job's cron schedule; `None` for the continuous webhook delivery loop.
    pub fn schedule(self, settings: &Settings) -> Option<&str> {
        match self {
            Job::Aggregate => Some(&settings.jobs.aggregate_schedule),
            Job::Evaluate => Some(&settings.jobs.evaluate_schedule),
            Job::Retention => Some(&settings.jobs.retention_schedule),
            Job::Webhooks => None,
        }
    }
}

impl std::fmt::Display for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How long one run of the continuous `webhooks` job lasts before it records itself and the
/// loop starts the next (under a fresh lease grant): bounds run records to one a minute.
pub const CONTINUOUS_RUN: Duration = Duration::from_secs(60);

/// Options of one run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunOptions {
    /// `evaluate` only: evaluate just this experiment (its id, or its key in the default
    /// scope).
    pub experiment: Option<String>,
}

/// Why a run could not be started.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("the process is shutting down; no new runs start")]
    ShuttingDown,
    #[error("{0}")]
    BadRequest(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The answer to [`Jobs::start`].
#[derive(Debug)]
pub enum Start {
    /// Running: `run` is its record as started; `done` yields the finished record.
    Started {
        run: RunRecord,
        done: oneshot::Receiver<RunRecord>,
    },
    /// Another holder has the lease; `run` is the recorded `skipped_lease_held` attempt.
    Held {
        run: RunRecord,
        holder: String,
        expires_at: OffsetDateTime,
    },
    /// The scheduled tick already ran on some replica.
    AlreadyRan,
}

/// The body of the `webhooks` job, which the binary provides (the dispatcher), so this crate
/// does not depend on HTTP delivery. Called with the run's trigger and a receiver that turns
/// `true` when the process shuts down; returns the run's report (counts `delivered`,
/// `retried`, `failed`, …).
pub type ExternalJob = Arc<
    dyn Fn(
            Trigger,
            tokio::sync::watch::Receiver<bool>,
        ) -> Pin<Box<dyn Future<Output = Result<serde_json::Value, String>> + Send>>
        + Send
        + Sync,
>;

/// Runs jobs under leases and records them. Cheap to clone.
#[derive(Clone)]
pub struct Jobs {
    inner: Arc<Inner>,
}

struct Inner {
    store: DynStore,
    cache: DynCache,
    settings: Arc<Settings>,
    metrics: Metrics,
    owner: String,
    webhooks: std::sync::RwLock<Option<ExternalJob>>,
    stopping: AtomicBool,
    /// Turns `true` on shutdown (for long runs to end early).
    stop: tokio::sync::watch::Sender<bool>,
    running: AtomicUsize,
    idle: Notify,
}

impl std::fmt::Debug for Jobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jobs")
            .field("owner", &self.inner.owner)
            .finish_non_exhaustive()
    }
}

/// What `GET /v1/internal/jobs` shows of one job.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobStatus {
    pub job: Job,
    /// Cron schedule (seconds first, UTC); `null` for the continuous webhook loop.
    pub schedule: Option<String>,
    /// Whether this deployment's scheduler runs it (`jobs.enabled`).
    pub scheduled: bool,
    #[serde(with = "time::serde::rfc3339::option")]
    pub next_run_at: Option<OffsetDateTime>,
    pub last_run: Option<RunRecord>,
    /// The current holder of the job's lease, while unexpired.
    pub lease_holder: Option<String>,
    /// How far behind the job is: for `aggregate`, the age of the oldest raw event not yet
    /// aggregated (0 when caught up).
    pub lag_seconds: Option<f64>,
}

impl Jobs {
    pub fn new(
        store: DynStore,
        cache: DynCache,
        settings: Arc<Settings>,
        metrics: Metrics,
    ) -> Self {
        let owner = format!(
            "{}-{}-{}",
            std::env::var("HOSTNAME").unwrap_or_else(|_| "verdict".into()),
            std::process::id(),
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        Self {
            inner: Arc::new(Inner {
                store,
                cache,
                settings,
                metrics,
                owner,
                webhooks: std::sync::RwLock::new(None),
                stopping: AtomicBool::new(false),
                stop: tokio::sync::watch::channel(false).0,
                running: AtomicUsize::new(0),
                idle: Notify::new(),
            }),
        }
    }

    /// This process's name in leases and run records.
    pub fn owner(&self) -> &str {
        &self.inner.owner
    }

    pub fn store(&self) -> &DynStore {
        &self.inner.store
    }

    pub fn settings(&self) -> &Settings {
        &self.inner.settings
    }

    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// Whether this process can run the `webhooks` job.
    pub fn has_webhooks_job(&self) -> bool {
        self.inner
            .webhooks
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }

    /// A receiver that turns `true` when [`Jobs::shutdown`] is called.
    pub fn stopped(&self) -> tokio::sync::watch::Receiver<bool> {
        self.inner.stop.subscribe()
    }

    /// Provide the body of the `webhooks` job (the dispatcher).
    pub fn set_webhooks_job(&self, job: ExternalJob) {
        *self
            .inner
            .webhooks
            .write()
            .unwrap_or_else(|p| p.into_inner()) = Some(job);
    }

    /// Start a run of `job` (see the crate docs). `tick` is the scheduled time a `schedule`
    /// run is for.
    pub async fn start(
        &self,
        job: Job,
        trigger: Trigger,
        tick: Option<OffsetDateTime>,
        options: RunOptions,
    ) -> Result<Start, StartError> {
        if self.inner.stopping.load(Ordering::SeqCst) {
            return Err(StartError::ShuttingDown);
        }
        if options.experiment.is_some() && job != Job::Evaluate {
            return Err(StartError::BadRequest(format!(
                "only the evaluate job runs for one experiment; {job} runs for all"
            )));
        }
        let store = &self.inner.store;
        let ttl = self.inner.settings.jobs.lease();
        let now = OffsetDateTime::now_utc();
        let mut run = RunRecord {
            id: format!("run_{}", uuid::Uuid::now_v7().simple()),
            job: job.as_str().to_owned(),
            trigger,
            owner: self.inner.owner.clone(),
            tick,
            fencing_token: None,
            started_at: verdict_store::model::truncate_to_millis(now),
            finished_at: None,
            outcome: RunOutcome::Running,
            report: serde_json::Value::Null,
            error: None,
        };
        let lease = match store
            .acquire_lease(job.as_str(), &self.inner.owner, ttl, now, tick)
            .await?
        {
            LeaseGrant::Acquired(lease) => lease,
            LeaseGrant::AlreadyRan => return Ok(Start::AlreadyRan),
            LeaseGrant::Held { owner, expires_at } => {
                run.outcome = RunOutcome::SkippedLeaseHeld;
                run.finished_at = Some(run.started_at);
                run.error = Some(format!(
                    "{owner} holds the lease of {job} until {expires_at}"
                ));
                store.put_run(&run).await?;
                self.inner
                    .metrics
                    .job_run(job.as_str(), run.outcome.as_str(), 0.0);
                return Ok(Start::Held {
                    run,
                    holder: owner,
                    expires_at,
                });
            }
        };
        run.fencing_token = Some(lease.token);
        self.close_abandoned(job, &lease, now).await;
        if let Err(e) = store.put_run(&run).await {
            let _ = store.release_lease(&lease, OffsetDateTime::now_utc()).await;
            return Err(e.into());
        }
        self.inner.running.fetch_add(1, Ordering::SeqCst);
        let (tx, done) = oneshot::channel();
        let this = self.clone();
        let started = run.clone();
        tokio::spawn(async move {
            let finished = this.execute(job, run, lease, options).await;
            if this.inner.running.fetch_sub(1, Ordering::SeqCst) == 1 {
                this.inner.idle.notify_waiters();
            }
            let _ = tx.send(finished);
        });
        Ok(Start::Started { run: started, done })
    }

    /// Runs of `job` still marked running under an older token than `lease`'s belong to a
    /// holder whose lease lapsed (it crashed, or stalled and will be fenced off): close them
    /// as failed so the history does not show them running forever.
    async fn close_abandoned(&self, job: Job, lease: &Lease, now: OffsetDateTime) {
        let recent = match self
            .inner
            .store
            .list_runs(
                Some(job.as_str()),
                PageRequest {
                    page: 1,
                    page_size: 20,
                },
            )
            .await
        {
            Ok(page) => page.items,
            Err(e) => {
                tracing::warn!(%job, error = %e, "listing runs to close abandoned ones");
                return;
            }
        };
        for mut stale in recent.into_iter().filter(|r| {
            r.outcome == RunOutcome::Running && r.fencing_token.is_some_and(|t| t < lease.token)
        }) {
            tracing::warn!(%job, run = %stale.id, owner = %stale.owner, "closing a run whose holder lost its lease");
            stale.outcome = RunOutcome::Failed;
            stale.finished_at = Some(verdict_store::model::truncate_to_millis(now));
            stale.error = Some(format!(
                "abandoned: its holder stopped renewing the lease (crashed or stalled); \
                 {} took the job over with fencing token {}",
                lease.owner, lease.token
            ));
            if let Err(e) = self.inner.store.put_run(&stale).await {
                tracing::warn!(%job, error = %e, "closing an abandoned run");
            }
        }
    }

    /// [`Jobs::start`] and wait for the run: the finished record, the recorded skip when the
    /// lease is held elsewhere, or `None` when the tick already ran.
    pub async fn run(
        &self,
        job: Job,
        trigger: Trigger,
        tick: Option<OffsetDateTime>,
        options: RunOptions,
    ) -> Result<Option<RunRecord>, StartError> {
        match self.start(job, trigger, tick, options).await? {
            Start::Started { run, done } => Ok(Some(done.await.unwrap_or_else(|_| {
                // The run task was dropped (runtime shutting down): report what is known.
                RunRecord {
                    outcome: RunOutcome::Failed,
                    error: Some("the run was interrupted".into()),
                    ..run
                }
            }))),
            Start::Held { run, .. } => Ok(Some(run)),
            Start::AlreadyRan => Ok(None),
        }
    }

    /// Refuse new runs from now on, and wait up to `grace` for the running ones to finish
    /// (they release their leases as they do). `true` when all finished.
    pub async fn shutdown(&self, grace: Duration) -> bool {
        self.inner.stopping.store(true, Ordering::SeqCst);
        self.inner.stop.send_replace(true);
        let wait = async {
            loop {
                let notified = self.inner.idle.notified();
                if self.inner.running.load(Ordering::SeqCst) == 0 {
                    return;
                }
                notified.await;
            }
        };
        tokio::time::timeout(grace, wait).await.is_ok()
    }

    /// Whether [`Jobs::shutdown`] was called.
    pub fn is_stopping(&self) -> bool {
        self.inner.stopping.load(Ordering::SeqCst)
    }

    /// Run the job body under `lease`, renewing it; record and release at the end.
    async fn execute(
        &self,
        job: Job,
        mut run: RunRecord,
        mut lease: Lease,
        options: RunOptions,
    ) -> RunRecord {
        let store = self.inner.store.clone();
        let ttl = self.inner.settings.jobs.lease();
        let clock = Instant::now();
        let this = self.clone();
        let body_lease = lease.clone();
        // Its own task, so a panic in a job is a failed run, not a lost record.
        let trigger = run.trigger;
        let mut body =
            tokio::spawn(async move { this.body(job, trigger, body_lease, options).await });
        let renew_every = ttl / 3;
        let result = loop {
            tokio::select! {
                joined = &mut body => {
                    break joined.unwrap_or_else(|e| Err(format!("the job panicked: {e}")));
                }
                () = tokio::time::sleep(renew_every) => {
                    match store.renew_lease(&lease, ttl, OffsetDateTime::now_utc()).await {
                        Ok(Some(renewed)) => lease = renewed,
                        Ok(None) => {
                            body.abort();
                            break Err(format!(
                                "lost the lease of {job} to a newer holder; run stopped"
                            ));
                        }
                        // Not fatal: the fencing token still guards the writes.
                        Err(e) => tracing::warn!(%job, error = %e, "renewing a job lease"),
                    }
                }
            }
        };
        let seconds = clock.elapsed().as_secs_f64();
        run.finished_at = Some(verdict_store::model::truncate_to_millis(
            OffsetDateTime::now_utc(),
        ));
        match result {
            Ok(report) => {
                run.outcome = RunOutcome::Succeeded;
                run.report = report;
            }
            Err(error) => {
                run.outcome = RunOutcome::Failed;
                run.error = Some(error);
            }
        }
        match run.outcome {
            RunOutcome::Succeeded => {
                tracing::info!(%job, run = %run.id, trigger = run.trigger.as_str(), seconds, report = %run.report, "job run succeeded")
            }
            _ => {
                tracing::error!(%job, run = %run.id, trigger = run.trigger.as_str(), seconds, error = run.error.as_deref().unwrap_or(""), "job run failed")
            }
        }
        if let Err(e) = store.put_run(&run).await {
            tracing::error!(%job, run = %run.id, error = %e, "recording a finished run");
        }
        if let Err(e) = store.release_lease(&lease, OffsetDateTime::now_utc()).await {
            tracing::warn!(%job, error = %e, "releasing a job lease (it will expire)");
        }
        self.inner
            .metrics
            .job_run(job.as_str(), run.outcome.as_str(), seconds);
        run
    }

    /// The job itself; its report as JSON, or the error text.
    async fn body(
        &self,
        job: Job,
        trigger: Trigger,
        lease: Lease,
        options: RunOptions,
    ) -> Result<serde_json::Value, String> {
        let store = &self.inner.store;
        let now = OffsetDateTime::now_utc();
        match job {
            Job::Aggregate => {
                let report = verdict_aggregator::jobs::aggregate_fenced(
                    store,
                    verdict_aggregator::jobs::DEFAULT_STEP,
                    Some(&lease.fence()),
                )
                .await;
                json(report)
            }
            Job::Evaluate => match options.experiment {
                None => json(
                    verdict_aggregator::evaluate::evaluate(store, &self.inner.cache, now).await,
                ),
                Some(key) => {
                    let experiment = store
                        .get_experiment(&Scope::default(), &key)
                        .await
                        .map_err(|e| e.to_string())?
                        .ok_or_else(|| format!("no experiment '{key}' in the default scope"))?;
                    json(
                        verdict_aggregator::evaluate::evaluate_one(
                            store,
                            &self.inner.cache,
                            &experiment,
                            now,
                        )
                        .await,
                    )
                }
            },
            Job::Retention => json(
                verdict_retention::run(
                    store,
                    &self.inner.settings.retention,
                    now,
                    Some(&lease.fence()),
                )
                .await,
            ),
            Job::Webhooks => {
                let body = self
                    .inner
                    .webhooks
                    .read()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone();
                let Some(f) = body else {
                    return Err("webhook delivery is not configured in this process".into());
                };
                let report = f(trigger, self.stopped()).await?;
                let metrics = &self.inner.metrics;
                for outcome in ["delivered", "retried", "failed"] {
                    metrics.webhook_attempts(outcome, report[outcome].as_u64().unwrap_or(0));
                }
                Ok(report)
            }
        }
    }

    /// Every job's schedule, next fire time, last run, lease holder and lag.
    pub async fn status(&self, now: OffsetDateTime) -> Result<Vec<JobStatus>, StoreError> {
        let store = &self.inner.store;
        let settings = &self.inner.settings;
        let mut all = Vec::new();
        for job in Job::ALL {
            let schedule = job.schedule(settings).map(str::to_owned);
            let last_run = store
                .list_runs(
                    Some(job.as_str()),
                    PageRequest {
                        page: 1,
                        page_size: 1,
                    },
                )
                .await?
                .items
                .into_iter()
                .next();
            let lease_holder = store
                .get_lease(job.as_str())
                .await?
                .filter(|l| l.expires_at > now)
                .map(|l| l.owner);
            let lag_seconds = match job {
                Job::Aggregate => Some(self.aggregation_lag(now).await?),
                _ => None,
            };
            all.push(JobStatus {
                job,
                next_run_at: schedule
                    .as_deref()
                    .and_then(|s| verdict_config::next_fire(s, now)),
                schedule,
                scheduled: settings.jobs.enabled,
                last_run,
                lease_holder,
                lag_seconds,
            });
        }
        Ok(all)
    }

    /// Seconds since the oldest raw event not yet aggregated was received (0 when caught up).
    pub async fn aggregation_lag(&self, now: OffsetDateTime) -> Result<f64, StoreError> {
        let store = &self.inner.store;
        let watermark = store.rollup_watermark().await?;
        let lag = match store.scan_events(watermark, 1).await?.first() {
            Some(e) => (now - e.received_at).as_seconds_f64().max(0.0),
            None => 0.0,
        };
        self.inner.metrics.set_aggregation_lag(lag);
        Ok(lag)
    }
}

/// A job's result as a run report.
fn json<T: Serialize>(result: Result<T, StoreError>) -> Result<serde_json::Value, String> {
    result
        .map_err(|e| e.to_string())
        .and_then(|r| serde_json::to_value(r).map_err(|e| e.to_string()))
}
