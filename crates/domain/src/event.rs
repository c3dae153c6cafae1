//! Raw events: what an app sends (after validation) and what the store keeps.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;

/// An event ready for storage. Its variant is what the client claimed, if anything; the
/// store resolves it against the subject's stored assignment in the same transaction as
/// the insert (see `verdict-store`'s `append_events`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewEvent {
    pub experiment_id: String,
    /// Client idempotency key, or a server-generated id when the client sent none.
    pub event_id: String,
    pub subject: String,
    /// The variant the client says the subject saw; must match the stored assignment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    /// Event key (`conversion`, `exposure`, `revenue`, …).
    pub event: String,
    pub value: f64,
    /// When it happened, per the client (defaults to receipt time).
    #[serde(with = "time::serde::rfc3339")]
    pub ts: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub received_at: OffsetDateTime,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta: Option<Value>,
}

/// A stored event: attributed to the subject's assigned variant, with its position in
/// ingestion order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventRecord {
    /// Strictly increasing in ingestion order; aggregation watermarks are expressed in it.
    pub seq: u64,
    pub experiment_id: String,
    pub event_id: String,
    pub subject: String,
    pub variant: String,
    pub event: String,
    pub value: f64,
    #[serde(with = "time::serde::rfc3339")]
    pub ts: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub received_at: OffsetDateTime,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta: Option<Value>,
}
