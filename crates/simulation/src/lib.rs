//! Monte Carlo measurement of the policy's decision quality (false-winner rate, power), shared
//! by the `decision_quality` binary and its test.
//!
//! # Set-up
//!
//! Two arms, control first. Subjects arrive **alternately** (control, treatment, control, …),
//! so both arms always hold exactly the same number of subjects (the SRM check never fires; it
//! is tested separately) and each converts with probability `p_arm` (Bernoulli). The policy is
//! evaluated after every `subjects_per_look` subjects per arm, up to `looks` looks, carrying
//! the [`GuardState`] from one look to the next exactly as the evaluate job does; a run stops
//! at its first decision. Every policy is evaluated on the *same* simulated data stream of a
//! run (a paired comparison), so differences between policies are not sampling noise.
//!
//! Randomness comes from `ChaCha8Rng` (value-stable across `rand_chacha` releases, unlike
//! `StdRng`) seeded with the configured seed, one stream per scenario: results depend only on
//! (seed, scenario position, runs, looks, subjects per look).

use rand::SeedableRng;
use rand::distr::{Bernoulli, Distribution};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use verdict_domain::{Metric, MetricKind, Objective, StatMethod, WinnerPolicy};

use verdict_policy::{
    ArmFigures, EvaluationInput, GuardState, PolicyError, evaluate_decision_only,
};

/// Start of the generated section in a document (see [`replace_section`]).
pub const BEGIN_MARKER: &str = "<!-- decision-quality:begin -->";
/// End of the generated section.
pub const END_MARKER: &str = "<!-- decision-quality:end -->";

/// Two true conversion rates.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Scenario {
    pub name: String,
    pub control_rate: f64,
    pub treatment_rate: f64,
}

impl Scenario {
    pub fn new(control_rate: f64, treatment_rate: f64) -> Self {
        let pct = |p: f64| format!("{}%", (p * 1000.0).round() / 10.0);
        let name = if control_rate == treatment_rate {
            format!("A/A {} vs {}", pct(control_rate), pct(treatment_rate))
        } else {
            format!("{} vs {}", pct(control_rate), pct(treatment_rate))
        };
        Self {
            name,
            control_rate,
            treatment_rate,
        }
    }

    /// No true difference: every winner is a false winner.
    pub fn is_null(&self) -> bool {
        self.control_rate == self.treatment_rate
    }
}

/// A named policy to measure.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyCase {
    pub name: String,
    pub policy: WinnerPolicy,
}

/// A/A 10% vs 10%, 10% vs 12%, 10% vs 10.5% (the scenarios).
pub fn standard_scenarios() -> Vec<Scenario> {
    vec![
        Scenario::new(0.10, 0.10),
        Scenario::new(0.10, 0.12),
        Scenario::new(0.10, 0.105),
    ]
}

/// Both methods with the default policy (peeking guard on), then both bare rules (guard
/// off) for comparison.
pub fn standard_policies() -> Vec<PolicyCase> {
    let with = |stat_method, peeking_guard| WinnerPolicy {
        stat_method,
        peeking_guard,
        ..WinnerPolicy::default()
    };
    vec![
        PolicyCase {
            name: "simple_rate + guard".into(),
            policy: with(StatMethod::SimpleRate, true),
        },
        PolicyCase {
            name: "bayesian_beta + guard".into(),
            policy: with(StatMethod::BayesianBeta, true),
        },
        PolicyCase {
            name: "simple_rate, bare".into(),
            policy: with(StatMethod::SimpleRate, false),
        },
        PolicyCase {
            name: "bayesian_beta, bare".into(),
            policy: with(StatMethod::BayesianBeta, false),
        },
    ]
}

/// Size of a simulation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Config {
    pub runs: u32,
    pub seed: u64,
    pub subjects_per_look: u64,
    pub looks: u32,
}

impl Config {
    /// The design: every 500 subjects per arm up to 20,000 (40 looks).
    pub fn new(runs: u32, seed: u64) -> Self {
        Self {
            runs,
            seed,
            subjects_per_look: 500,
            looks: 40,
        }
    }
}

