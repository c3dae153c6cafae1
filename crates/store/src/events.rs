//! [`EventStore`]: raw events, appended in batches and scanned in ingestion order, and the
//! per-variant figures computed from them at query time.

use async_trait::async_trait;
use verdict_domain::{EventRecord, NewEvent};

use crate::Result;
use crate::model::{AppendOutcome, Attribution, VariantCounts};

/// Raw events.
#[async_trait]
pub trait EventStore: Send + Sync + std::fmt::Debug {
    /// Append events, attributing each to its subject's stored assignment in the same
    /// transaction. Per input, in order: `Accepted`, `Duplicate` (same (experiment,
    /// event_id) stored before or earlier in the batch), `NotInExperiment` (no assignment),
    /// or `VariantMismatch` (the claimed variant is not the assigned one). Only accepted
    /// events are written. All or nothing: on error nothing was written.
    async fn append_events(&self, events: Vec<NewEvent>) -> Result<Vec<AppendOutcome>>;

    /// Up to `limit` events with `seq > after_seq`, in ingestion order.
    async fn scan_events(&self, after_seq: u64, limit: usize) -> Result<Vec<EventRecord>>;

    /// Per-variant subject-level counts of `event` for one experiment, from raw events,
    /// counting only events at or after each subject's start as `attribution` defines it
    /// (the assignment, or the first exposure) and inside its range and window; with an
    /// exposure event, only exposed subjects are counted. One entry per variant with at
    /// least one subject counted, ordered by variant.
    ///
    /// With a `cap` (winsorising the upper tail), each subject's total `t` counts as
    /// `min(t, cap)` in `sum`, `sum_of_squares` and `sum_events_value` when `t ≥ 0`;
    /// negative totals (refunds) are left as they are, and counts are never capped. A
    /// NaN cap is refused. See [`crate::RollupStore::subject_value_quantile`] for choosing
    /// one.
    async fn variant_counts(
        &self,
        experiment_id: &str,
        event: &str,
        attribution: &Attribution,
        cap: Option<f64>,
    ) -> Result<Vec<VariantCounts>>;
}
