//! Aggregation killed mid-run (SIGKILL, a real child process) and run again counts every
//! event exactly once: the rollups equal the computation from raw events.

use std::sync::Arc;
use std::time::{Duration, Instant};

use time::OffsetDateTime;
use verdict_domain::{Assignment, NewEvent};
use verdict_store::{DynStore, SqliteStore, TimeRange};

/// Set in the child process only: the database it aggregates.
const CHILD_DB: &str = "VERDICT_TEST_AGGREGATE_CHILD_DB";
const EVENTS: u64 = 20_000;

fn open(path: &std::path::Path) -> DynStore {
    Arc::new(SqliteStore::open(path, 30_000).expect("open sqlite"))
}

/// The child: aggregates in tiny steps until killed. Not a test on its own.
#[tokio::test]
#[ignore = "child process of aggregation_killed_mid_run_and_run_again_counts_every_event_once"]
async fn aggregation_child_process() {
    let Ok(path) = std::env::var(CHILD_DB) else {
        return;
    };
    let store = open(std::path::Path::new(&path));
    verdict_aggregator::jobs::aggregate(&store, 25)
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
async fn aggregation_killed_mid_run_and_run_again_counts_every_event_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("verdict.db");
    let store = open(&path);
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
        .env(CHILD_DB, &path)
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

    let report = verdict_aggregator::jobs::aggregate(&store, 1_000)
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
            .variant_counts("exp", event, TimeRange::default())
            .await
            .unwrap();
        let rolled = store.rolled_up_counts("exp", event).await.unwrap();
        assert_eq!(rolled, raw, "{event}");
    }
    // And once more: nothing left, nothing changes.
    let again = verdict_aggregator::jobs::aggregate(&store, 1_000)
        .await
        .unwrap();
    assert_eq!(again.events, 0);
}
