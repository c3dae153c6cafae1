//! Types of the rollup operations: raw events folded into time buckets and per-subject
//! figures, incrementally from an ingestion watermark.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// What one [`crate::Store::rollup`] call did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RollupReport {
    /// Raw events read past the watermark (0: caught up).
    pub events: u64,
    /// Bucket rows inserted or updated.
    pub buckets_written: u64,
    /// Per-subject rows inserted or updated.
    pub subjects_written: u64,
    /// The watermark after this call (the `seq` of the last folded event).
    pub watermark: u64,
}

/// Bucket width.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Granularity {
    Hour,
    Day,
}

impl Granularity {
    pub fn as_str(self) -> &'static str {
        match self {
            Granularity::Hour => "hour",
            Granularity::Day => "day",
        }
    }

    pub fn millis(self) -> i64 {
        match self {
            Granularity::Hour => 3_600_000,
            Granularity::Day => 86_400_000,
        }
    }
}

/// Event-level sums of one (variant, event) over one time bucket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Bucket {
    pub variant: String,
    pub event: String,
    #[serde(with = "time::serde::rfc3339")]
    pub start: OffsetDateTime,
    pub count: u64,
    pub sum: f64,
    pub sum_of_squares: f64,
}
