//! "Needs ≈ N more subjects per arm": for each blocker of an [`Evaluation`], how many subjects
//! per arm would lift it if the figures kept their current proportions, where the rule allows
//! an estimate ([`Evaluation::subjects_needed`]).
//!
//! - **`min_assignments`**: the shortfall of the smallest listed arm.
//! - **`min_conversions`**: for each listed arm, `min_conversions / its conversion rate`
//!   subjects; the largest. No estimate while an arm has no converted subject.
//! - **`peeking_guard`**: the subjects per arm at which the *current* difference would make
//!   `Λ` reach `1/α`, from the normal-mixture formula with the variance shrinking as `1/n`
//!   (every arm growing in proportion; figures of the larger of the two arms compared):
//!   `ln Λ(V) = −½ ln(1 + τ²/V) + θ̂² τ² / (2 V (V + τ²))`. As a function of `1/V` it first
//!   falls and then grows without bound, so the first `n` where it reaches `ln(1/α)` is found
//!   by doubling and bisection. No estimate while τ is not set or there is no difference.
//! - **`guardrail`** (`non_inferiority_not_shown`): the subjects per arm at which the
//!   always-valid interval around the current difference would end above `−margin` (its
//!   half-width shrinks monotonically with `n`). No estimate when the difference itself is
//!   already beyond the margin, or the interval is undefined.
//!
//! Every other blocker gets a reason instead of a number (time, a broken split, an effect
//! that may not exist, a person's decision). These are projections, not promises: the
//! difference at the next look will not be today's.

use serde::Serialize;
use verdict_stats::msprt;

use crate::guardrail::GuardrailCondition;
use crate::rules::{Blocker, Evaluation};

/// How many subjects one blocker needs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SubjectsNeeded {
    /// The blocker's code (`Blocker::code`).
    pub reason: &'static str,
    /// The guardrail metric, for a `guardrail` blocker.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metric: Option<String>,
    #[serde(flatten)]
    pub estimate: NeedEstimate,
}

/// An estimate of subjects per arm, or why there is none. Serialized as
/// `{"estimate": "per_arm", "subjects_per_arm": …, "more_per_arm": …}` or
/// `{"estimate": "none", "why": "…"}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "estimate", rename_all = "snake_case")]
pub enum NeedEstimate {
    /// About `subjects_per_arm` subjects in each arm, `more_per_arm` more than now.
    PerArm {
        subjects_per_arm: u64,
        more_per_arm: u64,
    },
    /// No estimate is possible.
    None { why: &'static str },
}

/// Largest scale of the sample size searched (beyond it: no estimate).
const MAX_SCALE: f64 = 1e9;

impl Evaluation {
    /// For each blocker, in order, how many more subjects per arm would lift it (see the
    /// module docs).
    pub fn subjects_needed(&self) -> Vec<SubjectsNeeded> {
        self.verdict
            .blockers()
            .iter()
            .map(|b| SubjectsNeeded {
                reason: b.code(),
                metric: match b {
                    Blocker::Guardrail { metric, .. } | Blocker::TotalsNotFinite { metric, .. } => {
                        Some(metric.clone())
                    }
                    _ => None,
                },
                estimate: self.need_for(b),
            })
            .collect()
    }

    fn subjects_of(&self, variant: &str) -> u64 {
        self.arms
            .iter()
            .find(|a| a.variant == variant)
            .map_or(0, |a| a.subjects)
    }

