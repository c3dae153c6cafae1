//! Deterministic quadrature for `k ≥ 3` arms: P(best) and expected loss.
//!
//! For independent posteriors with densities `f_j` and CDFs `F_j`,
//!
//! * `P(best_i) = ∫ f_i(x) Π_{j≠i} F_j(x) dx`
//! * `loss_i = E[max_j p_j − p_i] = ∫ F_i(u) (1 − Π_{j≠i} F_j(u)) du`
//!
//! Both are evaluated on one composite 16-point Gauss–Legendre grid whose panel breakpoints are
//! placed, for every arm, at `mean ± {0, 1, …, 6, 7.5, 9, 11, 13.5, 17, 22, 28, 36, 46}` standard
//! deviations (clipped to `[0, 1]`) and then merged. Near each mean a panel is one sd wide, so a
//! degree-15 interpolant of a Gaussian-like density is accurate to ~1e-16; panels widen in the
//! tails where the densities are tiny. The ±46 sd reach covers even the exponential tail of a
//! Beta(1, n) posterior (mass beyond it < 1e-20).
//!
//! The CDFs are *not* computed with an incomplete-beta routine at every node (that would cost a
//! continued fraction of `O(sqrt n)` terms per node). Instead each density is integrated on the
//! same grid: across panels by Gauss–Legendre sums, and inside a panel with the spectral
//! integration matrix `S[k][l] = ∫_{-1}^{x_k} ℓ_l(t) dt` of the Lagrange basis `ℓ_l` on the
//! nodes. The lower CDF `F` is accumulated from the left and the upper tail `1 − F` from the
//! right, so both keep their relative precision in their own tail. Densities are evaluated
//! unnormalised, relative to their value at the mean, as
//! `(α−1) ln1p(d/μ) + (β−1) ln1p(−d/(1−μ))` with `d = x − μ`, and normalised by their numerical
//! integral on the grid — so no `ln B(α, β)` (whose float64 value is off by ~1e-8 at n = 1e7)
//! is ever needed.
//!
//! Posteriors near 1 cannot be resolved in `p`, where doubles are spaced 1.1e-16 apart (a
//! Beta(1e7, 1) has sd 1e-7). When the arms sit mostly above ½ the whole problem is mirrored to
//! `q = 1 − p`, where it becomes "which arm has the *lowest* rate" and the roles of `F` and
//! `1 − F` swap.

use std::sync::OnceLock;

use crate::beta::BetaPosterior;

/// Points per panel.
const M: usize = 16;

/// Breakpoint offsets in posterior standard deviations (mirrored to both sides of the mean).
const OFFSETS_SD: [f64; 15] = [
    1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.5, 9.0, 11.0, 13.5, 17.0, 22.0, 28.0, 36.0, 46.0,
];

/// Gauss–Legendre rule on `[-1, 1]` plus its spectral integration matrix.
pub(crate) struct Rule {
    pub(crate) nodes: [f64; M],
    pub(crate) weights: [f64; M],
    /// `cumulative[k][l] = ∫_{-1}^{nodes[k]} ℓ_l(t) dt`.
    cumulative: [[f64; M]; M],
}

/// The 16-point rule, built once (also used by `normal_quadrature`).
pub(crate) fn rule() -> &'static Rule {
    static RULE: OnceLock<Rule> = OnceLock::new();
    RULE.get_or_init(build_rule)
}

/// Builds the rule by Newton iteration on the Legendre polynomial (accurate to a few ulps).
fn build_rule() -> Rule {
    let mut nodes = [0.0; M];
    let mut weights = [0.0; M];
    let n = M as f64;
    for i in 0..M.div_ceil(2) {
        let mut z = (std::f64::consts::PI * (i as f64 + 0.75) / (n + 0.5)).cos();
        let mut derivative = 1.0;
        for _ in 0..100 {
            let (mut p1, mut p2) = (1.0_f64, 0.0_f64);
            for j in 0..M {
                let p3 = p2;
                p2 = p1;
                let j = j as f64;
                p1 = ((2.0 * j + 1.0) * z * p2 - j * p3) / (j + 1.0);
            }
            derivative = n * (z * p1 - p2) / (z * z - 1.0);
            let previous = z;
            z = previous - p1 / derivative;
            if (z - previous).abs() <= 1e-16 {
                break;
            }
        }
        let w = 2.0 / ((1.0 - z * z) * derivative * derivative);
        nodes[i] = -z;
        nodes[M - 1 - i] = z;
        weights[i] = w;
        weights[M - 1 - i] = w;
    }
    // Barycentric weights of the nodes.
    let mut lambda = [0.0; M];
    for l in 0..M {
        let mut prod = 1.0;
        for j in 0..M {
            if j != l {
                prod *= nodes[l] - nodes[j];
            }
        }
        lambda[l] = 1.0 / prod;
    }
    let lagrange = |t: f64| -> [f64; M] {
        let mut out = [0.0; M];
        if let Some(hit) = nodes.iter().position(|&x| x == t) {
            out[hit] = 1.0;
            return out;
        }
        let mut denom = 0.0;
        for j in 0..M {
            out[j] = lambda[j] / (t - nodes[j]);
            denom += out[j];
        }
        for v in &mut out {
            *v /= denom;
        }
        out
    };
    // ∫_{-1}^{x_k} ℓ_l is integrated exactly by the same M-point rule mapped onto [-1, x_k].
    let mut cumulative = [[0.0; M]; M];
    for (k, row) in cumulative.iter_mut().enumerate() {
        let half = 0.5 * (nodes[k] + 1.0);
        for q in 0..M {
            let t = -1.0 + half * (nodes[q] + 1.0);
            let basis = lagrange(t);
            for l in 0..M {
                row[l] += half * weights[q] * basis[l];
            }
        }
    }
    Rule {
        nodes,
        weights,
        cumulative,
    }
}

