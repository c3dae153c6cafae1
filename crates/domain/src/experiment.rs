//! Experiments, variants and winner policies, and their validation (metrics are in
//! [`crate::metric`]).
//!
//! [`ExperimentInput`] is what an experimenter sends; [`ExperimentInput::into_experiment`]
//! turns it into an [`Experiment`] or returns every problem at once. [`Experiment::check`]
//! is the one definition of "a valid experiment", used on create and after every update.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;

use crate::breakdown::Breakdown;
pub use crate::metric::{Metric, MetricKind, MetricRole, Objective};
use crate::namespace::Namespace;
use crate::scope::Scope;
use crate::status::Status;
use crate::targeting::Targeting;
use crate::threshold::{MetricThreshold, check_thresholds};
use crate::validation::{Problems, check_key};

/// Weights must sum to 1 within this tolerance.
pub const WEIGHT_TOLERANCE: f64 = 1e-6;
/// Most variants an experiment may have (A/B/n with n ≤ 8 keeps exact statistics cheap).
pub const MAX_VARIANTS: usize = 8;
/// Longest name and description accepted.
pub const MAX_NAME_LEN: usize = 200;
pub const MAX_DESCRIPTION_LEN: usize = 10_000;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Variant {
    pub key: String,
    pub name: String,
    pub weight: f64,
    /// Any JSON the app needs to render this variant.
    pub config: Value,
    /// Marks the control; when no variant is marked, the first one is the control.
    #[serde(default)]
    pub control: bool,
    /// An explicit bucket range `[start, end)` of the hash space (GrowthBook's `ranges`),
    /// on every variant or on none. With ranges they alone decide which subjects get which
    /// variant: `weight` is the range's share of their total width, the experiment's
    /// `coverage` their total width.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Vec<f64>>, min_items = 2, max_items = 2))]
    pub range: Option<[f64; 2]>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum PolicyMode {
    /// Decisions only by an explicit override.
    Manual,
    /// The evaluator decides when the policy's conditions hold.
    #[default]
    Automatic,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum StatMethod {
    SimpleRate,
    #[default]
    BayesianBeta,
}

/// When and how a winner is decided. Defaults follow SPEC §2.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields, default)]
pub struct WinnerPolicy {
    pub mode: PolicyMode,
    pub stat_method: StatMethod,
    /// No decision before this many seconds after the experiment started.
    pub pick_after_seconds: u64,
    /// Every variant needs at least this many assigned subjects.
    pub min_assignments: u64,
    /// Every variant needs at least this many converted subjects (subjects with at least
    /// one event of the primary metric, whatever its kind).
    pub min_conversions: u64,
    /// The winner must beat the runner-up by at least this, in the primary metric's units:
    /// rate points for `binomial`, events or value per subject for `count` and `sum`, value
    /// per event for `mean`.
    pub min_delta: f64,
    /// The decision's direction; defaults to the primary metric's objective.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub objective: Option<Objective>,
    /// `bayesian_beta`: P(best) must reach this.
    pub probability_threshold: f64,
    /// `bayesian_beta`: the winner's expected loss must not exceed this. For a `binomial`
    /// primary metric an absolute rate (0.0025 = a quarter of a point); for `count`, `sum` and
    /// `mean` a fraction of the control's estimate (0.0025 = 0.25% of it), so that the
    /// threshold means the same whatever the metric's unit (cents or dollars, ms or s).
    pub max_expected_loss: f64,
    /// Always-valid (mSPRT) test against the runner-up must also reject "no difference".
    pub peeking_guard: bool,
    /// Significance level of the peeking guard.
    pub alpha: f64,
    /// Mixing variance τ² of the mSPRT on a difference of rates, for `binomial` metrics
    /// (primary and guardrails) that set no `tau` of their own; none = the statistics
    /// crate's default (τ = 0.01). Other kinds take `tau` on the metric.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tau_squared: Option<f64>,
    /// Guardrails: a variant whose probability of being worse than the control on a
    /// guardrail metric reaches this gets no decision.
    pub guardrail_probability: f64,
    /// A variant an experimenter declared the winner by hand.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub override_variant: Option<String>,
}

impl Default for WinnerPolicy {
    fn default() -> Self {
        Self {
            mode: PolicyMode::Automatic,
            stat_method: StatMethod::BayesianBeta,
            pick_after_seconds: 0,
            min_assignments: 100,
            min_conversions: 10,
            min_delta: 0.0,
            objective: None,
            probability_threshold: 0.95,
            max_expected_loss: 0.0025,
            peeking_guard: true,
            alpha: 0.05,
            tau_squared: None,
            guardrail_probability: 0.95,
            override_variant: None,
        }
    }
}

impl WinnerPolicy {
    fn check(&self, p: &mut Problems, variant_keys: &HashSet<&str>) {
        if !(self.probability_threshold > 0.5 && self.probability_threshold < 1.0) {
            p.push(
                "policy.probability_threshold",
                "must be greater than 0.5 and less than 1",
            );
        }
        if !(0.0..=1.0).contains(&self.max_expected_loss) {
            p.push("policy.max_expected_loss", "must be between 0 and 1");
        }
        if !(self.min_delta.is_finite() && self.min_delta >= 0.0) {
            p.push("policy.min_delta", "must be a number ≥ 0");
        }
        if !(self.guardrail_probability > 0.5 && self.guardrail_probability < 1.0) {
            p.push(
                "policy.guardrail_probability",
                "must be greater than 0.5 and less than 1",
            );
        }
        if !(self.alpha > 0.0 && self.alpha <= 0.5) {
            p.push("policy.alpha", "must be greater than 0 and at most 0.5");
        }
        if let Some(t) = self.tau_squared
            && !(t > 0.0 && t.is_finite())
        {
            p.push("policy.tau_squared", "must be a positive number");
        }
        if let Some(v) = &self.override_variant
            && !variant_keys.contains(v.as_str())
        {
            p.push(
                "policy.override_variant",
                format!("'{v}' is not a variant of this experiment"),
            );
        }
    }
}

/// How subjects are assigned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AssignmentSettings {
    /// The randomization unit: which identity of a request is the subject that is hashed,
    /// stored and credited with events (see [`Unit`]). An experiment stored with another
    /// name (a free label once) is served as `subject_id`.
    pub unit: String,
    /// The attribute whose value identifies the subject when `unit` is `custom`.
    #[serde(default)]
    pub unit_attribute: Option<String>,
    /// Targeting attributes kept with each new assignment (its context: app version,
    /// platform, country, …), up to [`MAX_CONTEXT_ATTRIBUTES`].
    #[serde(default)]
    pub context: Vec<String>,
    /// Keep a subject's first assignment even when weights change.
    pub sticky: bool,
    /// Hash seed; random per experiment unless given.
    pub salt: String,
    /// GrowthBook hash version (1 or 2).
    pub hash_version: u8,
    /// Record the exposure event (the experiment's `exposure_event`, else `exposure`) when a
    /// subject is first assigned, once per subject, at its assignment time.
    #[serde(default)]
    pub auto_exposure: bool,
}

/// The event counted as an exposure when an experiment names no `exposure_event`.
pub const DEFAULT_EXPOSURE_EVENT: &str = "exposure";

/// Most attributes an experiment keeps with each assignment.
pub const MAX_CONTEXT_ATTRIBUTES: usize = 20;

/// Where the id of an experiment's subject comes from (`assignment.unit`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// The `subject_id` the caller gives (the default).
    SubjectId,
    /// An anonymous visitor: the `x-anon-id` header or an `anon_id` parameter.
    AnonId,
    /// A signed-in user: a `user_id` parameter, else the subject of the caller's JWT.
    UserId,
    /// An organization (all its people see one variant): an `org_id` parameter, else the
    /// organization the request acts in.
    OrgId,
    /// The value of the attribute `assignment.unit_attribute` (e.g. a device id).
    Custom,
}

