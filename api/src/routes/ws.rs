//! `GET /v1/ws`: winner and status changes, and new metrics, pushed over a WebSocket.
//!
//! Auth by `Authorization: Bearer` or `?token=` (browsers cannot set headers on a WebSocket),
//! `client` scope. The client sends `{"type": "subscribe", "experiment": KEY}` /
//! `{"type": "unsubscribe", "experiment": KEY}`; the server answers a subscribe with the
//! current snapshot (`{"type": "snapshot", "experiment", "snapshot"}`), then pushes
//! `{"type": "winner" | "status", "experiment", "snapshot"}` on every change announced by any
//! replica (the cache's change stream: Redis pub/sub across replicas), `{"type": "metrics",
//! "experiment", "metrics"}` with the primary metric per variant after an aggregation run
//! that folded events (at most once per `jobs.metrics_push_seconds` per experiment), and
//! pings every 30 s.
//! A bad message gets `{"type": "error", "code", "message"}`; the connection stays open.
//! When the server shuts down, the session sends a close frame and ends.

use std::collections::HashMap;
use std::time::Duration;

use axum::extract::State;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code};
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use verdict_app::results::{Change, change_kind};
use verdict_app::{AppError, Caller, ErrorCode, ScopeParams};
use verdict_domain::{Experiment, Scope};

use crate::error::ApiError;
use crate::extract::ApiQuery;
use crate::openapi::ErrorBody;
use crate::state::AppState;

pub fn routes(router: OpenApiRouter<AppState>) -> OpenApiRouter<AppState> {
    router.routes(routes!(ws))
}

/// Most experiments one connection may follow.
pub const MAX_SUBSCRIPTIONS: usize = 100;

/// How often the server pings an idle connection.
const PING_EVERY: Duration = Duration::from_secs(30);

/// Query of the upgrade request.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct WsParams {
    /// The credential, when the client cannot send an `Authorization` header.
    #[allow(dead_code)] // read by the rights check, declared here for the document
    token: Option<String>,
    /// The environment to resolve experiment keys in (right `scope:any`).
    environment: Option<String>,
    /// The organization to resolve experiment keys in (right `scope:any`).
    organization: Option<String>,
}

/// A client message.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum ClientMessage {
    Subscribe { experiment: String },
    Unsubscribe { experiment: String },
}

/// `GET /v1/ws`
#[utoipa::path(
    get,
    path = "/v1/ws",
    tag = "results",
    summary = "Winner and status changes, and metrics, over a WebSocket",
    description = "The credential as `Authorization: \
        Bearer` or `?token=`. Send `{\"type\": \"subscribe\", \"experiment\": KEY}` (answered with \
        `{\"type\": \"snapshot\", ...}`) or `unsubscribe`; the server pushes `{\"type\": \"winner\"}` \
        and `{\"type\": \"status\"}` messages carrying the new snapshot when any replica changes \
        the experiment, `{\"type\": \"metrics\", \"metrics\": {metric, aggregated_through, \
        variants: [{variant, subjects, converted_subjects, events, sum}]}}` with the primary \
        metric after an aggregation run that folded events (at most once per \
        `jobs.metrics_push_seconds` per experiment), and pings every 30 s. Bad messages get `{\"type\": \"error\", \"code\"}` \
        (`invalid_message`, `experiment_not_found`, `too_many_subscriptions`) and the \
        connection stays open. At most 100 subscriptions per connection.",
    security(("bearer" = ["results:read"])),
    params(WsParams),
    responses(
        (status = 101, description = "Switching to the WebSocket protocol."),
        (status = 400, description = "`invalid_query`.", body = ErrorBody),
        (status = 401, description = "`unauthorized`.", body = ErrorBody),
        (status = 403, description = "`forbidden`.", body = ErrorBody),
        (status = 426, description = "`upgrade_required`: not a WebSocket upgrade request.", body = ErrorBody),
        (status = 500, description = "`internal`.", body = ErrorBody),
        (status = 503, description = "`store_unavailable`.", body = ErrorBody),
    )
)]
pub async fn ws(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(params): ApiQuery<WsParams>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    // `token` was read by the rights check (`crate::authorize::authorize`).
    let scope = caller.scope(&ScopeParams {
        environment: params.environment,
        organization: params.organization,
    })?;
    let upgrade = upgrade.map_err(|e| {
        ApiError::new(
            ErrorCode::UpgradeRequired,
            format!("connect with a WebSocket client: {e}"),
        )
    })?;
    Ok(upgrade.on_upgrade(move |socket| session(socket, state, caller, scope)))
}

fn error(code: &str, message: impl Into<String>) -> Value {
    json!({"type": "error", "code": code, "message": message.into()})
}

