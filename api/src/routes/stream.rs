//! `GET /v1/experiments/{key}/stream`: an experiment's winner and status as Server-Sent
//! Events, for clients that cannot hold a WebSocket. The current snapshot first (`snapshot`),
//! then a `winner` or `status` event whenever any replica announces a change (the cache's
//! change stream: Redis pub/sub across replicas), and keep-alive comments.

use std::convert::Infallible;

use axum::extract::{Path, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use futures::StreamExt;
use tokio::sync::broadcast::error::RecvError;
use verdict_cache::{Cache, Change};
use verdict_domain::{Experiment, KeyScope, WinnerSnapshot};

use crate::auth::{Caller, ScopeParams};
use crate::error::ApiError;
use crate::extract::ApiQuery;
use crate::openapi::ErrorBody;
use crate::routes::experiments::find;
use crate::startup::AppState;

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
    description = "Requires the `client` scope (an admin key also passes). A `text/event-stream`: \
        first a `snapshot` event (the winner snapshot, as `GET …/winner`), then a `winner` or \
        `status` event with the new snapshot whenever the winner or the status changes, on any \
        replica. Keep-alive comments every 15 s. After a gap (the client fell behind) a fresh \
        `snapshot` is sent.",
    security(("bearer" = [])),
    params(("key" = String, Path, description = "The experiment key or id."), ScopeParams),
    responses(
        (status = 200, description = "The event stream.", content_type = "text/event-stream", body = String),
        (status = 400, description = "`invalid_query`.", body = ErrorBody),
        (status = 401, description = "`unauthorized`.", body = ErrorBody),
        (status = 403, description = "`forbidden`.", body = ErrorBody),
        (status = 404, description = "`experiment_not_found`.", body = ErrorBody),
        (status = 500, description = "`internal`.", body = ErrorBody),
        (status = 503, description = "`store_unavailable`.", body = ErrorBody),
    )
)]
pub async fn stream(
    State(state): State<AppState>,
    caller: Caller,
    Path(key): Path<String>,
    ApiQuery(params): ApiQuery<ScopeParams>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    caller.require(KeyScope::Client)?;
    let experiment = find(&state, &caller.scope(&params)?, &key).await?;
    // Subscribe before reading, so no change between the two is missed.
    let changes = state.snapshots.cache().subscribe();
    let current = state.snapshots.read(&state.store, &experiment).await?;
    let first = futures::stream::once(async move { Ok(event("snapshot", &current)) });
    let rest = futures::stream::unfold(
        (changes, state, experiment),
        |(mut changes, state, experiment): (_, AppState, Experiment)| async move {
            loop {
                let next = match changes.recv().await {
                    Ok(change) if change.snapshot().experiment_id == experiment.id => {
                        let kind = match &change {
                            Change::Winner { .. } => "winner",
                            Change::Status { .. } => "status",
                        };
                        event(kind, change.snapshot())
                    }
                    Ok(_) => continue,
                    // Fell behind: what changed is unknown, so send the state as it is now.
                    Err(RecvError::Lagged(_)) => {
                        match state.snapshots.read(&state.store, &experiment).await {
                            Ok(s) => event("snapshot", &s),
                            Err(_) => continue,
                        }
                    }
                    Err(RecvError::Closed) => return None,
                };
                return Some((Ok(next), (changes, state, experiment)));
            }
        },
    );
    Ok(Sse::new(first.chain(rest)).keep_alive(KeepAlive::default()))
}
