//! Webhook endpoints and their delivery log (admin scope), svix-like:
//! `/v1/webhooks/endpoints[/{id}[/enable|/disable|/rotate-secret|/recover|/messages[/{msg_id}
//! [/attempts|/redeliver]]]]`.
//!
//! Endpoint URLs pass the SSRF guard when created or changed (`verdict_webhooks::check_url`:
//! the host is resolved and every address judged, unless `webhooks.allow_private_targets`);
//! the dispatcher checks again at every delivery. A secret (`whsec_` + 32 random bytes) is
//! shown in the answer that creates it (creation, rotation) and never again.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};
use verdict_domain::validation::check_key;
use verdict_domain::{EventType, KeyScope, Problems};
use verdict_store::{Attempt, Delivery, DeliveryStatus, Endpoint, EndpointPatch, PageRequest};
use verdict_webhooks::{Secret, TargetError, check_url};

use super::now;
use crate::auth::Caller;
use crate::error::{ApiError, ErrorCode};
use crate::extract::{ApiJson, ApiQuery, PageParams, paginated};
use crate::openapi::{ErrorBody, Paginated};
use crate::startup::AppState;

const MAX_URL_LEN: usize = 2048;
const MAX_DESCRIPTION_LEN: usize = 1000;

/// A webhook endpoint as the API shows it: everything but its secrets.
#[derive(Debug, Serialize, ToSchema)]
pub struct EndpointView {
    /// `ep_…`.
    pub id: String,
    /// Messages of this environment are delivered.
    pub environment: String,
    pub url: String,
    pub description: String,
    /// Event types delivered; empty means every type.
    pub event_types: Vec<EventType>,
    pub disabled: bool,
    /// `manual`, `gone` (the endpoint answered 410) or `failing` (every attempt failed for
    /// `webhooks.disable_after_seconds`).
    pub disabled_reason: Option<String>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub disabled_at: Option<OffsetDateTime>,
    /// The first failed attempt since the last success, if the endpoint is failing.
    #[serde(with = "time::serde::rfc3339::option")]
    pub failing_since: Option<OffsetDateTime>,
    /// Until when the secret before the last rotation still signs, if it does.
    #[serde(with = "time::serde::rfc3339::option")]
    pub previous_secret_expires_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

impl EndpointView {
    fn of(e: Endpoint, at: OffsetDateTime) -> Self {
        Self {
            previous_secret_expires_at: e.previous_secret_expires_at.filter(|&t| t > at),
            id: e.id,
            environment: e.environment,
            url: e.url,
            description: e.description,
            event_types: e.event_types,
            disabled: e.disabled,
            disabled_reason: e.disabled_reason,
            disabled_at: e.disabled_at,
            failing_since: e.failing_since,
            created_at: e.created_at,
            updated_at: e.updated_at,
        }
    }
}

/// A new endpoint and its signing secret, shown in this answer only.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedEndpoint {
    #[serde(flatten)]
    pub endpoint: EndpointView,
    /// `whsec_<base64>`: verify deliveries with it (any Standard Webhooks library). Never
    /// shown again.
    pub secret: String,
}

/// A new secret after a rotation, shown in this answer only.
#[derive(Debug, Serialize, ToSchema)]
pub struct RotatedSecret {
    pub secret: String,
    /// Until then deliveries carry a signature with the previous secret too.
    #[serde(with = "time::serde::rfc3339")]
    pub previous_secret_expires_at: OffsetDateTime,
    pub endpoint: EndpointView,
}

/// One message to one endpoint and where its delivery stands.
#[derive(Debug, Serialize, ToSchema)]
pub struct MessageView {
    /// The `webhook-id` header of every attempt.
    pub message_id: String,
    pub event_type: EventType,
    pub status: DeliveryStatus,
    /// Attempts in the current round (a redelivery starts a new round).
    pub attempts: u32,
    #[serde(with = "time::serde::rfc3339::option")]
    pub next_attempt_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_attempt_at: Option<OffsetDateTime>,
    pub last_status_code: Option<u16>,
    pub last_error: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    /// The body delivered: `{"type", "timestamp", "data"}`.
    #[schema(value_type = Object)]
    pub payload: Value,
}

