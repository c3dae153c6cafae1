//! The OpenAPI document's frame, the schemas every operation shares, and how it is served
//! (`GET /openapi.json`, `GET /docs`: [`crate::routes::docs`]).
//!
//! The document is generated from the code: every handler carries a `#[utoipa::path]`
//! annotation and its module registers it with `utoipa_axum::routes!`, which adds the route
//! to the router *and* its operation to the document in one step; the router that serves
//! requests and the document are split from that one value, so the document lists exactly
//! the routes served (`api/tests/openapi.rs` checks both ways). Response bodies are the
//! application's typed answers, so the schemas are true by construction.
//!
//! Handlers declare only what is particular to them. The responses every operation of a
//! kind can give are declared once, here ([`add_shared_responses`]): 401/403/500/503 on
//! every authenticated operation; 400/413/415/422 on every operation with a JSON body; 400
//! on every operation with path or query parameters.

use std::sync::Arc;

use serde_json::Value;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::{Operation, ParameterIn, PathItem};
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi as Document, Ref, RefOr, ResponseBuilder};
use utoipa::{Modify, OpenApi, ToSchema};
use verdict_app::ErrorCode;
use verdict_app::events::EventInput;

use crate::state::DocPages;

/// The document's frame; paths and their schemas are added by the router.
#[derive(Debug, OpenApi)]
#[openapi(
    info(
        title = "Verdict",
        description = "Experimentation (A/B testing) backend: experiments, assignment, event \
            ingestion, results and winners.\n\n\
            **Authentication.** Every `/v1` route takes a credential as \
            `Authorization: Bearer <credential>` (security scheme `bearer`): an API key \
            (`vk_…`) or, when configured, a JWT. Each operation requires one right, named in \
            its security requirement and its description (e.g. `experiments:write`); a \
            caller holds the rights of its roles: built-in `viewer`, `experimenter`, \
            `operator`, `admin`, `client`, `internal`, or roles the deployment configures. \
            The right is checked before the request body is read. Callers are bound to an \
            environment and optionally an organization (an organization also sees the \
            environment's global experiments); acting in others with the `environment` / \
            `organization` query parameters needs the right `scope:any`.\n\n\
            **Errors.** Every error answers `{\"error\": {\"code\", \"message\", \"details\"}}` \
            (schema `ErrorBody`); `code` is a stable identifier with exactly one HTTP status. \
            Any route can also answer 404 `route_not_found` (no such path) or 405 \
            `method_not_allowed`. 429 and 503 carry `Retry-After`.\n\n\
            **Request ids.** Every response carries `x-request-id` (the client's, or a new one)."
    ),
    modifiers(&BearerScheme),
    components(schemas(ErrorBody, ErrorObject, EventInput)),
    tags(
        (name = "health", description = "Liveness and readiness (no authentication)."),
        (name = "docs", description = "This document and its rendering (no authentication)."),
        (name = "api-keys", description = "API keys and the roles they carry."),
        (name = "environments", description = "Environments."),
        (name = "audiences", description = "Reusable targeting rules per environment."),
        (name = "experiments", description = "Experiments and their lifecycle."),
        (name = "assignments", description = "Which variant a subject sees."),
        (name = "sdk", description = "Payloads for SDKs that evaluate experiments locally \
            (GrowthBook SDKs)."),
        (name = "events", description = "Event ingestion."),
        (name = "results", description = "Winner snapshot and per-variant results."),
        (name = "webhooks", description = "Webhook endpoints, their secrets and delivery log. \
            Deliveries follow Standard Webhooks: headers `webhook-id`, `webhook-timestamp`, \
            `webhook-signature` (`v1,<base64 HMAC-SHA256 of \"{id}.{timestamp}.{body}\">`)."),
        (name = "internal", description = "Job runs for cron operators."),
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

/// Every operation of `item`.
fn operations(item: &mut PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        &mut item.get,
        &mut item.put,
        &mut item.post,
        &mut item.delete,
        &mut item.options,
        &mut item.head,
        &mut item.patch,
        &mut item.trace,
    ]
    .into_iter()
    .filter_map(Option::as_mut)
}

