//! Pure winner evaluation: given per-variant figures, decide a winner or say every reason why
//! not.
//!
//! [`evaluate`] is a deterministic function of its [`EvaluationInput`]: no IO, no clock (the
//! caller passes the time elapsed since the experiment started), no randomness (P(best) and
//! expected loss are exact, see `verdict-stats`). The memory it needs between runs (the
//! running maximum of the peeking guard's likelihood ratio, τ once taken from the control,
//! the guardrails' running intervals) comes in as a [`GuardState`] and goes out updated in
//! [`Evaluation::guard_state`]; the evaluate job must persist it per experiment and pass it
//! back on the next run.
//!
//! # What is compared
//!
//! The primary metric decides, whatever its kind, by one estimate per arm at the subject level
//! (see [`crate::estimate`]): the conversion rate (`binomial`), the mean per subject (`count`,
//! `sum`; subjects without events are zeros) or the value per event (`mean`, a ratio with
//! subjects as the unit). `delta`, `min_delta` and the peeking guard's `θ̂` are in that
//! estimate's units. The objective (`Experiment::decision_objective`) orients everything:
//! with `minimize`, lower is better.
//!
//! # The rules (SPEC §5), and why each exists
//!
//! A [`Verdict::Winner`] is returned only when *no* [`Blocker`] holds; otherwise
//! [`Verdict::NoDecision`] lists *every* blocker that holds (not only the first), in the order
//! below, so a run report can explain everything that stands between the data and a decision.
//!
//! 1. **`manual_mode`** — `mode = manual` means a person decides (by override, through the
//!    admin path); the evaluator still computes and reports the numbers but never decides.
//! 2. **`no_data`** — an arm without subjects cannot be compared (its estimate is undefined).
//! 3. **`totals_not_finite`** / **`no_estimate`** — an arm whose stored value totals are not
//!    finite (a value metric, the primary or a guardrail, whose totals overflowed before
//!    ingestion bounded event values) has no estimate, and is named as such rather than
//!    failing the evaluation; an arm with subjects whose estimate or standard error is still
//!    undefined otherwise: fewer than two subjects (`count`, `sum`, `mean`), or no events at
//!    all (`mean`, whose estimate is per event). Never for `binomial`.
//! 4. **`srm_mismatch`** — Pearson χ² of the assigned subjects against the configured weights
//!    with p < 0.001 ([`SRM_THRESHOLD`]). A sample-ratio mismatch means assignment or data
//!    collection is broken (bots, redirects, lost events on one arm), so the arms are no longer
//!    comparable and *any* difference may be an artefact. 0.001 rather than 0.05 because the
//!    check runs on every evaluation of every experiment.
//! 5. **`pick_after_not_elapsed`** — `pick_after_seconds` since the start: metrics move with
//!    the weekday and time of day, so an early decision may only reflect who happened to
//!    arrive first.
//! 6. **`min_assignments`** / **`min_conversions`** (per variant; conversions are subjects
//!    with at least one event of the metric, for every kind) — below these the normal
//!    approximations (mSPRT variance, normal posteriors) and the experimenter's intuition are
//!    both unreliable, and a handful of subjects can swing every figure.
//! 7. **`no_lead`** / **`min_delta`** — the candidate must strictly beat the runner-up on the
//!    observed estimate, in the objective's direction, by at least `min_delta` (metric
//!    units): a statistically real but tiny improvement may not be worth shipping.
//! 8. **`probability_threshold`** / **`expected_loss`** (`bayesian_beta` only) — the candidate
//!    is the arm with the highest P(best); it must reach `probability_threshold` *and* its
//!    expected loss (what is given up if it is in fact not the best) must not exceed
//!    `max_expected_loss`: P(best) alone says "probably better", the loss bound says "and if
//!    not, it costs little". Rates use exact Beta(1 + c, 1 + n − c) posteriors. The other
//!    kinds use normal posteriors `N(estimate, se²)`: the limit of a flat prior on the arm's
//!    true mean with the sample variance plugged in (what GrowthBook and Eppo do for
//!    non-binomial metrics), accurate by the central limit theorem at the sample sizes where
//!    a decision is possible; P(best) of up to eight normals is exact (closed form or fixed
//!    quadrature). Their expected loss is compared relative to |the control's estimate|,
//!    since an absolute threshold would mean something else for every unit (cents, dollars,
//!    ms); rates keep the absolute threshold.
//! 9. **`peeking_guard`** (both methods, when `policy.peeking_guard`) — evaluation runs every
//!    few minutes and each run is another look at the data; the bare Bayesian rule above then
//!    declares a false winner in ~50% of A/A experiments (SPEC §5, reproduced by the
//!    `decision_quality` binary). A decision therefore also needs the always-valid mSPRT
//!    between the candidate and the runner-up to reject "no difference": the *running
//!    maximum* of Λ over all looks must reach `1/α`. Λ uses the matching variance: for rates
//!    `p(1 − p)/n` per arm, for the other kinds the squared standard errors of the estimates.
//!    τ is fixed per metric in its units (see [`crate::estimate`]): the metric's `tau`; for
//!    rates otherwise `policy.tau_squared` or the default; for the other kinds otherwise a
//!    quarter of the control's estimate taken once (until then the guard cannot reject).
//!    Because the guarantee holds for the running maximum at any stopping time, looking every
//!    five minutes does not inflate the false-winner rate.
//! 10. **`guardrail`** (one per guardrail that blocks the candidate) — see
//!     [`crate::guardrail`]: the candidate is credibly worse than the control on a guardrail
//!     metric, or its non-inferiority within the margin is not shown yet. A candidate that is
//!     the control is never blocked by a guardrail.
//!
//! With `simple_rate` the candidate is the arm with the best observed estimate; with
//! `bayesian_beta` it is the arm with the highest P(best) under the objective (the best
//! observed estimate while some arm's posterior is undefined). The runner-up is the best of
//! the remaining arms by the same score. Ties go to the control (keeping the status quo is
//! the conservative choice), then to the earlier arm, so the choice is deterministic.
//!
//! # The peeking-guard state
//!
//! [`GuardState`] keeps, for every *ordered* pair of variants, the running maximum of `ln Λ`
//! over the looks at which the first variant had the higher observed estimate. Each
//! evaluation updates every pair (at most 28 for 8 arms), so the maximum for the pair that is
//! candidate and runner-up *now* covers every earlier look even if the candidate changed
//! meanwhile. The guard for candidate `c` against runner-up `r` reads the maximum of the
//! ordered pair in which `c` leads (in the objective's direction). Splitting by direction is a
//! refinement of SPEC's two-sided running maximum: it never exceeds it, so the type-I
//! guarantee is kept, and it stops a large Λ that was reached while the *other* arm was ahead
//! from certifying the current leader. A change of τ² or of the primary metric restarts the
//! maxima (a running maximum of a different statistic is meaningless), and entries of
//! variants that no longer exist are dropped. Looks where Λ is undefined for a pair (an
//! estimate or its variance undefined, or a variance of 0, e.g. both arms at 0%) leave that
//! pair's maximum unchanged. See [`crate::guard`].
//!
//! # What this module does not do
//!
//! It does not apply `override_variant`: an experimenter's override is a decision taken by the
//! admin path when it is set (SPEC §5, "Manual override does the same, audited"), not by the
//! evaluator. It does not load figures, turn a percentile cap into a value, or persist
//! anything (that is the evaluate job).

