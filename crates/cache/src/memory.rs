//! [`MemoryCache`]: the in-process cache of the embedded single-process mode.
//!
//! A map behind a lock and a broadcast channel. With one process there is no other replica to
//! tell, so "publish" is a local broadcast.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use async_trait::async_trait;
use tokio::sync::broadcast;
use verdict_domain::WinnerSnapshot;

use crate::{CHANGES_CAPACITY, Cache, CacheError, Change};

type Key = (String, String);

/// In-process [`Cache`]. Clones share the same map and channel. It never fails.
#[derive(Clone)]
pub struct MemoryCache {
    inner: Arc<Inner>,
}

struct Inner {
    snapshots: RwLock<HashMap<Key, WinnerSnapshot>>,
    changes: broadcast::Sender<Change>,
}

impl MemoryCache {
    pub fn new() -> Self {
        let (changes, _) = broadcast::channel(CHANGES_CAPACITY);
        Self {
            inner: Arc::new(Inner {
                snapshots: RwLock::new(HashMap::new()),
                changes,
            }),
        }
    }

    /// How many snapshots are cached.
    pub fn len(&self) -> usize {
        self.read(|map| map.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    // The lock is never held across an await or a call that could panic halfway through a
    // change, so a poisoned lock still guards a consistent map: carry on with it.
    fn read<T>(&self, f: impl FnOnce(&HashMap<Key, WinnerSnapshot>) -> T) -> T {
        let map = self
            .inner
            .snapshots
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        f(&map)
    }

    fn write<T>(&self, f: impl FnOnce(&mut HashMap<Key, WinnerSnapshot>) -> T) -> T {
        let mut map = self
            .inner
            .snapshots
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        f(&mut map)
    }
}

impl Default for MemoryCache {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for MemoryCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryCache")
            .field("snapshots", &self.len())
            .field("subscribers", &self.inner.changes.receiver_count())
            .finish()
    }
}

fn key(environment: &str, experiment_id: &str) -> Key {
    (environment.to_owned(), experiment_id.to_owned())
}

#[async_trait]
impl Cache for MemoryCache {
    fn backend(&self) -> &'static str {
        "memory"
    }

    async fn ping(&self) -> Result<(), CacheError> {
        Ok(())
    }

    async fn get_snapshot(
        &self,
        environment: &str,
        experiment_id: &str,
    ) -> Result<Option<WinnerSnapshot>, CacheError> {
        Ok(self.read(|map| map.get(&key(environment, experiment_id)).cloned()))
    }

    async fn put_snapshot(&self, snapshot: &WinnerSnapshot) -> Result<(), CacheError> {
        self.write(|map| {
            let slot = map.entry(key(&snapshot.environment, &snapshot.experiment_id));
            match slot {
                std::collections::hash_map::Entry::Occupied(mut held) => {
                    if held.get().version <= snapshot.version {
                        held.insert(snapshot.clone());
                    }
                }
                std::collections::hash_map::Entry::Vacant(free) => {
                    free.insert(snapshot.clone());
                }
            }
        });
        Ok(())
    }

    async fn invalidate(&self, environment: &str, experiment_id: &str) -> Result<(), CacheError> {
        self.write(|map| map.remove(&key(environment, experiment_id)));
        Ok(())
    }

    async fn publish(&self, change: &Change) -> Result<(), CacheError> {
        // An error only means nobody is subscribed right now: nothing to deliver.
        let _ = self.inner.changes.send(change.clone());
        Ok(())
    }

    fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.inner.changes.subscribe()
    }
}
