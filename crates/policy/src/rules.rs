//! Pure winner evaluation: given per-variant figures, decide a winner or say every reason why
//! not.
//!
//! [`evaluate`] is a deterministic function of its [`EvaluationInput`]: no IO, no clock (the
//! caller passes the time elapsed since the experiment started), no randomness (P(best) and
//! expected loss are exact, see `verdict-stats`). The one piece of memory it needs between
//! runs, the running maximum of the peeking guard's likelihood ratio, comes in as a
//! [`GuardState`] and goes out updated in [`Evaluation::guard_state`]; the evaluate job must
//! persist it per experiment and pass it back on the next run.
//!
//! # The rules (SPEC §5), and why each exists
//!
//! A [`Verdict::Winner`] is returned only when *no* [`Blocker`] holds; otherwise
//! [`Verdict::NoDecision`] lists *every* blocker that holds (not only the first), in the order
//! below, so a run report can explain everything that stands between the data and a decision.
//!
//! 1. **`manual_mode`** — `mode = manual` means a person decides (by override, through the
//!    admin path); the evaluator still computes and reports the numbers but never decides.
//! 2. **`no_data`** — an arm without subjects cannot be compared (its rate is undefined).
//! 3. **`srm_mismatch`** — Pearson χ² of the assigned subjects against the configured weights
//!    with p < 0.001 ([`SRM_THRESHOLD`]). A sample-ratio mismatch means assignment or data
//!    collection is broken (bots, redirects, lost events on one arm), so the arms are no longer
//!    comparable and *any* difference may be an artefact. 0.001 rather than 0.05 because the
//!    check runs on every evaluation of every experiment.
//! 4. **`pick_after_not_elapsed`** — `pick_after_seconds` since the start: conversion rates
//!    move with the weekday and time of day, so an early decision may only reflect who happened
//!    to arrive first.
//! 5. **`min_assignments`** / **`min_conversions`** (per variant) — below these the normal
//!    approximations (mSPRT variance) and the experimenter's intuition are both unreliable, and
//!    a handful of conversions can swing every figure.
//! 6. **`no_lead`** / **`min_delta`** — the candidate must strictly beat the runner-up on the
//!    observed rate, in the objective's direction, by at least `min_delta` (absolute): a
//!    statistically real but tiny improvement may not be worth shipping a change for.
//! 7. **`probability_threshold`** / **`expected_loss`** (`bayesian_beta` only) — the candidate
//!    is the arm with the highest P(best); it must reach `probability_threshold` *and* its
//!    expected loss (the rate given up if it is in fact not the best) must not exceed
//!    `max_expected_loss`: P(best) alone says "probably better", the loss bound says "and if
//!    not, it costs little".
//! 8. **`peeking_guard`** (both methods, when `policy.peeking_guard`) — evaluation runs every
//!    few minutes and each run is another look at the data; the bare Bayesian rule above then
//!    declares a false winner in ~50% of A/A experiments (SPEC §5, reproduced by the
//!    `decision_quality` binary). A decision therefore also needs the always-valid mSPRT
//!    (normal mixing, τ² = `policy.tau_squared` or [`msprt::DEFAULT_TAU_SQUARED`]) between the
//!    candidate and the runner-up to reject "no difference": the *running maximum* of Λ over
//!    all looks must reach `1/α`. Because the guarantee holds for the running maximum at any
//!    stopping time, looking every five minutes does not inflate the false-winner rate.
//!
//! With `simple_rate` the candidate is the arm with the best observed rate (highest for
//! `maximize`, lowest for `minimize`); with `bayesian_beta` it is the arm with the highest
//! P(best) under the objective. The runner-up is the best of the remaining arms by the same
//! score. Ties go to the control (keeping the status quo is the conservative choice), then to
//! the earlier arm, so the choice is deterministic.
//!
//! # The peeking-guard state
//!
//! [`GuardState`] keeps, for every *ordered* pair of variants, the running maximum of `ln Λ`
//! over the looks at which the first variant had the higher observed rate. Each evaluation
//! updates every pair (at most 28 for 8 arms), so the maximum for the pair that is candidate
//! and runner-up *now* covers every earlier look even if the candidate changed meanwhile. The
//! guard for candidate `c` against runner-up `r` reads the maximum of the ordered pair in which
//! `c` leads (in the objective's direction). Splitting by direction is a refinement of SPEC's
//! two-sided running maximum: it never exceeds it, so the type-I guarantee is kept, and it
//! stops a large Λ that was reached while the *other* arm was ahead from certifying the
//! current leader. A change of τ² restarts the state (a running maximum of a different
//! statistic is meaningless), and entries of variants that no longer exist are dropped.
//! Looks where Λ is undefined for a pair (an arm without subjects, or both arms at 0% or 100%
//! so that the variance estimate is 0) leave that pair's maximum unchanged.
//!
//! # What this module does not do
//!
//! It does not apply `override_variant`: an experimenter's override is a decision taken by the
//! admin path when it is set (SPEC §5, "Manual override does the same, audited"), not by the
//! evaluator. It does not load figures or persist anything (that is the evaluate job).

