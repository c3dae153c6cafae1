//! Breakdowns over HTTP: results per segment of a declared dimension (an assignment
//! attribute or an event `meta` key), each segment's figures equal to a recomputation from
//! the events sent, an effect that holds in one segment and not in another, the cap on
//! segments, and the errors. Runs on SQLite by default and on MongoDB + Redis with
//! `VERDICT_TEST_BACKEND=mongodb`.

mod common;

use std::collections::BTreeMap;

use common::{TestApp, ab_experiment, error_code, spawn_app};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// `GET …/results?breakdown=true` after an aggregation; asserts 200.
async fn broken_down(app: &TestApp, key: &str) -> Value {
    app.aggregate().await;
    let (status, body) = app
        .get(
            &format!("/v1/experiments/{key}/results?breakdown=true"),
            &app.admin_key,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

/// The segment of a breakdown with this value.
fn segment<'a>(results: &'a Value, value: &str) -> &'a Value {
    results["breakdown"]["segments"]
        .as_array()
        .expect("segments")
        .iter()
        .find(|s| s["value"] == value)
        .unwrap_or_else(|| panic!("no segment {value} in {results}"))
}

/// A metric's row for `variant` in a segment (`metric` = index in the results' metrics).
fn row<'a>(segment: &'a Value, metric: usize, variant: &str) -> &'a Value {
    segment["metrics"][metric]["variants"]
        .as_array()
        .expect("variants")
        .iter()
        .find(|r| r["variant"] == variant)
        .unwrap_or_else(|| panic!("no row for {variant} in {segment}"))
}