impl From<Delivery> for MessageView {
    fn from(d: Delivery) -> Self {
        Self {
            payload: d.message.body(),
            message_id: d.message.id,
            event_type: d.message.event_type,
            status: d.status,
            attempts: d.attempts,
            next_attempt_at: d.next_attempt_at,
            last_attempt_at: d.last_attempt_at,
            last_status_code: d.last_status_code,
            last_error: d.last_error,
            created_at: d.created_at,
            updated_at: d.updated_at,
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewEndpoint {
    /// An absolute `http(s)` URL whose host resolves to public addresses.
    pub url: String,
    /// Defaults to the caller's environment.
    #[serde(default)]
    pub environment: Option<String>,
    /// `experiment.winner_changed`, `experiment.status_changed`; empty or absent: all.
    #[serde(default)]
    pub event_types: Vec<String>,
    #[serde(default)]
    pub description: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EndpointUpdate {
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub event_types: Option<Vec<String>>,
    #[serde(default)]
    pub description: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RecoverRequest {
    /// Failed messages created at or after this time are sent again.
    #[serde(with = "time::serde::rfc3339")]
    pub since: OffsetDateTime,
}

/// How many failed messages a recovery queued.
#[derive(Debug, Serialize, ToSchema)]
pub struct Recovered {
    pub recovered: u64,
}

/// `?environment=` of the endpoint list.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EndpointFilter {
    /// Only this environment's endpoints (default: the caller's environment).
    pub environment: Option<String>,
}

/// `?status=` of the delivery log.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MessageFilter {
    /// `pending`, `delivered` or `failed`.
    pub status: Option<String>,
}

/// The endpoint list's query (pagination and [`EndpointFilter`]).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointListQuery {
    page: Option<u32>,
    page_size: Option<u32>,
    environment: Option<String>,
}

/// The delivery log's query (pagination and [`MessageFilter`]).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MessageListQuery {
    page: Option<u32>,
    page_size: Option<u32>,
    status: Option<String>,
}

fn page_of(page: Option<u32>, page_size: Option<u32>) -> Result<PageRequest, ApiError> {
    PageParams { page, page_size }.to_request()
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    page: Option<u32>,
    page_size: Option<u32>,
}

fn endpoint_not_found(id: &str) -> ApiError {
    ApiError::new(
        ErrorCode::WebhookEndpointNotFound,
        format!("no webhook endpoint '{id}'"),
    )
}

fn message_not_found(endpoint: &str, message: &str) -> ApiError {
    ApiError::new(
        ErrorCode::WebhookMessageNotFound,
        format!("no message '{message}' for webhook endpoint '{endpoint}'"),
    )
}

fn target_problem(e: &TargetError) -> String {
    match e {
        TargetError::InvalidUrl => "must be an absolute http(s) URL".to_owned(),
        TargetError::UnsupportedScheme(s) => {
            format!("scheme '{s}' is not allowed; use http or https")
        }
        TargetError::NoAddress => "the host does not resolve to any address".to_owned(),
        TargetError::ForbiddenAddress(ip) => format!(
            "the host resolves to {ip}, a private, loopback, link-local or reserved address; \
             such targets are refused (webhooks.allow_private_targets)"
        ),
    }
}

async fn check_endpoint_url(state: &AppState, p: &mut Problems, url: &str) {
    if url.trim().is_empty() || url.len() > MAX_URL_LEN {
        p.push("url", format!("must be 1 to {MAX_URL_LEN} characters"));
        return;
    }
    if let Err(e) = check_url(url, state.settings.webhooks.allow_private_targets).await {
        p.push("url", target_problem(&e));
    }
}

fn parse_event_types(p: &mut Problems, types: &[String]) -> Vec<EventType> {
    let mut parsed = Vec::new();
    for (i, t) in types.iter().enumerate() {
        match EventType::parse(t) {
            Some(e) if !parsed.contains(&e) => parsed.push(e),
            Some(_) => {}
            None => p.push(
                format!("event_types[{i}]"),
                format!(
                    "unknown event type '{t}'; expected one of: {}",
                    EventType::ALL.map(EventType::as_str).join(", ")
                ),
            ),
        }
    }
    parsed
}

fn check_description(p: &mut Problems, description: &str) {
    if description.len() > MAX_DESCRIPTION_LEN {
        p.push(
            "description",
            format!("must be at most {MAX_DESCRIPTION_LEN} characters"),
        );
    }
}

fn new_secret() -> Result<String, ApiError> {
    let bytes: [u8; 32] = rand::random();
    Secret::generate(&bytes)
        .map(|s| s.expose())
        .map_err(ApiError::internal)
}

async fn load(state: &AppState, id: &str) -> Result<Endpoint, ApiError> {
    state
        .store
        .get_endpoint(id)
        .await?
        .ok_or_else(|| endpoint_not_found(id))
}

/// Create an endpoint: every problem of the input at once, then store it with a new secret.
pub async fn create(
    state: &AppState,
    caller: &Caller,
    body: NewEndpoint,
) -> Result<CreatedEndpoint, ApiError> {
    let mut p = Problems::new();
    let environment = body
        .environment
        .unwrap_or_else(|| caller.key.environment.clone());
    check_key(&mut p, "environment", &environment);
    if !p.mentions("environment") && state.store.get_environment(&environment).await?.is_none() {
        p.push("environment", format!("no environment '{environment}'"));
    }
    check_endpoint_url(state, &mut p, &body.url).await;
    let event_types = parse_event_types(&mut p, &body.event_types);
    check_description(&mut p, &body.description);
    if !p.is_empty() {
        return Err(ApiError::validation(p));
    }
    let at = now();
    let secret = new_secret()?;
    let endpoint = Endpoint {
        id: format!("ep_{}", uuid::Uuid::now_v7().simple()),
        environment,
        url: body.url,
        description: body.description,
        event_types,
        disabled: false,
        disabled_reason: None,
        disabled_at: None,
        secret: secret.clone(),
        previous_secret: None,
        previous_secret_expires_at: None,
        failing_since: None,
        created_at: at,
        updated_at: at,
    };
    state.store.create_endpoint(&endpoint).await?;
    Ok(CreatedEndpoint {
        endpoint: EndpointView::of(endpoint, at),
        secret,
    })
}

/// Change an endpoint's URL, event types or description.
pub async fn update(
    state: &AppState,
    id: &str,
    body: EndpointUpdate,
) -> Result<EndpointView, ApiError> {
    load(state, id).await?;
    let mut p = Problems::new();
    if let Some(url) = &body.url {
        check_endpoint_url(state, &mut p, url).await;
    }
    let event_types = body
        .event_types
        .as_deref()
        .map(|t| parse_event_types(&mut p, t));
    if let Some(d) = &body.description {
        check_description(&mut p, d);
    }
    if !p.is_empty() {
        return Err(ApiError::validation(p));
    }
    let patch = EndpointPatch {
        url: body.url,
        description: body.description,
        event_types,
    };
    let at = now();
    let updated = state
        .store
        .update_endpoint(id, &patch, at)
        .await?
        .ok_or_else(|| endpoint_not_found(id))?;
    Ok(EndpointView::of(updated, at))
}

/// Replace the secret; the previous one signs too for `webhooks.secret_rotation_overlap`.
pub async fn rotate(state: &AppState, id: &str) -> Result<RotatedSecret, ApiError> {
    let at = now();
    let overlap = time::Duration::try_from(state.settings.webhooks.secret_rotation_overlap())
        .map_err(ApiError::internal)?;
    let secret = new_secret()?;
    let endpoint = state
        .store
        .rotate_endpoint_secret(id, &secret, at + overlap, at)
        .await?
        .ok_or_else(|| endpoint_not_found(id))?;
    Ok(RotatedSecret {
        secret,
        previous_secret_expires_at: at + overlap,
        endpoint: EndpointView::of(endpoint, at),
    })
}

#[utoipa::path(
    post,
    path = "/v1/webhooks/endpoints",
    tag = "webhooks",
    summary = "Create a webhook endpoint",
    description = "Requires the `admin` scope. Messages of `environment` (default: the caller's) whose type is in \
        `event_types` (empty: all) are delivered to `url`, signed per Standard Webhooks with the \
        `secret` in this answer (shown only now). The URL's host must resolve to public addresses \
        unless `webhooks.allow_private_targets` is on.",
    security(("bearer" = [])),
    request_body = NewEndpoint,
    responses(
        (status = 201, description = "Created; `secret` is shown only now.", body = CreatedEndpoint),
        (status = 400, description = "`invalid_json`.", body = ErrorBody),
        (status = 401, description = "`unauthorized`.", body = ErrorBody),
        (status = 403, description = "`forbidden`: not an admin key.", body = ErrorBody),
        (status = 413, description = "`payload_too_large`.", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`.", body = ErrorBody),
        (status = 422, description = "`invalid_body` or `validation_failed` (every bad field in \
            `details`: url refused or unresolvable, unknown environment or event type, …).", body = ErrorBody),
        (status = 500, description = "`internal`.", body = ErrorBody),
        (status = 503, description = "`store_unavailable`.", body = ErrorBody),
    )
)]
pub async fn create_endpoint(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<NewEndpoint>,
) -> Result<(StatusCode, Json<CreatedEndpoint>), ApiError> {
    caller.require(KeyScope::Admin)?;
    Ok((
        StatusCode::CREATED,
        Json(create(&state, &caller, body).await?),
    ))
}

#[utoipa::path(
    get,
    path = "/v1/webhooks/endpoints",
    tag = "webhooks",
    summary = "List webhook endpoints",
    description = "Requires the `admin` scope. Oldest first; of `environment` (default: the caller's).",
    security(("bearer" = [])),
    params(PageParams, EndpointFilter),
    responses(
        (status = 200, description = "A page of endpoints.", body = Paginated<EndpointView>),
        (status = 400, description = "`invalid_query` or `invalid_pagination`.", body = ErrorBody),
        (status = 401, description = "`unauthorized`.", body = ErrorBody),
        (status = 403, description = "`forbidden`: not an admin key.", body = ErrorBody),
        (status = 500, description = "`internal`.", body = ErrorBody),
        (status = 503, description = "`store_unavailable`.", body = ErrorBody),
    )
)]
pub async fn list_endpoints(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<EndpointListQuery>,
) -> Result<Json<Value>, ApiError> {
    caller.require(KeyScope::Admin)?;
    let page = page_of(query.page, query.page_size)?;
    let environment = query
        .environment
        .unwrap_or_else(|| caller.key.environment.clone());
    let at = now();
    let endpoints = state
        .store
        .list_endpoints(Some(&environment), page)
        .await?
        .map(|e| EndpointView::of(e, at));
    Ok(Json(paginated(endpoints, page)))
}

#[utoipa::path(
    get,
    path = "/v1/webhooks/endpoints/{id}",
    tag = "webhooks",
    summary = "Get a webhook endpoint",
    description = "Requires the `admin` scope. Secrets are never shown.",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The endpoint's id (`ep_…`).")),
    responses(
        (status = 200, description = "The endpoint.", body = EndpointView),
        (status = 401, description = "`unauthorized`.", body = ErrorBody),
        (status = 403, description = "`forbidden`: not an admin key.", body = ErrorBody),
        (status = 404, description = "`webhook_endpoint_not_found`.", body = ErrorBody),
        (status = 500, description = "`internal`.", body = ErrorBody),
        (status = 503, description = "`store_unavailable`.", body = ErrorBody),
    )
)]
pub async fn get_endpoint(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<EndpointView>, ApiError> {
    caller.require(KeyScope::Admin)?;
    Ok(Json(EndpointView::of(load(&state, &id).await?, now())))
}

#[utoipa::path(
    patch,
    path = "/v1/webhooks/endpoints/{id}",
    tag = "webhooks",
    summary = "Update a webhook endpoint",
    description = "Requires the `admin` scope. Changes the fields given (`url`, `event_types`, `description`); a \
        new URL passes the same checks as at creation.",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The endpoint's id (`ep_…`).")),
    request_body = EndpointUpdate,
    responses(
        (status = 200, description = "The updated endpoint.", body = EndpointView),
        (status = 400, description = "`invalid_json`.", body = ErrorBody),
        (status = 401, description = "`unauthorized`.", body = ErrorBody),
        (status = 403, description = "`forbidden`: not an admin key.", body = ErrorBody),
        (status = 404, description = "`webhook_endpoint_not_found`.", body = ErrorBody),
        (status = 413, description = "`payload_too_large`.", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`.", body = ErrorBody),
        (status = 422, description = "`invalid_body` or `validation_failed`.", body = ErrorBody),
        (status = 500, description = "`internal`.", body = ErrorBody),
        (status = 503, description = "`store_unavailable`.", body = ErrorBody),
    )
)]
pub async fn update_endpoint(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<EndpointUpdate>,
) -> Result<Json<EndpointView>, ApiError> {
    caller.require(KeyScope::Admin)?;
    Ok(Json(update(&state, &id, body).await?))
}

