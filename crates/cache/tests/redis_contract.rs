//! The cache contract suite against a real Redis (see `verdict_cache::test_support` for which
//! one): plain [`RedisCache`], and [`ResilientCache`] around it. Every test has its own key
//! prefix, so the tests run in parallel on one server.

use std::sync::Arc;
use std::time::Duration;

use verdict_cache::test_support::contract::TestCaches;
use verdict_cache::test_support::{PrefixCleanup, random_prefix, test_redis};
use verdict_cache::{DynCache, RedisCache, ResilientCache};

/// Two replicas on one prefix and a third cache on another, all subscribed.
async fn replicas(wrap: fn(RedisCache) -> DynCache) -> TestCaches {
    let redis = test_redis();
    let prefix = random_prefix();
    let other_prefix = random_prefix();
    let connect = async |prefix: &str| {
        let cache = RedisCache::connect(redis.url(), prefix).expect("connect");
        assert!(
            cache.wait_listening(Duration::from_secs(5)).await,
            "the change listener did not subscribe within 5 s"
        );
        cache
    };
    let a = connect(&prefix).await;
    let b = connect(&prefix).await;
    let other = connect(&other_prefix).await;
    let cleanup = |prefix: String| PrefixCleanup {
        url: redis.url().to_owned(),
        prefix,
    };
    let guard = (cleanup(prefix), cleanup(other_prefix));
    TestCaches {
        a: wrap(a),
        b: wrap(b),
        other: wrap(other),
        guard: Box::new((guard, redis)),
    }
}

mod redis {
    use super::*;

    async fn caches() -> TestCaches {
        replicas(|cache| Arc::new(cache)).await
    }

    verdict_cache::cache_contract_suite!(caches);
}

mod resilient_redis {
    use super::*;

    async fn caches() -> TestCaches {
        replicas(|cache| Arc::new(ResilientCache::new(Arc::new(cache)))).await
    }

    verdict_cache::cache_contract_suite!(caches);
}
