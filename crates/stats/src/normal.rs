//! Bayesian comparison of metric means: chance to beat control, P(best) and expected loss
//! for normal posteriors.
//!
//! # Model
//!
//! Count and sum metrics are compared by their mean per subject, mean-kind (ratio) metrics by
//! `Σ value / Σ events` per arm. Each arm is given as `(mean, std_error)`: the estimate and its
//! standard error ([`crate::SummaryStats::std_error`], [`crate::RatioStats::std_error`]). With
//! a flat (improper) prior on the arm's true mean and the sample variance plugged in, the
//! posterior of that mean is `N(mean, std_error²)`, and arms are independent. This is the
//! uninformative-prior setting GrowthBook and Eppo use for non-binomial metrics; at the
//! sample sizes where a decision is possible, the central limit theorem makes the normal
//! approximation of the mean accurate even for skewed per-subject values.
//!
//! A standard error of 0 (every subject had the same value, e.g. no events at all) is taken
//! literally: the posterior is a point mass at the mean. Point masses that tie for the lead
//! share P(best) equally. Guarding against deciding on such thin evidence is the policy's job
//! (minimum sample sizes), not this module's.
//!
//! # Two arms: closed forms
//!
//! With `d = μ_b − μ_a` and `s = sqrt(σ_a² + σ_b²)`, `P(X_b > X_a) = Φ(d/s)`, computed as
//! `erfc(−d/(s√2))/2` so a tiny probability keeps its relative precision, and its complement
//! is computed the same way (never as `1 − p`). The expected loss of choosing `a` is
//! `E[(X_b − X_a)⁺] = s ψ(d/s)` with `ψ(t) = t Φ(t) + φ(t)`; for `t < −3` that sum cancels,
//! and it is evaluated through Mills' ratio's continued fraction instead (`special.rs`).
//!
//! # Three to eight arms: quadrature
//!
//! `P(best_i) = ∫ φ_i(x) Π_{j≠i} Φ_j(x) dx` by fixed composite Gauss–Legendre quadrature in
//! each arm's own standard units, and the expected losses from the same pass (see
//! `normal_quadrature.rs`). Deterministic, no Monte Carlo; error below 1e-13 absolute for the
//! probabilities and 1e-13·σ for the losses across the tested range (very unequal standard
//! errors, means hundreds of standard errors apart, point masses).
//!
//! # Large means that differ little
//!
//! P(best) depends only on the differences of the means. Two means near 1e6 that differ by
//! 1e-3 have already lost ~7 digits of their difference when rounded to doubles; where that
//! matters, pass means relative to the control (`0` for the control and
//! [`crate::mean_difference`] for the others), which is exact to the last digit.

use std::cmp::Ordering;

use crate::bayes::{BayesSummary, MAX_ARMS, Objective, PairwiseLoss};
use crate::special::{normal_cdf, normal_partial_expectation, normal_pdf};
use crate::{StatsError, normal_quadrature};

/// Largest magnitude accepted for a mean or a standard error: far beyond any metric, and
/// small enough that squares and differences of inputs stay finite.
const MAX_MAGNITUDE: f64 = 1e150;

/// `P(X_arm > X_control)` for arms given as `(mean, std_error)`: the chance to beat control.
///
/// Exact (closed form); `0.5` when both are the same point mass.
pub fn prob_beats_control_normal(control: (f64, f64), arm: (f64, f64)) -> Result<f64, StatsError> {
    check_arm(control)?;
    check_arm(arm)?;
    Ok(two_arm(control, arm).b_wins)
}

/// Expected loss of choosing either arm of a pair given as `(mean, std_error)`; exact.
///
/// `loss_choose_a = E[(X_b − X_a)⁺]`, `loss_choose_b = E[(X_a − X_b)⁺]`, in the metric's units.
pub fn pairwise_expected_loss_normal(
    a: (f64, f64),
    b: (f64, f64),
) -> Result<PairwiseLoss, StatsError> {
    check_arm(a)?;
    check_arm(b)?;
    let pair = two_arm(a, b);
    Ok(PairwiseLoss {
        loss_choose_a: pair.loss_a,
        loss_choose_b: pair.loss_b,
    })
}

