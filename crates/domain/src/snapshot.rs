//! The winner snapshot: what `GET /v1/experiments/{key}/winner` serves, what the cache holds
//! per (environment, experiment), and what replicas publish to each other on a change.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;

use crate::experiment::{Experiment, PolicyMode, WinnerPolicy};
use crate::status::Status;

/// An experiment's decided winner (if any) and status, with the numbers behind the decision.
///
/// `version` is the experiment's version when the snapshot was taken: a cache keeps the
/// highest version it has seen, so a late write of an older snapshot never replaces a newer one.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WinnerSnapshot {
    pub experiment: String,
    pub experiment_id: String,
    pub environment: String,
    pub organization: Option<String>,
    pub status: Status,
    pub winner: Option<String>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub decided_at: Option<OffsetDateTime>,
    pub source: Option<PolicyMode>,
    pub policy: WinnerPolicy,
    /// The numbers behind the decision.
    pub details: Value,
    pub version: u64,
}

impl WinnerSnapshot {
    pub fn of(e: &Experiment) -> Self {
        Self {
            experiment: e.key.clone(),
            experiment_id: e.id.clone(),
            environment: e.scope.environment.clone(),
            organization: e.scope.organization.clone(),
            status: e.status,
            winner: e.winner.as_ref().map(|w| w.variant.clone()),
            decided_at: e.winner.as_ref().map(|w| w.decided_at),
            source: e.winner.as_ref().map(|w| w.source),
            policy: e.policy.clone(),
            details: e
                .winner
                .as_ref()
                .map(|w| w.details.clone())
                .unwrap_or(Value::Null),
            version: e.version,
        }
    }
}
