//! The aggregation job: fold new raw events into rollups until caught up, then repair the
//! totals that overflowed before event values were bounded.
//!
//! All arithmetic happens in the store (`Store::rollup`: SQL `GROUP BY` on SQLite); this
//! job only drives it in bounded steps and reports. Each step is one transaction that also
//! advances the watermark, so the job is idempotent and crash-safe: killed at any point and
//! run again, it continues from the last committed step and never counts an event twice.
//! The repair ([`repair_overflowed_totals`], `RollupStore::repair_totals`) recomputes an
//! experiment's rollups from its raw events without the values ingestion now rejects, when
//! they are all retained; it runs under the same lease, after the rollup steps.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use time::OffsetDateTime;
use verdict_cache::{Change, DynCache};
use verdict_domain::outbox::threshold_message;
use verdict_domain::{Experiment, MetricsSnapshot, Status, VariantCounts};
use verdict_policy::thresholds;
use verdict_store::{DynStore, ExperimentFilter, Fence, RepairOutcome, RollupStore, StoreError};

use crate::counts;

/// Events folded per step (one transaction). Bounds lock hold time and memory: on SQLite a
/// step holds the one writer, so ingestion waits for at most one step (tens of milliseconds
/// at this size, where 50,000 held it for a few hundred under a steady load).
pub const DEFAULT_STEP: usize = 10_000;

/// What one aggregation run did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct AggregateReport {
    pub events: u64,
    pub buckets_written: u64,
    pub subjects_written: u64,
    pub steps: u64,
    pub watermark: u64,
    /// Running experiments whose primary metric was pushed to subscribers after the run
    /// (`metrics` messages; see [`AggregateJob`]).
    #[serde(default)]
    pub metrics_pushed: u64,
    /// Metric thresholds newly reached after the run, each announced by an
    /// `experiment.metrics_threshold_reached` webhook.
    #[serde(default)]
    pub thresholds_reached: u64,
    /// The repair of overflowed totals after the rollup steps (empty lists from
    /// [`aggregate`], which does not repair).
    #[serde(flatten)]
    pub totals: TotalsRepair,
    #[serde(with = "duration_ms")]
    pub duration: Duration,
}

/// What [`repair_overflowed_totals`] did, per experiment with overflowed totals.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct TotalsRepair {
    /// Recomputed from raw events: results no longer flag them.
    pub totals_repaired: Vec<RepairedTotals>,
    /// Not repaired, as retention deleted some of their raw events: results keep flagging
    /// their metrics (`totals_not_finite`).
    pub totals_not_repaired: Vec<UnrepairedTotals>,
}

/// An experiment whose overflowed totals were recomputed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RepairedTotals {
    pub experiment_id: String,
    /// Events left out, their `|value|` beyond `ingest.max_abs_value`.
    pub dropped_events: u64,
}

/// An experiment whose overflowed totals could not be recomputed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UnrepairedTotals {
    pub experiment_id: String,
    /// Its attributed events still stored, fewer than the rollups hold.
    pub raw_events: u64,
    pub rolled_up_events: u64,
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

/// Repair the overflowed totals of every experiment that has some
/// (`RollupStore::experiments_with_overflowed_totals`): recompute its rollups from its raw
/// events without those whose `|value|` exceeds `max_abs_value` (`ingest.max_abs_value`),
/// when they are all retained (`RollupStore::repair_totals`). Meant for a run holding the
/// rollup's lease (`fence`), after its rollup steps.
pub async fn repair_overflowed_totals(
    store: &dyn RollupStore,
    max_abs_value: f64,
    fence: Option<&Fence>,
) -> Result<TotalsRepair, StoreError> {
    let mut done = TotalsRepair::default();
    for experiment_id in store.experiments_with_overflowed_totals().await? {
        match store
            .repair_totals(&experiment_id, max_abs_value, fence)
            .await?
        {
            RepairOutcome::Nothing => {}
            RepairOutcome::Repaired { dropped_events } => {
                tracing::info!(
                    experiment = %experiment_id,
                    dropped_events,
                    max_abs_value,
                    "overflowed totals recomputed from raw events, without the values beyond the bound"
                );
                done.totals_repaired.push(RepairedTotals {
                    experiment_id,
                    dropped_events,
                });
            }
            RepairOutcome::NotRetained {
                raw_events,
                rolled_up_events,
            } => {
                tracing::warn!(
                    experiment = %experiment_id,
                    raw_events,
                    rolled_up_events,
                    "overflowed totals cannot be recomputed: retention deleted raw events; \
                     results keep flagging them"
                );
                done.totals_not_repaired.push(UnrepairedTotals {
                    experiment_id,
                    raw_events,
                    rolled_up_events,
                });
            }
        }
    }
    Ok(done)
}

/// The `aggregate` job: [`aggregate_fenced`] on its schedule, under the runner's lease,
/// then, on the first run of the process, [`repair_overflowed_totals`] with
/// `ingest.max_abs_value`. After a run that folded events, each running experiment's
/// primary metric is published as a [`Change::Metrics`] (what WebSocket subscribers get),
/// at most once per `metrics_push_interval` per experiment, and its metric thresholds are
/// checked, each new crossing announced by an `experiment.metrics_threshold_reached`
/// webhook (see `verdict_domain::threshold`).
#[derive(Debug, Clone)]
pub struct AggregateJob {
    store: DynStore,
    cache: DynCache,
    schedule: String,
    metrics: verdict_metrics::Metrics,
    max_abs_value: f64,
    metrics_push_interval: Duration,
    /// When this process last pushed each experiment's metrics.
    pushed: Arc<Mutex<HashMap<String, Instant>>>,
    /// Whether this process looked for overflowed totals and repaired what it could.
    overflow_checked: Arc<AtomicBool>,
}

