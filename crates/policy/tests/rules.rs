//! Each rule of the winner policy blocks or decides as documented in `policy`'s module docs.

use verdict_domain::{Metric, MetricKind, Objective, PolicyMode, StatMethod, WinnerPolicy};
use verdict_policy::{
    ArmFigures, Blocker, Evaluation, EvaluationInput, GuardState, PolicyError, Verdict, evaluate,
};

fn arm(variant: &str, weight: f64, subjects: u64, conversions: u64) -> ArmFigures {
    ArmFigures::binomial(variant, weight, subjects, conversions)
}

fn conversion() -> Metric {
    Metric::new("conversion", MetricKind::Binomial, Objective::Maximize)
}

/// Two even arms: `a` (control) and `b`.
fn pair(a: (u64, u64), b: (u64, u64)) -> Vec<ArmFigures> {
    vec![arm("a", 0.5, a.0, a.1), arm("b", 0.5, b.0, b.1)]
}

fn policy(stat_method: StatMethod) -> WinnerPolicy {
    WinnerPolicy {
        stat_method,
        ..WinnerPolicy::default()
    }
}

fn run_with(
    policy: &WinnerPolicy,
    objective: Objective,
    arms: &[ArmFigures],
    guard: &GuardState,
) -> Evaluation {
    evaluate(&EvaluationInput {
        policy,
        metric: &conversion(),
        objective,
        arms,
        control: 0,
        elapsed: time::Duration::days(7),
        guard,
        guardrails: &[],
    })
    .expect("valid input")
}

fn run(policy: &WinnerPolicy, arms: &[ArmFigures]) -> Evaluation {
    run_with(policy, Objective::Maximize, arms, &GuardState::default())
}

fn codes(e: &Evaluation) -> Vec<&'static str> {
    e.verdict.blockers().iter().map(Blocker::code).collect()
}

/// 10% vs 13% on 10,000 subjects each: z ≈ 6.3, decisive for every rule.
fn clear_win() -> Vec<ArmFigures> {
    pair((10_000, 1_000), (10_000, 1_300))
}

const BOTH: [StatMethod; 2] = [StatMethod::SimpleRate, StatMethod::BayesianBeta];

#[test]
fn a_clear_winner_is_decided_by_both_methods() {
    for method in BOTH {
        let e = run(&policy(method), &clear_win());
        assert_eq!(e.verdict.winner(), Some("b"), "{method:?}: {:?}", e.verdict);
        assert_eq!((e.candidate.as_str(), e.runner_up.as_str()), ("b", "a"));
        assert!((e.delta.unwrap() - 0.03).abs() < 1e-12);
        assert!(e.peeking_guard.rejects_no_difference);
        assert!(e.peeking_guard.lambda_running_max.unwrap() >= 20.0);
        let Verdict::Winner {
            prob_best,
            expected_loss,
            ..
        } = e.verdict
        else {
            unreachable!()
        };
        assert!(prob_best > 0.999_999 && expected_loss < 1e-6);
    }
}

#[test]
fn per_arm_numbers_are_reported() {
    let e = run(&policy(StatMethod::BayesianBeta), &clear_win());
    let total: f64 = e.arms.iter().map(|a| a.prob_best.unwrap()).sum();
    assert!((total - 1.0).abs() < 1e-12);
    for a in &e.arms {
        let rate = a.rate.unwrap();
        let [lo, hi] = a.credible_interval.unwrap();
        assert!(lo < rate && rate < hi && hi - lo < 0.02, "{a:?}");
    }
    assert_eq!(e.arms[0].rate, Some(0.1));
    assert!(e.arms[0].expected_loss.unwrap() > 0.029 && e.arms[1].expected_loss.unwrap() < 1e-6);
    assert!(!e.srm.flagged && e.srm.p_value == 1.0);
}

