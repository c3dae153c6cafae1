//! Metric windows and an exposure event (SPEC §2) over HTTP: results and the evaluation job
//! count only exposed subjects, from their first exposure, and only metric events within the
//! metric's window of it. On both backends (`VERDICT_TEST_BACKEND`).

mod common;

use std::collections::HashMap;

use common::{first_metric, spawn_app, variant_row};
use reqwest::StatusCode;
use serde_json::{Value, json};
use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime};
use verdict_domain::Scope;

const SUBJECTS: usize = 60;
const MIN_CONVERSIONS: u64 = 15;

#[derive(Debug, Default)]
struct Expected {
    /// Subjects assigned to the variant.
    assigned: u64,
    /// Subjects who sent `viewed` (the analysed population).
    exposed: u64,
    /// Exposed subjects with a `purchase` within an hour of their exposure.
    converted: u64,
}

fn at(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap()
}

#[tokio::test]
async fn results_and_evaluation_count_exposed_subjects_within_the_metric_window() {
    let app = spawn_app().await;
    let created = app
        .create_experiment(&json!({
            "key": "onboarding",
            "name": "Onboarding",
            "variants": [
                {"key": "control", "weight": 0.5, "config": {"steps": 3}},
                {"key": "treatment", "weight": 0.5, "config": {"steps": 2}}
            ],
            "assignment": {"salt": "fixed-test-salt"},
            "primary_metric": {"event": "purchase", "kind": "binomial", "window_hours": 1},
            "exposure_event": "viewed",
            "policy": {"min_assignments": 1, "min_conversions": MIN_CONVERSIONS}
        }))
        .await;
    assert_eq!(created["exposure_event"], "viewed", "{created}");
    assert_eq!(created["primary_metric"]["window_hours"], 1, "{created}");
    let (status, body) = app.activate("onboarding").await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // Every subject buys 20 minutes after its assignment. Even-numbered subjects see the
    // page 10 minutes after it; every third of those buys only 2 hours after it instead
    // (outside the hour from its exposure); every fourth also buys before its exposure
    // (not counted). Odd-numbered subjects never see it: not in the population.
    let key = &app.admin_key;
    let mut expected: HashMap<String, Expected> = HashMap::new();
    let mut events = Vec::new();
    for i in 0..SUBJECTS {
        let subject = format!("user-{i}");
        let (status, a) = app.assignment("onboarding", key, &subject, &[]).await;
        assert_eq!(status, StatusCode::OK, "{a}");
        let variant = a["variant"].as_str().expect("variant").to_owned();
        let assigned_at = OffsetDateTime::parse(a["assigned_at"].as_str().unwrap(), &Rfc3339)
            .expect("assigned_at");
        let exp = expected.entry(variant).or_default();
        exp.assigned += 1;
        let event = |name: &str, id: String, minutes: i64| -> Value {
            json!({"event_id": id, "experiment": "onboarding", "subject_id": subject,
                   "event": name, "ts": at(assigned_at + Duration::minutes(minutes))})
        };
        let exposed = i % 2 == 0;
        let late = exposed && i % 3 == 0;
        if exposed {
            exp.exposed += 1;
            events.push(event("viewed", format!("v-{i}"), 10));
        }
        if i % 4 == 0 {
            events.push(event("purchase", format!("early-{i}"), 5));
        }
        if late {
            events.push(event("purchase", format!("p-{i}"), 120));
        } else {
            events.push(event("purchase", format!("p-{i}"), 20));
            exp.converted += u64::from(exposed);
        }
    }
    let (status, report) = app.post_events(key, events.clone()).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["accepted"], events.len(), "{report}");
    // The setup tells the two countings apart: counting every assigned subject, each arm
    // would pass min_conversions (everyone buys); counting as the experiment says, none does.
    assert_eq!(expected.len(), 2);
    for (variant, exp) in &expected {
        assert!(exp.assigned >= MIN_CONVERSIONS, "{variant}: {exp:?}");
        assert!(exp.converted < MIN_CONVERSIONS, "{variant}: {exp:?}");
        assert!(
            exp.converted > 0 && exp.converted < exp.exposed,
            "{variant}: {exp:?}"
        );
    }

    // Results: counted from raw events at query time (before any aggregation run, too).
    let (status, results) = app.get("/v1/experiments/onboarding/results", key).await;
    assert_eq!(status, StatusCode::OK, "{results}");
    assert_eq!(first_metric(&results)["source"], "raw_events", "{results}");
    assert_eq!(first_metric(&results)["event"], "purchase");
    for (variant, exp) in &expected {
        let row = variant_row(&results, variant);
        assert_eq!(row["subjects"], exp.exposed, "{variant}: {row}");
        assert_eq!(row["converted_subjects"], exp.converted, "{variant}: {row}");
        assert_eq!(row["conversions"], exp.converted, "{variant}: {row}");
        assert_eq!(row["exposed_subjects"], exp.exposed, "{variant}: {row}");
        assert_eq!(row["exposures"], exp.exposed, "{variant}: {row}");
        let rate = row["rate"].as_f64().expect("rate");
        assert!((rate - exp.converted as f64 / exp.exposed as f64).abs() < 1e-12);
    }
    // The same after aggregation: the rollups cannot apply a window or an exposure.
    assert_eq!(
        first_metric(&app.results("onboarding").await)["variants"],
        first_metric(&results)["variants"]
    );

    // The evaluation job reads the same figures: too few conversions in every arm.
    let experiment = app
        .store
        .get_experiment(&Scope::default(), "onboarding")
        .await
        .unwrap()
        .expect("experiment");
    let outcome = verdict_aggregator::evaluate::evaluate_one(
        &app.store,
        &app.cache,
        &experiment,
        OffsetDateTime::now_utc(),
    )
    .await
    .expect("evaluation");
    assert_eq!(outcome.outcome, "no_decision", "{outcome:?}");
    assert!(outcome.blockers.contains(&"min_conversions"), "{outcome:?}");
}
