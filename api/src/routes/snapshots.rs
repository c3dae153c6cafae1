//! `/v1/environments/{env}/publish` and `/v1/environments/{env}/snapshots`: published
//! config snapshots (publish, versions, the latest or any version with its `ETag`, a stream
//! of new versions), and the publish headers of live-impacting changes.

use std::convert::Infallible;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::response::Response;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::{Stream, StreamExt};
use serde::Serialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use verdict_app::publishing::{
    Changed, PublishAnswer, PublishOutcome, SnapshotListParams, SnapshotScope,
};
use verdict_app::{Caller, Paginated};
use verdict_domain::Publication;

use crate::error::ApiError;
use crate::extract::{ApiPath, ApiQuery};
use crate::openapi::{ErrorBody, SseEvent};
use crate::routes::sdk::versioned_json;
use crate::state::AppState;

pub fn routes(router: OpenApiRouter<AppState>) -> OpenApiRouter<AppState> {
    router
        .routes(routes!(publish))
        .routes(routes!(list_snapshots))
        .routes(routes!(latest_snapshot))
        .routes(routes!(snapshot_version))
        .routes(routes!(snapshot_stream))
}

/// `x-publish-attempted`: whether the change was live-impacting (so a publish followed).
pub const PUBLISH_ATTEMPTED: HeaderName = HeaderName::from_static("x-publish-attempted");
/// `x-publish-succeeded`: whether every scope the change touched was published.
pub const PUBLISH_SUCCEEDED: HeaderName = HeaderName::from_static("x-publish-succeeded");
/// `x-publish-error`: what failed (the publish job retries it).
pub const PUBLISH_ERROR: HeaderName = HeaderName::from_static("x-publish-error");

/// The publish headers of a change's answer.
pub fn publish_headers(outcome: &PublishOutcome) -> HeaderMap {
    let flag = |b: bool| HeaderValue::from_static(if b { "true" } else { "false" });
    let mut h = HeaderMap::new();
    h.insert(PUBLISH_ATTEMPTED, flag(outcome.attempted));
    if outcome.attempted {
        h.insert(PUBLISH_SUCCEEDED, flag(outcome.succeeded));
    }
    if let Some(error) = &outcome.error {
        // A header value holds visible ASCII only: anything else becomes '?'.
        let text: String = error
            .chars()
            .take(500)
            .map(|c| {
                if c.is_ascii_graphic() || c == ' ' {
                    c
                } else {
                    '?'
                }
            })
            .collect();
        if let Ok(v) = HeaderValue::from_str(&text) {
            h.insert(PUBLISH_ERROR, v);
        }
    }
    h
}

/// A change's JSON answer with its publish headers.
pub fn changed<T: Serialize>(c: Changed<T>) -> (HeaderMap, Json<T>) {
    (publish_headers(&c.publish), Json(c.value))
}

#[utoipa::path(
    post,
    path = "/v1/environments/{env}/publish",
    tag = "snapshots",
    summary = "Publish the config snapshot",
    description = "Compiles the live experiments of the environment (the caller's organization, \
        or `organization` with `scope:any`) into the GrowthBook SDK payload and records it as \
        the scope's next version when it changed since the latest (`created: false` \
        otherwise), then writes a new version to the configured targets (`[publish]`: a \
        directory, an S3-compatible bucket) as `snapshots/{version}.json`, `latest.json` and \
        `version.json`. Changes that affect what SDKs evaluate publish by themselves; this \
        route is for a first version, or after a target was fixed.",
    security(("bearer" = ["experiments:write"])),
    params(("env" = String, Path, description = "The environment key."), SnapshotScope),
    responses(
        (status = 200, description = "Published (or unchanged).", body = PublishAnswer),
        (status = 404, description = "`environment_not_found`.", body = ErrorBody),
        (status = 502, description = "`publish_failed`: the version is recorded but a target \
            did not take it (`details`: version, target), or it could not be recorded; the \
            publish job retries it.", body = ErrorBody),
    )
)]
pub async fn publish(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(env): ApiPath<String>,
    ApiQuery(query): ApiQuery<SnapshotScope>,
) -> Result<Json<PublishAnswer>, ApiError> {
    Ok(Json(state.publish_scope(&caller, &env, query).await?))
}

#[utoipa::path(
    get,
    path = "/v1/environments/{env}/snapshots",
    tag = "snapshots",
    summary = "List published snapshot versions",
    description = "The scope's versions, newest first, each with what triggered it (`manual`, \
        the change, `job`), who, its hash and size.",
    security(("bearer" = ["experiments:read"])),
    params(("env" = String, Path, description = "The environment key."), SnapshotListParams),
    responses(
        (status = 200, description = "A page of versions.", body = Paginated<Publication>),
    )
)]
pub async fn list_snapshots(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(env): ApiPath<String>,
    ApiQuery(params): ApiQuery<SnapshotListParams>,
) -> Result<Json<Paginated<Publication>>, ApiError> {
    Ok(Json(state.publications(&caller, &env, params).await?))
}

/// A version's body (the latest when `version` is `None`) with its `ETag` (or 304) and
/// `x-snapshot-version`.
async fn snapshot_answer(
    state: &AppState,
    caller: &Caller,
    env: &str,
    query: SnapshotScope,
    version: Option<u64>,
    request: &HeaderMap,
) -> Result<Response, ApiError> {
    let (publication, rendered) = state.snapshot(caller, env, query, version).await?;
    let mut response = versioned_json(request, &rendered);
    response
        .headers_mut()
        .insert("x-snapshot-version", HeaderValue::from(publication.version));
    Ok(response)
}