use std::cmp::Ordering;
use std::collections::HashSet;
use std::fmt;

use serde::{Deserialize, Serialize};
use thiserror::Error;
use verdict_domain::{Objective, PolicyMode, StatMethod, WinnerPolicy};
use verdict_stats::{self as stats, BetaPosterior, SrmResult, StatsError, msprt};

/// Level of the per-arm equal-tailed credible interval.
pub const CREDIBLE_LEVEL: f64 = 0.95;

/// SRM p-value below which a decision is blocked (SPEC §5).
pub const SRM_THRESHOLD: f64 = stats::DEFAULT_SRM_THRESHOLD;

/// One arm's figures, as the rollups provide them (subject level: SPEC §5 "statistics use the
/// randomization unit").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArmFigures {
    /// Variant key.
    pub variant: String,
    /// Configured traffic weight (any positive scale; used by the SRM check).
    pub weight: f64,
    /// Subjects assigned to (or exposed to) this arm.
    pub subjects: u64,
    /// Subjects of this arm that converted at least once (not the event count).
    pub conversions: u64,
}

/// Everything one evaluation looks at.
#[derive(Debug, Clone, Copy)]
pub struct EvaluationInput<'a> {
    /// The experiment's winner policy.
    pub policy: &'a WinnerPolicy,
    /// The effective objective (the policy's, else the primary metric's; see
    /// `Experiment::decision_objective`).
    pub objective: Objective,
    /// Per-arm figures, in the experiment's variant order.
    pub arms: &'a [ArmFigures],
    /// Index of the control in `arms`.
    pub control: usize,
    /// Time since the experiment started (negative values, e.g. from clock skew, count as
    /// "not yet").
    pub elapsed: time::Duration,
    /// The peeking-guard state returned by the previous evaluation of this experiment
    /// ([`GuardState::default`] for the first).
    pub guard: &'a GuardState,
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
    #[error("invalid policy: {0}")]
    InvalidPolicy(&'static str),
    #[error(transparent)]
    Stats(#[from] StatsError),
}

/// Running maximum of `ln Λ` for one ordered pair of variants.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PairMax {
    /// The variant with the higher observed rate at the looks this maximum covers.
    pub higher: String,
    /// The other variant.
    pub lower: String,
    /// `max ln Λ` over those looks (always finite).
    pub max_log_lambda: f64,
}

/// What the peeking guard remembers between evaluations. Small and serializable: persist
/// [`Evaluation::guard_state`] with the experiment and pass it back next time.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GuardState {
    /// τ² the maxima were computed with; `None` before the first look.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tau_squared: Option<f64>,
    /// Evaluations folded into this state.
    #[serde(default)]
    pub looks: u64,
    /// Per ordered pair running maxima, sorted by (`higher`, `lower`).
    #[serde(default)]
    pub pairs: Vec<PairMax>,
}

impl GuardState {
    /// Running maximum of `ln Λ` over the looks at which `higher` had the higher rate.
    pub fn max_log_lambda(&self, higher: &str, lower: &str) -> Option<f64> {
        self.pairs
            .iter()
            .find(|p| p.higher == higher && p.lower == lower)
            .map(|p| p.max_log_lambda)
    }

    fn record(&mut self, higher: &str, lower: &str, log_lambda: f64) {
        if !log_lambda.is_finite() {
            return;
        }
        match self
            .pairs
            .iter_mut()
            .find(|p| p.higher == higher && p.lower == lower)
        {
            Some(p) => p.max_log_lambda = p.max_log_lambda.max(log_lambda),
            None => self.pairs.push(PairMax {
                higher: higher.to_owned(),
                lower: lower.to_owned(),
                max_log_lambda: log_lambda,
            }),
        }
    }

