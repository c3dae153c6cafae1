//! Administration: API keys, environments and audiences (admin scope).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::ToSchema;
use verdict_domain::validation::check_key;
use verdict_domain::{ApiKey, Audience, Environment, KeyScope, Problems, Targeting};
use verdict_store::{AudienceDeletion, StoreError};

use super::now;
use crate::auth::{Caller, generate_key};
use crate::error::{ApiError, ErrorCode};
use crate::extract::{ApiJson, ApiQuery, PageParams, paginated};
use crate::openapi::{CreatedApiKey, ErrorBody, Paginated};
use crate::startup::AppState;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewApiKey {
    pub name: String,
    pub scopes: Vec<KeyScope>,
    #[serde(default)]
    pub environment: Option<String>,
    #[serde(default)]
    pub organization: Option<String>,
}

/// `POST /v1/api-keys`: the plaintext is in this answer and nowhere else, ever.
#[utoipa::path(
    post,
    path = "/v1/api-keys",
    tag = "api-keys",
    summary = "Create an API key",
    description = "Requires the `admin` scope. The plaintext key is in this answer and nowhere else, ever: only its \
        hash is stored. `environment` defaults to the caller's.",
    security(("bearer" = [])),
    request_body = NewApiKey,
    responses(
        (status = 201, description = "Created; `key` is the plaintext.", body = CreatedApiKey),
        (status = 400, description = "`invalid_json`.", body = ErrorBody),
        (status = 401, description = "`unauthorized`.", body = ErrorBody),
        (status = 403, description = "`forbidden`: not an admin key.", body = ErrorBody),
        (status = 413, description = "`payload_too_large`.", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`.", body = ErrorBody),
        (status = 422, description = "`invalid_body` or `validation_failed` (every bad field in \
            `details`).", body = ErrorBody),
        (status = 500, description = "`internal`.", body = ErrorBody),
        (status = 503, description = "`store_unavailable`.", body = ErrorBody),
    )
)]
pub async fn create_key(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<NewApiKey>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    caller.require(KeyScope::Admin)?;
    let environment = body
        .environment
        .unwrap_or_else(|| caller.key.environment.clone());
    let mut p = Problems::new();
    if body.name.trim().is_empty() || body.name.len() > 200 {
        p.push("name", "must be 1 to 200 characters");
    }
    if body.scopes.is_empty() {
        p.push("scopes", "give at least one of admin, client, internal");
    }
    check_key(&mut p, "environment", &environment);
    if let Some(org) = &body.organization {
        check_key(&mut p, "organization", org);
    }
    if !p.is_empty() {
        return Err(ApiError::validation(p));
    }
    let (plaintext, hash) = generate_key();
    let key = ApiKey {
        id: format!("key_{}", uuid::Uuid::now_v7().simple()),
        name: body.name,
        prefix: plaintext[..10].to_owned(),
        hash,
        scopes: body.scopes,
        environment,
        organization: body.organization,
        created_at: now(),
        revoked_at: None,
    };
    state.store.create_api_key(&key).await?;
    let mut view = serde_json::to_value(&key).map_err(ApiError::internal)?;
    view["key"] = Value::String(plaintext);
    Ok((StatusCode::CREATED, Json(view)))
}

#[utoipa::path(
    get,
    path = "/v1/api-keys",
    tag = "api-keys",
    summary = "List API keys",
    description = "Requires the `admin` scope. Revoked keys are listed too (with `revoked_at`); plaintexts never are.",
    security(("bearer" = [])),
    params(PageParams),
    responses(
        (status = 200, description = "A page of keys.", body = Paginated<ApiKey>),
        (status = 400, description = "`invalid_query` or `invalid_pagination`.", body = ErrorBody),
        (status = 401, description = "`unauthorized`.", body = ErrorBody),
        (status = 403, description = "`forbidden`: not an admin key.", body = ErrorBody),
        (status = 500, description = "`internal`.", body = ErrorBody),
        (status = 503, description = "`store_unavailable`.", body = ErrorBody),
    )
)]
pub async fn list_keys(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(params): ApiQuery<PageParams>,
) -> Result<Json<Value>, ApiError> {
    caller.require(KeyScope::Admin)?;
    let page = params.to_request()?;
    Ok(Json(paginated(
        state.store.list_api_keys(page).await?,
        page,
    )))
}

/// `DELETE /v1/api-keys/{id}`: revoke (kept for the record, refused from now on).
#[utoipa::path(
    delete,
    path = "/v1/api-keys/{id}",
    tag = "api-keys",
    summary = "Revoke an API key",
    description = "Requires the `admin` scope. The key is kept for the record and refused from now on.",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The key's id (`key_…`).")),
    responses(
        (status = 204, description = "Revoked."),
        (status = 401, description = "`unauthorized`.", body = ErrorBody),
        (status = 403, description = "`forbidden`: not an admin key.", body = ErrorBody),
        (status = 404, description = "`api_key_not_found`.", body = ErrorBody),
        (status = 500, description = "`internal`.", body = ErrorBody),
        (status = 503, description = "`store_unavailable`.", body = ErrorBody),
    )
)]
pub async fn revoke_key(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    caller.require(KeyScope::Admin)?;
    if !state.store.revoke_api_key(&id, now()).await? {
        return Err(ApiError::new(
            ErrorCode::ApiKeyNotFound,
            format!("no API key '{id}'"),
        ));
    }
    state.keys.forget_id(&id);
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewEnvironment {
    pub key: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub description: String,
}

#[utoipa::path(
    post,
    path = "/v1/environments",
    tag = "environments",
    summary = "Create an environment",
    description = "Requires the `admin` scope. `name` defaults to `key`.",
    security(("bearer" = [])),
    request_body = NewEnvironment,
    responses(
        (status = 201, description = "Created.", body = Environment),
        (status = 400, description = "`invalid_json`.", body = ErrorBody),
        (status = 401, description = "`unauthorized`.", body = ErrorBody),
        (status = 403, description = "`forbidden`: not an admin key.", body = ErrorBody),
        (status = 409, description = "`environment_exists`.", body = ErrorBody),
        (status = 413, description = "`payload_too_large`.", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`.", body = ErrorBody),
        (status = 422, description = "`invalid_body` or `validation_failed`.", body = ErrorBody),
        (status = 500, description = "`internal`.", body = ErrorBody),
        (status = 503, description = "`store_unavailable`.", body = ErrorBody),
    )
)]
pub async fn create_environment(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<NewEnvironment>,
) -> Result<(StatusCode, Json<Environment>), ApiError> {
    caller.require(KeyScope::Admin)?;
    let env = Environment {
        name: body.name.unwrap_or_else(|| body.key.clone()),
        key: body.key,
        description: body.description,
        created_at: now(),
    };
    env.check().map_err(ApiError::validation)?;
    match state.store.create_environment(&env).await {
        Ok(()) => Ok((StatusCode::CREATED, Json(env))),
        Err(StoreError::Conflict(m)) => Err(ApiError::new(ErrorCode::EnvironmentExists, m)),
        Err(e) => Err(e.into()),
    }
}

