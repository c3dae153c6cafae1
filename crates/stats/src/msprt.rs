//! Mixture sequential probability ratio test (mSPRT; Johari, Pekelis & Walsh 2017,
//! "Always valid inference") for a difference between two arms, with its always-valid
//! confidence interval.
//!
//! Given an estimate `θ̂` of the difference (arm b minus control a), its variance estimate `V`
//! and a normal mixing distribution `θ ~ N(θ0, τ²)` over the alternative,
//!
//! ```text
//! Λ(θ0) = sqrt(V / (V + τ²)) · exp(τ² (θ̂ − θ0)² / (2 V (V + τ²)))
//! ```
//!
//! The running maximum of `Λ = Λ(0)` over all looks may be compared with `1/α` at any time
//! without inflating the type-I error: `H0: θ = 0` is rejected the first time `max Λ ≥ 1/α`.
//! The always-valid p-value is `min(1, 1 / max Λ)`.
//!
//! Two estimates feed the same statistic:
//!
//! * rates: `θ̂ = p̂_b − p̂_a`, `V = p̂_a(1 − p̂_a)/n_a + p̂_b(1 − p̂_b)/n_b`
//!   ([`mixture_likelihood_ratio`], from conversion counts);
//! * means (count, sum and ratio metrics): `θ̂ = x̄_b − x̄_a`, `V = se_a² + se_b²`
//!   ([`mixture_likelihood_ratio_normal`], from the caller's estimates; see
//!   [`crate::mean_difference`], [`crate::SummaryStats::std_error`] and
//!   [`crate::RatioStats::std_error`]). `τ²` is then in the metric's units squared.
//!
//! Λ is computed in log space: the exponent grows linearly with the sample size and overflows
//! an `f64` once it passes ~709, which happens routinely for a clear effect at n ≈ 1e6.
//!
//! # Always-valid confidence interval
//!
//! Inverting the test gives, at each look, the set of differences it does not reject,
//! `{θ0 : Λ(θ0) < 1/α}`, which is the interval
//!
//! ```text
//! θ̂ ± sqrt( V (V + τ²) / τ² · (2 ln(1/α) + ln((V + τ²) / V)) )
//! ```
//!
//! ([`always_valid_interval`]). The *always-valid* confidence interval after `n` looks is the
//! running intersection of these intervals over looks `1..=n` (Johari et al. 2017): it covers
//! the true difference at every look simultaneously with probability ≥ `1 − α`, so it may be
//! shown and acted on at any time. Keeping that running intersection is the caller's job (it
//! is state across evaluations); each call here returns one look's interval.

use serde::{Deserialize, Serialize};

use crate::StatsError;

/// Significance level used when the caller has no preference.
pub const DEFAULT_ALPHA: f64 = 0.05;

/// Default mixing variance τ² on the absolute difference of *rates* (mean metrics have no
/// unit-free default: pass τ² in the metric's units squared).
///
/// `τ = 0.01` says "effects of about one percentage point are plausible". The mSPRT is most
/// powerful for effects near τ (Johari et al., §4), and for the conversion rates Verdict sees
/// (a few percent to a few tens of percent) a one-point absolute change is the size of effect
/// worth detecting; much larger τ wastes power on implausibly large effects, much smaller τ
/// makes the test slow to reject for anything but tiny effects observed at huge n. Callers
/// with a very different baseline should pass their own τ² (e.g. `(0.1 · baseline)²`).
pub const DEFAULT_TAU_SQUARED: f64 = 1e-4;

/// One evaluation of the mixture likelihood ratio.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Msprt {
    /// `θ̂`, the estimated difference (arm b minus control a).
    pub theta_hat: f64,
    /// Variance `V` of `θ̂`.
    pub variance: f64,
    /// `ln Λ` (finite even when Λ overflows).
    pub log_lambda: f64,
    /// Λ itself (`+inf` when `ln Λ > ~709.78`).
    pub lambda: f64,
}