impl Unit {
    pub const ALL: [Unit; 5] = [
        Unit::SubjectId,
        Unit::AnonId,
        Unit::UserId,
        Unit::OrgId,
        Unit::Custom,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Unit::SubjectId => "subject_id",
            Unit::AnonId => "anon_id",
            Unit::UserId => "user_id",
            Unit::OrgId => "org_id",
            Unit::Custom => "custom",
        }
    }

    pub fn parse(name: &str) -> Option<Unit> {
        Unit::ALL.into_iter().find(|u| u.as_str() == name)
    }
}

impl AssignmentSettings {
    /// The unit subjects are identified by; a stored name Verdict does not know is
    /// `subject_id`, what such experiments were always served as.
    pub fn unit(&self) -> Unit {
        Unit::parse(&self.unit).unwrap_or(Unit::SubjectId)
    }

    /// The declared context attributes `attributes` carries, to keep with a new assignment;
    /// `None` when it carries none of them.
    pub fn context_of(
        &self,
        attributes: &crate::targeting::Attributes,
    ) -> Option<serde_json::Map<String, Value>> {
        let kept: serde_json::Map<String, Value> = self
            .context
            .iter()
            .filter_map(|name| Some((name.clone(), attributes.get(name)?.clone())))
            .collect();
        (!kept.is_empty()).then_some(kept)
    }
}

/// A decided winner and the numbers behind it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Winner {
    pub variant: String,
    #[serde(with = "time::serde::rfc3339")]
    pub decided_at: OffsetDateTime,
    /// `automatic` (the evaluator) or `manual` (an override).
    pub source: PolicyMode,
    /// Policy, thresholds and statistics at decision time.
    #[serde(default)]
    pub details: Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Experiment {
    /// Stable id, accepted wherever a key is.
    pub id: String,
    #[serde(flatten)]
    pub scope: Scope,
    pub key: String,
    pub name: String,
    pub description: String,
    pub status: Status,
    pub variants: Vec<Variant>,
    /// Share of eligible subjects that enter the experiment (0..=1).
    pub coverage: f64,
    pub targeting: Targeting,
    pub audience: Option<String>,
    /// Its slice of a namespace: experiments in disjoint slices of one namespace share no
    /// subject.
    #[serde(default)]
    pub namespace: Option<Namespace>,
    pub assignment: AssignmentSettings,
    pub primary_metric: Metric,
    pub secondary_metrics: Vec<Metric>,
    pub guardrail_metrics: Vec<Metric>,
    /// When set, only subjects who sent this event count, from their first exposure.
    pub exposure_event: Option<String>,
    /// Alerts on metric figures, announced by `experiment.metrics_threshold_reached`.
    #[serde(default)]
    pub thresholds: Vec<MetricThreshold>,
    /// The dimension results can be broken down by (`GET …/results?breakdown=true`).
    #[serde(default)]
    pub breakdown: Option<Breakdown>,
    pub policy: WinnerPolicy,
    /// Overrides of the retention settings for this experiment's data.
    #[serde(default)]
    pub retention: RetentionOverride,
    pub winner: Option<Winner>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub started_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub completed_at: Option<OffsetDateTime>,
    /// When a draft starts by itself (the `lifecycle` job starts it within a minute).
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub start_at: Option<OffsetDateTime>,
    /// When it completes by itself (at most one of this and `evaluation_period_days`).
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub ends_at: Option<OffsetDateTime>,
    /// Days after its start when it completes by itself.
    #[serde(default)]
    pub evaluation_period_days: Option<u32>,
    /// Optimistic concurrency version, incremented by every write.
    pub version: u64,
}

impl Experiment {
    /// Every problem of this experiment (empty when valid).
    pub fn check(&self) -> Problems {
        let mut p = Problems::new();
        self.scope.check(&mut p);
        check_key(&mut p, "key", &self.key);
        if self.name.chars().count() > MAX_NAME_LEN {
            p.push("name", format!("must be at most {MAX_NAME_LEN} characters"));
        }
        if self.description.chars().count() > MAX_DESCRIPTION_LEN {
            p.push(
                "description",
                format!("must be at most {MAX_DESCRIPTION_LEN} characters"),
            );
        }
        check_variants(&mut p, &self.variants);
        if !(0.0..=1.0).contains(&self.coverage) {
            p.push("coverage", "must be between 0 and 1");
        } else if let Some(total) = ranges_total(&self.variants)
            && (self.coverage - total).abs() > WEIGHT_TOLERANCE
        {
            p.push(
                "coverage",
                format!(
                    "with explicit variant ranges, coverage is their total width ({total}): \
                     leave it out"
                ),
            );
        }
        self.targeting.check(&mut p, "targeting");
        if let Some(a) = &self.audience {
            check_key(&mut p, "audience", a);
        }
        if let Some(n) = &self.namespace {
            n.check(&mut p, "namespace");
        }
        if self.assignment.unit.trim().is_empty() {
            p.push("assignment.unit", "must not be empty");
        }
        if self.assignment.salt.is_empty() {
            p.push("assignment.salt", "must not be empty");
        }
        if !matches!(self.assignment.hash_version, 1 | 2) {
            p.push("assignment.hash_version", "must be 1 or 2");
        }
        self.primary_metric
            .check(&mut p, "primary_metric", MetricRole::Primary);
        for (i, m) in self.secondary_metrics.iter().enumerate() {
            m.check(
                &mut p,
                &format!("secondary_metrics[{i}]"),
                MetricRole::Secondary,
            );
        }
        for (i, m) in self.guardrail_metrics.iter().enumerate() {
            m.check(
                &mut p,
                &format!("guardrail_metrics[{i}]"),
                MetricRole::Guardrail,
            );
        }
        if let Some(e) = &self.exposure_event {
            check_key(&mut p, "exposure_event", e);
        }
        let metric_events: Vec<&str> = self.metrics().map(|(m, _)| m.event.as_str()).collect();
        check_thresholds(
            &mut p,
            &self.thresholds,
            &metric_events,
            self.variants.iter().map(|v| v.key.as_str()),
        );
        if let Some(b) = &self.breakdown {
            b.check(&mut p, &self.assignment.context);
        }
        self.retention.check(&mut p);
        self.check_schedule(&mut p);
        let keys: HashSet<&str> = self.variants.iter().map(|v| v.key.as_str()).collect();
        self.policy.check(&mut p, &keys);
        self.check_policy_against_metrics(&mut p);
        p
    }

