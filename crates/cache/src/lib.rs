//! The winner-snapshot cache of Verdict: the [`Cache`] trait, its implementations, and the
//! wrapper that keeps callers working when the cache backend is down.
//!
//! The cache holds one [`WinnerSnapshot`] per (environment, experiment): what
//! `GET /v1/experiments/{key}/winner` serves without touching the store. Every evaluation and
//! admin change writes it; a change is also *published* so that every API replica can push it
//! to its WebSocket subscribers (SPEC §6).
//!
//! The cache is never the source of truth, the store is. Two rules follow:
//! - **Versions only move forward.** A snapshot carries its experiment's version, and
//!   [`Cache::put_snapshot`] keeps the higher one: a late write of an older snapshot (a slow
//!   evaluator, a retried write) never replaces a newer one. On Redis the compare and the write
//!   are one Lua script, so concurrent writers cannot interleave.
//! - **A cache failure is never the caller's failure.** Redis commands fail fast (bounded
//!   connect and response timeouts, few reconnect retries, and a hard deadline per operation),
//!   connecting never waits for Redis, and [`ResilientCache`] turns failed writes into retried
//!   pending writes. Reads return [`CacheError::Unavailable`] and the caller reads the store
//!   instead: degraded but correct.
//!
//! This crate must not read the store, decide winners or know about HTTP: it only keeps and
//! forwards what it is given.
//!
//! # Layout
//! - [`error`]: [`CacheError`] (`Unavailable`, `Corrupt`).
//! - [`memory`]: [`MemoryCache`], a map and a broadcast channel, for the embedded
//!   single-process mode.
//! - [`redis_cache`]: [`RedisCache`], keys `{prefix}snapshot:{environment}:{experiment_id}`
//!   holding JSON, and pub/sub on `{prefix}changes` with a reconnecting listener task.
//! - [`resilient`]: [`ResilientCache`], hit/miss/error counters and retried pending writes
//!   around any [`Cache`].
//! - `test_support` (feature `test-support`): a throw-away `redis-server` per test, the Redis
//!   of the test run, and the contract suite every implementation passes.

pub mod error;
pub mod memory;
pub mod redis_cache;
pub mod resilient;

#[cfg(feature = "test-support")]
pub mod test_support;

use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use verdict_domain::{MetricsSnapshot, WinnerSnapshot};

pub use error::CacheError;
pub use memory::MemoryCache;
pub use redis_cache::{RedisCache, RedisCacheOptions};
pub use resilient::{CacheStats, ResilientCache};

/// A shared cache handle.
pub type DynCache = Arc<dyn Cache>;

/// How many published changes a slow subscriber may fall behind before it sees
/// [`broadcast::error::RecvError::Lagged`] (and should re-read what it shows).
pub const CHANGES_CAPACITY: usize = 1024;

/// The winner-snapshot cache. Cheap to share as [`DynCache`].
#[async_trait]
pub trait Cache: Send + Sync + std::fmt::Debug + 'static {
    /// A short name for logs and health output: `memory` or `redis`.
    fn backend(&self) -> &'static str;

    /// Succeeds when the cache can serve reads and writes right now.
    async fn ping(&self) -> Result<(), CacheError>;

    /// Cached snapshot of experiment `experiment_id` in `environment`.
    async fn get_snapshot(
        &self,
        environment: &str,
        experiment_id: &str,
    ) -> Result<Option<WinnerSnapshot>, CacheError>;

    /// Store `snapshot` (under its `environment` and `experiment_id`) unless the cache already
    /// holds a HIGHER version for that key: an older, late write never replaces a newer one;
    /// an equal version overwrites. Atomic: concurrent writers end with the highest version.
    async fn put_snapshot(&self, snapshot: &WinnerSnapshot) -> Result<(), CacheError>;

    /// Forget the snapshot of that key (no error when there is none). The version it had is
    /// forgotten too: any later write is accepted.
    async fn invalidate(&self, environment: &str, experiment_id: &str) -> Result<(), CacheError>;

    /// Announce a change to every replica, this one included (Redis: pub/sub on channel
    /// `{key_prefix}changes`; in-process: the local broadcast channel). Delivery is at most
    /// once and only to subscribers connected at the time.
    async fn publish(&self, change: &Change) -> Result<(), CacheError>;

    /// Changes published by any replica (including this one), from now on.
    fn subscribe(&self) -> broadcast::Receiver<Change>;
}

/// A change every replica should know about, e.g. to push it to WebSocket subscribers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Change {
    /// A winner was decided, overridden or cleared.
    Winner { snapshot: WinnerSnapshot },
    /// The experiment's status changed (started, paused, completed, archived).
    Status { snapshot: WinnerSnapshot },
    /// An aggregation run folded new events into a running experiment's rollups.
    Metrics { metrics: MetricsSnapshot },
}

impl Change {
    /// The experiment changed.
    pub fn experiment_id(&self) -> &str {
        match self {
            Change::Winner { snapshot } | Change::Status { snapshot } => &snapshot.experiment_id,
            Change::Metrics { metrics } => &metrics.experiment_id,
        }
    }

    /// The winner snapshot after a winner or status change; `None` for metrics.
    pub fn snapshot(&self) -> Option<&WinnerSnapshot> {
        match self {
            Change::Winner { snapshot } | Change::Status { snapshot } => Some(snapshot),
            Change::Metrics { .. } => None,
        }
    }
}

/// Tell the cache and every replica about the change from `before` to `after` (the same
/// experiment): write `after`'s snapshot, and publish [`Change::Winner`] when the winning
/// variant changed and [`Change::Status`] when the status did.
///
/// Called by every writer of winners and statuses (the API's admin routes, the evaluator)
/// after the store accepted the change. Never fails: the store is the source of truth, a
/// cache that cannot be written is logged (and, behind a [`ResilientCache`], retried), and a
/// reader that misses the snapshot rebuilds it from the store.
pub async fn announce(
    cache: &dyn Cache,
    before: &verdict_domain::Experiment,
    after: &verdict_domain::Experiment,
) {
    let snapshot = WinnerSnapshot::of(after);
    if let Err(e) = cache.put_snapshot(&snapshot).await {
        tracing::warn!(experiment = %after.key, error = %verdict_domain::ErrorChain(&e), "cannot write the winner snapshot");
    }
    let winner = |e: &verdict_domain::Experiment| e.winner.as_ref().map(|w| w.variant.clone());
    let mut changes = Vec::new();
    if winner(before) != winner(after) {
        changes.push(Change::Winner {
            snapshot: snapshot.clone(),
        });
    }
    if before.status != after.status {
        changes.push(Change::Status { snapshot });
    }
    for change in changes {
        if let Err(e) = cache.publish(&change).await {
            tracing::warn!(experiment = %after.key, error = %verdict_domain::ErrorChain(&e), "cannot publish a change");
        }
    }
}
