//! Winner decisions for every metric kind, end to end through the HTTP API on the test backend
//! (SQLite by default; MongoDB + Redis with `VERDICT_TEST_BACKEND=mongodb`): subjects
//! assigned and events sent over HTTP, the aggregation and evaluation jobs run through the
//! job runner, the decision read back.
//!
//! Three experiments run on the same simulated subjects (a subject is assigned to all three
//! with one bulk call), each with the default winner policy (Bayesian, peeking guard on):
//! - `revenue`: revenue per subject (`sum`), 5% of subjects order, order values lognormal
//!   (σ = 1); `boost` earns 30% more per order at the same conversion rate;
//! - `latency`: page load time per event (`mean`, minimize), lognormal with a median of
//!   200 ms (σ = 0.5), 1 to 10 events per subject; `fast` is 5% faster on every event;
//! - `guarded`: sign-ups (`binomial`) 10% → 14% for `bold`, which also crashes 30% more often
//!   (5% → 6.5%) on its `crash` guardrail (margin 20%).
//!
//! The data come from a fixed-seed ChaCha8 stream: the same on every backend and every run.

mod common;

use common::{TestApp, spawn_app_with};
use futures::StreamExt;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use reqwest::StatusCode;
use serde_json::{Value, json};
use verdict_store::Trigger;

/// Subjects (about half per arm in each experiment).
const SUBJECTS: usize = 32_000;
/// Subjects who send page loads (the latency experiment needs far fewer than revenue).
const LATENCY_SUBJECTS: usize = 4_000;
/// Concurrent assignment requests.
const CONCURRENCY: usize = 16;

fn experiments() -> [Value; 3] {
    [
        json!({
            "key": "revenue",
            "variants": [{"key": "control"}, {"key": "boost"}],
            "assignment": {"salt": "revenue-salt"},
            "primary_metric": {"event": "order", "kind": "sum"},
        }),
        json!({
            "key": "latency",
            "variants": [{"key": "control"}, {"key": "fast"}],
            "assignment": {"salt": "latency-salt"},
            "primary_metric": {"event": "page_load", "kind": "mean", "objective": "minimize"},
        }),
        json!({
            "key": "guarded",
            "variants": [{"key": "control"}, {"key": "bold"}],
            "assignment": {"salt": "guarded-salt"},
            "primary_metric": {"event": "signup"},
            "guardrail_metrics": [{"event": "crash", "objective": "minimize"}],
        }),
    ]
}

