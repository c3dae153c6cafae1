//! Pure results analysis: per-variant figures of one metric with the statistics an
//! experimenter reads, the same for every metric kind. The `results` endpoint calls
//! [`analyze_metric`] for each metric and [`srm`] once, on figures read from the rollups; no
//! IO here.
//!
//! # Per variant, whatever the kind
//!
//! - the **estimate** the policy compares (see [`crate::estimate`]: conversion rate, events
//!   or value per subject, value per event) with its standard error and a 95% interval:
//!   credible for rates (Beta(1 + c, 1 + n − c)), of the normal posterior `N(estimate, se²)`
//!   (flat prior) otherwise;
//! - **P(best)** and **expected loss** (in the estimate's units) under the metric's objective,
//!   and the **chance to beat the control**;
//! - the **lift** over the control, `estimate / control − 1`, with a 95% interval by the delta
//!   method (both arms' uncertainty);
//! - the **difference** from the control and its **always-valid confidence interval** at this
//!   look (level `1 − policy.alpha`): the interval the mSPRT inverts, valid at any time, however
//!   often the results are looked at (a fixed-sample interval read repeatedly is not). It uses
//!   the metric's τ (see [`crate::estimate`]); for a metric that takes τ from the control's
//!   estimate, the τ kept in the [`GuardState`] when one is passed to [`analyze_metric`], else
//!   a quarter of this look's control estimate once every variant has `min_assignments`
//!   subjects (no interval before). It is one look's interval, wider than the running
//!   intersection the policy keeps for guardrails;
//! - **Welch's t-test** against the control for `count`, `sum` and `mean` metrics, of the
//!   per-subject totals (for `mean` that compares value per subject, not the per-event ratio
//!   the estimate is: the chance to beat the control and the always-valid interval compare
//!   the ratio). Differences are taken without cancellation.
//!
//! A guardrail metric also gets each non-control variant's guardrail status at this look
//! ([`crate::guardrail`]). The SRM check comes with its degrees of freedom and the expected
//! subjects per variant.
//!
//! # Shape
//!
//! [`MetricAnalysis`] is one metric's block (its event, role, kind, objective, per-variant
//! rows and guardrail statuses); `GET …/results` lists one per metric beside the
//! experiment's SRM check ([`SrmView`]). The row fields `credible_interval`, `p_best`,
//! `expected_loss` and `lift` are of the metric's estimate; `rate` is converted subjects /
//! subjects whatever the kind.

use serde::{Deserialize, Serialize};
use verdict_domain::{
    Cap, Experiment, Margin, Metric, MetricKind, MetricRole, Objective, VariantCounts,
};
use verdict_stats::{self as stats, SummaryStats, msprt};

use crate::estimate::{self, ArmEstimate, EstimateKind, TauSource, totals_finite};
use crate::guard::{GuardState, MetricKey, tau_for};
use crate::guardrail::{self, GuardrailArm, GuardrailInput};
use crate::rules::{CREDIBLE_Z, bayes_summary, credible_interval};

/// Level of the Welch confidence interval of the difference of means.
pub const WELCH_ALPHA: f64 = 0.05;

/// Which metric is analysed, and how.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MetricSpec {
    /// The metric's event.
    pub event: String,
    /// The metric's role in the experiment; `None` for an event that is none of its metrics.
    pub role: Option<MetricRole>,
    #[serde(rename = "metric_kind")]
    pub kind: MetricKind,
    pub objective: Objective,
    /// The cap the figures were computed with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cap: Option<Cap>,
    /// The metric's configured τ.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tau: Option<f64>,
    /// Guardrails: the margin in force (configured, or the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub margin: Option<Margin>,
}

impl MetricSpec {
    /// The spec of `event` in `e`: the primary metric (with the policy's objective, the one
    /// decisions follow), else a secondary or guardrail metric, else a binomial metric to
    /// maximize without a role.
    pub fn of(e: &Experiment, event: &str) -> Self {
        match e.metric_with_role(event) {
            Some((m, role)) => Self::of_metric(e, m, role),
            None => Self {
                event: event.to_owned(),
                role: None,
                kind: MetricKind::Binomial,
                objective: Objective::Maximize,
                cap: None,
                tau: None,
                margin: None,
            },
        }
    }

