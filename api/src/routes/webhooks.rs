//! Webhook endpoints and their delivery log, svix-like:
//! `/v1/webhooks/endpoints[/{id}[/enable|/disable|/rotate-secret|/recover|/messages[/{msg_id}
//! [/attempts|/redeliver]]]]`; one experiment's deliveries to every endpoint:
//! `/v1/experiments/{key}/webhook-messages`.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use verdict_app::experiments::ScopedPageParams;
use verdict_app::webhooks::{
    CreatedEndpoint, EndpointFilter, EndpointListQuery, EndpointUpdate, EndpointView,
    MessageFilter, MessageListQuery, MessageView, NewEndpoint, RecoverRequest, Recovered,
    RotatedSecret,
};
use verdict_app::{Caller, PageParams, Paginated, ScopeParams};
use verdict_store::Attempt;

use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::openapi::ErrorBody;
use crate::state::AppState;

pub fn routes(router: OpenApiRouter<AppState>) -> OpenApiRouter<AppState> {
    router
        .routes(routes!(create_endpoint, list_endpoints))
        .routes(routes!(get_endpoint, update_endpoint, delete_endpoint))
        .routes(routes!(enable_endpoint))
        .routes(routes!(disable_endpoint))
        .routes(routes!(rotate_secret))
        .routes(routes!(list_messages))
        .routes(routes!(experiment_messages))
        .routes(routes!(list_attempts))
        .routes(routes!(redeliver))
        .routes(routes!(recover))
}

#[utoipa::path(
    post,
    path = "/v1/webhooks/endpoints",
    tag = "webhooks",
    summary = "Create a webhook endpoint",
    description = "Messages of `environment` (default: the caller's) whose type is in \
        `event_types` (empty: all) are delivered to `url`, signed per Standard Webhooks with the \
        `secret` in this answer (shown only now). The URL's host must resolve to public addresses \
        unless `webhooks.allow_private_targets` is on.",
    security(("bearer" = ["webhooks:manage"])),
    request_body = NewEndpoint,
    responses(
        (status = 201, description = "Created; `secret` is shown only now.", body = CreatedEndpoint),
        (status = 422, description = "`invalid_body` or `validation_failed` (every bad field in \
            `details`: url refused or unresolvable, unknown environment or event type, …).", body = ErrorBody),
    )
)]
pub async fn create_endpoint(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<NewEndpoint>,
) -> Result<(StatusCode, Json<CreatedEndpoint>), ApiError> {
    let created = state.create_endpoint(&caller, body).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

#[utoipa::path(
    get,
    path = "/v1/webhooks/endpoints",
    tag = "webhooks",
    summary = "List webhook endpoints",
    description = "Oldest first; of `environment` (default: the caller's).",
    security(("bearer" = ["webhooks:manage"])),
    params(PageParams, EndpointFilter),
    responses(
        (status = 200, description = "A page of endpoints.", body = Paginated<EndpointView>),
    )
)]
pub async fn list_endpoints(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<EndpointListQuery>,
) -> Result<Json<Paginated<EndpointView>>, ApiError> {
    Ok(Json(state.list_endpoints(&caller, query).await?))
}

#[utoipa::path(
    get,
    path = "/v1/webhooks/endpoints/{id}",
    tag = "webhooks",
    summary = "Get a webhook endpoint",
    description = "Secrets are never shown.",
    security(("bearer" = ["webhooks:manage"])),
    params(("id" = String, Path, description = "The endpoint's id (`ep_…`).")),
    responses(
        (status = 200, description = "The endpoint.", body = EndpointView),
        (status = 404, description = "`webhook_endpoint_not_found`.", body = ErrorBody),
    )
)]
pub async fn get_endpoint(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<EndpointView>, ApiError> {
    Ok(Json(state.endpoint(&caller, &id).await?))
}

#[utoipa::path(
    patch,
    path = "/v1/webhooks/endpoints/{id}",
    tag = "webhooks",
    summary = "Update a webhook endpoint",
    description = "Changes the fields given (`url`, `event_types`, `description`); a \
        new URL passes the same checks as at creation.",
    security(("bearer" = ["webhooks:manage"])),
    params(("id" = String, Path, description = "The endpoint's id (`ep_…`).")),
    request_body = EndpointUpdate,
    responses(
        (status = 200, description = "The updated endpoint.", body = EndpointView),
        (status = 404, description = "`webhook_endpoint_not_found`.", body = ErrorBody),
        (status = 422, description = "`invalid_body` or `validation_failed`.", body = ErrorBody),
    )
)]
pub async fn update_endpoint(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<EndpointUpdate>,
) -> Result<Json<EndpointView>, ApiError> {
    Ok(Json(state.update_endpoint(&caller, &id, body).await?))
}