/// One arm's density, lower CDF and upper tail at every grid node.
struct ArmOnGrid {
    pdf: Vec<f64>,
    cdf: Vec<f64>,
    sf: Vec<f64>,
}

/// `(P(best_i), expected loss_i)` for every arm, by quadrature. Requires `α, β ≥ 1`.
pub(crate) fn best_and_loss(arms: &[BetaPosterior]) -> (Vec<f64>, Vec<f64>) {
    let k = arms.len();
    let mirror = arms.iter().map(BetaPosterior::mean).sum::<f64>() > 0.5 * k as f64;
    let shapes: Vec<(f64, f64)> = arms
        .iter()
        .map(|p| {
            if mirror {
                (p.beta, p.alpha)
            } else {
                (p.alpha, p.beta)
            }
        })
        .collect();

    // Merged breakpoints.
    let mut breaks = Vec::with_capacity(k * (2 * OFFSETS_SD.len() + 3));
    let mut windows = Vec::with_capacity(k);
    for &(a, b) in &shapes {
        let s = a + b;
        let mean = a / s;
        let sd = (a * b / (s * s * (s + 1.0))).sqrt();
        let reach = OFFSETS_SD[OFFSETS_SD.len() - 1] * sd;
        let lo = (mean - reach).max(0.0);
        let hi = (mean + reach).min(1.0);
        windows.push((lo, hi));
        breaks.extend([lo, hi, mean]);
        for off in OFFSETS_SD {
            for x in [mean - off * sd, mean + off * sd] {
                if x > lo && x < hi {
                    breaks.push(x);
                }
            }
        }
    }
    breaks.sort_by(f64::total_cmp);
    breaks.dedup();
    let panels: Vec<(f64, f64)> = breaks
        .windows(2)
        .map(|w| (w[0], w[1]))
        .filter(|(a, b)| b > a)
        .collect();

    let rule = rule();
    let n_nodes = panels.len() * M;
    let mut xs = Vec::with_capacity(n_nodes);
    let mut ws = Vec::with_capacity(n_nodes);
    for &(x0, x1) in &panels {
        let half = 0.5 * (x1 - x0);
        let mid = 0.5 * (x0 + x1);
        for l in 0..M {
            xs.push(mid + half * rule.nodes[l]);
            ws.push(half * rule.weights[l]);
        }
    }

    let grids: Vec<ArmOnGrid> = shapes
        .iter()
        .zip(&windows)
        .map(|(&(a, b), &window)| arm_on_grid(a, b, window, &panels, &xs, rule))
        .collect();

    // In mirrored space "best" means "lowest q": swap the roles of F and 1 − F.
    let (below, above): (Vec<&[f64]>, Vec<&[f64]>) = grids
        .iter()
        .map(|g| {
            if mirror {
                (g.sf.as_slice(), g.cdf.as_slice())
            } else {
                (g.cdf.as_slice(), g.sf.as_slice())
            }
        })
        .unzip();

    let mut prob = vec![0.0; k];
    let mut loss = vec![0.0; k];
    // prefix[j] = (Π_{i<j} F_i, 1 − Π_{i<j} F_i); suffix likewise for i > j.
    let mut prefix = vec![(1.0, 0.0); k + 1];
    let mut suffix = vec![(1.0, 0.0); k + 1];
    // (P1, c1) ⊗ (P2, c2) = (P1 P2, c1 + P1 c2): 1 − P1 P2 = (1 − P1) + P1 (1 − P2) adds only
    // non-negative terms, so "1 − product of CDFs" is accurate even when it is ~1e-300.
    for node in 0..n_nodes {
        let w = ws[node];
        for j in 0..k {
            let (p, c) = prefix[j];
            prefix[j + 1] = (p * below[j][node], c + p * above[j][node]);
        }
        for j in (0..k).rev() {
            let (p, c) = suffix[j + 1];
            suffix[j] = (p * below[j][node], c + p * above[j][node]);
        }
        for i in 0..k {
            let (p_left, c_left) = prefix[i];
            let (p_right, c_right) = suffix[i + 1];
            let others = p_left * p_right;
            let others_complement = c_left + p_left * c_right;
            prob[i] += w * grids[i].pdf[node] * others;
            loss[i] += w * below[i][node] * others_complement;
        }
    }
    (prob, loss)
}

