//! What the always-valid tests remember between evaluations: [`GuardState`].
//!
//! An evaluation is one look at the data. The peeking guard compares the *running maximum* of
//! the mixture likelihood ratio Λ over all looks with `1/α`, and a guardrail's always-valid
//! confidence interval is the *running intersection* of the looks' intervals; both need
//! memory, which the evaluate job persists per experiment as this state (JSON) and passes back
//! on the next run.
//!
//! # Primary metric: per ordered pair running maxima
//!
//! For every *ordered* pair of variants, the running maximum of `ln Λ` over the looks at which
//! the first variant had the higher observed estimate (see `rules`' module docs for why it is
//! split by direction). The maxima belong to one statistic: one primary metric (event, kind,
//! cap) and one τ². A change of either restarts them (a running maximum of a different
//! statistic is meaningless); τ taken from the control's estimate ([`GuardState::baseline_tau`])
//! is kept across looks and only dropped with a change of metric.
//!
//! # Guardrails: running intersections
//!
//! Per guardrail metric ([`GuardrailState`]): its τ², τ taken from its control's estimate
//! when it configures none, and per non-control variant the intersection of the always-valid
//! intervals of (variant − control) over the looks so far, in the metric's units.
//!
//! # Compatibility
//!
//! Every field has a serde default: `{}` is a fresh state, and a state without `metric` (as
//! written when only rates decided) is read as belonging to a binomial primary metric, so its
//! maxima carry on while the primary metric is binomial and restart otherwise.

use std::cmp::Ordering;
use std::collections::HashSet;

use serde::{Deserialize, Serialize};
use verdict_domain::{Cap, Metric, MetricKind, WinnerPolicy};
use verdict_stats::msprt;

use crate::estimate::{self, ArmEstimate, TauSource};

/// Running maximum of `ln Λ` for one ordered pair of variants.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PairMax {
    /// The variant with the higher observed estimate at the looks this maximum covers.
    pub higher: String,
    /// The other variant.
    pub lower: String,
    /// `max ln Λ` over those looks (always finite).
    pub max_log_lambda: f64,
}

/// Which statistic a piece of state belongs to: a change of any part restarts it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricKey {
    pub event: String,
    pub kind: MetricKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cap: Option<Cap>,
}

impl MetricKey {
    pub fn of(metric: &Metric) -> Self {
        Self {
            event: metric.event.clone(),
            kind: metric.kind,
            cap: metric.cap,
        }
    }
}

/// One guardrail's running intersection for one variant against the control.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GuardrailInterval {
    pub variant: String,
    /// The control the differences were taken against.
    pub control: String,
    /// Intersection of the always-valid intervals of (variant − control), in the metric's
    /// units, not oriented by the objective. `lower > upper` (an empty intersection) can
    /// happen, with probability at most α when the model holds.
    pub lower: f64,
    pub upper: f64,
    /// Looks intersected.
    pub looks: u64,
}

/// What one guardrail metric's always-valid intervals remember.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GuardrailState {
    pub metric: MetricKey,
    /// τ² the intervals use; a change restarts them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tau_squared: Option<f64>,
    /// τ taken from the control's estimate (metrics other than binomial without `tau`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline_tau: Option<f64>,
    #[serde(default)]
    pub arms: Vec<GuardrailInterval>,
}

impl GuardrailState {
    /// The running intersection for `variant` against `control`, as `(lower, upper)`.
    pub fn interval(&self, variant: &str, control: &str) -> Option<(f64, f64)> {
        self.arms
            .iter()
            .find(|a| a.variant == variant && a.control == control)
            .map(|a| (a.lower, a.upper))
    }
}

/// What the always-valid tests remember between evaluations (see the module docs). Persist
/// [`crate::Evaluation::guard_state`] with the experiment and pass it back next time.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GuardState {
    /// τ² the maxima were computed with; `None` before the first look with a τ.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tau_squared: Option<f64>,
    /// Evaluations folded into the maxima (since they last restarted).
    #[serde(default)]
    pub looks: u64,
    /// Per ordered pair running maxima, sorted by (`higher`, `lower`).
    #[serde(default)]
    pub pairs: Vec<PairMax>,
    /// The primary metric the maxima belong to; absent = a binomial metric.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<MetricKey>,
    /// τ taken from the control's estimate for a primary metric other than binomial without
    /// `tau`: set once, then kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline_tau: Option<f64>,
    /// One entry per guardrail metric, in no particular order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub guardrails: Vec<GuardrailState>,
}

/// The τ² a look uses and where it comes from (`None` while [`TauSource::Pending`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Tau {
    pub tau_squared: Option<f64>,
    pub source: TauSource,
}

