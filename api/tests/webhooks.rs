//! Webhook endpoints and the delivery log over HTTP, with a real dispatcher delivering to a
//! real recording receiver; signatures checked with the reference `standardwebhooks` crate.
//! Runs on SQLite by default and on MongoDB + Redis with `VERDICT_TEST_BACKEND=mongodb`.

mod common;

use std::time::Duration;

use common::webhooks::{dispatcher, verify};
use common::{ab_experiment, error_code, spawn_app, spawn_app_with};
use reqwest::StatusCode;
use serde_json::{Value, json};
use time::OffsetDateTime;
use verdict_webhooks::test_support::{Receiver, Reply};

const ALLOW_PRIVATE: (&str, &str) = ("VERDICT_WEBHOOKS__ALLOW_PRIVATE_TARGETS", "true");

async fn create_endpoint(app: &common::TestApp, body: Value) -> Value {
    let (status, created) = app
        .post_json("/v1/webhooks/endpoints", &app.admin_key, &body)
        .await;
    assert_eq!(status, StatusCode::CREATED, "create endpoint: {created}");
    created
}

fn fields(body: &Value) -> Vec<String> {
    body["error"]["details"]
        .as_array()
        .map(|d| {
            d.iter()
                .map(|x| x["field"].as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_status_change_and_a_winner_reach_the_endpoint_signed_with_the_secret_shown_once() {
    let app = spawn_app_with(&[ALLOW_PRIVATE]).await;
    let receiver = Receiver::start().await;
    let created = create_endpoint(
        &app,
        json!({"url": receiver.url("/hooks"), "description": "ours"}),
    )
    .await;
    let secret = created["secret"].as_str().expect("secret").to_owned();
    assert!(secret.starts_with("whsec_"), "{secret}");
    let id = created["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("ep_"));
    assert_eq!(created["environment"], "production");
    assert_eq!(created["event_types"], json!([]));
    assert_eq!(created["disabled"], false);
    // Never shown again.
    let (status, got) = app
        .get(&format!("/v1/webhooks/endpoints/{id}"), &app.admin_key)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(got.get("secret").is_none(), "{got}");
    assert!(!got.to_string().contains(&secret[6..]), "{got}");
    let (_, list) = app.get("/v1/webhooks/endpoints", &app.admin_key).await;
    assert_eq!(list["pagination"]["total"], 1);
    assert!(!list.to_string().contains(&secret[6..]));

    app.create_experiment(&ab_experiment("checkout")).await;
    assert_eq!(app.activate("checkout").await.0, StatusCode::OK);
    let (status, _) = app
        .post_json(
            "/v1/experiments/checkout/winner",
            &app.admin_key,
            &json!({"variant": "treatment"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let report = dispatcher(&app)
        .run_once(OffsetDateTime::now_utc())
        .await
        .unwrap();
    assert_eq!(report.delivered, 3, "{report:?}");
    let got = receiver.requests();
    let types: Vec<String> = got
        .iter()
        .map(|r| r.json()["type"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(
        types,
        [
            "experiment.status_changed",
            "experiment.winner_changed",
            "experiment.status_changed"
        ]
    );
    for r in &got {
        assert!(verify(r, &secret), "the secret shown at creation verifies");
        assert_eq!(r.path, "/hooks");
    }
    let winner = got[1].json();
    let data = &winner["data"];
    assert_eq!(data["experiment"], "checkout");
    assert_eq!(data["environment"], "production");
    assert_eq!(data["previous_winner"], Value::Null);
    assert_eq!(data["winner"], "treatment");
    assert!(data["decided_at"].is_string());
    assert!(data["policy"].is_object(), "{data}");
    assert_eq!(got[2].json()["data"]["previous_status"], "running");
    assert_eq!(got[2].json()["data"]["status"], "completed");
    // The ids are stable per change: `webhook-id` = the message id in the log.
    let (_, log) = app
        .get(
            &format!("/v1/webhooks/endpoints/{id}/messages"),
            &app.admin_key,
        )
        .await;
    let logged: Vec<&str> = log["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["message_id"].as_str().unwrap())
        .collect();
    let mut sent: Vec<&str> = got.iter().map(|r| r.webhook_id()).collect();
    sent.reverse();
    assert_eq!(logged, sent, "newest first");
    assert!(
        log["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["status"] == "delivered")
    );
    assert_eq!(
        log["data"][0]["payload"]["type"],
        "experiment.status_changed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_endpoint_input_is_refused_listing_every_problem() {
    let app = spawn_app_with(&[ALLOW_PRIVATE]).await;
    let (status, body) = app
        .post_json(
            "/v1/webhooks/endpoints",
            &app.admin_key,
            &json!({
                "url": "ftp://example.com/hook",
                "environment": "nope",
                "event_types": ["experiment.status_changed", "experiment.bogus", "x"],
                "description": "d".repeat(1001),
            }),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(error_code(&body), "validation_failed");
    let mut got = fields(&body);
    got.sort();
    assert_eq!(
        got,
        [
            "description",
            "environment",
            "event_types[1]",
            "event_types[2]",
            "url"
        ]
    );
    let (status, body) = app
        .post_json(
            "/v1/webhooks/endpoints",
            &app.admin_key,
            &json!({"url": "http://127.0.0.1/", "secret": "mine"}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(error_code(&body), "invalid_body");
    let (status, body) = app
        .post_json("/v1/webhooks/endpoints", &app.admin_key, &json!({}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(error_code(&body), "invalid_body");
    let (status, body) = app
        .post_raw(
            "/v1/webhooks/endpoints",
            &app.admin_key,
            Some("application/json"),
            "{not json",
        )
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::BAD_REQUEST, "invalid_json")
    );
    assert_eq!(
        app.get("/v1/webhooks/endpoints", &app.admin_key).await.1["pagination"]["total"],
        0,
        "nothing was created"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_and_loopback_targets_are_refused_by_default() {
    let app = spawn_app().await;
    for url in [
        "http://127.0.0.1:9000/hook",
        "http://localhost/hook",
        "http://10.1.2.3/",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/",
    ] {
        let (status, body) = app
            .post_json(
                "/v1/webhooks/endpoints",
                &app.admin_key,
                &json!({"url": url}),
            )
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{url}: {body}");
        assert_eq!(fields(&body), ["url"], "{url}");
        let message = body["error"]["details"][0]["message"].as_str().unwrap();
        assert!(message.contains("private"), "{url}: {message}");
    }
    // A changed URL is checked the same way.
    let allowed = spawn_app_with(&[ALLOW_PRIVATE]).await;
    let created = create_endpoint(&allowed, json!({"url": "http://127.0.0.1:9/"})).await;
    let id = created["id"].as_str().unwrap();
    let (status, body) = allowed
        .patch_json(
            &format!("/v1/webhooks/endpoints/{id}"),
            &allowed.admin_key,
            &json!({"url": "gopher://127.0.0.1/"}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(fields(&body), ["url"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_is_updated_disabled_enabled_rotated_and_deleted() {
    let app = spawn_app_with(&[ALLOW_PRIVATE]).await;
    let receiver = Receiver::start().await;
    let created = create_endpoint(&app, json!({"url": receiver.url("/a")})).await;
    let id = created["id"].as_str().unwrap().to_owned();
    let old_secret = created["secret"].as_str().unwrap().to_owned();
    let path = format!("/v1/webhooks/endpoints/{id}");

    let (status, updated) = app
        .patch_json(
            &path,
            &app.admin_key,
            &json!({"url": receiver.url("/b"), "event_types": ["experiment.status_changed"],
                    "description": "status only"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    assert_eq!(updated["url"], receiver.url("/b"));
    assert_eq!(updated["event_types"], json!(["experiment.status_changed"]));
    assert_eq!(updated["description"], "status only");

    let (status, disabled) = app
        .post_json(&format!("{path}/disable"), &app.admin_key, &json!({}))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(disabled["disabled"], true);
    assert_eq!(disabled["disabled_reason"], "manual");
    // Nothing is delivered to a disabled endpoint.
    app.create_experiment(&ab_experiment("one")).await;
    app.activate("one").await;
    let d = dispatcher(&app);
    d.run_once(OffsetDateTime::now_utc()).await.unwrap();
    assert_eq!(receiver.count(), 0);
    let (status, enabled) = app
        .post_json(&format!("{path}/enable"), &app.admin_key, &json!({}))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (
            enabled["disabled"].clone(),
            enabled["disabled_reason"].clone()
        ),
        (json!(false), Value::Null)
    );

    let (status, rotated) = app
        .post_json(&format!("{path}/rotate-secret"), &app.admin_key, &json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{rotated}");
    let new_secret = rotated["secret"].as_str().unwrap().to_owned();
    assert!(new_secret.starts_with("whsec_"));
    assert_ne!(new_secret, old_secret);
    let until = OffsetDateTime::parse(
        rotated["previous_secret_expires_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let overlap = until - OffsetDateTime::now_utc();
    assert!(
        overlap > time::Duration::hours(23) && overlap <= time::Duration::hours(24),
        "{overlap}"
    );
    // During the overlap both secrets verify a delivery.
    app.create_experiment(&ab_experiment("two")).await;
    app.activate("two").await;
    d.run_once(OffsetDateTime::now_utc()).await.unwrap();
    let got = receiver.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(got.len(), 1, "only the message created while enabled");
    assert_eq!(got[0].path, "/b");
    assert_eq!(got[0].header("webhook-signature").split(' ').count(), 2);
    assert!(verify(&got[0], &new_secret));
    assert!(verify(&got[0], &old_secret));

    // Admin scope only.
    let client = app.create_key(&["client"]).await;
    for (status, body) in [
        app.get(&path, &client).await,
        app.get("/v1/webhooks/endpoints", &client).await,
        app.post_json(&format!("{path}/rotate-secret"), &client, &json!({}))
            .await,
    ] {
        assert_eq!(
            (status, error_code(&body)),
            (StatusCode::FORBIDDEN, "forbidden")
        );
    }

    let (status, _) = app.delete(&path, &app.admin_key).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    for (status, body) in [
        app.get(&path, &app.admin_key).await,
        app.delete(&path, &app.admin_key).await,
        app.post_json(&format!("{path}/enable"), &app.admin_key, &json!({}))
            .await,
        app.get(&format!("{path}/messages"), &app.admin_key).await,
    ] {
        assert_eq!(
            (status, error_code(&body)),
            (StatusCode::NOT_FOUND, "webhook_endpoint_not_found")
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_delivery_log_lists_attempts_filters_redelivers_and_recovers() {
    let app = spawn_app_with(&[ALLOW_PRIVATE]).await;
    let receiver = Receiver::start().await;
    receiver.respond_with([Reply::status(400), Reply::status(422)]);
    let created = create_endpoint(&app, json!({"url": receiver.url("/")})).await;
    let id = created["id"].as_str().unwrap().to_owned();
    let base = format!("/v1/webhooks/endpoints/{id}");
    let since = OffsetDateTime::now_utc() - time::Duration::seconds(1);
    for key in ["one", "two", "three"] {
        app.create_experiment(&ab_experiment(key)).await;
        app.activate(key).await;
    }
    let d = dispatcher(&app);
    let report = d.run_once(OffsetDateTime::now_utc()).await.unwrap();
    assert_eq!((report.failed, report.delivered), (2, 1), "{report:?}");

    let (status, failed) = app
        .get(&format!("{base}/messages?status=failed"), &app.admin_key)
        .await;
    assert_eq!(status, StatusCode::OK, "{failed}");
    assert_eq!(failed["pagination"]["total"], 2);
    let (_, delivered) = app
        .get(&format!("{base}/messages?status=delivered"), &app.admin_key)
        .await;
    assert_eq!(delivered["pagination"]["total"], 1);
    let (_, page) = app
        .get(
            &format!("{base}/messages?page=2&page_size=2"),
            &app.admin_key,
        )
        .await;
    assert_eq!(page["pagination"]["total"], 3);
    assert_eq!(page["data"].as_array().unwrap().len(), 1);
    let oldest = page["data"][0]["message_id"].as_str().unwrap().to_owned();
    assert_eq!(page["data"][0]["status"], "failed");
    assert_eq!(page["data"][0]["last_status_code"], 400);

    let (status, attempts) = app
        .get(
            &format!("{base}/messages/{oldest}/attempts"),
            &app.admin_key,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{attempts}");
    assert_eq!(attempts["pagination"]["total"], 1);
    let a = &attempts["data"][0];
    assert_eq!(a["status_code"], 400);
    assert_eq!(a["result"], "failed");
    assert_eq!(a["attempt"], 1);
    assert_eq!(a["response"], "receiver answered 400");
    assert!(a["latency_ms"].is_u64());

    // Redeliver one: sent again with the same webhook-id, now answered 200.
    let (status, queued) = app
        .post_json(
            &format!("{base}/messages/{oldest}/redeliver"),
            &app.admin_key,
            &json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{queued}");
    assert_eq!(queued["status"], "pending");
    assert_eq!(queued["attempts"], 0);
    assert_eq!(
        d.run_once(OffsetDateTime::now_utc())
            .await
            .unwrap()
            .delivered,
        1
    );
    let last = receiver.requests().pop().unwrap();
    assert_eq!(last.webhook_id(), oldest);
    let (_, attempts) = app
        .get(
            &format!("{base}/messages/{oldest}/attempts"),
            &app.admin_key,
        )
        .await;
    assert_eq!(attempts["pagination"]["total"], 2);
    assert_eq!(attempts["data"][0]["status_code"], 200, "newest first");

    // Recover: every failed message since a time (one is left failed).
    let (status, body) = app
        .post_json(&format!("{base}/recover"), &app.admin_key, &json!({"since": OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap()}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(body["recovered"], 0, "none failed after now");
    let (status, body) = app
        .post_json(
            &format!("{base}/recover"),
            &app.admin_key,
            &json!({"since": since.format(&time::format_description::well_known::Rfc3339).unwrap()}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["recovered"], 1);
    assert_eq!(
        d.run_once(OffsetDateTime::now_utc())
            .await
            .unwrap()
            .delivered,
        1
    );
    let (_, all) = app.get(&format!("{base}/messages"), &app.admin_key).await;
    assert!(
        all["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["status"] == "delivered"),
        "{all}"
    );

    // Bad input.
    let (status, body) = app
        .get(&format!("{base}/messages?status=lost"), &app.admin_key)
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::BAD_REQUEST, "invalid_query")
    );
    let (status, body) = app
        .get(
            &format!("{base}/messages?page=0&page_size=5"),
            &app.admin_key,
        )
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::BAD_REQUEST, "invalid_pagination")
    );
    let (status, body) = app
        .get(&format!("{base}/messages?colour=red"), &app.admin_key)
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::BAD_REQUEST, "invalid_query")
    );
    for (status, body) in [
        app.get(
            &format!("{base}/messages/msg_nope/attempts"),
            &app.admin_key,
        )
        .await,
        app.post_json(
            &format!("{base}/messages/msg_nope/redeliver"),
            &app.admin_key,
            &json!({}),
        )
        .await,
    ] {
        assert_eq!(
            (status, error_code(&body)),
            (StatusCode::NOT_FOUND, "webhook_message_not_found")
        );
    }
    let (status, body) = app
        .post_json(
            &format!("{base}/recover"),
            &app.admin_key,
            &json!({"since": "yesterday"}),
        )
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::UNPROCESSABLE_ENTITY, "invalid_body")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setting_override_variant_completes_the_experiment_with_that_winner_and_announces_it() {
    let app = spawn_app_with(&[ALLOW_PRIVATE]).await;
    let receiver = Receiver::start().await;
    create_endpoint(&app, json!({"url": receiver.url("/hooks")})).await;
    let created = app.create_experiment(&ab_experiment("checkout")).await;
    assert_eq!(app.activate("checkout").await.0, StatusCode::OK);
    let version = created["version"].as_u64().unwrap() + 1;
    let (status, patched) = app
        .patch_json(
            "/v1/experiments/checkout",
            &app.admin_key,
            &json!({"version": version, "policy": {"override_variant": "treatment"}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(patched["status"], "completed", "{patched}");
    assert_eq!(patched["winner"]["variant"], "treatment");
    assert_eq!(patched["winner"]["source"], "manual");
    assert_eq!(
        patched["winner"]["details"]["reason"],
        "policy.override_variant"
    );
    // The winner read path and every subject see it.
    let (_, winner) = app
        .get("/v1/experiments/checkout/winner", &app.admin_key)
        .await;
    assert_eq!(winner["winner"], "treatment", "{winner}");
    let (_, served) = app
        .assignment("checkout", &app.admin_key, "someone", &[])
        .await;
    assert_eq!(served["variant"], "treatment", "{served}");
    // Audited, and announced to webhook endpoints like a manual winner.
    let (_, audit) = app
        .get("/v1/experiments/checkout/audit", &app.admin_key)
        .await;
    let actions: Vec<&str> = audit["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    assert!(actions.iter().any(|a| a.contains("winner")), "{audit}");
    dispatcher(&app)
        .run_once(OffsetDateTime::now_utc())
        .await
        .unwrap();
    let types: Vec<String> = receiver
        .requests()
        .iter()
        .map(|r| r.json()["type"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert!(
        types.iter().any(|t| t == "experiment.winner_changed"),
        "{types:?}"
    );
    assert_eq!(
        types.last().map(String::as_str),
        Some("experiment.status_changed")
    );
    // Setting it again to the same variant changes nothing more.
    let (status, again) = app
        .patch_json(
            "/v1/experiments/checkout",
            &app.admin_key,
            &json!({"version": patched["version"], "policy": {"override_variant": "treatment"}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(
        again["winner"]["decided_at"],
        patched["winner"]["decided_at"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_experiments_webhook_messages_are_listed_across_endpoints_newest_first() {
    let app = spawn_app_with(&[ALLOW_PRIVATE]).await;
    let receiver = Receiver::start().await;
    let mut endpoints = Vec::new();
    for path in ["/a", "/b"] {
        let created = create_endpoint(&app, json!({"url": receiver.url(path)})).await;
        endpoints.push(created["id"].as_str().unwrap().to_owned());
    }
    let one = app.create_experiment(&ab_experiment("one")).await;
    app.create_experiment(&ab_experiment("two")).await;
    app.activate("one").await;
    app.activate("two").await;
    assert_eq!(app.set_status("one", "paused").await.0, StatusCode::OK);
    let report = dispatcher(&app)
        .run_once(OffsetDateTime::now_utc())
        .await
        .unwrap();
    assert_eq!(report.delivered, 6, "{report:?}");

    let (status, listed) = app
        .get("/v1/experiments/one/webhook-messages", &app.admin_key)
        .await;
    assert_eq!(status, StatusCode::OK, "{listed}");
    assert_eq!(listed["pagination"]["total"], 4, "{listed}");
    let data = listed["data"].as_array().unwrap();
    let prefix = format!("msg_{}_", one["id"].as_str().unwrap());
    let rows: Vec<(String, String)> = data
        .iter()
        .map(|m| {
            (
                m["message_id"].as_str().unwrap().to_owned(),
                m["endpoint_id"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    // Newest first: the pause, then the activation, each to both endpoints.
    let ids: Vec<&str> = rows.iter().map(|(m, _)| m.as_str()).collect();
    let (paused, activated) = (format!("{prefix}v3_status"), format!("{prefix}v2_status"));
    assert_eq!(ids, [&paused, &paused, &activated, &activated], "{listed}");
    for pair in rows.chunks(2) {
        let mut got = vec![pair[0].1.clone(), pair[1].1.clone()];
        got.sort();
        let mut want = endpoints.clone();
        want.sort();
        assert_eq!(got, want, "{listed}");
    }
    for m in data {
        assert_eq!(m["status"], "delivered", "{m}");
        assert_eq!(m["event_type"], "experiment.status_changed", "{m}");
        assert_eq!(m["payload"]["data"]["experiment"], "one", "{m}");
    }
    assert_eq!(data[0]["payload"]["data"]["status"], "paused", "{listed}");
    // The endpoint's own log names the endpoint too.
    let (_, own) = app
        .get(
            &format!("/v1/webhooks/endpoints/{}/messages", endpoints[0]),
            &app.admin_key,
        )
        .await;
    assert_eq!(own["pagination"]["total"], 3, "{own}");
    assert!(
        own["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["endpoint_id"] == endpoints[0].as_str()),
        "{own}"
    );

    let (_, page) = app
        .get(
            "/v1/experiments/one/webhook-messages?page=2&page_size=3",
            &app.admin_key,
        )
        .await;
    assert_eq!(page["pagination"]["total"], 4, "{page}");
    assert_eq!(page["data"].as_array().unwrap().len(), 1, "{page}");
    assert_eq!(page["data"][0]["message_id"], activated.as_str());
    let (_, two) = app
        .get("/v1/experiments/two/webhook-messages", &app.admin_key)
        .await;
    assert_eq!(two["pagination"]["total"], 2, "{two}");

    // Right `webhooks:manage`; a bad page and an unknown experiment are refused.
    let viewer = app.create_key(&["viewer"]).await;
    let (status, denied) = app
        .get("/v1/experiments/one/webhook-messages", &viewer)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{denied}");
    assert_eq!(
        denied["error"]["details"][0]["missing_right"],
        "webhooks:manage"
    );
    let (status, bad) = app
        .get(
            "/v1/experiments/one/webhook-messages?page=0&page_size=3",
            &app.admin_key,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
    assert_eq!(error_code(&bad), "invalid_pagination");
    let (status, missing) = app
        .get("/v1/experiments/nope/webhook-messages", &app.admin_key)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{missing}");
    assert_eq!(error_code(&missing), "experiment_not_found");
}