    /// This state after one more look at `arms` with mixing variance `tau_squared`.
    fn advanced(&self, arms: &[ArmFigures], tau_squared: f64) -> GuardState {
        let mut next = if self.tau_squared == Some(tau_squared) {
            self.clone()
        } else {
            // A different τ² is a different statistic; its old maxima do not apply.
            GuardState::default()
        };
        let names: HashSet<&str> = arms.iter().map(|a| a.variant.as_str()).collect();
        next.pairs
            .retain(|p| names.contains(p.higher.as_str()) && names.contains(p.lower.as_str()));
        for (i, a) in arms.iter().enumerate() {
            for b in &arms[i + 1..] {
                if let Some(m) = pair_msprt(a, b, tau_squared) {
                    match m.theta_hat.partial_cmp(&0.0) {
                        Some(Ordering::Greater) => {
                            next.record(&b.variant, &a.variant, m.log_lambda)
                        }
                        Some(Ordering::Less) => next.record(&a.variant, &b.variant, m.log_lambda),
                        // No observed difference: Λ < 1, no evidence for either direction.
                        _ => {}
                    }
                }
            }
        }
        next.pairs.sort_by(|x, y| {
            (x.higher.as_str(), x.lower.as_str()).cmp(&(y.higher.as_str(), y.lower.as_str()))
        });
        next.tau_squared = Some(tau_squared);
        next.looks += 1;
        next
    }
}

/// mSPRT for `b` against `a` (θ̂ = rate_b − rate_a), or `None` where Λ is undefined.
fn pair_msprt(a: &ArmFigures, b: &ArmFigures, tau_squared: f64) -> Option<stats::Msprt> {
    msprt::mixture_likelihood_ratio(
        (a.conversions, a.subjects),
        (b.conversions, b.subjects),
        tau_squared,
    )
    .ok()
}

/// Per-arm numbers for the results page and the run report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ArmResult {
    pub variant: String,
    pub weight: f64,
    pub subjects: u64,
    pub conversions: u64,
    /// Observed `conversions / subjects`; `None` without subjects.
    pub rate: Option<f64>,
    /// Equal-tailed 95% credible interval of the Beta(1 + c, 1 + n − c) posterior.
    pub credible_interval: [f64; 2],
    /// P(this arm is the best) under the objective.
    pub prob_best: f64,
    /// Expected rate given up by shipping this arm, under the objective.
    pub expected_loss: f64,
}

/// The peeking guard's numbers for the candidate against the runner-up.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GuardOutcome {
    /// `policy.peeking_guard`: whether this guard can block.
    pub enabled: bool,
    pub alpha: f64,
    pub tau_squared: f64,
    /// `1/α`: the running maximum must reach this.
    pub boundary: f64,
    /// Candidate rate − runner-up rate at this look (`None` when Λ is undefined).
    pub theta_hat: Option<f64>,
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
    /// These arms have no subjects, so rates cannot be compared.
    NoData { variants: Vec<String> },
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
    /// The candidate does not strictly beat the runner-up on the observed rate.
    NoLead { delta: f64 },
    /// The candidate beats the runner-up by less than `min_delta`.
    MinDelta { delta: f64, required: f64 },
    /// `bayesian_beta`: the candidate's P(best) is below `probability_threshold`.
    ProbabilityThreshold { prob_best: f64, required: f64 },
    /// `bayesian_beta`: the candidate's expected loss exceeds `max_expected_loss`.
    ExpectedLoss { expected_loss: f64, max: f64 },
    /// The mSPRT has not (yet) rejected "no difference" between candidate and runner-up.
    PeekingGuard {
        lambda_running_max: Option<f64>,
        boundary: f64,
    },
}

impl Blocker {
    /// Stable snake_case code (the `reason` field), for logs and metrics labels.
    pub fn code(&self) -> &'static str {
        match self {
            Self::ManualMode => "manual_mode",
            Self::NoData { .. } => "no_data",
            Self::SrmMismatch { .. } => "srm_mismatch",
            Self::PickAfterNotElapsed { .. } => "pick_after_not_elapsed",
            Self::MinAssignments { .. } => "min_assignments",
            Self::MinConversions { .. } => "min_conversions",
            Self::NoLead { .. } => "no_lead",
            Self::MinDelta { .. } => "min_delta",
            Self::ProbabilityThreshold { .. } => "probability_threshold",
            Self::ExpectedLoss { .. } => "expected_loss",
            Self::PeekingGuard { .. } => "peeking_guard",
        }
    }
}

