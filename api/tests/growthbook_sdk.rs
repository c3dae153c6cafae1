//! GrowthBook's official Python SDK (PyPI `growthbook`, in the virtualenv of
//! `scripts/sdk-venv.sh`), pointed at a running Verdict, loads `/api/features/{client_key}`
//! and evaluates every experiment for 10,000 subjects, non-ASCII ids included: each gets
//! the variant (and config) Verdict's assignment API gives it, in experiments with two and
//! three arms, unequal weights, coverage below 1, hash v1 and v2, targeting and an audience,
//! a namespace shared by two experiments, and a decided winner.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

use common::{TestApp, spawn_app};
use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::{Value, json};

const SUBJECTS: usize = 10_000;

/// The Python of the SDK virtualenv (made on first use).
fn sdk_python() -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/sdk-venv.sh");
    let out = Command::new("bash")
        .arg(&script)
        .output()
        .expect("scripts/sdk-venv.sh runs");
    assert!(
        out.status.success(),
        "scripts/sdk-venv.sh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("a path")
        .trim()
        .to_owned()
}

/// Subject ids, every few of them non-ASCII (accents, CJK, and a character outside the
/// Basic Multilingual Plane, which hashes as two UTF-16 code units), with attributes.
fn subjects() -> Vec<Value> {
    (0..SUBJECTS)
        .map(|i| {
            let id = match i % 10 {
                3 => format!("ünïcødé-{i}"),
                6 => format!("用户-{i}"),
                9 => format!("🙂-{i}"),
                _ => format!("user-{i}"),
            };
            let country = ["US", "FR", "DE"][i % 3];
            let plan = ["free", "pro", "team"][(i / 3) % 3];
            let attributes = json!({"country": country, "age": (i * 7) % 90, "plan": plan});
            json!({"id": id, "attributes": attributes})
        })
        .collect()
}

fn two_variants(key: &str) -> Value {
    json!({"key": key, "variants": [
        {"key": "a", "config": {"arm": format!("{key}-a")}},
        {"key": "b", "config": {"arm": format!("{key}-b")}}
    ]})
}

