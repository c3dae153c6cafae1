//! Properties that must hold for any input, checked with proptest.

use proptest::prelude::*;
use verdict_stats::msprt::rejects_log;
use verdict_stats::{
    Objective, always_valid_interval, expected_loss, mixture_likelihood_ratio_normal,
    prob_b_beats_a, prob_best, srm_check, summarize,
};

/// One arm: n up to 1e6, conversions anywhere in 0..=n (skewed towards realistic low rates).
fn arm() -> impl Strategy<Value = (u64, u64)> {
    (0u64..=1_000_000)
        .prop_flat_map(|n| {
            let low = (0..=n.min(n / 10 + 5).min(n)).boxed();
            let any = (0..=n).boxed();
            (prop_oneof![3 => low, 1 => any], Just(n))
        })
        .prop_map(|(c, n)| (c.min(n), n))
}

fn arms() -> impl Strategy<Value = Vec<(u64, u64)>> {
    prop::collection::vec(arm(), 2..=8)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn prob_best_sums_to_one_for_any_arms(arms in arms()) {
        let p = prob_best(&arms).unwrap();
        let total: f64 = p.iter().sum();
        prop_assert!((total - 1.0).abs() <= 1e-9, "sum {total} for {arms:?}: {p:?}");
        prop_assert!(p.iter().all(|&x| (0.0..=1.0 + 1e-12).contains(&x)));
    }

    #[test]
    fn identical_arms_each_have_one_in_k_chance_of_being_best(a in arm(), k in 2usize..=8) {
        let p = prob_best(&vec![a; k]).unwrap();
        for &x in &p {
            prop_assert!((x - 1.0 / k as f64).abs() <= 1e-9, "{a:?} x{k}: {p:?}");
        }
    }

    #[test]
    fn adding_conversions_never_lowers_an_arms_prob_best(
        arms in arms(),
        pick in any::<prop::sample::Index>(),
        extra in 1u64..1000,
    ) {
        let i = pick.index(arms.len());
        let before = prob_best(&arms).unwrap()[i];
        let mut better = arms.clone();
        let (c, n) = better[i];
        better[i] = ((c + extra).min(n), n);
        let after = prob_best(&better).unwrap()[i];
        prop_assert!(after >= before - 1e-12, "arm {i}: {before} -> {after} for {arms:?}");
    }

    #[test]
    fn expected_loss_is_never_negative(arms in arms()) {
        let loss = expected_loss(&arms).unwrap();
        prop_assert!(loss.iter().all(|l| (0.0..=1.0).contains(l)), "{loss:?}");
    }

    #[test]
    fn the_two_directions_of_a_pairwise_comparison_sum_to_one(a in arm(), b in arm()) {
        let ab = prob_b_beats_a(a, b).unwrap();
        let ba = prob_b_beats_a(b, a).unwrap();
        prop_assert!((ab + ba - 1.0).abs() <= 1e-12, "{ab} + {ba}");
    }

    #[test]
    fn minimizing_is_maximizing_the_complementary_rate(arms in arms()) {
        let min = summarize(&arms, Objective::Minimize).unwrap();
        let failures: Vec<(u64, u64)> = arms.iter().map(|&(c, n)| (n - c, n)).collect();
        let max = summarize(&failures, Objective::Maximize).unwrap();
        prop_assert_eq!(min, max);
    }

    #[test]
    fn srm_p_value_is_a_probability_and_flags_only_below_threshold(
        counts in prop::collection::vec(0u64..1_000_000, 2..=8),
    ) {
        let weights = verdict_stats::equal_weights(counts.len());
        let r = srm_check(&counts, &weights).unwrap();
        prop_assert!((0.0..=1.0).contains(&r.p_value));
        prop_assert!(r.statistic >= 0.0);
        prop_assert_eq!(r.flagged, r.p_value < 0.001);
    }
}

#[test]
fn expected_loss_is_smallest_for_the_most_probable_winner_in_a_clear_case() {
    let arms = [(300, 10_000), (360, 10_000), (310, 10_000), (305, 10_000)];
    let s = summarize(&arms, Objective::Maximize).unwrap();
    let argmax = |v: &[f64]| {
        v.iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .unwrap()
            .0
    };
    let argmin = |v: &[f64]| {
        v.iter()
            .enumerate()
            .min_by(|a, b| a.1.total_cmp(b.1))
            .unwrap()
            .0
    };
    assert_eq!(argmax(&s.prob_best), 1);
    assert_eq!(argmin(&s.expected_loss), 1);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn the_always_valid_interval_excludes_zero_exactly_when_the_test_rejects(
        theta in -1.0..1.0f64,
        log_v in -8.0..0.0f64,
        log_tau2 in -6.0..0.0f64,
        alpha in 0.001..0.5f64,
    ) {
        let (v, tau2) = (10f64.powf(log_v), 10f64.powf(log_tau2));
        let (lo, hi) = always_valid_interval(theta, v, tau2, alpha).unwrap();
        prop_assert!(lo < theta && theta < hi);
        let m = mixture_likelihood_ratio_normal(theta, v, tau2).unwrap();
        let excludes_zero = lo > 0.0 || hi < 0.0;
        // Away from the boundary itself, where rounding may go either way.
        let margin = (m.log_lambda + alpha.ln()).abs();
        if margin > 1e-9 {
            prop_assert_eq!(excludes_zero, rejects_log(m.log_lambda, alpha));
        }
    }
}