/// The push routes: they answer with a stream that stays open (SSE) or upgrade the
/// connection (WebSocket), so the request time limit does not apply to them (nor its 408).
pub(crate) const PUSH_ROUTES: [&str; 4] = [
    "/v1/experiments/{key}/stream",
    "/v1/ws",
    "/sub/{client_key}",
    "/v1/environments/{env}/snapshots/stream",
];

/// The operations whose success answers carry the `x-publish-*` headers of the publish the
/// change caused (their handlers answer through `routes::snapshots::changed`).
pub(crate) const PUBLISHING_OPERATIONS: [(&str, &str); 8] = [
    ("POST", "/v1/experiments"),
    ("PATCH", "/v1/experiments/{key}"),
    ("DELETE", "/v1/experiments/{key}"),
    ("PUT", "/v1/experiments/{key}/variants"),
    ("POST", "/v1/experiments/{key}/status"),
    ("POST", "/v1/experiments/{key}/activate"),
    ("POST", "/v1/experiments/{key}/winner"),
    ("PUT", "/v1/environments/{env}/audiences/{key}"),
];

/// Document the publish headers on the success responses of [`PUBLISHING_OPERATIONS`].
fn add_publish_headers(doc: &mut Document) {
    let headers = [
        (
            "x-publish-attempted",
            Type::Boolean,
            "Whether the change affects what SDKs evaluate (then its config snapshots were \
             published).",
        ),
        (
            "x-publish-succeeded",
            Type::Boolean,
            "With a publish: whether it reached the store and every target.",
        ),
        (
            "x-publish-error",
            Type::String,
            "What failed; the publish job retries it. The change itself is made either way.",
        ),
    ];
    for (method, path) in PUBLISHING_OPERATIONS {
        let item =
            doc.paths.paths.get_mut(path).unwrap_or_else(|| {
                panic!("PUBLISHING_OPERATIONS names {path}, which is not routed")
            });
        let op = match method {
            "POST" => item.post.as_mut(),
            "PUT" => item.put.as_mut(),
            "PATCH" => item.patch.as_mut(),
            "DELETE" => item.delete.as_mut(),
            _ => None,
        }
        .unwrap_or_else(|| panic!("PUBLISHING_OPERATIONS names {method} {path}, not routed"));
        for (_, response) in op
            .responses
            .responses
            .iter_mut()
            .filter(|(status, _)| status.starts_with('2'))
        {
            if let RefOr::T(response) = response {
                for (name, ty, description) in &headers {
                    let header = HeaderBuilder::new()
                        .schema(ObjectBuilder::new().schema_type(ty.clone()))
                        .description(Some(*description))
                        .build();
                    response.headers.insert((*name).to_owned(), header);
                }
            }
        }
    }
}

/// Add, to every operation that does not declare them itself, the error responses its kind
/// can give (see the module docs).
pub fn add_shared_responses(doc: &mut Document) {
    let roles = verdict_domain::RoleBook::default();
    for (path, item) in doc.paths.paths.iter_mut() {
        let push = PUSH_ROUTES.contains(&path.as_str());
        for op in operations(item) {
            describe_right(op, &roles);
            if !push {
                shared(
                    op,
                    "408",
                    "`request_timeout`: the request took longer than \
                     `server.request_timeout_seconds`.",
                );
            }
            let secured = op.security.as_ref().is_some_and(|s| !s.is_empty());
            let has_body = op.request_body.is_some();
            let params = op.parameters.as_deref().unwrap_or_default();
            let has_query = params.iter().any(|p| p.parameter_in == ParameterIn::Query);
            let paged = params.iter().any(|p| p.name == "page");
            let has_path = params.iter().any(|p| p.parameter_in == ParameterIn::Path);
            let mut bad_request = Vec::new();
            if has_body {
                bad_request.push("`invalid_json`");
            }
            if has_path {
                bad_request.push("`invalid_path`");
            }
            if has_query {
                bad_request.push("`invalid_query`");
            }
            if paged {
                bad_request.push("`invalid_pagination`");
            }
            if !bad_request.is_empty() {
                shared(op, "400", &format!("{}.", bad_request.join(" or ")));
            }
            if secured {
                shared(
                    op,
                    "401",
                    "`unauthorized`: no credential, or an invalid, expired or revoked one.",
                );
                shared(
                    op,
                    "403",
                    "`forbidden`: the caller lacks the right this operation requires, or names \
                     another environment or organization without `scope:any`; \
                     `details[0].missing_right` names the right.",
                );
            }
            if has_body {
                shared(
                    op,
                    "413",
                    "`payload_too_large`: over `server.request_body_limit_bytes`.",
                );
                shared(
                    op,
                    "415",
                    "`unsupported_media_type`: send `content-type: application/json`.",
                );
                shared(
                    op,
                    "422",
                    "`invalid_body`: the JSON does not have the expected shape (`details` names \
                     the field).",
                );
            }
            if secured {
                shared(
                    op,
                    "500",
                    "`internal`: see the server log for the request id.",
                );
                shared(
                    op,
                    "503",
                    "`store_unavailable` or `overloaded` (retry after `Retry-After` seconds).",
                );
            }
        }
    }
    add_publish_headers(doc);
}

