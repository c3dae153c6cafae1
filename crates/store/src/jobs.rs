//! What the job framework keeps in the store: job leases with fencing tokens, run records,
//! and the bounded deletes of retention.
//!
//! A **lease** makes one replica the only runner of a job until it expires. Each grant
//! increments the job's **fencing token**; writes a run makes carry its [`Fence`] and the
//! store rejects them ([`crate::StoreError::Fenced`]) once a newer grant exists, so a holder that
//! was paused past its expiry (GC, swap, a stopped VM) cannot overwrite its successor's
//! work. A grant for a scheduled tick also records the tick: a second replica firing on the
//! same tick after the first released the lease is told the tick already ran, so each
//! scheduled tick runs once across replicas.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::{Page, PageRequest, Purge, Result};

/// A granted lease on one job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub job: String,
    pub owner: String,
    /// Strictly increasing per job across all grants.
    pub token: u64,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
}

impl Lease {
    /// The fence the run's writes carry.
    pub fn fence(&self) -> Fence {
        Fence {
            job: self.job.clone(),
            token: self.token,
        }
    }
}

/// Proof of holding the newest lease of `job`, checked by fenced writes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fence {
    pub job: String,
    pub token: u64,
}

/// The answer to [`JobStore::acquire_lease`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseGrant {
    Acquired(Lease),
    /// Another holder's lease has not expired.
    Held {
        owner: String,
        expires_at: OffsetDateTime,
    },
    /// The scheduled tick asked for already ran (on this or another replica).
    AlreadyRan,
}

/// Who started a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Trigger {
    Schedule,
    Http,
    Cli,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Schedule => "schedule",
            Trigger::Http => "http",
            Trigger::Cli => "cli",
        }
    }
}

/// How a run ended (or that it has not yet).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum RunOutcome {
    Running,
    Succeeded,
    Failed,
    SkippedLeaseHeld,
}

impl RunOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            RunOutcome::Running => "running",
            RunOutcome::Succeeded => "succeeded",
            RunOutcome::Failed => "failed",
            RunOutcome::SkippedLeaseHeld => "skipped_lease_held",
        }
    }
}

/// One run of a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RunRecord {
    pub id: String,
    pub job: String,
    pub trigger: Trigger,
    /// The process that ran (or skipped) it.
    pub owner: String,
    /// The scheduled tick a `schedule` run was for.
    #[serde(with = "time::serde::rfc3339::option", default)]
    pub tick: Option<OffsetDateTime>,
    /// The fencing token of the lease it ran under.
    pub fencing_token: Option<u64>,
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option", default)]
    pub finished_at: Option<OffsetDateTime>,
    pub outcome: RunOutcome,
    /// The job's report: its counts (events rolled up, buckets written, decisions, rows
    /// deleted, deliveries, …) and details (e.g. each experiment's evaluation outcome);
    /// `null` while running and when the run failed.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub report: serde_json::Value,
    pub error: Option<String>,
}

/// Which raw events, buckets, evaluation history or records a retention delete may remove.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionFilter {
    /// Only what is older than this.
    pub before: OffsetDateTime,
    /// Only this experiment (an override); `None`: every experiment not in `except`.
    pub only: Option<String>,
    /// Experiments left to their own override.
    pub except: Vec<String>,
}

/// Leases, run records and retention deletes.
#[async_trait]
pub trait JobStore: Send + Sync + std::fmt::Debug {
    /// Grant `owner` the lease on `job` until `now + ttl` unless another holder's lease is
    /// unexpired, or (with `tick`) that scheduled tick was already granted. Each grant
    /// increments the job's fencing token. Atomic across processes.
    async fn acquire_lease(
        &self,
        job: &str,
        owner: &str,
        ttl: std::time::Duration,
        now: OffsetDateTime,
        tick: Option<OffsetDateTime>,
    ) -> Result<LeaseGrant>;

    /// Extend a lease still held (same owner and token, any expiry): `None` when lost.
    async fn renew_lease(
        &self,
        lease: &Lease,
        ttl: std::time::Duration,
        now: OffsetDateTime,
    ) -> Result<Option<Lease>>;

    /// End a lease early (no-op when it was lost meanwhile). The token stays.
    async fn release_lease(&self, lease: &Lease, now: OffsetDateTime) -> Result<()>;

    /// The current lease of `job`, expired or not.
    async fn get_lease(&self, job: &str) -> Result<Option<Lease>>;

    /// Insert or replace a run record (by id).
    async fn put_run(&self, run: &RunRecord) -> Result<()>;
    async fn get_run(&self, id: &str) -> Result<Option<RunRecord>>;
    /// Runs of `job` (all jobs when `None`), newest first.
    async fn list_runs(&self, job: Option<&str>, page: PageRequest) -> Result<Page<RunRecord>>;

    /// Delete up to `limit` raw events matching `filter` that are also at or below the
    /// rollup watermark (never an event not yet aggregated), oldest first, by receipt time.
    /// [`crate::StoreError::Fenced`] (nothing deleted) when `fence` is no longer the newest.
    async fn delete_events(
        &self,
        filter: &RetentionFilter,
        limit: usize,
        fence: Option<&Fence>,
    ) -> Result<u64>;

    /// Delete up to `limit` buckets starting before `filter.before`.
    async fn delete_buckets(
        &self,
        filter: &RetentionFilter,
        limit: usize,
        fence: Option<&Fence>,
    ) -> Result<u64>;

    /// Delete up to `limit` points of evaluation history ([`crate::EvaluationPoint`])
    /// evaluated before `filter.before`, oldest first.
    async fn delete_evaluation_history(
        &self,
        filter: &RetentionFilter,
        limit: usize,
        fence: Option<&Fence>,
    ) -> Result<u64>;

    /// Delete up to `limit` webhook attempt-log entries older than `before` whose delivery
    /// is finished (delivered or failed; a pending delivery keeps its log), oldest first.
    async fn delete_webhook_attempts(
        &self,
        before: OffsetDateTime,
        limit: usize,
        fence: Option<&Fence>,
    ) -> Result<u64>;

    /// Deleted experiments whose data is still being removed, oldest deletion first.
    async fn pending_purges(&self) -> Result<Vec<Purge>>;

    /// Delete up to `limit` rows of a deleted experiment's data (raw events first, then
    /// buckets, per-subject rollups, assignments, QA overrides, evaluation state and
    /// history); the rows
    /// deleted, 0 once none is left. Deletes nothing while an experiment with that id exists
    /// (a purge queued by a deletion that did not happen).
    async fn purge_experiment_data(
        &self,
        experiment_id: &str,
        limit: usize,
        fence: Option<&Fence>,
    ) -> Result<u64>;

    /// Forget a purge: its experiment's data is gone.
    async fn finish_purge(&self, experiment_id: &str, fence: Option<&Fence>) -> Result<()>;

    /// Delete up to `limit` finished run records that finished before `before`.
    async fn delete_runs(
        &self,
        before: OffsetDateTime,
        limit: usize,
        fence: Option<&Fence>,
    ) -> Result<u64>;

    /// Delete up to `limit` config snapshot versions ([`crate::PublicationStore`]) older
    /// than each scope's newest `keep` (at least 1: a scope's latest version is never
    /// deleted, and numbering goes on from it), oldest first.
    async fn delete_old_publications(
        &self,
        keep: u64,
        limit: usize,
        fence: Option<&Fence>,
    ) -> Result<u64>;
}