#[test]
fn a_sample_ratio_mismatch_blocks_an_otherwise_clear_winner() {
    // 10,000 vs 11,000 subjects on a 50/50 split: χ² ≈ 47.6, p ≈ 5e-12.
    let arms = pair((10_000, 1_000), (11_000, 1_430));
    for method in BOTH {
        let e = run(&policy(method), &arms);
        assert!(e.srm.flagged && e.srm.p_value < 1e-9);
        assert_eq!(codes(&e), ["srm_mismatch"], "{method:?}");
    }
    // The same counts on a configured 10:11 split are fine.
    let mut arms = arms;
    arms[0].weight = 10.0 / 21.0;
    arms[1].weight = 11.0 / 21.0;
    let e = run(&policy(StatMethod::SimpleRate), &arms);
    assert!(!e.srm.flagged);
    assert_eq!(e.verdict.winner(), Some("b"));
}

#[test]
fn minimize_flips_the_winner() {
    for method in BOTH {
        let e = run_with(
            &policy(method),
            Objective::Minimize,
            &clear_win(),
            &GuardState::default(),
        );
        assert_eq!(e.verdict.winner(), Some("a"), "{method:?}: {:?}", e.verdict);
        assert_eq!(e.runner_up, "b");
        assert!(
            (e.delta.unwrap() - 0.03).abs() < 1e-12,
            "delta is objective-oriented"
        );
        assert!(e.arms[0].prob_best.unwrap() > 0.999_999);
        assert!(e.peeking_guard.rejects_no_difference);
    }
}

#[test]
fn manual_mode_never_decides_even_on_overwhelming_data() {
    for method in BOTH {
        let manual = WinnerPolicy {
            mode: PolicyMode::Manual,
            override_variant: Some("b".into()),
            ..policy(method)
        };
        let e = run(&manual, &pair((100_000, 10_000), (100_000, 20_000)));
        assert_eq!(codes(&e), ["manual_mode"], "{method:?}");
        assert_eq!(e.candidate, "b", "the numbers are still computed");
    }
}

#[test]
fn every_blocker_that_holds_is_listed_together() {
    let strict = WinnerPolicy {
        mode: PolicyMode::Manual,
        pick_after_seconds: 3_600,
        min_assignments: 1_000,
        min_conversions: 25,
        min_delta: 0.05,
        ..policy(StatMethod::BayesianBeta)
    };
    // 200 vs 300 subjects on 50/50 (χ² = 20, p ≈ 8e-6); 10% vs 11%.
    let arms = pair((200, 20), (300, 33));
    let e = evaluate(&EvaluationInput {
        policy: &strict,
        metric: &conversion(),
        objective: Objective::Maximize,
        arms: &arms,
        control: 0,
        elapsed: time::Duration::minutes(1),
        guard: &GuardState::default(),
        guardrails: &[],
    })
    .unwrap();
    assert_eq!(
        codes(&e),
        [
            "manual_mode",
            "srm_mismatch",
            "pick_after_not_elapsed",
            "min_assignments",
            "min_conversions",
            "min_delta",
            "probability_threshold",
            "expected_loss",
            "peeking_guard",
        ]
    );
    let blockers = e.verdict.blockers();
    assert_eq!(
        blockers[3],
        Blocker::MinAssignments {
            variants: vec!["a".into(), "b".into()],
            required: 1_000
        }
    );
    assert_eq!(
        blockers[4],
        Blocker::MinConversions {
            variants: vec!["a".into()],
            required: 25
        }
    );
    assert_eq!(
        blockers[2],
        Blocker::PickAfterNotElapsed {
            elapsed_seconds: 60,
            required_seconds: 3_600
        }
    );
    // Every blocker explains itself in words for the run report.
    for b in blockers {
        assert!(!b.to_string().is_empty());
    }
}

#[test]
fn arms_without_data_block_with_no_data() {
    let e = run(&policy(StatMethod::SimpleRate), &pair((0, 0), (0, 0)));
    assert_eq!(
        codes(&e),
        [
            "no_data",
            "min_assignments",
            "min_conversions",
            "peeking_guard"
        ]
    );
    assert_eq!(e.candidate, "a", "ties go to the control");
    assert_eq!(e.delta, None);
    assert_eq!(e.peeking_guard.log_lambda, None);
}

