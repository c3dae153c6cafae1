//! Pure domain model of Verdict.
//!
//! This crate owns the vocabulary every other crate speaks: experiments and their variants,
//! metrics and winner policies, the status machine, targeting rules and audiences, subjects'
//! assignments and raw events, and the GrowthBook-compatible assignment hashing. It validates
//! input (reporting every bad field at once) and makes the decisions that need no IO.
//!
//! It must not do IO, spawn tasks, read the clock or draw random numbers: callers pass the
//! current time and any generated ids or salts in. That keeps every rule here testable as a
//! plain function and lets the store, API and jobs share one definition of each rule.
//!
//! # Layout
//! - [`validation`]: [`Problems`], the "every bad field" error type, and
//!   key syntax.
//! - [`scope`]: environment / organization scoping.
//! - [`experiment`]: experiments, variants, winner policy; [`ExperimentInput`] and its
//!   validation into an [`Experiment`].
//! - [`metric`]: metrics, their kinds and roles, caps, guardrail margins and the mSPRT
//!   mixing scale τ.
//! - [`status`]: the status machine (`draft → running ⇄ paused → completed`, any → archived).
//! - [`targeting`]: rules (OR of AND conditions), operators and their evaluation.
//! - [`audience`]: reusable rule sets per environment.
//! - [`assignment`]: stored assignments and the bucketing of a subject into a variant.
//! - [`event`]: raw events as sent and as stored.
//! - [`breakdown`]: the dimension results are broken down by, and its segments.
//! - [`figures`]: per-variant figures of a metric event (what results and decisions read).
//! - [`outbox`]: the webhook messages a state change causes (written with the change).
//! - [`threshold`]: metric thresholds and when a crossing is announced.
//! - [`webhook`]: webhook endpoints and deliveries, and the rules every store adapter applies
//!   to them (health, disabling, secret rotation, completing a delivery).
//! - [`snapshot`]: the winner snapshot served, cached and published on change.
//! - [`environment`]: environments (`production`, `staging`, …).
//! - [`mod@error_chain`]: an error with its causes on one line.
//! - [`api_key`]: API keys and the roles they carry.
//! - [`rights`]: rights, the built-in roles and custom ones.
//! - [`hashing`]: GrowthBook hash v1/v2, bucket ranges, `chooseVariation`, namespaces.
//! - [`growthbook`]: live experiments as the GrowthBook SDK payload.
//! - [`publication`]: the recorded versions of a scope's published config snapshot.
//! - [`namespace`]: an experiment's slice of a namespace (mutual exclusion).

pub mod api_key;
pub mod assignment;
pub mod audience;
pub mod breakdown;
pub mod environment;
pub mod error_chain;
pub mod event;
pub mod experiment;
pub mod figures;
pub mod growthbook;
pub mod hashing;
pub mod metric;
pub mod namespace;
pub mod outbox;
pub mod publication;
pub mod rights;
pub mod scope;
pub mod snapshot;
pub mod status;
pub mod targeting;
pub mod threshold;
pub mod validation;
pub mod webhook;

pub use api_key::ApiKey;
pub use assignment::Assignment;
pub use audience::Audience;
pub use breakdown::{Breakdown, DimensionSource, SegmentKind};
pub use environment::Environment;
pub use error_chain::{ErrorChain, error_chain};
pub use event::{EventRecord, NewEvent};
pub use experiment::{
    Experiment, ExperimentInput, PolicyMode, RetentionOverride, StatMethod, Variant, Winner,
    WinnerPolicy,
};
pub use figures::VariantCounts;
pub use metric::{
    Cap, DEFAULT_GUARDRAIL_MARGIN, Margin, Metric, MetricKind, MetricRole, Objective,
};
pub use namespace::Namespace;
pub use outbox::{EventType, OutboxMessage};
pub use publication::{PendingPublish, Publication};
pub use rights::{Right, Rights, RoleBook};
pub use scope::Scope;
pub use snapshot::{MetricsSnapshot, VariantMetrics, WinnerSnapshot};
pub use status::{Status, TransitionError};
pub use targeting::{Condition, Operator, Rule, Targeting};
pub use threshold::{MetricThreshold, ThresholdState, ThresholdStatistic};
pub use validation::{Problem, Problems};
