//! Guardrail metrics: a variant that is credibly worse than the control, or not yet shown to
//! be within the metric's margin of it, gets no decision.
//!
//! For each guardrail metric and each variant other than the control, oriented by the
//! guardrail's own objective (positive = better):
//!
//! - **`credibly_worse`** — P(worse than the control) reaches `policy.guardrail_probability`
//!   (exact Beta posteriors for `binomial`, normal posteriors `N(estimate, se²)` with a flat
//!   prior otherwise), *or* the always-valid test rejects "no difference" in the worse
//!   direction: the running intersection of the always-valid intervals lies entirely below 0.
//!   The probability catches a degradation at this look; the always-valid test catches one
//!   that was established at any earlier look, however the estimates moved since.
//! - **`non_inferiority_not_shown`** — the always-valid confidence interval of the difference
//!   still admits a degradation beyond the margin: its lower end is below `−margin` (a
//!   relative margin is a fraction of |the control's estimate| at this look). Also while the
//!   interval is undefined (an estimate or its variance undefined, a variance of 0, or τ not
//!   set yet for a metric that takes it from the control's estimate): nothing is shown yet.
//!   Because the interval is always valid, looking at every evaluation does not make a
//!   degradation beyond the margin slip through more often than α.
//!
//! When both hold, `credibly_worse` is reported. Otherwise the variant is `non_inferior` on
//! that guardrail. The control is never assessed against itself: a decision for the control
//! keeps the status quo and no guardrail blocks it.
//!
//! The intervals use the guardrail's τ (see [`crate::estimate`]): its `tau`; for `binomial`
//! otherwise the policy's `tau_squared` or the default; else a quarter of the control's
//! estimate taken at the first sufficient look and kept in the [`GuardState`]. A look enters
//! the running intersection once every arm has `min_assignments` subjects (and at least two):
//! the intersection keeps the narrowest interval it ever saw, so an interval from a handful of
//! subjects, whose variance estimate is unreliable, must not enter it.

use serde::{Deserialize, Serialize};
use verdict_domain::{Margin, Metric, MetricKind, Objective, VariantCounts, WinnerPolicy};
use verdict_stats::{self as stats, msprt};

use crate::estimate::{self, ArmEstimate, EstimateKind, TauSource};
use crate::guard::{GuardState, GuardrailInterval, GuardrailState, MetricKey, tau_for};

/// One guardrail metric and its figures, for [`crate::EvaluationInput::guardrails`].
#[derive(Debug, Clone, Copy)]
pub struct GuardrailInput<'a> {
    pub metric: &'a Metric,
    /// Per-arm figures of the metric's event, in the order of
    /// [`crate::EvaluationInput::arms`].
    pub arms: &'a [VariantCounts],
}

/// Why a guardrail blocks a variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum GuardrailCondition {
    CrediblyWorse,
    NonInferiorityNotShown,
}

/// A variant's standing on one guardrail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum GuardrailStatus {
    /// Shown to be no worse than the margin allows, and not credibly worse.
    NonInferior,
    CrediblyWorse,
    NonInferiorityNotShown,
}

impl GuardrailStatus {
    /// The blocking condition, if any.
    pub fn condition(self) -> Option<GuardrailCondition> {
        match self {
            Self::NonInferior => None,
            Self::CrediblyWorse => Some(GuardrailCondition::CrediblyWorse),
            Self::NonInferiorityNotShown => Some(GuardrailCondition::NonInferiorityNotShown),
        }
    }
}

/// The numbers behind a variant's guardrail status. Differences and intervals are of
/// (variant − control) *oriented by the guardrail's objective*: positive = the variant is
/// better.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GuardrailFigures {
    pub control_estimate: Option<f64>,
    pub estimate: Option<f64>,
    /// Oriented difference at this look.
    pub difference: Option<f64>,
    /// Variance of the difference at this look.
    pub variance: Option<f64>,
    /// Oriented always-valid confidence interval of the difference (level `1 − α`):
    /// the running intersection over the looks so far.
    pub interval: Option<[f64; 2]>,
    /// P(the variant is worse than the control) at this look.
    pub p_worse: Option<f64>,
    /// The tolerated degradation in the metric's units at this look.
    pub margin: Option<f64>,
}