#[utoipa::path(
    delete,
    path = "/v1/webhooks/endpoints/{id}",
    tag = "webhooks",
    summary = "Delete a webhook endpoint",
    description = "Requires the `admin` scope. Deletes the endpoint with its delivery log; nothing more is sent to it.",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The endpoint's id (`ep_…`).")),
    responses(
        (status = 204, description = "Deleted."),
        (status = 401, description = "`unauthorized`.", body = ErrorBody),
        (status = 403, description = "`forbidden`: not an admin key.", body = ErrorBody),
        (status = 404, description = "`webhook_endpoint_not_found`.", body = ErrorBody),
        (status = 500, description = "`internal`.", body = ErrorBody),
        (status = 503, description = "`store_unavailable`.", body = ErrorBody),
    )
)]
pub async fn delete_endpoint(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    caller.require(KeyScope::Admin)?;
    if state.store.delete_endpoint(&id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(endpoint_not_found(&id))
    }
}

#[utoipa::path(
    post,
    path = "/v1/webhooks/endpoints/{id}/enable",
    tag = "webhooks",
    summary = "Enable a webhook endpoint",
    description = "Requires the `admin` scope. New messages are delivered again; messages that failed while it was \
        disabled can be sent with `…/recover`. Idempotent.",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The endpoint's id (`ep_…`).")),
    responses(
        (status = 200, description = "The endpoint.", body = EndpointView),
        (status = 401, description = "`unauthorized`.", body = ErrorBody),
        (status = 403, description = "`forbidden`: not an admin key.", body = ErrorBody),
        (status = 404, description = "`webhook_endpoint_not_found`.", body = ErrorBody),
        (status = 500, description = "`internal`.", body = ErrorBody),
        (status = 503, description = "`store_unavailable`.", body = ErrorBody),
    )
)]
pub async fn enable_endpoint(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<EndpointView>, ApiError> {
    caller.require(KeyScope::Admin)?;
    let at = now();
    let e = state
        .store
        .set_endpoint_disabled(&id, None, at)
        .await?
        .ok_or_else(|| endpoint_not_found(&id))?;
    Ok(Json(EndpointView::of(e, at)))
}

#[utoipa::path(
    post,
    path = "/v1/webhooks/endpoints/{id}/disable",
    tag = "webhooks",
    summary = "Disable a webhook endpoint",
    description = "Requires the `admin` scope. Nothing is sent to it until it is enabled; its pending messages fail \
        (`…/recover` sends them later).",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The endpoint's id (`ep_…`).")),
    responses(
        (status = 200, description = "The endpoint.", body = EndpointView),
        (status = 401, description = "`unauthorized`.", body = ErrorBody),
        (status = 403, description = "`forbidden`: not an admin key.", body = ErrorBody),
        (status = 404, description = "`webhook_endpoint_not_found`.", body = ErrorBody),
        (status = 500, description = "`internal`.", body = ErrorBody),
        (status = 503, description = "`store_unavailable`.", body = ErrorBody),
    )
)]
pub async fn disable_endpoint(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<EndpointView>, ApiError> {
    caller.require(KeyScope::Admin)?;
    let at = now();
    let e = state
        .store
        .set_endpoint_disabled(&id, Some("manual"), at)
        .await?
        .ok_or_else(|| endpoint_not_found(&id))?;
    Ok(Json(EndpointView::of(e, at)))
}

#[utoipa::path(
    post,
    path = "/v1/webhooks/endpoints/{id}/rotate-secret",
    tag = "webhooks",
    summary = "Rotate a webhook endpoint's secret",
    description = "Requires the `admin` scope. Returns the new secret (shown only now). For \
        `webhooks.secret_rotation_overlap_seconds` (default 24 h) deliveries carry two signatures, \
        space-separated: one with the new secret, one with the previous.",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The endpoint's id (`ep_…`).")),
    responses(
        (status = 200, description = "The new secret.", body = RotatedSecret),
        (status = 401, description = "`unauthorized`.", body = ErrorBody),
        (status = 403, description = "`forbidden`: not an admin key.", body = ErrorBody),
        (status = 404, description = "`webhook_endpoint_not_found`.", body = ErrorBody),
        (status = 500, description = "`internal`.", body = ErrorBody),
        (status = 503, description = "`store_unavailable`.", body = ErrorBody),
    )
)]
pub async fn rotate_secret(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<RotatedSecret>, ApiError> {
    caller.require(KeyScope::Admin)?;
    Ok(Json(rotate(&state, &id).await?))
}

#[utoipa::path(
    get,
    path = "/v1/webhooks/endpoints/{id}/messages",
    tag = "webhooks",
    summary = "List an endpoint's messages",
    description = "Requires the `admin` scope. The delivery log: each message sent (or to be sent) to the endpoint \
        with its status, newest first; `status` filters.",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The endpoint's id (`ep_…`)."), PageParams, MessageFilter),
    responses(
        (status = 200, description = "A page of messages.", body = Paginated<MessageView>),
        (status = 400, description = "`invalid_query` (e.g. an unknown status) or `invalid_pagination`.", body = ErrorBody),
        (status = 401, description = "`unauthorized`.", body = ErrorBody),
        (status = 403, description = "`forbidden`: not an admin key.", body = ErrorBody),
        (status = 404, description = "`webhook_endpoint_not_found`.", body = ErrorBody),
        (status = 500, description = "`internal`.", body = ErrorBody),
        (status = 503, description = "`store_unavailable`.", body = ErrorBody),
    )
)]
pub async fn list_messages(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiQuery(query): ApiQuery<MessageListQuery>,
) -> Result<Json<Value>, ApiError> {
    caller.require(KeyScope::Admin)?;
    let status = match query.status.as_deref() {
        None => None,
        Some(s) => Some(DeliveryStatus::parse(s).ok_or_else(|| {
            ApiError::new(ErrorCode::InvalidQuery, "invalid query parameters").with_details(vec![
                serde_json::json!({"field": "status",
                    "message": format!("unknown status '{s}'; expected pending, delivered or failed")}),
            ])
        })?),
    };
    let page = page_of(query.page, query.page_size)?;
    load(&state, &id).await?;
    let log = state
        .store
        .list_deliveries(&id, status, page)
        .await?
        .map(MessageView::from);
    Ok(Json(paginated(log, page)))
}

