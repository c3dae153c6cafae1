//! Totals stored before event values were bounded: one value ≳ 1.3e154 made a sum of squares
//! infinite, and rollups only ever add. Results flag the metric instead of serving `null`
//! where a number is documented, and no decision is made on it: the decision names the
//! `totals_not_finite` blocker.

mod common;

use common::{ab_experiment, spawn_app, variant_row};
use reqwest::StatusCode;
use serde_json::{Value, json};
use verdict_domain::NewEvent;

/// True when every number in `v` is finite (serde_json writes a non-finite one as `null`,
/// so this also means no number turned into `null`).
fn no_non_finite(v: &Value) -> bool {
    match v {
        Value::Number(n) => n.as_f64().is_some_and(f64::is_finite),
        Value::Array(a) => a.iter().all(no_non_finite),
        Value::Object(o) => o.values().all(no_non_finite),
        _ => true,
    }
}

#[tokio::test]
async fn results_flag_a_metric_whose_stored_totals_overflowed_and_no_decision_is_made() {
    let app = spawn_app().await;
    let mut body = ab_experiment("revenue");
    body["primary_metric"] = json!({"event": "purchase", "kind": "sum"});
    let created = app.create_experiment(&body).await;
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(app.activate("revenue").await.0, StatusCode::OK);
    let client = app.create_key(&["client"]).await;
    let mut variants = Vec::new();
    for i in 0..20 {
        let subject = format!("user-{i}");
        let (status, a) = app.assignment("revenue", &client, &subject, &[]).await;
        assert_eq!(status, StatusCode::OK, "{a}");
        variants.push((subject, a["variant"].as_str().unwrap().to_owned()));
    }
    let (overflowing_subject, overflowing_variant) = variants[0].clone();
    let other = variants
        .iter()
        .find(|(_, v)| *v != overflowing_variant)
        .expect("both variants assigned")
        .1
        .clone();

    // Written to the store directly, as ingestion accepted it before the bound existed.
    let now = time::OffsetDateTime::now_utc();
    let event = |n: usize, subject: &str, value: f64| NewEvent {
        experiment_id: id.clone(),
        event_id: format!("e-{n}"),
        subject: subject.to_owned(),
        variant: None,
        event: "purchase".to_owned(),
        value,
        ts: now,
        received_at: now,
        meta: None,
    };
    let mut events = vec![event(0, &overflowing_subject, 1.5e154)];
    for (n, (subject, _)) in variants.iter().enumerate().skip(1) {
        events.push(event(n, subject, 10.0 + n as f64));
    }
    app.store.append_events(events).await.unwrap();

    let results = app.results("revenue").await;
    assert_eq!(results["totals_not_finite"], true, "{results}");
    let flagged = variant_row(&results, &overflowing_variant);
    assert_eq!(flagged["totals_not_finite"], true, "{flagged}");
    assert!(flagged["sum"].is_null(), "{flagged}");
    assert!(flagged["subjects"].as_u64().unwrap() >= 1, "{flagged}");
    let fine = variant_row(&results, &other);
    assert_eq!(fine["totals_not_finite"], false, "{fine}");
    assert!(fine["sum"].as_f64().unwrap() > 0.0, "{fine}");
    // No decision, and the decision names why rather than failing.
    let verdict = &results["decision"]["verdict"];
    assert_eq!(verdict["outcome"], "no_decision", "{results}");
    assert!(
        verdict["blockers"].as_array().unwrap().contains(&json!({
            "reason": "totals_not_finite",
            "metric": "purchase",
            "variants": [overflowing_variant],
        })),
        "{verdict}"
    );
    assert!(no_non_finite(&results), "{results}");

    let (status, series) = app
        .get(
            "/v1/experiments/revenue/timeseries?metric=purchase&granularity=day",
            &app.admin_key,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{series}");
    assert!(no_non_finite(&series), "{series}");
}
