//! Per-variant figures of one metric event, as the stores compute them (from the rollups or
//! from raw events) and as results and winner decisions read them.

use serde::{Deserialize, Serialize};

/// Subject-level counts of one event for one variant.
///
/// Per subject `i` the stores keep `n_i` (its counted events) and `total_i` (Σ of their
/// values); these are sums over the variant's subjects. When the figures are computed with
/// a cap, `total_i` is the capped total in `sum`, `sum_of_squares` and `sum_events_value`
/// (see the stores' `rolled_up_counts` / `variant_counts`); the counts are never capped.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct VariantCounts {
    pub variant: String,
    /// Subjects assigned to the variant.
    pub subjects: u64,
    /// Subjects with at least one counted event.
    pub converted_subjects: u64,
    /// Counted events: Σ n_i.
    pub events: u64,
    /// Σ of event values: Σ total_i.
    pub sum: f64,
    /// Σ over subjects of (that subject's Σ value)², for per-subject variance: Σ total_i².
    pub sum_of_squares: f64,
    /// Σ over subjects of (that subject's event count)²: Σ n_i², for the variance of
    /// per-subject counts (e.g. the denominator of a per-event ratio).
    #[serde(default)]
    pub sum_events_squared: u64,
    /// Σ over subjects of events × value: Σ n_i·total_i, the covariance term of a ratio of
    /// per-subject values to per-subject counts (delta method).
    #[serde(default)]
    pub sum_events_value: f64,
}

impl VariantCounts {
    /// Add `other`'s figures (of other subjects of the same variant) to these: every figure
    /// is a sum over subjects.
    pub fn add(&mut self, other: &VariantCounts) {
        self.subjects += other.subjects;
        self.converted_subjects += other.converted_subjects;
        self.events += other.events;
        self.sum += other.sum;
        self.sum_of_squares += other.sum_of_squares;
        self.sum_events_squared += other.sum_events_squared;
        self.sum_events_value += other.sum_events_value;
    }
}