#[utoipa::path(
    get,
    path = "/v1/webhooks/endpoints/{id}/messages/{msg_id}/attempts",
    tag = "webhooks",
    summary = "List a message's delivery attempts",
    description = "Requires the `admin` scope. Every attempt to deliver the message to the endpoint, newest first: \
        HTTP status, latency, the start of the response body, or the error.",
    security(("bearer" = [])),
    params(
        ("id" = String, Path, description = "The endpoint's id (`ep_…`)."),
        ("msg_id" = String, Path, description = "The message id (its `webhook-id`)."),
        PageParams,
    ),
    responses(
        (status = 200, description = "A page of attempts.", body = Paginated<Attempt>),
        (status = 400, description = "`invalid_query` or `invalid_pagination`.", body = ErrorBody),
        (status = 401, description = "`unauthorized`.", body = ErrorBody),
        (status = 403, description = "`forbidden`: not an admin key.", body = ErrorBody),
        (status = 404, description = "`webhook_endpoint_not_found` or `webhook_message_not_found`.", body = ErrorBody),
        (status = 500, description = "`internal`.", body = ErrorBody),
        (status = 503, description = "`store_unavailable`.", body = ErrorBody),
    )
)]
pub async fn list_attempts(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, msg_id)): Path<(String, String)>,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> Result<Json<Value>, ApiError> {
    caller.require(KeyScope::Admin)?;
    let page = page_of(query.page, query.page_size)?;
    load(&state, &id).await?;
    if state.store.get_delivery(&id, &msg_id).await?.is_none() {
        return Err(message_not_found(&id, &msg_id));
    }
    Ok(Json(paginated(
        state.store.list_attempts(&id, &msg_id, page).await?,
        page,
    )))
}

