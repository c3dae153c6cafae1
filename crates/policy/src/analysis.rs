//! Pure results analysis: per-variant figures of one metric with the statistics an
//! experimenter reads (rates with credible intervals, P(best), expected loss, lift, SRM,
//! Welch's t-test for value metrics). The `results` endpoint calls [`analyze`] on figures
//! read from the rollups; no IO here.

use serde::{Deserialize, Serialize};
use verdict_domain::VariantCounts;
use verdict_domain::{Experiment, MetricKind, Objective};
use verdict_stats::{self as stats, BetaPosterior, SummaryStats};

use crate::rules::{CREDIBLE_LEVEL, to_stats_objective};

/// Level of the Welch confidence interval of the difference of means.
pub const WELCH_ALPHA: f64 = 0.05;

/// How the requested metric is analysed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MetricSpec {
    #[serde(rename = "metric_kind")]
    pub kind: MetricKind,
    pub objective: Objective,
}

impl MetricSpec {
    /// The spec of `event` in `e`: the primary metric (with the policy's objective, the one
    /// decisions follow), else a secondary or guardrail metric, else a binomial metric to
    /// maximize.
    pub fn of(e: &Experiment, event: &str) -> Self {
        match e.metric(event) {
            Some(m) if m.event == e.primary_metric.event => Self {
                kind: m.kind,
                objective: e.decision_objective(),
            },
            Some(m) => Self {
                kind: m.kind,
                objective: m.objective,
            },
            None => Self {
                kind: MetricKind::Binomial,
                objective: Objective::Maximize,
            },
        }
    }
}

/// One variant's figures and statistics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct VariantResult {
    pub variant: String,
    pub control: bool,
    /// Configured traffic weight.
    pub weight: f64,
    /// Assigned subjects.
    pub subjects: u64,
    /// Exposure events (event-level count).
    pub exposures: u64,
    /// Subjects who sent the exposure event.
    pub exposed_subjects: u64,
    /// Metric events counted (event-level).
    pub conversions: u64,
    /// Subjects with at least one metric event.
    pub converted_subjects: u64,
    /// converted_subjects / subjects.
    pub rate: Option<f64>,
    /// 95% equal-tailed credible interval of the rate, posterior Beta(1+converted, 1+n−converted).
    pub credible_interval: Option<[f64; 2]>,
    /// P(this variant's rate is the best) under the metric's objective.
    pub p_best: Option<f64>,
    /// Expected loss (absolute rate) of shipping this variant.
    pub expected_loss: Option<f64>,
    /// Relative lift of the rate over the control's.
    pub lift: Option<f64>,
    /// Σ of the metric's values.
    pub sum: f64,
    /// Per-subject mean of the metric's values (sum / subjects).
    pub mean: Option<f64>,
    /// Standard deviation of the per-subject values.
    pub std_dev: Option<f64>,
    /// Relative lift of the mean over the control's.
    pub mean_lift: Option<f64>,
    /// Two-sided Welch t-test p-value of this variant's mean against the control's
    /// (`sum` and `mean` metrics).
    pub welch_p_value: Option<f64>,
    /// 95% confidence interval of (this mean − control mean), Welch.
    pub welch_ci: Option<[f64; 2]>,
}

/// Sample-ratio check of the assigned subjects against the configured weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SrmView {
    pub chi_square: f64,
    pub p_value: f64,
    /// `p_value < threshold`: automatic decisions are blocked.
    pub flagged: bool,
    pub threshold: f64,
}

/// The statistics of one metric across an experiment's variants.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Analysis {
    #[serde(flatten)]
    pub metric: MetricSpec,
    /// `None` when there is nothing to test (no subjects, or fewer than two weighted arms).
    pub srm: Option<SrmView>,
    pub variants: Vec<VariantResult>,
}

