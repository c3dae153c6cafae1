//! The policy decides on the primary metric of every kind, keeps τ once taken, and lets
//! guardrail metrics block: exact cases and properties.

use proptest::prelude::*;
use verdict_domain::{
    Margin, Metric, MetricKind, Objective, StatMethod, VariantCounts, WinnerPolicy,
};
use verdict_policy::{
    ArmFigures, Blocker, EstimateKind, Evaluation, EvaluationInput, GuardState, GuardrailCondition,
    GuardrailInput, GuardrailStatus, NeedEstimate, TauSource, evaluate,
};

/// Figures of `times` repetitions of `pattern`, each entry one subject's (events, total).
fn repeated(variant: &str, pattern: &[(u64, f64)], times: u64) -> VariantCounts {
    let mut c = VariantCounts {
        variant: variant.into(),
        ..VariantCounts::default()
    };
    for &(n, total) in pattern {
        c.subjects += times;
        c.converted_subjects += times * u64::from(n > 0);
        c.events += times * n;
        c.sum += times as f64 * total;
        c.sum_of_squares += times as f64 * total * total;
        c.sum_events_squared += times * n * n;
        c.sum_events_value += times as f64 * n as f64 * total;
    }
    c
}

/// `converted` of `subjects` with one event of value 1 each.
fn rate(variant: &str, subjects: u64, converted: u64) -> VariantCounts {
    ArmFigures::binomial(variant, 0.5, subjects, converted).counts
}

fn metric(event: &str, kind: MetricKind, objective: Objective) -> Metric {
    Metric::new(event, kind, objective)
}

fn arms(counts: &[VariantCounts]) -> Vec<ArmFigures> {
    let w = 1.0 / counts.len() as f64;
    counts
        .iter()
        .map(|c| ArmFigures::new(c.variant.clone(), w, c.clone()))
        .collect()
}

struct Look<'a> {
    policy: &'a WinnerPolicy,
    metric: &'a Metric,
    guardrails: &'a [GuardrailInput<'a>],
}

impl Look<'_> {
    fn at(&self, counts: &[VariantCounts], guard: &GuardState) -> Evaluation {
        evaluate(&EvaluationInput {
            policy: self.policy,
            metric: self.metric,
            objective: self.metric.objective,
            arms: &arms(counts),
            control: 0,
            elapsed: time::Duration::days(7),
            guard,
            guardrails: self.guardrails,
        })
        .expect("valid input")
    }
}

fn policy(stat_method: StatMethod) -> WinnerPolicy {
    WinnerPolicy {
        stat_method,
        ..WinnerPolicy::default()
    }
}

const BOTH: [StatMethod; 2] = [StatMethod::SimpleRate, StatMethod::BayesianBeta];

fn codes(e: &Evaluation) -> Vec<&'static str> {
    e.verdict.blockers().iter().map(Blocker::code).collect()
}

/// 20,000 subjects per arm, 5% buy once: orders of 30 or 70 in `a` (mean 50), of 50 or 90
/// in `b` (mean 70). Revenue per subject 2.5 vs 3.5, z ≈ 7.
fn revenue() -> [VariantCounts; 2] {
    let shape = |low: f64, high: f64| [(1, low), (1, high), (0, 0.0)];
    let mut a = repeated("a", &shape(30.0, 70.0)[..2], 500);
    let mut b = repeated("b", &shape(50.0, 90.0)[..2], 500);
    for c in [&mut a, &mut b] {
        c.subjects += 19_000;
    }
    [a, b]
}

#[test]
fn a_revenue_experiment_decides_for_more_revenue_per_subject_at_equal_conversion_rates() {
    let counts = revenue();
    assert_eq!(counts[0].converted_subjects, counts[1].converted_subjects);
    let sum = metric("purchase", MetricKind::Sum, Objective::Maximize);
    for method in BOTH {
        let p = policy(method);
        let look = Look {
            policy: &p,
            metric: &sum,
            guardrails: &[],
        };
        let e = look.at(&counts, &GuardState::default());
        assert_eq!(e.verdict.winner(), Some("b"), "{method:?}: {:?}", e.verdict);
        assert_eq!(e.estimate, EstimateKind::ValuePerSubject);
        assert!(
            (e.delta.unwrap() - 1.0).abs() < 1e-12,
            "in revenue per subject"
        );
        assert_eq!(e.arms[1].estimate, Some(3.5));
        assert_eq!(e.peeking_guard.tau_source, TauSource::ControlBaseline);
        assert_eq!(e.peeking_guard.tau_squared, Some(0.625 * 0.625));
        let total: f64 = e.arms.iter().map(|a| a.prob_best.unwrap()).sum();
        assert!((total - 1.0).abs() < 1e-12);
    }
    // The same figures read as conversions: equal rates, no decision.
    let conversion = metric("purchase", MetricKind::Binomial, Objective::Maximize);
    let p = policy(StatMethod::BayesianBeta);
    let e = Look {
        policy: &p,
        metric: &conversion,
        guardrails: &[],
    }
    .at(&counts, &GuardState::default());
    assert_eq!(e.verdict.winner(), None);
    assert!(codes(&e).contains(&"no_lead"), "{:?}", codes(&e));
}

