//! Winner snapshots, results and time series, and the change stream push clients follow.
//!
//! Results read their figures through `verdict_aggregator::counts` (as the evaluation job
//! does): the rollups the aggregation job maintains (per variant, assigned subjects and
//! subject-level figures of the metric), so their cost does not grow with raw events, as
//! fresh as the last aggregation run (`aggregated_through` says how far it got); or raw
//! events at query time when a `from` / `to` range, the metric's window or the experiment's
//! exposure event applies. They add the statistics of `verdict_policy::analysis`, and per
//! variant the events of every type (from the buckets). Time series serve the hour and day
//! buckets.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tokio::sync::broadcast;
use utoipa::{IntoParams, ToSchema};
use verdict_aggregator::counts::{self, ResultsSource};
use verdict_aggregator::evaluate;
use verdict_cache::Cache;
pub use verdict_cache::Change;
use verdict_domain::breakdown::segments_of;
use verdict_domain::{
    Breakdown, DimensionSource, Experiment, Scope, SegmentKind, Status, VariantCounts,
    WinnerSnapshot,
};
use verdict_policy::analysis::{MetricAnalysis, MetricSpec, SrmView, analyze_metric, srm};
use verdict_policy::{Evaluation, GuardOutcome, GuardrailReport, SubjectsNeeded, Verdict};
use verdict_store::{Granularity, SegmentCounts, TimeRange};

use crate::App;
use crate::auth::{Caller, ScopeParams};
use crate::error::{AppError, ErrorCode};

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ResultsParams {
    /// Only this metric's event (default: every metric of the experiment).
    pub metric: Option<String>,
    /// Count events at or after this time: RFC 3339, or a date (`2026-12-03`) for the start
    /// of that UTC day; counts raw events.
    #[serde(default, deserialize_with = "bound::from")]
    #[param(value_type = Option<String>)]
    pub from: Option<OffsetDateTime>,
    /// Count events before this time: RFC 3339, or a date (`2026-12-03`) for that whole UTC
    /// day (events before the next day's start); counts raw events.
    #[serde(default, deserialize_with = "bound::to")]
    #[param(value_type = Option<String>)]
    pub to: Option<OffsetDateTime>,
    /// Also break the results down by the experiment's declared dimension (`breakdown`),
    /// from the rollups: not with `from` / `to`.
    pub breakdown: Option<bool>,
    /// Act in this environment instead of the caller's (right `scope:any`).
    pub environment: Option<String>,
    /// Act in this organization instead of the caller's (right `scope:any`).
    pub organization: Option<String>,
}

/// The `from` / `to` bounds of a query: an RFC 3339 time, or a date standing for whole UTC
/// days (`from=2026-12-01&to=2026-12-03` takes in the three days: `to` a date is the start of
/// the day after it).
mod bound {
    use serde::{Deserialize, Deserializer, de::Error};
    use time::format_description::well_known::{Iso8601, Rfc3339};
    use time::{Date, Duration, OffsetDateTime, Time};

    /// `value` as a time, or as the start of the day it names (`next_day`: of the day after).
    pub(super) fn parse(value: &str, next_day: bool) -> Result<OffsetDateTime, String> {
        if let Ok(t) = OffsetDateTime::parse(value, &Rfc3339) {
            return Ok(t);
        }
        let day = Date::parse(value, &Iso8601::DATE).map_err(|_| {
            format!("`{value}` is neither an RFC 3339 time nor a date (YYYY-MM-DD)")
        })?;
        let start = day.with_time(Time::MIDNIGHT).assume_utc();
        if next_day {
            start
                .checked_add(Duration::DAY)
                .ok_or_else(|| format!("`{value}` is the last day a time can name"))
        } else {
            Ok(start)
        }
    }

    fn bound<'de, D: Deserializer<'de>>(
        d: D,
        next_day: bool,
    ) -> Result<Option<OffsetDateTime>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|v| parse(&v, next_day).map_err(D::Error::custom))
            .transpose()
    }

    pub(super) fn from<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<OffsetDateTime>, D::Error> {
        bound(d, false)
    }

    pub(super) fn to<'de, D: Deserializer<'de>>(d: D) -> Result<Option<OffsetDateTime>, D::Error> {
        bound(d, true)
    }
}