use std::collections::HashSet;
use std::fmt;

use serde::Serialize;
use thiserror::Error;
use verdict_domain::{
    Margin, Metric, MetricKind, Objective, PolicyMode, StatMethod, VariantCounts, WinnerPolicy,
};
use verdict_stats::{self as stats, BayesSummary, BetaPosterior, SrmResult, StatsError, msprt};

use crate::estimate::{self, ArmEstimate, EstimateKind, TauSource};
use crate::guard::{GuardState, pair_msprt};
use crate::guardrail::{
    self, GuardrailCondition, GuardrailFigures, GuardrailInput, GuardrailReport,
};

/// Level of the per-arm equal-tailed credible interval.
pub const CREDIBLE_LEVEL: f64 = 0.95;

/// The standard normal quantile of `(1 + CREDIBLE_LEVEL) / 2`, for normal posteriors.
pub(crate) const CREDIBLE_Z: f64 = 1.959_963_984_540_054;

/// SRM p-value below which a decision is blocked (SPEC §5).
pub const SRM_THRESHOLD: f64 = stats::DEFAULT_SRM_THRESHOLD;

/// One arm's figures, as the rollups provide them (subject level: SPEC §5 "statistics use the
/// randomization unit").
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ArmFigures {
    /// Variant key.
    pub variant: String,
    /// Configured traffic weight (any positive scale; used by the SRM check).
    pub weight: f64,
    /// The arm's figures of the primary metric's event. `counts.variant` may be left empty;
    /// when set it must equal `variant`.
    pub counts: VariantCounts,
}

impl ArmFigures {
    pub fn new(variant: impl Into<String>, weight: f64, counts: VariantCounts) -> Self {
        Self {
            variant: variant.into(),
            weight,
            counts,
        }
    }

    /// An arm of a binomial metric: `conversions` of `subjects` converted (one event each).
    pub fn binomial(
        variant: impl Into<String>,
        weight: f64,
        subjects: u64,
        conversions: u64,
    ) -> Self {
        let variant = variant.into();
        let counts = VariantCounts {
            variant: variant.clone(),
            subjects,
            converted_subjects: conversions,
            events: conversions,
            sum: conversions as f64,
            sum_of_squares: conversions as f64,
            sum_events_squared: conversions,
            sum_events_value: conversions as f64,
        };
        Self {
            variant,
            weight,
            counts,
        }
    }

    /// Assigned (or exposed) subjects.
    pub fn subjects(&self) -> u64 {
        self.counts.subjects
    }

    /// Subjects with at least one event of the metric.
    pub fn conversions(&self) -> u64 {
        self.counts.converted_subjects
    }
}

