//! What only the Redis cache does: its key and message format, failing fast when Redis is
//! down or stalled, starting without Redis, corrupt values, and its listener's lifetime.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

use verdict_cache::test_support::{
    PrefixCleanup, RedisServer, free_port, random_prefix, snapshot, test_redis,
};
use verdict_cache::{Cache, CacheError, Change, RedisCache, RedisCacheOptions};
use verdict_domain::WinnerSnapshot;

/// Far below the 5 s a caller could tolerate, far above the ~1 s the options allow.
const FAST: Duration = Duration::from_secs(2);

async fn raw(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("raw connection")
}

fn assert_unavailable<T: std::fmt::Debug>(result: Result<T, CacheError>, what: &str) {
    match result {
        Err(CacheError::Unavailable { .. }) => {}
        other => panic!("{what}: expected Unavailable, got {other:?}"),
    }
}

#[tokio::test]
async fn connecting_succeeds_while_redis_is_down_and_every_operation_fails_fast() {
    let url = format!("redis://127.0.0.1:{}", free_port());
    let started = Instant::now();
    let cache = RedisCache::connect(&url, &random_prefix()).expect("connect never waits for Redis");
    assert!(started.elapsed() < FAST);

    let mut local = cache.subscribe();
    let change = Change::Winner {
        snapshot: snapshot("production", "exp-1", 1),
    };
    let started = Instant::now();
    assert_unavailable(cache.ping().await, "ping");
    assert_unavailable(cache.get_snapshot("production", "exp-1").await, "get");
    assert_unavailable(
        cache
            .put_snapshot(&snapshot("production", "exp-1", 1))
            .await,
        "put",
    );
    assert_unavailable(cache.invalidate("production", "exp-1").await, "invalidate");
    assert_unavailable(cache.publish(&change).await, "publish");
    assert!(
        started.elapsed() < FAST * 5,
        "five operations took {:?}",
        started.elapsed()
    );
    assert_eq!(
        local
            .try_recv()
            .expect("this replica's subscribers still get the change"),
        change
    );
    assert!(!*cache.listener_state().borrow());
}

#[tokio::test]
async fn operations_fail_fast_when_redis_accepts_connections_but_never_answers() {
    // A "server" that accepts and then says nothing: a hung Redis or a black-holed network.
    let stalled = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("redis://{}", stalled.local_addr().unwrap());
    let holder = std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in stalled.incoming().take(8) {
            held.push(stream);
        }
        std::thread::sleep(Duration::from_secs(10));
    });

    let cache = RedisCache::connect(&url, &random_prefix()).unwrap();
    for attempt in 0..2 {
        let started = Instant::now();
        assert_unavailable(cache.get_snapshot("production", "exp-1").await, "get");
        // Ends at its 1.5 s operation deadline; a hung operation would wait for the server
        // to close the connection (10 s). The bound leaves room for a loaded machine.
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "attempt {attempt} took {:?}",
            started.elapsed()
        );
    }
    drop(cache);
    drop(holder); // detached; it exits on its own
}

#[tokio::test]
async fn a_cache_created_while_redis_was_down_works_once_redis_starts() {
    let port = free_port();
    let cache =
        RedisCache::connect(&format!("redis://127.0.0.1:{port}"), &random_prefix()).unwrap();
    assert_unavailable(cache.ping().await, "ping before start");

    let _server = RedisServer::start_on(port);
    let deadline = Instant::now() + Duration::from_secs(10);
    while cache.ping().await.is_err() {
        assert!(
            Instant::now() < deadline,
            "no PONG 10 s after Redis started"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let s = snapshot("production", "exp-1", 1);
    cache.put_snapshot(&s).await.unwrap();
    assert_eq!(
        cache.get_snapshot("production", "exp-1").await.unwrap(),
        Some(s)
    );
    assert!(cache.wait_listening(Duration::from_secs(10)).await);
}

#[tokio::test]
async fn snapshots_are_json_under_the_documented_key_and_changes_carry_their_type() {
    let redis = test_redis();
    let prefix = random_prefix();
    let _cleanup = PrefixCleanup {
        url: redis.url().to_owned(),
        prefix: prefix.clone(),
    };
    let cache = RedisCache::connect(redis.url(), &prefix).unwrap();
    let s = snapshot("production", "exp-1", 12);
    cache.put_snapshot(&s).await.unwrap();

    let key = format!("{prefix}snapshot:production:exp-1");
    assert_eq!(cache.snapshot_key("production", "exp-1"), key);
    let mut conn = raw(redis.url()).await;
    let stored: String = redis::cmd("GET")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    let json: serde_json::Value = serde_json::from_str(&stored).unwrap();
    assert_eq!(json["version"], 12);
    assert_eq!(serde_json::from_value::<WinnerSnapshot>(json).unwrap(), s);

    // The channel and the message shape other tools (and other replicas) rely on.
    assert_eq!(cache.changes_channel(), format!("{prefix}changes"));
    let mut pubsub = redis::Client::open(redis.url())
        .unwrap()
        .get_async_pubsub()
        .await
        .unwrap();
    pubsub.subscribe(cache.changes_channel()).await.unwrap();
    let change = Change::Status { snapshot: s };
    cache.publish(&change).await.unwrap();
    let message = tokio::time::timeout(Duration::from_secs(5), async {
        use futures::StreamExt;
        pubsub.on_message().next().await
    })
    .await
    .expect("a message within 5 s")
    .expect("a message");
    let body: serde_json::Value = serde_json::from_slice(message.get_payload_bytes()).unwrap();
    assert_eq!(body["change"]["type"], "status");
    assert_eq!(body["change"]["snapshot"]["version"], 12);
    assert!(body["origin"].is_string());
}

#[tokio::test]
async fn an_undecodable_value_is_corrupt_and_the_next_put_repairs_it() {
    let redis = test_redis();
    let prefix = random_prefix();
    let _cleanup = PrefixCleanup {
        url: redis.url().to_owned(),
        prefix: prefix.clone(),
    };
    let cache = RedisCache::connect(redis.url(), &prefix).unwrap();
    let key = cache.snapshot_key("production", "exp-1");
    let mut conn = raw(redis.url()).await;
    redis::cmd("SET")
        .arg(&key)
        .arg("{not json")
        .query_async::<()>(&mut conn)
        .await
        .unwrap();

    match cache.get_snapshot("production", "exp-1").await {
        Err(CacheError::Corrupt { key: reported, .. }) => assert_eq!(reported, key),
        other => panic!("expected Corrupt, got {other:?}"),
    }
    let s = snapshot("production", "exp-1", 1);
    cache.put_snapshot(&s).await.unwrap();
    assert_eq!(
        cache.get_snapshot("production", "exp-1").await.unwrap(),
        Some(s)
    );
}

#[tokio::test]
async fn a_message_that_is_not_a_change_is_skipped_and_later_changes_still_arrive() {
    let redis = test_redis();
    let prefix = random_prefix();
    let publisher = RedisCache::connect(redis.url(), &prefix).unwrap();
    let subscriber = RedisCache::connect(redis.url(), &prefix).unwrap();
    assert!(subscriber.wait_listening(Duration::from_secs(5)).await);
    let mut changes = subscriber.subscribe();

    let mut conn = raw(redis.url()).await;
    redis::cmd("PUBLISH")
        .arg(subscriber.changes_channel())
        .arg("hello")
        .query_async::<()>(&mut conn)
        .await
        .unwrap();
    let change = Change::Winner {
        snapshot: snapshot("production", "exp-1", 2),
    };
    publisher.publish(&change).await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), changes.recv())
        .await
        .expect("a change within 5 s")
        .unwrap();
    assert_eq!(got, change);
}

