//! The cache contract suite against the in-process cache of the embedded mode.

use std::sync::Arc;

use verdict_cache::MemoryCache;
use verdict_cache::test_support::contract::TestCaches;

async fn memory() -> TestCaches {
    let shared = MemoryCache::new();
    TestCaches {
        a: Arc::new(shared.clone()),
        b: Arc::new(shared),
        other: Arc::new(MemoryCache::new()),
        guard: Box::new(()),
    }
}

verdict_cache::cache_contract_suite!(memory);