/// Everything one evaluation looks at.
#[derive(Debug, Clone, Copy)]
pub struct EvaluationInput<'a> {
    /// The experiment's winner policy.
    pub policy: &'a WinnerPolicy,
    /// The primary metric: its kind says what is estimated, its `tau` and `cap` what the
    /// guard uses and remembers. Its objective is *not* read: see `objective`.
    pub metric: &'a Metric,
    /// The effective objective (the policy's, else the primary metric's; see
    /// `Experiment::decision_objective`).
    pub objective: Objective,
    /// Per-arm figures of the primary metric, in the experiment's variant order.
    pub arms: &'a [ArmFigures],
    /// Index of the control in `arms`.
    pub control: usize,
    /// Time since the experiment started (negative values, e.g. from clock skew, count as
    /// "not yet").
    pub elapsed: time::Duration,
    /// The guard state returned by the previous evaluation of this experiment
    /// ([`GuardState::default`] for the first).
    pub guard: &'a GuardState,
    /// The guardrail metrics with their per-arm figures (same arm order); may be empty.
    pub guardrails: &'a [GuardrailInput<'a>],
}

/// Invalid input: these are caller bugs or corrupt figures, not reasons to decide or not.
#[derive(Debug, Clone, PartialEq, Error)]
#[non_exhaustive]
pub enum PolicyError {
    #[error("an evaluation needs between 2 and {max} arms, got {got}")]
    ArmCount { max: usize, got: usize },
    #[error("control index {control} is out of range for {arms} arms")]
    ControlOutOfRange { control: usize, arms: usize },
    #[error("variant '{0}' appears more than once")]
    DuplicateVariant(String),
    #[error("variant '{variant}': {conversions} converted subjects exceed {subjects} subjects")]
    ConversionsExceedSubjects {
        variant: String,
        conversions: u64,
        subjects: u64,
    },
    #[error("variant '{variant}': {reason}")]
    InvalidFigures {
        variant: String,
        reason: &'static str,
    },
    #[error("figures for variant '{got}' given for arm '{expected}'")]
    VariantMismatch { expected: String, got: String },
    #[error("guardrail '{metric}': figures for {got} arms, the evaluation has {expected}")]
    GuardrailArms {
        metric: String,
        expected: usize,
        got: usize,
    },
    #[error("invalid policy: {0}")]
    InvalidPolicy(&'static str),
    #[error("metric '{metric}': {reason}")]
    InvalidMetric {
        metric: String,
        reason: &'static str,
    },
    #[error(transparent)]
    Stats(#[from] StatsError),
}

/// Per-arm numbers for the results page and the run report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ArmResult {
    pub variant: String,
    pub weight: f64,
    pub subjects: u64,
    /// Subjects with at least one event of the metric (not the event count).
    pub conversions: u64,
    /// Events of the metric.
    pub events: u64,
    /// Observed `conversions / subjects`, whatever the metric's kind; `None` without subjects.
    pub rate: Option<f64>,
    /// The metric's estimate (see [`Evaluation::estimate`]); `None` where undefined.
    pub estimate: Option<f64>,
    /// Standard error of `estimate`.
    pub std_error: Option<f64>,
    /// Equal-tailed 95% credible interval of the estimate: of the Beta(1 + c, 1 + n − c)
    /// posterior for rates, of `N(estimate, se²)` otherwise. `None` where undefined, and in
    /// [`evaluate_decision_only`].
    pub credible_interval: Option<[f64; 2]>,
    /// P(this arm is the best) under the objective; `None` while some arm's posterior is
    /// undefined.
    pub prob_best: Option<f64>,
    /// Expected loss of shipping this arm under the objective, in the estimate's units.
    pub expected_loss: Option<f64>,
}

/// The peeking guard's numbers for the candidate against the runner-up.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GuardOutcome {
    /// `policy.peeking_guard`: whether this guard can block.
    pub enabled: bool,
    pub alpha: f64,
    /// Mixing variance τ² in the estimate's units squared; `None` until it is set.
    pub tau_squared: Option<f64>,
    pub tau_source: TauSource,
    /// `1/α`: the running maximum must reach this.
    pub boundary: f64,
    /// Candidate estimate − runner-up estimate at this look (`None` when Λ is undefined).
    pub theta_hat: Option<f64>,
    /// Variance of `theta_hat`.
    pub variance: Option<f64>,
    /// `ln Λ` at this look.
    pub log_lambda: Option<f64>,
    /// Λ at this look (`+inf` when it overflows; serialized as `null` then — use `log_lambda`).
    pub lambda: Option<f64>,
    /// Running maximum of `ln Λ` over all looks at which the candidate led the runner-up,
    /// this one included.
    pub log_lambda_running_max: Option<f64>,
    /// Running maximum of Λ (see `lambda` about overflow).
    pub lambda_running_max: Option<f64>,
    /// Always-valid p-value `min(1, 1 / max Λ)`.
    pub always_valid_p_value: f64,
    /// Whether the running maximum reached `1/α`.
    pub rejects_no_difference: bool,
}

