//! Properties that must hold for any input, checked with proptest.

use proptest::prelude::*;
use verdict_stats::msprt::rejects_log;
use verdict_stats::{
    Objective, always_valid_interval, expected_loss, mixture_likelihood_ratio_normal,
    prob_b_beats_a, prob_best, prob_best_normal, srm_check, summarize, summarize_normal,
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

/// A normal posterior `(mean, std_error)`: means within a few hundred units, standard errors
/// spread log-uniformly over 1e-3..1e2, so arms range from indistinguishable to hundreds of
/// standard errors apart and from equally to very unequally precise.
fn normal_arm() -> impl Strategy<Value = (f64, f64)> {
    (-300.0..300.0f64, -3.0..2.0f64).prop_map(|(mean, log_se)| (mean, 10f64.powf(log_se)))
}

/// 2..=8 arms; sometimes clustered within a few standard errors so every arm has a chance.
fn normal_arms() -> impl Strategy<Value = Vec<(f64, f64)>> {
    let spread = prop::collection::vec(normal_arm(), 2..=8);
    let clustered = (
        normal_arm(),
        prop::collection::vec((-3.0..3.0f64, 0.3..3.0f64), 2..=8),
    )
        .prop_map(|((centre, se), offsets)| {
            offsets
                .into_iter()
                .map(|(z, ratio)| (centre + z * se, se * ratio))
                .collect()
        });
    prop_oneof![spread, clustered]
}

fn argmax(v: &[f64]) -> usize {
    (0..v.len()).max_by(|&a, &b| v[a].total_cmp(&v[b])).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn normal_prob_best_sums_to_one(arms in normal_arms()) {
        let p = prob_best_normal(&arms).unwrap();
        let total: f64 = p.iter().sum();
        prop_assert!((total - 1.0).abs() <= 1e-12, "sum {total} for {arms:?}: {p:?}");
        prop_assert!(p.iter().all(|&x| (0.0..=1.0 + 1e-15).contains(&x)), "{p:?}");
    }

    #[test]
    fn identical_normal_arms_each_have_one_in_k_chance(a in normal_arm(), k in 2usize..=8) {
        let p = prob_best_normal(&vec![a; k]).unwrap();
        for &x in &p {
            prop_assert!((x - 1.0 / k as f64).abs() <= 1e-12, "{a:?} x{k}: {p:?}");
        }
    }

    #[test]
    fn raising_an_arms_mean_never_lowers_its_prob_best(
        arms in normal_arms(),
        pick in any::<prop::sample::Index>(),
        raise in 0.0..5.0f64,
    ) {
        let i = pick.index(arms.len());
        let before = prob_best_normal(&arms).unwrap()[i];
        let mut better = arms.clone();
        better[i].0 += raise * better[i].1;
        let after = prob_best_normal(&better).unwrap()[i];
        prop_assert!(after >= before - 1e-12, "arm {i}: {before} -> {after} for {arms:?}");
    }

    #[test]
    fn permuting_normal_arms_permutes_their_results(
        arms in normal_arms(),
        rotate in any::<prop::sample::Index>(),
    ) {
        let k = arms.len();
        let r = rotate.index(k);
        let mut rotated = arms.clone();
        rotated.rotate_left(r);
        let mut reversed = arms.clone();
        reversed.reverse();
        let base = summarize_normal(&arms, Objective::Maximize).unwrap();
        let rot = summarize_normal(&rotated, Objective::Maximize).unwrap();
        let rev = summarize_normal(&reversed, Objective::Maximize).unwrap();
        let scale = arms.iter().map(|a| a.1).fold(0.0, f64::max);
        for i in 0..k {
            let j = (i + k - r) % k; // arms[i] sits at rotated[j]
            prop_assert!((base.prob_best[i] - rot.prob_best[j]).abs() <= 1e-13);
            prop_assert!((base.prob_best[i] - rev.prob_best[k - 1 - i]).abs() <= 1e-13);
            prop_assert!((base.expected_loss[i] - rot.expected_loss[j]).abs() <= 1e-13 * scale);
            prop_assert!(
                (base.expected_loss[i] - rev.expected_loss[k - 1 - i]).abs() <= 1e-13 * scale
            );
        }
    }

    #[test]
    fn normal_expected_losses_are_non_negative_and_differ_by_the_means(arms in normal_arms()) {
        // loss_i + μ_i = E[max] for every i.
        let s = summarize_normal(&arms, Objective::Maximize).unwrap();
        let scale = arms.iter().map(|a| a.1).fold(0.0, f64::max);
        prop_assert!(s.expected_loss.iter().all(|&l| l >= 0.0), "{:?}", s.expected_loss);
        let e_max = s.expected_loss[0] + arms[0].0;
        for (l, a) in s.expected_loss.iter().zip(&arms) {
            // Clamping at 0 can only raise a loss that is ~0 already.
            let tol = 1e-12 * (scale + a.0.abs().max(1.0));
            prop_assert!((l + a.0 - e_max).abs() <= tol, "{:?} for {arms:?}", s.expected_loss);
        }
    }

    #[test]
    fn with_equal_standard_errors_the_likeliest_winner_has_the_smallest_loss(
        means in prop::collection::vec(-5.0..5.0f64, 2..=8),
        se in 0.01..10.0f64,
    ) {
        let arms: Vec<(f64, f64)> = means.iter().map(|&m| (m * se, se)).collect();
        let s = summarize_normal(&arms, Objective::Maximize).unwrap();
        let best = argmax(&s.prob_best);
        let least = s.expected_loss.iter().copied().fold(f64::INFINITY, f64::min);
        prop_assert!(
            s.expected_loss[best] <= least + 1e-13 * se,
            "{:?} / {:?} for {arms:?}", s.prob_best, s.expected_loss
        );
    }

    #[test]
    fn minimizing_normal_means_is_maximizing_their_negation(arms in normal_arms()) {
        let min = summarize_normal(&arms, Objective::Minimize).unwrap();
        let negated: Vec<(f64, f64)> = arms.iter().map(|&(m, s)| (-m, s)).collect();
        prop_assert_eq!(min, summarize_normal(&negated, Objective::Maximize).unwrap());
    }
}