#[utoipa::path(
    post,
    path = "/v1/webhooks/endpoints/{id}/messages/{msg_id}/redeliver",
    tag = "webhooks",
    summary = "Redeliver a message",
    description = "Requires the `admin` scope. Sends the message to the endpoint again as soon as the dispatcher \
        runs, whatever its status, with a new round of retries and the same `webhook-id`.",
    security(("bearer" = [])),
    params(
        ("id" = String, Path, description = "The endpoint's id (`ep_…`)."),
        ("msg_id" = String, Path, description = "The message id (its `webhook-id`)."),
    ),
    responses(
        (status = 202, description = "Queued.", body = MessageView),
        (status = 401, description = "`unauthorized`.", body = ErrorBody),
        (status = 403, description = "`forbidden`: not an admin key.", body = ErrorBody),
        (status = 404, description = "`webhook_endpoint_not_found` or `webhook_message_not_found`.", body = ErrorBody),
        (status = 500, description = "`internal`.", body = ErrorBody),
        (status = 503, description = "`store_unavailable`.", body = ErrorBody),
    )
)]
pub async fn redeliver(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, msg_id)): Path<(String, String)>,
) -> Result<(StatusCode, Json<MessageView>), ApiError> {
    caller.require(KeyScope::Admin)?;
    load(&state, &id).await?;
    let d = state
        .store
        .redeliver(&id, &msg_id, now())
        .await?
        .ok_or_else(|| message_not_found(&id, &msg_id))?;
    Ok((StatusCode::ACCEPTED, Json(d.into())))
}

