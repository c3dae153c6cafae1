//! The evaluation history of an experiment: its primary metric's estimate per arm, with the
//! 95% interval and P(best), at each evaluation that found new figures
//! (`RollupStore::evaluation_history`, recorded by the evaluation job), for charts of how the
//! experiment's picture changed over time.

use serde::Serialize;
use time::OffsetDateTime;
use utoipa::ToSchema;
use verdict_domain::Experiment;
use verdict_policy::EstimateKind;
use verdict_store::EvaluationPoint;

use crate::App;
use crate::auth::{Caller, ScopeParams};
use crate::error::AppError;

/// The most points a history answers: the latest ones.
pub const HISTORY_POINTS: usize = 500;

/// The primary metric of an experiment as each evaluation saw it, oldest first.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct HistoryView {
    /// The experiment key.
    pub experiment: String,
    pub experiment_id: String,
    /// The primary metric's event.
    pub metric: String,
    /// What each arm's `estimate` is (and its interval's unit).
    pub estimate: EstimateKind,
    /// The latest 500 points at most, oldest first: one per evaluation whose figures differed
    /// from the evaluation before it (the evaluation job runs every 5 minutes by default), of
    /// the current primary metric.
    pub points: Vec<HistoryPoint>,
}

/// One evaluation's figures.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct HistoryPoint {
    /// When the evaluation ran.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// Ingestion sequence number of the last event folded into the rollups then.
    pub aggregated_through: u64,
    /// Every arm, in the experiment's variant order.
    pub arms: Vec<HistoryArm>,
}

/// One arm at one evaluation; a figure that was undefined then (no subjects yet) is `null`.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct HistoryArm {
    pub variant: String,
    /// Subjects in the analysis.
    pub subjects: u64,
    pub estimate: Option<f64>,
    /// The equal-tailed 95% credible interval of the estimate, `[low, high]`.
    pub interval: Option<[f64; 2]>,
    /// P(this arm is the best) under the metric's objective.
    pub prob_best: Option<f64>,
}

impl HistoryPoint {
    /// The arm with the highest P(best) at this evaluation (none while no arm has one).
    pub fn leader(&self) -> Option<&HistoryArm> {
        self.arms
            .iter()
            .filter(|a| a.prob_best.is_some())
            .max_by(|a, b| {
                a.prob_best
                    .unwrap_or(0.0)
                    .total_cmp(&b.prob_best.unwrap_or(0.0))
            })
    }
}

impl From<EvaluationPoint> for HistoryPoint {
    fn from(p: EvaluationPoint) -> Self {
        Self {
            at: p.at,
            aggregated_through: p.aggregated_through,
            arms: p
                .arms
                .into_iter()
                .map(|a| HistoryArm {
                    variant: a.variant,
                    subjects: a.subjects,
                    estimate: a.estimate,
                    interval: a.interval,
                    prob_best: a.prob_best,
                })
                .collect(),
        }
    }
}

/// Whether `p` is of `e`'s current primary metric (a history spans edits of it).
fn of_primary_metric(e: &Experiment, p: &EvaluationPoint) -> bool {
    let estimate = EstimateKind::of(e.primary_metric.kind);
    // The name the evaluation job stores (`EvaluationPoint::estimate`).
    let name = serde_json::to_value(estimate)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned));
    p.metric == e.primary_metric.event && name.as_ref() == Some(&p.estimate)
}

impl App {
    /// The evaluation history of the experiment `key` as the caller sees it: the latest
    /// [`HISTORY_POINTS`] points of its current primary metric, oldest first.
    pub async fn evaluation_history(
        &self,
        caller: &Caller,
        scope: ScopeParams,
        key: &str,
    ) -> Result<HistoryView, AppError> {
        let e = self.find(&caller.scope(&scope)?, key).await?;
        let estimate = EstimateKind::of(e.primary_metric.kind);
        let metric = e.primary_metric.event.clone();
        let points = self
            .0
            .store
            .evaluation_history(&e.id, HISTORY_POINTS)
            .await?
            .into_iter()
            .filter(|p| of_primary_metric(&e, p))
            .map(HistoryPoint::from)
            .collect();
        Ok(HistoryView {
            experiment: e.key,
            experiment_id: e.id,
            metric,
            estimate,
            points,
        })
    }

    /// The latest evaluation of `e`'s primary metric, if any: each experiments list row's
    /// leader and its P(best), read from what the evaluation job stored rather than computed
    /// per row. `e` is one the caller was given by a use-case that checked its scope.
    pub async fn latest_evaluation(
        &self,
        e: &Experiment,
    ) -> Result<Option<HistoryPoint>, AppError> {
        let latest = self.0.store.evaluation_history(&e.id, 1).await?;
        Ok(latest
            .into_iter()
            .find(|p| of_primary_metric(e, p))
            .map(HistoryPoint::from))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arm(variant: &str, prob_best: Option<f64>) -> HistoryArm {
        HistoryArm {
            variant: variant.into(),
            subjects: 10,
            estimate: None,
            interval: None,
            prob_best,
        }
    }

    #[test]
    fn the_leader_is_the_arm_most_likely_best() {
        let mut p = HistoryPoint {
            at: OffsetDateTime::UNIX_EPOCH,
            aggregated_through: 0,
            arms: vec![
                arm("a", Some(0.2)),
                arm("b", Some(0.7)),
                arm("c", Some(0.1)),
            ],
        };
        assert_eq!(p.leader().map(|a| a.variant.as_str()), Some("b"));
        p.arms = vec![arm("a", None), arm("b", None)];
        assert_eq!(p.leader(), None);
    }
}
