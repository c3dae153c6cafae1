//! `/v1/audit`: who changed API keys, environments, audiences and webhook endpoints
//! (experiments' changes are at `/v1/experiments/{key}/audit`).

use axum::Json;
use axum::extract::State;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use verdict_app::audit::AuditQuery;
use verdict_app::{Caller, Paginated};
use verdict_store::AuditEntry;

use crate::error::ApiError;
use crate::extract::ApiQuery;
use crate::state::AppState;

pub fn routes(router: OpenApiRouter<AppState>) -> OpenApiRouter<AppState> {
    router.routes(routes!(audit_log))
}

#[utoipa::path(
    get,
    path = "/v1/audit",
    tag = "api-keys",
    summary = "Changes of a key, environment, audience or webhook endpoint",
    description = "Also needs `scope:any` (these subjects belong to the whole deployment). \
        Newest first: each entry's actor (`key:<id>` or `jwt:<subject>`), action (e.g. \
        `api_key.created`, `api_key.revoked`, `environment.created`, `audience.updated`, \
        `webhook_endpoint.secret_rotated`), time and details.",
    security(("bearer" = ["audit:read"])),
    params(AuditQuery),
    responses(
        (status = 200, description = "A page of audit entries.", body = Paginated<AuditEntry>),
    )
)]
pub async fn audit_log(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<AuditQuery>,
) -> Result<Json<Paginated<AuditEntry>>, ApiError> {
    Ok(Json(state.audit_log(&caller, query).await?))
}
