//! Welch's unequal-variance t-test for mean metrics, from per-arm summary statistics.
//!
//! # Variance representation
//!
//! Aggregators naturally produce `(n, Σx, Σx²)`, but `Σx² − (Σx)²/n` cancels catastrophically
//! when the mean is large relative to the spread (mean 1e6, sd 1, n = 1e7: both terms are ~1e19
//! and the difference ~1e7). [`SummaryStats`] therefore stores `(n, mean, M2)` with
//! `M2 = Σ(x − mean)²` (Welford's representation), and offers two ways in:
//!
//! * [`SummaryStats::from_values`] / [`SummaryStats::push`]: Welford's update, exact-ish for any
//!   offset — the preferred path when raw values are available.
//! * [`SummaryStats::from_sums`]: forms `(Σx)²/n` as an unevaluated sum of doubles with fused
//!   multiply-add error-free transformations (`Σx·Σx = hi + lo` exactly, `hi = q·n + r`
//!   exactly), so `Σx² − (Σx)²/n` is computed from the given doubles with ~1 ulp error of the
//!   *result*. It cannot recover information already lost when `Σx²` was rounded to a double.
//!
//! # Difference of means
//!
//! Two means near 1e6 that differ by 1e-3 each carry a rounding error of ~1e-10 once stored as
//! doubles, so `mean_b − mean_a` would keep only ~7 digits. [`SummaryStats`] therefore carries
//! its mean as a double-double `mean + mean_lo` (~106 bits): from sums, `Σx/n` is split with
//! the exact FMA remainder `Σx − mean·n`; from raw values, the shift subtracted before
//! Welford's update is kept apart from the shifted mean. [`mean_difference`] subtracts the two
//! double-double means, which equals `(Σb·n_a − Σa·n_b)/(n_a·n_b)` formed with error-free
//! products, so the difference (and Welch's `t`) is accurate to ~1e-16 relative to the
//! *difference* whenever the sums are exact as given; [`welch_t_test`] uses it.

use serde::{Deserialize, Serialize};

use crate::StatsError;
use crate::dd::Dd;
use crate::special;

/// Significance level used when the caller has no preference.
pub const DEFAULT_ALPHA: f64 = 0.05;

/// Count, mean and centred sum of squares of one arm's metric values.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SummaryStats {
    n: u64,
    mean: f64,
    /// Low part of the mean: `mean + mean_lo` is the mean to ~106 bits (see the module docs).
    #[serde(default)]
    mean_lo: f64,
    m2: f64,
}

impl SummaryStats {
    /// No observations yet.
    pub fn new() -> Self {
        Self {
            n: 0,
            mean: 0.0,
            mean_lo: 0.0,
            m2: 0.0,
        }
    }

    /// From Welford's `(n, mean, M2 = Σ(x − mean)²)`.
    pub fn from_moments(n: u64, mean: f64, m2: f64) -> Result<Self, StatsError> {
        if !mean.is_finite() {
            return Err(StatsError::InvalidParameter {
                name: "mean",
                value: mean,
                reason: "must be finite",
            });
        }
        if !(m2.is_finite() && m2 >= 0.0) {
            return Err(StatsError::InvalidParameter {
                name: "m2",
                value: m2,
                reason: "must be finite and >= 0",
            });
        }
        Ok(Self {
            n,
            mean,
            mean_lo: 0.0,
            m2,
        })
    }

