//! The OpenAPI document (`GET /openapi.json`) and its rendering (`GET /docs`).
//!
//! The document is generated from the code: every handler carries a `#[utoipa::path]`
//! annotation and [`crate::startup::routes`] registers each one with `utoipa_axum::routes!`,
//! which adds the route to the router *and* its operation to the document in one step. The
//! router that serves requests and the document are split from that one value, so the
//! document lists exactly the routes served (`api/tests/openapi.rs` checks both ways).
//!
//! This module holds the document's frame ([`ApiDoc`]: info, tags, the `bearer` security
//! scheme), the shared schemas ([`ErrorBody`], [`Paginated`]) and schema-only descriptions of
//! the bodies handlers build with `json!` (they are never constructed: they only describe).

use std::sync::LazyLock;

use axum::http::header;
use axum::response::{Html, IntoResponse};
use serde::Serialize;
use serde_json::Value;
use utoipa::openapi::OpenApi as Document;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};
use utoipa_scalar::Scalar;
use verdict_domain::{ApiKey, Experiment};

use crate::error::ErrorCode;
use crate::routes::assignments::AssignmentView;
use crate::routes::events::EventInput;

/// The document's frame; paths and their schemas are added by the router.
#[derive(Debug, OpenApi)]
#[openapi(
    info(
        title = "Verdict",
        description = "Experimentation (A/B testing) backend: experiments, assignment, event \
            ingestion, results and winners.\n\n\
            **Authentication.** Every `/v1` route takes an API key as \
            `Authorization: Bearer <key>` (security scheme `bearer`). Each operation's \
            description names the scope it needs: `admin` (management; an admin key passes \
            every check) or `client` (assignment, events, results). Keys are bound to an \
            environment and optionally an organization; admin keys may act in others with the \
            `environment` / `organization` query parameters.\n\n\
            **Errors.** Every error answers `{\"error\": {\"code\", \"message\", \"details\"}}` \
            (schema `ErrorBody`); `code` is a stable identifier with exactly one HTTP status. \
            Any route can also answer 404 `route_not_found` (no such path) or 405 \
            `method_not_allowed`. 429 and 503 carry `Retry-After`.\n\n\
            **Request ids.** Every response carries `x-request-id` (the client's, or a new one)."
    ),
    modifiers(&BearerScheme),
    components(schemas(ErrorBody, ErrorObject, Pagination)),
    tags(
        (name = "health", description = "Liveness and readiness (no authentication)."),
        (name = "docs", description = "This document and its rendering (no authentication)."),
        (name = "api-keys", description = "API keys (admin scope)."),
        (name = "environments", description = "Environments (admin scope)."),
        (name = "audiences", description = "Reusable targeting rules per environment (admin scope)."),
        (name = "experiments", description = "Experiments and their lifecycle (admin scope)."),
        (name = "assignments", description = "Which variant a subject sees (client scope)."),
        (name = "events", description = "Event ingestion (client scope)."),
        (name = "results", description = "Winner snapshot and per-variant results (client scope)."),
        (name = "webhooks", description = "Webhook endpoints, their secrets and delivery log (admin scope). \
            Deliveries follow Standard Webhooks: headers `webhook-id`, `webhook-timestamp`, \
            `webhook-signature` (`v1,<base64 HMAC-SHA256 of \"{id}.{timestamp}.{body}\">`)."),
        (name = "internal", description = "Job runs for cron operators (internal scope)."),
    )
)]
pub struct ApiDoc;

/// The `bearer` HTTP security scheme: `Authorization: Bearer <api key>`.
#[derive(Debug)]
struct BearerScheme;

impl Modify for BearerScheme {
    fn modify(&self, openapi: &mut Document) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("vk_<48 hex characters>")
                    .description(Some(
                        "An API key: `Authorization: Bearer <key>`. Missing or bad: 401 \
                         `unauthorized`; lacking the route's scope: 403 `forbidden`.",
                    ))
                    .build(),
            ),
        );
    }
}

/// The complete document: the frame plus every routed operation.
pub fn document() -> Document {
    crate::startup::routes().into_openapi()
}