    /// The policy settings whose meaning depends on the metrics' kinds.
    fn check_policy_against_metrics(&self, p: &mut Problems) {
        if self.primary_metric.kind == MetricKind::Binomial && self.policy.min_delta > 1.0 {
            p.push(
                "policy.min_delta",
                "must be at most 1 for a binomial primary metric (a difference of rates)",
            );
        }
        let any_binomial = std::iter::once(&self.primary_metric)
            .chain(&self.guardrail_metrics)
            .any(|m| m.kind == MetricKind::Binomial);
        if self.policy.tau_squared.is_some() && !any_binomial {
            p.push(
                "policy.tau_squared",
                "applies to binomial primary and guardrail metrics, and this experiment has \
                 none: set `tau` on the metric instead",
            );
        }
    }

    /// The metrics of this experiment with their roles: the primary first, then the
    /// secondary and the guardrail metrics in their configured order.
    pub fn metrics(&self) -> impl Iterator<Item = (&Metric, MetricRole)> {
        std::iter::once((&self.primary_metric, MetricRole::Primary))
            .chain(
                self.secondary_metrics
                    .iter()
                    .map(|m| (m, MetricRole::Secondary)),
            )
            .chain(
                self.guardrail_metrics
                    .iter()
                    .map(|m| (m, MetricRole::Guardrail)),
            )
    }

    /// Days since the experiment started, to its completion once completed (fractional,
    /// paused time included); `None` before it starts.
    pub fn days_running(&self, now: OffsetDateTime) -> Option<f64> {
        let start = self.started_at?;
        let end = self.completed_at.unwrap_or(now);
        Some((end - start).as_seconds_f64().max(0.0) / 86_400.0)
    }

    /// The event that counts as an exposure: `exposure_event`, else
    /// [`DEFAULT_EXPOSURE_EVENT`].
    pub fn exposure_event_name(&self) -> &str {
        self.exposure_event
            .as_deref()
            .unwrap_or(DEFAULT_EXPOSURE_EVENT)
    }

    /// Index of the control variant: the flagged one, else the first.
    pub fn control_index(&self) -> usize {
        self.variants.iter().position(|v| v.control).unwrap_or(0)
    }

    pub fn variant(&self, key: &str) -> Option<&Variant> {
        self.variants.iter().find(|v| v.key == key)
    }

    /// Each variant's share of the subjects in the experiment, in variant order (with
    /// explicit ranges, each range's share of their total width).
    pub fn weights(&self) -> Vec<f64> {
        self.variants.iter().map(|v| v.weight).collect()
    }

    /// Each variant's bucket range, in variant order: the explicit ranges when the variants
    /// have them, else GrowthBook's ranges for the weights and the coverage.
    pub fn bucket_ranges(&self) -> Vec<(f64, f64)> {
        explicit_ranges(&self.variants).unwrap_or_else(|| {
            crate::hashing::bucket_ranges(self.variants.len(), self.coverage, Some(&self.weights()))
        })
    }

    fn check_schedule(&self, p: &mut Problems) {
        if let Some(days) = self.evaluation_period_days
            && !(1..=MAX_EVALUATION_PERIOD_DAYS).contains(&days)
        {
            p.push(
                "evaluation_period_days",
                format!("must be between 1 and {MAX_EVALUATION_PERIOD_DAYS} days"),
            );
        }
        if self.ends_at.is_some() && self.evaluation_period_days.is_some() {
            p.push(
                "ends_at",
                "give ends_at or evaluation_period_days, not both",
            );
        }
        if let (Some(start), Some(end)) = (self.start_at, self.ends_at)
            && end <= start
        {
            p.push("ends_at", "must be after start_at");
        }
    }

    /// When the experiment completes by itself: `ends_at`, else `evaluation_period_days`
    /// after it started (unknown before it has).
    pub fn scheduled_end(&self) -> Option<OffsetDateTime> {
        self.ends_at.or_else(|| {
            let days = self.evaluation_period_days?;
            Some(self.started_at? + time::Duration::days(i64::from(days)))
        })
    }

    /// The status its schedule calls for at `now`, if that differs from its own: a draft
    /// whose `start_at` has come runs; a running or paused experiment whose end has come
    /// completes.
    pub fn scheduled_status(&self, now: OffsetDateTime) -> Option<Status> {
        match self.status {
            Status::Draft if self.start_at.is_some_and(|at| at <= now) => Some(Status::Running),
            Status::Running | Status::Paused
                if self.scheduled_end().is_some_and(|at| at <= now) =>
            {
                Some(Status::Completed)
            }
            _ => None,
        }
    }

    /// Change the schedule: each `Some` sets its field, `Some(None)` removes it. `start_at`
    /// changes only on a draft, and a new `ends_at` must lie ahead of `now`; problems go to
    /// `p` (the rest is [`Experiment::check`]'s).
    pub fn reschedule(
        &mut self,
        start_at: Option<Option<OffsetDateTime>>,
        ends_at: Option<Option<OffsetDateTime>>,
        evaluation_period_days: Option<Option<u32>>,
        now: OffsetDateTime,
        p: &mut Problems,
    ) {
        if let Some(start_at) = start_at {
            if self.status != Status::Draft {
                p.push(
                    "start_at",
                    "the experiment has started: start_at applies to drafts only",
                );
            }
            self.start_at = start_at;
        }
        if let Some(ends_at) = ends_at {
            check_end_ahead(ends_at, now, p);
            self.ends_at = ends_at;
        }
        if let Some(days) = evaluation_period_days {
            self.evaluation_period_days = days;
        }
    }

    /// Replace the variants. With explicit ranges the coverage becomes their total width,
    /// unless `coverage_given` (a coverage sent along, which [`Experiment::check`] then
    /// holds against the ranges).
    pub fn replace_variants(&mut self, variants: Vec<Variant>, coverage_given: bool) {
        if !coverage_given && let Some(total) = ranges_total(&variants) {
            self.coverage = total;
        }
        self.variants = variants;
    }

