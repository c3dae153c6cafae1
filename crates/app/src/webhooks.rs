//! Webhook endpoints and their delivery log, svix-like:
//! `/v1/webhooks/endpoints[/{id}[/enable|/disable|/rotate-secret|/recover|/messages[/{msg_id}
//! [/attempts|/redeliver]]]]`; and one experiment's deliveries to every endpoint.
//!
//! Endpoint URLs pass the SSRF guard when created or changed (`verdict_webhooks::check_url`:
//! the host is resolved and every address judged, unless `webhooks.allow_private_targets`);
//! the dispatcher checks again at every delivery. A secret (`whsec_` + 32 random bytes) is
//! shown in the answer that creates it (creation, rotation) and never again.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};
use verdict_domain::validation::check_key;
use verdict_domain::{EventType, Problems};
use verdict_store::{Attempt, Delivery, DeliveryStatus, Endpoint, EndpointPatch};
use verdict_webhooks::{Secret, TargetError, check_url};

use crate::auth::{Caller, ScopeParams};
use crate::error::{AppError, ErrorCode};
use crate::pages::{PageParams, Paginated};
use crate::{App, now};

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
    /// The endpoint it is delivered to (`ep_…`).
    pub endpoint_id: String,
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
            endpoint_id: d.endpoint_id,
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
    pub page: Option<u32>,
    pub page_size: Option<u32>,
    pub environment: Option<String>,
}

/// The delivery log's query (pagination and [`MessageFilter`]).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MessageListQuery {
    pub page: Option<u32>,
    pub page_size: Option<u32>,
    pub status: Option<String>,
}

fn page_of(
    page: Option<u32>,
    page_size: Option<u32>,
) -> Result<verdict_store::PageRequest, AppError> {
    PageParams { page, page_size }.to_request()
}

fn endpoint_not_found(id: &str) -> AppError {
    AppError::new(
        ErrorCode::WebhookEndpointNotFound,
        format!("no webhook endpoint '{id}'"),
    )
}