/// One variant on one guardrail.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GuardrailArm {
    pub variant: String,
    pub status: GuardrailStatus,
    pub figures: GuardrailFigures,
}

/// One guardrail metric across the variants.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GuardrailReport {
    /// The metric's event.
    pub metric: String,
    pub metric_kind: MetricKind,
    pub estimate: EstimateKind,
    pub objective: Objective,
    /// The margin in force (configured, or the default).
    pub margin: Margin,
    pub tau_squared: Option<f64>,
    pub tau_source: TauSource,
    /// Every variant but the control, in variant order.
    pub arms: Vec<GuardrailArm>,
}

impl GuardrailReport {
    /// The standing of `variant` (`None` for the control or an unknown variant).
    pub fn arm(&self, variant: &str) -> Option<&GuardrailArm> {
        self.arms.iter().find(|a| a.variant == variant)
    }
}

/// Assess one guardrail at this look and fold the look into its state.
///
/// `names` are the arms' variant keys; `prev` the state kept for this guardrail's metric.
/// Returns the report and the guardrail's next state.
pub(crate) fn assess(
    input: &GuardrailInput<'_>,
    policy: &WinnerPolicy,
    names: &[&str],
    control: usize,
    prev: Option<&GuardrailState>,
) -> (GuardrailReport, GuardrailState) {
    let metric = input.metric;
    let estimates: Vec<Option<ArmEstimate>> = input
        .arms
        .iter()
        .map(|c| estimate::estimate(metric.kind, c))
        .collect();
    let subjects: Vec<u64> = input.arms.iter().map(|c| c.subjects).collect();
    let key = MetricKey::of(metric);
    let prev = prev.filter(|p| p.metric == key);
    let (tau, baseline) = tau_for(
        metric,
        policy,
        prev.and_then(|p| p.baseline_tau),
        &subjects,
        estimates[control].as_ref(),
    );
    let mut state = GuardrailState {
        metric: key,
        tau_squared: tau.tau_squared.or(prev.and_then(|p| p.tau_squared)),
        baseline_tau: baseline,
        arms: Vec::new(),
    };
    let kept = prev.filter(|p| p.tau_squared == state.tau_squared);
    let control_name = names[control];
    let control_estimate = estimates[control].as_ref();
    // The intersection keeps the narrowest interval it ever saw: an interval from a handful
    // of subjects, whose variance estimate is unreliable, must not enter it.
    let sufficient = subjects.iter().all(|&n| n >= policy.min_assignments.max(2));
    let margin = metric.guardrail_margin();
    let mut arms = Vec::with_capacity(names.len().saturating_sub(1));
    for (i, &name) in names.iter().enumerate() {
        if i == control {
            continue;
        }
        let est = estimates[i].as_ref();
        let diff = control_estimate
            .zip(est)
            .and_then(|(c, e)| estimate::difference(c, e));
        let previous = kept.and_then(|p| {
            p.arms
                .iter()
                .find(|a| a.variant == name && a.control == control_name)
        });
        let this_look = match (diff, tau.tau_squared) {
            (Some(d), Some(t)) if sufficient => {
                msprt::always_valid_interval(d.theta_hat, d.variance, t, policy.alpha).ok()
            }
            _ => None,
        };
        let entry = match (previous, this_look) {
            (Some(p), Some((lo, hi))) => Some(GuardrailInterval {
                lower: p.lower.max(lo),
                upper: p.upper.min(hi),
                looks: p.looks + 1,
                ..p.clone()
            }),
            (None, Some((lo, hi))) => Some(GuardrailInterval {
                variant: name.to_owned(),
                control: control_name.to_owned(),
                lower: lo,
                upper: hi,
                looks: 1,
            }),
            (p, None) => p.cloned(),
        };
        let interval = entry.as_ref().map(|e| match metric.objective {
            Objective::Maximize => [e.lower, e.upper],
            Objective::Minimize => [-e.upper, -e.lower],
        });
        if let Some(e) = entry {
            state.arms.push(e);
        }
        let p_worse = p_worse(
            metric,
            (&input.arms[control], control_estimate),
            (&input.arms[i], est),
        );
        let margin_abs = control_estimate.map(|c| margin.absolute(c.value));
        let credibly_worse = p_worse.is_some_and(|p| p >= policy.guardrail_probability)
            || interval.is_some_and(|[_, hi]| hi < 0.0);
        let non_inferior = match (interval, margin_abs) {
            (Some([lo, _]), Some(m)) => lo >= -m,
            _ => false,
        };
        let status = if credibly_worse {
            GuardrailStatus::CrediblyWorse
        } else if non_inferior {
            GuardrailStatus::NonInferior
        } else {
            GuardrailStatus::NonInferiorityNotShown
        };
        arms.push(GuardrailArm {
            variant: name.to_owned(),
            status,
            figures: GuardrailFigures {
                control_estimate: control_estimate.map(|c| c.value),
                estimate: est.map(|e| e.value),
                difference: control_estimate.zip(est).map(|(c, e)| {
                    estimate::oriented(estimate::point_difference(c, e), metric.objective)
                }),
                variance: diff.map(|d| d.variance),
                interval,
                p_worse,
                margin: margin_abs,
            },
        });
    }
    let report = GuardrailReport {
        metric: metric.event.clone(),
        metric_kind: metric.kind,
        estimate: EstimateKind::of(metric.kind),
        objective: metric.objective,
        margin,
        tau_squared: tau.tau_squared,
        tau_source: tau.source,
        arms,
    };
    (report, state)
}

