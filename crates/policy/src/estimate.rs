//! Per-arm estimates of a metric of any kind, their differences, and the mSPRT mixing scale τ.
//!
//! Everything is at the subject level (the randomization unit), from one arm's
//! [`VariantCounts`]:
//!
//! | kind | estimate | variance of the estimate |
//! |---|---|---|
//! | `binomial` | `p = converted_subjects / subjects` | `p (1 − p) / subjects` |
//! | `count`, `sum` | `x̄ = sum / subjects` (subjects without events are zeros) | `s² / subjects` from `(subjects, sum, sum_of_squares)` ([`SummaryStats::from_sums`], no cancellation) |
//! | `mean` | `R = sum / events` | delta method with subjects as the unit ([`RatioStats::from_sums`]) |
//!
//! A `count` metric reads the per-subject totals of its events' values like a `sum` metric
//! does: events carry the value 1 unless sent with another, so a subject's total is its
//! number of events, and a configured cap applies to it as to any other total.
//!
//! An estimate is undefined without subjects (and, for `mean`, without events); its variance
//! additionally needs two subjects for `count`, `sum` and `mean`.
//!
//! # τ, the mixing scale of the always-valid test
//!
//! The mSPRT (see `verdict_stats::msprt`) mixes over alternatives `θ ~ N(0, τ²)` in the
//! metric's units. [`configured_tau_squared`] gives τ² when it does not depend on the data:
//! the metric's `tau`; for `binomial` otherwise the policy's `tau_squared` or the statistics'
//! default. For the other kinds without a `tau`, τ is a quarter of |the control's estimate|,
//! taken once ([`baseline_tau`]) at the first look where every arm has `min_assignments`
//! subjects (and at least two) and the control's estimate is not zero, and then kept in the
//! guard state so that later looks never re-estimate it. It is a scale for effects worth
//! detecting ("about a quarter of the baseline"), taken from the level of the control, never
//! from the differences being tested; re-estimating it at every look would let the data
//! choose the statistic after the fact.

use serde::{Deserialize, Serialize};
use verdict_domain::{Metric, MetricKind, Objective, VariantCounts, WinnerPolicy};
use verdict_stats::{RatioStats, SummaryStats, mean_difference, msprt};

/// What a metric's estimate is, for reports and blockers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum EstimateKind {
    /// `binomial`: converted subjects / subjects.
    ConversionRate,
    /// `count`: events per subject.
    EventsPerSubject,
    /// `sum`: value per subject.
    ValuePerSubject,
    /// `mean`: value per event.
    ValuePerEvent,
}

impl EstimateKind {
    pub fn of(kind: MetricKind) -> Self {
        match kind {
            MetricKind::Binomial => Self::ConversionRate,
            MetricKind::Count => Self::EventsPerSubject,
            MetricKind::Sum => Self::ValuePerSubject,
            MetricKind::Mean => Self::ValuePerEvent,
        }
    }

    /// The estimate in words, with its unit.
    pub fn describe(self) -> &'static str {
        match self {
            Self::ConversionRate => "conversion rate",
            Self::EventsPerSubject => "events per subject",
            Self::ValuePerSubject => "value per subject",
            Self::ValuePerEvent => "value per event",
        }
    }
}

/// One arm's estimate of a metric and the variance of that estimate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ArmEstimate {
    /// The estimate (see the module docs).
    pub value: f64,
    /// Variance of [`ArmEstimate::value`] (the squared standard error); `None` where it is
    /// undefined (fewer than two subjects for `count`, `sum` and `mean`).
    pub variance: Option<f64>,
    /// `count` and `sum`: the summary the difference of two means is taken from without
    /// cancellation.
    summary: Option<SummaryStats>,
}

impl ArmEstimate {
    /// Standard error of the estimate.
    pub fn std_error(&self) -> Option<f64> {
        self.variance.map(f64::sqrt)
    }

    /// The normal posterior `(mean, std_error)` of the estimate under a flat prior.
    pub fn posterior(&self) -> Option<(f64, f64)> {
        self.std_error().map(|se| (self.value, se))
    }
}

/// Whether `c`'s value totals are numbers the statistics can use. They are not when a
/// stored total overflowed (values before ingestion bounded them): a value metric's
/// estimate is then undefined, and a decision on it is blocked by name.
pub fn totals_finite(c: &VariantCounts) -> bool {
    c.sum.is_finite() && c.sum_of_squares.is_finite() && c.sum_events_value.is_finite()
}

