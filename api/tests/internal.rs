//! The internal API for cron operators and `/metrics`, over real HTTP.

mod common;

use std::time::Duration;

use common::{ab_experiment, error_code, spawn_app};
use reqwest::StatusCode;
use serde_json::{Value, json};
use time::OffsetDateTime;
use verdict_store::LeaseGrant;

/// An experiment with `n` assigned subjects, each with one `purchase` event.
async fn experiment_with_events(app: &common::TestApp, key: &str, n: usize) {
    app.create_experiment(&ab_experiment(key)).await;
    let (status, _) = app.activate(key).await;
    assert_eq!(status, StatusCode::OK);
    let mut events = Vec::new();
    for i in 0..n {
        let subject = format!("user-{i}");
        let (status, _) = app.assignment(key, &app.admin_key, &subject, &[]).await;
        assert_eq!(status, StatusCode::OK);
        events.push(json!({
            "experiment": key, "subject_id": subject, "event": "purchase",
            "event_id": format!("{key}-{i}"), "value": 1.0
        }));
    }
    let (status, body) = app.post_events(&app.admin_key, events).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["accepted"], n);
}

#[tokio::test]
async fn a_trigger_runs_the_job_and_returns_its_run_record() {
    let app = spawn_app().await;
    experiment_with_events(&app, "checkout", 12).await;
    let internal = app.create_key(&["internal"]).await;

    let (status, run) = app
        .post_json("/v1/internal/jobs/aggregate/run", &internal, &json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{run}");
    assert_eq!(run["job"], "aggregate");
    assert_eq!(run["trigger"], "http");
    assert_eq!(run["outcome"], "succeeded");
    assert_eq!(run["report"]["events"], 12, "{run}");
    assert!(run["fencing_token"].as_u64().unwrap() >= 1);
    assert!(run["finished_at"].is_string());

    // Run again: nothing new to fold in.
    let (status, again) = app
        .post_json("/v1/internal/jobs/aggregate/run", &internal, &json!({}))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(again["report"]["events"], 0);
    assert!(again["fencing_token"].as_u64() > run["fencing_token"].as_u64());

    // The seed-compatible alias, and the other jobs.
    let (status, alias) = app
        .post_json(
            "/v1/internal/experiments/aggregate/run",
            &internal,
            &json!({}),
        )
        .await;
    assert_eq!(
        (status, alias["job"].as_str()),
        (StatusCode::OK, Some("aggregate"))
    );
    let (status, evaluated) = app
        .post_json("/v1/internal/jobs/evaluate/run", &internal, &json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{evaluated}");
    assert_eq!(evaluated["outcome"], "succeeded");
    assert_eq!(evaluated["report"]["evaluated"], 1);
    let (status, one) = app
        .send(
            app.client
                .post(app.url("/v1/internal/jobs/evaluate/run"))
                .query(&[("experiment", "checkout")])
                .bearer_auth(&internal),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{one}");
    // The same report shape as a run over every experiment, with one outcome.
    assert_eq!(one["report"]["evaluated"], 1, "{one}");
    assert_eq!(
        one["report"]["outcomes"][0]["experiment"], "checkout",
        "{one}"
    );
    let (status, retention) = app
        .post_json(
            "/v1/internal/experiments/retention/run",
            &internal,
            &json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{retention}");
    assert_eq!(retention["job"], "retention");
    assert_eq!(
        retention["report"]["events_deleted"], 0,
        "nothing is 90 days old"
    );

    // The history, newest first, and one run by id.
    let (status, runs) = app.get("/v1/internal/jobs/aggregate/runs", &internal).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(runs["pagination"]["total"], 3);
    assert_eq!(runs["data"][2]["id"], run["id"]);
    let id = run["id"].as_str().unwrap();
    let (status, fetched) = app
        .get(&format!("/v1/internal/jobs/aggregate/runs/{id}"), &internal)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(fetched, run);
    let (status, body) = app
        .get(&format!("/v1/internal/jobs/evaluate/runs/{id}"), &internal)
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::NOT_FOUND, "run_not_found")
    );
}

#[tokio::test]
async fn a_trigger_while_another_replica_holds_the_lease_gets_409_with_the_holder() {
    let app = spawn_app().await;
    let internal = app.create_key(&["internal"]).await;
    // Another replica is running the job.
    let grant = app
        .store
        .acquire_lease(
            "aggregate",
            "replica-b",
            Duration::from_secs(60),
            OffsetDateTime::now_utc(),
            None,
        )
        .await
        .unwrap();
    let LeaseGrant::Acquired(lease) = grant else {
        panic!("{grant:?}")
    };
    let (status, body) = app
        .post_json("/v1/internal/jobs/aggregate/run", &internal, &json!({}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(error_code(&body), "lease_held");
    assert_eq!(body["error"]["details"][0]["holder"], "replica-b");

    // The skipped attempt is on record; other jobs are not blocked.
    let (_, runs) = app.get("/v1/internal/jobs/aggregate/runs", &internal).await;
    assert_eq!(runs["data"][0]["outcome"], "skipped_lease_held");
    let (status, _) = app
        .post_json("/v1/internal/jobs/evaluate/run", &internal, &json!({}))
        .await;
    assert_eq!(status, StatusCode::OK);

    // The holder finishes: the next trigger runs.
    app.store
        .release_lease(&lease, OffsetDateTime::now_utc())
        .await
        .unwrap();
    let (status, run) = app
        .post_json("/v1/internal/jobs/aggregate/run", &internal, &json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{run}");
    assert_eq!(run["outcome"], "succeeded");
}

#[tokio::test]
async fn jobs_are_listed_with_schedule_next_run_last_run_and_lag() {
    let app = spawn_app().await;
    let internal = app.create_key(&["internal"]).await;
    experiment_with_events(&app, "lagging", 3).await;
    let before = OffsetDateTime::now_utc();
    let (status, body) = app.get("/v1/internal/jobs", &internal).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let jobs = body["data"].as_array().unwrap();
    let names: Vec<_> = jobs.iter().map(|j| j["job"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "aggregate",
            "evaluate",
            "lifecycle",
            "retention",
            "webhooks",
            "publish"
        ]
    );
    let aggregate = &jobs[0];
    assert_eq!(aggregate["schedule"], "0 * * * * *");
    let next = OffsetDateTime::parse(
        aggregate["next_run_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    // The next whole minute after the request was served: after `before`, at most a minute
    // after the answer (a minute boundary may pass in between).
    let after = OffsetDateTime::now_utc();
    assert!(
        next > before && next <= after + time::Duration::seconds(60),
        "{next}"
    );
    assert_eq!(next.second(), 0);
    assert_eq!(aggregate["last_run"], Value::Null);
    assert!(aggregate["lag_seconds"].as_f64().unwrap() >= 0.0);
    assert_eq!(
        jobs[4]["schedule"],
        Value::Null,
        "webhooks is a continuous loop"
    );

    let (_, run) = app
        .post_json("/v1/internal/jobs/aggregate/run", &internal, &json!({}))
        .await;
    let (_, body) = app.get("/v1/internal/jobs", &internal).await;
    assert_eq!(body["data"][0]["last_run"]["id"], run["id"]);
    assert_eq!(body["data"][0]["lag_seconds"], 0.0, "caught up");
}

#[tokio::test]
async fn the_internal_api_needs_the_internal_scope_and_known_jobs() {
    let app = spawn_app().await;
    let client = app.create_key(&["client"]).await;
    let internal = app.create_key(&["internal"]).await;
    for (method, path) in [
        ("POST", "/v1/internal/jobs/aggregate/run"),
        ("POST", "/v1/internal/experiments/retention/run"),
        ("GET", "/v1/internal/jobs"),
        ("GET", "/v1/internal/jobs/aggregate/runs"),
    ] {
        let req = match method {
            "POST" => app.client.post(app.url(path)),
            _ => app.client.get(app.url(path)),
        };
        let (status, body) = app
            .send(req.try_clone().unwrap().bearer_auth(&client))
            .await;
        assert_eq!(
            (status, error_code(&body)),
            (StatusCode::FORBIDDEN, "forbidden"),
            "{path}"
        );
        let (status, _) = app.send(req).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}");
    }
    let (status, body) = app
        .post_json("/v1/internal/jobs/vacuum/run", &internal, &json!({}))
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::NOT_FOUND, "job_not_found")
    );
    let (status, body) = app
        .send(
            app.client
                .post(app.url("/v1/internal/jobs/aggregate/run"))
                .query(&[("experiment", "x")])
                .bearer_auth(&internal),
        )
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::BAD_REQUEST, "invalid_query")
    );
}

/// One sample of `/metrics` (parsed with a Prometheus text-format parser).
fn sample(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => 0.0,
        })
        .sum()
}