/// 5,000 subjects per arm with 2 events each; every event takes `ms` ± 20 (per subject).
fn latency(variant: &str, ms: f64) -> VariantCounts {
    repeated(
        variant,
        &[(2, 2.0 * (ms - 20.0)), (2, 2.0 * (ms + 20.0))],
        2_500,
    )
}

#[test]
fn a_latency_experiment_to_minimize_decides_for_the_faster_arm() {
    let mean = metric("latency", MetricKind::Mean, Objective::Minimize);
    for method in BOTH {
        let p = policy(method);
        let look = Look {
            policy: &p,
            metric: &mean,
            guardrails: &[],
        };
        // b is 5% faster.
        let e = look.at(
            &[latency("a", 200.0), latency("b", 190.0)],
            &GuardState::default(),
        );
        assert_eq!(e.verdict.winner(), Some("b"), "{method:?}: {:?}", e.verdict);
        assert_eq!(e.estimate, EstimateKind::ValuePerEvent);
        assert_eq!(e.arms[1].estimate, Some(190.0));
        assert!(
            (e.delta.unwrap() - 10.0).abs() < 1e-9,
            "oriented: positive = better"
        );
        // The slower arm as treatment: the control is the candidate and keeps the status quo.
        let e = look.at(
            &[latency("a", 190.0), latency("b", 200.0)],
            &GuardState::default(),
        );
        assert_eq!(e.candidate, "a", "{method:?}");
    }
}

#[test]
fn a_count_metric_compares_events_per_subject() {
    let count = metric("pageview", MetricKind::Count, Objective::Maximize);
    let p = policy(StatMethod::BayesianBeta);
    let look = Look {
        policy: &p,
        metric: &count,
        guardrails: &[],
    };
    // Everyone converts; b's subjects view one page more on average.
    let a = repeated("a", &[(1, 1.0), (3, 3.0)], 5_000);
    let b = repeated("b", &[(2, 2.0), (4, 4.0)], 5_000);
    let e = look.at(&[a, b], &GuardState::default());
    assert_eq!(e.verdict.winner(), Some("b"), "{:?}", e.verdict);
    assert_eq!(e.estimate, EstimateKind::EventsPerSubject);
    assert_eq!(
        (e.arms[0].estimate, e.arms[1].estimate),
        (Some(2.0), Some(3.0))
    );
}

#[test]
fn an_arm_without_events_has_no_value_per_event_and_blocks_with_no_estimate() {
    let mean = metric("latency", MetricKind::Mean, Objective::Minimize);
    let p = policy(StatMethod::BayesianBeta);
    let look = Look {
        policy: &p,
        metric: &mean,
        guardrails: &[],
    };
    let silent = VariantCounts {
        variant: "b".into(),
        subjects: 5_000,
        ..VariantCounts::default()
    };
    let e = look.at(&[latency("a", 200.0), silent], &GuardState::default());
    assert_eq!(
        e.verdict.blockers()[0],
        Blocker::NoEstimate {
            variants: vec!["b".into()],
            estimate: EstimateKind::ValuePerEvent
        }
    );
    assert_eq!(e.arms[1].estimate, None);
    assert_eq!(
        e.arms[0].prob_best, None,
        "no posterior for b, so no P(best)"
    );
    assert!(!e.verdict.blockers()[0].to_string().is_empty());
}

