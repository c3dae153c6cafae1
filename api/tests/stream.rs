//! `GET /v1/experiments/{key}/stream` (Server-Sent Events) over real HTTP: the current
//! snapshot first, then a `winner` and a `status` event as the experiment changes.

mod common;

use std::time::Duration;

use common::{ab_experiment, error_code, spawn_app};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// Reads Server-Sent Events off a response.
struct Events {
    response: reqwest::Response,
    buffer: String,
}

impl Events {
    /// The next `(event, data)`, skipping keep-alive comments; fails after `within`.
    async fn next(&mut self, within: Duration) -> (String, Value) {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut kind = String::new();
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(k) = line.strip_prefix("event:") {
                        kind = k.trim().to_owned();
                    } else if let Some(d) = line.strip_prefix("data:") {
                        data.push_str(d.trim());
                    }
                }
                if kind.is_empty() {
                    continue; // a comment (keep-alive)
                }
                return (kind, serde_json::from_str(&data).expect("JSON data"));
            }
            let chunk = tokio::time::timeout_at(deadline, self.response.chunk())
                .await
                .expect("an event within the time allowed")
                .expect("the stream stays readable")
                .expect("the stream stays open");
            self.buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
}

#[tokio::test]
async fn the_stream_sends_the_snapshot_then_each_winner_and_status_change() {
    let app = spawn_app().await;
    app.create_experiment(&ab_experiment("streamed")).await;
    let (status, _) = app.activate("streamed").await;
    assert_eq!(status, StatusCode::OK);
    let client_key = app.create_key(&["client"]).await;
    // Another experiment whose changes must not show up.
    app.create_experiment(&ab_experiment("other")).await;

    let response = app
        .client
        .get(app.url("/v1/experiments/streamed/stream"))
        .bearer_auth(&client_key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()[reqwest::header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let mut events = Events {
        response,
        buffer: String::new(),
    };
    let (kind, first) = events.next(Duration::from_secs(2)).await;
    assert_eq!(kind, "snapshot");
    assert_eq!(
        (first["experiment"].as_str(), first["status"].as_str()),
        (Some("streamed"), Some("running"))
    );
    assert_eq!(first["winner"], Value::Null);

    let (status, _) = app.activate("other").await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = app
        .post_json(
            "/v1/experiments/streamed/winner",
            &app.admin_key,
            &json!({"variant": "treatment", "complete": false}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (kind, winner) = events.next(Duration::from_secs(2)).await;
    assert_eq!(kind, "winner", "{winner}");
    assert_eq!(
        winner["experiment"], "streamed",
        "only this experiment's changes"
    );
    assert_eq!(winner["winner"], "treatment");

    let (status, body) = app.set_status("streamed", "paused").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (kind, paused) = events.next(Duration::from_secs(2)).await;
    assert_eq!(kind, "status");
    assert_eq!(paused["status"], "paused");
    assert!(paused["version"].as_u64() > winner["version"].as_u64());
}

#[tokio::test]
async fn the_stream_needs_a_client_key_and_a_known_experiment() {
    let app = spawn_app().await;
    let internal = app.create_key(&["internal"]).await;
    app.create_experiment(&ab_experiment("s")).await;
    let (status, body) = app.get("/v1/experiments/s/stream", &internal).await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::FORBIDDEN, "forbidden")
    );
    let (status, body) = app.get("/v1/experiments/nope/stream", &app.admin_key).await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::NOT_FOUND, "experiment_not_found")
    );
}

#[tokio::test]
async fn revoking_the_key_ends_its_open_stream() {
    let app = spawn_app().await;
    app.create_experiment(&ab_experiment("watched")).await;
    let (client_key, id) = app.create_key_with_id(&["client"]).await;
    let response = app
        .client
        .get(app.url("/v1/experiments/watched/stream"))
        .bearer_auth(&client_key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut events = Events {
        response,
        buffer: String::new(),
    };
    let (kind, _) = events.next(Duration::from_secs(2)).await;
    assert_eq!(kind, "snapshot");

    let (status, body) = app
        .delete(&format!("/v1/api-keys/{id}"), &app.admin_key)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    // The stream ends (the body completes) within a few revalidation intervals.
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match events.response.chunk().await {
                Ok(Some(_)) => continue, // keep-alive comments until then
                Ok(None) | Err(_) => return,
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the stream of a revoked key stays open");
    let (status, _) = app.get("/v1/experiments/watched/winner", &client_key).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn revoking_the_key_closes_its_websocket_with_a_policy_violation() {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

    let app = spawn_app().await;
    app.create_experiment(&ab_experiment("watched")).await;
    let (client_key, id) = app.create_key_with_id(&["client"]).await;
    let (mut ws, _) =
        tokio_tungstenite::connect_async(format!("ws://{}/v1/ws?token={client_key}", app.addr))
            .await
            .expect("the WebSocket upgrade succeeds");
    ws.send(Message::text(
        json!({"type": "subscribe", "experiment": "watched"}).to_string(),
    ))
    .await
    .unwrap();
    let first = tokio::time::timeout(Duration::from_secs(2), ws.next())
        .await
        .expect("a snapshot")
        .unwrap()
        .unwrap();
    assert!(first.to_text().unwrap().contains("snapshot"), "{first:?}");

    let (status, _) = app
        .delete(&format!("/v1/api-keys/{id}"), &app.admin_key)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(message) = ws.next().await {
            if let Ok(Message::Close(frame)) = message {
                return frame;
            }
        }
        None
    })
    .await
    .expect("the connection of a revoked key is closed");
    assert_eq!(closed.expect("a close frame").code, CloseCode::Policy);
}