/// `P(arm i has the highest mean)` for 2 to [`MAX_ARMS`] arms given as `(mean, std_error)`.
pub fn prob_best_normal(arms: &[(f64, f64)]) -> Result<Vec<f64>, StatsError> {
    Ok(summarize_normal(arms, Objective::Maximize)?.prob_best)
}

/// `E[max_j X_j − X_i]` for every arm (the mean given up by shipping arm `i`), in the metric's
/// units.
pub fn expected_loss_normal(arms: &[(f64, f64)]) -> Result<Vec<f64>, StatsError> {
    Ok(summarize_normal(arms, Objective::Maximize)?.expected_loss)
}

/// P(best) and expected loss together under an [`Objective`], sharing the work.
///
/// [`Objective::Minimize`] negates the means: P(best) is then the chance of having the lowest
/// mean and the loss is `E[X_i − min_j X_j]`.
pub fn summarize_normal(
    arms: &[(f64, f64)],
    objective: Objective,
) -> Result<BayesSummary, StatsError> {
    if !(2..=MAX_ARMS).contains(&arms.len()) {
        return Err(StatsError::ArmCount {
            min: 2,
            max: MAX_ARMS,
            got: arms.len(),
        });
    }
    for &arm in arms {
        check_arm(arm)?;
    }
    let oriented: Vec<(f64, f64)> = arms
        .iter()
        .map(|&(mean, se)| match objective {
            Objective::Maximize => (mean, se),
            Objective::Minimize => (-mean, se),
        })
        .collect();
    Ok(if let [a, b] = oriented[..] {
        let pair = two_arm(a, b);
        BayesSummary {
            prob_best: vec![pair.a_wins, pair.b_wins],
            expected_loss: vec![pair.loss_a, pair.loss_b],
        }
    } else {
        let (prob_best, expected_loss) = normal_quadrature::best_and_loss(&oriented);
        BayesSummary {
            prob_best,
            expected_loss,
        }
    })
}

fn check_arm((mean, std_error): (f64, f64)) -> Result<(), StatsError> {
    if !mean.is_finite() || mean.abs() > MAX_MAGNITUDE {
        return Err(StatsError::InvalidParameter {
            name: "mean",
            value: mean,
            reason: "must be finite with magnitude <= 1e150",
        });
    }
    if !(0.0..=MAX_MAGNITUDE).contains(&std_error) {
        return Err(StatsError::InvalidParameter {
            name: "std_error",
            value: std_error,
            reason: "must be in [0, 1e150]",
        });
    }
    Ok(())
}

/// Everything about a pair `(a, b)` of normal posteriors.
#[derive(Debug, Clone, Copy)]
struct TwoArm {
    /// `P(X_b > X_a)`.
    b_wins: f64,
    /// `P(X_a > X_b)`.
    a_wins: f64,
    /// `E[(X_b − X_a)⁺]`.
    loss_a: f64,
    /// `E[(X_a − X_b)⁺]`.
    loss_b: f64,
}

fn two_arm((mean_a, se_a): (f64, f64), (mean_b, se_b): (f64, f64)) -> TwoArm {
    let d = mean_b - mean_a;
    let s = se_a.hypot(se_b);
    if s == 0.0 {
        let (b_wins, a_wins) = match d.partial_cmp(&0.0) {
            Some(Ordering::Greater) => (1.0, 0.0),
            Some(Ordering::Less) => (0.0, 1.0),
            _ => (0.5, 0.5),
        };
        return TwoArm {
            b_wins,
            a_wins,
            loss_a: d.max(0.0),
            loss_b: (-d).max(0.0),
        };
    }
    let t = d / s;
    TwoArm {
        b_wins: normal_cdf(t),
        a_wins: normal_cdf(-t),
        loss_a: positive_part_mean(d, s),
        loss_b: positive_part_mean(-d, s),
    }
}

