//! Deleting experiments through the HTTP API (on the backend `VERDICT_TEST_BACKEND` names):
//! refused while the experiment serves subjects unless forced, its key free at once, the
//! deletion audited and readable afterwards, and its data (raw events, rollups,
//! assignments, QA overrides) removed by the retention job.

mod common;

use common::{TestApp, ab_experiment, error_code, spawn_app};
use reqwest::StatusCode;
use serde_json::{Value, json};
use verdict_store::{Granularity, TimeRange};

/// What the store still holds of experiment `id`: raw events, day buckets of `purchase`,
/// and stored assignments or overrides among `subjects`.
async fn data_of(app: &TestApp, id: &str, subjects: &[String]) -> (usize, usize, usize) {
    let events = app.store.scan_events(0, 100_000).await.unwrap();
    let buckets = app
        .store
        .buckets(id, "purchase", Granularity::Day, TimeRange::default())
        .await
        .unwrap();
    let mut stored = 0;
    for s in subjects {
        let record = app.store.subject_state(id, s).await.unwrap();
        stored += usize::from(record.assignment.is_some()) + usize::from(record.forced.is_some());
    }
    (
        events.iter().filter(|e| e.experiment_id == id).count(),
        buckets.len(),
        stored,
    )
}

async fn run_retention(app: &TestApp) -> Value {
    let internal = app.create_key(&["internal"]).await;
    let (status, run) = app
        .post_json("/v1/internal/jobs/retention/run", &internal, &json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{run}");
    assert_eq!(run["outcome"], "succeeded", "{run}");
    run
}

#[tokio::test]
async fn a_running_experiment_is_deleted_only_when_forced_and_its_data_purged() {
    let app = spawn_app().await;
    app.create_experiment(&ab_experiment("doomed")).await;
    app.create_experiment(&ab_experiment("kept")).await;
    let subjects: Vec<String> = (0..10).map(|i| format!("user-{i}")).collect();
    for key in ["doomed", "kept"] {
        assert_eq!(app.activate(key).await.0, StatusCode::OK);
        for s in &subjects {
            let (status, body) = app.assignment(key, &app.admin_key, s, &[]).await;
            assert_eq!(status, StatusCode::OK, "{body}");
        }
        let events = subjects
            .iter()
            .map(|s| json!({"experiment": key, "subject_id": s, "event": "purchase", "value": 1}))
            .collect();
        let (status, body) = app.post_events(&app.admin_key, events).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["accepted"], 10, "{body}");
    }
    let (status, body) = app
        .put_json(
            "/v1/experiments/doomed/forced/qa-1",
            &app.admin_key,
            &json!({"variant": "treatment"}),
        )
        .await;
    assert!(status.is_success(), "{body}");
    app.aggregate().await;
    let doomed = app.get("/v1/experiments/doomed", &app.admin_key).await.1;
    let kept = app.get("/v1/experiments/kept", &app.admin_key).await.1;
    let (doomed_id, kept_id) = (
        doomed["id"].as_str().unwrap().to_owned(),
        kept["id"].as_str().unwrap().to_owned(),
    );
    let mut with_qa = subjects.clone();
    with_qa.push("qa-1".into());
    let before = data_of(&app, &doomed_id, &with_qa).await;
    assert_eq!(before.0, 10, "{before:?}");
    assert!(before.1 >= 1, "{before:?}");
    assert_eq!(before.2, 11, "10 assignments and an override: {before:?}");
    let kept_before = data_of(&app, &kept_id, &subjects).await;

    // Serving subjects: refused without force; a client key may not delete at all.
    let (status, body) = app.delete("/v1/experiments/doomed", &app.admin_key).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(error_code(&body), "experiment_running");
    let client = app.create_key(&["client"]).await;
    let (status, body) = app
        .delete("/v1/experiments/doomed?force=true", &client)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, body) = app
        .delete("/v1/experiments/doomed?force=maybe", &app.admin_key)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(error_code(&body), "invalid_query");
    assert!(app.get("/v1/experiments/doomed", &app.admin_key).await.0 == StatusCode::OK);

    let (status, deleted) = app
        .delete("/v1/experiments/doomed?force=true", &app.admin_key)
        .await;
    assert_eq!(status, StatusCode::OK, "{deleted}");
    assert_eq!(deleted["id"], doomed_id.as_str());
    assert_eq!(deleted["key"], "doomed");
    assert_eq!(deleted["status"], "running");
    assert_eq!(deleted["purge"], "queued");

    // Gone from every read; its key is free again, for a new experiment with new subjects.
    for path in [
        "/v1/experiments/doomed",
        "/v1/experiments/doomed/winner",
        "/v1/experiments/doomed/results",
    ] {
        let (status, body) = app.get(path, &app.admin_key).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {body}");
    }
    let (status, _) = app
        .assignment("doomed", &app.admin_key, "user-0", &[])
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, body) = app
        .delete("/v1/experiments/doomed?force=true", &app.admin_key)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let again = app.create_experiment(&ab_experiment("doomed")).await;
    assert_ne!(again["id"], doomed_id.as_str());

    // The audit log stays readable by id, the deletion on top.
    let (status, audit) = app
        .get(
            &format!("/v1/audit?subject=experiment:{doomed_id}"),
            &app.admin_key,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{audit}");
    let latest = &audit["data"][0];
    assert_eq!(latest["action"], "deleted", "{audit}");
    assert_eq!(latest["details"]["key"], "doomed");
    assert_eq!(latest["details"]["forced"], true);
    assert!(latest["actor"].as_str().unwrap().starts_with("key:"));
    assert!(
        audit["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "created"),
        "{audit}"
    );

    // The retention job removes every row of it, and nothing of the other experiment.
    let run = run_retention(&app).await;
    let rows = run["report"]["deleted_experiment_rows"].as_u64().unwrap();
    assert!(
        rows as usize >= before.0 + before.1 + before.2,
        "{rows} rows for {before:?}: {run}"
    );
    assert_eq!(data_of(&app, &doomed_id, &with_qa).await, (0, 0, 0));
    assert_eq!(data_of(&app, &kept_id, &subjects).await, kept_before);
    let results = app.results("kept").await;
    assert!(results.to_string().contains("treatment"), "{results}");
}

#[tokio::test]
async fn drafts_and_completed_experiments_are_deleted_without_force() {
    let app = spawn_app().await;
    app.create_experiment(&ab_experiment("draft")).await;
    let (status, body) = app.delete("/v1/experiments/draft", &app.admin_key).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "draft");

    app.create_experiment(&ab_experiment("done")).await;
    assert_eq!(app.activate("done").await.0, StatusCode::OK);
    assert_eq!(app.set_status("done", "paused").await.0, StatusCode::OK);
    let (status, body) = app.delete("/v1/experiments/done", &app.admin_key).await;
    assert_eq!(status, StatusCode::CONFLICT, "paused still serves: {body}");
    assert_eq!(app.set_status("done", "completed").await.0, StatusCode::OK);
    let (status, body) = app.delete("/v1/experiments/done", &app.admin_key).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "completed");
    assert_eq!(app.experiment_count().await, 0);
}
