//! `/v1/environments` and their audiences (reusable targeting rules).

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use verdict_app::environments::{AudienceInput, AudienceUpdate, NewEnvironment};
use verdict_app::{Caller, PageParams, Paginated};
use verdict_domain::{Audience, Environment};

use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::openapi::ErrorBody;
use crate::routes::snapshots::changed;
use crate::state::AppState;

pub fn routes(router: OpenApiRouter<AppState>) -> OpenApiRouter<AppState> {
    router
        .routes(routes!(create_environment, list_environments))
        .routes(routes!(get_environment))
        .routes(routes!(create_audience, list_audiences))
        .routes(routes!(get_audience, update_audience, delete_audience))
}

#[utoipa::path(
    post,
    path = "/v1/environments",
    tag = "environments",
    summary = "Create an environment",
    description = "`name` defaults to `key`.",
    security(("bearer" = ["environments:write"])),
    request_body = NewEnvironment,
    responses(
        (status = 201, description = "Created.", body = Environment),
        (status = 409, description = "`environment_exists`.", body = ErrorBody),
        (status = 422, description = "`invalid_body` or `validation_failed`.", body = ErrorBody),
    )
)]
pub async fn create_environment(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<NewEnvironment>,
) -> Result<(StatusCode, Json<Environment>), ApiError> {
    let env = state.create_environment(&caller, body).await?;
    Ok((StatusCode::CREATED, Json(env)))
}

#[utoipa::path(
    get,
    path = "/v1/environments",
    tag = "environments",
    summary = "List environments",
    security(("bearer" = ["environments:read"])),
    params(PageParams),
    responses((status = 200, description = "A page of environments.", body = Paginated<Environment>))
)]
pub async fn list_environments(
    State(state): State<AppState>,
    ApiQuery(page): ApiQuery<PageParams>,
) -> Result<Json<Paginated<Environment>>, ApiError> {
    Ok(Json(state.list_environments(page).await?))
}

#[utoipa::path(
    get,
    path = "/v1/environments/{env}",
    tag = "environments",
    summary = "Get an environment",
    security(("bearer" = ["environments:read"])),
    params(("env" = String, Path, description = "The environment key.")),
    responses(
        (status = 200, description = "The environment.", body = Environment),
        (status = 404, description = "`environment_not_found`.", body = ErrorBody),
    )
)]
pub async fn get_environment(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(key): ApiPath<String>,
) -> Result<Json<Environment>, ApiError> {
    Ok(Json(state.environment(&caller, &key).await?))
}

#[utoipa::path(
    post,
    path = "/v1/environments/{env}/audiences",
    tag = "audiences",
    summary = "Create an audience",
    description = "An audience is a named set of targeting rules experiments of the \
        environment can refer to. `name` defaults to `key`.",
    security(("bearer" = ["environments:write"])),
    params(("env" = String, Path, description = "The environment key.")),
    request_body = AudienceInput,
    responses(
        (status = 201, description = "Created.", body = Audience),
        (status = 404, description = "`environment_not_found`.", body = ErrorBody),
        (status = 409, description = "`audience_exists`.", body = ErrorBody),
        (status = 422, description = "`invalid_body` or `validation_failed`.", body = ErrorBody),
    )
)]
pub async fn create_audience(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(env): ApiPath<String>,
    ApiJson(body): ApiJson<AudienceInput>,
) -> Result<(StatusCode, Json<Audience>), ApiError> {
    let audience = state.create_audience(&caller, &env, body).await?;
    Ok((StatusCode::CREATED, Json(audience)))
}

#[utoipa::path(
    get,
    path = "/v1/environments/{env}/audiences",
    tag = "audiences",
    summary = "List an environment's audiences",
    security(("bearer" = ["environments:read"])),
    params(("env" = String, Path, description = "The environment key."), PageParams),
    responses(
        (status = 200, description = "A page of audiences.", body = Paginated<Audience>),
        (status = 404, description = "`environment_not_found`.", body = ErrorBody),
    )
)]
pub async fn list_audiences(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(env): ApiPath<String>,
    ApiQuery(page): ApiQuery<PageParams>,
) -> Result<Json<Paginated<Audience>>, ApiError> {
    Ok(Json(state.list_audiences(&caller, &env, page).await?))
}

#[utoipa::path(
    get,
    path = "/v1/environments/{env}/audiences/{key}",
    tag = "audiences",
    summary = "Get an audience",
    security(("bearer" = ["environments:read"])),
    params(
        ("env" = String, Path, description = "The environment key."),
        ("key" = String, Path, description = "The audience key."),
    ),
    responses(
        (status = 200, description = "The audience.", body = Audience),
        (status = 404, description = "`audience_not_found`.", body = ErrorBody),
    )
)]
pub async fn get_audience(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((env, key)): ApiPath<(String, String)>,
) -> Result<Json<Audience>, ApiError> {
    Ok(Json(state.audience(&caller, &env, &key).await?))
}

#[utoipa::path(
    put,
    path = "/v1/environments/{env}/audiences/{key}",
    tag = "audiences",
    summary = "Replace an audience's rules",
    description = "Experiments using the audience see the new rules for subjects not yet \
        assigned; stored assignments are kept.",
    security(("bearer" = ["environments:write"])),
    params(
        ("env" = String, Path, description = "The environment key."),
        ("key" = String, Path, description = "The audience key."),
    ),
    request_body = AudienceUpdate,
    responses(
        (status = 200, description = "The updated audience.", body = Audience),
        (status = 404, description = "`audience_not_found`.", body = ErrorBody),
        (status = 422, description = "`invalid_body` or `validation_failed`.", body = ErrorBody),
    )
)]
pub async fn update_audience(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((env, key)): ApiPath<(String, String)>,
    ApiJson(body): ApiJson<AudienceUpdate>,
) -> Result<(HeaderMap, Json<Audience>), ApiError> {
    Ok(changed(
        state.update_audience(&caller, &env, &key, body).await?,
    ))
}

#[utoipa::path(
    delete,
    path = "/v1/environments/{env}/audiences/{key}",
    tag = "audiences",
    summary = "Delete an audience",
    description = "Refused while running experiments use it.",
    security(("bearer" = ["environments:write"])),
    params(
        ("env" = String, Path, description = "The environment key."),
        ("key" = String, Path, description = "The audience key."),
    ),
    responses(
        (status = 204, description = "Deleted."),
        (status = 404, description = "`audience_not_found`.", body = ErrorBody),
        (status = 409, description = "`audience_in_use`: running experiments use it (listed in \
            `details`).", body = ErrorBody),
    )
)]
pub async fn delete_audience(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((env, key)): ApiPath<(String, String)>,
) -> Result<StatusCode, ApiError> {
    state.delete_audience(&caller, &env, &key).await?;
    Ok(StatusCode::NO_CONTENT)
}