/// An experiment's results: every metric (or the one `metric` names) with per-variant
/// figures and their statistics, beside the SRM check of its assigned subjects.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ResultsView {
    /// The experiment key.
    pub experiment: String,
    pub experiment_id: String,
    pub status: Status,
    /// The decided winner's variant key, if any.
    pub winner: Option<String>,
    /// Days since the experiment started, to its completion once completed (fractional,
    /// paused time included); `null` before it starts.
    pub days_running: Option<f64>,
    /// Ingestion sequence number of the last event folded into the rollups.
    pub aggregated_through: u64,
    /// The sample-ratio check of the subjects in the analysis (exposed subjects when the
    /// experiment names an exposure event) against the weights; `null` when there is
    /// nothing to test (no subjects, or fewer than two weighted arms).
    pub srm: Option<SrmView>,
    /// Per variant, in the experiment's order: its subjects and the events of every type it
    /// received.
    pub variants: Vec<VariantSummary>,
    /// The same over every variant.
    pub totals: Totals,
    /// The primary metric, then the secondary and guardrail metrics, in their configured
    /// order; only the one `metric` names when given.
    pub metrics: Vec<MetricResults>,
    /// With `breakdown=true`: the same statistics per segment of the declared dimension.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub breakdown: Option<BreakdownView>,
}

/// Results per segment of an experiment's declared dimension (`verdict_domain::breakdown`).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct BreakdownView {
    pub source: DimensionSource,
    pub attribute: String,
    /// Values shown as their own segment; the rest are merged into `other`.
    pub max_segments: u32,
    /// The values with the most subjects first, then `other` and `missing` (when they have
    /// subjects).
    pub segments: Vec<SegmentResults>,
    /// Metrics not broken down: their figures are counted from raw events (the experiment's
    /// exposure event or the metric's window applies), and breakdowns read the rollups.
    pub omitted_metrics: Vec<String>,
    /// How to read many segments at once.
    pub multiple_comparisons: MultipleComparisons,
}

/// The caution that goes with testing every segment.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MultipleComparisons {
    /// Segments each metric is compared in.
    pub comparisons: usize,
    /// The level a segment's p-value must be under for the whole family of segments to keep
    /// a 5% chance of any false positive (Bonferroni: 0.05 / segments).
    pub bonferroni_alpha: f64,
    pub note: String,
}

/// One segment's subjects and the statistics of each metric among them.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SegmentResults {
    pub kind: SegmentKind,
    /// The value, for a `value` segment.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// For `other`: how many values it merges.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub values: Option<usize>,
    pub subjects: u64,
    /// The sample-ratio check within the segment (meaningful for a dimension fixed before
    /// assignment, such as an assignment attribute).
    pub srm: Option<SrmView>,
    /// The broken-down metrics, in the order of the results' `metrics`, with the same
    /// per-variant statistics (the peeking guard's state belongs to the whole experiment,
    /// so intervals use the configured τ only).
    pub metrics: Vec<MetricAnalysis>,
}

/// One variant's population and events, whatever the metrics.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct VariantSummary {
    pub variant: String,
    /// Subjects in the analysis (those who sent the exposure event when the experiment
    /// names one).
    pub subjects: u64,
    /// Subjects who sent the exposure event (the experiment's, else `exposure`).
    pub exposed_subjects: u64,
    /// Events by type, as rolled up (with `from`/`to`: those of the hours starting inside
    /// the range), each counted from its subject's assignment on.
    pub events: BTreeMap<String, u64>,
    /// Σ of `events`.
    pub total_events: u64,
}

/// Every variant's [`VariantSummary`] summed.
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct Totals {
    pub subjects: u64,
    pub exposed_subjects: u64,
    pub events: u64,
}

/// One metric's per-variant figures and statistics.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MetricResults {
    /// Where the figures come from: the rollups, or raw events counted at query time.
    pub source: ResultsSource,
    #[serde(flatten)]
    pub analysis: MetricAnalysis,
    /// For the primary metric: what the winner policy concludes from these figures now (its
    /// verdict, every blocker with its figures, the subjects per arm still needed where the
    /// rule allows an estimate, each guardrail's status per arm). The evaluation job records
    /// the same when it runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decision: Option<DecisionView>,
}

