//! The bad-input matrix: every malformed request is a 4xx with a stable code, never a 5xx,
//! and nothing of it is written.

mod common;

use common::{TestApp, ab_experiment, error_code, spawn_app, spawn_app_with};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// A running `checkout` experiment with `subjects` assigned subjects (`user-0`, …); returns
/// a client key.
async fn running_with_subjects(app: &TestApp, subjects: usize) -> String {
    app.create_experiment(&ab_experiment("checkout")).await;
    assert_eq!(app.activate("checkout").await.0, StatusCode::OK);
    let client = app.create_key(&["client"]).await;
    for i in 0..subjects {
        let (status, body) = app
            .assignment("checkout", &client, &format!("user-{i}"), &[])
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["in_experiment"], true);
    }
    client
}

/// What is stored, as far as HTTP can see: experiment count and the results of `checkout`
/// (without `days_running`, which moves with the clock).
async fn snapshot(app: &TestApp) -> (u64, Value) {
    let mut results = app.results("checkout").await;
    results
        .as_object_mut()
        .expect("results object")
        .remove("days_running")
        .expect("days_running");
    (app.experiment_count().await, results)
}

/// Total purchases counted in `checkout` results.
fn total_conversions(results: &Value) -> u64 {
    results["metrics"][0]["variants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["conversions"].as_u64().unwrap())
        .sum()
}

fn purchase(subject: &str, id: &str) -> Value {
    json!({"event_id": id, "experiment": "checkout", "subject_id": subject, "event": "purchase"})
}

/// Assert a 4xx with `code` and return the body.
fn assert_error(status: StatusCode, body: &Value, want: StatusCode, code: &str) {
    assert_eq!(status, want, "{body}");
    assert_eq!(error_code(body), code, "{body}");
}

#[tokio::test]
async fn malformed_json_is_a_400_invalid_json_and_writes_nothing() {
    let app = spawn_app().await;
    let client = running_with_subjects(&app, 2).await;
    let before = snapshot(&app).await;
    for (path, key, body) in [
        (
            "/v1/experiments",
            &app.admin_key,
            r#"{"key": "x", "variants": ["#,
        ),
        (
            "/v1/experiments",
            &app.admin_key,
            "{'key': 'single-quotes'}",
        ),
        (
            "/v1/events",
            &client,
            r#"{"events": [{"experiment": "checkout",}]}"#,
        ),
        ("/v1/events", &client, ""),
    ] {
        let (status, answer) = app
            .post_raw(path, key, Some("application/json"), body)
            .await;
        assert_error(status, &answer, StatusCode::BAD_REQUEST, "invalid_json");
    }
    assert_eq!(snapshot(&app).await, before);
}

#[tokio::test]
async fn trailing_characters_after_the_json_value_are_a_400_invalid_json() {
    let app = spawn_app().await;
    let client = running_with_subjects(&app, 1).await;
    let before = snapshot(&app).await;
    let body = format!(
        "{} trailing",
        json!({"events": [purchase("user-0", "t-1")]})
    );
    let (status, answer) = app
        .post_raw("/v1/events", &client, Some("application/json"), body)
        .await;
    assert_error(status, &answer, StatusCode::BAD_REQUEST, "invalid_json");
    let body = format!("{}{{}}", ab_experiment("second"));
    let (status, answer) = app
        .post_raw(
            "/v1/experiments",
            &app.admin_key,
            Some("application/json"),
            body,
        )
        .await;
    assert_error(status, &answer, StatusCode::BAD_REQUEST, "invalid_json");
    assert_eq!(snapshot(&app).await, before);
}

#[tokio::test]
async fn wrong_types_are_a_422_invalid_body_naming_the_field() {
    let app = spawn_app().await;
    let client = running_with_subjects(&app, 1).await;
    let before = snapshot(&app).await;

    let mut bad_key = ab_experiment("x");
    bad_key["key"] = json!(5);
    let mut bad_weight = ab_experiment("y");
    bad_weight["variants"][1]["weight"] = json!("half");
    let mut bad_coverage = ab_experiment("z");
    bad_coverage["coverage"] = json!([1]);
    for (body, field) in [
        (bad_key, "key"),
        (bad_weight, "variants[1].weight"),
        (bad_coverage, "coverage"),
    ] {
        let (status, answer) = app
            .post_json("/v1/experiments", &app.admin_key, &body)
            .await;
        assert_error(
            status,
            &answer,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
        );
        assert_eq!(answer["error"]["details"][0]["field"], field, "{answer}");
    }
    let (status, answer) = app
        .patch_json(
            "/v1/experiments/checkout",
            &app.admin_key,
            &json!({"version": -1}),
        )
        .await;
    assert_error(
        status,
        &answer,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_body",
    );
    assert_eq!(answer["error"]["details"][0]["field"], "version");

    // Events: the batch shape is checked as a whole, items one by one.
    let (status, answer) = app
        .post_json("/v1/events", &client, &json!({"events": "many"}))
        .await;
    assert_error(
        status,
        &answer,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_body",
    );
    let (status, answer) = app.post_json("/v1/events", &client, &json!([1, 2])).await;
    assert_error(
        status,
        &answer,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_body",
    );
    let (status, answer) = app
        .post_json("/v1/events", &client, &json!({"events": []}))
        .await;
    assert_error(
        status,
        &answer,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_body",
    );
    let mut wrong_value = purchase("user-0", "w-1");
    wrong_value["value"] = json!("ten");
    let mut wrong_subject = purchase("user-0", "w-2");
    wrong_subject["subject_id"] = json!(42);
    let (status, report) = app
        .post_events(&client, vec![wrong_value, wrong_subject])
        .await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["rejected"], 2, "{report}");
    for r in report["results"].as_array().unwrap() {
        assert_eq!(r["code"], "invalid", "{r}");
    }
    assert_eq!(snapshot(&app).await, before);
}

