//! Subject identity through the HTTP API (on the backend `VERDICT_TEST_BACKEND` names): each
//! experiment's `assignment.unit` says which id of a request is its subject (`subject_id`,
//! `anon_id` from `x-anon-id` or a parameter, `user_id` from a parameter or the caller's JWT,
//! `org_id` from a parameter or the organization acted in, or a `custom` attribute), and the
//! attributes it declares as `assignment.context` are stored with each new assignment.

mod common;

use common::{TestApp, ab_experiment, error_code, spawn_app_with};
use jwt_simple::prelude::{Claims, Duration, HS256Key, MACLike};
use reqwest::StatusCode;
use serde_json::{Map, Value, json};

const SECRET: &str = "a-shared-secret-of-at-least-32-bytes!";

fn token(subject: &str) -> String {
    let custom: Map<String, Value> = serde_json::from_value(json!({"roles": ["client"]})).unwrap();
    let claims = Claims::with_custom_claims(custom, Duration::from_secs(600)).with_subject(subject);
    HS256Key::from_bytes(SECRET.as_bytes())
        .authenticate(claims)
        .unwrap()
}

/// An A/B experiment of `unit` (with `extra` assignment settings), started.
async fn started(app: &TestApp, key: &str, unit: &str, extra: Value) -> String {
    let mut body = ab_experiment(key);
    body["assignment"]["unit"] = json!(unit);
    for (k, v) in extra.as_object().unwrap() {
        body["assignment"][k] = v.clone();
    }
    let created = app.create_experiment(&body).await;
    assert_eq!(created["assignment"]["unit"], unit);
    let (status, body) = app.activate(key).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    created["id"].as_str().unwrap().to_owned()
}

/// The stored assignment of `subject` (the store's key) in experiment `id`.
async fn stored(app: &TestApp, id: &str, subject: &str) -> Option<verdict_domain::Assignment> {
    app.store
        .subject_state(id, subject)
        .await
        .unwrap()
        .assignment
}

async fn get(
    app: &TestApp,
    path: &str,
    bearer: &str,
    query: &[(&str, &str)],
    anon: Option<&str>,
) -> (StatusCode, Value) {
    let mut req = app
        .client
        .get(app.url(path))
        .query(query)
        .bearer_auth(bearer);
    if let Some(anon) = anon {
        req = req.header("x-anon-id", anon);
    }
    app.send(req).await
}

fn problem_fields(body: &Value) -> Vec<String> {
    let mut fields: Vec<String> = body["error"]["details"]
        .as_array()
        .unwrap_or(&Vec::new())
        .iter()
        .map(|d| d["field"].as_str().unwrap_or_default().to_owned())
        .collect();
    fields.sort();
    fields
}