#[test]
fn a_tie_is_never_a_winner_even_without_guard_or_min_delta() {
    let bare = WinnerPolicy {
        peeking_guard: false,
        ..policy(StatMethod::SimpleRate)
    };
    let e = run(&bare, &pair((5_000, 500), (5_000, 500)));
    assert_eq!(codes(&e), ["no_lead"]);
    assert_eq!(e.candidate, "a", "ties go to the control");
}

#[test]
fn pick_after_blocks_until_it_has_elapsed() {
    let p = WinnerPolicy {
        pick_after_seconds: 86_400,
        ..policy(StatMethod::SimpleRate)
    };
    let at = |elapsed| {
        evaluate(&EvaluationInput {
            policy: &p,
            metric: &conversion(),
            objective: Objective::Maximize,
            arms: &clear_win(),
            control: 0,
            elapsed,
            guard: &GuardState::default(),
            guardrails: &[],
        })
        .unwrap()
    };
    assert_eq!(
        codes(&at(time::Duration::seconds(86_399))),
        ["pick_after_not_elapsed"]
    );
    assert_eq!(
        codes(&at(time::Duration::seconds(-5))),
        ["pick_after_not_elapsed"]
    );
    assert_eq!(
        at(time::Duration::seconds(86_400)).verdict.winner(),
        Some("b")
    );
}

#[test]
fn min_assignments_and_min_conversions_are_per_variant() {
    let p = WinnerPolicy {
        min_assignments: 10_001,
        min_conversions: 1_001,
        ..policy(StatMethod::SimpleRate)
    };
    let e = run(&p, &pair((10_000, 1_000), (10_001, 1_301)));
    assert_eq!(
        e.verdict.blockers(),
        [
            Blocker::MinAssignments {
                variants: vec!["a".into()],
                required: 10_001
            },
            Blocker::MinConversions {
                variants: vec!["a".into()],
                required: 1_001
            }
        ]
    );
}

#[test]
fn min_delta_blocks_a_real_but_small_improvement() {
    for method in BOTH {
        let p = WinnerPolicy {
            min_delta: 0.031,
            ..policy(method)
        };
        let e = run(&p, &clear_win());
        assert!(
            matches!(e.verdict.blockers(), [Blocker::MinDelta { delta, required, .. }]
                if (delta - 0.03).abs() < 1e-12 && *required == 0.031),
            "{method:?}: {:?}",
            e.verdict
        );
        let p = WinnerPolicy {
            min_delta: 0.029,
            ..policy(method)
        };
        assert_eq!(run(&p, &clear_win()).verdict.winner(), Some("b"));
    }
}

#[test]
fn bayesian_needs_both_probability_and_expected_loss() {
    // 10% vs 10.6% on 10,000 each: P(best) ≈ 0.92, expected loss ≈ 0.0004.
    let arms = pair((10_000, 1_000), (10_000, 1_060));
    let bare = WinnerPolicy {
        peeking_guard: false,
        ..policy(StatMethod::BayesianBeta)
    };
    let e = run(&bare, &arms);
    let pb = e.arms[1].prob_best.unwrap();
    assert!(pb > 0.9 && pb < 0.95, "{pb}");
    assert_eq!(codes(&e), ["probability_threshold"]);

    let lenient = WinnerPolicy {
        probability_threshold: 0.9,
        ..bare.clone()
    };
    assert_eq!(run(&lenient, &arms).verdict.winner(), Some("b"));

    let tight_loss = WinnerPolicy {
        max_expected_loss: 1e-4,
        ..lenient
    };
    let e = run(&tight_loss, &arms);
    assert_eq!(codes(&e), ["expected_loss"]);
    // simple_rate ignores both thresholds.
    let simple = WinnerPolicy {
        peeking_guard: false,
        ..policy(StatMethod::SimpleRate)
    };
    assert_eq!(run(&simple, &arms).verdict.winner(), Some("b"));
}

