//! Checks against references computed inside the test by independent, exact means: integer
//! and dyadic-rational arithmetic from the raw data, and the defining property of a quantity
//! rather than the crate's formula for it.

use verdict_stats::msprt::rejects_log;
use verdict_stats::{
    Objective, RatioStats, SummaryStats, always_valid_interval, mean_difference,
    mixture_likelihood_ratio, mixture_likelihood_ratio_normal, prob_beats_control_normal,
    prob_best_normal, summarize_normal, welch_t_test,
};

fn rel_err(got: f64, want: f64) -> f64 {
    (got - want).abs() / want.abs()
}

/// SplitMix64: a fixed, dependency-free stream of test data.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Per-subject `(events, value sum)` for `n` subjects.
fn subjects(seed: u64, n: usize, value: impl Fn(&mut SplitMix) -> i64) -> Vec<(i64, i64)> {
    let mut rng = SplitMix(seed);
    (0..n)
        .map(|_| {
            let events = rng.below(12) as i64; // includes subjects without events
            let y = (0..events).map(|_| value(&mut rng)).sum();
            (events, y)
        })
        .collect()
}

/// Delta-method `Var(R)` straight from the subjects, exactly:
/// `(1/n)(σ_y² − 2Rσ_xy + R²σ_x²)/x̄² = n Σ(y_i − R x_i)² / ((n − 1) (Σx)²)` since the
/// bracket is the sample variance of the residuals `y_i − R x_i` (whose mean is 0), and
/// `Σ(y_i − R x_i)² = Σ(Σx·y_i − Σy·x_i)² / (Σx)²` in integers.
fn direct_delta_variance(data: &[(i64, i64)]) -> (f64, f64) {
    let sx: i128 = data.iter().map(|d| i128::from(d.0)).sum();
    let sy: i128 = data.iter().map(|d| i128::from(d.1)).sum();
    let residuals: i128 = data
        .iter()
        .map(|&(x, y)| {
            let r = sx * i128::from(y) - sy * i128::from(x);
            r.checked_mul(r).expect("fits")
        })
        .fold(0i128, |acc, v| acc.checked_add(v).expect("fits"));
    let n = data.len() as f64;
    let sx = sx as f64;
    let ratio = sy as f64 / sx;
    (
        ratio,
        n * residuals as f64 / ((n - 1.0) * sx * sx * sx * sx),
    )
}

fn sums(data: &[(i64, i64)]) -> [f64; 5] {
    let mut s = [0i128; 5];
    for &(x, y) in data {
        let (x, y) = (i128::from(x), i128::from(y));
        s[0] += x;
        s[1] += y;
        s[2] += x * x;
        s[3] += y * y;
        s[4] += x * y;
    }
    // The premise of exact inputs: every sum is an integer a double holds exactly.
    assert!(s.iter().all(|v| v.abs() < 1 << 53), "{s:?}");
    s.map(|v| v as f64)
}

#[test]
fn delta_method_variance_matches_a_direct_computation_from_subject_values() {
    let cases: [(&str, Vec<(i64, i64)>); 3] = [
        // Latencies of 20..2000 ms per event.
        ("latency", subjects(7, 2000, |r| 20 + r.below(1981) as i64)),
        // Order values with a heavy tail.
        (
            "heavy tail",
            subjects(11, 1500, |r| {
                let u = r.below(1000) as i64;
                if u < 990 { 10 + u } else { 50_000 + 100 * u }
            }),
        ),
        // Nearly constant per-event values: the residuals are ~1e-8 of σ_y², which the
        // float64 combination σ_y² − 2Rσ_xy + R²σ_x² cannot resolve.
        (
            "proportional",
            subjects(13, 1000, |r| 100_000 + r.below(51) as i64),
        ),
    ];
    for (name, data) in &cases {
        let [sx, sy, sxx, syy, sxy] = sums(data);
        let n = data.len() as u64;
        let got = RatioStats::from_sums(n, sx, sy, sxx, syy, sxy).expect("valid sums");
        let (want_ratio, want_var) = direct_delta_variance(data);
        assert!(rel_err(got.ratio(), want_ratio) <= 1e-15, "{name}: ratio");
        assert!(
            rel_err(got.variance_of_ratio(), want_var) <= 1e-12,
            "{name}: Var(R) {} vs {want_var}",
            got.variance_of_ratio()
        );
        assert!(rel_err(got.std_error(), want_var.sqrt()) <= 1e-12);
        if *name == "proportional" {
            // The textbook float64 formula misses here: the check above can fail.
            let nf = n as f64;
            let r = sy / sx;
            let var = |s: f64, t: f64, st: f64| (st - s * t / nf) / (nf - 1.0);
            let naive = (var(sy, sy, syy) - 2.0 * r * var(sx, sy, sxy) + r * r * var(sx, sx, sxx))
                / nf
                / (sx / nf).powi(2);
            assert!(
                rel_err(naive, want_var) > 1e-9,
                "naive {naive} vs {want_var}"
            );
        }
    }
}