#[utoipa::path(
    get,
    path = "/v1/environments",
    tag = "environments",
    summary = "List environments",
    description = "Requires the `admin` scope.",
    security(("bearer" = [])),
    params(PageParams),
    responses(
        (status = 200, description = "A page of environments.", body = Paginated<Environment>),
        (status = 400, description = "`invalid_query` or `invalid_pagination`.", body = ErrorBody),
        (status = 401, description = "`unauthorized`.", body = ErrorBody),
        (status = 403, description = "`forbidden`: not an admin key.", body = ErrorBody),
        (status = 500, description = "`internal`.", body = ErrorBody),
        (status = 503, description = "`store_unavailable`.", body = ErrorBody),
    )
)]
pub async fn list_environments(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(params): ApiQuery<PageParams>,
) -> Result<Json<Value>, ApiError> {
    caller.require(KeyScope::Admin)?;
    let page = params.to_request()?;
    Ok(Json(paginated(
        state.store.list_environments(page).await?,
        page,
    )))
}

async fn environment(state: &AppState, key: &str) -> Result<Environment, ApiError> {
    state.store.get_environment(key).await?.ok_or_else(|| {
        ApiError::new(
            ErrorCode::EnvironmentNotFound,
            format!("no environment '{key}'"),
        )
    })
}