#[test]
fn the_expected_loss_of_a_value_metric_is_relative_to_the_control() {
    // Revenue in cents instead of currency units: the same decision.
    let cents = |c: &VariantCounts| VariantCounts {
        sum: c.sum * 100.0,
        sum_of_squares: c.sum_of_squares * 1e4,
        sum_events_value: c.sum_events_value * 100.0,
        ..c.clone()
    };
    let units = revenue();
    let in_cents = [cents(&units[0]), cents(&units[1])];
    let sum = metric("purchase", MetricKind::Sum, Objective::Maximize);
    let p = WinnerPolicy {
        peeking_guard: false,
        ..policy(StatMethod::BayesianBeta)
    };
    let look = Look {
        policy: &p,
        metric: &sum,
        guardrails: &[],
    };
    let a = look.at(&units, &GuardState::default());
    let b = look.at(&in_cents, &GuardState::default());
    assert_eq!(a.verdict.winner(), Some("b"));
    assert_eq!(b.verdict.winner(), Some("b"));
    // A strict threshold blocks both, naming the relative loss.
    let strict = WinnerPolicy {
        max_expected_loss: 1e-20,
        ..p.clone()
    };
    let e = Look {
        policy: &strict,
        metric: &sum,
        guardrails: &[],
    }
    .at(&in_cents, &GuardState::default());
    assert!(matches!(
        e.verdict.blockers(),
        [Blocker::ExpectedLoss { relative_expected_loss: Some(r), expected_loss, .. }]
            if (r - expected_loss / 250.0).abs() <= 1e-12 * r
    ));
}

#[test]
fn tau_is_taken_once_from_the_control_and_never_re_estimated() {
    let sum = metric("purchase", MetricKind::Sum, Objective::Maximize);
    let p = WinnerPolicy {
        min_assignments: 1_000,
        ..policy(StatMethod::SimpleRate)
    };
    let look = Look {
        policy: &p,
        metric: &sum,
        guardrails: &[],
    };
    let arm = |variant: &str, buyers: u64, value: f64, subjects: u64| {
        let mut c = repeated(variant, &[(1, value)], buyers);
        c.subjects = subjects;
        c
    };
    // Look 1: 500 subjects per arm, fewer than min_assignments: τ waits, the guard cannot
    // reject even an enormous difference.
    let first = look.at(
        &[arm("a", 50, 40.0, 500), arm("b", 100, 40.0, 500)],
        &GuardState::default(),
    );
    assert_eq!(first.peeking_guard.tau_source, TauSource::Pending);
    assert_eq!(first.peeking_guard.tau_squared, None);
    assert_eq!(first.guard_state.baseline_tau, None);
    assert!(first.guard_state.pairs.is_empty());
    assert!(matches!(
        first.verdict.blockers().last(),
        Some(Blocker::PeekingGuard {
            tau_squared: None,
            ..
        })
    ));
    // Look 2: enough subjects; the control's value per subject is 4: τ = 1.
    let second = look.at(
        &[arm("a", 100, 40.0, 1_000), arm("b", 200, 40.0, 1_000)],
        &first.guard_state,
    );
    assert_eq!(second.guard_state.baseline_tau, Some(1.0));
    assert_eq!(second.peeking_guard.tau_source, TauSource::ControlBaseline);
    assert_eq!(second.verdict.winner(), Some("b"));
    // Look 3: the control's level doubles; τ stays what it was.
    let third = look.at(
        &[arm("a", 200, 40.0, 1_000), arm("b", 300, 40.0, 1_000)],
        &second.guard_state,
    );
    assert_eq!(third.guard_state.baseline_tau, Some(1.0));
    assert_eq!(third.peeking_guard.tau_squared, Some(1.0));
    // The maxima count the looks folded into them: not the first, which had no τ.
    assert_eq!(third.guard_state.looks, 2);
    // A configured τ wins over the kept one.
    let with_tau = Metric {
        tau: Some(0.5),
        ..sum.clone()
    };
    let e = Look {
        policy: &p,
        metric: &with_tau,
        guardrails: &[],
    }
    .at(
        &[arm("a", 200, 40.0, 1_000), arm("b", 300, 40.0, 1_000)],
        &third.guard_state,
    );
    assert_eq!(e.peeking_guard.tau_source, TauSource::Metric);
    assert_eq!(e.peeking_guard.tau_squared, Some(0.25));
    assert_eq!(e.guard_state.looks, 1, "another τ restarts the maxima");
}

#[test]
fn a_binomial_metric_tau_overrides_the_policys_tau_squared() {
    let p = WinnerPolicy {
        tau_squared: Some(4e-4),
        ..policy(StatMethod::SimpleRate)
    };
    let counts = [rate("a", 10_000, 1_000), rate("b", 10_000, 1_300)];
    let plain = metric("conversion", MetricKind::Binomial, Objective::Maximize);
    let e = Look {
        policy: &p,
        metric: &plain,
        guardrails: &[],
    }
    .at(&counts, &GuardState::default());
    assert_eq!(
        (e.peeking_guard.tau_squared, e.peeking_guard.tau_source),
        (Some(4e-4), TauSource::Policy)
    );
    let tuned = Metric {
        tau: Some(0.02),
        ..plain
    };
    let e = Look {
        policy: &p,
        metric: &tuned,
        guardrails: &[],
    }
    .at(&counts, &GuardState::default());
    assert_eq!(e.peeking_guard.tau_source, TauSource::Metric);
    assert!((e.peeking_guard.tau_squared.unwrap() - 4e-4).abs() < 1e-18);
}