#[tokio::test]
async fn unknown_fields_are_refused_where_the_schema_is_closed() {
    let app = spawn_app().await;
    let client = running_with_subjects(&app, 1).await;
    let before = snapshot(&app).await;

    let mut body = ab_experiment("extra");
    body["colour"] = json!("red");
    let (status, answer) = app
        .post_json("/v1/experiments", &app.admin_key, &body)
        .await;
    assert_error(
        status,
        &answer,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_body",
    );
    assert!(answer.to_string().contains("colour"), "{answer}");

    let mut body = ab_experiment("extra-variant-field");
    body["variants"][0]["colour"] = json!("red");
    let (status, answer) = app
        .post_json("/v1/experiments", &app.admin_key, &body)
        .await;
    assert_error(
        status,
        &answer,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_body",
    );

    let (status, answer) = app
        .patch_json(
            "/v1/experiments/checkout",
            &app.admin_key,
            &json!({"version": 2, "status": "completed"}),
        )
        .await;
    assert_error(
        status,
        &answer,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_body",
    );

    let (status, answer) = app
        .post_json(
            "/v1/events",
            &client,
            &json!({"events": [purchase("user-0", "u-1")], "extra": true}),
        )
        .await;
    assert_error(
        status,
        &answer,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_body",
    );

    let mut item = purchase("user-0", "u-2");
    item["revenue"] = json!(10);
    let (status, report) = app.post_events(&client, vec![item]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(report["results"][0]["status"], "rejected", "{report}");
    assert_eq!(report["results"][0]["code"], "invalid");

    let (status, answer) = app
        .post_json(
            "/v1/experiments/checkout/assignment",
            &client,
            &json!({"subject_id": "user-9", "attrs": {}}),
        )
        .await;
    assert_error(
        status,
        &answer,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_body",
    );

    assert_eq!(snapshot(&app).await, before);
    let (_, stored) = app.get("/v1/experiments/checkout", &app.admin_key).await;
    assert_eq!(stored["status"], "running");
}

#[tokio::test]
async fn a_body_without_a_json_content_type_is_a_415() {
    let app = spawn_app().await;
    let client = running_with_subjects(&app, 1).await;
    let before = snapshot(&app).await;
    let body = ab_experiment("no-content-type").to_string();
    for content_type in [
        None,
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
    ] {
        let (status, answer) = app
            .post_raw(
                "/v1/experiments",
                &app.admin_key,
                content_type,
                body.clone(),
            )
            .await;
        assert_error(
            status,
            &answer,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        );
    }
    let events = json!({"events": [purchase("user-0", "ct-1")]}).to_string();
    let (status, answer) = app
        .post_raw("/v1/events", &client, None, events.clone())
        .await;
    assert_error(
        status,
        &answer,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    );
    assert_eq!(snapshot(&app).await, before);
    // With a charset parameter it is JSON.
    let (status, report) = app
        .post_raw(
            "/v1/events",
            &client,
            Some("application/json; charset=utf-8"),
            events,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["accepted"], 1);
}

#[tokio::test]
async fn a_body_over_the_configured_limit_is_a_413_payload_too_large() {
    let app = spawn_app_with(&[("VERDICT_SERVER__REQUEST_BODY_LIMIT_BYTES", "4096")]).await;
    let client = running_with_subjects(&app, 1).await;
    let before = snapshot(&app).await;

    let events: Vec<Value> = (0..60)
        .map(|i| purchase("user-0", &format!("big-{i}")))
        .collect();
    let body = json!({ "events": events }).to_string();
    assert!(body.len() > 4096);
    let (status, answer) = app
        .post_raw("/v1/events", &client, Some("application/json"), body)
        .await;
    assert_error(
        status,
        &answer,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
    );

    let mut exp = ab_experiment("huge");
    exp["description"] = json!("x".repeat(5000));
    let (status, answer) = app.post_json("/v1/experiments", &app.admin_key, &exp).await;
    assert_error(
        status,
        &answer,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
    );

    assert_eq!(snapshot(&app).await, before);
    // Under the limit, the same kind of request passes.
    let (status, report) = app
        .post_events(&client, vec![purchase("user-0", "small-1")])
        .await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(total_conversions(&app.results("checkout").await), 1);
}

#[tokio::test]
async fn a_batch_of_1001_events_is_a_413_and_stores_none_of_them() {
    let app = spawn_app().await;
    let client = running_with_subjects(&app, 3).await;
    let before = snapshot(&app).await;
    let events: Vec<Value> = (0..1001)
        .map(|i| purchase(&format!("user-{}", i % 3), &format!("b-{i}")))
        .collect();
    let (status, answer) = app.post_events(&client, events.clone()).await;
    assert_error(
        status,
        &answer,
        StatusCode::PAYLOAD_TOO_LARGE,
        "batch_too_large",
    );
    assert_eq!(snapshot(&app).await, before);
    assert_eq!(total_conversions(&before.1), 0);

    // The same events minus one fit, and are all new: none was stored by the refused batch.
    let (status, report) = app.post_events(&client, events[..1000].to_vec()).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["accepted"], 1000, "{}", report["duplicates"]);
    assert_eq!(total_conversions(&app.results("checkout").await), 1000);
}

