//! Monte Carlo measurement of the policy's decision quality (false-winner rate, power, the
//! guardrails' effect) for every metric kind, shared by the `decision_quality` binary and its
//! tests.
//!
//! # Set-up
//!
//! Two arms, control first. Subjects arrive **alternately** (control, treatment, control, …),
//! so both arms always hold exactly the same number of subjects (the SRM check never fires;
//! it is tested separately). Each subject draws its events of the primary metric (and of the
//! guardrail metric, independently) from the arm's [`Data`] model, and the arm's
//! [`VariantCounts`] are accumulated exactly as the stores compute them: subjects, converted
//! subjects (≥ 1 event), events, Σ total, Σ total², Σ n², Σ n·total. The policy is evaluated
//! after every `subjects_per_look` subjects per arm, up to `looks` looks, carrying the
//! [`GuardState`] from one look to the next exactly as the evaluate job does; a run stops at
//! its first decision. Every policy of a [`Study`] is evaluated on the *same* simulated data
//! of a run (a paired comparison), so differences between policies are not sampling noise.
//!
//! Randomness comes from `ChaCha8Rng` (value-stable across `rand_chacha` releases, unlike
//! `StdRng`) seeded with the configured seed, one stream per study and a fixed window of the
//! stream per run: a run's data depend only on (seed, study position, run index), whatever
//! the policies, the number of runs or the threads that simulate them.

use std::thread;

use rand::SeedableRng;
use rand::distr::{Bernoulli, Distribution, Uniform};
use rand_chacha::ChaCha8Rng;
use rand_distr::{LogNormal, Poisson};
use serde::Serialize;
use thiserror::Error;
use verdict_domain::{
    Margin, Metric, MetricKind, Objective, StatMethod, VariantCounts, WinnerPolicy,
};
use verdict_policy::{
    ArmFigures, EvaluationInput, GuardState, GuardrailInput, PolicyError, evaluate_decision_only,
};

