//! Ratio metrics with subjects as the unit: `R = Σ value / Σ events`, and its delta-method
//! variance.
//!
//! # Why a ratio, and why the delta method
//!
//! A `mean`-kind metric (latency per request, basket value per order) averages over *events*,
//! but subjects are what was randomised, and one subject's events are correlated. Treating
//! events as independent understates the variance. Each subject `i` instead contributes a
//! pair `(x_i, y_i)`: its number of events and the sum of their values. The arm's estimate is
//! `R = Σy / Σx = ȳ / x̄`, a ratio of two subject-level means, and the delta method (a
//! first-order Taylor expansion of `ȳ/x̄` around the true means) gives
//!
//! ```text
//! Var(R) ≈ (1/n) · (σ_y² − 2 R σ_xy + R² σ_x²) / x̄²
//! ```
//!
//! with `σ_x²`, `σ_y²`, `σ_xy` the subject-level sample (co)variances (divisor `n − 1`). This is
//! the standard treatment of ratio metrics in online experiments: A. Deng, U. Knoblich, J. Lu,
//! "Applying the Delta Method in Metric Analytics: A Practical Guide with Novel Ideas", KDD
//! 2018, §2–3; GrowthBook and Eppo use the same formula. `R` with standard error `sqrt(Var(R))`
//! is the normal posterior [`crate::normal`] compares arms with.
//!
//! Subjects without events (`x_i = y_i = 0`) may be included in `n` or left out: their
//! residual `y_i − R x_i` is 0, so they change `Var(R)` only through the factor `n/(n − 1)`.
//!
//! # Numerics
//!
//! The numerator is the sample variance of the residuals `y_i − R x_i`; its sum of squares is
//! `M2_y − 2R·C_xy + R²·M2_x` with the centred sums `M2_x = Σx² − (Σx)²/n`,
//! `M2_y = Σy² − (Σy)²/n` and `C_xy = Σxy − ΣxΣy/n`. Both steps cancel: each centred sum when
//! the values sit far from zero relative to their spread (as in [`crate::SummaryStats`]), and
//! the combination when values are nearly proportional to event counts (every event taking
//! about the same time), where the residuals are tiny next to `σ_y²`. Everything from the
//! given sums to the residual sum of squares is therefore computed in double-double (the
//! products `ΣxΣy` error-free with FMA), so the result is accurate to ~1e-16 relative to the
//! residual variance itself whenever the sums are exact as given. As with
//! [`crate::SummaryStats::from_sums`], information already lost when a sum was rounded to a
//! double cannot be recovered.

use serde::{Deserialize, Serialize};

use crate::StatsError;
use crate::dd::Dd;

/// One arm of a ratio metric: subjects, the ratio of sums and its delta-method variance.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RatioStats {
    n: u64,
    sum_x: f64,
    sum_y: f64,
    ratio: f64,
    variance_of_ratio: f64,
}