async fn scrape(app: &common::TestApp) -> prometheus_parse::Scrape {
    let response = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let text = response.text().await.unwrap();
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))
        .expect("/metrics is in the text format")
}

#[tokio::test]
async fn metrics_parse_and_move_with_ingestion_and_job_runs() {
    let app = spawn_app().await;
    let internal = app.create_key(&["internal"]).await;
    let before = scrape(&app).await;
    assert_eq!(sample(&before, "verdict_events_ingested_total", &[]), 0.0);

    experiment_with_events(&app, "metered", 5).await;
    // One duplicate and one not in the experiment.
    let (_, body) = app
        .post_events(
            &app.admin_key,
            vec![
                json!({"experiment": "metered", "subject_id": "user-0", "event": "purchase", "event_id": "metered-0"}),
                json!({"experiment": "metered", "subject_id": "stranger", "event": "purchase", "event_id": "x-1"}),
            ],
        )
        .await;
    assert_eq!(
        (body["duplicates"].as_u64(), body["rejected"].as_u64()),
        (Some(1), Some(1))
    );
    let after_ingest = scrape(&app).await;
    assert_eq!(
        sample(&after_ingest, "verdict_events_ingested_total", &[]),
        5.0
    );
    assert_eq!(
        sample(
            &after_ingest,
            "verdict_events_rejected_total",
            &[("reason", "duplicate")]
        ),
        1.0
    );
    assert_eq!(
        sample(
            &after_ingest,
            "verdict_events_rejected_total",
            &[("reason", "not_in_experiment")]
        ),
        1.0
    );
    assert!(
        sample(&after_ingest, "verdict_aggregation_lag_seconds", &[]) >= 0.0,
        "lag is exported"
    );
    assert_eq!(
        sample(
            &after_ingest,
            "verdict_http_requests_total",
            &[
                ("route", "/v1/events"),
                ("method", "POST"),
                ("status", "200")
            ]
        ),
        2.0
    );

    let (status, _) = app
        .post_json("/v1/internal/jobs/aggregate/run", &internal, &json!({}))
        .await;
    assert_eq!(status, StatusCode::OK);
    let after_run = scrape(&app).await;
    assert_eq!(
        sample(
            &after_run,
            "verdict_job_runs_total",
            &[("job", "aggregate"), ("outcome", "succeeded")]
        ),
        1.0
    );
    assert_eq!(
        sample(
            &after_run,
            "verdict_job_run_duration_seconds_count",
            &[("job", "aggregate")]
        ),
        1.0
    );
    assert_eq!(
        sample(&after_run, "verdict_aggregation_lag_seconds", &[]),
        0.0
    );

    // Winner reads move the cache counters.
    for _ in 0..3 {
        let (status, _) = app
            .get("/v1/experiments/metered/winner", &app.admin_key)
            .await;
        assert_eq!(status, StatusCode::OK);
    }
    let after_reads = scrape(&app).await;
    let lookups = sample(
        &after_reads,
        "verdict_cache_lookups_total",
        &[("result", "hit")],
    ) + sample(
        &after_reads,
        "verdict_cache_lookups_total",
        &[("result", "miss")],
    );
    assert!(lookups >= 3.0, "{lookups}");
}

