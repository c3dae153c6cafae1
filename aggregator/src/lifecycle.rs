//! The lifecycle job: experiments start and end on their schedule.
//!
//! A draft with a `start_at` that has come starts; a running or paused experiment whose end
//! has come (`ends_at`, or `evaluation_period_days` after it started:
//! [`Experiment::scheduled_status`]) completes. A running one is evaluated first, so it
//! completes with the winner its policy picks at that moment, if the policy picks one
//! ([`evaluate_one`]); otherwise it completes without a winner. Each change goes through
//! the store's status compare-and-set like any other (audited as [`ACTOR`], with its
//! `experiment.status_changed` webhook message), and is announced through the cache (winner
//! snapshot, push to subscribers on every replica).

use std::time::Instant;

use serde::Serialize;
use time::OffsetDateTime;
use verdict_cache::DynCache;
use verdict_domain::{Experiment, Status};
use verdict_store::{DynStore, ExperimentFilter, StatusChange, StoreError};

use crate::evaluate::evaluate_one;

/// Who scheduled changes are attributed to in the audit log.
pub const ACTOR: &str = "scheduler";

/// One experiment the run started or completed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ScheduledChange {
    pub experiment: String,
    pub experiment_id: String,
    pub environment: String,
    /// The status it moved to: `running` or `completed`.
    pub status: Status,
    /// A completed experiment's winner (decided at completion, or before).
    pub winner: Option<String>,
}

/// What one lifecycle run did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct LifecycleReport {
    pub started: u64,
    pub completed: u64,
    pub changes: Vec<ScheduledChange>,
    pub duration_ms: f64,
}

/// Start and complete every experiment (all environments and organizations) whose
/// schedule calls for it at `now`.
pub async fn run_schedules(
    store: &DynStore,
    cache: &DynCache,
    now: OffsetDateTime,
) -> Result<LifecycleReport, StoreError> {
    let started = Instant::now();
    let mut report = LifecycleReport::default();
    for status in [Status::Draft, Status::Running, Status::Paused] {
        let filter = ExperimentFilter {
            status: Some(status),
            ..Default::default()
        };
        for e in store.list_all_experiments(&filter).await? {
            let Some(to) = e.scheduled_status(now) else {
                continue;
            };
            let Some(after) = move_on_schedule(store, cache, e, to, now).await? else {
                continue;
            };
            report.started += u64::from(to == Status::Running);
            report.completed += u64::from(to == Status::Completed);
            report.changes.push(ScheduledChange {
                experiment: after.key.clone(),
                experiment_id: after.id.clone(),
                environment: after.scope.environment.clone(),
                status: after.status,
                winner: after.winner.as_ref().map(|w| w.variant.clone()),
            });
        }
    }
    report.duration_ms = started.elapsed().as_secs_f64() * 1e3;
    Ok(report)
}

/// Move `e` to `to`; the experiment after the change, or `None` when someone changed it
/// meanwhile (the next run looks again).
async fn move_on_schedule(
    store: &DynStore,
    cache: &DynCache,
    e: Experiment,
    to: Status,
    now: OffsetDateTime,
) -> Result<Option<Experiment>, StoreError> {
    let mut before = e;
    if to == Status::Completed && before.status == Status::Running && before.winner.is_none() {
        // A decision completes the experiment with its winner.
        evaluate_one(store, cache, &before, now).await?;
        match store.get_experiment(&before.scope, &before.id).await? {
            Some(current) if current.status == Status::Completed => {
                tracing::info!(experiment = %current.key, "completed at its scheduled end, with the policy's winner");
                return Ok(Some(current));
            }
            Some(current) => before = current,
            None => return Ok(None),
        }
    }
    let change = StatusChange {
        experiment_id: before.id.clone(),
        from: before.status,
        to,
        at: now,
        actor: ACTOR.to_owned(),
    };
    let Some(after) = store.transition_status(&change).await? else {
        return Ok(None);
    };
    tracing::info!(experiment = %after.key, status = %after.status, "status changed on schedule");
    verdict_cache::announce(cache.as_ref(), &before, &after).await;
    Ok(Some(after))
}

/// The `lifecycle` job: [`run_schedules`] on its schedule, under the runner's lease.
#[derive(Debug, Clone)]
pub struct LifecycleJob {
    store: DynStore,
    cache: DynCache,
    schedule: String,
}

impl LifecycleJob {
    pub fn new(store: DynStore, cache: DynCache, schedule: String) -> Self {
        Self {
            store,
            cache,
            schedule,
        }
    }
}

#[async_trait::async_trait]
impl verdict_jobs::Job for LifecycleJob {
    type Report = LifecycleReport;

    fn name(&self) -> &'static str {
        "lifecycle"
    }

    fn schedule(&self) -> verdict_jobs::Schedule {
        verdict_jobs::Schedule::Cron(self.schedule.clone())
    }

    async fn run(
        &self,
        ctx: verdict_jobs::RunContext,
    ) -> Result<LifecycleReport, verdict_jobs::JobError> {
        Ok(run_schedules(&self.store, &self.cache, ctx.started_at).await?)
    }
}
