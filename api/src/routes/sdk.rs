//! What SDKs that evaluate experiments locally fetch: the GrowthBook SDK payload at the path
//! GrowthBook SDKs call on their `apiHost`.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use verdict_app::Caller;
use verdict_app::sdk::Rendered;

use crate::error::ApiError;
use crate::state::AppState;

pub fn routes(router: OpenApiRouter<AppState>) -> OpenApiRouter<AppState> {
    router.routes(routes!(growthbook_features))
}

/// The route template whose `{client_key}` segment is a credential: taken from the path by
/// the authorization middleware, and never logged.
pub const CLIENT_KEY_ROUTE_PREFIX: &str = "/api/features/";

/// `path` as it may be logged: a client key in it replaced by `[redacted]`.
pub fn loggable_path(path: &str) -> std::borrow::Cow<'_, str> {
    match path.strip_prefix(CLIENT_KEY_ROUTE_PREFIX) {
        Some(_) => format!("{CLIENT_KEY_ROUTE_PREFIX}[redacted]").into(),
        None => path.into(),
    }
}

/// `GET /api/features/{client_key}`: the GrowthBook SDK payload.
#[utoipa::path(
    get,
    path = "/api/features/{client_key}",
    tag = "sdk",
    summary = "GrowthBook SDK payload",
    description = "The live experiments of the key's environment (and organization) as \
        GrowthBook features, for GrowthBook SDKs pointed at Verdict (`apiHost`) to evaluate \
        locally, with the same variants as the assignment API: one feature per experiment \
        key, `defaultValue` the control's config, and one rule: an experiment rule (`key`, \
        `seed`, `hashVersion`, `hashAttribute`, `coverage`, `weights`, `ranges`, \
        `variations`, `meta`, `namespace`, `condition`) for a running experiment, a `force` \
        rule with the winner's config once one is decided. Paused experiments are left out. \
        The client key is an API key with the right `assignments:read` (the `client` role), \
        given in the path as GrowthBook SDKs do. Answers carry an `ETag`; `If-None-Match` \
        with it answers 304 while nothing changed.",
    security(("bearer" = ["assignments:read"])),
    params(("client_key" = String, Path,
        description = "An API key with `assignments:read` (never logged).")),
    responses(
        (status = 200, description = "The payload: `{status, features, dateUpdated}`.",
            body = Object, content_type = "application/json",
            headers(("etag" = String, description = "The payload's version."))),
        (status = 304, description = "Unchanged since the `If-None-Match` ETag."),
    )
)]
pub async fn growthbook_features(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let payload = state.growthbook_payload(&caller).await?;
    Ok(versioned_json(&headers, &payload))
}

/// A JSON answer with its strong `ETag`, or 304 when `If-None-Match` names it.
pub fn versioned_json(request: &HeaderMap, rendered: &Rendered) -> Response {
    let unchanged = request
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| rendered.matches(v));
    let mut response = if unchanged {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let mut r = Response::new(Body::from(rendered.body.clone()));
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        r
    };
    let h = response.headers_mut();
    if let Ok(etag) = HeaderValue::from_str(&rendered.etag) {
        h.insert(header::ETAG, etag);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_key_in_the_path_is_never_logged() {
        assert_eq!(
            loggable_path("/api/features/vk_secret123"),
            "/api/features/[redacted]"
        );
        assert_eq!(loggable_path("/v1/experiments/k"), "/v1/experiments/k");
    }
}
