//! Bayesian comparison of conversion rates: P(B > A), P(best) and expected loss.
//!
//! Arms are given as `(conversions, n)` pairs and modelled as independent
//! Beta(1 + conversions, 1 + n − conversions) posteriors.
//!
//! # Two arms: exact closed form
//!
//! Evan Miller's formula `P(p_B > p_A) = Σ_{i<α_B} B(α_A+i, β_A+β_B) / ((β_B+i) B(1+i, β_B)
//! B(α_A, β_A))` is the lower tail of a beta-negative-binomial distribution
//! BNB(r = β_B, α = β_A, β = α_A) cut at `α_B`. Summing it term by term with `lgamma` loses
//! ~3e-8 at n = 1e7 because every term is `exp` of a difference of numbers near 1.5e8. Instead
//! [`prob_b_beats_a`] walks the terms outward from the distribution's *mode* with the exact
//! ratio `t_{i+1}/t_i = (r+i)(β+i) / ((i+1)(r+α+β+i))`, starting from `t_mode = 1`, and sums
//! both sides of the cut with Neumaier compensation until the terms fall below 1e-18 of the
//! running sum. Because the BNB pmf sums to exactly 1, the answer is `lower / (lower + upper)`:
//! no log-gamma is evaluated at all, the relative error is a few ulps times `sqrt(#terms)`,
//! and `P(A > B) = upper / (lower + upper)` comes out directly (never as `1 − x`). A far tail
//! is reached by rescaling the running term by exact powers of two, so tail probabilities down
//! to ~1e-300 keep their relative precision.
//!
//! The same probability is also the lower tail of three other BNB laws (mirror `p → 1 − p`,
//! swap the arms); the one with the smallest variance is used, which keeps the work at
//! `O(sqrt(n))` terms and avoids heavy-tailed parametrisations.
//!
//! Expected losses use size-biased Betas: `E[(p_B − p_A)⁺] = m_B P(B⁺ > A) − m_A P(B > A⁺)`
//! with `X⁺ = Beta(α_X + 1, β_X)` and `m_X` the posterior mean.
//!
//! # Three to eight arms: quadrature
//!
//! See `quadrature.rs`: a fixed composite Gauss–Legendre grid over the merged posterior
//! windows; no Monte Carlo anywhere.

use serde::{Deserialize, Serialize};

use crate::StatsError;
use crate::beta::BetaPosterior;
use crate::quadrature;

/// Largest number of arms [`prob_best`] and [`expected_loss`] accept.
pub const MAX_ARMS: usize = 8;

/// Whether a higher or a lower rate (or metric mean) is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Objective {
    /// Higher conversion rate wins (sign-ups, purchases).
    #[default]
    Maximize,
    /// Lower rate wins (errors, churn). Equivalent to maximizing the failure rate's complement:
    /// every arm `(c, n)` is analysed as `(n − c, n)`. For normal posteriors of means
    /// ([`crate::summarize_normal`]) the means are negated instead.
    Minimize,
}

impl Objective {
    /// The `(conversions, n)` pair to feed the maximizing routines for this objective.
    pub fn orient(self, (conversions, n): (u64, u64)) -> (u64, u64) {
        match self {
            Self::Maximize => (conversions, n),
            Self::Minimize => (n.saturating_sub(conversions), n),
        }
    }
}

/// Expected losses of the two possible decisions in a two-arm comparison, in the compared
/// quantity's units (absolute rate for conversion rates, the metric's units for means).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PairwiseLoss {
    /// `E[(p_b − p_a)⁺]`: what shipping A costs if B is in fact better.
    pub loss_choose_a: f64,
    /// `E[(p_a − p_b)⁺]`: what shipping B costs if A is in fact better.
    pub loss_choose_b: f64,
}

/// P(best) and expected loss for every arm, from one evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BayesSummary {
    /// `P(arm i is the best)` under the objective; sums to 1.
    pub prob_best: Vec<f64>,
    /// `E[best rate − rate_i]` (for [`Objective::Minimize`]: `E[rate_i − lowest rate]`); for
    /// normal posteriors the same with metric means, in the metric's units.
    pub expected_loss: Vec<f64>,
}