    /// From `(n, Σx, Σx²)` with a compensated `Σx² − (Σx)²/n` (see the module docs).
    pub fn from_sums(n: u64, sum: f64, sum_squares: f64) -> Result<Self, StatsError> {
        for (name, value) in [("sum", sum), ("sum_squares", sum_squares)] {
            if !value.is_finite() {
                return Err(StatsError::InvalidParameter {
                    name,
                    value,
                    reason: "must be finite",
                });
            }
        }
        if n == 0 {
            return Ok(Self::new());
        }
        let nf = n as f64;
        // (Σx)² = hi + lo exactly.
        let hi = sum * sum;
        let lo = sum.mul_add(sum, -hi);
        // hi = q·n + r exactly, so (Σx)²/n = q + (r + lo)/n up to one rounding of a tiny term.
        let q = hi / nf;
        let r = (-q).mul_add(nf, hi);
        // Σx² and q agree in their leading digits when the spread is small, so this subtraction
        // is exact (Sterbenz); the correction is then applied to the small difference.
        let m2 = ((sum_squares - q) - (r + lo) / nf).max(0.0);
        let mean = Dd::quotient(sum, nf);
        Ok(Self {
            n,
            mean: mean.hi,
            mean_lo: mean.lo,
            m2,
        })
    }

    /// Welford accumulation over raw values, shifted by the first value.
    ///
    /// Subtracting the first value is exact for nearby doubles, so the running mean and its
    /// rounding stay at the scale of the *spread*, not of the offset (values near 1e9 with a
    /// spread of 1 otherwise lose ~7 digits of the variance to the mean's rounding). The shift
    /// is added back in double-double, so the mean keeps those digits too.
    pub fn from_values(values: impl IntoIterator<Item = f64>) -> Self {
        let mut values = values.into_iter();
        let Some(shift) = values.next() else {
            return Self::new();
        };
        let mut s = Self {
            n: 1,
            ..Self::new()
        };
        for x in values {
            s.push(x - shift);
        }
        let mean = Dd::new(shift).add(s.mean_dd());
        s.mean = mean.hi;
        s.mean_lo = mean.lo;
        s
    }

    /// Adds one observation (Welford's update, with the mean kept in double-double).
    pub fn push(&mut self, x: f64) {
        self.n += 1;
        let delta = (x - self.mean) - self.mean_lo;
        let mean = self.mean_dd().add(Dd::new(delta / self.n as f64));
        self.mean = mean.hi;
        self.mean_lo = mean.lo;
        self.m2 += delta * ((x - self.mean) - self.mean_lo);
    }

    fn mean_dd(&self) -> Dd {
        Dd {
            hi: self.mean,
            lo: self.mean_lo,
        }
    }

    /// Number of observations.
    pub fn n(&self) -> u64 {
        self.n
    }

    /// Sample mean.
    pub fn mean(&self) -> f64 {
        self.mean
    }

    /// Centred sum of squares `Σ(x − mean)²`.
    pub fn m2(&self) -> f64 {
        self.m2
    }

    /// Unbiased sample variance (divisor `n − 1`); `None` below two observations.
    pub fn variance(&self) -> Option<f64> {
        (self.n >= 2).then(|| self.m2 / (self.n - 1) as f64)
    }

    /// Standard error of the mean, `sqrt(variance / n)`; `None` below two observations.
    ///
    /// With the mean this is the normal posterior `N(mean, std_error²)` of the metric mean
    /// under a flat prior that [`crate::normal`] compares arms with.
    pub fn std_error(&self) -> Option<f64> {
        self.variance().map(|v| (v / self.n as f64).sqrt())
    }
}

/// `mean_b − mean_a` without the cancellation of subtracting two rounded means.
///
/// Subtracts the double-double means (see the module docs), so the result is accurate to
/// ~1e-16 relative to the difference itself, however close and large the means are. The
/// argument order matches [`welch_t_test`] (control first).
pub fn mean_difference(a: &SummaryStats, b: &SummaryStats) -> f64 {
    b.mean_dd().sub(a.mean_dd()).to_f64()
}

impl Default for SummaryStats {
    fn default() -> Self {
        Self::new()
    }
}

