//! [`RollupStore`]: raw events folded into time buckets and per-subject figures,
//! incrementally from an ingestion watermark, the repair of totals that overflowed before
//! event values were bounded, the state the evaluator keeps between runs, and the history of
//! its evaluations ([`EvaluationPoint`]).

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::jobs::{Fence, JobStore};
use verdict_domain::Breakdown;

use crate::model::{Attribution, TimeRange, VariantCounts};
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
        check_fence(self, fence).await?;
        self.rollup(max_events).await
    }

    /// The `seq` of the last event folded into the rollups.
    async fn rollup_watermark(&self) -> Result<u64>;

    /// The experiments whose stored totals overflowed, in id order: a bucket whose Σ or Σ²
    /// is not a finite number (±infinity, or NaN where the backend stores it), or a subject
    /// whose total is not, or whose square is not (results sum the squares per variant).
    /// Either makes results flag the metric (`totals_not_finite`). Such totals were
    /// accumulated from event values beyond what ingestion accepts today
    /// (`ingest.max_abs_value`), and rollups only ever add to them, until
    /// [`RollupStore::repair_totals`] recomputes them.
    async fn experiments_with_overflowed_totals(&self) -> Result<Vec<String>>;

    /// Recompute one experiment's overflowed rollups from its raw events, leaving out the
    /// events whose `|value|` exceeds `max_abs_value` (what ingestion would reject today):
    /// its hour and day `buckets` and its per-subject figures, from the events up to the
    /// rollup watermark, with the rollup's attribution (only events at or after the
    /// subject's assignment).
    ///
    /// Only when its raw events are all retained: the number of its attributed events up
    /// to the watermark must equal the number the per-subject rollups hold (which retention
    /// never deletes); when retention deleted some, nothing is written and the answer is
    /// [`RepairOutcome::NotRetained`] (results keep flagging the metric). Buckets retention
    /// deleted stay deleted; a bucket or subject left without events is no longer read.
    /// [`RepairOutcome::Nothing`] when none of its totals overflowed.
    ///
    /// Meant to run after the rollup steps of a run holding the rollup's lease (`fence`,
    /// refused with [`StoreError::Fenced`] once a newer holder exists), so that no rollup
    /// step runs meanwhile. SQLite: one transaction. MongoDB: see its adapter; a crash
    /// midway leaves each document with its old figures or its new ones, and the next
    /// repair finishes the work.
    async fn repair_totals(
        &self,
        experiment_id: &str,
        max_abs_value: f64,
        fence: Option<&Fence>,
    ) -> Result<RepairOutcome>;

    /// Per-variant subject-level figures of `event` read from the rollups (what
    /// [`crate::EventStore::variant_counts`] computes from raw events, once rolled up),
    /// with the same `cap` rule.
    async fn rolled_up_counts(
        &self,
        experiment_id: &str,
        event: &str,
        cap: Option<f64>,
    ) -> Result<Vec<VariantCounts>>;

    /// The `q`-quantile (nearest rank, `0 ≤ q ≤ 1`) of the per-subject totals of `event`
    /// over the subjects with at least one counted event: of the rollups when `attribution`
    /// is `None` (the population of [`RollupStore::rolled_up_counts`]), of raw events under
    /// `attribution` otherwise (that of [`crate::EventStore::variant_counts`]). Of `N` such
    /// totals in ascending order it is the one of rank `max(1, ⌈q·N⌉)`; `None` when no
    /// subject has a counted event. Totals are never capped here: this is how a cap is
    /// chosen (e.g. the 0.99-quantile). Computed by the store, reading from whichever end of
    /// the order is nearer the rank. On MongoDB (no transactions) the count and the read are
    /// two queries: a rollup step between them may shift the rank by the subjects it adds.
    async fn subject_value_quantile(
        &self,
        experiment_id: &str,
        event: &str,
        attribution: Option<&Attribution>,
        q: f64,
    ) -> Result<Option<f64>>;

    /// [`RollupStore::rolled_up_counts`] per segment of `dimension`: the figures of every
    /// subject assigned to experiment `experiment_id` grouped by its segment (its string
    /// value of the dimension, `None` without one; see `verdict_domain::breakdown`) and
    /// variant, ordered by segment (`None` first) then variant; a (segment, variant)
    /// without subjects is left out. An `event` dimension reads the segments the rollup
    /// recorded; an `assignment` one the context kept with each assignment.
    async fn segment_counts(
        &self,
        experiment_id: &str,
        event: &str,
        dimension: &Breakdown,
        cap: Option<f64>,
    ) -> Result<Vec<SegmentCounts>>;

    /// Time buckets of one experiment's `event` (all variants), oldest first.
    async fn buckets(
        &self,
        experiment_id: &str,
        event: &str,
        granularity: Granularity,
        range: TimeRange,
    ) -> Result<Vec<Bucket>>;

    /// Events of every type per variant of one experiment, summed over its `granularity`
    /// buckets that start inside `range` (the time series of all its events at once),
    /// ordered by variant, then event; a (variant, event) without events is left out.
    async fn event_counts(
        &self,
        experiment_id: &str,
        granularity: Granularity,
        range: TimeRange,
    ) -> Result<Vec<EventCount>>;

    /// State the evaluator carries between runs for one experiment (e.g. the peeking
    /// guard's running maximum), as JSON.
    async fn get_evaluation_state(&self, experiment_id: &str) -> Result<Option<serde_json::Value>>;
    async fn put_evaluation_state(
        &self,
        experiment_id: &str,
        state: &serde_json::Value,
    ) -> Result<()>;

    /// Append one evaluation's figures to its experiment's history, after the points
    /// recorded before it. The evaluation job records a point only when the figures changed
    /// since the latest one, so the history grows with the data, not with the runs.
    async fn record_evaluation(&self, point: &EvaluationPoint) -> Result<()>;

    /// The latest `limit` points of one experiment's history, oldest first (in the order
    /// they were recorded); empty when it has none.
    async fn evaluation_history(
        &self,
        experiment_id: &str,
        limit: usize,
    ) -> Result<Vec<EvaluationPoint>>;
}

