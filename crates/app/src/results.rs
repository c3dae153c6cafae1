//! Winner snapshots, results and time series, and the change stream push clients follow.
//!
//! Results read their figures through `verdict_aggregator::counts` (as the evaluation job
//! does): the rollups the aggregation job maintains (per variant, assigned subjects and
//! subject-level figures of the metric), so their cost does not grow with raw events, as
//! fresh as the last aggregation run (`aggregated_through` says how far it got); or raw
//! events at query time when a `from` / `to` range, the metric's window or the experiment's
//! exposure event applies. They add the statistics of `verdict_policy::analysis`. Time
//! series serve the hour and day buckets.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tokio::sync::broadcast;
use utoipa::{IntoParams, ToSchema};
use verdict_aggregator::counts::{self, ResultsSource};
use verdict_aggregator::evaluate;
use verdict_cache::Cache;
pub use verdict_cache::Change;
use verdict_domain::{Experiment, Scope, Status, WinnerSnapshot};
use verdict_policy::analysis::{Analysis, MetricSpec, analyze};
use verdict_policy::{Evaluation, GuardOutcome, GuardrailReport, SubjectsNeeded, Verdict};
use verdict_store::{Granularity, TimeRange};

use crate::App;
use crate::auth::{Caller, ScopeParams};
use crate::error::{AppError, ErrorCode};

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ResultsParams {
    /// The metric event to analyse (default: the primary metric's).
    pub metric: Option<String>,
    /// Count events at or after this time (RFC 3339); counts raw events.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub from: Option<OffsetDateTime>,
    /// Count events before this time (RFC 3339); counts raw events.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub to: Option<OffsetDateTime>,
    /// Act in this environment instead of the caller's (right `scope:any`).
    pub environment: Option<String>,
    /// Act in this organization instead of the caller's (right `scope:any`).
    pub organization: Option<String>,
}

/// Per-variant results of one metric with their statistics.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ResultsView {
    /// The experiment key.
    pub experiment: String,
    pub experiment_id: String,
    /// The metric event analysed (the primary metric's unless `metric` was given).
    pub metric: String,
    pub status: Status,
    /// The decided winner's variant key, if any.
    pub winner: Option<String>,
    pub source: ResultsSource,
    /// Ingestion sequence number of the last event folded into the rollups.
    pub aggregated_through: u64,
    #[serde(flatten)]
    pub analysis: Analysis,
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
    /// Buckets starting at or after this time (RFC 3339).
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub from: Option<OffsetDateTime>,
    /// Buckets starting before this time (RFC 3339).
    #[serde(default, with = "time::serde::rfc3339::option")]
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

    /// Per-variant figures of one metric with their statistics.
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
        let (e, metric) = self
            .experiment_and_metric(caller, scope, key, params.metric)
            .await?;
        let store = &self.0.store;
        let aggregated_through = store.rollup_watermark().await?;
        let range = TimeRange {
            from: params.from,
            to: params.to,
        };
        let figures = counts::results_figures(store, &e, &metric, range).await?;
        let state = evaluate::guard_state(store, &e).await?;
        let analysis = analyze(
            &e,
            MetricSpec::of(&e, &metric),
            &figures.metric,
            &figures.exposures,
            Some(&state),
        );
        let decision = if metric == e.primary_metric.event {
            let at = time::OffsetDateTime::now_utc();
            evaluate::evaluation_of(store, &e, at)
                .await?
                .ok()
                .map(DecisionView::of)
        } else {
            None
        };
        Ok(ResultsView {
            experiment: e.key,
            experiment_id: e.id,
            metric,
            status: e.status,
            winner: e.winner.map(|w| w.variant),
            source: figures.source,
            aggregated_through,
            analysis,
            decision,
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

/// The push message kind of a change: `winner` or `status`.
pub fn change_kind(change: &Change) -> &'static str {
    match change {
        Change::Winner { .. } => "winner",
        Change::Status { .. } => "status",
    }
}
