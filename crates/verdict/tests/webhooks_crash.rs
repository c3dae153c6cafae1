//! A dispatcher killed mid-delivery loses nothing: real `verdict serve` processes on one
//! SQLite data dir, a real receiver that holds the first request open while the process is
//! SIGKILLed, then a restart. Every message arrives at least once; the one in flight at the
//! kill arrives again with the same `webhook-id`.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use verdict_cache::test_support::free_port;

use serde_json::{Value, json};
use verdict_webhooks::test_support::{Received, Receiver};

const ADMIN: &str = "test-admin-key-0123456789";
const MESSAGES: usize = 5;

/// `verdict serve --config <dir>/verdict.toml`, logs to `<dir>/<name>.log`.
fn serve(dir: &Path, name: &str) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_verdict"));
    for (k, _) in std::env::vars() {
        if k.starts_with("VERDICT_") {
            cmd.env_remove(k);
        }
    }
    let log = std::fs::File::create(dir.join(format!("{name}.log"))).unwrap();
    cmd.arg("serve")
        .arg("--config")
        .arg(dir.join("verdict.toml"))
        .current_dir(dir)
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .stdin(Stdio::null())
        .spawn()
        .expect("start verdict serve")
}

fn logs(dir: &Path) -> String {
    ["first", "second"]
        .iter()
        .map(|n| std::fs::read_to_string(dir.join(format!("{n}.log"))).unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n----\n")
}

async fn wait_healthy(client: &reqwest::Client, base: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while client.get(format!("{base}/healthz")).send().await.is_err() {
        assert!(Instant::now() < deadline, "verdict did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn post(client: &reqwest::Client, url: String, body: Value) -> Value {
    let r = client
        .post(url)
        .bearer_auth(ADMIN)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status();
    let body: Value = r.json().await.unwrap_or(Value::Null);
    assert!(status.is_success(), "{status}: {body}");
    body
}

fn verify(r: &Received, secret: &str) -> bool {
    let mut headers = http::HeaderMap::new();
    for (name, value) in &r.headers {
        headers.insert(name.clone(), value.clone());
    }
    standardwebhooks::Webhook::new(secret)
        .unwrap()
        .verify(&r.body, &headers)
        .is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dispatcher_killed_mid_delivery_delivers_every_message_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    std::fs::write(
        dir.path().join("verdict.toml"),
        format!(
            r#"
data_dir = "{data}"
[server]
port = {port}
shutdown_grace_seconds = 2
[auth]
bootstrap_admin_key = "{ADMIN}"
[jobs]
lease_seconds = 2
[webhooks]
allow_private_targets = true
request_timeout_seconds = 10
lease_seconds = 20
idle_sleep_ms = 50
"#,
            data = dir.path().join("data").display()
        ),
    )
    .unwrap();
    let receiver = Receiver::start().await;
    let client = reqwest::Client::new();

    let mut first = serve(dir.path(), "first");
    wait_healthy(&client, &base).await;
    let endpoint = post(
        &client,
        format!("{base}/v1/webhooks/endpoints"),
        json!({"url": receiver.url("/hook")}),
    )
    .await;
    let secret = endpoint["secret"].as_str().unwrap().to_owned();
    let endpoint_id = endpoint["id"].as_str().unwrap().to_owned();

    // The receiver takes the first request and never answers it.
    receiver.hold();
    for i in 0..MESSAGES {
        let key = format!("exp{i}");
        post(
            &client,
            format!("{base}/v1/experiments"),
            json!({"key": key, "variants": [{"key": "a"}, {"key": "b"}]}),
        )
        .await;
        post(
            &client,
            format!("{base}/v1/experiments/{key}/activate"),
            json!({}),
        )
        .await;
    }
    let held = receiver.wait_for(1, Duration::from_secs(30)).await;
    let in_flight = held[0].webhook_id().to_owned();

    // SIGKILL while the request is open: no chance to record anything.
    first.kill().unwrap();
    first.wait().unwrap();
    let before_restart = receiver.count();
    assert_eq!(before_restart, 1, "one delivery at a time per endpoint");
    receiver.release();

    let mut second = serve(dir.path(), "second");
    wait_healthy(&client, &base).await;
    // Claims of the killed process lapse after their lease (20 s); then all are sent.
    let deadline = Instant::now() + Duration::from_secs(60);
    let messages = loop {
        let r = client
            .get(format!(
                "{base}/v1/webhooks/endpoints/{endpoint_id}/messages"
            ))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap();
        let log: Value = r.json().await.unwrap();
        let data = log["data"].as_array().cloned().unwrap_or_default();
        if data.len() == MESSAGES && data.iter().all(|m| m["status"] == "delivered") {
            break data;
        }
        assert!(
            Instant::now() < deadline,
            "not all delivered after the restart: {log}\n{}",
            logs(dir.path())
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let _ = Command::new("kill")
        .args(["-TERM", &second.id().to_string()])
        .status();
    let status = second.wait().unwrap();
    assert!(
        status.success(),
        "clean shutdown: {status:?}\n{}",
        logs(dir.path())
    );

    let expected: HashSet<String> = messages
        .iter()
        .map(|m| m["message_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(expected.len(), MESSAGES);
    let received = receiver.requests();
    let mut per_id: HashMap<String, usize> = HashMap::new();
    for r in &received {
        *per_id.entry(r.webhook_id().to_owned()).or_default() += 1;
        assert!(verify(r, &secret), "every request verifies");
    }
    let seen: HashSet<String> = per_id.keys().cloned().collect();
    assert_eq!(seen, expected, "every message arrived, nothing else did");
    assert!(
        per_id[&in_flight] >= 2,
        "the message in flight at the kill was sent again with the same webhook-id: {per_id:?}"
    );
    let bodies: HashSet<Vec<u8>> = received
        .iter()
        .filter(|r| r.webhook_id() == in_flight)
        .map(|r| r.body.to_vec())
        .collect();
    assert_eq!(bodies.len(), 1, "the duplicate carries the same body");
}