/// Mixture likelihood ratio for arms given as `(conversions, n)`, control first.
///
/// Fails when an arm has no exposures, reports more conversions than exposures, when
/// `tau_squared` is not positive, or when `V = 0` (both arms at 0% or 100%), where Λ is 0/0.
pub fn mixture_likelihood_ratio(
    a: (u64, u64),
    b: (u64, u64),
    tau_squared: f64,
) -> Result<Msprt, StatsError> {
    check_tau_squared(tau_squared)?;
    let rate = |(c, n): (u64, u64), arm: usize| -> Result<(f64, f64), StatsError> {
        if n == 0 {
            return Err(StatsError::TooFewObservations {
                what: "msprt",
                min: 1,
                got: 0,
            });
        }
        if c > n {
            return Err(StatsError::ConversionsExceedTrials {
                arm,
                conversions: c,
                n,
            });
        }
        Ok((c as f64 / n as f64, n as f64))
    };
    let (pa, na) = rate(a, 0)?;
    let (pb, nb) = rate(b, 1)?;
    let variance = pa * (1.0 - pa) / na + pb * (1.0 - pb) / nb;
    if variance <= 0.0 {
        return Err(StatsError::ZeroVariance("msprt"));
    }
    Ok(evaluate(pb - pa, variance, tau_squared))
}

/// Mixture likelihood ratio for an estimated difference `theta_hat` with variance `variance`
/// (for means: `x̄_b − x̄_a` and `se_a² + se_b²`).
///
/// Fails when an argument is not finite, when `tau_squared` is not positive, or when
/// `variance` is negative or zero (Λ is then 0/0).
pub fn mixture_likelihood_ratio_normal(
    theta_hat: f64,
    variance: f64,
    tau_squared: f64,
) -> Result<Msprt, StatsError> {
    check_estimate(theta_hat, variance, tau_squared)?;
    Ok(evaluate(theta_hat, variance, tau_squared))
}

/// The differences `θ0` this look does not reject at level `alpha`: `{θ0 : Λ(θ0) < 1/α}`.
///
/// Intersect the intervals of all looks so far to get the always-valid confidence interval
/// (see the module docs). Works for rates and means alike: pass [`Msprt::theta_hat`] and
/// [`Msprt::variance`], or the mean estimates directly. Fails on the inputs
/// [`mixture_likelihood_ratio_normal`] rejects and when `alpha` is not in `(0, 1)`.
pub fn always_valid_interval(
    theta_hat: f64,
    variance: f64,
    tau_squared: f64,
    alpha: f64,
) -> Result<(f64, f64), StatsError> {
    check_estimate(theta_hat, variance, tau_squared)?;
    if !(alpha > 0.0 && alpha < 1.0) {
        return Err(StatsError::InvalidParameter {
            name: "alpha",
            value: alpha,
            reason: "must be in (0, 1)",
        });
    }
    // V (V + τ²) / τ² = V (1 + V/τ²); ln((V + τ²)/V) = ln1p(τ²/V), accurate for any ratio.
    let scale = variance * (1.0 + variance / tau_squared);
    let half_width = (scale * (-2.0 * alpha.ln() + (tau_squared / variance).ln_1p())).sqrt();
    Ok((theta_hat - half_width, theta_hat + half_width))
}

fn check_estimate(theta_hat: f64, variance: f64, tau_squared: f64) -> Result<(), StatsError> {
    check_tau_squared(tau_squared)?;
    if !theta_hat.is_finite() {
        return Err(StatsError::InvalidParameter {
            name: "theta_hat",
            value: theta_hat,
            reason: "must be finite",
        });
    }
    if !(variance.is_finite() && variance >= 0.0) {
        return Err(StatsError::InvalidParameter {
            name: "variance",
            value: variance,
            reason: "must be finite and >= 0",
        });
    }
    if variance == 0.0 {
        return Err(StatsError::ZeroVariance("msprt"));
    }
    Ok(())
}