/// Why no winner was decided. Serialized as `{"reason": "min_assignments", ...}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum Blocker {
    /// `mode = manual`: only an explicit override decides.
    ManualMode,
    /// These arms have no subjects, so their estimates cannot be compared.
    NoData { variants: Vec<String> },
    /// These arms' stored totals of `metric` (the primary or a guardrail) are not finite,
    /// so no estimate of it exists for them.
    TotalsNotFinite {
        metric: String,
        variants: Vec<String>,
    },
    /// These arms have subjects but their estimate or its standard error is undefined yet.
    NoEstimate {
        variants: Vec<String>,
        estimate: EstimateKind,
    },
    /// Sample-ratio mismatch against the configured weights.
    SrmMismatch {
        statistic: f64,
        p_value: f64,
        threshold: f64,
    },
    /// `pick_after_seconds` has not elapsed since the start.
    PickAfterNotElapsed {
        elapsed_seconds: i64,
        required_seconds: u64,
    },
    /// These arms have fewer subjects than `min_assignments`.
    MinAssignments {
        variants: Vec<String>,
        required: u64,
    },
    /// These arms have fewer converted subjects than `min_conversions`.
    MinConversions {
        variants: Vec<String>,
        required: u64,
    },
    /// The candidate does not strictly beat the runner-up on the observed estimate
    /// (`delta` in the estimate's units, positive = candidate better).
    NoLead { delta: f64, estimate: EstimateKind },
    /// The candidate beats the runner-up by less than `min_delta` (the estimate's units).
    MinDelta {
        delta: f64,
        required: f64,
        estimate: EstimateKind,
    },
    /// `bayesian_beta`: the candidate's P(best) is below `probability_threshold`.
    ProbabilityThreshold { prob_best: f64, required: f64 },
    /// `bayesian_beta`: the candidate's expected loss exceeds `max_expected_loss`. For rates
    /// `expected_loss` itself is compared; otherwise `relative_expected_loss`, the expected
    /// loss over |the control's estimate|.
    ExpectedLoss {
        expected_loss: f64,
        #[serde(skip_serializing_if = "Option::is_none")]
        relative_expected_loss: Option<f64>,
        max: f64,
    },
    /// The mSPRT has not (yet) rejected "no difference" between candidate and runner-up
    /// (`tau_squared` is `None` while τ waits for the control's estimate).
    PeekingGuard {
        lambda_running_max: Option<f64>,
        boundary: f64,
        tau_squared: Option<f64>,
    },
    /// A guardrail metric blocks the candidate.
    Guardrail {
        /// The guardrail metric's event.
        metric: String,
        /// The blocked variant (the candidate).
        variant: String,
        condition: GuardrailCondition,
        /// The candidate against the control on this metric (oriented: positive = better).
        figures: GuardrailFigures,
    },
}

impl Blocker {
    /// Stable snake_case code (the `reason` field), for logs and metrics labels.
    pub fn code(&self) -> &'static str {
        match self {
            Self::ManualMode => "manual_mode",
            Self::NoData { .. } => "no_data",
            Self::TotalsNotFinite { .. } => "totals_not_finite",
            Self::NoEstimate { .. } => "no_estimate",
            Self::SrmMismatch { .. } => "srm_mismatch",
            Self::PickAfterNotElapsed { .. } => "pick_after_not_elapsed",
            Self::MinAssignments { .. } => "min_assignments",
            Self::MinConversions { .. } => "min_conversions",
            Self::NoLead { .. } => "no_lead",
            Self::MinDelta { .. } => "min_delta",
            Self::ProbabilityThreshold { .. } => "probability_threshold",
            Self::ExpectedLoss { .. } => "expected_loss",
            Self::PeekingGuard { .. } => "peeking_guard",
            Self::Guardrail { .. } => "guardrail",
        }
    }
}

fn interval_text(interval: Option<[f64; 2]>) -> String {
    interval.map_or_else(
        || "undefined".to_owned(),
        |[lo, hi]| format!("[{lo:.5}, {hi:.5}]"),
    )
}

impl fmt::Display for Blocker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ManualMode => write!(f, "policy mode is manual: only an override decides"),
            Self::NoData { variants } => write!(f, "no subjects yet in {}", variants.join(", ")),
            Self::TotalsNotFinite { metric, variants } => write!(
                f,
                "the stored totals of '{metric}' are not finite in {} (values beyond the \
                 ingestion bound were accepted before it existed)",
                variants.join(", ")
            ),
            Self::NoEstimate { variants, estimate } => write!(
                f,
                "no {} with a standard error yet in {} (needs two subjects, and events for a per-event value)",
                estimate.describe(),
                variants.join(", ")
            ),
            Self::SrmMismatch {
                p_value, threshold, ..
            } => write!(
                f,
                "sample ratio mismatch: p = {p_value:.3e} < {threshold} against the configured weights"
            ),
            Self::PickAfterNotElapsed {
                elapsed_seconds,
                required_seconds,
            } => write!(
                f,
                "only {elapsed_seconds} s since start, pick_after is {required_seconds} s"
            ),
            Self::MinAssignments { variants, required } => write!(
                f,
                "fewer than {required} subjects in {}",
                variants.join(", ")
            ),
            Self::MinConversions { variants, required } => write!(
                f,
                "fewer than {required} converted subjects in {}",
                variants.join(", ")
            ),
            Self::NoLead { delta, estimate } => write!(
                f,
                "the candidate does not beat the runner-up on {} (difference {delta:+.5})",
                estimate.describe()
            ),
            Self::MinDelta {
                delta,
                required,
                estimate,
            } => write!(
                f,
                "the candidate beats the runner-up by {delta:.5} ({}), less than min_delta {required}",
                estimate.describe()
            ),
            Self::ProbabilityThreshold {
                prob_best,
                required,
            } => write!(f, "P(best) = {prob_best:.4} < {required}"),
            Self::ExpectedLoss {
                expected_loss,
                relative_expected_loss,
                max,
            } => match relative_expected_loss {
                Some(r) => write!(
                    f,
                    "expected loss {expected_loss:.5} is {r:.5} of the control's estimate > {max}"
                ),
                None => write!(f, "expected loss {expected_loss:.5} > {max}"),
            },
            Self::PeekingGuard {
                lambda_running_max,
                boundary,
                tau_squared,
            } => match (lambda_running_max, tau_squared) {
                (_, None) => write!(
                    f,
                    "peeking guard: τ is set from the control's estimate once every variant has min_assignments subjects"
                ),
                (Some(l), _) => write!(
                    f,
                    "peeking guard: running max Λ = {l:.3} has not reached 1/α = {boundary}"
                ),
                (None, _) => write!(f, "peeking guard: no evidence of a difference yet"),
            },
            Self::Guardrail {
                metric,
                variant,
                condition,
                figures,
            } => match condition {
                GuardrailCondition::CrediblyWorse => write!(
                    f,
                    "guardrail '{metric}': {variant} is credibly worse than the control \
                     (difference {}, P(worse) = {}, always-valid interval {})",
                    figures
                        .difference
                        .map_or_else(|| "undefined".to_owned(), |d| format!("{d:+.5}")),
                    figures
                        .p_worse
                        .map_or_else(|| "undefined".to_owned(), |p| format!("{p:.4}")),
                    interval_text(figures.interval),
                ),
                GuardrailCondition::NonInferiorityNotShown => write!(
                    f,
                    "guardrail '{metric}': {variant} is not yet shown to be within the margin \
                     {} of the control (always-valid interval of the difference {})",
                    figures
                        .margin
                        .map_or_else(|| "undefined".to_owned(), |m| format!("{m:.5}")),
                    interval_text(figures.interval),
                ),
            },
        }
    }
}

