//! The experiment lifecycle over HTTP: create, activate, assign, ingest, read results, pause,
//! force, target, declare a winner.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use common::{TestApp, ab_experiment, first_metric, spawn_app, variant_row};
use reqwest::StatusCode;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

const SUBJECTS: usize = 1_000;

fn control_config() -> Value {
    json!({"color": "blue", "size": 1})
}

fn treatment_config() -> Value {
    json!({"color": "green", "size": 2})
}

fn config_of(variant: &str) -> Value {
    match variant {
        "control" => control_config(),
        "treatment" => treatment_config(),
        other => panic!("unexpected variant {other}"),
    }
}

/// `(variant, assigned_at)` of each subject, fetched with up to 25 requests in flight.
async fn assign_all(app: &Arc<TestApp>, key: &str, subjects: &[String]) -> Vec<(String, String)> {
    let mut out = Vec::with_capacity(subjects.len());
    for chunk in subjects.chunks(25) {
        let mut tasks = tokio::task::JoinSet::new();
        for (offset, subject) in chunk.iter().enumerate() {
            let (app, key, subject) = (app.clone(), key.to_owned(), subject.clone());
            tasks.spawn(async move {
                let (status, body) = app.assignment("checkout", &key, &subject, &[]).await;
                (offset, subject, status, body)
            });
        }
        let mut got: Vec<(usize, String, StatusCode, Value)> = tasks.join_all().await;
        got.sort_by_key(|g| g.0);
        for (_, subject, status, body) in got {
            assert_eq!(status, StatusCode::OK, "{subject}: {body}");
            assert_eq!(body["experiment"], "checkout");
            assert_eq!(body["in_experiment"], true, "{subject}: {body}");
            assert_eq!(body["reason"], "assigned", "{subject}: {body}");
            assert_eq!(body["winner"], Value::Null);
            let variant = body["variant"].as_str().expect("variant").to_owned();
            assert_eq!(body["config"], config_of(&variant), "{subject}: {body}");
            let at = body["assigned_at"]
                .as_str()
                .expect("assigned_at")
                .to_owned();
            out.push((variant, at));
        }
    }
    out
}

fn parse_time(s: &str) -> OffsetDateTime {
    OffsetDateTime::parse(s, &Rfc3339).unwrap_or_else(|e| panic!("{s} is not RFC 3339: {e}"))
}

/// Assert a batch was fully accepted, item by item.
fn assert_all_accepted(report: &Value, sent: &[Value]) {
    assert_eq!(report["accepted"], sent.len(), "{report}");
    assert_eq!(report["duplicates"], 0, "{report}");
    assert_eq!(report["rejected"], 0, "{report}");
    let results = report["results"].as_array().expect("results");
    assert_eq!(results.len(), sent.len());
    for (i, (r, e)) in results.iter().zip(sent).enumerate() {
        assert_eq!(r["index"], i);
        assert_eq!(r["status"], "accepted", "{r}");
        assert_eq!(r["event_id"], e["event_id"], "{r}");
    }
}

#[derive(Default, Debug, Clone, PartialEq)]
struct Expected {
    conversions: u64,
    converted: HashSet<String>,
    exposures: u64,
    exposed: HashSet<String>,
}

