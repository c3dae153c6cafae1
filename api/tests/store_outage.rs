//! MongoDB going away under a running server: writes and reads that need the store answer
//! `503 store_unavailable` with `Retry-After` (never a 500, never an acknowledgement of what
//! was not written), `/readyz` reports it, and the process keeps serving `/healthz`.
//!
//! The test runs its own MongoDB-speaking server so that it can stop it: the `secantusd-rs`
//! test server that `scripts/test-services.sh` installs (or `VERDICT_TEST_MONGOD_BIN`).

mod common;

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{ab_experiment, error_code, spawn_app_with};
use reqwest::StatusCode;
use serde_json::json;

/// A MongoDB-speaking server owned by this test; killed on drop.
struct OwnMongo {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl OwnMongo {
    fn start() -> Self {
        let bin = std::env::var("VERDICT_TEST_MONGOD_BIN").ok().or_else(|| {
            let home = std::env::var("HOME").unwrap_or_default();
            let candidates = [format!("{home}/.cargo/bin/secantusd-rs")];
            candidates
                .into_iter()
                .find(|p| std::path::Path::new(p).exists())
                .or_else(|| {
                    Command::new("which")
                        .arg("secantusd-rs")
                        .output()
                        .ok()
                        .filter(|o| o.status.success())
                        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
                })
        });
        let bin = bin.expect(
            "no MongoDB test server binary: install secantusd-rs (scripts/test-services.sh does) \
             or set VERDICT_TEST_MONGOD_BIN",
        );
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = tempfile::tempdir().unwrap();
        let child = Command::new(bin)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .arg("--storage-path")
            .arg(dir.path())
            .args(["--cache-size", "256M", "--log-level", "WARNING"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the MongoDB test server");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "the MongoDB test server did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Self {
            child,
            port,
            _dir: dir,
        }
    }

    fn uri(&self) -> String {
        format!("mongodb://127.0.0.1:{}/?directConnection=true", self.port)
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for OwnMongo {
    fn drop(&mut self) {
        self.kill();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mongodb_outage_is_a_503_with_retry_after_and_nothing_is_acknowledged() {
    let mut mongo = OwnMongo::start();
    let uri = mongo.uri();
    let app = spawn_app_with(&[
        ("VERDICT_STORE", "mongodb"),
        ("VERDICT_MONGODB__URI", &uri),
        ("VERDICT_MONGODB__DATABASE", "outage"),
        ("VERDICT_MONGODB__CONNECT_TIMEOUT_MS", "1000"),
    ])
    .await;
    let client = app.create_key(&["client"]).await;
    app.create_experiment(&ab_experiment("checkout")).await;
    assert_eq!(app.activate("checkout").await.0, StatusCode::OK);
    let (status, _) = app.assignment("checkout", &client, "user-1", &[]).await;
    assert_eq!(status, StatusCode::OK);

    mongo.kill();

    let started = Instant::now();
    let response = app
        .client
        .post(app.url("/v1/events"))
        .bearer_auth(&client)
        .json(
            &json!({"events": [{"event_id": "e-1", "experiment": "checkout",
                                  "subject_id": "user-1", "event": "purchase"}]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        response
            .headers()
            .contains_key(reqwest::header::RETRY_AFTER),
        "503 without Retry-After"
    );
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(error_code(&body), "store_unavailable", "{body}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "the outage took {:?} to surface",
        started.elapsed()
    );

    // A subject never seen needs the store too: 503, not a made-up assignment.
    let (status, body) = app.assignment("checkout", &client, "user-2", &[]).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(error_code(&body), "store_unavailable");

    let (status, body) = app.get("/readyz", "").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(error_code(&body), "store_unavailable");
    let (status, _) = app.get("/healthz", "").await;
    assert_eq!(status, StatusCode::OK, "the process itself is alive");

    // A scrape is served from memory: it does not wait on the store. Here every store call
    // waits out the 1 s server selection before failing, so a scrape that read the store
    // could not meet a deadline below that; one rendered from memory takes microseconds.
    let scrape = app
        .client
        .get(app.url("/metrics"))
        .timeout(Duration::from_millis(800))
        .send()
        .await
        .expect("/metrics answers while the store is gone");
    assert_eq!(scrape.status(), StatusCode::OK);
    let text = scrape.text().await.unwrap();
    assert!(text.contains("verdict_aggregation_lag_seconds"), "{text}");
}