/// The outcome of one evaluation. Serialized as `{"outcome": "winner", ...}` or
/// `{"outcome": "no_decision", "blockers": [...]}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Verdict {
    Winner {
        variant: String,
        runner_up: String,
        /// Candidate's observed advantage in the objective's direction (estimate's units).
        delta: f64,
        prob_best: f64,
        expected_loss: f64,
    },
    NoDecision {
        blockers: Vec<Blocker>,
    },
}

impl Verdict {
    /// The winning variant, if any.
    pub fn winner(&self) -> Option<&str> {
        match self {
            Self::Winner { variant, .. } => Some(variant),
            Self::NoDecision { .. } => None,
        }
    }

    /// The blockers (empty for a winner).
    pub fn blockers(&self) -> &[Blocker] {
        match self {
            Self::Winner { .. } => &[],
            Self::NoDecision { blockers } => blockers,
        }
    }
}

/// Everything one evaluation found: the numbers behind the verdict, and the state to persist.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Evaluation {
    pub stat_method: StatMethod,
    pub objective: Objective,
    pub mode: PolicyMode,
    /// The primary metric's event.
    pub metric: String,
    pub metric_kind: MetricKind,
    /// What the arms are compared by.
    pub estimate: EstimateKind,
    /// The control's variant key.
    pub control: String,
    pub arms: Vec<ArmResult>,
    pub srm: SrmResult,
    /// The arm that would win (best estimate, or highest P(best)).
    pub candidate: String,
    /// The best of the other arms by the same score.
    pub runner_up: String,
    /// Candidate's observed estimate minus the runner-up's, in the objective's direction
    /// (positive = candidate better); `None` when either estimate is undefined.
    pub delta: Option<f64>,
    pub peeking_guard: GuardOutcome,
    /// Every guardrail metric, with each non-control variant's status.
    pub guardrails: Vec<GuardrailReport>,
    /// The guard state after this look: persist it and pass it to the next evaluation.
    pub guard_state: GuardState,
    pub verdict: Verdict,
}

pub fn to_stats_objective(objective: Objective) -> stats::Objective {
    match objective {
        Objective::Maximize => stats::Objective::Maximize,
        Objective::Minimize => stats::Objective::Minimize,
    }
}

/// Index with the highest score, skipping `exclude`; ties go to the control, then to the
/// earlier arm.
fn best_index(scores: &[f64], control: usize, exclude: Option<usize>) -> usize {
    let mut best: Option<usize> = None;
    for i in (0..scores.len()).filter(|&i| Some(i) != exclude) {
        best = Some(match best {
            None => i,
            Some(b) => {
                let better = scores[i] > scores[b] || (scores[i] == scores[b] && i == control);
                if better { i } else { b }
            }
        });
    }
    // `validate` guarantees at least two arms, so something is always left.
    best.unwrap_or(0)
}

fn check_counts(variant: &str, c: &VariantCounts) -> Result<(), PolicyError> {
    if !c.variant.is_empty() && c.variant != variant {
        return Err(PolicyError::VariantMismatch {
            expected: variant.to_owned(),
            got: c.variant.clone(),
        });
    }
    if c.converted_subjects > c.subjects {
        return Err(PolicyError::ConversionsExceedSubjects {
            variant: variant.to_owned(),
            conversions: c.converted_subjects,
            subjects: c.subjects,
        });
    }
    let invalid = |reason| PolicyError::InvalidFigures {
        variant: variant.to_owned(),
        reason,
    };
    // Non-finite totals are data (a `totals_not_finite` blocker), not invalid input.
    if c.sum_of_squares < 0.0 {
        return Err(invalid("the sum of squares must be ≥ 0"));
    }
    Ok(())
}

