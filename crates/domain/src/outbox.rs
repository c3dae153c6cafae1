//! Outbox messages: the webhook events a state change causes, decided here once so every
//! store adapter writes the same messages atomically with the change itself.
//!
//! A message's id is derived from the experiment id, the version the change produced and the
//! event type, so it is stable: writing it twice (a retried relay, a crash between two
//! writes) can never create two messages, and Standard Webhooks consumers can deduplicate on
//! `webhook-id`.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::experiment::Experiment;
use crate::threshold::Crossing;

/// The event types a webhook endpoint can subscribe to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum EventType {
    #[serde(rename = "experiment.winner_changed")]
    WinnerChanged,
    #[serde(rename = "experiment.status_changed")]
    StatusChanged,
    #[serde(rename = "experiment.metrics_threshold_reached")]
    MetricsThresholdReached,
}

impl EventType {
    pub const ALL: [EventType; 3] = [
        EventType::WinnerChanged,
        EventType::StatusChanged,
        EventType::MetricsThresholdReached,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventType::WinnerChanged => "experiment.winner_changed",
            EventType::StatusChanged => "experiment.status_changed",
            EventType::MetricsThresholdReached => "experiment.metrics_threshold_reached",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }

    fn id_suffix(self) -> &'static str {
        match self {
            EventType::WinnerChanged => "winner",
            EventType::StatusChanged => "status",
            EventType::MetricsThresholdReached => "threshold",
        }
    }
}

/// One event to announce, as written to the outbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OutboxMessage {
    /// `msg_<experiment id>_v<version>_<winner|status>`, or
    /// `msg_<experiment id>_threshold_<crossing number>`; the Standard Webhooks `webhook-id`.
    pub id: String,
    pub event_type: EventType,
    pub environment: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organization: Option<String>,
    pub experiment_id: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// The webhook body's `data`.
    pub data: Value,
}

impl OutboxMessage {
    /// The webhook body: `{"type", "timestamp", "data"}`.
    pub fn body(&self) -> Value {
        json!({
            "type": self.event_type.as_str(),
            "timestamp": rfc3339(self.created_at),
            "data": self.data,
        })
    }
}

/// What the id of every message about experiment `experiment_id` starts with:
/// `msg_<experiment id>_`. Experiment ids are UUIDs (no `_`), so the ids starting with it
/// are this experiment's messages and no other's.
pub fn message_id_prefix(experiment_id: &str) -> String {
    format!("msg_{experiment_id}_")
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_else(|_| t.to_string())
}

/// The messages announcing the change from `before` to `after` (the same experiment),
/// made at `at`: `experiment.winner_changed` only when the winning variant actually changed,
/// `experiment.status_changed` when the status did. Winner first, as a decision both picks
/// the winner and completes the experiment.
pub fn messages_for_change(
    before: &Experiment,
    after: &Experiment,
    at: OffsetDateTime,
) -> Vec<OutboxMessage> {
    let mut messages = Vec::new();
    let old_winner = before.winner.as_ref().map(|w| w.variant.as_str());
    let new_winner = after.winner.as_ref().map(|w| w.variant.as_str());
    let message = |event_type: EventType, data: Value| OutboxMessage {
        id: format!(
            "{}v{}_{}",
            message_id_prefix(&after.id),
            after.version,
            event_type.id_suffix()
        ),
        event_type,
        environment: after.scope.environment.clone(),
        organization: after.scope.organization.clone(),
        experiment_id: after.id.clone(),
        created_at: at,
        data,
    };
    if old_winner != new_winner
        && let Some(w) = &after.winner
    {
        messages.push(message(
            EventType::WinnerChanged,
            json!({
                "experiment": after.key,
                "experiment_id": after.id,
                "environment": after.scope.environment,
                "organization": after.scope.organization,
                "previous_winner": old_winner,
                "winner": w.variant,
                "decided_at": rfc3339(w.decided_at),
                "source": w.source,
                "policy": after.policy,
                "details": w.details,
                "version": after.version,
            }),
        ));
    }
    if before.status != after.status {
        messages.push(message(
            EventType::StatusChanged,
            json!({
                "experiment": after.key,
                "experiment_id": after.id,
                "environment": after.scope.environment,
                "organization": after.scope.organization,
                "previous_status": before.status,
                "status": after.status,
                "changed_at": rfc3339(at),
                "winner": new_winner,
                "version": after.version,
            }),
        ));
    }
    messages
}