/// Outcomes of one policy on one scenario.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Tally {
    pub scenario: Scenario,
    pub policy: String,
    pub runs: u32,
    pub control_wins: u32,
    pub treatment_wins: u32,
    /// Look (1-based) of each decision.
    pub decision_looks: Vec<u32>,
}

impl Tally {
    fn share(&self, count: u32) -> f64 {
        if self.runs == 0 {
            0.0
        } else {
            f64::from(count) / f64::from(self.runs)
        }
    }

    /// Share of runs that declared any winner in an A/A scenario (`None` otherwise).
    pub fn false_winner_rate(&self) -> Option<f64> {
        self.scenario
            .is_null()
            .then(|| self.share(self.control_wins + self.treatment_wins))
    }

    /// Share of runs that picked the truly better arm (`None` for A/A).
    pub fn right_winner_rate(&self) -> Option<f64> {
        (!self.scenario.is_null()).then(|| {
            if self.scenario.treatment_rate > self.scenario.control_rate {
                self.share(self.treatment_wins)
            } else {
                self.share(self.control_wins)
            }
        })
    }

    /// Share of runs that picked the truly worse arm (`None` for A/A).
    pub fn wrong_winner_rate(&self) -> Option<f64> {
        (!self.scenario.is_null()).then(|| {
            if self.scenario.treatment_rate > self.scenario.control_rate {
                self.share(self.control_wins)
            } else {
                self.share(self.treatment_wins)
            }
        })
    }

    /// Share of runs without a decision after the last look.
    pub fn no_decision_rate(&self) -> f64 {
        self.share(self.runs - self.control_wins - self.treatment_wins)
    }

    /// Median look of the decisions (`None` when there were none).
    pub fn median_decision_look(&self) -> Option<f64> {
        let mut looks = self.decision_looks.clone();
        looks.sort_unstable();
        let n = looks.len();
        match n {
            0 => None,
            _ if n % 2 == 1 => Some(f64::from(looks[n / 2])),
            _ => Some(0.5 * (f64::from(looks[n / 2 - 1]) + f64::from(looks[n / 2]))),
        }
    }
}

/// Cumulative conversions per arm after each look of one simulated experiment.
fn simulate_path(
    rng: &mut ChaCha8Rng,
    scenario: &Scenario,
    config: &Config,
) -> Result<Vec<[u64; 2]>, PolicyError> {
    let arm = |p: f64| {
        Bernoulli::new(p).map_err(|_| PolicyError::InvalidPolicy("rate must be in [0, 1]"))
    };
    let dists = [arm(scenario.control_rate)?, arm(scenario.treatment_rate)?];
    let mut totals = [0_u64; 2];
    let mut path = Vec::with_capacity(config.looks as usize);
    for _ in 0..config.looks {
        for _ in 0..config.subjects_per_look {
            // Alternate arrivals: one control subject, then one treatment subject.
            for (total, dist) in totals.iter_mut().zip(&dists) {
                *total += u64::from(dist.sample(rng));
            }
        }
        path.push(totals);
    }
    Ok(path)
}

/// First look (1-based) at which `policy` decides on `path`, and the winning arm index.
fn first_decision(
    policy: &WinnerPolicy,
    path: &[[u64; 2]],
    subjects_per_look: u64,
) -> Result<Option<(u32, usize)>, PolicyError> {
    let mut guard = GuardState::default();
    for (look, conversions) in (1_u32..).zip(path) {
        let subjects = u64::from(look) * subjects_per_look;
        let arms = [
            ArmFigures::binomial("control", 0.5, subjects, conversions[0]),
            ArmFigures::binomial("treatment", 0.5, subjects, conversions[1]),
        ];
        // The same rules and guard-state handling as `evaluate`, minus the display-only
        // credible intervals.
        let evaluation = evaluate_decision_only(&EvaluationInput {
            policy,
            metric: &Metric::new("conversion", MetricKind::Binomial, Objective::Maximize),
            objective: Objective::Maximize,
            arms: &arms,
            control: 0,
            // One hour per look; pick_after is 0 in the default policy anyway.
            elapsed: time::Duration::hours(i64::from(look)),
            guard: &guard,
            guardrails: &[],
        })?;
        if let Some(winner) = evaluation.verdict.winner() {
            let index = usize::from(winner == "treatment");
            return Ok(Some((look, index)));
        }
        guard = evaluation.guard_state;
    }
    Ok(None)
}

