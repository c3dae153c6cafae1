//! Conformance against `testdata/stats_vectors.json` (exact values from mpmath/scipy).
//!
//! Every case and every expected field is checked; the `gbstats` blocks are GrowthBook's
//! approximations and deliberately ignored. Tolerances follow the file's
//! `meta.suggested_tolerances`, tightened where we can (probabilities: 1e-9 absolute up to
//! n = 1e6, 1e-7 beyond).

use serde_json::Value;
use verdict_stats::{
    BetaPosterior, SummaryStats, equal_weights, expected_loss, pairwise_expected_loss,
    prob_b_beats_a, prob_best, srm_check, welch_t_test,
};

const VECTORS: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../testdata/stats_vectors.json"
));

fn vectors() -> Value {
    serde_json::from_str(VECTORS).expect("stats_vectors.json parses")
}

fn cases(kind: &str) -> Vec<Value> {
    let v = vectors();
    let all = v["cases"].as_array().expect("cases array").clone();
    let picked: Vec<Value> = all.into_iter().filter(|c| c["kind"] == kind).collect();
    assert!(!picked.is_empty(), "no {kind} cases in the vector file");
    picked
}

fn num(v: &Value) -> f64 {
    v.as_f64()
        .unwrap_or_else(|| panic!("expected a number, got {v}"))
}

fn int(v: &Value) -> u64 {
    v.as_u64()
        .unwrap_or_else(|| panic!("expected an unsigned integer, got {v}"))
}

/// Collects every mismatch (so one run reports all of them) and the worst error per field.
#[derive(Debug, Default)]
struct Checker {
    failures: Vec<String>,
    checks: usize,
    worst: Vec<(String, f64)>,
}

impl Checker {
    fn record_worst(&mut self, field: &str, err: f64) {
        match self.worst.iter_mut().find(|(f, _)| f == field) {
            Some((_, w)) => *w = w.max(err),
            None => self.worst.push((field.to_owned(), err)),
        }
    }

    /// `|got − want| ≤ abs` .
    fn abs(&mut self, case: &str, field: &str, got: f64, want: f64, abs: f64) {
        self.checks += 1;
        let err = (got - want).abs();
        self.record_worst(field, err);
        if !within(err, abs) {
            self.failures.push(format!(
                "{case} {field}: got {got:e}, want {want:e} (|err| {err:e} > {abs:e})"
            ));
        }
    }

    /// `|got − want| ≤ max(abs, rel·|want|)`.
    fn rel(&mut self, case: &str, field: &str, got: f64, want: f64, rel: f64, abs: f64) {
        self.checks += 1;
        let err = (got - want).abs();
        let rel_err = if want != 0.0 { err / want.abs() } else { err };
        self.record_worst(field, rel_err);
        if !within(err, abs.max(rel * want.abs())) {
            self.failures.push(format!(
                "{case} {field}: got {got:e}, want {want:e} (rel err {rel_err:e} > {rel:e})"
            ));
        }
    }

    fn eq<T: PartialEq + std::fmt::Debug>(&mut self, case: &str, field: &str, got: T, want: T) {
        self.checks += 1;
        if got != want {
            self.failures
                .push(format!("{case} {field}: got {got:?}, want {want:?}"));
        }
    }

    fn finish(self, min_checks: usize) {
        for (field, worst) in &self.worst {
            eprintln!("worst error  {field:<40} {worst:e}");
        }
        assert!(
            self.checks >= min_checks,
            "only {} checks ran (expected at least {min_checks})",
            self.checks
        );
        assert!(
            self.failures.is_empty(),
            "{} mismatches:\n{}",
            self.failures.len(),
            self.failures.join("\n")
        );
    }
}

/// `err ≤ tol`, false for NaN.
fn within(err: f64, tol: f64) -> bool {
    err.partial_cmp(&tol).is_some_and(|o| o.is_le())
}