/// `P(p_b > p_a)` for arms given as `(conversions, n)`; exact (see the module docs).
pub fn prob_b_beats_a(a: (u64, u64), b: (u64, u64)) -> Result<f64, StatsError> {
    let a = posterior(a, 0)?;
    let b = posterior(b, 1)?;
    Ok(prob_greater(b, a).0)
}

/// Expected loss of choosing either arm of a pair; exact (see the module docs).
pub fn pairwise_expected_loss(a: (u64, u64), b: (u64, u64)) -> Result<PairwiseLoss, StatsError> {
    let a = posterior(a, 0)?;
    let b = posterior(b, 1)?;
    let (loss_choose_a, loss_choose_b) = two_arm_losses(a, b);
    Ok(PairwiseLoss {
        loss_choose_a,
        loss_choose_b,
    })
}

/// `P(arm i has the highest rate)` for 2 to [`MAX_ARMS`] arms given as `(conversions, n)`.
pub fn prob_best(arms: &[(u64, u64)]) -> Result<Vec<f64>, StatsError> {
    let posts = posteriors(arms)?;
    Ok(if let [a, b] = posts[..] {
        let (b_wins, a_wins) = prob_greater(b, a);
        vec![a_wins, b_wins]
    } else {
        quadrature::best_and_loss(&posts).0
    })
}

/// `E[max_j p_j − p_i]` for every arm (the rate given up by shipping arm `i`).
pub fn expected_loss(arms: &[(u64, u64)]) -> Result<Vec<f64>, StatsError> {
    let posts = posteriors(arms)?;
    Ok(if let [a, b] = posts[..] {
        let (loss_a, loss_b) = two_arm_losses(a, b);
        vec![loss_a, loss_b]
    } else {
        clamp_losses(quadrature::best_and_loss(&posts).1)
    })
}

/// P(best) and expected loss together under an [`Objective`], sharing the work.
pub fn summarize(arms: &[(u64, u64)], objective: Objective) -> Result<BayesSummary, StatsError> {
    let oriented: Vec<(u64, u64)> = arms.iter().map(|&arm| objective.orient(arm)).collect();
    let posts = posteriors(&oriented)?;
    Ok(if let [a, b] = posts[..] {
        let (b_wins, a_wins) = prob_greater(b, a);
        let (loss_a, loss_b) = two_arm_losses(a, b);
        BayesSummary {
            prob_best: vec![a_wins, b_wins],
            expected_loss: vec![loss_a, loss_b],
        }
    } else {
        let (prob_best, loss) = quadrature::best_and_loss(&posts);
        BayesSummary {
            prob_best,
            expected_loss: clamp_losses(loss),
        }
    })
}

fn clamp_losses(mut losses: Vec<f64>) -> Vec<f64> {
    for l in &mut losses {
        *l = l.max(0.0);
    }
    losses
}

fn posterior((conversions, n): (u64, u64), arm: usize) -> Result<BetaPosterior, StatsError> {
    BetaPosterior::from_counts(conversions, n).map_err(|_| StatsError::ConversionsExceedTrials {
        arm,
        conversions,
        n,
    })
}

fn posteriors(arms: &[(u64, u64)]) -> Result<Vec<BetaPosterior>, StatsError> {
    if !(2..=MAX_ARMS).contains(&arms.len()) {
        return Err(StatsError::ArmCount {
            min: 2,
            max: MAX_ARMS,
            got: arms.len(),
        });
    }
    arms.iter()
        .enumerate()
        .map(|(i, &arm)| posterior(arm, i))
        .collect()
}

/// `(E[(p_b − p_a)⁺], E[(p_a − p_b)⁺])` via size-biased Betas.
fn two_arm_losses(a: BetaPosterior, b: BetaPosterior) -> (f64, f64) {
    let a_plus = BetaPosterior {
        alpha: a.alpha + 1.0,
        beta: a.beta,
    };
    let b_plus = BetaPosterior {
        alpha: b.alpha + 1.0,
        beta: b.beta,
    };
    let (bp_gt_a, a_gt_bp) = prob_greater(b_plus, a);
    let (b_gt_ap, ap_gt_b) = prob_greater(b, a_plus);
    let (ma, mb) = (a.mean(), b.mean());
    // Both differences are of non-negative quantities computed to ~1e-15 relative, so a tiny
    // loss keeps ~1e-12 relative accuracy; the clamp only removes a possible -1e-300 residue.
    let loss_a = (mb * bp_gt_a - ma * b_gt_ap).max(0.0);
    let loss_b = (ma * ap_gt_b - mb * a_gt_bp).max(0.0);
    (loss_a, loss_b)
}

