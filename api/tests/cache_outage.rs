//! Redis killed under a running server (`cache = "redis"`, a `redis-server` this test starts
//! and stops): winner reads keep answering correctly from the store, changes made meanwhile
//! are served, `/readyz` reports the cache unavailable without failing, and once Redis is
//! back the cache is repopulated with the current snapshot.

mod common;

use std::time::{Duration, Instant};

use common::{ab_experiment, spawn_app_with};
use reqwest::StatusCode;
use serde_json::json;
use verdict_cache::test_support::{RedisServer, random_prefix};
use verdict_cache::{Cache, RedisCache};

const RECOVERY_LIMIT: Duration = Duration::from_secs(15);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn winner_reads_survive_a_redis_outage_and_the_cache_repopulates() {
    let mut redis = RedisServer::start();
    let url = redis.url();
    let prefix = random_prefix();
    let app = spawn_app_with(&[
        ("VERDICT_CACHE", "redis"),
        ("VERDICT_REDIS__URL", &url),
        ("VERDICT_REDIS__KEY_PREFIX", &prefix),
    ])
    .await;
    // An independent client on the same Redis and prefix: what any replica would read.
    let observer = RedisCache::connect(&url, &prefix).unwrap();
    let client = app.create_key(&["client"]).await;

    let created = app.create_experiment(&ab_experiment("checkout")).await;
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(app.activate("checkout").await.0, StatusCode::OK);
    let override_winner = |variant: &'static str| {
        let app = &app;
        async move {
            let (status, body) = app
                .post_json(
                    "/v1/experiments/checkout/winner",
                    &app.admin_key,
                    &json!({"variant": variant, "complete": false}),
                )
                .await;
            assert_eq!(status, StatusCode::OK, "{body}");
            body
        }
    };
    override_winner("treatment").await;
    let winner = || async {
        let (status, body) = app.get("/v1/experiments/checkout/winner", &client).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    };
    assert_eq!(winner().await["winner"], "treatment");
    let cached = observer
        .get_snapshot("production", &id)
        .await
        .unwrap()
        .expect("the override wrote the snapshot to Redis");
    assert_eq!(cached.winner.as_deref(), Some("treatment"));

    // Redis goes away.
    redis.kill();
    assert!(observer.get_snapshot("production", &id).await.is_err());
    for _ in 0..3 {
        let started = Instant::now();
        let body = winner().await;
        assert_eq!(body["winner"], "treatment", "{body}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "a read waited {:?} for a dead cache",
            started.elapsed()
        );
    }
    // A change made while Redis is down is acknowledged and served (from the store).
    let changed = override_winner("control").await;
    assert_eq!(changed["winner"]["variant"], "control");
    let body = winner().await;
    assert_eq!(body["winner"], "control", "{body}");
    assert_eq!(body["version"], changed["version"]);
    let (status, ready) = app.get("/readyz", "").await;
    assert_eq!(status, StatusCode::OK, "{ready}");
    assert_eq!(
        ready["cache"],
        json!({"backend": "redis", "status": "unavailable"})
    );

    // Redis comes back, empty (it keeps nothing on disk): the cache is repopulated with the
    // current snapshot, by the queued write or by the next read.
    redis.restart();
    let deadline = Instant::now() + RECOVERY_LIMIT;
    loop {
        assert_eq!(winner().await["winner"], "control");
        let held = observer.get_snapshot("production", &id).await;
        if let Ok(Some(s)) = &held
            && s.winner.as_deref() == Some("control")
            && s.version == changed["version"].as_u64().unwrap()
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the cache was not repopulated: {held:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (_, ready) = app.get("/readyz", "").await;
    assert_eq!(ready["cache"]["status"], "ok", "{ready}");
}