#[test]
fn a_guard_state_persisted_before_metric_kinds_still_loads_and_carries_on_for_rates() {
    let old = r#"{"tau_squared":0.0001,"looks":3,
                  "pairs":[{"higher":"b","lower":"a","max_log_lambda":3.5}]}"#;
    let state: GuardState = serde_json::from_str(old).unwrap();
    assert_eq!(state.metric, None);
    assert!(state.guardrails.is_empty());
    let p = policy(StatMethod::SimpleRate);
    let conversion = metric("conversion", MetricKind::Binomial, Objective::Maximize);
    // A small lead for b (Λ ≈ 1 at this look) is certified by the persisted maximum.
    let e = Look {
        policy: &p,
        metric: &conversion,
        guardrails: &[],
    }
    .at(&[rate("a", 1_000, 100), rate("b", 1_000, 101)], &state);
    assert_eq!(e.guard_state.looks, 4);
    assert_eq!(e.guard_state.max_log_lambda("b", "a"), Some(3.5));
    assert_eq!(e.verdict.winner(), Some("b"));
    // The same state under a revenue metric is another statistic: it restarts.
    let sum = metric("revenue", MetricKind::Sum, Objective::Maximize);
    let e = Look {
        policy: &p,
        metric: &sum,
        guardrails: &[],
    }
    .at(&revenue(), &state);
    assert_eq!(e.guard_state.looks, 1);
    assert!(e.guard_state.max_log_lambda("b", "a").unwrap() > 20.0);
    assert_ne!(e.guard_state.max_log_lambda("b", "a"), Some(3.5));
    // And the new state round-trips (to the last digit JSON keeps).
    let json = serde_json::to_string(&e.guard_state).unwrap();
    let back: GuardState = serde_json::from_str(&json).unwrap();
    assert_eq!(back.metric, e.guard_state.metric);
    assert_eq!(back.baseline_tau, Some(0.625));
    assert_eq!(back.looks, 1);
}

/// 10% vs 13% on 20,000 subjects each: a clear primary winner.
fn clear_primary() -> [VariantCounts; 2] {
    [rate("a", 20_000, 2_000), rate("b", 20_000, 2_600)]
}

#[test]
fn a_candidate_credibly_worse_on_a_guardrail_is_blocked_and_the_blocker_names_the_metric() {
    let primary = metric("purchase", MetricKind::Binomial, Objective::Maximize);
    let errors = metric("errors", MetricKind::Binomial, Objective::Minimize);
    // 5% vs 6.5% errors.
    let figures = [rate("a", 20_000, 1_000), rate("b", 20_000, 1_300)];
    let guardrails = [GuardrailInput {
        metric: &errors,
        arms: &figures,
    }];
    for method in BOTH {
        let p = policy(method);
        let e = Look {
            policy: &p,
            metric: &primary,
            guardrails: &guardrails,
        }
        .at(&clear_primary(), &GuardState::default());
        assert_eq!(codes(&e), ["guardrail"], "{method:?}");
        let Blocker::Guardrail {
            metric,
            variant,
            condition,
            figures,
        } = &e.verdict.blockers()[0]
        else {
            unreachable!()
        };
        assert_eq!((metric.as_str(), variant.as_str()), ("errors", "b"));
        assert_eq!(*condition, GuardrailCondition::CrediblyWorse);
        assert!(figures.p_worse.unwrap() > 0.999_999);
        assert!(
            (figures.difference.unwrap() + 0.015).abs() < 1e-12,
            "oriented"
        );
        assert_eq!(figures.control_estimate, Some(0.05));
        assert!((figures.margin.unwrap() - 0.01).abs() < 1e-15, "20% of 5%");
        let [lo, hi] = figures.interval.unwrap();
        assert!(lo < -0.015 && hi < 0.0, "always valid, entirely below 0");
        let text = e.verdict.blockers()[0].to_string();
        assert!(
            text.contains("errors") && text.contains("credibly worse"),
            "{text}"
        );
        assert_eq!(
            e.guardrails[0].arms[0].status,
            GuardrailStatus::CrediblyWorse
        );
    }
}