/// A standard normal draw (Box–Muller).
fn normal(rng: &mut ChaCha8Rng) -> f64 {
    let u1: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

fn lognormal(rng: &mut ChaCha8Rng, median: f64, sigma: f64) -> f64 {
    median * (sigma * normal(rng)).exp()
}

/// The events one subject sends, given its variant in each experiment.
fn events_of(rng: &mut ChaCha8Rng, i: usize, variants: &Value) -> Vec<Value> {
    let variant = |experiment: &str| {
        variants
            .as_array()
            .and_then(|a| a.iter().find(|v| v["experiment"] == experiment))
            .and_then(|v| v["variant"].as_str())
            .unwrap_or_default()
            .to_owned()
    };
    let subject = format!("subject-{i}");
    let event = |experiment: &str, name: &str, n: usize, value: f64| {
        json!({"experiment": experiment, "subject_id": subject, "event": name,
               "event_id": format!("{experiment}-{name}-{i}-{n}"), "value": value})
    };
    let mut out = Vec::new();
    if rng.random::<f64>() < 0.05 {
        let lift = if variant("revenue") == "boost" {
            1.3
        } else {
            1.0
        };
        out.push(event(
            "revenue",
            "order",
            0,
            lift * lognormal(rng, 20.0, 1.0),
        ));
    }
    if i < LATENCY_SUBJECTS {
        let speed = if variant("latency") == "fast" {
            0.95
        } else {
            1.0
        };
        for n in 0..rng.random_range(1..=10) {
            out.push(event(
                "latency",
                "page_load",
                n,
                speed * lognormal(rng, 200.0, 0.5),
            ));
        }
    }
    let bold = variant("guarded") == "bold";
    if rng.random::<f64>() < if bold { 0.14 } else { 0.10 } {
        out.push(event("guarded", "signup", 0, 1.0));
    }
    if rng.random::<f64>() < if bold { 0.065 } else { 0.05 } {
        out.push(event("guarded", "crash", 0, 1.0));
    }
    out
}

/// Assign every subject in every live experiment (one bulk call each), then send their
/// events in batches.
async fn simulate(app: &TestApp, client: &str) {
    let mut assignments: Vec<Value> = Vec::with_capacity(SUBJECTS);
    for chunk in (0..SUBJECTS).collect::<Vec<_>>().chunks(CONCURRENCY * 64) {
        let calls = chunk.iter().map(|&i| async move {
            let (status, body) = app
                .post_json(
                    "/v1/assignments",
                    client,
                    &json!({"subject_id": format!("subject-{i}")}),
                )
                .await;
            assert_eq!(status, StatusCode::OK, "{body}");
            body["assignments"].clone()
        });
        let mut stream = futures::stream::iter(calls).buffered(CONCURRENCY);
        while let Some(a) = stream.next().await {
            assignments.push(a);
        }
    }
    let mut rng = ChaCha8Rng::seed_from_u64(17);
    let events: Vec<Value> = assignments
        .iter()
        .enumerate()
        .flat_map(|(i, a)| events_of(&mut rng, i, a))
        .collect();
    for batch in events.chunks(1_000) {
        let (status, report) = app.post_events(client, batch.to_vec()).await;
        assert_eq!(status, StatusCode::OK, "{report}");
        assert_eq!(report["rejected"], 0, "{report}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_kind_decides_for_the_better_arm_and_a_guardrail_blocks_a_harmful_one() {
    let app = spawn_app_with(&[("VERDICT_INGEST__RATE_LIMIT_PER_SECOND", "0")]).await;
    for e in experiments() {
        app.create_experiment(&e).await;
        assert_eq!(
            app.activate(e["key"].as_str().unwrap()).await.0,
            StatusCode::OK
        );
    }
    let client = app.create_key(&["client"]).await;
    simulate(&app, &client).await;
    let runner = app.app.runner();
    let aggregated = runner
        .run("aggregate", Trigger::Cli, None, None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(aggregated.outcome, verdict_store::RunOutcome::Succeeded);
    let evaluated = runner
        .run("evaluate", Trigger::Cli, None, None)
        .await
        .unwrap()
        .unwrap();
    let outcomes = evaluated.report["outcomes"].as_array().unwrap().clone();
    let outcome = |key: &str| {
        outcomes
            .iter()
            .find(|o| o["experiment"] == key)
            .unwrap_or_else(|| panic!("no outcome for {key}: {outcomes:?}"))
            .clone()
    };

    // Revenue: the arm that earns more per subject wins, though both convert alike.
    let revenue = outcome("revenue");
    assert_eq!(revenue["winner"], "boost", "{revenue}");
    let (_, results) = app
        .get("/v1/experiments/revenue/results", &app.admin_key)
        .await;
    assert_eq!(results["winner"], "boost", "{results}");

    // Latency (minimize): the faster arm wins.
    let latency = outcome("latency");
    assert_eq!(latency["winner"], "fast", "{latency}");

    // The harmful arm wins its primary metric but the guardrail blocks it, and says why.
    let guarded = outcome("guarded");
    assert_eq!(guarded["outcome"], "no_decision", "{guarded}");
    assert!(
        guarded["blockers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|b| b.as_str().is_some_and(|b| b.starts_with("guardrail"))),
        "{guarded}"
    );
    let (status, results) = app
        .get("/v1/experiments/guarded/results", &app.admin_key)
        .await;
    assert_eq!(status, StatusCode::OK, "{results}");
    assert_eq!(results["winner"], Value::Null);
    // Results list both metrics, the primary first: its decision shows the blocker with its
    // figures, and the guardrail metric its status per arm.
    let events: Vec<&str> = results["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["event"].as_str().unwrap())
        .collect();
    assert_eq!(events, ["signup", "crash"], "{results}");
    assert!(results["metrics"][1]["decision"].is_null(), "{results}");
    assert_eq!(results["metrics"][1]["role"], "guardrail", "{results}");
    assert!(results["metrics"][1]["guardrail"].is_array(), "{results}");
    let decision = &results["metrics"][0]["decision"];
    let blocker = decision["verdict"]["blockers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["reason"] == "guardrail")
        .unwrap_or_else(|| panic!("no guardrail blocker: {decision}"))
        .clone();
    assert_eq!(blocker["metric"], "crash", "{blocker}");
    assert_eq!(blocker["variant"], "bold", "{blocker}");
    assert!(
        blocker["figures"]["difference"].as_f64().unwrap() < 0.0,
        "{blocker}"
    );
    assert_eq!(decision["guardrails"][0]["metric"], "crash", "{decision}");
    let (_, crash) = app
        .get(
            "/v1/experiments/guarded/results?metric=crash",
            &app.admin_key,
        )
        .await;
    // `?metric=` narrows the list to that metric.
    assert_eq!(crash["metrics"].as_array().unwrap().len(), 1, "{crash}");
    assert_eq!(crash["metrics"][0]["role"], "guardrail", "{crash}");
    let conversions = |block: &Value| -> Vec<Value> {
        block["variants"]
            .as_array()
            .unwrap()
            .iter()
            .map(|row| row["conversions"].clone())
            .collect()
    };
    assert_eq!(
        conversions(&crash["metrics"][0]),
        conversions(&results["metrics"][1])
    );
    // The revenue results: the same statistics as for a rate, in the metric's own units.
    let (_, revenue) = app
        .get("/v1/experiments/revenue/results", &app.admin_key)
        .await;
    let boost = common::variant_row(&revenue, "boost");
    for field in [
        "estimate",
        "p_best",
        "expected_loss",
        "chance_to_beat_control",
    ] {
        assert!(boost[field].is_number(), "{field}: {boost}");
    }
    assert!(boost["always_valid_interval"].is_array(), "{boost}");
    assert!(revenue["srm"]["df"].is_number(), "{revenue}");
}

/// The relative gap between two figures, for floats read back through two different answers.
fn close(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => (x - y).abs() <= 1e-12 * x.abs().max(1.0),
        _ => a == b,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_evaluation_history_holds_each_arms_figures_at_each_evaluation_with_new_data() {
    let app = common::spawn_app().await;
    let mut body = common::ab_experiment("history");
    // Too few subjects to decide: every evaluation leaves it running.
    body["policy"] = json!({"min_assignments": 100000});
    let created = app.create_experiment(&body).await;
    assert_eq!(app.activate("history").await.0, StatusCode::OK);
    let client = app.create_key(&["client"]).await;
    let path = "/v1/experiments/history/results/history";
    let runner = app.app.runner();
    let evaluate = || async {
        for job in ["aggregate", "evaluate"] {
            let run = runner
                .run(job, Trigger::Cli, None, None)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(run.outcome, verdict_store::RunOutcome::Succeeded, "{job}");
        }
    };

    // Before any evaluation: no points.
    let (status, empty) = app.get(path, &app.admin_key).await;
    assert_eq!(status, StatusCode::OK, "{empty}");
    assert_eq!(empty["points"], json!([]), "{empty}");
    assert_eq!(empty["experiment"], "history");
    assert_eq!(empty["experiment_id"], created["id"]);
    assert_eq!(empty["metric"], "purchase");
    assert_eq!(empty["estimate"], "conversion_rate");

    // 60 subjects; every third one buys.
    let send = |from: usize, to: usize| {
        let (app, client) = (&app, &client);
        async move {
            let mut events = Vec::new();
            for i in from..to {
                let subject = format!("subject-{i}");
                let (status, a) = app.assignment("history", client, &subject, &[]).await;
                assert_eq!(status, StatusCode::OK, "{a}");
                if i % 3 == 0 {
                    events.push(json!({"experiment": "history", "subject_id": subject,
                        "event": "purchase", "event_id": format!("buy-{i}")}));
                }
            }
            let (status, report) = app.post_events(client, events).await;
            assert_eq!(status, StatusCode::OK, "{report}");
            assert_eq!(report["rejected"], 0, "{report}");
        }
    };
    send(0, 60).await;
    evaluate().await;
    let (status, history) = app.get(path, &app.admin_key).await;
    assert_eq!(status, StatusCode::OK, "{history}");
    let points = history["points"].as_array().unwrap().clone();
    assert_eq!(points.len(), 1, "{history}");
    let point = &points[0];
    assert!(point["at"].as_str().unwrap().ends_with('Z'), "{point}");
    assert!(point["aggregated_through"].as_u64().unwrap() > 0, "{point}");
    // The same figures as the results of the same data.
    let results = app.results("history").await;
    let arms = point["arms"].as_array().unwrap();
    assert_eq!(arms.len(), 2, "{point}");
    let mut subjects = 0;
    for arm in arms {
        let variant = arm["variant"].as_str().unwrap();
        let row = common::variant_row(&results, variant);
        assert_eq!(arm["subjects"], row["subjects"], "{variant}");
        subjects += arm["subjects"].as_u64().unwrap();
        let conversions = row["converted_subjects"].as_f64().unwrap();
        let estimate = arm["estimate"].as_f64().unwrap();
        assert!(close(
            &arm["estimate"],
            &json!(conversions / row["subjects"].as_f64().unwrap())
        ));
        assert!(close(&arm["estimate"], &row["estimate"]), "{arm} {row}");
        assert!(close(&arm["prob_best"], &row["p_best"]), "{arm} {row}");
        for i in 0..2 {
            assert!(
                close(&arm["interval"][i], &row["credible_interval"][i]),
                "{arm} {row}"
            );
        }
        let (lo, hi) = (
            arm["interval"][0].as_f64().unwrap(),
            arm["interval"][1].as_f64().unwrap(),
        );
        assert!(lo < estimate && estimate < hi, "{arm}");
    }
    assert_eq!(subjects, 60);
    let total_p: f64 = arms.iter().map(|a| a["prob_best"].as_f64().unwrap()).sum();
    assert!((total_p - 1.0).abs() < 1e-9, "{total_p}");

    // Another evaluation of the same data adds nothing.
    evaluate().await;
    let (_, again) = app.get(path, &app.admin_key).await;
    assert_eq!(again["points"].as_array().unwrap().len(), 1, "{again}");

    // New subjects: a second point, after the first.
    send(60, 90).await;
    evaluate().await;
    let (_, later) = app.get(path, &app.admin_key).await;
    let points = later["points"].as_array().unwrap();
    assert_eq!(points.len(), 2, "{later}");
    assert_eq!(points[0], *point, "the first point is kept as it was");
    let subjects: u64 = points[1]["arms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["subjects"].as_u64().unwrap())
        .sum();
    assert_eq!(subjects, 90);
    assert!(points[1]["aggregated_through"].as_u64() > point["aggregated_through"].as_u64());
    let at = |p: &Value| {
        let rfc3339 = &time::format_description::well_known::Rfc3339;
        time::OffsetDateTime::parse(p["at"].as_str().unwrap(), rfc3339).unwrap()
    };
    assert!(at(&points[1]) > at(point), "{later}");

    // Right `results:read`, and the experiment must exist.
    let viewer = app.create_key(&["viewer"]).await;
    assert_eq!(app.get(path, &viewer).await.0, StatusCode::OK);
    let internal = app.create_key(&["internal"]).await;
    let (status, denied) = app.get(path, &internal).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{denied}");
    assert_eq!(
        denied["error"]["details"][0]["missing_right"],
        "results:read"
    );
    let (status, missing) = app
        .get("/v1/experiments/nope/results/history", &app.admin_key)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{missing}");
    assert_eq!(common::error_code(&missing), "experiment_not_found");
}
