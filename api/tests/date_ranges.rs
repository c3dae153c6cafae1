//! `from` / `to` of results and time series as dates: whole UTC days, as experimenters
//! write them. On both backends (`VERDICT_TEST_BACKEND`).

mod common;

use common::{TestApp, ab_experiment, spawn_app};
use reqwest::StatusCode;
use serde_json::{Value, json};
use time::format_description::well_known::Rfc3339;
use time::{Date, Duration, OffsetDateTime, Time};

/// Purchases counted in a results body, over every arm.
fn conversions(results: &Value) -> u64 {
    results["metrics"][0]["variants"]
        .as_array()
        .expect("variants")
        .iter()
        .map(|r| r["conversions"].as_u64().expect("conversions"))
        .sum()
}

async fn results(app: &TestApp, query: &str) -> Value {
    let (status, body) = app
        .get(
            &format!("/v1/experiments/checkout/results?{query}"),
            &app.admin_key,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{query}: {body}");
    body
}

#[tokio::test]
async fn a_date_takes_in_its_whole_utc_day_at_either_end() {
    let app = spawn_app().await;
    app.create_experiment(&ab_experiment("checkout")).await;
    let (status, body) = app.activate("checkout").await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // Two subjects: one buys just after its assignment, the other at the very start of the
    // next UTC day (the first instant a `to` of the first day leaves out).
    let mut first_day: Option<Date> = None;
    let mut events = Vec::new();
    for (i, subject) in ["early", "late"].into_iter().enumerate() {
        let (status, a) = app
            .assignment("checkout", &app.admin_key, subject, &[])
            .await;
        assert_eq!(status, StatusCode::OK, "{a}");
        let assigned_at =
            OffsetDateTime::parse(a["assigned_at"].as_str().expect("assigned_at"), &Rfc3339)
                .expect("assigned_at");
        let day = *first_day.get_or_insert((assigned_at + Duration::seconds(1)).date());
        let ts = if i == 0 {
            assigned_at + Duration::seconds(1)
        } else {
            (day + Duration::DAY).with_time(Time::MIDNIGHT).assume_utc()
        };
        events.push(
            json!({"event_id": subject, "experiment": "checkout", "subject_id": subject,
                           "event": "purchase", "ts": ts.format(&Rfc3339).unwrap()}),
        );
    }
    let (status, report) = app.post_events(&app.admin_key, events).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["accepted"], 2, "{report}");
    app.aggregate().await;

    let day = first_day.expect("a first day");
    let next = day + Duration::DAY;
    assert_eq!(conversions(&results(&app, "").await), 2);
    assert_eq!(
        conversions(&results(&app, &format!("from={day}&to={day}")).await),
        1,
        "the first day alone"
    );
    assert_eq!(
        conversions(&results(&app, &format!("from={next}")).await),
        1,
        "from the next day"
    );
    // The events by type follow the range too.
    let first_only = results(&app, &format!("from={day}&to={day}")).await;
    assert_eq!(first_only["totals"]["events"], 1, "{first_only}");
    let all = results(&app, "").await;
    assert_eq!(all["totals"]["events"], 2, "{all}");
    let purchases: u64 = all["variants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["events"]["purchase"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(purchases, 2, "{all}");
    assert_eq!(
        conversions(&results(&app, &format!("from={day}&to={next}")).await),
        2,
        "both days"
    );
    // A date and the times it stands for give the same answer.
    let start = day.with_time(Time::MIDNIGHT).assume_utc();
    let same = format!(
        "from={}&to={}",
        start.format(&Rfc3339).unwrap().replace('+', "%2B"),
        (start + Duration::DAY)
            .format(&Rfc3339)
            .unwrap()
            .replace('+', "%2B")
    );
    assert_eq!(
        results(&app, &same).await["metrics"],
        results(&app, &format!("from={day}&to={day}")).await["metrics"]
    );

    // Time series: buckets of the first day only.
    let (status, series) = app
        .get(
            &format!("/v1/experiments/checkout/timeseries?granularity=hour&from={day}&to={day}"),
            &app.admin_key,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{series}");
    let counted: u64 = series["series"]
        .as_array()
        .expect("series")
        .iter()
        .flat_map(|s| s["points"].as_array().expect("points"))
        .map(|p| p["count"].as_u64().expect("count"))
        .sum();
    assert_eq!(counted, 1, "{series}");

    // Anything else is a 400 naming the parameter.
    for bad in ["from=2026-13-01", "to=12%2F03%2F2026", "from=2026-12-3"] {
        let (status, body) = app
            .get(
                &format!("/v1/experiments/checkout/results?{bad}"),
                &app.admin_key,
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
        assert_eq!(body["error"]["code"], "invalid_query", "{bad}: {body}");
    }
}