/// Why a simulation could not run: an invalid data model, or figures the policy refused.
#[derive(Debug, Error)]
pub enum SimulationError {
    #[error("invalid data model: {0}")]
    InvalidData(&'static str),
    #[error(transparent)]
    Policy(#[from] PolicyError),
}

/// Start of the generated section in a document (see [`replace_section`]).
pub const BEGIN_MARKER: &str = "<!-- decision-quality:begin -->";
/// End of the generated section.
pub const END_MARKER: &str = "<!-- decision-quality:end -->";

/// How one arm's subjects generate events of one metric.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "model", rename_all = "snake_case")]
pub enum Data {
    /// Each subject converts with probability `rate` (one event of value 1).
    Binomial { rate: f64 },
    /// Poisson(`mean`) events per subject, value 1 each.
    Count { mean: f64 },
    /// A share `conversion` of subjects places one order worth lognormal(ln `median`,
    /// `sigma`).
    Revenue {
        conversion: f64,
        median: f64,
        sigma: f64,
    },
    /// Every subject sends between `min_events` and `max_events` events (uniform), each
    /// taking lognormal(ln `median`, `sigma`).
    Latency {
        median: f64,
        sigma: f64,
        min_events: u64,
        max_events: u64,
    },
}

impl Data {
    /// The metric kind these data feed.
    pub fn kind(&self) -> MetricKind {
        match self {
            Self::Binomial { .. } => MetricKind::Binomial,
            Self::Count { .. } => MetricKind::Count,
            Self::Revenue { .. } => MetricKind::Sum,
            Self::Latency { .. } => MetricKind::Mean,
        }
    }

    fn sampler(&self) -> Result<Sampler, SimulationError> {
        let bad = SimulationError::InvalidData;
        Ok(match *self {
            Self::Binomial { rate } => {
                Sampler::Binomial(Bernoulli::new(rate).map_err(|_| bad("rate must be in [0, 1]"))?)
            }
            Self::Count { mean } => {
                Sampler::Count(Poisson::new(mean).map_err(|_| bad("mean must be positive"))?)
            }
            Self::Revenue {
                conversion,
                median,
                sigma,
            } => Sampler::Revenue(
                Bernoulli::new(conversion).map_err(|_| bad("conversion must be in [0, 1]"))?,
                LogNormal::new(median.ln(), sigma).map_err(|_| bad("invalid lognormal"))?,
            ),
            Self::Latency {
                median,
                sigma,
                min_events,
                max_events,
            } => Sampler::Latency(
                Uniform::new_inclusive(min_events, max_events)
                    .map_err(|_| bad("invalid event range"))?,
                LogNormal::new(median.ln(), sigma).map_err(|_| bad("invalid lognormal"))?,
            ),
        })
    }
}

/// [`Data`] with its distributions built.
#[derive(Debug, Clone, Copy)]
enum Sampler {
    Binomial(Bernoulli),
    Count(Poisson<f64>),
    Revenue(Bernoulli, LogNormal<f64>),
    Latency(Uniform<u64>, LogNormal<f64>),
}

impl Sampler {
    /// One subject's events and their total.
    fn subject(&self, rng: &mut ChaCha8Rng) -> (u64, f64) {
        match self {
            Self::Binomial(b) => {
                let c = b.sample(rng);
                (u64::from(c), if c { 1.0 } else { 0.0 })
            }
            Self::Count(p) => {
                // Poisson draws are whole numbers as f64.
                let n = p.sample(rng) as u64;
                (n, n as f64)
            }
            Self::Revenue(buys, value) => {
                if buys.sample(rng) {
                    (1, value.sample(rng))
                } else {
                    (0, 0.0)
                }
            }
            Self::Latency(events, each) => {
                let n = events.sample(rng);
                let total = (0..n).map(|_| each.sample(rng)).sum();
                (n, total)
            }
        }
    }
}

/// Fold one subject into an arm's figures, as the stores do.
pub fn add_subject(c: &mut VariantCounts, events: u64, total: f64) {
    c.subjects += 1;
    c.converted_subjects += u64::from(events > 0);
    c.events += events;
    c.sum += total;
    c.sum_of_squares += total * total;
    c.sum_events_squared += events * events;
    c.sum_events_value += events as f64 * total;
}

/// Which arm is truly better, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Truth {
    /// No difference: every winner is a false winner.
    Null,
    TreatmentBetter,
    ControlBetter,
}

/// A guardrail metric and how each arm generates it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GuardrailModel {
    pub metric: Metric,
    pub control: Data,
    pub treatment: Data,
}

/// Two arms' data models for the primary metric (and optionally a guardrail).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Scenario {
    pub name: String,
    /// The primary metric (its kind must match the data's).
    pub metric: Metric,
    pub control: Data,
    pub treatment: Data,
    pub truth: Truth,
    pub guardrail: Option<GuardrailModel>,
}

impl Scenario {
    fn new(
        name: impl Into<String>,
        objective: Objective,
        control: Data,
        treatment: Data,
        truth: Truth,
    ) -> Self {
        Self {
            name: name.into(),
            metric: Metric::new("primary", control.kind(), objective),
            control,
            treatment,
            truth,
            guardrail: None,
        }
    }

    /// No true difference on the primary metric.
    pub fn is_null(&self) -> bool {
        self.truth == Truth::Null
    }
}

/// A named policy to measure; `guardrails` says whether the scenario's guardrail is passed
/// to the policy (a scenario without one ignores it).
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyCase {
    pub name: String,
    pub policy: WinnerPolicy,
    pub guardrails: bool,
}

impl PolicyCase {
    fn new(name: &str, stat_method: StatMethod, peeking_guard: bool, guardrails: bool) -> Self {
        Self {
            name: name.into(),
            policy: WinnerPolicy {
                stat_method,
                peeking_guard,
                ..WinnerPolicy::default()
            },
            guardrails,
        }
    }

    /// `bayesian_beta` with the peeking guard: the default policy.
    pub fn bayesian() -> Self {
        Self::new(
            "bayesian_beta + guard",
            StatMethod::BayesianBeta,
            true,
            false,
        )
    }

