//! [`RollupStore`]: raw events folded into time buckets and per-subject figures,
//! incrementally from an ingestion watermark, and the state the evaluator keeps between
//! runs.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::jobs::{Fence, JobStore};
use crate::model::{TimeRange, VariantCounts};
use crate::{Result, StoreError};

/// Rollups and evaluation state.
///
/// A supertrait of it is [`JobStore`]: a fenced rollup step checks the run's lease, which
/// lives in the same store.
#[async_trait]
pub trait RollupStore: JobStore + Send + Sync + std::fmt::Debug {
    /// Fold up to `max_events` events past the rollup watermark into hour and day buckets
    /// and per-subject figures (only events at or after the subject's assignment count),
    /// advancing the watermark in the SAME transaction: a crash leaves all or nothing, and
    /// running again never counts an event twice. Cost grows with the new events only.
    async fn rollup(&self, max_events: usize) -> Result<RollupReport>;

    /// [`RollupStore::rollup`] as a step of a job run holding `fence`: refused with
    /// [`StoreError::Fenced`] (nothing written) once a newer lease holder exists.
    async fn rollup_fenced(
        &self,
        max_events: usize,
        fence: Option<&Fence>,
    ) -> Result<RollupReport> {
        if let Some(fence) = fence {
            let current = self.get_lease(&fence.job).await?.map(|l| l.token);
            if current != Some(fence.token) {
                return Err(StoreError::Fenced {
                    job: fence.job.clone(),
                    token: fence.token,
                });
            }
        }
        self.rollup(max_events).await
    }

    /// The `seq` of the last event folded into the rollups.
    async fn rollup_watermark(&self) -> Result<u64>;

    /// Per-variant subject-level figures of `event` read from the rollups (what
    /// [`crate::EventStore::variant_counts`] computes from raw events, once rolled up).
    async fn rolled_up_counts(
        &self,
        experiment_id: &str,
        event: &str,
    ) -> Result<Vec<VariantCounts>>;

    /// Time buckets of one experiment's `event` (all variants), oldest first.
    async fn buckets(
        &self,
        experiment_id: &str,
        event: &str,
        granularity: Granularity,
        range: TimeRange,
    ) -> Result<Vec<Bucket>>;

    /// State the evaluator carries between runs for one experiment (e.g. the peeking
    /// guard's running maximum), as JSON.
    async fn get_evaluation_state(&self, experiment_id: &str) -> Result<Option<serde_json::Value>>;
    async fn put_evaluation_state(
        &self,
        experiment_id: &str,
        state: &serde_json::Value,
    ) -> Result<()>;
}

/// What one [`RollupStore::rollup`] call did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RollupReport {
    /// Raw events read past the watermark (0: caught up).
    pub events: u64,
    /// Bucket rows inserted or updated.
    pub buckets_written: u64,
    /// Per-subject rows inserted or updated.
    pub subjects_written: u64,
    /// The watermark after this call (the `seq` of the last folded event).
    pub watermark: u64,
}

/// Bucket width.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Granularity {
    Hour,
    Day,
}

impl Granularity {
    pub fn as_str(self) -> &'static str {
        match self {
            Granularity::Hour => "hour",
            Granularity::Day => "day",
        }
    }

    pub fn millis(self) -> i64 {
        match self {
            Granularity::Hour => 3_600_000,
            Granularity::Day => 86_400_000,
        }
    }
}

/// Event-level sums of one (variant, event) over one time bucket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Bucket {
    pub variant: String,
    pub event: String,
    #[serde(with = "time::serde::rfc3339")]
    pub start: OffsetDateTime,
    pub count: u64,
    pub sum: f64,
    pub sum_of_squares: f64,
}