/// `(P(x > y), P(y > x))` for Beta posteriors with integer shapes.
pub(crate) fn prob_greater(x: BetaPosterior, y: BetaPosterior) -> (f64, f64) {
    // Evan Miller notation: B = x, A = y.
    let (ab, bb, aa, ba) = (x.alpha, x.beta, y.alpha, y.beta);
    // (r, α, β, cut, lower tail is P(B > A)?) — four parametrisations of the same answer.
    let candidates = [
        (bb, ba, aa, ab, true),
        (aa, ab, bb, ba, true),
        (ba, bb, ab, aa, false),
        (ab, aa, ba, bb, false),
    ];
    let best = candidates
        .iter()
        .map(|&(r, al, be, _, _)| bnb_variance(r, al, be))
        .enumerate()
        .min_by(|p, q| p.1.total_cmp(&q.1));
    match best {
        Some((i, v)) if v.is_finite() => {
            let (r, al, be, cut, lower_is_b) = candidates[i];
            let (lower, upper) = bnb_split(r, al, be, cut);
            if lower_is_b {
                (lower, upper)
            } else {
                (upper, lower)
            }
        }
        _ => small_shapes(aa, ba, ab, bb),
    }
}

/// Variance of BNB(r, α, β); infinite when `α ≤ 2` (heavy tail — not summed that way).
fn bnb_variance(r: f64, alpha: f64, beta: f64) -> f64 {
    if alpha <= 2.0 {
        return f64::INFINITY;
    }
    r * beta * (r + alpha - 1.0) * (beta + alpha - 1.0)
        / ((alpha - 2.0) * (alpha - 1.0) * (alpha - 1.0))
}

/// Every shape is ≤ 2 (tiny samples): the textbook sum has at most two terms and no
/// cancellation, and both probabilities are far from 0 and 1.
fn small_shapes(aa: f64, ba: f64, ab: f64, bb: f64) -> (f64, f64) {
    use crate::special::ln_beta;
    let (r, al, be) = (bb, ba, aa);
    let s = r + al + be;
    let mut t = (ln_beta(al + r, be) - ln_beta(al, be)).exp();
    let mut sum = 0.0;
    let mut i = 0.0;
    while i < ab {
        sum += t;
        t *= (r + i) * (be + i) / ((i + 1.0) * (s + i));
        i += 1.0;
    }
    let sum = sum.clamp(0.0, 1.0);
    (sum, 1.0 - sum)
}

/// Neumaier-compensated sum (the terms added are positive and mostly decreasing, so the
/// compensation keeps the error at a couple of ulps however many terms are added).
#[derive(Debug, Clone, Copy, Default)]
struct Compensated {
    sum: f64,
    comp: f64,
}

impl Compensated {
    fn add(&mut self, v: f64) {
        let t = self.sum + v;
        if self.sum.abs() >= v.abs() {
            self.comp += (self.sum - t) + v;
        } else {
            self.comp += (v - t) + self.sum;
        }
        self.sum = t;
    }

    fn value(&self) -> f64 {
        self.sum + self.comp
    }

    fn scale(&mut self, factor: f64) {
        self.sum *= factor;
        self.comp *= factor;
    }
}

/// Terms below this fraction of the running sum are dropped.
const NEGLIGIBLE: f64 = 1e-18;
/// Exact power-of-two rescaling keeps far-tail terms representable.
const TINY: f64 = 2.409_919_865_102_884e-181; // 2^-600
const HUGE: f64 = 4.149_515_568_880_993e180; // 2^600
const LN_HUGE: f64 = 415.888_308_335_967_2; // 600 ln 2
/// A tail whose scale is below e^-760 is zero in f64 relative to a total of at least 1.
const LN_FLOOR: f64 = -760.0;

/// Whether a term no longer changes a running sum (NaN counts as negligible so a bad input
/// cannot loop forever).
fn negligible(term: f64, sum: f64) -> bool {
    term < NEGLIGIBLE * sum || term.is_nan()
}

