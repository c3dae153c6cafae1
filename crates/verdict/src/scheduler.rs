//! The scheduled jobs of `verdict serve`: aggregation and evaluation on their cron schedules
//! (`[jobs]` in the configuration), with tokio-cron-scheduler.
//!
//! A job whose previous run is still going when its schedule fires again skips that tick
//! (logged), so runs of one job never overlap within a process. Across processes the jobs
//! are safe to run concurrently: a rollup step is idempotent in the store, and a decision is
//! a compare-and-set on the experiment's version. On shutdown no new run starts and the
//! current ones get the grace period to finish.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use time::OffsetDateTime;
use tokio::sync::Mutex;
use tokio_cron_scheduler::{Job, JobScheduler};
use verdict_cache::DynCache;
use verdict_config::JobsSettings;
use verdict_store::DynStore;

/// The running scheduler.
pub struct Scheduler {
    inner: JobScheduler,
    running: Vec<Arc<Mutex<()>>>,
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler").finish_non_exhaustive()
    }
}

impl Scheduler {
    /// Start the jobs of `settings` on `store` and `cache`.
    pub async fn start(
        settings: &JobsSettings,
        store: DynStore,
        cache: DynCache,
    ) -> anyhow::Result<Self> {
        let inner = JobScheduler::new()
            .await
            .context("creating the scheduler")?;
        let mut running = Vec::new();

        let s = store.clone();
        running.push(
            add(
                &inner,
                "aggregate",
                &settings.aggregate_schedule,
                move || {
                    let store = s.clone();
                    async move {
                        verdict_aggregator::jobs::aggregate(
                            &store,
                            verdict_aggregator::jobs::DEFAULT_STEP,
                        )
                        .await
                        .map(|r| {
                            serde_json::json!({"events": r.events, "watermark": r.watermark,
                                           "duration_ms": r.duration.as_secs_f64() * 1e3})
                        })
                        .map_err(anyhow::Error::from)
                    }
                },
            )
            .await?,
        );
        running.push(
            add(&inner, "evaluate", &settings.evaluate_schedule, move || {
                let store = store.clone();
                let cache = cache.clone();
                async move {
                    verdict_aggregator::evaluate::evaluate(
                        &store,
                        &cache,
                        OffsetDateTime::now_utc(),
                    )
                    .await
                    .map(|r| {
                        serde_json::json!({"evaluated": r.evaluated, "decisions": r.decisions,
                                           "srm_flags": r.srm_flags, "duration_ms": r.duration_ms})
                    })
                    .map_err(anyhow::Error::from)
                }
            })
            .await?,
        );
        inner.start().await.context("starting the scheduler")?;
        tracing::info!(
            aggregate = %settings.aggregate_schedule,
            evaluate = %settings.evaluate_schedule,
            "scheduler started"
        );
        Ok(Self { inner, running })
    }

    /// Stop firing, then wait up to `grace` for runs in progress to finish.
    pub async fn shutdown(mut self, grace: Duration) {
        if let Err(e) = self.inner.shutdown().await {
            tracing::warn!(error = %e, "stopping the scheduler");
        }
        let wait = async {
            for job in &self.running {
                let _ = job.lock().await;
            }
        };
        if tokio::time::timeout(grace, wait).await.is_err() {
            tracing::warn!("a job run did not finish within the grace period");
        }
    }
}

/// Schedule `run` as job `name`; returns the lock held while it runs.
async fn add<F, Fut>(
    scheduler: &JobScheduler,
    name: &'static str,
    schedule: &str,
    run: F,
) -> anyhow::Result<Arc<Mutex<()>>>
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<serde_json::Value>> + Send + 'static,
{
    let running = Arc::new(Mutex::new(()));
    let lock = running.clone();
    let run = Arc::new(run);
    let job = Job::new_async(schedule, move |_id, _scheduler| {
        let lock = lock.clone();
        let run = run.clone();
        Box::pin(async move {
            let Ok(_guard) = lock.try_lock() else {
                tracing::info!(job = name, "previous run still in progress; tick skipped");
                return;
            };
            let started = std::time::Instant::now();
            match run().await {
                Ok(report) => tracing::info!(job = name, %report, "job run succeeded"),
                Err(e) => tracing::error!(
                    job = name,
                    error = %format!("{e:#}"),
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "job run failed"
                ),
            }
        })
    })
    .with_context(|| format!("scheduling {name} on '{schedule}'"))?;
    scheduler
        .add(job)
        .await
        .with_context(|| format!("adding the {name} job"))?;
    Ok(running)
}
