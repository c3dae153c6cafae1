//! The API's conventions: idempotent activation, pagination, error bodies, validation,
//! optimistic concurrency, the status machine, audiences, API keys, request ids.

mod common;

use std::sync::Arc;

use common::{ab_experiment, error_code, spawn_app};
use reqwest::StatusCode;
use serde_json::{Value, json};

#[tokio::test]
async fn a_redundant_activation_is_a_no_op_answering_changed_false() {
    let app = spawn_app().await;
    app.create_experiment(&ab_experiment("checkout")).await;
    let (status, first) = app.activate("checkout").await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(first["changed"], true);
    let (status, second) = app.activate("checkout").await;
    assert_eq!(status, StatusCode::OK, "{second}");
    assert_eq!(second["changed"], false);
    assert_eq!(second["experiment"]["status"], "running");
    assert_eq!(
        second["experiment"]["version"], first["experiment"]["version"],
        "a no-op writes nothing"
    );
}

#[tokio::test]
async fn twenty_concurrent_activations_make_exactly_one_transition_and_one_audit_entry() {
    let app = Arc::new(spawn_app().await);
    app.create_experiment(&ab_experiment("checkout")).await;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let app = app.clone();
        tasks.spawn(async move { app.activate("checkout").await });
    }
    let answers = tasks.join_all().await;
    assert_eq!(answers.len(), 20);
    for (status, body) in &answers {
        assert_eq!(*status, StatusCode::OK, "{body}");
        assert_eq!(body["experiment"]["status"], "running", "{body}");
    }
    let changed = answers.iter().filter(|(_, b)| b["changed"] == true).count();
    let unchanged = answers
        .iter()
        .filter(|(_, b)| b["changed"] == false)
        .count();
    assert_eq!((changed, unchanged), (1, 19));

    let (status, audit) = app
        .get("/v1/experiments/checkout/audit", &app.admin_key)
        .await;
    assert_eq!(status, StatusCode::OK, "{audit}");
    let entries = audit["data"].as_array().expect("audit entries");
    let transitions: Vec<&Value> = entries
        .iter()
        .filter(|e| e["action"] == "status_changed")
        .collect();
    assert_eq!(transitions.len(), 1, "{audit}");
    assert!(
        entries.iter().any(|e| e["action"] == "created"),
        "the creation is audited too: {audit}"
    );
    assert_eq!(audit["pagination"]["total"], entries.len());
}

#[tokio::test]
async fn lists_are_paginated_with_page_and_page_size_both_or_neither() {
    let app = spawn_app().await;
    for key in ["exp-a", "exp-b", "exp-c"] {
        app.create_experiment(&ab_experiment(key)).await;
    }
    let (status, page1) = app
        .get("/v1/experiments?page=1&page_size=2", &app.admin_key)
        .await;
    assert_eq!(status, StatusCode::OK, "{page1}");
    assert_eq!(page1["data"].as_array().unwrap().len(), 2);
    assert_eq!(
        page1["pagination"],
        json!({"page": 1, "page_size": 2, "total": 3, "total_pages": 2})
    );
    let (_, page2) = app
        .get("/v1/experiments?page=2&page_size=2", &app.admin_key)
        .await;
    assert_eq!(page2["data"].as_array().unwrap().len(), 1);
    assert_eq!(page2["pagination"]["page"], 2);
    let mut keys: Vec<String> = page1["data"]
        .as_array()
        .unwrap()
        .iter()
        .chain(page2["data"].as_array().unwrap())
        .map(|e| e["key"].as_str().unwrap().to_owned())
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        ["exp-a", "exp-b", "exp-c"],
        "pages neither repeat nor skip"
    );

    let (status, all) = app.get("/v1/experiments", &app.admin_key).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(all["data"].as_array().unwrap().len(), 3);
    assert_eq!(all["pagination"]["page"], 1);
    assert_eq!(all["pagination"]["total"], 3);
    assert_eq!(all["pagination"]["total_pages"], 1);

    let (_, running) = app
        .get("/v1/experiments?status=running", &app.admin_key)
        .await;
    assert_eq!(running["pagination"]["total"], 0, "{running}");

    for bad in [
        "page=1",
        "page_size=10",
        "page=1&page_size=101",
        "page=0&page_size=10",
        "page=1&page_size=0",
    ] {
        let (status, body) = app
            .get(&format!("/v1/experiments?{bad}"), &app.admin_key)
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
        assert_eq!(error_code(&body), "invalid_pagination", "{bad}");
    }
    let (status, body) = app
        .get("/v1/experiments/exp-a/audit?page=1", &app.admin_key)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error_code(&body), "invalid_pagination");
}

