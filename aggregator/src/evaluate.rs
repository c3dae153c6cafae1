//! The evaluation job: apply each running experiment's winner policy to its rolled-up
//! figures, and record a decision when the policy reaches one.
//!
//! The decision itself is [`verdict_policy::evaluate`] (pure). This job reads the figures
//! ([`crate::counts::variant_counts`]: subjects and converted subjects per variant for the
//! primary metric, from the rollups unless a metric window or exposure event applies),
//! carries the peeking guard's state between runs (`Store::*_evaluation_state`), and
//! writes a winner with `Store::set_winner` conditioned on the version it read, so a decision
//! can never overwrite a change made meanwhile (a manual override, a pause). The store writes
//! the decision's webhook messages (outbox) with it; the job then announces it through the
//! cache (snapshot written, change published to every replica).
//!
//! Each evaluation also adds a point to the experiment's history
//! (`RollupStore::record_evaluation`: each arm's estimate, its 95% interval and its P(best),
//! [`history_point`]) unless its figures equal the latest point's: nothing new was counted
//! since, so the history grows with the data, not with the runs.

use std::time::Instant;

use serde::Serialize;
use time::OffsetDateTime;
use verdict_cache::DynCache;
use verdict_domain::{Experiment, PolicyMode, Status, Winner};
use verdict_store::{
    ArmPoint, DynStore, EvaluationPoint, ExperimentFilter, StoreError, WinnerChange,
};

use crate::counts;
use verdict_policy::{
    self as policy, ArmFigures, Evaluation, EvaluationInput, GuardState, GuardrailInput,
    PolicyError,
};

/// Who decisions are attributed to in the audit log.
pub const ACTOR: &str = "evaluator";

/// One experiment's outcome in a run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExperimentOutcome {
    pub experiment: String,
    pub experiment_id: String,
    pub environment: String,
    /// `winner`, `no_decision`, `skipped` (changed meanwhile) or `error`.
    pub outcome: &'static str,
    pub winner: Option<String>,
    /// Every reason a decision was not reached (blocker codes).
    pub blockers: Vec<&'static str>,
    pub srm_flagged: bool,
    pub srm_p_value: Option<f64>,
    /// Whether this evaluation added a point to the experiment's history (its figures
    /// changed since the latest point).
    pub history_recorded: bool,
    pub error: Option<String>,
}

/// What one evaluation run did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct EvaluateReport {
    pub evaluated: u64,
    pub decisions: u64,
    pub srm_flags: u64,
    /// Points added to experiments' histories.
    pub history_points: u64,
    pub outcomes: Vec<ExperimentOutcome>,
    pub duration_ms: f64,
}

/// Evaluate every running experiment (all environments and organizations) except those an
/// experimenter decided by hand (a manual winner stands). Decisions are announced through
/// `cache` (snapshot written, change published to every replica).
pub async fn evaluate(
    store: &DynStore,
    cache: &DynCache,
    now: OffsetDateTime,
) -> Result<EvaluateReport, StoreError> {
    let started = Instant::now();
    let mut report = EvaluateReport::default();
    let running = ExperimentFilter {
        status: Some(Status::Running),
        ..Default::default()
    };
    let decided_by_hand = |e: &Experiment| {
        e.winner
            .as_ref()
            .is_some_and(|w| w.source == PolicyMode::Manual)
    };
    for experiment in store.list_all_experiments(&running).await? {
        if decided_by_hand(&experiment) {
            continue;
        }
        let outcome = evaluate_one(store, cache, &experiment, now).await?;
        report.evaluated += 1;
        report.decisions += u64::from(outcome.outcome == "winner");
        report.srm_flags += u64::from(outcome.srm_flagged);
        report.history_points += u64::from(outcome.history_recorded);
        report.outcomes.push(outcome);
    }
    report.duration_ms = started.elapsed().as_secs_f64() * 1e3;
    Ok(report)
}