    /// `simple_rate` with the peeking guard.
    pub fn simple() -> Self {
        Self::new("simple_rate + guard", StatMethod::SimpleRate, true, false)
    }

    /// `bayesian_beta` without the peeking guard (for comparison: the bare rule).
    pub fn bare() -> Self {
        Self::new(
            "bayesian_beta, bare",
            StatMethod::BayesianBeta,
            false,
            false,
        )
    }

    /// The default policy with the scenario's guardrail.
    pub fn with_guardrail() -> Self {
        Self::new(
            "bayesian_beta + guard + guardrail",
            StatMethod::BayesianBeta,
            true,
            true,
        )
    }
}

/// A group of the table (one metric kind, the lift sweep, the guardrails).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Group {
    Binomial,
    Count,
    Sum,
    Mean,
    RevenueSweep,
    Guardrail,
}

impl Group {
    pub fn title(self) -> &'static str {
        match self {
            Self::Binomial => "binomial: conversion rate",
            Self::Count => "count: events per subject",
            Self::Sum => "sum: revenue per subject",
            Self::Mean => "mean: latency per event",
            Self::RevenueSweep => "sum: revenue lift sweep",
            Self::Guardrail => {
                "guardrail metric (binomial error rate, minimize, margin 20% relative)"
            }
        }
    }
}

/// A scenario and the policies measured on it.
#[derive(Debug, Clone, PartialEq)]
pub struct Study {
    pub group: Group,
    pub scenario: Scenario,
    pub policies: Vec<PolicyCase>,
}

/// 10% conversion (binomial).
pub fn binomial(rate: f64) -> Data {
    Data::Binomial { rate }
}

/// Revenue: 5% of subjects buy once; order values lognormal, median 30, σ = 1, times
/// `factor`.
pub fn revenue(factor: f64) -> Data {
    Data::Revenue {
        conversion: 0.05,
        median: 30.0 * factor,
        sigma: 1.0,
    }
}

/// Latency: 1 to 10 events per subject, each lognormal, median 200 ms, σ = 0.5, times
/// `factor`.
pub fn latency(factor: f64) -> Data {
    Data::Latency {
        median: 200.0 * factor,
        sigma: 0.5,
        min_events: 1,
        max_events: 10,
    }
}

/// Relative revenue lifts of the sweep.
pub const REVENUE_SWEEP: [f64; 5] = [0.10, 0.20, 0.30, 0.40, 0.50];

/// The A/A study of each kind (the targets' null scenarios).
pub fn null_studies(policies: &[PolicyCase]) -> Vec<Study> {
    let study = |group, name: &str, objective, data: Data| Study {
        group,
        scenario: Scenario::new(name, objective, data, data, Truth::Null),
        policies: policies.to_vec(),
    };
    vec![
        study(
            Group::Binomial,
            "A/A 10%",
            Objective::Maximize,
            binomial(0.10),
        ),
        study(
            Group::Count,
            "A/A Poisson(2) events",
            Objective::Maximize,
            Data::Count { mean: 2.0 },
        ),
        study(
            Group::Sum,
            "A/A revenue (5% buy, lognormal σ = 1)",
            Objective::Maximize,
            revenue(1.0),
        ),
        study(
            Group::Mean,
            "A/A latency (lognormal median 200 ms, σ = 0.5, 1–10 events)",
            Objective::Minimize,
            latency(1.0),
        ),
    ]
}