#[test]
fn the_peeking_guard_blocks_what_the_bare_rule_would_decide() {
    // z ≈ 2.3: P(best) ≈ 0.99 and loss ≈ 0.0001, yet Λ ≈ 2.5 < 20.
    let arms = pair((10_000, 1_000), (10_000, 1_090));
    let guarded = run(&policy(StatMethod::BayesianBeta), &arms);
    assert_eq!(codes(&guarded), ["peeking_guard"]);
    let lambda = guarded.peeking_guard.lambda.unwrap();
    assert!(lambda > 1.0 && lambda < 20.0, "{lambda}");
    assert!((guarded.peeking_guard.always_valid_p_value - 1.0 / lambda).abs() < 1e-12);
    let bare = WinnerPolicy {
        peeking_guard: false,
        ..policy(StatMethod::BayesianBeta)
    };
    assert_eq!(run(&bare, &arms).verdict.winner(), Some("b"));
}

#[test]
fn the_guard_state_carries_over_and_its_running_max_never_decreases() {
    let p = policy(StatMethod::SimpleRate);
    // Look 1: a strong lead for b (Λ far above 20). Then b's lead shrinks until, at the last
    // look, Λ < 1; b still leads, so the running maximum from look 1 still certifies it.
    let looks = [
        pair((10_000, 1_000), (10_000, 1_300)),
        pair((20_000, 2_000), (20_000, 2_330)),
        pair((40_000, 4_000), (40_000, 4_200)),
        pair((80_000, 8_000), (80_000, 8_120)),
    ];
    let mut state = GuardState::default();
    let mut previous_max = f64::NEG_INFINITY;
    for (i, arms) in looks.iter().enumerate() {
        let e = run_with(&p, Objective::Maximize, arms, &state);
        let now = e.peeking_guard.log_lambda.unwrap();
        let max = e.peeking_guard.log_lambda_running_max.unwrap();
        assert!(max >= now && max >= previous_max, "look {i}");
        assert_eq!(e.guard_state.looks, i as u64 + 1);
        assert_eq!(e.verdict.winner(), Some("b"), "look {i}: {:?}", e.verdict);
        previous_max = max;
        state = e.guard_state;
    }
    // The last look alone would not pass the guard: the decision came from carried state.
    let fresh = run(&p, &looks[3]);
    assert!(fresh.peeking_guard.lambda.unwrap() < 1.0);
    assert_eq!(codes(&fresh), ["peeking_guard"]);
}

#[test]
fn the_guard_state_survives_a_json_round_trip() {
    let e = run(&policy(StatMethod::SimpleRate), &clear_win());
    let json = serde_json::to_string(&e.guard_state).unwrap();
    let back: GuardState = serde_json::from_str(&json).unwrap();
    assert_eq!(back, e.guard_state);
    assert_eq!(back.max_log_lambda("b", "a"), e.peeking_guard.log_lambda);
    assert_eq!(back.max_log_lambda("a", "b"), None);
    // An empty object is a valid (fresh) state, for callers that stored nothing yet.
    let empty: GuardState = serde_json::from_str("{}").unwrap();
    assert_eq!(empty, GuardState::default());
}

#[test]
fn evidence_gathered_while_the_other_arm_led_does_not_certify_the_current_leader() {
    let p = policy(StatMethod::SimpleRate);
    // a leads strongly, then b takes a small lead: b has no evidence of its own.
    let first = run(&p, &pair((10_000, 1_300), (10_000, 1_000)));
    assert_eq!(first.verdict.winner(), Some("a"));
    let second = run_with(
        &p,
        Objective::Maximize,
        &pair((20_000, 2_000), (20_000, 2_010)),
        &first.guard_state,
    );
    assert_eq!(second.candidate, "b");
    assert_eq!(codes(&second), ["peeking_guard"]);
    // a's running maximum is kept, for if it leads again.
    assert_eq!(
        second.guard_state.max_log_lambda("a", "b"),
        first.guard_state.max_log_lambda("a", "b")
    );
}