fn check_metric(m: &Metric) -> Result<(), PolicyError> {
    let invalid = |reason| PolicyError::InvalidMetric {
        metric: m.event.clone(),
        reason,
    };
    if let Some(t) = m.tau
        && !(t.is_finite() && t > 0.0)
    {
        return Err(invalid("tau must be a positive number"));
    }
    if let Some(Margin::Relative(x) | Margin::Absolute(x)) = m.margin
        && !(x.is_finite() && x > 0.0)
    {
        return Err(invalid("the margin must be a positive number"));
    }
    Ok(())
}

fn validate(input: &EvaluationInput<'_>) -> Result<(), PolicyError> {
    let arms = input.arms;
    if !(2..=stats::MAX_ARMS).contains(&arms.len()) {
        return Err(PolicyError::ArmCount {
            max: stats::MAX_ARMS,
            got: arms.len(),
        });
    }
    if input.control >= arms.len() {
        return Err(PolicyError::ControlOutOfRange {
            control: input.control,
            arms: arms.len(),
        });
    }
    let mut seen = HashSet::new();
    for a in arms {
        if !seen.insert(a.variant.as_str()) {
            return Err(PolicyError::DuplicateVariant(a.variant.clone()));
        }
        check_counts(&a.variant, &a.counts)?;
    }
    check_metric(input.metric)?;
    for g in input.guardrails {
        check_metric(g.metric)?;
        if g.arms.len() != arms.len() {
            return Err(PolicyError::GuardrailArms {
                metric: g.metric.event.clone(),
                expected: arms.len(),
                got: g.arms.len(),
            });
        }
        for (a, c) in arms.iter().zip(g.arms) {
            check_counts(&a.variant, c)?;
        }
    }
    let p = input.policy;
    if !(p.alpha > 0.0 && p.alpha < 1.0) {
        return Err(PolicyError::InvalidPolicy("alpha must be in (0, 1)"));
    }
    if let Some(t) = p.tau_squared
        && !(t.is_finite() && t > 0.0)
    {
        return Err(PolicyError::InvalidPolicy("tau_squared must be positive"));
    }
    if p.probability_threshold.is_nan() || p.max_expected_loss.is_nan() || p.min_delta.is_nan() {
        return Err(PolicyError::InvalidPolicy("thresholds must be numbers"));
    }
    if !(p.guardrail_probability > 0.0 && p.guardrail_probability <= 1.0) {
        return Err(PolicyError::InvalidPolicy(
            "guardrail_probability must be in (0, 1]",
        ));
    }
    Ok(())
}

/// Evaluate one experiment once. See the module docs for the rules.
///
/// Errors only on invalid input (see [`PolicyError`]); every data-dependent reason not to
/// decide is a [`Blocker`].
pub fn evaluate(input: &EvaluationInput<'_>) -> Result<Evaluation, PolicyError> {
    evaluate_with(input, Detail::Full)
}

/// [`evaluate`] without the per-arm credible intervals (reported as `None`): they are for
/// display only and never enter the verdict. For simulations, which evaluate hundreds of
/// thousands of times (the Beta quantile inversions are ~70% of an evaluation's cost).
pub fn evaluate_decision_only(input: &EvaluationInput<'_>) -> Result<Evaluation, PolicyError> {
    evaluate_with(input, Detail::DecisionOnly)
}

/// How much of an [`Evaluation`] to compute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Detail {
    /// Everything (what the evaluate job and the results page use).
    Full,
    /// Skip the per-arm credible intervals ([`evaluate_decision_only`]).
    DecisionOnly,
}

/// P(best) and expected loss of every arm: exact Beta posteriors for rates, normal posteriors
/// otherwise (`None` while some arm's posterior is undefined).
pub(crate) fn bayes_summary(
    kind: MetricKind,
    counts: &[&VariantCounts],
    estimates: &[Option<ArmEstimate>],
    objective: Objective,
) -> Result<Option<BayesSummary>, StatsError> {
    let objective = to_stats_objective(objective);
    if kind == MetricKind::Binomial {
        let arms: Vec<(u64, u64)> = counts
            .iter()
            .map(|c| (c.converted_subjects.min(c.subjects), c.subjects))
            .collect();
        return stats::summarize(&arms, objective).map(Some);
    }
    let Some(posteriors) = estimates
        .iter()
        .map(|e| e.as_ref().and_then(ArmEstimate::posterior))
        .collect::<Option<Vec<_>>>()
    else {
        return Ok(None);
    };
    stats::summarize_normal(&posteriors, objective).map(Some)
}

/// The 95% credible interval of one arm's estimate.
pub(crate) fn credible_interval(
    kind: MetricKind,
    counts: &VariantCounts,
    estimate: Option<&ArmEstimate>,
) -> Option<[f64; 2]> {
    match kind {
        MetricKind::Binomial => {
            BetaPosterior::from_counts(counts.converted_subjects, counts.subjects)
                .and_then(|p| p.credible_interval(CREDIBLE_LEVEL))
                .ok()
                .map(|(lo, hi)| [lo, hi])
        }
        _ => estimate
            .and_then(ArmEstimate::posterior)
            .map(|(m, se)| [m - CREDIBLE_Z * se, m + CREDIBLE_Z * se]),
    }
}