struct Binomial {
    id: String,
    arms: Vec<(u64, u64)>,
    expected: Value,
    /// Absolute tolerance for probabilities at this case's largest n.
    prob_tol: f64,
}

fn binomial_cases() -> Vec<Binomial> {
    cases("binomial")
        .into_iter()
        .map(|c| {
            let arms: Vec<(u64, u64)> = c["inputs"]["variants"]
                .as_array()
                .expect("variants")
                .iter()
                .map(|v| (int(&v["conversions"]), int(&v["n"])))
                .collect();
            let max_n = arms.iter().map(|a| a.1).max().expect("arms");
            Binomial {
                id: c["id"].as_str().expect("id").to_owned(),
                prob_tol: if max_n <= 1_000_000 { 1e-9 } else { 1e-7 },
                arms,
                expected: c["expected"].clone(),
            }
        })
        .collect()
}

#[test]
fn vector_file_declares_exactly_the_cases_it_contains() {
    let v = vectors();
    let cases = v["cases"].as_array().expect("cases");
    assert_eq!(cases.len() as u64, int(&v["meta"]["n_cases"]));
    for c in cases {
        let kind = c["kind"].as_str().expect("kind");
        assert!(kind == "binomial" || kind == "mean", "unknown kind {kind}");
    }
}

#[test]
fn posterior_means_and_credible_intervals_match_every_binomial_vector() {
    let mut ck = Checker::default();
    for case in binomial_cases() {
        let e = &case.expected;
        for (i, &(c, n)) in case.arms.iter().enumerate() {
            let want = &e["posterior"][i];
            let post = BetaPosterior::from_counts(c, n).expect("valid counts");
            ck.eq(&case.id, "posterior.alpha", post.alpha, num(&want["alpha"]));
            ck.eq(&case.id, "posterior.beta", post.beta, num(&want["beta"]));
            ck.rel(
                &case.id,
                "posterior.mean",
                post.mean(),
                num(&want["mean"]),
                1e-14,
                0.0,
            );
            let rate = if n == 0 { 0.0 } else { c as f64 / n as f64 };
            ck.rel(&case.id, "rates", rate, num(&e["rates"][i]), 1e-15, 0.0);
            let (lo, hi) = post.credible_interval(0.95).expect("level");
            ck.abs(&case.id, "ci95.lower", lo, num(&want["ci95"][0]), 1e-10);
            ck.abs(&case.id, "ci95.upper", hi, num(&want["ci95"][1]), 1e-10);
        }
    }
    ck.finish(16 * 2 * 6);
}

#[test]
fn chance_to_beat_control_matches_every_binomial_vector_in_both_directions() {
    let mut ck = Checker::default();
    for case in binomial_cases() {
        let e = &case.expected;
        let control = case.arms[0];
        assert!(
            e["chance_to_beat_control"][0].is_null(),
            "{}: control entry must be null",
            case.id
        );
        for (i, &arm) in case.arms.iter().enumerate().skip(1) {
            let beats = prob_b_beats_a(control, arm).expect("valid");
            let loses = prob_b_beats_a(arm, control).expect("valid");
            let want_beats = num(&e["chance_to_beat_control"][i]);
            let want_loses = num(&e["prob_control_beats"][i]);
            ck.abs(
                &case.id,
                "chance_to_beat_control",
                beats,
                want_beats,
                case.prob_tol,
            );
            ck.abs(
                &case.id,
                "prob_control_beats",
                loses,
                want_loses,
                case.prob_tol,
            );
            // Small tail probabilities are computed directly, so they must also be relatively
            // accurate, not just absolutely.
            ck.rel(
                &case.id,
                "prob_control_beats (relative)",
                loses,
                want_loses,
                1e-7,
                1e-300,
            );
        }
    }
    ck.finish(16 * 3);
}

