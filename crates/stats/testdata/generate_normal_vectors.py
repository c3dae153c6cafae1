#!/usr/bin/env python3
"""Reference values for Verdict's normal-posterior statistics, at 32 significant digits.

Writes normal_vectors.json next to this file. Needs only mpmath (pip install mpmath):

    python3 generate_normal_vectors.py

Every input is a Python float, i.e. an exact double; mpmath converts it exactly, so the
expected values are the exact answers for the doubles the Rust tests pass in, rounded once to
the nearest double.

For three or more arms the formulas here are deliberately not the ones the Rust code uses:

* P(best): direct tanh-sinh integration of phi_i(x) * prod_j F_j(x) from arm i's mean - 12 sd
  to the highest arm's mean + 12 sd, split at every arm's mean + k sd (k = -12..12) so each
  piece is smooth.
* Expected loss: E[max] - mu_i = int_{mu_i}^inf (1 - F_M) dx - int_{-inf}^{mu_i} F_M dx with
  F_M = prod_j F_j the CDF of the maximum (point masses are steps in F_M), rather than the
  per-arm and per-pair terms the Rust quadrature sums. (Good to ~1e-25 of the scale, which
  is what the Rust tests ask of k >= 3: an absolute tolerance.)
* Two arms (P(best), expected loss, chance to beat control, pairwise losses): the exact
  closed forms Phi(d/s) and E[(Y - X)^+] = s (t Phi(t) + phi(t)), evaluated directly at 42
  digits, where float64 would lose the tails or cancel (the Rust code uses Cody's rational
  approximations and a continued fraction instead). Integration is not used there: at
  P ~ 1e-70 tanh-sinh over the pieces drifts by ~1e-10 relative, and the loss of a far
  better arm is a difference of two O(1) integrals.
"""

import json
import os

import mpmath
from mpmath import mp, mpf, ncdf, npdf, quad, sqrt, log, exp, log1p

mp.dps = 32
REACH = 12  # standard deviations; the mass beyond is ~2e-33


def cdf(x, mu, s):
    """CDF of N(mu, s^2); a step (right-continuous) for a point mass."""
    if s == 0:
        return mpf(1) if x >= mu else mpf(0)
    return ncdf(x, mu, s)


def breakpoints(arms, lo, hi):
    pts = {lo, hi}
    for mu, s in arms:
        if s == 0:
            if lo < mu < hi:
                pts.add(mu)
            continue
        for k in range(-REACH, REACH + 1):
            x = mu + k * s
            if lo < x < hi:
                pts.add(x)
    return sorted(pts)


def integrate(f, points):
    """Tanh-sinh quadrature over the pieces, insisting on its own error estimate."""
    value, err = quad(f, points, error=True)
    assert err < mpf(10) ** -24, (err, points[0], points[-1])
    return value


def prob_best(arms):
    if len(arms) == 2:
        b_wins, a_wins, _, _ = two_arm(arms[0], arms[1])
        return [a_wins, b_wins]
    arms = [(mpf(m), mpf(s)) for m, s in arms]
    k = len(arms)
    points = [(m, s) for m, s in arms if s == 0]
    c_star = max((m for m, _ in points), default=None)
    out = []
    for i, (mi, si) in enumerate(arms):
        if si == 0:
            if mi != c_star:
                out.append(mpf(0))
                continue
            ties = sum(1 for m, _ in points if m == c_star)
            p = mpf(1)
            for j, (mj, sj) in enumerate(arms):
                if sj > 0:
                    p *= cdf(c_star, mj, sj)
            out.append(p / ties)
            continue
        # phi_i * prod F_j leans right of phi_i (the product rises with x): for an arm far
        # below the others its mass lies beyond mu_i + REACH sd, up to where the others are.
        lo = mi - REACH * si
        if c_star is not None:
            lo = max(lo, c_star)
        hi = max(m + REACH * s for m, s in arms)
        if lo >= hi:
            out.append(mpf(0))
            continue

        def f(x, i=i, mi=mi, si=si):
            v = npdf(x, mi, si)
            for j, (mj, sj) in enumerate(arms):
                if j != i:
                    v *= cdf(x, mj, sj)
            return v

        out.append(integrate(f, breakpoints(arms, lo, hi)))
    total = sum(out)
    assert abs(total - 1) < mpf(10) ** -25, total
    return out


def expected_loss(arms):
    if len(arms) == 2:
        # Closed form; psi(t) = t Phi(t) + phi(t) cancels ~log10(t^2) digits for t << 0,
        # which the extra working precision of two_arm absorbs.
        _, _, loss_0, loss_1 = two_arm(arms[0], arms[1])
        return [loss_0, loss_1]
    return loss_integrals(arms)