/// The winner policy's reading of the primary metric.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DecisionView {
    /// `{"outcome": "winner", …}` or `{"outcome": "no_decision", "blockers": [...]}`.
    #[schema(value_type = Object)]
    pub verdict: Verdict,
    /// The arm that would win, and the best of the others.
    pub candidate: String,
    pub runner_up: String,
    /// How many subjects per arm the rules still need, where they allow an estimate.
    #[schema(value_type = Vec<Object>)]
    pub subjects_needed: Vec<SubjectsNeeded>,
    /// The peeking guard's numbers for the candidate against the runner-up.
    #[schema(value_type = Object)]
    pub peeking_guard: GuardOutcome,
    /// Each guardrail metric's status per arm.
    #[schema(value_type = Vec<Object>)]
    pub guardrails: Vec<GuardrailReport>,
}

impl DecisionView {
    fn of(evaluation: Evaluation) -> Self {
        Self {
            subjects_needed: evaluation.subjects_needed(),
            verdict: evaluation.verdict,
            candidate: evaluation.candidate,
            runner_up: evaluation.runner_up,
            peeking_guard: evaluation.peeking_guard,
            guardrails: evaluation.guardrails,
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct TimeseriesParams {
    /// The metric event (default: the primary metric's).
    pub metric: Option<String>,
    /// Bucket width: `hour` or `day` (default `day`).
    #[param(value_type = Option<String>)]
    pub granularity: Option<Granularity>,
    /// Buckets starting at or after this time: RFC 3339, or a date (`2026-12-03`) for the
    /// start of that UTC day.
    #[serde(default, deserialize_with = "bound::from")]
    #[param(value_type = Option<String>)]
    pub from: Option<OffsetDateTime>,
    /// Buckets starting before this time: RFC 3339, or a date (`2026-12-03`) for that whole
    /// UTC day (buckets before the next day's start).
    #[serde(default, deserialize_with = "bound::to")]
    #[param(value_type = Option<String>)]
    pub to: Option<OffsetDateTime>,
    /// Act in this environment instead of the caller's (right `scope:any`).
    pub environment: Option<String>,
    /// Act in this organization instead of the caller's (right `scope:any`).
    pub organization: Option<String>,
}

/// One bucket of one variant: event-level count and sums.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Point {
    #[serde(with = "time::serde::rfc3339")]
    pub start: OffsetDateTime,
    pub count: u64,
    /// Σ of the bucket's values; `null` only when the stored total is not finite (it was
    /// accumulated from values beyond what ingestion now accepts, `ingest.max_abs_value`).
    pub sum: Option<f64>,
    /// Σ of the squared values; `null` only when the stored total is not finite.
    pub sum_of_squares: Option<f64>,
}

/// The buckets of one variant, oldest first.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Series {
    pub variant: String,
    pub points: Vec<Point>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TimeseriesView {
    pub experiment: String,
    pub metric: String,
    /// `hour` or `day`.
    pub granularity: String,
    /// Ingestion sequence number of the last event folded into the buckets.
    pub aggregated_through: u64,
    /// One series per variant, in the experiment's variant order.
    pub series: Vec<Series>,
}

impl App {
    /// The experiment a `client`-scoped read names, and the metric event it asks for (the
    /// primary metric's by default).
    async fn experiment_and_metric(
        &self,
        caller: &Caller,
        scope: ScopeParams,
        key: &str,
        metric: Option<String>,
    ) -> Result<(Experiment, String), AppError> {
        let e = self.find(&caller.scope(&scope)?, key).await?;
        let metric = match metric {
            None => e.primary_metric.event.clone(),
            Some(m) if e.metric(&m).is_some() => m,
            Some(m) => return Err(metric_not_found(&e, &m)),
        };
        Ok((e, metric))
    }

    /// The winner snapshot: from the cache, from the store when the cache cannot answer.
    pub async fn winner(
        &self,
        caller: &Caller,
        scope: &ScopeParams,
        key: &str,
    ) -> Result<WinnerSnapshot, AppError> {
        let e = self.find(&caller.scope(scope)?, key).await?;
        self.0.snapshots.read(&*self.0.store, &e).await
    }

    /// Every metric of the experiment (or the one `params.metric` names), per variant, with
    /// their statistics and the SRM check.
    pub async fn results(
        &self,
        caller: &Caller,
        key: &str,
        params: ResultsParams,
    ) -> Result<ResultsView, AppError> {
        let scope = ScopeParams {
            environment: params.environment,
            organization: params.organization,
        };
        let e = self.find(&caller.scope(&scope)?, key).await?;
        let events: Vec<String> = match params.metric {
            Some(m) if e.metric(&m).is_some() => vec![m],
            Some(m) => return Err(metric_not_found(&e, &m)),
            None => e.metrics().map(|(m, _)| m.event.clone()).collect(),
        };
        let store = &self.0.store;
        let aggregated_through = store.rollup_watermark().await?;
        let range = TimeRange {
            from: params.from,
            to: params.to,
        };
        let breakdown = match (params.breakdown, &e.breakdown) {
            (Some(true), None) => {
                return Err(AppError::new(
                    ErrorCode::InvalidQuery,
                    format!(
                        "'{}' declares no breakdown: set `breakdown` when creating it (or \
                         while it is a draft)",
                        e.key
                    ),
                ));
            }
            (Some(true), Some(_)) if range != TimeRange::default() => {
                return Err(AppError::new(
                    ErrorCode::InvalidQuery,
                    "a breakdown reads the rollups, which have no time range: leave out \
                     `from` and `to`",
                ));
            }
            (Some(true), Some(b)) => Some(self.breakdown(&e, b, &events).await?),
            _ => None,
        };
        let state = evaluate::guard_state(store, &e).await?;
        let exposures = counts::exposure_figures(store, &e, range).await?;
        let now = OffsetDateTime::now_utc();
        // Events by type: day buckets, or hour buckets to follow a range more closely.
        let granularity = if range == TimeRange::default() {
            Granularity::Day
        } else {
            Granularity::Hour
        };
        let by_type = store.event_counts(&e.id, granularity, range).await?;
        let mut variants: Vec<VariantSummary> = e
            .variants
            .iter()
            .map(|v| VariantSummary {
                variant: v.key.clone(),
                subjects: 0,
                exposed_subjects: exposures
                    .iter()
                    .find(|c| c.variant == v.key)
                    .map_or(0, |c| c.converted_subjects),
                events: BTreeMap::new(),
                total_events: 0,
            })
            .collect();
        for c in by_type {
            if let Some(v) = variants.iter_mut().find(|v| v.variant == c.variant) {
                v.total_events += c.count;
                v.events.insert(c.event, c.count);
            }
        }
        let mut srm_view = None;
        let mut metrics = Vec::with_capacity(events.len());
        for (i, event) in events.into_iter().enumerate() {
            let (source, figures) = counts::variant_counts(store, &e, &event, range).await?;
            if i == 0 {
                srm_view = srm(&e, &figures);
                for v in &mut variants {
                    v.subjects = figures
                        .iter()
                        .find(|c| c.variant == v.variant)
                        .map_or(0, |c| c.subjects);
                }
            }
            let decision = if event == e.primary_metric.event {
                evaluate::evaluation_of(store, &e, now)
                    .await?
                    .ok()
                    .map(DecisionView::of)
            } else {
                None
            };
            metrics.push(MetricResults {
                source,
                analysis: analyze_metric(
                    &e,
                    &MetricSpec::of(&e, &event),
                    &figures,
                    &exposures,
                    Some(&state),
                ),
                decision,
            });
        }
        Ok(ResultsView {
            days_running: e.days_running(now),
            experiment: e.key,
            experiment_id: e.id,
            status: e.status,
            winner: e.winner.map(|w| w.variant),
            aggregated_through,
            srm: srm_view,
            totals: Totals {
                subjects: variants.iter().map(|v| v.subjects).sum(),
                exposed_subjects: variants.iter().map(|v| v.exposed_subjects).sum(),
                events: variants.iter().map(|v| v.total_events).sum(),
            },
            variants,
            metrics,
            breakdown,
        })
    }

    /// `e`'s figures of each of `events` per segment of `b`, with their statistics.
    async fn breakdown(
        &self,
        e: &Experiment,
        b: &Breakdown,
        events: &[String],
    ) -> Result<BreakdownView, AppError> {
        let store = &self.0.store;
        let mut broken_down = Vec::new();
        let mut omitted_metrics = Vec::new();
        for event in events {
            match counts::segment_counts(store, e, event, b).await? {
                Some(rows) => broken_down.push((event.clone(), rows)),
                None => omitted_metrics.push(event.clone()),
            }
        }
        let exposures = counts::segment_counts(store, e, e.exposure_event_name(), b)
            .await?
            .unwrap_or_default();
        let segments = segment_results(e, b, &broken_down, &exposures);
        let comparisons = segments.len();
        Ok(BreakdownView {
            source: b.source,
            attribute: b.attribute.clone(),
            max_segments: b.max_segments,
            segments,
            omitted_metrics,
            multiple_comparisons: MultipleComparisons {
                comparisons,
                bonferroni_alpha: 0.05 / comparisons.max(1) as f64,
                note: format!(
                    "Each segment is compared on its own. With {comparisons} segments, about \
                     {comparisons} × 5% of them can show a significant difference by chance \
                     even where there is no effect anywhere, and segments are smaller, so \
                     each comparison is noisier than the whole experiment's. Read a segment \
                     whose effect differs as a hypothesis to confirm in a new experiment, or \
                     hold its p-value to the Bonferroni level given here."
                ),
            },
        })
    }

    /// Hour or day buckets of one metric, one series per variant.
    pub async fn timeseries(
        &self,
        caller: &Caller,
        key: &str,
        params: TimeseriesParams,
    ) -> Result<TimeseriesView, AppError> {
        let scope = ScopeParams {
            environment: params.environment,
            organization: params.organization,
        };
        let (e, metric) = self
            .experiment_and_metric(caller, scope, key, params.metric)
            .await?;
        let granularity = params.granularity.unwrap_or(Granularity::Day);
        let store = &self.0.store;
        let aggregated_through = store.rollup_watermark().await?;
        let range = TimeRange {
            from: params.from,
            to: params.to,
        };
        let buckets = store.buckets(&e.id, &metric, granularity, range).await?;
        let series = e
            .variants
            .iter()
            .map(|v| Series {
                variant: v.key.clone(),
                points: buckets
                    .iter()
                    .filter(|b| b.variant == v.key)
                    .map(|b| Point {
                        start: b.start,
                        count: b.count,
                        sum: Some(b.sum).filter(|x| x.is_finite()),
                        sum_of_squares: Some(b.sum_of_squares).filter(|x| x.is_finite()),
                    })
                    .collect(),
            })
            .collect();
        Ok(TimeseriesView {
            experiment: e.key,
            metric,
            granularity: granularity.as_str().to_owned(),
            aggregated_through,
            series,
        })
    }

    /// Follow winner and status changes: the experiment `key` as `scope` sees it.
    /// Subscribe before reading the current snapshot, so that no change between the two is
    /// missed.
    pub async fn follow(&self, scope: &Scope, key: &str) -> Result<Followed, AppError> {
        let changes = self.changes();
        let experiment = self.find(scope, key).await?;
        let snapshot = self.0.snapshots.read(&*self.0.store, &experiment).await?;
        Ok(Followed {
            experiment,
            snapshot,
            changes,
        })
    }

    /// The current snapshot of an experiment already resolved (e.g. after a push client fell
    /// behind the change stream).
    pub async fn snapshot_of(&self, experiment: &Experiment) -> Result<WinnerSnapshot, AppError> {
        self.0.snapshots.read(&*self.0.store, experiment).await
    }

    /// Every change announced by any replica from now on.
    pub fn changes(&self) -> broadcast::Receiver<Change> {
        self.0.snapshots.cache().subscribe()
    }
}

/// `metric_not_found`, listing the experiment's metrics (primary, secondary, guardrails).
/// The segments of breakdown `b` and each metric's statistics in each: the values with the
/// most subjects (counted in the first metric's rows, all of which hold every assigned
/// subject; else in the exposure rows), then `other` and `missing`.
fn segment_results(
    e: &Experiment,
    b: &Breakdown,
    metrics: &[(String, Vec<SegmentCounts>)],
    exposures: &[SegmentCounts],
) -> Vec<SegmentResults> {
    let population = metrics
        .first()
        .map_or(exposures, |(_, rows)| rows.as_slice());
    let values: Vec<(Option<&str>, u64)> = population
        .iter()
        .map(|r| (r.segment.as_deref(), r.counts.subjects))
        .collect();
    let (segments, _) = segments_of(&values, b.max_segments);
    let index_of = |value: Option<&str>| {
        segments
            .iter()
            .position(|(kind, v)| match (kind, value) {
                (SegmentKind::Value, Some(value)) => v.as_deref() == Some(value),
                (SegmentKind::Missing, None) => true,
                _ => false,
            })
            .or_else(|| {
                value.and_then(|_| segments.iter().position(|(k, _)| *k == SegmentKind::Other))
            })
    };
    // Each segment's figures per variant, summed over the values it holds.
    let figures_of = |rows: &[SegmentCounts], i: usize| -> Vec<VariantCounts> {
        let mut merged: Vec<VariantCounts> = Vec::new();
        for r in rows
            .iter()
            .filter(|r| index_of(r.segment.as_deref()) == Some(i))
        {
            match merged.iter_mut().find(|m| m.variant == r.counts.variant) {
                Some(m) => m.add(&r.counts),
                None => merged.push(r.counts.clone()),
            }
        }
        merged
    };
    let merged_values = |i: usize| {
        let mut distinct: Vec<&str> = population
            .iter()
            .filter(|r| index_of(r.segment.as_deref()) == Some(i))
            .filter_map(|r| r.segment.as_deref())
            .collect();
        distinct.sort_unstable();
        distinct.dedup();
        distinct.len()
    };
    segments
        .iter()
        .enumerate()
        .map(|(i, (kind, value))| {
            let people = figures_of(population, i);
            let exposed = figures_of(exposures, i);
            SegmentResults {
                kind: *kind,
                value: value.clone(),
                values: (*kind == SegmentKind::Other).then(|| merged_values(i)),
                subjects: people.iter().map(|c| c.subjects).sum(),
                srm: srm(e, &people),
                metrics: metrics
                    .iter()
                    .map(|(event, rows)| {
                        analyze_metric(
                            e,
                            &MetricSpec::of(e, event),
                            &figures_of(rows, i),
                            &exposed,
                            None,
                        )
                    })
                    .collect(),
            }
        })
        .collect()
}

fn metric_not_found(e: &Experiment, asked: &str) -> AppError {
    let metrics: Vec<&str> = std::iter::once(&e.primary_metric)
        .chain(&e.secondary_metrics)
        .chain(&e.guardrail_metrics)
        .map(|m| m.event.as_str())
        .collect();
    AppError::new(
        ErrorCode::MetricNotFound,
        format!(
            "'{asked}' is not a metric of '{}'; its metrics are {}",
            e.key,
            metrics.join(", ")
        ),
    )
    .with_details(
        metrics
            .iter()
            .map(|m| serde_json::json!({"metric": m}))
            .collect(),
    )
}

/// An experiment being followed: its snapshot when following began, and the changes since.
#[derive(Debug)]
pub struct Followed {
    pub experiment: Experiment,
    pub snapshot: WinnerSnapshot,
    pub changes: broadcast::Receiver<Change>,
}

/// The push message kind of a change: `winner`, `status` or `metrics`.
pub fn change_kind(change: &Change) -> &'static str {
    match change {
        Change::Winner { .. } => "winner",
        Change::Status { .. } => "status",
        Change::Metrics { .. } => "metrics",
    }
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::bound::parse;

    #[test]
    fn a_date_bound_takes_in_the_whole_utc_day() {
        assert_eq!(
            parse("2026-12-03", false),
            Ok(datetime!(2026-12-03 00:00 UTC))
        );
        assert_eq!(
            parse("2026-12-03", true),
            Ok(datetime!(2026-12-04 00:00 UTC))
        );
        assert_eq!(
            parse("2026-12-31", true),
            Ok(datetime!(2027-01-01 00:00 UTC))
        );
    }

    #[test]
    fn a_time_bound_is_taken_as_it_is_whichever_end() {
        let t = datetime!(2026-12-03 10:30 +02:00);
        assert_eq!(parse("2026-12-03T10:30:00+02:00", false), Ok(t));
        assert_eq!(parse("2026-12-03T10:30:00+02:00", true), Ok(t));
    }

    #[test]
    fn anything_else_is_refused_with_what_was_sent() {
        for bad in [
            "yesterday",
            "2026-13-01",
            "2026-12-3",
            "",
            "2026-12-03T25:00:00Z",
        ] {
            let e = parse(bad, false).unwrap_err();
            assert!(e.contains(&format!("`{bad}`")), "{e}");
        }
    }
}