#[test]
fn a_change_of_tau_squared_restarts_the_guard() {
    let p = policy(StatMethod::SimpleRate);
    let first = run(&p, &clear_win());
    let other_tau = WinnerPolicy {
        tau_squared: Some(4e-4),
        ..p.clone()
    };
    let arms = pair((20_000, 2_000), (20_000, 2_030));
    let e = run_with(&other_tau, Objective::Maximize, &arms, &first.guard_state);
    assert_eq!(e.guard_state.looks, 1);
    assert_eq!(e.guard_state.tau_squared, Some(4e-4));
    assert_eq!(
        e.peeking_guard.log_lambda_running_max,
        e.peeking_guard.log_lambda
    );
    assert_eq!(codes(&e), ["peeking_guard"]);
}

#[test]
fn three_arms_compare_the_candidate_with_the_runner_up() {
    let arms = vec![
        arm("a", 1.0 / 3.0, 10_000, 1_000),
        arm("b", 1.0 / 3.0, 10_000, 1_300),
        arm("c", 1.0 / 3.0, 10_000, 1_150),
    ];
    for method in BOTH {
        let e = run(&policy(method), &arms);
        assert_eq!((e.candidate.as_str(), e.runner_up.as_str()), ("b", "c"));
        assert!((e.delta.unwrap() - 0.015).abs() < 1e-12);
        assert_eq!(e.verdict.winner(), Some("b"), "{method:?}: {:?}", e.verdict);
        // Every pair's running maximum is tracked.
        assert_eq!(e.guard_state.pairs.len(), 3);
    }
}

#[test]
fn evaluations_serialize_with_stable_codes() {
    let manual = WinnerPolicy {
        mode: PolicyMode::Manual,
        ..policy(StatMethod::SimpleRate)
    };
    let json = serde_json::to_value(run(&manual, &clear_win())).unwrap();
    assert_eq!(json["verdict"]["outcome"], "no_decision");
    assert_eq!(json["verdict"]["blockers"][0]["reason"], "manual_mode");
    assert_eq!(json["stat_method"], "simple_rate");
    let json = serde_json::to_value(run(&policy(StatMethod::SimpleRate), &clear_win())).unwrap();
    assert_eq!(json["verdict"]["outcome"], "winner");
    assert_eq!(json["verdict"]["variant"], "b");
}

#[test]
fn evaluation_is_deterministic() {
    let p = policy(StatMethod::BayesianBeta);
    let arms = pair((7_000, 700), (7_000, 760));
    assert_eq!(run(&p, &arms), run(&p, &arms));
}

#[test]
fn invalid_input_is_an_error_not_a_blocker() {
    let p = policy(StatMethod::SimpleRate);
    let guard = GuardState::default();
    let eval = |arms: &[ArmFigures], control| {
        evaluate(&EvaluationInput {
            policy: &p,
            metric: &conversion(),
            objective: Objective::Maximize,
            arms,
            control,
            elapsed: time::Duration::ZERO,
            guard: &guard,
            guardrails: &[],
        })
    };
    assert!(matches!(
        eval(&pair((10, 11), (10, 1)), 0),
        Err(PolicyError::ConversionsExceedSubjects { .. })
    ));
    assert!(matches!(
        eval(&clear_win(), 2),
        Err(PolicyError::ControlOutOfRange { .. })
    ));
    assert!(matches!(
        eval(&clear_win()[..1], 0),
        Err(PolicyError::ArmCount { .. })
    ));
    let dup = vec![arm("a", 0.5, 10, 1), arm("a", 0.5, 10, 1)];
    assert!(matches!(
        eval(&dup, 0),
        Err(PolicyError::DuplicateVariant(_))
    ));
}
