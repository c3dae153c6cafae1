//! The scheduler of `verdict serve` and `verdict worker`: every [`Schedule::Cron`] job on its
//! cron schedule (tokio-cron-scheduler), every [`Schedule::Continuous`] job in a loop.
//!
//! Every firing goes through [`Runner::run`] with the tick it is for: the job's lease makes
//! one replica run it, and a tick another replica already ran is not run again, so each tick
//! runs once across replicas. A job whose previous run in this process is still going skips
//! the tick without asking the store. A continuous job runs back to back on the replica
//! holding its lease; the others look at the lease every third of its duration (so no run
//! record is written for every look) and take over when it lapses.

use std::sync::Arc;

use anyhow::Context;
use tokio::sync::Mutex;
use tokio::task::JoinHandle;
use tokio_cron_scheduler::{Job as CronJob, JobScheduler};
use verdict_domain::ErrorChain;
use verdict_store::{RunOutcome, Trigger};

use crate::job::Schedule;
use crate::runner::Runner;

/// The running schedule; stops firing with [`Scheduled::stop`] or the runner's shutdown.
pub struct Scheduled {
    cron: JobScheduler,
    loops: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Scheduled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduled")
            .field("loops", &self.loops.len())
            .finish_non_exhaustive()
    }
}

impl Runner {
    /// Schedule every registered job.
    pub async fn schedule(&self) -> anyhow::Result<Scheduled> {
        let cron = JobScheduler::new()
            .await
            .context("creating the scheduler")?;
        let mut loops = Vec::new();
        for job in self.jobs() {
            let name = job.name();
            match job.schedule() {
                Schedule::Cron(expr) => add_cron(&cron, self.clone(), name, expr).await?,
                Schedule::Continuous => loops.push(tokio::spawn(continuous(self.clone(), name))),
            }
        }
        cron.start().await.context("starting the scheduler")?;
        tracing::info!(owner = self.owner(), jobs = ?self.names(), "scheduler started");
        Ok(Scheduled { cron, loops })
    }
}

impl Scheduled {
    /// Stop firing (runs in progress are the runner's: [`Runner::shutdown`]).
    pub async fn stop(mut self) {
        if let Err(e) = self.cron.shutdown().await {
            tracing::warn!(error = %ErrorChain(&e), "stopping the scheduler");
        }
        for task in self.loops {
            task.abort();
        }
    }
}

/// Schedule `name` on `expr`.
async fn add_cron(
    scheduler: &JobScheduler,
    runner: Runner,
    name: &'static str,
    expr: String,
) -> anyhow::Result<()> {
    let running = Arc::new(Mutex::new(()));
    let schedule = expr.clone();
    let cron = CronJob::new_async(expr.as_str(), move |_id, _scheduler| {
        let running = running.clone();
        let runner = runner.clone();
        let schedule = schedule.clone();
        Box::pin(async move {
            let Ok(_guard) = running.try_lock() else {
                tracing::info!(job = name, "previous run still in progress here; tick skipped");
                return;
            };
            if runner.is_stopping() {
                return;
            }
            let tick = verdict_config::tick_of(&schedule, runner.now());
            match runner.run(name, Trigger::Schedule, tick, None).await {
                Ok(Some(_)) => {}
                Ok(None) => tracing::debug!(job = name, "tick already ran on another replica"),
                Err(e) => {
                    tracing::warn!(job = name, error = %ErrorChain(&e), "could not start a scheduled run")
                }
            }
        })
    })
    .with_context(|| format!("scheduling {name} on '{expr}'"))?;
    scheduler
        .add(cron)
        .await
        .with_context(|| format!("adding the {name} job"))?;
    Ok(())
}

/// Run `name` whenever its lease is free, back to back; while another replica holds it,
/// look again every third of the lease.
async fn continuous(runner: Runner, name: &'static str) {
    let stop = runner.stop_token().clone();
    let look_every = runner.lease_duration() / 3;
    while !stop.is_cancelled() {
        let now = runner.now();
        let free = match runner.store().get_lease(name).await {
            Ok(lease) => lease.is_none_or(|l| l.expires_at <= now),
            Err(e) => {
                tracing::warn!(job = name, error = %ErrorChain(&e), "reading a lease");
                false
            }
        };
        let mut pause = look_every;
        if free {
            match runner.run(name, Trigger::Schedule, None, None).await {
                // A full run: start the next at once.
                Ok(Some(run)) if run.outcome == RunOutcome::Succeeded => {
                    pause = std::time::Duration::ZERO
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(job = name, error = %ErrorChain(&e), "could not start a run")
                }
            }
        }
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            () = stop.cancelled() => {}
        }
    }
}
