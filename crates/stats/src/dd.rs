//! Double-double arithmetic: a value carried as the unevaluated sum `hi + lo` of two doubles
//! (~106 significant bits), built from error-free transformations.
//!
//! # Why
//!
//! Metric sums arrive as doubles and are exact as given, but quantities formed from them can
//! cancel: the difference of two means near 1e6 that differ by 1e-3 keeps only ~7 of its 16
//! digits once each mean has been rounded to a double, and the residual variance of a ratio
//! metric whose values are nearly proportional to its event counts is a small difference of
//! large centred moments. Carrying the intermediate results in double-double keeps the
//! rounding ~2^-106 relative to the inputs, so the cancellation costs nothing visible in the
//! final double.
//!
//! The building blocks are Knuth's TwoSum (`a + b = s + e` exactly) and the fused
//! multiply-add TwoProd (`a · b = p + e` exactly); the compound operations follow Dekker (1971)
//! and the QD library of Hida, Li and Bailey (2001).

/// `hi + lo` with `|lo| ≤ ½ ulp(hi)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Dd {
    pub(crate) hi: f64,
    pub(crate) lo: f64,
}

/// `a + b = s + e` exactly, for any finite `a`, `b`.
fn two_sum(a: f64, b: f64) -> (f64, f64) {
    let s = a + b;
    let bb = s - a;
    (s, (a - (s - bb)) + (b - bb))
}

/// `a + b = s + e` exactly, given `|a| ≥ |b|` (or `a = 0`).
fn quick_two_sum(a: f64, b: f64) -> (f64, f64) {
    let s = a + b;
    (s, b - (s - a))
}

/// `a · b = p + e` exactly (barring underflow).
fn two_prod(a: f64, b: f64) -> (f64, f64) {
    let p = a * b;
    (p, a.mul_add(b, -p))
}

impl Dd {
    /// An exact double.
    pub(crate) fn new(x: f64) -> Self {
        Self { hi: x, lo: 0.0 }
    }

    /// `a · b`, exactly.
    pub(crate) fn product(a: f64, b: f64) -> Self {
        let (hi, lo) = two_prod(a, b);
        Self { hi, lo }
    }

    /// `a / b` to ~2^-106 relative.
    ///
    /// The remainder `a − q·b` of a correctly rounded quotient `q` is a double, and the FMA
    /// computes it exactly, so only the second quotient `r/b` is rounded.
    pub(crate) fn quotient(a: f64, b: f64) -> Self {
        let q = a / b;
        let r = (-q).mul_add(b, a);
        let (hi, lo) = quick_two_sum(q, r / b);
        Self { hi, lo }
    }

    /// The nearest double.
    pub(crate) fn to_f64(self) -> f64 {
        self.hi + self.lo
    }

    pub(crate) fn add(self, other: Self) -> Self {
        let (s1, s2) = two_sum(self.hi, other.hi);
        let (t1, t2) = two_sum(self.lo, other.lo);
        let (s1, s2) = quick_two_sum(s1, s2 + t1);
        let (hi, lo) = quick_two_sum(s1, s2 + t2);
        Self { hi, lo }
    }

    pub(crate) fn neg(self) -> Self {
        Self {
            hi: -self.hi,
            lo: -self.lo,
        }
    }

    pub(crate) fn sub(self, other: Self) -> Self {
        self.add(other.neg())
    }

    pub(crate) fn mul(self, other: Self) -> Self {
        let (p, e) = two_prod(self.hi, other.hi);
        let e = e + (self.hi * other.lo + self.lo * other.hi);
        let (hi, lo) = quick_two_sum(p, e);
        Self { hi, lo }
    }

    pub(crate) fn div_f64(self, b: f64) -> Self {
        let q1 = self.hi / b;
        let (p1, p2) = two_prod(q1, b);
        let (s, e) = two_sum(self.hi, -p1);
        let e = e - p2 + self.lo;
        let (hi, lo) = quick_two_sum(q1, (s + e) / b);
        Self { hi, lo }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_third_is_carried_to_twice_double_precision() {
        let third = Dd::quotient(1.0, 3.0);
        // 3 · (hi + lo) − 1 is ~2^-106 when lo carries the next 53 bits of 1/3.
        let residual = third.mul(Dd::new(3.0)).sub(Dd::new(1.0));
        assert!(residual.to_f64().abs() < 1e-31, "{residual:?}");
        assert!(third.lo != 0.0);
    }

    #[test]
    fn sums_and_products_are_exact() {
        let big = 1e16;
        let s = Dd::new(big).add(Dd::new(1.0));
        assert_eq!((s.hi, s.lo), (big, 1.0));
        let p = Dd::product(1.0 + f64::EPSILON, 1.0 - f64::EPSILON);
        // (1 + ε)(1 − ε) = 1 − ε², which needs the low part.
        assert_eq!(p.hi, 1.0);
        assert_eq!(p.lo, -f64::EPSILON * f64::EPSILON);
    }

    #[test]
    fn division_by_a_double_keeps_the_low_part() {
        let n = Dd::new(1e16).add(Dd::new(3.0));
        let x = n.div_f64(7.0);
        let back = x.mul(Dd::new(7.0)).sub(n);
        assert!(back.to_f64().abs() < 1e-14, "{back:?}");
    }
}