/// The message announcing `crossing` of one of `e`'s thresholds, found by the aggregation
/// that folded events up to `aggregated_through` at `at`. Its id numbers the experiment's
/// crossings, so writing it again (a retried step) never makes a second message.
pub fn threshold_message(
    e: &Experiment,
    crossing: &Crossing,
    aggregated_through: u64,
    at: OffsetDateTime,
) -> Option<OutboxMessage> {
    let t = e.thresholds.get(crossing.threshold)?;
    let (direction, value) = t.bound();
    let event_type = EventType::MetricsThresholdReached;
    Some(OutboxMessage {
        id: format!(
            "{}{}_{}",
            message_id_prefix(&e.id),
            event_type.id_suffix(),
            crossing.number
        ),
        event_type,
        environment: e.scope.environment.clone(),
        organization: e.scope.organization.clone(),
        experiment_id: e.id.clone(),
        created_at: at,
        data: json!({
            "experiment": e.key,
            "experiment_id": e.id,
            "environment": e.scope.environment,
            "organization": e.scope.organization,
            "metric": t.metric,
            "kind": e.metric(&t.metric).map(|m| m.kind),
            "statistic": t.statistic,
            "variant": crossing.variant,
            "direction": direction,
            "threshold": value,
            "value": crossing.figure,
            "subjects": crossing.subjects,
            "crossing": crossing.number,
            "aggregated_through": aggregated_through,
            "reached_at": rfc3339(at),
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::experiment::{ExperimentInput, PolicyMode, Provided, Winner};
    use crate::scope::Scope;
    use crate::status::Status;

    fn experiment() -> Experiment {
        let input: ExperimentInput = serde_json::from_value(
            json!({"key": "checkout", "variants": [{"key": "a"}, {"key": "b"}]}),
        )
        .unwrap();
        input
            .into_experiment(
                Scope::default(),
                Provided {
                    id: "exp_1".into(),
                    salt: "salt".into(),
                    now: OffsetDateTime::UNIX_EPOCH,
                },
            )
            .unwrap()
    }

    fn winner(variant: &str) -> Winner {
        Winner {
            variant: variant.into(),
            decided_at: OffsetDateTime::UNIX_EPOCH,
            source: PolicyMode::Automatic,
            details: json!({"p_best": 0.97}),
        }
    }

    #[test]
    fn a_status_change_announces_only_the_status() {
        let before = experiment();
        let mut after = before.clone();
        after.apply_status(Status::Running, OffsetDateTime::UNIX_EPOCH);
        let m = messages_for_change(&before, &after, OffsetDateTime::UNIX_EPOCH);
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].event_type, EventType::StatusChanged);
        assert_eq!(m[0].id, "msg_exp_1_v2_status");
        assert_eq!(m[0].data["previous_status"], "draft");
        assert_eq!(m[0].data["status"], "running");
        assert_eq!(m[0].body()["type"], "experiment.status_changed");
        assert_eq!(m[0].body()["timestamp"], "1970-01-01T00:00:00Z");
    }

    #[test]
    fn a_decision_announces_the_winner_then_the_completion() {
        let mut before = experiment();
        before.apply_status(Status::Running, OffsetDateTime::UNIX_EPOCH);
        let mut after = before.clone();
        after.apply_winner(winner("b"), true);
        let m = messages_for_change(&before, &after, OffsetDateTime::UNIX_EPOCH);
        let types: Vec<_> = m.iter().map(|m| m.event_type).collect();
        assert_eq!(types, [EventType::WinnerChanged, EventType::StatusChanged]);
        assert_eq!(m[0].data["previous_winner"], Value::Null);
        assert_eq!(m[0].data["winner"], "b");
        assert_eq!(m[0].data["details"]["p_best"], 0.97);
        assert_eq!(m[1].data["status"], "completed");
        assert_ne!(m[0].id, m[1].id);
    }

    #[test]
    fn the_same_winner_again_announces_nothing() {
        let mut before = experiment();
        before.apply_winner(winner("b"), false);
        let mut after = before.clone();
        after.apply_winner(winner("b"), false);
        assert!(messages_for_change(&before, &after, OffsetDateTime::UNIX_EPOCH).is_empty());
        after.apply_winner(winner("a"), false);
        let m = messages_for_change(&before, &after, OffsetDateTime::UNIX_EPOCH);
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].data["previous_winner"], "b");
    }

    #[test]
    fn a_threshold_crossing_is_numbered_and_says_what_was_reached() {
        let mut e = experiment();
        e.thresholds =
            vec![serde_json::from_value(json!({"metric": "conversion", "below": 0.02})).unwrap()];
        let crossing = Crossing {
            threshold: 0,
            variant: "b".into(),
            figure: 0.015,
            subjects: 400,
            number: 3,
        };
        let m = threshold_message(&e, &crossing, 77, OffsetDateTime::UNIX_EPOCH).unwrap();
        assert_eq!(m.id, "msg_exp_1_threshold_3");
        assert_eq!(m.body()["type"], "experiment.metrics_threshold_reached");
        let d = &m.data;
        assert_eq!(d["metric"], "conversion");
        assert_eq!(d["kind"], "binomial");
        assert_eq!(d["statistic"], "estimate");
        assert_eq!(
            (d["direction"].as_str(), d["threshold"].as_f64()),
            (Some("below"), Some(0.02))
        );
        assert_eq!(
            (d["variant"].as_str(), d["value"].as_f64()),
            (Some("b"), Some(0.015))
        );
        assert_eq!(
            (d["subjects"].as_u64(), d["crossing"].as_u64()),
            (Some(400), Some(3))
        );
        assert_eq!(d["aggregated_through"], 77);
        let unknown = Crossing {
            threshold: 1,
            ..crossing
        };
        assert!(threshold_message(&e, &unknown, 77, OffsetDateTime::UNIX_EPOCH).is_none());
    }

    #[test]
    fn event_types_parse_their_wire_names() {
        for t in EventType::ALL {
            assert_eq!(EventType::parse(t.as_str()), Some(t));
            assert_eq!(serde_json::to_value(t).unwrap(), t.as_str());
        }
        assert_eq!(EventType::parse("experiment.other"), None);
    }
}
