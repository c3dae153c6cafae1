//! WebSocket push across replicas: two real `verdict serve` processes sharing a MongoDB
//! store and Redis. A client subscribed on process A hears the decision of an evaluation run
//! triggered on process B, and the metrics of an aggregation run there, through Redis
//! pub/sub.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use verdict_cache::test_support::free_port;

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

const ADMIN: &str = "ws-admin-key-0123456789";

struct Replica {
    child: Child,
    base: String,
    port: u16,
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn replica(uri: &str, database: &str, redis: &str, prefix: &str) -> Replica {
    let port = free_port();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_verdict"));
    for (k, _) in std::env::vars() {
        if k.starts_with("VERDICT_") {
            cmd.env_remove(k);
        }
    }
    let child = cmd
        .args(["serve", "--no-scheduler"])
        .env("VERDICT_DATA_DIR", std::env::temp_dir())
        .env("VERDICT_STORE", "mongodb")
        .env("VERDICT_MONGODB__URI", uri)
        .env("VERDICT_MONGODB__DATABASE", database)
        .env("VERDICT_CACHE", "redis")
        .env("VERDICT_REDIS__URL", redis)
        .env("VERDICT_REDIS__KEY_PREFIX", prefix)
        .env("VERDICT_SERVER__PORT", port.to_string())
        .env("VERDICT_AUTH__BOOTSTRAP_ADMIN_KEY", ADMIN)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("verdict serve starts");
    Replica {
        child,
        base: format!("http://127.0.0.1:{port}"),
        port,
    }
}

async fn wait_healthy(http: &reqwest::Client, r: &Replica) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while http.get(format!("{}/readyz", r.base)).send().await.is_err() {
        assert!(Instant::now() < deadline, "a replica did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn post(http: &reqwest::Client, url: String, body: Value) -> Value {
    let r = http
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

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The next JSON text message, skipping pings; fails after `within`.
async fn next(ws: &mut Socket, within: Duration) -> Value {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let message = tokio::time::timeout_at(deadline, ws.next())
            .await
            .expect("a message within the time allowed")
            .expect("the connection stays open")
            .expect("a readable message");
        if let Message::Text(text) = message {
            return serde_json::from_str(text.as_str()).expect("JSON");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_on_one_replica_hears_a_decision_made_on_another() {
    let uri = std::env::var("VERDICT_TEST_MONGODB_URI")
        .expect("VERDICT_TEST_MONGODB_URI must name a MongoDB server (scripts/test.sh starts one)");
    let redis = verdict_cache::test_support::test_redis();
    let prefix = verdict_cache::test_support::random_prefix();
    let database = format!("verdict_ws_{}", std::process::id());
    let a = replica(&uri, &database, redis.url(), &prefix);
    let b = replica(&uri, &database, redis.url(), &prefix);
    let http = reqwest::Client::new();
    wait_healthy(&http, &a).await;
    wait_healthy(&http, &b).await;

    // On B: an experiment with a clear winner in its data.
    post(
        &http,
        format!("{}/v1/experiments", b.base),
        json!({"key": "pushed", "variants": [{"key": "control"}, {"key": "treatment"}],
               "policy": {"min_assignments": 50, "peeking_guard": false}}),
    )
    .await;
    post(
        &http,
        format!("{}/v1/experiments/pushed/activate", b.base),
        json!({}),
    )
    .await;
    let mut events = Vec::new();
    for i in 0..400 {
        let subject = format!("user-{i}");
        let assigned = post(
            &http,
            format!("{}/v1/experiments/pushed/assignment", b.base),
            json!({"subject_id": subject}),
        )
        .await;
        let converts = match assigned["variant"].as_str() {
            Some("treatment") => i % 5 < 3,
            _ => i % 10 == 0,
        };
        if converts {
            events.push(
                json!({"experiment": "pushed", "subject_id": subject, "event": "conversion"}),
            );
        }
    }
    post(
        &http,
        format!("{}/v1/events", b.base),
        json!({"events": events}),
    )
    .await;

    // On A: a client follows the experiment (key in the query, as a browser would).
    let (mut ws, _) =
        tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{}/v1/ws?token={ADMIN}", a.port))
            .await
            .expect("the WebSocket upgrade succeeds");
    ws.send(Message::text("not json")).await.unwrap();
    let bad = next(&mut ws, Duration::from_secs(2)).await;
    assert_eq!(
        (bad["type"].as_str(), bad["code"].as_str()),
        (Some("error"), Some("invalid_message"))
    );
    ws.send(Message::text(
        json!({"type": "subscribe", "experiment": "nope"}).to_string(),
    ))
    .await
    .unwrap();
    let missing = next(&mut ws, Duration::from_secs(2)).await;
    assert_eq!(missing["code"], "experiment_not_found", "{missing}");
    ws.send(Message::text(
        json!({"type": "subscribe", "experiment": "pushed"}).to_string(),
    ))
    .await
    .unwrap();
    let snapshot = next(&mut ws, Duration::from_secs(2)).await;
    assert_eq!(snapshot["type"], "snapshot", "{snapshot}");
    assert_eq!(snapshot["snapshot"]["status"], "running");
    assert_eq!(snapshot["snapshot"]["winner"], Value::Null);

    // On B: aggregation, then the evaluation that decides.
    post(
        &http,
        format!("{}/v1/internal/jobs/aggregate/run", b.base),
        json!({}),
    )
    .await;
    let evaluated = post(
        &http,
        format!("{}/v1/internal/jobs/evaluate/run", b.base),
        json!({}),
    )
    .await;
    assert_eq!(evaluated["report"]["decisions"], 1, "{evaluated}");
    let decided = Instant::now();

    // A's client hears it within 2 s, after the metrics B's aggregation pushed.
    let mut metrics = None;
    let winner = loop {
        let left = Duration::from_secs(2).saturating_sub(decided.elapsed());
        let message = next(&mut ws, left).await;
        match message["type"].as_str() {
            Some("winner") => break message,
            Some("metrics") => metrics = Some(message),
            _ => assert_eq!(message["type"], "status", "{message}"),
        }
    };
    // (Published before the decision, but pub/sub need not keep the order.)
    let metrics = match metrics {
        Some(m) => m,
        None => next(&mut ws, Duration::from_secs(2)).await,
    };
    assert_eq!(metrics["type"], "metrics", "{metrics}");
    assert_eq!(metrics["experiment"], "pushed", "{metrics}");
    assert_eq!(metrics["metrics"]["variants"].as_array().unwrap().len(), 2);
    assert_eq!(winner["experiment"], "pushed");
    assert_eq!(winner["snapshot"]["winner"], "treatment", "{winner}");
    assert_eq!(winner["snapshot"]["status"], "completed");

    drop(a);
    drop(b);
    verdict_store::MongoStore::connect(&uri, &database)
        .await
        .unwrap()
        .database()
        .drop()
        .await
        .unwrap();
}