    /// Apply a status change decided by [`Status::transition_to`]: stamps `started_at` on
    /// the first start, `completed_at` on completion, and bumps the version. Stores call this
    /// inside their compare-and-set so every adapter records a transition the same way.
    pub fn apply_status(&mut self, to: Status, at: OffsetDateTime) {
        self.status = to;
        self.updated_at = at;
        self.version += 1;
        if to == Status::Running && self.started_at.is_none() {
            self.started_at = Some(at);
        }
        if to == Status::Completed {
            self.completed_at = Some(at);
        }
    }

    /// Record `winner`; with `complete`, a running or paused experiment also completes.
    /// Returns the status before, so callers can audit a status change. Bumps the version.
    pub fn apply_winner(&mut self, winner: Winner, complete: bool) -> Status {
        let before = self.status;
        let at = winner.decided_at;
        self.winner = Some(winner);
        self.updated_at = at;
        self.version += 1;
        if complete && matches!(self.status, Status::Running | Status::Paused) {
            self.status = Status::Completed;
            self.completed_at = Some(at);
        }
        before
    }

    /// The metric fed by `event`: the primary metric, else a secondary or guardrail metric.
    pub fn metric(&self, event: &str) -> Option<&Metric> {
        self.metric_with_role(event).map(|(m, _)| m)
    }

    /// [`Experiment::metric`] with the role it has (the first match, in the same order).
    pub fn metric_with_role(&self, event: &str) -> Option<(&Metric, MetricRole)> {
        self.metrics().find(|(m, _)| m.event == event)
    }

    /// The objective decisions follow: the policy's, else the primary metric's.
    pub fn decision_objective(&self) -> Objective {
        self.policy
            .objective
            .unwrap_or(self.primary_metric.objective)
    }
}

/// The variants' explicit ranges, in variant order, when every variant has one.
fn explicit_ranges(variants: &[Variant]) -> Option<Vec<(f64, f64)>> {
    if variants.is_empty() {
        return None;
    }
    variants
        .iter()
        .map(|v| v.range.map(|[start, end]| (start, end)))
        .collect()
}

/// The total width of the variants' explicit ranges, when every variant has one: the
/// share of all subjects the experiment holds.
pub fn ranges_total(variants: &[Variant]) -> Option<f64> {
    explicit_ranges(variants).map(|r| r.iter().map(|(start, end)| end - start).sum())
}

/// `[start, end]` with 0 ≤ start ≤ end ≤ 1.
fn range_in_bounds([start, end]: [f64; 2]) -> bool {
    0.0 <= start && start <= end && end <= 1.0
}

/// Every problem of explicit ranges: on every variant or none, each inside [0, 1], none
/// overlapping another, some traffic in all, and each weight its range's share.
fn check_ranges(p: &mut Problems, variants: &[Variant]) {
    let ranged = variants.iter().filter(|v| v.range.is_some()).count();
    if ranged != variants.len() {
        p.push("variants", "give a range for every variant, or for none");
        return;
    }
    let mut valid = Vec::with_capacity(variants.len());
    for (i, v) in variants.iter().enumerate() {
        let Some([start, end]) = v.range else {
            continue;
        };
        if range_in_bounds([start, end]) {
            valid.push((i, start, end));
        } else {
            p.push(
                format!("variants[{i}].range"),
                "must be [start, end] with 0 ≤ start ≤ end ≤ 1",
            );
        }
    }
    if valid.len() != variants.len() {
        return;
    }
    valid.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.2.total_cmp(&b.2)));
    let mut overlapping = false;
    for pair in valid.windows(2) {
        let ((i, _, end), (j, start, _)) = (pair[0], pair[1]);
        if end > start {
            overlapping = true;
            p.push(
                format!("variants[{j}].range"),
                format!(
                    "overlaps the range of variants[{i}] ('{}')",
                    variants[i].key
                ),
            );
        }
    }
    let total: f64 = valid.iter().map(|(_, start, end)| end - start).sum();
    if total <= 0.0 {
        p.push(
            "variants",
            "the ranges hold no subjects: their total width is 0",
        );
        return;
    }
    if overlapping {
        return;
    }
    for (i, start, end) in valid {
        let share = (end - start) / total;
        if (variants[i].weight - share).abs() > WEIGHT_TOLERANCE {
            p.push(
                format!("variants[{i}].weight"),
                format!(
                    "with explicit ranges, a variant's weight is its range's share of their \
                     total width ({share})"
                ),
            );
        }
    }
}

fn check_variants(p: &mut Problems, variants: &[Variant]) {
    if variants.len() < 2 {
        p.push("variants", "an experiment needs at least 2 variants");
    }
    if variants.len() > MAX_VARIANTS {
        p.push(
            "variants",
            format!("an experiment has at most {MAX_VARIANTS} variants"),
        );
    }
    let mut seen = HashSet::new();
    let mut sum = 0.0;
    let mut weights_ok = true;
    for (i, v) in variants.iter().enumerate() {
        check_key(p, &format!("variants[{i}].key"), &v.key);
        if !seen.insert(v.key.as_str()) {
            p.push(
                format!("variants[{i}].key"),
                format!("duplicate variant key '{}'", v.key),
            );
        }
        if !(v.weight.is_finite() && v.weight >= 0.0) {
            p.push(format!("variants[{i}].weight"), "must be a number ≥ 0");
            weights_ok = false;
        } else {
            sum += v.weight;
        }
        if v.name.chars().count() > MAX_NAME_LEN {
            p.push(
                format!("variants[{i}].name"),
                format!("at most {MAX_NAME_LEN} characters"),
            );
        }
    }
    if variants.iter().filter(|v| v.control).count() > 1 {
        p.push("variants", "at most one variant may be flagged as control");
    }
    if variants.iter().any(|v| v.range.is_some()) {
        check_ranges(p, variants);
    } else if weights_ok && !variants.is_empty() && (sum - 1.0).abs() > WEIGHT_TOLERANCE {
        p.push(
            "variants",
            format!("weights must sum to 1 (±1e-6); they sum to {sum}"),
        );
    }
}

/// A variant as sent by an experimenter; weights may be omitted on all variants for an
/// equal split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct VariantInput {
    pub key: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub weight: Option<f64>,
    #[serde(default)]
    pub config: Value,
    #[serde(default)]
    pub control: bool,
    /// An explicit bucket range `[start, end)` of the hash space, on every variant or on
    /// none, in place of weights (GrowthBook's `ranges`); see [`Variant::range`].
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Vec<f64>>, min_items = 2, max_items = 2))]
    pub range: Option<[f64; 2]>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AssignmentInput {
    #[serde(default)]
    pub unit: Option<String>,
    /// Must be `true` (the default): a subject keeps its first variant.
    #[serde(default)]
    pub sticky: Option<bool>,
    #[serde(default)]
    pub salt: Option<String>,
    #[serde(default)]
    pub hash_version: Option<u8>,
    /// Required when `unit` is `custom`: the attribute holding the subject's id.
    #[serde(default)]
    pub unit_attribute: Option<String>,
    /// Attributes to keep with each new assignment (default none).
    #[serde(default)]
    pub context: Vec<String>,
    /// Record the exposure event on each subject's first assignment (default `false`).
    #[serde(default)]
    pub auto_exposure: Option<bool>,
}

