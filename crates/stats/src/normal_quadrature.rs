//! Deterministic quadrature for `k ≥ 3` normal posteriors: P(best) and expected loss.
//!
//! # What is integrated
//!
//! For independent `X_i ~ N(μ_i, σ_i²)` with densities `φ_i` and CDFs `Φ_i`:
//!
//! * `P_i = P(best_i) = ∫ φ_i(x) Π_{j≠i} Φ_j(x) dx`;
//! * the expected maximum follows from the same integrands by parts,
//!   `∫ x φ_i G_i = μ_i P_i + σ_i² ∫ φ_i G_i'` with `G_i = Π_{j≠i} Φ_j`, so that
//!
//!   ```text
//!   loss_i = E[max_j X_j] − μ_i = Σ_j (μ_j − μ_i) P_j + S,
//!   S = Σ_{a<b} (σ_a² + σ_b²) ∫ φ_a φ_b Π_{l≠a,b} Φ_l dx ≥ 0.
//!   ```
//!
//! Every integrand is a bounded smooth function concentrated where the densities are, and
//! the losses need no integral of `x` times a density: integrating `x f_max(x)` directly
//! would cancel when the means are large next to their standard errors, and the textbook
//! `∫ F_i (1 − Π F_j)` runs over the whole gap between arms that are far apart.
//!
//! # Grid
//!
//! Each integral is taken in the standard units `z = (x − μ_i)/σ_i` of one arm — for a pair
//! term, of the narrower arm, where the product `φ_a φ_b` is concentrated — over
//! `z ∈ [−9, 9]` (`Φ(−9) ≈ 1e-19`). Panels of 1.5 standard units carry a 16-point
//! Gauss–Legendre rule each, far below double precision on a Gaussian that wide. An arm
//! less than half as wide as the integrating one adds its own breakpoints at
//! `±{0, 1.5, …, 9}` of *its* standard deviations, so a steep `Φ_j` is resolved however
//! small `σ_j/σ_i` is. Arms at least half as wide need none: across a panel their `Φ_j`
//! spans at most 3 of its own standard units, which the 16-point rule still integrates to
//! ~1e-20 (the integrand is entire and grows only like `e^{y²/2}` off the real axis). Working
//! per arm keeps every argument
//! `u_j = (μ_i − μ_j + σ_i z)/σ_j` relative to nearby quantities, so standard errors 1e-9 of
//! a mean of 1e9 resolve as well as unit ones (a shared grid in `x` would need nodes closer
//! than the doubles near the mean are spaced).
//!
//! # Point masses
//!
//! An arm with standard error 0 is a point mass. Let `c` be the highest one. Every
//! continuous arm integrates from `max(c, μ_i − 9σ_i)` instead of `−∞` (it is best only above
//! `c`); the point masses at `c` share `Π_{j continuous} Φ_j(c)`; lower point masses are never
//! best. Integration by parts from `c` adds the boundary term
//! `B = Σ_j σ_j² φ_j(c) Π_{l≠j} Φ_l(c)` to the losses, with the point masses' `P_j` and means
//! entering `Σ_j (μ_j − μ_i) P_j` like any other arm's.

use crate::quadrature::rule;
use crate::special::{normal_cdf, normal_pdf};

/// Half-width of every arm's integration window, in its standard deviations.
const REACH: f64 = 9.0;

/// Panel breakpoints in standard deviations from an arm's mean (mirrored to both sides).
const OFFSETS: [f64; 7] = [0.0, 1.5, 3.0, 4.5, 6.0, 7.5, REACH];

/// `Φ(u)` rounds to exactly 1 above this.
const CDF_ONE: f64 = 8.5;

/// Another continuous arm `j`, seen from the integrating arm `i`.
#[derive(Debug, Clone, Copy)]
struct Other {
    /// `u_j = offset + slope · z_i`.
    offset: f64,
    slope: f64,
    /// `(σ_i² + σ_j²)/σ_j` when the pair `(i, j)` is integrated on `i`'s grid, else 0.
    pair_weight: f64,
}

/// `(P(best_i), E[max_j X_j − X_i])` for every arm `(mean, std_error)`; `std_error ≥ 0`.
pub(crate) fn best_and_loss(arms: &[(f64, f64)]) -> (Vec<f64>, Vec<f64>) {
    let k = arms.len();
    let continuous: Vec<usize> = (0..k).filter(|&i| arms[i].1 > 0.0).collect();
    let floor = arms
        .iter()
        .filter(|a| a.1 == 0.0)
        .map(|a| a.0)
        .max_by(f64::total_cmp);

    let mut prob = vec![0.0; k];
    let mut shared = Neumaier::default();
    if let Some(c) = floor {
        let below: Vec<f64> = continuous
            .iter()
            .map(|&j| normal_cdf((c - arms[j].0) / arms[j].1))
            .collect();
        let all_below: f64 = below.iter().product();
        let ties = arms.iter().filter(|a| a.1 == 0.0 && a.0 == c).count();
        for (p, arm) in prob.iter_mut().zip(arms) {
            if arm.1 == 0.0 && arm.0 == c {
                *p = all_below / ties as f64;
            }
        }
        for (t, &j) in continuous.iter().enumerate() {
            let (mean, sd) = arms[j];
            let others: f64 = below
                .iter()
                .enumerate()
                .filter(|&(s, _)| s != t)
                .map(|(_, v)| v)
                .product();
            shared.add(sd * normal_pdf((c - mean) / sd) * others);
        }
    }
    for &i in &continuous {
        let (p, pairs) = integrate_arm(arms, &continuous, i, floor);
        prob[i] = p;
        shared.add(pairs);
    }
    let shared = shared.value();
    let loss = arms
        .iter()
        .map(|&(mean_i, _)| {
            let mut l = Neumaier::default();
            l.add(shared);
            for (&(mean_j, _), &p) in arms.iter().zip(&prob) {
                if p != 0.0 {
                    l.add((mean_j - mean_i) * p);
                }
            }
            l.value().max(0.0)
        })
        .collect();
    (prob, loss)
}