/// Evaluate one experiment, add its figures to its history when they changed and, on a
/// decision, record it.
pub async fn evaluate_one(
    store: &DynStore,
    cache: &DynCache,
    e: &Experiment,
    now: OffsetDateTime,
) -> Result<ExperimentOutcome, StoreError> {
    let mut outcome = ExperimentOutcome {
        experiment: e.key.clone(),
        experiment_id: e.id.clone(),
        environment: e.scope.environment.clone(),
        outcome: "no_decision",
        winner: None,
        blockers: Vec::new(),
        srm_flagged: false,
        srm_p_value: None,
        history_recorded: false,
        error: None,
    };
    let evaluation = match evaluation_of(store, e, now).await? {
        Ok(ev) => ev,
        Err(err) => {
            outcome.outcome = "error";
            outcome.error = Some(err.to_string());
            return Ok(outcome);
        }
    };
    outcome.srm_flagged = evaluation.srm.flagged;
    outcome.srm_p_value = Some(evaluation.srm.p_value);
    outcome.blockers = evaluation
        .verdict
        .blockers()
        .iter()
        .map(|b| b.code())
        .collect();
    let state = serde_json::to_value(&evaluation.guard_state)
        .map_err(|err| StoreError::internal("encoding evaluation state", err))?;
    store.put_evaluation_state(&e.id, &state).await?;
    outcome.history_recorded = record_history(store, e, &evaluation, now).await?;
    let Some(variant) = evaluation.verdict.winner().map(str::to_owned) else {
        return Ok(outcome);
    };
    let details = serde_json::to_value(&evaluation)
        .map_err(|err| StoreError::internal("encoding the evaluation", err))?;
    let change = WinnerChange {
        experiment_id: e.id.clone(),
        winner: Winner {
            variant: variant.clone(),
            decided_at: now,
            source: PolicyMode::Automatic,
            details,
        },
        complete: true,
        actor: ACTOR.to_owned(),
        expected_version: Some(e.version),
    };
    match store.set_winner(&change).await {
        Ok(after) => {
            tracing::info!(experiment = %e.key, winner = %variant, "winner decided");
            verdict_cache::announce(cache.as_ref(), e, &after).await;
            outcome.outcome = "winner";
            outcome.winner = Some(variant);
        }
        Err(StoreError::VersionConflict { .. }) => outcome.outcome = "skipped",
        Err(err) => return Err(err),
    }
    Ok(outcome)
}

/// Add `evaluation`'s point to `e`'s history unless the latest point holds the same figures
/// (one point read); whether it was added.
async fn record_history(
    store: &DynStore,
    e: &Experiment,
    evaluation: &Evaluation,
    now: OffsetDateTime,
) -> Result<bool, StoreError> {
    let aggregated_through = store.rollup_watermark().await?;
    let point = history_point(e, evaluation, now, aggregated_through)?;
    let latest = store.evaluation_history(&e.id, 1).await?;
    if latest.last().is_some_and(|p| p.same_figures(&point)) {
        return Ok(false);
    }
    store.record_evaluation(&point).await?;
    Ok(true)
}

/// The point of `e`'s history that `evaluation` (made at `now`, with the rollups folded up
/// to `aggregated_through`) makes: the primary metric and, per arm in variant order, its
/// subjects, estimate, 95% interval and P(best). A figure that is undefined, or not a finite
/// number, is `None`.
pub fn history_point(
    e: &Experiment,
    evaluation: &Evaluation,
    now: OffsetDateTime,
    aggregated_through: u64,
) -> Result<EvaluationPoint, StoreError> {
    let finite = |x: Option<f64>| x.filter(|v| v.is_finite());
    let estimate = serde_json::to_value(evaluation.estimate)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .ok_or_else(|| StoreError::corrupt("naming the estimate of an evaluation"))?;
    Ok(EvaluationPoint {
        experiment_id: e.id.clone(),
        at: now,
        aggregated_through,
        metric: evaluation.metric.clone(),
        estimate,
        arms: evaluation
            .arms
            .iter()
            .map(|a| ArmPoint {
                variant: a.variant.clone(),
                subjects: a.subjects,
                estimate: finite(a.estimate),
                interval: a
                    .credible_interval
                    .filter(|[lo, hi]| lo.is_finite() && hi.is_finite()),
                prob_best: finite(a.prob_best),
            })
            .collect(),
    })
}

