//! The scheduled jobs of `verdict serve` and `verdict worker`: `aggregate`, `evaluate` and
//! `retention` on their cron schedules (`[jobs]` in the configuration), with
//! tokio-cron-scheduler; `webhooks` as a continuous loop: the replica holding its lease
//! delivers (one run per minute, [`verdict_jobs::CONTINUOUS_RUN`]), the others look at the
//! lease every few seconds and take over when it lapses.
//!
//! Every firing goes through [`verdict_jobs::Jobs`] with the tick it is for: the job's lease
//! makes one replica run it, and a tick another replica already ran is not run again, so
//! each tick runs once across replicas. A job whose previous run in this process is still
//! going skips the tick without asking the store. On shutdown no new run starts and the
//! current ones get the grace period to finish (and release their leases).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use time::OffsetDateTime;
use tokio::sync::Mutex;
use tokio_cron_scheduler::{Job as CronJob, JobScheduler};
use verdict_jobs::{Job, Jobs, RunOptions};
use verdict_store::Trigger;

/// The running scheduler.
pub struct Scheduler {
    inner: JobScheduler,
    jobs: Jobs,
    webhooks: Option<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler").finish_non_exhaustive()
    }
}

impl Scheduler {
    /// Schedule every cron job of `jobs`' settings.
    pub async fn start(jobs: Jobs) -> anyhow::Result<Self> {
        let inner = JobScheduler::new()
            .await
            .context("creating the scheduler")?;
        for job in Job::ALL {
            let Some(schedule) = job.schedule(jobs.settings()).map(str::to_owned) else {
                continue;
            };
            add(&inner, jobs.clone(), job, schedule).await?;
        }
        inner.start().await.context("starting the scheduler")?;
        let webhooks = jobs
            .has_webhooks_job()
            .then(|| tokio::spawn(webhooks_loop(jobs.clone())));
        let s = &jobs.settings().jobs;
        tracing::info!(
            aggregate = %s.aggregate_schedule,
            evaluate = %s.evaluate_schedule,
            retention = %s.retention_schedule,
            owner = jobs.owner(),
            "scheduler started"
        );
        Ok(Self {
            inner,
            jobs,
            webhooks,
        })
    }

    /// Stop firing, then wait up to `grace` for runs in progress to finish.
    pub async fn shutdown(mut self, grace: Duration) {
        if let Err(e) = self.inner.shutdown().await {
            tracing::warn!(error = %e, "stopping the scheduler");
        }
        if !self.jobs.shutdown(grace).await {
            tracing::warn!(
                "a job run did not finish within the grace period; its lease will expire"
            );
        }
        if let Some(task) = self.webhooks.take() {
            let _ = tokio::time::timeout(grace, task).await;
        }
    }
}

/// The continuous `webhooks` job: run it whenever its lease is free, back to back; while
/// another replica holds it, look again every third of the lease (so no run record is
/// written for every look).
async fn webhooks_loop(jobs: Jobs) {
    let mut stop = jobs.stopped();
    let look_every = jobs.settings().jobs.lease() / 3;
    loop {
        if *stop.borrow() {
            return;
        }
        let now = OffsetDateTime::now_utc();
        let free = match jobs.store().get_lease(Job::Webhooks.as_str()).await {
            Ok(lease) => lease.is_none_or(|l| l.expires_at <= now),
            Err(e) => {
                tracing::warn!(error = %e, "reading the webhooks lease");
                false
            }
        };
        let mut pause = look_every;
        if free {
            match jobs
                .run(
                    Job::Webhooks,
                    Trigger::Schedule,
                    None,
                    RunOptions::default(),
                )
                .await
            {
                // A full run: start the next at once.
                Ok(Some(run)) if run.outcome == verdict_store::RunOutcome::Succeeded => {
                    pause = Duration::ZERO
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "could not start the webhooks job"),
            }
        }
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            _ = stop.changed() => {}
        }
    }
}

/// Schedule `job` on `schedule`.
async fn add(
    scheduler: &JobScheduler,
    jobs: Jobs,
    job: Job,
    schedule: String,
) -> anyhow::Result<()> {
    let running = Arc::new(Mutex::new(()));
    let expr = schedule.clone();
    let cron = CronJob::new_async(schedule.as_str(), move |_id, _scheduler| {
        let running = running.clone();
        let jobs = jobs.clone();
        let expr = expr.clone();
        Box::pin(async move {
            let Ok(_guard) = running.try_lock() else {
                tracing::info!(%job, "previous run still in progress here; tick skipped");
                return;
            };
            if jobs.is_stopping() {
                return;
            }
            let tick = verdict_config::tick_of(&expr, OffsetDateTime::now_utc());
            match jobs
                .run(job, Trigger::Schedule, tick, RunOptions::default())
                .await
            {
                Ok(Some(_)) => {}
                Ok(None) => tracing::debug!(%job, "tick already ran on another replica"),
                Err(e) => tracing::warn!(%job, error = %e, "could not start a scheduled run"),
            }
        })
    })
    .with_context(|| format!("scheduling {job} on '{schedule}'"))?;
    scheduler
        .add(cron)
        .await
        .with_context(|| format!("adding the {job} job"))?;
    Ok(())
}