    /// The spec of metric `m` with role `role` in `e`.
    pub fn of_metric(e: &Experiment, m: &Metric, role: MetricRole) -> Self {
        Self {
            event: m.event.clone(),
            role: Some(role),
            kind: m.kind,
            objective: match role {
                MetricRole::Primary => e.decision_objective(),
                _ => m.objective,
            },
            cap: m.cap,
            tau: m.tau,
            margin: (role == MetricRole::Guardrail).then(|| m.guardrail_margin()),
        }
    }

    fn metric(&self) -> Metric {
        Metric {
            cap: self.cap,
            tau: self.tau,
            margin: self.margin,
            ..Metric::new(self.event.clone(), self.kind, self.objective)
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
    /// converted_subjects / subjects, whatever the kind.
    pub rate: Option<f64>,
    /// The metric's estimate (the analysis' `estimate` says which).
    pub estimate: Option<f64>,
    /// Standard error of the estimate.
    pub std_error: Option<f64>,
    /// 95% equal-tailed interval of the estimate: credible interval of Beta(1+converted,
    /// 1+n−converted) for rates, of `N(estimate, se²)` otherwise.
    pub credible_interval: Option<[f64; 2]>,
    /// P(this variant's estimate is the best) under the metric's objective.
    pub p_best: Option<f64>,
    /// Expected loss of shipping this variant, in the estimate's units.
    pub expected_loss: Option<f64>,
    /// P(this variant is better than the control) under the objective (not for the control).
    pub chance_to_beat_control: Option<f64>,
    /// Relative lift of the estimate over the control's.
    pub lift: Option<f64>,
    /// 95% interval of `lift` (delta method).
    pub lift_interval: Option<[f64; 2]>,
    /// This estimate − the control's (not oriented by the objective).
    pub difference: Option<f64>,
    /// Always-valid confidence interval of `difference` at this look (level `1 − alpha`),
    /// valid however often it is looked at.
    pub always_valid_interval: Option<[f64; 2]>,
    /// Σ of the metric's values (capped totals when a cap applies); `null` only when the
    /// stored total is not finite (see `totals_not_finite`).
    pub sum: Option<f64>,
    /// Per-subject mean of the metric's values (sum / subjects).
    pub mean: Option<f64>,
    /// Standard deviation of the per-subject values.
    pub std_dev: Option<f64>,
    /// Relative lift of the per-subject mean over the control's (`count`, `sum`, `mean`).
    pub mean_lift: Option<f64>,
    /// Two-sided Welch t-test p-value of this variant's per-subject mean against the
    /// control's (`count`, `sum` and `mean` metrics).
    pub welch_p_value: Option<f64>,
    /// 95% confidence interval of (this per-subject mean − control's), Welch.
    pub welch_ci: Option<[f64; 2]>,
    /// This variant's stored value totals (sum, sum of squares) are not finite: they were
    /// accumulated from values beyond what ingestion now accepts (`ingest.max_abs_value`)
    /// and cannot be analysed. Its value statistics are `null` until the aggregation job
    /// recomputes the totals from the raw events without those values, which it does when
    /// they are all retained.
    #[serde(default)]
    pub totals_not_finite: bool,
}

/// Expected against observed subjects of one variant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SrmExpected {
    pub variant: String,
    pub observed: u64,
    /// Subjects expected from the configured weights.
    pub expected: f64,
}

/// Sample-ratio check of the assigned subjects against the configured weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SrmView {
    pub chi_square: f64,
    /// Degrees of freedom: variants with a positive weight − 1.
    pub df: u32,
    pub p_value: f64,
    /// `p_value < threshold`: automatic decisions are blocked.
    pub flagged: bool,
    pub threshold: f64,
    /// Per variant, in variant order.
    pub expected: Vec<SrmExpected>,
}