#[utoipa::path(
    delete,
    path = "/v1/webhooks/endpoints/{id}",
    tag = "webhooks",
    summary = "Delete a webhook endpoint",
    description = "Deletes the endpoint with its delivery log; nothing more is sent to it.",
    security(("bearer" = ["webhooks:manage"])),
    params(("id" = String, Path, description = "The endpoint's id (`ep_…`).")),
    responses(
        (status = 204, description = "Deleted."),
        (status = 404, description = "`webhook_endpoint_not_found`.", body = ErrorBody),
    )
)]
pub async fn delete_endpoint(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    state.delete_endpoint(&caller, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    post,
    path = "/v1/webhooks/endpoints/{id}/enable",
    tag = "webhooks",
    summary = "Enable a webhook endpoint",
    description = "New messages are delivered again; messages that failed while it was \
        disabled can be sent with `…/recover`. Idempotent.",
    security(("bearer" = ["webhooks:manage"])),
    params(("id" = String, Path, description = "The endpoint's id (`ep_…`).")),
    responses(
        (status = 200, description = "The endpoint.", body = EndpointView),
        (status = 404, description = "`webhook_endpoint_not_found`.", body = ErrorBody),
    )
)]
pub async fn enable_endpoint(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<EndpointView>, ApiError> {
    Ok(Json(state.set_endpoint_enabled(&caller, &id, true).await?))
}

#[utoipa::path(
    post,
    path = "/v1/webhooks/endpoints/{id}/disable",
    tag = "webhooks",
    summary = "Disable a webhook endpoint",
    description = "Nothing is sent to it until it is enabled; its pending messages fail \
        (`…/recover` sends them later).",
    security(("bearer" = ["webhooks:manage"])),
    params(("id" = String, Path, description = "The endpoint's id (`ep_…`).")),
    responses(
        (status = 200, description = "The endpoint.", body = EndpointView),
        (status = 404, description = "`webhook_endpoint_not_found`.", body = ErrorBody),
    )
)]
pub async fn disable_endpoint(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<EndpointView>, ApiError> {
    Ok(Json(state.set_endpoint_enabled(&caller, &id, false).await?))
}

#[utoipa::path(
    post,
    path = "/v1/webhooks/endpoints/{id}/rotate-secret",
    tag = "webhooks",
    summary = "Rotate a webhook endpoint's secret",
    description = "Returns the new secret (shown only now). For \
        `webhooks.secret_rotation_overlap_seconds` (default 24 h) deliveries carry two signatures, \
        space-separated: one with the new secret, one with the previous.",
    security(("bearer" = ["webhooks:manage"])),
    params(("id" = String, Path, description = "The endpoint's id (`ep_…`).")),
    responses(
        (status = 200, description = "The new secret.", body = RotatedSecret),
        (status = 404, description = "`webhook_endpoint_not_found`.", body = ErrorBody),
    )
)]
pub async fn rotate_secret(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<RotatedSecret>, ApiError> {
    Ok(Json(state.rotate_endpoint_secret(&caller, &id).await?))
}

#[utoipa::path(
    get,
    path = "/v1/webhooks/endpoints/{id}/messages",
    tag = "webhooks",
    summary = "List an endpoint's messages",
    description = "The delivery log: each message sent (or to be sent) to the endpoint \
        with its status, newest first; `status` filters.",
    security(("bearer" = ["webhooks:manage"])),
    params(("id" = String, Path, description = "The endpoint's id (`ep_…`)."), PageParams, MessageFilter),
    responses(
        (status = 200, description = "A page of messages.", body = Paginated<MessageView>),
        (status = 400, description = "`invalid_query` (e.g. an unknown status) or `invalid_pagination`.", body = ErrorBody),
        (status = 404, description = "`webhook_endpoint_not_found`.", body = ErrorBody),
    )
)]
pub async fn list_messages(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiQuery(query): ApiQuery<MessageListQuery>,
) -> Result<Json<Paginated<MessageView>>, ApiError> {
    Ok(Json(state.list_messages(&caller, &id, query).await?))
}

