//! `assignment.auto_exposure`: a subject's exposure recorded with its first assignment,
//! once per subject, however it is assigned. On both backends (`VERDICT_TEST_BACKEND`).

mod common;

use common::{TestApp, ab_experiment, first_metric, spawn_app};
use reqwest::StatusCode;
use serde_json::{Value, json};
use time::OffsetDateTime;

/// Exposure events and exposed subjects over every variant of a results body.
fn exposures(results: &Value) -> (u64, u64) {
    let rows = first_metric(results)["variants"].as_array().expect("rows");
    (
        rows.iter().map(|r| r["exposures"].as_u64().unwrap()).sum(),
        rows.iter()
            .map(|r| r["exposed_subjects"].as_u64().unwrap())
            .sum(),
    )
}

async fn running(app: &TestApp, key: &str, extra: Value) {
    let mut body = ab_experiment(key);
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    app.create_experiment(&body).await;
    assert_eq!(app.activate(key).await.0, StatusCode::OK);
}

#[tokio::test]
async fn each_subject_is_exposed_once_on_its_first_assignment() {
    let app = spawn_app().await;
    running(
        &app,
        "auto",
        json!({"assignment": {"salt": "fixed-test-salt", "auto_exposure": true}}),
    )
    .await;
    running(&app, "manual", json!({})).await;
    let created = app.get("/v1/experiments/auto", &app.admin_key).await.1;
    assert_eq!(created["assignment"]["auto_exposure"], true, "{created}");
    let client = app.create_key(&["client"]).await;

    // Ten subjects, each assigned three ways: GET, POST, and the bulk endpoint.
    for i in 0..10 {
        let subject = format!("s-{i}");
        let (status, a) = app.assignment("auto", &client, &subject, &[]).await;
        assert_eq!(status, StatusCode::OK, "{a}");
        let (status, a) = app
            .post_json(
                "/v1/experiments/auto/assignment",
                &client,
                &json!({"subject_id": subject}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{a}");
        let (status, all) = app
            .post_json("/v1/assignments", &client, &json!({"subject_id": subject}))
            .await;
        assert_eq!(status, StatusCode::OK, "{all}");
        assert_eq!(all["assignments"].as_array().unwrap().len(), 2, "{all}");
    }
    let results = app.results("auto").await;
    assert_eq!(exposures(&results), (10, 10), "{results}");
    assert_eq!(results["totals"]["exposed_subjects"], 10, "{results}");
    let per_type: u64 = results["variants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["events"]["exposure"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(per_type, 10, "{results}");

    // The experiment without it records nothing by itself (its subjects were assigned by
    // the bulk calls above).
    let manual = app.results("manual").await;
    assert_eq!(exposures(&manual), (0, 0), "{manual}");
    assert_eq!(manual["totals"]["subjects"], 10, "{manual}");
}

#[tokio::test]
async fn the_exposure_is_the_experiments_own_event_and_gates_the_analysis() {
    let app = spawn_app().await;
    running(
        &app,
        "gated",
        json!({"exposure_event": "viewed",
               "assignment": {"salt": "fixed-test-salt", "auto_exposure": true}}),
    )
    .await;
    let client = app.create_key(&["client"]).await;
    for i in 0..6 {
        let (status, a) = app
            .assignment("gated", &client, &format!("s-{i}"), &[])
            .await;
        assert_eq!(status, StatusCode::OK, "{a}");
    }
    let results = app.results("gated").await;
    // Every assigned subject is exposed from its assignment, so all of them are analysed.
    assert_eq!(results["totals"]["subjects"], 6, "{results}");
    assert_eq!(exposures(&results), (6, 6), "{results}");
    let viewed: u64 = results["variants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["events"]["viewed"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(viewed, 6, "{results}");
    assert!(
        results["variants"]
            .as_array()
            .unwrap()
            .iter()
            .all(|v| v["events"].get("exposure").is_none()),
        "{results}"
    );
}

#[tokio::test]
async fn a_subject_stored_without_its_exposure_gets_it_when_next_assigned() {
    let app = spawn_app().await;
    running(
        &app,
        "auto",
        json!({"assignment": {"salt": "fixed-test-salt", "auto_exposure": true}}),
    )
    .await;
    let client = app.create_key(&["client"]).await;
    let scope = verdict_domain::Scope {
        environment: "production".into(),
        organization: None,
    };
    let experiment = app
        .store
        .get_experiment(&scope, "auto")
        .await
        .unwrap()
        .expect("the experiment");
    // Another process stored this assignment and stopped before recording the exposure.
    let at = verdict_store::model::truncate_to_millis(OffsetDateTime::now_utc())
        - time::Duration::minutes(5);
    let (_, created) = app
        .store
        .get_or_create_assignment(&verdict_domain::Assignment {
            experiment_id: experiment.id.clone(),
            subject: "interrupted".into(),
            variant: "treatment".into(),
            assigned_at: at,
            context: None,
        })
        .await
        .unwrap();
    assert!(created);
    assert_eq!(exposures(&app.results("auto").await), (0, 0));

    for _ in 0..3 {
        let (status, a) = app.assignment("auto", &client, "interrupted", &[]).await;
        assert_eq!(status, StatusCode::OK, "{a}");
        assert_eq!(a["variant"], "treatment", "{a}");
    }
    let results = app.results("auto").await;
    assert_eq!(exposures(&results), (1, 1), "{results}");
    let treatment = common::variant_row(&results, "treatment");
    assert_eq!(treatment["exposures"], 1, "{treatment}");
}

#[tokio::test]
async fn auto_exposure_must_be_a_boolean() {
    let app = spawn_app().await;
    let mut body = ab_experiment("bad");
    body["assignment"]["auto_exposure"] = json!("yes");
    let (status, answer) = app
        .post_json("/v1/experiments", &app.admin_key, &body)
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
    assert_eq!(common::error_code(&answer), "invalid_body");
    assert_eq!(app.experiment_count().await, 0);
}
