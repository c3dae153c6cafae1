//! `/v1/api-keys`: create (plaintext shown once), list, revoke.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use verdict_app::keys::{CreatedApiKey, NewApiKey};
use verdict_app::{Caller, PageParams, Paginated};
use verdict_domain::ApiKey;

use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::openapi::ErrorBody;
use crate::state::AppState;

pub fn routes(router: OpenApiRouter<AppState>) -> OpenApiRouter<AppState> {
    router
        .routes(routes!(create_key, list_keys))
        .routes(routes!(revoke_key))
}

/// `POST /v1/api-keys`: the plaintext is in this answer and nowhere else, ever.
#[utoipa::path(
    post,
    path = "/v1/api-keys",
    tag = "api-keys",
    summary = "Create an API key",
    description = "The plaintext key is in this answer and nowhere else, ever: only its \
        hash is stored. `environment` defaults to the caller's.",
    security(("bearer" = ["keys:manage"])),
    request_body = NewApiKey,
    responses(
        (status = 201, description = "Created; `key` is the plaintext.", body = CreatedApiKey),
        (status = 422, description = "`invalid_body` or `validation_failed` (every bad field in \
            `details`).", body = ErrorBody),
    )
)]
pub async fn create_key(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<NewApiKey>,
) -> Result<(StatusCode, Json<CreatedApiKey>), ApiError> {
    let created = state.create_api_key(&caller, body).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

#[utoipa::path(
    get,
    path = "/v1/api-keys",
    tag = "api-keys",
    summary = "List API keys",
    description = "Revoked keys are listed too (with `revoked_at`); plaintexts never are.",
    security(("bearer" = ["keys:manage"])),
    params(PageParams),
    responses((status = 200, description = "A page of keys.", body = Paginated<ApiKey>))
)]
pub async fn list_keys(
    State(state): State<AppState>,
    ApiQuery(page): ApiQuery<PageParams>,
) -> Result<Json<Paginated<ApiKey>>, ApiError> {
    Ok(Json(state.list_api_keys(page).await?))
}

/// `DELETE /v1/api-keys/{id}`: revoke (kept for the record, refused from now on).
#[utoipa::path(
    delete,
    path = "/v1/api-keys/{id}",
    tag = "api-keys",
    summary = "Revoke an API key",
    description = "The key is kept for the record and refused from now on.",
    security(("bearer" = ["keys:manage"])),
    params(("id" = String, Path, description = "The key's id (`key_…`).")),
    responses(
        (status = 204, description = "Revoked."),
        (status = 404, description = "`api_key_not_found`.", body = ErrorBody),
    )
)]
pub async fn revoke_key(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    state.revoke_api_key(&caller, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}
