//! What SDKs that evaluate experiments locally fetch: the GrowthBook SDK payload at the path
//! GrowthBook SDKs call on their `apiHost`.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::{Stream, StreamExt};
use std::convert::Infallible;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use verdict_app::Caller;
use verdict_app::sdk::Rendered;

use crate::error::ApiError;
use crate::openapi::SseEvent;
use crate::state::AppState;

pub fn routes(router: OpenApiRouter<AppState>) -> OpenApiRouter<AppState> {
    router
        .routes(routes!(growthbook_features))
        .routes(routes!(growthbook_stream))
}

/// The routes whose last path segment (`{client_key}`) is a credential: taken from the path
/// by the authorization middleware, and never logged.
pub const CLIENT_KEY_ROUTE_PREFIXES: [&str; 2] = ["/api/features/", "/sub/"];

/// `path` as it may be logged: a client key in it replaced by `[redacted]`.
pub fn loggable_path(path: &str) -> std::borrow::Cow<'_, str> {
    match CLIENT_KEY_ROUTE_PREFIXES
        .iter()
        .find(|prefix| path.starts_with(*prefix))
    {
        Some(prefix) => format!("{prefix}[redacted]").into(),
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

/// How often a stream compares the payload with the last one it sent.
const STREAM_CHECK_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// `GET /sub/{client_key}`: the payload as Server-Sent Events.
#[utoipa::path(
    get,
    path = "/sub/{client_key}",
    tag = "sdk",
    summary = "GrowthBook SDK payload stream",
    description = "GrowthBook SDKs' streaming mode (`streaming: true`): a `text/event-stream` \
        whose `features` events carry the payload of `GET /api/features/{client_key}`, the \
        current one first, then each new one within about a second of the change (on any \
        replica). Keep-alive comments every 15 s. The stream ends when the key is revoked or \
        the server shuts down.",
    security(("bearer" = ["assignments:read"])),
    params(("client_key" = String, Path,
        description = "An API key with `assignments:read` (never logged).")),
    responses(
        (status = 200, description = "The event stream: each event's name and JSON data.",
            content_type = "text/event-stream", body = SseEvent),
    )
)]
pub async fn growthbook_stream(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let first = state.growthbook_payload(&caller).await?;
    let app = state.app.clone();
    let watcher = caller.clone();
    let end = async move { app.push_ended(watcher).await };
    let changes = futures::stream::unfold(
        (state, caller, first.clone()),
        |(state, caller, sent)| async move {
            loop {
                tokio::time::sleep(STREAM_CHECK_EVERY).await;
                // A failed read (the store down) sends nothing; the next check retries.
                if let Ok(now) = state.growthbook_payload(&caller).await
                    && now.etag != sent.etag
                {
                    return Some((Ok(features_event(&now)), (state, caller, now)));
                }
            }
        },
    );
    let events = futures::stream::once(std::future::ready(Ok(features_event(&first))))
        .chain(changes)
        .take_until(Box::pin(end));
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}

fn features_event(payload: &Rendered) -> Event {
    Event::default()
        .event("features")
        .data(String::from_utf8_lossy(&payload.body))
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
        assert_eq!(loggable_path("/sub/vk_secret123"), "/sub/[redacted]");
        assert_eq!(loggable_path("/v1/experiments/k"), "/v1/experiments/k");
    }
}