async fn post_all(app: &TestApp, key: &str, events: Vec<Value>) {
    for chunk in events.chunks(500) {
        let (status, report) = app.post_events(key, chunk.to_vec()).await;
        assert_eq!(status, StatusCode::OK, "{report}");
        assert_eq!(report["accepted"], chunk.len(), "{report}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_effect_in_one_country_and_none_in_the_other_shows_in_their_segments() {
    let app = spawn_app().await;
    let mut body = ab_experiment("checkout");
    body["assignment"]["context"] = json!(["country"]);
    body["breakdown"] = json!({"source": "assignment", "attribute": "country"});
    body["secondary_metrics"] = json!([{"event": "revenue", "kind": "sum"}]);
    app.create_experiment(&body).await;
    assert_eq!(app.activate("checkout").await.0, StatusCode::OK);
    let client = app.create_key(&["client"]).await;

    // 1,200 subjects, half in each country. In US the treatment converts at 60% against
    // 20%; in FR both convert at 30%. Each buyer also sends revenue.
    let mut sent: BTreeMap<(String, String), (u64, u64, f64)> = BTreeMap::new();
    let mut events = Vec::new();
    let mut seen = [0u64; 4];
    for i in 0..1200 {
        let subject = format!("u{i}");
        let country = if i % 2 == 0 { "US" } else { "FR" };
        let (status, a) = app
            .assignment("checkout", &client, &subject, &[("attr.country", country)])
            .await;
        assert_eq!(status, StatusCode::OK, "{a}");
        let variant = a["variant"].as_str().unwrap().to_owned();
        let arm = usize::from(country == "US") * 2 + usize::from(variant == "treatment");
        let k = seen[arm];
        seen[arm] += 1;
        let buys = match (country, variant.as_str()) {
            ("US", "treatment") => k % 5 < 3,
            ("US", _) => k % 5 == 0,
            _ => k % 10 < 3,
        };
        let e = sent.entry((country.to_owned(), variant)).or_default();
        e.0 += 1;
        if buys {
            let value = 10.0 + (k % 7) as f64;
            e.1 += 1;
            e.2 += value;
            events.push(
                json!({"event_id": format!("p{i}"), "experiment": "checkout",
                               "subject_id": subject, "event": "purchase"}),
            );
            events.push(
                json!({"event_id": format!("r{i}"), "experiment": "checkout",
                               "subject_id": subject, "event": "revenue", "value": value}),
            );
        }
    }
    post_all(&app, &client, events).await;
    let results = broken_down(&app, "checkout").await;
    let b = &results["breakdown"];
    assert_eq!(b["source"], "assignment", "{b}");
    assert_eq!(b["attribute"], "country");
    assert_eq!(b["omitted_metrics"], json!([]));
    let segments = b["segments"].as_array().unwrap();
    assert_eq!(segments.len(), 2, "{b}");
    assert!(segments.iter().all(|s| s["kind"] == "value"));
    assert_eq!(b["multiple_comparisons"]["comparisons"], 2);
    assert_eq!(b["multiple_comparisons"]["bonferroni_alpha"], 0.025);
    assert!(
        b["multiple_comparisons"]["note"]
            .as_str()
            .unwrap()
            .contains("Bonferroni")
    );

    // Every figure equals the recomputation from what was sent.
    for ((country, variant), (subjects, buyers, revenue)) in &sent {
        let s = segment(&results, country);
        let purchase = row(s, 0, variant);
        assert_eq!(
            purchase["subjects"], *subjects,
            "{country}/{variant}: {purchase}"
        );
        assert_eq!(
            purchase["converted_subjects"], *buyers,
            "{country}/{variant}"
        );
        let rate = *buyers as f64 / *subjects as f64;
        assert!((purchase["estimate"].as_f64().unwrap() - rate).abs() < 1e-12);
        let sum = row(s, 1, variant);
        assert_eq!(s["metrics"][1]["event"], "revenue");
        assert_eq!(sum["subjects"], *subjects);
        assert!(
            (sum["sum"].as_f64().unwrap() - revenue).abs() < 1e-9,
            "{sum}"
        );
        assert!(
            (sum["estimate"].as_f64().unwrap() - revenue / *subjects as f64).abs() < 1e-9,
            "{sum}"
        );
    }
    for country in ["US", "FR"] {
        let subjects: u64 = sent
            .iter()
            .filter(|((c, _), _)| c == country)
            .map(|(_, (n, _, _))| n)
            .sum();
        assert_eq!(segment(&results, country)["subjects"], subjects);
    }
    // The effect holds in US (the treatment credibly better) and not in FR.
    let us = row(segment(&results, "US"), 0, "treatment");
    let fr = row(segment(&results, "FR"), 0, "treatment");
    assert!(us["p_best"].as_f64().unwrap() > 0.999, "{us}");
    let p = fr["p_best"].as_f64().unwrap();
    assert!(p > 0.2 && p < 0.8, "no effect in FR: {fr}");
    // The whole experiment mixes both: the sum of the segments.
    let all = common::variant_row(&results, "treatment");
    let treated: u64 = sent
        .iter()
        .filter(|((_, v), _)| v == "treatment")
        .map(|(_, (n, _, _))| n)
        .sum();
    assert_eq!(all["subjects"], treated);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_key_segments_subjects_by_their_first_value_with_the_rest_merged() {
    let app = spawn_app().await;
    let mut body = ab_experiment("app");
    body["breakdown"] = json!({"source": "event", "attribute": "platform", "max_segments": 2});
    app.create_experiment(&body).await;
    assert_eq!(app.activate("app").await.0, StatusCode::OK);
    let client = app.create_key(&["client"]).await;

    // Platforms by subject: 8 ios, 6 android, 3 web, 2 tv, 1 without any; each subject's
    // later events carry another platform, which does not move it.
    let platforms = [("ios", 8), ("android", 6), ("web", 3), ("tv", 2)];
    let mut expected: BTreeMap<&str, u64> = BTreeMap::new();
    let mut events = Vec::new();
    let mut n = 0;
    for (platform, count) in platforms {
        for _ in 0..count {
            let subject = format!("d{n}");
            app.assignment("app", &client, &subject, &[]).await;
            events.push(json!({"event_id": format!("a{n}"), "experiment": "app",
                "subject_id": subject, "event": "purchase", "meta": {"platform": platform}}));
            events.push(json!({"event_id": format!("b{n}"), "experiment": "app",
                "subject_id": subject, "event": "purchase", "meta": {"platform": "ios"}}));
            *expected.entry(platform).or_default() += 1;
            n += 1;
        }
    }
    app.assignment("app", &client, "silent", &[]).await;
    // The first batch's events are folded before the second is sent.
    post_all(&app, &client, events).await;
    app.aggregate().await;
    post_all(
        &app,
        &client,
        vec![
            json!({"event_id": "late", "experiment": "app", "subject_id": "d15",
                    "event": "purchase", "meta": {"platform": "web"}}),
        ],
    )
    .await;
    let results = broken_down(&app, "app").await;
    let segments = results["breakdown"]["segments"].as_array().unwrap();
    let shape: Vec<(&str, Option<&str>, u64)> = segments
        .iter()
        .map(|s| {
            (
                s["kind"].as_str().unwrap(),
                s["value"].as_str(),
                s["subjects"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        shape,
        [
            ("value", Some("ios"), expected["ios"]),
            ("value", Some("android"), expected["android"]),
            ("other", None, expected["web"] + expected["tv"]),
            ("missing", None, 1),
        ],
        "{results}"
    );
    assert_eq!(segments[2]["values"], 2, "web and tv merged");
    // Each segment's purchases: two per subject (three for d15), none for the silent one.
    let events_in = |s: &Value| -> u64 {
        s["metrics"][0]["variants"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["conversions"].as_u64().unwrap())
            .sum()
    };
    assert_eq!(events_in(&segments[0]), 2 * expected["ios"]);
    assert_eq!(events_in(&segments[1]), 2 * expected["android"]);
    // d15 stays in web (merged into other) with its late event.
    assert_eq!(
        events_in(&segments[2]),
        2 * (expected["web"] + expected["tv"]) + 1
    );
    assert_eq!(events_in(&segments[3]), 0);
}

#[tokio::test]
async fn a_breakdown_must_be_declared_read_without_a_range_and_fixed_once_started() {
    let app = spawn_app().await;
    app.create_experiment(&ab_experiment("plain")).await;
    let (status, body) = app
        .get(
            "/v1/experiments/plain/results?breakdown=true",
            &app.admin_key,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(error_code(&body), "invalid_query");

    let mut bad = ab_experiment("bad");
    bad["breakdown"] = json!({"source": "assignment", "attribute": "country",
                              "max_segments": 500});
    let (status, body) = app.post_json("/v1/experiments", &app.admin_key, &bad).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let fields = common::problem_fields(&body);
    assert_eq!(fields, ["breakdown.attribute", "breakdown.max_segments"]);

    let mut body = ab_experiment("seg");
    body["breakdown"] = json!({"source": "event", "attribute": "platform"});
    let created = app.create_experiment(&body).await;
    assert_eq!(created["breakdown"]["max_segments"], 50);
    let (status, body) = app
        .get(
            "/v1/experiments/seg/results?breakdown=true&from=2026-01-01",
            &app.admin_key,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(error_code(&body), "invalid_query");
    // A draft may change it; a started experiment may not.
    let (status, patched) = app
        .patch_json(
            "/v1/experiments/seg",
            &app.admin_key,
            &json!({"version": created["version"],
                    "breakdown": {"source": "event", "attribute": "device"}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(patched["breakdown"]["attribute"], "device");
    assert_eq!(app.activate("seg").await.0, StatusCode::OK);
    let (_, current) = app.get("/v1/experiments/seg", &app.admin_key).await;
    let (status, body) = app
        .patch_json(
            "/v1/experiments/seg",
            &app.admin_key,
            &json!({"version": current["version"], "breakdown": null}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(error_code(&body), "experiment_running");
}