static DOCUMENT_JSON: LazyLock<String> = LazyLock::new(|| {
    document()
        .to_pretty_json()
        .unwrap_or_else(|e| format!(r#"{{"error": "cannot serialize the OpenAPI document: {e}"}}"#))
});

/// The docs page: Scalar renders the embedded document; the raw document is linked.
const DOCS_TEMPLATE: &str = r#"<!doctype html>
<html lang="en">
<head>
  <title>Verdict API</title>
  <meta charset="utf-8"/>
  <meta name="viewport" content="width=device-width, initial-scale=1"/>
</head>
<body>
  <noscript>
    This page renders the API description with JavaScript. The OpenAPI document itself is at
    <a href="/openapi.json">/openapi.json</a>.
  </noscript>
  <script id="api-reference" type="application/json">
    $spec
  </script>
  <script src="https://cdn.jsdelivr.net/npm/@scalar/api-reference"></script>
</body>
</html>
"#;

static DOCS_HTML: LazyLock<String> =
    LazyLock::new(|| Scalar::new(document()).custom_html(DOCS_TEMPLATE).to_html());

/// The OpenAPI document.
///
/// Generated from the code; lists every route this server has. No authentication.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "docs",
    operation_id = "openapi_document",
    responses(
        (status = 200, description = "The OpenAPI 3.1 document.", body = Object,
            content_type = "application/json"),
    )
)]
pub async fn openapi_json() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        DOCUMENT_JSON.as_str(),
    )
}

/// The API documentation page.
///
/// An HTML page rendering `/openapi.json` (Scalar). No authentication.
#[utoipa::path(
    get,
    path = "/docs",
    tag = "docs",
    operation_id = "docs_page",
    responses(
        (status = 200, description = "An HTML page.", body = String, content_type = "text/html"),
    )
)]
pub async fn docs() -> Html<&'static str> {
    Html(DOCS_HTML.as_str())
}

/// Every error: `{"error": {"code", "message", "details"}}`.
#[derive(Debug, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorObject,
}

/// The error itself.
#[derive(Debug, ToSchema)]
pub struct ErrorObject {
    /// A stable identifier clients can branch on; each maps to exactly one HTTP status.
    #[schema(schema_with = error_code_schema)]
    pub code: String,
    /// Human-readable; 5xx answers never carry internal details.
    pub message: String,
    /// Structured details, e.g. every invalid field as `{"field", "message"}`.
    pub details: Vec<Value>,
}

/// `code`: the enum of every code in [`ErrorCode::ALL`], so the document follows the table.
fn error_code_schema() -> Schema {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(ErrorCode::ALL.iter().map(|c| c.as_str())))
        .description(Some("A stable error code (see the error table)."))
        .into()
}

/// A page of a list: `{data, pagination}`.
#[derive(Debug, ToSchema)]
pub struct Paginated<T> {
    pub data: Vec<T>,
    pub pagination: Pagination,
}

/// Where a page sits: `page` and `page_size` as requested (defaults 1 and 20).
#[derive(Debug, ToSchema)]
pub struct Pagination {
    pub page: u32,
    pub page_size: u32,
    /// Items in the whole list.
    pub total: u64,
    pub total_pages: u64,
}

/// `GET /healthz`.
#[derive(Debug, ToSchema)]
pub struct Health {
    #[schema(example = "ok")]
    pub status: String,
}

/// `GET /readyz`.
#[derive(Debug, ToSchema)]
pub struct Readiness {
    #[schema(example = "ready")]
    pub status: String,
    /// The store backend, e.g. `sqlite`.
    pub store: String,
    pub cache: CacheReadiness,
}

/// The winner-snapshot cache as `/readyz` saw it.
#[derive(Debug, ToSchema)]
pub struct CacheReadiness {
    /// `memory` or `redis`.
    pub backend: String,
    /// `ok` or `unavailable` (reads then fall back to the store).
    pub status: String,
}

/// A new API key: the stored key plus its plaintext, shown in this answer only.
#[derive(Debug, ToSchema)]
pub struct CreatedApiKey {
    #[serde(flatten)]
    pub api_key: ApiKey,
    /// The plaintext key (`vk_` + 48 hex characters). Never shown again.
    pub key: String,
}

/// The outcome of a status change. Idempotent: already in the status → `changed: false`.
#[derive(Debug, ToSchema)]
pub struct StatusChangeResult {
    pub changed: bool,
    pub experiment: Experiment,
}

/// A QA override: `subject_id` always sees `variant`.
#[derive(Debug, ToSchema)]
pub struct ForcedAssignment {
    /// The experiment key.
    pub experiment: String,
    pub subject_id: String,
    pub variant: String,
}

/// Every live experiment's assignment for one subject.
#[derive(Debug, Serialize, ToSchema)]
pub struct SubjectAssignments<'a> {
    #[schema(value_type = String)]
    pub subject_id: &'a str,
    pub assignments: Vec<AssignmentView<'a>>,
}

/// One event, or a batch `{"events": [...]}` of up to `ingest.max_batch` events.
#[derive(Debug, ToSchema)]
#[serde(untagged)]
pub enum EventsRequest {
    One(EventInput),
    Batch(EventBatch),
}

/// A batch of events; each succeeds or fails on its own.
#[derive(Debug, ToSchema)]
pub struct EventBatch {
    #[schema(min_items = 1)]
    pub events: Vec<EventInput>,
}
