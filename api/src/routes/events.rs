//! Event ingestion: one event or a batch.

use axum::Json;
use axum::extract::State;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use verdict_app::events::IngestReport;
use verdict_app::{Caller, ScopeParams};

use crate::error::ApiError;
use crate::extract::{ApiPath, ApiQuery, JsonBytes};
use crate::openapi::ErrorBody;
use crate::state::AppState;

pub fn routes(router: OpenApiRouter<AppState>) -> OpenApiRouter<AppState> {
    router
        .routes(routes!(post_events))
        .routes(routes!(post_experiment_events))
}

/// `POST /v1/events`
#[utoipa::path(
    post,
    path = "/v1/events",
    tag = "events",
    summary = "Ingest events",
    description = "One event or a batch; each event names its `experiment` (key or id). Items \
        succeed or fail one by one; only a store error fails the whole batch (then nothing \
        was stored). Idempotent per `event_id`.",
    security(("bearer" = ["events:write"])),
    params(ScopeParams),
    request_body(content = Object, description = "One event (an `EventInput`) or a batch \
        `{\"events\": [...]}` of 1 to `ingest.max_batch` of them. Each item is checked on its \
        own, its shape too (an item that is not an `EventInput` is answered `rejected` with code \
        `invalid`), so the body is any JSON object here; `EventInput` describes an item."),
    responses(
        (status = 200, description = "Per-item results: each event is `accepted`, `duplicate` \
            (same `event_id` seen before) or `rejected` (with a `code`).", body = IngestReport),
        (status = 413, description = "`payload_too_large`, or `batch_too_large` (more than \
            `ingest.max_batch` events, or more than the per-key burst).", body = ErrorBody),
        (status = 422, description = "`invalid_body`: neither an event object nor \
            `{\"events\": [...]}`, or an empty batch.", body = ErrorBody),
        (status = 429, description = "`rate_limited`: the key's event rate is exceeded.",
            body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying."))),
    )
)]
pub async fn post_events(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(scope): ApiQuery<ScopeParams>,
    JsonBytes(body): JsonBytes,
) -> Result<Json<IngestReport>, ApiError> {
    Ok(Json(state.ingest(&caller, &scope, None, &body).await?))
}

/// `POST /v1/experiments/{key}/events`
#[utoipa::path(
    post,
    path = "/v1/experiments/{key}/events",
    tag = "events",
    summary = "Ingest events of one experiment",
    description = "As `POST /v1/events`, with the experiment taken from the path (an event's \
        `experiment`, if given, must match it).",
    security(("bearer" = ["events:write"])),
    params(("key" = String, Path, description = "The experiment key or id."), ScopeParams),
    request_body(content = Object, description = "One event (an `EventInput`) or a batch \
        `{\"events\": [...]}` of 1 to `ingest.max_batch` of them. Each item is checked on its \
        own, its shape too (an item that is not an `EventInput` is answered `rejected` with code \
        `invalid`), so the body is any JSON object here; `EventInput` describes an item."),
    responses(
        (status = 200, description = "Per-item results: each event is `accepted`, `duplicate` \
            (same `event_id` seen before) or `rejected` (with a `code`).", body = IngestReport),
        (status = 413, description = "`payload_too_large`, or `batch_too_large` (more than \
            `ingest.max_batch` events, or more than the per-key burst).", body = ErrorBody),
        (status = 422, description = "`invalid_body`: neither an event object nor \
            `{\"events\": [...]}`, or an empty batch.", body = ErrorBody),
        (status = 429, description = "`rate_limited`: the key's event rate is exceeded.",
            body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying."))),
    )
)]
pub async fn post_experiment_events(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(key): ApiPath<String>,
    ApiQuery(scope): ApiQuery<ScopeParams>,
    JsonBytes(body): JsonBytes,
) -> Result<Json<IngestReport>, ApiError> {
    Ok(Json(
        state.ingest(&caller, &scope, Some(&key), &body).await?,
    ))
}