def loss_integrals(arms):
    arms = [(mpf(m), mpf(s)) for m, s in arms]

    def f_max(x):
        v = mpf(1)
        for mj, sj in arms:
            v *= cdf(x, mj, sj)
        return v

    top = max(m + REACH * s for m, s in arms)
    floor = max(m - REACH * s for m, s in arms)
    out = []
    for mi, _ in arms:
        lo = min(floor, mi)
        upper = integrate(lambda x: 1 - f_max(x), breakpoints(arms, mi, top)) if mi < top else 0
        lower = integrate(f_max, breakpoints(arms, lo, mi)) if lo < mi else mpf(0)
        out.append(upper - lower)
    return out


def two_arm(control, arm):
    with mp.workdps(42):
        return two_arm_closed_forms(control, arm)


def two_arm_closed_forms(control, arm):
    (m0, s0), (m1, s1) = [(mpf(m), mpf(s)) for m, s in (control, arm)]
    d = m1 - m0
    s = sqrt(s0 ** 2 + s1 ** 2)
    if s == 0:
        beats = mpf(1) if d > 0 else mpf(0) if d < 0 else mpf(1) / 2
        return beats, 1 - beats, max(d, 0), max(-d, 0)
    t = d / s
    beats = ncdf(t)
    loses = ncdf(-t)
    # E[(X_arm - X_control)^+] = s psi(t), psi(t) = t Phi(t) + phi(t).
    loss_choose_control = s * (t * ncdf(t) + npdf(t))
    loss_choose_arm = s * (-t * ncdf(-t) + npdf(t))
    return beats, loses, loss_choose_control, loss_choose_arm


def always_valid(theta_hat, variance, tau2, alpha):
    th, v, t2, a = mpf(theta_hat), mpf(variance), mpf(tau2), mpf(alpha)
    half = sqrt(v * (v + t2) / t2 * (2 * log(1 / a) + log((v + t2) / v)))
    log_lambda = log(v / (v + t2)) / 2 + t2 * th ** 2 / (2 * v * (v + t2))
    return th - half, th + half, log_lambda


PROB_CASES = [
    # id, arms as (mean, standard error); control first.
    ("k2-revenue", [(10.0, 0.5), (10.8, 0.6)]),
    ("k2-equal", [(3.25, 0.125), (3.25, 0.125)]),
    ("k2-far-tail", [(0.0, 1.0), (25.0, 1.0)]),
    ("k2-far-tail-37", [(0.0, 0.5), (26.5, 0.5)]),
    ("k2-huge-mean-tiny-gap", [(1000000.0, 0.001), (1000000.002, 0.0015)]),
    ("k2-unequal-sd", [(0.0, 1e-6), (1e-6, 1.0)]),
    ("k2-point-mass", [(0.0, 0.0), (0.5, 1.0)]),
    ("k2-both-point-masses", [(2.0, 0.0), (1.5, 0.0)]),
    ("k3-typical", [(100.0, 2.0), (103.0, 2.2), (98.5, 1.9)]),
    ("k3-unequal-sd", [(0.0, 1.0), (0.5, 1e-4), (-0.3, 30.0)]),
    ("k3-hopeless-third", [(5.0, 0.3), (5.4, 0.35), (-1.0, 0.3)]),
    ("k3-point-mass-ties", [(1.0, 0.0), (1.0, 0.0), (0.8, 0.25)]),
    ("k3-narrow-near-wide", [(0.0, 1.0), (0.02, 0.001), (0.01, 0.002)]),
    # Standard errors just over half the widest: no extra breakpoints in the Rust grid, with
    # the narrower arms' CDFs turning inside the widest arm's panels, centre and tails.
    ("k3-just-over-half-width", [(0.0, 1.0), (4.4, 0.51), (-3.1, 0.505)]),
    ("k4-just-over-half-width-tail", [(0.0, 1.0), (6.8, 0.51), (5.2, 0.52), (7.7, 0.9)]),
    ("k4-revenue", [(52.1, 0.9), (53.4, 0.95), (51.8, 0.88), (54.0, 1.1)]),
    ("k4-clear-winner", [(1.0, 0.01), (1.05, 0.01), (1.2, 0.01), (1.1, 0.01)]),
    ("k5-mixed-scales", [(0.0, 1.0), (0.3, 0.05), (1.5, 3.0), (-2.0, 0.5), (0.35, 0.2)]),
    ("k6-with-point-mass", [(10.0, 1.0), (11.0, 1.2), (10.5, 0.0), (9.0, 2.0), (10.6, 0.3), (12.0, 4.0)]),
    ("k6-all-far-apart", [(0.0, 1.0), (30.0, 1.0), (60.0, 1.0), (90.0, 1.0), (120.0, 1.0), (150.0, 1.0)]),
    ("k7-one-better", [(1.0, 0.2)] * 6 + [(1.3, 0.2)]),
    ("k8-equal", [(-4.5, 2.0)] * 8),
    ("k8-spread-sd", [(0.0, 0.001), (0.002, 0.01), (0.01, 0.1), (-0.05, 1.0), (0.5, 10.0),
                      (0.003, 0.002), (-0.001, 0.05), (0.02, 0.03)]),
    ("k8-huge-means", [(1e9 + 0.01 * i, 0.02 + 0.001 * i) for i in range(8)]),
    ("k8-latency", [(250.0, 3.0), (248.0, 3.1), (251.5, 2.9), (245.0, 3.3), (249.0, 3.0),
                    (250.5, 2.8), (247.0, 3.4), (252.0, 3.2)]),
]