/// One evaluation of an experiment's primary metric, as the evaluation job records it
/// ([`RollupStore::record_evaluation`]): each arm's estimate with its 95% interval and its
/// P(best) at that time, what a chart of them over time reads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvaluationPoint {
    pub experiment_id: String,
    /// When the evaluation ran.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// The rollup watermark then: the `seq` of the last event folded into the rollups.
    pub aggregated_through: u64,
    /// The primary metric's event.
    pub metric: String,
    /// What the arms' estimates are, as `verdict_policy::EstimateKind` names it
    /// (`conversion_rate`, `events_per_subject`, `value_per_subject`, `value_per_event`).
    pub estimate: String,
    /// Every arm, in the experiment's variant order.
    pub arms: Vec<ArmPoint>,
}

impl EvaluationPoint {
    /// Whether `other` holds the same figures (metric, estimate and arms), whenever either
    /// was evaluated. Figures are compared to within a relative 1e-9: a figure read back from
    /// a stored JSON document may differ from the one written in its last bit.
    pub fn same_figures(&self, other: &EvaluationPoint) -> bool {
        self.metric == other.metric
            && self.estimate == other.estimate
            && self.arms.len() == other.arms.len()
            && self
                .arms
                .iter()
                .zip(&other.arms)
                .all(|(a, b)| a.same_figures(b))
    }
}

