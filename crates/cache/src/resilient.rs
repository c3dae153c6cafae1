//! [`ResilientCache`]: counters, quiet logging and retried writes around any [`Cache`].
//!
//! The API and the evaluator hold a `ResilientCache` around the configured cache so that a
//! Redis outage degrades them (reads go to the store) but never fails them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::{Notify, broadcast};
use tokio::task::AbortHandle;
use verdict_domain::WinnerSnapshot;

use crate::{Cache, CacheError, Change, DynCache};

/// How often pending writes are retried (besides right after any successful operation).
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(1);

/// How long, after the inner cache failed as unavailable, requests skip it (the circuit
/// breaker is open): reads and pings answer `Unavailable` at once, writes are queued. Then
/// one request probes it again (the others keep skipping) and its outcome closes the breaker
/// or opens it for another cool-down. The background retry task probes every
/// [`FLUSH_INTERVAL`] meanwhile, so a recovered backend is used again within about a second.
pub const BREAKER_COOL_DOWN: Duration = Duration::from_secs(2);

/// Counters of a [`ResilientCache`] since it was created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// `get_snapshot` calls answered with a snapshot.
    pub hits: u64,
    /// `get_snapshot` calls answered "not cached".
    pub misses: u64,
    /// Operations on the inner cache that failed (including failed retries of pending writes).
    pub errors: u64,
    /// Reads and pings answered `Unavailable` without asking the inner cache, because it was
    /// failing (the circuit breaker was open).
    pub skipped: u64,
    /// Keys with a write waiting to be retried.
    pub pending_writes: u64,
}

/// A [`Cache`] wrapper that callers can use without ever failing because the backend is down.
///
/// Behaviour, method by method:
/// - [`get_snapshot`](Cache::get_snapshot) passes the inner result through, counting a hit, a
///   miss or an error. An error is returned so that the caller falls back to the store.
///   While the circuit breaker is open (for [`BREAKER_COOL_DOWN`] after the inner cache
///   failed as unavailable) it answers `Unavailable` without asking the inner cache, so a
///   frozen backend costs one timeout, not one per request.
/// - [`put_snapshot`](Cache::put_snapshot) and [`invalidate`](Cache::invalidate) always return
///   `Ok` once the write is either applied or *queued*. A write is queued instead of tried
///   when the inner cache failed with [`CacheError::Unavailable`], when the last operation on
///   the inner cache failed (it is known to be down: no caller waits for a timeout), or when
///   the same key already has a queued write (so writes to one key stay in order). The queue
///   keeps, per key, the latest state to reach: "invalidated first" if an invalidation is
///   queued, then the highest-version snapshot queued since (an older snapshot never
///   replaces a newer queued one, as in the cache itself). A `Corrupt` error (the snapshot
///   could not be encoded) is returned, not queued.
/// - Queued writes are retried by a background task every [`FLUSH_INTERVAL`] and right after
///   any successful operation on the inner cache, until they succeed; a retry round stops at
///   the first `Unavailable` error. They live in memory only: a process that stops while
///   Redis is down loses them (the store still holds the truth, and the next evaluation
///   writes the snapshot again).
/// - [`publish`](Cache::publish) returns `Ok` even when the inner cache fails (counted and
///   logged): pub/sub is at most once anyway, and a change is not worth failing a request.
///   [`crate::RedisCache`] has already delivered it to this replica's own subscribers.
/// - [`ping`](Cache::ping) is the inner cache's, except that it answers `Unavailable` at once
///   while the breaker is open (readiness reports the cache failing without waiting).
/// - [`subscribe`](Cache::subscribe) and [`backend`](Cache::backend) are the inner cache's.
///
/// Errors are logged with `tracing::warn!` once when the inner cache starts failing and with
/// `tracing::info!` when it answers again; the errors in between are logged at debug level
/// and counted in [`CacheStats::errors`].
///
/// Clones share the counters and the queue. The retry task stops when the last clone is
/// dropped. Must be created within a Tokio runtime.
#[derive(Clone)]
pub struct ResilientCache {
    shared: Arc<Shared>,
}

type Key = (String, String);

/// The state queued for one key, replayed in this order.
#[derive(Debug, Clone, PartialEq)]
struct Pending {
    invalidate_first: bool,
    put: Option<WinnerSnapshot>,
    /// Changes on every merge: a retry only removes the entry it actually wrote.
    seq: u64,
}

enum Write<'a> {
    Put(&'a WinnerSnapshot),
    Invalidate,
}

struct Shared {
    inner: DynCache,
    hits: AtomicU64,
    misses: AtomicU64,
    errors: AtomicU64,
    /// The last operation on the inner cache failed.
    failing: AtomicBool,
    skipped: AtomicU64,
    /// The circuit breaker: 0 when closed, else the end of its cool-down in milliseconds
    /// since `epoch` (plus one, so that it is never 0).
    open_until: AtomicU64,
    cool_down: Duration,
    epoch: Instant,
    pending: Mutex<HashMap<Key, Pending>>,
    next_seq: AtomicU64,
    wake: Arc<Notify>,
    flusher: AbortHandle,
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.flusher.abort();
    }
}

