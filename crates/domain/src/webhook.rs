//! Webhook endpoints and deliveries: the records, and the rules every store adapter applies
//! when it changes them. Adapters make these changes atomic (a transaction, a
//! compare-and-set); they do not decide them, so the SQLite and MongoDB adapters cannot
//! drift apart.
//!
//! - **Endpoint health** ([`failing_since_after`], [`Endpoint::record_health`]): a success
//!   clears `failing_since`, a failure keeps the first failure since the last success.
//! - **Disabling** ([`disable_reason`], [`Endpoint::set_disabled`]): an endpoint that
//!   answered 410 Gone, or that has failed every attempt for `disable_after`, is disabled;
//!   disabling or enabling clears `failing_since`.
//! - **Secret rotation** ([`Endpoint::rotate_secret`], [`Endpoint::live_secrets`]): the new
//!   secret becomes current, the previous one keeps signing until its expiry.
//! - **Completion** ([`DeliveryNext::completion`]): what a claimed delivery's fields become
//!   after an attempt (or after giving up without one).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::outbox::{EventType, OutboxMessage};

/// A webhook endpoint. `secret` and `previous_secret` are `whsec_…` texts; they are stored
/// because every delivery is signed with them, and never shown after creation or rotation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Endpoint {
    /// `ep_<uuid v7>`.
    pub id: String,
    pub environment: String,
    pub url: String,
    #[serde(default)]
    pub description: String,
    /// Event types delivered; empty means every type.
    #[serde(default)]
    pub event_types: Vec<EventType>,
    #[serde(default)]
    pub disabled: bool,
    /// Why it was disabled ([`DisableReason`]: `manual`, `gone` (HTTP 410), `failing`).
    #[serde(default)]
    pub disabled_reason: Option<String>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub disabled_at: Option<OffsetDateTime>,
    pub secret: String,
    /// The secret before the last rotation, still used to sign until
    /// `previous_secret_expires_at`.
    #[serde(default)]
    pub previous_secret: Option<String>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub previous_secret_expires_at: Option<OffsetDateTime>,
    /// The first failed attempt since the last successful one; `None` when the last attempt
    /// succeeded (or there was none).
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub failing_since: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

/// The editable fields of an endpoint; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EndpointPatch {
    pub url: Option<String>,
    pub description: Option<String>,
    pub event_types: Option<Vec<EventType>>,
}

/// Why an endpoint was disabled, as stored in [`Endpoint::disabled_reason`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DisableReason {
    /// An administrator disabled it.
    Manual,
    /// It answered 410 Gone.
    Gone,
    /// Every attempt failed for longer than `disable_after`.
    Failing,
}

impl DisableReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DisableReason::Manual => "manual",
            DisableReason::Gone => "gone",
            DisableReason::Failing => "failing",
        }
    }
}

impl Endpoint {
    /// Whether this endpoint receives `message`: same environment, subscribed to its type,
    /// not disabled.
    pub fn wants(&self, message: &OutboxMessage) -> bool {
        !self.disabled
            && self.environment == message.environment
            && (self.event_types.is_empty() || self.event_types.contains(&message.event_type))
    }

    /// The secrets to sign with at `now`: the current one, then the previous one while its
    /// overlap lasts (`now` strictly before its expiry).
    pub fn live_secrets(&self, now: OffsetDateTime) -> Vec<&str> {
        let mut secrets = vec![self.secret.as_str()];
        if let (Some(previous), Some(until)) =
            (&self.previous_secret, self.previous_secret_expires_at)
            && now < until
        {
            secrets.push(previous.as_str());
        }
        secrets
    }

    /// Apply the fields `patch` sets, stamped `at`.
    pub fn apply(&mut self, patch: &EndpointPatch, at: OffsetDateTime) {
        if let Some(url) = &patch.url {
            self.url.clone_from(url);
        }
        if let Some(description) = &patch.description {
            self.description.clone_from(description);
        }
        if let Some(types) = &patch.event_types {
            self.event_types.clone_from(types);
        }
        self.updated_at = at;
    }

    /// Disable (`Some(reason)`) or enable (`None`) at `at`. Either way the failure streak
    /// starts over: an endpoint enabled again gets its full `disable_after` before it can be
    /// disabled for failing.
    pub fn set_disabled(&mut self, reason: Option<&str>, at: OffsetDateTime) {
        self.disabled = reason.is_some();
        self.disabled_at = reason.is_some().then_some(at);
        self.disabled_reason = reason.map(str::to_owned);
        self.failing_since = None;
        self.updated_at = at;
    }