#[utoipa::path(
    get,
    path = "/v1/environments/{env}",
    tag = "environments",
    summary = "Get an environment",
    description = "Requires the `admin` scope.",
    security(("bearer" = [])),
    params(("env" = String, Path, description = "The environment key.")),
    responses(
        (status = 200, description = "The environment.", body = Environment),
        (status = 401, description = "`unauthorized`.", body = ErrorBody),
        (status = 403, description = "`forbidden`: not an admin key.", body = ErrorBody),
        (status = 404, description = "`environment_not_found`.", body = ErrorBody),
        (status = 500, description = "`internal`.", body = ErrorBody),
        (status = 503, description = "`store_unavailable`.", body = ErrorBody),
    )
)]
pub async fn get_environment(
    State(state): State<AppState>,
    caller: Caller,
    Path(key): Path<String>,
) -> Result<Json<Environment>, ApiError> {
    caller.require(KeyScope::Admin)?;
    environment(&state, &key).await.map(Json)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AudienceInput {
    pub key: String,
    #[serde(default)]
    pub name: Option<String>,
    pub rules: Targeting,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AudienceUpdate {
    #[serde(default)]
    pub name: Option<String>,
    pub rules: Targeting,
}

#[utoipa::path(
    post,
    path = "/v1/environments/{env}/audiences",
    tag = "audiences",
    summary = "Create an audience",
    description = "Requires the `admin` scope. An audience is a named set of targeting rules experiments of the \
        environment can refer to. `name` defaults to `key`.",
    security(("bearer" = [])),
    params(("env" = String, Path, description = "The environment key.")),
    request_body = AudienceInput,
    responses(
        (status = 201, description = "Created.", body = Audience),
        (status = 400, description = "`invalid_json`.", body = ErrorBody),
        (status = 401, description = "`unauthorized`.", body = ErrorBody),
        (status = 403, description = "`forbidden`: not an admin key.", body = ErrorBody),
        (status = 404, description = "`environment_not_found`.", body = ErrorBody),
        (status = 409, description = "`audience_exists`.", body = ErrorBody),
        (status = 413, description = "`payload_too_large`.", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`.", body = ErrorBody),
        (status = 422, description = "`invalid_body` or `validation_failed`.", body = ErrorBody),
        (status = 500, description = "`internal`.", body = ErrorBody),
        (status = 503, description = "`store_unavailable`.", body = ErrorBody),
    )
)]
pub async fn create_audience(
    State(state): State<AppState>,
    caller: Caller,
    Path(env): Path<String>,
    ApiJson(body): ApiJson<AudienceInput>,
) -> Result<(StatusCode, Json<Audience>), ApiError> {
    caller.require(KeyScope::Admin)?;
    environment(&state, &env).await?;
    let at = now();
    let audience = Audience {
        environment: env,
        name: body.name.unwrap_or_else(|| body.key.clone()),
        key: body.key,
        rules: body.rules,
        created_at: at,
        updated_at: at,
    };
    audience.check().map_err(ApiError::validation)?;
    match state.store.create_audience(&audience).await {
        Ok(()) => Ok((StatusCode::CREATED, Json(audience))),
        Err(StoreError::Conflict(m)) => Err(ApiError::new(ErrorCode::AudienceExists, m)),
        Err(e) => Err(e.into()),
    }
}

#[utoipa::path(
    get,
    path = "/v1/environments/{env}/audiences",
    tag = "audiences",
    summary = "List an environment's audiences",
    description = "Requires the `admin` scope.",
    security(("bearer" = [])),
    params(("env" = String, Path, description = "The environment key."), PageParams),
    responses(
        (status = 200, description = "A page of audiences.", body = Paginated<Audience>),
        (status = 400, description = "`invalid_query` or `invalid_pagination`.", body = ErrorBody),
        (status = 401, description = "`unauthorized`.", body = ErrorBody),
        (status = 403, description = "`forbidden`: not an admin key.", body = ErrorBody),
        (status = 404, description = "`environment_not_found`.", body = ErrorBody),
        (status = 500, description = "`internal`.", body = ErrorBody),
        (status = 503, description = "`store_unavailable`.", body = ErrorBody),
    )
)]
pub async fn list_audiences(
    State(state): State<AppState>,
    caller: Caller,
    Path(env): Path<String>,
    ApiQuery(params): ApiQuery<PageParams>,
) -> Result<Json<Value>, ApiError> {
    caller.require(KeyScope::Admin)?;
    let page = params.to_request()?;
    environment(&state, &env).await?;
    Ok(Json(paginated(
        state.store.list_audiences(&env, page).await?,
        page,
    )))
}

fn audience_not_found(env: &str, key: &str) -> ApiError {
    ApiError::new(
        ErrorCode::AudienceNotFound,
        format!("no audience '{key}' in '{env}'"),
    )
}

#[utoipa::path(
    get,
    path = "/v1/environments/{env}/audiences/{key}",
    tag = "audiences",
    summary = "Get an audience",
    description = "Requires the `admin` scope.",
    security(("bearer" = [])),
    params(
        ("env" = String, Path, description = "The environment key."),
        ("key" = String, Path, description = "The audience key."),
    ),
    responses(
        (status = 200, description = "The audience.", body = Audience),
        (status = 401, description = "`unauthorized`.", body = ErrorBody),
        (status = 403, description = "`forbidden`: not an admin key.", body = ErrorBody),
        (status = 404, description = "`audience_not_found`.", body = ErrorBody),
        (status = 500, description = "`internal`.", body = ErrorBody),
        (status = 503, description = "`store_unavailable`.", body = ErrorBody),
    )
)]
pub async fn get_audience(
    State(state): State<AppState>,
    caller: Caller,
    Path((env, key)): Path<(String, String)>,
) -> Result<Json<Audience>, ApiError> {
    caller.require(KeyScope::Admin)?;
    state
        .store
        .get_audience(&env, &key)
        .await?
        .map(Json)
        .ok_or_else(|| audience_not_found(&env, &key))
}

#[utoipa::path(
    put,
    path = "/v1/environments/{env}/audiences/{key}",
    tag = "audiences",
    summary = "Replace an audience's rules",
    description = "Requires the `admin` scope. Experiments using the audience see the new rules for subjects not yet \
        assigned; stored assignments are kept.",
    security(("bearer" = [])),
    params(
        ("env" = String, Path, description = "The environment key."),
        ("key" = String, Path, description = "The audience key."),
    ),
    request_body = AudienceUpdate,
    responses(
        (status = 200, description = "The updated audience.", body = Audience),
        (status = 400, description = "`invalid_json`.", body = ErrorBody),
        (status = 401, description = "`unauthorized`.", body = ErrorBody),
        (status = 403, description = "`forbidden`: not an admin key.", body = ErrorBody),
        (status = 404, description = "`audience_not_found`.", body = ErrorBody),
        (status = 413, description = "`payload_too_large`.", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`.", body = ErrorBody),
        (status = 422, description = "`invalid_body` or `validation_failed`.", body = ErrorBody),
        (status = 500, description = "`internal`.", body = ErrorBody),
        (status = 503, description = "`store_unavailable`.", body = ErrorBody),
    )
)]
pub async fn update_audience(
    State(state): State<AppState>,
    caller: Caller,
    Path((env, key)): Path<(String, String)>,
    ApiJson(body): ApiJson<AudienceUpdate>,
) -> Result<Json<Audience>, ApiError> {
    caller.require(KeyScope::Admin)?;
    let current = state
        .store
        .get_audience(&env, &key)
        .await?
        .ok_or_else(|| audience_not_found(&env, &key))?;
    let next = Audience {
        name: body.name.unwrap_or(current.name),
        rules: body.rules,
        updated_at: now(),
        ..current
    };
    next.check().map_err(ApiError::validation)?;
    match state.store.update_audience(&next).await {
        Ok(a) => Ok(Json(a)),
        Err(StoreError::NotFound) => Err(audience_not_found(&env, &key)),
        Err(e) => Err(e.into()),
    }
}

#[utoipa::path(
    delete,
    path = "/v1/environments/{env}/audiences/{key}",
    tag = "audiences",
    summary = "Delete an audience",
    description = "Requires the `admin` scope. Refused while running experiments use it.",
    security(("bearer" = [])),
    params(
        ("env" = String, Path, description = "The environment key."),
        ("key" = String, Path, description = "The audience key."),
    ),
    responses(
        (status = 204, description = "Deleted."),
        (status = 401, description = "`unauthorized`.", body = ErrorBody),
        (status = 403, description = "`forbidden`: not an admin key.", body = ErrorBody),
        (status = 404, description = "`audience_not_found`.", body = ErrorBody),
        (status = 409, description = "`audience_in_use`: `details` lists the experiments.",
            body = ErrorBody),
        (status = 500, description = "`internal`.", body = ErrorBody),
        (status = 503, description = "`store_unavailable`.", body = ErrorBody),
    )
)]
pub async fn delete_audience(
    State(state): State<AppState>,
    caller: Caller,
    Path((env, key)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    caller.require(KeyScope::Admin)?;
    match state.store.delete_audience(&env, &key).await? {
        AudienceDeletion::Deleted => Ok(StatusCode::NO_CONTENT),
        AudienceDeletion::NotFound => Err(audience_not_found(&env, &key)),
        AudienceDeletion::InUse(users) => Err(ApiError::new(
            ErrorCode::AudienceInUse,
            format!(
                "running experiments use audience '{key}': {}",
                users.join(", ")
            ),
        )
        .with_details(
            users
                .into_iter()
                .map(|u| json!({"experiment": u}))
                .collect(),
        )),
    }
}
