//! Persistence for Verdict: one narrow trait per aggregate, their union [`Store`], the SQLite
//! and MongoDB adapters, and the contract suite every adapter passes.
//!
//! Everything durable goes through these traits: experiments (with optimistic versions and
//! an atomic status compare-and-set), assignments (get-or-create, atomic under
//! concurrency), raw events (batch append, idempotent on `event_id`, scanned in ingestion
//! order), rollups, job leases, webhook deliveries, environments, audiences, API keys and published
//! config snapshots.
//! The rest of Verdict holds an `Arc<dyn Store>` ([`DynStore`]) and never sees a driver; a
//! consumer that needs one aggregate only can take the narrow trait object instead, by
//! upcasting (`let hooks: Arc<dyn WebhookStore> = store;`).
//!
//! Adapters must not make decisions the domain makes (validation, transitions allowed,
//! bucketing, when an endpoint is disabled); they only make those decisions *atomic*.
//! Every adapter runs the same `contract` suite (feature `contract`), so behaviour cannot
//! drift between backends.
//!
//! # Layout
//! - The traits, one file per aggregate (`rollup`, `jobs` and `webhooks` with their own
//!   types):
//!   [`experiments`] ([`ExperimentStore`]: experiments, status, winner, audit, outbox),
//!   [`assignments`] ([`AssignmentStore`]), [`events`] ([`EventStore`]: raw events and the
//!   figures counted from them), [`rollup`] ([`RollupStore`]: rollups, their figures,
//!   subject value quantiles, buckets, evaluation state and history), [`jobs`]
//!   ([`JobStore`]: leases, run records, retention deletes), [`webhooks`] ([`WebhookStore`]),
//!   [`environments`]
//!   ([`EnvironmentStore`]), [`audiences`] ([`AudienceStore`]), [`keys`] ([`KeyStore`]), [`publications`]
//!   ([`PublicationStore`]: config snapshot versions).
//! - [`model`]: the other traits' request/response types (pages, filters, status
//!   changes, attribution, figures, millisecond times).
//! - [`error`]: [`StoreError`], the errors callers can act on (conflict, retryable, …),
//!   each keeping its cause as its `source()`.
//! - [`sqlite`]: the embedded default, one SQLite file in WAL mode. `sqlite/mod.rs` holds
//!   the store type, its connections, the writer thread and the shared helpers; one file
//!   per aggregate holds that trait's `impl`. The schema is `migrations/*.sql`.
//! - [`mongo`]: MongoDB, laid out the same way.
//! - `contract` (feature `contract`): the adapter contract suite, one file per aggregate,
//!   and the `store_contract_suite!` macro that instantiates all of it for an adapter.

pub mod assignments;
pub mod audiences;
pub mod environments;
pub mod error;
pub mod events;
pub mod experiments;
pub mod jobs;
pub mod keys;
pub mod model;
pub mod mongo;
pub mod publications;
pub mod rollup;
pub mod sqlite;
pub mod webhooks;

#[cfg(feature = "contract")]
pub mod contract;

use std::sync::Arc;

use async_trait::async_trait;
use verdict_domain::Assignment;

pub use assignments::{AssignmentStore, Exposure};
pub use audiences::AudienceStore;
pub use environments::EnvironmentStore;
pub use error::StoreError;
pub use events::EventStore;
pub use experiments::ExperimentStore;
pub use jobs::{
    Fence, JobStore, Lease, LeaseGrant, RetentionFilter, RunOutcome, RunRecord, Trigger,
};
pub use keys::KeyStore;
pub use model::{
    AppendOutcome, Attribution, AudienceDeletion, AuditEntry, Deletion, ExperimentFilter, Page,
    PageRequest, Purge, StatusChange, SubjectRecord, TimeRange, VariantCounts, WinnerChange,
};
pub use mongo::MongoStore;
pub use publications::{NewPublication, PublicationStore};
pub use rollup::{
    ArmPoint, Bucket, EvaluationPoint, EventCount, Granularity, RepairOutcome, RollupReport,
    RollupStore, SegmentCounts,
};
pub use sqlite::SqliteStore;
pub use webhooks::{
    Attempt, AttemptResult, Delivery, DeliveryNext, DeliveryStatus, DeliveryUpdate, Endpoint,
    EndpointPatch, WebhookStore,
};

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Every aggregate's persistence in one object: what an adapter implements and what the
/// application holds (`Arc<dyn Store>`, cheap to share). Code that needs one aggregate
/// only should take that trait (e.g. `Arc<dyn WebhookStore>`, upcast from this).
#[async_trait]
pub trait Store:
    ExperimentStore
    + AssignmentStore
    + EventStore
    + RollupStore
    + JobStore
    + WebhookStore
    + EnvironmentStore
    + AudienceStore
    + KeyStore
    + PublicationStore
    + Send
    + Sync
    + std::fmt::Debug
    + 'static
{
    /// A short name for logs (`sqlite`, `mongodb`).
    fn backend(&self) -> &'static str;

    /// Succeeds when the store can serve reads and writes.
    async fn ping(&self) -> Result<()>;

    /// [`AssignmentStore::get_or_create_assignment`], then `exposure` of the stored
    /// assignment appended (a duplicate when its id is stored already). SQLite writes both
    /// in one transaction (of one group commit); by default (MongoDB) they are written one
    /// after the other, which is as safe because the caller derives the event id from the
    /// subject: a retry writes what is missing and nothing twice.
    async fn get_or_create_exposed_assignment(
        &self,
        assignment: &Assignment,
        exposure: &Exposure,
    ) -> Result<(Assignment, bool)> {
        let (kept, created) = self.get_or_create_assignment(assignment).await?;
        Exposure::check(&self.append_events(vec![exposure.of(&kept)]).await?)?;
        Ok((kept, created))
    }
}

/// A shared store handle.
pub type DynStore = Arc<dyn Store>;