#[test]
fn subjects_without_events_change_the_ratio_variance_only_by_n_over_n_minus_one() {
    let data = subjects(17, 800, |r| 50 + r.below(500) as i64);
    let mut padded = data.clone();
    padded.extend(std::iter::repeat_n((0, 0), 400));
    let stats = |d: &[(i64, i64)]| {
        let [sx, sy, sxx, syy, sxy] = sums(d);
        RatioStats::from_sums(d.len() as u64, sx, sy, sxx, syy, sxy).expect("valid")
    };
    let (a, b) = (stats(&data), stats(&padded));
    assert_eq!(a.ratio(), b.ratio());
    let (n, m) = (800.0, 1200.0);
    let want = a.variance_of_ratio() * (m / (m - 1.0)) / (n / (n - 1.0));
    assert!(rel_err(b.variance_of_ratio(), want) <= 1e-12);
}

/// An exact dyadic rational `m · 2^e`.
#[derive(Debug, Clone, Copy)]
struct Dyadic {
    m: i128,
    e: i32,
}

impl Dyadic {
    /// The exact value of a finite double.
    fn of(x: f64) -> Self {
        assert!(x.is_finite());
        if x == 0.0 {
            return Self { m: 0, e: 0 };
        }
        let bits = x.to_bits();
        let sign = if bits >> 63 == 1 { -1 } else { 1 };
        let exp = ((bits >> 52) & 0x7ff) as i32;
        let frac = (bits & ((1 << 52) - 1)) as i128;
        let (mut m, mut e) = if exp == 0 {
            (frac, -1074)
        } else {
            (frac | (1 << 52), exp - 1075)
        };
        while m % 2 == 0 {
            m /= 2;
            e += 1;
        }
        Self { m: sign * m, e }
    }

    fn int(n: u64) -> Self {
        Self::of(n as f64)
    }

    fn mul(self, other: Self) -> Self {
        Self {
            m: self.m.checked_mul(other.m).expect("product fits in i128"),
            e: self.e + other.e,
        }
    }

    fn add(self, other: Self) -> Self {
        self.sub(Self {
            m: -other.m,
            e: other.e,
        })
    }

    fn sub(self, other: Self) -> Self {
        let e = self.e.min(other.e);
        let up = |d: Self| {
            d.m.checked_mul(1i128 << (d.e - e))
                .expect("aligned mantissa fits in i128")
        };
        Self {
            m: up(self) - up(other),
            e,
        }
    }

    /// Nearest double, give or take one rounding of the mantissa.
    fn to_f64(self) -> f64 {
        self.m as f64 * 2f64.powi(self.e)
    }
}

/// Arms as `(n, Σx, Σx²)`, the sums exact as doubles.
struct Arm {
    n: u64,
    sum: f64,
    sum_squares: f64,
}

impl Arm {
    fn from_values(values: &[f64]) -> Self {
        Self {
            n: values.len() as u64,
            sum: values.iter().sum(),
            sum_squares: values.iter().map(|v| v * v).sum(),
        }
    }

    fn stats(&self) -> SummaryStats {
        SummaryStats::from_sums(self.n, self.sum, self.sum_squares).expect("valid sums")
    }

    /// `n·Σx² − (Σx)² = n · M2`, exactly.
    fn n_m2(&self) -> Dyadic {
        Dyadic::int(self.n)
            .mul(Dyadic::of(self.sum_squares))
            .sub(Dyadic::of(self.sum).mul(Dyadic::of(self.sum)))
    }

