//! Explicit allocation ranges through the HTTP API (on the backend `VERDICT_TEST_BACKEND`
//! names): created and replaced with `PUT …/variants`, validated with every problem named,
//! honoured by assignment (GrowthBook's `chooseVariation` over the ranges, hash v2 of salt
//! and subject) and by the SRM check's expected counts; assignments stay sticky when the
//! ranges change.

mod common;

use common::{error_code, spawn_app};
use reqwest::StatusCode;
use serde_json::{Value, json};
use verdict_domain::hashing;

const SALT: &str = "ranges-salt";

/// The variant GrowthBook would give `subject` for these ranges: the index of the range
/// holding the subject's hash, `None` outside all of them.
fn expected_variant(subject: &str, ranges: &[(f64, f64)]) -> Option<usize> {
    let n = hash_v2(subject);
    ranges
        .iter()
        .position(|&(start, end)| start <= n && n < end)
}

fn hash_v2(subject: &str) -> f64 {
    hashing::hash(SALT, subject, 2).expect("hash v2 is defined for every subject")
}

fn ranged_experiment(key: &str) -> Value {
    json!({
        "key": key,
        "variants": [
            {"key": "control", "range": [0.5, 0.8], "config": {"c": 1}},
            {"key": "treatment", "range": [0.0, 0.15], "config": {"c": 2}}
        ],
        "assignment": {"salt": SALT},
    })
}

#[tokio::test]
async fn explicit_ranges_decide_assignment_and_the_srm_expectations() {
    let app = spawn_app().await;
    let created = app.create_experiment(&ranged_experiment("ranged")).await;
    assert_eq!(created["variants"][0]["range"], json!([0.5, 0.8]));
    let weight = |i: usize| created["variants"][i]["weight"].as_f64().unwrap();
    assert!((weight(0) - 2.0 / 3.0).abs() < 1e-9, "{created}");
    assert!((weight(1) - 1.0 / 3.0).abs() < 1e-9, "{created}");
    assert!(
        (created["coverage"].as_f64().unwrap() - 0.45).abs() < 1e-9,
        "{created}"
    );
    let (status, body) = app.activate("ranged").await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let ranges = [(0.5, 0.8), (0.0, 0.15)];
    let mut inside = [0u64; 2];
    let mut outside = 0;
    for i in 0..300 {
        let subject = format!("s-{i}");
        let (status, body) = app
            .assignment("ranged", &app.admin_key, &subject, &[])
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        match expected_variant(&subject, &ranges) {
            Some(v) => {
                assert_eq!(body["in_experiment"], true, "{subject}: {body}");
                assert_eq!(
                    body["variant"],
                    ["control", "treatment"][v],
                    "{subject}: {body}"
                );
                inside[v] += 1;
            }
            None => {
                assert_eq!(body["in_experiment"], false, "{subject}: {body}");
                assert_eq!(body["reason"], "outside_coverage", "{subject}: {body}");
                outside += 1;
            }
        }
    }
    assert!(
        inside.iter().all(|&n| n > 20) && outside > 100,
        "{inside:?} {outside}"
    );

    // SRM expects each variant's range share of the assigned subjects.
    let results = app.results("ranged").await;
    let assigned = (inside[0] + inside[1]) as f64;
    let expected = results["srm"]["expected"]
        .as_array()
        .expect("expected counts");
    for (i, share) in [2.0 / 3.0, 1.0 / 3.0].into_iter().enumerate() {
        assert_eq!(expected[i]["observed"], inside[i], "{results}");
        let e = expected[i]["expected"].as_f64().unwrap();
        assert!((e - assigned * share).abs() < 1e-6, "{i}: {e} {results}");
    }
}