/// The statistics of one metric across an experiment's variants.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MetricAnalysis {
    #[serde(flatten)]
    pub spec: MetricSpec,
    /// What `estimate` is in each variant row.
    pub estimate: EstimateKind,
    /// The always-valid intervals have level `1 − alpha` (the policy's α).
    pub alpha: f64,
    /// τ² of the always-valid intervals (`None`: not set yet, no interval).
    pub interval_tau_squared: Option<f64>,
    pub interval_tau_source: TauSource,
    pub variants: Vec<VariantResult>,
    /// Guardrail metrics: each non-control variant's status at this look.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guardrail: Option<Vec<GuardrailArm>>,
    /// Some variant's stored value totals are not finite (see the variant rows): every
    /// comparison on this metric (P(best), lifts, intervals, Welch, guardrail status) is
    /// `null`, and the evaluation job decides nothing on it (its run records an error
    /// naming the variant) until the aggregation job recomputes the totals from the raw
    /// events (when retention deleted some, they stay as they are).
    #[serde(default)]
    pub totals_not_finite: bool,
}

/// The figures of every variant of `e`, in variant order (zeros for a variant without any).
fn in_variant_order(e: &Experiment, list: &[VariantCounts]) -> Vec<VariantCounts> {
    e.variants
        .iter()
        .map(|v| {
            list.iter()
                .find(|c| c.variant == v.key)
                .cloned()
                .unwrap_or_else(|| VariantCounts {
                    variant: v.key.clone(),
                    ..VariantCounts::default()
                })
        })
        .collect()
}

/// The SRM check of the subjects in `counts` (any metric's figures: each variant's subjects
/// are the same for every metric) against `e`'s weights; `None` when there is nothing to
/// test (no subjects, or fewer than two weighted arms).
pub fn srm(e: &Experiment, counts: &[VariantCounts]) -> Option<SrmView> {
    let assigned: Vec<u64> = in_variant_order(e, counts)
        .iter()
        .map(|c| c.subjects)
        .collect();
    stats::srm_check(&assigned, &e.weights())
        .ok()
        .filter(|r| r.df > 0 && assigned.iter().sum::<u64>() > 0)
        .map(|r| SrmView {
            chi_square: r.statistic,
            df: r.df,
            p_value: r.p_value,
            flagged: r.flagged,
            threshold: r.threshold,
            expected: e
                .variants
                .iter()
                .zip(&assigned)
                .zip(&r.expected_counts)
                .map(|((v, &observed), &expected)| SrmExpected {
                    variant: v.key.clone(),
                    observed,
                    expected,
                })
                .collect(),
        })
}

