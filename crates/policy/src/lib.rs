//! Winner decisions and results statistics: pure functions of per-variant figures.
//!
//! This crate owns what Verdict concludes from data: the winner policy ([`evaluate`]: SRM
//! gate, simple-rate or Bayesian rule on the primary metric of any kind, mSPRT peeking guard,
//! guardrail metrics, every blocker named) and the statistics a results page shows
//! ([`analysis::analyze_metric`] per metric, [`analysis::srm`]). It takes figures in
//! (`verdict_domain::VariantCounts`, [`ArmFigures`]) and the time elapsed, and gives numbers
//! and a verdict out.
//!
//! It must not do IO, read the clock, spawn tasks or draw random numbers: the evaluation job
//! (`verdict-aggregator`) loads figures (turning a percentile cap into a value first) and
//! persists the decision and the [`GuardState`]; the decision-quality simulation
//! (`verdict-simulation`) draws the random data it feeds in.
//!
//! # Layout
//! - [`rules`]: [`evaluate`], its input, blockers and verdict.
//! - [`estimate`]: per-kind estimates of one arm (rate, mean per subject, value per event),
//!   their differences and variances, and where the mSPRT's τ comes from.
//! - [`guard`]: [`GuardState`], what the always-valid tests remember between evaluations.
//! - [`guardrail`]: guardrail metrics (credibly worse, non-inferiority within a margin).
//! - [`needs`]: how many more subjects per arm a blocker needs, where that can be estimated.
//! - [`analysis`]: the statistics of one metric across an experiment's variants.
//! - [`thresholds`]: the figures metric thresholds watch.

pub mod analysis;
pub mod estimate;
pub mod guard;
pub mod guardrail;
pub mod needs;
pub mod rules;
pub mod thresholds;

pub use estimate::{EstimateKind, TauSource};
pub use guard::{GuardState, GuardrailInterval, GuardrailState, MetricKey, PairMax};
pub use guardrail::{
    GuardrailArm, GuardrailCondition, GuardrailFigures, GuardrailInput, GuardrailReport,
    GuardrailStatus,
};
pub use needs::{NeedEstimate, SubjectsNeeded};
pub use rules::{
    ArmFigures, ArmResult, Blocker, CREDIBLE_LEVEL, Evaluation, EvaluationInput, GuardOutcome,
    PolicyError, SRM_THRESHOLD, Verdict, evaluate, evaluate_decision_only, to_stats_objective,
};
