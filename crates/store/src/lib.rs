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
//! - [`contract`]: the adapter contract suite and the macro that instantiates it.

pub mod error;
pub mod model;
pub mod sqlite;

#[cfg(feature = "contract")]
pub mod contract;

use std::sync::Arc;

use async_trait::async_trait;
use verdict_domain::{Assignment, EventRecord, Experiment, NewEvent, Scope};

pub use error::StoreError;
pub use model::{AppendOutcome, AuditEntry, ExperimentFilter, Page, PageRequest, StatusChange};
pub use sqlite::SqliteStore;

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// The one persistence interface of Verdict. Cheap to share as `Arc<dyn Store>`.
#[async_trait]
pub trait Store: Send + Sync + std::fmt::Debug + 'static {
    /// A short name for logs (`sqlite`, `mongodb`).
    fn backend(&self) -> &'static str;

    /// Succeeds when the store can serve reads and writes.
    async fn ping(&self) -> Result<()>;

    /// Insert a new experiment. [`StoreError::Conflict`] when its key already exists in its
    /// (environment, organization) or its id is taken.
    async fn create_experiment(&self, experiment: &Experiment) -> Result<()>;

    /// The experiment of `scope` whose key or id is `key_or_id`.
    async fn get_experiment(&self, scope: &Scope, key_or_id: &str) -> Result<Option<Experiment>>;

    /// Experiments matching `filter`, oldest first.
    async fn list_experiments(
        &self,
        filter: &ExperimentFilter,
        page: PageRequest,
    ) -> Result<Page<Experiment>>;

    /// Replace an experiment's definition if its stored version is still
    /// `experiment.version`; returns the stored experiment with the version incremented.
    /// [`StoreError::VersionConflict`] otherwise. Status and winner are not changed here.
    async fn update_experiment(&self, experiment: &Experiment) -> Result<Experiment>;

    /// Atomically move an experiment from `change.from` to `change.to`, stamping
    /// `started_at` / `completed_at`, bumping the version and writing one audit entry.
    /// `Ok(None)` when the stored status is no longer `change.from` (someone else won).
    async fn transition_status(&self, change: &StatusChange) -> Result<Option<Experiment>>;

    /// The audit log of an experiment, newest first.
    async fn list_audit(&self, experiment_id: &str, page: PageRequest) -> Result<Page<AuditEntry>>;

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

    /// Append events; each is stored once per (experiment, event_id). The outcome of each
    /// input, in order, says whether it was stored or was a duplicate (of a stored event or
    /// of an earlier item in the same batch). All or nothing: on error nothing was written.
    async fn append_events(&self, events: &[NewEvent]) -> Result<Vec<AppendOutcome>>;

    /// Up to `limit` events with `seq > after_seq`, in ingestion order.
    async fn scan_events(&self, after_seq: u64, limit: usize) -> Result<Vec<EventRecord>>;
}

/// A shared store handle.
pub type DynStore = Arc<dyn Store>;
