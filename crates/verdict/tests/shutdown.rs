//! One shutdown signal: a real `verdict serve` with an open Server-Sent Events stream and an
//! open WebSocket ends on SIGTERM without waiting out its grace period; both clients see
//! their stream end (the WebSocket with a close frame).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;
use verdict_cache::test_support::free_port;

const ADMIN: &str = "shutdown-admin-key-0123456789";
/// Far longer than a clean shutdown takes: a stream that held the server open would hold it
/// this long.
const GRACE_SECONDS: u64 = 120;

#[tokio::test]
async fn open_push_streams_do_not_hold_shutdown_to_the_grace_period() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_verdict"));
    for (k, _) in std::env::vars() {
        if k.starts_with("VERDICT_") {
            cmd.env_remove(k);
        }
    }
    let mut child = cmd
        .args(["serve", "--no-scheduler"])
        .env("VERDICT_DATA_DIR", dir.path())
        .env("VERDICT_SERVER__PORT", port.to_string())
        .env(
            "VERDICT_SERVER__SHUTDOWN_GRACE_SECONDS",
            GRACE_SECONDS.to_string(),
        )
        .env("VERDICT_AUTH__BOOTSTRAP_ADMIN_KEY", ADMIN)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("verdict serve starts");
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let started = Instant::now();
    while http.get(format!("{base}/readyz")).send().await.is_err() {
        assert!(started.elapsed() < Duration::from_secs(30), "did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let created = http
        .post(format!("{base}/v1/experiments"))
        .bearer_auth(ADMIN)
        .json(&json!({"key": "checkout", "variants": [{"key": "a"}, {"key": "b"}]}))
        .send()
        .await
        .unwrap();
    assert!(created.status().is_success());

    // An SSE stream, read up to its first event.
    let sse = http
        .get(format!("{base}/v1/experiments/checkout/stream"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert!(sse.status().is_success());
    let mut sse = sse;
    let first = sse.chunk().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&first).contains("snapshot"));

    // A WebSocket following the experiment.
    let (mut ws, _) =
        tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{port}/v1/ws?token={ADMIN}"))
            .await
            .unwrap();
    use futures::SinkExt;
    ws.send(Message::Text(
        json!({"type": "subscribe", "experiment": "checkout"})
            .to_string()
            .into(),
    ))
    .await
    .unwrap();
    let answer = ws.next().await.unwrap().unwrap();
    assert!(answer.to_text().unwrap().contains("snapshot"), "{answer:?}");

    // SIGTERM: the process, both streams end long before the grace period.
    let signalled = Instant::now();
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let limit = Duration::from_secs(GRACE_SECONDS / 2);
    let ws_end = tokio::time::timeout(limit, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(ws_end.is_ok(), "the WebSocket stayed open after SIGTERM");
    let sse_end = tokio::time::timeout(limit, async {
        while let Ok(Some(_)) = sse.chunk().await {}
    })
    .await;
    assert!(sse_end.is_ok(), "the SSE stream stayed open after SIGTERM");
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            signalled.elapsed() < limit,
            "verdict serve still running {} s after SIGTERM",
            signalled.elapsed().as_secs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status:?}");
}