#[tokio::test]
async fn nan_infinity_and_out_of_range_numbers_are_refused_with_a_4xx() {
    let app = spawn_app().await;
    let client = running_with_subjects(&app, 1).await;
    let before = snapshot(&app).await;
    let event = |value: &str| {
        format!(
            r#"{{"events": [{{"event_id": "n-1", "experiment": "checkout",
                "subject_id": "user-0", "event": "purchase", "value": {value}}}]}}"#
        )
    };
    for literal in ["NaN", "Infinity", "-Infinity"] {
        let (status, answer) = app
            .post_raw(
                "/v1/events",
                &client,
                Some("application/json"),
                event(literal),
            )
            .await;
        assert_error(status, &answer, StatusCode::BAD_REQUEST, "invalid_json");
    }
    let (status, answer) = app
        .post_raw(
            "/v1/events",
            &client,
            Some("application/json"),
            event("1e400"),
        )
        .await;
    assert!(status.is_client_error(), "{status}: {answer}");
    assert!(
        ["invalid_json", "invalid_body"].contains(&error_code(&answer)),
        "{answer}"
    );
    let exp = ab_experiment("huge-coverage").to_string().replace(
        r#""key":"huge-coverage""#,
        r#""key":"huge-coverage","coverage":1e400"#,
    );
    assert!(exp.contains("1e400"));
    let (status, answer) = app
        .post_raw(
            "/v1/experiments",
            &app.admin_key,
            Some("application/json"),
            exp,
        )
        .await;
    assert!(status.is_client_error(), "{status}: {answer}");
    assert!(
        ["invalid_json", "invalid_body"].contains(&error_code(&answer)),
        "{answer}"
    );
    assert_eq!(snapshot(&app).await, before);
}

