//! Opening the backends the configuration selects: the binary's job, so that no other crate
//! depends on which store or cache a deployment runs.

use std::sync::Arc;

use anyhow::Context;
use verdict_cache::{DynCache, MemoryCache, RedisCache};
use verdict_config::{CacheKind, ExposeSecret, Settings, StoreKind};
use verdict_store::{DynStore, MongoStore, SqliteStore};

/// The SQLite file under the data dir (created on first use), or the MongoDB database
/// (`mongodb.uri`, `mongodb.database`; indexes created).
pub async fn open_store(settings: &Settings) -> anyhow::Result<DynStore> {
    match settings.store {
        StoreKind::Sqlite => {
            let path = settings.sqlite_path();
            let store = SqliteStore::open(&path, settings.sqlite.busy_timeout_ms)
                .with_context(|| format!("opening the SQLite store at {}", path.display()))?;
            Ok(Arc::new(store))
        }
        StoreKind::Mongodb => {
            let store = MongoStore::connect_with_timeout(
                settings.mongodb.uri.expose_secret(),
                &settings.mongodb.database,
                Some(settings.mongodb.connect_timeout()),
            )
            .await
            .with_context(|| {
                format!(
                    "connecting to MongoDB (database {})",
                    settings.mongodb.database
                )
            })?;
            Ok(Arc::new(store))
        }
    }
}

/// In-process (`memory`), or Redis (`redis.url`, `redis.key_prefix`). Connecting never
/// waits for Redis: when it is down, reads fall back to the store and writes are retried.
pub fn open_cache(settings: &Settings) -> anyhow::Result<DynCache> {
    Ok(match settings.cache {
        CacheKind::Memory => Arc::new(MemoryCache::new()),
        CacheKind::Redis => Arc::new(
            RedisCache::connect(
                settings.redis.url.expose_secret(),
                &settings.redis.key_prefix,
            )
            .context("configuring the Redis cache")?,
        ),
    })
}
