//! Rollups and winner evaluation: the jobs that turn raw events into decisions.
//!
//! This crate drives the store and the pure policy: it reads figures (from the rollups, or
//! from raw events where attribution needs them), hands them to `verdict-policy`, and records
//! what it decides. The statistics and the rules themselves live in `verdict-policy`.
//!
//! # Layout
//! - [`counts`]: a metric's per-variant figures, from the rollups or, when a range, window
//!   or exposure event applies, from raw events (what results and evaluation read).
//! - [`jobs`]: the aggregation job (drives `Store::rollup` until caught up).
//! - [`evaluate`]: the evaluation job (figures → policy → recorded decision).
//! - [`lifecycle`]: the lifecycle job (experiments start and end on their schedule, with
//!   the policy's winner at the end when it has one).

pub mod counts;
pub mod evaluate;
pub mod jobs;
pub mod lifecycle;
