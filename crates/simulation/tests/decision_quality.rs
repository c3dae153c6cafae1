//! The decision-quality simulation at a small, fixed-seed size.
//!
//! The margins are wide enough that the assertions would hold for almost any seed (so a change
//! of seed or of the RNG's stream cannot make them fail by luck) and narrow enough that a broken
//! policy cannot pass: e.g. with 200 runs the guarded A/A false-winner rate is ~1.5% (binomial
//! sd ≈ 0.9 point) against a 5% ceiling, while the bare Bayesian rule's ~48% must show up as at
//! least 30% (sd ≈ 3.5 points) — the simulation demonstrably catches false winners.

use verdict_domain::{StatMethod, WinnerPolicy};
use verdict_simulation::{
    self as simulate, BEGIN_MARKER, Config, END_MARKER, PolicyCase, Scenario, Tally,
};

const RUNS: u32 = 200;

fn policies() -> Vec<PolicyCase> {
    // The two guarded defaults and the bare Bayesian rule (the control of the experiment).
    simulate::standard_policies()
        .into_iter()
        .filter(|p| p.policy.peeking_guard || p.policy.stat_method == StatMethod::BayesianBeta)
        .collect()
}

fn find<'a>(tallies: &'a [Tally], scenario: &Scenario, policy: &str) -> &'a Tally {
    tallies
        .iter()
        .find(|t| t.scenario == *scenario && t.policy == policy)
        .expect("tally present")
}

#[test]
fn guarded_policies_meet_the_targets_and_the_bare_rule_does_not() {
    let config = Config::new(RUNS, 1);
    let scenarios = simulate::standard_scenarios();
    let tallies = simulate::run(&config, &scenarios, &policies()).unwrap();
    let (aa, big, small) = (&scenarios[0], &scenarios[1], &scenarios[2]);

    for policy in ["simple_rate + guard", "bayesian_beta + guard"] {
        let t = find(&tallies, aa, policy);
        assert_eq!(t.runs, RUNS);
        assert!(t.false_winner_rate().unwrap() <= 0.05, "{policy}: {t:?}");

        let t = find(&tallies, big, policy);
        assert!(t.right_winner_rate().unwrap() >= 0.90, "{policy}: {t:?}");
        assert!(t.wrong_winner_rate().unwrap() <= 0.02, "{policy}: {t:?}");
        // 10 vs 12 is found within the 40 looks, and not at the first look by chance.
        let median = t.median_decision_look().unwrap();
        assert!(
            (3.0..=30.0).contains(&median),
            "{policy}: median look {median}"
        );

        // 10 vs 10.5 is underpowered at 20,000 per arm: mostly no decision, never wrong often.
        let t = find(&tallies, small, policy);
        assert!(t.no_decision_rate() >= 0.5, "{policy}: {t:?}");
        assert!(t.wrong_winner_rate().unwrap() <= 0.02, "{policy}: {t:?}");
    }

    let bare = find(&tallies, aa, "bayesian_beta, bare");
    let false_winners = bare.false_winner_rate().unwrap();
    assert!(
        (0.30..=0.70).contains(&false_winners),
        "the bare rule's false-winner rate under peeking (SPEC: ~48%): {false_winners}"
    );
}

#[test]
fn the_same_seed_gives_the_same_table_and_another_seed_a_different_one() {
    let scenarios = [Scenario::new(0.10, 0.11)];
    let policies = [PolicyCase {
        name: "bare".into(),
        policy: WinnerPolicy {
            peeking_guard: false,
            ..WinnerPolicy::default()
        },
    }];
    let small = |seed| Config {
        looks: 10,
        ..Config::new(30, seed)
    };
    let a = simulate::run(&small(7), &scenarios, &policies).unwrap();
    let b = simulate::run(&small(7), &scenarios, &policies).unwrap();
    let c = simulate::run(&small(8), &scenarios, &policies).unwrap();
    assert_eq!(a, b);
    assert_ne!(a[0].decision_looks, c[0].decision_looks);
    assert_eq!(
        simulate::markdown_table(&small(7), &a),
        simulate::markdown_table(&small(7), &b)
    );
}

#[test]
fn the_table_has_one_row_per_scenario_and_policy() {
    let config = Config {
        looks: 2,
        ..Config::new(3, 1)
    };
    let tallies = simulate::run(
        &config,
        &simulate::standard_scenarios(),
        &simulate::standard_policies(),
    )
    .unwrap();
    let table = simulate::markdown_table(&config, &tallies);
    let rows = table.lines().filter(|l| l.starts_with("| ")).count();
    assert_eq!(rows, 1 + 3 * 4, "{table}");
    assert!(table.contains("| A/A 10% vs 10% | bayesian_beta + guard |"));
    assert!(table.contains("| 10% vs 10.5% |"));
}

#[test]
fn write_replaces_only_the_marked_section_or_appends_one() {
    let doc = format!("# Title\n\nbefore\n{BEGIN_MARKER}\nold table\n{END_MARKER}\nafter\n");
    let out = simulate::replace_section(&doc, "new table\n");
    assert_eq!(
        out,
        format!("# Title\n\nbefore\n{BEGIN_MARKER}\nnew table\n{END_MARKER}\nafter\n")
    );
    // Idempotent.
    assert_eq!(simulate::replace_section(&out, "new table\n"), out);

    let appended = simulate::replace_section("# Title\nbody", "table");
    assert_eq!(
        appended,
        format!("# Title\nbody\n\n{BEGIN_MARKER}\ntable\n{END_MARKER}\n")
    );
    assert_eq!(
        simulate::replace_section("", "table"),
        format!("{BEGIN_MARKER}\ntable\n{END_MARKER}\n")
    );
}
