//! Conformance of the normal-posterior statistics against `testdata/normal_vectors.json`:
//! 32-digit mpmath values computed with formulas other than the ones the crate uses (see
//! `testdata/generate_normal_vectors.py`).
//!
//! Tolerances, stated per check below: P(best) 1e-13 absolute (and 1e-12 relative for the
//! two-arm closed form, whose tails must keep their precision); expected losses 1e-13 of the
//! largest standard error absolute (1e-12 relative for two arms); chance to beat control and
//! pairwise losses 1e-12 relative; always-valid intervals 1e-12 of their half-width.

use serde_json::Value;
use verdict_stats::{
    Objective, always_valid_interval, mixture_likelihood_ratio_normal,
    pairwise_expected_loss_normal, prob_beats_control_normal, prob_best_normal, summarize_normal,
};

const VECTORS: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/testdata/normal_vectors.json"
));

fn vectors() -> Value {
    serde_json::from_str(VECTORS).expect("normal_vectors.json parses")
}

fn num(v: &Value) -> f64 {
    v.as_f64()
        .unwrap_or_else(|| panic!("expected a number, got {v}"))
}

fn arm(v: &Value) -> (f64, f64) {
    (num(&v["mean"]), num(&v["std_error"]))
}

/// Collects every mismatch so one run reports all of them, and the worst error per field.
#[derive(Debug, Default)]
struct Checker {
    failures: Vec<String>,
    checks: usize,
    worst: Vec<(String, f64)>,
}

impl Checker {
    /// `|got − want| ≤ max(abs, rel·|want|)`; the recorded error is relative when
    /// `rel > 0`, absolute otherwise.
    fn check(&mut self, case: &str, field: &str, got: f64, want: f64, rel: f64, abs: f64) {
        self.checks += 1;
        let err = (got - want).abs();
        let shown = if rel > 0.0 && want != 0.0 {
            err / want.abs()
        } else {
            err
        };
        match self.worst.iter_mut().find(|(f, _)| f == field) {
            Some((_, w)) => *w = w.max(shown),
            None => self.worst.push((field.to_owned(), shown)),
        }
        let tol = abs.max(rel * want.abs());
        if !err.partial_cmp(&tol).is_some_and(|o| o.is_le()) {
            self.failures.push(format!(
                "{case} {field}: got {got:e}, want {want:e} (|err| {err:e} > {tol:e})"
            ));
        }
    }