/// What an [`AggregateJob`] is built from besides the store and the cache.
#[derive(Debug, Clone)]
pub struct AggregateConfig {
    pub schedule: String,
    /// The bound of event values (`ingest.max_abs_value`): a repair leaves out the events
    /// beyond it.
    pub max_abs_value: f64,
    /// Least time between two metrics pushes of one experiment (`jobs.metrics_push_seconds`).
    pub metrics_push_interval: Duration,
}

impl AggregateJob {
    pub fn new(
        store: DynStore,
        cache: DynCache,
        metrics: verdict_metrics::Metrics,
        config: AggregateConfig,
    ) -> Self {
        Self {
            store,
            cache,
            schedule: config.schedule,
            metrics,
            max_abs_value: config.max_abs_value,
            metrics_push_interval: config.metrics_push_interval,
            pushed: Arc::default(),
            overflow_checked: Arc::default(),
        }
    }

    /// What follows a run that folded events, for every running experiment: its metrics
    /// pushed ([`AggregateJob::push_metrics`]) and its thresholds checked
    /// ([`AggregateJob::announce_crossings`]). A failure for one experiment is logged and
    /// skips it: the rollups are done, and the next run tries again.
    async fn after_folding(&self, report: &mut AggregateReport) -> Result<(), StoreError> {
        let running = ExperimentFilter {
            status: Some(Status::Running),
            ..Default::default()
        };
        for e in self.store.list_all_experiments(&running).await? {
            if self.push_metrics(&e, report.watermark).await {
                report.metrics_pushed += 1;
            }
            if e.thresholds.is_empty() {
                continue;
            }
            match self.announce_crossings(&e, report.watermark).await {
                Ok(n) => report.thresholds_reached += n,
                Err(err) => tracing::warn!(
                    experiment = %e.key,
                    error = %verdict_domain::ErrorChain(&err),
                    "could not check the experiment's metric thresholds"
                ),
            }
        }
        Ok(())
    }

    /// Publish `e`'s primary metric unless this process pushed it within the interval;
    /// whether it did.
    async fn push_metrics(&self, e: &Experiment, aggregated_through: u64) -> bool {
        {
            let mut last = self.pushed.lock().unwrap_or_else(|p| p.into_inner());
            if last
                .get(&e.id)
                .is_some_and(|at| at.elapsed() < self.metrics_push_interval)
            {
                return false;
            }
            last.insert(e.id.clone(), Instant::now());
        }
        let figures = match counts::in_variant_order(&self.store, e, &e.primary_metric.event).await
        {
            Ok(figures) => figures,
            Err(err) => {
                tracing::warn!(
                    experiment = %e.key,
                    error = %verdict_domain::ErrorChain(&err),
                    "could not read the experiment's metrics to push them"
                );
                return false;
            }
        };
        let change = Change::Metrics {
            metrics: MetricsSnapshot::of(e, aggregated_through, &figures),
        };
        match self.cache.publish(&change).await {
            Ok(()) => true,
            Err(err) => {
                tracing::warn!(
                    experiment = %e.key,
                    error = %verdict_domain::ErrorChain(&err),
                    "could not push the experiment's metrics"
                );
                false
            }
        }
    }

    /// Read the figures `e`'s thresholds watch, and store the new crossing state with an
    /// `experiment.metrics_threshold_reached` message per new crossing, atomically
    /// (`ExperimentStore::record_threshold_state`); returns the crossings announced. When
    /// another writer moved the state first nothing is written: the next run reads again.
    async fn announce_crossings(
        &self,
        e: &Experiment,
        aggregated_through: u64,
    ) -> Result<u64, StoreError> {
        let mut figures: HashMap<&str, Vec<VariantCounts>> = HashMap::new();
        for t in &e.thresholds {
            if !figures.contains_key(t.metric.as_str()) {
                let read = counts::in_variant_order(&self.store, e, &t.metric).await?;
                figures.insert(&t.metric, read);
            }
        }
        let readings = thresholds::readings(e, |event| figures.get(event).map(Vec::as_slice));
        let state = self.store.threshold_state(&e.id).await?;
        let (next, crossings) = state.advance(&e.thresholds, &readings);
        if next == state {
            return Ok(0);
        }
        let at = OffsetDateTime::now_utc();
        let messages: Vec<_> = crossings
            .iter()
            .filter_map(|c| threshold_message(e, c, aggregated_through, at))
            .collect();
        let recorded = self
            .store
            .record_threshold_state(&e.id, state.announced, &next, &messages)
            .await?;
        for c in crossings.iter().filter(|_| recorded) {
            tracing::info!(
                experiment = %e.key,
                variant = %c.variant,
                figure = c.figure,
                crossing = c.number,
                "metric threshold reached"
            );
        }
        Ok(if recorded { messages.len() as u64 } else { 0 })
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
        let started = Instant::now();
        let mut report = aggregate_fenced(&*self.store, DEFAULT_STEP, Some(&ctx.fence)).await?;
        // Totals overflow only from values accepted before ingestion bounded them: looked
        // for on this process's first run (MongoDB reads every rollup document to do so),
        // and again after a run that could not finish the repair.
        if !self.overflow_checked.load(Ordering::Relaxed) {
            report.totals =
                repair_overflowed_totals(&*self.store, self.max_abs_value, Some(&ctx.fence))
                    .await?;
            self.overflow_checked.store(true, Ordering::Relaxed);
        }
        if report.events > 0 {
            self.after_folding(&mut report).await?;
        }
        report.duration = started.elapsed();
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