#[tokio::test]
async fn an_unknown_experiment_is_a_404_with_the_error_body() {
    let app = spawn_app().await;
    let client = app.create_key(&["client"]).await;
    for (path, key) in [
        ("/v1/experiments/nope", app.admin_key.as_str()),
        ("/v1/experiments/nope/results", client.as_str()),
        ("/v1/experiments/nope/winner", client.as_str()),
        (
            "/v1/experiments/nope/assignment?subject_id=u1",
            client.as_str(),
        ),
    ] {
        let (status, body) = app.get(path, key).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {body}");
        assert_eq!(error_code(&body), "experiment_not_found", "{path}");
        assert!(
            body["error"]["message"].as_str().unwrap().contains("nope"),
            "{body}"
        );
    }
    let (status, body) = app.get("/v1/no-such-route", &app.admin_key).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error_code(&body), "route_not_found");
}

#[tokio::test]
async fn an_invalid_create_lists_every_bad_field_and_stores_nothing() {
    let app = spawn_app().await;
    let (status, body) = app
        .post_json(
            "/v1/experiments",
            &app.admin_key,
            &json!({
                "key": "bad key!",
                "variants": [
                    {"key": "a", "weight": 1.1},
                    {"key": "a", "weight": -0.1}
                ],
                "coverage": 1.5,
                "policy": {"probability_threshold": 1.2}
            }),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let fields = problem_fields(&body);
    for field in [
        "key",
        "variants[1].key",
        "variants[1].weight",
        "coverage",
        "policy.probability_threshold",
    ] {
        assert!(
            fields.iter().any(|f| f == field),
            "{field} missing from {fields:?}"
        );
    }
    assert_eq!(app.experiment_count().await, 0);
}

/// The fields named by a `validation_failed` answer (each with a message).
fn problem_fields(body: &Value) -> Vec<String> {
    assert_eq!(error_code(body), "validation_failed", "{body}");
    body["error"]["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            assert!(d["message"].is_string(), "{d}");
            d["field"].as_str().unwrap().to_owned()
        })
        .collect()
}