/// The effect studies of the targets: 10% vs 12%, events per subject +5%, revenue +40%,
/// latency −5%.
pub fn effect_studies(policies: &[PolicyCase]) -> Vec<Study> {
    let study = |group, name: &str, objective, control, treatment| Study {
        group,
        scenario: Scenario::new(name, objective, control, treatment, Truth::TreatmentBetter),
        policies: policies.to_vec(),
    };
    vec![
        study(
            Group::Binomial,
            "10% vs 12%",
            Objective::Maximize,
            binomial(0.10),
            binomial(0.12),
        ),
        study(
            Group::Count,
            "Poisson(2) vs Poisson(2.1) events (+5%)",
            Objective::Maximize,
            Data::Count { mean: 2.0 },
            Data::Count { mean: 2.1 },
        ),
        study(
            Group::Sum,
            "revenue +40% (order values ×1.4)",
            Objective::Maximize,
            revenue(1.0),
            revenue(1.4),
        ),
        study(
            Group::Mean,
            "latency −5% (minimize)",
            Objective::Minimize,
            latency(1.0),
            latency(0.95),
        ),
    ]
}

/// Revenue per subject +10% … +50% (order values scaled), for the smallest lift found.
pub fn sweep_studies(policies: &[PolicyCase]) -> Vec<Study> {
    REVENUE_SWEEP
        .iter()
        .map(|&lift| Study {
            group: Group::RevenueSweep,
            scenario: Scenario::new(
                format!("revenue +{:.0}%", 100.0 * lift),
                Objective::Maximize,
                revenue(1.0),
                revenue(1.0 + lift),
                Truth::TreatmentBetter,
            ),
            policies: policies.to_vec(),
        })
        .collect()
}

/// A primary winner (10% vs 12%) with an error-rate guardrail (5%, minimize, default margin):
/// 30% worse in the treatment (6.5%), or equal.
pub fn guardrail_studies() -> Vec<Study> {
    let study = |name: &str, treatment_errors: f64| {
        let mut scenario = Scenario::new(
            name,
            Objective::Maximize,
            binomial(0.10),
            binomial(0.12),
            Truth::TreatmentBetter,
        );
        scenario.guardrail = Some(GuardrailModel {
            metric: Metric {
                margin: Some(Margin::Relative(0.2)),
                ..Metric::new("errors", MetricKind::Binomial, Objective::Minimize)
            },
            control: binomial(0.05),
            treatment: binomial(treatment_errors),
        });
        Study {
            group: Group::Guardrail,
            scenario,
            policies: vec![PolicyCase::with_guardrail(), PolicyCase::bayesian()],
        }
    };
    vec![
        study("10% vs 12%, errors 5% vs 6.5% (30% worse)", 0.065),
        study("10% vs 12%, errors 5% vs 5%", 0.05),
    ]
}

/// Every study of the `decision_quality` table.
pub fn standard_studies() -> Vec<Study> {
    let kinds = [
        PolicyCase::bayesian(),
        PolicyCase::simple(),
        PolicyCase::bare(),
    ];
    let mut studies = null_studies(&kinds);
    studies.extend(effect_studies(&kinds));
    studies.extend(sweep_studies(&[PolicyCase::bayesian()]));
    studies.extend(guardrail_studies());
    // Group the table by kind.
    let order = |g: Group| g as u8;
    studies.sort_by_key(|s| order(s.group));
    studies
}

/// Size of a simulation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Config {
    pub runs: u32,
    pub seed: u64,
    pub subjects_per_look: u64,
    pub looks: u32,
    /// Threads simulating runs (results do not depend on it).
    pub threads: usize,
}

impl Config {
    /// The design of the targets: every 500 subjects per arm up to 20,000 (40 looks).
    pub fn new(runs: u32, seed: u64) -> Self {
        Self {
            runs,
            seed,
            subjects_per_look: 500,
            looks: 40,
            threads: thread::available_parallelism().map_or(1, |n| n.get().min(2)),
        }
    }
}

/// One run's outcome under one policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Outcome {
    NoDecision,
    /// The control won at this look (1-based).
    Control(u32),
    /// The treatment won at this look (1-based).
    Treatment(u32),
}

/// Outcomes of one policy on one scenario.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Tally {
    pub group: Group,
    pub scenario: Scenario,
    pub policy: String,
    /// Per run, in run order.
    pub outcomes: Vec<Outcome>,
}

impl Tally {
    pub fn runs(&self) -> u32 {
        self.outcomes.len() as u32
    }