#[test]
fn non_inferiority_must_be_shown_within_the_margin_before_a_decision() {
    let primary = metric("purchase", MetricKind::Binomial, Objective::Maximize);
    let errors = metric("errors", MetricKind::Binomial, Objective::Minimize);
    let p = policy(StatMethod::BayesianBeta);
    let at = |subjects: u64, margin: Option<Margin>| {
        let errors = Metric {
            margin,
            ..errors.clone()
        };
        // Equal error rates (5%), a clear primary winner.
        let figures = [
            rate("a", subjects, subjects / 20),
            rate("b", subjects, subjects / 20),
        ];
        let guardrails = [GuardrailInput {
            metric: &errors,
            arms: &figures,
        }];
        let primary_figures = [
            rate("a", subjects, subjects / 10),
            rate("b", subjects, subjects * 13 / 100),
        ];
        Look {
            policy: &p,
            metric: &primary,
            guardrails: &guardrails,
        }
        .at(&primary_figures, &GuardState::default())
    };
    // 5,000 per arm: the always-valid interval (≈ ±0.012) still admits more than a 0.01
    // degradation.
    let early = at(5_000, None);
    assert_eq!(codes(&early), ["guardrail"]);
    assert!(matches!(
        &early.verdict.blockers()[0],
        Blocker::Guardrail {
            condition: GuardrailCondition::NonInferiorityNotShown,
            ..
        }
    ));
    let need = early.subjects_needed();
    let NeedEstimate::PerArm {
        subjects_per_arm, ..
    } = need[0].estimate
    else {
        panic!("{need:?}")
    };
    assert_eq!(need[0].metric.as_deref(), Some("errors"));
    // At the projected size, with the same (equal) rates, non-inferiority is shown.
    let projected = subjects_per_arm.div_ceil(100) * 100;
    assert_eq!(at(projected, None).verdict.winner(), Some("b"));
    // A wider margin is shown earlier; at 100,000 per arm the default margin is shown too.
    assert_eq!(
        at(5_000, Some(Margin::Absolute(0.02))).verdict.winner(),
        Some("b")
    );
    let late = at(100_000, None);
    assert_eq!(late.verdict.winner(), Some("b"));
    assert_eq!(
        late.guardrails[0].arms[0].status,
        GuardrailStatus::NonInferior
    );
}

#[test]
fn a_guardrail_keeps_the_running_intersection_of_its_intervals() {
    let primary = metric("purchase", MetricKind::Binomial, Objective::Maximize);
    let errors = metric("errors", MetricKind::Binomial, Objective::Minimize);
    let p = policy(StatMethod::BayesianBeta);
    let mut state = GuardState::default();
    let mut width = f64::INFINITY;
    for (i, n) in [2_000_u64, 4_000, 8_000, 16_000].into_iter().enumerate() {
        // b's error rate wanders: 5%, then 4.5%, 5.5%, 5%.
        let b_errors = [n / 20, n * 45 / 1000, n * 55 / 1000, n / 20][i];
        let figures = [rate("a", n, n / 20), rate("b", n, b_errors)];
        let guardrails = [GuardrailInput {
            metric: &errors,
            arms: &figures,
        }];
        let e = Look {
            policy: &p,
            metric: &primary,
            guardrails: &guardrails,
        }
        .at(&[rate("a", n, n / 10), rate("b", n, n / 10)], &state);
        state = e.guard_state;
        let kept = state.guardrails[0].interval("b", "a").unwrap();
        assert!(
            kept.1 - kept.0 <= width,
            "look {i}: the intersection never widens"
        );
        width = kept.1 - kept.0;
        assert_eq!(state.guardrails[0].arms[0].looks, i as u64 + 1);
        // The reported interval is the oriented intersection.
        let [lo, hi] = e.guardrails[0].arms[0].figures.interval.unwrap();
        assert_eq!((lo, hi), (-kept.1, -kept.0));
    }
    // A removed guardrail's state is dropped.
    let e = Look {
        policy: &p,
        metric: &primary,
        guardrails: &[],
    }
    .at(&clear_primary(), &state);
    assert!(e.guard_state.guardrails.is_empty());
}

#[test]
fn looks_before_min_assignments_do_not_enter_a_guardrails_intersection() {
    let primary = metric("purchase", MetricKind::Binomial, Objective::Maximize);
    let errors = metric("errors", MetricKind::Binomial, Objective::Minimize);
    let p = WinnerPolicy {
        min_assignments: 1_000,
        ..policy(StatMethod::BayesianBeta)
    };
    let at = |n: u64, state: &GuardState| {
        let figures = [rate("a", n, n / 20), rate("b", n, n / 20)];
        let guardrails = [GuardrailInput {
            metric: &errors,
            arms: &figures,
        }];
        Look {
            policy: &p,
            metric: &primary,
            guardrails: &guardrails,
        }
        .at(&[rate("a", n, n / 10), rate("b", n, n / 10)], state)
    };
    let early = at(500, &GuardState::default());
    assert!(early.guard_state.guardrails[0].arms.is_empty());
    let arm = &early.guardrails[0].arms[0];
    assert_eq!(arm.status, GuardrailStatus::NonInferiorityNotShown);
    assert_eq!(arm.figures.interval, None);
    let later = at(1_000, &early.guard_state);
    assert_eq!(later.guard_state.guardrails[0].arms[0].looks, 1);
}