#[tokio::test]
async fn invalid_edits_list_every_bad_field_and_change_nothing() {
    let app = spawn_app().await;
    app.create_experiment(&ab_experiment("checkout")).await;
    // PATCH: weights for only some variants, and a bad coverage and threshold besides.
    let (status, body) = app
        .patch_json(
            "/v1/experiments/checkout",
            &app.admin_key,
            &json!({
                "version": 1,
                "variants": [{"key": "a", "weight": 0.5}, {"key": "b"}],
                "coverage": 1.5,
                "policy": {"probability_threshold": 1.2}
            }),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let fields = problem_fields(&body);
    for field in ["variants", "coverage", "policy.probability_threshold"] {
        assert!(
            fields.iter().any(|f| f == field),
            "{field} missing from {fields:?}"
        );
    }

    // PUT variants once started: a removed variant, mixed weights and a duplicate key.
    assert_eq!(app.activate("checkout").await.0, StatusCode::OK);
    let (status, body) = app
        .put_json(
            "/v1/experiments/checkout/variants",
            &app.admin_key,
            &json!({
                "version": 2,
                "variants": [{"key": "control", "weight": 0.5}, {"key": "control"}]
            }),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let fields = problem_fields(&body);
    assert!(fields.iter().any(|f| f == "variants[1].key"), "{fields:?}");
    let messages = body["error"]["details"].to_string();
    assert!(messages.contains("'treatment'"), "the removal: {messages}");
    assert!(
        messages.contains("equal split"),
        "the mixed weights: {messages}"
    );

    let (_, stored) = app.get("/v1/experiments/checkout", &app.admin_key).await;
    assert_eq!(stored["version"], 2, "{stored}");
    assert_eq!(stored["coverage"], 1.0);
    assert_eq!(stored["variants"][1]["key"], "treatment");
}

#[tokio::test]
async fn a_duplicate_key_is_a_409_experiment_exists() {
    let app = spawn_app().await;
    let first = app.create_experiment(&ab_experiment("checkout")).await;
    let (status, body) = app
        .post_json(
            "/v1/experiments",
            &app.admin_key,
            &ab_experiment("checkout"),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(error_code(&body), "experiment_exists");
    assert_eq!(app.experiment_count().await, 1);
    let (_, stored) = app.get("/v1/experiments/checkout", &app.admin_key).await;
    assert_eq!(stored["id"], first["id"], "the first one is untouched");
}

#[tokio::test]
async fn a_patch_with_a_stale_version_is_a_409_version_conflict() {
    let app = spawn_app().await;
    app.create_experiment(&ab_experiment("checkout")).await;
    let (status, updated) = app
        .patch_json(
            "/v1/experiments/checkout",
            &app.admin_key,
            &json!({"version": 1, "name": "First rename"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    assert_eq!(updated["version"], 2);
    assert_eq!(updated["name"], "First rename");

    let (status, body) = app
        .patch_json(
            "/v1/experiments/checkout",
            &app.admin_key,
            &json!({"version": 1, "name": "Lost update"}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(error_code(&body), "version_conflict");
    let (_, stored) = app.get("/v1/experiments/checkout", &app.admin_key).await;
    assert_eq!(stored["name"], "First rename");
    assert_eq!(stored["version"], 2);
}

#[tokio::test]
async fn an_invalid_transition_is_a_409_listing_the_allowed_ones() {
    let app = spawn_app().await;
    app.create_experiment(&ab_experiment("checkout")).await;
    let (status, body) = app.set_status("checkout", "paused").await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(error_code(&body), "invalid_transition");
    let detail = &body["error"]["details"][0];
    assert_eq!(detail["from"], "draft");
    assert_eq!(detail["to"], "paused");
    assert_eq!(detail["allowed"], json!(["running", "archived"]));
    let (_, stored) = app.get("/v1/experiments/checkout", &app.admin_key).await;
    assert_eq!(stored["status"], "draft");
}

#[tokio::test]
async fn an_audience_used_by_a_running_experiment_cannot_be_deleted() {
    let app = spawn_app().await;
    let (status, body) = app
        .post_json(
            "/v1/environments/production/audiences",
            &app.admin_key,
            &json!({"key": "us-users", "rules": [
                {"conditions": [{"attribute": "country", "operator": "eq", "value": "US"}]}
            ]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let mut exp = ab_experiment("checkout");
    exp["audience"] = json!("us-users");
    app.create_experiment(&exp).await;
    assert_eq!(app.activate("checkout").await.0, StatusCode::OK);

    let path = "/v1/environments/production/audiences/us-users";
    let (status, body) = app.delete(path, &app.admin_key).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(error_code(&body), "audience_in_use");
    assert_eq!(body["error"]["details"][0]["experiment"], "checkout");
    let (status, _) = app.get(path, &app.admin_key).await;
    assert_eq!(status, StatusCode::OK, "the audience is still there");

    // Once nothing running uses it, it can go.
    assert_eq!(
        app.set_status("checkout", "archived").await.0,
        StatusCode::OK
    );
    let (status, _) = app.delete(path, &app.admin_key).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = app.get(path, &app.admin_key).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error_code(&body), "audience_not_found");
}

#[tokio::test]
async fn api_keys_are_required_checked_scoped_and_revocable() {
    let app = spawn_app().await;

    let (status, body) = app.send(app.client.get(app.url("/v1/experiments"))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(error_code(&body), "unauthorized");

    let (status, body) = app.get("/v1/experiments", "vk_garbage").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(error_code(&body), "unauthorized");

    let (status, body) = app
        .send(
            app.client
                .get(app.url("/v1/experiments"))
                .header("authorization", format!("Basic {}", app.admin_key)),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(error_code(&body), "unauthorized");

    let (client, client_id) = app.create_key_with_id(&["client"]).await;
    let (status, body) = app.get("/v1/experiments", &client).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(error_code(&body), "forbidden");
    let (status, body) = app
        .post_json("/v1/experiments", &client, &ab_experiment("sneaky"))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(error_code(&body), "forbidden");
    assert_eq!(app.experiment_count().await, 0);

    // The key works for what it is for, until revoked.
    app.create_experiment(&ab_experiment("checkout")).await;
    let (status, _) = app.get("/v1/experiments/checkout/winner", &client).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = app
        .delete(&format!("/v1/api-keys/{client_id}"), &app.admin_key)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = app.get("/v1/experiments/checkout/winner", &client).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(error_code(&body), "unauthorized");

    let (status, body) = app.delete("/v1/api-keys/key_nope", &app.admin_key).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error_code(&body), "api_key_not_found");
}

#[tokio::test]
async fn the_request_id_is_echoed_when_sent_and_generated_when_absent() {
    let app = spawn_app().await;
    let sent = app
        .client
        .get(app.url("/healthz"))
        .header("x-request-id", "req-from-client-42")
        .send()
        .await
        .unwrap();
    assert_eq!(sent.headers()["x-request-id"], "req-from-client-42");

    let generated = app.client.get(app.url("/healthz")).send().await.unwrap();
    let id = generated.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(id.len(), 36, "a UUID: {id}");
    let again = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_ne!(again.headers()["x-request-id"].to_str().unwrap(), id);

    // Error answers carry it too.
    let failed = app
        .client
        .get(app.url("/v1/experiments"))
        .header("x-request-id", "req-error-7")
        .send()
        .await
        .unwrap();
    assert_eq!(failed.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(failed.headers()["x-request-id"], "req-error-7");
}

#[tokio::test]
async fn an_experiment_is_reachable_by_its_id_wherever_a_key_is() {
    let app = spawn_app().await;
    let created = app.create_experiment(&ab_experiment("checkout")).await;
    let id = created["id"].as_str().expect("id").to_owned();
    let (status, body) = app.activate(&id).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["experiment"]["key"], "checkout");
    let client = app.create_key(&["client"]).await;

    let (status, by_id) = app.assignment(&id, &client, "user-1", &[]).await;
    assert_eq!(status, StatusCode::OK, "{by_id}");
    let (_, by_key) = app.assignment("checkout", &client, "user-1", &[]).await;
    assert_eq!(by_id, by_key);
    assert_eq!(by_id["experiment"], "checkout");

    let (status, report) = app
        .post_events(
            &client,
            vec![json!({"experiment": id, "subject_id": "user-1", "event": "purchase"})],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["accepted"], 1, "{report}");
    app.aggregate().await;
    let (status, results) = app
        .get(&format!("/v1/experiments/{id}/results"), &client)
        .await;
    assert_eq!(status, StatusCode::OK, "{results}");
    let conversions: u64 = results["metrics"][0]["variants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["conversions"].as_u64().unwrap())
        .sum();
    assert_eq!(conversions, 1);
}

#[tokio::test]
async fn a_wrong_method_is_a_405_with_the_error_body() {
    let app = spawn_app().await;
    app.create_experiment(&ab_experiment("checkout")).await;
    let (status, body) = app
        .put_json("/v1/experiments/checkout", &app.admin_key, &json!({}))
        .await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{body}");
    assert_eq!(error_code(&body), "method_not_allowed");
    assert_eq!(app.experiment_count().await, 1);
}
