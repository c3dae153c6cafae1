//! The retention job: raw events must not grow forever, but must never be deleted before
//! they are counted.
//!
//! Deletes, each in bounded batches of `retention.batch_size` rows (one statement per batch,
//! never one unbounded delete):
//! - raw events received more than `raw_events_days` ago, only at or below the aggregation
//!   watermark (the store enforces this: an event not yet rolled up is never a candidate);
//! - hour and day buckets starting more than `buckets_days` ago, and the points of evaluation
//!   history evaluated as long ago (what charts them over time goes with them);
//! - finished job run records older than `runs_days`;
//! - the attempt log of finished webhook deliveries older than `webhook_attempts_days`;
//! - config snapshot versions beyond each scope's newest `snapshot_versions_kept` (the
//!   latest version always stays).
//!
//! An experiment's `retention` overrides the first two for its own data.
//!
//! It also purges deleted experiments (`DELETE /v1/experiments/{key}`): all of a deleted
//! experiment's raw events, buckets, per-subject rollups, assignments, QA overrides,
//! evaluation state and history, in the same bounded batches. A purge is forgotten once nothing is left
//! and the deletion is older than [`PURGE_GRACE`] (a write that read the experiment just
//! before it was deleted has landed by then, and is purged too).
//!
//! Every delete carries the run's fencing token: if this run's lease was taken over, the
//! store refuses.

use std::time::Instant;

use serde::Serialize;
use time::{Duration, OffsetDateTime};
use verdict_config::RetentionSettings;
use verdict_store::{
    DynStore, ExperimentFilter, ExperimentStore, Fence, JobStore, Result, RetentionFilter,
    StoreError,
};

/// How long a deleted experiment's purge stays queued, and is run again, after it found
/// nothing left: longer than any write that read the experiment before its deletion takes
/// to land (the in-process experiment caches keep a definition for a second).
pub const PURGE_GRACE: Duration = Duration::minutes(10);

/// What one retention run deleted.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RetentionReport {
    pub events_deleted: u64,
    pub buckets_deleted: u64,
    /// Points of evaluation history.
    pub evaluation_points_deleted: u64,
    pub runs_deleted: u64,
    pub webhook_attempts_deleted: u64,
    /// Config snapshot versions beyond each scope's newest `snapshot_versions_kept`.
    pub snapshot_versions_deleted: u64,
    /// Rows of deleted experiments' data removed.
    pub deleted_experiment_rows: u64,
    /// Deleted experiments whose data is all gone (their purge is finished).
    pub deleted_experiments_purged: u64,
    /// Delete statements issued (each removes at most `batch_size` rows).
    pub batches: u64,
    /// Experiments with their own retention.
    pub overrides: u64,
    pub duration_ms: f64,
}

