//! Scheduled starts and ends through the HTTP API (on the backend `VERDICT_TEST_BACKEND`
//! names): `start_at`, `ends_at` and `evaluation_period_days` are taken, validated with every
//! problem named, editable through PATCH, and kept by the lifecycle job, run here at
//! chosen times (the scheduler runs it every minute with the time of its tick): a draft
//! starts at its `start_at`, an experiment completes at its end, with the winner its policy
//! picks then when it picks one, each change audited as the scheduler's and announced by
//! its `experiment.status_changed` webhook message.

mod common;

use common::{TestApp, error_code, spawn_app};
use reqwest::StatusCode;
use serde_json::{Value, json};
use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime};
use verdict_aggregator::lifecycle::run_schedules;
use verdict_domain::{EventType, Status};
use verdict_store::PageRequest;

fn rfc3339(at: OffsetDateTime) -> String {
    at.format(&Rfc3339).unwrap()
}

fn parse(v: &Value) -> OffsetDateTime {
    OffsetDateTime::parse(v.as_str().expect("a timestamp"), &Rfc3339).unwrap()
}

/// The lifecycle job's run at `now`: the keys it moved, with their new status.
async fn lifecycle_at(app: &TestApp, now: OffsetDateTime) -> Vec<(String, Status)> {
    let report = run_schedules(&app.store, &app.cache, now)
        .await
        .expect("the lifecycle job runs");
    report
        .changes
        .into_iter()
        .map(|c| (c.experiment, c.status))
        .collect()
}

