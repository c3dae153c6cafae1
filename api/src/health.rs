//! Liveness and readiness.

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::startup::AppState;

/// `GET /healthz`: the process is up and serving HTTP.
pub async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// `GET /readyz`: the store answers; 503 with `store_unavailable` otherwise.
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