impl ArmPoint {
    fn same_figures(&self, other: &ArmPoint) -> bool {
        fn close(a: f64, b: f64) -> bool {
            a == b || (a - b).abs() <= 1e-9 * a.abs().max(b.abs())
        }
        fn same(a: Option<f64>, b: Option<f64>) -> bool {
            match (a, b) {
                (Some(a), Some(b)) => close(a, b),
                (a, b) => a.is_none() && b.is_none(),
            }
        }
        self.variant == other.variant
            && self.subjects == other.subjects
            && same(self.estimate, other.estimate)
            && same(self.prob_best, other.prob_best)
            && same(self.interval.map(|i| i[0]), other.interval.map(|i| i[0]))
            && same(self.interval.map(|i| i[1]), other.interval.map(|i| i[1]))
    }
}

/// One arm's figures in an [`EvaluationPoint`]; a figure that is undefined (no subjects, a
/// posterior without variance) is `None`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArmPoint {
    pub variant: String,
    pub subjects: u64,
    pub estimate: Option<f64>,
    /// The equal-tailed 95% interval of the estimate, `[low, high]`.
    pub interval: Option<[f64; 2]>,
    /// P(this arm is the best) under the metric's objective.
    pub prob_best: Option<f64>,
}

/// One (segment, variant)'s figures ([`RollupStore::segment_counts`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SegmentCounts {
    /// The subjects' value of the dimension; `None` for those without one.
    pub segment: Option<String>,
    pub counts: VariantCounts,
}

/// One assigned subject as [`segment_figures`] groups it: its segment, its variant, and
/// its counted events and their total of the metric's event (`None` without any).
pub(crate) struct SubjectFigure {
    pub segment: Option<String>,
    pub variant: String,
    pub events: Option<(u64, f64)>,
}

/// The [`SegmentCounts`] of `subjects`, each total capped at `cap` (`min(total, cap)`,
/// negative totals left as they are), in the order [`RollupStore::segment_counts`] gives:
/// what the SQLite adapter computes in SQL, for adapters that read the rows instead.
pub(crate) fn segment_figures(
    subjects: impl IntoIterator<Item = SubjectFigure>,
    cap: Option<f64>,
) -> Vec<SegmentCounts> {
    let mut groups: std::collections::BTreeMap<(Option<String>, String), VariantCounts> =
        std::collections::BTreeMap::new();
    for s in subjects {
        let c = groups
            .entry((s.segment, s.variant.clone()))
            .or_insert_with(|| VariantCounts {
                variant: s.variant,
                ..Default::default()
            });
        c.subjects += 1;
        if let Some((n, total)) = s.events {
            let t = match cap {
                Some(cap) if total >= 0.0 && total > cap => cap,
                _ => total,
            };
            c.converted_subjects += 1;
            c.events += n;
            c.sum += t;
            c.sum_of_squares += t * t;
            c.sum_events_squared += n * n;
            c.sum_events_value += n as f64 * t;
        }
    }
    groups
        .into_iter()
        .map(|((segment, _), counts)| SegmentCounts { segment, counts })
        .collect()
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

/// What [`RollupStore::repair_totals`] did to one experiment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum RepairOutcome {
    /// None of its stored totals overflowed: nothing was written.
    Nothing,
    /// Its rollups were recomputed from its raw events; `dropped_events` events beyond the
    /// bound were left out.
    Repaired { dropped_events: u64 },
    /// Some of its raw events are gone (retention): its attributed events up to the
    /// watermark (`raw_events`) are fewer than the rollups hold (`rolled_up_events`).
    /// Nothing was written; results keep flagging its overflowed totals.
    NotRetained {
        raw_events: u64,
        rolled_up_events: u64,
    },
}

/// Above this `|total|` the square of a subject's total, which results sum, is not finite
/// (√`f64::MAX`).
pub(crate) const SQUARE_OVERFLOWS: f64 = 1.340_780_792_994_259_6e154;

/// A repair's bound: a positive number (infinity would keep every value, NaN none).
pub(crate) fn check_bound(max_abs_value: f64) -> Result<()> {
    if max_abs_value.is_finite() && max_abs_value > 0.0 {
        Ok(())
    } else {
        Err(StoreError::corrupt(format!(
            "repairing rollups: the value bound {max_abs_value} is not a positive number"
        )))
    }
}

