//! Request and response types of the store traits (see [`crate::Store`]).

use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;
use verdict_domain::Status;
pub use verdict_domain::VariantCounts;

/// Largest page size any list accepts.
pub const MAX_PAGE_SIZE: u32 = 100;

/// A 1-based page of at most [`MAX_PAGE_SIZE`] items.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageRequest {
    pub page: u32,
    pub page_size: u32,
}

impl PageRequest {
    pub const DEFAULT: PageRequest = PageRequest {
        page: 1,
        page_size: 20,
    };

    /// Clamp to valid bounds (page ≥ 1, 1 ≤ page_size ≤ [`MAX_PAGE_SIZE`]).
    pub fn clamped(self) -> Self {
        Self {
            page: self.page.max(1),
            page_size: self.page_size.clamp(1, MAX_PAGE_SIZE),
        }
    }

    pub fn offset(self) -> u64 {
        let p = self.clamped();
        u64::from(p.page - 1) * u64::from(p.page_size)
    }

    pub fn limit(self) -> u64 {
        u64::from(self.clamped().page_size)
    }
}

impl Default for PageRequest {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// One page of results and the total number of matches.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub total: u64,
}

impl<T> Page<T> {
    pub fn map<U>(self, f: impl FnMut(T) -> U) -> Page<U> {
        Page {
            items: self.items.into_iter().map(f).collect(),
            total: self.total,
        }
    }
}

/// Filters of [`crate::ExperimentStore::list_experiments`]; `None` means "any".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExperimentFilter {
    pub environment: Option<String>,
    /// `Some(None)` selects global experiments only; `Some(Some(org))` one organization's.
    pub organization: Option<Option<String>>,
    /// With `organization: Some(Some(org))`: that organization's and the global ones.
    pub with_global: bool,
    pub status: Option<Status>,
    /// Only experiments whose key or name contains this, ASCII letters compared without
    /// case.
    pub text: Option<String>,
}

/// A status compare-and-set and what it is recorded as.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusChange {
    pub experiment_id: String,
    pub from: Status,
    pub to: Status,
    pub at: OffsetDateTime,
    /// Who asked (an API key id, `scheduler`, …), for the audit log.
    pub actor: String,
}

/// An experiment deletion, a compare-and-delete on the version read
/// ([`crate::ExperimentStore::delete_experiment`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Deletion {
    pub experiment_id: String,
    /// The version the caller read (and judged deletable).
    pub version: u64,
    pub at: OffsetDateTime,
    /// Who asked, for the audit log.
    pub actor: String,
    /// What the audit entry records besides (key, status, whether forced).
    pub details: Value,
}

/// A deleted experiment whose data is still being removed
/// ([`crate::JobStore::purge_experiment_data`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Purge {
    pub experiment_id: String,
    pub deleted_at: OffsetDateTime,
}

/// An entry of an experiment's audit log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditEntry {
    pub id: u64,
    pub experiment_id: String,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    pub actor: String,
    pub action: String,
    pub details: Value,
}

/// What happened to one event of an appended batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AppendOutcome {
    Accepted,
    Duplicate,
    /// The subject has no assignment in this experiment.
    NotInExperiment,
    /// The event names a variant other than the subject's assignment.
    VariantMismatch,
}

/// A winner to record (automatic decision or manual override).
#[derive(Debug, Clone, PartialEq)]
pub struct WinnerChange {
    pub experiment_id: String,
    pub winner: verdict_domain::Winner,
    /// Also move a running or paused experiment to `completed`.
    pub complete: bool,
    pub actor: String,
    /// Apply only if the stored version still is this one ([`crate::StoreError::VersionConflict`]
    /// otherwise): an automatic decision must not overwrite a change made since it read the
    /// experiment (a manual override, a pause).
    pub expected_version: Option<u64>,
}

/// The result of [`crate::AudienceStore::delete_audience`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AudienceDeletion {
    Deleted,
    NotFound,
    /// Running experiments (keys) that use the audience.
    InUse(Vec<String>),
}

/// A half-open time range `[from, to)`; `None` bounds are open.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TimeRange {
    pub from: Option<OffsetDateTime>,
    pub to: Option<OffsetDateTime>,
}

/// Which of a subject's events count for a metric (SPEC §2), beyond "at or after the
/// subject's assignment": a subject's start is its assignment or, with an `exposure_event`,
/// its first such event at or after the assignment (subjects that never sent it are not in
/// the analysed population at all); an event counts when at or after the start, before
/// start + `window`, and inside `range`.
///
/// The rollups cannot apply these rules as events arrive (an exposure may arrive after the
/// metric events it gates), so [`crate::EventStore::variant_counts`] applies them to raw events at
/// query time, in the store (one SQL query; one MongoDB pipeline), as GrowthBook does.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attribution {
    /// Count only events inside this range (results' `from` / `to`).
    pub range: TimeRange,
    /// Only subjects who sent this event at or after their assignment count, from their
    /// first such event.
    pub exposure_event: Option<String>,
    /// Count a subject's events within this long of its start.
    pub window: Option<time::Duration>,
}

impl Attribution {
    /// Counting in `range`, from the assignment, with no window.
    pub fn in_range(range: TimeRange) -> Self {
        Self {
            range,
            ..Self::default()
        }
    }

    /// Whether only "at or after the assignment" applies: what the rollups count.
    pub fn is_plain(&self) -> bool {
        *self == Self::default()
    }

    /// The window in milliseconds (saturating), if any.
    pub(crate) fn window_millis(&self) -> Option<i64> {
        self.window
            .map(|w| i64::try_from(w.whole_milliseconds()).unwrap_or(i64::MAX))
    }
}

/// Stores keep times at millisecond precision (BSON dates are milliseconds); callers
/// truncate before writing so that what they read back equals what they wrote.
pub fn truncate_to_millis(t: OffsetDateTime) -> OffsetDateTime {
    let ms = t.unix_timestamp_nanos() / 1_000_000;
    OffsetDateTime::from_unix_timestamp_nanos(ms * 1_000_000).unwrap_or(t)
}

/// Milliseconds since the Unix epoch.
pub fn to_millis(t: OffsetDateTime) -> i64 {
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

/// The inverse of [`to_millis`].
pub fn from_millis(ms: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// What the store knows about one subject of one experiment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SubjectRecord {
    pub forced: Option<String>,
    pub assignment: Option<verdict_domain::Assignment>,
}