/// Outcome of [`welch_t_test`] for `mean_b − mean_a`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct WelchResult {
    /// Mean of arm A (the control).
    pub mean_a: f64,
    /// Mean of arm B.
    pub mean_b: f64,
    /// Sample variance of arm A.
    pub var_a: f64,
    /// Sample variance of arm B.
    pub var_b: f64,
    /// `mean_b − mean_a`.
    pub diff: f64,
    /// Standard error of the difference, `sqrt(var_a/n_a + var_b/n_b)`.
    pub std_error: f64,
    /// `diff / std_error`.
    pub t: f64,
    /// Welch–Satterthwaite degrees of freedom.
    pub df: f64,
    /// Two-sided p-value.
    pub p_value: f64,
    /// `1 − alpha` confidence interval of `diff`.
    pub ci: (f64, f64),
}

/// Two-sided Welch t-test of `mean_b − mean_a` with a `1 − alpha` confidence interval.
pub fn welch_t_test(
    a: &SummaryStats,
    b: &SummaryStats,
    alpha: f64,
) -> Result<WelchResult, StatsError> {
    if !(alpha > 0.0 && alpha < 1.0) {
        return Err(StatsError::InvalidParameter {
            name: "alpha",
            value: alpha,
            reason: "must be in (0, 1)",
        });
    }
    let too_few = |s: &SummaryStats| StatsError::TooFewObservations {
        what: "welch t-test",
        min: 2,
        got: s.n,
    };
    let var_a = a.variance().ok_or_else(|| too_few(a))?;
    let var_b = b.variance().ok_or_else(|| too_few(b))?;
    let (na, nb) = (a.n as f64, b.n as f64);
    let (sa, sb) = (var_a / na, var_b / nb);
    let se2 = sa + sb;
    if se2 <= 0.0 {
        return Err(StatsError::ZeroVariance("welch t-test"));
    }
    let std_error = se2.sqrt();
    let diff = mean_difference(a, b);
    let t = diff / std_error;
    let df = se2 * se2 / (sa * sa / (na - 1.0) + sb * sb / (nb - 1.0));
    let p_value = special::student_t_two_sided(t, df);
    let half_width = special::student_t_quantile_upper(0.5 * alpha, df) * std_error;
    Ok(WelchResult {
        mean_a: a.mean,
        mean_b: b.mean,
        var_a,
        var_b,
        diff,
        std_error,
        t,
        df,
        p_value,
        ci: (diff - half_width, diff + half_width),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_with_a_huge_offset_give_the_exact_variance() {
        // Mean 1e6, tiny spread, n = 1e7: the textbook formula returns garbage here.
        let n: u64 = 10_000_000;
        let sum = 1e13;
        let sum_squares = 1.000_000_000_001e19; // a double: 10000000000010000384
        let s = SummaryStats::from_sums(n, sum, sum_squares).unwrap();
        // Exact: (n·Σx² − (Σx)²) / (n (n − 1)) with integer arithmetic.
        let exact_m2_times_n = n as i128 * sum_squares as i128 - (sum as i128) * (sum as i128);
        let exact_var = exact_m2_times_n as f64 / (n as f64 * (n - 1) as f64);
        let got = s.variance().unwrap();
        assert!(
            (got - exact_var).abs() <= 1e-15 * exact_var,
            "{got} vs {exact_var}"
        );
    }

    #[test]
    fn welford_handles_values_around_one_billion() {
        let values: Vec<f64> = (0..1001).map(|i| 1e9 + f64::from(i % 7) * 0.25).collect();
        let s = SummaryStats::from_values(values.iter().copied());
        // Exact in integer quarters.
        let q: Vec<i128> = (0..1001).map(|i| i128::from(i % 7)).collect();
        let n = q.len() as i128;
        let sum: i128 = q.iter().sum();
        let sum_sq: i128 = q.iter().map(|v| v * v).sum();
        let exact = (n * sum_sq - sum * sum) as f64 / (n * (n - 1)) as f64 / 16.0;
        let got = s.variance().unwrap();
        assert!((got - exact).abs() <= 1e-9 * exact, "{got} vs {exact}");
    }

    #[test]
    fn one_observation_is_too_few() {
        let a = SummaryStats::from_values([1.0]);
        let b = SummaryStats::from_values([1.0, 2.0]);
        assert!(welch_t_test(&a, &b, 0.05).is_err());
    }
}