async fn experiments(app: &TestApp) {
    let (status, body) = app
        .post_json(
            "/v1/environments/production/audiences",
            &app.admin_key,
            &json!({"key": "working-age", "rules": [
                {"conditions": [{"attribute": "age", "operator": "lt", "value": 65}]}
            ]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let mut unequal = two_variants("two-arms");
    unequal["variants"][0]["weight"] = json!(0.3);
    unequal["variants"][1]["weight"] = json!(0.7);
    let three = json!({"key": "three-arms", "coverage": 0.6,
    "assignment": {"hash_version": 1},
    "variants": [
        {"key": "x", "weight": 0.2, "config": "three-x"},
        {"key": "y", "weight": 0.3, "config": "three-y"},
        {"key": "z", "weight": 0.5, "config": "three-z"}
    ]});
    let mut targeted = two_variants("targeted");
    targeted["audience"] = json!("working-age");
    targeted["targeting"] = json!([
        {"conditions": [{"attribute": "country", "operator": "eq", "value": "US"},
                        {"attribute": "age", "operator": "gte", "value": 18}]},
        {"conditions": [{"attribute": "plan", "operator": "in", "value": ["pro", "team"]}]}
    ]);
    let mut left = two_variants("ns-left");
    left["namespace"] = json!({"id": "checkout", "start": 0.0, "end": 0.4});
    let mut right = two_variants("ns-right");
    right["namespace"] = json!({"id": "checkout", "start": 0.4, "end": 1.0});
    right["coverage"] = json!(0.8);
    let decided = two_variants("decided");
    for body in [unequal, three, targeted, left, right, decided] {
        let key = body["key"].as_str().unwrap().to_owned();
        app.create_experiment(&body).await;
        let (status, body) = app.activate(&key).await;
        assert_eq!(status, StatusCode::OK, "{key}: {body}");
    }
    let (status, body) = app
        .post_json(
            "/v1/experiments/decided/winner",
            &app.admin_key,
            &json!({"variant": "b"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// What Verdict's assignment API gives each subject: per experiment, `[config,
/// in_experiment, variant]`.
async fn verdict_assignments(
    app: &TestApp,
    key: &str,
    subjects: &[Value],
) -> HashMap<String, HashMap<String, (Value, bool, String)>> {
    futures::stream::iter(subjects)
        .map(|s| async move {
            let (status, body) = app
                .post_json(
                    "/v1/assignments",
                    key,
                    &json!({"subject_id": s["id"], "attributes": s["attributes"]}),
                )
                .await;
            assert_eq!(status, StatusCode::OK, "{body}");
            let per_experiment = body["assignments"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| {
                    (
                        a["experiment"].as_str().unwrap().to_owned(),
                        (
                            a["config"].clone(),
                            a["in_experiment"].as_bool().unwrap(),
                            a["variant"].as_str().unwrap().to_owned(),
                        ),
                    )
                })
                .collect();
            (s["id"].as_str().unwrap().to_owned(), per_experiment)
        })
        .buffer_unordered(16)
        .collect()
        .await
}

/// Run GrowthBook's Python SDK against `app` for `subjects` (see
/// `tests/sdk/growthbook_evaluate.py`): what it evaluated and the exposures it tracked.
async fn run_sdk(app: &TestApp, client_key: &str, subjects: &[Value]) -> Value {
    let python = sdk_python();
    let dir = tempfile::tempdir().unwrap();
    let subjects_path = dir.path().join("subjects.json");
    std::fs::write(&subjects_path, serde_json::to_vec(subjects).unwrap()).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sdk/growthbook_evaluate.py");
    let run = tokio::process::Command::new(&python)
        .arg(&script)
        .arg(format!("http://{}", app.addr))
        .arg(client_key)
        .arg(&subjects_path)
        .output()
        .await
        .expect("the SDK script runs");
    assert!(
        run.status.success(),
        "the GrowthBook SDK script failed: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    serde_json::from_slice(&run.stdout).expect("the script prints JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn growthbooks_python_sdk_picks_the_variant_verdict_assigns() {
    let app = spawn_app().await;
    experiments(&app).await;
    let client_key = app.create_key(&["client"]).await;
    let subjects = subjects();
    let sdk = run_sdk(&app, &client_key, &subjects).await;
    assert_eq!(
        sdk["features"],
        json!([
            "decided",
            "ns-left",
            "ns-right",
            "targeted",
            "three-arms",
            "two-arms"
        ])
    );

    let verdict = verdict_assignments(&app, &client_key, &subjects).await;
    let variant_keys: HashMap<&str, Vec<&str>> = HashMap::from([
        ("two-arms", vec!["a", "b"]),
        ("three-arms", vec!["x", "y", "z"]),
        ("targeted", vec!["a", "b"]),
        ("ns-left", vec!["a", "b"]),
        ("ns-right", vec!["a", "b"]),
        ("decided", vec!["a", "b"]),
    ]);
    let mut mismatches = Vec::new();
    let mut in_experiment: HashMap<&str, usize> = HashMap::new();
    let mut non_ascii_in_experiment = 0;
    for subject in &subjects {
        let id = subject["id"].as_str().unwrap();
        for (experiment, keys) in &variant_keys {
            let (config, inside, variant) = &verdict[id][*experiment];
            let seen = &sdk["subjects"][id][*experiment];
            let sdk_variant = seen[2].as_u64().map(|i| keys[i as usize]);
            let agrees = seen[0] == *config
                && seen[1] == json!(inside)
                && (!inside || sdk_variant == Some(variant.as_str()));
            if !agrees {
                mismatches.push(format!(
                    "{id} in {experiment}: Verdict {variant} {config} (in: {inside}), SDK {seen}"
                ));
            }
            if *inside {
                *in_experiment.entry(experiment).or_default() += 1;
                non_ascii_in_experiment += usize::from(!id.is_ascii());
            }
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} of {} evaluations differ, e.g. {:#?}",
        mismatches.len(),
        SUBJECTS * variant_keys.len(),
        &mismatches[..mismatches.len().min(10)]
    );
    // Every rule was exercised: each experiment took some subjects and left others out
    // (coverage, targeting, namespace), and the decided one took none.
    for (experiment, n) in [
        ("two-arms", SUBJECTS),
        ("three-arms", SUBJECTS * 6 / 10),
        ("ns-left", SUBJECTS * 4 / 10),
        ("ns-right", SUBJECTS * 6 / 10 * 8 / 10),
    ] {
        let got = in_experiment.get(experiment).copied().unwrap_or(0);
        let tolerance = SUBJECTS / 20;
        assert!(
            got.abs_diff(n) < tolerance,
            "{experiment}: {got} of about {n}"
        );
    }
    let targeted = in_experiment.get("targeted").copied().unwrap_or(0);
    assert!((1_000..SUBJECTS - 1_000).contains(&targeted), "{targeted}");
    assert_eq!(in_experiment.get("decided"), None);
    assert!(non_ascii_in_experiment > 5_000, "{non_ascii_in_experiment}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exposures_the_sdk_tracks_assign_its_subjects_so_their_events_count() {
    let app = spawn_app().await;
    let mut body = two_variants("checkout");
    body["coverage"] = json!(0.8);
    body["variants"][0]["weight"] = json!(0.4);
    body["variants"][1]["weight"] = json!(0.6);
    app.create_experiment(&body).await;
    app.activate("checkout").await;
    let client_key = app.create_key(&["client"]).await;
    let subjects: Vec<Value> = subjects().into_iter().take(400).collect();
    let sdk = run_sdk(&app, &client_key, &subjects).await;
    let tracked: Vec<(String, String)> = sdk["tracked"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            assert_eq!(t[1], "checkout");
            (
                t[0].as_str().unwrap().to_owned(),
                t[2].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    // Coverage 0.8 of 400, within 5 standard deviations (8).
    assert!(tracked.len().abs_diff(320) < 40, "{}", tracked.len());

    // An exposure naming the other variant, or of a subject the SDK left out, assigns no one.
    let (first, first_variant) = &tracked[0];
    let other = if first_variant == "a" { "b" } else { "a" };
    let left_out = subjects
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .find(|id| tracked.iter().all(|(t, _)| t != id))
        .unwrap();
    let exposure = |subject: &str, variant: &str| {
        json!({"experiment": "checkout", "subject_id": subject, "event": "exposure",
               "variant": variant})
    };
    let (status, report) = app
        .post_events(
            &client_key,
            vec![exposure(first, other), exposure(left_out, "a")],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{report}");
    let codes: Vec<&Value> = report["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["code"])
        .collect();
    assert_eq!(
        codes,
        [&json!("variant_mismatch"), &json!("not_in_experiment")]
    );

    // What the SDK tracked, then a purchase of every third subject.
    let mut events: Vec<Value> = tracked.iter().map(|(s, v)| exposure(s, v)).collect();
    events.extend(
        tracked.iter().step_by(3).map(
            |(s, _)| json!({"experiment": "checkout", "subject_id": s, "event": "conversion"}),
        ),
    );
    for chunk in events.chunks(250) {
        let (status, report) = app.post_events(&client_key, chunk.to_vec()).await;
        assert_eq!(status, StatusCode::OK, "{report}");
        assert_eq!(report["rejected"], 0, "{report}");
    }
    for (subject, variant) in tracked.iter().take(50) {
        let (_, got) = app.assignment("checkout", &client_key, subject, &[]).await;
        assert_eq!(
            (&got["variant"], &got["reason"]),
            (&json!(variant), &json!("assigned")),
            "{got}"
        );
    }
    let results = app.results("checkout").await;
    for variant in ["a", "b"] {
        let subjects = tracked.iter().filter(|(_, v)| v == variant).count();
        let converted = tracked
            .iter()
            .step_by(3)
            .filter(|(_, v)| v == variant)
            .count();
        let row = common::variant_row(&results, variant);
        assert_eq!(row["subjects"], subjects, "{variant}: {row}");
        assert_eq!(row["converted_subjects"], converted, "{variant}: {row}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sdks_streaming_mode_receives_each_new_payload() {
    use tokio::io::{AsyncBufReadExt, BufReader};

    let app = spawn_app().await;
    app.create_experiment(&two_variants("banner")).await;
    app.activate("banner").await;
    let client_key = app.create_key(&["client"]).await;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sdk/growthbook_stream.py");
    let mut sdk = tokio::process::Command::new(sdk_python())
        .arg(&script)
        .arg(format!("http://{}", app.addr))
        .arg(&client_key)
        .arg("banner")
        .arg(json!({"arm": "banner-b"}).to_string())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the SDK script starts");
    let mut lines = BufReader::new(sdk.stdout.take().unwrap()).lines();
    let first: Value = serde_json::from_str(&lines.next_line().await.unwrap().unwrap()).unwrap();
    assert!(first["first"]["arm"].is_string(), "{first}");
    // Let the stream connect, then decide a winner: the SDK must hear of it.
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let (status, body) = app
        .post_json(
            "/v1/experiments/banner/winner",
            &app.admin_key,
            &json!({"variant": "b"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let updated: Value =
        serde_json::from_str(&lines.next_line().await.unwrap().expect("a second line")).unwrap();
    assert_eq!(updated, json!({"updated": {"arm": "banner-b"}}));
    assert!(sdk.wait().await.unwrap().success());
}

#[tokio::test]
async fn the_payload_answers_304_while_unchanged_and_needs_a_valid_client_key() {
    let app = spawn_app().await;
    app.create_experiment(&two_variants("k")).await;
    let client_key = app.create_key(&["client"]).await;
    let get = |etag: Option<&str>| {
        let mut req = app
            .client
            .get(app.url(&format!("/api/features/{client_key}")));
        if let Some(etag) = etag {
            req = req.header("if-none-match", etag);
        }
        req.send()
    };
    let first = get(None).await.unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    let etag = first.headers()["etag"].to_str().unwrap().to_owned();
    let body: Value = first.json().await.unwrap();
    assert_eq!(body["features"], json!({}), "a draft is not served");
    assert_eq!(
        get(Some(&etag)).await.unwrap().status(),
        StatusCode::NOT_MODIFIED
    );

    app.activate("k").await;
    let changed = get(Some(&etag)).await.unwrap();
    assert_eq!(changed.status(), StatusCode::OK);
    assert_ne!(changed.headers()["etag"].to_str().unwrap(), etag);
    let body: Value = changed.json().await.unwrap();
    assert_eq!(body["features"]["k"]["rules"][0]["key"], "k");

    let unknown = app
        .client
        .get(app.url("/api/features/not-a-key"))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), StatusCode::UNAUTHORIZED);
    let viewer = app.create_key(&["viewer"]).await;
    let refused = app
        .client
        .get(app.url(&format!("/api/features/{viewer}")))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
}
