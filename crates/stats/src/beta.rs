//! Beta posteriors of conversion rates.

use serde::{Deserialize, Serialize};

use crate::StatsError;
use crate::special;

/// Credible level used when the caller has no preference.
pub const DEFAULT_CREDIBLE_LEVEL: f64 = 0.95;

/// A Beta(α, β) posterior for a conversion rate.
///
/// With the uniform Beta(1, 1) prior used throughout Verdict, `c` conversions out of `n`
/// exposures give Beta(1 + c, 1 + n − c) (see [`BetaPosterior::from_counts`]).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BetaPosterior {
    /// Shape α (prior successes + observed successes).
    pub alpha: f64,
    /// Shape β (prior failures + observed failures).
    pub beta: f64,
}

impl BetaPosterior {
    /// A Beta(α, β) distribution; both shapes must be finite and positive.
    pub fn new(alpha: f64, beta: f64) -> Result<Self, StatsError> {
        for (name, value) in [("alpha", alpha), ("beta", beta)] {
            if !(value.is_finite() && value > 0.0) {
                return Err(StatsError::InvalidParameter {
                    name,
                    value,
                    reason: "must be finite and > 0",
                });
            }
        }
        Ok(Self { alpha, beta })
    }

    /// Posterior Beta(1 + conversions, 1 + n − conversions) under a uniform prior.
    pub fn from_counts(conversions: u64, n: u64) -> Result<Self, StatsError> {
        if conversions > n {
            return Err(StatsError::ConversionsExceedTrials {
                arm: 0,
                conversions,
                n,
            });
        }
        Ok(Self {
            alpha: 1.0 + conversions as f64,
            beta: 1.0 + (n - conversions) as f64,
        })
    }

    /// Posterior mean `α / (α + β)`.
    pub fn mean(&self) -> f64 {
        self.alpha / (self.alpha + self.beta)
    }

    /// Posterior variance `αβ / ((α+β)² (α+β+1))`.
    pub fn variance(&self) -> f64 {
        let s = self.alpha + self.beta;
        self.alpha * self.beta / (s * s * (s + 1.0))
    }

    /// Density at `x`: `x^(α−1) (1 − x)^(β−1) / B(α, β)`, 0 outside [0, 1], computed in
    /// logarithms so that shapes in the millions neither overflow nor underflow early.
    pub fn pdf(&self, x: f64) -> f64 {
        if x.is_nan() {
            return f64::NAN;
        }
        if !(0.0..=1.0).contains(&x) {
            return 0.0;
        }
        let (a, b) = (self.alpha, self.beta);
        let edge = |shape: f64| {
            // At 0 (or 1) the density is 0 above shape 1, 1/B at shape 1, unbounded below.
            if shape > 1.0 {
                0.0
            } else if shape == 1.0 {
                (-special::ln_beta(a, b)).exp()
            } else {
                f64::INFINITY
            }
        };
        if x == 0.0 {
            return edge(a);
        }
        if x == 1.0 {
            return edge(b);
        }
        ((a - 1.0) * x.ln() + (b - 1.0) * (-x).ln_1p() - special::ln_beta(a, b)).exp()
    }

    /// Cumulative distribution `P(p ≤ x)`.
    pub fn cdf(&self, x: f64) -> f64 {
        if x.is_nan() {
            return f64::NAN;
        }
        special::beta_reg_pair(
            self.alpha,
            self.beta,
            x.clamp(0.0, 1.0),
            (1.0 - x).clamp(0.0, 1.0),
        )
        .0
    }

    /// `x` with `P(p ≤ x) = q`. Upper quantiles are computed as `1 −` the lower quantile of
    /// the mirrored Beta(β, α), so neither tail loses precision.
    pub fn quantile(&self, q: f64) -> Result<f64, StatsError> {
        if !(0.0..=1.0).contains(&q) {
            return Err(StatsError::InvalidParameter {
                name: "q",
                value: q,
                reason: "must be in [0, 1]",
            });
        }
        Ok(if q <= 0.5 {
            special::beta_quantile_lower(self.alpha, self.beta, q)
        } else {
            1.0 - special::beta_quantile_lower(self.beta, self.alpha, 1.0 - q)
        })
    }

    /// Equal-tailed credible interval: `(1 − level)/2` of the mass lies below the first bound
    /// and the same above the second.
    pub fn credible_interval(&self, level: f64) -> Result<(f64, f64), StatsError> {
        if !(level > 0.0 && level < 1.0) {
            return Err(StatsError::InvalidParameter {
                name: "level",
                value: level,
                reason: "must be in (0, 1)",
            });
        }
        let tail = 0.5 * (1.0 - level);
        let lower = special::beta_quantile_lower(self.alpha, self.beta, tail);
        let upper = 1.0 - special::beta_quantile_lower(self.beta, self.alpha, tail);
        Ok((lower, upper))
    }
}

