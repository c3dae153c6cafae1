//! Liveness and readiness.

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

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

/// `GET /readyz`: the store answers; 503 with `store_unavailable` otherwise.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "health",
    summary = "Readiness",
    description = "The store answers a ping. No authentication.",
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
    Ok(Json(
        json!({"status": "ready", "store": state.store.backend()}),
    ))
}