fn evaluate_with(input: &EvaluationInput<'_>, detail: Detail) -> Result<Evaluation, PolicyError> {
    validate(input)?;
    let EvaluationInput {
        policy,
        metric,
        objective,
        arms,
        control,
        elapsed,
        guard,
        guardrails,
    } = *input;
    let kind = metric.kind;
    let estimate_kind = EstimateKind::of(kind);
    let names: Vec<&str> = arms.iter().map(|a| a.variant.as_str()).collect();
    let subjects: Vec<u64> = arms.iter().map(ArmFigures::subjects).collect();
    let counts: Vec<&VariantCounts> = arms.iter().map(|a| &a.counts).collect();
    let estimates: Vec<Option<ArmEstimate>> =
        counts.iter().map(|c| estimate::estimate(kind, c)).collect();

    // Per-arm Bayesian figures (shown for both methods; decisive only for bayesian_beta).
    let summary = bayes_summary(kind, &counts, &estimates, objective)?;
    let arm_results: Vec<ArmResult> = arms
        .iter()
        .enumerate()
        .map(|(i, a)| ArmResult {
            variant: a.variant.clone(),
            weight: a.weight,
            subjects: a.subjects(),
            conversions: a.conversions(),
            events: a.counts.events,
            rate: (a.subjects() > 0).then(|| a.conversions() as f64 / a.subjects() as f64),
            estimate: estimates[i].map(|e| e.value),
            std_error: estimates[i].and_then(|e| e.std_error()),
            credible_interval: match detail {
                Detail::Full => credible_interval(kind, &a.counts, estimates[i].as_ref()),
                Detail::DecisionOnly => None,
            },
            prob_best: summary.as_ref().map(|s| s.prob_best[i]),
            expected_loss: summary.as_ref().map(|s| s.expected_loss[i]),
        })
        .collect();

    let weights: Vec<f64> = arms.iter().map(|a| a.weight).collect();
    let srm = stats::srm_check_with_threshold(&subjects, &weights, SRM_THRESHOLD)?;

    // Candidate and runner-up.
    let observed: Vec<f64> = estimates
        .iter()
        .map(|e| {
            e.map_or(f64::NEG_INFINITY, |e| {
                estimate::oriented(e.value, objective)
            })
        })
        .collect();
    let scores = match (policy.stat_method, &summary) {
        (StatMethod::BayesianBeta, Some(s)) => s.prob_best.clone(),
        _ => observed,
    };
    let cand = best_index(&scores, control, None);
    let runner = best_index(&scores, control, Some(cand));
    let (c, r) = (&arms[cand], &arms[runner]);
    let delta = match (&estimates[runner], &estimates[cand]) {
        (Some(er), Some(ec)) => Some(estimate::oriented(
            estimate::point_difference(er, ec),
            objective,
        )),
        _ => None,
    };

    // Peeking guard: fold this look into the state, then read the candidate's running max.
    let (mut guard_state, tau) =
        guard.advanced_primary(metric, policy, &names, &subjects, &estimates, control);
    let now = tau
        .tau_squared
        .and_then(|t| pair_msprt(estimates[runner].as_ref(), estimates[cand].as_ref(), t));
    let (higher, lower) = match objective {
        Objective::Maximize => (c, r),
        Objective::Minimize => (r, c),
    };
    let running_max = tau
        .tau_squared
        .and_then(|_| guard_state.max_log_lambda(&higher.variant, &lower.variant));
    let rejects = running_max.is_some_and(|m| msprt::rejects_log(m, policy.alpha));
    let guard_outcome = GuardOutcome {
        enabled: policy.peeking_guard,
        alpha: policy.alpha,
        tau_squared: tau.tau_squared,
        tau_source: tau.source,
        boundary: 1.0 / policy.alpha,
        theta_hat: now.map(|m| m.theta_hat),
        variance: now.map(|m| m.variance),
        log_lambda: now.map(|m| m.log_lambda),
        lambda: now.map(|m| m.lambda),
        log_lambda_running_max: running_max,
        lambda_running_max: running_max.map(f64::exp),
        always_valid_p_value: running_max.map_or(1.0, |m| (-m).exp().min(1.0)),
        rejects_no_difference: rejects,
    };

    // Guardrails: every non-control arm against the control, folded into the state.
    let guardrail_reports =
        guardrail::assess_all(guardrails, policy, &names, control, &mut guard_state);

    // Every blocker that holds, in the documented order.
    let mut blockers = Vec::new();
    if policy.mode == PolicyMode::Manual {
        blockers.push(Blocker::ManualMode);
    }
    let empty: Vec<String> = arms
        .iter()
        .filter(|a| a.subjects() == 0)
        .map(|a| a.variant.clone())
        .collect();
    if !empty.is_empty() {
        blockers.push(Blocker::NoData { variants: empty });
    }
    let overflowed = |kind: MetricKind, counts: &mut dyn Iterator<Item = &VariantCounts>| {
        let arms: Vec<String> = arms
            .iter()
            .zip(counts)
            .filter(|(_, c)| kind != MetricKind::Binomial && !estimate::totals_finite(c))
            .map(|(a, _)| a.variant.clone())
            .collect();
        (!arms.is_empty()).then_some(arms)
    };
    let primary_overflowed = overflowed(kind, &mut arms.iter().map(|a| &a.counts));
    if let Some(variants) = &primary_overflowed {
        blockers.push(Blocker::TotalsNotFinite {
            metric: metric.event.clone(),
            variants: variants.clone(),
        });
    }
    for g in guardrails {
        if let Some(variants) = overflowed(g.metric.kind, &mut g.arms.iter()) {
            blockers.push(Blocker::TotalsNotFinite {
                metric: g.metric.event.clone(),
                variants,
            });
        }
    }
    let undefined: Vec<String> = arms
        .iter()
        .zip(&estimates)
        .filter(|(a, e)| {
            a.subjects() > 0
                && e.and_then(|e| e.variance).is_none()
                && !primary_overflowed
                    .as_ref()
                    .is_some_and(|v| v.contains(&a.variant))
        })
        .map(|(a, _)| a.variant.clone())
        .collect();
    if !undefined.is_empty() {
        blockers.push(Blocker::NoEstimate {
            variants: undefined,
            estimate: estimate_kind,
        });
    }
    if srm.flagged {
        blockers.push(Blocker::SrmMismatch {
            statistic: srm.statistic,
            p_value: srm.p_value,
            threshold: srm.threshold,
        });
    }
    let required_seconds = policy.pick_after_seconds;
    let elapsed_seconds = elapsed.whole_seconds();
    if elapsed_seconds < 0 || (elapsed_seconds as u64) < required_seconds {
        blockers.push(Blocker::PickAfterNotElapsed {
            elapsed_seconds,
            required_seconds,
        });
    }
    let few_subjects: Vec<String> = arms
        .iter()
        .filter(|a| a.subjects() < policy.min_assignments)
        .map(|a| a.variant.clone())
        .collect();
    if !few_subjects.is_empty() {
        blockers.push(Blocker::MinAssignments {
            variants: few_subjects,
            required: policy.min_assignments,
        });
    }
    let few_conversions: Vec<String> = arms
        .iter()
        .filter(|a| a.conversions() < policy.min_conversions)
        .map(|a| a.variant.clone())
        .collect();
    if !few_conversions.is_empty() {
        blockers.push(Blocker::MinConversions {
            variants: few_conversions,
            required: policy.min_conversions,
        });
    }
    if let Some(d) = delta {
        if d <= 0.0 {
            blockers.push(Blocker::NoLead {
                delta: d,
                estimate: estimate_kind,
            });
        }
        if d < policy.min_delta {
            blockers.push(Blocker::MinDelta {
                delta: d,
                required: policy.min_delta,
                estimate: estimate_kind,
            });
        }
    }
    let decisive = summary
        .as_ref()
        .map(|s| (s.prob_best[cand], s.expected_loss[cand]));
    if policy.stat_method == StatMethod::BayesianBeta
        && let Some((prob_best, expected_loss)) = decisive
    {
        if prob_best < policy.probability_threshold {
            blockers.push(Blocker::ProbabilityThreshold {
                prob_best,
                required: policy.probability_threshold,
            });
        }
        let relative = (kind != MetricKind::Binomial).then(|| {
            let base = estimates[control].map_or(0.0, |e| e.value.abs());
            if base > 0.0 {
                expected_loss / base
            } else {
                f64::INFINITY
            }
        });
        if relative.unwrap_or(expected_loss) > policy.max_expected_loss {
            blockers.push(Blocker::ExpectedLoss {
                expected_loss,
                relative_expected_loss: relative,
                max: policy.max_expected_loss,
            });
        }
    }
    if policy.peeking_guard && !rejects {
        blockers.push(Blocker::PeekingGuard {
            lambda_running_max: guard_outcome.lambda_running_max,
            boundary: guard_outcome.boundary,
            tau_squared: guard_outcome.tau_squared,
        });
    }
    if cand != control {
        for report in &guardrail_reports {
            if let Some(arm) = report.arm(&c.variant)
                && let Some(condition) = arm.status.condition()
            {
                blockers.push(Blocker::Guardrail {
                    metric: report.metric.clone(),
                    variant: c.variant.clone(),
                    condition,
                    figures: arm.figures.clone(),
                });
            }
        }
    }

    let verdict = match (blockers.is_empty(), delta, decisive) {
        (true, Some(delta), Some((prob_best, expected_loss))) => Verdict::Winner {
            variant: c.variant.clone(),
            runner_up: r.variant.clone(),
            delta,
            prob_best,
            expected_loss,
        },
        _ => Verdict::NoDecision { blockers },
    };

    Ok(Evaluation {
        stat_method: policy.stat_method,
        objective,
        mode: policy.mode,
        metric: metric.event.clone(),
        metric_kind: kind,
        estimate: estimate_kind,
        control: arms[control].variant.clone(),
        arms: arm_results,
        srm,
        candidate: c.variant.clone(),
        runner_up: r.variant.clone(),
        delta,
        peeking_guard: guard_outcome,
        guardrails: guardrail_reports,
        guard_state,
        verdict,
    })
}
