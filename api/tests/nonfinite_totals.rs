//! Totals stored before event values were bounded: one value ≳ 1.3e154 made a sum of squares
//! infinite, and rollups only ever add. Results flag the metric instead of serving `null`
//! where a number is documented, and no decision is made on it: the decision names the
//! `totals_not_finite` blocker. The aggregation job then recomputes such totals from the
//! raw events, without the values ingestion now rejects, when they are all retained; when
//! retention deleted some, the metric stays flagged.

mod common;

use std::collections::BTreeMap;

use common::{TestApp, ab_experiment, first_metric, spawn_app, variant_row};
use reqwest::StatusCode;
use serde_json::{Value, json};
use time::{Duration, OffsetDateTime};
use verdict_domain::NewEvent;
use verdict_store::RetentionFilter;

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

/// An experiment `revenue` (a `sum` metric) with 20 assigned subjects, each with one
/// `purchase` event written to the store directly, as ingestion accepted them before the
/// bound existed: the first subject's is 1.5e154, the others' 10 + n. Events are received
/// `received_ago` before now. Answers the experiment id and each event as (subject, variant,
/// value).
async fn overflowed_experiment(
    app: &TestApp,
    received_ago: Duration,
) -> (String, Vec<(String, String, f64)>) {
    let mut body = ab_experiment("revenue");
    body["primary_metric"] = json!({"event": "purchase", "kind": "sum"});
    let created = app.create_experiment(&body).await;
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(app.activate("revenue").await.0, StatusCode::OK);
    let client = app.create_key(&["client"]).await;
    let mut written = Vec::new();
    for i in 0..20 {
        let subject = format!("user-{i}");
        let (status, a) = app.assignment("revenue", &client, &subject, &[]).await;
        assert_eq!(status, StatusCode::OK, "{a}");
        let value = if i == 0 { 1.5e154 } else { 10.0 + i as f64 };
        written.push((subject, a["variant"].as_str().unwrap().to_owned(), value));
    }
    assert!(
        written.iter().any(|(_, v, _)| *v != written[0].1),
        "both variants assigned"
    );
    let now = OffsetDateTime::now_utc();
    let events = written
        .iter()
        .enumerate()
        .map(|(n, (subject, _, value))| NewEvent {
            experiment_id: id.clone(),
            event_id: format!("e-{n}"),
            subject: subject.clone(),
            variant: None,
            event: "purchase".to_owned(),
            value: *value,
            ts: now,
            received_at: now - received_ago,
            meta: None,
        })
        .collect();
    app.store.append_events(events).await.unwrap();
    (id, written)
}