#[test]
fn a_guardrail_never_blocks_the_control_and_reports_every_other_arm() {
    let primary = metric("purchase", MetricKind::Binomial, Objective::Maximize);
    let errors = metric("errors", MetricKind::Binomial, Objective::Minimize);
    let p = policy(StatMethod::SimpleRate);
    // The control wins the primary metric; b and c are worse on errors too.
    let figures = [
        rate("a", 20_000, 1_000),
        rate("b", 20_000, 1_400),
        rate("c", 20_000, 1_000),
    ];
    let guardrails = [GuardrailInput {
        metric: &errors,
        arms: &figures,
    }];
    let e = Look {
        policy: &p,
        metric: &primary,
        guardrails: &guardrails,
    }
    .at(
        &[
            rate("a", 20_000, 2_600),
            rate("b", 20_000, 2_000),
            rate("c", 20_000, 2_000),
        ],
        &GuardState::default(),
    );
    assert_eq!(e.verdict.winner(), Some("a"), "{:?}", e.verdict);
    let statuses: Vec<(&str, GuardrailStatus)> = e.guardrails[0]
        .arms
        .iter()
        .map(|a| (a.variant.as_str(), a.status))
        .collect();
    assert_eq!(
        statuses,
        [
            ("b", GuardrailStatus::CrediblyWorse),
            ("c", GuardrailStatus::NonInferior)
        ]
    );
}

#[test]
fn a_value_guardrail_uses_normal_posteriors_and_its_own_tau() {
    let primary = metric("purchase", MetricKind::Binomial, Objective::Maximize);
    let latency = metric("latency", MetricKind::Mean, Objective::Minimize);
    let p = policy(StatMethod::BayesianBeta);
    // b is 10% slower.
    let figures = [latency_arm("a", 200.0), latency_arm("b", 220.0)];
    let guardrails = [GuardrailInput {
        metric: &latency,
        arms: &figures,
    }];
    let e = Look {
        policy: &p,
        metric: &primary,
        guardrails: &guardrails,
    }
    .at(&clear_primary(), &GuardState::default());
    let report = &e.guardrails[0];
    assert_eq!(report.estimate, EstimateKind::ValuePerEvent);
    assert_eq!(report.tau_source, TauSource::ControlBaseline);
    assert_eq!(report.tau_squared, Some(50.0 * 50.0));
    assert_eq!(e.guard_state.guardrails[0].baseline_tau, Some(50.0));
    assert_eq!(report.arms[0].status, GuardrailStatus::CrediblyWorse);
    assert_eq!(codes(&e), ["guardrail"]);
}

fn latency_arm(variant: &str, ms: f64) -> VariantCounts {
    let mut c = latency(variant, ms);
    // Rename and scale to 20,000 subjects to match the primary figures.
    c.variant = variant.into();
    let k = 4;
    c.subjects *= k;
    c.converted_subjects *= k;
    c.events *= k;
    c.sum *= k as f64;
    c.sum_of_squares *= k as f64;
    c.sum_events_squared *= k;
    c.sum_events_value *= k as f64;
    c
}

#[test]
fn the_peeking_guards_projection_is_where_the_boundary_is_reached() {
    let conversion = metric("conversion", MetricKind::Binomial, Objective::Maximize);
    let p = policy(StatMethod::SimpleRate);
    let look = Look {
        policy: &p,
        metric: &conversion,
        guardrails: &[],
    };
    // 10% vs 11% on 2,000 per arm: far from the boundary.
    let e = look.at(
        &[rate("a", 2_000, 200), rate("b", 2_000, 220)],
        &GuardState::default(),
    );
    let need = e.subjects_needed();
    assert_eq!(need.last().unwrap().reason, "peeking_guard");
    let NeedEstimate::PerArm {
        subjects_per_arm,
        more_per_arm,
    } = need.last().unwrap().estimate
    else {
        panic!("{need:?}")
    };
    assert_eq!(subjects_per_arm - more_per_arm, 2_000);
    // The same rates at the projected size pass the guard; at 95% of it they do not.
    let scaled = |n: u64| [rate("a", n, n / 10), rate("b", n, n * 11 / 100)];
    let n = subjects_per_arm.div_ceil(100) * 100;
    assert!(
        look.at(&scaled(n), &GuardState::default())
            .peeking_guard
            .rejects_no_difference
    );
    let short = (subjects_per_arm * 95 / 100) / 100 * 100;
    assert!(
        !look
            .at(&scaled(short), &GuardState::default())
            .peeking_guard
            .rejects_no_difference
    );
}