impl std::fmt::Debug for ResilientCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResilientCache")
            .field("inner", &self.shared.inner)
            .field("stats", &self.stats())
            .finish()
    }
}

impl ResilientCache {
    /// Wrap `inner` and start the retry task (needs a Tokio runtime).
    pub fn new(inner: DynCache) -> Self {
        Self::with_cool_down(inner, BREAKER_COOL_DOWN)
    }

    /// [`ResilientCache::new`] with another circuit-breaker cool-down than
    /// [`BREAKER_COOL_DOWN`].
    pub fn with_cool_down(inner: DynCache, cool_down: Duration) -> Self {
        let wake = Arc::new(Notify::new());
        let shared = Arc::new_cyclic(|weak: &Weak<Shared>| {
            let flusher = tokio::spawn(flush_loop(weak.clone(), wake.clone())).abort_handle();
            Shared {
                inner,
                hits: AtomicU64::new(0),
                misses: AtomicU64::new(0),
                errors: AtomicU64::new(0),
                failing: AtomicBool::new(false),
                skipped: AtomicU64::new(0),
                open_until: AtomicU64::new(0),
                cool_down,
                epoch: Instant::now(),
                pending: Mutex::new(HashMap::new()),
                next_seq: AtomicU64::new(0),
                wake,
                flusher,
            }
        });
        Self { shared }
    }

    /// The wrapped cache.
    pub fn inner(&self) -> &DynCache {
        &self.shared.inner
    }

    pub fn stats(&self) -> CacheStats {
        let s = &self.shared;
        CacheStats {
            hits: s.hits.load(Ordering::Relaxed),
            misses: s.misses.load(Ordering::Relaxed),
            errors: s.errors.load(Ordering::Relaxed),
            skipped: s.skipped.load(Ordering::Relaxed),
            pending_writes: s.with_pending(|p| p.len()) as u64,
        }
    }

    /// Retry the queued writes now; returns how many keys are still pending. The background
    /// task does this on its own; this is for shutdown paths and tests.
    pub async fn flush(&self) -> usize {
        self.shared.flush().await;
        self.shared.with_pending(|p| p.len())
    }

    async fn write(&self, key: Key, write: Write<'_>) -> Result<(), CacheError> {
        let s = &self.shared;
        // Known down, or this key already has writes queued (keep them in order): queue.
        if s.failing.load(Ordering::Relaxed) || s.with_pending(|p| p.contains_key(&key)) {
            s.enqueue(key, &write);
            s.wake.notify_one();
            return Ok(());
        }
        let result = match &write {
            Write::Put(snapshot) => s.inner.put_snapshot(snapshot).await,
            Write::Invalidate => s.inner.invalidate(&key.0, &key.1).await,
        };
        match result {
            Ok(()) => {
                s.succeeded();
                Ok(())
            }
            Err(e) if e.is_unavailable() => {
                s.failed("write", &e);
                s.enqueue(key, &write);
                Ok(())
            }
            Err(e) => {
                s.failed("write", &e);
                Err(e)
            }
        }
    }
}

