//! Published config snapshots: every live-impacting change publishes a new version (with
//! the publish headers on its answer), nothing else does; versions are listed and read
//! with their ETag; a directory target holds the three objects; a failed publish does not
//! fail the change and the publish job retries it; the stream announces new versions.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{TestApp, ab_experiment, error_code, spawn_app_with};
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};

/// Send a change as the admin: status, the publish headers (`attempted`, `succeeded`,
/// `error`) and the body.
async fn change(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Publish, Value) {
    let mut req = app
        .client
        .request(method, app.url(path))
        .bearer_auth(&app.admin_key);
    if let Some(body) = body {
        req = req.json(&body);
    }
    let response = req.send().await.expect("request");
    let publish = Publish::of(response.headers());
    let (status, body) = common::parts(response).await;
    (status, publish, body)
}

#[derive(Debug, PartialEq)]
struct Publish {
    attempted: Option<String>,
    succeeded: Option<String>,
    error: Option<String>,
}

impl Publish {
    fn of(h: &HeaderMap) -> Self {
        let get = |n: &str| h.get(n).map(|v| v.to_str().unwrap().to_owned());
        Self {
            attempted: get("x-publish-attempted"),
            succeeded: get("x-publish-succeeded"),
            error: get("x-publish-error"),
        }
    }

    fn published(&self) -> bool {
        self.attempted.as_deref() == Some("true") && self.succeeded.as_deref() == Some("true")
    }

    fn none() -> Self {
        Self {
            attempted: Some("false".into()),
            succeeded: None,
            error: None,
        }
    }
}