#[tokio::test]
async fn a_10_kb_subject_id_is_refused_for_assignment_and_rejected_as_an_event() {
    let app = spawn_app().await;
    let client = running_with_subjects(&app, 1).await;
    let before = snapshot(&app).await;
    let long = "s".repeat(10 * 1024);

    let (status, answer) = app.assignment("checkout", &client, &long, &[]).await;
    assert_error(
        status,
        &answer,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    );
    assert_eq!(answer["error"]["details"][0]["field"], "subject_id");
    let (status, answer) = app
        .post_json(
            "/v1/experiments/checkout/assignment",
            &client,
            &json!({"subject_id": long}),
        )
        .await;
    assert_error(
        status,
        &answer,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    );
    let (status, answer) = app
        .post_json("/v1/assignments", &client, &json!({"subject_id": long}))
        .await;
    assert_error(
        status,
        &answer,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    );
    let (status, answer) = app.assignment("checkout", &client, "", &[]).await;
    assert_error(
        status,
        &answer,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    );
    // Nor may a QA override name a subject that could never be assigned (nothing audited).
    let (status, answer) = app
        .put_json(
            &format!("/v1/experiments/checkout/forced/{long}"),
            &app.admin_key,
            &json!({"variant": "treatment"}),
        )
        .await;
    assert_error(
        status,
        &answer,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    );
    let (_, audit) = app
        .get("/v1/experiments/checkout/audit", &app.admin_key)
        .await;
    assert!(
        !audit.to_string().contains(&long[..300]),
        "audited: {audit}"
    );

    let (status, report) = app
        .post_events(
            &client,
            vec![purchase(&long, "long-1"), purchase("user-0", "ok-1")],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["results"][0]["status"], "rejected");
    assert_eq!(report["results"][0]["code"], "invalid");
    assert_eq!(report["results"][1]["status"], "accepted");
    let after = app.results("checkout").await;
    let subjects = |r: &Value| -> u64 {
        r["metrics"][0]["variants"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["subjects"].as_u64().unwrap())
            .sum()
    };
    assert_eq!(
        subjects(&after),
        subjects(&before.1),
        "no subject was stored"
    );
    assert_eq!(subjects(&after), 1);
    assert_eq!(total_conversions(&after), 1, "only the valid event counts");
}