#[test]
fn pairwise_losses_against_control_match_every_binomial_vector() {
    let mut ck = Checker::default();
    for case in binomial_cases() {
        let e = &case.expected;
        for (i, &arm) in case.arms.iter().enumerate().skip(1) {
            let got = pairwise_expected_loss(case.arms[0], arm).expect("valid");
            let want = &e["pairwise_loss_vs_control"][i];
            // loss_choose_control = E[(p_i − p_0)⁺] = loss of choosing A (the control).
            ck.rel(
                &case.id,
                "loss_choose_control",
                got.loss_choose_a,
                num(&want["loss_choose_control"]),
                1e-6,
                1e-12,
            );
            ck.rel(
                &case.id,
                "loss_choose_variant",
                got.loss_choose_b,
                num(&want["loss_choose_variant"]),
                1e-6,
                1e-12,
            );
        }
    }
    ck.finish(16 * 2);
}

#[test]
fn prob_best_matches_every_binomial_vector() {
    let mut ck = Checker::default();
    for case in binomial_cases() {
        let got = prob_best(&case.arms).expect("valid");
        let want = case.expected["p_best"].as_array().expect("p_best");
        ck.eq(&case.id, "p_best.len", got.len(), want.len());
        for (g, w) in got.iter().zip(want) {
            ck.abs(
                &case.id,
                &format!("p_best (k={})", case.arms.len()),
                *g,
                num(w),
                case.prob_tol,
            );
        }
    }
    ck.finish(16 * 3);
}

#[test]
fn expected_loss_matches_every_binomial_vector() {
    let mut ck = Checker::default();
    for case in binomial_cases() {
        let got = expected_loss(&case.arms).expect("valid");
        let want = case.expected["expected_loss"]
            .as_array()
            .expect("expected_loss");
        ck.eq(&case.id, "expected_loss.len", got.len(), want.len());
        for (g, w) in got.iter().zip(want) {
            let field = format!("expected_loss (k={})", case.arms.len());
            ck.rel(&case.id, &field, *g, num(w), 1e-6, 1e-12);
        }
    }
    ck.finish(16 * 3);
}

#[test]
fn srm_matches_every_vector() {
    let mut ck = Checker::default();
    let v = vectors();
    for c in v["cases"].as_array().expect("cases") {
        let id = c["id"].as_str().expect("id");
        let observed: Vec<u64> = c["inputs"]["variants"]
            .as_array()
            .expect("variants")
            .iter()
            .map(|v| int(&v["n"]))
            .collect();
        let weights: Vec<f64> = match &c["inputs"]["srm_weights"] {
            Value::Null => equal_weights(observed.len()),
            w => w.as_array().expect("weights").iter().map(num).collect(),
        };
        let want = &c["expected"]["srm"];
        for (g, w) in weights
            .iter()
            .zip(want["weights"].as_array().expect("weights"))
        {
            ck.rel(id, "srm.weights", *g, num(w), 1e-15, 0.0);
        }
        let got = srm_check(&observed, &weights).expect("valid srm input");
        ck.rel(
            id,
            "srm.chi2",
            got.statistic,
            num(&want["chi2"]),
            1e-9,
            1e-12,
        );
        ck.eq(id, "srm.df", u64::from(got.df), int(&want["df"]));
        ck.rel(
            id,
            "srm.threshold",
            got.threshold,
            num(&want["threshold"]),
            0.0,
            0.0,
        );
        ck.eq(
            id,
            "srm.srm_detected",
            got.flagged,
            want["srm_detected"].as_bool().expect("bool"),
        );
        let want_p = num(&want["p_value"]);
        if want_p > 0.0 {
            ck.rel(id, "srm.p_value", got.p_value, want_p, 1e-9, 0.0);
        }
        ck.rel(
            id,
            "srm.log10_p_value",
            got.log10_p_value,
            num(&want["log10_p_value"]),
            1e-9,
            1e-12,
        );
        // Expected counts are listed either for every arm (0 for weight-0 arms) or only for
        // the arms with positive weight.
        let want_counts: Vec<f64> = want["expected_counts"]
            .as_array()
            .expect("expected_counts")
            .iter()
            .map(num)
            .collect();
        let got_counts: Vec<f64> = if want_counts.len() == observed.len() {
            got.expected_counts.clone()
        } else {
            got.expected_counts
                .iter()
                .zip(&weights)
                .filter(|(_, w)| **w > 0.0)
                .map(|(c, _)| *c)
                .collect()
        };
        ck.eq(
            id,
            "srm.expected_counts.len",
            got_counts.len(),
            want_counts.len(),
        );
        for (g, w) in got_counts.iter().zip(&want_counts) {
            ck.rel(id, "srm.expected_counts", *g, *w, 1e-12, 1e-12);
        }
    }
    ck.finish(20 * 8);
}