impl RatioStats {
    /// From subject-level sums over the arm's `n` subjects: `sum_x = Σx_i` (events),
    /// `sum_y = Σy_i` (values), `sum_xx = Σx_i²`, `sum_yy = Σy_i²`, `sum_xy = Σx_i·y_i`.
    ///
    /// Fails with fewer than two subjects (no variance), when a sum is not finite, when
    /// `sum_x ≤ 0` (no events: the ratio is undefined) or when a sum of squares is negative.
    /// Inconsistent sums (a negative residual variance) are clamped to a variance of 0.
    pub fn from_sums(
        n: u64,
        sum_x: f64,
        sum_y: f64,
        sum_xx: f64,
        sum_yy: f64,
        sum_xy: f64,
    ) -> Result<Self, StatsError> {
        for (name, value) in [
            ("sum_x", sum_x),
            ("sum_y", sum_y),
            ("sum_xx", sum_xx),
            ("sum_yy", sum_yy),
            ("sum_xy", sum_xy),
        ] {
            if !value.is_finite() {
                return Err(StatsError::InvalidParameter {
                    name,
                    value,
                    reason: "must be finite",
                });
            }
        }
        if n < 2 {
            return Err(StatsError::TooFewObservations {
                what: "ratio metric variance",
                min: 2,
                got: n,
            });
        }
        if sum_x <= 0.0 {
            return Err(StatsError::InvalidParameter {
                name: "sum_x",
                value: sum_x,
                reason: "must be > 0 (the ratio's denominator)",
            });
        }
        for (name, value) in [("sum_xx", sum_xx), ("sum_yy", sum_yy)] {
            if value < 0.0 {
                return Err(StatsError::InvalidParameter {
                    name,
                    value,
                    reason: "must be >= 0",
                });
            }
        }
        let nf = n as f64;
        // Σst − Σs·Σt/n with the product exact and the division to ~2^-106.
        let centred =
            |s: f64, t: f64, sum_st: f64| Dd::new(sum_st).sub(Dd::product(s, t).div_f64(nf));
        let m2_x = centred(sum_x, sum_x, sum_xx);
        let m2_y = centred(sum_y, sum_y, sum_yy);
        let c_xy = centred(sum_x, sum_y, sum_xy);
        let ratio = Dd::quotient(sum_y, sum_x);
        // Σ(y − R x)² = M2_y − 2 R C_xy + R² M2_x (the residuals have mean 0).
        let two_r = ratio.add(ratio);
        let residual_m2 = m2_y
            .sub(two_r.mul(c_xy))
            .add(ratio.mul(ratio).mul(m2_x))
            .to_f64()
            .max(0.0);
        // Var(R) = [M2_r / (n − 1)] / (n x̄²) with x̄ = Σx / n.
        let mean_x = sum_x / nf;
        let variance_of_ratio = residual_m2 / (nf - 1.0) / nf / (mean_x * mean_x);
        Ok(Self {
            n,
            sum_x,
            sum_y,
            ratio: ratio.to_f64(),
            variance_of_ratio,
        })
    }

    /// Number of subjects.
    pub fn n(&self) -> u64 {
        self.n
    }

    /// Events per subject, `x̄ = Σx / n`.
    pub fn mean_x(&self) -> f64 {
        self.sum_x / self.n as f64
    }

    /// Value per subject, `ȳ = Σy / n`.
    pub fn mean_y(&self) -> f64 {
        self.sum_y / self.n as f64
    }

    /// The metric, `R = Σy / Σx` (value per event).
    pub fn ratio(&self) -> f64 {
        self.ratio
    }

    /// Delta-method variance of [`RatioStats::ratio`] (see the module docs).
    pub fn variance_of_ratio(&self) -> f64 {
        self.variance_of_ratio
    }

    /// Standard error of [`RatioStats::ratio`], `sqrt(variance_of_ratio)`.
    pub fn std_error(&self) -> f64 {
        self.variance_of_ratio.sqrt()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_proportional_to_events_have_zero_variance() {
        // Every event has the same value: R is exact whatever the mix of event counts and the
        // residuals are all 0. The sums are exact doubles, but the float64 combination
        // σ_y² − 2Rσ_xy + R²σ_x² of them leaves 0.002 of rounding noise (Var(R) ≈ 2e-5).
        let xs = [1.0, 4.0, 2.0, 9.0, 3.0, 7.0, 1.0];
        let value = 1_234_567.0;
        let (mut sx, mut sy, mut sxx, mut syy, mut sxy) = (0.0, 0.0, 0.0, 0.0, 0.0);
        for x in xs {
            let y = value * x;
            sx += x;
            sy += y;
            sxx += x * x;
            syy += y * y;
            sxy += x * y;
        }
        let r = RatioStats::from_sums(xs.len() as u64, sx, sy, sxx, syy, sxy).unwrap();
        assert_eq!(r.ratio(), value);
        assert!(r.variance_of_ratio() <= 1e-15, "{}", r.variance_of_ratio());
    }

    #[test]
    fn no_events_or_one_subject_is_an_error() {
        assert!(RatioStats::from_sums(10, 0.0, 0.0, 0.0, 0.0, 0.0).is_err());
        assert!(RatioStats::from_sums(1, 2.0, 3.0, 4.0, 9.0, 6.0).is_err());
        assert!(RatioStats::from_sums(3, 2.0, f64::NAN, 4.0, 9.0, 6.0).is_err());
    }
}
