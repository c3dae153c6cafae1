//! Liveness, readiness and metrics (no authentication).

use axum::Json;
use axum::extract::State;
use axum::response::IntoResponse;
use serde_json::{Value, json};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use verdict_app::health::Readiness;

use crate::error::ApiError;
use crate::openapi::{ErrorBody, Health};
use crate::state::AppState;

pub fn routes(router: OpenApiRouter<AppState>) -> OpenApiRouter<AppState> {
    router
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(metrics))
}

/// `GET /healthz`: the process is up and serving HTTP.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "health",
    summary = "Liveness",
    description = "The process is up and serving HTTP. No authentication; never touches the store.",
    responses((status = 200, description = "Alive.", body = Health))
)]
pub async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// `GET /readyz`: the store answers; 503 with `store_unavailable` otherwise.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "health",
    summary = "Readiness",
    description = "The store answers a ping. No authentication. The cache is pinged too and \
        reported (`cache.status`: `ok` or `unavailable`); an unavailable cache degrades reads to \
        the store but does not make the replica unready.",
    responses(
        (status = 200, description = "Ready.", body = Readiness),
        (status = 503, description = "`store_unavailable`: the store does not answer.",
            body = ErrorBody),
    )
)]
pub async fn readyz(State(state): State<AppState>) -> Result<Json<Readiness>, ApiError> {
    Ok(Json(state.readiness().await?))
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
        by outcome, winner-snapshot cache hits, misses and store fallbacks. Rendered from \
        memory (the aggregation lag is refreshed every 10 s in the background and after each \
        aggregation): a scrape never reads the store.",
    responses((status = 200, description = "The metrics.", content_type = "application/openmetrics-text", body = String))
)]
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            verdict_metrics::CONTENT_TYPE,
        )],
        state.render_metrics().await,
    )
}