/// Delete what `settings` (and each experiment's override) say has expired at `now`.
pub async fn run<S: ExperimentStore + JobStore + ?Sized>(
    store: &S,
    settings: &RetentionSettings,
    now: OffsetDateTime,
    fence: Option<&Fence>,
) -> Result<RetentionReport> {
    let started = Instant::now();
    let mut report = RetentionReport::default();
    let days_ago = |days: u32| now - Duration::days(i64::from(days));

    // (experiment id, raw-events override, buckets override)
    let overrides: Vec<(String, Option<u32>, Option<u32>)> = store
        .list_all_experiments(&ExperimentFilter::default())
        .await?
        .into_iter()
        .filter(|e| e.retention.raw_events_days.is_some() || e.retention.buckets_days.is_some())
        .map(|e| (e.id, e.retention.raw_events_days, e.retention.buckets_days))
        .collect();
    report.overrides = overrides.len() as u64;
    let batch = settings.batch_size;

    // Raw events, then buckets with the evaluation history charted from them: each override
    // on its own, then everything else by the setting.
    let raw: Vec<_> = overrides.iter().map(|(id, days, _)| (id, *days)).collect();
    for filter in filters(&raw, settings.raw_events_days, now) {
        report.events_deleted += drain(&mut report.batches, batch, |n| {
            store.delete_events(&filter, n, fence)
        })
        .await?;
    }
    let buckets: Vec<_> = overrides.iter().map(|(id, _, days)| (id, *days)).collect();
    for filter in filters(&buckets, settings.buckets_days, now) {
        report.buckets_deleted += drain(&mut report.batches, batch, |n| {
            store.delete_buckets(&filter, n, fence)
        })
        .await?;
        report.evaluation_points_deleted += drain(&mut report.batches, batch, |n| {
            store.delete_evaluation_history(&filter, n, fence)
        })
        .await?;
    }

    let before = days_ago(settings.runs_days);
    report.runs_deleted += drain(&mut report.batches, batch, |n| {
        store.delete_runs(before, n, fence)
    })
    .await?;

    let before = days_ago(settings.webhook_attempts_days);
    report.webhook_attempts_deleted += drain(&mut report.batches, batch, |n| {
        store.delete_webhook_attempts(before, n, fence)
    })
    .await?;

    let keep = u64::from(settings.snapshot_versions_kept);
    report.snapshot_versions_deleted += drain(&mut report.batches, batch, |n| {
        store.delete_old_publications(keep, n, fence)
    })
    .await?;

    for purge in store.pending_purges().await? {
        report.deleted_experiment_rows += drain(&mut report.batches, batch, |n| {
            store.purge_experiment_data(&purge.experiment_id, n, fence)
        })
        .await?;
        if now - purge.deleted_at >= PURGE_GRACE {
            store.finish_purge(&purge.experiment_id, fence).await?;
            report.deleted_experiments_purged += 1;
        }
    }

    report.duration_ms = started.elapsed().as_secs_f64() * 1e3;
    tracing::info!(
        events = report.events_deleted,
        buckets = report.buckets_deleted,
        evaluation_points = report.evaluation_points_deleted,
        runs = report.runs_deleted,
        webhook_attempts = report.webhook_attempts_deleted,
        snapshot_versions = report.snapshot_versions_deleted,
        deleted_experiment_rows = report.deleted_experiment_rows,
        batches = report.batches,
        "retention run finished"
    );
    Ok(report)
}

/// What one kind of data may lose at `now`: one filter per experiment with its own number of
/// days (`overrides`: id and days, if set), then one for every other experiment by `days`.
fn filters(
    overrides: &[(&String, Option<u32>)],
    days: u32,
    now: OffsetDateTime,
) -> Vec<RetentionFilter> {
    let days_ago = |days: u32| now - Duration::days(i64::from(days));
    let own: Vec<(&String, u32)> = overrides
        .iter()
        .filter_map(|(id, d)| d.map(|d| (*id, d)))
        .collect();
    let mut all: Vec<RetentionFilter> = own
        .iter()
        .map(|(id, d)| RetentionFilter {
            before: days_ago(*d),
            only: Some((*id).clone()),
            except: Vec::new(),
        })
        .collect();
    all.push(RetentionFilter {
        before: days_ago(days),
        only: None,
        except: own.into_iter().map(|(id, _)| id.clone()).collect(),
    });
    all
}

/// Call `delete(batch)` until it deletes less than a full batch; the total deleted.
async fn drain<F, Fut>(batches: &mut u64, batch: usize, mut delete: F) -> Result<u64>
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = Result<u64, StoreError>>,
{
    let mut total = 0;
    loop {
        let n = delete(batch).await?;
        *batches += 1;
        total += n;
        if n < batch as u64 {
            return Ok(total);
        }
    }
}

/// The `retention` job: [`run`] on its schedule, every delete under the runner's fence.
#[derive(Debug, Clone)]
pub struct RetentionJob {
    store: DynStore,
    settings: RetentionSettings,
    schedule: String,
}

impl RetentionJob {
    pub fn new(store: DynStore, settings: RetentionSettings, schedule: String) -> Self {
        Self {
            store,
            settings,
            schedule,
        }
    }
}

#[async_trait::async_trait]
impl verdict_jobs::Job for RetentionJob {
    type Report = RetentionReport;

    fn name(&self) -> &'static str {
        "retention"
    }

    fn schedule(&self) -> verdict_jobs::Schedule {
        verdict_jobs::Schedule::Cron(self.schedule.clone())
    }

    async fn run(
        &self,
        ctx: verdict_jobs::RunContext,
    ) -> Result<RetentionReport, verdict_jobs::JobError> {
        Ok(run(
            &*self.store,
            &self.settings,
            ctx.started_at,
            Some(&ctx.fence),
        )
        .await?)
    }
}