#[utoipa::path(
    get,
    path = "/v1/experiments/{key}/webhook-messages",
    tag = "webhooks",
    summary = "List an experiment's webhook messages",
    description = "The deliveries of the experiment's messages (status changes, winner, \
        metric threshold crossings) to every endpoint, newest first, each with its endpoint \
        and where it stands. `…/webhooks/endpoints/{id}/messages/{msg_id}/attempts` lists a \
        delivery's attempts.",
    security(("bearer" = ["webhooks:manage"])),
    params(("key" = String, Path, description = "The experiment key or id."), ScopedPageParams),
    responses(
        (status = 200, description = "A page of messages.", body = Paginated<MessageView>),
        (status = 400, description = "`invalid_pagination`.", body = ErrorBody),
        (status = 404, description = "`experiment_not_found`.", body = ErrorBody),
    )
)]
pub async fn experiment_messages(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(key): ApiPath<String>,
    ApiQuery(query): ApiQuery<ScopedPageParams>,
) -> Result<Json<Paginated<MessageView>>, ApiError> {
    let scope = ScopeParams {
        environment: query.environment,
        organization: query.organization,
    };
    let page = PageParams {
        page: query.page,
        page_size: query.page_size,
    };
    Ok(Json(
        state
            .experiment_deliveries(&caller, scope, &key, page)
            .await?,
    ))
}

#[utoipa::path(
    get,
    path = "/v1/webhooks/endpoints/{id}/messages/{msg_id}/attempts",
    tag = "webhooks",
    summary = "List a message's delivery attempts",
    description = "Every attempt to deliver the message to the endpoint, newest first: \
        HTTP status, latency, the start of the response body, or the error.",
    security(("bearer" = ["webhooks:manage"])),
    params(
        ("id" = String, Path, description = "The endpoint's id (`ep_…`)."),
        ("msg_id" = String, Path, description = "The message id (its `webhook-id`)."),
        PageParams,
    ),
    responses(
        (status = 200, description = "A page of attempts.", body = Paginated<Attempt>),
        (status = 404, description = "`webhook_endpoint_not_found` or `webhook_message_not_found`.", body = ErrorBody),
    )
)]
pub async fn list_attempts(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((id, msg_id)): ApiPath<(String, String)>,
    ApiQuery(page): ApiQuery<PageParams>,
) -> Result<Json<Paginated<Attempt>>, ApiError> {
    Ok(Json(
        state.list_attempts(&caller, &id, &msg_id, page).await?,
    ))
}

#[utoipa::path(
    post,
    path = "/v1/webhooks/endpoints/{id}/messages/{msg_id}/redeliver",
    tag = "webhooks",
    summary = "Redeliver a message",
    description = "Sends the message to the endpoint again as soon as the dispatcher \
        runs, whatever its status, with a new round of retries and the same `webhook-id`.",
    security(("bearer" = ["webhooks:manage"])),
    params(
        ("id" = String, Path, description = "The endpoint's id (`ep_…`)."),
        ("msg_id" = String, Path, description = "The message id (its `webhook-id`)."),
    ),
    responses(
        (status = 202, description = "Queued.", body = MessageView),
        (status = 404, description = "`webhook_endpoint_not_found` or `webhook_message_not_found`.", body = ErrorBody),
    )
)]
pub async fn redeliver(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((id, msg_id)): ApiPath<(String, String)>,
) -> Result<(StatusCode, Json<MessageView>), ApiError> {
    let queued = state.redeliver(&caller, &id, &msg_id).await?;
    Ok((StatusCode::ACCEPTED, Json(queued)))
}

#[utoipa::path(
    post,
    path = "/v1/webhooks/endpoints/{id}/recover",
    tag = "webhooks",
    summary = "Recover failed messages",
    description = "Sends every message that failed for this endpoint and was created at \
        or after `since` again (e.g. after fixing and re-enabling it).",
    security(("bearer" = ["webhooks:manage"])),
    params(("id" = String, Path, description = "The endpoint's id (`ep_…`).")),
    request_body = RecoverRequest,
    responses(
        (status = 202, description = "How many messages were queued.", body = Recovered),
        (status = 404, description = "`webhook_endpoint_not_found`.", body = ErrorBody),
        (status = 422, description = "`invalid_body` (`since` missing or not RFC 3339).", body = ErrorBody),
    )
)]
pub async fn recover(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<RecoverRequest>,
) -> Result<(StatusCode, Json<Recovered>), ApiError> {
    let recovered = state.recover(&caller, &id, body).await?;
    Ok((StatusCode::ACCEPTED, Json(recovered)))
}