/// Run the `aggregate` job through the internal API, as a cron operator does; its report.
async fn run_aggregate_job(app: &TestApp) -> Value {
    let internal = app.create_key(&["internal"]).await;
    let (status, run) = app
        .post_json("/v1/internal/jobs/aggregate/run", &internal, &json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{run}");
    assert_eq!(run["outcome"], "succeeded", "{run}");
    run["report"].clone()
}

#[tokio::test]
async fn results_flag_overflowed_totals_until_the_aggregation_job_recomputes_them() {
    let app = spawn_app().await;
    let (id, written) = overflowed_experiment(&app, Duration::ZERO).await;
    let (_, overflowing_variant, _) = written[0].clone();
    let other = written
        .iter()
        .find(|(_, v, _)| *v != overflowing_variant)
        .unwrap()
        .1
        .clone();

    // Rolled up (without the job's repair): flagged, and no decision.
    let results = app.results("revenue").await;
    assert_eq!(
        first_metric(&results)["totals_not_finite"],
        true,
        "{results}"
    );
    let flagged = variant_row(&results, &overflowing_variant);
    assert_eq!(flagged["totals_not_finite"], true, "{flagged}");
    assert!(flagged["sum"].is_null(), "{flagged}");
    assert!(flagged["subjects"].as_u64().unwrap() >= 1, "{flagged}");
    let fine = variant_row(&results, &other);
    assert_eq!(fine["totals_not_finite"], false, "{fine}");
    assert!(fine["sum"].as_f64().unwrap() > 0.0, "{fine}");
    // No decision, and the decision names why rather than failing.
    let verdict = &first_metric(&results)["decision"]["verdict"];
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
    let series_path = "/v1/experiments/revenue/timeseries?metric=purchase&granularity=day";
    let (status, series) = app.get(series_path, &app.admin_key).await;
    assert_eq!(status, StatusCode::OK, "{series}");
    assert!(no_non_finite(&series), "{series}");

    // The aggregation job recomputes them from the raw events, leaving out the one value
    // beyond `ingest.max_abs_value`.
    let report = run_aggregate_job(&app).await;
    assert_eq!(
        report["totals_repaired"],
        json!([{"experiment_id": id, "dropped_events": 1}]),
        "{report}"
    );
    assert_eq!(report["totals_not_repaired"], json!([]), "{report}");

    // The figures are those of the remaining events, per variant.
    let mut expected: BTreeMap<&str, (u64, u64, f64, f64)> = BTreeMap::new();
    for (n, (_, variant, value)) in written.iter().enumerate() {
        let e = expected.entry(variant.as_str()).or_default();
        e.0 += 1;
        if n > 0 {
            e.1 += 1;
            e.2 += value;
            e.3 += value * value;
        }
    }
    let results = app.results("revenue").await;
    assert_eq!(
        first_metric(&results)["totals_not_finite"],
        false,
        "{results}"
    );
    assert!(no_non_finite(&results), "{results}");
    assert!(first_metric(&results)["decision"].is_object(), "{results}");
    for (variant, (subjects, converted, sum, _)) in &expected {
        let row = variant_row(&results, variant);
        assert_eq!(row["totals_not_finite"], false, "{row}");
        assert_eq!(row["subjects"], *subjects, "{row}");
        assert_eq!(row["conversions"], *converted, "{row}");
        assert_eq!(row["converted_subjects"], *converted, "{row}");
        assert_eq!(row["sum"].as_f64(), Some(*sum), "{row}");
    }
    let (status, series) = app.get(series_path, &app.admin_key).await;
    assert_eq!(status, StatusCode::OK, "{series}");
    assert!(no_non_finite(&series), "{series}");
    for s in series["series"].as_array().unwrap() {
        let (_, converted, sum, sum_sq) = expected[s["variant"].as_str().unwrap()];
        let points = s["points"].as_array().unwrap();
        let total = |field: &str| {
            points
                .iter()
                .map(|p| p[field].as_f64().unwrap())
                .sum::<f64>()
        };
        assert_eq!(total("count"), converted as f64, "{s}");
        assert_eq!(total("sum"), sum, "{s}");
        assert_eq!(total("sum_of_squares"), sum_sq, "{s}");
    }

    // Nothing left to repair.
    let again = run_aggregate_job(&app).await;
    assert_eq!(again["totals_repaired"], json!([]), "{again}");
}

#[tokio::test]
async fn overflowed_totals_stay_flagged_when_retention_deleted_raw_events() {
    let app = spawn_app().await;
    let (id, _) = overflowed_experiment(&app, Duration::days(10)).await;
    let results = app.results("revenue").await;
    assert_eq!(
        first_metric(&results)["totals_not_finite"],
        true,
        "{results}"
    );

    // Retention deletes the raw events received more than a day ago (all of them here),
    // rolled up already: the totals can no longer be recomputed.
    let deleted = app
        .store
        .delete_events(
            &RetentionFilter {
                before: OffsetDateTime::now_utc() - Duration::days(1),
                only: Some(id.clone()),
                except: Vec::new(),
            },
            1_000,
            None,
        )
        .await
        .unwrap();
    assert_eq!(deleted, 20);
    let report = run_aggregate_job(&app).await;
    assert_eq!(report["totals_repaired"], json!([]), "{report}");
    assert_eq!(
        report["totals_not_repaired"],
        json!([{"experiment_id": id, "raw_events": 0, "rolled_up_events": 20}]),
        "{report}"
    );
    let results = app.results("revenue").await;
    assert_eq!(
        first_metric(&results)["totals_not_finite"],
        true,
        "{results}"
    );
    assert_eq!(
        first_metric(&results)["decision"]["verdict"]["blockers"][0]["reason"],
        "totals_not_finite",
        "{results}"
    );
    assert!(no_non_finite(&results), "{results}");
}