    /// Make `secret` current; the current one becomes the previous secret, which keeps
    /// signing (see [`Endpoint::live_secrets`]) until `previous_expires_at`. A previous
    /// secret still in its overlap is dropped: only the last two secrets ever sign.
    pub fn rotate_secret(
        &mut self,
        secret: String,
        previous_expires_at: OffsetDateTime,
        at: OffsetDateTime,
    ) {
        self.previous_secret = Some(std::mem::replace(&mut self.secret, secret));
        self.previous_secret_expires_at = Some(previous_expires_at);
        self.updated_at = at;
    }

    /// Note the result of attempts at `at` ([`failing_since_after`]); `true` when
    /// `failing_since` changed (and the endpoint must be written back).
    pub fn record_health(&mut self, succeeded: bool, at: OffsetDateTime) -> bool {
        let next = failing_since_after(self.failing_since, succeeded, at);
        let changed = next != self.failing_since;
        self.failing_since = next;
        changed
    }
}

/// An endpoint's `failing_since` after attempts at `at`: a success clears it, a failure
/// keeps the first failure since the last success (or starts the streak at `at`).
pub fn failing_since_after(
    failing_since: Option<OffsetDateTime>,
    succeeded: bool,
    at: OffsetDateTime,
) -> Option<OffsetDateTime> {
    if succeeded {
        None
    } else {
        failing_since.or(Some(at))
    }
}

/// Whether a round of attempts to an endpoint disables it, and why: it answered 410 Gone
/// (`gone`), or at `now` it has been failing without a single success (since
/// `failing_since`, as recorded after the round) for at least `disable_after`.
pub fn disable_reason(
    gone: bool,
    failing_since: Option<OffsetDateTime>,
    now: OffsetDateTime,
    disable_after: Duration,
) -> Option<DisableReason> {
    if gone {
        return Some(DisableReason::Gone);
    }
    // A `disable_after` too long for `time::Duration` is never reached.
    let limit = time::Duration::try_from(disable_after).ok()?;
    failing_since
        .is_some_and(|since| now - since >= limit)
        .then_some(DisableReason::Failing)
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum DeliveryStatus {
    /// Waiting for its next attempt.
    Pending,
    /// A 2xx was received.
    Delivered,
    /// Given up: rejected (a 4xx), retries exhausted, or its endpoint is disabled or gone.
    Failed,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Pending, Self::Delivered, Self::Failed]
            .into_iter()
            .find(|v| v.as_str() == s)
    }
}

/// A claimed delivery's next state, decided by the dispatcher after its attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum DeliveryNext {
    /// Not attempted: give the lease back, keep everything else.
    Release,
    /// Try again at this time.
    RetryAt(OffsetDateTime),
    Delivered,
    /// Give up (`reason` is kept as the delivery's `last_error` when no attempt says more).
    Failed {
        reason: String,
    },
}

/// What a completion records of the attempt it reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttemptFacts<'a> {
    pub at: OffsetDateTime,
    /// The HTTP status, when a response came back.
    pub status_code: Option<u16>,
    /// Timeout, connection or refused-target error, when no response came back.
    pub error: Option<&'a str>,
}

/// What completing one claimed delivery writes (besides dropping its lease).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Completion<'a> {
    /// Give the lease back and change nothing else.
    Release,
    Update(DeliveryChange<'a>),
}

/// The fields a completion sets; `updated_at` is the completion's time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeliveryChange<'a> {
    pub status: DeliveryStatus,
    /// Set as is (`None` for a delivery that is no longer pending).
    pub next_attempt_at: Option<OffsetDateTime>,
    /// Added to the round's attempt count: 1 when an attempt was made, else 0.
    pub attempts_added: u32,
    /// `Some` when an attempt was made: `last_attempt_at` and `last_status_code` become its
    /// time and status (`None` included); otherwise both keep what is stored.
    pub last_attempt: Option<(OffsetDateTime, Option<u16>)>,
    /// `Some(e)`: `last_error` becomes `e` (`None` clears it); `None`: it keeps what is
    /// stored. An attempt sets it to its error, or the reason for giving up; giving up
    /// without an attempt sets the reason.
    pub last_error: Option<Option<&'a str>>,
}

