//! Pure statistics for Verdict's experiment analysis.
//!
//! # What this crate owns
//!
//! The numbers shown on an experiment's results page and behind its winner decision: Beta
//! posteriors and credible intervals of conversion rates, normal posteriors of metric means
//! (per-subject means, and ratio metrics with delta-method variances), the probability that a
//! variant beats control or is best of up to eight arms, the expected loss of shipping each
//! arm, the sample-ratio-mismatch check, Welch's t-test for mean metrics, and the mixture SPRT
//! with its always-valid confidence interval for sequential monitoring.
//!
//! # What it must not do
//!
//! No IO, no clocks, no async, no global mutable state, no randomness: every function is a
//! deterministic function of its arguments (P(best) uses fixed quadrature, never Monte Carlo),
//! so results are reproducible and cacheable. Loading counts, scheduling analyses and
//! persisting results belong to the callers.
//!
//! # Accuracy
//!
//! Probabilities are exact to ~1e-12 or better up to n = 1e7 per arm (checked against
//! 40-digit reference vectors in `testdata/stats_vectors.json`); see [`bayes`] for how the
//! closed form avoids the float64 log-gamma drift of the textbook sum. Normal-posterior
//! figures are checked against 32-digit vectors in `crates/stats/testdata/normal_vectors.json`
//! (to 1e-13 absolute for k ≥ 3, and 1e-12 relative into the far tails for two arms); sums
//! that cancel (differences of close means, ratio residuals) are carried in double-double.
//!
//! # Layout
//!
//! * [`beta`] — [`BetaPosterior`]: Beta(1 + c, 1 + n − c), mean, CDF, quantiles, equal-tailed
//!   credible intervals.
//! * [`bayes`] — [`prob_b_beats_a`], [`prob_best`], [`expected_loss`],
//!   [`pairwise_expected_loss`], [`summarize`] with an [`Objective`] (maximize / minimize).
//! * [`normal`] — normal posteriors `N(mean, std_error²)` of metric means:
//!   [`prob_beats_control_normal`], [`prob_best_normal`], [`expected_loss_normal`],
//!   [`pairwise_expected_loss_normal`], [`summarize_normal`].
//! * [`ratio`] — [`RatioStats`]: `Σ value / Σ events` with subjects as the unit and its
//!   delta-method variance.
//! * [`srm`] — [`srm_check`]: Pearson χ² against configured weights.
//! * [`welch`] — [`SummaryStats`] (cancellation-free variance, double-double mean, standard
//!   error), [`mean_difference`] and [`welch_t_test`].
//! * [`msprt`] — [`mixture_likelihood_ratio`] (rates), [`mixture_likelihood_ratio_normal`]
//!   (means), [`always_valid_interval`] and [`rejects`].
//! * `quadrature` (private) — the fixed Gauss–Legendre engine behind P(best) for k ≥ 3 Beta
//!   posteriors.
//! * `normal_quadrature` (private) — the same rule in each arm's standard units, for k ≥ 3
//!   normal posteriors (and point masses).
//! * `dd` (private) — double-double arithmetic for differences and residuals that would
//!   otherwise cancel.
//! * `special` (private) — log-gamma, log-beta, incomplete beta/gamma, Student-t and normal
//!   functions accurate for arguments up to ~1e8.
//! * [`StatsError`] — the single error type; only invalid input produces errors.

pub mod bayes;
pub mod beta;
mod dd;
mod error;
pub mod msprt;
pub mod normal;
mod normal_quadrature;
mod quadrature;
pub mod ratio;
mod special;
pub mod srm;
pub mod welch;

pub use bayes::{
    BayesSummary, MAX_ARMS, Objective, PairwiseLoss, expected_loss, pairwise_expected_loss,
    prob_b_beats_a, prob_best, summarize,
};
pub use beta::{BetaPosterior, DEFAULT_CREDIBLE_LEVEL, density_curves};
pub use error::StatsError;
pub use msprt::{
    Msprt, always_valid_interval, mixture_likelihood_ratio, mixture_likelihood_ratio_normal,
    rejects,
};
pub use normal::{
    expected_loss_normal, pairwise_expected_loss_normal, prob_beats_control_normal,
    prob_best_normal, summarize_normal,
};
pub use ratio::RatioStats;
pub use srm::{
    DEFAULT_SRM_THRESHOLD, SrmResult, equal_weights, srm_check, srm_check_with_threshold,
};
pub use welch::{SummaryStats, WelchResult, mean_difference, welch_t_test};