/// Each posterior's density at `points` evenly spaced rates over one range for all: from the
/// lowest `tail` quantile to the highest `1 − tail` quantile of the posteriors (so each curve
/// shows all but `2 × tail` of its mass). Empty without posteriors, with fewer than two
/// points, or when the range is empty.
pub fn density_curves(
    posteriors: &[BetaPosterior],
    points: usize,
    tail: f64,
) -> Vec<Vec<(f64, f64)>> {
    let mut range: Option<(f64, f64)> = None;
    for p in posteriors {
        let (Ok(lo), Ok(hi)) = (p.quantile(tail), p.quantile(1.0 - tail)) else {
            return Vec::new();
        };
        range = Some(range.map_or((lo, hi), |(a, b)| (a.min(lo), b.max(hi))));
    }
    let Some((lo, hi)) = range.filter(|(lo, hi)| hi > lo) else {
        return Vec::new();
    };
    if points < 2 {
        return Vec::new();
    }
    let step = (hi - lo) / (points - 1) as f64;
    posteriors
        .iter()
        .map(|p| {
            (0..points)
                .map(|i| {
                    let x = lo + step * i as f64;
                    (x, p.pdf(x))
                })
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_density_matches_its_closed_form_and_integrates_to_one() {
        // Beta(2, 3): 12 x (1 − x)².
        let p = BetaPosterior::new(2.0, 3.0).unwrap();
        for x in [0.1, 0.25, 0.5, 0.9] {
            let exact = 12.0 * x * (1.0 - x) * (1.0 - x);
            assert!((p.pdf(x) - exact).abs() < 1e-12, "{x}: {}", p.pdf(x));
        }
        assert_eq!(p.pdf(0.0), 0.0);
        assert_eq!(p.pdf(1.0), 0.0);
        assert_eq!(p.pdf(-0.1), 0.0);
        // The uniform density at the edge: 1 / B(1, 1) = 1, to within its logarithm's rounding.
        assert!((BetaPosterior::new(1.0, 1.0).unwrap().pdf(0.0) - 1.0).abs() < 1e-12);
        // A posterior of a million trials: finite, and its mass (midpoint rule over ±8 sd) is 1.
        let big = BetaPosterior::from_counts(100_000, 1_000_000).unwrap();
        let (mean, sd) = (big.mean(), big.variance().sqrt());
        let steps = 4000;
        let h = 16.0 * sd / f64::from(steps);
        let mass: f64 = (0..steps)
            .map(|i| big.pdf(mean - 8.0 * sd + (f64::from(i) + 0.5) * h) * h)
            .sum();
        assert!((mass - 1.0).abs() < 1e-6, "{mass}");
    }

    #[test]
    fn density_curves_share_one_range_holding_each_posteriors_mass() {
        let a = BetaPosterior::from_counts(10, 100).unwrap();
        let b = BetaPosterior::from_counts(50, 100).unwrap();
        let curves = density_curves(&[a, b], 60, 0.0005);
        assert_eq!(curves.len(), 2);
        let xs = |c: &[(f64, f64)]| c.iter().map(|(x, _)| *x).collect::<Vec<_>>();
        assert_eq!(xs(&curves[0]), xs(&curves[1]), "one range for all");
        assert_eq!(curves[0].len(), 60);
        assert!((curves[0][0].0 - a.quantile(0.0005).unwrap()).abs() < 1e-12);
        assert!((curves[1][59].0 - b.quantile(0.9995).unwrap()).abs() < 1e-12);
        for (x, y) in &curves[1] {
            assert_eq!(*y, b.pdf(*x));
        }
        assert!(density_curves(&[], 60, 0.0005).is_empty());
        assert!(density_curves(&[a], 1, 0.0005).is_empty());
    }

    #[test]
    fn counts_map_to_a_uniform_prior_posterior() {
        let p = BetaPosterior::from_counts(100, 1000).unwrap();
        assert_eq!(
            p,
            BetaPosterior {
                alpha: 101.0,
                beta: 901.0
            }
        );
        assert!(BetaPosterior::from_counts(5, 4).is_err());
    }

    #[test]
    fn credible_interval_is_symmetric_for_a_symmetric_posterior() {
        let p = BetaPosterior::new(40.0, 40.0).unwrap();
        let (lo, hi) = p.credible_interval(0.95).unwrap();
        assert!((lo + hi - 1.0).abs() < 1e-14, "{lo} {hi}");
        assert!((p.cdf(lo) - 0.025).abs() < 1e-13);
    }

    #[test]
    fn credible_interval_of_an_all_converted_arm_matches_the_closed_form() {
        // Beta(a, 1) has CDF x^a, so its quantiles are q^(1/a) — even at n = 1e7.
        for n in [10_u64, 1_000, 10_000_000] {
            let p = BetaPosterior::from_counts(n, n).unwrap();
            let (lo, hi) = p.credible_interval(0.95).unwrap();
            let a = p.alpha;
            let want_lo = (0.025_f64.ln() / a).exp();
            let want_hi = (0.975_f64.ln() / a).exp();
            assert!((lo - want_lo).abs() < 1e-13, "n={n}: {lo} vs {want_lo}");
            assert!((hi - want_hi).abs() < 1e-13, "n={n}: {hi} vs {want_hi}");
        }
    }

    #[test]
    fn credible_interval_rejects_levels_outside_zero_one() {
        let p = BetaPosterior::new(2.0, 3.0).unwrap();
        assert!(p.credible_interval(1.0).is_err());
        assert!(p.credible_interval(f64::NAN).is_err());
    }
}