PAIR_T = [-37.0, -30.0, -20.0, -10.0, -6.0, -4.0, -3.0, -2.0, -1.0, -0.25, 0.0, 0.5, 3.0, 12.0]

INTERVAL_CASES = [
    # theta_hat, variance, tau_squared, alpha
    (0.01, 9.5e-6, 1e-4, 0.05),
    (-0.003, 1.2e-7, 1e-4, 0.05),
    (1.4, 2.0, 4.0, 0.05),
    (0.0, 1e-10, 1e-4, 0.01),
    (250.0, 3.5e3, 1e2, 0.1),
    (-2.0, 0.6, 0.25, 0.05),
]


def f(x):
    return float(x)


def main():
    cases = []
    for cid, arms in PROB_CASES:
        pb = prob_best(arms)
        el = expected_loss(arms)
        beats, loses, lcc, lca = [], [], [], []
        for arm in arms[1:]:
            b, l, x, y = two_arm(arms[0], arm)
            beats.append(f(b))
            loses.append(f(l))
            lcc.append(f(x))
            lca.append(f(y))
        cases.append({
            "id": cid,
            "arms": [{"mean": m, "std_error": s} for m, s in arms],
            "expected": {
                "prob_best": [f(x) for x in pb],
                "expected_loss": [f(x) for x in el],
                "chance_to_beat_control": [None] + beats,
                "prob_control_beats": [None] + loses,
                "loss_choose_control": [None] + lcc,
                "loss_choose_arm": [None] + lca,
            },
        })
    pairs = []
    for t in PAIR_T:
        control, arm = (0.0, 0.6), (t, 0.8)  # s = 1, so d/s = t exactly
        b, l, x, y = two_arm(control, arm)
        pairs.append({
            "control": {"mean": control[0], "std_error": control[1]},
            "arm": {"mean": arm[0], "std_error": arm[1]},
            "chance_to_beat_control": f(b),
            "prob_control_beats": f(l),
            "loss_choose_control": f(x),
            "loss_choose_arm": f(y),
        })
    intervals = []
    for th, v, t2, a in INTERVAL_CASES:
        lo, hi, ll = always_valid(th, v, t2, a)
        intervals.append({
            "theta_hat": th, "variance": v, "tau_squared": t2, "alpha": a,
            "interval": [f(lo), f(hi)], "log_lambda": f(ll),
        })
    out = {
        "meta": {
            "generator": "generate_normal_vectors.py (mpmath %s, %d digits)" % (mpmath.__version__, mp.dps),
            "conventions": {
                "arms": "independent normal posteriors N(mean, std_error^2) of each arm's metric mean; control first",
                "prob_best[i]": "P(X_i = max_j X_j); point masses (std_error 0) that tie share equally",
                "expected_loss[i]": "E[max_j X_j - X_i]",
                "chance_to_beat_control[i]": "P(X_i > X_0); index 0 is null",
                "prob_control_beats[i]": "P(X_0 > X_i), computed directly",
                "loss_choose_control[i]": "E[(X_i - X_0)^+]",
                "loss_choose_arm[i]": "E[(X_0 - X_i)^+]",
                "intervals": "always-valid interval {theta0 : Lambda(theta0) < 1/alpha} of the mSPRT with N(theta0, tau^2) mixing; log_lambda at theta0 = 0",
            },
        },
        "cases": cases,
        "pairs": pairs,
        "intervals": intervals,
    }
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "normal_vectors.json")
    with open(path, "w") as fh:
        json.dump(out, fh, indent=1)
        fh.write("\n")


if __name__ == "__main__":
    main()