    fn share(&self, count: usize) -> f64 {
        if self.outcomes.is_empty() {
            0.0
        } else {
            count as f64 / self.outcomes.len() as f64
        }
    }

    pub fn control_wins(&self) -> usize {
        self.outcomes
            .iter()
            .filter(|o| matches!(o, Outcome::Control(_)))
            .count()
    }

    pub fn treatment_wins(&self) -> usize {
        self.outcomes
            .iter()
            .filter(|o| matches!(o, Outcome::Treatment(_)))
            .count()
    }

    /// Share of runs that declared any winner in an A/A scenario (`None` otherwise).
    pub fn false_winner_rate(&self) -> Option<f64> {
        self.scenario
            .is_null()
            .then(|| self.share(self.control_wins() + self.treatment_wins()))
    }

    /// Share of runs that picked the truly better arm (`None` for A/A).
    pub fn right_winner_rate(&self) -> Option<f64> {
        match self.scenario.truth {
            Truth::Null => None,
            Truth::TreatmentBetter => Some(self.share(self.treatment_wins())),
            Truth::ControlBetter => Some(self.share(self.control_wins())),
        }
    }

    /// Share of runs that picked the truly worse arm (`None` for A/A).
    pub fn wrong_winner_rate(&self) -> Option<f64> {
        match self.scenario.truth {
            Truth::Null => None,
            Truth::TreatmentBetter => Some(self.share(self.control_wins())),
            Truth::ControlBetter => Some(self.share(self.treatment_wins())),
        }
    }

    /// Share of runs without a decision after the last look.
    pub fn no_decision_rate(&self) -> f64 {
        self.share(
            self.outcomes
                .iter()
                .filter(|o| **o == Outcome::NoDecision)
                .count(),
        )
    }

    /// Share of runs in which the treatment was *not* chosen.
    pub fn treatment_not_chosen_rate(&self) -> f64 {
        1.0 - self.share(self.treatment_wins())
    }

    /// Median look of the decisions (`None` when there were none).
    pub fn median_decision_look(&self) -> Option<f64> {
        let mut looks: Vec<u32> = self
            .outcomes
            .iter()
            .filter_map(|o| match o {
                Outcome::Control(l) | Outcome::Treatment(l) => Some(*l),
                Outcome::NoDecision => None,
            })
            .collect();
        looks.sort_unstable();
        let n = looks.len();
        match n {
            0 => None,
            _ if n % 2 == 1 => Some(f64::from(looks[n / 2])),
            _ => Some(0.5 * (f64::from(looks[n / 2 - 1]) + f64::from(looks[n / 2]))),
        }
    }
}

/// Among the runs in which `without` chose the treatment, the share in which `with` did not
/// (the same runs' data: a paired comparison). `None` when `without` never chose it.
pub fn stopped_share(with: &Tally, without: &Tally) -> Option<f64> {
    let mut chosen = 0_usize;
    let mut stopped = 0_usize;
    for (w, wo) in with.outcomes.iter().zip(&without.outcomes) {
        if matches!(wo, Outcome::Treatment(_)) {
            chosen += 1;
            stopped += usize::from(!matches!(w, Outcome::Treatment(_)));
        }
    }
    (chosen > 0).then(|| stopped as f64 / chosen as f64)
}

/// Stream words reserved per run: far more than a run of 40 × 500 subjects per arm draws.
const WORDS_PER_RUN: u128 = 1 << 40;

/// The random stream of run `run` of study `study`.
fn run_rng(seed: u64, study: u64, run: u32) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(study);
    rng.set_word_pos(u128::from(run) * WORDS_PER_RUN);
    rng
}

/// Samplers of one arm: primary, guardrail.
type ArmSamplers = (Sampler, Option<Sampler>);

