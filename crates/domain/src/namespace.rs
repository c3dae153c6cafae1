//! Namespaces: mutually exclusive experiments (GrowthBook's `namespace: [id, start, end]`).
//!
//! Experiments that name the same namespace `id` with disjoint `[start, end)` slices never
//! share a subject: each subject has one position on the namespace's hash line
//! ([`hashing::in_namespace`]) and enters only the experiment whose slice holds it.

use serde::{Deserialize, Serialize};

use crate::hashing;
use crate::validation::{Problems, check_key};

/// An experiment's slice `[start, end)` of the namespace `id`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Namespace {
    /// The namespace's name, shared by the experiments that exclude each other.
    pub id: String,
    /// Start of the slice, 0 to 1.
    #[cfg_attr(feature = "openapi", schema(minimum = 0.0, maximum = 1.0))]
    pub start: f64,
    /// End of the slice (exclusive), above `start`, at most 1.
    #[cfg_attr(feature = "openapi", schema(minimum = 0.0, maximum = 1.0))]
    pub end: f64,
}

impl Namespace {
    /// Whether `subject` falls in this slice (hash v1 of the subject seeded by the id, as
    /// GrowthBook's `inNamespace`).
    #[must_use]
    pub fn contains(&self, subject: &str) -> bool {
        hashing::in_namespace(subject, (&self.id, self.start, self.end))
    }

    /// Report what is wrong with it under `field`.
    pub fn check(&self, p: &mut Problems, field: &str) {
        check_key(p, &format!("{field}.id"), &self.id);
        let bounded = |x: f64| (0.0..=1.0).contains(&x);
        if !bounded(self.start) {
            p.push(format!("{field}.start"), "must be between 0 and 1");
        }
        if !bounded(self.end) {
            p.push(format!("{field}.end"), "must be between 0 and 1");
        } else if bounded(self.start) && self.end <= self.start {
            p.push(format!("{field}.end"), "must be above start");
        }
    }

    /// GrowthBook's form: `[id, start, end]`.
    #[must_use]
    pub fn as_tuple(&self) -> (&str, f64, f64) {
        (&self.id, self.start, self.end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn namespace(start: f64, end: f64) -> Namespace {
        Namespace {
            id: "checkout".into(),
            start,
            end,
        }
    }

    #[test]
    fn disjoint_slices_share_no_subject_and_together_hold_everyone() {
        let (left, right) = (namespace(0.0, 0.4), namespace(0.4, 1.0));
        let mut counts = [0_u32; 2];
        for i in 0..10_000 {
            let subject = format!("user-{i}");
            let (a, b) = (left.contains(&subject), right.contains(&subject));
            assert!(a != b, "{subject} is in exactly one slice");
            counts[usize::from(b)] += 1;
        }
        // 40% / 60% of 10,000 within 5 standard deviations (σ ≈ 49).
        assert!((counts[0] as i64 - 4_000).abs() < 250, "{counts:?}");
    }

    #[test]
    fn every_bad_bound_is_reported() {
        let mut p = Problems::new();
        namespace(-0.1, 1.5).check(&mut p, "namespace");
        namespace(0.6, 0.5).check(&mut p, "namespace");
        Namespace {
            id: String::new(),
            start: 0.0,
            end: 1.0,
        }
        .check(&mut p, "namespace");
        let fields: Vec<&str> = p.iter().map(|x| x.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "namespace.start",
                "namespace.end",
                "namespace.end",
                "namespace.id"
            ]
        );
    }
}