    /// `var / n = M2 / (n (n − 1))`.
    fn se2(&self) -> f64 {
        let n = self.n as f64;
        self.n_m2().to_f64() / (n * n * (n - 1.0))
    }
}

#[test]
fn welch_difference_and_t_match_exact_rational_arithmetic() {
    // Means near 1e6 (and -1e9) that differ by ~1e-3 (1e-5 at n = 1e6): rounding each mean
    // to a double leaves ~1e-10 absolute error, 1e-7 relative to the difference or worse.
    // The spreads are wide enough for Σx² to hold the variance.
    let pairs = [
        (
            Arm::from_values(&[999_999.0, 1_000_000.0, 1_000_001.001]),
            Arm::from_values(&[999_999.0, 1_000_000.003, 1_000_001.0]),
        ),
        (
            Arm::from_values(&[999_999.5, 1_000_000.25, 1_000_000.25]),
            Arm::from_values(&[1_000_000.0, 1_000_000.25, 1_000_000.001, 999_999.75]),
        ),
        (
            Arm {
                n: 1_000_003,
                sum: 1_000_003_123_456.75,
                sum_squares: 1.000_006_246_914e18,
            },
            Arm {
                n: 999_997,
                sum: 999_997_123_459.5,
                sum_squares: 9.999_99e17,
            },
        ),
        (
            Arm::from_values(&[-1e9 - 4000.0, -1e9 + 3000.0, -1e9, -1e9 + 1000.0, -1e9]),
            Arm::from_values(&[-1e9 + 2000.001, -1e9 - 1000.0, -1e9 - 1000.0, -1e9]),
        ),
    ];
    let mut naive_fails = false;
    for (a, b) in &pairs {
        // diff = Σb/n_b − Σa/n_a = (Σb·n_a − Σa·n_b) / (n_a·n_b), exactly.
        let num = Dyadic::of(b.sum)
            .mul(Dyadic::int(a.n))
            .sub(Dyadic::of(a.sum).mul(Dyadic::int(b.n)));
        let want_diff = num.to_f64() / (a.n as f64 * b.n as f64);
        let want_t = want_diff / (a.se2() + b.se2()).sqrt();

        let (sa, sb) = (a.stats(), b.stats());
        let got = welch_t_test(&sa, &sb, 0.05).expect("valid");
        assert!(
            rel_err(got.diff, want_diff) <= 1e-12,
            "diff {} vs {want_diff}",
            got.diff
        );
        assert!(rel_err(got.t, want_t) <= 1e-9, "t {} vs {want_t}", got.t);
        assert!(rel_err(mean_difference(&sa, &sb), want_diff) <= 1e-12);
        let naive = b.sum / b.n as f64 - a.sum / a.n as f64;
        naive_fails |= rel_err(naive, want_diff) > 1e-9;
    }
    // The cases are hard enough that subtracting the rounded means would fail the check.
    assert!(naive_fails);
}

#[test]
fn welford_from_values_keeps_the_difference_of_large_close_means() {
    let a: Vec<f64> = (0..1000).map(|i| 1e9 + f64::from(i % 10) * 0.125).collect();
    let b: Vec<f64> = a.iter().map(|v| v + 0.001).collect();
    let got = mean_difference(
        &SummaryStats::from_values(a.iter().copied()),
        &SummaryStats::from_values(b.iter().copied()),
    );
    // b's values are the doubles nearest to a's + 0.001; the exact mean difference follows.
    let mut num = Dyadic { m: 0, e: 0 };
    for (x, y) in a.iter().zip(&b) {
        num = num.add(Dyadic::of(*y).sub(Dyadic::of(*x)));
    }
    let want = num.to_f64() / 1000.0;
    assert!(rel_err(got, want) <= 1e-9, "{got} vs {want}");
}