/// One simulated experiment: every policy's outcome, in the study's policy order.
fn simulate_run(
    study: &Study,
    samplers: &[ArmSamplers; 2],
    config: &Config,
    rng: &mut ChaCha8Rng,
) -> Result<Vec<Outcome>, PolicyError> {
    const NAMES: [&str; 2] = ["control", "treatment"];
    let scenario = &study.scenario;
    let fresh = |i: usize| VariantCounts {
        variant: NAMES[i].into(),
        ..VariantCounts::default()
    };
    let mut primary = [fresh(0), fresh(1)];
    let mut guardrail = [fresh(0), fresh(1)];
    let mut guards = vec![GuardState::default(); study.policies.len()];
    let mut outcomes = vec![Outcome::NoDecision; study.policies.len()];
    for look in 1..=config.looks {
        for _ in 0..config.subjects_per_look {
            // Alternate arrivals: one control subject, then one treatment subject.
            for (arm, (p, g)) in samplers.iter().enumerate() {
                let (n, total) = p.subject(rng);
                add_subject(&mut primary[arm], n, total);
                if let Some(g) = g {
                    let (n, total) = g.subject(rng);
                    add_subject(&mut guardrail[arm], n, total);
                }
            }
        }
        let arms = [
            ArmFigures::new(NAMES[0], 0.5, primary[0].clone()),
            ArmFigures::new(NAMES[1], 0.5, primary[1].clone()),
        ];
        let guardrail_inputs: Vec<GuardrailInput<'_>> = scenario
            .guardrail
            .iter()
            .map(|g| GuardrailInput {
                metric: &g.metric,
                arms: &guardrail,
            })
            .collect();
        let mut undecided = false;
        for (i, case) in study.policies.iter().enumerate() {
            if outcomes[i] != Outcome::NoDecision {
                continue;
            }
            // The same rules and guard-state handling as `evaluate`, minus the display-only
            // credible intervals.
            let evaluation = evaluate_decision_only(&EvaluationInput {
                policy: &case.policy,
                metric: &scenario.metric,
                objective: scenario.metric.objective,
                arms: &arms,
                control: 0,
                // One hour per look; pick_after is 0 in the default policy anyway.
                elapsed: time::Duration::hours(i64::from(look)),
                guard: &guards[i],
                guardrails: if case.guardrails {
                    &guardrail_inputs
                } else {
                    &[]
                },
            })?;
            match evaluation.verdict.winner() {
                Some("treatment") => outcomes[i] = Outcome::Treatment(look),
                Some(_) => outcomes[i] = Outcome::Control(look),
                None => undecided = true,
            }
            guards[i] = evaluation.guard_state;
        }
        if !undecided {
            break;
        }
    }
    Ok(outcomes)
}

/// A run's index and every policy's outcome on it.
type RunOutcomes = (u32, Vec<Outcome>);

