//! Aggregation killed mid-run (SIGKILL, a real child process) and run again counts every
//! event exactly once: the rollups equal the computation from raw events. On SQLite and on
//! MongoDB (`VERDICT_TEST_MONGODB_URI`, which `scripts/test.sh` provides).

use std::sync::Arc;
use std::time::{Duration, Instant};

use time::OffsetDateTime;
use verdict_domain::{Assignment, NewEvent};
use verdict_store::{Attribution, DynStore, Granularity, MongoStore, SqliteStore, TimeRange};

/// Set in the child process only: the store it aggregates, `sqlite:<path>` or
/// `mongodb:<database>` (on `VERDICT_TEST_MONGODB_URI`).
const CHILD_STORE: &str = "VERDICT_TEST_AGGREGATE_CHILD_STORE";
const EVENTS: u64 = 20_000;

async fn open(spec: &str) -> DynStore {
    if let Some(path) = spec.strip_prefix("sqlite:") {
        Arc::new(SqliteStore::open(path, 30_000).expect("open sqlite"))
    } else if let Some(database) = spec.strip_prefix("mongodb:") {
        let uri = std::env::var("VERDICT_TEST_MONGODB_URI").expect(
            "VERDICT_TEST_MONGODB_URI must name a MongoDB server (scripts/test.sh starts one)",
        );
        Arc::new(
            MongoStore::connect(&uri, database)
                .await
                .expect("connect to MongoDB"),
        )
    } else {
        panic!("bad store spec {spec}")
    }
}

/// The child: aggregates in tiny steps until killed. Not a test on its own.
#[tokio::test]
#[ignore = "child process of the aggregation crash tests"]
async fn aggregation_child_process() {
    let Ok(spec) = std::env::var(CHILD_STORE) else {
        return;
    };
    let store = open(&spec).await;
    verdict_aggregator::jobs::aggregate(&*store, 25)
        .await
        .expect("aggregate");
}

async fn fill(store: &DynStore) {
    let t0 = OffsetDateTime::from_unix_timestamp(1_767_225_600).unwrap();
    for s in 0..200 {
        store
            .get_or_create_assignment(&Assignment {
                experiment_id: "exp".into(),
                subject: format!("s{s}"),
                variant: if s % 2 == 0 { "a".into() } else { "b".into() },
                assigned_at: t0,
                context: None,
            })
            .await
            .unwrap();
    }
    for chunk in 0..(EVENTS / 500) {
        let batch = (0..500)
            .map(|i| {
                let n = chunk * 500 + i;
                NewEvent {
                    experiment_id: "exp".into(),
                    event_id: format!("ev-{n}"),
                    subject: format!("s{}", n % 200),
                    variant: None,
                    event: if n % 3 == 0 {
                        "exposure".into()
                    } else {
                        "conversion".into()
                    },
                    value: (n % 5) as f64,
                    ts: t0 + time::Duration::minutes((n % 3000) as i64),
                    received_at: t0,
                    meta: None,
                }
            })
            .collect();
        store.append_events(batch).await.unwrap();
    }
}

#[tokio::test]
async fn aggregation_killed_mid_run_and_run_again_counts_every_event_once_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("verdict.db");
    killed_and_rerun(&format!("sqlite:{}", path.display())).await;
}

#[tokio::test]
async fn aggregation_killed_mid_run_and_run_again_counts_every_event_once_on_mongodb() {
    let database = format!("verdict_crash_{}", uuid::Uuid::new_v4().simple());
    killed_and_rerun(&format!("mongodb:{database}")).await;
    if let Ok(uri) = std::env::var("VERDICT_TEST_MONGODB_URI") {
        let store = MongoStore::connect(&uri, &database).await.unwrap();
        store.database().drop().await.unwrap();
    }
}

async fn killed_and_rerun(spec: &str) {
    let store = open(spec).await;
    fill(&store).await;
    let last = store
        .scan_events(0, usize::MAX)
        .await
        .unwrap()
        .last()
        .unwrap()
        .seq;

    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "aggregation_child_process",
            "--exact",
            "--ignored",
            "--nocapture",
        ])
        .env(CHILD_STORE, spec)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Kill it as soon as it has committed some, but not all, of the work.
    let deadline = Instant::now() + Duration::from_secs(60);
    let killed_at = loop {
        let wm = store.rollup_watermark().await.unwrap();
        if wm > 0 {
            child.kill().unwrap(); // SIGKILL
            child.wait().unwrap();
            break store.rollup_watermark().await.unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "the child never committed a step"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the child finished before it could be killed"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    assert!(
        killed_at > 0 && killed_at < last,
        "killed mid-run: watermark {killed_at} of {last}"
    );

    let report = verdict_aggregator::jobs::aggregate(&*store, 1_000)
        .await
        .unwrap();
    assert_eq!(report.watermark, last);
    assert_eq!(
        report.events,
        last - killed_at,
        "the rerun starts where the killed run stopped"
    );
    for event in ["conversion", "exposure"] {
        let raw = store
            .variant_counts("exp", event, &Attribution::default(), None)
            .await
            .unwrap();
        let rolled = store.rolled_up_counts("exp", event, None).await.unwrap();
        assert_eq!(rolled, raw, "{event}");
        // Every raw event is in exactly one bucket of each granularity.
        let events: u64 = raw.iter().map(|c| c.events).sum();
        for g in [Granularity::Hour, Granularity::Day] {
            let buckets = store
                .buckets("exp", event, g, TimeRange::default())
                .await
                .unwrap();
            let counted: u64 = buckets.iter().map(|b| b.count).sum();
            assert_eq!(counted, events, "{event} {g:?}");
            let sum: f64 = buckets.iter().map(|b| b.sum).sum();
            let raw_sum: f64 = raw.iter().map(|c| c.sum).sum();
            assert!(
                (sum - raw_sum).abs() < 1e-6,
                "{event} {g:?}: {sum} vs {raw_sum}"
            );
        }
    }
    // And once more: nothing left, nothing changes.
    let again = verdict_aggregator::jobs::aggregate(&*store, 1_000)
        .await
        .unwrap();
    assert_eq!(again.events, 0);
}