/// Analyse `metric` (per-variant subject-level figures of the metric's event) and `exposures`
/// (the same for the exposure event) of experiment `e`.
pub fn analyze(
    e: &Experiment,
    spec: MetricSpec,
    metric: &[VariantCounts],
    exposures: &[VariantCounts],
) -> Analysis {
    let find = |list: &[VariantCounts], key: &str| list.iter().find(|c| c.variant == key).cloned();
    let control = e.control_index();
    let counts: Vec<VariantCounts> = e
        .variants
        .iter()
        .map(|v| {
            find(metric, &v.key).unwrap_or_else(|| VariantCounts {
                variant: v.key.clone(),
                ..VariantCounts::default()
            })
        })
        .collect();
    let rate = |c: &VariantCounts| {
        (c.subjects > 0).then(|| c.converted_subjects as f64 / c.subjects as f64)
    };
    let mean = |c: &VariantCounts| (c.subjects > 0).then(|| c.sum / c.subjects as f64);
    let summary = |c: &VariantCounts| SummaryStats::from_sums(c.subjects, c.sum, c.sum_of_squares);

    // P(best) and expected loss need every arm to have subjects.
    let arms: Vec<(u64, u64)> = counts
        .iter()
        .map(|c| (c.converted_subjects.min(c.subjects), c.subjects))
        .collect();
    let bayes = (arms.iter().all(|&(_, n)| n > 0))
        .then(|| stats::summarize(&arms, to_stats_objective(spec.objective)).ok())
        .flatten();

    let control_counts = &counts[control];
    let control_rate = rate(control_counts);
    let control_mean = mean(control_counts);
    let control_summary = summary(control_counts).ok();
    let value_metric = matches!(spec.kind, MetricKind::Sum | MetricKind::Mean);

    let variants = e
        .variants
        .iter()
        .zip(&counts)
        .enumerate()
        .map(|(i, (v, c))| {
            let is_control = i == control;
            let x = find(exposures, &v.key);
            let r = rate(c);
            let m = mean(c);
            let s = summary(c).ok();
            let welch = match (&control_summary, &s) {
                (Some(a), Some(b)) if value_metric && !is_control => {
                    stats::welch_t_test(a, b, WELCH_ALPHA).ok()
                }
                _ => None,
            };
            let relative = |value: Option<f64>, base: Option<f64>| match (value, base) {
                (Some(value), Some(base)) if base != 0.0 && !is_control => {
                    Some((value - base) / base)
                }
                _ => None,
            };
            VariantResult {
                variant: v.key.clone(),
                control: is_control,
                weight: v.weight,
                subjects: c.subjects,
                exposures: x.as_ref().map_or(0, |x| x.events),
                exposed_subjects: x.as_ref().map_or(0, |x| x.converted_subjects),
                conversions: c.events,
                converted_subjects: c.converted_subjects,
                rate: r,
                credible_interval: BetaPosterior::from_counts(
                    c.converted_subjects.min(c.subjects),
                    c.subjects,
                )
                .and_then(|p| p.credible_interval(CREDIBLE_LEVEL))
                .ok()
                .filter(|_| c.subjects > 0)
                .map(|(lo, hi)| [lo, hi]),
                p_best: bayes.as_ref().map(|b| b.prob_best[i]),
                expected_loss: bayes.as_ref().map(|b| b.expected_loss[i]),
                lift: relative(r, control_rate),
                sum: c.sum,
                mean: m,
                std_dev: s.as_ref().and_then(SummaryStats::variance).map(f64::sqrt),
                mean_lift: if value_metric {
                    relative(m, control_mean)
                } else {
                    None
                },
                welch_p_value: welch.as_ref().map(|w| w.p_value),
                welch_ci: welch.as_ref().map(|w| [w.ci.0, w.ci.1]),
            }
        })
        .collect();

    let assigned: Vec<u64> = counts.iter().map(|c| c.subjects).collect();
    let srm = stats::srm_check(&assigned, &e.weights())
        .ok()
        .filter(|r| r.df > 0 && assigned.iter().sum::<u64>() > 0)
        .map(|r| SrmView {
            chi_square: r.statistic,
            p_value: r.p_value,
            flagged: r.flagged,
            threshold: r.threshold,
        });
    Analysis {
        metric: spec,
        srm,
        variants,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use time::OffsetDateTime;
    use verdict_domain::experiment::Provided;
    use verdict_domain::{ExperimentInput, Scope};

    fn experiment(kind: &str) -> Experiment {
        let input: ExperimentInput = serde_json::from_value(json!({
            "key": "checkout",
            "variants": [{"key": "a"}, {"key": "b"}],
            "primary_metric": {"event": "purchase", "kind": kind},
        }))
        .unwrap();
        input
            .into_experiment(
                Scope::default(),
                Provided {
                    id: "exp_1".into(),
                    salt: "s".into(),
                    now: OffsetDateTime::UNIX_EPOCH,
                },
            )
            .unwrap()
    }

    fn counts(
        variant: &str,
        subjects: u64,
        converted: u64,
        sum: f64,
        sum_sq: f64,
    ) -> VariantCounts {
        VariantCounts {
            variant: variant.into(),
            subjects,
            converted_subjects: converted,
            events: converted,
            sum,
            sum_of_squares: sum_sq,
            ..VariantCounts::default()
        }
    }

    #[test]
    fn binomial_figures_carry_the_exact_bayesian_statistics() {
        let e = experiment("binomial");
        let metric = [
            counts("a", 1000, 100, 100.0, 100.0),
            counts("b", 1000, 120, 120.0, 120.0),
        ];
        let a = analyze(&e, MetricSpec::of(&e, "purchase"), &metric, &[]);
        let [va, vb] = &a.variants[..] else { panic!() };
        assert_eq!(va.rate, Some(0.1));
        assert!((vb.lift.unwrap() - 0.2).abs() < 1e-12);
        assert_eq!(va.lift, None, "the control has no lift over itself");
        // The same numbers the stats crate computes directly.
        let p = stats::prob_b_beats_a((100, 1000), (120, 1000)).unwrap();
        assert!((vb.p_best.unwrap() - p).abs() < 1e-12);
        assert!((va.p_best.unwrap() + vb.p_best.unwrap() - 1.0).abs() < 1e-12);
        let [lo, hi] = va.credible_interval.unwrap();
        assert!(lo < 0.1 && 0.1 < hi && hi - lo < 0.05);
        assert!(
            va.welch_p_value.is_none(),
            "no t-test for a binomial metric"
        );
        let srm = a.srm.unwrap();
        assert!(!srm.flagged && (srm.p_value - 1.0).abs() < 1e-12);
    }

    #[test]
    fn a_skewed_split_is_flagged_and_empty_arms_have_no_bayesian_figures() {
        let e = experiment("binomial");
        let a = analyze(
            &e,
            MetricSpec::of(&e, "purchase"),
            &[
                counts("a", 1000, 10, 0.0, 0.0),
                counts("b", 800, 9, 0.0, 0.0),
            ],
            &[],
        );
        assert!(a.srm.unwrap().flagged);
        let a = analyze(
            &e,
            MetricSpec::of(&e, "purchase"),
            &[counts("a", 10, 1, 0.0, 0.0)],
            &[],
        );
        assert_eq!(a.variants[1].subjects, 0);
        assert_eq!(a.variants[1].rate, None);
        assert_eq!(a.variants[0].p_best, None);
        assert_eq!(a.variants[1].credible_interval, None);
    }

    #[test]
    fn value_metrics_get_welch_against_the_control() {
        let e = experiment("mean");
        // a: 4 subjects with values 1, 2, 3, 4; b: 4 subjects with 2, 3, 4, 5.
        let metric = [counts("a", 4, 4, 10.0, 30.0), counts("b", 4, 4, 14.0, 54.0)];
        let a = analyze(&e, MetricSpec::of(&e, "purchase"), &metric, &[]);
        let b = &a.variants[1];
        let direct = stats::welch_t_test(
            &SummaryStats::from_values([1.0, 2.0, 3.0, 4.0]),
            &SummaryStats::from_values([2.0, 3.0, 4.0, 5.0]),
            WELCH_ALPHA,
        )
        .unwrap();
        assert!((b.welch_p_value.unwrap() - direct.p_value).abs() < 1e-12);
        assert!((b.mean_lift.unwrap() - 0.4).abs() < 1e-12);
        assert!((b.std_dev.unwrap() - (5.0f64 / 3.0).sqrt()).abs() < 1e-12);
        assert!(a.variants[0].welch_p_value.is_none());
    }

    #[test]
    fn secondary_metrics_use_their_own_kind_and_objective() {
        let mut e = experiment("binomial");
        e.secondary_metrics.push(verdict_domain::Metric::new(
            "latency",
            MetricKind::Mean,
            Objective::Minimize,
        ));
        assert_eq!(
            MetricSpec::of(&e, "latency"),
            MetricSpec {
                kind: MetricKind::Mean,
                objective: Objective::Minimize
            }
        );
        assert_eq!(MetricSpec::of(&e, "other").kind, MetricKind::Binomial);
    }
}