#[utoipa::path(
    get,
    path = "/v1/environments/{env}/snapshots/latest",
    tag = "snapshots",
    summary = "The latest published snapshot",
    description = "The body of the scope's latest version: a GrowthBook SDK payload \
        (`{status, features, dateUpdated}`). `ETag` / `If-None-Match` → 304 while it is \
        still the latest; `x-snapshot-version` names the version.",
    security(("bearer" = ["assignments:read"])),
    params(("env" = String, Path, description = "The environment key."), SnapshotScope),
    responses(
        (status = 200, description = "The snapshot.", body = Object,
            content_type = "application/json",
            headers(("etag" = String, description = "The version's strong ETag."),
                ("x-snapshot-version" = u64, description = "The version."))),
        (status = 304, description = "Unchanged since the `If-None-Match` ETag."),
        (status = 404, description = "`snapshot_not_found`: nothing published yet.",
            body = ErrorBody),
    )
)]
pub async fn latest_snapshot(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(env): ApiPath<String>,
    ApiQuery(query): ApiQuery<SnapshotScope>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    snapshot_answer(&state, &caller, &env, query, None, &headers).await
}

#[utoipa::path(
    get,
    path = "/v1/environments/{env}/snapshots/{version}",
    tag = "snapshots",
    summary = "A published snapshot version",
    description = "The body of one version, as it was published. `ETag` / `If-None-Match` → \
        304.",
    security(("bearer" = ["assignments:read"])),
    params(
        ("env" = String, Path, description = "The environment key."),
        ("version" = u64, Path, minimum = 1, description = "The version."),
        SnapshotScope,
    ),
    responses(
        (status = 200, description = "The snapshot.", body = Object,
            content_type = "application/json",
            headers(("etag" = String, description = "The version's strong ETag."),
                ("x-snapshot-version" = u64, description = "The version."))),
        (status = 304, description = "Unchanged since the `If-None-Match` ETag."),
        (status = 404, description = "`snapshot_not_found`.", body = ErrorBody),
    )
)]
pub async fn snapshot_version(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((env, version)): ApiPath<(String, u64)>,
    ApiQuery(query): ApiQuery<SnapshotScope>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    snapshot_answer(&state, &caller, &env, query, Some(version), &headers).await
}

/// How often a stream reads the latest version when this process published nothing (a
/// version another replica published is announced within this).
const STREAM_CHECK_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

#[utoipa::path(
    get,
    path = "/v1/environments/{env}/snapshots/stream",
    tag = "snapshots",
    summary = "Stream of new snapshot versions",
    description = "A `text/event-stream`: a `snapshot` event with the latest version's record \
        (`version`, `hash`, `size`, `trigger`, …) first (none while nothing is published), \
        then one per new version: at once when this replica published it, within 2 s when \
        another did. Fetch the body from `…/snapshots/{version}`. Keep-alive comments every \
        15 s; the stream ends when the key is revoked or the server shuts down.",
    security(("bearer" = ["assignments:read"])),
    params(("env" = String, Path, description = "The environment key."), SnapshotScope),
    responses(
        (status = 200, description = "The event stream: each event's name and JSON data.",
            content_type = "text/event-stream", body = SseEvent),
    )
)]
pub async fn snapshot_stream(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(env): ApiPath<String>,
    ApiQuery(query): ApiQuery<SnapshotScope>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let scope = state.snapshot_stream_scope(&caller, &env, query)?;
    let first = state.latest_publication(&scope).await?;
    let app = state.app.clone();
    let end = async move { app.push_ended(caller).await };
    let sent = first.as_ref().map(|p| p.version);
    let changes =
        futures::stream::unfold((state, scope, sent), |(state, scope, sent)| async move {
            loop {
                state.publication_changed(STREAM_CHECK_EVERY).await;
                // A failed read (the store down) sends nothing; the next check retries.
                if let Ok(Some(latest)) = state.latest_publication(&scope).await
                    && Some(latest.version) != sent
                {
                    let version = Some(latest.version);
                    return Some((Ok(snapshot_event(&latest)), (state, scope, version)));
                }
            }
        });
    let events = futures::stream::iter(first.map(|p| Ok(snapshot_event(&p))))
        .chain(changes)
        .take_until(Box::pin(end));
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}

fn snapshot_event(p: &Publication) -> Event {
    Event::default()
        .event("snapshot")
        .data(serde_json::to_string(p).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_headers_say_what_was_attempted_and_what_failed() {
        let none = publish_headers(&PublishOutcome::default());
        assert_eq!(none.get(PUBLISH_ATTEMPTED).unwrap(), "false");
        assert!(none.get(PUBLISH_SUCCEEDED).is_none());
        let failed = publish_headers(&PublishOutcome {
            attempted: true,
            succeeded: false,
            error: Some("s3 target: connexion refusée\n".into()),
        });
        assert_eq!(failed.get(PUBLISH_SUCCEEDED).unwrap(), "false");
        assert_eq!(
            failed.get(PUBLISH_ERROR).unwrap(),
            "s3 target: connexion refus?e?"
        );
    }
}
