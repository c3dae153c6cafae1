//! Per-variant figures of one metric event of an experiment, read where they can be: from
//! the rollups when only "at or after the assignment" applies (the usual case; cost
//! independent of raw events), else from raw events at query time, for a `from`/`to` range,
//! a metric window (`window_hours`) or an exposure event (see `verdict_store::Attribution`).
//! Results and the evaluation job both read their figures here, so they always agree.

use serde::{Deserialize, Serialize};
use verdict_domain::Experiment;
use verdict_store::{Attribution, DynStore, StoreError, TimeRange, VariantCounts};

/// The event counted as an exposure when an experiment names no `exposure_event`.
pub const DEFAULT_EXPOSURE_EVENT: &str = "exposure";

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
    if attribution.is_plain() {
        let counts = store.rolled_up_counts(&e.id, event, None).await?;
        return Ok((ResultsSource::Rollups, counts));
    }
    let counts = store
        .variant_counts(&e.id, event, &attribution, None)
        .await?;
    Ok((ResultsSource::RawEvents, counts))
}

/// What results show of one metric: its figures, where they were read, and the exposures
/// beside them (of the experiment's exposure event, else [`DEFAULT_EXPOSURE_EVENT`]).
#[derive(Debug, Clone, PartialEq)]
pub struct ResultsFigures {
    pub source: ResultsSource,
    pub metric: Vec<VariantCounts>,
    pub exposures: Vec<VariantCounts>,
}

/// [`ResultsFigures`] of `metric` inside `range`.
pub async fn results_figures(
    store: &DynStore,
    e: &Experiment,
    metric: &str,
    range: TimeRange,
) -> Result<ResultsFigures, StoreError> {
    let exposure_event = e
        .exposure_event
        .as_deref()
        .unwrap_or(DEFAULT_EXPOSURE_EVENT);
    let (source, metric) = variant_counts(store, e, metric, range).await?;
    let (_, exposures) = variant_counts(store, e, exposure_event, range).await?;
    Ok(ResultsFigures {
        source,
        metric,
        exposures,
    })
}