/// One connection: its subscriptions and the change stream, until the client leaves, the
/// server shuts down, or the caller's credential is revoked or expires (then a close frame
/// with code 1008, policy violation).
async fn session(mut socket: WebSocket, state: AppState, caller: Caller, scope: Scope) {
    let mut changes = state.changes();
    let stop = state.stop_token().clone();
    let revoked = state.app.credential_revoked(caller);
    tokio::pin!(revoked);
    let mut followed = Followed::default();
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.tick().await;
    loop {
        let out: Vec<Value> = tokio::select! {
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Text(text))) => {
                    vec![handle(&state, &scope, &mut followed, text.as_str()).await]
                }
                Some(Ok(Message::Binary(_))) => {
                    vec![error("invalid_message", "send JSON text messages")]
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => continue, // pings and pongs
            },
            change = changes.recv() => match followed.on_change(&state, change).await {
                Some(out) => out,
                None => return,
            },
            () = stop.cancelled() => {
                let _ = socket.send(Message::Close(None)).await;
                return;
            }
            () = &mut revoked => {
                let frame = CloseFrame {
                    code: close_code::POLICY,
                    reason: "the credential was revoked or expired".into(),
                };
                let _ = socket.send(Message::Close(Some(frame))).await;
                return;
            }
            _ = ping.tick() => vec![],
        };
        if send_all(&mut socket, out).await.is_err() {
            return;
        }
    }
}

/// Send `out` (a ping when empty); an error means the client is gone.
async fn send_all(socket: &mut WebSocket, out: Vec<Value>) -> Result<(), axum::Error> {
    if out.is_empty() {
        return socket.send(Message::Ping(Default::default())).await;
    }
    for message in out {
        socket
            .send(Message::Text(message.to_string().into()))
            .await?;
    }
    Ok(())
}

/// The experiments a connection follows: by id, the key it subscribed with and the
/// experiment.
#[derive(Debug, Default)]
struct Followed(HashMap<String, (String, Experiment)>);

impl Followed {
    /// What to send for one item of the change stream; `None` when the stream closed.
    async fn on_change(
        &self,
        state: &AppState,
        change: Result<Change, RecvError>,
    ) -> Option<Vec<Value>> {
        Some(match change {
            Ok(change) => match (self.0.get(change.experiment_id()), &change) {
                (None, _) => Vec::new(),
                (Some((key, _)), Change::Metrics { metrics }) => {
                    vec![json!({"type": "metrics", "experiment": key, "metrics": metrics})]
                }
                (Some((key, _)), Change::Winner { snapshot } | Change::Status { snapshot }) => {
                    let kind = change_kind(&change);
                    vec![json!({"type": kind, "experiment": key, "snapshot": snapshot})]
                }
            },
            // Fell behind: send every followed experiment's state as it is now.
            Err(RecvError::Lagged(_)) => {
                let mut all = Vec::new();
                for (key, e) in self.0.values() {
                    if let Ok(s) = state.snapshot_of(e).await {
                        all.push(json!({"type": "snapshot", "experiment": key, "snapshot": s}));
                    }
                }
                all
            }
            Err(RecvError::Closed) => return None,
        })
    }
}

/// Apply one client message; the answer to send.
async fn handle(state: &AppState, scope: &Scope, followed: &mut Followed, text: &str) -> Value {
    let message: ClientMessage = match serde_json::from_str(text) {
        Ok(m) => m,
        Err(e) => {
            return error(
                "invalid_message",
                format!(
                    "expected {{\"type\": \"subscribe\" | \"unsubscribe\", \"experiment\": KEY}}: {e}"
                ),
            );
        }
    };
    match message {
        ClientMessage::Subscribe { experiment } => {
            let following = match state.follow(scope, &experiment).await {
                Ok(f) => f,
                Err(err) => return app_error(&err),
            };
            let id = following.experiment.id.clone();
            if !followed.0.contains_key(&id) && followed.0.len() >= MAX_SUBSCRIPTIONS {
                return error(
                    "too_many_subscriptions",
                    format!("a connection follows at most {MAX_SUBSCRIPTIONS} experiments"),
                );
            }
            followed
                .0
                .insert(id, (experiment.clone(), following.experiment));
            json!({"type": "snapshot", "experiment": experiment, "snapshot": following.snapshot})
        }
        ClientMessage::Unsubscribe { experiment } => {
            followed.0.retain(|_, (key, _)| *key != experiment);
            json!({"type": "unsubscribed", "experiment": experiment})
        }
    }
}

fn app_error(e: &AppError) -> Value {
    error(e.code.as_str(), e.message.clone())
}
