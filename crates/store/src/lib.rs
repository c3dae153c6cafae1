//! Persistence for Verdict: the [`Store`] trait, its adapters, and their contract suite.
//!
//! Everything durable goes through [`Store`]: experiments (with optimistic versions and an
//! atomic status compare-and-set), assignments (get-or-create, atomic under concurrency),
//! raw events (batch append, idempotent on `event_id`, scanned in ingestion order) and the
//! audit log. The rest of Verdict holds an `Arc<dyn Store>` and never sees a driver.
//!
//! Adapters must not make decisions the domain makes (validation, transitions allowed,
//! bucketing); they only make those decisions *atomic*. Every adapter runs the same
//! [`contract`] suite (feature `contract`), so behaviour cannot drift between backends.
//!
//! # Layout
//! - [`error`]: [`StoreError`], the errors callers can act on (conflict, retryable, …).
//! - [`model`]: the store's own request/response types (pages, filters, status changes).
//! - [`sqlite`]: the embedded default, one SQLite file in WAL mode.
//! - [`webhooks`]: [`WebhookStore`] (a supertrait of [`Store`]): webhook endpoints,
//!   deliveries with leases, attempts; implemented next to each adapter
//!   (`sqlite_webhooks.rs`, `mongo_webhooks.rs`).
//! - [`contract`]: the adapter contract suite and the macro that instantiates it.

pub mod error;
pub mod jobs;
pub mod model;
pub mod mongo;
mod mongo_jobs;
pub mod rollup;
pub mod sqlite;
mod sqlite_jobs;
pub mod webhooks;

#[cfg(feature = "contract")]
pub mod contract;
#[cfg(feature = "contract")]
mod contract_jobs;
#[cfg(feature = "contract")]
mod contract_webhooks;

use std::sync::Arc;

use async_trait::async_trait;
use time::OffsetDateTime;
use verdict_domain::{
    ApiKey, Assignment, Audience, Environment, EventRecord, Experiment, NewEvent, OutboxMessage,
    Scope,
};