/// What an experimenter sends to create an experiment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ExperimentInput {
    pub key: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub description: String,
    pub variants: Vec<VariantInput>,
    #[serde(default)]
    pub coverage: Option<f64>,
    #[serde(default)]
    pub targeting: Targeting,
    #[serde(default)]
    pub audience: Option<String>,
    /// Its slice `[start, end)` of a namespace (mutually exclusive experiments).
    #[serde(default)]
    pub namespace: Option<Namespace>,
    #[serde(default)]
    pub assignment: AssignmentInput,
    #[serde(default)]
    pub primary_metric: Option<Metric>,
    #[serde(default)]
    pub secondary_metrics: Vec<Metric>,
    #[serde(default)]
    pub guardrail_metrics: Vec<Metric>,
    #[serde(default)]
    pub exposure_event: Option<String>,
    /// Alerts on metric figures (at most 20), announced once per crossing by an
    /// `experiment.metrics_threshold_reached` webhook.
    #[serde(default)]
    pub thresholds: Vec<MetricThreshold>,
    /// The one dimension results can be broken down by (assignment context or event meta).
    #[serde(default)]
    pub breakdown: Option<Breakdown>,
    #[serde(default)]
    pub policy: WinnerPolicy,
    #[serde(default)]
    pub retention: RetentionOverride,
    /// When the draft starts by itself (within a minute; RFC 3339).
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub start_at: Option<OffsetDateTime>,
    /// When it completes by itself (RFC 3339, in the future; not with
    /// `evaluation_period_days`).
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub ends_at: Option<OffsetDateTime>,
    /// Days after its start when it completes by itself (1 to 3,650).
    #[serde(default)]
    pub evaluation_period_days: Option<u32>,
}

/// How long one experiment's data is kept, overriding the `[retention]` settings; `None`
/// keeps the setting.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RetentionOverride {
    /// Days raw events are kept (once aggregated).
    #[serde(default)]
    pub raw_events_days: Option<u32>,
    /// Days hour and day buckets are kept.
    #[serde(default)]
    pub buckets_days: Option<u32>,
}

/// Longest retention accepted, in days (100 years).
pub const MAX_RETENTION_DAYS: u32 = 36_500;

/// Longest evaluation period accepted, in days (10 years).
pub const MAX_EVALUATION_PERIOD_DAYS: u32 = 3_650;

/// An `ends_at` being set must lie ahead of `now` (one already past would end the
/// experiment at once).
fn check_end_ahead(ends_at: Option<OffsetDateTime>, now: OffsetDateTime, p: &mut Problems) {
    if ends_at.is_some_and(|at| at <= now) {
        p.push("ends_at", "must be in the future");
    }
}

impl RetentionOverride {
    fn check(&self, p: &mut Problems) {
        for (field, days) in [
            ("retention.raw_events_days", self.raw_events_days),
            ("retention.buckets_days", self.buckets_days),
        ] {
            if let Some(d) = days
                && !(1..=MAX_RETENTION_DAYS).contains(&d)
            {
                p.push(
                    field,
                    format!("must be between 1 and {MAX_RETENTION_DAYS} days"),
                );
            }
        }
    }
}

/// Variants from what an experimenter sent: a name defaults to the key; weights given for
/// none of the variants split traffic equally. Weights given for only some are a problem,
/// pushed to `p` (those without one get the equal share, so the rest can still be checked).
/// With explicit ranges (checked by [`Experiment::check`]) a variant's weight is its range's
/// share of their total width, and giving a weight as well is a problem.
pub fn variants_from_input(input: Vec<VariantInput>, p: &mut Problems) -> Vec<Variant> {
    let given = input.iter().filter(|v| v.weight.is_some()).count();
    let ranged = input.iter().filter(|v| v.range.is_some()).count();
    if ranged == 0 && given != 0 && given != input.len() {
        p.push(
            "variants",
            "give a weight for every variant, or for none (equal split)",
        );
    }
    if ranged != 0 {
        for (i, v) in input.iter().enumerate() {
            if v.weight.is_some() {
                p.push(
                    format!("variants[{i}].weight"),
                    "give ranges or weights, not both: with ranges, a variant's weight is its \
                     range's share of their total width",
                );
            }
        }
    }
    let width = |r: [f64; 2]| r[1] - r[0];
    let total: f64 = input.iter().filter_map(|v| v.range).map(width).sum();
    // Weights from ranges only when all of them are sound; otherwise the range problems
    // alone are reported (by `Experiment::check`).
    let shares = ranged == input.len()
        && input.iter().filter_map(|v| v.range).all(range_in_bounds)
        && total > 0.0;
    let equal = 1.0 / input.len().max(1) as f64;
    input
        .into_iter()
        .map(|v| Variant {
            name: v.name.unwrap_or_else(|| v.key.clone()),
            weight: match v.range {
                Some(r) if shares => width(r) / total,
                _ => v.weight.unwrap_or(equal),
            },
            key: v.key,
            config: v.config,
            control: v.control,
            range: v.range,
        })
        .collect()
}

/// Values the caller supplies because the domain does no IO: a fresh id, a random salt (used
/// when the input names none) and the current time.
#[derive(Debug, Clone)]
pub struct Provided {
    pub id: String,
    pub salt: String,
    pub now: OffsetDateTime,
}

impl AssignmentInput {
    /// The unit is one Verdict knows, `custom` names its attribute (and only it does), and
    /// the context attributes are few, named, and distinct.
    fn check_unit(&self, p: &mut Problems) {
        let unit = self.unit.as_deref().unwrap_or(Unit::SubjectId.as_str());
        match (Unit::parse(unit), &self.unit_attribute) {
            (None, _) => p.push(
                "assignment.unit",
                format!(
                    "unknown unit '{unit}': expected one of {}",
                    Unit::ALL.map(Unit::as_str).join(", ")
                ),
            ),
            (Some(Unit::Custom), None) => p.push(
                "assignment.unit_attribute",
                "is required with unit custom: the attribute holding the subject's id",
            ),
            (Some(Unit::Custom), Some(name)) => {
                check_attribute_name(p, "assignment.unit_attribute", name)
            }
            (Some(_), Some(_)) => p.push("assignment.unit_attribute", "is only for unit custom"),
            (Some(_), None) => {}
        }
        if self.context.len() > MAX_CONTEXT_ATTRIBUTES {
            p.push(
                "assignment.context",
                format!("at most {MAX_CONTEXT_ATTRIBUTES} attributes"),
            );
        }
        let mut seen = HashSet::new();
        for (i, name) in self.context.iter().enumerate() {
            check_attribute_name(p, &format!("assignment.context[{i}]"), name);
            if !seen.insert(name) {
                p.push(
                    format!("assignment.context[{i}]"),
                    format!("'{name}' is named twice"),
                );
            }
        }
    }
}