#[test]
fn min_assignments_needs_the_shortfall_and_undecidable_blockers_say_why() {
    let conversion = metric("conversion", MetricKind::Binomial, Objective::Maximize);
    let p = WinnerPolicy {
        min_assignments: 1_000,
        pick_after_seconds: 30 * 86_400,
        ..policy(StatMethod::SimpleRate)
    };
    let e = Look {
        policy: &p,
        metric: &conversion,
        guardrails: &[],
    }
    .at(
        &[rate("a", 400, 40), rate("b", 400, 40)],
        &GuardState::default(),
    );
    let need = e.subjects_needed();
    let by = |reason| need.iter().find(|n| n.reason == reason).unwrap();
    assert_eq!(
        by("min_assignments").estimate,
        NeedEstimate::PerArm {
            subjects_per_arm: 1_000,
            more_per_arm: 600
        }
    );
    assert!(matches!(
        by("pick_after_not_elapsed").estimate,
        NeedEstimate::None { .. }
    ));
    assert!(matches!(by("no_lead").estimate, NeedEstimate::None { .. }));
    let json = serde_json::to_value(&need).unwrap();
    assert_eq!(json[1]["estimate"], "per_arm");
}

#[test]
fn figures_of_another_variant_or_a_short_guardrail_are_invalid_input_non_finite_totals_are_not() {
    let conversion = metric("conversion", MetricKind::Binomial, Objective::Maximize);
    let p = policy(StatMethod::SimpleRate);
    let guard = GuardState::default();
    let input = |arms: &[ArmFigures], guardrails: &[GuardrailInput<'_>]| {
        evaluate(&EvaluationInput {
            policy: &p,
            metric: &conversion,
            objective: Objective::Maximize,
            arms,
            control: 0,
            elapsed: time::Duration::ZERO,
            guard: &guard,
            guardrails,
        })
        .map(|_| ())
    };
    let mismatched = vec![
        ArmFigures::new("a", 0.5, rate("b", 10, 1)),
        ArmFigures::new("b", 0.5, rate("b", 10, 1)),
    ];
    assert!(input(&mismatched, &[]).is_err());
    let ok = arms(&[rate("a", 10, 1), rate("b", 10, 1)]);
    assert!(input(&ok, &[]).is_ok());
    let short = [rate("a", 10, 1)];
    let errors = metric("errors", MetricKind::Binomial, Objective::Minimize);
    let g = [GuardrailInput {
        metric: &errors,
        arms: &short,
    }];
    assert!(input(&ok, &g).is_err());
    let nan = vec![
        ArmFigures::new(
            "a",
            0.5,
            VariantCounts {
                sum: f64::NAN,
                ..rate("a", 10, 1)
            },
        ),
        ArmFigures::new("b", 0.5, rate("b", 10, 1)),
    ];
    // Non-finite totals are data, not invalid input: a value metric names them in a
    // `totals_not_finite` blocker (see the overflowed-totals test); a rate ignores them.
    assert!(input(&nan, &[]).is_ok());
}

/// Per-subject figures of `subjects` subjects with `totals` (one event each where non-zero).
fn sum_figures(variant: &str, totals: &[f64]) -> VariantCounts {
    let pattern: Vec<(u64, f64)> = totals.iter().map(|&t| (u64::from(t != 0.0), t)).collect();
    repeated(variant, &pattern, 1)
}