impl Shared {
    fn with_pending<T>(&self, f: impl FnOnce(&mut HashMap<Key, Pending>) -> T) -> T {
        // Never held across an await; every change under it is a single insert or remove.
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut pending)
    }

    fn enqueue(&self, key: Key, write: &Write<'_>) {
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        self.with_pending(|pending| {
            let entry = pending.entry(key).or_insert(Pending {
                invalidate_first: false,
                put: None,
                seq,
            });
            entry.seq = seq;
            match write {
                Write::Invalidate => {
                    entry.invalidate_first = true;
                    entry.put = None;
                }
                Write::Put(snapshot) => {
                    let newer = entry
                        .put
                        .as_ref()
                        .is_none_or(|queued| queued.version <= snapshot.version);
                    if newer {
                        entry.put = Some((*snapshot).clone());
                    }
                }
            }
        });
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX - 1) + 1
    }

    /// Whether a request may use the inner cache now: always while the breaker is closed;
    /// while it is open, only the first caller after the cool-down (the probe; the breaker
    /// stays open for the others until the probe's outcome closes or reopens it).
    fn admit(&self) -> bool {
        let until = self.open_until.load(Ordering::Acquire);
        if until == 0 {
            return true;
        }
        let now = self.now_ms();
        if now < until {
            return false;
        }
        let probe_until = now.saturating_add(millis(self.cool_down));
        self.open_until
            .compare_exchange(until, probe_until, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// The answer to a request the open breaker kept from the inner cache.
    fn skip(&self) -> CacheError {
        self.skipped.fetch_add(1, Ordering::Relaxed);
        CacheError::Unavailable {
            context: "failing; not asked again until its cool-down ends".to_owned(),
            source: None,
        }
    }

    fn succeeded(&self) {
        self.open_until.store(0, Ordering::Release);
        if self.failing.swap(false, Ordering::Relaxed) {
            tracing::info!(backend = self.inner.backend(), "cache answers again");
        }
        if self.with_pending(|p| !p.is_empty()) {
            self.wake.notify_one();
        }
    }

    fn failed(&self, operation: &str, error: &CacheError) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        if !error.is_unavailable() {
            // A bad value, not an outage: the backend still answers.
            tracing::warn!(backend = self.inner.backend(), operation, error = %verdict_domain::ErrorChain(error), "cache operation failed");
            return;
        }
        let reopen = self.now_ms().saturating_add(millis(self.cool_down));
        self.open_until.store(reopen, Ordering::Release);
        if self.failing.swap(true, Ordering::Relaxed) {
            tracing::debug!(backend = self.inner.backend(), operation, error = %verdict_domain::ErrorChain(error), "cache operation failed");
        } else {
            tracing::warn!(
                backend = self.inner.backend(),
                operation,
                error = %verdict_domain::ErrorChain(error),
                "cache operation failed; serving from the store and queueing writes until it answers again"
            );
        }
    }

    /// One retry round over the queued writes.
    async fn flush(&self) {
        let batch: Vec<(Key, Pending)> =
            self.with_pending(|p| p.iter().map(|(k, v)| (k.clone(), v.clone())).collect());
        if batch.is_empty() {
            if self.failing.load(Ordering::Relaxed) {
                // Nothing to write, but find out whether the backend is back.
                match self.inner.ping().await {
                    Ok(()) => self.succeeded(),
                    Err(e) => self.failed("ping", &e),
                }
            }
            return;
        }
        for (key, mut queued) in batch {
            if queued.invalidate_first {
                match self.inner.invalidate(&key.0, &key.1).await {
                    Ok(()) => {
                        queued.invalidate_first = false;
                        // Done with this step: a later retry must not invalidate again
                        // (it could delete a snapshot written since).
                        self.with_pending(|p| {
                            if let Some(entry) = p.get_mut(&key)
                                && entry.seq == queued.seq
                            {
                                entry.invalidate_first = false;
                            }
                        });
                    }
                    Err(e) => {
                        self.failed("retry invalidate", &e);
                        if e.is_unavailable() {
                            return;
                        }
                    }
                }
            }
            if let Some(snapshot) = &queued.put {
                match self.inner.put_snapshot(snapshot).await {
                    Ok(()) => {}
                    Err(e) if e.is_unavailable() => {
                        self.failed("retry put", &e);
                        return;
                    }
                    Err(e) => {
                        // Retrying cannot fix an unencodable snapshot: drop it.
                        self.failed("retry put", &e);
                    }
                }
            }
            self.with_pending(|p| {
                if p.get(&key).is_some_and(|entry| entry.seq == queued.seq) {
                    p.remove(&key);
                }
            });
            self.succeeded();
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

async fn flush_loop(shared: Weak<Shared>, wake: Arc<Notify>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(FLUSH_INTERVAL) => {}
            _ = wake.notified() => {}
        }
        // Upgrade only for the round: holding the cache between rounds would keep it alive.
        let Some(shared) = shared.upgrade() else {
            return;
        };
        shared.flush().await;
    }
}

#[async_trait]
impl Cache for ResilientCache {
    fn backend(&self) -> &'static str {
        self.shared.inner.backend()
    }

    async fn ping(&self) -> Result<(), CacheError> {
        let s = &self.shared;
        if !s.admit() {
            return Err(s.skip());
        }
        match s.inner.ping().await {
            Ok(()) => {
                s.succeeded();
                Ok(())
            }
            Err(e) => {
                s.failed("ping", &e);
                Err(e)
            }
        }
    }

    async fn get_snapshot(
        &self,
        environment: &str,
        experiment_id: &str,
    ) -> Result<Option<WinnerSnapshot>, CacheError> {
        let s = &self.shared;
        if !s.admit() {
            return Err(s.skip());
        }
        match s.inner.get_snapshot(environment, experiment_id).await {
            Ok(found) => {
                let counter = if found.is_some() { &s.hits } else { &s.misses };
                counter.fetch_add(1, Ordering::Relaxed);
                s.succeeded();
                Ok(found)
            }
            Err(e) => {
                s.failed("get", &e);
                Err(e)
            }
        }
    }

    async fn put_snapshot(&self, snapshot: &WinnerSnapshot) -> Result<(), CacheError> {
        let key = (snapshot.environment.clone(), snapshot.experiment_id.clone());
        self.write(key, Write::Put(snapshot)).await
    }

    async fn invalidate(&self, environment: &str, experiment_id: &str) -> Result<(), CacheError> {
        let key = (environment.to_owned(), experiment_id.to_owned());
        self.write(key, Write::Invalidate).await
    }

    async fn publish(&self, change: &Change) -> Result<(), CacheError> {
        let s = &self.shared;
        match s.inner.publish(change).await {
            Ok(()) => s.succeeded(),
            Err(e) => s.failed("publish", &e),
        }
        Ok(())
    }

    fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.shared.inner.subscribe()
    }
}