impl DeliveryNext {
    /// What completing a delivery with this next state writes, given the attempt made (if
    /// one was).
    pub fn completion<'a>(&'a self, attempt: Option<AttemptFacts<'a>>) -> Completion<'a> {
        let (status, next_attempt_at, reason) = match self {
            DeliveryNext::Release => return Completion::Release,
            DeliveryNext::RetryAt(t) => (DeliveryStatus::Pending, Some(*t), None),
            DeliveryNext::Delivered => (DeliveryStatus::Delivered, None, None),
            DeliveryNext::Failed { reason } => {
                (DeliveryStatus::Failed, None, Some(reason.as_str()))
            }
        };
        let last_error = match attempt {
            Some(a) => Some(a.error.or(reason)),
            None => reason.map(Some),
        };
        Completion::Update(DeliveryChange {
            status,
            next_attempt_at,
            attempts_added: u32::from(attempt.is_some()),
            last_attempt: attempt.map(|a| (a.at, a.status_code)),
            last_error,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const T0: OffsetDateTime = datetime!(2026-02-01 00:00:00 UTC);

    fn secs(n: i64) -> time::Duration {
        time::Duration::seconds(n)
    }

    fn endpoint() -> Endpoint {
        Endpoint {
            id: "ep_1".into(),
            environment: "production".into(),
            url: "https://hooks.example.com/a".into(),
            description: "a".into(),
            event_types: Vec::new(),
            disabled: false,
            disabled_reason: None,
            disabled_at: None,
            secret: "whsec_current".into(),
            previous_secret: None,
            previous_secret_expires_at: None,
            failing_since: None,
            created_at: T0,
            updated_at: T0,
        }
    }

    #[test]
    fn a_failure_starts_a_streak_and_later_failures_keep_its_start() {
        assert_eq!(failing_since_after(None, false, T0), Some(T0));
        assert_eq!(
            failing_since_after(Some(T0), false, T0 + secs(60)),
            Some(T0)
        );
    }

    #[test]
    fn a_success_ends_the_streak() {
        assert_eq!(failing_since_after(Some(T0), true, T0 + secs(60)), None);
        assert_eq!(failing_since_after(None, true, T0), None);
    }

    #[test]
    fn record_health_says_whether_the_endpoint_changed() {
        let mut e = endpoint();
        assert!(!e.record_health(true, T0), "healthy stays healthy");
        assert!(e.record_health(false, T0));
        assert!(
            !e.record_health(false, T0 + secs(5)),
            "the streak's start is kept"
        );
        assert_eq!(e.failing_since, Some(T0));
        assert!(e.record_health(true, T0 + secs(6)));
        assert_eq!(e.failing_since, None);
    }

    #[test]
    fn gone_disables_whatever_the_streak() {
        let week = Duration::from_secs(7 * 86_400);
        assert_eq!(
            disable_reason(true, None, T0, week),
            Some(DisableReason::Gone)
        );
        assert_eq!(
            disable_reason(true, Some(T0), T0 + secs(1), week),
            Some(DisableReason::Gone)
        );
    }

    #[test]
    fn failing_for_disable_after_disables_and_a_moment_less_does_not() {
        let ten_minutes = Duration::from_secs(600);
        assert_eq!(
            disable_reason(false, Some(T0), T0 + secs(599), ten_minutes),
            None
        );
        assert_eq!(
            disable_reason(false, Some(T0), T0 + secs(600), ten_minutes),
            Some(DisableReason::Failing)
        );
        assert_eq!(
            disable_reason(false, None, T0 + secs(9_999), ten_minutes),
            None,
            "an endpoint not failing is never disabled for failing"
        );
        assert_eq!(
            disable_reason(false, Some(T0), T0 + secs(9_999), Duration::MAX),
            None,
            "a limit beyond time's range is never reached"
        );
    }

    #[test]
    fn disabling_and_enabling_clear_the_failure_streak() {
        let mut e = endpoint();
        e.failing_since = Some(T0);
        e.set_disabled(Some(DisableReason::Gone.as_str()), T0 + secs(1));
        assert!(e.disabled);
        assert_eq!(e.disabled_reason.as_deref(), Some("gone"));
        assert_eq!(e.disabled_at, Some(T0 + secs(1)));
        assert_eq!(e.failing_since, None);
        e.failing_since = Some(T0 + secs(2));
        e.set_disabled(None, T0 + secs(3));
        assert!(!e.disabled);
        assert_eq!((e.disabled_reason, e.disabled_at), (None, None));
        assert_eq!(e.failing_since, None);
        assert_eq!(e.updated_at, T0 + secs(3));
    }

    #[test]
    fn a_rotated_secret_signs_beside_the_new_one_until_it_expires() {
        let mut e = endpoint();
        assert_eq!(e.live_secrets(T0), ["whsec_current"]);
        e.rotate_secret("whsec_next".into(), T0 + secs(100), T0);
        assert_eq!(e.secret, "whsec_next");
        assert_eq!(e.previous_secret.as_deref(), Some("whsec_current"));
        assert_eq!(
            e.live_secrets(T0 + secs(99)),
            ["whsec_next", "whsec_current"]
        );
        assert_eq!(
            e.live_secrets(T0 + secs(100)),
            ["whsec_next"],
            "expired at its time"
        );
        // A second rotation keeps only the last two secrets.
        e.rotate_secret("whsec_third".into(), T0 + secs(200), T0 + secs(50));
        assert_eq!(e.live_secrets(T0 + secs(60)), ["whsec_third", "whsec_next"]);
        assert_eq!(e.updated_at, T0 + secs(50));
    }

    #[test]
    fn a_patch_changes_only_the_fields_it_sets() {
        let mut e = endpoint();
        e.apply(
            &EndpointPatch {
                url: Some("https://other.example.com".into()),
                description: None,
                event_types: Some(vec![EventType::WinnerChanged]),
            },
            T0 + secs(1),
        );
        assert_eq!(e.url, "https://other.example.com");
        assert_eq!(e.description, "a");
        assert_eq!(e.event_types, [EventType::WinnerChanged]);
        assert_eq!(e.updated_at, T0 + secs(1));
    }

    fn attempt(code: Option<u16>, error: Option<&str>) -> AttemptFacts<'_> {
        AttemptFacts {
            at: T0,
            status_code: code,
            error,
        }
    }

    #[test]
    fn a_release_changes_nothing_but_the_lease() {
        assert_eq!(DeliveryNext::Release.completion(None), Completion::Release);
        assert_eq!(
            DeliveryNext::Release.completion(Some(attempt(Some(200), None))),
            Completion::Release
        );
    }

    #[test]
    fn an_attempt_records_its_time_status_and_error() {
        let retry = DeliveryNext::RetryAt(T0 + secs(30));
        assert_eq!(
            retry.completion(Some(attempt(Some(503), None))),
            Completion::Update(DeliveryChange {
                status: DeliveryStatus::Pending,
                next_attempt_at: Some(T0 + secs(30)),
                attempts_added: 1,
                last_attempt: Some((T0, Some(503))),
                last_error: Some(None),
            })
        );
        let Completion::Update(timed_out) =
            retry.completion(Some(attempt(None, Some("timed out"))))
        else {
            panic!("an update")
        };
        assert_eq!(timed_out.last_attempt, Some((T0, None)));
        assert_eq!(timed_out.last_error, Some(Some("timed out")));
    }

    #[test]
    fn giving_up_keeps_the_reason_unless_the_attempt_says_more() {
        let failed = DeliveryNext::Failed {
            reason: "rejected".into(),
        };
        let Completion::Update(rejected) = failed.completion(Some(attempt(Some(400), None))) else {
            panic!("an update")
        };
        assert_eq!(
            (
                rejected.status,
                rejected.next_attempt_at,
                rejected.attempts_added
            ),
            (DeliveryStatus::Failed, None, 1)
        );
        assert_eq!(rejected.last_error, Some(Some("rejected")));
        let Completion::Update(refused) =
            failed.completion(Some(attempt(None, Some("target refused"))))
        else {
            panic!("an update")
        };
        assert_eq!(refused.last_error, Some(Some("target refused")));
        let Completion::Update(unattempted) = failed.completion(None) else {
            panic!("an update")
        };
        assert_eq!(
            (unattempted.attempts_added, unattempted.last_attempt),
            (0, None),
            "without an attempt the last attempt's fields stay"
        );
        assert_eq!(unattempted.last_error, Some(Some("rejected")));
    }

    #[test]
    fn delivered_without_an_attempt_keeps_the_last_error() {
        let Completion::Update(c) = DeliveryNext::Delivered.completion(None) else {
            panic!("an update")
        };
        assert_eq!((c.status, c.last_error), (DeliveryStatus::Delivered, None));
    }

    #[test]
    fn delivery_statuses_round_trip_through_their_names() {
        for s in [
            DeliveryStatus::Pending,
            DeliveryStatus::Delivered,
            DeliveryStatus::Failed,
        ] {
            assert_eq!(DeliveryStatus::parse(s.as_str()), Some(s));
        }
        assert_eq!(DeliveryStatus::parse("lost"), None);
    }

    #[test]
    fn an_endpoint_wants_subscribed_messages_of_its_environment_while_enabled() {
        let message = |environment: &str, event_type| OutboxMessage {
            id: "msg_1".into(),
            event_type,
            environment: environment.into(),
            organization: None,
            experiment_id: "e1".into(),
            created_at: T0,
            data: serde_json::Value::Null,
        };
        let mut e = endpoint();
        assert!(e.wants(&message("production", EventType::StatusChanged)));
        assert!(!e.wants(&message("staging", EventType::StatusChanged)));
        e.event_types = vec![EventType::WinnerChanged];
        assert!(!e.wants(&message("production", EventType::StatusChanged)));
        assert!(e.wants(&message("production", EventType::WinnerChanged)));
        e.disabled = true;
        assert!(!e.wants(&message("production", EventType::WinnerChanged)));
    }
}
