//! Liveness and readiness.

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use verdict_cache::Cache;

use crate::error::ApiError;
use crate::startup::AppState;

/// `GET /healthz`: the process is up and serving HTTP.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "health",
    summary = "Liveness",
    description = "The process is up and serving HTTP. No authentication; never touches the store.",
    responses((status = 200, description = "Alive.", body = crate::openapi::Health))
)]
pub async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// `GET /readyz`: the store answers; 503 with `store_unavailable` otherwise. The cache's state
/// is reported but does not make a replica unready: every read falls back to the store when
/// the cache is down, so taking replicas out of rotation would only turn a degraded service
/// into an outage.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "health",
    summary = "Readiness",
    description = "The store answers a ping. No authentication. The cache is pinged too and \
        reported (`cache.status`: `ok` or `unavailable`); an unavailable cache degrades reads to \
        the store but does not make the replica unready.",
    responses(
        (status = 200, description = "Ready to serve.", body = crate::openapi::Readiness),
        (status = 503, description = "`store_unavailable`: the store is not reachable.",
            body = crate::openapi::ErrorBody),
    )
)]
pub async fn readyz(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    state.store.ping().await.map_err(|e| {
        let mut err = ApiError::new(
            crate::ErrorCode::StoreUnavailable,
            format!("{} store is not reachable", state.store.backend()),
        );
        err.cause = Some(e.into());
        err
    })?;
    let cache = state.snapshots.cache();
    let cache_status = match cache.ping().await {
        Ok(()) => "ok",
        Err(_) => "unavailable",
    };
    Ok(Json(json!({
        "status": "ready",
        "store": state.store.backend(),
        "cache": {"backend": cache.inner().backend(), "status": cache_status},
    })))
}

/// `GET /metrics`: Prometheus metrics of this process.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "health",
    summary = "Prometheus metrics",
    description = "No authentication. This process's metrics in the OpenMetrics text format \
        (which Prometheus scrapes): HTTP requests by route and status, events ingested and \
        rejected, job runs by job and outcome with durations, aggregation lag, webhook attempts \
        by outcome, winner-snapshot cache hits, misses and store fallbacks.",
    responses((status = 200, description = "The metrics.", content_type = "application/openmetrics-text", body = String))
)]
pub async fn metrics(State(state): State<AppState>) -> impl axum::response::IntoResponse {
    let metrics = state.jobs.metrics();
    // Figures owned elsewhere, brought up to date for this scrape.
    let stats = state.snapshots.cache().stats();
    metrics.observe_cache(verdict_metrics::CacheFigures {
        hits: stats.hits,
        misses: stats.misses,
        fallbacks: state.snapshots.fallbacks(),
    });
    if let Err(e) = state
        .jobs
        .aggregation_lag(time::OffsetDateTime::now_utc())
        .await
    {
        tracing::debug!(error = %e, "aggregation lag unknown for this scrape");
    }
    (
        [(
            axum::http::header::CONTENT_TYPE,
            verdict_metrics::CONTENT_TYPE,
        )],
        metrics.render(),
    )
}