#[tokio::test]
async fn every_subject_id_given_is_checked_even_when_no_experiment_is_live() {
    let app = spawn_app().await;
    let client = app.create_key(&["client"]).await;
    // An empty x-anon-id header and an over-long user_id: both listed, though nothing is live.
    let (status, answer) = app
        .send(
            app.client
                .post(app.url("/v1/assignments"))
                .bearer_auth(&client)
                .header("x-anon-id", "")
                .json(&json!({"subject_id": "visitor-1", "user_id": "u".repeat(257)})),
        )
        .await;
    assert_error(
        status,
        &answer,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    );
    let fields = common::problem_fields(&answer);
    assert_eq!(fields, ["anon_id", "user_id"], "{answer}");
    let (status, answer) = app
        .post_json(
            "/v1/assignments",
            &client,
            &json!({"subject_id": "visitor-1"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["assignments"], json!([]));
}

#[tokio::test]
async fn a_body_that_is_not_a_json_object_is_a_422_invalid_body() {
    let app = spawn_app().await;
    let client = app.create_key(&["client"]).await;
    // Every field of an assignment request is optional: an array must still not pass for one.
    for (path, key, body) in [
        ("/v1/assignments", &client, "[null, null]"),
        ("/v1/assignments", &client, r#"["visitor-1"]"#),
        ("/v1/assignments", &client, "\"visitor-1\""),
        ("/v1/experiments", &app.admin_key, "[]"),
        ("/v1/environments", &app.admin_key, "42"),
    ] {
        let (status, answer) = app
            .post_raw(path, key, Some("application/json"), body)
            .await;
        assert_error(
            status,
            &answer,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
        );
    }
    // Broken JSON that starts like an array stays a 400 invalid_json.
    let (status, answer) = app
        .post_raw("/v1/assignments", &client, Some("application/json"), "[nul")
        .await;
    assert_error(status, &answer, StatusCode::BAD_REQUEST, "invalid_json");
    assert_eq!(app.experiment_count().await, 0);
}

#[tokio::test]
async fn an_unknown_status_value_is_refused_with_a_stable_code() {
    let app = spawn_app().await;
    app.create_experiment(&ab_experiment("checkout")).await;
    let (status, answer) = app.set_status("checkout", "flying").await;
    assert_error(
        status,
        &answer,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_body",
    );
    assert_eq!(answer["error"]["details"][0]["field"], "status");
    let (status, answer) = app
        .post_json(
            "/v1/experiments/checkout/status",
            &app.admin_key,
            &json!({"status": 3}),
        )
        .await;
    assert_error(
        status,
        &answer,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_body",
    );
    let (status, answer) = app
        .get("/v1/experiments?status=flying", &app.admin_key)
        .await;
    assert_error(status, &answer, StatusCode::BAD_REQUEST, "invalid_query");
    let (_, stored) = app.get("/v1/experiments/checkout", &app.admin_key).await;
    assert_eq!(stored["status"], "draft");
    assert_eq!(stored["version"], 1);
}

#[tokio::test]
async fn a_key_without_the_needed_scope_is_a_403_and_writes_nothing() {
    let app = spawn_app().await;
    let client = running_with_subjects(&app, 1).await;
    let internal = app.create_key(&["internal"]).await;
    let before = snapshot(&app).await;

    let (status, answer) = app
        .post_json("/v1/experiments", &client, &ab_experiment("by-client"))
        .await;
    assert_error(status, &answer, StatusCode::FORBIDDEN, "forbidden");
    let (status, answer) = app
        .post_json(
            "/v1/experiments/checkout/winner",
            &client,
            &json!({"variant": "treatment"}),
        )
        .await;
    assert_error(status, &answer, StatusCode::FORBIDDEN, "forbidden");
    let (status, answer) = app.set_status("checkout", "paused").await;
    assert_eq!(status, StatusCode::OK, "the admin may: {answer}");
    assert_eq!(
        app.set_status("checkout", "running").await.0,
        StatusCode::OK
    );
    let (status, answer) = app
        .post_events(&internal, vec![purchase("user-0", "i-1")])
        .await;
    assert_error(status, &answer, StatusCode::FORBIDDEN, "forbidden");
    let (status, answer) = app.assignment("checkout", &internal, "user-1", &[]).await;
    assert_error(status, &answer, StatusCode::FORBIDDEN, "forbidden");
    let (status, answer) = app
        .get("/v1/experiments/checkout?environment=staging", &client)
        .await;
    assert_error(status, &answer, StatusCode::FORBIDDEN, "forbidden");
    let (status, answer) = app
        .assignment("checkout", &client, "user-1", &[("environment", "staging")])
        .await;
    assert_error(status, &answer, StatusCode::FORBIDDEN, "forbidden");

    let after = snapshot(&app).await;
    assert_eq!(after.0, before.0);
    assert_eq!(after.1["metrics"], before.1["metrics"]);
    assert!(after.1["winner"].is_null());
}

#[tokio::test]
async fn an_unknown_query_parameter_is_a_400_invalid_query() {
    let app = spawn_app().await;
    let client = running_with_subjects(&app, 1).await;
    let before = snapshot(&app).await;
    let (status, answer) = app
        .assignment("checkout", &client, "user-1", &[("colour", "red")])
        .await;
    assert_error(status, &answer, StatusCode::BAD_REQUEST, "invalid_query");
    assert_eq!(answer["error"]["details"][0]["field"], "colour");
    let (status, answer) = app
        .assignment("checkout", &client, "user-1", &[("attr.", "x")])
        .await;
    assert_error(status, &answer, StatusCode::BAD_REQUEST, "invalid_query");
    for path in [
        "/v1/experiments/checkout/results?metrc=purchase",
        "/v1/experiments/checkout/results?from=yesterday",
        "/v1/experiments?page=one&page_size=2",
    ] {
        let (status, answer) = app.get(path, &app.admin_key).await;
        assert_error(status, &answer, StatusCode::BAD_REQUEST, "invalid_query");
    }
    // Routes taking only the scope parameters refuse others too, before doing anything.
    let (status, answer) = app
        .post_json(
            "/v1/experiments/checkout/status?enviroment=staging",
            &app.admin_key,
            &json!({"status": "paused"}),
        )
        .await;
    assert_error(status, &answer, StatusCode::BAD_REQUEST, "invalid_query");
    let (status, experiment) = app.get("/v1/experiments/checkout", &app.admin_key).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        experiment["status"], "running",
        "the misspelt request changed nothing"
    );
    assert_eq!(snapshot(&app).await, before, "user-1 was never assigned");
}

#[tokio::test]
async fn a_batch_larger_than_the_rate_limit_burst_is_a_413_not_an_endless_429() {
    let app = spawn_app_with(&[
        ("VERDICT_INGEST__RATE_LIMIT_PER_SECOND", "5"),
        ("VERDICT_INGEST__RATE_LIMIT_BURST", "10"),
    ])
    .await;
    let client = running_with_subjects(&app, 2).await;
    let batch: Vec<Value> = (0..11)
        .map(|i| purchase(&format!("user-{}", i % 2), &format!("big-{i}")))
        .collect();
    let (status, answer) = app.post_events(&client, batch).await;
    assert_error(
        status,
        &answer,
        StatusCode::PAYLOAD_TOO_LARGE,
        "batch_too_large",
    );
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("rate_limit_burst")
    );
    assert_eq!(total_conversions(&app.results("checkout").await), 0);
    // The bucket was not charged: a batch that fits still passes at once.
    let batch: Vec<Value> = (0..10)
        .map(|i| purchase(&format!("user-{}", i % 2), &format!("ok-{i}")))
        .collect();
    let (status, report) = app.post_events(&client, batch).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["accepted"], 10);
}

