//! Metric thresholds over HTTP: configured on an experiment, checked after each aggregation
//! run (`POST /v1/internal/jobs/aggregate/run`), each crossing announced once by an
//! `experiment.metrics_threshold_reached` webhook delivered by a real dispatcher to a real
//! receiver, its signature checked with the reference `standardwebhooks` crate.
//! Runs on SQLite by default and on MongoDB + Redis with `VERDICT_TEST_BACKEND=mongodb`.

mod common;

use std::collections::BTreeMap;

use common::webhooks::{dispatcher, verify};
use common::{TestApp, ab_experiment, error_code, spawn_app_with};
use reqwest::StatusCode;
use serde_json::{Value, json};
use time::OffsetDateTime;
use verdict_webhooks::test_support::Receiver;

const ALLOW_PRIVATE: (&str, &str) = ("VERDICT_WEBHOOKS__ALLOW_PRIVATE_TARGETS", "true");

/// Run the aggregation job over the internal API; its report.
async fn aggregate(app: &TestApp, internal: &str) -> Value {
    let (status, run) = app
        .post_json("/v1/internal/jobs/aggregate/run", internal, &json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{run}");
    run["report"].clone()
}

fn purchase(id: &str, subject: &str) -> Value {
    json!({"event_id": id, "experiment": "checkout", "subject_id": subject, "event": "purchase"})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_crossing_of_a_threshold_is_announced_once_by_a_signed_webhook() {
    let app = spawn_app_with(&[ALLOW_PRIVATE]).await;
    let receiver = Receiver::start().await;
    let (status, endpoint) = app
        .post_json(
            "/v1/webhooks/endpoints",
            &app.admin_key,
            &json!({"url": receiver.url("/alerts"),
                    "event_types": ["experiment.metrics_threshold_reached"]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{endpoint}");
    let secret = endpoint["secret"].as_str().unwrap().to_owned();

    let mut body = ab_experiment("checkout");
    body["thresholds"] = json!([
        // The conversion rate of any variant reaching one half, once it has 4 subjects.
        {"metric": "purchase", "above": 0.5, "min_subjects": 4}
    ]);
    let created = app.create_experiment(&body).await;
    assert_eq!(created["thresholds"][0]["statistic"], "estimate");
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(app.activate("checkout").await.0, StatusCode::OK);
    let client = app.create_key(&["client"]).await;
    let internal = app.create_key(&["internal"]).await;

    // Subjects by variant, in the order they were assigned.
    let mut by_variant: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for i in 0..40 {
        let subject = format!("s{i}");
        let (status, a) = app.assignment("checkout", &client, &subject, &[]).await;
        assert_eq!(status, StatusCode::OK, "{a}");
        by_variant
            .entry(a["variant"].as_str().unwrap().to_owned())
            .or_default()
            .push(subject);
    }
    let control = &by_variant["control"];
    let treatment = &by_variant["treatment"];
    assert!(
        control.len() >= 10 && treatment.len() >= 10,
        "{by_variant:?}"
    );
    let (nc, nt) = (control.len(), treatment.len());
    let post = |events: Vec<Value>| {
        let app = &app;
        let client = &client;
        async move {
            let n = events.len();
            let (status, report) = app.post_events(client, events).await;
            assert_eq!(status, StatusCode::OK, "{report}");
            assert_eq!(report["accepted"], n, "{report}");
        }
    };

    // Half the control subjects buy: control reaches 0.5, treatment (one buyer) does not.
    let half = nc.div_ceil(2);
    let mut events: Vec<Value> = control[..half]
        .iter()
        .map(|s| purchase(&format!("c1-{s}"), s))
        .collect();
    events.push(purchase("t1", &treatment[0]));
    post(events).await;
    let report = aggregate(&app, &internal).await;
    assert_eq!(report["thresholds_reached"], 1, "{report}");
    // Still reached after more events: nothing new.
    post(vec![purchase("c2", &control[0])]).await;
    assert_eq!(aggregate(&app, &internal).await["thresholds_reached"], 0);

    // Treatment reaches it too.
    let events: Vec<Value> = treatment[1..nt.div_ceil(2)]
        .iter()
        .map(|s| purchase(&format!("t3-{s}"), s))
        .collect();
    post(events).await;
    assert_eq!(aggregate(&app, &internal).await["thresholds_reached"], 1);

    // Control falls back below one half as new subjects arrive without buying (re-armed,
    // silently), then crosses again: a second announcement for control.
    let mut newcomers = Vec::new();
    for i in 40.. {
        let subject = format!("s{i}");
        let (_, a) = app.assignment("checkout", &client, &subject, &[]).await;
        if a["variant"] == "control" {
            newcomers.push(subject);
            if newcomers.len() == 4 {
                break;
            }
        }
    }
    post(vec![json!({"event_id": "view", "experiment": "checkout",
                     "subject_id": &control[0], "event": "view"})])
    .await;
    assert_eq!(aggregate(&app, &internal).await["thresholds_reached"], 0);
    let events: Vec<Value> = newcomers
        .iter()
        .map(|s| purchase(&format!("c4-{s}"), s))
        .collect();
    post(events).await;
    assert_eq!(aggregate(&app, &internal).await["thresholds_reached"], 1);

    let report = dispatcher(&app)
        .run_once(OffsetDateTime::now_utc())
        .await
        .unwrap();
    assert_eq!(report.delivered, 3, "{report:?}");
    let got = receiver.requests();
    assert_eq!(got.len(), 3);
    let results = app.results("checkout").await;
    // The figure announced is the estimate results show.
    let rate = |variant: &str| -> f64 {
        common::variant_row(&results, variant)["estimate"]
            .as_f64()
            .expect("an estimate per variant")
    };
    let expected = [
        ("control", half as f64 / nc as f64, 1),
        ("treatment", nt.div_ceil(2) as f64 / nt as f64, 2),
        ("control", rate("control"), 3),
    ];
    for (r, (variant, value, number)) in got.iter().zip(expected) {
        assert!(verify(r, &secret), "signed with the endpoint's secret");
        assert_eq!(r.path, "/alerts");
        assert_eq!(r.webhook_id(), format!("msg_{id}_threshold_{number}"));
        let body = r.json();
        assert_eq!(body["type"], "experiment.metrics_threshold_reached");
        let d = &body["data"];
        assert_eq!(d["experiment"], "checkout", "{d}");
        assert_eq!(d["metric"], "purchase", "{d}");
        assert_eq!(d["kind"], "binomial", "{d}");
        assert_eq!(d["statistic"], "estimate", "{d}");
        assert_eq!(d["direction"], "above", "{d}");
        assert_eq!(d["threshold"], 0.5, "{d}");
        assert_eq!(d["variant"], variant, "{d}");
        assert_eq!(d["crossing"], number, "{d}");
        let seen = d["value"].as_f64().unwrap();
        assert!((seen - value).abs() < 1e-12, "{d}: expected {value}");
        assert!(seen >= 0.5, "{d}");
    }
}

#[tokio::test]
async fn thresholds_are_validated_with_every_problem_listed_and_replaced_by_patch() {
    let app = spawn_app_with(&[]).await;
    let mut body = ab_experiment("checkout");
    body["thresholds"] = json!([
        {"metric": "signup", "above": 0.1},
        {"metric": "purchase"},
        {"metric": "purchase", "below": 1.0, "variant": "nope"},
        {"metric": "purchase", "statistic": "median", "above": 1.0}
    ]);
    let (status, err) = app
        .post_json("/v1/experiments", &app.admin_key, &body)
        .await;
    // An unknown statistic is a body that does not parse.
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{err}");
    assert_eq!(error_code(&err), "invalid_body", "{err}");
    body["thresholds"].as_array_mut().unwrap().pop();
    let (status, err) = app
        .post_json("/v1/experiments", &app.admin_key, &body)
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{err}");
    assert_eq!(error_code(&err), "validation_failed", "{err}");
    let fields = common::problem_fields(&err);
    assert_eq!(
        fields,
        [
            "thresholds[0].metric",
            "thresholds[1]",
            "thresholds[2].variant"
        ],
        "{err}"
    );
    assert_eq!(app.experiment_count().await, 0, "nothing written");

    let created = app.create_experiment(&ab_experiment("checkout")).await;
    assert_eq!(created["thresholds"], json!([]));
    let patch = json!({"version": created["version"],
                       "thresholds": [{"metric": "purchase", "statistic": "events", "above": 100}]});
    let (status, patched) = app
        .patch_json("/v1/experiments/checkout", &app.admin_key, &patch)
        .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(patched["thresholds"][0]["statistic"], "events");
    assert_eq!(patched["thresholds"][0]["above"], 100.0);
    // A threshold on a metric the same patch removes is refused.
    let patch = json!({"version": patched["version"],
                       "primary_metric": {"event": "signup"}});
    let (status, err) = app
        .patch_json("/v1/experiments/checkout", &app.admin_key, &patch)
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{err}");
    assert_eq!(err["error"]["details"][0]["field"], "thresholds[0].metric");
}