/// Run every study; one [`Tally`] per (study, policy), in study then policy order.
pub fn run(config: &Config, studies: &[Study]) -> Result<Vec<Tally>, SimulationError> {
    let mut tallies = Vec::new();
    for (index, study) in (0_u64..).zip(studies) {
        let s = &study.scenario;
        let samplers: [ArmSamplers; 2] = [
            (
                s.control.sampler()?,
                s.guardrail
                    .as_ref()
                    .map(|g| g.control.sampler())
                    .transpose()?,
            ),
            (
                s.treatment.sampler()?,
                s.guardrail
                    .as_ref()
                    .map(|g| g.treatment.sampler())
                    .transpose()?,
            ),
        ];
        let threads = config.threads.max(1);
        // Thread t simulates runs t, t + threads, …; results are put back in run order.
        let per_thread: Vec<Result<Vec<RunOutcomes>, SimulationError>> = thread::scope(|scope| {
            let handles: Vec<_> = (0..threads)
                .map(|t| {
                    let samplers = &samplers;
                    scope.spawn(move || {
                        (t as u32..config.runs)
                            .step_by(threads)
                            .map(|run| {
                                let mut rng = run_rng(config.seed, index, run);
                                simulate_run(study, samplers, config, &mut rng)
                                    .map(|o| (run, o))
                                    .map_err(SimulationError::from)
                            })
                            .collect()
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
                .collect()
        });
        let mut by_run: Vec<RunOutcomes> = Vec::with_capacity(config.runs as usize);
        for part in per_thread {
            by_run.extend(part?);
        }
        by_run.sort_by_key(|(run, _)| *run);
        for (i, case) in study.policies.iter().enumerate() {
            tallies.push(Tally {
                group: study.group,
                scenario: study.scenario.clone(),
                policy: case.name.clone(),
                outcomes: by_run.iter().map(|(_, o)| o[i]).collect(),
            });
        }
    }
    Ok(tallies)
}

fn pct(x: Option<f64>) -> String {
    x.map_or_else(|| "—".to_owned(), |v| format!("{:.1}%", 100.0 * v))
}

/// The tally of `policy` on the scenario named `scenario`.
pub fn find<'a>(tallies: &'a [Tally], scenario: &str, policy: &str) -> Option<&'a Tally> {
    tallies
        .iter()
        .find(|t| t.scenario.name == scenario && t.policy == policy)
}

/// The smallest lift of the revenue sweep that the default policy finds in at least 80% of
/// runs, with its rate (`None` when no lift of the sweep reaches 80%).
pub fn smallest_lift_found(tallies: &[Tally]) -> Option<(f64, f64)> {
    REVENUE_SWEEP.iter().find_map(|&lift| {
        let name = format!("revenue +{:.0}%", 100.0 * lift);
        let right = find(tallies, &name, &PolicyCase::bayesian().name)?.right_winner_rate()?;
        (right >= 0.80).then_some((lift, right))
    })
}

/// The results as markdown: one table per metric kind, the revenue sweep, the guardrails.
pub fn markdown_table(config: &Config, tallies: &[Tally]) -> String {
    let mut out = format!(
        "Each scenario is simulated {} times (draws of a ChaCha8 generator keyed {}); two arms, subjects alternate between arms; evaluated \
         every {} subjects per arm up to {} ({} looks), stopping at the first decision; \
         default policy (min_assignments 100, min_conversions 10, threshold 0.95, max loss \
         0.0025 — relative to the control for value metrics —, α 0.05; τ² {} for rates, τ = a \
         quarter of the control's estimate for the other kinds).\n",
        config.runs,
        config.seed,
        config.subjects_per_look,
        u64::from(config.looks) * config.subjects_per_look,
        config.looks,
        verdict_stats::msprt::DEFAULT_TAU_SQUARED,
    );
    let mut group: Option<Group> = None;
    for t in tallies.iter().filter(|t| t.group != Group::Guardrail) {
        if group != Some(t.group) {
            group = Some(t.group);
            out.push_str(&format!(
                "\n**{}**\n\n| scenario | policy | false winner | right winner | wrong winner \
                 | no decision | median look of decision (subjects/arm) |\n\
                 |---|---|---:|---:|---:|---:|---:|\n",
                t.group.title()
            ));
        }
        let median = t.median_decision_look().map_or_else(
            || "—".to_owned(),
            |m| format!("{m} ({})", (m * config.subjects_per_look as f64).round()),
        );
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} |\n",
            t.scenario.name,
            t.policy,
            pct(t.false_winner_rate()),
            pct(t.right_winner_rate()),
            pct(t.wrong_winner_rate()),
            pct(Some(t.no_decision_rate())),
            median,
        ));
    }
    if tallies.iter().any(|t| t.group == Group::RevenueSweep) {
        out.push_str(&match smallest_lift_found(tallies) {
            Some((lift, rate)) => format!(
                "\nSmallest revenue lift found in ≥ 80% of runs: +{:.0}% ({}).\n",
                100.0 * lift,
                pct(Some(rate))
            ),
            None => "\nNo revenue lift of the sweep is found in ≥ 80% of runs.\n".to_owned(),
        });
    }
    let guardrails: Vec<&Tally> = tallies
        .iter()
        .filter(|t| t.group == Group::Guardrail && t.policy == PolicyCase::with_guardrail().name)
        .collect();
    if !guardrails.is_empty() {
        out.push_str(&format!(
            "\n**{}** (policy {}; paired with the same runs without the guardrail)\n\n\
             | scenario | treatment chosen without the guardrail | treatment chosen with it | \
             treatment not chosen | winners stopped by the guardrail |\n\
             |---|---:|---:|---:|---:|\n",
            Group::Guardrail.title(),
            PolicyCase::with_guardrail().name,
        ));
        for t in guardrails {
            let without = find(tallies, &t.scenario.name, &PolicyCase::bayesian().name);
            out.push_str(&format!(
                "| {} | {} | {} | {} | {} |\n",
                t.scenario.name,
                pct(without.and_then(Tally::right_winner_rate)),
                pct(t.right_winner_rate()),
                pct(Some(t.treatment_not_chosen_rate())),
                pct(without.and_then(|w| stopped_share(t, w))),
            ));
        }
    }
    out
}

