//! The winner read path: snapshots from the cache, the store when the cache cannot answer.
//!
//! `GET …/winner` asks the cache for the experiment's snapshot. A hit at least as new as the
//! experiment this replica knows is served as is. A miss, or a snapshot older than what this
//! replica already read, is rebuilt from a fresh store read and written back (so the cache
//! repopulates itself, e.g. after Redis restarted empty). When the cache is unavailable the
//! snapshot is built from the store: degraded (one more store read) but correct, logged by
//! the cache wrapper and counted in [`Snapshots::fallbacks`].

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use verdict_cache::{Cache, DynCache, ResilientCache};
use verdict_domain::{Experiment, WinnerSnapshot};
use verdict_store::ExperimentStore;

use crate::assignments::ExperimentCache;
use crate::error::AppError;

/// The cache of winner snapshots as the API uses it.
#[derive(Debug, Clone)]
pub struct Snapshots {
    cache: ResilientCache,
    fallbacks: Arc<AtomicU64>,
}

impl Snapshots {
    /// Wrap `cache` in a [`ResilientCache`] (writes while it is down are retried later).
    pub fn new(cache: DynCache) -> Self {
        Self {
            cache: ResilientCache::new(cache),
            fallbacks: Arc::default(),
        }
    }

    /// The cache (for writers: [`verdict_cache::announce`]).
    pub fn cache(&self) -> &ResilientCache {
        &self.cache
    }

    /// Reads answered from the store because the cache was unavailable.
    pub fn fallbacks(&self) -> u64 {
        self.fallbacks.load(Ordering::Relaxed)
    }

    /// The snapshot of `known` (an experiment this replica resolved, possibly from its
    /// short-lived definition cache).
    pub async fn read(
        &self,
        store: &dyn ExperimentStore,
        known: &Experiment,
    ) -> Result<WinnerSnapshot, AppError> {
        let env = &known.scope.environment;
        match self.cache.get_snapshot(env, &known.id).await {
            Ok(Some(s)) if s.version >= known.version => Ok(s),
            Ok(_) => {
                let fresh = WinnerSnapshot::of(&self.fresh(store, known).await?);
                // Never fails (queued and retried when the cache is down).
                let _ = self.cache.put_snapshot(&fresh).await;
                Ok(fresh)
            }
            Err(_) => {
                self.fallbacks.fetch_add(1, Ordering::Relaxed);
                Ok(WinnerSnapshot::of(&self.fresh(store, known).await?))
            }
        }
    }

    async fn fresh(
        &self,
        store: &dyn ExperimentStore,
        known: &Experiment,
    ) -> Result<Experiment, AppError> {
        Ok(store
            .get_experiment(&known.scope, &known.id)
            .await?
            .unwrap_or_else(|| known.clone()))
    }

    /// Keep `definitions` fresh across replicas: drop them whenever any replica announces a
    /// change of an experiment (or when this replica fell behind the change stream); new
    /// metrics change no definition. Runs until the cache is dropped.
    pub fn forget_on_change(&self, definitions: Arc<ExperimentCache>) {
        let mut changes = self.cache.subscribe();
        tokio::spawn(async move {
            use tokio::sync::broadcast::error::RecvError;
            loop {
                match changes.recv().await {
                    Ok(verdict_cache::Change::Metrics { .. }) => {}
                    Ok(_) | Err(RecvError::Lagged(_)) => definitions.clear(),
                    Err(RecvError::Closed) => return,
                }
            }
        });
    }
}