#[test]
fn always_valid_interval_ends_exactly_where_the_shifted_test_starts_rejecting() {
    for &(theta, var, tau2, alpha) in &[
        (0.012, 4e-5, 1e-4, 0.05),
        (-3.5, 2.25, 1.0, 0.05),
        (250.0, 900.0, 100.0, 0.01),
        (1e-6, 1e-14, 1e-10, 0.2),
    ] {
        let (lo, hi) = always_valid_interval(theta, var, tau2, alpha).expect("valid");
        // Λ(θ0) is the mixture ratio of the estimate θ̂ − θ0: at each end it equals 1/α.
        for end in [lo, hi] {
            let m = mixture_likelihood_ratio_normal(theta - end, var, tau2).expect("valid");
            let want = -alpha.ln();
            assert!(
                (m.log_lambda - want).abs() <= 1e-12 * want,
                "θ̂={theta}: ln Λ at {end} is {} (want {want})",
                m.log_lambda
            );
        }
        // Inside, no θ0 is rejected; just outside, it is.
        let width = hi - lo;
        for (theta0, rejected) in [
            (theta, false),
            (lo + 1e-6 * width, false),
            (hi - 1e-6 * width, false),
            (lo - 1e-6 * width, true),
            (hi + 1e-6 * width, true),
        ] {
            let m = mixture_likelihood_ratio_normal(theta - theta0, var, tau2).expect("valid");
            assert_eq!(rejects_log(m.log_lambda, alpha), rejected, "θ0 = {theta0}");
        }
    }
}

#[test]
fn the_rate_and_mean_forms_of_the_mixture_ratio_agree() {
    let m = mixture_likelihood_ratio((500, 10_000), (560, 10_000), 1e-4).expect("valid");
    let (pa, pb) = (0.05, 0.056);
    let v = pa * (1.0 - pa) / 1e4 + pb * (1.0 - pb) / 1e4;
    let n = mixture_likelihood_ratio_normal(pb - pa, v, 1e-4).expect("valid");
    assert!((m.log_lambda - n.log_lambda).abs() <= 1e-13 * n.log_lambda.abs());
    assert!(mixture_likelihood_ratio_normal(0.1, 0.0, 1e-4).is_err());
    assert!(always_valid_interval(0.1, 1e-4, 1e-4, 1.0).is_err());
}

#[test]
fn identical_normal_arms_have_exactly_one_in_k_chance_of_being_best() {
    for k in 2..=8 {
        for &(mean, se) in &[(0.0, 1.0), (1e9, 1e-3), (-42.5, 17.0), (3.0, 1e-12)] {
            let p = prob_best_normal(&vec![(mean, se); k]).expect("valid");
            for &x in &p {
                assert!(
                    (x - 1.0 / k as f64).abs() <= 1e-13,
                    "k={k} {mean},{se}: {p:?}"
                );
            }
        }
    }
}

#[test]
fn a_hopeless_extra_arm_leaves_the_two_arm_closed_form_unchanged() {
    // The k ≥ 3 quadrature against the k = 2 closed forms, with the extra arms 40 standard
    // errors below: nothing may change beyond the quadrature's error.
    let pairs = [
        ((10.0, 0.5), (10.8, 0.6)),
        ((0.0, 1e-6), (1e-6, 1.0)),
        ((1e6, 1e-3), (1e6 + 0.002, 1.5e-3)),
        ((5.0, 2.0), (5.0, 0.01)),
    ];
    for (a, b) in pairs {
        let two = summarize_normal(&[a, b], Objective::Maximize).expect("valid");
        let scale = a.1.max(b.1);
        let low = a.0.min(b.0) - 40.0 * scale;
        for extra in 1..=6 {
            let mut arms = vec![a, b];
            arms.extend(std::iter::repeat_n((low, scale), extra));
            let many = summarize_normal(&arms, Objective::Maximize).expect("valid");
            for i in 0..2 {
                assert!(
                    (many.prob_best[i] - two.prob_best[i]).abs() <= 1e-13,
                    "{a:?} {b:?} +{extra}: {:?} vs {:?}",
                    many.prob_best,
                    two.prob_best
                );
                assert!(
                    (many.expected_loss[i] - two.expected_loss[i]).abs() <= 1e-13 * scale,
                    "{a:?} {b:?} +{extra}: {:?} vs {:?}",
                    many.expected_loss,
                    two.expected_loss
                );
            }
        }
        assert_eq!(
            prob_beats_control_normal(a, b).expect("valid"),
            two.prob_best[1]
        );
    }
}