fn negated(c: &VariantCounts) -> VariantCounts {
    VariantCounts {
        sum: -c.sum,
        sum_events_value: -c.sum_events_value,
        ..c.clone()
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Minimizing the negated values is maximizing the values: the same candidate, the same
    /// P(best) and the same guard.
    #[test]
    fn minimizing_negated_values_is_maximizing_the_values(
        a in prop::collection::vec(0.0f64..100.0, 2..60),
        b in prop::collection::vec(0.0f64..100.0, 2..60),
        method in prop::sample::select(vec![StatMethod::SimpleRate, StatMethod::BayesianBeta]),
    ) {
        let p = WinnerPolicy { min_assignments: 2, min_conversions: 0, ..policy(method) };
        let max = metric("v", MetricKind::Sum, Objective::Maximize);
        let min = metric("v", MetricKind::Sum, Objective::Minimize);
        let fa = sum_figures("a", &a);
        let fb = sum_figures("b", &b);
        let up = Look { policy: &p, metric: &max, guardrails: &[] }
            .at(&[fa.clone(), fb.clone()], &GuardState::default());
        let down = Look { policy: &p, metric: &min, guardrails: &[] }
            .at(&[negated(&fa), negated(&fb)], &GuardState::default());
        prop_assert_eq!(&up.candidate, &down.candidate);
        prop_assert_eq!(up.verdict.winner(), down.verdict.winner());
        prop_assert_eq!(up.delta, down.delta);
        for (x, y) in up.arms.iter().zip(&down.arms) {
            prop_assert_eq!(x.prob_best, y.prob_best);
        }
    }

    /// Whatever the kind and the figures, an evaluation of valid figures succeeds, its
    /// P(best) sums to 1 when defined, and the running maxima never decrease.
    #[test]
    fn every_kind_evaluates_valid_figures_and_keeps_its_maxima(
        kind in prop::sample::select(vec![
            MetricKind::Binomial, MetricKind::Count, MetricKind::Sum, MetricKind::Mean]),
        looks in prop::collection::vec(
            (prop::collection::vec((0u64..4, 0.0f64..50.0), 3..40),
             prop::collection::vec((0u64..4, 0.0f64..50.0), 3..40)), 1..5),
    ) {
        let p = WinnerPolicy { min_assignments: 3, ..policy(StatMethod::BayesianBeta) };
        let m = metric("v", kind, Objective::Maximize);
        let look = Look { policy: &p, metric: &m, guardrails: &[] };
        let mut state = GuardState::default();
        let named = |variant: &str| VariantCounts { variant: variant.into(), ..VariantCounts::default() };
        let (mut fa, mut fb) = (named("a"), named("b"));
        for (a, b) in looks {
            // A subject with no events has a total of 0.
            let clean = |v: Vec<(u64, f64)>| -> Vec<(u64, f64)> {
                v.into_iter().map(|(n, t)| if n == 0 { (0, 0.0) } else { (n, t) }).collect()
            };
            fa.add(&repeated("", &clean(a), 1));
            fb.add(&repeated("", &clean(b), 1));
            let e = look.at(&[fa.clone(), fb.clone()], &state);
            if let Some(total) = e.arms.iter().map(|a| a.prob_best).sum::<Option<f64>>() {
                prop_assert!((total - 1.0).abs() < 1e-9, "{}", total);
            }
            for before in &state.pairs {
                if let Some(after) = e.guard_state.max_log_lambda(&before.higher, &before.lower) {
                    prop_assert!(after >= before.max_log_lambda);
                }
            }
            state = e.guard_state;
        }
    }
}

#[test]
fn overflowed_totals_block_the_decision_by_name_instead_of_failing_the_evaluation() {
    let sum = metric("purchase", MetricKind::Sum, Objective::Maximize);
    let mut counts = revenue();
    counts[1].sum_of_squares = f64::INFINITY;
    let latency = metric("latency", MetricKind::Mean, Objective::Minimize);
    let mut guard_figures = [latency_arm("a", 100.0), latency_arm("b", 100.0)];
    guard_figures[0].sum = f64::INFINITY;
    let guardrails = [GuardrailInput {
        metric: &latency,
        arms: &guard_figures,
    }];
    for method in BOTH {
        let p = policy(method);
        let e = Look {
            policy: &p,
            metric: &sum,
            guardrails: &guardrails,
        }
        .at(&counts, &GuardState::default());
        assert_eq!(e.verdict.winner(), None, "{method:?}");
        let named: Vec<(&str, &[String])> = e
            .verdict
            .blockers()
            .iter()
            .filter_map(|b| match b {
                Blocker::TotalsNotFinite { metric, variants } => {
                    Some((metric.as_str(), variants.as_slice()))
                }
                _ => None,
            })
            .collect();
        assert_eq!(
            named,
            [
                ("purchase", &["b".to_owned()][..]),
                ("latency", &["a".to_owned()][..])
            ],
            "{:?}",
            e.verdict
        );
        assert!(!codes(&e).contains(&"no_estimate"), "{:?}", codes(&e));
        assert_eq!(e.arms[1].estimate, None);
        assert!(e.arms[0].estimate.is_some());
        assert!(
            e.verdict.blockers()[0].to_string().contains("not finite"),
            "{}",
            e.verdict.blockers()[0]
        );
    }
    // A rate ignores value totals altogether.
    let conversion = metric("purchase", MetricKind::Binomial, Objective::Maximize);
    let p = policy(StatMethod::BayesianBeta);
    let e = Look {
        policy: &p,
        metric: &conversion,
        guardrails: &[],
    }
    .at(&counts, &GuardState::default());
    assert!(!codes(&e).contains(&"totals_not_finite"), "{:?}", codes(&e));
}