pub use error::StoreError;
pub use jobs::{
    Fence, JobStore, Lease, LeaseGrant, RetentionFilter, RunOutcome, RunRecord, Trigger,
};
pub use model::{
    AppendOutcome, Attribution, AudienceDeletion, AuditEntry, ExperimentFilter, Page, PageRequest,
    StatusChange, SubjectRecord, TimeRange, VariantCounts, WinnerChange,
};
pub use mongo::MongoStore;
pub use rollup::{Bucket, Granularity, RollupReport};
pub use sqlite::SqliteStore;
pub use webhooks::{
    Attempt, AttemptResult, Delivery, DeliveryNext, DeliveryStatus, DeliveryUpdate, Endpoint,
    EndpointPatch, WebhookStore,
};

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// The one persistence interface of Verdict. Cheap to share as `Arc<dyn Store>`.
///
/// `actor` parameters name who asked (an API key id, `scheduler`, …) for the audit log.
/// Webhook delivery state is the supertrait [`WebhookStore`], so one `Arc<dyn Store>`
/// serves both.
#[async_trait]
pub trait Store: JobStore + WebhookStore + Send + Sync + std::fmt::Debug + 'static {
    /// A short name for logs (`sqlite`, `mongodb`).
    fn backend(&self) -> &'static str;

    /// Succeeds when the store can serve reads and writes.
    async fn ping(&self) -> Result<()>;

    // ---- experiments -------------------------------------------------------------------

    /// Insert a new experiment and its `created` audit entry. [`StoreError::Conflict`] when
    /// its key already exists in its (environment, organization) or its id is taken.
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
    /// writes an `updated` audit entry. [`StoreError::VersionConflict`] otherwise. Status,
    /// winner and lifecycle stamps are not changed here.
    async fn update_experiment(&self, experiment: &Experiment, actor: &str) -> Result<Experiment>;

    /// Atomically move an experiment from `change.from` to `change.to`, stamping
    /// `started_at` / `completed_at`, bumping the version and writing one audit entry.
    /// `Ok(None)` when the stored status is no longer `change.from` (someone else won).
    async fn transition_status(&self, change: &StatusChange) -> Result<Option<Experiment>>;

    /// Record a winner (and complete a running or paused experiment when
    /// `change.complete`), with an audit entry, atomically.
    async fn set_winner(&self, change: &WinnerChange) -> Result<Experiment>;

    /// The audit log of an experiment, newest first.
    async fn list_audit(&self, experiment_id: &str, page: PageRequest) -> Result<Page<AuditEntry>>;

    /// Webhook outbox messages, oldest first. [`Store::transition_status`] and
    /// [`Store::set_winner`] write the messages a change causes
    /// ([`verdict_domain::outbox::messages_for_change`]) atomically with the change: a crash
    /// can neither lose a message of a change that was made nor leave one of a change that
    /// was not.
    async fn list_outbox(&self, page: PageRequest) -> Result<Page<OutboxMessage>>;

    // ---- assignments -------------------------------------------------------------------

    async fn get_assignment(
        &self,
        experiment_id: &str,
        subject: &str,
    ) -> Result<Option<Assignment>>;

    /// Store `assignment` unless the subject already has one; either way return the stored
    /// assignment and whether this call created it. Atomic: concurrent callers for one
    /// subject all get the same assignment.
    async fn get_or_create_assignment(&self, assignment: &Assignment)
    -> Result<(Assignment, bool)>;

    /// Set (`Some`) or clear (`None`) a QA override for one subject, audited.
    async fn set_forced_variant(
        &self,
        experiment_id: &str,
        subject: &str,
        variant: Option<&str>,
        actor: &str,
    ) -> Result<()>;

    async fn get_forced_variant(
        &self,
        experiment_id: &str,
        subject: &str,
    ) -> Result<Option<String>>;

    /// Whether any subject of the experiment has a QA override. The assignment hot path
    /// reads this with the experiment (not per request) and looks up overrides per subject
    /// only when there are some.
    async fn has_forced_variants(&self, experiment_id: &str) -> Result<bool>;

    /// The QA override and the stored assignment of one subject, read together: the
    /// assignment hot path needs both. Adapters that can read both at once override this.
    async fn subject_state(&self, experiment_id: &str, subject: &str) -> Result<SubjectRecord> {
        Ok(SubjectRecord {
            forced: self.get_forced_variant(experiment_id, subject).await?,
            assignment: self.get_assignment(experiment_id, subject).await?,
        })
    }

    // ---- events ------------------------------------------------------------------------

    /// Append events, attributing each to its subject's stored assignment in the same
    /// transaction. Per input, in order: `Accepted`, `Duplicate` (same (experiment,
    /// event_id) stored before or earlier in the batch), `NotInExperiment` (no assignment),
    /// or `VariantMismatch` (the claimed variant is not the assigned one). Only accepted
    /// events are written. All or nothing: on error nothing was written.
    async fn append_events(&self, events: Vec<NewEvent>) -> Result<Vec<AppendOutcome>>;

    /// Up to `limit` events with `seq > after_seq`, in ingestion order.
    async fn scan_events(&self, after_seq: u64, limit: usize) -> Result<Vec<EventRecord>>;

    /// Per-variant subject-level counts of `event` for one experiment, from raw events,
    /// counting only events at or after each subject's start as `attribution` defines it
    /// (the assignment, or the first exposure) and inside its range and window; with an
    /// exposure event, only exposed subjects are counted. One entry per variant with at
    /// least one subject counted, ordered by variant.
    async fn variant_counts(
        &self,
        experiment_id: &str,
        event: &str,
        attribution: &Attribution,
    ) -> Result<Vec<VariantCounts>>;

    // ---- rollups and evaluation state -------------------------------------------------

    /// Fold up to `max_events` events past the rollup watermark into hour and day buckets
    /// and per-subject figures (only events at or after the subject's assignment count),
    /// advancing the watermark in the SAME transaction: a crash leaves all or nothing, and
    /// running again never counts an event twice. Cost grows with the new events only.
    async fn rollup(&self, max_events: usize) -> Result<RollupReport>;

    /// [`Store::rollup`] as a step of a job run holding `fence`: refused with
    /// [`StoreError::Fenced`] (nothing written) once a newer lease holder exists.
    async fn rollup_fenced(
        &self,
        max_events: usize,
        fence: Option<&Fence>,
    ) -> Result<RollupReport> {
        if let Some(fence) = fence {
            let current = self.get_lease(&fence.job).await?.map(|l| l.token);
            if current != Some(fence.token) {
                return Err(StoreError::Fenced {
                    job: fence.job.clone(),
                    token: fence.token,
                });
            }
        }
        self.rollup(max_events).await
    }

    /// The `seq` of the last event folded into the rollups.
    async fn rollup_watermark(&self) -> Result<u64>;

    /// Per-variant subject-level figures of `event` read from the rollups (what
    /// [`Store::variant_counts`] computes from raw events, once rolled up).
    async fn rolled_up_counts(
        &self,
        experiment_id: &str,
        event: &str,
    ) -> Result<Vec<VariantCounts>>;

    /// Time buckets of one experiment's `event` (all variants), oldest first.
    async fn buckets(
        &self,
        experiment_id: &str,
        event: &str,
        granularity: Granularity,
        range: TimeRange,
    ) -> Result<Vec<Bucket>>;

    /// State the evaluator carries between runs for one experiment (e.g. the peeking
    /// guard's running maximum), as JSON.
    async fn get_evaluation_state(&self, experiment_id: &str) -> Result<Option<serde_json::Value>>;
    async fn put_evaluation_state(
        &self,
        experiment_id: &str,
        state: &serde_json::Value,
    ) -> Result<()>;

    // ---- environments, audiences, API keys ----------------------------------------------

    /// [`StoreError::Conflict`] when the key exists.
    async fn create_environment(&self, environment: &Environment) -> Result<()>;
    async fn get_environment(&self, key: &str) -> Result<Option<Environment>>;
    async fn list_environments(&self, page: PageRequest) -> Result<Page<Environment>>;

    /// [`StoreError::Conflict`] when (environment, key) exists.
    async fn create_audience(&self, audience: &Audience) -> Result<()>;
    async fn get_audience(&self, environment: &str, key: &str) -> Result<Option<Audience>>;
    async fn list_audiences(&self, environment: &str, page: PageRequest) -> Result<Page<Audience>>;
    /// Replace an audience's name and rules. [`StoreError::NotFound`] when absent.
    async fn update_audience(&self, audience: &Audience) -> Result<Audience>;
    /// Delete unless a running experiment uses it; the check and the delete are atomic.
    async fn delete_audience(&self, environment: &str, key: &str) -> Result<AudienceDeletion>;

    async fn create_api_key(&self, key: &ApiKey) -> Result<()>;
    /// The key whose SHA-256 (hex) is `hash`, revoked or not.
    async fn find_api_key(&self, hash: &str) -> Result<Option<ApiKey>>;
    async fn list_api_keys(&self, page: PageRequest) -> Result<Page<ApiKey>>;
    /// Mark a key revoked; `false` when there is no such key.
    async fn revoke_api_key(&self, id: &str, at: OffsetDateTime) -> Result<bool>;
}

/// A shared store handle.
pub type DynStore = Arc<dyn Store>;