/// P(the variant is worse than the control) under the guardrail's objective: exact Beta
/// posteriors for rates, normal posteriors otherwise; `None` while an estimate (or, for the
/// normal posteriors, its variance) is undefined.
fn p_worse(
    metric: &Metric,
    control: (&VariantCounts, Option<&ArmEstimate>),
    arm: (&VariantCounts, Option<&ArmEstimate>),
) -> Option<f64> {
    // Worse means P(X_high > X_low) with:
    let ((high_counts, high), (low_counts, low)) = match metric.objective {
        Objective::Maximize => (control, arm),
        Objective::Minimize => (arm, control),
    };
    let (high, low) = (high?, low?);
    match metric.kind {
        // P(p_b > p_a) with a = low, b = high.
        MetricKind::Binomial => stats::prob_b_beats_a(
            (low_counts.converted_subjects, low_counts.subjects),
            (high_counts.converted_subjects, high_counts.subjects),
        )
        .ok(),
        // P(X_arm > X_control) with control = low, arm = high.
        _ => stats::prob_beats_control_normal(low.posterior()?, high.posterior()?).ok(),
    }
}

/// Assess every guardrail; returns the reports and `state` with the guardrails' part
/// replaced (states of guardrails no longer configured are dropped).
pub(crate) fn assess_all(
    guardrails: &[GuardrailInput<'_>],
    policy: &WinnerPolicy,
    names: &[&str],
    control: usize,
    state: &mut GuardState,
) -> Vec<GuardrailReport> {
    let previous = std::mem::take(&mut state.guardrails);
    let mut reports = Vec::with_capacity(guardrails.len());
    for g in guardrails {
        let key = MetricKey::of(g.metric);
        let prev = previous.iter().find(|s| s.metric == key);
        let (report, next) = assess(g, policy, names, control, prev);
        reports.push(report);
        // A metric listed twice is assessed twice from the same state, and kept once.
        if !state.guardrails.iter().any(|s| s.metric == key) {
            state.guardrails.push(next);
        }
    }
    reports
}
