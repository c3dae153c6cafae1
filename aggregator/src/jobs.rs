//! The aggregation job: fold new raw events into rollups until caught up.
//!
//! All arithmetic happens in the store (`Store::rollup`: SQL `GROUP BY` on SQLite); this
//! job only drives it in bounded steps and reports. Each step is one transaction that also
//! advances the watermark, so the job is idempotent and crash-safe: killed at any point and
//! run again, it continues from the last committed step and never counts an event twice.

use std::time::{Duration, Instant};

use serde::Serialize;
use verdict_store::{DynStore, Fence, RollupStore, StoreError};

/// Events folded per step (one transaction). Bounds lock hold time and memory.
pub const DEFAULT_STEP: usize = 50_000;

/// What one aggregation run did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct AggregateReport {
    pub events: u64,
    pub buckets_written: u64,
    pub subjects_written: u64,
    pub steps: u64,
    pub watermark: u64,
    #[serde(with = "duration_ms")]
    pub duration: Duration,
}

mod duration_ms {
    pub fn serialize<S: serde::Serializer>(
        d: &std::time::Duration,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64() * 1e3)
    }
}

/// Roll up every event ingested so far, `step` events per transaction.
pub async fn aggregate(
    store: &dyn RollupStore,
    step: usize,
) -> Result<AggregateReport, StoreError> {
    aggregate_fenced(store, step, None).await
}

/// [`aggregate`] as a job run holding a lease: each step carries `fence`, and the store
/// refuses it ([`StoreError::Fenced`]) once another holder has taken the job over.
pub async fn aggregate_fenced(
    store: &dyn RollupStore,
    step: usize,
    fence: Option<&Fence>,
) -> Result<AggregateReport, StoreError> {
    let started = Instant::now();
    let mut report = AggregateReport::default();
    loop {
        let r = store.rollup_fenced(step, fence).await?;
        report.watermark = r.watermark;
        if r.events == 0 {
            break;
        }
        report.events += r.events;
        report.buckets_written += r.buckets_written;
        report.subjects_written += r.subjects_written;
        report.steps += 1;
        tracing::debug!(events = r.events, watermark = r.watermark, "rollup step");
    }
    report.duration = started.elapsed();
    Ok(report)
}

/// The `aggregate` job: [`aggregate_fenced`] on its schedule, under the runner's lease.
#[derive(Debug, Clone)]
pub struct AggregateJob {
    store: DynStore,
    schedule: String,
    metrics: verdict_metrics::Metrics,
}

impl AggregateJob {
    pub fn new(store: DynStore, schedule: String, metrics: verdict_metrics::Metrics) -> Self {
        Self {
            store,
            schedule,
            metrics,
        }
    }
}

#[async_trait::async_trait]
impl verdict_jobs::Job for AggregateJob {
    type Report = AggregateReport;

    fn name(&self) -> &'static str {
        "aggregate"
    }

    fn schedule(&self) -> verdict_jobs::Schedule {
        verdict_jobs::Schedule::Cron(self.schedule.clone())
    }

    async fn run(
        &self,
        ctx: verdict_jobs::RunContext,
    ) -> Result<AggregateReport, verdict_jobs::JobError> {
        let report = aggregate_fenced(&*self.store, DEFAULT_STEP, Some(&ctx.fence)).await?;
        // The lag gauge as of this run, so a scrape right after it reads the new figure.
        if let Err(e) = verdict_jobs::Job::lag(self, ctx.started_at).await {
            tracing::debug!(error = %verdict_domain::ErrorChain(&e), "aggregation lag unknown after the run");
        }
        Ok(report)
    }

    /// Seconds since the oldest raw event not yet aggregated was received (0 when caught
    /// up); also kept in the `verdict_aggregation_lag_seconds` metric.
    async fn lag(&self, now: time::OffsetDateTime) -> Result<Option<f64>, verdict_jobs::JobError> {
        let watermark = self.store.rollup_watermark().await?;
        let lag = match self.store.scan_events(watermark, 1).await?.first() {
            Some(e) => (now - e.received_at).as_seconds_f64().max(0.0),
            None => 0.0,
        };
        self.metrics.set_aggregation_lag(lag);
        Ok(Some(lag))
    }
}