/// `(P_i, Σ over i's pair partners of (σ_i² + σ_b²) ∫ φ_i φ_b Π Φ_l)` on arm `i`'s grid.
fn integrate_arm(
    arms: &[(f64, f64)],
    continuous: &[usize],
    i: usize,
    floor: Option<f64>,
) -> (f64, f64) {
    let (mean_i, sd_i) = arms[i];
    let z_lo = floor.map_or(-REACH, |c| ((c - mean_i) / sd_i).max(-REACH));
    if z_lo >= REACH {
        return (0.0, 0.0);
    }

    let mut breaks = Vec::with_capacity(2 * OFFSETS.len() * continuous.len());
    let mut push = |z: f64| {
        if z > z_lo && z < REACH {
            breaks.push(z);
        }
    };
    for o in OFFSETS {
        push(o);
        push(-o);
    }
    let mut others = Vec::with_capacity(continuous.len());
    for &j in continuous.iter().filter(|&&j| j != i) {
        let (mean_j, sd_j) = arms[j];
        let slope = sd_i / sd_j;
        let partner = sd_j > sd_i || (sd_j == sd_i && j > i);
        others.push(Other {
            offset: (mean_i - mean_j) / sd_j,
            slope,
            // (σ_i² + σ_j²)/σ_j = σ_j (1 + (σ_i/σ_j)²), finite for any standard errors.
            pair_weight: if partner {
                sd_j * slope.mul_add(slope, 1.0)
            } else {
                0.0
            },
        });
        if sd_j < 0.5 * sd_i {
            let centre = (mean_j - mean_i) / sd_i;
            let width = sd_j / sd_i;
            for o in OFFSETS {
                push(o.mul_add(width, centre));
                push((-o).mul_add(width, centre));
            }
        }
    }
    breaks.push(z_lo);
    breaks.push(REACH);
    breaks.sort_by(f64::total_cmp);
    breaks.dedup();

    let rule = rule();
    let m = others.len();
    let mut cdf = vec![0.0; m];
    let mut prefix = vec![1.0; m + 1];
    let mut suffix = vec![1.0; m + 1];
    let mut prob = Neumaier::default();
    let mut pairs = Neumaier::default();
    for panel in breaks.windows(2) {
        let (a, b) = (panel[0], panel[1]);
        let half = 0.5 * (b - a);
        let mid = 0.5 * (a + b);
        let mut panel_prob = 0.0;
        let mut panel_pairs = 0.0;
        for (&node, &weight) in rule.nodes.iter().zip(&rule.weights) {
            let z = half.mul_add(node, mid);
            let density = weight * normal_pdf(z);
            for (c, o) in cdf.iter_mut().zip(&others) {
                let u = o.slope.mul_add(z, o.offset);
                *c = if u >= CDF_ONE { 1.0 } else { normal_cdf(u) };
            }
            for t in 0..m {
                prefix[t + 1] = prefix[t] * cdf[t];
            }
            for t in (0..m).rev() {
                suffix[t] = suffix[t + 1] * cdf[t];
            }
            panel_prob += density * prefix[m];
            for (t, o) in others.iter().enumerate() {
                if o.pair_weight != 0.0 {
                    let u = o.slope.mul_add(z, o.offset);
                    panel_pairs +=
                        density * o.pair_weight * normal_pdf(u) * prefix[t] * suffix[t + 1];
                }
            }
        }
        prob.add(half * panel_prob);
        pairs.add(half * panel_pairs);
    }
    (prob.value(), pairs.value())
}

/// Neumaier-compensated sum.
#[derive(Debug, Clone, Copy, Default)]
struct Neumaier {
    sum: f64,
    comp: f64,
}

impl Neumaier {
    fn add(&mut self, v: f64) {
        let t = self.sum + v;
        if self.sum.abs() >= v.abs() {
            self.comp += (self.sum - t) + v;
        } else {
            self.comp += (v - t) + self.sum;
        }
        self.sum = t;
    }

    fn value(self) -> f64 {
        self.sum + self.comp
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::normal::positive_part_mean;

    #[test]
    fn two_arms_through_the_quadrature_match_the_closed_form() {
        for &(a, b) in &[
            ((0.0, 1.0), (0.3, 1.0)),
            ((5.0, 0.01), (5.02, 3.0)),
            ((1e9, 1e-3), (1e9 + 2e-3, 2e-3)),
            ((0.0, 1.0), (7.0, 1e-6)),
        ] {
            let (p, l) = best_and_loss(&[a, b]);
            let s = a.1.hypot(b.1);
            let d = b.0 - a.0;
            let want_p = [normal_cdf(-d / s), normal_cdf(d / s)];
            let want_l = [positive_part_mean(d, s), positive_part_mean(-d, s)];
            for i in 0..2 {
                assert!(
                    (p[i] - want_p[i]).abs() < 1e-14,
                    "{a:?} {b:?}: {p:?} vs {want_p:?}"
                );
                assert!(
                    (l[i] - want_l[i]).abs() < 1e-14 * s,
                    "{a:?} {b:?}: {l:?} vs {want_l:?}"
                );
            }
        }
    }
}
