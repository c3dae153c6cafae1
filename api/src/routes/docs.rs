//! `/openapi.json` and `/docs` (no authentication): the document and its rendering, made once
//! when the router is built ([`crate::state::DocPages`]).

use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use verdict_app::ErrorCode;

use crate::error::ApiError;
use crate::state::AppState;

pub fn routes(router: OpenApiRouter<AppState>) -> OpenApiRouter<AppState> {
    router
        .routes(routes!(openapi_json))
        .routes(routes!(docs))
        // The page's own files: not API operations, so not in the document.
        .route("/docs/{file}", get(docs_file))
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
/// An HTML page rendering `/openapi.json` (Swagger UI, embedded in the server: it works
/// offline and loads nothing from another host). No authentication.
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

/// One of Swagger UI's files (`/docs/swagger-ui.css`, …), from the binary; 404 for any
/// other name.
pub async fn docs_file(State(state): State<AppState>, Path(file): Path<String>) -> Response {
    match utoipa_swagger_ui::serve(&file, state.docs.swagger.clone()) {
        Ok(Some(found)) if file != "index.html" => (
            [
                (header::CONTENT_TYPE, found.content_type),
                (header::CACHE_CONTROL, "public, max-age=3600".to_owned()),
            ],
            found.bytes.into_owned(),
        )
            .into_response(),
        // The page itself is `/docs` (with its base set).
        Ok(Some(_)) => Redirect::permanent("/docs").into_response(),
        Ok(None) | Err(_) => {
            ApiError::new(ErrorCode::RouteNotFound, "no such file of the docs page").into_response()
        }
    }
}
