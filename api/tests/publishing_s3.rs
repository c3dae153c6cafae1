//! Publishing to an S3-compatible bucket: a real S3-protocol server (`s3s-fs`, from
//! crates.io, pinned `=0.14.1`; `scripts/test-services.sh` installs it when missing) is
//! started for the test over a directory, Verdict publishes to it through `object_store`,
//! and the test reads what the server stored: the versioned object, `latest.json` and
//! `version.json` after each change.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{ab_experiment, spawn_app_with};
use reqwest::StatusCode;
use serde_json::Value;

const BUCKET: &str = "sdk-snapshots";
const ACCESS_KEY: &str = "verdict-test-access";
const SECRET_KEY: &str = "verdict-test-secret-0123456789";

/// The `s3s-fs` binary: `VERDICT_TEST_S3S_FS`, else on `PATH`, else in `~/.cargo/bin`.
fn s3s_fs() -> PathBuf {
    if let Ok(path) = std::env::var("VERDICT_TEST_S3S_FS") {
        return path.into();
    }
    let candidates = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain(std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo/bin")));
    for dir in candidates {
        let bin = dir.join("s3s-fs");
        if bin.is_file() {
            return bin;
        }
    }
    panic!(
        "the S3 test server s3s-fs is not installed: `cargo install --locked s3s-fs \
         --version =0.14.1 --features binary` (scripts/test-services.sh does it), or set \
         VERDICT_TEST_S3S_FS"
    );
}

/// A running `s3s-fs` over a temporary directory, killed when dropped.
struct S3Server {
    child: Child,
    port: u16,
    root: tempfile::TempDir,
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl S3Server {
    fn start() -> Self {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join(BUCKET)).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(s3s_fs())
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
            .arg(root.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("s3s-fs starts");
        let server = Self { child, port, root };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "s3s-fs did not listen within 10 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    /// What the server stored under `key` in the bucket.
    fn object(&self, key: &str) -> Value {
        let path = self.root.path().join(BUCKET).join(key);
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        serde_json::from_slice(&bytes).unwrap()
    }
}

async fn latest(app: &common::TestApp) -> (u64, Value) {
    let r = app
        .client
        .get(app.url("/v1/environments/production/snapshots/latest"))
        .bearer_auth(&app.admin_key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let version = r.headers()["x-snapshot-version"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    (version, r.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_new_version_lands_in_the_bucket_as_three_objects() {
    let s3 = S3Server::start();
    let endpoint = format!("http://127.0.0.1:{}", s3.port);
    let app = spawn_app_with(&[
        ("VERDICT_PUBLISH__S3_BUCKET", BUCKET),
        ("VERDICT_PUBLISH__S3_ENDPOINT", &endpoint),
        ("VERDICT_PUBLISH__S3_ALLOW_HTTP", "true"),
        ("VERDICT_PUBLISH__S3_ACCESS_KEY_ID", ACCESS_KEY),
        ("VERDICT_PUBLISH__S3_SECRET_ACCESS_KEY", SECRET_KEY),
        ("VERDICT_PUBLISH__S3_PREFIX", "verdict/"),
    ])
    .await;
    let folder = "verdict/production/global";

    app.create_experiment(&ab_experiment("checkout")).await;
    let r = app
        .client
        .post(app.url("/v1/experiments/checkout/activate"))
        .bearer_auth(&app.admin_key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        r.headers()["x-publish-succeeded"],
        "true",
        "{:?}",
        r.headers()
    );
    let (version, body) = latest(&app).await;
    assert_eq!(version, 1);
    assert!(body["features"]["checkout"].is_object(), "{body}");
    assert_eq!(s3.object(&format!("{folder}/snapshots/1.json")), body);
    assert_eq!(s3.object(&format!("{folder}/latest.json")), body);
    let record = s3.object(&format!("{folder}/version.json"));
    assert_eq!(record["version"], 1);
    assert_eq!(record["size"], serde_json::to_vec(&body).unwrap().len());

    // A change: version 2 beside version 1, and the two pointers move.
    assert_eq!(app.set_status("checkout", "paused").await.0, StatusCode::OK);
    let (version, paused) = latest(&app).await;
    assert_eq!(version, 2);
    assert!(paused["features"].get("checkout").is_none(), "{paused}");
    assert_eq!(s3.object(&format!("{folder}/snapshots/2.json")), paused);
    assert_eq!(s3.object(&format!("{folder}/snapshots/1.json")), body);
    assert_eq!(s3.object(&format!("{folder}/latest.json")), paused);
    let record = s3.object(&format!("{folder}/version.json"));
    assert_eq!(record["version"], 2);
    assert_eq!(record["trigger"], "experiment.status_changed");

    // The bucket's server going away fails the publish, not the change.
    drop(s3);
    let r = app
        .client
        .post(app.url("/v1/experiments/checkout/status"))
        .bearer_auth(&app.admin_key)
        .json(&serde_json::json!({"status": "running"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["x-publish-succeeded"], "false");
    assert!(
        r.headers()["x-publish-error"]
            .to_str()
            .unwrap()
            .contains("s3 target"),
        "{:?}",
        r.headers()
    );
}
