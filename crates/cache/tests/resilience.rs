//! Redis going away and coming back: callers of [`ResilientCache`] keep working, queued
//! writes land once Redis is back, and pub/sub resumes. Each test runs its own `redis-server`
//! so that it can kill and restart it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use verdict_cache::test_support::{RedisServer, free_port, random_prefix, snapshot};
use verdict_cache::{Cache, CacheError, Change, MemoryCache, RedisCache, ResilientCache};
use verdict_domain::WinnerSnapshot;

/// Far below the 5 s a caller could tolerate, far above the ~1 s the options allow.
const FAST: Duration = Duration::from_secs(2);
const RECOVERY_LIMIT: Duration = Duration::from_secs(15);

/// Poll with a fresh client (sharing nothing with the cache under test) until the key holds
/// `expected`.
async fn wait_until_stored(url: &str, prefix: &str, expected: &WinnerSnapshot) {
    let fresh = RedisCache::connect(url, prefix).unwrap();
    let deadline = Instant::now() + RECOVERY_LIMIT;
    loop {
        let held = fresh
            .get_snapshot(&expected.environment, &expected.experiment_id)
            .await;
        if matches!(&held, Ok(Some(s)) if s == expected) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{}/{} never became version {} (last read: {held:?})",
            expected.environment,
            expected.experiment_id,
            expected.version
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn wait_for_no_pending(cache: &ResilientCache) {
    let deadline = Instant::now() + RECOVERY_LIMIT;
    while cache.stats().pending_writes > 0 {
        assert!(
            Instant::now() < deadline,
            "writes still pending: {:?}",
            cache.stats()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_degrades_reads_queues_writes_and_then_everything_recovers() {
    let mut server = RedisServer::start();
    let url = server.url();
    let prefix = random_prefix();

    let replica_a = RedisCache::connect(&url, &prefix).unwrap();
    let replica_b = RedisCache::connect(&url, &prefix).unwrap();
    assert!(replica_a.wait_listening(Duration::from_secs(5)).await);
    assert!(replica_b.wait_listening(Duration::from_secs(5)).await);
    let cache = ResilientCache::new(Arc::new(replica_a.clone()));
    // Subscribed before the restart, kept across it.
    let mut on_b = replica_b.subscribe();

    let v1 = snapshot("production", "exp-1", 1);
    cache.put_snapshot(&v1).await.unwrap();
    assert_eq!(
        cache.get_snapshot("production", "exp-1").await.unwrap(),
        Some(v1)
    );
    assert_eq!(cache.stats().hits, 1);

    server.kill();

    let started = Instant::now();
    match cache.get_snapshot("production", "exp-1").await {
        Err(CacheError::Unavailable { .. }) => {}
        other => panic!("expected Unavailable with Redis killed, got {other:?}"),
    }
    assert!(started.elapsed() < FAST, "get took {:?}", started.elapsed());

    let v3 = snapshot("production", "exp-1", 3);
    let v2 = snapshot("production", "exp-1", 2);
    let started = Instant::now();
    cache
        .put_snapshot(&v3)
        .await
        .expect("put is queued, not failed");
    cache
        .put_snapshot(&v2)
        .await
        .expect("put is queued, not failed");
    assert!(
        started.elapsed() < FAST,
        "puts took {:?}",
        started.elapsed()
    );
    let stats = cache.stats();
    assert_eq!(stats.pending_writes, 1, "{stats:?}");
    assert!(stats.errors >= 1, "{stats:?}");
    // Publishing while down does not fail the caller either.
    cache
        .publish(&Change::Winner {
            snapshot: v3.clone(),
        })
        .await
        .unwrap();

    server.restart();

    // The queued write lands, keeping the highest version queued.
    wait_until_stored(&url, &prefix, &v3).await;
    wait_for_no_pending(&cache).await;
    assert_eq!(
        cache.get_snapshot("production", "exp-1").await.unwrap(),
        Some(v3)
    );

    // Pub/sub resumes: a change published by A reaches B's subscriber from before the
    // restart. B resubscribes with backoff, so publish until one arrives.
    let deadline = Instant::now() + RECOVERY_LIMIT;
    let mut version = 100;
    let received = loop {
        assert!(
            Instant::now() < deadline,
            "no change reached the subscriber after the restart"
        );
        version += 1;
        cache
            .publish(&Change::Status {
                snapshot: snapshot("production", "exp-1", version),
            })
            .await
            .unwrap();
        match tokio::time::timeout(Duration::from_millis(300), on_b.recv()).await {
            Ok(Ok(change)) => break change,
            Ok(Err(e)) => panic!("subscription failed: {e}"),
            Err(_) => continue,
        }
    };
    assert!(
        matches!(&received, Change::Status { snapshot } if snapshot.version > 100),
        "got {received:?}"
    );
    assert!(*replica_b.listener_state().borrow());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_queued_while_redis_is_down_keep_the_highest_version_and_their_order() {
    let port = free_port();
    let url = format!("redis://127.0.0.1:{port}");
    let prefix = random_prefix();
    let cache = ResilientCache::new(Arc::new(RedisCache::connect(&url, &prefix).unwrap()));

    let started = Instant::now();
    // exp-1: an older write after a newer one is not queued over it.
    cache
        .put_snapshot(&snapshot("production", "exp-1", 5))
        .await
        .unwrap();
    cache
        .put_snapshot(&snapshot("production", "exp-1", 3))
        .await
        .unwrap();
    // exp-2: put, invalidate, put of a LOWER version: the invalidation comes first, so the
    // lower version is what must end up stored (keeping only the highest would give v4).
    cache
        .put_snapshot(&snapshot("production", "exp-2", 4))
        .await
        .unwrap();
    cache.invalidate("production", "exp-2").await.unwrap();
    cache
        .put_snapshot(&snapshot("production", "exp-2", 2))
        .await
        .unwrap();
    // exp-3: put then invalidate: nothing stored.
    cache
        .put_snapshot(&snapshot("staging", "exp-3", 1))
        .await
        .unwrap();
    cache.invalidate("staging", "exp-3").await.unwrap();
    assert!(
        started.elapsed() < FAST * 2,
        "seven writes took {:?}",
        started.elapsed()
    );
    assert_eq!(cache.stats().pending_writes, 3, "{:?}", cache.stats());

    let _server = RedisServer::start_on(port);
    wait_until_stored(&url, &prefix, &snapshot("production", "exp-1", 5)).await;
    wait_until_stored(&url, &prefix, &snapshot("production", "exp-2", 2)).await;
    wait_for_no_pending(&cache).await;
    assert_eq!(cache.get_snapshot("staging", "exp-3").await.unwrap(), None);
}

#[tokio::test]
async fn stats_count_hits_misses_and_errors() {
    let cache = ResilientCache::new(Arc::new(MemoryCache::new()));
    assert_eq!(
        cache.get_snapshot("production", "exp-1").await.unwrap(),
        None
    );
    cache
        .put_snapshot(&snapshot("production", "exp-1", 1))
        .await
        .unwrap();
    cache.get_snapshot("production", "exp-1").await.unwrap();
    cache.get_snapshot("production", "exp-1").await.unwrap();
    let stats = cache.stats();
    assert_eq!((stats.hits, stats.misses, stats.errors), (2, 1, 0));
    assert_eq!(stats.pending_writes, 0);
    assert_eq!(cache.backend(), "memory");

    let url = format!("redis://127.0.0.1:{}", free_port());
    let down = ResilientCache::new(Arc::new(RedisCache::connect(&url, "p:").unwrap()));
    assert!(down.get_snapshot("production", "exp-1").await.is_err());
    assert!(down.ping().await.is_err());
    let stats = down.stats();
    assert_eq!((stats.hits, stats.misses), (0, 0));
    // The failed read opened the breaker: the ping was answered without asking Redis.
    assert!(stats.errors >= 1, "{stats:?}");
    assert_eq!(stats.skipped, 1, "{stats:?}");
    assert_eq!(down.backend(), "redis");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_redis_is_frozen_reads_skip_it_after_one_timeout_and_use_it_again_once_it_answers() {
    let mut server = RedisServer::start();
    let url = server.url();
    let redis = RedisCache::connect(&url, &random_prefix()).unwrap();
    let cache = ResilientCache::new(Arc::new(redis));
    let v1 = snapshot("production", "exp-1", 1);
    cache.put_snapshot(&v1).await.unwrap();
    assert_eq!(
        cache.get_snapshot("production", "exp-1").await.unwrap(),
        Some(v1.clone())
    );

    // Frozen: the connection stays up, and Redis answers nothing. The first read waits for
    // the command's timeout.
    server.freeze();
    let started = Instant::now();
    let first = cache.get_snapshot("production", "exp-1").await;
    let one_timeout = started.elapsed();
    assert!(
        matches!(first, Err(CacheError::Unavailable { .. })),
        "{first:?}"
    );

    // The breaker is open: the next reads and the readiness ping do not wait for Redis.
    let skipped_before = cache.stats().skipped;
    let started = Instant::now();
    for _ in 0..10 {
        let read = cache.get_snapshot("production", "exp-1").await;
        assert!(
            matches!(read, Err(CacheError::Unavailable { .. })),
            "{read:?}"
        );
    }
    assert!(
        matches!(cache.ping().await, Err(CacheError::Unavailable { .. })),
        "ping while open"
    );
    assert!(
        started.elapsed() < one_timeout,
        "10 reads and a ping took {:?}, one timed-out read {one_timeout:?}",
        started.elapsed()
    );
    assert_eq!(
        cache.stats().skipped - skipped_before,
        11,
        "{:?}",
        cache.stats()
    );
    // Writes meanwhile are queued, not waited for.
    let v2 = snapshot("production", "exp-1", 2);
    cache.put_snapshot(&v2).await.unwrap();

    // Thawed, Redis is asked again: the queued write lands and reads are served by it.
    server.thaw();
    let deadline = Instant::now() + RECOVERY_LIMIT;
    while cache.get_snapshot("production", "exp-1").await.is_err() {
        assert!(
            Instant::now() < deadline,
            "Redis was never used again: {:?}",
            cache.stats()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    wait_for_no_pending(&cache).await;
    let hits_before = cache.stats().hits;
    assert_eq!(
        cache.get_snapshot("production", "exp-1").await.unwrap(),
        Some(v2)
    );
    assert_eq!(cache.stats().hits, hits_before + 1);
    cache.ping().await.expect("ping once Redis answers again");
}
