//! Per-variant figures of one metric event, as the stores compute them (from the rollups or
//! from raw events) and as results and winner decisions read them.

use serde::{Deserialize, Serialize};

/// Subject-level counts of one event for one variant.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct VariantCounts {
    pub variant: String,
    /// Subjects assigned to the variant.
    pub subjects: u64,
    /// Subjects with at least one counted event.
    pub converted_subjects: u64,
    /// Counted events.
    pub events: u64,
    /// Σ of event values.
    pub sum: f64,
    /// Σ over subjects of (that subject's Σ value)², for per-subject variance.
    pub sum_of_squares: f64,
}