/// `E[(D)⁺]` for `D ~ N(d, s²)`, `s > 0`: `s ψ(d/s)`, with the positive side written as
/// `d Φ(d/s) + s φ(d/s)` so that neither term overflows when `d/s` does.
pub(crate) fn positive_part_mean(d: f64, s: f64) -> f64 {
    let t = d / s;
    if t >= 0.0 {
        d * normal_cdf(t) + s * normal_pdf(t)
    } else {
        s * normal_partial_expectation(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_equal_arms_split_evenly_and_lose_the_same() {
        let s = summarize_normal(&[(3.0, 0.5), (3.0, 0.5)], Objective::Maximize).unwrap();
        assert_eq!(s.prob_best, vec![0.5, 0.5]);
        // E[(X_b − X_a)⁺] with X_b − X_a ~ N(0, 0.5) is sqrt(0.5)·φ(0).
        let want = 0.5_f64.sqrt() / (2.0 * std::f64::consts::PI).sqrt();
        for l in s.expected_loss {
            assert!((l - want).abs() <= 1e-16, "{l} vs {want}");
        }
    }

    #[test]
    fn point_masses_compare_exactly() {
        let p = prob_best_normal(&[(1.0, 0.0), (2.0, 0.0)]).unwrap();
        assert_eq!(p, vec![0.0, 1.0]);
        let p = prob_best_normal(&[(1.0, 0.0), (1.0, 0.0), (0.5, 0.0)]).unwrap();
        assert_eq!(p, vec![0.5, 0.5, 0.0]);
        let loss = expected_loss_normal(&[(1.0, 0.0), (1.0, 0.0), (0.5, 0.0)]).unwrap();
        assert_eq!(loss, vec![0.0, 0.0, 0.5]);
        assert_eq!(
            prob_beats_control_normal((2.0, 0.0), (2.0, 0.0)).unwrap(),
            0.5
        );
    }

    #[test]
    fn a_point_mass_against_a_normal_is_a_normal_tail() {
        // P(N(0.5, 1) > 0) = Φ(0.5); E[(0 − X)⁺] = ψ(−0.5).
        let arms = [(0.0, 0.0), (0.5, 1.0)];
        let p = prob_best_normal(&arms).unwrap();
        assert!((p[1] - normal_cdf(0.5)).abs() < 1e-16);
        // The same pair with a hopeless third arm goes through the quadrature.
        let three =
            summarize_normal(&[arms[0], arms[1], (-40.0, 1.0)], Objective::Maximize).unwrap();
        let two = summarize_normal(&arms, Objective::Maximize).unwrap();
        for i in 0..2 {
            assert!((three.prob_best[i] - two.prob_best[i]).abs() < 1e-14);
            assert!((three.expected_loss[i] - two.expected_loss[i]).abs() < 1e-14);
        }
    }

    #[test]
    fn minimizing_negates_the_means() {
        let arms = [(10.0, 1.0), (9.0, 1.5), (11.0, 0.5)];
        let min = summarize_normal(&arms, Objective::Minimize).unwrap();
        let negated: Vec<(f64, f64)> = arms.iter().map(|&(m, s)| (-m, s)).collect();
        assert_eq!(
            min,
            summarize_normal(&negated, Objective::Maximize).unwrap()
        );
        let best = (0..3)
            .max_by(|&a, &b| min.prob_best[a].total_cmp(&min.prob_best[b]))
            .unwrap();
        assert_eq!(best, 1);
    }

    #[test]
    fn invalid_arms_are_rejected() {
        assert!(prob_best_normal(&[(0.0, 1.0)]).is_err());
        assert!(prob_best_normal(&[(0.0, 1.0); 9]).is_err());
        assert!(prob_best_normal(&[(0.0, 1.0), (f64::NAN, 1.0)]).is_err());
        assert!(prob_best_normal(&[(0.0, 1.0), (0.0, -1.0)]).is_err());
        assert!(prob_best_normal(&[(0.0, 1.0), (0.0, f64::INFINITY)]).is_err());
        assert!(prob_beats_control_normal((0.0, 1.0), (1e200, 1.0)).is_err());
    }
}