/// Run every policy on every scenario; one [`Tally`] per (scenario, policy), scenarios
/// outermost.
pub fn run(
    config: &Config,
    scenarios: &[Scenario],
    policies: &[PolicyCase],
) -> Result<Vec<Tally>, PolicyError> {
    let mut tallies = Vec::with_capacity(scenarios.len() * policies.len());
    for (stream, scenario) in (0_u64..).zip(scenarios) {
        let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
        rng.set_stream(stream);
        let mut mine: Vec<Tally> = policies
            .iter()
            .map(|p| Tally {
                scenario: scenario.clone(),
                policy: p.name.clone(),
                runs: config.runs,
                control_wins: 0,
                treatment_wins: 0,
                decision_looks: Vec::new(),
            })
            .collect();
        for _ in 0..config.runs {
            let path = simulate_path(&mut rng, scenario, config)?;
            for (case, tally) in policies.iter().zip(&mut mine) {
                if let Some((look, winner)) =
                    first_decision(&case.policy, &path, config.subjects_per_look)?
                {
                    if winner == 0 {
                        tally.control_wins += 1;
                    } else {
                        tally.treatment_wins += 1;
                    }
                    tally.decision_looks.push(look);
                }
            }
        }
        tallies.extend(mine);
    }
    Ok(tallies)
}

fn pct(x: Option<f64>) -> String {
    x.map_or_else(|| "—".to_owned(), |v| format!("{:.1}%", 100.0 * v))
}

/// The results as a markdown table (with a one-line description of the set-up).
pub fn markdown_table(config: &Config, tallies: &[Tally]) -> String {
    let mut out = format!(
        "{} runs per scenario, seed {}; two arms, subjects alternate between arms; \
         evaluated every {} subjects per arm up to {} ({} looks), stopping at the first \
         decision; default policy (min_assignments 100, min_conversions 10, threshold 0.95, \
         max loss 0.0025, α 0.05, τ² {}).\n\n",
        config.runs,
        config.seed,
        config.subjects_per_look,
        u64::from(config.looks) * config.subjects_per_look,
        config.looks,
        verdict_stats::msprt::DEFAULT_TAU_SQUARED,
    );
    out.push_str(
        "| scenario | policy | false winner | right winner | wrong winner | no decision | \
         median look of decision (subjects/arm) |\n",
    );
    out.push_str("|---|---|---:|---:|---:|---:|---:|\n");
    for t in tallies {
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
    out
}

/// One target of the issue and whether it was met.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TargetCheck {
    pub description: String,
    pub value: f64,
    pub met: bool,
}

/// The targets for the guarded policies: A/A false winners ≤ 5%; for a true
/// difference of at least 2 points, right winner ≥ 95% and wrong winner ≤ 1%.
pub fn check_targets(tallies: &[Tally]) -> Vec<TargetCheck> {
    let mut checks = Vec::new();
    for t in tallies.iter().filter(|t| t.policy.ends_with("+ guard")) {
        let name = format!("{} / {}", t.scenario.name, t.policy);
        if let Some(v) = t.false_winner_rate() {
            checks.push(TargetCheck {
                description: format!("{name}: false winners ≤ 5%"),
                value: v,
                met: v <= 0.05,
            });
        } else if (t.scenario.treatment_rate - t.scenario.control_rate).abs() >= 0.02 - 1e-12 {
            let right = t.right_winner_rate().unwrap_or(0.0);
            let wrong = t.wrong_winner_rate().unwrap_or(1.0);
            checks.push(TargetCheck {
                description: format!("{name}: right winner ≥ 95%"),
                value: right,
                met: right >= 0.95,
            });
            checks.push(TargetCheck {
                description: format!("{name}: wrong winner ≤ 1%"),
                value: wrong,
                met: wrong <= 0.01,
            });
        }
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
