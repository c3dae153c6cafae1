//! `GET /v1/experiments/{key}/stream`: an experiment's winner and status as Server-Sent
//! Events, for clients that cannot hold a WebSocket. The current snapshot first (`snapshot`),
//! then a `winner` or `status` event whenever any replica announces a change (the cache's
//! change stream: Redis pub/sub across replicas), and keep-alive comments. The stream ends
//! when the server shuts down.

use std::convert::Infallible;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::{Stream, StreamExt};
use tokio::sync::broadcast::error::RecvError;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use verdict_app::results::{Followed, change_kind};
use verdict_app::{Caller, ScopeParams};
use verdict_domain::WinnerSnapshot;

use crate::error::ApiError;
use crate::extract::{ApiPath, ApiQuery};
use crate::openapi::{ErrorBody, SseEvent};
use crate::state::AppState;

pub fn routes(router: OpenApiRouter<AppState>) -> OpenApiRouter<AppState> {
    router.routes(routes!(stream))
}

fn event(kind: &'static str, snapshot: &WinnerSnapshot) -> Event {
    Event::default()
        .event(kind)
        .json_data(snapshot)
        .unwrap_or_else(|_| Event::default().event(kind))
}

/// `GET /v1/experiments/{key}/stream`
#[utoipa::path(
    get,
    path = "/v1/experiments/{key}/stream",
    tag = "results",
    summary = "Winner and status changes as Server-Sent Events",
    description = "A `text/event-stream`: \
        first a `snapshot` event (the winner snapshot, as `GET …/winner`), then a `winner` or \
        `status` event with the new snapshot whenever the winner or the status changes, on any \
        replica. Keep-alive comments every 15 s. After a gap (the client fell behind) a fresh \
        `snapshot` is sent.",
    security(("bearer" = ["results:read"])),
    params(("key" = String, Path, description = "The experiment key or id."), ScopeParams),
    responses(
        (status = 200, description = "The event stream: each event's name and JSON data.",
            content_type = "text/event-stream", body = SseEvent),
        (status = 404, description = "`experiment_not_found`.", body = ErrorBody),
    )
)]
pub async fn stream(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(key): ApiPath<String>,
    ApiQuery(scope): ApiQuery<ScopeParams>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let scope = caller.scope(&scope)?;
    let followed = state.follow(&scope, &key).await?;
    let first = futures::stream::once(std::future::ready(Ok(event(
        "snapshot",
        &followed.snapshot,
    ))));
    // The stream ends at shutdown, or once the caller's credential is revoked or expires.
    let app = state.app.clone();
    let end = async move { app.push_ended(caller).await };
    let rest = futures::stream::unfold((followed, state), next_event).take_until(Box::pin(end));
    Ok(Sse::new(first.chain(rest)).keep_alive(KeepAlive::default()))
}

/// The next event of a followed experiment (`None`: the change stream closed).
async fn next_event(
    (mut followed, state): (Followed, AppState),
) -> Option<(Result<Event, Infallible>, (Followed, AppState))> {
    loop {
        let next = match followed.changes.recv().await {
            // Winner and status changes; metrics go to WebSocket subscribers only.
            Ok(change) if change.experiment_id() == followed.experiment.id => {
                match change.snapshot() {
                    Some(snapshot) => event(change_kind(&change), snapshot),
                    None => continue,
                }
            }
            Ok(_) => continue,
            // Fell behind: what changed is unknown, so send the state as it is now.
            Err(RecvError::Lagged(_)) => match state.snapshot_of(&followed.experiment).await {
                Ok(s) => event("snapshot", &s),
                Err(_) => continue,
            },
            Err(RecvError::Closed) => return None,
        };
        return Some((Ok(next), (followed, state)));
    }
}
