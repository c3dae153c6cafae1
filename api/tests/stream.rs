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
    use futures::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

    let app = spawn_app().await;
    app.create_experiment(&ab_experiment("watched")).await;
    let (client_key, id) = app.create_key_with_id(&["client"]).await;
    let mut ws = subscribed(&app, &client_key, "watched").await;

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

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A WebSocket on `app` with `token`, subscribed to `experiment` (its snapshot read).
async fn subscribed(app: &common::TestApp, token: &str, experiment: &str) -> Socket {
    use futures::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    let (mut ws, _) =
        tokio_tungstenite::connect_async(format!("ws://{}/v1/ws?token={token}", app.addr))
            .await
            .expect("the WebSocket upgrade succeeds");
    ws.send(Message::text(
        json!({"type": "subscribe", "experiment": experiment}).to_string(),
    ))
    .await
    .unwrap();
    let first = next_json(&mut ws, Duration::from_secs(5)).await;
    assert_eq!(first["type"], "snapshot", "{first}");
    ws
}

/// The next WebSocket text message as JSON, skipping pings; fails after `within`.
async fn next_json<S>(ws: &mut S, within: Duration) -> Value
where
    S: futures::Stream<
            Item = Result<
                tokio_tungstenite::tungstenite::Message,
                tokio_tungstenite::tungstenite::Error,
            >,
        > + Unpin,
{
    use futures::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    tokio::time::timeout(within, async {
        loop {
            match ws.next().await.expect("the socket stays open").unwrap() {
                Message::Text(text) => return serde_json::from_str(&text).unwrap(),
                _ => continue,
            }
        }
    })
    .await
    .expect("a message within the time allowed")
}

#[tokio::test]
async fn a_subscriber_gets_the_metrics_after_an_aggregation_at_most_once_per_interval() {
    let app = spawn_app().await;
    for key in ["watched", "other"] {
        app.create_experiment(&ab_experiment(key)).await;
        assert_eq!(app.activate(key).await.0, StatusCode::OK);
    }
    let client = app.create_key(&["client"]).await;
    let internal = app.create_key(&["internal"]).await;
    let mut variants = std::collections::HashMap::new();
    for subject in ["a", "b", "c"] {
        for key in ["watched", "other"] {
            let (status, body) = app.assignment(key, &client, subject, &[]).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            if key == "watched" {
                variants.insert(subject, body["variant"].as_str().unwrap().to_owned());
            }
        }
    }
    let mut ws = subscribed(&app, &client, "watched").await;

    let purchase = |key: &str, id: &str, subject: &str| {
        json!({"event_id": id, "experiment": key, "subject_id": subject, "event": "purchase",
               "value": 2.5})
    };
    let (status, report) = app
        .post_events(
            &client,
            vec![
                purchase("watched", "w-1", "a"),
                purchase("watched", "w-2", "a"),
                purchase("other", "o-1", "b"),
            ],
        )
        .await;
    assert_eq!(report["accepted"], 3, "{report}");
    assert_eq!(status, StatusCode::OK);
    let (status, run) = app
        .post_json("/v1/internal/jobs/aggregate/run", &internal, &json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{run}");
    assert_eq!(run["report"]["metrics_pushed"], 2, "{run}");

    // Only the subscribed experiment's, with what was sent.
    let pushed = next_json(&mut ws, Duration::from_secs(5)).await;
    assert_eq!(pushed["type"], "metrics", "{pushed}");
    assert_eq!(pushed["experiment"], "watched", "{pushed}");
    let metrics = &pushed["metrics"];
    assert_eq!(metrics["metric"], "purchase", "{pushed}");
    assert_eq!(metrics["aggregated_through"], run["report"]["watermark"]);
    let rows = metrics["variants"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "{pushed}");
    for row in rows {
        let variant = row["variant"].as_str().unwrap();
        let subjects = variants.values().filter(|v| *v == variant).count() as u64;
        let buyer = variants["a"] == variant;
        assert_eq!(row["subjects"], subjects, "{pushed}");
        assert_eq!(row["events"], if buyer { 2 } else { 0 }, "{pushed}");
        assert_eq!(row["converted_subjects"], u64::from(buyer), "{pushed}");
        assert_eq!(row["sum"], if buyer { 5.0 } else { 0.0 }, "{pushed}");
    }

    // Within the interval (`jobs.metrics_push_seconds`, 10 s by default) a second run
    // pushes nothing, though it folded an event; nor does a run that folded none.
    app.post_events(&client, vec![purchase("watched", "w-3", "b")])
        .await;
    for folded in [1, 0] {
        let (_, run) = app
            .post_json("/v1/internal/jobs/aggregate/run", &internal, &json!({}))
            .await;
        assert_eq!(run["report"]["events"], folded, "{run}");
        assert_eq!(run["report"]["metrics_pushed"], 0, "{run}");
    }
}

#[tokio::test]
async fn with_no_interval_every_aggregation_that_folds_events_pushes() {
    let app = common::spawn_app_with(&[("VERDICT_JOBS__METRICS_PUSH_SECONDS", "0")]).await;
    app.create_experiment(&ab_experiment("watched")).await;
    assert_eq!(app.activate("watched").await.0, StatusCode::OK);
    let client = app.create_key(&["client"]).await;
    let internal = app.create_key(&["internal"]).await;
    app.assignment("watched", &client, "a", &[]).await;
    for (i, folded, pushed) in [(0, 1, 1), (1, 1, 1), (2, 0, 0)] {
        if folded > 0 {
            let (_, report) = app
                .post_events(
                    &client,
                    vec![
                        json!({"event_id": format!("e-{i}"), "experiment": "watched",
                                "subject_id": "a", "event": "purchase"}),
                    ],
                )
                .await;
            assert_eq!(report["accepted"], 1, "{report}");
        }
        let (_, run) = app
            .post_json("/v1/internal/jobs/aggregate/run", &internal, &json!({}))
            .await;
        assert_eq!(run["report"]["events"], folded, "{run}");
        assert_eq!(run["report"]["metrics_pushed"], pushed, "{run}");
    }
}