impl fmt::Display for Blocker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ManualMode => write!(f, "policy mode is manual: only an override decides"),
            Self::NoData { variants } => write!(f, "no subjects yet in {}", variants.join(", ")),
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
            Self::NoLead { delta } => write!(
                f,
                "the candidate does not beat the runner-up (difference {delta:+.5})"
            ),
            Self::MinDelta { delta, required } => write!(
                f,
                "the candidate beats the runner-up by {delta:.5}, less than min_delta {required}"
            ),
            Self::ProbabilityThreshold {
                prob_best,
                required,
            } => write!(f, "P(best) = {prob_best:.4} < {required}"),
            Self::ExpectedLoss { expected_loss, max } => {
                write!(f, "expected loss {expected_loss:.5} > {max}")
            }
            Self::PeekingGuard {
                lambda_running_max,
                boundary,
            } => match lambda_running_max {
                Some(l) => write!(
                    f,
                    "peeking guard: running max Λ = {l:.3} has not reached 1/α = {boundary}"
                ),
                None => write!(f, "peeking guard: no evidence of a difference yet"),
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
        /// Candidate's observed rate advantage in the objective's direction.
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
    /// The control's variant key.
    pub control: String,
    pub arms: Vec<ArmResult>,
    pub srm: SrmResult,
    /// The arm that would win (best rate, or highest P(best)).
    pub candidate: String,
    /// The best of the other arms by the same score.
    pub runner_up: String,
    /// Candidate's observed rate minus the runner-up's, in the objective's direction (positive
    /// = candidate better); `None` when either has no subjects.
    pub delta: Option<f64>,
    pub peeking_guard: GuardOutcome,
    /// The peeking-guard state after this look: persist it and pass it to the next evaluation.
    pub guard_state: GuardState,
    pub verdict: Verdict,
}

pub fn to_stats_objective(objective: Objective) -> stats::Objective {
    match objective {
        Objective::Maximize => stats::Objective::Maximize,
        Objective::Minimize => stats::Objective::Minimize,
    }
}

fn rate(arm: &ArmFigures) -> Option<f64> {
    (arm.subjects > 0).then(|| arm.conversions as f64 / arm.subjects as f64)
}

/// Rate oriented so that higher is better under `objective`.
fn oriented_rate(arm: &ArmFigures, objective: Objective) -> Option<f64> {
    rate(arm).map(|r| match objective {
        Objective::Maximize => r,
        Objective::Minimize => -r,
    })
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
        if a.conversions > a.subjects {
            return Err(PolicyError::ConversionsExceedSubjects {
                variant: a.variant.clone(),
                conversions: a.conversions,
                subjects: a.subjects,
            });
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
    Ok(())
}

/// Evaluate one experiment once. See the module docs for the rules.
///
/// Errors only on invalid input (see [`PolicyError`]); every data-dependent reason not to
/// decide is a [`Blocker`].
pub fn evaluate(input: &EvaluationInput<'_>) -> Result<Evaluation, PolicyError> {
    evaluate_with(input, Detail::Full)
}

/// [`evaluate`] without the per-arm credible intervals (reported as `[0, 1]`): they are for
/// display only and never enter the verdict. For simulations, which evaluate hundreds of
/// thousands of times (the quantile inversions are ~70% of an evaluation's cost).
pub fn evaluate_decision_only(input: &EvaluationInput<'_>) -> Result<Evaluation, PolicyError> {
    evaluate_with(input, Detail::DecisionOnly)
}

/// How much of an [`Evaluation`] to compute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Detail {
    /// Everything (what the evaluate job and the results page use).
    Full,
    /// Skip the per-arm credible intervals (reported as `[0, 1]`): they are for display only,
    /// never enter the verdict ([`evaluate_decision_only`]).
    DecisionOnly,
}

