//! MongoDB: seqs allocated to events that were never stored (duplicates of earlier
//! batches) leave gaps in the ingestion order. Scans and rollups read seq windows, so a
//! window may hold fewer events than asked, or none: they must go on past gaps, return
//! as many events as asked, and stop exactly where SQLite would.
//!
//! Needs `VERDICT_TEST_MONGODB_URI`, like `mongo_contract.rs`.

use time::macros::datetime;
use verdict_domain::{Assignment, NewEvent};
use verdict_store::{AssignmentStore, EventStore, MongoStore, RollupStore};

fn event(id: &str, s: i64) -> NewEvent {
    let t0 = datetime!(2026-01-01 00:00:00 UTC);
    NewEvent {
        experiment_id: "e1".into(),
        event_id: id.into(),
        subject: "s1".into(),
        variant: None,
        event: "conversion".into(),
        value: 1.0,
        ts: t0 + time::Duration::seconds(s),
        received_at: t0 + time::Duration::seconds(s),
        meta: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scans_and_rollups_go_on_past_gaps_in_the_seqs() {
    let uri = std::env::var("VERDICT_TEST_MONGODB_URI")
        .expect("VERDICT_TEST_MONGODB_URI must name a MongoDB server");
    let name = format!("verdict_test_{}", uuid::Uuid::new_v4().simple());
    let store = MongoStore::connect(&uri, &name).await.unwrap();
    store
        .get_or_create_assignment(&Assignment {
            experiment_id: "e1".into(),
            subject: "s1".into(),
            variant: "control".into(),
            assigned_at: datetime!(2026-01-01 00:00:00 UTC),
            context: None,
        })
        .await
        .unwrap();
    // Seqs 1..=3 stored; 4..=9 allocated to two replays of the same batch (every
    // event a duplicate, so none stored); 10..=12 stored.
    let first: Vec<_> = (0..3).map(|i| event(&format!("a{i}"), i)).collect();
    for _ in 0..3 {
        store.append_events(first.clone()).await.unwrap();
    }
    store
        .append_events((0..3).map(|i| event(&format!("b{i}"), 10 + i)).collect())
        .await
        .unwrap();

    let all = store.scan_events(0, usize::MAX).await.unwrap();
    let seqs: Vec<u64> = all.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, vec![1, 2, 3, 10, 11, 12], "the replays left a gap");
    // A limit is filled across the gap, and a window holding only the gap goes on.
    let page = store.scan_events(2, 3).await.unwrap();
    assert_eq!(
        page.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![3, 10, 11]
    );
    assert_eq!(store.scan_events(3, 1).await.unwrap()[0].seq, 10);
    assert!(store.scan_events(12, 10).await.unwrap().is_empty());

    // Rollups in steps of 2: each call folds 1 or 2 events, never 0 before the end,
    // and the watermark is always the seq of the last folded event.
    let mut marks = Vec::new();
    loop {
        let r = store.rollup(2).await.unwrap();
        if r.events == 0 {
            assert_eq!(r.watermark, 12);
            break;
        }
        assert!(r.events <= 2);
        marks.push((r.events, r.watermark));
    }
    assert_eq!(marks, vec![(2, 2), (1, 3), (2, 11), (1, 12)]);
    assert_eq!(store.rollup_watermark().await.unwrap(), 12);
    let counts = store
        .rolled_up_counts("e1", "conversion", None)
        .await
        .unwrap();
    assert_eq!(counts.iter().map(|c| c.events).sum::<u64>(), 6);
    store.database().drop().await.unwrap();
}

/// Events written before `seq` was stored as a field of its own get it when a store
/// connects, so scans and rollups find them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_stored_without_a_seq_field_get_one_at_connect() {
    use mongodb::bson::{DateTime, Document, doc};
    let uri = std::env::var("VERDICT_TEST_MONGODB_URI")
        .expect("VERDICT_TEST_MONGODB_URI must name a MongoDB server");
    let name = format!("verdict_test_{}", uuid::Uuid::new_v4().simple());
    let store = MongoStore::connect(&uri, &name).await.unwrap();
    let at = DateTime::from_millis(1_767_225_600_000);
    store
        .database()
        .collection::<Document>("events")
        .insert_many((1..=2_i64).map(|seq| {
            doc! {
                "_id": seq, "experiment_id": "e1", "event_id": format!("old{seq}"),
                "subject": "s1", "variant": "control", "event": "conversion", "value": 1.0,
                "ts": at, "received_at": at, "assigned_at": at,
            }
        }))
        .await
        .unwrap();
    store
        .database()
        .collection::<Document>("counters")
        .insert_one(doc! {"_id": "events", "seq": 2_i64})
        .await
        .unwrap();
    assert!(store.scan_events(0, 10).await.unwrap().is_empty());
    let again = MongoStore::connect(&uri, &name).await.unwrap();
    let seqs: Vec<u64> = again
        .scan_events(0, 10)
        .await
        .unwrap()
        .iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(seqs, vec![1, 2]);
    assert_eq!(again.rollup(10).await.unwrap().events, 2);
    store.database().drop().await.unwrap();
}