fn arm_on_grid(
    a: f64,
    b: f64,
    (lo, hi): (f64, f64),
    panels: &[(f64, f64)],
    xs: &[f64],
    rule: &Rule,
) -> ArmOnGrid {
    let n_nodes = xs.len();
    let s = a + b;
    let mean = a / s;
    let one_minus_mean = b / s;
    let mut g = vec![0.0; n_nodes];
    for (node, &x) in xs.iter().enumerate() {
        if x < lo || x > hi {
            continue;
        }
        let d = x - mean;
        let mut ln = 0.0;
        if a != 1.0 {
            ln += (a - 1.0) * (d / mean).ln_1p();
        }
        if b != 1.0 {
            ln += (b - 1.0) * (-d / one_minus_mean).ln_1p();
        }
        g[node] = ln.exp();
    }
    // Per-panel integral (in units of the half width) and within-panel cumulative integrals.
    let n_panels = panels.len();
    let mut panel_integral = vec![0.0; n_panels];
    let mut partial = vec![0.0; n_nodes];
    for (p, &(x0, x1)) in panels.iter().enumerate() {
        let vals = &g[p * M..(p + 1) * M];
        if vals.iter().all(|&v| v == 0.0) {
            continue;
        }
        let half = 0.5 * (x1 - x0);
        let dot = |row: &[f64; M]| row.iter().zip(vals).map(|(w, v)| w * v).sum::<f64>();
        panel_integral[p] = half * dot(&rule.weights);
        for (out, row) in partial[p * M..(p + 1) * M].iter_mut().zip(&rule.cumulative) {
            *out = half * dot(row);
        }
    }
    // Normaliser: the numerical integral of the unnormalised density.
    let z = neumaier_sum(panel_integral.iter().copied());
    let inv_z = 1.0 / z;
    let mut cdf = vec![0.0; n_nodes];
    let mut sf = vec![0.0; n_nodes];
    let mut left = 0.0;
    for (p, &integral) in panel_integral.iter().enumerate() {
        for i in p * M..(p + 1) * M {
            // The clamp removes ±1e-80-sized interpolation ringing in far tails, which would
            // otherwise surface as "negative probabilities".
            cdf[i] = ((left + partial[i]) * inv_z).clamp(0.0, 1.0);
        }
        left += integral;
    }
    let mut right = 0.0;
    for (p, &integral) in panel_integral.iter().enumerate().rev() {
        for i in p * M..(p + 1) * M {
            sf[i] = ((right + integral - partial[i]) * inv_z).clamp(0.0, 1.0);
        }
        right += integral;
    }
    for v in &mut g {
        *v *= inv_z;
    }
    ArmOnGrid { pdf: g, cdf, sf }
}

fn neumaier_sum(values: impl Iterator<Item = f64>) -> f64 {
    let mut sum = 0.0_f64;
    let mut comp = 0.0_f64;
    for v in values {
        let t = sum + v;
        if sum.abs() >= v.abs() {
            comp += (sum - t) + v;
        } else {
            comp += (v - t) + sum;
        }
        sum = t;
    }
    sum + comp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gauss_legendre_rule_integrates_polynomials_exactly() {
        let r = rule();
        // ∫_{-1}^{1} x^30 = 2/31; degree 2M − 1 = 31 is the exactness limit.
        let got: f64 = (0..M).map(|i| r.weights[i] * r.nodes[i].powi(30)).sum();
        assert!((got - 2.0 / 31.0).abs() < 1e-15, "{got}");
    }

    #[test]
    fn integration_matrix_integrates_polynomials_up_to_degree_fifteen() {
        let r = rule();
        for k in 0..M {
            let x = r.nodes[k];
            // ∫_{-1}^{x} t^15 dt = (x^16 − 1)/16
            let got: f64 = (0..M)
                .map(|l| r.cumulative[k][l] * r.nodes[l].powi(15))
                .sum();
            let want = (x.powi(16) - 1.0) / 16.0;
            assert!((got - want).abs() < 1e-14, "k={k}: {got} vs {want}");
        }
    }
}