/// One metric's block: the per-variant statistics of the module docs. `state` is the guard
/// state the evaluate job keeps for `e` (if the caller has it): a τ taken from the control's
/// estimate and a guardrail's running intervals are then the policy's.
pub fn analyze_metric(
    e: &Experiment,
    spec: &MetricSpec,
    metric: &[VariantCounts],
    exposures: &[VariantCounts],
    state: Option<&GuardState>,
) -> MetricAnalysis {
    let control = e.control_index();
    let counts = in_variant_order(e, metric);
    let m = spec.metric();
    let kind = spec.kind;
    let estimates: Vec<Option<ArmEstimate>> =
        counts.iter().map(|c| estimate::estimate(kind, c)).collect();
    let subjects: Vec<u64> = counts.iter().map(|c| c.subjects).collect();

    // P(best) and expected loss need every arm to have subjects.
    let counts_ref: Vec<&VariantCounts> = counts.iter().collect();
    let bayes = subjects
        .iter()
        .all(|&n| n > 0)
        .then(|| bayes_summary(kind, &counts_ref, &estimates, spec.objective).ok())
        .flatten()
        .flatten();

    let key = MetricKey::of(&m);
    let kept_baseline = state.and_then(|s| match spec.role {
        Some(MetricRole::Primary) if s.metric.as_ref() == Some(&key) => s.baseline_tau,
        Some(MetricRole::Guardrail) => s.guardrail(&key).and_then(|g| g.baseline_tau),
        _ => None,
    });
    let (tau, _) = tau_for(
        &m,
        &e.policy,
        kept_baseline,
        &subjects,
        estimates[control].as_ref(),
    );
    let alpha = e.policy.alpha;

    let summary = |c: &VariantCounts| SummaryStats::from_sums(c.subjects, c.sum, c.sum_of_squares);
    let control_summary = summary(&counts[control]).ok();
    let control_estimate = estimates[control];
    let control_mean = (counts[control].subjects > 0)
        .then(|| counts[control].sum / counts[control].subjects as f64);
    let value_metric = kind != MetricKind::Binomial;

    let variants: Vec<VariantResult> = e
        .variants
        .iter()
        .zip(&counts)
        .enumerate()
        .map(|(i, (v, c))| {
            let is_control = i == control;
            let x = exposures.iter().find(|x| x.variant == v.key);
            let est = estimates[i];
            let s = summary(c).ok();
            let versus = (!is_control).then_some(()).and(control_estimate.zip(est));
            let diff = versus.and_then(|(ce, ve)| estimate::difference(&ce, &ve));
            let welch = match (&control_summary, &s) {
                (Some(a), Some(b)) if value_metric && !is_control => {
                    stats::welch_t_test(a, b, WELCH_ALPHA).ok()
                }
                _ => None,
            };
            let mean = (c.subjects > 0).then(|| c.sum / c.subjects as f64);
            VariantResult {
                variant: v.key.clone(),
                control: is_control,
                weight: v.weight,
                subjects: c.subjects,
                exposures: x.map_or(0, |x| x.events),
                exposed_subjects: x.map_or(0, |x| x.converted_subjects),
                conversions: c.events,
                converted_subjects: c.converted_subjects,
                rate: (c.subjects > 0)
                    .then(|| c.converted_subjects.min(c.subjects) as f64 / c.subjects as f64),
                estimate: est.map(|e| e.value),
                std_error: est.and_then(|e| e.std_error()),
                credible_interval: (c.subjects > 0)
                    .then(|| credible_interval(kind, c, est.as_ref()))
                    .flatten(),
                p_best: bayes.as_ref().map(|b| b.prob_best[i]),
                expected_loss: bayes.as_ref().map(|b| b.expected_loss[i]),
                chance_to_beat_control: versus.and_then(|_| {
                    chance_to_beat(
                        kind,
                        spec.objective,
                        (&counts[control], control_estimate.as_ref()),
                        (c, est.as_ref()),
                    )
                }),
                lift: versus.and_then(|(ce, ve)| {
                    (ce.value != 0.0).then(|| estimate::point_difference(&ce, &ve) / ce.value)
                }),
                lift_interval: versus.and_then(|(ce, ve)| lift_interval(&ce, &ve)),
                difference: versus.map(|(ce, ve)| estimate::point_difference(&ce, &ve)),
                always_valid_interval: diff.zip(tau.tau_squared).and_then(|(d, t)| {
                    msprt::always_valid_interval(d.theta_hat, d.variance, t, alpha)
                        .ok()
                        .map(|(lo, hi)| [lo, hi])
                }),
                sum: Some(c.sum),
                mean,
                std_dev: s.as_ref().and_then(SummaryStats::variance).map(f64::sqrt),
                mean_lift: match (mean, control_mean) {
                    (Some(m), Some(base)) if value_metric && !is_control && base != 0.0 => {
                        Some((m - base) / base)
                    }
                    _ => None,
                },
                welch_p_value: welch.as_ref().map(|w| w.p_value),
                welch_ci: welch.as_ref().map(|w| [w.ci.0, w.ci.1]),
                totals_not_finite: !totals_finite(c),
            }
        })
        .collect();
    let totals_not_finite = counts.iter().any(|c| !totals_finite(c));
    let variants = if totals_not_finite {
        variants.into_iter().map(withhold_values).collect()
    } else {
        variants
    };

    let guardrail = (spec.role == Some(MetricRole::Guardrail) && !totals_not_finite).then(|| {
        let names: Vec<&str> = e.variants.iter().map(|v| v.key.as_str()).collect();
        let input = GuardrailInput {
            metric: &m,
            arms: &counts,
        };
        let prev = state.and_then(|s| s.guardrail(&key));
        guardrail::assess(&input, &e.policy, &names, control, prev)
            .0
            .arms
    });

    MetricAnalysis {
        spec: spec.clone(),
        estimate: EstimateKind::of(kind),
        alpha,
        interval_tau_squared: tau.tau_squared,
        interval_tau_source: tau.source,
        variants,
        guardrail,
        totals_not_finite,
    }
}