async fn experiment(app: &TestApp, key: &str) -> Value {
    let (status, body) = app
        .get(&format!("/v1/experiments/{key}"), &app.admin_key)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

/// The status changes of `key`'s audit log, oldest first, as (actor, from, to).
async fn status_changes(app: &TestApp, key: &str) -> Vec<(String, String, String)> {
    let (status, audit) = app
        .get(&format!("/v1/experiments/{key}/audit"), &app.admin_key)
        .await;
    assert_eq!(status, StatusCode::OK, "{audit}");
    let mut changes: Vec<_> = audit["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "status_changed")
        .map(|e| {
            (
                e["actor"].as_str().unwrap().to_owned(),
                e["details"]["from"].as_str().unwrap().to_owned(),
                e["details"]["to"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    changes.reverse();
    changes
}

/// The `experiment.status_changed` webhook messages of experiment `id`, as their `to`.
async fn status_messages(app: &TestApp, id: &str) -> Vec<String> {
    let page = app
        .store
        .list_outbox(PageRequest {
            page: 1,
            page_size: 100,
        })
        .await
        .unwrap();
    let mut messages: Vec<_> = page
        .items
        .into_iter()
        .filter(|m| m.experiment_id == id && m.event_type == EventType::StatusChanged)
        .collect();
    messages.sort_by_key(|m| m.created_at);
    messages
        .into_iter()
        .map(|m| m.data["status"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test]
async fn a_draft_starts_at_its_start_at_and_completes_at_its_ends_at() {
    let app = spawn_app().await;
    let now = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap();
    let (start, end) = (now + Duration::hours(1), now + Duration::hours(2));
    let created = app
        .create_experiment(&json!({
            "key": "scheduled",
            "variants": [{"key": "control"}, {"key": "treatment"}],
            "start_at": rfc3339(start),
            "ends_at": rfc3339(end),
        }))
        .await;
    assert_eq!(parse(&created["start_at"]), start);
    assert_eq!(parse(&created["ends_at"]), end);
    assert_eq!(created["evaluation_period_days"], Value::Null);
    let id = created["id"].as_str().unwrap().to_owned();
    // An unscheduled draft beside it never moves.
    app.create_experiment(&json!({"key": "unscheduled", "variants": [{"key": "a"}, {"key": "b"}]}))
        .await;

    assert_eq!(
        lifecycle_at(&app, start - Duration::seconds(1)).await,
        vec![]
    );
    assert_eq!(experiment(&app, "scheduled").await["status"], "draft");

    assert_eq!(
        lifecycle_at(&app, start).await,
        vec![("scheduled".to_owned(), Status::Running)]
    );
    let running = experiment(&app, "scheduled").await;
    assert_eq!(running["status"], "running");
    assert_eq!(parse(&running["started_at"]), start);
    // Running: subjects are assigned.
    let (status, body) = app
        .assignment("scheduled", &app.admin_key, "user-1", &[])
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["in_experiment"], true, "{body}");
    // A later run before the end changes nothing.
    assert_eq!(lifecycle_at(&app, end - Duration::seconds(1)).await, vec![]);

    assert_eq!(
        lifecycle_at(&app, end).await,
        vec![("scheduled".to_owned(), Status::Completed)]
    );
    let completed = experiment(&app, "scheduled").await;
    assert_eq!(completed["status"], "completed");
    assert_eq!(parse(&completed["completed_at"]), end);
    assert_eq!(
        completed["winner"],
        Value::Null,
        "too few subjects to decide"
    );
    assert_eq!(lifecycle_at(&app, end + Duration::days(1)).await, vec![]);
    assert_eq!(experiment(&app, "unscheduled").await["status"], "draft");

    let scheduler = |from: &str, to: &str| ("scheduler".to_owned(), from.to_owned(), to.to_owned());
    assert_eq!(
        status_changes(&app, "scheduled").await,
        vec![
            scheduler("draft", "running"),
            scheduler("running", "completed")
        ]
    );
    assert_eq!(
        status_messages(&app, &id).await,
        vec!["running", "completed"]
    );
}

#[tokio::test]
async fn an_evaluation_period_ends_with_the_winner_the_policy_picks_then() {
    let app = spawn_app().await;
    app.create_experiment(&json!({
        "key": "period",
        "variants": [{"key": "control"}, {"key": "treatment"}],
        "assignment": {"salt": "period-salt"},
        "evaluation_period_days": 7,
        "policy": {"min_assignments": 20, "min_conversions": 5, "peeking_guard": false,
                   "max_expected_loss": 0.05},
    }))
    .await;
    let (status, body) = app.activate("period").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let started = parse(&body["experiment"]["started_at"]);
    // Treatment converts far more often: every treatment subject, one control subject in ten.
    let mut events = Vec::new();
    for i in 0..200 {
        let subject = format!("s-{i}");
        let (status, a) = app
            .assignment("period", &app.admin_key, &subject, &[])
            .await;
        assert_eq!(status, StatusCode::OK, "{a}");
        if a["variant"] == "treatment" || i % 10 == 0 {
            events.push(json!({"event_id": format!("e-{i}"), "experiment": "period",
                               "subject_id": subject, "event": "conversion"}));
        }
    }
    let (status, report) = app.post_events(&app.admin_key, events).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    app.aggregate().await;

    let end = started + Duration::days(7);
    assert_eq!(lifecycle_at(&app, end - Duration::seconds(1)).await, vec![]);
    assert_eq!(
        lifecycle_at(&app, end).await,
        vec![("period".to_owned(), Status::Completed)]
    );
    let completed = experiment(&app, "period").await;
    assert_eq!(completed["status"], "completed", "{completed}");
    assert_eq!(completed["winner"]["variant"], "treatment", "{completed}");
    assert_eq!(completed["winner"]["source"], "automatic", "{completed}");
}

#[tokio::test]
async fn a_paused_experiment_also_completes_at_its_end() {
    let app = spawn_app().await;
    let end = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap() + Duration::hours(3);
    app.create_experiment(&json!({
        "key": "paused",
        "variants": [{"key": "a"}, {"key": "b"}],
        "ends_at": rfc3339(end),
    }))
    .await;
    assert_eq!(app.activate("paused").await.0, StatusCode::OK);
    assert_eq!(app.set_status("paused", "paused").await.0, StatusCode::OK);
    assert_eq!(
        lifecycle_at(&app, end).await,
        vec![("paused".to_owned(), Status::Completed)]
    );
    assert_eq!(experiment(&app, "paused").await["status"], "completed");
}

#[tokio::test]
async fn a_bad_schedule_is_refused_with_every_problem_named() {
    let app = spawn_app().await;
    let now = OffsetDateTime::now_utc();
    let (status, body) = app
        .post_json(
            "/v1/experiments",
            &app.admin_key,
            &json!({
                "key": "bad",
                "variants": [{"key": "a"}, {"key": "b"}],
                "start_at": rfc3339(now + Duration::days(2)),
                "ends_at": rfc3339(now - Duration::days(1)),
                "evaluation_period_days": 0,
            }),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(error_code(&body), "validation_failed", "{body}");
    let mut fields = common::problem_fields(&body);
    fields.sort();
    // In the past; before the start; with a period as well; a period of 0 days.
    assert_eq!(
        fields,
        ["ends_at", "ends_at", "ends_at", "evaluation_period_days"],
        "{body}"
    );
    assert_eq!(app.experiment_count().await, 0, "nothing was written");

    let (status, body) = app
        .post_json(
            "/v1/experiments",
            &app.admin_key,
            &json!({"key": "bad", "variants": [{"key": "a"}, {"key": "b"}],
                    "start_at": "tomorrow"}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
}

#[tokio::test]
async fn a_schedule_is_changed_and_removed_through_patch() {
    let app = spawn_app().await;
    let now = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap();
    let created = app
        .create_experiment(&json!({
            "key": "edited",
            "variants": [{"key": "a"}, {"key": "b"}],
            "start_at": rfc3339(now + Duration::days(1)),
        }))
        .await;
    let patch = |version: &Value, body: Value| {
        let mut body = body;
        body["version"] = version.clone();
        body
    };
    let (status, edited) = app
        .patch_json(
            "/v1/experiments/edited",
            &app.admin_key,
            &patch(
                &created["version"],
                json!({"start_at": rfc3339(now + Duration::hours(1)), "evaluation_period_days": 14}),
            ),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{edited}");
    assert_eq!(parse(&edited["start_at"]), now + Duration::hours(1));
    assert_eq!(edited["evaluation_period_days"], 14);

    // Both ends at once: refused, nothing changed.
    let (status, body) = app
        .patch_json(
            "/v1/experiments/edited",
            &app.admin_key,
            &patch(
                &edited["version"],
                json!({"ends_at": rfc3339(now + Duration::days(3))}),
            ),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["details"][0]["field"], "ends_at", "{body}");

    // `null` removes: unscheduled again, the job leaves it alone.
    let (status, cleared) = app
        .patch_json(
            "/v1/experiments/edited",
            &app.admin_key,
            &patch(
                &edited["version"],
                json!({"start_at": null, "evaluation_period_days": null}),
            ),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{cleared}");
    assert_eq!(cleared["start_at"], Value::Null);
    assert_eq!(cleared["evaluation_period_days"], Value::Null);
    assert_eq!(lifecycle_at(&app, now + Duration::days(30)).await, vec![]);

    // Once started, start_at no longer applies.
    let (status, body) = app.activate("edited").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = app
        .patch_json(
            "/v1/experiments/edited",
            &app.admin_key,
            &patch(
                &body["experiment"]["version"],
                json!({"start_at": rfc3339(now + Duration::days(1))}),
            ),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["details"][0]["field"], "start_at", "{body}");
}