    fn finish(self, min_checks: usize) {
        for (field, worst) in &self.worst {
            eprintln!("worst error  {field:<32} {worst:e}");
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

struct Case {
    id: String,
    arms: Vec<(f64, f64)>,
    expected: Value,
}

fn cases() -> Vec<Case> {
    let v = vectors();
    v["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .map(|c| Case {
            id: c["id"].as_str().expect("id").to_owned(),
            arms: c["arms"]
                .as_array()
                .expect("arms")
                .iter()
                .map(arm)
                .collect(),
            expected: c["expected"].clone(),
        })
        .collect()
}

#[test]
fn the_vector_file_covers_two_to_eight_arms() {
    let ks: Vec<usize> = cases().iter().map(|c| c.arms.len()).collect();
    for k in 2..=8 {
        assert!(ks.contains(&k), "no case with {k} arms");
    }
}

#[test]
fn prob_best_matches_every_vector_and_sums_to_one() {
    let mut ck = Checker::default();
    for case in cases() {
        let got = prob_best_normal(&case.arms).expect("valid arms");
        let want = case.expected["prob_best"].as_array().expect("prob_best");
        assert_eq!(got.len(), want.len(), "{}", case.id);
        let field = format!("prob_best k={}", case.arms.len());
        for (g, w) in got.iter().zip(want) {
            if case.arms.len() == 2 {
                // Closed form: relative precision down to the far tail.
                ck.check(&case.id, &field, *g, num(w), 1e-12, 1e-300);
            } else {
                ck.check(&case.id, &field, *g, num(w), 0.0, 1e-13);
            }
        }
        let total: f64 = got.iter().sum();
        ck.check(&case.id, "prob_best sum", total, 1.0, 0.0, 1e-13);
    }
    ck.finish(60);
}

#[test]
fn expected_loss_matches_every_vector() {
    let mut ck = Checker::default();
    for case in cases() {
        let scale = case.arms.iter().map(|a| a.1).fold(0.0, f64::max);
        let got = summarize_normal(&case.arms, Objective::Maximize).expect("valid arms");
        let want = case.expected["expected_loss"]
            .as_array()
            .expect("expected_loss");
        assert_eq!(got.expected_loss.len(), want.len(), "{}", case.id);
        let field = format!("expected_loss k={}", case.arms.len());
        for (g, w) in got.expected_loss.iter().zip(want) {
            if case.arms.len() == 2 {
                ck.check(&case.id, &field, *g, num(w), 1e-12, 1e-300);
            } else {
                // Absolute, in units of the largest standard error (the losses' scale).
                ck.check(&case.id, &field, *g, num(w), 0.0, 1e-13 * scale);
            }
        }
    }
    ck.finish(60);
}

#[test]
fn chance_to_beat_control_and_pairwise_losses_match_every_vector() {
    let mut ck = Checker::default();
    for case in cases() {
        let e = &case.expected;
        let control = case.arms[0];
        for (i, &arm) in case.arms.iter().enumerate().skip(1) {
            let beats = prob_beats_control_normal(control, arm).expect("valid");
            let loses = prob_beats_control_normal(arm, control).expect("valid");
            ck.check(
                &case.id,
                "chance_to_beat_control",
                beats,
                num(&e["chance_to_beat_control"][i]),
                1e-12,
                1e-300,
            );
            ck.check(
                &case.id,
                "prob_control_beats",
                loses,
                num(&e["prob_control_beats"][i]),
                1e-12,
                1e-300,
            );
            let loss = pairwise_expected_loss_normal(control, arm).expect("valid");
            ck.check(
                &case.id,
                "loss_choose_control",
                loss.loss_choose_a,
                num(&e["loss_choose_control"][i]),
                1e-12,
                1e-300,
            );
            ck.check(
                &case.id,
                "loss_choose_arm",
                loss.loss_choose_b,
                num(&e["loss_choose_arm"][i]),
                1e-12,
                1e-300,
            );
        }
    }
    ck.finish(4 * 60);
}

#[test]
fn two_arm_figures_keep_relative_precision_from_the_centre_to_the_far_tail() {
    // d/s from −37 to 12: the loss of the better arm falls to ~1e-301 and the probability of
    // the worse one to ~6e-300, where a 1 − p or t Φ(t) + φ(t) in float64 is 0 or noise.
    let mut ck = Checker::default();
    let v = vectors();
    for p in v["pairs"].as_array().expect("pairs") {
        let (control, arm) = (arm(&p["control"]), arm(&p["arm"]));
        let id = format!("d/s={}", arm.0 - control.0);
        let beats = prob_beats_control_normal(control, arm).expect("valid");
        let loses = prob_beats_control_normal(arm, control).expect("valid");
        let loss = pairwise_expected_loss_normal(control, arm).expect("valid");
        let want = |k: &str| num(&p[k]);
        ck.check(
            &id,
            "chance_to_beat_control",
            beats,
            want("chance_to_beat_control"),
            1e-12,
            0.0,
        );
        ck.check(
            &id,
            "prob_control_beats",
            loses,
            want("prob_control_beats"),
            1e-12,
            0.0,
        );
        ck.check(
            &id,
            "loss_choose_control",
            loss.loss_choose_a,
            want("loss_choose_control"),
            1e-12,
            0.0,
        );
        ck.check(
            &id,
            "loss_choose_arm",
            loss.loss_choose_b,
            want("loss_choose_arm"),
            1e-12,
            0.0,
        );
    }
    ck.finish(4 * 10);
}

#[test]
fn always_valid_intervals_and_mixture_ratios_match_every_vector() {
    let mut ck = Checker::default();
    let v = vectors();
    for c in v["intervals"].as_array().expect("intervals") {
        let (theta, var, tau2, alpha) = (
            num(&c["theta_hat"]),
            num(&c["variance"]),
            num(&c["tau_squared"]),
            num(&c["alpha"]),
        );
        let id = format!("theta={theta} V={var}");
        let (lo, hi) = always_valid_interval(theta, var, tau2, alpha).expect("valid");
        let (want_lo, want_hi) = (num(&c["interval"][0]), num(&c["interval"][1]));
        let half = 0.5 * (want_hi - want_lo);
        ck.check(&id, "interval.lower", lo, want_lo, 0.0, 1e-12 * half);
        ck.check(&id, "interval.upper", hi, want_hi, 0.0, 1e-12 * half);
        let m = mixture_likelihood_ratio_normal(theta, var, tau2).expect("valid");
        ck.check(
            &id,
            "log_lambda",
            m.log_lambda,
            num(&c["log_lambda"]),
            1e-12,
            1e-15,
        );
    }
    ck.finish(3 * 6);
}
