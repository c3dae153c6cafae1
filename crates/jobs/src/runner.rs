//! The runner: every run of every registered job, whoever triggers it (the schedule, the
//! internal HTTP API, `verdict run`), goes through [`Runner::start`]:
//!
//! 1. take the job's **lease** in the store (one holder at a time across replicas; for a
//!    scheduled tick, a tick another replica already ran is not run again);
//! 2. write a **run record** (`running`), run the job in its own task, renewing the lease
//!    every third of its duration; the job's writes carry the lease's **fencing token**, so
//!    if the lease is lost (this process stalled past expiry and another took over) the
//!    store refuses them, and the runner stops the run when a renewal finds the lease gone;
//! 3. finish the record (`succeeded` / `failed` with the report or the error and its
//!    causes), release the lease, count the run in the metrics.
//!
//! When the lease is held elsewhere the attempt is recorded as `skipped_lease_held` and the
//! caller learns who holds it (the HTTP API answers 409).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde::Serialize;
use time::OffsetDateTime;
use tokio::sync::{Notify, oneshot};
use tokio_util::sync::CancellationToken;
use verdict_domain::ErrorChain;
use verdict_metrics::Metrics;
use verdict_store::{
    JobStore, Lease, LeaseGrant, PageRequest, RunOutcome, RunRecord, StoreError, Trigger,
};

use crate::job::{AnyJob, Job, JobError, RunContext, Schedule};

/// The jobs a process can run, in the order they are listed.
#[derive(Debug, Default)]
pub struct Registry {
    jobs: Vec<Arc<dyn AnyJob>>,
}

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }

    /// Add `job` (names must be unique: a second job of the same name is refused).
    pub fn with(mut self, job: impl Job) -> Self {
        assert!(
            self.jobs.iter().all(|j| j.name() != job.name()),
            "two jobs named {}",
            job.name()
        );
        self.jobs.push(Arc::new(job));
        self
    }
}

/// Where the runner reads the time. Leases are compared across replicas, so production
/// uses the system clock; tests use [`Clock::tokio`], whose time moves with Tokio's paused
/// clock, to let leases expire without waiting.
#[derive(Debug, Clone, Copy)]
pub enum Clock {
    System,
    /// The system time at creation plus the Tokio time elapsed since.
    Tokio {
        base: OffsetDateTime,
        at: tokio::time::Instant,
    },
}

impl Clock {
    pub fn tokio() -> Self {
        Clock::Tokio {
            base: OffsetDateTime::now_utc(),
            at: tokio::time::Instant::now(),
        }
    }

    pub fn now(&self) -> OffsetDateTime {
        match self {
            Clock::System => OffsetDateTime::now_utc(),
            Clock::Tokio { base, at } => *base + at.elapsed(),
        }
    }
}

/// How a runner runs.
#[derive(Debug, Clone)]
pub struct RunnerConfig {
    /// This process's name in leases and run records.
    pub owner: String,
    /// How long a lease lasts without renewal (renewed every third of it).
    pub lease: Duration,
    /// Whether this deployment schedules the jobs (`jobs.enabled`), for [`JobStatus`].
    pub scheduled: bool,
}

/// Why a run could not be started.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("no job '{name}'; jobs are {known}")]
    UnknownJob { name: String, known: String },
    #[error("the process is shutting down; no new runs start")]
    ShuttingDown,
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The answer to [`Runner::start`].
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

/// What `GET /v1/internal/jobs` shows of one job.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobStatus {
    /// The job's name.
    pub job: String,
    /// Cron schedule (seconds first, UTC); `null` for a continuous job.
    pub schedule: Option<String>,
    /// Whether this deployment's scheduler runs it (`jobs.enabled`).
    pub scheduled: bool,
    #[serde(with = "time::serde::rfc3339::option")]
    pub next_run_at: Option<OffsetDateTime>,
    pub last_run: Option<RunRecord>,
    /// The current holder of the job's lease, while unexpired.
    pub lease_holder: Option<String>,
    /// How far behind the job is (for `aggregate`: the age of the oldest raw event not yet
    /// aggregated, 0 when caught up); `null` for jobs without such a notion.
    pub lag_seconds: Option<f64>,
}