/// Start the description of a protected operation with the right it requires and the
/// built-in roles that hold it (from the same declaration the server checks).
fn describe_right(op: &mut Operation, roles: &verdict_domain::RoleBook) {
    let declared = op
        .security
        .iter()
        .flatten()
        .filter_map(|req| serde_json::to_value(req).ok())
        .filter_map(|v| {
            v.get(crate::rights::SCHEME)?
                .get(0)?
                .as_str()
                .map(str::to_owned)
        })
        .find_map(|name| verdict_domain::Right::parse(&name));
    let Some(right) = declared else {
        return;
    };
    let holders = roles.holders(right).join(", ");
    let sentence = format!("Requires the right `{right}` (built-in roles: {holders}).");
    op.description = Some(match op.description.take() {
        Some(rest) if !rest.is_empty() => format!("{sentence} {rest}"),
        _ => sentence,
    });
}

/// `status` answered with an `ErrorBody`, unless the operation declares it.
fn shared(op: &mut Operation, status: &str, description: &str) {
    op.responses
        .responses
        .entry(status.to_owned())
        .or_insert_with(|| {
            ResponseBuilder::new()
                .description(description)
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("ErrorBody")))
                        .build(),
                )
                .build()
                .into()
        });
}

impl DocPages {
    /// The served forms of `doc`: the JSON, and Swagger UI (embedded in the binary at a
    /// fixed version: the page works offline and loads nothing from another host) set to
    /// render `/openapi.json`.
    pub fn of(doc: &Document) -> Self {
        let json = doc.to_pretty_json().unwrap_or_else(|e| {
            format!(r#"{{"error": "cannot serialize the OpenAPI document: {e}"}}"#)
        });
        // No validator badge: it would send the document to an outside service.
        let swagger = Arc::new(
            utoipa_swagger_ui::Config::new(["/openapi.json"])
                .validator_url("none")
                .try_it_out_enabled(true),
        );
        // Served at `/docs`, its files at `/docs/<file>`: a base makes the page's relative
        // references (`./swagger-ui.css`, …) resolve there.
        let html = utoipa_swagger_ui::serve("index.html", swagger.clone())
            .ok()
            .flatten()
            .map(|page| {
                String::from_utf8_lossy(&page.bytes)
                    .replacen("<head>", "<head>\n    <base href=\"/docs/\">", 1)
                    .replacen("<title>Swagger UI</title>", "<title>Verdict API</title>", 1)
            })
            .unwrap_or_else(|| {
                "<!doctype html><title>Verdict API</title>\
                 <p>The API description is at <a href=\"/openapi.json\">/openapi.json</a>.</p>"
                    .to_owned()
            });
        Self {
            json,
            html,
            swagger,
        }
    }
}

/// One Server-Sent Event of a push route: its name and its data (JSON text).
#[derive(Debug, ToSchema)]
pub struct SseEvent {
    /// The event's name (`event:`).
    pub event: String,
    /// The event's data (`data:`): a JSON document.
    pub data: String,
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

/// `GET /healthz`.
#[derive(Debug, ToSchema)]
pub struct Health {
    #[schema(example = "ok")]
    pub status: String,
}
