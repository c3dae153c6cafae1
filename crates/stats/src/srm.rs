//! Sample-ratio-mismatch check: Pearson χ² goodness of fit of observed exposures against the
//! configured traffic weights.

use serde::{Deserialize, Serialize};

use crate::StatsError;
use crate::special;

/// p-value below which a mismatch is flagged. Deliberately strict: the check runs on every
/// refresh of every experiment, so a 5% threshold would raise false alarms constantly.
pub const DEFAULT_SRM_THRESHOLD: f64 = 0.001;

/// Outcome of [`srm_check`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SrmResult {
    /// Pearson χ² statistic over the arms with positive weight.
    pub statistic: f64,
    /// Degrees of freedom: (number of arms with positive weight) − 1.
    pub df: u32,
    /// `P(χ²_df ≥ statistic)`; may underflow to 0 for a gross mismatch.
    pub p_value: f64,
    /// `log10` of the p-value, finite even when `p_value` underflows.
    pub log10_p_value: f64,
    /// Expected exposures per arm (0 for arms with weight 0).
    pub expected_counts: Vec<f64>,
    /// Threshold the p-value was compared with.
    pub threshold: f64,
    /// `p_value < threshold`.
    pub flagged: bool,
}

/// Equal weights for `k` arms (the default when an experiment does not configure a split).
pub fn equal_weights(k: usize) -> Vec<f64> {
    vec![1.0 / k as f64; k]
}

/// [`srm_check_with_threshold`] at [`DEFAULT_SRM_THRESHOLD`].
pub fn srm_check(observed: &[u64], weights: &[f64]) -> Result<SrmResult, StatsError> {
    srm_check_with_threshold(observed, weights, DEFAULT_SRM_THRESHOLD)
}

/// Pearson χ² test of `observed` exposures against `weights` (any positive scale; normalised
/// over the arms with positive weight).
///
/// Arms with weight 0 are left out entirely — of the total, of the statistic and of the degrees
/// of freedom — so an arm that has been switched off does not distort the comparison of the
/// others. With fewer than two positive-weight arms, or no exposures at all, there is nothing
/// to test and the result is `statistic = 0, p = 1`, not flagged.
pub fn srm_check_with_threshold(
    observed: &[u64],
    weights: &[f64],
    threshold: f64,
) -> Result<SrmResult, StatsError> {
    if observed.len() != weights.len() {
        return Err(StatsError::LengthMismatch {
            what: "srm weights vs observed counts",
            expected: observed.len(),
            got: weights.len(),
        });
    }
    if !(threshold > 0.0 && threshold < 1.0) {
        return Err(StatsError::InvalidParameter {
            name: "threshold",
            value: threshold,
            reason: "must be in (0, 1)",
        });
    }
    for &w in weights {
        if !(w.is_finite() && w >= 0.0) {
            return Err(StatsError::InvalidParameter {
                name: "weight",
                value: w,
                reason: "must be finite and >= 0",
            });
        }
    }
    let weight_total: f64 = weights.iter().filter(|&&w| w > 0.0).sum();
    let observed_total: u64 = observed
        .iter()
        .zip(weights)
        .filter(|(_, w)| **w > 0.0)
        .map(|(o, _)| *o)
        .sum();
    let active = weights.iter().filter(|&&w| w > 0.0).count();
    let n = observed_total as f64;
    let expected_counts: Vec<f64> = weights
        .iter()
        .map(|&w| if w > 0.0 { n * (w / weight_total) } else { 0.0 })
        .collect();
    let mut statistic = 0.0;
    for ((&o, &e), &w) in observed.iter().zip(&expected_counts).zip(weights) {
        if w > 0.0 && e > 0.0 {
            let d = o as f64 - e;
            statistic += d * d / e;
        }
    }
    let df = active.saturating_sub(1) as u32;
    let (p_value, ln_p) = if df == 0 || observed_total == 0 {
        (1.0, 0.0)
    } else {
        special::gamma_q_with_ln(0.5 * f64::from(df), 0.5 * statistic)
    };
    Ok(SrmResult {
        statistic,
        df,
        p_value,
        log10_p_value: ln_p / std::f64::consts::LN_10,
        expected_counts,
        threshold,
        flagged: p_value < threshold,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_perfect_split_is_not_flagged() {
        let r = srm_check(&[500, 500], &[0.5, 0.5]).unwrap();
        assert_eq!(r.statistic, 0.0);
        assert_eq!(r.p_value, 1.0);
        assert!(!r.flagged);
    }

    #[test]
    fn a_gross_mismatch_has_a_finite_log_p_value_after_underflow() {
        let r = srm_check(&[1_000_000, 2_000_000], &[0.5, 0.5]).unwrap();
        assert_eq!(r.p_value, 0.0);
        assert!(r.log10_p_value < -1000.0 && r.log10_p_value.is_finite());
        assert!(r.flagged);
    }

    #[test]
    fn zero_weight_arms_are_excluded_from_total_statistic_and_df() {
        let with_off = srm_check(&[1000, 1040, 7], &[0.5, 0.5, 0.0]).unwrap();
        let without = srm_check(&[1000, 1040], &[0.5, 0.5]).unwrap();
        assert_eq!(with_off.df, 1);
        assert_eq!(with_off.statistic, without.statistic);
        assert_eq!(with_off.expected_counts, vec![1020.0, 1020.0, 0.0]);
    }

    #[test]
    fn mismatched_lengths_are_rejected() {
        assert!(srm_check(&[1, 2, 3], &[0.5, 0.5]).is_err());
    }
}
