//! Readiness, and the figures a metrics scrape brings up to date.

use serde::Serialize;
use utoipa::ToSchema;
use verdict_cache::Cache;

use crate::App;
use crate::error::{AppError, ErrorCode};

/// `GET /readyz`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    #[schema(example = "ready")]
    pub status: &'static str,
    /// The store backend, e.g. `sqlite`.
    pub store: &'static str,
    pub cache: CacheReadiness,
}

/// The winner-snapshot cache as readiness saw it.
#[derive(Debug, Serialize, ToSchema)]
pub struct CacheReadiness {
    /// `memory` or `redis`.
    pub backend: &'static str,
    /// `ok` or `unavailable` (reads then fall back to the store).
    pub status: &'static str,
}

impl App {
    /// Ready when the store answers a ping. The cache's state is reported but does not make
    /// a replica unready: every read falls back to the store when the cache is down, so
    /// taking replicas out of rotation would only turn a degraded service into an outage.
    pub async fn readiness(&self) -> Result<Readiness, AppError> {
        let store = &self.0.store;
        store.ping().await.map_err(|e| {
            AppError::new(
                ErrorCode::StoreUnavailable,
                format!("{} store is not reachable", store.backend()),
            )
            .caused_by(e)
        })?;
        let cache = self.0.snapshots.cache();
        let status = match cache.ping().await {
            Ok(()) => "ok",
            Err(_) => "unavailable",
        };
        Ok(Readiness {
            status: "ready",
            store: store.backend(),
            cache: CacheReadiness {
                backend: cache.inner().backend(),
                status,
            },
        })
    }

    /// This process's metrics in the OpenMetrics text format, from memory only: cache
    /// counters are read from the cache's own, job lags are kept fresh in the background
    /// ([`verdict_jobs::Runner::keep_lags_fresh`]); nothing here reads the store.
    pub async fn render_metrics(&self) -> String {
        let metrics = &self.0.metrics;
        let stats = self.0.snapshots.cache().stats();
        metrics.observe_cache(verdict_metrics::CacheFigures {
            hits: stats.hits,
            misses: stats.misses,
            fallbacks: self.0.snapshots.fallbacks(),
        });
        metrics.render()
    }
}
