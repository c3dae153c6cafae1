//! The retention job against a real SQLite store (the store-level rules, including MongoDB,
//! are in the store contract suite).

use std::sync::Arc;

use serde_json::json;
use time::{Duration, OffsetDateTime};
use verdict_config::RetentionSettings;
use verdict_domain::experiment::Provided;
use verdict_domain::{Assignment, ExperimentInput, NewEvent, Scope};
use verdict_store::{DynStore, SqliteStore};

fn settings(batch_size: usize) -> RetentionSettings {
    RetentionSettings {
        raw_events_days: 90,
        buckets_days: 730,
        runs_days: 30,
        webhook_attempts_days: 30,
        snapshot_versions_kept: 1000,
        batch_size,
    }
}

async fn experiment(
    store: &DynStore,
    key: &str,
    retention: serde_json::Value,
    now: OffsetDateTime,
) {
    let input: ExperimentInput = serde_json::from_value(json!({
        "key": key,
        "variants": [{"key": "a"}, {"key": "b"}],
        "retention": retention,
    }))
    .unwrap();
    let e = input
        .into_experiment(
            Scope::default(),
            Provided {
                id: key.into(),
                salt: "s".into(),
                now,
            },
        )
        .unwrap();
    store.create_experiment(&e, "test").await.unwrap();
    for subject in ["s1", "s2"] {
        store
            .get_or_create_assignment(&Assignment {
                experiment_id: key.into(),
                subject: subject.into(),
                variant: "a".into(),
                assigned_at: now - Duration::days(400),
                context: None,
            })
            .await
            .unwrap();
    }
}

