//! Webhook delivery state: the [`WebhookStore`] trait and its model types.
//!
//! The outbox (written with each state change, see [`crate::ExperimentStore::list_outbox`])
//! says *what* to announce. This part of the store says *to whom* and *how it went*:
//!
//! - **Endpoints** ([`Endpoint`]): a URL subscribed to event types of one environment, with
//!   its signing secret (and the previous one while a rotation overlaps), whether it is
//!   disabled, and since when it has been failing without a single success.
//! - **Deliveries** ([`Delivery`]): one per (endpoint, outbox message), made by
//!   [`WebhookStore::fan_out_webhooks`] from outbox messages not yet fanned out. A delivery is
//!   `pending` (with the time of its next attempt), `delivered` or `failed`. Each carries a
//!   creation-ordered `seq`, so deliveries to an endpoint are claimed in the order their
//!   messages were created.
//! - **Attempts** ([`Attempt`]): every HTTP attempt of a delivery, with status, latency, a
//!   response snippet or the error.
//!
//! What a change does to an endpoint or a delivery (health, disabling, secret rotation, a
//! completion's fields) is decided once in [`verdict_domain::webhook`]; each adapter applies
//! it atomically. [`Endpoint`], [`EndpointPatch`], [`DeliveryStatus`] and [`DeliveryNext`]
//! are that module's types, re-exported here.
//!
//! Dispatchers take work with [`WebhookStore::claim_deliveries`]: due, pending deliveries
//! whose lease is free are leased to one claim (a random token) until `lease_until`, atomically,
//! so two dispatchers (threads, processes, replicas) never claim the same delivery while the
//! lease runs. A dispatcher that dies keeps its leases until they expire, then its
//! deliveries are claimed again: delivery is *at least once*. Results are written back with
//! [`WebhookStore::complete_deliveries`], which applies a delivery's new state only while the
//! claim's token still holds its lease (attempts are always logged: they happened).

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use verdict_domain::OutboxMessage;
use verdict_domain::webhook::AttemptFacts;
pub use verdict_domain::webhook::{
    DeliveryNext, DeliveryStatus, DisableReason, Endpoint, EndpointPatch,
};

use crate::Result;
use crate::model::{Page, PageRequest};

/// The message ids of one experiment's messages, as a half-open range `[low, high)` of
/// strings compared byte by byte: those starting with its prefix (`msg_<id>_`), up to the
/// prefix with its last `_` replaced by the next character, `` ` ``. A range, not `LIKE`,
/// in which `_` would match any character.
pub(crate) fn experiment_message_range(experiment_id: &str) -> (String, String) {
    let low = verdict_domain::outbox::message_id_prefix(experiment_id);
    let mut high = low.clone();
    high.pop();
    high.push('`');
    (low, high)
}

/// One outbox message to one endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delivery {
    pub endpoint_id: String,
    pub message: OutboxMessage,
    /// Creation order (deliveries of older messages have smaller values).
    pub seq: u64,
    pub status: DeliveryStatus,
    /// Attempts made in the current round (a redelivery starts a new round at 0); the retry
    /// schedule is indexed by it.
    pub attempts: u32,
    /// When the next attempt is due (pending deliveries only).
    #[serde(with = "time::serde::rfc3339::option")]
    pub next_attempt_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_attempt_at: Option<OffsetDateTime>,
    pub last_status_code: Option<u16>,
    pub last_error: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

/// What an attempt came to, as logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum AttemptResult {
    Delivered,
    /// Failed; another attempt is scheduled.
    Retry,
    /// Failed; no further attempt (rejected or exhausted).
    Failed,
    /// Failed with 410 Gone: the endpoint was disabled.
    EndpointDisabled,
}

impl AttemptResult {
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptResult::Delivered => "delivered",
            AttemptResult::Retry => "retry",
            AttemptResult::Failed => "failed",
            AttemptResult::EndpointDisabled => "endpoint_disabled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::Delivered,
            Self::Retry,
            Self::Failed,
            Self::EndpointDisabled,
        ]
        .into_iter()
        .find(|v| v.as_str() == s)
    }
}

/// One HTTP attempt of a delivery.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Attempt {
    /// Increasing in the order attempts were logged.
    pub id: u64,
    pub endpoint_id: String,
    pub message_id: String,
    /// 1 for the first attempt of a round.
    pub attempt: u32,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// The HTTP status, when a response came back.
    pub status_code: Option<u16>,
    pub latency_ms: u64,
    /// The first bytes of the response body (at most 1 KiB of text).
    pub response: Option<String>,
    /// Timeout, connection or refused-target error, when no response came back.
    pub error: Option<String>,
    pub result: AttemptResult,
    #[serde(with = "time::serde::rfc3339::option")]
    pub next_attempt_at: Option<OffsetDateTime>,
}

impl Attempt {
    /// What a completion records of this attempt on its delivery.
    pub fn facts(&self) -> AttemptFacts<'_> {
        AttemptFacts {
            at: self.at,
            status_code: self.status_code,
            error: self.error.as_deref(),
        }
    }
}