/// Runs registered jobs under leases and records them. Cheap to clone.
#[derive(Clone)]
pub struct Runner {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn JobStore>,
    jobs: Vec<Arc<dyn AnyJob>>,
    config: RunnerConfig,
    metrics: Metrics,
    clock: Clock,
    /// Cancelled on shutdown: no new run starts, running ones are told to stop.
    stop: CancellationToken,
    running: AtomicUsize,
    idle: Notify,
}

impl std::fmt::Debug for Runner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runner")
            .field("owner", &self.inner.config.owner)
            .field("jobs", &self.names())
            .finish_non_exhaustive()
    }
}

impl Runner {
    /// A runner of `registry`'s jobs. `stop` is the process's shutdown signal.
    pub fn new(
        store: Arc<dyn JobStore>,
        registry: Registry,
        config: RunnerConfig,
        metrics: Metrics,
        stop: CancellationToken,
    ) -> Self {
        Self::with_clock(store, registry, config, metrics, stop, Clock::System)
    }

    /// [`Runner::new`] reading the time from `clock`.
    pub fn with_clock(
        store: Arc<dyn JobStore>,
        registry: Registry,
        config: RunnerConfig,
        metrics: Metrics,
        stop: CancellationToken,
        clock: Clock,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                jobs: registry.jobs,
                config,
                metrics,
                clock,
                stop,
                running: AtomicUsize::new(0),
                idle: Notify::new(),
            }),
        }
    }

    /// The registered jobs' names, in registration order.
    pub fn names(&self) -> Vec<&'static str> {
        self.inner.jobs.iter().map(|j| j.name()).collect()
    }

    /// The schedule of the job called `name`.
    pub fn schedule_of(&self, name: &str) -> Option<Schedule> {
        self.job(name).map(|j| j.schedule())
    }

    pub(crate) fn jobs(&self) -> &[Arc<dyn AnyJob>] {
        &self.inner.jobs
    }

    fn job(&self, name: &str) -> Option<&Arc<dyn AnyJob>> {
        self.inner.jobs.iter().find(|j| j.name() == name)
    }

    /// This process's name in leases and run records.
    pub fn owner(&self) -> &str {
        &self.inner.config.owner
    }

    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    pub(crate) fn store(&self) -> &Arc<dyn JobStore> {
        &self.inner.store
    }

    pub(crate) fn lease_duration(&self) -> Duration {
        self.inner.config.lease
    }

    pub(crate) fn now(&self) -> OffsetDateTime {
        self.inner.clock.now()
    }

    /// The shutdown signal runs and schedules watch.
    pub fn stop_token(&self) -> &CancellationToken {
        &self.inner.stop
    }

    /// Whether shutdown has begun.
    pub fn is_stopping(&self) -> bool {
        self.inner.stop.is_cancelled()
    }

    /// Start a run of the job called `name` (see the module docs). `tick` is the scheduled
    /// time a `schedule` run is for; `experiment` narrows a job that takes one.
    pub async fn start(
        &self,
        name: &str,
        trigger: Trigger,
        tick: Option<OffsetDateTime>,
        experiment: Option<String>,
    ) -> Result<Start, StartError> {
        let job = self
            .job(name)
            .ok_or_else(|| StartError::UnknownJob {
                name: name.to_owned(),
                known: self.names().join(", "),
            })?
            .clone();
        if self.is_stopping() {
            return Err(StartError::ShuttingDown);
        }
        if experiment.is_some() && !job.takes_experiment() {
            return Err(StartError::Invalid(format!(
                "the {name} job runs for every experiment; it cannot be narrowed to one"
            )));
        }
        let store = &self.inner.store;
        let now = self.now();
        let mut run = RunRecord {
            id: format!("run_{}", uuid::Uuid::now_v7().simple()),
            job: name.to_owned(),
            trigger,
            owner: self.owner().to_owned(),
            tick,
            fencing_token: None,
            started_at: verdict_store::model::truncate_to_millis(now),
            finished_at: None,
            outcome: RunOutcome::Running,
            report: serde_json::Value::Null,
            error: None,
        };
        let lease = match store
            .acquire_lease(name, self.owner(), self.inner.config.lease, now, tick)
            .await?
        {
            LeaseGrant::Acquired(lease) => lease,
            LeaseGrant::AlreadyRan => return Ok(Start::AlreadyRan),
            LeaseGrant::Held { owner, expires_at } => {
                run.outcome = RunOutcome::SkippedLeaseHeld;
                run.finished_at = Some(run.started_at);
                run.error = Some(format!(
                    "{owner} holds the lease of {name} until {expires_at}"
                ));
                store.put_run(&run).await?;
                self.inner.metrics.job_run(name, run.outcome.as_str(), 0.0);
                return Ok(Start::Held {
                    run,
                    holder: owner,
                    expires_at,
                });
            }
        };
        run.fencing_token = Some(lease.token);
        self.close_abandoned(name, &lease, now).await;
        if let Err(e) = store.put_run(&run).await {
            let _ = store.release_lease(&lease, self.now()).await;
            return Err(e.into());
        }
        self.inner.running.fetch_add(1, Ordering::SeqCst);
        let (tx, done) = oneshot::channel();
        let this = self.clone();
        let started = run.clone();
        tokio::spawn(async move {
            let finished = this.execute(job, run, lease, experiment).await;
            if this.inner.running.fetch_sub(1, Ordering::SeqCst) == 1 {
                this.inner.idle.notify_waiters();
            }
            let _ = tx.send(finished);
        });
        Ok(Start::Started { run: started, done })
    }

    /// [`Runner::start`] and wait for the run: the finished record, the recorded skip when
    /// the lease is held elsewhere, or `None` when the tick already ran.
    pub async fn run(
        &self,
        name: &str,
        trigger: Trigger,
        tick: Option<OffsetDateTime>,
        experiment: Option<String>,
    ) -> Result<Option<RunRecord>, StartError> {
        match self.start(name, trigger, tick, experiment).await? {
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

    /// Runs of `name` still marked running under an older token than `lease`'s belong to a
    /// holder whose lease lapsed (it crashed, or stalled and will be fenced off): close them
    /// as failed so the history does not show them running forever.
    async fn close_abandoned(&self, name: &str, lease: &Lease, now: OffsetDateTime) {
        let page = PageRequest {
            page: 1,
            page_size: 20,
        };
        let recent = match self.inner.store.list_runs(Some(name), page).await {
            Ok(page) => page.items,
            Err(e) => {
                tracing::warn!(job = name, error = %ErrorChain(&e), "listing runs to close abandoned ones");
                return;
            }
        };
        for mut stale in recent.into_iter().filter(|r| {
            r.outcome == RunOutcome::Running && r.fencing_token.is_some_and(|t| t < lease.token)
        }) {
            tracing::warn!(job = name, run = %stale.id, owner = %stale.owner, "closing a run whose holder lost its lease");
            stale.outcome = RunOutcome::Failed;
            stale.finished_at = Some(verdict_store::model::truncate_to_millis(now));
            stale.error = Some(format!(
                "abandoned: its holder stopped renewing the lease (crashed or stalled); \
                 {} took the job over with fencing token {}",
                lease.owner, lease.token
            ));
            if let Err(e) = self.inner.store.put_run(&stale).await {
                tracing::warn!(job = name, error = %ErrorChain(&e), "closing an abandoned run");
            }
        }
    }

    /// Cancel the shutdown signal (no new run starts; running ones are told to stop) and
    /// wait until `deadline` for the running ones to finish (they release their leases as
    /// they do). `true` when all finished.
    pub async fn shutdown(&self, deadline: tokio::time::Instant) -> bool {
        self.inner.stop.cancel();
        let wait = async {
            loop {
                let notified = self.inner.idle.notified();
                if self.inner.running.load(Ordering::SeqCst) == 0 {
                    return;
                }
                notified.await;
            }
        };
        tokio::time::timeout_at(deadline, wait).await.is_ok()
    }

    /// Run `job` under `lease`, renewing it; record and release at the end.
    async fn execute(
        &self,
        job: Arc<dyn AnyJob>,
        mut run: RunRecord,
        mut lease: Lease,
        experiment: Option<String>,
    ) -> RunRecord {
        let name = job.name();
        let store = self.inner.store.clone();
        let ttl = self.inner.config.lease;
        let clock = tokio::time::Instant::now();
        let ctx = RunContext {
            trigger: run.trigger,
            fence: lease.fence(),
            experiment,
            stop: self.inner.stop.child_token(),
            started_at: run.started_at,
        };
        // Its own task, so a panic in a job is a failed run, not a lost record.
        let mut body = tokio::spawn(async move { job.run_json(ctx).await });
        let mut renew = tokio::time::interval_at(clock + ttl / 3, ttl / 3);
        let result: Result<serde_json::Value, String> = loop {
            tokio::select! {
                joined = &mut body => {
                    break match joined {
                        Ok(Ok(report)) => Ok(report),
                        Ok(Err(e)) => Err(ErrorChain(&e).to_string()),
                        Err(e) => Err(format!("the job panicked: {e}")),
                    };
                }
                _ = renew.tick() => {
                    match store.renew_lease(&lease, ttl, self.now()).await {
                        Ok(Some(renewed)) => lease = renewed,
                        Ok(None) => {
                            body.abort();
                            break Err(format!(
                                "lost the lease of {name} to a newer holder; run stopped"
                            ));
                        }
                        // Not fatal: the fencing token still guards the writes.
                        Err(e) => tracing::warn!(job = name, error = %ErrorChain(&e), "renewing a job lease"),
                    }
                }
            }
        };
        let seconds = clock.elapsed().as_secs_f64();
        run.finished_at = Some(verdict_store::model::truncate_to_millis(self.now()));
        match result {
            Ok(report) => {
                run.outcome = RunOutcome::Succeeded;
                run.report = report;
                tracing::info!(job = name, run = %run.id, trigger = run.trigger.as_str(), seconds, report = %run.report, "job run succeeded");
            }
            Err(error) => {
                run.outcome = RunOutcome::Failed;
                tracing::error!(job = name, run = %run.id, trigger = run.trigger.as_str(), seconds, error = %error, "job run failed");
                run.error = Some(error);
            }
        }
        if let Err(e) = store.put_run(&run).await {
            tracing::error!(job = name, run = %run.id, error = %ErrorChain(&e), "recording a finished run");
        }
        if let Err(e) = store.release_lease(&lease, self.now()).await {
            tracing::warn!(job = name, error = %ErrorChain(&e), "releasing a job lease (it will expire)");
        }
        self.inner
            .metrics
            .job_run(name, run.outcome.as_str(), seconds);
        run
    }

    /// Every job's schedule, next fire time, last run, lease holder and lag.
    pub async fn status(&self, now: OffsetDateTime) -> Result<Vec<JobStatus>, JobError> {
        let store = &self.inner.store;
        let mut all = Vec::new();
        for job in &self.inner.jobs {
            let schedule = job.schedule().cron().map(str::to_owned);
            let last_run = store
                .list_runs(
                    Some(job.name()),
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
                .get_lease(job.name())
                .await?
                .filter(|l| l.expires_at > now)
                .map(|l| l.owner);
            all.push(JobStatus {
                job: job.name().to_owned(),
                next_run_at: schedule
                    .as_deref()
                    .and_then(|s| verdict_config::next_fire(s, now)),
                schedule,
                scheduled: self.inner.config.scheduled,
                last_run,
                lease_holder,
                lag_seconds: job.lag(now).await?,
            });
        }
        Ok(all)
    }

    /// Ask every job for its lag (jobs keep their own lag metrics up to date doing so):
    /// what [`Runner::keep_lags_fresh`] does every [`LAG_REFRESH`].
    pub async fn refresh_lags(&self, now: OffsetDateTime) {
        for job in &self.inner.jobs {
            if let Err(e) = job.lag(now).await {
                tracing::debug!(job = job.name(), error = %ErrorChain(&e), "lag unknown for this scrape");
            }
        }
    }

    /// Refresh the jobs' lag metrics every [`LAG_REFRESH`] until the process stops, in the
    /// background: a `/metrics` scrape then renders what is in memory and never waits on the
    /// store, however often it comes and however large the store is.
    pub fn keep_lags_fresh(&self) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            let stop = this.stop_token().clone();
            loop {
                this.refresh_lags(this.now()).await;
                tokio::select! {
                    () = stop.cancelled() => break,
                    () = tokio::time::sleep(LAG_REFRESH) => {}
                }
            }
        })
    }
}

/// How often [`Runner::keep_lags_fresh`] refreshes the lag metrics.
pub const LAG_REFRESH: std::time::Duration = std::time::Duration::from_secs(10);