/// A row of a metric with non-finite totals: no comparison holds, and the flagged
/// variant's own value figures are withheld (counts of subjects and events still hold).
fn withhold_values(mut r: VariantResult) -> VariantResult {
    r.p_best = None;
    r.expected_loss = None;
    r.chance_to_beat_control = None;
    r.lift = None;
    r.lift_interval = None;
    r.difference = None;
    r.always_valid_interval = None;
    r.mean_lift = None;
    r.welch_p_value = None;
    r.welch_ci = None;
    if r.totals_not_finite {
        r.estimate = None;
        r.std_error = None;
        r.credible_interval = None;
        r.sum = None;
        r.mean = None;
        r.std_dev = None;
    }
    r
}

/// P(the variant is better than the control) under `objective`.
fn chance_to_beat(
    kind: MetricKind,
    objective: Objective,
    (control_counts, control): (&VariantCounts, Option<&ArmEstimate>),
    (arm_counts, arm): (&VariantCounts, Option<&ArmEstimate>),
) -> Option<f64> {
    // Better means P(X_high > X_low) with:
    let ((high_counts, high), (low_counts, low)) = match objective {
        Objective::Maximize => ((arm_counts, arm), (control_counts, control)),
        Objective::Minimize => ((control_counts, control), (arm_counts, arm)),
    };
    match kind {
        MetricKind::Binomial => stats::prob_b_beats_a(
            (low_counts.converted_subjects, low_counts.subjects),
            (high_counts.converted_subjects, high_counts.subjects),
        )
        .ok(),
        _ => stats::prob_beats_control_normal(low?.posterior()?, high?.posterior()?).ok(),
    }
}