/// An attribute name: 1 to 64 bytes.
fn check_attribute_name(p: &mut Problems, field: &str, name: &str) {
    if name.is_empty() || name.len() > 64 {
        p.push(field, "must be 1 to 64 bytes");
    }
}

impl ExperimentInput {
    /// Build a draft experiment in `scope`, or report every problem.
    pub fn into_experiment(self, scope: Scope, provided: Provided) -> Result<Experiment, Problems> {
        let mut p = Problems::new();
        if self.assignment.sticky == Some(false) {
            p.push(
                "assignment.sticky",
                "false is not supported: a subject keeps the variant of its first assignment, \
                 so that its events are attributed to it (with GrowthBook hashing, a subject \
                 gets the same variant anyway while weights and coverage are unchanged)",
            );
        }
        check_end_ahead(self.ends_at, provided.now, &mut p);
        self.assignment.check_unit(&mut p);
        let variants = variants_from_input(self.variants, &mut p);
        let coverage = self
            .coverage
            .or_else(|| ranges_total(&variants))
            .unwrap_or(1.0);
        let experiment = Experiment {
            id: provided.id,
            scope,
            name: self.name.unwrap_or_else(|| self.key.clone()),
            key: self.key,
            description: self.description,
            status: Status::Draft,
            variants,
            coverage,
            targeting: self.targeting,
            audience: self.audience,
            namespace: self.namespace,
            assignment: AssignmentSettings {
                unit: self
                    .assignment
                    .unit
                    .unwrap_or_else(|| "subject_id".to_owned()),
                sticky: self.assignment.sticky.unwrap_or(true),
                salt: self.assignment.salt.unwrap_or(provided.salt),
                hash_version: self.assignment.hash_version.unwrap_or(2),
                unit_attribute: self.assignment.unit_attribute,
                context: self.assignment.context,
                auto_exposure: self.assignment.auto_exposure.unwrap_or(false),
            },
            primary_metric: self.primary_metric.unwrap_or_else(|| {
                Metric::new("conversion", MetricKind::Binomial, Objective::Maximize)
            }),
            secondary_metrics: self.secondary_metrics,
            guardrail_metrics: self.guardrail_metrics,
            exposure_event: self.exposure_event,
            thresholds: self.thresholds,
            breakdown: self.breakdown,
            policy: self.policy,
            retention: self.retention,
            winner: None,
            created_at: provided.now,
            updated_at: provided.now,
            started_at: None,
            completed_at: None,
            start_at: self.start_at,
            ends_at: self.ends_at,
            evaluation_period_days: self.evaluation_period_days,
            version: 1,
        };
        for problem in experiment.check() {
            p.push(problem.field, problem.message);
        }
        p.into_result(experiment)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn provided() -> Provided {
        Provided {
            id: "exp_1".into(),
            salt: "salt".into(),
            now: OffsetDateTime::UNIX_EPOCH,
        }
    }

    fn input(v: Value) -> ExperimentInput {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn a_minimal_input_becomes_a_draft_with_defaults() {
        let e = input(json!({"key": "checkout", "variants": [{"key": "a"}, {"key": "b"}]}))
            .into_experiment(Scope::default(), provided())
            .unwrap();
        assert_eq!(e.status, Status::Draft);
        assert_eq!(e.weights(), vec![0.5, 0.5]);
        assert_eq!(e.coverage, 1.0);
        assert_eq!(e.assignment.salt, "salt");
        assert_eq!(e.assignment.hash_version, 2);
        assert_eq!(e.control_index(), 0);
        assert_eq!(e.policy.probability_threshold, 0.95);
        assert_eq!(e.version, 1);
        assert!(e.check().is_empty());
    }

    #[test]
    fn the_unit_names_the_subject_and_a_stored_label_is_served_as_subject_id() {
        let e = input(json!({"key": "k", "variants": [{"key": "a"}, {"key": "b"}]}))
            .into_experiment(Scope::default(), provided())
            .unwrap();
        assert_eq!(e.assignment.unit, "subject_id");
        assert_eq!(e.assignment.unit(), Unit::SubjectId);
        for unit in Unit::ALL {
            assert_eq!(Unit::parse(unit.as_str()), Some(unit));
        }
        // A stored experiment whose unit was a free label, without the newer fields.
        let mut stored = serde_json::to_value(&e).unwrap();
        stored["assignment"] = json!({"unit": "visitor", "sticky": true, "salt": "s",
            "hash_version": 2});
        let stored: Experiment = serde_json::from_value(stored).unwrap();
        assert_eq!(stored.assignment.unit(), Unit::SubjectId);
        assert!(stored.assignment.context.is_empty());
        assert_eq!(stored.assignment.unit_attribute, None);
    }

    #[test]
    fn only_declared_context_attributes_are_kept() {
        let e = input(json!({"key": "k", "variants": [{"key": "a"}, {"key": "b"}],
            "assignment": {"unit": "anon_id", "context": ["platform", "app_version"]}}))
        .into_experiment(Scope::default(), provided())
        .unwrap();
        let attributes = json!({"platform": "ios", "country": "US", "app_version": 21});
        let kept = e
            .assignment
            .context_of(attributes.as_object().unwrap())
            .unwrap();
        assert_eq!(
            Value::Object(kept),
            json!({"platform": "ios", "app_version": 21})
        );
        let none = json!({"country": "US"});
        assert_eq!(e.assignment.context_of(none.as_object().unwrap()), None);
    }

    #[test]
    fn every_bad_field_is_reported_at_once() {
        let err = input(json!({
            "key": "bad key",
            "variants": [
                {"key": "a", "weight": 0.7},
                {"key": "a", "weight": -0.1},
            ],
            "coverage": 1.5,
            "policy": {"probability_threshold": 1.2, "max_expected_loss": -1.0,
                       "override_variant": "zzz", "alpha": 0.0},
            "primary_metric": {"event": "", "kind": "binomial"},
        }))
        .into_experiment(Scope::default(), provided())
        .unwrap_err();
        for field in [
            "key",
            "variants[1].key",
            "variants[1].weight",
            "coverage",
            "policy.probability_threshold",
            "policy.max_expected_loss",
            "policy.override_variant",
            "policy.alpha",
            "primary_metric.event",
        ] {
            assert!(err.mentions(field), "{field} missing from: {err}");
        }
    }

    #[test]
    fn weights_must_sum_to_one_within_tolerance() {
        let ok = input(json!({"key": "k", "variants": [
            {"key": "a", "weight": 0.3333333}, {"key": "b", "weight": 0.3333333},
            {"key": "c", "weight": 0.3333334}]}));
        assert!(ok.into_experiment(Scope::default(), provided()).is_ok());
        let bad = input(json!({"key": "k", "variants": [
            {"key": "a", "weight": 0.5}, {"key": "b", "weight": 0.49}]}));
        let err = bad
            .into_experiment(Scope::default(), provided())
            .unwrap_err();
        assert!(err.to_string().contains("sum to 1"), "{err}");
    }

    #[test]
    fn one_variant_or_mixed_weights_or_two_controls_are_refused() {
        let err = input(json!({"key": "k", "variants": [{"key": "a"}]}))
            .into_experiment(Scope::default(), provided())
            .unwrap_err();
        assert!(err.mentions("variants"));
        let err = input(json!({"key": "k", "variants": [
            {"key": "a", "weight": 1.0}, {"key": "b"}]}))
        .into_experiment(Scope::default(), provided())
        .unwrap_err();
        assert!(err.mentions("variants"));
        let err = input(json!({"key": "k", "variants": [
            {"key": "a", "control": true}, {"key": "b", "control": true}]}))
        .into_experiment(Scope::default(), provided())
        .unwrap_err();
        assert!(err.to_string().contains("control"));
    }

    #[test]
    fn a_flagged_control_wins_over_the_first_variant() {
        let e =
            input(json!({"key": "k", "variants": [{"key": "a"}, {"key": "b", "control": true}]}))
                .into_experiment(Scope::default(), provided())
                .unwrap();
        assert_eq!(e.control_index(), 1);
    }

    #[test]
    fn unknown_fields_are_refused() {
        let r: Result<ExperimentInput, _> = serde_json::from_value(
            json!({"key": "k", "variants": [{"key": "a"}, {"key": "b"}], "colour": "red"}),
        );
        assert!(r.unwrap_err().to_string().contains("colour"));
    }

    #[test]
    fn metric_settings_are_validated_with_the_metrics_role() {
        let err = input(json!({
            "key": "k",
            "variants": [{"key": "a"}, {"key": "b"}],
            "primary_metric": {"event": "revenue", "kind": "sum", "margin": {"relative": 0.1}},
            "secondary_metrics": [{"event": "signup", "cap": {"value": 3.0}}],
            "guardrail_metrics": [{"event": "errors", "objective": "minimize",
                                   "margin": {"absolute": -1.0}, "tau": -2.0}],
            "policy": {"guardrail_probability": 0.4},
        }))
        .into_experiment(Scope::default(), provided())
        .unwrap_err();
        for field in [
            "primary_metric.margin",
            "secondary_metrics[0].cap",
            "guardrail_metrics[0].margin.absolute",
            "guardrail_metrics[0].tau",
            "policy.guardrail_probability",
        ] {
            assert!(err.mentions(field), "{field} missing from: {err}");
        }
    }

    #[test]
    fn min_delta_is_in_the_primary_metrics_units() {
        let with = |kind: &str, min_delta: f64| {
            input(json!({"key": "k", "variants": [{"key": "a"}, {"key": "b"}],
                         "primary_metric": {"event": "e", "kind": kind},
                         "policy": {"min_delta": min_delta}}))
            .into_experiment(Scope::default(), provided())
        };
        assert!(with("sum", 5.0).is_ok(), "five currency units per subject");
        assert!(
            with("binomial", 5.0)
                .unwrap_err()
                .mentions("policy.min_delta")
        );
        assert!(with("binomial", 0.01).is_ok());
        assert!(with("mean", -1.0).unwrap_err().mentions("policy.min_delta"));
    }

    #[test]
    fn tau_squared_needs_a_binomial_metric_to_apply_to() {
        let with = |guardrails: Value| {
            input(json!({"key": "k", "variants": [{"key": "a"}, {"key": "b"}],
                         "primary_metric": {"event": "revenue", "kind": "sum"},
                         "guardrail_metrics": guardrails,
                         "policy": {"tau_squared": 1e-4}}))
            .into_experiment(Scope::default(), provided())
        };
        assert!(with(json!([])).unwrap_err().mentions("policy.tau_squared"));
        assert!(with(json!([{"event": "errors", "objective": "minimize"}])).is_ok());
    }

    #[test]
    fn an_experiment_stored_without_the_metric_settings_still_loads() {
        let e = input(json!({"key": "k", "variants": [{"key": "a"}, {"key": "b"}],
                             "guardrail_metrics": [{"event": "errors"}]}))
        .into_experiment(Scope::default(), provided())
        .unwrap();
        let mut stored = serde_json::to_value(&e).unwrap();
        stored["policy"]
            .as_object_mut()
            .unwrap()
            .remove("guardrail_probability");
        assert!(stored["guardrail_metrics"][0].get("margin").is_none());
        assert!(stored["primary_metric"].get("cap").is_none());
        let back: Experiment = serde_json::from_value(stored).unwrap();
        assert_eq!(back, e);
        assert_eq!(back.policy.guardrail_probability, 0.95);
        let roles: Vec<MetricRole> = back.metrics().map(|(_, r)| r).collect();
        assert_eq!(roles, [MetricRole::Primary, MetricRole::Guardrail]);
        assert_eq!(
            back.metric_with_role("errors").map(|(_, r)| r),
            Some(MetricRole::Guardrail)
        );
    }

    #[test]
    fn experiments_round_trip_through_json() {
        let e = input(
            json!({"key": "k", "variants": [{"key": "a", "config": {"x": 1}}, {"key": "b"}]}),
        )
        .into_experiment(Scope::new("staging", Some("acme".into())), provided())
        .unwrap();
        let back: Experiment = serde_json::from_value(serde_json::to_value(&e).unwrap()).unwrap();
        assert_eq!(back, e);
    }

    #[test]
    fn explicit_ranges_give_the_weights_and_the_coverage() {
        let e = input(json!({"key": "k", "variants": [
            {"key": "a", "range": [0.6, 1.0]}, {"key": "b", "range": [0.0, 0.2]}]}))
        .into_experiment(Scope::default(), provided())
        .unwrap();
        assert_eq!(e.bucket_ranges(), vec![(0.6, 1.0), (0.0, 0.2)]);
        let w = e.weights();
        assert!(
            (w[0] - 2.0 / 3.0).abs() < 1e-12 && (w[1] - 1.0 / 3.0).abs() < 1e-12,
            "{w:?}"
        );
        assert!((e.coverage - 0.6).abs() < 1e-12, "{}", e.coverage);
        let back: Experiment = serde_json::from_value(serde_json::to_value(&e).unwrap()).unwrap();
        assert_eq!(back, e);
    }

    #[test]
    fn without_ranges_the_bucket_ranges_are_growthbooks_for_weights_and_coverage() {
        // A stored experiment from before ranges existed has no `range` fields.
        let e = input(json!({"key": "k", "coverage": 0.5, "variants": [
            {"key": "a", "weight": 0.25}, {"key": "b", "weight": 0.75}]}))
        .into_experiment(Scope::default(), provided())
        .unwrap();
        let doc = serde_json::to_value(&e).unwrap();
        assert!(doc["variants"][0].get("range").is_none(), "{doc}");
        assert_eq!(
            e.bucket_ranges(),
            crate::hashing::bucket_ranges(2, 0.5, Some(&[0.25, 0.75]))
        );
    }

    #[test]
    fn every_problem_of_explicit_ranges_is_named() {
        let problems = |v: Value| {
            input(v)
                .into_experiment(Scope::default(), provided())
                .unwrap_err()
        };
        let err = problems(json!({"key": "k", "variants": [
            {"key": "a", "range": [0.0, 0.5]}, {"key": "b"}]}));
        assert!(err.mentions("variants"), "{err}");
        let err = problems(json!({"key": "k", "variants": [
            {"key": "a", "range": [-0.1, 0.5]}, {"key": "b", "range": [0.5, 1.5]},
            {"key": "c", "range": [0.9, 0.8]}]}));
        for field in [
            "variants[0].range",
            "variants[1].range",
            "variants[2].range",
        ] {
            assert!(err.mentions(field), "{field}: {err}");
        }
        let err = problems(json!({"key": "k", "variants": [
            {"key": "a", "range": [0.0, 0.5]}, {"key": "b", "range": [0.4, 1.0]}]}));
        assert!(err.mentions("variants[1].range"), "{err}");
        assert!(err.to_string().contains("overlaps"), "{err}");
        let err = problems(json!({"key": "k", "variants": [
            {"key": "a", "range": [0.3, 0.3]}, {"key": "b", "range": [0.5, 0.5]}]}));
        assert!(err.to_string().contains("total width is 0"), "{err}");
        let err = problems(json!({"key": "k", "variants": [
            {"key": "a", "range": [0.0, 0.5], "weight": 0.5},
            {"key": "b", "range": [0.5, 1.0]}]}));
        assert!(err.mentions("variants[0].weight"), "{err}");
        let err = problems(json!({"key": "k", "coverage": 1.0, "variants": [
            {"key": "a", "range": [0.0, 0.1]}, {"key": "b", "range": [0.1, 0.2]}]}));
        assert!(err.mentions("coverage"), "{err}");
        // Touching ranges, in any order, are fine.
        assert!(
            input(json!({"key": "k", "variants": [
                {"key": "a", "range": [0.5, 1.0]}, {"key": "b", "range": [0.0, 0.5]}]}))
            .into_experiment(Scope::default(), provided())
            .is_ok()
        );
    }

    fn scheduled(extra: Value) -> Result<Experiment, Problems> {
        let mut v = json!({"key": "checkout", "variants": [{"key": "a"}, {"key": "b"}]});
        v.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        input(v).into_experiment(Scope::default(), provided())
    }

    fn at(seconds: i64) -> OffsetDateTime {
        OffsetDateTime::UNIX_EPOCH + time::Duration::seconds(seconds)
    }

    #[test]
    fn a_draft_starts_when_its_start_at_has_come() {
        let e = scheduled(json!({"start_at": "1970-01-01T01:00:00Z"})).unwrap();
        assert_eq!(e.start_at, Some(at(3600)));
        assert_eq!(e.scheduled_status(at(3599)), None);
        assert_eq!(e.scheduled_status(at(3600)), Some(Status::Running));
        let unscheduled = scheduled(json!({})).unwrap();
        assert_eq!(unscheduled.scheduled_status(at(i64::from(u32::MAX))), None);
    }

    #[test]
    fn a_started_experiment_completes_at_its_end_whether_running_or_paused() {
        let mut e = scheduled(json!({"ends_at": "1970-01-02T00:00:00Z"})).unwrap();
        assert_eq!(e.scheduled_status(at(86_400)), None, "a draft only starts");
        e.apply_status(Status::Running, at(10));
        assert_eq!(e.scheduled_status(at(86_399)), None);
        assert_eq!(e.scheduled_status(at(86_400)), Some(Status::Completed));
        e.apply_status(Status::Paused, at(20));
        assert_eq!(e.scheduled_status(at(86_400)), Some(Status::Completed));
        e.apply_status(Status::Completed, at(86_400));
        assert_eq!(e.scheduled_status(at(10 * 86_400)), None);
    }

    #[test]
    fn an_evaluation_period_counts_from_the_start() {
        let mut e = scheduled(json!({"evaluation_period_days": 14})).unwrap();
        assert_eq!(e.scheduled_end(), None, "not started: no end yet");
        e.apply_status(Status::Running, at(1_000));
        assert_eq!(e.scheduled_end(), Some(at(1_000 + 14 * 86_400)));
        assert_eq!(
            e.scheduled_status(at(1_000 + 14 * 86_400)),
            Some(Status::Completed)
        );
    }

    #[test]
    fn every_problem_of_a_schedule_is_named() {
        let fields = |v: Value| -> Vec<String> {
            scheduled(v)
                .unwrap_err()
                .into_iter()
                .map(|p| p.field)
                .collect()
        };
        // Both ends, an end before the start (and in the past), a period out of bounds.
        assert_eq!(
            fields(json!({
                "start_at": "1970-01-03T00:00:00Z",
                "ends_at": "1970-01-02T00:00:00Z",
                "evaluation_period_days": 0
            })),
            vec!["evaluation_period_days", "ends_at", "ends_at"]
        );
        // `provided().now` is the epoch: an end at it has passed.
        assert_eq!(
            fields(json!({"ends_at": "1970-01-01T00:00:00Z"})),
            vec!["ends_at"]
        );
        assert_eq!(
            fields(json!({"evaluation_period_days": MAX_EVALUATION_PERIOD_DAYS + 1})),
            vec!["evaluation_period_days"]
        );
        assert!(scheduled(json!({"evaluation_period_days": MAX_EVALUATION_PERIOD_DAYS})).is_ok());
    }

    #[test]
    fn an_experiment_stored_without_a_schedule_reads_as_unscheduled() {
        let mut stored = serde_json::to_value(scheduled(json!({})).unwrap()).unwrap();
        let doc = stored.as_object_mut().unwrap();
        for field in ["start_at", "ends_at", "evaluation_period_days"] {
            assert!(doc.remove(field).is_some(), "{field} is serialized");
        }
        let read: Experiment = serde_json::from_value(stored).unwrap();
        assert_eq!(
            (read.start_at, read.ends_at, read.evaluation_period_days),
            (None, None, None)
        );
    }
}