/// τ² for `metric` at this look: configured, else the kept baseline, else a baseline taken
/// now if this look is sufficient (returned so the caller keeps it).
pub(crate) fn tau_for(
    metric: &Metric,
    policy: &WinnerPolicy,
    kept_baseline: Option<f64>,
    subjects: &[u64],
    control: Option<&ArmEstimate>,
) -> (Tau, Option<f64>) {
    if let Some((t, source)) = estimate::configured_tau_squared(metric, policy) {
        return (
            Tau {
                tau_squared: Some(t),
                source,
            },
            kept_baseline,
        );
    }
    let baseline = kept_baseline.or_else(|| {
        estimate::baseline_tau(subjects.iter().copied(), policy.min_assignments, control)
    });
    let tau = match baseline {
        Some(b) => Tau {
            tau_squared: Some(b * b),
            source: TauSource::ControlBaseline,
        },
        None => Tau {
            tau_squared: None,
            source: TauSource::Pending,
        },
    };
    (tau, baseline)
}

/// ln Λ of the mSPRT for `b − a`, or `None` where it is undefined (an estimate or its
/// variance undefined, or a variance of 0).
pub(crate) fn pair_msprt(
    a: Option<&ArmEstimate>,
    b: Option<&ArmEstimate>,
    tau_squared: f64,
) -> Option<msprt::Msprt> {
    let d = estimate::difference(a?, b?)?;
    msprt::mixture_likelihood_ratio_normal(d.theta_hat, d.variance, tau_squared).ok()
}

impl GuardState {
    /// Running maximum of `ln Λ` over the looks at which `higher` had the higher estimate.
    pub fn max_log_lambda(&self, higher: &str, lower: &str) -> Option<f64> {
        self.pairs
            .iter()
            .find(|p| p.higher == higher && p.lower == lower)
            .map(|p| p.max_log_lambda)
    }

    /// The state kept for guardrail metric `metric`.
    pub fn guardrail(&self, metric: &MetricKey) -> Option<&GuardrailState> {
        self.guardrails.iter().find(|g| g.metric == *metric)
    }

    fn record(&mut self, higher: &str, lower: &str, log_lambda: f64) {
        if !log_lambda.is_finite() {
            return;
        }
        match self
            .pairs
            .iter_mut()
            .find(|p| p.higher == higher && p.lower == lower)
        {
            Some(p) => p.max_log_lambda = p.max_log_lambda.max(log_lambda),
            None => self.pairs.push(PairMax {
                higher: higher.to_owned(),
                lower: lower.to_owned(),
                max_log_lambda: log_lambda,
            }),
        }
    }

    /// Whether the primary maxima of this state belong to `key`.
    fn belongs_to(&self, key: &MetricKey) -> bool {
        match &self.metric {
            Some(k) => k == key,
            None => key.kind == MetricKind::Binomial,
        }
    }

    /// This state after one more look at the primary metric: `names` and `estimates` per
    /// arm, `subjects` per arm. Returns the new state and the τ this look used.
    pub(crate) fn advanced_primary(
        &self,
        metric: &Metric,
        policy: &WinnerPolicy,
        names: &[&str],
        subjects: &[u64],
        estimates: &[Option<ArmEstimate>],
        control: usize,
    ) -> (GuardState, Tau) {
        let key = MetricKey::of(metric);
        let mut next = if self.belongs_to(&key) {
            self.clone()
        } else {
            // Another metric is another statistic: only the guardrails carry over.
            GuardState {
                guardrails: self.guardrails.clone(),
                ..GuardState::default()
            }
        };
        next.metric = Some(key);
        let (tau, baseline) = tau_for(
            metric,
            policy,
            next.baseline_tau,
            subjects,
            estimates[control].as_ref(),
        );
        next.baseline_tau = baseline;
        if let Some(tau_squared) = tau.tau_squared {
            if next.tau_squared != Some(tau_squared) {
                // A different τ² is a different statistic; its old maxima do not apply.
                next.pairs.clear();
                next.looks = 0;
            }
            next.tau_squared = Some(tau_squared);
            let known: HashSet<&str> = names.iter().copied().collect();
            next.pairs
                .retain(|p| known.contains(p.higher.as_str()) && known.contains(p.lower.as_str()));
            for i in 0..names.len() {
                for j in i + 1..names.len() {
                    let Some(m) =
                        pair_msprt(estimates[i].as_ref(), estimates[j].as_ref(), tau_squared)
                    else {
                        continue;
                    };
                    match m.theta_hat.partial_cmp(&0.0) {
                        Some(Ordering::Greater) => next.record(names[j], names[i], m.log_lambda),
                        Some(Ordering::Less) => next.record(names[i], names[j], m.log_lambda),
                        // No observed difference: Λ < 1, no evidence for either direction.
                        _ => {}
                    }
                }
            }
            next.pairs.sort_by(|x, y| {
                (x.higher.as_str(), x.lower.as_str()).cmp(&(y.higher.as_str(), y.lower.as_str()))
            });
        }
        next.looks += 1;
        (next, tau)
    }
}