/// 95% interval of `arm / control − 1` by the delta method:
/// `se² = var_arm / c² + arm² var_c / c⁴`.
fn lift_interval(control: &ArmEstimate, arm: &ArmEstimate) -> Option<[f64; 2]> {
    let c = control.value;
    if c == 0.0 {
        return None;
    }
    let lift = estimate::point_difference(control, arm) / c;
    let se =
        (arm.variance? / (c * c) + arm.value * arm.value * control.variance? / c.powi(4)).sqrt();
    se.is_finite()
        .then_some([lift - CREDIBLE_Z * se, lift + CREDIBLE_Z * se])
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use time::OffsetDateTime;
    use verdict_domain::experiment::Provided;
    use verdict_domain::{ExperimentInput, Scope};

    /// One metric's block and the SRM check, as the results endpoint serves them together.
    struct Read {
        metric: MetricAnalysis,
        srm: Option<SrmView>,
    }

    fn analyze(
        e: &Experiment,
        spec: MetricSpec,
        metric: &[VariantCounts],
        exposures: &[VariantCounts],
        state: Option<&GuardState>,
    ) -> Read {
        Read {
            metric: analyze_metric(e, &spec, metric, exposures, state),
            srm: srm(e, metric),
        }
    }

    fn experiment_with(v: serde_json::Value) -> Experiment {
        let mut input = json!({
            "key": "checkout",
            "variants": [{"key": "a"}, {"key": "b"}],
        });
        for (k, x) in v.as_object().unwrap() {
            input[k] = x.clone();
        }
        let input: ExperimentInput = serde_json::from_value(input).unwrap();
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

    fn experiment(kind: &str) -> Experiment {
        experiment_with(json!({"primary_metric": {"event": "purchase", "kind": kind}}))
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
            sum_events_squared: converted,
            sum_events_value: sum,
        }
    }

    #[test]
    fn binomial_figures_carry_the_exact_bayesian_statistics() {
        let e = experiment("binomial");
        let metric = [
            counts("a", 1000, 100, 100.0, 100.0),
            counts("b", 1000, 120, 120.0, 120.0),
        ];
        let a = analyze(&e, MetricSpec::of(&e, "purchase"), &metric, &[], None);
        assert_eq!(a.metric.estimate, EstimateKind::ConversionRate);
        assert_eq!(a.metric.spec.role, Some(MetricRole::Primary));
        let [va, vb] = &a.metric.variants[..] else {
            panic!()
        };
        assert_eq!(va.rate, Some(0.1));
        assert_eq!(va.estimate, Some(0.1));
        assert!((vb.lift.unwrap() - 0.2).abs() < 1e-12);
        assert_eq!(va.lift, None, "the control has no lift over itself");
        // The same numbers the stats crate computes directly.
        let p = stats::prob_b_beats_a((100, 1000), (120, 1000)).unwrap();
        assert!((vb.p_best.unwrap() - p).abs() < 1e-12);
        assert_eq!(vb.chance_to_beat_control, Some(p));
        assert!((va.p_best.unwrap() + vb.p_best.unwrap() - 1.0).abs() < 1e-12);
        let [lo, hi] = va.credible_interval.unwrap();
        assert!(lo < 0.1 && 0.1 < hi && hi - lo < 0.05);
        assert!(
            va.welch_p_value.is_none(),
            "no t-test for a binomial metric"
        );
        // Always valid, so wider than the 95% fixed-sample interval of the difference.
        let [alo, ahi] = vb.always_valid_interval.unwrap();
        let se = (0.1 * 0.9 / 1000.0 + 0.12 * 0.88 / 1000.0_f64).sqrt();
        assert!(
            alo < 0.02 - 1.96 * se && ahi > 0.02 + 1.96 * se,
            "{alo} {ahi}"
        );
        let [llo, lhi] = vb.lift_interval.unwrap();
        assert!(llo < 0.2 && 0.2 < lhi);
        let srm = a.srm.unwrap();
        assert!(!srm.flagged && (srm.p_value - 1.0).abs() < 1e-12);
        assert_eq!(srm.df, 1);
        assert_eq!(srm.expected[1].expected, 1000.0);
    }

    #[test]
    fn non_finite_totals_are_flagged_and_no_figure_is_non_finite() {
        let e = experiment("sum");
        let metric = [
            counts("a", 1000, 100, 5000.0, 400_000.0),
            counts("b", 1000, 120, 1.5e154, f64::INFINITY),
        ];
        let a = analyze(&e, MetricSpec::of(&e, "purchase"), &metric, &[], None);
        assert!(a.metric.totals_not_finite);
        let [va, vb] = &a.metric.variants[..] else {
            panic!()
        };
        assert!(!va.totals_not_finite && vb.totals_not_finite);
        // The finite arm keeps its own figures; nothing compares the two.
        assert_eq!(va.sum, Some(5000.0));
        assert!(va.estimate.is_some() && va.std_dev.is_some());
        assert_eq!(
            (vb.sum, vb.mean, vb.std_dev, vb.estimate),
            (None, None, None, None)
        );
        assert_eq!((vb.p_best, vb.lift, vb.welch_p_value), (None, None, None));
        assert_eq!(vb.subjects, 1000);
        // Every number served is finite (serde_json would write a non-finite one as null).
        fn all_finite(v: &serde_json::Value) -> bool {
            match v {
                serde_json::Value::Number(n) => n.as_f64().is_some_and(f64::is_finite),
                serde_json::Value::Array(a) => a.iter().all(all_finite),
                serde_json::Value::Object(o) => o.values().all(all_finite),
                _ => true,
            }
        }
        let row = serde_json::to_value(vb).unwrap();
        assert!(all_finite(&row) && row["sum"].is_null(), "{row}");
        assert_eq!(row["totals_not_finite"], true);

        let fine = analyze(&e, MetricSpec::of(&e, "purchase"), &metric[..1], &[], None);
        assert!(!fine.metric.totals_not_finite);
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
            None,
        );
        let srm = a.srm.unwrap();
        assert!(srm.flagged);
        assert_eq!(srm.expected[0].observed, 1000);
        assert_eq!(srm.expected[0].expected, 900.0);
        let a = analyze(
            &e,
            MetricSpec::of(&e, "purchase"),
            &[counts("a", 10, 1, 0.0, 0.0)],
            &[],
            None,
        );
        let v = &a.metric.variants;
        assert_eq!(v[1].subjects, 0);
        assert_eq!(v[1].rate, None);
        assert_eq!(v[0].p_best, None);
        assert_eq!(v[1].credible_interval, None);
    }

    #[test]
    fn value_metrics_get_welch_against_the_control() {
        let e = experiment("sum");
        // a: 4 subjects with values 1, 2, 3, 4; b: 4 subjects with 2, 3, 4, 5.
        let metric = [counts("a", 4, 4, 10.0, 30.0), counts("b", 4, 4, 14.0, 54.0)];
        let a = analyze(&e, MetricSpec::of(&e, "purchase"), &metric, &[], None);
        let b = &a.metric.variants[1];
        let direct = stats::welch_t_test(
            &SummaryStats::from_values([1.0, 2.0, 3.0, 4.0]),
            &SummaryStats::from_values([2.0, 3.0, 4.0, 5.0]),
            WELCH_ALPHA,
        )
        .unwrap();
        assert!((b.welch_p_value.unwrap() - direct.p_value).abs() < 1e-12);
        assert!((b.mean_lift.unwrap() - 0.4).abs() < 1e-12);
        assert!((b.std_dev.unwrap() - (5.0f64 / 3.0).sqrt()).abs() < 1e-12);
        assert!(a.metric.variants[0].welch_p_value.is_none());
    }

    #[test]
    fn a_revenue_metric_is_analysed_by_its_mean_per_subject() {
        let e = experiment("sum");
        // Equal conversion (10%), b's orders worth twice as much.
        let metric = [
            counts("a", 10_000, 1_000, 50_000.0, 1_000.0 * 2_600.0),
            counts("b", 10_000, 1_000, 100_000.0, 1_000.0 * 10_400.0),
        ];
        let a = analyze(&e, MetricSpec::of(&e, "purchase"), &metric, &[], None);
        assert_eq!(a.metric.estimate, EstimateKind::ValuePerSubject);
        let [va, vb] = &a.metric.variants[..] else {
            panic!()
        };
        assert_eq!(va.rate, vb.rate, "the same conversion rate");
        assert_eq!((va.estimate, vb.estimate), (Some(5.0), Some(10.0)));
        assert!(vb.p_best.unwrap() > 0.999 && vb.chance_to_beat_control.unwrap() > 0.999);
        assert!((vb.lift.unwrap() - 1.0).abs() < 1e-12);
        assert_eq!(vb.difference, Some(5.0));
        // τ is a quarter of the control's value per subject, taken at this look.
        assert_eq!(a.metric.interval_tau_source, TauSource::ControlBaseline);
        assert_eq!(a.metric.interval_tau_squared, Some(1.25 * 1.25));
        let [lo, hi] = vb.always_valid_interval.unwrap();
        assert!(lo > 0.0 && lo < 5.0 && hi > 5.0);
        let [clo, chi] = va.credible_interval.unwrap();
        assert!(clo < 5.0 && 5.0 < chi);
    }

    #[test]
    fn a_latency_metric_to_minimize_favours_the_faster_variant() {
        let e = experiment_with(json!({"primary_metric":
            {"event": "latency", "kind": "mean", "objective": "minimize", "tau": 10.0}}));
        // Two events per subject, every event 200 ms in a and 190 ms in b, ±10 ms per subject.
        let arm = |variant: &str, ms: f64| {
            let mut c = VariantCounts {
                variant: variant.into(),
                ..VariantCounts::default()
            };
            for i in 0..1000 {
                let total = 2.0 * (ms + if i % 2 == 0 { 10.0 } else { -10.0 });
                c.subjects += 1;
                c.converted_subjects += 1;
                c.events += 2;
                c.sum += total;
                c.sum_of_squares += total * total;
                c.sum_events_squared += 4;
                c.sum_events_value += 2.0 * total;
            }
            c
        };
        let a = analyze(
            &e,
            MetricSpec::of(&e, "latency"),
            &[arm("a", 200.0), arm("b", 190.0)],
            &[],
            None,
        );
        assert_eq!(a.metric.estimate, EstimateKind::ValuePerEvent);
        assert_eq!(a.metric.interval_tau_source, TauSource::Metric);
        let vb = &a.metric.variants[1];
        assert_eq!(vb.estimate, Some(190.0));
        assert_eq!(vb.difference, Some(-10.0));
        assert!(vb.p_best.unwrap() > 0.999);
        assert!(vb.chance_to_beat_control.unwrap() > 0.999);
        assert!(a.metric.variants[0].expected_loss.unwrap() > 9.0);
    }

    #[test]
    fn a_guardrail_reports_each_variants_status() {
        let e = experiment_with(json!({
            "guardrail_metrics": [{"event": "errors", "objective": "minimize"}]}));
        let spec = MetricSpec::of(&e, "errors");
        assert_eq!(spec.role, Some(MetricRole::Guardrail));
        assert_eq!(spec.margin, Some(Margin::Relative(0.2)));
        // 5% vs 8% errors on 20,000 subjects each: credibly worse.
        let metric = [
            counts("a", 20_000, 1_000, 1_000.0, 1_000.0),
            counts("b", 20_000, 1_600, 1_600.0, 1_600.0),
        ];
        let a = analyze(&e, spec, &metric, &[], None);
        let g = a.metric.guardrail.unwrap();
        assert_eq!(g.len(), 1);
        assert_eq!(g[0].variant, "b");
        assert_eq!(g[0].status, crate::GuardrailStatus::CrediblyWorse);
        assert!(g[0].figures.p_worse.unwrap() > 0.999);
        assert!(
            g[0].figures.difference.unwrap() < 0.0,
            "oriented: worse is negative"
        );
        // A metric that is not a guardrail has no statuses.
        let e = experiment("binomial");
        let a = analyze(&e, MetricSpec::of(&e, "purchase"), &metric, &[], None);
        assert!(a.metric.guardrail.is_none());
    }

    #[test]
    fn secondary_metrics_use_their_own_kind_and_objective() {
        let mut e = experiment("binomial");
        e.secondary_metrics.push(Metric::new(
            "latency",
            MetricKind::Mean,
            Objective::Minimize,
        ));
        let spec = MetricSpec::of(&e, "latency");
        assert_eq!(
            (spec.kind, spec.objective, spec.role),
            (
                MetricKind::Mean,
                Objective::Minimize,
                Some(MetricRole::Secondary)
            )
        );
        let other = MetricSpec::of(&e, "other");
        assert_eq!((other.kind, other.role), (MetricKind::Binomial, None));
    }

    #[test]
    fn the_json_keeps_the_familiar_fields() {
        let e = experiment("binomial");
        let metric = [
            counts("a", 1000, 100, 100.0, 100.0),
            counts("b", 1000, 120, 120.0, 120.0),
        ];
        let a = analyze(&e, MetricSpec::of(&e, "purchase"), &metric, &[], None);
        let json = serde_json::to_value(&a.metric).unwrap();
        assert_eq!(json["metric_kind"], "binomial");
        assert_eq!(json["objective"], "maximize");
        assert_eq!(json["role"], "primary");
        assert_eq!(json["event"], "purchase");
        assert_eq!(json["estimate"], "conversion_rate");
        for field in [
            "rate",
            "credible_interval",
            "p_best",
            "expected_loss",
            "subjects",
        ] {
            assert!(!json["variants"][0][field].is_null(), "{field}: {json}");
        }
        assert!(serde_json::to_value(&a.srm).unwrap()["p_value"].is_f64());
        let back: MetricAnalysis = serde_json::from_value(json).unwrap();
        assert_eq!(back.variants.len(), 2);
    }
}