/// One target and whether it was met.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TargetCheck {
    pub description: String,
    pub value: f64,
    pub met: bool,
}

/// The targets, for the guarded policies: A/A false winners ≤ 5% for every kind; 10% vs
/// 12%, events +5%, revenue +40% and latency −5%: right winner ≥ 80%, wrong winner ≤ 1%; a candidate 30%
/// worse on a guardrail is blocked in ≥ 95% of runs; with the guardrail equal, it stops at
/// most 20% of the winners found without it.
pub fn check_targets(tallies: &[Tally]) -> Vec<TargetCheck> {
    let mut checks = Vec::new();
    let mut check = |description: String, value: f64, met: bool| {
        checks.push(TargetCheck {
            description,
            value,
            met,
        })
    };
    let guarded = |t: &&Tally| t.policy.ends_with("+ guard");
    for t in tallies
        .iter()
        .filter(|t| !matches!(t.group, Group::RevenueSweep | Group::Guardrail))
        .filter(guarded)
    {
        let name = format!("{} / {}", t.scenario.name, t.policy);
        if let Some(v) = t.false_winner_rate() {
            check(format!("{name}: false winners ≤ 5%"), v, v <= 0.05);
        } else {
            let right = t.right_winner_rate().unwrap_or(0.0);
            let wrong = t.wrong_winner_rate().unwrap_or(1.0);
            check(format!("{name}: right winner ≥ 80%"), right, right >= 0.80);
            check(format!("{name}: wrong winner ≤ 1%"), wrong, wrong <= 0.01);
        }
    }
    let studies = guardrail_studies();
    let (worse, equal) = (&studies[0].scenario.name, &studies[1].scenario.name);
    let with = PolicyCase::with_guardrail().name;
    if let Some(t) = find(tallies, worse, &with) {
        let v = t.treatment_not_chosen_rate();
        check(
            format!("{worse}: the candidate is blocked in ≥ 95% of runs"),
            v,
            v >= 0.95,
        );
    }
    if let (Some(t), Some(w)) = (
        find(tallies, equal, &with),
        find(tallies, equal, &PolicyCase::bayesian().name),
    ) {
        let v = stopped_share(t, w).unwrap_or(1.0);
        check(
            format!("{equal}: the guardrail stops ≤ 20% of the winners"),
            v,
            v <= 0.20,
        );
    }
    checks
}

/// `doc` with the text between [`BEGIN_MARKER`] and [`END_MARKER`] replaced by `section`,
/// or with a marked section appended when the markers are absent.
pub fn replace_section(doc: &str, section: &str) -> String {
    let block = format!("{BEGIN_MARKER}\n{}\n{END_MARKER}", section.trim_end());
    if let Some(start) = doc.find(BEGIN_MARKER)
        && let Some(end_rel) = doc[start..].find(END_MARKER)
    {
        let end = start + end_rel + END_MARKER.len();
        return format!("{}{block}{}", &doc[..start], &doc[end..]);
    }
    let mut out = doc.to_owned();
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    if !out.is_empty() {
        out.push('\n');
    }
    out.push_str(&block);
    out.push('\n');
    out
}