#[tokio::test]
async fn each_unit_takes_its_own_id_and_the_declared_context_is_kept() {
    let app = spawn_app_with(&[("VERDICT_AUTH__JWT__HS256_SECRET", SECRET)]).await;
    let admin = app.admin_key.clone();
    let anon = started(
        &app,
        "anon",
        "anon_id",
        json!({"context": ["platform", "app_version"]}),
    )
    .await;
    let user = started(&app, "user", "user_id", json!({})).await;
    let org = started(&app, "org", "org_id", json!({})).await;
    let device = started(
        &app,
        "device",
        "custom",
        json!({"unit_attribute": "device_id"}),
    )
    .await;
    let plain = started(&app, "plain", "subject_id", json!({})).await;

    // anon_id: the x-anon-id header or the anon_id parameter name one subject.
    let path = "/v1/experiments/anon/assignment";
    let attrs = [
        ("attr.platform", "ios"),
        ("attr.app_version", "2.1"),
        ("attr.country", "US"),
    ];
    let (status, first) = get(&app, path, &admin, &attrs, Some("anon-1")).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(first["in_experiment"], true, "{first}");
    let kept = stored(&app, &anon, "anon-1")
        .await
        .expect("stored under the anon id");
    assert_eq!(kept.variant, first["variant"].as_str().unwrap());
    // Only the declared attributes, as the first request carried them.
    assert_eq!(
        kept.context,
        Some(serde_json::from_value(json!({"platform": "ios", "app_version": "2.1"})).unwrap())
    );
    let (status, again) = get(
        &app,
        path,
        &admin,
        &[("anon_id", "anon-1"), ("attr.platform", "android")],
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again["variant"], first["variant"]);
    assert_eq!(again["assigned_at"], first["assigned_at"]);
    assert_eq!(
        stored(&app, &anon, "anon-1").await.unwrap().context,
        kept.context
    );
    let (status, body) = get(&app, path, &admin, &[], None).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(error_code(&body), "validation_failed");
    assert_eq!(problem_fields(&body), ["anon_id"], "{body}");
    // A client that only ever sends subject_id keeps working.
    let (status, body) = get(&app, path, &admin, &[("subject_id", "s-9")], None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(stored(&app, &anon, "s-9").await.is_some());
    // No context declared: none stored.
    let (status, _) = get(
        &app,
        "/v1/experiments/plain/assignment",
        &admin,
        &[("subject_id", "s-1"), ("attr.platform", "ios")],
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(stored(&app, &plain, "s-1").await.unwrap().context, None);

    // user_id: the signed-in user's JWT subject, or a user_id parameter.
    let path = "/v1/experiments/user/assignment";
    let (status, body) = get(&app, path, &token("user-42"), &[], None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(stored(&app, &user, "user-42").await.is_some());
    let (status, body) = get(&app, path, &admin, &[("user_id", "user-7")], None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(stored(&app, &user, "user-7").await.is_some());
    let (status, body) = get(&app, path, &admin, &[], None).await;
    assert_eq!(problem_fields(&body), ["user_id"], "{status} {body}");

    // org_id: everyone acting in one organization is one subject.
    let path = "/v1/experiments/org/assignment";
    let (_, a) = get(
        &app,
        path,
        &admin,
        &[("organization", "acme"), ("subject_id", "alice")],
        None,
    )
    .await;
    let (_, b) = get(
        &app,
        path,
        &admin,
        &[("organization", "acme"), ("subject_id", "bob")],
        None,
    )
    .await;
    assert_eq!(a["variant"], b["variant"], "{a} {b}");
    assert_eq!(a["assigned_at"], b["assigned_at"], "{a} {b}");
    assert!(stored(&app, &org, "acme:acme").await.is_some());
    assert!(stored(&app, &org, "acme:alice").await.is_none());
    let (status, _) = get(&app, path, &admin, &[("org_id", "globex")], None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(stored(&app, &org, "globex").await.is_some());

    // custom: the value of the declared attribute, a string or a number.
    let path = "/v1/experiments/device/assignment";
    for (value, key) in [(json!("d-1"), "d-1"), (json!(42), "42")] {
        let (status, body) = app
            .post_json(path, &admin, &json!({"attributes": {"device_id": value}}))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(stored(&app, &device, key).await.is_some(), "{key}");
    }
    let (status, body) = app
        .post_json(path, &admin, &json!({"attributes": {"device_id": true}}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(problem_fields(&body), ["attributes"], "{body}");

    // Every live experiment at once: each takes its own id; one the request does not
    // identify serves the control and stores nothing.
    let (status, all) = app
        .send(
            app.client
                .post(app.url("/v1/assignments"))
                .bearer_auth(&admin)
                .header("x-anon-id", "anon-2")
                .json(&json!({"attributes": {"device_id": "d-2"}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{all}");
    let reasons: Map<String, Value> = all["assignments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["experiment"].as_str().unwrap().to_owned(),
                a["reason"].clone(),
            )
        })
        .collect();
    assert_eq!(reasons["anon"], "assigned", "{all}");
    assert_eq!(reasons["device"], "assigned", "{all}");
    for key in ["user", "org", "plain"] {
        assert_eq!(reasons[key], "unidentified", "{key}: {all}");
    }
    assert_eq!(all["subject_id"], Value::Null);
    assert!(stored(&app, &anon, "anon-2").await.is_some());
    assert!(stored(&app, &device, "d-2").await.is_some());
    let (status, body) = app
        .post_json("/v1/assignments", &admin, &json!({"attributes": {}}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
}

#[tokio::test]
async fn units_and_context_are_validated_with_every_problem_named() {
    let app = spawn_app_with(&[]).await;
    let mut body = ab_experiment("bad");
    body["assignment"] = json!({
        "unit": "custom",
        "context": ["platform", "platform", ""],
    });
    let (status, answer) = app
        .post_json("/v1/experiments", &app.admin_key, &body)
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
    assert_eq!(
        problem_fields(&answer),
        [
            "assignment.context[1]",
            "assignment.context[2]",
            "assignment.unit_attribute"
        ],
        "{answer}"
    );
    body["assignment"] = json!({"unit": "visitor", "unit_attribute": "x"});
    let (status, answer) = app
        .post_json("/v1/experiments", &app.admin_key, &body)
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
    assert_eq!(problem_fields(&answer), ["assignment.unit"], "{answer}");
    body["assignment"] = json!({"unit": "anon_id", "unit_attribute": "x",
        "context": (0..21).map(|i| format!("a{i}")).collect::<Vec<_>>()});
    let (status, answer) = app
        .post_json("/v1/experiments", &app.admin_key, &body)
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
    assert_eq!(
        problem_fields(&answer),
        ["assignment.context", "assignment.unit_attribute"],
        "{answer}"
    );
    assert_eq!(app.experiment_count().await, 0, "nothing was written");
}