fn evaluate_with(input: &EvaluationInput<'_>, detail: Detail) -> Result<Evaluation, PolicyError> {
    validate(input)?;
    let EvaluationInput {
        policy,
        objective,
        arms,
        control,
        elapsed,
        guard,
    } = *input;

    // Per-arm Bayesian figures (shown for both methods; decisive only for bayesian_beta).
    let counts: Vec<(u64, u64)> = arms.iter().map(|a| (a.conversions, a.subjects)).collect();
    let summary = stats::summarize(&counts, to_stats_objective(objective))?;
    let mut arm_results = Vec::with_capacity(arms.len());
    for (i, a) in arms.iter().enumerate() {
        let (lo, hi) = match detail {
            Detail::Full => BetaPosterior::from_counts(a.conversions, a.subjects)?
                .credible_interval(CREDIBLE_LEVEL)?,
            Detail::DecisionOnly => (0.0, 1.0),
        };
        arm_results.push(ArmResult {
            variant: a.variant.clone(),
            weight: a.weight,
            subjects: a.subjects,
            conversions: a.conversions,
            rate: rate(a),
            credible_interval: [lo, hi],
            prob_best: summary.prob_best[i],
            expected_loss: summary.expected_loss[i],
        });
    }

    let subjects: Vec<u64> = arms.iter().map(|a| a.subjects).collect();
    let weights: Vec<f64> = arms.iter().map(|a| a.weight).collect();
    let srm = stats::srm_check_with_threshold(&subjects, &weights, SRM_THRESHOLD)?;

    // Candidate and runner-up.
    let scores: Vec<f64> = match policy.stat_method {
        StatMethod::SimpleRate => arms
            .iter()
            .map(|a| oriented_rate(a, objective).unwrap_or(f64::NEG_INFINITY))
            .collect(),
        StatMethod::BayesianBeta => summary.prob_best.clone(),
    };
    let cand = best_index(&scores, control, None);
    let runner = best_index(&scores, control, Some(cand));
    let (c, r) = (&arms[cand], &arms[runner]);
    let delta = match (oriented_rate(c, objective), oriented_rate(r, objective)) {
        (Some(x), Some(y)) => Some(x - y),
        _ => None,
    };

    // Peeking guard: fold this look into the state, then read the candidate's running max.
    let tau_squared = policy.tau_squared.unwrap_or(msprt::DEFAULT_TAU_SQUARED);
    let guard_state = guard.advanced(arms, tau_squared);
    let now = pair_msprt(r, c, tau_squared);
    let (higher, lower) = match objective {
        Objective::Maximize => (c, r),
        Objective::Minimize => (r, c),
    };
    let running_max = guard_state.max_log_lambda(&higher.variant, &lower.variant);
    let rejects = running_max.is_some_and(|m| msprt::rejects_log(m, policy.alpha));
    let guard_outcome = GuardOutcome {
        enabled: policy.peeking_guard,
        alpha: policy.alpha,
        tau_squared,
        boundary: 1.0 / policy.alpha,
        theta_hat: now.map(|m| m.theta_hat),
        log_lambda: now.map(|m| m.log_lambda),
        lambda: now.map(|m| m.lambda),
        log_lambda_running_max: running_max,
        lambda_running_max: running_max.map(f64::exp),
        always_valid_p_value: running_max.map_or(1.0, |m| (-m).exp().min(1.0)),
        rejects_no_difference: rejects,
    };

    // Every blocker that holds, in the documented order.
    let mut blockers = Vec::new();
    if policy.mode == PolicyMode::Manual {
        blockers.push(Blocker::ManualMode);
    }
    let empty: Vec<String> = arms
        .iter()
        .filter(|a| a.subjects == 0)
        .map(|a| a.variant.clone())
        .collect();
    if !empty.is_empty() {
        blockers.push(Blocker::NoData { variants: empty });
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
        .filter(|a| a.subjects < policy.min_assignments)
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
        .filter(|a| a.conversions < policy.min_conversions)
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
            blockers.push(Blocker::NoLead { delta: d });
        }
        if d < policy.min_delta {
            blockers.push(Blocker::MinDelta {
                delta: d,
                required: policy.min_delta,
            });
        }
    }
    let (prob_best, expected_loss) = (summary.prob_best[cand], summary.expected_loss[cand]);
    if policy.stat_method == StatMethod::BayesianBeta {
        if prob_best < policy.probability_threshold {
            blockers.push(Blocker::ProbabilityThreshold {
                prob_best,
                required: policy.probability_threshold,
            });
        }
        if expected_loss > policy.max_expected_loss {
            blockers.push(Blocker::ExpectedLoss {
                expected_loss,
                max: policy.max_expected_loss,
            });
        }
    }
    if policy.peeking_guard && !rejects {
        blockers.push(Blocker::PeekingGuard {
            lambda_running_max: guard_outcome.lambda_running_max,
            boundary: guard_outcome.boundary,
        });
    }

    let verdict = match (blockers.is_empty(), delta) {
        (true, Some(delta)) => Verdict::Winner {
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
        control: arms[control].variant.clone(),
        arms: arm_results,
        srm,
        candidate: c.variant.clone(),
        runner_up: r.variant.clone(),
        delta,
        peeking_guard: guard_outcome,
        guard_state,
        verdict,
    })
}
