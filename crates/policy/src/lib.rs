//! Winner decisions and results statistics: pure functions of per-variant figures.
//!
//! This crate owns what Verdict concludes from data: the winner policy ([`evaluate`]: SRM
//! gate, guardrails, simple-rate or Bayesian rule, mSPRT peeking guard, every blocker named)
//! and the statistics a results page shows ([`analysis::analyze`]). It takes figures in
//! (`verdict_domain::VariantCounts`, [`ArmFigures`]) and the time elapsed, and gives numbers
//! and a verdict out.
//!
//! It must not do IO, read the clock, spawn tasks or draw random numbers: the evaluation job
//! (`verdict-aggregator`) loads figures and persists the decision; the decision-quality
//! simulation (`verdict-simulation`) draws the random data it feeds in.
//!
//! # Layout
//! - [`rules`]: [`evaluate`] and its input, blockers, verdict and peeking-guard state.
//! - [`analysis`]: the statistics of one metric across an experiment's variants.

pub mod analysis;
pub mod rules;

pub use rules::{
    ArmFigures, ArmResult, Blocker, CREDIBLE_LEVEL, Evaluation, EvaluationInput, GuardOutcome,
    GuardState, PairMax, PolicyError, SRM_THRESHOLD, Verdict, evaluate, evaluate_decision_only,
    to_stats_objective,
};
