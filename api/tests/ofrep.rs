//! OpenFeature Remote Evaluation Protocol: OpenFeature's official OFREP provider (crate
//! `open-feature-ofrep`), through the official `open-feature` SDK, evaluates Verdict's
//! experiments against a running server and gets the variants the assignment API gives;
//! the bulk endpoint, its ETag and OFREP's error shapes are checked over plain HTTP.

mod common;

use std::time::Duration;

use common::{TestApp, spawn_app};
use http::{HeaderMap, HeaderValue};
use open_feature::{EvaluationContext, EvaluationErrorCode, OpenFeature};
use open_feature_ofrep::{OfrepOptions, OfrepProvider};
use reqwest::StatusCode;
use serde_json::{Value, json};

async fn experiments(app: &TestApp) {
    for body in [
        json!({"key": "banner", "variants": [
            {"key": "blue", "weight": 0.4, "config": "blue"},
            {"key": "green", "weight": 0.6, "config": "green"}]}),
        json!({"key": "pricing", "coverage": 0.7, "assignment": {"hash_version": 1},
            "targeting": [{"conditions": [{"attribute": "country", "operator": "in", "value": ["US", "FR"]}]}],
            "variants": [
                {"key": "low", "config": "9.99"},
                {"key": "mid", "config": "14.99"},
                {"key": "high", "config": "19.99"}]}),
    ] {
        let key = body["key"].as_str().unwrap().to_owned();
        app.create_experiment(&body).await;
        let (status, body) = app.activate(&key).await;
        assert_eq!(status, StatusCode::OK, "{key}: {body}");
    }
}

fn subject(i: usize) -> String {
    match i % 4 {
        1 => format!("ünï-{i}"),
        3 => format!("🙂-{i}"),
        _ => format!("user-{i}"),
    }
}

fn country(i: usize) -> &'static str {
    ["US", "FR", "DE"][i % 3]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openfeatures_ofrep_provider_gets_the_variants_of_the_assignment_api() {
    let app = spawn_app().await;
    experiments(&app).await;
    let client_key = app.create_key(&["client"]).await;
    let mut headers = HeaderMap::new();
    headers.insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {client_key}")).unwrap(),
    );
    let provider = OfrepProvider::new(OfrepOptions {
        base_url: format!("http://{}", app.addr),
        headers,
        connect_timeout: Duration::from_secs(5),
        ..Default::default()
    })
    .await
    .expect("the provider starts");
    let mut api = OpenFeature::singleton_mut().await;
    api.set_provider(provider).await;
    let client = api.create_client();
    drop(api);

    let mut in_experiment = 0;
    for i in 0..600 {
        let subject = subject(i);
        let context = EvaluationContext::default()
            .with_targeting_key(subject.clone())
            .with_custom_field("country", country(i));
        // Half the subjects are assigned through the assignment API first (OFREP must
        // serve that assignment), half through OFREP first (the assignment API must then
        // serve what OFREP assigned).
        let api_first = i % 2 == 0;
        for flag in ["banner", "pricing"] {
            let query = [("attr.country", country(i))];
            let first = if api_first {
                Some(app.assignment(flag, &client_key, &subject, &query).await)
            } else {
                None
            };
            let details = client
                .get_string_details(flag, Some(&context), None)
                .await
                .unwrap_or_else(|e| panic!("{flag} for {subject}: {e:?}"));
            let (status, assigned) = match first {
                Some(answer) => answer,
                None => app.assignment(flag, &client_key, &subject, &query).await,
            };
            assert_eq!(status, StatusCode::OK, "{assigned}");
            assert_eq!(
                (
                    Value::from(details.value.clone()),
                    details.variant.as_deref()
                ),
                (assigned["config"].clone(), assigned["variant"].as_str()),
                "{flag} for {subject}"
            );
            in_experiment += usize::from(assigned["in_experiment"] == true);
        }
    }
    // Both experiments took subjects and left others out (coverage, targeting).
    assert!((700..1_100).contains(&in_experiment), "{in_experiment}");

    let missing = client
        .get_string_details(
            "no-such-experiment",
            Some(&EvaluationContext::default().with_targeting_key("u")),
            None,
        )
        .await
        .expect_err("an unknown flag is an error");
    assert_eq!(missing.code, EvaluationErrorCode::FlagNotFound);
}

async fn ofrep(app: &TestApp, key: &str, path: &str, body: &str) -> reqwest::Response {
    ofrep_if_changed(app, key, path, body, None).await
}

/// An OFREP request, conditional on `etag` (`If-None-Match`) when given.
async fn ofrep_if_changed(
    app: &TestApp,
    key: &str,
    path: &str,
    body: &str,
    etag: Option<&str>,
) -> reqwest::Response {
    let mut req = app
        .client
        .post(app.url(path))
        .bearer_auth(key)
        .header("content-type", "application/json")
        .body(body.to_owned());
    if let Some(etag) = etag {
        req = req.header("if-none-match", etag);
    }
    req.send().await.unwrap()
}