/// The outcome of one claimed delivery.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryUpdate {
    pub endpoint_id: String,
    pub message_id: String,
    /// The attempt made, if one was (its `id` is assigned by the store).
    pub attempt: Option<Attempt>,
    pub next: DeliveryNext,
}

/// Webhook endpoints, deliveries and attempts.
#[async_trait]
pub trait WebhookStore: Send + Sync + std::fmt::Debug {
    // ---- endpoints ---------------------------------------------------------------------

    /// [`crate::StoreError::Conflict`] when the id exists.
    async fn create_endpoint(&self, endpoint: &Endpoint) -> Result<()>;
    async fn get_endpoint(&self, id: &str) -> Result<Option<Endpoint>>;
    /// Endpoints (of one environment, or all), oldest first.
    async fn list_endpoints(
        &self,
        environment: Option<&str>,
        page: PageRequest,
    ) -> Result<Page<Endpoint>>;
    /// Apply `patch`; `None` when there is no such endpoint.
    async fn update_endpoint(
        &self,
        id: &str,
        patch: &EndpointPatch,
        at: OffsetDateTime,
    ) -> Result<Option<Endpoint>>;
    /// Disable (`Some(reason)`) or enable (`None`; also clears `failing_since`).
    async fn set_endpoint_disabled(
        &self,
        id: &str,
        reason: Option<&str>,
        at: OffsetDateTime,
    ) -> Result<Option<Endpoint>>;
    /// Make `secret` current and keep the current one as the previous secret until
    /// `previous_expires_at`.
    async fn rotate_endpoint_secret(
        &self,
        id: &str,
        secret: &str,
        previous_expires_at: OffsetDateTime,
        at: OffsetDateTime,
    ) -> Result<Option<Endpoint>>;
    /// Note the result of attempts to an endpoint: a success clears `failing_since`, a
    /// failure sets it to `at` unless already set. Returns the endpoint's `failing_since`
    /// afterwards (`None` also when the endpoint is gone).
    async fn record_endpoint_health(
        &self,
        id: &str,
        succeeded: bool,
        at: OffsetDateTime,
    ) -> Result<Option<OffsetDateTime>>;
    /// Delete an endpoint with its deliveries and attempts; `false` when there was none.
    async fn delete_endpoint(&self, id: &str) -> Result<bool>;

    // ---- dispatching -------------------------------------------------------------------

    /// Turn up to `limit` outbox messages not yet fanned out into one pending delivery per
    /// endpoint that [`Endpoint::wants`] it, due at `now`, and mark them fanned out.
    /// Idempotent: a message is never delivered twice to one endpoint by fanning it out
    /// again (e.g. after a crash between the two steps). Returns the deliveries created.
    async fn fan_out_webhooks(&self, now: OffsetDateTime, limit: usize) -> Result<u64>;

    /// Lease up to `limit` pending deliveries due at `now` (`next_attempt_at <= now`) whose
    /// lease is free (never taken, or expired at `now`) to `token` until `lease_until`,
    /// oldest `seq` first. Atomic: concurrent claims never return the same delivery while
    /// its lease runs.
    async fn claim_deliveries(
        &self,
        token: &str,
        now: OffsetDateTime,
        lease_until: OffsetDateTime,
        limit: usize,
    ) -> Result<Vec<Delivery>>;

    /// Log each update's attempt, and apply its `next` state (clearing the lease) to
    /// deliveries `token` still holds. `at` stamps `updated_at`.
    async fn complete_deliveries(
        &self,
        token: &str,
        updates: &[DeliveryUpdate],
        at: OffsetDateTime,
    ) -> Result<()>;

    // ---- delivery log ------------------------------------------------------------------

    /// An endpoint's deliveries, newest first, optionally of one status.
    async fn list_deliveries(
        &self,
        endpoint_id: &str,
        status: Option<DeliveryStatus>,
        page: PageRequest,
    ) -> Result<Page<Delivery>>;
    /// The deliveries of one experiment's messages, to every endpoint, newest first (by
    /// `seq`): those whose message id starts with
    /// [`verdict_domain::outbox::message_id_prefix`], found through an index on the message
    /// id.
    async fn list_experiment_deliveries(
        &self,
        experiment_id: &str,
        page: PageRequest,
    ) -> Result<Page<Delivery>>;
    async fn get_delivery(&self, endpoint_id: &str, message_id: &str) -> Result<Option<Delivery>>;
    /// Attempts of one delivery, newest first.
    async fn list_attempts(
        &self,
        endpoint_id: &str,
        message_id: &str,
        page: PageRequest,
    ) -> Result<Page<Attempt>>;
    /// Start a new round for one delivery, whatever its status: pending, due at `now`,
    /// attempts back to 0. `None` when there is no such delivery.
    async fn redeliver(
        &self,
        endpoint_id: &str,
        message_id: &str,
        now: OffsetDateTime,
    ) -> Result<Option<Delivery>>;
    /// [`WebhookStore::redeliver`] every failed delivery of the endpoint created at or after
    /// `since`; returns how many.
    async fn recover_failed(
        &self,
        endpoint_id: &str,
        since: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<u64>;
}