#[tokio::test]
async fn the_full_lifecycle_assigns_sticky_variants_and_counts_exactly_what_was_sent() {
    let app = Arc::new(spawn_app().await);
    let created = app.create_experiment(&ab_experiment("checkout")).await;
    assert_eq!(created["status"], "draft");
    assert_eq!(created["version"], 1);
    assert_eq!(created["variants"][0]["config"], control_config());
    assert_eq!(created["variants"][1]["weight"], 0.5);
    // A draft has results (all zeros) but no days running yet.
    let draft = app.results("checkout").await;
    assert_eq!(draft["days_running"], Value::Null, "{draft}");

    let (status, body) = app.activate("checkout").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["changed"], true);
    assert_eq!(body["experiment"]["status"], "running");
    assert!(body["experiment"]["started_at"].is_string(), "{body}");

    let client = app.create_key(&["client"]).await;
    let subjects: Vec<String> = (0..SUBJECTS).map(|i| format!("user-{i}")).collect();

    // Assign everyone; the split follows the 50/50 weights.
    let first = assign_all(&app, &client, &subjects).await;
    let treated = first.iter().filter(|(v, _)| v == "treatment").count();
    let share = treated as f64 / SUBJECTS as f64;
    assert!(
        (share - 0.5).abs() <= 0.03,
        "treatment got {treated} of {SUBJECTS} subjects"
    );

    // Sticky: a second call gives the identical variant and assigned_at.
    let second = assign_all(&app, &client, &subjects).await;
    assert_eq!(first, second);

    // Events. Expected figures are computed from exactly what is sent and accepted.
    let mut expected: HashMap<String, Expected> = HashMap::new();
    let mut events = Vec::new();
    for (i, (subject, (variant, assigned_at))) in subjects.iter().zip(&first).enumerate() {
        let exp = expected.entry(variant.clone()).or_default();
        if i % 2 == 0 {
            events.push(
                json!({"event_id": format!("x-{i}"), "experiment": "checkout",
                               "subject_id": subject, "event": "exposure"}),
            );
            exp.exposures += 1;
            exp.exposed.insert(subject.clone());
        }
        if i % 3 == 0 {
            let mut e = json!({"event_id": format!("p-{i}-a"), "experiment": "checkout",
                               "subject_id": subject, "event": "purchase"});
            if i % 9 == 0 {
                // The right variant may be named; it is validated, not required.
                e["variant"] = json!(variant);
            }
            events.push(e);
            exp.conversions += 1;
            exp.converted.insert(subject.clone());
        }
        if i % 6 == 0 {
            events.push(
                json!({"event_id": format!("p-{i}-b"), "experiment": "checkout",
                               "subject_id": subject, "event": "purchase", "value": 2.5}),
            );
            exp.conversions += 1;
        }
        if i % 7 == 0 {
            // Before the subject's assignment: stored, but never counted.
            let early = parse_time(assigned_at) - time::Duration::hours(1);
            events.push(
                json!({"event_id": format!("early-{i}"), "experiment": "checkout",
                               "subject_id": subject, "event": "purchase",
                               "ts": early.format(&Rfc3339).unwrap()}),
            );
        }
    }
    assert!(events.len() > 1_000, "the events span several batches");
    for batch in events.chunks(400) {
        let (status, report) = app.post_events(&client, batch.to_vec()).await;
        assert_eq!(status, StatusCode::OK, "{report}");
        assert_all_accepted(&report, batch);
    }

    // Duplicates: re-sent ids are acknowledged as duplicates and stored once, also when
    // repeated inside one batch.
    let mut again: Vec<Value> = events[..20].to_vec();
    let (v1, _) = &first[1];
    let fresh = json!({"event_id": "dup-in-batch", "experiment": "checkout",
                       "subject_id": "user-1", "event": "purchase"});
    again.push(fresh.clone());
    again.push(fresh);
    let exp = expected.get_mut(v1).unwrap();
    exp.conversions += 1;
    exp.converted.insert("user-1".into());
    let (status, report) = app.post_events(&client, again.clone()).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["accepted"], 1, "{report}");
    assert_eq!(report["duplicates"], 21, "{report}");
    assert_eq!(report["rejected"], 0, "{report}");
    let statuses: Vec<&str> = report["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    let mut want = vec!["duplicate"; 20];
    want.extend(["accepted", "duplicate"]);
    assert_eq!(statuses, want);
    assert_eq!(report["results"][0]["event_id"], again[0]["event_id"]);

    // Results match what was sent, per variant.
    let check_results = |results: Value| {
        assert_eq!(results["experiment"], "checkout");
        assert_eq!(first_metric(&results)["event"], "purchase");
        assert_eq!(results["status"], "running");
        // Started moments ago: a small fraction of a day.
        let days = results["days_running"].as_f64().expect("days_running");
        assert!((0.0..0.01).contains(&days), "{results}");
        for variant in ["control", "treatment"] {
            let row = variant_row(&results, variant);
            let exp = &expected[variant];
            let subjects = first.iter().filter(|(v, _)| v == variant).count() as u64;
            assert_eq!(row["subjects"], subjects, "{variant}: {row}");
            assert_eq!(row["conversions"], exp.conversions, "{variant}: {row}");
            assert_eq!(
                row["converted_subjects"],
                exp.converted.len() as u64,
                "{variant}: {row}"
            );
            assert_eq!(row["exposures"], exp.exposures, "{variant}: {row}");
            assert_eq!(
                row["exposed_subjects"],
                exp.exposed.len() as u64,
                "{variant}: {row}"
            );
            let rate = row["rate"].as_f64().expect("rate");
            assert!((rate - exp.converted.len() as f64 / subjects as f64).abs() < 1e-9);
            assert_eq!(row["control"], variant == "control");
            let [lo, hi] = [0, 1].map(|i| row["credible_interval"][i].as_f64().expect("interval"));
            assert!(lo <= rate && rate <= hi, "{variant}: {row}");
        }
        // The statistics come with the figures: P(best) over the arms sums to 1.
        let p_best: f64 = first_metric(&results)["variants"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["p_best"].as_f64().expect("p_best"))
            .sum();
        assert!((p_best - 1.0).abs() < 1e-9, "{results}");
        assert_eq!(first_metric(&results)["source"], "rollups");
        assert!(results["srm"]["p_value"].is_f64(), "{results}");
        // Every event type per variant, beside the metrics (early events not counted).
        let (mut subjects_total, mut events_total) = (0, 0);
        for (i, variant) in ["control", "treatment"].into_iter().enumerate() {
            let summary = &results["variants"][i];
            let exp = &expected[variant];
            let subjects = first.iter().filter(|(v, _)| v == variant).count() as u64;
            assert_eq!(summary["variant"], variant, "{summary}");
            assert_eq!(summary["subjects"], subjects, "{summary}");
            assert_eq!(summary["exposed_subjects"], exp.exposed.len() as u64);
            assert_eq!(
                summary["events"],
                json!({"exposure": exp.exposures, "purchase": exp.conversions}),
                "{summary}"
            );
            assert_eq!(summary["total_events"], exp.exposures + exp.conversions);
            subjects_total += subjects;
            events_total += exp.exposures + exp.conversions;
        }
        assert_eq!(
            results["totals"]["subjects"], subjects_total,
            "{}",
            results["totals"]
        );
        assert_eq!(results["totals"]["events"], events_total);
    };
    // Results read the rollups: as of the last aggregation run.
    app.aggregate().await;
    let (status, results) = app.get("/v1/experiments/checkout/results", &client).await;
    assert_eq!(status, StatusCode::OK, "{results}");
    check_results(results);

    // Rejections: per item, with a code; nothing of them is counted.
    let wrong = if first[0].0 == "control" {
        "treatment"
    } else {
        "control"
    };
    let (status, report) = app
        .post_events(
            &client,
            vec![
                json!({"event_id": "r-1", "experiment": "checkout",
                       "subject_id": "never-assigned", "event": "purchase"}),
                json!({"event_id": "r-2", "experiment": "checkout", "subject_id": "user-0",
                       "event": "purchase", "variant": wrong}),
                json!({"event_id": "r-3", "experiment": "no-such-experiment",
                       "subject_id": "user-0", "event": "purchase"}),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["accepted"], 0, "{report}");
    assert_eq!(report["rejected"], 3, "{report}");
    let codes: Vec<(&str, &str)> = report["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["status"].as_str().unwrap(), r["code"].as_str().unwrap()))
        .collect();
    assert_eq!(
        codes,
        vec![
            ("rejected", "not_in_experiment"),
            ("rejected", "variant_mismatch"),
            ("rejected", "unknown_experiment"),
        ]
    );
    check_results(app.results("checkout").await);

    // A metric the experiment does not have is 404, naming the ones it has (not zeros).
    for path in [
        "/v1/experiments/checkout/results?metric=purchse",
        "/v1/experiments/checkout/timeseries?metric=purchse",
    ] {
        let (status, body) = app.get(path, &client).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {body}");
        assert_eq!(common::error_code(&body), "metric_not_found");
        assert_eq!(body["error"]["details"][0]["metric"], "purchase", "{body}");
    }

    // The same events as a daily time series: the day buckets add up to the event counts.
    let (status, series) = app
        .get(
            "/v1/experiments/checkout/timeseries?metric=purchase&granularity=day",
            &client,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{series}");
    assert_eq!(series["granularity"], "day");
    for variant in ["control", "treatment"] {
        let s = series["series"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["variant"] == variant)
            .unwrap_or_else(|| panic!("no series for {variant}: {series}"));
        let total: u64 = s["points"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["count"].as_u64().unwrap())
            .sum();
        assert_eq!(total, expected[variant].conversions, "{variant}: {series}");
    }
}

/// `POST /v1/assignments` for `subject`: its assignments.
async fn bulk(app: &TestApp, key: &str, subject: &str) -> Vec<Value> {
    let (status, body) = app
        .post_json("/v1/assignments", key, &json!({ "subject_id": subject }))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["assignments"].as_array().expect("assignments").clone()
}

#[tokio::test]
async fn assignments_follow_the_experiment_through_pause_forcing_and_a_manual_winner() {
    let app = spawn_app().await;
    app.create_experiment(&ab_experiment("checkout")).await;
    app.create_experiment(&ab_experiment("draft-only")).await;
    assert_eq!(app.activate("checkout").await.0, StatusCode::OK);
    let client = app.create_key(&["client"]).await;

    let (status, a) = app.assignment("checkout", &client, "user-a", &[]).await;
    assert_eq!(status, StatusCode::OK, "{a}");
    let variant_a = a["variant"].as_str().unwrap().to_owned();
    let other = if variant_a == "control" {
        "treatment"
    } else {
        "control"
    };

    // POST /v1/assignments: every running experiment (not the draft), same sticky answer.
    let (status, all) = app
        .post_json(
            "/v1/assignments",
            &client,
            &json!({"subject_id": "user-a", "attributes": {"country": "US"}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{all}");
    assert_eq!(all["subject_id"], "user-a");
    let list = all["assignments"].as_array().expect("assignments");
    assert_eq!(list.len(), 1, "{all}");
    assert_eq!(list[0], a);

    // Paused: stored assignments are kept, new subjects get the control and are not stored.
    let (status, body) = app.set_status("checkout", "paused").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["changed"], true);
    let (_, again) = app.assignment("checkout", &client, "user-a", &[]).await;
    assert_eq!(again, a, "a stored assignment survives the pause");
    let (status, b) = app.assignment("checkout", &client, "user-b", &[]).await;
    assert_eq!(status, StatusCode::OK, "{b}");
    assert_eq!(b["reason"], "paused");
    assert_eq!(b["in_experiment"], false);
    assert_eq!(b["variant"], "control");
    assert_eq!(b["config"], control_config());
    assert_eq!(b["assigned_at"], Value::Null);
    // Every answer of this test is also POST /v1/assignments' answer at once: a change made
    // through this process is seen by the next request, cached or not.
    assert_eq!(bulk(&app, &client, "user-b").await, vec![b.clone()]);
    let (_, report) = app
        .post_events(
            &client,
            vec![json!({"experiment": "checkout", "subject_id": "user-b", "event": "purchase"})],
        )
        .await;
    assert_eq!(
        report["results"][0]["code"], "not_in_experiment",
        "{report}"
    );

    assert_eq!(
        app.set_status("checkout", "running").await.0,
        StatusCode::OK
    );

    // A forced variant wins over the stored one until it is removed.
    let (status, body) = app
        .put_json(
            "/v1/experiments/checkout/forced/user-a",
            &app.admin_key,
            &json!({"variant": other}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, forced) = app.assignment("checkout", &client, "user-a", &[]).await;
    assert_eq!(forced["reason"], "forced", "{forced}");
    assert_eq!(forced["variant"], other);
    assert_eq!(forced["config"], config_of(other));
    assert_eq!(bulk(&app, &client, "user-a").await, vec![forced.clone()]);
    let (status, list) = app
        .get("/v1/experiments/checkout/forced", &app.admin_key)
        .await;
    assert_eq!(status, StatusCode::OK, "{list}");
    assert_eq!(
        list["data"],
        json!([{"experiment": "checkout", "subject_id": "user-a", "variant": other}])
    );
    let (status, _) = app
        .delete("/v1/experiments/checkout/forced/user-a", &app.admin_key)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (_, list) = app
        .get("/v1/experiments/checkout/forced", &app.admin_key)
        .await;
    assert_eq!(list["data"], json!([]));
    let (_, unforced) = app.assignment("checkout", &client, "user-a", &[]).await;
    assert_eq!(unforced, a);
    assert_eq!(bulk(&app, &client, "user-a").await, vec![a.clone()]);

    // A manual winner completes the experiment; everyone gets its config.
    let (status, e) = app
        .post_json(
            "/v1/experiments/checkout/winner",
            &app.admin_key,
            &json!({"variant": "treatment", "reason": "ship it"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{e}");
    assert_eq!(e["status"], "completed");
    assert_eq!(e["winner"]["variant"], "treatment");
    assert_eq!(e["winner"]["source"], "manual");
    for subject in ["user-a", "user-b", "user-new"] {
        let (status, w) = app.assignment("checkout", &client, subject, &[]).await;
        assert_eq!(status, StatusCode::OK, "{w}");
        assert_eq!(w["variant"], "treatment", "{subject}: {w}");
        assert_eq!(w["config"], treatment_config());
        assert_eq!(w["reason"], "winner");
        assert_eq!(w["winner"], "treatment");
        // In bulk too: an app reading its configs at once keeps the winner rolled out.
        assert_eq!(bulk(&app, &client, subject).await, vec![w], "{subject}");
    }
    // The draft, once started, is listed first (running before completed ones).
    assert_eq!(app.activate("draft-only").await.0, StatusCode::OK);
    let listed = bulk(&app, &client, "user-a").await;
    let keys: Vec<&str> = listed
        .iter()
        .map(|a| a["experiment"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["draft-only", "checkout"], "{listed:?}");
    let (status, snapshot) = app.get("/v1/experiments/checkout/winner", &client).await;
    assert_eq!(status, StatusCode::OK, "{snapshot}");
    assert_eq!(snapshot["experiment"], "checkout");
    assert_eq!(snapshot["status"], "completed");
    assert_eq!(snapshot["winner"], "treatment");
    assert_eq!(snapshot["source"], "manual");
    assert!(snapshot["decided_at"].is_string(), "{snapshot}");

    // The override and the completion it caused are audited.
    let (status, audit) = app
        .get("/v1/experiments/checkout/audit", &app.admin_key)
        .await;
    assert_eq!(status, StatusCode::OK, "{audit}");
    let entries = audit["data"].as_array().unwrap();
    let winner_set = entries
        .iter()
        .find(|e| e["action"] == "winner_set")
        .unwrap_or_else(|| panic!("no winner_set entry: {audit}"));
    assert_eq!(winner_set["details"]["to"], "treatment");
    // With the reason given and who gave it.
    assert_eq!(winner_set["details"]["details"]["reason"], "ship it");
    assert_eq!(winner_set["details"]["details"]["by"], "key:bootstrap");
    assert!(
        entries.iter().any(|e| e["action"] == "status_changed"
            && e["details"] == json!({"from": "running", "to": "completed"})),
        "{audit}"
    );

    // Archived: no longer served in bulk.
    let (status, body) = app.set_status("checkout", "archived").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let listed = bulk(&app, &client, "user-a").await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["experiment"], "draft-only");
}

#[tokio::test]
async fn a_subject_stored_by_another_replica_keeps_its_variant() {
    use verdict_domain::assignment::{Bucket, bucket};

    let app = spawn_app().await;
    app.create_experiment(&ab_experiment("elsewhere")).await;
    assert_eq!(app.activate("elsewhere").await.0, StatusCode::OK);
    let client = app.create_key(&["client"]).await;
    let scope = verdict_domain::Scope {
        environment: "production".into(),
        organization: None,
    };
    let experiment = app
        .store
        .get_experiment(&scope, "elsewhere")
        .await
        .unwrap()
        .expect("the experiment");
    // Subjects the hash puts in the control.
    let mut in_control = (0..).map(|i| format!("s-{i}")).filter(|s| {
        matches!(bucket(&experiment, s), Bucket::Variant(v) if experiment.variants[v].key == "control")
    });
    let (stored_elsewhere, fresh) = (in_control.next().unwrap(), in_control.next().unwrap());
    // Another process stored one of them in the treatment (e.g. before the weights changed);
    // this server has never seen it.
    let at = verdict_store::model::truncate_to_millis(OffsetDateTime::now_utc());
    let (stored, created) = app
        .store
        .get_or_create_assignment(&verdict_domain::Assignment {
            experiment_id: experiment.id.clone(),
            subject: stored_elsewhere.clone(),
            variant: "treatment".into(),
            assigned_at: at,
            context: None,
        })
        .await
        .unwrap();
    assert!(created);
    for round in ["first", "again"] {
        let (status, a) = app
            .assignment("elsewhere", &client, &stored_elsewhere, &[])
            .await;
        assert_eq!(status, StatusCode::OK, "{a}");
        assert_eq!(a["variant"], "treatment", "{round}: {a}");
        assert_eq!(a["config"], treatment_config(), "{round}");
        assert_eq!(a["reason"], "assigned", "{round}");
        assert_eq!(a["in_experiment"], true, "{round}");
        let assigned_at = OffsetDateTime::parse(a["assigned_at"].as_str().unwrap(), &Rfc3339);
        assert_eq!(assigned_at.unwrap(), stored.assigned_at, "{round}");
    }
    // One nobody stored gets what the hash says, and it is stored.
    let (_, f) = app.assignment("elsewhere", &client, &fresh, &[]).await;
    assert_eq!(f["variant"], "control", "{f}");
    let kept = app
        .store
        .get_assignment(&experiment.id, &fresh)
        .await
        .unwrap()
        .expect("stored");
    assert_eq!(kept.variant, "control");
}

#[tokio::test]
async fn a_targeting_miss_serves_the_control_config_outside_the_experiment() {
    let app = spawn_app().await;
    let mut body = ab_experiment("us-only");
    body["targeting"] =
        json!([{"conditions": [{"attribute": "country", "operator": "eq", "value": "US"}]}]);
    app.create_experiment(&body).await;
    assert_eq!(app.activate("us-only").await.0, StatusCode::OK);
    let client = app.create_key(&["client"]).await;

    let (status, miss) = app
        .assignment("us-only", &client, "user-fr", &[("attr.country", "FR")])
        .await;
    assert_eq!(status, StatusCode::OK, "{miss}");
    assert_eq!(miss["in_experiment"], false);
    assert_eq!(miss["reason"], "targeting_miss");
    assert_eq!(miss["variant"], "control");
    assert_eq!(miss["config"], control_config());
    assert_eq!(miss["assigned_at"], Value::Null);

    let (status, post) = app
        .post_json(
            "/v1/experiments/us-only/assignment",
            &client,
            &json!({"subject_id": "user-fr", "attributes": {"country": "FR"}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{post}");
    assert_eq!(post, miss);

    // The miss was not stored: the subject's events are refused.
    let (_, report) = app
        .post_events(
            &client,
            vec![json!({"experiment": "us-only", "subject_id": "user-fr", "event": "purchase"})],
        )
        .await;
    assert_eq!(
        report["results"][0]["code"], "not_in_experiment",
        "{report}"
    );

    let (_, hit) = app
        .assignment("us-only", &client, "user-us", &[("attr.country", "US")])
        .await;
    assert_eq!(hit["in_experiment"], true, "{hit}");
    assert_eq!(hit["reason"], "assigned");
    assert!(hit["assigned_at"].is_string());
}