/// The estimate of `kind` for one arm, or `None` where it is undefined (see the module docs),
/// which includes a value metric whose totals are not finite ([`totals_finite`]).
///
/// `counts` must be valid figures (`converted_subjects ≤ subjects`); the policy checks them
/// before calling this.
pub fn estimate(kind: MetricKind, counts: &VariantCounts) -> Option<ArmEstimate> {
    let n = counts.subjects;
    if n == 0 || (kind != MetricKind::Binomial && !totals_finite(counts)) {
        return None;
    }
    let nf = n as f64;
    match kind {
        MetricKind::Binomial => {
            let p = counts.converted_subjects.min(n) as f64 / nf;
            Some(ArmEstimate {
                value: p,
                variance: Some(p * (1.0 - p) / nf),
                summary: None,
            })
        }
        MetricKind::Count | MetricKind::Sum => {
            let s = SummaryStats::from_sums(n, counts.sum, counts.sum_of_squares).ok()?;
            Some(ArmEstimate {
                value: s.mean(),
                variance: s.variance().map(|v| v / nf),
                summary: Some(s),
            })
        }
        MetricKind::Mean => {
            if counts.events == 0 {
                return None;
            }
            let ratio = RatioStats::from_sums(
                n,
                counts.events as f64,
                counts.sum,
                counts.sum_events_squared as f64,
                counts.sum_of_squares,
                counts.sum_events_value,
            );
            Some(match ratio {
                Ok(r) => ArmEstimate {
                    value: r.ratio(),
                    variance: Some(r.variance_of_ratio()),
                    summary: None,
                },
                // One subject: the ratio is defined, its variance is not.
                Err(_) => ArmEstimate {
                    value: counts.sum / counts.events as f64,
                    variance: None,
                    summary: None,
                },
            })
        }
    }
}

/// An estimated difference `θ̂ = b − a` and its variance `V = var_a + var_b`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Difference {
    pub theta_hat: f64,
    pub variance: f64,
}

/// The difference `b − a` of two arms' estimates with its variance, when both variances are
/// defined. Means per subject are subtracted without cancellation
/// ([`verdict_stats::mean_difference`]); for rates the variance is the one the rate mSPRT
/// uses, term for term.
pub fn difference(a: &ArmEstimate, b: &ArmEstimate) -> Option<Difference> {
    Some(Difference {
        theta_hat: point_difference(a, b),
        variance: a.variance? + b.variance?,
    })
}

/// `b − a` of two arms' estimates (means per subject without cancellation).
pub fn point_difference(a: &ArmEstimate, b: &ArmEstimate) -> f64 {
    match (&a.summary, &b.summary) {
        (Some(sa), Some(sb)) => mean_difference(sa, sb),
        _ => b.value - a.value,
    }
}

/// `x` oriented so that higher is better under `objective`.
pub fn oriented(x: f64, objective: Objective) -> f64 {
    match objective {
        Objective::Maximize => x,
        Objective::Minimize => -x,
    }
}

/// Where the τ of an always-valid test comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum TauSource {
    /// The metric's `tau`.
    Metric,
    /// The policy's `tau_squared` (binomial metrics).
    Policy,
    /// The statistics' default τ² for rates (binomial metrics).
    Default,
    /// A quarter of the control's estimate, taken once and kept.
    ControlBaseline,
    /// Not set yet: taken from the control's estimate once every arm has `min_assignments`
    /// subjects and the control's estimate is not zero. Until then the test cannot reject.
    Pending,
}

/// τ² that does not depend on the data: the metric's `tau`, else for `binomial` the policy's
/// `tau_squared` or [`msprt::DEFAULT_TAU_SQUARED`]; `None` for the other kinds without a
/// `tau` (they take [`baseline_tau`]).
pub fn configured_tau_squared(metric: &Metric, policy: &WinnerPolicy) -> Option<(f64, TauSource)> {
    if let Some(tau) = metric.tau {
        return Some((tau * tau, TauSource::Metric));
    }
    match metric.kind {
        MetricKind::Binomial => Some(match policy.tau_squared {
            Some(t) => (t, TauSource::Policy),
            None => (msprt::DEFAULT_TAU_SQUARED, TauSource::Default),
        }),
        _ => None,
    }
}

/// Share of |the control's estimate| taken as τ when a metric configures none.
pub const BASELINE_TAU_FRACTION: f64 = 0.25;