/// [`StoreError::Fenced`] unless `fence` is the newest lease of its job (checked apart
/// from the writes it guards, as MongoDB has no transactions).
pub(crate) async fn check_fence(
    store: &(impl JobStore + ?Sized),
    fence: Option<&Fence>,
) -> Result<()> {
    if let Some(fence) = fence {
        let current = store.get_lease(&fence.job).await?.map(|l| l.token);
        if current != Some(fence.token) {
            return Err(StoreError::Fenced {
                job: fence.job.clone(),
                token: fence.token,
            });
        }
    }
    Ok(())
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

/// How many events of one type one variant received (see [`RollupStore::event_counts`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventCount {
    pub variant: String,
    pub event: String,
    pub count: u64,
}

/// A cap is a number or nothing: a NaN would compare differently in each backend.
pub(crate) fn check_cap(cap: Option<f64>, doing: &'static str) -> Result<()> {
    match cap {
        Some(c) if c.is_nan() => Err(StoreError::corrupt(format!(
            "{doing}: the cap is NaN, not a number"
        ))),
        _ => Ok(()),
    }
}

/// Where the nearest-rank `q`-quantile of `n` sorted values is read: `None` when `n` is 0,
/// else `(descending, offset)`, from whichever end of the order is nearer (a top-k read keeps
/// `offset + 1` values).
pub(crate) fn quantile_position(q: f64, n: u64) -> Result<Option<(bool, u64)>> {
    if !(0.0..=1.0).contains(&q) {
        return Err(StoreError::corrupt(format!(
            "computing a subject value quantile: q = {q} is not in [0, 1]"
        )));
    }
    if n == 0 {
        return Ok(None);
    }
    // The rank, 1-based: ⌈q·n⌉, at least 1 (q = 0 is the smallest value).
    let rank = ((q * n as f64).ceil() as u64).clamp(1, n);
    let from_bottom = rank - 1;
    let from_top = n - rank;
    Ok(Some(if from_top < from_bottom {
        (true, from_top)
    } else {
        (false, from_bottom)
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_nearest_rank_is_read_from_the_nearer_end() {
        // Of 5 sorted values: q = 0 is the first, 0.5 the third (⌈2.5⌉), 1 the last.
        assert_eq!(quantile_position(0.0, 5).unwrap(), Some((false, 0)));
        assert_eq!(quantile_position(0.5, 5).unwrap(), Some((false, 2)));
        assert_eq!(quantile_position(0.75, 5).unwrap(), Some((true, 1)));
        assert_eq!(quantile_position(1.0, 5).unwrap(), Some((true, 0)));
        assert_eq!(quantile_position(0.99, 1000).unwrap(), Some((true, 10)));
        assert_eq!(quantile_position(0.5, 0).unwrap(), None);
    }

    #[test]
    fn a_total_beyond_the_square_overflow_bound_has_an_infinite_square() {
        assert_eq!(SQUARE_OVERFLOWS, f64::MAX.sqrt());
        // The SQLite partial index (migration 0008) writes it out.
        assert_eq!(
            "1.3407807929942596e154".parse::<f64>(),
            Ok(SQUARE_OVERFLOWS)
        );
        let above = SQUARE_OVERFLOWS * (1.0 + 1e-15);
        assert!((above * above).is_infinite());
        let below = SQUARE_OVERFLOWS * (1.0 - 1e-15);
        assert!((below * below).is_finite());
        assert!(check_bound(1e12).is_ok());
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert!(check_bound(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_q_outside_zero_to_one_and_a_nan_cap_are_refused() {
        assert!(quantile_position(1.5, 5).is_err());
        assert!(quantile_position(f64::NAN, 5).is_err());
        assert!(check_cap(Some(f64::NAN), "counting").is_err());
        assert!(check_cap(Some(f64::INFINITY), "counting").is_ok());
        assert!(check_cap(None, "counting").is_ok());
    }
}