/// `(Σ_{i<cut} t_i, Σ_{i≥cut} t_i)` for the BNB(r, α, β) pmf `t_i`, normalised to sum to 1.
fn bnb_split(r: f64, alpha: f64, beta: f64, cut: f64) -> (f64, f64) {
    let s = r + alpha + beta;
    let ratio = |i: f64| (r + i) * (beta + i) / ((i + 1.0) * (s + i));
    // Walking down multiplies by the inverse ratio, computed directly so that the division is
    // off the loop-carried dependency chain (`t` only sees a multiply): ~2x faster.
    let inverse_ratio = |i: f64| (i + 1.0) * (s + i) / ((r + i) * (beta + i));
    // t_{i+1} ≥ t_i  ⇔  i ≤ (rβ − s)/(α + 1): the pmf is unimodal with this mode.
    let crit = (r * beta - s) / (alpha + 1.0);
    let mode = if crit > 0.0 { crit.floor() + 1.0 } else { 0.0 };
    let mode_is_lower = mode < cut;

    // `home`: the side of the cut holding the mode, at scale 1. `away`: the other side,
    // possibly far in the tail, at scale e^{away_ln_scale}.
    let mut home = Compensated::default();
    home.add(1.0);
    let mut away = Compensated::default();
    let mut away_ln_scale = 0.0;

    // Walk down: i = mode−1, …, 0 (t_i = t_{i+1} / ratio(i)).
    let mut t = 1.0;
    let mut i = mode;
    if mode_is_lower {
        while i > 0.0 {
            i -= 1.0;
            t *= inverse_ratio(i);
            home.add(t);
            if negligible(t, home.sum) {
                break;
            }
        }
    } else {
        let mut ln_scale = 0.0;
        let mut adding_home = true;
        while i > 0.0 {
            i -= 1.0;
            t *= inverse_ratio(i);
            if i >= cut {
                if adding_home {
                    home.add(t);
                    adding_home = t >= NEGLIGIBLE * home.sum;
                }
            } else {
                away.add(t);
                if negligible(t, away.sum) {
                    break;
                }
            }
            if t < TINY {
                t *= HUGE;
                away.scale(HUGE);
                ln_scale -= LN_HUGE;
                if ln_scale < LN_FLOOR {
                    away = Compensated::default();
                    break;
                }
            }
            if t.is_nan() {
                break;
            }
        }
        away_ln_scale = ln_scale;
    }

    // Walk up: i = mode+1, … (t_{i+1} = t_i · ratio(i)).
    let mut t = 1.0;
    let mut i = mode;
    if !mode_is_lower {
        loop {
            t *= ratio(i);
            i += 1.0;
            home.add(t);
            if negligible(t, home.sum) {
                break;
            }
        }
    } else {
        let mut ln_scale = 0.0;
        let mut adding_home = true;
        loop {
            t *= ratio(i);
            i += 1.0;
            if i < cut {
                if adding_home {
                    home.add(t);
                    adding_home = t >= NEGLIGIBLE * home.sum;
                }
            } else {
                away.add(t);
                if negligible(t, away.sum) {
                    break;
                }
            }
            if t < TINY {
                t *= HUGE;
                away.scale(HUGE);
                ln_scale -= LN_HUGE;
                if ln_scale < LN_FLOOR {
                    away = Compensated::default();
                    break;
                }
            }
            if t.is_nan() {
                break;
            }
        }
        away_ln_scale = ln_scale;
    }

    let home = home.value();
    let away = away.value() * away_ln_scale.exp();
    let total = home + away;
    let (home, away) = (home / total, away / total);
    if mode_is_lower {
        (home, away)
    } else {
        (away, home)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closed_form_and_quadrature_agree_for_two_arms() {
        for &(a, b) in &[
            ((100, 1000), (120, 1000)),
            ((0, 500), (3, 500)),
            ((9990, 10000), (9995, 10000)),
        ] {
            let pa = BetaPosterior::from_counts(a.0, a.1).unwrap();
            let pb = BetaPosterior::from_counts(b.0, b.1).unwrap();
            let (q_prob, q_loss) = quadrature::best_and_loss(&[pa, pb]);
            let exact = prob_best(&[a, b]).unwrap();
            let loss = expected_loss(&[a, b]).unwrap();
            for i in 0..2 {
                assert!(
                    (q_prob[i] - exact[i]).abs() < 1e-12,
                    "{a:?} {b:?}: {q_prob:?} {exact:?}"
                );
                assert!(
                    (q_loss[i] - loss[i]).abs() < 1e-12 + 1e-9 * loss[i],
                    "{a:?} {b:?}: {q_loss:?} {loss:?}"
                );
            }
        }
    }

    #[test]
    fn closed_form_is_exact_at_ten_million_exposures() {
        // mpmath, 35 digits, by the exact recurrence from a high-precision first term.
        let cases = [
            (
                (320_000, 10_000_000),
                (321_000, 10_000_000),
                0.897_874_607_108_632_3,
            ),
            (
                (10_000_000, 10_000_000),
                (9_999_990, 10_000_000),
                0.000_488_279_907_227_838_13,
            ),
            (
                (9_999_990, 10_000_000),
                (10_000_000, 10_000_000),
                0.999_511_720_092_772_2,
            ),
            ((5, 10_000_000), (12, 10_000_000), 0.951_873_853_653_713_3),
        ];
        for (a, b, want) in cases {
            let got = prob_b_beats_a(a, b).unwrap();
            assert!((got - want).abs() < 1e-13, "{a:?} {b:?}: {got} vs {want}");
            let reverse = prob_b_beats_a(b, a).unwrap();
            assert!((reverse - (1.0 - want)).abs() < 1e-13, "{reverse}");
        }
    }

    #[test]
    fn quadrature_matches_closed_form_when_a_third_arm_is_hopeless() {
        // A third arm far below the others changes nothing for them, so the k = 3 quadrature
        // must reproduce the exact two-arm answer — including near p = 1 (mirrored grid) and at
        // n = 1e7 where sd/mean is tiny.
        let scenarios = [
            ((100, 1000), (120, 1000), (0, 1000)),
            (
                (320_000, 10_000_000),
                (321_000, 10_000_000),
                (100_000, 10_000_000),
            ),
            (
                (10_000_000, 10_000_000),
                (9_999_990, 10_000_000),
                (5_000_000, 10_000_000),
            ),
            (
                (999_000, 1_000_000),
                (999_100, 1_000_000),
                (900_000, 1_000_000),
            ),
        ];
        for (a, b, c) in scenarios {
            let pair_prob = prob_best(&[a, b]).unwrap();
            let pair_loss = expected_loss(&[a, b]).unwrap();
            let three = summarize(&[a, b, c], Objective::Maximize).unwrap();
            for i in 0..2 {
                let d = (three.prob_best[i] - pair_prob[i]).abs();
                assert!(
                    d < 1e-10,
                    "{a:?} {b:?}: P(best) {:?} vs {pair_prob:?}",
                    three.prob_best
                );
                let tol = 1e-12_f64.max(1e-8 * pair_loss[i]);
                let d = (three.expected_loss[i] - pair_loss[i]).abs();
                assert!(
                    d < tol,
                    "{a:?} {b:?}: loss {:?} vs {pair_loss:?}",
                    three.expected_loss
                );
            }
            assert!(three.prob_best[2] < 1e-12, "{:?}", three.prob_best);
        }
    }

    #[test]
    fn far_tail_probabilities_keep_relative_precision() {
        // 10% vs 20% at n = 10_000 each: P(A > B) ≈ 1e-90-ish; both directions must agree that
        // they sum to one and the tiny one must be positive.
        let (b_wins, a_wins) = prob_greater(
            BetaPosterior::from_counts(2000, 10_000).unwrap(),
            BetaPosterior::from_counts(1000, 10_000).unwrap(),
        );
        assert!(a_wins > 0.0 && a_wins < 1e-80, "{a_wins}");
        assert_eq!(b_wins, 1.0);
    }

    #[test]
    fn tiny_samples_use_the_short_exact_sum() {
        // Beta(1,1) vs Beta(1,1): 1/2. Beta(2,1) vs Beta(1,1): P = 2/3.
        assert!((prob_b_beats_a((0, 0), (0, 0)).unwrap() - 0.5).abs() < 1e-13);
        assert!((prob_b_beats_a((0, 0), (1, 1)).unwrap() - 2.0 / 3.0).abs() < 1e-13);
    }

    #[test]
    fn minimize_objective_ranks_the_lower_rate_first() {
        let s = summarize(&[(100, 1000), (50, 1000), (80, 1000)], Objective::Minimize).unwrap();
        let best = s
            .prob_best
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .unwrap()
            .0;
        assert_eq!(best, 1);
    }
}