#[tokio::test]
async fn a_trigger_while_the_same_job_is_running_gets_409_naming_the_runner() {
    let app = spawn_app().await;
    let internal = app.create_key(&["internal"]).await;
    // A backlog that takes a while to aggregate: the second trigger must reach the store
    // while the first run still holds the lease. SQLite rolls up ~300k events/s, so it gets
    // several rollup steps' worth (each its own write, so the second trigger's lease request
    // is served between them); the MongoDB test server is ~10x slower already.
    let events: usize = if common::backend() == "mongodb" {
        20_000
    } else {
        200_000
    };
    let now = OffsetDateTime::now_utc();
    for s in 0..200 {
        app.store
            .get_or_create_assignment(&verdict_domain::Assignment {
                experiment_id: "exp".into(),
                subject: format!("s{s}"),
                variant: "a".into(),
                assigned_at: now,
                context: None,
            })
            .await
            .unwrap();
    }
    for chunk in 0..events / 1_000 {
        let batch = (0..1_000)
            .map(|i| verdict_domain::NewEvent {
                experiment_id: "exp".into(),
                event_id: format!("e{chunk}-{i}"),
                subject: format!("s{}", i % 200),
                variant: None,
                event: "conversion".into(),
                value: 1.0,
                ts: now,
                received_at: now,
                meta: None,
            })
            .collect();
        app.store.append_events(batch).await.unwrap();
    }

    let url = app.url("/v1/internal/jobs/aggregate/run");
    let first = tokio::spawn(
        app.client
            .post(url.clone())
            .bearer_auth(internal.clone())
            .send(),
    );
    // Once the first run holds the lease, trigger again.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let holder = loop {
        if let Some(lease) = app.store.get_lease("aggregate").await.unwrap()
            && lease.expires_at > OffsetDateTime::now_utc()
        {
            break lease.owner;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the first run never held the lease"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    let (status, body) = app.send(app.client.post(url).bearer_auth(&internal)).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(error_code(&body), "lease_held");
    assert_eq!(body["error"]["details"][0]["holder"], holder.as_str());

    let (status, run) = common::parts(first.await.unwrap().unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{run}");
    assert_eq!(run["report"]["events"], events);
    assert_eq!(run["owner"], holder.as_str());
}