fn check_tau_squared(tau_squared: f64) -> Result<(), StatsError> {
    if tau_squared.is_finite() && tau_squared > 0.0 {
        Ok(())
    } else {
        Err(StatsError::InvalidParameter {
            name: "tau_squared",
            value: tau_squared,
            reason: "must be finite and > 0",
        })
    }
}

/// Λ at `θ0 = 0` for valid inputs, in log space.
fn evaluate(theta_hat: f64, variance: f64, tau_squared: f64) -> Msprt {
    // ln sqrt(V/(V+τ²)) = −½ ln1p(τ²/V); the exponent as ½ z² · τ²/(V+τ²) with z = θ̂/√V,
    // which neither overflows for large θ̂ nor loses the ratio when V ≪ τ².
    let z = theta_hat / variance.sqrt();
    let log_lambda = -0.5 * (tau_squared / variance).ln_1p()
        + 0.5 * z * z * (tau_squared / (variance + tau_squared));
    Msprt {
        theta_hat,
        variance,
        log_lambda,
        lambda: log_lambda.exp(),
    }
}

/// Whether the running maximum of Λ crosses the `1/α` boundary.
///
/// Takes the *running maximum* over all looks so far, not the latest Λ: the guarantee is about
/// the first crossing, and Λ can fall back below the boundary afterwards.
pub fn rejects(lambda_running_max: f64, alpha: f64) -> bool {
    alpha > 0.0 && lambda_running_max >= 1.0 / alpha
}

/// Log-space variant of [`rejects`] for when Λ itself overflows.
pub fn rejects_log(log_lambda_running_max: f64, alpha: f64) -> bool {
    alpha > 0.0 && log_lambda_running_max >= -alpha.ln()
}

/// Always-valid p-value `min(1, 1 / max Λ)`.
pub fn always_valid_p_value(lambda_running_max: f64) -> f64 {
    if lambda_running_max <= 1.0 {
        1.0
    } else {
        1.0 / lambda_running_max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_difference_gives_lambda_below_one() {
        let m = mixture_likelihood_ratio((100, 1000), (100, 1000), DEFAULT_TAU_SQUARED).unwrap();
        assert_eq!(m.theta_hat, 0.0);
        assert!(m.lambda < 1.0);
        assert!(!rejects(m.lambda, DEFAULT_ALPHA));
    }

    #[test]
    fn lambda_matches_the_formula_and_stays_finite_in_log_space() {
        let m = mixture_likelihood_ratio((500, 10_000), (600, 10_000), 1e-4).unwrap();
        let (pa, pb) = (0.05_f64, 0.06_f64);
        let v = pa * (1.0 - pa) / 1e4 + pb * (1.0 - pb) / 1e4;
        let want =
            (v / (v + 1e-4)).sqrt() * (1e-4 * 0.01_f64.powi(2) / (2.0 * v * (v + 1e-4))).exp();
        assert!(
            (m.lambda - want).abs() <= 1e-12 * want,
            "{} vs {want}",
            m.lambda
        );
        let huge =
            mixture_likelihood_ratio((10_000, 1_000_000), (30_000, 1_000_000), 1e-4).unwrap();
        assert!(huge.lambda.is_infinite() && huge.log_lambda.is_finite());
        assert!(rejects_log(huge.log_lambda, 0.05));
    }

    #[test]
    fn rejection_boundary_is_one_over_alpha() {
        assert!(rejects(20.0, 0.05));
        assert!(!rejects(19.999, 0.05));
        assert_eq!(always_valid_p_value(40.0), 0.025);
    }

    #[test]
    fn degenerate_arms_are_errors() {
        assert!(mixture_likelihood_ratio((0, 100), (0, 100), 1e-4).is_err());
        assert!(mixture_likelihood_ratio((0, 0), (1, 100), 1e-4).is_err());
    }
}
