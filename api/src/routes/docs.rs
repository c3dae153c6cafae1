//! `/openapi.json` and `/docs` (no authentication): the document and its rendering, made once
//! when the router is built ([`crate::state::DocPages`]).

use axum::extract::State;
use axum::http::header;
use axum::response::{Html, IntoResponse};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::state::AppState;

pub fn routes(router: OpenApiRouter<AppState>) -> OpenApiRouter<AppState> {
    router.routes(routes!(openapi_json)).routes(routes!(docs))
}

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
pub async fn openapi_json(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        state.docs.json.clone(),
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
pub async fn docs(State(state): State<AppState>) -> Html<String> {
    Html(state.docs.html.clone())
}
