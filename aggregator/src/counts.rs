//! Per-variant figures of one metric event of an experiment, read where they can be: from
//! the rollups when only "at or after the assignment" applies (the usual case; cost
//! independent of raw events), else from raw events at query time, for a `from`/`to` range,
//! a metric window (`window_hours`) or an exposure event (see `verdict_store::Attribution`).
//! Results and the evaluation job both read their figures here, so they always agree. A
//! metric's cap applies here too: each subject's total is capped at the metric's fixed value,
//! or at the configured percentile of the subjects' totals, which the store computes from
//! the same figures at each read (MongoDB 6 has no `$percentile`).

use serde::{Deserialize, Serialize};
use verdict_domain::{Breakdown, Cap, Experiment};
use verdict_store::{Attribution, DynStore, SegmentCounts, StoreError, TimeRange, VariantCounts};

/// Where a metric's figures come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ResultsSource {
    /// The rollups, as of the last aggregation run.
    Rollups,
    /// Raw events, counted at query time: a `from`/`to` range, a metric window or an
    /// exposure event applies.
    RawEvents,
}

/// How `event`'s events are attributed to `e`'s subjects: the experiment's exposure event,
/// the window of the metric `event` feeds (if any), and `range`.
fn attribution(e: &Experiment, event: &str, range: TimeRange) -> Attribution {
    Attribution {
        range,
        exposure_event: e.exposure_event.clone(),
        window: e
            .metric(event)
            .and_then(|m| m.window_hours)
            .map(|h| time::Duration::hours(i64::from(h))),
    }
}

/// `e`'s per-variant figures of `event` inside `range`, and where they were read.
pub async fn variant_counts(
    store: &DynStore,
    e: &Experiment,
    event: &str,
    range: TimeRange,
) -> Result<(ResultsSource, Vec<VariantCounts>), StoreError> {
    let attribution = attribution(e, event, range);
    let cap = cap_value(store, e, event, &attribution).await?;
    if attribution.is_plain() {
        let counts = store.rolled_up_counts(&e.id, event, cap).await?;
        return Ok((ResultsSource::Rollups, counts));
    }
    let counts = store
        .variant_counts(&e.id, event, &attribution, cap)
        .await?;
    Ok((ResultsSource::RawEvents, counts))
}

/// The value `event`'s per-subject totals are capped at, if its metric has a cap.
async fn cap_value(
    store: &DynStore,
    e: &Experiment,
    event: &str,
    attribution: &Attribution,
) -> Result<Option<f64>, StoreError> {
    match e.metric(event).and_then(|m| m.cap) {
        None => Ok(None),
        Some(Cap::Value(v)) => Ok(Some(v)),
        Some(Cap::Percentile(q)) => {
            let raw = (!attribution.is_plain()).then_some(attribution);
            store.subject_value_quantile(&e.id, event, raw, q).await
        }
    }
}

/// `e`'s figures of `event` per variant, in the experiment's variant order (zeros for a
/// variant without subjects yet), as the policy takes them.
pub async fn in_variant_order(
    store: &DynStore,
    e: &Experiment,
    event: &str,
) -> Result<Vec<VariantCounts>, StoreError> {
    let (_, counts) = variant_counts(store, e, event, TimeRange::default()).await?;
    Ok(e.variants
        .iter()
        .map(|v| {
            counts
                .iter()
                .find(|c| c.variant == v.key)
                .cloned()
                .unwrap_or_else(|| VariantCounts {
                    variant: v.key.clone(),
                    ..VariantCounts::default()
                })
        })
        .collect())
}

/// `e`'s per-variant figures of its exposure event ([`Experiment::exposure_event_name`]) inside
/// `range`: the exposures results show beside every metric.
pub async fn exposure_figures(
    store: &DynStore,
    e: &Experiment,
    range: TimeRange,
) -> Result<Vec<VariantCounts>, StoreError> {
    let (_, exposures) = variant_counts(store, e, e.exposure_event_name(), range).await?;
    Ok(exposures)
}

/// `e`'s figures of `event` per segment of `breakdown` and variant
/// (`RollupStore::segment_counts`), capped as [`variant_counts`] caps them; `None` when
/// `event`'s figures are not read from the rollups (the experiment's exposure event or the
/// metric's window applies: those are counted from raw events, which breakdowns do not
/// read).
pub async fn segment_counts(
    store: &DynStore,
    e: &Experiment,
    event: &str,
    breakdown: &Breakdown,
) -> Result<Option<Vec<SegmentCounts>>, StoreError> {
    let attribution = attribution(e, event, TimeRange::default());
    if !attribution.is_plain() {
        return Ok(None);
    }
    let cap = cap_value(store, e, event, &attribution).await?;
    Ok(Some(
        store.segment_counts(&e.id, event, breakdown, cap).await?,
    ))
}