#[test]
fn welch_tests_and_variances_match_every_mean_vector() {
    let mut ck = Checker::default();
    for c in cases("mean") {
        let id = c["id"].as_str().expect("id");
        let alpha = num(&c["inputs"]["alpha"]);
        let arms: Vec<SummaryStats> = c["inputs"]["variants"]
            .as_array()
            .expect("variants")
            .iter()
            .map(|v| {
                SummaryStats::from_sums(int(&v["n"]), num(&v["sum"]), num(&v["sum_squares"]))
                    .expect("valid sums")
            })
            .collect();
        let e = &c["expected"];
        for (i, s) in arms.iter().enumerate() {
            let want = &e["per_variant"][i];
            let var = s.variance().expect("n >= 2");
            ck.rel(
                id,
                "per_variant.mean",
                s.mean(),
                num(&want["mean"]),
                1e-14,
                0.0,
            );
            ck.rel(
                id,
                "per_variant.variance",
                var,
                num(&want["variance"]),
                1e-12,
                0.0,
            );
            ck.rel(
                id,
                "per_variant.sd",
                var.sqrt(),
                num(&want["sd"]),
                1e-12,
                0.0,
            );
        }
        assert!(
            e["welch_vs_control"][0].is_null(),
            "{id}: control entry must be null"
        );
        for (i, arm) in arms.iter().enumerate().skip(1) {
            let want = &e["welch_vs_control"][i];
            let got = welch_t_test(&arms[0], arm, alpha).expect("valid welch input");
            ck.rel(
                id,
                "welch.mean_a",
                got.mean_a,
                num(&want["mean_a"]),
                1e-14,
                0.0,
            );
            ck.rel(
                id,
                "welch.mean_b",
                got.mean_b,
                num(&want["mean_b"]),
                1e-14,
                0.0,
            );
            ck.rel(
                id,
                "welch.var_a",
                got.var_a,
                num(&want["var_a"]),
                1e-12,
                0.0,
            );
            ck.rel(
                id,
                "welch.var_b",
                got.var_b,
                num(&want["var_b"]),
                1e-12,
                0.0,
            );
            ck.rel(id, "welch.diff", got.diff, num(&want["diff"]), 1e-12, 1e-12);
            ck.rel(id, "welch.t", got.t, num(&want["t"]), 1e-9, 1e-12);
            ck.rel(id, "welch.df", got.df, num(&want["df"]), 1e-9, 0.0);
            ck.rel(
                id,
                "welch.p_value",
                got.p_value,
                num(&want["p_value"]),
                1e-7,
                0.0,
            );
            if let Some(ci) = want["ci95_diff"].as_array() {
                let width = num(&ci[1]) - num(&ci[0]);
                ck.abs(
                    id,
                    "welch.ci95_diff.lower",
                    got.ci.0,
                    num(&ci[0]),
                    1e-9 * width,
                );
                ck.abs(
                    id,
                    "welch.ci95_diff.upper",
                    got.ci.1,
                    num(&ci[1]),
                    1e-9 * width,
                );
            }
        }
    }
    ck.finish(4 * 2 * 3 + 5 * 10);
}
