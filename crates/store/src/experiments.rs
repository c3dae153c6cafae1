//! [`ExperimentStore`]: experiments, their status compare-and-set and winner, the audit log,
//! and the webhook outbox their changes write.
//!
//! The outbox is listed here rather than by [`crate::WebhookStore`] because it belongs to
//! the experiment: [`ExperimentStore::transition_status`] and [`ExperimentStore::set_winner`]
//! write a change's messages atomically with the change (on MongoDB inside the experiment's
//! own document, relayed to the `outbox` collection afterwards), and only this aggregate
//! knows how to read them back. Webhook delivery consumes them through
//! [`crate::WebhookStore::fan_out_webhooks`].

use async_trait::async_trait;
use verdict_domain::{Experiment, OutboxMessage, Scope, ThresholdState};

use crate::Result;
use crate::model::{
    AuditEntry, Deletion, ExperimentFilter, Page, PageRequest, StatusChange, WinnerChange,
};

/// Experiments, status changes, winners, audit entries and outbox messages.
///
/// `actor` parameters name who asked (an API key id, `scheduler`, …) for the audit log.
#[async_trait]
pub trait ExperimentStore: Send + Sync + std::fmt::Debug {
    /// Insert a new experiment and its `created` audit entry. [`crate::StoreError::Conflict`]
    /// when its key already exists in its (environment, organization) or its id is taken.
    async fn create_experiment(&self, experiment: &Experiment, actor: &str) -> Result<()>;

    /// The experiment of `scope` whose key or id is `key_or_id`.
    async fn get_experiment(&self, scope: &Scope, key_or_id: &str) -> Result<Option<Experiment>>;

    /// Experiments matching `filter`, oldest first.
    async fn list_experiments(
        &self,
        filter: &ExperimentFilter,
        page: PageRequest,
    ) -> Result<Page<Experiment>>;

    /// Every experiment matching `filter`, oldest first (read a page at a time).
    async fn list_all_experiments(&self, filter: &ExperimentFilter) -> Result<Vec<Experiment>> {
        const PAGE_SIZE: u32 = 100;
        let mut all = Vec::new();
        let mut page = PageRequest {
            page: 1,
            page_size: PAGE_SIZE,
        };
        loop {
            let found = self.list_experiments(filter, page).await?;
            let done = found.items.len() < PAGE_SIZE as usize;
            all.extend(found.items);
            if done {
                return Ok(all);
            }
            page.page += 1;
        }
    }

    /// Replace an experiment's definition if its stored version is still
    /// `experiment.version`; returns the stored experiment with the version incremented and
    /// writes an `updated` audit entry. [`crate::StoreError::VersionConflict`] otherwise.
    /// Status, winner and lifecycle stamps are not changed here.
    async fn update_experiment(&self, experiment: &Experiment, actor: &str) -> Result<Experiment>;

    /// Atomically move an experiment from `change.from` to `change.to`, stamping
    /// `started_at` / `completed_at`, bumping the version and writing one audit entry.
    /// `Ok(None)` when the stored status is no longer `change.from` (someone else won).
    async fn transition_status(&self, change: &StatusChange) -> Result<Option<Experiment>>;

    /// Record a winner (and complete a running or paused experiment when
    /// `change.complete`), with an audit entry, atomically.
    async fn set_winner(&self, change: &WinnerChange) -> Result<Experiment>;

    /// Delete an experiment if its stored version is still `deletion.version`: its
    /// definition goes (its key is free again), a `deleted` audit entry stays under its id,
    /// and its data (raw events, rollups, assignments, QA overrides, evaluation state) is
    /// queued for [`crate::JobStore::purge_experiment_data`], all at once (a crash leaves
    /// either the experiment or its queued purge). `Ok(false)` when the version moved or the
    /// experiment is gone.
    async fn delete_experiment(&self, deletion: &Deletion) -> Result<bool>;

    /// The audit log of an experiment (its id), or of another subject of changes
    /// (`api_key:<id>`, `environment:<key>`, `audience:<env>/<key>`,
    /// `webhook_endpoint:<id>`), newest first.
    async fn list_audit(&self, subject: &str, page: PageRequest) -> Result<Page<AuditEntry>>;

    /// Record a change of `subject` other than an experiment's (whose changes record their
    /// own entries atomically): who, what, and its details.
    async fn record_audit(
        &self,
        subject: &str,
        actor: &str,
        action: &str,
        details: &serde_json::Value,
    ) -> Result<()>;

    /// Webhook outbox messages, oldest first. [`ExperimentStore::transition_status`] and
    /// [`ExperimentStore::set_winner`] write the messages a change causes
    /// ([`verdict_domain::outbox::messages_for_change`]) atomically with the change: a crash
    /// can neither lose a message of a change that was made nor leave one of a change that
    /// was not.
    async fn list_outbox(&self, page: PageRequest) -> Result<Page<OutboxMessage>>;

    /// The crossing state of experiment `experiment_id`'s metric thresholds (the default,
    /// nothing announced, when none was recorded).
    async fn threshold_state(&self, experiment_id: &str) -> Result<ThresholdState>;

    /// Replace experiment `experiment_id`'s threshold state with `state` if the stored one
    /// still has `expected_announced` crossings announced, writing `messages` (the
    /// announcements of the new crossings, [`verdict_domain::outbox::threshold_message`])
    /// to the outbox atomically with it: a crossing is announced if and only if the state
    /// that counts it is stored. `Ok(false)` when another writer moved the state first or
    /// the experiment is gone; nothing is written then.
    async fn record_threshold_state(
        &self,
        experiment_id: &str,
        expected_announced: u64,
        state: &ThresholdState,
        messages: &[OutboxMessage],
    ) -> Result<bool>;
}