fn message_not_found(endpoint: &str, message: &str) -> AppError {
    AppError::new(
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

async fn check_endpoint_url(app: &App, p: &mut Problems, url: &str) {
    if url.trim().is_empty() || url.len() > MAX_URL_LEN {
        p.push("url", format!("must be 1 to {MAX_URL_LEN} characters"));
        return;
    }
    if let Err(e) = check_url(url, app.0.settings.webhooks.allow_private_targets).await {
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

fn new_secret() -> Result<String, AppError> {
    let bytes: [u8; 32] = rand::random();
    Secret::generate(&bytes)
        .map(|s| s.expose())
        .map_err(AppError::internal)
}

/// The audit subject of endpoint `id`.
fn endpoint_subject(id: &str) -> String {
    format!("webhook_endpoint:{id}")
}

/// Endpoint `id`, if the caller may act in its environment (else it is not found).
async fn load(app: &App, caller: &Caller, id: &str) -> Result<Endpoint, AppError> {
    app.0
        .store
        .get_endpoint(id)
        .await?
        .filter(|e| caller.require_environment(&e.environment).is_ok())
        .ok_or_else(|| endpoint_not_found(id))
}

/// Create an endpoint: every problem of the input at once, then store it with a new secret.
async fn create(
    app: &App,
    caller: &Caller,
    body: NewEndpoint,
) -> Result<CreatedEndpoint, AppError> {
    let mut p = Problems::new();
    let environment = body
        .environment
        .unwrap_or_else(|| caller.environment().to_owned());
    check_key(&mut p, "environment", &environment);
    caller.require_environment(&environment)?;
    if !p.mentions("environment") && app.0.store.get_environment(&environment).await?.is_none() {
        p.push("environment", format!("no environment '{environment}'"));
    }
    check_endpoint_url(app, &mut p, &body.url).await;
    let event_types = parse_event_types(&mut p, &body.event_types);
    check_description(&mut p, &body.description);
    if !p.is_empty() {
        return Err(AppError::validation(p));
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
    app.0.store.create_endpoint(&endpoint).await?;
    Ok(CreatedEndpoint {
        endpoint: EndpointView::of(endpoint, at),
        secret,
    })
}

/// Change an endpoint's URL, event types or description.
async fn update(app: &App, id: &str, body: EndpointUpdate) -> Result<EndpointView, AppError> {
    let mut p = Problems::new();
    if let Some(url) = &body.url {
        check_endpoint_url(app, &mut p, url).await;
    }
    let event_types = body
        .event_types
        .as_deref()
        .map(|t| parse_event_types(&mut p, t));
    if let Some(d) = &body.description {
        check_description(&mut p, d);
    }
    if !p.is_empty() {
        return Err(AppError::validation(p));
    }
    let patch = EndpointPatch {
        url: body.url,
        description: body.description,
        event_types,
    };
    let at = now();
    let updated = app
        .0
        .store
        .update_endpoint(id, &patch, at)
        .await?
        .ok_or_else(|| endpoint_not_found(id))?;
    Ok(EndpointView::of(updated, at))
}

/// Replace the secret; the previous one signs too for `webhooks.secret_rotation_overlap`.
async fn rotate(app: &App, id: &str) -> Result<RotatedSecret, AppError> {
    let at = now();
    let overlap = time::Duration::try_from(app.0.settings.webhooks.secret_rotation_overlap())
        .map_err(AppError::internal)?;
    let secret = new_secret()?;
    let endpoint = app
        .0
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

impl App {
    /// Create an endpoint: every problem of the input at once, then store it with a new
    /// secret (in the answer only).
    pub async fn create_endpoint(
        &self,
        caller: &Caller,
        body: NewEndpoint,
    ) -> Result<CreatedEndpoint, AppError> {
        let created = create(self, caller, body).await?;
        let e = &created.endpoint;
        let details = json!({"url": e.url, "environment": e.environment});
        self.audited(
            caller,
            &endpoint_subject(&e.id),
            "webhook_endpoint.created",
            details,
        )
        .await;
        Ok(created)
    }

    /// A page of `environment`'s endpoints (default: the caller's), oldest first.
    pub async fn list_endpoints(
        &self,
        caller: &Caller,
        query: EndpointListQuery,
    ) -> Result<Paginated<EndpointView>, AppError> {
        let page = page_of(query.page, query.page_size)?;
        let environment = query
            .environment
            .unwrap_or_else(|| caller.environment().to_owned());
        caller.require_environment(&environment)?;
        let at = now();
        let endpoints = self
            .0
            .store
            .list_endpoints(Some(&environment), page)
            .await?;
        Ok(Paginated::of(endpoints, page).map(|e| EndpointView::of(e, at)))
    }

    pub async fn endpoint(&self, caller: &Caller, id: &str) -> Result<EndpointView, AppError> {
        Ok(EndpointView::of(load(self, caller, id).await?, now()))
    }

    /// Change an endpoint's URL, event types or description.
    pub async fn update_endpoint(
        &self,
        caller: &Caller,
        id: &str,
        body: EndpointUpdate,
    ) -> Result<EndpointView, AppError> {
        load(self, caller, id).await?;
        let updated = update(self, id, body).await?;
        let details = json!({"url": updated.url});
        self.audited(
            caller,
            &endpoint_subject(id),
            "webhook_endpoint.updated",
            details,
        )
        .await;
        Ok(updated)
    }

    /// Delete an endpoint with its delivery log.
    pub async fn delete_endpoint(&self, caller: &Caller, id: &str) -> Result<(), AppError> {
        load(self, caller, id).await?;
        if self.0.store.delete_endpoint(id).await? {
            self.audited(
                caller,
                &endpoint_subject(id),
                "webhook_endpoint.deleted",
                json!({}),
            )
            .await;
            Ok(())
        } else {
            Err(endpoint_not_found(id))
        }
    }

    /// Enable (`disabled_reason: None`) or disable (`Some("manual")`) an endpoint.
    pub async fn set_endpoint_enabled(
        &self,
        caller: &Caller,
        id: &str,
        enabled: bool,
    ) -> Result<EndpointView, AppError> {
        load(self, caller, id).await?;
        let at = now();
        let reason = (!enabled).then_some("manual");
        let e = self
            .0
            .store
            .set_endpoint_disabled(id, reason, at)
            .await?
            .ok_or_else(|| endpoint_not_found(id))?;
        let action = if enabled {
            "webhook_endpoint.enabled"
        } else {
            "webhook_endpoint.disabled"
        };
        self.audited(caller, &endpoint_subject(id), action, json!({}))
            .await;
        Ok(EndpointView::of(e, at))
    }

    /// Replace the secret; the previous one signs too for `webhooks.secret_rotation_overlap`.
    pub async fn rotate_endpoint_secret(
        &self,
        caller: &Caller,
        id: &str,
    ) -> Result<RotatedSecret, AppError> {
        load(self, caller, id).await?;
        let rotated = rotate(self, id).await?;
        self.audited(
            caller,
            &endpoint_subject(id),
            "webhook_endpoint.secret_rotated",
            json!({}),
        )
        .await;
        Ok(rotated)
    }

    /// A page of an endpoint's delivery log, newest first, optionally of one status.
    pub async fn list_messages(
        &self,
        caller: &Caller,
        id: &str,
        query: MessageListQuery,
    ) -> Result<Paginated<MessageView>, AppError> {
        let status = match query.status.as_deref() {
            None => None,
            Some(s) => Some(DeliveryStatus::parse(s).ok_or_else(|| {
                AppError::invalid_query(
                    "status",
                    format!("unknown status '{s}'; expected pending, delivered or failed"),
                )
            })?),
        };
        let page = page_of(query.page, query.page_size)?;
        load(self, caller, id).await?;
        let log = self.0.store.list_deliveries(id, status, page).await?;
        Ok(Paginated::of(log, page).map(MessageView::from))
    }

    /// A page of the deliveries of the experiment `key`'s messages (its status changes,
    /// winner and threshold crossings) to every endpoint, newest first.
    pub async fn experiment_deliveries(
        &self,
        caller: &Caller,
        scope: ScopeParams,
        key: &str,
        page: PageParams,
    ) -> Result<Paginated<MessageView>, AppError> {
        let page = page.to_request()?;
        let e = self.find(&caller.scope(&scope)?, key).await?;
        let log = self.0.store.list_experiment_deliveries(&e.id, page).await?;
        Ok(Paginated::of(log, page).map(MessageView::from))
    }

    /// A page of a message's delivery attempts, newest first.
    pub async fn list_attempts(
        &self,
        caller: &Caller,
        id: &str,
        message_id: &str,
        page: PageParams,
    ) -> Result<Paginated<Attempt>, AppError> {
        let page = page.to_request()?;
        load(self, caller, id).await?;
        if self.0.store.get_delivery(id, message_id).await?.is_none() {
            return Err(message_not_found(id, message_id));
        }
        Ok(Paginated::of(
            self.0.store.list_attempts(id, message_id, page).await?,
            page,
        ))
    }

    /// Send a message to the endpoint again, with a new round of retries and the same
    /// `webhook-id`.
    pub async fn redeliver(
        &self,
        caller: &Caller,
        id: &str,
        message_id: &str,
    ) -> Result<MessageView, AppError> {
        load(self, caller, id).await?;
        let d = self
            .0
            .store
            .redeliver(id, message_id, now())
            .await?
            .ok_or_else(|| message_not_found(id, message_id))?;
        self.audited(
            caller,
            &endpoint_subject(id),
            "webhook_endpoint.redelivered",
            json!({"message_id": message_id}),
        )
        .await;
        Ok(d.into())
    }

    /// Send again every message that failed for the endpoint since `since`.
    pub async fn recover(
        &self,
        caller: &Caller,
        id: &str,
        body: RecoverRequest,
    ) -> Result<Recovered, AppError> {
        load(self, caller, id).await?;
        let recovered = self.0.store.recover_failed(id, body.since, now()).await?;
        let details = json!({"since": body.since, "recovered": recovered});
        self.audited(
            caller,
            &endpoint_subject(id),
            "webhook_endpoint.recovered",
            details,
        )
        .await;
        Ok(Recovered { recovered })
    }
}