#[utoipa::path(
    post,
    path = "/v1/webhooks/endpoints/{id}/recover",
    tag = "webhooks",
    summary = "Recover failed messages",
    description = "Requires the `admin` scope. Sends every message that failed for this endpoint and was created at \
        or after `since` again (e.g. after fixing and re-enabling it).",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The endpoint's id (`ep_…`).")),
    request_body = RecoverRequest,
    responses(
        (status = 202, description = "How many messages were queued.", body = Recovered),
        (status = 400, description = "`invalid_json`.", body = ErrorBody),
        (status = 401, description = "`unauthorized`.", body = ErrorBody),
        (status = 403, description = "`forbidden`: not an admin key.", body = ErrorBody),
        (status = 404, description = "`webhook_endpoint_not_found`.", body = ErrorBody),
        (status = 413, description = "`payload_too_large`.", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`.", body = ErrorBody),
        (status = 422, description = "`invalid_body` (`since` missing or not RFC 3339).", body = ErrorBody),
        (status = 500, description = "`internal`.", body = ErrorBody),
        (status = 503, description = "`store_unavailable`.", body = ErrorBody),
    )
)]
pub async fn recover(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<RecoverRequest>,
) -> Result<(StatusCode, Json<Recovered>), ApiError> {
    caller.require(KeyScope::Admin)?;
    load(&state, &id).await?;
    let recovered = state.store.recover_failed(&id, body.since, now()).await?;
    Ok((StatusCode::ACCEPTED, Json(Recovered { recovered })))
}