#[tokio::test]
async fn the_event_rate_limit_answers_429_with_retry_after() {
    // 1 event/s and a burst of 10: after a full batch, the next full batch needs about 10 s
    // of refill, so it is refused however slowly this machine answers the first one.
    let app = spawn_app_with(&[
        ("VERDICT_INGEST__RATE_LIMIT_PER_SECOND", "1"),
        ("VERDICT_INGEST__RATE_LIMIT_BURST", "10"),
    ])
    .await;
    let client = running_with_subjects(&app, 2).await;
    let batch: Vec<Value> = (0..10)
        .map(|i| purchase(&format!("user-{}", i % 2), &format!("r-{i}")))
        .collect();
    let (status, report) = app.post_events(&client, batch).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["accepted"], 10);

    let response = app
        .client
        .post(app.url("/v1/events"))
        .bearer_auth(&client)
        .json(&json!({"events": (0..10)
            .map(|i| purchase("user-0", &format!("r-over-{i}")))
            .collect::<Vec<_>>()}))
        .send()
        .await
        .unwrap();
    let retry_after: u64 = response
        .headers()
        .get("retry-after")
        .expect("Retry-After header")
        .to_str()
        .unwrap()
        .parse()
        .expect("whole seconds");
    assert!((1..=10).contains(&retry_after), "{retry_after}");
    let (status, answer) = common::parts(response).await;
    assert_error(
        status,
        &answer,
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
    );
    assert_eq!(
        total_conversions(&app.results("checkout").await),
        10,
        "the refused event was not stored"
    );

    // Another key has its own bucket.
    let other = app.create_key(&["client"]).await;
    let (status, report) = app
        .post_events(&other, vec![purchase("user-1", "r-other")])
        .await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["accepted"], 1);
}

