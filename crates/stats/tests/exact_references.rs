//! Checks against references computed inside the test by independent, exact means: integer
//! and dyadic-rational arithmetic from the raw data, and the defining property of a quantity
//! rather than the crate's formula for it.

use verdict_stats::RatioStats;

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