/// Subscribers Redis counts on a channel.
async fn subscribers(conn: &mut redis::aio::MultiplexedConnection, channel: &str) -> i64 {
    let (_, count): (String, i64) = redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg(channel)
        .query_async(conn)
        .await
        .unwrap();
    count
}

#[tokio::test]
async fn the_change_listener_stops_when_the_last_clone_is_dropped() {
    let redis = test_redis();
    let cache = RedisCache::connect(redis.url(), &random_prefix()).unwrap();
    assert!(cache.wait_listening(Duration::from_secs(5)).await);
    let channel = cache.changes_channel().to_owned();
    let mut conn = raw(redis.url()).await;
    assert_eq!(subscribers(&mut conn, &channel).await, 1);

    let clone = cache.clone();
    drop(cache);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        subscribers(&mut conn, &channel).await,
        1,
        "a clone still listens"
    );

    drop(clone);
    let deadline = Instant::now() + Duration::from_secs(5);
    while subscribers(&mut conn, &channel).await != 0 {
        assert!(
            Instant::now() < deadline,
            "still subscribed 5 s after the drop"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn dropping_caches_leaves_no_task_running() {
    let redis = test_redis();
    let runtime = tokio::runtime::Handle::current();
    let before = runtime.metrics().num_alive_tasks();

    let cache = RedisCache::connect(redis.url(), &random_prefix()).unwrap();
    let resilient = verdict_cache::ResilientCache::new(Arc::new(cache.clone()));
    assert!(cache.wait_listening(Duration::from_secs(5)).await);
    resilient.ping().await.unwrap();
    assert!(runtime.metrics().num_alive_tasks() > before);

    drop(resilient);
    drop(cache);
    let deadline = Instant::now() + Duration::from_secs(5);
    while runtime.metrics().num_alive_tasks() > before {
        assert!(
            Instant::now() < deadline,
            "{} tasks alive 5 s after dropping the caches, {before} before",
            runtime.metrics().num_alive_tasks()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn an_invalid_url_is_refused_at_connect() {
    match RedisCache::connect("not a redis url", "p:") {
        Err(CacheError::Unavailable { context, .. }) => assert!(context.contains("URL")),
        other => panic!("expected an error, got {other:?}"),
    }
}

#[tokio::test]
async fn the_change_listener_keeps_its_subscription_across_health_pings() {
    let redis = test_redis();
    let prefix = random_prefix();
    // Pings every 100 ms, each answer awaited up to 2 s (not the default 500 ms: one slow
    // answer on a loaded machine would look like a failure). An answer not recognised as
    // one would still time out, and reconnect, within the 3 s below.
    let options = RedisCacheOptions {
        listener_ping_interval: Duration::from_millis(100),
        response_timeout: Duration::from_secs(2),
        ..RedisCacheOptions::default()
    };
    let subscriber = RedisCache::connect_with(redis.url(), &prefix, options).unwrap();
    assert!(subscriber.wait_listening(Duration::from_secs(5)).await);
    let mut state = subscriber.listener_state();
    state.borrow_and_update();

    tokio::time::sleep(Duration::from_secs(3)).await; // about thirty pings
    assert!(
        !state.has_changed().unwrap(),
        "the listener reconnected: a ping answer was taken for a failure"
    );
    let mut changes = subscriber.subscribe();
    let publisher = RedisCache::connect(redis.url(), &prefix).unwrap();
    let change = Change::Winner {
        snapshot: snapshot("production", "exp-1", 1),
    };
    publisher.publish(&change).await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), changes.recv())
        .await
        .expect("a change within 5 s")
        .unwrap();
    assert_eq!(got, change);
}