#[tokio::test]
async fn invalid_event_items_are_rejected_one_by_one_and_the_valid_ones_stored() {
    let app = spawn_app().await;
    let client = running_with_subjects(&app, 1).await;
    let with = |field: &str, value: Value| {
        let mut e = purchase("user-0", &format!("bad-{field}"));
        e[field] = value;
        e
    };
    let items = vec![
        with("ts", json!("2999-01-01T00:00:00Z")),
        with("ts", json!("1999-12-31T23:59:59Z")),
        with("ts", json!("yesterday")),
        with("event", json!("bad event!")),
        with("event_id", json!("e".repeat(129))),
        with("meta", json!([1, 2])),
        with("meta", json!({"blob": "m".repeat(5000)})),
        with("experiment", Value::Null),
        purchase("user-0", "good-1"),
    ];
    let (status, report) = app.post_events(&client, items.clone()).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["accepted"], 1, "{report}");
    assert_eq!(report["rejected"], items.len() - 1, "{report}");
    let results = report["results"].as_array().unwrap();
    for (i, r) in results.iter().enumerate().take(items.len() - 1) {
        assert_eq!(r["index"], i);
        assert_eq!(r["status"], "rejected", "{r}");
        assert_eq!(r["code"], "invalid", "{r}");
        assert!(r["message"].is_string(), "{r}");
    }
    assert_eq!(results[items.len() - 1]["status"], "accepted");
    assert_eq!(total_conversions(&app.results("checkout").await), 1);
}

#[tokio::test]
async fn text_that_is_not_utf8_is_refused_with_the_json_error_body_never_decoded_lossily() {
    let app = spawn_app().await;
    let client = running_with_subjects(&app, 1).await;
    // `%FF` and `%FE` are different bytes: decoded lossily they would be the same subject.
    for path in [
        "/v1/experiments/checkout/assignment?subject_id=%FF",
        "/v1/experiments/checkout/results?metric=%FE",
    ] {
        let (status, body) = app.get(path, &client).await;
        assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_query");
    }
    let (status, body) = app.get("/v1/experiments/%FF/results", &client).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_path");
    // Proper UTF-8, percent-encoded, is fine.
    let (status, body) = app
        .get(
            "/v1/experiments/checkout/assignment?subject_id=%C3%A9",
            &client,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn non_sticky_assignment_is_refused_with_the_reason_rather_than_losing_events() {
    let app = spawn_app().await;
    let (status, body) = app
        .post_json(
            "/v1/experiments",
            &app.admin_key,
            &json!({"key": "loose", "variants": [{"key": "a"}, {"key": "b"}],
                    "assignment": {"sticky": false}}),
        )
        .await;
    assert_error(
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    );
    assert_eq!(body["error"]["details"][0]["field"], "assignment.sticky");
    assert_eq!(app.experiment_count().await, 0);
}

#[tokio::test]
async fn an_event_value_beyond_the_bound_is_rejected_alone_and_totals_stay_finite() {
    let app = spawn_app_with(&[("VERDICT_INGEST__MAX_ABS_VALUE", "1000000")]).await;
    let client = running_with_subjects(&app, 2).await;
    let valued = |subject: &str, id: &str, value: Value| {
        let mut e = purchase(subject, id);
        e["value"] = value;
        e
    };
    let (status, report) = app
        .post_events(
            &client,
            vec![
                valued("user-0", "v-1", json!(1e6)),
                valued("user-0", "v-2", json!(1.5e6)),
                // A value whose square overflows f64: once in a sum of squares, forever.
                valued("user-1", "v-3", json!(-1.5e154)),
                valued("user-1", "v-4", json!(-1e6)),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{report}");
    let outcome: Vec<(&str, Option<&str>)> = report["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["status"].as_str().unwrap(), r["code"].as_str()))
        .collect();
    assert_eq!(
        outcome,
        vec![
            ("accepted", None),
            ("rejected", Some("value_out_of_range")),
            ("rejected", Some("value_out_of_range")),
            ("accepted", None),
        ],
        "{report}"
    );
    let message = report["results"][1]["message"].as_str().unwrap();
    assert!(message.contains("1e6"), "{message}");

    // JSON has no literal for a non-finite number; one out of f64's range is not JSON.
    let (status, answer) = app
        .post_raw(
            "/v1/events",
            &client,
            Some("application/json"),
            r#"{"events": [{"experiment": "checkout", "subject_id": "user-0", "event": "purchase", "value": 1e400}]}"#,
        )
        .await;
    assert_error(status, &answer, StatusCode::BAD_REQUEST, "invalid_json");

    // What was accepted is counted, what was refused is not.
    let results = app.results("checkout").await;
    assert_eq!(total_conversions(&results), 2, "{results}");
}