#[tokio::test]
async fn new_ranges_reach_new_subjects_only_and_bad_ranges_are_refused_whole() {
    let app = spawn_app().await;
    app.create_experiment(&ranged_experiment("moving")).await;
    app.activate("moving").await;
    let before = [(0.5, 0.8), (0.0, 0.15)];
    let after = [(0.0, 0.5), (0.5, 1.0)];
    // Subjects whose variant differs between the two allocations.
    let movers: Vec<String> = (0..2_000)
        .map(|i| format!("m-{i}"))
        .filter(|s| {
            let (b, a) = (expected_variant(s, &before), expected_variant(s, &after));
            b.is_some() && a.is_some() && a != b
        })
        .take(10)
        .collect();
    assert_eq!(movers.len(), 10);
    for s in &movers {
        app.assignment("moving", &app.admin_key, s, &[]).await;
    }

    let put = |body: Value| {
        let app = &app;
        async move {
            app.put_json("/v1/experiments/moving/variants", &app.admin_key, &body)
                .await
        }
    };
    let (status, body) = put(json!({"version": 2, "variants": [
        {"key": "control", "range": [0.0, 0.6]},
        {"key": "treatment", "range": [0.5, 1.2], "weight": 0.5}
    ]}))
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(error_code(&body), "validation_failed", "{body}");
    let fields: Vec<&str> = body["error"]["details"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|d| d["field"].as_str())
        .collect();
    for field in ["variants[1].range", "variants[1].weight"] {
        assert!(fields.contains(&field), "{field} missing: {body}");
    }
    let (_, unchanged) = app.get("/v1/experiments/moving", &app.admin_key).await;
    assert_eq!(unchanged["variants"][0]["range"], json!([0.5, 0.8]));

    let (status, body) = put(json!({"version": 2, "variants": [
        {"key": "control", "range": [0.0, 0.5]},
        {"key": "treatment", "range": [0.5, 1.0]}
    ]}))
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["coverage"], 1.0, "{body}");
    // Sticky: the subjects already assigned keep their variant …
    for s in &movers {
        let (_, b) = app.assignment("moving", &app.admin_key, s, &[]).await;
        let v = expected_variant(s, &before).unwrap();
        assert_eq!(b["variant"], ["control", "treatment"][v], "{s}: {b}");
    }
    // … and new ones follow the new ranges.
    for i in 0..50 {
        let s = format!("n-{i}");
        let (_, b) = app.assignment("moving", &app.admin_key, &s, &[]).await;
        let v = expected_variant(&s, &after).expect("the new ranges cover everything");
        assert_eq!(b["variant"], ["control", "treatment"][v], "{s}: {b}");
    }
}

#[tokio::test]
async fn a_namespace_is_validated_patched_and_honoured_by_assignment() {
    let app = spawn_app().await;
    let mut bad = json!({"key": "ns", "variants": [{"key": "a"}, {"key": "b"}],
        "namespace": {"id": "", "start": 0.7, "end": 0.2}});
    let (status, body) = app.post_json("/v1/experiments", &app.admin_key, &bad).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(error_code(&body), "validation_failed");
    let fields = common::problem_fields(&body);
    assert_eq!(fields, ["namespace.id", "namespace.end"], "{body}");

    bad["namespace"] = json!({"id": "checkout", "start": 0.0, "end": 0.5});
    let created = app.create_experiment(&bad).await;
    assert_eq!(created["namespace"], bad["namespace"]);
    app.activate("ns").await;
    let in_slice = |s: &str| hashing::in_namespace(s, ("checkout", 0.0, 0.5));
    let inside = (0..)
        .map(|i| format!("u{i}"))
        .find(|s| in_slice(s))
        .unwrap();
    let (_, got) = app.assignment("ns", &app.admin_key, &inside, &[]).await;
    assert_eq!(got["reason"], "assigned", "{got}");

    // Out of the namespace by PATCH: everyone is eligible again.
    let late = (0..)
        .map(|i| format!("late{i}"))
        .find(|s| !in_slice(s))
        .unwrap();
    let (_, got) = app.assignment("ns", &app.admin_key, &late, &[]).await;
    assert_eq!(got["reason"], "outside_namespace", "{got}");
    assert_eq!(got["in_experiment"], false);
    let version = created["version"].as_u64().unwrap() + 1;
    let (status, patched) = app
        .patch_json(
            "/v1/experiments/ns",
            &app.admin_key,
            &json!({"version": version, "namespace": null}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(patched["namespace"], Value::Null);
    let (_, got) = app.assignment("ns", &app.admin_key, &late, &[]).await;
    assert_eq!(got["reason"], "assigned", "{got}");
}
