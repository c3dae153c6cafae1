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

/// An experiment's primary metric per variant after an aggregation run: what WebSocket
/// subscribers get as a `metrics` message (the full statistics are `GET …/results`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MetricsSnapshot {
    pub experiment_id: String,
    /// The primary metric's event.
    pub metric: String,
    /// Ingestion sequence number of the last event folded into the rollups.
    pub aggregated_through: u64,
    /// In the experiment's variant order.
    pub variants: Vec<VariantMetrics>,
}

/// One variant's figures of the primary metric in a [`MetricsSnapshot`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct VariantMetrics {
    pub variant: String,
    /// Subjects in the analysis.
    pub subjects: u64,
    /// Subjects with at least one of the metric's events.
    pub converted_subjects: u64,
    /// The metric's events.
    pub events: u64,
    /// Σ of their values (`null` when not finite).
    pub sum: Option<f64>,
}

impl MetricsSnapshot {
    /// The snapshot of `e`'s primary metric from its per-variant `figures` (variant order).
    pub fn of(e: &Experiment, aggregated_through: u64, figures: &[crate::VariantCounts]) -> Self {
        Self {
            experiment_id: e.id.clone(),
            metric: e.primary_metric.event.clone(),
            aggregated_through,
            variants: figures
                .iter()
                .map(|c| VariantMetrics {
                    variant: c.variant.clone(),
                    subjects: c.subjects,
                    converted_subjects: c.converted_subjects,
                    events: c.events,
                    sum: c.sum.is_finite().then_some(c.sum),
                })
                .collect(),
        }
    }
}