/// The peeking-guard state the evaluation job keeps for `e` between runs (empty before the
/// first run, or when what is stored cannot be read).
pub async fn guard_state(store: &DynStore, e: &Experiment) -> Result<GuardState, StoreError> {
    Ok(match store.get_evaluation_state(&e.id).await? {
        Some(v) => serde_json::from_value(v).unwrap_or_else(|err| {
            tracing::warn!(experiment = %e.key, error = %verdict_domain::ErrorChain(&err), "unreadable evaluation state; starting afresh");
            GuardState::default()
        }),
        None => GuardState::default(),
    })
}

/// The policy's evaluation of `e` at `now` from its current figures (the primary metric and
/// every guardrail, capped as configured) and its stored peeking-guard state, without
/// recording anything: the evaluation job records it, results show it.
pub async fn evaluation_of(
    store: &DynStore,
    e: &Experiment,
    now: OffsetDateTime,
) -> Result<Result<Evaluation, PolicyError>, StoreError> {
    let primary = counts::in_variant_order(store, e, &e.primary_metric.event).await?;
    let arms: Vec<ArmFigures> = e
        .variants
        .iter()
        .zip(primary)
        .map(|(v, c)| ArmFigures::new(v.key.clone(), v.weight, c))
        .collect();
    let mut guardrail_figures = Vec::with_capacity(e.guardrail_metrics.len());
    for m in &e.guardrail_metrics {
        guardrail_figures.push(counts::in_variant_order(store, e, &m.event).await?);
    }
    let guardrails: Vec<GuardrailInput<'_>> = e
        .guardrail_metrics
        .iter()
        .zip(&guardrail_figures)
        .map(|(metric, arms)| GuardrailInput { metric, arms })
        .collect();
    let guard = guard_state(store, e).await?;
    let input = EvaluationInput {
        policy: &e.policy,
        metric: &e.primary_metric,
        objective: e.decision_objective(),
        arms: &arms,
        control: e.control_index(),
        elapsed: now - e.started_at.unwrap_or(now),
        guard: &guard,
        guardrails: &guardrails,
    };
    Ok(policy::evaluate(&input))
}

/// The `evaluate` job: [`evaluate`] on its schedule (or [`evaluate_one`] when a run names an
/// experiment), under the runner's lease.
#[derive(Debug, Clone)]
pub struct EvaluateJob {
    store: DynStore,
    cache: DynCache,
    schedule: String,
}

impl EvaluateJob {
    pub fn new(store: DynStore, cache: DynCache, schedule: String) -> Self {
        Self {
            store,
            cache,
            schedule,
        }
    }
}

#[async_trait::async_trait]
impl verdict_jobs::Job for EvaluateJob {
    type Report = EvaluateReport;

    fn name(&self) -> &'static str {
        "evaluate"
    }

    fn schedule(&self) -> verdict_jobs::Schedule {
        verdict_jobs::Schedule::Cron(self.schedule.clone())
    }

    fn takes_experiment(&self) -> bool {
        true
    }

    async fn run(
        &self,
        ctx: verdict_jobs::RunContext,
    ) -> Result<EvaluateReport, verdict_jobs::JobError> {
        let now = ctx.started_at;
        let Some(key) = ctx.experiment else {
            return Ok(evaluate(&self.store, &self.cache, now).await?);
        };
        let started = Instant::now();
        let experiment = self
            .store
            .get_experiment(&verdict_domain::Scope::default(), &key)
            .await?
            .ok_or_else(|| {
                verdict_jobs::JobError::Invalid(format!(
                    "no experiment '{key}' in the default scope"
                ))
            })?;
        let outcome = evaluate_one(&self.store, &self.cache, &experiment, now).await?;
        Ok(EvaluateReport {
            evaluated: 1,
            decisions: u64::from(outcome.outcome == "winner"),
            srm_flags: u64::from(outcome.srm_flagged),
            history_points: u64::from(outcome.history_recorded),
            outcomes: vec![outcome],
            duration_ms: started.elapsed().as_secs_f64() * 1e3,
        })
    }
}
