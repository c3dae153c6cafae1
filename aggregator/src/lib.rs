//! Rollups and winner evaluation: the jobs that turn raw events into decisions.
//!
//! This crate owns the *policy* (pure: given per-variant figures, decide or explain why
//! not) and the jobs that feed it from the store. The policy does no IO; the jobs do no
//! statistics of their own (that is `verdict-stats`).
//!
//! # Layout
//! - [`analysis`]: pure results statistics of one metric (what `GET …/results` shows).
//! - [`counts`]: a metric's per-variant figures, from the rollups or, when a range, window
//!   or exposure event applies, from raw events (what results and evaluation read).
//! - [`jobs`]: the aggregation job (drives `Store::rollup` until caught up).
//! - [`evaluate`]: the evaluation job (figures → policy → recorded decision).
//! - [`policy`]: pure winner evaluation (SRM gate, guardrails, simple-rate or Bayesian
//!   Beta rule, mSPRT peeking guard).
//! - `bin/decision_quality.rs`: the simulation that measures false-winner rate and power.

pub mod analysis;
pub mod counts;
pub mod evaluate;
pub mod jobs;
pub mod policy;