/// τ from the control's estimate, when this look is sufficient: every arm has at least
/// `min_assignments` subjects (and at least two), and the control's estimate is defined and
/// not zero.
pub fn baseline_tau(
    subjects: impl IntoIterator<Item = u64>,
    min_assignments: u64,
    control: Option<&ArmEstimate>,
) -> Option<f64> {
    let required = min_assignments.max(2);
    if !subjects.into_iter().all(|n| n >= required) {
        return None;
    }
    let tau = BASELINE_TAU_FRACTION * control?.value.abs();
    (tau.is_finite() && tau > 0.0).then_some(tau)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(subjects: u64, values: &[&[f64]]) -> VariantCounts {
        // `values[i]` are the event values of subject i; subjects beyond have no events.
        let mut c = VariantCounts {
            subjects,
            ..VariantCounts::default()
        };
        for events in values {
            let n = events.len() as u64;
            let total: f64 = events.iter().sum();
            c.converted_subjects += u64::from(n > 0);
            c.events += n;
            c.sum += total;
            c.sum_of_squares += total * total;
            c.sum_events_squared += n * n;
            c.sum_events_value += n as f64 * total;
        }
        c
    }

    #[test]
    fn a_sum_metric_counts_subjects_without_events_as_zeros() {
        let c = counts(4, &[&[10.0], &[2.0, 4.0]]);
        let e = estimate(MetricKind::Sum, &c).unwrap();
        assert_eq!(e.value, 4.0);
        // Per-subject totals 10, 6, 0, 0: sample variance 24, divided by 4 subjects.
        assert!((e.variance.unwrap() - 6.0).abs() < 1e-12);
    }

    #[test]
    fn a_mean_metric_is_value_per_event_with_subjects_as_the_unit() {
        let c = counts(3, &[&[100.0, 300.0], &[200.0], &[250.0, 150.0, 200.0]]);
        let e = estimate(MetricKind::Mean, &c).unwrap();
        assert!((e.value - 1200.0 / 6.0).abs() < 1e-12);
        let direct = RatioStats::from_sums(
            3,
            6.0,
            1200.0,
            14.0,
            400.0 * 400.0 + 200.0 * 200.0 + 600.0 * 600.0,
            2.0 * 400.0 + 200.0 + 3.0 * 600.0,
        )
        .unwrap();
        assert_eq!(e.variance, Some(direct.variance_of_ratio()));
        assert!(estimate(MetricKind::Mean, &counts(5, &[])).is_none());
        let one = estimate(MetricKind::Mean, &counts(1, &[&[3.0, 5.0]])).unwrap();
        assert_eq!((one.value, one.variance), (4.0, None));
    }

    #[test]
    fn a_rate_has_the_binomial_variance() {
        let c = VariantCounts {
            subjects: 1000,
            converted_subjects: 100,
            ..VariantCounts::default()
        };
        let e = estimate(MetricKind::Binomial, &c).unwrap();
        assert_eq!(e.value, 0.1);
        assert_eq!(e.variance, Some(0.1 * 0.9 / 1000.0));
        assert!(estimate(MetricKind::Binomial, &VariantCounts::default()).is_none());
    }

    #[test]
    fn differences_of_large_close_means_do_not_cancel() {
        let a = counts(2, &[&[1e9], &[1e9 + 2.0]]);
        let b = counts(2, &[&[1e9 + 0.5], &[1e9 + 2.0]]);
        let (ea, eb) = (
            estimate(MetricKind::Sum, &a).unwrap(),
            estimate(MetricKind::Sum, &b).unwrap(),
        );
        assert_eq!(difference(&ea, &eb).unwrap().theta_hat, 0.25);
    }

    #[test]
    fn tau_is_taken_from_a_sufficient_look_only() {
        let control = ArmEstimate {
            value: -8.0,
            variance: Some(1.0),
            summary: None,
        };
        assert_eq!(baseline_tau([100, 100], 100, Some(&control)), Some(2.0));
        assert_eq!(baseline_tau([100, 99], 100, Some(&control)), None);
        assert_eq!(baseline_tau([1, 1], 0, Some(&control)), None);
        let zero = ArmEstimate {
            value: 0.0,
            ..control
        };
        assert_eq!(baseline_tau([500, 500], 100, Some(&zero)), None);
        assert_eq!(baseline_tau([500, 500], 100, None), None);
    }
}