    fn need_for(&self, blocker: &Blocker) -> NeedEstimate {
        let none = |why| NeedEstimate::None { why };
        match blocker {
            Blocker::MinAssignments { variants, required } => {
                let smallest = variants
                    .iter()
                    .map(|v| self.subjects_of(v))
                    .min()
                    .unwrap_or(0);
                NeedEstimate::PerArm {
                    subjects_per_arm: *required,
                    more_per_arm: required.saturating_sub(smallest),
                }
            }
            Blocker::MinConversions { variants, required } => {
                let mut worst: Option<(u64, u64)> = None;
                for v in variants {
                    let Some(arm) = self.arms.iter().find(|a| &a.variant == v) else {
                        continue;
                    };
                    if arm.conversions == 0 {
                        return none("an arm has no converted subject yet");
                    }
                    let rate = arm.conversions as f64 / arm.subjects as f64;
                    let target = (*required as f64 / rate).ceil() as u64;
                    let more = target.saturating_sub(arm.subjects);
                    if worst.is_none_or(|(_, m)| more > m) {
                        worst = Some((target, more));
                    }
                }
                match worst {
                    Some((subjects_per_arm, more_per_arm)) => NeedEstimate::PerArm {
                        subjects_per_arm,
                        more_per_arm,
                    },
                    None => none("no listed arm has figures"),
                }
            }
            Blocker::PeekingGuard { .. } => {
                let g = &self.peeking_guard;
                let (Some(theta), Some(variance), Some(tau_squared)) =
                    (g.theta_hat, g.variance, g.tau_squared)
                else {
                    return none(
                        "the mSPRT is undefined at this look (τ not set yet, or no variance)",
                    );
                };
                if theta == 0.0 {
                    return none("no observed difference between the candidate and the runner-up");
                }
                let base = self
                    .subjects_of(&self.candidate)
                    .max(self.subjects_of(&self.runner_up));
                let reaches = |s: f64| {
                    msprt::mixture_likelihood_ratio_normal(theta, variance / s, tau_squared)
                        .is_ok_and(|m| msprt::rejects_log(m.log_lambda, g.alpha))
                };
                per_arm(
                    base,
                    smallest_scale(reaches),
                    "the difference is too small to reach the boundary",
                )
            }
            Blocker::Guardrail {
                condition: GuardrailCondition::NonInferiorityNotShown,
                metric,
                variant,
                figures,
            } => {
                let Some(report) = self.guardrails.iter().find(|r| &r.metric == metric) else {
                    return none("no report of this guardrail");
                };
                let (Some(d), Some(variance), Some(margin), Some(tau_squared)) = (
                    figures.difference,
                    figures.variance,
                    figures.margin,
                    report.tau_squared,
                ) else {
                    return none(
                        "the always-valid interval is undefined at this look (τ not set yet, or no variance)",
                    );
                };
                if variance <= 0.0 || d <= -margin {
                    return none("the observed difference is already beyond the margin");
                }
                let alpha = self.peeking_guard.alpha;
                let base = self
                    .subjects_of(variant)
                    .max(self.subjects_of(&self.control));
                let shown = |s: f64| {
                    msprt::always_valid_interval(d, variance / s, tau_squared, alpha)
                        .is_ok_and(|(lo, _)| lo >= -margin)
                };
                per_arm(
                    base,
                    smallest_scale(shown),
                    "the margin is too close to the difference",
                )
            }
            Blocker::Guardrail {
                condition: GuardrailCondition::CrediblyWorse,
                ..
            } => none(
                "the variant is credibly worse on this guardrail; more subjects would confirm it",
            ),
            Blocker::ManualMode => none("a person decides in manual mode"),
            Blocker::NoData { .. } => none("an arm has no subjects yet"),
            Blocker::TotalsNotFinite { .. } => {
                none("stored totals must be repaired; more subjects do not help")
            }
            Blocker::NoEstimate { .. } => {
                none("an estimate needs two subjects per arm, and events for a value per event")
            }
            Blocker::SrmMismatch { .. } => {
                none("a sample ratio mismatch is fixed at its cause, not by more subjects")
            }
            Blocker::PickAfterNotElapsed { .. } => none("a matter of time, not of subjects"),
            Blocker::NoLead { .. }
            | Blocker::MinDelta { .. }
            | Blocker::ProbabilityThreshold { .. }
            | Blocker::ExpectedLoss { .. } => none("depends on the true effect, which may be nil"),
        }
    }
}

fn per_arm(base: u64, scale: Option<f64>, why: &'static str) -> NeedEstimate {
    match scale {
        Some(s) if base > 0 => {
            let target = (s * base as f64).ceil() as u64;
            NeedEstimate::PerArm {
                subjects_per_arm: target,
                more_per_arm: target.saturating_sub(base),
            }
        }
        _ => NeedEstimate::None { why },
    }
}

/// The smallest scale `s ≥ 1` (to 0.1%) at which `holds(s)`, for a predicate false below some
/// point and true from there on; `None` beyond [`MAX_SCALE`].
fn smallest_scale(holds: impl Fn(f64) -> bool) -> Option<f64> {
    if holds(1.0) {
        return Some(1.0);
    }
    let mut lo = 1.0;
    let mut hi = 2.0;
    while !holds(hi) {
        lo = hi;
        hi *= 2.0;
        if hi > MAX_SCALE {
            return None;
        }
    }
    while hi / lo > 1.001 {
        let mid = 0.5 * (lo + hi);
        if holds(mid) { hi = mid } else { lo = mid }
    }
    Some(hi)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_smallest_scale_is_found_to_a_tenth_of_a_percent() {
        let s = smallest_scale(|s| s >= 37.25).unwrap();
        assert!((37.25..37.25 * 1.001).contains(&s), "{s}");
        assert_eq!(smallest_scale(|_| true), Some(1.0));
        assert_eq!(smallest_scale(|_| false), None);
    }
}
