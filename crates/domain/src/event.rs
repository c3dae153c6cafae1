//! Raw events as the store keeps them.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;

/// An event accepted for storage: validated, attributed to a variant, with an id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewEvent {
    pub experiment_id: String,
    /// Client idempotency key, or a server-generated id when the client sent none.
    pub event_id: String,
    pub subject: String,
    pub variant: String,
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

/// A stored event with its position in ingestion order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventRecord {
    /// Strictly increasing in ingestion order; aggregation watermarks are expressed in it.
    pub seq: u64,
    #[serde(flatten)]
    pub event: NewEvent,
}
