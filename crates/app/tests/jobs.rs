//! Every job of the registry, run through the runner the scheduler, the CLI and the internal
//! API share, on a real SQLite store, fed through the application's own use-cases (no HTTP).

use std::sync::Arc;

use serde_json::json;
use tokio_util::sync::CancellationToken;
use verdict_app::assignments::AssignmentRequest;
use verdict_app::{App, ScopeParams};
use verdict_cache::MemoryCache;
use verdict_config::Settings;
use verdict_domain::{ExperimentInput, Status};
use verdict_store::{RunOutcome, SqliteStore, Trigger};

const ADMIN: &str = "jobs-test-admin-key-0123456789";

async fn app(dir: &tempfile::TempDir) -> App {
    let env =
        [("VERDICT_AUTH__BOOTSTRAP_ADMIN_KEY", ADMIN)].map(|(k, v)| (k.to_owned(), v.to_owned()));
    let settings = Settings::load_from(None, env).unwrap();
    let store = Arc::new(SqliteStore::open(dir.path().join("v.db"), 5_000).unwrap());
    let app = App::new(
        store,
        Arc::new(MemoryCache::new()),
        Arc::new(settings),
        CancellationToken::new(),
    )
    .await
    .unwrap();
    app.ensure_bootstrap_environment().await.unwrap();
    app
}

#[tokio::test]
async fn every_registered_job_runs_through_the_runner_and_records_its_report() {
    let dir = tempfile::tempdir().unwrap();
    let app = app(&dir).await;
    let admin = app.authenticate(ADMIN).await.unwrap();
    let scope = ScopeParams::default();
    let input: ExperimentInput = serde_json::from_value(json!({
        "key": "checkout",
        "variants": [{"key": "a"}, {"key": "b"}],
        "primary_metric": {"event": "purchase"},
    }))
    .unwrap();
    app.create_experiment(&admin, &scope, input).await.unwrap();
    app.transition(&admin, &scope, "checkout", Status::Running)
        .await
        .unwrap();
    let target = app
        .assignment_target(&admin, &scope, "checkout")
        .await
        .unwrap();
    let mut events = Vec::new();
    for i in 0..10 {
        let subject = format!("user-{i}");
        app.assign(&target, &AssignmentRequest::subject(&subject))
            .await
            .unwrap();
        events.push(json!({"experiment": "checkout", "subject_id": subject,
            "event": "purchase", "event_id": format!("e-{i}")}));
    }
    let body = serde_json::to_vec(&json!({ "events": events })).unwrap();
    let ingested = app.ingest(&admin, &scope, None, &body).await.unwrap();
    assert_eq!(ingested.accepted, 10);

    let runner = app.runner();
    assert_eq!(
        runner.names(),
        [
            "aggregate",
            "evaluate",
            "lifecycle",
            "retention",
            "webhooks",
            "publish"
        ]
    );
    let run = |name: &'static str| async move {
        let run = runner
            .run(name, Trigger::Cli, None, None)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(run.outcome, RunOutcome::Succeeded, "{name}: {run:?}");
        assert_eq!(run.job, name);
        run.report
    };
    assert_eq!(run("aggregate").await["events"], 10);
    let evaluated = run("evaluate").await;
    assert_eq!(evaluated["evaluated"], 1);
    assert_eq!(evaluated["outcomes"][0]["experiment"], "checkout");
    assert_eq!(
        run("lifecycle").await["changes"],
        json!([]),
        "nothing scheduled"
    );
    assert_eq!(run("retention").await["events_deleted"], 0);
    let delivered = run("webhooks").await;
    assert_eq!(delivered["claimed"], 0, "no endpoint, nothing to deliver");
    let published = run("publish").await;
    assert_eq!(
        (
            published["scopes"].as_u64(),
            published["published"].as_u64()
        ),
        (Some(1), Some(0)),
        "the activation published the scope already: {published}"
    );

    // Each run is in the job's history.
    let internal = app.jobs().await.unwrap();
    for status in internal.data {
        let last = status.last_run.expect("a recorded run");
        assert_eq!(last.job, status.job);
        assert_eq!(last.outcome, RunOutcome::Succeeded);
    }
}