#[tokio::test]
async fn bulk_evaluation_answers_every_live_flag_with_an_etag() {
    let app = spawn_app().await;
    experiments(&app).await;
    let key = app.create_key(&["client"]).await;
    let body = r#"{"context": {"targetingKey": "user-7", "country": "US"}}"#;
    let first = ofrep(&app, &key, "/ofrep/v1/evaluate/flags", body).await;
    assert_eq!(first.status(), StatusCode::OK);
    let etag = first.headers()["etag"].to_str().unwrap().to_owned();
    let flags: Value = first.json().await.unwrap();
    let flags = flags["flags"].as_array().unwrap().clone();
    assert_eq!(flags.len(), 2, "{flags:?}");
    for flag in &flags {
        let name = flag["key"].as_str().unwrap();
        let (_, assigned) = app
            .assignment(name, &key, "user-7", &[("attr.country", "US")])
            .await;
        assert_eq!(flag["value"], assigned["config"], "{flag}");
        assert_eq!(flag["variant"], assigned["variant"], "{flag}");
        let expected_reason = if assigned["in_experiment"] == true {
            "SPLIT"
        } else {
            "DEFAULT"
        };
        assert_eq!(flag["reason"], expected_reason, "{flag}");
    }

    let again = ofrep_if_changed(&app, &key, "/ofrep/v1/evaluate/flags", body, Some(&etag)).await;
    assert_eq!(again.status(), StatusCode::NOT_MODIFIED);

    // A decided winner changes the evaluation: a new ETag, reason STATIC.
    let (status, _) = app
        .post_json(
            "/v1/experiments/banner/winner",
            &app.admin_key,
            &json!({"variant": "green"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(1_100)).await; // the experiment cache's TTL
    let changed = ofrep_if_changed(&app, &key, "/ofrep/v1/evaluate/flags", body, Some(&etag)).await;
    assert_eq!(changed.status(), StatusCode::OK);
    assert_ne!(changed.headers()["etag"].to_str().unwrap(), etag);
    let flags: Value = changed.json().await.unwrap();
    let banner = flags["flags"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["key"] == "banner")
        .unwrap();
    assert_eq!(
        (&banner["value"], &banner["reason"]),
        (&json!("green"), &json!("STATIC"))
    );
}

#[tokio::test]
async fn errors_have_ofreps_shape() {
    let app = spawn_app().await;
    experiments(&app).await;
    let key = app.create_key(&["client"]).await;
    for (path, body, status, code) in [
        (
            "/ofrep/v1/evaluate/flags/banner",
            r#"{"context": {"country": "US"}}"#,
            StatusCode::BAD_REQUEST,
            "TARGETING_KEY_MISSING",
        ),
        (
            "/ofrep/v1/evaluate/flags/banner",
            r#"{"context": ["u"]}"#,
            StatusCode::BAD_REQUEST,
            "INVALID_CONTEXT",
        ),
        (
            "/ofrep/v1/evaluate/flags/banner",
            r#"{"context": "#,
            StatusCode::BAD_REQUEST,
            "PARSE_ERROR",
        ),
        (
            "/ofrep/v1/evaluate/flags/nope",
            r#"{"context": {"targetingKey": "u"}}"#,
            StatusCode::NOT_FOUND,
            "FLAG_NOT_FOUND",
        ),
        (
            "/ofrep/v1/evaluate/flags",
            r#"{}"#,
            StatusCode::BAD_REQUEST,
            "TARGETING_KEY_MISSING",
        ),
    ] {
        let response = ofrep(&app, &key, path, body).await;
        assert_eq!(response.status(), status, "{path} {body}");
        let error: Value = response.json().await.unwrap();
        assert_eq!(error["errorCode"], code, "{path} {body}: {error}");
        assert!(error["errorDetails"].is_string(), "{error}");
        if path.ends_with("/banner") || path.ends_with("/nope") {
            assert_eq!(error["key"], path.rsplit('/').next().unwrap(), "{error}");
        }
    }
    let evaluate = |key: Option<&str>| {
        let mut req = app
            .client
            .post(app.url("/ofrep/v1/evaluate/flags/banner"))
            .body(r#"{"context": {"targetingKey": "u"}}"#);
        if let Some(key) = key {
            req = req.header("x-api-key", key);
        }
        req.send()
    };
    let (status, _) = common::parts(evaluate(None).await.unwrap()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // OFREP's ApiKeyAuth: the key in X-API-Key.
    let (status, body) = common::parts(evaluate(Some(&key)).await.unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["key"], "banner");
    let (status, _) = common::parts(evaluate(Some("not-a-key")).await.unwrap()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // Elsewhere the header is not a credential.
    let (status, _) = common::parts(
        app.client
            .get(app.url("/v1/experiments"))
            .header("x-api-key", &key)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}