/// The scope's versions, newest first: `(version, trigger)`.
async fn versions(app: &TestApp, query: &str) -> Vec<(u64, String)> {
    let (status, body) = app
        .get(
            &format!("/v1/environments/production/snapshots?page=1&page_size=100{query}"),
            &app.admin_key,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["version"].as_u64().unwrap(),
                p["trigger"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// The latest snapshot: status, version header, ETag and body.
async fn latest(app: &TestApp, query: &str) -> (StatusCode, Option<u64>, String, Value) {
    let r = app
        .client
        .get(app.url(&format!(
            "/v1/environments/production/snapshots/latest{query}"
        )))
        .bearer_auth(&app.admin_key)
        .send()
        .await
        .unwrap();
    let version = r
        .headers()
        .get("x-snapshot-version")
        .map(|v| v.to_str().unwrap().parse().unwrap());
    let etag = r
        .headers()
        .get("etag")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let (status, body) = common::parts(r).await;
    (status, version, etag, body)
}

fn read_json(path: &Path) -> Value {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap()
}

async fn with_directory() -> (TestApp, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("published");
    let app = spawn_app_with(&[("VERDICT_PUBLISH__DIRECTORY", target.to_str().unwrap())]).await;
    (app, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_live_impacting_change_publishes_a_version_and_nothing_else_does() {
    let (app, dir) = with_directory().await;
    let folder = dir.path().join("published/production/global");
    use reqwest::Method;

    // A draft is not in any snapshot: creating and editing it publishes nothing.
    let (status, publish, _) = change(
        &app,
        Method::POST,
        "/v1/experiments",
        Some(ab_experiment("checkout")),
    )
    .await;
    assert_eq!((status, &publish), (StatusCode::CREATED, &Publish::none()));
    let (status, publish, _) = change(
        &app,
        Method::PATCH,
        "/v1/experiments/checkout",
        Some(json!({"version": 1, "description": "draft edit"})),
    )
    .await;
    assert_eq!((status, &publish), (StatusCode::OK, &Publish::none()));
    let (status, _, _, body) = latest(&app, "").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(error_code(&body), "snapshot_not_found");

    // Activation: version 1, written to the directory.
    let (status, publish, _) = change(
        &app,
        Method::POST,
        "/v1/experiments/checkout/activate",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(publish.published(), "{publish:?}");
    let (status, version, etag, body) = latest(&app, "").await;
    assert_eq!((status, version), (StatusCode::OK, Some(1)));
    assert!(
        body["features"]["checkout"]["rules"][0]["variations"].is_array(),
        "{body}"
    );
    assert_eq!(read_json(&folder.join("latest.json")), body);
    assert_eq!(read_json(&folder.join("snapshots/1.json")), body);
    let record = read_json(&folder.join("version.json"));
    assert_eq!(record["version"], 1);
    assert_eq!(record["trigger"], "experiment.status_changed");
    assert_eq!(
        format!("\"{}\"", &record["hash"].as_str().unwrap()[..32]),
        etag
    );

    // The GrowthBook payload of a client key of the scope is the same bytes.
    let client = app.create_key(&["client"]).await;
    let features = app
        .client
        .get(app.url(&format!("/api/features/{client}")))
        .send()
        .await
        .unwrap();
    assert_eq!(features.headers()["etag"].to_str().unwrap(), etag);

    // Unchanged: 304 on its ETag.
    let r = app
        .client
        .get(app.url("/v1/environments/production/snapshots/latest"))
        .bearer_auth(&client)
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_MODIFIED);

    // Targeting of the running experiment.
    let (_, publish, body) = change(
        &app,
        Method::PATCH,
        "/v1/experiments/checkout",
        Some(json!({"version": 3, "targeting": [{"conditions": [
            {"attribute": "country", "operator": "eq", "value": "US"}]}]})),
    )
    .await;
    assert!(publish.published(), "{publish:?} {body}");
    // A new split.
    let (_, publish, body) = change(
        &app,
        Method::PUT,
        "/v1/experiments/checkout/variants",
        Some(json!({"version": 4, "variants": [
            {"key": "control", "weight": 0.3, "config": {"color": "blue"}},
            {"key": "treatment", "weight": 0.7, "config": {"color": "green"}}]})),
    )
    .await;
    assert!(publish.published(), "{publish:?} {body}");
    let (_, _, _, body) = latest(&app, "").await;
    assert_eq!(
        body["features"]["checkout"]["rules"][0]["weights"],
        json!([0.3, 0.7])
    );
    // An audience the running experiment uses, then a change of its rules.
    let (status, body) = app
        .post_json(
            "/v1/environments/production/audiences",
            &app.admin_key,
            &json!({"key": "adults", "rules": [
                {"conditions": [{"attribute": "age", "operator": "gte", "value": 18}]}]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (_, publish, body) = change(
        &app,
        Method::PATCH,
        "/v1/experiments/checkout",
        Some(json!({"version": 5, "audience": "adults"})),
    )
    .await;
    assert!(publish.published(), "{publish:?} {body}");
    let (_, publish, body) = change(
        &app,
        Method::PUT,
        "/v1/environments/production/audiences/adults",
        Some(json!({"rules": [
            {"conditions": [{"attribute": "age", "operator": "gte", "value": 21}]}]})),
    )
    .await;
    assert!(publish.published(), "{publish:?} {body}");
    let (_, _, _, body) = latest(&app, "").await;
    assert!(
        body["features"]["checkout"]["rules"][0]["condition"]
            .to_string()
            .contains("21"),
        "the audience's new rules are inlined: {body}"
    );
    // An audience no running experiment uses publishes nothing.
    app.post_json(
        "/v1/environments/production/audiences",
        &app.admin_key,
        &json!({"key": "unused", "rules": []}),
    )
    .await;
    let (status, publish, _) = change(
        &app,
        Method::PUT,
        "/v1/environments/production/audiences/unused",
        Some(json!({"rules": []})),
    )
    .await;
    assert_eq!((status, &publish), (StatusCode::OK, &Publish::none()));

    // Pause (the feature leaves the snapshot), resume, a manual winner (a force rule).
    let (_, publish, _) = change(
        &app,
        Method::POST,
        "/v1/experiments/checkout/status",
        Some(json!({"status": "paused"})),
    )
    .await;
    assert!(publish.published());
    let (_, _, _, body) = latest(&app, "").await;
    assert!(body["features"].get("checkout").is_none(), "{body}");
    let (_, publish, _) = change(
        &app,
        Method::POST,
        "/v1/experiments/checkout/status",
        Some(json!({"status": "running"})),
    )
    .await;
    assert!(publish.published());
    let (_, publish, _) = change(
        &app,
        Method::POST,
        "/v1/experiments/checkout/winner",
        Some(json!({"variant": "treatment", "reason": "clear lift"})),
    )
    .await;
    assert!(publish.published());
    let (_, _, _, body) = latest(&app, "").await;
    assert_eq!(
        body["features"]["checkout"]["rules"][0]["force"],
        json!({"color": "green"}),
        "{body}"
    );
    // Deleting it takes it out.
    let (_, publish, _) = change(&app, Method::DELETE, "/v1/experiments/checkout", None).await;
    assert!(publish.published());
    let (_, version, _, body) = latest(&app, "").await;
    assert_eq!(body["features"], json!({}));

    let all = versions(&app, "").await;
    let triggers: Vec<&str> = all.iter().rev().map(|(_, t)| t.as_str()).collect();
    assert_eq!(
        triggers,
        [
            "experiment.status_changed",
            "experiment.updated",
            "experiment.variants_changed",
            "experiment.updated",
            "audience.updated",
            "experiment.status_changed",
            "experiment.status_changed",
            "experiment.winner_changed",
            "experiment.deleted",
        ]
    );
    assert_eq!(version, Some(9));
    assert_eq!(
        all.iter().map(|(v, _)| *v).collect::<Vec<_>>(),
        (1..=9).rev().collect::<Vec<_>>()
    );
    // Every version stays readable as it was, and in the directory.
    let r = app
        .client
        .get(app.url("/v1/environments/production/snapshots/1"))
        .bearer_auth(&client)
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-snapshot-version"], "1");
    let first: Value = r.json().await.unwrap();
    assert_eq!(read_json(&folder.join("snapshots/1.json")), first);
    assert_eq!(read_json(&folder.join("version.json"))["version"], 9);
    let (status, body) = app
        .get("/v1/environments/production/snapshots/10", &app.admin_key)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error_code(&body), "snapshot_not_found");

    // A manual publish of an unchanged scope records nothing.
    let (status, body) = app
        .post_json(
            "/v1/environments/production/publish",
            &app.admin_key,
            &json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        (
            body["created"].as_bool(),
            body["publication"]["version"].as_u64()
        ),
        (Some(false), Some(9))
    );
    assert_eq!(body["targets"], json!(["directory"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_organizations_snapshot_follows_the_global_experiments_it_sees() {
    let (app, _dir) = with_directory().await;
    let (status, body) = app
        .post_json(
            "/v1/environments/production/publish?organization=acme",
            &app.admin_key,
            &json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["publication"]["organization"], "acme");
    assert_eq!(body["publication"]["version"], 1);
    // A global experiment starts: the global scope and acme's get a new version.
    app.create_experiment(&ab_experiment("global-banner")).await;
    assert_eq!(app.activate("global-banner").await.0, StatusCode::OK);
    let (_, version, _, body) = latest(&app, "?organization=acme").await;
    assert_eq!(version, Some(2));
    assert!(body["features"]["global-banner"].is_object(), "{body}");
    let (_, version, _, _) = latest(&app, "").await;
    assert_eq!(version, Some(1));
    // An organization's own experiment touches only its scope.
    let (status, body) = app
        .post_json(
            "/v1/experiments?organization=acme",
            &app.admin_key,
            &ab_experiment("acme-only"),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, _) = app
        .post_json(
            "/v1/experiments/acme-only/activate?organization=acme",
            &app.admin_key,
            &json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(latest(&app, "?organization=acme").await.1, Some(3));
    assert_eq!(latest(&app, "").await.1, Some(1));
    // A client key bound to no organization reads only the global scope.
    let client = app.create_key(&["client"]).await;
    let (status, body) = app
        .get(
            "/v1/environments/production/snapshots/latest?organization=acme",
            &client,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_publish_does_not_fail_the_change_and_the_job_retries_it() {
    let (app, dir) = with_directory().await;
    let target = dir.path().join("published");
    // The directory becomes a file: every write under it fails.
    std::fs::remove_dir_all(&target).unwrap();
    std::fs::write(&target, b"not a directory").unwrap();

    app.create_experiment(&ab_experiment("checkout")).await;
    let (status, publish, body) = change(
        &app,
        reqwest::Method::POST,
        "/v1/experiments/checkout/activate",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "the change is made: {body}");
    assert_eq!(body["experiment"]["status"], "running");
    assert_eq!(publish.attempted.as_deref(), Some("true"));
    assert_eq!(publish.succeeded.as_deref(), Some("false"));
    let error = publish.error.unwrap();
    assert!(error.contains("directory target"), "{error}");
    // The version is recorded and served; only the directory lacks it.
    assert_eq!(latest(&app, "").await.1, Some(1));

    let internal = app.create_key(&["internal"]).await;
    let run = |app: &TestApp| {
        let internal = internal.clone();
        let url = app.url("/v1/internal/jobs/publish/run");
        let client = app.client.clone();
        async move {
            let r = client
                .post(url)
                .bearer_auth(internal)
                .json(&json!({}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::OK);
            r.json::<Value>().await.unwrap()
        }
    };
    let still = run(&app).await;
    assert_eq!(still["outcome"], "succeeded", "{still}");
    assert_eq!(
        still["report"]["failed"].as_array().unwrap().len(),
        1,
        "{still}"
    );
    // A manual publish says so too.
    let (status, body) = app
        .post_json(
            "/v1/environments/production/publish",
            &app.admin_key,
            &json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert_eq!(error_code(&body), "publish_failed");
    assert_eq!(body["error"]["details"][0]["target"], "directory");

    // Fixed: the next run writes the recorded version (no new one: nothing changed).
    std::fs::remove_file(&target).unwrap();
    std::fs::create_dir(&target).unwrap();
    let fixed = run(&app).await;
    assert_eq!(fixed["report"]["failed"], json!([]), "{fixed}");
    assert_eq!(fixed["report"]["published"], 0, "{fixed}");
    let folder = target.join("production/global");
    assert_eq!(read_json(&folder.join("version.json"))["version"], 1);
    assert_eq!(
        read_json(&folder.join("latest.json")),
        latest(&app, "").await.3
    );
    // Nothing is pending any more: the next run writes nothing.
    std::fs::remove_file(folder.join("latest.json")).unwrap();
    run(&app).await;
    assert!(!folder.join("latest.json").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_winner_decided_without_a_request_is_published_by_the_job() {
    let (app, _dir) = with_directory().await;
    app.create_experiment(&ab_experiment("checkout")).await;
    assert_eq!(app.activate("checkout").await.0, StatusCode::OK);
    let (_, body) = app.get("/v1/experiments/checkout", &app.admin_key).await;
    // What the evaluation job does when the policy decides.
    app.store
        .set_winner(&verdict_store::WinnerChange {
            experiment_id: body["id"].as_str().unwrap().to_owned(),
            winner: verdict_domain::Winner {
                variant: "treatment".into(),
                decided_at: time::OffsetDateTime::now_utc(),
                source: verdict_domain::PolicyMode::Automatic,
                details: json!({}),
            },
            complete: true,
            actor: "job:evaluate".into(),
            expected_version: None,
        })
        .await
        .unwrap();
    assert_eq!(latest(&app, "").await.1, Some(1));
    let internal = app.create_key(&["internal"]).await;
    let (status, run) = app
        .post_json("/v1/internal/jobs/publish/run", &internal, &json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{run}");
    assert_eq!(run["report"]["published"], 1, "{run}");
    let (_, version, _, body) = latest(&app, "").await;
    assert_eq!(version, Some(2));
    assert_eq!(
        body["features"]["checkout"]["rules"][0]["force"]["color"], "green",
        "{body}"
    );
    assert_eq!(versions(&app, "").await[0].1, "job");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_announces_each_new_version() {
    let (app, _dir) = with_directory().await;
    let client = app.create_key(&["client"]).await;
    let response = app
        .client
        .get(app.url("/v1/environments/production/snapshots/stream"))
        .bearer_auth(&client)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response;
    let mut text = String::new();
    let mut next_event = async || -> Value {
        loop {
            if let Some(end) = text.find("\n\n") {
                let block: String = text.drain(..end + 2).collect();
                if let Some(data) = block.lines().find_map(|l| l.strip_prefix("data: ")) {
                    assert!(block.contains("event: snapshot"), "{block}");
                    return serde_json::from_str(data).unwrap();
                }
                continue;
            }
            let chunk = tokio::time::timeout(Duration::from_secs(10), body.chunk())
                .await
                .expect("an event within 10 s")
                .unwrap()
                .expect("the stream goes on");
            text.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    };
    app.create_experiment(&ab_experiment("checkout")).await;
    assert_eq!(app.activate("checkout").await.0, StatusCode::OK);
    let first = next_event().await;
    assert_eq!(
        (first["version"].as_u64(), first["trigger"].as_str()),
        (Some(1), Some("experiment.status_changed"))
    );
    assert_eq!(app.set_status("checkout", "paused").await.0, StatusCode::OK);
    assert_eq!(next_event().await["version"], 2);
}