fn events(experiment: &str, tag: &str, received: OffsetDateTime, n: usize) -> Vec<NewEvent> {
    (0..n)
        .map(|i| NewEvent {
            experiment_id: experiment.into(),
            event_id: format!("{tag}-{i}"),
            subject: if i % 2 == 0 { "s1" } else { "s2" }.into(),
            variant: None,
            event: "conversion".into(),
            value: 1.0,
            ts: received,
            received_at: received,
            meta: None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletes_expired_aggregated_events_in_batches_honouring_overrides_and_the_watermark() {
    let dir = tempfile::tempdir().unwrap();
    let store: DynStore = Arc::new(SqliteStore::open(dir.path().join("v.db"), 5_000).unwrap());
    let now = OffsetDateTime::now_utc();
    experiment(&store, "default", json!({}), now).await;
    experiment(&store, "short", json!({"raw_events_days": 1}), now).await;

    // Aggregated: 7 very old + 3 two days old per experiment.
    for exp in ["default", "short"] {
        store
            .append_events(events(exp, "old", now - Duration::days(100), 7))
            .await
            .unwrap();
        store
            .append_events(events(exp, "recent", now - Duration::days(2), 3))
            .await
            .unwrap();
    }
    verdict_store::RollupStore::rollup(store.as_ref(), 1_000)
        .await
        .unwrap();
    let watermark = store.rollup_watermark().await.unwrap();
    // Expired by age but not yet aggregated: the watermark is behind the cutoff.
    store
        .append_events(events("default", "late", now - Duration::days(200), 5))
        .await
        .unwrap();

    let report = verdict_retention::run(&*store, &settings(2), now, None)
        .await
        .unwrap();
    // default: the 7 old ones; short (1 day): its 7 old and 3 recent ones.
    assert_eq!(report.events_deleted, 7 + 10);
    assert_eq!(report.overrides, 1);
    // 10 events in batches of 2 take 6 statements (the last finds nothing), 7 take 4.
    assert!(report.batches >= 6 + 4, "{report:?}");

    let left = store.scan_events(0, 1_000).await.unwrap();
    let mut kept: Vec<_> = left
        .iter()
        .map(|e| (e.experiment_id.as_str(), e.event_id.as_str()))
        .collect();
    kept.sort();
    let mut expected = vec![
        ("default", "recent-0"),
        ("default", "recent-1"),
        ("default", "recent-2"),
    ];
    expected.extend((0..5).map(|i| {
        (
            "default",
            ["late-0", "late-1", "late-2", "late-3", "late-4"][i],
        )
    }));
    expected.sort();
    assert_eq!(kept, expected);
    assert!(
        left.iter()
            .filter(|e| e.event_id.starts_with("late"))
            .all(|e| e.seq > watermark),
        "the un-aggregated events are all still there"
    );

    // Once aggregated, the late events go too.
    verdict_store::RollupStore::rollup(store.as_ref(), 1_000)
        .await
        .unwrap();
    let report = verdict_retention::run(&*store, &settings(1_000), now, None)
        .await
        .unwrap();
    assert_eq!(report.events_deleted, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_experiment_is_purged_whole_and_its_purge_forgotten_after_the_grace() {
    let dir = tempfile::tempdir().unwrap();
    let store: DynStore = Arc::new(SqliteStore::open(dir.path().join("v.db"), 5_000).unwrap());
    let now = OffsetDateTime::now_utc();
    experiment(&store, "kept", json!({}), now).await;
    experiment(&store, "gone", json!({}), now).await;
    for exp in ["kept", "gone"] {
        store
            .append_events(events(exp, "recent", now - Duration::days(1), 7))
            .await
            .unwrap();
    }
    verdict_store::RollupStore::rollup(store.as_ref(), 1_000)
        .await
        .unwrap();
    // Not yet rolled up: a deleted experiment's events go all the same.
    store
        .append_events(events("gone", "late", now, 3))
        .await
        .unwrap();
    let gone = store
        .get_experiment(&Scope::default(), "gone")
        .await
        .unwrap()
        .unwrap();
    let deleted = store
        .delete_experiment(&verdict_store::Deletion {
            experiment_id: gone.id.clone(),
            version: gone.version,
            at: now,
            actor: "test".into(),
            details: json!({"key": "gone"}),
        })
        .await
        .unwrap();
    assert!(deleted);

    let report = verdict_retention::run(&*store, &settings(4), now, None)
        .await
        .unwrap();
    // 10 events, 2 assignments, and at least one bucket, in batches of at most 4.
    assert!(report.deleted_experiment_rows > 10 + 2, "{report:?}");
    assert_eq!(report.events_deleted, 0, "nothing else has expired");
    assert_eq!(report.deleted_experiments_purged, 0, "within the grace");
    let left = store.scan_events(0, 1_000).await.unwrap();
    assert_eq!(left.len(), 7);
    assert!(left.iter().all(|e| e.experiment_id == "kept"));
    assert!(
        store
            .subject_state("gone", "s1")
            .await
            .unwrap()
            .assignment
            .is_none()
    );
    assert!(
        store
            .subject_state("kept", "s1")
            .await
            .unwrap()
            .assignment
            .is_some()
    );
    assert_eq!(store.pending_purges().await.unwrap().len(), 1);

    // Past the grace: nothing left, the purge is forgotten.
    let later = now + verdict_retention::PURGE_GRACE;
    let report = verdict_retention::run(&*store, &settings(4), later, None)
        .await
        .unwrap();
    assert_eq!(report.deleted_experiment_rows, 0);
    assert_eq!(report.deleted_experiments_purged, 1);
    assert!(store.pending_purges().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evaluation_history_expires_with_the_buckets_honouring_overrides() {
    let dir = tempfile::tempdir().unwrap();
    let store: DynStore = Arc::new(SqliteStore::open(dir.path().join("v.db"), 5_000).unwrap());
    let now = OffsetDateTime::now_utc();
    experiment(&store, "default", json!({}), now).await;
    experiment(&store, "short", json!({"buckets_days": 10}), now).await;
    let days_ago = [800, 100, 5];
    for exp in ["default", "short"] {
        for days in days_ago {
            store
                .record_evaluation(&verdict_store::EvaluationPoint {
                    experiment_id: exp.into(),
                    at: now - Duration::days(days),
                    aggregated_through: 0,
                    metric: "conversion".into(),
                    estimate: "conversion_rate".into(),
                    arms: Vec::new(),
                })
                .await
                .unwrap();
        }
    }

    let report = verdict_retention::run(&*store, &settings(1), now, None)
        .await
        .unwrap();
    // default (730 days): the 800-day-old point; short (10 days): that one and the 100-day-old.
    assert_eq!(report.evaluation_points_deleted, 3, "{report:?}");
    let ages = |exp: &'static str| {
        let store = store.clone();
        async move {
            store
                .evaluation_history(exp, 10)
                .await
                .unwrap()
                .iter()
                .map(|p| (now - p.at).whole_days())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(ages("default").await, [100, 5]);
    assert_eq!(ages("short").await, [5]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_versions_beyond_the_newest_kept_are_deleted_per_scope() {
    let dir = tempfile::tempdir().unwrap();
    let store: DynStore = Arc::new(SqliteStore::open(dir.path().join("v.db"), 5_000).unwrap());
    let now = OffsetDateTime::now_utc();
    let global = Scope::global("production");
    let acme = Scope::new("production", Some("acme".into()));
    for (scope, n) in [(&global, 7), (&acme, 3)] {
        for v in 1..=n {
            let body = format!("{{\"v\":{v}}}");
            store
                .record_publication(&verdict_store::NewPublication {
                    scope: scope.clone(),
                    hash: format!("{v:064}"),
                    body,
                    trigger: "manual".into(),
                    actor: "key_1".into(),
                    at: now,
                })
                .await
                .unwrap();
        }
    }
    let keep_three = RetentionSettings {
        snapshot_versions_kept: 3,
        ..settings(2)
    };

    let report = verdict_retention::run(&*store, &keep_three, now, None)
        .await
        .unwrap();
    assert_eq!(report.snapshot_versions_deleted, 4, "{report:?}");
    let versions = |scope: Scope| {
        let store = store.clone();
        async move {
            let all = verdict_store::PageRequest {
                page: 1,
                page_size: 100,
            };
            let page = store.list_publications(&scope, all).await.unwrap();
            page.items.iter().map(|p| p.version).collect::<Vec<_>>()
        }
    };
    assert_eq!(versions(global).await, [7, 6, 5]);
    assert_eq!(versions(acme).await, [3, 2, 1]);
    let again = verdict_retention::run(&*store, &keep_three, now, None)
        .await
        .unwrap();
    assert_eq!(again.snapshot_versions_deleted, 0, "{again:?}");
}
